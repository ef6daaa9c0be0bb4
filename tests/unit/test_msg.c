/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_msg 1 - the spooled message: header parsing, edits, spooling, streaming
 * DESCRIPTION
 *	Header section parsing (continuation lines, a missing separator, a
 *	body that starts without one, obsolete space before the colon),
 *	header limits setting header_overflow, header lookup and unfolded
 *	values, added headers sanitised so that CR and LF survive only as
 *	folding, deleted headers left out, and spooling past the threshold
 *	into a temporary directory, with pc_msg_read streaming the same bytes
 *	as pc_msg_write for several cursor buffer sizes.
 * SEE ALSO
 *	RFC 5322 sections 2.2 and 3.6
 */
#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/msg.h"
#include "lib/pool.h"

static char spool[] = "/tmp/pc-test-msg-XXXXXX";

/* feed - CRLF-separated text, line by line, then finish */
static void feed(struct pc_msg *m, const char *text)
{
    const char *p = text;

    while (*p) {
        const char *e = strstr(p, "\r\n");
        ck_assert_msg(e != NULL, "test text must end in CRLF");
        ck_assert_int_eq(pc_msg_line(m, p, (size_t)(e - p)), 0);
        p = e + 2;
    }
    ck_assert_int_eq(pc_msg_finish(m), 0);
}

/* out_buf - pc_msg_write sink */
static int out_buf(void *arg, const char *p, size_t n)
{
    return pc_buf_append(arg, p, n) ? 0 : -1;
}

/* written - the outgoing message as a string (caller frees) */
static char *written(const struct pc_msg *m, const char *prefix)
{
    struct pc_buf b;

    pc_buf_init(&b, 0);
    ck_assert_int_eq(pc_msg_write(m, prefix, out_buf, &b), 0);
    pc_buf_putc(&b, 0);
    return b.data;
}

START_TEST(header_parsing)
{
    static const struct {
        const char *in;
        size_t nhdrs;
        int separator;
        const char *names; /* header names joined by ',' */
        size_t body_len;
        const char *out; /* written without prefix */
    } t[] = {
        {"Subject: hi\r\nFrom: a@b\r\n\r\nbody\r\n", 2, 1, "Subject,From", 6,
         "Subject: hi\r\nFrom: a@b\r\n\r\nbody\r\n"},
        {"Subject: a\r\n b\r\n\tc\r\nTo: x\r\n\r\n", 2, 1, "Subject,To", 0,
         "Subject: a\r\n b\r\n\tc\r\nTo: x\r\n\r\n"},
        /* Headers only, no separator and no body: nothing is invented. */
        {"Subject: a\r\n", 1, 0, "Subject", 0, "Subject: a\r\n"},
        /* A non-header line starts the body; the separator is supplied. */
        {"Subject: a\r\nthis is body\r\n", 1, 0, "Subject", 14,
         "Subject: a\r\n\r\nthis is body\r\n"},
        {"no header here\r\nSubject: not a header\r\n", 0, 0, "", 39,
         "\r\nno header here\r\nSubject: not a header\r\n"},
        /* A continuation line first is no header: it starts the body. */
        {" folded\r\nSubject: x\r\n", 0, 0, "", 21, "\r\n folded\r\nSubject: x\r\n"},
        /* Obsolete white space before the colon (RFC 5322 4.5.8). */
        {"Subject : a\r\n\r\n", 1, 1, "Subject", 0, "Subject : a\r\n\r\n"},
        {":novalue\r\n\r\n", 0, 0, "", 12, "\r\n:novalue\r\n\r\n"},
        {"Bad Name: x\r\n\r\n", 0, 0, "", 15, "\r\nBad Name: x\r\n\r\n"},
        {"\r\nSubject: body\r\n", 0, 1, "", 15, "\r\nSubject: body\r\n"},
        {"", 0, 0, "", 0, ""},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pc_msg m;
        pc_msg_init(&m, 4096, 100, 1 << 20, spool);
        feed(&m, t[i].in);
        ck_assert_msg(m.nhdrs == t[i].nhdrs, "%zu: %zu headers", i, m.nhdrs);
        ck_assert_int_eq(m.separator, t[i].separator);
        ck_assert_msg(m.body_len == t[i].body_len, "%zu: body %zu", i, m.body_len);
        ck_assert_uint_eq(m.size, strlen(t[i].in));
        ck_assert(!m.header_overflow);
        char names[256] = "";
        for (size_t k = 0; k < m.nhdrs; k++) {
            if (k)
                strcat(names, ",");
            strncat(names, m.hdrs[k].name, m.hdrs[k].name_len);
        }
        ck_assert_str_eq(names, t[i].names);
        char *w = written(&m, NULL);
        ck_assert_msg(strcmp(w, t[i].out) == 0, "%zu: wrote [%s]", i, w);
        free(w);
        pc_msg_free(&m);
    }
}
END_TEST

START_TEST(header_limits)
{
    struct pc_msg m;
    char line[64];

    /* More headers than allowed. */
    pc_msg_init(&m, 4096, 16, 1 << 20, spool);
    for (int i = 0; i < 17; i++) {
        int n = snprintf(line, sizeof(line), "X-N%d: v", i);
        ck_assert_int_eq(pc_msg_line(&m, line, (size_t)n), 0);
    }
    ck_assert(m.header_overflow);
    ck_assert_uint_eq(m.nhdrs, 16);
    pc_msg_free(&m);

    /* A header section larger than its bound, in one long folded field. */
    pc_msg_init(&m, 1024, 100, 1 << 20, spool);
    ck_assert_int_eq(pc_msg_line(&m, "Subject: start", 14), 0);
    for (int i = 0; i < 100 && !m.header_overflow; i++)
        ck_assert_int_eq(pc_msg_line(&m, " 0123456789012345678901234567890123456789", 41), 0);
    ck_assert(m.header_overflow);
    ck_assert_uint_le(m.head.len, 1024);
    ck_assert_int_eq(pc_msg_line(&m, "", 0), 0);
    ck_assert_int_eq(pc_msg_line(&m, "body", 4), 0);
    ck_assert_int_eq(pc_msg_finish(&m), 0);
    ck_assert(m.header_overflow);
    pc_msg_free(&m);

    /* Exactly at the bound: "X: " plus value plus CRLF fills 1024 and is kept. */
    pc_msg_init(&m, 1024, 100, 1 << 20, spool);
    char big[1100];
    memcpy(big, "X: ", 3);
    memset(big + 3, 'v', 1019);
    ck_assert_int_eq(pc_msg_line(&m, big, 1022), 0);
    ck_assert(!m.header_overflow);
    ck_assert_int_eq(pc_msg_line(&m, " w", 2), 0);
    ck_assert(m.header_overflow);
    pc_msg_free(&m);
}
END_TEST

START_TEST(header_lookup)
{
    struct pc_msg m;
    struct pc_pool *pool = pc_pool_create(512);

    pc_msg_init(&m, 4096, 100, 1 << 20, spool);
    feed(&m, "Received: one\r\nSUBJECT:  Hello\r\n\tWorld\r\nreceived: two\r\nX-Empty:\r\n"
             "\r\nbody\r\n");
    ck_assert_int_eq(pc_msg_header_find(&m, "received", 0), 0);
    ck_assert_int_eq(pc_msg_header_find(&m, "Received", 1), 2);
    ck_assert_int_eq(pc_msg_header_find(&m, "Received", 2), -1);
    ck_assert_int_eq(pc_msg_header_find(&m, "Subject", 0), 1);
    ck_assert_int_eq(pc_msg_header_find(&m, "Subj", 0), -1);
    ck_assert_int_eq(pc_msg_header_find(&m, "Subjects", 0), -1);
    ck_assert_int_eq(pc_msg_header_find(&m, "Nope", 0), -1);
    ck_assert_str_eq(pc_msg_header_value(&m, 1, pool), "Hello\tWorld");
    ck_assert_str_eq(pc_msg_header_value(&m, 2, pool), "two");
    ck_assert_str_eq(pc_msg_header_value(&m, 3, pool), "");
    /* A deleted header is neither found nor written. */
    m.hdrs[0].deleted = true;
    ck_assert_int_eq(pc_msg_header_find(&m, "Received", 0), 2);
    ck_assert_int_eq(pc_msg_header_find(&m, "Received", 1), -1);
    char *w = written(&m, NULL);
    ck_assert_str_eq(w, "SUBJECT:  Hello\r\n\tWorld\r\nreceived: two\r\nX-Empty:\r\n\r\nbody\r\n");
    free(w);
    pc_msg_free(&m);
    pc_pool_destroy(pool);
}
END_TEST

START_TEST(added_headers)
{
    static const struct {
        const char *name, *value, *line;
    } t[] = {
        {"X-A", "plain", "X-A: plain\r\n"},
        {"X-B", "folded\r\n\tok", "X-B: folded\r\n\tok\r\n"},
        {"X-C", "folded\r\n sp", "X-C: folded\r\n sp\r\n"},
        /* A bare CR or LF, or CRLF not followed by white space, cannot end the field. */
        {"X-D", "a\r\nInjected: yes", "X-D: a  Injected: yes\r\n"},
        {"X-E", "a\nb\rc", "X-E: a b c\r\n"},
        {"X-F", "a\r\n\r\nbody", "X-F: a    body\r\n"},
        {"X-G", "end\r\n", "X-G: end  \r\n"},
        {"X-H", "dot\r\n.\r\n", "X-H: dot  .  \r\n"},
        {"X-\r\nI", "v", "X-??I: v\r\n"},
    };
    struct pc_pool *pool = pc_pool_create(512);
    struct pc_msg m;
    char want[1024] = "";

    pc_msg_init(&m, 4096, 100, 1 << 20, spool);
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        pc_msg_add_header(&m, pool, t[i].name, t[i].value);
        strcat(want, t[i].line);
    }
    feed(&m, "Subject: s\r\n\r\nb\r\n");
    strcat(want, "Subject: s\r\n\r\nb\r\n");
    char *w = written(&m, "Received: x\r\n");
    ck_assert(strncmp(w, "Received: x\r\n", 13) == 0);
    ck_assert_str_eq(w + 13, want);
    free(w);
    pc_msg_free(&m);
    pc_pool_destroy(pool);
}
END_TEST

/* spool_files - regular files in the spool directory (unlinked ones do not count) */
static int spool_files(void)
{
    DIR *d = opendir(spool);
    struct dirent *e;
    int n = 0;

    while (d && (e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    if (d)
        closedir(d);
    return n;
}

START_TEST(spool_and_stream)
{
    struct pc_pool *pool = pc_pool_create(512);

    /* Thresholds: never spooled, spooled after a few lines, spooled at once. */
    static const size_t thresholds[] = {1 << 24, 1000, 0};
    for (size_t ti = 0; ti < 3; ti++) {
        struct pc_msg m;
        struct pc_buf direct;
        pc_msg_init(&m, 4096, 100, thresholds[ti], spool);
        pc_msg_add_header(&m, pool, "X-Added", "yes");
        ck_assert_int_eq(pc_msg_line(&m, "Subject: big", 12), 0);
        ck_assert_int_eq(pc_msg_line(&m, "X-Drop: me", 10), 0);
        ck_assert_int_eq(pc_msg_line(&m, "", 0), 0);
        pc_buf_init(&direct, 0);
        pc_buf_puts(&direct, "Received: t\r\nX-Added: yes\r\nSubject: big\r\n\r\n");
        /* 200000 body bytes: more than the 64 KB write buffer, several times. */
        for (int i = 0; i < 2000; i++) {
            char line[100];
            int n = snprintf(line, sizeof(line), "%05d %-90s", i, i % 7 ? "" : ".dot");
            ck_assert_int_eq(pc_msg_line(&m, line, (size_t)n), 0);
            pc_buf_append(&direct, line, (size_t)n);
            pc_buf_puts(&direct, "\r\n");
        }
        ck_assert_int_eq(pc_msg_finish(&m), 0);
        ck_assert(!m.io_error);
        ck_assert_int_eq(m.body_fd >= 0, ti > 0);
        ck_assert_uint_eq(m.body_len, 2000 * 98);
        ck_assert_int_eq(spool_files(), 0); /* the spool file is unlinked at once */
        m.hdrs[1].deleted = true;

        /* Random access into the body, across the memory/file boundary. */
        char piece[16];
        ck_assert_int_eq(pc_msg_body_read(&m, 98 * 1500, piece, 5), 5);
        ck_assert(memcmp(piece, "01500", 5) == 0);
        ck_assert_int_eq(pc_msg_body_read(&m, m.body_len - 2, piece, 16), 2);
        ck_assert_int_eq(pc_msg_body_read(&m, m.body_len, piece, 16), 0);

        char *w = written(&m, "Received: t\r\n");
        ck_assert_uint_eq(strlen(w), direct.len);
        ck_assert(memcmp(w, direct.data, direct.len) == 0);
        /* Streaming through cursors of several sizes gives the same bytes. */
        static const size_t caps[] = {1, 2, 3, 7, 13, 64, 4096, 65537};
        for (size_t ci = 0; ci < sizeof(caps) / sizeof(caps[0]); ci++) {
            struct pc_msg_cursor c;
            struct pc_buf r;
            char *buf = malloc(caps[ci]);
            ssize_t n;
            pc_buf_init(&r, 0);
            pc_msg_cursor_init(&c);
            while ((n = pc_msg_read(&m, &c, "Received: t\r\n", buf, caps[ci])) > 0) {
                ck_assert_uint_le((size_t)n, caps[ci]);
                pc_buf_append(&r, buf, (size_t)n);
            }
            ck_assert_int_eq(n, 0);
            ck_assert_msg(r.len == direct.len && memcmp(r.data, direct.data, r.len) == 0,
                          "threshold %zu cap %zu: %zu bytes", thresholds[ti], caps[ci], r.len);
            /* Once finished it stays finished. */
            ck_assert_int_eq(pc_msg_read(&m, &c, "Received: t\r\n", buf, caps[ci]), 0);
            pc_buf_free(&r);
            free(buf);
        }
        free(w);
        pc_buf_free(&direct);
        pc_msg_free(&m);
    }
    pc_pool_destroy(pool);
}
END_TEST

/* A large message streams through the file: once spooled, the session holds a write buffer,
 * not the spool_threshold it had grown to (issue 14: memory per session while large messages
 * stream). */
START_TEST(spooled_body_gives_back_its_buffer)
{
    struct pc_msg m;
    char line[1000];

    pc_msg_init(&m, 4096, 100, 256 * 1024, spool);
    ck_assert_int_eq(pc_msg_line(&m, "Subject: big", 12), 0);
    ck_assert_int_eq(pc_msg_line(&m, "", 0), 0);
    memset(line, 'x', sizeof(line));
    size_t peak_cap = 0;
    for (int i = 0; i < 1024; i++) { /* 1 MB */
        ck_assert_int_eq(pc_msg_line(&m, line, sizeof(line)), 0);
        if (m.body_fd >= 0 && m.body.cap > peak_cap)
            peak_cap = m.body.cap;
    }
    ck_assert_int_ge(m.body_fd, 0);
    ck_assert_msg(peak_cap <= 2 * 65536, "%zu bytes buffered while spooling", peak_cap);
    ck_assert_int_eq(pc_msg_finish(&m), 0);
    char piece[4];
    ck_assert_int_eq(pc_msg_body_read(&m, 1002 * 1023, piece, 4), 4);
    ck_assert(memcmp(piece, "xxxx", 4) == 0);
    ck_assert_uint_eq(m.body_len, 1024 * 1002);
    pc_msg_free(&m);
}
END_TEST

START_TEST(spool_dir_missing)
{
    struct pc_msg m;

    /* A spool directory that cannot take a file is an I/O error, not a crash or a loss. */
    pc_msg_init(&m, 4096, 100, 10, "/nonexistent/pc-spool");
    ck_assert_int_eq(pc_msg_line(&m, "", 0), 0);
    int rc = 0;
    for (int i = 0; i < 10 && rc == 0; i++)
        rc = pc_msg_line(&m, "0123456789", 10);
    ck_assert_int_eq(rc, -1);
    ck_assert(m.io_error);
    ck_assert_int_eq(pc_msg_finish(&m), -1);
    pc_msg_free(&m);
}
END_TEST

/* main - run the suite in a private spool directory */
int main(void)
{
    if (mkdtemp(spool) == NULL)
        return EXIT_FAILURE;
    Suite *s = suite_create("msg");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, header_parsing);
    tcase_add_test(tc, header_limits);
    tcase_add_test(tc, header_lookup);
    tcase_add_test(tc, added_headers);
    tcase_add_test(tc, spool_and_stream);
    tcase_add_test(tc, spooled_body_gives_back_its_buffer);
    tcase_add_test(tc, spool_dir_missing);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    rmdir(spool);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
