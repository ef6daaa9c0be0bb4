/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_rules 1 - rule parser, evaluator, lists and MIME view
 * DESCRIPTION
 *	Tables of rule texts with the errors they must produce (file, line,
 *	column and message), of conditions with the messages they must and
 *	must not match, list lookups, and MIME part extraction with limits.
 */
#include <arpa/inet.h>
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/session.h"
#include "lib/log.h"
#include "lib/pool.h"
#include "rules/rules.h"
#include "rules/rules_int.h"

static const struct pc_rules_limits lim = {
    .match_limit = 100000, .depth_limit = 1000, .mime = {.max_depth = 5, .max_parts = 20,
                                                          .max_text = 65536}};

struct errs {
    char buf[4096];
    int n;
};

/* collect - error callback */
static void collect(void *arg, const char *msg)
{
    struct errs *e = arg;
    size_t l = strlen(e->buf);

    snprintf(e->buf + l, sizeof(e->buf) - l, "%s\n", msg);
    e->n++;
}

/* compile - one in-memory rule file */
static struct pc_rules *compile(const char *text, struct errs *e)
{
    memset(e, 0, sizeof(*e));
    return pc_rules_compile_buf("t.rules", text, strlen(text), &lim, collect, e);
}

static const char *const good[] = {
    "rule a at connect if client.ip in \"192.0.2.0/24\" then reject",
    "rule a at helo if helo ~ /^\\[?[0-9.]+\\]?$/ then score 2",
    "rule a at mail if from.domain == \"example.com\" and not auth exists then tempfail 451 4.7.1 "
    "\"later\"",
    "rule a log-only at rcpt if rcpt.count > 10 or rcpt.local ~ /^(abuse|postmaster)$/i then "
    "accept",
    "rule a at header if header \"Subject\" contains \"free\" then score 1.5, add-header "
    "\"X-A\" \"1\", remove-header \"X-B\"",
    "rule a at body if (body ~ /x/s or body.raw contains \"y\") and size >= 10k then discard",
    "rule a at mime if part.filename ~ /\\.exe$/i and part.size < 1M then reject 550 5.7.1 \"no\"",
    "rule a at eom if fact \"spf\" == \"fail\" and score > 3 then score -1",
    "score-header \"X-Score\"\nthreshold 5 add-header \"X-Spam\" \"yes\"\nthreshold 10 reject",
    "# only a comment\n",
    "rule a at eom if mime.parts > 50 or mime.depth >= 4 or part.type == \"text/html\" then "
    "score 1",
};

START_TEST(test_good)
{
    struct errs e;
    struct pc_rules *rs = compile(good[_i], &e);

    ck_assert_msg(rs != NULL, "rule %d did not compile: %s", _i, e.buf);
    ck_assert_int_eq(e.n, 0);
    pc_rules_free(rs);
}
END_TEST

static const struct {
    const char *text;
    const char *errors; /* every error, in order */
} bad[] = {
    {"rule a at mail if header \"X\" exists then accept",
     "t.rules:1:19: header is not known yet at stage mail (earliest stage: header)\n"},
    {"rule a at nowhere if helo exists then accept",
     "t.rules:1:11: unknown stage \"nowhere\" (connect, helo, mail, rcpt, header, eoh, body, "
     "mime, eom)\n"},
    {"rule a at helo if helo ~ /(x/ then accept",
     "t.rules:1:29: bad regular expression: missing closing parenthesis\n"},
    {"rule a at helo if helo = \"x\" then accept",
     "t.rules:1:24: unknown operator \"=\" (did you mean ==?)\n"},
    {"rule a at helo if helo == \"x\" then reject 450",
     "t.rules:1:43: reply code \"450\" must be 5xx for reject\n"},
    {"rule a at helo if helo == \"x\" then reject 550 4.7.1",
     "t.rules:1:47: enhanced status code \"4.7.1\" must look like 5.7.1 (RFC 3463)\n"},
    /* every error is reported, not just the first */
    {"rule a at helo if nosuch == \"x\" then accept\n"
     "rule b at helo if helo == \"x\" then frobnicate\n"
     "rule a at helo if helo == \"y\" then accept\n"
     "rule a at helo if helo == \"z\" then accept\n",
     "t.rules:1:19: unknown field \"nosuch\"\n"
     "t.rules:2:36: unknown action \"frobnicate\" (accept, reject, tempfail, discard, "
     "add-header, remove-header, score)\n"
     "t.rules:4:6: rule \"a\" is already defined at t.rules:3\n"},
    {"rule a at helo if helo == \"x\" then add-header \"X\" \"y\"",
     "t.rules:1:36: add-header works from stage mail on, not at helo\n"},
    {"rule a at rcpt if rcpt in list nope then accept",
     "t.rules:1:32: no list named \"nope\" (declare it with \"list\" before the rule)\n"},
    {"rule a at eom if size ~ /1/ then accept",
     "t.rules:1:23: size is a number; use ==, <, > and such\n"},
    {"rule a at eom if (size > 1 then accept",
     "t.rules:1:28: expected \")\" to close the \"(\" at 1:18, found \"then\"\n"},
    {"rule a at eom if header \"S\" == \"x then accept",
     "t.rules:1:32: unterminated string (strings end on the same line)\n"
     "t.rules:1:46: expected \"then\" and the actions after the condition, found end of file\n"},
    {"threshold 5 remove-header \"X\"\nrule",
     "t.rules:1:13: a threshold can accept, reject, tempfail, discard or add-header\n"
     "t.rules:2:5: expected a rule name after \"rule\", found end of file\n"},
    {"foo\nrule a at helo if helo exists then accept",
     "t.rules:1:1: expected rule, list, threshold or score-header, found \"foo\"\n"},
    {"rule a at helo if helo ~ /x/q then accept",
     "t.rules:1:29: unknown regular expression flag 'q' (i, m, s, x)\n"},
    {"list l things \"x\"", "t.rules:1:8: expected the list kind (domains, addresses or cidrs), "
                            "found \"things\"\n"},
    {"rule a at helo if helo exists then accept\n\x01",
     "t.rules:2:1: unexpected byte 0x01\n"},
    {"rule a at connect if client.ip in \"300.1.1.1/8\" then accept",
     "t.rules:1:35: bad network \"300.1.1.1/8\"\n"},
};

START_TEST(test_bad)
{
    struct errs e;
    struct pc_rules *rs = compile(bad[_i].text, &e);

    ck_assert_msg(rs == NULL, "case %d compiled", _i);
    ck_assert_str_eq(e.buf, bad[_i].errors);
}
END_TEST

START_TEST(test_long_condition)
{
    size_t cap = 1100 * 20 + 100;
    char *text = malloc(cap);
    struct errs e;

    strcpy(text, "rule x at helo if helo exists");
    for (int i = 0; i < 1100; i++)
        strcat(text, " and helo exists");
    strcat(text, " then accept");
    struct pc_rules *rs = compile(text, &e);
    ck_assert_ptr_null(rs);
    ck_assert_int_eq(e.n, 1);
    ck_assert_ptr_nonnull(strstr(e.buf, "condition too long (at most 1000 tests)"));
    free(text);
}
END_TEST

START_TEST(test_many_errors_bounded)
{
    char *text = malloc(200 * 40 + 1);
    struct errs e;

    text[0] = 0;
    for (int i = 0; i < 200; i++)
        strcat(text, "rule x at helo if bogus then accept\n");
    memset(&e, 0, sizeof(e));
    struct pc_rules *rs = pc_rules_compile_buf("t.rules", text, strlen(text), &lim, collect, &e);
    ck_assert_ptr_null(rs);
    ck_assert_int_le(e.n, 100);
    ck_assert_ptr_nonnull(strstr(e.buf, "too many errors"));
    free(text);
}
END_TEST

/* session_with - a session with one transaction and a message */
static struct pc_session *session_with(const char *ip, const char *from, const char *rcpt,
                                       const char *msg)
{
    struct pc_session *s = pc_session_new(NULL, NULL, "t", NULL, NULL, NULL);
    struct sockaddr_in in = {.sin_family = AF_INET};
    size_t end;

    inet_pton(AF_INET, ip, &in.sin_addr);
    pc_session_set_client(s, (struct sockaddr *)&in, sizeof(in));
    s->helo = "mail.example.org";
    struct pc_txn *t = pc_txn_new(s);
    char *p = pc_pool_printf(t->pool, "<%s>", from);
    ck_assert_ptr_null(pc_path_parse(p, strlen(p), t->pool, &t->from, &end));
    struct pc_mailbox mb;
    p = pc_pool_printf(t->pool, "<%s>", rcpt);
    ck_assert_ptr_null(pc_path_parse(p, strlen(p), t->pool, &mb, &end));
    t->cur_rcpt = pc_txn_add_rcpt(t, &mb, "");
    for (const char *l = msg; *l;) {
        const char *nl = strchr(l, '\n');
        size_t n = nl ? (size_t)(nl - l) : strlen(l);
        pc_msg_line(&t->msg, l, n);
        l += n + (nl != NULL);
    }
    pc_msg_finish(&t->msg);
    return s;
}

static const char *msg_plain = "From: a@example.org\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= free\n"
                               "Date: x\n\nHello VIAGRA world\n";
static const char *msg_exe =
    "From: a@example.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n"
    "--b\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: "
    "quoted-printable\n\nGr=FC=DFe\n"
    "--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment;\n"
    " filename*=utf-8''rechnung%20m%C3%A4rz.pdf.exe\nContent-Transfer-Encoding: base64\n\n"
    "TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAA\n--b--\n";

static const struct {
    const char *stage_rule;
    const char *msg;
    const char *ip;
    bool match;
} evals[] = {
    {"rule r at connect if client.ip in \"192.0.2.0/24\"", NULL, "192.0.2.7", true},
    {"rule r at connect if client.ip in \"192.0.2.0/24\"", NULL, "198.51.100.1", false},
    {"rule r at connect if client.ip == \"192.0.2.7\"", NULL, "192.0.2.7", true},
    {"rule r at helo if helo ~ /example\\.org$/", NULL, "192.0.2.7", true},
    {"rule r at mail if from.domain == \"EXAMPLE.org\"", NULL, "192.0.2.7", true},
    {"rule r at mail if from.local != \"a\"", NULL, "192.0.2.7", false},
    {"rule r at rcpt if rcpt.domain == \"example.com\" and rcpt.count == 1", NULL, "192.0.2.7",
     true},
    {"rule r at mail if auth exists", NULL, "192.0.2.7", false},
    {"rule r at header if header \"Subject\" contains \"grüße\"", "plain", "192.0.2.7", true},
    {"rule r at header if header.raw \"Subject\" contains \"grüße\"", "plain", "192.0.2.7", false},
    {"rule r at header if header \"subject\" ~ /free$/", "plain", "192.0.2.7", true},
    {"rule r at header if header \"Message-ID\" exists", "plain", "192.0.2.7", false},
    {"rule r at header if not header \"Message-ID\" exists and header \"Date\" exists", "plain",
     "192.0.2.7", true},
    {"rule r at body if body ~ /\\bviagra\\b/i", "plain", "192.0.2.7", true},
    {"rule r at header if headers ~ /^Date: x$/", "plain", "192.0.2.7", true},
    {"rule r at header if headers ~ /^X-Mailer:/i", "plain", "192.0.2.7", false},
    {"rule r at body if body ~ /\\bviagra\\b/", "plain", "192.0.2.7", false},
    {"rule r at mime if part.filename ~ /\\.exe$/i", "exe", "192.0.2.7", true},
    {"rule r at mime if part.filename == \"rechnung märz.pdf.exe\"", "exe", "192.0.2.7", true},
    {"rule r at mime if part.filename ~ /\\.exe$/i", "plain", "192.0.2.7", false},
    {"rule r at mime if body contains \"grüße\"", "exe", "192.0.2.7", true},
    {"rule r at mime if part.type == \"application/octet-stream\" and part.size == 33", "exe",
     "192.0.2.7", true},
    {"rule r at mime if part.encoding == \"base64\" and mime.parts == 2 and mime.depth == 1",
     "exe", "192.0.2.7", true},
    {"rule r at mime if part.disposition == \"attachment\" and part.charset == \"iso-8859-1\"",
     "exe", "192.0.2.7", true},
    {"rule r at eom if size > 100 and size < 1k", "exe", "192.0.2.7", true},
    {"rule r at eom if body.raw contains \"TVqQ\"", "exe", "192.0.2.7", true},
};

START_TEST(test_eval)
{
    char text[1024];
    struct errs e;

    snprintf(text, sizeof(text), "%s then reject 550 5.7.1 \"hit\"", evals[_i].stage_rule);
    struct pc_rules *rs = compile(text, &e);
    ck_assert_msg(rs != NULL, "%s: %s", text, e.buf);
    const char *m = evals[_i].msg == NULL ? "Subject: x\n\nbody\n"
                    : strcmp(evals[_i].msg, "exe") == 0 ? msg_exe : msg_plain;
    struct pc_session *s = session_with(evals[_i].ip, "a@example.org", "b@example.com", m);
    struct pc_rules_run *run = pc_rules_run_new(rs);
    struct pc_verdict v;
    enum pc_action got = PC_CONTINUE;
    pc_verdict_clear(&v);
    for (int st = 0; st < PC_RS_COUNT && got == PC_CONTINUE; st++)
        got = pc_rules_eval(rs, run, s, (enum pc_rstage)st, &v);
    ck_assert_msg((got == PC_REJECT) == evals[_i].match, "case %d (%s): got %s", _i, text,
                  pc_action_name(got));
    if (evals[_i].match) {
        ck_assert_int_eq(v.code, 550);
        ck_assert_str_eq(v.text, "hit");
        ck_assert_str_eq(v.rule, "r");
        ck_assert_str_eq(pc_fact_get(s, "rule"), "r");
    }
    pc_rules_run_free(run);
    pc_session_free(s);
    pc_rules_free(rs);
}
END_TEST

START_TEST(test_scores_thresholds)
{
    struct errs e;
    struct pc_rules *rs = compile("score-header \"X-Portcullis-Score\"\n"
                                  "threshold 5 add-header \"X-Spam-Flag\" \"YES\"\n"
                                  "threshold 10 reject 554 5.7.1 \"spam\"\n"
                                  "rule rule_a at header if header \"Subject\" exists then "
                                  "score 3.5\n"
                                  "rule rule_b at body if body contains \"viagra\" then score 4\n"
                                  "rule rule_c log-only at body if body contains \"hello\" then "
                                  "score 100\n",
                                  &e);
    ck_assert_msg(rs != NULL, "%s", e.buf);
    struct pc_session *s = session_with("192.0.2.1", "a@example.org", "b@example.com", msg_plain);
    struct pc_rules_run *run = pc_rules_run_new(rs);
    struct pc_verdict v;
    pc_verdict_clear(&v);
    ck_assert_int_eq(pc_rules_eval(rs, run, s, PC_RS_HEADER, &v), PC_CONTINUE);
    ck_assert_int_eq(pc_rules_eval(rs, run, s, PC_RS_BODY, &v), PC_CONTINUE);
    ck_assert(pc_score_total(s) == 7.5);
    const struct pc_hdr_add *a = s->txn->msg.added;
    int seen = 0;
    for (; a; a = a->next) {
        if (strcmp(a->name, "X-Portcullis-Score") == 0) {
            ck_assert_str_eq(a->value, "7.5 (rule_a=3.5, rule_b=4)");
            seen |= 1;
        }
        if (strcmp(a->name, "X-Spam-Flag") == 0)
            seen |= 2;
    }
    ck_assert_int_eq(seen, 3);
    /* a second round adds 7.5 more: now over 10 */
    ck_assert_int_eq(pc_rules_eval(rs, run, s, PC_RS_HEADER, &v), PC_CONTINUE);
    ck_assert_int_eq(pc_rules_eval(rs, run, s, PC_RS_BODY, &v), PC_REJECT);
    ck_assert_int_eq(v.code, 554);
    pc_rules_run_free(run);
    pc_session_free(s);
    pc_rules_free(rs);
}
END_TEST

START_TEST(test_lists)
{
    char dir[] = "/tmp/pc-test-lists-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char path[256], rpath[256], text[1024];
    FILE *f;
    snprintf(path, sizeof(path), "%s/d.list", dir);
    f = fopen(path, "w");
    fputs("# domains\nexample.com\n.spam.test  # and subdomains\nGMAIL.com\n", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/n.list", dir);
    f = fopen(path, "w");
    fputs("192.0.2.0/24\n2001:db8::/32\n198.51.100.7\n", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/a.list", dir);
    f = fopen(path, "w");
    fputs("Boss@Example.com\n", f);
    fclose(f);
    snprintf(rpath, sizeof(rpath), "%s/t.rules", dir);
    f = fopen(rpath, "w");
    fputs("list d domains \"d.list\"\nlist n cidrs \"n.list\"\nlist a addresses \"a.list\"\n", f);
    fclose(f);
    const char *files[] = {rpath};
    struct errs e;
    memset(&e, 0, sizeof(e));
    struct pc_rules *rs = pc_rules_compile(files, 1, &lim, collect, &e);
    ck_assert_msg(rs != NULL, "%s", e.buf);
    const struct rl_list *d = rs->lists[0], *n = rs->lists[1], *a = rs->lists[2];
    ck_assert(pc_rl_list_has(d, "example.com"));
    ck_assert(pc_rl_list_has(d, "Example.COM."));
    ck_assert(!pc_rl_list_has(d, "www.example.com"));
    ck_assert(pc_rl_list_has(d, "a.b.spam.test"));
    ck_assert(!pc_rl_list_has(d, "spam.test"));
    ck_assert(pc_rl_list_has(d, "gmail.com"));
    ck_assert(!pc_rl_list_has(d, "notgmail.com"));
    ck_assert(pc_rl_list_has(a, "boss@example.com"));
    ck_assert(!pc_rl_list_has(a, "other@example.com"));
    struct pc_ip ip;
    ck_assert(pc_ip_parse("192.0.2.200", &ip) && pc_rl_list_has_ip(n, &ip));
    ck_assert(pc_ip_parse("192.0.3.1", &ip) && !pc_rl_list_has_ip(n, &ip));
    ck_assert(pc_ip_parse("198.51.100.7", &ip) && pc_rl_list_has_ip(n, &ip));
    ck_assert(pc_ip_parse("198.51.100.8", &ip) && !pc_rl_list_has_ip(n, &ip));
    ck_assert(pc_ip_parse("2001:db8:1::5", &ip) && pc_rl_list_has_ip(n, &ip));
    ck_assert(pc_ip_parse("2001:db9::5", &ip) && !pc_rl_list_has_ip(n, &ip));
    pc_rules_free(rs);
    /* a bad entry names the list file, line and column */
    snprintf(path, sizeof(path), "%s/n.list", dir);
    f = fopen(path, "w");
    fputs("10.0.0.0/8\n  not-a-net\n", f);
    fclose(f);
    snprintf(text, sizeof(text), "%s/n.list:2:3: \"not-a-net\": not an IP address or network "
             "(e.g. 192.0.2.0/24, 2001:db8::/32)\n", dir);
    memset(&e, 0, sizeof(e));
    rs = pc_rules_compile(files, 1, &lim, collect, &e);
    ck_assert_ptr_null(rs);
    ck_assert_str_eq(e.buf, text);
    snprintf(text, sizeof(text), "rm -rf %s", dir);
    ck_assert_int_eq(system(text), 0);
}
END_TEST

START_TEST(test_mime_limits)
{
    struct pc_mime_limits ml = {.max_depth = 3, .max_parts = 3, .max_text = 10};
    char msg[8192] = "Content-Type: multipart/mixed; boundary=a0\n\n";
    /* nesting 6 deep */
    for (int i = 0; i < 6; i++)
        snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg),
                 "--a%d\nContent-Type: multipart/mixed; boundary=a%d\n\n", i, i + 1);
    strcat(msg, "--a6\nContent-Type: text/plain\n\nhello\n--a6--\n");
    struct pc_mime *m = pc_mime_parse_buf(msg, strlen(msg), &ml);
    ck_assert_str_eq(m->limit, "depth");
    ck_assert_int_eq(m->nparts, 0);
    pc_mime_free(m);
    const char *many = "Content-Type: multipart/mixed; boundary=b\n\n"
                       "--b\n\none one one\n--b\n\ntwo\n--b\n\nthree\n--b\n\nfour\n--b--\n";
    m = pc_mime_parse_buf(many, strlen(many), &ml);
    ck_assert_str_eq(m->limit, "text");
    ck_assert_int_eq(m->nparts, 3);
    ck_assert_int_eq(m->text_len, 10);
    pc_mime_free(m);
}
END_TEST

/* suite - every case */
static Suite *suite(void)
{
    Suite *s = suite_create("rules");
    TCase *tc = tcase_create("core");

    tcase_add_loop_test(tc, test_good, 0, sizeof(good) / sizeof(good[0]));
    tcase_add_loop_test(tc, test_bad, 0, sizeof(bad) / sizeof(bad[0]));
    tcase_add_test(tc, test_many_errors_bounded);
    tcase_add_test(tc, test_long_condition);
    tcase_add_loop_test(tc, test_eval, 0, sizeof(evals) / sizeof(evals[0]));
    tcase_add_test(tc, test_scores_thresholds);
    tcase_add_test(tc, test_lists);
    tcase_add_test(tc, test_mime_limits);
    suite_add_tcase(s, tc);
    return s;
}

/* main - run the suite */
int main(void)
{
    pc_log_init("test_rules", PC_LOG_STDERR, 0);
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
