/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	cidr 3 - IPv4 and IPv6 network lists
 * DESCRIPTION
 *	Linear match: lists here are mynetworks-sized. Large lists (rule
 *	files) build their own tree on top of pc_cidr_match().
 * SEE ALSO
 *	RFC 4291, RFC 4632
 */
#include "lib/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"

static const uint8_t pc_v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* pc_ip_parse - textual IPv4 or IPv6 address */
bool pc_ip_parse(const char *text, struct pc_ip *ip)
{
    struct in_addr a4;

    if (inet_pton(AF_INET, text, &a4) == 1) {
        memcpy(ip->b, pc_v4_prefix, 12);
        memcpy(ip->b + 12, &a4, 4);
        return true;
    }
    return inet_pton(AF_INET6, text, ip->b) == 1;
}

/* pc_ip_from_sockaddr - socket address to pc_ip */
bool pc_ip_from_sockaddr(const struct sockaddr *sa, struct pc_ip *ip)
{
    if (sa->sa_family == AF_INET) {
        memcpy(ip->b, pc_v4_prefix, 12);
        memcpy(ip->b + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        memcpy(ip->b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        return true;
    }
    return false;
}

/* pc_ip_is_v4 - IPv4 or IPv4-mapped */
bool pc_ip_is_v4(const struct pc_ip *ip)
{
    return memcmp(ip->b, pc_v4_prefix, 12) == 0;
}

/* pc_ip_format - text form, IPv4-mapped shown as IPv4 */
const char *pc_ip_format(const struct pc_ip *ip, char *buf, size_t size)
{
    if (pc_ip_is_v4(ip))
        return inet_ntop(AF_INET, ip->b + 12, buf, (socklen_t)size);
    return inet_ntop(AF_INET6, ip->b, buf, (socklen_t)size);
}

/* pc_cidr_parse - "net/bits" or a bare address */
bool pc_cidr_parse(const char *text, struct pc_cidr *c)
{
    char host[64];
    const char *slash = strchr(text, '/');
    size_t hl = slash ? (size_t)(slash - text) : strlen(text);
    long bits = -1;

    if (hl == 0 || hl >= sizeof(host))
        return false;
    memcpy(host, text, hl);
    host[hl] = 0;
    /* Accept "[::1]/128" as operators write it in Postfix's mynetworks. */
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = 0;
    }
    if (!pc_ip_parse(host, &c->net))
        return false;
    bool v4 = strchr(host, ':') == NULL;
    if (slash) {
        char *end;
        bits = strtol(slash + 1, &end, 10);
        if (*end || end == slash + 1 || bits < 0 || bits > (v4 ? 32 : 128))
            return false;
    } else {
        bits = v4 ? 32 : 128;
    }
    c->bits = (unsigned)(v4 ? bits + 96 : bits);
    /* Clear host bits so that 10.1.2.3/8 means 10.0.0.0/8. */
    for (unsigned i = c->bits; i < 128; i++)
        c->net.b[i / 8] &= (uint8_t) ~(0x80u >> (i % 8));
    return true;
}

/* pc_cidr_match - address inside network */
bool pc_cidr_match(const struct pc_cidr *c, const struct pc_ip *ip)
{
    unsigned full = c->bits / 8, rest = c->bits % 8;

    if (memcmp(c->net.b, ip->b, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff00u >> rest);
    return (c->net.b[full] & mask) == (ip->b[full] & mask);
}

/* pc_cidr_list_init - empty list */
void pc_cidr_list_init(struct pc_cidr_list *l)
{
    l->v = NULL;
    l->n = l->cap = 0;
}

/* pc_cidr_list_free - release */
void pc_cidr_list_free(struct pc_cidr_list *l)
{
    free(l->v);
    pc_cidr_list_init(l);
}

/* pc_cidr_list_add - parse and append; false on syntax error */
bool pc_cidr_list_add(struct pc_cidr_list *l, const char *text)
{
    struct pc_cidr c;

    if (!pc_cidr_parse(text, &c))
        return false;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = realloc(l->v, l->cap * sizeof(*l->v));
        if (l->v == NULL)
            pc_fatal("out of memory");
    }
    l->v[l->n++] = c;
    return true;
}

/* pc_cidr_list_match - any network contains the address */
bool pc_cidr_list_match(const struct pc_cidr_list *l, const struct pc_ip *ip)
{
    for (size_t i = 0; i < l->n; i++)
        if (pc_cidr_match(&l->v[i], ip))
            return true;
    return false;
}
