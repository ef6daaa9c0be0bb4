/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	proxy_proto 3 - PROXY protocol v1 and v2 headers: a bounded parser and a writer
 * DESCRIPTION
 *	See lib/proxy_proto.h. The parser decides from the first bytes which
 *	version it reads (section 2.2: the v2 signature, else "PROXY "),
 *	refuses anything else at the first byte that differs, and then checks
 *	the whole header exactly as the specification writes it: a receiver
 *	"must not try to guess", so nothing is tolerated.
 * SEE ALSO
 *	HAProxy, "The PROXY protocol" sections 2.1 (v1), 2.2 (v2), 2.2.1-2.2.7 (TLVs)
 */
#include "lib/proxy_proto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const uint8_t pp2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                    0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char pp1_sig[6] = "PROXY ";

/* crc32c_update - CRC32c (reflected polynomial 0x82F63B78), bit by bit: headers are small */
static uint32_t crc32c_update(uint32_t crc, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return crc;
}

/* pc_pp_crc32c - RFC 4960 appendix B checksum */
uint32_t pc_pp_crc32c(const uint8_t *buf, size_t len)
{
    return ~crc32c_update(0xFFFFFFFFu, buf, len);
}

/* v4_strict - "a.b.c.d", each 0..255 without leading zeros (section 2.1) */
static bool v4_strict(const char *s, struct in_addr *out)
{
    uint8_t b[4];

    for (int i = 0; i < 4; i++) {
        unsigned v = 0;
        int n = 0;
        if (i > 0 && *s++ != '.')
            return false;
        while (*s >= '0' && *s <= '9' && n < 4) {
            v = v * 10 + (unsigned)(*s++ - '0');
            n++;
        }
        if (n == 0 || n > 3 || v > 255 || (n > 1 && s[-n] == '0'))
            return false;
        b[i] = (uint8_t)v;
    }
    if (*s)
        return false;
    memcpy(out, b, 4);
    return true;
}

/* port_strict - decimal 0..65535 without leading zeros */
static bool port_strict(const char *s, uint16_t *out)
{
    unsigned long v = 0;
    size_t n = strlen(s);

    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > 65535)
        return false;
    *out = (uint16_t)v;
    return true;
}

/* set_v4 - fill a sockaddr_in */
static void set_v4(struct sockaddr_storage *ss, socklen_t *sl, const void *addr, uint16_t port)
{
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

    memset(ss, 0, sizeof(*ss));
    s4->sin_family = AF_INET;
    memcpy(&s4->sin_addr, addr, 4);
    s4->sin_port = htons(port);
    *sl = sizeof(*s4);
}

/* set_v6 - fill a sockaddr_in6 */
static void set_v6(struct sockaddr_storage *ss, socklen_t *sl, const void *addr, uint16_t port)
{
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    s6->sin6_family = AF_INET6;
    memcpy(&s6->sin6_addr, addr, 16);
    s6->sin6_port = htons(port);
    *sl = sizeof(*s6);
}

/* parse_v1 - section 2.1; buf starts with "PROXY " (or a prefix of it) */
static enum pc_pp_status parse_v1(const uint8_t *b, size_t len, size_t max, struct pc_pp_info *in,
                                  const char **why)
{
    size_t lim = len < max ? len : max, eol = 0;
    bool found = false;

    for (size_t i = 0; i < lim && !found; i++) {
        if (b[i] == '\n') {
            *why = "v1: LF without CR";
            return PC_PP_ERROR;
        }
        if (b[i] == '\r') {
            if (i + 1 >= max) {
                *why = "v1: no CRLF within the allowed length";
                return PC_PP_ERROR;
            }
            if (i + 1 >= len)
                return PC_PP_MORE;
            if (b[i + 1] != '\n') {
                *why = "v1: CR without LF";
                return PC_PP_ERROR;
            }
            eol = i;
            found = true;
        } else if (b[i] < 0x20 || b[i] > 0x7e) {
            *why = "v1: a byte that is not printable US-ASCII";
            return PC_PP_ERROR;
        }
    }
    if (!found) {
        if (len >= max) {
            *why = "v1: no CRLF within the allowed length";
            return PC_PP_ERROR;
        }
        return PC_PP_MORE;
    }
    char line[PC_PP_V1_MAX + 1], *tok[8];
    size_t ntok = 0;
    memcpy(line, b, eol);
    line[eol] = 0;
    /* Fields are separated by exactly one space: an empty field is an error. */
    for (char *p = line;;) {
        char *sp = strchr(p, ' ');
        if (ntok == 8) {
            *why = "v1: too many fields";
            return PC_PP_ERROR;
        }
        tok[ntok++] = p;
        if (sp == NULL)
            break;
        *sp = 0;
        p = sp + 1;
    }
    in->version = 1;
    in->hdrlen = eol + 2;
    if (ntok >= 2 && strcmp(tok[1], "UNKNOWN") == 0) {
        /* The receiver must ignore anything up to the CRLF and use the real addresses. */
        in->local = true;
        return PC_PP_OK;
    }
    for (size_t i = 0; i < ntok; i++)
        if (tok[i][0] == 0) {
            *why = "v1: fields must be separated by exactly one space";
            return PC_PP_ERROR;
        }
    if (ntok < 2 || (strcmp(tok[1], "TCP4") != 0 && strcmp(tok[1], "TCP6") != 0)) {
        *why = "v1: protocol must be TCP4, TCP6 or UNKNOWN";
        return PC_PP_ERROR;
    }
    if (ntok != 6) {
        *why = "v1: expected source, destination and two ports";
        return PC_PP_ERROR;
    }
    uint16_t sport, dport;
    if (!port_strict(tok[4], &sport) || !port_strict(tok[5], &dport)) {
        *why = "v1: bad port";
        return PC_PP_ERROR;
    }
    if (tok[1][3] == '4') {
        struct in_addr s, d;
        if (!v4_strict(tok[2], &s) || !v4_strict(tok[3], &d)) {
            *why = "v1: bad IPv4 address";
            return PC_PP_ERROR;
        }
        set_v4(&in->src, &in->srclen, &s, sport);
        set_v4(&in->dst, &in->dstlen, &d, dport);
    } else {
        struct in6_addr s, d;
        if (strlen(tok[2]) > 45 || strlen(tok[3]) > 45 || inet_pton(AF_INET6, tok[2], &s) != 1 ||
            inet_pton(AF_INET6, tok[3], &d) != 1) {
            *why = "v1: bad IPv6 address";
            return PC_PP_ERROR;
        }
        set_v6(&in->src, &in->srclen, &s, sport);
        set_v6(&in->dst, &in->dstlen, &d, dport);
    }
    return PC_PP_OK;
}

/* copy_text - a TLV string into dst: printable (UTF-8 allowed), NUL-terminated, cut to fit */
static bool copy_text(char *dst, size_t size, const uint8_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] < 0x20 || v[i] == 0x7f)
            return false;
    if (n >= size)
        n = size - 1;
    memcpy(dst, v, n);
    dst[n] = 0;
    return true;
}

/* parse_ssl - PP2_TYPE_SSL: client, verify, sub-TLVs (section 2.2.6) */
static bool parse_ssl(const uint8_t *v, size_t n, struct pc_pp_tls *t, const char **why)
{
    if (n < 5) {
        *why = "v2: SSL TLV shorter than 5 bytes";
        return false;
    }
    memset(t, 0, sizeof(*t));
    t->present = true;
    t->client = v[0];
    uint32_t verify = (uint32_t)v[1] << 24 | (uint32_t)v[2] << 16 | (uint32_t)v[3] << 8 | v[4];
    t->verified = verify == 0 && (t->client & (PC_PP2_CLIENT_CERT_CONN | PC_PP2_CLIENT_CERT_SESS));
    for (size_t i = 5; i < n;) {
        if (n - i < 3) {
            *why = "v2: truncated SSL sub-TLV";
            return false;
        }
        uint8_t type = v[i];
        size_t l = (size_t)v[i + 1] << 8 | v[i + 2];
        const uint8_t *val = v + i + 3;
        if (l > n - i - 3) {
            *why = "v2: SSL sub-TLV longer than the SSL TLV";
            return false;
        }
        bool ok = true;
        switch (type) {
        case PC_PP2_SUBTYPE_VERSION:
            ok = copy_text(t->version, sizeof(t->version), val, l);
            break;
        case PC_PP2_SUBTYPE_CN:
            ok = copy_text(t->cn, sizeof(t->cn), val, l);
            break;
        case PC_PP2_SUBTYPE_CIPHER:
            ok = copy_text(t->cipher, sizeof(t->cipher), val, l);
            break;
        case PC_PP2_SUBTYPE_SIG_ALG:
            ok = copy_text(t->sig_alg, sizeof(t->sig_alg), val, l);
            break;
        case PC_PP2_SUBTYPE_KEY_ALG:
            ok = copy_text(t->key_alg, sizeof(t->key_alg), val, l);
            break;
        default:
            break;
        }
        if (!ok) {
            *why = "v2: control characters in an SSL sub-TLV";
            return false;
        }
        i += 3 + l;
    }
    return true;
}

/* parse_tlvs - the TLVs after the address block; hdr is the whole header for CRC32C */
static bool parse_tlvs(const uint8_t *hdr, size_t off, size_t end, struct pc_pp_info *in,
                       const char **why)
{
    for (size_t i = off; i < end;) {
        if (end - i < 3) {
            *why = "v2: truncated TLV";
            return false;
        }
        uint8_t type = hdr[i];
        size_t l = (size_t)hdr[i + 1] << 8 | hdr[i + 2];
        const uint8_t *v = hdr + i + 3;
        if (l > end - i - 3) {
            *why = "v2: TLV longer than the header";
            return false;
        }
        switch (type) {
        case PC_PP2_TYPE_AUTHORITY:
            if (!copy_text(in->authority, sizeof(in->authority), v, l)) {
                *why = "v2: control characters in AUTHORITY";
                return false;
            }
            break;
        case PC_PP2_TYPE_CRC32C: {
            if (l != 4) {
                *why = "v2: CRC32C TLV is not 4 bytes";
                return false;
            }
            /* Section 2.2.3: the checksum of the header with this field zeroed. */
            static const uint8_t zero[4];
            uint32_t c = crc32c_update(0xFFFFFFFFu, hdr, (size_t)(v - hdr));
            c = crc32c_update(c, zero, 4);
            c = ~crc32c_update(c, v + 4, end - (size_t)(v + 4 - hdr));
            uint32_t got = (uint32_t)v[0] << 24 | (uint32_t)v[1] << 16 | (uint32_t)v[2] << 8 | v[3];
            if (c != got) {
                *why = "v2: CRC32C mismatch";
                return false;
            }
            break;
        }
        case PC_PP2_TYPE_UNIQUE_ID:
            if (l > 128) {
                *why = "v2: UNIQUE_ID longer than 128 bytes";
                return false;
            }
            in->unique_id_len = l;
            break;
        case PC_PP2_TYPE_SSL:
            if (!parse_ssl(v, l, &in->tls, why))
                return false;
            break;
        default: /* ALPN, NOOP, NETNS, custom and future types: skipped */
            break;
        }
        i += 3 + l;
    }
    return true;
}

/* parse_v2 - section 2.2; buf starts with the signature (or a prefix of it) */
static enum pc_pp_status parse_v2(const uint8_t *b, size_t len, size_t max, struct pc_pp_info *in,
                                  const char **why)
{
    if (len >= 13 && (b[12] & 0xF0) != 0x20) {
        *why = "v2: version is not 2";
        return PC_PP_ERROR;
    }
    if (len >= 13 && (b[12] & 0x0F) > 1) {
        *why = "v2: command is neither LOCAL nor PROXY";
        return PC_PP_ERROR;
    }
    if (len >= 14 && ((b[13] >> 4) > 3 || (b[13] & 0x0F) > 2)) {
        *why = "v2: unknown address family or transport";
        return PC_PP_ERROR;
    }
    if (len < PC_PP_V2_HDR)
        return PC_PP_MORE;
    size_t total = PC_PP_V2_HDR + ((size_t)b[14] << 8 | b[15]);
    if (total > max) {
        *why = "v2: header longer than allowed";
        return PC_PP_ERROR;
    }
    if (len < total)
        return PC_PP_MORE;
    in->version = 2;
    in->hdrlen = total;
    if ((b[12] & 0x0F) == 0) { /* LOCAL: the proxy's own connection (health check) */
        in->local = true;
        return PC_PP_OK;
    }
    unsigned fam = b[13] >> 4, proto = b[13] & 0x0F;
    size_t alen = fam == 1 ? 12 : fam == 2 ? 36 : fam == 3 ? 216 : 0;
    if (total - PC_PP_V2_HDR < alen) {
        *why = "v2: address block shorter than its family needs";
        return PC_PP_ERROR;
    }
    const uint8_t *a = b + PC_PP_V2_HDR;
    if (!parse_tlvs(b, PC_PP_V2_HDR + alen, total, in, why))
        return PC_PP_ERROR;
    if (proto != 1 || fam == 0 || fam == 3) {
        /* Unsupported but valid combinations fall back to the connection's addresses. */
        in->local = true;
        return PC_PP_OK;
    }
    if (fam == 1) {
        set_v4(&in->src, &in->srclen, a, (uint16_t)(a[8] << 8 | a[9]));
        set_v4(&in->dst, &in->dstlen, a + 4, (uint16_t)(a[10] << 8 | a[11]));
    } else {
        set_v6(&in->src, &in->srclen, a, (uint16_t)(a[32] << 8 | a[33]));
        set_v6(&in->dst, &in->dstlen, a + 16, (uint16_t)(a[34] << 8 | a[35]));
    }
    return PC_PP_OK;
}

/* pc_pp_parse - which version, then that version's parser */
enum pc_pp_status pc_pp_parse(const uint8_t *buf, size_t len, size_t max, struct pc_pp_info *info,
                              const char **why)
{
    static const char *none = "";

    *why = none;
    memset(info, 0, sizeof(*info));
    if (max == 0)
        max = PC_PP_MAX;
    if (max > PC_PP_ABS_MAX)
        max = PC_PP_ABS_MAX;
    if (len == 0)
        return PC_PP_MORE;
    if (buf[0] == pp2_sig[0]) {
        size_t n = len < sizeof(pp2_sig) ? len : sizeof(pp2_sig);
        if (memcmp(buf, pp2_sig, n) != 0) {
            *why = "not a PROXY protocol header (bad v2 signature)";
            return PC_PP_ERROR;
        }
        return parse_v2(buf, len, max, info, why);
    }
    size_t n = len < sizeof(pp1_sig) ? len : sizeof(pp1_sig);
    if (memcmp(buf, pp1_sig, n) != 0) {
        *why = "not a PROXY protocol header";
        return PC_PP_ERROR;
    }
    /* Section 2.1: the line, CRLF included, is at most 107 bytes. */
    return parse_v1(buf, len, max < PC_PP_V1_MAX ? max : PC_PP_V1_MAX, info, why);
}

/* as_v4 - the IPv4 address of an AF_INET or IPv4-mapped AF_INET6 address */
static bool as_v4(const struct sockaddr *sa, uint8_t out[4], uint16_t *port)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        memcpy(out, &s4->sin_addr, 4);
        *port = ntohs(s4->sin_port);
        return true;
    }
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    if (sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
        memcpy(out, s6->sin6_addr.s6_addr + 12, 4);
        *port = ntohs(s6->sin6_port);
        return true;
    }
    return false;
}

/* as_v6 - the address as 16 bytes (IPv4 mapped) */
static bool as_v6(const struct sockaddr *sa, uint8_t out[16], uint16_t *port)
{
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        memcpy(out, &s6->sin6_addr, 16);
        *port = ntohs(s6->sin6_port);
        return true;
    }
    if (sa->sa_family == AF_INET) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        return as_v4(sa, out + 12, port);
    }
    return false;
}

/* pc_pp_write_v1 - "PROXY TCP4 ..." or "PROXY TCP6 ..." or "PROXY UNKNOWN" */
int pc_pp_write_v1(char *out, size_t size, const struct sockaddr *src, const struct sockaddr *dst)
{
    uint8_t s[16], d[16];
    uint16_t sp, dp;
    char st[INET6_ADDRSTRLEN], dt[INET6_ADDRSTRLEN];
    int n;

    if (src == NULL || dst == NULL)
        n = snprintf(out, size, "PROXY UNKNOWN\r\n");
    else if (as_v4(src, s, &sp) && as_v4(dst, d, &dp))
        n = snprintf(out, size, "PROXY TCP4 %s %s %u %u\r\n", inet_ntop(AF_INET, s, st, sizeof(st)),
                     inet_ntop(AF_INET, d, dt, sizeof(dt)), sp, dp);
    else if (as_v6(src, s, &sp) && as_v6(dst, d, &dp))
        n = snprintf(out, size, "PROXY TCP6 %s %s %u %u\r\n",
                     inet_ntop(AF_INET6, s, st, sizeof(st)), inet_ntop(AF_INET6, d, dt, sizeof(dt)),
                     sp, dp);
    else
        return -1;
    return n < 0 || (size_t)n >= size ? -1 : n;
}

/* put_tlv - one TLV at p; returns bytes written */
static size_t put_tlv(uint8_t *p, uint8_t type, const void *v, size_t l)
{
    p[0] = type;
    p[1] = (uint8_t)(l >> 8);
    p[2] = (uint8_t)l;
    memcpy(p + 3, v, l);
    return 3 + l;
}

/* pc_pp_write_v2 - signature, PROXY, TCP over IPv4 or IPv6, optional SSL TLV */
int pc_pp_write_v2(uint8_t *out, size_t size, const struct sockaddr *src,
                   const struct sockaddr *dst, const struct pc_pp_tls *tls)
{
    uint8_t tmp[PC_PP_V2_HDR + 36 + 3 + 5 + 5 * (3 + 255)];
    uint8_t *p = tmp + PC_PP_V2_HDR;
    uint8_t s[16], d[16];
    uint16_t sp, dp;

    memcpy(tmp, pp2_sig, sizeof(pp2_sig));
    if (src == NULL || dst == NULL) {
        tmp[12] = 0x20; /* LOCAL */
        tmp[13] = 0x00;
    } else if (as_v4(src, s, &sp) && as_v4(dst, d, &dp)) {
        tmp[12] = 0x21;
        tmp[13] = 0x11;
        memcpy(p, s, 4), memcpy(p + 4, d, 4);
        p[8] = (uint8_t)(sp >> 8), p[9] = (uint8_t)sp, p[10] = (uint8_t)(dp >> 8),
        p[11] = (uint8_t)dp;
        p += 12;
    } else if (as_v6(src, s, &sp) && as_v6(dst, d, &dp)) {
        tmp[12] = 0x21;
        tmp[13] = 0x21;
        memcpy(p, s, 16), memcpy(p + 16, d, 16);
        p[32] = (uint8_t)(sp >> 8), p[33] = (uint8_t)sp, p[34] = (uint8_t)(dp >> 8),
        p[35] = (uint8_t)dp;
        p += 36;
    } else {
        return -1;
    }
    if (tls && tls->present && src && dst) {
        uint8_t *t = p;
        p += 3; /* type and length, filled below */
        *p++ = tls->client;
        uint32_t verify = tls->verified ? 0 : 1;
        p[0] = (uint8_t)(verify >> 24), p[1] = (uint8_t)(verify >> 16),
        p[2] = (uint8_t)(verify >> 8), p[3] = (uint8_t)verify;
        p += 4;
        const struct {
            uint8_t type;
            const char *v, *end;
        } sub[] = {
            {PC_PP2_SUBTYPE_VERSION, tls->version, tls->version + sizeof(tls->version)},
            {PC_PP2_SUBTYPE_CN, tls->cn, tls->cn + sizeof(tls->cn)},
            {PC_PP2_SUBTYPE_CIPHER, tls->cipher, tls->cipher + sizeof(tls->cipher)},
            {PC_PP2_SUBTYPE_SIG_ALG, tls->sig_alg, tls->sig_alg + sizeof(tls->sig_alg)},
            {PC_PP2_SUBTYPE_KEY_ALG, tls->key_alg, tls->key_alg + sizeof(tls->key_alg)},
        };
        for (size_t i = 0; i < sizeof(sub) / sizeof(sub[0]); i++) {
            size_t l = strnlen(sub[i].v, (size_t)(sub[i].end - sub[i].v));
            if (l)
                p += put_tlv(p, sub[i].type, sub[i].v, l > 255 ? 255 : l);
        }
        size_t tl = (size_t)(p - t) - 3;
        t[0] = PC_PP2_TYPE_SSL;
        t[1] = (uint8_t)(tl >> 8);
        t[2] = (uint8_t)tl;
    }
    size_t total = (size_t)(p - tmp);
    size_t alen = total - PC_PP_V2_HDR;
    tmp[14] = (uint8_t)(alen >> 8);
    tmp[15] = (uint8_t)alen;
    if (total > size)
        return -1;
    memcpy(out, tmp, total);
    return (int)total;
}
