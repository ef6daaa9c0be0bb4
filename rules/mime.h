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
 *	failing it: "limit" then names the first limit reached and "limits"
 *	has a bit for every limit reached (a text limit must not hide a parts
 *	limit behind it); rules see them as the facts mime.limit.
 *
 *	Only what a rule set reads is computed: "skip" in the limits drops the
 *	decoded text (no rule reads body) or the decoding of non-text parts
 *	(no rule reads part.size), so a 10 MB attachment is not decoded just
 *	to be thrown away.
 *
 *	A message that is one leaf part (no multipart or message/rfc822 at the
 *	top: most mail) takes a fast path: GMime parses its header block
 *	alone (a text message with plain headers not even that: the values of
 *	its Content-* headers go to the GMime functions its part would apply
 *	to them), so the part's fields come from the same code, and the body is
 *	read through pc_msg_body_read(), copied when it needs no decoding and
 *	otherwise run through GMime's decoders in the steps the full parse
 *	takes. The view is the same as the full parse's, field for field
 *	(tests/unit/test_mime_fast.c compares them; so does fuzz_mime).
 *
 *	A view can be parsed off the event loop: pc_mime_src_new() takes a
 *	private snapshot of the spooled message while nothing else changes it
 *	(the rules filter's worker holds its job's lock) (a copy of the header
 *	block and an in-memory body, a dup of the spool file descriptor), and
 *	pc_mime_parse_src() may then run on any thread, even after the
 *	transaction is gone.
 * SEE ALSO
 *	RFC 2045, RFC 2046, RFC 2047, RFC 2183, RFC 2231
 */
#ifndef PC_MIME_H
#define PC_MIME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct pc_msg;
struct pc_mime_src;

struct pc_mime_limits {
    unsigned max_depth; /* nesting of multiparts and message/rfc822 */
    unsigned max_parts; /* leaf parts */
    size_t max_text;    /* decoded text kept for rules, whole message */
    unsigned skip;      /* PC_MIME_SKIP_*: what no rule reads */
};

#define PC_MIME_SKIP_TEXT 0x1 /* no decoded text (no rule reads body) */
#define PC_MIME_SKIP_SIZE 0x2 /* do not decode non-text parts for their size */

#define PC_MIME_LIM_DEPTH  0x1
#define PC_MIME_LIM_PARTS  0x2
#define PC_MIME_LIM_TEXT   0x4
#define PC_MIME_LIM_BUDGET 0x8 /* the parse was cut: its CPU budget, or abandoned */

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
    size_t text_map;    /* bytes mapped for text, or 0 when it is malloc'd */
    unsigned depth;     /* deepest nesting seen */
    const char *limit;  /* first limit reached: "depth", "parts", "text", "budget" or NULL */
    unsigned limits;    /* PC_MIME_LIM_* of every limit reached */
    bool error;         /* GMime could not make a message of it */
    unsigned parsed_by; /* PC_MIME_BY_*: which path made the view (tests, debugging) */
};

#define PC_MIME_BY_GMIME   0 /* GMime parsed the whole message */
#define PC_MIME_BY_HEADERS 1 /* one part: GMime parsed the header block, the body was read */
#define PC_MIME_BY_PLAIN   2 /* one text part with plain headers: no GMime parser at all */

/* pc_mime_parse_msg - the spooled message, GMime reading all of it (a snapshot) */
struct pc_mime *pc_mime_parse_msg(const struct pc_msg *, const struct pc_mime_limits *);
/* pc_mime_parse_fast - a one-part message: GMime reads its header block only, the body is read
 * through pc_msg_body_read(); NULL when the message is not one leaf part (then parse a snapshot).
 * The message must not change meanwhile. Same view as pc_mime_parse_msg. */
struct pc_mime *pc_mime_parse_fast(const struct pc_msg *, const struct pc_mime_limits *,
                                   const atomic_bool *stop, unsigned long budget_ms);
/* pc_mime_parse_live - pc_mime_parse_fast, or else a snapshot parsed here */
struct pc_mime *pc_mime_parse_live(const struct pc_msg *, const struct pc_mime_limits *,
                                   const atomic_bool *stop, unsigned long budget_ms);
/* pc_mime_src_new - snapshot of the spooled message, independent of it afterwards */
struct pc_mime_src *pc_mime_src_new(const struct pc_msg *);
/* pc_mime_parse_src - parse a snapshot (any thread); the snapshot stays the caller's */
struct pc_mime *pc_mime_parse_src(struct pc_mime_src *, const struct pc_mime_limits *);
void pc_mime_src_free(struct pc_mime_src *);
/* pc_mime_src_budget - cut the parse (as if the input ended) past ms of CPU or once *stop */
void pc_mime_src_budget(struct pc_mime_src *, const atomic_bool *stop, unsigned long ms);
/* pc_mime_parse_buf - a whole message in memory */
struct pc_mime *pc_mime_parse_buf(const char *data, size_t len, const struct pc_mime_limits *);
void pc_mime_free(struct pc_mime *);
/* pc_mime_decode_header - RFC 2047 decoded header value (UTF-8), malloc'd */
char *pc_mime_decode_header(const char *value);

#endif
