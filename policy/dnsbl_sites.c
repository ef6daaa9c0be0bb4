/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	dnsbl_sites 3 - weighted DNS block and allow lists: parse, ask, add up
 * DESCRIPTION
 *	See policy/dnsbl_sites.h. The pattern of a site matches the A records
 *	of the list's answer octet by octet, where an octet is a number, "*",
 *	or a bracketed set "[2..11]" / "[2;4;8..10]"; without a pattern any
 *	answer inside 127.0.0.0/8 counts (answers elsewhere are wildcard junk,
 *	never a listing).
 * SEE ALSO
 *	RFC 5782, postscreen(8) postscreen_dnsbl_sites
 */
#include "policy/dnsbl_sites.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"

/* set_bit - mark an octet value as accepted */
static void set_bit(uint8_t *set, unsigned v)
{
    set[v >> 3] |= (uint8_t)(1u << (v & 7));
}

/* parse_num - a decimal octet; advances *p */
static bool parse_num(const char **p, unsigned *out)
{
    unsigned v = 0;
    int n = 0;

    while (isdigit((unsigned char)**p) && n < 4) {
        v = v * 10 + (unsigned)(**p - '0');
        (*p)++;
        n++;
    }
    *out = v;
    return n > 0 && n < 4 && v <= 255;
}

/* parse_octet - "N", "*", or "[a..b;c;...]" into a set; advances *p */
static bool parse_octet(const char **p, uint8_t *set)
{
    unsigned a, b;

    if (**p == '*') {
        memset(set, 0xff, 32);
        (*p)++;
        return true;
    }
    if (**p != '[') {
        if (!parse_num(p, &a))
            return false;
        set_bit(set, a);
        return true;
    }
    (*p)++;
    for (;;) {
        if (!parse_num(p, &a))
            return false;
        b = a;
        if ((*p)[0] == '.' && (*p)[1] == '.') {
            *p += 2;
            if (!parse_num(p, &b) || b < a)
                return false;
        }
        for (unsigned v = a; v <= b; v++)
            set_bit(set, v);
        if (**p == ';') {
            (*p)++;
            continue;
        }
        if (**p == ']') {
            (*p)++;
            return true;
        }
        return false;
    }
}

/* parse_site - "zone[=pattern][*weight]"; NULL or the reason it is wrong */
static const char *parse_site(const char *text, struct pc_dnsbl_site *site)
{
    const char *eq = strchr(text, '='), *star = strrchr(text, '*');
    const char *zend;
    size_t zlen;

    memset(site, 0, sizeof(*site));
    site->weight = 1;
    if (star && eq && star < eq)
        star = NULL;
    /* A '*' inside the pattern is an octet wildcard: the weight's star is the one after "]" or a
     * digit. */
    if (star && eq) {
        const char *w = star + 1;
        if (*w == 0 || (*w != '-' && !isdigit((unsigned char)*w)))
            star = NULL;
        else if (star[-1] == '.')
            star = NULL;
    }
    zend = eq ? eq : star ? star : text + strlen(text);
    zlen = (size_t)(zend - text);
    if (zlen && text[zlen - 1] == '.')
        zlen--;
    if (zlen == 0 || zlen >= sizeof(site->zone))
        return "bad zone";
    memcpy(site->zone, text, zlen);
    site->zone[zlen] = 0;
    for (char *z = site->zone; *z; z++)
        *z = (char)tolower((unsigned char)*z);
    if (!pc_dns_hostname_ok(site->zone))
        return "bad zone";
    if (eq) {
        const char *p = eq + 1;
        site->has_pattern = true;
        for (int o = 0; o < 4; o++) {
            if (!parse_octet(&p, site->match[o]))
                return "bad pattern (want like 127.0.0.[2..11])";
            if (o < 3 && *p++ != '.')
                return "bad pattern (want four octets)";
        }
        if (*p != 0 && p != star)
            return "junk after pattern";
    }
    if (star) {
        char *end;
        long w = strtol(star + 1, &end, 10);
        if (*end != 0 || w < -1000 || w > 1000)
            return "bad weight (want *N, -1000..1000)";
        site->weight = (int)w;
    }
    return NULL;
}

/* pc_dnsbl_site_match - does one answer address match the entry */
bool pc_dnsbl_site_match(const struct pc_dnsbl_site *site, const uint8_t a[4])
{
    if (!site->has_pattern)
        return a[0] == 127;
    for (int o = 0; o < 4; o++)
        if (!(site->match[o][a[o] >> 3] & (1u << (a[o] & 7))))
            return false;
    return true;
}

/* pc_dnsbl_sites_add - one more site; its zone is asked once however many sites name it */
const char *pc_dnsbl_sites_add(struct pc_dnsbl_sites *l, const char *text)
{
    if (l->nsites >= PC_DNSBL_MAX_SITES)
        return "too many sites";
    struct pc_dnsbl_site *site = &l->sites[l->nsites];
    const char *why = parse_site(text, site);
    if (why)
        return why;
    size_t z;
    for (z = 0; z < l->nzones; z++)
        if (strcmp(l->zones[z], site->zone) == 0)
            break;
    if (z == l->nzones)
        memcpy(l->zones[l->nzones++], site->zone, sizeof(site->zone));
    site->zi = z;
    l->nsites++;
    return NULL;
}

/* on_answer - one zone's answer: every site of that zone that matches counts */
static void on_answer(void *arg, enum pc_dns_status st, const struct pc_dns_answer *a)
{
    struct pc_dnsbl_zq *zq = arg;
    struct pc_dnsbl_lookup *l = zq->l;
    const struct pc_dnsbl_sites *c = l->sites;

    zq->q = NULL;
    l->outstanding--;
    for (size_t i = 0; i < c->nsites; i++) {
        const struct pc_dnsbl_site *site = &c->sites[i];
        bool hit = false;
        if (site->zi != zq->zi)
            continue;
        if (st == PC_DNS_TRYLATER) {
            if (site->weight > 0)
                l->unknown_max += site->weight;
            continue;
        }
        for (size_t k = 0; st == PC_DNS_FOUND && k < a->n && !hit; k++)
            if (a->rrtype == PC_DNS_T_A && a->rr_len[k] == 4)
                hit = pc_dnsbl_site_match(site, (const uint8_t *)a->rr[k]);
        if (!hit)
            continue;
        l->total += site->weight;
        if (site->weight > 0 && (l->worst == NULL || site->weight > l->worst->weight))
            l->worst = site;
        if (l->hit)
            l->hit(l->arg, site);
    }
    if (st == PC_DNS_TRYLATER)
        pc_info("%s: dnsbl: [%s] %s did not answer", l->sid, l->addr, c->zones[zq->zi]);
    if (l->outstanding == 0)
        l->done(l->arg, l);
}

/* pc_dnsbl_lookup_start - one query per zone, all at once */
size_t pc_dnsbl_lookup_start(struct pc_dnsbl_lookup *l, const struct pc_dnsbl_sites *c,
                             struct pc_dns *dns, const struct pc_ip *ip, const char *sid,
                             const char *addr, pc_dnsbl_hit_fn *hit, pc_dnsbl_done_fn *done,
                             void *arg)
{
    memset(l, 0, sizeof(*l));
    l->sites = c;
    l->hit = hit;
    l->done = done;
    l->arg = arg;
    l->sid = sid;
    l->addr = addr;
    for (size_t z = 0; dns && z < c->nzones; z++) {
        char name[PC_DNS_NAME_MAX * 2];
        struct pc_dnsbl_zq *zq = &l->q[z];
        if (!pc_dns_reverse(ip, c->zones[z], name, sizeof(name)))
            continue;
        zq->l = l;
        zq->zi = z;
        zq->q = pc_dns_lookup(dns, name, PC_DNS_T_A, on_answer, zq);
        if (zq->q)
            l->outstanding++;
    }
    return l->outstanding;
}

/* pc_dnsbl_lookup_cancel - forget outstanding queries */
void pc_dnsbl_lookup_cancel(struct pc_dnsbl_lookup *l)
{
    for (size_t i = 0; i < PC_DNSBL_MAX_SITES; i++) {
        pc_dns_cancel(l->q[i].q);
        l->q[i].q = NULL;
    }
    l->outstanding = 0;
}
