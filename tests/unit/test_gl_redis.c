/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_gl_redis - the greylist script on the rate limit store's Redis connection
 * DESCRIPTION
 *	A real redis-server on 127.0.0.1 (a free port from 25000-25999),
 *	driven through pc_rl_redis_eval() on an event_base. The Lua script
 *	must follow the same rule as pc_gl_step(): first attempt deferred for
 *	the delay, an early retry deferred for what is left, a retry after the
 *	delay promoted (key kept for the lifetime), then allowed; a missed
 *	window starts afresh. Also: the script is sent with EVAL once when
 *	Redis does not know it (NOSCRIPT, again after SCRIPT FLUSH); a Redis
 *	error reply (WRONGTYPE) and a stopped Redis are errors, never an
 *	answer; the call on an in-process store is refused at once.
 */
#include <arpa/inet.h>
#include <check.h>
#include <event2/event.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "filters/filter.h"
#include "lib/log.h"
#include "policy/greylist.h"
#include "policy/ratelimit.h"

static struct event_base *base;

/* free_port - a port in 25000-25999 nothing listens on, spread by pid */
static int free_port(void)
{
    for (int i = 0; i < 1000; i++) {
        int p = 25000 + (int)((getpid() * 7 + i) % 1000);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
        bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        if (ok)
            return p;
    }
    ck_abort_msg("no free port");
    return -1;
}

/* redis_run - start redis-server on port (dies with us) and wait for PING */
static pid_t redis_run(int port)
{
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    pid_t pid = fork();

    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 1);
        dup2(null, 2);
        execlp("redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", "/tmp", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        struct timeval tv = {0, 200000};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        bool ok = c && !c->err;
        if (c)
            redisFree(c);
        if (ok)
            return pid;
        usleep(50000);
    }
    ck_abort_msg("redis-server did not start");
    return -1;
}

/* redis_do - one synchronous command, its integer reply (or 0 for a status) */
static long long redis_do(int port, const char *cmd)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    long long v = -1;

    ck_assert(c && !c->err);
    redisReply *r = redisCommand(c, cmd);
    if (r && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r && r->type == REDIS_REPLY_STATUS)
        v = 0;
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return v;
}

struct answer {
    bool done;
    struct pc_rl_result res;
};

/* on_answer - the store's callback */
static void on_answer(void *arg, const struct pc_rl_result *res)
{
    struct answer *a = arg;

    a->res = *res;
    a->done = true;
}

static struct pc_rl_script script;

/* attempt - one greylist attempt for key; the outcome, or -1 on error; *retry set */
static int attempt(struct pc_rl_store *st, const char *key, const char *delay, const char *window,
                   const char *life, long long *retry)
{
    const char *keys[1] = {key}, *args[3] = {delay, window, life};
    struct answer a = {0};
    struct pc_rl_req *req;

    if (pc_rl_redis_eval(st, &script, keys, 1, args, 3, &a.res, on_answer, &a, &req) ==
        PC_RL_PENDING)
        for (int i = 0; i < 500 && !a.done; i++)
            event_base_loop(base, EVLOOP_ONCE);
    if (a.res.error || a.res.nints != 2)
        return -1;
    *retry = a.res.ints[1];
    return (int)a.res.ints[0];
}

/* store_on - a Redis store on port, connected */
static struct pc_rl_store *store_on(int port)
{
    char url[64];
    struct pc_err err = {{0}};
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/0", port);
    struct pc_rl_store_conf sc = {.url = url, .timeout_ms = 500};
    struct pc_rl_store *st = pc_rl_redis_create(&sc, &err);

    ck_assert_msg(st != NULL, "%s", err.msg);
    ck_assert_int_eq(pc_rl_start(st, base), 0);
    return st;
}

START_TEST(script_follows_the_rule)
{
    int port = free_port();
    pid_t pid = redis_run(port);
    struct pc_rl_store *st = store_on(port);
    long long retry = -1;

    ck_assert_int_eq(attempt(st, "gl:k1", "400", "5000", "60000", &retry), PC_GL_DEFERRED);
    ck_assert_int_eq(retry, 400);
    ck_assert_uint_eq(st->stats.noscript, 1); /* never loaded: sent once with EVAL */
    usleep(100000);
    ck_assert_int_eq(attempt(st, "gl:k1", "400", "5000", "60000", &retry), PC_GL_DEFERRED);
    ck_assert_msg(retry > 0 && retry <= 300, "retry %lld", retry);
    long long ttl = redis_do(port, "PTTL gl:k1");
    ck_assert_msg(ttl > 4000 && ttl <= 5000, "pending ttl %lld", ttl);
    ck_assert_int_eq(attempt(st, "gl:k2", "400", "5000", "60000", &retry), PC_GL_DEFERRED);
    usleep(350000);
    ck_assert_int_eq(attempt(st, "gl:k1", "400", "5000", "60000", &retry), PC_GL_PROMOTED);
    ck_assert_int_eq(attempt(st, "gl:k1", "400", "5000", "60000", &retry), PC_GL_ALLOWED);
    ttl = redis_do(port, "PTTL gl:k1");
    ck_assert_msg(ttl > 59000 && ttl <= 60000, "allowed ttl %lld", ttl);
    ck_assert_uint_eq(st->stats.noscript, 1);
    /* Redis forgets the script: once more with EVAL, same answers. */
    redis_do(port, "SCRIPT FLUSH");
    ck_assert_int_eq(attempt(st, "gl:k1", "400", "5000", "60000", &retry), PC_GL_ALLOWED);
    ck_assert_uint_eq(st->stats.noscript, 2);
    /* A missed window: the pending key is gone and the next attempt starts afresh. */
    ck_assert_int_eq(attempt(st, "gl:k3", "400", "600", "60000", &retry), PC_GL_DEFERRED);
    usleep(700000);
    ck_assert_int_eq(attempt(st, "gl:k3", "400", "600", "60000", &retry), PC_GL_DEFERRED);
    ck_assert_int_eq(retry, 400);
    /* The key holds something else: Redis' error is an error, not an answer. */
    redis_do(port, "HSET gl:k4 a b");
    ck_assert_int_eq(attempt(st, "gl:k4", "400", "5000", "60000", &retry), -1);
    pc_rl_store_free(st);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}
END_TEST

START_TEST(redis_down_is_an_error)
{
    int port = free_port(); /* nothing listens there */
    struct pc_rl_store *st = store_on(port);
    long long retry;

    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(attempt(st, "gl:k", "400", "5000", "60000", &retry), -1);
    pc_rl_store_free(st);
    /* An in-process store cannot run scripts: refused at once. */
    struct pc_rl_store *mem = pc_rl_memory_create(100, NULL);
    const char *keys[1] = {"k"}, *args[3] = {"1", "2", "3"};
    struct pc_rl_result res;
    struct pc_rl_req *req;
    ck_assert_int_eq(pc_rl_redis_eval(mem, &script, keys, 1, args, 3, &res, on_answer, NULL, &req),
                     PC_RL_DONE);
    ck_assert(res.error);
    pc_rl_store_free(mem);
}
END_TEST

/* main - run the suite */
int main(void)
{
    base = event_base_new();
    signal(SIGPIPE, SIG_IGN);
    pc_log_init("test_gl_redis", PC_LOG_STDERR, 0);
    pc_log_set_verbose(-1);
    pc_rl_script_init(&script, pc_gl_redis_script());
    Suite *s = suite_create("gl_redis");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, script_follows_the_rule);
    tcase_add_test(tc, redis_down_is_an_error);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    event_base_free(base);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
