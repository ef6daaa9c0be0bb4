/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_smtp_edges 1 - more tables for the SMTP wire parsers, and a model of the DATA decoder
 * DESCRIPTION
 *	Complements test_smtp_proto: every obsolete and forbidden verb,
 *	spaces and case, ESMTP parameter bounds (too many, bad keys and
 *	values, duplicates in any case, valueless ones), xtext edges, soft
 *	bounce for every 5xx, the reply reader's enhanced-code handling and
 *	text bound. The DATA decoder is checked against a small independent
 *	model on thousands of pseudo-random streams of CR, LF, '.', and
 *	letters, each fed whole, byte by byte and in random chunks: the same
 *	lines, flags, end and bytes consumed every time, and data ends exactly
 *	at the first CR LF . CR LF (counting DATA's own CRLF) and nowhere else.
 * SEE ALSO
 *	RFC 5321 sections 4.1.1, 4.5.2 and 4.5.3.1, RFC 3461 section 4, RFC 3463
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/smtp_proto.h"
#include "lib/pool.h"

START_TEST(verbs)
{
    static const struct {
        const char *line;
        enum pc_verb verb;
        const char *name;
    } t[] = {
        {"helo x", PC_VERB_HELO, "HELO"},
        {"HeLo x", PC_VERB_HELO, "HELO"},
        {"RSET", PC_VERB_RSET, "RSET"},
        {"noop anything", PC_VERB_NOOP, "NOOP"},
        {"HELP", PC_VERB_HELP, "HELP"},
        {"EXPN list", PC_VERB_EXPN, "EXPN"},
        {"STARTTLS", PC_VERB_STARTTLS, "STARTTLS"},
        {"AUTH PLAIN", PC_VERB_AUTH, "AUTH"},
        {"BDAT 10 LAST", PC_VERB_BDAT, "BDAT"},
        {"ETRN example.com", PC_VERB_ETRN, "ETRN"},
        {"TURN", PC_VERB_OBSOLETE, "TURN"},
        {"send FROM:<a@b>", PC_VERB_OBSOLETE, "SEND"},
        {"SOML FROM:<a@b>", PC_VERB_OBSOLETE, "SOML"},
        {"SAML FROM:<a@b>", PC_VERB_OBSOLETE, "SAML"},
        {"GET / HTTP/1.1", PC_VERB_FORBIDDEN, "GET"},
        {"POST /x HTTP/1.1", PC_VERB_FORBIDDEN, "POST"},
        {"CONNECT host:25 HTTP/1.1", PC_VERB_FORBIDDEN, "CONNECT"},
        {"MAILFROM:<a@b>", PC_VERB_UNKNOWN, NULL},
        {"DATAX", PC_VERB_UNKNOWN, "DATAX"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pc_cmd c;
        ck_assert_msg(pc_cmd_parse(t[i].line, strlen(t[i].line), &c) == NULL, "%s", t[i].line);
        ck_assert_msg(c.verb == t[i].verb, "%s: verb %d", t[i].line, c.verb);
        if (t[i].name)
            ck_assert_str_eq(c.name, t[i].name);
        ck_assert(memchr(c.name, 0, sizeof(c.name)) != NULL);
    }
    /* The verb name is truncated, never overflowed. */
    struct pc_cmd c;
    const char *longverb = "ABCDEFGHIJKLMNOPQRSTUVWXYZABCDEFGHIJKLMNOPQRSTUVWXYZ x";
    ck_assert_ptr_null(pc_cmd_parse(longverb, strlen(longverb), &c));
    ck_assert_int_eq(c.verb, PC_VERB_UNKNOWN);
    ck_assert_uint_lt(strlen(c.name), sizeof(c.name));
    /* Leading spaces are tolerated; a NUL anywhere, a DEL or a C0 byte is refused. */
    static const char *const bad[] = {"  HELO x", "HELO x\x7f", "\x1bHELO", "HELO\tx\x00"};
    ck_assert_ptr_null(pc_cmd_parse(bad[0], strlen(bad[0]), &c));
    ck_assert_int_eq(c.verb, PC_VERB_HELO);
    ck_assert(c.arg_len == 1 && c.arg[0] == 'x');
    ck_assert_ptr_nonnull(pc_cmd_parse(bad[1], strlen(bad[1]), &c));
    ck_assert_ptr_nonnull(pc_cmd_parse(bad[2], strlen(bad[2]), &c));
    ck_assert_ptr_nonnull(pc_cmd_parse(bad[3], 8, &c));
    ck_assert_ptr_nonnull(pc_cmd_parse("QUIT\r", 5, &c));
    ck_assert_ptr_nonnull(pc_cmd_parse("QUIT\n", 5, &c));
}
END_TEST

START_TEST(params)
{
    static const struct {
        const char *arg;
        int ok;
        size_t n;
    } t[] = {
        {"FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8", 1, 3},
        {"FROM:<a@b.example>   SIZE=1   ", 1, 1},
        {"FROM:<a@b.example> RET=HDRS ENVID=x+2By", 1, 2},
        {"FROM:<a@b.example> X-VENDOR-1=v\xc3\xa4", 1, 1}, /* UTF-8 values (RFC 6531) */
        {"FROM:<a@b.example> size=1 SIZE=2", 0, 0},        /* duplicates in any case */
        {"FROM:<a@b.example> SIZE=", 0, 0},
        {"FROM:<a@b.example> SIZE==1", 0, 0},
        {"FROM:<a@b.example> -X=1", 0, 0},
        {"FROM:<a@b.example> X_Y=1", 0, 0},
        {"FROM:<a@b.example> X=a\x01", 0, 0},
        {"FROM:<a@b.example> X=a\x7f", 0, 0},
        {"FROM:<a@b.example>\tSIZE=1", 0, 0},
        {"FROM: <a@b.example>", 1, 0},
        {"FROM:   <a@b.example>", 1, 0},
        {"FROM :<a@b.example>", 0, 0},
        {"FROM", 0, 0},
        {"", 0, 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pc_pool *pool = pc_pool_create(1024);
        struct pc_path_args pa;
        const char *enh = NULL;
        const char *why = pc_path_args_parse(t[i].arg, strlen(t[i].arg), "FROM:", pool, &pa, &enh);
        ck_assert_msg((why == NULL) == (bool)t[i].ok, "%zu %s: %s", i, t[i].arg,
                      why ? why : "accepted");
        if (why == NULL)
            ck_assert_uint_eq(pa.nparams, t[i].n);
        else
            ck_assert(enh != NULL && enh[0] == '5' && enh[1] == '.');
        pc_pool_destroy(pool);
    }

    /* Sixteen parameters fit, seventeen do not. */
    char arg[512];
    struct pc_pool *pool = pc_pool_create(1024);
    struct pc_path_args pa;
    const char *enh;
    int n = snprintf(arg, sizeof(arg), "TO:<u@x.example>");
    for (int k = 0; k < PC_MAX_PARAMS; k++)
        n += snprintf(arg + n, sizeof(arg) - (size_t)n, " P%d=%d", k, k);
    ck_assert_ptr_null(pc_path_args_parse(arg, (size_t)n, "TO:", pool, &pa, &enh));
    ck_assert_uint_eq(pa.nparams, PC_MAX_PARAMS);
    n += snprintf(arg + n, sizeof(arg) - (size_t)n, " EXTRA");
    ck_assert_ptr_nonnull(pc_path_args_parse(arg, (size_t)n, "TO:", pool, &pa, &enh));

    /* Lookup: case-insensitive; a valueless parameter is present with no value. */
    const char *a2 = "TO:<u@x.example> notify=SUCCESS,DELAY orcpt=rfc822;u+40x.example SMTPUTF8";
    ck_assert_ptr_null(pc_path_args_parse(a2, strlen(a2), "TO:", pool, &pa, &enh));
    bool present;
    ck_assert_str_eq(pc_param_get(&pa, "NOTIFY", &present), "SUCCESS,DELAY");
    ck_assert(present);
    ck_assert_str_eq(pc_param_get(&pa, "Orcpt", NULL), "rfc822;u+40x.example");
    ck_assert_ptr_null(pc_param_get(&pa, "SMTPUTF8", &present));
    ck_assert(present);
    ck_assert_ptr_null(pc_param_get(&pa, "SIZE", &present));
    ck_assert(!present);
    ck_assert_str_eq(pa.params_text, "notify=SUCCESS,DELAY orcpt=rfc822;u+40x.example SMTPUTF8");
    /* The length given is respected: a parameter past it is not seen. */
    ck_assert_ptr_null(pc_path_args_parse(a2, 16, "TO:", pool, &pa, &enh));
    ck_assert_uint_eq(pa.nparams, 0);
    pc_pool_destroy(pool);
}
END_TEST

START_TEST(xtext_edges)
{
    static const struct {
        const char *s;
        int ok;
    } t[] = {
        {"", 1},     {"abc", 1},      {"+2B", 1}, {"a+2b", 1}, {"+", 0},
        {"+2", 0},   {"+G0", 0},      {"+0G", 0}, {"a=b", 0},  {"a b", 0},
        {"\x7f", 0}, {"\xc3\xa4", 0}, {"!~", 1},  {"a\tb", 0}, {"+2B+3D", 1},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        ck_assert_msg(pc_xtext_valid(t[i].s) == (bool)t[i].ok, "%zu [%s]", i, t[i].s);
}
END_TEST

START_TEST(soft_bounce_and_classes)
{
    static const struct {
        int code, soft;
        const char *enh_in; /* class digit replaced by the writer */
        const char *want;
    } t[] = {
        {550, 1, "5.1.1", "450 4.1.1 t\r\n"}, {551, 1, "5.1.6", "451 4.1.6 t\r\n"},
        {552, 1, "5.3.4", "450 4.3.4 t\r\n"}, {553, 1, "5.1.3", "450 4.1.3 t\r\n"},
        {554, 1, "5.7.1", "450 4.7.1 t\r\n"}, {500, 1, "5.5.2", "400 4.5.2 t\r\n"},
        {250, 1, "2.0.0", "250 2.0.0 t\r\n"}, {451, 1, "4.3.0", "451 4.3.0 t\r\n"},
        {550, 0, "5.1.1", "550 5.1.1 t\r\n"}, {250, 0, "5.1.1", "250 2.1.1 t\r\n"},
        {354, 0, "2.0.0", "354 2.0.0 t\r\n"}, {421, 0, "5.7.0", "421 4.7.0 t\r\n"},
        {600, 0, "5.0.0", "451 4.0.0 t\r\n"}, {199, 0, "2.0.0", "451 4.0.0 t\r\n"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pc_buf b;
        struct pc_enh e;
        struct pc_reply_opts o = {.soft_bounce = t[i].soft};
        ck_assert(pc_enh_parse(t[i].enh_in, &e));
        pc_buf_init(&b, 0);
        pc_reply_format(&b, t[i].code, &e, "t", &o);
        ck_assert_msg(strcmp(b.data, t[i].want) == 0, "%zu: %s", i, b.data);
        pc_buf_free(&b);
    }
    /* Empty text, text of only a newline, and a long line that is bounded. */
    struct pc_buf b;
    pc_buf_init(&b, 0);
    pc_reply_format(&b, 250, NULL, "", NULL);
    ck_assert_str_eq(b.data, "250 \r\n");
    pc_buf_reset(&b);
    pc_reply_format(&b, 250, NULL, NULL, NULL);
    ck_assert_str_eq(b.data, "250 \r\n");
    pc_buf_reset(&b);
    pc_reply_format(&b, 250, NULL, "a\n", NULL);
    ck_assert_str_eq(b.data, "250-a\r\n250 \r\n");
    pc_buf_reset(&b);
    char big[2000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    pc_reply_format(&b, 550, NULL, big, NULL);
    ck_assert_uint_le(b.len, 512); /* RFC 5321 4.5.3.1.5: a reply line is at most 512 */
    ck_assert(memcmp(b.data + b.len - 2, "\r\n", 2) == 0);
    pc_buf_reset(&b);
    pc_reply_format(&b, 550, NULL, "tab\there del\x7f esc\x1b", NULL);
    ck_assert_str_eq(b.data, "550 tab here del  esc \r\n");
    pc_buf_free(&b);
}
END_TEST

START_TEST(reply_reader_edges)
{
    struct pc_reply r;

    /* Continuation lines repeating the enhanced code lose it. */
    memset(&r, 0, sizeof(r));
    ck_assert_int_eq(pc_reply_parse_line(&r, "452-4.5.3 Too many", 18), 0);
    ck_assert_int_eq(pc_reply_parse_line(&r, "452 4.5.3 recipients", 20), 1);
    ck_assert_str_eq(r.text, "Too many\nrecipients");
    ck_assert(r.enh.cls == 4 && r.enh.subject == 5 && r.enh.detail == 3);
    ck_assert(r.complete);
    /* A bare code is a complete reply with no text. */
    memset(&r, 0, sizeof(r));
    ck_assert_int_eq(pc_reply_parse_line(&r, "354", 3), 1);
    ck_assert_int_eq(r.code, 354);
    ck_assert_str_eq(r.text, "");
    /* Something that merely looks like an enhanced code stays text. */
    memset(&r, 0, sizeof(r));
    ck_assert_int_eq(pc_reply_parse_line(&r, "250 1.2.3.4 accepted", 20), 1);
    ck_assert_int_eq(r.enh.cls, 0);
    ck_assert_str_eq(r.text, "1.2.3.4 accepted");
    /* Codes out of range, a control byte in the text replaced. */
    memset(&r, 0, sizeof(r));
    ck_assert_int_eq(pc_reply_parse_line(&r, "199 x", 5), -1);
    ck_assert_int_eq(pc_reply_parse_line(&r, "600 x", 5), -1);
    ck_assert_int_eq(pc_reply_parse_line(&r,
                                         "250 a\x01"
                                         "b",
                                         7),
                     1);
    ck_assert_str_eq(r.text, "a b");
    /* A very long multi-line reply is bounded and still completes. */
    memset(&r, 0, sizeof(r));
    char line[300];
    memcpy(line, "250-", 4);
    memset(line + 4, 'y', sizeof(line) - 4);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(pc_reply_parse_line(&r, line, sizeof(line)), 0);
    ck_assert_int_eq(pc_reply_parse_line(&r, "250 end", 7), 1);
    ck_assert_uint_lt(strlen(r.text), sizeof(r.text));
}
END_TEST

/* The model: an independent, obviously correct decoder over a whole buffer. */
struct model {
    char out[65536];
    size_t n, used;
    unsigned flags;
    bool done;
};

/* model_decode - split at CRLF, bare CR, bare LF; end at "." after a real CRLF, before one */
static void model_decode(const char *p, size_t len, size_t max, struct model *m)
{
    size_t start = 0, i = 0;
    bool prev_real = true;

    memset(m, 0, sizeof(*m));
    while (i < len) {
        size_t term;
        bool real;
        if (p[i] == '\r' && i + 1 < len && p[i + 1] == '\n')
            term = 2, real = true;
        else if (p[i] == '\r' && i + 1 == len)
            break; /* unresolved at the end of the input */
        else if (p[i] == '\r' || p[i] == '\n')
            term = 1, real = false;
        else {
            i++;
            continue;
        }
        const char *line = p + start;
        size_t ll = i - start;
        if (real && prev_real && ll == 1 && line[0] == '.') {
            m->done = true;
            m->used = i + 2;
            if (memchr(p, 0, i))
                m->flags |= PC_DATA_NUL;
            return;
        }
        if (!real)
            m->flags |= p[i] == '\r' ? PC_DATA_BARE_CR : PC_DATA_BARE_LF;
        if (ll > max) {
            m->flags |= PC_DATA_LONG_LINE;
            ll = max;
        }
        if (ll > 1 && line[0] == '.')
            line++, ll--;
        for (size_t j = 0; j < ll; j++) /* NULs never come out */
            if (line[j])
                m->out[m->n++] = line[j];
        m->out[m->n++] = '|';
        prev_real = real;
        i += term;
        start = i;
    }
    /* The unterminated rest is held back, but an over-long one is already flagged. */
    size_t rest = len - start;
    if (rest && p[len - 1] == '\r')
        rest--;
    if (rest > max)
        m->flags |= PC_DATA_LONG_LINE;
    if (memchr(p, 0, len))
        m->flags |= PC_DATA_NUL;
    m->used = len;
}

/* emit_into - decoder callback */
static int emit_into(void *arg, const char *line, size_t len)
{
    struct model *m = arg;
    ck_assert_uint_lt(m->n + len + 1, sizeof(m->out));
    memcpy(m->out + m->n, line, len);
    m->n += len;
    m->out[m->n++] = '|';
    return 0;
}

/* real_decode - the decoder, fed in chunks chosen by the sizes array (0 ends it: the rest) */
static void real_decode(const char *p, size_t len, size_t max, const size_t *sizes, struct model *m)
{
    struct pc_data d;
    size_t off = 0, k = 0;

    memset(m, 0, sizeof(*m));
    pc_data_init(&d, max);
    while (off < len && !d.done) {
        size_t want = sizes && sizes[k] ? sizes[k++] : len - off;
        if (want > len - off)
            want = len - off;
        size_t used = pc_data_feed(&d, p + off, want, emit_into, m);
        ck_assert(used == want || d.done);
        off += used;
    }
    m->used = off;
    m->flags = d.flags;
    m->done = d.done;
    ck_assert_uint_eq(d.bytes, off);
    pc_data_free(&d);
}

START_TEST(decoder_model)
{
    /* The second alphabet has NUL: left out of every line, never part of the end marker. */
    static const char alphabets[2][10] = {"\r\n.\r\n.ab", "\r\n.\r\n.a\0\0"};
    unsigned seed = 12345;
    char in[96];
    size_t sizes[100];
    int ends = 0, nuls = 0;

    for (int round = 0; round < 8000; round++) {
        const char *alphabet = alphabets[round >= 4000];
        size_t len = (size_t)(rand_r(&seed) % sizeof(in));
        for (size_t i = 0; i < len; i++)
            in[i] = alphabet[rand_r(&seed) % 9];
        /* Now and then a long run of letters, to cross the line bound. */
        if (round % 5 == 0 && len > 40)
            memset(in + 5, 'x', 30);
        size_t max = round % 3 == 0 ? 8 : 64;
        struct model want, got;
        model_decode(in, len, max, &want);
        ends += want.done;
        nuls += (want.flags & PC_DATA_NUL) != 0;
        /* Whole. */
        real_decode(in, len, max, NULL, &got);
        ck_assert_msg(got.done == want.done && got.used == want.used && got.flags == want.flags &&
                          got.n == want.n && memcmp(got.out, want.out, got.n) == 0,
                      "round %d whole: done %d/%d used %zu/%zu flags %u/%u", round, got.done,
                      want.done, got.used, want.used, got.flags, want.flags);
        /* Byte by byte. */
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
            sizes[i] = 1;
        real_decode(in, len, max, sizes, &got);
        ck_assert_msg(got.done == want.done && got.used == want.used && got.flags == want.flags &&
                          got.n == want.n && memcmp(got.out, want.out, got.n) == 0,
                      "round %d bytewise", round);
        /* Random chunks. */
        for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]) - 1; i++)
            sizes[i] = 1 + (size_t)(rand_r(&seed) % 7);
        sizes[sizeof(sizes) / sizeof(sizes[0]) - 1] = 0;
        real_decode(in, len, max, sizes, &got);
        ck_assert_msg(got.done == want.done && got.used == want.used && got.flags == want.flags &&
                          got.n == want.n && memcmp(got.out, want.out, got.n) == 0,
                      "round %d chunks", round);
        /* The end is exactly the first CR LF . CR LF, DATA's CRLF counted. */
        char framed[100] = "\r\n";
        memcpy(framed + 2, in, len);
        const char *hit = memmem(framed, len + 2, "\r\n.\r\n", 5);
        ck_assert_int_eq(want.done, hit != NULL);
        if (hit)
            ck_assert_uint_eq(want.used, (size_t)(hit - framed) + 5 - 2);
    }
    ck_assert_int_gt(ends, 200); /* the streams do reach the end often enough to matter */
    ck_assert_int_gt(nuls, 1000);
}
END_TEST

START_TEST(decoder_never_ends)
{
    /* Lookalikes of the end marker, each followed by more data: none ends it. */
    static const char *const t[] = {
        "a\n.\nb",      "a\r.\rb",       "a\n.\r\nb",       "a\r\n.\nb",
        "a\r\n.\rb",    "a\r.\r\nb",     "a\r\n .\r\nb",    "a\r\n.\x00\r\nb",
        "a\r\n..\r\nb", "a\r\n.\r\r\nb", "a\r\r\n.\n\r\nb",
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        size_t len = strlen(t[i]);
        if (i == 7)
            len = 8; /* the NUL is part of it */
        struct model m;
        real_decode(t[i], len, 1000, NULL, &m);
        ck_assert_msg(!m.done && m.used == len, "%zu ended", i);
        /* And every such stream still ends at a real marker after it. */
        char buf[64];
        memcpy(buf, t[i], len);
        memcpy(buf + len, "\r\n.\r\nQUIT\r\n", 11);
        real_decode(buf, len + 11, 1000, NULL, &m);
        ck_assert(m.done && m.used == len + 5);
    }
    /* A dot line straight after an over-long line still only ends on CRLF. */
    struct model m;
    real_decode("0123456789\n.\r\n", 14, 4, NULL, &m);
    ck_assert(!m.done);
    ck_assert_uint_eq(m.flags, PC_DATA_LONG_LINE | PC_DATA_BARE_LF);
}
END_TEST

START_TEST(stuff_chunks)
{
    /* Dots at the start of every line, with the line start in one chunk and the dot in the
     * next, and a dot that is not at a line start. */
    static const char *in = ".\r\n.\r\n..\r\na.b\r\n.";
    static const char *want = "..\r\n..\r\n...\r\na.b\r\n..";
    unsigned seed = 7;
    for (int round = 0; round < 200; round++) {
        struct pc_stuffer st;
        struct pc_buf out;
        size_t off = 0, len = strlen(in);
        pc_stuff_init(&st);
        pc_buf_init(&out, 0);
        while (off < len) {
            size_t n = 1 + (size_t)(rand_r(&seed) % 4);
            if (n > len - off)
                n = len - off;
            ck_assert(pc_stuff(&st, in + off, n, &out));
            off += n;
        }
        pc_buf_putc(&out, 0);
        ck_assert_str_eq(out.data, want);
        pc_buf_free(&out);
    }
    /* An empty chunk changes nothing. */
    struct pc_stuffer st;
    struct pc_buf out;
    pc_stuff_init(&st);
    pc_buf_init(&out, 0);
    ck_assert(pc_stuff(&st, "", 0, &out));
    ck_assert(pc_stuff(&st, ".", 1, &out));
    ck_assert_uint_eq(out.len, 2);
    pc_buf_free(&out);
}
END_TEST

START_TEST(decoder_nul)
{
    /* Each is content, never the end; the NUL never reaches a line; the flag says it was there. */
    static const struct {
        const char *in;
        size_t len;
        const char *lines;
    } t[] = {
        {"a\r\n\0.\r\nb\r\n", 10, "a|.|b|"},  {"a\r\n.\0\r\nb\r\n", 10, "a||b|"},
        {"a\r\n..\0\r\nb\r\n", 11, "a|.|b|"}, {"\0\r\n", 3, "|"},
        {"x\0y\0\0z\r\n", 8, "xyz|"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct model m;
        real_decode(t[i].in, t[i].len, 1000, NULL, &m);
        ck_assert_msg(!m.done && m.used == t[i].len, "%zu ended", i);
        ck_assert_uint_eq(m.flags, PC_DATA_NUL);
        ck_assert_msg(m.n == strlen(t[i].lines) && memcmp(m.out, t[i].lines, m.n) == 0, "%zu: %.*s",
                      i, (int)m.n, m.out);
        char buf[64];
        memcpy(buf, t[i].in, t[i].len);
        memcpy(buf + t[i].len, ".\r\n", 3);
        real_decode(buf, t[i].len + 3, 1000, NULL, &m);
        ck_assert(m.done && m.used == t[i].len + 3);
    }
    /* A NUL past the line bound is still seen. */
    struct model m;
    real_decode("abcdef\0\r\n", 9, 4, NULL, &m);
    ck_assert_uint_eq(m.flags, PC_DATA_NUL | PC_DATA_LONG_LINE);
    ck_assert(m.n == 5 && memcmp(m.out, "abcd|", 5) == 0);
}
END_TEST

/* main - run the suite */
int main(void)
{
    Suite *s = suite_create("smtp_edges");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, verbs);
    tcase_add_test(tc, params);
    tcase_add_test(tc, xtext_edges);
    tcase_add_test(tc, soft_bounce_and_classes);
    tcase_add_test(tc, reply_reader_edges);
    tcase_add_test(tc, decoder_model);
    tcase_add_test(tc, decoder_never_ends);
    tcase_add_test(tc, decoder_nul);
    tcase_add_test(tc, stuff_chunks);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
