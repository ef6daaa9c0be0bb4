/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	authdb 3h - credential back ends for AUTH behind one asynchronous call
 * DESCRIPTION
 *	pc_authdb_start(db, creds, cb, arg) checks a user name and password
 *	and calls cb(result, arg) later, always on the loop and never from
 *	inside pc_authdb_start itself:
 *
 *	  PC_AUTH_OK        235 2.7.0 (RFC 4954 section 6)
 *	  PC_AUTH_FAIL      535 5.7.8, and pc_authfail_add for the client
 *	  PC_AUTH_TEMPFAIL  454 4.7.0 (back end unreachable, timed out)
 *
 *	The returned handle is valid until cb runs; pc_auth_cancel(handle)
 *	before that (the session went away) means cb will not run. Never free
 *	the back end from inside cb. The password is copied for the check and
 *	wiped (explicit_bzero) when the check ends; no back end logs it.
 *
 *	Two back ends:
 *	  password file  "user:{SCHEME}hash" or "user:hash" lines (more
 *	                 ":"-fields, as Dovecot's passwd-file has, are
 *	                 ignored); crypt(3) hashes only: yescrypt ($y$, $gy$,
 *	                 $7$), bcrypt ($2b$, $2y$, $2a$), sha512-crypt ($6$),
 *	                 sha256-crypt ($5$); schemes {CRYPT}, {YESCRYPT},
 *	                 {BLF-CRYPT}, {SHA512-CRYPT}, {SHA256-CRYPT}. The hash
 *	                 is verified with crypt_rn on the worker pool (a hash
 *	                 costs tens of milliseconds by design; the loop must
 *	                 not wait). An unknown user costs the same as a known
 *	                 one (no user enumeration by timing). Reloading builds
 *	                 a new table; a bad file keeps the old one.
 *	  dovecot        Dovecot's authentication client protocol (the one
 *	                 Postfix's smtpd_sasl_type = dovecot speaks) over
 *	                 "unix:/path" or "inet:ADDRESS:PORT" (numeric: no DNS
 *	                 on the loop): one connection, requests multiplexed by
 *	                 id, reconnected on the next request after a failure,
 *	                 a deadline per request.
 *
 *	Wiring (the AUTH row): after pc_sasl_* gives DONE, fill creds from the
 *	session (client address, TLS), h = pc_authdb_start(...), stop reading
 *	from the client (lesson 3: pending), keep h in the session so that its
 *	end can pc_auth_cancel(h); in cb reply, and on FAIL delay the reply and
 *	count with pc_authfail_add; at connect (or AUTH) answer 421 when
 *	pc_authfail_over says the client has failed too often.
 * SEE ALSO
 *	RFC 4954, crypt(5), https://doc.dovecot.org/developer_manual/design/
 *	auth_protocol/
 */
#ifndef PC_AUTHDB_H
#define PC_AUTHDB_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct event_base;
struct pc_err;
struct pc_workers;

enum pc_auth_result { PC_AUTH_OK, PC_AUTH_FAIL, PC_AUTH_TEMPFAIL };

struct pc_auth_creds {
    const char *user, *pass;
    const char *client_addr; /* the SMTP client's IP (Dovecot's rip=), or NULL */
    const char *local_addr;  /* our listener's IP (lip=), or NULL */
    bool secured;            /* the session is under TLS */
};

typedef void pc_auth_cb(enum pc_auth_result, void *arg);

struct pc_authdb;
struct pc_auth_req;

/* pc_authdb_start - begin a check; NULL only when out of memory (cb will not run) */
struct pc_auth_req *pc_authdb_start(struct pc_authdb *, const struct pc_auth_creds *,
                                    pc_auth_cb *cb, void *arg);
/* pc_auth_cancel - the caller no longer wants the answer (before cb has run) */
void pc_auth_cancel(struct pc_auth_req *);
/* pc_authdb_free - the back end; requests in flight end without their callbacks */
void pc_authdb_free(struct pc_authdb *);

/* pc_authdb_passwd_new - a password file; origin ("file:line" of the option) prefixes err */
struct pc_authdb *pc_authdb_passwd_new(const char *path, const char *origin, struct pc_workers *,
                                       struct pc_err *err);
/* pc_authdb_passwd_reload - read the file again; on error (-1, err) the old table stays */
int pc_authdb_passwd_reload(struct pc_authdb *, struct pc_err *err);
/* pc_authdb_passwd_check - parse a password file only (for -t); 0 or -1 and err */
int pc_authdb_passwd_check(const char *path, const char *origin, struct pc_err *err);

/* pc_authdb_dovecot_new - "unix:/path" or "inet:127.0.0.1:PORT"; timeout_ms per request.
 * No connection is made until the first request. */
struct pc_authdb *pc_authdb_dovecot_new(struct event_base *, const char *spec, unsigned timeout_ms,
                                        struct pc_err *err);
/* pc_authdb_dovecot_connects - connections opened so far (a statistic; one while healthy) */
unsigned long pc_authdb_dovecot_connects(struct pc_authdb *);
/* pc_authdb_dovecot_spec_ok - the syntax check for -t */
bool pc_authdb_dovecot_spec_ok(const char *spec);

/* Failed attempts per client address: a bounded table (the oldest entry makes room), counts
 * within a window. The AUTH row adds on PC_AUTH_FAIL; the door answers 421 once over. */
struct pc_authfail;
struct pc_authfail *pc_authfail_new(unsigned limit, unsigned window_seconds, size_t max_entries);
void pc_authfail_free(struct pc_authfail *);
/* pc_authfail_add - one more failure for addr; returns the count within the window */
unsigned pc_authfail_add(struct pc_authfail *, const char *addr, time_t now);
/* pc_authfail_over - addr has failed limit times or more within the window */
bool pc_authfail_over(struct pc_authfail *, const char *addr, time_t now);
/* pc_authfail_count - failures of addr within the window */
unsigned pc_authfail_count(struct pc_authfail *, const char *addr, time_t now);

#endif
