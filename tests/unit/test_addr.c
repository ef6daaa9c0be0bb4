/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_addr 1 - tables for domain syntax, domain matching and paths
 * DESCRIPTION
 *	pc_domain_valid (labels, hyphens, lengths, one trailing dot, U-labels
 *	only when allowed), pc_domain_eq (case, one trailing dot) and
 *	pc_domain_match (an exact name, or ".parent" for strict subdomains
 *	only), and pc_path_parse edge cases the MAIL/RCPT tables do not reach.
 * SEE ALSO
 *	RFC 5321 sections 4.1.2 and 4.5.3.1, RFC 1035 section 2.3.4
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "lib/addr.h"
#include "lib/pool.h"

START_TEST(domain_valid)
{
    static const struct {
        const char *d;
        int ascii, utf8; /* expected without and with U-labels allowed */
    } t[] = {
        {"example.com", 1, 1},
        {"EXAMPLE.com", 1, 1},
        {"a", 1, 1},
        {"a-b.c-d.example", 1, 1},
        {"a--b.example", 1, 1},
        {"1.2.3.4", 1, 1},
        {"example.com.", 1, 1}, /* one trailing dot: the root */
        {"example.com..", 0, 0},
        {".example.com", 0, 0},
        {"a..b", 0, 0},
        {".", 0, 0},
        {"", 0, 0},
        {"-a.example", 0, 0},
        {"a-.example", 0, 0},
        {"a.example-", 0, 0},
        {"a-", 0, 0},
        {"a b.example", 0, 0},
        {"a@b.example", 0, 0},
        {"a\tb", 0, 0},
        {"[192.0.2.1]", 0, 0}, /* literals are not domains */
        {"b\xc3\xa4r.example", 0, 1},
        {"\x80", 0, 1},
        {"exa\x7fmple", 0, 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        size_t len = strlen(t[i].d);
        ck_assert_msg(pc_domain_valid(t[i].d, len, false) == (bool)t[i].ascii, "%zu ascii %s", i,
                      t[i].d);
        ck_assert_msg(pc_domain_valid(t[i].d, len, true) == (bool)t[i].utf8, "%zu utf8 %s", i,
                      t[i].d);
    }
    /* A NUL inside the length is not part of any label. */
    ck_assert(!pc_domain_valid("a\0b", 3, false));
    /* The length only counts what it is given: "example" of "example.com". */
    ck_assert(pc_domain_valid("example.com", 7, false));
}
END_TEST

START_TEST(domain_lengths)
{
    char label[80], name[300];

    /* A label of 63 is fine, 64 is not. */
    memset(label, 'a', 64);
    label[63] = 0;
    ck_assert(pc_domain_valid(label, 63, false));
    label[63] = 'a';
    label[64] = 0;
    ck_assert(!pc_domain_valid(label, 64, false));
    /* A name of 255 is fine, 256 is not (labels of 63 and dots). */
    size_t n = 0;
    while (n < 255) {
        size_t l = 255 - n >= 64 ? 63 : 255 - n;
        memset(name + n, 'b', l);
        n += l;
        if (n < 255)
            name[n++] = '.';
    }
    name[n] = 0;
    ck_assert_uint_eq(strlen(name), 255);
    ck_assert(pc_domain_valid(name, 255, false));
    name[255] = 'c';
    name[256] = 0;
    ck_assert(!pc_domain_valid(name, 256, false));
}
END_TEST

START_TEST(domain_eq)
{
    static const struct {
        const char *a, *b;
        int eq;
    } t[] = {
        {"example.com", "example.com", 1},
        {"Example.COM", "example.com", 1},
        {"example.com.", "example.com", 1},
        {"example.com", "EXAMPLE.COM.", 1},
        {"example.com.", "example.com.", 1},
        {"example.com..", "example.com", 0}, /* only one dot is ignored */
        {"example.co", "example.com", 0},
        {"xexample.com", "example.com", 0},
        {"", "", 1},
        {".", "", 1},
        {"a", "", 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        ck_assert_msg(pc_domain_eq(t[i].a, t[i].b) == (bool)t[i].eq, "%zu %s %s", i, t[i].a,
                      t[i].b);
        ck_assert_msg(pc_domain_eq(t[i].b, t[i].a) == (bool)t[i].eq, "%zu reversed", i);
    }
}
END_TEST

START_TEST(domain_match)
{
    static const struct {
        const char *d, *pattern;
        int match;
    } t[] = {
        {"example.com", "example.com", 1},
        {"EXAMPLE.com.", "example.com", 1},
        {"mail.example.com", "example.com", 0}, /* a plain name is exact */
        {"mail.example.com", ".example.com", 1},
        {"a.b.example.com", ".example.com", 1},
        {"MAIL.Example.Com.", ".example.com", 1},
        {"example.com", ".example.com", 0}, /* ".parent" is subdomains only */
        {"badexample.com", ".example.com", 0},
        {"xexample.com", "example.com", 0},
        {"example.com.evil", ".example.com", 0},
        {"example.com.evil", "example.com", 0},
        {".example.com", ".example.com", 0},
        /* A pattern written with the root's dot means the same. */
        {"example.com", "example.com.", 1},
        {"mail.example.com", ".example.com.", 1},
        {"mail.example.com.", ".example.com.", 1},
        {"example.com", ".example.com.", 0},
        {"", ".example.com", 0},
        {"", "example.com", 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        ck_assert_msg(pc_domain_match(t[i].d, t[i].pattern) == (bool)t[i].match, "%zu %s %s", i,
                      t[i].d, t[i].pattern);
}
END_TEST

START_TEST(path_edges)
{
    static const struct {
        const char *in;
        int ok;
        size_t end; /* where parsing stopped */
        const char *addr, *domain;
        int null, route, literal;
    } t[] = {
        {"<>", 1, 2, "", "", 1, 0, 0},
        {"<> SIZE=1", 1, 2, "", "", 1, 0, 0},
        {"<a@b.example> X", 1, 13, "a@b.example", "b.example", 0, 0, 0},
        {"a@b.example X", 1, 11, "a@b.example", "b.example", 0, 0, 0},
        {"<\"a>b\"@c.example>", 1, 17, "\"a>b\"@c.example", "c.example", 0, 0, 0},
        {"<@a.example:u@b.example>", 1, 24, "u@b.example", "b.example", 0, 1, 0},
        {"<@a.example,@b.example:u@c.example>", 1, 35, "u@c.example", "c.example", 0, 1, 0},
        {"<u@[IPv6:2001:db8::1]>", 1, 22, "u@[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]", 0, 0, 1},
        {"<postmaster>", 1, 12, "postmaster", "", 0, 0, 0},
        {"<POSTMASTER>", 1, 12, "POSTMASTER", "", 0, 0, 0},
        {"<u@b.example.>", 1, 14, "u@b.example.", "b.example.", 0, 0, 0},
        {"", 0, 0, NULL, NULL, 0, 0, 0},
        {"<", 0, 0, NULL, NULL, 0, 0, 0},
        {"<\"postmaster\">", 0, 0, NULL, NULL, 0, 0, 0},
        {"<@a.example>", 0, 0, NULL, NULL, 0, 0, 0},
        {"<@a..example:u@b.example>", 0, 0, NULL, NULL, 0, 0, 0},
        {"<@a.example,b.example:u@b.example>", 0, 0, NULL, NULL, 0, 0, 0},
        {"<u@[192.0.2.1>", 0, 0, NULL, NULL, 0, 0, 0},
        {"<u@[]>", 0, 0, NULL, NULL, 0, 0, 0},
        {"<u@[a\\b]>", 0, 0, NULL, NULL, 0, 0, 0},
        {"<u@[a b]>", 0, 0, NULL, NULL, 0, 0, 0},
        {"<\"u\x01\"@b.example>", 0, 0, NULL, NULL, 0, 0, 0},
        {"<\"u\\\x01\"@b.example>", 0, 0, NULL, NULL, 0, 0, 0},
        {"<\"u@b.example>", 0, 0, NULL, NULL, 0, 0, 0},
        {"<u(comment)@b.example>", 0, 0, NULL, NULL, 0, 0, 0},
        {"<@b.example>", 0, 0, NULL, NULL, 0, 0, 0},
        {"<u@>", 0, 0, NULL, NULL, 0, 0, 0},
        {"<u\"x\"@b.example>", 0, 0, NULL, NULL, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pc_pool *pool = pc_pool_create(512);
        struct pc_mailbox mb;
        size_t end = 0;
        const char *why = pc_path_parse(t[i].in, strlen(t[i].in), pool, &mb, &end);
        ck_assert_msg((why == NULL) == (bool)t[i].ok, "%zu %s: %s", i, t[i].in,
                      why ? why : "accepted");
        if (t[i].ok) {
            ck_assert_uint_eq(end, t[i].end);
            ck_assert_str_eq(mb.addr, t[i].addr);
            ck_assert_str_eq(mb.domain, t[i].domain);
            ck_assert_int_eq(mb.null, t[i].null);
            ck_assert_int_eq(mb.route, t[i].route);
            ck_assert_int_eq(mb.literal, t[i].literal);
        }
        pc_pool_destroy(pool);
    }
}
END_TEST

START_TEST(path_length)
{
    char in[600];
    struct pc_pool *pool = pc_pool_create(512);
    struct pc_mailbox mb;
    size_t end;

    /* 256 characters between the brackets is the limit (RFC 5321 4.5.3.1.3). */
    in[0] = '<';
    memset(in + 1, 'a', 64);
    in[65] = '@';
    size_t n = 66;
    while (n < 257) {
        size_t l = 257 - n > 63 ? 50 : 257 - n;
        memset(in + n, 'd', l);
        n += l;
        if (n < 257)
            in[n++] = '.';
    }
    in[n++] = '>';
    in[n] = 0;
    ck_assert_uint_eq(n, 258);
    ck_assert_ptr_null(pc_path_parse(in, n, pool, &mb, &end));
    memmove(in + 2, in + 1, n);
    in[1] = 'a';
    ck_assert_ptr_nonnull(pc_path_parse(in, n + 1, pool, &mb, &end));
    /* The same without brackets. */
    ck_assert_ptr_nonnull(pc_path_parse(in + 1, n - 1, pool, &mb, &end));
    pc_pool_destroy(pool);
}
END_TEST

/* main - run the suite */
int main(void)
{
    Suite *s = suite_create("addr");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, domain_valid);
    tcase_add_test(tc, domain_lengths);
    tcase_add_test(tc, domain_eq);
    tcase_add_test(tc, domain_match);
    tcase_add_test(tc, path_edges);
    tcase_add_test(tc, path_length);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
