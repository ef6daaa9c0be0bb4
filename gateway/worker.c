/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	worker 3 - a small thread pool for work that must block
 * DESCRIPTION
 *	Jobs go in through a mutex-protected queue; finished jobs come back
 *	through a second queue and an eventfd that wakes the loop.
 */
#include "gateway/worker.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "lib/log.h"

struct job {
    struct job *next;
    void (*work)(void *), (*done)(void *);
    void *arg;
};

struct pc_workers {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *todo, **todo_tail, *done, **done_tail;
    pthread_t *threads;
    int nthreads, efd;
    bool stop;
    struct event *ev;
};

/* worker_main - take jobs until told to stop */
static void *worker_main(void *arg)
{
    struct pc_workers *w = arg;

    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->stop && w->todo == NULL)
            pthread_cond_wait(&w->cond, &w->lock);
        if (w->stop)
            break;
        struct job *j = w->todo;
        w->todo = j->next;
        if (w->todo == NULL)
            w->todo_tail = &w->todo;
        pthread_mutex_unlock(&w->lock);
        j->work(j->arg);
        pthread_mutex_lock(&w->lock);
        j->next = NULL;
        *w->done_tail = j;
        w->done_tail = &j->next;
        uint64_t one = 1;
        if (write(w->efd, &one, sizeof(one)) < 0)
            pc_warn("worker: eventfd write: %m");
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* on_done - run completion callbacks on the loop */
static void on_done(evutil_socket_t fd, short what, void *arg)
{
    struct pc_workers *w = arg;
    uint64_t n;
    struct job *list;

    (void)what;
    if (read(fd, &n, sizeof(n)) < 0)
        return;
    pthread_mutex_lock(&w->lock);
    list = w->done;
    w->done = NULL;
    w->done_tail = &w->done;
    pthread_mutex_unlock(&w->lock);
    while (list) {
        struct job *j = list;
        list = j->next;
        j->done(j->arg);
        free(j);
    }
}

/* pc_workers_create - start the threads */
struct pc_workers *pc_workers_create(struct event_base *base, int threads)
{
    struct pc_workers *w = calloc(1, sizeof(*w));

    if (w == NULL)
        pc_fatal("out of memory");
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->todo_tail = &w->todo;
    w->done_tail = &w->done;
    w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->efd < 0)
        pc_fatal("eventfd: %m");
    w->ev = event_new(base, w->efd, EV_READ | EV_PERSIST, on_done, w);
    event_add(w->ev, NULL);
    w->nthreads = threads;
    w->threads = calloc((size_t)threads, sizeof(pthread_t));
    for (int i = 0; i < threads; i++)
        if (pthread_create(&w->threads[i], NULL, worker_main, w) != 0)
            pc_fatal("pthread_create failed");
    return w;
}

/* pc_workers_destroy - stop threads; queued work is dropped */
void pc_workers_destroy(struct pc_workers *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->lock);
    w->stop = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    for (int i = 0; i < w->nthreads; i++)
        pthread_join(w->threads[i], NULL);
    event_free(w->ev);
    close(w->efd);
    for (struct job *j = w->todo, *n; j; j = n)
        n = j->next, free(j);
    for (struct job *j = w->done, *n; j; j = n)
        n = j->next, free(j);
    free(w->threads);
    free(w);
}

/* pc_worker_submit - queue a job */
void pc_worker_submit(struct pc_workers *w, void (*work)(void *), void (*done)(void *), void *arg)
{
    struct job *j = calloc(1, sizeof(*j));

    if (j == NULL)
        pc_fatal("out of memory");
    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&w->lock);
    *w->todo_tail = j;
    w->todo_tail = &j->next;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}
