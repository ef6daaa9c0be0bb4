/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	test_tls 1 - our server and client TLS contexts, handshaking on a loop
 * DESCRIPTION
 *	Certificates are made at test time with openssl req (no private key
 *	is committed). Each case wraps the two ends of a socketpair, one with
 *	pc_tls_server_wrap and one with pc_tls_client_wrap (or a raw OpenSSL
 *	client for the protocol floor), runs the loop until both handshakes
 *	end, and checks the facts. OPENSSL_CONF is emptied so that Debian's
 *	system-wide MinProtocol cannot hide a missing floor of ours.
 * SEE ALSO
 *	RFC 8996, RFC 6066 section 3, RFC 6125
 */
#include <check.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/filter.h"
#include "gateway/tls.h"

static char dir[] = "/tmp/pc-tls-XXXXXX";
static char path_buf[8][300];

/* P - a file in the scratch directory */
static const char *P(int slot, const char *name)
{
    snprintf(path_buf[slot], sizeof(path_buf[slot]), "%s/%s", dir, name);
    return path_buf[slot];
}

/* mkcert - a self-signed EC certificate for cn (SAN too) */
static void mkcert(const char *name, const char *cn)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout %s/%s.key -out %s/%s.pem -days 2 -subj /CN=%s "
             "-addext subjectAltName=DNS:%s 2>/dev/null",
             dir, name, dir, name, cn, cn);
    ck_assert_int_eq(system(cmd), 0);
}

/* setup - scratch directory and certificates */
static void setup(void)
{
    static int done;
    if (done++)
        return;
    setenv("OPENSSL_CONF", "/dev/null", 1);
    ck_assert_ptr_nonnull(mkdtemp(dir));
    mkcert("mx", "mx.example.test");
    mkcert("other", "other.example.test");
    mkcert("client", "client.example.test");
    FILE *f = fopen(P(0, "garbage.key"), "w");
    fputs("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", f);
    fclose(f);
}

struct end {
    bool done;
    char error[300];
    struct pc_tls_facts facts;
    struct bufferevent *bev;
};

static int pending;
static struct event_base *base;

/* on_handshake - record the outcome and the facts */
static void on_handshake(struct bufferevent *bev, const char *error, void *arg)
{
    struct end *e = arg;
    e->done = true;
    e->bev = bev;
    snprintf(e->error, sizeof(e->error), "%s", error ? error : "");
    if (error == NULL)
        pc_tls_facts(bev, &e->facts);
    if (--pending == 0)
        event_base_loopbreak(base);
}

/* run_pair - handshake our server against our client over a socketpair */
static void run_pair(struct pc_tls_server *srv, struct pc_tls_client *cli, const char *name,
                     struct end *s, struct end *c)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    evutil_make_socket_nonblocking(sv[0]);
    evutil_make_socket_nonblocking(sv[1]);
    base = event_base_new();
    memset(s, 0, sizeof(*s));
    memset(c, 0, sizeof(*c));
    pending = 2;
    ck_assert(pc_tls_server_wrap(srv, base, sv[0], 5000, on_handshake, s));
    ck_assert(pc_tls_client_wrap(cli, base, sv[1], name, 5000, on_handshake, c));
    event_base_dispatch(base);
    ck_assert(s->done && c->done);
    /* A failed end has no bufferevent (its socket is closed); a good one owns its socket. */
    ck_assert((s->bev == NULL) == (s->error[0] != 0));
    ck_assert((c->bev == NULL) == (c->error[0] != 0));
    if (s->bev)
        bufferevent_free(s->bev);
    if (c->bev)
        bufferevent_free(c->bev);
    event_base_free(base);
}

/* server - contexts for the mx pair, then the other pair */
static struct pc_tls_server *server(bool ask)
{
    struct pc_tls_pair pairs[] = {{P(1, "mx.pem"), P(2, "mx.key"), "test.conf:1"},
                                  {P(3, "other.pem"), P(4, "other.key"), "test.conf:2"}};
    struct pc_err err = {{0}};
    struct pc_tls_server *srv = pc_tls_server_new(pairs, 2, ask, &err);
    ck_assert_msg(srv != NULL, "%s", err.msg);
    return srv;
}

START_TEST(handshake_and_facts)
{
    struct pc_err err = {{0}};
    struct pc_tls_server *srv = server(true);
    struct pc_tls_pair cc = {P(5, "client.pem"), P(6, "client.key"), "client"};
    struct pc_tls_client *cli = pc_tls_client_new(PC_TLS_CLIENT_VERIFY, P(7, "mx.pem"), &cc, &err);
    ck_assert_msg(cli != NULL, "%s", err.msg);
    struct end s, c;

    run_pair(srv, cli, "mx.example.test", &s, &c);
    ck_assert_msg(s.error[0] == 0 && c.error[0] == 0, "server: %s client: %s", s.error, c.error);
    ck_assert_str_eq(s.facts.version, "TLSv1.3");
    ck_assert(s.facts.cipher[0] && s.facts.bits >= 128);
    ck_assert_str_eq(s.facts.sni, "mx.example.test");
    ck_assert(c.facts.peer_verified);
    ck_assert_str_eq(c.facts.peer_subject, "CN=mx.example.test");
    /* The client certificate's subject and fingerprint, as openssl x509 computes it. */
    ck_assert_str_eq(s.facts.peer_subject, "CN=client.example.test");
    char cmd[600], want[128] = "";
    snprintf(cmd, sizeof(cmd),
             "openssl x509 -in %s -noout -fingerprint -sha256 | sed 's/.*=//; s/://g' | "
             "tr A-F a-f",
             P(0, "client.pem"));
    FILE *p = popen(cmd, "r");
    ck_assert(fgets(want, sizeof(want), p) != NULL);
    pclose(p);
    want[strcspn(want, "\n")] = 0;
    ck_assert_str_eq(s.facts.peer_sha256, want);
    pc_tls_client_free(cli);
    pc_tls_server_free(srv);
}
END_TEST

START_TEST(sni_chooses_pair)
{
    struct pc_err err = {{0}};
    struct pc_tls_server *srv = server(false);
    struct pc_tls_client *cli = pc_tls_client_new(PC_TLS_CLIENT_ENCRYPT, NULL, NULL, &err);
    struct end s, c;

    run_pair(srv, cli, "other.example.test", &s, &c);
    ck_assert_msg(c.error[0] == 0, "%s", c.error);
    ck_assert_str_eq(c.facts.peer_subject, "CN=other.example.test");
    ck_assert(!c.facts.peer_verified);                  /* encrypt does not authenticate */
    ck_assert_str_eq(s.facts.peer_subject, "");         /* no client certificate asked */
    run_pair(srv, cli, "unknown.example.test", &s, &c); /* the first pair is the default */
    ck_assert_str_eq(c.facts.peer_subject, "CN=mx.example.test");
    run_pair(srv, cli, "127.0.0.1", &s, &c); /* no SNI for an address */
    ck_assert_str_eq(c.facts.peer_subject, "CN=mx.example.test");
    ck_assert_str_eq(s.facts.sni, "");
    pc_tls_client_free(cli);
    pc_tls_server_free(srv);
}
END_TEST

START_TEST(verify_refuses_wrong_name)
{
    struct pc_err err = {{0}};
    struct pc_tls_server *srv = server(false);
    struct pc_tls_client *cli = pc_tls_client_new(PC_TLS_CLIENT_VERIFY, P(7, "mx.pem"), NULL, &err);
    struct end s, c;

    run_pair(srv, cli, "wrong.example.test", &s, &c);
    ck_assert_msg(strstr(c.error, "certificate verification failed") != NULL, "%s", c.error);
    ck_assert(s.error[0] != 0);
    /* The right name, but a CA that did not sign it. */
    pc_tls_client_free(cli);
    cli = pc_tls_client_new(PC_TLS_CLIENT_VERIFY, P(7, "other.pem"), NULL, &err);
    run_pair(srv, cli, "mx.example.test", &s, &c);
    ck_assert_msg(strstr(c.error, "certificate verification failed") != NULL, "%s", c.error);
    pc_tls_client_free(cli);
    pc_tls_server_free(srv);
}
END_TEST

START_TEST(bad_pairs_refused_with_origin)
{
    struct pc_err err = {{0}};
    struct pc_tls_pair mismatch[] = {{P(1, "mx.pem"), P(2, "mx.key"), "a.conf:3"},
                                     {P(3, "other.pem"), P(4, "mx.key"), "a.conf:9"}};
    ck_assert_ptr_null(pc_tls_server_new(mismatch, 2, false, &err));
    ck_assert_msg(strncmp(err.msg, "a.conf:9: key ", 14) == 0 && strstr(err.msg, "mismatch"), "%s",
                  err.msg);
    struct pc_tls_pair garbage = {P(1, "mx.pem"), P(0, "garbage.key"), "a.conf:4"};
    ck_assert_ptr_null(pc_tls_server_new(&garbage, 1, false, &err));
    ck_assert_msg(strncmp(err.msg, "a.conf:4: key ", 14) == 0, "%s", err.msg);
    struct pc_tls_pair missing = {P(1, "nonexistent.pem"), NULL, "a.conf:5"};
    ck_assert_ptr_null(pc_tls_server_new(&missing, 1, false, &err));
    ck_assert_msg(strncmp(err.msg, "a.conf:5: certificate ", 22) == 0, "%s", err.msg);
    ck_assert_ptr_null(pc_tls_client_new(PC_TLS_CLIENT_VERIFY, P(0, "garbage.key"), NULL, &err));
    enum pc_tls_client_mode m;
    ck_assert(pc_tls_client_mode_parse("verify", &m) && m == PC_TLS_CLIENT_VERIFY);
    ck_assert(!pc_tls_client_mode_parse("yes", &m));
}
END_TEST

/* on_raw - the old client's handshake result */
static void on_raw(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    *(short *)arg = what;
    if (--pending == 0)
        event_base_loopbreak(base);
}

START_TEST(protocol_floor)
{
    struct pc_tls_server *srv = server(false);
    /* A client that speaks at most TLS 1.1 (security level 0 lets OpenSSL 3 offer it). */
    SSL_CTX *old = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(old, TLS1_VERSION);
    SSL_CTX_set_max_proto_version(old, TLS1_1_VERSION);
    SSL_CTX_set_cipher_list(old, "ALL:@SECLEVEL=0");
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    evutil_make_socket_nonblocking(sv[0]);
    evutil_make_socket_nonblocking(sv[1]);
    base = event_base_new();
    struct end s = {0};
    short what = 0;
    pending = 2;
    pc_tls_server_wrap(srv, base, sv[0], 5000, on_handshake, &s);
    struct bufferevent *cb = bufferevent_openssl_socket_new(
        base, sv[1], SSL_new(old), BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(cb, NULL, NULL, on_raw, &what);
    bufferevent_enable(cb, EV_READ | EV_WRITE);
    event_base_dispatch(base);
    ck_assert_msg(strstr(s.error, "unsupported protocol") != NULL, "server: %s", s.error);
    ck_assert(!(what & BEV_EVENT_CONNECTED));
    ck_assert_ptr_null(s.bev);
    bufferevent_free(cb);
    event_base_free(base);
    SSL_CTX_free(old);
    pc_tls_server_free(srv);
}
END_TEST

/* on_timeout_hs - the handshake deadline fired */
START_TEST(handshake_deadline)
{
    struct pc_tls_server *srv = server(false);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    evutil_make_socket_nonblocking(sv[0]);
    base = event_base_new();
    struct end s = {0};
    pending = 1;
    pc_tls_server_wrap(srv, base, sv[0], 200, on_handshake, &s);
    /* A slow client: one byte of a ClientHello now and then never finishes. */
    ck_assert_int_eq(write(sv[1], "\x16", 1), 1);
    event_base_dispatch(base);
    ck_assert_str_eq(s.error, "handshake timeout");
    ck_assert_ptr_null(s.bev);
    close(sv[1]);
    event_base_free(base);
    pc_tls_server_free(srv);
}
END_TEST

/* teardown_all - remove the scratch directory */
static void teardown_all(void)
{
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}

/* main - run the suite */
int main(void)
{
    Suite *su = suite_create("tls");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_unchecked_fixture(tc, setup, NULL);
    tcase_add_test(tc, handshake_and_facts);
    tcase_add_test(tc, sni_chooses_pair);
    tcase_add_test(tc, verify_refuses_wrong_name);
    tcase_add_test(tc, bad_pairs_refused_with_origin);
    tcase_add_test(tc, protocol_floor);
    tcase_add_test(tc, handshake_deadline);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    teardown_all();
    return failed ? 1 : 0;
}
