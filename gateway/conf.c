/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	conf 3 - the configuration: one table, bounded values, file:line errors
 * DESCRIPTION
 *	pc_params is the public interface of the core: one row per parameter
 *	(section, name, type, default, bounds, validator, doc) generates the
 *	libconfuse options, the checks (keyed by section and name), -p and -n,
 *	and through -p the man page check (tests/docs-check.sh). Each filter
 *	declares its own section's rows in its ops (.params, core/param.h),
 *	generated and checked the same way, plus the rows every filter has
 *	(pc_filter_common: timeout, on_error). A new parameter is one row.
 *	Validators record an error and let the parse go on, so -t reports every
 *	bad value at its line; later steps (filters, backends, listeners) each
 *	run too. The top-level mynetworks fills every filter's trust option
 *	left unset (mynetworks_inherit); a filter declares what it reads from
 *	filters earlier in the chain (ops needs/after), checked at "filters".
 * SEE ALSO
 *	portcullis.conf(5)
 */
#include "gateway/conf.h"

#include <confuse.h>
#include <ctype.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/filter.h"
#include "filters/registry.h"
#include "gateway/authdb.h"
#include "gateway/senderlogin.h"
#include "gateway/tls.h"
#include "lib/addr.h"
#include "lib/log.h"
#include "lib/parse.h"
#include "lib/pool.h"

#define PC_FILTER_TIMEOUT_DEFAULT "30s"

static int validate_top(cfg_t *, cfg_opt_t *);
static int validate_networks(cfg_t *, cfg_opt_t *);
static int validate_hostport(cfg_t *, cfg_opt_t *);
static int validate_chain(cfg_t *, cfg_opt_t *);
static int validate_ps(cfg_t *, cfg_opt_t *);
static int validate_on_error(cfg_t *, cfg_opt_t *);

#define DAY_MS 86400000L
/* Every core parameter. Bounds are the edge of what is sane, not of what is usual. */
static const struct pc_param_row pc_params[] = {
    {"", "hostname", PT_STR, NULL, 0, 0, validate_top, "name in the banner and Received"},
    {"", "banner", PT_STR, "ESMTP", 0, 0, NULL, "text after the hostname in the 220 greeting"},
    {"", "spool_dir", PT_STR, "/tmp", 0, 0, NULL, "where messages past spool_threshold go"},
    {"", "log", PT_STR, "auto", 0, 0, validate_top, "auto, journal, syslog or stderr"},
    {"", "log_format", PT_STR, "text", 0, 0, validate_top, "text or json"},
    {"", "syslog_name", PT_STR, "portcullis", 0, 0, validate_top, "the syslog ident"},
    {"", "user", PT_STR, "", 0, 0, validate_top, "drop to this user after binding"},
    {"", "group", PT_STR, "", 0, 0, validate_top, "drop to this group after binding"},
    {"", "run_as_root", PT_BOOL, "false", 0, 0, NULL, "allow running as root without user"},
    {"", "workers", PT_INT, "0", 0, 1024, NULL, "worker processes; 0: one per CPU"},
    {"", "worker_timeout", PT_DURATION, "30s", 2000, 3600000, NULL,
     "a worker whose loop is silent this long is killed and replaced"},
    {"", "delay_reject", PT_BOOL, "true", 0, 0, NULL, "hold refusals before RCPT until RCPT"},
    {"", "soft_bounce", PT_BOOL, "false", 0, 0, NULL, "turn 5xx refusals into 4xx"},
    {"", "smtputf8", PT_BOOL, "true", 0, 0, NULL, "offer SMTPUTF8 (RFC 6531)"},
    {"", "bare_newline", PT_STR, "reject", 0, 0, validate_top, "reject or normalize"},
    {"", "nul", PT_STR, "reject", 0, 0, validate_top, "a NUL byte in content: reject or strip"},
    {"", "mynetworks", PT_LIST, "{127.0.0.0/8, ::1/128}", 0, 0, validate_networks,
     "the clients every filter trusts unless its own option says otherwise"},
    {"listener", "address", PT_STR, "127.0.0.1:2525", 0, 0, NULL, "host:port to listen on"},
    {"listener", "protocol", PT_STR, "smtp", 0, 0, NULL,
     "smtp, milter (libmilter) or policy (Postfix policy service)"},
    {"listener", "backend", PT_STR, NULL, 0, 0, NULL, "backend name; unset: the first"},
    {"listener", "filters", PT_LIST, "{relay}", 0, 0, validate_chain, "the chain, in order"},
    {"listener", "trusted", PT_BOOL, "false", 0, 0, NULL, "its clients are trusted"},
    {"listener", "dry_run", PT_BOOL, "false", 0, 0, NULL, "log refusals, refuse nothing"},
    {"listener", "proxy_protocol", PT_BOOL, "false", 0, 0, NULL, "a PROXY header comes first"},
    {"listener", "proxy_from", PT_LIST, "{}", 0, 0, validate_networks, "proxies allowed"},
    {"listener", "proxy_timeout", PT_STR, "5s", 0, 0, NULL, "1s..60s for the header"},
    {"listener", "tls", PT_STR, "none", 0, 0, NULL, "none, starttls or implicit"},
    {"listener", "tls_certificate", PT_LIST, "{}", 0, 0, NULL, "PEM chains, the first default"},
    {"listener", "tls_key", PT_LIST, "{}", 0, 0, NULL, "their keys, in the same order"},
    {"listener", "tls_timeout", PT_DURATION, "30s", 1000, 300000, NULL, "a whole handshake"},
    {"listener", "tls_ask_client_certificate", PT_BOOL, "false", 0, 0, NULL,
     "ask for one, for facts"},
    {"listener", "require_tls", PT_BOOL, "false", 0, 0, NULL, "no MAIL before STARTTLS"},
    {"listener", "auth", PT_STR, NULL, 0, 0, NULL, "the auth section AUTH checks against"},
    {"listener", "auth_plaintext", PT_BOOL, "false", 0, 0, NULL, "offer AUTH without TLS"},
    {"listener", "require_auth", PT_BOOL, "false", 0, 0, NULL, "no MAIL before AUTH"},
    {"listener", "auth_max_failures", PT_INT, "5", 1, 1000, NULL, "per client and hour"},
    {"listener", "sender_login_map", PT_STR, NULL, 0, 0, NULL, "who may use which MAIL FROM"},
    {"listener", "postscreen", PT_BOOL, "false", 0, 0, NULL, "run the postscreen checks"},
    {"listener", "chunking", PT_BOOL, "true", 0, 0, NULL, "offer CHUNKING, serve BDAT"},
    {"backend", "address", PT_LIST, NULL, 0, 0, NULL, "host:port, [v6]:port or unix:/path"},
    {"backend", "maildir", PT_STR, NULL, 0, 0, NULL, "instead of address: a Maildir"},
    {"backend", "identity", PT_STR, "xclient", 0, 0, NULL,
     "xclient, xforward, proxy, proxy-v1 or none"},
    {"backend", "lmtp", PT_BOOL, "false", 0, 0, NULL, "speak LMTP"},
    {"backend", "helo_name", PT_STR, NULL, 0, 0, NULL, "our EHLO name; unset: hostname"},
    {"backend", "tls", PT_STR, "none", 0, 0, NULL, "STARTTLS: none, may, encrypt or verify"},
    {"backend", "tls_ca", PT_STR, NULL, 0, 0, NULL, "verify: CA file; unset: the system's"},
    {"backend", "tls_name", PT_STR, NULL, 0, 0, NULL, "verify: the certificate's name"},
    {"auth", "password_file", PT_STR, NULL, 0, 0, NULL, "a passwd-style file of users"},
    {"auth", "dovecot", PT_STR, NULL, 0, 0, NULL, "unix:/path or inet:ADDRESS:PORT"},
    {"auth", "timeout", PT_STR, "10s", 0, 0, NULL, "1s..5m for one answer"},
    {"limits", "max_message_size", PT_INT, "10240000", 1024, 2147483647L, NULL, "bytes"},
    {"limits", "max_recipients", PT_INT, "1000", 1, 100000, NULL, "per transaction"},
    {"limits", "max_command_length", PT_INT, "2048", 512, 65536, NULL, "bytes"},
    {"limits", "max_line_length", PT_INT, "65536", 1000, 1048576, NULL, "bytes"},
    {"limits", "max_header_size", PT_INT, "102400", 1024, 67108864, NULL, "bytes"},
    {"limits", "max_headers", PT_INT, "1000", 16, 100000, NULL, "header fields"},
    {"limits", "max_errors", PT_INT, "20", 1, 1000, NULL, "before disconnect"},
    {"limits", "max_commands", PT_INT, "100000", 100, 1000000000, NULL, "per session"},
    {"limits", "max_junk_commands", PT_INT, "100", 1, 1000000000, NULL,
     "NOOP, RSET... per session"},
    {"limits", "min_data_rate", PT_INT, "500", 1, 1073741824, NULL, "bytes/second of content"},
    {"limits", "max_connections", PT_INT, "10000", 1, 1000000, NULL, "in all"},
    {"limits", "max_connections_per_ip", PT_INT, "50", 1, 1000000, NULL, "per client"},
    {"limits", "connection_limit_exceptions", PT_LIST, "{127.0.0.0/8, ::1/128}", 0, 0,
     validate_networks, "networks not counted"},
    {"limits", "spool_threshold", PT_INT, "262144", 0, 1073741824, NULL, "bytes in memory"},
    {"timeouts", "command", PT_DURATION, "5m", 0, DAY_MS, NULL, "RFC 5321 4.5.3.2"},
    {"timeouts", "data", PT_DURATION, "3m", 0, DAY_MS, NULL, "RFC 5321 4.5.3.2"},
    {"timeouts", "backend_connect", PT_DURATION, "30s", 0, DAY_MS, NULL, "connect"},
    {"timeouts", "backend_greeting", PT_DURATION, "5m", 0, DAY_MS, NULL, "220"},
    {"timeouts", "backend_command", PT_DURATION, "5m", 0, DAY_MS, NULL, "a reply"},
    {"timeouts", "backend_data_init", PT_DURATION, "2m", 0, DAY_MS, NULL, "354"},
    {"timeouts", "backend_data_block", PT_DURATION, "3m", 0, DAY_MS, NULL, "a block"},
    {"timeouts", "backend_data_done", PT_DURATION, "10m", 0, DAY_MS, NULL, "final 250"},
    {"dns", "nameservers", PT_LIST, "{}", 0, 0, NULL, "resolvers; empty: resolv.conf"},
    {"dns", "timeout", PT_DURATION, "5s", 0, DAY_MS, NULL, "a whole lookup"},
    {"postscreen", "greet_pause", PT_DURATION, "3s", 0, 60000, NULL, "greeting withheld"},
    {"postscreen", "greet_action", PT_STR, "ignore", 0, 0, validate_ps, "talk before it"},
    {"postscreen", "pipelining_action", PT_STR, "enforce", 0, 0, validate_ps, "before EHLO"},
    {"postscreen", "non_smtp_action", PT_STR, "drop", 0, 0, validate_ps, "GET, POST..."},
    {"postscreen", "bare_newline_action", PT_STR, "ignore", 0, 0, validate_ps, "LF alone"},
    {"postscreen", "dnsbl_sites", PT_LIST, "{}", 0, 0, validate_ps, "as dnsbl.sites"},
    {"postscreen", "dnsbl_threshold", PT_INT, "1", 1, 1000, NULL, "listed at this total"},
    {"postscreen", "dnsbl_action", PT_STR, "ignore", 0, 0, validate_ps, "a listed client"},
    {"postscreen", "cache_ttl", PT_DURATION, "1d", 0, 30 * DAY_MS, NULL, "a pass is kept"},
    {"postscreen", "cache_size", PT_INT, "100000", 0, 10000000, NULL, "addresses cached"},
    {"postscreen", "skip_mynetworks", PT_BOOL, "true", 0, 0, NULL, "mynetworks skip it"},
    {"postscreen", "store", PT_STR, "", 0, 0, NULL, "shared cache: redis://, redis-cluster://"},
    {"postscreen", "sentinels", PT_LIST, "{}", 0, 0, NULL, "Redis Sentinels host:port"},
    {"postscreen", "sentinel_master", PT_STR, "", 0, 0, NULL, "the master's name"},
    {"postscreen", "password", PT_STR, "", 0, 0, NULL, "Redis AUTH"},
    {"postscreen", "store_timeout", PT_DURATION, "500ms", 10, 60000, NULL, "one request"},
    {"metrics", "enabled", PT_BOOL, "false", 0, 0, NULL, "serve Prometheus metrics"},
    {"metrics", "address", PT_STR, "127.0.0.1:9465", 0, 0, validate_hostport, "host:port"},
};
#define PC_NPARAMS (sizeof(pc_params) / sizeof(pc_params[0]))

/* The sections of the core, in the order -p prints them. */
static const char *const pc_param_sections[] = {"limits", "timeouts", "dns", "postscreen",
                                                "metrics"};
/* The sections that repeat, each with a title: listener "name" { }. */
static const char *const pc_multi_sections[] = {"listener", "backend", "auth"};

/* The rows every filter's section has besides its own (core/filter.h): section "" here
 * stands for the filter's name. */
static const struct pc_param_row pc_filter_common[] = {
    {"", "timeout", PT_DURATION, PC_FILTER_TIMEOUT_DEFAULT, 0, DAY_MS, NULL,
     "how long a pending stage may take"},
    {"", "on_error", PT_STR, "tempfail", 0, 0, validate_on_error,
     "when the filter cannot decide: tempfail, accept or reject"},
};
#define PC_NCOMMON (sizeof(pc_filter_common) / sizeof(pc_filter_common[0]))

/* The file of the latest load, for errors and relative names with no section to name it: a
 * copy, because a failed load frees the generation that held its path. */
static char pc_conf_current_buf[4096];
static const char *pc_conf_current_path;

/* While a file loads, errors accumulate (one per line) so that -t reports all of them. */
static struct pc_err *pc_err_collect; /* the load's own list; a filter's buffer is replaced */
static unsigned pc_err_count;

/* err_add - append one finished "file:line: message" line, or replace outside a load */
static void err_add(struct pc_err *err, const char *line)
{
    size_t used = err == pc_err_collect ? strlen(err->msg) : 0;

    /* libconfuse validates a list at each element: a prefix's error is the list's, once. */
    if (used && strstr(err->msg, line))
        return;
    pc_err_count++;
    if (used && used + 1 < sizeof(err->msg))
        err->msg[used++] = '\n';
    if (used + 1 < sizeof(err->msg))
        snprintf(err->msg + used, sizeof(err->msg) - used, "%s", line);
}

/* pc_err_set - "file:line: message" */
void pc_err_set(struct pc_err *err, cfg_t *where, const char *fmt, ...)
{
    char msg[400], line[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const char *file = where && where->filename ? where->filename : pc_conf_current_path;
    if (where && file)
        snprintf(line, sizeof(line), "%s:%d: %s", file, where->line, msg);
    else
        snprintf(line, sizeof(line), "%s", msg);
    err_add(err, line);
}

/* pc_conf_path - resolve a configured file name against the directory of its file */
const char *pc_conf_path(cfg_t *where, const char *path, char *buf, size_t size)
{
    const char *file = where && where->filename ? where->filename : pc_conf_current_path;
    const char *slash = file ? strrchr(file, '/') : NULL;

    /* A file in the working directory (or the embedded defaults) needs no prefix. */
    if (path == NULL || path[0] == '/' || path[0] == 0 || slash == NULL)
        return path;
    int n = snprintf(buf, size, "%.*s/%s", (int)(slash - file), file, path);
    return n < 0 || (size_t)n >= size ? NULL : buf;
}

static struct pc_err *pc_parse_err;
static const char *pc_parse_path;
static int pc_parse_last_line; /* of the latest error: where a failed parse stopped */
/* The sections (by name) that had an error while the file was read: their filters are not
 * configured, so a bad value is reported once, at its line, not again by the filter. */
static char pc_err_sections[32][64];
static size_t pc_err_nsections;

/* conf_errfn - libconfuse's errors and our validators' into the error list */
static void conf_errfn(cfg_t *cfg, const char *fmt, va_list ap)
{
    char msg[400], line[512];

    if (pc_parse_err == NULL)
        return;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    pc_parse_last_line = cfg->line;
    if (cfg->name && pc_err_nsections < sizeof(pc_err_sections) / sizeof(pc_err_sections[0]))
        snprintf(pc_err_sections[pc_err_nsections++], sizeof(pc_err_sections[0]), "%s", cfg->name);
    snprintf(line, sizeof(line), "%s:%d: %s",
             cfg->filename   ? cfg->filename
             : pc_parse_path ? pc_parse_path
                             : "(config)",
             cfg->line, msg);
    err_add(pc_parse_err, line);
}

/* param_find - the table row of option name in section sec ("" top level), or NULL */
static const struct pc_param_row *param_find(const struct pc_param_row *t, size_t n,
                                             const char *sec, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].section, sec) == 0 && strcmp(t[i].name, name) == 0)
            return &t[i];
    return NULL;
}

/* section_is - does a row's section ("ratelimit.limit") name the section being parsed
 * ("limit")? libconfuse gives a section its own name only, so a nested section is matched by
 * its last part; no two filters nest sections of the same name. */
static bool section_is(const char *row, const char *sec)
{
    const char *dot = strrchr(row, '.');

    return strcmp(row, sec) == 0 || (dot && *sec && strcmp(dot + 1, sec) == 0);
}

/* filter_row - the row of a filter's option (its own, or a common one), or NULL */
static const struct pc_param_row *filter_row(const char *sec, const char *name)
{
    for (size_t i = 0; pc_filter_registry[i]; i++) {
        const struct pc_filter_ops *ops = pc_filter_registry[i];
        for (const struct pc_param_row *p = ops->params; p && p->name; p++)
            if (section_is(p->section, sec) && strcmp(p->name, name) == 0)
                return p;
        if (strcmp(ops->name, sec) == 0)
            return param_find(pc_filter_common, PC_NCOMMON, "", name);
    }
    return NULL;
}

/* param_of - the row for an option of a section being parsed, by its full path */
static const struct pc_param_row *param_of(cfg_t *cfg, cfg_opt_t *opt)
{
    const char *sec = cfg->name && strcmp(cfg->name, "root") != 0 ? cfg->name : "";
    const struct pc_param_row *p = param_find(pc_params, PC_NPARAMS, sec, opt->name);

    return p ? p : filter_row(sec, opt->name);
}

/* validate_int - the bounds of the option's row, keyed by section and name. An error is
 * recorded and parsing goes on (return 0), so that -t reports every bad value at once. */
static int validate_int(cfg_t *cfg, cfg_opt_t *opt)
{
    long v = cfg_opt_getnint(opt, cfg_opt_size(opt) - 1);
    const struct pc_param_row *p = param_of(cfg, opt);

    if (p && (v < p->min || v > p->max))
        cfg_error(cfg, "%s%s%s = %ld is out of range [%ld, %ld]", p->section,
                  *p->section ? "." : "", opt->name, v, p->min, p->max);
    return 0;
}

/* fmt_duration - ms in the largest unit that divides it, as a postmaster writes it ("30d") */
static const char *fmt_duration(char *buf, size_t len, unsigned long long ms)
{
    static const struct {
        unsigned long long ms;
        const char *unit;
    } units[] = {{86400000ULL, "d"}, {3600000ULL, "h"}, {60000ULL, "m"}, {1000ULL, "s"}};

    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms && ms % units[i].ms == 0) {
            snprintf(buf, len, "%llu%s", ms / units[i].ms, units[i].unit);
            return buf;
        }
    }
    snprintf(buf, len, "%llums", ms);
    return buf;
}

/* validate_duration - "5s", "2m"...; the error names the row's own bounds (cache_ttl's 30d) */
static int validate_duration(cfg_t *cfg, cfg_opt_t *opt)
{
    unsigned long long ms;
    const char *v = cfg_opt_getnstr(opt, cfg_opt_size(opt) - 1);
    const struct pc_param_row *p = param_of(cfg, opt);
    unsigned long long lo = p ? (unsigned long long)p->min : 0;
    unsigned long long hi = p ? (unsigned long long)p->max : 86400000ULL;
    char a[32], b[32];

    if (!v || !pc_parse_duration(v, &ms) || ms < lo || ms > hi) {
        if (lo)
            cfg_error(cfg, "%s: bad duration \"%s\" (use e.g. 30s, 5m, 250ms; from %s to %s)",
                      opt->name, v ? v : "", fmt_duration(a, sizeof(a), lo),
                      fmt_duration(b, sizeof(b), hi));
        else
            cfg_error(cfg, "%s: bad duration \"%s\" (use e.g. 30s, 5m, 250ms; at most %s)",
                      opt->name, v ? v : "", fmt_duration(b, sizeof(b), hi));
    }
    return 0;
}

/* validate_on_error - tempfail | accept | reject */
static int validate_on_error(cfg_t *cfg, cfg_opt_t *opt)
{
    enum pc_on_error e;
    const char *v = cfg_opt_getnstr(opt, 0);

    if (!v || !pc_on_error_parse(v, &e)) {
        cfg_error(cfg, "on_error must be tempfail, accept or reject, not \"%s\"", v ? v : "");
    }
    return 0;
}

/* syslog_name_valid - an ident that log tools can match (Postfix allows the same set) */
static bool syslog_name_valid(const char *v)
{
    size_t n = strlen(v);

    if (n == 0 || n > 40)
        return false;
    for (; *v; v++)
        if (!isalnum((unsigned char)*v) && !strchr(".-_", *v))
            return false;
    return true;
}

/* validate_top - hostname, log, bare_newline, nul..., checked while parsing (errors get a line) */
static int validate_top(cfg_t *cfg, cfg_opt_t *opt)
{
    const char *v = cfg_opt_getnstr(opt, 0);

    if (v == NULL)
        return 0;
    if (strcmp(opt->name, "hostname") == 0 && !pc_domain_valid(v, strlen(v), false)) {
        cfg_error(cfg, "hostname \"%s\" is not a valid domain name", v);
        return 0;
    }
    enum pc_log_target lt;
    if (strcmp(opt->name, "log") == 0 && !pc_log_parse_target(v, &lt)) {
        cfg_error(cfg, "log must be auto, journal, syslog or stderr, not \"%s\"", v);
        return 0;
    }
    if (strcmp(opt->name, "log_format") == 0 && strcmp(v, "text") != 0 && strcmp(v, "json") != 0) {
        cfg_error(cfg, "log_format must be text or json, not \"%s\"", v);
        return 0;
    }
    if (strcmp(opt->name, "syslog_name") == 0 && !syslog_name_valid(v)) {
        cfg_error(cfg, "syslog_name must be 1 to 40 letters, digits, '.', '-' or '_', not \"%s\"",
                  v);
        return 0;
    }
    /* Checked here too, so that -t (and ExecReload) catch a typo before a restart does. */
    if (strcmp(opt->name, "user") == 0 && *v && getpwnam(v) == NULL)
        cfg_error(cfg, "user \"%s\": no such user", v);
    if (strcmp(opt->name, "group") == 0 && *v && getgrnam(v) == NULL)
        cfg_error(cfg, "group \"%s\": no such group", v);
    if (strcmp(opt->name, "bare_newline") == 0 && strcmp(v, "reject") != 0 &&
        strcmp(v, "normalize") != 0) {
        cfg_error(cfg, "bare_newline must be reject or normalize, not \"%s\"", v);
        return 0;
    }
    if (strcmp(opt->name, "nul") == 0 && strcmp(v, "reject") != 0 && strcmp(v, "strip") != 0)
        cfg_error(cfg, "nul must be reject or strip, not \"%s\"", v);
    return 0;
}

/* validate_ps - postscreen's actions and DNS list sites */
static int validate_ps(cfg_t *cfg, cfg_opt_t *opt)
{
    enum pc_ps_action a;
    struct pc_dnsbl_sites l;

    if (strcmp(opt->name, "dnsbl_sites") != 0) {
        const char *v = cfg_opt_getnstr(opt, 0);
        if (v && !pc_ps_action_parse(v, &a))
            cfg_error(cfg, "postscreen.%s must be ignore, enforce or drop, not \"%s\"", opt->name,
                      v);
        return 0;
    }
    memset(&l, 0, sizeof(l));
    for (unsigned i = 0; i < cfg_opt_size(opt); i++) {
        const char *v = cfg_opt_getnstr(opt, i), *why = v ? pc_dnsbl_sites_add(&l, v) : NULL;
        if (why)
            cfg_error(cfg, "postscreen.dnsbl_sites: \"%s\": %s", v, why);
    }
    return 0;
}

/* validate_hostport - host:port (metrics.address) */
static int validate_hostport(cfg_t *cfg, cfg_opt_t *opt)
{
    const char *v = cfg_opt_getnstr(opt, 0);
    char h[256], pt[16];

    if (v && (!pc_parse_hostport(v, h, sizeof(h), pt, sizeof(pt)) || !pt[0]))
        cfg_error(cfg, "%s.%s \"%s\" must be host:port", cfg->name, opt->name, v);
    return 0;
}

/* validate_networks - every element a network (address or address/prefix) */
static int validate_networks(cfg_t *cfg, cfg_opt_t *opt)
{
    struct pc_cidr_list l;

    pc_cidr_list_init(&l);
    for (unsigned i = 0; i < cfg_opt_size(opt); i++) {
        const char *v = cfg_opt_getnstr(opt, i);
        if (v && !pc_cidr_list_add(&l, v))
            cfg_error(cfg, "%s: bad network \"%s\"", opt->name, v);
    }
    pc_cidr_list_free(&l);
    return 0;
}

/* duration_ms - a validated duration option in milliseconds */
static unsigned duration_ms(cfg_t *sec, const char *name)
{
    unsigned long long ms = 0;

    pc_parse_duration(cfg_getstr(sec, name), &ms);
    return (unsigned)ms;
}

/* The option arrays generated for one cfg_init: libconfuse copies them, so they are freed
 * together right after. */
struct opt_arrays {
    cfg_opt_t *v[64];
    size_t n;
};

/* opts_alloc - an array of n options plus CFG_END, remembered for opts_free */
static cfg_opt_t *opts_alloc(struct opt_arrays *a, size_t n)
{
    cfg_opt_t *v = calloc(n + 1, sizeof(*v));

    if (v == NULL || a->n == sizeof(a->v) / sizeof(a->v[0]))
        pc_fatal("out of memory");
    a->v[a->n++] = v;
    return v;
}

/* opts_free - release what opts_alloc gave (after cfg_init copied it) */
static void opts_free(struct opt_arrays *a)
{
    while (a->n)
        free(a->v[--a->n]);
}

/* param_opt - the libconfuse option a table row generates, with its validator */
static cfg_opt_t param_opt(const struct pc_param_row *p)
{
    cfg_opt_t o;

    switch (p->type) {
    case PT_INT: {
        cfg_opt_t v = CFG_INT(p->name, strtol(p->def, NULL, 10), CFGF_NONE);
        o = v;
        o.validcb = validate_int;
        break;
    }
    case PT_BOOL: {
        cfg_opt_t v =
            CFG_BOOL(p->name, strcmp(p->def, "true") == 0 ? cfg_true : cfg_false, CFGF_NONE);
        o = v;
        break;
    }
    case PT_LIST: {
        cfg_opt_t v = CFG_STR_LIST(p->name, (char *)p->def, (p->def ? CFGF_NONE : CFGF_NODEFAULT));
        o = v;
        break;
    }
    default: {
        cfg_opt_t v = CFG_STR(p->name, p->def, (p->def ? CFGF_NONE : CFGF_NODEFAULT));
        o = v;
        if (p->type == PT_DURATION)
            o.validcb = validate_duration;
        break;
    }
    }
    if (p->check)
        o.validcb = p->check;
    return o;
}

/* rows_opts - the options of section sec from a table of rows (n rows, or up to a NULL name),
 * a PT_SECTION row with the options of its own rows; extra rows (the filters' common ones)
 * come last */
static cfg_opt_t *rows_opts(struct opt_arrays *a, const struct pc_param_row *rows, size_t n,
                            const char *sec, const struct pc_param_row *extra, size_t nextra)
{
    size_t k = 0, cnt = 0;

    while (rows && cnt < n && rows[cnt].name)
        cnt++;
    cfg_opt_t *v = opts_alloc(a, cnt + nextra);
    for (size_t i = 0; i < cnt; i++) {
        if (strcmp(rows[i].section, sec) != 0)
            continue;
        if (rows[i].type == PT_SECTION) {
            char sub[128];
            snprintf(sub, sizeof(sub), "%s.%s", sec, rows[i].name);
            cfg_opt_t o = CFG_SEC(rows[i].name, rows_opts(a, rows, cnt, sub, NULL, 0),
                                  CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES);
            v[k++] = o;
        } else {
            v[k++] = param_opt(&rows[i]);
        }
    }
    for (size_t i = 0; i < nextra; i++)
        v[k++] = param_opt(&extra[i]);
    cfg_opt_t end = CFG_END();
    v[k] = end;
    return v;
}

/* filter_opts - a filter's rows plus the core's timeout and on_error */
static cfg_opt_t *filter_opts(struct opt_arrays *a, const struct pc_filter_ops *ops)
{
    return rows_opts(a, ops->params, (size_t)-1, ops->name, pc_filter_common, PC_NCOMMON);
}

/* build_opts - the whole option table, generated from pc_params and the filters' rows */
static cfg_opt_t *build_opts(struct opt_arrays *a)
{
    size_t nf = 0, ns = sizeof(pc_param_sections) / sizeof(pc_param_sections[0]), n = 0;
    size_t nm = sizeof(pc_multi_sections) / sizeof(pc_multi_sections[0]);

    while (pc_filter_registry[nf])
        nf++;
    cfg_opt_t *opts = opts_alloc(a, PC_NPARAMS + nf + ns + nm);
    for (size_t i = 0; i < PC_NPARAMS; i++)
        if (!*pc_params[i].section)
            opts[n++] = param_opt(&pc_params[i]);
    for (size_t i = 0; i < nm; i++) {
        cfg_opt_t sec = CFG_SEC(pc_multi_sections[i],
                                rows_opts(a, pc_params, PC_NPARAMS, pc_multi_sections[i], NULL, 0),
                                CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES);
        opts[n++] = sec;
    }
    for (size_t i = 0; i < ns; i++) {
        cfg_opt_t sec =
            CFG_SEC(pc_param_sections[i],
                    rows_opts(a, pc_params, PC_NPARAMS, pc_param_sections[i], NULL, 0), CFGF_NONE);
        opts[n++] = sec;
    }
    for (size_t i = 0; i < nf; i++) {
        cfg_opt_t sec =
            CFG_SEC(pc_filter_registry[i]->name, filter_opts(a, pc_filter_registry[i]), CFGF_NONE);
        opts[n++] = sec;
    }
    cfg_opt_t end = CFG_END();
    opts[n] = end;
    return opts;
}

/* cfg_free_cb - pool cleanup for the parsed tree */
static void cfg_free_cb(void *arg)
{
    cfg_free(arg);
}

/* limits_load - the limits section */
/* workers_resolve - "workers = 0" (the default): PORTCULLIS_WORKERS when set (test suites that
 * count per-process state pin it to 1), else one process per CPU online */
static unsigned workers_resolve(long n)
{
    const char *env = getenv("PORTCULLIS_WORKERS");

    if (n > 0)
        return (unsigned)n;
    if (env && atoi(env) > 0 && atoi(env) <= 1024)
        return (unsigned)atoi(env);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    return cpus > 0 ? (unsigned)(cpus < 1024 ? cpus : 1024) : 1;
}

static int limits_load(struct pc_conf *c, cfg_t *sec, struct pc_err *err)
{
    struct pc_limits *l = &c->limits;

    l->max_message_size = (size_t)cfg_getint(sec, "max_message_size");
    l->max_recipients = (size_t)cfg_getint(sec, "max_recipients");
    l->max_command_length = (size_t)cfg_getint(sec, "max_command_length");
    l->max_line_length = (size_t)cfg_getint(sec, "max_line_length");
    l->max_header_size = (size_t)cfg_getint(sec, "max_header_size");
    l->max_headers = (size_t)cfg_getint(sec, "max_headers");
    l->max_errors = (size_t)cfg_getint(sec, "max_errors");
    l->max_commands = (size_t)cfg_getint(sec, "max_commands");
    l->max_junk_commands = (size_t)cfg_getint(sec, "max_junk_commands");
    l->min_data_rate = (size_t)cfg_getint(sec, "min_data_rate");
    l->max_connections = (size_t)cfg_getint(sec, "max_connections");
    l->max_connections_per_ip = (size_t)cfg_getint(sec, "max_connections_per_ip");
    l->spool_threshold = (size_t)cfg_getint(sec, "spool_threshold");
    pc_cidr_list_init(&l->connection_limit_exceptions);
    for (unsigned i = 0; i < cfg_size(sec, "connection_limit_exceptions"); i++) {
        const char *n = cfg_getnstr(sec, "connection_limit_exceptions", i);
        if (!pc_cidr_list_add(&l->connection_limit_exceptions, n)) {
            pc_err_set(err, sec, "connection_limit_exceptions: bad network \"%s\"", n);
            return -1;
        }
    }
    return 0;
}

/* cidr_free_cb - pool cleanup */
static void cidr_free_cb(void *arg)
{
    pc_cidr_list_free(arg);
}

/* identity_parse - the identity option of a backend */
static int identity_parse(const char *id, enum pc_identity *out)
{
    static const struct {
        const char *name;
        enum pc_identity id;
    } ids[] = {{"xclient", PC_IDENT_XCLIENT},
               {"xforward", PC_IDENT_XFORWARD},
               {"proxy", PC_IDENT_PROXY_V2},
               {"proxy-v1", PC_IDENT_PROXY_V1},
               {"none", PC_IDENT_NONE}};

    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        if (strcmp(id, ids[i].name) == 0) {
            *out = ids[i].id;
            return 0;
        }
    return -1;
}

/* tls_client_free_cb - the backend's TLS context goes with its generation */
static void tls_client_free_cb(void *arg)
{
    pc_tls_client_free(arg);
}

/* backend_tls_load - tls, tls_ca, tls_name of a backend; the context is built now, so that
 * -t and a reload report a bad CA file at its line and keep the old generation */
static int backend_tls_load(struct pc_conf *c, cfg_t *sec, struct pc_backend_conf *b,
                            struct pc_err *err)
{
    enum pc_tls_client_mode mode;
    const char *ca = cfg_getstr(sec, "tls_ca");
    char buf[4096];

    if (!pc_tls_client_mode_parse(cfg_getstr(sec, "tls"), &mode)) {
        pc_err_set(err, sec, "backend \"%s\": tls must be none, may, encrypt or verify", b->name);
        return -1;
    }
    b->tls = (int)mode;
    b->tls_name = cfg_getstr(sec, "tls_name");
    if (mode == PC_TLS_CLIENT_NONE)
        return 0;
    if (b->maildir || b->lmtp) {
        pc_err_set(err, sec, "backend \"%s\": tls needs an SMTP backend", b->name);
        return -1;
    }
    if (mode == PC_TLS_CLIENT_VERIFY && (b->tls_name == NULL || b->tls_name[0] == 0)) {
        /* An address is no name to check a certificate against (RFC 6125 section 6.2). */
        pc_err_set(err, sec, "backend \"%s\": tls = verify needs tls_name", b->name);
        return -1;
    }
    if (ca && (ca = pc_conf_path(sec, ca, buf, sizeof(buf))) == NULL) {
        pc_err_set(err, sec, "backend \"%s\": tls_ca name too long", b->name);
        return -1;
    }
    b->tls_ca = ca ? pc_pool_strdup(c->pool, ca) : NULL;
    struct pc_err why = {{0}};
    if ((b->tlsc = pc_tls_client_new(mode, b->tls_ca, NULL, &why)) == NULL) {
        pc_err_set(err, sec, "backend \"%s\": %s", b->name, why.msg);
        return -1;
    }
    pc_pool_cleanup(c->pool, tls_client_free_cb, b->tlsc);
    return 0;
}

/* backends_load - backend sections, or the embedded Maildir default */
static int backends_load(struct pc_conf *c, cfg_t *cfg, struct pc_err *err)
{
    size_t n = cfg_size(cfg, "backend");

    c->nbackends = n ? n : 1;
    c->backends = pc_pool_zalloc(c->pool, c->nbackends * sizeof(*c->backends));
    if (n == 0) {
        c->backends[0].name = "local";
        c->backends[0].maildir = "var/Maildir";
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        cfg_t *sec = cfg_getnsec(cfg, "backend", (unsigned)i);
        struct pc_backend_conf *b = &c->backends[i];
        const char *id = cfg_getstr(sec, "identity");
        b->name = cfg_title(sec);
        b->lmtp = cfg_getbool(sec, "lmtp");
        b->helo_name = cfg_getstr(sec, "helo_name");
        b->maildir = cfg_getstr(sec, "maildir");
        b->naddr = cfg_size(sec, "address");
        if ((b->naddr == 0) == (b->maildir == NULL)) {
            pc_err_set(err, sec, "backend \"%s\": set either address or maildir", b->name);
            return -1;
        }
        b->addresses = pc_pool_zalloc(c->pool, (b->naddr + 1) * sizeof(char *));
        for (size_t k = 0; k < b->naddr; k++) {
            char h[256], p[16];
            b->addresses[k] = cfg_getnstr(sec, "address", (unsigned)k);
            if (!pc_parse_hostport(b->addresses[k], h, sizeof(h), p, sizeof(p))) {
                pc_err_set(err, sec,
                           "backend \"%s\": bad address \"%s\" (host:port, [v6]:port "
                           "or unix:/path)",
                           b->name, b->addresses[k]);
                return -1;
            }
        }
        if (identity_parse(id, &b->identity) < 0) {
            pc_err_set(err, sec,
                       "backend \"%s\": identity must be xclient, xforward, proxy, proxy-v1 "
                       "or none",
                       b->name);
            return -1;
        }
        if (backend_tls_load(c, sec, b, err) < 0)
            return -1;
    }
    return 0;
}

/* chain_pos - the position of filter name in a listener's filters option, or -1 */
static int chain_pos(cfg_opt_t *filters, const char *name)
{
    for (unsigned i = 0; i < cfg_opt_size(filters); i++)
        if (strcmp(cfg_opt_getnstr(filters, i), name) == 0)
            return (int)i;
    return -1;
}

/* validate_chain - listener.filters: a filter that reads another's result comes after it.
 * Checked as the option is read, so the error names the line of "filters". */
static int validate_chain(cfg_t *lsec, cfg_opt_t *filters)
{
    const char *lname = cfg_title(lsec) ? cfg_title(lsec) : "";

    for (unsigned i = 0; i < cfg_opt_size(filters); i++) {
        const struct pc_filter_ops *ops = pc_filter_find(cfg_opt_getnstr(filters, i));
        int me = (int)i;
        for (size_t k = 0; ops && ops->needs && ops->needs[k]; k++) {
            int p = chain_pos(filters, ops->needs[k]);
            if (p < 0 || p > me)
                cfg_error(lsec, "listener \"%s\": filter \"%s\" needs \"%s\" earlier in the chain",
                          lname, ops->name, ops->needs[k]);
        }
        for (size_t k = 0; ops && ops->after && ops->after[k]; k++)
            if (chain_pos(filters, ops->after[k]) > me)
                cfg_error(lsec, "listener \"%s\": filter \"%s\" must come after \"%s\"", lname,
                          ops->name, ops->after[k]);
    }
    return 0;
}

/* auths_load - auth "name" sections: checked now (-t) so that a bad file or socket name is
 * found at its line before AUTH uses it */
static int auths_load(struct pc_conf *c, cfg_t *cfg, struct pc_err *err)
{
    c->nauths = cfg_size(cfg, "auth");
    c->auths = pc_pool_zalloc(c->pool, (c->nauths + 1) * sizeof(*c->auths));
    for (size_t i = 0; i < c->nauths; i++) {
        cfg_t *sec = cfg_getnsec(cfg, "auth", (unsigned)i);
        struct pc_auth_conf *a = &c->auths[i];
        const char *pf = cfg_getstr(sec, "password_file"), *dv = cfg_getstr(sec, "dovecot");
        const char *to = cfg_getstr(sec, "timeout");
        char origin[300], buf[4096];
        unsigned long long ms;

        a->name = cfg_title(sec);
        snprintf(origin, sizeof(origin), "%s:%d", sec->filename ? sec->filename : c->path,
                 sec->line);
        a->origin = pc_pool_strdup(c->pool, origin);
        if ((pf == NULL) == (dv == NULL)) {
            pc_err_set(err, sec, "auth \"%s\": set either password_file or dovecot", a->name);
            return -1;
        }
        /* Dovecot delays a failure by auth_failure_delay (2s): shorter would fail good users. */
        if (!pc_parse_duration(to, &ms) || ms < 1000 || ms > 300000) {
            pc_err_set(err, sec, "auth \"%s\": timeout \"%s\" must be a duration in [1s, 5m]",
                       a->name, to);
            return -1;
        }
        a->timeout_ms = (unsigned)ms;
        if (dv) {
            if (!pc_authdb_dovecot_spec_ok(dv)) {
                pc_err_set(err, sec,
                           "auth \"%s\": dovecot = \"%s\": expected \"unix:/path\" "
                           "or \"inet:ADDRESS:PORT\" (a numeric address)",
                           a->name, dv);
                return -1;
            }
            a->dovecot = dv;
            continue;
        }
        const char *path = pc_conf_path(sec, pf, buf, sizeof(buf));
        if (path == NULL) {
            pc_err_set(err, sec, "auth \"%s\": password_file name too long", a->name);
            return -1;
        }
        a->password_file = pc_pool_strdup(c->pool, path);
        if (pc_authdb_passwd_check(a->password_file, a->origin, err) < 0)
            return -1;
    }
    return 0;
}

/* ratelimit_uses_rules - does a limit of the ratelimit section key on a rule's verdict */
static bool ratelimit_uses_rules(cfg_t *cfg)
{
    cfg_t *rl = cfg_getsec(cfg, "ratelimit");

    for (unsigned i = 0; rl && i < cfg_size(rl, "limit"); i++) {
        const char *r = cfg_getstr(cfg_getnsec(rl, "limit", i), "rule");
        if (r && *r)
            return true;
    }
    return false;
}

/* chain_check_rules - ratelimit's "rule =" reads the rules filter's facts: after the whole file
 * is read (the ratelimit section may follow the listener), so at the listener's line */
static int chain_check_rules(cfg_t *cfg, cfg_t *lsec, const char *lname, struct pc_err *err)
{
    cfg_opt_t *f = cfg_getopt(lsec, "filters");
    int rl = chain_pos(f, "ratelimit"), ru = chain_pos(f, "rules");

    if (rl >= 0 && ratelimit_uses_rules(cfg) && (ru < 0 || ru > rl)) {
        pc_err_set(err, lsec,
                   "listener \"%s\": ratelimit's limit rule = needs \"rules\" earlier "
                   "in the chain",
                   lname);
        return -1;
    }
    return 0;
}

/* pc_conf_auth - the auth section called name, or NULL */
const struct pc_auth_conf *pc_conf_auth(const struct pc_conf *c, const char *name)
{
    for (size_t i = 0; name && i < c->nauths; i++)
        if (strcmp(c->auths[i].name, name) == 0)
            return &c->auths[i];
    return NULL;
}

/* chain_build - a listener's filter list to chain links */
static int chain_build(struct pc_conf *c, cfg_t *cfg, cfg_t *lsec, struct pc_listener_conf *l,
                       struct pc_err *err)
{
    size_t n = cfg_size(lsec, "filters");

    l->chain.n = n;
    l->chain.links = pc_pool_zalloc(c->pool, (n ? n : 1) * sizeof(*l->chain.links));
    l->chain.dry_run = cfg_getbool(lsec, "dry_run");
    for (size_t i = 0; i < n; i++) {
        const char *name = cfg_getnstr(lsec, "filters", (unsigned)i);
        size_t k;
        for (k = 0; pc_filter_registry[k]; k++)
            if (strcmp(pc_filter_registry[k]->name, name) == 0)
                break;
        if (pc_filter_registry[k] == NULL) {
            pc_err_set(err, lsec, "listener \"%s\": unknown filter \"%s\"", l->name, name);
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (l->chain.links[j].ops == pc_filter_registry[k]) {
                pc_err_set(err, lsec, "listener \"%s\": filter \"%s\" listed twice", l->name, name);
                return -1;
            }
        cfg_t *fsec = cfg_getsec(cfg, name);
        struct pc_chain_link *link = &l->chain.links[i];
        link->ops = pc_filter_registry[k];
        link->conf = c->filter_conf[k];
        link->timeout_ms = duration_ms(fsec, "timeout");
        pc_on_error_parse(cfg_getstr(fsec, "on_error"), &link->on_error);
        c->filter_used[k] = true;
    }
    return chain_check_rules(cfg, lsec, l->name, err);
}

/* listener_proxy_load - proxy_protocol, proxy_from, proxy_timeout */
static int listener_proxy_load(struct pc_conf *c, cfg_t *sec, struct pc_listener_conf *l,
                               struct pc_err *err)
{
    unsigned long long ms;

    pc_cidr_list_init(&l->proxy_from);
    pc_pool_cleanup(c->pool, cidr_free_cb, &l->proxy_from);
    l->proxy_protocol = cfg_getbool(sec, "proxy_protocol");
    for (unsigned i = 0; i < cfg_size(sec, "proxy_from"); i++) {
        const char *n = cfg_getnstr(sec, "proxy_from", i);
        if (!pc_cidr_list_add(&l->proxy_from, n)) {
            pc_err_set(err, sec, "listener \"%s\": proxy_from: bad network \"%s\"", l->name, n);
            return -1;
        }
    }
    /* The specification asks for at least 3 s, to cover a TCP retransmission. */
    if (!pc_parse_duration(cfg_getstr(sec, "proxy_timeout"), &ms) || ms < 1000 || ms > 60000) {
        pc_err_set(err, sec, "listener \"%s\": proxy_timeout must be a duration from 1s to 60s",
                   l->name);
        return -1;
    }
    l->proxy_timeout_ms = (unsigned)ms;
    if (l->proxy_protocol && cfg_size(sec, "proxy_from") == 0) {
        pc_err_set(err, sec,
                   "listener \"%s\": proxy_protocol needs proxy_from (the proxies that may "
                   "speak it)",
                   l->name);
        return -1;
    }
    return 0;
}

/* tls_server_free_cb - the generation's certificates go with it */
static void tls_server_free_cb(void *arg)
{
    pc_tls_server_free(arg);
}

/* listener_tls_load - tls, tls_certificate, tls_key, tls_timeout, require_tls. The contexts
 * are built now: a bad certificate fails -t and a reload (which then keeps the running
 * generation and its certificates). */
static int listener_tls_load(struct pc_conf *c, cfg_t *sec, struct pc_listener_conf *l,
                             struct pc_err *err)
{
    static const char *const modes[] = {"none", "starttls", "implicit"};
    const char *m = cfg_getstr(sec, "tls");
    size_t n = cfg_size(sec, "tls_certificate"), i;

    for (i = 0; i < 3 && strcmp(m, modes[i]); i++)
        ;
    if (i == 3) {
        pc_err_set(err, sec, "listener \"%s\": tls = \"%s\": expected none, starttls or implicit",
                   l->name, m);
        return -1;
    }
    l->tls = (enum pc_listen_tls)i;
    l->tls_timeout_ms = duration_ms(sec, "tls_timeout");
    l->require_tls = cfg_getbool(sec, "require_tls");
    l->tls_ask_client_cert = cfg_getbool(sec, "tls_ask_client_certificate");
    if (l->tls == PC_LTLS_NONE) {
        if (l->require_tls)
            pc_err_set(err, sec, "listener \"%s\": require_tls needs tls", l->name);
        return l->require_tls ? -1 : 0;
    }
    if (n == 0 || (cfg_size(sec, "tls_key") != 0 && cfg_size(sec, "tls_key") != n)) {
        pc_err_set(err, sec,
                   "listener \"%s\": tls needs tls_certificate, and tls_key one per certificate "
                   "(or none: the keys are in the certificate files)",
                   l->name);
        return -1;
    }
    struct pc_tls_pair *pairs = pc_pool_zalloc(c->pool, n * sizeof(*pairs));
    char origin[300], buf[4096];
    snprintf(origin, sizeof(origin), "%s:%d", sec->filename ? sec->filename : c->path, sec->line);
    for (i = 0; i < n; i++) {
        const char *cp =
            pc_conf_path(sec, cfg_getnstr(sec, "tls_certificate", (unsigned)i), buf, sizeof(buf));
        pairs[i].cert = cp ? pc_pool_strdup(c->pool, cp) : NULL;
        if (cfg_size(sec, "tls_key")) {
            const char *kp =
                pc_conf_path(sec, cfg_getnstr(sec, "tls_key", (unsigned)i), buf, sizeof(buf));
            pairs[i].key = kp ? pc_pool_strdup(c->pool, kp) : NULL;
        }
        pairs[i].origin = pc_pool_strdup(c->pool, origin);
    }
    struct pc_err mine = {{0}}; /* pc_tls_server_new writes msg itself */
    if ((l->tls_server = pc_tls_server_new(pairs, n, l->tls_ask_client_cert, &mine)) == NULL) {
        err_add(err, mine.msg);
        return -1;
    }
    pc_pool_cleanup(c->pool, tls_server_free_cb, l->tls_server);
    return 0;
}

/* senders_free_cb - the generation's sender login map goes with it */
static void senders_free_cb(void *arg)
{
    pc_senders_free(arg);
}

/* listener_auth_load - auth, auth_plaintext, require_auth, auth_max_failures,
 * sender_login_map */
static int listener_auth_load(struct pc_conf *c, cfg_t *sec, struct pc_listener_conf *l,
                              struct pc_err *err)
{
    const char *name = cfg_getstr(sec, "auth"), *map = cfg_getstr(sec, "sender_login_map");
    char buf[4096], origin[300];

    l->auth_plaintext = cfg_getbool(sec, "auth_plaintext");
    l->require_auth = cfg_getbool(sec, "require_auth");
    l->auth_max_failures = (unsigned)cfg_getint(sec, "auth_max_failures");
    if (name) {
        for (size_t i = 0; i < c->nauths && l->auth == NULL; i++)
            if (strcmp(c->auths[i].name, name) == 0)
                l->auth = &c->auths[i];
        if (l->auth == NULL) {
            pc_err_set(err, sec, "listener \"%s\": no auth section named \"%s\"", l->name, name);
            return -1;
        }
    }
    if (l->require_auth && l->auth == NULL) {
        pc_err_set(err, sec, "listener \"%s\": require_auth needs auth", l->name);
        return -1;
    }
    if (map == NULL)
        return 0;
    const char *path = pc_conf_path(sec, map, buf, sizeof(buf));
    snprintf(origin, sizeof(origin), "%s:%d", sec->filename ? sec->filename : c->path, sec->line);
    struct pc_err mine = {{0}}; /* pc_senders_load writes msg itself */
    if (path == NULL) {
        pc_err_set(err, sec, "listener \"%s\": sender_login_map name too long", l->name);
        return -1;
    }
    if ((l->senders = pc_senders_load(path, origin, &mine)) == NULL) {
        err_add(err, mine.msg);
        return -1;
    }
    pc_pool_cleanup(c->pool, senders_free_cb, l->senders);
    return 0;
}

/* ps_conf_free_cb - pool cleanup */
static void ps_conf_free_cb(void *arg)
{
    pc_ps_conf_free(arg);
}

/* postscreen_store - postscreen.store and sentinels: the shared pass cache */
static int postscreen_store(struct pc_conf *c, cfg_t *sec, struct pc_err *err)
{
    const char *sent[64], *url = cfg_getstr(sec, "store");
    struct pc_rl_store_conf sc = {.url = url[0] ? url : NULL,
                                  .master = cfg_getstr(sec, "sentinel_master"),
                                  .password = cfg_getstr(sec, "password"),
                                  .timeout_ms = duration_ms(sec, "store_timeout")};

    sc.nsentinels = cfg_size(sec, "sentinels");
    if (sc.url == NULL && sc.nsentinels == 0)
        return 0;
    if (sc.nsentinels > 64) {
        pc_err_set(err, sec, "postscreen: at most 64 sentinels");
        return -1;
    }
    for (size_t i = 0; i < sc.nsentinels; i++)
        sent[i] = cfg_getnstr(sec, "sentinels", (unsigned)i);
    sc.sentinels = sent;
    struct pc_err mine = {{0}};
    if (pc_ps_store_create(&c->postscreen, &sc, &mine) < 0) {
        pc_err_set(err, sec, "postscreen: %.400s", mine.msg[0] ? mine.msg : "bad store");
        return -1;
    }
    return 0;
}

/* milter_address_ok - libmilter's sockets as we spell them: inet:host:port, inet6:[v6]:port or
 * unix:/path (libmilter's own "inet:port@host" is written by the milter door) */
static bool milter_address_ok(const char *a)
{
    char h[256], p[16];
    const char *rest = strncmp(a, "inet:", 5) == 0    ? a + 5
                       : strncmp(a, "inet6:", 6) == 0 ? a + 6
                       : strncmp(a, "unix:/", 6) == 0 ? a
                                                      : NULL;

    return rest && pc_parse_hostport(rest, h, sizeof(h), p, sizeof(p)) && (rest == a || p[0]);
}

/* listener_address - the address in the door's form; one milter listener per process */
static int listener_address(cfg_t *sec, struct pc_listener_conf *l, int *nmilter,
                            struct pc_err *err)
{
    char h[256], p[16];

    if (l->protocol != PC_PROTO_MILTER) {
        if (pc_parse_hostport(l->address, h, sizeof(h), p, sizeof(p)) && p[0])
            return 0;
        pc_err_set(err, sec, "listener \"%s\": bad address \"%s\" (host:port or [v6]:port)",
                   l->name, l->address);
        return -1;
    }
    int rc = 0;
    if (++*nmilter == 2) {
        pc_err_set(err, sec,
                   "listener \"%s\": one milter listener per process (libmilter runs "
                   "one smfi_main)",
                   l->name);
        rc = -1;
    }
    if (!milter_address_ok(l->address)) {
        pc_err_set(err, sec,
                   "listener \"%s\": bad milter address \"%s\" (inet:host:port, "
                   "inet6:[v6]:port or unix:/path)",
                   l->name, l->address);
        rc = -1;
    }
    return rc;
}

/* listener_protocol - listener.protocol: which door serves the listener */
static int listener_protocol(cfg_t *sec, struct pc_listener_conf *l, struct pc_err *err)
{
    const char *p = cfg_getstr(sec, "protocol");

    if (strcmp(p, "smtp") == 0)
        l->protocol = PC_PROTO_SMTP;
    else if (strcmp(p, "milter") == 0)
        l->protocol = PC_PROTO_MILTER;
    else if (strcmp(p, "policy") == 0)
        l->protocol = PC_PROTO_POLICY;
    else {
        pc_err_set(err, sec, "listener \"%s\": protocol must be smtp, milter or policy, not \"%s\"",
                   l->name, p);
        return -1;
    }
    return 0;
}

/* postscreen_load - the postscreen section (its values were checked as the file was read) and
 * the top-level mynetworks it skips */
static int postscreen_load(struct pc_conf *c, cfg_t *cfg, struct pc_err *err)
{
    static const char *const acts[PC_PS_TESTS] = {"greet_action", "dnsbl_action",
                                                  "pipelining_action", "non_smtp_action",
                                                  "bare_newline_action"};
    cfg_t *sec = cfg_getsec(cfg, "postscreen");
    struct pc_ps_conf *p = &c->postscreen;

    p->greet_pause_ms = duration_ms(sec, "greet_pause");
    for (int t = 0; t < PC_PS_TESTS; t++)
        pc_ps_action_parse(cfg_getstr(sec, acts[t]), &p->action[t]);
    for (unsigned i = 0; i < cfg_size(sec, "dnsbl_sites"); i++)
        pc_dnsbl_sites_add(&p->dnsbl, cfg_getnstr(sec, "dnsbl_sites", i));
    p->dnsbl_threshold = (int)cfg_getint(sec, "dnsbl_threshold");
    p->cache_ttl_ms = duration_ms(sec, "cache_ttl");
    p->cache_size = (size_t)cfg_getint(sec, "cache_size");
    p->skip_mynetworks = cfg_getbool(sec, "skip_mynetworks");
    pc_cidr_list_init(&p->mynetworks);
    pc_pool_cleanup(c->pool, ps_conf_free_cb, p);
    for (unsigned i = 0; i < cfg_size(cfg, "mynetworks"); i++)
        pc_cidr_list_add(&p->mynetworks, cfg_getnstr(cfg, "mynetworks", i));
    return postscreen_store(c, sec, err);
}

/* listeners_load - listener sections, or the embedded default */
static int listeners_load(struct pc_conf *c, cfg_t *cfg, struct pc_err *err)
{
    size_t n = cfg_size(cfg, "listener");
    int rc = 0, nmilter = 0;

    /* None configured: one listener "inbound" with every default of the table (loopback, the
     * relay-only chain, the first backend). */
    if (n == 0) {
        if (cfg_addtsec(cfg, "listener", "inbound") == NULL) {
            pc_err_set(err, cfg, "out of memory");
            return -1;
        }
        n = 1;
    }
    c->nlisteners = n;
    c->listeners = pc_pool_zalloc(c->pool, c->nlisteners * sizeof(*c->listeners));
    for (size_t i = 0; i < n; i++) {
        cfg_t *sec = cfg_getnsec(cfg, "listener", (unsigned)i);
        struct pc_listener_conf *l = &c->listeners[i];
        l->name = cfg_title(sec);
        l->line = sec->line;
        l->address = cfg_getstr(sec, "address");
        l->trusted = cfg_getbool(sec, "trusted");
        l->postscreen = cfg_getbool(sec, "postscreen");
        l->chunking = cfg_getbool(sec, "chunking");
        if (listener_protocol(sec, l, err) < 0) {
            rc = -1;
            continue;
        }
        if (listener_address(sec, l, &nmilter, err) < 0)
            rc = -1;
        l->backend_name = cfg_getstr(sec, "backend");
        if (l->protocol != PC_PROTO_SMTP) {
            /* The MTA that asks delivers the mail itself: nothing to relay to. */
            if (l->backend_name != NULL) {
                pc_err_set(err, sec, "listener \"%s\": a %s listener has no backend", l->name,
                           cfg_getstr(sec, "protocol"));
                rc = -1;
            }
        } else if (l->backend_name == NULL) {
            l->backend = &c->backends[0];
        } else {
            for (size_t k = 0; k < c->nbackends; k++)
                if (strcmp(c->backends[k].name, l->backend_name) == 0)
                    l->backend = &c->backends[k];
            if (l->backend == NULL) {
                pc_err_set(err, sec, "listener \"%s\": no backend named \"%s\"", l->name,
                           l->backend_name);
                rc = -1;
                continue;
            }
        }
        if (chain_build(c, cfg, sec, l, err) < 0)
            rc = -1;
        if (listener_proxy_load(c, sec, l, err) < 0)
            rc = -1;
        if (listener_tls_load(c, sec, l, err) < 0 || listener_auth_load(c, sec, l, err) < 0)
            rc = -1;
    }
    return rc;
}

/* The filters' own trust options: unset, each takes the top-level mynetworks. spf's, dnsbl's
 * and greylist's follow it only when mynetworks is set on purpose, because their own default
 * has always been empty (a loopback client is checked like any other, as the tests and a local
 * relay need). */
static const struct pc_trust_opt {
    const char *filter, *option;
    bool only_explicit;
} pc_trust_opts[] = {
    {"relay", "mynetworks", false},       {"dkim", "mynetworks", false},
    {"spf", "trusted_networks", true},    {"dnsbl", "allow_networks", true},
    {"greylist", "allow_networks", true},
};

/* mynetworks_inherit - one trust definition: copy mynetworks into every trust option left
 * unset; an option set in the filter's own section wins (an override on purpose) */
static int mynetworks_inherit(cfg_t *cfg, struct pc_err *err)
{
    cfg_opt_t *top = cfg_getopt(cfg, "mynetworks");
    bool top_set = top && (top->flags & CFGF_MODIFIED);

    for (size_t i = 0; top && i < sizeof(pc_trust_opts) / sizeof(pc_trust_opts[0]); i++) {
        cfg_t *sec = cfg_getsec(cfg, pc_trust_opts[i].filter);
        cfg_opt_t *o = sec ? cfg_getopt(sec, pc_trust_opts[i].option) : NULL;
        if (o == NULL || (o->flags & CFGF_MODIFIED) || (pc_trust_opts[i].only_explicit && !top_set))
            continue;
        cfg_free_value(o);
        for (unsigned k = 0; k < cfg_opt_size(top); k++)
            if (cfg_setnstr(sec, pc_trust_opts[i].option, cfg_opt_getnstr(top, k), k) != 0) {
                pc_err_set(err, cfg, "mynetworks: cannot apply to %s.%s", pc_trust_opts[i].filter,
                           pc_trust_opts[i].option);
                return -1;
            }
        o->flags &= ~CFGF_MODIFIED; /* still the filter's default: -n does not show it */
    }
    return 0;
}

/* root_had_error - an error at the top level (mynetworks among them): then the filters keep
 * their own trust defaults rather than a bad copy that each would report again */
static bool root_had_error(void)
{
    for (size_t i = 0; i < pc_err_nsections; i++)
        if (strcmp(pc_err_sections[i], "root") == 0)
            return true;
    return false;
}

/* section_had_error - did the filter's section (or a section nested in it) have an error? */
static bool section_had_error(const struct pc_filter_ops *ops)
{
    for (size_t i = 0; i < pc_err_nsections; i++) {
        if (strcmp(pc_err_sections[i], ops->name) == 0)
            return true;
        for (const struct pc_param_row *p = ops->params; p && p->name; p++)
            if (p->type == PT_SECTION && strcmp(p->name, pc_err_sections[i]) == 0)
                return true;
    }
    return false;
}

/* filters_configure - every registered filter builds its configuration */
static void filters_destroy(void *);
static int filters_configure(struct pc_conf *c, cfg_t *cfg, struct pc_err *err)
{
    size_t nf = 0;
    int rc = 0;

    while (pc_filter_registry[nf])
        nf++;
    c->filter_conf = pc_pool_zalloc(c->pool, (nf + 1) * sizeof(void *));
    c->filter_used = pc_pool_zalloc(c->pool, (nf + 1) * sizeof(bool));
    /* Registered before any filter runs: a later failure releases what earlier ones built. */
    pc_pool_cleanup(c->pool, filters_destroy, c);
    for (size_t i = 0; i < nf; i++) {
        const struct pc_filter_ops *ops = pc_filter_registry[i];
        if (ops->abi != PC_FILTER_ABI)
            pc_fatal("filter %s: ABI %u, expected %u", ops->name, ops->abi, PC_FILTER_ABI);
        if (section_had_error(ops)) {
            rc = -1; /* reported at its line already */
            continue;
        }
        /* Into a buffer of its own: a filter may write err->msg itself, from the start. */
        struct pc_err mine = {{0}};
        if (ops->configure &&
            ops->configure(cfg_getsec(cfg, ops->name), &c->filter_conf[i], &mine) < 0) {
            if (mine.msg[0])
                err_add(err, mine.msg);
            else
                pc_err_set(err, cfg_getsec(cfg, ops->name), "%s: bad configuration", ops->name);
            rc = -1; /* and configure the others: their errors are reported too */
        }
    }
    return rc;
}

/* filters_destroy - pool cleanup: release filter configurations */
static void filters_destroy(void *arg)
{
    struct pc_conf *c = arg;

    for (size_t i = 0; pc_filter_registry[i]; i++)
        if (c->filter_conf[i] && pc_filter_registry[i]->destroy)
            pc_filter_registry[i]->destroy(c->filter_conf[i]);
}

/* cfg_new - a libconfuse tree with our validators */
static cfg_t *cfg_new(void)
{
    struct opt_arrays a = {.n = 0};
    cfg_t *cfg = cfg_init(build_opts(&a), CFGF_NONE);

    opts_free(&a);
    cfg_set_error_function(cfg, conf_errfn);
    return cfg;
}

/* pc_conf_filter_cfg - an empty tree of one filter's section alone, with the validators */
cfg_t *pc_conf_filter_cfg(const struct pc_filter_ops *ops)
{
    struct opt_arrays a = {.n = 0};
    cfg_t *cfg = cfg_init(filter_opts(&a, ops), CFGF_NONE);

    opts_free(&a);
    cfg_set_error_function(cfg, conf_errfn);
    return cfg;
}

/* unclosed_section - line of the first '{' never closed, or 0. libconfuse 3.3 accepts a file
 * that ends inside a section (its own check was reverted upstream, libconfuse PR #106), so a
 * truncated file would pass "portcullis -t"; this scan follows its lexer: quoted strings with
 * backslash escapes, '#', '//' and C comments. */
static int unclosed_section(const char *path)
{
    FILE *f = fopen(path, "r");
    int c, line = 1, depth = 0, first = 0;
    bool tok = true; /* at a token start: inside an unquoted word, '#' and '/' are plain bytes */
    enum { CODE, DQ, SQ, LINE_COMMENT, BLOCK_COMMENT } st = CODE;

    if (f == NULL)
        return 0;
    while ((c = getc(f)) != EOF) {
        if (c == '\n')
            line++;
        switch (st) {
        case CODE:
            if (!tok && !(c == '{' || c == '}' || (c && strchr(" \t\r\n=,+(", c))))
                break; /* inside an unquoted word */
            tok = c == '{' || c == '}' || (c && strchr(" \t\r\n=,+(", c));
            if (c == '"')
                st = DQ;
            else if (c == '\'')
                st = SQ;
            else if (c == '#')
                st = LINE_COMMENT;
            else if (c == '/') {
                int n = getc(f);
                if (n == '/')
                    st = LINE_COMMENT;
                else if (n == '*')
                    st = BLOCK_COMMENT;
                else if (n != EOF)
                    ungetc(n, f);
            } else if (c == '{') {
                if (depth++ == 0)
                    first = line;
            } else if (c == '}' && depth > 0) {
                depth--;
            }
            break;
        case DQ:
        case SQ:
            if (c == '\\') {
                int n = getc(f);
                if (n == '\n')
                    line++;
            } else if (c == (st == DQ ? '"' : '\'')) {
                st = CODE, tok = true;
            }
            break;
        case LINE_COMMENT:
            if (c == '\n')
                st = CODE, tok = true;
            break;
        case BLOCK_COMMENT:
            if (c == '*') {
                int n = getc(f);
                if (n == '/')
                    st = CODE, tok = true;
                else if (n != EOF)
                    ungetc(n, f);
            }
            break;
        }
    }
    fclose(f);
    return depth > 0 ? first : 0;
}

/* file_read - a whole configuration file into a NUL-terminated buffer (free it), or NULL */
static char *file_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t cap = 0, n = 0;

    if (f == NULL)
        return NULL;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            char *nb = realloc(buf, cap = cap ? cap * 2 : 8192);
            if (nb == NULL)
                pc_fatal("out of memory");
            buf = nb;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    buf[n] = 0;
    *len = n;
    return buf;
}

/* line_blank - overwrite line (1-based) with spaces, keeping the newline so that later lines
 * keep their numbers; false if there is no such line */
static bool line_blank(char *buf, int line)
{
    char *p = buf;

    for (int i = 1; i < line && p; i++) {
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    if (p == NULL || *p == 0)
        return false;
    for (; *p && *p != '\n'; p++)
        *p = ' ';
    return true;
}

/* parse_buf_as - parse buf as if it were the file path (errors and relative names as for it) */
static int parse_buf_as(cfg_t *cfg, const char *path, char *buf, size_t len)
{
    FILE *fp = fmemopen(buf, len ? len : 1, "r");
    int rc;

    if (fp == NULL)
        return CFG_PARSE_ERROR;
    free(cfg->filename);
    cfg->filename = strdup(path);
    rc = cfg_parse_fp(cfg, fp);
    fclose(fp);
    return rc;
}

/* parse_recover - after a syntax error, so that -t goes on (the rules files, the listeners and
 * later syntax errors are still checked): parse again with each failing line blanked, a
 * bounded number of times. The error that stopped each round was reported by it; a round
 * that stops at the end of the file is blanking its way into consequences, so it ends the
 * recovery. Returns the recovered tree (the file is bad all the same), or NULL. */
static cfg_t *parse_recover(const char *path, int line)
{
    size_t len, nlines = 1;
    char *buf = file_read(path, &len);

    if (line <= 0) { /* an error without a line: nothing to blank */
        free(buf);
        return NULL;
    }
    for (size_t i = 0; buf && i < len; i++)
        nlines += buf[i] == '\n';
    for (int round = 0; buf && round < 10 && line_blank(buf, line); round++) {
        cfg_t *cfg = cfg_new();
        int last = pc_parse_last_line;
        if (parse_buf_as(cfg, path, buf, len) == CFG_SUCCESS) {
            free(buf);
            return cfg;
        }
        cfg_free(cfg);
        if (pc_parse_last_line == last || pc_parse_last_line <= line ||
            (size_t)pc_parse_last_line >= nlines)
            break;
        line = pc_parse_last_line;
    }
    free(buf);
    return NULL;
}

/* conf_parse - the file's tree (recovered past syntax errors), errors recorded; NULL when
 * there is nothing to check further (no file, or a syntax error beyond recovery) */
static cfg_t *conf_parse(struct pc_conf *c, const char *path, struct pc_err *err)
{
    cfg_t *cfg = cfg_new();

    pc_pool_cleanup(c->pool, cfg_free_cb, cfg);
    c->cfg = cfg;
    pc_parse_err = err;
    pc_parse_path = path;
    pc_parse_last_line = 0;
    int rc = path ? cfg_parse(cfg, path) : cfg_parse_buf(cfg, "");
    cfg_t *r = rc == CFG_PARSE_ERROR && path ? parse_recover(path, pc_parse_last_line) : NULL;
    pc_parse_err = NULL;
    if (r) {
        pc_pool_cleanup(c->pool, cfg_free_cb, r);
        c->cfg = cfg = r;
        rc = CFG_SUCCESS;
    }
    if (rc == CFG_FILE_ERROR) {
        snprintf(err->msg, sizeof(err->msg), "%s: cannot read: %m", path);
        return NULL;
    }
    if (rc != CFG_SUCCESS) {
        if (!err->msg[0])
            snprintf(err->msg, sizeof(err->msg), "%s: parse error", path ? path : "(defaults)");
        return NULL;
    }
    int open_line = path ? unclosed_section(path) : 0;
    if (open_line) {
        char line[600];
        snprintf(line, sizeof(line), "%s:%d: section not closed before the end of the file", path,
                 open_line);
        err_add(err, line);
    }
    return cfg;
}

/* conf_release - the last reference to a generation is gone (core/settings.h) */
static void conf_release(struct pc_settings *set)
{
    struct pc_conf *c = set->owner;

    pc_pool_destroy(c->pool);
}

/* settings_fill - the values the core reads, copied once the generation is loaded */
static void settings_fill(struct pc_conf *c)
{
    c->core.delay_reject = c->delay_reject;
    c->core.max_header_size = c->limits.max_header_size;
    c->core.max_headers = c->limits.max_headers;
    c->core.spool_threshold = c->limits.spool_threshold;
    c->core.spool_dir = c->spool_dir;
}

/* pc_conf_load - parse, validate, configure filters */
struct pc_conf *pc_conf_load(const char *path, struct pc_err *err)
{
    struct pc_pool *pool = pc_pool_create(8192);
    struct pc_conf *c = pc_pool_zalloc(pool, sizeof(*c));

    err->msg[0] = 0;
    c->pool = pool;
    c->core.refs = 1;
    c->core.release = conf_release;
    c->core.owner = c;
    pc_err_collect = err;
    pc_err_count = 0;
    pc_err_nsections = 0;
    /* A bad value or a syntax error does not stop here: the steps below check what they can
     * (rule files, backends, listeners), so -t shows every error; the load fails at the end. */
    cfg_t *cfg = conf_parse(c, path, err);
    if (cfg == NULL)
        goto fail;
    c->path = path ? pc_pool_strdup(pool, path) : "(embedded defaults)";
    snprintf(pc_conf_current_buf, sizeof(pc_conf_current_buf), "%s", c->path);
    pc_conf_current_path = pc_conf_current_buf;
    /* Every value below was checked as the file was read (pc_params' validators). */
    c->hostname = cfg_getstr(cfg, "hostname");
    if (c->hostname == NULL) {
        char h[256] = "localhost";
        gethostname(h, sizeof(h) - 1);
        c->hostname = pc_pool_strdup(pool, h);
    }
    c->banner = cfg_getstr(cfg, "banner");
    c->spool_dir = cfg_getstr(cfg, "spool_dir");
    c->log = cfg_getstr(cfg, "log");
    pc_log_parse_target(c->log, &c->log_target);
    c->log_json = strcmp(cfg_getstr(cfg, "log_format"), "json") == 0;
    c->syslog_name = cfg_getstr(cfg, "syslog_name");
    cfg_t *msec = cfg_getsec(cfg, "metrics");
    c->metrics_enabled = cfg_getbool(msec, "enabled");
    c->metrics_address = cfg_getstr(msec, "address");
    c->user = cfg_getstr(cfg, "user");
    c->group = cfg_getstr(cfg, "group");
    c->run_as_root = cfg_getbool(cfg, "run_as_root");
    c->workers = workers_resolve(cfg_getint(cfg, "workers"));
    c->worker_timeout = duration_ms(cfg, "worker_timeout");
    c->delay_reject = cfg_getbool(cfg, "delay_reject");
    c->soft_bounce = cfg_getbool(cfg, "soft_bounce");
    c->smtputf8 = cfg_getbool(cfg, "smtputf8");
    c->bare_newline = strcmp(cfg_getstr(cfg, "bare_newline"), "normalize") == 0 ? PC_BARE_NORMALIZE
                                                                                : PC_BARE_REJECT;
    c->nul_strip = strcmp(cfg_getstr(cfg, "nul"), "strip") == 0;
    if (limits_load(c, cfg_getsec(cfg, "limits"), err) < 0)
        goto fail;
    pc_pool_cleanup(pool, cidr_free_cb, &c->limits.connection_limit_exceptions);
    cfg_t *t = cfg_getsec(cfg, "timeouts");
    c->timeouts.command = duration_ms(t, "command");
    c->timeouts.data = duration_ms(t, "data");
    c->timeouts.backend_connect = duration_ms(t, "backend_connect");
    c->timeouts.backend_greeting = duration_ms(t, "backend_greeting");
    c->timeouts.backend_command = duration_ms(t, "backend_command");
    c->timeouts.backend_data_init = duration_ms(t, "backend_data_init");
    c->timeouts.backend_data_block = duration_ms(t, "backend_data_block");
    c->timeouts.backend_data_done = duration_ms(t, "backend_data_done");
    cfg_t *d = cfg_getsec(cfg, "dns");
    c->dns_timeout = duration_ms(d, "timeout");
    c->dns_nnameservers = cfg_size(d, "nameservers");
    c->dns_nameservers = pc_pool_zalloc(pool, (c->dns_nnameservers + 1) * sizeof(char *));
    for (size_t i = 0; i < c->dns_nnameservers; i++)
        c->dns_nameservers[i] = cfg_getnstr(d, "nameservers", (unsigned)i);
    /* Each step reports what it finds and the next runs too, so -t shows every error. */
    int bad = postscreen_load(c, cfg, err) < 0;
    if (!root_had_error() && mynetworks_inherit(cfg, err) < 0)
        goto fail;
    bad |= filters_configure(c, cfg, err) < 0;
    if (backends_load(c, cfg, err) < 0) {
        bad = 1;
    } else {
        /* Into a buffer of its own: the password file check writes err->msg itself. */
        struct pc_err mine = {{0}};
        if (auths_load(c, cfg, &mine) < 0) {
            err_add(err, mine.msg[0] ? mine.msg : "auth: bad configuration");
            bad = 1;
        }
        if (listeners_load(c, cfg, err) < 0)
            bad = 1;
    }
    if (bad || pc_err_count)
        goto fail;
    settings_fill(c);
    pc_err_collect = NULL;
    return c;
fail:
    pc_err_collect = NULL;
    pc_pool_destroy(pool);
    return NULL;
}

/* authdb_free_cb - a credential back end goes with its generation */
static void authdb_free_cb(void *arg)
{
    pc_authdb_free(arg);
}

/* auths_start - the credential back ends of auth sections a listener uses */
static int auths_start(struct pc_conf *c, struct pc_services *svc, struct pc_err *err)
{
    for (size_t i = 0; i < c->nlisteners; i++) {
        struct pc_auth_conf *a = c->listeners[i].auth;
        if (a == NULL || a->db)
            continue;
        a->db = a->dovecot ? pc_authdb_dovecot_new(svc->base, a->dovecot, a->timeout_ms, err)
                           : pc_authdb_passwd_new(a->password_file, a->origin, svc->workers, err);
        if (a->db == NULL)
            return -1;
        pc_pool_cleanup(c->pool, authdb_free_cb, a->db);
    }
    return 0;
}

/* pc_conf_start - start filters used by a chain */
int pc_conf_start(struct pc_conf *c, struct pc_services *svc, struct pc_err *err)
{
    if (auths_start(c, svc, err) < 0)
        return -1;
    if (c->postscreen.store && pc_rl_start(c->postscreen.store, svc->base) < 0) {
        snprintf(err->msg, sizeof(err->msg), "%s: postscreen store could not start", c->path);
        return -1;
    }
    for (size_t i = 0; pc_filter_registry[i]; i++) {
        const struct pc_filter_ops *ops = pc_filter_registry[i];
        if (c->filter_used[i] && ops->start && ops->start(c->filter_conf[i], svc) < 0) {
            snprintf(err->msg, sizeof(err->msg), "%s: filter %s could not start", c->path,
                     ops->name);
            return -1;
        }
    }
    return 0;
}

/* pc_conf_ref - one more user of this generation (the count is the core's: sessions hold it) */
void pc_conf_ref(struct pc_conf *c)
{
    pc_settings_ref(&c->core);
}

/* pc_conf_unref - last user frees the generation */
void pc_conf_unref(struct pc_conf *c)
{
    pc_settings_unref(&c->core);
}

/* value_text - an option's value as the configuration would write it; "(unset)" if none */
static void value_text(cfg_t *sec, cfg_opt_t *o, char *buf, size_t size)
{
    size_t n = cfg_size(sec, o->name), used = 0;
    bool list = o->flags & CFGF_LIST;

    if (n == 0 && !list) {
        snprintf(buf, size, "(unset)");
        return;
    }
    buf[0] = 0;
    if (list)
        used += (size_t)snprintf(buf, size, "{");
    for (size_t i = 0; i < n && used < size; i++) {
        const char *sep = i ? ", " : "";
        if (o->type == CFGT_INT)
            used += (size_t)snprintf(buf + used, size - used, "%s%ld", sep,
                                     cfg_getnint(sec, o->name, (unsigned)i));
        else if (o->type == CFGT_BOOL)
            used += (size_t)snprintf(buf + used, size - used, "%s%s", sep,
                                     cfg_getnbool(sec, o->name, (unsigned)i) ? "true" : "false");
        else if (o->type == CFGT_STR)
            used += (size_t)snprintf(buf + used, size - used, "%s\"%s\"", sep,
                                     cfg_getnstr(sec, o->name, (unsigned)i));
    }
    if (list && used < size)
        snprintf(buf + used, size - used, "}");
}

/* print_tree - every option of sec as "path = value"; with only_changed, those whose value
 * differs from def (the same section parsed from nothing) */
static void print_tree(cfg_t *sec, cfg_t *def, const char *prefix, bool only_changed)
{
    for (cfg_opt_t *o = sec->opts; o && o->name; o++) {
        char name[256], v[4096], dv[4096];
        snprintf(name, sizeof(name), "%s%s%s", prefix, *prefix ? "." : "", o->name);
        if (o->type != CFGT_SEC) {
            value_text(sec, o, v, sizeof(v));
            value_text(def, cfg_getopt(def, o->name), dv, sizeof(dv));
            if (!only_changed || strcmp(v, dv) != 0)
                printf("%s = %s\n", name, v);
        } else if (!(o->flags & CFGF_MULTI)) {
            print_tree(cfg_getsec(sec, o->name), cfg_getsec(def, o->name), name, only_changed);
        } else {
            /* A section that may repeat: its defaults from a fresh instance. */
            unsigned n = cfg_size(sec, o->name);
            cfg_t *d = cfg_size(def, o->name) ? cfg_getnsec(def, o->name, 0)
                                              : cfg_addtsec(def, o->name, "_");
            if (n == 0 && !only_changed && d)
                print_tree(d, d, name, false);
            for (unsigned i = 0; i < n && d; i++) {
                cfg_t *inst = cfg_getnsec(sec, o->name, i);
                char iname[300];
                snprintf(iname, sizeof(iname), "%s.%s", name, cfg_title(inst));
                print_tree(inst, d, iname, only_changed);
            }
        }
    }
}

/* pc_conf_print - -p: every parameter with its effective value (path NULL: the defaults);
 * -n: only those whose value differs from the default. The file is checked first. */
int pc_conf_print(const char *path, bool only_changed, struct pc_err *err)
{
    struct pc_conf *c = pc_conf_load(path, err);
    cfg_t *def = cfg_new();

    if (c == NULL) {
        cfg_free(def);
        return -1;
    }
    cfg_parse_buf(def, "");
    cfg_t *shown = path ? c->cfg : def; /* the embedded listener is no parameter */
    cfg_t *raw = NULL;
    if (only_changed && path) {
        /* What the file says, before mynetworks is copied into the filters' options. */
        raw = cfg_new();
        pc_parse_err = NULL;
        if (cfg_parse(raw, path) == CFG_SUCCESS)
            shown = raw;
    } else if (path) {
        /* The effective values of what the file leaves unset: the host's name, the first
         * backend, our hostname in EHLO. */
        if (cfg_size(shown, "hostname") == 0)
            cfg_setstr(shown, "hostname", c->hostname);
        for (unsigned i = 0; i < cfg_size(shown, "listener") && i < c->nlisteners; i++) {
            cfg_t *l = cfg_getnsec(shown, "listener", i);
            if (cfg_size(l, "backend") == 0 && c->listeners[i].backend_name)
                cfg_setstr(l, "backend", c->listeners[i].backend_name);
        }
        for (unsigned i = 0; i < cfg_size(shown, "backend"); i++) {
            cfg_t *b = cfg_getnsec(shown, "backend", i);
            if (cfg_size(b, "helo_name") == 0)
                cfg_setstr(b, "helo_name", c->hostname);
        }
    }
    print_tree(shown, def, "", only_changed);
    if (raw)
        cfg_free(raw);
    cfg_free(def);
    pc_conf_unref(c);
    return 0;
}

/* pc_conf_print_defaults - every parameter and its default */
void pc_conf_print_defaults(void)
{
    struct pc_err err;

    pc_conf_print(NULL, false, &err);
}
