/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	testcmd 8 - "portcullis test": run the whole chain on a message, no network client
 * SYNOPSIS
 *	portcullis test -c FILE [--listener NAME] [--client-ip IP] [--client-name NAME]
 *		[--helo NAME] [--auth USER] [--from ADDR] [--rcpt ADDR]... [-q] MESSAGE.eml
 *	portcullis test -c FILE [-v] DIR|FILE.test...
 *	portcullis test -c FILE --bench N MESSAGE...
 * DESCRIPTION
 *	A "test" front door: it builds a session exactly as the SMTP door
 *	does (same configuration, same listener chain), runs every stage
 *	from connect to end of message, and feeds the message through the
 *	spool with pc_msg_line(). A pending filter (DNS, Redis) is waited for
 *	by running the event loop. Nothing is delivered.
 *
 *	It prints each stage's verdict, each rule that matched with the
 *	scores, the headers that would be added, and the final SMTP reply.
 *	Exit status: 0 accepted, 1 rejected, 2 tempfailed, 3 discarded,
 *	64 (EX_USAGE) usage error, 78 (EX_CONFIG) configuration or input error.
 *
 *	DNS filters resolve as the daemon does (dns.nameservers, else
 *	resolv.conf); with --dns-zone FILE they are answered from that file
 *	only, so that a chain with rdns, dnsbl, spf, dkim and dmarc runs
 *	offline and reproducibly.
 *
 *	Rule unit tests: a ".test" file pairs an envelope and a message with
 *	the expected outcome (format in portcullis.rules(5), RULE TESTS);
 *	given directories or .test files, every test runs and the exit status
 *	is 0 when all pass, 1 otherwise.
 * SEE ALSO
 *	portcullis.rules(5), RFC 5321
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>

#include "core/filter.h"
#include "gateway/conf.h"
#include "gateway/testcmd.h"
#include "core/dns.h"
#include "gateway/engine.h"
#include "core/session.h"
#include "lib/log.h"
#include "lib/pool.h"
#include "core/chain.h"

#define TC_MAX_RCPT 100
#define TC_MAX_MSG  (64u << 20)

/* Verdicts 0-3; errors are sysexits(3) codes, as the daemon's, so no code means two things. */
enum tc_exit {
    TC_ACCEPT = 0,
    TC_REJECT = 1,
    TC_TEMPFAIL = 2,
    TC_DISCARD = 3,
    TC_USAGE = EX_USAGE,
    TC_ERROR = EX_CONFIG
};

struct tc_env {
    const char *listener, *client_ip, *client_name, *helo, *auth, *from;
    const char *rcpt[TC_MAX_RCPT];
    size_t nrcpt;
};

struct tc_result {
    enum tc_exit status;
    int code;
    char enh[16];
    char text[PC_VERDICT_TEXT];
    char reply[PC_VERDICT_TEXT + 64];
    char rules[1024];   /* matched rules, space separated, with a leading and trailing space */
    char headers[2048]; /* added header names, same convention */
};

struct tc_wait {
    bool done;
    enum pc_action a;
    struct pc_verdict v;
    struct event_base *base;
};

/* tc_step_done - a pending step of the engine finished */
static void tc_step_done(void *arg, enum pc_stage st, enum pc_action a, struct pc_verdict *v)
{
    struct tc_wait *w = arg;

    (void)st;
    w->a = a;
    w->v = *v;
    w->done = true;
    event_base_loopbreak(w->base);
}

static const struct pc_door tc_door = {.name = "test", .stage_done = pc_engine_door_done};

/* step - one engine step's outcome, waiting on the loop when it is pending; printed */
static enum pc_action step(struct tc_wait *w, enum pc_action a, struct pc_verdict *v,
                           enum pc_stage st, const char *what, bool quiet)
{
    char enh[16];

    if (a == PC_PENDING) {
        w->done = false;
        while (!w->done)
            if (event_base_loop(w->base, EVLOOP_ONCE) < 0)
                break;
        *v = w->v;
        a = w->done ? w->a : PC_TEMPFAIL;
    }
    if (quiet)
        return a;
    if (a == PC_CONTINUE || a == PC_ACCEPT)
        printf("%-8s %s%s%s\n", pc_stage_name(st), what, *what ? " " : "",
               a == PC_ACCEPT ? "accept" : "continue");
    else
        printf("%-8s %s%s%s %d %s %s [%s%s%s]\n", pc_stage_name(st), what, *what ? " " : "",
               pc_action_name(a), v->code, pc_enh_format(&v->enh, enh, sizeof(enh)), v->text,
               v->filter ? v->filter : "-", v->rule ? ": " : "", v->rule ? v->rule : "");
    return a;
}

/* set_client - the client's address from text */
static bool set_client(struct pc_session *s, const char *ip)
{
    struct sockaddr_storage ss;
    socklen_t len;

    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(40000);
        len = sizeof(*in);
    } else if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(40000);
        len = sizeof(*in6);
    } else {
        return false;
    }
    pc_session_set_client(s, (struct sockaddr *)&ss, len);
    return true;
}

/* parse_addr - "<addr>" through the SMTP path parser */
static bool parse_addr(struct pc_pool *pool, const char *a, struct pc_mailbox *mb)
{
    char *p = pc_pool_printf(pool, "<%s>", a);
    size_t end;

    return pc_path_parse(p, strlen(p), pool, mb, &end) == NULL;
}

/* feed - the message through the engine, line by line, CRLF or LF endings */
static int feed(struct pc_engine *e, const char *data, size_t len)
{
    size_t i = 0;

    while (i < len) {
        const char *nl = memchr(data + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - data) : len;
        size_t l = end - i;
        if (l && data[i + l - 1] == '\r')
            l--;
        if (pc_engine_line(e, data + i, l) < 0)
            return -1;
        i = end + 1;
    }
    return 0;
}

/* set_final - the result from a final verdict */
static void set_final(struct tc_result *r, const struct pc_verdict *v)
{
    r->code = v->code;
    pc_enh_format(&v->enh, r->enh, sizeof(r->enh));
    snprintf(r->text, sizeof(r->text), "%s", v->text);
    snprintf(r->reply, sizeof(r->reply), "%d %s %s", v->code, r->enh, v->text);
    r->status = v->action == PC_TEMPFAIL                             ? TC_TEMPFAIL
                : v->action == PC_DISCARD                            ? TC_DISCARD
                : v->action == PC_ACCEPT || v->action == PC_CONTINUE ? TC_ACCEPT
                                                                     : TC_REJECT;
}

/* append - add " word" to a space-separated list */
static void append(char *list, size_t size, const char *word)
{
    size_t n = strlen(list);

    if (n == 0 && size > 1)
        list[n++] = ' ', list[n] = 0;
    snprintf(list + n, size - n, "%s ", word);
}

/* report - matched rules, scores, header edits */
static void report(struct pc_session *s, struct tc_result *r, bool quiet)
{
    const struct pc_txn *t = s->txn;

    for (const struct pc_fact *f = pc_fact_next(s, "rule", NULL); f;
         f = pc_fact_next(s, "rule", f)) {
        double sc = 0;
        const struct pc_symbol *lists[2] = {s->symbols, t ? t->symbols : NULL};
        for (int l = 0; l < 2; l++)
            for (const struct pc_symbol *y = lists[l]; y; y = y->next)
                if (strcmp(y->name, f->value) == 0)
                    sc += y->score;
        append(r->rules, sizeof(r->rules), f->value);
        if (!quiet)
            printf("rule     %s matched, score %g\n", f->value, sc);
    }
    if (!quiet) {
        const struct pc_symbol *lists[2] = {s->symbols, t ? t->symbols : NULL};
        for (int l = 0; l < 2; l++)
            for (const struct pc_symbol *y = lists[l]; y; y = y->next)
                if (strcmp(y->filter ? y->filter : "", "rules") != 0)
                    printf("symbol   %s=%g (%s)\n", y->name, y->score, y->filter ? y->filter : "-");
        printf("score    %g\n", pc_score_total(s));
        const struct pc_fact *fl[2] = {s->facts, t ? t->facts : NULL};
        for (int l = 0; l < 2; l++)
            for (const struct pc_fact *f = fl[l]; f; f = f->next)
                if (strcmp(f->name, "rule") != 0)
                    printf("fact     %s=%s\n", f->name, f->value);
    }
    if (t == NULL)
        return;
    for (const struct pc_hdr_add *a = t->msg.added; a; a = a->next) {
        append(r->headers, sizeof(r->headers), a->name);
        if (!quiet)
            printf("header   + %s: %s\n", a->name, a->value);
    }
    for (size_t i = 0; i < t->msg.nhdrs && !quiet; i++)
        if (t->msg.hdrs[i].deleted)
            printf("header   - %.*s\n", (int)t->msg.hdrs[i].name_len, t->msg.hdrs[i].name);
}

/* run_message - the whole conversation for one message */
static int run_message(struct pc_conf *conf, struct pc_services *svc, const struct tc_env *env,
                       const char *data, size_t len, struct tc_result *r, bool quiet)
{
    const struct pc_listener_conf *lc = &conf->listeners[0];
    struct tc_wait w = {.base = svc->base};
    struct pc_verdict v;
    char what[PC_PATH_MAX + 8];

    memset(r, 0, sizeof(*r));
    if (env->listener) {
        lc = NULL;
        for (size_t i = 0; i < conf->nlisteners; i++)
            if (strcmp(conf->listeners[i].name, env->listener) == 0)
                lc = &conf->listeners[i];
        if (lc == NULL) {
            fprintf(stderr, "portcullis test: no listener named \"%s\"\n", env->listener);
            return -1;
        }
    }
    struct pc_engine eng;
    struct pc_session *s = pc_session_new(svc, &conf->core, lc->name, &lc->chain, &tc_door, &eng);
    pc_engine_init(&eng, s, tc_step_done, &w);
    s->trusted = lc->trusted;
    if (!set_client(s, env->client_ip)) {
        fprintf(stderr, "portcullis test: bad client address \"%s\"\n", env->client_ip);
        pc_session_free(s);
        return -1;
    }
    pc_strlcpy(s->client.name, env->client_name, sizeof(s->client.name));
    pc_strlcpy(s->client.ptr, env->client_name, sizeof(s->client.ptr));
    int rc = 0;
    enum pc_action a;
    if (pc_chain_attach(s) < 0) {
        pc_verdict_set(&v, PC_TEMPFAIL, 421, "4.3.0", "filter attach failed");
        goto final;
    }
    if (step(&w, pc_engine_connect(&eng, &v), &v, PC_STAGE_CONNECT, "", quiet) != PC_CONTINUE)
        goto final;
    s->helo = pc_pool_strdup(s->pool, env->helo);
    s->esmtp = true;
    if (env->auth)
        s->auth_user = pc_pool_strdup(s->pool, env->auth);
    if (step(&w, pc_engine_helo(&eng, &v), &v, PC_STAGE_HELO, env->helo, quiet) != PC_CONTINUE)
        goto final;
    struct pc_txn *t = pc_txn_new(s);
    if (!parse_addr(t->pool, env->from, &t->from)) {
        pc_verdict_set(&v, PC_REJECT, 501, "5.1.7", "Bad sender address syntax");
        goto final;
    }
    snprintf(what, sizeof(what), "<%s>", t->from.addr);
    a = step(&w, pc_engine_mail(&eng, &v), &v, PC_STAGE_MAIL, what, quiet);
    if (a != PC_CONTINUE && a != PC_ACCEPT)
        goto final;
    struct pc_verdict refused = {0}; /* the last recipient refusal, for the final reply */
    for (size_t i = 0; i < env->nrcpt; i++) {
        struct pc_mailbox mb;
        if (!parse_addr(t->pool, env->rcpt[i], &mb)) {
            if (!quiet)
                printf("%-8s <%s> reject 501 5.1.3 Bad recipient address syntax\n", "rcpt",
                       env->rcpt[i]);
            continue;
        }
        t->cur_rcpt = pc_txn_add_rcpt(t, &mb, "");
        snprintf(what, sizeof(what), "<%s>", mb.addr);
        a = step(&w, pc_engine_rcpt(&eng, &v), &v, PC_STAGE_RCPT, what, quiet);
        if (a == PC_CONTINUE) /* what the SMTP door's backend would be asked: taken here */
            pc_engine_rcpt_accepted(&eng);
        else if (a != PC_ACCEPT)
            refused = v; /* stays in the list unflagged, as in the SMTP door */
    }
    t->cur_rcpt = NULL;
    if (!pc_engine_data_ready(&eng, &v)) {
        if (refused.action)
            v = refused;
        v.action = v.code / 100 == 4 ? PC_TEMPFAIL : PC_REJECT;
        goto final;
    }
    if (step(&w, pc_engine_data(&eng, &v), &v, PC_STAGE_DATA, "", quiet) != PC_CONTINUE)
        goto final;
    if (feed(&eng, data, len) < 0)
        t->msg.io_error = true;
    a = step(&w, pc_engine_eom(&eng, 0, &v), &v, PC_STAGE_EOM, "", quiet);
    if (a != PC_CONTINUE)
        goto final;
    pc_verdict_clear(&v);
    v.code = 250;
    v.enh = (struct pc_enh){2, 0, 0};
    snprintf(v.text, sizeof(v.text), "Ok: queued as %s (test: not delivered)", t->id);
final:
    if (v.action == PC_DISCARD && v.code == 0) /* the transaction's discard: no filter text */
        pc_verdict_set(&v, PC_DISCARD, 250, "2.0.0", "Ok");
    report(s, r, quiet);
    set_final(r, &v);
    if (v.action == PC_DISCARD)
        snprintf(r->reply, sizeof(r->reply), "250 2.0.0 Ok (discarded)");
    if (!quiet)
        printf("result   %s: %s\n",
               r->status == TC_ACCEPT     ? "accept"
               : r->status == TC_REJECT   ? "reject"
               : r->status == TC_TEMPFAIL ? "tempfail"
                                          : "discard",
               r->reply);
    pc_session_free(s);
    return rc;
}

/* read_all - a whole file, bounded */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    struct stat st;

    if (f == NULL || fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode) ||
        (size_t)st.st_size > TC_MAX_MSG) {
        if (f)
            fclose(f);
        else
            return NULL;
        errno = EFBIG;
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL)
        pc_fatal("out of memory");
    *len = fread(buf, 1, (size_t)st.st_size, f);
    buf[*len] = 0;
    fclose(f);
    return buf;
}

/* env_defaults - a loopback client that the shipped relay settings trust */
static void env_defaults(struct tc_env *e)
{
    memset(e, 0, sizeof(*e));
    e->client_ip = "127.0.0.1";
    e->client_name = "localhost";
    e->helo = "localhost";
    e->from = "sender@example.org";
}

/* has_word - is " word " in a space-separated list */
static bool has_word(const char *list, const char *word)
{
    size_t n = strlen(word);

    for (const char *p = list; (p = strstr(p, word)) != NULL; p++)
        if (p > list && p[-1] == ' ' && p[n] == ' ')
            return true;
    return false;
}

/* run_test_file - one .test file: envelope, message, expectations */
static int run_test_file(struct pc_conf *conf, struct pc_services *svc, const char *path,
                         bool verbose)
{
    size_t len = 0;
    char *text = read_all(path, &len);
    struct tc_env env;
    char *expect = NULL, *msgfile = NULL;
    char *checks[32];
    int nchecks = 0, lineno = 0;
    const char *inline_msg = NULL;
    char *bad = NULL;

    if (text == NULL) {
        printf("FAIL %s: cannot read: %s\n", path, strerror(errno));
        return 1;
    }
    env_defaults(&env);
    char *p = text;
    while (p && *p) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = 0;
        lineno++;
        size_t l = strlen(p);
        if (l && p[l - 1] == '\r')
            p[--l] = 0;
        if (strcmp(p, "--") == 0) { /* the message follows inline */
            inline_msg = nl ? nl + 1 : "";
            break;
        }
        char *key = p + strspn(p, " \t");
        char *val = key + strcspn(key, " \t");
        if (*val)
            *val++ = 0;
        val += strspn(val, " \t");
        if (*key == 0 || *key == '#')
            ;
        else if (strcmp(key, "client-ip") == 0)
            env.client_ip = val;
        else if (strcmp(key, "client-name") == 0)
            env.client_name = val;
        else if (strcmp(key, "helo") == 0)
            env.helo = val;
        else if (strcmp(key, "auth") == 0)
            env.auth = val;
        else if (strcmp(key, "from") == 0)
            env.from = val;
        else if (strcmp(key, "listener") == 0)
            env.listener = val;
        else if (strcmp(key, "rcpt") == 0 && env.nrcpt < TC_MAX_RCPT)
            env.rcpt[env.nrcpt++] = val;
        else if (strcmp(key, "message") == 0)
            msgfile = val;
        else if (strcmp(key, "expect") == 0)
            expect = val;
        else if ((strcmp(key, "expect-rule") == 0 || strcmp(key, "expect-no-rule") == 0 ||
                  strcmp(key, "expect-header") == 0) &&
                 nchecks < 32) {
            val[-1] = ' ';
            checks[nchecks++] = key;
        } else if (bad == NULL) {
            bad = key;
            break;
        }
        p = nl ? nl + 1 : NULL;
    }
    if (bad || expect == NULL || (msgfile == NULL) == (inline_msg == NULL)) {
        printf("FAIL %s:%d: %s\n", path, lineno,
               bad ? "unknown keyword (client-ip, client-name, helo, auth, from, rcpt, listener, "
                     "message, expect, expect-rule, expect-no-rule, expect-header, --)"
               : expect == NULL ? "no \"expect\" line"
                                : "give either \"message FILE\" or \"--\" and the message");
        free(text);
        return 1;
    }
    if (env.nrcpt == 0)
        env.rcpt[env.nrcpt++] = "postmaster@example.com";
    char *mdata = NULL;
    size_t mlen = 0;
    const char *data = inline_msg;
    if (msgfile) {
        char *full = msgfile;
        const char *slash = strrchr(path, '/');
        char buf[4096];
        if (msgfile[0] != '/' && slash) {
            snprintf(buf, sizeof(buf), "%.*s/%s", (int)(slash - path), path, msgfile);
            full = buf;
        }
        mdata = read_all(full, &mlen);
        if (mdata == NULL) {
            printf("FAIL %s: message %s: %s\n", path, full, strerror(errno));
            free(text);
            return 1;
        }
        data = mdata;
    } else {
        mlen = strlen(inline_msg);
    }
    struct tc_result r;
    int fails = 0;
    if (run_message(conf, svc, &env, data, mlen, &r, !verbose) < 0) {
        printf("FAIL %s: could not run\n", path);
        fails++;
        goto out;
    }
    /* expect accept|reject|tempfail|discard [CODE [ENH]] */
    char want[16] = "", wcode[8] = "", wenh[16] = "";
    sscanf(expect, "%15s %7s %15s", want, wcode, wenh);
    const char *got = r.status == TC_ACCEPT     ? "accept"
                      : r.status == TC_REJECT   ? "reject"
                      : r.status == TC_TEMPFAIL ? "tempfail"
                                                : "discard";
    char code[8];
    snprintf(code, sizeof(code), "%d", r.code);
    if (strcmp(want, got) != 0 || (wcode[0] && strcmp(wcode, code) != 0) ||
        (wenh[0] && strcmp(wenh, r.enh) != 0)) {
        printf("FAIL %s: expected %s, got %s %s\n", path, expect, got, r.reply);
        fails++;
    }
    for (int i = 0; i < nchecks; i++) {
        char *arg = checks[i] + strcspn(checks[i], " ") + 1;
        bool is_hdr = strncmp(checks[i], "expect-header", 13) == 0;
        bool neg = strncmp(checks[i], "expect-no-rule", 14) == 0;
        bool has = has_word(is_hdr ? r.headers : r.rules, arg);
        if (has == neg) {
            printf("FAIL %s: %s %s: matched rules:%s added headers:%s\n", path,
                   neg      ? "rule matched"
                   : is_hdr ? "header not added"
                            : "rule did not match",
                   arg, r.rules[0] ? r.rules : " none", r.headers[0] ? r.headers : " none");
            fails++;
        }
    }
    if (fails == 0)
        printf("ok   %s\n", path);
out:
    free(mdata);
    free(text);
    return fails ? 1 : 0;
}

/* run_tests - every .test file under the arguments */
static int run_tests(struct pc_conf *conf, struct pc_services *svc, char **paths, int n,
                     bool verbose)
{
    int total = 0, failed = 0;

    for (int i = 0; i < n; i++) {
        struct stat st;
        if (stat(paths[i], &st) < 0) {
            printf("FAIL %s: %s\n", paths[i], strerror(errno));
            failed++, total++;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            failed += run_test_file(conf, svc, paths[i], verbose);
            total++;
            continue;
        }
        struct dirent **names;
        int k = scandir(paths[i], &names, NULL, alphasort);
        for (int j = 0; j < k; j++) {
            size_t l = strlen(names[j]->d_name);
            if (l > 5 && strcmp(names[j]->d_name + l - 5, ".test") == 0) {
                char full[4096];
                snprintf(full, sizeof(full), "%s/%s", paths[i], names[j]->d_name);
                failed += run_test_file(conf, svc, full, verbose);
                total++;
            }
            free(names[j]);
        }
        if (k >= 0)
            free(names);
    }
    printf("%d tests, %d failed\n", total, failed);
    return failed ? 1 : 0;
}

/* is_test_path - a directory or a .test file means "run rule tests" */
static bool is_test_path(const char *p)
{
    struct stat st;
    size_t l = strlen(p);

    return (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) || (l > 5 && strcmp(p + l - 5, ".test") == 0);
}

/* run_bench - every message n times through the chain, quietly: messages per second */
static int run_bench(struct pc_conf *conf, struct pc_services *svc, const struct tc_env *env,
                     char **paths, int npaths, long n)
{
    char **data = calloc((size_t)npaths, sizeof(*data));
    size_t *len = calloc((size_t)npaths, sizeof(*len));
    long count = 0, verdicts[5] = {0};
    struct timespec t0, t1;
    struct tc_result r;
    int rc = 0;

    if (data == NULL || len == NULL)
        pc_fatal("out of memory");
    for (int i = 0; i < npaths; i++)
        if ((data[i] = read_all(paths[i], &len[i])) == NULL) {
            fprintf(stderr, "portcullis test: %s: %s\n", paths[i], strerror(errno));
            rc = EX_NOINPUT;
            goto out;
        }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long k = 0; k < n; k++)
        for (int i = 0; i < npaths; i++) {
            if (run_message(conf, svc, env, data[i], len[i], &r, true) < 0) {
                rc = TC_ERROR;
                goto out;
            }
            verdicts[r.status]++;
            count++;
        }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%ld messages in %.3f s: %.0f messages/s (accept %ld, reject %ld, tempfail %ld, "
           "discard %ld)\n",
           count, secs, secs > 0 ? (double)count / secs : 0.0, verdicts[TC_ACCEPT],
           verdicts[TC_REJECT], verdicts[TC_TEMPFAIL], verdicts[TC_DISCARD]);
out:
    for (int i = 0; i < npaths; i++)
        free(data[i]);
    free(data);
    free(len);
    return rc;
}

/* tc_usage - how to call us, on stdout when asked (--help), else on stderr */
static int tc_usage(FILE *out, int status)
{
    fprintf(out, "usage: portcullis test -c config [--listener NAME] [--client-ip IP] "
                 "[--client-name NAME] [--helo NAME] [--auth USER] [--from ADDR] "
                 "[--rcpt ADDR]... [--dns-zone FILE] [-q] MESSAGE.eml\n"
                 "       portcullis test -c config [-v] DIR|FILE.test...\n"
                 "       portcullis test -c config --bench N MESSAGE...\n"
                 "Exit status: 0 accept, 1 reject, 2 tempfail, 3 discard, 64 usage error, "
                 "78 configuration error.\n");
    return status;
}

/* pc_test_main - "portcullis test" */
int pc_test_main(int argc, char **argv)
{
    static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                             {"listener", required_argument, NULL, 'l'},
                                             {"client-ip", required_argument, NULL, 'i'},
                                             {"client-name", required_argument, NULL, 'n'},
                                             {"helo", required_argument, NULL, 'h'},
                                             {"auth", required_argument, NULL, 'a'},
                                             {"from", required_argument, NULL, 'f'},
                                             {"rcpt", required_argument, NULL, 'r'},
                                             {"quiet", no_argument, NULL, 'q'},
                                             {"verbose", no_argument, NULL, 'v'},
                                             {"bench", required_argument, NULL, 'b'},
                                             {"dns-zone", required_argument, NULL, 'z'},
                                             {"help", no_argument, NULL, 'H'},
                                             {NULL, 0, NULL, 0}};
    struct tc_env env;
    const char *path = PC_CONFIG_FILE, *zone = NULL;
    bool quiet = false, verbose = false;
    long bench = 0;
    int ch;

    env_defaults(&env);
    optind = 1;
    while ((ch = getopt_long(argc, argv, "c:qv", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            path = optarg;
            break;
        case 'l':
            env.listener = optarg;
            break;
        case 'i':
            env.client_ip = optarg;
            break;
        case 'n':
            env.client_name = optarg;
            break;
        case 'h':
            env.helo = optarg;
            break;
        case 'a':
            env.auth = optarg;
            break;
        case 'f':
            env.from = optarg;
            break;
        case 'r':
            if (env.nrcpt == TC_MAX_RCPT)
                return tc_usage(stderr, TC_USAGE);
            env.rcpt[env.nrcpt++] = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case 'z':
            zone = optarg;
            break;
        case 'H':
            return tc_usage(stdout, 0);
        case 'v':
            verbose = true;
            break;
        case 'b':
            bench = strtol(optarg, NULL, 10);
            if (bench < 1 || bench > 1000000)
                return tc_usage(stderr, TC_USAGE);
            break;
        default:
            return tc_usage(stderr, TC_USAGE);
        }
    }
    if (optind >= argc)
        return tc_usage(stderr, TC_USAGE);
    if (env.nrcpt == 0)
        env.rcpt[env.nrcpt++] = "postmaster@example.com";
    pc_log_init("portcullis", PC_LOG_STDERR, 0);
    int old_verbose = pc_verbose;
    /* Routine log lines would drown the report in quiet, bench and rule-test modes. */
    if (quiet || bench || (!verbose && is_test_path(argv[optind])))
        pc_log_set_verbose(-1);
    struct pc_err err = {{0}};
    struct pc_conf *conf = pc_conf_load(path, &err);
    if (conf == NULL) {
        fprintf(stderr, "%s\n", err.msg);
        pc_log_set_verbose(old_verbose);
        return TC_ERROR;
    }
    struct pc_services svc = {.hostname = conf->hostname};
    svc.base = event_base_new();
    int rc;
    if (svc.base != NULL)
        svc.dns = pc_dns_create(svc.base, conf->dns_nameservers, conf->dns_nnameservers,
                                conf->dns_timeout, &err);
    if (svc.dns != NULL && zone != NULL && pc_dns_zone_file(svc.dns, zone, &err) < 0) {
        pc_dns_free(svc.dns);
        svc.dns = NULL;
    }
    if (svc.base == NULL || svc.dns == NULL || pc_conf_start(conf, &svc, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg[0] ? err.msg : "portcullis test: cannot start");
        rc = TC_ERROR;
    } else if (bench) {
        rc = run_bench(conf, &svc, &env, argv + optind, argc - optind, bench);
    } else if (is_test_path(argv[optind])) {
        rc = run_tests(conf, &svc, argv + optind, argc - optind, verbose);
    } else if (optind + 1 != argc) {
        rc = tc_usage(stderr, TC_USAGE);
    } else {
        size_t len = 0;
        char *data = read_all(argv[optind], &len);
        struct tc_result r;
        if (data == NULL) {
            fprintf(stderr, "portcullis test: %s: %s\n", argv[optind], strerror(errno));
            rc = EX_NOINPUT;
        } else {
            rc = run_message(conf, &svc, &env, data, len, &r, quiet) < 0 ? TC_ERROR : (int)r.status;
            free(data);
        }
    }
    pc_conf_unref(conf);
    if (svc.dns)
        pc_dns_free(svc.dns);
    if (svc.base)
        event_base_free(svc.base);
    pc_log_set_verbose(old_verbose);
    return rc;
}
