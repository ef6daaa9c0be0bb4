/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	log 3 - logging to the journal, syslog (LOG_MAIL) or stderr
 * DESCRIPTION
 *	Lines are Postfix's: "syslog_name/program[pid]: text", with
 *	"warning: ", "error: " and "fatal: " before the text of those
 *	priorities, so that log tools written for Postfix (pflogsumm,
 *	fail2ban) read ours.
 *
 *	The journal gets each line through sd_journal_sendv(3) with its
 *	priority, SYSLOG_IDENTIFIER and our structured fields. Standard error
 *	gets a syslog-like line (timestamp, host, ident) unless it is itself
 *	connected to the journal (JOURNAL_STREAM names its device and inode,
 *	systemd.exec(5)): then the line is only "<priority>text", since the
 *	journal adds the rest and a second timestamp and ident would only be
 *	noise. "auto" picks the journal in that case and standard error
 *	otherwise.
 *
 *	The JSON format writes one object per line instead of the text (for
 *	log shippers); pc_log_event() adds summary objects that only exist
 *	in that format.
 *
 *	Lines may come from worker threads: one mutex around the output.
 *
 *	Standard error batches (pc_log_batch): the event loop's own lines are
 *	kept in a buffer of PIPE_BUF bytes and written with one write(2) when
 *	the loop pass ends (the loop's wake function schedules pc_log_flush()
 *	as the last event of the pass), before any reply reaches a client
 *	(its writer calls pc_log_flush() first), when the buffer is full, and
 *	at exit and before a fork. A batch never exceeds PIPE_BUF, so each
 *	write stays atomic on a pipe shared by several workers, as one line
 *	was. Errors and worse, and lines of other threads, are written at once
 *	(after what is batched, keeping the order). Syslog and the journal
 *	take one datagram per line, as Postfix sends them: never batched.
 * SEE ALSO
 *	sd_journal_send(3), systemd.exec(5) JOURNAL_STREAM, RFC 8259 (JSON)
 */
#include "lib/log.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <time.h>
#include <unistd.h>

int pc_verbose;
static enum pc_log_target pc_log_target = PC_LOG_STDERR;
static enum pc_log_format pc_log_format = PC_LOG_TEXT;
static char pc_log_name[64] = "portcullis";
static char pc_log_host[64] = "localhost";
static int pc_log_facility = LOG_MAIL;
static bool pc_stderr_journal; /* stderr is a journal stream */
static pthread_mutex_t pc_log_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t pc_log_pid; /* getpid() is a system call in glibc >= 2.25: once per process */

/* The stderr batch: only the loop thread appends, any thread flushes (under pc_log_lock). */
static char pc_batch[PIPE_BUF];
static _Atomic size_t pc_batch_len;
static void (*pc_batch_wake)(void *); /* schedules pc_log_flush() at the end of the loop pass */
static void *pc_batch_arg;
static pthread_t pc_batch_thread; /* the loop's thread */
static bool pc_batch_woken;       /* a flush is scheduled */
static bool pc_batch_wake_due;    /* call pc_batch_wake once pc_log_lock is released */

/* Idents handed to openlog(): glibc keeps the pointer, so each lives as long as we do. */
#define PC_IDENTS 16
static char pc_idents[PC_IDENTS][96];
static const char *pc_syslog_ident;

/* The "Mmm dd hh:mm:ss host ident[pid]: " of stderr lines, made once per second and ident
 * (one per slot of pc_idents: a transaction's lines alternate between smtpd and smtp). */
static struct pc_stamp {
    time_t sec; /* -1: to be made */
    size_t len;
    char text[200];
} pc_stamps[PC_IDENTS];

/* stamps_forget - the host, pid or an ident changed */
static void stamps_forget(void)
{
    for (int i = 0; i < PC_IDENTS; i++)
        pc_stamps[i].sec = -1;
}

static void pc_log_hooks(void);

/* batch_write_locked - the batch to stderr (pc_log_lock held) */
static void batch_write_locked(void)
{
    size_t n = atomic_load_explicit(&pc_batch_len, memory_order_relaxed);

    if (n && write(2, pc_batch, n) < 0) {
        /* Nowhere left to say it. */
    }
    atomic_store_explicit(&pc_batch_len, 0, memory_order_relaxed);
}

/* pc_log_flush - write what is batched */
void pc_log_flush(void)
{
    if (atomic_load_explicit(&pc_batch_len, memory_order_relaxed) == 0)
        return;
    pthread_mutex_lock(&pc_log_lock);
    batch_write_locked();
    pthread_mutex_unlock(&pc_log_lock);
}

/* pc_log_batch - batch the calling thread's stderr lines until wake(arg)'s flush; NULL ends */
void pc_log_batch(void (*wake)(void *), void *arg)
{
    pc_log_hooks();
    pthread_mutex_lock(&pc_log_lock);
    batch_write_locked();
    pc_batch_wake = wake;
    pc_batch_arg = arg;
    pc_batch_thread = pthread_self();
    pc_batch_woken = pc_batch_wake_due = false;
    pthread_mutex_unlock(&pc_log_lock);
}

/* pc_log_woken - the scheduled flush runs (called by it, on the loop) */
void pc_log_woken(void)
{
    pc_batch_woken = false;
    pc_log_flush();
}

/* before_fork - nothing batched may be written twice (by the child too) */
static void before_fork(void)
{
    pthread_mutex_lock(&pc_log_lock);
    batch_write_locked();
}

/* after_fork_parent - the lock taken by before_fork */
static void after_fork_parent(void)
{
    pthread_mutex_unlock(&pc_log_lock);
}

/* after_fork_child - a new pid; the parent's loop is not ours: write at once until we batch */
static void after_fork_child(void)
{
    pc_log_pid = 0;
    stamps_forget();
    pc_batch_wake = NULL;
    pc_batch_woken = pc_batch_wake_due = false;
    pthread_mutex_unlock(&pc_log_lock);
}

/* pc_log_hooks - fork and exit handlers, once */
static void pc_log_hooks(void)
{
    static bool hooked;

    if (!hooked) {
        hooked = true;
        pthread_atfork(before_fork, after_fork_parent, after_fork_child);
        atexit(pc_log_flush);
    }
}

/* pc_log_getpid - our pid, asked once (and again after a fork) */
static pid_t pc_log_getpid(void)
{
    pc_log_hooks();
    if (pc_log_pid == 0)
        pc_log_pid = getpid();
    return pc_log_pid;
}

/* stderr_is_journal - JOURNAL_STREAM is "device:inode" of the stream stderr is connected to */
static bool stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(2, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* pc_log_parse_target - name to target */
bool pc_log_parse_target(const char *s, enum pc_log_target *out)
{
    static const char *const names[] = {"auto", "stderr", "syslog", "journal"};

    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (enum pc_log_target)i;
            return true;
        }
    return false;
}

/* pc_log_init - choose the log target */
void pc_log_init(const char *name, enum pc_log_target target, int facility)
{
    char *dot;

    pthread_mutex_lock(&pc_log_lock);
    batch_write_locked(); /* lines of the old name go out under it */
    stamps_forget();
    snprintf(pc_log_name, sizeof(pc_log_name), "%s", name && *name ? name : "portcullis");
    if (gethostname(pc_log_host, sizeof(pc_log_host) - 1) < 0)
        snprintf(pc_log_host, sizeof(pc_log_host), "localhost");
    pc_log_host[sizeof(pc_log_host) - 1] = 0;
    if ((dot = strchr(pc_log_host, '.')) != NULL)
        *dot = 0; /* syslog's short host name */
    pc_stderr_journal = stderr_is_journal();
    if (target == PC_LOG_AUTO)
        target = pc_stderr_journal ? PC_LOG_JOURNAL : PC_LOG_STDERR;
    pc_log_target = target;
    pc_log_facility = facility ? facility : LOG_MAIL;
    pc_syslog_ident = NULL;
    memset(pc_idents, 0, sizeof(pc_idents));
    if (target == PC_LOG_SYSLOG) {
        closelog();
        snprintf(pc_idents[0], sizeof(pc_idents[0]), "%s", pc_log_name);
        pc_syslog_ident = pc_idents[0];
        openlog(pc_syslog_ident, LOG_PID | LOG_NDELAY, pc_log_facility);
    }
    pthread_mutex_unlock(&pc_log_lock);
}

/* pc_log_set_format - text or JSON */
void pc_log_set_format(enum pc_log_format f)
{
    pc_log_format = f;
}

/* pc_log_get_format - the format in use */
enum pc_log_format pc_log_get_format(void)
{
    return pc_log_format;
}

/* pc_log_get_target - the target in use */
enum pc_log_target pc_log_get_target(void)
{
    return pc_log_target;
}

/* pc_log_reopen - SIGUSR1: a new connection to syslog (after a syslog daemon restart) */
void pc_log_reopen(void)
{
    pthread_mutex_lock(&pc_log_lock);
    pc_stderr_journal = stderr_is_journal();
    if (pc_log_target == PC_LOG_SYSLOG) {
        closelog();
        openlog(pc_syslog_ident ? pc_syslog_ident : pc_log_name, LOG_PID | LOG_NDELAY,
                pc_log_facility);
    }
    pthread_mutex_unlock(&pc_log_lock);
}

/* pc_log_set_verbose - debug logging on or off */
void pc_log_set_verbose(int level)
{
    pc_verbose = level;
}

/* ident_for - "name/prog", stable storage for openlog() (pc_log_lock held) */
static const char *ident_for(const char *prog)
{
    char want[96];
    int i;
    size_t nl = strlen(pc_log_name), pl = strlen(prog);

    /* Most lines name a program of the last line: no formatting then. */
    if (nl + 1 + pl < sizeof(want) && pc_idents[0][0]) {
        for (i = 0; i < PC_IDENTS && pc_idents[i][0]; i++)
            if (memcmp(pc_idents[i], pc_log_name, nl) == 0 && pc_idents[i][nl] == '/' &&
                strcmp(pc_idents[i] + nl + 1, prog) == 0)
                return pc_idents[i];
    }
    snprintf(want, sizeof(want), "%s/%s", pc_log_name, prog);
    for (i = 0; i < PC_IDENTS && pc_idents[i][0]; i++)
        if (strcmp(pc_idents[i], want) == 0)
            return pc_idents[i];
    if (i == PC_IDENTS)
        i = PC_IDENTS - 1; /* more programs than we name: reuse the last slot */
    snprintf(pc_idents[i], sizeof(pc_idents[i]), "%s", want);
    pc_stamps[i].sec = -1; /* a reused slot is another ident at the same address */
    return pc_idents[i];
}

/* pc_json_str - a JSON string literal (RFC 8259 7); 8-bit bytes as \u00XX */
char *pc_json_str(char *dst, size_t size, const char *src)
{
    size_t o = 0;

    if (size < 3) {
        if (size)
            dst[0] = 0;
        return dst;
    }
    dst[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)(src ? src : ""); *p; p++) {
        char esc[8];
        size_t n;
        if (*p == '"' || *p == '\\')
            n = (size_t)snprintf(esc, sizeof(esc), "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f)
            n = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", *p);
        else
            esc[0] = (char)*p, n = 1;
        if (o + n + 2 > size)
            break;
        memcpy(dst + o, esc, n);
        o += n;
    }
    dst[o++] = '"';
    dst[o] = 0;
    return dst;
}

/* escape_set - copy with the bytes that bad() names as \xHH */
static char *escape_set(char *dst, size_t size, const char *src, bool (*bad)(unsigned char))
{
    size_t o = 0;

    if (size == 0)
        return dst;
    for (const unsigned char *p = (const unsigned char *)(src ? src : ""); *p; p++) {
        if (bad(*p)) {
            if (o + 5 > size)
                break;
            snprintf(dst + o, 5, "\\x%02x", *p);
            o += 4;
        } else {
            if (o + 2 > size)
                break;
            dst[o++] = (char)*p;
        }
    }
    dst[o] = 0;
    return dst;
}

/* field_bad - what could end a field value or start another one */
static bool field_bad(unsigned char c)
{
    return c <= 0x20 || c >= 0x7f || strchr("<>,;()[]\\", c) != NULL;
}

/* text_bad - what could forge "name=value" inside a text */
static bool text_bad(unsigned char c)
{
    return c < 0x20 || c >= 0x7f || c == '=' || c == '\\';
}

/* pc_log_field - a peer's value for a log field */
char *pc_log_field(char *dst, size_t size, const char *src)
{
    return escape_set(dst, size, src, field_bad);
}

/* pc_log_text - a reply text for a log line */
char *pc_log_text(char *dst, size_t size, const char *src)
{
    return escape_set(dst, size, src, text_bad);
}

/* level_prefix - Postfix's "warning: " and friends; nothing for info and notice */
static const char *level_prefix(int prio)
{
    static const char *const names[] = {
        "panic: ", "panic: ", "fatal: ", "error: ", "warning: ", "", "", "debug: "};
    return names[prio & 7];
}

/* json_object - {"time":...,"message":...} with the fields and extra members */
static void json_object(char *out, size_t size, int prio, const char *ident,
                        const struct pc_log_fields *f, const char *msg, const char *members)
{
    static const char *const lv[] = {"emerg",   "alert",  "crit", "err",
                                     "warning", "notice", "info", "debug"};
    char stamp[40], js[2400];
    struct timespec ts;
    struct tm tm;
    size_t o;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    o = (size_t)snprintf(out, size, "{\"time\":\"%s.%06ldZ\",\"host\":%s,\"ident\":", stamp,
                         ts.tv_nsec / 1000, pc_json_str(js, sizeof(js), pc_log_host));
    o += (size_t)snprintf(out + (o < size ? o : size), o < size ? size - o : 0,
                          "%s,\"pid\":%ld,\"level\":\"%s\"", pc_json_str(js, sizeof(js), ident),
                          (long)pc_log_getpid(), lv[prio & 7]);
    const char *names[] = {"queue_id", "client", "filter", "rule"};
    const char *vals[] = {f ? f->queue_id : NULL, f ? f->client : NULL, f ? f->filter : NULL,
                          f ? f->rule : NULL};
    for (int i = 0; i < 4; i++)
        if (vals[i] && o < size)
            o += (size_t)snprintf(out + o, size - o, ",\"%s\":%s", names[i],
                                  pc_json_str(js, sizeof(js), vals[i]));
    if (members && *members && o < size)
        o += (size_t)snprintf(out + o, size - o, ",%s", members);
    if (msg && o < size)
        o += (size_t)snprintf(out + o, size - o, ",\"message\":%s",
                              pc_json_str(js, sizeof(js), msg));
    if (o + 2 > size) {
        /* Too long for one line: say so in valid JSON rather than cut an object in half. */
        snprintf(out, size,
                 "{\"time\":\"%s.%06ldZ\",\"level\":\"err\",\"message\":\"log "
                 "record too long\"}",
                 stamp, ts.tv_nsec / 1000);
        return;
    }
    snprintf(out + o, size - o, "}");
}

/* stamp - "Mmm dd hh:mm:ss host ident[pid]: ", formatted once per second and ident */
static const char *stamp(const char *ident, size_t *len)
{
    time_t now = time(NULL);
    ptrdiff_t i = (ident - pc_idents[0]) / (ptrdiff_t)sizeof(pc_idents[0]);
    static struct pc_stamp other; /* not one of ours (cannot happen): made each time */
    struct pc_stamp *st = i >= 0 && i < PC_IDENTS ? &pc_stamps[i] : &other;

    if (st == &other)
        other.sec = -1;

    if (now != st->sec) {
        char when[32];
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(when, sizeof(when), "%b %e %H:%M:%S", &tm);
        int n = snprintf(st->text, sizeof(st->text), "%s %s %s[%ld]: ", when, pc_log_host, ident,
                         (long)pc_log_getpid());
        st->len = n < 0 ? 0 : (size_t)n < sizeof(st->text) ? (size_t)n : sizeof(st->text) - 1;
        st->sec = now;
    }
    *len = st->len;
    return st->text;
}

/* put - one finished line (newline included) to stderr: batched, or written at once */
static void put(int prio, const char *line, size_t n)
{
    size_t have = atomic_load_explicit(&pc_batch_len, memory_order_relaxed);

    if (pc_batch_wake && prio > LOG_ERR && n <= sizeof(pc_batch) &&
        pthread_equal(pthread_self(), pc_batch_thread)) {
        if (have + n > sizeof(pc_batch)) {
            batch_write_locked();
            have = 0;
        }
        memcpy(pc_batch + have, line, n);
        atomic_store_explicit(&pc_batch_len, have + n, memory_order_relaxed);
        if (!pc_batch_woken) /* the loop's lock is not taken under ours: see wake_if_due */
            pc_batch_woken = pc_batch_wake_due = true;
        return;
    }
    batch_write_locked(); /* what came before goes first */
    if (write(2, line, n) < 0) {
        /* Nowhere left to say it. */
    }
}

/* wake_if_due - after pc_log_lock is released: the loop schedules the flush (only the loop
 * thread batches, so only it finds this due) */
static void wake_if_due(void)
{
    if (pc_batch_wake_due) {
        pc_batch_wake_due = false;
        if (pc_batch_wake)
            pc_batch_wake(pc_batch_arg);
    }
}

/* emit_stderr - one line, one write(2) or a place in the batch: lines never interleave */
static void emit_stderr(int prio, const char *ident, const char *text, bool bare)
{
    char buf[8192];
    size_t n, tl = strlen(text);

    if (pc_log_format == PC_LOG_JSON) {
        /* The object has its own time, host and ident: nothing may precede it. */
        n = 0;
    } else if (bare) {
        /* The journal reads "<N>" as the priority (sd-daemon(3)) and adds time and ident. */
        buf[0] = '<', buf[1] = (char)('0' + (prio & 7)), buf[2] = '>';
        n = 3;
    } else {
        const char *p = stamp(ident, &n);
        memcpy(buf, p, n);
    }
    if (tl > sizeof(buf) - 1 - n)
        tl = sizeof(buf) - 1 - n;
    memcpy(buf + n, text, tl);
    n += tl;
    buf[n++] = '\n';
    put(prio, buf, n);
}

/* emit_journal - the native protocol with our fields; false when the journal is gone */
static bool emit_journal(int prio, const char *ident, const struct pc_log_fields *f,
                         const char *text)
{
    char msg[4200], pr[16], fac[24], id[128], pid[32], q[80], cl[400], fi[80], ru[200];
    struct iovec iov[10];
    int n = 0;

#define PC_IOV(buf, ...)                                                                           \
    do {                                                                                           \
        int k_ = snprintf(buf, sizeof(buf), __VA_ARGS__);                                          \
        iov[n].iov_base = buf;                                                                     \
        iov[n++].iov_len = k_ < (int)sizeof(buf) ? (size_t)k_ : sizeof(buf) - 1;                   \
    } while (0)
    PC_IOV(msg, "MESSAGE=%s", text);
    PC_IOV(pr, "PRIORITY=%d", prio & 7);
    PC_IOV(fac, "SYSLOG_FACILITY=%d", pc_log_facility >> 3);
    PC_IOV(id, "SYSLOG_IDENTIFIER=%s", ident);
    PC_IOV(pid, "SYSLOG_PID=%ld", (long)pc_log_getpid());
    if (f && f->queue_id)
        PC_IOV(q, "PORTCULLIS_QUEUE_ID=%s", f->queue_id);
    if (f && f->client)
        PC_IOV(cl, "PORTCULLIS_CLIENT=%s", f->client);
    if (f && f->filter)
        PC_IOV(fi, "PORTCULLIS_FILTER=%s", f->filter);
    if (f && f->rule)
        PC_IOV(ru, "PORTCULLIS_RULE=%s", f->rule);
#undef PC_IOV
    return sd_journal_sendv(iov, n) >= 0;
}

/* emit - one finished line to the target */
static void emit(int prio, const char *ident, const struct pc_log_fields *f, const char *text)
{
    switch (pc_log_target) {
    case PC_LOG_JOURNAL:
        if (emit_journal(prio, ident, f, text))
            return;
        emit_stderr(prio, ident, text, pc_stderr_journal);
        return;
    case PC_LOG_SYSLOG:
        if (pc_syslog_ident == NULL || strcmp(pc_syslog_ident, ident) != 0) {
            pc_syslog_ident = ident;
            openlog(ident, LOG_PID | LOG_NDELAY, pc_log_facility);
        }
        syslog(prio, "%s", text);
        return;
    default:
        emit_stderr(prio, ident, text, pc_stderr_journal);
    }
}

/* pc_vlogf - format one line and send it */
static void pc_vlogf(int prio, const struct pc_log_fields *f, const char *fmt, va_list ap)
{
    char text[2100];

    /* Verbosity below zero silences routine lines (fuzzers, benchmarks). */
    if (pc_verbose < 0 && prio >= LOG_NOTICE)
        return;
    /* Below -1 errors and warnings too (fuzz targets that play a hostile peer). */
    if (pc_verbose < -1 && prio >= LOG_ERR)
        return;
    /* "warning: " and the like, then at most 2047 bytes of the line */
    const char *lp = level_prefix(prio);
    size_t pl = strlen(lp);
    memcpy(text, lp, pl);
    vsnprintf(text + pl, 2048, fmt, ap);
    pthread_mutex_lock(&pc_log_lock);
    const char *ident = ident_for(f && f->prog ? f->prog : "smtpd");
    if (pc_log_format == PC_LOG_JSON) {
        char obj[8192];
        json_object(obj, sizeof(obj), prio, ident, f, text, NULL);
        emit(prio, ident, f, obj);
    } else {
        emit(prio, ident, f, text);
    }
    pthread_mutex_unlock(&pc_log_lock);
    wake_if_due();
}

/* pc_log - log one line */
void pc_log(int prio, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pc_vlogf(prio, NULL, fmt, ap);
    va_end(ap);
}

/* pc_logf - log one line with fields */
void pc_logf(int prio, const struct pc_log_fields *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pc_vlogf(prio, f, fmt, ap);
    va_end(ap);
}

/* pc_log_event - a JSON-only record (the transaction summary) */
void pc_log_event(int prio, const struct pc_log_fields *f, const char *members)
{
    char obj[8192];

    if (pc_log_format != PC_LOG_JSON || (pc_verbose < 0 && prio >= LOG_NOTICE))
        return;
    pthread_mutex_lock(&pc_log_lock);
    const char *ident = ident_for(f && f->prog ? f->prog : "smtpd");
    json_object(obj, sizeof(obj), prio, ident, f, NULL, members);
    emit(prio, ident, f, obj);
    pthread_mutex_unlock(&pc_log_lock);
    wake_if_due();
}

/* pc_fatal - log and exit */
void pc_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pc_vlogf(LOG_CRIT, NULL, fmt, ap);
    va_end(ap);
    exit(1); /* atexit: pc_log_flush() */
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
