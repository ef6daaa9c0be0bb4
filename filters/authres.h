/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	authres 3h - the Authentication-Results filter's steps
 * DESCRIPTION
 *	Exposed for the unit tests; the filter calls them at end of message.
 * SEE ALSO
 *	RFC 8601
 */
#ifndef PC_FILTER_AUTHRES_H
#define PC_FILTER_AUTHRES_H

#include <stddef.h>

struct pc_session;

/* pc_authres_remove_ours - mark incoming fields with authserv-id id deleted; count */
size_t pc_authres_remove_ours(struct pc_session *, const char *id);
/* pc_authres_value - our field's value from the spf, dkim_sig and dmarc facts */
char *pc_authres_value(struct pc_session *, const char *id);

#endif
