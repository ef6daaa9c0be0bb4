/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	master 3h - workers = N: one parent, N worker processes
 */
#ifndef PC_MASTER_H
#define PC_MASTER_H

struct pc_conf;

/* pc_master_run - bind, drop privileges, fork and supervise conf->workers workers */
int pc_master_run(struct pc_conf *);

#endif
