/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_ratelimit 1 - rate and store address parsers, key hashing, GCRA
 * DESCRIPTION
 *	The input is split at the first two NUL bytes into a rate, a store
 *	URL and a key value. Invariants: no crash; a parsed rate is within
 *	its documented bounds; a parsed URL gives a non-empty host and a port
 *	and db in range; a key is the prefix plus 64 hex digits whatever the
 *	value; a GCRA step never charges a refused request; a Redis Cluster
 *	slot is below 16384 and a key's {tag} alone decides it; a
 *	redis-cluster:// store is made or refused, never half made.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filters/filter.h"
#include "policy/ratelimit.h"
#include "policy/rl_redis.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* LLVMFuzzerTestOneInput - one input */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 3);
    const char *part[3];
    size_t k = 0;

    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = buf[size + 2] = 0;
    part[0] = buf;
    for (size_t i = 0; i < size + 2 && k < 2; i++)
        if (buf[i] == 0)
            part[++k] = buf + i + 1;
    while (k < 2)
        part[++k] = "";

    struct pc_rl_rate r;
    if (pc_rl_rate_parse(part[0], &r)) {
        if (r.count < 1 || r.period_ms < 1000 || r.period_ms > 30ULL * 86400000)
            abort();
        double interval = (double)r.period_ms * 1000.0 / r.count, tat = 0;
        struct pc_rl_answer a;
        double now = 1.7e15;
        for (int i = 0; i < 3; i++) {
            double before = tat;
            pc_rl_gcra(now, &tat, interval, r.count, 1, &a);
            if (!a.allowed && tat != before)
                abort();
            if (a.remaining < 0)
                abort();
        }
    }
    char host[256];
    int port, db;
    bool is_unix;
    if (pc_rl_redis_url_parse(part[1], host, sizeof(host), &port, &db, &is_unix)) {
        if (!host[0] || port < 1 || port > 65535 || db < 0 || db > 65535)
            abort();
    }
    char key[PC_RL_KEY_MAX];
    pc_rl_key("pc:", part[1], &part[2], 1, key);
    if (strlen(key) != 3 + 64 || strspn(key + 3, "0123456789abcdef") != 64)
        abort();
    /* Cluster slots: the key's first non-empty {tag} is all that counts. */
    size_t l2 = strlen(part[2]);
    unsigned slot = pc_rl_cluster_slot(part[2], l2);
    if (slot >= 16384)
        abort();
    const char *o = memchr(part[2], '{', l2),
               *c = o ? memchr(o + 1, '}', l2 - (size_t)(o + 1 - part[2])) : NULL;
    if (c && c > o + 1 && pc_rl_cluster_slot(o + 1, (size_t)(c - o - 1)) != slot)
        abort();
    if (strncmp(part[1], "redis-cluster://", 16) == 0) {
        struct pc_rl_store_conf sc = {.url = part[1], .timeout_ms = 100};
        struct pc_err err = {{0}};
        struct pc_rl_store *st = pc_rl_store_create(&sc, &err);
        if ((st == NULL) == (err.msg[0] == 0))
            abort();
        pc_rl_store_free(st);
    }
    free(buf);
    return 0;
}
