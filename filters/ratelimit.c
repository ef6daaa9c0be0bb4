/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	ratelimit 3 - rate limits and quotas, in-process or shared through Redis
 * DESCRIPTION
 *	Each limit counts one thing (connections, messages, recipients or
 *	bytes) per key (client address or network, HELO name, AUTH user,
 *	sender, recipient, their domains, or a combination) at the stage where
 *	it happens: connections at connect, recipients at RCPT, messages and
 *	bytes at the end of data. It refuses there: 450 4.7.1 with when to try
 *	again, or 421 4.7.0 and a hang-up for a connection flood.
 *
 *	All the limits of a stage go to the store in one check, all or
 *	nothing (policy/ratelimit.h). With Redis the hook is pending until
 *	the answer comes; the store has its own short per-request timeout, so
 *	the filter's timeout is only a backstop. When the store cannot answer,
 *	each limit follows its on_error (accept or tempfail); a Redis outage
 *	never turns into a 5xx.
 *
 *	Rules choose limits: a limit with rule = "R" applies only when rule R
 *	matched earlier in the session or transaction (the rules filter
 *	records each matching rule as the fact "rule" = its name; list
 *	"rules" before "ratelimit"). A limit with named_only applies only
 *	when some filter added the fact "ratelimit.apply" = the limit's name.
 *	So operators can give different limits to different clients or users. Every check leaves the
 *fact "ratelimit" = "name=ok|exceeded|error" for rules and filters that run later. SEE ALSO RFC
 *5321 section 4.5.3.1 (limits), RFC 3463 (4.7.1, 4.7.0), portcullis.conf(5)
 */
#include <ctype.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/filter.h"
#include "core/session.h"
#include "lib/log.h"
#include "lib/parse.h"
#include "core/chain.h"
#include "policy/ratelimit.h"
#include "policy/rl_store.h"

#define RL_FIELDS_MAX 8
#define RL_VALUE_MAX  520

enum rl_count { RL_CONNECTIONS, RL_MESSAGES, RL_RECIPIENTS, RL_BYTES };

enum rl_field {
    RL_CLIENT_IP,
    RL_CLIENT_NET,
    RL_HELO,
    RL_AUTH_USER,
    RL_SENDER,
    RL_SENDER_DOMAIN,
    RL_RCPT,
    RL_RCPT_DOMAIN,
};

static const char *const rl_field_names[] = {"client_ip", "client_net",    "helo", "auth_user",
                                             "sender",    "sender_domain", "rcpt", "rcpt_domain"};
static const char *const rl_count_names[] = {"connections", "messages", "recipients", "bytes"};

struct rl_limit {
    char *name;
    enum rl_field fields[RL_FIELDS_MAX];
    size_t nfields;
    enum rl_count count;
    enum pc_stage stage;
    double interval_us, burst;
    bool tempfail_on_error;
    bool named_only;
    char *rule; /* applies only when this rule matched (fact "rule"), or NULL */
};

struct rl_conf {
    struct pc_rl_store *store;
    bool slot_tag;                   /* Redis Cluster: one hash tag per check */
    unsigned common[PC_STAGE_COUNT]; /* key fields every limit of a stage has (bit mask) */
    char prefix[65];
    unsigned v4_prefix, v6_prefix;
    struct rl_limit *limits;
    size_t nlimits;
};

struct rl_ctx {
    struct pc_session *s;
    struct rl_conf *c;
    struct pc_rl_req *req; /* pending check */
    enum pc_stage stage;
    size_t idx[PC_RL_BATCH_MAX]; /* item -> limit */
    size_t n;
};

/* The filter's section as rows of the one configuration table (core/param.h); limit "name" { }
 * repeats, its rows are in the section "ratelimit.limit". */
static const struct pc_param_row rl_params[] = {
    {"ratelimit", "store", PT_STR, "", 0, 0, NULL, "redis://, redis-cluster://; empty: in memory"},
    {"ratelimit", "sentinels", PT_LIST, "{}", 0, 0, NULL, "Redis Sentinels, host:port"},
    {"ratelimit", "sentinel_master", PT_STR, "", 0, 0, NULL, "the master the Sentinels name"},
    {"ratelimit", "password", PT_STR, "", 0, 0, NULL, "the store password"},
    {"ratelimit", "store_timeout", PT_STR, "1s", 0, 0, NULL, "10ms..60s for one store answer"},
    {"ratelimit", "prefix", PT_STR, "portcullis:rl:", 0, 0, NULL, "key prefix in the store"},
    {"ratelimit", "max_entries", PT_INT, "100000", 100, 100000000, NULL,
     "entries of the in-memory store"},
    {"ratelimit", "ipv4_prefix", PT_INT, "24", 8, 32, NULL, "client_net of an IPv4 client"},
    {"ratelimit", "ipv6_prefix", PT_INT, "64", 16, 128, NULL, "client_net of an IPv6 client"},
    {"ratelimit", "limit", PT_SECTION, NULL, 0, 0, NULL, "one limit, by its name"},
    {"ratelimit.limit", "key", PT_LIST, "{client_ip}", 0, 0, NULL, "fields the limit counts by"},
    {"ratelimit.limit", "count", PT_STR, "messages", 0, 0, NULL,
     "connections, messages, recipients or bytes"},
    {"ratelimit.limit", "rate", PT_STR, NULL, 0, 0, NULL, "N/period, e.g. 100/1h"},
    {"ratelimit.limit", "burst", PT_INT, "0", 0, 1000000000000L, NULL, "0: the rate's N"},
    {"ratelimit.limit", "on_error", PT_STR, NULL, 0, 0, NULL, "unset: the filter's on_error"},
    {"ratelimit.limit", "named_only", PT_BOOL, "false", 0, 0, NULL, "only in limit() rules"},
    {"ratelimit.limit", "rule", PT_STR, "", 0, 0, NULL, "count only when this rule matched"},
    {0}};

/* rl_destroy - release configuration and store */
static void rl_destroy(void *conf)
{
    struct rl_conf *c = conf;

    if (c == NULL)
        return;
    pc_rl_store_free(c->store);
    for (size_t i = 0; i < c->nlimits; i++) {
        free(c->limits[i].name);
        free(c->limits[i].rule);
    }
    free(c->limits);
    free(c);
}

/* rl_field_ok - may this key field be used at the limit's stage */
static bool rl_field_ok(enum rl_field f, enum rl_count count)
{
    switch (f) {
    case RL_CLIENT_IP:
    case RL_CLIENT_NET:
        return true;
    case RL_RCPT:
    case RL_RCPT_DOMAIN:
        return count == RL_RECIPIENTS;
    default:
        return count != RL_CONNECTIONS;
    }
}

/* rl_limit_load - one limit "name" { } section */
static int rl_limit_load(cfg_t *sec, struct rl_limit *l, bool dflt_tempfail, struct pc_err *err)
{
    const char *count = cfg_getstr(sec, "count"), *rate = cfg_getstr(sec, "rate");
    const char *onerr = cfg_getstr(sec, "on_error");
    struct pc_rl_rate r;
    long burst = cfg_getint(sec, "burst");
    size_t k;

    l->name = strdup(cfg_title(sec));
    if (l->name == NULL)
        return -1;
    if (strlen(l->name) == 0 || strlen(l->name) > 64) {
        pc_err_set(err, sec, "ratelimit: limit names are 1 to 64 characters");
        return -1;
    }
    for (k = 0; k < 4; k++)
        if (strcmp(count, rl_count_names[k]) == 0)
            break;
    if (k == 4) {
        pc_err_set(err, sec,
                   "ratelimit: limit \"%s\": count must be connections, messages, "
                   "recipients or bytes, not \"%s\"",
                   l->name, count);
        return -1;
    }
    l->count = (enum rl_count)k;
    l->stage = l->count == RL_CONNECTIONS  ? PC_STAGE_CONNECT
               : l->count == RL_RECIPIENTS ? PC_STAGE_RCPT
                                           : PC_STAGE_EOM;
    if (rate == NULL || !pc_rl_rate_parse(rate, &r)) {
        pc_err_set(err, sec,
                   "ratelimit: limit \"%s\": rate must be like \"100/1h\" (count, "
                   "optional K/M/G, \"/\", a period from 1s to 30d), not \"%s\"",
                   l->name, rate ? rate : "(unset)");
        return -1;
    }
    if (burst < 0 || burst > 1000000000000L) {
        pc_err_set(err, sec, "ratelimit: limit \"%s\": burst = %ld is out of range", l->name,
                   burst);
        return -1;
    }
    l->interval_us = (double)r.period_ms * 1000.0 / r.count;
    l->burst = burst ? (double)burst : r.count;
    /* A key lives as long as its bucket takes to drain; keep that within a year (and
     * within what Redis takes as PX). */
    if (l->burst * l->interval_us > 366.0 * 86400e6) {
        pc_err_set(err, sec, "ratelimit: limit \"%s\": burst / rate drains in more than a year",
                   l->name);
        return -1;
    }
    if (onerr == NULL)
        l->tempfail_on_error = dflt_tempfail;
    else if (strcasecmp(onerr, "accept") == 0 || strcasecmp(onerr, "tempfail") == 0)
        l->tempfail_on_error = strcasecmp(onerr, "tempfail") == 0;
    else {
        pc_err_set(err, sec, "ratelimit: limit \"%s\": on_error must be accept or tempfail",
                   l->name);
        return -1;
    }
    l->named_only = cfg_getbool(sec, "named_only");
    const char *rule = cfg_getstr(sec, "rule");
    if (rule && rule[0] && (l->rule = strdup(rule)) == NULL)
        return -1;
    l->nfields = cfg_size(sec, "key");
    if (l->nfields == 0 || l->nfields > RL_FIELDS_MAX) {
        pc_err_set(err, sec, "ratelimit: limit \"%s\": key needs 1 to %d fields", l->name,
                   RL_FIELDS_MAX);
        return -1;
    }
    for (size_t i = 0; i < l->nfields; i++) {
        const char *f = cfg_getnstr(sec, "key", (unsigned)i);
        for (k = 0; k < sizeof(rl_field_names) / sizeof(rl_field_names[0]); k++)
            if (strcmp(f, rl_field_names[k]) == 0)
                break;
        if (k == sizeof(rl_field_names) / sizeof(rl_field_names[0])) {
            pc_err_set(err, sec, "ratelimit: limit \"%s\": unknown key field \"%s\"", l->name, f);
            return -1;
        }
        l->fields[i] = (enum rl_field)k;
        if (!rl_field_ok(l->fields[i], l->count)) {
            pc_err_set(err, sec,
                       "ratelimit: limit \"%s\": key field %s is not known when %s "
                       "are counted",
                       l->name, f, count);
            return -1;
        }
    }
    return 0;
}

/* rl_configure - store and limits */
static int rl_configure(cfg_t *sec, void **out, struct pc_err *err)
{
    struct rl_conf *c = calloc(1, sizeof(*c));
    struct pc_rl_store_conf sc = {0};
    const char *onerr = cfg_getstr(sec, "on_error"), *prefix = cfg_getstr(sec, "prefix");
    unsigned long long ms;
    const char *sent[64];

    *out = NULL;
    if (c == NULL)
        return -1;
    enum pc_on_error oe = PC_ONERR_TEMPFAIL;
    if (onerr && !pc_on_error_parse(onerr, &oe))
        oe = PC_ONERR_TEMPFAIL; /* the core's validator has already refused it */
    if (oe == PC_ONERR_REJECT) {
        pc_err_set(err, sec,
                   "ratelimit: on_error must be accept or tempfail (a store outage "
                   "is never a reason for a 5xx)");
        goto fail;
    }
    if (strlen(prefix) > 64 || strspn(prefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                              "0123456789:._-{}") != strlen(prefix)) {
        pc_err_set(err, sec, "ratelimit: prefix: at most 64 of A-Z a-z 0-9 : . _ - { }");
        goto fail;
    }
    snprintf(c->prefix, sizeof(c->prefix), "%s", prefix);
    long v4 = cfg_getint(sec, "ipv4_prefix"), v6 = cfg_getint(sec, "ipv6_prefix");
    if (v4 < 8 || v4 > 32 || v6 < 16 || v6 > 128) {
        pc_err_set(err, sec, "ratelimit: ipv4_prefix is 8..32, ipv6_prefix 16..128");
        goto fail;
    }
    c->v4_prefix = (unsigned)v4;
    c->v6_prefix = (unsigned)v6;
    if (!pc_parse_duration(cfg_getstr(sec, "store_timeout"), &ms) || ms < 10 || ms > 60000) {
        pc_err_set(err, sec, "ratelimit: store_timeout must be a duration from 10ms to 60s");
        goto fail;
    }
    unsigned long long backstop;
    if (pc_parse_duration(cfg_getstr(sec, "timeout"), &backstop) && ms >= backstop) {
        pc_err_set(err, sec,
                   "ratelimit: store_timeout must be shorter than timeout (the "
                   "chain's backstop)");
        goto fail;
    }
    long max = cfg_getint(sec, "max_entries");
    if (max < 100 || max > 100000000) {
        pc_err_set(err, sec, "ratelimit: max_entries is 100..100000000");
        goto fail;
    }
    sc.url = cfg_getstr(sec, "store");
    sc.nsentinels = cfg_size(sec, "sentinels");
    if (sc.nsentinels > 64) {
        pc_err_set(err, sec, "ratelimit: at most 64 sentinels");
        goto fail;
    }
    for (size_t i = 0; i < sc.nsentinels; i++)
        sent[i] = cfg_getnstr(sec, "sentinels", (unsigned)i);
    sc.sentinels = sent;
    sc.master = cfg_getstr(sec, "sentinel_master");
    sc.password = cfg_getstr(sec, "password");
    sc.timeout_ms = (unsigned)ms;
    sc.max_entries = (size_t)max;
    c->nlimits = cfg_size(sec, "limit");
    c->limits = calloc(c->nlimits ? c->nlimits : 1, sizeof(*c->limits));
    if (c->limits == NULL)
        goto fail;
    bool dflt_tempfail = oe == PC_ONERR_TEMPFAIL;
    size_t per_stage[PC_STAGE_COUNT] = {0};
    for (size_t i = 0; i < c->nlimits; i++) {
        if (rl_limit_load(cfg_getnsec(sec, "limit", (unsigned)i), &c->limits[i], dflt_tempfail,
                          err) < 0)
            goto fail;
        if (++per_stage[c->limits[i].stage] > PC_RL_BATCH_MAX) {
            pc_err_set(err, sec, "ratelimit: at most %d limits count at one stage",
                       PC_RL_BATCH_MAX);
            goto fail;
        }
    }
    /* The store is built now (address errors name the line) and connects in start(). */
    c->store = pc_rl_store_create(&sc, err);
    if (c->store == NULL) {
        char m[sizeof(err->msg)];
        snprintf(m, sizeof(m), "%s", err->msg[0] ? err->msg : "ratelimit: bad store");
        pc_err_set(err, sec, "%s", m);
        goto fail;
    }
    c->slot_tag = strcmp(c->store->ops->kind, "redis-cluster") == 0;
    for (int st = 0; st < PC_STAGE_COUNT; st++)
        c->common[st] = ~0u;
    for (size_t i = 0; i < c->nlimits; i++) {
        unsigned m = 0;
        for (size_t k = 0; k < c->limits[i].nfields; k++)
            m |= 1u << c->limits[i].fields[k];
        c->common[c->limits[i].stage] &= m;
    }
    *out = c;
    return 0;
fail:
    rl_destroy(c);
    if (!err->msg[0])
        pc_err_set(err, sec, "ratelimit: bad configuration");
    return -1;
}

/* rl_start - connect the store */
static int rl_start(void *conf, struct pc_services *svc)
{
    struct rl_conf *c = conf;

    return pc_rl_start(c->store, svc->base);
}

/* rl_attach - per-session context */
static int rl_attach(struct pc_session *s, void *conf, void **ctx)
{
    struct rl_ctx *x = calloc(1, sizeof(*x));

    if (x == NULL)
        return -1;
    x->s = s;
    x->c = conf;
    *ctx = x;
    return 0;
}

/* rl_cancel - the chain gave up on us: drop the store's reference to the session */
static void rl_cancel(struct pc_session *s, void *conf, void *ctx)
{
    struct rl_ctx *x = ctx;
    struct rl_conf *c = conf;

    (void)s;
    if (x && x->req) {
        pc_rl_cancel(c->store, x->req);
        x->req = NULL;
    }
}

/* rl_detach - end of session */
static void rl_detach(struct pc_session *s, void *conf, void *ctx)
{
    rl_cancel(s, conf, ctx);
    free(ctx);
}

/* lower_copy - lower-cased, bounded copy (addresses and names compare case-insensitively) */
static const char *lower_copy(char *dst, const char *src)
{
    size_t i = 0;

    for (; src && src[i] && i < RL_VALUE_MAX - 1; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    dst[i] = 0;
    return dst;
}

/* client_net - the client's /24 (IPv4) or /64 (IPv6) network as text */
static const char *client_net(const struct rl_conf *c, const struct pc_session *s, char *dst)
{
    struct pc_ip ip = s->client.ip;
    bool v4 = pc_ip_is_v4(&ip);
    unsigned bits = v4 ? 96 + c->v4_prefix : c->v6_prefix;

    for (unsigned i = 0; i < 16; i++) {
        if (bits >= 8 * (i + 1))
            continue;
        unsigned keep = bits > 8 * i ? bits - 8 * i : 0;
        ip.b[i] &= (uint8_t)(0xff00u >> keep);
    }
    char text[64];
    pc_ip_format(&ip, text, sizeof(text));
    snprintf(dst, RL_VALUE_MAX, "%s/%u", text, v4 ? c->v4_prefix : c->v6_prefix);
    return dst;
}

/* rl_has_fact - does the session or transaction carry fact = value */
static bool rl_has_fact(const struct pc_session *s, const char *fact, const char *value)
{
    for (const struct pc_fact *f = pc_fact_next(s, fact, NULL); f; f = pc_fact_next(s, fact, f))
        if (strcmp(f->value, value) == 0)
            return true;
    return false;
}

/* rl_item - the store item for one limit now; false when the limit does not apply */
static bool rl_item(const struct rl_conf *c, const struct rl_limit *l, struct pc_session *s,
                    struct pc_rl_item *it)
{
    char buf[RL_FIELDS_MAX][RL_VALUE_MAX];
    const char *val[RL_FIELDS_MAX];
    const struct pc_txn *t = s->txn;

    if (l->named_only && !rl_has_fact(s, PC_RL_FACT_APPLY, l->name))
        return false;
    /* The rules filter records every rule that matched as fact "rule" = its name. */
    if (l->rule && !rl_has_fact(s, "rule", l->rule))
        return false;
    for (size_t i = 0; i < l->nfields; i++) {
        switch (l->fields[i]) {
        case RL_CLIENT_IP:
            val[i] = s->client.addr;
            break;
        case RL_CLIENT_NET:
            val[i] = client_net(c, s, buf[i]);
            break;
        case RL_HELO:
            val[i] = lower_copy(buf[i], s->helo ? s->helo : "");
            break;
        case RL_AUTH_USER:
            /* A limit keyed on the AUTH user is for authenticated sessions only. */
            if (s->auth_user == NULL)
                return false;
            val[i] = s->auth_user;
            break;
        case RL_SENDER:
            val[i] = lower_copy(buf[i], t ? t->from.addr : "");
            break;
        case RL_SENDER_DOMAIN:
            val[i] = lower_copy(buf[i], t ? t->from.domain : "");
            break;
        case RL_RCPT:
            val[i] = lower_copy(buf[i], t && t->cur_rcpt ? t->cur_rcpt->mb.addr : "");
            break;
        case RL_RCPT_DOMAIN:
            val[i] = lower_copy(buf[i], t && t->cur_rcpt ? t->cur_rcpt->mb.domain : "");
            break;
        }
    }
    if (c->slot_tag) {
        /* Redis Cluster runs a script atomically only on keys of one slot: every key of this
         * check carries the same hash tag, made of the stage and the values of the key fields
         * all its limits share (so one client's counters spread over the cluster, and a
         * limit's key is the same in every check). */
        char pfx[sizeof(c->prefix) + 24], tagkey[PC_RL_KEY_MAX];
        const char *tv[RL_FIELDS_MAX];
        size_t nt = 0;
        for (unsigned f = 0; f < RL_FIELDS_MAX; f++) /* in field order, whatever each key's */
            for (size_t i = 0; i < l->nfields; i++)
                if ((c->common[l->stage] & (1u << f)) && l->fields[i] == f) {
                    tv[nt++] = val[i];
                    break;
                }
        pc_rl_key("", pc_stage_name(l->stage), tv, nt, tagkey);
        snprintf(pfx, sizeof(pfx), "%s{%.16s}", c->prefix, tagkey);
        pc_rl_key(pfx, l->name, val, l->nfields, it->key);
    } else {
        pc_rl_key(c->prefix, l->name, val, l->nfields, it->key);
    }
    it->interval_us = l->interval_us;
    it->burst = l->burst;
    it->cost = 1;
    if (l->count == RL_BYTES) {
        /* A message larger than the burst may still pass when the bucket is full. */
        it->cost = t ? (double)t->msg.size : 0;
        if (it->cost > l->burst)
            it->cost = l->burst;
        if (it->cost <= 0)
            return false;
    }
    return true;
}

/* rl_decide - the store's answer to a verdict */
static enum pc_action rl_decide(struct rl_ctx *x, const struct pc_rl_result *res,
                                struct pc_verdict *v)
{
    struct pc_session *s = x->s;
    const struct rl_conf *c = x->c;
    const char *qid = s->txn ? s->txn->id : "NOQUEUE";

    if (res->error) {
        bool tempfail = false;
        for (size_t i = 0; i < x->n; i++) {
            const struct rl_limit *l = &c->limits[x->idx[i]];
            pc_fact_add(s, "ratelimit", "%s=error", l->name);
            tempfail |= l->tempfail_on_error;
        }
        pc_info("%s: ratelimit: store error (%s) from %s[%s]; on_error=%s", qid,
                res->why ? res->why : "unknown", s->client.name, s->client.addr,
                tempfail ? "tempfail" : "accept");
        if (!tempfail)
            return PC_CONTINUE;
        pc_verdict_set(v, PC_TEMPFAIL, 451, "4.3.0",
                       "Rate limit service unavailable, try again later");
        return PC_TEMPFAIL;
    }
    const struct rl_limit *worst = NULL;
    uint64_t retry = 0;
    for (size_t i = 0; i < x->n; i++) {
        const struct rl_limit *l = &c->limits[x->idx[i]];
        if (res->a[i].allowed) { /* within this limit (charged only when all were) */
            pc_fact_add(s, "ratelimit", "%s=ok", l->name);
        } else {
            pc_fact_add(s, "ratelimit", "%s=exceeded", l->name);
            if (worst == NULL || res->a[i].retry_after_ms > retry) {
                worst = l;
                retry = res->a[i].retry_after_ms;
            }
        }
    }
    if (worst == NULL)
        return PC_CONTINUE;
    unsigned long secs = (unsigned long)((retry + 999) / 1000);
    if (secs == 0)
        secs = 1;
    v->rule = worst->name;
    if (worst->count == RL_CONNECTIONS) {
        pc_verdict_set(v, PC_DISCONNECT, 421, "4.7.0",
                       "Too many connections from %s, try again in %lu seconds", s->client.addr,
                       secs);
        return PC_DISCONNECT;
    }
    pc_verdict_set(v, PC_TEMPFAIL, 450, "4.7.1",
                   "Rate limit exceeded (%s: %s), try again in %lu seconds", worst->name,
                   rl_count_names[worst->count], secs);
    return PC_TEMPFAIL;
}

/* rl_done - the store answered a pending check */
static void rl_done(void *arg, const struct pc_rl_result *res)
{
    struct rl_ctx *x = arg;
    struct pc_verdict v;

    x->req = NULL;
    pc_verdict_clear(&v);
    v.action = rl_decide(x, res, &v);
    pc_chain_resume(x->s, &v);
}

/* rl_run - check the limits that count at this stage */
static enum pc_action rl_run(struct pc_session *s, struct rl_ctx *x, enum pc_stage stage,
                             struct pc_verdict *v)
{
    const struct rl_conf *c = x->c;
    struct pc_rl_item items[PC_RL_BATCH_MAX];
    struct pc_rl_result res;

    x->n = 0;
    x->stage = stage;
    for (size_t i = 0; i < c->nlimits && x->n < PC_RL_BATCH_MAX; i++) {
        if (c->limits[i].stage != stage)
            continue;
        if (rl_item(c, &c->limits[i], s, &items[x->n]))
            x->idx[x->n++] = i;
    }
    if (x->n == 0)
        return PC_CONTINUE;
    if (pc_rl_check(c->store, items, x->n, &res, rl_done, x, &x->req) == PC_RL_PENDING)
        return PC_PENDING;
    return rl_decide(x, &res, v);
}

/* rl_connect - connections */
static enum pc_action rl_connect(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    (void)conf;
    return rl_run(s, ctx, PC_STAGE_CONNECT, v);
}

/* rl_rcpt - recipients */
static enum pc_action rl_rcpt(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    (void)conf;
    return rl_run(s, ctx, PC_STAGE_RCPT, v);
}

/* rl_eom - messages and bytes */
static enum pc_action rl_eom(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    (void)conf;
    return rl_run(s, ctx, PC_STAGE_EOM, v);
}

const struct pc_filter_ops pc_filter_ratelimit = {
    .name = "ratelimit",
    .abi = PC_FILTER_ABI,
    .flags = PC_FILTER_GATE,
    .params = rl_params,
    .configure = rl_configure,
    .start = rl_start,
    .destroy = rl_destroy,
    .attach = rl_attach,
    .detach = rl_detach,
    .cancel = rl_cancel,
    .stage = {[PC_STAGE_CONNECT] = rl_connect, [PC_STAGE_RCPT] = rl_rcpt, [PC_STAGE_EOM] = rl_eom},
};
