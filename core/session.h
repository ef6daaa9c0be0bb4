/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	session 3h - SMTP session and transaction, independent of the front door
 * DESCRIPTION
 *	A session is one client connection (or one milter connection, or one
 *	policy request): the client's identity, HELO, TLS and AUTH state, and
 *	the facts filters learnt about it. It owns at most one transaction,
 *	created at MAIL and freed at RSET, HELO/EHLO or after the end of data.
 *	Filters read these structures and write only through the functions
 *	below (facts, scores, header edits), so that every front door (the
 *	SMTP proxy, the milter, the policy server) sees the same results.
 */
#ifndef PC_SESSION_H
#define PC_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>

#include "core/msg.h"
#include "lib/addr.h"
#include "lib/cidr.h"
#include "core/verdict.h"

struct pc_pool;
struct pc_chain;
struct pc_conf;
struct pc_settings;
struct pc_services;
struct event;

#define PC_HOSTNAME_MAX 255

struct pc_fact {
    struct pc_fact *next;
    const char *name, *value;
};

struct pc_symbol {
    struct pc_symbol *next;
    const char *name, *filter;
    double score;
};

#define PC_RCPT_RELAY_OK 0x1 /* some filter authorised delivery to it */
#define PC_RCPT_ACCEPTED 0x2 /* chain and backend both said yes */

struct pc_rcpt {
    struct pc_mailbox mb;
    const char *params; /* ESMTP parameters as received (sanitised), to pass on */
    unsigned flags;
};

/* How a transaction ended, for its log lines and metrics (core/txnlog.h). */
struct pc_txn_outcome {
    const char *status; /* "sent", "rejected", "tempfail", "discarded"; NULL: abandoned */
    int code;
    struct pc_enh enh;
    const char *text, *relay, *filter, *rule; /* pool or static storage */
    unsigned rejected_rcpts;
    struct timespec t_mail, t_eod, t_eom; /* MAIL; final dot received; checks done */
};

struct pc_txn {
    struct pc_pool *pool;
    char id[24]; /* our queue id (lib/qid.h), logged everywhere */
    struct pc_mailbox from;
    const char *mail_params;
    size_t size_param; /* SIZE= or 0 */
    bool smtputf8, body_8bit;
    struct pc_rcpt *rcpts;
    size_t nrcpt, rcpt_cap, naccepted;
    struct pc_rcpt *cur_rcpt; /* during PC_STAGE_RCPT */
    struct pc_msg msg;
    const struct pc_header *cur_header; /* during PC_STAGE_HEADER */
    size_t cur_header_index;
    const char *cur_body; /* during PC_STAGE_BODY */
    size_t cur_body_len, cur_body_off;
    struct pc_fact *facts, **facts_tail;
    struct pc_symbol *symbols;
    double score;
    bool accepted; /* a filter said ACCEPT: non-gate filters skip the rest */
    bool discard;
    struct pc_txn_outcome out;
};

struct pc_client {
    struct sockaddr_storage sa;
    socklen_t salen;
    struct pc_ip ip;
    char addr[64]; /* printable; IPv4-mapped shown as IPv4 */
    unsigned port;
    char name[PC_HOSTNAME_MAX + 1]; /* verified name or "unknown" */
    char ptr[PC_HOSTNAME_MAX + 1];  /* unverified PTR name or "unknown" */
};

struct pc_chain_state; /* core/chain.h */
struct pc_session;

/* What a front door must answer for the chain runner. */
struct pc_door {
    const char *name; /* "smtp", "milter", "policy", "test" */
    /* A pending stage has finished; v is final or CONTINUE. */
    void (*stage_done)(struct pc_session *, enum pc_stage, struct pc_verdict *v);
};

struct pc_session {
    uint64_t id;
    char sid[24];
    struct pc_pool *pool;
    struct pc_services *svc;
    struct pc_settings *set; /* what the core reads from the generation it started under */
    struct pc_conf *conf;    /* the door's view of that generation (set->owner; opaque here) */
    const struct pc_chain *chain;
    const struct pc_door *door;
    void *door_ctx;
    struct pc_client client;
    char local_addr[64];
    unsigned local_port;
    const char *listener; /* its name */
    const char *helo;     /* sanitised, NULL before HELO/EHLO */
    bool esmtp;
    bool tls;
    const char *tls_info; /* "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)" */
    const char *auth_user;
    bool trusted; /* listener says the clients are trusted (submission behind AUTH) */
    struct pc_fact *facts, **facts_tail;
    struct pc_symbol *symbols;
    double score;
    bool accepted;
    struct pc_txn *txn;
    void **fctx;                /* per chain link filter context */
    struct pc_chain_state *run; /* chain runner state */
    /* Findings about the current HELO live in helo_pool and are undone at the next HELO; the
     * marks are where the session's lists and score stood before the first one. */
    struct pc_pool *helo_pool;
    struct pc_fact **helo_facts_mark;
    struct pc_symbol *helo_symbols_mark;
    double helo_score_mark;
    /* The engine (gateway/engine.h) holds CONNECT/HELO/MAIL refusals until RCPT when delay_reject
     * is on and logs them there: the chain must not log them when it decides (one line per
     * refusal). */
    bool holds_refusals;
};

/* pc_session_ids_share - number sessions from a counter shared by the instance's workers */
void pc_session_ids_share(unsigned long long *counter);
/* pc_session_new - a session holding a reference to its configuration generation (or NULL) */
struct pc_session *pc_session_new(struct pc_services *, struct pc_settings *, const char *listener,
                                  const struct pc_chain *, const struct pc_door *, void *door_ctx);
/* pc_session_set_client - fill client identity from a socket address */
void pc_session_set_client(struct pc_session *, const struct sockaddr *, socklen_t);

/* pc_session_set_local - the address the client reached us on (local_addr, local_port) */
void pc_session_set_local(struct pc_session *, const struct sockaddr *);
/* pc_session_helo_reset - a new HELO/EHLO: forget what filters found about the previous one */
void pc_session_helo_reset(struct pc_session *);
/* pc_session_rewind - back to the state after the connect stage: no HELO, none of its findings
 * (after STARTTLS, RFC 3207 4.2); findings added next are the session's until the next HELO */
void pc_session_rewind(struct pc_session *);
struct pc_txn *pc_txn_new(struct pc_session *);
struct pc_rcpt *pc_txn_add_rcpt(struct pc_txn *, const struct pc_mailbox *, const char *params);

/* Facts: named findings that rules and other filters read ("spf" = "pass"). */
void pc_fact_add(struct pc_session *, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *pc_fact_get(const struct pc_session *, const char *name);
/* pc_fact_next - iterate values of a multi-valued fact; start with prev = NULL */
const struct pc_fact *pc_fact_next(const struct pc_session *, const char *name,
                                   const struct pc_fact *prev);

/* Scores: named symbols with weights; policy maps the total to an action. */
void pc_score_add(struct pc_session *, const char *filter, const char *symbol, double score);
double pc_score_total(const struct pc_session *);

/* Header edits on the current transaction's message. */
void pc_header_add(struct pc_session *, const char *name, const char *value);
void pc_header_remove(struct pc_session *, size_t index);

#endif
