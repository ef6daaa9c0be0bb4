/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	buf 3 - growable length-carrying byte buffer
 * DESCRIPTION
 *	See buf.h. Capacity doubles; max bounds the length, not the capacity.
 */
#include "lib/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"

/* pc_buf_init - empty buffer with an optional length bound */
void pc_buf_init(struct pc_buf *b, size_t max)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

/* pc_buf_free - release storage */
void pc_buf_free(struct pc_buf *b)
{
    free(b->data);
    pc_buf_init(b, b->max);
}

/* pc_buf_reset - empty, keep storage */
void pc_buf_reset(struct pc_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = 0;
}

/* pc_buf_reserve - room for n more bytes plus terminator */
static bool pc_buf_reserve(struct pc_buf *b, size_t n)
{
    if (b->max && (n > b->max || b->len > b->max - n))
        return false;
    if (b->cap - b->len > n)
        return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len <= n) {
        if (cap > ((size_t)-1) / 2)
            pc_fatal("buffer size overflow");
        cap *= 2;
    }
    char *d = realloc(b->data, cap);
    if (d == NULL)
        pc_fatal("out of memory growing buffer to %zu", cap);
    b->data = d;
    b->cap = cap;
    return true;
}

/* pc_buf_append - append bytes; false when over the bound */
bool pc_buf_append(struct pc_buf *b, const void *p, size_t n)
{
    if (!pc_buf_reserve(b, n))
        return false;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return true;
}

/* pc_buf_puts - append a string */
bool pc_buf_puts(struct pc_buf *b, const char *s)
{
    return pc_buf_append(b, s, strlen(s));
}

/* pc_buf_putc - append a byte */
bool pc_buf_putc(struct pc_buf *b, char c)
{
    return pc_buf_append(b, &c, 1);
}

/* pc_buf_vprintf - append formatted text: one pass when it fits the room already there */
bool pc_buf_vprintf(struct pc_buf *b, const char *fmt, va_list ap)
{
    va_list aq;
    size_t room = b->cap - b->len;
    va_copy(aq, ap);
    int n = vsnprintf(room ? b->data + b->len : NULL, room, fmt, aq);
    va_end(aq);
    if (n < 0)
        return false;
    if ((size_t)n < room && (!b->max || b->len + (size_t)n <= b->max)) {
        b->len += (size_t)n;
        return true;
    }
    if (room)
        b->data[b->len] = 0; /* what did not fit is not appended */
    if (!pc_buf_reserve(b, (size_t)n))
        return false;
    vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    b->len += (size_t)n;
    return true;
}

/* pc_buf_printf - append formatted text */
bool pc_buf_printf(struct pc_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool ok = pc_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return ok;
}

/* pc_strlcpy - bounded copy that always terminates */
size_t pc_strlcpy(char *dst, const char *src, size_t size)
{
    size_t n = strlen(src);

    if (size) {
        size_t c = n < size - 1 ? n : size - 1;
        memcpy(dst, src, c);
        dst[c] = 0;
    }
    return n;
}
