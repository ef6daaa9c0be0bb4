/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	smtp_server 3 - the SMTP front door: one client connection
 * DESCRIPTION
 *	A command table (sm_rows) drives the session: each verb's row has
 *	sequencing flags (checked by sequence_ok), a proceed function (its own
 *	syntax checks, then its step in the transaction engine, gateway/engine.h,
 *	which runs the filter stage and owns the transaction's rules), and the
 *	continuations for a pending engine step and for the backend's reply.
 *	Filters never see SMTP syntax errors. While a step or the backend is
 *	pending, input waits; every completion ends in step_over(), the one
 *	path back to the input loop. ESMTP parameters are a table too
 *	(sm_params: key, verb, when offered, validator).
 *
 *	Adding a verb (STARTTLS, AUTH, BDAT): fill its row in sm_rows with the
 *	flags it needs and a proceed function; work that completes later (a
 *	TLS handshake, an AUTH exchange) ends in step_over() like the engine
 *	and the backend do; a verb that reads other input than command lines
 *	(AUTH's responses, BDAT's octets) adds an input mode beside SM_DATA,
 *	changed only through set_state(), and a branch in process_input().
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
 *	RFC 5321, RFC 2920 (PIPELINING), RFC 1870 (SIZE), RFC 6531, RFC 3461, RFC 3030 (CHUNKING)
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
#include <unistd.h>

#include "core/filter.h"
#include "gateway/backend.h"
#include "gateway/bevio.h"
#include "gateway/conf.h"
#include "gateway/engine.h"
#include "gateway/postscreen.h"
#include "gateway/proxy_in.h"
#include "gateway/authdb.h"
#include "gateway/sasl.h"
#include "gateway/senderlogin.h"
#include "gateway/tls.h"
#include "core/session.h"
#include "gateway/smtp_proto.h"
#include "gateway/sockread.h"
#include "core/txnlog.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/pool.h"
#include "core/chain.h"

enum sm_state { SM_CONNECT, SM_CMD, SM_DATA, SM_BDAT, SM_AUTH, SM_CLOSING };

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
    struct pc_sockread *rd; /* reads c->bev's input: 64 KB reads, no FIONREAD (sockread.c) */
    struct pc_backend *be;
    bool be_in_txn;       /* the backend has our MAIL for the open transaction */
    bool be_lost;         /* the backend connection of the open transaction broke: only 4xx now */
    enum pc_verb be_wait; /* which command's backend reply we wait for */
    enum sm_state state;
    bool busy;    /* a stage or the backend is pending: do not read */
    bool refused; /* greeted with 554: only QUIT is served (RFC 5321 3.1) */
    bool closing;
    struct pc_engine eng; /* the transaction's rules (gateway/engine.h) */
    struct pc_ps ps;      /* postscreen-style checks (gateway/postscreen.h) */
    unsigned errors, ncmds;
    unsigned junk;                  /* NOOP, RSET, VRFY, HELP... since the last delivered message */
    char helo[PC_HOSTNAME_MAX + 1]; /* s->helo points here: no allocation per HELO */
    struct event *deadline_ev;      /* the client's deadline (command line, content, flush) */
    uint64_t deadline;              /* when it expires, monotonic milliseconds */
    unsigned counts[PC_VERB_FORBIDDEN + 1];
    bool skipping_line;
    bool in_input;  /* inside process_input(): resume() must not recurse into it */
    bool out_full;  /* our replies are backed up: input waits for on_write */
    bool eof;       /* the client shut down its sending side: serve what it sent, then close */
    bool not_error; /* the reply being written is flow control, not a client error */
    unsigned lmtp_deferred; /* RCPTs of this transaction told 452 (one recipient per LMTP txn) */
    struct timespec be_t0;  /* the command the backend is answering was sent */
    struct pc_data data;
    /* BDAT (RFC 3030): the chunk being read, and the transaction's chunks so far */
    size_t bdat_left, bdat_size; /* octets of this chunk still to read; its size */
    size_t bdat_total;           /* octets of the transaction's accepted chunks */
    bool bdat_last;              /* this chunk is the last */
    bool bdat_cmd;               /* a BDAT command is being served (its data stage may pend) */
    bool bdat_open;              /* the transaction's content comes in chunks: no DATA now */
    bool bdat_discard;           /* this chunk is read and thrown away; bdat_err answers it */
    bool bdat_failed;            /* a BDAT failed: chunks pipelined after it are discarded */
    bool bdat_echo;              /* this chunk is discarded for an earlier failure */
    struct pc_verdict bdat_err;
    struct pc_path_args pa;
    struct event *free_ev;
    pc_smtp_closed_fn *on_closed;
    void *closed_arg;
    struct pc_buf out;
    bool tls_starting;            /* STARTTLS answered 220: the handshake starts once it is sent */
    struct event *tls_ev;         /* starts it when the 220 left at once (no write callback) */
    struct pc_sasl sasl;          /* the AUTH exchange (input mode SM_AUTH) */
    struct pc_auth_req *auth_req; /* a credential check in flight */
    struct event *auth_ev;        /* the delay before a failed AUTH's reply */
    enum pc_auth_result auth_res;
    unsigned auth_fails;                   /* failures of this client address, for the reply */
    char auth_name[PC_SASL_MAX_FIELD + 1]; /* the identity being checked */
};

static void process_input(struct pc_smtp *);
static void smtp_close(struct pc_smtp *);
static void eng_done(void *, enum pc_stage, enum pc_action, struct pc_verdict *);
static void step_over(struct pc_smtp *);
static void to_backend(struct pc_smtp *, enum pc_verb, const struct pc_mailbox *);
static void on_read(struct bufferevent *, void *);
static void on_write(struct bufferevent *, void *);
static void on_event(struct bufferevent *, short, void *);

static const struct pc_door pc_smtp_door = {"smtp", pc_engine_door_done};

/* Sequencing flags of a command row, checked before the row's proceed (RFC 5321 4.1.4). */
#define SM_ARG    0x01 /* needs an argument (501 with the row's syntax) */
#define SM_NO_ARG 0x02 /* takes none (501 with the row's syntax) */
#define SM_HELO   0x04 /* needs HELO/EHLO first (503) */
#define SM_TXN    0x08 /* only inside a transaction: after MAIL (503) */
#define SM_NO_TXN 0x10 /* only outside one (503) */
#define SM_GROUP_END                                                                               \
    0x20                  /* ends a pipelining group: nothing may follow it unread (RFC 2920 3.1)  \
                           */
#define SM_NOT_TLS  0x40  /* refused once TLS is on (STARTTLS: RFC 3207 4.2) */
#define SM_NOT_AUTH 0x80  /* refused while an AUTH exchange is open (RFC 4954 4) */
#define SM_REFUSED  0x100 /* served after a 554 greeting (RFC 5321 3.1: QUIT, and NOOP) */

/* One row per verb: flags, then proceed (the command's own checks, its engine step or reply);
 * a pending engine step comes back in engine_done, a backend reply in backend_done, both
 * through step_over(). Row 0 (the unknown verb) is also the connection: its engine step is
 * the connect stage. */
struct sm_row {
    const char *name;   /* lower case, for metrics and logs */
    const char *syntax; /* the 501 text for SM_ARG and SM_NO_ARG */
    unsigned flags;
    void (*proceed)(struct pc_smtp *, const struct pc_cmd *);
    void (*engine_done)(struct pc_smtp *, enum pc_stage, enum pc_action, struct pc_verdict *);
    void (*backend_done)(struct pc_smtp *, struct pc_backend_result *);
    bool (*offered)(const struct pc_smtp *); /* NULL: always; else 502 when it says no */
};

static const struct sm_row sm_rows[PC_VERB_FORBIDDEN + 1];
static const char *const sm_state_names[] = {"connect", "command", "data",
                                             "bdat",    "auth",    "closing"};

/* set_state - the one place the session's input mode changes */
static void set_state(struct pc_smtp *c, enum sm_state to)
{
    if (c->state != to)
        pc_debug("%s: state %s -> %s", c->s ? c->s->sid : "-", sm_state_names[c->state],
                 sm_state_names[to]);
    c->state = to;
}

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
    pc_log_flush(); /* a client that has our reply finds the lines logged before it */
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
        pc_info("%s: too many errors from %s[%s]", c->s->sid, c->s->client.name, c->s->client.addr);
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
        if (c->counts[v]) {
            /* " helo=1": names are short, counts at most 10 digits */
            size_t nl = strlen(sm_rows[v].name);
            if (nl > sizeof(line) - 40 - o)
                break;
            line[o++] = ' ';
            memcpy(line + o, sm_rows[v].name, nl);
            o += nl;
            line[o++] = '=';
            char d[12];
            size_t k = 0;
            unsigned n = c->counts[v];
            do
                d[k++] = (char)('0' + n % 10);
            while (n /= 10);
            while (k)
                line[o++] = d[--k];
        }
    line[o] = 0;
    pc_info("%s: disconnect from %s[%s]%s commands=%u", c->s->sid, c->s->client.name,
            c->s->client.addr, line, c->ncmds);
    pc_txnlog_end(c->s);
    if (c->auth_req)
        pc_auth_cancel(c->auth_req);
    if (c->auth_ev)
        event_free(c->auth_ev);
    if (c->tls_ev)
        event_free(c->tls_ev);
    pc_sasl_wipe(&c->sasl);
    explicit_bzero(c->auth_name, sizeof(c->auth_name));
    pc_ps_stop(&c->ps);
    pc_metric_add(PC_M_CONNECTIONS_ACTIVE, NULL, NULL, -1);
    pc_backend_free(c->be);
    pc_session_free(c->s);
    pc_sockread_free(c->rd);
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
    set_state(c, SM_CLOSING);
    c->closing = true;
    evtimer_del(c->deadline_ev);
    if (c->bev)
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    pc_sockread_enable(c->rd, false);
    event_active(c->free_ev, 0, 0);
}

/* smtp_close - stop reading, flush what we said, then free */
static void smtp_close(struct pc_smtp *c)
{
    if (c->state == SM_CLOSING)
        return;
    set_state(c, SM_CLOSING);
    bufferevent_disable(c->bev, EV_READ);
    pc_sockread_enable(c->rd, false);
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
    pc_engine_txn_end(&c->eng);
    c->lmtp_deferred = 0;
    if (c->bdat_open)
        pc_data_free(&c->data);
    c->bdat_open = false;
    c->bdat_total = 0;
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

/* client_talked - bytes from the client wait, read or not yet read (before our next reply,
 * whatever came is early: we have not said anything it could answer) */
static bool client_talked(struct pc_smtp *c)
{
    char peek;

    /* Under implicit TLS the socket carries TLS records (the end of the handshake is not
     * talk): early talk is what the TLS layer has decrypted into the input buffer. */
    return evbuffer_get_length(bufferevent_get_input(c->bev)) > 0 ||
           (!c->s->tls && recv(bufferevent_getfd(c->bev), &peek, 1, MSG_PEEK | MSG_DONTWAIT) == 1);
}

/* early_bytes - the first line the client sent (or its start), printable, for a log line */
static const char *early_bytes(struct pc_smtp *c, char *buf, size_t size)
{
    char raw[64];
    ev_ssize_t n = evbuffer_copyout(bufferevent_get_input(c->bev), raw, sizeof(raw));

    if (n <= 0 && !c->s->tls)
        n = recv(bufferevent_getfd(c->bev), raw, sizeof(raw), MSG_PEEK | MSG_DONTWAIT);
    size_t len = 0;
    while (n > 0 && len < (size_t)n && raw[len] != '\r' && raw[len] != '\n')
        len++;
    return pc_printable_copy(buf, size, raw, len);
}

/* ps_act - a postscreen check failed: its action. False when the session was dropped (521,
 * closing); enforce holds 550 for every RCPT, ignore only logs. Once per check and session. */
static bool ps_act(struct pc_smtp *c, enum pc_ps_test t, const char *detail)
{
    struct pc_verdict v;

    if (c->ps.failed[t])
        return true;
    enum pc_ps_action a = pc_ps_fail(&c->ps, t, detail);
    if (a == PC_PS_IGNORE || c->lc->chain.dry_run) /* dry_run: logged, nothing refused */
        return true;
    pc_ps_refusal(&c->ps, t, a == PC_PS_DROP ? 521 : 550, &v);
    if (a == PC_PS_ENFORCE) {
        pc_engine_hold(&c->eng, &v);
        return true;
    }
    pc_ps_stop(&c->ps);
    pc_txnlog_refusal(c->s, "reject", c->state == SM_CONNECT ? "CONNECT" : "UNKNOWN", 521, &v.enh,
                      v.text, "postscreen", NULL, NULL);
    reply_text(c, 521, &v.enh, v.text);
    smtp_close(c);
    return false;
}

/* ps_pregreet - early talk on a postscreen listener; false when dropped */
static bool ps_pregreet(struct pc_smtp *c)
{
    char b[80];

    return c->ps.failed[PC_PS_PREGREET] || !client_talked(c) ||
           ps_act(c, PC_PS_PREGREET, early_bytes(c, b, sizeof(b)));
}

/* greet - after the connect stage */
static void greet(struct pc_smtp *c, enum pc_action a, struct pc_verdict *v)
{
    struct pc_session *s = c->s;

    if (c->ps.on) {
        /* Bytes during the connect stage are early too; the check's action decides. */
        if (!ps_pregreet(c))
            return;
    } else if (client_talked(c)) {
        /* A client that talks before the greeting is not an SMTP client (RFC 5321 3.1). */
        pc_info("%s: improper command pipelining: client %s[%s] talked before the greeting", s->sid,
                s->client.name, s->client.addr);
        reply(c, 554, "5.5.0", "Error: SMTP protocol synchronization");
        smtp_close(c);
        return;
    }
    set_state(c, SM_CMD);
    if (a == PC_CONTINUE) {
        reply(c, 220, NULL, "%s %s", c->conf->hostname, c->conf->banner);
    } else if (a == PC_REJECT) {
        reply_verdict(c, v);
        c->refused = true;
    } else {
        /* Tempfail or disconnect at connect: the engine made it a 421, which closes. */
        reply_verdict(c, v);
    }
}

/* path_ext - what the backend behind us offers, as far as we know (0 while unknown) */
static unsigned path_ext(const struct pc_smtp *c)
{
    return c->be && pc_backend_ready(c->be) ? pc_backend_ext(c->be)
                                            : pc_backend_known_ext(c->lc->backend);
}

static bool auth_offered(const struct pc_smtp *);
static bool starttls_offered(const struct pc_smtp *);

/* chunking_offered - the listener's chunking (the BDAT row's offered): off, BDAT is 502 */
static bool chunking_offered(const struct pc_smtp *c)
{
    return c->lc->chunking;
}

/* ehlo_reply - our extensions (RFC 5321 4.1.1.1); SMTPUTF8 and DSN only when the backend
 * offers them, since we can honour neither ourselves (RFC 6531 3.4, RFC 3461 4). CHUNKING
 * unless the listener turns it off: the chunks are spooled and reach any backend as BDAT or
 * DATA. Never BINARYMIME:
 * the content goes through the same line policy as DATA (bare CR, LF and NUL refused or
 * normalised), so binary bodies could not pass unchanged (RFC 3030 3). */
static void ehlo_reply(struct pc_smtp *c)
{
    char text[512];
    unsigned ext = path_ext(c);

    snprintf(text, sizeof(text),
             "%s\nPIPELINING\nSIZE %zu\n8BITMIME\nENHANCEDSTATUSCODES%s%s%s%s%s", c->conf->hostname,
             c->conf->limits.max_message_size, chunking_offered(c) ? "\nCHUNKING" : "",
             (c->conf->smtputf8 && (ext & PC_EXT_SMTPUTF8)) ? "\nSMTPUTF8" : "",
             (ext & PC_EXT_DSN) ? "\nDSN" : "",
             /* RFC 3207 4.2: not once TLS is on */
             starttls_offered(c) && !c->s->tls ? "\nSTARTTLS" : "",
             auth_offered(c) ? "\nAUTH PLAIN LOGIN" : "");
    reply_text(c, 250, NULL, text);
}

/* helo_done - after the HELO stage */
static void helo_done(struct pc_smtp *c, enum pc_action a, struct pc_verdict *v)
{
    if (a != PC_CONTINUE) {
        reply_verdict(c, v);
    } else if (c->s->esmtp) {
        ehlo_reply(c);
        c->ps.pipelining_ok = true; /* RFC 2920: from now on the client may pipeline */
    } else
        reply(c, 250, NULL, "%s", c->conf->hostname);
}

/* cmd_helo - HELO and EHLO */
static void cmd_helo(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    struct pc_session *s = c->s;
    struct pc_verdict v;
    bool ehlo = cmd->verb == PC_VERB_EHLO;

    txn_end(c);
    /* Keep the first word, printable and bounded: it goes into logs and Received. */
    size_t n = 0;
    while (n < cmd->arg_len && cmd->arg[n] != ' ')
        n++;
    pc_printable_copy(c->helo, (n > PC_HOSTNAME_MAX ? PC_HOSTNAME_MAX : n) + 1, cmd->arg, n);
    s->helo = c->helo;
    /* What filters found about the previous HELO no longer holds (RFC 5321 4.1.4). */
    s->esmtp = ehlo;
    enum pc_action a = pc_engine_helo(&c->eng, &v);
    if (a == PC_PENDING) {
        wait_for(c);
        return;
    }
    helo_done(c, a, &v);
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
static void mail_done(struct pc_smtp *c, enum pc_action a, struct pc_verdict *v)
{
    if (a == PC_ACCEPT) {
        reply(c, 250, "2.1.0", "Ok");
    } else if (a != PC_CONTINUE) {
        reply_verdict(c, v);
        txn_end(c);
    } else {
        to_backend(c, PC_VERB_MAIL, &c->s->txn->from);
    }
}

/* to_backend - MAIL or RCPT with the client's parameters (the backend opens when needed) */
static void to_backend(struct pc_smtp *c, enum pc_verb verb, const struct pc_mailbox *mb)
{
    c->be_wait = verb;
    clock_gettime(CLOCK_MONOTONIC, &c->be_t0);
    wait_for(c);
    if (verb == PC_VERB_MAIL)
        pc_backend_mail(c->be, mb, c->pa.params, c->pa.nparams);
    else
        pc_backend_rcpt(c->be, mb, c->pa.params, c->pa.nparams);
}

/* rcpt_done - after the RCPT stage */
static void rcpt_done(struct pc_smtp *c, enum pc_action a, struct pc_verdict *v)
{
    if (a == PC_ACCEPT)
        reply(c, 250, "2.1.5", "Ok");
    else if (a != PC_CONTINUE)
        reply_verdict(c, v);
    else
        to_backend(c, PC_VERB_RCPT, &c->s->txn->cur_rcpt->mb);
}

/* rcpt_backend_done - the backend answered our RCPT */
static void rcpt_backend_done(struct pc_smtp *c, struct pc_backend_result *r)
{
    if (r->reply.code / 100 == 2) {
        pc_engine_rcpt_accepted(&c->eng);
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
        const char *cmd = sm_rows[w].name;
        pc_metric_observe(PC_M_BACKEND_SECONDS, cmd, pc_seconds_since(&c->be_t0));
        if (r->local)
            pc_metric_add(PC_M_BACKEND_ERRORS, cmd, NULL, 1);
        pc_metric_set(PC_M_BACKEND_UP, c->lc->backend->name, NULL, r->local ? 0 : 1);
    }
    if (c->closing || c->s->txn == NULL || sm_rows[w].backend_done == NULL)
        return;
    sm_rows[w].backend_done(c, r);
    step_over(c);
}

/* data_block - a run of whole clean lines, CRLFs included */
static int data_block(void *arg, const char *p, size_t n)
{
    struct pc_smtp *c = arg;

    return pc_engine_lines(&c->eng, p, n);
}

/* data_done - after the DATA stage: go ahead */
static void data_done(struct pc_smtp *c, enum pc_action a, struct pc_verdict *v)
{
    if (a != PC_CONTINUE) {
        reply_verdict(c, v);
        txn_end(c);
        return;
    }
    reply(c, 354, NULL, "End data with <CR><LF>.<CR><LF>");
    pc_data_init(&c->data, c->conf->limits.max_line_length);
    c->data.block = data_block;
    set_state(c, SM_DATA);
    deadline_at(c, now_ms() + c->conf->timeouts.data);
}

/* data_line - a decoded content line into the spool */
static int data_line(void *arg, const char *line, size_t len)
{
    struct pc_smtp *c = arg;

    return pc_engine_line(&c->eng, line, len);
}

/* eom_done - the message stages are over: deliver, discard or refuse */
static void eom_done(struct pc_smtp *c, enum pc_action a, struct pc_verdict *v)
{
    struct pc_txn *t = c->s->txn;

    if (a == PC_CONTINUE) {
        c->be_wait = PC_VERB_DATA;
        clock_gettime(CLOCK_MONOTONIC, &c->be_t0);
        t->out.t_eom = c->be_t0;
        pc_backend_data(c->be, pc_engine_received(&c->eng));
        return;
    }
    if (a == PC_DISCARD) {
        c->junk = 0;
        reply(c, 250, "2.0.0", "Ok: queued as %s", t->id);
    } else {
        reply_verdict(c, v);
    }
    txn_end(c);
}

/* end_of_data - the final dot: the engine checks the message and runs its stages */
static void end_of_data(struct pc_smtp *c)
{
    struct pc_txn *t = c->s->txn;
    unsigned f = c->data.flags, flags = 0;
    struct pc_verdict v;

    set_state(c, SM_CMD);
    clock_gettime(CLOCK_MONOTONIC, &t->out.t_eod);
    pc_metric_add(PC_M_MESSAGE_BYTES, NULL, NULL, (double)t->msg.size);
    pc_data_free(&c->data);
    command_deadline(c);
    flags |= (f & PC_DATA_LONG_LINE) ? PC_ENG_LONG_LINE : 0;
    flags |= (f & (PC_DATA_BARE_CR | PC_DATA_BARE_LF)) ? PC_ENG_BARE_NL : 0;
    flags |= (f & PC_DATA_NUL) ? PC_ENG_NUL : 0;
    wait_for(c);
    enum pc_action a = pc_engine_eom(&c->eng, flags, &v);
    if (a != PC_PENDING) {
        eom_done(c, a, &v);
        step_over(c);
    }
}

/* step_over - a command's pending step ended: take input again unless the backend still works */
static void step_over(struct pc_smtp *c)
{
    if (c->closing || c->be_wait != PC_VERB_UNKNOWN)
        return;
    resume(c);
}

/* stage_verb - the row whose engine step a stage belongs to */
static enum pc_verb stage_verb(const struct pc_smtp *c, enum pc_stage st)
{
    switch (st) {
    case PC_STAGE_CONNECT:
        return PC_VERB_UNKNOWN;
    case PC_STAGE_HELO:
        return c->s->esmtp ? PC_VERB_EHLO : PC_VERB_HELO;
    case PC_STAGE_MAIL:
        return PC_VERB_MAIL;
    case PC_STAGE_RCPT:
        return PC_VERB_RCPT;
    default:
        return PC_VERB_DATA; /* DATA and the message stages */
    }
}

/* eng_done - a pending engine step finished: its row continues, then step_over */
static void eng_done(void *arg, enum pc_stage stage, enum pc_action a, struct pc_verdict *v)
{
    struct pc_smtp *c = arg;

    if (c->closing)
        return;
    sm_rows[stage_verb(c, stage)].engine_done(c, stage, a, v);
    step_over(c);
}

/* p_size - SIZE=n (RFC 1870 6): over our limit is refused at MAIL */
static bool p_size(struct pc_smtp *c, struct pc_txn *t, const char *k, const char *val)
{
    char *end;
    unsigned long long n = val ? strtoull(val, &end, 10) : 0;

    (void)k;
    if (val == NULL || *end || end == val) {
        reply(c, 501, "5.5.4", "Bad SIZE parameter");
        return false;
    }
    if (n > c->conf->limits.max_message_size) {
        reply(c, 552, "5.3.4", "Message size exceeds fixed limit");
        return false;
    }
    t->size_param = (size_t)n;
    return true;
}

/* p_body - BODY=7BIT|8BITMIME (RFC 6152 2) */
static bool p_body(struct pc_smtp *c, struct pc_txn *t, const char *k, const char *val)
{
    (void)k;
    if (val == NULL || (strcasecmp(val, "7BIT") && strcasecmp(val, "8BITMIME"))) {
        reply(c, 501, "5.5.4", "Unsupported BODY parameter");
        return false;
    }
    t->body_8bit = strcasecmp(val, "8BITMIME") == 0;
    return true;
}

/* p_smtputf8 - SMTPUTF8, no value (RFC 6531 3.4) */
static bool p_smtputf8(struct pc_smtp *c, struct pc_txn *t, const char *k, const char *val)
{
    (void)k;
    if (val) {
        reply(c, 501, "5.5.4", "SMTPUTF8 takes no value");
        return false;
    }
    t->smtputf8 = true;
    return true;
}

/* p_ret - RET=FULL|HDRS (RFC 3461 4.3) */
static bool p_ret(struct pc_smtp *c, struct pc_txn *t, const char *k, const char *val)
{
    (void)t, (void)k;
    if (val == NULL || (strcasecmp(val, "FULL") && strcasecmp(val, "HDRS"))) {
        reply(c, 501, "5.5.4", "Bad RET parameter");
        return false;
    }
    return true;
}

/* p_xtext - ENVID and AUTH: an xtext value (RFC 3461 4, 4.4; RFC 4954 5) */
static bool p_xtext(struct pc_smtp *c, struct pc_txn *t, const char *k, const char *val)
{
    (void)t;
    if (val == NULL || !pc_xtext_valid(val)) {
        reply(c, 501, "5.5.4", "Bad %s parameter", k);
        return false;
    }
    return true;
}

/* p_notify - NOTIFY (RFC 3461 4.1); it reaches the backend and its DSNs */
static bool p_notify(struct pc_smtp *c, struct pc_txn *t, const char *k, const char *val)
{
    (void)t;
    if (val == NULL || !pc_notify_valid(val)) {
        reply(c, 501, "5.5.4", "Bad %s parameter", k);
        return false;
    }
    return true;
}

/* p_orcpt - ORCPT (RFC 3461 4.2, RFC 6533 3) */
static bool p_orcpt(struct pc_smtp *c, struct pc_txn *t, const char *k, const char *val)
{
    if (val == NULL || !pc_orcpt_valid(val, t->smtputf8)) {
        reply(c, 501, "5.5.4", "Bad %s parameter", k);
        return false;
    }
    return true;
}

/* offer_dsn - DSN parameters only when the backend offers DSN: accepting them otherwise would
 * drop the request on the floor (RFC 3461 4) */
static bool offer_dsn(const struct pc_smtp *c)
{
    return (path_ext(c) & PC_EXT_DSN) != 0;
}

/* offer_smtputf8 - SMTPUTF8 unless the configuration turned it off */
static bool offer_smtputf8(const struct pc_smtp *c)
{
    return c->conf->smtputf8;
}

/* The ESMTP parameter table: key, verb, whether it is offered now (NULL: always), check. A
 * key not here, or not offered, is 555 (RFC 5321 4.1.1.11). */
static const struct sm_param {
    const char *key;
    enum pc_verb verb;
    bool (*offered)(const struct pc_smtp *);
    bool (*check)(struct pc_smtp *, struct pc_txn *, const char *key, const char *val);
} sm_params[] = {
    {"SIZE", PC_VERB_MAIL, NULL, p_size},
    {"BODY", PC_VERB_MAIL, NULL, p_body},
    {"SMTPUTF8", PC_VERB_MAIL, offer_smtputf8, p_smtputf8},
    {"RET", PC_VERB_MAIL, offer_dsn, p_ret},
    {"ENVID", PC_VERB_MAIL, offer_dsn, p_xtext},
    {"AUTH", PC_VERB_MAIL, NULL, p_xtext},
    {"NOTIFY", PC_VERB_RCPT, offer_dsn, p_notify},
    {"ORCPT", PC_VERB_RCPT, offer_dsn, p_orcpt},
};

/* params_ok - every parameter of the command through the table; false when one was refused */
static bool params_ok(struct pc_smtp *c, struct pc_txn *t, enum pc_verb verb)
{
    for (size_t i = 0; i < c->pa.nparams; i++) {
        const char *k = c->pa.params[i].key, *val = c->pa.params[i].value;
        const struct sm_param *p = NULL;
        for (size_t j = 0; j < sizeof(sm_params) / sizeof(sm_params[0]) && !p; j++)
            if (sm_params[j].verb == verb && !strcmp(sm_params[j].key, k))
                p = &sm_params[j];
        if (p == NULL || (p->offered && !p->offered(c))) {
            reply(c, 555, "5.5.4", "Unsupported option: %s", k);
            return false;
        }
        if (!p->check(c, t, k, val))
            return false;
    }
    return true;
}

/* mail_allowed - require_tls and require_auth: no transaction before them (530 5.7.0,
 * RFC 3207 4, RFC 4954 6) */
static bool mail_allowed(struct pc_smtp *c)
{
    if (c->lc->require_tls && !c->s->tls)
        reply(c, 530, "5.7.0", "Must issue a STARTTLS command first");
    else if (c->lc->require_auth && c->s->auth_user == NULL)
        reply(c, 530, "5.7.0", "Authentication required");
    else
        return true;
    return false;
}

/* sender_login_ok - the sender login map (gateway/senderlogin.h): an authenticated user only
 * sends as the addresses it owns; on a listener that offers AUTH, an owned address needs its
 * owner logged in. 553 5.7.1 otherwise, as Postfix's reject_sender_login_mismatch. */
static bool sender_login_ok(struct pc_smtp *c, const struct pc_mailbox *mb)
{
    const struct pc_session *s = c->s;

    if (c->lc->senders == NULL || mb->null)
        return true;
    enum pc_sender_result r = pc_senders_check(c->lc->senders, s->auth_user, mb->addr);
    if (r == PC_SENDER_MISMATCH || (r == PC_SENDER_OWNED && c->lc->auth)) {
        pc_info("%s: sender <%s> refused for %s%s from %s[%s]", s->sid, mb->addr,
                s->auth_user ? "user " : "an unauthenticated client",
                s->auth_user ? s->auth_user : "", s->client.name, s->client.addr);
        reply(c, 553, "5.7.1", "<%s>: Sender address rejected: not owned by %s", mb->addr,
              s->auth_user ? "user" : "an authenticated user");
        return false;
    }
    return true;
}

/* cmd_mail - MAIL FROM */
static void cmd_mail(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    struct pc_session *s = c->s;
    const char *why, *enh;
    bool has;

    if (!mail_allowed(c))
        return;
    struct pc_txn *t = pc_txn_new(s);
    why = pc_path_args_parse(cmd->arg, cmd->arg_len, "FROM:", t->pool, &c->pa, &enh);
    if (why) {
        reply(c, 501, enh, "%s", why);
        txn_end(c);
        return;
    }
    if (!params_ok(c, t, PC_VERB_MAIL))
        goto bad;
    (void)pc_param_get(&c->pa, "SMTPUTF8", &has);
    if (c->pa.mb.utf8 && !t->smtputf8) {
        reply(c, 553, "5.6.7", "Must declare SMTPUTF8 to send an UTF-8 address");
        goto bad;
    }
    if (!sender_login_ok(c, &c->pa.mb))
        goto bad;
    t->from = c->pa.mb;
    t->mail_params = c->pa.params_text;
    if (c->be == NULL)
        c->be = pc_backend_new(s, c->lc->backend, backend_cb, c);
    struct pc_verdict v;
    enum pc_action a = pc_engine_mail(&c->eng, &v);
    if (a == PC_PENDING) {
        wait_for(c);
        return;
    }
    mail_done(c, a, &v);
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
    if (!params_ok(c, t, PC_VERB_RCPT))
        return;
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
    struct pc_verdict v;
    enum pc_action a = pc_engine_rcpt(&c->eng, &v);
    if (a == PC_PENDING) {
        wait_for(c);
        return;
    }
    rcpt_done(c, a, &v);
}

/* cmd_data - DATA */
static void cmd_data(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    (void)cmd;
    if (c->bdat_open) {
        /* RFC 3030 2: DATA after BDAT in one transaction is 503; the transaction goes on. */
        reply(c, 503, "5.5.1", "Error: DATA after BDAT in one transaction");
        return;
    }
    if (c->be_lost) {
        reply(c, 451, "4.4.2", "Error: lost connection with the backend, try again later");
        txn_end(c);
        return;
    }
    struct pc_verdict v;
    if (!pc_engine_data_ready(&c->eng, &v)) {
        reply_text(c, v.code, &v.enh, v.text);
        return;
    }
    enum pc_action a = pc_engine_data(&c->eng, &v);
    if (a == PC_PENDING) {
        wait_for(c);
        return;
    }
    data_done(c, a, &v);
}

/*
 * BDAT (RFC 3030). A chunk's octets are read whatever happens to the command: once its size
 * is known, the chunk is content to be stored or thrown away, never commands, so neither an
 * error nor a chunk boundary can make message bytes into SMTP (smuggling). The chunks of a
 * transaction go through the DATA decoder in its BDAT mode (the same line, bare CR/LF and NUL
 * policy; no dot-unstuffing, no end marker) into the same engine lines; LAST joins
 * end_of_data(), so filters and rules see the message as they would after DATA, and the final
 * reply waits for the backend. A failed BDAT ends the transaction; BDATs pipelined after it
 * are read and discarded until another command (RSET) comes (RFC 3030 2).
 */

/* bdat_start - read the chunk: into the message, or (discard) away with bdat_err as reply */
static void bdat_start(struct pc_smtp *c, bool discard)
{
    c->bdat_discard = discard;
    if (!discard)
        c->bdat_total += c->bdat_size;
    set_state(c, SM_BDAT);
    deadline_at(c, now_ms() + c->conf->timeouts.data);
}

/* bdat_refuse - this chunk fails: the transaction with it (content is there, or it cannot go
 * on) ends now, the chunk is discarded, later pipelined chunks too */
static void bdat_refuse(struct pc_smtp *c, bool end_txn)
{
    const struct pc_verdict *v = &c->bdat_err;

    c->bdat_failed = true;
    if (end_txn) {
        /* The one log line for this refusal, as for a message refused after DATA. */
        pc_txnlog_refusal(c->s, "reject", "BDAT", v->code, &v->enh, v->text, "core", NULL, NULL);
        txn_end(c);
    }
    bdat_start(c, true);
}

/* bdat_data_done - after the DATA stage of the first chunk */
static void bdat_data_done(struct pc_smtp *c, enum pc_action a, struct pc_verdict *v)
{
    if (a != PC_CONTINUE) {
        c->bdat_err = *v;
        if (a == PC_DISCONNECT || v->code == 421) {
            txn_end(c);
            reply_verdict(c, v);
            return;
        }
        bdat_refuse(c, true);
        return;
    }
    pc_data_init_bdat(&c->data, c->conf->limits.max_line_length);
    c->data.block = data_block;
    c->bdat_open = true;
    bdat_start(c, false);
}

/* bdat_check - false (and the refusal in bdat_err, *end_txn) when this chunk cannot be taken */
static bool bdat_check(struct pc_smtp *c, bool *end_txn)
{
    struct pc_verdict *v = &c->bdat_err;
    const struct pc_session *s = c->s;

    *end_txn = false;
    c->bdat_echo = false;
    if (c->refused)
        pc_verdict_set(v, PC_REJECT, 503, "5.5.1", "Error: access denied, send QUIT");
    else if ((c->bdat_echo = c->bdat_failed))
        pc_verdict_set(v, PC_REJECT, 503, "5.5.1",
                       "Error: chunk discarded after a failed BDAT, send RSET");
    else if (s->helo == NULL)
        pc_verdict_set(v, PC_REJECT, 503, "5.5.1", "Error: send HELO/EHLO first");
    else if (s->txn == NULL)
        pc_verdict_set(v, PC_REJECT, 503, "5.5.1", "Error: need MAIL command");
    else if (c->be_lost)
        *end_txn = true, pc_verdict_set(v, PC_TEMPFAIL, 451, "4.4.2",
                                        "Error: lost connection with the backend, try again later");
    else if (c->bdat_size > c->conf->limits.max_message_size - c->bdat_total)
        /* RFC 1870 and RFC 3030 2: the chunk is read and discarded, then 552. */
        *end_txn = true, pc_verdict_set(v, PC_REJECT, 552, "5.3.4", "Error: message file too big");
    else if (!c->bdat_open && !pc_engine_data_ready(&c->eng, v))
        ;
    else
        return true;
    return false;
}

/* cmd_bdat - BDAT octets [LAST] */
static void cmd_bdat(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    bool end_txn;
    const char *why = pc_bdat_parse(cmd->arg, cmd->arg_len, &c->bdat_size, &c->bdat_last);

    if (why) {
        /* Without a size nothing tells where the chunk ends: what follows could be content
         * taken for commands. Refuse and close, as for a DATA synchronisation error. */
        pc_info("%s: bad BDAT from %s[%s]: %s", c->s->sid, c->s->client.name, c->s->client.addr,
                why);
        reply(c, 501, "5.5.4", "Error: %s; Syntax: BDAT octets [LAST]", why);
        txn_end(c);
        smtp_close(c);
        return;
    }
    c->bdat_left = c->bdat_size;
    c->bdat_cmd = true;
    if (!bdat_check(c, &end_txn)) {
        bdat_refuse(c, end_txn);
        return;
    }
    if (c->bdat_open) {
        bdat_start(c, false);
        return;
    }
    struct pc_verdict v;
    enum pc_action a = pc_engine_data(&c->eng, &v);
    if (a == PC_PENDING) {
        wait_for(c);
        return;
    }
    bdat_data_done(c, a, &v);
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

/* group_end_ok - RFC 2920 3.1: nothing may follow a command that ends a pipelining group
 * before its reply. What did is never executed: it is logged, then DATA is refused and the
 * session ends (the bytes are probably content sent before our 354); STARTTLS discards it
 * (plaintext injected ahead of the handshake, CVE-2011-0411) and goes on, so that the client's
 * own TLS still happens; QUIT leaves it unread. */
static bool group_end_ok(struct pc_smtp *c, const struct sm_row *row, const struct pc_cmd *cmd)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t n = evbuffer_get_length(in);

    if (!(row->flags & SM_GROUP_END) || n == 0)
        return true;
    pc_info("%s: improper command pipelining after %s from %s[%s]%s", c->s->sid, cmd->name,
            c->s->client.name, c->s->client.addr,
            cmd->verb == PC_VERB_STARTTLS ? ": possible command injection, discarded" : "");
    if (cmd->verb == PC_VERB_QUIT)
        return true;
    if (cmd->verb == PC_VERB_STARTTLS) {
        evbuffer_drain(in, n);
        return true;
    }
    reply(c, 554, "5.5.0", "Error: SMTP protocol synchronization");
    txn_end(c);
    smtp_close(c);
    return false;
}

/* sequence_ok - the row's sequencing flags; false when a reply refused the command */
static bool sequence_ok(struct pc_smtp *c, const struct sm_row *row, const struct pc_cmd *cmd)
{
    const struct pc_session *s = c->s;

    if (c->refused && !(row->flags & SM_REFUSED))
        reply(c, 503, "5.5.1", "Error: access denied, send QUIT");
    else if (row->offered && !row->offered(c))
        reply(c, 502, "5.5.1", "Error: command not implemented");
    else if (((row->flags & SM_ARG) && cmd->arg_len == 0) ||
             ((row->flags & SM_NO_ARG) && cmd->arg_len))
        reply(c, 501, "5.5.4", "%s", row->syntax);
    else if ((row->flags & SM_HELO) && s->helo == NULL)
        reply(c, 503, "5.5.1", "Error: send HELO/EHLO first");
    else if ((row->flags & SM_TXN) && s->txn == NULL)
        reply(c, 503, "5.5.1", "Error: need MAIL command");
    else if ((row->flags & SM_NO_TXN) && s->txn)
        reply(c, 503, "5.5.1", "Error: nested MAIL command");
    else if ((row->flags & SM_NOT_TLS) && s->tls)
        reply(c, 503, "5.5.1", "Error: TLS already active");
    else if ((row->flags & SM_NOT_AUTH) && (c->state == SM_AUTH || c->auth_req))
        reply(c, 503, "5.5.1", "Error: authentication exchange in progress");
    else
        return group_end_ok(c, row, cmd);
    return false;
}

/* cmd_rset - RSET: the transaction is over (RFC 5321 4.1.1.5) */
static void cmd_rset(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    (void)cmd;
    txn_end(c);
    reply(c, 250, "2.0.0", "Ok");
}

/* cmd_noop - NOOP */
static void cmd_noop(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    (void)cmd;
    reply(c, 250, "2.0.0", "Ok");
}

/* cmd_quit - QUIT; anything pipelined after it is not served (RFC 2920 3.1) */
static void cmd_quit(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    (void)cmd;
    reply(c, 221, "2.0.0", "Bye");
    txn_end(c);
    smtp_close(c);
}

/* cmd_help - HELP */
static void cmd_help(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    (void)cmd;
    reply(c, 214, "2.0.0", "See RFC 5321 (https://www.rfc-editor.org/rfc/rfc5321)");
}

/* cmd_vrfy - VRFY: 252 when we will accept but cannot verify (RFC 5321 3.5.3) */
static void cmd_vrfy(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    (void)cmd;
    reply(c, 252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery");
}

/* cmd_expn - EXPN */
static void cmd_expn(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    (void)cmd;
    reply(c, 502, "5.5.1", "Error: EXPN not available");
}

/* cmd_obsolete - SEND, SOML, SAML, TURN */
static void cmd_obsolete(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    reply(c, 502, "5.5.1", "Error: %s is obsolete and not implemented (RFC 5321)", cmd->name);
}

/* bev_setup - the door's callbacks and bounds on the client's bufferevent (plain or TLS) */
static void bev_setup(struct pc_smtp *c, bool plain)
{
    bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
    /* After STARTTLS the socket has it already (from its plain setup). */
    if (plain || c->state == SM_CONNECT)
        pc_bev_nodelay(c->bev);
    bufferevent_setwatermark(c->bev, EV_READ, 0, PC_SMTP_READ_MAX);
    bufferevent_setwatermark(c->bev, EV_WRITE, PC_SMTP_OUT_MAX / 2, 0);
    /* Our own reads on a plain socket (64 KB, no ioctl before each); libevent's under TLS,
     * where the OpenSSL bufferevent reads the socket itself, or if ours cannot start. */
    if (plain && (c->rd = pc_sockread_new(c->bev, PC_SMTP_READ_MAX)) != NULL)
        pc_sockread_enable(c->rd, true);
    else
        bufferevent_enable(c->bev, EV_READ);
}

/* tls_session - what the handshake established, for rules, the log and Received */
static void tls_session(struct pc_smtp *c)
{
    struct pc_session *s = c->s;
    struct pc_tls_facts f;

    pc_tls_facts(c->bev, &f);
    s->tls = true;
    s->tls_info = pc_pool_printf(s->pool, "%s with cipher %s (%d/%d bits)", f.version, f.cipher,
                                 f.bits, f.bits);
    pc_fact_add(s, "tls", "yes");
    pc_fact_add(s, "tls_version", "%s", f.version);
    pc_fact_add(s, "tls_cipher", "%s", f.cipher);
    if (f.sni[0])
        pc_fact_add(s, "tls_sni", "%s", f.sni);
    if (f.peer_sha256[0]) { /* offered, not verified: a name for rules, not a proof */
        pc_fact_add(s, "tls_client_subject", "%s", f.peer_subject);
        pc_fact_add(s, "tls_client_sha256", "%s", f.peer_sha256);
    }
    pc_info("%s: TLS established with %s[%s]: %s%s%s%s%s", s->sid, s->client.name, s->client.addr,
            s->tls_info, f.sni[0] ? " sni=" : "", f.sni,
            f.peer_sha256[0] ? " client certificate sha256=" : "", f.peer_sha256);
}

static void session_start(struct pc_smtp *);

/* tls_done - the handshake ended (implicit TLS before the greeting, or after STARTTLS) */
static void tls_done(struct bufferevent *bev, const char *error, void *arg)
{
    struct pc_smtp *c = arg;

    if (error) {
        pc_info("%s: TLS handshake failed with %s[%s]: %s", c->s->sid, c->s->client.name,
                c->s->client.addr, error);
        free_now(c);
        return;
    }
    c->bev = bev;
    bev_setup(c, false);
    if (c->state == SM_CONNECT) {
        tls_session(c);
        session_start(c);
        return;
    }
    /* RFC 3207 4.2: forget what the client said before; it must EHLO again. The backend
     * connection was told the old HELO: a new one tells the new. */
    pc_session_rewind(c->s);
    tls_session(c);
    pc_backend_free(c->be);
    c->be = NULL;
    c->tls_starting = false;
    resume(c);
}

/* tls_wrap - hand the socket to a TLS handshake (fd is then the handshake's) */
static bool tls_wrap(struct pc_smtp *c, evutil_socket_t fd)
{
    return pc_tls_server_wrap(c->lc->tls_server, c->s->svc->base, fd, c->lc->tls_timeout_ms,
                              tls_done, c);
}

/* starttls_go - our 220 is sent: plaintext the client sent after STARTTLS is discarded (it
 * must never be read as the first commands under TLS), the socket goes to the handshake */
static void starttls_go(struct pc_smtp *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evutil_socket_t fd = bufferevent_getfd(c->bev);

    if (evbuffer_get_length(in) > 0) {
        pc_info("%s: %zu bytes of plaintext after STARTTLS from %s[%s]: possible command "
                "injection, discarded",
                c->s->sid, evbuffer_get_length(in), c->s->client.name, c->s->client.addr);
        evbuffer_drain(in, evbuffer_get_length(in));
    }
    /* The socket goes from the plain bufferevent to the handshake as it is: detached first,
     * so that freeing the plain one does not close it (no dup and close of our own). */
    pc_sockread_free(c->rd);
    c->rd = NULL;
    bufferevent_setfd(c->bev, -1);
    bufferevent_free(c->bev);
    c->bev = NULL;
    if (fd < 0 || !tls_wrap(c, fd)) {
        if (fd >= 0)
            evutil_closesocket(fd);
        free_now(c);
    }
}

/* starttls_now - the 220 went out without queueing */
static void starttls_now(evutil_socket_t fd, short what, void *arg)
{
    struct pc_smtp *c = arg;

    (void)fd, (void)what;
    if (c->tls_starting && !c->closing && c->bev)
        starttls_go(c);
}

/* starttls_offered - the listener has tls = "starttls" (the row's offered) */
static bool starttls_offered(const struct pc_smtp *c)
{
    return c->lc->tls == PC_LTLS_STARTTLS && c->lc->tls_server;
}

/* cmd_starttls - STARTTLS (RFC 3207): 220, then the handshake once the 220 has left */
static void cmd_starttls(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    (void)cmd;
    reply(c, 220, "2.0.0", "Ready to start TLS");
    if (c->state == SM_CLOSING)
        return;
    c->tls_starting = true;
    wait_for(c);
    bufferevent_disable(c->bev, EV_READ); /* nothing more is read as plaintext */
    pc_sockread_enable(c->rd, false);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) > 0)
        return; /* on_write goes on once it is sent */
    /* Sent already: go on from the loop, outside the callback that runs this command. */
    if (c->tls_ev == NULL)
        c->tls_ev = event_new(c->s->svc->base, -1, 0, starttls_now, c);
    event_active(c->tls_ev, 0, 0);
}

/* Failed AUTH attempts per client address, across configuration generations: within an hour,
 * listener.auth_max_failures of them end the session (421) and refuse AUTH until they age. */
#define PC_AUTHFAIL_WINDOW  3600
#define PC_AUTHFAIL_ENTRIES 16384
/* A failure's reply waits this long: guessing costs the guesser time (RFC 4954 14). */
#define PC_AUTH_FAIL_DELAY_MS 1000

static struct pc_authfail *authfails;

/* authfail_table - the table, made on first use */
static struct pc_authfail *authfail_table(void)
{
    if (authfails == NULL &&
        (authfails = pc_authfail_new(1000, PC_AUTHFAIL_WINDOW, PC_AUTHFAIL_ENTRIES)) == NULL)
        pc_fatal("out of memory");
    return authfails;
}

/* auth_configured - the listener has auth (the row's offered; TLS is cmd_auth's check) */
static bool auth_configured(const struct pc_smtp *c)
{
    return c->lc->auth != NULL;
}

/* auth_offered - AUTH is in EHLO and served: a back end, and TLS unless auth_plaintext */
static bool auth_offered(const struct pc_smtp *c)
{
    return c->lc->auth && (c->s->tls || c->lc->auth_plaintext);
}

/* auth_reply - the check's answer to the client (RFC 4954 6) */
static void auth_reply(struct pc_smtp *c)
{
    struct pc_session *s = c->s;

    if (c->auth_res == PC_AUTH_OK) {
        /* Printable: it goes into logs, facts and XCLIENT (a back end may allow odd names). */
        s->auth_user = pc_printable(pc_pool_strdup(s->pool, c->auth_name));
        pc_info("%s: client=%s[%s], sasl_username=%s", s->sid, s->client.name, s->client.addr,
                s->auth_user);
        reply(c, 235, "2.7.0", "Authentication successful");
        /* A backend connection opened before was introduced without LOGIN (XCLIENT). */
        pc_backend_free(c->be);
        c->be = NULL;
    } else if (c->auth_res == PC_AUTH_TEMPFAIL) {
        reply(c, 454, "4.7.0", "Temporary authentication failure");
    } else if (c->auth_fails >= c->lc->auth_max_failures) {
        reply(c, 421, "4.7.0", "%s Error: too many failed authentications", c->conf->hostname);
    } else {
        reply(c, 535, "5.7.8", "Error: authentication failed");
    }
    explicit_bzero(c->auth_name, sizeof(c->auth_name));
    step_over(c);
}

/* auth_delayed - a failure's delay is over */
static void auth_delayed(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    auth_reply(arg);
}

/* auth_cb - the credential back end answered */
static void auth_cb(enum pc_auth_result r, void *arg)
{
    struct pc_smtp *c = arg;
    struct pc_session *s = c->s;

    c->auth_req = NULL;
    c->auth_res = r;
    if (c->closing)
        return;
    if (r != PC_AUTH_FAIL) {
        auth_reply(c);
        return;
    }
    char who[256]; /* a stack copy: failures must not grow the session's pool */
    pc_printable_copy(who, sizeof(who), c->auth_name, strlen(c->auth_name));
    c->auth_fails = pc_authfail_add(authfail_table(), s->client.addr, time(NULL));
    pc_info("%s: %s[%s]: SASL authentication failed for %s (%u within the hour)", s->sid,
            s->client.name, s->client.addr, who, c->auth_fails);
    struct timeval tv = tv_ms(PC_AUTH_FAIL_DELAY_MS);
    if (c->auth_ev == NULL)
        c->auth_ev = evtimer_new(s->svc->base, auth_delayed, c);
    evtimer_add(c->auth_ev, &tv);
}

/* auth_check - the decoder has credentials: the back end checks them while input waits */
static void auth_check(struct pc_smtp *c, const struct pc_sasl_result *r)
{
    struct pc_auth_creds cr = {r->user, r->pass, c->s->client.addr, c->s->local_addr, c->s->tls};

    pc_strlcpy(c->auth_name, r->user, sizeof(c->auth_name));
    wait_for(c);
    c->auth_req = c->lc->auth->db ? pc_authdb_start(c->lc->auth->db, &cr, auth_cb, c) : NULL;
    pc_sasl_wipe(&c->sasl);
    if (c->auth_req == NULL) {
        c->auth_res = PC_AUTH_TEMPFAIL;
        auth_reply(c);
    }
}

/* auth_next - what the decoder asks for: another line, the check, or its error reply */
static void auth_next(struct pc_smtp *c, enum pc_sasl_status st, const struct pc_sasl_result *r)
{
    if (st == PC_SASL_CHALLENGE) {
        set_state(c, SM_AUTH);
        reply(c, 334, NULL, "%s", r->challenge);
        return;
    }
    set_state(c, SM_CMD);
    if (st == PC_SASL_DONE) {
        auth_check(c, r);
        return;
    }
    char enh[16];
    snprintf(enh, sizeof(enh), "%u.%u.%u", r->enh[0], r->enh[1], r->enh[2]);
    reply(c, r->code, enh, "Error: %s", r->text);
}

/* auth_line - one client line of the exchange (input mode SM_AUTH); the buffer is wiped */
static void auth_line(struct pc_smtp *c, char *line, size_t len)
{
    struct pc_sasl_result r;
    enum pc_sasl_status st = pc_sasl_step(&c->sasl, line, len, &r);

    explicit_bzero(line, len);
    auth_next(c, st, &r);
}

/* cmd_auth - AUTH (RFC 4954 4): offered only under TLS unless auth_plaintext */
static void cmd_auth(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    struct pc_sasl_result r;

    if (!auth_offered(c))
        reply(c, 538, "5.7.11", "Encryption required for requested authentication mechanism");
    else if (c->s->auth_user)
        reply(c, 503, "5.5.1", "Error: already authenticated");
    else if (pc_authfail_count(authfail_table(), c->s->client.addr, time(NULL)) >=
             c->lc->auth_max_failures)
        reply(c, 421, "4.7.0", "%s Error: too many failed authentications", c->conf->hostname);
    else
        auth_next(c, pc_sasl_start(&c->sasl, cmd->arg, cmd->arg_len, &r), &r);
}

/* cmd_later - BDAT, ETRN: rows waiting for their implementation */
static void cmd_later(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    (void)cmd;
    reply(c, 502, "5.5.1", "Error: command not implemented");
}

/* cmd_forbidden - an HTTP or proxy verb: not an SMTP client */
static void cmd_forbidden(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    if (c->ps.on) { /* postscreen's non_smtp_action decides; drop has answered 521 */
        if (ps_act(c, PC_PS_NON_SMTP, cmd->name))
            reply(c, 500, "5.5.2", "Error: command not recognized");
        return;
    }
    pc_info("%s: non-SMTP command from %s[%s]: %s", c->s->sid, c->s->client.name, c->s->client.addr,
            cmd->name);
    reply(c, 421, "4.7.0", "%s Error: non-SMTP command", c->conf->hostname);
}

/* cmd_unknown - a verb we do not know */
static void cmd_unknown(struct pc_smtp *c, const struct pc_cmd *cmd)
{
    (void)cmd;
    reply(c, 500, "5.5.2", "Error: command not recognized");
}

/* greet_row - the connect step's end (row 0) */
static void greet_row(struct pc_smtp *c, enum pc_stage st, enum pc_action a, struct pc_verdict *v)
{
    (void)st;
    greet(c, a, v);
}

/* helo_row - the HELO step's end */
static void helo_row(struct pc_smtp *c, enum pc_stage st, enum pc_action a, struct pc_verdict *v)
{
    (void)st;
    helo_done(c, a, v);
}

/* mail_row - the MAIL step's end */
static void mail_row(struct pc_smtp *c, enum pc_stage st, enum pc_action a, struct pc_verdict *v)
{
    (void)st;
    mail_done(c, a, v);
}

/* rcpt_row - the RCPT step's end */
static void rcpt_row(struct pc_smtp *c, enum pc_stage st, enum pc_action a, struct pc_verdict *v)
{
    (void)st;
    rcpt_done(c, a, v);
}

/* data_row - the DATA step's end, or the message's */
static void data_row(struct pc_smtp *c, enum pc_stage st, enum pc_action a, struct pc_verdict *v)
{
    if (st == PC_STAGE_DATA && c->bdat_cmd)
        bdat_data_done(c, a, v);
    else if (st == PC_STAGE_DATA)
        data_done(c, a, v);
    else
        eom_done(c, a, v);
}

/* The command table. STARTTLS's handshake resumes through resume(), AUTH's check through
 * step_over(); AUTH's exchange lines are the input mode SM_AUTH. BDAT's SM_BDAT counts octets
 * (RFC 3030 2), LAST joins end_of_data(). */
static const struct sm_row sm_rows[PC_VERB_FORBIDDEN + 1] = {
    [PC_VERB_UNKNOWN] = {"unknown", NULL, 0, cmd_unknown, greet_row, NULL},
    [PC_VERB_HELO] = {"helo", "Syntax: HELO hostname", SM_ARG | SM_NOT_AUTH, cmd_helo, helo_row,
                      NULL},
    [PC_VERB_EHLO] = {"ehlo", "Syntax: EHLO hostname", SM_ARG | SM_NOT_AUTH, cmd_helo, helo_row,
                      NULL},
    [PC_VERB_MAIL] = {"mail", NULL, SM_HELO | SM_NO_TXN | SM_NOT_AUTH, cmd_mail, mail_row,
                      mail_backend_done},
    [PC_VERB_RCPT] = {"rcpt", NULL, SM_TXN | SM_NOT_AUTH, cmd_rcpt, rcpt_row, rcpt_backend_done},
    [PC_VERB_DATA] = {"data", "Syntax: DATA", SM_NO_ARG | SM_TXN | SM_GROUP_END | SM_NOT_AUTH,
                      cmd_data, data_row, eom_backend_done},
    [PC_VERB_RSET] = {"rset", "Syntax: RSET", SM_NO_ARG, cmd_rset, NULL, NULL},
    [PC_VERB_NOOP] = {"noop", NULL, SM_REFUSED, cmd_noop, NULL, NULL},
    [PC_VERB_QUIT] = {"quit", NULL, SM_REFUSED | SM_GROUP_END, cmd_quit, NULL, NULL},
    [PC_VERB_HELP] = {"help", NULL, 0, cmd_help, NULL, NULL},
    [PC_VERB_VRFY] = {"vrfy", NULL, 0, cmd_vrfy, NULL, NULL},
    [PC_VERB_EXPN] = {"expn", NULL, 0, cmd_expn, NULL, NULL},
    [PC_VERB_STARTTLS] = {"starttls", "Syntax: STARTTLS",
                          SM_HELO | SM_NO_TXN | SM_NO_ARG | SM_GROUP_END | SM_NOT_TLS | SM_NOT_AUTH,
                          cmd_starttls, NULL, NULL, starttls_offered},
    [PC_VERB_AUTH] = {"auth", "Syntax: AUTH mechanism", SM_HELO | SM_NO_TXN | SM_ARG | SM_NOT_AUTH,
                      cmd_auth, NULL, NULL, auth_configured},
    /* BDAT reads its chunk whatever else is wrong (cmd_bdat), so every check is its own; its
     * data stage and the backend's answer to the message come back through the DATA row. */
    [PC_VERB_BDAT] = {"bdat", NULL, SM_REFUSED, cmd_bdat, NULL, NULL, chunking_offered},
    [PC_VERB_ETRN] = {"etrn", NULL, 0, cmd_later, NULL, NULL},
    [PC_VERB_OBSOLETE] = {"obsolete", NULL, 0, cmd_obsolete, NULL, NULL},
    [PC_VERB_FORBIDDEN] = {"forbidden", NULL, 0, cmd_forbidden, NULL, NULL},
};

/* handle_command - session limits, then the verb's row: sequencing flags, then proceed */
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
    if (cmd.verb != PC_VERB_BDAT)
        c->bdat_failed = false; /* the chunks pipelined after a failed one are over */
    if (is_junk(c, &cmd) && ++c->junk > c->conf->limits.max_junk_commands) {
        pc_info("%s: too many junk commands from %s[%s]: %u", c->s->sid, c->s->client.name,
                c->s->client.addr, c->junk - 1);
        reply(c, 421, "4.7.0", "%s Error: too many junk commands", c->conf->hostname);
        return;
    }
    const struct sm_row *row = &sm_rows[cmd.verb];
    if (sequence_ok(c, row, &cmd))
        row->proceed(c, &cmd);
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

/* bdat_chunk_end - the chunk is read: its reply, or the message's end (LAST) */
static void bdat_chunk_end(struct pc_smtp *c)
{
    c->bdat_cmd = false;
    set_state(c, SM_CMD);
    command_deadline(c);
    if (c->bdat_discard) {
        /* Chunks discarded behind a failed one are the failure's echo, not new errors. */
        c->not_error = c->bdat_echo;
        reply_text(c, c->bdat_err.code, &c->bdat_err.enh, c->bdat_err.text);
        c->not_error = false;
        return;
    }
    if (c->bdat_last) {
        if (pc_data_finish(&c->data, data_line, c) < 0)
            c->s->txn->msg.io_error = true;
        end_of_data(c);
        return;
    }
    if (c->eng.too_big) {
        pc_verdict_set(&c->bdat_err, PC_REJECT, 552, "5.3.4", "Error: message file too big");
        reply_text(c, 552, &c->bdat_err.enh, c->bdat_err.text);
        pc_txnlog_refusal(c->s, "reject", "BDAT", 552, &c->bdat_err.enh, c->bdat_err.text, "core",
                          NULL, NULL);
        c->bdat_failed = true;
        txn_end(c);
        return;
    }
    reply(c, 250, "2.0.0", "Ok: %zu octets received", c->bdat_size);
}

/* feed_bdat - exactly the chunk's octets: into the decoder, or away */
static void feed_bdat(struct pc_smtp *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    struct evbuffer_iovec v[8];

    while (c->state == SM_BDAT) {
        size_t have = evbuffer_get_length(in), want = c->bdat_left < have ? c->bdat_left : have;
        if (c->bdat_left == 0) {
            bdat_chunk_end(c);
            return;
        }
        if (want == 0)
            return;
        int n = evbuffer_peek(in, (ev_ssize_t)want, NULL, v, 8);
        size_t used = 0;
        for (int i = 0; i < n && i < 8 && used < want; i++) {
            size_t len = v[i].iov_len < want - used ? v[i].iov_len : want - used;
            if (!c->bdat_discard &&
                pc_data_feed(&c->data, v[i].iov_base, len, data_line, c) < len) {
                /* The spool refused a line: a local write error; the rest of the chunk goes. */
                pc_verdict_set(&c->bdat_err, PC_TEMPFAIL, 451, "4.3.0",
                               "Error: queue file write error");
                c->bdat_failed = c->bdat_discard = true;
                txn_end(c);
            }
            used += len;
        }
        evbuffer_drain(in, used);
        c->bdat_left -= used;
        data_credit(c, used);
    }
}

/* client_done - the client half-closed and every complete command it sent is answered.
 * End of input means "no more commands", not "nobody listens" (Exim pipelines QUIT after the
 * final dot and then shuts down its side): the replies already written still go out. A message
 * whose final dot never came is abandoned: nothing of it is delivered. */
static void client_done(struct pc_smtp *c)
{
    const char *last = c->state == SM_DATA ? "DATA" : c->state == SM_BDAT ? "BDAT" : "command";

    pc_info("%s: lost connection after %s from %s[%s]", c->s->sid, last, c->s->client.name,
            c->s->client.addr);
    txn_end(c);
    smtp_close(c);
}

/* ps_line - postscreen's checks of a command line (with its CR, without the LF): a bare
 * newline, and more commands behind it before our EHLO reply offered PIPELINING; false when
 * the session was dropped */
static bool ps_line(struct pc_smtp *c, const char *line, size_t len)
{
    char b[80];

    pc_printable_copy(b, sizeof(b), line, len && line[len - 1] == '\r' ? len - 1 : len);
    if ((len == 0 || line[len - 1] != '\r') && !ps_act(c, PC_PS_BARE_NL, b))
        return false;
    return c->ps.pipelining_ok || !client_talked(c) || ps_act(c, PC_PS_PIPELINING, b);
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
        if (c->state == SM_BDAT) {
            feed_bdat(c);
            if (c->state == SM_BDAT)
                break;
            continue;
        }
        if (c->state != SM_CMD && c->state != SM_AUTH)
            break;
        /* RFC 4954 4: an AUTH exchange line may be 12288 octets */
        max = c->state == SM_AUTH ? PC_SASL_MAX_LINE : c->conf->limits.max_command_length;
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
            if (c->state == SM_AUTH) {
                pc_sasl_wipe(&c->sasl);
                set_state(c, SM_CMD);
                reply(c, 500, "5.5.6", "Error: authentication exchange line is too long");
            } else {
                reply(c, 500, "5.5.2", "Error: line too long");
            }
            continue;
        }
        char line[65536 + 2];
        evbuffer_remove(in, line, len + eol_len);
        if (c->ps.on && !ps_line(c, line, len))
            break;
        if (len > 0 && line[len - 1] == '\r')
            len--;
        line[len] = 0;
        if (c->state == SM_AUTH)
            auth_line(c, line, len);
        else
            handle_command(c, line, len);
        if (!c->busy && (c->state == SM_CMD || c->state == SM_AUTH))
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
    if (c->ps.waiting) { /* the greeting is withheld: any byte now is early talk */
        ps_pregreet(c);
        return;
    }
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
    if (c->tls_starting && left == 0) {
        starttls_go(c);
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
            : c->state == SM_BDAT    ? "BDAT"
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
    if (c->ps.waiting) { /* gone before the greeting: nothing to answer */
        pc_ps_hangup(&c->ps);
        pc_ps_stop(&c->ps);
        free_now(c);
        return;
    }
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

/* connect_stage - the connect stage, then the greeting */
static void connect_stage(struct pc_smtp *c)
{
    struct pc_verdict v;
    enum pc_action a = pc_engine_connect(&c->eng, &v);

    if (a == PC_PENDING)
        return;
    greet(c, a, &v);
    step_over(c);
}

/* ps_over - greet_pause and the DNS lists are over: their verdict, then the connect stage */
static void ps_over(void *arg)
{
    struct pc_smtp *c = arg;
    const char *zone;

    pc_ps_stop(&c->ps);
    if (!ps_pregreet(c))
        return;
    if (pc_ps_dnsbl_listed(&c->ps, &zone) && !ps_act(c, PC_PS_DNSBL, zone))
        return;
    if (!c->ps.cached && !c->ps.failed[PC_PS_PREGREET] && !c->ps.failed[PC_PS_DNSBL])
        pc_ps_passed(&c->ps);
    connect_stage(c);
}

/* pc_smtp_accept - a new client */
void pc_smtp_accept(struct pc_services *svc, struct pc_conf *conf,
                    const struct pc_listener_conf *lc, evutil_socket_t fd,
                    const struct sockaddr *sa, socklen_t salen, pc_smtp_closed_fn *closed,
                    void *closed_arg, const struct pc_pp_info *proxy)
{
    struct pc_smtp *c = calloc(1, sizeof(*c));

    if (c == NULL)
        pc_fatal("out of memory");
    c->lc = lc;
    c->conf = conf;
    c->on_closed = closed;
    c->closed_arg = closed_arg;
    pc_buf_init(&c->out, 0);
    c->s = pc_session_new(svc, &conf->core, lc->name, &lc->chain, &pc_smtp_door, &c->eng);
    c->s->trusted = lc->trusted;
    pc_engine_init(&c->eng, c->s, eng_done, c);
    pc_session_set_client(c->s, sa, salen);
    struct sockaddr_storage local;
    socklen_t llen = sizeof(local);
    if (getsockname(fd, (struct sockaddr *)&local, &llen) == 0)
        pc_session_set_local(c->s, (struct sockaddr *)&local);
    if (proxy) /* before the connect stage: facts for its filters and rules */
        pc_proxy_session_facts(c->s, proxy);
    c->free_ev = event_new(svc->base, -1, 0, on_free, c);
    c->deadline_ev = evtimer_new(svc->base, on_deadline, c);
    pc_info("%s: connect from %s[%s]:%u to %s", c->s->sid, c->s->client.name, c->s->client.addr,
            c->s->client.port, lc->name);
    pc_metric_add(PC_M_CONNECTIONS, lc->name, NULL, 1);
    pc_metric_add(PC_M_CONNECTIONS_ACTIVE, NULL, NULL, 1);
    if (lc->tls == PC_LTLS_IMPLICIT && lc->tls_server) {
        /* RFC 8314 3.3: the handshake comes first; the connect stage and greeting follow. */
        set_state(c, SM_CONNECT);
        c->busy = true;
        if (!tls_wrap(c, fd)) {
            evutil_closesocket(fd);
            free_now(c);
        }
        return;
    }
    c->bev = bufferevent_socket_new(svc->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bev_setup(c, true);
    session_start(c);
}

/* session_start - the session's configuration, postscreen's pause, then the connect stage */
static void session_start(struct pc_smtp *c)
{
    struct pc_services *svc = c->s->svc;

    if (pc_chain_attach(c->s) < 0) {
        set_state(c, SM_CMD);
        reply(c, 421, "4.3.0", "%s Error: temporary failure, try again later", c->conf->hostname);
        return;
    }
    set_state(c, SM_CONNECT);
    c->busy = true; /* until the greeting: no command is read */
    if (pc_ps_start(&c->ps, &c->conf->postscreen, c->lc->postscreen, c->s, svc->base, svc->dns,
                    ps_over, c))
        return; /* the greeting waits for greet_pause and the DNS lists */
    connect_stage(c);
}
