/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_milter_lines 1 - the milter door's content decoder (gateway/milter_lines.c)
 * DESCRIPTION
 *	The input's first byte chooses where it is cut into chunks (as the MTA
 *	cuts a body); odd chunks go through pc_ml_content (header values),
 *	even ones are appended raw (body chunks). Invariants: no emitted line
 *	holds LF or NUL; between chunks the buffer holds no LF; after the last
 *	call with "all" it is empty; every LF ends a line; the bytes emitted
 *	plus the LFs and NULs dropped never exceed the bytes that went in; a
 *	NUL is always flagged.
 */
#include <stdlib.h>
#include <string.h>

#include "gateway/engine.h"
#include "gateway/milter_lines.h"

struct count {
    size_t bytes, lines;
};

/* line - check one emitted line */
static void line(void *arg, char *p, size_t n)
{
    struct count *c = arg;

    if (memchr(p, '\n', n) || memchr(p, 0, n))
        abort();
    c->bytes += n;
    c->lines++;
}

/* LLVMFuzzerTestOneInput - chunks in, lines out */
int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    struct pc_buf b;
    struct count c = {0, 0};
    unsigned flags = 0;
    size_t step = size ? (size_t)data[0] % 64 + 1 : 1, in = 0, nul = 0, lf = 0;

    pc_buf_init(&b, 0);
    for (size_t off = size ? 1 : 0, k = 0; off < size; off += step, k++) {
        size_t n = size - off < step ? size - off : step;
        const char *p = (const char *)data + off;
        if (k % 2)
            pc_ml_content(&b, p, n);
        else
            pc_buf_append(&b, p, n);
        pc_ml_lines(&b, false, &flags, line, &c);
        if (memchr(b.data, '\n', b.len))
            abort();
        in += n;
    }
    pc_ml_lines(&b, true, &flags, line, &c);
    if (b.len != 0)
        abort();
    for (size_t i = size ? 1 : 0; i < size; i++)
        nul += data[i] == 0, lf += data[i] == '\n';
    /* Every LF ended a line; no byte is made up; a NUL is never silent (PC_ENG_NUL). */
    if (c.bytes + nul + lf > in || c.lines < lf || (nul && !(flags & PC_ENG_NUL)))
        abort();
    pc_buf_free(&b);
    return 0;
}
