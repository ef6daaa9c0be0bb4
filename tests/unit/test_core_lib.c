/*
 * NAME
 *	test_core_lib 1 - the spool, CIDR lists, domains and the config table
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/conf.h"
#include "gateway/msg.h"
#include "lib/addr.h"
#include "lib/cidr.h"
#include "lib/log.h"
#include "lib/parse.h"
#include "lib/pool.h"

/* feed - lines separated by '\n' into a message */
static void feed(struct pc_msg *m, const char *text)
{
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        ck_assert_int_eq(pc_msg_line(m, p, n), 0);
        p += n + (nl != NULL);
    }
    ck_assert_int_eq(pc_msg_finish(m), 0);
}

static int to_buf(void *arg, const char *p, size_t n)
{
    pc_buf_append(arg, p, n);
    return 0;
}

START_TEST(msg_headers)
{
    struct pc_msg m;
    struct pc_pool *pool = pc_pool_create(1024);

    pc_msg_init(&m, 4096, 100, 1 << 20, "/tmp");
    feed(&m, "Subject: one\n\ttwo\nX-A : spaced\nFrom: a@b\n\nbody\n.dot\n");
    ck_assert_uint_eq(m.nhdrs, 3);
    ck_assert(m.separator);
    ck_assert_int_eq(pc_msg_header_find(&m, "subject", 0), 0);
    ck_assert_int_eq(pc_msg_header_find(&m, "X-A", 0), 1);
    ck_assert_int_eq(pc_msg_header_find(&m, "from", 1), -1);
    ck_assert_str_eq(pc_msg_header_value(&m, 0, pool), "one\ttwo");
    ck_assert_uint_eq(m.body_len, strlen("body\r\n.dot\r\n"));
    /* Edits: one header added (CR/LF only as folding), one removed. */
    pc_msg_add_header(&m, pool, "X-New", "a\r\n\tb\rc\nd");
    m.hdrs[1].deleted = true;
    struct pc_buf out;
    pc_buf_init(&out, 0);
    ck_assert_int_eq(pc_msg_write(&m, "Received: x\r\n", to_buf, &out), 0);
    ck_assert_str_eq(out.data, "Received: x\r\nX-New: a\r\n\tb c d\r\nSubject: one\r\n\ttwo\r\n"
                               "From: a@b\r\n\r\nbody\r\n.dot\r\n");
    pc_buf_free(&out);
    pc_msg_free(&m);
    pc_pool_destroy(pool);
}
END_TEST

START_TEST(msg_no_separator_and_limits)
{
    struct pc_msg m;

    pc_msg_init(&m, 4096, 100, 1 << 20, "/tmp");
    feed(&m, "Subject: x\nthis is no header\nmore\n");
    ck_assert_uint_eq(m.nhdrs, 1);
    ck_assert(!m.separator);
    ck_assert_uint_eq(m.body_len, strlen("this is no header\r\nmore\r\n"));
    pc_msg_free(&m);
    pc_msg_init(&m, 64, 100, 1 << 20, "/tmp");
    feed(&m, "A: 0123456789012345678901234567890123456789\nB: 0123456789012345678901234567890\n\nb\n");
    ck_assert(m.header_overflow);
    pc_msg_free(&m);
    pc_msg_init(&m, 4096, 2, 1 << 20, "/tmp");
    feed(&m, "A: 1\nB: 2\nC: 3\n\nb\n");
    ck_assert(m.header_overflow);
    pc_msg_free(&m);
}
END_TEST

START_TEST(msg_spool_and_cursor)
{
    struct pc_msg m;
    struct pc_buf whole;

    pc_msg_init(&m, 4096, 100, 100, "/tmp");
    for (int i = 0; i < 20; i++)
        pc_msg_line(&m, i == 0 ? "Subject: spool" : i == 1 ? "" : "0123456789abcdef", i < 2 ? (i ? 0 : 14) : 16);
    ck_assert_int_eq(pc_msg_finish(&m), 0);
    ck_assert_int_ge(m.body_fd, 0); /* past the threshold: a file */
    pc_buf_init(&whole, 0);
    ck_assert_int_eq(pc_msg_write(&m, "Received: r\r\n", to_buf, &whole), 0);
    ck_assert_uint_eq(whole.len, strlen("Received: r\r\nSubject: spool\r\n\r\n") + 18 * 18);
    for (size_t cap = 1; cap < 70; cap += 7) {
        struct pc_msg_cursor c;
        struct pc_buf got;
        char buf[80];
        ssize_t n;
        pc_buf_init(&got, 0);
        pc_msg_cursor_init(&c);
        while ((n = pc_msg_read(&m, &c, "Received: r\r\n", buf, cap)) > 0)
            pc_buf_append(&got, buf, (size_t)n);
        ck_assert_int_eq(n, 0);
        ck_assert_uint_eq(got.len, whole.len);
        ck_assert(memcmp(got.data, whole.data, got.len) == 0);
        pc_buf_free(&got);
    }
    pc_buf_free(&whole);
    pc_msg_free(&m);
}
END_TEST

START_TEST(cidr_lists)
{
    struct pc_cidr_list l;
    struct pc_ip ip;

    pc_cidr_list_init(&l);
    ck_assert(pc_cidr_list_add(&l, "10.1.2.3/8"));
    ck_assert(pc_cidr_list_add(&l, "[2001:db8::]/32"));
    ck_assert(pc_cidr_list_add(&l, "192.0.2.7"));
    ck_assert(!pc_cidr_list_add(&l, "10.0.0.0/33"));
    ck_assert(!pc_cidr_list_add(&l, "2001:db8::/129"));
    ck_assert(!pc_cidr_list_add(&l, "nonsense"));
    ck_assert(!pc_cidr_list_add(&l, "10.0.0.0/"));
    static const struct {
        const char *ip;
        bool in;
    } t[] = {{"10.255.0.1", true},        {"11.0.0.1", false},         {"192.0.2.7", true},
             {"192.0.2.8", false},        {"2001:db8:1::5", true},     {"2001:db9::1", false},
             {"::ffff:10.9.9.9", true},   {"::ffff:192.0.2.7", true}};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        ck_assert(pc_ip_parse(t[i].ip, &ip));
        ck_assert_msg(pc_cidr_list_match(&l, &ip) == t[i].in, "%s", t[i].ip);
    }
    char buf[64];
    ck_assert(pc_ip_parse("::ffff:192.0.2.1", &ip));
    ck_assert_str_eq(pc_ip_format(&ip, buf, sizeof(buf)), "192.0.2.1");
    pc_cidr_list_free(&l);
}
END_TEST

START_TEST(domains)
{
    ck_assert(pc_domain_valid("example.com", 11, false));
    ck_assert(pc_domain_valid("example.com.", 12, false));
    ck_assert(!pc_domain_valid("-a.com", 6, false));
    ck_assert(!pc_domain_valid("a-.com", 6, false));
    ck_assert(!pc_domain_valid("a..com", 6, false));
    ck_assert(!pc_domain_valid("\xc3\xa4.de", 5, false));
    ck_assert(pc_domain_valid("\xc3\xa4.de", 5, true));
    char big[300];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    ck_assert(!pc_domain_valid(big, strlen(big), false));
    ck_assert(pc_domain_eq("Example.COM.", "example.com"));
    ck_assert(pc_domain_match("a.b.example.com", ".example.com"));
    ck_assert(!pc_domain_match("example.com", ".example.com"));
    ck_assert(!pc_domain_match("badexample.com", ".example.com"));
    unsigned long long ms;
    ck_assert(pc_parse_duration("250ms", &ms) && ms == 250);
    ck_assert(pc_parse_duration("5m", &ms) && ms == 300000);
    ck_assert(pc_parse_duration("30", &ms) && ms == 30000);
    ck_assert(!pc_parse_duration("5x", &ms));
    ck_assert(!pc_parse_duration("-1s", &ms));
    char h[64], p[16];
    ck_assert(pc_parse_hostport("[::1]:25", h, sizeof(h), p, sizeof(p)) && !strcmp(h, "::1"));
    ck_assert(pc_parse_hostport("unix:/run/s", h, sizeof(h), p, sizeof(p)) && p[0] == 0);
    ck_assert(!pc_parse_hostport("::1:25", h, sizeof(h), p, sizeof(p)));
    ck_assert(!pc_parse_hostport("host:99999", h, sizeof(h), p, sizeof(p)));
}
END_TEST

/* conf_error - load text as a config; NULL on success, else the message */
static char *conf_error(const char *text)
{
    static struct pc_err err;
    char path[] = "/tmp/pc-test-conf-XXXXXX";
    int fd = mkstemp(path);
    ck_assert(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    struct pc_conf *c = pc_conf_load(path, &err);
    unlink(path);
    if (c) {
        pc_conf_unref(c);
        return NULL;
    }
    return err.msg;
}

START_TEST(conf_table)
{
    static const struct {
        const char *text, *want; /* want: substring of the error, NULL = valid */
    } t[] = {
        {"", NULL},
        {"limits {\n max_recipients = 0\n}\n", ":2: max_recipients = 0 is out of range"},
        {"limits {\n\n max_message_size = 10\n}\n", ":3: max_message_size"},
        {"timeouts {\n command = \"5 minutes\"\n}\n", ":2: command: bad duration"},
        {"listener \"a\" {\n filters = { \"nope\" }\n}\n", "unknown filter \"nope\""},
        {"listener \"a\" {\n filters = { \"relay\", \"relay\" }\n}\n", "listed twice"},
        {"listener \"a\" {\n address = \"nowhere\"\n}\n", "bad address"},
        {"listener \"a\" {\n backend = \"b\"\n}\n", "no backend named"},
        {"backend \"b\" {\n address = { \"x\" }\n}\n", "bad address"},
        {"backend \"b\" {\n}\n", "either address or maildir"},
        {"backend \"b\" {\n address = { \"127.0.0.1:25\" }\n identity = \"magic\"\n}\n",
         "identity must be"},
        {"bare_newline = \"sometimes\"\n", "bare_newline must be"},
        {"relay {\n on_error = \"maybe\"\n}\n", "on_error must be"},
        {"relay {\n mynetworks = { \"1.2.3.4/40\" }\n}\n", "bad network"},
        {"hostname = \"bad host\"\n", "not a valid domain"},
        {"nosuchthing = 1\n", "nosuchthing"},
        {"backend \"b\" {\n address = \"127.0.0.1:25\"\n}\n", NULL},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char *e = conf_error(t[i].text);
        if (t[i].want == NULL)
            ck_assert_msg(e == NULL, "%zu: %s", i, e);
        else
            ck_assert_msg(e && strstr(e, t[i].want), "%zu: want %s, got %s", i, t[i].want,
                          e ? e : "(valid)");
    }
}
END_TEST

/* main - run the suite */
int main(void)
{
    pc_log_set_verbose(-1);
    Suite *s = suite_create("core_lib");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, msg_headers);
    tcase_add_test(tc, msg_no_separator_and_limits);
    tcase_add_test(tc, msg_spool_and_cursor);
    tcase_add_test(tc, cidr_lists);
    tcase_add_test(tc, domains);
    tcase_add_test(tc, conf_table);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
