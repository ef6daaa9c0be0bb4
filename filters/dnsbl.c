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
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/filter.h"
#include "core/session.h"
#include "core/dns.h"
#include "lib/log.h"
#include "lib/pool.h"
#include "core/chain.h"

#define DNSBL_MAX_SITES 32

struct dnsbl_site {
    char zone[PC_DNS_NAME_MAX];
    bool has_pattern;
    uint8_t match[4][32]; /* per octet: a 256-bit set */
    int weight;
    size_t zi; /* index of its distinct zone */
};

struct dnsbl_conf {
    struct dnsbl_site sites[DNSBL_MAX_SITES];
    size_t nsites;
    char zones[DNSBL_MAX_SITES][PC_DNS_NAME_MAX];
    size_t nzones;
    int threshold;
    int reject_code;
    struct pc_cidr_list allow;
};

struct dnsbl_ctx;

struct dnsbl_q {
    struct dnsbl_ctx *x;
    struct pc_dns_query *q;
    size_t zi;
};

struct dnsbl_ctx {
    struct pc_session *s;
    const struct dnsbl_conf *c;
    struct dnsbl_q q[DNSBL_MAX_SITES];
    size_t outstanding;
    int total, unknown_max; /* score so far; what failed lists could have added */
    const struct dnsbl_site *worst;
};

/* The filter's section as rows of the one configuration table (core/param.h). */
static const struct pc_param_row dnsbl_params[] = {
    {"dnsbl", "sites", PT_LIST, "{}", 0, 0, NULL, "zones, each ZONE or ZONE=WEIGHT"},
    {"dnsbl", "threshold", PT_INT, "1", 1, 1000, NULL, "total weight that refuses"},
    {"dnsbl", "reject_code", PT_INT, "554", 500, 599, NULL, "the reply code of a refusal"},
    {"dnsbl", "allow_networks", PT_LIST, "{}", 0, 0, NULL, "clients not looked up"},
    {0}};

/* set_bit - mark an octet value as accepted */
static void set_bit(uint8_t *set, unsigned v)
{
    set[v >> 3] |= (uint8_t)(1u << (v & 7));
}

/* parse_num - a decimal octet; advances *p */
static bool parse_num(const char **p, unsigned *out)
{
    unsigned v = 0;
    int n = 0;

    while (isdigit((unsigned char)**p) && n < 4) {
        v = v * 10 + (unsigned)(**p - '0');
        (*p)++;
        n++;
    }
    *out = v;
    return n > 0 && n < 4 && v <= 255;
}

/* parse_octet - "N", "*", or "[a..b;c;...]" into a set; advances *p */
static bool parse_octet(const char **p, uint8_t *set)
{
    unsigned a, b;

    if (**p == '*') {
        memset(set, 0xff, 32);
        (*p)++;
        return true;
    }
    if (**p != '[') {
        if (!parse_num(p, &a))
            return false;
        set_bit(set, a);
        return true;
    }
    (*p)++;
    for (;;) {
        if (!parse_num(p, &a))
            return false;
        b = a;
        if ((*p)[0] == '.' && (*p)[1] == '.') {
            *p += 2;
            if (!parse_num(p, &b) || b < a)
                return false;
        }
        for (unsigned v = a; v <= b; v++)
            set_bit(set, v);
        if (**p == ';') {
            (*p)++;
            continue;
        }
        if (**p == ']') {
            (*p)++;
            return true;
        }
        return false;
    }
}

/* dnsbl_parse_site - "zone[=pattern][*weight]"; NULL or the reason it is wrong */
static const char *dnsbl_parse_site(const char *text, struct dnsbl_site *site)
{
    const char *eq = strchr(text, '='), *star = strrchr(text, '*');
    const char *zend;
    size_t zlen;

    memset(site, 0, sizeof(*site));
    site->weight = 1;
    if (star && eq && star < eq)
        star = NULL;
    /* A '*' inside the pattern is an octet wildcard: the weight's star is the one after "]" or a
     * digit. */
    if (star && eq) {
        const char *w = star + 1;
        if (*w == 0 || (*w != '-' && !isdigit((unsigned char)*w)))
            star = NULL;
        else if (star[-1] == '.')
            star = NULL;
    }
    zend = eq ? eq : star ? star : text + strlen(text);
    zlen = (size_t)(zend - text);
    if (zlen && text[zlen - 1] == '.')
        zlen--;
    if (zlen == 0 || zlen >= sizeof(site->zone))
        return "bad zone";
    memcpy(site->zone, text, zlen);
    site->zone[zlen] = 0;
    for (char *z = site->zone; *z; z++)
        *z = (char)tolower((unsigned char)*z);
    if (!pc_dns_hostname_ok(site->zone))
        return "bad zone";
    if (eq) {
        const char *p = eq + 1;
        site->has_pattern = true;
        for (int o = 0; o < 4; o++) {
            if (!parse_octet(&p, site->match[o]))
                return "bad pattern (want like 127.0.0.[2..11])";
            if (o < 3 && *p++ != '.')
                return "bad pattern (want four octets)";
        }
        if (*p != 0 && p != star)
            return "junk after pattern";
    }
    if (star) {
        char *end;
        long w = strtol(star + 1, &end, 10);
        if (*end != 0 || w < -1000 || w > 1000)
            return "bad weight (want *N, -1000..1000)";
        site->weight = (int)w;
    }
    return NULL;
}

/* dnsbl_site_match - does one answer address match the entry */
static bool dnsbl_site_match(const struct dnsbl_site *site, const uint8_t a[4])
{
    if (!site->has_pattern)
        return a[0] == 127;
    for (int o = 0; o < 4; o++)
        if (!(site->match[o][a[o] >> 3] & (1u << (a[o] & 7))))
            return false;
    return true;
}

/* dnsbl_configure - sites, threshold, allow list */
static int dnsbl_configure(cfg_t *sec, void **out, struct pc_err *err)
{
    struct dnsbl_conf *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return -1;
    pc_cidr_list_init(&c->allow);
    *out = c;
    if (cfg_size(sec, "sites") > DNSBL_MAX_SITES) {
        pc_err_set(err, sec, "dnsbl: at most %d sites", DNSBL_MAX_SITES);
        return -1;
    }
    for (unsigned i = 0; i < cfg_size(sec, "sites"); i++) {
        const char *t = cfg_getnstr(sec, "sites", i);
        struct dnsbl_site *site = &c->sites[c->nsites];
        const char *why = dnsbl_parse_site(t, site);
        if (why) {
            pc_err_set(err, sec, "dnsbl: sites: \"%s\": %s", t, why);
            return -1;
        }
        size_t z;
        for (z = 0; z < c->nzones; z++)
            if (strcmp(c->zones[z], site->zone) == 0)
                break;
        if (z == c->nzones)
            memcpy(c->zones[c->nzones++], site->zone, sizeof(site->zone));
        site->zi = z;
        c->nsites++;
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

/* dnsbl_cancel_all - forget outstanding queries */
static void dnsbl_cancel_all(struct dnsbl_ctx *x)
{
    for (size_t i = 0; i < DNSBL_MAX_SITES; i++) {
        pc_dns_cancel(x->q[i].q);
        x->q[i].q = NULL;
    }
    x->outstanding = 0;
}

/* dnsbl_cancel - the chain gave up */
static void dnsbl_cancel(struct pc_session *s, void *conf, void *ctx)
{
    (void)s, (void)conf;
    dnsbl_cancel_all(ctx);
}

/* dnsbl_decide - all lists answered (or failed) */
static void dnsbl_decide(struct dnsbl_ctx *x)
{
    struct pc_session *s = x->s;
    const struct dnsbl_conf *c = x->c;
    struct pc_verdict v;

    pc_verdict_clear(&v);
    pc_fact_add(s, "dnsbl_score", "%d", x->total);
    if (x->total >= c->threshold && x->worst)
        pc_verdict_set(&v, PC_REJECT, c->reject_code, "5.7.1",
                       "Service unavailable; client [%s] blocked using %s", s->client.addr,
                       x->worst->zone);
    else if (x->unknown_max > 0 && x->total + x->unknown_max >= c->threshold)
        pc_verdict_set(&v, PC_ERROR, 451, "4.7.1",
                       "Service unavailable; cannot check client [%s] against DNS lists",
                       s->client.addr);
    pc_chain_resume(s, &v);
}

/* on_answer - one list's answer */
static void on_answer(void *arg, enum pc_dns_status st, const struct pc_dns_answer *a)
{
    struct dnsbl_q *dq = arg;
    struct dnsbl_ctx *x = dq->x;
    const struct dnsbl_conf *c = x->c;

    dq->q = NULL;
    x->outstanding--;
    for (size_t i = 0; i < c->nsites; i++) {
        const struct dnsbl_site *site = &c->sites[i];
        bool hit = false;
        if (site->zi != dq->zi)
            continue;
        if (st == PC_DNS_TRYLATER) {
            if (site->weight > 0)
                x->unknown_max += site->weight;
            continue;
        }
        for (size_t k = 0; st == PC_DNS_FOUND && k < a->n && !hit; k++)
            if (a->rrtype == PC_DNS_T_A && a->rr_len[k] == 4)
                hit = dnsbl_site_match(site, (const uint8_t *)a->rr[k]);
        if (!hit)
            continue;
        x->total += site->weight;
        pc_fact_add(x->s, "dnsbl", "%s", site->zone);
        char sym[PC_DNS_NAME_MAX + 8];
        snprintf(sym, sizeof(sym), "DNSBL_%s", site->zone);
        pc_score_add(x->s, "dnsbl", pc_pool_strdup(x->s->pool, sym), site->weight);
        if (site->weight > 0 && (x->worst == NULL || site->weight > x->worst->weight))
            x->worst = site;
    }
    if (st == PC_DNS_TRYLATER)
        pc_info("%s: dnsbl: [%s] %s did not answer", x->s->sid, x->s->client.addr,
                c->zones[dq->zi]);
    if (x->outstanding == 0)
        dnsbl_decide(x);
}

/* dnsbl_connect - ask every zone at once */
static enum pc_action dnsbl_connect(struct pc_session *s, void *conf, void *ctx,
                                    struct pc_verdict *v)
{
    const struct dnsbl_conf *c = conf;
    struct dnsbl_ctx *x = ctx;

    if (c->nzones == 0 || pc_cidr_list_match(&c->allow, &s->client.ip))
        return PC_CONTINUE;
    if (s->svc->dns == NULL) {
        pc_verdict_set(v, PC_ERROR, 451, "4.7.1", "no resolver");
        return PC_ERROR;
    }
    x->total = x->unknown_max = 0;
    x->worst = NULL;
    for (size_t z = 0; z < c->nzones; z++) {
        char name[PC_DNS_NAME_MAX * 2];
        struct dnsbl_q *dq = &x->q[z];
        if (!pc_dns_reverse(&s->client.ip, c->zones[z], name, sizeof(name)))
            continue;
        dq->x = x;
        dq->zi = z;
        dq->q = pc_dns_lookup(s->svc->dns, name, PC_DNS_T_A, on_answer, dq);
        if (dq->q)
            x->outstanding++;
    }
    if (x->outstanding == 0) {
        pc_verdict_set(v, PC_ERROR, 451, "4.7.1", "resolver busy");
        return PC_ERROR;
    }
    return PC_PENDING;
}

/* dnsbl_detach - end of session */
static void dnsbl_detach(struct pc_session *s, void *conf, void *ctx)
{
    (void)s, (void)conf;
    dnsbl_cancel_all(ctx);
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
