/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	verdict 3h - stages, actions and verdicts
 * DESCRIPTION
 *	A verdict is data, not a string: the action, the SMTP reply code, the
 *	RFC 3463 enhanced status code as numbers, a text, and who decided.
 *	Code 0 means "the default for this action at this stage"; one
 *	function (pc_verdict_finish) fills those defaults in.
 * SEE ALSO
 *	RFC 3463, RFC 5248 (enhanced status code registry), RFC 7372
 */
#ifndef PC_VERDICT_H
#define PC_VERDICT_H

#include <stdbool.h>
#include <stdint.h>

enum pc_stage {
    PC_STAGE_CONNECT,
    PC_STAGE_HELO,
    PC_STAGE_MAIL,
    PC_STAGE_RCPT,
    PC_STAGE_DATA,
    PC_STAGE_HEADER, /* once per header, txn->cur_header set */
    PC_STAGE_EOH,
    PC_STAGE_BODY, /* once per body chunk, txn->cur_body set */
    PC_STAGE_EOM,
    PC_STAGE_COUNT
};

enum pc_action {
    PC_CONTINUE,   /* no decision: next filter */
    PC_ACCEPT,     /* skip the remaining non-gate filters for this session/transaction */
    PC_TEMPFAIL,   /* 4xx */
    PC_REJECT,     /* 5xx */
    PC_DISCARD,    /* say 250, deliver nothing */
    PC_DISCONNECT, /* 421 and hang up */
    PC_ERROR,      /* the filter could not decide (DNS, Redis...): apply its on_error */
    PC_PENDING     /* answer later through pc_chain_resume() */
};

struct pc_enh {
    uint8_t cls; /* 2, 4 or 5; 0 = none */
    uint16_t subject, detail;
};

#define PC_VERDICT_TEXT 256

struct pc_verdict {
    enum pc_action action;
    int code;
    struct pc_enh enh;
    char text[PC_VERDICT_TEXT];
    const char *filter; /* deciding filter, static storage */
    const char *rule;   /* optional rule or symbol name, pool or static storage */
};

const char *pc_stage_name(enum pc_stage);
const char *pc_action_name(enum pc_action);
bool pc_stage_parse(const char *, enum pc_stage *);

/* pc_enh_parse - "5.7.1" to numbers; false on syntax error */
bool pc_enh_parse(const char *, struct pc_enh *);
/* pc_enh_format - numbers to text; buf >= 16 */
const char *pc_enh_format(const struct pc_enh *, char *buf, int size);

void pc_verdict_clear(struct pc_verdict *);
/* pc_verdict_set - action with optional code, enhanced code text ("5.7.1" or NULL) and text */
void pc_verdict_set(struct pc_verdict *, enum pc_action, int code, const char *enh,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* pc_verdict_finish - fill default code, enhanced code and text for the stage; CR/LF stripped */
void pc_verdict_finish(struct pc_verdict *, enum pc_stage);
/* pc_verdict_is_final - stops the chain (anything but CONTINUE/PENDING) */
bool pc_verdict_is_final(const struct pc_verdict *);

#endif
