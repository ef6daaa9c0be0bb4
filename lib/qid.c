/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	qid 3 - queue ids unique across processes, hosts and restarts
 * DESCRIPTION
 *	6 characters of seconds, 4 of microseconds, 8 of (random + sequence),
 *	base 52. Within a process the sequence makes ids distinct; between
 *	processes (two gateways, or one restarted within a second) the random
 *	part does. The id sorts by time, as Postfix's long ids do.
 * SEE ALSO
 *	Postfix "enable_long_queue_ids"
 */
#include "lib/qid.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/random.h>
#include <unistd.h>

static const char pc_qid_digits[] = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz";
#define PC_QID_BASE      52
#define PC_QID_RAND_SPAN 53459728531456ULL /* 52^8 */

static uint64_t pc_qid_nonce, pc_qid_seq;
static pid_t pc_qid_pid;   /* 0: not seeded in this process */
static bool pc_qid_atfork; /* forget_seed runs in every child */

/* put - n digits of v, most significant first */
static void put(char *dst, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        dst[i] = pc_qid_digits[v % PC_QID_BASE];
        v /= PC_QID_BASE;
    }
}

/* forget_seed - in a child after fork(): its ids need a random part of their own */
static void forget_seed(void)
{
    pc_qid_pid = 0;
}

/* seed - a fresh random part for this process */
static void seed(void)
{

    uint64_t r = 0;
    struct timespec ts;

    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
        /* No entropy yet (early boot): time and pid still separate most processes. */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)getpid() ^ ((uint64_t)ts.tv_sec << 40);
    }
    pc_qid_nonce = r % PC_QID_RAND_SPAN;
    pc_qid_seq = 0;
    pc_qid_pid = getpid();
    /* Asked once, not per id (getpid is a system call): a fork makes us ask again. */
    if (!pc_qid_atfork)
        pc_qid_atfork = pthread_atfork(NULL, NULL, forget_seed) == 0;
}

/* pc_qid_make_at - an id for the given time */
void pc_qid_make_at(char *buf, size_t size, const struct timespec *ts)
{
    char id[PC_QID_LEN + 1];

    if (pc_qid_pid == 0 || (!pc_qid_atfork && pc_qid_pid != getpid()))
        seed();
    put(id, (uint64_t)ts->tv_sec, 6);
    put(id + 6, (uint64_t)(ts->tv_nsec / 1000), 4);
    put(id + 10, (pc_qid_nonce + ++pc_qid_seq) % PC_QID_RAND_SPAN, 8);
    id[PC_QID_LEN] = 0;
    snprintf(buf, size, "%s", id);
}

/* pc_qid_make - an id for now */
void pc_qid_make(char *buf, size_t size)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    pc_qid_make_at(buf, size, &ts);
}
