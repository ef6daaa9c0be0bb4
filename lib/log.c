/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	log 3 - logging to syslog (LOG_MAIL) or stderr
 * DESCRIPTION
 *	stderr lines carry a timestamp and the program name so that the
 *	foreground (systemd) and test modes read like syslog.
 */
#include "lib/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int pc_verbose;
static enum pc_log_target pc_log_target = PC_LOG_STDERR;
static const char *pc_log_ident = "portcullis";

/* pc_log_init - choose the log target */
void pc_log_init(const char *ident, enum pc_log_target target, int facility)
{
    pc_log_ident = ident;
    pc_log_target = target;
    if (target == PC_LOG_SYSLOG)
        openlog(ident, LOG_PID | LOG_NDELAY, facility);
}

/* pc_log_reopen - reopen the log after rotation (SIGUSR1) */
void pc_log_reopen(void)
{
    /* syslog: a fresh connection to /dev/log (syslogd restarted); stderr belongs to our parent. */
    if (pc_log_target == PC_LOG_SYSLOG) {
        closelog();
        openlog(pc_log_ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
    }
}

/* pc_log_set_verbose - debug logging on or off */
void pc_log_set_verbose(int level)
{
    pc_verbose = level;
}

/* pc_vlog - format one line and send it */
static void pc_vlog(int prio, const char *fmt, va_list ap)
{
    char line[2048];

    /* Verbosity below zero silences routine lines (fuzzers, benchmarks). */
    if (pc_verbose < 0 && prio >= LOG_NOTICE)
        return;
    vsnprintf(line, sizeof(line), fmt, ap);
    if (pc_log_target == PC_LOG_SYSLOG) {
        syslog(prio, "%s", line);
        return;
    }
    static const char *names[] = {"emerg", "alert", "crit", "error",
                                  "warning", "notice", "info", "debug"};
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(stamp, sizeof(stamp), "%b %e %H:%M:%S", &tm);
    const char *level = (prio == LOG_INFO || prio == LOG_NOTICE) ? "" : names[prio & 7];
    fprintf(stderr, "%s %s[%ld]: %s%s%s\n", stamp, pc_log_ident, (long)getpid(), level,
            *level ? ": " : "", line);
}

/* pc_log - log one line */
void pc_log(int prio, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pc_vlog(prio, fmt, ap);
    va_end(ap);
}

/* pc_fatal - log and exit */
void pc_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pc_vlog(LOG_CRIT, fmt, ap);
    va_end(ap);
    exit(1);
}

/* pc_printable - replace control and non-ASCII bytes, in place */
char *pc_printable(char *s)
{
    for (unsigned char *p = (unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p >= 0x7f)
            *p = '?';
    return s;
}

/* pc_printable_copy - sanitised, truncated copy */
char *pc_printable_copy(char *dst, size_t size, const char *src, size_t n)
{
    size_t i;

    if (size == 0)
        return dst;
    for (i = 0; i < n && i + 1 < size; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
    }
    dst[i] = 0;
    return dst;
}
