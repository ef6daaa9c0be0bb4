/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_dmarc - DMARC, From parsing and Authentication-Results (filters/dmarc.c,
 *	filters/authres.c, lib/authres.c), and the dkim/dmarc/authres chain end to end
 * DESCRIPTION
 *	The chain test runs the real filters through the real chain runner on
 *	a libevent loop; only the resolver is replaced, by one that answers
 *	from a table on the next loop turn (asynchronously, as libunbound
 *	does), so the pending/resume path is exercised.
 * SEE ALSO
 *	RFC 7489, RFC 8601, CVE-2019-16378, CVE-2021-34555, CVE-2022-48521
 */
#include <check.h>
#include <arpa/inet.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "filters/authres.h"
#include "filters/dmarc.h"
#include "filters/registry.h"
#include "gateway/conf.h"
#include "core/filter.h"
#include "core/session.h"
#include "core/worker.h"
#include "lib/pool.h"
#include "core/chain.h"
#include "tests/unit/dkimtest.h"

/* ---- nsd on loopback serving the test's records -------------------------------- */

struct nsd {
    pid_t pid;
    int port;
    char dir[64];
};

/* free_port - a loopback port free for both UDP and TCP right now (bound as port 0) */
static int free_port(void)
{
    for (int tries = 0; tries < 50; tries++) {
        struct sockaddr_in sin = {.sin_family = AF_INET};
        socklen_t len = sizeof(sin);
        int u = socket(AF_INET, SOCK_DGRAM, 0), t = socket(AF_INET, SOCK_STREAM, 0), port = 0;
        inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
        if (bind(u, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
            getsockname(u, (struct sockaddr *)&sin, &len) == 0 &&
            bind(t, (struct sockaddr *)&sin, sizeof(sin)) == 0)
            port = ntohs(sin.sin_port);
        close(u);
        close(t);
        if (port)
            return port;
    }
    ck_abort_msg("no free port");
    return 0;
}

/* zone_txt - one TXT record, split into 255-byte character-strings */
static void zone_txt(FILE *z, const char *name, const char *v)
{
    size_t n = strlen(v);

    fprintf(z, "%s. IN TXT", name);
    if (n == 0)
        fputs(" \"\"", z);
    for (size_t o = 0; o < n; o += 255)
        fprintf(z, " \"%.*s\"", (int)(n - o > 255 ? 255 : n - o), v + o);
    fputc('\n', z);
}

/* nsd_start - a root zone with the table's found records; NOTFOUND ones are absent */
static void nsd_start(struct nsd *ns, const struct fake_dns *t, size_t n)
{
    char path[128];
    FILE *f;

    ns->port = free_port();
    snprintf(ns->dir, sizeof(ns->dir), "/tmp/pc-dkim-nsd-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(ns->dir));
    snprintf(path, sizeof(path), "%s/root.zone", ns->dir);
    f = fopen(path, "w");
    fputs("$ORIGIN .\n$TTL 60\n. IN SOA ns. host. 1 3600 600 86400 60\n. IN NS ns.\n"
          "ns. IN A 127.0.0.1\n",
          f);
    for (size_t i = 0; i < n; i++)
        if (t[i].st == PC_DNS_FOUND)
            zone_txt(f, t[i].name, t[i].value);
    fclose(f);
    snprintf(path, sizeof(path), "%s/nsd.conf", ns->dir);
    f = fopen(path, "w");
    fprintf(f,
            "server:\n ip-address: 127.0.0.1@%d\n username: \"\"\n chroot: \"\"\n"
            " zonesdir: \"%s\"\n database: \"\"\n pidfile: \"%s/nsd.pid\"\n"
            " logfile: \"%s/nsd.log\"\n xfrdfile: \"%s/xfrd\"\n zonelistfile: \"%s/zl\"\n"
            "remote-control:\n control-enable: no\nzone:\n name: \".\"\n zonefile: \"root.zone\"\n",
            ns->port, ns->dir, ns->dir, ns->dir, ns->dir, ns->dir);
    fclose(f);
    ns->pid = fork();
    ck_assert_int_ge(ns->pid, 0);
    if (ns->pid == 0) {
        /* Dies with the test process, also when an assertion ends it. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        setpgid(0, 0); /* its server processes too are stopped through the group */
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, 1);
        dup2(devnull, 2);
        execlp("nsd", "nsd", "-d", "-c", path, (char *)NULL);
        _exit(127);
    }
    /* Ready when it says so in its log. */
    snprintf(path, sizeof(path), "%s/nsd.log", ns->dir);
    for (int i = 0; i < 200; i++) {
        size_t len = 0;
        char *log = slurp(path, &len);
        bool up = log && strstr(log, "nsd started");
        free(log);
        if (up)
            return;
        ck_assert_int_eq(waitpid(ns->pid, NULL, WNOHANG), 0);
        usleep(25000);
    }
    ck_abort_msg("nsd did not start");
}

/* nsd_stop - stop it and remove its files */
static void nsd_stop(struct nsd *ns)
{
    char cmd[128];

    kill(-ns->pid, SIGTERM);
    kill(ns->pid, SIGTERM);
    waitpid(ns->pid, NULL, 0);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", ns->dir);
    ck_assert_int_eq(system(cmd), 0);
}

static bool have_nsd(void)
{
    return system("command -v nsd >/dev/null 2>&1") == 0;
}

/* ---- DMARC evaluation ------------------------------------------------------- */

START_TEST(eval_table)
{
    static const struct {
        const char *from, *record, *org, *spf, *spf_domain, *dkim_d, *dkim_r;
        const char *result;
        char policy;
        bool dkim_aligned, spf_aligned;
    } cases[] = {
        {"example.com", "v=DMARC1; p=reject", NULL, NULL, NULL, "example.com", "pass", "pass", 'r',
         true, false},
        {"example.com", "v=DMARC1; p=reject", NULL, NULL, NULL, "mail.example.com", "pass", "pass",
         'r', true, false},
        {"example.com", "v=DMARC1; p=reject; adkim=s", NULL, NULL, NULL, "mail.example.com", "pass",
         "fail", 'r', false, false},
        {"example.com", "v=DMARC1; p=reject", NULL, "pass", "example.com", "other.org", "pass",
         "pass", 'r', false, true},
        {"example.com", "v=DMARC1; p=reject", NULL, "pass", "bounce.example.com", NULL, NULL,
         "pass", 'r', false, true},
        {"example.com", "v=DMARC1; p=reject; aspf=s", NULL, "pass", "bounce.example.com", NULL,
         NULL, "fail", 'r', false, false},
        {"example.com", "v=DMARC1; p=reject", NULL, "fail", "example.com", "example.com", "fail",
         "fail", 'r', false, false},
        {"example.com", "v=DMARC1; p=quarantine", NULL, NULL, NULL, NULL, NULL, "fail", 'q', false,
         false},
        {"example.com", "v=DMARC1; p=none", NULL, NULL, NULL, NULL, NULL, "fail", 'n', false,
         false},
        /* rsa-sha1 (RFC 8301) reported as "policy" never aligns as a pass */
        {"example.com", "v=DMARC1; p=reject", NULL, NULL, NULL, "example.com", "policy", "fail",
         'r', false, false},
        /* the subdomain policy of the organizational record */
        {"a.example.com", "v=DMARC1; p=none; sp=reject", "example.com", NULL, NULL, NULL, NULL,
         "fail", 'r', false, false},
        {"example.com", NULL, NULL, NULL, NULL, "example.com", "pass", "none", 0, false, false},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pc_dmarc_in in = {.from_domain = cases[i].from,
                                 .record = cases[i].record,
                                 .org_domain = cases[i].org,
                                 .spf = cases[i].spf,
                                 .spf_domain = cases[i].spf_domain};
        struct pc_dmarc_out out;
        if (cases[i].dkim_d) {
            in.ndkim = 1;
            in.dkim_domain[0] = cases[i].dkim_d;
            in.dkim_selector[0] = "sel";
            in.dkim_result[0] = cases[i].dkim_r;
        }
        ck_assert_int_eq(pc_dmarc_eval(&in, &out), 0);
        ck_assert_msg(strcmp(out.result, cases[i].result) == 0, "case %zu: %s", i, out.result);
        if (cases[i].record) {
            ck_assert_msg(out.policy == cases[i].policy, "case %zu: policy %c", i, out.policy);
            ck_assert_msg(out.dkim_aligned == cases[i].dkim_aligned, "case %zu dkim", i);
            ck_assert_msg(out.spf_aligned == cases[i].spf_aligned, "case %zu spf", i);
        }
    }
}
END_TEST

START_TEST(eval_bad_record)
{
    struct pc_dmarc_in in = {.from_domain = "example.com", .record = "v=DMARC1; p=bogus"};
    struct pc_dmarc_out out;

    ck_assert_int_eq(pc_dmarc_eval(&in, &out), -1);
    ck_assert_str_eq(out.result, "permerror");
}
END_TEST

START_TEST(org_domain)
{
    char out[256];

    pc_dmarc_library("/usr/share/publicsuffix/public_suffix_list.dat");
    pc_dmarc_org_domain("a.b.example.com", out, sizeof(out));
    ck_assert_str_eq(out, "example.com");
    pc_dmarc_org_domain("mail.example.co.uk", out, sizeof(out));
    if (access("/usr/share/publicsuffix/public_suffix_list.dat", R_OK) == 0)
        ck_assert_str_eq(out, "example.co.uk");
}
END_TEST

START_TEST(pick)
{
    const char *one[] = {"v=spf1 -all", "v=DMARC1; p=none"};
    const char *two[] = {"v=DMARC1; p=none", "v=DMARC1; p=reject"};
    const char *bad[] = {"v=DMARC10; p=none", "p=reject"};

    ck_assert_str_eq(pc_dmarc_pick(one, 2), "v=DMARC1; p=none");
    ck_assert_ptr_null(pc_dmarc_pick(two, 2)); /* RFC 7489 6.6.3: several records, no policy */
    ck_assert_ptr_null(pc_dmarc_pick(bad, 2));
}
END_TEST

/* ---- From ----------------------------------------------------------------------- */

/* from_status - status and first domain of a header block */
static const char *from_status(const char *headers, char *dom, size_t size)
{
    struct pc_msg m;
    struct pc_from_domains fd;
    char buf[4096];
    enum pc_from_status st;

    snprintf(buf, sizeof(buf), "%sTo: x@y.example\r\n\r\nbody\r\n", headers);
    msg_from_buf(&m, buf, strlen(buf));
    st = pc_dmarc_from(&m, &fd);
    snprintf(dom, size, "%s", fd.ndomain ? fd.domain[0] : "");
    pc_msg_free(&m);
    return pc_from_status_name(st);
}

START_TEST(from_cases)
{
    static const struct {
        const char *hdr, *status, *domain;
    } cases[] = {
        {"From: Joe <joe@Example.COM>\r\n", "one", "example.com"},
        {"From: \"a@evil.example, <b@evil.example>\" <joe@example.com>\r\n", "one", "example.com"},
        {"From: joe@example.com (comment <x@evil.example>)\r\n", "one", "example.com"},
        {"From: Joe\r\n <joe@example.com>\r\n", "one", "example.com"},
        {"From: a@example.com, b@example.com\r\n", "one", "example.com"},
        {"From: a@example.com, b@evil.example\r\n", "multiple", "example.com"},
        {"From: a@example.com\r\nFrom: a@example.com\r\n", "multiple", "example.com"},
        {"Subject: no from\r\n", "none", ""},
        {"From: <>\r\n", "none", ""},
        {"From: undisclosed-recipients:;\r\n", "none", ""},
        /* OpenDMARC t-verify-multi-from-malformed (CVE-2019-16378) */
        {"From: user1@blackops.org, user2, user3@blackops.org\r\n", "malformed", "blackops.org"},
        /* OpenDMARC t-verify-multi-from-reject */
        {"From: user1@eleet.org, user2@blackops.org, user3@eleet.org\r\n", "multiple", "eleet.org"},
        /* CVE-2021-34555: empty domain in a multi-valued From */
        {"From: x@, y@example.com\r\n", "malformed", "example.com"},
        {"From: @\r\n", "none", ""},
        {"From: ,,,\r\n", "none", ""},
        {"From: \"unterminated <a@example.com>\r\n", "none", ""},
        {"From: <a@example.com\r\n", "none", ""},
        {"From: a@[192.0.2.1]\r\n", "none", ""},
        {"From: a@exa mple.com\r\n", "one", "example.com"},
    };
    char dom[256];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *st = from_status(cases[i].hdr, dom, sizeof(dom));
        ck_assert_msg(strcmp(st, cases[i].status) == 0 && strcmp(dom, cases[i].domain) == 0,
                      "case %zu (%s): %s %s", i, cases[i].hdr, st, dom);
    }
}
END_TEST

/* json_string - decode the JSON string starting after the opening quote */
static size_t json_string(const char *p, char *out, size_t size)
{
    size_t o = 0;

    for (; *p && *p != '"' && o + 1 < size; p++) {
        if (*p != '\\') {
            out[o++] = *p;
            continue;
        }
        p++;
        switch (*p) {
        case 'r':
            out[o++] = '\r';
            break;
        case 'n':
            out[o++] = '\n';
            break;
        case 't':
            out[o++] = '\t';
            break;
        case 'u': {
            unsigned v = 0;
            sscanf(p + 1, "%4x", &v);
            out[o++] = (char)v;
            p += 4;
            break;
        }
        default:
            out[o++] = *p;
        }
    }
    out[o] = 0;
    return o;
}

/*
 * espoofer's From-ambiguity cases ("Composition Kills", USENIX Security
 * 2020): the author domain must never be legitimate.com alone while the
 * message also shows an attacker address. Cases whose From is computed at
 * run time ({{...}}) are judged on the literal text, which is what a
 * receiver would see when the computed part is not an address.
 */
START_TEST(espoofer_from)
{
    static const struct {
        const char *name, *status, *domain;
    } expect[] = {
        {"server_a1", "one", "legitimate.com"}, /* envelope tricks only: From is honest */
        {"server_a8", "multiple", "attack.com"},
        {"server_a9", "one", "legitimate.com"},   /* " From:" folds into the previous field */
        {"server_a10", "multiple", "attack.com"}, /* "From :" is a From field too */
        {"server_a11", "none", ""},               /* "From" without colon ends the header */
        {"server_a14", "multiple", "attack.com"},
        {"server_a15", "malformed", "attack.com"},
        {"server_a16", "one", "legitimate.com"}, /* obsolete route: the mailbox is legitimate's */
        {"server_a17", "multiple", "legitimate.com"}, /* backslash outside quotes */
        {"server_a18", "multiple", "legitimate.com"},
        {"server_a19", "multiple", "attack.com"}, /* two addresses glued */
        {"client_a1", "multiple", "example.com"},
        {"client_a2", "one", "example.com"}, /* two mailboxes, one domain: DMARC is unambiguous */
    };
    size_t len = 0;
    char *json, dom[256], hdr[2048];

    if (!have_testdata())
        return;
    json = slurp(TESTDATA "/dmarc/espoofer/espoofer_testcases.json", &len);
    ck_assert_ptr_nonnull(json);
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        char key[64];
        snprintf(key, sizeof(key), "\"%s\":", expect[i].name);
        const char *c = strstr(json, key);
        ck_assert_msg(c != NULL, "%s missing", expect[i].name);
        const char *fh = strstr(c, "\"from_header\": \"");
        ck_assert_ptr_nonnull(fh);
        json_string(fh + 16, hdr, sizeof(hdr));
        char full[2300];
        /* A Subject first, so that a leading-space line has a field to continue. */
        snprintf(full, sizeof(full), "Subject: t\r\n%s", hdr);
        const char *st = from_status(full, dom, sizeof(dom));
        ck_assert_msg(strcmp(st, expect[i].status) == 0 && strcmp(dom, expect[i].domain) == 0,
                      "%s: %s %s", expect[i].name, st, dom);
    }
    free(json);
}
END_TEST

/* ---- Authentication-Results ------------------------------------------------------ */

START_TEST(servid_parse)
{
    static const struct {
        const char *v, *id;
    } cases[] = {
        {" mx.example.org; spf=pass", "mx.example.org"},
        {" (comment (nested)) mx.example.org 1; none", "mx.example.org"},
        {"\r\n\tmx.example.org;dkim=pass", "mx.example.org"},
        {" \"mx.example.org\"; none", "mx.example.org"},
        {" \"mx.exa\\\"mple\"; none", "mx.exa\"mple"},
        {" ; spf=pass", NULL},
        {" \"unterminated", NULL},
        {"", NULL},
    };
    char out[64];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        bool ok = pc_authres_servid(cases[i].v, strlen(cases[i].v), out, sizeof(out));
        ck_assert_msg(ok == (cases[i].id != NULL), "case %zu", i);
        if (ok)
            ck_assert_str_eq(out, cases[i].id);
    }
}
END_TEST

/* writer - collect pc_msg_write output */
static int writer(void *arg, const char *p, size_t n)
{
    pc_buf_append(arg, p, n);
    return 0;
}

START_TEST(remove_ours_by_id)
{
    /* CVE-2022-48521: removal by position; here each field is judged on its own id. */
    static const char msg[] =
        "Authentication-Results: mx.example.org; dkim=pass header.d=bank.example\r\n"
        "Authentication-Results: other.example; spf=fail\r\n"
        "Authentication-Results: (x) MX.EXAMPLE.ORG; dmarc=pass\r\n"
        "Authentication-Results: mx.example.org.evil; dkim=pass\r\n"
        "From: a@bank.example\r\n\r\nbody\r\n";
    struct pc_session *s = pc_session_new(NULL, NULL, "test", NULL, NULL, NULL);
    struct pc_buf out;

    pc_txn_new(s);
    for (const char *p = msg; *p;) {
        const char *nl = strstr(p, "\r\n");
        pc_msg_line(&s->txn->msg, p, (size_t)(nl - p));
        p = nl + 2;
    }
    pc_msg_finish(&s->txn->msg);
    ck_assert_uint_eq(pc_authres_remove_ours(s, "mx.example.org"), 2);
    /* it runs even after an ACCEPT, so a whitelist cannot keep a forged field */
    ck_assert(pc_filter_find("authres")->flags & PC_FILTER_GATE);
    pc_fact_add(s, "dkim", "fail");
    pc_fact_add(s, "dkim_sig", "fail d=bank.example s=s1 a=rsa-sha256 reason=body hash (mismatch)");
    pc_fact_add(s, "dkim_sig", "pass d=x.example;dkim=pass s=a\"b a=rsa-sha256");
    pc_fact_add(s, "dmarc", "fail");
    pc_fact_add(s, "dmarc_policy", "reject");
    pc_fact_add(s, "dmarc_domain", "bank.example");
    pc_header_add(s, "Authentication-Results", pc_authres_value(s, "mx.example.org"));
    pc_buf_init(&out, 1 << 20);
    pc_msg_write(&s->txn->msg, NULL, writer, &out);
    pc_buf_putc(&out, 0);
    ck_assert_ptr_null(strstr(out.data, "header.d=bank.example\r\n"));
    ck_assert_ptr_null(strstr(out.data, "MX.EXAMPLE.ORG"));
    ck_assert_ptr_nonnull(strstr(out.data, "Authentication-Results: other.example; spf=fail"));
    ck_assert_ptr_nonnull(strstr(out.data, "mx.example.org.evil; dkim=pass"));
    ck_assert_ptr_nonnull(strstr(out.data, "dkim=fail (body hash  mismatch ) header.d=bank.example"
                                           " header.s=s1 header.a=rsa-sha256"));
    ck_assert_ptr_nonnull(strstr(out.data, "dmarc=fail (p=reject) header.from=bank.example"));
    /* an attacker-chosen d= or s= cannot add a resinfo of its own */
    ck_assert_ptr_nonnull(strstr(out.data, "dkim=pass header.d=\"x.example;dkim=pass\" "
                                           "header.s=\"a\\\"b\" header.a=rsa-sha256"));
    pc_buf_free(&out);
    pc_txn_free(s);
    pc_session_free(s);
}
END_TEST

/* ---- the chain: dkim, dmarc, authres ------------------------------------------------- */

struct door_state {
    struct event_base *base;
    struct pc_verdict v;
    bool done;
};

static struct door_state door_state;

/* door_done - the pending stage finished */
static void door_done(struct pc_session *s, enum pc_stage st, struct pc_verdict *v)
{
    (void)s, (void)st;
    door_state.v = *v;
    door_state.done = true;
    event_base_loopbreak(door_state.base);
}

static const struct pc_door test_door = {.name = "test", .stage_done = door_done};

/* link_conf - configure a filter from a config text */
static void *link_conf(const struct pc_filter_ops *ops, const char *text)
{
    cfg_t *cfg = pc_conf_filter_cfg(ops);
    void *conf = NULL;
    struct pc_err err = {{0}};

    ck_assert_int_eq(cfg_parse_buf(cfg, text), CFG_SUCCESS);
    ck_assert_msg(ops->configure(cfg, &conf, &err) == 0, "%s", err.msg);
    cfg_free(cfg);
    return conf;
}

/* run_chain - one message through dkim, dmarc, authres; returns the message as written */
static size_t chain_spool = 1 << 20; /* spool threshold of the chain tests' messages */
static int chain_cancel_after;       /* > 0: give up after that many loop turns */

static bool chain_dns_dead; /* point the resolver at a port nobody serves */

static char *run_chain_with(const char *dkim_conf, const char *text, size_t len,
                            const struct fake_dns *t, size_t nt, struct pc_verdict *v,
                            const char *client, int *queries)
{
    struct event_base *base = event_base_new();
    struct nsd ns = {0};
    struct pc_err err = {{0}};
    char server[32];
    const char *servers[1] = {server};
    if (!chain_dns_dead)
        nsd_start(&ns, t, nt);
    /* a dead resolver: a port nobody serves (just found free) */
    snprintf(server, sizeof(server), "127.0.0.1:%d", chain_dns_dead ? free_port() : ns.port);
    struct pc_dns *dns = pc_dns_create(base, servers, 1, chain_dns_dead ? 300 : 3000, &err);
    ck_assert_msg(dns != NULL, "%s", err.msg);
    struct pc_services svc = {
        .base = base, .dns = dns, .hostname = "mx.test", .workers = pc_workers_create(base, 1)};
    struct pc_chain_link links[3] = {
        {pc_filter_find("dkim"), link_conf(pc_filter_find("dkim"), dkim_conf), 5000,
         PC_ONERR_TEMPFAIL},
        {pc_filter_find("dmarc"), link_conf(pc_filter_find("dmarc"), ""), 5000, PC_ONERR_TEMPFAIL},
        {pc_filter_find("authres"), link_conf(pc_filter_find("authres"), ""), 5000,
         PC_ONERR_TEMPFAIL},
    };
    struct pc_chain chain = {.links = links, .n = 3};
    struct pc_session *s = pc_session_new(&svc, NULL, "test", &chain, &test_door, NULL);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    struct pc_buf out;
    enum pc_action a;

    inet_pton(AF_INET, client, &sin.sin_addr);
    pc_session_set_client(s, (struct sockaddr *)&sin, sizeof(sin));
    ck_assert_int_eq(pc_chain_attach(s), 0);
    pc_txn_new(s);
    pc_msg_free(&s->txn->msg);
    msg_from_buf_spool(&s->txn->msg, text, len, chain_spool);
    memset(&door_state, 0, sizeof(door_state));
    door_state.base = base;
    a = pc_chain_run(s, PC_STAGE_EOM, v);
    if (a == PC_PENDING && chain_cancel_after > 0) {
        /* The client went away mid-check: the session is freed under a pending
         * lookup or a body being hashed on the worker; nothing may touch it. */
        for (int i = 0; i < chain_cancel_after && !door_state.done; i++)
            event_base_loop(base, EVLOOP_ONCE);
        bool finished = door_state.done;
        pc_txn_free(s);
        pc_chain_detach(s);
        pc_session_free(s);
        struct timeval tv = {0, 200000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
        ck_assert(door_state.done == finished); /* no resume after the session ended */
        for (int i = 0; i < 3; i++)
            links[i].ops->destroy(links[i].conf);
        pc_workers_destroy(svc.workers);
        pc_dns_free(dns);
        event_base_free(base);
        if (!chain_dns_dead)
            nsd_stop(&ns);
        *queries = 0;
        return NULL;
    }
    if (a == PC_PENDING) {
        event_base_dispatch(base);
        ck_assert(door_state.done);
        *v = door_state.v;
    }
    pc_buf_init(&out, 1 << 20);
    pc_msg_write(&s->txn->msg, NULL, writer, &out);
    pc_buf_putc(&out, 0);
    *queries = 0;
    pc_txn_free(s);
    pc_chain_detach(s);
    pc_session_free(s);
    for (int i = 0; i < 3; i++)
        links[i].ops->destroy(links[i].conf);
    pc_workers_destroy(svc.workers);
    pc_dns_free(dns);
    event_base_free(base);
    if (!chain_dns_dead)
        nsd_stop(&ns);
    return out.data;
}

/* run_chain - the chain with verification only */
static char *run_chain(const char *text, size_t len, const struct fake_dns *t, size_t nt,
                       struct pc_verdict *v, const char *client, int *queries)
{
    return run_chain_with("mynetworks = {}", text, len, t, nt, v, client, queries);
}

/* rfc6376_dns - keys and a p=reject policy for football.example.com */
static size_t rfc6376_dns(struct fake_dns *t)
{
    size_t len = 0;
    char *txt = slurp(TESTDATA "/dkim/dkimpy/test.txt", &len);

    memset(t, 0, 3 * sizeof(*t));
    snprintf(t[0].name, sizeof(t[0].name), "brisbane._domainkey.football.example.com");
    snprintf(t[0].value, sizeof(t[0].value),
             "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=");
    snprintf(t[1].name, sizeof(t[1].name), "test._domainkey.football.example.com");
    txt[strcspn(txt, "\r\n")] = 0;
    snprintf(t[1].value, sizeof(t[1].value), "%s", txt);
    snprintf(t[2].name, sizeof(t[2].name), "_dmarc.football.example.com");
    snprintf(t[2].value, sizeof(t[2].value), "v=DMARC1; p=reject");
    free(txt);
    return 3;
}

START_TEST(chain_pass)
{
    struct fake_dns t[3];
    struct pc_verdict v;
    size_t len = 0;
    char *msg, *out;
    int queries;

    if (!have_nsd())
        return;

    if (!have_testdata())
        return;
    rfc6376_dns(t);
    msg = slurp(TESTDATA "/dkim/dkimpy/rfc6376.signed.msg", &len);
    out = run_chain(msg, len, t, 3, &v, "192.0.2.1", &queries);
    ck_assert_int_eq(v.action, PC_CONTINUE);
    ck_assert_msg(strncmp(out,
                          "Authentication-Results: mx.test;\r\n"
                          "\tdkim=pass header.d=football.example.com header.s=brisbane "
                          "header.a=ed25519-sha256;\r\n"
                          "\tdkim=pass header.d=football.example.com header.s=test "
                          "header.a=rsa-sha256;\r\n"
                          "\tdmarc=pass (p=reject) header.from=football.example.com\r\n",
                          strlen("Authentication-Results: mx.test;")) == 0,
                  "%s", out);
    ck_assert_ptr_nonnull(
        strstr(out, "\tdmarc=pass (p=reject) header.from=football.example.com\r\n"));
    ck_assert_ptr_nonnull(strstr(out, "header.s=test header.a=rsa-sha256;"));
    free(out);
    free(msg);
}
END_TEST

START_TEST(chain_reject)
{
    struct fake_dns t[3];
    struct pc_verdict v;
    size_t len = 0;
    char *msg, *out;
    int queries;

    if (!have_nsd())
        return;

    if (!have_testdata())
        return;
    rfc6376_dns(t);
    msg = slurp(TESTDATA "/dkim/dkimpy/rfc6376.signed.msg", &len);
    memcpy(strstr(msg, "hungry"), "thirst", 6);
    out = run_chain(msg, len, t, 3, &v, "192.0.2.1", &queries);
    ck_assert_int_eq(v.action, PC_REJECT);
    ck_assert_int_eq(v.code, 550);
    ck_assert_int_eq(v.enh.cls, 5);
    ck_assert_int_eq(v.enh.subject, 7);
    ck_assert_int_eq(v.enh.detail, 1);
    free(out);
    /* p=quarantine: delivered, marked. */
    snprintf(t[2].value, sizeof(t[2].value), "v=DMARC1; p=quarantine");
    out = run_chain(msg, len, t, 3, &v, "192.0.2.1", &queries);
    ck_assert_int_eq(v.action, PC_CONTINUE);
    ck_assert_ptr_nonnull(
        strstr(out, "X-DMARC-Quarantine: policy=quarantine; header.from=football.example.com"));
    ck_assert_ptr_nonnull(strstr(out, "dmarc=fail (p=quarantine)"));
    free(out);
    /* DNS trouble for the policy: temperror, never a refusal. */
    chain_dns_dead = true;
    out = run_chain(msg, len, t, 3, &v, "192.0.2.1", &queries);
    chain_dns_dead = false;
    ck_assert_int_eq(v.action, PC_CONTINUE);
    ck_assert_ptr_nonnull(strstr(out, "dmarc=temperror header.from=football.example.com"));
    free(out);
    free(msg);
}
END_TEST

START_TEST(chain_multiple_from_rejected)
{
    static const char msg[] =
        "From: a@example.com\r\nFrom: b@bank.example\r\nSubject: x\r\n\r\nhi\r\n";
    struct pc_verdict v;
    int queries;
    char *out;

    if (!have_nsd())
        return;
    out = run_chain(msg, sizeof(msg) - 1, NULL, 0, &v, "192.0.2.1", &queries);

    ck_assert_int_eq(v.action, PC_REJECT);
    ck_assert_int_eq(v.code, 550);
    free(out);
}
END_TEST

/*
 * Outbound through one gateway (trusted client: signed with the key table's
 * key chosen by the signing table), inbound through a second (verified,
 * DMARC p=reject passes on the aligned signature).
 */
START_TEST(chain_sign_then_verify)
{
    static const char msg[] = "From: Ann <ann@Sales.Example.ORG>\r\nTo: b@example.net\r\n"
                              "Subject: quarterly\r\nAuthentication-Results: mx.test; dkim=pass\r\n"
                              "\r\nnumbers\r\n";
    char ed[] = "/tmp/pc-dkim-ed-XXXXXX", rsa[] = "/tmp/pc-dkim-rsa-XXXXXX", conf[2048];
    struct fake_dns t[3];
    struct pc_verdict v;
    int queries;

    if (!have_nsd())
        return;

    close(mkstemp(ed));
    close(mkstemp(rsa));
    memset(t, 0, sizeof(t));
    keypair("ED25519", 0, ed, t[0].value, sizeof(t[0].value));
    keypair("RSA", 2048, rsa, t[1].value, sizeof(t[1].value));
    snprintf(t[0].name, sizeof(t[0].name), "e1._domainkey.sales.example.org");
    snprintf(t[1].name, sizeof(t[1].name), "r1._domainkey.example.org");
    snprintf(t[2].name, sizeof(t[2].name), "_dmarc.example.org");
    snprintf(t[2].value, sizeof(t[2].value), "v=DMARC1; p=reject; adkim=s");
    snprintf(conf, sizeof(conf),
             "key_table = {\"ed sales.example.org:e1:%s\", \"rs example.org:r1:%s\"}\n"
             "signing_table = {\"nobody@* rs\", \"*.example.org ed\", \"example.org rs\"}\n",
             ed, rsa);
    char *signed_msg = run_chain_with(conf, msg, sizeof(msg) - 1, t, 3, &v, "127.0.0.1", &queries);
    ck_assert_int_eq(v.action, PC_CONTINUE);
    ck_assert_msg(
        strncmp(signed_msg, "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;", 57) == 0 &&
            strstr(signed_msg, "d=sales.example.org; s=e1;") != NULL,
        "%s", signed_msg);
    /* Our forged-looking A-R was removed by authres, after signing: still verifies. */
    ck_assert_ptr_null(strstr(signed_msg, "mx.test; dkim=pass"));
    /* The policy comes from the organizational domain (no _dmarc.sales record); d= equals
     * the From domain, so even adkim=s aligns. */
    char *out = run_chain_with("mynetworks = {}", signed_msg, strlen(signed_msg), t, 3, &v,
                               "192.0.2.7", &queries);
    ck_assert_int_eq(v.action, PC_CONTINUE);
    ck_assert_msg(strstr(out, "dkim=pass header.d=sales.example.org header.s=e1 "
                              "header.a=ed25519-sha256;\r\n\tdmarc=pass (p=reject) "
                              "header.from=sales.example.org") != NULL,
                  "%s", out);
    free(out);
    /* Altered in transit: refused by the organizational domain's p=reject. */
    memcpy(strstr(signed_msg, "numbers"), "NUMBERS", 7);
    out = run_chain_with("mynetworks = {}", signed_msg, strlen(signed_msg), t, 3, &v, "192.0.2.7",
                         &queries);
    ck_assert_int_eq(v.action, PC_REJECT);
    free(out);
    free(signed_msg);
    unlink(ed);
    unlink(rsa);
}
END_TEST

/* lua_from - the From value an OpenDMARC miltertest script sends */
static bool lua_from(const char *script, char *out, size_t size)
{
    char path[512];
    size_t len = 0;
    snprintf(path, sizeof(path), TESTDATA "/dmarc/opendmarc/%s", script);
    char *b = slurp(path, &len), *p, *e;
    bool ok = false;

    if (b && (p = strstr(b, "mt.header(conn, \"From\", \"")) != NULL) {
        p += strlen("mt.header(conn, \"From\", \"");
        if ((e = strchr(p, '"')) != NULL && (size_t)(e - p) < size) {
            memcpy(out, p, (size_t)(e - p));
            out[e - p] = 0;
            ok = true;
        }
    }
    free(b);
    return ok;
}

/* OpenDMARC's multi-valued From scripts (CVE-2019-16378) through the chain. */
START_TEST(chain_opendmarc_multi_from)
{
    char from[256], msg[512];
    struct pc_verdict v;
    int queries;
    char *out;

    if (!have_nsd())
        return;

    if (!have_testdata())
        return;
    /* one domain, one broken mailbox: accepted (the script expects SMFIR_ACCEPT), evaluated */
    ck_assert(lua_from("t-verify-multi-from-malformed.lua", from, sizeof(from)));
    snprintf(msg, sizeof(msg),
             "From: %s\r\nTo: user@example.com\r\nSubject: DMARC test\r\n\r\nx\r\n", from);
    out = run_chain(msg, strlen(msg), NULL, 0, &v, "127.0.0.2", &queries);
    ck_assert_int_eq(v.action, PC_CONTINUE);
    ck_assert_ptr_nonnull(strstr(out, "dmarc=none header.from=blackops.org"));
    free(out);
    /* two domains: refused (the script expects SMFIR_REJECT with RejectMultiValueFrom) */
    ck_assert(lua_from("t-verify-multi-from-reject.lua", from, sizeof(from)));
    snprintf(msg, sizeof(msg),
             "From: %s\r\nTo: user@example.com\r\nSubject: DMARC test\r\n\r\nx\r\n", from);
    out = run_chain(msg, strlen(msg), NULL, 0, &v, "127.0.0.2", &queries);
    ck_assert_int_eq(v.action, PC_REJECT);
    ck_assert_int_eq(v.code, 550);
    free(out);
}
END_TEST

/* A spooled body, and sessions that end while the dkim filter is waiting. */
START_TEST(chain_spooled_and_cancelled)
{
    struct fake_dns t[3];
    struct pc_verdict v;
    size_t len = 0;
    char *msg, *out;
    int queries;

    if (!have_nsd())
        return;

    if (!have_testdata())
        return;
    rfc6376_dns(t);
    msg = slurp(TESTDATA "/dkim/dkimpy/rfc6376.signed.msg", &len);
    chain_spool = 16;
    out = run_chain(msg, len, t, 3, &v, "192.0.2.1", &queries);
    ck_assert_int_eq(v.action, PC_CONTINUE);
    ck_assert_ptr_nonnull(strstr(out, "dmarc=pass (p=reject)"));
    free(out);
    for (int turns = 1; turns <= 6; turns++) {
        chain_cancel_after = turns;
        ck_assert_ptr_null(run_chain(msg, len, t, 3, &v, "192.0.2.1", &queries));
    }
    chain_cancel_after = 0;
    chain_spool = 1 << 20;
    free(msg);
}
END_TEST

START_TEST(key_table_errors)
{
    static const struct {
        const char *conf, *err;
    } cases[] = {
        {"key_table = {\"k /nonexistent\"}", "bad entry"},
        {"key_table = {\"k example.org:s:/nonexistent/key.pem\"}", "No such file"},
        {"signing_table = {\"example.org nokey\"}", "no key named"},
        {"canonicalization = \"loose/simple\"", "canonicalization"},
        {"min_key_bits = 100", "out of range"},
    };
    const struct pc_filter_ops *ops = pc_filter_find("dkim");

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cfg_t *cfg = pc_conf_filter_cfg(ops);
        void *conf = NULL;
        struct pc_err err = {{0}};
        ck_assert_int_eq(cfg_parse_buf(cfg, cases[i].conf), CFG_SUCCESS);
        ck_assert_int_eq(ops->configure(cfg, &conf, &err), -1);
        ck_assert_msg(strstr(err.msg, cases[i].err) != NULL, "%s: %s", cases[i].conf, err.msg);
        ops->destroy(conf);
        cfg_free(cfg);
    }
}
END_TEST

const char *__asan_default_options(void);
const char *__lsan_default_suppressions(void);

/* __asan_default_options - full stacks so that the suppression below can match */
const char *__asan_default_options(void)
{
    return "fast_unwind_on_malloc=0";
}

/* __lsan_default_suppressions - libopendkim 2.11.0 leaks each Ed25519 signing key */
const char *__lsan_default_suppressions(void)
{
    return "leak:dkim_privkey_load\n";
}

/* suite - the test cases */
static Suite *suite(void)
{
    Suite *s = suite_create("dmarc");
    TCase *tc = tcase_create("dmarc");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, eval_table);
    tcase_add_test(tc, eval_bad_record);
    tcase_add_test(tc, org_domain);
    tcase_add_test(tc, pick);
    tcase_add_test(tc, from_cases);
    tcase_add_test(tc, espoofer_from);
    tcase_add_test(tc, servid_parse);
    tcase_add_test(tc, remove_ours_by_id);
    tcase_add_test(tc, chain_pass);
    tcase_add_test(tc, chain_reject);
    tcase_add_test(tc, chain_multiple_from_rejected);
    tcase_add_test(tc, chain_sign_then_verify);
    tcase_add_test(tc, key_table_errors);
    tcase_add_test(tc, chain_spooled_and_cancelled);
    tcase_add_test(tc, chain_opendmarc_multi_from);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(suite());
    int failed;

    pc_dmarc_library("/usr/share/publicsuffix/public_suffix_list.dat");
    srunner_run_all(sr, CK_ENV);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
