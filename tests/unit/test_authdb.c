/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_authdb 1 - credential back ends: password file, Dovecot, failure counter
 * DESCRIPTION
 *	The password file is made at test time with hashes from crypt_rn
 *	(yescrypt, bcrypt, sha512-crypt) and checked on a real worker pool and
 *	loop. The Dovecot back end meets a real Dovecot (dovecot-core), run
 *	privately as tests/PEERS.md describes: its own base_dir in a scratch
 *	directory, a passwd-file passdb, the auth service's unix listener and
 *	an inet listener on a free loopback port, stopped by its pid. The
 *	Dovecot cases are skipped (and say so) only when dovecot is not
 *	installed.
 * SEE ALSO
 *	RFC 4954 section 6, crypt(5)
 */
#include <arpa/inet.h>
#include <check.h>
#include <crypt.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/filter.h"
#include "gateway/authdb.h"
#include "gateway/authdb_int.h"
#include "core/worker.h"

static char dir[] = "/tmp/pc-authdb-XXXXXX";
static struct event_base *base;
static int pending;
static void dovecot_stop(void);

struct answer {
    bool done, in_start;
    enum pc_auth_result res;
    struct timeval at;
};

/* on_answer - record it; stop the loop when every answer is in */
static void on_answer(enum pc_auth_result res, void *arg)
{
    struct answer *a = arg;
    ck_assert_msg(!a->done, "answered twice");
    ck_assert_msg(!a->in_start, "answered from inside pc_authdb_start");
    a->done = true;
    a->res = res;
    gettimeofday(&a->at, NULL);
    if (--pending == 0)
        event_base_loopbreak(base);
}

/* guard_fired - a test's own limit, in case an answer never comes */
static void guard_fired(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    event_base_loopbreak(base);
}

/* check_one - start one check and wait for it. Each check comes from its own client address:
 * Dovecot's auth penalty delays every answer to an address that failed before. */
static enum pc_auth_result check_one(struct pc_authdb *db, const char *user, const char *pass)
{
    static int client;
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.%d.%d", 1 + client / 250, 1 + client % 250);
    client++;
    struct answer a = {0};
    struct pc_auth_creds c = {.user = user, .pass = pass, .client_addr = addr};
    struct timeval limit = {20, 0};
    struct event *guard = evtimer_new(base, guard_fired, NULL);

    pending = 1;
    a.in_start = true;
    ck_assert_ptr_nonnull(pc_authdb_start(db, &c, on_answer, &a));
    a.in_start = false;
    evtimer_add(guard, &limit);
    event_base_dispatch(base);
    event_free(guard);
    ck_assert_msg(a.done, "no answer for %s", user);
    return a.res;
}

/* hash_cost - a crypt(3) hash of pw with a fresh salt of the given prefix and cost (0: the
 * default) */
static void hash_cost(const char *prefix, unsigned long cost, const char *pw, char *out,
                      size_t size)
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data cd;
    memset(&cd, 0, sizeof(cd));
    ck_assert_ptr_nonnull(crypt_gensalt_rn(prefix, cost, NULL, 0, salt, sizeof(salt)));
    const char *h = crypt_rn(pw, salt, &cd, sizeof(cd));
    ck_assert(h && h[0] != '*');
    snprintf(out, size, "%s", h);
}

/* hash - the same at the default cost */
static void hash(const char *prefix, const char *pw, char *out, size_t size)
{
    hash_cost(prefix, 0, pw, out, size);
}

/* write_file - a scratch file readable by Dovecot's unprivileged auth process */
static const char *write_file(const char *name, const char *text)
{
    static char path[8][300];
    static int slot;
    char *p = path[slot++ % 8];
    snprintf(p, 300, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    chmod(p, 0644);
    return p;
}

static char passwd_text[2048];

/* setup - the scratch directory and a password file with each hash family */
static void setup(void)
{
    char y[256], b[256], s6[256];
    snprintf(dir, sizeof(dir), "/tmp/pc-authdb-XXXXXX"); /* again for each test (CK_FORK=no) */
    ck_assert_ptr_nonnull(mkdtemp(dir));
    chmod(dir, 0755);
    hash("$y$", "secret", y, sizeof(y));
    hash("$2b$", "bcrypt-pw", b, sizeof(b));
    hash("$6$", "sha-pw", s6, sizeof(s6));
    snprintf(passwd_text, sizeof(passwd_text),
             "# users\n\nalice:%s\nbob:{BLF-CRYPT}%s::::::\ncarol:{SHA512-CRYPT}%s\n"
             "locked:!%s\n",
             y, b, s6, y);
    write_file("passwd", passwd_text);
    base = event_base_new();
}

/* teardown - remove the scratch directory */
static void teardown(void)
{
    char cmd[400];
    dovecot_stop();
    event_base_free(base);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

START_TEST(passwd_file)
{
    struct pc_err err = {{0}};
    struct pc_workers *w = pc_workers_create(base, 2);
    char path[300];
    snprintf(path, sizeof(path), "%s/passwd", dir);
    struct pc_authdb *db = pc_authdb_passwd_new(path, "t.conf:3", w, &err);
    ck_assert_msg(db != NULL, "%s", err.msg);

    ck_assert_int_eq(check_one(db, "alice", "secret"), PC_AUTH_OK);  /* yescrypt */
    ck_assert_int_eq(check_one(db, "ALICE", "secret"), PC_AUTH_OK);  /* case of the name */
    ck_assert_int_eq(check_one(db, "bob", "bcrypt-pw"), PC_AUTH_OK); /* bcrypt, extra fields */
    ck_assert_int_eq(check_one(db, "carol", "sha-pw"), PC_AUTH_OK);  /* sha512-crypt */
    ck_assert_int_eq(check_one(db, "alice", "Secret"), PC_AUTH_FAIL);
    ck_assert_int_eq(check_one(db, "alice", ""), PC_AUTH_FAIL);
    ck_assert_int_eq(check_one(db, "carol", "bcrypt-pw"), PC_AUTH_FAIL);
    ck_assert_int_eq(check_one(db, "nobody", "secret"), PC_AUTH_FAIL);
    ck_assert_int_eq(check_one(db, "locked", "secret"), PC_AUTH_FAIL); /* "!" locks */

    /* Reload: a bad file keeps the old table; a good one replaces it. */
    write_file("passwd", "alice:{PLAIN}secret\n");
    ck_assert_int_eq(pc_authdb_passwd_reload(db, &err), -1);
    ck_assert_msg(strstr(err.msg, "passwd:1: unsupported {SCHEME}") != NULL, "%s", err.msg);
    ck_assert_int_eq(check_one(db, "alice", "secret"), PC_AUTH_OK);
    char h[256], text[400];
    hash("$y$", "new", h, sizeof(h));
    snprintf(text, sizeof(text), "alice:%s\n", h);
    write_file("passwd", text);
    ck_assert_int_eq(pc_authdb_passwd_reload(db, &err), 0);
    ck_assert_int_eq(check_one(db, "alice", "new"), PC_AUTH_OK);
    ck_assert_int_eq(check_one(db, "alice", "secret"), PC_AUTH_FAIL);
    ck_assert_int_eq(check_one(db, "bob", "bcrypt-pw"), PC_AUTH_FAIL);
    write_file("passwd", passwd_text);

    /* A cancelled check never calls back, and the pool still finishes it. */
    struct answer a = {0};
    struct pc_auth_creds c = {.user = "alice", .pass = "secret"};
    pc_auth_cancel(pc_authdb_start(db, &c, on_answer, &a));
    struct timeval half = {0, 500000};
    struct event *guard = evtimer_new(base, guard_fired, NULL);
    evtimer_add(guard, &half);
    event_base_dispatch(base);
    event_free(guard);
    ck_assert(!a.done);
    pc_authdb_free(db);
    pc_workers_destroy(w);
}
END_TEST

/* tick - the loop is alive */
static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    ++*(int *)arg;
}

START_TEST(passwd_off_the_loop)
{
    /* bcrypt at cost 12 takes a few hundred milliseconds: long enough for a 10 ms timer on the
     * loop to fire several times, unless the hash blocked the loop. */
    char h[256], text[400], path[300];
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data cd;
    memset(&cd, 0, sizeof(cd));
    ck_assert_ptr_nonnull(crypt_gensalt_rn("$2b$", 12, NULL, 0, salt, sizeof(salt)));
    snprintf(h, sizeof(h), "%s", crypt_rn("slow-pw", salt, &cd, sizeof(cd)));
    snprintf(text, sizeof(text), "slow:%s\n", h);
    write_file("passwd-slow", text);
    snprintf(path, sizeof(path), "%s/passwd-slow", dir);
    struct pc_err err = {{0}};
    struct pc_workers *w = pc_workers_create(base, 1);
    struct pc_authdb *db = pc_authdb_passwd_new(path, "t.conf:1", w, &err);
    ck_assert_msg(db != NULL, "%s", err.msg);
    int ticks = 0;
    struct event *t = event_new(base, -1, EV_PERSIST, tick, &ticks);
    struct timeval every = {0, 10000};
    event_add(t, &every);
    ck_assert_int_eq(check_one(db, "slow", "slow-pw"), PC_AUTH_OK);
    event_free(t);
    ck_assert_msg(ticks >= 3, "the loop ticked %d times during a hash", ticks);
    pc_authdb_free(db);
    pc_workers_destroy(w);
}
END_TEST

START_TEST(passwd_file_errors)
{
    static const struct {
        const char *text, *want;
    } t[] = {
        {"alice\n", "passwd-bad:1: expected user:hash"},
        {"# c\nalice:$1$abcdefgh$0123456789abcdefghij\n", "passwd-bad:2: not a yescrypt"},
        {"alice:abcdefghijklm\n", "passwd-bad:1: not a yescrypt"}, /* DES crypt */
        {"alice:{SSHA}abcdefghijklmnopqrs\n", "passwd-bad:1: unsupported {SCHEME}"},
        {"al ice:$6$saltsalt$0123456789abcdef\n", "passwd-bad:1: white space"},
        {":$6$saltsalt$0123456789abcdef\n", "passwd-bad:1: expected user:hash"},
        {"a:$6$saltsalt$0123456789abcdef\nA:$6$saltsalt$0123456789abcdef\n",
         "passwd-bad: a user appears twice"},
    };
    struct pc_err err;
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        const char *p = write_file("passwd-bad", t[i].text);
        memset(&err, 0, sizeof(err));
        ck_assert_int_eq(pc_authdb_passwd_check(p, "t.conf:7", &err), -1);
        ck_assert_msg(strncmp(err.msg, "t.conf:7: password_file ", 24) == 0 &&
                          strstr(err.msg, t[i].want) != NULL,
                      "case %zu: %s", i, err.msg);
    }
    ck_assert_int_eq(pc_authdb_passwd_check("/nonexistent/passwd", "t.conf:8", &err), -1);
    ck_assert_msg(strstr(err.msg, "No such file") != NULL, "%s", err.msg);
    /* The whole password never reaches an error message. */
    write_file("passwd-bad", "alice:{PLAIN}hunter2-secret\n");
    pc_authdb_passwd_check(write_file("passwd-bad", "alice:{PLAIN}hunter2-secret\n"), "x", &err);
    ck_assert_ptr_null(strstr(err.msg, "hunter2"));
}
END_TEST

START_TEST(failure_counter)
{
    struct pc_authfail *f = pc_authfail_new(3, 60, 16);
    time_t t0 = 1000000;

    ck_assert(!pc_authfail_over(f, "192.0.2.1", t0));
    ck_assert_uint_eq(pc_authfail_add(f, "192.0.2.1", t0), 1);
    ck_assert_uint_eq(pc_authfail_add(f, "192.0.2.1", t0 + 1), 2);
    ck_assert_uint_eq(pc_authfail_add(f, "2001:db8::1", t0 + 1), 1);
    ck_assert(!pc_authfail_over(f, "192.0.2.1", t0 + 2));
    ck_assert_uint_eq(pc_authfail_add(f, "192.0.2.1", t0 + 2), 3);
    ck_assert(pc_authfail_over(f, "192.0.2.1", t0 + 3));
    ck_assert(!pc_authfail_over(f, "2001:db8::1", t0 + 3));
    ck_assert(!pc_authfail_over(f, "192.0.2.1", t0 + 61)); /* the window ended */
    ck_assert_uint_eq(pc_authfail_add(f, "192.0.2.1", t0 + 61), 1);
    /* Many more addresses than slots: bounded, and the newest are counted. */
    char a[64];
    for (int i = 0; i < 1000; i++) {
        snprintf(a, sizeof(a), "198.51.100.%d", i % 250);
        pc_authfail_add(f, a, t0 + 100 + i);
    }
    ck_assert_uint_ge(pc_authfail_count(f, "198.51.100.249", t0 + 1100), 1);
    pc_authfail_free(f);
}
END_TEST

/* Dovecot, run privately. */
static pid_t dovecot_pid;
static int inet_port;

/* free_port - a loopback port nobody listens on now */
static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(bind(s, (struct sockaddr *)&sa, len), 0);
    getsockname(s, (struct sockaddr *)&sa, &len);
    close(s);
    return ntohs(sa.sin_port);
}

/* dovecot_stop - the master and its children by their pids (the auth process outlives its
 * master while it has clients), and wait until all are gone */
static void dovecot_stop(void)
{
    pid_t kids[32];
    int n = 0;
    char cmd[100];

    if (dovecot_pid <= 0)
        return;
    snprintf(cmd, sizeof(cmd), "ps -o pid= --ppid %d", (int)dovecot_pid);
    FILE *p = popen(cmd, "r");
    while (p && n < 32 && fscanf(p, "%d", &kids[n]) == 1)
        n++;
    if (p)
        pclose(p);
    /* As systemctl stop does (KillMode=control-group): every process of the service. */
    kill(dovecot_pid, SIGTERM);
    for (int i = 0; i < n; i++)
        kill(kids[i], SIGTERM);
    waitpid(dovecot_pid, NULL, 0);
    dovecot_pid = 0;
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 100 && kill(kids[i], 0) == 0; k++)
            usleep(50000);
}

/* dovecot_start - run dovecot -F on our configuration until its auth socket exists */
static void dovecot_start(void)
{
    char conf[2048], path[300], sock[300];
    struct stat st;
    if (inet_port == 0)
        inet_port = free_port();
    snprintf(sock, sizeof(sock), "%s/auth-client", dir);
    /* As a postmaster configures it for Postfix (doc.dovecot.org, "Postfix and Dovecot SASL"):
     * a passwd-file passdb, the auth service's client listener for the MTA's user only. */
    snprintf(conf, sizeof(conf),
             "base_dir = %s/run\nstate_dir = %s/state\nlog_path = %s/dovecot.log\n"
             "protocols =\nlisten = 127.0.0.1\nssl = no\nauth_mechanisms = plain "
             "login\nauth_verbose = yes\nauth_debug = yes\n"
             "passdb {\n  driver = passwd-file\n  args = scheme=CRYPT %s/passwd\n}\n"
             "userdb {\n  driver = static\n  args = uid=nobody gid=nogroup home=/nonexistent\n}\n"
             "service auth {\n  unix_listener %s {\n    mode = 0600\n    user = %s\n  }\n"
             "  inet_listener auth-inet {\n    address = 127.0.0.1\n    port = %d\n  }\n}\n",
             dir, dir, dir, dir, sock, getpwuid(getuid())->pw_name, inet_port);
    const char *cf = write_file("dovecot.conf", conf);
    unlink(sock);
    static int registered;
    if (!registered++)
        atexit(dovecot_stop); /* a failed assertion ends the test process */
    dovecot_pid = fork();
    ck_assert_int_ge(dovecot_pid, 0);
    if (dovecot_pid == 0) {
        snprintf(path, sizeof(path), "%s/dovecot.out", dir);
        if (freopen(path, "w", stdout) == NULL || freopen(path, "w", stderr) == NULL)
            _exit(126);
        execl("/usr/sbin/dovecot", "dovecot", "-F", "-c", cf, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200 && stat(sock, &st) != 0; i++)
        usleep(50000);
    ck_assert_msg(stat(sock, &st) == 0, "dovecot did not start (see %s)", dir);
    usleep(200000); /* the inet listener comes up with the same service */
}

/* dovecot_db - a back end on the unix socket or the inet listener */
static struct pc_authdb *dovecot_db(bool inet, unsigned timeout_ms)
{
    char spec[320];
    struct pc_err err = {{0}};
    if (inet)
        snprintf(spec, sizeof(spec), "inet:127.0.0.1:%d", inet_port);
    else
        snprintf(spec, sizeof(spec), "unix:%s/auth-client", dir);
    struct pc_authdb *db = pc_authdb_dovecot_new(base, spec, timeout_ms, &err);
    ck_assert_msg(db != NULL, "%s", err.msg);
    return db;
}

/* cheap_user - add user "many", password "secret", at the cheapest sha512-crypt (1,000 rounds).
 * Dovecot's auth process checks hashes one at a time on one CPU: at the default yescrypt cost
 * a loaded machine runs these cases past their deadlines, and they are about our client, not
 * about hashing. Before dovecot_start. */
static void cheap_user(void)
{
    char h[256], text[sizeof(passwd_text) + 300];
    hash_cost("$6$", 1000, "secret", h, sizeof(h));
    snprintf(text, sizeof(text), "%smany:{SHA512-CRYPT}%s\n", passwd_text, h);
    write_file("passwd", text);
}

/* dovecot_serving - after dovecot_start: wait, with a deadline no load reaches, until Dovecot
 * answers (its socket exists before its auth process has started) */
static void dovecot_serving(void)
{
    struct pc_authdb *db = dovecot_db(false, 20000);
    ck_assert_int_eq(check_one(db, "many", "secret"), PC_AUTH_OK);
    pc_authdb_free(db);
}

START_TEST(dovecot_answers)
{
    if (access("/usr/sbin/dovecot", X_OK) != 0) {
        fprintf(stderr, "test_authdb: SKIPPED dovecot cases: /usr/sbin/dovecot not installed\n");
        return;
    }
    dovecot_start();
    for (int inet = 0; inet < 2; inet++) {
        struct pc_authdb *db = dovecot_db(inet, 8000);
        ck_assert_int_eq(check_one(db, "alice", "secret"), PC_AUTH_OK);
        ck_assert_int_eq(check_one(db, "alice", "wrong"), PC_AUTH_FAIL);
        ck_assert_int_eq(check_one(db, "nobody", "secret"), PC_AUTH_FAIL);
        ck_assert_int_eq(check_one(db, "carol", "sha-pw"), PC_AUTH_OK);
        ck_assert_uint_eq(pc_authdb_dovecot_connects(db), 1);
        pc_authdb_free(db);
    }
    dovecot_stop();
}
END_TEST

START_TEST(dovecot_concurrent_one_connection)
{
    enum { N = 50 };
    static struct answer a[N];
    char user[N][16], addr[N][32];
    if (access("/usr/sbin/dovecot", X_OK) != 0)
        return;
    /* 40 at the default yescrypt cost took 7 s of the 10 s deadline at load 4 on 2 cores; at
     * load 8 the deadline answered every later request. */
    cheap_user();
    dovecot_start();
    struct pc_authdb *db = dovecot_db(false, 10000);
    memset(a, 0, sizeof(a));
    pending = N;
    /* Every fifth one wrong: answers must go to their own request, not in order. */
    for (int i = 0; i < N; i++) {
        snprintf(user[i], sizeof(user[i]), "%s", i % 5 == 4 ? "nobody" : "many");
        snprintf(addr[i], sizeof(addr[i]), "127.0.9.%d", i + 1);
        struct pc_auth_creds c = {.user = user[i], .pass = "secret", .client_addr = addr[i]};
        ck_assert_ptr_nonnull(pc_authdb_start(db, &c, on_answer, &a[i]));
    }
    struct timeval limit = {30, 0};
    struct event *guard = evtimer_new(base, guard_fired, NULL);
    evtimer_add(guard, &limit);
    event_base_dispatch(base);
    event_free(guard);
    for (int i = 0; i < N; i++) {
        ck_assert_msg(a[i].done, "request %d unanswered", i);
        /* 2 (TEMPFAIL) is what the 10 s deadline answers */
        ck_assert_msg(a[i].res == (i % 5 == 4 ? PC_AUTH_FAIL : PC_AUTH_OK),
                      "request %d (id %d): result %d, want %d", i, i + 1, a[i].res,
                      i % 5 == 4 ? PC_AUTH_FAIL : PC_AUTH_OK);
    }
    ck_assert_uint_eq(pc_authdb_dovecot_connects(db), 1);
    pc_authdb_free(db);
    dovecot_stop();
}
END_TEST

/* elapsed_ms - since t0 */
static long elapsed_ms(const struct timeval *t0)
{
    struct timeval now;
    gettimeofday(&now, NULL);
    return (now.tv_sec - t0->tv_sec) * 1000 + (now.tv_usec - t0->tv_usec) / 1000;
}

START_TEST(dovecot_down_hung_and_back)
{
    if (access("/usr/sbin/dovecot", X_OK) != 0)
        return;
    cheap_user();
    dovecot_start();
    dovecot_serving();
    /* Our log lines go to stderr: capture them to show the credential never appears. */
    char logpath[300];
    snprintf(logpath, sizeof(logpath), "%s/ours.log", dir);
    ck_assert_ptr_nonnull(freopen(logpath, "w", stderr));
    struct pc_authdb *udb = dovecot_db(false, 1500), *idb = dovecot_db(true, 1500);
    ck_assert_int_eq(check_one(udb, "many", "secret"), PC_AUTH_OK);
    ck_assert_int_eq(check_one(idb, "many", "secret"), PC_AUTH_OK);

    /* Hung: every Dovecot process stopped; the connection stays open and silent. */
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "kill -STOP %d $(ps -o pid= --ppid %d)", dovecot_pid, dovecot_pid);
    ck_assert_int_eq(system(cmd), 0);
    struct timeval t0;
    gettimeofday(&t0, NULL);
    ck_assert_int_eq(check_one(udb, "many", "secret"), PC_AUTH_TEMPFAIL);
    long ms = elapsed_ms(&t0);
    ck_assert_msg(ms >= 1400 && ms < 6000, "answered after %ld ms, deadline 1500", ms);
    snprintf(cmd, sizeof(cmd), "kill -CONT %d $(ps -o pid= --ppid %d)", dovecot_pid, dovecot_pid);
    ck_assert_int_eq(system(cmd), 0);

    /* Stopped: the connection closes, then connecting fails. */
    dovecot_stop();
    ck_assert_int_eq(check_one(udb, "many", "secret"), PC_AUTH_TEMPFAIL);
    ck_assert_int_eq(check_one(idb, "many", "secret"), PC_AUTH_TEMPFAIL);
    ck_assert_int_eq(check_one(udb, "many", "secret"), PC_AUTH_TEMPFAIL);
    ck_assert_int_eq(check_one(idb, "many", "secret"), PC_AUTH_TEMPFAIL);

    /* Back: the next request connects again. */
    dovecot_start();
    dovecot_serving();
    ck_assert_int_eq(check_one(udb, "many", "secret"), PC_AUTH_OK);
    ck_assert_int_eq(check_one(idb, "many", "secret"), PC_AUTH_OK);
    pc_authdb_free(udb);
    pc_authdb_free(idb);
    dovecot_stop();
    fflush(stderr);
    char logged[8192] = "";
    FILE *f = fopen(logpath, "r");
    size_t n = fread(logged, 1, sizeof(logged) - 1, f);
    fclose(f);
    logged[n] = 0;
    ck_assert_msg(strstr(logged, "auth: dovecot") != NULL, "nothing logged: %s", logged);
    ck_assert_ptr_null(strstr(logged, "secret"));
    ck_assert_ptr_null(strstr(logged, "AG1hbnkAc2VjcmV0")); /* base64 of the PLAIN message */
}
END_TEST

START_TEST(dovecot_reply_lines)
{
    static const struct {
        const char *line;
        bool ok;
        unsigned long id;
        enum pc_auth_result res;
    } t[] = {
        {"OK\t1\tuser=alice", true, 1, PC_AUTH_OK},
        {"OK\t42", true, 42, PC_AUTH_OK},
        {"FAIL\t7\tuser=alice", true, 7, PC_AUTH_FAIL},
        {"FAIL\t7\tuser=alice\ttemp", true, 7, PC_AUTH_TEMPFAIL},
        {"FAIL\t7\ttemp\treason=passdb down", true, 7, PC_AUTH_TEMPFAIL},
        {"FAIL\t7\tuser=temp", true, 7, PC_AUTH_FAIL}, /* a value, not the flag */
        {"FAIL\t7\ttemporary", true, 7, PC_AUTH_FAIL},
        {"CONT\t3\tAAAA", true, 3, PC_AUTH_TEMPFAIL},
        {"OK\t", false, 0, 0},
        {"OK\t-1", false, 0, 0},
        {"OK\t 1", false, 0, 0},
        {"OK\t1x", false, 0, 0},
        {"OK\t4294967296", false, 0, 0}, /* ids are unsigned int */
        {"ok\t1", false, 0, 0},
        {"DONE", false, 0, 0},
        {"", false, 0, 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        unsigned long id = 0;
        enum pc_auth_result res = PC_AUTH_OK;
        bool cont;
        bool ok = pc_dovecot_reply(t[i].line, &id, &res, &cont);
        ck_assert_msg(ok == t[i].ok, "%s", t[i].line);
        if (ok)
            ck_assert_msg(id == t[i].id && res == t[i].res, "%s: %lu %d", t[i].line, id, res);
    }
}
END_TEST

START_TEST(dovecot_spec)
{
    struct pc_err err;
    ck_assert(pc_authdb_dovecot_spec_ok("unix:/run/dovecot/auth-client"));
    ck_assert(pc_authdb_dovecot_spec_ok("inet:127.0.0.1:12345"));
    ck_assert(pc_authdb_dovecot_spec_ok("inet:[::1]:12345"));
    ck_assert(!pc_authdb_dovecot_spec_ok("inet:localhost:12345")); /* no DNS on the loop */
    ck_assert(!pc_authdb_dovecot_spec_ok("inet:127.0.0.1"));
    ck_assert(!pc_authdb_dovecot_spec_ok("unix:relative"));
    ck_assert(!pc_authdb_dovecot_spec_ok("/run/dovecot/auth-client"));
    ck_assert_ptr_null(pc_authdb_dovecot_new(base, "tcp:1.2.3.4:5", 1000, &err));
}
END_TEST

/* main - run the suite */
int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as the daemon does (gateway/main.c) */
    Suite *su = suite_create("authdb");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, passwd_file);
    tcase_add_test(tc, passwd_file_errors);
    tcase_add_test(tc, passwd_off_the_loop);
    tcase_add_test(tc, failure_counter);
    tcase_add_test(tc, dovecot_spec);
    tcase_add_test(tc, dovecot_reply_lines);
    tcase_add_test(tc, dovecot_answers);
    tcase_add_test(tc, dovecot_concurrent_one_connection);
    tcase_add_test(tc, dovecot_down_hung_and_back);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
