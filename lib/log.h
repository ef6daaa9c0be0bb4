/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	log 3h - logging to the journal, syslog (LOG_MAIL) or stderr
 * DESCRIPTION
 *	One line per event, Postfix style: "syslog_name/program[pid]: queue
 *	id: text". Every byte that came from a peer goes through
 *	pc_printable() before it reaches a log line, a header or the backend,
 *	and through pc_log_field() or pc_log_text() before it reaches a log
 *	line, so that no peer can write a field ("to=<...>, status=sent") of
 *	its own into our lines (which pflogsumm and fail2ban read).
 *
 *	Lines with fields (queue id, client, filter, rule) carry them as
 *	journal fields (PORTCULLIS_QUEUE_ID...) and as JSON members.
 * SEE ALSO
 *	sd_journal_send(3), syslog(3), portcullis(8) "LOGGING"
 */
#ifndef PC_LOG_H
#define PC_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <syslog.h>

enum pc_log_target {
    PC_LOG_AUTO,    /* the journal when stderr is connected to it, else stderr */
    PC_LOG_STDERR,  /* syslog-like lines; bare "<N>text" when stderr is the journal */
    PC_LOG_SYSLOG,  /* syslog(3), facility LOG_MAIL */
    PC_LOG_JOURNAL, /* sd_journal_send(3) with structured fields */
};

enum pc_log_format { PC_LOG_TEXT, PC_LOG_JSON };

/* What a line is about; every member may be NULL. */
struct pc_log_fields {
    const char *prog; /* after the syslog name: "smtpd" (default), "smtp", "lmtp"... */
    const char *queue_id;
    const char *client; /* "name[addr]" */
    const char *filter, *rule;
};

/* pc_log_init - syslog name (ident) and target; AUTO is resolved here */
void pc_log_init(const char *name, enum pc_log_target, int facility);
void pc_log_set_format(enum pc_log_format);
enum pc_log_format pc_log_get_format(void);
/* pc_log_get_target - the target in use (never AUTO) */
enum pc_log_target pc_log_get_target(void);
/* pc_log_parse_target - "auto", "stderr", "syslog" or "journal" */
bool pc_log_parse_target(const char *, enum pc_log_target *);
/* pc_log_reopen - SIGUSR1: reconnect to syslog, reopen what can be reopened */
void pc_log_reopen(void);
void pc_log_set_verbose(int level);
/* pc_log_batch - from now on, lines of the calling thread (the event loop's) to stderr are
 * batched: wake(arg) is called once per batch and must make the loop call pc_log_woken()
 * before it sleeps (an event activated for this pass). NULL writes each line at once again.
 * Syslog and the journal are never batched; errors and worse are written at once. */
void pc_log_batch(void (*wake)(void *), void *arg);
/* pc_log_woken - the flush wake() scheduled */
void pc_log_woken(void);
/* pc_log_flush - write what is batched now (before a reply to a peer, before exec or exit) */
void pc_log_flush(void);
extern int pc_verbose;

void pc_log(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pc_logf(int prio, const struct pc_log_fields *, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* pc_log_event - JSON format only: one object with these members added (each "key":value,
 * already encoded, comma separated); text format: nothing */
void pc_log_event(int prio, const struct pc_log_fields *, const char *members);
void pc_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define pc_info(...) pc_log(LOG_INFO, __VA_ARGS__)
#define pc_warn(...) pc_log(LOG_WARNING, __VA_ARGS__)
#define pc_err(...)  pc_log(LOG_ERR, __VA_ARGS__)
#define pc_debug(...)                                                                              \
    do {                                                                                           \
        if (pc_verbose)                                                                            \
            pc_log(LOG_DEBUG, __VA_ARGS__);                                                        \
    } while (0)

/* pc_printable - replace control and non-ASCII bytes with '?', in place */
char *pc_printable(char *s);
/* pc_printable_copy - sanitised, truncated copy of n bytes into dst[size] */
char *pc_printable_copy(char *dst, size_t size, const char *src, size_t n);

/* pc_log_field - a peer's value (address, HELO, name) for a log field: bytes that could end the
 * field or start another one (<>,;()[] space \ controls and 8-bit) become \xHH; truncated */
char *pc_log_field(char *dst, size_t size, const char *src);
/* pc_log_text - a reply text for a log line: '=', '\\', controls and 8-bit become \xHH, so
 * that no "name=value" field can be forged inside it; truncated */
char *pc_log_text(char *dst, size_t size, const char *src);
/* pc_json_str - src as a JSON string literal with quotes; truncated */
char *pc_json_str(char *dst, size_t size, const char *src);

#endif
