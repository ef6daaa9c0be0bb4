/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	pool 3 - per-session and per-transaction memory pools
 * DESCRIPTION
 *	Bump allocator over a list of chunks. Large requests get a chunk of
 *	their own so that a pool never wastes more than one chunk's tail.
 *	Allocation failure is fatal: a gateway that cannot allocate a few
 *	bytes cannot keep any promise, and the supervisor restarts it.
 */
#include "lib/pool.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/log.h"

#define PC_POOL_ALIGN 16

struct pc_chunk {
    struct pc_chunk *next;
    size_t size, used;
    _Alignas(PC_POOL_ALIGN) unsigned char data[];
};

struct pc_cleanup {
    struct pc_cleanup *next;
    void (*fn)(void *);
    void *arg;
};

struct pc_pool {
    struct pc_chunk *head;
    struct pc_cleanup *cleanups;
    size_t chunk_size, total;
};

/* pc_xmalloc - allocate or die */
static void *pc_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL)
        pc_fatal("out of memory allocating %zu bytes", n);
    return p;
}

/* pc_pool_create - new empty pool */
struct pc_pool *pc_pool_create(size_t chunk_hint)
{
    struct pc_pool *p = pc_xmalloc(sizeof(*p));

    p->head = NULL;
    p->cleanups = NULL;
    p->chunk_size = chunk_hint < 256 ? 256 : chunk_hint;
    p->total = 0;
    return p;
}

/* pc_pool_destroy - run cleanups, release everything */
void pc_pool_destroy(struct pc_pool *p)
{
    if (p == NULL)
        return;
    while (p->cleanups) {
        struct pc_cleanup *c = p->cleanups;
        p->cleanups = c->next;
        c->fn(c->arg);
    }
    while (p->head) {
        struct pc_chunk *c = p->head;
        p->head = c->next;
        free(c);
    }
    free(p);
}

/* pc_pool_alloc - aligned allocation from the pool */
void *pc_pool_alloc(struct pc_pool *p, size_t n)
{
    struct pc_chunk *c = p->head;
    size_t need = (n + PC_POOL_ALIGN - 1) & ~(size_t)(PC_POOL_ALIGN - 1);

    if (need < n)
        pc_fatal("pool allocation overflow");
    if (c == NULL || c->size - c->used < need) {
        size_t size = need > p->chunk_size / 4 ? need : p->chunk_size;
        c = pc_xmalloc(sizeof(*c) + size);
        c->size = size;
        c->used = 0;
        if (size == need && p->head) {
            /* A big block goes behind the current chunk, keeping its tail usable. */
            c->next = p->head->next;
            p->head->next = c;
        } else {
            c->next = p->head;
            p->head = c;
        }
    }
    void *r = c->data + c->used;
    c->used += need;
    p->total += need;
    return r;
}

/* pc_pool_zalloc - zeroed allocation */
void *pc_pool_zalloc(struct pc_pool *p, size_t n)
{
    void *r = pc_pool_alloc(p, n);

    memset(r, 0, n);
    return r;
}

/* pc_pool_strndup - copy at most n bytes and terminate */
char *pc_pool_strndup(struct pc_pool *p, const char *s, size_t n)
{
    char *r = pc_pool_alloc(p, n + 1);

    memcpy(r, s, n);
    r[n] = 0;
    return r;
}

/* pc_pool_strdup - copy a string */
char *pc_pool_strdup(struct pc_pool *p, const char *s)
{
    return s ? pc_pool_strndup(p, s, strlen(s)) : NULL;
}

/* pc_pool_vprintf - formatted string in the pool */
char *pc_pool_vprintf(struct pc_pool *p, const char *fmt, va_list ap)
{
    va_list aq;
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, aq);
    va_end(aq);
    if (n < 0)
        n = 0;
    char *r = pc_pool_alloc(p, (size_t)n + 1);
    vsnprintf(r, (size_t)n + 1, fmt, ap);
    return r;
}

/* pc_pool_printf - formatted string in the pool */
char *pc_pool_printf(struct pc_pool *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *r = pc_pool_vprintf(p, fmt, ap);
    va_end(ap);
    return r;
}

/* pc_pool_cleanup - run fn(arg) when the pool is destroyed */
void pc_pool_cleanup(struct pc_pool *p, void (*fn)(void *), void *arg)
{
    struct pc_cleanup *c = pc_pool_alloc(p, sizeof(*c));

    c->fn = fn;
    c->arg = arg;
    c->next = p->cleanups;
    p->cleanups = c;
}

/* pc_pool_used - bytes handed out, for limits and statistics */
size_t pc_pool_used(const struct pc_pool *p)
{
    return p->total;
}
