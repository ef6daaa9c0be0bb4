/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_testcmd 1 - "portcullis test" on the shipped config, rule tests and corpora
 * DESCRIPTION
 *	Runs from the repository root (make unit). The shipped GTUBE rule must
 *	refuse SpamAssassin's gtube.eml and gtubedcc_crlf.eml and pass
 *	not_gtube.eml; the shipped rule tests in tests/rules must pass; every
 *	file of the MIME corpora must parse, with the body spooled to a file,
 *	without a crash and within the caps. Corpus cases are skipped when
 *	../shared/testdata is absent.
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/filter.h"
#include "core/session.h"
#include "gateway/conf.h"
#include "core/msg.h"
#include "lib/log.h"
#include "rules/mime.h"

int pc_test_main(int argc, char **argv);

#define SPAM "../shared/testdata/spam/spamassassin/"
#define MIME "../shared/testdata/mime"

/* run_test - pc_test_main with stdout silenced */
static int run_test(const char *a1, const char *a2, const char *a3)
{
    char *argv[] = {"test",     "-q",       "-c",       "deploy/portcullis.conf",
                    (char *)a1, (char *)a2, (char *)a3, NULL};
    int argc = 5 + (a2 != NULL) + (a3 != NULL);

    fflush(stdout);
    return pc_test_main(argc, argv);
}

/* present - is the corpus file there */
static bool present(const char *p)
{
    return access(p, R_OK) == 0;
}

static const struct {
    const char *file;
    int status;
} gtube[] = {
    {SPAM "spam__gtube.eml", 1},
    {SPAM "spam__gtubedcc_crlf.eml", 1},
    {SPAM "spam__gtubedcc.eml", 1},
    {SPAM "nice__not_gtube.eml", 0},
};

START_TEST(test_gtube)
{
    if (!present(gtube[_i].file)) {
        printf("skip: %s absent\n", gtube[_i].file);
        return;
    }
    ck_assert_int_eq(run_test(gtube[_i].file, NULL, NULL), gtube[_i].status);
}
END_TEST

START_TEST(test_envelope_and_usage)
{
    if (!present(SPAM "nice__not_gtube.eml")) {
        printf("skip: %s absent\n", SPAM "nice__not_gtube.eml");
        return;
    }
    char *argv[] = {"test",
                    "-q",
                    "-c",
                    "deploy/portcullis.conf",
                    "--client-ip",
                    "192.0.2.1",
                    "--rcpt",
                    "someone@elsewhere.test",
                    SPAM "nice__not_gtube.eml",
                    NULL};
    /* Not in mynetworks, not our domain: the relay filter refuses. */
    ck_assert_int_eq(pc_test_main(9, argv), 1);
    char *bad[] = {"test", "-c", "deploy/portcullis.conf", NULL};
    ck_assert_int_eq(pc_test_main(3, bad), 64);
    char *badconf[] = {"test", "-c", "/nonexistent/portcullis.conf", "x.eml", NULL};
    ck_assert_int_eq(pc_test_main(4, badconf), 78);
}
END_TEST

START_TEST(test_rule_tests)
{
    char *argv[] = {"test", "-c", "deploy/portcullis.conf", "tests/rules", NULL};

    ck_assert_int_eq(pc_test_main(4, argv), 0);
}
END_TEST

/* load - a configuration from text; NULL and the error on failure */
static struct pc_conf *load(const char *text, struct pc_err *err)
{
    char path[] = "/tmp/pc-test-conf-XXXXXX";
    int fd = mkstemp(path);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct pc_conf *c = pc_conf_load(path, err);
    unlink(path);
    return c;
}

START_TEST(test_conf_errors)
{
    struct pc_err err = {{0}};
    char rules[] = "/tmp/pc-test-rules-XXXXXX";
    int fd = mkstemp(rules);
    const char *bad = "rule a at helo if nosuch == \"x\" then accept\n"
                      "rule b at helo if helo == \"x\" then reject 450\n";
    char conf[512], want[512];

    ck_assert_ptr_null(load("rules { mime_max_depth = 0 }\n", &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "rules.mime_max_depth = 0 is out of range [1, 1000]"));
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, bad, strlen(bad)), (ssize_t)strlen(bad));
    close(fd);
    snprintf(conf, sizeof(conf), "rules { files = { \"%s\" } }\n", rules);
    ck_assert_ptr_null(load(conf, &err));
    snprintf(want, sizeof(want),
             "%s:1:19: unknown field \"nosuch\"\n%s:2:43: reply code \"450\" "
             "must be 5xx for reject",
             rules, rules);
    ck_assert_str_eq(err.msg, want);
    /* fixed: the same configuration loads */
    fd = open(rules, O_WRONLY | O_TRUNC);
    ck_assert_int_ge(fd, 0);
    const char *good = "rule b at helo if helo == \"x\" then reject\n";
    ck_assert_int_eq(write(fd, good, strlen(good)), (ssize_t)strlen(good));
    close(fd);
    struct pc_conf *c = load(conf, &err);
    ck_assert_msg(c != NULL, "%s", err.msg);
    pc_conf_unref(c);
    unlink(rules);
}
END_TEST

/* parse_spooled - a file through the spool (body in a file) and the MIME view */
static void parse_spooled(const char *path, int *n)
{
    FILE *f = fopen(path, "rb");
    struct pc_msg m;
    char line[65536];
    struct pc_mime_limits ml = {.max_depth = 20, .max_parts = 200, .max_text = 1 << 20};

    if (f == NULL)
        return;
    pc_msg_init(&m, 1 << 20, 1000, 0, "/tmp");
    while (fgets(line, sizeof(line), f)) {
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r'))
            l--;
        pc_msg_line(&m, line, l);
    }
    fclose(f);
    pc_msg_finish(&m);
    struct pc_mime *mi = pc_mime_parse_msg(&m, &ml);
    ck_assert_int_le(mi->nparts, 200);
    ck_assert_int_le(mi->text_len, 1 << 20);
    for (size_t i = 0; i < mi->nparts; i++)
        ck_assert_ptr_nonnull(mi->parts[i].type);
    pc_mime_free(mi);
    pc_msg_free(&m);
    (*n)++;
}

/* walk_dir - every regular file below a directory */
static void walk_dir(const char *dir, int *n)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    while (d && (e = readdir(d)) != NULL) {
        char p[4096];
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        if (stat(p, &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode))
            walk_dir(p, n);
        else if (S_ISREG(st.st_mode) && !strstr(e->d_name, ".json") &&
                 strcmp(e->d_name, "LICENSE") != 0 && strcmp(e->d_name, "COPYING") != 0)
            parse_spooled(p, n);
    }
    if (d)
        closedir(d);
}

START_TEST(test_mime_corpora)
{
    int n = 0;

    if (!present(MIME)) {
        printf("skip: %s absent\n", MIME);
        return;
    }
    walk_dir(MIME, &n);
    walk_dir(SPAM, &n);
    printf("mime corpora: %d messages parsed\n", n);
    ck_assert_int_gt(n, 100);
}
END_TEST

/* suite - every case */
static Suite *suite(void)
{
    Suite *s = suite_create("testcmd");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_gtube, 0, sizeof(gtube) / sizeof(gtube[0]));
    tcase_add_test(tc, test_envelope_and_usage);
    tcase_add_test(tc, test_rule_tests);
    tcase_add_test(tc, test_conf_errors);
    tcase_add_test(tc, test_mime_corpora);
    suite_add_tcase(s, tc);
    return s;
}

/* main - run the suite */
int main(void)
{
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
