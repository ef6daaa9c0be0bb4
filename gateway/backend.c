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
 *	spooled message never sits in memory whole.
 *
 *	The Maildir backend answers the same calls locally; it writes on the
 *	loop thread (it is the embedded default for trying portcullis out,
 *	not the production path) and fsyncs before it says 250.
 * SEE ALSO
 *	RFC 5321, RFC 2033 (LMTP), Postfix XCLIENT_README and XFORWARD_README
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
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "filters/filter.h"
#include "gateway/conf.h"
#include "gateway/session.h"
#include "lib/log.h"
#include "lib/parse.h"
#include "lib/pool.h"

#define PC_BE_LINE_MAX 4096
#define PC_BE_FILL 262144

enum be_state {
    BE_IDLE,
    BE_CONNECTING,
    BE_GREETING,
    BE_EHLO,
    BE_XCLIENT,
    BE_EHLO2,
    BE_XFORWARD,
    BE_READY,
    BE_CMD,
    BE_DATA_INIT,
    BE_DATA_BODY,
    BE_DATA_DONE,
    BE_DEAD
};

struct pc_backend {
    struct pc_session *s;
    const struct pc_backend_conf *bc;
    const struct pc_conf *conf;
    pc_backend_cb *cb;
    void *arg;
    struct event_base *base;
    struct bufferevent *bev;
    enum be_state state;
    size_t addr_idx;
    struct pc_reply reply;
    unsigned ext;
    char xclient_attrs[256], xforward_attrs[256];
    char relay[300];
    char *pending; /* command waiting for the connection */
    struct pc_param pending_params[PC_MAX_PARAMS];
    size_t pending_nparams;
    bool cmd_is_rcpt;
    size_t rcpt_ok, lmtp_left;
    struct pc_backend_result lmtp_first_fail;
    bool lmtp_any_ok, lmtp_any_fail;
    struct pc_msg_cursor cur;
    struct pc_stuffer stuff;
    char *received;
    char *chunk;
    struct event *synth;
    struct pc_backend_result synth_result;
    int depth;     /* inside one of our libevent callbacks */
    bool free_req; /* pc_backend_free() was called from inside: destroy on the way out */
    bool reused;   /* taken from the idle pool: identify the new client first */
    bool in_txn;   /* the backend holds our MAIL: never pool such a connection */
    bool cmd_is_mail, cmd_is_rset;
    struct pc_backend *pool_next;
    struct event *pool_timer;
};

/*
 * Idle backend connections are kept for a short while and reused by the
 * next session to the same backend: connecting, the greeting and EHLO cost
 * as much as the transaction itself. Postfix accepts XCLIENT again outside
 * a transaction, so a reused connection is re-identified before MAIL.
 * XFORWARD backends are not pooled (their attributes are per transaction
 * and Exim does not take them again). Pooled entries hold a reference to
 * their configuration generation; after a reload they are not matched
 * (their backend section is another object) and simply expire.
 */
#define PC_BE_POOL_MAX 64
#define PC_BE_POOL_IDLE_MS 10000
static struct pc_backend *pc_be_pool;
static size_t pc_be_pool_n;

static void be_fail(struct pc_backend *, const char *enh, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void be_try_next(struct pc_backend *, const char *why);
static void be_enter(struct pc_backend *);
static bool be_leave(struct pc_backend *);
static struct pc_backend *pool_take(struct pc_session *, const struct pc_backend_conf *,
                                    pc_backend_cb *, void *);
static void send_pending(struct pc_backend *);
static void keep_pending(struct pc_backend *, const char *, const struct pc_param *, size_t);

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
    snprintf(be->relay, sizeof(be->relay), "%s", bc->maildir ? "maildir" : "none");
    return be;
}

/* be_close - drop the socket */
static void be_close(struct pc_backend *be)
{
    if (be->bev) {
        bufferevent_free(be->bev);
        be->bev = NULL;
    }
}

/* be_destroy - release everything */
static void be_destroy(struct pc_backend *be)
{
    event_free(be->synth);
    keep_pending(be, NULL, NULL, 0);
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

/* pool_drop - an idle connection ends */
static void pool_drop(struct pc_backend *be)
{
    for (struct pc_backend **p = &pc_be_pool; *p; p = &(*p)->pool_next)
        if (*p == be) {
            *p = be->pool_next;
            pc_be_pool_n--;
            break;
        }
    be_close(be);
    event_free(be->pool_timer);
    be->pool_timer = NULL;
    pc_conf_unref((struct pc_conf *)be->conf);
    be_destroy(be);
}

/* pool_on_event - an idle connection closed or failed */
static void pool_on_event(struct bufferevent *bev, short what, void *arg)
{
    (void)bev, (void)what;
    pool_drop(arg);
}

/* pool_on_read - an idle connection spoke (e.g. 421 idle timeout): drop it */
static void pool_on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    pool_drop(arg);
}

/* pool_on_timer - idle too long: QUIT */
static void pool_on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct pc_backend *be = arg;

    (void)fd, (void)what;
    bufferevent_write(be->bev, "QUIT\r\n", 6);
    bufferevent_flush(be->bev, EV_WRITE, BEV_FLUSH);
    pool_drop(be);
}

/* pool_put - keep an idle, ready connection for the next session */
static bool pool_put(struct pc_backend *be)
{
    if (be->depth > 0 || be->bev == NULL || be->state != BE_READY || be->in_txn || be->bc->maildir ||
        be->bc->identity == PC_IDENT_XFORWARD || pc_be_pool_n >= PC_BE_POOL_MAX)
        return false;
    struct timeval tv = {PC_BE_POOL_IDLE_MS / 1000, 0};
    event_del(be->synth);
    be->s = NULL;
    be->cb = NULL;
    be->arg = NULL;
    pc_conf_ref((struct pc_conf *)be->conf);
    bufferevent_setcb(be->bev, pool_on_read, NULL, pool_on_event, be);
    bufferevent_set_timeouts(be->bev, NULL, NULL);
    be->pool_timer = evtimer_new(be->base, pool_on_timer, be);
    evtimer_add(be->pool_timer, &tv);
    be->pool_next = pc_be_pool;
    pc_be_pool = be;
    pc_be_pool_n++;
    return true;
}

/* pool_take - an idle connection to this backend, adopted by a session */
static struct pc_backend *pool_take(struct pc_session *s, const struct pc_backend_conf *bc,
                                    pc_backend_cb *cb, void *arg)
{
    for (struct pc_backend **p = &pc_be_pool; *p; p = &(*p)->pool_next) {
        struct pc_backend *be = *p;
        if (be->bc != bc)
            continue;
        *p = be->pool_next;
        pc_be_pool_n--;
        event_free(be->pool_timer);
        be->pool_timer = NULL;
        pc_conf_unref((struct pc_conf *)be->conf);
        be->s = s;
        be->cb = cb;
        be->arg = arg;
        be->reused = true;
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
    if (be->bev && be->state == BE_READY) {
        /* Polite QUIT; the kernel sends it while we close. */
        bufferevent_write(be->bev, "QUIT\r\n", 6);
        bufferevent_flush(be->bev, EV_WRITE, BEV_FLUSH);
    }
    be_close(be);
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
    return be->bc->maildir || be->state == BE_READY;
}

/* Extensions each backend offered last time, for EHLO before we connect. */
#define PC_BE_KNOWN_MAX 32
static struct {
    const struct pc_backend_conf *bc;
    unsigned ext;
} pc_be_known[PC_BE_KNOWN_MAX];

/* known_ext_set - remember what a backend offers */
static void known_ext_set(const struct pc_backend_conf *bc, unsigned ext)
{
    size_t free_slot = PC_BE_KNOWN_MAX;

    for (size_t i = 0; i < PC_BE_KNOWN_MAX; i++) {
        if (pc_be_known[i].bc == bc) {
            pc_be_known[i].ext = ext | 0x80000000u;
            return;
        }
        if (pc_be_known[i].bc == NULL && free_slot == PC_BE_KNOWN_MAX)
            free_slot = i;
    }
    /* Full (many reloads): overwrite the first slot; an unknown backend is offered all. */
    if (free_slot == PC_BE_KNOWN_MAX)
        free_slot = 0;
    pc_be_known[free_slot].bc = bc;
    pc_be_known[free_slot].ext = ext | 0x80000000u;
}

/* pc_backend_known_ext - last seen extensions, or all of them when never connected */
unsigned pc_backend_known_ext(const struct pc_backend_conf *bc)
{
    if (bc->maildir)
        return PC_EXT_PIPELINING | PC_EXT_SIZE | PC_EXT_8BITMIME | PC_EXT_SMTPUTF8;
    for (size_t i = 0; i < PC_BE_KNOWN_MAX; i++)
        if (pc_be_known[i].bc == bc)
            return pc_be_known[i].ext & ~0x80000000u;
    return ~0u & ~0x80000000u;
}

/* pc_backend_ext - extensions the backend offered */
unsigned pc_backend_ext(const struct pc_backend *be)
{
    if (be->bc->maildir)
        return PC_EXT_PIPELINING | PC_EXT_SIZE | PC_EXT_8BITMIME | PC_EXT_SMTPUTF8;
    return be->ext;
}

/* be_send - one command line */
static void be_send(struct pc_backend *be, enum be_state next, unsigned timeout_ms,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void be_send(struct pc_backend *be, enum be_state next, unsigned timeout_ms,
                    const char *fmt, ...)
{
    struct evbuffer *out = bufferevent_get_output(be->bev);
    struct timeval rt = tv_ms(timeout_ms), wt = tv_ms(be->conf->timeouts.backend_command);
    va_list ap;

    va_start(ap, fmt);
    evbuffer_add_vprintf(out, fmt, ap);
    va_end(ap);
    evbuffer_add(out, "\r\n", 2);
    memset(&be->reply, 0, sizeof(be->reply));
    be->state = next;
    bufferevent_set_timeouts(be->bev, &rt, &wt);
}

/* parse_ehlo - extensions from the EHLO reply text */
static void parse_ehlo(struct pc_backend *be)
{
    const char *p = be->reply.text;

    be->ext = 0;
    be->xclient_attrs[0] = be->xforward_attrs[0] = 0;
    p = strchr(p, '\n'); /* the first line is the greeting name */
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
            be->ext |= PC_EXT_PIPELINING;
        else if (strcmp(kw, "SIZE") == 0)
            be->ext |= PC_EXT_SIZE;
        else if (strcmp(kw, "8BITMIME") == 0)
            be->ext |= PC_EXT_8BITMIME;
        else if (strcmp(kw, "SMTPUTF8") == 0)
            be->ext |= PC_EXT_SMTPUTF8;
        else if (strcmp(kw, "DSN") == 0)
            be->ext |= PC_EXT_DSN;
        else if (strcmp(kw, "XCLIENT") == 0) {
            be->ext |= PC_EXT_XCLIENT;
            snprintf(be->xclient_attrs, sizeof(be->xclient_attrs), " %.*s ", (int)rl, rest);
        } else if (strcmp(kw, "XFORWARD") == 0) {
            be->ext |= PC_EXT_XFORWARD;
            snprintf(be->xforward_attrs, sizeof(be->xforward_attrs), " %.*s ", (int)rl, rest);
        }
        p = nl;
    }
    known_ext_set(be->bc, be->ext);
}

/* attr_ok - does the backend take this XCLIENT/XFORWARD attribute */
static bool attr_ok(const char *attrs, const char *name)
{
    char w[32];

    snprintf(w, sizeof(w), " %s ", name);
    return strcasestr(attrs, w) != NULL;
}

/* xtext - RFC 3461 xtext encoding of a value into buf */
static const char *xtext(const char *v, char *buf, size_t size)
{
    size_t o = 0;

    for (; *v && o + 4 < size; v++) {
        unsigned char c = (unsigned char)*v;
        if (c < 33 || c > 126 || c == '+' || c == '=')
            o += (size_t)snprintf(buf + o, size - o, "+%02X", c);
        else
            buf[o++] = (char)c;
    }
    buf[o] = 0;
    return buf;
}

/* identity_line - "XCLIENT NAME=... ADDR=..." with the attributes the backend takes */
static void identity_line(struct pc_backend *be, const char *verb, const char *attrs,
                          char *out, size_t size)
{
    const struct pc_session *s = be->s;
    char v[600], addr[80];
    size_t o = (size_t)snprintf(out, size, "%s", verb);
    bool xclient = strcmp(verb, "XCLIENT") == 0;
    const char *name = strcmp(s->client.name, "unknown") ? s->client.name
                       : xclient                         ? "[UNAVAILABLE]"
                                                         : "[UNAVAILABLE]";

    snprintf(addr, sizeof(addr), "%s%s", pc_ip_is_v4(&s->client.ip) ? "" : "IPV6:",
             s->client.addr);
    struct {
        const char *k, *v;
    } kv[] = {
        {"NAME", name},
        {"ADDR", addr},
        {"PORT", NULL},
        {"PROTO", s->esmtp ? "ESMTP" : "SMTP"},
        {"HELO", s->helo ? s->helo : "[UNAVAILABLE]"},
        {"LOGIN", xclient ? s->auth_user : NULL},
        {"SOURCE", xclient ? NULL : "REMOTE"},
    };
    char port[16];
    snprintf(port, sizeof(port), "%u", s->client.port);
    kv[2].v = port;
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++) {
        if (kv[i].v == NULL || !attr_ok(attrs, kv[i].k) || o >= size)
            continue;
        o += (size_t)snprintf(out + o, size - o, " %s=%s", kv[i].k, xtext(kv[i].v, v, sizeof(v)));
    }
}

/* keep_pending - remember a command (and copies of its parameters) until we are ready */
static void keep_pending(struct pc_backend *be, const char *line, const struct pc_param *params,
                         size_t n)
{
    free(be->pending);
    for (size_t i = 0; i < be->pending_nparams; i++) {
        free((char *)be->pending_params[i].key);
        free((char *)be->pending_params[i].value);
    }
    be->pending = line ? strdup(line) : NULL;
    be->pending_nparams = line && n <= PC_MAX_PARAMS ? n : 0;
    for (size_t i = 0; i < be->pending_nparams; i++) {
        be->pending_params[i].key = strdup(params[i].key);
        be->pending_params[i].value = params[i].value ? strdup(params[i].value) : NULL;
    }
}

/* send_pending - the connection is ready: send what waited for it */
static void send_pending(struct pc_backend *be)
{
    if (be->pending == NULL)
        return;
    char *line = be->pending;
    struct pc_param params[PC_MAX_PARAMS];
    size_t n = be->pending_nparams;
    memcpy(params, be->pending_params, n * sizeof(*params));
    be->pending = NULL;
    be->pending_nparams = 0;
    pc_backend_command(be, line, params, n);
    free(line);
    for (size_t i = 0; i < n; i++) {
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

/* be_after_ehlo - pass identity or become ready */
static void be_after_ehlo(struct pc_backend *be, bool second)
{
    char line[1024];
    const struct pc_timeouts *t = &be->conf->timeouts;

    if (!second && be->bc->identity == PC_IDENT_XCLIENT) {
        if (!(be->ext & PC_EXT_XCLIENT)) {
            /* Delivering anyway would make every client look like us (often "mynetworks" to
             * the backend) and skip the backend's own client checks. */
            pc_err("%s: backend %s does not offer XCLIENT although identity = xclient: allow "
                   "our address in smtpd_authorized_xclient_hosts, or set identity = \"none\"",
                   be->s->sid, be->relay);
            be_try_next(be, "no XCLIENT");
            return;
        }
        identity_line(be, "XCLIENT", be->xclient_attrs, line, sizeof(line));
        be_send(be, BE_XCLIENT, t->backend_command, "%s", line);
        return;
    }
    if (be->bc->identity == PC_IDENT_XFORWARD && (be->ext & PC_EXT_XFORWARD)) {
        identity_line(be, "XFORWARD", be->xforward_attrs, line, sizeof(line));
        be_send(be, BE_XFORWARD, t->backend_command, "%s", line);
        return;
    }
    be->state = BE_READY;
    send_pending(be);
}

/* be_ehlo - greet the backend */
static void be_ehlo(struct pc_backend *be, enum be_state next)
{
    const char *name = be->bc->helo_name ? be->bc->helo_name : be->conf->hostname;

    be_send(be, next, be->conf->timeouts.backend_command, "%s %s", be->bc->lmtp ? "LHLO" : "EHLO",
            name);
}

/* fill - stream more of the message while the output buffer is low */
static void fill(struct pc_backend *be)
{
    struct evbuffer *out = bufferevent_get_output(be->bev);
    struct pc_buf b;

    if (be->chunk == NULL && (be->chunk = malloc(65536)) == NULL)
        pc_fatal("out of memory");
    pc_buf_init(&b, 0);
    while (evbuffer_get_length(out) < PC_BE_FILL) {
        ssize_t n = pc_msg_read(&be->s->txn->msg, &be->cur, be->received, be->chunk, 65536);
        if (n < 0) {
            pc_buf_free(&b);
            be_fail(be, "4.3.0", "Error reading the spooled message");
            return;
        }
        if (n == 0) {
            /* Every line we send ends in CRLF; the message ends with CRLF . CRLF. */
            if (!be->stuff.bol)
                evbuffer_add(out, "\r\n", 2);
            evbuffer_add(out, ".\r\n", 3);
            struct timeval rt = tv_ms(be->conf->timeouts.backend_data_done);
            struct timeval wt = tv_ms(be->conf->timeouts.backend_data_block);
            bufferevent_set_timeouts(be->bev, &rt, &wt);
            memset(&be->reply, 0, sizeof(be->reply));
            be->state = BE_DATA_DONE;
            be->lmtp_left = be->bc->lmtp ? be->rcpt_ok : 1;
            be->lmtp_any_ok = be->lmtp_any_fail = false;
            break;
        }
        pc_buf_reset(&b);
        pc_stuff(&be->stuff, be->chunk, (size_t)n, &b);
        evbuffer_add(out, b.data, b.len);
    }
    pc_buf_free(&b);
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
            be_try_next(be, "EHLO refused");
            return;
        }
        parse_ehlo(be);
        be_after_ehlo(be, be->state == BE_EHLO2);
        return;
    case BE_XCLIENT:
        /* Postfix answers 220 (a new greeting); smtp-sink 250. Either way, EHLO again. */
        if (code / 100 != 2) {
            pc_err("%s: backend %s refused XCLIENT (%d %s): allow our address in "
                   "smtpd_authorized_xclient_hosts, or set identity = \"none\"",
                   be->s->sid, be->relay, code, be->reply.text);
            be_try_next(be, "XCLIENT refused");
            return;
        }
        be_ehlo(be, BE_EHLO2);
        return;
    case BE_XFORWARD:
        if (code != 250)
            pc_warn("%s: backend %s refused XFORWARD (%d %s)", be->s->sid, be->relay, code,
                    be->reply.text);
        be->state = BE_READY;
        send_pending(be);
        return;
    case BE_CMD:
        be->state = code == 421 ? BE_DEAD : BE_READY;
        if (be->cmd_is_rcpt && code / 100 == 2)
            be->rcpt_ok++;
        if (be->cmd_is_mail && code / 100 == 2)
            be->in_txn = true;
        if (be->cmd_is_rset && code / 100 == 2)
            be->in_txn = false;
        deliver(be, &r);
        return;
    case BE_DATA_INIT:
        if (code == 354) {
            be->state = BE_DATA_BODY;
            pc_msg_cursor_init(&be->cur);
            pc_stuff_init(&be->stuff);
            memset(&be->reply, 0, sizeof(be->reply));
            struct timeval wt = tv_ms(be->conf->timeouts.backend_data_block);
            struct timeval rt = tv_ms(be->conf->timeouts.backend_data_done);
            bufferevent_set_timeouts(be->bev, &rt, &wt);
            fill(be);
            return;
        }
        be->state = code == 421 ? BE_DEAD : BE_READY;
        deliver(be, &r);
        return;
    case BE_DATA_BODY:
        /* The backend spoke before we finished: it refused mid-stream. */
        be->state = BE_DEAD;
        be_close(be);
        if (code / 100 == 2) {
            /* Never pass on a 250 for a message we did not finish sending. */
            be_fail(be, "4.4.2", "Backend answered before the end of data");
            return;
        }
        deliver(be, &r);
        return;
    case BE_DATA_DONE:
        if (be->bc->lmtp) {
            lmtp_reply(be);
            return;
        }
        be->state = code == 421 ? BE_DEAD : BE_READY;
        be->in_txn = false;
        deliver(be, &r);
        return;
    default:
        pc_warn("%s: backend %s: unexpected reply %d %s", be->s->sid, be->relay, code,
                be->reply.text);
        return;
    }
}

/* on_read - reply lines */
static void on_read(struct bufferevent *bev, void *arg)
{
    struct pc_backend *be = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len;
    char *line;

    be_enter(be);
    while (!be->free_req && be->bev &&
           (line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF)) != NULL) {
        int rc = len > PC_BE_LINE_MAX ? -1 : pc_reply_parse_line(&be->reply, line, len);
        free(line);
        if (rc < 0) {
            be_fail(be, "4.4.2", "Garbled reply from backend");
            break;
        }
        if (rc == 1) {
            handle_reply(be);
            if (be->state == BE_GREETING || be->state == BE_EHLO || be->state == BE_EHLO2 ||
                be->state == BE_XCLIENT || be->state == BE_XFORWARD || be->state == BE_CMD ||
                be->state == BE_DATA_INIT || be->state == BE_DATA_DONE)
                continue; /* a new reply is expected; its memory was reset when sent */
            /* Anything else left in the buffer is a reply nobody asked for. */
            break;
        }
    }
    if (!be->free_req && be->bev && evbuffer_get_length(in) > PC_BE_LINE_MAX)
        be_fail(be, "4.4.2", "Reply line from backend too long");
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
    pc_warn("%s: backend %s: %s", be->s->sid, be->relay, r.reply.text);
    deliver(be, &r);
}

/* on_event - connected, closed, error, timeout */
static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct pc_backend *be = arg;

    (void)bev;
    be_enter(be);
    if (what & BEV_EVENT_CONNECTED) {
        struct timeval rt = tv_ms(be->conf->timeouts.backend_greeting);
        be->state = BE_GREETING;
        bufferevent_set_timeouts(be->bev, &rt, NULL);
        be_leave(be);
        return;
    }
    const char *why = (what & BEV_EVENT_TIMEOUT) ? "timed out"
                      : (what & BEV_EVENT_EOF)   ? "closed the connection"
                                                 : "connection error";
    if (be->state <= BE_XFORWARD && be->state != BE_IDLE) {
        be_try_next(be, why);
    } else if (be->state == BE_READY) {
        /* Idle between transactions: reconnect on the next MAIL. */
        be_close(be);
        be->state = BE_IDLE;
    } else {
        be_fail(be, "4.4.2", "Lost connection with backend (%s)", why);
    }
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

/* be_connect - the current address */
static bool be_connect(struct pc_backend *be)
{
    const char *a = be->bc->addresses[be->addr_idx];
    char host[256], port[16];
    struct sockaddr_storage ss;
    socklen_t sl = 0;

    if (!pc_parse_hostport(a, host, sizeof(host), port, sizeof(port)))
        return false;
    memset(&ss, 0, sizeof(ss));
    if (port[0] == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)&ss;
        un->sun_family = AF_UNIX;
        if (strlen(host) >= sizeof(un->sun_path))
            return false;
        pc_strlcpy(un->sun_path, host, sizeof(un->sun_path));
        sl = sizeof(*un);
    } else {
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST |
                                                                       AI_NUMERICSERV}, *res;
        /* Backends are addresses; a host name is looked up once here (blocking). */
        if (getaddrinfo(host, port, &hints, &res) != 0) {
            hints.ai_flags = AI_NUMERICSERV;
            if (getaddrinfo(host, port, &hints, &res) != 0)
                return false;
        }
        memcpy(&ss, res->ai_addr, res->ai_addrlen);
        sl = res->ai_addrlen;
        freeaddrinfo(res);
    }
    format_relay(be, host, port, &ss, sl);
    be->bev = bufferevent_socket_new(be->base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(be->bev, on_read, on_write, on_event, be);
    bufferevent_setwatermark(be->bev, EV_WRITE, PC_BE_FILL / 4, 0);
    bufferevent_enable(be->bev, EV_READ | EV_WRITE);
    struct timeval ct = tv_ms(be->conf->timeouts.backend_connect);
    bufferevent_set_timeouts(be->bev, &ct, &ct);
    be->state = BE_CONNECTING;
    memset(&be->reply, 0, sizeof(be->reply));
    if (bufferevent_socket_connect(be->bev, (struct sockaddr *)&ss, (int)sl) < 0) {
        be_close(be);
        return false;
    }
    return true;
}

/* be_try_next - fail over to the next address, or give up */
static void be_try_next(struct pc_backend *be, const char *why)
{
    pc_warn("%s: backend %s: %s", be->s->sid, be->relay, why);
    be_close(be);
    while (++be->addr_idx < be->bc->naddr)
        if (be_connect(be))
            return;
    be->addr_idx = 0;
    keep_pending(be, NULL, NULL, 0);
    be_fail(be, "4.4.1", "Backend unavailable, try again later");
}

/* pc_backend_open - start connecting */
void pc_backend_open(struct pc_backend *be)
{
    be->addr_idx = 0;
    if (be_connect(be))
        return;
    be->addr_idx = 0;
    be_try_next(be, "cannot connect");
}

/* maildir_deliver - write the message into a Maildir (tmp, fsync, rename to new) */
static void maildir_deliver(struct pc_backend *be, const char *received)
{
    static unsigned seq;
    const char *dir = be->bc->maildir;
    char tmp[PATH_MAX], dst[PATH_MAX], name[256];
    struct timeval tv;
    int fd = -1;

    gettimeofday(&tv, NULL);
    snprintf(name, sizeof(name), "%ld.M%ldP%ldQ%u.%s", (long)tv.tv_sec, (long)tv.tv_usec,
             (long)getpid(), ++seq, be->conf->hostname);
    for (const char *sub = "tmp\0new\0cur\0"; *sub; sub += 4) {
        char d[PATH_MAX];
        snprintf(d, sizeof(d), "%s/%s", dir, sub);
        mkdir(dir, 0700);
        mkdir(d, 0700);
    }
    snprintf(tmp, sizeof(tmp), "%s/tmp/%s", dir, name);
    snprintf(dst, sizeof(dst), "%s/new/%s", dir, name);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        goto fail;
    struct pc_msg_cursor c;
    char buf[65536];
    ssize_t n;
    pc_msg_cursor_init(&c);
    while ((n = pc_msg_read(&be->s->txn->msg, &c, received, buf, sizeof(buf))) > 0) {
        /* Maildir files use the local line convention: LF. */
        size_t o = 0;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != '\r')
                buf[o++] = buf[i];
        if (write(fd, buf, o) != (ssize_t)o)
            goto fail;
    }
    if (n < 0 || fsync(fd) < 0 || close(fd) < 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, dst) < 0)
        goto fail;
    char text[200];
    snprintf(text, sizeof(text), "Ok: queued as %s", be->s->txn->id);
    synth(be, 250, "2.0.0", text, false);
    return;
fail:
    pc_err("%s: maildir %s: %m", be->s->sid, dir);
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    synth(be, 451, "4.3.0", "Local delivery failed, try again later", true);
}

/* pc_backend_command - send one command (connecting first when needed) */
void pc_backend_command(struct pc_backend *be, const char *line, const struct pc_param *params,
                        size_t nparams)
{
    if (be->bc->maildir) {
        const char *enh = strncasecmp(line, "MAIL", 4) == 0   ? "2.1.0"
                          : strncasecmp(line, "RCPT", 4) == 0 ? "2.1.5"
                                                              : "2.0.0";
        synth(be, 250, enh, "Ok", false);
        return;
    }
    if (be->state == BE_IDLE || be->state == BE_DEAD) {
        keep_pending(be, line, params, nparams);
        be_close(be);
        pc_backend_open(be);
        return;
    }
    if (be->state != BE_READY) {
        keep_pending(be, line, params, nparams);
        return;
    }
    if (be->reused) {
        /* A pooled connection still speaks for the previous client: identify this one. */
        be->reused = false;
        if (be->bc->identity == PC_IDENT_XCLIENT && (be->ext & PC_EXT_XCLIENT)) {
            keep_pending(be, line, params, nparams);
            be_after_ehlo(be, false);
            return;
        }
    }
    if (strncasecmp(line, "MAIL", 4) == 0) {
        be->rcpt_ok = 0;
        /* RFC 6531 3.4: a transaction that declared SMTPUTF8 must not reach a server that does
         * not offer it. Our EHLO offered it before we knew this backend; the client's retry
         * will not see it offered any more. */
        for (size_t i = 0; i < nparams; i++)
            if (!strcasecmp(params[i].key, "SMTPUTF8") && !(pc_backend_ext(be) & PC_EXT_SMTPUTF8)) {
                synth(be, 451, "4.6.7", "SMTPUTF8 is not available on this path, try again later",
                      true);
                return;
            }
    }
    be->cmd_is_rcpt = strncasecmp(line, "RCPT", 4) == 0;
    be->cmd_is_mail = strncasecmp(line, "MAIL", 4) == 0;
    be->cmd_is_rset = strncasecmp(line, "RSET", 4) == 0;
    struct pc_buf b;
    pc_buf_init(&b, 0);
    pc_buf_puts(&b, line);
    for (size_t i = 0; i < nparams; i++)
        if (param_ok(be, params[i].key))
            pc_buf_printf(&b, " %s%s%s", params[i].key, params[i].value ? "=" : "",
                          params[i].value ? params[i].value : "");
    be_send(be, BE_CMD, be->conf->timeouts.backend_command, "%s", b.data);
    pc_buf_free(&b);
}

/* pc_backend_data - DATA and the message */
void pc_backend_data(struct pc_backend *be, const char *received)
{
    free(be->received);
    be->received = strdup(received);
    if (be->bc->maildir) {
        maildir_deliver(be, received);
        return;
    }
    if (be->state != BE_READY) {
        synth(be, 451, "4.4.2", "Lost connection with backend, try again later", true);
        return;
    }
    be_send(be, BE_DATA_INIT, be->conf->timeouts.backend_data_init, "DATA");
}
