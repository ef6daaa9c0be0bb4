/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	txnlog 3h - the Postfix-compatible lines of a transaction
 * DESCRIPTION
 *	Every front door logs refusals, deliveries and the end of a
 *	transaction through these functions, so that the lines have one
 *	format that pflogsumm(1) and fail2ban read as Postfix's:
 *
 *	  QID: reject: RCPT from name[addr]: 554 5.7.1 text; from=<f> to=<t>
 *	       proto=ESMTP helo=<h> filter=relay
 *	  QID: client=name[addr]
 *	  QID: from=<f>, size=N, nrcpt=N (queue active)
 *	  QID: to=<t>, relay=name[addr]:port, delay=0.2, delays=0.1/0.05/0/0.05,
 *	       dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)
 *
 *	Exactly one line per refusal the client hears. Peer-supplied values
 *	are escaped (lib/log.h) so that none can forge a field.
 */
#ifndef PC_TXNLOG_H
#define PC_TXNLOG_H

#include "policy/verdict.h"

struct pc_session;

/* pc_txnlog_stage - Postfix's name for a stage: CONNECT, EHLO, MAIL, RCPT, DATA, END-OF-MESSAGE */
const char *pc_txnlog_stage(const struct pc_session *, enum pc_stage);
/* pc_txnlog_refusal - one refusal; what is "reject", "discard" or "reject_warning" (dry run) */
void pc_txnlog_refusal(struct pc_session *, const char *what, const char *stage, int code,
                       const struct pc_enh *, const char *text, const char *filter,
                       const char *rule, const char *relay);
/* pc_txnlog_verdict - the same from a filter's verdict */
void pc_txnlog_verdict(struct pc_session *, const struct pc_verdict *, enum pc_stage,
                       const char *what);
/* pc_txnlog_delivered - the backend took the message: client, sender and one line per recipient */
void pc_txnlog_delivered(struct pc_session *, const char *prog, const char *relay, int code,
                         const struct pc_enh *, const char *text);
/* pc_txnlog_discarded - a discarded message (it reaches no backend) */
void pc_txnlog_discarded(struct pc_session *);
/* pc_txnlog_end - the transaction is over: JSON summary, metrics */
void pc_txnlog_end(struct pc_session *);

#endif
