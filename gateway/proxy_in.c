/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	proxy_in 3 - read a PROXY protocol header from a new connection
 * DESCRIPTION
 *	Each time the socket is readable we peek at what is there, parse the
 *	header so far, and take from the socket only bytes that belong to it:
 *	all of them while the header is incomplete (every byte before its end
 *	is part of it), exactly up to its end once it is complete. So the
 *	level-triggered read event never spins on bytes we leave, and SMTP
 *	bytes after the header are not lost. One timer is the deadline for
 *	the whole header, not an idle timer between its bytes.
 * SEE ALSO
 *	HAProxy doc/proxy-protocol.txt section 2 (the receiver must not start
 *	before a complete and valid header; a short timeout, at least 3 s)
 */
#include "gateway/proxy_in.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "core/session.h"

struct pc_proxy_rd {
    evutil_socket_t fd;
    struct event *ev, *timer;
    pc_proxy_done_fn *done;
    void *arg;
    size_t have;
    uint8_t buf[PC_PP_MAX];
};

/* finish - stop the events, report once, free */
static void finish(struct pc_proxy_rd *r, const struct pc_pp_info *info, const char *why)
{
    pc_proxy_done_fn *done = r->done;
    void *arg = r->arg;
    evutil_socket_t fd = r->fd;

    event_free(r->ev);
    event_free(r->timer);
    free(r);
    done(arg, fd, info, why);
}

/* on_timer - the whole header did not arrive in time */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    finish(arg, NULL, "no complete PROXY header in time");
}

/* on_read - peek, parse, take the header's bytes */
static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct pc_proxy_rd *r = arg;
    struct pc_pp_info info;
    const char *why;

    (void)what;
    ssize_t n = recv(fd, r->buf + r->have, sizeof(r->buf) - r->have, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {
        finish(r, NULL,
               n == 0 ? "closed before the end of the PROXY header"
                      : "read error before the end of the PROXY header");
        return;
    }
    enum pc_pp_status st = pc_pp_parse(r->buf, r->have + (size_t)n, sizeof(r->buf), &info, &why);
    if (st == PC_PP_ERROR) {
        finish(r, NULL, why);
        return;
    }
    size_t take = st == PC_PP_OK ? info.hdrlen - r->have : (size_t)n;
    /* Peeked bytes are there: this recv takes exactly them. */
    if (recv(fd, r->buf + r->have, take, 0) != (ssize_t)take) {
        finish(r, NULL, "read error in the PROXY header");
        return;
    }
    r->have += take;
    if (st == PC_PP_OK)
        finish(r, &info, NULL);
}

/* pc_proxy_read - arm the read event and the deadline */
int pc_proxy_read(struct event_base *base, evutil_socket_t fd, unsigned timeout_ms,
                  pc_proxy_done_fn *done, void *arg)
{
    struct pc_proxy_rd *r = calloc(1, sizeof(*r));
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)(timeout_ms % 1000) * 1000};

    if (r == NULL)
        return -1;
    r->fd = fd;
    r->done = done;
    r->arg = arg;
    r->ev = event_new(base, fd, EV_READ | EV_PERSIST, on_read, r);
    r->timer = evtimer_new(base, on_timer, r);
    if (r->ev == NULL || r->timer == NULL) {
        if (r->ev)
            event_free(r->ev);
        if (r->timer)
            event_free(r->timer);
        free(r);
        return -1;
    }
    event_add(r->ev, NULL);
    evtimer_add(r->timer, &tv);
    return 0;
}

/* pc_proxy_session_facts - TLS facts and the authority from a v2 header; the header's
 * destination is where the client really connected (the proxy's front, not our socket) */
void pc_proxy_session_facts(struct pc_session *s, const struct pc_pp_info *in)
{
    const struct pc_pp_tls *t = &in->tls;

    if (!in->local)
        pc_session_set_local(s, (const struct sockaddr *)&in->dst);
    pc_fact_add(s, "proxy", "v%d", in->version);
    if (in->authority[0])
        pc_fact_add(s, "proxy.authority", "%s", in->authority);
    if (!t->present)
        return;
    pc_fact_add(s, "proxy.tls", "%s", t->version[0] ? t->version : "yes");
    if (t->cipher[0])
        pc_fact_add(s, "proxy.tls_cipher", "%s", t->cipher);
    if (t->cn[0])
        pc_fact_add(s, "proxy.tls_cn", "%s", t->cn);
    pc_fact_add(s, "proxy.tls_verified", "%s", t->verified ? "yes" : "no");
}
