/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	sockread 3 - read a socket bufferevent's input ourselves, 64 KB at a time
 * DESCRIPTION
 *	libevent 2.1 asks the kernel how much is waiting (ioctl FIONREAD)
 *	before every read and reads at most 4 KB (EVBUFFER_MAX_READ; the
 *	setting that lifts it, evbuffer_set_max_read, is 2.2 only): two
 *	system calls per 4 KB, 512 per MB. Here the bufferevent keeps its
 *	output side, its callbacks and its input buffer, but libevent's read
 *	event is never enabled; ours reads with one readv of up to 64 KB into
 *	the input buffer and runs the bufferevent's read callback (or its
 *	event callback on EOF and errors, with BEV_EVENT_READING as libevent
 *	would). Above the high mark nothing is read until the owner has
 *	consumed input (a callback on the input buffer takes reading up
 *	again), so a client can make us hold at most high + 64 KB.
 * SEE ALSO
 *	evbuffer_reserve_space(3), bufferevent_trigger(3)
 */
#include "gateway/sockread.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <sys/uio.h>

/* Just under 64 KB: libevent rounds a chain (data + its header) up to a power of two, and a
 * 128 KB chain would be at our mmap threshold (main.c), an mmap and a munmap per read. */
#define PC_SOCKREAD_CHUNK (65536 - 512)

struct pc_sockread {
    struct bufferevent *bev;
    struct event *ev;
    struct evbuffer_cb_entry *drained;
    size_t high;
    bool want;   /* the owner wants input */
    bool paused; /* above the high mark: waiting for the owner to consume */
    bool ended;  /* EOF or an error was reported: no more reads */
    bool empty;  /* the last read got less than it asked for: the socket had no more */
};

static ssize_t readv_into(struct pc_sockread *r, evutil_socket_t fd, struct evbuffer *in);

/* arm - the read event on or off, as wanted and allowed */
static void arm(struct pc_sockread *r)
{
    if (r->want && !r->paused && !r->ended)
        event_add(r->ev, NULL);
    else
        event_del(r->ev);
}

/* on_drained - the owner consumed input: below the high mark, read again */
static void on_drained(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct pc_sockread *r = arg;

    (void)info;
    if (r->paused && evbuffer_get_length(buf) < r->high) {
        r->paused = false;
        arm(r);
    }
}

/* read_once - one readv into the input buffer: bytes read, 0 at EOF, -1 on error */
static ssize_t read_once(struct pc_sockread *r, evutil_socket_t fd, struct evbuffer *in)
{
    /* A socket bufferevent keeps the end of its input frozen except while it reads itself:
     * thaw it for our read, freeze it again after (as libevent's own read callback does). */
    evbuffer_unfreeze(in, 0);
    ssize_t n = readv_into(r, fd, in);
    int e = errno;
    evbuffer_freeze(in, 0);
    errno = e;
    return n;
}

/* readv_into - reserve up to 64 KB at the end of in, read into it, commit what came */
static ssize_t readv_into(struct pc_sockread *r, evutil_socket_t fd, struct evbuffer *in)
{
    struct evbuffer_iovec vec[2];
    size_t room = r->high - evbuffer_get_length(in);
    size_t want = room < PC_SOCKREAD_CHUNK ? room : PC_SOCKREAD_CHUNK;
    int nv = evbuffer_reserve_space(in, (ev_ssize_t)want, vec, 2);
    struct iovec iov[2];
    ssize_t n;

    if (nv <= 0) {
        errno = ENOMEM;
        return -1;
    }
    for (int i = 0; i < nv; i++) {
        iov[i].iov_base = vec[i].iov_base;
        iov[i].iov_len = vec[i].iov_len;
    }
    do
        n = readv(fd, iov, nv);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
        evbuffer_commit_space(in, vec, 0);
        return n;
    }
    /* TCP and UNIX stream reads return less than asked only when the queue ran dry. */
    r->empty = (size_t)n < want;
    /* Commit exactly what arrived, chunk by chunk. */
    size_t left = (size_t)n;
    for (int i = 0; i < nv; i++) {
        if (vec[i].iov_len > left)
            vec[i].iov_len = left;
        left -= vec[i].iov_len;
    }
    evbuffer_commit_space(in, vec, nv);
    return n;
}

/* on_readable - read what is there; tell the owner */
static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct pc_sockread *r = arg;
    struct evbuffer *in = bufferevent_get_input(r->bev);

    (void)what;
    if (evbuffer_get_length(in) >= r->high) {
        r->paused = true;
        arm(r);
        return;
    }
    ssize_t n = read_once(r, fd, in);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (n <= 0) {
        int e = errno;
        r->ended = true;
        arm(r);
        errno = e; /* the owner's event callback reads it, as after libevent's own read */
        bufferevent_trigger_event(
            r->bev, BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR), 0);
        return;
    }
    /* The callback may schedule the owner's free; nothing of r is touched after it. */
    bufferevent_trigger(r->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS);
}

/* pc_sockread_new - take over reading of a socket bufferevent (off until enabled) */
struct pc_sockread *pc_sockread_new(struct bufferevent *bev, size_t high)
{
    struct pc_sockread *r = calloc(1, sizeof(*r));
    evutil_socket_t fd = bufferevent_getfd(bev);

    if (r == NULL || fd < 0) {
        free(r);
        return NULL;
    }
    r->bev = bev;
    r->high = high;
    r->ev = event_new(bufferevent_get_base(bev), fd, EV_READ | EV_PERSIST, on_readable, r);
    r->drained = evbuffer_add_cb(bufferevent_get_input(bev), on_drained, r);
    if (r->ev == NULL || r->drained == NULL) {
        pc_sockread_free(r);
        return NULL;
    }
    bufferevent_disable(bev, EV_READ);
    return r;
}

/* pc_sockread_enable - want input (true) or not (false) */
void pc_sockread_enable(struct pc_sockread *r, bool on)
{
    if (r == NULL)
        return;
    r->want = on;
    arm(r);
}

/* pc_sockread_drained - the last read emptied the socket */
bool pc_sockread_drained(const struct pc_sockread *r)
{
    return r != NULL && r->empty;
}

/* pc_sockread_free - stop reading; before the bufferevent is freed */
void pc_sockread_free(struct pc_sockread *r)
{
    if (r == NULL)
        return;
    if (r->drained)
        evbuffer_remove_cb_entry(bufferevent_get_input(r->bev), r->drained);
    if (r->ev)
        event_free(r->ev);
    free(r);
}
