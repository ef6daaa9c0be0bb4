/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	qid 3h - queue ids unique across processes, hosts and restarts
 * DESCRIPTION
 *	Like Postfix's long queue ids: the time in seconds and microseconds,
 *	then a per-process random part plus a sequence number, written in
 *	digits and consonants (no vowels, so no words). Two gateways that
 *	start a transaction in the same microsecond differ in the random part
 *	(45 bits drawn from getrandom(2) at start and after a fork).
 */
#ifndef PC_QID_H
#define PC_QID_H

#include <stddef.h>
#include <time.h>

#define PC_QID_LEN 18

/* pc_qid_make - a new id into buf (size > PC_QID_LEN) */
void pc_qid_make(char *buf, size_t size);
/* pc_qid_make_at - the same at a given time (tests) */
void pc_qid_make_at(char *buf, size_t size, const struct timespec *);

#endif
