/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	buf 3h - growable length-carrying byte buffer
 * DESCRIPTION
 *	The one string type for bytes from the network. A buffer carries its
 *	length, may hold NUL bytes, and is always NUL-terminated after len so
 *	that it can be printed. Growth past max (when non-zero) fails instead
 *	of allocating: every buffer fed by a peer has a bound.
 */
#ifndef PC_BUF_H
#define PC_BUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

struct pc_buf {
    char *data;
    size_t len, cap, max;
};

void pc_buf_init(struct pc_buf *, size_t max);
void pc_buf_free(struct pc_buf *);
void pc_buf_reset(struct pc_buf *);
bool pc_buf_append(struct pc_buf *, const void *, size_t);
bool pc_buf_puts(struct pc_buf *, const char *);
bool pc_buf_putc(struct pc_buf *, char);
bool pc_buf_printf(struct pc_buf *, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool pc_buf_vprintf(struct pc_buf *, const char *fmt, va_list);
void pc_buf_consume(struct pc_buf *, size_t);

/* pc_strlcpy - bounded copy that always terminates; returns strlen(src) */
size_t pc_strlcpy(char *dst, const char *src, size_t size);

#endif
