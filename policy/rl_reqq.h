/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	rl_reqq 3h - the request queue both Redis rate limit stores use
 * DESCRIPTION
 *	hiredis 0.14 has no timeouts, so a Redis store (rl_redis.c: single
 *	node and Sentinel; rl_cluster.c: Cluster) keeps every request it has
 *	not had answered in a queue, in send order, each with its deadline,
 *	and one timer that follows the earliest deadline. A request is
 *	answered once: the answer that comes first (reply, failure, timeout)
 *	counts in the store's statistics, a later one is dropped, and a
 *	cancelled request is never answered. A store embeds struct
 *	pc_rlq_req as the first member of its own request and keeps what only
 *	it needs (its connection choice, metrics, redirections) beside it.
 * SEE ALSO
 *	policy/rl_redis.c, policy/rl_cluster.c
 */
#ifndef PC_RL_REQQ_H
#define PC_RL_REQQ_H

#include <hiredis/async.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy/ratelimit.h"

struct event;

/* One request: EVALSHA's arguments, its caller, and its place in the queue. */
struct pc_rlq_req {
    struct pc_rlq_req *prev, *next; /* waiting for an answer, in send order */
    redisAsyncContext *ac;          /* the connection hiredis holds it on; NULL while parked */
    pc_rl_cb *cb;
    void *arg;
    uint64_t deadline; /* monotonic ms */
    bool queued, answered, cancelled, retried;
    size_t n; /* limits checked (the GCRA check) */
    int argc;
    const char *argv[3 + 4 * PC_RL_BATCH_MAX];
    size_t argl[3 + 4 * PC_RL_BATCH_MAX];
    char numkeys[8];
    char keys[PC_RL_BATCH_MAX][PC_RL_KEY_MAX];
    char args[PC_RL_BATCH_MAX][3][40];
};

struct pc_rlq {
    struct pc_rlq_req *head, *tail;
    struct event *timer;       /* follows the earliest deadline (pc_rlq_arm) */
    struct pc_rl_stats *stats; /* the store's: refused and errors counted at the answer */
};

/* pc_rlq_now_ms - monotonic milliseconds, the clock of every deadline */
uint64_t pc_rlq_now_ms(void);
/* pc_rlq_req_init - EVALSHA sha with nkeys keys to come, for cb, due in timeout_ms */
void pc_rlq_req_init(struct pc_rlq_req *, const char *sha, size_t nkeys, pc_rl_cb *cb, void *arg,
                     unsigned timeout_ms);
/* pc_rlq_req_gcra - the GCRA script's keys and arguments for n limits (n <= PC_RL_BATCH_MAX) */
void pc_rlq_req_gcra(struct pc_rlq_req *, const struct pc_rl_item *v, size_t n);
/* pc_rlq_req_eval_args - a script's keys, then its arguments (at most PC_RL_BATCH_MAX keys and
 * 3 * PC_RL_BATCH_MAX arguments, the caller's bound), copied in; then the lengths */
void pc_rlq_req_eval_args(struct pc_rlq_req *, const char *const *keys, size_t nkeys,
                          const char *const *args, size_t nargs);
/* pc_rlq_req_lengths - argl from argv, once every argument is in place */
void pc_rlq_req_lengths(struct pc_rlq_req *);
/* pc_rlq_req_eval - after NOSCRIPT: the same request as EVAL of the script's text, once */
void pc_rlq_req_eval(struct pc_rlq_req *, const char *text);
/* pc_rlq_enqueue - append in send order */
void pc_rlq_enqueue(struct pc_rlq *, struct pc_rlq_req *);
/* pc_rlq_unqueue - the request no longer waits (no-op when it is not queued) */
void pc_rlq_unqueue(struct pc_rlq *, struct pc_rlq_req *);
/* pc_rlq_arm - the timer at the earliest deadline of the queue and also (UINT64_MAX: none) */
void pc_rlq_arm(struct pc_rlq *, uint64_t also);
/* pc_rlq_settle - unqueue; true for the first answer of a request not cancelled (counted in the
 * statistics; the caller then calls its cb), false when it must be dropped */
bool pc_rlq_settle(struct pc_rlq *, struct pc_rlq_req *, const struct pc_rl_result *);
/* pc_rlq_cancel - the caller no longer wants the answer: never answered, out of the queue, the
 * timer re-armed (as pc_rlq_arm); true when the request is parked (hiredis never saw it), so
 * the store frees it now, else hiredis's callback will */
bool pc_rlq_cancel(struct pc_rlq *, struct pc_rlq_req *, uint64_t also);
/* pc_rlq_error - res as an error answer with its reason */
void pc_rlq_error(struct pc_rl_result *res, const char *why);

#endif
