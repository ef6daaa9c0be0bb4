/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	authdb_dovecot 3 - Dovecot's authentication client protocol, on the loop
 * DESCRIPTION
 *	One connection to Dovecot's auth service carries every request, each
 *	with its own id (the protocol's multiplexing), the way Postfix's
 *	smtpd_sasl_type = dovecot uses it. The handshake is VERSION and CPID
 *	from us, then VERSION, MECH, SPID, CUID, COOKIE and DONE from Dovecot;
 *	requests wait in a queue until DONE. A request is one AUTH line with
 *	the whole PLAIN message as resp= (RFC 4616), answered by OK, FAIL (with
 *	"temp" when Dovecot itself could not decide) or CONT (which a PLAIN
 *	initial response never needs, so it counts as a fault).
 *
 *	Faults: a connection that fails or closes answers every request on it
 *	"temporarily unavailable" and the next request connects again; each
 *	request has a deadline of its own (Dovecot delays FAIL answers by its
 *	auth_failure_delay, 2 s by default, so the deadline must be longer).
 *	A reply to an id we no longer wait for (its deadline passed) is
 *	ignored. A line from Dovecot longer than DV_MAX_LINE breaks the
 *	connection: the protocol has no long lines for us.
 *
 *	The credential travels only base64-encoded in the AUTH line; the
 *	buffer that builds it is wiped, and no log line carries it.
 * SEE ALSO
 *	https://doc.dovecot.org/developer_manual/design/auth_protocol/,
 *	RFC 4616
 */
#include <errno.h>
#include <limits.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "filters/filter.h"
#include "gateway/authdb_int.h"
#include "gateway/sasl.h"
#include "lib/log.h"

#define DV_MAX_LINE     16384
#define DV_MAX_LINE_OUT (3 * 4 * (PC_SASL_MAX_FIELD + 2) / 3 + 1024)

enum dv_state { DV_DOWN, DV_CONNECTING, DV_READY };

struct dv_req {
    struct pc_auth_req base;
    TAILQ_ENTRY(dv_req) link;
    unsigned id;
    pc_auth_cb *cb;
    void *arg;
    struct event *timer; /* the deadline, or an immediate answer */
    enum pc_auth_result result;
    bool sent;
    char *line; /* the AUTH line until sent (wiped then) */
    size_t linelen;
};

TAILQ_HEAD(dv_list, dv_req);

struct dv_db {
    struct pc_authdb base;
    struct event_base *evb;
    char spec[128]; /* for the log */
    struct sockaddr_storage sa;
    socklen_t salen;
    unsigned timeout_ms;
    struct bufferevent *bev;
    enum dv_state state;
    unsigned next_id;
    unsigned long connects;
    struct dv_list reqs;
};

/* dv_parse_spec - "unix:/path" or "inet:ADDRESS:PORT" into a socket address */
static bool dv_parse_spec(const char *spec, struct sockaddr_storage *sa, socklen_t *len)
{
    memset(sa, 0, sizeof(*sa));
    if (strncmp(spec, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)sa;
        const char *path = spec + 5;
        if (path[0] != '/' || strlen(path) >= sizeof(un->sun_path))
            return false;
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, path, strlen(path) + 1);
        *len = (socklen_t)sizeof(*un);
        return true;
    }
    if (strncmp(spec, "inet:", 5) == 0) {
        int n = (int)sizeof(*sa);
        /* Numeric only ("127.0.0.1:4000", "[::1]:4000"): no blocking resolver on the loop. */
        if (evutil_parse_sockaddr_port(spec + 5, (struct sockaddr *)sa, &n) < 0 ||
            ((struct sockaddr_in *)sa)->sin_port == 0)
            return false;
        *len = (socklen_t)n;
        return true;
    }
    return false;
}

/* pc_authdb_dovecot_spec_ok - the syntax check for -t */
bool pc_authdb_dovecot_spec_ok(const char *spec)
{
    struct sockaddr_storage sa;
    socklen_t len;

    return spec && dv_parse_spec(spec, &sa, &len);
}

/* req_free - forget a request (it is off the list) */
static void req_free(struct dv_req *r)
{
    if (r->line) {
        explicit_bzero(r->line, r->linelen);
        free(r->line);
    }
    event_free(r->timer);
    free(r);
}

/* req_answer - take r off the list and tell the caller */
static void req_answer(struct dv_db *d, struct dv_req *r, enum pc_auth_result res)
{
    pc_auth_cb *cb = r->cb;
    void *arg = r->arg;

    TAILQ_REMOVE(&d->reqs, r, link);
    req_free(r);
    if (cb)
        cb(res, arg);
}

/* req_later - answer r on the next loop turn (never inside pc_authdb_start) */
static void req_later(struct dv_req *r, enum pc_auth_result res)
{
    static const struct timeval now = {0, 0};

    r->result = res; /* what dv_timer answers */
    event_del(r->timer);
    evtimer_add(r->timer, &now);
}

/* dv_reset - the connection is gone: every request on it is temporarily unanswerable */
static void dv_reset(struct dv_db *d, const char *why)
{
    if (d->bev) {
        bufferevent_free(d->bev);
        d->bev = NULL;
    }
    d->state = DV_DOWN;
    pc_warn("auth: dovecot %s: %s", d->spec, why);
    /* Answer on the next loop turn: a callback that starts a new request must not re-enter. */
    struct dv_req *r;
    TAILQ_FOREACH(r, &d->reqs, link)
    req_later(r, PC_AUTH_TEMPFAIL);
}

/* dv_send - write one queued request */
static void dv_send(struct dv_db *d, struct dv_req *r)
{
    bufferevent_write(d->bev, r->line, r->linelen);
    explicit_bzero(r->line, r->linelen);
    free(r->line);
    r->line = NULL;
    r->sent = true;
}

/* dv_find - the request waiting for id */
static struct dv_req *dv_find(struct dv_db *d, unsigned long id)
{
    struct dv_req *r;

    TAILQ_FOREACH(r, &d->reqs, link)
    if (r->sent && r->id == id)
        return r;
    return NULL;
}

/* dv_has_arg - a tab-separated argument equal to name, or starting with "name=" */
static bool dv_has_arg(const char *args, const char *name)
{
    size_t n = strlen(name);

    for (const char *p = args; p; p = strchr(p, '\t'), p = p ? p + 1 : NULL)
        if (strncmp(p, name, n) == 0 && (p[n] == '\t' || p[n] == 0 || p[n] == '='))
            return true;
    return false;
}

/* pc_dovecot_reply - parse one answer line (OK, FAIL, CONT) into its id and result */
bool pc_dovecot_reply(const char *line, unsigned long *id, enum pc_auth_result *res, bool *cont)
{
    const char *rest;
    char *end;

    *cont = false;
    if (strncmp(line, "OK\t", 3) == 0)
        *res = PC_AUTH_OK, rest = line + 3;
    else if (strncmp(line, "FAIL\t", 5) == 0)
        *res = PC_AUTH_FAIL, rest = line + 5;
    else if (strncmp(line, "CONT\t", 5) == 0) /* never needed after a PLAIN initial response */
        *res = PC_AUTH_TEMPFAIL, rest = line + 5, *cont = true;
    else
        return false;
    if (rest[0] < '0' || rest[0] > '9')
        return false;
    errno = 0;
    *id = strtoul(rest, &end, 10);
    if (errno || *id > UINT_MAX || (*end != '\t' && *end != 0))
        return false;
    /* FAIL with "temp": Dovecot could not decide (its passdb is down), not a wrong password. */
    if (*res == PC_AUTH_FAIL && *end && dv_has_arg(end + 1, "temp"))
        *res = PC_AUTH_TEMPFAIL;
    return true;
}

/* dv_line - one line from Dovecot; false breaks the connection */
static bool dv_line(struct dv_db *d, char *line)
{
    if (d->state == DV_CONNECTING) {
        if (strncmp(line, "VERSION\t", 8) == 0)
            return strncmp(line + 8, "1\t", 2) == 0; /* major 1; any minor */
        if (strcmp(line, "DONE") == 0) {
            d->state = DV_READY;
            struct dv_req *r;
            TAILQ_FOREACH(r, &d->reqs, link)
            if (!r->sent && r->line)
                dv_send(d, r);
        }
        return true; /* MECH, SPID, CUID, COOKIE: nothing we need */
    }
    unsigned long id;
    enum pc_auth_result res;
    bool cont;
    if (!pc_dovecot_reply(line, &id, &res, &cont))
        return false;
    struct dv_req *r = dv_find(d, id);
    if (r == NULL)
        return true; /* its deadline passed */
    if (cont)
        pc_warn("auth: dovecot %s asked to continue a PLAIN exchange (id %lu)", d->spec, id);
    req_answer(d, r, res);
    return true;
}

/* dv_read - whole lines only, bounded */
static void dv_read(struct bufferevent *bev, void *arg)
{
    struct dv_db *d = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    char *line;
    size_t len;

    while ((line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF)) != NULL) {
        bool ok = len <= DV_MAX_LINE && dv_line(d, line);
        free(line);
        if (!ok) {
            dv_reset(d, "protocol error");
            return;
        }
    }
    if (evbuffer_get_length(in) > DV_MAX_LINE)
        dv_reset(d, "line too long");
}

/* dv_event - connected, or the connection failed */
static void dv_event(struct bufferevent *bev, short what, void *arg)
{
    struct dv_db *d = arg;
    char hello[64];

    if (what & BEV_EVENT_CONNECTED) {
        int n = snprintf(hello, sizeof(hello), "VERSION\t1\t2\nCPID\t%ld\n", (long)getpid());
        bufferevent_write(bev, hello, (size_t)n);
        return;
    }
    char why[160];
    int e = EVUTIL_SOCKET_ERROR();
    snprintf(why, sizeof(why), "%s%s%s",
             what & BEV_EVENT_EOF ? "connection closed" : "connection failed",
             what & BEV_EVENT_EOF || e == 0 ? "" : ": ",
             what & BEV_EVENT_EOF || e == 0 ? "" : evutil_socket_error_to_string(e));
    dv_reset(d, why);
}

/* dv_connect - start connecting; false when it failed at once */
static bool dv_connect(struct dv_db *d)
{
    d->bev = bufferevent_socket_new(d->evb, -1, BEV_OPT_CLOSE_ON_FREE);
    if (d->bev == NULL)
        return false;
    bufferevent_setcb(d->bev, dv_read, NULL, dv_event, d);
    bufferevent_enable(d->bev, EV_READ | EV_WRITE);
    d->state = DV_CONNECTING;
    d->connects++;
    if (bufferevent_socket_connect(d->bev, (struct sockaddr *)&d->sa, (int)d->salen) < 0) {
        bufferevent_free(d->bev);
        d->bev = NULL;
        d->state = DV_DOWN;
        return false;
    }
    return true;
}

/* dv_timer - the deadline passed, or an answer decided earlier is due */
static void dv_timer(evutil_socket_t fd, short what, void *arg)
{
    struct dv_req *r = arg;
    struct dv_db *d = (struct dv_db *)r->base.db;

    (void)fd, (void)what;
    /* A deadline that passes before the request could even be sent means the connection is
     * stuck (a hung Dovecot): start afresh with the next request. */
    bool stuck = !r->sent && d->state == DV_CONNECTING;
    req_answer(d, r, r->result);
    if (stuck && d->state == DV_CONNECTING)
        dv_reset(d, "no handshake before the deadline");
}

/* tab_escape - Dovecot's escaping of a value: \001 -> \0011, \t -> \001t, \r -> \001r,
 * \n -> \001n; false when out is too small */
static bool tab_escape(const char *s, char *out, size_t size)
{
    size_t n = 0;

    for (; *s; s++) {
        const char *esc = *s == 1      ? "\0011"
                          : *s == '\t' ? "\001t"
                          : *s == '\r' ? "\001r"
                          : *s == '\n' ? "\001n"
                                       : NULL;
        size_t k = esc ? 2 : 1;
        if (n + k >= size)
            return false;
        if (esc)
            memcpy(out + n, esc, 2);
        else
            out[n] = *s;
        n += k;
    }
    out[n] = 0;
    return true;
}

/* dv_build - the AUTH line for r; false when it does not fit */
static bool dv_build(struct dv_req *r, const struct pc_auth_creds *c)
{
    unsigned char msg[2 * PC_SASL_MAX_FIELD + 4];
    size_t ulen = strlen(c->user), plen = strlen(c->pass);
    char rip[128] = "", lip[128] = "", b64[DV_MAX_LINE_OUT];
    bool ok = false;

    if (ulen == 0 || ulen > PC_SASL_MAX_FIELD || plen > PC_SASL_MAX_FIELD)
        return false;
    /* RFC 4616: empty authzid, NUL, authcid, NUL, passwd. */
    msg[0] = 0;
    memcpy(msg + 1, c->user, ulen);
    msg[1 + ulen] = 0;
    memcpy(msg + 2 + ulen, c->pass, plen);
    if (pc_base64_encode(msg, ulen + plen + 2, b64, sizeof(b64)) >= 0 &&
        (c->client_addr == NULL || tab_escape(c->client_addr, rip, sizeof(rip))) &&
        (c->local_addr == NULL || tab_escape(c->local_addr, lip, sizeof(lip)))) {
        r->linelen = strlen(b64) + 256 + 2 * sizeof(rip);
        if ((r->line = malloc(r->linelen)) != NULL) {
            int n = snprintf(r->line, r->linelen,
                             "AUTH\t%u\tPLAIN\tservice=smtp\tnologin%s%s%s%s%s\tresp=%s\n", r->id,
                             c->secured ? "\tsecured" : "", rip[0] ? "\trip=" : "", rip,
                             lip[0] ? "\tlip=" : "", lip, b64);
            ok = n > 0 && (size_t)n < r->linelen;
            if (ok)
                r->linelen = (size_t)n;
        }
    }
    explicit_bzero(msg, sizeof(msg));
    explicit_bzero(b64, sizeof(b64));
    return ok;
}

/* dv_start - queue or send one AUTH request */
static struct pc_auth_req *dv_start(struct pc_authdb *db, const struct pc_auth_creds *c,
                                    pc_auth_cb *cb, void *arg)
{
    struct dv_db *d = (struct dv_db *)db;
    struct dv_req *r = calloc(1, sizeof(*r));
    struct timeval tv = {d->timeout_ms / 1000, (d->timeout_ms % 1000) * 1000};

    if (r == NULL || (r->timer = evtimer_new(d->evb, dv_timer, r)) == NULL) {
        free(r);
        return NULL;
    }
    r->base.db = db, r->cb = cb, r->arg = arg;
    r->id = ++d->next_id ? d->next_id : ++d->next_id; /* ids start at 1 */
    r->result = PC_AUTH_TEMPFAIL;                     /* what the deadline answers */
    TAILQ_INSERT_TAIL(&d->reqs, r, link);
    evtimer_add(r->timer, &tv);
    if (!dv_build(r, c)) { /* too long for the protocol: bad credentials, as 535 */
        req_later(r, PC_AUTH_FAIL);
        return &r->base;
    }
    if (d->state == DV_DOWN && !dv_connect(d)) {
        pc_warn("auth: dovecot %s: cannot connect: %m", d->spec);
        req_later(r, PC_AUTH_TEMPFAIL);
    } else if (d->state == DV_READY)
        dv_send(d, r);
    return &r->base;
}

/* dv_cancel - drop the answer; a late reply for the id is ignored */
static void dv_cancel(struct pc_auth_req *req)
{
    struct dv_req *r = (struct dv_req *)req;

    r->cb = NULL;
}

/* dv_destroy - close; requests end without callbacks */
static void dv_destroy(struct pc_authdb *db)
{
    struct dv_db *d = (struct dv_db *)db;
    struct dv_req *r;

    while ((r = TAILQ_FIRST(&d->reqs)) != NULL) {
        TAILQ_REMOVE(&d->reqs, r, link);
        req_free(r);
    }
    if (d->bev)
        bufferevent_free(d->bev);
    free(d);
}

static const struct pc_authdb_ops dv_ops = {
    .name = "dovecot", .start = dv_start, .cancel = dv_cancel, .destroy = dv_destroy};

/* pc_authdb_dovecot_new - no connection until the first request */
struct pc_authdb *pc_authdb_dovecot_new(struct event_base *evb, const char *spec,
                                        unsigned timeout_ms, struct pc_err *err)
{
    struct dv_db *d = calloc(1, sizeof(*d));

    if (d == NULL) {
        snprintf(err->msg, sizeof(err->msg), "dovecot: out of memory");
        return NULL;
    }
    if (spec == NULL || !dv_parse_spec(spec, &d->sa, &d->salen)) {
        snprintf(err->msg, sizeof(err->msg),
                 "dovecot = \"%s\": expected \"unix:/path\" or \"inet:ADDRESS:PORT\"",
                 spec ? spec : "");
        free(d);
        return NULL;
    }
    d->base.ops = &dv_ops;
    d->evb = evb;
    snprintf(d->spec, sizeof(d->spec), "%s", spec);
    d->timeout_ms = timeout_ms;
    TAILQ_INIT(&d->reqs);
    return &d->base;
}

/* pc_authdb_dovecot_connects - connections opened so far (a statistic) */
unsigned long pc_authdb_dovecot_connects(struct pc_authdb *db)
{
    return ((struct dv_db *)db)->connects;
}
