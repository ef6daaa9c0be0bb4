/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	proxy_proto 3h - PROXY protocol v1 and v2 headers: a bounded parser and a writer
 * DESCRIPTION
 *	pc_pp_parse() looks at the bytes received so far on a connection
 *	(typically with MSG_PEEK, so that nothing after the header is taken
 *	from the socket) and answers PC_PP_OK with the header's length and
 *	what it says, PC_PP_MORE when the bytes so far are a valid beginning
 *	of a header, or PC_PP_ERROR with a precise reason as soon as they can
 *	no longer become one. It never reads beyond len, and never accepts a
 *	header longer than the caller's bound (v1 lines are at most 107 bytes
 *	by the specification). Any prefix of a valid header gives PC_PP_MORE.
 *
 *	v1: "PROXY TCP4|TCP6 src dst sport dport\r\n" in the strict canonical
 *	form (no leading zeros, single spaces), or "PROXY UNKNOWN...\r\n".
 *	v2: the 12-byte signature, version 2, LOCAL or PROXY, TCP over IPv4
 *	or IPv6, and TLVs: AUTHORITY (SNI), CRC32C (verified), UNIQUE_ID,
 *	NOOP, NETNS and SSL with its sub-TLVs (version, CN, cipher, signature
 *	and key algorithms) as TLS facts; other types are skipped.
 *
 *	"local" means: use the connection's own addresses (v1 UNKNOWN, v2
 *	LOCAL, and v2 families or transports this gateway does not serve,
 *	as the specification asks: AF_UNSPEC, AF_UNIX, datagrams).
 *
 *	The writers produce a v1 line or a v2 header (with an optional SSL
 *	TLV) for a backend connection.
 * SEE ALSO
 *	HAProxy, "The PROXY protocol" versions 1 and 2 (doc/proxy-protocol.txt);
 *	RFC 4960 appendix B (CRC32c)
 */
#ifndef PC_PROXY_PROTO_H
#define PC_PROXY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PC_PP_V1_MAX  107  /* longest v1 line, CRLF included */
#define PC_PP_V2_HDR  16   /* fixed part of a v2 header */
#define PC_PP_MAX     1536 /* our default bound on a whole header */
#define PC_PP_ABS_MAX (PC_PP_V2_HDR + 65535)

/* v2 TLV types (section 2.2) */
#define PC_PP2_TYPE_ALPN        0x01
#define PC_PP2_TYPE_AUTHORITY   0x02
#define PC_PP2_TYPE_CRC32C      0x03
#define PC_PP2_TYPE_NOOP        0x04
#define PC_PP2_TYPE_UNIQUE_ID   0x05
#define PC_PP2_TYPE_SSL         0x20
#define PC_PP2_SUBTYPE_VERSION  0x21
#define PC_PP2_SUBTYPE_CN       0x22
#define PC_PP2_SUBTYPE_CIPHER   0x23
#define PC_PP2_SUBTYPE_SIG_ALG  0x24
#define PC_PP2_SUBTYPE_KEY_ALG  0x25
#define PC_PP2_TYPE_NETNS       0x30
#define PC_PP2_CLIENT_SSL       0x01
#define PC_PP2_CLIENT_CERT_CONN 0x02
#define PC_PP2_CLIENT_CERT_SESS 0x04

enum pc_pp_status { PC_PP_ERROR = -1, PC_PP_MORE = 0, PC_PP_OK = 1 };

/* TLS facts a v2 proxy passes in PP2_TYPE_SSL; strings are printable, NUL-terminated. */
struct pc_pp_tls {
    bool present;     /* the TLV was there */
    uint8_t client;   /* PC_PP2_CLIENT_* bits */
    bool verified;    /* a client certificate was presented and verified (verify == 0) */
    char version[32]; /* "TLSv1.3" */
    char cipher[64];
    char cn[256]; /* client certificate's Common Name */
    char sig_alg[32], key_alg[32];
};

struct pc_pp_info {
    int version;                      /* 1 or 2 */
    bool local;                       /* use the connection's own addresses */
    struct sockaddr_storage src, dst; /* when !local: AF_INET or AF_INET6, with ports */
    socklen_t srclen, dstlen;
    char authority[256]; /* v2 AUTHORITY (the SNI the client sent), or "" */
    size_t unique_id_len;
    struct pc_pp_tls tls;
    size_t hdrlen; /* bytes the header took */
};

/* pc_pp_parse - a header at buf[0..len), at most max bytes long (0: PC_PP_MAX);
 * PC_PP_OK with *info filled, PC_PP_MORE, or PC_PP_ERROR with *why set (static text) */
enum pc_pp_status pc_pp_parse(const uint8_t *buf, size_t len, size_t max, struct pc_pp_info *info,
                              const char **why);

/* pc_pp_write_v1 - a v1 line for src -> dst (NULL: "PROXY UNKNOWN"); length, or -1 when
 * out (>= PC_PP_V1_MAX + 1) is too small or an address is not IP */
int pc_pp_write_v1(char *out, size_t size, const struct sockaddr *src, const struct sockaddr *dst);

/* pc_pp_write_v2 - a v2 PROXY header for src -> dst (NULL: LOCAL) with an SSL TLV when
 * tls && tls->present; length, or -1 when out is too small or an address is not IP */
int pc_pp_write_v2(uint8_t *out, size_t size, const struct sockaddr *src,
                   const struct sockaddr *dst, const struct pc_pp_tls *tls);

/* pc_pp_crc32c - CRC32c (Castagnoli) of buf, as PP2_TYPE_CRC32C carries it */
uint32_t pc_pp_crc32c(const uint8_t *buf, size_t len);

#endif
