/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	rl_reqq 3 - the request queue both Redis rate limit stores use
 * DESCRIPTION
 *	See policy/rl_reqq.h. One copy of the queue, the deadline timer and
 *	the answer-once rule, so the single-node/Sentinel store and the
 *	Cluster store cannot drift apart on them.
 */
#include "policy/rl_reqq.h"

#include <event2/event.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* pc_rlq_now_ms - monotonic milliseconds */
uint64_t pc_rlq_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* pc_rlq_req_init - the command's head and the caller */
void pc_rlq_req_init(struct pc_rlq_req *r, const char *sha, size_t nkeys, pc_rl_cb *cb, void *arg,
                     unsigned timeout_ms)
{
    r->cb = cb;
    r->arg = arg;
    r->deadline = pc_rlq_now_ms() + timeout_ms;
    snprintf(r->numkeys, sizeof(r->numkeys), "%zu", nkeys);
    r->argv[0] = "EVALSHA";
    r->argv[1] = sha;
    r->argv[2] = r->numkeys;
    r->argc = 3;
}

/* pc_rlq_req_gcra - KEYS are the limits' keys, ARGV three numbers per limit (the script's order:
 * interval, burst, cost), printed exactly ("%.17g" round-trips a double) */
void pc_rlq_req_gcra(struct pc_rlq_req *r, const struct pc_rl_item *v, size_t n)
{
    r->n = n;
    for (size_t i = 0; i < n; i++) {
        snprintf(r->keys[i], sizeof(r->keys[i]), "%s", v[i].key);
        r->argv[r->argc++] = r->keys[i];
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(r->args[i][0], sizeof(r->args[i][0]), "%.17g", v[i].interval_us);
        snprintf(r->args[i][1], sizeof(r->args[i][1]), "%.17g", v[i].burst);
        snprintf(r->args[i][2], sizeof(r->args[i][2]), "%.17g", v[i].cost);
        for (int k = 0; k < 3; k++)
            r->argv[r->argc++] = r->args[i][k];
    }
    pc_rlq_req_lengths(r);
}

/* pc_rlq_req_eval_args - keys, then arguments, copied into the request; then the lengths */
void pc_rlq_req_eval_args(struct pc_rlq_req *q, const char *const *keys, size_t nkeys,
                          const char *const *args, size_t nargs)
{
    for (size_t i = 0; i < nkeys; i++) {
        snprintf(q->keys[i], sizeof(q->keys[i]), "%s", keys[i]);
        q->argv[q->argc++] = q->keys[i];
    }
    for (size_t i = 0; i < nargs; i++) {
        snprintf(q->args[i / 3][i % 3], sizeof(q->args[0][0]), "%s", args[i]);
        q->argv[q->argc++] = q->args[i / 3][i % 3];
    }
    pc_rlq_req_lengths(q);
}

/* pc_rlq_req_lengths - hiredis takes lengths beside the arguments */
void pc_rlq_req_lengths(struct pc_rlq_req *r)
{
    for (int i = 0; i < r->argc; i++)
        r->argl[i] = strlen(r->argv[i]);
}

/* pc_rlq_req_eval - the server lost the script (restart, a replica just promoted): EVAL sends
 * its text, which the server caches again, so this happens once per request at most */
void pc_rlq_req_eval(struct pc_rlq_req *r, const char *text)
{
    r->retried = true;
    r->argv[0] = "EVAL";
    r->argl[0] = 4;
    r->argv[1] = text;
    r->argl[1] = strlen(text);
}

/* pc_rlq_enqueue - append in send order */
void pc_rlq_enqueue(struct pc_rlq *q, struct pc_rlq_req *r)
{
    r->prev = q->tail;
    r->next = NULL;
    *(q->tail ? &q->tail->next : &q->head) = r;
    q->tail = r;
    r->queued = true;
}

/* pc_rlq_unqueue - the request no longer waits for an answer */
void pc_rlq_unqueue(struct pc_rlq *q, struct pc_rlq_req *r)
{
    if (!r->queued)
        return;
    *(r->prev ? &r->prev->next : &q->head) = r->next;
    *(r->next ? &r->next->prev : &q->tail) = r->prev;
    r->prev = r->next = NULL;
    r->queued = false;
}

/* pc_rlq_arm - the timer follows the earliest deadline */
void pc_rlq_arm(struct pc_rlq *q, uint64_t also)
{
    uint64_t min = also, now = pc_rlq_now_ms();

    for (struct pc_rlq_req *r = q->head; r; r = r->next)
        if (r->deadline < min)
            min = r->deadline;
    if (min == UINT64_MAX) {
        evtimer_del(q->timer);
        return;
    }
    uint64_t d = min > now ? min - now : 0;
    struct timeval tv = {(time_t)(d / 1000), (suseconds_t)(d % 1000) * 1000};
    evtimer_add(q->timer, &tv);
}

/* pc_rlq_settle - answer once */
bool pc_rlq_settle(struct pc_rlq *q, struct pc_rlq_req *r, const struct pc_rl_result *res)
{
    pc_rlq_unqueue(q, r);
    if (r->answered || r->cancelled)
        return false;
    r->answered = true;
    if (res->error)
        q->stats->errors++;
    else if (!res->allowed)
        q->stats->refused++;
    return true;
}

/* pc_rlq_cancel - a session gave up on its check */
bool pc_rlq_cancel(struct pc_rlq *q, struct pc_rlq_req *r, uint64_t also)
{
    r->cancelled = true;
    pc_rlq_unqueue(q, r);
    pc_rlq_arm(q, also);
    return r->ac == NULL;
}

/* pc_rlq_error - an error answer */
void pc_rlq_error(struct pc_rl_result *res, const char *why)
{
    memset(res, 0, sizeof(*res));
    res->error = true;
    res->why = why;
}
