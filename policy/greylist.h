/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	greylist 3h - greylisting state: one record per key, in-process or in Redis
 * DESCRIPTION
 *	A key (by default the triplet client network, sender, recipient,
 *	hashed by pc_rl_key) is unknown, pending (first seen at some time) or
 *	allowed (until some time). The first attempt creates a pending record
 *	and is deferred; a retry at least delay after the first attempt and
 *	at most retry_window after it promotes the key to allowed for
 *	lifetime; each later pass of an allowed key extends its lifetime, as
 *	Postgrey does. A retry too early is deferred again without moving
 *	the first-seen time; a pending record older than retry_window is
 *	forgotten and the next attempt starts afresh.
 *
 *	pc_gl_step() is that rule on one record; the in-process store applies
 *	it to a bounded table, the Redis script (pc_gl_redis_script) applies
 *	the same rule atomically inside Redis with Redis' own clock, so
 *	several gateways sharing one Redis see one state.
 *
 *	The in-process store holds at most max_entries records. When full,
 *	it forgets the least recently used pending record; only when no
 *	pending record is left the least recently used allowed one, so a
 *	flood of new triplets delays new senders but does not make known
 *	good senders wait again.
 * SEE ALSO
 *	Evan Harris, "The Next Step in the Spam Control War: Greylisting" (2003);
 *	Postgrey; portcullis.conf(5) "greylist"
 */
#ifndef PC_GREYLIST_H
#define PC_GREYLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pc_gl_params {
    uint64_t delay_ms;    /* a retry earlier than this after the first attempt is deferred */
    uint64_t window_ms;   /* a retry later than this after the first attempt starts afresh */
    uint64_t lifetime_ms; /* an allowed key stays allowed this long after its last pass */
};

enum pc_gl_outcome {
    PC_GL_DEFERRED, /* first attempt, or retry too early: 451 */
    PC_GL_ALLOWED,  /* known good key (its lifetime extended) */
    PC_GL_PROMOTED  /* this retry passed: the key is allowed from now on */
};

struct pc_gl_rec {
    bool known;
    bool allowed;
    uint64_t first_ms;   /* pending: time of the first attempt */
    uint64_t expires_ms; /* when the record is forgotten */
};

/* pc_gl_step - apply one attempt at now to rec; *retry_ms is the wait when deferred */
enum pc_gl_outcome pc_gl_step(struct pc_gl_rec *rec, uint64_t now_ms, const struct pc_gl_params *,
                              uint64_t *retry_ms);

struct pc_gl_mem;

/* pc_gl_mem_new - an in-process store of at most max_entries records; now_ms NULL = real clock */
struct pc_gl_mem *pc_gl_mem_new(size_t max_entries, uint64_t (*now_ms)(void));
void pc_gl_mem_free(struct pc_gl_mem *);
/* pc_gl_mem_check - one attempt for key (a NUL-terminated string) */
enum pc_gl_outcome pc_gl_mem_check(struct pc_gl_mem *, const char *key, const struct pc_gl_params *,
                                   uint64_t *retry_ms);
/* pc_gl_mem_entries - records held (tests) */
size_t pc_gl_mem_entries(const struct pc_gl_mem *);
/* pc_gl_mem_evictions - records forgotten because the store was full (tests, logs) */
uint64_t pc_gl_mem_evictions(const struct pc_gl_mem *);

/* pc_gl_redis_script - KEYS[1] = key, ARGV = delay, window, lifetime (ms);
 * returns {outcome, retry_ms} with outcome as enum pc_gl_outcome */
const char *pc_gl_redis_script(void);

#endif
