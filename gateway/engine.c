/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	engine 3 - the transaction engine every door drives
 * DESCRIPTION
 *	The rules of a transaction, once, for every door (see engine.h).
 *	Each step runs its filter stage, then its "finish" function turns
 *	the chain's verdict into the step's outcome; a pending stage comes
 *	back through pc_engine_door_done to the same finish function, so a
 *	rule cannot differ between the quick and the slow path.
 *
 *	delay_reject (Postfix's smtpd_delay_reject): a refusal at connect,
 *	HELO or MAIL is held here and answers every RCPT of the session (or
 *	of the transaction, for MAIL), so that the log and the client see
 *	who was refused. The earliest refusal speaks first.
 * SEE ALSO
 *	RFC 5321 3.3, 4.4 (Received), RFC 6531 3.7.3, RFC 1870
 */
#include "gateway/engine.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/filter.h"
#include "gateway/conf.h"
#include "core/txnlog.h"
#include "lib/log.h"
#include "lib/pool.h"
#include "core/chain.h"

static enum pc_action eom_run(struct pc_engine *, enum pc_stage done, struct pc_verdict *);

/* pc_engine_init - bind an engine to a session */
void pc_engine_init(struct pc_engine *e, struct pc_session *s, pc_engine_done_fn *done, void *arg)
{
    memset(e, 0, sizeof(*e));
    e->s = s;
    e->conf = s->conf;
    e->done = done;
    e->arg = arg;
    /* The chain leaves the log line of a held refusal to the RCPT that answers with it. */
    s->holds_refusals = true;
}

/* holdable - may this refusal wait until RCPT (delay_reject) */
static bool holdable(const struct pc_engine *e, const struct pc_verdict *v)
{
    return e->conf->delay_reject && (v->action == PC_REJECT || v->action == PC_TEMPFAIL);
}

/* held_or_continue - discard and held refusals let the session go on; a refusal already
 * held (connect's, when HELO refuses too) stays: the earliest refusal speaks first */
static enum pc_action held_or_continue(struct pc_engine *e, struct pc_verdict *v)
{
    if (v->action == PC_DISCARD)
        e->discard_all = true;
    else if (v->action != PC_CONTINUE && holdable(e, v)) {
        if (!e->held.action)
            e->held = *v;
    } else if (v->action != PC_CONTINUE)
        return v->action;
    return PC_CONTINUE;
}

/* connect_finish - as HELO; a temporary refusal of the session is a 421 (RFC 5321 3.8) */
static enum pc_action connect_finish(struct pc_engine *e, struct pc_verdict *v)
{
    enum pc_action a = held_or_continue(e, v);

    if (a == PC_TEMPFAIL || a == PC_DISCONNECT)
        v->code = 421;
    return a;
}

/* helo_finish - as connect; a refused HELO leaves the session without one */
static enum pc_action helo_finish(struct pc_engine *e, struct pc_verdict *v)
{
    enum pc_action a = held_or_continue(e, v);

    if (a != PC_CONTINUE)
        e->s->helo = NULL;
    return a;
}

/* mail_finish - discard and held refusals take the sender here, without the backend */
static enum pc_action mail_finish(struct pc_engine *e, struct pc_verdict *v)
{
    struct pc_txn *t = e->s->txn;

    if (v->action == PC_DISCARD || (v->action == PC_CONTINUE && e->discard_all)) {
        t->discard = true;
        return PC_ACCEPT;
    }
    if (v->action != PC_CONTINUE && holdable(e, v)) {
        e->held_txn = *v;
        return PC_ACCEPT;
    }
    return v->action;
}

/* rcpt_finish - relay-required, discard, counting */
static enum pc_action rcpt_finish(struct pc_engine *e, struct pc_verdict *v)
{
    struct pc_txn *t = e->s->txn;
    struct pc_rcpt *r = t->cur_rcpt;

    if (v->action == PC_DISCARD)
        t->discard = true;
    else if (v->action != PC_CONTINUE)
        return v->action;
    if (!(r->flags & PC_RCPT_RELAY_OK)) {
        /* No filter authorised this recipient: an empty chain relays nothing. */
        pc_verdict_set(v, PC_REJECT, 554, "5.7.1", "<%s>: Relay access denied", r->mb.addr);
        pc_txnlog_refusal(e->s, "reject", "RCPT", 554, &v->enh, v->text, "core", NULL, NULL);
        return PC_REJECT;
    }
    if (t->discard) {
        pc_engine_rcpt_accepted(e);
        return PC_ACCEPT;
    }
    return PC_CONTINUE;
}

/* data_finish - discard marks the transaction */
static enum pc_action data_finish(struct pc_engine *e, struct pc_verdict *v)
{
    if (v->action == PC_DISCARD) {
        e->s->txn->discard = true;
        return PC_CONTINUE;
    }
    return v->action;
}

/* eom_finish - the message stages are over: deliver, discard or refuse */
static enum pc_action eom_finish(struct pc_engine *e, struct pc_verdict *v)
{
    if (v->action == PC_DISCARD || (v->action == PC_CONTINUE && e->s->txn->discard)) {
        pc_txnlog_discarded(e->s);
        v->action = PC_DISCARD;
        return PC_DISCARD;
    }
    return v->action;
}

/* finish - a step's outcome from its stage's verdict */
static enum pc_action finish(struct pc_engine *e, enum pc_stage st, struct pc_verdict *v)
{
    switch (st) {
    case PC_STAGE_CONNECT:
        return connect_finish(e, v);
    case PC_STAGE_HELO:
        return helo_finish(e, v);
    case PC_STAGE_MAIL:
        return mail_finish(e, v);
    case PC_STAGE_RCPT:
        return rcpt_finish(e, v);
    case PC_STAGE_DATA:
        return data_finish(e, v);
    default:
        return eom_finish(e, v);
    }
}

/* step - run one stage; its outcome now, or PC_PENDING and later through the door's done */
static enum pc_action step(struct pc_engine *e, enum pc_stage st, struct pc_verdict *v)
{
    if (pc_chain_run(e->s, st, v) == PC_PENDING)
        return PC_PENDING;
    return finish(e, st, v);
}

/* pc_engine_door_done - a pending stage finished: finish the step, tell the door */
void pc_engine_door_done(struct pc_session *s, enum pc_stage st, struct pc_verdict *v)
{
    struct pc_engine *e = s->door_ctx;
    enum pc_action a;

    if (st >= PC_STAGE_HEADER)
        a = v->action == PC_CONTINUE ? eom_run(e, st, v) : eom_finish(e, v);
    else
        a = finish(e, st, v);
    if (a != PC_PENDING)
        e->done(e->arg, st >= PC_STAGE_HEADER ? PC_STAGE_EOM : st, a, v);
}

/* pc_engine_connect - the connect stage */
enum pc_action pc_engine_connect(struct pc_engine *e, struct pc_verdict *v)
{
    return step(e, PC_STAGE_CONNECT, v);
}

/* pc_engine_helo - the HELO stage; what filters found about an earlier HELO is gone */
enum pc_action pc_engine_helo(struct pc_engine *e, struct pc_verdict *v)
{
    pc_session_helo_reset(e->s);
    return step(e, PC_STAGE_HELO, v);
}

/* pc_engine_hold - a refusal of the door's, held until RCPT whatever delay_reject says */
void pc_engine_hold(struct pc_engine *e, const struct pc_verdict *v)
{
    e->screened = true;
    if (!e->held.action)
        e->held = *v;
}

/* pc_engine_mail - the MAIL stage; a screened session's sender is taken here (postscreen's
 * answer too): the backend never sees a transaction that cannot succeed */
enum pc_action pc_engine_mail(struct pc_engine *e, struct pc_verdict *v)
{
    if (e->screened) {
        pc_verdict_clear(v);
        return PC_ACCEPT;
    }
    return step(e, PC_STAGE_MAIL, v);
}

/* pc_engine_rcpt - a held refusal answers first, else the RCPT stage */
enum pc_action pc_engine_rcpt(struct pc_engine *e, struct pc_verdict *v)
{
    const struct pc_verdict *h = e->held.action       ? &e->held
                                 : e->held_txn.action ? &e->held_txn
                                                      : NULL;

    if (h) {
        *v = *h;
        /* The one line for this refusal (the chain did not log it when it decided). */
        pc_txnlog_verdict(e->s, v, PC_STAGE_RCPT, "reject");
        return v->action;
    }
    return step(e, PC_STAGE_RCPT, v);
}

/* pc_engine_rcpt_accepted - count the current recipient */
void pc_engine_rcpt_accepted(struct pc_engine *e)
{
    struct pc_txn *t = e->s->txn;

    t->cur_rcpt->flags |= PC_RCPT_ACCEPTED;
    t->naccepted++;
}

/* pc_engine_data_ready - DATA needs an accepted recipient (RFC 5321 3.3) */
bool pc_engine_data_ready(struct pc_engine *e, struct pc_verdict *v)
{
    const struct pc_txn *t = e->s->txn;

    if (t->naccepted > 0)
        return true;
    if (t->nrcpt)
        pc_verdict_set(v, PC_REJECT, 554, "5.5.1", "Error: no valid recipients");
    else
        pc_verdict_set(v, PC_REJECT, 503, "5.5.1", "Error: need RCPT command");
    return false;
}

/* pc_engine_data - the DATA stage */
enum pc_action pc_engine_data(struct pc_engine *e, struct pc_verdict *v)
{
    e->too_big = false;
    e->eom_flags = 0;
    return step(e, PC_STAGE_DATA, v);
}

/* pc_engine_line - a content line, refused past limits.max_message_size (RFC 1870) */
int pc_engine_line(struct pc_engine *e, const char *line, size_t len)
{
    struct pc_txn *t = e->s->txn;

    if (e->too_big)
        return 0;
    if (t->msg.size + len + 2 > e->conf->limits.max_message_size) {
        e->too_big = true;
        return 0;
    }
    return pc_msg_line(&t->msg, line, len);
}

/* pc_engine_lines - whole clean lines (pc_data's block); line by line near the size limit */
int pc_engine_lines(struct pc_engine *e, const char *p, size_t n)
{
    struct pc_txn *t = e->s->txn;

    if (e->too_big)
        return 0;
    if (t->msg.size + n <= e->conf->limits.max_message_size)
        return pc_msg_lines(&t->msg, p, n);
    while (n > 0) {
        const char *lf = memchr(p, '\n', n);
        size_t len = lf ? (size_t)(lf - p) + 1 : n;
        if (len < 2 || pc_engine_line(e, p, len - 2) < 0)
            return -1;
        p += len;
        n -= len;
    }
    return 0;
}

/* eom_limits - a refusal the message's bytes earn before any filter sees it, or NULL */
static const char *eom_limits(struct pc_engine *e, unsigned flags, int *code, const char **enh)
{
    struct pc_txn *t = e->s->txn;

    *code = 552, *enh = "5.3.4";
    if (pc_msg_finish(&t->msg) < 0 || t->msg.io_error)
        return *code = 451, *enh = "4.3.0", "Error: queue file write error";
    if (e->too_big)
        return "Error: message file too big";
    if (t->msg.header_overflow)
        return "Error: message header size or count exceeds limit";
    if (flags & PC_ENG_LONG_LINE)
        return "Error: message line too long";
    *code = 550, *enh = "5.6.0";
    if ((flags & PC_ENG_BARE_NL) && e->conf->bare_newline == PC_BARE_REJECT)
        return "Error: bare CR or LF in message; lines must end with CR LF (RFC 5321 2.3.8)";
    if ((flags & PC_ENG_NUL) && !e->conf->nul_strip)
        return "Error: NUL character in message content";
    return NULL;
}

/* pc_engine_eom - the final dot: limits, then the message stages */
enum pc_action pc_engine_eom(struct pc_engine *e, unsigned flags, struct pc_verdict *v)
{
    struct pc_txn *t = e->s->txn;
    const char *enh;
    int code;
    const char *why = eom_limits(e, flags, &code, &enh);

    e->eom_flags = flags;
    if (why) {
        pc_verdict_set(v, code / 100 == 4 ? PC_TEMPFAIL : PC_REJECT, code, enh, "%s", why);
        pc_txnlog_refusal(e->s, "reject", "END-OF-MESSAGE", code, &v->enh, why, "core", NULL, NULL);
        return v->action;
    }
    if (flags & PC_ENG_BARE_NL)
        pc_info("%s: bare CR or LF in message normalised to CR LF", t->id);
    if (flags & PC_ENG_NUL)
        pc_info("%s: NUL characters removed from the message", t->id);
    return eom_run(e, PC_STAGE_DATA, v);
}

/* eom_run - the message stages in order after "done" */
static enum pc_action eom_run(struct pc_engine *e, enum pc_stage done, struct pc_verdict *v)
{
    for (enum pc_stage st = done + 1; st <= PC_STAGE_EOM; st++) {
        if (st == PC_STAGE_DATA)
            continue;
        enum pc_action a = pc_chain_run(e->s, st, v);
        if (a == PC_PENDING)
            return PC_PENDING;
        if (a != PC_CONTINUE)
            return eom_finish(e, v);
    }
    pc_verdict_clear(v);
    return eom_finish(e, v);
}

/* pc_engine_received - our trace field (RFC 5321 4.4) */
char *pc_engine_received(struct pc_engine *e)
{
    struct pc_session *s = e->s;
    struct pc_txn *t = s->txn;
    char date[64], forc[PC_PATH_MAX + 16] = "";
    time_t now = time(NULL);
    struct tm tm;

    localtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S %z", &tm);
    if (t->naccepted == 1)
        for (size_t i = 0; i < t->nrcpt; i++)
            if (t->rcpts[i].flags & PC_RCPT_ACCEPTED)
                snprintf(forc, sizeof(forc), "\r\n\tfor <%s>", t->rcpts[i].mb.addr);
    /* The protocol and cipher, where Postfix writes them: for the reader, not for a check. */
    char tls[200] = "";
    if (s->tls && s->tls_info)
        snprintf(tls, sizeof(tls), "\r\n\t(using %s)", s->tls_info);
    return pc_pool_printf(t->pool,
                          "Received: from %s (%s [%s])%s\r\n\tby %s (portcullis) with %s%s%s id "
                          "%s%s;\r\n\t%s\r\n",
                          s->helo ? s->helo : "unknown", s->client.name, s->client.addr, tls,
                          e->conf->hostname, t->smtputf8 ? "UTF8" : "",
                          /* RFC 6531 3.7.3: UTF8SMTP, UTF8SMTPA, UTF8SMTPS, UTF8SMTPSA */
                          t->smtputf8 ? "SMTP"
                          : s->esmtp  ? "ESMTP"
                                      : "SMTP",
                          s->tls ? (s->auth_user ? "SA" : "S") : (s->auth_user ? "A" : ""), t->id,
                          forc, date);
}

/* pc_engine_txn_end - forget what belonged to the transaction */
void pc_engine_txn_end(struct pc_engine *e)
{
    pc_verdict_clear(&e->held_txn);
    e->too_big = false;
    e->eom_flags = 0;
}
