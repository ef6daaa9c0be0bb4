/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	sockread 3h - read a socket bufferevent's input ourselves, 64 KB at a time
 */
#ifndef PC_SOCKREAD_H
#define PC_SOCKREAD_H

#include <stdbool.h>
#include <stddef.h>

struct bufferevent;
struct pc_sockread;

/* pc_sockread_new - take over reading of a socket bufferevent, at most high bytes buffered
 * (off until enabled); NULL when it has no socket yet or memory is short */
struct pc_sockread *pc_sockread_new(struct bufferevent *, size_t high);
/* pc_sockread_enable - want input (true) or not (false); NULL is a no-op */
void pc_sockread_enable(struct pc_sockread *, bool on);
/* pc_sockread_drained - the last read left the socket empty (it got less than it asked for):
 * nothing more had arrived then, so the owner need not ask the kernel (FIONREAD) */
bool pc_sockread_drained(const struct pc_sockread *);
/* pc_sockread_free - stop reading; call it before the bufferevent is freed */
void pc_sockread_free(struct pc_sockread *);

#endif
