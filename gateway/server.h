/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	server 3h - the process: event loop, listeners, signals, reload
 */
#ifndef PC_SERVER_H
#define PC_SERVER_H

struct pc_conf;

/* pc_server_run - serve until SIGTERM; takes over the configuration reference */
int pc_server_run(struct pc_conf *);

#endif
