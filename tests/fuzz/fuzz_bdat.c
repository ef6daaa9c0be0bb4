/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_bdat 1 - the BDAT reader: command parse, chunk accounting, the decoder's BDAT mode
 * DESCRIPTION
 *	The input's first byte picks the line bound, the second seeds the
 *	split points; the rest is a client's stream as the session reads it:
 *	command lines, and after each "BDAT n [LAST]" exactly n octets of
 *	chunk (fewer if the input ends). Every chunk goes into one decoder in
 *	pieces cut at pseudo-random points and into another whole; LAST
 *	finishes both. Invariants checked:
 *	- pc_bdat_parse accepts exactly 1 to PC_BDAT_DIGITS digits, then
 *	  optionally spaces and LAST in any case, and n is their value;
 *	- the decoder takes every octet of every piece and never ends the
 *	  data by itself (no end marker in BDAT), whatever the bytes;
 *	- lines hold no CR, LF or NUL and respect the bound; split and whole
 *	  give the same lines and flags (the split decoder takes runs of clean
 *	  lines through its block callback, the whole one line by line);
 *	- with no flag raised, the lines joined by CR LF are the chunks'
 *	  octets exactly (nothing unstuffed, nothing lost), give or take the
 *	  final CR LF that LAST supplies.
 * SEE ALSO
 *	RFC 3030 section 2, RFC 5321 section 2.3.8
 */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/smtp_proto.h"
#include "lib/buf.h"
#include "lib/log.h"

/* out - a decoder and what it emitted (lines, each followed by CR LF) */
struct out {
    struct pc_data d;
    struct pc_buf b;
    size_t max_line;
};

/* take - a decoded line: bounded, no CR, LF or NUL */
static int take(void *arg, const char *line, size_t len)
{
    struct out *o = arg;

    if (memchr(line, '\r', len) || memchr(line, '\n', len) || memchr(line, 0, len) ||
        len > o->max_line)
        abort();
    pc_buf_append(&o->b, line, len);
    pc_buf_append(&o->b, "\r\n", 2);
    return 0;
}

/* take_block - a run of clean lines (pc_data.block): each ends in CR LF and none begins with a
 * dot; then line by line */
static int take_block(void *arg, const char *p, size_t n)
{
    while (n > 0) {
        const char *lf = memchr(p, '\n', n);
        if (lf == NULL || lf == p || lf[-1] != '\r' || p[0] == '.')
            abort();
        size_t len = (size_t)(lf - p) + 1;
        take(arg, p, len - 2);
        p += len;
        n -= len;
    }
    return 0;
}

/* feed - every octet is taken, and nothing ends the data */
static void feed(struct out *o, const char *p, size_t n)
{
    if (pc_data_feed(&o->d, p, n, take, o) != n || o->d.done)
        abort();
}

/* args_ok - the reference grammar for pc_bdat_parse */
static bool args_ok(const char *a, size_t len, size_t *n, bool *last)
{
    size_t i = 0;

    *n = 0;
    while (i < len && isdigit((unsigned char)a[i]))
        *n = *n * 10 + (size_t)(a[i++] - '0');
    if (i == 0 || i > PC_BDAT_DIGITS)
        return false;
    *last = false;
    if (i == len)
        return true;
    size_t j = i;
    while (j < len && a[j] == ' ')
        j++;
    *last = j > i && len - j == 4 && strncasecmp(a + j, "LAST", 4) == 0;
    return *last;
}

/* message_end - LAST: finish both, compare, check the round trip, start again */
static void message_end(struct out *split, struct out *whole, struct pc_buf *raw)
{
    if (pc_data_finish(&split->d, take, split) < 0 || pc_data_finish(&whole->d, take, whole) < 0)
        abort();
    if (split->d.flags != whole->d.flags || split->b.len != whole->b.len ||
        (split->b.len && memcmp(split->b.data, whole->b.data, split->b.len) != 0))
        abort();
    if (whole->d.flags == 0) {
        /* Clean content comes out as it went in; LAST may only add the final CR LF. */
        size_t n = raw->len;
        if (whole->b.len != n && whole->b.len != n + 2)
            abort();
        if (n && memcmp(whole->b.data, raw->data, n) != 0)
            abort();
    }
    for (struct out *o = split; o; o = o == split ? whole : NULL) {
        pc_data_free(&o->d);
        pc_data_init_bdat(&o->d, o->max_line);
        pc_buf_reset(&o->b);
    }
    split->d.block = take_block;
    pc_buf_reset(raw);
}

/* chunk - n octets of content: cut at pseudo-random points for one decoder, whole for the other */
static void chunk(struct out *split, struct out *whole, struct pc_buf *raw, const char *p, size_t n,
                  uint32_t *seed)
{
    size_t off = 0;

    while (off < n) {
        *seed = *seed * 1103515245u + 12345u;
        size_t k = 1 + (*seed >> 16) % 13;
        if (k > n - off)
            k = n - off;
        feed(split, p + off, k);
        off += k;
    }
    feed(whole, p, n);
    pc_buf_append(raw, p, n);
}

/* LLVMFuzzerTestOneInput - one client stream of commands and chunks */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        pc_log_init("fuzz", PC_LOG_STDERR, 0);
        init = true;
    }
    if (size < 2)
        return 0;
    struct out split = {.max_line = 8 + data[0] % 120}, whole = {.max_line = split.max_line};
    uint32_t seed = data[1];
    const char *p = (const char *)data + 2;
    size_t n = size - 2, off = 0;
    struct pc_buf raw;

    pc_data_init_bdat(&split.d, split.max_line);
    pc_data_init_bdat(&whole.d, whole.max_line);
    split.d.block = take_block;
    pc_buf_init(&split.b, 0);
    pc_buf_init(&whole.b, 0);
    pc_buf_init(&raw, 0);
    while (off < n) {
        const char *lf = memchr(p + off, '\n', n - off);
        size_t len = lf ? (size_t)(lf - (p + off)) : n - off;
        const char *line = p + off;
        off += len + (lf != NULL);
        if (len > 0 && line[len - 1] == '\r')
            len--;
        struct pc_cmd cmd;
        if (pc_cmd_parse(line, len, &cmd) != NULL || cmd.verb != PC_VERB_BDAT)
            continue;
        size_t csize = 0, want = 0;
        bool last = false, wlast = false;
        bool ok = pc_bdat_parse(cmd.arg, cmd.arg_len, &csize, &last) == NULL;
        if (ok != args_ok(cmd.arg, cmd.arg_len, &want, &wlast) ||
            (ok && (csize != want || last != wlast)))
            abort();
        if (!ok)
            continue;
        size_t k = csize < n - off ? csize : n - off;
        chunk(&split, &whole, &raw, p + off, k, &seed);
        off += k; /* the next command starts exactly after the chunk's octets */
        if (last)
            message_end(&split, &whole, &raw);
    }
    pc_data_free(&split.d);
    pc_data_free(&whole.d);
    pc_buf_free(&split.b);
    pc_buf_free(&whole.b);
    pc_buf_free(&raw);
    return 0;
}
