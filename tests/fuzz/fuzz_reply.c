/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_reply 1 - the backend reply reader and the reply writer
 * DESCRIPTION
 *	The input is split at LF (a trailing CR dropped) into reply lines fed
 *	to pc_reply_parse_line until it says complete or garbage. Invariants:
 *	a complete reply has a code 200..599, its text is NUL-terminated and
 *	free of control bytes other than the '\n' between lines, its enhanced
 *	class is 0 or the code's; written again through pc_reply_format, every
 *	line starts with the code and ends in CRLF with no other CR or LF,
 *	and reading that back gives the same code and enhanced code.
 * SEE ALSO
 *	RFC 5321 section 4.2, RFC 3463, RFC 2034
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/smtp_proto.h"

/* check_written - CRLF-terminated lines that each start with the code */
static void check_written(const struct pc_buf *b, int code)
{
    char c3[4];
    size_t i = 0;

    if (b->len == 0)
        abort();
    c3[0] = (char)('0' + code / 100), c3[1] = (char)('0' + code / 10 % 10),
    c3[2] = (char)('0' + code % 10), c3[3] = 0;
    while (i < b->len) {
        const char *eol = memmem(b->data + i, b->len - i, "\r\n", 2);
        if (eol == NULL || b->len - i < 4 || memcmp(b->data + i, c3, 3) != 0)
            abort();
        size_t ll = (size_t)(eol - (b->data + i));
        if (memchr(b->data + i, '\r', ll) || memchr(b->data + i, '\n', ll))
            abort();
        bool last = eol + 2 == b->data + b->len;
        if (b->data[i + 3] != (last ? ' ' : '-'))
            abort();
        i += ll + 2;
    }
}

/* LLVMFuzzerTestOneInput - one backend reply */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pc_reply r;
    const char *p = (const char *)data, *end = p + size;
    int rc = 0;

    memset(&r, 0, sizeof(r));
    while (p < end && rc == 0) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        char *line = malloc(len ? len : 1); /* exact size: ASan sees reads past it */
        memcpy(line, p, len);
        if (len && line[len - 1] == '\r')
            len--;
        rc = pc_reply_parse_line(&r, line, len);
        free(line);
        p = nl ? nl + 1 : end;
    }
    if (rc != 1)
        return 0;
    if (!r.complete || r.code < 200 || r.code > 599)
        abort();
    if (memchr(r.text, 0, sizeof(r.text)) == NULL)
        abort();
    for (const char *t = r.text; *t; t++)
        if (((unsigned char)*t < 32 && *t != '\n') || *t == 127)
            abort();
    if (r.enh.cls != 0 && r.enh.cls != r.code / 100)
        abort();

    struct pc_buf b;
    struct pc_reply_opts soft = {.soft_bounce = true};
    pc_buf_init(&b, 0);
    int code = pc_reply_format(&b, r.code, r.enh.cls ? &r.enh : NULL, r.text, NULL);
    if (code != r.code)
        abort();
    check_written(&b, code);
    pc_buf_reset(&b);
    code = pc_reply_format(&b, r.code, &r.enh, r.text, &soft);
    if (code / 100 == 5 || (r.code / 100 == 5 && code / 100 != 4))
        abort();
    check_written(&b, code);

    /* The written reply reads back to the same code and enhanced code. */
    struct pc_reply back;
    memset(&back, 0, sizeof(back));
    pc_buf_reset(&b);
    pc_reply_format(&b, r.code, r.enh.cls ? &r.enh : NULL, r.text, NULL);
    const char *q = b.data, *qe = b.data + b.len;
    rc = 0;
    while (q < qe && rc == 0) {
        const char *eol = memmem(q, (size_t)(qe - q), "\r\n", 2);
        rc = pc_reply_parse_line(&back, q, (size_t)(eol - q));
        q = eol + 2;
    }
    if (rc != 1 || back.code != r.code)
        abort();
    if (r.enh.cls && (back.enh.cls != r.enh.cls || back.enh.subject != r.enh.subject ||
                      back.enh.detail != r.enh.detail))
        abort();
    pc_buf_free(&b);
    return 0;
}
