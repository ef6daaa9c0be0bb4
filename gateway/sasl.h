/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	sasl 3h - the AUTH exchange decoder (PLAIN and LOGIN)
 * DESCRIPTION
 *	A small state machine the AUTH row of the command table drives. It
 *	never touches the network: pc_sasl_start takes the arguments of the
 *	AUTH command, pc_sasl_step each client line of the exchange (without
 *	CRLF), and both say what to do next:
 *
 *	  PC_SASL_CHALLENGE  send "334 " + res.challenge, read another line
 *	                     (the door switches its input to "AUTH line" mode)
 *	  PC_SASL_DONE       res.user / res.pass hold the credentials; pass
 *	                     them to pc_authdb_start (gateway/authdb.h), then
 *	                     call pc_sasl_wipe
 *	  PC_SASL_ERROR      reply res.code res.enh res.text; the exchange is
 *	                     over (the decoder has wiped itself)
 *
 *	The password lives only inside struct pc_sasl and is wiped with
 *	explicit_bzero by pc_sasl_wipe and on every error; never log it,
 *	never copy it into a fact. Texts in results are constants.
 *
 *	Wiring (the AUTH row): check TLS/state, then
 *	    r = pc_sasl_start(&s->sasl, args, &res);
 *	and while r == PC_SASL_CHALLENGE reply 334 and feed the next line to
 *	pc_sasl_step. A pipelined command after AUTH is fine only after the
 *	exchange ends (RFC 4954 section 4: AUTH ends a pipelining group).
 * SEE ALSO
 *	RFC 4954 (SMTP AUTH), RFC 4616 (PLAIN), RFC 4648 section 4 (base64),
 *	draft-murchison-sasl-login (LOGIN)
 */
#ifndef PC_SASL_H
#define PC_SASL_H

#include <stddef.h>

/* RFC 4954 section 4: lines of at least 12288 octets must be accepted. */
#define PC_SASL_MAX_LINE 12288
/* RFC 4616 section 2: authzid, authcid and passwd are at most 255 UTF-8 characters. */
#define PC_SASL_MAX_FIELD 1024

enum pc_sasl_mech { PC_SASL_NONE, PC_SASL_PLAIN, PC_SASL_LOGIN };
enum pc_sasl_status { PC_SASL_CHALLENGE, PC_SASL_DONE, PC_SASL_ERROR };

struct pc_sasl {
    enum pc_sasl_mech mech;
    int step; /* LOGIN: 0 = username asked, 1 = password asked */
    char user[PC_SASL_MAX_FIELD + 1];
    char pass[PC_SASL_MAX_FIELD + 1];
};

struct pc_sasl_result {
    const char *challenge; /* base64 text after "334 " (may be "") */
    const char *user;      /* DONE: authentication identity (points into pc_sasl) */
    const char *pass;      /* DONE: password (points into pc_sasl; wipe after use) */
    int code;              /* ERROR: 501, 504, 500 */
    unsigned enh[3];       /* ERROR: enhanced status code, e.g. 5.5.2 */
    const char *text;      /* ERROR: reply text */
};

/* pc_sasl_mechanisms - the EHLO keyword's argument: "PLAIN LOGIN" */
const char *pc_sasl_mechanisms(void);
/* pc_sasl_start - AUTH arguments ("PLAIN", "PLAIN dGVzdA==", "LOGIN"...) */
enum pc_sasl_status pc_sasl_start(struct pc_sasl *, const char *args, size_t len,
                                  struct pc_sasl_result *);
/* pc_sasl_step - one client line of the exchange (no CRLF) */
enum pc_sasl_status pc_sasl_step(struct pc_sasl *, const char *line, size_t len,
                                 struct pc_sasl_result *);
/* pc_sasl_wipe - forget the credentials (explicit_bzero) */
void pc_sasl_wipe(struct pc_sasl *);
/* pc_base64_decode - strict RFC 4648 base64; -1 on bad input or when out is too small */
long pc_base64_decode(const char *in, size_t len, unsigned char *out, size_t size);
/* pc_base64_encode - NUL-terminated; -1 when out is too small */
long pc_base64_encode(const unsigned char *in, size_t len, char *out, size_t size);

#endif
