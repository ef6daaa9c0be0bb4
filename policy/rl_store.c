/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	rl_store 3 - the rate-limit store factory
 * DESCRIPTION
 *	Picks a store kind from the configuration: in-process, Redis, Redis
 *	through Sentinel, or Redis Cluster. It sits above every kind, so that
 *	the kinds include the common interface (policy/ratelimit.h) and the
 *	interface never includes a kind: no include circle.
 */
#include "policy/rl_store.h"

#include <string.h>

#include "core/err.h"
#include "policy/rl_redis.h"

/* pc_rl_store_create - in-process, Redis or Redis through Sentinel */
struct pc_rl_store *pc_rl_store_create(const struct pc_rl_store_conf *c, struct pc_err *err)
{
    if ((c->url == NULL || c->url[0] == 0) && c->nsentinels == 0)
        return pc_rl_memory_create(c->max_entries, NULL);
    if (c->url && strncmp(c->url, "redis-cluster://", 16) == 0) {
        if (c->nsentinels) {
            pc_err_set(err, NULL, "ratelimit: a cluster store takes no sentinels");
            return NULL;
        }
        return pc_rl_cluster_create(c, err);
    }
    return pc_rl_redis_create(c, err);
}
