/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	conf 3 - the configuration: one table, bounded values, file:line errors
 * DESCRIPTION
 *	The libconfuse option tables below are the public interface. Integer
 *	parameters carry bounds in pc_int_bounds and durations are checked by
 *	a validator while the file is parsed, so that an error names the line.
 *	Each registered filter contributes its own section; the core appends
 *	timeout and on_error to every one of them.
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

#include "filters/filter.h"
#include "gateway/authdb.h"
#include "lib/addr.h"
#include "lib/log.h"
#include "lib/parse.h"
#include "lib/pool.h"

#define PC_FILTER_TIMEOUT_DEFAULT "30s"

struct pc_int_bound {
    const char *path;
    long min, max;
};

/* Bounds for every integer parameter: the edge of what is sane, not of what is usual. */
static const struct pc_int_bound pc_int_bounds[] = {
    {"limits|max_message_size", 1024, 2147483647L},
    {"limits|max_recipients", 1, 100000},
    {"limits|max_command_length", 512, 65536},
    {"limits|max_line_length", 1000, 1048576},
    {"limits|max_header_size", 1024, 67108864},
    {"limits|max_headers", 16, 100000},
    {"limits|max_errors", 1, 1000},
    {"limits|max_commands", 100, 1000000000},
    {"limits|max_junk_commands", 1, 1000000000},
    {"limits|min_data_rate", 1, 1073741824},
    {"limits|max_connections", 1, 1000000},
    {"limits|max_connections_per_ip", 1, 1000000},
    {"limits|spool_threshold", 0, 1073741824},
};

static const char *const pc_duration_opts[] = {
    "timeouts|command",          "timeouts|data",
    "timeouts|backend_connect",  "timeouts|backend_greeting",
    "timeouts|backend_command",  "timeouts|backend_data_init",
    "timeouts|backend_data_block", "timeouts|backend_data_done",
    "dns|timeout",
};

static cfg_opt_t listener_opts[] = {
    CFG_STR("address", "127.0.0.1:2525", CFGF_NONE),
    CFG_STR("backend", NULL, CFGF_NODEFAULT),
    CFG_STR_LIST("filters", "{relay}", CFGF_NONE),
    CFG_BOOL("trusted", cfg_false, CFGF_NONE),
    CFG_BOOL("dry_run", cfg_false, CFGF_NONE),
    CFG_BOOL("proxy_protocol", cfg_false, CFGF_NONE),
    CFG_STR_LIST("proxy_from", "{}", CFGF_NONE),
    CFG_STR("proxy_timeout", "5s", CFGF_NONE),
    CFG_END()};

static cfg_opt_t backend_opts[] = {
    CFG_STR_LIST("address", NULL, CFGF_NODEFAULT),
    CFG_STR("maildir", NULL, CFGF_NODEFAULT),
    CFG_STR("identity", "xclient", CFGF_NONE),
    CFG_BOOL("lmtp", cfg_false, CFGF_NONE),
    CFG_STR("helo_name", NULL, CFGF_NODEFAULT),
    CFG_END()};

/* auth "name" { } - a credential back end for AUTH (gateway/authdb.h); exactly one kind. */
static cfg_opt_t auth_opts[] = {CFG_STR("password_file", NULL, CFGF_NODEFAULT),
                                CFG_STR("dovecot", NULL, CFGF_NODEFAULT),
                                CFG_STR("timeout", "10s", CFGF_NONE), CFG_END()};

static cfg_opt_t limits_opts[] = {
    CFG_INT("max_message_size", 10240000, CFGF_NONE),
    CFG_INT("max_recipients", 1000, CFGF_NONE),
    CFG_INT("max_command_length", 2048, CFGF_NONE),
    CFG_INT("max_line_length", 65536, CFGF_NONE),
    CFG_INT("max_header_size", 102400, CFGF_NONE),
    CFG_INT("max_headers", 1000, CFGF_NONE),
    CFG_INT("max_errors", 20, CFGF_NONE),
    CFG_INT("max_commands", 100000, CFGF_NONE),
    CFG_INT("max_junk_commands", 100, CFGF_NONE),
    CFG_INT("min_data_rate", 500, CFGF_NONE),
    CFG_INT("max_connections", 10000, CFGF_NONE),
    CFG_INT("max_connections_per_ip", 50, CFGF_NONE),
    CFG_STR_LIST("connection_limit_exceptions", "{127.0.0.0/8, ::1/128}", CFGF_NONE),
    CFG_INT("spool_threshold", 262144, CFGF_NONE),
    CFG_END()};

static cfg_opt_t timeouts_opts[] = {
    CFG_STR("command", "5m", CFGF_NONE),
    CFG_STR("data", "3m", CFGF_NONE),
    CFG_STR("backend_connect", "30s", CFGF_NONE),
    CFG_STR("backend_greeting", "5m", CFGF_NONE),
    CFG_STR("backend_command", "5m", CFGF_NONE),
    CFG_STR("backend_data_init", "2m", CFGF_NONE),
    CFG_STR("backend_data_block", "3m", CFGF_NONE),
    CFG_STR("backend_data_done", "10m", CFGF_NONE),
    CFG_END()};

static cfg_opt_t metrics_opts[] = {CFG_BOOL("enabled", cfg_false, CFGF_NONE),
                                   CFG_STR("address", "127.0.0.1:9465", CFGF_NONE), CFG_END()};

static cfg_opt_t dns_opts[] = {
    CFG_STR_LIST("nameservers", "{}", CFGF_NONE),
    CFG_STR("timeout", "5s", CFGF_NONE),
    CFG_END()};

static const char *pc_conf_current_path;

/* pc_err_set - "file:line: message" */
void pc_err_set(struct pc_err *err, cfg_t *where, const char *fmt, ...)
{
    char msg[400];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const char *file = where && where->filename ? where->filename : pc_conf_current_path;
    if (where && file)
        snprintf(err->msg, sizeof(err->msg), "%s:%d: %s", file, where->line, msg);
    else
        snprintf(err->msg, sizeof(err->msg), "%s", msg);
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

/* conf_errfn - libconfuse errors into our error buffer, first one wins */
static void conf_errfn(cfg_t *cfg, const char *fmt, va_list ap)
{
    char msg[400];

    if (pc_parse_err == NULL || pc_parse_err->msg[0])
        return;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    snprintf(pc_parse_err->msg, sizeof(pc_parse_err->msg), "%s:%d: %s",
             cfg->filename ? cfg->filename : pc_parse_path ? pc_parse_path : "(config)", cfg->line,
             msg);
}

/* validate_int - bounds from pc_int_bounds */
static int validate_int(cfg_t *cfg, cfg_opt_t *opt)
{
    long v = cfg_opt_getnint(opt, cfg_opt_size(opt) - 1);

    for (size_t i = 0; i < sizeof(pc_int_bounds) / sizeof(pc_int_bounds[0]); i++) {
        const char *name = strchr(pc_int_bounds[i].path, '|') + 1;
        if (strcmp(name, opt->name) == 0 && (v < pc_int_bounds[i].min || v > pc_int_bounds[i].max)) {
            cfg_error(cfg, "%s = %ld is out of range [%ld, %ld]", opt->name, v,
                      pc_int_bounds[i].min, pc_int_bounds[i].max);
            return -1;
        }
    }
    return 0;
}

/* validate_duration - "5s", "2m"... */
static int validate_duration(cfg_t *cfg, cfg_opt_t *opt)
{
    unsigned long long ms;
    const char *v = cfg_opt_getnstr(opt, cfg_opt_size(opt) - 1);

    if (!v || !pc_parse_duration(v, &ms) || ms > 86400000ULL) {
        cfg_error(cfg, "%s: bad duration \"%s\" (use e.g. 30s, 5m, 250ms; at most 1d)", opt->name,
                  v ? v : "");
        return -1;
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
        return -1;
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
        return -1;
    }
    enum pc_log_target lt;
    if (strcmp(opt->name, "log") == 0 && !pc_log_parse_target(v, &lt)) {
        cfg_error(cfg, "log must be auto, journal, syslog or stderr, not \"%s\"", v);
        return -1;
    }
    if (strcmp(opt->name, "log_format") == 0 && strcmp(v, "text") != 0 && strcmp(v, "json") != 0) {
        cfg_error(cfg, "log_format must be text or json, not \"%s\"", v);
        return -1;
    }
    if (strcmp(opt->name, "syslog_name") == 0 && !syslog_name_valid(v)) {
        cfg_error(cfg, "syslog_name must be 1 to 40 letters, digits, '.', '-' or '_', not \"%s\"",
                  v);
        return -1;
    }
    if (strcmp(opt->name, "bare_newline") == 0 && strcmp(v, "reject") != 0 &&
        strcmp(v, "normalize") != 0) {
        cfg_error(cfg, "bare_newline must be reject or normalize, not \"%s\"", v);
        return -1;
    }
    if (strcmp(opt->name, "nul") == 0 && strcmp(v, "reject") != 0 && strcmp(v, "strip") != 0) {
        cfg_error(cfg, "nul must be reject or strip, not \"%s\"", v);
        return -1;
    }
    return 0;
}

/* duration_ms - a validated duration option in milliseconds */
static unsigned duration_ms(cfg_t *sec, const char *name)
{
    unsigned long long ms = 0;

    pc_parse_duration(cfg_getstr(sec, name), &ms);
    return (unsigned)ms;
}

/* filter_opts - a filter's options plus the core's timeout and on_error */
static cfg_opt_t *filter_opts(const struct pc_filter_ops *ops)
{
    size_t n = 0;

    while (ops->opts && ops->opts[n].name)
        n++;
    cfg_opt_t *v = calloc(n + 3, sizeof(*v));
    if (v == NULL)
        pc_fatal("out of memory");
    if (n)
        memcpy(v, ops->opts, n * sizeof(*v));
    cfg_opt_t extra[] = {CFG_STR("timeout", PC_FILTER_TIMEOUT_DEFAULT, CFGF_NONE),
                         CFG_STR("on_error", "tempfail", CFGF_NONE), CFG_END()};
    memcpy(v + n, extra, sizeof(extra));
    return v;
}

/* build_opts - the whole option table; the caller frees the returned arrays */
static cfg_opt_t *build_opts(cfg_opt_t ***fopts_out)
{
    size_t nf = 0;

    while (pc_filter_registry[nf])
        nf++;
    cfg_opt_t core[] = {
        CFG_STR("hostname", NULL, CFGF_NODEFAULT),
        CFG_STR("banner", "ESMTP", CFGF_NONE),
        CFG_STR("spool_dir", "/tmp", CFGF_NONE),
        CFG_STR("log", "auto", CFGF_NONE),
        CFG_STR("log_format", "text", CFGF_NONE),
        CFG_STR("syslog_name", "portcullis", CFGF_NONE),
        CFG_STR("user", "", CFGF_NONE),
        CFG_STR("group", "", CFGF_NONE),
        CFG_BOOL("run_as_root", cfg_false, CFGF_NONE),
        CFG_BOOL("delay_reject", cfg_true, CFGF_NONE),
        CFG_BOOL("soft_bounce", cfg_false, CFGF_NONE),
        CFG_BOOL("smtputf8", cfg_true, CFGF_NONE),
        CFG_STR("bare_newline", "reject", CFGF_NONE),
        CFG_STR("nul", "reject", CFGF_NONE),
        CFG_SEC("listener", listener_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
        CFG_SEC("backend", backend_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
        CFG_SEC("auth", auth_opts, CFGF_MULTI | CFGF_TITLE | CFGF_NO_TITLE_DUPES),
        CFG_SEC("limits", limits_opts, CFGF_NONE),
        CFG_SEC("timeouts", timeouts_opts, CFGF_NONE),
        CFG_SEC("dns", dns_opts, CFGF_NONE),
        CFG_SEC("metrics", metrics_opts, CFGF_NONE),
    };
    size_t nc = sizeof(core) / sizeof(core[0]);
    /* Sized from the table itself: a fixed count overflowed when an option was added. */
    cfg_opt_t **fopts = calloc(nf + 1, sizeof(*fopts));
    cfg_opt_t *opts = calloc(nc + nf + 1, sizeof(*opts));
    if (fopts == NULL || opts == NULL)
        pc_fatal("out of memory");
    memcpy(opts, core, sizeof(core));
    for (size_t i = 0; i < nf; i++) {
        fopts[i] = filter_opts(pc_filter_registry[i]);
        cfg_opt_t sec = CFG_SEC(pc_filter_registry[i]->name, fopts[i], CFGF_NONE);
        opts[nc + i] = sec;
    }
    cfg_opt_t end = CFG_END();
    opts[nc + nf] = end;
    *fopts_out = fopts;
    return opts;
}

/* free_opts - release build_opts() arrays (libconfuse copied them) */
static void free_opts(cfg_opt_t *opts, cfg_opt_t **fopts)
{
    for (size_t i = 0; fopts[i]; i++)
        free(fopts[i]);
    free(fopts);
    free(opts);
}

/* cfg_free_cb - pool cleanup for the parsed tree */
static void cfg_free_cb(void *arg)
{
    cfg_free(arg);
}

/* limits_load - the limits section */
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
                pc_err_set(err, sec, "backend \"%s\": bad address \"%s\" (host:port, [v6]:port "
                           "or unix:/path)", b->name, b->addresses[k]);
                return -1;
            }
        }
        if (strcmp(id, "xclient") == 0)
            b->identity = PC_IDENT_XCLIENT;
        else if (strcmp(id, "xforward") == 0)
            b->identity = PC_IDENT_XFORWARD;
        else if (strcmp(id, "none") == 0)
            b->identity = PC_IDENT_NONE;
        else {
            pc_err_set(err, sec, "backend \"%s\": identity must be xclient, xforward or none",
                       b->name);
            return -1;
        }
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
                pc_err_set(err, lsec, "listener \"%s\": filter \"%s\" listed twice", l->name,
                           name);
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
    return 0;
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

/* listeners_load - listener sections, or the embedded default */
static int listeners_load(struct pc_conf *c, cfg_t *cfg, struct pc_err *err)
{
    size_t n = cfg_size(cfg, "listener");
    static const char *default_filters[] = {"relay"};

    c->nlisteners = n ? n : 1;
    c->listeners = pc_pool_zalloc(c->pool, c->nlisteners * sizeof(*c->listeners));
    if (n == 0) {
        /* Embedded default: one listener on loopback, relay-only chain, first backend. */
        struct pc_listener_conf *l = &c->listeners[0];
        l->name = "inbound";
        l->address = "127.0.0.1:2525";
        l->backend = &c->backends[0];
        l->backend_name = l->backend->name;
        l->chain.n = 1;
        l->chain.links = pc_pool_zalloc(c->pool, sizeof(*l->chain.links));
        size_t k;
        for (k = 0; pc_filter_registry[k]; k++)
            if (strcmp(pc_filter_registry[k]->name, default_filters[0]) == 0)
                break;
        cfg_t *fsec = cfg_getsec(cfg, default_filters[0]);
        l->chain.links[0].ops = pc_filter_registry[k];
        l->chain.links[0].conf = c->filter_conf[k];
        l->chain.links[0].timeout_ms = duration_ms(fsec, "timeout");
        c->filter_used[k] = true;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        cfg_t *sec = cfg_getnsec(cfg, "listener", (unsigned)i);
        struct pc_listener_conf *l = &c->listeners[i];
        char h[256], p[16];
        l->name = cfg_title(sec);
        l->line = sec->line;
        l->address = cfg_getstr(sec, "address");
        l->trusted = cfg_getbool(sec, "trusted");
        if (!pc_parse_hostport(l->address, h, sizeof(h), p, sizeof(p)) || !p[0]) {
            pc_err_set(err, sec, "listener \"%s\": bad address \"%s\" (host:port or [v6]:port)",
                       l->name, l->address);
            return -1;
        }
        l->backend_name = cfg_getstr(sec, "backend");
        if (l->backend_name == NULL) {
            l->backend = &c->backends[0];
        } else {
            for (size_t k = 0; k < c->nbackends; k++)
                if (strcmp(c->backends[k].name, l->backend_name) == 0)
                    l->backend = &c->backends[k];
            if (l->backend == NULL) {
                pc_err_set(err, sec, "listener \"%s\": no backend named \"%s\"", l->name,
                           l->backend_name);
                return -1;
            }
        }
        if (chain_build(c, cfg, sec, l, err) < 0 || listener_proxy_load(c, sec, l, err) < 0)
            return -1;
    }
    return 0;
}

/* filters_configure - every registered filter builds its configuration */
static void filters_destroy(void *);
static int filters_configure(struct pc_conf *c, cfg_t *cfg, struct pc_err *err)
{
    size_t nf = 0;

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
        if (ops->configure && ops->configure(cfg_getsec(cfg, ops->name), &c->filter_conf[i], err) < 0) {
            if (!err->msg[0])
                pc_err_set(err, cfg_getsec(cfg, ops->name), "%s: bad configuration", ops->name);
            return -1;
        }
    }
    return 0;
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
    cfg_opt_t **fopts;
    cfg_opt_t *opts = build_opts(&fopts);
    cfg_t *cfg = cfg_init(opts, CFGF_NONE);

    free_opts(opts, fopts);
    cfg_set_error_function(cfg, conf_errfn);
    for (size_t i = 0; i < sizeof(pc_int_bounds) / sizeof(pc_int_bounds[0]); i++)
        cfg_set_validate_func(cfg, pc_int_bounds[i].path, validate_int);
    for (size_t i = 0; i < sizeof(pc_duration_opts) / sizeof(pc_duration_opts[0]); i++)
        cfg_set_validate_func(cfg, pc_duration_opts[i], validate_duration);
    cfg_set_validate_func(cfg, "hostname", validate_top);
    cfg_set_validate_func(cfg, "log", validate_top);
    cfg_set_validate_func(cfg, "log_format", validate_top);
    cfg_set_validate_func(cfg, "syslog_name", validate_top);
    cfg_set_validate_func(cfg, "bare_newline", validate_top);
    cfg_set_validate_func(cfg, "nul", validate_top);
    for (size_t i = 0; pc_filter_registry[i]; i++) {
        char path[128];
        snprintf(path, sizeof(path), "%s|timeout", pc_filter_registry[i]->name);
        cfg_set_validate_func(cfg, path, validate_duration);
        snprintf(path, sizeof(path), "%s|on_error", pc_filter_registry[i]->name);
        cfg_set_validate_func(cfg, path, validate_on_error);
    }
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

/* pc_conf_load - parse, validate, configure filters */
struct pc_conf *pc_conf_load(const char *path, struct pc_err *err)
{
    struct pc_pool *pool = pc_pool_create(8192);
    struct pc_conf *c = pc_pool_zalloc(pool, sizeof(*c));
    cfg_t *cfg;
    int rc;

    err->msg[0] = 0;
    c->pool = pool;
    c->refs = 1;
    cfg = cfg_new();
    pc_pool_cleanup(pool, cfg_free_cb, cfg);
    c->cfg = cfg;
    pc_parse_err = err;
    pc_parse_path = path;
    rc = path ? cfg_parse(cfg, path) : cfg_parse_buf(cfg, "");
    pc_parse_err = NULL;
    if (rc == CFG_FILE_ERROR) {
        snprintf(err->msg, sizeof(err->msg), "%s: cannot read: %m", path);
        goto fail;
    }
    if (rc != CFG_SUCCESS) {
        if (!err->msg[0])
            snprintf(err->msg, sizeof(err->msg), "%s: parse error", path ? path : "(defaults)");
        goto fail;
    }
    int open_line = path ? unclosed_section(path) : 0;
    if (open_line) {
        snprintf(err->msg, sizeof(err->msg), "%s:%d: section not closed before the end of the file",
                 path, open_line);
        goto fail;
    }
    c->path = path ? pc_pool_strdup(pool, path) : "(embedded defaults)";
    pc_conf_current_path = c->path;
    c->hostname = cfg_getstr(cfg, "hostname");
    if (c->hostname == NULL) {
        char h[256] = "localhost";
        gethostname(h, sizeof(h) - 1);
        c->hostname = pc_pool_strdup(pool, h);
    } else if (!pc_domain_valid(c->hostname, strlen(c->hostname), false)) {
        snprintf(err->msg, sizeof(err->msg), "%s: hostname \"%s\" is not a valid domain name",
                 c->path, c->hostname);
        goto fail;
    }
    c->banner = cfg_getstr(cfg, "banner");
    c->spool_dir = cfg_getstr(cfg, "spool_dir");
    c->log = cfg_getstr(cfg, "log");
    if (!pc_log_parse_target(c->log, &c->log_target)) {
        snprintf(err->msg, sizeof(err->msg), "%s: log must be auto, journal, syslog or stderr",
                 c->path);
        goto fail;
    }
    c->log_json = strcmp(cfg_getstr(cfg, "log_format"), "json") == 0;
    c->syslog_name = cfg_getstr(cfg, "syslog_name");
    if (!syslog_name_valid(c->syslog_name)) {
        snprintf(err->msg, sizeof(err->msg), "%s: syslog_name \"%s\" is not valid", c->path,
                 c->syslog_name);
        goto fail;
    }
    cfg_t *msec = cfg_getsec(cfg, "metrics");
    c->metrics_enabled = cfg_getbool(msec, "enabled");
    c->metrics_address = cfg_getstr(msec, "address");
    {
        char h[256], pt[16];
        if (!pc_parse_hostport(c->metrics_address, h, sizeof(h), pt, sizeof(pt)) || !pt[0]) {
            snprintf(err->msg, sizeof(err->msg), "%s: metrics.address \"%s\" must be host:port",
                     c->path, c->metrics_address);
            goto fail;
        }
    }
    c->user = cfg_getstr(cfg, "user");
    c->group = cfg_getstr(cfg, "group");
    c->run_as_root = cfg_getbool(cfg, "run_as_root");
    /* Checked here too, so that -t (and ExecReload) catch a typo before a restart does. */
    if (*c->user && getpwnam(c->user) == NULL) {
        snprintf(err->msg, sizeof(err->msg), "%s: user \"%s\": no such user", c->path, c->user);
        goto fail;
    }
    if (*c->group && getgrnam(c->group) == NULL) {
        snprintf(err->msg, sizeof(err->msg), "%s: group \"%s\": no such group", c->path,
                 c->group);
        goto fail;
    }
    c->delay_reject = cfg_getbool(cfg, "delay_reject");
    c->soft_bounce = cfg_getbool(cfg, "soft_bounce");
    c->smtputf8 = cfg_getbool(cfg, "smtputf8");
    const char *bn = cfg_getstr(cfg, "bare_newline");
    if (strcmp(bn, "reject") == 0)
        c->bare_newline = PC_BARE_REJECT;
    else if (strcmp(bn, "normalize") == 0)
        c->bare_newline = PC_BARE_NORMALIZE;
    else {
        snprintf(err->msg, sizeof(err->msg), "%s: bare_newline must be reject or normalize",
                 c->path);
        goto fail;
    }
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
    if (filters_configure(c, cfg, err) < 0)
        goto fail;
    if (backends_load(c, cfg, err) < 0 || auths_load(c, cfg, err) < 0 ||
        listeners_load(c, cfg, err) < 0)
        goto fail;
    return c;
fail:
    pc_pool_destroy(pool);
    return NULL;
}

/* pc_conf_start - start filters used by a chain */
int pc_conf_start(struct pc_conf *c, struct pc_services *svc, struct pc_err *err)
{
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

/* pc_conf_ref - one more session uses this generation */
void pc_conf_ref(struct pc_conf *c)
{
    c->refs++;
}

/* pc_conf_unref - last user frees the generation */
void pc_conf_unref(struct pc_conf *c)
{
    if (--c->refs == 0)
        pc_pool_destroy(c->pool);
}

/* print_section - one section's options with defaults */
static void print_section(cfg_t *sec, const char *prefix)
{
    for (cfg_opt_t *o = sec->opts; o && o->name; o++) {
        char name[256];
        snprintf(name, sizeof(name), "%s%s%s", prefix, *prefix ? "." : "", o->name);
        if (o->type == CFGT_SEC) {
            if (o->flags & CFGF_MULTI) {
                /* Print the option names of a multi section from a throw-away instance. */
                for (cfg_opt_t *so = o->subopts; so && so->name; so++)
                    printf("%s.%s\n", name, so->name);
                continue;
            }
            print_section(cfg_getsec(sec, o->name), name);
            continue;
        }
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (cfg_size(sec, o->name) > 0)
            cfg_opt_print_indent(o, f, 0);
        fclose(f);
        /* libconfuse prints "name=value" or "name = {...}": keep the value. */
        char *eq = text ? strchr(text, '=') : NULL;
        char *val = eq ? eq + 1 : NULL;
        while (val && *val == ' ')
            val++;
        printf("%s%s%s", name, val ? " = " : "\n", val ? val : "");
        free(text);
    }
}

/* pc_conf_print_defaults - every parameter and its default */
void pc_conf_print_defaults(void)
{
    cfg_t *cfg = cfg_new();

    cfg_parse_buf(cfg, "");
    print_section(cfg, "");
    cfg_free(cfg);
}
