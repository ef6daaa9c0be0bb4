/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_cidr 1 - tables for IPv4 and IPv6 networks
 * DESCRIPTION
 *	Parsing (prefix bounds, brackets, host bits cleared, bad input),
 *	matching at and around prefix edges, IPv4-mapped IPv6 clients against
 *	IPv4 networks (and the reverse), lists, and the text form.
 * SEE ALSO
 *	RFC 4291 section 2.5.5.2, RFC 4632
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/cidr.h"

START_TEST(parse_bad)
{
    static const char *bad[] = {
        "",
        "/8",
        "10.0.0.0/",
        "10.0.0.0/33",
        "10.0.0.0/-1",
        "10.0.0.0/8x",
        "10.0.0/8",
        "10.0.0.256",
        "::1/129",
        "::1/",
        "fe80::1%eth0",
        "example.com",
        "10.0.0.0/8/8",
        "[10.0.0.1",
        "[]",
        "1.2.3.4 ",
        " 1.2.3.4",
        "::ffff:1.2.3.4/129",
        "0123456789012345678901234567890123456789012345678901234567890123456789",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pc_cidr c;
        ck_assert_msg(!pc_cidr_parse(bad[i], &c), "accepted %s", bad[i]);
    }
}
END_TEST

START_TEST(match_table)
{
    static const struct {
        const char *net, *ip;
        int match;
    } t[] = {
        {"10.0.0.0/8", "10.255.255.255", 1},
        {"10.0.0.0/8", "11.0.0.0", 0},
        {"10.0.0.0/8", "9.255.255.255", 0},
        {"10.1.2.3/8", "10.9.9.9", 1}, /* host bits cleared */
        {"192.0.2.128/25", "192.0.2.128", 1},
        {"192.0.2.128/25", "192.0.2.255", 1},
        {"192.0.2.128/25", "192.0.2.127", 0},
        {"192.0.2.1", "192.0.2.1", 1}, /* a bare address is a /32 */
        {"192.0.2.1", "192.0.2.2", 0},
        {"192.0.2.1/32", "192.0.2.1", 1},
        {"0.0.0.0/0", "203.0.113.9", 1},
        {"0.0.0.0/0", "2001:db8::1", 0},      /* an IPv4 net holds no IPv6 address */
        {"10.0.0.0/8", "::ffff:10.1.2.3", 1}, /* IPv4-mapped client, IPv4 net */
        {"10.0.0.0/8", "::ffff:11.1.2.3", 0},
        {"10.0.0.0/8", "::10.1.2.3", 0},          /* IPv4-compatible is not mapped */
        {"::ffff:10.0.0.0/104", "10.200.0.1", 1}, /* mapped net, IPv4 client */
        {"::1/128", "::1", 1},
        {"::1", "::1", 1},
        {"::1/128", "::2", 0},
        {"::1/128", "127.0.0.1", 0},
        {"[::1]/128", "::1", 1},
        {"[2001:db8::]/32", "2001:db8:ffff::1", 1},
        {"2001:db8::/32", "2001:db9::1", 0},
        {"2001:db8::/33", "2001:db8:7fff::1", 1},
        {"2001:db8::/33", "2001:db8:8000::1", 0},
        {"2001:db8:1:2:3:4:5:6/48", "2001:db8:1::", 1},
        {"2001:db8::/127", "2001:db8::1", 1},
        {"2001:db8::/127", "2001:db8::2", 0},
        {"::/0", "2001:db8::1", 1},
        {"::/0", "10.0.0.1", 1}, /* everything, as ::/0 means */
        {"127.0.0.0/8", "127.0.0.1", 1},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pc_cidr c;
        struct pc_ip ip;
        ck_assert_msg(pc_cidr_parse(t[i].net, &c), "%zu net %s", i, t[i].net);
        ck_assert_msg(pc_ip_parse(t[i].ip, &ip), "%zu ip %s", i, t[i].ip);
        ck_assert_msg(pc_cidr_match(&c, &ip) == (bool)t[i].match, "%zu %s ~ %s", i, t[i].net,
                      t[i].ip);
    }
}
END_TEST

START_TEST(host_bits_cleared)
{
    struct pc_cidr c;
    struct pc_ip want;
    char buf[64];

    ck_assert(pc_cidr_parse("10.1.2.3/8", &c));
    ck_assert_uint_eq(c.bits, 104);
    ck_assert(pc_ip_parse("10.0.0.0", &want));
    ck_assert(memcmp(c.net.b, want.b, 16) == 0);
    ck_assert(pc_cidr_parse("192.0.2.255/26", &c));
    ck_assert_str_eq(pc_ip_format(&c.net, buf, sizeof(buf)), "192.0.2.192");
    ck_assert(pc_cidr_parse("2001:db8:ffff:ffff::1/35", &c));
    ck_assert_uint_eq(c.bits, 35);
    ck_assert_str_eq(pc_ip_format(&c.net, buf, sizeof(buf)), "2001:db8:e000::");
    ck_assert(pc_cidr_parse("255.255.255.255/0", &c));
    ck_assert_str_eq(pc_ip_format(&c.net, buf, sizeof(buf)), "0.0.0.0");
}
END_TEST

START_TEST(ip_forms)
{
    struct pc_ip ip;
    char buf[64];
    struct sockaddr_in s4;
    struct sockaddr_in6 s6;
    struct sockaddr su = {.sa_family = AF_UNIX};

    ck_assert(pc_ip_parse("192.0.2.7", &ip));
    ck_assert(pc_ip_is_v4(&ip));
    ck_assert_str_eq(pc_ip_format(&ip, buf, sizeof(buf)), "192.0.2.7");
    ck_assert(pc_ip_parse("::ffff:192.0.2.7", &ip));
    ck_assert(pc_ip_is_v4(&ip)); /* shown and matched as IPv4 */
    ck_assert_str_eq(pc_ip_format(&ip, buf, sizeof(buf)), "192.0.2.7");
    ck_assert(pc_ip_parse("2001:DB8::1", &ip));
    ck_assert(!pc_ip_is_v4(&ip));
    ck_assert_str_eq(pc_ip_format(&ip, buf, sizeof(buf)), "2001:db8::1");
    ck_assert(!pc_ip_parse("", &ip));
    ck_assert(!pc_ip_parse("1.2.3", &ip));
    ck_assert(!pc_ip_parse("[::1]", &ip));

    memset(&s4, 0, sizeof(s4));
    s4.sin_family = AF_INET;
    inet_pton(AF_INET, "198.51.100.4", &s4.sin_addr);
    ck_assert(pc_ip_from_sockaddr((struct sockaddr *)&s4, &ip));
    ck_assert_str_eq(pc_ip_format(&ip, buf, sizeof(buf)), "198.51.100.4");
    memset(&s6, 0, sizeof(s6));
    s6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "::ffff:198.51.100.4", &s6.sin6_addr);
    struct pc_ip ip6;
    ck_assert(pc_ip_from_sockaddr((struct sockaddr *)&s6, &ip6));
    ck_assert(memcmp(ip.b, ip6.b, 16) == 0); /* the same client either way */
    ck_assert(!pc_ip_from_sockaddr(&su, &ip));
}
END_TEST

START_TEST(lists)
{
    struct pc_cidr_list l;
    struct pc_ip ip;

    pc_cidr_list_init(&l);
    ck_assert(pc_ip_parse("127.0.0.1", &ip));
    ck_assert(!pc_cidr_list_match(&l, &ip)); /* empty: nobody */
    ck_assert(pc_cidr_list_add(&l, "192.0.2.0/24"));
    ck_assert(!pc_cidr_list_add(&l, "not-a-net"));
    ck_assert_uint_eq(l.n, 1);
    /* Enough entries to grow the list more than once. */
    for (int i = 0; i < 20; i++) {
        char net[32];
        snprintf(net, sizeof(net), "10.%d.0.0/16", i);
        ck_assert(pc_cidr_list_add(&l, net));
    }
    ck_assert(pc_cidr_list_add(&l, "::1/128"));
    ck_assert_uint_eq(l.n, 22);
    static const struct {
        const char *ip;
        int match;
    } t[] = {{"192.0.2.9", 1},       {"10.19.1.1", 1}, {"10.20.1.1", 0},  {"::1", 1},
             {"::ffff:10.0.0.1", 1}, {"127.0.0.1", 0}, {"2001:db8::1", 0}};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        ck_assert(pc_ip_parse(t[i].ip, &ip));
        ck_assert_msg(pc_cidr_list_match(&l, &ip) == (bool)t[i].match, "%s", t[i].ip);
    }
    pc_cidr_list_free(&l);
    ck_assert_uint_eq(l.n, 0);
    ck_assert(!pc_cidr_list_match(&l, &ip));
}
END_TEST

/* main - run the suite */
int main(void)
{
    Suite *s = suite_create("cidr");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, parse_bad);
    tcase_add_test(tc, match_table);
    tcase_add_test(tc, host_bits_cleared);
    tcase_add_test(tc, ip_forms);
    tcase_add_test(tc, lists);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
