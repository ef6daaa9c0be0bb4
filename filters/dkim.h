/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	dkim 3h - DKIM verification and signing steps, independent of the loop
 * DESCRIPTION
 *	A verification job runs libopendkim over a spooled message and stops
 *	whenever it needs a key it does not have (PC_DKIMV_NEED_KEY): the
 *	caller looks the name up (the filter through gateway/dns.h, the unit
 *	tests from the corpus's DNS files), hands the answer back with
 *	pc_dkimv_key() and runs the job again. The key callback registered
 *	with the library answers "try again" for a name it has not been
 *	given, which makes dkim_eoh() return DKIM_STAT_CBTRYAGAIN; dkim_eoh()
 *	is re-entrant for exactly this purpose.
 * SEE ALSO
 *	RFC 6376, RFC 8301, RFC 8463
 */
#ifndef PC_DKIM_H
#define PC_DKIM_H

#include <stdbool.h>
#include <stddef.h>

#include "gateway/dns.h"
#include "gateway/msg.h"

struct dkim_lib;
struct pc_dkimv;

/* pc_dkim_verify_lib - a libopendkim handle set up for verifying (RFC 8301 key size) */
struct dkim_lib *pc_dkim_verify_lib(unsigned min_key_bits);
void pc_dkim_lib_free(struct dkim_lib *);

enum pc_dkimv_state { PC_DKIMV_NEED_KEY, PC_DKIMV_NEED_BODY, PC_DKIMV_DONE };

#define PC_DKIM_MAX_SIGS 16

struct pc_dkim_result {
    char domain[256], selector[64], alg[24];
    const char *result; /* RFC 8601: pass fail policy neutral temperror permerror */
    char reason[96];
    long l;            /* l= value or -1 */
    bool partial_body; /* l= shorter than the body: content after it is unsigned */
    unsigned key_bits;
};

struct pc_dkimv *pc_dkimv_new(struct dkim_lib *, const struct pc_msg *, const char *id);
void pc_dkimv_free(struct pc_dkimv *);
/* pc_dkimv_run - advance; on NEED_KEY, pc_dkimv_want() names the TXT record */
enum pc_dkimv_state pc_dkimv_run(struct pc_dkimv *);
const char *pc_dkimv_want(const struct pc_dkimv *);
/*
 * pc_dkimv_defer_body - make pc_dkimv_run() stop with NEED_BODY once the keys are
 * known; pc_dkimv_snapshot() then gives the job its own copy of the body (a
 * duplicated spool descriptor, or a copy of the in-memory part), and
 * pc_dkimv_body() hashes it and finishes, touching nothing but the job, so it
 * can run on a worker thread while the session may go away.
 */
void pc_dkimv_defer_body(struct pc_dkimv *);
int pc_dkimv_snapshot(struct pc_dkimv *);
void pc_dkimv_body(struct pc_dkimv *);
/* pc_dkimv_key - the answer for pc_dkimv_want(): txt is the joined TXT record when FOUND */
void pc_dkimv_key(struct pc_dkimv *, enum pc_dns_status, const char *txt);
/*
 * pc_dkimv_pending - on NEED_KEY, every key name the message's signatures need
 * that has no answer yet (the wanted one first), so that they can be looked up
 * at once rather than one "try again" at a time; answer each with pc_dkimv_answer().
 */
size_t pc_dkimv_pending(const struct pc_dkimv *, const char **names, size_t max);
void pc_dkimv_answer(struct pc_dkimv *, const char *name, enum pc_dns_status, const char *txt);
/* pc_dkimv_results - per-signature outcome once DONE (n = 0: no signature) */
const struct pc_dkim_result *pc_dkimv_results(const struct pc_dkimv *, size_t *n);

/* pc_dkim_txt_join - TXT RDATA (length-prefixed strings) to one string; false if corrupt */
bool pc_dkim_txt_join(const char *rdata, size_t len, char *out, size_t outsize);

/* Signing. A key is read at configure time; pc_dkim_sign() returns the header value. */
struct pc_dkim_key;
struct pc_dkim_key *pc_dkim_key_load(const char *path, const char *domain, const char *selector,
                                     char *err, size_t errsize);
void pc_dkim_key_free(struct pc_dkim_key *);
const char *pc_dkim_key_alg(const struct pc_dkim_key *);
struct dkim_lib *pc_dkim_sign_lib(const char *const *oversign, size_t n);
/* pc_dkim_sign - DKIM-Signature value (without "DKIM-Signature:") for msg, malloc'd; NULL on error */
char *pc_dkim_sign(struct dkim_lib *, const struct pc_dkim_key *, const struct pc_msg *,
                   const char *id, bool relaxed_header, bool relaxed_body, char *err,
                   size_t errsize);

#endif
