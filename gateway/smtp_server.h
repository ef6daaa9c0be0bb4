/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	smtp_server 3h - the SMTP front door: one client connection
 */
#ifndef PC_SMTP_SERVER_H
#define PC_SMTP_SERVER_H

#include <event2/util.h>
#include <sys/socket.h>

struct pc_services;
struct pc_conf;
struct pc_listener_conf;
struct pc_ip;
struct pc_pp_info;

typedef void pc_smtp_closed_fn(void *arg, const struct pc_ip *client);

/* pc_smtp_accept - take over an accepted socket; proxy: the PROXY header it came with, or NULL */
void pc_smtp_accept(struct pc_services *, struct pc_conf *, const struct pc_listener_conf *,
                    evutil_socket_t fd, const struct sockaddr *, socklen_t, pc_smtp_closed_fn *,
                    void *closed_arg, const struct pc_pp_info *proxy);

#endif
