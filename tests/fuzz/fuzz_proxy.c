/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_proxy 1 - the PROXY protocol v1/v2 header parser and writers
 * DESCRIPTION
 *	The input is the first bytes of a connection. Invariants: PC_PP_OK
 *	takes at most the bound and the bytes given, of version 1 or 2, with
 *	two addresses of one IP family unless "local", printable NUL-terminated
 *	TLS strings; every shorter prefix of an accepted header says "more"
 *	(the parser is incremental and never decides on bytes it has not
 *	seen); and the addresses written again by both writers read back the
 *	same.
 * SEE ALSO
 *	HAProxy doc/proxy-protocol.txt
 */
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/proxy_proto.h"

/* printable - NUL-terminated within size, no control bytes */
static void printable(const char *s, size_t size)
{
    const char *z = memchr(s, 0, size);

    if (z == NULL)
        abort();
    for (; s < z; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            abort();
}

/* same_addr - two parsed addresses are equal */
static void same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        abort();
    size_t n = a->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (memcmp(a, b, n) != 0)
        abort();
}

/* LLVMFuzzerTestOneInput - one connection's first bytes */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pc_pp_info in, back;
    const char *why;
    uint8_t *copy = malloc(size ? size : 1); /* exact size: ASan sees reads past it */

    memcpy(copy, data, size);
    enum pc_pp_status st = pc_pp_parse(copy, size, 0, &in, &why);
    if (st == PC_PP_ERROR && (why == NULL || why[0] == 0))
        abort();
    if (st != PC_PP_OK) {
        free(copy);
        return 0;
    }
    if (in.hdrlen == 0 || in.hdrlen > size || in.hdrlen > PC_PP_MAX ||
        (in.version != 1 && in.version != 2))
        abort();
    if (in.version == 1 && in.hdrlen > PC_PP_V1_MAX)
        abort();
    printable(in.authority, sizeof(in.authority));
    printable(in.tls.version, sizeof(in.tls.version));
    printable(in.tls.cn, sizeof(in.tls.cn));
    printable(in.tls.cipher, sizeof(in.tls.cipher));
    printable(in.tls.sig_alg, sizeof(in.tls.sig_alg));
    printable(in.tls.key_alg, sizeof(in.tls.key_alg));
    /* Incremental: a shorter prefix is never complete and never wrong. */
    size_t cuts[3] = {0, in.hdrlen / 2, in.hdrlen - 1};
    for (int i = 0; i < 3; i++)
        if (pc_pp_parse(copy, cuts[i], 0, &back, &why) != PC_PP_MORE)
            abort();
    /* What follows the header does not change it. */
    if (pc_pp_parse(copy, in.hdrlen, 0, &back, &why) != PC_PP_OK || back.hdrlen != in.hdrlen)
        abort();
    if (!in.local) {
        if (in.src.ss_family != in.dst.ss_family ||
            (in.src.ss_family != AF_INET && in.src.ss_family != AF_INET6))
            abort();
        char line[PC_PP_V1_MAX + 1];
        uint8_t bin[2048];
        int n = pc_pp_write_v1(line, sizeof(line), (struct sockaddr *)&in.src,
                               (struct sockaddr *)&in.dst);
        if (n <= 0 || pc_pp_parse((uint8_t *)line, (size_t)n, 0, &back, &why) != PC_PP_OK)
            abort();
        /* IPv4-mapped IPv6 comes back as IPv4 from the v1 writer; compare the v2 way. */
        n = pc_pp_write_v2(bin, sizeof(bin), (struct sockaddr *)&in.src, (struct sockaddr *)&in.dst,
                           &in.tls);
        if (n <= 0 || pc_pp_parse(bin, (size_t)n, 0, &back, &why) != PC_PP_OK ||
            back.hdrlen != (size_t)n)
            abort();
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&in.src;
        const struct sockaddr_in6 *d6 = (const struct sockaddr_in6 *)&in.dst;
        if (in.src.ss_family == AF_INET ||
            (!IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) && !IN6_IS_ADDR_V4MAPPED(&d6->sin6_addr))) {
            same_addr(&in.src, &back.src);
            same_addr(&in.dst, &back.dst);
        }
        if (in.tls.present && (!back.tls.present || strcmp(back.tls.version, in.tls.version) ||
                               strcmp(back.tls.cn, in.tls.cn)))
            abort();
    }
    free(copy);
    return 0;
}
