/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	bevio 3 - write to a socket bufferevent now, queue only what it cannot take
 * DESCRIPTION
 *	See bevio.h. Only when the output buffer is empty may we write past
 *	it (order is kept); only a plain socket bufferevent may be written
 *	to past it (an OpenSSL bufferevent has an fd too, but what goes on
 *	it must be encrypted first). EAGAIN or a partial write queues the rest, and libevent
 *	takes over with its write event and its write timeout; any other
 *	error queues everything, so that libevent meets the same error on
 *	its own write and reports it through the event callback as before.
 */
#include "gateway/bevio.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/types.h>

/* pc_bev_write - send now when nothing is queued */
int pc_bev_write(struct bufferevent *bev, const void *data, size_t len)
{
    const char *p = data;
    evutil_socket_t fd = bufferevent_getfd(bev);

    if (len > 0 && fd >= 0 && bufferevent_openssl_get_ssl(bev) == NULL &&
        evbuffer_get_length(bufferevent_get_output(bev)) == 0 &&
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
