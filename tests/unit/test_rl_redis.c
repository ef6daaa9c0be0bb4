/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_rl_redis - the ratelimit filter against a real redis-server
 * DESCRIPTION
 *	Each case starts its own redis-server on 127.0.0.1 (ports from
 *	24000-24999, probed free first), loads a configuration whose chain is
 *	the ratelimit filter, and drives sessions through the chain runner
 *	with a small test door on an event_base. Servers die with the test
 *	process (PR_SET_PDEATHSIG) and are killed explicitly as well.
 *
 *	Covered: 5 messages per minute lets 5 through and refuses the 6th
 *	with 450 4.7.1; two gateways (two configurations, two connections)
 *	share one limit; the in-process store answers like Redis; Redis
 *	stopped (on_error, recovery), frozen with SIGSTOP (the store timeout
 *	fires, the session goes on), a cancelled pending check, NOSCRIPT
 *	after SCRIPT FLUSH, connection floods (421 4.7.0), recipients keyed
 *	on the recipient domain, limits chosen by a fact, an oversized reply,
 *	AUTH and SELECT, a Unix socket, and Sentinel failovers (three Sentinels, a master and
 *	a replica; the master killed, and a manual failover with both up).
 *	RL_TEST_LOG=1 shows the gateway's log lines.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/filter.h"
#include "gateway/conf.h"
#include "core/session.h"
#include "lib/log.h"
#include "lib/pool.h"
#include "core/chain.h"
#include "policy/rl_redis.h"

#define PORT_LO 24000
#define PORT_HI 24999

static char tmpdir[128];

/* port_free - can we bind it right now */
static bool port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};

    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

/* pick_port - a free port in our range, spread by pid so parallel runs rarely meet */
static int pick_port(void)
{
    static int next;

    if (next == 0)
        next = PORT_LO + 1 + (int)(getpid() % 450) * 2;
    for (int i = 0; i < PORT_HI - PORT_LO; i++) {
        int p = next++;
        if (next > PORT_HI)
            next = PORT_LO + 1;
        if (port_free(p))
            return p;
    }
    ck_abort_msg("no free port in %d-%d", PORT_LO, PORT_HI);
    return -1;
}

/* redis_ping - is a server answering on port */
static bool redis_ping(int port)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    bool ok = false;

    if (c && !c->err) {
        redisSetTimeout(c, tv);
        redisReply *r = redisCommand(c, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return ok;
}

/* redis_cmd - one synchronous command; the reply's integer or -1 */
static long long redis_cmd(int port, const char *cmd)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    long long v = -1;

    if (c && !c->err) {
        redisSetTimeout(c, tv);
        redisReply *r = redisCommand(c, cmd);
        if (r && r->type == REDIS_REPLY_INTEGER)
            v = r->integer;
        else if (r && r->type == REDIS_REPLY_STATUS)
            v = 0;
        else if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
                 r->element[0]->type == REDIS_REPLY_INTEGER)
            v = r->element[0]->integer;
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return v;
}

/* redis_str - one synchronous command; a string reply (or an array's first string) or "" */
static void redis_str(int port, const char *cmd, char *out, size_t size)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);

    out[0] = 0;
    if (c && !c->err) {
        redisSetTimeout(c, tv);
        redisReply *r = redisCommand(c, cmd);
        if (r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS))
            snprintf(out, size, "%s", r->str);
        else if (r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                 r->element[0]->type == REDIS_REPLY_STRING)
            snprintf(out, size, "%s", r->element[0]->str);
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
}

/* replica_synced - the replica holds the master's (single) counter with the same value */
static bool replica_synced(int mport, int rport_)
{
    char key[200], cmd[220], a[64], b[64];

    for (int i = 0; i < 100; i++) {
        redis_str(mport, "KEYS portcullis:rl:*", key, sizeof(key));
        snprintf(cmd, sizeof(cmd), "GET %s", key);
        redis_str(mport, cmd, a, sizeof(a));
        redis_str(rport_, cmd, b, sizeof(b));
        if (key[0] && a[0] && strcmp(a, b) == 0)
            return true;
        usleep(50000);
    }
    return false;
}

/* our_client - does the server have a connection named by the ratelimit store */
static bool our_client(int port)
{
    char list[4096];

    redis_str(port, "CLIENT LIST", list, sizeof(list));
    return strstr(list, "name=portcullis-ratelimit") != NULL;
}

/* spawn - run redis-server with arguments; dies with us */
static pid_t spawn(const char *const *argv)
{
    pid_t pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 1);
        dup2(null, 2);
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* redis_start - a plain server on port (optionally a replica of another) */
static pid_t redis_start(int port, int master_port)
{
    char p[16], m[16];
    snprintf(p, sizeof(p), "%d", port);
    snprintf(m, sizeof(m), "%d", master_port);
    const char *argv[] = {"redis-server", "--port", p,      "--bind",
                          "127.0.0.1",    "--save", "",     "--appendonly",
                          "no",           "--dir",  tmpdir, master_port ? "--replicaof" : NULL,
                          "127.0.0.1",    m,        NULL};
    pid_t pid = spawn(argv);
    for (int i = 0; i < 100 && !redis_ping(port); i++)
        usleep(50000);
    ck_assert_msg(redis_ping(port), "redis-server on %d did not start", port);
    return pid;
}

/* redis_stop - kill and reap */
static void redis_stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGCONT);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Test door: remembers the outcome of a pending stage. */
struct tdoor {
    bool done;
    struct pc_verdict v;
};

/* td_done - a pending stage finished */
static void td_done(struct pc_session *s, enum pc_stage st, struct pc_verdict *v)
{
    struct tdoor *d = s->door_ctx;

    (void)st;
    d->done = true;
    d->v = *v;
}

static const struct pc_door test_door = {"test", td_done};

struct env {
    struct event_base *base;
    struct pc_services svc;
    struct pc_conf *conf;
    char path[256];
};

/* env_open - load and start a configuration text */
static void env_open(struct env *e, struct event_base *base, const char *text)
{
    static int seq;
    struct pc_err err = {{0}};

    memset(e, 0, sizeof(*e));
    e->base = base;
    e->svc.base = base;
    e->svc.hostname = "mx.test";
    snprintf(e->path, sizeof(e->path), "%s/c%d.conf", tmpdir, ++seq);
    FILE *f = fopen(e->path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    e->conf = pc_conf_load(e->path, &err);
    ck_assert_msg(e->conf != NULL, "config: %s", err.msg);
    ck_assert_msg(pc_conf_start(e->conf, &e->svc, &err) == 0, "start: %s", err.msg);
}

/* env_close - drop the configuration (closes its store) */
static void env_close(struct env *e)
{
    pc_conf_unref(e->conf);
    unlink(e->path);
}

/* conf_text - a chain of just ratelimit with the given store and limits */
static char *conf_text(const char *store_lines, const char *limits)
{
    static char buf[4096];

    snprintf(buf, sizeof(buf),
             "hostname = \"mx.test\"\n"
             "listener \"in\" { address = \"127.0.0.1:24999\" filters = { \"ratelimit\" } }\n"
             "ratelimit {\n  timeout = \"20s\"\n  store_timeout = \"300ms\"\n%s\n%s\n}\n",
             store_lines, limits);
    return buf;
}

/* session - a client from ip, after HELO */
static struct pc_session *session(struct env *e, const char *ip)
{
    struct tdoor *d = calloc(1, sizeof(*d));
    struct pc_session *s =
        pc_session_new(&e->svc, &e->conf->core, "in", &e->conf->listeners[0].chain, &test_door, d);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(40000)};

    inet_pton(AF_INET, ip, &sa.sin_addr);
    pc_session_set_client(s, (struct sockaddr *)&sa, sizeof(sa));
    s->helo = "client.example";
    ck_assert_int_eq(pc_chain_attach(s), 0);
    return s;
}

/* session_free - with its door */
static void session_free(struct pc_session *s)
{
    void *d = s->door_ctx;

    pc_session_free(s);
    free(d);
}

/* stage - run one stage to its end, waiting on the loop when it is pending */
static struct pc_verdict stage(struct env *e, struct pc_session *s, enum pc_stage st)
{
    struct tdoor *d = s->door_ctx;
    struct pc_verdict v;

    d->done = false;
    if (pc_chain_run(s, st, &v) != PC_PENDING)
        return v;
    time_t until = time(NULL) + 30;
    while (!d->done && time(NULL) < until)
        event_base_loop(e->base, EVLOOP_ONCE);
    ck_assert_msg(d->done, "stage never finished");
    return d->v;
}

/* mail - MAIL FROM (and one RCPT) without running their stages */
static void mail(struct pc_session *s, const char *from, const char *to)
{
    struct pc_txn *t = pc_txn_new(s);
    size_t end;

    ck_assert_ptr_null(pc_path_parse(from, strlen(from), t->pool, &t->from, &end));
    if (to) {
        struct pc_mailbox mb;
        ck_assert_ptr_null(pc_path_parse(to, strlen(to), t->pool, &mb, &end));
        t->cur_rcpt = pc_txn_add_rcpt(t, &mb, NULL);
    }
    t->msg.size = 1000;
}

/* message - one whole message's end-of-data verdict */
static struct pc_verdict message(struct env *e, struct pc_session *s, const char *from)
{
    mail(s, from, "<u@example.com>");
    struct pc_verdict v = stage(e, s, PC_STAGE_EOM);
    pc_txn_free(s);
    return v;
}

/* has_fact - does the session carry fact name=value */
static bool has_fact(struct pc_session *s, const char *name, const char *value)
{
    for (const struct pc_fact *f = pc_fact_next(s, name, NULL); f; f = pc_fact_next(s, name, f))
        if (strcmp(f->value, value) == 0)
            return true;
    return false;
}

static char store_line[256];
static int rport;
static pid_t rpid;

/* setup - a fresh redis-server per case (runs in the case's own process) */
static void setup(void)
{
    rport = pick_port();
    rpid = redis_start(rport, 0);
    snprintf(store_line, sizeof(store_line), "  store = \"redis://127.0.0.1:%d/0\"", rport);
}

/* teardown - stop it */
static void teardown(void)
{
    redis_stop(rpid);
    rpid = 0;
}

static const char lim5[] =
    "limit \"msgs\" { key = { \"client_ip\" } count = \"messages\" rate = \"5/1m\" }";

START_TEST(five_then_450)
{
    struct event_base *base = event_base_new();
    struct env e;

    env_open(&e, base, conf_text(store_line, lim5));
    struct pc_session *s = session(&e, "192.0.2.10");
    for (int i = 0; i < 5; i++) {
        struct pc_verdict v = message(&e, s, "<a@sender.example>");
        ck_assert_msg(v.action == PC_CONTINUE, "message %d: %s %d", i + 1, pc_action_name(v.action),
                      v.code);
    }
    struct pc_verdict v = message(&e, s, "<a@sender.example>");
    ck_assert_int_eq(v.action, PC_TEMPFAIL);
    ck_assert_int_eq(v.code, 450);
    ck_assert_int_eq(v.enh.cls, 4);
    ck_assert_int_eq(v.enh.subject, 7);
    ck_assert_int_eq(v.enh.detail, 1);
    /* 12 s (one emission interval), or 11 on a machine slow enough to take a second. */
    ck_assert_msg(strstr(v.text, "try again in 12 seconds") ||
                      strstr(v.text, "try again in 11 seconds"),
                  "%s", v.text);
    ck_assert_str_eq(v.rule, "msgs");
    /* Another client has its own counter. */
    struct pc_session *s2 = session(&e, "192.0.2.11");
    ck_assert_int_eq(message(&e, s2, "<b@sender.example>").action, PC_CONTINUE);
    /* Keys are namespaced and hashed. */
    ck_assert_int_eq(redis_cmd(rport, "EXISTS portcullis:rl:nosuchkey"), 0);
    ck_assert_int_eq(redis_cmd(rport, "DBSIZE"), 2);
    session_free(s);
    session_free(s2);
    env_close(&e);
    event_base_free(base);
}
END_TEST

START_TEST(two_gateways_share)
{
    struct event_base *base = event_base_new();
    struct env a, b;

    env_open(&a, base, conf_text(store_line, lim5));
    env_open(&b, base, conf_text(store_line, lim5));
    struct pc_session *sa = session(&a, "198.51.100.7"), *sb = session(&b, "198.51.100.7");
    for (int i = 0; i < 5; i++) {
        struct pc_verdict v = message(i % 2 ? &b : &a, i % 2 ? sb : sa, "<x@y.example>");
        ck_assert_msg(v.action == PC_CONTINUE, "message %d", i + 1);
    }
    /* The 6th is refused whichever gateway it goes through. */
    ck_assert_int_eq(message(&b, sb, "<x@y.example>").code, 450);
    ck_assert_int_eq(message(&a, sa, "<x@y.example>").code, 450);
    session_free(sa);
    session_free(sb);
    env_close(&a);
    env_close(&b);
    event_base_free(base);
}
END_TEST

/* script - a mixed workload; the actions it got, as letters */
static void script(struct env *e, char *out, size_t size)
{
    static const char *ips[] = {"203.0.113.1", "203.0.113.2", "203.0.113.1", "203.0.113.1",
                                "203.0.113.3", "203.0.113.1", "203.0.113.2", "203.0.113.1"};
    size_t o = 0;

    for (size_t i = 0; i < sizeof(ips) / sizeof(ips[0]) && o + 8 < size; i++) {
        struct pc_session *s = session(e, ips[i]);
        struct pc_verdict v = stage(e, s, PC_STAGE_CONNECT);
        out[o++] = "CATRDXEP"[v.action];
        if (v.action == PC_CONTINUE) {
            for (int m = 0; m < 2; m++) {
                mail(s, "<Boss@Corp.example>", NULL);
                for (int r = 0; r < 2; r++) {
                    struct pc_mailbox mb;
                    size_t end;
                    const char *to = r ? "<b@Dest.example>" : "<a@dest.example>";
                    pc_path_parse(to, strlen(to), s->txn->pool, &mb, &end);
                    s->txn->cur_rcpt = pc_txn_add_rcpt(s->txn, &mb, NULL);
                    v = stage(e, s, PC_STAGE_RCPT);
                    out[o++] = "CATRDXEP"[v.action];
                }
                v = stage(e, s, PC_STAGE_EOM);
                out[o++] = "CATRDXEP"[v.action];
                pc_txn_free(s);
            }
        }
        session_free(s);
    }
    out[o] = 0;
}

static const char mixed[] =
    "limit \"conn\" { key = { \"client_ip\" } count = \"connections\" rate = \"3/1h\" }\n"
    "limit \"rcpt\" { key = { \"sender\", \"rcpt_domain\" } count = \"recipients\" "
    "rate = \"7/1h\" }\n"
    "limit \"msgs\" { key = { \"client_net\" } count = \"messages\" rate = \"5/1h\" }\n"
    "limit \"bytes\" { key = { \"sender_domain\" } count = \"bytes\" rate = \"4500/1h\" }\n";

START_TEST(memory_same_as_redis)
{
    struct event_base *base = event_base_new();
    struct env e;
    char with_redis[256], in_memory[256];

    env_open(&e, base, conf_text(store_line, mixed));
    script(&e, with_redis, sizeof(with_redis));
    env_close(&e);
    env_open(&e, base, conf_text("", mixed));
    script(&e, in_memory, sizeof(in_memory));
    env_close(&e);
    ck_assert_str_eq(with_redis, in_memory);
    /* And the workload did hit limits of every kind: connections, recipients, messages. */
    /* Worked out by hand: per session a connect letter, then twice (two RCPTs, the end of
     * data). The 8th recipient of boss@ to dest.example, the 5th message from the /24 and
     * the 5th kilobyte from corp.example are refused; the 4th connection from .1 is cut. */
    ck_assert_str_eq(with_redis, "CCCCCCC"
                                 "CCCCCTC"
                                 "CTTTTTT"
                                 "CTTTTTT"
                                 "CTTTTTT"
                                 "X"
                                 "CTTTTTT"
                                 "X");
    event_base_free(base);
}
END_TEST

static const char two_policies[] =
    "limit \"soft\" { key = { \"client_ip\" } count = \"messages\" rate = \"100/1m\" "
    "on_error = \"accept\" }\n"
    "limit \"hard\" { key = { \"sender\" } count = \"messages\" rate = \"100/1m\" "
    "on_error = \"tempfail\" named_only = true }\n";

START_TEST(redis_stopped)
{
    struct event_base *base = event_base_new();
    struct env e;

    env_open(&e, base, conf_text(store_line, two_policies));
    struct pc_session *s = session(&e, "192.0.2.20");
    ck_assert_int_eq(message(&e, s, "<a@b.example>").action, PC_CONTINUE);
    redis_stop(rpid);
    rpid = 0;
    /* on_error = accept: the message goes on, and the fact says why. */
    mail(s, "<a@b.example>", "<u@example.com>");
    struct pc_verdict v = stage(&e, s, PC_STAGE_EOM);
    ck_assert_int_eq(v.action, PC_CONTINUE);
    ck_assert(has_fact(s, "ratelimit", "soft=error"));
    /* A limit a rule named, with on_error = tempfail: 451 4.3.0, never a 5xx. */
    pc_fact_add(s, "ratelimit.apply", "hard");
    v = stage(&e, s, PC_STAGE_EOM);
    ck_assert_int_eq(v.action, PC_TEMPFAIL);
    ck_assert_int_eq(v.code, 451);
    pc_txn_free(s);
    /* Redis comes back on the same port: the store reconnects by itself. */
    rpid = redis_start(rport, 0);
    bool back = false;
    for (int i = 0; i < 100 && !back; i++) {
        struct timeval tv = {0, 100000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
        mail(s, "<a@b.example>", "<u@example.com>");
        v = stage(&e, s, PC_STAGE_EOM);
        back = v.action == PC_CONTINUE && has_fact(s, "ratelimit", "soft=ok");
        pc_txn_free(s);
    }
    ck_assert_msg(back, "the store did not reconnect");
    ck_assert_int_eq(redis_cmd(rport, "DBSIZE"), 1);
    session_free(s);
    env_close(&e);
    event_base_free(base);
}
END_TEST

START_TEST(redis_frozen)
{
    struct event_base *base = event_base_new();
    struct env e;

    env_open(&e, base, conf_text(store_line, two_policies));
    struct pc_session *s = session(&e, "192.0.2.21");
    ck_assert_int_eq(message(&e, s, "<a@b.example>").action, PC_CONTINUE);
    kill(rpid, SIGSTOP);
    /* The store's 300 ms timeout answers, not the chain's 20 s backstop: the fact shows it. */
    mail(s, "<a@b.example>", "<u@example.com>");
    struct pc_verdict v = stage(&e, s, PC_STAGE_EOM);
    ck_assert_int_eq(v.action, PC_CONTINUE);
    ck_assert(has_fact(s, "ratelimit", "soft=error"));
    pc_txn_free(s);
    /* A check left pending when its session goes away must not touch it afterwards. */
    struct pc_session *s2 = session(&e, "192.0.2.22");
    struct timeval tv = {2, 500000}; /* past the reconnect backoff */
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    mail(s2, "<c@d.example>", NULL);
    struct pc_verdict v2;
    enum pc_action a = pc_chain_run(s2, PC_STAGE_EOM, &v2);
    ck_assert_int_eq(a, PC_PENDING);
    session_free(s2);
    tv = (struct timeval){1, 0};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
    kill(rpid, SIGCONT);
    bool back = false;
    for (int i = 0; i < 100 && !back; i++) {
        tv = (struct timeval){0, 100000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
        mail(s, "<a@b.example>", "<u@example.com>");
        v = stage(&e, s, PC_STAGE_EOM);
        back = v.action == PC_CONTINUE && has_fact(s, "ratelimit", "soft=ok");
        pc_txn_free(s);
    }
    ck_assert_msg(back, "no recovery after SIGCONT");
    session_free(s);
    env_close(&e);
    event_base_free(base);
}
END_TEST

START_TEST(noscript_fallback)
{
    struct event_base *base = event_base_new();
    struct env e;

    env_open(&e, base, conf_text(store_line, lim5));
    struct pc_session *s = session(&e, "192.0.2.30");
    ck_assert_int_eq(message(&e, s, "<a@b.example>").action, PC_CONTINUE);
    ck_assert_int_eq(redis_cmd(rport, "SCRIPT FLUSH"), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(message(&e, s, "<a@b.example>").action, PC_CONTINUE);
    ck_assert_int_eq(message(&e, s, "<a@b.example>").code, 450);
    session_free(s);
    env_close(&e);
    event_base_free(base);
}
END_TEST

static const char floods[] =
    "limit \"conn\" { key = { \"client_net\" } count = \"connections\" rate = \"2/1m\" }\n"
    "limit \"dom\" { key = { \"rcpt_domain\" } count = \"recipients\" rate = \"3/1h\" "
    "burst = 2 }\n";

START_TEST(connections_and_recipients)
{
    struct event_base *base = event_base_new();
    struct env e;

    env_open(&e, base, conf_text(store_line, floods));
    struct pc_session *a = session(&e, "192.0.2.40"), *b = session(&e, "192.0.2.41"),
                      *c = session(&e, "192.0.2.42"), *d = session(&e, "192.0.3.1");
    ck_assert_int_eq(stage(&e, a, PC_STAGE_CONNECT).action, PC_CONTINUE);
    ck_assert_int_eq(stage(&e, b, PC_STAGE_CONNECT).action, PC_CONTINUE);
    struct pc_verdict v = stage(&e, c, PC_STAGE_CONNECT); /* same /24 */
    ck_assert_int_eq(v.action, PC_DISCONNECT);
    ck_assert_int_eq(v.code, 421);
    ck_assert_int_eq(v.enh.detail, 0);
    ck_assert_int_eq(v.enh.subject, 7);
    ck_assert_int_eq(stage(&e, d, PC_STAGE_CONNECT).action, PC_CONTINUE); /* other /24 */
    /* IPv6: the /64 is the network. */
    static const char *v6[] = {"2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:2::77",
                               "2001:db8:1:3::1"};
    static const enum pc_action want[] = {PC_CONTINUE, PC_CONTINUE, PC_DISCONNECT, PC_CONTINUE};
    for (int i = 0; i < 4; i++) {
        struct pc_session *s6 = session(&e, "127.0.0.1");
        struct sockaddr_in6 sa6 = {.sin6_family = AF_INET6, .sin6_port = htons(40000)};
        inet_pton(AF_INET6, v6[i], &sa6.sin6_addr);
        pc_session_set_client(s6, (struct sockaddr *)&sa6, sizeof(sa6));
        ck_assert_msg(stage(&e, s6, PC_STAGE_CONNECT).action == want[i], "%s", v6[i]);
        session_free(s6);
    }
    /* Recipients per domain, burst 2: case does not matter. */
    mail(a, "<x@y.example>", "<one@Dom.example>");
    ck_assert_int_eq(stage(&e, a, PC_STAGE_RCPT).action, PC_CONTINUE);
    pc_txn_free(a);
    mail(b, "<x@y.example>", "<two@dom.EXAMPLE>");
    ck_assert_int_eq(stage(&e, b, PC_STAGE_RCPT).action, PC_CONTINUE);
    pc_txn_free(b);
    mail(d, "<x@y.example>", "<three@dom.example>");
    v = stage(&e, d, PC_STAGE_RCPT);
    ck_assert_int_eq(v.code, 450);
    ck_assert_msg(strstr(v.text, "dom") &&
                      (strstr(v.text, "in 1200 seconds") || strstr(v.text, "in 1199 seconds")),
                  "%s", v.text);
    pc_txn_free(d);
    session_free(a);
    session_free(b);
    session_free(c);
    session_free(d);
    env_close(&e);
    event_base_free(base);
}
END_TEST

START_TEST(rule_chooses_limit)
{
    struct event_base *base = event_base_new();
    struct env e;
    char rules[256], text[2048];

    snprintf(rules, sizeof(rules), "%s/suspect.rules", tmpdir);
    FILE *f = fopen(rules, "w");
    ck_assert_ptr_nonnull(f);
    fputs("rule suspect at connect\n"
          "    if client.ip in \"192.0.2.0/24\"\n"
          "    then score 0.5\n",
          f);
    fclose(f);
    snprintf(text, sizeof(text),
             "listener \"in\" { address = \"127.0.0.1:24999\" "
             "filters = { \"rules\", \"ratelimit\" } }\n"
             "rules { files = { \"%s\" } }\n"
             "ratelimit {\n%s\n"
             "  limit \"strict\" { rule = \"suspect\" key = { \"client_ip\" } "
             "count = \"messages\" rate = \"1/1h\" }\n"
             "  limit \"fact\" { named_only = true key = { \"client_ip\" } "
             "count = \"messages\" rate = \"2/1h\" }\n}\n",
             rules, store_line);
    env_open(&e, base, text);
    /* 192.0.2.x matches the rule: one message an hour. */
    struct pc_session *s = session(&e, "192.0.2.70");
    ck_assert_int_eq(stage(&e, s, PC_STAGE_CONNECT).action, PC_CONTINUE);
    ck_assert(has_fact(s, "rule", "suspect"));
    ck_assert_int_eq(message(&e, s, "<a@b.example>").action, PC_CONTINUE);
    ck_assert_int_eq(message(&e, s, "<a@b.example>").code, 450);
    /* Others do not: no limit applies to them, until a filter names one. */
    struct pc_session *o = session(&e, "198.51.100.70");
    ck_assert_int_eq(stage(&e, o, PC_STAGE_CONNECT).action, PC_CONTINUE);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(message(&e, o, "<a@b.example>").action, PC_CONTINUE);
    pc_fact_add(o, "ratelimit.apply", "fact");
    ck_assert_int_eq(message(&e, o, "<a@b.example>").action, PC_CONTINUE);
    ck_assert_int_eq(message(&e, o, "<a@b.example>").action, PC_CONTINUE);
    struct pc_verdict v = message(&e, o, "<a@b.example>");
    ck_assert_int_eq(v.code, 450);
    ck_assert_str_eq(v.rule, "fact");
    session_free(s);
    session_free(o);
    env_close(&e);
    event_base_free(base);
}
END_TEST

START_TEST(auth_and_refusal)
{
    struct event_base *base = event_base_new();
    struct env e;
    char p[16], lines[256];
    int port = pick_port();

    snprintf(p, sizeof(p), "%d", port);
    const char *argv[] = {
        "redis-server", "--port", p,       "--bind", "127.0.0.1",     "--save", "",
        "--appendonly", "no",     "--dir", tmpdir,   "--requirepass", "s3cret", NULL};
    pid_t pid = spawn(argv);
    for (int i = 0; i < 100; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        bool up = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        if (up)
            break;
        usleep(50000);
    }
    /* Without the password Redis refuses every command: on_error, never a crash. */
    snprintf(lines, sizeof(lines), "  store = \"redis://127.0.0.1:%d/2\"", port);
    env_open(&e, base, conf_text(lines, two_policies));
    struct pc_session *s = session(&e, "192.0.2.80");
    mail(s, "<a@b.example>", "<u@example.com>");
    ck_assert_int_eq(stage(&e, s, PC_STAGE_EOM).action, PC_CONTINUE);
    ck_assert(has_fact(s, "ratelimit", "soft=error"));
    pc_txn_free(s);
    session_free(s);
    env_close(&e);
    /* With it (and db 2 selected), counting works. */
    snprintf(lines, sizeof(lines), "  store = \"redis://127.0.0.1:%d/2\"\n  password = \"s3cret\"",
             port);
    env_open(&e, base, conf_text(lines, lim5));
    s = session(&e, "192.0.2.80");
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(message(&e, s, "<a@b.example>").action, PC_CONTINUE);
    ck_assert_int_eq(message(&e, s, "<a@b.example>").code, 450);
    session_free(s);
    env_close(&e);
    event_base_free(base);
    redis_stop(pid);
}
END_TEST

START_TEST(key_fields)
{
    struct event_base *base = event_base_new();
    struct env e;
    static const char limits[] =
        "limit \"user\" { key = { \"auth_user\" } count = \"recipients\" rate = \"2/1h\" }\n"
        "limit \"helo\" { key = { \"helo\", \"sender_domain\" } rate = \"3/1h\" }\n";

    env_open(&e, base, conf_text(store_line, limits));
    /* Not authenticated: the auth_user limit does not apply at all. */
    struct pc_session *s = session(&e, "192.0.2.90");
    for (int i = 0; i < 4; i++) {
        mail(s, "<a@b.example>", "<u@example.com>");
        ck_assert_int_eq(stage(&e, s, PC_STAGE_RCPT).action, PC_CONTINUE);
        ck_assert(!has_fact(s, "ratelimit", "user=ok"));
        pc_txn_free(s);
    }
    /* Authenticated: bob has 2 recipients an hour wherever he connects from. */
    s->auth_user = "bob";
    struct pc_session *s2 = session(&e, "198.51.100.90");
    s2->auth_user = "bob";
    struct pc_session *who[] = {s, s2, s};
    enum pc_action want[] = {PC_CONTINUE, PC_CONTINUE, PC_TEMPFAIL};
    for (int i = 0; i < 3; i++) {
        mail(who[i], "<a@b.example>", "<u@example.com>");
        struct pc_verdict v = stage(&e, who[i], PC_STAGE_RCPT);
        ck_assert_msg(v.action == want[i], "recipient %d: %s", i + 1, v.text);
        pc_txn_free(who[i]);
    }
    /* HELO and sender domain, both without case: 3 messages, then refused. */
    s2->helo = "MX.Client.Example";
    for (int i = 0; i < 4; i++) {
        struct pc_session *x = i % 2 ? s : s2;
        x->helo = i % 2 ? "mx.client.example" : "MX.Client.Example";
        struct pc_verdict v = message(&e, x, i % 2 ? "<a@DOM.example>" : "<b@dom.example>");
        ck_assert_msg(v.action == (i < 3 ? PC_CONTINUE : PC_TEMPFAIL), "message %d", i + 1);
    }
    session_free(s);
    session_free(s2);
    env_close(&e);
    event_base_free(base);
}
END_TEST

START_TEST(unix_socket)
{
    struct event_base *base = event_base_new();
    struct env e;
    char sock[200], lines[300];

    snprintf(sock, sizeof(sock), "%s/redis.sock", tmpdir);
    const char *argv[] = {"redis-server", "--port", "0",     "--unixsocket", sock, "--save", "",
                          "--appendonly", "no",     "--dir", tmpdir,         NULL};
    pid_t pid = spawn(argv);
    struct stat sb;
    for (int i = 0; i < 100 && stat(sock, &sb) != 0; i++)
        usleep(50000);
    ck_assert_msg(stat(sock, &sb) == 0, "no socket %s", sock);
    snprintf(lines, sizeof(lines), "  store = \"unix:%s?db=1\"", sock);
    env_open(&e, base, conf_text(lines, lim5));
    struct pc_session *s = session(&e, "192.0.2.95");
    for (int i = 0; i < 5; i++) {
        mail(s, "<a@b.example>", "<u@example.com>");
        struct pc_verdict v = stage(&e, s, PC_STAGE_EOM);
        ck_assert_msg(v.action == PC_CONTINUE && has_fact(s, "ratelimit", "msgs=ok"), "%d: %s",
                      i + 1, v.text);
        pc_txn_free(s);
    }
    ck_assert_int_eq(message(&e, s, "<a@b.example>").code, 450);
    session_free(s);
    env_close(&e);
    event_base_free(base);
    redis_stop(pid);
    unlink(sock);
}
END_TEST

/* pending_all - start an end-of-data check in each session; how many went pending */
static int pending_all(struct pc_session **v, int n)
{
    int pending = 0;

    for (int i = 0; i < n; i++) {
        struct tdoor *d = v[i]->door_ctx;
        struct pc_verdict tmp;
        d->done = false;
        mail(v[i], "<a@b.example>", "<u@example.com>");
        if (pc_chain_run(v[i], PC_STAGE_EOM, &tmp) == PC_PENDING)
            pending++;
        else
            d->done = true, d->v = tmp;
    }
    return pending;
}

/* wait_all - run the loop until every live session's stage is done */
static void wait_all(struct env *e, struct pc_session **v, int n)
{
    time_t until = time(NULL) + 30;

    for (;;) {
        bool all = true;
        for (int i = 0; i < n; i++)
            if (v[i] && !((struct tdoor *)v[i]->door_ctx)->done)
                all = false;
        if (all || time(NULL) > until)
            break;
        event_base_loop(e->base, EVLOOP_ONCE);
    }
}

START_TEST(many_pending)
{
    struct event_base *base = event_base_new();
    struct env e;
    struct pc_session *v[60];
    char ip[32];
    const int n = 60;

    env_open(&e, base, conf_text(store_line, two_policies));
    for (int i = 0; i < n; i++) {
        snprintf(ip, sizeof(ip), "10.0.%d.%d", i / 200, 1 + i % 200);
        v[i] = session(&e, ip);
    }
    /* Many checks in flight on one connection, answered in order. */
    ck_assert_int_eq(pending_all(v, n), n);
    wait_all(&e, v, n);
    for (int i = 0; i < n; i++) {
        ck_assert(((struct tdoor *)v[i]->door_ctx)->done);
        ck_assert(has_fact(v[i], "ratelimit", "soft=ok"));
        pc_txn_free(v[i]);
    }
    /* Frozen Redis with checks in flight; every third session goes away meanwhile. */
    kill(rpid, SIGSTOP);
    ck_assert_int_eq(pending_all(v, n), n);
    for (int i = 0; i < n; i += 3) {
        session_free(v[i]);
        v[i] = NULL;
    }
    wait_all(&e, v, n);
    for (int i = 0; i < n; i++) {
        if (v[i] == NULL)
            continue;
        ck_assert_msg(((struct tdoor *)v[i]->door_ctx)->done, "session %d still waiting", i);
        ck_assert_msg(has_fact(v[i], "ratelimit", "soft=error"), "session %d", i);
        pc_txn_free(v[i]);
    }
    kill(rpid, SIGCONT);
    /* Back to normal: the survivors' checks pass again. */
    bool back = false;
    for (int round = 0; round < 100 && !back; round++) {
        struct timeval tv = {0, 100000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
        struct pc_session *live[60];
        int m = 0;
        for (int i = 0; i < n; i++)
            if (v[i])
                live[m++] = v[i];
        pending_all(live, m);
        wait_all(&e, live, m);
        back = true;
        for (int i = 0; i < m; i++) {
            back &= has_fact(live[i], "ratelimit", "soft=ok");
            pc_txn_free(live[i]);
        }
    }
    ck_assert_msg(back, "no recovery");
    for (int i = 0; i < n; i++)
        if (v[i])
            session_free(v[i]);
    env_close(&e);
    event_base_free(base);
}
END_TEST

/* A peer that answers anything with a huge bulk string. */
struct liar {
    int lfd, port;
    pid_t pid;
};

/* liar_start - a child process serving one oversized reply per connection */
static void liar_start(struct liar *l)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};

    l->port = pick_port();
    l->lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1; /* as port_free() probed it: a port in TIME_WAIT must not fail the bind */
    setsockopt(l->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sa.sin_port = htons((uint16_t)l->port);
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    ck_assert_int_eq(bind(l->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(l->lfd, 8), 0);
    l->pid = fork();
    if (l->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        static char junk[65536];
        memset(junk, 'x', sizeof(junk));
        for (;;) {
            int c = accept(l->lfd, NULL, NULL);
            if (c < 0)
                continue;
            char in[4096];
            (void)!read(c, in, sizeof(in));
            (void)!write(c, "$10000000\r\n", 11);
            for (int i = 0; i < 100; i++)
                if (write(c, junk, sizeof(junk)) < 0)
                    break;
            close(c);
        }
    }
    close(l->lfd);
}

START_TEST(oversized_reply)
{
    struct event_base *base = event_base_new();
    struct env e;
    struct liar l;
    char line[128];

    liar_start(&l);
    snprintf(line, sizeof(line), "  store = \"redis://127.0.0.1:%d/0\"", l.port);
    env_open(&e, base, conf_text(line, two_policies));
    struct pc_session *s = session(&e, "192.0.2.50");
    mail(s, "<a@b.example>", "<u@example.com>");
    struct pc_verdict v = stage(&e, s, PC_STAGE_EOM);
    ck_assert_int_eq(v.action, PC_CONTINUE);
    ck_assert(has_fact(s, "ratelimit", "soft=error"));
    pc_txn_free(s);
    session_free(s);
    env_close(&e);
    event_base_free(base);
    kill(l.pid, SIGKILL);
    waitpid(l.pid, NULL, 0);
}
END_TEST

/* sentinel_start - a Sentinel watching the master on mport */
static pid_t sentinel_start(int port, int mport, int n)
{
    char path[256], p[16];
    snprintf(path, sizeof(path), "%s/sentinel%d.conf", tmpdir, n);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "port %d\nbind 127.0.0.1\ndir %s\n"
            "sentinel monitor pcmaster 127.0.0.1 %d 2\n"
            "sentinel down-after-milliseconds pcmaster 1000\n"
            "sentinel failover-timeout pcmaster 5000\n"
            "sentinel parallel-syncs pcmaster 1\n",
            port, tmpdir, mport);
    fclose(f);
    snprintf(p, sizeof(p), "%d", port);
    const char *argv[] = {"redis-server", path, "--sentinel", NULL};
    pid_t pid = spawn(argv);
    for (int i = 0; i < 100 && !redis_ping(port); i++)
        usleep(50000);
    ck_assert_msg(redis_ping(port), "sentinel on %d did not start", port);
    return pid;
}

START_TEST(sentinel_failover)
{
    struct event_base *base = event_base_new();
    struct env e;
    int mport = rport, rp = pick_port(), sp[3];
    pid_t replica = redis_start(rp, mport), sent[3];
    char lines[512];

    for (int i = 0; i < 3; i++) {
        sp[i] = pick_port();
        sent[i] = sentinel_start(sp[i], mport, i);
    }
    /* Wait for the replica to be in sync, so that the counters survive the failover. */
    for (int i = 0; i < 100 && redis_cmd(mport, "WAIT 1 100") < 1; i++)
        usleep(100000);
    snprintf(lines, sizeof(lines),
             "  sentinels = { \"127.0.0.1:%d\", \"127.0.0.1:%d\", \"127.0.0.1:%d\" }\n"
             "  sentinel_master = \"pcmaster\"\n",
             sp[0], sp[1], sp[2]);
    env_open(&e, base, conf_text(lines, lim5));
    struct pc_session *s = session(&e, "192.0.2.60");
    for (int i = 0; i < 3; i++) {
        struct pc_verdict v = message(&e, s, "<a@b.example>");
        ck_assert_msg(v.action == PC_CONTINUE, "message %d: %s", i + 1, pc_action_name(v.action));
    }
    ck_assert_msg(replica_synced(mport, rp), "the replica did not catch up");
    ck_assert(our_client(mport));
    /* The master dies; the Sentinels promote the replica; we follow. */
    redis_stop(rpid);
    rpid = 0;
    int ok = 0, tries = 0;
    while (ok < 2 && tries++ < 300) {
        struct timeval tv = {0, 100000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
        mail(s, "<a@b.example>", "<u@example.com>");
        struct pc_verdict v = stage(&e, s, PC_STAGE_EOM);
        if (!has_fact(s, "ratelimit", "msgs=error")) {
            ck_assert_msg(v.action == PC_CONTINUE, "after failover: %s %d %s",
                          pc_action_name(v.action), v.code, v.text);
            ok++;
        }
        pc_txn_free(s);
    }
    ck_assert_msg(ok == 2, "no answer from the promoted replica");
    /* 3 before, 2 after: the 6th is refused, so the count went across the failover. */
    ck_assert_int_eq(message(&e, s, "<a@b.example>").code, 450);
    session_free(s);
    env_close(&e);
    event_base_free(base);
    for (int i = 0; i < 3; i++)
        redis_stop(sent[i]);
    redis_stop(replica);
}
END_TEST

START_TEST(sentinel_switch_master)
{
    struct event_base *base = event_base_new();
    struct env e;
    int mport = rport, rp = pick_port(), sp[3];
    pid_t replica = redis_start(rp, mport), sent[3];
    char lines[512], ok_text[64];

    for (int i = 0; i < 3; i++) {
        sp[i] = pick_port();
        sent[i] = sentinel_start(sp[i], mport, i);
    }
    snprintf(lines, sizeof(lines),
             "  sentinels = { \"127.0.0.1:%d\", \"127.0.0.1:%d\", \"127.0.0.1:%d\" }\n"
             "  sentinel_master = \"pcmaster\"\n",
             sp[0], sp[1], sp[2]);
    env_open(&e, base, conf_text(lines, lim5));
    struct pc_session *s = session(&e, "192.0.2.61");
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(message(&e, s, "<a@b.example>").action, PC_CONTINUE);
    ck_assert(our_client(mport));
    ck_assert_msg(replica_synced(mport, rp), "the replica did not catch up");
    /* A manual failover: both servers stay up, the old master becomes a replica. The
     * Sentinels announce +switch-master; we must end up writing to the new master. */
    bool asked = false;
    for (int i = 0; i < 100 && !asked; i++) {
        redis_str(sp[0], "SENTINEL FAILOVER pcmaster", ok_text, sizeof(ok_text));
        asked = strcmp(ok_text, "OK") == 0;
        if (!asked)
            usleep(100000); /* the Sentinels may not know the replica yet */
    }
    ck_assert_msg(asked, "SENTINEL FAILOVER: %s", ok_text);
    bool moved = false;
    for (int i = 0; i < 300 && !moved; i++) {
        struct timeval tv = {0, 100000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
        moved = our_client(rp) && !our_client(mport);
    }
    ck_assert_msg(moved, "the store did not follow the failover");
    /* 2 before, 3 after: the 6th is refused, so the counter went across. */
    int ok = 0;
    for (int i = 0; i < 50 && ok < 3; i++) {
        mail(s, "<a@b.example>", "<u@example.com>");
        struct pc_verdict v = stage(&e, s, PC_STAGE_EOM);
        if (!has_fact(s, "ratelimit", "msgs=error")) {
            ck_assert_msg(v.action == PC_CONTINUE, "after failover: %d %s", v.code, v.text);
            ok++;
        }
        pc_txn_free(s);
    }
    ck_assert_int_eq(ok, 3);
    ck_assert_int_eq(message(&e, s, "<a@b.example>").code, 450);
    session_free(s);
    env_close(&e);
    event_base_free(base);
    for (int i = 0; i < 3; i++)
        redis_stop(sent[i]);
    redis_stop(replica);
}
END_TEST

/* cluster_state_ok - CLUSTER INFO on port says cluster_state:ok */
static bool cluster_state_ok(int port)
{
    char info[4096];

    redis_str(port, "CLUSTER INFO", info, sizeof(info));
    return strstr(info, "cluster_state:ok") != NULL;
}

/* cluster_role_master - ROLE on port answers master */
static bool cluster_role_master(int port)
{
    char role[64];

    redis_str(port, "ROLE", role, sizeof(role));
    return strcmp(role, "master") == 0;
}

/* cluster_start - six cluster-enabled servers, made a cluster of three masters with one
 * replica each by redis-cli, as the Redis docs tell an operator */
static void cluster_start(int *port, pid_t *pid)
{
    char p[6][16], bus[6][16], dir[6][200], cmd[1024];
    size_t o;

    for (int i = 0; i < 6; i++) {
        port[i] = pick_port();
        snprintf(p[i], sizeof(p[i]), "%d", port[i]);
        /* The bus port would be port + 10000, in the ephemeral range: choose it too. */
        snprintf(bus[i], sizeof(bus[i]), "%d", pick_port());
        /* Each node its own directory: replicas save the master's RDB there during a full
         * sync, and a shared dump.rdb would give one node another's data (or an earlier
         * cluster's, at start). */
        snprintf(dir[i], sizeof(dir[i]), "%s/node-%d-%d", tmpdir, (int)getpid(), port[i]);
        ck_assert_int_eq(mkdir(dir[i], 0700), 0);
        const char *argv[] = {"redis-server",
                              "--port",
                              p[i],
                              "--bind",
                              "127.0.0.1",
                              "--save",
                              "",
                              "--appendonly",
                              "no",
                              "--dir",
                              dir[i],
                              "--cluster-enabled",
                              "yes",
                              "--cluster-config-file",
                              "nodes.conf",
                              "--cluster-node-timeout",
                              "1000",
                              "--cluster-port",
                              bus[i],
                              NULL};
        pid[i] = spawn(argv);
    }
    for (int i = 0; i < 6; i++) {
        for (int k = 0; k < 100 && !redis_ping(port[i]); k++)
            usleep(50000);
        ck_assert_msg(redis_ping(port[i]), "cluster node on %d did not start", port[i]);
    }
    o = (size_t)snprintf(cmd, sizeof(cmd), "redis-cli --cluster create");
    for (int i = 0; i < 6; i++)
        o += (size_t)snprintf(cmd + o, sizeof(cmd) - o, " 127.0.0.1:%d", port[i]);
    snprintf(cmd + o, sizeof(cmd) - o, " --cluster-replicas 1 --cluster-yes >%s/cli.log 2>&1",
             tmpdir);
    if (system(cmd) != 0) {
        char log[600] = "";
        snprintf(cmd, sizeof(cmd), "%s/cli.log", tmpdir);
        FILE *f = fopen(cmd, "r");
        if (f) {
            fseek(f, -(long)sizeof(log) + 1, SEEK_END);
            log[fread(log, 1, sizeof(log) - 1, f)] = 0;
            fclose(f);
        }
        ck_abort_msg("redis-cli --cluster create failed: ...%s", log);
    }
    bool ok = false;
    for (int k = 0; k < 200 && !ok; k++) {
        ok = true;
        for (int i = 0; i < 6; i++)
            ok = ok && cluster_state_ok(port[i]);
        if (!ok)
            usleep(100000);
    }
    ck_assert_msg(ok, "the cluster did not come up");
}

/* cluster_synced - the master's replica has everything written so far: WAIT counts the
 * replicas that acknowledged this connection's own last write, so write one (into the slot
 * of our counters, by their hash tag) and wait for it on the same connection */
static bool cluster_synced(int port)
{
    struct timeval tv = {2, 0};
    char key[200], tag[40];
    bool ok = false;

    redis_str(port, "RANDOMKEY", key, sizeof(key));
    const char *o = strchr(key, '{'), *c = o ? strchr(o, '}') : NULL;
    if (c == NULL || (size_t)(c - o) >= sizeof(tag))
        return false;
    snprintf(tag, sizeof(tag), "%.*s", (int)(c - o + 1), o);
    redisContext *ctx = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (ctx && !ctx->err) {
        redisSetTimeout(ctx, tv);
        redisReply *r = redisCommand(ctx, "SET %ssync 1", tag);
        if (r)
            freeReplyObject(r);
        for (int i = 0; i < 50 && !ok; i++) {
            r = redisCommand(ctx, "WAIT 1 100");
            ok = r && r->type == REDIS_REPLY_INTEGER && r->integer >= 1;
            if (r)
                freeReplyObject(r);
        }
    }
    if (ctx)
        redisFree(ctx);
    return ok;
}

/* cluster_owner - the index of the master holding a portcullis key, or -1 */
static int cluster_owner(const int *port)
{
    for (int i = 0; i < 6; i++)
        if (cluster_role_master(port[i]) && redis_cmd(port[i], "DBSIZE") > 0)
            return i;
    return -1;
}

START_TEST(cluster_slot_of_keys)
{
    /* The cluster specification's example: CRC16 of "123456789" is 0x31C3. */
    ck_assert_uint_eq(pc_rl_cluster_slot("123456789", 9), 0x31c3);
    ck_assert_uint_eq(pc_rl_cluster_slot("x{123456789}y", 13), 0x31c3);
    ck_assert_uint_eq(pc_rl_cluster_slot("{}123456789", 11), pc_rl_cluster_slot("{}123456789", 11));
    /* An empty tag hashes the whole key; only the first tag counts. */
    ck_assert_uint_ne(pc_rl_cluster_slot("{}a", 3), pc_rl_cluster_slot("{}b", 3));
    ck_assert_uint_eq(pc_rl_cluster_slot("{a}{b}", 6), pc_rl_cluster_slot("a", 1));
}
END_TEST

START_TEST(cluster_failover)
{
    struct event_base *base = event_base_new();
    struct env a, b;
    int port[6];
    pid_t pid[6];
    char lines[512];

    cluster_start(port, pid);
    /* Two seeds, one of which may well be a replica: the map comes from CLUSTER SLOTS. */
    snprintf(lines, sizeof(lines), "  store = \"redis-cluster://127.0.0.1:%d,127.0.0.1:%d\"\n",
             port[5], port[0]);
    /* Two limits at one stage, keyed differently: one check, so one slot. 5/1h: no unit
     * comes back however long the failover takes. */
    static const char lims[] =
        "limit \"msgs\" { key = { \"client_ip\" } count = \"messages\" rate = \"5/1h\" }\n"
        "limit \"pairs\" { key = { \"client_ip\", \"sender\" } count = \"messages\" "
        "rate = \"100/1h\" }";
    env_open(&a, base, conf_text(lines, lims));
    env_open(&b, base, conf_text(lines, lims));
    struct pc_session *sa = session(&a, "192.0.2.70"), *sb = session(&b, "192.0.2.70");
    for (int i = 0; i < 3; i++) {
        struct pc_verdict v = message(i % 2 ? &b : &a, i % 2 ? sb : sa, "<a@b.example>");
        ck_assert_msg(v.action == PC_CONTINUE, "message %d: %s %d %s", i + 1,
                      pc_action_name(v.action), v.code, v.text);
        ck_assert(!has_fact(i % 2 ? sb : sa, "ratelimit", "msgs=error"));
    }
    int m = cluster_owner(port);
    ck_assert_msg(m >= 0, "no master holds the counters");
    ck_assert_int_eq(redis_cmd(port[m], "DBSIZE"), 2); /* both keys, one slot, one node */
    ck_assert_int_eq(cluster_owner(port), m);
    ck_assert_msg(cluster_synced(port[m]), "the replica of %d did not acknowledge the counters",
                  port[m]);
    /* The master dies without a word; its replica is promoted after cluster-node-timeout. */
    kill(pid[m], SIGKILL);
    waitpid(pid[m], NULL, 0);
    pid[m] = 0;
    int ok = 0;
    for (int tries = 0; ok < 2 && tries < 300; tries++) {
        struct timeval tv = {0, 100000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
        struct env *e = ok % 2 ? &b : &a;
        struct pc_session *s = ok % 2 ? sb : sa;
        mail(s, "<a@b.example>", "<u@example.com>");
        struct pc_verdict v = stage(e, s, PC_STAGE_EOM);
        if (!has_fact(s, "ratelimit", "msgs=error")) {
            ck_assert_msg(v.action == PC_CONTINUE, "after failover: %s %d %s",
                          pc_action_name(v.action), v.code, v.text);
            ok++;
        }
        pc_txn_free(s);
    }
    ck_assert_msg(ok == 2, "no answer from the promoted replica");
    /* 3 before, 2 after, through two gateways: the 6th is refused by either. */
    ck_assert_int_eq(message(&b, sb, "<a@b.example>").code, 450);
    ck_assert_int_eq(message(&a, sa, "<a@b.example>").code, 450);
    session_free(sa);
    session_free(sb);
    env_close(&a);
    env_close(&b);
    event_base_free(base);
    for (int i = 0; i < 6; i++)
        redis_stop(pid[i]);
}
END_TEST

/* cluster_msg - one message through gateway e; true when the store answered */
static bool cluster_msg(struct env *e, struct pc_session *s, struct pc_verdict *out)
{
    mail(s, "<a@b.example>", "<u@example.com>");
    *out = stage(e, s, PC_STAGE_EOM);
    bool answered = !has_fact(s, "ratelimit", "msgs=error");
    pc_txn_free(s);
    return answered;
}

START_TEST(cluster_reshard)
{
    struct event_base *base = event_base_new();
    struct env e;
    int port[6];
    pid_t pid[6];
    char lines[512], key[200], cmd[600], mid[64], tid[64], out[64];
    struct pc_verdict v;

    cluster_start(port, pid);
    snprintf(lines, sizeof(lines), "  store = \"redis-cluster://127.0.0.1:%d\"\n", port[0]);
    env_open(&e, base,
             conf_text(lines, "limit \"msgs\" { key = { \"client_ip\" } count = \"messages\" "
                              "rate = \"5/1h\" }"));
    struct pc_session *s = session(&e, "192.0.2.71");
    for (int i = 0; i < 2; i++) {
        ck_assert(cluster_msg(&e, s, &v));
        ck_assert_int_eq(v.action, PC_CONTINUE);
    }
    int m = cluster_owner(port), t = -1;
    ck_assert_int_ge(m, 0);
    for (int i = 0; i < 6 && t < 0; i++)
        if (i != m && cluster_role_master(port[i]))
            t = i;
    ck_assert_int_ge(t, 0);
    redis_str(port[m], "RANDOMKEY", key, sizeof(key));
    snprintf(cmd, sizeof(cmd), "CLUSTER KEYSLOT %s", key);
    long long slot = redis_cmd(port[m], cmd);
    ck_assert_int_ge(slot, 0);
    redis_str(port[m], "CLUSTER MYID", mid, sizeof(mid));
    redis_str(port[t], "CLUSTER MYID", tid, sizeof(tid));
    /* Resharding as redis-cli does it: the slot migrates from m to t (cluster spec, "Live
     * resharding"); its key moves now, so m answers ASK and t serves the check after ASKING. */
    snprintf(cmd, sizeof(cmd), "CLUSTER SETSLOT %lld IMPORTING %s", slot, mid);
    redis_str(port[t], cmd, out, sizeof(out));
    ck_assert_str_eq(out, "OK");
    snprintf(cmd, sizeof(cmd), "CLUSTER SETSLOT %lld MIGRATING %s", slot, tid);
    redis_str(port[m], cmd, out, sizeof(out));
    ck_assert_str_eq(out, "OK");
    snprintf(cmd, sizeof(cmd), "MIGRATE 127.0.0.1 %d %s 0 5000", port[t], key);
    redis_str(port[m], cmd, out, sizeof(out));
    ck_assert_str_eq(out, "OK");
    ck_assert(cluster_msg(&e, s, &v));
    ck_assert_msg(v.action == PC_CONTINUE, "during migration: %d %s", v.code, v.text);
    ck_assert_int_eq(redis_cmd(port[m], "DBSIZE"), 0);
    ck_assert_int_eq(redis_cmd(port[t], "DBSIZE"), 1);
    /* The migration ends: every master learns the new owner; m now answers MOVED. */
    snprintf(cmd, sizeof(cmd), "CLUSTER SETSLOT %lld NODE %s", slot, tid);
    for (int i = 0; i < 6; i++)
        if (cluster_role_master(port[i]))
            redis_str(port[i], cmd, out, sizeof(out));
    for (int i = 0; i < 2; i++) {
        ck_assert(cluster_msg(&e, s, &v));
        ck_assert_msg(v.action == PC_CONTINUE, "after migration: %d %s", v.code, v.text);
    }
    /* 2 + 1 + 2: the 6th is refused, so the counter went along with its slot. */
    ck_assert(cluster_msg(&e, s, &v));
    ck_assert_int_eq(v.code, 450);
    session_free(s);
    env_close(&e);
    event_base_free(base);
    for (int i = 0; i < 6; i++)
        redis_stop(pid[i]);
}
END_TEST

/* rl_redis_suite - every case gets a fresh server */
static Suite *rl_redis_suite(void)
{
    Suite *s = suite_create("rl_redis");
    TCase *tc = tcase_create("redis");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, five_then_450);
    tcase_add_test(tc, two_gateways_share);
    tcase_add_test(tc, memory_same_as_redis);
    tcase_add_test(tc, redis_stopped);
    tcase_add_test(tc, redis_frozen);
    tcase_add_test(tc, noscript_fallback);
    tcase_add_test(tc, connections_and_recipients);
    tcase_add_test(tc, rule_chooses_limit);
    tcase_add_test(tc, key_fields);
    tcase_add_test(tc, auth_and_refusal);
    tcase_add_test(tc, unix_socket);
    tcase_add_test(tc, many_pending);
    tcase_add_test(tc, oversized_reply);
    tcase_add_test(tc, sentinel_failover);
    tcase_add_test(tc, sentinel_switch_master);
    suite_add_tcase(s, tc);
    /* CK_RUN_CASE=cluster runs only these. */
    TCase *cl = tcase_create("cluster");
    tcase_set_timeout(cl, 90);
    tcase_add_test(cl, cluster_slot_of_keys);
    tcase_add_test(cl, cluster_failover);
    tcase_add_test(cl, cluster_reshard);
    suite_add_tcase(s, cl);
    return s;
}

/* main - run the suite */
int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/pc-rl-test.XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return EXIT_FAILURE;
    pc_log_set_verbose(getenv("RL_TEST_LOG") ? 0 : -1);
    SRunner *sr = srunner_create(rl_redis_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        failed++;
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
