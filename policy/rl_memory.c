/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	rl_memory 3 - the in-process rate limit store
 * DESCRIPTION
 *	For a single gateway without Redis. Same GCRA arithmetic as the Redis
 *	script (policy/ratelimit.c), answered synchronously. Memory is
 *	bounded: a key expires when its TAT is in the past (its state is then
 *	the same as no state), an incremental sweep drops expired keys as the
 *	table is used, and at max_entries the entry that expires soonest in a
 *	sample of buckets makes room (it holds the least state), so a flood
 *	of distinct senders cannot grow the table without bound.
 *
 *	State lives in this store object, i.e. in one configuration
 *	generation: a reload starts counting afresh (Redis keeps counting).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "policy/ratelimit.h"

#define RLM_SAMPLE 16 /* buckets looked at to make room */

struct rlm_entry {
    struct rlm_entry *next;
    double tat; /* microseconds; expired when <= now */
    char key[PC_RL_KEY_MAX];
};

struct rlm_store {
    struct pc_rl_store base;
    struct rlm_entry **bucket;
    size_t nbucket, n, max, sweep;
    double (*now_us)(void);
};

/* rlm_now - monotonic microseconds */
static double rlm_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)(ts.tv_nsec / 1000);
}

/* rlm_hash - FNV-1a over the key (already a SHA-256, any bits will do) */
static size_t rlm_hash(const char *k)
{
    size_t h = 1469598103934665603ULL;

    while (*k)
        h = (h ^ (unsigned char)*k++) * 1099511628211ULL;
    return h;
}

/* rlm_sweep_bucket - drop expired entries of one bucket; how many went */
static size_t rlm_sweep_bucket(struct rlm_store *m, size_t b, double now)
{
    size_t freed = 0;

    for (struct rlm_entry **pp = &m->bucket[b]; *pp;) {
        struct rlm_entry *e = *pp;
        if (e->tat <= now) {
            *pp = e->next;
            free(e);
            m->n--;
            freed++;
        } else {
            pp = &e->next;
        }
    }
    return freed;
}

/* rlm_make_room - at the bound: sweep a sample, else evict the soonest to expire */
static void rlm_make_room(struct rlm_store *m, double now)
{
    struct rlm_entry **victim = NULL;

    for (size_t i = 0; i < RLM_SAMPLE; i++) {
        size_t b = m->sweep++ & (m->nbucket - 1);
        if (rlm_sweep_bucket(m, b, now))
            return;
        for (struct rlm_entry **pp = &m->bucket[b]; *pp; pp = &(*pp)->next)
            if (victim == NULL || (*pp)->tat < (*victim)->tat)
                victim = pp;
    }
    if (victim) {
        struct rlm_entry *e = *victim;
        *victim = e->next;
        free(e);
        m->n--;
    }
}

/* rlm_find - the entry for a key, or NULL */
static struct rlm_entry *rlm_find(struct rlm_store *m, const char *key)
{
    for (struct rlm_entry *e = m->bucket[rlm_hash(key) & (m->nbucket - 1)]; e; e = e->next)
        if (strcmp(e->key, key) == 0)
            return e;
    return NULL;
}

/* rlm_check - all-or-nothing GCRA over the items */
static enum pc_rl_status rlm_check(struct pc_rl_store *st, const struct pc_rl_item *v, size_t n,
                                   struct pc_rl_result *r, pc_rl_cb *cb, void *arg,
                                   struct pc_rl_req **req)
{
    struct rlm_store *m = (struct rlm_store *)st;
    double now = m->now_us(), tat[PC_RL_BATCH_MAX];

    (void)cb, (void)arg;
    *req = NULL;
    memset(r, 0, sizeof(*r));
    if (n > PC_RL_BATCH_MAX) {
        r->error = true;
        r->why = "too many limits in one check";
        return PC_RL_DONE;
    }
    /* A little sweeping on every call keeps expired keys from piling up. */
    rlm_sweep_bucket(m, m->sweep++ & (m->nbucket - 1), now);
    r->allowed = true;
    for (size_t i = 0; i < n; i++) {
        struct rlm_entry *e = rlm_find(m, v[i].key);
        tat[i] = e ? e->tat : 0;
        pc_rl_gcra(now, &tat[i], v[i].interval_us, v[i].burst, v[i].cost, &r->a[i]);
        if (!r->a[i].allowed)
            r->allowed = false;
    }
    st->stats.checks++;
    if (!r->allowed) {
        st->stats.refused++;
        return PC_RL_DONE;
    }
    for (size_t i = 0; i < n; i++) {
        struct rlm_entry *e = rlm_find(m, v[i].key);
        if (e == NULL) {
            if (m->n >= m->max)
                rlm_make_room(m, now);
            if ((e = calloc(1, sizeof(*e))) == NULL) {
                r->error = true;
                r->why = "out of memory";
                return PC_RL_DONE;
            }
            strcpy(e->key, v[i].key);
            size_t b = rlm_hash(e->key) & (m->nbucket - 1);
            e->next = m->bucket[b];
            m->bucket[b] = e;
            m->n++;
        }
        e->tat = tat[i];
    }
    return PC_RL_DONE;
}

/* rlm_cancel - nothing is ever pending here */
static void rlm_cancel(struct pc_rl_req *req)
{
    (void)req;
}

/* rlm_destroy - free every entry */
static void rlm_destroy(struct pc_rl_store *st)
{
    struct rlm_store *m = (struct rlm_store *)st;

    for (size_t b = 0; b < m->nbucket; b++)
        while (m->bucket[b]) {
            struct rlm_entry *e = m->bucket[b];
            m->bucket[b] = e->next;
            free(e);
        }
    free(m->bucket);
    free(m);
}

static const struct pc_rl_store_ops rlm_ops = {
    .kind = "memory",
    .check = rlm_check,
    .cancel = rlm_cancel,
    .destroy = rlm_destroy,
};

/* pc_rl_memory_create - an empty table; now_us NULL means the monotonic clock */
struct pc_rl_store *pc_rl_memory_create(size_t max_entries, double (*now_us)(void))
{
    struct rlm_store *m = calloc(1, sizeof(*m));

    if (m == NULL)
        return NULL;
    m->base.ops = &rlm_ops;
    m->max = max_entries ? max_entries : 100000;
    m->nbucket = 64;
    while (m->nbucket < m->max / 2 && m->nbucket < (1u << 22))
        m->nbucket <<= 1;
    m->bucket = calloc(m->nbucket, sizeof(*m->bucket));
    if (m->bucket == NULL) {
        free(m);
        return NULL;
    }
    m->now_us = now_us ? now_us : rlm_now;
    return &m->base;
}

/* pc_rl_memory_entries - keys held */
size_t pc_rl_memory_entries(const struct pc_rl_store *st)
{
    return ((const struct rlm_store *)st)->n;
}
