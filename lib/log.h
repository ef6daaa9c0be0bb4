/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	log 3h - logging to syslog (LOG_MAIL) or stderr
 * DESCRIPTION
 *	One line per event, Postfix style. Every byte that came from a peer
 *	goes through pc_printable() before it reaches a log line, a header or
 *	the backend.
 */
#ifndef PC_LOG_H
#define PC_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

enum pc_log_target { PC_LOG_STDERR, PC_LOG_SYSLOG };

void pc_log_init(const char *ident, enum pc_log_target, int facility);
void pc_log_set_verbose(int level);
/* pc_log_reopen - reopen the log after rotation (SIGUSR1) */
void pc_log_reopen(void);
extern int pc_verbose;
void pc_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pc_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define pc_info(...) pc_log(LOG_INFO, __VA_ARGS__)
#define pc_warn(...) pc_log(LOG_WARNING, __VA_ARGS__)
#define pc_err(...) pc_log(LOG_ERR, __VA_ARGS__)
#define pc_debug(...)                                                                              \
    do {                                                                                           \
        if (pc_verbose)                                                                            \
            pc_log(LOG_DEBUG, __VA_ARGS__);                                                        \
    } while (0)

/* pc_printable - replace control and non-ASCII bytes with '?', in place */
char *pc_printable(char *s);
/* pc_printable_copy - sanitised, truncated copy of n bytes into dst[size] */
char *pc_printable_copy(char *dst, size_t size, const char *src, size_t n);

#endif
