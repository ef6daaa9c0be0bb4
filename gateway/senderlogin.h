/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	senderlogin 3h - which MAIL FROM addresses each authenticated user may use
 * DESCRIPTION
 *	The sender login map (Postfix's smtpd_sender_login_maps with
 *	reject_sender_login_mismatch): a file of lines
 *
 *	    # key               owners (user names, separated by commas or blanks)
 *	    alice@example.com   alice
 *	    @example.org        bob, carol
 *
 *	A key is a whole address or "@domain" (every address in the domain).
 *	Keys, owners and the looked-up address compare case-insensitively. An
 *	address is looked up as it is, then without a "+extension" in its
 *	local part, then as "@domain"; the first key found decides.
 *
 *	pc_senders_check(map, user, address), user NULL when the session is
 *	not authenticated:
 *	  PC_SENDER_ALLOWED    user owns the address
 *	  PC_SENDER_MISMATCH   user is authenticated and does not own it
 *	                       (mapped to others, or not mapped at all): 553 5.7.1
 *	  PC_SENDER_OWNED      no user, but the address belongs to someone:
 *	                       refuse it on submission listeners (553 5.7.1)
 *	  PC_SENDER_UNMAPPED   no user and nobody owns it: no objection
 *	The null sender (<>) is never a mismatch: bounces carry no owner.
 *
 *	Wiring: the MAIL row (or a filter at PC_MAIL reading auth_user) calls
 *	pc_senders_check after the syntax check; the map is built per
 *	configuration generation with pc_senders_load.
 * SEE ALSO
 *	postconf(5) smtpd_sender_login_maps, RFC 4954 section 5
 */
#ifndef PC_SENDERLOGIN_H
#define PC_SENDERLOGIN_H

struct pc_err;
struct pc_senders;

enum pc_sender_result {
    PC_SENDER_ALLOWED,
    PC_SENDER_MISMATCH,
    PC_SENDER_OWNED,
    PC_SENDER_UNMAPPED,
};

/* pc_senders_load - read the map; NULL and err "origin: path:line: why" */
struct pc_senders *pc_senders_load(const char *path, const char *origin, struct pc_err *err);
void pc_senders_free(struct pc_senders *);
/* pc_senders_check - may user (NULL: not authenticated) use address (without <>)? */
enum pc_sender_result pc_senders_check(const struct pc_senders *, const char *user,
                                       const char *address);

#endif
