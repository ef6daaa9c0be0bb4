/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	rdns 3 - forward-confirmed reverse DNS of the client (FCrDNS)
 * DESCRIPTION
 *	At CONNECT the client address is looked up as a PTR; each name found
 *	(at most max_names) is looked up as A or AAAA (the client's family),
 *	and the client is "verified" when one of those addresses is the
 *	client's own. The verified name becomes s->client.name (logs,
 *	Received header, XCLIENT NAME); the first well-formed PTR name becomes
 *	s->client.ptr. Both stay "unknown" otherwise.
 *
 *	PTR data is attacker-controlled: labels may carry CR, LF, NUL, dots,
 *	spaces or be 63 bytes of anything. Names are decoded with every odd
 *	byte escaped (pc_dns_rdata_name) and then must be LDH host names
 *	(pc_dns_hostname_clean), else they are treated as absent; nothing
 *	else of them reaches a log line, a header or the backend. The number
 *	of names and forward queries is bounded; CNAME loops are libunbound's
 *	to stop (they come back as SERVFAIL, i.e. "try later").
 *
 *	No PTR or no forward match: 550 5.7.25; DNS trouble: 450 4.7.25
 *	(RFC 7372), passed as PC_ERROR so the filter's on_error applies. The
 *	refusal is given at CONNECT (where the core's delay_reject may hold
 *	it until RCPT) or, with reject_stage = rcpt, by this filter at RCPT.
 *
 *	Facts: rdns = pass | fail | none | temperror, rdns_name, rdns_ptr.
 * SEE ALSO
 *	RFC 1912 section 2.1, RFC 7372, RFC 8601 section 2.7.3 (iprev)
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/filter.h"
#include "core/session.h"
#include "core/dns.h"
#include "core/chain.h"
#include "lib/log.h"
#include "lib/pool.h"

#define RDNS_MAX_NAMES 10

struct rdns_conf {
    bool reject;
    bool at_rcpt;
    unsigned max_names;
    int reject_code, tempfail_code;
    struct pc_cidr_list skip;
};

struct rdns_ctx;

struct rdns_fwd { /* one forward lookup: the callback's argument */
    struct rdns_ctx *x;
    struct pc_dns_query *q;
    char name[PC_DNS_NAME_MAX];
};

struct rdns_ctx {
    struct pc_session *s;
    const struct rdns_conf *c;
    struct pc_dns_query *ptrq;
    struct rdns_fwd fwd[RDNS_MAX_NAMES];
    unsigned nnames, outstanding;
    bool trylater;
    struct pc_verdict held; /* reject_stage = rcpt */
};

/* The filter's section as rows of the one configuration table (core/param.h). */
static const struct pc_param_row rdns_params[] = {
    {"rdns", "reject", PT_BOOL, "true", 0, 0, NULL, "refuse a client without a verified name"},
    {"rdns", "reject_stage", PT_STR, "connect", 0, 0, NULL, "connect or rcpt"},
    {"rdns", "max_names", PT_INT, "10", 1, 10, NULL, "PTR names checked"},
    {"rdns", "reject_code", PT_INT, "550", 500, 599, NULL, "the reply code of a refusal"},
    {"rdns", "tempfail_code", PT_INT, "450", 400, 499, NULL, "the reply code when DNS fails"},
    {"rdns", "skip_networks", PT_LIST, "{}", 0, 0, NULL, "clients not checked"},
    {0}};

/* rdns_configure - options */
static int rdns_configure(cfg_t *sec, void **out, struct pc_err *err)
{
    struct rdns_conf *c = calloc(1, sizeof(*c));
    const char *stage = cfg_getstr(sec, "reject_stage");
    long max = cfg_getint(sec, "max_names");

    if (c == NULL)
        return -1;
    pc_cidr_list_init(&c->skip);
    *out = c;
    c->reject = cfg_getbool(sec, "reject");
    if (strcasecmp(stage, "connect") == 0)
        c->at_rcpt = false;
    else if (strcasecmp(stage, "rcpt") == 0)
        c->at_rcpt = true;
    else {
        pc_err_set(err, sec, "rdns: reject_stage must be connect or rcpt");
        return -1;
    }
    if (max < 1 || max > RDNS_MAX_NAMES) {
        pc_err_set(err, sec, "rdns: max_names must be 1..%d", RDNS_MAX_NAMES);
        return -1;
    }
    c->max_names = (unsigned)max;
    c->reject_code = (int)cfg_getint(sec, "reject_code");
    c->tempfail_code = (int)cfg_getint(sec, "tempfail_code");
    if (c->reject_code / 100 != 5 || c->reject_code > 599 || c->tempfail_code / 100 != 4 ||
        c->tempfail_code > 499) {
        pc_err_set(err, sec, "rdns: reject_code must be 5xx and tempfail_code 4xx");
        return -1;
    }
    for (unsigned i = 0; i < cfg_size(sec, "skip_networks"); i++) {
        const char *n = cfg_getnstr(sec, "skip_networks", i);
        if (!pc_cidr_list_add(&c->skip, n)) {
            pc_err_set(err, sec, "rdns: skip_networks: bad network \"%s\"", n);
            return -1;
        }
    }
    return 0;
}

/* rdns_destroy - release configuration */
static void rdns_destroy(void *conf)
{
    struct rdns_conf *c = conf;

    pc_cidr_list_free(&c->skip);
    free(c);
}

/* rdns_attach - per-session context in the session pool */
static int rdns_attach(struct pc_session *s, void *conf, void **ctx)
{
    struct rdns_ctx *x = pc_pool_zalloc(s->pool, sizeof(*x));

    x->s = s;
    x->c = conf;
    *ctx = x;
    return 0;
}

/* rdns_cancel_all - forget every outstanding query */
static void rdns_cancel_all(struct rdns_ctx *x)
{
    pc_dns_cancel(x->ptrq);
    x->ptrq = NULL;
    for (size_t i = 0; i < RDNS_MAX_NAMES; i++) {
        pc_dns_cancel(x->fwd[i].q);
        x->fwd[i].q = NULL;
    }
    x->outstanding = 0;
}

/* rdns_cancel - the chain gave up: no callback may touch the session */
static void rdns_cancel(struct pc_session *s, void *conf, void *ctx)
{
    (void)s, (void)conf;
    rdns_cancel_all(ctx);
}

/* rdns_finish - record the outcome, resume the chain */
static void rdns_finish(struct rdns_ctx *x, const char *result, const char *name)
{
    struct pc_session *s = x->s;
    struct pc_verdict v;

    rdns_cancel_all(x);
    pc_verdict_clear(&v);
    pc_fact_add(s, "rdns", "%s", result);
    if (name) {
        snprintf(s->client.name, sizeof(s->client.name), "%s", name);
        pc_fact_add(s, "rdns_name", "%s", name);
    }
    if (strcmp(s->client.ptr, "unknown") != 0)
        pc_fact_add(s, "rdns_ptr", "%s", s->client.ptr);
    if (strcmp(result, "temperror") == 0)
        pc_verdict_set(&v, PC_ERROR, x->c->tempfail_code, "4.7.25",
                       "Client host rejected: cannot find your hostname, [%s] (DNS trouble)",
                       s->client.addr);
    else if (strcmp(result, "pass") != 0 && x->c->reject)
        pc_verdict_set(&v, PC_REJECT, x->c->reject_code, "5.7.25",
                       "Client host rejected: cannot find your %s, [%s]",
                       strcmp(result, "none") == 0 ? "reverse hostname" : "hostname",
                       s->client.addr);
    pc_info("%s: rdns: %s[%s] ptr=%s result=%s", s->sid, s->client.name, s->client.addr,
            s->client.ptr, result);
    if (x->c->at_rcpt && v.action != PC_CONTINUE) {
        x->held = v;
        pc_verdict_clear(&v);
    }
    pc_chain_resume(s, &v);
}

/* on_forward - one A/AAAA answer for a PTR name */
static void on_forward(void *arg, enum pc_dns_status st, const struct pc_dns_answer *a)
{
    struct rdns_fwd *f = arg;
    struct rdns_ctx *x = f->x;

    f->q = NULL;
    x->outstanding--;
    if (st == PC_DNS_TRYLATER)
        x->trylater = true;
    if (st == PC_DNS_FOUND) {
        for (size_t i = 0; i < a->n; i++) {
            struct pc_ip ip;
            if (pc_dns_rdata_ip(a->rrtype, a->rr[i], a->rr_len[i], &ip) &&
                memcmp(&ip, &x->s->client.ip, sizeof(ip)) == 0) {
                rdns_finish(x, "pass", f->name);
                return;
            }
        }
    }
    if (x->outstanding == 0)
        rdns_finish(x, x->trylater ? "temperror" : "fail", NULL);
}

/* on_ptr - the PTR answer: start the forward lookups */
static void on_ptr(void *arg, enum pc_dns_status st, const struct pc_dns_answer *a)
{
    struct rdns_ctx *x = arg;
    struct pc_session *s = x->s;
    int rrtype = pc_ip_is_v4(&s->client.ip) ? PC_DNS_T_A : PC_DNS_T_AAAA;

    x->ptrq = NULL;
    if (st == PC_DNS_TRYLATER) {
        rdns_finish(x, "temperror", NULL);
        return;
    }
    if (st == PC_DNS_FOUND) {
        for (size_t i = 0; i < a->n && x->nnames < x->c->max_names; i++) {
            char raw[PC_DNS_NAME_MAX * 4 + 8], clean[PC_DNS_NAME_MAX];
            int n = pc_dns_rdata_name(a->rr[i], a->rr_len[i], raw, sizeof(raw));
            if (n < 0)
                continue;
            pc_dns_hostname_clean(raw, (size_t)n, clean, sizeof(clean));
            if (strcmp(clean, "unknown") == 0) {
                /* raw is escaped, printable and bounded: safe to log */
                pc_info("%s: rdns: [%s] malformed PTR name \"%.80s\" ignored", s->sid,
                        s->client.addr, raw);
                continue;
            }
            bool dup = false;
            for (unsigned k = 0; k < x->nnames; k++)
                dup |= strcmp(x->fwd[k].name, clean) == 0;
            if (!dup)
                memcpy(x->fwd[x->nnames++].name, clean, strlen(clean) + 1);
        }
    }
    if (x->nnames == 0) {
        rdns_finish(x, "none", NULL);
        return;
    }
    snprintf(s->client.ptr, sizeof(s->client.ptr), "%s", x->fwd[0].name);
    for (unsigned k = 0; k < x->nnames; k++) {
        struct rdns_fwd *f = &x->fwd[k];
        f->x = x;
        f->q = pc_dns_lookup(s->svc->dns, f->name, rrtype, on_forward, f);
        if (f->q == NULL)
            x->trylater = true;
        else
            x->outstanding++;
    }
    if (x->outstanding == 0)
        rdns_finish(x, "temperror", NULL);
}

/* rdns_connect - start the PTR lookup */
static enum pc_action rdns_connect(struct pc_session *s, void *conf, void *ctx,
                                   struct pc_verdict *v)
{
    const struct rdns_conf *c = conf;
    struct rdns_ctx *x = ctx;
    char name[PC_DNS_NAME_MAX];

    if (pc_cidr_list_match(&c->skip, &s->client.ip))
        return PC_CONTINUE;
    if (s->svc->dns == NULL || !pc_dns_reverse(&s->client.ip, NULL, name, sizeof(name))) {
        pc_verdict_set(v, PC_ERROR, c->tempfail_code, "4.7.25", "no resolver");
        return PC_ERROR;
    }
    x->nnames = 0;
    x->trylater = false;
    x->ptrq = pc_dns_lookup(s->svc->dns, name, PC_DNS_T_PTR, on_ptr, x);
    if (x->ptrq == NULL) {
        pc_verdict_set(v, PC_ERROR, c->tempfail_code, "4.7.25", "resolver busy");
        return PC_ERROR;
    }
    return PC_PENDING;
}

/* rdns_rcpt - a refusal held for RCPT (reject_stage = rcpt) */
static enum pc_action rdns_rcpt(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    struct rdns_ctx *x = ctx;

    (void)s, (void)conf;
    if (x->held.action == PC_CONTINUE)
        return PC_CONTINUE;
    *v = x->held;
    return v->action;
}

/* rdns_detach - end of session */
static void rdns_detach(struct pc_session *s, void *conf, void *ctx)
{
    (void)s, (void)conf;
    rdns_cancel_all(ctx);
}

const struct pc_filter_ops pc_filter_rdns = {
    .name = "rdns",
    .abi = PC_FILTER_ABI,
    .params = rdns_params,
    .configure = rdns_configure,
    .destroy = rdns_destroy,
    .attach = rdns_attach,
    .detach = rdns_detach,
    .cancel = rdns_cancel,
    .stage = {[PC_STAGE_CONNECT] = rdns_connect, [PC_STAGE_RCPT] = rdns_rcpt},
};
