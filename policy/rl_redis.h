/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	rl_redis 3h - what the Redis rate limit stores share (single node,
 *	Sentinel, Cluster)
 * DESCRIPTION
 *	The libevent adapter that puts a hiredis async context on our loop
 *	and bounds what its reader may buffer, the GCRA script's digest, and
 *	the parser of the script's answer. Internal to policy/.
 * SEE ALSO
 *	policy/rl_redis.c, policy/rl_cluster.c, policy/ratelimit.h
 */
#ifndef PC_RL_REDIS_H
#define PC_RL_REDIS_H

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

#include "policy/ratelimit.h"

#define PC_RLR_REPLY_MAX 65536 /* bytes a reply may hold; ours are a few hundred */

/* pc_rlr_attach - put ac on evb; big(ac) runs when its reader holds more than
 * PC_RLR_REPLY_MAX bytes; ac->data = data. -1 when out of memory. */
int pc_rlr_attach(struct event_base *evb, redisAsyncContext *ac, void (*big)(redisAsyncContext *),
                  void *data);

/* pc_rlr_result - the script's answer for n items; false when malformed */
bool pc_rlr_result(const redisReply *reply, size_t n, struct pc_rl_result *res);

/* pc_rlr_ints - a pc_rl_redis_eval script's array of integers; false when malformed */
bool pc_rlr_ints(const redisReply *reply, struct pc_rl_result *res);

/* pc_rlr_sha - the script's SHA-1 in hex (41 bytes with the NUL) */
void pc_rlr_sha(char out[41]);

/* pc_rl_cluster_create - a store on Redis Cluster: "redis-cluster://h:p,h:p" */
struct pc_rl_store *pc_rl_cluster_create(const struct pc_rl_store_conf *, struct pc_err *);

/* pc_rl_cluster_slot - the hash slot of a key (CRC16 of its {tag}, mod 16384) */
unsigned pc_rl_cluster_slot(const char *key, size_t len);

#endif
