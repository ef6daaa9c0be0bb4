/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	backend 3h - the connection to the MTA behind us (or the Maildir)
 * DESCRIPTION
 *	One backend per client session, opened lazily at the first MAIL and
 *	reused for later transactions. Every operation answers through the
 *	session's callback with a pc_reply: the backend's own reply, or one
 *	we made up when the backend could not be reached, timed out or went
 *	away (local = true; always 4xx, so that the client retries).
 *
 *	The callback is never called from inside the call that started the
 *	operation. After pc_backend_free() it is never called again.
 */
#ifndef PC_BACKEND_H
#define PC_BACKEND_H

#include <stdbool.h>

#include "gateway/smtp_proto.h"

struct pc_session;
struct pc_backend;
struct pc_backend_conf;

struct pc_backend_result {
    struct pc_reply reply;
    bool local;        /* made up by us: connection trouble */
    const char *relay; /* "name[addr]:port" of the backend that answered */
};

typedef void pc_backend_cb(void *arg, struct pc_backend_result *);

#define PC_EXT_PIPELINING 0x01
#define PC_EXT_SIZE       0x02
#define PC_EXT_8BITMIME   0x04
#define PC_EXT_SMTPUTF8   0x08
#define PC_EXT_DSN        0x10
#define PC_EXT_XCLIENT    0x20
#define PC_EXT_XFORWARD   0x40
#define PC_EXT_STARTTLS   0x80

struct pc_backend *pc_backend_new(struct pc_session *, const struct pc_backend_conf *,
                                  pc_backend_cb *, void *arg);
/* pc_backend_open - connect (with fail-over), greet, pass the client identity */
void pc_backend_open(struct pc_backend *);
/* pc_backend_mail, pc_backend_rcpt - one command of the transaction, as parsed values: the
 * mailbox and the client's ESMTP parameters; the backend writes the line, leaving out the
 * parameters it did not offer (AUTH= never passes). MAIL opens the connection when needed. */
void pc_backend_mail(struct pc_backend *, const struct pc_mailbox *from,
                     const struct pc_param *params, size_t nparams);
void pc_backend_rcpt(struct pc_backend *, const struct pc_mailbox *to,
                     const struct pc_param *params, size_t nparams);
/* pc_backend_data - DATA, then the transaction's message with this Received header */
void pc_backend_data(struct pc_backend *, const char *received);
bool pc_backend_ready(const struct pc_backend *);
unsigned pc_backend_ext(const struct pc_backend *);
/* pc_backend_known_ext - what this backend offered last time (0 while unknown: offer only what
 * is safe) */
unsigned pc_backend_known_ext(const struct pc_backend_conf *);
void pc_backend_free(struct pc_backend *);

struct event_base;
struct pc_conf;
/* pc_backend_generation - a configuration generation starts serving: QUIT the idle pooled
 * connections of the previous one and probe each backend's EHLO capabilities */
void pc_backend_generation(struct event_base *, struct pc_conf *);
/* pc_backend_probing - capability probes still running */
bool pc_backend_probing(void);

#endif
