/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_rules 1 - arbitrary rule files through the parser, compiler and evaluator
 * DESCRIPTION
 *	Each input is compiled as a rule file (errors are counted, not
 *	printed); when it compiles, every stage is evaluated against a fixed
 *	session and a small multipart message. Invariant: no crash, no leak,
 *	and a failed compile reports at least one error.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/chain.h"
#include "core/session.h"
#include "lib/log.h"
#include "lib/pool.h"
#include "rules/rules.h"

static const struct pc_rules_limits lim = {
    .match_limit = 10000,
    .depth_limit = 1000,
    .mime = {.max_depth = 8, .max_parts = 50, .max_text = 65536}};

static const char msg[] =
    "From: a@example.org\r\nSubject: =?utf-8?q?hi?=\r\nMIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
    "hello viagra\r\n--b\r\nContent-Type: application/octet-stream\r\n"
    "Content-Disposition: attachment; filename=x.exe\r\n\r\nMZ\r\n--b--\r\n";

/* count - error callback */
static void count(void *arg, const char *m)
{
    (void)m;
    (*(int *)arg)++;
}

/* session - a fixed session with a transaction and the message */
static struct pc_session *session(void)
{
    struct pc_session *s = pc_session_new(NULL, NULL, "fuzz", NULL, NULL, NULL);
    struct sockaddr_in in = {.sin_family = AF_INET};
    size_t end;

    inet_pton(AF_INET, "192.0.2.1", &in.sin_addr);
    pc_session_set_client(s, (struct sockaddr *)&in, sizeof(in));
    s->helo = "helo.example";
    struct pc_txn *t = pc_txn_new(s);
    pc_path_parse("<a@example.org>", 15, t->pool, &t->from, &end);
    struct pc_mailbox mb;
    pc_path_parse("<b@example.com>", 15, t->pool, &mb, &end);
    t->cur_rcpt = pc_txn_add_rcpt(t, &mb, "");
    pc_fact_add(s, "spf", "fail");
    for (const char *l = msg; *l;) {
        const char *nl = strstr(l, "\r\n");
        pc_msg_line(&t->msg, l, (size_t)(nl - l));
        l = nl + 2;
    }
    pc_msg_finish(&t->msg);
    return s;
}

/* LLVMFuzzerTestOneInput - one rule file */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int nerr = 0;
    static bool quiet;

    if (!quiet) {
        pc_log_init("fuzz", PC_LOG_STDERR, 0);
        if (getenv("PC_FUZZ_VERBOSE") == NULL)
            pc_log_set_verbose(-1); /* errors and warnings only: keep libFuzzer's output */
        quiet = true;
    }
    struct pc_rules *rs =
        pc_rules_compile_buf("fuzz.rules", (const char *)data, size, &lim, count, &nerr);
    if (rs == NULL) {
        if (nerr == 0)
            abort();
        return 0;
    }
    struct pc_session *s = session();
    struct pc_rules_run *run = pc_rules_run_new(rs);
    struct pc_verdict v;
    for (int st = 0; st < PC_RS_COUNT; st++) {
        pc_verdict_clear(&v);
        pc_rules_eval(rs, run, s, (enum pc_rstage)st, &v);
    }
    pc_rules_run_free(run);
    pc_session_free(s);
    pc_rules_free(rs);
    return 0;
}
