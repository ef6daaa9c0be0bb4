/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_mime 1 - arbitrary messages through the bounded MIME view
 * DESCRIPTION
 *	Each input is parsed as a whole message with small limits, and its
 *	first line is decoded as an RFC 2047 header value. Invariants: no
 *	crash, and the limits hold (part count, decoded text).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "rules/mime.h"

/* LLVMFuzzerTestOneInput - one message */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pc_mime_limits lim = {.max_depth = 10, .max_parts = 64, .max_text = 65536};
    struct pc_mime *m = pc_mime_parse_buf((const char *)data, size, &lim);

    if (m->nparts > lim.max_parts || m->text_len > lim.max_text)
        abort();
    for (size_t i = 0; i < m->nparts; i++)
        if (m->parts[i].type == NULL || m->parts[i].depth > lim.max_depth)
            abort();
    pc_mime_free(m);
    size_t n = 0;
    while (n < size && n < 4096 && data[n] != '\n' && data[n] != 0)
        n++;
    char *line = malloc(n + 1);
    memcpy(line, data, n);
    line[n] = 0;
    free(pc_mime_decode_header(line));
    free(line);
    return 0;
}
