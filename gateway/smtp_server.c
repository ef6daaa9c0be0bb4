/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	smtp_server 3 - the SMTP front door: one client connection
 * DESCRIPTION
 *	A command table drives the session: each verb is checked (syntax,
 *	sequence, limits), then its filter stage runs, then it proceeds (to
 *	the backend, or to a reply). Filters never see SMTP syntax errors.
 *	While a stage or the backend is pending, reading stops; the pending
 *	work's completion resumes the state machine and the input loop.
 *
 *	Before-queue promise: the client hears 250 for a message only after
 *	the backend said 250 for it. Every failure on our side or the
 *	backend's after MAIL is a 4xx.
 *
 *	A session is never freed inside one of its own callbacks: closing
 *	marks it and a zero-timeout event frees it from the loop.
 *
 *	End of input from the client (a half-close: Exim pipelines QUIT after
 *	the final dot and shuts down its side) means "no more commands": every
 *	complete command received is still served and answered, then we
 *	close. A message whose final dot never came is abandoned.
 *
 *	NUL never reaches the backend: the message is refused (550 5.6.0) or,
 *	with nul = "strip", delivered without it. With an LMTP backend a
 *	transaction has one recipient (452 4.5.3 to the rest), so that the
 *	single reply to the data is exact; see "LMTP memo" below.
 *
 *	Time limits on the client are deadlines, not idle timers (RFC 5321
 *	4.5.3.2): a command line must be complete within timeouts.command of
 *	the moment we are ready for it, however its bytes are spaced. Message
 *	content has timeouts.data after the 354, and every byte received buys
 *	1/min_data_rate seconds more, never more than timeouts.data ahead: a
 *	client must keep up the minimum rate, and may never be silent longer
 *	than timeouts.data. While a filter or the backend works, the client's
 *	clock stops (those have deadlines of their own).
 *
 *	What one command needs lives in fixed buffers (the HELO name) or in
 *	the transaction's pool, so a session does not grow with the number
 *	of commands; limits.max_commands and limits.max_junk_commands end a
 *	session that only talks (421 4.7.0, like Postfix's junk command limit).
 * SEE ALSO
 *	RFC 5321, RFC 2920 (PIPELINING), RFC 1870 (SIZE), RFC 6531, RFC 3461
 */
#include "gateway/smtp_server.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "filters/filter.h"
#include "gateway/backend.h"
#include "gateway/bevio.h"
#include "gateway/conf.h"
#include "gateway/proxy_in.h"
#include "gateway/session.h"
#include "gateway/smtp_proto.h"
#include "gateway/txnlog.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/pool.h"
#include "policy/chain.h"

enum sm_state { SM_CONNECT, SM_CMD, SM_DATA, SM_CLOSING };

/* What a client may have buffered while we are busy: a few pipelined command groups. */
#define PC_SMTP_READ_MAX 131072
/* Replies not yet taken by the client: past this we stop reading commands, so a client that
 * pipelines and never reads cannot make us buffer without bound. */
#define PC_SMTP_OUT_MAX 65536

struct pc_smtp {
    struct pc_session *s;
    const struct pc_listener_conf *lc;
    const struct pc_conf *conf;
    struct bufferevent *bev;
    struct pc_backend *be;
    bool be_in_txn; /* the backend has our MAIL for the open transaction */
    bool be_lost;   /* the backend connection of the open transaction broke: only 4xx now */
    enum pc_verb be_wait; /* which command's backend reply we wait for */
    enum sm_state state;
    bool busy;    /* a stage or the backend is pending: do not read */
    bool refused; /* greeted with 554: only QUIT is served (RFC 5321 3.1) */
    bool closing;
    bool too_big;
    bool discard_all;
    struct pc_verdict txn_delayed; /* a MAIL-stage refusal held until RCPT */
    unsigned errors, ncmds;
    unsigned junk;                  /* NOOP, RSET, VRFY, HELP... since the last delivered message */
    char helo[PC_HOSTNAME_MAX + 1]; /* s->helo points here: no allocation per HELO */
    struct event *deadline_ev;      /* the client's deadline (command line, content, flush) */
    uint64_t deadline;              /* when it expires, monotonic milliseconds */
    unsigned counts[PC_VERB_FORBIDDEN + 1];
    bool skipping_line;
    bool in_input; /* inside process_input(): resume() must not recurse into it */
    bool out_full; /* our replies are backed up: input waits for on_write */
    bool eof;      /* the client shut down its sending side: serve what it sent, then close */
    bool not_error;         /* the reply being written is flow control, not a client error */
    unsigned lmtp_deferred; /* RCPTs of this transaction told 452 (one recipient per LMTP txn) */
    struct timespec be_t0;  /* the command the backend is answering was sent */
    struct pc_data data;
    struct pc_path_args pa;
    struct event *free_ev;
    pc_smtp_closed_fn *on_closed;
    void *closed_arg;
    struct pc_buf out;
};

static void process_input(struct pc_smtp *);
static void smtp_close(struct pc_smtp *);
static void eom_next(struct pc_smtp *, enum pc_stage done);
static void stage_done(struct pc_session *, enum pc_stage, struct pc_verdict *);
static void to_backend(struct pc_smtp *, enum pc_verb, const char *addr);

static const struct pc_door pc_smtp_door = {"smtp", stage_done};

static const char *const verb_names[] = {
    "unknown", "helo", "ehlo", "mail",     "rcpt", "data", "rset", "noop", "quit",
    "help",    "vrfy", "expn", "starttls", "auth", "bdat", "etrn", "obsolete", "forbidden"};

/* tv_ms - milliseconds to timeval */
static struct timeval tv_ms(unsigned ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

/* now_ms - monotonic milliseconds, for deadlines */
static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* deadline_at - the client must be done by this time (monotonic ms) */
static void deadline_at(struct pc_smtp *c, uint64_t at)
{
    uint64_t now = now_ms();
    struct timeval tv = tv_ms(at > now ? (unsigned)(at - now) : 0);

    c->deadline = at;
    evtimer_add(c->deadline_ev, &tv);
}

/* command_deadline - we are ready for the next command: it has timeouts.command to arrive */
static void command_deadline(struct pc_smtp *c)
{
    deadline_at(c, now_ms() + c->conf->timeouts.command);
}

/* data_credit - n content bytes arrived: 1/min_data_rate seconds each, at most timeouts.data
 * ahead of now, so neither a trickle nor credit saved up by a fast start keeps the session */
static void data_credit(struct pc_smtp *c, size_t n)
{
    uint64_t now = now_ms(), cap = now + c->conf->timeouts.data;
    uint64_t at = c->deadline + (uint64_t)n * 1000 / c->conf->limits.min_data_rate;

    if (at > cap)
        at = cap;
    if (at != c->deadline)
        deadline_at(c, at);
}

/* reply - the one place that writes a reply to the client */
static void reply(struct pc_smtp *c, int code, const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply_text(struct pc_smtp *c, int code, const struct pc_enh *e, const char *text)
{
    struct pc_reply_opts o = {.soft_bounce = c->conf->soft_bounce};

    if (c->closing || c->bev == NULL)
        return;
    pc_buf_reset(&c->out);
    int sent = pc_reply_format(&c->out, code, e, text, &o);
    pc_bev_write(c->bev, c->out.data, c->out.len);
    static const char *const cls[] = {"1xx", "1xx", "2xx", "3xx", "4xx", "5xx"};
    pc_metric_add(PC_M_REPLIES, cls[sent / 100 >= 1 && sent / 100 <= 5 ? sent / 100 : 0], NULL, 1);
    if (sent >= 400 && !c->not_error)
        c->errors++;
    if (sent == 421) {
        /* 421 means we are closing the transmission channel (RFC 5321 3.8). */
        smtp_close(c);
        return;
    }
    if (c->errors >= c->conf->limits.max_errors && sent >= 400) {
        pc_info("%s: too many errors from %s[%s]", c->s->sid, c->s->client.name,
                c->s->client.addr);
        struct pc_enh e2 = {4, 7, 0};
        pc_buf_reset(&c->out);
        pc_reply_format(&c->out, 421, &e2, "Error: too many errors", &o);
        pc_bev_write(c->bev, c->out.data, c->out.len);
        smtp_close(c);
    }
}

static void reply(struct pc_smtp *c, int code, const char *enh, const char *fmt, ...)
{
    char text[1024];
    struct pc_enh e;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    reply_text(c, code, enh && pc_enh_parse(enh, &e) ? &e : NULL, text);
}

/* reply_verdict - a filter's decision */
static void reply_verdict(struct pc_smtp *c, const struct pc_verdict *v)
{
    reply_text(c, v->code, &v->enh, v->text);
    if (v->action == PC_DISCONNECT)
        smtp_close(c);
}

/* reply_backend - relay the backend's reply; our default enhanced code when it sent none.
 * A backend's 421 closes the backend, not our client: it becomes 451 for this command. */
static void reply_backend(struct pc_smtp *c, const struct pc_backend_result *r, const char *dflt)
{
    struct pc_enh e;
    int code = r->reply.code == 421 ? 451 : r->reply.code;

    if (r->reply.enh.cls)
        e = r->reply.enh;
    else
        pc_enh_parse(dflt, &e);
    reply_text(c, code, &e, r->reply.text);
}

/* on_free - free the session from the loop, outside its callbacks */
static void on_free(evutil_socket_t fd, short what, void *arg)
{
    struct pc_smtp *c = arg;
    struct pc_ip ip = c->s->client.ip;
    char line[512];
    size_t o = 0;

    (void)fd, (void)what;
    for (int v = 1; v <= PC_VERB_FORBIDDEN && o < sizeof(line) - 40; v++)
        if (c->counts[v])
            o += (size_t)snprintf(line + o, sizeof(line) - o, " %s=%u", verb_names[v],
                                  c->counts[v]);
    line[o] = 0;
    pc_info("%s: disconnect from %s[%s]%s commands=%u", c->s->sid, c->s->client.name,
            c->s->client.addr, line, c->ncmds);
    pc_txnlog_end(c->s);
    pc_metric_add(PC_M_CONNECTIONS_ACTIVE, NULL, NULL, -1);
    pc_backend_free(c->be);
    pc_session_free(c->s);
    if (c->bev)
        bufferevent_free(c->bev);
    pc_data_free(&c->data);
    pc_buf_free(&c->out);
    event_free(c->free_ev);
    event_free(c->deadline_ev);
    pc_smtp_closed_fn *cb = c->on_closed;
    void *arg2 = c->closed_arg;
    free(c);
    if (cb)
        cb(arg2, &ip);
}

/* free_now - schedule the free */
static void free_now(struct pc_smtp *c)
{
    c->state = SM_CLOSING;
    c->closing = true;
    evtimer_del(c->deadline_ev);
    if (c->bev)
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    event_active(c->free_ev, 0, 0);
}

/* smtp_close - stop reading, flush what we said, then free */
static void smtp_close(struct pc_smtp *c)
{
    if (c->state == SM_CLOSING)
        return;
    c->state = SM_CLOSING;
    bufferevent_disable(c->bev, EV_READ);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (evbuffer_get_length(out) == 0) {
        free_now(c);
        return;
    }
    /* The client has timeouts.command to take what we said: a deadline, not an idle timer. */
    command_deadline(c);
    bufferevent_enable(c->bev, EV_WRITE);
}

/* txn_end - forget the transaction; the backend must not keep half of it */
static void txn_end(struct pc_smtp *c)
{
    if (c->be_in_txn) {
        /* Closing is simpler than a RSET round trip and can never deliver. */
        pc_backend_free(c->be);
        c->be = NULL;
        c->be_in_txn = false;
    }
    pc_txnlog_end(c->s);
    c->be_lost = false;
    pc_txn_free(c->s);
    pc_verdict_clear(&c->txn_delayed);
    c->too_big = false;
    c->lmtp_deferred = 0;
}

/*
 * LMTP memo. With an LMTP backend a transaction has one recipient; the others were told 452
 * and the client retries them. When that one recipient fails after the data, some clients
 * apply the DATA reply to the 452'd recipients too (Exim 4.96 bounces them all on a 5xx, and
 * defers them all on a 4xx, so they starve behind a broken mailbox retried first each time).
 * So in that case we answer 4xx and remember the backend's reply for (sender, recipient, SIZE);
 * the client's retry hears it at RCPT, where it concerns that recipient alone. An entry
 * answers one RCPT; entries are few, hashed, bounded in number and age.
 */
#define PC_LMTP_MEMO     1024
#define PC_LMTP_MEMO_TTL (24 * 3600)

struct lmtp_memo {
    uint64_t key;
    time_t when;
    int code;
    struct pc_enh enh;
    char text[256];
};

static struct lmtp_memo lmtp_memo[PC_LMTP_MEMO];

/* memo_key - FNV-1a of sender, recipient (case-folded) and the SIZE parameter */
static uint64_t memo_key(const char *from, const char *rcpt, size_t size)
{
    uint64_t h = 14695981039346656037ull;

    for (const char *p = from; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (const char *p = rcpt; *p; p++)
        h = (h ^ (unsigned char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p)) * 1099511628211ull;
    for (size_t i = 0; i < sizeof(size); i++)
        h = (h ^ ((size >> (8 * i)) & 0xff)) * 1099511628211ull;
    return h | 1; /* 0 marks a free slot */
}

/* memo_put - remember a recipient's failure after the data */
static void memo_put(uint64_t key, const struct pc_reply *r)
{
    struct lmtp_memo *m = &lmtp_memo[key % PC_LMTP_MEMO];

    m->key = key;
    m->when = time(NULL);
    m->code = r->code;
    m->enh = r->enh;
    pc_strlcpy(m->text, r->text, sizeof(m->text));
}

/* memo_take - copy out the remembered failure for this key and forget it; false if none */
static bool memo_take(uint64_t key, struct lmtp_memo *out)
{
    struct lmtp_memo *m = &lmtp_memo[key % PC_LMTP_MEMO];

    if (m->key != key || time(NULL) - m->when > PC_LMTP_MEMO_TTL)
        return false;
    *out = *m;
    m->key = 0;
    return true;
}

/* resume - the pending step is over: process what the client sent meanwhile */
static void resume(struct pc_smtp *c)
{
    c->busy = false;
    if (c->state == SM_CLOSING)
        return;
    command_deadline(c);
    if (!c->in_input)
        process_input(c);
}

/* wait_for - a stage or the backend is pending: stop processing input. Reading stays
 * enabled (toggling it costs two epoll_ctl calls per command); the read high watermark
 * bounds what a client can make us buffer meanwhile. The client's deadline stops while we
 * work: the backend and every filter have deadlines of their own. */
static void wait_for(struct pc_smtp *c)
{
    c->busy = true;
    evtimer_del(c->deadline_ev);
}

/* delayable - may this refusal wait until RCPT (Postfix's smtpd_delay_reject) */
static bool delayable(const struct pc_smtp *c, const struct pc_verdict *v)
{
    return c->conf->delay_reject && (v->action == PC_REJECT || v->action == PC_TEMPFAIL);
}

/* greet - after the connect stage */
static void greet(struct pc_smtp *c, struct pc_verdict *v)
{
    struct pc_session *s = c->s;
    char peek;
    int fd = bufferevent_getfd(c->bev);

    /* A client that talks before the greeting is not an SMTP client (RFC 5321 3.1). */
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0 ||
        recv(fd, &peek, 1, MSG_PEEK | MSG_DONTWAIT) == 1) {
        pc_info("%s: improper command pipelining: client %s[%s] talked before the greeting",
                s->sid, s->client.name, s->client.addr);
        reply(c, 554, "5.5.0", "Error: SMTP protocol synchronization");
        smtp_close(c);
        return;
    }
    c->state = SM_CMD;
    if (v->action == PC_CONTINUE || v->action == PC_DISCARD || delayable(c, v)) {
        if (v->action == PC_DISCARD)
            c->discard_all = true;
        else if (v->action != PC_CONTINUE)
            s->delayed = *v;
        reply(c, 220, NULL, "%s %s", c->conf->hostname, c->conf->banner);
    } else if (v->action == PC_REJECT) {
        reply_verdict(c, v);
        c->refused = true;
    } else {
        /* Tempfail or disconnect at connect: a 421 greeting closes the channel. */
        v->code = 421;
        reply_verdict(c, v);
        return;
    }
    resume(c);
}

/* path_ext - what the backend behind us offers, as far as we know (0 while unknown) */
static unsigned path_ext(const struct pc_smtp *c)
{
    return c->be && pc_backend_ready(c->be) ? pc_backend_ext(c->be)
                                            : pc_backend_known_ext(c->lc->backend);
}

/* ehlo_reply - our extensions (RFC 5321 4.1.1.1); SMTPUTF8 and DSN only when the backend
 * offers them, since we can honour neither ourselves (RFC 6531 3.4, RFC 3461 4) */
static void ehlo_reply(struct pc_smtp *c)
{
    char text[512];
    unsigned ext = path_ext(c);

    snprintf(text, sizeof(text),
             "%s\nPIPELINING\nSIZE %zu\n8BITMIME\nENHANCEDSTATUSCODES%s%s", c->conf->hostname,
             c->conf->limits.max_message_size,
             (c->conf->smtputf8 && (ext & PC_EXT_SMTPUTF8)) ? "\nSMTPUTF8" : "",
             (ext & PC_EXT_DSN) ? "\nDSN" : "");
    reply_text(c, 250, NULL, text);
}

/* helo_done - after the HELO stage */
static void helo_done(struct pc_smtp *c, struct pc_verdict *v, bool ehlo)
{
    if (v->action == PC_CONTINUE || v->action == PC_DISCARD) {
        if (v->action == PC_DISCARD)
            c->discard_all = true;
        if (ehlo)
            ehlo_reply(c);
        else
            reply(c, 250, NULL, "%s", c->conf->hostname);
    } else if (delayable(c, v)) {
        c->s->delayed = *v;
        if (ehlo)
            ehlo_reply(c);
        else
            reply(c, 250, NULL, "%s", c->conf->hostname);
    } else {
        c->s->helo = NULL;
        reply_verdict(c, v);
    }
}

/* cmd_helo - HELO and EHLO */
static void cmd_helo(struct pc_smtp *c, const struct pc_cmd *cmd, bool ehlo)
{
    struct pc_session *s = c->s;
    struct pc_verdict v;

    if (cmd->arg_len == 0) {
        reply(c, 501, "5.5.4", "Syntax: %s hostname", ehlo ? "EHLO" : "HELO");
        return;
    }
    txn_end(c);
    /* Keep the first word, printable and bounded: it goes into logs and Received. */
    size_t n = 0;
    while (n < cmd->arg_len && cmd->arg[n] != ' ')
        n++;
    pc_printable_copy(c->helo, (n > PC_HOSTNAME_MAX ? PC_HOSTNAME_MAX : n) + 1, cmd->arg, n);
    s->helo = c->helo;
    /* What filters found about the previous HELO no longer holds (RFC 5321 4.1.4). */
    pc_session_helo_reset(s);
    s->esmtp = ehlo;
    enum pc_action a = pc_chain_run(s, PC_STAGE_HELO, &v);
    if (a == PC_PENDING) {
        wait_for(c);
        return;
    }
    helo_done(c, &v, ehlo);
}

/* log_backend_refusal - the backend's refusal as the client hears it (see reply_backend) */
static void log_backend_refusal(struct pc_smtp *c, const char *stage,
                                const struct pc_backend_result *r, const char *dflt)
{
    struct pc_enh e;

    if (r->reply.enh.cls)
        e = r->reply.enh;
    else
        pc_enh_parse(dflt, &e);
    pc_txnlog_refusal(c->s, "reject", stage, r->reply.code == 421 ? 451 : r->reply.code, &e,
                      r->reply.text, r->local ? "core" : "backend", NULL, r->relay);
}

/* mail_backend_done - the backend answered our MAIL */
static void mail_backend_done(struct pc_smtp *c, struct pc_backend_result *r)
{
    if (r->reply.code / 100 == 2) {
        c->be_in_txn = true;
        reply_backend(c, r, "2.1.0");
    } else {
        log_backend_refusal(c, "MAIL", r, r->reply.code / 100 == 4 ? "4.0.0" : "5.0.0");
        reply_backend(c, r, r->reply.code / 100 == 4 ? "4.0.0" : "5.0.0");
        txn_end(c);
    }
}

/* mail_done - after the MAIL stage */
static void mail_done(struct pc_smtp *c, struct pc_verdict *v)
{
    struct pc_txn *t = c->s->txn;

    switch (v->action) {
    case PC_CONTINUE:
        break;
    case PC_DISCARD:
        t->discard = true;
        reply(c, 250, "2.1.0", "Ok");
        return;
    case PC_REJECT:
    case PC_TEMPFAIL:
        if (delayable(c, v)) {
            c->txn_delayed = *v;
            reply(c, 250, "2.1.0", "Ok");
            return;
        }
        reply_verdict(c, v);
        txn_end(c);
        return;
    default:
        reply_verdict(c, v);
        txn_end(c);
        return;
    }
    if (c->discard_all) {
        t->discard = true;
        reply(c, 250, "2.1.0", "Ok");
        return;
    }
    to_backend(c, PC_VERB_MAIL, t->from.addr);
}

/* to_backend - MAIL or RCPT with the client's parameters (the backend opens when needed) */
static void to_backend(struct pc_smtp *c, enum pc_verb verb, const char *addr)
{
    char line[PC_PATH_MAX + 32];

    snprintf(line, sizeof(line), "%s:<%s>", verb == PC_VERB_MAIL ? "MAIL FROM" : "RCPT TO",
             addr);
    c->be_wait = verb;
    clock_gettime(CLOCK_MONOTONIC, &c->be_t0);
    wait_for(c);
    pc_backend_command(c->be, line, c->pa.params, c->pa.nparams);
}

/* rcpt_refuse_delayed - a held connect/HELO/MAIL refusal answers this RCPT */
static bool rcpt_refuse_delayed(struct pc_smtp *c)
{
    /* The earliest refusal speaks first: the client's (connect, HELO) before the sender's. */
    const struct pc_verdict *v = c->s->delayed.action    ? &c->s->delayed
                                 : c->txn_delayed.action ? &c->txn_delayed
                                                         : NULL;

    if (v == NULL)
        return false;
    /* The one line for this refusal (the chain did not log it when it decided). */
    pc_txnlog_verdict(c->s, v, PC_STAGE_RCPT, "reject");
    reply_text(c, v->code, &v->enh, v->text);
    return true;
}

/* rcpt_done - after the RCPT stage */
static void rcpt_done(struct pc_smtp *c, struct pc_verdict *v)
{
    struct pc_txn *t = c->s->txn;
    struct pc_rcpt *r = t->cur_rcpt;

    if (v->action == PC_DISCARD) {
        t->discard = true;
    } else if (v->action != PC_CONTINUE) {
        reply_verdict(c, v);
        return;
    }
    if (!(r->flags & PC_RCPT_RELAY_OK)) {
        /* No filter authorised this recipient: an empty chain relays nothing. */
        char text[PC_PATH_MAX + 32];
        struct pc_enh e = {5, 7, 1};
        snprintf(text, sizeof(text), "<%s>: Relay access denied", r->mb.addr);
        pc_txnlog_refusal(c->s, "reject", "RCPT", 554, &e, text, "core", NULL, NULL);
        reply(c, 554, "5.7.1", "%s", text);
        return;
    }
    if (t->discard) {
        r->flags |= PC_RCPT_ACCEPTED;
        t->naccepted++;
        reply(c, 250, "2.1.5", "Ok");
        return;
    }
    to_backend(c, PC_VERB_RCPT, r->mb.addr);
}

/* rcpt_backend_done - the backend answered our RCPT */
static void rcpt_backend_done(struct pc_smtp *c, struct pc_backend_result *r)
{
    struct pc_txn *t = c->s->txn;

    if (r->reply.code / 100 == 2) {
        t->cur_rcpt->flags |= PC_RCPT_ACCEPTED;
        t->naccepted++;
        reply_backend(c, r, "2.1.5");
        return;
    }
    log_backend_refusal(c, "RCPT", r, r->reply.code / 100 == 4 ? "4.0.0" : "5.0.0");
    reply_backend(c, r, r->reply.code / 100 == 4 ? "4.0.0" : "5.0.0");
    if (r->local || r->reply.code == 421) {
        /* The backend connection of this transaction is gone: it cannot go on, and it never
         * moves to another connection. Later RCPTs and DATA hear 4xx (never 503, a 5xx for
         * our trouble) until the client ends the transaction. */
        c->be_in_txn = false;
        c->be_lost = true;
        pc_backend_free(c->be);
        c->be = NULL;
    }
}

/* received_header - our trace field (RFC 5321 4.4) */
static char *received_header(struct pc_smtp *c)
{
    struct pc_session *s = c->s;
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
    return pc_pool_printf(t->pool,
                          "Received: from %s (%s [%s])\r\n\tby %s (portcullis) with %s%s%s id "
                          "%s%s;\r\n\t%s\r\n",
                          s->helo ? s->helo : "unknown", s->client.name, s->client.addr,
                          c->conf->hostname, t->smtputf8 ? "UTF8" : "",
                          /* RFC 6531 3.7.3: UTF8SMTP, UTF8SMTPA, UTF8SMTPS, UTF8SMTPSA */
                          t->smtputf8 ? "SMTP"
                          : s->esmtp  ? "ESMTP"
                                      : "SMTP",
                          s->tls ? (s->auth_user ? "SA" : "S") : (s->auth_user ? "A" : ""), t->id,
                          forc, date);
}

/* delivery_prog - the Postfix program a delivery line names */
static const char *delivery_prog(const struct pc_smtp *c)
{
    return c->lc->backend->maildir ? "local" : c->lc->backend->lmtp ? "lmtp" : "smtp";
}

/* eom_backend_done - the backend's answer to the message */
static void eom_backend_done(struct pc_smtp *c, struct pc_backend_result *r)
{
    int code = r->reply.code;

    c->be_in_txn = false;
    if (c->lc->backend->lmtp && !r->local && code / 100 != 2 && c->lmtp_deferred > 0) {
        /* See "LMTP memo": the client's retry hears this recipient's reply at RCPT. */
        struct pc_txn *t = c->s->txn;
        for (size_t i = 0; i < t->nrcpt; i++)
            if (t->rcpts[i].flags & PC_RCPT_ACCEPTED)
                memo_put(memo_key(t->from.addr, t->rcpts[i].mb.addr, t->size_param), &r->reply);
        if (code / 100 == 5) {
            struct pc_enh e = {4, 5, 3};
            char text[700], es[16] = "";
            if (r->reply.enh.cls)
                pc_enh_format(&r->reply.enh, es, sizeof(es));
            snprintf(text, sizeof(text),
                     "Error: refused by the backend for this recipient (%d%s%s %s); retry, and it "
                     "is told at RCPT",
                     code, *es ? " " : "", es, r->reply.text);
            pc_txnlog_refusal(c->s, "reject", "END-OF-MESSAGE", 451, &e, text, "backend", NULL,
                              r->relay);
            reply(c, 451, "4.5.3", "%s", text);
            txn_end(c);
            return;
        }
    }
    if (code / 100 == 2 && !r->local) {
        struct pc_enh e = r->reply.enh;
        if (!e.cls)
            pc_enh_parse("2.0.0", &e);
        pc_txnlog_delivered(c->s, delivery_prog(c), r->relay, code, &e, r->reply.text);
        c->junk = 0; /* a delivered message: the client is doing real work */
        reply_backend(c, r, "2.0.0");
    } else if (code / 100 == 5 && !r->local) {
        log_backend_refusal(c, "END-OF-MESSAGE", r, "5.0.0");
        reply_backend(c, r, "5.0.0");
    } else if (code / 100 == 4) {
        log_backend_refusal(c, "END-OF-MESSAGE", r, "4.0.0");
        reply_backend(c, r, "4.0.0");
    } else {
        struct pc_enh e = {4, 3, 0};
        const char *text = "Error: unexpected backend reply, try again later";
        pc_txnlog_refusal(c->s, "reject", "END-OF-MESSAGE", 451, &e, text, "core", NULL, r->relay);
        reply(c, 451, "4.3.0", "%s", text);
    }
    if (r->local || r->reply.code == 421) {
        pc_backend_free(c->be);
        c->be = NULL;
    }
    txn_end(c);
}

/* backend_cb - every backend answer, by the command that waits for it */
static void backend_cb(void *arg, struct pc_backend_result *r)
{
    struct pc_smtp *c = arg;
    enum pc_verb w = c->be_wait;

    c->be_wait = PC_VERB_UNKNOWN;
    if (w == PC_VERB_MAIL || w == PC_VERB_RCPT || w == PC_VERB_DATA) {
        const char *cmd = verb_names[w];
        pc_metric_observe(PC_M_BACKEND_SECONDS, cmd, pc_seconds_since(&c->be_t0));
        if (r->local)
            pc_metric_add(PC_M_BACKEND_ERRORS, cmd, NULL, 1);
        pc_metric_set(PC_M_BACKEND_UP, c->lc->backend->name, NULL, r->local ? 0 : 1);
    }
    if (c->closing || c->s->txn == NULL)
        return;
    if (w == PC_VERB_MAIL)
        mail_backend_done(c, r);
    else if (w == PC_VERB_RCPT)
        rcpt_backend_done(c, r);
    else if (w == PC_VERB_DATA)
        eom_backend_done(c, r);
    else
        return;
    resume(c);
}

/* data_done - after the DATA stage: go ahead */
static void data_done(struct pc_smtp *c, struct pc_verdict *v)
{
    if (v->action == PC_DISCARD)
        c->s->txn->discard = true;
    else if (v->action != PC_CONTINUE) {
        reply_verdict(c, v);
        txn_end(c);
        return;
    }
    reply(c, 354, NULL, "End data with <CR><LF>.<CR><LF>");
    pc_data_init(&c->data, c->conf->limits.max_line_length);
    c->state = SM_DATA;
    deadline_at(c, now_ms() + c->conf->timeouts.data);
}

/* data_line - a decoded content line into the spool */
static int data_line(void *arg, const char *line, size_t len)
{
    struct pc_smtp *c = arg;
    struct pc_txn *t = c->s->txn;

    if (c->too_big)
        return 0;
    if (t->msg.size + len + 2 > c->conf->limits.max_message_size) {
        c->too_big = true;
        return 0;
    }
    return pc_msg_line(&t->msg, line, len);
}

/* end_of_data - the final dot: check, run the message stages */
static void end_of_data(struct pc_smtp *c)
{
    struct pc_txn *t = c->s->txn;
    const char *why = NULL, *enh = NULL;
    int code = 0;

    c->state = SM_CMD;
    clock_gettime(CLOCK_MONOTONIC, &t->out.t_eod);
    pc_metric_add(PC_M_MESSAGE_BYTES, NULL, NULL, (double)t->msg.size);
    pc_data_free(&c->data);
    command_deadline(c);
    if (pc_msg_finish(&t->msg) < 0 || t->msg.io_error)
        code = 451, enh = "4.3.0", why = "Error: queue file write error";
    else if (c->too_big)
        code = 552, enh = "5.3.4", why = "Error: message file too big";
    else if (t->msg.header_overflow)
        code = 552, enh = "5.3.4", why = "Error: message header size or count exceeds limit";
    else if (c->data.flags & PC_DATA_LONG_LINE)
        code = 552, enh = "5.3.4", why = "Error: message line too long";
    else if ((c->data.flags & (PC_DATA_BARE_CR | PC_DATA_BARE_LF)) &&
             c->conf->bare_newline == PC_BARE_REJECT)
        code = 550, enh = "5.6.0",
        why = "Error: bare CR or LF in message; lines must end with CR LF (RFC 5321 2.3.8)";
    else if ((c->data.flags & PC_DATA_NUL) && !c->conf->nul_strip)
        code = 550, enh = "5.6.0", why = "Error: NUL character in message content";
    if (why) {
        struct pc_enh e;
        pc_enh_parse(enh, &e);
        pc_txnlog_refusal(c->s, "reject", "END-OF-MESSAGE", code, &e, why, "core", NULL, NULL);
        reply(c, code, enh, "%s", why);
        txn_end(c);
        return;
    }
    if (c->data.flags & (PC_DATA_BARE_CR | PC_DATA_BARE_LF))
        pc_info("%s: bare CR or LF in message normalised to CR LF", t->id);
    if (c->data.flags & PC_DATA_NUL)
        pc_info("%s: NUL characters removed from the message", t->id);
    wait_for(c);
    eom_next(c, PC_STAGE_DATA);
}

/* eom_finish - the message stages are over: deliver, discard or refuse */
static void eom_finish(struct pc_smtp *c, struct pc_verdict *v)
{
    struct pc_txn *t = c->s->txn;

    if (v->action == PC_DISCARD || (v->action == PC_CONTINUE && t->discard)) {
        c->junk = 0;
        pc_txnlog_discarded(c->s);
        reply(c, 250, "2.0.0", "Ok: queued as %s", t->id);
        txn_end(c);
        resume(c);
        return;
    }
    if (v->action != PC_CONTINUE) {
        reply_verdict(c, v);
        txn_end(c);
        resume(c);
        return;
    }
    c->be_wait = PC_VERB_DATA;
    clock_gettime(CLOCK_MONOTONIC, &c->be_t0);
    t->out.t_eom = c->be_t0;
    pc_backend_data(c->be, received_header(c));
}

/* eom_next - run the message stages in order after "done" */
static void eom_next(struct pc_smtp *c, enum pc_stage done)
{
    struct pc_verdict v;

    for (enum pc_stage st = done + 1; st <= PC_STAGE_EOM; st++) {
        if (st == PC_STAGE_DATA)
            continue;
        enum pc_action a = pc_chain_run(c->s, st, &v);
        if (a == PC_PENDING)
            return;
        if (a != PC_CONTINUE) {
            eom_finish(c, &v);
            return;
        }
    }
    pc_verdict_clear(&v);
    eom_finish(c, &v);
}

/* stage_done - a pending stage finished: continue where the command left off */
static void stage_done(struct pc_session *s, enum pc_stage stage, struct pc_verdict *v)
{
    struct pc_smtp *c = s->door_ctx;

    if (c->closing)
        return;
    switch (stage) {
    case PC_STAGE_CONNECT:
        greet(c, v);
        return;
    case PC_STAGE_HELO:
        helo_done(c, v, s->esmtp);
        break;
    case PC_STAGE_MAIL:
        mail_done(c, v);
        if (c->be_wait == PC_VERB_MAIL)
            return;
        break;
    case PC_STAGE_RCPT:
        rcpt_done(c, v);
        if (c->be_wait == PC_VERB_RCPT)
            return;
        break;
    case PC_STAGE_DATA:
        data_done(c, v);
        break;
    default:
        if (v->action != PC_CONTINUE)
            eom_finish(c, v);
        else
            eom_next(c, stage);
        return;
    }
    resume(c);
}

/* cmd_mail - MAIL FROM */
static void cmd_mail(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    struct pc_session *s = c->s;
    const char *why, *enh;
    bool has;

    if (s->helo == NULL) {
        reply(c, 503, "5.5.1", "Error: send HELO/EHLO first");
        return;
    }
    if (s->txn) {
        reply(c, 503, "5.5.1", "Error: nested MAIL command");
        return;
    }
    struct pc_txn *t = pc_txn_new(s);
    why = pc_path_args_parse(cmd->arg, cmd->arg_len, "FROM:", t->pool, &c->pa, &enh);
    if (why) {
        reply(c, 501, enh, "%s", why);
        txn_end(c);
        return;
    }
    for (size_t i = 0; i < c->pa.nparams; i++) {
        const char *k = c->pa.params[i].key, *val = c->pa.params[i].value;
        if (!strcmp(k, "SIZE")) {
            char *end;
            unsigned long long n = val ? strtoull(val, &end, 10) : 0;
            if (val == NULL || *end || end == val) {
                reply(c, 501, "5.5.4", "Bad SIZE parameter");
                goto bad;
            }
            if (n > c->conf->limits.max_message_size) {
                reply(c, 552, "5.3.4", "Message size exceeds fixed limit");
                goto bad;
            }
            t->size_param = (size_t)n;
        } else if (!strcmp(k, "BODY")) {
            if (val == NULL || (strcasecmp(val, "7BIT") && strcasecmp(val, "8BITMIME"))) {
                reply(c, 501, "5.5.4", "Unsupported BODY parameter");
                goto bad;
            }
            t->body_8bit = strcasecmp(val, "8BITMIME") == 0;
        } else if (!strcmp(k, "SMTPUTF8") && c->conf->smtputf8) {
            if (val) {
                reply(c, 501, "5.5.4", "SMTPUTF8 takes no value");
                goto bad;
            }
            t->smtputf8 = true;
        } else if ((!strcmp(k, "RET") || !strcmp(k, "ENVID")) && !(path_ext(c) & PC_EXT_DSN)) {
            /* Not offered: accepting it would drop the request on the floor (RFC 3461 4). */
            reply(c, 555, "5.5.4", "Unsupported option: %s", k);
            goto bad;
        } else if (!strcmp(k, "RET")) {
            if (val == NULL || (strcasecmp(val, "FULL") && strcasecmp(val, "HDRS"))) {
                reply(c, 501, "5.5.4", "Bad RET parameter");
                goto bad;
            }
        } else if (!strcmp(k, "ENVID") || !strcmp(k, "AUTH")) {
            if (val == NULL || !pc_xtext_valid(val)) {
                reply(c, 501, "5.5.4", "Bad %s parameter", k);
                goto bad;
            }
        } else {
            reply(c, 555, "5.5.4", "Unsupported option: %s", k);
            goto bad;
        }
    }
    (void)pc_param_get(&c->pa, "SMTPUTF8", &has);
    if (c->pa.mb.utf8 && !t->smtputf8) {
        reply(c, 553, "5.6.7", "Must declare SMTPUTF8 to send an UTF-8 address");
        goto bad;
    }
    t->from = c->pa.mb;
    t->mail_params = c->pa.params_text;
    if (c->be == NULL)
        c->be = pc_backend_new(s, c->lc->backend, backend_cb, c);
    struct pc_verdict v;
    enum pc_action a = pc_chain_run(s, PC_STAGE_MAIL, &v);
    if (a == PC_PENDING) {
        wait_for(c);
        return;
    }
    mail_done(c, &v);
    return;
bad:
    txn_end(c);
}

/* cmd_rcpt - RCPT TO */
static void cmd_rcpt(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    struct pc_session *s = c->s;
    struct pc_txn *t = s->txn;
    const char *why, *enh;

    if (t == NULL) {
        reply(c, 503, "5.5.1", "Error: need MAIL command");
        return;
    }
    if (c->be_lost) {
        reply(c, 451, "4.4.2", "Error: lost connection with the backend, try again later");
        return;
    }
    if (t->nrcpt >= c->conf->limits.max_recipients) {
        reply(c, 452, "4.5.3", "Error: too many recipients");
        return;
    }
    if (t->naccepted >= 1 && c->lc->backend->lmtp && !t->discard) {
        /* An LMTP backend answers the data once per recipient (RFC 2033 4.2), SMTP has one
         * reply for DATA: with several recipients a partial success could only be a 4xx
         * (duplicates for those delivered) or a 250 (loss for the others). One recipient per
         * transaction makes the DATA reply exact; RFC 5321 4.5.3.1.10 has the client send
         * the rest in a later transaction. Not a client error. */
        c->not_error = true;
        reply(c, 452, "4.5.3",
              "Error: one recipient per message here, send the others in a "
              "new transaction");
        c->not_error = false;
        c->lmtp_deferred++;
        return;
    }
    why = pc_path_args_parse(cmd->arg, cmd->arg_len, "TO:", t->pool, &c->pa, &enh);
    if (why == NULL && c->pa.mb.null)
        why = "null recipient", enh = "5.1.3";
    if (why) {
        reply(c, 501, enh, "%s", why);
        return;
    }
    for (size_t i = 0; i < c->pa.nparams; i++) {
        const char *k = c->pa.params[i].key, *val = c->pa.params[i].value;
        if ((!strcmp(k, "NOTIFY") || !strcmp(k, "ORCPT")) && !(path_ext(c) & PC_EXT_DSN)) {
            reply(c, 555, "5.5.4", "Unsupported option: %s", k);
            return;
        } else if (!strcmp(k, "NOTIFY") || !strcmp(k, "ORCPT")) {
            /* They reach the backend and its DSNs: RFC 3461 4.1 and 4.2, RFC 6533 3. */
            if (val == NULL ||
                (k[0] == 'N' ? !pc_notify_valid(val) : !pc_orcpt_valid(val, t->smtputf8))) {
                reply(c, 501, "5.5.4", "Bad %s parameter", k);
                return;
            }
        } else {
            reply(c, 555, "5.5.4", "Unsupported option: %s", k);
            return;
        }
    }
    if (c->pa.mb.utf8 && !t->smtputf8) {
        reply(c, 553, "5.6.7", "Must declare SMTPUTF8 to send an UTF-8 address");
        return;
    }
    t->cur_rcpt = pc_txn_add_rcpt(t, &c->pa.mb, c->pa.params_text);
    struct lmtp_memo m;
    if (c->lc->backend->lmtp &&
        memo_take(memo_key(t->from.addr, c->pa.mb.addr, t->size_param), &m)) {
        /* The backend's own reply after the data of an earlier attempt (see "LMTP memo"). */
        pc_txnlog_refusal(c->s, "reject", "RCPT", m.code, &m.enh, m.text, "backend", NULL, NULL);
        reply_text(c, m.code, m.enh.cls ? &m.enh : NULL, m.text);
        return;
    }
    if (rcpt_refuse_delayed(c))
        return;
    struct pc_verdict v;
    enum pc_action a = pc_chain_run(s, PC_STAGE_RCPT, &v);
    if (a == PC_PENDING) {
        wait_for(c);
        return;
    }
    rcpt_done(c, &v);
}

/* cmd_data - DATA */
static void cmd_data(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    struct pc_txn *t = c->s->txn;

    if (cmd->arg_len) {
        reply(c, 501, "5.5.4", "Syntax: DATA");
        return;
    }
    if (t == NULL) {
        reply(c, 503, "5.5.1", "Error: need MAIL command");
        return;
    }
    if (c->be_lost) {
        reply(c, 451, "4.4.2", "Error: lost connection with the backend, try again later");
        txn_end(c);
        return;
    }
    if (t->naccepted == 0) {
        reply(c, t->nrcpt ? 554 : 503, t->nrcpt ? "5.5.1" : "5.5.1",
              t->nrcpt ? "Error: no valid recipients" : "Error: need RCPT command");
        return;
    }
    /* RFC 2920 3.1: DATA ends a command group; content before our 354 is a violation. */
    if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
        pc_info("%s: improper command pipelining after DATA from %s[%s]", c->s->sid,
                c->s->client.name, c->s->client.addr);
        reply(c, 554, "5.5.0", "Error: SMTP protocol synchronization");
        txn_end(c);
        smtp_close(c);
        return;
    }
    struct pc_verdict v;
    enum pc_action a = pc_chain_run(c->s, PC_STAGE_DATA, &v);
    if (a == PC_PENDING) {
        wait_for(c);
        return;
    }
    data_done(c, &v);
}

/* is_junk - a command that moves no mail (Postfix's junk commands, plus HELP and a HELO or
 * EHLO after the first); a session of nothing else ends at limits.max_junk_commands */
static bool is_junk(const struct pc_smtp *c, const struct pc_cmd *cmd)
{
    switch (cmd->verb) {
    case PC_VERB_NOOP:
    case PC_VERB_RSET:
    case PC_VERB_VRFY:
    case PC_VERB_EXPN:
    case PC_VERB_HELP:
    case PC_VERB_ETRN:
        return true;
    case PC_VERB_HELO:
    case PC_VERB_EHLO:
        return c->counts[PC_VERB_HELO] + c->counts[PC_VERB_EHLO] > 1;
    default:
        return false;
    }
}

/* handle_command - check, then dispatch through the verb table */
static void handle_command(struct pc_smtp *c, const char *line, size_t len)
{
    struct pc_cmd cmd;
    const char *why = pc_cmd_parse(line, len, &cmd);

    c->ncmds++;
    if (c->ncmds > c->conf->limits.max_commands) {
        pc_info("%s: too many commands from %s[%s]: %u", c->s->sid, c->s->client.name,
                c->s->client.addr, c->ncmds - 1);
        reply(c, 421, "4.7.0", "%s Error: too many commands", c->conf->hostname);
        return;
    }
    if (why) {
        reply(c, 500, "5.5.2", "Error: %s", why);
        return;
    }
    c->counts[cmd.verb]++;
    if (is_junk(c, &cmd) && ++c->junk > c->conf->limits.max_junk_commands) {
        pc_info("%s: too many junk commands from %s[%s]: %u", c->s->sid, c->s->client.name,
                c->s->client.addr, c->junk - 1);
        reply(c, 421, "4.7.0", "%s Error: too many junk commands", c->conf->hostname);
        return;
    }
    if (c->refused && cmd.verb != PC_VERB_QUIT && cmd.verb != PC_VERB_NOOP) {
        reply(c, 503, "5.5.1", "Error: access denied, send QUIT");
        return;
    }
    switch (cmd.verb) {
    case PC_VERB_HELO:
    case PC_VERB_EHLO:
        cmd_helo(c, &cmd, cmd.verb == PC_VERB_EHLO);
        return;
    case PC_VERB_MAIL:
        cmd_mail(c, &cmd);
        return;
    case PC_VERB_RCPT:
        cmd_rcpt(c, &cmd);
        return;
    case PC_VERB_DATA:
        cmd_data(c, &cmd);
        return;
    case PC_VERB_RSET:
        if (cmd.arg_len) {
            reply(c, 501, "5.5.4", "Syntax: RSET");
            return;
        }
        txn_end(c);
        reply(c, 250, "2.0.0", "Ok");
        return;
    case PC_VERB_NOOP:
        reply(c, 250, "2.0.0", "Ok");
        return;
    case PC_VERB_QUIT: {
        bool more = evbuffer_get_length(bufferevent_get_input(c->bev)) > 0;
        if (more)
            pc_info("%s: improper command pipelining after QUIT from %s[%s]", c->s->sid,
                    c->s->client.name, c->s->client.addr);
        reply(c, 221, "2.0.0", "Bye");
        txn_end(c);
        smtp_close(c);
        return;
    }
    case PC_VERB_HELP:
        reply(c, 214, "2.0.0", "See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)");
        return;
    case PC_VERB_VRFY:
        /* RFC 5321 3.5.3: 252 when we will accept but cannot verify. */
        reply(c, 252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery");
        return;
    case PC_VERB_EXPN:
        reply(c, 502, "5.5.1", "Error: EXPN not available");
        return;
    case PC_VERB_OBSOLETE:
        reply(c, 502, "5.5.1", "Error: %s is obsolete and not implemented (RFC 5321)", cmd.name);
        return;
    case PC_VERB_STARTTLS:
    case PC_VERB_AUTH:
    case PC_VERB_BDAT:
    case PC_VERB_ETRN:
        reply(c, 502, "5.5.1", "Error: command not implemented");
        return;
    case PC_VERB_FORBIDDEN:
        pc_info("%s: non-SMTP command from %s[%s]: %s", c->s->sid, c->s->client.name,
                c->s->client.addr, cmd.name);
        reply(c, 421, "4.7.0", "%s Error: non-SMTP command", c->conf->hostname);
        return;
    default:
        reply(c, 500, "5.5.2", "Error: command not recognized");
        return;
    }
}

/* feed_data - content bytes into the decoder */
static void feed_data(struct pc_smtp *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer_iovec v[8];

    while (c->state == SM_DATA && evbuffer_get_length(in) > 0) {
        int n = evbuffer_peek(in, -1, NULL, v, 8);
        size_t used = 0;
        for (int i = 0; i < n && i < 8 && !c->data.done; i++) {
            size_t k = pc_data_feed(&c->data, v[i].iov_base, v[i].iov_len, data_line, c);
            used += k;
            if (k < v[i].iov_len && !c->data.done) {
                /* The spool refused a line: a local write error. */
                c->s->txn->msg.io_error = true;
                used += v[i].iov_len - k;
                c->data.bytes += v[i].iov_len - k;
            }
        }
        evbuffer_drain(in, used);
        data_credit(c, used);
        if (c->data.done) {
            end_of_data(c);
            return;
        }
    }
}

/* client_done - the client half-closed and every complete command it sent is answered.
 * End of input means "no more commands", not "nobody listens" (Exim pipelines QUIT after the
 * final dot and then shuts down its side): the replies already written still go out. A message
 * whose final dot never came is abandoned: nothing of it is delivered. */
static void client_done(struct pc_smtp *c)
{
    const char *last = c->state == SM_DATA ? "DATA" : "command";

    pc_info("%s: lost connection after %s from %s[%s]", c->s->sid, last, c->s->client.name,
            c->s->client.addr);
    txn_end(c);
    smtp_close(c);
}

/* process_input - commands and content while nothing is pending */
static void process_input(struct pc_smtp *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t max = c->conf->limits.max_command_length;

    if (c->in_input)
        return;
    c->in_input = true;
    while (!c->busy && !c->closing && c->state != SM_CLOSING) {
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) > PC_SMTP_OUT_MAX) {
            c->out_full = true;
            break;
        }
        if (c->state == SM_DATA) {
            feed_data(c);
            if (c->state == SM_DATA)
                break;
            continue;
        }
        if (c->state != SM_CMD)
            break;
        size_t eol_len;
        struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
        if (eol.pos < 0) {
            size_t have = evbuffer_get_length(in);
            if (have > max) {
                /* Drop the over-long line now, answer once its end arrives. */
                evbuffer_drain(in, have);
                c->skipping_line = true;
            }
            break;
        }
        size_t len = (size_t)eol.pos;
        if (c->skipping_line || len + eol_len > max) {
            evbuffer_drain(in, len + eol_len);
            c->skipping_line = false;
            reply(c, 500, "5.5.2", "Error: line too long");
            continue;
        }
        char line[65536 + 2];
        evbuffer_remove(in, line, len + eol_len);
        if (len > 0 && line[len - 1] == '\r')
            len--;
        line[len] = 0;
        handle_command(c, line, len);
        if (!c->busy && c->state == SM_CMD)
            command_deadline(c); /* this command is done: the next one's clock starts */
    }
    c->in_input = false;
    if (c->eof && !c->busy && !c->closing && c->state != SM_CLOSING && !c->out_full)
        client_done(c);
}

/* on_read - bytes from the client */
static void on_read(struct bufferevent *bev, void *arg)
{
    struct pc_smtp *c = arg;

    (void)bev;
    if (c->state == SM_CONNECT || c->busy)
        return; /* greet() looks for early talkers; a pending step resumes input itself */
    process_input(c);
}

/* on_write - our output drained (to the low watermark, or empty) */
static void on_write(struct bufferevent *bev, void *arg)
{
    struct pc_smtp *c = arg;
    size_t left = evbuffer_get_length(bufferevent_get_output(bev));

    if (c->state == SM_CLOSING) {
        if (!c->closing && left == 0)
            free_now(c);
        return;
    }
    if (c->out_full && left <= PC_SMTP_OUT_MAX / 2) {
        c->out_full = false;
        if (!c->busy)
            process_input(c);
    }
}

/* on_deadline - the client did not finish its command line, its content or reading our
 * last words in time */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct pc_smtp *c = arg;

    (void)fd, (void)what;
    if (c->closing)
        return;
    if (c->state == SM_CLOSING) { /* the client did not take our last words in time */
        free_now(c);
        return;
    }
    if (c->busy)
        return; /* our own work: wait_for() stopped the clock, this is a stale expiry */
    pc_info("%s: timeout after %s from %s[%s]", c->s->sid,
            c->state == SM_DATA      ? "DATA"
            : c->state == SM_CONNECT ? "CONNECT"
                                     : "command",
            c->s->client.name, c->s->client.addr);
    bufferevent_enable(c->bev, EV_WRITE);
    reply(c, 421, "4.4.2", "%s Error: timeout exceeded", c->conf->hostname);
}

/* on_event - the client went away (the client's time limits are on_deadline's) */
static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct pc_smtp *c = arg;
    const char *last = c->state == SM_DATA ? "DATA" : "command";

    (void)bev, (void)what;
    if (c->closing)
        return;
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && c->state != SM_CLOSING) {
        /* A half-close: finish what was received (process_input closes when it is done). */
        c->eof = true;
        if (c->state != SM_CONNECT && !c->busy)
            process_input(c);
        return;
    }
    if (c->state != SM_CLOSING)
        pc_info("%s: lost connection after %s from %s[%s]", c->s->sid, last, c->s->client.name,
                c->s->client.addr);
    free_now(c);
}

/* pc_smtp_accept - a new client */
void pc_smtp_accept(struct pc_services *svc, struct pc_conf *conf,
                    const struct pc_listener_conf *lc, evutil_socket_t fd,
                    const struct sockaddr *sa, socklen_t salen, pc_smtp_closed_fn *closed,
                    void *closed_arg, const struct pc_pp_info *proxy)
{
    struct pc_smtp *c = calloc(1, sizeof(*c));
    struct pc_verdict v;

    if (c == NULL)
        pc_fatal("out of memory");
    c->lc = lc;
    c->conf = conf;
    c->on_closed = closed;
    c->closed_arg = closed_arg;
    pc_buf_init(&c->out, 0);
    c->s = pc_session_new(svc, conf, lc->name, &lc->chain, &pc_smtp_door, c);
    c->s->trusted = lc->trusted;
    c->s->holds_refusals = true;
    pc_session_set_client(c->s, sa, salen);
    if (proxy) /* before the connect stage: facts for its filters and rules */
        pc_proxy_session_facts(c->s, proxy);
    c->free_ev = event_new(svc->base, -1, 0, on_free, c);
    c->deadline_ev = evtimer_new(svc->base, on_deadline, c);
    c->bev = bufferevent_socket_new(svc->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    pc_bev_nodelay(c->bev);
    bufferevent_setwatermark(c->bev, EV_READ, 0, PC_SMTP_READ_MAX);
    bufferevent_setwatermark(c->bev, EV_WRITE, PC_SMTP_OUT_MAX / 2, 0);
    bufferevent_enable(c->bev, EV_READ);
    pc_info("%s: connect from %s[%s]:%u to %s", c->s->sid, c->s->client.name, c->s->client.addr,
            c->s->client.port, lc->name);
    pc_metric_add(PC_M_CONNECTIONS, lc->name, NULL, 1);
    pc_metric_add(PC_M_CONNECTIONS_ACTIVE, NULL, NULL, 1);
    if (pc_chain_attach(c->s) < 0) {
        c->state = SM_CMD;
        reply(c, 421, "4.3.0", "%s Error: temporary failure, try again later",
              conf->hostname);
        return;
    }
    c->state = SM_CONNECT;
    enum pc_action a = pc_chain_run(c->s, PC_STAGE_CONNECT, &v);
    if (a == PC_PENDING) {
        c->busy = true;
        return;
    }
    greet(c, &v);
}
