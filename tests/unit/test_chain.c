/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_chain 1 - the chain runner and the relay filter
 * DESCRIPTION
 *	Small test filters (const ops in this file) drive the runner: order,
 *	first final verdict wins, ACCEPT skips non-gate filters only, PC_ERROR
 *	through on_error, dry-run, PENDING resumed from a timer, a pending
 *	filter that never answers (timeout: cancel, then on_error), HEADER
 *	per header. The relay filter has its own table in test_relay.c.
 */
#include <check.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#include "core/filter.h"
#include "core/session.h"
#include "lib/log.h"
#include "lib/pool.h"
#include "core/chain.h"

static int calls[8];
static int cancelled;
static struct event_base *base;
static struct pc_services svc;

static enum pc_action f_continue(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    (void)s, (void)ctx, (void)v;
    calls[(long)conf]++;
    return PC_CONTINUE;
}

static enum pc_action f_reject(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    (void)s, (void)ctx;
    calls[(long)conf]++;
    pc_verdict_set(v, PC_REJECT, 550, "5.7.1", "no");
    return PC_REJECT;
}

static enum pc_action f_accept(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    (void)s, (void)ctx, (void)v;
    calls[(long)conf]++;
    return PC_ACCEPT;
}

static enum pc_action f_error(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    (void)s, (void)ctx;
    calls[(long)conf]++;
    pc_verdict_set(v, PC_ERROR, 0, NULL, "lookup failed");
    return PC_ERROR;
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pc_verdict v;
    (void)fd, (void)what;
    pc_verdict_set(&v, PC_TEMPFAIL, 451, "4.7.1", "later");
    pc_chain_resume(arg, &v);
}

static enum pc_action f_pending(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    struct timeval tv = {0, 1000};
    (void)ctx, (void)v;
    calls[(long)conf]++;
    event_base_once(base, -1, EV_TIMEOUT, resume_cb, s, &tv);
    return PC_PENDING;
}

static enum pc_action f_never(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    (void)s, (void)ctx, (void)v;
    calls[(long)conf]++;
    return PC_PENDING;
}

static void f_cancel(struct pc_session *s, void *conf, void *ctx)
{
    (void)s, (void)conf, (void)ctx;
    cancelled++;
}

#define OPS(n, fn, fl, stg)                                                                        \
    static const struct pc_filter_ops n = {                                                        \
        .name = #n, .abi = PC_FILTER_ABI, .flags = fl, .cancel = f_cancel, .stage = {[stg] = fn}}
OPS(cont, f_continue, 0, PC_STAGE_MAIL);
OPS(rej, f_reject, 0, PC_STAGE_MAIL);
OPS(acc, f_accept, 0, PC_STAGE_MAIL);
OPS(gate_rej, f_reject, PC_FILTER_GATE, PC_STAGE_MAIL);
OPS(err, f_error, 0, PC_STAGE_MAIL);
OPS(pend, f_pending, 0, PC_STAGE_MAIL);
OPS(never, f_never, 0, PC_STAGE_MAIL);
OPS(hdr, f_continue, 0, PC_STAGE_HEADER);

static enum pc_stage done_stage;
static struct pc_verdict done_v;
static int done_calls;

static void stage_done(struct pc_session *s, enum pc_stage st, struct pc_verdict *v)
{
    (void)s;
    done_stage = st;
    done_v = *v;
    done_calls++;
    event_base_loopbreak(base);
}

static const struct pc_door door = {"test", stage_done};

/* run - a chain of links over one stage; returns the final action (waits if pending) */
static enum pc_action run(const struct pc_filter_ops **ops, size_t n, enum pc_on_error onerr,
                          bool dry, enum pc_stage stage, struct pc_verdict *v)
{
    struct pc_chain_link links[8];
    struct pc_chain c = {links, n, dry};

    memset(calls, 0, sizeof(calls));
    cancelled = done_calls = 0;
    for (size_t i = 0; i < n; i++)
        links[i] = (struct pc_chain_link){ops[i], (void *)(long)i, 50, onerr};
    struct pc_session *s = pc_session_new(&svc, NULL, "t", &c, &door, NULL);
    ck_assert_int_eq(pc_chain_attach(s), 0);
    struct pc_txn *t = pc_txn_new(s);
    for (int i = 0; i < 3; i++) {
        char line[32];
        snprintf(line, sizeof(line), "X-H%d: v", i);
        pc_msg_line(&t->msg, line, strlen(line));
    }
    pc_msg_line(&t->msg, "", 0);
    pc_msg_finish(&t->msg);
    enum pc_action a = pc_chain_run(s, stage, v);
    if (a == PC_PENDING) {
        event_base_dispatch(base);
        ck_assert_int_eq(done_calls, 1);
        *v = done_v;
        a = v->action;
    }
    pc_session_free(s);
    return a;
}

START_TEST(order_and_first_final)
{
    const struct pc_filter_ops *ops[] = {&cont, &rej, &cont};
    struct pc_verdict v;
    ck_assert_int_eq(run(ops, 3, PC_ONERR_TEMPFAIL, false, PC_STAGE_MAIL, &v), PC_REJECT);
    ck_assert_int_eq(calls[0], 1);
    ck_assert_int_eq(calls[1], 1);
    ck_assert_int_eq(calls[2], 0);
    ck_assert_int_eq(v.code, 550);
    ck_assert_str_eq(v.filter, "rej");
}
END_TEST

START_TEST(accept_skips_but_gates_run)
{
    const struct pc_filter_ops *ops[] = {&acc, &rej, &gate_rej};
    struct pc_verdict v;
    ck_assert_int_eq(run(ops, 3, PC_ONERR_TEMPFAIL, false, PC_STAGE_MAIL, &v), PC_REJECT);
    ck_assert_int_eq(calls[1], 0);
    ck_assert_int_eq(calls[2], 1);
    ck_assert_str_eq(v.filter, "gate_rej");
}
END_TEST

START_TEST(on_error_policies)
{
    const struct pc_filter_ops *ops[] = {&err, &cont};
    struct pc_verdict v;
    ck_assert_int_eq(run(ops, 2, PC_ONERR_TEMPFAIL, false, PC_STAGE_MAIL, &v), PC_TEMPFAIL);
    ck_assert_int_eq(v.code / 100, 4);
    ck_assert_int_eq(v.enh.cls, 4);
    ck_assert_int_eq(run(ops, 2, PC_ONERR_ACCEPT, false, PC_STAGE_MAIL, &v), PC_CONTINUE);
    ck_assert_int_eq(calls[1], 1);
    ck_assert_int_eq(run(ops, 2, PC_ONERR_REJECT, false, PC_STAGE_MAIL, &v), PC_REJECT);
    ck_assert_int_eq(v.code / 100, 5);
}
END_TEST

START_TEST(dry_run_enforces_nothing)
{
    const struct pc_filter_ops *ops[] = {&rej, &cont};
    struct pc_verdict v;
    ck_assert_int_eq(run(ops, 2, PC_ONERR_TEMPFAIL, true, PC_STAGE_MAIL, &v), PC_CONTINUE);
    ck_assert_int_eq(calls[1], 1);
}
END_TEST

START_TEST(pending_resumes)
{
    const struct pc_filter_ops *ops[] = {&cont, &pend, &cont};
    struct pc_verdict v;
    ck_assert_int_eq(run(ops, 3, PC_ONERR_TEMPFAIL, false, PC_STAGE_MAIL, &v), PC_TEMPFAIL);
    ck_assert_int_eq(done_stage, PC_STAGE_MAIL);
    ck_assert_int_eq(v.code, 451);
    ck_assert_int_eq(calls[2], 0);
    ck_assert_int_eq(cancelled, 0);
}
END_TEST

START_TEST(pending_times_out)
{
    const struct pc_filter_ops *ops[] = {&never, &cont};
    struct pc_verdict v;
    /* 50 ms timeout, on_error = accept: cancelled, then the chain goes on. */
    ck_assert_int_eq(run(ops, 2, PC_ONERR_ACCEPT, false, PC_STAGE_MAIL, &v), PC_CONTINUE);
    ck_assert_int_eq(cancelled, 1);
    ck_assert_int_eq(calls[1], 1);
    ck_assert_int_eq(run(ops, 2, PC_ONERR_TEMPFAIL, false, PC_STAGE_MAIL, &v), PC_TEMPFAIL);
    ck_assert_int_eq(calls[1], 0);
}
END_TEST

START_TEST(header_stage_per_header)
{
    const struct pc_filter_ops *ops[] = {&hdr};
    struct pc_verdict v;
    ck_assert_int_eq(run(ops, 1, PC_ONERR_TEMPFAIL, false, PC_STAGE_HEADER, &v), PC_CONTINUE);
    ck_assert_int_eq(calls[0], 3);
}
END_TEST

START_TEST(verdict_defaults)
{
    struct pc_verdict v;
    struct pc_enh e;
    pc_verdict_set(&v, PC_REJECT, 0, NULL, "x\r\ny");
    pc_verdict_finish(&v, PC_STAGE_CONNECT);
    ck_assert_int_eq(v.code, 554);
    ck_assert_str_eq(v.text, "x  y");
    pc_verdict_set(&v, PC_TEMPFAIL, 550, "5.7.25", NULL);
    pc_verdict_finish(&v, PC_STAGE_RCPT);
    ck_assert_int_eq(v.code, 450);
    ck_assert_int_eq(v.enh.cls, 4);
    ck_assert_int_eq(v.enh.detail, 25);
    ck_assert(pc_enh_parse("5.7.23", &e) && e.detail == 23);
    ck_assert(!pc_enh_parse("3.1.1", &e));
    ck_assert(!pc_enh_parse("5.1000.1", &e));
    ck_assert(!pc_enh_parse("5.1", &e));
    ck_assert(!pc_enh_parse("5.1.1x", &e));
}
END_TEST

/* A new HELO undoes what filters found about the previous one (facts, scores), keeps what
 * they found at connect, and gives the memory back: the session does not grow per HELO. */
START_TEST(helo_findings_reset)
{
    struct pc_chain c = {NULL, 0, false};
    struct pc_session *s = pc_session_new(&svc, NULL, "t", &c, &door, NULL);

    pc_fact_add(s, "rdns", "ok");
    pc_score_add(s, "dnsbl", "LISTED", 1.5);
    for (int i = 0; i < 1000; i++) {
        pc_session_helo_reset(s);
        pc_fact_add(s, "rule", "helo_%d", i);
        pc_score_add(s, "rules", "HELO_SUSPECT", 3);
    }
    ck_assert_str_eq(pc_fact_get(s, "rdns"), "ok");
    ck_assert_str_eq(pc_fact_get(s, "rule"), "helo_999");
    ck_assert(pc_fact_next(s, "rule", pc_fact_next(s, "rule", NULL)) == NULL);
    ck_assert(pc_score_total(s) == 4.5);
    ck_assert_str_eq(s->symbols->name, "HELO_SUSPECT");
    ck_assert_str_eq(s->symbols->next->name, "LISTED");
    ck_assert(s->symbols->next->next == NULL);
    ck_assert_uint_lt(pc_pool_used(s->pool), 4096);
    pc_session_helo_reset(s);
    ck_assert(pc_fact_get(s, "rule") == NULL);
    ck_assert(pc_score_total(s) == 1.5);
    pc_session_free(s);
}
END_TEST

/* main - run the suite */
int main(void)
{
    base = event_base_new();
    svc.base = base;
    svc.hostname = "test.example";
    pc_log_set_verbose(-1);
    Suite *s = suite_create("chain");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, order_and_first_final);
    tcase_add_test(tc, accept_skips_but_gates_run);
    tcase_add_test(tc, on_error_policies);
    tcase_add_test(tc, dry_run_enforces_nothing);
    tcase_add_test(tc, pending_resumes);
    tcase_add_test(tc, pending_times_out);
    tcase_add_test(tc, header_stage_per_header);
    tcase_add_test(tc, verdict_defaults);
    tcase_add_test(tc, helo_findings_reset);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    event_base_free(base);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
