/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	policy_attr 3h - one Postfix policy delegation request: name=value lines
 * DESCRIPTION
 *	A request is a block of "name=value" lines, each ending in LF (a CR
 *	before it is tolerated), closed by an empty line. The parser is
 *	incremental: given the bytes received so far it says "more", a whole
 *	request (and how many bytes it took), or why the bytes can never be
 *	one. Everything is bounded: the line, the count of attributes and
 *	the whole block.
 * SEE ALSO
 *	Postfix SMTPD_POLICY_README ("Policy protocol description")
 */
#ifndef PC_POLICY_ATTR_H
#define PC_POLICY_ATTR_H

#include <stddef.h>

/* One line without its LF (Postfix's longest values are certificate names). */
#define PC_PA_LINE_MAX  2048
#define PC_PA_ATTRS_MAX 64    /* Postfix 3.7 sends 35 */
#define PC_PA_SIZE_MAX  16384 /* the whole block, with its empty line */

enum pc_pa_status { PC_PA_MORE, PC_PA_OK, PC_PA_ERROR };

struct pc_pa_attr {
    const char *name, *value; /* NUL-terminated, in the request's own buffer */
};

struct pc_pa_request {
    char buf[PC_PA_SIZE_MAX + 1];
    struct pc_pa_attr attrs[PC_PA_ATTRS_MAX];
    size_t nattrs;
};

/* pc_pa_parse - a request at the start of data: OK (and *used, the bytes it took, with the empty
 * line), MORE, or ERROR with a static reason in *why */
enum pc_pa_status pc_pa_parse(const char *data, size_t len, struct pc_pa_request *, size_t *used,
                              const char **why);
/* pc_pa_get - the value of the first attribute called name, or NULL */
const char *pc_pa_get(const struct pc_pa_request *, const char *name);

#endif
