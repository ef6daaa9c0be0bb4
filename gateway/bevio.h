/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	bevio 3h - write to a socket bufferevent now, queue only what it cannot take
 * DESCRIPTION
 *	libevent queues every bufferevent_write() and writes on the next
 *	loop pass, after adding the write event (epoll_ctl) and before
 *	removing it again (epoll_ctl): three system calls and a loop pass for
 *	every reply. pc_bev_write() sends at once when nothing is queued and
 *	queues only the rest, so a socket that keeps up costs one send().
 *	On libevent's OpenSSL bufferevent (the same three calls per reply)
 *	it does the same with SSL_write(): one write() per record.
 */
#ifndef PC_BEVIO_H
#define PC_BEVIO_H

#include <stddef.h>

struct bufferevent;

/* pc_bev_write - send what the socket takes now, queue the rest (in order); 0 or -1 */
int pc_bev_write(struct bufferevent *, const void *data, size_t len);

/* pc_bev_nodelay - TCP_NODELAY on its socket: with writes made at once, a reply or the end of
 * data written right after other bytes must not wait for their ACK (Nagle, RFC 896) */
void pc_bev_nodelay(struct bufferevent *);

#endif
