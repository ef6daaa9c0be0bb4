/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	rules 3h - the operator rule language: parse, compile, evaluate
 * DESCRIPTION
 *	A rule set is compiled once per configuration generation from one or
 *	more rule files and is read-only afterwards, so sessions of several
 *	generations (and worker threads) may evaluate it at the same time.
 *	Every error is reported as "file:line:col: message" through a
 *	callback, so that a linter can list all of them, not just the first.
 *
 *	Evaluation reads the session through a small environment: the MIME
 *	view of the message is parsed on first use only (rules/mime.h).
 *
 *	Fail closed (issue 13): when a body-stage rule reads the MIME view and
 *	the message is past the depth or parts limit, the message gets
 *	mime_limit_action (552 5.3.4 by default) unless a rule decided first;
 *	rules still see the limit as the fact mime.limit.
 *
 *	Each message has a CPU budget for the header and body stages (the
 *	thread's CPU time, summed over both stages; every PCRE2 call is also
 *	bounded by its match limit): past it evaluation stops with PC_ERROR,
 *	which the chain turns into the filter's on_error (tempfail by default),
 *	and the fact rules.budget is set.
 * SEE ALSO
 *	portcullis.rules(5)
 */
#ifndef PC_RULES_H
#define PC_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy/verdict.h"
#include "rules/mime.h"

struct pc_session;
struct pc_rules;

/* Evaluation groups: the chain stages a rule can run at. */
enum pc_rstage {
    PC_RS_CONNECT,
    PC_RS_HELO,
    PC_RS_MAIL,
    PC_RS_RCPT,
    PC_RS_HEADER, /* at end of headers, all headers known */
    PC_RS_BODY,   /* at end of message, body and MIME parts known */
    PC_RS_COUNT
};

/* What a message past a MIME depth or parts limit gets (fail closed by default). */
enum pc_mime_limit_action { PC_MLA_REJECT, PC_MLA_TEMPFAIL, PC_MLA_ACCEPT };

struct pc_rules_limits {
    unsigned long match_limit; /* PCRE2 match limit, per call */
    unsigned long depth_limit; /* PCRE2 depth limit (interpreter only; JIT uses its stack) */
    struct pc_mime_limits mime;
    enum pc_mime_limit_action mime_limit_action;
    unsigned long cpu_budget_ms; /* CPU per message for the header and body stages; 0 = none */
};

/* pc_rules_errfn - one error, already formatted "file:line:col: message" */
typedef void pc_rules_errfn(void *arg, const char *msg);

/* pc_rules_compile - parse and compile files; NULL (and every error reported) on failure */
struct pc_rules *pc_rules_compile(const char *const *files, size_t nfiles,
                                  const struct pc_rules_limits *, pc_rules_errfn *, void *arg);
/* pc_rules_compile_buf - the same for one in-memory file (tests, fuzzing); name used in errors */
struct pc_rules *pc_rules_compile_buf(const char *name, const char *text, size_t len,
                                      const struct pc_rules_limits *, pc_rules_errfn *, void *arg);
void pc_rules_free(struct pc_rules *);
size_t pc_rules_count(const struct pc_rules *, enum pc_rstage); /* rules at a stage */

/* Per-session evaluation state: the lazily parsed MIME tree and a match buffer. */
struct pc_rules_run;
struct pc_rules_run *pc_rules_run_new(const struct pc_rules *);
void pc_rules_run_reset(struct pc_rules_run *); /* end of transaction: drop the MIME tree */
void pc_rules_run_free(struct pc_rules_run *);

/* pc_rules_eval - run one stage's rules (and, at PC_RS_BODY, the thresholds) */
enum pc_action pc_rules_eval(const struct pc_rules *, struct pc_rules_run *, struct pc_session *,
                             enum pc_rstage, struct pc_verdict *);

/* pc_rules_mime - the MIME view of the current message, parsed on first use */
const struct pc_mime *pc_rules_mime(const struct pc_rules *, struct pc_rules_run *,
                                    struct pc_session *);
/* pc_rules_needs_mime - does the body stage read the MIME view */
bool pc_rules_needs_mime(const struct pc_rules *);
/* pc_rules_mime_limits - the MIME limits to parse with (with what no rule reads skipped) */
const struct pc_mime_limits *pc_rules_mime_limits(const struct pc_rules *);
/* pc_rules_set_mime - hand over a view parsed elsewhere (a worker); the run owns it now */
void pc_rules_set_mime(struct pc_rules_run *, struct pc_session *, struct pc_mime *);
/* pc_rules_release - drop the message's MIME view and raw body once the verdict is known */
void pc_rules_release(struct pc_rules_run *);
/* pc_rules_stop - ask an evaluation on another thread to stop at its next check (or clear) */
void pc_rules_stop(struct pc_rules_run *, bool stop);
/* pc_rules_budget_left - CPU milliseconds the message has left (0: no budget; at least 1) */
unsigned long pc_rules_budget_left(const struct pc_rules *, const struct pc_rules_run *);
/* pc_rules_charge - add CPU nanoseconds spent for the message elsewhere to its budget */
void pc_rules_charge(struct pc_rules_run *, uint64_t ns);

#endif
