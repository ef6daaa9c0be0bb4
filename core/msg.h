/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	msg 3h - the spooled message of a transaction
 * DESCRIPTION
 *	The message is kept as received after dot-unstuffing, with CRLF line
 *	endings: the header section in memory (it is bounded), the body in
 *	memory up to a threshold and then in an unlinked temporary file.
 *	Filters read headers by index and the body by offset; they never see
 *	SMTP framing. Header edits are recorded and applied when the message
 *	is written out (to the backend, a Maildir, or a milter reply). The
 *	spool counts body lines that begin with a dot: without any, the body
 *	is byte for byte its own dot-stuffed wire form (every line ends in
 *	CRLF), and the backend sends it as it is, by offset, from memory or
 *	the file.
 */
#ifndef PC_MSG_H
#define PC_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "lib/buf.h"

struct pc_pool;

struct pc_header {
    const char *name; /* points into the header block, not terminated */
    size_t name_len;
    const char *value; /* after the colon, folding kept, without the final CRLF */
    size_t value_len;
    size_t raw_off, raw_len; /* whole field incl. CRLF within the header block */
    bool deleted;
};

struct pc_hdr_add {
    struct pc_hdr_add *next;
    const char *name, *value; /* value may contain folding "\r\n\t" */
};

struct pc_msg {
    struct pc_buf head; /* header section, CRLF endings, separator line excluded */
    struct pc_header *hdrs;
    size_t nhdrs, hdr_cap, max_headers;
    struct pc_hdr_add *added, **added_tail;
    struct pc_buf body; /* body while in memory */
    int body_fd;        /* >= 0 once spooled to a file */
    size_t body_len;
    size_t spool_threshold;
    const char *spool_dir;
    size_t body_dots; /* body lines that begin with a dot: 0 = the body is its own wire form */
    size_t size;      /* bytes received (unstuffed) */
    bool in_body;     /* header section has ended */
    bool separator;   /* header section ended with an empty line */
    bool header_overflow;
    bool io_error;
    size_t held_mem, held_file;   /* counted in portcullis_spool_bytes until freed */
    size_t shown_mem, shown_file; /* what portcullis_spool_bytes has been told of them */
};

void pc_msg_init(struct pc_msg *, size_t max_header_size, size_t max_headers,
                 size_t spool_threshold, const char *spool_dir);
void pc_msg_free(struct pc_msg *);
/* pc_msg_line - append one line (without its CRLF). 0, or -1 on a spool I/O error */
int pc_msg_line(struct pc_msg *, const char *line, size_t len);
/* pc_msg_lines - append whole lines, each with its CRLF, none beginning with a dot and none
 * holding a CR or LF before its end (pc_data's block): as pc_msg_line for each. 0 or -1 */
int pc_msg_lines(struct pc_msg *, const char *p, size_t n);
/* pc_msg_finish - end of data: flush the spool, fix header pointers. 0 or -1 */
int pc_msg_finish(struct pc_msg *);
/* pc_msg_header_find - index of the nth header named name, or -1 */
ssize_t pc_msg_header_find(const struct pc_msg *, const char *name, int nth);
/* pc_msg_header_value - copy a header's unfolded value into the pool */
char *pc_msg_header_value(const struct pc_msg *, size_t index, struct pc_pool *);
/* pc_msg_add_header - prepend a header (after our Received); value is sanitised */
void pc_msg_add_header(struct pc_msg *, struct pc_pool *, const char *name, const char *value);
/* pc_msg_body_read - up to len body bytes from off; bytes read or -1 */
ssize_t pc_msg_body_read(const struct pc_msg *, size_t off, void *buf, size_t len);
/* A position in the outgoing message, for streaming it in pieces. */
enum { PC_MSG_PREFIX, PC_MSG_ADDED, PC_MSG_HEADERS, PC_MSG_SEPARATOR, PC_MSG_BODY, PC_MSG_DONE };
struct pc_msg_cursor {
    int phase;      /* PC_MSG_PREFIX ... PC_MSG_DONE */
    bool head_only; /* pc_msg_read stops at PC_MSG_BODY: the caller sends the body itself */
    const struct pc_hdr_add *add;
    size_t idx, off;
};
void pc_msg_cursor_init(struct pc_msg_cursor *);
/* pc_msg_read - next bytes of the outgoing message into buf; 0 at the end (or, with head_only,
 * at the body: phase says which), -1 on I/O error */
ssize_t pc_msg_read(const struct pc_msg *, struct pc_msg_cursor *, const char *prefix, char *buf,
                    size_t cap);
/* pc_msg_wire_body - the body as it goes on the wire is its spooled bytes: no line needs a dot
 * doubled (RFC 5321 4.5.2), and every line ends in CRLF. The body may then be sent as it is,
 * from memory or straight from the spool file. */
bool pc_msg_wire_body(const struct pc_msg *);
/* pc_msg_write - the message as it goes out: added headers, kept headers, separator, body */
int pc_msg_write(const struct pc_msg *, const char *prefix,
                 int (*out)(void *arg, const char *p, size_t n), void *arg);

#endif
