/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	milter_lines 3 - the milter door's content decoder
 * DESCRIPTION
 *	Lines end at LF; a CR just before it belongs to the line ending, any
 *	other CR is a bare CR (flagged, kept: the engine decides with
 *	bare_newline). NUL bytes are left out and flagged (the engine decides
 *	with nul). A line split between two body chunks waits in the buffer.
 * SEE ALSO
 *	RFC 5322 2.2.3 (folding), RFC 5321 2.3.8 (line endings)
 */
#include "gateway/milter_lines.h"

#include <string.h>

#include "gateway/engine.h"

/* pc_ml_content - bytes to the buffer; a bare LF becomes CR LF */
void pc_ml_content(struct pc_buf *b, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bool cr_before = i > 0 ? p[i - 1] == '\r' : (b->len > 0 && b->data[b->len - 1] == '\r');
        if (p[i] == '\n' && !cr_before)
            pc_buf_putc(b, '\r');
        pc_buf_putc(b, p[i]);
    }
}

/* emit_line - one line without NUL; a CR left in it is a bare CR */
static void emit_line(char *line, size_t len, unsigned *flags, pc_ml_line_fn *fn, void *arg)
{
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        if (line[i] == 0) {
            *flags |= PC_ENG_NUL;
            continue;
        }
        if (line[i] == '\r')
            *flags |= PC_ENG_BARE_NL;
        line[o++] = line[i];
    }
    fn(arg, line, o);
}

/* pc_ml_lines - the complete lines (all: every line) out of the buffer */
void pc_ml_lines(struct pc_buf *b, bool all, unsigned *flags, pc_ml_line_fn *fn, void *arg)
{
    size_t i = 0;

    while (i < b->len) {
        char *nl = memchr(b->data + i, '\n', b->len - i);
        if (nl == NULL && !all)
            break;
        size_t end = nl ? (size_t)(nl - b->data) : b->len, l = end - i;
        if (nl && l && b->data[i + l - 1] == '\r')
            l--;
        emit_line(b->data + i, l, flags, fn, arg);
        i = nl ? end + 1 : end;
    }
    if (i > 0)
        memmove(b->data, b->data + i, b->len - i);
    b->len -= i;
}
