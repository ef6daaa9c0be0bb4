/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	dnsbl 3 - DNS block and allow lists with weights (postscreen-style)
 * DESCRIPTION
 *	Each entry of "sites" is zone[=pattern][*weight]: the pattern matches
 *	the A records of the list's answer octet by octet, where an octet is
 *	a number, "*", or a bracketed set "[2..11]" / "[2;4;8..10]"; without
 *	a pattern any answer inside 127.0.0.0/8 counts (answers elsewhere
 *	are wildcard junk, never a listing). The weight (default 1, may be
 *	negative for allow lists such as a DNSWL) is added once per matching
 *	entry. One query per distinct zone, all in parallel, at CONNECT.
 *
 *	A total at or above threshold refuses the client with 554 5.7.1
 *	naming the heaviest matching list. A list that fails to answer is
 *	ignored unless, had it listed the client, the total could have
 *	reached the threshold: then the filter cannot decide (PC_ERROR, the
 *	filter's on_error), so an outage never turns into a pass or a 5xx
 *	by accident. Clients in allow_networks are not looked up at all.
 *
 *	Facts: dnsbl (one per matching entry: the zone), dnsbl_score.
 *	Scores: DNSBL_<zone> with the entry's weight.
 * SEE ALSO
 *	RFC 5782, postscreen(8) postscreen_dnsbl_sites
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/filter.h"
#include "core/session.h"
#include "core/dns.h"
#include "policy/dnsbl_sites.h"
#include "lib/log.h"
#include "lib/pool.h"
#include "core/chain.h"

struct dnsbl_conf {
    struct pc_dnsbl_sites sites;
    int threshold;
    int reject_code;
    struct pc_cidr_list allow;
};

struct dnsbl_ctx {
    struct pc_session *s;
    const struct dnsbl_conf *c;
    struct pc_dnsbl_lookup l;
};

/* The filter's section as rows of the one configuration table (core/param.h). */
static const struct pc_param_row dnsbl_params[] = {
    {"dnsbl", "sites", PT_LIST, "{}", 0, 0, NULL, "zones, each ZONE or ZONE=WEIGHT"},
    {"dnsbl", "threshold", PT_INT, "1", 1, 1000, NULL, "total weight that refuses"},
    {"dnsbl", "reject_code", PT_INT, "554", 500, 599, NULL, "the reply code of a refusal"},
    {"dnsbl", "allow_networks", PT_LIST, "{}", 0, 0, NULL, "clients not looked up"},
    {0}};

/* dnsbl_configure - sites, threshold, allow list */
static int dnsbl_configure(cfg_t *sec, void **out, struct pc_err *err)
{
    struct dnsbl_conf *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return -1;
    pc_cidr_list_init(&c->allow);
    *out = c;
    if (cfg_size(sec, "sites") > PC_DNSBL_MAX_SITES) {
        pc_err_set(err, sec, "dnsbl: at most %d sites", PC_DNSBL_MAX_SITES);
        return -1;
    }
    for (unsigned i = 0; i < cfg_size(sec, "sites"); i++) {
        const char *t = cfg_getnstr(sec, "sites", i);
        const char *why = pc_dnsbl_sites_add(&c->sites, t);
        if (why) {
            pc_err_set(err, sec, "dnsbl: sites: \"%s\": %s", t, why);
            return -1;
        }
    }
    long threshold = cfg_getint(sec, "threshold");
    if (threshold < 1 || threshold > 1000) {
        pc_err_set(err, sec, "dnsbl: threshold must be 1..1000");
        return -1;
    }
    c->threshold = (int)threshold;
    c->reject_code = (int)cfg_getint(sec, "reject_code");
    if (c->reject_code < 500 || c->reject_code > 599) {
        pc_err_set(err, sec, "dnsbl: reject_code must be 5xx");
        return -1;
    }
    for (unsigned i = 0; i < cfg_size(sec, "allow_networks"); i++) {
        const char *n = cfg_getnstr(sec, "allow_networks", i);
        if (!pc_cidr_list_add(&c->allow, n)) {
            pc_err_set(err, sec, "dnsbl: allow_networks: bad network \"%s\"", n);
            return -1;
        }
    }
    return 0;
}

/* dnsbl_destroy - release configuration */
static void dnsbl_destroy(void *conf)
{
    struct dnsbl_conf *c = conf;

    pc_cidr_list_free(&c->allow);
    free(c);
}

/* dnsbl_attach - per-session context */
static int dnsbl_attach(struct pc_session *s, void *conf, void **ctx)
{
    struct dnsbl_ctx *x = pc_pool_zalloc(s->pool, sizeof(*x));

    x->s = s;
    x->c = conf;
    *ctx = x;
    return 0;
}

/* dnsbl_cancel - the chain gave up */
static void dnsbl_cancel(struct pc_session *s, void *conf, void *ctx)
{
    struct dnsbl_ctx *x = ctx;

    (void)s, (void)conf;
    pc_dnsbl_lookup_cancel(&x->l);
}

/* dnsbl_decide - all lists answered (or failed) */
static void dnsbl_decide(void *arg, struct pc_dnsbl_lookup *l)
{
    struct dnsbl_ctx *x = arg;
    struct pc_session *s = x->s;
    const struct dnsbl_conf *c = x->c;
    struct pc_verdict v;

    pc_verdict_clear(&v);
    pc_fact_add(s, "dnsbl_score", "%d", l->total);
    if (l->total >= c->threshold && l->worst)
        pc_verdict_set(&v, PC_REJECT, c->reject_code, "5.7.1",
                       "Service unavailable; client [%s] blocked using %s", s->client.addr,
                       l->worst->zone);
    else if (l->unknown_max > 0 && l->total + l->unknown_max >= c->threshold)
        pc_verdict_set(&v, PC_ERROR, 451, "4.7.1",
                       "Service unavailable; cannot check client [%s] against DNS lists",
                       s->client.addr);
    pc_chain_resume(s, &v);
}

/* dnsbl_hit - a matching site: its fact and its score */
static void dnsbl_hit(void *arg, const struct pc_dnsbl_site *site)
{
    struct dnsbl_ctx *x = arg;
    char sym[PC_DNS_NAME_MAX + 8];

    pc_fact_add(x->s, "dnsbl", "%s", site->zone);
    snprintf(sym, sizeof(sym), "DNSBL_%s", site->zone);
    pc_score_add(x->s, "dnsbl", pc_pool_strdup(x->s->pool, sym), site->weight);
}

/* dnsbl_connect - ask every zone at once */
static enum pc_action dnsbl_connect(struct pc_session *s, void *conf, void *ctx,
                                    struct pc_verdict *v)
{
    const struct dnsbl_conf *c = conf;
    struct dnsbl_ctx *x = ctx;

    if (c->sites.nzones == 0 || pc_cidr_list_match(&c->allow, &s->client.ip))
        return PC_CONTINUE;
    if (s->svc->dns == NULL) {
        pc_verdict_set(v, PC_ERROR, 451, "4.7.1", "no resolver");
        return PC_ERROR;
    }
    if (pc_dnsbl_lookup_start(&x->l, &c->sites, s->svc->dns, &s->client.ip, s->sid, s->client.addr,
                              dnsbl_hit, dnsbl_decide, x) == 0) {
        pc_verdict_set(v, PC_ERROR, 451, "4.7.1", "resolver busy");
        return PC_ERROR;
    }
    return PC_PENDING;
}

/* dnsbl_detach - end of session */
static void dnsbl_detach(struct pc_session *s, void *conf, void *ctx)
{
    struct dnsbl_ctx *x = ctx;

    (void)s, (void)conf;
    pc_dnsbl_lookup_cancel(&x->l);
}

const struct pc_filter_ops pc_filter_dnsbl = {
    .name = "dnsbl",
    .abi = PC_FILTER_ABI,
    .params = dnsbl_params,
    .configure = dnsbl_configure,
    .destroy = dnsbl_destroy,
    .attach = dnsbl_attach,
    .detach = dnsbl_detach,
    .cancel = dnsbl_cancel,
    .stage = {[PC_STAGE_CONNECT] = dnsbl_connect},
};
