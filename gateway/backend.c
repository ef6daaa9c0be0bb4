/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	backend 3 - the connection to the MTA behind us (or the Maildir)
 * DESCRIPTION
 *	An asynchronous SMTP/LMTP client on a bufferevent. Opening walks the
 *	configured addresses in order (fail-over on a refused connection, a
 *	timeout or a non-220 greeting), says EHLO/LHLO, then passes the real
 *	client's identity with XCLIENT (and EHLO again, as XCLIENT restarts
 *	the session) or XFORWARD when the backend offers it.
 *
 *	The message goes out through a cursor over the spool, dot-stuffed
 *	again, in blocks bounded by the write watermark, so that a large
 *	spooled message never sits in memory whole. A body with no line to
 *	stuff skips the stuffer: from memory in one copy, from the spool file
 *	with sendfile(2) on a plain socket (RFC 5321 4.5.2: nothing to double). A backend that
 *offers CHUNKING gets it in BDAT chunks of PC_BE_BDAT bytes instead, each answered before the next
 *goes (RFC 3030): no dot-stuffing, and no byte of it can look like an end of data.
 *
 *	Reply accounting is strict (RFC 2920 3.1): we have at most one command
 *	outstanding (LMTP: one reply per accepted recipient after the dot),
 *	and every reply line must answer it. A line nobody asked for, a
 *	surplus line behind a complete reply, a reply of a class the command
 *	cannot take (250 to DATA) or a reply to the end of data before it
 *	left our buffer marks the connection broken: the waiting command gets
 *	a local 4xx, the connection is never reused, and a transaction never
 *	moves to another connection (only MAIL opens one). Each command has a
 *	deadline for its whole reply, not an idle timer between bytes.
 *
 *	Identity goes with every transaction: before each MAIL the identity
 *	of the session's client (address, name, port, HELO) is compared with
 *	the one this connection speaks for; if it differs, XCLIENT again when
 *	the backend still offers it (Postfix checks its authorisation against
 *	the client XCLIENT set, so it usually does not), otherwise QUIT and a
 *	new connection. XFORWARD is sent before every MAIL (Postfix resets
 *	its attributes after each transaction).
 *
 *	Each backend kind (smtp, lmtp, maildir) is a small ops table; the
 *	Maildir kind answers the same calls locally and writes the message
 *	with gateway/maildir.c. So are the identity kinds (none, XCLIENT,
 *	XFORWARD, PROXY v2 and v1) and the TLS modes (none, may, encrypt,
 *	verify).
 *
 *	TLS (RFC 3207): STARTTLS after the first EHLO, before the identity
 *	step; then EHLO again and only the extensions of that reply count
 *	(section 4.2). Under "may" a backend that does not offer STARTTLS, or
 *	refuses it, is used in plaintext, and a failed handshake is retried
 *	once on the same address without TLS, as Postfix's smtp client does
 *	for opportunistic TLS (smtp_connect.c, tls_retry_plain). Under
 *	"encrypt" and "verify" either is a failed connection: fail over,
 *	then 451 to the client - never plaintext. Bytes the backend sends
 *	behind its 220 to STARTTLS are discarded (response injection).
 *
 *	PROXY identity: the header (the real client's address and port, and
 *	the address it connected to) is the first thing on each new
 *	connection, before the greeting is read. Such a connection speaks
 *	for one client only and is never pooled.
 * SEE ALSO
 *	RFC 5321, RFC 2033 (LMTP), RFC 3207, Postfix XCLIENT_README and
 *	XFORWARD_README, HAProxy PROXY protocol specification
 */
#include "gateway/backend.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/filter.h"
#include "gateway/bevio.h"
#include "gateway/conf.h"
#include "core/session.h"
#include "gateway/maildir.h"
#include "gateway/sockread.h"
#include "gateway/tls.h"
#include "lib/log.h"
#include "lib/proxy_proto.h"
#include "lib/parse.h"
#include "lib/pool.h"

#define PC_BE_LINE_MAX 4096
#define PC_BE_FILL     262144
/* Reply bytes held unread at most: far above a reply line (PC_BE_LINE_MAX), which on_read
 * refuses beyond. */
#define PC_BE_READ_HIGH 131072
#define PC_BE_BDAT      1048576 /* bytes per BDAT chunk: few round trips, bounded memory */

enum be_state {
    BE_IDLE,
    BE_CONNECTING,
    BE_GREETING,
    BE_EHLO,
    BE_STARTTLS,
    BE_TLS, /* the handshake runs; the handshake owns the socket */
    BE_XCLIENT,
    BE_EHLO2,
    BE_XFORWARD,
    BE_READY,
    BE_CMD,
    BE_DATA_INIT,
    BE_DATA_BODY,
    BE_DATA_DONE,
    BE_BDAT, /* a BDAT chunk that is not the last: its 250 sends the next */
    BE_DEAD
};

static const char *const be_state_names[] = {
    "idle",          "connect", "greeting",           "EHLO",        "STARTTLS",
    "TLS handshake", "XCLIENT", "EHLO after XCLIENT", "XFORWARD",    "ready",
    "command",       "DATA",    "message content",    "end of data", "BDAT",
    "dead"};

/* The commands of a transaction, typed: the backend writes the line (never the door). */
enum pc_backend_verb { PC_BACKEND_MAIL, PC_BACKEND_RCPT };
static const char *const verb_name[] = {"MAIL", "RCPT"};
struct pc_backend_cmd {
    enum pc_backend_verb verb;
    const char *addr; /* the path without angle brackets, "" for the null sender */
    const struct pc_param *params;
    size_t nparams;
};

struct pc_backend {
    struct pc_session *s;
    const struct pc_backend_conf *bc;
    const struct be_kind *kind;
    const struct be_ident *ident;
    const struct be_tls_mode *tlsm;
    const struct pc_conf *conf;
    pc_backend_cb *cb;
    void *arg;
    struct event_base *base;
    struct bufferevent *bev;
    struct pc_sockread *rd; /* reads a plain bev: 64 KB reads, no FIONREAD (sockread.c) */
    enum be_state state;
    size_t addr_idx;
    struct pc_reply reply;
    unsigned ext;
    char xclient_attrs[256], xforward_attrs[256];
    char relay[300];
    bool has_pending; /* a command waits for the connection */
    enum pc_backend_verb pending_verb;
    char *pending_addr;
    struct pc_param pending_params[PC_MAX_PARAMS];
    size_t pending_nparams;
    enum pc_backend_verb cmd_verb; /* the outstanding command (BE_CMD) */
    size_t rcpt_ok, lmtp_left;
    struct pc_backend_result lmtp_first_fail;
    bool lmtp_any_ok, lmtp_any_fail;
    struct pc_msg_cursor cur;
    struct pc_stuffer stuff;
    bool no_sendfile; /* sendfile(2) failed on this connection: the body is read and written */
    char *received;
    char *chunk;
    struct event *synth;
    struct pc_backend_result synth_result;
    int depth;          /* inside one of our libevent callbacks */
    bool free_req;      /* pc_backend_free() was called from inside: destroy on the way out */
    bool in_txn;        /* the backend holds our MAIL: never pool such a connection */
    bool broken;        /* the backend broke the protocol: never reuse, never reconnect midway */
    bool identified;    /* ident_key is the client this connection speaks for (XCLIENT) */
    bool ident_refresh; /* XCLIENT on an established connection: a refusal means reconnect */
    bool xforward_sent; /* XFORWARD went out for the coming MAIL */
    bool bdat;          /* this message goes out in BDAT chunks */
    bool tls_on;        /* this connection runs TLS (and keeps it in the pool) */
    bool tls_plain;     /* may: the handshake failed on this address; retry it in plaintext */
    char ident_key[1100], ident_sending[1100];
    struct event *deadline;
    struct pc_backend *pool_next;
    struct event *pool_timer;
};

/*
 * Idle backend connections are kept for a short while and reused by the
 * next session to the same backend: connecting, the greeting and EHLO cost
 * as much as the transaction itself. Only a connection whose identity can
 * be set again is kept (identity "none", or XCLIENT still offered after
 * the last XCLIENT); the next MAIL re-identifies it. XFORWARD backends are
 * not pooled (see be_ident.may_pool).
 *
 * The pool and the capability cache (what each backend offers, for our
 * EHLO before a session has its own connection) belong to a registry of
 * one configuration generation, which holds no reference to it:
 * pc_backend_generation() frees the previous registry (QUIT on its idle
 * connections) when a new generation starts, and a session of an older
 * generation QUITs its connection instead of pooling it and learns no
 * capabilities, so an idle connection never keeps an old generation alive.
 */
#define PC_BE_POOL_MAX     64
#define PC_BE_POOL_IDLE_MS 10000

struct be_caps {
    unsigned ext;
    bool known; /* a probe or a connection saw the EHLO reply */
};

struct be_registry {
    const struct pc_conf *conf; /* its generation (not referenced) */
    struct pc_backend *pool;    /* idle connections of this generation */
    size_t npool;
    struct be_caps *caps; /* by index of conf->backends */
    size_t ncaps;
};

static struct be_registry *pc_be_reg; /* the generation new sessions start under */

/* reg_of - the registry of this generation, or NULL when it is no longer current */
static struct be_registry *reg_of(const struct pc_conf *conf)
{
    return conf != NULL && pc_be_reg != NULL && pc_be_reg->conf == conf ? pc_be_reg : NULL;
}

/* A connection we said QUIT on, waiting for the 221 (or EOF, or a deadline) before it closes,
 * so that the backend sees an orderly end and not a reset. Owns nothing but the socket. */
struct be_quitter {
    struct bufferevent *bev;
    struct event *timer;
    struct be_quitter *next, **prev;
};
static struct be_quitter *pc_be_quitters;
#define PC_BE_QUIT_MS 5000

static void be_fail(struct pc_backend *, const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void be_try_next(struct pc_backend *, const char *why);
static void be_enter(struct pc_backend *);
static bool be_leave(struct pc_backend *);
static struct pc_backend *pool_take(struct pc_session *, const struct pc_backend_conf *,
                                    pc_backend_cb *, void *);
static void send_pending(struct pc_backend *);
static void be_command(struct pc_backend *, const struct pc_backend_cmd *);
static void be_data(struct pc_backend *, const char *received);
static void maildir_command(struct pc_backend *, const struct pc_backend_cmd *);
static void maildir_data(struct pc_backend *, const char *received);

/*
 * Backend kinds. smtp and lmtp are this file's client (they differ in the greeting and in
 * LMTP's reply per accepted recipient after the dot, RFC 2033 4.1, 4.2); maildir has no
 * connection and answers locally (gateway/maildir.c writes the message).
 */
struct be_kind {
    const char *name;
    const char *hello;   /* EHLO or LHLO; NULL: no connection, answered locally */
    bool reply_per_rcpt; /* one reply per accepted recipient after the dot */
    unsigned local_ext;  /* what a kind without a connection offers */
    void (*command)(struct pc_backend *, const struct pc_backend_cmd *);
    void (*data)(struct pc_backend *, const char *received);
};

static const struct be_kind be_kind_smtp = {
    .name = "smtp", .hello = "EHLO", .command = be_command, .data = be_data};
static const struct be_kind be_kind_lmtp = {.name = "lmtp",
                                            .hello = "LHLO",
                                            .reply_per_rcpt = true,
                                            .command = be_command,
                                            .data = be_data};
static const struct be_kind be_kind_maildir = {.name = "maildir",
                                               .local_ext = PC_EXT_PIPELINING | PC_EXT_SIZE |
                                                            PC_EXT_8BITMIME | PC_EXT_SMTPUTF8,
                                               .command = maildir_command,
                                               .data = maildir_data};

/*
 * Identity kinds: how the backend learns who the real client is. start runs after the first
 * EHLO (true: ready now), before_mail before every MAIL (true: this connection speaks for the
 * session's client; false: it started what makes it so, and MAIL waits in pending). may_pool
 * says whether an idle connection can be made to speak for another client later (with the
 * extensions in pool_needs still offered); a PROXY header, sent once per connection, cannot.
 */
struct be_ident {
    const char *name;
    bool may_pool;
    unsigned pool_needs;
    bool (*connected)(struct pc_backend *); /* NULL, or the first bytes (false: failed) */
    bool (*start)(struct pc_backend *);
    bool (*before_mail)(struct pc_backend *);
};

static bool ident_ready_now(struct pc_backend *);
static bool xclient_start(struct pc_backend *);
static bool xclient_before_mail(struct pc_backend *);
static bool xforward_before_mail(struct pc_backend *);
static bool proxy_v2_connected(struct pc_backend *);
static bool proxy_v1_connected(struct pc_backend *);

static const struct be_ident be_ident_none = {
    .name = "none", .may_pool = true, .start = ident_ready_now, .before_mail = ident_ready_now};
/* Postfix evaluates XCLIENT authorisation against the client XCLIENT set: when the last EHLO
 * no longer offers XCLIENT, the next client's identity cannot be set on this connection. */
static const struct be_ident be_ident_xclient = {.name = "xclient",
                                                 .may_pool = true,
                                                 .pool_needs = PC_EXT_XCLIENT,
                                                 .start = xclient_start,
                                                 .before_mail = xclient_before_mail};
/* Not pooled: XFORWARD attributes cannot be taken back from a connection. */
static const struct be_ident be_ident_xforward = {.name = "xforward",
                                                  .may_pool = false,
                                                  .start = ident_ready_now,
                                                  .before_mail = xforward_before_mail};

/* PROXY protocol (Exim's hosts_proxy): one header per connection, for one client. */
static const struct be_ident be_ident_proxy_v2 = {.name = "proxy",
                                                  .may_pool = false,
                                                  .connected = proxy_v2_connected,
                                                  .start = ident_ready_now,
                                                  .before_mail = ident_ready_now};
static const struct be_ident be_ident_proxy_v1 = {.name = "proxy-v1",
                                                  .may_pool = false,
                                                  .connected = proxy_v1_connected,
                                                  .start = ident_ready_now,
                                                  .before_mail = ident_ready_now};

/*
 * TLS modes: whether to say STARTTLS when the backend offers it, and what happens when TLS
 * cannot be had. unavailable: STARTTLS not offered or refused (true: the mode took over the
 * connection, which failed; false: carry on in plaintext). failed: the handshake failed (the
 * socket is gone already).
 */
struct be_tls_mode {
    const char *name;
    bool starttls;
    bool required; /* a pooled or live connection without TLS must never carry mail */
    bool (*unavailable)(struct pc_backend *, const char *why);
    void (*failed)(struct pc_backend *, const char *why);
};

static bool tls_carry_on(struct pc_backend *, const char *);
static bool tls_refuse(struct pc_backend *, const char *);
static void tls_retry_plain(struct pc_backend *, const char *);
static void tls_fail_over(struct pc_backend *, const char *);

static const struct be_tls_mode be_tls_modes[] = {
    [PC_TLS_CLIENT_NONE] = {.name = "none"},
    [PC_TLS_CLIENT_MAY] = {.name = "may",
                           .starttls = true,
                           .unavailable = tls_carry_on,
                           .failed = tls_retry_plain},
    [PC_TLS_CLIENT_ENCRYPT] = {.name = "encrypt",
                               .starttls = true,
                               .required = true,
                               .unavailable = tls_refuse,
                               .failed = tls_fail_over},
    [PC_TLS_CLIENT_VERIFY] = {.name = "verify",
                              .starttls = true,
                              .required = true,
                              .unavailable = tls_refuse,
                              .failed = tls_fail_over},
};

/* tls_mode_of - the TLS mode of a configured backend */
static const struct be_tls_mode *tls_mode_of(const struct pc_backend_conf *bc)
{
    size_t m = (size_t)bc->tls;

    return m < sizeof(be_tls_modes) / sizeof(be_tls_modes[0]) ? &be_tls_modes[m] : &be_tls_modes[0];
}

/* ident_of - the identity kind of a configured backend */
static const struct be_ident *ident_of(const struct pc_backend_conf *bc)
{
    switch (bc->identity) {
    case PC_IDENT_XCLIENT:
        return &be_ident_xclient;
    case PC_IDENT_XFORWARD:
        return &be_ident_xforward;
    case PC_IDENT_PROXY_V2:
        return &be_ident_proxy_v2;
    case PC_IDENT_PROXY_V1:
        return &be_ident_proxy_v1;
    case PC_IDENT_NONE:
        break;
    }
    return &be_ident_none;
}

/* kind_of - the kind of a configured backend */
static const struct be_kind *kind_of(const struct pc_backend_conf *bc)
{
    return bc->maildir ? &be_kind_maildir : bc->lmtp ? &be_kind_lmtp : &be_kind_smtp;
}
static void keep_pending(struct pc_backend *, const struct pc_backend_cmd *);
static void be_retire(struct pc_backend *, bool quit);
static void on_deadline(evutil_socket_t, short, void *);
static bool be_sockaddr(const char *, struct sockaddr_storage *, socklen_t *);
static void be_lost(struct pc_backend *, const char *why);
static void known_ext_set(const struct pc_backend *, unsigned);
static bool tls_next(const struct pc_backend *);
static bool be_connect(struct pc_backend *);
static bool proxy_write(struct bufferevent *, bool v2, const struct sockaddr *,
                        const struct sockaddr *);

/* sid - the session id for the log ("-" when the connection belongs to nobody) */
static const char *sid(const struct pc_backend *be)
{
    return be->s ? be->s->sid : "-";
}

/* tv_ms - milliseconds to timeval */
static struct timeval tv_ms(unsigned ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

/* deliver - hand a result to the session (which may free us: see be_leave) */
static void deliver(struct pc_backend *be, struct pc_backend_result *r)
{
    r->relay = be->relay;
    be->depth++;
    be->cb(be->arg, r);
    be->depth--;
}

/* on_synth - deferred local result (never from inside the starting call) */
static void on_synth(evutil_socket_t fd, short what, void *arg)
{
    struct pc_backend *be = arg;

    (void)fd, (void)what;
    be_enter(be);
    deliver(be, &be->synth_result);
    be_leave(be);
}

/* synth - schedule a local result */
static void synth(struct pc_backend *be, int code, const char *enh, const char *text, bool local)
{
    struct pc_backend_result *r = &be->synth_result;

    memset(r, 0, sizeof(*r));
    r->reply.code = code;
    pc_enh_parse(enh, &r->reply.enh);
    snprintf(r->reply.text, sizeof(r->reply.text), "%s", text);
    r->reply.complete = true;
    r->local = local;
    event_active(be->synth, 0, 0);
}

/* pc_backend_new - not yet connected */
struct pc_backend *pc_backend_new(struct pc_session *s, const struct pc_backend_conf *bc,
                                  pc_backend_cb *cb, void *arg)
{
    struct pc_backend *be = pool_take(s, bc, cb, arg);

    if (be)
        return be;
    be = calloc(1, sizeof(*be));
    if (be == NULL)
        pc_fatal("out of memory");
    be->s = s;
    be->bc = bc;
    be->conf = s->conf;
    be->cb = cb;
    be->arg = arg;
    be->base = s->svc->base;
    be->synth = event_new(be->base, -1, 0, on_synth, be);
    be->deadline = evtimer_new(be->base, on_deadline, be);
    be->kind = kind_of(bc);
    be->ident = ident_of(bc);
    be->tlsm = tls_mode_of(bc);
    snprintf(be->relay, sizeof(be->relay), "%s", be->kind->hello ? "none" : be->kind->name);
    return be;
}

/* be_arm - a deadline for the whole reply to what we just sent (RFC 5321 4.5.3.2) */
static void be_arm(struct pc_backend *be, unsigned ms)
{
    struct timeval tv = tv_ms(ms);

    evtimer_add(be->deadline, &tv);
}

/* be_close - drop the socket */
static void be_close(struct pc_backend *be)
{
    evtimer_del(be->deadline);
    pc_sockread_free(be->rd);
    be->rd = NULL;
    if (be->bev) {
        bufferevent_free(be->bev);
        be->bev = NULL;
    }
}

/* be_destroy - release everything */
static void be_destroy(struct pc_backend *be)
{
    be_close(be);
    event_free(be->synth);
    event_free(be->deadline);
    keep_pending(be, NULL);
    free(be->received);
    free(be->chunk);
    free(be);
}

/* be_enter - a libevent callback starts */
static void be_enter(struct pc_backend *be)
{
    be->depth++;
}

/* be_leave - a libevent callback ends; true when be is gone */
static bool be_leave(struct pc_backend *be)
{
    if (--be->depth == 0 && be->free_req) {
        be_destroy(be);
        return true;
    }
    return false;
}

static void on_read(struct bufferevent *, void *);
static void on_write(struct bufferevent *, void *);
static void on_event(struct bufferevent *, short, void *);

/* quitter_free - the QUIT exchange is over */
static void quitter_free(struct be_quitter *q)
{
    *q->prev = q->next;
    if (q->next)
        q->next->prev = q->prev;
    bufferevent_free(q->bev);
    event_free(q->timer);
    free(q);
}

/* quitter_on_read - the backend answered QUIT */
static void quitter_on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    quitter_free(arg);
}

/* quitter_on_event - closed, or an error */
static void quitter_on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev, (void)what;
    quitter_free(arg);
}

/* quitter_on_timer - no answer to QUIT in time */
static void quitter_on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    quitter_free(arg);
}

/* be_retire - give up this connection: QUIT when it is between commands, else just close */
static void be_retire(struct pc_backend *be, bool quit)
{
    struct be_quitter *q;
    struct timeval tv = tv_ms(PC_BE_QUIT_MS);

    if (be->bev == NULL || !quit || be->broken || (q = calloc(1, sizeof(*q))) == NULL) {
        be_close(be);
        return;
    }
    evtimer_del(be->deadline);
    /* The quitter reads with libevent again (bufferevent_enable below). */
    pc_sockread_free(be->rd);
    be->rd = NULL;
    q->bev = be->bev;
    be->bev = NULL;
    struct evbuffer *in = bufferevent_get_input(q->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    bufferevent_setcb(q->bev, quitter_on_read, NULL, quitter_on_event, q);
    bufferevent_set_timeouts(q->bev, NULL, NULL);
    bufferevent_enable(q->bev, EV_READ | EV_WRITE);
    bufferevent_write(q->bev, "QUIT\r\n", 6);
    q->timer = evtimer_new(bufferevent_get_base(q->bev), quitter_on_timer, q);
    evtimer_add(q->timer, &tv);
    q->next = pc_be_quitters;
    q->prev = &pc_be_quitters;
    if (q->next)
        q->next->prev = &q->next;
    pc_be_quitters = q;
}

/* pool_drop - an idle connection ends (QUIT when it is still healthy) */
static void pool_drop(struct pc_backend *be, bool quit)
{
    struct be_registry *reg = reg_of(be->conf);

    for (struct pc_backend **p = reg ? &reg->pool : NULL; p && *p; p = &(*p)->pool_next)
        if (*p == be) {
            *p = be->pool_next;
            reg->npool--;
            break;
        }
    event_free(be->pool_timer);
    be->pool_timer = NULL;
    be_retire(be, quit);
    be_destroy(be);
}

/* pool_on_event - an idle connection closed or failed */
static void pool_on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev, (void)what;
    pool_drop(arg, false);
}

/* pool_on_read - an idle connection spoke (e.g. 421 idle timeout): nobody asked, drop it */
static void pool_on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    pool_drop(arg, false);
}

/* pool_on_timer - idle too long: QUIT */
static void pool_on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    pool_drop(arg, true);
}

/* pool_put - keep an idle, ready connection for the next session */
static bool pool_put(struct pc_backend *be)
{
    struct be_registry *reg = reg_of(be->conf);

    if (be->depth > 0 || be->bev == NULL || be->state != BE_READY || be->in_txn || be->broken ||
        be->kind->hello == NULL || reg == NULL || !be->ident->may_pool ||
        (be->tlsm->required && !be->tls_on) ||
        (be->ext & be->ident->pool_needs) != be->ident->pool_needs || reg->npool >= PC_BE_POOL_MAX)
        return false;
    struct timeval tv = {PC_BE_POOL_IDLE_MS / 1000, 0};
    event_del(be->synth);
    evtimer_del(be->deadline);
    be->s = NULL;
    be->cb = NULL;
    be->arg = NULL;
    bufferevent_setcb(be->bev, pool_on_read, NULL, pool_on_event, be);
    bufferevent_set_timeouts(be->bev, NULL, NULL);
    be->pool_timer = evtimer_new(be->base, pool_on_timer, be);
    evtimer_add(be->pool_timer, &tv);
    be->pool_next = reg->pool;
    reg->pool = be;
    reg->npool++;
    return true;
}

/* pool_take - an idle connection to this backend, adopted by a session */
static struct pc_backend *pool_take(struct pc_session *s, const struct pc_backend_conf *bc,
                                    pc_backend_cb *cb, void *arg)
{
    struct be_registry *reg = reg_of(s->conf);

    for (struct pc_backend **p = reg ? &reg->pool : NULL; p && *p; p = &(*p)->pool_next) {
        struct pc_backend *be = *p;
        if (be->bc != bc)
            continue;
        *p = be->pool_next;
        reg->npool--;
        event_free(be->pool_timer);
        be->pool_timer = NULL;
        be->s = s;
        be->conf = s->conf;
        be->cb = cb;
        be->arg = arg;
        bufferevent_setcb(be->bev, on_read, on_write, on_event, be);
        return be;
    }
    return NULL;
}

/* pc_backend_free - the session is done with us (deferred when called from our callback) */
void pc_backend_free(struct pc_backend *be)
{
    if (be == NULL || be->free_req)
        return;
    if (pool_put(be))
        return;
    /* An orderly QUIT when no command is outstanding (RFC 5321 4.1.1.10); a connection in the
     * middle of a command or broken by the backend is just closed. */
    be_retire(be, be->state == BE_READY);
    event_del(be->synth);
    be->state = BE_DEAD;
    if (be->depth > 0) {
        be->free_req = true;
        return;
    }
    be_destroy(be);
}

/* pc_backend_ready - connected and idle */
bool pc_backend_ready(const struct pc_backend *be)
{
    return be->kind->hello == NULL || be->state == BE_READY;
}

/*
 * What each backend of the current generation offers, for our EHLO before a session has its
 * own connection. Learnt by a probe (connect, EHLO, QUIT) when the generation starts, and
 * again from every real connection. Unknown (never reached, or a session of an older
 * generation) means "offer only what is safe": never SMTPUTF8 or DSN (RFC 6531 3.4,
 * RFC 3461 4), which we cannot honour without a backend that takes them.
 */

/* caps_slot - the cache entry of a backend of this generation's registry, or NULL */
static struct be_caps *caps_slot(const struct pc_conf *conf, const struct pc_backend_conf *bc)
{
    struct be_registry *reg = reg_of(conf);

    if (reg == NULL || bc < conf->backends || bc >= conf->backends + conf->nbackends ||
        (size_t)(bc - conf->backends) >= reg->ncaps)
        return NULL;
    return &reg->caps[bc - conf->backends];
}

/* caps_learn - remember what a backend of this generation offers */
static void caps_learn(const struct pc_conf *conf, const struct pc_backend_conf *bc, unsigned ext)
{
    struct be_caps *slot = caps_slot(conf, bc);

    if (slot) {
        slot->ext = ext;
        slot->known = true;
    }
}

/* known_ext_set - remember what this connection's backend offers (its first EHLO) */
static void known_ext_set(const struct pc_backend *be, unsigned ext)
{
    caps_learn(be->conf, be->bc, ext);
}

/* pc_backend_known_ext - what the backend offered last time; 0 while unknown */
unsigned pc_backend_known_ext(const struct pc_backend_conf *bc)
{
    if (kind_of(bc)->hello == NULL)
        return kind_of(bc)->local_ext;
    const struct be_caps *slot = pc_be_reg ? caps_slot(pc_be_reg->conf, bc) : NULL;
    return slot && slot->known ? slot->ext : 0;
}

/* ehlo_ext - extensions (and XCLIENT/XFORWARD attributes) from an EHLO reply text */
static unsigned ehlo_ext(const char *text, char *xc, size_t xcsize, char *xf, size_t xfsize)
{
    const char *p = strchr(text, '\n'); /* the first line is the greeting name */
    unsigned ext = 0;

    if (xc)
        xc[0] = 0;
    if (xf)
        xf[0] = 0;
    while (p) {
        p++;
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char kw[64];
        size_t k = 0;
        while (k < len && k < sizeof(kw) - 1 && p[k] != ' ')
            kw[k] = (char)toupper((unsigned char)p[k]), k++;
        kw[k] = 0;
        const char *rest = k < len ? p + k + 1 : "";
        size_t rl = k < len ? len - k - 1 : 0;
        if (strcmp(kw, "PIPELINING") == 0)
            ext |= PC_EXT_PIPELINING;
        else if (strcmp(kw, "SIZE") == 0)
            ext |= PC_EXT_SIZE;
        else if (strcmp(kw, "8BITMIME") == 0)
            ext |= PC_EXT_8BITMIME;
        else if (strcmp(kw, "SMTPUTF8") == 0)
            ext |= PC_EXT_SMTPUTF8;
        else if (strcmp(kw, "DSN") == 0)
            ext |= PC_EXT_DSN;
        else if (strcmp(kw, "CHUNKING") == 0)
            ext |= PC_EXT_CHUNKING;
        else if (strcmp(kw, "STARTTLS") == 0)
            ext |= PC_EXT_STARTTLS;
        else if (strcmp(kw, "XCLIENT") == 0) {
            ext |= PC_EXT_XCLIENT;
            if (xc)
                snprintf(xc, xcsize, " %.*s ", (int)rl, rest);
        } else if (strcmp(kw, "XFORWARD") == 0) {
            ext |= PC_EXT_XFORWARD;
            if (xf)
                snprintf(xf, xfsize, " %.*s ", (int)rl, rest);
        }
        p = nl;
    }
    return ext;
}

/* A capability probe: connect, greeting, EHLO (LHLO), QUIT, on each address in turn. */
struct be_probe {
    struct pc_conf *conf; /* referenced while the probe runs (bounded by its deadline) */
    size_t bi, addr_idx;
    int step; /* 0 greeting, 1 EHLO, 2 QUIT */
    struct bufferevent *bev;
    struct event *timer;
    struct pc_reply reply;
    struct event_base *base;
};
static size_t pc_be_probes; /* in flight */
/* At most this long (or the backend timeouts, if shorter): the start waits for the probe. */
#define PC_BE_PROBE_MS 5000

static void probe_next(struct be_probe *, const char *why);

/* probe_end - the probe is over */
static void probe_end(struct be_probe *p)
{
    if (p->bev)
        bufferevent_free(p->bev);
    event_free(p->timer);
    pc_conf_unref(p->conf);
    free(p);
    pc_be_probes--;
}

/* probe_on_read - greeting, EHLO reply, QUIT reply */
static void probe_on_read(struct bufferevent *bev, void *arg)
{
    struct be_probe *p = arg;
    const struct pc_backend_conf *bc = &p->conf->backends[p->bi];
    char *line;
    size_t len;

    while ((line = evbuffer_readln(bufferevent_get_input(bev), &len, EVBUFFER_EOL_CRLF))) {
        int rc = len > PC_BE_LINE_MAX ? -1 : pc_reply_parse_line(&p->reply, line, len);
        free(line);
        if (p->step == 2) {
            probe_end(p);
            return;
        }
        if (rc < 0) {
            probe_next(p, "garbled reply");
            return;
        }
        if (rc == 0)
            continue;
        if (p->step == 0 && p->reply.code == 220) {
            const char *name = bc->helo_name ? bc->helo_name : p->conf->hostname;
            evbuffer_add_printf(bufferevent_get_output(bev), "%s %s\r\n", kind_of(bc)->hello, name);
            memset(&p->reply, 0, sizeof(p->reply));
            p->step = 1;
        } else if (p->step == 1 && p->reply.code == 250) {
            unsigned ext = ehlo_ext(p->reply.text, NULL, 0, NULL, 0);
            /* Behind STARTTLS the backend may offer more or less (RFC 3207 4.2): the first
             * connection that says it learns what counts. */
            if (!tls_mode_of(bc)->starttls || !(ext & PC_EXT_STARTTLS))
                caps_learn(p->conf, bc, ext);
            pc_info("backend %s: %s offers%s%s%s%s%s%s", bc->name, bc->addresses[p->addr_idx],
                    ext & PC_EXT_PIPELINING ? " PIPELINING" : "",
                    ext & PC_EXT_CHUNKING ? " CHUNKING" : "",
                    ext & PC_EXT_8BITMIME ? " 8BITMIME" : "",
                    ext & PC_EXT_SMTPUTF8 ? " SMTPUTF8" : "", ext & PC_EXT_DSN ? " DSN" : "",
                    ext & PC_EXT_XCLIENT    ? " XCLIENT"
                    : ext & PC_EXT_XFORWARD ? " XFORWARD"
                                            : "");
            bufferevent_write(bev, "QUIT\r\n", 6);
            p->step = 2;
        } else {
            probe_next(p, p->step == 0 ? "greeting was not 220" : "EHLO refused");
            return;
        }
    }
}

/* probe_proxy - a backend that expects a PROXY header (Exim's hosts_proxy) drops a connection
 * without one: the probe sends one that names itself, which is the truth */
static void probe_proxy(struct be_probe *p)
{
    enum pc_identity id = p->conf->backends[p->bi].identity;
    struct sockaddr_storage me, peer;
    socklen_t ml = sizeof(me), pl = sizeof(peer);
    evutil_socket_t fd = bufferevent_getfd(p->bev);

    if (id != PC_IDENT_PROXY_V2 && id != PC_IDENT_PROXY_V1)
        return;
    if (getsockname(fd, (struct sockaddr *)&me, &ml) < 0 ||
        getpeername(fd, (struct sockaddr *)&peer, &pl) < 0 ||
        !proxy_write(p->bev, id == PC_IDENT_PROXY_V2, (struct sockaddr *)&me,
                     (struct sockaddr *)&peer))
        pc_warn("backend %s: capability probe: cannot write a PROXY header",
                p->conf->backends[p->bi].name);
}

/* probe_on_event - connected, or it failed */
static void probe_on_event(struct bufferevent *bev, short what, void *arg)
{
    struct be_probe *p = arg;

    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        probe_proxy(p);
        return;
    }
    if (p->step == 2)
        probe_end(p);
    else
        probe_next(p, (what & BEV_EVENT_EOF) ? "closed the connection" : "connection error");
}

/* probe_on_timer - the whole probe took too long */
static void probe_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct be_probe *p = arg;

    (void)fd, (void)what;
    if (p->step == 2) {
        probe_end(p);
        return;
    }
    p->addr_idx = p->conf->backends[p->bi].naddr; /* no time left for the others */
    probe_next(p, "timed out");
}

/* probe_connect - start on the current address */
static bool probe_connect(struct be_probe *p)
{
    struct sockaddr_storage ss;
    socklen_t sl;

    if (!be_sockaddr(p->conf->backends[p->bi].addresses[p->addr_idx], &ss, &sl))
        return false;
    memset(&p->reply, 0, sizeof(p->reply));
    p->step = 0;
    p->bev = bufferevent_socket_new(p->base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(p->bev, probe_on_read, NULL, probe_on_event, p);
    bufferevent_enable(p->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(p->bev, (struct sockaddr *)&ss, (int)sl) < 0) {
        bufferevent_free(p->bev);
        p->bev = NULL;
        return false;
    }
    return true;
}

/* probe_next - this address failed: the next one, or give up (capabilities stay unknown) */
static void probe_next(struct be_probe *p, const char *why)
{
    const struct pc_backend_conf *bc = &p->conf->backends[p->bi];

    if (p->addr_idx < bc->naddr)
        pc_warn("backend %s: capability probe of %s: %s", bc->name, bc->addresses[p->addr_idx],
                why);
    if (p->bev) {
        bufferevent_free(p->bev);
        p->bev = NULL;
    }
    while (++p->addr_idx < bc->naddr)
        if (probe_connect(p))
            return;
    pc_warn("backend %s: capabilities unknown; EHLO offers neither SMTPUTF8 nor DSN until a "
            "connection succeeds",
            bc->name);
    probe_end(p);
}

/* reg_new - an empty registry for a generation that starts serving */
static struct be_registry *reg_new(const struct pc_conf *conf)
{
    struct be_registry *reg = calloc(1, sizeof(*reg));

    if (reg == NULL ||
        (reg->caps = calloc(conf->nbackends ? conf->nbackends : 1, sizeof(*reg->caps))) == NULL)
        pc_fatal("out of memory");
    reg->conf = conf;
    reg->ncaps = conf->nbackends;
    return reg;
}

/* reg_free - a generation stops serving: QUIT its idle connections, forget what it learnt */
static void reg_free(struct be_registry *reg)
{
    if (reg == NULL)
        return;
    while (reg->pool)
        pool_drop(reg->pool, true);
    free(reg->caps);
    free(reg);
}

/* pc_backend_generation - a configuration generation starts serving: forget the pooled
 * connections of the previous one, and probe each backend's capabilities */
void pc_backend_generation(struct event_base *base, struct pc_conf *conf)
{
    const struct pc_timeouts *t = &conf->timeouts;
    unsigned long ms = (unsigned long)t->backend_connect + t->backend_greeting + t->backend_command;
    struct timeval tv = tv_ms(ms < PC_BE_PROBE_MS ? (unsigned)ms : PC_BE_PROBE_MS);

    reg_free(pc_be_reg);
    pc_be_reg = reg_new(conf);
    for (size_t i = 0; i < conf->nbackends; i++) {
        if (kind_of(&conf->backends[i])->hello == NULL || conf->backends[i].naddr == 0)
            continue;
        struct be_probe *p = calloc(1, sizeof(*p));
        if (p == NULL)
            pc_fatal("out of memory");
        p->conf = conf;
        pc_conf_ref(conf);
        p->bi = i;
        p->base = base;
        p->timer = evtimer_new(base, probe_on_timer, p);
        evtimer_add(p->timer, &tv);
        pc_be_probes++;
        if (!probe_connect(p))
            probe_next(p, "cannot connect");
    }
}

/* pc_backend_probing - capability probes still running */
bool pc_backend_probing(void)
{
    return pc_be_probes > 0;
}

/* pc_backend_ext - extensions the backend offered */
unsigned pc_backend_ext(const struct pc_backend *be)
{
    return be->kind->hello ? be->ext : be->kind->local_ext;
}

/* be_write - bytes to the backend: straight to the socket when nothing is queued (encrypted
 * by SSL_write under TLS), queued behind what is */
static void be_write(struct pc_backend *be, const void *data, size_t len)
{
    pc_bev_write(be->bev, data, len);
}

/* be_send - one command line; its reply is due within timeout_ms */
static void be_send(struct pc_backend *be, enum be_state next, unsigned timeout_ms, const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));
static void be_send(struct pc_backend *be, enum be_state next, unsigned timeout_ms, const char *fmt,
                    ...)
{
    struct timeval wt = tv_ms(be->conf->timeouts.backend_command);
    struct pc_buf line;
    va_list ap;

    pc_buf_init(&line, 0);
    va_start(ap, fmt);
    pc_buf_vprintf(&line, fmt, ap);
    va_end(ap);
    pc_buf_append(&line, "\r\n", 2);
    be_write(be, line.data, line.len);
    pc_buf_free(&line);
    memset(&be->reply, 0, sizeof(be->reply));
    be->state = next;
    /* The write side keeps an idle timer (a backend that stops reading); the reply has a
     * deadline, however slowly its bytes trickle in. */
    bufferevent_set_timeouts(be->bev, NULL, &wt);
    be_arm(be, timeout_ms);
}

/* parse_ehlo - extensions from the EHLO reply */
static void parse_ehlo(struct pc_backend *be)
{
    be->ext = ehlo_ext(be->reply.text, be->xclient_attrs, sizeof(be->xclient_attrs),
                       be->xforward_attrs, sizeof(be->xforward_attrs));
    if (be->state == BE_EHLO && !tls_next(be))
        known_ext_set(be, be->ext);
}

/* attr_ok - does the backend take this XCLIENT/XFORWARD attribute (" NAME " in attrs, any case) */
static bool attr_ok(const char *attrs, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = strchr(attrs, ' '); p; p = strchr(p + 1, ' '))
        if (strncasecmp(p + 1, name, n) == 0 && p[1 + n] == ' ')
            return true;
    return false;
}

/* xtext - RFC 3461 xtext encoding of a value into buf */
static const char *xtext(const char *v, char *buf, size_t size)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (; *v && o + 4 < size; v++) {
        unsigned char c = (unsigned char)*v;
        if (c < 33 || c > 126 || c == '+' || c == '=') {
            buf[o++] = '+';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o] = 0;
    return buf;
}

/* put_str - append s to out[size] at *o, truncated, always terminated */
static void put_str(char *out, size_t size, size_t *o, const char *s)
{
    size_t n = strlen(s);

    if (*o >= size)
        return;
    if (n > size - 1 - *o)
        n = size - 1 - *o;
    memcpy(out + *o, s, n);
    *o += n;
    out[*o] = 0;
}

/* identity_line - "XCLIENT NAME=... ADDR=..." with the attributes the backend takes */
static void identity_line(struct pc_backend *be, const char *verb, const char *attrs, char *out,
                          size_t size)
{
    const struct pc_session *s = be->s;
    char v[600], port[16];
    size_t o = 0;
    bool xclient = strcmp(verb, "XCLIENT") == 0;
    /* XCLIENT and XFORWARD spell an unknown name alike (Postfix XCLIENT_README) */
    const char *name = strcmp(s->client.name, "unknown") ? s->client.name : "[UNAVAILABLE]";

    if (size == 0)
        return;
    out[0] = 0;
    put_str(out, size, &o, verb);
    snprintf(port, sizeof(port), "%u", s->client.port);
    struct {
        const char *k, *v;
    } kv[] = {
        {"NAME", name},
        {"ADDR", s->client.addr},
        {"PORT", port},
        {"PROTO", s->esmtp ? "ESMTP" : "SMTP"},
        {"HELO", s->helo ? s->helo : "[UNAVAILABLE]"},
        {"LOGIN", xclient ? s->auth_user : NULL},
        {"SOURCE", xclient ? NULL : "REMOTE"},
    };
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
        if (kv[i].v == NULL || !attr_ok(attrs, kv[i].k) || o + 1 >= size)
            continue;
        put_str(out, size, &o, " ");
        put_str(out, size, &o, kv[i].k);
        put_str(out, size, &o, "=");
        if (i == 1 && !pc_ip_is_v4(&s->client.ip))
            put_str(out, size, &o, "IPV6:"); /* xtext of "IPV6:" is itself */
        put_str(out, size, &o, xtext(kv[i].v, v, sizeof(v)));
    }
}

/* keep_pending - remember a command (copies of its address and parameters) until we are ready */
static void keep_pending(struct pc_backend *be, const struct pc_backend_cmd *cmd)
{
    free(be->pending_addr);
    for (size_t i = 0; i < be->pending_nparams; i++) {
        free((char *)be->pending_params[i].key);
        free((char *)be->pending_params[i].value);
    }
    be->has_pending = cmd != NULL;
    be->pending_addr = cmd ? strdup(cmd->addr) : NULL;
    be->pending_verb = cmd ? cmd->verb : PC_BACKEND_MAIL;
    be->pending_nparams = cmd && cmd->nparams <= PC_MAX_PARAMS ? cmd->nparams : 0;
    for (size_t i = 0; i < be->pending_nparams; i++) {
        be->pending_params[i].key = strdup(cmd->params[i].key);
        be->pending_params[i].value = cmd->params[i].value ? strdup(cmd->params[i].value) : NULL;
    }
}

/* send_pending - the connection is ready: send what waited for it */
static void send_pending(struct pc_backend *be)
{
    if (!be->has_pending)
        return;
    struct pc_param params[PC_MAX_PARAMS];
    struct pc_backend_cmd cmd = {.verb = be->pending_verb,
                                 .addr = be->pending_addr,
                                 .params = params,
                                 .nparams = be->pending_nparams};
    memcpy(params, be->pending_params, cmd.nparams * sizeof(*params));
    be->has_pending = false;
    be->pending_addr = NULL;
    be->pending_nparams = 0;
    be_command(be, &cmd);
    free((char *)cmd.addr);
    for (size_t i = 0; i < cmd.nparams; i++) {
        free((char *)params[i].key);
        free((char *)params[i].value);
    }
}

/* param_ok - does the backend take this ESMTP parameter */
static bool param_ok(const struct pc_backend *be, const char *k)
{
    unsigned ext = pc_backend_ext(be);

    if (!strcasecmp(k, "AUTH"))
        return false; /* our own AUTH identity is passed with XCLIENT LOGIN */
    if (!strcasecmp(k, "RET") || !strcasecmp(k, "ENVID") || !strcasecmp(k, "NOTIFY") ||
        !strcasecmp(k, "ORCPT"))
        return ext & PC_EXT_DSN;
    if (!strcasecmp(k, "SMTPUTF8"))
        return ext & PC_EXT_SMTPUTF8;
    if (!strcasecmp(k, "SIZE"))
        return ext & PC_EXT_SIZE;
    if (!strcasecmp(k, "BODY"))
        return ext & PC_EXT_8BITMIME;
    return true;
}

/* ident_key - the client this session would have the backend see (every XCLIENT attribute) */
static void ident_key(struct pc_backend *be, char *out, size_t size)
{
    identity_line(be, "XCLIENT", " NAME ADDR PORT PROTO HELO LOGIN ", out, size);
}

/* be_xclient - tell the backend who the client is; EHLO follows (it restarts the session) */
static void be_xclient(struct pc_backend *be)
{
    char line[1024];

    ident_key(be, be->ident_sending, sizeof(be->ident_sending));
    identity_line(be, "XCLIENT", be->xclient_attrs, line, sizeof(line));
    be->identified = false;
    be_send(be, BE_XCLIENT, be->conf->timeouts.backend_command, "%s", line);
}

/* ident_ready_now - nothing to pass (none), or passed before each MAIL (xforward) */
static bool ident_ready_now(struct pc_backend *be)
{
    (void)be;
    return true;
}

/* xclient_start - XCLIENT on a new connection, or fail over when it is not offered */
static bool xclient_start(struct pc_backend *be)
{
    if (!(be->ext & PC_EXT_XCLIENT)) {
        /* Delivering anyway would make every client look like us (often "mynetworks" to
         * the backend) and skip the backend's own client checks. */
        pc_err("%s: backend %s does not offer XCLIENT although identity = xclient: allow "
               "our address in smtpd_authorized_xclient_hosts, or set identity = \"none\"",
               sid(be), be->relay);
        be_try_next(be, "no XCLIENT");
        return false;
    }
    be->ident_refresh = false;
    be_xclient(be);
    return false;
}

/* be_after_ehlo - pass identity or become ready */
static void be_after_ehlo(struct pc_backend *be, bool second)
{
    if (!second && !be->ident->start(be))
        return;
    if (second) {
        /* Confirmed: XCLIENT was taken and the session restarted under the client's name. */
        be->identified = true;
        be->ident_refresh = false;
        memcpy(be->ident_key, be->ident_sending, sizeof(be->ident_key));
    }
    be->state = BE_READY;
    send_pending(be);
}

/* be_reconnect - this connection cannot speak for the next client: QUIT it, open another */
static void be_reconnect(struct pc_backend *be, const char *why)
{
    pc_info("%s: backend %s: %s; new connection", sid(be), be->relay, why);
    be_retire(be, true);
    be->state = BE_IDLE;
    be->identified = be->ident_refresh = be->xforward_sent = false;
    pc_backend_open(be);
}

/* xclient_before_mail - XCLIENT again when the connection speaks for another client (a pooled
 * connection, a new HELO name); a new connection when XCLIENT is no longer offered */
static bool xclient_before_mail(struct pc_backend *be)
{
    char key[sizeof(be->ident_key)];

    ident_key(be, key, sizeof(key));
    if (be->identified && strcmp(key, be->ident_key) == 0)
        return true;
    if (be->ext & PC_EXT_XCLIENT) {
        be->ident_refresh = true;
        be_xclient(be);
        return false;
    }
    be_reconnect(be, "XCLIENT is no longer offered for another client");
    return false;
}

/* xforward_before_mail - XFORWARD before every MAIL (Postfix resets its attributes after each
 * transaction, XFORWARD_README) */
static bool xforward_before_mail(struct pc_backend *be)
{
    char line[1024];

    if (!(be->ext & PC_EXT_XFORWARD) || be->xforward_sent)
        return true;
    identity_line(be, "XFORWARD", be->xforward_attrs, line, sizeof(line));
    be_send(be, BE_XFORWARD, be->conf->timeouts.backend_command, "%s", line);
    return false;
}

/* be_ehlo - greet the backend; after XCLIENT under the client's own HELO name, which is what
 * Postfix logs and writes into its Received header (XCLIENT_README) */
static void be_ehlo(struct pc_backend *be, enum be_state next)
{
    const char *name = be->bc->helo_name ? be->bc->helo_name : be->conf->hostname;

    if (next == BE_EHLO2 && be->s && be->s->helo && be->s->helo[0])
        name = be->s->helo;
    be_send(be, next, be->conf->timeouts.backend_command, "%s %s", be->kind->hello, name);
}

static void data_sent(struct pc_backend *);

/* tls_next - this connection is about to say STARTTLS (what its EHLO offered does not count) */
static bool tls_next(const struct pc_backend *be)
{
    return be->tlsm->starttls && !be->tls_on && !be->tls_plain && (be->ext & PC_EXT_STARTTLS);
}

/* tls_step - after the first EHLO: STARTTLS when the mode asks for it; true when the TLS mode
 * took the connection over (STARTTLS sent, or the connection failed) */
static bool tls_step(struct pc_backend *be)
{
    if (!be->tlsm->starttls || be->tls_on || be->tls_plain)
        return false;
    if (be->ext & PC_EXT_STARTTLS) {
        be_send(be, BE_STARTTLS, be->conf->timeouts.backend_command, "STARTTLS");
        return true;
    }
    return be->tlsm->unavailable(be, "STARTTLS not offered");
}

/* tls_carry_on - may: no STARTTLS here, plaintext it is (RFC 7435 opportunistic security) */
static bool tls_carry_on(struct pc_backend *be, const char *why)
{
    pc_info("%s: backend %s: %s; continuing without TLS (tls = may)", sid(be), be->relay, why);
    return false;
}

/* tls_refuse - encrypt, verify: a backend without STARTTLS is a failed connection (a stripped
 * STARTTLS looks exactly like this) */
static bool tls_refuse(struct pc_backend *be, const char *why)
{
    pc_err("%s: backend %s: %s although tls = %s; no mail goes there in plaintext", sid(be),
           be->relay, why, be->tlsm->name);
    be_try_next(be, why);
    return true;
}

/* tls_retry_plain - may: the handshake failed; the same address once more without TLS */
static void tls_retry_plain(struct pc_backend *be, const char *why)
{
    pc_warn("%s: backend %s: TLS handshake failed (%s); retrying in plaintext (tls = may)", sid(be),
            be->relay, why);
    be->tls_plain = true;
    if (!be_connect(be))
        be_try_next(be, "cannot connect");
}

/* tls_fail_over - encrypt, verify: the handshake failed; the next address, then 451 */
static void tls_fail_over(struct pc_backend *be, const char *why)
{
    char what[400];

    snprintf(what, sizeof(what), "TLS handshake failed (%.300s)", why);
    be_try_next(be, what);
}

/* on_tls - the handshake with the backend ended (its callback holds the depth tls_start took) */
static void on_tls(struct bufferevent *bev, const char *error, void *arg)
{
    struct pc_backend *be = arg;
    struct pc_tls_facts f;

    if (be->free_req || error) {
        if (bev) /* NULL after a failure: tls.c closed the socket */
            bufferevent_free(bev);
        if (!be->free_req)
            be->tlsm->failed(be, error);
        be_leave(be);
        return;
    }
    be->bev = bev;
    be->tls_on = true;
    pc_tls_facts(bev, &f);
    pc_info("%s: backend %s: TLS %s %s%s", sid(be), be->relay, f.version, f.cipher,
            f.peer_verified ? " verified" : "");
    bufferevent_setcb(bev, on_read, on_write, on_event, be);
    bufferevent_setwatermark(bev, EV_WRITE, PC_BE_FILL / 4, 0);
    /* tls.c enabled it for reading and writing (enabling writing again would add libevent's
     * write event for nothing: an epoll_ctl now and one at its first idle pass) */
    /* RFC 3207 4.2: forget what the plaintext EHLO said; ask again. */
    be->ext = 0;
    be_ehlo(be, BE_EHLO);
    be_leave(be);
}

/* tls_start - the backend said 220 to STARTTLS: hand the socket to a TLS bufferevent */
static void tls_start(struct pc_backend *be)
{
    struct evbuffer *in = bufferevent_get_input(be->bev);
    evutil_socket_t fd = bufferevent_getfd(be->bev);
    char host[256], port[16];
    const char *name = be->bc->tls_name;

    if (name == NULL &&
        pc_parse_hostport(be->bc->addresses[be->addr_idx], host, sizeof(host), port, sizeof(port)))
        name = host;
    /* Whatever came behind the 220 was sent before TLS: never read it as a reply
     * (response injection, the mirror of CVE-2011-0411). */
    evbuffer_drain(in, evbuffer_get_length(in));
    evtimer_del(be->deadline);
    /* OpenSSL's bufferevent reads the socket from now on, with libevent's own reads. */
    pc_sockread_free(be->rd);
    be->rd = NULL;
    bufferevent_setfd(be->bev, -1); /* the socket stays open for the TLS layer */
    bufferevent_free(be->bev);
    be->bev = NULL;
    be->state = BE_TLS;
    /* Until on_tls runs, the handshake holds us: pc_backend_free() only marks us. */
    be->depth++;
    if (!pc_tls_client_wrap(be->bc->tlsc, be->base, fd, name, be->conf->timeouts.backend_command,
                            on_tls, be)) {
        be->depth--;
        evutil_closesocket(fd);
        be->tlsm->failed(be, "cannot start TLS");
    }
}

/* tls_530 - "530 Must issue a STARTTLS command first" (or authentication required): the
 * backend wants what our configuration does not give it. Not the client's fault, and nothing
 * is lost when it retries: 451 instead of the 5xx that would bounce the message. */
static void tls_530(struct pc_backend *be, struct pc_backend_result *r)
{
    pc_err("%s: backend %s refused %s with %d %d.%d.%d %s: set tls = \"encrypt\" (or may) on "
           "backend \"%s\"",
           sid(be), be->relay, verb_name[be->cmd_verb], r->reply.code, r->reply.enh.cls,
           r->reply.enh.subject, r->reply.enh.detail, r->reply.text, be->bc->name);
    r->local = true;
    r->reply.code = 451;
    pc_enh_parse("4.7.0", &r->reply.enh);
    snprintf(r->reply.text, sizeof(r->reply.text), "Backend requires TLS, try again later");
}

/* sa_of - a numeric address and a port as a sockaddr */
static bool sa_of(const char *addr, unsigned port, struct sockaddr_storage *ss)
{
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, addr, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        return true;
    }
    if (inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        return true;
    }
    return false;
}

/* proxy_write - a PROXY header for src -> dst on bev (v2 binary or the v1 line) */
static bool proxy_write(struct bufferevent *bev, bool v2, const struct sockaddr *src,
                        const struct sockaddr *dst)
{
    uint8_t buf[600];
    int n = v2 ? pc_pp_write_v2(buf, sizeof(buf), src, dst, NULL)
               : pc_pp_write_v1((char *)buf, sizeof(buf), src, dst);

    return n > 0 && bufferevent_write(bev, buf, (size_t)n) == 0;
}

/* proxy_connected - the header for the session's client, first on the new connection */
static bool proxy_connected(struct pc_backend *be, bool v2)
{
    struct sockaddr_storage src, dst;

    if (be->s == NULL || !sa_of(be->s->client.addr, be->s->client.port, &src))
        return false;
    /* The address the client reached us on: the session's when the door knows it, else its
     * listener's (0.0.0.0 for a wildcard one); in the client's family, as the header needs. */
    const char *la = be->s->local_addr;
    unsigned lp = be->s->local_port;
    char host[256], port[16];
    for (size_t i = 0; la[0] == 0 && be->s->listener && i < be->conf->nlisteners; i++) {
        const struct pc_listener_conf *l = &be->conf->listeners[i];
        if (strcmp(l->name, be->s->listener) == 0 &&
            pc_parse_hostport(l->address, host, sizeof(host), port, sizeof(port)))
            la = host, lp = (unsigned)strtoul(port, NULL, 10);
    }
    if (!sa_of(la, lp, &dst) || dst.ss_family != src.ss_family)
        sa_of(src.ss_family == AF_INET ? "0.0.0.0" : "::", lp, &dst);
    return proxy_write(be->bev, v2, (struct sockaddr *)&src, (struct sockaddr *)&dst);
}

/* proxy_v2_connected - identity = "proxy" */
static bool proxy_v2_connected(struct pc_backend *be)
{
    return proxy_connected(be, true);
}

/* proxy_v1_connected - identity = "proxy-v1" */
static bool proxy_v1_connected(struct pc_backend *be)
{
    return proxy_connected(be, false);
}

/* body_file - the next len bytes (exact) or up to len bytes of a spooled body that is sent as it
 * is (no stuffing), from the spool file: sendfile(2) now when nothing is queued on a plain
 * socket, and what the socket cannot take yet queued as a file segment that libevent sends
 * the same way; no byte of it passes through our memory. Under TLS the bytes must be
 * encrypted: read and written, 64 KB per call unless exact. */
static int body_file(struct pc_backend *be, const struct pc_msg *m, size_t len, bool exact)
{
    struct evbuffer *out = bufferevent_get_output(be->bev);
    evutil_socket_t fd = bufferevent_getfd(be->bev);
    size_t end = be->cur.off + len;

    if (be->tls_on || be->no_sendfile) {
        /* All of it for a BDAT chunk; otherwise 64 KB, and fill calls again. */
        if (!exact && end - be->cur.off > 65536)
            end = be->cur.off + 65536;
        while (be->cur.off < end) {
            size_t want = end - be->cur.off < 65536 ? end - be->cur.off : 65536;
            ssize_t n = pc_msg_body_read(m, be->cur.off, be->chunk, want);
            if (n <= 0)
                return -1;
            be_write(be, be->chunk, (size_t)n);
            be->cur.off += (size_t)n;
        }
        return 0;
    }
    off_t off = (off_t)be->cur.off;
    if (fd >= 0 && evbuffer_get_length(out) == 0 && (bufferevent_get_enabled(be->bev) & EV_WRITE)) {
        ssize_t n;
        do
            n = sendfile(fd, m->body_fd, &off, end - be->cur.off);
        while (n < 0 && errno == EINTR);
        if (n < 0 && errno != EAGAIN) {
            /* A spool file system without sendfile, or a broken socket: the plain path,
             * whose write meets a socket error again and reports it as before. */
            be->no_sendfile = true;
            return body_file(be, m, len, exact);
        }
        off = (off_t)be->cur.off + (n > 0 ? n : 0);
    }
    size_t left = end - (size_t)off;
    /* The segment owns a duplicate: the spool may be closed before libevent is done. */
    int dup_fd = left ? dup(m->body_fd) : -1;
    if (left && (dup_fd < 0 || evbuffer_add_file(out, dup_fd, off, (ev_off_t)left) < 0)) {
        if (dup_fd >= 0)
            close(dup_fd);
        return -1;
    }
    be->cur.off = end;
    return 0;
}

/* fill - stream more of the message while the output buffer is low. A body with no line to
 * stuff goes as it is spooled (pc_msg_wire_body): from memory with one copy, or from the
 * spool file with sendfile; otherwise the cursor reads it and pc_stuff doubles the dots. */
static void fill(struct pc_backend *be)
{
    struct evbuffer *out = bufferevent_get_output(be->bev);
    const struct pc_msg *m = &be->s->txn->msg;
    struct pc_buf b;

    if (be->chunk == NULL && (be->chunk = malloc(65536)) == NULL)
        pc_fatal("out of memory");
    pc_buf_init(&b, 0);
    while (evbuffer_get_length(out) < PC_BE_FILL) {
        /* Every header line ends in CRLF, so the body starts a line; if it ever did not, the
         * cursor would read and stuff it. */
        if (be->cur.head_only && be->cur.phase == PC_MSG_BODY && !be->stuff.bol)
            be->cur.head_only = false;
        if (be->cur.head_only && be->cur.phase == PC_MSG_BODY) {
            size_t left = m->body_len - be->cur.off;
            if (left == 0) {
                be->cur.phase = PC_MSG_DONE;
                continue;
            }
            if (m->body_fd < 0) {
                /* In memory (at most spool_threshold): copied once, with the end of data. */
                size_t take = left < PC_BE_FILL ? left : PC_BE_FILL;
                pc_buf_append(&b, m->body.data + be->cur.off, take);
                be->cur.off += take;
                if (b.len >= 65536 && be->cur.off < m->body_len) {
                    be_write(be, b.data, b.len);
                    pc_buf_reset(&b);
                }
                continue;
            }
            if (b.len)
                be_write(be, b.data, b.len);
            pc_buf_reset(&b);
            if (body_file(be, m, left, false) < 0) {
                pc_buf_free(&b);
                be_fail(be, "4.3.0", "Error reading the spooled message");
                return;
            }
            continue;
        }
        ssize_t n = pc_msg_read(m, &be->cur, be->received, be->chunk, 65536);
        if (n < 0) {
            pc_buf_free(&b);
            be_fail(be, "4.3.0", "Error reading the spooled message");
            return;
        }
        /* Up to 64 KB per write, the end of data in the same one: a separate small write
         * of ".\r\n" would wait for an ACK (Nagle) the receiver delays. */
        if (n > 0 || (be->cur.head_only && be->cur.phase == PC_MSG_BODY)) {
            pc_stuff(&be->stuff, be->chunk, (size_t)n, &b);
            if (b.len < 65536)
                continue;
            be_write(be, b.data, b.len);
            pc_buf_reset(&b);
            continue;
        }
        /* Every line we send ends in CRLF; the message ends with CRLF . CRLF. */
        if (be->stuff.bol)
            pc_buf_append(&b, ".\r\n", 3);
        else
            pc_buf_append(&b, "\r\n.\r\n", 5);
        be_write(be, b.data, b.len);
        data_sent(be);
        break;
    }
    pc_buf_free(&b);
}

/* data_sent - the end of the message is in our output: its reply (one per recipient for
 * LMTP, RFC 2033 4.2 and RFC 3030 2) is due within timeouts.backend_data_done */
static void data_sent(struct pc_backend *be)
{
    struct timeval wt = tv_ms(be->conf->timeouts.backend_data_block);

    bufferevent_set_timeouts(be->bev, NULL, &wt);
    be_arm(be, be->conf->timeouts.backend_data_done);
    memset(&be->reply, 0, sizeof(be->reply));
    be->state = BE_DATA_DONE;
    be->lmtp_left = be->kind->reply_per_rcpt ? be->rcpt_ok : 1;
    be->lmtp_any_ok = be->lmtp_any_fail = false;
}

/* bdat_next - the next chunk of the message: "BDAT n" and its bytes; LAST with the chunk that
 * ends the message (a message read to its end without body bytes in the chunk, or an empty
 * one, ends with "BDAT 0 LAST"). The header part comes through the cursor, the body as it is
 * spooled: from memory, or from the spool file as body_file sends it. */
static void bdat_next(struct pc_backend *be)
{
    const struct pc_msg *m = &be->s->txn->msg;
    struct pc_buf b;
    ssize_t n = 1;
    char head[64];

    if (be->chunk == NULL && (be->chunk = malloc(65536)) == NULL)
        pc_fatal("out of memory");
    pc_buf_init(&b, 0);
    while (b.len < PC_BE_BDAT &&
           (n = pc_msg_read(m, &be->cur, be->received, be->chunk,
                            PC_BE_BDAT - b.len < 65536 ? PC_BE_BDAT - b.len : 65536)) > 0)
        pc_buf_append(&b, be->chunk, (size_t)n);
    if (n < 0) {
        pc_buf_free(&b);
        be_fail(be, "4.3.0", "Error reading the spooled message");
        return;
    }
    size_t body = 0;
    if (n == 0 && be->cur.phase == PC_MSG_BODY) {
        size_t left = m->body_len - be->cur.off, room = PC_BE_BDAT - b.len;
        body = left < room ? left : room;
    }
    bool last = n == 0 && (be->cur.phase != PC_MSG_BODY || be->cur.off + body == m->body_len);
    snprintf(head, sizeof(head), "BDAT %zu%s\r\n", b.len + body, last ? " LAST" : "");
    if (body && m->body_fd < 0) {
        pc_buf_append(&b, m->body.data + be->cur.off, body);
        be->cur.off += body;
        body = 0;
    }
    be_write(be, head, strlen(head));
    if (b.len)
        be_write(be, b.data, b.len);
    pc_buf_free(&b);
    if (body && body_file(be, m, body, true) < 0) {
        be_fail(be, "4.3.0", "Error reading the spooled message");
        return;
    }
    if (last) {
        be->cur.phase = PC_MSG_DONE;
        data_sent(be);
        return;
    }
    struct timeval wt = tv_ms(be->conf->timeouts.backend_data_block);
    bufferevent_set_timeouts(be->bev, NULL, &wt);
    be_arm(be, be->conf->timeouts.backend_data_done);
    memset(&be->reply, 0, sizeof(be->reply));
    be->state = BE_BDAT;
}

/* bdat_failed - a BDAT chunk was refused: RFC 3030 2 has the sender stop and RSET; we close
 * instead (simpler, and a half-sent message can never be completed on this connection) */
static void bdat_failed(struct pc_backend *be, struct pc_backend_result *r)
{
    be->broken = true;
    be->in_txn = false;
    be_close(be);
    be->state = BE_DEAD;
    deliver(be, r);
}

/* on_write - the output buffer drained below the watermark */
static void on_write(struct bufferevent *bev, void *arg)
{
    struct pc_backend *be = arg;

    (void)bev;
    be_enter(be);
    if (be->state == BE_DATA_BODY)
        fill(be);
    be_leave(be);
}

/* lmtp_reply - one per accepted recipient; the client hears one answer */
static void lmtp_reply(struct pc_backend *be)
{
    struct pc_backend_result r = {.reply = be->reply};

    if (be->reply.code / 100 == 2)
        be->lmtp_any_ok = true;
    else if (!be->lmtp_any_fail) {
        be->lmtp_any_fail = true;
        be->lmtp_first_fail = r;
    }
    memset(&be->reply, 0, sizeof(be->reply));
    if (--be->lmtp_left > 0)
        return;
    be->state = BE_READY;
    be->in_txn = false;
    if (!be->lmtp_any_fail) {
        deliver(be, &r);
    } else if (!be->lmtp_any_ok) {
        deliver(be, &be->lmtp_first_fail);
    } else {
        /* Some recipients took it, some did not: SMTP has one answer for DATA. A 4xx makes the
         * client retry all, which duplicates for some; a 250 would lose mail for the others. */
        struct pc_backend_result t = {.local = true};
        t.reply.code = 451;
        pc_enh_parse("4.3.0", &t.reply.enh);
        snprintf(t.reply.text, sizeof(t.reply.text),
                 "Backend accepted the message for some recipients only, try again later");
        t.reply.complete = true;
        deliver(be, &t);
    }
}

/* handle_reply - a complete reply in the current state */
static void handle_reply(struct pc_backend *be)
{
    struct pc_backend_result r = {.reply = be->reply};
    int code = be->reply.code;

    if (!(be->state == BE_DATA_DONE && be->kind->reply_per_rcpt && be->lmtp_left > 1))
        evtimer_del(be->deadline);
    switch (be->state) {
    case BE_GREETING:
        if (code != 220) {
            be_try_next(be, "greeting was not 220");
            return;
        }
        be_ehlo(be, BE_EHLO);
        return;
    case BE_EHLO:
    case BE_EHLO2:
        if (code != 250) {
            if (be->ident_refresh) {
                be_reconnect(be, "EHLO after XCLIENT refused");
                return;
            }
            be_try_next(be, "EHLO refused");
            return;
        }
        parse_ehlo(be);
        if (be->state == BE_EHLO && tls_step(be))
            return;
        be_after_ehlo(be, be->state == BE_EHLO2);
        return;
    case BE_STARTTLS:
        if (code == 220) {
            tls_start(be);
            return;
        }
        if (be->tlsm->unavailable(be, "STARTTLS refused"))
            return;
        be_after_ehlo(be, false);
        return;
    case BE_XCLIENT:
        /* Postfix answers 220 (a new greeting); smtp-sink 250. Either way, EHLO again. */
        if (code / 100 != 2) {
            if (be->ident_refresh) {
                /* The connection still speaks for the previous client: never use it. */
                be_reconnect(be, "XCLIENT refused for another client");
                return;
            }
            pc_err("%s: backend %s refused XCLIENT (%d %s): allow our address in "
                   "smtpd_authorized_xclient_hosts, or set identity = \"none\"",
                   sid(be), be->relay, code, be->reply.text);
            be_try_next(be, "XCLIENT refused");
            return;
        }
        be_ehlo(be, BE_EHLO2);
        return;
    case BE_XFORWARD:
        if (code != 250)
            pc_warn("%s: backend %s refused XFORWARD (%d %s)", sid(be), be->relay, code,
                    be->reply.text);
        be->xforward_sent = true;
        be->state = BE_READY;
        send_pending(be);
        return;
    case BE_CMD:
        if (code == 530)
            tls_530(be, &r);
        be->state = code == 421 ? BE_DEAD : BE_READY;
        if (be->cmd_verb == PC_BACKEND_RCPT && code / 100 == 2)
            be->rcpt_ok++;
        if (be->cmd_verb == PC_BACKEND_MAIL && code / 100 == 2)
            be->in_txn = true;
        if (code == 421) {
            be->broken = true;
            be_close(be);
        }
        deliver(be, &r);
        return;
    case BE_DATA_INIT:
        if (code == 354) {
            be->state = BE_DATA_BODY;
            pc_msg_cursor_init(&be->cur);
            be->cur.head_only = pc_msg_wire_body(&be->s->txn->msg);
            pc_stuff_init(&be->stuff);
            memset(&be->reply, 0, sizeof(be->reply));
            struct timeval wt = tv_ms(be->conf->timeouts.backend_data_block);
            bufferevent_set_timeouts(be->bev, NULL, &wt);
            fill(be);
            return;
        }
        be->state = code == 421 ? BE_DEAD : BE_READY;
        if (code == 421) {
            be->broken = true;
            be_close(be);
        }
        deliver(be, &r);
        return;
    case BE_BDAT:
        if (code / 100 == 2)
            bdat_next(be);
        else
            bdat_failed(be, &r);
        return;
    case BE_DATA_DONE:
        if (be->kind->reply_per_rcpt) {
            lmtp_reply(be);
            return;
        }
        if (be->bdat && code / 100 != 2) {
            bdat_failed(be, &r);
            return;
        }
        be->state = code == 421 ? BE_DEAD : BE_READY;
        be->in_txn = false;
        deliver(be, &r);
        return;
    default:
        return;
    }
}

/* be_broken - the backend broke the reply accounting: the waiting command (if any) gets a
 * local 4xx, the connection is closed and never reused, and the log says what happened */
static void be_broken(struct pc_backend *be, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void be_broken(struct pc_backend *be, const char *fmt, ...)
{
    char what[600];
    va_list ap;
    enum be_state st = be->state;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    pc_warn("%s: backend %s broke the protocol while we waited for %s%s%s: %s", sid(be), be->relay,
            be_state_names[st], st == BE_CMD ? " " : "",
            st == BE_CMD ? verb_name[be->cmd_verb] : "", what);
    be->broken = true;
    if (st >= BE_GREETING && st <= BE_XFORWARD && !be->ident_refresh && !be->in_txn) {
        /* Nothing of a transaction is there yet: another address may do better. */
        be_try_next(be, "protocol error");
        return;
    }
    if (st == BE_READY || st == BE_IDLE || st == BE_DEAD) {
        /* Nobody is waiting: the next command hears about it. */
        be_close(be);
        be->state = BE_DEAD;
        return;
    }
    be_fail(be, "4.4.2", "Backend protocol error, try again later");
}

/* input_pending - bytes from the backend beyond the reply we just completed */
static bool input_pending(struct pc_backend *be)
{
    int n = 0;

    if (evbuffer_get_length(bufferevent_get_input(be->bev)) > 0)
        return true;
    if (be->tls_on) /* the socket also carries TLS records that are not data (tickets) */
        return false;
    /* Our last read came back short: the socket had nothing more then (the same moment a
     * FIONREAD now would see, give or take the callback's microseconds). */
    if (pc_sockread_drained(be->rd))
        return false;
    return ioctl(bufferevent_getfd(be->bev), FIONREAD, &n) == 0 && n > 0;
}

/* class_ok - can the command we wait for take a reply of this code */
static bool class_ok(enum be_state st, int code)
{
    switch (st) {
    case BE_DATA_INIT:
        return code == 354 || code / 100 == 4 || code / 100 == 5;
    case BE_CMD:
    case BE_DATA_DONE:
    case BE_BDAT:
    case BE_XCLIENT:
    case BE_XFORWARD:
    case BE_EHLO:
    case BE_STARTTLS:
    case BE_EHLO2:
    case BE_GREETING:
        return code / 100 != 3;
    default:
        return false;
    }
}

/* on_read - reply lines, each accounted to the one command it answers */
static void on_read(struct bufferevent *bev, void *arg)
{
    struct pc_backend *be = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len;
    char *line;

    be_enter(be);
    while (!be->free_req && be->bev && bev == be->bev &&
           (line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) != NULL) {
        enum be_state st = be->state;
        if ((st == BE_READY || st == BE_IDLE || st == BE_DEAD) && len >= 3 &&
            memcmp(line, "421", 3) == 0) {
            /* RFC 5321 3.8: a server about to close may say 421 at any time. */
            free(line);
            be_lost(be, "closed the connection (421)");
            break;
        }
        if (st == BE_IDLE || st == BE_CONNECTING || st == BE_READY || st == BE_DEAD ||
            st == BE_DATA_BODY) {
            /* RFC 2920 3.1: a server replies to commands; nothing was outstanding (or the
             * message was still on its way: a reply now cannot be to all of it). */
            be_broken(be, "reply nobody asked for: \"%.200s\"", line);
            free(line);
            break;
        }
        int rc = len > PC_BE_LINE_MAX ? -1 : pc_reply_parse_line(&be->reply, line, len);
        if (rc < 0) {
            be_broken(be, "garbled reply line: \"%.200s\"", line);
            free(line);
            break;
        }
        free(line);
        if (rc == 0)
            continue;
        int code = be->reply.code;
        if (!class_ok(st, code)) {
            be_broken(be, "%d reply (%.200s)", code, be->reply.text);
            break;
        }
        if ((st == BE_DATA_DONE || st == BE_BDAT) &&
            evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
            be_broken(be, "%d reply (%.200s) before the end of the message was sent", code,
                      be->reply.text);
            break;
        }
        bool more = st == BE_DATA_DONE && be->kind->reply_per_rcpt && be->lmtp_left > 1;
        /* Behind the 220 to STARTTLS it is discarded instead (tls_start). */
        if (!more && st != BE_STARTTLS && input_pending(be)) {
            /* One command, one reply: whatever follows it was not asked for. */
            be_broken(be, "more after its %d reply (%.200s)", code, be->reply.text);
            break;
        }
        handle_reply(be);
    }
    if (!be->free_req && be->bev && bev == be->bev && evbuffer_get_length(in) > PC_BE_LINE_MAX)
        be_broken(be, "reply line too long");
    be_leave(be);
}

/* be_fail - report a local failure and close */
static void be_fail(struct pc_backend *be, const char *enh, const char *fmt, ...)
{
    struct pc_backend_result r = {.local = true};
    va_list ap;

    be_close(be);
    be->state = BE_DEAD;
    r.reply.code = 451;
    pc_enh_parse(enh, &r.reply.enh);
    va_start(ap, fmt);
    vsnprintf(r.reply.text, sizeof(r.reply.text), fmt, ap);
    va_end(ap);
    r.reply.complete = true;
    pc_warn("%s: backend %s: %s", sid(be), be->relay, r.reply.text);
    deliver(be, &r);
}

/* be_lost - the connection closed, failed or missed a deadline */
static void be_lost(struct pc_backend *be, const char *why)
{
    if (be->state <= BE_XFORWARD && be->state != BE_IDLE && !be->ident_refresh) {
        be_try_next(be, why);
    } else if (be->state <= BE_XFORWARD && be->state != BE_IDLE) {
        /* Lost while identifying the next client on an established connection. */
        be_close(be);
        be->state = BE_IDLE;
        be_reconnect(be, why);
    } else if (be->state == BE_READY || be->state == BE_DEAD || be->state == BE_IDLE) {
        /* Idle between commands: a new connection at the next MAIL, but a transaction that
         * holds this one is over (it never moves to another connection). */
        if (be->in_txn) {
            pc_warn("%s: backend %s %s during the transaction", sid(be), be->relay, why);
            be->broken = true;
        }
        be_close(be);
        be->state = be->in_txn ? BE_DEAD : BE_IDLE;
    } else {
        be->broken = true;
        be_fail(be, "4.4.2", "Lost connection with backend (%s)", why);
    }
}

/* on_event - connected, closed, error, a write timeout */
static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct pc_backend *be = arg;

    (void)bev;
    be_enter(be);
    if (what & BEV_EVENT_CONNECTED) {
        pc_bev_nodelay(be->bev);
        pc_sockread_enable(be->rd, true);
        if (be->ident->connected && !be->ident->connected(be)) {
            be_try_next(be, "cannot write the PROXY header for this client");
            be_leave(be);
            return;
        }
        be->state = BE_GREETING;
        bufferevent_set_timeouts(be->bev, NULL, NULL);
        be_arm(be, be->conf->timeouts.backend_greeting);
        be_leave(be);
        return;
    }
    be_lost(be, (what & BEV_EVENT_TIMEOUT) ? "timed out"
                : (what & BEV_EVENT_EOF)   ? "closed the connection"
                                           : "connection error");
    be_leave(be);
}

/* format_relay - Postfix's relay=name[addr]:port (name[path] for a UNIX socket), for the log */
static void format_relay(struct pc_backend *be, const char *host, const char *port,
                         const struct sockaddr_storage *ss, socklen_t sl)
{
    char addr[INET6_ADDRSTRLEN + 8] = "";

    /* Bounded pieces: 200 + 62 + 15 and the punctuation fit be->relay. */
    if (port[0] == 0) {
        snprintf(be->relay, sizeof(be->relay), "local[%.200s]", host);
        return;
    }
    if (getnameinfo((const struct sockaddr *)ss, sl, addr, sizeof(addr), NULL, 0, NI_NUMERICHOST) !=
        0)
        snprintf(addr, sizeof(addr), "%.50s", host);
    snprintf(be->relay, sizeof(be->relay), "%.200s[%.62s]:%.15s", host, addr, port);
}

/* on_deadline - the whole reply did not arrive in time */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct pc_backend *be = arg;

    (void)fd, (void)what;
    be_enter(be);
    be_lost(be, "timed out");
    be_leave(be);
}

/* be_sockaddr - a backend address ("host:port", "[v6]:port" or a socket path) */
static bool be_sockaddr(const char *a, struct sockaddr_storage *ss, socklen_t *sl)
{
    char host[256], port[16];

    if (!pc_parse_hostport(a, host, sizeof(host), port, sizeof(port)))
        return false;
    memset(ss, 0, sizeof(*ss));
    if (port[0] == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)ss;
        un->sun_family = AF_UNIX;
        if (strlen(host) >= sizeof(un->sun_path))
            return false;
        pc_strlcpy(un->sun_path, host, sizeof(un->sun_path));
        *sl = sizeof(*un);
        return true;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV},
                    *res;
    /* Backends are addresses; a host name is looked up once here (blocking). */
    if (getaddrinfo(host, port, &hints, &res) != 0) {
        hints.ai_flags = AI_NUMERICSERV;
        if (getaddrinfo(host, port, &hints, &res) != 0)
            return false;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sl = res->ai_addrlen;
    freeaddrinfo(res);
    return true;
}

/* be_connect - the current address */
static bool be_connect(struct pc_backend *be)
{
    const char *a = be->bc->addresses[be->addr_idx];
    struct sockaddr_storage ss;
    socklen_t sl = 0;

    if (!be_sockaddr(a, &ss, &sl))
        return false;
    char host[256], port[16];
    if (!pc_parse_hostport(a, host, sizeof(host), port, sizeof(port)))
        return false;
    format_relay(be, host, port, &ss, sl);
    be->bev = bufferevent_socket_new(be->base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(be->bev, on_read, on_write, on_event, be);
    bufferevent_setwatermark(be->bev, EV_WRITE, PC_BE_FILL / 4, 0);
    bufferevent_enable(be->bev, EV_READ | EV_WRITE);
    be_arm(be, be->conf->timeouts.backend_connect);
    be->state = BE_CONNECTING;
    be->broken = be->in_txn = be->identified = be->ident_refresh = be->xforward_sent = false;
    be->tls_on = false;
    be->ext = 0;
    memset(&be->reply, 0, sizeof(be->reply));
    if (bufferevent_socket_connect(be->bev, (struct sockaddr *)&ss, (int)sl) < 0) {
        be_close(be);
        return false;
    }
    /* The socket exists now; our reads start once it is connected (on_event). Without them
     * (no memory) libevent's own reads go on. */
    be->rd = pc_sockread_new(be->bev, PC_BE_READ_HIGH);
    return true;
}

/* be_try_next - fail over to the next address, or give up */
static void be_try_next(struct pc_backend *be, const char *why)
{
    pc_warn("%s: backend %s: %s", sid(be), be->relay, why);
    be_close(be);
    be->tls_plain = false;
    while (++be->addr_idx < be->bc->naddr)
        if (be_connect(be))
            return;
    be->addr_idx = 0;
    keep_pending(be, NULL);
    be_fail(be, "4.4.1", "Backend unavailable, try again later");
}

/* pc_backend_open - start connecting */
void pc_backend_open(struct pc_backend *be)
{
    be->addr_idx = 0;
    be->tls_plain = false;
    if (be_connect(be))
        return;
    be->addr_idx = 0;
    be_try_next(be, "cannot connect");
}

/* be_command - send MAIL or RCPT (connecting first when needed) */
static void be_command(struct pc_backend *be, const struct pc_backend_cmd *cmd)
{
    const struct pc_param *params = cmd->params;
    size_t nparams = cmd->nparams;

    bool is_mail = cmd->verb == PC_BACKEND_MAIL;
    if (!is_mail && (!be->in_txn || be->broken || be->state == BE_IDLE || be->state == BE_DEAD)) {
        /* A transaction never moves to another connection: the one that took our MAIL is
         * gone (or broken), so there is nothing to send RCPT or RSET on. */
        synth(be, 451, "4.4.2", "Lost connection with backend, try again later", true);
        return;
    }
    if (be->state == BE_IDLE || be->state == BE_DEAD) {
        keep_pending(be, cmd);
        be_close(be);
        pc_backend_open(be);
        return;
    }
    if (be->state != BE_READY) {
        keep_pending(be, cmd);
        return;
    }
    if (is_mail) {
        /* Every transaction carries its client's identity (a pooled connection, a new HELO
         * name, Postfix's reset of XFORWARD attributes after each transaction). */
        keep_pending(be, cmd);
        if (!be->ident->before_mail(be))
            return; /* MAIL waits in pending */
        keep_pending(be, NULL);
        be->xforward_sent = false;
        be->rcpt_ok = 0;
        unsigned ext = pc_backend_ext(be);
        /* RFC 6531 3.4: a transaction that declared SMTPUTF8 must not reach a server that does
         * not offer it; RFC 3461 4: DSN requests must be passed on or honoured by us, which we
         * cannot. Our EHLO offered them from what this backend said before; the client's retry
         * will not see them offered any more. */
        for (size_t i = 0; i < nparams; i++) {
            const char *k = params[i].key;
            if (!strcasecmp(k, "SMTPUTF8") && !(ext & PC_EXT_SMTPUTF8)) {
                synth(be, 451, "4.6.7", "SMTPUTF8 is not available on this path, try again later",
                      true);
                return;
            }
            if ((!strcasecmp(k, "RET") || !strcasecmp(k, "ENVID")) && !(ext & PC_EXT_DSN)) {
                synth(be, 451, "4.3.3", "DSN is not available on this path, try again later", true);
                return;
            }
        }
    } else {
        for (size_t i = 0; i < nparams; i++)
            if ((!strcasecmp(params[i].key, "NOTIFY") || !strcasecmp(params[i].key, "ORCPT")) &&
                !(pc_backend_ext(be) & PC_EXT_DSN)) {
                synth(be, 451, "4.3.3", "DSN is not available on this path, try again later", true);
                return;
            }
    }
    be->cmd_verb = cmd->verb;
    struct pc_buf b;
    pc_buf_init(&b, 0);
    /* RFC 5321 4.1.1.2, 4.1.1.3: the path goes in angle brackets, the null sender as <>. */
    pc_buf_printf(&b, "%s:<%s>", is_mail ? "MAIL FROM" : "RCPT TO", cmd->addr);
    for (size_t i = 0; i < nparams; i++)
        if (param_ok(be, params[i].key))
            pc_buf_printf(&b, " %s%s%s", params[i].key, params[i].value ? "=" : "",
                          params[i].value ? params[i].value : "");
    be_send(be, BE_CMD, be->conf->timeouts.backend_command, "%s", b.data);
    pc_buf_free(&b);
}

/* maildir_command - the Maildir takes every sender and recipient */
static void maildir_command(struct pc_backend *be, const struct pc_backend_cmd *cmd)
{
    synth(be, 250, cmd->verb == PC_BACKEND_MAIL ? "2.1.0" : "2.1.5", "Ok", false);
}

/* pc_backend_mail - MAIL for this transaction's sender */
void pc_backend_mail(struct pc_backend *be, const struct pc_mailbox *from,
                     const struct pc_param *params, size_t nparams)
{
    struct pc_backend_cmd cmd = {PC_BACKEND_MAIL, from->addr, params, nparams};
    be->kind->command(be, &cmd);
}

/* pc_backend_rcpt - RCPT for one recipient of the transaction */
void pc_backend_rcpt(struct pc_backend *be, const struct pc_mailbox *to,
                     const struct pc_param *params, size_t nparams)
{
    struct pc_backend_cmd cmd = {PC_BACKEND_RCPT, to->addr, params, nparams};
    be->kind->command(be, &cmd);
}

/* maildir_data - write the message; 250 only once it is on disk */
static void maildir_data(struct pc_backend *be, const char *received)
{
    char text[200];

    if (!pc_maildir_deliver(be->s->sid, be->bc->maildir, be->conf->hostname, &be->s->txn->msg,
                            received)) {
        synth(be, 451, "4.3.0", "Local delivery failed, try again later", true);
        return;
    }
    snprintf(text, sizeof(text), "Ok: queued as %s", be->s->txn->id);
    synth(be, 250, "2.0.0", text, false);
}

/* be_data - DATA on the connection that holds our MAIL */
static void be_data(struct pc_backend *be, const char *received)
{
    (void)received; /* kept in be->received for the cursor */
    if (be->state != BE_READY || !be->in_txn) {
        synth(be, 451, "4.4.2", "Lost connection with backend, try again later", true);
        return;
    }
    be->bdat = (be->ext & PC_EXT_CHUNKING) != 0;
    if (be->bdat) {
        pc_msg_cursor_init(&be->cur);
        be->cur.head_only = true; /* BDAT stuffs nothing: the body goes as it is spooled */
        bdat_next(be);
        return;
    }
    be_send(be, BE_DATA_INIT, be->conf->timeouts.backend_data_init, "DATA");
}

/* pc_backend_data - DATA and the message */
void pc_backend_data(struct pc_backend *be, const char *received)
{
    free(be->received);
    be->received = strdup(received);
    be->kind->data(be, received);
}
