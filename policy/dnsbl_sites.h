/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	dnsbl_sites 3h - weighted DNS block and allow lists: parse, ask, add up
 * DESCRIPTION
 *	What the dnsbl filter and the postscreen-style checks before the
 *	greeting share: a list of sites "zone[=pattern][*weight]" and one
 *	lookup of a client against all of them through the shared resolver
 *	(core/dns.h), one query per distinct zone, all in parallel.
 *
 *	A lookup reports each matching site to hit() as its answer arrives and
 *	calls done() once every zone answered or failed, never from inside
 *	pc_dnsbl_lookup_start(); pc_dnsbl_lookup_cancel() guarantees neither
 *	runs again. total is the sum of the matching weights, unknown_max what
 *	the lists that did not answer could have added, worst the heaviest
 *	matching site with a positive weight.
 * SEE ALSO
 *	RFC 5782, postscreen(8) postscreen_dnsbl_sites, filters/dnsbl.c
 */
#ifndef PC_DNSBL_SITES_H
#define PC_DNSBL_SITES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dns.h"
#include "lib/cidr.h"

#define PC_DNSBL_MAX_SITES 32

struct pc_dnsbl_site {
    char zone[PC_DNS_NAME_MAX];
    bool has_pattern;
    uint8_t match[4][32]; /* per octet: a 256-bit set */
    int weight;
    size_t zi; /* index of its distinct zone */
};

struct pc_dnsbl_sites {
    struct pc_dnsbl_site sites[PC_DNSBL_MAX_SITES];
    size_t nsites;
    char zones[PC_DNSBL_MAX_SITES][PC_DNS_NAME_MAX];
    size_t nzones;
};

struct pc_dnsbl_lookup;
typedef void pc_dnsbl_hit_fn(void *arg, const struct pc_dnsbl_site *);
typedef void pc_dnsbl_done_fn(void *arg, struct pc_dnsbl_lookup *);

struct pc_dnsbl_zq {
    struct pc_dnsbl_lookup *l;
    struct pc_dns_query *q;
    size_t zi;
};

struct pc_dnsbl_lookup {
    const struct pc_dnsbl_sites *sites;
    struct pc_dnsbl_zq q[PC_DNSBL_MAX_SITES];
    size_t outstanding;
    int total, unknown_max;
    const struct pc_dnsbl_site *worst;
    pc_dnsbl_hit_fn *hit;
    pc_dnsbl_done_fn *done;
    void *arg;
    const char *sid, *addr; /* for the log line of a list that did not answer */
};

/* pc_dnsbl_sites_add - parse "zone[=pattern][*weight]" into the list; NULL or why it is wrong */
const char *pc_dnsbl_sites_add(struct pc_dnsbl_sites *, const char *text);
/* pc_dnsbl_site_match - does one A record (4 bytes) match the site */
bool pc_dnsbl_site_match(const struct pc_dnsbl_site *, const uint8_t a[4]);
/* pc_dnsbl_lookup_start - ask every zone about ip; the number of queries sent (0: nothing to
 * wait for, done() will not run). sid and addr must outlive the lookup. */
size_t pc_dnsbl_lookup_start(struct pc_dnsbl_lookup *, const struct pc_dnsbl_sites *,
                             struct pc_dns *, const struct pc_ip *, const char *sid,
                             const char *addr, pc_dnsbl_hit_fn *, pc_dnsbl_done_fn *, void *arg);
/* pc_dnsbl_lookup_cancel - forget outstanding queries; no callback runs after this */
void pc_dnsbl_lookup_cancel(struct pc_dnsbl_lookup *);

#endif
