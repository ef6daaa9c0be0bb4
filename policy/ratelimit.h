/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	ratelimit 3h - GCRA rate limits and the stores that keep their state
 * DESCRIPTION
 *	A limit allows "count per period" with a burst: the generic cell rate
 *	algorithm (GCRA, ITU-T I.371) keeps one number per key, the
 *	theoretical arrival time (TAT). Each unit of cost moves it forward by
 *	the emission interval T = period / count; a request is allowed while
 *	TAT - now stays within burst * T. The same arithmetic runs in C for
 *	the in-process store (rl_memory.c) and in Lua inside Redis for the
 *	shared store (rl_redis.c), so both give the same answers.
 *
 *	A check carries several limits at once (all the limits of one stage)
 *	and is all-or-nothing: when any limit refuses, none is charged. In
 *	Redis that is one EVALSHA, atomic and in one round trip.
 *
 *	Keys are "prefix" plus the hex SHA-256 of the limit name and the key
 *	values, so a hostile sender address can make neither a huge nor an
 *	odd Redis key, and two limits never share a counter.
 *
 *	pc_rl_check() answers at once (PC_RL_DONE, result filled) or later
 *	(PC_RL_PENDING): then cb runs on the loop, never from inside
 *	pc_rl_check(), unless pc_rl_cancel() was called first.
 * SEE ALSO
 *	ITU-T I.371 (GCRA), portcullis.conf(5) "ratelimit"
 */
#ifndef PC_RATELIMIT_H
#define PC_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct pc_err;

#define PC_RL_KEY_MAX    160 /* prefix (<= 64) + a cluster hash tag (18) + 64 hex digits */
#define PC_RL_BATCH_MAX  16  /* limits in one check */
#define PC_RL_FACT_APPLY "ratelimit.apply" /* fact naming a limit that has named_only set */
#define PC_RL_INTS_MAX   8                 /* integers a pc_rl_redis_eval script may return */
#define PC_RL_ARG_MAX    39                /* bytes of one pc_rl_redis_eval argument */

/* pc_rl_rate - a parsed "100/1h" */
struct pc_rl_rate {
    double count; /* units per period */
    uint64_t period_ms;
};

/* One limit's part of a check. */
struct pc_rl_item {
    char key[PC_RL_KEY_MAX];
    double interval_us; /* emission interval T */
    double burst;       /* units that may go at once (>= 1) */
    double cost;        /* units this request uses (clamped to burst) */
};

struct pc_rl_answer {
    bool allowed;
    uint64_t retry_after_ms; /* when refused: how long until it would pass */
    double remaining;        /* units still available after this request */
};

struct pc_rl_result {
    bool error;      /* the store could not answer (down, timeout, bad reply) */
    const char *why; /* static text when error */
    bool allowed;    /* every item allowed (and charged) */
    struct pc_rl_answer a[PC_RL_BATCH_MAX];
    int64_t ints[PC_RL_INTS_MAX]; /* pc_rl_redis_eval: the script's array of integers */
    size_t nints;
};

typedef void pc_rl_cb(void *arg, const struct pc_rl_result *);

enum pc_rl_status { PC_RL_DONE, PC_RL_PENDING };

/* Counters, for logs and tests. */
struct pc_rl_stats {
    uint64_t checks, refused, errors, timeouts, reconnects, noscript;
};

struct pc_rl_store;
struct pc_rl_req;
struct pc_rl_script;

/* Store operations, one table per kind. */
struct pc_rl_store_ops {
    const char *kind;
    int (*start)(struct pc_rl_store *, struct event_base *);
    enum pc_rl_status (*check)(struct pc_rl_store *, const struct pc_rl_item *, size_t n,
                               struct pc_rl_result *, pc_rl_cb *, void *arg, struct pc_rl_req **);
    void (*cancel)(struct pc_rl_req *);
    void (*destroy)(struct pc_rl_store *);
    /* pc_rl_redis_eval on this kind, or NULL (the in-process store runs no scripts) */
    enum pc_rl_status (*eval)(struct pc_rl_store *, const struct pc_rl_script *,
                              const char *const *keys, size_t nkeys, const char *const *args,
                              size_t nargs, struct pc_rl_result *, pc_rl_cb *, void *arg,
                              struct pc_rl_req **);
};

struct pc_rl_store {
    const struct pc_rl_store_ops *ops;
    struct pc_rl_stats stats;
};

/* Configuration of a store, from the filter's section. */
struct pc_rl_store_conf {
    const char *url;              /* redis://host:port/db, unix:/path[?db=N], or NULL (memory) */
    const char *const *sentinels; /* host:port of Redis Sentinels, or NULL */
    size_t nsentinels;
    const char *master;   /* the Sentinel master name */
    const char *password; /* AUTH, or NULL */
    unsigned timeout_ms;  /* per request, connect included */
    size_t max_entries;   /* in-process store bound */
};

/* pc_rl_rate_parse - "100/1h", "5/m", "10M/1d" (K, M, G: powers of 1024); false on error */
bool pc_rl_rate_parse(const char *, struct pc_rl_rate *);

/* pc_rl_gcra - one GCRA step at now_us for a key whose TAT is *tat (0 = unknown);
 * updates *tat when allowed */
void pc_rl_gcra(double now_us, double *tat, double interval_us, double burst, double cost,
                struct pc_rl_answer *);

/* pc_rl_key - prefix + hex SHA-256 of name and the values (NUL-separated); out >= PC_RL_KEY_MAX */
void pc_rl_key(const char *prefix, const char *name, const char *const *values, size_t n,
               char *out);

struct pc_rl_store *pc_rl_memory_create(size_t max_entries, double (*now_us)(void));
struct pc_rl_store *pc_rl_redis_create(const struct pc_rl_store_conf *, struct pc_err *);

/* pc_rl_redis_url_parse - split a store URL; false on syntax error */
bool pc_rl_redis_url_parse(const char *url, char *host, size_t hostsize, int *port, int *db,
                           bool *is_unix);

/* pc_rl_start - acquire loop resources (connect) */
static inline int pc_rl_start(struct pc_rl_store *st, struct event_base *base)
{
    return st->ops->start ? st->ops->start(st, base) : 0;
}

/* pc_rl_check - check and charge items; PC_RL_DONE (r filled) or PC_RL_PENDING (cb later) */
static inline enum pc_rl_status pc_rl_check(struct pc_rl_store *st, const struct pc_rl_item *v,
                                            size_t n, struct pc_rl_result *r, pc_rl_cb *cb,
                                            void *arg, struct pc_rl_req **req)
{
    return st->ops->check(st, v, n, r, cb, arg, req);
}

/* pc_rl_cancel - the caller no longer wants the answer: cb will not run */
static inline void pc_rl_cancel(struct pc_rl_store *st, struct pc_rl_req *req)
{
    if (req)
        st->ops->cancel(req);
}

/* pc_rl_store_free - close and free a store */
static inline void pc_rl_store_free(struct pc_rl_store *st)
{
    if (st)
        st->ops->destroy(st);
}

/* pc_rl_memory_entries - how many keys the in-process store holds (tests) */
size_t pc_rl_memory_entries(const struct pc_rl_store *);

/* pc_rl_redis_script - the Lua text (tests, benchmarks) */
const char *pc_rl_redis_script(void);

/* Another filter's Lua script run on a Redis store's connection (greylist), with the same
 * deadline, reconnect, Sentinel, Cluster redirection and NOSCRIPT handling as the rate limit
 * checks. On a cluster every key of one call must hash to one slot. */
struct pc_rl_script {
    const char *text;
    char sha[41]; /* hex SHA-1 of text: pc_rl_script_init */
};

/* pc_rl_script_init - compute the script's digest for EVALSHA */
void pc_rl_script_init(struct pc_rl_script *, const char *text);

/* pc_rl_redis_eval - EVALSHA script with keys (< PC_RL_KEY_MAX bytes each, at most
 * PC_RL_BATCH_MAX) and args (at most PC_RL_ARG_MAX bytes, at most 3 * PC_RL_BATCH_MAX); the
 * script must return an array of at most PC_RL_INTS_MAX integers, given in res->ints. The script
 * must outlive the request. Answers like pc_rl_check; pc_rl_cancel cancels. */
enum pc_rl_status pc_rl_redis_eval(struct pc_rl_store *, const struct pc_rl_script *,
                                   const char *const *keys, size_t nkeys, const char *const *args,
                                   size_t nargs, struct pc_rl_result *res, pc_rl_cb *cb, void *arg,
                                   struct pc_rl_req **out);

#endif
