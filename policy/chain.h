/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	chain 3h - run a listener's filters over a stage
 * DESCRIPTION
 *	pc_chain_run() walks the chain's links for one stage (for HEADER and
 *	BODY: for every header and body chunk), stopping at the first final
 *	verdict. It returns that verdict's action synchronously, or
 *	PC_PENDING when a filter is waiting; the door's stage_done() then
 *	delivers the outcome later and the door must not read from its client
 *	meanwhile. A pending link has a timer: when it fires, the filter is
 *	cancelled and its on_error applies.
 *
 *	Verdicts are finished here (default codes, class agreement), PC_ERROR
 *	is mapped through on_error, dry-run turns refusals into log lines,
 *	and every decision is logged once with the deciding filter.
 */
#ifndef PC_CHAIN_H
#define PC_CHAIN_H

#include <stdbool.h>
#include <stddef.h>

#include "filters/filter.h"

enum pc_on_error { PC_ONERR_TEMPFAIL, PC_ONERR_ACCEPT, PC_ONERR_REJECT };

struct pc_chain_link {
    const struct pc_filter_ops *ops;
    void *conf;
    unsigned timeout_ms;
    enum pc_on_error on_error;
};

struct pc_chain {
    struct pc_chain_link *links;
    size_t n;
    bool dry_run; /* log refusals, enforce nothing */
};

int pc_chain_attach(struct pc_session *);
void pc_chain_reset(struct pc_session *);  /* end of transaction: filters' reset() */
void pc_chain_detach(struct pc_session *); /* cancels a pending link first */

enum pc_action pc_chain_run(struct pc_session *, enum pc_stage, struct pc_verdict *out);
/* pc_chain_resume - a pending filter's answer; call from a loop callback, never from the hook */
void pc_chain_resume(struct pc_session *, struct pc_verdict *);
bool pc_chain_pending(const struct pc_session *);

bool pc_on_error_parse(const char *, enum pc_on_error *);

#endif
