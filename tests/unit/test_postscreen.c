/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_postscreen 1 - postscreen's actions and its pass cache
 * DESCRIPTION
 *	Tables of cases for the action names and the bounded cache of
 *	gateway/postscreen.c (its source is included to reach the static
 *	cache functions): a pass is found until it expires, a failure
 *	forgets it, the table never holds more than its size, a newcomer
 *	takes the place that expires first, a new size starts empty.
 *	The checks themselves run in tests/e2e/test_postscreen.py.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/postscreen.c"

/* ip4 - 127.0.x.y as a mapped address */
static struct pc_ip ip4(unsigned x, unsigned y)
{
    struct pc_ip ip;

    memset(&ip, 0, sizeof(ip));
    ip.b[10] = ip.b[11] = 0xff;
    ip.b[12] = 127;
    ip.b[14] = (uint8_t)x;
    ip.b[15] = (uint8_t)y;
    return ip;
}

START_TEST(test_actions)
{
    static const struct {
        const char *text;
        bool ok;
        enum pc_ps_action a;
    } t[] = {
        {"ignore", true, PC_PS_IGNORE}, {"enforce", true, PC_PS_ENFORCE},
        {"drop", true, PC_PS_DROP},     {"Drop", false, PC_PS_IGNORE},
        {"", false, PC_PS_IGNORE},      {"reject", false, PC_PS_IGNORE},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        enum pc_ps_action a = PC_PS_IGNORE;
        ck_assert_msg(pc_ps_action_parse(t[i].text, &a) == t[i].ok, "%s", t[i].text);
        ck_assert_int_eq(a, t[i].a);
    }
    ck_assert(!pc_ps_action_parse(NULL, NULL));
}
END_TEST

START_TEST(test_cache_pass_expire_forget)
{
    struct pc_ps_conf c = {.cache_ttl_ms = 1000, .cache_size = 64};
    struct pc_ip a = ip4(0, 2), b = ip4(0, 3);

    ck_assert(cache_ready(&c));
    pc_ps_cache_clear();
    cache_put(&a, 100, 1100);
    ck_assert_ptr_nonnull(cache_find(&a, 100));
    ck_assert_ptr_nonnull(cache_find(&a, 1099));
    ck_assert_ptr_null(cache_find(&a, 1100)); /* expired */
    ck_assert_ptr_null(cache_find(&b, 100));  /* another client */
    cache_put(&a, 100, 1100);
    cache_find(&a, 200)->expires = 0; /* what pc_ps_fail does */
    ck_assert_ptr_null(cache_find(&a, 200));
    /* No cache: a zero ttl or size. */
    struct pc_ps_conf off = {.cache_ttl_ms = 0, .cache_size = 64};
    ck_assert(!cache_ready(&off));
}
END_TEST

START_TEST(test_cache_bounded)
{
    struct pc_ps_conf c = {.cache_ttl_ms = 1000, .cache_size = 5}; /* rounded up to 8 */
    size_t live = 0;

    ck_assert(cache_ready(&c));
    ck_assert_uint_eq(ps_cache_mask + 1, 8);
    pc_ps_cache_clear();
    for (unsigned i = 0; i < 1000; i++) {
        struct pc_ip ip = ip4(i / 256, i % 256);
        cache_put(&ip, 10, 10 + 1000 + i);          /* later clients expire later */
        ck_assert_ptr_nonnull(cache_find(&ip, 10)); /* the newcomer always gets a place */
    }
    for (unsigned i = 0; i < 1000; i++) {
        struct pc_ip ip = ip4(i / 256, i % 256);
        live += cache_find(&ip, 10) != NULL;
    }
    ck_assert_uint_le(live, 8);
    ck_assert_uint_ge(live, 1);
    /* A new size starts empty. */
    struct pc_ps_conf big = {.cache_ttl_ms = 1000, .cache_size = 100};
    ck_assert(cache_ready(&big));
    ck_assert_uint_eq(ps_cache_mask + 1, 128);
    struct pc_ip last = ip4(999 / 256, 999 % 256);
    ck_assert_ptr_null(cache_find(&last, 10));
}
END_TEST

START_TEST(test_cache_keeps_the_longer_lived)
{
    struct pc_ps_conf c = {.cache_ttl_ms = 1000, .cache_size = 2}; /* one pair of slots */
    struct pc_ip a = ip4(1, 1), b = ip4(1, 2), n = ip4(1, 3);

    ck_assert(cache_ready(&c));
    pc_ps_cache_clear();
    cache_put(&a, 0, 5000);
    cache_put(&b, 0, 2000);
    cache_put(&n, 0, 3000); /* b expires first: it gives way */
    ck_assert_ptr_nonnull(cache_find(&a, 0));
    ck_assert_ptr_null(cache_find(&b, 0));
    ck_assert_ptr_nonnull(cache_find(&n, 0));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("postscreen");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_actions);
    tcase_add_test(tc, test_cache_pass_expire_forget);
    tcase_add_test(tc, test_cache_bounded);
    tcase_add_test(tc, test_cache_keeps_the_longer_lived);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
