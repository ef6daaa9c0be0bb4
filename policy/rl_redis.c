/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	rl_redis 3 - the shared rate limit store: Redis on our event loop
 * DESCRIPTION
 *	One hiredis async connection per store (per configuration
 *	generation), driven by a small libevent adapter of our own. hiredis
 *	0.14 has no timeouts at all on an async context (neither connect nor
 *	command), and its reader buffers a reply of any size; we wrap it:
 *
 *	- Every check carries a deadline. Checks are answered in the order
 *	  they were sent (one connection, RESP is ordered), so when the oldest
 *	  one is overdue the connection is dead or frozen: we fail it, drop
 *	  the connection (every request behind it gets the error at once) and
 *	  reconnect with backoff. While there is no connection, checks fail at
 *	  once, so a Redis outage costs a session no time at all.
 *	- After every read the adapter looks at what the reader holds; more
 *	  than PC_RLR_REPLY_MAX bytes not yet parsed into a reply means the
 *	  peer is not our Redis answering our script, and we drop it.
 *	- hiredis resolves a host name with a blocking getaddrinfo() at each
 *	  connect: configure IP addresses.
 *
 *	Checks run the GCRA script with EVALSHA; the script is loaded at
 *	connect (SCRIPT LOAD) and, should Redis have lost it (restart, SCRIPT
 *	FLUSH), the NOSCRIPT error makes us send the same check once with
 *	EVAL. Redis' own clock (TIME) is used, so gateways with skewed clocks
 *	still agree.
 *
 *	With Sentinels, the master's address comes from SENTINEL
 *	get-master-addr-by-name; a connection to a master that fails, times
 *	out or turns out not to be a master (ROLE, READONLY) makes us ask the
 *	Sentinels again, and a subscription to +switch-master on one Sentinel
 *	moves us to the new master as soon as a failover is announced.
 * SEE ALSO
 *	https://redis.io/docs/reference/sentinel-clients/, policy/ratelimit.h
 */
#include <errno.h>
#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/err.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "policy/ratelimit.h"
#include "policy/rl_redis.h"
#include "policy/rl_reqq.h"

#define PC_RLR_BACKOFF_MIN 100
#define PC_RLR_BACKOFF_MAX 2000

/* KEYS[i] and ARGV[3i-2..3i] = interval (us), burst, cost. All or nothing. */
static const char rlr_script[] =
    "if redis.replicate_commands then pcall(redis.replicate_commands) end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local out, new, ok = {}, {}, true\n"
    "for i = 1, #KEYS do\n"
    "  local T = tonumber(ARGV[3*i-2])\n"
    "  local burst = tonumber(ARGV[3*i-1])\n"
    "  local cost = tonumber(ARGV[3*i])\n"
    "  local tat = tonumber(redis.call('GET', KEYS[i]) or 0) or 0\n"
    "  if tat < now then tat = now end\n"
    "  local nt = tat + cost * T\n"
    "  local allow_at = nt - burst * T\n"
    "  local rem\n"
    "  if allow_at > now then\n"
    "    ok = false\n"
    "    out[3*i-2] = 0\n"
    "    out[3*i-1] = math.ceil((allow_at - now) / 1000)\n"
    "    rem = math.floor((now + burst * T - tat) / T)\n"
    "  else\n"
    "    new[i] = nt\n"
    "    out[3*i-2] = 1\n"
    "    out[3*i-1] = 0\n"
    "    rem = math.floor((now + burst * T - nt) / T)\n"
    "  end\n"
    "  if rem < 0 then rem = 0 end\n"
    "  out[3*i] = rem\n"
    "end\n"
    "if ok then\n"
    "  for i = 1, #KEYS do\n"
    "    redis.call('SET', KEYS[i], string.format('%.3f', new[i]), 'PX',\n"
    "               math.ceil((new[i] - now) / 1000) + 1)\n"
    "  end\n"
    "end\n"
    "return out\n";

enum rlr_setup { RLR_AUTH = 1, RLR_SELECT, RLR_LOAD, RLR_ROLE, RLR_NAME };

struct rlr_store;

struct rlr_req {
    struct pc_rlq_req q; /* first: the queue's entry, arguments, caller (policy/rl_reqq.h) */
    struct rlr_store *st;
    struct timespec t0;                /* sent, for portcullis_redis_request_duration_seconds */
    const struct pc_rl_script *script; /* pc_rl_redis_eval, or NULL for the GCRA check */
};

struct rlr_store {
    struct pc_rl_store base;
    struct event_base *evb;
    /* configuration, copied */
    char host[256];
    int port, db;
    bool is_unix;
    char **sentinels;
    size_t nsentinels, sidx;
    char *master, *password;
    unsigned timeout_ms;
    /* the master connection */
    redisAsyncContext *ac;
    bool up, closing, was_down;
    char cur[300];   /* "host:port" in use, for logs */
    struct pc_rlq q; /* requests not answered yet */
    struct event *retry;
    unsigned backoff;
    char sha[41];
    const char *lost_why; /* why requests on a dropped connection fail */
    /* Sentinel: the query connection and the +switch-master subscription */
    redisAsyncContext *sq, *sub;
    struct event *sq_timer;
};

struct rlr_ev {
    redisAsyncContext *ac;
    void (*too_big)(redisAsyncContext *); /* the reader holds more than PC_RLR_REPLY_MAX */
    struct event *rev, *wev;
    bool in_read, dead;
};

static void rlr_connect(struct rlr_store *);
static void rlr_resolve(struct rlr_store *);
static void drop(struct rlr_store *, const char *why);

/* req_of - the request a queue entry belongs to (the entry is its first member) */
static struct rlr_req *req_of(struct pc_rlq_req *q)
{
    return (struct rlr_req *)q;
}

/* ev_read - hiredis reads; then bound what its reader holds */
static void ev_read(evutil_socket_t fd, short what, void *arg)
{
    struct rlr_ev *e = arg;
    redisAsyncContext *ac = e->ac;

    (void)fd, (void)what;
    e->in_read = true;
    redisAsyncHandleRead(ac);
    e->in_read = false;
    if (e->dead) { /* hiredis freed the context meanwhile */
        free(e);
        return;
    }
    redisReader *r = ac->c.reader;
    if (r && r->len - r->pos > PC_RLR_REPLY_MAX)
        e->too_big(ac);
}

/* too_big - a reply beyond any of ours: not our Redis answering our script */
static void too_big(redisAsyncContext *ac)
{
    struct rlr_store *st = ac->data;

    pc_warn("ratelimit: redis %s: reply larger than %d bytes, dropping the connection", st->cur,
            PC_RLR_REPLY_MAX);
    if (ac == st->ac) {
        drop(st, "reply too large");
        return;
    } else if (ac == st->sq) {
        st->sq = NULL;
    } else if (ac == st->sub) {
        st->sub = NULL;
    }
    redisAsyncFree(ac);
}

/* ev_write - hiredis writes */
static void ev_write(evutil_socket_t fd, short what, void *arg)
{
    struct rlr_ev *e = arg;

    (void)fd, (void)what;
    redisAsyncHandleWrite(e->ac);
}

/* ev_add_read - hiredis wants to read */
static void ev_add_read(void *p)
{
    event_add(((struct rlr_ev *)p)->rev, NULL);
}

/* ev_del_read - hiredis stops reading */
static void ev_del_read(void *p)
{
    event_del(((struct rlr_ev *)p)->rev);
}

/* ev_add_write - hiredis has output */
static void ev_add_write(void *p)
{
    event_add(((struct rlr_ev *)p)->wev, NULL);
}

/* ev_del_write - hiredis' output is flushed */
static void ev_del_write(void *p)
{
    event_del(((struct rlr_ev *)p)->wev);
}

/* ev_cleanup - the context is going away; inside our read handler, free later */
static void ev_cleanup(void *p)
{
    struct rlr_ev *e = p;

    event_free(e->rev);
    event_free(e->wev);
    if (e->in_read)
        e->dead = true;
    else
        free(e);
}

/* pc_rlr_attach - put an async context on our loop */
int pc_rlr_attach(struct event_base *evb, redisAsyncContext *ac, void (*big)(redisAsyncContext *),
                  void *data)
{
    struct rlr_ev *e = calloc(1, sizeof(*e));

    if (e == NULL)
        return -1;
    e->ac = ac;
    e->too_big = big;
    e->rev = event_new(evb, ac->c.fd, EV_READ, ev_read, e);
    e->wev = event_new(evb, ac->c.fd, EV_WRITE, ev_write, e);
    if (e->rev == NULL || e->wev == NULL) {
        if (e->rev)
            event_free(e->rev);
        if (e->wev)
            event_free(e->wev);
        free(e);
        return -1;
    }
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    ac->ev.data = e;
    ac->data = data;
    event_add(e->rev, NULL);
    event_add(e->wev, NULL);
    return 0;
}

/* ev_attach - our store's connections */
static int ev_attach(struct rlr_store *st, redisAsyncContext *ac)
{
    return pc_rlr_attach(st->evb, ac, too_big, st);
}

/* arm - the request timer follows the earliest deadline */
static void arm(struct rlr_store *st)
{
    pc_rlq_arm(&st->q, UINT64_MAX);
}

/* answer - give the caller its result, once */
static void answer(struct rlr_req *r, struct pc_rl_result *res)
{
    struct rlr_store *st = r->st;

    if (!pc_rlq_settle(&st->q, &r->q, res))
        return;
    pc_metric_observe(PC_M_REDIS_SECONDS, res->error ? "error" : "ok", pc_seconds_since(&r->t0));
    if (!res->error)
        pc_metric_set(PC_M_REDIS_UP, st->cur[0] ? st->cur : "(unresolved)", NULL, 1);
    arm(st);
    r->q.cb(r->q.arg, res);
}

/* fail - answer with an error */
static void fail(struct rlr_req *r, const char *why)
{
    struct pc_rl_result res;

    pc_rlq_error(&res, why);
    answer(r, &res);
}

/* down - log the first failure of a run of them */
static void down(struct rlr_store *st, const char *why)
{
    if (!st->was_down && !st->closing)
        pc_warn("ratelimit: redis %s unavailable: %s; limits follow on_error until it is back",
                st->cur[0] ? st->cur : "(unresolved)", why);
    if (!st->closing)
        pc_metric_set(PC_M_REDIS_UP, st->cur[0] ? st->cur : "(unresolved)", NULL, 0);
    st->was_down = true;
}

/* drop - close the master connection and reconnect after the backoff */
static void drop(struct rlr_store *st, const char *why)
{
    redisAsyncContext *ac = st->ac;

    down(st, why);
    st->lost_why = why;
    st->ac = NULL;
    st->up = false;
    if (!st->closing && !evtimer_pending(st->retry, NULL)) {
        struct timeval tv = {st->backoff / 1000, (st->backoff % 1000) * 1000};
        evtimer_add(st->retry, &tv);
        st->backoff = st->backoff * 2 > PC_RLR_BACKOFF_MAX ? PC_RLR_BACKOFF_MAX : st->backoff * 2;
    }
    /* Every request sent on it gets its callback with a NULL reply (at once, or when hiredis
     * leaves the callback we are in). */
    if (ac)
        redisAsyncFree(ac);
    st->lost_why = NULL;
    if (st->sq == NULL)
        for (struct rlr_req *r = req_of(st->q.head), *next; r; r = next) {
            next = req_of(r->q.next);
            if (r->q.ac == NULL) { /* parked for a master we will not know soon */
                fail(r, why);
                free(r);
            }
        }
}

/* on_timer - the oldest request is overdue: the connection is dead or frozen */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rlr_store *st = arg;
    uint64_t now = pc_rlq_now_ms();
    bool drop_it = false;

    (void)fd, (void)what;
    for (struct rlr_req *r = req_of(st->q.head); r; r = req_of(r->q.next))
        if (r->q.deadline <= now && r->q.ac == st->ac && st->ac)
            drop_it = true;
    if (drop_it) {
        st->base.stats.timeouts++;
        drop(st, "request timed out");
    }
    /* Requests on an older connection that hiredis has not let go of yet. */
    for (struct rlr_req *r = req_of(st->q.head), *next; r; r = next) {
        next = req_of(r->q.next);
        if (r->q.deadline > now)
            continue;
        fail(r, "redis request timed out");
        if (r->q.ac == NULL) /* parked, never given to hiredis: ours to free */
            free(r);
    }
    arm(st);
}

/* on_retry - reconnect (or ask the Sentinels again) */
static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct rlr_store *st = arg;

    (void)fd, (void)what;
    if (st->closing || st->ac)
        return;
    st->base.stats.reconnects++;
    if (st->nsentinels)
        rlr_resolve(st);
    else
        rlr_connect(st);
}

/* on_connect - TCP (or Unix) connection result */
static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rlr_store *st = ac->data;

    if (status == REDIS_OK || ac != st->ac)
        return;
    /* hiredis frees the context after this callback. */
    st->ac = NULL;
    drop(st, ac->errstr[0] ? ac->errstr : "connect failed");
}

/* on_disconnect - the connection went away under us */
static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rlr_store *st = ac->data;

    (void)status;
    if (ac != st->ac)
        return;
    st->ac = NULL;
    drop(st, ac->errstr[0] ? ac->errstr : "connection closed");
}

/* mark_up - an answer came on the current connection: it works */
static void mark_up(struct rlr_store *st, redisAsyncContext *ac)
{
    if (ac != st->ac)
        return;
    st->backoff = PC_RLR_BACKOFF_MIN;
    if (st->was_down && !st->up)
        pc_info("ratelimit: redis %s is back", st->cur);
    st->was_down = false;
    st->up = true;
}

/* pc_rlr_ints - a pc_rl_redis_eval answer: an array of at most PC_RL_INTS_MAX integers into
 * res->ints; false when malformed */
bool pc_rlr_ints(const redisReply *reply, struct pc_rl_result *res)
{
    memset(res, 0, sizeof(*res));
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements > PC_RL_INTS_MAX)
        return false;
    for (size_t i = 0; i < reply->elements; i++) {
        if (reply->element[i]->type != REDIS_REPLY_INTEGER)
            return false;
        res->ints[i] = reply->element[i]->integer;
    }
    res->nints = reply->elements;
    res->allowed = true;
    return true;
}

/* eval_reply - a pc_rl_redis_eval answer: an array of integers */
static void eval_reply(redisAsyncContext *ac, struct rlr_req *r, redisReply *reply)
{
    struct pc_rl_result res;

    if (!pc_rlr_ints(reply, &res)) {
        fail(r, "unexpected reply from redis");
        free(r);
        return;
    }
    mark_up(r->st, ac);
    answer(r, &res);
    free(r);
}

/* pc_rlr_result - the script's array (allowed, retry ms, remaining per item); false if malformed */
bool pc_rlr_result(const redisReply *reply, size_t n, struct pc_rl_result *res)
{
    memset(res, 0, sizeof(*res));
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 * n)
        return false;
    res->allowed = true;
    for (size_t i = 0; i < n; i++) {
        redisReply **e = reply->element + 3 * i;
        if (e[0]->type != REDIS_REPLY_INTEGER || e[1]->type != REDIS_REPLY_INTEGER ||
            e[2]->type != REDIS_REPLY_INTEGER || e[1]->integer < 0)
            return false;
        res->a[i].allowed = e[0]->integer == 1;
        res->a[i].retry_after_ms = (uint64_t)e[1]->integer;
        res->a[i].remaining = (double)e[2]->integer;
        if (!res->a[i].allowed)
            res->allowed = false;
    }
    return true;
}

/* reply_cb - a check's answer */
static void reply_cb(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct rlr_req *r = priv;
    struct rlr_store *st = r->st;
    redisReply *reply = reply_;
    struct pc_rl_result res;

    if (reply == NULL) { /* the connection is going away */
        fail(r, st->lost_why ? st->lost_why : "redis connection lost");
        free(r);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        if (strncmp(reply->str, "NOSCRIPT", 8) == 0 && !r->q.retried && ac == st->ac &&
            !r->q.cancelled && !r->q.answered) {
            /* Redis lost the script: send the text once; it is cached again from now on. */
            st->base.stats.noscript++;
            pc_rlq_req_eval(&r->q, r->script ? r->script->text : rlr_script);
            if (redisAsyncCommandArgv(ac, reply_cb, r, r->q.argc, r->q.argv, r->q.argl) ==
                REDIS_OK) {
                pc_rlq_unqueue(&st->q, &r->q);
                pc_rlq_enqueue(&st->q, &r->q);
                return;
            }
        }
        pc_warn("ratelimit: redis %s: %.200s", st->cur, reply->str);
        fail(r, "redis error reply");
        free(r);
        /* A demoted master, a replica, or a master without its replicas: find the master. */
        if (ac == st->ac &&
            (strncmp(reply->str, "READONLY", 8) == 0 || strncmp(reply->str, "LOADING", 7) == 0 ||
             strncmp(reply->str, "MASTERDOWN", 10) == 0 || strncmp(reply->str, "NOAUTH", 6) == 0))
            drop(st, reply->str);
        return;
    }
    if (r->script) { /* pc_rl_redis_eval: an array of integers */
        eval_reply(ac, r, reply);
        return;
    }
    if (!pc_rlr_result(reply, r->q.n, &res)) {
        fail(r, "unexpected reply from redis");
        free(r);
        return;
    }
    if (ac == st->ac) {
        st->backoff = PC_RLR_BACKOFF_MIN;
        if (st->was_down && !st->up)
            pc_info("ratelimit: redis %s is back", st->cur);
        st->was_down = false;
        st->up = true;
    }
    answer(r, &res);
    free(r);
}

/* setup_cb - answers to AUTH, SELECT, SCRIPT LOAD and ROLE at connect */
static void setup_cb(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct rlr_store *st = ac->data;
    redisReply *reply = reply_;
    enum rlr_setup what = (enum rlr_setup)(intptr_t)priv;

    if (reply == NULL || ac != st->ac)
        return;
    if (reply->type == REDIS_REPLY_ERROR && what == RLR_NAME)
        return; /* only a label for CLIENT LIST */
    if (reply->type == REDIS_REPLY_ERROR) {
        pc_warn("ratelimit: redis %s: %s: %.200s", st->cur,
                what == RLR_AUTH     ? "AUTH"
                : what == RLR_SELECT ? "SELECT"
                : what == RLR_LOAD   ? "SCRIPT LOAD"
                                     : "ROLE",
                reply->str);
        if (what != RLR_LOAD) /* without the script, EVAL still works */
            drop(st, "connection setup failed");
        return;
    }
    if (what == RLR_LOAD && (reply->type != REDIS_REPLY_STRING || strcmp(reply->str, st->sha)))
        pc_warn("ratelimit: redis %s: SCRIPT LOAD returned an unexpected digest", st->cur);
    if (what == RLR_ROLE && (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1 ||
                             reply->element[0]->type != REDIS_REPLY_STRING ||
                             strcmp(reply->element[0]->str, "master") != 0)) {
        /* A Sentinel's answer can be stale for a moment around a failover. */
        drop(st, "not a master");
    }
}

/* rlr_connect - open the master connection; commands queue until it is up */
static void rlr_connect(struct rlr_store *st)
{
    redisAsyncContext *ac;

    if (st->ac) { /* a Sentinel answer and a +switch-master can both lead here */
        redisAsyncContext *old = st->ac;
        st->ac = NULL;
        redisAsyncFree(old);
    }
    if (st->is_unix) {
        ac = redisAsyncConnectUnix(st->host);
        snprintf(st->cur, sizeof(st->cur), "unix:%s", st->host);
    } else {
        ac = redisAsyncConnect(st->host, st->port);
        snprintf(st->cur, sizeof(st->cur), "%s:%d", st->host, st->port);
    }
    if (ac == NULL || ac->err) {
        down(st, ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        drop(st, "connect failed");
        return;
    }
    if (ev_attach(st, ac) < 0) {
        redisAsyncFree(ac);
        drop(st, "out of memory");
        return;
    }
    st->ac = ac;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (st->password)
        redisAsyncCommand(ac, setup_cb, (void *)(intptr_t)RLR_AUTH, "AUTH %s", st->password);
    if (st->db)
        redisAsyncCommand(ac, setup_cb, (void *)(intptr_t)RLR_SELECT, "SELECT %d", st->db);
    if (st->nsentinels)
        redisAsyncCommand(ac, setup_cb, (void *)(intptr_t)RLR_ROLE, "ROLE");
    /* Operators see our connections as name=portcullis-ratelimit in CLIENT LIST. */
    redisAsyncCommand(ac, setup_cb, (void *)(intptr_t)RLR_NAME, "CLIENT SETNAME %s",
                      "portcullis-ratelimit");
    redisAsyncCommand(ac, setup_cb, (void *)(intptr_t)RLR_LOAD, "SCRIPT LOAD %s", rlr_script);
    /* Checks parked while the Sentinels were asked go out now, in their order. */
    for (struct rlr_req *r = req_of(st->q.head), *next; r; r = next) {
        next = req_of(r->q.next);
        if (r->q.ac)
            continue;
        r->q.ac = ac;
        if (redisAsyncCommandArgv(ac, reply_cb, r, r->q.argc, r->q.argv, r->q.argl) != REDIS_OK) {
            fail(r, "redis unavailable");
            free(r);
        }
    }
}

/* sentinel_next - this Sentinel did not help: try the next one */
static void sentinel_next(struct rlr_store *st, const char *why)
{
    redisAsyncContext *sq = st->sq;

    pc_warn("ratelimit: sentinel %s: %s", st->sentinels[st->sidx % st->nsentinels], why);
    st->sq = NULL;
    evtimer_del(st->sq_timer);
    st->sidx++;
    if (sq)
        redisAsyncFree(sq);
    if (st->sidx % st->nsentinels == 0) {
        /* Went round all of them: back off like a failed connect. */
        drop(st, "no sentinel knows the master");
        return;
    }
    rlr_resolve(st);
}

/* sentinel_cb - SENTINEL get-master-addr-by-name answer */
static void sentinel_cb(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct rlr_store *st = ac->data;
    redisReply *reply = reply_;

    (void)priv;
    if (ac != st->sq)
        return;
    if (reply == NULL || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING ||
        reply->element[0]->len >= sizeof(st->host)) {
        sentinel_next(st,
                      reply && reply->type == REDIS_REPLY_NIL ? "master unknown" : "bad answer");
        return;
    }
    snprintf(st->host, sizeof(st->host), "%s", reply->element[0]->str);
    st->port = atoi(reply->element[1]->str);
    st->is_unix = false;
    st->sq = NULL;
    evtimer_del(st->sq_timer);
    redisAsyncFree(ac); /* deferred by hiredis until this callback returns */
    rlr_connect(st);
}

/* sq_timeout - a Sentinel did not answer in time */
static void sq_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    sentinel_next(arg, "timed out");
}

/* sq_conn - result of connecting to a Sentinel for a query */
static void sq_conn(const redisAsyncContext *ac, int status)
{
    struct rlr_store *st = ac->data;

    if (status == REDIS_OK || ac != st->sq)
        return;
    st->sq = NULL; /* hiredis frees it */
    sentinel_next(st, "connect failed");
}

/* sub_cb - +switch-master "name oldip oldport newip newport" */
static void sub_cb(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct rlr_store *st = ac->data;
    redisReply *reply = reply_;
    char name[256], ip[256];
    int port;

    (void)priv;
    if (reply == NULL || ac != st->sub || reply->type != REDIS_REPLY_ARRAY ||
        reply->elements != 3 || reply->element[2]->type != REDIS_REPLY_STRING ||
        reply->element[2]->len > 600)
        return;
    if (sscanf(reply->element[2]->str, "%255s %*s %*s %255s %d", name, ip, &port) != 3 ||
        strcmp(name, st->master) != 0)
        return;
    pc_info("ratelimit: sentinel: +switch-master %s to %s:%d", name, ip, port);
    if (st->ac && strcmp(ip, st->host) == 0 && port == st->port)
        return;
    snprintf(st->host, sizeof(st->host), "%s", ip);
    st->port = port;
    if (st->ac) {
        redisAsyncContext *old = st->ac;
        st->ac = NULL;
        st->up = false;
        redisAsyncFree(old);
    }
    evtimer_del(st->retry);
    rlr_connect(st);
}

/* sub_gone - the subscription connection closed: open it again at the next resolve */
static void sub_gone(const redisAsyncContext *ac, int status)
{
    struct rlr_store *st = ac->data;

    (void)status;
    if (ac == st->sub)
        st->sub = NULL;
}

/* sub_conn - subscription connect result */
static void sub_conn(const redisAsyncContext *ac, int status)
{
    struct rlr_store *st = ac->data;

    if (status != REDIS_OK && ac == st->sub)
        st->sub = NULL;
}

/* sentinel_open - an async connection to sentinels[i] */
static redisAsyncContext *sentinel_open(struct rlr_store *st, size_t i)
{
    char host[256], port[16];

    if (!pc_parse_hostport(st->sentinels[i], host, sizeof(host), port, sizeof(port)) || !port[0])
        return NULL;
    redisAsyncContext *ac = redisAsyncConnect(host, atoi(port));
    if (ac == NULL || ac->err || ev_attach(st, ac) < 0) {
        if (ac)
            redisAsyncFree(ac);
        return NULL;
    }
    return ac;
}

/* rlr_resolve - ask a Sentinel where the master is */
static void rlr_resolve(struct rlr_store *st)
{
    size_t i = st->sidx % st->nsentinels;

    if (st->sq) /* already asking */
        return;
    if (st->sub == NULL && (st->sub = sentinel_open(st, i)) != NULL) {
        redisAsyncSetConnectCallback(st->sub, sub_conn);
        redisAsyncSetDisconnectCallback(st->sub, sub_gone);
        redisAsyncCommand(st->sub, sub_cb, NULL, "SUBSCRIBE +switch-master");
    }
    st->sq = sentinel_open(st, i);
    if (st->sq == NULL) {
        sentinel_next(st, "cannot connect");
        return;
    }
    redisAsyncSetConnectCallback(st->sq, sq_conn);
    redisAsyncCommand(st->sq, sentinel_cb, NULL, "SENTINEL get-master-addr-by-name %s", st->master);
    struct timeval tv = {st->timeout_ms / 1000, (st->timeout_ms % 1000) * 1000};
    evtimer_add(st->sq_timer, &tv);
}

/* req_new - a request on the store's current connection, due within its timeout; EVALSHA of
 * sha with nkeys keys (the caller adds the keys and the arguments) */
static struct rlr_req *req_new(struct rlr_store *st, const char *sha, pc_rl_cb *cb, void *arg,
                               size_t nkeys)
{
    struct rlr_req *r = calloc(1, sizeof(*r));

    if (r == NULL)
        return NULL;
    r->st = st;
    r->q.ac = st->ac;
    pc_rlq_req_init(&r->q, sha, nkeys, cb, arg, st->timeout_ms);
    return r;
}

/* rlr_check - one EVALSHA for all the items */
static enum pc_rl_status rlr_check(struct pc_rl_store *base, const struct pc_rl_item *v, size_t n,
                                   struct pc_rl_result *res, pc_rl_cb *cb, void *arg,
                                   struct pc_rl_req **out)
{
    struct rlr_store *st = (struct rlr_store *)base;
    struct rlr_req *r;

    *out = NULL;
    memset(res, 0, sizeof(*res));
    base->stats.checks++;
    if (n == 0 || n > PC_RL_BATCH_MAX) {
        res->error = true;
        res->why = "bad number of limits";
        base->stats.errors++;
        return PC_RL_DONE;
    }
    /* No connection: fail at once, unless the Sentinels are being asked right now (at
     * start and after a failover), which normally takes a round trip: then park the check
     * until the master is known; its deadline still holds. */
    if (st->ac == NULL && st->sq == NULL) {
        res->error = true;
        res->why = "redis unavailable";
        base->stats.errors++;
        pc_metric_observe(PC_M_REDIS_SECONDS, "unavailable", 0);
        return PC_RL_DONE;
    }
    if ((r = req_new(st, st->sha, cb, arg, n)) == NULL) {
        res->error = true;
        res->why = "out of memory";
        base->stats.errors++;
        return PC_RL_DONE;
    }
    clock_gettime(CLOCK_MONOTONIC, &r->t0);
    pc_rlq_req_gcra(&r->q, v, n);
    if (st->ac &&
        redisAsyncCommandArgv(st->ac, reply_cb, r, r->q.argc, r->q.argv, r->q.argl) != REDIS_OK) {
        free(r);
        res->error = true;
        res->why = "redis unavailable";
        base->stats.errors++;
        return PC_RL_DONE;
    }
    pc_rlq_enqueue(&st->q, &r->q);
    arm(st);
    *out = (struct pc_rl_req *)r;
    return PC_RL_PENDING;
}

/* rlr_cancel - the session no longer wants the answer; hiredis still owns the request */
static void rlr_cancel(struct pc_rl_req *req)
{
    struct rlr_req *r = (struct rlr_req *)req;

    if (pc_rlq_cancel(&r->st->q, &r->q, UINT64_MAX))
        free(r);
}

/* rlr_start - events and the first connection */
static int rlr_start(struct pc_rl_store *base, struct event_base *evb)
{
    struct rlr_store *st = (struct rlr_store *)base;

    st->evb = evb;
    st->q.timer = evtimer_new(evb, on_timer, st);
    st->retry = evtimer_new(evb, on_retry, st);
    st->sq_timer = evtimer_new(evb, sq_timeout, st);
    if (!st->q.timer || !st->retry || !st->sq_timer)
        return -1;
    if (st->nsentinels)
        rlr_resolve(st);
    else
        rlr_connect(st);
    return 0;
}

/* rlr_destroy - close everything; requests still held by hiredis are freed by it */
static void rlr_destroy(struct pc_rl_store *base)
{
    struct rlr_store *st = (struct rlr_store *)base;
    redisAsyncContext *v[3] = {st->ac, st->sq, st->sub};

    st->closing = true;
    for (struct rlr_req *r = req_of(st->q.head), *next; r; r = next) {
        next = req_of(r->q.next);
        r->q.cancelled = true;
        if (r->q.ac == NULL) {
            pc_rlq_unqueue(&st->q, &r->q);
            free(r);
        }
    }
    st->ac = st->sq = st->sub = NULL;
    for (int i = 0; i < 3; i++)
        if (v[i])
            redisAsyncFree(v[i]);
    if (st->q.timer)
        event_free(st->q.timer);
    if (st->retry)
        event_free(st->retry);
    if (st->sq_timer)
        event_free(st->sq_timer);
    if (base->stats.checks)
        pc_info("ratelimit: redis store: checks=%llu refused=%llu errors=%llu timeouts=%llu "
                "reconnects=%llu noscript=%llu",
                (unsigned long long)base->stats.checks, (unsigned long long)base->stats.refused,
                (unsigned long long)base->stats.errors, (unsigned long long)base->stats.timeouts,
                (unsigned long long)base->stats.reconnects,
                (unsigned long long)base->stats.noscript);
    for (size_t i = 0; i < st->nsentinels; i++)
        free(st->sentinels[i]);
    free(st->sentinels);
    free(st->master);
    free(st->password);
    free(st);
}

/* pc_rl_redis_eval - another filter's script on a Redis store of any kind */
enum pc_rl_status pc_rl_redis_eval(struct pc_rl_store *base, const struct pc_rl_script *script,
                                   const char *const *keys, size_t nkeys, const char *const *args,
                                   size_t nargs, struct pc_rl_result *res, pc_rl_cb *cb, void *arg,
                                   struct pc_rl_req **out)
{
    *out = NULL;
    if (base && base->ops->eval && nkeys > 0 && nkeys <= PC_RL_BATCH_MAX &&
        nargs <= 3 * PC_RL_BATCH_MAX)
        return base->ops->eval(base, script, keys, nkeys, args, nargs, res, cb, arg, out);
    memset(res, 0, sizeof(*res));
    res->error = true;
    res->why = "bad script call";
    return PC_RL_DONE;
}

/* rlr_eval - another filter's script on this store's connection */
static enum pc_rl_status rlr_eval(struct pc_rl_store *base, const struct pc_rl_script *script,
                                  const char *const *keys, size_t nkeys, const char *const *args,
                                  size_t nargs, struct pc_rl_result *res, pc_rl_cb *cb, void *arg,
                                  struct pc_rl_req **out)
{
    struct rlr_store *st = (struct rlr_store *)base;
    struct rlr_req *r;

    *out = NULL;
    memset(res, 0, sizeof(*res));
    res->error = true;
    base->stats.checks++;
    if (st->ac == NULL && st->sq == NULL) { /* as rlr_check: fail at once while Redis is away */
        res->why = "redis unavailable";
        base->stats.errors++;
        return PC_RL_DONE;
    }
    if ((r = req_new(st, script->sha, cb, arg, nkeys)) == NULL) {
        res->why = "out of memory";
        base->stats.errors++;
        return PC_RL_DONE;
    }
    r->script = script;
    pc_rlq_req_eval_args(&r->q, keys, nkeys, args, nargs);
    if (st->ac &&
        redisAsyncCommandArgv(st->ac, reply_cb, r, r->q.argc, r->q.argv, r->q.argl) != REDIS_OK) {
        free(r);
        res->why = "redis unavailable";
        base->stats.errors++;
        return PC_RL_DONE;
    }
    res->error = false;
    pc_rlq_enqueue(&st->q, &r->q);
    arm(st);
    *out = (struct pc_rl_req *)r;
    return PC_RL_PENDING;
}

/* pc_rl_script_init - the digest EVALSHA names the script by */
void pc_rl_script_init(struct pc_rl_script *s, const char *text)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;

    s->text = text;
    s->sha[0] = 0;
    EVP_Digest(text, strlen(text), md, &mdlen, EVP_sha1(), NULL);
    for (unsigned i = 0; i < mdlen && i < 20; i++)
        snprintf(s->sha + 2 * i, 3, "%02x", md[i]);
}

static const struct pc_rl_store_ops rlr_ops = {
    .kind = "redis",
    .start = rlr_start,
    .check = rlr_check,
    .cancel = rlr_cancel,
    .destroy = rlr_destroy,
    .eval = rlr_eval,
};

/* pc_rl_redis_script - the Lua text */
const char *pc_rl_redis_script(void)
{
    return rlr_script;
}

/* pc_rlr_sha - the script's digest, the name EVALSHA runs it by */
void pc_rlr_sha(char out[41])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;

    EVP_Digest(rlr_script, sizeof(rlr_script) - 1, md, &mdlen, EVP_sha1(), NULL);
    out[0] = 0;
    for (unsigned i = 0; i < mdlen && i < 20; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* pc_rl_redis_create - parse the address, compute the script digest */
struct pc_rl_store *pc_rl_redis_create(const struct pc_rl_store_conf *c, struct pc_err *err)
{
    struct rlr_store *st = calloc(1, sizeof(*st));

    if (st == NULL)
        return NULL;
    st->base.ops = &rlr_ops;
    st->q.stats = &st->base.stats;
    st->timeout_ms = c->timeout_ms ? c->timeout_ms : 1000;
    st->backoff = PC_RLR_BACKOFF_MIN;
    if (c->nsentinels) {
        if (c->master == NULL || !c->master[0]) {
            pc_err_set(err, NULL, "ratelimit: sentinels need sentinel_master");
            goto fail;
        }
        st->sentinels = calloc(c->nsentinels, sizeof(char *));
        st->master = strdup(c->master);
        for (size_t i = 0; i < c->nsentinels; i++) {
            char h[256], p[16];
            if (!pc_parse_hostport(c->sentinels[i], h, sizeof(h), p, sizeof(p)) || !p[0] ||
                strncmp(c->sentinels[i], "unix:", 5) == 0) {
                pc_err_set(err, NULL, "ratelimit: bad sentinel address \"%s\" (host:port)",
                           c->sentinels[i]);
                goto fail;
            }
            st->sentinels[i] = strdup(c->sentinels[i]);
            st->nsentinels++;
        }
        if (c->url && c->url[0]) {
            char h[256];
            int port;
            bool u;
            if (!pc_rl_redis_url_parse(c->url, h, sizeof(h), &port, &st->db, &u)) {
                pc_err_set(err, NULL, "ratelimit: bad store \"%s\"", c->url);
                goto fail;
            }
        }
    } else if (!pc_rl_redis_url_parse(c->url, st->host, sizeof(st->host), &st->port, &st->db,
                                      &st->is_unix)) {
        pc_err_set(err, NULL, "ratelimit: bad store \"%s\" (redis://host:port/db or unix:/path)",
                   c->url);
        goto fail;
    }
    if (c->password && c->password[0])
        st->password = strdup(c->password);
    pc_rlr_sha(st->sha);
    return &st->base;
fail:
    rlr_destroy(&st->base);
    return NULL;
}
