/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_mime_fast 1 - the one-part fast path against GMime's full parse
 * DESCRIPTION
 *	Differential: every message is spooled (body in memory, and body in
 *	a file) and parsed twice, by pc_mime_parse_fast() and by the full
 *	GMime parse (pc_mime_parse_msg), under several limits (text limits
 *	that cut inside a 4 KB step and on one, rules that read no text or no
 *	sizes); every field a rule can read must be the same: part type,
 *	parameters, charset, disposition, file name, transfer encoding,
 *	decoded size, depth, decoded text (of the part and joined), part and
 *	depth counts, limits reached, parse error. The messages: every file
 *	under ../shared/testdata (skipped when absent) and hand-written ones
 *	(folded Content-Type, odd charsets, a missing separator, headers only,
 *	base64 with bad padding, 8-bit and NUL bytes, quoted-printable and
 *	base64 across GMime's 4 KB steps, RFC 2231 and RFC 2047 file names).
 *	A one-part message must take the fast path; a multipart must not.
 */
#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/msg.h"
#include "lib/log.h"
#include "rules/mime.h"

#define MB (1024 * 1024)

static const struct pc_mime_limits limits[] = {
    {.max_depth = 20, .max_parts = 200, .max_text = 8 * MB},
    {.max_depth = 20, .max_parts = 200, .max_text = 1024},
    {.max_depth = 20, .max_parts = 200, .max_text = 10},
    {.max_depth = 20, .max_parts = 200, .max_text = 5000, .skip = PC_MIME_SKIP_SIZE},
    {.max_depth = 20, .max_parts = 200, .max_text = 4096, .skip = PC_MIME_SKIP_SIZE},
    {.max_depth = 20, .max_parts = 200, .max_text = 8 * MB, .skip = PC_MIME_SKIP_TEXT},
    {.max_depth = 20,
     .max_parts = 200,
     .max_text = 8 * MB,
     .skip = PC_MIME_SKIP_TEXT | PC_MIME_SKIP_SIZE},
};
#define NLIMITS (sizeof(limits) / sizeof(limits[0]))

static int fast_taken, plain_taken, compared;

/* spool - the message as the gateway keeps it: lines without their CRLF, then finish */
static void spool(struct pc_msg *m, const char *data, size_t size, size_t threshold)
{
    pc_msg_init(m, 1 << 20, 10000, threshold, "/tmp");
    for (size_t i = 0; i < size;) {
        const char *nl = memchr(data + i, '\n', size - i);
        size_t len = nl ? (size_t)(nl - (data + i)) : size - i;
        size_t cut = len && data[i + len - 1] == '\r' ? len - 1 : len;
        pc_msg_line(m, data + i, cut);
        i += len + 1;
    }
    pc_msg_finish(m);
}

/* same_str - both NULL or equal */
static void same_str(const char *a, const char *b, const char *what, const char *name)
{
    ck_assert_msg((a == NULL) == (b == NULL) && (a == NULL || strcmp(a, b) == 0),
                  "%s: %s: fast \"%s\", GMime \"%s\"", name, what, a ? a : "(null)",
                  b ? b : "(null)");
}

/* same_view - every field a rule can read */
static void same_view(const struct pc_mime *f, const struct pc_mime *g, const char *name)
{
    ck_assert_msg(f->nparts == g->nparts, "%s: parts %zu != %zu", name, f->nparts, g->nparts);
    ck_assert_msg(f->depth == g->depth, "%s: depth", name);
    ck_assert_msg(f->limits == g->limits, "%s: limits %u != %u", name, f->limits, g->limits);
    same_str(f->limit, g->limit, "limit", name);
    ck_assert_msg(f->error == g->error, "%s: error", name);
    ck_assert_msg(f->text_len == g->text_len && memcmp(f->text, g->text, f->text_len) == 0,
                  "%s: text (%zu bytes, GMime %zu)", name, f->text_len, g->text_len);
    for (size_t i = 0; i < f->nparts; i++) {
        const struct pc_mime_part *a = &f->parts[i], *b = &g->parts[i];
        same_str(a->type, b->type, "type", name);
        same_str(a->params, b->params, "params", name);
        same_str(a->charset, b->charset, "charset", name);
        same_str(a->disposition, b->disposition, "disposition", name);
        same_str(a->filename, b->filename, "filename", name);
        same_str(a->encoding, b->encoding, "encoding", name);
        ck_assert_msg(a->size == b->size, "%s: size %zu != %zu", name, a->size, b->size);
        ck_assert_msg(a->depth == b->depth, "%s: part depth", name);
        ck_assert_msg((a->text == NULL) == (b->text == NULL), "%s: part text", name);
        ck_assert_msg(a->text_len == b->text_len &&
                          (a->text == NULL || memcmp(a->text, b->text, a->text_len) == 0),
                      "%s: part text (%zu bytes, GMime %zu)", name, a->text_len, b->text_len);
    }
}

/* compare - one message, both spools, every limit: 0 when the fast path left it, else the
 * fast path's PC_MIME_BY_* */
static int compare(const char *data, size_t size, const char *name)
{
    int took = -1;
    unsigned by = PC_MIME_BY_GMIME;

    for (int file = 0; file < 2; file++) {
        struct pc_msg m;
        spool(&m, data, size, file ? 0 : 64 * MB);
        for (size_t l = 0; l < NLIMITS; l++) {
            struct pc_mime *f = pc_mime_parse_fast(&m, &limits[l], NULL, 0);
            if (took >= 0)
                ck_assert_msg(took == (f != NULL), "%s: fast path taken only sometimes", name);
            took = f != NULL;
            if (f == NULL)
                continue;
            ck_assert_msg(by == PC_MIME_BY_GMIME || by == f->parsed_by, "%s: path changed", name);
            by = f->parsed_by;
            struct pc_mime *g = pc_mime_parse_msg(&m, &limits[l]);
            char label[600];
            snprintf(label, sizeof(label), "%s (body in %s, limits %zu)", name,
                     file ? "a file" : "memory", l);
            same_view(f, g, label);
            compared++;
            pc_mime_free(f);
            pc_mime_free(g);
        }
        pc_msg_free(&m);
    }
    fast_taken += took;
    plain_taken += by == PC_MIME_BY_PLAIN;
    return took ? (int)by : 0;
}

/* Hand-written messages: name, text, which path must take it: 0 the full parse, 1 the fast
 * path with GMime parsing the headers, 2 the fast path without GMime's parser, -1 any. */
static const struct {
    const char *name;
    const char *text;
    int fast;
} cases[] = {
    {"plain", "From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\nworld\r\n", 2},
    {"no final newline", "Subject: hi\r\n\r\nhello", 2},
    {"folded content type",
     "Content-Type: text/plain;\r\n\tcharset=\"iso-8859-1\";\r\n format=flowed\r\n\r\n"
     "caf\xe9 cr\xe8me br\xfbl\xe9\r\n",
     2},
    {"folded quoted parameter",
     "Content-Type: text/plain; name=\"a\r\n\tb.txt\";\r\n\tcharset=\"wind\r\n "
     "ows-1252\"\r\n\r\n\x80\r\n",
     2},
    {"charset upper case", "Content-Type: TEXT/Plain; Charset=UTF-8\r\n\r\n\xc3\xa9t\xc3\xa9\r\n",
     2},
    {"unknown charset", "Content-Type: text/plain; charset=x-no-such-charset\r\n\r\n\xff\xfe x\r\n",
     2},
    {"windows-1252", "Content-Type: text/plain; charset=windows-1252\r\n\r\n\x80 \x93q\x94\r\n", 2},
    {"iso-2022-jp", "Content-Type: text/plain; charset=iso-2022-jp\r\n\r\n\x1b$B$3$s\x1b(B ok\r\n",
     2},
    {"utf-16 base64",
     "Content-Type: text/plain; charset=utf-16\r\nContent-Transfer-Encoding: base64\r\n\r\n"
     "//5oAGUAbABsAG8A\r\n",
     2},
    {"bad utf-8 declared", "Content-Type: text/plain; charset=utf-8\r\n\r\n\xc3\x28 \xe2\x82\r\n",
     2},
    {"missing separator", "Subject: x\r\nthis line is no header\r\nmore\r\n", 1},
    {"headers only", "Subject: x\r\nFrom: a@example.org\r\n", 0},
    {"headers and separator only", "Subject: x\r\n\r\n", 2},
    {"no headers", "\r\nbody only\r\n", 2},
    {"base64 bad padding",
     "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
     "aGVsbG8gd29ybGQ=\r\nYQ\r\n!!!=\r\nZm9v====YmFy\r\n",
     2},
    {"base64 upper case", "Content-Transfer-Encoding: BASE64\r\n\r\naGk=\r\n", 2},
    {"quoted-printable",
     "Content-Type: text/html; charset=iso-8859-15\r\nContent-Transfer-Encoding: "
     "Quoted-Printable\r\n\r\n<p>caf=E9 =\r\nsoft=3D break=\r\n</p>=4\r\n=ZZ\r\n",
     2},
    {"8bit declared", "Content-Transfer-Encoding: 8bit\r\n\r\n\xe9\xe8\x01\x7f\r\n", 2},
    {"binary",
     "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
     "\x01\x02\x03\r\n",
     1},
    {"unknown encoding", "Content-Transfer-Encoding: x-rot13\r\n\r\nuryyb\r\n", 2},
    {"uuencode",
     "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n"
     "begin 644 a.txt\r\n%:&5L;&\\*\r\n`\r\nend\r\n",
     1},
    {"attachment text",
     "Content-Type: text/plain\r\nContent-Disposition: attachment; "
     "filename=\"notes.txt\"\r\n\r\nsecret\r\n",
     2},
    {"rfc2231 filename",
     "Content-Type: application/x-msdownload; name*=utf-8''%e2%82%ac.exe\r\n"
     "Content-Disposition: attachment; filename*0=\"invoice.pdf\"; filename*1=\".exe\"\r\n"
     "Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AAA==\r\n",
     1},
    {"rfc2047 filename",
     "Content-Type: application/octet-stream; name=\"=?utf-8?q?a=2Eexe?=\"\r\n"
     "\r\nx\r\n",
     1},
    {"content type comment",
     "Content-Type: text/plain (a comment); charset=\"us-ascii\" (another)\r\n\r\nx\r\n", 2},
    {"content type garbage", "Content-Type: ;;; =\r\n\r\nx\r\n", 1},
    {"content type no subtype", "Content-Type: text\r\n\r\nx\r\n", 1},
    {"two content types",
     "Content-Type: text/plain; charset=utf-8\r\nContent-Type: application/pdf\r\n\r\nx\r\n", 1},
    {"space before colon", "Content-Type : application/pdf\r\nSubject: x\r\n\r\nx\r\n", 1},
    {"mime-version only", "MIME-Version: 1.0\r\n\r\nx\r\n", 2},
    {"multipart", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b--\r\n",
     0},
    {"multipart no boundary", "Content-Type: multipart/mixed\r\n\r\n--b\r\n\r\none\r\n--b--\r\n",
     0},
    {"message/rfc822", "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nx\r\n", 0},
    {"boundary-like body", "Content-Type: text/plain\r\n\r\n--b\r\n\r\none\r\n--b--\r\n", 2},
    {"pgp armour",
     "Content-Type: text/plain\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQ\r\n"
     "-----END PGP MESSAGE-----\r\n",
     2},
};

START_TEST(test_cases)
{
    int took = compare(cases[_i].text, strlen(cases[_i].text), cases[_i].name);

    if (cases[_i].fast >= 0)
        ck_assert_msg(took == cases[_i].fast, "%s: fast path %s", cases[_i].name,
                      took == 2 ? "without GMime"
                      : took    ? "with GMime headers"
                                : "not taken");
}
END_TEST

/* big - a body of n bytes of one kind, beyond GMime's 4 KB steps and the copy steps */
static char *big(const char *head, const char *line, size_t n, size_t *len)
{
    size_t hl = strlen(head), ll = strlen(line);
    char *p = malloc(hl + n + ll + 1);

    memcpy(p, head, hl);
    size_t at = hl;
    while (at < hl + n) {
        memcpy(p + at, line, ll);
        at += ll;
    }
    *len = at;
    return p;
}

START_TEST(test_large)
{
    static const struct {
        const char *head, *line;
        size_t n;
    } bigs[] = {
        {"Subject: big\r\n\r\n", "The quick brown fox jumps over the lazy dog.\r\n", 3 * MB},
        {"Content-Transfer-Encoding: base64\r\n\r\n",
         "VGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVyIHRoZSBsYXp5IGRvZy4K\r\n", 200000},
        {"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: "
         "quoted-printable\r\n\r\n",
         "caf=E9 cr=E8me br=FBl=E9e, une phrase assez longue pour couper =\r\n", 100000},
        {"Content-Type: text/plain; charset=shift_jis\r\n\r\n", "\x82\xa0\x82\xa2 \x82\r\n", 20000},
        {"Content-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n",
         "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk\r\n", 50000},
    };
    for (size_t i = 0; i < sizeof(bigs) / sizeof(bigs[0]); i++) {
        size_t len;
        char *p = big(bigs[i].head, bigs[i].line, bigs[i].n, &len);
        char name[64];
        snprintf(name, sizeof(name), "large %zu", i);
        ck_assert_int_gt(compare(p, len, name), 0);
        free(p);
    }
}
END_TEST

/* corpus_file - one file of the shared test data */
static int corpus_file(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)ftw;
    if (type != FTW_F || st->st_size > 4 * MB)
        return 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return 0;
    char *p = malloc((size_t)st->st_size + 1);
    size_t n = fread(p, 1, (size_t)st->st_size, f);
    fclose(f);
    compare(p, n, path);
    free(p);
    return 0;
}

START_TEST(test_corpus)
{
    struct stat st;

    if (stat("../shared/testdata/mime", &st) != 0) {
        fprintf(stderr, "test_mime_fast: ../shared/testdata absent, corpus skipped\n");
        return;
    }
    fast_taken = plain_taken = compared = 0;
    ck_assert_int_eq(nftw("../shared/testdata", corpus_file, 16, FTW_PHYS), 0);
    fprintf(stderr,
            "test_mime_fast: corpus: %d messages took the fast path (%d without GMime's parser), "
            "%d views compared\n",
            fast_taken, plain_taken, compared);
    /* Most mail is one part: the fast path must have taken a good share of the corpus. */
    ck_assert_int_gt(fast_taken, 100);
    ck_assert_int_gt(plain_taken, 50);
}
END_TEST

/* suite - every case */
static Suite *suite(void)
{
    Suite *s = suite_create("mime_fast");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_cases, 0, sizeof(cases) / sizeof(cases[0]));
    tcase_add_test(tc, test_large);
    tcase_add_test(tc, test_corpus);
    suite_add_tcase(s, tc);
    return s;
}

/* main - run the suite */
int main(void)
{
    pc_log_init("test_mime_fast", PC_LOG_STDERR, 0);
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
