/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	addr 3h - RFC 5321 path and mailbox parser
 * DESCRIPTION
 *	pc_path_parse() reads "<...>" (or a bare mailbox, which some clients
 *	send) and fills a pc_mailbox whose strings live in the caller's pool.
 *	Source routes are accepted and dropped, as RFC 5321 section 4.1.1.3
 *	asks, but remembered so that the relay check can refuse them.
 * SEE ALSO
 *	RFC 5321 section 4.1.2, RFC 6531 (SMTPUTF8)
 */
#ifndef PC_ADDR_H
#define PC_ADDR_H

#include <stdbool.h>
#include <stddef.h>

struct pc_pool;

#define PC_PATH_MAX   256 /* RFC 5321 4.5.3.1.3, without the brackets */
#define PC_LOCAL_MAX  64
#define PC_DOMAIN_MAX 255

struct pc_mailbox {
    const char *addr;   /* local@domain as written (quoted local kept), "" for <> */
    const char *local;  /* local part with quoting removed */
    const char *domain; /* domain or address literal, "" if none */
    bool null;          /* <> */
    bool route;         /* had a source route (@a,@b:) */
    bool quoted;        /* local part was a quoted-string */
    bool utf8;          /* contains bytes >= 0x80 (needs SMTPUTF8) */
    bool literal;       /* domain is an address literal */
};

/* pc_path_parse - parse a path at s[0..len); *end is set past it. NULL or a reason. */
const char *pc_path_parse(const char *s, size_t len, struct pc_pool *, struct pc_mailbox *,
                          size_t *end);

/* pc_domain_valid - RFC 5321 Domain (or U-label form when utf8 is allowed) */
bool pc_domain_valid(const char *d, size_t len, bool allow_utf8);

/* pc_domain_eq - case-insensitive ASCII domain comparison, ignoring one trailing dot */
bool pc_domain_eq(const char *a, const char *b);

/* pc_domain_in - d equals or is a subdomain of parent (".parent" semantics when sub is true) */
bool pc_domain_match(const char *d, const char *pattern);

#endif
