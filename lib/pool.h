/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	pool 3h - per-session and per-transaction memory pools
 * DESCRIPTION
 *	A pool hands out memory that lives exactly as long as its owner (a
 *	session, a transaction, a parsed rule set). Nothing allocated from a
 *	pool is freed alone; pc_pool_destroy() runs the registered cleanups in
 *	reverse order and releases every chunk at once.
 */
#ifndef PC_POOL_H
#define PC_POOL_H

#include <stdarg.h>
#include <stddef.h>

struct pc_pool;

struct pc_pool *pc_pool_create(size_t chunk_hint);
void pc_pool_destroy(struct pc_pool *);
void *pc_pool_alloc(struct pc_pool *, size_t);
void *pc_pool_zalloc(struct pc_pool *, size_t);
char *pc_pool_strdup(struct pc_pool *, const char *);
char *pc_pool_strndup(struct pc_pool *, const char *, size_t);
char *pc_pool_printf(struct pc_pool *, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
char *pc_pool_vprintf(struct pc_pool *, const char *fmt, va_list);
void pc_pool_cleanup(struct pc_pool *, void (*fn)(void *), void *arg);
size_t pc_pool_used(const struct pc_pool *);

#endif
