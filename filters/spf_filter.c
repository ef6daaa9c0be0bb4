/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	spf_filter 3 - Sender Policy Framework check of MAIL FROM (or HELO for <>)
 * DESCRIPTION
 *	libspf2 evaluates the policy; it is synchronous, so each check runs
 *	on the worker pool (core/worker.h) and its answer comes back to
 *	the loop, which resumes the chain.
 *
 *	The libspf2 glue (our DNS layer over the shared resolver, the
 *	corrections to libspf2 where it falls short of RFC 7208) is in
 *	filters/spf.c; this file is the filter shell.
 *
 *	Result actions: fail refuses with 550 5.7.23, temperror 451 4.7.24
 *	(RFC 7372), the rest continue; each is configurable. Clients in
 *	trusted_networks, authenticated clients and clients of a trusted
 *	listener are checked (fact, header) but never refused.
 *
 *	Facts: spf = pass | fail | softfail | neutral | none | temperror |
 *	permerror, spf_domain (the identity checked), spf_identity (mailfrom
 *	or helo). Header: Received-SPF (RFC 7208 9.1), added at end of data.
 * SEE ALSO
 *	RFC 7208, RFC 7372, libspf2
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/chain.h"
#include "core/filter.h"
#include "core/session.h"
#include "core/worker.h"
#include "filters/spf.h"
#include "lib/cidr.h"
#include "lib/log.h"
#include "lib/pool.h"

enum spf_act { SPF_ACT_CONTINUE, SPF_ACT_REJECT, SPF_ACT_TEMPFAIL };

struct spf_conf {
    enum spf_act act[PC_SPF_COUNT];
    struct pc_cidr_list trusted;
    bool header;
};

struct spf_ctx {
    struct pc_session *s;
    const struct spf_conf *c;
    struct pc_spf_job *job;
    char *header; /* Received-SPF value, for end of data */
};

/* ---------------------------------------------------------------------- */
/* The filter.                                                            */

/* The filter's section as rows of the one configuration table (core/param.h). */
static const struct pc_param_row spf_params[] = {
    {"spf", "fail_action", PT_STR, "reject", 0, 0, NULL,
     "on fail: reject, tempfail, continue or tag"},
    {"spf", "softfail_action", PT_STR, "continue", 0, 0, NULL, "on softfail"},
    {"spf", "neutral_action", PT_STR, "continue", 0, 0, NULL, "on neutral"},
    {"spf", "none_action", PT_STR, "continue", 0, 0, NULL, "on none"},
    {"spf", "temperror_action", PT_STR, "tempfail", 0, 0, NULL, "on temperror"},
    {"spf", "permerror_action", PT_STR, "continue", 0, 0, NULL, "on permerror"},
    {"spf", "trusted_networks", PT_LIST, "{}", 0, 0, NULL, "clients not checked"},
    {"spf", "header", PT_BOOL, "true", 0, 0, NULL, "add Received-SPF"},
    {0}};

/* spf_configure - actions per result, trusted networks */
static int spf_configure(cfg_t *sec, void **out, struct pc_err *err)
{
    static const char *const opt[PC_SPF_COUNT] = {
        "none_action",     "neutral_action",   "pass_action_unused", "fail_action",
        "softfail_action", "temperror_action", "permerror_action"};
    struct spf_conf *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return -1;
    pc_cidr_list_init(&c->trusted);
    *out = c;
    for (int r = 0; r < PC_SPF_COUNT; r++) {
        if (r == PC_SPF_PASS)
            continue;
        const char *v = cfg_getstr(sec, opt[r]);
        if (strcasecmp(v, "continue") == 0)
            c->act[r] = SPF_ACT_CONTINUE;
        else if (strcasecmp(v, "reject") == 0)
            c->act[r] = SPF_ACT_REJECT;
        else if (strcasecmp(v, "tempfail") == 0)
            c->act[r] = SPF_ACT_TEMPFAIL;
        else {
            pc_err_set(err, sec, "spf: %s must be continue, reject or tempfail", opt[r]);
            return -1;
        }
    }
    for (unsigned i = 0; i < cfg_size(sec, "trusted_networks"); i++) {
        const char *n = cfg_getnstr(sec, "trusted_networks", i);
        if (!pc_cidr_list_add(&c->trusted, n)) {
            pc_err_set(err, sec, "spf: trusted_networks: bad network \"%s\"", n);
            return -1;
        }
    }
    c->header = cfg_getbool(sec, "header");
    return 0;
}

/* spf_start - quiet libspf2's own stderr chatter (process-wide, set once) */
static int spf_start(void *conf, struct pc_services *svc)
{
    (void)conf, (void)svc;
    pc_spf_quiet();
    return 0;
}

/* spf_destroy - release configuration */
static void spf_destroy(void *conf)
{
    struct spf_conf *c = conf;

    pc_cidr_list_free(&c->trusted);
    free(c);
}

/* spf_attach - per-session context */
static int spf_attach(struct pc_session *s, void *conf, void **ctx)
{
    struct spf_ctx *x = pc_pool_zalloc(s->pool, sizeof(*x));

    x->s = s;
    x->c = conf;
    *ctx = x;
    return 0;
}

/* spf_abandon - the session no longer wants the running job; done() frees it */
static void spf_abandon(struct spf_ctx *x)
{
    if (x->job) {
        x->job->owner = NULL;
        atomic_store(&x->job->abandoned, true);
        x->job = NULL;
    }
}

/* spf_cancel - the chain gave up */
static void spf_cancel(struct pc_session *s, void *conf, void *ctx)
{
    (void)s, (void)conf;
    spf_abandon(ctx);
}

/* spf_work - worker thread */
static void spf_work(void *arg)
{
    pc_spf_run(arg);
}

/* spf_header_value - the Received-SPF field body (RFC 7208 9.1), from sanitised data */
static char *spf_header_value(struct pc_session *s, const struct pc_spf_job *job)
{
    const char *r = pc_spf_result_names[job->result];
    char who[PC_PATH_MAX + 16];

    if (job->helo_identity)
        snprintf(who, sizeof(who), "postmaster@%s", job->domain);
    else
        snprintf(who, sizeof(who), "%s", job->sender);
    for (char *p = who; *p; p++) /* a quoted local part may hold anything */
        if (*p == '"' || *p == '\\' || *p == '(' || *p == ')' || (unsigned char)*p < 0x21 ||
            (unsigned char)*p > 0x7e)
            *p = '?';
    /* The field belongs to this transaction: in the session's pool it would stay until the
     * client leaves, growing with every MAIL. */
    return pc_pool_printf(s->txn ? s->txn->pool : s->pool,
                          "%s (%s: domain of %s %s %s) client-ip=%s; envelope-from=\"%s\"; "
                          "helo=%s; receiver=%s; identity=%s;",
                          r, job->receiver, who,
                          job->result == PC_SPF_PASS   ? "designates"
                          : job->result == PC_SPF_FAIL ? "does not designate"
                                                       : "gives result for",
                          s->client.addr, s->client.addr, job->helo_identity ? "" : who,
                          pc_dns_hostname_ok(job->helo) ? job->helo : "unknown", job->receiver,
                          job->helo_identity ? "helo" : "mailfrom");
}

/* spf_done - loop thread: record and decide */
static void spf_done(void *arg)
{
    struct pc_spf_job *job = arg;
    struct spf_ctx *x = job->owner;
    struct pc_verdict v;

    if (x == NULL) { /* abandoned */
        free(job);
        return;
    }
    struct pc_session *s = x->s;
    x->job = NULL;
    pc_verdict_clear(&v);
    pc_fact_add(s, "spf", "%s", pc_spf_result_names[job->result]);
    pc_fact_add(s, "spf_domain", "%s", job->domain);
    pc_fact_add(s, "spf_identity", "%s", job->helo_identity ? "helo" : "mailfrom");
    pc_info("%s: spf: %s[%s] %s=%s result=%s%s%s", s->sid, s->client.name, s->client.addr,
            job->helo_identity ? "helo" : "mailfrom", job->domain, pc_spf_result_names[job->result],
            job->comment[0] ? " " : "", job->comment);
    if (x->c->header)
        x->header = spf_header_value(s, job);
    bool trusted = s->trusted || s->auth_user || pc_cidr_list_match(&x->c->trusted, &s->client.ip);
    switch (trusted ? SPF_ACT_CONTINUE : x->c->act[job->result]) {
    case SPF_ACT_CONTINUE:
        break;
    case SPF_ACT_REJECT:
        pc_verdict_set(&v, PC_REJECT, 550, "5.7.23", "SPF %s for %s from [%s]%s%s",
                       pc_spf_result_names[job->result], job->domain, s->client.addr,
                       job->comment[0] ? ": " : "", job->comment);
        break;
    case SPF_ACT_TEMPFAIL:
        /* PC_ERROR: the filter's on_error may choose to let it through */
        pc_verdict_set(&v, PC_ERROR, 451, "4.7.24", "SPF %s for %s; try again later",
                       pc_spf_result_names[job->result], job->domain);
        break;
    }
    free(job);
    pc_chain_resume(s, &v);
}

/* spf_mail - start the check on a worker */
static enum pc_action spf_mail(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    struct spf_ctx *x = ctx;
    const struct pc_mailbox *from = &s->txn->from;
    struct pc_spf_job *job;

    (void)conf;
    x->header = NULL;
    if (s->svc->dns == NULL || s->svc->workers == NULL) {
        pc_verdict_set(v, PC_ERROR, 451, "4.7.24", "no resolver");
        return PC_ERROR;
    }
    if ((job = calloc(1, sizeof(*job))) == NULL)
        return PC_ERROR;
    pc_spf_job_init(job, s->svc, &s->client.ip, s->helo, from->addr, from->domain,
                    from->null || from->domain[0] == 0 || from->literal);
    /* the resolver answers within dns.timeout; the guard only covers a stopped loop */
    job->guard_ms = pc_dns_timeout_ms(s->svc->dns) + 1000;
    job->owner = x;
    x->job = job;
    pc_worker_submit(s->svc->workers, spf_work, spf_done, job);
    return PC_PENDING;
}

/* spf_eom - add Received-SPF */
static enum pc_action spf_eom(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    struct spf_ctx *x = ctx;

    (void)conf, (void)v;
    if (x->header)
        pc_header_add(s, "Received-SPF", x->header);
    return PC_CONTINUE;
}

/* spf_reset - end of transaction */
static void spf_reset(struct pc_session *s, void *conf, void *ctx)
{
    struct spf_ctx *x = ctx;

    (void)s, (void)conf;
    spf_abandon(x);
    x->header = NULL;
}

/* spf_detach - end of session */
static void spf_detach(struct pc_session *s, void *conf, void *ctx)
{
    (void)s, (void)conf;
    spf_abandon(ctx);
}

const struct pc_filter_ops pc_filter_spf = {
    .name = "spf",
    .abi = PC_FILTER_ABI,
    .params = spf_params,
    .configure = spf_configure,
    .start = spf_start,
    .destroy = spf_destroy,
    .attach = spf_attach,
    .reset = spf_reset,
    .detach = spf_detach,
    .cancel = spf_cancel,
    .stage = {[PC_STAGE_MAIL] = spf_mail, [PC_STAGE_EOM] = spf_eom},
};
