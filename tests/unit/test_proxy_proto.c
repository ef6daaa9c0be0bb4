/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_proxy_proto 1 - PROXY protocol v1/v2 parser and writer
 * DESCRIPTION
 *	Vectors built by hand from the HAProxy specification: v1 lines (TCP4,
 *	TCP6, UNKNOWN, the 107-byte worst case) and every way the text form
 *	can be wrong (leading zeros, double spaces, bare CR or LF, family
 *	mismatch, over-long line); v2 headers byte by byte (IPv4, IPv6 with
 *	AUTHORITY, NOOP, custom and SSL TLVs, LOCAL with an address block,
 *	UNSPEC, AF_UNIX and UDP falling back to the connection's addresses,
 *	CRC32C right and wrong) and every field out of range. Each valid
 *	vector is also fed one byte at a time: every prefix must say "more".
 *	The writers' output reads back to the same addresses and TLS facts.
 * SEE ALSO
 *	HAProxy doc/proxy-protocol.txt; RFC 4960 appendix B
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filters/filter.h"
#include "gateway/conf.h"
#include "lib/proxy_proto.h"

/* addr_text - "a.b.c.d:port" or "[v6]:port" of a parsed address */
static const char *addr_text(const struct sockaddr_storage *ss, char *buf, size_t size)
{
    char t[INET6_ADDRSTRLEN];

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        snprintf(buf, size, "%s:%u", inet_ntop(AF_INET, &s4->sin_addr, t, sizeof(t)),
                 ntohs(s4->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        snprintf(buf, size, "[%s]:%u", inet_ntop(AF_INET6, &s6->sin6_addr, t, sizeof(t)),
                 ntohs(s6->sin6_port));
    } else {
        snprintf(buf, size, "(none)");
    }
    return buf;
}

/* parse_all - parse, and check every shorter prefix says MORE */
static enum pc_pp_status parse_all(const uint8_t *b, size_t len, size_t max, struct pc_pp_info *in,
                                   const char **why)
{
    enum pc_pp_status st = pc_pp_parse(b, len, max, in, why);

    if (st == PC_PP_OK)
        for (size_t k = 0; k < in->hdrlen; k++) {
            struct pc_pp_info tmp;
            const char *w;
            /* An exact-size copy: ASan sees any read past the prefix. */
            uint8_t *cp = malloc(k ? k : 1);
            memcpy(cp, b, k);
            enum pc_pp_status s = pc_pp_parse(cp, k, max, &tmp, &w);
            free(cp);
            ck_assert_msg(s == PC_PP_MORE, "prefix of %zu bytes: %d (%s)", k, s, w);
        }
    return st;
}

START_TEST(v1_vectors)
{
    static const struct {
        const char *in;
        enum pc_pp_status st;
        const char *src, *dst; /* NULL: local */
        const char *why;       /* part of the error */
    } t[] = {
        {"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nEHLO x\r\n", PC_PP_OK,
         "192.168.0.1:56324", "192.168.0.11:443", NULL},
        {"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", PC_PP_OK, "0.0.0.0:0",
         "255.255.255.255:65535", NULL},
        {"PROXY TCP6 2001:db8::1 2001:db8::2 1 25\r\n", PC_PP_OK, "[2001:db8::1]:1",
         "[2001:db8::2]:25", NULL},
        {"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
         "FFFF:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
         PC_PP_OK, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
         "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", NULL},
        {"PROXY UNKNOWN\r\n", PC_PP_OK, NULL, NULL, NULL},
        /* The 107-byte worst case of section 2.1. */
        {"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
         "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
         PC_PP_OK, NULL, NULL, NULL},
        {"PROXY UNKNOWN whatever  follows\r\n", PC_PP_OK, NULL, NULL, NULL},
        {"PROXY TCP4 192.168.0.01 1.2.3.4 1 2\r\n", PC_PP_ERROR, 0, 0, "bad IPv4"},
        {"PROXY TCP4 256.1.1.1 1.2.3.4 1 2\r\n", PC_PP_ERROR, 0, 0, "bad IPv4"},
        {"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", PC_PP_ERROR, 0, 0, "bad IPv4"},
        {"PROXY TCP4 1.2.3.4.5 1.2.3.4 1 2\r\n", PC_PP_ERROR, 0, 0, "bad IPv4"},
        {"PROXY TCP4 1.2.3.4 1.2.3.4 080 25\r\n", PC_PP_ERROR, 0, 0, "bad port"},
        {"PROXY TCP4 1.2.3.4 1.2.3.4 65536 25\r\n", PC_PP_ERROR, 0, 0, "bad port"},
        {"PROXY TCP4 1.2.3.4 1.2.3.4 -1 25\r\n", PC_PP_ERROR, 0, 0, "bad port"},
        {"PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n", PC_PP_ERROR, 0, 0, "exactly one space"},
        {"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n", PC_PP_ERROR, 0, 0, "exactly one space"},
        {"PROXY  TCP4 1.2.3.4 1.2.3.4 1 2\r\n", PC_PP_ERROR, 0, 0, "exactly one space"},
        {"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n", PC_PP_ERROR, 0, 0, "LF without CR"},
        {"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX", PC_PP_ERROR, 0, 0, "CR without LF"},
        {"PROXY TCP4 2001:db8::1 1.2.3.4 1 2\r\n", PC_PP_ERROR, 0, 0, "bad IPv4"},
        {"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", PC_PP_ERROR, 0, 0, "bad IPv6"},
        {"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n", PC_PP_ERROR, 0, 0, "TCP4, TCP6 or UNKNOWN"},
        {"PROXY tcp4 1.2.3.4 1.2.3.4 1 2\r\n", PC_PP_ERROR, 0, 0, "TCP4, TCP6 or UNKNOWN"},
        {"PROXY\r\n", PC_PP_ERROR, 0, 0, "not a PROXY"},
        {"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n", PC_PP_ERROR, 0, 0, "two ports"},
        {"PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n", PC_PP_ERROR, 0, 0, "two ports"},
        {"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", PC_PP_ERROR, 0, 0, "not a PROXY"},
        {"EHLO client.example\r\n", PC_PP_ERROR, 0, 0, "not a PROXY"},
        {"GET / HTTP/1.0\r\n", PC_PP_ERROR, 0, 0, "not a PROXY"},
        {"PROXY TCP4 1.2.3.4\t1.2.3.4 1 2\r\n", PC_PP_ERROR, 0, 0, "not printable"},
        {"PROXY TCP4 1.2.3.4 1.2.3.4 1 2", PC_PP_MORE, 0, 0, NULL},
        {"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r", PC_PP_MORE, 0, 0, NULL},
        {"PRO", PC_PP_MORE, 0, 0, NULL},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pc_pp_info in;
        const char *why;
        char a[80], b[80];
        enum pc_pp_status st = parse_all((const uint8_t *)t[i].in, strlen(t[i].in), 0, &in, &why);
        ck_assert_msg(st == t[i].st, "%zu: %s: %d (%s)", i, t[i].in, st, why);
        if (st == PC_PP_ERROR)
            ck_assert_msg(strstr(why, t[i].why) != NULL, "%zu: %s: %s", i, t[i].in, why);
        if (st != PC_PP_OK)
            continue;
        ck_assert_int_eq(in.version, 1);
        ck_assert_uint_eq(in.hdrlen, (size_t)(strstr(t[i].in, "\r\n") - t[i].in) + 2);
        ck_assert(in.local == (t[i].src == NULL));
        if (t[i].src) {
            ck_assert_str_eq(addr_text(&in.src, a, sizeof(a)), t[i].src);
            ck_assert_str_eq(addr_text(&in.dst, b, sizeof(b)), t[i].dst);
        }
    }
    /* 107 bytes without CRLF: invalid; 106: maybe still a line. */
    char longl[200];
    memset(longl, 'f', sizeof(longl));
    memcpy(longl, "PROXY UNKNOWN ", 14);
    struct pc_pp_info in;
    const char *why;
    ck_assert_int_eq(pc_pp_parse((uint8_t *)longl, 106, 0, &in, &why), PC_PP_MORE);
    ck_assert_int_eq(pc_pp_parse((uint8_t *)longl, 107, 0, &in, &why), PC_PP_ERROR);
    longl[105] = '\r', longl[106] = '\n';
    ck_assert_int_eq(pc_pp_parse((uint8_t *)longl, 107, 0, &in, &why), PC_PP_OK);
    longl[105] = 'f', longl[106] = '\r', longl[107] = '\n';
    ck_assert_int_eq(pc_pp_parse((uint8_t *)longl, 108, 0, &in, &why), PC_PP_ERROR);
    /* A caller's bound shorter than the line. */
    const char *l = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    ck_assert_int_eq(pc_pp_parse((const uint8_t *)l, strlen(l), 20, &in, &why), PC_PP_ERROR);
}
END_TEST

/* v2 - build a header: sig, ver_cmd, fam, then body (its length filled in) */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body, size_t blen)
{
    static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
    memcpy(out, sig, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(blen >> 8);
    out[15] = (uint8_t)blen;
    if (blen)
        memcpy(out + 16, body, blen);
    return 16 + blen;
}

static const uint8_t v4body[] = {192, 0, 2, 1, 198, 51, 100, 2, 0x04, 0xD2, 0x00, 0x19};

START_TEST(v2_vectors)
{
    uint8_t h[4096], body[2048];
    struct pc_pp_info in;
    const char *why;
    char a[80];

    /* TCP over IPv4, then bytes of the SMTP session that are not ours. */
    size_t n = v2(h, 0x21, 0x11, v4body, sizeof(v4body));
    memcpy(h + n, "EHLO", 4);
    ck_assert_int_eq(parse_all(h, n + 4, 0, &in, &why), PC_PP_OK);
    ck_assert_int_eq(in.version, 2);
    ck_assert_uint_eq(in.hdrlen, 28);
    ck_assert(!in.local);
    ck_assert_str_eq(addr_text(&in.src, a, sizeof(a)), "192.0.2.1:1234");
    ck_assert_str_eq(addr_text(&in.dst, a, sizeof(a)), "198.51.100.2:25");
    ck_assert(!in.tls.present);

    /* TCP over IPv6 with AUTHORITY, NOOP, a custom TLV and SSL with sub-TLVs. */
    size_t b = 0;
    uint8_t s6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 1},
            d6[16] = {0x20, 0x01, 0x0d, 0xb8, [15] = 2};
    memcpy(body, s6, 16), memcpy(body + 16, d6, 16);
    body[32] = 0xC3, body[33] = 0x50, body[34] = 0, body[35] = 25;
    b = 36;
    const uint8_t tlvs[] = {0x02, 0,    10,
                            'm',  'x',  '.',
                            'e',  'x',  'a',
                            'm',  'p',  'l',
                            'e', /* AUTHORITY */
                            0x04, 0,    3,
                            0,    0,    0, /* NOOP */
                            0xE0, 0,    2,
                            0xff, 0x00,                   /* custom: skipped */
                            0x20, 0,    5 + 10 + 17 + 25, /* SSL */
                            0x07, 0,    0,
                            0,    0, /* client, verify=0 */
                            0x21, 0,    7,
                            'T',  'L',  'S',
                            'v',  '1',  '.',
                            '3',  0x22, 0,
                            14,   'c',  'l',
                            'i',  'e',  'n',
                            't',  '.',  'e',
                            'x',  'a',  'm',
                            'p',  'l',  'e',
                            0x23, 0,    22,
                            'T',  'L',  'S',
                            '_',  'A',  'E',
                            'S',  '_',  '2',
                            '5',  '6',  '_',
                            'G',  'C',  'M',
                            '_',  'S',  'H',
                            'A',  '3',  '8',
                            '4'};
    memcpy(body + b, tlvs, sizeof(tlvs));
    b += sizeof(tlvs);
    n = v2(h, 0x21, 0x21, body, b);
    ck_assert_int_eq(parse_all(h, n, 0, &in, &why), PC_PP_OK);
    ck_assert_str_eq(addr_text(&in.src, a, sizeof(a)), "[2001:db8::1]:50000");
    ck_assert_str_eq(addr_text(&in.dst, a, sizeof(a)), "[2001:db8::2]:25");
    ck_assert_str_eq(in.authority, "mx.example");
    ck_assert(in.tls.present && in.tls.verified);
    ck_assert_uint_eq(in.tls.client, 7);
    ck_assert_str_eq(in.tls.version, "TLSv1.3");
    ck_assert_str_eq(in.tls.cn, "client.example");
    ck_assert_str_eq(in.tls.cipher, "TLS_AES_256_GCM_SHA384");
    /* The same with verify != 0: a certificate that did not verify. */
    body[36 + 13 + 6 + 5 + 3 + 1 + 3] = 1;
    ck_assert_int_eq(parse_all(h, v2(h, 0x21, 0x21, body, b), 0, &in, &why), PC_PP_OK);
    ck_assert(in.tls.present && !in.tls.verified);

    /* LOCAL with an address block anyway: skipped, the connection's addresses are used. */
    n = v2(h, 0x20, 0x11, v4body, sizeof(v4body));
    ck_assert_int_eq(parse_all(h, n, 0, &in, &why), PC_PP_OK);
    ck_assert(in.local);
    ck_assert_uint_eq(in.hdrlen, 28);
    ck_assert_int_eq(parse_all(h, v2(h, 0x20, 0x00, NULL, 0), 0, &in, &why), PC_PP_OK);
    ck_assert(in.local && in.hdrlen == 16);
    /* PROXY with UNSPEC, AF_UNIX or UDP: valid, not served, fall back. */
    ck_assert_int_eq(parse_all(h, v2(h, 0x21, 0x00, NULL, 0), 0, &in, &why), PC_PP_OK);
    ck_assert(in.local);
    memset(body, 'u', 216);
    ck_assert_int_eq(parse_all(h, v2(h, 0x21, 0x31, body, 216), 0, &in, &why), PC_PP_OK);
    ck_assert(in.local);
    ck_assert_int_eq(parse_all(h, v2(h, 0x21, 0x12, v4body, sizeof(v4body)), 0, &in, &why),
                     PC_PP_OK);
    ck_assert(in.local);

    /* CRC32C: the checksum of the header with the field zeroed. */
    memcpy(body, v4body, 12);
    uint8_t crc_tlv[7] = {0x03, 0, 4, 0, 0, 0, 0};
    memcpy(body + 12, crc_tlv, 7);
    n = v2(h, 0x21, 0x11, body, 19);
    uint32_t c = pc_pp_crc32c(h, n);
    h[n - 4] = (uint8_t)(c >> 24), h[n - 3] = (uint8_t)(c >> 16), h[n - 2] = (uint8_t)(c >> 8),
          h[n - 1] = (uint8_t)c;
    ck_assert_int_eq(parse_all(h, n, 0, &in, &why), PC_PP_OK);
    h[16] ^= 1; /* the source address changed on the way */
    ck_assert_int_eq(pc_pp_parse(h, n, 0, &in, &why), PC_PP_ERROR);
    ck_assert_str_eq(why, "v2: CRC32C mismatch");

    /* Errors, each as soon as the bytes show it. */
    static const struct {
        uint8_t ver_cmd, fam;
        const uint8_t *body;
        size_t blen;
        const char *why;
    } bad[] = {
        {0x11, 0x11, v4body, 12, "version is not 2"},
        {0x31, 0x11, v4body, 12, "version is not 2"},
        {0x22, 0x11, v4body, 12, "command"},
        {0x2F, 0x11, v4body, 12, "command"},
        {0x21, 0x41, v4body, 12, "unknown address family"},
        {0x21, 0x13, v4body, 12, "unknown address family"},
        {0x21, 0x11, v4body, 8, "address block shorter"},
        {0x21, 0x21, v4body, 12, "address block shorter"},
        {0x21, 0x11, (const uint8_t *)"\xc0\0\2\1\xc6\x33\x64\2\4\xd2\0\x19\x04\0", 14,
         "truncated TLV"},
        {0x21, 0x11, (const uint8_t *)"\xc0\0\2\1\xc6\x33\x64\2\4\xd2\0\x19\x04\0\x05\0", 16,
         "TLV longer than the header"},
        {0x21, 0x11, (const uint8_t *)"\xc0\0\2\1\xc6\x33\x64\2\4\xd2\0\x19\x20\0\x04\1\0\0\0", 19,
         "SSL TLV shorter"},
        {0x21, 0x11,
         (const uint8_t *)"\xc0\0\2\1\xc6\x33\x64\2\4\xd2\0\x19\x20\0\x08\1\0\0\0\0\x21\0\x09", 23,
         "sub-TLV longer"},
        {0x21, 0x11,
         (const uint8_t *)"\xc0\0\2\1\xc6\x33\x64\2\4\xd2\0\x19\x20\0\x09\1\0\0\0\0\x22\0\x01\n",
         24, "control characters"},
        {0x21, 0x11, (const uint8_t *)"\xc0\0\2\1\xc6\x33\x64\2\4\xd2\0\x19\x03\0\x02\0\0", 17,
         "CRC32C TLV is not 4"},
        {0x21, 0x11, (const uint8_t *)"\xc0\0\2\1\xc6\x33\x64\2\4\xd2\0\x19\x02\0\x01\x7f", 16,
         "AUTHORITY"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = v2(h, bad[i].ver_cmd, bad[i].fam, bad[i].body, bad[i].blen);
        ck_assert_msg(pc_pp_parse(h, n, 0, &in, &why) == PC_PP_ERROR, "%zu", i);
        ck_assert_msg(strstr(why, bad[i].why) != NULL, "%zu: %s", i, why);
    }
    /* A UNIQUE_ID over 128 bytes. */
    memcpy(body, v4body, 12);
    body[12] = 0x05, body[13] = 0, body[14] = 129;
    memset(body + 15, 'i', 129);
    ck_assert_int_eq(pc_pp_parse(h, v2(h, 0x21, 0x11, body, 12 + 3 + 129), 0, &in, &why),
                     PC_PP_ERROR);
    body[14] = 128;
    ck_assert_int_eq(pc_pp_parse(h, v2(h, 0x21, 0x11, body, 12 + 3 + 128), 0, &in, &why), PC_PP_OK);
    ck_assert_uint_eq(in.unique_id_len, 128);
    /* Longer than the bound: refused from the 16 fixed bytes, before the rest arrives. */
    n = v2(h, 0x21, 0x11, body, 2000 - 16);
    ck_assert_int_eq(pc_pp_parse(h, 16, 0, &in, &why), PC_PP_ERROR);
    ck_assert_str_eq(why, "v2: header longer than allowed");
    ck_assert_int_eq(pc_pp_parse(h, 16, 4096, &in, &why), PC_PP_MORE);
    /* A broken signature, at the byte that differs. */
    n = v2(h, 0x21, 0x11, v4body, 12);
    h[4] = 0x01;
    ck_assert_int_eq(pc_pp_parse(h, 5, 0, &in, &why), PC_PP_ERROR);
    ck_assert_int_eq(pc_pp_parse(h, 4, 0, &in, &why), PC_PP_MORE);
    /* The version byte is checked as soon as it is there. */
    n = v2(h, 0x11, 0x11, v4body, 12);
    ck_assert_int_eq(pc_pp_parse(h, 13, 0, &in, &why), PC_PP_ERROR);
}
END_TEST

START_TEST(crc32c_check_value)
{
    /* RFC 3720 / iSCSI check value of "123456789". */
    ck_assert_uint_eq(pc_pp_crc32c((const uint8_t *)"123456789", 9), 0xE3069283u);
}
END_TEST

/* sa4 - an AF_INET address */
static struct sockaddr_storage sa(const char *ip, unsigned port)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        inet_pton(AF_INET6, ip, &s6->sin6_addr);
        s6->sin6_port = htons((uint16_t)port);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        inet_pton(AF_INET, ip, &s4->sin_addr);
        s4->sin_port = htons((uint16_t)port);
    }
    return ss;
}

START_TEST(writers_round_trip)
{
    static const struct {
        const char *src, *dst, *v1, *src_back, *dst_back;
    } t[] = {
        {"192.0.2.7", "198.51.100.1", "PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n",
         "192.0.2.7:40000", "198.51.100.1:25"},
        {"2001:db8::7", "2001:db8::25", "PROXY TCP6 2001:db8::7 2001:db8::25 40000 25\r\n",
         "[2001:db8::7]:40000", "[2001:db8::25]:25"},
        /* IPv4-mapped on both sides is IPv4 on the wire. */
        {"::ffff:192.0.2.7", "::ffff:198.51.100.1",
         "PROXY TCP4 192.0.2.7 198.51.100.1 40000 25\r\n", "192.0.2.7:40000", "198.51.100.1:25"},
        /* Mixed families: both as IPv6. */
        {"192.0.2.7", "2001:db8::25", "PROXY TCP6 ::ffff:192.0.2.7 2001:db8::25 40000 25\r\n",
         "[::ffff:192.0.2.7]:40000", "[2001:db8::25]:25"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct sockaddr_storage s = sa(t[i].src, 40000), d = sa(t[i].dst, 25);
        char line[PC_PP_V1_MAX + 1], a[80];
        uint8_t bin[1024];
        struct pc_pp_info in;
        const char *why;
        int n = pc_pp_write_v1(line, sizeof(line), (struct sockaddr *)&s, (struct sockaddr *)&d);
        ck_assert_int_gt(n, 0);
        ck_assert_str_eq(line, t[i].v1);
        ck_assert_int_eq(pc_pp_parse((uint8_t *)line, (size_t)n, 0, &in, &why), PC_PP_OK);
        ck_assert_str_eq(addr_text(&in.src, a, sizeof(a)), t[i].src_back);
        ck_assert_str_eq(addr_text(&in.dst, a, sizeof(a)), t[i].dst_back);
        struct pc_pp_tls tls = {.present = true, .client = PC_PP2_CLIENT_SSL, .verified = false};
        snprintf(tls.version, sizeof(tls.version), "TLSv1.2");
        snprintf(tls.cipher, sizeof(tls.cipher), "ECDHE-RSA-AES128-GCM-SHA256");
        n = pc_pp_write_v2(bin, sizeof(bin), (struct sockaddr *)&s, (struct sockaddr *)&d, &tls);
        ck_assert_int_gt(n, 16);
        ck_assert_int_eq(parse_all(bin, (size_t)n, 0, &in, &why), PC_PP_OK);
        ck_assert_uint_eq(in.hdrlen, (size_t)n);
        ck_assert_str_eq(addr_text(&in.src, a, sizeof(a)), t[i].src_back);
        ck_assert_str_eq(addr_text(&in.dst, a, sizeof(a)), t[i].dst_back);
        ck_assert(in.tls.present && !in.tls.verified);
        ck_assert_str_eq(in.tls.version, "TLSv1.2");
        ck_assert_str_eq(in.tls.cipher, "ECDHE-RSA-AES128-GCM-SHA256");
        ck_assert_str_eq(in.tls.cn, "");
    }
    /* No addresses: UNKNOWN and LOCAL. */
    char line[PC_PP_V1_MAX + 1];
    uint8_t bin[64];
    struct pc_pp_info in;
    const char *why;
    ck_assert_int_eq(pc_pp_write_v1(line, sizeof(line), NULL, NULL), 15);
    ck_assert_str_eq(line, "PROXY UNKNOWN\r\n");
    ck_assert_int_eq(pc_pp_write_v2(bin, sizeof(bin), NULL, NULL, NULL), 16);
    ck_assert_int_eq(pc_pp_parse(bin, 16, 0, &in, &why), PC_PP_OK);
    ck_assert(in.local);
    /* Too small an output buffer. */
    struct sockaddr_storage s = sa("2001:db8::7", 1), d = sa("2001:db8::8", 2);
    ck_assert_int_eq(pc_pp_write_v1(line, 20, (struct sockaddr *)&s, (struct sockaddr *)&d), -1);
    ck_assert_int_eq(pc_pp_write_v2(bin, 40, (struct sockaddr *)&s, (struct sockaddr *)&d, NULL),
                     -1);
}
END_TEST

START_TEST(listener_config)
{
    static const struct {
        const char *opts, *want; /* want NULL: accepted */
    } t[] = {
        {"proxy_protocol = true proxy_from = { \"10.0.0.5/32\", \"::1\" }", NULL},
        {"proxy_protocol = true proxy_from = { \"10.0.0.5/32\" } proxy_timeout = 3s", NULL},
        {"proxy_protocol = true", "proxy_protocol needs proxy_from"},
        {"proxy_protocol = true proxy_from = { \"10.0.0.5/33\" }", "proxy_from: bad network"},
        {"proxy_protocol = true proxy_from = { \"10.0.0.5\" } proxy_timeout = 500ms",
         "proxy_timeout must be a duration from 1s to 60s"},
        {"proxy_protocol = true proxy_from = { \"10.0.0.5\" } proxy_timeout = 2m",
         "proxy_timeout must be"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char path[] = "/tmp/pc-test-pp-XXXXXX", text[512];
        int fd = mkstemp(path);
        struct pc_err err;
        memset(&err, 0, sizeof(err));
        int n = snprintf(text, sizeof(text),
                         "listener \"in\" {\n address = \"127.0.0.1:1\"\n %s\n}\n", t[i].opts);
        ck_assert(fd >= 0 && write(fd, text, (size_t)n) == n);
        close(fd);
        struct pc_conf *c = pc_conf_load(path, &err);
        unlink(path);
        if (t[i].want == NULL) {
            ck_assert_msg(c != NULL, "%s: %s", t[i].opts, err.msg);
            ck_assert(c->listeners[0].proxy_protocol);
            ck_assert_uint_ge(c->listeners[0].proxy_timeout_ms, 3000);
            pc_conf_unref(c);
        } else {
            if (c)
                pc_conf_unref(c);
            ck_assert_msg(c == NULL, "accepted %s", t[i].opts);
            ck_assert_msg(strstr(err.msg, t[i].want) && strncmp(err.msg, path, strlen(path)) == 0,
                          "%s", err.msg);
        }
    }
}
END_TEST

/* main - run the suite */
int main(void)
{
    Suite *s = suite_create("proxy_proto");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, v1_vectors);
    tcase_add_test(tc, v2_vectors);
    tcase_add_test(tc, crc32c_check_value);
    tcase_add_test(tc, writers_round_trip);
    tcase_add_test(tc, listener_config);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
