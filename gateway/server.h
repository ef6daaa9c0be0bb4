/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	server 3h - the process: event loop, listeners, signals, reload
 */
#ifndef PC_SERVER_H
#define PC_SERVER_H

#include <stddef.h>

struct pc_conf;

/* What the parent hands one worker process (workers > 1, gateway/master.c). */
struct pc_worker_env {
    unsigned index, count;    /* this worker, of how many */
    size_t nfds;              /* listening sockets, by listener name */
    const char *const *names; /* the listener each socket serves */
    const int *fds;
    volatile int *ready; /* shared page: set once the loop is about to run */
    long long *beat;     /* shared page: monotonic ms of the loop's last heartbeat; 0: leaving */
    unsigned long long *session_ids; /* shared page: the instance's last session id */
};

/* pc_server_run - serve until SIGTERM; takes over the configuration reference */
int pc_server_run(struct pc_conf *);
/* pc_server_run_worker - the same, as one worker on sockets its parent bound */
int pc_server_run_worker(struct pc_conf *, const struct pc_worker_env *);

#endif
