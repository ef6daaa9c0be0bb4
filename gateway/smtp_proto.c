/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	smtp_proto 3 - SMTP wire parsers and writers, free of I/O
 * DESCRIPTION
 *	See smtp_proto.h. The DATA decoder is the heart of the smuggling
 *	defence: only CR LF . CR LF ends the data, a CR or LF that is not
 *	part of a CR LF pair never reaches a content line (it ends the line,
 *	and the flag it sets lets the session refuse the message), and the
 *	encoder re-stuffs every line start towards the backend. Runs of lines
 *	that need no decoding at all (CR LF ends, no dot first, no NUL, within
 *	the line bound) may go to the caller in one block call: the same
 *	lines, judged by the same rules, without a call per line.
 * SEE ALSO
 *	RFC 5321 section 2.3.8, 4.1.1, 4.5.2; RFC 2920; "SMTP Smuggling" (SEC Consult, 2023)
 */
#include "gateway/smtp_proto.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "lib/pool.h"

static const struct {
    const char *name;
    enum pc_verb verb;
} pc_verbs[] = {
    {"HELO", PC_VERB_HELO},      {"EHLO", PC_VERB_EHLO},      {"MAIL", PC_VERB_MAIL},
    {"RCPT", PC_VERB_RCPT},      {"DATA", PC_VERB_DATA},      {"RSET", PC_VERB_RSET},
    {"NOOP", PC_VERB_NOOP},      {"QUIT", PC_VERB_QUIT},      {"HELP", PC_VERB_HELP},
    {"VRFY", PC_VERB_VRFY},      {"EXPN", PC_VERB_EXPN},      {"STARTTLS", PC_VERB_STARTTLS},
    {"AUTH", PC_VERB_AUTH},      {"BDAT", PC_VERB_BDAT},      {"ETRN", PC_VERB_ETRN},
    {"TURN", PC_VERB_OBSOLETE},  {"SEND", PC_VERB_OBSOLETE},  {"SOML", PC_VERB_OBSOLETE},
    {"SAML", PC_VERB_OBSOLETE},  {"GET", PC_VERB_FORBIDDEN},  {"POST", PC_VERB_FORBIDDEN},
    {"HEAD", PC_VERB_FORBIDDEN}, {"PUT", PC_VERB_FORBIDDEN},  {"CONNECT", PC_VERB_FORBIDDEN},
    {"USER", PC_VERB_FORBIDDEN}, {"PASS", PC_VERB_FORBIDDEN},
};

/* pc_cmd_parse - verb and argument */
const char *pc_cmd_parse(const char *line, size_t len, struct pc_cmd *cmd)
{
    size_t i = 0, v;

    memset(cmd, 0, sizeof(*cmd));
    cmd->arg = "";
    for (size_t k = 0; k < len; k++) {
        unsigned char c = (unsigned char)line[k];
        /* Command lines are printable; UTF-8 is allowed in arguments (RFC 6531). */
        if (c == 0 || c == '\r' || c == '\n' || (c < 0x20 && c != '\t') || c == 0x7f)
            return "bad character in command";
    }
    while (i < len && line[i] == ' ')
        i++;
    for (v = 0; i < len && line[i] != ' '; i++, v++)
        if (v < sizeof(cmd->name) - 1)
            cmd->name[v] = (char)toupper((unsigned char)line[i]);
    if (v == 0)
        return "empty command";
    cmd->name[v < sizeof(cmd->name) ? v : sizeof(cmd->name) - 1] = 0;
    while (i < len && line[i] == ' ')
        i++;
    cmd->arg = line + i;
    cmd->arg_len = len - i;
    while (cmd->arg_len &&
           (cmd->arg[cmd->arg_len - 1] == ' ' || cmd->arg[cmd->arg_len - 1] == '\t'))
        cmd->arg_len--;
    if (v >= sizeof(cmd->name))
        return NULL; /* too long for any verb we know: PC_VERB_UNKNOWN */
    for (size_t k = 0; k < sizeof(pc_verbs) / sizeof(pc_verbs[0]); k++)
        if (strcmp(cmd->name, pc_verbs[k].name) == 0) {
            cmd->verb = pc_verbs[k].verb;
            break;
        }
    return NULL;
}

/* pc_xtext_valid - RFC 3461 xtext: printable ASCII, '+' introduces two upper hex digits */
bool pc_xtext_valid(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '+') {
            if (!isxdigit((unsigned char)s[1]) || !isxdigit((unsigned char)s[2]))
                return false;
            s += 2;
        } else if (c < 33 || c > 126 || c == '=') {
            return false;
        }
    }
    return true;
}

/* pc_notify_valid - "NEVER" alone, or a comma list of SUCCESS, FAILURE and DELAY (RFC 3461
 * 4.1); keywords in any case, as for other ESMTP values */
bool pc_notify_valid(const char *s)
{
    static const char *const words[] = {"SUCCESS", "FAILURE", "DELAY"};

    if (strcasecmp(s, "NEVER") == 0)
        return true;
    for (;;) {
        size_t n = strcspn(s, ","), i;
        for (i = 0; i < 3; i++)
            if (n == strlen(words[i]) && strncasecmp(s, words[i], n) == 0)
                break;
        if (i == 3)
            return false;
        if (s[n] == 0)
            return true;
        s += n + 1;
    }
}

/* hexval - a hex digit's value, or -1 */
static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* orcpt_xtext - RFC 3461 4.2: xtext whose decoded bytes are printable US-ASCII (a CR or an
 * 8-bit byte behind "+0D" or "+C3" would reach the backend's DSN as it is) */
static bool orcpt_xtext(const unsigned char *p)
{
    if (*p == 0)
        return false;
    for (; *p; p++) {
        unsigned c = *p;
        if (c == '+') {
            int h = hexval(p[1]), l = h < 0 ? -1 : hexval(p[2]);
            if (l < 0)
                return false;
            c = (unsigned)(h * 16 + l);
            p += 2;
            if (c < 0x20 || c > 0x7e)
                return false;
        } else if (c < 33 || c > 126 || c == '=') {
            return false;
        }
    }
    return true;
}

/* utf8_len - length of one well-formed UTF-8 sequence of 2 to 4 bytes at p (RFC 3629: no
 * overlong forms, no surrogates, nothing past U+10FFFF), or 0 */
static size_t utf8_len(const unsigned char *p)
{
    unsigned c = p[0];

    if (c >= 0xc2 && c <= 0xdf)
        return (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        unsigned lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return p[1] >= lo && p[1] <= hi && (p[2] & 0xc0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return p[1] >= lo && p[1] <= hi && (p[2] & 0xc0) == 0x80 && (p[3] & 0xc0) == 0x80 ? 4 : 0;
    }
    return 0;
}

/* embedded_char - RFC 6533 EmbeddedUnicodeChar "\x{HEXPOINT}" at p: its length, or 0. The
 * code point must be one that needs the escape (a control, SP, "+", "=", "\", DEL or
 * non-ASCII), a Unicode scalar value, written with two digits below U+0100 and without
 * leading zeros above. */
static size_t embedded_char(const unsigned char *p)
{
    unsigned long v = 0;
    size_t n = 0;

    if (p[0] != '\\' || p[1] != 'x' || p[2] != '{')
        return 0;
    for (; n < 7 && hexval(p[3 + n]) >= 0; n++)
        v = v * 16 + (unsigned long)hexval(p[3 + n]);
    if (n < 2 || n > 6 || p[3 + n] != '}')
        return 0;
    if (v < 0x100 ? n != 2 : hexval(p[3]) == 0)
        return 0;
    if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    if (!(v >= 1 && v <= 0x20) && v != '+' && v != '=' && v != '\\' && v < 0x7f)
        return 0;
    return n + 4;
}

/* utf8_addr_text - RFC 6533 utf-8-addr-xtext (ASCII only), or utf-8-addr-unitext when raw
 * UTF-8 is allowed: QCHAR (printable ASCII but "+", "=" and "\\") or EmbeddedUnicodeChar */
static bool utf8_addr_text(const unsigned char *p, bool unitext)
{
    if (*p == 0)
        return false;
    while (*p) {
        size_t n;
        if (*p > 32 && *p < 127 && *p != '+' && *p != '=' && *p != '\\')
            n = 1;
        else if (*p == '\\')
            n = embedded_char(p);
        else
            n = unitext && *p >= 0x80 ? utf8_len(p) : 0;
        if (n == 0)
            return false;
        p += n;
    }
    return true;
}

/* pc_orcpt_valid - addr-type ";" value (RFC 3461 4.2, RFC 6533 3) */
bool pc_orcpt_valid(const char *s, bool smtputf8)
{
    const char *semi = strchr(s, ';');

    /* addr-type is an RFC 822 atom: no specials, no controls, no space, ASCII */
    if (semi == NULL || semi == s)
        return false;
    for (const char *p = s; p < semi; p++)
        if ((unsigned char)*p <= 32 || (unsigned char)*p >= 127 || strchr("()<>@,;:\\\".[]=", *p))
            return false;
    if ((size_t)(semi - s) == 5 && strncasecmp(s, "utf-8", 5) == 0)
        return utf8_addr_text((const unsigned char *)semi + 1, smtputf8);
    return orcpt_xtext((const unsigned char *)semi + 1);
}

/* param_key_valid - esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
static bool param_key_valid(const char *k)
{
    if (!isalnum((unsigned char)*k))
        return false;
    for (; *k; k++)
        if (!isalnum((unsigned char)*k) && *k != '-')
            return false;
    return true;
}

/* param_value_valid - esmtp-value = 1*(%d33-60 / %d62-126), UTF-8 tolerated (RFC 6531) */
static bool param_value_valid(const char *v)
{
    if (*v == 0)
        return false;
    for (; *v; v++) {
        unsigned char c = (unsigned char)*v;
        if (c < 33 || c == '=' || c == 127)
            return false;
    }
    return true;
}

/* pc_path_args_parse - MAIL and RCPT arguments */
const char *pc_path_args_parse(const char *arg, size_t len, const char *keyword,
                               struct pc_pool *pool, struct pc_path_args *pa, const char **enh)
{
    size_t kl = strlen(keyword), end, i;
    const char *why;

    memset(pa, 0, sizeof(*pa));
    pa->params_text = "";
    *enh = "5.5.4";
    if (len < kl || strncasecmp(arg, keyword, kl) != 0)
        return keyword[0] == 'F' ? "Syntax: MAIL FROM:<address>" : "Syntax: RCPT TO:<address>";
    i = kl;
    /* RFC 5321 has no space after the colon; many clients send one, Postfix accepts it. */
    while (i < len && arg[i] == ' ')
        i++;
    why = pc_path_parse(arg + i, len - i, pool, &pa->mb, &end);
    if (why) {
        *enh = keyword[0] == 'F' ? "5.1.7" : "5.1.3";
        return why;
    }
    i += end;
    if (i < len && arg[i] != ' ')
        return "garbage after the address";
    while (i < len && arg[i] == ' ')
        i++;
    pa->params_text = pc_pool_strndup(pool, arg + i, len - i);
    char *work = pc_pool_strdup(pool, pa->params_text), *save = NULL;
    for (char *tok = strtok_r(work, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        if (pa->nparams == PC_MAX_PARAMS)
            return "too many parameters";
        char *eq = strchr(tok, '=');
        if (eq)
            *eq = 0;
        if (!param_key_valid(tok) || (eq && !param_value_valid(eq + 1)))
            return "bad parameter syntax";
        for (char *p = tok; *p; p++)
            *p = (char)toupper((unsigned char)*p);
        for (size_t k = 0; k < pa->nparams; k++)
            if (strcmp(pa->params[k].key, tok) == 0)
                return "duplicate parameter";
        pa->params[pa->nparams].key = tok;
        pa->params[pa->nparams].value = eq ? eq + 1 : NULL;
        pa->nparams++;
    }
    return NULL;
}

/* pc_param_get - a parameter's value; *present tells a valueless one from an absent one */
const char *pc_param_get(const struct pc_path_args *pa, const char *key, bool *present)
{
    for (size_t i = 0; i < pa->nparams; i++)
        if (strcasecmp(pa->params[i].key, key) == 0) {
            if (present)
                *present = true;
            return pa->params[i].value;
        }
    if (present)
        *present = false;
    return NULL;
}

/* pc_data_init - decoder at the start of the content */
void pc_data_init(struct pc_data *d, size_t max_line)
{
    memset(d, 0, sizeof(*d));
    pc_buf_init(&d->line, 0);
    d->max_line = max_line;
    d->after_crlf = true; /* the DATA command's own CRLF precedes the first line */
}

static int line_done(struct pc_data *, bool real, pc_data_emit *, void *arg);

/* pc_data_init_bdat - decoder for BDAT chunks: only the chunk sizes frame the content */
void pc_data_init_bdat(struct pc_data *d, size_t max_line)
{
    pc_data_init(d, max_line);
    d->raw = true;
}

/* pc_data_finish - the last chunk ended: its unterminated line is a line too. A chunk boundary
 * never ends a line (the decoder's state runs across chunks); only LAST does, here. */
int pc_data_finish(struct pc_data *d, pc_data_emit *emit, void *arg)
{
    if (d->cr) {
        d->cr = false;
        d->flags |= PC_DATA_BARE_CR;
        return line_done(d, false, emit, arg) < 0 ? -1 : 0;
    }
    if (d->raw_len > 0 || d->skipping)
        return line_done(d, false, emit, arg) < 0 ? -1 : 0;
    return 0;
}

/* pc_bdat_parse - chunk-size [SP end-marker] (RFC 3030 2), digits bounded, nothing else */
const char *pc_bdat_parse(const char *arg, size_t len, size_t *n, bool *last)
{
    size_t i = 0, v = 0;

    while (i < len && arg[i] >= '0' && arg[i] <= '9') {
        if (i == PC_BDAT_DIGITS)
            return "chunk size too large";
        v = v * 10 + (size_t)(arg[i] - '0');
        i++;
    }
    if (i == 0)
        return "chunk size missing";
    *n = v;
    *last = false;
    if (i == len)
        return NULL;
    if (arg[i] != ' ')
        return "bad chunk size";
    while (i < len && arg[i] == ' ')
        i++;
    if (len - i == 4 && strncasecmp(arg + i, "LAST", 4) == 0) {
        *last = true;
        return NULL;
    }
    return "bad end marker";
}

/* pc_data_free - release the line buffer */
void pc_data_free(struct pc_data *d)
{
    pc_buf_free(&d->line);
}

/* line_end - a line is complete: p[0..n) (the line buffer, or the wire bytes themselves
 * when the whole line arrived in one piece); real says it ended in CR LF. 1 = end of data,
 * -1 = emit error. NULs are never in p: a buffered line left them out (raw_len counts them),
 * and a line with a NUL never takes the no-copy path. */
static int line_end(struct pc_data *d, const char *p, size_t n, bool real, pc_data_emit *emit,
                    void *arg)
{
    bool buffered = d->raw_len > 0;
    size_t raw = buffered ? d->raw_len : n;
    bool lead_dot = buffered ? d->lead_dot : n > 0 && p[0] == '.';
    int rc = 0;

    /* The marker is judged on the wire bytes: "CR LF NUL . CR LF" and "CR LF . NUL CR LF" are
     * content, whatever a later hop that drops NULs would make of them. */
    if (!d->raw && n == 1 && p[0] == '.' && raw == 1 && real && d->after_crlf) {
        d->done = true;
        rc = 1;
    } else {
        /* Unstuff: a leading dot with more after it is removed (RFC 5321 4.5.2), both judged
         * on the wire bytes. */
        if (lead_dot && raw > 1 && !d->raw) {
            p++;
            n--;
        }
        if (emit(arg, p, n) < 0)
            rc = -1;
    }
    pc_buf_reset(&d->line);
    d->after_crlf = real;
    d->skipping = false;
    d->lead_dot = false;
    d->raw_len = 0;
    return rc;
}

/* line_done - the buffered line is complete */
static int line_done(struct pc_data *d, bool real, pc_data_emit *emit, void *arg)
{
    return line_end(d, d->line.data ? d->line.data : "", d->line.len, real, emit, arg);
}

/* append_no_nul - wire bytes into the line, every NUL left out and noted */
static void append_no_nul(struct pc_data *d, const char *p, size_t n)
{
    const char *z;

    while (n > 0 && (z = memchr(p, 0, n)) != NULL) {
        pc_buf_append(&d->line, p, (size_t)(z - p));
        d->flags |= PC_DATA_NUL;
        n -= (size_t)(z - p) + 1;
        p = z + 1;
    }
    pc_buf_append(&d->line, p, n);
}

/* line_add - content bytes of the current line, bounded (on wire bytes) */
static void line_add(struct pc_data *d, const char *p, size_t n)
{
    if (d->raw_len == 0)
        d->lead_dot = p[0] == '.';
    if (d->skipping) {
        if (memchr(p, 0, n))
            d->flags |= PC_DATA_NUL;
        return;
    }
    if (d->raw_len + n > d->max_line) {
        /* Keep the line up to the bound, however the bytes were split by the network. */
        size_t keep = d->max_line - d->raw_len;
        append_no_nul(d, p, keep);
        if (memchr(p + keep, 0, n - keep))
            d->flags |= PC_DATA_NUL;
        d->raw_len = d->max_line;
        d->flags |= PC_DATA_LONG_LINE;
        d->skipping = true;
        return;
    }
    append_no_nul(d, p, n);
    d->raw_len += n;
}

/* clean_run - the length of the run of clean lines from p[0] (see pc_data.block), 0 when the
 * first line is not clean; *nul says a NUL is in the run. A line that begins with a dot is
 * never part of a run: in DATA it is unstuffed or ends the data, and the spool counts the
 * body lines that need stuffing again (pc_msg.body_dots). */
static size_t clean_run(const struct pc_data *d, const char *p, size_t n, bool *nul)
{
    size_t s = 0;

    while (s < n && p[s] != '.') {
        /* The LF within max_line content bytes and a CR: the line's length is bounded. */
        size_t look = n - s < d->max_line + 2 ? n - s : d->max_line + 2;
        const char *lf = memchr(p + s, '\n', look);
        if (lf == NULL)
            break;
        size_t e = (size_t)(lf - p);
        if (e == s || memchr(p + s, '\r', e - s) != p + e - 1)
            break; /* a bare LF, or a CR before the line's end */
        s = e + 1;
    }
    *nul = s > 0 && memchr(p, 0, s) != NULL;
    return s;
}

/* pc_data_feed - decode wire bytes. The scan is memchr (word-at-a-time in libc) for the next LF
 * and then for a CR before it; a line that arrives whole is handed on without a copy, and a
 * run of whole clean lines in one block call when the caller takes blocks. */
size_t pc_data_feed(struct pc_data *d, const char *p, size_t n, pc_data_emit *emit, void *arg)
{
    size_t i = 0, slow = 0; /* up to slow, the run was found unclean: line by line */

    while (i < n && !d->done) {
        if (d->block && i >= slow && !d->cr && d->raw_len == 0 && !d->skipping) {
            bool nul;
            size_t r = clean_run(d, p + i, n - i, &nul);
            if (r > 0 && !nul) {
                size_t start = i;
                i += r;
                d->after_crlf = true;
                if (d->block(arg, p + start, r) < 0)
                    break;
                continue;
            }
            /* A run with a NUL goes the slow way whole (which leaves NULs out and says so);
             * an unclean line alone, and the next line is tried again. */
            const char *lf = memchr(p + i, '\n', n - i);
            slow = r > 0 ? i + r : lf ? (size_t)(lf - p) + 1 : n;
        }
        if (d->cr) {
            d->cr = false;
            if (p[i] == '\n') {
                i++;
                if (line_done(d, true, emit, arg) != 0)
                    break;
                continue;
            }
            /* A CR not followed by LF: it ends the line but is not a line ending. */
            d->flags |= PC_DATA_BARE_CR;
            if (line_done(d, false, emit, arg) < 0)
                break;
            continue;
        }
        /* The run up to the first CR or LF: k is where the first of them is, or n. */
        const char *lf = memchr(p + i, '\n', n - i);
        size_t lim = lf ? (size_t)(lf - p) : n;
        const char *cr = memchr(p + i, '\r', lim - i);
        size_t k = cr ? (size_t)(cr - p) : lim;
        if (cr && k + 1 == lim && lf && d->raw_len == 0 && !d->skipping && k - i <= d->max_line &&
            memchr(p + i, 0, k - i) == NULL) {
            /* A whole CR LF line in this buffer, without NUL: no copy. */
            size_t start = i;
            i = lim + 1;
            if (line_end(d, p + start, k - start, true, emit, arg) != 0)
                break;
            continue;
        }
        if (k > i)
            line_add(d, p + i, k - i);
        i = k;
        if (i == n)
            break;
        if (p[i] == '\r') {
            d->cr = true;
            i++;
            continue;
        }
        /* A bare LF. */
        d->flags |= PC_DATA_BARE_LF;
        i++;
        if (line_done(d, false, emit, arg) < 0)
            break;
    }
    d->bytes += i;
    return i;
}

/* pc_stuff_init - at the beginning of the message */
void pc_stuff_init(struct pc_stuffer *st)
{
    st->bol = true;
}

/* pc_stuff - dot-stuff a CRLF-clean stream: only the byte after each LF (found by memchr)
 * can need a second dot */
bool pc_stuff(struct pc_stuffer *st, const char *p, size_t n, struct pc_buf *out)
{
    size_t start = 0, i = 0;

    while (i < n) {
        if (st->bol && p[i] == '.') {
            if (!pc_buf_append(out, p + start, i - start) || !pc_buf_putc(out, '.'))
                return false;
            start = i;
        }
        const char *nl = memchr(p + i, '\n', n - i);
        if (nl == NULL) {
            st->bol = false; /* p[i..n) is not empty and holds no LF */
            break;
        }
        i = (size_t)(nl - p) + 1;
        st->bol = true;
    }
    return pc_buf_append(out, p + start, n - start);
}

/* put_uint - decimal digits of v at p, no terminator; the end */
static char *put_uint(char *p, unsigned v)
{
    char d[12];
    size_t n = 0;

    do
        d[n++] = (char)('0' + v % 10);
    while (v /= 10);
    while (n)
        *p++ = d[--n];
    return p;
}

/* pc_reply_format - the one reply writer */
int pc_reply_format(struct pc_buf *out, int code, const struct pc_enh *enh, const char *text,
                    const struct pc_reply_opts *o)
{
    struct pc_enh e = {0, 0, 0};
    char es[24] = "", *q;

    if (code < 200 || code > 599)
        code = 451; /* a bug upstream must still produce a valid, retryable reply */
    if (o && o->soft_bounce && code / 100 == 5)
        code = code == 554 || code == 552 || code == 553 ? 450 : code - 100;
    if (enh) {
        e = *enh;
        /* RFC 3463 section 2: the class of the enhanced code equals the reply's. */
        if (code / 100 == 3)
            e.cls = 2;
        else
            e.cls = (uint8_t)(code / 100);
        q = put_uint(es, e.cls);
        *q++ = '.';
        q = put_uint(q, e.subject);
        *q++ = '.';
        q = put_uint(q, e.detail);
        *q++ = ' ';
        *q = 0;
    }
    size_t esl = strlen(es);
    const char *p = text && *text ? text : "";
    do {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char line[4 + sizeof(es) + 500 + 2];
        size_t o = 0;
        line[o++] = (char)('0' + code / 100);
        line[o++] = (char)('0' + code / 10 % 10);
        line[o++] = (char)('0' + code % 10);
        line[o++] = nl ? '-' : ' ';
        memcpy(line + o, es, esl);
        o += esl;
        for (size_t i = 0; i < len && i < 500; i++) {
            unsigned char c = (unsigned char)p[i];
            line[o++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
        }
        line[o++] = '\r';
        line[o++] = '\n';
        pc_buf_append(out, line, o);
        p = nl ? nl + 1 : NULL;
    } while (p);
    return code;
}

/* pc_reply_parse_line - "250-text", "250 2.0.0 text" */
int pc_reply_parse_line(struct pc_reply *r, const char *line, size_t len)
{
    if (len < 3 || !isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
        !isdigit((unsigned char)line[2]) || (len > 3 && line[3] != ' ' && line[3] != '-'))
        return -1;
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (code < 200 || code > 599 || (r->code && r->code != code))
        return -1;
    bool first = r->code == 0;
    r->code = code;
    const char *t = len > 4 ? line + 4 : "";
    size_t tl = len > 4 ? len - 4 : 0;
    /* Strip an enhanced code of the reply's class from the first line. */
    if (tl >= 5 && first) {
        char tmp[16];
        size_t k = 0;
        while (k < tl && k < sizeof(tmp) - 1 && t[k] != ' ')
            tmp[k] = t[k], k++;
        tmp[k] = 0;
        struct pc_enh e;
        if (pc_enh_parse(tmp, &e) && e.cls == code / 100) {
            r->enh = e;
            t += k;
            tl -= k;
            while (tl && *t == ' ')
                t++, tl--;
        }
    } else if (!first && tl >= 5) {
        /* Continuation lines repeat the enhanced code; drop it. */
        size_t k = 0;
        while (k < tl && t[k] != ' ')
            k++;
        char tmp[16];
        if (k < sizeof(tmp)) {
            memcpy(tmp, t, k);
            tmp[k] = 0;
            struct pc_enh e;
            if (pc_enh_parse(tmp, &e)) {
                t += k;
                tl -= k;
                while (tl && *t == ' ')
                    t++, tl--;
            }
        }
    }
    size_t have = strlen(r->text);
    if (!first && have + 1 < sizeof(r->text))
        r->text[have++] = '\n';
    for (size_t i = 0; i < tl && have + 1 < sizeof(r->text); i++) {
        unsigned char c = (unsigned char)t[i];
        r->text[have++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
    }
    r->text[have] = 0;
    if (len == 3 || line[3] == ' ') {
        r->complete = true;
        return 1;
    }
    return 0;
}
