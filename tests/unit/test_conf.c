/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_conf 1 - the configuration loader: defaults, bounds, file:line errors
 * DESCRIPTION
 *	Every case writes a small file to a temporary directory and loads it.
 *	Good files are checked field by field (defaults, identity values,
 *	durations, several backends and listeners); bad files must be refused
 *	with a message that starts "FILE:LINE: " naming the offending line and
 *	says what is wrong.
 * SEE ALSO
 *	portcullis.conf(5)
 */
#include <check.h>
#include <confuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/filter.h"
#include "core/session.h"
#include "filters/registry.h"
#include "gateway/conf.h"
#include "lib/log.h"

static char dir[] = "/tmp/pc-test-conf-XXXXXX";
static char path[256];

/* load - write text to the test file and load it */
static struct pc_conf *load(const char *text, struct pc_err *err)
{
    FILE *f = fopen(path, "w");

    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    memset(err, 0, sizeof(*err));
    return pc_conf_load(path, err);
}

START_TEST(defaults)
{
    struct pc_err err;
    struct pc_conf *c = load("", &err);

    ck_assert_msg(c != NULL, "%s", err.msg);
    ck_assert_uint_eq(c->limits.max_message_size, 10240000);
    ck_assert_uint_eq(c->limits.max_recipients, 1000);
    ck_assert_uint_eq(c->limits.max_command_length, 2048);
    ck_assert_uint_eq(c->limits.max_line_length, 65536);
    ck_assert_uint_eq(c->limits.max_errors, 20);
    ck_assert_uint_eq(c->limits.max_connections_per_ip, 50);
    /* RFC 5321 4.5.3.2 timeouts. */
    ck_assert_uint_eq(c->timeouts.command, 5 * 60 * 1000);
    ck_assert_uint_eq(c->timeouts.data, 3 * 60 * 1000);
    ck_assert_uint_eq(c->timeouts.backend_data_init, 2 * 60 * 1000);
    ck_assert_uint_eq(c->timeouts.backend_data_block, 3 * 60 * 1000);
    ck_assert_uint_eq(c->timeouts.backend_data_done, 10 * 60 * 1000);
    ck_assert_int_eq(c->bare_newline, PC_BARE_REJECT); /* the safe default */
    ck_assert(!c->soft_bounce);
    /* One loopback listener, the relay filter, the embedded Maildir backend. */
    ck_assert_uint_eq(c->nlisteners, 1);
    ck_assert_str_eq(c->listeners[0].address, "127.0.0.1:2525");
    ck_assert_uint_eq(c->listeners[0].chain.n, 1);
    ck_assert_str_eq(c->listeners[0].chain.links[0].ops->name, "relay");
    ck_assert_ptr_nonnull(c->listeners[0].backend);
    ck_assert_ptr_nonnull(c->listeners[0].backend->maildir);
    ck_assert_uint_eq(c->listeners[0].backend->naddr, 0);
    ck_assert(!c->listeners[0].trusted);
    /* The connection limit exceptions default to loopback. */
    struct pc_ip ip;
    ck_assert(pc_ip_parse("127.0.0.1", &ip));
    ck_assert(pc_cidr_list_match(&c->limits.connection_limit_exceptions, &ip));
    ck_assert(pc_ip_parse("192.0.2.1", &ip));
    ck_assert(!pc_cidr_list_match(&c->limits.connection_limit_exceptions, &ip));
    pc_conf_unref(c);
}
END_TEST

START_TEST(full)
{
    struct pc_err err;
    struct pc_conf *c =
        load("hostname = \"mx.example.net\"\n"
             "listener \"in\" { address = \"[::1]:2525\" backend = \"b\" filters = { } trusted = "
             "true }\n"
             "listener \"sub\" { address = \"127.0.0.1:587\" backend = \"m\" dry_run = true }\n"
             "backend \"a\" { address = \"127.0.0.1:10025\" identity = \"none\" }\n"
             "backend \"b\" { address = { \"127.0.0.1:10025\", \"[::1]:10026\" }\n"
             "    identity = \"xforward\" lmtp = true helo_name = \"gw.example\" }\n"
             "backend \"m\" { maildir = \"/tmp/md\" }\n"
             "limits { max_message_size = 1024 max_recipients = 100000 spool_threshold = 0 }\n"
             "timeouts { command = 250ms data = 90s backend_connect = 1d backend_command = 2h }\n"
             "relay { timeout = 2s on_error = accept }\n"
             "soft_bounce = true\n"
             "bare_newline = \"normalize\"\n",
             &err);

    ck_assert_msg(c != NULL, "%s", err.msg);
    ck_assert_str_eq(c->hostname, "mx.example.net");
    ck_assert(c->soft_bounce);
    ck_assert_int_eq(c->bare_newline, PC_BARE_NORMALIZE);
    ck_assert_uint_eq(c->nbackends, 3);
    ck_assert_int_eq(c->backends[0].identity, PC_IDENT_NONE);
    ck_assert_int_eq(c->backends[1].identity, PC_IDENT_XFORWARD);
    ck_assert(c->backends[1].lmtp);
    ck_assert_str_eq(c->backends[1].helo_name, "gw.example");
    ck_assert_uint_eq(c->backends[1].naddr, 2);
    ck_assert_str_eq(c->backends[1].addresses[1], "[::1]:10026");
    ck_assert_str_eq(c->backends[2].maildir, "/tmp/md");
    ck_assert_uint_eq(c->nlisteners, 2);
    ck_assert_ptr_eq(c->listeners[0].backend, &c->backends[1]);
    ck_assert(c->listeners[0].trusted);
    ck_assert_uint_eq(c->listeners[0].chain.n, 0);
    ck_assert_ptr_eq(c->listeners[1].backend, &c->backends[2]);
    ck_assert(c->listeners[1].chain.dry_run);
    ck_assert_uint_eq(c->listeners[1].chain.n, 1); /* filters default to relay */
    ck_assert_uint_eq(c->listeners[1].chain.links[0].timeout_ms, 2000);
    ck_assert_int_eq(c->listeners[1].chain.links[0].on_error, PC_ONERR_ACCEPT);
    ck_assert_uint_eq(c->limits.max_message_size, 1024);
    ck_assert_uint_eq(c->limits.max_recipients, 100000);
    ck_assert_uint_eq(c->limits.spool_threshold, 0);
    ck_assert_uint_eq(c->timeouts.command, 250);
    ck_assert_uint_eq(c->timeouts.data, 90000);
    ck_assert_uint_eq(c->timeouts.backend_connect, 86400000);
    ck_assert_uint_eq(c->timeouts.backend_command, 7200000);
    pc_conf_unref(c);

    /* Braces inside strings and comments are not structure. */
    c = load("# a comment with {\nbanner = \"ESMTP {}\\\" }\" // }\n/* { */ relay { }\n"
             "spool_dir = /tmp//x\n",
             &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    ck_assert_str_eq(c->banner, "ESMTP {}\" }");
    ck_assert_str_eq(c->spool_dir, "/tmp//x"); /* "//" inside a word is no comment */
    pc_conf_unref(c);

    /* The identity default is xclient. */
    c = load("backend \"x\" { address = \"127.0.0.1:25\" }\n", &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    ck_assert_int_eq(c->backends[0].identity, PC_IDENT_XCLIENT);
    ck_assert_ptr_eq(c->listeners[0].backend, &c->backends[0]);
    pc_conf_unref(c);
}
END_TEST

START_TEST(errors)
{
    static const struct {
        const char *text;
        int line;
        const char *says;
    } t[] = {
        /* Every integer bound, just outside. */
        {"\nlimits {\n max_message_size = 1023\n}\n", 3, "max_message_size"},
        {"limits { max_message_size = 2147483648 }\n", 1, "out of range"},
        {"limits { max_recipients = 0 }\n", 1, "max_recipients"},
        {"limits { max_recipients = 100001 }\n", 1, "max_recipients"},
        {"limits { max_command_length = 511 }\n", 1, "max_command_length"},
        {"limits { max_command_length = 65537 }\n", 1, "max_command_length"},
        {"limits { max_line_length = 999 }\n", 1, "max_line_length"},
        {"limits { max_line_length = 1048577 }\n", 1, "max_line_length"},
        {"limits { max_header_size = 1023 }\n", 1, "max_header_size"},
        {"limits { max_headers = 15 }\n", 1, "max_headers"},
        {"limits { max_errors = 0 }\n", 1, "max_errors"},
        {"limits { max_errors = 1001 }\n", 1, "max_errors"},
        {"limits { max_connections = 0 }\n", 1, "max_connections"},
        {"limits { max_connections_per_ip = 0 }\n", 1, "max_connections_per_ip"},
        {"limits { spool_threshold = -1 }\n", 1, "spool_threshold"},
        {"limits { spool_threshold = 1073741825 }\n", 1, "spool_threshold"},
        {"limits {\n connection_limit_exceptions = { \"10.0.0.0/33\" }\n}\n", 0,
         "connection_limit_exceptions"},
        /* Durations. */
        {"timeouts {\n command = 5x\n}\n", 2, "bad duration"},
        {"timeouts { data = \"\" }\n", 1, "bad duration"},
        {"timeouts { data = 2d }\n", 1, "bad duration"},
        {"timeouts { data = -1s }\n", 1, "bad duration"},
        {"dns { timeout = soon }\n", 1, "bad duration"},
        {"relay {\n\n timeout = forever\n}\n", 3, "bad duration"},
        {"relay { on_error = ignore }\n", 1, "on_error"},
        /* Filters. */
        {"listener \"in\" {\n filters = { \"relay\", \"nosuch\" }\n}\n", 0,
         "unknown filter \"nosuch\""},
        {"listener \"in\" { filters = { \"relay\", \"relay\" } }\n", 1, "listed twice"},
        /* Backends. */
        {"backend \"b\" {\n address = \"nohost\"\n}\n", 0, "bad address"},
        {"backend \"b\" { address = \"127.0.0.1\" }\n", 1, "bad address"},
        {"backend \"b\" { address = \"127.0.0.1:\" }\n", 1, "bad address"},
        {"backend \"b\" { address = { \"127.0.0.1:25\", \"[::1\" } }\n", 1, "bad address"},
        {"backend \"b\" { identity = \"xclient\" }\n", 1, "either address or maildir"},
        {"backend \"b\" { address = \"127.0.0.1:25\" maildir = \"/tmp/x\" }\n", 1,
         "either address or maildir"},
        {"backend \"b\" { address = \"127.0.0.1:25\" identity = \"proxy-v3\" }\n", 1, "identity"},
        {"backend \"b\" { address = \"127.0.0.1:25\" tls = \"yes\" }\n", 1, "tls must be"},
        {"backend \"b\" { address = \"127.0.0.1:25\" tls = \"verify\" }\n", 1, "tls_name"},
        {"backend \"b\" { address = \"127.0.0.1:25\" tls = \"verify\" tls_name = \"mx\"\n"
         "  tls_ca = \"/nonexistent/ca.pem\" }\n",
         2, "tls_ca"},
        {"backend \"b\" { maildir = \"/tmp\" tls = \"may\" }\n", 1, "SMTP backend"},
        {"backend \"b\" { address = \"127.0.0.1:25\" }\nbackend \"b\" { maildir = \"/tmp\" }\n", 0,
         "b"},
        /* Listeners. */
        {"listener \"in\" { address = \"127.0.0.1\" }\n", 1, "bad address"},
        {"listener \"in\" { backend = \"nope\" }\n", 1, "no backend named \"nope\""},
        /* Top level. */
        {"hostname = \"bad host\"\n", 1, "hostname"},
        {"\nlog = \"file\"\n", 2, "log"},
        {"\n\nbare_newline = \"accept\"\n", 3, "bare_newline"},
        {"nosuchoption = 1\n", 1, "nosuchoption"},
        {"limits { max_recipients = many }\n", 1, "max_recipients"},
        {"limits { max_recipients = 1\n}}\n", 2, ""},
        {"listener \"in\" { address = }\n", 1, ""},
        /* A file that ends inside a section (a truncated copy) is refused, not half-read. */
        {"limits { max_recipients = 5 }\nlistener \"in\" {\n address = \"127.0.0.1:2525\"\n", 2,
         "not closed"},
        {"# {\nrelay { domains = { \"a}.example\" } // }\n /* } */\n", 2, "not closed"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pc_err err;
        struct pc_conf *c = load(t[i].text, &err);
        if (c)
            pc_conf_unref(c);
        ck_assert_msg(c == NULL, "%zu accepted: %s", i, t[i].text);
        /* "FILE:LINE: ", with the line given when the table knows it. */
        size_t pl = strlen(path);
        ck_assert_msg(strncmp(err.msg, path, pl) == 0 && err.msg[pl] == ':', "%zu: %s", i, err.msg);
        char *end;
        long line = strtol(err.msg + pl + 1, &end, 10);
        ck_assert_msg(end > err.msg + pl + 1 && end[0] == ':' && end[1] == ' ' && line > 0,
                      "%zu: no line number: %s", i, err.msg);
        if (t[i].line)
            ck_assert_msg(line == t[i].line, "%zu: line %ld, expected %d: %s", i, line, t[i].line,
                          err.msg);
        ck_assert_msg(strstr(err.msg, t[i].says) != NULL, "%zu: %s", i, err.msg);
    }
}
END_TEST

/* nets - the networks of option name in section sec of a loaded configuration, comma-joined */
static const char *nets(struct pc_conf *c, const char *sec, const char *name)
{
    static char buf[256];
    cfg_t *s = cfg_getsec(c->cfg, sec);

    buf[0] = 0;
    for (unsigned i = 0; i < cfg_size(s, name); i++)
        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "%s%s", i ? "," : "",
                 cfg_getnstr(s, name, i));
    return buf;
}

/* One trust definition: the top-level mynetworks fills every filter's trust option left unset;
 * a filter's own option wins. spf's follows only a mynetworks set on purpose. */
START_TEST(trust)
{
    struct pc_err err;
    struct pc_conf *c = load("relay { domains = { \"a.example\" } }\n", &err);

    ck_assert_msg(c != NULL, "%s", err.msg);
    ck_assert_str_eq(nets(c, "relay", "mynetworks"), "127.0.0.0/8,::1/128");
    ck_assert_str_eq(nets(c, "dkim", "mynetworks"), "127.0.0.0/8,::1/128");
    ck_assert_str_eq(nets(c, "spf", "trusted_networks"), "");
    ck_assert_str_eq(nets(c, "greylist", "allow_networks"), "");
    pc_conf_unref(c);
    c = load("mynetworks = { \"127.0.0.1/32\" }\ndkim { mynetworks = { \"192.0.2.0/24\" } }\n",
             &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    ck_assert_str_eq(nets(c, "relay", "mynetworks"), "127.0.0.1/32");
    ck_assert_str_eq(nets(c, "dkim", "mynetworks"), "192.0.2.0/24");
    ck_assert_str_eq(nets(c, "spf", "trusted_networks"), "127.0.0.1/32");
    ck_assert_str_eq(nets(c, "dnsbl", "allow_networks"), "127.0.0.1/32");
    ck_assert_str_eq(nets(c, "greylist", "allow_networks"), "127.0.0.1/32");
    pc_conf_unref(c);
    /* A bad network is an error at its line. */
    ck_assert_ptr_null(load("banner = \"x\"\nmynetworks = { \"10.0.0.0/33\" }\n", &err));
    ck_assert_msg(strstr(err.msg, ":2: mynetworks: bad network") != NULL, "%s", err.msg);
}
END_TEST

/* -t shows every error, one line each with its own line number; bounds are keyed by section. */
START_TEST(several_errors)
{
    struct pc_err err;

    ck_assert_ptr_null(load("limits {\n max_recipients = 0\n max_errors = 0\n}\n"
                            "timeouts { data = soon }\nlog = \"nowhere\"\n",
                            &err));
    ck_assert_msg(strstr(err.msg, ":2: limits.max_recipients = 0 is out of range") != NULL, "%s",
                  err.msg);
    ck_assert_msg(strstr(err.msg, ":3: limits.max_errors = 0") != NULL, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, ":5: data: bad duration") != NULL, "%s", err.msg);
    ck_assert_msg(strstr(err.msg, ":6: log must be") != NULL, "%s", err.msg);
    /* An error in a filter's section does not hide one in another's, nor a listener's. */
    ck_assert_ptr_null(load("dnsbl {\n threshold = 0\n}\nrelay { on_error = \"maybe\" }\n", &err));
    ck_assert_msg(strstr(err.msg, ":2: dnsbl.threshold = 0 is out of range") != NULL, "%s",
                  err.msg);
    ck_assert_msg(strstr(err.msg, ":4: on_error must be") != NULL, "%s", err.msg);
    /* Many at once: every one is there, the last too. */
    ck_assert_ptr_null(load("limits {\n max_recipients = 0\n max_command_length = 1\n"
                            " max_line_length = 1\n max_header_size = 1\n max_headers = 1\n"
                            " max_errors = 0\n max_connections = 0\n max_connections_per_ip = 0\n"
                            " spool_threshold = -1\n max_message_size = 1\n}\n",
                            &err));
    ck_assert_msg(strstr(err.msg, ":11: limits.max_message_size = 1 is out of range") != NULL, "%s",
                  err.msg);
}
END_TEST

START_TEST(auth_sections)
{
    struct pc_err err;
    char pw[300];
    /* A relative password_file is relative to the configuration's directory. */
    snprintf(pw, sizeof(pw), "%s/passwd", dir);
    FILE *f = fopen(pw, "w");
    ck_assert_ptr_nonnull(f);
    fputs("alice:{SHA512-CRYPT}$6$saltsaltsalt$0123456789abcdefghijABCDEFGHIJ\n", f);
    fclose(f);
    struct pc_conf *c = load("auth \"users\" {\n password_file = \"passwd\"\n}\n"
                             "auth \"dc\" {\n dovecot = \"unix:/run/dovecot/auth-client\"\n"
                             " timeout = 3s\n}\n",
                             &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    ck_assert_uint_eq(c->nauths, 2);
    const struct pc_auth_conf *a = pc_conf_auth(c, "users");
    ck_assert_ptr_nonnull(a);
    ck_assert_str_eq(a->password_file, pw);
    ck_assert_ptr_null(a->dovecot);
    ck_assert_uint_eq(a->timeout_ms, 10000);
    a = pc_conf_auth(c, "dc");
    ck_assert_str_eq(a->dovecot, "unix:/run/dovecot/auth-client");
    ck_assert_uint_eq(a->timeout_ms, 3000);
    ck_assert_ptr_null(pc_conf_auth(c, "nope"));
    pc_conf_unref(c);

    static const struct {
        const char *text, *says;
    } t[] = {
        {"auth \"a\" {\n timeout = 5s\n}\n", "set either password_file or dovecot"},
        {"auth \"a\" {\n password_file = \"passwd\"\n dovecot = \"unix:/x\"\n}\n", "set either"},
        {"auth \"a\" {\n dovecot = \"inet:localhost:12345\"\n}\n", "numeric address"},
        {"auth \"a\" {\n dovecot = \"unix:/x\"\n timeout = 500ms\n}\n", "[1s, 5m]"},
        {"auth \"a\" {\n password_file = \"missing\"\n}\n", "No such file"},
        {"auth \"a\" {\n password_file = \"portcullis.conf\"\n}\n", "expected user:hash"},
        {"auth \"a\" { dovecot = \"unix:/x\" }\nauth \"a\" { dovecot = \"unix:/y\" }\n", "a"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        c = load(t[i].text, &err);
        if (c)
            pc_conf_unref(c);
        ck_assert_msg(c == NULL, "%zu accepted: %s", i, t[i].text);
        size_t pl = strlen(path);
        ck_assert_msg(strncmp(err.msg, path, pl) == 0 && err.msg[pl] == ':' &&
                          strtol(err.msg + pl + 1, NULL, 10) > 0,
                      "%zu: no file:line: %s", i, err.msg);
        ck_assert_msg(strstr(err.msg, t[i].says) != NULL, "%zu: %s", i, err.msg);
    }
    unlink(pw);
}
END_TEST

/* Every filter's options are rows: in its own section, integers bounded with the default
 * inside the bounds, each with a doc line. */
START_TEST(filter_rows)
{
    for (size_t i = 0; pc_filter_registry[i]; i++) {
        const struct pc_filter_ops *ops = pc_filter_registry[i];
        size_t len = strlen(ops->name);
        for (const struct pc_param_row *p = ops->params; p && p->name; p++) {
            ck_assert_msg(strncmp(p->section, ops->name, len) == 0 &&
                              (p->section[len] == 0 || p->section[len] == '.'),
                          "%s: row %s.%s", ops->name, p->section, p->name);
            ck_assert_msg(p->doc && *p->doc, "%s.%s has no doc", p->section, p->name);
            if (p->type != PT_INT)
                continue;
            long d = strtol(p->def, NULL, 10);
            ck_assert_msg(p->min < p->max && d >= p->min && d <= p->max,
                          "%s.%s: default %ld outside [%ld, %ld]", p->section, p->name, d, p->min,
                          p->max);
        }
    }
}
END_TEST

/* configure_with - configure a filter alone from "name = v"; true if it accepted */
static bool configure_with(const struct pc_filter_ops *ops, const char *name, long v)
{
    char text[128];
    void *conf = NULL;
    struct pc_err err = {{0}};
    cfg_t *cfg = pc_conf_filter_cfg(ops);

    snprintf(text, sizeof(text), "%s = %ld\n", name, v);
    ck_assert_int_eq(cfg_parse_buf(cfg, text), CFG_SUCCESS);
    bool ok = ops->configure(cfg, &conf, &err) == 0;
    if (conf && ops->destroy)
        ops->destroy(conf);
    cfg_free(cfg);
    return ok;
}

/* A filter configured without the loader (tests, fuzz targets) still guards the values its
 * arrays depend on; those guards and the rows' bounds must say the same. */
START_TEST(filter_bounds_agree)
{
    for (size_t i = 0; pc_filter_registry[i]; i++) {
        const struct pc_filter_ops *ops = pc_filter_registry[i];
        for (const struct pc_param_row *p = ops->params; p && p->name; p++) {
            if (p->type != PT_INT || strcmp(p->section, ops->name) != 0)
                continue;
            ck_assert_msg(configure_with(ops, p->name, p->min), "%s.%s = %ld refused", ops->name,
                          p->name, p->min);
            ck_assert_msg(configure_with(ops, p->name, p->max), "%s.%s = %ld refused", ops->name,
                          p->name, p->max);
            ck_assert_msg(!configure_with(ops, p->name, p->min - 1), "%s.%s = %ld accepted",
                          ops->name, p->name, p->min - 1);
            ck_assert_msg(!configure_with(ops, p->name, p->max + 1), "%s.%s = %ld accepted",
                          ops->name, p->name, p->max + 1);
        }
    }
}
END_TEST

/* A load that fails after the file was read must not leave the loader pointing into the
 * generation it freed: a later relative name still resolves against that file's directory. */
START_TEST(failed_load_keeps_path)
{
    char dir[] = "/tmp/pc-conf-path-XXXXXX", path[256], buf[512];
    struct pc_err err;

    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/bad.conf", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "backend \"b\" {\n identity = \"none\"\n}\n"); /* no address: fails late */
    fclose(f);
    ck_assert_ptr_null(pc_conf_load(path, &err));
    const char *got = pc_conf_path(NULL, "rules/x.rules", buf, sizeof(buf));
    ck_assert_ptr_nonnull(got);
    char want[300];
    snprintf(want, sizeof(want), "%s/rules/x.rules", dir);
    ck_assert_str_eq(got, want);
    unlink(path);
    rmdir(dir);
}
END_TEST

START_TEST(missing_file)
{
    struct pc_err err;

    memset(&err, 0, sizeof(err));
    ck_assert_ptr_null(pc_conf_load("/nonexistent/portcullis.conf", &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/portcullis.conf"));
}
END_TEST

/* main - run the suite in a private directory */
int main(void)
{
    if (mkdtemp(dir) == NULL)
        return EXIT_FAILURE;
    snprintf(path, sizeof(path), "%s/portcullis.conf", dir);
    pc_log_init("test_conf", PC_LOG_STDERR, 0);
    Suite *s = suite_create("conf");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, defaults);
    tcase_add_test(tc, full);
    tcase_add_test(tc, errors);
    tcase_add_test(tc, missing_file);
    tcase_add_test(tc, trust);
    tcase_add_test(tc, several_errors);
    tcase_add_test(tc, auth_sections);
    tcase_add_test(tc, filter_rows);
    tcase_add_test(tc, filter_bounds_agree);
    tcase_add_test(tc, failed_load_keeps_path);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    unlink(path);
    rmdir(dir);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
