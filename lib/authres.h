/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	authres 3h - small parsers for message authentication headers
 * DESCRIPTION
 *	The authserv-id of an Authentication-Results field (to remove forged
 *	ones that claim to be ours) and the author domain(s) of a From field
 *	(for DMARC). Both take the raw field value as received, folding and
 *	comments included, and never read past len.
 * SEE ALSO
 *	RFC 8601 section 2.2 and 5, RFC 5322 section 3.4, RFC 7489 section 6.6.1
 */
#ifndef PC_AUTHRES_H
#define PC_AUTHRES_H

#include <stdbool.h>
#include <stddef.h>

/* pc_authres_servid - authserv-id of an A-R value into out; false if none or too long */
bool pc_authres_servid(const char *v, size_t len, char *out, size_t outsize);

#define PC_FROM_MAX_DOMAINS 8

struct pc_from_domains {
    size_t n;       /* mailboxes seen (may exceed PC_FROM_MAX_DOMAINS) */
    size_t ndomain; /* domains stored below, lower case, deduplicated */
    char domain[PC_FROM_MAX_DOMAINS][256];
    bool malformed; /* some mailbox had no usable domain or syntax was broken */
};

/* pc_from_parse - add the mailboxes of one From value to d */
void pc_from_parse(const char *v, size_t len, struct pc_from_domains *d);

#endif
