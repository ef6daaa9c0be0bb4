/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	engine 3 - the transaction engine every door drives
 * DESCRIPTION
 *	A door (the SMTP proxy, "portcullis test", later milter and policy
 *	doors) owns syntax, I/O and reply writing; the engine owns the
 *	rules of a transaction: the filter chain per step, delay_reject (the
 *	one holder of refusals kept until RCPT), discard, relay-required,
 *	the accepted-recipient count, the size and header limits, the
 *	end-of-message stage sequence and the Received header.
 *
 *	Each entry point returns the step's outcome, or PC_PENDING: then the
 *	engine calls the door's done function with the same outcome later
 *	(never from inside the entry point). Outcomes:
 *	PC_CONTINUE   go on (MAIL, RCPT: to the backend; EOM: deliver);
 *	PC_ACCEPT     accepted here, no backend (discarded or held MAIL,
 *	              discarded RCPT, already counted);
 *	PC_DISCARD    EOM only: the message is discarded (already logged);
 *	else          a refusal in v for the door to reply.
 *	The door installs pc_engine_door_done as its pc_door.stage_done and
 *	passes the engine as the session's door_ctx.
 * SEE ALSO
 *	RFC 5321, Postfix smtpd_delay_reject
 */
#ifndef PC_GATEWAY_ENGINE_H
#define PC_GATEWAY_ENGINE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/session.h"

/* What the door's content decoder saw (input to pc_engine_eom). */
#define PC_ENG_LONG_LINE 0x1 /* a line over limits.max_line_length */
#define PC_ENG_BARE_NL   0x2 /* bare CR or LF */
#define PC_ENG_NUL       0x4 /* NUL bytes (left out of the lines) */

/* A step finished after PC_PENDING: stage is the step's entry stage (EOM for the message). */
typedef void pc_engine_done_fn(void *arg, enum pc_stage stage, enum pc_action a,
                               struct pc_verdict *v);

struct pc_engine {
    struct pc_session *s;
    const struct pc_conf *conf;
    pc_engine_done_fn *done;
    void *arg;
    bool discard_all;           /* a connect or HELO stage said discard */
    bool too_big;               /* the content passed limits.max_message_size */
    unsigned eom_flags;         /* PC_ENG_* of the message */
    struct pc_verdict held;     /* a connect/HELO refusal held until RCPT */
    struct pc_verdict held_txn; /* a MAIL refusal held until RCPT */
    bool screened;              /* held by the door (postscreen enforce): MAIL stays here */
};

/* pc_engine_init - bind an engine to a session (sets the session's refusal holding) */
void pc_engine_init(struct pc_engine *, struct pc_session *, pc_engine_done_fn *, void *arg);
/* pc_engine_hold - the door refuses this session at every RCPT (postscreen's enforce): its
 * MAIL is answered here, without the filters or the backend; an earlier hold stays first */
void pc_engine_hold(struct pc_engine *, const struct pc_verdict *);
/* pc_engine_door_done - the chain's resume for a door driven by an engine (door_ctx = engine) */
void pc_engine_door_done(struct pc_session *, enum pc_stage, struct pc_verdict *);
/* pc_engine_connect - the connect stage: CONTINUE to greet, REJECT to refuse, else hang up */
enum pc_action pc_engine_connect(struct pc_engine *, struct pc_verdict *);
/* pc_engine_helo - the HELO stage (s->helo and s->esmtp set by the door) */
enum pc_action pc_engine_helo(struct pc_engine *, struct pc_verdict *);
/* pc_engine_mail - the MAIL stage (s->txn and its sender set by the door) */
enum pc_action pc_engine_mail(struct pc_engine *, struct pc_verdict *);
/* pc_engine_rcpt - held refusals, the RCPT stage and relay-required for t->cur_rcpt */
enum pc_action pc_engine_rcpt(struct pc_engine *, struct pc_verdict *);
/* pc_engine_rcpt_accepted - the backend took t->cur_rcpt: count it */
void pc_engine_rcpt_accepted(struct pc_engine *);
/* pc_engine_data_ready - false (and a refusal in v) when no recipient was accepted */
bool pc_engine_data_ready(struct pc_engine *, struct pc_verdict *);
/* pc_engine_data - the DATA stage: CONTINUE to take the content */
enum pc_action pc_engine_data(struct pc_engine *, struct pc_verdict *);
/* pc_engine_line - one content line into the spool, within limits.max_message_size */
int pc_engine_line(struct pc_engine *, const char *line, size_t len);
/* pc_engine_lines - whole CRLF-ended lines that need no decoding (pc_data's block), as
 * pc_engine_line for each */
int pc_engine_lines(struct pc_engine *, const char *p, size_t n);
/* pc_engine_eom - limits, then the header, body and end-of-message stages */
enum pc_action pc_engine_eom(struct pc_engine *, unsigned flags, struct pc_verdict *);
/* pc_engine_received - our Received header for the message (RFC 5321 4.4) */
char *pc_engine_received(struct pc_engine *);
/* pc_engine_txn_end - the transaction is over: forget its held refusal and limits */
void pc_engine_txn_end(struct pc_engine *);

#endif
