/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	msg 3 - the spooled message of a transaction
 * DESCRIPTION
 *	Lines arrive already unstuffed and without their CRLF. The header
 *	section ends at the first empty line, or at the first line that is
 *	neither a header field nor a continuation (RFC 5322 section 2.2), as
 *	Postfix's cleanup decides. Header offsets are kept while the block
 *	grows and turned into pointers by pc_msg_finish().
 * SEE ALSO
 *	RFC 5322 section 2.2, section 3.6
 */
#include "core/msg.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/pool.h"

#define PC_SPOOL_WBUF 65536

/* pc_msg_init - empty message */
void pc_msg_init(struct pc_msg *m, size_t max_header_size, size_t max_headers,
                 size_t spool_threshold, const char *spool_dir)
{
    memset(m, 0, sizeof(*m));
    pc_buf_init(&m->head, max_header_size);
    pc_buf_init(&m->body, 0);
    m->max_headers = max_headers;
    m->body_fd = -1;
    m->spool_threshold = spool_threshold;
    m->spool_dir = spool_dir;
    m->added_tail = &m->added;
}

/* The gauge moves in steps of this much per message: a metric update takes a lock and a
 * series lookup, and one per body line was 5% of the gateway's instructions at 1 MB. */
#define PC_HOLD_STEP 4096

/* hold - account message bytes in portcullis_spool_bytes (negative n: release); exact once
 * a message is freed, within PC_HOLD_STEP while it grows */
static void hold(struct pc_msg *m, bool file, long long n)
{
    size_t *held = file ? &m->held_file : &m->held_mem;
    size_t *shown = file ? &m->shown_file : &m->shown_mem;

    if (n == 0)
        return;
    *held += (size_t)n;
    long long d = (long long)*held - (long long)*shown;
    if (d >= PC_HOLD_STEP || d <= -PC_HOLD_STEP || *held == 0) {
        pc_metric_add(PC_M_SPOOL_BYTES, file ? "file" : "memory", NULL, (double)d);
        *shown = *held;
    }
}

/* pc_msg_free - release memory and the spool file */
void pc_msg_free(struct pc_msg *m)
{
    hold(m, false, -(long long)m->held_mem);
    hold(m, true, -(long long)m->held_file);
    pc_buf_free(&m->head);
    pc_buf_free(&m->body);
    free(m->hdrs);
    m->hdrs = NULL;
    if (m->body_fd >= 0)
        close(m->body_fd);
    m->body_fd = -1;
}

/* field_name_len - length of "name" in "name:", or 0 when the line is no header field */
static size_t field_name_len(const char *line, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)line[i];
        if (c == ':')
            return i;
        if (c < 33 || c > 126)
            break;
    }
    /* RFC 5322 forbids space before the colon; tolerate it as obsolete syntax (4.5.8). */
    size_t name = i;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    return (name > 0 && i < len && line[i] == ':') ? name : 0;
}

/* spool_flush - write buffered body bytes to the spool file */
static int spool_flush(struct pc_msg *m)
{
    size_t off = 0;

    while (off < m->body.len) {
        ssize_t n = write(m->body_fd, m->body.data + off, m->body.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            m->io_error = true;
            return -1;
        }
        off += (size_t)n;
    }
    pc_buf_reset(&m->body);
    return 0;
}

/* body_append - body bytes to memory or the spool file */
static int body_append(struct pc_msg *m, const char *p, size_t n)
{
    if (m->io_error)
        return -1;
    pc_buf_append(&m->body, p, n);
    m->body_len += n;
    if (m->body_fd < 0 && m->body_len > m->spool_threshold) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/portcullis.XXXXXX", m->spool_dir);
        m->body_fd = mkstemp(path);
        if (m->body_fd < 0) {
            pc_err("spool: cannot create a file in %s: %m", m->spool_dir);
            m->io_error = true;
            return -1;
        }
        unlink(path);
        /* From now on the message lives in the file. */
        long long moved = (long long)m->held_mem;
        hold(m, false, -moved);
        hold(m, true, moved);
        /* The buffer grew to spool_threshold: write it out and give it back, so that a
         * session streaming a large message holds PC_SPOOL_WBUF, not the threshold, for
         * the rest of it (issue 14: at most 0.5 MB a session). */
        if (spool_flush(m) < 0)
            return -1;
        pc_buf_free(&m->body);
        pc_buf_init(&m->body, 0);
        return 0;
    }
    if (m->body_fd >= 0 && m->body.len >= PC_SPOOL_WBUF)
        return spool_flush(m);
    return 0;
}

/* header_append - a header line to the block; false on overflow */
static bool header_append(struct pc_msg *m, const char *line, size_t len)
{
    if (m->header_overflow)
        return false;
    if (!pc_buf_append(&m->head, line, len) || !pc_buf_append(&m->head, "\r\n", 2)) {
        m->header_overflow = true;
        return false;
    }
    return true;
}

/* pc_msg_line - one unstuffed line without CRLF */
int pc_msg_line(struct pc_msg *m, const char *line, size_t len)
{
    m->size += len + 2;
    hold(m, m->body_fd >= 0, (long long)(len + 2));
    if (!m->in_body) {
        if (len == 0) {
            m->in_body = true;
            m->separator = true;
            return 0;
        }
        if ((line[0] == ' ' || line[0] == '\t') && m->nhdrs > 0) {
            if (header_append(m, line, len)) {
                struct pc_header *h = &m->hdrs[m->nhdrs - 1];
                h->raw_len += len + 2;
            }
            return 0;
        }
        size_t nl = field_name_len(line, len);
        if (nl > 0) {
            if (m->nhdrs >= m->max_headers) {
                m->header_overflow = true;
                return 0;
            }
            size_t off = m->head.len;
            if (!header_append(m, line, len))
                return 0;
            if (m->nhdrs == m->hdr_cap) {
                m->hdr_cap = m->hdr_cap ? m->hdr_cap * 2 : 32;
                m->hdrs = realloc(m->hdrs, m->hdr_cap * sizeof(*m->hdrs));
                if (m->hdrs == NULL)
                    pc_fatal("out of memory");
            }
            struct pc_header *h = &m->hdrs[m->nhdrs++];
            memset(h, 0, sizeof(*h));
            h->raw_off = off;
            h->raw_len = len + 2;
            h->name_len = nl;
            return 0;
        }
        /* Not a header: the body starts here without a separator line. */
        m->in_body = true;
    }
    if (len > 0 && line[0] == '.')
        m->body_dots++;
    if (body_append(m, line, len) < 0 || body_append(m, "\r\n", 2) < 0)
        return -1;
    return 0;
}

/* pc_msg_lines - whole clean lines: the body takes them in one append */
int pc_msg_lines(struct pc_msg *m, const char *p, size_t n)
{
    while (!m->in_body && n > 0) {
        const char *lf = memchr(p, '\n', n);
        if (lf == NULL || lf == p) {
            m->io_error = true; /* not whole lines: a caller's bug, never a wrong message */
            return -1;
        }
        size_t len = (size_t)(lf - p) + 1;
        if (pc_msg_line(m, p, len - 2) < 0)
            return -1;
        p += len;
        n -= len;
    }
    if (n == 0)
        return 0;
    m->size += n;
    hold(m, m->body_fd >= 0, (long long)n);
    return body_append(m, p, n);
}

/* pc_msg_finish - flush and resolve header pointers */
int pc_msg_finish(struct pc_msg *m)
{
    for (size_t i = 0; i < m->nhdrs; i++) {
        struct pc_header *h = &m->hdrs[i];
        const char *raw = m->head.data + h->raw_off;
        const char *colon = memchr(raw, ':', h->raw_len);
        h->name = raw;
        h->value = colon + 1;
        h->value_len = h->raw_len - (size_t)(h->value - raw) - 2;
    }
    if (m->body_fd >= 0 && m->body.len)
        return spool_flush(m);
    return m->io_error ? -1 : 0;
}

/* pc_msg_header_find - nth header with this name */
ssize_t pc_msg_header_find(const struct pc_msg *m, const char *name, int nth)
{
    size_t nl = strlen(name);

    for (size_t i = 0; i < m->nhdrs; i++) {
        const struct pc_header *h = &m->hdrs[i];
        if (!h->deleted && h->name_len == nl && strncasecmp(h->name, name, nl) == 0 && nth-- == 0)
            return (ssize_t)i;
    }
    return -1;
}

/* pc_msg_header_value - unfolded value, leading white space removed */
char *pc_msg_header_value(const struct pc_msg *m, size_t index, struct pc_pool *pool)
{
    const struct pc_header *h = &m->hdrs[index];
    char *out = pc_pool_alloc(pool, h->value_len + 1);
    size_t o = 0;

    for (size_t i = 0; i < h->value_len; i++) {
        char c = h->value[i];
        if (c == '\r' || c == '\n')
            continue;
        if (o == 0 && (c == ' ' || c == '\t'))
            continue;
        out[o++] = c;
    }
    out[o] = 0;
    return out;
}

/* pc_msg_add_header - prepend a header; CR and LF survive only as folding */
void pc_msg_add_header(struct pc_msg *m, struct pc_pool *pool, const char *name, const char *value)
{
    struct pc_hdr_add *a = pc_pool_zalloc(pool, sizeof(*a));
    size_t n = strlen(value);
    char *v = pc_pool_alloc(pool, n + 1);

    for (size_t i = 0; i <= n; i++) {
        char c = value[i];
        bool fold =
            c == '\r' && value[i + 1] == '\n' && (value[i + 2] == ' ' || value[i + 2] == '\t');
        if (fold) {
            v[i] = '\r', v[i + 1] = '\n';
            i++;
            continue;
        }
        v[i] = (c == '\r' || c == '\n' || c == 0) && i < n ? ' ' : c;
    }
    a->name = pc_printable(pc_pool_strdup(pool, name));
    a->value = v;
    *m->added_tail = a;
    m->added_tail = &a->next;
}

/* pc_msg_body_read - body bytes at an offset */
ssize_t pc_msg_body_read(const struct pc_msg *m, size_t off, void *buf, size_t len)
{
    if (off >= m->body_len)
        return 0;
    if (len > m->body_len - off)
        len = m->body_len - off;
    if (m->body_fd < 0) {
        memcpy(buf, m->body.data + off, len);
        return (ssize_t)len;
    }
    ssize_t n;
    do
        n = pread(m->body_fd, buf, len, (off_t)off);
    while (n < 0 && errno == EINTR);
    return n;
}

/* pc_msg_wire_body - no body line to stuff: the spooled body is the wire form */
bool pc_msg_wire_body(const struct pc_msg *m)
{
    return m->body_dots == 0;
}

/* pc_msg_cursor_init - at the start of the outgoing message */
void pc_msg_cursor_init(struct pc_msg_cursor *c)
{
    memset(c, 0, sizeof(*c));
}

/* put - copy what fits of one piece; true when the piece is finished */
static bool put(const char *piece, size_t plen, size_t *off, char *buf, size_t cap, size_t *n)
{
    size_t take = plen - *off;

    if (take > cap - *n)
        take = cap - *n;
    memcpy(buf + *n, piece + *off, take);
    *n += take;
    *off += take;
    if (*off < plen)
        return false;
    *off = 0;
    return true;
}

/* pc_msg_read - stream the outgoing message: prefix, added, kept headers, separator, body */
ssize_t pc_msg_read(const struct pc_msg *m, struct pc_msg_cursor *c, const char *prefix, char *buf,
                    size_t cap)
{
    size_t n = 0;

    while (n < cap) {
        switch (c->phase) {
        case 0:
            if (!prefix || put(prefix, strlen(prefix), &c->off, buf, cap, &n)) {
                c->phase = 1;
                c->add = m->added;
            }
            break;
        case 1: {
            if (c->add == NULL) {
                c->phase = 2;
                c->idx = 0;
                break;
            }
            /* One added header is "name: value\r\n"; built in pieces by offset. */
            const struct pc_hdr_add *a = c->add;
            size_t nl = strlen(a->name), vl = strlen(a->value);
            size_t total = nl + 2 + vl + 2;
            while (c->off < total && n < cap) {
                size_t o = c->off;
                char ch = o < nl            ? a->name[o]
                          : o < nl + 2      ? ": "[o - nl]
                          : o < nl + 2 + vl ? a->value[o - nl - 2]
                                            : "\r\n"[o - nl - 2 - vl];
                buf[n++] = ch;
                c->off++;
            }
            if (c->off == total) {
                c->off = 0;
                c->add = a->next;
            }
            break;
        }
        case 2:
            if (c->idx >= m->nhdrs) {
                c->phase = 3;
                break;
            }
            if (m->hdrs[c->idx].deleted || put(m->head.data + m->hdrs[c->idx].raw_off,
                                               m->hdrs[c->idx].raw_len, &c->off, buf, cap, &n))
                c->idx++;
            break;
        case 3:
            if (!(m->separator || m->body_len) || put("\r\n", 2, &c->off, buf, cap, &n)) {
                c->phase = 4;
                c->off = 0;
            }
            break;
        case 4: {
            if (c->head_only)
                return (ssize_t)n;
            if (c->off >= m->body_len) {
                c->phase = 5;
                break;
            }
            ssize_t r = pc_msg_body_read(m, c->off, buf + n, cap - n);
            if (r <= 0)
                return -1;
            n += (size_t)r;
            c->off += (size_t)r;
            break;
        }
        default:
            return (ssize_t)n;
        }
    }
    return (ssize_t)n;
}

/* pc_msg_write - the outgoing message, through a callback */
int pc_msg_write(const struct pc_msg *m, const char *prefix,
                 int (*out)(void *arg, const char *p, size_t n), void *arg)
{
    char chunk[65536];
    struct pc_msg_cursor c;
    ssize_t n;

    pc_msg_cursor_init(&c);
    while ((n = pc_msg_read(m, &c, prefix, chunk, sizeof(chunk))) > 0)
        if (out(arg, chunk, (size_t)n) < 0)
            return -1;
    return n < 0 ? -1 : 0;
}
