/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_sasl 1 - the AUTH exchange decoder as a table of exchanges
 * DESCRIPTION
 *	Each case is an AUTH argument and the client lines that follow; the
 *	expected outcome is the list of challenges, then the credentials or
 *	the reply code and enhanced code. Plus strict base64 both ways and
 *	the wipe.
 * SEE ALSO
 *	RFC 4954 sections 4 and 6, RFC 4616
 */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "gateway/sasl.h"

struct xcase {
    const char *args;
    const char *lines[3];
    const char *challenges;  /* challenges sent, joined by '|' */
    const char *user, *pass; /* when done */
    int code;                /* when an error */
    const char *enh;
};

/* run - one exchange; describe it as "c1|c2" challenges plus an outcome */
static void run(const struct xcase *x)
{
    struct pc_sasl s;
    struct pc_sasl_result r;
    char ch[256] = "", enh[16];
    size_t i = 0;

    enum pc_sasl_status st = pc_sasl_start(&s, x->args, strlen(x->args), &r);
    while (st == PC_SASL_CHALLENGE) {
        if (ch[0] || i > 0)
            strcat(ch, "|");
        strcat(ch, r.challenge);
        ck_assert_msg(x->lines[i] != NULL, "%s: unexpected challenge %s", x->args, r.challenge);
        st = pc_sasl_step(&s, x->lines[i], strlen(x->lines[i]), &r);
        i++;
    }
    ck_assert_msg(strcmp(ch, x->challenges ? x->challenges : "") == 0, "%s: challenges %s", x->args,
                  ch);
    if (x->user) {
        ck_assert_msg(st == PC_SASL_DONE, "%s: not done (%d %s)", x->args, r.code, r.text);
        ck_assert_str_eq(r.user, x->user);
        ck_assert_str_eq(r.pass, x->pass);
        pc_sasl_wipe(&s);
    } else {
        ck_assert_msg(st == PC_SASL_ERROR, "%s: not an error", x->args);
        snprintf(enh, sizeof(enh), "%u.%u.%u", r.enh[0], r.enh[1], r.enh[2]);
        ck_assert_msg(r.code == x->code && strcmp(enh, x->enh) == 0, "%s: %d %s", x->args, r.code,
                      enh);
        ck_assert(s.user[0] == 0 && s.pass[0] == 0); /* wiped on error */
    }
}

START_TEST(exchanges)
{
    /* "\0alice\0secret" = AGFsaWNlAHNlY3JldA== ; "alice\0alice\0secret" with authzid */
    static const struct xcase t[] = {
        {"PLAIN AGFsaWNlAHNlY3JldA==", {0}, NULL, "alice", "secret", 0, NULL},
        {"plain AGFsaWNlAHNlY3JldA==", {0}, NULL, "alice", "secret", 0, NULL},
        {"PLAIN YWxpY2UAYWxpY2UAc2VjcmV0", {0}, NULL, "alice", "secret", 0, NULL},
        {"PLAIN Ym9iAGFsaWNlAHNlY3JldA==", {0}, NULL, NULL, NULL, 535, "5.7.8"}, /* authzid bob */
        {"PLAIN", {"AGFsaWNlAHNlY3JldA=="}, "", "alice", "secret", 0, NULL},
        {"PLAIN", {"*"}, "", NULL, NULL, 501, "5.0.0"},
        {"PLAIN", {"AGFsaWNlAHNlY3JldA"}, "", NULL, NULL, 501, "5.5.2"}, /* no padding */
        {"PLAIN", {"AGFsaWNl AHNlY3JldA=="}, "", NULL, NULL, 501, "5.5.2"},
        {"PLAIN", {""}, "", NULL, NULL, 501, "5.5.2"},
        {"PLAIN =", {0}, NULL, NULL, NULL, 501, "5.5.2"},            /* empty message */
        {"PLAIN AGFsaWNlAA==", {0}, NULL, "alice", "", 0, NULL},     /* empty password */
        {"PLAIN AABzZWNyZXQ=", {0}, NULL, NULL, NULL, 501, "5.5.2"}, /* empty user */
        {"PLAIN YWxpY2U=", {0}, NULL, NULL, NULL, 501, "5.5.2"},     /* no NUL */
        {"PLAIN *", {0}, NULL, NULL, NULL, 501, "5.5.2"},
        {"PLAIN a b", {0}, NULL, NULL, NULL, 501, "5.5.4"},
        {"LOGIN",
         {"YWxpY2U=", "c2VjcmV0"},
         "VXNlcm5hbWU6|UGFzc3dvcmQ6",
         "alice",
         "secret",
         0,
         NULL},
        {"LOGIN YWxpY2U=", {"c2VjcmV0"}, "UGFzc3dvcmQ6", "alice", "secret", 0, NULL},
        {"LOGIN", {"YWxpY2U=", "="}, "VXNlcm5hbWU6|UGFzc3dvcmQ6", "alice", "", 0, NULL},
        {"LOGIN", {"YWxpY2U=", "*"}, "VXNlcm5hbWU6|UGFzc3dvcmQ6", NULL, NULL, 501, "5.0.0"},
        {"LOGIN", {"="}, "VXNlcm5hbWU6", NULL, NULL, 501, "5.5.2"},
        {"LOGIN", {"YQBi"}, "VXNlcm5hbWU6", NULL, NULL, 501, "5.5.2"}, /* NUL in the name */
        {"LOGIN", {"!!!!"}, "VXNlcm5hbWU6", NULL, NULL, 501, "5.5.2"},
        {"CRAM-MD5", {0}, NULL, NULL, NULL, 504, "5.5.4"},
        {"PLAINX", {0}, NULL, NULL, NULL, 504, "5.5.4"},
        {"", {0}, NULL, NULL, NULL, 501, "5.5.4"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        run(&t[i]);
}
END_TEST

START_TEST(line_bounds)
{
    static char line[PC_SASL_MAX_LINE + 8];
    struct pc_sasl s;
    struct pc_sasl_result r;

    pc_sasl_start(&s, "PLAIN", 5, &r);
    memset(line, 'A', PC_SASL_MAX_LINE + 4);
    ck_assert_int_eq(pc_sasl_step(&s, line, PC_SASL_MAX_LINE + 4, &r), PC_SASL_ERROR);
    ck_assert_int_eq(r.code, 500);
    ck_assert_uint_eq(r.enh[2], 6);
    /* Valid base64 within the line bound but a field over 255 characters' worth. */
    pc_sasl_start(&s, "LOGIN", 5, &r);
    memset(line, 'Q', 4 * 400);
    ck_assert_int_eq(pc_sasl_step(&s, line, 4 * 400, &r), PC_SASL_ERROR);
    ck_assert_int_eq(r.code, 501);
    /* A step without a start is out of sequence. */
    memset(&s, 0, sizeof(s));
    ck_assert_int_eq(pc_sasl_step(&s, "=", 1, &r), PC_SASL_ERROR);
    ck_assert_int_eq(r.code, 503);
}
END_TEST

START_TEST(base64_strict)
{
    static const char *bad[] = {
        "A",    "AB",       "ABC", "A===", "AB=C",
        "=AAA", "AB==AAAA", "AQ=", "AR==", /* non-zero bits under the padding */
        "AAB=" /* ditto: 'B' leaves a bit set */};
    unsigned char out[64];
    char enc[64];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(pc_base64_decode(bad[i], strlen(bad[i]), out, sizeof(out)) < 0, "%s", bad[i]);
    for (int len = 0; len < 20; len++) {
        unsigned char in[20];
        for (int k = 0; k < len; k++)
            in[k] = (unsigned char)(k * 37 + len);
        long n = pc_base64_encode(in, (size_t)len, enc, sizeof(enc));
        ck_assert_int_ge(n, 0);
        ck_assert_int_eq(pc_base64_decode(enc, (size_t)n, out, sizeof(out)), len);
        ck_assert(memcmp(in, out, (size_t)len) == 0);
    }
    ck_assert_int_lt(pc_base64_decode("QUJD", 4, out, 2), 0); /* out too small */
    ck_assert_int_lt(pc_base64_encode((const unsigned char *)"abc", 3, enc, 4), 0);
}
END_TEST

START_TEST(wipe)
{
    struct pc_sasl s;
    struct pc_sasl_result r;

    ck_assert_int_eq(pc_sasl_start(&s, "PLAIN AGFsaWNlAHNlY3JldA==", 26, &r), PC_SASL_DONE);
    pc_sasl_wipe(&s);
    for (size_t i = 0; i < sizeof(s.pass); i++)
        ck_assert(s.pass[i] == 0);
}
END_TEST

/* main - run the suite */
int main(void)
{
    Suite *su = suite_create("sasl");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, exchanges);
    tcase_add_test(tc, line_bounds);
    tcase_add_test(tc, base64_strict);
    tcase_add_test(tc, wipe);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
