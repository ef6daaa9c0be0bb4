/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	milter_lines 3h - the milter door's content decoder: MTA bytes to spool lines
 * DESCRIPTION
 *	The MTA sends header fields as name and value (a folded value with
 *	bare LF between its lines) and the body in chunks that split lines
 *	anywhere. These functions turn them into the lines the engine's spool
 *	takes (pc_engine_line: no CR LF, no NUL), noting what was odd.
 */
#ifndef PC_GATEWAY_MILTER_LINES_H
#define PC_GATEWAY_MILTER_LINES_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/buf.h"

/* One line, without its CR LF; the bytes may be changed by the callee. */
typedef void pc_ml_line_fn(void *arg, char *line, size_t len);

/* pc_ml_content - append MTA bytes to buf, a bare LF (a folded header value) as CR LF */
void pc_ml_content(struct pc_buf *, const char *p, size_t n);
/* pc_ml_lines - emit buf's complete lines (with all, the last partial one too), NUL left out;
 * the rest stays in buf. *flags gets PC_ENG_NUL and PC_ENG_BARE_NL (gateway/engine.h). */
void pc_ml_lines(struct pc_buf *, bool all, unsigned *flags, pc_ml_line_fn *, void *arg);

#endif
