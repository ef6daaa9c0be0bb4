/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	filter 3h - the filter interface: a const struct of stage hooks
 * DESCRIPTION
 *	A filter is a const struct pc_filter_ops in the NULL-terminated
 *	registry (filters/registry.c). It holds no global mutable state: its
 *	configuration lives in the object configure() returns (one per
 *	configuration generation, so a reload builds a new one beside the
 *	old), and its per-session state in the context attach() returns.
 *
 *	A stage hook returns PC_CONTINUE, a decision (filling the verdict),
 *	PC_ERROR (could not decide: the chain applies the filter's on_error),
 *	or PC_PENDING. A pending filter later calls pc_chain_resume() from a
 *	loop callback with its verdict; if the chain gives up first (timeout,
 *	client gone) it calls cancel(), after which the filter must not
 *	resume and must not touch the session from its callbacks.
 *
 *	Every filter's configuration section gets two options from the core:
 *	timeout (for a pending hook) and on_error (tempfail | accept | reject).
 */
#ifndef PC_FILTER_H
#define PC_FILTER_H

#include <confuse.h>

#include "core/err.h"
#include "core/param.h"
#include "core/services.h"
#include "core/verdict.h"

struct pc_session;

#define PC_FILTER_ABI 2 /* 2: options as table rows (.params) */

#define PC_FILTER_GATE 0x1 /* runs even after another filter said ACCEPT (relay, rate limits) */

typedef enum pc_action pc_stage_fn(struct pc_session *, void *conf, void *ctx, struct pc_verdict *);

struct pc_filter_ops {
    const char *name;
    unsigned abi;   /* PC_FILTER_ABI */
    unsigned flags; /* PC_FILTER_GATE */
    /* The rows of the filter's section "name { ... }" (core/param.h), ended by a row whose name
     * is NULL, or NULL: the loader generates its options, bounds, -p and docs from them. */
    const struct pc_param_row *params;
    /* configure - build the filter's configuration from its section (never NULL) */
    int (*configure)(cfg_t *sec, void **conf, struct pc_err *);
    /* start - acquire loop resources (sockets, timers) once the loop exists */
    int (*start)(void *conf, struct pc_services *);
    void (*destroy)(void *conf);
    int (*attach)(struct pc_session *, void *conf, void **ctx);
    void (*reset)(struct pc_session *, void *conf, void *ctx); /* end of transaction */
    void (*detach)(struct pc_session *, void *conf, void *ctx);
    void (*cancel)(struct pc_session *, void *conf, void *ctx); /* abandon pending work */
    pc_stage_fn *stage[PC_STAGE_COUNT];
    /* What the filter reads from filters earlier in the chain (their facts), NULL-terminated;
     * portcullis -t refuses a chain that breaks it. needs: listed, and before this one;
     * after: when listed, before this one. */
    const char *const *needs;
    const char *const *after;
};

#endif
