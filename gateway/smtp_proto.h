/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	smtp_proto 3h - SMTP wire parsers and writers, free of I/O
 * DESCRIPTION
 *	Everything here is a pure function over bytes, so that it can be
 *	unit-tested by tables and fuzzed: the command line parser, MAIL/RCPT
 *	argument and ESMTP parameter parsing, the DATA decoder (the smuggling
 *	defence), the dot-stuffing encoder towards the backend, the single
 *	reply writer and the backend reply reader, and the BDAT argument
 *	parser (the chunk itself goes through the DATA decoder in its BDAT mode).
 * SEE ALSO
 *	RFC 5321, RFC 1870 (SIZE), RFC 6152 (8BITMIME), RFC 6531 (SMTPUTF8),
 *	RFC 3461 (DSN), RFC 2920 (PIPELINING), RFC 3463 and RFC 2034, RFC 3030 (CHUNKING)
 */
#ifndef PC_SMTP_PROTO_H
#define PC_SMTP_PROTO_H

#include <stdbool.h>
#include <stddef.h>

#include "lib/addr.h"
#include "lib/buf.h"
#include "core/verdict.h"

struct pc_pool;

enum pc_verb {
    PC_VERB_UNKNOWN,
    PC_VERB_HELO,
    PC_VERB_EHLO,
    PC_VERB_MAIL,
    PC_VERB_RCPT,
    PC_VERB_DATA,
    PC_VERB_RSET,
    PC_VERB_NOOP,
    PC_VERB_QUIT,
    PC_VERB_HELP,
    PC_VERB_VRFY,
    PC_VERB_EXPN,
    PC_VERB_STARTTLS,
    PC_VERB_AUTH,
    PC_VERB_BDAT,
    PC_VERB_ETRN,
    PC_VERB_OBSOLETE, /* TURN, SEND, SOML, SAML: RFC 5321 removed them */
    PC_VERB_FORBIDDEN /* not SMTP at all: an HTTP or POP client, a proxy probe */
};

struct pc_cmd {
    enum pc_verb verb;
    char name[16];   /* the verb as sent, upper-cased, truncated */
    const char *arg; /* after the verb and its separating spaces, into the line */
    size_t arg_len;
};

/* pc_cmd_parse - one command line without its line ending. NULL, or the reason it is bad */
const char *pc_cmd_parse(const char *line, size_t len, struct pc_cmd *);

struct pc_param {
    const char *key, *value; /* value NULL when absent */
};

#define PC_MAX_PARAMS 16

struct pc_path_args {
    struct pc_mailbox mb;
    struct pc_param params[PC_MAX_PARAMS];
    size_t nparams;
    const char *params_text; /* the parameter string, for passing on */
};

/* pc_path_args_parse - "FROM:<path> params" or "TO:<path> params". NULL or a reason; *enh set */
const char *pc_path_args_parse(const char *arg, size_t len, const char *keyword, struct pc_pool *,
                               struct pc_path_args *, const char **enh);
const char *pc_param_get(const struct pc_path_args *, const char *key, bool *present);
/* pc_xtext_valid - RFC 3461 section 4 xtext */
bool pc_xtext_valid(const char *);
/* pc_notify_valid - RFC 3461 4.1 NOTIFY value: NEVER, or a list of SUCCESS, FAILURE, DELAY */
bool pc_notify_valid(const char *);
/* pc_orcpt_valid - RFC 3461 4.2 ORCPT value, addr-type ";" xtext of printable ASCII; for the
 * "utf-8" type RFC 6533 utf-8-addr-xtext, or utf-8-addr-unitext (raw UTF-8) when smtputf8 */
bool pc_orcpt_valid(const char *, bool smtputf8);

/* DATA decoder: wire bytes (dot-stuffed, CRLF) in, content lines out. */
#define PC_DATA_BARE_CR   0x1
#define PC_DATA_BARE_LF   0x2
#define PC_DATA_LONG_LINE 0x4
#define PC_DATA_NUL       0x8 /* a NUL byte was seen (and left out of the lines) */

typedef int pc_data_emit(void *arg, const char *line, size_t len);

struct pc_data {
    struct pc_buf line;
    size_t max_line;
    bool cr;         /* the previous byte was a CR not yet resolved */
    bool after_crlf; /* the line now being read follows a real CRLF */
    bool skipping;   /* rest of an over-long line is dropped */
    bool lead_dot;   /* the current line's first wire byte is a dot */
    size_t raw_len;  /* wire bytes of the current line (NULs included) */
    bool done;
    bool raw; /* BDAT content (RFC 3030 2): no end marker, no dot-unstuffing */
    unsigned flags;
    size_t bytes; /* wire bytes consumed */
    /* When set, runs of whole lines that need no decoding (each ends in CR LF, none begins
     * with a dot, none holds a CR, LF or NUL before its end or is longer than max_line) go
     * here in one call, CR LFs included, instead of one emit call per line: the same
     * lines, in the same order, as emit would have had without their CR LF. */
    pc_data_emit *block;
};

void pc_data_init(struct pc_data *, size_t max_line);
void pc_data_free(struct pc_data *);
/* pc_data_feed - consume up to n bytes; stops right after CRLF.CRLF (then d->done). Bytes used.
 * NUL bytes never reach emit (RFC 5322 2.3 and RFC 6152 have no NUL in text): they are left
 * out and PC_DATA_NUL says so; the end marker is found on the wire bytes, NULs included. */
size_t pc_data_feed(struct pc_data *, const char *p, size_t n, pc_data_emit *, void *arg);
/* pc_data_init_bdat - the same decoder for BDAT chunks: lines and the bare CR/LF, NUL and line
 * length policy as for DATA, but every byte is content (RFC 3030 2): no dot is removed and no
 * sequence ends the data; the chunk sizes alone frame it. pc_data_feed then takes all n bytes
 * unless the emit function fails. */
void pc_data_init_bdat(struct pc_data *, size_t max_line);
/* pc_data_finish - BDAT LAST: a final line without CR LF is emitted (a pending CR is bare).
 * 0, or -1 when emit failed */
int pc_data_finish(struct pc_data *, pc_data_emit *, void *arg);

/* The largest chunk size we parse: 15 digits. Over limits.max_message_size is refused anyway;
 * the bound keeps the number far from any overflow. */
#define PC_BDAT_DIGITS 15
/* pc_bdat_parse - "octets [LAST]" of a BDAT command (RFC 3030 2: chunk-size and end-marker).
 * NULL, or the reason it is bad; *n and *last set on success. */
const char *pc_bdat_parse(const char *arg, size_t len, size_t *n, bool *last);

/* Dot-stuffing towards the backend (RFC 5321 4.5.2); input is CRLF-clean. */
struct pc_stuffer {
    bool bol; /* at the beginning of a line */
};
void pc_stuff_init(struct pc_stuffer *);
/* pc_stuff - append p[0..n) to out with a dot doubled at every line start */
bool pc_stuff(struct pc_stuffer *, const char *p, size_t n, struct pc_buf *out);

/* The one reply writer. */
struct pc_reply_opts {
    bool soft_bounce; /* 5xx becomes 4xx */
};
/* pc_reply_format - "code enh text" lines (text may hold '\n' for a multi-line reply; enh may
 * be NULL for the greeting and EHLO). CR and control bytes in the text are replaced. Returns
 * the code actually written (soft_bounce may change it). */
int pc_reply_format(struct pc_buf *out, int code, const struct pc_enh *enh, const char *text,
                    const struct pc_reply_opts *);

/* Backend replies. */
struct pc_reply {
    int code;
    struct pc_enh enh; /* cls 0 when the backend sent none */
    char text[512];    /* lines joined by '\n', enhanced codes stripped */
    bool complete;
};
/* pc_reply_parse_line - fold one reply line in; returns 1 complete, 0 more lines, -1 garbage */
int pc_reply_parse_line(struct pc_reply *, const char *line, size_t len);

#endif
