/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	mime 3 - a bounded, flattened MIME view of a message (GMime 3)
 * DESCRIPTION
 *	The parser is given a stream that concatenates the in-memory header
 *	block with the body; when the body was spooled to a file the body
 *	stream is file-backed and the parser is told to persist it, so parts
 *	refer to ranges of the file instead of copies: a 50 MB attachment
 *	costs a read through the decoder (to learn its decoded size), not
 *	50 MB of memory.
 *
 *	GMime copes with any input (it is a robust parser by design); our job
 *	is to bound what we keep: the walk stops at max_depth and max_parts,
 *	and decoded text stops at max_text. Reaching a limit is recorded in
 *	the result, never an error.
 * SEE ALSO
 *	RFC 2045, RFC 2046, RFC 2047, RFC 2183, RFC 2231
 */
#include "rules/mime.h"

#include <gmime/gmime.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "gateway/msg.h"
#include "lib/log.h"
#include "lib/pool.h"

struct mime_walk {
    struct pc_mime *m;
    const struct pc_mime_limits *lim;
    size_t cap;            /* parts array capacity */
    size_t text_cap;       /* m->text capacity */
    size_t *text_off;      /* per part offset into m->text, fixed up at the end */
};

static pthread_once_t mime_once = PTHREAD_ONCE_INIT;

/* mime_init - GMime's one-time global set-up (its own state, not ours) */
static void mime_init(void)
{
    g_mime_init();
}

/* lower - lower-case a pool copy */
static char *lower(struct pc_pool *p, const char *s)
{
    char *d = pc_pool_strdup(p, s ? s : "");

    for (char *c = d; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c + 32);
    return d;
}

/* text_append - keep decoded text up to the limit; false once the limit is reached */
static bool text_append(struct mime_walk *w, const char *p, size_t n)
{
    struct pc_mime *m = w->m;

    if (m->text_len + n > w->lim->max_text) {
        n = w->lim->max_text - m->text_len;
        if (m->limit == NULL)
            m->limit = "text";
    }
    if (n == 0)
        return m->text_len < w->lim->max_text;
    if (m->text_len + n + 1 > w->text_cap) {
        size_t cap = w->text_cap ? w->text_cap : 4096;
        while (cap < m->text_len + n + 1)
            cap *= 2;
        char *t = realloc(m->text, cap);
        if (t == NULL)
            pc_fatal("out of memory");
        m->text = t;
        w->text_cap = cap;
    }
    memcpy(m->text + m->text_len, p, n);
    m->text_len += n;
    m->text[m->text_len] = 0;
    return m->text_len < w->lim->max_text;
}

/* part_params - "name=value; ..." of the content type */
static const char *part_params(struct pc_pool *pool, GMimeContentType *ct)
{
    GMimeParamList *pl = g_mime_content_type_get_parameters(ct);
    char *out = "";
    int n = pl ? g_mime_param_list_length(pl) : 0;

    for (int i = 0; i < n && i < 32; i++) {
        GMimeParam *p = g_mime_param_list_get_parameter_at(pl, i);
        out = pc_pool_printf(pool, "%s%s%s=%s", out, i ? "; " : "", g_mime_param_get_name(p),
                             g_mime_param_get_value(p) ? g_mime_param_get_value(p) : "");
    }
    return out;
}

/* part_read - decode a leaf's content: its decoded size, and its text when it is text */
static void part_read(struct mime_walk *w, GMimePart *part, struct pc_mime_part *mp, bool text)
{
    GMimeDataWrapper *dw = g_mime_part_get_content(part);
    char buf[8192];
    ssize_t n;
    bool keep = text;

    if (dw == NULL)
        return;
    GMimeStream *src = g_mime_data_wrapper_get_stream(dw);
    if (src == NULL)
        return;
    g_mime_stream_reset(src);
    GMimeStream *fs = g_mime_stream_filter_new(src);
    GMimeContentEncoding enc = g_mime_data_wrapper_get_encoding(dw);
    if (enc != GMIME_CONTENT_ENCODING_DEFAULT) {
        GMimeFilter *f = g_mime_filter_basic_new(enc, FALSE);
        if (f) {
            g_mime_stream_filter_add(GMIME_STREAM_FILTER(fs), f);
            g_object_unref(f);
        }
    }
    if (text && mp->charset && strcasecmp(mp->charset, "utf-8") != 0 &&
        strcasecmp(mp->charset, "us-ascii") != 0) {
        GMimeFilter *f = g_mime_filter_charset_new(mp->charset, "UTF-8");
        if (f) { /* NULL: a charset iconv does not know; keep the bytes */
            g_mime_stream_filter_add(GMIME_STREAM_FILTER(fs), f);
            g_object_unref(f);
        }
    }
    if (text && w->m->text_len)
        keep = text_append(w, "\n", 1);
    w->text_off[w->m->nparts - 1] = w->m->text_len;
    while ((n = g_mime_stream_read(fs, buf, sizeof(buf))) > 0) {
        mp->size += (size_t)n;
        if (keep) {
            size_t before = w->m->text_len;
            keep = text_append(w, buf, (size_t)n);
            mp->text_len += w->m->text_len - before;
        }
    }
    if (text)
        mp->text = ""; /* pointed into m->text at the end */
    g_object_unref(fs);
}

/* add_leaf - one leaf part into the flat list */
static void add_leaf(struct mime_walk *w, GMimeObject *obj, unsigned depth)
{
    struct pc_mime *m = w->m;
    struct pc_pool *pool = m->pool;

    if (m->nparts >= w->lim->max_parts) {
        if (m->limit == NULL)
            m->limit = "parts";
        return;
    }
    if (m->nparts == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 8;
        struct pc_mime_part *v = pc_pool_zalloc(pool, cap * sizeof(*v));
        size_t *o = realloc(w->text_off, cap * sizeof(*o));
        if (o == NULL)
            pc_fatal("out of memory");
        if (m->nparts)
            memcpy(v, m->parts, m->nparts * sizeof(*v));
        m->parts = v;
        w->text_off = o;
        w->cap = cap;
    }
    struct pc_mime_part *mp = &m->parts[m->nparts++];
    memset(mp, 0, sizeof(*mp));
    w->text_off[m->nparts - 1] = 0;
    mp->depth = depth;
    GMimeContentType *ct = g_mime_object_get_content_type(obj);
    if (ct) {
        char *t = g_mime_content_type_get_mime_type(ct);
        mp->type = lower(pool, t);
        g_free(t);
        mp->params = part_params(pool, ct);
        const char *cs = g_mime_content_type_get_parameter(ct, "charset");
        mp->charset = cs ? lower(pool, cs) : NULL;
    } else {
        mp->type = "text/plain";
        mp->params = "";
    }
    const char *disp = g_mime_object_get_disposition(obj);
    mp->disposition = lower(pool, disp);
    mp->encoding = "";
    if (GMIME_IS_PART(obj)) {
        GMimePart *part = GMIME_PART(obj);
        const char *fn = g_mime_part_get_filename(part);
        mp->filename = fn ? pc_pool_strdup(pool, fn) : NULL;
        GMimeContentEncoding enc = g_mime_part_get_content_encoding(part);
        const char *es = g_mime_content_encoding_to_string(enc);
        mp->encoding = es ? lower(pool, es) : "";
        bool text = strncmp(mp->type, "text/", 5) == 0 &&
                    strcmp(mp->disposition, "attachment") != 0;
        part_read(w, part, mp, text);
    }
}

/* walk - depth-first over the tree, bounded */
static void walk(struct mime_walk *w, GMimeObject *obj, unsigned depth)
{
    struct pc_mime *m = w->m;

    if (obj == NULL || (m->limit && strcmp(m->limit, "text") != 0))
        return;
    if (depth > w->lim->max_depth) {
        if (m->limit == NULL)
            m->limit = "depth";
        return;
    }
    if (depth > m->depth)
        m->depth = depth;
    if (GMIME_IS_MULTIPART(obj)) {
        GMimeMultipart *mp = GMIME_MULTIPART(obj);
        int n = g_mime_multipart_get_count(mp);
        for (int i = 0; i < n; i++)
            walk(w, g_mime_multipart_get_part(mp, i), depth + 1);
        return;
    }
    if (GMIME_IS_MESSAGE_PART(obj)) {
        GMimeMessage *inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
        add_leaf(w, obj, depth); /* the message/rfc822 part itself is visible to rules */
        if (inner)
            walk(w, g_mime_message_get_mime_part(inner), depth + 1);
        return;
    }
    add_leaf(w, obj, depth);
}

/* parse_stream - parse and flatten */
static struct pc_mime *parse_stream(GMimeStream *stream, bool persist,
                                    const struct pc_mime_limits *lim)
{
    struct pc_pool *pool = pc_pool_create(4096);
    struct pc_mime *m = pc_pool_zalloc(pool, sizeof(*m));
    struct mime_walk w = {.m = m, .lim = lim};

    m->pool = pool;
    GMimeParser *p = g_mime_parser_new_with_stream(stream);
    g_mime_parser_set_persist_stream(p, persist);
    GMimeMessage *msg = g_mime_parser_construct_message(p, NULL);
    if (msg == NULL)
        m->error = true;
    else
        walk(&w, g_mime_message_get_mime_part(msg), 0);
    for (size_t i = 0; i < m->nparts; i++)
        if (m->parts[i].text)
            m->parts[i].text = m->text ? m->text + w.text_off[i] : "";
    if (m->text == NULL)
        m->text = pc_pool_strdup(pool, "");
    else
        pc_pool_cleanup(pool, free, m->text);
    free(w.text_off);
    if (msg)
        g_object_unref(msg);
    g_object_unref(p);
    return m;
}

/* pc_mime_parse_buf - a message held in memory */
struct pc_mime *pc_mime_parse_buf(const char *data, size_t len, const struct pc_mime_limits *lim)
{
    pthread_once(&mime_once, mime_init);
    GMimeStream *s = g_mime_stream_mem_new_with_buffer(data, len);
    struct pc_mime *m = parse_stream(s, false, lim);
    g_object_unref(s);
    return m;
}

/* pc_mime_parse_msg - the spooled message: header block, separator, body (memory or file) */
struct pc_mime *pc_mime_parse_msg(const struct pc_msg *msg, const struct pc_mime_limits *lim)
{
    pthread_once(&mime_once, mime_init);
    GMimeStream *cat = g_mime_stream_cat_new();
    GMimeStream *h = g_mime_stream_mem_new_with_buffer(msg->head.data ? msg->head.data : "",
                                                       msg->head.len);
    g_mime_stream_cat_add_source(GMIME_STREAM_CAT(cat), h);
    g_object_unref(h);
    if (msg->separator || msg->body_len) {
        GMimeStream *sep = g_mime_stream_mem_new_with_buffer("\r\n", 2);
        g_mime_stream_cat_add_source(GMIME_STREAM_CAT(cat), sep);
        g_object_unref(sep);
    }
    bool persist = false;
    if (msg->body_fd >= 0) {
        int fd = dup(msg->body_fd);
        if (fd >= 0) {
            /* The fs stream keeps its own position and seeks before each read. */
            GMimeStream *b = g_mime_stream_fs_new_with_bounds(fd, 0, (gint64)msg->body_len);
            g_mime_stream_cat_add_source(GMIME_STREAM_CAT(cat), b);
            g_object_unref(b);
            persist = true;
        }
    } else if (msg->body_len) {
        GMimeStream *b = g_mime_stream_mem_new_with_buffer(msg->body.data, msg->body_len);
        g_mime_stream_cat_add_source(GMIME_STREAM_CAT(cat), b);
        g_object_unref(b);
    }
    struct pc_mime *m = parse_stream(cat, persist, lim);
    g_object_unref(cat);
    return m;
}

/* pc_mime_free - release a view */
void pc_mime_free(struct pc_mime *m)
{
    if (m)
        pc_pool_destroy(m->pool);
}

/* pc_mime_decode_header - RFC 2047 encoded-words to UTF-8 */
char *pc_mime_decode_header(const char *value)
{
    pthread_once(&mime_once, mime_init);
    char *d = g_mime_utils_header_decode_text(NULL, value);
    char *out = strdup(d ? d : value);
    g_free(d);
    if (out == NULL)
        pc_fatal("out of memory");
    return out;
}
