/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_relay 1 - the relay filter through the chain runner
 * DESCRIPTION
 *	Each row is one RCPT from one client (IPv4, IPv6 or IPv4-mapped, with
 *	or without a trusted listener or an authenticated user) under one of
 *	three configurations: mynetworks plus domains and ".subdomains", an
 *	empty domain list (nothing local but postmaster), and routing allowed
 *	from untrusted clients. The row says whether the recipient is
 *	accepted and, when refused, which reason the 554 5.7.1 gives.
 * SEE ALSO
 *	RFC 5321 sections 3.6.1 and 7.1
 */
#include <arpa/inet.h>
#include <check.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/filter.h"
#include "core/session.h"
#include "gateway/conf.h"
#include "gateway/smtp_proto.h"
#include "lib/log.h"
#include "lib/pool.h"
#include "core/chain.h"

static struct event_base *base;
static struct pc_services svc;

/* stage_done - never called: the relay filter answers at once */
static void stage_done(struct pc_session *s, enum pc_stage st, struct pc_verdict *v)
{
    (void)s, (void)st, (void)v;
    ck_abort_msg("relay went pending");
}

static const struct pc_door door = {"test", stage_done};

static const char *const configs[] = {
    /* 0: the usual */
    "listener \"in\" { address = \"127.0.0.1:1\" }\n"
    "relay { mynetworks = { \"192.0.2.0/24\", \"2001:db8::/32\", \"[::1]/128\" }\n"
    "        domains = { \"example.com\", \".sub.example.net\", \"b\xc3\xbc\x63her.example\" } }\n",
    /* 1: no local domains, and the default mynetworks (loopback) */
    "listener \"in\" { address = \"127.0.0.1:1\" }\n",
    /* 2: routing tolerated from anyone */
    "listener \"in\" { address = \"127.0.0.1:1\" }\n"
    "relay { mynetworks = { } domains = { \"example.com\" } allow_untrusted_routing = true }\n",
};

/* load - one configuration from text */
static struct pc_conf *load(const char *text)
{
    char path[] = "/tmp/pc-test-relay-XXXXXX";
    int fd = mkstemp(path);
    struct pc_err err;

    memset(&err, 0, sizeof(err));
    ck_assert(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    struct pc_conf *c = pc_conf_load(path, &err);
    unlink(path);
    ck_assert_msg(c != NULL, "%s", err.msg);
    return c;
}

enum who { UNTRUSTED, TRUSTED_LISTENER, AUTHENTICATED };

START_TEST(relay_table)
{
    static const struct {
        int cfg;
        const char *client, *rcpt;
        enum who who;
        const char *refusal; /* NULL: accepted; else a part of the reply text */
    } t[] = {
        /* mynetworks may send anywhere, in every address form. */
        {0, "192.0.2.9", "TO:<u@anywhere.example>", UNTRUSTED, NULL},
        {0, "::ffff:192.0.2.9", "TO:<u@anywhere.example>", UNTRUSTED, NULL},
        {0, "2001:db8::25", "TO:<u@anywhere.example>", UNTRUSTED, NULL},
        {0, "::1", "TO:<u@anywhere.example>", UNTRUSTED, NULL},
        {0, "192.0.3.1", "TO:<u@anywhere.example>", UNTRUSTED, "Relay access denied"},
        {0, "2001:db9::1", "TO:<u@anywhere.example>", UNTRUSTED, "Relay access denied"},
        {0, "127.0.0.1", "TO:<u@anywhere.example>", UNTRUSTED, "Relay access denied"},
        /* A trusted listener or an authenticated client may too. */
        {0, "198.51.100.1", "TO:<u@anywhere.example>", TRUSTED_LISTENER, NULL},
        {0, "198.51.100.1", "TO:<u@anywhere.example>", AUTHENTICATED, NULL},
        /* Others only to our domains. */
        {0, "198.51.100.1", "TO:<u@example.com>", UNTRUSTED, NULL},
        {0, "198.51.100.1", "TO:<u@Example.COM>", UNTRUSTED, NULL},
        {0, "198.51.100.1", "TO:<u@example.com.>", UNTRUSTED, NULL},
        {0, "198.51.100.1", "TO:<u@mail.example.com>", UNTRUSTED, "Relay access denied"},
        {0, "198.51.100.1", "TO:<u@xexample.com>", UNTRUSTED, "Relay access denied"},
        {0, "198.51.100.1", "TO:<u@example.com.evil.example>", UNTRUSTED, "Relay access denied"},
        {0, "198.51.100.1", "TO:<u@a.sub.example.net>", UNTRUSTED, NULL},
        {0, "198.51.100.1", "TO:<u@x.y.SUB.example.net>", UNTRUSTED, NULL},
        {0, "198.51.100.1", "TO:<u@sub.example.net>", UNTRUSTED, "Relay access denied"},
        {0, "198.51.100.1", "TO:<u@evilsub.example.net>", UNTRUSTED, "Relay access denied"},
        {0, "198.51.100.1", "TO:<u@b\xc3\xbc\x63her.example>", UNTRUSTED, NULL},
        {0, "198.51.100.1", "TO:<Postmaster>", UNTRUSTED, NULL},
        {0, "198.51.100.1", "TO:<postmaster@elsewhere.example>", UNTRUSTED, "Relay access denied"},
        /* Address literals are never ours. */
        {0, "198.51.100.1", "TO:<u@[192.0.2.1]>", UNTRUSTED, "Relay access denied"},
        {0, "198.51.100.1", "TO:<u@[IPv6:2001:db8::1]>", UNTRUSTED, "Relay access denied"},
        {0, "192.0.2.1", "TO:<u@[198.51.100.7]>", UNTRUSTED, NULL},
        /* Sender-specified routing from untrusted clients, even to our domain. */
        {0, "198.51.100.1", "TO:<u%other.example@example.com>", UNTRUSTED, "routing"},
        {0, "198.51.100.1", "TO:<other.example!u@example.com>", UNTRUSTED, "routing"},
        {0, "198.51.100.1", "TO:<\"u@other.example\"@example.com>", UNTRUSTED, "routing"},
        {0, "198.51.100.1", "TO:<\"u%other\"@example.com>", UNTRUSTED, "routing"},
        {0, "198.51.100.1", "TO:<@example.com:u@example.com>", UNTRUSTED, "routing"},
        {0, "198.51.100.1", "TO:<@a.example,@b.example:u@example.com>", UNTRUSTED, "routing"},
        /* ... but from trusted ones it is theirs to use. */
        {0, "192.0.2.1", "TO:<u%other.example@example.com>", UNTRUSTED, NULL},
        {0, "198.51.100.1", "TO:<other!u@example.com>", TRUSTED_LISTENER, NULL},
        {0, "198.51.100.1", "TO:<@example.com:u@example.com>", AUTHENTICATED, NULL},
        /* No domains configured: an outsider reaches only postmaster. */
        {1, "198.51.100.1", "TO:<u@example.com>", UNTRUSTED, "Relay access denied"},
        {1, "198.51.100.1", "TO:<postmaster>", UNTRUSTED, NULL},
        {1, "127.0.0.1", "TO:<u@example.com>", UNTRUSTED, NULL},
        {1, "::1", "TO:<u@example.com>", UNTRUSTED, NULL},
        /* Routing allowed: still only to our domains. */
        {2, "198.51.100.1", "TO:<u%other.example@example.com>", UNTRUSTED, NULL},
        {2, "198.51.100.1", "TO:<u%other.example@other.example>", UNTRUSTED, "Relay access denied"},
        {2, "198.51.100.1", "TO:<@x.example:u@example.com>", UNTRUSTED, NULL},
        {2, "127.0.0.1", "TO:<u@other.example>", UNTRUSTED, "Relay access denied"},
    };
    struct pc_conf *conf[3];

    for (int i = 0; i < 3; i++)
        conf[i] = load(configs[i]);
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pc_conf *c = conf[t[i].cfg];
        struct sockaddr_storage ss;
        socklen_t sl;
        memset(&ss, 0, sizeof(ss));
        if (strchr(t[i].client, ':')) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
            s6->sin6_family = AF_INET6;
            ck_assert(inet_pton(AF_INET6, t[i].client, &s6->sin6_addr) == 1);
            sl = sizeof(*s6);
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
            s4->sin_family = AF_INET;
            ck_assert(inet_pton(AF_INET, t[i].client, &s4->sin_addr) == 1);
            sl = sizeof(*s4);
        }
        struct pc_session *s =
            pc_session_new(&svc, &c->core, "in", &c->listeners[0].chain, &door, NULL);
        pc_session_set_client(s, (struct sockaddr *)&ss, sl);
        s->trusted = t[i].who == TRUSTED_LISTENER;
        if (t[i].who == AUTHENTICATED)
            s->auth_user = "alice";
        ck_assert_int_eq(pc_chain_attach(s), 0);
        struct pc_txn *txn = pc_txn_new(s);
        struct pc_path_args pa;
        const char *enh;
        ck_assert_msg(
            pc_path_args_parse(t[i].rcpt, strlen(t[i].rcpt), "TO:", txn->pool, &pa, &enh) == NULL,
            "%zu: %s", i, t[i].rcpt);
        txn->cur_rcpt = pc_txn_add_rcpt(txn, &pa.mb, "");
        struct pc_verdict v;
        pc_verdict_clear(&v);
        enum pc_action a = pc_chain_run(s, PC_STAGE_RCPT, &v);
        if (t[i].refusal == NULL) {
            ck_assert_msg(a == PC_CONTINUE, "%zu %s %s: %s %s", i, t[i].client, t[i].rcpt,
                          pc_action_name(a), v.text);
            ck_assert(txn->cur_rcpt->flags & PC_RCPT_RELAY_OK);
        } else {
            ck_assert_msg(a == PC_REJECT, "%zu %s %s: %s", i, t[i].client, t[i].rcpt,
                          pc_action_name(a));
            ck_assert_int_eq(v.code, 554);
            ck_assert(v.enh.cls == 5 && v.enh.subject == 7 && v.enh.detail == 1);
            ck_assert_msg(strstr(v.text, t[i].refusal) != NULL, "%zu: %s", i, v.text);
            ck_assert_str_eq(v.filter, "relay");
            ck_assert(!(txn->cur_rcpt->flags & PC_RCPT_RELAY_OK));
        }
        pc_session_free(s);
    }
    for (int i = 0; i < 3; i++)
        pc_conf_unref(conf[i]);
}
END_TEST

START_TEST(relay_config_errors)
{
    static const char *bad[] = {
        "relay {\n mynetworks = { \"192.0.2.0/33\" }\n}\n",
        "relay {\n domains = { \"bad..example\" }\n}\n",
        "relay {\n domains = { \"..example\" }\n}\n",
        "relay {\n domains = { \"-x.example\" }\n}\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char path[] = "/tmp/pc-test-relay-XXXXXX";
        int fd = mkstemp(path);
        struct pc_err err;
        memset(&err, 0, sizeof(err));
        ck_assert(write(fd, bad[i], strlen(bad[i])) == (ssize_t)strlen(bad[i]));
        close(fd);
        struct pc_conf *c = pc_conf_load(path, &err);
        unlink(path);
        if (c)
            pc_conf_unref(c);
        ck_assert_msg(c == NULL, "accepted %s", bad[i]);
        ck_assert_msg(strstr(err.msg, "relay") != NULL && strstr(err.msg, path) == err.msg, "%s",
                      err.msg);
    }
}
END_TEST

/* main - run the suite */
int main(void)
{
    base = event_base_new();
    svc.base = base;
    svc.hostname = "test.example";
    pc_log_init("test_relay", PC_LOG_STDERR, 0);
    pc_log_set_verbose(-1);
    Suite *s = suite_create("relay");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, relay_table);
    tcase_add_test(tc, relay_config_errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    event_base_free(base);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
