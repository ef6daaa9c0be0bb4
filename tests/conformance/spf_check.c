/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	spf_check 1 - run filters/spf.c's check over lines of "ip TAB mailfrom TAB helo"
 * DESCRIPTION
 *	The conformance driver (spf_suite.py) feeds the RFC 7208 suite
 *	through this program. It includes the filter's source so that it
 *	runs the very code the filter runs: spf_job_init() picks the
 *	identity, spf_run() evaluates on a worker thread, and every DNS
 *	question goes through gateway/dns.c to the nameserver in argv[1].
 *	Prints one result word per input line.
 * SEE ALSO
 *	RFC 7208
 */
#include "filters/spf.c"

#include <event2/thread.h>

struct check {
    struct spf_job job;
    bool done;
};

/* check_work - worker thread */
static void check_work(void *arg)
{
    spf_run(&((struct check *)arg)->job);
}

/* check_done - loop thread */
static void check_done(void *arg)
{
    ((struct check *)arg)->done = true;
}

/* main - one check per line, sequentially */
int main(int argc, char **argv)
{
    struct pc_services svc = {0};
    struct pc_err err = {{0}};
    char line[4096];

    if (argc < 2) {
        fprintf(stderr, "usage: %s nameserver[:port] < tests\n", argv[0]);
        return 2;
    }
    const char *ns[] = {argv[1]};
    evthread_use_pthreads();
    svc.base = event_base_new();
    svc.hostname = "receiver.test";
    svc.dns = pc_dns_create(svc.base, ns, 1, 1500, &err);
    if (svc.dns == NULL) {
        fprintf(stderr, "%s\n", err.msg);
        return 2;
    }
    svc.workers = pc_workers_create(svc.base, 1);
    spf_start(NULL, &svc);
    while (fgets(line, sizeof(line), stdin)) {
        char *host = line, *from = strchr(host, '\t'), *helo = NULL;
        struct check c = {0};
        struct pc_ip ip;
        if (from == NULL || (helo = strchr(from + 1, '\t')) == NULL)
            return 2;
        *from++ = 0;
        *helo++ = 0;
        helo[strcspn(helo, "\r\n")] = 0;
        if (!pc_ip_parse(host, &ip)) {
            printf("badip\n");
            continue;
        }
        const char *at = strrchr(from, '@');
        const char *domain = at ? at + 1 : from;
        bool use_helo = from[0] == 0 || domain[0] == '[';
        spf_job_init(&c.job, &svc, &ip, helo, from, domain, use_helo);
        if (helo[0] && c.job.helo[0] == 0 && use_helo) /* not a host name: checked as given */
            snprintf(c.job.domain, sizeof(c.job.domain), "%.*s", (int)sizeof(c.job.domain) - 1,
                     helo);
        pc_worker_submit(svc.workers, check_work, check_done, &c);
        while (!c.done)
            event_base_loop(svc.base, EVLOOP_ONCE);
        if (getenv("SPF_CHECK_DEBUG"))
            fprintf(stderr, "%s voids=%u ptrs=%u %s\n", c.job.domain, c.job.voids, c.job.nptr_names,
                    c.job.comment);
        printf("%s\n", spf_result_names[c.job.result]);
        fflush(stdout);
    }
    pc_workers_destroy(svc.workers);
    pc_dns_free(svc.dns);
    event_base_free(svc.base);
    return 0;
}
