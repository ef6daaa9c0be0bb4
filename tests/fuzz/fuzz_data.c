/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_data 1 - the DATA decoder, the message spool and dot-stuffing, round trip
 * DESCRIPTION
 *	The input's first byte picks a chunk size, the second a spool
 *	threshold and whether a header is added (its value taken from the
 *	input, so that CR and LF in it are exercised); the rest is DATA wire
 *	bytes. Invariants checked:
 *	- the lines and flags are the same fed whole and fed in chunks;
 *	- no decoded line holds a CR, LF or NUL, and PC_DATA_NUL is set exactly
 *	  when a NUL came before the end of data;
 *	- the written message has no bare CR or LF, and pc_msg_read gives the
 *	  same bytes as pc_msg_write for a small cursor buffer;
 *	- re-stuffed and terminated, it holds "\r\n.\r\n" only at its end, and
 *	  decoding it again gives exactly the written message's lines;
 *	- with the block callback (runs of clean lines in one call, spooled
 *	  with pc_msg_lines) the lines, flags and the written message are the
 *	  same, and sent the backend's way (the header part stuffed, a body
 *	  without dot lines as it is spooled) the bytes are the stuffed ones.
 * SEE ALSO
 *	RFC 5321 section 4.5.2, the SMTP smuggling advisories (SEC Consult, 2023)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/msg.h"
#include "gateway/smtp_proto.h"
#include "lib/log.h"
#include "lib/pool.h"

#define MAX_LINE 128

struct lines {
    struct pc_buf b; /* each line followed by '\n' */
    struct pc_msg *msg;
};

/* take - a decoded line: no CR/LF, bounded; kept and spooled */
static int take(void *arg, const char *line, size_t len)
{
    struct lines *l = arg;

    if (memchr(line, '\r', len) || memchr(line, '\n', len) || memchr(line, 0, len) ||
        len > MAX_LINE)
        abort();
    pc_buf_append(&l->b, line, len);
    pc_buf_putc(&l->b, '\n');
    if (l->msg && pc_msg_line(l->msg, line, len) < 0)
        abort();
    return 0;
}

/* take_block - a run of clean lines: the contract checked, the lines kept, the run spooled */
static int take_block(void *arg, const char *p, size_t n)
{
    struct lines *l = arg;
    const char *q = p;
    size_t left = n;

    while (left > 0) {
        const char *lf = memchr(q, '\n', left);
        if (lf == NULL || lf - q < 1 || lf[-1] != '\r' || q[0] == '.')
            abort();
        size_t len = (size_t)(lf - q) - 1;
        if (len > MAX_LINE || memchr(q, '\r', len) || memchr(q, 0, len))
            abort();
        pc_buf_append(&l->b, q, len);
        pc_buf_putc(&l->b, '\n');
        left -= len + 2;
        q += len + 2;
    }
    if (l->msg && pc_msg_lines(l->msg, p, n) < 0)
        abort();
    return 0;
}

/* decode - feed in chunks of `step` (0 = whole); bytes used */
static size_t decode_with(const char *p, size_t n, size_t step, size_t max_line, struct lines *l,
                          unsigned *flags, bool *done, bool block)
{
    struct pc_data d;
    size_t off = 0;

    pc_data_init(&d, max_line);
    d.block = block ? take_block : NULL;
    while (off < n && !d.done) {
        size_t want = step && step < n - off ? step : n - off;
        size_t k = pc_data_feed(&d, p + off, want, take, l);
        off += k;
        if (k < want && !d.done)
            abort(); /* it stops early only at the end of data */
    }
    *flags = d.flags;
    *done = d.done;
    pc_data_free(&d);
    if (((*flags & PC_DATA_NUL) != 0) != (memchr(p, 0, off) != NULL))
        abort();
    return off;
}

static size_t decode(const char *p, size_t n, size_t step, size_t max_line, struct lines *l,
                     unsigned *flags, bool *done)
{
    return decode_with(p, n, step, max_line, l, flags, done, false);
}

/* out_buf - pc_msg_write sink */
static int out_buf(void *arg, const char *p, size_t n)
{
    return pc_buf_append(arg, p, n) ? 0 : -1;
}

/* LLVMFuzzerTestOneInput - one DATA stream */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        pc_log_init("fuzz", PC_LOG_STDERR, 0);
        init = true;
    }
    if (size < 2)
        return 0;
    size_t step = data[0] % 17;
    size_t threshold = (size_t)(data[1] & 0x3f) * 8;
    bool add = data[1] & 0x40;
    const char *p = (const char *)data + 2;
    size_t n = size - 2;

    /* Whole, and in chunks: the same result. */
    struct lines whole = {0}, chunked = {0};
    struct pc_msg msg;
    unsigned f0, f1;
    bool d0, d1;
    pc_buf_init(&whole.b, 0);
    pc_buf_init(&chunked.b, 0);
    pc_msg_init(&msg, 4096, 50, threshold, "/tmp");
    chunked.msg = &msg;
    size_t u0 = decode(p, n, 0, MAX_LINE, &whole, &f0, &d0);
    size_t u1 = decode(p, n, step ? step : 1, MAX_LINE, &chunked, &f1, &d1);
    if (u0 != u1 || f0 != f1 || d0 != d1 || whole.b.len != chunked.b.len ||
        (whole.b.len && memcmp(whole.b.data, chunked.b.data, whole.b.len) != 0))
        abort();
    if (d0 && (u0 < 3 || memcmp(p + u0 - 3, ".\r\n", 3) != 0))
        abort();

    /* In blocks, chunked: the same lines, and a spool that writes the same. */
    struct lines blocked = {0};
    struct pc_msg bmsg;
    unsigned f3;
    bool d3;
    pc_buf_init(&blocked.b, 0);
    pc_msg_init(&bmsg, 4096, 50, threshold, "/tmp");
    blocked.msg = &bmsg;
    size_t u3 = decode_with(p, n, step, MAX_LINE, &blocked, &f3, &d3, true);
    if (u0 != u3 || f0 != f3 || d0 != d3 || whole.b.len != blocked.b.len ||
        (whole.b.len && memcmp(whole.b.data, blocked.b.data, whole.b.len) != 0))
        abort();

    struct pc_pool *pool = pc_pool_create(512);
    if (add) {
        char v[64];
        size_t vl = n < sizeof(v) - 1 ? n : sizeof(v) - 1;
        memcpy(v, p, vl);
        v[vl] = 0;
        pc_msg_add_header(&msg, pool, "X-Fuzz", v);
        pc_msg_add_header(&bmsg, pool, "X-Fuzz", v);
    }
    if (pc_msg_finish(&msg) < 0 || pc_msg_finish(&bmsg) < 0)
        abort();
    if (msg.body_dots != bmsg.body_dots || msg.size != bmsg.size)
        abort();

    /* The written message: CRLF only, and streamed the same through a small cursor. */
    struct pc_buf w, r;
    pc_buf_init(&w, 0);
    pc_buf_init(&r, 0);
    if (pc_msg_write(&msg, "Received: by fuzz\r\n", out_buf, &w) < 0)
        abort();
    for (size_t i = 0; i < w.len; i++) {
        if (w.data[i] == '\r' && (i + 1 == w.len || w.data[i + 1] != '\n'))
            abort();
        if (w.data[i] == '\n' && (i == 0 || w.data[i - 1] != '\r'))
            abort();
    }
    if (w.len < 2 || memcmp(w.data + w.len - 2, "\r\n", 2) != 0)
        abort(); /* the prefix at least ends in CRLF; so does every line after it */
    struct pc_msg_cursor c;
    char small[7];
    ssize_t k;
    pc_msg_cursor_init(&c);
    while ((k = pc_msg_read(&msg, &c, "Received: by fuzz\r\n", small, 1 + step % 7)) > 0)
        pc_buf_append(&r, small, (size_t)k);
    if (k < 0 || r.len != w.len || memcmp(r.data, w.data, w.len) != 0)
        abort();

    /* Stuffed and terminated: the end marker occurs only at the end. */
    struct pc_stuffer st;
    struct pc_buf s;
    pc_buf_init(&s, 0);
    pc_stuff_init(&st);
    for (size_t off = 0; off < w.len; off += step ? step : w.len) {
        size_t m = step && step < w.len - off ? step : w.len - off;
        if (!pc_stuff(&st, w.data + off, m, &s))
            abort();
    }
    pc_buf_append(&s, ".\r\n", 3);
    /* The stream starts after DATA's CRLF: look for the marker with that CRLF in front. */
    struct pc_buf framed;
    pc_buf_init(&framed, 0);
    pc_buf_append(&framed, "\r\n", 2);
    pc_buf_append(&framed, s.data, s.len);
    const char *hit = memmem(framed.data, framed.len, "\r\n.\r\n", 5);
    if (hit == NULL || (size_t)(hit - framed.data) != framed.len - 5)
        abort();

    /* The block spool written the backend's way: the header part through the cursor and the
     * stuffer, a body with no dot line as it is (backend.c fill): the same stuffed bytes. */
    struct pc_buf bw, head;
    pc_buf_init(&bw, 0);
    pc_buf_init(&head, 0);
    if (pc_msg_write(&bmsg, "Received: by fuzz\r\n", out_buf, &bw) < 0 || bw.len != w.len ||
        memcmp(bw.data, w.data, w.len) != 0)
        abort();
    pc_msg_cursor_init(&c);
    c.head_only = pc_msg_wire_body(&bmsg);
    pc_stuff_init(&st);
    while ((k = pc_msg_read(&bmsg, &c, "Received: by fuzz\r\n", small, sizeof(small))) > 0)
        pc_stuff(&st, small, (size_t)k, &head);
    if (k < 0 || (c.head_only && (c.phase != PC_MSG_BODY || !st.bol)))
        abort();
    if (c.head_only) {
        char *body = malloc(bmsg.body_len + 1);
        if (pc_msg_body_read(&bmsg, 0, body, bmsg.body_len) != (ssize_t)bmsg.body_len)
            abort();
        pc_buf_append(&head, body, bmsg.body_len);
        free(body);
    }
    pc_buf_append(&head, ".\r\n", 3);
    if (head.len != s.len || memcmp(head.data, s.data, s.len) != 0)
        abort();
    pc_buf_free(&head);
    pc_buf_free(&bw);

    /* Decoding it again gives the written lines back, with nothing flagged. */
    struct lines again = {0};
    unsigned f2;
    bool d2;
    pc_buf_init(&again.b, 0);
    size_t u2 = decode(s.data, s.len, 0, 1 << 20, &again, &f2, &d2);
    if (!d2 || f2 != 0 || u2 != s.len)
        abort();
    struct pc_buf want;
    pc_buf_init(&want, 0);
    for (size_t i = 0; i < w.len; i++) {
        if (w.data[i] == '\r')
            continue;
        pc_buf_putc(&want, w.data[i]);
    }
    if (want.len != again.b.len || memcmp(want.data, again.b.data, want.len) != 0)
        abort();

    pc_buf_free(&want);
    pc_buf_free(&again.b);
    pc_buf_free(&framed);
    pc_buf_free(&s);
    pc_buf_free(&r);
    pc_buf_free(&w);
    pc_pool_destroy(pool);
    pc_msg_free(&msg);
    pc_msg_free(&bmsg);
    pc_buf_free(&blocked.b);
    pc_buf_free(&whole.b);
    pc_buf_free(&chunked.b);
    return 0;
}
