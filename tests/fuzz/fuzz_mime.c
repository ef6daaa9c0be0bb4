/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_mime 1 - arbitrary messages through the bounded MIME view
 * DESCRIPTION
 *	Each input is parsed as a whole message with small limits, and its
 *	first line is decoded as an RFC 2047 header value. Invariants: no
 *	crash, and the limits hold (part count, decoded text); the first
 *	limit named is among the limits recorded. Parsed again with what a
 *	rule set that reads no text and no sizes skips: the same parts, no
 *	text, no sizes. Then once more as the gateway does: lines into a
 *	spooled message, a snapshot of it, parsed through the stream that
 *	can cut the parse at a budget; and differentially: when the one-part
 *	fast path (pc_mime_parse_fast) takes the message, every field a rule
 *	can read must be what the full GMime parse gave.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/msg.h"
#include "rules/mime.h"

/* same - both NULL or equal */
static bool same(const char *a, const char *b)
{
    return (a == NULL) == (b == NULL) && (a == NULL || strcmp(a, b) == 0);
}

/* differ - the fast path's view against GMime's: abort on any difference a rule could see */
static void differ(const struct pc_mime *f, const struct pc_mime *g)
{
    if (f->nparts != g->nparts || f->depth != g->depth || f->limits != g->limits ||
        !same(f->limit, g->limit) || f->error != g->error || f->text_len != g->text_len ||
        memcmp(f->text, g->text, f->text_len) != 0)
        abort();
    for (size_t i = 0; i < f->nparts; i++) {
        const struct pc_mime_part *a = &f->parts[i], *b = &g->parts[i];
        if (!same(a->type, b->type) || !same(a->params, b->params) ||
            !same(a->charset, b->charset) || !same(a->disposition, b->disposition) ||
            !same(a->filename, b->filename) || !same(a->encoding, b->encoding) ||
            a->size != b->size || a->depth != b->depth || (a->text == NULL) != (b->text == NULL) ||
            a->text_len != b->text_len || (a->text && memcmp(a->text, b->text, a->text_len) != 0))
            abort();
    }
}

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
    if ((m->limit == NULL) != (m->limits == 0))
        abort();
    struct pc_mime_limits lazy = lim;
    lazy.skip = PC_MIME_SKIP_TEXT | PC_MIME_SKIP_SIZE;
    struct pc_mime *l = pc_mime_parse_buf((const char *)data, size, &lazy);
    if (l->nparts != m->nparts || l->text_len != 0 || l->depth != m->depth)
        abort();
    for (size_t i = 0; i < l->nparts; i++)
        if (l->parts[i].size != 0 && strncmp(l->parts[i].type, "text/", 5) != 0)
            abort();
    pc_mime_free(l);
    pc_mime_free(m);
    struct pc_msg msg;
    pc_msg_init(&msg, 1 << 20, 1000, 1 << 20, "/tmp");
    for (size_t i = 0; i < size;) {
        const uint8_t *nl = memchr(data + i, '\n', size - i);
        size_t len = nl ? (size_t)(nl - (data + i)) : size - i;
        size_t cut = len && data[i + len - 1] == '\r' ? len - 1 : len;
        pc_msg_line(&msg, (const char *)data + i, cut);
        i += len + 1;
    }
    pc_msg_finish(&msg);
    atomic_bool stop = false;
    struct pc_mime_src *src = pc_mime_src_new(&msg);
    pc_mime_src_budget(src, &stop, 10000);
    struct pc_mime *g = pc_mime_parse_src(src, &lim);
    if (g->nparts > lim.max_parts || g->text_len > lim.max_text)
        abort();
    struct pc_mime *f = pc_mime_parse_fast(&msg, &lim, NULL, 0);
    if (f) {
        differ(f, g);
        pc_mime_free(f);
    }
    pc_mime_free(g);
    pc_mime_src_free(src);
    pc_msg_free(&msg);
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
