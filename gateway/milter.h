/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	milter 3h - the milter door: libmilter's callbacks fed to the transaction engine
 * DESCRIPTION
 *	A listener with protocol = "milter" serves Sendmail's and Postfix's
 *	milter protocol through libmilter. libmilter allows one smfi_main per
 *	process, so one milter listener per process.
 * SEE ALSO
 *	portcullis.conf(5) (listener.protocol), portcullis(8) (SIGNALS), libmilter
 */
#ifndef PC_GATEWAY_MILTER_H
#define PC_GATEWAY_MILTER_H

#include <stdbool.h>
#include <stddef.h>

struct pc_conf;
struct pc_services;
struct pc_listener_conf;

/* pc_milter_open - bind the listener's socket (before privileges are dropped); -1 on error */
int pc_milter_open(struct pc_services *, struct pc_conf *, const struct pc_listener_conf *);
/* pc_milter_run - start serving in libmilter's threads; idle(arg) runs on the loop when the
 * last milter session ends after pc_milter_stop */
int pc_milter_run(void (*idle)(void *), void *arg);
/* pc_milter_generation - new milter sessions use this configuration (a reload) */
void pc_milter_generation(struct pc_conf *);
/* pc_milter_stop - refuse new MTA connections; sessions in flight finish */
void pc_milter_stop(void);
/* pc_milter_failed - libmilter stopped serving without being asked (the process must exit 1) */
bool pc_milter_failed(void);
/* pc_milter_sessions - milter sessions open now (on the loop) */
size_t pc_milter_sessions(void);

#endif
