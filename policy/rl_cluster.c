/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	rl_cluster 3 - the shared rate limit store on Redis Cluster
 * DESCRIPTION
 *	store = "redis-cluster://host:port,host:port,..." names a few nodes of
 *	the cluster (any of them, masters or replicas); we learn which master
 *	serves which of the 16384 hash slots from CLUSTER SLOTS and keep one
 *	hiredis async connection per master, all on our event loop (the
 *	adapter of rl_redis.c, with its bound on what a reader may buffer).
 *
 *	A check is one EVALSHA of the GCRA script, atomic only when all its
 *	keys live in one slot: the ratelimit filter puts the same hash tag
 *	("{...}", Redis Cluster specification, "Hash tags") in every key of
 *	one check, and we refuse a check whose keys hash to different slots
 *	rather than send it.
 *
 *	Redirections are handled here, on the loop: MOVED updates the slot's
 *	owner, resends the check there and asks for the whole map again (a
 *	failover or a resharding moved more than one slot); ASK resends the
 *	check once, preceded by ASKING, without touching the map. At most
 *	RLC_REDIRECTS redirections per check.
 *
 *	hiredis 0.14 has no timeouts: as in rl_redis.c every check carries a
 *	deadline (the queue both share, rl_reqq.c), and an overdue check means its node is dead or
 *frozen: that node's connection is dropped (every check on it fails at once, each limit follows its
 *on_error) and the node is not tried again for a backoff that doubles up to 2 s. While a slot's
 *master is down we ask the cluster for its map every RLC_REFRESH_MS, so checks move to the promoted
 *replica as soon as the cluster has failed over.
 *
 *	Checks for a slot nobody is known to serve yet (at start) are parked
 *	until the first map arrives or their deadline passes.
 * SEE ALSO
 *	https://redis.io/docs/reference/cluster-spec/ (key distribution, hash
 *	tags, redirection, CLUSTER SLOTS), policy/rl_redis.c
 */
#include <event2/event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "lib/log.h"
#include "lib/parse.h"
#include "policy/ratelimit.h"
#include "policy/rl_redis.h"
#include "policy/rl_reqq.h"

#define RLC_SLOTS       16384
#define RLC_REDIRECTS   5
#define RLC_NODES_MAX   64
#define RLC_REFRESH_MS  250
#define RLC_BACKOFF_MIN 100
#define RLC_BACKOFF_MAX 2000

struct rlc_store;

struct rlc_node {
    struct rlc_node *next;
    struct rlc_store *st;
    char host[64];
    int port;
    char name[80]; /* host:port, for logs */
    redisAsyncContext *ac;
    uint64_t down_until; /* monotonic ms; 0 when not known down */
    unsigned backoff;
    bool logged_down;
};

struct rlc_req {
    struct pc_rlq_req q; /* first: the queue's entry, arguments, caller (policy/rl_reqq.h) */
    struct rlc_store *st;
    struct rlc_node *ask;              /* ASK redirection target, for the next send only */
    const struct pc_rl_script *script; /* pc_rl_redis_eval, or NULL for the GCRA check */
    unsigned slot, redirects;
};

struct rlc_store {
    struct pc_rl_store base;
    struct event_base *evb;
    struct rlc_node *nodes; /* seeds first, then every node a map or a redirection named */
    size_t nnodes;
    struct rlc_node *slots[RLC_SLOTS];
    char *password;
    unsigned timeout_ms;
    char sha[41];
    struct pc_rlq q; /* checks not answered yet */
    struct event *refresh_ev;
    redisAsyncContext *rq; /* where a CLUSTER SLOTS is pending */
    uint64_t rq_deadline;
    size_t rq_next; /* next node to ask, round robin */
    const char *lost_why;
    bool closing;
};

static void refresh(struct rlc_store *);

/* req_of - the check a queue entry belongs to (the entry is its first member) */
static struct rlc_req *req_of(struct pc_rlq_req *q)
{
    return (struct rlc_req *)q;
}

/* pc_rl_cluster_slot - CRC16 (XMODEM: polynomial 0x1021, initial 0) of the key's hash tag
 * when it has a non-empty one, else of the whole key; modulo 16384 (cluster spec) */
unsigned pc_rl_cluster_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);

    if (open) {
        const char *close = memchr(open + 1, '}', len - (size_t)(open + 1 - key));
        if (close && close > open + 1) {
            key = open + 1;
            len = (size_t)(close - key);
        }
    }
    unsigned crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (unsigned)(unsigned char)key[i] << 8;
        for (int b = 0; b < 8; b++)
            crc = crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1;
        crc &= 0xffff;
    }
    return crc % RLC_SLOTS;
}

/* map_deadline - when the pending CLUSTER SLOTS is due, or UINT64_MAX */
static uint64_t map_deadline(const struct rlc_store *st)
{
    return st->rq ? st->rq_deadline : UINT64_MAX;
}

/* arm - the request timer follows the earliest deadline (and a pending map request) */
static void arm(struct rlc_store *st)
{
    pc_rlq_arm(&st->q, map_deadline(st));
}

/* answer - give the caller its result, once */
static void answer(struct rlc_req *r, struct pc_rl_result *res)
{
    struct rlc_store *st = r->st;

    if (!pc_rlq_settle(&st->q, &r->q, res))
        return;
    if (!st->closing)
        arm(st);
    r->q.cb(r->q.arg, res);
}

/* fail - answer with an error */
static void fail(struct rlc_req *r, const char *why)
{
    struct pc_rl_result res;

    pc_rlq_error(&res, why);
    answer(r, &res);
}

/* refresh_later - ask for the map again after ms */
static void refresh_later(struct rlc_store *st, unsigned ms)
{
    if (st->closing || evtimer_pending(st->refresh_ev, NULL))
        return;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(st->refresh_ev, &tv);
}

/* node_down - a node's connection failed: back off, and watch the map for a failover */
static void node_down(struct rlc_node *nd, const char *why)
{
    struct rlc_store *st = nd->st;

    if (!nd->logged_down && !st->closing)
        pc_warn("ratelimit: redis cluster node %s unavailable: %s; its slots follow on_error "
                "until it or a promoted replica answers",
                nd->name, why);
    nd->logged_down = true;
    nd->down_until = pc_rlq_now_ms() + nd->backoff;
    nd->backoff = nd->backoff * 2 > RLC_BACKOFF_MAX ? RLC_BACKOFF_MAX : nd->backoff * 2;
    refresh_later(st, 0);
}

/* node_drop - close a node's connection; checks on it fail at once (or when hiredis
 * leaves the callback we are in) */
static void node_drop(struct rlc_node *nd, const char *why)
{
    struct rlc_store *st = nd->st;
    redisAsyncContext *ac = nd->ac;

    if (ac == NULL)
        return;
    nd->ac = NULL;
    if (st->rq == ac)
        st->rq = NULL;
    node_down(nd, why);
    st->lost_why = why;
    redisAsyncFree(ac);
    st->lost_why = NULL;
}

/* too_big - a reply beyond any of ours */
static void too_big(redisAsyncContext *ac)
{
    struct rlc_node *nd = ac->data;

    pc_warn("ratelimit: redis cluster node %s: reply larger than %d bytes, dropping the connection",
            nd->name, PC_RLR_REPLY_MAX);
    node_drop(nd, "reply too large");
}

/* on_connect - TCP connection result */
static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rlc_node *nd = ac->data;
    struct rlc_store *st = nd->st;

    if (status == REDIS_OK || ac != nd->ac)
        return;
    nd->ac = NULL; /* hiredis frees it after this callback */
    if (st->rq == ac)
        st->rq = NULL;
    node_down(nd, ac->errstr[0] ? ac->errstr : "connect failed");
}

/* on_disconnect - the connection went away under us */
static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rlc_node *nd = ac->data;
    struct rlc_store *st = nd->st;

    (void)status;
    if (st->rq == ac)
        st->rq = NULL;
    if (ac != nd->ac)
        return;
    nd->ac = NULL;
    node_down(nd, ac->errstr[0] ? ac->errstr : "connection closed");
}

/* setup_cb - AUTH and SCRIPT LOAD at connect; CLIENT SETNAME and ASKING need no answer */
static void setup_cb(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct rlc_node *nd = ac->data;
    redisReply *reply = reply_;

    if (reply == NULL || ac != nd->ac || reply->type != REDIS_REPLY_ERROR)
        return;
    pc_warn("ratelimit: redis cluster node %s: %s: %.200s", nd->name, (const char *)priv,
            reply->str);
    if (strcmp(priv, "AUTH") == 0) /* without the script, EVAL still works */
        node_drop(nd, "connection setup failed");
}

/* node_conn - the node's connection, opened when needed; NULL while it is backed off */
static redisAsyncContext *node_conn(struct rlc_node *nd)
{
    struct rlc_store *st = nd->st;

    if (nd->ac || st->closing)
        return nd->ac;
    if (nd->down_until && pc_rlq_now_ms() < nd->down_until)
        return NULL;
    redisAsyncContext *ac = redisAsyncConnect(nd->host, nd->port);
    if (ac == NULL || ac->err || pc_rlr_attach(st->evb, ac, too_big, nd) < 0) {
        if (ac)
            redisAsyncFree(ac);
        node_down(nd, "connect failed");
        return NULL;
    }
    nd->ac = ac;
    st->base.stats.reconnects++;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (st->password)
        redisAsyncCommand(ac, setup_cb, "AUTH", "AUTH %s", st->password);
    redisAsyncCommand(ac, setup_cb, "CLIENT SETNAME", "CLIENT SETNAME %s", "portcullis-ratelimit");
    redisAsyncCommand(ac, setup_cb, "SCRIPT LOAD", "SCRIPT LOAD %s", pc_rl_redis_script());
    return ac;
}

/* node_get - the node at host:port, added when new; NULL past RLC_NODES_MAX */
static struct rlc_node *node_get(struct rlc_store *st, const char *host, int port)
{
    struct rlc_node **pp = &st->nodes;

    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->port == port && strcmp((*pp)->host, host) == 0)
            return *pp;
    if (st->nnodes >= RLC_NODES_MAX || strlen(host) >= sizeof((*pp)->host) || port < 1 ||
        port > 65535)
        return NULL;
    struct rlc_node *nd = calloc(1, sizeof(*nd));
    if (nd == NULL)
        return NULL;
    nd->st = st;
    snprintf(nd->host, sizeof(nd->host), "%s", host);
    nd->port = port;
    snprintf(nd->name, sizeof(nd->name), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    nd->backoff = RLC_BACKOFF_MIN;
    *pp = nd;
    st->nnodes++;
    return nd;
}

static void reply_cb(redisAsyncContext *, void *, void *);

/* dispatch - send (or park) a check; false when its node cannot be reached now */
static bool dispatch(struct rlc_store *st, struct rlc_req *r)
{
    struct rlc_node *nd = r->ask ? r->ask : st->slots[r->slot];

    r->q.ac = NULL;
    if (nd == NULL) { /* no map yet: park until it comes or the deadline passes */
        refresh(st);
        return true;
    }
    redisAsyncContext *ac = node_conn(nd);
    if (ac == NULL)
        return false;
    /* ASK: this one command may run on a slot that is being imported (cluster spec). */
    if (r->ask && redisAsyncCommand(ac, NULL, NULL, "ASKING") != REDIS_OK)
        return false;
    r->ask = NULL;
    if (redisAsyncCommandArgv(ac, reply_cb, r, r->q.argc, r->q.argv, r->q.argl) != REDIS_OK)
        return false;
    r->q.ac = ac;
    return true;
}

/* redirect - "MOVED slot host:port" or "ASK slot host:port": the node to go to, or NULL */
static struct rlc_node *redirect(struct rlc_store *st, const char *text, bool moved)
{
    char host[64];
    unsigned slot;
    int port;
    const char *sp = strrchr(text, ' '), *colon = strrchr(text, ':');

    if (sscanf(text + (moved ? 6 : 4), "%u", &slot) != 1 || slot >= RLC_SLOTS || sp == NULL ||
        colon == NULL || colon < sp || (size_t)(colon - sp - 1) >= sizeof(host))
        return NULL;
    memcpy(host, sp + 1, (size_t)(colon - sp - 1));
    host[colon - sp - 1] = 0;
    port = atoi(colon + 1);
    struct rlc_node *nd = node_get(st, host, port);
    if (nd && moved)
        st->slots[slot] = nd;
    return nd;
}

/* reply_cb - a check's answer, or a redirection */
static void reply_cb(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct rlc_req *r = priv;
    struct rlc_store *st = r->st;
    redisReply *reply = reply_;
    struct rlc_node *nd = ac->data;
    struct pc_rl_result res;

    r->q.ac = NULL;
    if (reply == NULL) { /* the connection is going away */
        fail(r, st->lost_why ? st->lost_why : "redis connection lost");
        free(r);
        return;
    }
    if (r->q.cancelled || r->q.answered || st->closing) {
        free(r);
        return;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        bool moved = strncmp(reply->str, "MOVED ", 6) == 0;
        if (moved || strncmp(reply->str, "ASK ", 4) == 0) {
            struct rlc_node *to = redirect(st, reply->str, moved);
            if (moved)
                refresh(st); /* a failover or resharding moves more than one slot */
            if (to && ++r->redirects <= RLC_REDIRECTS) {
                r->ask = moved ? NULL : to;
                if (dispatch(st, r))
                    return;
            }
            fail(r, "redis cluster redirection failed");
            free(r);
            return;
        }
        if (strncmp(reply->str, "NOSCRIPT", 8) == 0 && !r->q.retried) {
            /* This node lost the script (restart, a replica just promoted): send the text. */
            st->base.stats.noscript++;
            pc_rlq_req_eval(&r->q, r->script ? r->script->text : pc_rl_redis_script());
            if (redisAsyncCommandArgv(ac, reply_cb, r, r->q.argc, r->q.argv, r->q.argl) ==
                REDIS_OK) {
                r->q.ac = ac;
                return;
            }
        }
        pc_warn("ratelimit: redis cluster node %s: %.200s", nd->name, reply->str);
        fail(r, "redis error reply");
        free(r);
        /* A replica, a master that lost its slots, a cluster that is failing over. */
        if (strncmp(reply->str, "READONLY", 8) == 0 ||
            strncmp(reply->str, "CLUSTERDOWN", 11) == 0 ||
            strncmp(reply->str, "TRYAGAIN", 8) == 0 || strncmp(reply->str, "LOADING", 7) == 0)
            refresh_later(st, RLC_REFRESH_MS);
        return;
    }
    if (!(r->script ? pc_rlr_ints(reply, &res) : pc_rlr_result(reply, r->q.n, &res))) {
        fail(r, "unexpected reply from redis");
        free(r);
        return;
    }
    if (nd->logged_down)
        pc_info("ratelimit: redis cluster node %s is back", nd->name);
    nd->logged_down = false;
    nd->down_until = 0;
    nd->backoff = RLC_BACKOFF_MIN;
    answer(r, &res);
    free(r);
}

/* any_down - does a slot's master sit in backoff (then keep watching the map) */
static bool any_down(const struct rlc_store *st)
{
    for (const struct rlc_node *nd = st->nodes; nd; nd = nd->next)
        if (nd->down_until && nd->ac == NULL)
            for (size_t i = 0; i < RLC_SLOTS; i++)
                if (st->slots[i] == nd)
                    return true;
    return false;
}

/* map_entry_ok - [start, end, [ip, port, ...], replicas...] */
static bool map_entry_ok(const redisReply *e)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
        e->element[0]->type != REDIS_REPLY_INTEGER || e->element[1]->type != REDIS_REPLY_INTEGER ||
        e->element[2]->type != REDIS_REPLY_ARRAY)
        return false;
    long long a = e->element[0]->integer, b = e->element[1]->integer;
    const redisReply *m = e->element[2];
    return a >= 0 && b < RLC_SLOTS && a <= b && m->elements >= 2 &&
           m->element[0]->type == REDIS_REPLY_STRING && m->element[0]->len < 64 &&
           m->element[1]->type == REDIS_REPLY_INTEGER;
}

/* slots_cb - CLUSTER SLOTS: the owner of every slot */
static void slots_cb(redisAsyncContext *ac, void *reply_, void *priv)
{
    struct rlc_node *asked = ac->data;
    struct rlc_store *st = asked->st;
    redisReply *reply = reply_;

    (void)priv;
    if (st->closing || ac != st->rq)
        return;
    st->rq = NULL;
    bool ok = reply && reply->type == REDIS_REPLY_ARRAY && reply->elements > 0;
    for (size_t i = 0; ok && i < reply->elements; i++)
        ok = map_entry_ok(reply->element[i]);
    if (!ok) {
        pc_warn("ratelimit: redis cluster node %s: no usable CLUSTER SLOTS answer%s%.200s",
                asked->name, reply && reply->type == REDIS_REPLY_ERROR ? ": " : "",
                reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "");
        st->rq_next++;
        refresh_later(st, RLC_REFRESH_MS);
        return;
    }
    memset(st->slots, 0, sizeof(st->slots));
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *e = reply->element[i], *m = e->element[2];
        /* An empty address means the node we asked (cluster spec, CLUSTER SLOTS). */
        const char *host = m->element[0]->len ? m->element[0]->str : asked->host;
        struct rlc_node *nd = node_get(st, host, (int)m->element[1]->integer);
        for (long long s = e->element[0]->integer; nd && s <= e->element[1]->integer; s++)
            st->slots[s] = nd;
    }
    /* Parked checks go out now, in their order. */
    for (struct rlc_req *r = req_of(st->q.head), *next; r; r = next) {
        next = req_of(r->q.next);
        if (r->q.ac || r->q.answered)
            continue;
        if (st->slots[r->slot] == NULL) { /* asking again at once would only spin */
            fail(r, "no redis cluster node serves the slot");
            free(r);
        } else if (!dispatch(st, r)) {
            fail(r, "redis cluster node unavailable");
            free(r);
        }
    }
    if (any_down(st))
        refresh_later(st, RLC_REFRESH_MS);
    arm(st);
}

/* refresh - ask one node (round robin, skipping those backed off) for the slot map */
static void refresh(struct rlc_store *st)
{
    if (st->closing || st->rq)
        return;
    for (size_t k = 0; k < st->nnodes; k++) {
        size_t want = (st->rq_next + k) % st->nnodes, i = 0;
        struct rlc_node *nd = st->nodes;
        while (i++ < want)
            nd = nd->next;
        redisAsyncContext *ac = node_conn(nd);
        if (ac == NULL)
            continue;
        if (redisAsyncCommand(ac, slots_cb, NULL, "CLUSTER SLOTS") != REDIS_OK)
            continue;
        st->rq = ac;
        st->rq_next = want;
        st->rq_deadline = pc_rlq_now_ms() + st->timeout_ms;
        arm(st);
        return;
    }
    refresh_later(st, RLC_REFRESH_MS); /* every node backed off: try again soon */
}

/* on_refresh - time to ask for the map */
static void on_refresh(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    refresh(arg);
}

/* on_timer - overdue checks: their node is dead or frozen */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rlc_store *st = arg;
    uint64_t now = pc_rlq_now_ms();

    (void)fd, (void)what;
    if (st->rq && st->rq_deadline <= now) {
        st->base.stats.timeouts++;
        st->rq_next++;
        node_drop(((redisAsyncContext *)st->rq)->data, "CLUSTER SLOTS timed out");
    }
    for (bool again = true; again;) {
        again = false;
        for (struct rlc_req *r = req_of(st->q.head); r; r = req_of(r->q.next))
            if (r->q.deadline <= now && r->q.ac) {
                st->base.stats.timeouts++;
                node_drop(r->q.ac->data, "request timed out");
                again = true; /* the drop failed (and unlinked) every check on that node */
                break;
            }
    }
    for (struct rlc_req *r = req_of(st->q.head), *next; r; r = next) {
        next = req_of(r->q.next);
        if (r->q.deadline > now)
            continue;
        fail(r, "redis request timed out");
        free(r); /* parked: hiredis never saw it */
    }
    arm(st);
}

/* req_new - a request for n keys that share one slot, or NULL with res filled as the error */
static struct rlc_req *req_new(struct rlc_store *st, const char *const *keys, size_t n,
                               struct pc_rl_result *res, struct pc_rl_req **out)
{
    struct rlc_req *r;

    *out = NULL;
    memset(res, 0, sizeof(*res));
    st->base.stats.checks++;
    res->error = true;
    st->base.stats.errors++;
    if (n == 0 || n > PC_RL_BATCH_MAX) {
        res->why = "bad number of limits";
        return NULL;
    }
    unsigned slot = pc_rl_cluster_slot(keys[0], strlen(keys[0]));
    for (size_t i = 1; i < n; i++)
        if (pc_rl_cluster_slot(keys[i], strlen(keys[i])) != slot) {
            res->why = "keys of one check in different cluster slots";
            return NULL;
        }
    if ((r = calloc(1, sizeof(*r))) == NULL) {
        res->why = "out of memory";
        return NULL;
    }
    r->st = st;
    r->slot = slot;
    return r;
}

/* req_send - queue and dispatch a built request; PC_RL_DONE with res->why when it cannot go */
static enum pc_rl_status req_send(struct rlc_store *st, struct rlc_req *r, struct pc_rl_result *res,
                                  struct pc_rl_req **out)
{
    /* Queued first: dispatch may park it, and the map's arrival looks in the queue. */
    pc_rlq_enqueue(&st->q, &r->q);
    if (!dispatch(st, r)) {
        pc_rlq_unqueue(&st->q, &r->q);
        free(r);
        res->why = "redis cluster node unavailable";
        return PC_RL_DONE;
    }
    res->error = false;
    st->base.stats.errors--;
    arm(st);
    *out = (struct pc_rl_req *)r;
    return PC_RL_PENDING;
}

/* rlc_check - one EVALSHA for all the items, on the master of their slot */
static enum pc_rl_status rlc_check(struct pc_rl_store *base, const struct pc_rl_item *v, size_t n,
                                   struct pc_rl_result *res, pc_rl_cb *cb, void *arg,
                                   struct pc_rl_req **out)
{
    struct rlc_store *st = (struct rlc_store *)base;
    const char *keys[PC_RL_BATCH_MAX] = {NULL};

    for (size_t i = 0; i < n && i < PC_RL_BATCH_MAX; i++)
        keys[i] = v[i].key;
    struct rlc_req *r = req_new(st, keys, n, res, out);
    if (r == NULL)
        return PC_RL_DONE;
    pc_rlq_req_init(&r->q, st->sha, n, cb, arg, st->timeout_ms);
    pc_rlq_req_gcra(&r->q, v, n);
    return req_send(st, r, res, out);
}

/* rlc_eval - another filter's script (greylist, postscreen) on the master of its keys' slot */
static enum pc_rl_status rlc_eval(struct pc_rl_store *base, const struct pc_rl_script *script,
                                  const char *const *keys, size_t nkeys, const char *const *args,
                                  size_t nargs, struct pc_rl_result *res, pc_rl_cb *cb, void *arg,
                                  struct pc_rl_req **out)
{
    struct rlc_store *st = (struct rlc_store *)base;
    struct rlc_req *r = req_new(st, keys, nkeys, res, out);

    if (r == NULL)
        return PC_RL_DONE;
    r->script = script;
    pc_rlq_req_init(&r->q, script->sha, nkeys, cb, arg, st->timeout_ms);
    pc_rlq_req_eval_args(&r->q, keys, nkeys, args, nargs);
    return req_send(st, r, res, out);
}

/* rlc_cancel - the session no longer wants the answer; hiredis may still hold the request */
static void rlc_cancel(struct pc_rl_req *req)
{
    struct rlc_req *r = (struct rlc_req *)req;

    if (pc_rlq_cancel(&r->st->q, &r->q, map_deadline(r->st)))
        free(r);
}

/* rlc_start - events, and the first map */
static int rlc_start(struct pc_rl_store *base, struct event_base *evb)
{
    struct rlc_store *st = (struct rlc_store *)base;

    st->evb = evb;
    st->q.timer = evtimer_new(evb, on_timer, st);
    st->refresh_ev = evtimer_new(evb, on_refresh, st);
    if (!st->q.timer || !st->refresh_ev)
        return -1;
    refresh(st);
    return 0;
}

/* rlc_destroy - close everything; requests hiredis holds are freed through their callbacks */
static void rlc_destroy(struct pc_rl_store *base)
{
    struct rlc_store *st = (struct rlc_store *)base;

    st->closing = true;
    for (struct rlc_req *r = req_of(st->q.head), *next; r; r = next) {
        next = req_of(r->q.next);
        r->q.cancelled = true;
        pc_rlq_unqueue(&st->q, &r->q);
        if (r->q.ac == NULL)
            free(r);
    }
    st->rq = NULL;
    for (struct rlc_node *nd = st->nodes, *next; nd; nd = next) {
        next = nd->next;
        if (nd->ac) {
            redisAsyncContext *ac = nd->ac;
            nd->ac = NULL;
            redisAsyncFree(ac);
        }
        free(nd);
    }
    if (st->q.timer)
        event_free(st->q.timer);
    if (st->refresh_ev)
        event_free(st->refresh_ev);
    if (base->stats.checks)
        pc_info("ratelimit: redis cluster store: checks=%llu refused=%llu errors=%llu "
                "timeouts=%llu connects=%llu noscript=%llu",
                (unsigned long long)base->stats.checks, (unsigned long long)base->stats.refused,
                (unsigned long long)base->stats.errors, (unsigned long long)base->stats.timeouts,
                (unsigned long long)base->stats.reconnects,
                (unsigned long long)base->stats.noscript);
    free(st->password);
    free(st);
}

static const struct pc_rl_store_ops rlc_ops = {
    .kind = "redis-cluster",
    .eval = rlc_eval,
    .start = rlc_start,
    .check = rlc_check,
    .cancel = rlc_cancel,
    .destroy = rlc_destroy,
};

/* pc_rl_cluster_create - "redis-cluster://host:port[,host:port...]": the seed nodes */
struct pc_rl_store *pc_rl_cluster_create(const struct pc_rl_store_conf *c, struct pc_err *err)
{
    struct rlc_store *st = calloc(1, sizeof(*st));
    const char *p = c->url + 16;

    if (st == NULL)
        return NULL;
    st->base.ops = &rlc_ops;
    st->q.stats = &st->base.stats;
    st->timeout_ms = c->timeout_ms ? c->timeout_ms : 1000;
    while (*p) {
        size_t len = strcspn(p, ",");
        char one[300], host[256], port[16];
        if (len == 0 || len >= sizeof(one))
            goto bad;
        memcpy(one, p, len);
        one[len] = 0;
        if (!pc_parse_hostport(one, host, sizeof(host), port, sizeof(port)) || !port[0] ||
            node_get(st, host, atoi(port)) == NULL)
            goto bad;
        p += len;
        if (*p == ',')
            p++;
    }
    if (st->nnodes == 0)
        goto bad;
    if (c->password && c->password[0])
        st->password = strdup(c->password);
    pc_rlr_sha(st->sha);
    return &st->base;
bad:
    pc_err_set(err, NULL,
               "ratelimit: bad store \"%s\" (redis-cluster://ip:port,ip:port,... at most %d nodes)",
               c->url, RLC_NODES_MAX);
    rlc_destroy(&st->base);
    return NULL;
}
