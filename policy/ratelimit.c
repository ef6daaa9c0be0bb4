/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	ratelimit 3 - GCRA arithmetic, rate parsing, key hashing, store choice
 * DESCRIPTION
 *	Times are microseconds held in doubles: Lua (inside Redis) has only
 *	doubles, and doing the same operations in the same order in C makes
 *	the in-process store answer exactly as the Redis script does.
 *	Microsecond timestamps (about 2^51) are exact in a double.
 * SEE ALSO
 *	ITU-T I.371 (GCRA), FIPS 180-4 (SHA-256)
 */
#include "policy/ratelimit.h"
#include "policy/rl_redis.h"

#include <ctype.h>
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filters/filter.h"
#include "lib/parse.h"

/* pc_rl_rate_parse - "count[K|M|G]/[n]unit" */
bool pc_rl_rate_parse(const char *s, struct pc_rl_rate *out)
{
    char *end;
    unsigned long long ms;
    double mul = 1;

    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s))
        return false;
    unsigned long long n = strtoull(s, &end, 10);
    switch (*end) {
    case 'K':
    case 'k':
        mul = 1024.0;
        end++;
        break;
    case 'M':
        mul = 1024.0 * 1024;
        end++;
        break;
    case 'G':
        mul = 1024.0 * 1024 * 1024;
        end++;
        break;
    }
    while (*end == ' ')
        end++;
    if (*end != '/' || n == 0 || n > 1000000000000ULL)
        return false;
    end++;
    while (*end == ' ')
        end++;
    if (*end == 0)
        return false;
    /* "100/h" means one hour: give the duration parser its number. */
    char period[32];
    if (snprintf(period, sizeof(period), "%s%s", isdigit((unsigned char)*end) ? "" : "1", end) >=
        (int)sizeof(period))
        return false;
    if (!pc_parse_duration(period, &ms) || ms < 1000 || ms > 30ULL * 86400000)
        return false;
    out->count = (double)n * mul;
    out->period_ms = ms;
    return true;
}

/* pc_rl_gcra - one step of the generic cell rate algorithm */
void pc_rl_gcra(double now, double *tat, double interval, double burst, double cost,
                struct pc_rl_answer *a)
{
    double t = *tat > now ? *tat : now;
    double nt = t + cost * interval;
    double allow_at = nt - burst * interval;

    if (allow_at > now) {
        a->allowed = false;
        a->retry_after_ms = (uint64_t)ceil((allow_at - now) / 1000);
        a->remaining = floor((now + burst * interval - t) / interval);
    } else {
        *tat = nt;
        a->allowed = true;
        a->retry_after_ms = 0;
        a->remaining = floor((now + burst * interval - nt) / interval);
    }
    if (a->remaining < 0)
        a->remaining = 0;
}

/* pc_rl_key - namespaced, hashed key */
void pc_rl_key(const char *prefix, const char *name, const char *const *values, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    if (ctx == NULL || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
        abort();
    EVP_DigestUpdate(ctx, name, strlen(name) + 1);
    for (size_t i = 0; i < n; i++)
        EVP_DigestUpdate(ctx, values[i], strlen(values[i]) + 1);
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    size_t o = (size_t)snprintf(out, PC_RL_KEY_MAX - 2 * mdlen, "%s", prefix);
    if (o > PC_RL_KEY_MAX - 1 - 2 * mdlen)
        o = PC_RL_KEY_MAX - 1 - 2 * mdlen;
    for (unsigned i = 0; i < mdlen; i++) {
        out[o++] = hex[md[i] >> 4];
        out[o++] = hex[md[i] & 15];
    }
    out[o] = 0;
}

/* pc_rl_redis_url_parse - redis://host:port/db, redis://[v6]:port/db or unix:/path[?db=N] */
bool pc_rl_redis_url_parse(const char *url, char *host, size_t hs, int *port, int *db,
                           bool *is_unix)
{
    char *end;

    *db = 0;
    *port = 6379;
    if (strncmp(url, "unix:", 5) == 0) {
        const char *p = url + 5, *q = strchr(p, '?');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == 0 || len >= hs || p[0] != '/')
            return false;
        memcpy(host, p, len);
        host[len] = 0;
        *is_unix = true;
        if (q) {
            if (strncmp(q, "?db=", 4) != 0 || !isdigit((unsigned char)q[4]))
                return false;
            long d = strtol(q + 4, &end, 10);
            if (*end || d > 65535)
                return false;
            *db = (int)d;
        }
        return true;
    }
    if (strncmp(url, "redis://", 8) != 0)
        return false;
    *is_unix = false;
    const char *p = url + 8, *hend;
    if (*p == '[') {
        hend = strchr(p, ']');
        if (hend == NULL)
            return false;
        p++;
    } else {
        hend = p + strcspn(p, ":/");
    }
    size_t len = (size_t)(hend - p);
    if (len == 0 || len >= hs)
        return false;
    memcpy(host, p, len);
    host[len] = 0;
    if (*hend == ']')
        hend++;
    if (*hend == ':') {
        if (!isdigit((unsigned char)hend[1]))
            return false;
        long pt = strtol(hend + 1, &end, 10);
        if (pt < 1 || pt > 65535)
            return false;
        *port = (int)pt;
        hend = end;
    }
    if (*hend == '/' && hend[1]) {
        if (!isdigit((unsigned char)hend[1]))
            return false;
        long d = strtol(hend + 1, &end, 10);
        if (*end || d > 65535)
            return false;
        *db = (int)d;
        hend = end;
    } else if (*hend == '/') {
        hend++;
    }
    return *hend == 0;
}

/* pc_rl_store_create - in-process, Redis or Redis through Sentinel */
struct pc_rl_store *pc_rl_store_create(const struct pc_rl_store_conf *c, struct pc_err *err)
{
    if ((c->url == NULL || c->url[0] == 0) && c->nsentinels == 0)
        return pc_rl_memory_create(c->max_entries, NULL);
    if (c->url && strncmp(c->url, "redis-cluster://", 16) == 0) {
        if (c->nsentinels) {
            pc_err_set(err, NULL, "ratelimit: a cluster store takes no sentinels");
            return NULL;
        }
        return pc_rl_cluster_create(c, err);
    }
    return pc_rl_redis_create(c, err);
}
