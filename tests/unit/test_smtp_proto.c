/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_smtp_proto 1 - tables for the SMTP wire parsers and writers
 * DESCRIPTION
 *	Command parser, MAIL/RCPT arguments, the DATA decoder (the smuggling
 *	defence: fed whole, byte by byte and in every two-way split, it must
 *	give the same lines and flags), dot-stuffing, the reply writer and
 *	the backend reply reader; the BDAT arguments and the decoder's BDAT
 *	mode (no end marker, no unstuffing, a chunk boundary changes nothing).
 *	Every decoder case runs twice: line by line, and with the block callback
 *	(runs of clean lines in one call), which must give the same lines;
 *	a random model compares the two, and the spools they fill, on
 *	adversarial inputs (dots, bare CR and LF, NUL, long lines) split at
 *	every offset.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "core/msg.h"
#include "gateway/smtp_proto.h"
#include "lib/pool.h"

/* The decoders below hand runs of clean lines to collect_block when this is set. */
static bool blocks;

START_TEST(cmd_verbs)
{
    static const struct {
        const char *line;
        enum pc_verb verb;
        const char *arg;
    } t[] = {
        {"EHLO client.test", PC_VERB_EHLO, "client.test"},
        {"ehlo   x  ", PC_VERB_EHLO, "x"},
        {"MAIL FROM:<a@b>", PC_VERB_MAIL, "FROM:<a@b>"},
        {"rcpt TO:<a@b> NOTIFY=NEVER", PC_VERB_RCPT, "TO:<a@b> NOTIFY=NEVER"},
        {"DATA", PC_VERB_DATA, ""},
        {"QUIT", PC_VERB_QUIT, ""},
        {"VRFY x", PC_VERB_VRFY, "x"},
        {"TURN", PC_VERB_OBSOLETE, ""},
        {"SOML FROM:<a@b>", PC_VERB_OBSOLETE, "FROM:<a@b>"},
        {"GET / HTTP/1.0", PC_VERB_FORBIDDEN, "/ HTTP/1.0"},
        {"XYZZY", PC_VERB_UNKNOWN, ""},
        {"AVERYLONGVERBTHATISNOTSMTP arg", PC_VERB_UNKNOWN, "arg"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pc_cmd c;
        ck_assert_msg(pc_cmd_parse(t[i].line, strlen(t[i].line), &c) == NULL, "%s", t[i].line);
        ck_assert_int_eq(c.verb, t[i].verb);
        ck_assert_uint_eq(c.arg_len, strlen(t[i].arg));
        ck_assert(memcmp(c.arg, t[i].arg, c.arg_len) == 0);
    }
}
END_TEST

START_TEST(cmd_bad_bytes)
{
    static const char *bad[] = {"HELO a\rb", "HELO a\nb", "HELO \x7f", "HELO \x01x", ""};
    struct pc_cmd c;
    ck_assert(pc_cmd_parse("HELO a\0b", 8, &c) != NULL);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(pc_cmd_parse(bad[i], strlen(bad[i]), &c) != NULL, "%zu", i);
    /* UTF-8 in arguments is allowed (RFC 6531). */
    ck_assert(pc_cmd_parse("RCPT TO:<\xc3\xbc@b.de>", 16, &c) == NULL);
}
END_TEST

START_TEST(path_args)
{
    static const struct {
        const char *arg, *kw;
        int ok;
        const char *addr, *local, *domain;
        int null, route, quoted, utf8, nparams;
    } t[] = {
        {"FROM:<>", "FROM:", 1, "", "", "", 1, 0, 0, 0, 0},
        {"FROM:<a@b.example>", "FROM:", 1, "a@b.example", "a", "b.example", 0, 0, 0, 0, 0},
        {"from: <a@b.example>", "FROM:", 1, "a@b.example", "a", "b.example", 0, 0, 0, 0, 0},
        {"FROM:a@b.example", "FROM:", 1, "a@b.example", "a", "b.example", 0, 0, 0, 0, 0},
        {"FROM:<a@b.example> SIZE=10 BODY=8BITMIME", "FROM:", 1, "a@b.example", "a", "b.example", 0,
         0, 0, 0, 2},
        {"TO:<Postmaster>", "TO:", 1, "Postmaster", "Postmaster", "", 0, 0, 0, 0, 0},
        {"TO:<\"a b\\\"c\"@x.example>", "TO:", 1, "\"a b\\\"c\"@x.example", "a b\"c", "x.example",
         0, 0, 1, 0, 0},
        {"TO:<@r1.example,@r2.example:u@x.example>", "TO:", 1, "u@x.example", "u", "x.example", 0,
         1, 0, 0, 0},
        {"TO:<u@[192.0.2.1]>", "TO:", 1, "u@[192.0.2.1]", "u", "[192.0.2.1]", 0, 0, 0, 0, 0},
        {"TO:<\xc3\xbc@x.example>", "TO:", 1, "\xc3\xbc@x.example", "\xc3\xbc", "x.example", 0, 0,
         0, 1, 0},
        {"TO:<u@x.example", "TO:", 0, NULL, NULL, NULL, 0, 0, 0, 0, 0},
        {"TO:<u@@x.example>", "TO:", 0, NULL, NULL, NULL, 0, 0, 0, 0, 0},
        {"TO:<u@-x.example>", "TO:", 0, NULL, NULL, NULL, 0, 0, 0, 0, 0},
        {"TO:<u@x..example>", "TO:", 0, NULL, NULL, NULL, 0, 0, 0, 0, 0},
        {"TO:<u v@x.example>", "TO:", 0, NULL, NULL, NULL, 0, 0, 0, 0, 0},
        {"TO:<u@x.example> =bad", "TO:", 0, NULL, NULL, NULL, 0, 0, 0, 0, 0},
        {"TO:<u@x.example> A=1 A=2", "TO:", 0, NULL, NULL, NULL, 0, 0, 0, 0, 0},
        {"TO:<u@x.example>junk", "TO:", 0, NULL, NULL, NULL, 0, 0, 0, 0, 0},
        {"TO:<unquoted>", "TO:", 0, NULL, NULL, NULL, 0, 0, 0, 0, 0},
        {"FROM:<a@b>", "TO:", 0, NULL, NULL, NULL, 0, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pc_pool *pool = pc_pool_create(1024);
        struct pc_path_args pa;
        const char *enh;
        const char *why = pc_path_args_parse(t[i].arg, strlen(t[i].arg), t[i].kw, pool, &pa, &enh);
        ck_assert_msg((why == NULL) == t[i].ok, "%s: %s", t[i].arg, why ? why : "ok");
        if (t[i].ok) {
            ck_assert_str_eq(pa.mb.addr, t[i].addr);
            ck_assert_str_eq(pa.mb.local, t[i].local);
            ck_assert_str_eq(pa.mb.domain, t[i].domain);
            ck_assert_int_eq(pa.mb.null, t[i].null);
            ck_assert_int_eq(pa.mb.route, t[i].route);
            ck_assert_int_eq(pa.mb.quoted, t[i].quoted);
            ck_assert_int_eq(pa.mb.utf8, t[i].utf8);
            ck_assert_uint_eq(pa.nparams, (size_t)t[i].nparams);
        } else {
            ck_assert(enh && enh[0] == '5');
        }
        pc_pool_destroy(pool);
    }
}
END_TEST

START_TEST(xtext)
{
    ck_assert(pc_xtext_valid("abc+2Bdef"));
    ck_assert(!pc_xtext_valid("a+2"));
    ck_assert(!pc_xtext_valid("a=b"));
    ck_assert(!pc_xtext_valid("a b"));
}
END_TEST

/* RFC 3461 4.1 NOTIFY and 4.2 ORCPT, RFC 6533 3 utf-8 addresses: value, SMTPUTF8, valid */
START_TEST(dsn_params)
{
    static const struct {
        const char *v;
        bool ok;
    } notify[] = {
        {"NEVER", true},
        {"never", true},
        {"SUCCESS", true},
        {"SUCCESS,FAILURE", true},
        {"FAILURE,DELAY,SUCCESS", true},
        {"delay", true},
        {"", false},
        {"NEVER,SUCCESS", false},
        {"SUCCESS,", false},
        {",SUCCESS", false},
        {"SUCCESS,,DELAY", false},
        {"SUCCES", false},
        {"SUCCESSX", false},
        {"BOGUS", false},
        {"SUCCESS\xc3\xa9", false},
    };
    static const struct {
        const char *v;
        bool utf8, ok;
    } orcpt[] = {
        {"rfc822;a@example.com", false, true},
        {"RFC822;a+2Bb@example.com", false, true},
        {"rfc822;a+2bb@example.com", false, true},      /* lower-case hex, as clients send */
        {"x-unknown;anything", false, true},            /* unregistered types pass as xtext */
        {"rfc822;a+20b@example.com", false, true},      /* a space is printable */
        {"rfc822;a\xc3\xa9@example.com", false, false}, /* raw 8-bit */
        {"rfc822;a\xc3\xa9@example.com", true, false},  /* even with SMTPUTF8: xtext is ASCII */
        {"rfc822;a+0D+0Ab@example.com", false, false},  /* CR LF behind xtext */
        {"rfc822;a+C3+A9@example.com", false, false},   /* 8-bit behind xtext */
        {"rfc822;a+2", false, false},
        {"rfc822;a+G0", false, false},
        {"rfc822;", false, false},
        {"rfc822", false, false},
        {";a@example.com", false, false},
        {"rfc 822;a@example.com", false, false},
        {"rfc<822;a@example.com", false, false},
        {"r\xc3\xa9;a@example.com", true, false},
        {"utf-8;a@example.com", false, true},
        {"UTF-8;a\\x{E9}@example.com", false, true},
        {"utf-8;a\\x{2B}b@example.com", false, true},
        {"utf-8;\\x{1F600}@example.com", false, true},
        {"utf-8;a\\x{10FFFF}@example.com", false, true},
        {"utf-8;a\xc3\xa9@example.com", true, true},    /* unitext under SMTPUTF8 */
        {"utf-8;a\xc3\xa9@example.com", false, false},  /* not without it */
        {"utf-8;a\\x{41}@example.com", false, false},   /* "A" needs no escape */
        {"utf-8;a\\x{0E9}@example.com", false, false},  /* leading zero */
        {"utf-8;a\\x{D800}@example.com", false, false}, /* a surrogate */
        {"utf-8;a\\x{110000}@example.com", false, false},
        {"utf-8;a\\x{E9@example.com", false, false},
        {"utf-8;a\\y@example.com", false, false},
        {"utf-8;a+b@example.com", false, false},          /* "+" must be \x{2B} */
        {"utf-8;a\xc0\xaf@example.com", true, false},     /* overlong */
        {"utf-8;a\xed\xa0\x80@example.com", true, false}, /* encoded surrogate */
        {"utf-8;a\xc3@example.com", true, false},         /* truncated */
        {"utf-8;", true, false},
    };

    for (size_t i = 0; i < sizeof(notify) / sizeof(notify[0]); i++)
        ck_assert_msg(pc_notify_valid(notify[i].v) == notify[i].ok, "NOTIFY=%s", notify[i].v);
    for (size_t i = 0; i < sizeof(orcpt) / sizeof(orcpt[0]); i++)
        ck_assert_msg(pc_orcpt_valid(orcpt[i].v, orcpt[i].utf8) == orcpt[i].ok,
                      "ORCPT=%s smtputf8=%d", orcpt[i].v, orcpt[i].utf8);
}
END_TEST

/* Collected output of the decoder: lines joined with '|'. */
struct collect {
    char out[4096];
    size_t n;
};

static int collect_line(void *arg, const char *line, size_t len)
{
    struct collect *c = arg;
    memcpy(c->out + c->n, line, len);
    c->n += len;
    c->out[c->n++] = '|';
    c->out[c->n] = 0;
    return 0;
}

/* collect_block - a run of clean lines: check the block contract, then line by line */
static int collect_block(void *arg, const char *p, size_t n)
{
    ck_assert(n > 0 && p[n - 1] == '\n');
    while (n > 0) {
        const char *lf = memchr(p, '\n', n);
        size_t len = (size_t)(lf - p) + 1;
        ck_assert(len >= 2 && p[len - 2] == '\r' && p[0] != '.' && len - 2 <= 64);
        ck_assert(memchr(p, '\r', len - 2) == NULL && memchr(p, 0, len) == NULL);
        collect_line(arg, p, len - 2);
        p += len;
        n -= len;
    }
    return 0;
}

/* decode - feed in pieces of at most `step` bytes (0 = all at once) */
static void decode(const char *in, size_t len, size_t step, size_t split, struct collect *c,
                   unsigned *flags, size_t *used, int *done)
{
    struct pc_data d;
    size_t off = 0;

    memset(c, 0, sizeof(*c));
    pc_data_init(&d, 64);
    d.block = blocks ? collect_block : NULL;
    while (off < len && !d.done) {
        size_t n = step ? step : len - off;
        if (split && off < split && off + n > split)
            n = split - off;
        if (n > len - off)
            n = len - off;
        size_t k = pc_data_feed(&d, in + off, n, collect_line, c);
        off += k;
        if (k < n)
            break;
    }
    *flags = d.flags;
    *used = off;
    *done = d.done;
    pc_data_free(&d);
}

START_TEST(data_decoder)
{
    static const struct {
        const char *in;
        const char *lines;
        unsigned flags;
        int done;
        size_t used; /* 0 = all */
    } t[] = {
        {"a\r\nb\r\n.\r\n", "a|b|", 0, 1, 0},
        {".\r\n", "", 0, 1, 0},
        {"..x\r\n.\r\nMAIL", ".x|", 0, 1, 8},
        {"..\r\n.\r\n", ".|", 0, 1, 0},
        {"a\n.\nb\r\n.\r\n", "a|.|b|", PC_DATA_BARE_LF, 1, 0},
        {"a\r.\rb\r\n.\r\n", "a|.|b|", PC_DATA_BARE_CR, 1, 0},
        {"a\r\n.\nb\r\n.\r\n", "a|.|b|", PC_DATA_BARE_LF, 1, 0},
        {"a\n.\r\nb\r\n.\r\n", "a|.|b|", PC_DATA_BARE_LF, 1, 0},
        {"a\r\n.\r", "a|", 0, 0, 0},
        /* NUL is never part of a line nor of the end marker (PC_DATA_NUL says it was there). */
        {"a\r\n\x00.\r\n.\r\n", "a|.|", PC_DATA_NUL, 1, 0},
        {"x\r\n.\x00\r\n.\r\n", "x||", PC_DATA_NUL, 1, 0},
        {"0123456789012345678901234567890123456789012345678901234567890123456789\r\n.\r\n",
         "0123456789012345678901234567890123456789012345678901234567890123|", PC_DATA_LONG_LINE, 1,
         0},
        /* Runs of clean lines around what ends a run. */
        {"a\r\nb\r\n..c\r\nd\r\n\r\ne\r\n.\r\n", "a|b|.c|d||e|", 0, 1, 0},
        {"a\r\nb\rc\r\nd\ne\r\nf\r\n.\r\n", "a|b|c|d|e|f|", PC_DATA_BARE_CR | PC_DATA_BARE_LF, 1,
         0},
        {"012345678901234567890123456789012345678901234567890123456789012\r\n"
         "0123456789012345678901234567890123456789012345678901234567890123\r\n"
         "01234567890123456789012345678901234567890123456789012345678901234\r\nz\r\n.\r\n",
         "012345678901234567890123456789012345678901234567890123456789012|"
         "0123456789012345678901234567890123456789012345678901234567890123|"
         "0123456789012345678901234567890123456789012345678901234567890123|z|",
         PC_DATA_LONG_LINE, 1, 0},
    };
    for (int b = 0; b < 2; b++)
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
            blocks = b;
            size_t len = strlen(t[i].in);
            /* strlen stops at NUL: these inputs are written out in full. */
            if (i == 9)
                len = 10;
            if (i == 10)
                len = 10;
            struct collect whole, c;
            unsigned f0, f;
            size_t u0, u;
            int d0, d;
            decode(t[i].in, len, 0, 0, &whole, &f0, &u0, &d0);
            ck_assert_msg(strcmp(whole.out, t[i].lines) == 0, "%zu: got %s", i, whole.out);
            ck_assert_msg(f0 == t[i].flags, "%zu: flags %u", i, f0);
            ck_assert_int_eq(d0, t[i].done);
            ck_assert_uint_eq(u0, t[i].used ? t[i].used : len);
            /* Byte by byte and every two-way split give the same result. */
            decode(t[i].in, len, 1, 0, &c, &f, &u, &d);
            ck_assert_msg(c.n == whole.n && memcmp(c.out, whole.out, c.n) == 0, "%zu bytewise", i);
            ck_assert(f == f0 && u == u0 && d == d0);
            for (size_t s = 1; s < len; s++) {
                decode(t[i].in, len, len, s, &c, &f, &u, &d);
                ck_assert_msg(c.n == whole.n && memcmp(c.out, whole.out, c.n) == 0, "%zu split %zu",
                              i, s);
                ck_assert(f == f0 && u == u0 && d == d0);
            }
        }
}
END_TEST

/* bdat_decode - BDAT mode: the content in two pieces split at `split` (0 = one), then LAST */
static void bdat_decode(const char *in, size_t len, size_t split, struct collect *c,
                        unsigned *flags)
{
    struct pc_data d;

    memset(c, 0, sizeof(*c));
    pc_data_init_bdat(&d, 64);
    d.block = blocks ? collect_block : NULL;
    size_t k = pc_data_feed(&d, in, split, collect_line, c);
    ck_assert_uint_eq(k, split);
    k = pc_data_feed(&d, in + split, len - split, collect_line, c);
    ck_assert_uint_eq(k, len - split); /* every octet taken: no end marker in BDAT */
    ck_assert(!d.done);
    ck_assert_int_eq(pc_data_finish(&d, collect_line, c), 0);
    *flags = d.flags;
    pc_data_free(&d);
}

START_TEST(bdat_decoder)
{
    static const struct {
        const char *in;
        const char *lines;
        unsigned flags;
    } t[] = {
        /* Dots are content: neither unstuffed nor an end of data (RFC 3030 2). */
        {"a\r\n.\r\nMAIL FROM:<x@y>\r\n", "a|.|MAIL FROM:<x@y>|", 0},
        {"..x\r\n.\r\n", "..x|.|", 0},
        {"", "", 0},
        /* The last line need not end in CR LF; LAST ends it. */
        {"a\r\nb", "a|b|", 0},
        {"a\r\nb\r", "a|b|", PC_DATA_BARE_CR},
        /* The DATA policy for bare newlines, NUL and long lines. */
        {"a\n.\nb\r\n", "a|.|b|", PC_DATA_BARE_LF},
        {"a\r.\rb\r\n", "a|.|b|", PC_DATA_BARE_CR},
        {"a\r\n\x00.\r\nb\r\n", "a|.|b|", PC_DATA_NUL},
        {"0123456789012345678901234567890123456789012345678901234567890123456789\r\nz\r\n",
         "0123456789012345678901234567890123456789012345678901234567890123|z|", PC_DATA_LONG_LINE},
        {"a\r\n.b\r\nc\r\n.\r\nd\r\n", "a|.b|c|.|d|", 0},
    };
    for (int b = 0; b < 2; b++)
        for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
            blocks = b;
            size_t len = strlen(t[i].in) + (i == 7 ? 7 : 0); /* the NUL case, written out */
            struct collect whole, c;
            unsigned f0, f;
            bdat_decode(t[i].in, len, 0, &whole, &f0);
            ck_assert_msg(strcmp(whole.out, t[i].lines) == 0, "%zu: got %s", i, whole.out);
            ck_assert_msg(f0 == t[i].flags, "%zu: flags %u", i, f0);
            /* A chunk boundary anywhere changes nothing. */
            for (size_t s = 1; s < len; s++) {
                bdat_decode(t[i].in, len, s, &c, &f);
                ck_assert_msg(strcmp(c.out, whole.out) == 0 && f == f0, "%zu split %zu", i, s);
            }
        }
}
END_TEST

/* The model: what a decoder emits, and the spool it fills. */
struct model {
    struct collect c;
    struct pc_msg m;
};

static int model_line(void *arg, const char *line, size_t len)
{
    struct model *o = arg;
    collect_line(&o->c, line, len);
    return pc_msg_line(&o->m, line, len);
}

static int model_block(void *arg, const char *p, size_t n)
{
    struct model *o = arg;
    collect_block(&o->c, p, n);
    /* collect_block wrote the lines; the spool takes the block whole. */
    return pc_msg_lines(&o->m, p, n);
}

/* model_run - decode in (bdat: BDAT mode, then LAST) split at `split` (0 = whole) */
static void model_run(struct model *o, const char *in, size_t len, size_t split, bool bdat,
                      bool block, size_t threshold, unsigned *flags, size_t *used)
{
    struct pc_data d;
    size_t off = 0;

    memset(&o->c, 0, sizeof(o->c));
    pc_msg_init(&o->m, 4096, 100, threshold, "/tmp");
    if (bdat)
        pc_data_init_bdat(&d, 8);
    else
        pc_data_init(&d, 8);
    d.block = block ? model_block : NULL;
    while (off < len && !d.done) {
        size_t n = split && off < split ? split - off : len - off;
        size_t k = pc_data_feed(&d, in + off, n, model_line, o);
        off += k;
        if (k < n)
            break;
    }
    if (bdat)
        ck_assert_int_eq(pc_data_finish(&d, model_line, o), 0);
    ck_assert_int_eq(pc_msg_finish(&o->m), 0);
    *flags = d.flags;
    *used = off;
    pc_data_free(&d);
}

/* body_of - the spooled body, read back by offset in odd pieces */
static void body_of(const struct pc_msg *m, struct pc_buf *b)
{
    char tmp[7];
    ssize_t n;

    pc_buf_init(b, 0);
    for (size_t off = 0; (n = pc_msg_body_read(m, off, tmp, sizeof(tmp))) > 0; off += (size_t)n)
        pc_buf_append(b, tmp, (size_t)n);
}

static int model_out(void *arg, const char *p, size_t n)
{
    return pc_buf_append(arg, p, n) ? 0 : -1;
}

START_TEST(block_model)
{
    static const char alpha[] = {'a', 'b', '.', '.', '\r', '\n', '\r', '\n', 0, ':', ' '};
    unsigned seed = 12345;
    char in[48];

    for (int iter = 0; iter < 2000; iter++) {
        size_t len = 1 + (seed = seed * 1103515245 + 12345) % sizeof(in);
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245 + 12345;
            in[i] = alpha[(seed >> 16) % sizeof(alpha)];
        }
        /* Header-like and clean openings too, so that the body and long runs are reached. */
        if (iter % 3 == 0 && len > 12)
            memcpy(in, "S: x\r\n\r\nab\r\n", 12);
        bool bdat = iter % 2;
        size_t threshold = (seed >> 8) % 24;
        struct model a, b;
        unsigned fa, fb;
        size_t ua, ub;
        struct pc_buf wa, wb, ba, bb;
        model_run(&a, in, len, 0, bdat, false, threshold, &fa, &ua);
        model_run(&b, in, len, 0, bdat, true, threshold, &fb, &ub);
        ck_assert_msg(a.c.n == b.c.n && memcmp(a.c.out, b.c.out, a.c.n) == 0, "iter %d", iter);
        ck_assert(fa == fb && ua == ub);
        /* The same spool: the outgoing message, the body by offset, sizes and dot count. */
        pc_buf_init(&wa, 0);
        pc_buf_init(&wb, 0);
        ck_assert_int_eq(pc_msg_write(&a.m, "R: 1\r\n", model_out, &wa), 0);
        ck_assert_int_eq(pc_msg_write(&b.m, "R: 1\r\n", model_out, &wb), 0);
        ck_assert(wa.len == wb.len && memcmp(wa.data, wb.data, wa.len) == 0);
        body_of(&a.m, &ba);
        body_of(&b.m, &bb);
        ck_assert(ba.len == bb.len && ba.len == a.m.body_len && ba.len == b.m.body_len);
        ck_assert(ba.len == 0 || memcmp(ba.data, bb.data, ba.len) == 0); /* NULL when empty */
        ck_assert(a.m.size == b.m.size && a.m.body_dots == b.m.body_dots);
        ck_assert(a.m.nhdrs == b.m.nhdrs && a.m.in_body == b.m.in_body);
        /* A body that counts no dot line needs no stuffing: its spooled bytes are its wire
         * form, as the backend sends it. Otherwise stuffing changes it. */
        struct pc_stuffer st;
        struct pc_buf stuffed;
        pc_stuff_init(&st);
        pc_buf_init(&stuffed, 0);
        pc_stuff(&st, ba.data ? ba.data : "", ba.len, &stuffed);
        ck_assert_msg((stuffed.len == ba.len) == pc_msg_wire_body(&b.m), "iter %d", iter);
        if (ba.len)
            ck_assert(ba.len >= 2 && memcmp(ba.data + ba.len - 2, "\r\n", 2) == 0);
        pc_buf_free(&stuffed);
        pc_buf_free(&wa);
        pc_buf_free(&wb);
        pc_buf_free(&ba);
        pc_buf_free(&bb);
        pc_msg_free(&b.m);
        /* A split anywhere gives the same lines in block mode. */
        for (size_t s = 1; s < len; s++) {
            model_run(&b, in, len, s, bdat, true, 1 << 20, &fb, &ub);
            ck_assert_msg(a.c.n == b.c.n && memcmp(a.c.out, b.c.out, a.c.n) == 0,
                          "iter %d split %zu", iter, s);
            ck_assert(fa == fb && ua == ub);
            pc_msg_free(&b.m);
        }
        pc_msg_free(&a.m);
    }
}
END_TEST

START_TEST(bdat_args)
{
    static const struct {
        const char *arg;
        int ok;
        size_t n;
        int last;
    } t[] = {
        {"0", 1, 0, 0},
        {"0 LAST", 1, 0, 1},
        {"1000 last", 1, 1000, 1},
        {"12   LAST", 1, 12, 1},
        {"007", 1, 7, 0},
        {"999999999999999", 1, 999999999999999u, 0},
        {"1000000000000000", 0, 0, 0}, /* 16 digits */
        {"", 0, 0, 0},
        {"LAST", 0, 0, 0},
        {"-1", 0, 0, 0},
        {"+1", 0, 0, 0},
        {"1x", 0, 0, 0},
        {"1 LAST x", 0, 0, 0},
        {"1 LASTX", 0, 0, 0},
        {"1 FIRST", 0, 0, 0},
        {"1\tLAST", 0, 0, 0},
        {"0x10", 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        size_t n = 99;
        bool last = false;
        const char *why = pc_bdat_parse(t[i].arg, strlen(t[i].arg), &n, &last);
        ck_assert_msg((why == NULL) == t[i].ok, "%s: %s", t[i].arg, why ? why : "ok");
        if (t[i].ok) {
            ck_assert_uint_eq(n, t[i].n);
            ck_assert_int_eq(last, t[i].last);
        }
    }
}
END_TEST

START_TEST(stuffing)
{
    static const char *in = ".a\r\nb\r\n.\r\n..c\r\n";
    static const char *want = "..a\r\nb\r\n..\r\n...c\r\n";
    for (size_t step = 1; step <= strlen(in); step++) {
        struct pc_stuffer st;
        struct pc_buf out;
        pc_stuff_init(&st);
        pc_buf_init(&out, 0);
        for (size_t off = 0; off < strlen(in); off += step) {
            size_t n = strlen(in) - off < step ? strlen(in) - off : step;
            ck_assert(pc_stuff(&st, in + off, n, &out));
        }
        ck_assert_msg(strcmp(out.data, want) == 0, "step %zu: %s", step, out.data);
        pc_buf_free(&out);
    }
}
END_TEST

START_TEST(reply_writer)
{
    struct pc_buf b;
    struct pc_enh e = {5, 7, 1};
    struct pc_reply_opts soft = {.soft_bounce = true};

    pc_buf_init(&b, 0);
    ck_assert_int_eq(pc_reply_format(&b, 554, &e, "no\r\nway\x01", NULL), 554);
    /* A CR in a text becomes a space; a LF splits the reply into lines. */
    ck_assert_str_eq(b.data, "554-5.7.1 no \r\n554 5.7.1 way \r\n");
    pc_buf_reset(&b);
    /* The enhanced code's class follows the reply code. */
    ck_assert_int_eq(pc_reply_format(&b, 451, &e, "later", NULL), 451);
    ck_assert_str_eq(b.data, "451 4.7.1 later\r\n");
    pc_buf_reset(&b);
    ck_assert_int_eq(pc_reply_format(&b, 550, &e, "x", &soft), 450);
    ck_assert_str_eq(b.data, "450 4.7.1 x\r\n");
    pc_buf_reset(&b);
    ck_assert_int_eq(pc_reply_format(&b, 250, NULL, "host\nPIPELINING", NULL), 250);
    ck_assert_str_eq(b.data, "250-host\r\n250 PIPELINING\r\n");
    pc_buf_reset(&b);
    ck_assert_int_eq(pc_reply_format(&b, 99, NULL, "bug", NULL), 451);
    pc_buf_free(&b);
}
END_TEST

START_TEST(reply_reader)
{
    struct pc_reply r;

    memset(&r, 0, sizeof(r));
    ck_assert_int_eq(pc_reply_parse_line(&r, "250-mx.example", 14), 0);
    ck_assert_int_eq(pc_reply_parse_line(&r, "250-PIPELINING", 14), 0);
    ck_assert_int_eq(pc_reply_parse_line(&r, "250 XCLIENT NAME ADDR", 21), 1);
    ck_assert_int_eq(r.code, 250);
    ck_assert_str_eq(r.text, "mx.example\nPIPELINING\nXCLIENT NAME ADDR");
    memset(&r, 0, sizeof(r));
    ck_assert_int_eq(pc_reply_parse_line(&r, "550 5.1.1 User unknown", 22), 1);
    ck_assert_int_eq(r.enh.cls, 5);
    ck_assert_int_eq(r.enh.subject, 1);
    ck_assert_str_eq(r.text, "User unknown");
    memset(&r, 0, sizeof(r));
    ck_assert_int_eq(pc_reply_parse_line(&r, "250 4.0.0 mismatched class", 26), 1);
    ck_assert_int_eq(r.enh.cls, 0);
    memset(&r, 0, sizeof(r));
    ck_assert_int_eq(pc_reply_parse_line(&r, "25", 2), -1);
    ck_assert_int_eq(pc_reply_parse_line(&r, "abc def", 7), -1);
    ck_assert_int_eq(pc_reply_parse_line(&r, "250x", 4), -1);
    ck_assert_int_eq(pc_reply_parse_line(&r, "250-a", 5), 0);
    ck_assert_int_eq(pc_reply_parse_line(&r, "251 b", 5), -1); /* code changed mid-reply */
}
END_TEST

/* main - run the suite */
int main(void)
{
    Suite *s = suite_create("smtp_proto");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30); /* block_model: thousands of decodes, on a busy machine too */
    tcase_add_test(tc, cmd_verbs);
    tcase_add_test(tc, cmd_bad_bytes);
    tcase_add_test(tc, path_args);
    tcase_add_test(tc, xtext);
    tcase_add_test(tc, dsn_params);
    tcase_add_test(tc, data_decoder);
    tcase_add_test(tc, bdat_decoder);
    tcase_add_test(tc, block_model);
    tcase_add_test(tc, bdat_args);
    tcase_add_test(tc, stuffing);
    tcase_add_test(tc, reply_writer);
    tcase_add_test(tc, reply_reader);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
