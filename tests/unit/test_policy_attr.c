/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_policy_attr 1 - the Postfix policy request parser, as a table of cases
 * DESCRIPTION
 *	Each case is the bytes a client sent and what the parser must say:
 *	a whole request (its attribute count, the bytes it took, one value),
 *	"more", or an error with its reason. Every whole request is also fed
 *	one prefix at a time: every shorter prefix must say "more".
 * SEE ALSO
 *	Postfix SMTPD_POLICY_README
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/policy_attr.h"

static struct pc_pa_request req, tmp;

/* big - n copies of c, then tail (static storage, one at a time) */
static const char *big(size_t n, char c, const char *head, const char *tail)
{
    static char b[3 * PC_PA_SIZE_MAX];
    size_t h = strlen(head);

    memcpy(b, head, h);
    memset(b + h, c, n);
    strcpy(b + h + n, tail);
    return b;
}

START_TEST(cases)
{
    static const struct {
        const char *in;
        enum pc_pa_status want;
        size_t nattrs;     /* OK */
        const char *name;  /* OK: an attribute to look up */
        const char *value; /* its value */
        const char *why;   /* ERROR: a part of the reason */
    } t[] = {
        {"request=smtpd_access_policy\nprotocol_state=RCPT\n\n", PC_PA_OK, 2, "protocol_state",
         "RCPT", NULL},
        /* CR LF lines, an empty value, a value with "=" and a tab, UTF-8 */
        {"a=\r\nb=x=y\tz\r\nc=d\xc3\xa9j\xc3\xa0\r\n\r\n", PC_PA_OK, 3, "b", "x=y\tz", NULL},
        /* a repeated name keeps the first value; what follows the block is left alone */
        {"a=1\na=2\n\nnext=x\n", PC_PA_OK, 2, "a", "1", NULL},
        {"", PC_PA_MORE, 0, NULL, NULL, NULL},
        {"request=smtpd_access", PC_PA_MORE, 0, NULL, NULL, NULL},
        {"request=smtpd_access_policy\n", PC_PA_MORE, 0, NULL, NULL, NULL},
        {"\n", PC_PA_ERROR, 0, NULL, NULL, "empty request"},
        {"\r\n", PC_PA_ERROR, 0, NULL, NULL, "empty request"},
        {"novalue\n\n", PC_PA_ERROR, 0, NULL, NULL, "without \"=\""},
        {"=value\n\n", PC_PA_ERROR, 0, NULL, NULL, "bad attribute name"},
        {"na me=v\n\n", PC_PA_ERROR, 0, NULL, NULL, "bad attribute name"},
        {"a=b\x01\n\n", PC_PA_ERROR, 0, NULL, NULL, "control character"},
        {"a=b\rc\n\n", PC_PA_ERROR, 0, NULL, NULL, "control character"},
        {"a=b\x7f\n\n", PC_PA_ERROR, 0, NULL, NULL, "control character"},
    };

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        size_t used, len = strlen(t[i].in);
        const char *why;
        enum pc_pa_status st = pc_pa_parse(t[i].in, len, &req, &used, &why);
        ck_assert_msg(st == t[i].want, "case %zu: status %d", i, st);
        if (st == PC_PA_ERROR)
            ck_assert_msg(why && strstr(why, t[i].why), "case %zu: %s", i, why);
        if (st != PC_PA_OK)
            continue;
        ck_assert_uint_eq(req.nattrs, t[i].nattrs);
        ck_assert_str_eq(pc_pa_get(&req, t[i].name), t[i].value);
        ck_assert_ptr_null(pc_pa_get(&req, "missing"));
        ck_assert_int_eq(t[i].in[used - 1], '\n');
        ck_assert(used <= len && (used == len || strncmp(t[i].in + used, "next", 4) == 0));
        for (size_t k = 0; k < used; k++)
            ck_assert_msg(pc_pa_parse(t[i].in, k, &tmp, &used, &why) == PC_PA_MORE,
                          "case %zu prefix %zu", i, k);
    }
}
END_TEST

START_TEST(bounds)
{
    size_t used;
    const char *why;
    const char *s;

    /* The longest line there may be, and one byte more. */
    s = big(PC_PA_LINE_MAX - 2, 'v', "a=", "\n\n");
    ck_assert_int_eq(pc_pa_parse(s, strlen(s), &req, &used, &why), PC_PA_OK);
    s = big(PC_PA_LINE_MAX - 1, 'v', "a=", "\n\n");
    ck_assert_int_eq(pc_pa_parse(s, strlen(s), &req, &used, &why), PC_PA_ERROR);
    ck_assert_str_eq(why, "a line too long");
    /* Too long is known before the line ends: no waiting for a newline that never comes. */
    s = big(PC_PA_LINE_MAX + 10, 'v', "a=", "");
    ck_assert_int_eq(pc_pa_parse(s, strlen(s), &req, &used, &why), PC_PA_ERROR);
    /* Attributes: the bound, and one more. */
    char many[PC_PA_SIZE_MAX];
    size_t o = 0;
    for (int i = 0; i < PC_PA_ATTRS_MAX; i++)
        o += (size_t)snprintf(many + o, sizeof(many) - o, "a%d=x\n", i);
    strcpy(many + o, "\n");
    ck_assert_int_eq(pc_pa_parse(many, o + 1, &req, &used, &why), PC_PA_OK);
    ck_assert_uint_eq(req.nattrs, PC_PA_ATTRS_MAX);
    strcpy(many + o, "z=1\n\n");
    ck_assert_int_eq(pc_pa_parse(many, o + 5, &req, &used, &why), PC_PA_ERROR);
    ck_assert_str_eq(why, "too many attributes");
    /* The whole block: eight long lines pass the size bound before the count. */
    char huge[3 * PC_PA_SIZE_MAX];
    o = 0;
    for (int i = 0; i < 10; i++) {
        o += (size_t)snprintf(huge + o, sizeof(huge) - o, "a%d=", i);
        memset(huge + o, 'v', 2000);
        o += 2000;
        huge[o++] = '\n';
    }
    huge[o++] = '\n';
    ck_assert_int_eq(pc_pa_parse(huge, o, &req, &used, &why), PC_PA_ERROR);
    ck_assert_str_eq(why, "a request too large");
}
END_TEST

/* main - run the suite */
int main(void)
{
    Suite *s = suite_create("policy_attr");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, cases);
    tcase_add_test(tc, bounds);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
