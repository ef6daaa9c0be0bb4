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
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/chain.h"
#include "core/session.h"
#include "lib/log.h"
#include "lib/pool.h"
#include "rules/rules.h"
#include "rules/rules_int.h"

static const struct pc_rules_limits lim = {
    .match_limit = 100000,
    .depth_limit = 1000,
    .mime = {.max_depth = 5, .max_parts = 20, .max_text = 65536}};

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
    {"rule a at helo if helo exists then accept\n\x01", "t.rules:2:1: unexpected byte 0x01\n"},
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

    snprintf(text, cap, "rule x at helo if helo exists");
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
    {"rule r at body if body contains \"hello viagra WORLD\"", "plain", "192.0.2.7", true},
    {"rule r at body if body contains \"viagra worlds\"", "plain", "192.0.2.7", false},
    {"rule r at eom if body.raw contains \"vIaGrA\"", "plain", "192.0.2.7", true},
    {"rule r at mime if part.filename ~ /\\.exe$/i", "exe", "192.0.2.7", true},
    {"rule r at mime if part.filename == \"rechnung märz.pdf.exe\"", "exe", "192.0.2.7", true},
    {"rule r at mime if part.filename ~ /\\.exe$/i", "plain", "192.0.2.7", false},
    {"rule r at mime if body contains \"grüße\"", "exe", "192.0.2.7", true},
    {"rule r at mime if part.type == \"application/octet-stream\" and part.size == 33", "exe",
     "192.0.2.7", true},
    {"rule r at mime if part.encoding == \"base64\" and mime.parts == 2 and mime.depth == 1", "exe",
     "192.0.2.7", true},
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
    const char *m = evals[_i].msg == NULL               ? "Subject: x\n\nbody\n"
                    : strcmp(evals[_i].msg, "exe") == 0 ? msg_exe
                                                        : msg_plain;
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
    snprintf(text, sizeof(text),
             "%s/n.list:2:3: \"not-a-net\": not an IP address or network "
             "(e.g. 192.0.2.0/24, 2001:db8::/32)\n",
             dir);
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
    /* the text limit came first; it must not hide the parts limit behind it */
    ck_assert_uint_eq(m->limits, PC_MIME_LIM_TEXT | PC_MIME_LIM_PARTS);
    ck_assert_int_eq(m->nparts, 3);
    ck_assert_int_eq(m->text_len, 10);
    pc_mime_free(m);
    /* One text part that fills the limit exactly at the end of one of GMime's 4 KB reads and
     * goes on: its text was cut, so the limit is recorded, whether or not rules read sizes. */
    char exact[16384] = "Subject: x\n\n";
    size_t hl = strlen(exact);
    memset(exact + hl, 'a', 8192);
    for (unsigned skip = 0; skip <= PC_MIME_SKIP_SIZE; skip += PC_MIME_SKIP_SIZE) {
        struct pc_mime_limits el = {.max_depth = 3, .max_parts = 3, .max_text = 4096, .skip = skip};
        m = pc_mime_parse_buf(exact, hl + 8192, &el);
        ck_assert_uint_eq(m->limits, PC_MIME_LIM_TEXT);
        ck_assert_str_eq(m->limit, "text");
        ck_assert_int_eq(m->text_len, 4096);
        pc_mime_free(m);
    }
}
END_TEST

/* many_parts - a multipart with n text parts (the first with 2000 bytes), then an .exe */
static char *many_parts(int n)
{
    size_t cap = 8192 + (size_t)n * 64;
    char *msg = malloc(cap);
    size_t l = (size_t)snprintf(msg, cap,
                                "From: a@example.org\nMIME-Version: 1.0\n"
                                "Content-Type: multipart/mixed; boundary=b\n\n");
    for (int i = 0; i < n; i++) {
        l += (size_t)snprintf(msg + l, cap - l, "--b\nContent-Type: text/plain\n\n");
        for (int k = 0; i == 0 && k < 40; k++)
            l += (size_t)snprintf(msg + l, cap - l, "%s\n",
                                  "0123456789012345678901234567890123456789012345678");
        l += (size_t)snprintf(msg + l, cap - l, "part %d\n", i);
    }
    snprintf(msg + l, cap - l,
             "--b\nContent-Type: application/octet-stream\nContent-Disposition: attachment; "
             "filename=setup.exe\nContent-Transfer-Encoding: base64\n\nTVqQAAMAAAAE\n--b--\n");
    return msg;
}

/* eval_body - compile text with limits, run every stage over msg; the action */
static enum pc_action eval_body(const char *text, const struct pc_rules_limits *l, const char *msg,
                                struct pc_verdict *v, struct pc_session **sp)
{
    struct errs e;
    memset(&e, 0, sizeof(e));
    struct pc_rules *rs = pc_rules_compile_buf("t.rules", text, strlen(text), l, collect, &e);
    ck_assert_msg(rs != NULL, "%s", e.buf);
    struct pc_session *s = session_with("192.0.2.7", "a@example.org", "b@example.com", msg);
    struct pc_rules_run *run = pc_rules_run_new(rs);
    enum pc_action got = PC_CONTINUE;
    pc_verdict_clear(v);
    for (int st = 0; st < PC_RS_COUNT && got == PC_CONTINUE; st++)
        got = pc_rules_eval(rs, run, s, (enum pc_rstage)st, v);
    pc_rules_run_free(run);
    pc_rules_free(rs);
    if (sp)
        *sp = s;
    else
        pc_session_free(s);
    return got;
}

/* has_fact - does the fact have this value among its values */
static bool has_fact(struct pc_session *s, const char *name, const char *value)
{
    for (const struct pc_fact *f = pc_fact_next(s, name, NULL); f; f = pc_fact_next(s, name, f))
        if (strcmp(f->value, value) == 0)
            return true;
    return false;
}

/* Issue 13 section 4: an .exe past the parts or depth limit is not delivered by default. */
START_TEST(test_mime_limit_action)
{
    static const char *exe_rule = "rule banned at mime if part.filename ~ /\\.exe$/i "
                                  "then reject 550 5.7.1 \"exe\"\n";
    struct pc_rules_limits l = lim;
    struct pc_verdict v;
    struct pc_session *s;
    char *msg = many_parts(25); /* the .exe is part 26, past max_parts = 20 */

    /* default: reject 552 5.3.4, and the limit is a fact with every limit reached */
    l.mime.max_text = 1024; /* reached first, by the first part (a rule reads body) */
    char both[512];
    snprintf(both, sizeof(both), "%srule b at body if body contains \"zzz\" then score 1\n",
             exe_rule);
    ck_assert_int_eq(eval_body(both, &l, msg, &v, &s), PC_REJECT);
    ck_assert_int_eq(v.code, 552);
    ck_assert_int_eq(v.enh.cls, 5);
    ck_assert_int_eq(v.enh.subject, 3);
    ck_assert_int_eq(v.enh.detail, 4);
    ck_assert(has_fact(s, "mime.limit", "parts"));
    ck_assert(has_fact(s, "mime.limit", "text"));
    pc_session_free(s);
    l.mime.max_text = 65536;
    l.mime_limit_action = PC_MLA_TEMPFAIL;
    ck_assert_int_eq(eval_body(exe_rule, &l, msg, &v, NULL), PC_TEMPFAIL);
    ck_assert_int_eq(v.code, 451);
    l.mime_limit_action = PC_MLA_ACCEPT; /* the old behaviour, on request: a fact only */
    ck_assert_int_eq(eval_body(exe_rule, &l, msg, &v, NULL), PC_CONTINUE);
    /* a rule on the fact decides first */
    l.mime_limit_action = PC_MLA_REJECT;
    ck_assert_int_eq(eval_body("rule lim at mime if fact \"mime.limit\" == \"parts\" then "
                               "reject 550 5.7.0 \"too many\"\n",
                               &l, msg, &v, NULL),
                     PC_REJECT);
    ck_assert_int_eq(v.code, 550);
    ck_assert_str_eq(v.text, "too many"); /* v.rule points into the freed rule set */
    /* within the limit the exe rule itself refuses */
    l.mime.max_parts = 100;
    ck_assert_int_eq(eval_body(exe_rule, &l, msg, &v, NULL), PC_REJECT);
    ck_assert_int_eq(v.code, 550);
    /* rules that never read MIME do not parse it, and do not fail closed on it */
    l.mime.max_parts = 2;
    ck_assert_int_eq(
        eval_body("rule h at header if header \"X\" exists then score 1\n", &l, msg, &v, NULL),
        PC_CONTINUE);
    free(msg);
    /* depth 6 > max_depth 5 */
    char deep[4096] = "Content-Type: multipart/mixed; boundary=a0\n\n";
    for (int i = 0; i < 6; i++)
        snprintf(deep + strlen(deep), sizeof(deep) - strlen(deep),
                 "--a%d\nContent-Type: multipart/mixed; boundary=a%d\n\n", i, i + 1);
    strcat(deep, "--a6\nContent-Type: application/octet-stream\nContent-Disposition: "
                 "attachment; filename=x.exe\n\nMZ\n--a6--\n");
    l = lim;
    ck_assert_int_eq(eval_body(exe_rule, &l, deep, &v, NULL), PC_REJECT);
    ck_assert_int_eq(v.code, 552);
}
END_TEST

/* Issue 13 section 5: the header and body stages of one message share one CPU budget. */
START_TEST(test_cpu_budget)
{
    struct pc_rules_limits l = lim;
    struct pc_verdict v;
    struct pc_session *s;
    char *msg = malloc(1000 * 48 + 64), *p = msg;

    for (int i = 0; i < 900; i++)
        p += sprintf(p, "X-Junk: %s!\n", "aaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    memcpy(p, "Subject: x\n\nbody\n", sizeof("Subject: x\n\nbody\n"));
    static const char *evil = "rule evil at header if headers ~ /^X-Junk: (\\w+\\s?)*$/ then "
                              "score 1\nrule later at body if body contains \"body\" then "
                              "reject 550 5.7.1 \"x\"\n";
    l.match_limit = 1000000;
    l.cpu_budget_ms = 50;
    ck_assert_int_eq(eval_body(evil, &l, msg, &v, &s), PC_ERROR);
    ck_assert_int_eq(v.code, 451);
    ck_assert_str_eq(v.rule, "cpu_budget");
    ck_assert(has_fact(s, "rules.budget", "exceeded"));
    pc_session_free(s);
    /* without a budget the same rules run to their end (each call bounded by its limit) */
    l.cpu_budget_ms = 0;
    l.match_limit = 1000;
    ck_assert_int_eq(eval_body(evil, &l, msg, &v, NULL), PC_REJECT);
    free(msg);
}
END_TEST

/* 30,000 nested multiparts keep GMime's parser busy: the parse is cut at the budget. */
START_TEST(test_mime_parse_budget)
{
    int depth = 30000;
    size_t cap = (size_t)depth * 70 + 256, l = 0;
    char *msg = malloc(cap);
    l += (size_t)snprintf(msg + l, cap - l, "Content-Type: multipart/mixed; boundary=n0\n\n");
    for (int i = 0; i < depth - 1; i++)
        l += (size_t)snprintf(msg + l, cap - l,
                              "--n%d\nContent-Type: multipart/mixed; "
                              "boundary=n%d\n\n",
                              i, i + 1);
    l += (size_t)snprintf(msg + l, cap - l, "--n%d\nContent-Type: text/plain\n\nhi\n", depth - 1);
    for (int i = depth - 1; i >= 0 && l + 16 < cap; i--)
        l += (size_t)snprintf(msg + l, cap - l, "--n%d--\n", i);
    struct pc_rules_limits bl = lim;
    bl.cpu_budget_ms = 20;
    bl.mime.max_depth = 1000;
    struct pc_verdict v;
    struct pc_session *s;
    ck_assert_int_eq(eval_body("rule r at mime if part.filename ~ /\\.exe$/ then reject 550 5.7.1 "
                               "\"x\"\n",
                               &bl, msg, &v, &s),
                     PC_ERROR);
    ck_assert(has_fact(s, "mime.limit", "budget"));
    ck_assert(has_fact(s, "rules.budget", "exceeded"));
    pc_session_free(s);
    free(msg);
}
END_TEST

/* Issue 14: the MIME view computes only what the rules read. */
START_TEST(test_mime_skip)
{
    struct errs e;
    struct pc_rules *rs = compile("rule r at mime if part.filename ~ /x/ then score 1\n", &e);
    ck_assert_ptr_nonnull(rs);
    ck_assert(pc_rules_needs_mime(rs));
    const struct pc_mime_limits *ml = pc_rules_mime_limits(rs);
    ck_assert_uint_eq(ml->skip, PC_MIME_SKIP_TEXT | PC_MIME_SKIP_SIZE);
    struct pc_mime *m = pc_mime_parse_buf(msg_exe, strlen(msg_exe), ml);
    ck_assert_int_eq(m->nparts, 2);
    ck_assert_int_eq(m->text_len, 0);
    ck_assert_int_eq(m->parts[1].size, 0);
    ck_assert_str_eq(m->parts[1].filename, "rechnung märz.pdf.exe");
    pc_mime_free(m);
    pc_rules_free(rs);
    rs = compile("rule r at mime if part.size > 1 or body contains \"x\" then score 1\n", &e);
    ck_assert_uint_eq(pc_rules_mime_limits(rs)->skip, 0);
    pc_rules_free(rs);
    rs = compile("rule r at eom if fact \"spf\" == \"fail\" then score 1\n", &e);
    ck_assert(!pc_rules_needs_mime(rs));
    pc_rules_free(rs);
}
END_TEST

/* The literal prefilter: what it derives, and nothing it derives can hide a match. */
static const struct {
    const char *pat;
    uint32_t flags;
    const char *lits; /* "a|b", or NULL: no prefilter */
} prefilters[] = {
    {"\\b(viagra|cialis|levitra|pharmacy online)\\b", PCRE2_CASELESS,
     "viagra|ciali|levitra|pharmacy online"},
    {"\\b(next of kin|beneficiary|transfer of (the )?sum|million (united states )?dollars)\\b",
     PCRE2_CASELESS, "next of |beneficiary|fer of |million "},
    /* caseless k and s may be matched by U+212A and U+017F: they end a literal */
    {"click (here|below) to (unsubscribe|be removed)", PCRE2_CASELESS, "cribe|be removed"},
    {"click (here|below) to (unsubscribe|be removed)", 0, "unsubscribe|be removed"},
    {"abc?def", 0, "def"},
    {"abc+de", 0, "abc"},
    {"ab+cd", 0, NULL},
    {"x(foo|bar)?yz", 0, NULL},
    {"(foo|ba)", 0, NULL},
    {"(?i)viagra", 0, NULL},
    {"viagra", PCRE2_EXTENDED, NULL},
    {"[a-z]+\\.exe\\b", 0, ".exe"},
    {"a{0,3}bcd", 0, "bcd"},
    {"a{2}bcd", 0, "bcd"},
    {"q{x", 0, NULL},
    {"\\x41bcd", 0, NULL},
    {"(foo)|bar|(baz|qux)", 0, "foo|bar|baz|qux"},
    {"foo|.*", 0, NULL},
};

START_TEST(test_prefilter_derive)
{
    struct pc_pool *pool = pc_pool_create(4096);
    struct rl_node n;
    char got[256];

    memset(&n, 0, sizeof(n));
    bool have = pc_rl_prefilter(pool, &n, prefilters[_i].pat, strlen(prefilters[_i].pat),
                                prefilters[_i].flags);
    got[0] = 0;
    for (size_t i = 0; have && i < n.nlits; i++)
        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", i ? "|" : "", n.lit_strs[i]);
    if (prefilters[_i].lits == NULL)
        ck_assert_msg(!have, "%s: got %s", prefilters[_i].pat, got);
    else
        ck_assert_msg(have && strcmp(got, prefilters[_i].lits) == 0, "%s: got \"%s\"",
                      prefilters[_i].pat, got);
    pc_pool_destroy(pool);
}
END_TEST

/* Random patterns and subjects: whenever the regex matches, the prefilter must let it run. */
START_TEST(test_prefilter_sound)
{
    static const char *atoms[] = {"a",    "b",   "k",   "s",   "ab",  "bk",  " ",     "(",
                                  ")",    "|",   "?",   "*",   "+",   "{2}", "{0,1}", ".",
                                  "[ab]", "\\b", "\\w", "(?:", "\\.", "A",   "S"};
    static const char *sub_atoms[] = {
        "a",       "b", "k", "s", "A", "B", "K", "S", " ", ".", "\xe2\x84\xaa" /* KELVIN SIGN */,
        "\xc5\xbf" /* LONG S */};
    unsigned seed = 12345;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int checked = 0;

    for (int round = 0; round < 20000; round++) {
        char pat[128] = "", subj[256] = "";
        int na = 1 + (int)(rand_r(&seed) % 6);
        for (int i = 0; i < na; i++)
            strcat(pat, atoms[rand_r(&seed) % (sizeof(atoms) / sizeof(atoms[0]))]);
        uint32_t flags = (rand_r(&seed) & 1) ? PCRE2_CASELESS : 0;
        int ec;
        PCRE2_SIZE off;
        pcre2_code *re =
            pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                          flags | PCRE2_UTF | PCRE2_MATCH_INVALID_UTF, &ec, &off, NULL);
        if (re == NULL)
            continue;
        struct pc_pool *pool = pc_pool_create(4096);
        struct rl_node n;
        memset(&n, 0, sizeof(n));
        if (pc_rl_prefilter(pool, &n, pat, strlen(pat), flags)) {
            for (int k = 0; k < 50; k++) {
                subj[0] = 0;
                int ns = (int)(rand_r(&seed) % 6);
                for (int i = 0; i < ns; i++)
                    strcat(subj,
                           sub_atoms[rand_r(&seed) % (sizeof(sub_atoms) / sizeof(sub_atoms[0]))]);
                /* the pattern's letters, in any case, k and s sometimes as their Unicode
                 * caseless partners: many of these match, which is what we want to check */
                for (const char *c = pat; *c && strlen(subj) < sizeof(subj) - 8; c++) {
                    if (!isalpha((unsigned char)*c) && *c != ' ' && *c != '.')
                        continue;
                    unsigned r = rand_r(&seed) % 4;
                    char one[2] = {r == 1 ? (char)toupper((unsigned char)*c) : *c, 0};
                    if (r == 3 && (*c == 'k' || *c == 'K'))
                        strcat(subj, "\xe2\x84\xaa");
                    else if (r == 3 && (*c == 's' || *c == 'S'))
                        strcat(subj, "\xc5\xbf");
                    else
                        strcat(subj, one);
                }
                if (pcre2_match(re, (PCRE2_SPTR)subj, strlen(subj), 0, 0, md, NULL) >= 0) {
                    checked++;
                    ck_assert_msg(pc_rl_prefilter_pass(&n, subj, strlen(subj), md),
                                  "pattern /%s/%s matches \"%s\" but the prefilter said no", pat,
                                  flags ? "i" : "", subj);
                }
            }
        }
        pc_pool_destroy(pool);
        pcre2_code_free(re);
    }
    ck_assert_int_gt(checked, 500);
    pcre2_match_data_free(md);
}
END_TEST

/* Body searches are JIT-compiled where the library has a JIT (Debian's amd64 build has). */
START_TEST(test_jit)
{
    uint32_t jit = 0;
    struct errs e;
    size_t size = 0;

    pcre2_config(PCRE2_CONFIG_JIT, &jit);
    if (!jit)
        return;
    struct pc_rules *rs = compile("rule a at body if body ~ /\\b(viagra|cialis)\\b/i then score 1\n"
                                  "rule b at body if body contains \"GTUBE\" then score 1\n",
                                  &e);
    ck_assert_ptr_nonnull(rs);
    for (int i = 0; i < 2; i++) {
        const pcre2_code *re = rs->rules[PC_RS_BODY][i]->cond->re;
        ck_assert_ptr_nonnull(re);
        ck_assert_int_eq(pcre2_pattern_info(re, PCRE2_INFO_JITSIZE, &size), 0);
        ck_assert_uint_gt(size, 0);
    }
    pc_rules_free(rs);
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
    tcase_add_test(tc, test_mime_limit_action);
    tcase_add_test(tc, test_cpu_budget);
    tcase_add_test(tc, test_mime_skip);
    tcase_add_test(tc, test_mime_parse_budget);
    tcase_add_test(tc, test_jit);
    tcase_add_loop_test(tc, test_prefilter_derive, 0, sizeof(prefilters) / sizeof(prefilters[0]));
    tcase_add_test(tc, test_prefilter_sound);
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
