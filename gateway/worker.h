/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	worker 3h - a small thread pool for work that must block
 * DESCRIPTION
 *	work(arg) runs on a worker thread; done(arg) runs afterwards on the
 *	event loop thread. Work that is no longer wanted (the session went
 *	away) is not withdrawn: the caller marks arg cancelled and done()
 *	frees it without touching the session. libspf2 and Maildir fsync
 *	run here.
 */
#ifndef PC_WORKER_H
#define PC_WORKER_H

struct event_base;
struct pc_workers;

struct pc_workers *pc_workers_create(struct event_base *, int threads);
void pc_workers_destroy(struct pc_workers *);
void pc_worker_submit(struct pc_workers *, void (*work)(void *), void (*done)(void *), void *arg);

#endif
