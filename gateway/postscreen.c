/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	postscreen 3 - postscreen-style checks before and around the greeting
 * DESCRIPTION
 *	See gateway/postscreen.h. The pause is a timer; the greeting waits for
 *	it and for the DNS lists (each bounded by dns.timeout), so "before the
 *	greeting" is a state of the session, not a race with the connect
 *	stage.
 *
 *	The pass cache is one table for the process (it outlives a reload:
 *	a good client stays good), keyed by address, two slots per hash so
 *	that a collision rarely evicts a live entry; when both are taken the
 *	one that expires first gives way. Its size is cache_size rounded up
 *	to a power of two; a new size empties it.
 * SEE ALSO
 *	postscreen(8): PREGREET, DNSBL rank, PIPELINING, NON-SMTP COMMAND,
 *	BARE NEWLINE, HANGUP, PASS NEW, PASS OLD
 */
#include "gateway/postscreen.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/session.h"
#include "core/verdict.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "policy/rl_store.h"

static const char *const ps_log_names[PC_PS_TESTS] = {"PREGREET", "DNSBL", "PIPELINING",
                                                      "NON-SMTP COMMAND", "BARE NEWLINE"};
static const char *const ps_fact_names[PC_PS_TESTS] = {"pregreet", "dnsbl", "pipelining",
                                                       "non_smtp", "bare_newline"};
static const char *const ps_action_names[] = {"ignore", "enforce", "drop"};

/* The shared cache's one script: KEYS[1] the address's key; ARGV[1] get (answers {1} when the
 * address passed), set (for ARGV[2] ms) or forget. */
static const char ps_redis_script[] =
    "if ARGV[1] == 'get' then return {redis.call('EXISTS', KEYS[1])} end\n"
    "if ARGV[1] == 'set' then redis.call('SET', KEYS[1], '1', 'PX', ARGV[2]) return {1} end\n"
    "redis.call('DEL', KEYS[1])\n"
    "return {0}\n";

struct ps_entry {
    struct pc_ip ip;
    uint64_t expires; /* monotonic ms; 0: free */
};

static struct ps_entry *ps_cache;
static size_t ps_cache_mask; /* slots - 1 */

/* now_ms - monotonic milliseconds */
static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* pc_ps_action_parse - ignore | enforce | drop */
bool pc_ps_action_parse(const char *v, enum pc_ps_action *out)
{
    for (size_t i = 0; v && i < sizeof(ps_action_names) / sizeof(ps_action_names[0]); i++)
        if (strcmp(v, ps_action_names[i]) == 0) {
            *out = (enum pc_ps_action)i;
            return true;
        }
    return false;
}

/* cache_slot - the first of the address's two slots (FNV-1a of its 16 bytes) */
static size_t cache_slot(const struct pc_ip *ip)
{
    uint64_t h = 14695981039346656037ull;

    for (size_t i = 0; i < sizeof(ip->b); i++)
        h = (h ^ ip->b[i]) * 1099511628211ull;
    return (size_t)(h ^ (h >> 29)) & ps_cache_mask & ~(size_t)1;
}

/* cache_ready - a table of the configured size (a new size starts empty) */
static bool cache_ready(const struct pc_ps_conf *c)
{
    size_t n = 2;

    if (c->cache_ttl_ms == 0 || c->cache_size == 0)
        return false;
    while (n < c->cache_size)
        n <<= 1;
    if (ps_cache && ps_cache_mask + 1 == n)
        return true;
    free(ps_cache);
    ps_cache = calloc(n, sizeof(*ps_cache));
    ps_cache_mask = ps_cache ? n - 1 : 0;
    return ps_cache != NULL;
}

/* cache_find - the live entry of ip, or NULL */
static struct ps_entry *cache_find(const struct pc_ip *ip, uint64_t now)
{
    struct ps_entry *e = &ps_cache[cache_slot(ip)];

    for (int i = 0; i < 2; i++)
        if (e[i].expires > now && memcmp(&e[i].ip, ip, sizeof(*ip)) == 0)
            return &e[i];
    return NULL;
}

/* cache_put - ip passed until 'until'; a free, expired or earlier-expiring slot takes it */
static void cache_put(const struct pc_ip *ip, uint64_t now, uint64_t until)
{
    struct ps_entry *e = cache_find(ip, now);

    if (e == NULL) {
        struct ps_entry *two = &ps_cache[cache_slot(ip)];
        e = two[0].expires <= now              ? &two[0]
            : two[1].expires <= now            ? &two[1]
            : two[0].expires <= two[1].expires ? &two[0]
                                               : &two[1];
    }
    e->ip = *ip;
    e->expires = until;
}

/* pc_ps_cache_clear - forget every client */
void pc_ps_cache_clear(void)
{
    if (ps_cache)
        memset(ps_cache, 0, (ps_cache_mask + 1) * sizeof(*ps_cache));
}

/* ignore_answer - a set or forget in the shared cache needs no answer */
static void ignore_answer(void *arg, const struct pc_rl_result *res)
{
    (void)arg, (void)res;
}

/* maybe_over - the pause and the lists are both over: greet */
static void maybe_over(struct pc_ps *p)
{
    if (!p->waiting || !p->pause_over || !p->dnsbl_done)
        return;
    p->waiting = false;
    p->over(p->arg);
}

/* on_pause - the pause ended: greet when the lists have answered too */
static void on_pause(evutil_socket_t fd, short what, void *arg)
{
    struct pc_ps *p = arg;

    (void)fd, (void)what;
    p->pause_over = true;
    maybe_over(p);
}

/* on_lists - every list answered or failed (a failure counts as not listed: fail open,
 * as postscreen does; the dnsbl filter is the place for on_error) */
static void on_lists(void *arg, struct pc_dnsbl_lookup *l)
{
    struct pc_ps *p = arg;

    p->dnsbl_done = true;
    pc_fact_add(p->s, "postscreen_dnsbl_score", "%d", l->total);
    maybe_over(p);
}

/* pause_start - withhold the greeting for greet_pause and ask the lists meanwhile */
static void pause_start(struct pc_ps *p)
{
    const struct pc_ps_conf *c = p->c;
    struct timeval tv = {c->greet_pause_ms / 1000, (c->greet_pause_ms % 1000) * 1000};

    p->timer = evtimer_new(p->base, on_pause, p);
    if (p->timer == NULL || evtimer_add(p->timer, &tv) < 0)
        pc_fatal("out of memory");
    p->dnsbl_done = pc_dnsbl_lookup_start(&p->dl, &c->dnsbl, p->dns, &p->s->client.ip, p->s->sid,
                                          p->s->client.addr, NULL, on_lists, p) == 0;
}

/* pass_old - a cached pass: the greeting needs no pause */
static void pass_old(struct pc_ps *p)
{
    pc_info("%s: postscreen: PASS OLD [%s]:%u", p->s->sid, p->s->client.addr, p->s->client.port);
    pc_fact_add(p->s, "postscreen", "pass_old");
    pc_metric_add(PC_M_PS_RESULTS, "pass_old", NULL, 1);
    p->cached = true;
}

/* store_key - the shared cache's key of the client's address */
static void store_key(const struct pc_ps *p, char *key)
{
    const char *v[1] = {p->s->client.addr};

    pc_rl_key("portcullis:ps:", "postscreen", v, 1, key);
}

/* on_store - the shared cache answered: a pass greets at once, anything else pauses */
static void on_store(void *arg, const struct pc_rl_result *res)
{
    struct pc_ps *p = arg;

    p->req = NULL;
    if (!res->error && res->nints == 1 && res->ints[0] == 1) {
        pass_old(p);
        p->waiting = false;
        p->over(p->arg);
        return;
    }
    if (res->error)
        pc_info("%s: postscreen: cache store: %s; checking [%s]", p->s->sid,
                res->why ? res->why : "error", p->s->client.addr);
    pause_start(p);
}

/* store_send - set or forget the client in the shared cache; nobody waits for the answer */
static void store_send(const struct pc_ps *p, const char *op, unsigned long long ms)
{
    char key[PC_RL_KEY_MAX], a[2][24];
    const char *keys[1] = {key}, *args[2] = {a[0], a[1]};
    struct pc_rl_result res;
    struct pc_rl_req *req;

    store_key(p, key);
    snprintf(a[0], sizeof(a[0]), "%s", op);
    snprintf(a[1], sizeof(a[1]), "%llu", ms);
    pc_rl_redis_eval(p->c->store, &p->c->script, keys, 1, args, 2, &res, ignore_answer, NULL, &req);
}

/* pc_ps_start - the pause and the lookups, unless the client skips them */
bool pc_ps_start(struct pc_ps *p, const struct pc_ps_conf *c, bool listener_on,
                 struct pc_session *s, struct event_base *base, struct pc_dns *dns,
                 void (*over)(void *), void *arg)
{
    memset(p, 0, sizeof(*p));
    if (!listener_on || c == NULL)
        return false;
    p->c = c;
    p->s = s;
    p->base = base;
    p->dns = dns;
    p->t0_ms = now_ms();
    if (c->skip_mynetworks && pc_cidr_list_match(&c->mynetworks, &s->client.ip)) {
        pc_fact_add(s, "postscreen", "skip");
        pc_metric_add(PC_M_PS_RESULTS, "skip", NULL, 1);
        return false;
    }
    p->on = true;
    if (c->store == NULL && cache_ready(c) && cache_find(&s->client.ip, p->t0_ms)) {
        pass_old(p);
        return false;
    }
    p->over = over;
    p->arg = arg;
    p->waiting = true;
    if (c->store && c->cache_ttl_ms) {
        char key[PC_RL_KEY_MAX], a[2][24] = {"get", "0"};
        const char *keys[1] = {key}, *args[2] = {a[0], a[1]};
        struct pc_rl_result res;
        store_key(p, key);
        if (pc_rl_redis_eval(c->store, &c->script, keys, 1, args, 2, &res, on_store, p, &p->req) ==
            PC_RL_PENDING)
            return true; /* early talk meanwhile is early talk too */
    }
    pause_start(p);
    return true;
}

/* pc_ps_dnsbl_listed - the lists' verdict */
bool pc_ps_dnsbl_listed(const struct pc_ps *p, const char **zone)
{
    if (p->dl.worst == NULL || p->dl.total < p->c->dnsbl_threshold)
        return false;
    *zone = p->dl.worst->zone;
    return true;
}

/* pc_ps_fail - log in postscreen's words, record the facts, forget a cached pass */
enum pc_ps_action pc_ps_fail(struct pc_ps *p, enum pc_ps_test t, const char *detail)
{
    struct pc_session *s = p->s;
    uint64_t ms = now_ms() - p->t0_ms;
    enum pc_ps_action a = p->c->action[t];

    p->failed[t] = true;
    pc_metric_add(PC_M_PS_FAILS, ps_fact_names[t], ps_action_names[a], 1);
    if (t == PC_PS_DNSBL)
        pc_info("%s: postscreen: DNSBL rank %d for [%s]:%u (%s; action=%s)", s->sid, p->dl.total,
                s->client.addr, s->client.port, detail, ps_action_names[a]);
    else
        pc_info("%s: postscreen: %s after %u.%02u from [%s]:%u: %s (action=%s)", s->sid,
                ps_log_names[t], (unsigned)(ms / 1000), (unsigned)(ms % 1000 / 10), s->client.addr,
                s->client.port, detail, ps_action_names[a]);
    if (t == PC_PS_PREGREET || t == PC_PS_DNSBL)
        pc_fact_add(s, "postscreen", "fail");
    pc_fact_add(s, "postscreen_fail", "%s", ps_fact_names[t]);
    if (p->c->store)
        store_send(p, "forget", 0);
    if (ps_cache) {
        struct ps_entry *e = cache_find(&s->client.ip, now_ms());
        if (e)
            e->expires = 0;
    }
    return a;
}

/* pc_ps_passed - the pause and the lists found nothing: greet this client at once next time */
void pc_ps_passed(struct pc_ps *p)
{
    struct pc_session *s = p->s;
    uint64_t now = now_ms();

    pc_info("%s: postscreen: PASS NEW [%s]:%u", s->sid, s->client.addr, s->client.port);
    pc_fact_add(s, "postscreen", "pass_new");
    pc_metric_add(PC_M_PS_RESULTS, "pass_new", NULL, 1);
    if (p->c->store && p->c->cache_ttl_ms)
        store_send(p, "set", p->c->cache_ttl_ms);
    else if (!p->c->store && cache_ready(p->c))
        cache_put(&s->client.ip, now, now + p->c->cache_ttl_ms);
}

/* pc_ps_refusal - postscreen's replies: 5.5.1 protocol errors, 5.7.1 for a listed client */
void pc_ps_refusal(const struct pc_ps *p, enum pc_ps_test t, int code, struct pc_verdict *v)
{
    static const char *const why[PC_PS_TESTS] = {"talked before the greeting", NULL,
                                                 "commands pipelined before PIPELINING was offered",
                                                 "non-SMTP command", "bare newline in a command"};
    const char *zone = "a DNS list";

    pc_verdict_clear(v);
    if (t == PC_PS_DNSBL) {
        pc_ps_dnsbl_listed(p, &zone);
        pc_verdict_set(v, PC_REJECT, code, "5.7.1",
                       "Service unavailable; client [%s] blocked using %s", p->s->client.addr,
                       zone);
    } else {
        pc_verdict_set(v, PC_REJECT, code, "5.5.1", "Protocol error: %s", why[t]);
    }
    v->filter = "postscreen";
}

/* pc_ps_hangup - the client left while we held the greeting */
void pc_ps_hangup(struct pc_ps *p)
{
    uint64_t ms = now_ms() - p->t0_ms;

    pc_info("%s: postscreen: HANGUP after %u.%02u from [%s]:%u in tests before SMTP handshake",
            p->s->sid, (unsigned)(ms / 1000), (unsigned)(ms % 1000 / 10), p->s->client.addr,
            p->s->client.port);
    pc_metric_add(PC_M_PS_RESULTS, "hangup", NULL, 1);
}

/* pc_ps_stop - no callback after this */
void pc_ps_stop(struct pc_ps *p)
{
    if (p->timer)
        event_free(p->timer);
    p->timer = NULL;
    pc_dnsbl_lookup_cancel(&p->dl);
    if (p->req)
        pc_rl_cancel(p->c->store, p->req);
    p->req = NULL;
    p->waiting = false;
}

/* pc_ps_store_create - the shared cache through the rate limit store factory */
int pc_ps_store_create(struct pc_ps_conf *c, const struct pc_rl_store_conf *sc, struct pc_err *err)
{
    c->store = pc_rl_store_create(sc, err);
    if (c->store == NULL)
        return -1;
    pc_rl_script_init(&c->script, ps_redis_script);
    return 0;
}

/* pc_ps_conf_free - the configuration's allocations */
void pc_ps_conf_free(struct pc_ps_conf *c)
{
    pc_rl_store_free(c->store);
    c->store = NULL;
    pc_cidr_list_free(&c->mynetworks);
}
