/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	greylist 3 - the greylisting rule, the in-process store, the Redis script
 * DESCRIPTION
 *	See policy/greylist.h. The in-process store is a chained hash table
 *	keyed by 32 bytes: the key's own SHA-256 digest (pc_rl_key), or its hash,
 *	with two LRU lists, one for pending and one for
 *	allowed records; a lookup that finds an expired record frees it. The
 *	Redis script keeps "P:<first ms>" (pending, PX retry_window) or "A"
 *	(allowed, PX lifetime) under the key, and runs the same rule as
 *	pc_gl_step() in one atomic step.
 * SEE ALSO
 *	policy/greylist.h
 */
#include "policy/greylist.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ARGV: delay, retry window, lifetime in ms. Returns {outcome, retry_ms}. */
static const char gl_script[] =
    "if redis.replicate_commands then pcall(redis.replicate_commands) end\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local delay, window, life = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local v = redis.call('GET', KEYS[1])\n"
    "if v == 'A' then\n"
    "  redis.call('PEXPIRE', KEYS[1], life)\n"
    "  return {1, 0}\n"
    "end\n"
    "local first = v and tonumber(string.sub(v, 3))\n"
    "if not first or now >= first + window then\n"
    "  redis.call('SET', KEYS[1], 'P:' .. string.format('%.0f', now), 'PX', window)\n"
    "  return {0, delay}\n"
    "end\n"
    "if now < first + delay then\n"
    "  return {0, first + delay - now}\n"
    "end\n"
    "redis.call('SET', KEYS[1], 'A', 'PX', life)\n"
    "return {2, 0}\n";

struct gl_ent {
    struct gl_ent *hnext;       /* hash chain */
    struct gl_ent *prev, *next; /* LRU list of its kind, most recent first */
    struct pc_gl_rec rec;
    uint8_t id[32]; /* SHA-256 of the key: a fixed 32 bytes whatever the key's length */
};

struct gl_list {
    struct gl_ent *head, *tail;
};

struct pc_gl_mem {
    struct gl_ent **buckets;
    size_t nbuckets, n, max;
    uint64_t evictions;
    struct gl_list lru[2]; /* [0] pending, [1] allowed */
    uint64_t (*now_ms)(void);
};

/* pc_gl_step - the greylisting rule on one record */
enum pc_gl_outcome pc_gl_step(struct pc_gl_rec *rec, uint64_t now, const struct pc_gl_params *p,
                              uint64_t *retry_ms)
{
    *retry_ms = 0;
    if (rec->known && now >= rec->expires_ms)
        rec->known = false;
    if (!rec->known) {
        rec->known = true;
        rec->allowed = false;
        rec->first_ms = now;
        rec->expires_ms = now + p->window_ms;
        *retry_ms = p->delay_ms;
        return PC_GL_DEFERRED;
    }
    if (rec->allowed) {
        rec->expires_ms = now + p->lifetime_ms;
        return PC_GL_ALLOWED;
    }
    if (now < rec->first_ms + p->delay_ms) {
        *retry_ms = rec->first_ms + p->delay_ms - now;
        return PC_GL_DEFERRED;
    }
    rec->allowed = true;
    rec->expires_ms = now + p->lifetime_ms;
    return PC_GL_PROMOTED;
}

/* real_now_ms - the monotonic clock */
static uint64_t real_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* hash - FNV-1a over the 32 bytes: all of them count, whatever made the key */
static size_t hash(const uint8_t id[32])
{
    uint64_t h = 1469598103934665603ULL;

    for (int i = 0; i < 32; i++)
        h = (h ^ id[i]) * 1099511628211ULL;
    return (size_t)h;
}

/* lru_unlink - take e off its list */
static void lru_unlink(struct gl_list *l, struct gl_ent *e)
{
    *(e->prev ? &e->prev->next : &l->head) = e->next;
    *(e->next ? &e->next->prev : &l->tail) = e->prev;
    e->prev = e->next = NULL;
}

/* lru_push - put e first on its list */
static void lru_push(struct gl_list *l, struct gl_ent *e)
{
    e->prev = NULL;
    e->next = l->head;
    *(l->head ? &l->head->prev : &l->tail) = e;
    l->head = e;
}

/* pc_gl_mem_new - empty table */
struct pc_gl_mem *pc_gl_mem_new(size_t max_entries, uint64_t (*now_ms)(void))
{
    struct pc_gl_mem *m = calloc(1, sizeof(*m));

    if (m == NULL)
        return NULL;
    m->max = max_entries ? max_entries : 1;
    m->nbuckets = 64;
    while (m->nbuckets < m->max / 2)
        m->nbuckets *= 2;
    m->buckets = calloc(m->nbuckets, sizeof(*m->buckets));
    if (m->buckets == NULL) {
        free(m);
        return NULL;
    }
    m->now_ms = now_ms ? now_ms : real_now_ms;
    return m;
}

/* unhash - take e out of its bucket */
static void unhash(struct pc_gl_mem *m, struct gl_ent *e)
{
    struct gl_ent **pp = &m->buckets[hash(e->id) & (m->nbuckets - 1)];

    while (*pp && *pp != e)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = e->hnext;
}

/* forget - drop one record */
static void forget(struct pc_gl_mem *m, struct gl_ent *e)
{
    unhash(m, e);
    lru_unlink(&m->lru[e->rec.allowed], e);
    free(e);
    m->n--;
}

/* pc_gl_mem_free - every record and the table */
void pc_gl_mem_free(struct pc_gl_mem *m)
{
    if (m == NULL)
        return;
    for (int k = 0; k < 2; k++)
        for (struct gl_ent *e = m->lru[k].head, *next; e; e = next) {
            next = e->next;
            free(e);
        }
    free(m->buckets);
    free(m);
}

/* hex_tail - the key ends in 64 hex digits (pc_rl_key): decode them into id */
static bool hex_tail(const char *key, uint8_t id[32])
{
    size_t n = strlen(key);

    if (n < 64)
        return false;
    const char *h = key + n - 64;
    for (int i = 0; i < 64; i++) {
        char c = h[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0)
            return false;
        if (i % 2 == 0)
            id[i / 2] = (uint8_t)(v << 4);
        else
            id[i / 2] |= (uint8_t)v;
    }
    return true;
}

/* pc_gl_mem_check - one attempt */
enum pc_gl_outcome pc_gl_mem_check(struct pc_gl_mem *m, const char *key,
                                   const struct pc_gl_params *p, uint64_t *retry_ms)
{
    uint8_t id[32];
    unsigned idlen = 0;

    if (!hex_tail(key, id)) /* a pc_rl_key digest already: its 32 bytes; else hash it */
        EVP_Digest(key, strlen(key), id, &idlen, EVP_sha256(), NULL);
    uint64_t now = m->now_ms();
    size_t b = hash(id) & (m->nbuckets - 1);
    struct gl_ent *e = m->buckets[b];

    while (e && memcmp(e->id, id, sizeof(id)) != 0)
        e = e->hnext;
    if (e && now >= e->rec.expires_ms) { /* expired: as if never seen */
        forget(m, e);
        e = NULL;
    }
    if (e == NULL) {
        if (m->n >= m->max) {
            struct gl_ent *victim = m->lru[0].tail ? m->lru[0].tail : m->lru[1].tail;
            forget(m, victim);
            m->evictions++;
        }
        if ((e = calloc(1, sizeof(*e))) == NULL) { /* no memory: defer, remember nothing */
            *retry_ms = p->delay_ms;
            return PC_GL_DEFERRED;
        }
        memcpy(e->id, id, sizeof(id));
        e->hnext = m->buckets[b];
        m->buckets[b] = e;
        m->n++;
    } else {
        lru_unlink(&m->lru[e->rec.allowed], e);
    }
    enum pc_gl_outcome o = pc_gl_step(&e->rec, now, p, retry_ms);
    lru_push(&m->lru[e->rec.allowed], e);
    return o;
}

/* pc_gl_mem_entries - records held */
size_t pc_gl_mem_entries(const struct pc_gl_mem *m)
{
    return m->n;
}

/* pc_gl_mem_evictions - records forgotten for room */
uint64_t pc_gl_mem_evictions(const struct pc_gl_mem *m)
{
    return m->evictions;
}

/* pc_gl_redis_script - the Lua text */
const char *pc_gl_redis_script(void)
{
    return gl_script;
}
