/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_logfmt 1 - log field, text and JSON escaping of peer bytes
 * DESCRIPTION
 *	Whatever a peer sends as an address, a HELO name or a reply text, the
 *	escaped field has none of the bytes that could end it or start a new
 *	field, the escaped text has no '=' (so no "name=value" can be
 *	forged), every escape is whole even when truncated, and the JSON
 *	string is one closed literal. The output is bounded by its buffer.
 * SEE ALSO
 *	lib/log.h, issue 13 section 6 (forged to= and status= fields)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* escapes_whole - every backslash starts a complete \xHH */
static void escapes_whole(const char *s)
{
    for (const char *p = s; *p; p++)
        if (*p == '\\') {
            if (p[1] != 'x' || !strchr("0123456789abcdef", p[2]) || !p[2] ||
                !strchr("0123456789abcdef", p[3]) || !p[3])
                abort();
            p += 3;
        }
}

/* LLVMFuzzerTestOneInput - one peer value (NUL ends it, as C strings from the parser do) */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char in[4096], out[512], js[512];
    size_t n = size < sizeof(in) - 1 ? size : sizeof(in) - 1;
    /* The first byte picks an output size, to exercise truncation. */
    size_t cap = size ? (size_t)data[0] % sizeof(out) : sizeof(out);

    memcpy(in, data, n);
    in[n] = 0;
    pc_log_field(out, cap, in);
    if (cap && strlen(out) >= cap)
        abort();
    for (const unsigned char *p = (const unsigned char *)out; cap && *p; p++)
        if (*p <= 0x20 || *p >= 0x7f || strchr("<>,;()[]", *p))
            abort();
    if (cap)
        escapes_whole(out);
    pc_log_text(out, cap, in);
    if (cap && (strlen(out) >= cap || strchr(out, '=')))
        abort();
    for (const unsigned char *p = (const unsigned char *)out; cap && *p; p++)
        if (*p < 0x20 || *p >= 0x7f)
            abort();
    if (cap)
        escapes_whole(out);
    pc_json_str(js, cap, in);
    if (cap >= 3) {
        size_t l = strlen(js);
        if (l < 2 || js[0] != '"' || js[l - 1] != '"' || l >= cap)
            abort();
        /* Inside: no raw quote or control byte, and no escape cut in half. */
        for (size_t i = 1; i + 1 < l; i++) {
            unsigned char c = (unsigned char)js[i];
            if (c < 0x20 || c >= 0x7f)
                abort();
            if (c == '"')
                abort();
            if (c == '\\') {
                if (i + 2 >= l + 0 && js[i + 1] != '"' && js[i + 1] != '\\')
                    abort();
                if (js[i + 1] == 'u') {
                    if (i + 6 > l - 1)
                        abort();
                    i += 5;
                } else {
                    i++;
                }
            }
        }
    }
    return 0;
}
