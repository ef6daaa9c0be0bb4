/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_senderlogin 1 - the sender login map as a table of lookups
 * DESCRIPTION
 *	(user, MAIL FROM address) -> allowed, mismatch, owned by someone,
 *	unmapped; the key order (address, +extension, @domain); case; the
 *	null sender; and map files refused with file:line.
 * SEE ALSO
 *	postconf(5) smtpd_sender_login_maps, reject_sender_login_mismatch
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filters/filter.h"
#include "gateway/senderlogin.h"

static char path[] = "/tmp/pc-senders-XXXXXX";

/* write_map - the map file */
static void write_map(const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
}

START_TEST(lookups)
{
    static const struct {
        const char *user, *addr;
        enum pc_sender_result want;
    } t[] = {
        {"alice", "alice@example.com", PC_SENDER_ALLOWED},
        {"ALICE", "Alice@Example.COM", PC_SENDER_ALLOWED},
        {"alice", "alice+lists@example.com", PC_SENDER_ALLOWED}, /* +extension */
        {"bob", "alice@example.com", PC_SENDER_MISMATCH},
        {"alice", "postmaster@example.com", PC_SENDER_ALLOWED}, /* two owners */
        {"bob", "postmaster@example.com", PC_SENDER_ALLOWED},
        {"carol", "anything@example.org", PC_SENDER_ALLOWED}, /* @domain */
        {"alice", "anything@example.org", PC_SENDER_MISMATCH},
        {"dave", "dave@example.org", PC_SENDER_ALLOWED}, /* address before @domain */
        {"carol", "dave@example.org", PC_SENDER_MISMATCH},
        {"alice", "alice@elsewhere.test", PC_SENDER_MISMATCH}, /* unmapped: not hers */
        {NULL, "alice@example.com", PC_SENDER_OWNED},
        {NULL, "x@example.org", PC_SENDER_OWNED},
        {NULL, "alice@elsewhere.test", PC_SENDER_UNMAPPED},
        {NULL, "", PC_SENDER_UNMAPPED},
        {"alice", "", PC_SENDER_ALLOWED},                       /* the null sender */
        {"alice", "alice@sub.example.com", PC_SENDER_MISMATCH}, /* no parent domains */
    };
    struct pc_err err = {{0}};
    write_map("# who may use what\n"
              "alice@example.com      alice\n"
              "postmaster@example.com alice, bob\n"
              "  @example.org         carol\n"
              "dave@example.org\tdave\r\n"
              "\n");
    struct pc_senders *m = pc_senders_load(path, "t.conf:4", &err);
    ck_assert_msg(m != NULL, "%s", err.msg);
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        ck_assert_msg(pc_senders_check(m, t[i].user, t[i].addr) == t[i].want, "%s %s",
                      t[i].user ? t[i].user : "(none)", t[i].addr);
    pc_senders_free(m);
}
END_TEST

START_TEST(bad_maps)
{
    static const struct {
        const char *text, *want;
    } t[] = {
        {"alice@example.com\n", ":1: a key without owners"},
        {"# x\nalice alice\n", ":2: expected an address"},
        {"@ alice\n", ":1: expected an address"},
        {"a@b@c alice\n", ":1: expected an address"},
        {"a@example.com x\nA@EXAMPLE.com y\n", ": a key appears twice"},
    };
    struct pc_err err;
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        write_map(t[i].text);
        memset(&err, 0, sizeof(err));
        ck_assert_ptr_null(pc_senders_load(path, "t.conf:9", &err));
        ck_assert_msg(strncmp(err.msg, "t.conf:9: ", 10) == 0 && strstr(err.msg, t[i].want),
                      "case %zu: %s", i, err.msg);
    }
    ck_assert_ptr_null(pc_senders_load("/nonexistent/map", "t.conf:9", &err));
}
END_TEST

/* main - run the suite */
int main(void)
{
    int fd = mkstemp(path);
    if (fd < 0)
        return 1;
    close(fd);
    Suite *su = suite_create("senderlogin");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, lookups);
    tcase_add_test(tc, bad_maps);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    unlink(path);
    return failed ? 1 : 0;
}
