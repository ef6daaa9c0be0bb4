/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_dnschecks 1 - DNS helpers, PTR sanitiser, DNSBL sites, SPF syntax and results
 * DESCRIPTION
 *	Tables of cases for core/dns.c's helpers (reverse names, RDATA
 *	decoding, the host name sanitiser that stands between hostile PTR
 *	data and our logs), policy/dnsbl_sites.c's site parser and matcher, and
 *	filters/spf.c's strict record syntax and libspf2 result mapping. The
 *	filters' sources are included to reach their static functions.
 * SEE ALSO
 *	RFC 1035, RFC 5782, RFC 7208
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filters/dnsbl.c"
#include "filters/spf.c"

/* reverse names */
START_TEST(test_reverse)
{
    static const struct {
        const char *ip, *zone, *want;
    } t[] = {
        {"192.0.2.1", NULL, "1.2.0.192.in-addr.arpa"},
        {"127.0.0.2", "zen.example", "2.0.0.127.zen.example"},
        {"::ffff:10.1.2.3", NULL, "3.2.1.10.in-addr.arpa"},
        {"2001:db8::1", NULL,
         "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"},
        {"2001:db8::1", "bl.test",
         "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test"},
    };
    char buf[PC_DNS_NAME_MAX];
    struct pc_ip ip;

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        ck_assert(pc_ip_parse(t[i].ip, &ip));
        ck_assert(pc_dns_reverse(&ip, t[i].zone, buf, sizeof(buf)));
        ck_assert_str_eq(buf, t[i].want);
    }
    ck_assert(pc_ip_parse("2001:db8::1", &ip));
    ck_assert(!pc_dns_reverse(&ip, NULL, buf, 40)); /* too small: refused, not truncated */
}
END_TEST

/* wire names, hostile ones included, and the sanitiser */
START_TEST(test_ptr_names)
{
    static const struct {
        const char *wire;
        size_t len;
        int rc;
        const char *text, *clean;
    } t[] = {
        {"\4mail\7example\3com\0", 18, 16, "mail.example.com", "mail.example.com"},
        {"\4MAIL\7Example\3COM\0", 18, 16, "MAIL.Example.COM", "mail.example.com"},
        {"\0", 1, 0, "", "unknown"},
        {"\12evil\r\nhost\3com\0", 16, -2, "evil\\013\\010host.com", "unknown"},
        {"\11a\0b.c\\d e\0", 11, -2, "a\\000b\\046c\\092d\\032e", "unknown"},
        {"\4mail\7example\3com", 17, -1, NULL, NULL}, /* no root label */
        {"\77abc\0", 5, -1, NULL, NULL},              /* label overruns */
        {"\300\14", 2, -1, NULL, NULL},               /* compression pointer */
        {"\3-ab\3com\0", 9, 7, "-ab.com", "unknown"}, /* leading hyphen */
        {"\3a_b\3com\0", 9, 7, "a_b.com", "a_b.com"}, /* underscore tolerated */
        {"\003123\0", 5, 3, "123", "123"},
    };
    char buf[PC_DNS_NAME_MAX * 4], clean[PC_DNS_NAME_MAX];

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        int rc = pc_dns_rdata_name(t[i].wire, t[i].len, buf, sizeof(buf));
        if (t[i].rc == -1) {
            ck_assert_int_eq(rc, -1);
            continue;
        }
        ck_assert_msg(rc >= 0, "case %zu", i);
        ck_assert_str_eq(buf, t[i].text);
        pc_dns_hostname_clean(buf, (size_t)rc, clean, sizeof(clean));
        ck_assert_str_eq(clean, t[i].clean);
    }
    /* over-long: 5 labels of 63 bytes exceed 255 on the wire */
    char big[5 * 64 + 1];
    for (int l = 0; l < 5; l++) {
        big[l * 64] = 63;
        memset(big + l * 64 + 1, 'a', 63);
    }
    big[5 * 64] = 0;
    ck_assert_int_eq(pc_dns_rdata_name(big, sizeof(big), buf, sizeof(buf)), -1);
    /* the sanitiser's own limits */
    ck_assert_str_eq(pc_dns_hostname_clean("host.example.", 13, clean, sizeof(clean)),
                     "host.example");
    ck_assert_str_eq(pc_dns_hostname_clean("a\0b.com", 7, clean, sizeof(clean)), "unknown");
    ck_assert_str_eq(pc_dns_hostname_clean("a..b", 4, clean, sizeof(clean)), "unknown");
    ck_assert_str_eq(pc_dns_hostname_clean("", 0, clean, sizeof(clean)), "unknown");
}
END_TEST

/* TXT strings are joined without separators */
START_TEST(test_txt)
{
    char buf[64];

    ck_assert_int_eq(pc_dns_rdata_txt("\6v=spf1\4 -al\1l", 14, buf, sizeof(buf)), 11);
    ck_assert_str_eq(buf, "v=spf1 -all");
    ck_assert_int_eq(pc_dns_rdata_txt("", 0, buf, sizeof(buf)), 0);
    ck_assert_int_eq(pc_dns_rdata_txt("\7abc", 4, buf, sizeof(buf)), -1);
    ck_assert_int_eq(pc_dns_rdata_txt("\5abcde", 6, buf, 5), -1);
}
END_TEST

/* A and AAAA RDATA */
START_TEST(test_rdata_ip)
{
    struct pc_ip ip;
    char buf[64];

    ck_assert(pc_dns_rdata_ip(PC_DNS_T_A, "\177\0\0\2", 4, &ip));
    ck_assert_str_eq(pc_ip_format(&ip, buf, sizeof(buf)), "127.0.0.2");
    ck_assert(!pc_dns_rdata_ip(PC_DNS_T_A, "\177\0\0", 3, &ip));
    ck_assert(!pc_dns_rdata_ip(PC_DNS_T_AAAA, "\177\0\0\2", 4, &ip));
}
END_TEST

/* DNSBL site specs and return-code matching */
START_TEST(test_dnsbl_sites)
{
    static const struct {
        const char *spec;
        bool ok;
        const char *zone;
        int weight;
        const char *hit, *miss;
    } t[] = {
        {"zen.example=127.0.0.[2..11]*3", true, "zen.example", 3, "127.0.0.11", "127.0.0.12"},
        {"zen.example", true, "zen.example", 1, "127.0.0.99", "10.0.0.1"},
        {"bl.example*2", true, "bl.example", 2, "127.0.0.2", "192.0.2.1"},
        {"wl.example=127.0.[0..255].[1;3]*-2", true, "wl.example", -2, "127.0.9.3", "127.0.9.2"},
        {"any.example=127.0.0.*", true, "any.example", 1, "127.0.0.200", "127.0.1.1"},
        {"Caps.Example.=127.0.0.2", true, "caps.example", 1, "127.0.0.2", "127.0.0.3"},
        {"zen.example=127.0.0", false, NULL, 0, NULL, NULL},
        {"zen.example=127.0.0.[11..2]", false, NULL, 0, NULL, NULL},
        {"zen.example=127.0.0.256", false, NULL, 0, NULL, NULL},
        {"zen.example*x", false, NULL, 0, NULL, NULL},
        {"zen.example=127.0.0.2junk", false, NULL, 0, NULL, NULL},
        {"bad zone=127.0.0.2", false, NULL, 0, NULL, NULL},
        {"=127.0.0.2", false, NULL, 0, NULL, NULL},
    };
    static struct pc_dnsbl_sites l;

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        memset(&l, 0, sizeof(l));
        const char *why = pc_dnsbl_sites_add(&l, t[i].spec);
        ck_assert_msg((why == NULL) == t[i].ok, "%s: %s", t[i].spec, why ? why : "accepted");
        if (!t[i].ok) {
            ck_assert_uint_eq(l.nsites, 0);
            continue;
        }
        const struct pc_dnsbl_site *site = &l.sites[0];
        ck_assert_str_eq(site->zone, t[i].zone);
        ck_assert_int_eq(site->weight, t[i].weight);
        uint8_t a[4];
        ck_assert(inet_pton(AF_INET, t[i].hit, a) == 1);
        ck_assert_msg(pc_dnsbl_site_match(site, a), "%s should match %s", t[i].spec, t[i].hit);
        ck_assert(inet_pton(AF_INET, t[i].miss, a) == 1);
        ck_assert_msg(!pc_dnsbl_site_match(site, a), "%s should not match %s", t[i].spec,
                      t[i].miss);
    }
    /* Sites of one zone share its query; the list is bounded. */
    memset(&l, 0, sizeof(l));
    ck_assert_ptr_null(pc_dnsbl_sites_add(&l, "bl.example=127.0.0.2*2"));
    ck_assert_ptr_null(pc_dnsbl_sites_add(&l, "bl.example=127.0.0.3"));
    ck_assert_ptr_null(pc_dnsbl_sites_add(&l, "wl.example*-1"));
    ck_assert_uint_eq(l.nsites, 3);
    ck_assert_uint_eq(l.nzones, 2);
    ck_assert_uint_eq(l.sites[1].zi, 0);
    for (int i = 3; i < PC_DNSBL_MAX_SITES; i++)
        ck_assert_ptr_null(pc_dnsbl_sites_add(&l, "x.example"));
    ck_assert_str_eq(pc_dnsbl_sites_add(&l, "y.example"), "too many sites");
}
END_TEST

/* SPF record syntax: what RFC 7208 calls a permerror */
START_TEST(test_spf_syntax)
{
    static const struct {
        const char *rec;
        bool ok;
    } t[] = {
        {"v=spf1 -all", true},
        {"v=spf1", true},
        {"v=spf1 a mx ptr ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.example.com ~all", true},
        {"v=spf1 a:foo:bar/baz.example.com", true},
        {"v=spf1 a/24//64 mx:example.com/0", true},
        {"v=spf1 exists:%{i}.%{l1r-}.bl.example.com -all", true},
        {"v=spf1 redirect=_spf.example.com", true},
        {"v=spf1 foo.bar-baz=some%{s}value", true},
        {"v=spf1 a -all ", true},
        {"v=spf1 ip4:192.0.2.0/33", false},
        {"v=spf1 ip4:192.0.2.0/032", false},
        {"v=spf1 ip6:2001:db8::/129", false},
        {"v=spf1 ip4:192.0.2", false},
        {"v=spf1 a:1.2.3.4", false}, /* numeric top label */
        {"v=spf1 a:museum", false},  /* top label only */
        {"v=spf1 a:", false},
        {"v=spf1 all:foo", false},
        {"v=spf1 -all/8", false},
        {"v=spf1 exists:foo.example.com/24", false},
        {"v=spf1 redirect=a.example.com redirect=b.example.com", false},
        {"v=spf1 exp=a.example.com exp=b.example.com", false},
        {"v=spf1 =novalue", false},
        {"v=spf1 a:%{z}.example.com", false}, /* invalid macro letter */
        {"v=spf1 a:foo%.example.com", false}, /* bare percent */
        {"v=spf1 a:foo.example.com\r ptr", false},
        {"v=spf1 a:caf\xc3\xa9.example.com", false},
        {"v=spf1 unknown -all", false},
    };

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        ck_assert_msg(spf_record_ok(t[i].rec, strlen(t[i].rec)) == t[i].ok, "%s", t[i].rec);
    ck_assert(!spf_record_ok("v=spf1 a:x\0.example.com", 23));
    ck_assert(spf_is_record("V=SPF1 -all", 11));
    ck_assert(!spf_is_record("v=spf10 -all", 12));
}
END_TEST

/* CIDR length 0 said in terms libspf2 accepts, per client family */
START_TEST(test_spf_cidr0)
{
    static const struct {
        const char *rec;
        bool v4;
        const char *want; /* NULL: unchanged */
    } t[] = {
        {"v=spf1 ip4:1.2.3.4/0 -all", true, "v=spf1 ip4:0.0.0.0/1 ip4:128.0.0.0/1 -all"},
        {"v=spf1 -ip4:1.2.3.4/0", true, "v=spf1 -ip4:0.0.0.0/1 -ip4:128.0.0.0/1"},
        {"v=spf1 ip4:1.2.3.4/0 -all", false, "v=spf1 ip4:0.0.0.0/32 -all"},
        {"v=spf1 ip6:::1/0", false, "v=spf1 ip6:::/1 ip6:8000::/1"},
        {"v=spf1 ip6:::1/0", true, "v=spf1 ip6:::/128"},
        {"v=spf1 a/0 -all", true, "v=spf1 exists:%{d} -all"},
        {"v=spf1 ~a:e.example.com/0 -all", true, "v=spf1 ~exists:e.example.com -all"},
        {"v=spf1 a//0 -all", true, "v=spf1 a//128 -all"},
        {"v=spf1 mx/24//0", true, "v=spf1 mx/24//128"},
        {"v=spf1 a/0 -all", false, "v=spf1 a/32 -all"},
        {"v=spf1 mx/0//64", false, "v=spf1 mx/32//64"},
        {"v=spf1 mx/0 -all", true, NULL},  /* no equivalent: libspf2 refuses it */
        {"v=spf1 a//0 -all", false, NULL}, /* likewise */
        {"v=spf1 ip4:10.0.0.0/8 a/24", true, NULL},
        {"v=spf1 ip4:10.0.0.0/08", true, NULL},
    };
    char out[256];

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        long n = spf_rewrite_cidr0(t[i].rec, strlen(t[i].rec), t[i].v4, out, sizeof(out));
        if (t[i].want == NULL) {
            ck_assert_msg(n == -1, "%s -> %s", t[i].rec, out);
            continue;
        }
        ck_assert_msg(n >= 0, "%s unchanged", t[i].rec);
        ck_assert_str_eq(out, t[i].want);
        ck_assert_int_eq(n, (long)strlen(t[i].want));
    }
    ck_assert_int_eq(spf_rewrite_cidr0("v=spf1 ip4:1.2.3.4/0", 20, true, out, 16), -1);
}
END_TEST

/* libspf2 results, INVALID included, to ours */
START_TEST(test_spf_map)
{
    static const struct {
        SPF_result_t r;
        SPF_errcode_t e;
        enum pc_spf_result want;
    } t[] = {
        {SPF_RESULT_PASS, SPF_E_SUCCESS, PC_SPF_PASS},
        {SPF_RESULT_FAIL, SPF_E_SUCCESS, PC_SPF_FAIL},
        {SPF_RESULT_SOFTFAIL, SPF_E_SUCCESS, PC_SPF_SOFTFAIL},
        {SPF_RESULT_NEUTRAL, SPF_E_SUCCESS, PC_SPF_NEUTRAL},
        {SPF_RESULT_NONE, SPF_E_SUCCESS, PC_SPF_NONE},
        {SPF_RESULT_TEMPERROR, SPF_E_DNS_ERROR, PC_SPF_TEMPERROR},
        {SPF_RESULT_PERMERROR, SPF_E_SYNTAX, PC_SPF_PERMERROR},
        {SPF_RESULT_INVALID, SPF_E_DNS_ERROR, PC_SPF_TEMPERROR},
        {SPF_RESULT_INVALID, SPF_E_SYNTAX, PC_SPF_PERMERROR},
        {SPF_RESULT_INVALID, SPF_E_INVALID_CIDR, PC_SPF_PERMERROR},
        {SPF_RESULT_INVALID, SPF_E_SUCCESS, PC_SPF_PERMERROR},
    };

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        ck_assert_int_eq(spf_map(t[i].r, t[i].e), t[i].want);
    ck_assert_str_eq(pc_spf_result_names[PC_SPF_SOFTFAIL], "softfail");
}
END_TEST

struct calls {
    int n;
    enum pc_dns_status st;
};

/* count_cb - remember how often and how a query answered */
static void count_cb(void *arg, enum pc_dns_status st, const struct pc_dns_answer *a)
{
    struct calls *c = arg;

    (void)a;
    c->n++;
    c->st = st;
}

/* run_for - run the loop for ms milliseconds */
static void run_for(struct event_base *b, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    event_base_loopexit(b, &tv);
    event_base_dispatch(b);
}

/* The resolver: our timeout answers "try later"; a cancelled query never calls back. */
START_TEST(test_resolver_timeout_and_cancel)
{
    struct event_base *b = event_base_new();
    struct pc_err err = {{0}};
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    char ns[64];
    int fd = socket(AF_INET, SOCK_DGRAM, 0); /* a nameserver that never answers */

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    ck_assert(getsockname(fd, (struct sockaddr *)&sin, &len) == 0);
    snprintf(ns, sizeof(ns), "127.0.0.1:%u", ntohs(sin.sin_port));
    const char *nss[] = {ns};
    struct pc_dns *d = pc_dns_create(b, nss, 1, 300, &err);
    ck_assert_msg(d != NULL, "%s", err.msg);

    struct calls kept = {0}, cancelled = {0};
    struct pc_dns_query *q1 = pc_dns_lookup(d, "host.test", PC_DNS_T_A, count_cb, &kept);
    struct pc_dns_query *q2 = pc_dns_lookup(d, "other.test", PC_DNS_T_A, count_cb, &cancelled);
    ck_assert(q1 && q2);
    ck_assert_int_eq(kept.n, 0); /* never from inside pc_dns_lookup() */
    pc_dns_cancel(q2);
    run_for(b, 1200);
    ck_assert_int_eq(kept.n, 1);
    ck_assert_int_eq(kept.st, PC_DNS_TRYLATER);
    ck_assert_int_eq(cancelled.n, 0);
    /* freeing with a query outstanding: no callback either */
    pc_dns_lookup(d, "third.test", PC_DNS_T_A, count_cb, &cancelled);
    pc_dns_free(d);
    run_for(b, 50);
    ck_assert_int_eq(cancelled.n, 0);
    /* bad nameserver syntax is a configuration error */
    const char *bad[] = {"127.0.0.1:99999"};
    ck_assert(pc_dns_create(b, bad, 1, 300, &err) == NULL);
    ck_assert(strstr(err.msg, "99999") != NULL);
    close(fd);
    event_base_free(b);
}
END_TEST

/* suite - every case */
static Suite *suite(void)
{
    Suite *s = suite_create("dnschecks");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_reverse);
    tcase_add_test(tc, test_ptr_names);
    tcase_add_test(tc, test_txt);
    tcase_add_test(tc, test_rdata_ip);
    tcase_add_test(tc, test_dnsbl_sites);
    tcase_add_test(tc, test_spf_syntax);
    tcase_add_test(tc, test_spf_map);
    tcase_add_test(tc, test_spf_cidr0);
    tcase_add_test(tc, test_resolver_timeout_and_cancel);
    tcase_set_timeout(tc, 20);
    suite_add_tcase(s, tc);
    return s;
}

/* main - run the suite */
int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
