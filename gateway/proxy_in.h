/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	proxy_in 3h - read a PROXY protocol header from a new connection
 * DESCRIPTION
 *	Before the greeting, on a listener with proxy_protocol, the header is
 *	read within its own deadline and bound (lib/proxy_proto.h); only the
 *	header's bytes are taken from the socket, so whatever the client sends
 *	after it stays for the SMTP session. done() is called once, from the
 *	loop: with the parsed header, or with NULL and the reason (the caller
 *	closes the socket).
 */
#ifndef PC_PROXY_IN_H
#define PC_PROXY_IN_H

#include <event2/util.h>
#include <sys/socket.h>

#include "lib/proxy_proto.h"

struct event_base;

typedef void pc_proxy_done_fn(void *arg, evutil_socket_t fd, const struct pc_pp_info *info,
                              const char *why);

struct pc_session;

/* pc_proxy_session_facts - what the header says beyond the address, as session facts:
 * "proxy" = v1|v2; with a v2 SSL TLV "proxy.tls" = the TLS version (or "yes"),
 * "proxy.tls_cipher", "proxy.tls_cn", "proxy.tls_verified" = yes|no; "proxy.authority" (SNI) */
void pc_proxy_session_facts(struct pc_session *, const struct pc_pp_info *);

/* pc_proxy_read - start reading; -1 when out of memory (done() is then not called) */
int pc_proxy_read(struct event_base *, evutil_socket_t fd, unsigned timeout_ms,
                  pc_proxy_done_fn *done, void *arg);

#endif
