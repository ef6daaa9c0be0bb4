/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	rl_store 3h - the rate-limit store factory
 * DESCRIPTION
 *	One entry point for the filters: a store of the kind the configuration
 *	names (policy/rl_store.c).
 */
#ifndef PC_RL_STORE_H
#define PC_RL_STORE_H

#include "policy/ratelimit.h"

struct pc_err;

/* pc_rl_store_create - a store for this configuration; NULL with err set */
struct pc_rl_store *pc_rl_store_create(const struct pc_rl_store_conf *, struct pc_err *);

#endif
