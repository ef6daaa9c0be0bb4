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

#include "gateway/session.h"
#include "policy/verdict.h"

#define PC_FILTER_ABI 1

#define PC_FILTER_GATE 0x1 /* runs even after another filter said ACCEPT (relay, rate limits) */

struct event_base;
struct pc_workers;
struct pc_dns;

/* Process-wide services, owned by main(), shared by every filter. */
struct pc_services {
    struct event_base *base;
    struct pc_workers *workers; /* blocking work off the loop: gateway/worker.h */
    struct pc_dns *dns;         /* the one resolver: gateway/dns.h (NULL until configured) */
    const char *hostname;       /* our name: Received, Authentication-Results */
};

/* A configuration error: "file:line: message". */
struct pc_err {
    char msg[4096]; /* every error of a configuration, one per line (portcullis -t) */
};

void pc_err_set(struct pc_err *, cfg_t *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* pc_conf_path - a file named in the configuration (rule file, list, key, certificate): a
 * relative path resolves against the directory of the file that names it, so that a
 * configuration reads the same whatever the working directory. Returns path itself when it
 * needs no change, else buf; NULL when buf is too small. */
const char *pc_conf_path(cfg_t *where, const char *path, char *buf, size_t size);

typedef enum pc_action pc_stage_fn(struct pc_session *, void *conf, void *ctx,
                                   struct pc_verdict *);

struct pc_filter_ops {
    const char *name;
    unsigned abi;   /* PC_FILTER_ABI */
    unsigned flags; /* PC_FILTER_GATE */
    const cfg_opt_t *opts; /* the filter's section "name { ... }", CFG_END-terminated, or NULL */
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

extern const struct pc_filter_ops *const pc_filter_registry[];
const struct pc_filter_ops *pc_filter_find(const char *name);

#endif
