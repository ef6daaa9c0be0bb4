/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	postscreen 3h - postscreen-style checks before and around the greeting
 * DESCRIPTION
 *	On a listener with postscreen = true, a client not in mynetworks and
 *	not in the pass cache waits greet_pause before it hears the greeting,
 *	while its address is looked up in postscreen.dnsbl_sites. A byte that
 *	arrives before the greeting is early talk (PREGREET) by construction:
 *	the greeting has not been sent yet. Later, in the session, three
 *	checks cost nothing and always run: commands pipelined before our
 *	EHLO reply offered PIPELINING (PIPELINING), HTTP and proxy verbs
 *	(NON-SMTP COMMAND), command lines ending in a bare LF (BARE NEWLINE).
 *
 *	Each check has an action, as postscreen's: ignore (log, fact), enforce
 *	(log, fact; the session goes on and every RCPT is refused with 550,
 *	logged with its sender and recipient), drop (521 and close at once).
 *	A client that passed the pause and the DNS lists is cached for
 *	cache_ttl (in this process, at most cache_size addresses): its next
 *	connections are greeted at once. A later failure removes it. With
 *	postscreen.store the cache is shared in Redis (the rate limit store
 *	code, policy/rl_store.h): a client that passed at one gateway is
 *	greeted at once by all; a store that cannot answer is a miss.
 *
 *	The door (gateway/smtp_server.c) owns the bytes and the replies; this
 *	module owns the timer, the lookups, the cache, the log lines and facts.
 * SEE ALSO
 *	postscreen(8), RFC 5321 3.1 (the client waits for the greeting),
 *	RFC 2920 (PIPELINING), RFC 7504 (521)
 */
#ifndef PC_GATEWAY_POSTSCREEN_H
#define PC_GATEWAY_POSTSCREEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/cidr.h"
#include "policy/dnsbl_sites.h"
#include "policy/ratelimit.h"

struct event;
struct event_base;
struct pc_session;
struct pc_verdict;

enum pc_ps_action { PC_PS_IGNORE, PC_PS_ENFORCE, PC_PS_DROP };

enum pc_ps_test { PC_PS_PREGREET, PC_PS_DNSBL, PC_PS_PIPELINING, PC_PS_NON_SMTP, PC_PS_BARE_NL };
#define PC_PS_TESTS 5

/* postscreen { } - shared by the listeners that set postscreen = true */
struct pc_ps_conf {
    unsigned greet_pause_ms;
    enum pc_ps_action action[PC_PS_TESTS];
    struct pc_dnsbl_sites dnsbl;
    int dnsbl_threshold;
    unsigned cache_ttl_ms; /* 0: no cache */
    size_t cache_size;
    bool skip_mynetworks;
    struct pc_cidr_list mynetworks;
    struct pc_rl_store *store;  /* the shared cache (Redis, Sentinel, Cluster), or NULL */
    struct pc_rl_script script; /* its Lua: get, set, forget one address */
};

/* One session's checks; zeroed memory is "not started". */
struct pc_ps {
    const struct pc_ps_conf *c;
    struct pc_session *s;
    struct event *timer;
    struct pc_dnsbl_lookup dl;
    struct pc_rl_req *req; /* a pending look-up in the shared cache */
    struct event_base *base;
    struct pc_dns *dns;
    bool on;            /* the in-session checks apply (the listener has postscreen, not skipped) */
    bool waiting;       /* before the greeting: the pause or the DNS lists are not over */
    bool pause_over;    /* greet_pause has passed */
    bool dnsbl_done;    /* the lists answered, failed, or none to ask */
    bool pipelining_ok; /* our EHLO reply (offering PIPELINING) went out */
    bool cached;        /* PASS OLD: greeted without the pause */
    bool failed[PC_PS_TESTS];
    uint64_t t0_ms;          /* connect time, for "after N.NN" in the log */
    void (*over)(void *arg); /* the pre-greeting phase is over: greet */
    void *arg;
};

/* pc_ps_action_parse - "ignore", "enforce" or "drop" */
bool pc_ps_action_parse(const char *, enum pc_ps_action *);
/* pc_ps_start - begin the checks of a new session: true when the greeting must wait for
 * over(arg) (never called from inside pc_ps_start); false to greet at once (not on this
 * listener, mynetworks, a cached pass) */
bool pc_ps_start(struct pc_ps *, const struct pc_ps_conf *, bool listener_on, struct pc_session *,
                 struct event_base *, struct pc_dns *, void (*over)(void *), void *arg);
/* pc_ps_fail - a check failed (first time per session): log line, facts, uncache; the
 * configured action. detail: the early bytes, the command, the list (printable, bounded). */
enum pc_ps_action pc_ps_fail(struct pc_ps *, enum pc_ps_test, const char *detail);
/* pc_ps_dnsbl_listed - the lists' total reached dnsbl_threshold; *zone the heaviest */
bool pc_ps_dnsbl_listed(const struct pc_ps *, const char **zone);
/* pc_ps_passed - the pre-greeting phase ended without a failure: cache the client */
void pc_ps_passed(struct pc_ps *);
/* pc_ps_refusal - the verdict of an action: 550 (enforce, at RCPT) or 521 (drop) */
void pc_ps_refusal(const struct pc_ps *, enum pc_ps_test, int code, struct pc_verdict *);
/* pc_ps_hangup - the client left before the greeting */
void pc_ps_hangup(struct pc_ps *);
/* pc_ps_stop - cancel timer and lookups (end of session, or the phase is over) */
void pc_ps_stop(struct pc_ps *);
/* pc_ps_store_create - postscreen.store: the shared cache; -1 with err set */
struct pc_err;
int pc_ps_store_create(struct pc_ps_conf *, const struct pc_rl_store_conf *, struct pc_err *);
/* pc_ps_conf_free - release what a configuration holds */
void pc_ps_conf_free(struct pc_ps_conf *);
/* pc_ps_cache_clear - forget every cached client (tests) */
void pc_ps_cache_clear(void);

#endif
