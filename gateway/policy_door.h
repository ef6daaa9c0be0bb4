/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	policy_door 3h - the Postfix policy delegation door (check_policy_service)
 */
#ifndef PC_POLICY_DOOR_H
#define PC_POLICY_DOOR_H

#include <event2/util.h>
#include <sys/socket.h>

#include "gateway/smtp_server.h"

/* pc_policy_accept - serve policy requests on an accepted socket until the client closes; each
 * new transaction starts under *current, the generation serving when it starts (reload) */
void pc_policy_accept(struct pc_services *, struct pc_conf *const *current,
                      const struct pc_listener_conf *, evutil_socket_t fd, const struct sockaddr *,
                      socklen_t, pc_smtp_closed_fn *, void *closed_arg);

/* pc_policy_check - for -t: warn (on stderr) about checks a policy listener cannot run because
 * Postfix never shows it the message; the count of warnings */
int pc_policy_check(const struct pc_conf *);

#endif
