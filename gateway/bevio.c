/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	bevio 3 - write to a socket bufferevent now, queue only what it cannot take
 * DESCRIPTION
 *	See bevio.h. Only when the output buffer is empty may we write past
 *	it (order is kept). On a plain socket bufferevent that is a send();
 *	on an OpenSSL bufferevent an SSL_write() on its SSL, which encrypts
 *	and writes to the same socket as libevent's own SSL_write() would.
 *	EAGAIN (WANT_WRITE) or a partial write queues the rest, and libevent
 *	takes over with its write event and its write timeout; any other
 *	error queues everything, so that libevent meets the same error on
 *	its own write and reports it through the event callback as before.
 */
#include "gateway/bevio.h"

#include <errno.h>
#include <limits.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/types.h>

/* tls_write - encrypt and send what the socket takes now; the rest is the caller's to queue */
static size_t tls_write(SSL *ssl, const char *p, size_t len)
{
    size_t done = 0;

    /* Only an established connection whose last operation left nothing to send: after an
     * SSL_read that wanted to write (a KeyUpdate's answer pending in OpenSSL's buffer),
     * libevent must send that first, and our application data would not match the pending
     * record's type (SSL_R_BAD_WRITE_RETRY). Renegotiation is off (tls.c). */
    while (done < len && SSL_is_init_finished(ssl) && !SSL_want_write(ssl)) {
        size_t chunk = len - done < INT_MAX ? len - done : INT_MAX;
        ERR_clear_error();
        int n = SSL_write(ssl, p + done, (int)chunk);
        if (n <= 0) {
            /* WANT_WRITE: part of a record went out, OpenSSL keeps the rest, and the retry
             * must offer the same bytes again (at least as many), which libevent's write of
             * the queue does (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER: from its own buffer). Any
             * other error: libevent meets it again on its write and reports it as before. */
            ERR_clear_error();
            break;
        }
        /* SSL_MODE_ENABLE_PARTIAL_WRITE: one record (16 KB at most) per call. */
        done += (size_t)n;
    }
    return done;
}

/* pc_bev_write - send now when nothing is queued */
int pc_bev_write(struct bufferevent *bev, const void *data, size_t len)
{
    const char *p = data;
    evutil_socket_t fd = bufferevent_getfd(bev);
    SSL *ssl = bufferevent_openssl_get_ssl(bev);

    if (ssl != NULL) {
        if (len > 0 && evbuffer_get_length(bufferevent_get_output(bev)) == 0 &&
            (bufferevent_get_enabled(bev) & EV_WRITE)) {
            size_t n = tls_write(ssl, p, len);
            p += n;
            len -= n;
        }
        return len ? bufferevent_write(bev, p, len) : 0;
    }
    if (len > 0 && fd >= 0 && evbuffer_get_length(bufferevent_get_output(bev)) == 0 &&
        (bufferevent_get_enabled(bev) & EV_WRITE)) {
        ssize_t n;
        do
            n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        while (n < 0 && errno == EINTR);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        }
    }
    return len ? bufferevent_write(bev, p, len) : 0;
}

/* pc_bev_nodelay - no Nagle delay on a TCP socket (other sockets refuse it, harmlessly) */
void pc_bev_nodelay(struct bufferevent *bev)
{
    int one = 1;
    evutil_socket_t fd = bufferevent_getfd(bev);

    if (fd >= 0)
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}
