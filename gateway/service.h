/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	service 3h - running as a system service: privileges, systemd
 * DESCRIPTION
 *	The process-level duties of a daemon that the event loop calls at
 *	fixed points: take sockets systemd passed (socket activation), drop
 *	root after binding, and tell the service manager where we are
 *	(sd_notify: READY, RELOADING, STOPPING, STATUS, WATCHDOG). Without
 *	systemd every call is a cheap no-op.
 * SEE ALSO
 *	sd_notify(3), sd_listen_fds(3), setresuid(2)
 */
#ifndef PC_SERVICE_H
#define PC_SERVICE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct pc_err;

/* pc_listen_fds_init - note the sockets systemd passed us (LISTEN_FDS); 0 or their count */
int pc_listen_fds_init(void);
/* pc_listen_fd_take - a passed listening TCP socket bound to this address, or -1 */
int pc_listen_fd_take(const struct sockaddr *sa, socklen_t len);
/* pc_listen_fds_close_unused - close (and log) passed sockets no listener claimed */
void pc_listen_fds_close_unused(void);

/* pc_privs_drop - become user:group (names) when root; refuse root unless allowed */
int pc_privs_drop(const char *user, const char *group, bool run_as_root, struct pc_err *);

/* pc_notify - a state line to the service manager (no-op without NOTIFY_SOCKET) */
void pc_notify(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* pc_watchdog_usec - the watchdog interval systemd expects (WATCHDOG_USEC), or 0 */
uint64_t pc_watchdog_usec(void);

#endif
