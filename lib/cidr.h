/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	cidr 3h - IPv4 and IPv6 network lists
 * DESCRIPTION
 *	Addresses are kept as 16 bytes; IPv4 is stored IPv4-mapped so that one
 *	comparison serves both families and an IPv4-mapped IPv6 client matches
 *	an IPv4 network (RFC 4291 section 2.5.5.2).
 */
#ifndef PC_CIDR_H
#define PC_CIDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct pc_ip {
    uint8_t b[16];
};

struct pc_cidr {
    struct pc_ip net;
    unsigned bits; /* 0..128, counted on the mapped form */
};

struct pc_cidr_list {
    struct pc_cidr *v;
    size_t n, cap;
};

bool pc_ip_parse(const char *text, struct pc_ip *);
bool pc_ip_from_sockaddr(const struct sockaddr *, struct pc_ip *);
bool pc_ip_is_v4(const struct pc_ip *);
/* pc_ip_format - IPv4 as dotted quad, else IPv6 text; buf >= 46 */
const char *pc_ip_format(const struct pc_ip *, char *buf, size_t size);

bool pc_cidr_parse(const char *text, struct pc_cidr *);
bool pc_cidr_match(const struct pc_cidr *, const struct pc_ip *);

void pc_cidr_list_init(struct pc_cidr_list *);
void pc_cidr_list_free(struct pc_cidr_list *);
bool pc_cidr_list_add(struct pc_cidr_list *, const char *text);
bool pc_cidr_list_match(const struct pc_cidr_list *, const struct pc_ip *);

#endif
