/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	list 3 - list files of domains, addresses and networks, with hashed lookup
 * DESCRIPTION
 *	Domains and addresses go into an open-addressing hash table of
 *	lower-cased strings. A domain is looked up as itself and then as each
 *	of its parent suffixes with a leading dot, so the entry
 *	".example.com" matches every subdomain and "example.com" only itself
 *	(the convention of pc_domain_match). Networks are stored masked and
 *	hashed with their prefix length; a lookup masks the address once for
 *	each prefix length present, so it costs at most 129 probes however
 *	long the list is.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/addr.h"
#include "lib/log.h"
#include "lib/pool.h"
#include "rules/rules_int.h"

/* hash_str - FNV-1a */
static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;

    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

/* hash_net - FNV-1a over the prefix length and the masked address */
static uint64_t hash_net(const struct pc_ip *ip, unsigned bits)
{
    uint64_t h = (1469598103934665603ULL ^ bits) * 1099511628211ULL;

    for (int i = 0; i < 16; i++)
        h = (h ^ ip->b[i]) * 1099511628211ULL;
    return h;
}

/* mask - keep the first bits of an address */
static void mask(struct pc_ip *ip, unsigned bits)
{
    for (unsigned i = 0; i < 16; i++) {
        unsigned have = bits > i * 8 ? bits - i * 8 : 0;
        if (have >= 8)
            continue;
        ip->b[i] &= (uint8_t)(0xff00u >> have);
    }
}

/* list_free - pool cleanup */
static void list_free(void *arg)
{
    struct rl_list *l = arg;

    free(l->slots);
    free(l->nets);
    free(l->bits);
}

/* pc_rl_list_new - an empty list */
struct rl_list *pc_rl_list_new(struct pc_pool *pool, const char *name, enum rl_list_kind kind)
{
    struct rl_list *l = pc_pool_zalloc(pool, sizeof(*l));

    l->name = pc_pool_strdup(pool, name);
    l->kind = kind;
    pc_pool_cleanup(pool, list_free, l);
    return l;
}

/* str_insert - into the hash table, growing at half load */
static void str_insert(struct rl_list *l, const char *s)
{
    if ((l->n + 1) * 2 > l->nslots) {
        size_t ns = l->nslots ? l->nslots * 2 : 64;
        const char **v = calloc(ns, sizeof(*v));
        if (v == NULL)
            pc_fatal("out of memory");
        for (size_t i = 0; i < l->nslots; i++) {
            if (l->slots[i] == NULL)
                continue;
            size_t k = hash_str(l->slots[i]) & (ns - 1);
            while (v[k])
                k = (k + 1) & (ns - 1);
            v[k] = l->slots[i];
        }
        free(l->slots);
        l->slots = v;
        l->nslots = ns;
    }
    size_t k = hash_str(s) & (l->nslots - 1);
    while (l->slots[k]) {
        if (strcmp(l->slots[k], s) == 0)
            return;
        k = (k + 1) & (l->nslots - 1);
    }
    l->slots[k] = s;
    l->n++;
}

/* net_insert - a masked network into the network table */
static void net_insert(struct rl_list *l, const struct pc_ip *ip, unsigned bits)
{
    if ((l->nnets + 1) * 2 > l->netslots) {
        size_t ns = l->netslots ? l->netslots * 2 : 64;
        struct pc_ip *v = calloc(ns, sizeof(*v));
        uint8_t *b = malloc(ns);
        if (v == NULL || b == NULL)
            pc_fatal("out of memory");
        memset(b, 0xff, ns); /* 0xff: empty slot */
        for (size_t i = 0; i < l->netslots; i++) {
            if (l->bits[i] == 0xff)
                continue;
            size_t k = hash_net(&l->nets[i], l->bits[i]) & (ns - 1);
            while (b[k] != 0xff)
                k = (k + 1) & (ns - 1);
            v[k] = l->nets[i];
            b[k] = l->bits[i];
        }
        free(l->nets);
        free(l->bits);
        l->nets = v;
        l->bits = b;
        l->netslots = ns;
    }
    size_t k = hash_net(ip, bits) & (l->netslots - 1);
    while (l->bits[k] != 0xff) {
        if (l->bits[k] == bits && memcmp(&l->nets[k], ip, sizeof(*ip)) == 0)
            return;
        k = (k + 1) & (l->netslots - 1);
    }
    l->nets[k] = *ip;
    l->bits[k] = (uint8_t)bits;
    l->has_len[bits] = true;
    l->nnets++;
}

/* pc_rl_list_add - validate and insert one entry */
const char *pc_rl_list_add(struct pc_pool *pool, struct rl_list *l, const char *entry)
{
    if (l->kind == RL_CIDRS) {
        struct pc_cidr c;
        if (!pc_cidr_parse(entry, &c)) {
            struct pc_ip ip;
            if (!pc_ip_parse(entry, &ip))
                return "not an IP address or network (e.g. 192.0.2.0/24, 2001:db8::/32)";
            c.net = ip;
            c.bits = 128;
        }
        mask(&c.net, c.bits);
        net_insert(l, &c.net, c.bits);
        return NULL;
    }
    char *s = pc_pool_strdup(pool, entry);
    for (char *p = s; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p + 32);
    if (l->kind == RL_DOMAINS) {
        const char *d = s[0] == '.' ? s + 1 : s;
        if (!pc_domain_valid(d, strlen(d), true))
            return "not a domain name (use example.com, or .example.com for its subdomains)";
    } else {
        const char *at = strrchr(s, '@');
        if (at == NULL || at == s || at[1] == 0)
            return "not an address (local@domain)";
    }
    str_insert(l, s);
    return NULL;
}

/* pc_rl_list_seal - nothing to do yet: tables are built as entries arrive */
void pc_rl_list_seal(struct pc_pool *pool, struct rl_list *l)
{
    (void)pool, (void)l;
}

/* str_has - exact lookup of a lower-case string */
static bool str_has(const struct rl_list *l, const char *s)
{
    if (l->nslots == 0)
        return false;
    size_t k = hash_str(s) & (l->nslots - 1);
    while (l->slots[k]) {
        if (strcmp(l->slots[k], s) == 0)
            return true;
        k = (k + 1) & (l->nslots - 1);
    }
    return false;
}

/* pc_rl_list_has - a domain (itself or a parent suffix) or an address */
bool pc_rl_list_has(const struct rl_list *l, const char *value)
{
    char buf[PC_PATH_MAX + 2];
    size_t n = strlen(value);

    if (l->kind == RL_CIDRS) {
        struct pc_ip ip;
        return pc_ip_parse(value, &ip) && pc_rl_list_has_ip(l, &ip);
    }
    if (n >= sizeof(buf))
        return false;
    for (size_t i = 0; i <= n; i++)
        buf[i] = (value[i] >= 'A' && value[i] <= 'Z') ? (char)(value[i] + 32) : value[i];
    if (n && buf[n - 1] == '.')
        buf[--n] = 0;
    if (str_has(l, buf))
        return true;
    if (l->kind != RL_DOMAINS)
        return false;
    for (char *p = buf; (p = strchr(p, '.')) != NULL; p++)
        if (str_has(l, p))
            return true;
    return false;
}

/* pc_rl_list_has_ip - an address inside one of the networks */
bool pc_rl_list_has_ip(const struct rl_list *l, const struct pc_ip *ip)
{
    if (l->kind != RL_CIDRS || l->netslots == 0)
        return false;
    for (unsigned bits = 0; bits <= 128; bits++) {
        if (!l->has_len[bits])
            continue;
        struct pc_ip m = *ip;
        mask(&m, bits);
        size_t k = hash_net(&m, bits) & (l->netslots - 1);
        while (l->bits[k] != 0xff) {
            if (l->bits[k] == bits && memcmp(&l->nets[k], &m, sizeof(m)) == 0)
                return true;
            k = (k + 1) & (l->netslots - 1);
        }
    }
    return false;
}
