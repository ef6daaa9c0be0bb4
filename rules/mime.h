/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	mime 3h - a bounded, flattened MIME view of a message (GMime 3)
 * DESCRIPTION
 *	The message is parsed once into a flat list of leaf parts with what
 *	rules read: content type and parameters, disposition, file name
 *	(RFC 2231 and RFC 2047 decoded by GMime), decoded size, transfer
 *	encoding, nesting depth, and for text parts the decoded text in UTF-8.
 *	The text of all text parts is also joined into one body text.
 *
 *	Limits (depth, part count, decoded text) stop the walk instead of
 *	failing it: "limit" then names the first limit reached, and rules see
 *	it as the fact mime.limit.
 * SEE ALSO
 *	RFC 2045, RFC 2046, RFC 2047, RFC 2183, RFC 2231
 */
#ifndef PC_MIME_H
#define PC_MIME_H

#include <stdbool.h>
#include <stddef.h>

struct pc_msg;

struct pc_mime_limits {
    unsigned max_depth;   /* nesting of multiparts and message/rfc822 */
    unsigned max_parts;   /* leaf parts */
    size_t max_text;      /* decoded text kept for rules, whole message */
};

struct pc_mime_part {
    const char *type;        /* "text/plain", lower case */
    const char *params;      /* "charset=utf-8; format=flowed", or "" */
    const char *charset;     /* or NULL */
    const char *disposition; /* "attachment", "inline" or "" */
    const char *filename;    /* decoded, or NULL */
    const char *encoding;    /* "base64", "quoted-printable", "7bit"... or "" */
    size_t size;             /* decoded bytes */
    unsigned depth;          /* 0 for the top-level part */
    const char *text;        /* decoded UTF-8 text for text parts (may be cut), or NULL */
    size_t text_len;
};

struct pc_mime {
    struct pc_pool *pool;
    struct pc_mime_part *parts;
    size_t nparts;
    char *text; /* text of every text part, joined with newlines, at most max_text */
    size_t text_len;
    unsigned depth; /* deepest nesting seen */
    const char *limit; /* "depth", "parts", "text" or NULL */
    bool error;        /* GMime could not make a message of it */
};

/* pc_mime_parse_msg - the spooled message; the body is read through a file-backed stream */
struct pc_mime *pc_mime_parse_msg(const struct pc_msg *, const struct pc_mime_limits *);
/* pc_mime_parse_buf - a whole message in memory */
struct pc_mime *pc_mime_parse_buf(const char *data, size_t len, const struct pc_mime_limits *);
void pc_mime_free(struct pc_mime *);
/* pc_mime_decode_header - RFC 2047 decoded header value (UTF-8), malloc'd */
char *pc_mime_decode_header(const char *value);

#endif
