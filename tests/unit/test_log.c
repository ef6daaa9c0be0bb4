/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_log 1 - log field escaping, JSON strings, queue ids, metrics text
 * DESCRIPTION
 *	Tables of peer values that try to forge log fields; JSON escaping of
 *	every byte; queue ids unique within a process and between two
 *	processes that make them at the same instant (fork); the Prometheus
 *	exposition of counters, gauges and histograms, and the cost of one
 *	render (printed, never asserted); the stderr batch of the event loop
 *	(written whole at the end of the pass, in order, never beyond
 *	PIPE_BUF, errors at once, nothing written twice across a fork);
 *	pc_buf_printf appending once and respecting its bound.
 * SEE ALSO
 *	lib/log.h, lib/qid.h, lib/metrics.h
 */
#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/qid.h"

START_TEST(field_escaping)
{
    static const struct {
        const char *in, *out;
    } t[] = {
        {"user@example.com", "user@example.com"},
        {"bounce+a=b@example.com", "bounce+a=b@example.com"}, /* VERP stays readable */
        {"\"x>, to=<root@example.com>, status=sent (250 forged\"@example.org",
         "\"x\\x3e\\x2c\\x20to=\\x3croot@example.com\\x3e\\x2c\\x20status=sent\\x20\\x28250"
         "\\x20forged\"@example.org"},
        {"a;b[c]d\\e", "a\\x3bb\\x5bc\\x5dd\\x5ce"},
        {"tab\there\r\n", "tab\\x09here\\x0d\\x0a"},
        {"\xc3\xa9t\xc3\xa9", "\\xc3\\xa9t\\xc3\\xa9"},
        {"", ""},
    };
    char buf[512];

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        ck_assert_str_eq(pc_log_field(buf, sizeof(buf), t[i].in), t[i].out);
    /* Truncation never cuts an escape in half. */
    pc_log_field(buf, 7, "a<bcdef");
    ck_assert_str_eq(buf, "a\\x3cb");
    pc_log_field(buf, 5, "<<");
    ck_assert_str_eq(buf, "\\x3c");
}
END_TEST

START_TEST(text_escaping)
{
    char buf[256];

    /* A reply text keeps its words, but cannot carry "name=value" fields. */
    ck_assert_str_eq(pc_log_text(buf, sizeof(buf), "<a@b>: Recipient address rejected"),
                     "<a@b>: Recipient address rejected");
    ck_assert_str_eq(pc_log_text(buf, sizeof(buf), "x; from=<a> to=<b> status=sent"),
                     "x; from\\x3d<a> to\\x3d<b> status\\x3dsent");
    ck_assert_str_eq(pc_log_text(buf, sizeof(buf), "a\\b\x01"), "a\\x5cb\\x01");
}
END_TEST

START_TEST(json_strings)
{
    char buf[256];

    ck_assert_str_eq(pc_json_str(buf, sizeof(buf), "plain"), "\"plain\"");
    ck_assert_str_eq(pc_json_str(buf, sizeof(buf), "q\"b\\n\n\x01\xff"),
                     "\"q\\\"b\\\\n\\u000a\\u0001\\u00ff\"");
    ck_assert_str_eq(pc_json_str(buf, sizeof(buf), NULL), "\"\"");
    /* Truncated, it is still one closed string. */
    pc_json_str(buf, 6, "abcdefgh");
    ck_assert_str_eq(buf, "\"abc\"");
    pc_json_str(buf, 6, "\"\"\"\"");
    ck_assert_str_eq(buf, "\"\\\"\"");
}
END_TEST

START_TEST(target_names)
{
    enum pc_log_target t;

    ck_assert(pc_log_parse_target("auto", &t) && t == PC_LOG_AUTO);
    ck_assert(pc_log_parse_target("journal", &t) && t == PC_LOG_JOURNAL);
    ck_assert(pc_log_parse_target("syslog", &t) && t == PC_LOG_SYSLOG);
    ck_assert(pc_log_parse_target("stderr", &t) && t == PC_LOG_STDERR);
    ck_assert(!pc_log_parse_target("file", &t));
    /* auto without a journal stream on stderr is stderr */
    unsetenv("JOURNAL_STREAM");
    pc_log_init("portcullis", PC_LOG_AUTO, LOG_MAIL);
    ck_assert_int_eq(pc_log_get_target(), PC_LOG_STDERR);
}
END_TEST

/* cmp - qsort on ids */
static int cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

START_TEST(qid_unique_in_process)
{
    enum { N = 100000 };
    char(*ids)[PC_QID_LEN + 1] = calloc(N, sizeof(*ids));
    struct timespec ts = {1796000000, 123456000};

    ck_assert_ptr_nonnull(ids);
    /* All at the same instant: only the sequence tells them apart. */
    for (int i = 0; i < N; i++) {
        pc_qid_make_at(ids[i], sizeof(ids[i]), &ts);
        ck_assert_uint_eq(strlen(ids[i]), PC_QID_LEN);
        ck_assert_uint_eq(strspn(ids[i], "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"),
                          PC_QID_LEN);
    }
    qsort(ids, N, sizeof(*ids), cmp);
    for (int i = 1; i < N; i++)
        ck_assert_str_ne(ids[i - 1], ids[i]);
    free(ids);
}
END_TEST

START_TEST(qid_sorts_by_time)
{
    char a[32], b[32];
    struct timespec t1 = {1796000000, 999999000}, t2 = {1796000001, 0};

    pc_qid_make_at(a, sizeof(a), &t1);
    pc_qid_make_at(b, sizeof(b), &t2);
    ck_assert_int_lt(strcmp(a, b), 0);
}
END_TEST

/* child_ids - ids a fresh process makes at a fixed instant, written to fd */
static void child_ids(int fd, const struct timespec *ts)
{
    char id[32];

    for (int i = 0; i < 1000; i++) {
        pc_qid_make_at(id, sizeof(id), ts);
        if (write(fd, id, PC_QID_LEN) != PC_QID_LEN)
            _exit(1);
    }
    _exit(0);
}

START_TEST(qid_unique_between_processes)
{
    /* Two gateways, the same microsecond: the old ids (seconds + a counter from 1) were equal. */
    struct timespec ts = {1796000000, 42000};
    int fds[2][2];
    pid_t pid[2];
    static char got[2][1000 * PC_QID_LEN];

    for (int k = 0; k < 2; k++) {
        ck_assert_int_eq(pipe(fds[k]), 0);
        pid[k] = fork();
        ck_assert_int_ge(pid[k], 0);
        if (pid[k] == 0) {
            close(fds[k][0]);
            child_ids(fds[k][1], &ts);
        }
        close(fds[k][1]);
    }
    for (int k = 0; k < 2; k++) {
        size_t have = 0;
        ssize_t n;
        while (have < sizeof(got[k]) &&
               (n = read(fds[k][0], got[k] + have, sizeof(got[k]) - have)) > 0)
            have += (size_t)n;
        ck_assert_uint_eq(have, sizeof(got[k]));
        close(fds[k][0]);
        int st;
        waitpid(pid[k], &st, 0);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    for (int i = 0; i < 1000; i++)
        for (int j = 0; j < 1000; j++)
            ck_assert_msg(memcmp(got[0] + i * PC_QID_LEN, got[1] + j * PC_QID_LEN, PC_QID_LEN),
                          "same id in two processes: %.*s", PC_QID_LEN, got[0] + i * PC_QID_LEN);
}
END_TEST

START_TEST(metrics_text)
{
    struct pc_buf b;

    pc_metrics_reset();
    pc_metric_add(PC_M_TRANSACTIONS, "sent", NULL, 2);
    pc_metric_add(PC_M_VERDICTS, "rules", "reject", 1);
    pc_metric_add(PC_M_RULE_HITS, "we\"ird\\rule\nname", NULL, 1);
    pc_metric_observe(PC_M_STAGE_SECONDS, "rcpt", 0.003);
    pc_metric_observe(PC_M_STAGE_SECONDS, "rcpt", 100);
    pc_metric_set(PC_M_SPOOL_BYTES, "memory", NULL, 12345);
    pc_buf_init(&b, 0);
    pc_metrics_render(&b);
    ck_assert_ptr_nonnull(strstr(b.data, "# TYPE portcullis_transactions_total counter\n"
                                         "portcullis_transactions_total{outcome=\"sent\"} 2\n"));
    ck_assert_ptr_nonnull(
        strstr(b.data, "portcullis_verdicts_total{filter=\"rules\",action=\"reject\"} 1\n"));
    ck_assert_ptr_nonnull(
        strstr(b.data, "portcullis_rule_hits_total{rule=\"we\\\"ird\\\\rule\\nname\"} 1\n"));
    ck_assert_ptr_nonnull(strstr(
        b.data, "portcullis_stage_duration_seconds_bucket{stage=\"rcpt\",le=\"0.0025\"} 0\n"));
    ck_assert_ptr_nonnull(strstr(
        b.data, "portcullis_stage_duration_seconds_bucket{stage=\"rcpt\",le=\"0.005\"} 1\n"));
    ck_assert_ptr_nonnull(
        strstr(b.data, "portcullis_stage_duration_seconds_bucket{stage=\"rcpt\",le=\"30\"} 1\n"));
    ck_assert_ptr_nonnull(
        strstr(b.data, "portcullis_stage_duration_seconds_bucket{stage=\"rcpt\",le=\"+Inf\"} 2\n"));
    ck_assert_ptr_nonnull(
        strstr(b.data, "portcullis_stage_duration_seconds_count{stage=\"rcpt\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(b.data, "portcullis_spool_bytes{where=\"memory\"} 12345\n"));
    /* An unlabelled family always has its sample. */
    ck_assert_ptr_nonnull(strstr(b.data, "\nportcullis_connections_active 0\n"));
    pc_buf_free(&b);
    pc_metrics_reset();
}
END_TEST

START_TEST(metrics_render_cost)
{
    /* A busy gateway: 9 stages, 20 filters x 4 actions, 200 rules, 3 backend commands. */
    static const char *stages[] = {"connect", "helo", "mail", "rcpt", "data",
                                   "header",  "eoh",  "body", "eom"};
    char name[32];
    struct pc_buf b;

    pc_metrics_reset();
    for (int i = 0; i < 9; i++)
        pc_metric_observe(PC_M_STAGE_SECONDS, stages[i], 0.001);
    for (int f = 0; f < 20; f++)
        for (int a = 0; a < 4; a++) {
            snprintf(name, sizeof(name), "filter%d", f);
            pc_metric_add(PC_M_VERDICTS, name, a ? "reject" : "accept", 1);
        }
    for (int r = 0; r < 200; r++) {
        snprintf(name, sizeof(name), "rule%d", r);
        pc_metric_add(PC_M_RULE_HITS, name, NULL, 1);
    }
    struct timespec t0, t1;
    size_t len = 0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 1000; i++) {
        pc_buf_init(&b, 0);
        pc_metrics_render(&b);
        len = b.len;
        pc_buf_free(&b);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double us = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / 1e3;
    printf("metrics: one render of %zu bytes takes %.1f us\n", len, us / 1000);
    ck_assert_uint_gt(len, 10000);
    pc_metrics_reset();
}
END_TEST

/* What the batch tests see: stderr goes to a file, wakes are counted. */
static int wakes;

/* count_wake - the loop would activate its flush event */
static void count_wake(void *arg)
{
    (void)arg;
    wakes++;
}

/* stderr_to_file - fd 2 into a new temporary file; its path */
static void stderr_to_file(char *path, size_t size)
{
    snprintf(path, size, "/tmp/pc-test-log-XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(dup2(fd, 2), 2);
    close(fd);
}

/* file_size - bytes in the file */
static long file_size(const char *path)
{
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    return (long)st.st_size;
}

/* slurp - the file's text */
static char *slurp(const char *path)
{
    static char buf[65536];
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = 0;
    fclose(f);
    return buf;
}

START_TEST(batch_per_loop_pass)
{
    char path[64];
    regex_t re;

    unsetenv("JOURNAL_STREAM");
    stderr_to_file(path, sizeof(path));
    pc_log_init("portcullis", PC_LOG_STDERR, LOG_MAIL);
    pc_log_batch(count_wake, NULL);
    pc_info("S1: connect from a[192.0.2.1]:1 to in");
    struct pc_log_fields f = {.prog = "smtp", .queue_id = "Q1"};
    pc_logf(LOG_INFO, &f, "Q1: to=<a@b>, status=sent");
    pc_info("S1: disconnect");
    /* Nothing written yet, one wake for the whole pass. */
    ck_assert_int_eq(file_size(path), 0);
    ck_assert_int_eq(wakes, 1);
    pc_log_woken();
    const char *t = slurp(path);
    ck_assert_int_eq(
        regcomp(&re,
                "^[A-Z][a-z][a-z] [ 0-9][0-9] [0-9:]{8} [^ ]+ portcullis/smtpd\\[[0-9]+\\]: "
                "S1: connect from a\\[192.0.2.1\\]:1 to in\n"
                "[^\n]* portcullis/smtp\\[[0-9]+\\]: Q1: to=<a@b>, status=sent\n"
                "[^\n]* portcullis/smtpd\\[[0-9]+\\]: S1: disconnect\n$",
                REG_EXTENDED),
        0);
    ck_assert_msg(regexec(&re, t, 0, NULL, 0) == 0, "%s", t);
    regfree(&re);
    long had = file_size(path);

    /* An error goes out at once, after what was batched before it. */
    pc_info("before the error");
    pc_err("the error");
    t = slurp(path) + had;
    ck_assert_ptr_nonnull(strstr(t, "before the error"));
    ck_assert_ptr_nonnull(strstr(t, "error: the error\n"));
    ck_assert(strstr(t, "before the error") < strstr(t, "error: the error"));
    ck_assert_int_eq(wakes, 2);
    pc_log_woken(); /* nothing left: writes nothing */
    ck_assert_int_eq(file_size(path), (long)strlen(slurp(path)));

    /* A batch never exceeds PIPE_BUF: many lines in one pass leave in full batches. */
    had = file_size(path);
    char line[120];
    memset(line, 'x', sizeof(line) - 1);
    line[sizeof(line) - 1] = 0;
    long want;
    for (int i = 0; i < 100; i++)
        pc_info("%s", line);
    want = file_size(path) - had;
    ck_assert_int_gt(want, 0);
    pc_log_flush();
    long all = file_size(path) - had;
    ck_assert_int_le(all - want, PIPE_BUF);

    /* A fork writes what was batched once, not once in each process. */
    pc_info("batched before the fork");
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        exit(0); /* atexit flushes: there must be nothing left to flush */
    waitpid(pid, NULL, 0);
    pc_log_batch(NULL, NULL);
    t = slurp(path);
    const char *a = strstr(t, "batched before the fork");
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_null(strstr(a + 1, "batched before the fork"));
    /* Unbatched again: each line at once. */
    had = file_size(path);
    pc_info("direct");
    ck_assert_int_gt(file_size(path), had);
    unlink(path);
}
END_TEST

START_TEST(buf_printf)
{
    struct pc_buf b;

    /* From nothing, within the room there, past it (grows), each appended once. */
    pc_buf_init(&b, 0);
    ck_assert(pc_buf_printf(&b, "%s=%d", "a", 1));
    ck_assert(pc_buf_printf(&b, ",%s", "b"));
    char big[300];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    ck_assert(pc_buf_printf(&b, ",%s", big));
    ck_assert_uint_eq(b.len, 6 + sizeof(big) - 1);
    ck_assert_int_eq(strncmp(b.data, "a=1,b,xxx", 9), 0);
    ck_assert_uint_eq(strlen(b.data), b.len);
    pc_buf_free(&b);

    /* Bounded: what would pass max is refused and leaves the text as it was, even when it
     * fitted the room already allocated. */
    pc_buf_init(&b, 10);
    ck_assert(pc_buf_printf(&b, "%s", "12345"));
    ck_assert(!pc_buf_printf(&b, "%s", "678901"));
    ck_assert_uint_eq(b.len, 5);
    ck_assert_str_eq(b.data, "12345");
    ck_assert(pc_buf_printf(&b, "%s", "67890"));
    ck_assert_str_eq(b.data, "1234567890");
    ck_assert(!pc_buf_printf(&b, "x"));
    ck_assert_str_eq(b.data, "1234567890");
    pc_buf_free(&b);
}
END_TEST

/* main - run the suite */
int main(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, field_escaping);
    tcase_add_test(tc, text_escaping);
    tcase_add_test(tc, json_strings);
    tcase_add_test(tc, target_names);
    tcase_add_test(tc, batch_per_loop_pass);
    tcase_add_test(tc, buf_printf);
    tcase_add_test(tc, qid_unique_in_process);
    tcase_add_test(tc, qid_sorts_by_time);
    tcase_add_test(tc, qid_unique_between_processes);
    tcase_add_test(tc, metrics_text);
    tcase_add_test(tc, metrics_render_cost);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
