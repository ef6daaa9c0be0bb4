/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_greylist 1 - the greylisting rule, the in-process store, the filter
 * DESCRIPTION
 *	The rule and the bounded in-process store run on a fake clock: first
 *	attempt deferred with the delay, an early retry deferred with the
 *	time left (the first-seen time does not move), a retry inside the
 *	window promoted, lifetime extended at each pass and forgotten after
 *	it, a window missed starts afresh; a full store forgets pending
 *	records before allowed ones. The filter runs through the chain runner
 *	from a configuration: 451 4.7.1 with the seconds to wait, facts,
 *	exemptions (trusted listener, AUTH, the relay filter's mynetworks,
 *	allow lists) and configuration errors with file:line. The Redis store
 *	and two gateways sharing it are in tests/e2e/test_greylist.py.
 * SEE ALSO
 *	RFC 6647
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
#include "core/chain.h"
#include "policy/greylist.h"

static uint64_t fake_now;
static struct event_base *base;
static struct pc_services svc;

/* fake_clock - the store's clock in tests */
static uint64_t fake_clock(void)
{
    return fake_now;
}

static const struct pc_gl_params P = {300000, 3600000, 35 * 86400000ULL};

START_TEST(rule_steps)
{
    struct pc_gl_rec r = {0};
    uint64_t retry, t0 = 1000000;

    ck_assert_int_eq(pc_gl_step(&r, t0, &P, &retry), PC_GL_DEFERRED);
    ck_assert_uint_eq(retry, 300000);
    /* Early retries wait for what is left; the first-seen time stays. */
    ck_assert_int_eq(pc_gl_step(&r, t0 + 100000, &P, &retry), PC_GL_DEFERRED);
    ck_assert_uint_eq(retry, 200000);
    ck_assert_int_eq(pc_gl_step(&r, t0 + 299999, &P, &retry), PC_GL_DEFERRED);
    ck_assert_uint_eq(retry, 1);
    ck_assert_int_eq(pc_gl_step(&r, t0 + 300000, &P, &retry), PC_GL_PROMOTED);
    ck_assert_uint_eq(retry, 0);
    ck_assert_int_eq(pc_gl_step(&r, t0 + 400000, &P, &retry), PC_GL_ALLOWED);
    /* Each pass extends the lifetime. */
    uint64_t last = t0 + 400000 + 30 * 86400000ULL;
    ck_assert_int_eq(pc_gl_step(&r, last, &P, &retry), PC_GL_ALLOWED);
    ck_assert_int_eq(pc_gl_step(&r, last + P.lifetime_ms - 1, &P, &retry), PC_GL_ALLOWED);
    /* Unused for a whole lifetime: forgotten, greylisted again. */
    uint64_t gone = last + P.lifetime_ms - 1 + P.lifetime_ms;
    ck_assert_int_eq(pc_gl_step(&r, gone, &P, &retry), PC_GL_DEFERRED);
    ck_assert_uint_eq(retry, 300000);
    /* A retry after the window starts afresh. */
    ck_assert_int_eq(pc_gl_step(&r, gone + P.window_ms, &P, &retry), PC_GL_DEFERRED);
    ck_assert_uint_eq(retry, 300000);
    ck_assert_int_eq(pc_gl_step(&r, gone + P.window_ms + 300000, &P, &retry), PC_GL_PROMOTED);
}
END_TEST

START_TEST(memory_store)
{
    struct pc_gl_mem *m = pc_gl_mem_new(1000, fake_clock);
    uint64_t retry;

    fake_now = 5000000;
    ck_assert_int_eq(pc_gl_mem_check(m, "k1", &P, &retry), PC_GL_DEFERRED);
    ck_assert_int_eq(pc_gl_mem_check(m, "k2", &P, &retry), PC_GL_DEFERRED);
    fake_now += 60000;
    ck_assert_int_eq(pc_gl_mem_check(m, "k1", &P, &retry), PC_GL_DEFERRED);
    ck_assert_uint_eq(retry, 240000);
    fake_now += 240000;
    ck_assert_int_eq(pc_gl_mem_check(m, "k1", &P, &retry), PC_GL_PROMOTED);
    ck_assert_int_eq(pc_gl_mem_check(m, "k1", &P, &retry), PC_GL_ALLOWED);
    ck_assert_uint_eq(pc_gl_mem_entries(m), 2);
    /* k2 missed its window: it is forgotten when seen again, and starts afresh. */
    fake_now += P.window_ms;
    ck_assert_int_eq(pc_gl_mem_check(m, "k2", &P, &retry), PC_GL_DEFERRED);
    ck_assert_uint_eq(retry, 300000);
    ck_assert_int_eq(pc_gl_mem_check(m, "k1", &P, &retry), PC_GL_ALLOWED);
    ck_assert_uint_eq(pc_gl_mem_entries(m), 2);
    pc_gl_mem_free(m);
}
END_TEST

START_TEST(memory_bounded)
{
    struct pc_gl_mem *m = pc_gl_mem_new(100, fake_clock);
    uint64_t retry;
    char key[32];

    fake_now = 1000000;
    /* Ten known good keys. */
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "good%d", i);
        pc_gl_mem_check(m, key, &P, &retry);
    }
    fake_now += P.delay_ms;
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "good%d", i);
        ck_assert_int_eq(pc_gl_mem_check(m, key, &P, &retry), PC_GL_PROMOTED);
    }
    /* A flood of new triplets fills the store and keeps within its bound... */
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "flood%d", i);
        ck_assert_int_eq(pc_gl_mem_check(m, key, &P, &retry), PC_GL_DEFERRED);
        ck_assert_uint_le(pc_gl_mem_entries(m), 100);
    }
    ck_assert_uint_eq(pc_gl_mem_entries(m), 100);
    ck_assert_uint_eq(pc_gl_mem_evictions(m), 5000 - 90);
    /* ...forgetting the oldest pending ones, never the known good keys. */
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "good%d", i);
        ck_assert_int_eq(pc_gl_mem_check(m, key, &P, &retry), PC_GL_ALLOWED);
    }
    fake_now += P.delay_ms;
    ck_assert_int_eq(pc_gl_mem_check(m, "flood4999", &P, &retry), PC_GL_PROMOTED);
    ck_assert_int_eq(pc_gl_mem_check(m, "flood0", &P, &retry), PC_GL_DEFERRED);
    /* With only allowed keys left, the least recently used allowed one goes. */
    struct pc_gl_mem *a = pc_gl_mem_new(100, fake_clock);
    for (int i = 0; i < 101; i++) {
        snprintf(key, sizeof(key), "a%d", i);
        pc_gl_mem_check(a, key, &P, &retry);
        fake_now += P.delay_ms;
        ck_assert_int_eq(pc_gl_mem_check(a, key, &P, &retry), PC_GL_PROMOTED);
    }
    ck_assert_uint_eq(pc_gl_mem_entries(a), 100);
    ck_assert_int_eq(pc_gl_mem_check(a, "a100", &P, &retry), PC_GL_ALLOWED);
    ck_assert_int_eq(pc_gl_mem_check(a, "a0", &P, &retry), PC_GL_DEFERRED);
    pc_gl_mem_free(a);
    pc_gl_mem_free(m);
}
END_TEST

/* stage_done - never called: the in-process store answers at once */
static void stage_done(struct pc_session *s, enum pc_stage st, struct pc_verdict *v)
{
    (void)s, (void)st, (void)v;
    ck_abort_msg("greylist went pending");
}

static const struct pc_door door = {"test", stage_done};

/* load - one configuration from text */
static struct pc_conf *load(const char *text, struct pc_err *err)
{
    char path[] = "/tmp/pc-test-greylist-XXXXXX";
    int fd = mkstemp(path);

    memset(err, 0, sizeof(*err));
    ck_assert(fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    struct pc_conf *c = pc_conf_load(path, err);
    unlink(path);
    return c;
}

enum who { PLAIN, TRUSTED_LISTENER, AUTHENTICATED };

/* rcpt - one RCPT from client with sender; returns the action, v filled, *fact the fact */
static enum pc_action rcpt(struct pc_conf *c, const char *client, enum who who, const char *from,
                           const char *to, struct pc_verdict *v, char *fact, size_t factsize)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    struct pc_path_args pa;
    const char *enh;

    memset(&ss, 0, sizeof(ss));
    if (strchr(client, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        ck_assert(inet_pton(AF_INET6, client, &s6->sin6_addr) == 1);
        sl = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        ck_assert(inet_pton(AF_INET, client, &s4->sin_addr) == 1);
        sl = sizeof(*s4);
    }
    struct pc_session *s =
        pc_session_new(&svc, &c->core, "in", &c->listeners[0].chain, &door, NULL);
    pc_session_set_client(s, (struct sockaddr *)&ss, sl);
    s->trusted = who == TRUSTED_LISTENER;
    if (who == AUTHENTICATED)
        s->auth_user = "alice";
    ck_assert_int_eq(pc_chain_attach(s), 0);
    struct pc_txn *txn = pc_txn_new(s);
    ck_assert(pc_path_args_parse(from, strlen(from), "FROM:", txn->pool, &pa, &enh) == NULL);
    txn->from = pa.mb;
    ck_assert(pc_path_args_parse(to, strlen(to), "TO:", txn->pool, &pa, &enh) == NULL);
    txn->cur_rcpt = pc_txn_add_rcpt(txn, &pa.mb, "");
    pc_verdict_clear(v);
    enum pc_action a = pc_chain_run(s, PC_STAGE_RCPT, v);
    const char *f = pc_fact_get(s, "greylist");
    snprintf(fact, factsize, "%s", f ? f : "(none)");
    pc_session_free(s);
    return a;
}

static const char conf_text[] =
    "listener \"in\" { address = \"127.0.0.1:1\" filters = { \"relay\", \"greylist\" } }\n"
    "relay { mynetworks = { \"192.0.2.0/24\" } domains = { \"example.com\", \"ok.example\" } }\n"
    "greylist { delay = \"1s\" retry_window = \"1m\" allow_networks = { \"203.0.113.0/24\" }\n"
    "  allow_sender_domains = { \"friend.example\" } allow_rcpt_domains = { \"ok.example\" } }\n";

START_TEST(filter_through_chain)
{
    struct pc_err err;
    struct pc_conf *c = load(conf_text, &err);
    struct pc_verdict v;
    char fact[64];

    ck_assert_msg(c != NULL, "%s", err.msg);
    /* First attempt: 451 4.7.1 with the wait. */
    ck_assert_int_eq(rcpt(c, "198.51.100.7", PLAIN, "FROM:<a@sender.example>", "TO:<u@example.com>",
                          &v, fact, sizeof(fact)),
                     PC_TEMPFAIL);
    ck_assert_int_eq(v.code, 451);
    ck_assert(v.enh.cls == 4 && v.enh.subject == 7 && v.enh.detail == 1);
    ck_assert_msg(strstr(v.text, "Greylisted, try again in 1 seconds") != NULL, "%s", v.text);
    ck_assert_str_eq(v.filter, "greylist");
    ck_assert_str_eq(fact, "deferred");
    /* Same /24, sender and recipient in other letter case: the same triplet, still early. */
    ck_assert_int_eq(rcpt(c, "198.51.100.200", PLAIN, "FROM:<A@Sender.Example>",
                          "TO:<U@example.com>", &v, fact, sizeof(fact)),
                     PC_TEMPFAIL);
    /* Another recipient, sender or network is another triplet. */
    ck_assert_int_eq(rcpt(c, "198.51.101.7", PLAIN, "FROM:<a@sender.example>", "TO:<u@example.com>",
                          &v, fact, sizeof(fact)),
                     PC_TEMPFAIL);
    usleep(1100000);
    ck_assert_int_eq(rcpt(c, "198.51.100.9", PLAIN, "FROM:<a@sender.example>", "TO:<u@example.com>",
                          &v, fact, sizeof(fact)),
                     PC_CONTINUE);
    ck_assert_str_eq(fact, "allowed");
    ck_assert_int_eq(rcpt(c, "198.51.100.7", PLAIN, "FROM:<a@sender.example>", "TO:<u@example.com>",
                          &v, fact, sizeof(fact)),
                     PC_CONTINUE);
    ck_assert_int_eq(rcpt(c, "198.51.100.7", PLAIN, "FROM:<a@sender.example>", "TO:<v@example.com>",
                          &v, fact, sizeof(fact)),
                     PC_TEMPFAIL);
    /* IPv6: the /64 is the client network. */
    ck_assert_int_eq(
        rcpt(c, "2001:db8:1:2::7", PLAIN, "FROM:<>", "TO:<u@example.com>", &v, fact, sizeof(fact)),
        PC_TEMPFAIL);
    usleep(1100000);
    ck_assert_int_eq(rcpt(c, "2001:db8:1:2:ffff::1", PLAIN, "FROM:<>", "TO:<u@example.com>", &v,
                          fact, sizeof(fact)),
                     PC_CONTINUE);
    /* Exempt: never deferred, fact "pass". */
    static const struct {
        const char *client;
        enum who who;
        const char *from, *to;
    } ex[] = {
        {"198.51.100.50", TRUSTED_LISTENER, "FROM:<x@a.example>", "TO:<x1@example.com>"},
        {"198.51.100.50", AUTHENTICATED, "FROM:<x@a.example>", "TO:<x2@example.com>"},
        {"192.0.2.5", PLAIN, "FROM:<x@a.example>", "TO:<x3@example.com>"}, /* relay mynetworks */
        {"203.0.113.9", PLAIN, "FROM:<x@a.example>", "TO:<x4@example.com>"},
        {"198.51.100.50", PLAIN, "FROM:<x@friend.example>", "TO:<x5@example.com>"},
        {"198.51.100.50", PLAIN, "FROM:<x@mx.Friend.Example>", "TO:<x6@example.com>"},
        {"198.51.100.50", PLAIN, "FROM:<x@a.example>", "TO:<x7@ok.example>"},
    };
    for (size_t i = 0; i < sizeof(ex) / sizeof(ex[0]); i++) {
        ck_assert_msg(rcpt(c, ex[i].client, ex[i].who, ex[i].from, ex[i].to, &v, fact,
                           sizeof(fact)) == PC_CONTINUE,
                      "%zu: %s", i, v.text);
        ck_assert_msg(strcmp(fact, "pass") == 0, "%zu: %s", i, fact);
    }
    /* Not exempt: a look-alike domain. */
    ck_assert_int_eq(rcpt(c, "198.51.100.50", PLAIN, "FROM:<x@notfriend.example>",
                          "TO:<x8@example.com>", &v, fact, sizeof(fact)),
                     PC_TEMPFAIL);
    pc_conf_unref(c);
}
END_TEST

START_TEST(config_errors)
{
    static const struct {
        const char *text, *want;
    } t[] = {
        {"delay = \"0s\"", "delay must be a duration"},
        {"delay = \"2d\"", "delay must be a duration"},
        {"retry_window = \"10s\"", "retry_window must be a duration"},
        {"retry_window = \"31d\"", "retry_window must be a duration"},
        {"delay = \"1h\" retry_window = \"30m\"", "retry_window must be longer than delay"},
        {"lifetime = \"400d\"", "lifetime must be a duration"},
        {"key = { \"colour\" }", "unknown key field \"colour\""},
        {"key = { }", "key needs 1 to 8 fields"},
        {"on_error = \"reject\"", "never a reason for a 5xx"},
        {"store = \"http://127.0.0.1\"", "bad store"},
        {"store_timeout = \"30s\"", "shorter than timeout"},
        {"prefix = \"a b\"", "prefix: at most 64"},
        {"ipv6_prefix = 129", "greylist.ipv6_prefix = 129 is out of range [16, 128]"},
        {"max_entries = 10", "greylist.max_entries = 10 is out of range"},
        {"allow_networks = { \"10.0.0.0/33\" }", "bad network"},
        {"allow_sender_domains = { \"bad..example\" }", "bad domain"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char text[512];
        struct pc_err err;
        snprintf(text, sizeof(text), "greylist {\n%s\n}\n", t[i].text);
        struct pc_conf *c = load(text, &err);
        if (c)
            pc_conf_unref(c);
        ck_assert_msg(c == NULL, "accepted: %s", t[i].text);
        ck_assert_msg(strstr(err.msg, t[i].want) != NULL, "%s: got \"%s\"", t[i].text, err.msg);
        ck_assert_msg(strstr(err.msg, ":2:") != NULL || strstr(err.msg, ":3:") != NULL,
                      "no file:line in %s", err.msg);
    }
    struct pc_err err;
    struct pc_conf *c =
        load("greylist {\n store = \"redis://127.0.0.1:6379/0\" on_error = \"accept\"\n"
             " key = { \"client_ip\", \"helo\", \"sender_domain\", \"rcpt_domain\" }\n}\n",
             &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    pc_conf_unref(c);
}
END_TEST

/* main - run the suite */
int main(void)
{
    base = event_base_new();
    svc.base = base;
    svc.hostname = "test.example";
    pc_log_init("test_greylist", PC_LOG_STDERR, 0);
    pc_log_set_verbose(-1);
    Suite *s = suite_create("greylist");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, rule_steps);
    tcase_add_test(tc, memory_store);
    tcase_add_test(tc, memory_bounded);
    tcase_add_test(tc, filter_through_chain);
    tcase_add_test(tc, config_errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    event_base_free(base);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
