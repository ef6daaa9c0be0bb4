/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_metrics 1 - the merge of several processes' metrics, shared session ids
 * DESCRIPTION
 *	With workers, each process counts in its slot of a region its parent
 *	shares and the exposition is the merge of every slot: counters and
 *	histograms add up, gauges merge by kind (held state: sum of the live;
 *	a peer's state: the latest observation; workers, start time, reloads:
 *	the largest). A dead worker's counters stay for its replacement; its
 *	held state is zeroed. Counting is exact from several threads at once
 *	without a lock, and across processes through MAP_SHARED (fork). A
 *	full table drops new series and counts them. Session ids drawn from
 *	one shared counter by several processes never repeat.
 * SEE ALSO
 *	lib/metrics.h, gateway/master.c, core/session.h
 */
#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/session.h"
#include "lib/buf.h"
#include "lib/metrics.h"

/* render - the exposition, as a string the caller frees */
static char *render(void)
{
    struct pc_buf b;

    pc_buf_init(&b, 0);
    pc_metrics_render(&b);
    pc_buf_putc(&b, 0);
    return b.data;
}

/* has - the exposition holds this line */
static void has(const char *text, const char *line)
{
    char want[512];

    snprintf(want, sizeof(want), "\n%s\n", line);
    ck_assert_msg(strstr(text, want) != NULL, "missing: %s", line);
}

/* count - how many times s occurs */
static int count(const char *text, const char *s)
{
    int n = 0;

    for (const char *p = text; (p = strstr(p, s)) != NULL; p++)
        n++;
    return n;
}

START_TEST(merge_by_kind)
{
    struct pc_metrics_region *r = pc_metrics_region_new(3, false);

    pc_metrics_attach(r, 0);
    pc_metric_add(PC_M_CONNECTIONS, "in", NULL, 3);
    pc_metric_add(PC_M_CONNECTIONS_ACTIVE, NULL, NULL, 2);
    pc_metric_add(PC_M_VERDICTS, "rules", "reject", 1);
    pc_metric_observe(PC_M_STAGE_SECONDS, "rcpt", 0.003);
    pc_metric_set(PC_M_BACKEND_UP, "mta", NULL, 0);
    pc_metric_set(PC_M_WORKERS, NULL, NULL, 2);
    pc_metric_add(PC_M_RELOADS, "ok", NULL, 1);
    pc_metric_add(PC_M_MESSAGE_BYTES, NULL, NULL, 1000);
    pc_metrics_attach(r, 1);
    pc_metric_add(PC_M_CONNECTIONS, "in", NULL, 4);
    pc_metric_add(PC_M_CONNECTIONS, "submission", NULL, 1); /* only here */
    pc_metric_add(PC_M_CONNECTIONS_ACTIVE, NULL, NULL, 5);
    pc_metric_add(PC_M_VERDICTS, "rules", "reject", 2);
    pc_metric_add(PC_M_VERDICTS, "rules", "accept", 7);
    pc_metric_observe(PC_M_STAGE_SECONDS, "rcpt", 100);
    pc_metric_observe(PC_M_STAGE_SECONDS, "rcpt", 0.0001);
    pc_metric_set(PC_M_BACKEND_UP, "mta", NULL, 1); /* later than worker 0's 0 */
    pc_metric_set(PC_M_WORKERS, NULL, NULL, 2);
    pc_metric_add(PC_M_RELOADS, "ok", NULL, 1);
    pc_metric_add(PC_M_MESSAGE_BYTES, NULL, NULL, 234);
    char *t = render();
    has(t, "portcullis_connections_total{listener=\"in\"} 7");
    has(t, "portcullis_connections_total{listener=\"submission\"} 1");
    has(t, "portcullis_connections_active 7");
    has(t, "portcullis_verdicts_total{filter=\"rules\",action=\"reject\"} 3");
    has(t, "portcullis_verdicts_total{filter=\"rules\",action=\"accept\"} 7");
    has(t, "portcullis_stage_duration_seconds_bucket{stage=\"rcpt\",le=\"0.0001\"} 1");
    has(t, "portcullis_stage_duration_seconds_bucket{stage=\"rcpt\",le=\"0.0025\"} 1");
    has(t, "portcullis_stage_duration_seconds_bucket{stage=\"rcpt\",le=\"0.005\"} 2");
    has(t, "portcullis_stage_duration_seconds_bucket{stage=\"rcpt\",le=\"30\"} 2");
    has(t, "portcullis_stage_duration_seconds_bucket{stage=\"rcpt\",le=\"+Inf\"} 3");
    has(t, "portcullis_stage_duration_seconds_count{stage=\"rcpt\"} 3");
    has(t, "portcullis_backend_up{backend=\"mta\"} 1");
    has(t, "portcullis_workers 2");
    has(t, "portcullis_reloads_total{result=\"ok\"} 1");
    has(t, "portcullis_message_bytes_total 1234");
    has(t, "portcullis_metrics_series_dropped_total 0");
    /* One series per label set, in first-use order of the first slot that has it. */
    ck_assert_int_eq(count(t, "portcullis_connections_total{"), 2);
    ck_assert(strstr(t, "listener=\"in\"") < strstr(t, "listener=\"submission\""));
    free(t);
    /* Worker 0 sees the backend down after worker 1 saw it up: the latest wins. */
    pc_metrics_attach(r, 0);
    pc_metric_set(PC_M_BACKEND_UP, "mta", NULL, 0);
    t = render();
    has(t, "portcullis_backend_up{backend=\"mta\"} 0");
    free(t);
}
END_TEST

START_TEST(dead_worker_counts_stay)
{
    struct pc_metrics_region *r = pc_metrics_region_new(2, false);

    pc_metrics_attach(r, 0);
    pc_metric_add(PC_M_TRANSACTIONS, "sent", NULL, 10);
    pc_metrics_attach(r, 1);
    pc_metric_add(PC_M_TRANSACTIONS, "sent", NULL, 5);
    pc_metric_add(PC_M_CONNECTIONS_ACTIVE, NULL, NULL, 3);
    pc_metric_add(PC_M_SPOOL_BYTES, "memory", NULL, 4096);
    pc_metric_set(PC_M_BACKEND_UP, "mta", NULL, 1);
    /* Worker 1 is killed mid-transaction: the parent zeroes what it held, nothing else. */
    pc_metrics_slot_gone(r, 1);
    char *t = render();
    has(t, "portcullis_transactions_total{outcome=\"sent\"} 15");
    has(t, "portcullis_connections_active 0");
    has(t, "portcullis_spool_bytes{where=\"memory\"} 0");
    has(t, "portcullis_backend_up{backend=\"mta\"} 1");
    free(t);
    /* Its replacement counts on in the same slot. */
    pc_metrics_attach(r, 1);
    pc_metric_add(PC_M_TRANSACTIONS, "sent", NULL, 1);
    pc_metric_add(PC_M_CONNECTIONS_ACTIVE, NULL, NULL, 1);
    t = render();
    has(t, "portcullis_transactions_total{outcome=\"sent\"} 16");
    has(t, "portcullis_connections_active 1");
    free(t);
    pc_metrics_slot_gone(r, 7); /* out of range: ignored */
    pc_metrics_slot_gone(NULL, 0);
}
END_TEST

START_TEST(one_slot_renders_as_before)
{
    /* workers = 1: no region attached, a private one of one slot. */
    pc_metric_add(PC_M_TRANSACTIONS, "sent", NULL, 2);
    pc_metric_set(PC_M_SPOOL_BYTES, "memory", NULL, 12345);
    pc_metric_add(PC_M_SPOOL_BYTES, "memory", NULL, -45);
    char *t = render();
    ck_assert_ptr_nonnull(strstr(t, "# TYPE portcullis_transactions_total counter\n"
                                    "portcullis_transactions_total{outcome=\"sent\"} 2\n"));
    has(t, "portcullis_spool_bytes{where=\"memory\"} 12300");
    has(t, "portcullis_connections_active 0");
    free(t);
    pc_metrics_reset();
    t = render();
    ck_assert_ptr_null(strstr(t, "portcullis_transactions_total{"));
    free(t);
}
END_TEST

START_TEST(full_table_drops_and_counts)
{
    char name[40];

    pc_metrics_attach(pc_metrics_region_new(2, false), 1);
    for (int i = 0; i < 2100; i++) {
        snprintf(name, sizeof(name), "rule%d", i);
        pc_metric_add(PC_M_RULE_HITS, name, NULL, 1);
    }
    pc_metric_add(PC_M_RULE_HITS, "rule0", NULL, 1); /* an existing series still counts */
    char *t = render();
    has(t, "portcullis_metrics_series_dropped_total 52");
    has(t, "portcullis_rule_hits_total{rule=\"rule0\"} 2");
    has(t, "portcullis_rule_hits_total{rule=\"rule2047\"} 1");
    ck_assert_ptr_null(strstr(t, "rule=\"rule2048\""));
    free(t);
}
END_TEST

START_TEST(long_labels_are_cut)
{
    char a[200], b[200];

    memset(a, 'x', sizeof(a) - 1), a[sizeof(a) - 1] = 0;
    memcpy(b, a, sizeof(b));
    b[150] = 'y'; /* differs past the cut: the same series */
    pc_metric_add(PC_M_RULE_HITS, a, NULL, 1);
    pc_metric_add(PC_M_RULE_HITS, b, NULL, 1);
    pc_metric_add(PC_M_VERDICTS, "f", "a-very-long-action-name-past-thirty-one-bytes", 1);
    char *t = render();
    char want[256];
    snprintf(want, sizeof(want), "portcullis_rule_hits_total{rule=\"%.95s\"} 2", a);
    has(t, want);
    has(t, "portcullis_verdicts_total{filter=\"f\",action=\"a-very-long-action-name-past-th\"} 1");
    free(t);
}
END_TEST

/* hammer - one of several threads counting the same series */
static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 100000; i++) {
        pc_metric_add(PC_M_RULE_HITS, "shared", NULL, 1);
        pc_metric_observe(PC_M_STAGE_SECONDS, "eom", 0.001);
    }
    return NULL;
}

START_TEST(threads_count_exactly)
{
    pthread_t th[4];

    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&th[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    char *t = render();
    has(t, "portcullis_rule_hits_total{rule=\"shared\"} 400000");
    has(t, "portcullis_stage_duration_seconds_count{stage=\"eom\"} 400000");
    has(t, "portcullis_stage_duration_seconds_bucket{stage=\"eom\",le=\"0.001\"} 400000");
    has(t, "portcullis_stage_duration_seconds_sum{stage=\"eom\"} 400");
    free(t);
}
END_TEST

START_TEST(processes_share_a_region)
{
    struct pc_metrics_region *r = pc_metrics_region_new(3, true);
    pid_t pid[2];

    for (int k = 0; k < 2; k++) {
        pid[k] = fork();
        ck_assert_int_ge(pid[k], 0);
        if (pid[k] == 0) {
            pc_metrics_attach(r, (unsigned)k);
            for (int i = 0; i < 1000; i++)
                pc_metric_add(PC_M_CONNECTIONS, "in", NULL, 1);
            pc_metric_add(PC_M_RULE_HITS, k ? "one" : "zero", NULL, 1);
            _exit(0);
        }
    }
    for (int k = 0; k < 2; k++) {
        int status;
        ck_assert_int_eq(waitpid(pid[k], &status, 0), pid[k]);
        ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    pc_metrics_attach(r, 2); /* the parent's own slot */
    char *t = render();
    has(t, "portcullis_connections_total{listener=\"in\"} 2000");
    has(t, "portcullis_rule_hits_total{rule=\"zero\"} 1");
    has(t, "portcullis_rule_hits_total{rule=\"one\"} 1");
    free(t);
}
END_TEST

START_TEST(session_ids_unique_across_processes)
{
    unsigned long long *counter =
        mmap(NULL, sizeof(*counter), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    unsigned long long *ids = mmap(NULL, 2 * 500 * sizeof(*ids), PROT_READ | PROT_WRITE,
                                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t pid[2];

    ck_assert(counter != MAP_FAILED && ids != MAP_FAILED);
    for (int k = 0; k < 2; k++) {
        pid[k] = fork();
        ck_assert_int_ge(pid[k], 0);
        if (pid[k] == 0) {
            pc_session_ids_share(counter);
            for (int i = 0; i < 500; i++) {
                struct pc_session *s = pc_session_new(NULL, NULL, "in", NULL, NULL, NULL);
                ids[k * 500 + i] = s->id;
                ck_assert_uint_eq(strtoull(s->sid + 1, NULL, 16), s->id); /* "S%llx" */
            }
            _exit(0);
        }
    }
    for (int k = 0; k < 2; k++)
        waitpid(pid[k], NULL, 0);
    ck_assert_uint_eq(*counter, 1000);
    static unsigned char seen[1001];
    for (int i = 0; i < 1000; i++) {
        ck_assert(ids[i] >= 1 && ids[i] <= 1000);
        ck_assert_msg(!seen[ids[i]], "session id %llu twice", ids[i]);
        seen[ids[i]] = 1;
    }
    munmap(counter, sizeof(*counter));
    munmap(ids, 2 * 500 * sizeof(*ids));
}
END_TEST

/* main - run the suite */
int main(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("merge");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, merge_by_kind);
    tcase_add_test(tc, dead_worker_counts_stay);
    tcase_add_test(tc, one_slot_renders_as_before);
    tcase_add_test(tc, full_table_drops_and_counts);
    tcase_add_test(tc, long_labels_are_cut);
    tcase_add_test(tc, threads_count_exactly);
    tcase_add_test(tc, processes_share_a_region);
    tcase_add_test(tc, session_ids_unique_across_processes);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
