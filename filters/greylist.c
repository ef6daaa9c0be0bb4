/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	greylist 3 - greylisting: defer the first attempt of an unknown triplet
 * DESCRIPTION
 *	At RCPT, the key (by default the client's network, /24 or /64, the
 *	sender and the recipient) is looked up: an unknown key is recorded
 *	and the recipient refused with 451 4.7.1 and the number of seconds
 *	after which a retry will pass; a retry after delay and before
 *	retry_window passes and makes the key allowed for lifetime, extended
 *	at every later pass (policy/greylist.h has the rule). Real MTAs retry;
 *	most bulk senders of spam do not.
 *
 *	Clients that are not greylisted: those of a trusted listener,
 *	authenticated ones, those the relay filter trusts (its mynetworks:
 *	it records the fact "relay" = "trusted"; list "relay" first), those in
 *	allow_networks, and mail from allow_sender_domains or to
 *	allow_rcpt_domains (a domain matches itself and its subdomains).
 *
 *	The state lives in the gateway (in-process, bounded by max_entries)
 *	or in Redis, shared by every gateway using it: the Redis connection is
 *	the rate limit filter's store code (policy/rl_redis.c) running our own
 *	Lua script, atomic and on Redis' clock. When Redis cannot answer, the
 *	filter's on_error applies (tempfail: 451 4.3.0, or accept); never a 5xx.
 *
 *	Each recipient adds the fact "greylist" = "pass" (not subject to
 *	greylisting), "deferred", "allowed" (a known or just promoted key) or
 *	"error" (the store failed; on_error applied).
 * SEE ALSO
 *	RFC 5321 section 4.5.4.1 (retry strategy), RFC 6647 (email greylisting),
 *	RFC 3463 (4.7.1), portcullis.conf(5)
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/filter.h"
#include "core/session.h"
#include "lib/log.h"
#include "lib/parse.h"
#include "core/chain.h"
#include "policy/greylist.h"
#include "policy/ratelimit.h"

#define GL_FIELDS_MAX 8
#define GL_VALUE_MAX  520

enum gl_field {
    GL_CLIENT_IP,
    GL_CLIENT_NET,
    GL_HELO,
    GL_SENDER,
    GL_SENDER_DOMAIN,
    GL_RCPT,
    GL_RCPT_DOMAIN,
};

static const char *const gl_field_names[] = {"client_ip",     "client_net", "helo",       "sender",
                                             "sender_domain", "rcpt",       "rcpt_domain"};
#define GL_NFIELD_NAMES (sizeof(gl_field_names) / sizeof(gl_field_names[0]))

struct gl_conf {
    struct pc_rl_store *redis; /* or NULL: in-process */
    struct pc_gl_mem *mem;
    struct pc_rl_script script;
    struct pc_gl_params p;
    char prefix[65];
    unsigned v4_prefix, v6_prefix;
    enum gl_field fields[GL_FIELDS_MAX];
    size_t nfields;
    struct pc_cidr_list allow_networks;
    char **sender_domains, **rcpt_domains;
    size_t nsender_domains, nrcpt_domains;
};

struct gl_ctx {
    struct pc_session *s;
    struct gl_conf *c;
    struct pc_rl_req *req; /* pending Redis answer */
};

/* The filter's section as rows of the one configuration table (core/param.h). */
static const struct pc_param_row gl_params[] = {
    {"greylist", "store", PT_STR, "", 0, 0, NULL, "redis://host:port/db; empty: in memory"},
    {"greylist", "password", PT_STR, "", 0, 0, NULL, "the store password"},
    {"greylist", "store_timeout", PT_STR, "1s", 0, 0, NULL, "10ms..60s for one store answer"},
    {"greylist", "prefix", PT_STR, "portcullis:gl:", 0, 0, NULL, "key prefix in the store"},
    {"greylist", "max_entries", PT_INT, "100000", 100, 10000000, NULL,
     "entries of the in-memory store"},
    {"greylist", "key", PT_LIST, "{client_net, sender, rcpt}", 0, 0, NULL, "fields of the triplet"},
    {"greylist", "ipv4_prefix", PT_INT, "24", 8, 32, NULL, "client_net of an IPv4 client"},
    {"greylist", "ipv6_prefix", PT_INT, "64", 16, 128, NULL, "client_net of an IPv6 client"},
    {"greylist", "delay", PT_STR, "5m", 0, 0, NULL, "1s..1d before a retry passes"},
    {"greylist", "retry_window", PT_STR, "2d", 0, 0, NULL, "1m..30d for the retry"},
    {"greylist", "lifetime", PT_STR, "35d", 0, 0, NULL, "1m..366d a passed triplet is remembered"},
    {"greylist", "allow_networks", PT_LIST, "{}", 0, 0, NULL, "clients never greylisted"},
    {"greylist", "allow_sender_domains", PT_LIST, "{}", 0, 0, NULL, "senders never greylisted"},
    {"greylist", "allow_rcpt_domains", PT_LIST, "{}", 0, 0, NULL, "recipients never greylisted"},
    {0}};

/* free_list - a strdup'ed string array */
static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* gl_destroy - release configuration and store */
static void gl_destroy(void *conf)
{
    struct gl_conf *c = conf;

    if (c == NULL)
        return;
    pc_rl_store_free(c->redis);
    pc_gl_mem_free(c->mem);
    pc_cidr_list_free(&c->allow_networks);
    free_list(c->sender_domains, c->nsender_domains);
    free_list(c->rcpt_domains, c->nrcpt_domains);
    free(c);
}

/* load_domains - an allow list of domains */
static int load_domains(cfg_t *sec, const char *opt, char ***out, size_t *n, struct pc_err *err)
{
    size_t k = cfg_size(sec, opt);

    *out = calloc(k + 1, sizeof(char *));
    if (*out == NULL)
        return -1;
    for (size_t i = 0; i < k; i++) {
        const char *d = cfg_getnstr(sec, opt, (unsigned)i);
        const char *check = d[0] == '.' ? d + 1 : d;
        if (!pc_domain_valid(check, strlen(check), true)) {
            pc_err_set(err, sec, "greylist: %s: bad domain \"%s\"", opt, d);
            return -1;
        }
        /* "example.com" and ".example.com" both mean the domain and its subdomains. */
        if (((*out)[i] = strdup(check)) == NULL)
            return -1;
        (*n)++;
    }
    return 0;
}

/* duration - a bounded duration option */
static bool duration(cfg_t *sec, const char *opt, unsigned long long min, unsigned long long max,
                     uint64_t *out, struct pc_err *err)
{
    unsigned long long ms;

    if (!pc_parse_duration(cfg_getstr(sec, opt), &ms) || ms < min || ms > max) {
        pc_err_set(err, sec, "greylist: %s must be a duration from %llus to %llud", opt, min / 1000,
                   max / 86400000);
        return false;
    }
    *out = ms;
    return true;
}

/* gl_configure - store, key, times, allow lists */
static int gl_configure(cfg_t *sec, void **out, struct pc_err *err)
{
    struct gl_conf *c = calloc(1, sizeof(*c));
    const char *onerr = cfg_getstr(sec, "on_error"), *prefix = cfg_getstr(sec, "prefix");
    const char *store = cfg_getstr(sec, "store");
    enum pc_on_error oe = PC_ONERR_TEMPFAIL;
    unsigned long long ms;

    *out = NULL;
    if (c == NULL)
        return -1;
    pc_cidr_list_init(&c->allow_networks);
    if (onerr && pc_on_error_parse(onerr, &oe) && oe == PC_ONERR_REJECT) {
        pc_err_set(err, sec,
                   "greylist: on_error must be accept or tempfail (a store outage is never a "
                   "reason for a 5xx)");
        goto fail;
    }
    if (strlen(prefix) > 64 || strspn(prefix, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                              "0123456789:._-{}") != strlen(prefix)) {
        pc_err_set(err, sec, "greylist: prefix: at most 64 of A-Z a-z 0-9 : . _ - { }");
        goto fail;
    }
    snprintf(c->prefix, sizeof(c->prefix), "%s", prefix);
    long v4 = cfg_getint(sec, "ipv4_prefix"), v6 = cfg_getint(sec, "ipv6_prefix");
    if (v4 < 8 || v4 > 32 || v6 < 16 || v6 > 128) {
        pc_err_set(err, sec, "greylist: ipv4_prefix is 8..32, ipv6_prefix 16..128");
        goto fail;
    }
    c->v4_prefix = (unsigned)v4;
    c->v6_prefix = (unsigned)v6;
    if (!duration(sec, "delay", 1000, 86400000ULL, &c->p.delay_ms, err) ||
        !duration(sec, "retry_window", 60000, 30 * 86400000ULL, &c->p.window_ms, err) ||
        !duration(sec, "lifetime", 60000, 366 * 86400000ULL, &c->p.lifetime_ms, err))
        goto fail;
    if (c->p.window_ms <= c->p.delay_ms) {
        pc_err_set(err, sec, "greylist: retry_window must be longer than delay");
        goto fail;
    }
    c->nfields = cfg_size(sec, "key");
    if (c->nfields == 0 || c->nfields > GL_FIELDS_MAX) {
        pc_err_set(err, sec, "greylist: key needs 1 to %d fields", GL_FIELDS_MAX);
        goto fail;
    }
    for (size_t i = 0; i < c->nfields; i++) {
        const char *f = cfg_getnstr(sec, "key", (unsigned)i);
        size_t k;
        for (k = 0; k < GL_NFIELD_NAMES; k++)
            if (strcmp(f, gl_field_names[k]) == 0)
                break;
        if (k == GL_NFIELD_NAMES) {
            pc_err_set(err, sec, "greylist: unknown key field \"%s\"", f);
            goto fail;
        }
        c->fields[i] = (enum gl_field)k;
    }
    for (unsigned i = 0; i < cfg_size(sec, "allow_networks"); i++) {
        const char *n = cfg_getnstr(sec, "allow_networks", i);
        if (!pc_cidr_list_add(&c->allow_networks, n)) {
            pc_err_set(err, sec, "greylist: allow_networks: bad network \"%s\"", n);
            goto fail;
        }
    }
    if (load_domains(sec, "allow_sender_domains", &c->sender_domains, &c->nsender_domains, err) <
            0 ||
        load_domains(sec, "allow_rcpt_domains", &c->rcpt_domains, &c->nrcpt_domains, err) < 0)
        goto fail;
    long max = cfg_getint(sec, "max_entries");
    if (max < 100 || max > 10000000) {
        pc_err_set(err, sec, "greylist: max_entries is 100..10000000");
        goto fail;
    }
    if (!pc_parse_duration(cfg_getstr(sec, "store_timeout"), &ms) || ms < 10 || ms > 60000) {
        pc_err_set(err, sec, "greylist: store_timeout must be a duration from 10ms to 60s");
        goto fail;
    }
    unsigned long long backstop;
    if (pc_parse_duration(cfg_getstr(sec, "timeout"), &backstop) && ms >= backstop) {
        pc_err_set(err, sec,
                   "greylist: store_timeout must be shorter than timeout (the chain's backstop)");
        goto fail;
    }
    if (store[0]) {
        struct pc_rl_store_conf sc = {
            .url = store, .password = cfg_getstr(sec, "password"), .timeout_ms = (unsigned)ms};
        c->redis = pc_rl_redis_create(&sc, err);
        if (c->redis == NULL) {
            char m[sizeof(err->msg)];
            snprintf(m, sizeof(m), "greylist: %.480s", err->msg[0] ? err->msg : "bad store");
            pc_err_set(err, sec, "%s", m);
            goto fail;
        }
        pc_rl_script_init(&c->script, pc_gl_redis_script());
    } else if ((c->mem = pc_gl_mem_new((size_t)max, NULL)) == NULL) {
        goto fail;
    }
    *out = c;
    return 0;
fail:
    gl_destroy(c);
    if (!err->msg[0])
        pc_err_set(err, sec, "greylist: bad configuration");
    return -1;
}

/* gl_start - connect the Redis store */
static int gl_start(void *conf, struct pc_services *svc)
{
    struct gl_conf *c = conf;

    return c->redis ? pc_rl_start(c->redis, svc->base) : 0;
}

/* gl_attach - per-session context */
static int gl_attach(struct pc_session *s, void *conf, void **ctx)
{
    struct gl_ctx *x = calloc(1, sizeof(*x));

    if (x == NULL)
        return -1;
    x->s = s;
    x->c = conf;
    *ctx = x;
    return 0;
}

/* gl_cancel - the chain gave up waiting: the store must not call us back */
static void gl_cancel(struct pc_session *s, void *conf, void *ctx)
{
    struct gl_ctx *x = ctx;
    struct gl_conf *c = conf;

    (void)s;
    if (x && x->req) {
        pc_rl_cancel(c->redis, x->req);
        x->req = NULL;
    }
}

/* gl_detach - end of session */
static void gl_detach(struct pc_session *s, void *conf, void *ctx)
{
    gl_cancel(s, conf, ctx);
    free(ctx);
}

/* lower_copy - lower-cased bounded copy: addresses and names compare case-insensitively */
static const char *lower_copy(char *dst, const char *src)
{
    size_t i = 0;

    for (; src && src[i] && i < GL_VALUE_MAX - 1; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    dst[i] = 0;
    return dst;
}

/* client_net - the client's network (ipv4_prefix / ipv6_prefix) as text */
static const char *client_net(const struct gl_conf *c, const struct pc_session *s, char *dst)
{
    struct pc_ip ip = s->client.ip;
    bool v4 = pc_ip_is_v4(&ip);
    unsigned bits = v4 ? 96 + c->v4_prefix : c->v6_prefix;
    char text[64];

    for (unsigned i = 0; i < 16; i++) {
        if (bits >= 8 * (i + 1))
            continue;
        unsigned keep = bits > 8 * i ? bits - 8 * i : 0;
        ip.b[i] &= (uint8_t)(0xff00u >> keep);
    }
    pc_ip_format(&ip, text, sizeof(text));
    snprintf(dst, GL_VALUE_MAX, "%s/%u", text, v4 ? c->v4_prefix : c->v6_prefix);
    return dst;
}

/* domain_listed - d is one of the domains or a subdomain of one */
static bool domain_listed(char *const *v, size_t n, const char *d)
{
    size_t dl = strlen(d);

    if (dl && d[dl - 1] == '.')
        dl--;
    for (size_t i = 0; i < n; i++) {
        size_t pl = strlen(v[i]);
        if (dl < pl || strncasecmp(d + dl - pl, v[i], pl) != 0)
            continue;
        if (dl == pl || d[dl - pl - 1] == '.')
            return true;
    }
    return false;
}

/* gl_exempt - is this recipient not subject to greylisting, and why */
static const char *gl_exempt(const struct gl_conf *c, struct pc_session *s)
{
    const struct pc_txn *t = s->txn;

    if (s->trusted)
        return "trusted listener";
    if (s->auth_user)
        return "authenticated";
    for (const struct pc_fact *f = pc_fact_next(s, "relay", NULL); f;
         f = pc_fact_next(s, "relay", f))
        if (strcmp(f->value, "trusted") == 0)
            return "relay-trusted client";
    if (pc_cidr_list_match(&c->allow_networks, &s->client.ip))
        return "allow_networks";
    if (t && t->from.domain[0] &&
        domain_listed(c->sender_domains, c->nsender_domains, t->from.domain))
        return "allow_sender_domains";
    if (t && t->cur_rcpt &&
        domain_listed(c->rcpt_domains, c->nrcpt_domains, t->cur_rcpt->mb.domain))
        return "allow_rcpt_domains";
    return NULL;
}

/* gl_key - the store key for this recipient */
static void gl_key(const struct gl_conf *c, struct pc_session *s, char *key)
{
    char buf[GL_FIELDS_MAX][GL_VALUE_MAX];
    const char *val[GL_FIELDS_MAX];
    const struct pc_txn *t = s->txn;

    for (size_t i = 0; i < c->nfields; i++) {
        switch (c->fields[i]) {
        case GL_CLIENT_IP:
            val[i] = s->client.addr;
            break;
        case GL_CLIENT_NET:
            val[i] = client_net(c, s, buf[i]);
            break;
        case GL_HELO:
            val[i] = lower_copy(buf[i], s->helo ? s->helo : "");
            break;
        case GL_SENDER:
            val[i] = lower_copy(buf[i], t ? t->from.addr : "");
            break;
        case GL_SENDER_DOMAIN:
            val[i] = lower_copy(buf[i], t ? t->from.domain : "");
            break;
        case GL_RCPT:
            val[i] = lower_copy(buf[i], t && t->cur_rcpt ? t->cur_rcpt->mb.addr : "");
            break;
        case GL_RCPT_DOMAIN:
            val[i] = lower_copy(buf[i], t && t->cur_rcpt ? t->cur_rcpt->mb.domain : "");
            break;
        }
    }
    /* The same hashing as the rate limits: fixed length, harmless characters. */
    pc_rl_key(c->prefix, "greylist", val, c->nfields, key);
}

/* gl_decide - an outcome to a fact and a verdict */
static enum pc_action gl_decide(struct pc_session *s, enum pc_gl_outcome o, uint64_t retry_ms,
                                struct pc_verdict *v)
{
    const char *qid = s->txn ? s->txn->id : "NOQUEUE";
    const char *rcpt = s->txn && s->txn->cur_rcpt ? s->txn->cur_rcpt->mb.addr : "";

    if (o == PC_GL_DEFERRED) {
        unsigned long secs = (unsigned long)((retry_ms + 999) / 1000);
        pc_fact_add(s, "greylist", "deferred");
        /* RFC 6647 section 4.2: a temporary failure the sender's MTA will retry. */
        pc_verdict_set(v, PC_TEMPFAIL, 451, "4.7.1", "<%s>: Greylisted, try again in %lu seconds",
                       rcpt, secs ? secs : 1);
        v->rule = "greylisted";
        return PC_TEMPFAIL;
    }
    if (o == PC_GL_PROMOTED)
        pc_info("%s: greylist: retry from %s[%s] to <%s> passed", qid, s->client.name,
                s->client.addr, rcpt);
    pc_fact_add(s, "greylist", "allowed");
    return PC_CONTINUE;
}

/* gl_error - the store could not answer: the chain applies on_error */
static enum pc_action gl_error(struct pc_session *s, const char *why, struct pc_verdict *v)
{
    pc_fact_add(s, "greylist", "error");
    pc_verdict_set(v, PC_ERROR, 451, "4.3.0",
                   "Greylisting service unavailable (%s), try again later",
                   why ? why : "store error");
    return PC_ERROR;
}

/* gl_done - the Redis answer of a pending check */
static void gl_done(void *arg, const struct pc_rl_result *res)
{
    struct gl_ctx *x = arg;
    struct pc_verdict v;

    x->req = NULL;
    pc_verdict_clear(&v);
    if (res->error || res->nints != 2 || res->ints[0] < 0 || res->ints[0] > PC_GL_PROMOTED ||
        res->ints[1] < 0)
        v.action = gl_error(x->s, res->error ? res->why : "unexpected reply from redis", &v);
    else
        v.action = gl_decide(x->s, (enum pc_gl_outcome)res->ints[0], (uint64_t)res->ints[1], &v);
    pc_chain_resume(x->s, &v);
}

/* gl_rcpt - one recipient */
static enum pc_action gl_rcpt(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    struct gl_conf *c = conf;
    struct gl_ctx *x = ctx;
    char key[PC_RL_KEY_MAX];
    uint64_t retry = 0;

    if (gl_exempt(c, s)) {
        pc_fact_add(s, "greylist", "pass");
        return PC_CONTINUE;
    }
    gl_key(c, s, key);
    if (c->mem)
        return gl_decide(s, pc_gl_mem_check(c->mem, key, &c->p, &retry), retry, v);

    char a[3][24];
    const char *keys[1] = {key}, *args[3] = {a[0], a[1], a[2]};
    struct pc_rl_result res;
    snprintf(a[0], sizeof(a[0]), "%llu", (unsigned long long)c->p.delay_ms);
    snprintf(a[1], sizeof(a[1]), "%llu", (unsigned long long)c->p.window_ms);
    snprintf(a[2], sizeof(a[2]), "%llu", (unsigned long long)c->p.lifetime_ms);
    if (pc_rl_redis_eval(c->redis, &c->script, keys, 1, args, 3, &res, gl_done, x, &x->req) ==
        PC_RL_PENDING)
        return PC_PENDING;
    return gl_error(s, res.why, v);
}

const struct pc_filter_ops pc_filter_greylist = {
    .name = "greylist",
    /* The relay filter's fact relay = trusted exempts a client. */
    .after = (const char *const[]){"relay", NULL},
    .abi = PC_FILTER_ABI,
    .params = gl_params,
    .configure = gl_configure,
    .start = gl_start,
    .destroy = gl_destroy,
    .attach = gl_attach,
    .detach = gl_detach,
    .cancel = gl_cancel,
    .stage = {[PC_STAGE_RCPT] = gl_rcpt},
};
