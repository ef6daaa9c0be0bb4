/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_ratelimit - GCRA arithmetic, rate parsing, keys, the in-process store
 * DESCRIPTION
 *	Pure unit tests with a fake clock; the Redis store and the filter are
 *	exercised against a real redis-server in test_rl_redis.c.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/filter.h"
#include "core/session.h"
#include "gateway/conf.h"
#include "policy/ratelimit.h"
#include "policy/rl_store.h"

static double fake_now;

/* fake_clock - the store's clock in tests */
static double fake_clock(void)
{
    return fake_now;
}

START_TEST(rate_parse)
{
    static const struct {
        const char *in;
        bool ok;
        double count;
        unsigned long long ms;
    } t[] = {
        {"100/1h", true, 100, 3600000},
        {"5/1m", true, 5, 60000},
        {"5/m", true, 5, 60000},
        {"10/30s", true, 10, 30000},
        {"1/1d", true, 1, 86400000},
        {"10M/1d", true, 10.0 * 1048576, 86400000},
        {"2K/1s", true, 2048, 1000},
        {" 7 / 2h", true, 7, 7200000},
        {"0/1h", false, 0, 0},
        {"5", false, 0, 0},
        {"5/", false, 0, 0},
        {"/1h", false, 0, 0},
        {"5/1x", false, 0, 0},
        {"5/500ms", false, 0, 0},
        {"5/31d", false, 0, 0},
        {"-5/1h", false, 0, 0},
        {"5T/1h", false, 0, 0},
        {"abc", false, 0, 0},
        {"9999999999999/1h", false, 0, 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pc_rl_rate r = {0};
        bool ok = pc_rl_rate_parse(t[i].in, &r);
        ck_assert_msg(ok == t[i].ok, "%s", t[i].in);
        if (ok) {
            ck_assert_msg(r.count == t[i].count, "%s count %g", t[i].in, r.count);
            ck_assert_msg(r.period_ms == t[i].ms, "%s period", t[i].in);
        }
    }
}
END_TEST

START_TEST(gcra_basic)
{
    /* 5 per minute, burst 5: five at once, the sixth waits 12 s. */
    double T = 60e6 / 5, tat = 0, now = 1e15;
    struct pc_rl_answer a;

    for (int i = 0; i < 5; i++) {
        pc_rl_gcra(now, &tat, T, 5, 1, &a);
        ck_assert_msg(a.allowed, "request %d", i);
        ck_assert_int_eq((int)a.remaining, 4 - i);
    }
    double before = tat;
    pc_rl_gcra(now, &tat, T, 5, 1, &a);
    ck_assert(!a.allowed);
    ck_assert_uint_eq(a.retry_after_ms, 12000);
    ck_assert(tat == before); /* a refusal charges nothing */
    /* 11.999 s later still refused, 12 s later one passes, then refused again. */
    pc_rl_gcra(now + 11999000, &tat, T, 5, 1, &a);
    ck_assert(!a.allowed);
    ck_assert_uint_eq(a.retry_after_ms, 1);
    pc_rl_gcra(now + 12e6, &tat, T, 5, 1, &a);
    ck_assert(a.allowed);
    pc_rl_gcra(now + 12e6, &tat, T, 5, 1, &a);
    ck_assert(!a.allowed);
    /* After a long pause the bucket is full again, not more than full. */
    now += 3600e6;
    for (int i = 0; i < 5; i++) {
        pc_rl_gcra(now, &tat, T, 5, 1, &a);
        ck_assert(a.allowed);
    }
    pc_rl_gcra(now, &tat, T, 5, 1, &a);
    ck_assert(!a.allowed);
}
END_TEST

START_TEST(gcra_burst_cost)
{
    /* 100/1h with burst 20: 20 at once, then one every 36 s. */
    double T = 3600e6 / 100, tat = 0, now = 5e14;
    struct pc_rl_answer a;
    int n = 0;

    for (int i = 0; i < 50; i++) {
        pc_rl_gcra(now, &tat, T, 20, 1, &a);
        n += a.allowed;
    }
    ck_assert_int_eq(n, 20);
    ck_assert_uint_eq(a.retry_after_ms, 36000);
    /* Costs: 1000 bytes per second, burst 4000: a 3000-byte message, then 1000 more fit, not 1. */
    tat = 0;
    T = 1e6 / 1000;
    pc_rl_gcra(now, &tat, T, 4000, 3000, &a);
    ck_assert(a.allowed);
    ck_assert_int_eq((int)a.remaining, 1000);
    pc_rl_gcra(now, &tat, T, 4000, 1001, &a);
    ck_assert(!a.allowed);
    ck_assert_uint_eq(a.retry_after_ms, 1);
    pc_rl_gcra(now, &tat, T, 4000, 1000, &a);
    ck_assert(a.allowed);
    ck_assert_int_eq((int)a.remaining, 0);
}
END_TEST

START_TEST(keys)
{
    char k1[PC_RL_KEY_MAX], k2[PC_RL_KEY_MAX];
    const char *v1[] = {"ab", ""}, *v2[] = {"a", "b"}, *v3[] = {"192.0.2.1"};
    char huge[5000];

    pc_rl_key("pc:", "lim", v1, 2, k1);
    pc_rl_key("pc:", "lim", v2, 2, k2);
    ck_assert_str_ne(k1, k2); /* values are separated, not concatenated */
    ck_assert_uint_eq(strlen(k1), 3 + 64);
    ck_assert(strncmp(k1, "pc:", 3) == 0);
    ck_assert_uint_eq(strspn(k1 + 3, "0123456789abcdef"), 64);
    pc_rl_key("pc:", "lim", v3, 1, k1);
    pc_rl_key("pc:", "lim", v3, 1, k2);
    ck_assert_str_eq(k1, k2); /* deterministic: gateways agree */
    pc_rl_key("pc:", "other", v3, 1, k2);
    ck_assert_str_ne(k1, k2); /* limits never share a counter */
    /* A hostile value: huge, with CR LF, spaces and NUL-free binary. */
    memset(huge, 'x', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = 0;
    memcpy(huge, "a\r\nDEL *\r\n\x01\xff ", 13);
    const char *v4[] = {huge};
    pc_rl_key("pc:", "lim", v4, 1, k1);
    ck_assert_uint_eq(strlen(k1), 67);
    ck_assert_uint_eq(strspn(k1 + 3, "0123456789abcdef"), 64);
    /* SHA-256 of "n\0v\0": a known answer keeps Redis keys stable across versions. */
    const char *v5[] = {"v"};
    pc_rl_key("", "n", v5, 1, k1);
    ck_assert_str_eq(k1, "b4ba064d61c59b31b1c1b799481d118f457446138ff6e38fa395493e0aa6e589");
}
END_TEST

START_TEST(url_parse)
{
    static const struct {
        const char *in;
        bool ok;
        const char *host;
        int port, db;
        bool is_unix;
    } t[] = {
        {"redis://127.0.0.1:6379/0", true, "127.0.0.1", 6379, 0, false},
        {"redis://127.0.0.1:24001/3", true, "127.0.0.1", 24001, 3, false},
        {"redis://localhost", true, "localhost", 6379, 0, false},
        {"redis://[::1]:7000/2", true, "::1", 7000, 2, false},
        {"redis://127.0.0.1/5", true, "127.0.0.1", 6379, 5, false},
        {"unix:/run/redis.sock", true, "/run/redis.sock", 6379, 0, true},
        {"unix:/run/redis.sock?db=4", true, "/run/redis.sock", 6379, 4, true},
        {"unix:relative", false, NULL, 0, 0, false},
        {"redis://127.0.0.1:0/0", false, NULL, 0, 0, false},
        {"redis://127.0.0.1:99999", false, NULL, 0, 0, false},
        {"redis://127.0.0.1:6379/x", false, NULL, 0, 0, false},
        {"redis://:6379", false, NULL, 0, 0, false},
        {"http://127.0.0.1", false, NULL, 0, 0, false},
        {"redis://127.0.0.1:6379/0 junk", false, NULL, 0, 0, false},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char host[256];
        int port, db;
        bool u;
        bool ok = pc_rl_redis_url_parse(t[i].in, host, sizeof(host), &port, &db, &u);
        ck_assert_msg(ok == t[i].ok, "%s", t[i].in);
        if (!ok)
            continue;
        ck_assert_str_eq(host, t[i].host);
        ck_assert_int_eq(db, t[i].db);
        ck_assert_int_eq(u, t[i].is_unix);
        if (!u)
            ck_assert_int_eq(port, t[i].port);
    }
}
END_TEST

/* item - a store item for a limit of n per minute */
static struct pc_rl_item item(const char *value, double n, double cost)
{
    struct pc_rl_item it;
    const char *v[] = {value};

    pc_rl_key("t:", "lim", v, 1, it.key);
    it.interval_us = 60e6 / n;
    it.burst = n;
    it.cost = cost;
    return it;
}

START_TEST(memory_store)
{
    struct pc_rl_store *st = pc_rl_memory_create(1000, fake_clock);
    struct pc_rl_result r;
    struct pc_rl_req *req = (struct pc_rl_req *)1;
    struct pc_rl_item a = item("a", 5, 1), b = item("b", 2, 1), ab[2];

    fake_now = 1e15;
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(pc_rl_check(st, &a, 1, &r, NULL, NULL, &req), PC_RL_DONE);
        ck_assert(req == NULL);
        ck_assert(!r.error && r.allowed);
    }
    pc_rl_check(st, &a, 1, &r, NULL, NULL, &req);
    ck_assert(!r.allowed);
    ck_assert_uint_eq(r.a[0].retry_after_ms, 12000);
    /* All or nothing: b would pass, a refuses, so b is not charged. */
    ab[0] = b;
    ab[1] = a;
    pc_rl_check(st, ab, 2, &r, NULL, NULL, &req);
    ck_assert(!r.allowed);
    ck_assert(r.a[0].allowed && !r.a[1].allowed);
    ab[1] = item("c", 5, 1);
    for (int i = 0; i < 2; i++) {
        pc_rl_check(st, ab, 2, &r, NULL, NULL, &req);
        ck_assert_msg(r.allowed, "round %d", i);
    }
    pc_rl_check(st, ab, 2, &r, NULL, NULL, &req);
    ck_assert(!r.allowed && !r.a[0].allowed && r.a[1].allowed);
    ck_assert_uint_eq(st->stats.refused, 3);
    /* Time passes: a's first slot frees after 12 s. */
    fake_now += 12e6;
    pc_rl_check(st, &a, 1, &r, NULL, NULL, &req);
    ck_assert(r.allowed);
    pc_rl_store_free(st);
}
END_TEST

START_TEST(memory_bounded)
{
    struct pc_rl_store *st = pc_rl_memory_create(100, fake_clock);
    struct pc_rl_result r;
    struct pc_rl_req *req;
    char name[32];

    fake_now = 1e15;
    /* A flood of distinct senders: the table never holds more than its bound. */
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof(name), "sender%d", i);
        struct pc_rl_item it = item(name, 10, 1);
        pc_rl_check(st, &it, 1, &r, NULL, NULL, &req);
        ck_assert(r.allowed);
        ck_assert_uint_le(pc_rl_memory_entries(st), 100);
        fake_now += 1000;
    }
    /* Once every key's time is past, a sweep empties the table as it is used. */
    fake_now += 3600e6;
    for (int i = 0; i < 2000; i++) {
        struct pc_rl_item it = item("again", 1e6, 1);
        pc_rl_check(st, &it, 1, &r, NULL, NULL, &req);
        fake_now += 1e6;
    }
    ck_assert_uint_le(pc_rl_memory_entries(st), 2);
    pc_rl_store_free(st);
}
END_TEST

START_TEST(store_create)
{
    struct pc_err err = {{0}};
    struct pc_rl_store_conf c = {0};

    c.url = "";
    struct pc_rl_store *st = pc_rl_store_create(&c, &err);
    ck_assert_ptr_nonnull(st);
    ck_assert_str_eq(st->ops->kind, "memory");
    pc_rl_store_free(st);
    c.url = "redis://127.0.0.1:1/0";
    st = pc_rl_store_create(&c, &err);
    ck_assert_ptr_nonnull(st);
    ck_assert_str_eq(st->ops->kind, "redis");
    pc_rl_store_free(st); /* never started: nothing to close */
    c.url = "redis:/bad";
    ck_assert_ptr_null(pc_rl_store_create(&c, &err));
    ck_assert(strstr(err.msg, "bad store") != NULL);
    const char *s[] = {"127.0.0.1:26379"};
    c.url = NULL;
    c.sentinels = s;
    c.nsentinels = 1;
    ck_assert_ptr_null(pc_rl_store_create(&c, &err)); /* no master name */
    c.master = "mymaster";
    st = pc_rl_store_create(&c, &err);
    ck_assert_ptr_nonnull(st);
    pc_rl_store_free(st);
}
END_TEST

START_TEST(config_errors)
{
    static const struct {
        const char *text, *want;
    } t[] = {
        {"limit \"a\" { rate = \"5/1x\" }", ":2: ratelimit: limit \"a\": rate must be"},
        {"limit \"a\" { }", "rate must be like"},
        {"limit \"a\" { rate = \"5/1m\" count = \"mails\" }", "count must be connections"},
        {"limit \"a\" { rate = \"5/1m\" key = { \"rcpt\" } }", "rcpt is not known when messages"},
        {"limit \"a\" { rate = \"5/1m\" count = \"connections\" key = { \"sender\" } }",
         "sender is not known when connections"},
        {"limit \"a\" { rate = \"5/1m\" key = { \"colour\" } }", "unknown key field \"colour\""},
        {"limit \"a\" { rate = \"5/1m\" on_error = \"reject\" }", "on_error must be accept or"},
        {"limit \"a\" { rate = \"5/1m\" burst = -1 }", "burst = -1 is out of range"},
        {"limit \"a\" { rate = \"1/30d\" burst = 1000 }", "drains in more than a year"},
        {"on_error = \"reject\"", "never a reason for a 5xx"},
        {"store = \"redis://127.0.0.1:0/0\"", "bad store"},
        {"store = \"http://127.0.0.1\"", "bad store"},
        {"sentinels = { \"127.0.0.1:26379\" }", "sentinels need sentinel_master"},
        {"sentinels = { \"127.0.0.1\" } sentinel_master = \"m\"", "bad sentinel address"},
        {"store_timeout = \"30s\"", "shorter than timeout"},
        {"store_timeout = \"5ms\"", "store_timeout must be a duration"},
        {"prefix = \"a b\"", "prefix: at most 64"},
        {"ipv4_prefix = 33", "ratelimit.ipv4_prefix = 33 is out of range [8, 32]"},
        {"max_entries = 1", "ratelimit.max_entries = 1 is out of range"},
        {"limit \"a\" { rate = \"5/1m\" } limit \"a\" { rate = \"5/1m\" }", "duplicate title"},
    };
    char path[] = "/tmp/pc-rl-conf.XXXXXX";
    int fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    close(fd);
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pc_err err = {{0}};
        FILE *f = fopen(path, "w");
        fprintf(f, "ratelimit {\n%s\n}\n", t[i].text);
        fclose(f);
        struct pc_conf *c = pc_conf_load(path, &err);
        ck_assert_msg(c == NULL, "accepted: %s", t[i].text);
        ck_assert_msg(strstr(err.msg, t[i].want) != NULL, "%s: got \"%s\"", t[i].text, err.msg);
        ck_assert_msg(strncmp(err.msg, path, strlen(path)) == 0, "no file:line in %s", err.msg);
    }
    /* And a good one, with every field and count. */
    FILE *f = fopen(path, "w");
    fprintf(f, "ratelimit {\n on_error = \"Accept\"\n"
               " limit \"c\" { key = { \"client_ip\", \"client_net\" } count = \"connections\" "
               "rate = \"10/1s\" }\n"
               " limit \"r\" { key = { \"rcpt\", \"rcpt_domain\", \"helo\" } count = "
               "\"recipients\" rate = \"10/h\" burst = 3 on_error = \"tempfail\" }\n"
               " limit \"m\" { key = { \"sender\", \"sender_domain\", \"auth_user\" } "
               "rate = \"100/1d\" named_only = true }\n"
               " limit \"b\" { key = { \"sender_domain\" } count = \"bytes\" rate = \"50M/1d\" "
               "rule = \"x\" }\n}\n");
    fclose(f);
    struct pc_err err = {{0}};
    struct pc_conf *c = pc_conf_load(path, &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    pc_conf_unref(c);
    unlink(path);
}
END_TEST

/* ratelimit_suite - the table of cases */
static Suite *ratelimit_suite(void)
{
    Suite *s = suite_create("ratelimit");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, rate_parse);
    tcase_add_test(tc, gcra_basic);
    tcase_add_test(tc, gcra_burst_cost);
    tcase_add_test(tc, keys);
    tcase_add_test(tc, url_parse);
    tcase_add_test(tc, memory_store);
    tcase_add_test(tc, memory_bounded);
    tcase_add_test(tc, store_create);
    tcase_add_test(tc, config_errors);
    suite_add_tcase(s, tc);
    return s;
}

/* main - run the suite */
int main(void)
{
    SRunner *sr = srunner_create(ratelimit_suite());

    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
