/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_stages 1 - verdict defaults per stage, and the per-item stages of the chain
 * DESCRIPTION
 *	pc_verdict_finish: for every action and stage, the reply code and the
 *	enhanced code's class agree with the action, a filter's own code and
 *	subject.detail are kept when they agree, the text is cleaned and never
 *	empty; pc_enh_parse bounds. The chain: BODY hands every chunk of a
 *	spooled body in order (a pending filter in the middle of the body
 *	resumes at the next chunk), EOH and EOM run once, a HEADER filter sees
 *	every header in order and a reject at one header stops the stage.
 * SEE ALSO
 *	RFC 3463, RFC 5321 section 4.2
 */
#include <check.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/filter.h"
#include "core/session.h"
#include "lib/log.h"
#include "lib/pool.h"
#include "core/chain.h"

START_TEST(verdict_finish_table)
{
    static const struct {
        enum pc_action a;
        enum pc_stage st;
        int code;
        const char *enh, *text;
        int want_code;
        const char *want_enh, *want_text;
    } t[] = {
        {PC_REJECT, PC_STAGE_CONNECT, 0, NULL, NULL, 554, "5.7.1", "Rejected by policy"},
        {PC_REJECT, PC_STAGE_HELO, 0, NULL, "no", 550, "5.7.1", "no"},
        {PC_REJECT, PC_STAGE_RCPT, 0, NULL, "x", 550, "5.7.1", "x"},
        {PC_REJECT, PC_STAGE_EOM, 554, "5.7.0", "spam", 554, "5.7.0", "spam"},
        {PC_REJECT, PC_STAGE_MAIL, 553, "5.1.8", "bad sender", 553, "5.1.8", "bad sender"},
        {PC_REJECT, PC_STAGE_MAIL, 450, "4.1.8", "x", 550, "5.1.8", "x"}, /* class follows */
        {PC_REJECT, PC_STAGE_RCPT, 250, NULL, "x", 550, "5.7.1", "x"},
        {PC_TEMPFAIL, PC_STAGE_RCPT, 0, NULL, NULL, 450, "4.7.1",
         "Service temporarily unavailable, try again later"},
        {PC_TEMPFAIL, PC_STAGE_MAIL, 0, NULL, "later", 451, "4.7.1", "later"},
        {PC_TEMPFAIL, PC_STAGE_EOM, 452, "4.3.1", "full", 452, "4.3.1", "full"},
        {PC_TEMPFAIL, PC_STAGE_RCPT, 550, "5.7.25", "x", 450, "4.7.25", "x"},
        {PC_ERROR, PC_STAGE_DATA, 0, NULL, "dns", 451, "4.7.1", "dns"},
        {PC_DISCONNECT, PC_STAGE_CONNECT, 554, "5.7.1", "bye", 421, "4.7.1", "bye"},
        {PC_DISCONNECT, PC_STAGE_HELO, 0, NULL, NULL, 421, "4.7.1",
         "Service temporarily unavailable, try again later"},
        {PC_ACCEPT, PC_STAGE_MAIL, 0, NULL, NULL, 250, "2.0.0", "Ok"},
        {PC_DISCARD, PC_STAGE_EOM, 550, "5.7.1", "gone", 250, "2.7.1", "gone"},
        {PC_CONTINUE, PC_STAGE_RCPT, 0, NULL, "", 250, "2.0.0", "Ok"},
        /* Text: CR, LF and C0 bytes become spaces. */
        {PC_REJECT, PC_STAGE_RCPT, 550, "5.1.1", "a\r\n550 fake\tb\x01", 550, "5.1.1",
         "a  550 fake b "},
        /* An enhanced code that does not parse is dropped, then defaulted. */
        {PC_REJECT, PC_STAGE_RCPT, 550, "5.1", "x", 550, "5.7.1", "x"},
        {PC_REJECT, PC_STAGE_RCPT, 550, "9.1.1", "x", 550, "5.7.1", "x"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pc_verdict v;
        char es[32];
        pc_verdict_clear(&v);
        pc_verdict_set(&v, t[i].a, t[i].code, t[i].enh, t[i].text ? "%s" : NULL, t[i].text);
        pc_verdict_finish(&v, t[i].st);
        ck_assert_msg(v.code == t[i].want_code, "%zu: code %d", i, v.code);
        ck_assert_msg(strcmp(pc_enh_format(&v.enh, es, sizeof(es)), t[i].want_enh) == 0,
                      "%zu: enh %s", i, es);
        ck_assert_msg(strcmp(v.text, t[i].want_text) == 0, "%zu: text [%s]", i, v.text);
        ck_assert(v.code / 100 == v.enh.cls);
    }
}
END_TEST

START_TEST(enh_parse_bounds)
{
    static const struct {
        const char *s;
        int ok, cls, subject, detail;
    } t[] = {
        {"2.0.0", 1, 2, 0, 0},
        {"4.7.1", 1, 4, 7, 1},
        {"5.999.999", 1, 5, 999, 999},
        {"5.7.25", 1, 5, 7, 25},
        {"5.001.002", 1, 5, 1, 2},
        {"5.1000.1", 0, 0, 0, 0},
        {"5.1.1000", 0, 0, 0, 0},
        {"3.0.0", 0, 0, 0, 0},
        {"1.0.0", 0, 0, 0, 0},
        {"6.0.0", 0, 0, 0, 0},
        {"55.0.0", 0, 0, 0, 0},
        {"5.1", 0, 0, 0, 0},
        {"5..1", 0, 0, 0, 0},
        {"5.1.", 0, 0, 0, 0},
        {".5.1.1", 0, 0, 0, 0},
        {"5.1.1.", 0, 0, 0, 0},
        {"5.1.1 ", 0, 0, 0, 0},
        {" 5.1.1", 0, 0, 0, 0},
        {"5.+1.1", 0, 0, 0, 0},
        {"5.-1.1", 0, 0, 0, 0},
        {"5. 1.1", 0, 0, 0, 0},
        {"5.0x1.1", 0, 0, 0, 0},
        {"", 0, 0, 0, 0},
        {"5", 0, 0, 0, 0},
        {"5.1.99999999999999999999", 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        struct pc_enh e = {9, 9, 9};
        ck_assert_msg(pc_enh_parse(t[i].s, &e) == (bool)t[i].ok, "%zu [%s]", i, t[i].s);
        if (t[i].ok)
            ck_assert(e.cls == t[i].cls && e.subject == t[i].subject && e.detail == t[i].detail);
    }
}
END_TEST

START_TEST(stage_names)
{
    for (int i = 0; i < PC_STAGE_COUNT; i++) {
        enum pc_stage st;
        ck_assert(pc_stage_parse(pc_stage_name((enum pc_stage)i), &st));
        ck_assert_int_eq(st, i);
    }
    enum pc_stage st;
    ck_assert(pc_stage_parse("EOM", &st) && st == PC_STAGE_EOM);
    ck_assert(!pc_stage_parse("eomx", &st));
    ck_assert_str_eq(pc_stage_name(PC_STAGE_COUNT), "?");
}
END_TEST

/* The chain over the per-item stages. */
static struct event_base *base;
static struct pc_services svc;
static struct pc_buf seen; /* what the filters saw */
static int items, pend_at = -1, reject_at = -1;
static int done_calls;
static struct pc_verdict done_v;

/* resume_cb - a pending body filter answers CONTINUE */
static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pc_verdict v;
    (void)fd, (void)what;
    pc_verdict_clear(&v);
    pc_chain_resume(arg, &v);
}

/* f_body - records every chunk; may go pending once */
static enum pc_action f_body(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    (void)conf, (void)ctx, (void)v;
    struct pc_txn *t = s->txn;
    ck_assert_uint_eq(t->cur_body_off, seen.len); /* in order, nothing skipped */
    pc_buf_append(&seen, t->cur_body, t->cur_body_len);
    if (items++ == pend_at) {
        struct timeval tv = {0, 1000};
        event_base_once(base, -1, EV_TIMEOUT, resume_cb, s, &tv);
        return PC_PENDING;
    }
    return PC_CONTINUE;
}

/* f_header - records every header name; may reject at one */
static enum pc_action f_header(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    (void)conf, (void)ctx;
    const struct pc_header *h = s->txn->cur_header;
    ck_assert_uint_eq(s->txn->cur_header_index, (size_t)items);
    pc_buf_append(&seen, h->name, h->name_len);
    pc_buf_putc(&seen, ',');
    if (items++ == reject_at) {
        pc_verdict_set(v, PC_REJECT, 554, "5.7.1", "bad header");
        return PC_REJECT;
    }
    return PC_CONTINUE;
}

/* f_once - counts calls */
static enum pc_action f_once(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    (void)s, (void)conf, (void)ctx, (void)v;
    items++;
    return PC_CONTINUE;
}

static const struct pc_filter_ops body_ops = {
    .name = "body", .abi = PC_FILTER_ABI, .stage = {[PC_STAGE_BODY] = f_body}};
static const struct pc_filter_ops header_ops = {
    .name = "header", .abi = PC_FILTER_ABI, .stage = {[PC_STAGE_HEADER] = f_header}};
static const struct pc_filter_ops once_ops = {
    .name = "once",
    .abi = PC_FILTER_ABI,
    .stage = {[PC_STAGE_EOH] = f_once, [PC_STAGE_EOM] = f_once, [PC_STAGE_DATA] = f_once}};

/* stage_done - the door: a pending stage finished */
static void stage_done(struct pc_session *s, enum pc_stage st, struct pc_verdict *v)
{
    (void)s, (void)st;
    done_v = *v;
    done_calls++;
    event_base_loopbreak(base);
}

static const struct pc_door door = {"test", stage_done};
static char spool[] = "/tmp/pc-test-stages-XXXXXX";

/* run_stage - one stage over a message of nbody body bytes (spooled past 1000) */
static enum pc_action run_stage(const struct pc_filter_ops *ops, enum pc_stage stage, size_t nbody,
                                struct pc_buf *body, struct pc_verdict *v)
{
    struct pc_chain_link link = {ops, NULL, 1000, PC_ONERR_TEMPFAIL};
    struct pc_chain c = {&link, 1, false};
    struct pc_session *s = pc_session_new(&svc, NULL, "t", &c, &door, NULL);

    ck_assert_int_eq(pc_chain_attach(s), 0);
    struct pc_txn *t = pc_txn_new(s);
    t->msg.spool_threshold = 1000;
    t->msg.spool_dir = spool;
    for (int i = 0; i < 5; i++) {
        char line[32];
        int n = snprintf(line, sizeof(line), "X-H%d: v", i);
        pc_msg_line(&t->msg, line, (size_t)n);
    }
    pc_msg_line(&t->msg, "", 0);
    pc_buf_reset(body);
    for (size_t i = 0; body->len < nbody; i++) {
        char line[80];
        int n = snprintf(line, sizeof(line), "line %zu of the body, to fill chunks", i);
        pc_msg_line(&t->msg, line, (size_t)n);
        pc_buf_append(body, line, (size_t)n);
        pc_buf_puts(body, "\r\n");
    }
    ck_assert_int_eq(pc_msg_finish(&t->msg), 0);
    pc_buf_reset(&seen);
    items = done_calls = 0;
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

START_TEST(body_chunks)
{
    struct pc_buf body;
    struct pc_verdict v;

    pc_buf_init(&body, 0);
    /* 0, one partial chunk, exactly one chunk's worth or so, several chunks. */
    static const size_t sizes[] = {0, 500, 65536, 200000};
    static const int want_items[] = {0, 1, 2, 4};
    for (size_t i = 0; i < 4; i++) {
        for (int pend = -1; pend < 2; pend++) {
            pend_at = pend;
            ck_assert_int_eq(run_stage(&body_ops, PC_STAGE_BODY, sizes[i], &body, &v), PC_CONTINUE);
            /* 65536 is reached by whole lines, so it spills into a second chunk. */
            size_t chunks = (body.len + 65535) / 65536;
            ck_assert_int_eq(items, (int)chunks);
            if (sizes[i] != 65536)
                ck_assert_int_eq(items, want_items[i]);
            ck_assert_msg(seen.len == body.len &&
                              (body.len == 0 || memcmp(seen.data, body.data, body.len) == 0),
                          "size %zu pend %d: saw %zu of %zu", sizes[i], pend, seen.len, body.len);
        }
    }
    pend_at = -1;
    pc_buf_free(&body);
}
END_TEST

START_TEST(header_and_once)
{
    struct pc_buf body;
    struct pc_verdict v;

    pc_buf_init(&body, 0);
    reject_at = -1;
    ck_assert_int_eq(run_stage(&header_ops, PC_STAGE_HEADER, 10, &body, &v), PC_CONTINUE);
    ck_assert_int_eq(items, 5);
    pc_buf_putc(&seen, 0);
    ck_assert_str_eq(seen.data, "X-H0,X-H1,X-H2,X-H3,X-H4,");
    reject_at = 2;
    ck_assert_int_eq(run_stage(&header_ops, PC_STAGE_HEADER, 10, &body, &v), PC_REJECT);
    ck_assert_int_eq(items, 3);
    ck_assert_str_eq(v.text, "bad header");
    reject_at = -1;
    ck_assert_int_eq(run_stage(&once_ops, PC_STAGE_EOH, 100000, &body, &v), PC_CONTINUE);
    ck_assert_int_eq(items, 1);
    ck_assert_int_eq(run_stage(&once_ops, PC_STAGE_EOM, 100000, &body, &v), PC_CONTINUE);
    ck_assert_int_eq(items, 1);
    /* A filter without a hook for the stage is not called. */
    ck_assert_int_eq(run_stage(&once_ops, PC_STAGE_BODY, 100000, &body, &v), PC_CONTINUE);
    ck_assert_int_eq(items, 0);
    pc_buf_free(&body);
}
END_TEST

/* main - run the suite */
int main(void)
{
    if (mkdtemp(spool) == NULL)
        return EXIT_FAILURE;
    base = event_base_new();
    svc.base = base;
    svc.hostname = "test.example";
    pc_log_init("test_stages", PC_LOG_STDERR, 0);
    pc_log_set_verbose(-1);
    pc_buf_init(&seen, 0);
    Suite *s = suite_create("stages");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, verdict_finish_table);
    tcase_add_test(tc, enh_parse_bounds);
    tcase_add_test(tc, stage_names);
    tcase_add_test(tc, body_chunks);
    tcase_add_test(tc, header_and_once);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    pc_buf_free(&seen);
    event_base_free(base);
    rmdir(spool);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
