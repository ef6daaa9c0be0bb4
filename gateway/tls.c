/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	tls 3 - TLS contexts (server by SNI, client for the backend) on libevent
 * DESCRIPTION
 *	One SSL_CTX per certificate pair; the first context answers every
 *	handshake and its servername callback moves a connection to the pair
 *	that names the requested host. We run the handshake ourselves (one
 *	event on the socket, for reading or writing as OpenSSL wants) with a
 *	deadline timer: a read timeout would restart with every byte (a slow
 *	handshake would never end), and a deadline is what lesson 19 asks for.
 *	The established connection goes to libevent's OpenSSL bufferevent in
 *	its open state. Costs per session that this avoids, against libevent
 *	doing the handshake: watching for writability from the start, both
 *	events re-registered at its end, a read that finds nothing.
 *
 *	Reads: OpenSSL reads ahead into a buffer of up to 64 KB (a batch of
 *	records per read(2), not a 5-byte header and then a body), with a
 *	"kick" that makes libevent read what OpenSSL already holds (below).
 *	Writes: pc_bev_write (bevio.c) encrypts and writes at once when
 *	nothing is queued; libevent writes only what the socket cannot take.
 * SEE ALSO
 *	RFC 3207, RFC 8314, RFC 7525 section 3, RFC 8996
 */
#include "gateway/tls.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/filter.h"

/* TLS 1.2 suites: ECDHE/DHE key exchange (forward secrecy) with AEAD only (RFC 7525
 * section 4.2), as the Mozilla "intermediate" profile. Nothing with CBC, RC4, 3DES, SHA-1 MAC
 * or static RSA key exchange, which testssl.sh flags. */
#define PC_TLS12_CIPHERS                                                                           \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                                   \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"

struct pc_tls_server {
    SSL_CTX **ctx; /* one per pair; ctx[0] is the default */
    size_t n;
};

struct pc_tls_client {
    SSL_CTX *ctx;
    enum pc_tls_client_mode mode;
};

/* What one read(2) of a TLS socket may take: with read-ahead OpenSSL fills its read buffer
 * with as many records as have arrived (a 5-byte header and then a body are two reads
 * without it). 64 KB, as sockread.c reads a plain socket; with SSL_MODE_RELEASE_BUFFERS the
 * buffer exists only while it holds bytes, so an idle session holds none. */
#define PC_TLS_READ_BUF 65536

struct handshake {
    SSL *ssl;
    evutil_socket_t fd;
    struct event_base *base;
    struct event *io;       /* fd readable or writable, as OpenSSL last wanted */
    short want;             /* EV_READ or EV_WRITE: what io waits for */
    struct event *deadline; /* the whole handshake's */
    pc_tls_handshake_cb *cb;
    void *arg;
    bool done;       /* finished in wrap(): io runs once to report it on the loop */
    char error[300]; /* failed in wrap(): the same */
};

/* ssl_reason - the first queued OpenSSL error as text (and clear the queue) */
static const char *ssl_reason(char *buf, size_t size)
{
    unsigned long e = ERR_get_error();

    if (e == 0)
        snprintf(buf, size, "unknown OpenSSL error");
    else
        ERR_error_string_n(e, buf, size);
    ERR_clear_error();
    return buf;
}

/* ctx_policy - the protocol floor and options every context shares */
static SSL_CTX *ctx_policy(const SSL_METHOD *method)
{
    SSL_CTX *ctx = SSL_CTX_new(method);

    if (ctx == NULL)
        return NULL;
    /* RFC 8996: no TLS 1.0 or 1.1; no renegotiation; no compression (CRIME). */
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_cipher_list(ctx, PC_TLS12_CIPHERS)) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_dh_auto(ctx, 1);
    /* Partial writes and a moving buffer: libevent's bufferevent writes from its evbuffer and
     * pc_bev_write (bevio.c) from the caller's, and a retry after WANT_WRITE may come from
     * either. Buffers are released when empty: an idle session holds no 64 KB read buffer. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_default_read_buffer_len(ctx, PC_TLS_READ_BUF);
    return ctx;
}

/* load_pair - certificate chain and key into ctx; err names the origin */
static int load_pair(SSL_CTX *ctx, const struct pc_tls_pair *p, struct pc_err *err)
{
    char why[256];
    const char *key = p->key && p->key[0] ? p->key : p->cert;
    const char *at = p->origin ? p->origin : "tls";

    if (p->cert == NULL || SSL_CTX_use_certificate_chain_file(ctx, p->cert) != 1) {
        snprintf(err->msg, sizeof(err->msg), "%s: certificate %s: %s", at,
                 p->cert ? p->cert : "(none)", ssl_reason(why, sizeof(why)));
        return -1;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err->msg, sizeof(err->msg), "%s: key %s: %s", at, key,
                 ssl_reason(why, sizeof(why)));
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err->msg, sizeof(err->msg), "%s: key %s does not match certificate %s", at, key,
                 p->cert);
        ERR_clear_error();
        return -1;
    }
    return 0;
}

/* accept_any - record a client certificate for its fingerprint; never refuse one */
static int accept_any(int ok, X509_STORE_CTX *x)
{
    (void)ok, (void)x;
    return 1;
}

/* sni_select - RFC 6066 section 3: move the connection to the pair that names the host */
static int sni_select(SSL *ssl, int *alert, void *arg)
{
    struct pc_tls_server *srv = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

    (void)alert;
    if (name == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    for (size_t i = 0; i < srv->n; i++) {
        X509 *cert = SSL_CTX_get0_certificate(srv->ctx[i]);
        if (cert &&
            X509_check_host(cert, name, 0, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL) == 1) {
            if (i > 0 && SSL_set_SSL_CTX(ssl, srv->ctx[i]) == NULL)
                return SSL_TLSEXT_ERR_ALERT_FATAL;
            return SSL_TLSEXT_ERR_OK;
        }
    }
    /* No pair names it: the default pair answers (a mail client rarely checks names). */
    return SSL_TLSEXT_ERR_NOACK;
}

/* pc_tls_server_new - one context per pair */
struct pc_tls_server *pc_tls_server_new(const struct pc_tls_pair *pairs, size_t n,
                                        bool ask_client_cert, struct pc_err *err)
{
    static const unsigned char sid_ctx[] = "portcullis";
    struct pc_tls_server *srv = calloc(1, sizeof(*srv));

    if (srv == NULL || n == 0 || (srv->ctx = calloc(n, sizeof(SSL_CTX *))) == NULL) {
        snprintf(err->msg, sizeof(err->msg), "tls: %s",
                 n == 0 ? "no certificate configured" : "out of memory");
        free(srv);
        return NULL;
    }
    for (size_t i = 0; i < n; i++, srv->n++) {
        char why[256];
        SSL_CTX *ctx = srv->ctx[i] = ctx_policy(TLS_server_method());
        if (ctx == NULL) {
            snprintf(err->msg, sizeof(err->msg), "%s: %s",
                     pairs[i].origin ? pairs[i].origin : "tls", ssl_reason(why, sizeof(why)));
            pc_tls_server_free(srv);
            return NULL;
        }
        if (load_pair(ctx, &pairs[i], err) < 0) {
            srv->n++;
            pc_tls_server_free(srv);
            return NULL;
        }
        /* Resumed sessions with a client certificate need an id context. */
        SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
        /* TLS 1.3: one ticket, not OpenSSL's two. A resuming MTA (Postfix's smtp client
         * caches one session per destination) uses one; the second cost a ticket encryption,
         * a key derivation and a write in every handshake. */
        SSL_CTX_set_num_tickets(ctx, 1);
        if (ask_client_cert)
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE, accept_any);
    }
    SSL_CTX_set_tlsext_servername_callback(srv->ctx[0], sni_select);
    SSL_CTX_set_tlsext_servername_arg(srv->ctx[0], srv);
    return srv;
}

/* pc_tls_server_free - the contexts; live connections keep theirs by OpenSSL's reference */
void pc_tls_server_free(struct pc_tls_server *srv)
{
    if (srv == NULL)
        return;
    for (size_t i = 0; i < srv->n; i++)
        SSL_CTX_free(srv->ctx[i]);
    free(srv->ctx);
    free(srv);
}

/* pc_tls_client_mode_parse - "none" | "may" | "encrypt" | "verify" */
bool pc_tls_client_mode_parse(const char *s, enum pc_tls_client_mode *m)
{
    static const char *const names[] = {"none", "may", "encrypt", "verify"};

    for (size_t i = 0; s && i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(s, names[i]) == 0) {
            *m = (enum pc_tls_client_mode)i;
            return true;
        }
    return false;
}

/* pc_tls_client_new - the backend side */
struct pc_tls_client *pc_tls_client_new(enum pc_tls_client_mode mode, const char *ca,
                                        const struct pc_tls_pair *client_cert, struct pc_err *err)
{
    char why[256];
    struct pc_tls_client *c = calloc(1, sizeof(*c));

    if (c == NULL || (c->ctx = ctx_policy(TLS_client_method())) == NULL) {
        snprintf(err->msg, sizeof(err->msg), "tls: %s", ssl_reason(why, sizeof(why)));
        free(c);
        return NULL;
    }
    c->mode = mode;
    if (mode == PC_TLS_CLIENT_VERIFY) {
        int ok = ca && ca[0] ? SSL_CTX_load_verify_locations(c->ctx, ca, NULL)
                             : SSL_CTX_set_default_verify_paths(c->ctx);
        if (ok != 1) {
            snprintf(err->msg, sizeof(err->msg), "tls_ca %s: %s", ca ? ca : "(system)",
                     ssl_reason(why, sizeof(why)));
            pc_tls_client_free(c);
            return NULL;
        }
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    } else {
        /* RFC 7435: opportunistic TLS encrypts without authenticating. */
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
    }
    if (client_cert && client_cert->cert && load_pair(c->ctx, client_cert, err) < 0) {
        pc_tls_client_free(c);
        return NULL;
    }
    return c;
}

/* pc_tls_client_free - the context */
void pc_tls_client_free(struct pc_tls_client *c)
{
    if (c == NULL)
        return;
    SSL_CTX_free(c->ctx);
    free(c);
}

/* Read-ahead and libevent 2.1: after each SSL_read libevent asks SSL_pending() whether to go
 * on, which counts the rest of the current record only, and then waits for the socket to be
 * readable again; records that OpenSSL has already read ahead would wait with it (for ever, if
 * the peer waits for our answer to them). A kick per connection closes that gap: whenever the
 * input buffer changes (libevent added what it read, or the owner consumed) and OpenSSL still
 * holds bytes, a loop pass later libevent's read event is made active, as if the socket were
 * readable, while reading is on and the input is below its high mark. No system call. */
struct kick {
    struct bufferevent *bev;
    SSL *ssl;
    struct event *ev;
};

static int kick_index = -1;
static CRYPTO_ONCE kick_once = CRYPTO_ONCE_STATIC_INIT;

/* kick_free - SSL_free (the bufferevent's destructor) ends the kick with the connection */
static void kick_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    struct kick *k = ptr;

    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    if (k == NULL)
        return;
    event_free(k->ev);
    free(k);
}

/* kick_init - the ex_data slot that carries a connection's kick */
static void kick_init(void)
{
    kick_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, kick_free);
}

/* kick_run - OpenSSL holds bytes libevent has not asked for: read them now */
static void kick_run(evutil_socket_t fd, short what, void *arg)
{
    struct kick *k = arg;
    size_t high = 0;

    (void)fd, (void)what;
    bufferevent_getwatermark(k->bev, EV_READ, NULL, &high);
    if (SSL_has_pending(k->ssl) && (bufferevent_get_enabled(k->bev) & EV_READ) &&
        (high == 0 || evbuffer_get_length(bufferevent_get_input(k->bev)) < high))
        event_active(&k->bev->ev_read, EV_READ, 1);
}

/* kick_check - the input changed: kick on the next loop pass if OpenSSL holds bytes */
static void kick_check(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct kick *k = arg;

    (void)buf, (void)info;
    if (SSL_has_pending(k->ssl))
        event_active(k->ev, EV_TIMEOUT, 0);
}

/* kick_attach - after the handshake: the kick of a read-ahead connection (false: no memory) */
static bool kick_attach(struct bufferevent *bev)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    struct kick *k = calloc(1, sizeof(*k));

    if (k == NULL || ssl == NULL || !CRYPTO_THREAD_run_once(&kick_once, kick_init) ||
        kick_index < 0 ||
        (k->ev = event_new(bufferevent_get_base(bev), -1, 0, kick_run, k)) == NULL) {
        free(k);
        return false;
    }
    k->bev = bev, k->ssl = ssl;
    if (!SSL_set_ex_data(ssl, kick_index, k) ||
        evbuffer_add_cb(bufferevent_get_input(bev), kick_check, k) == NULL) {
        SSL_set_ex_data(ssl, kick_index, NULL);
        event_free(k->ev);
        free(k);
        return false;
    }
    /* The handshake may have read the first records of the talk that follows it. */
    if (SSL_has_pending(ssl))
        event_active(k->ev, EV_TIMEOUT, 0);
    return true;
}

/* handshake_fail - why SSL_do_handshake returned r (not WANT_*), for the log */
static void handshake_fail(struct handshake *hs, int r, char *why, size_t size)
{
    int err = SSL_get_error(hs->ssl, r);
    unsigned long e = ERR_peek_error();
    long vr = SSL_get_verify_result(hs->ssl);

    if (err == SSL_ERROR_SSL && vr != X509_V_OK)
        snprintf(why, size, "certificate verification failed: %s",
                 X509_verify_cert_error_string(vr));
    else if (e != 0)
        ERR_error_string_n(e, why, size);
    else if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && r == 0))
        snprintf(why, size, "connection closed");
    else
        snprintf(why, size, "I/O error");
    ERR_clear_error();
}

/* handshake_end - stop watching; hand the connection to a bufferevent or close it; tell */
static void handshake_end(struct handshake *hs, const char *error)
{
    struct bufferevent *bev = NULL;
    pc_tls_handshake_cb *cb = hs->cb;
    void *arg = hs->arg;
    char why[sizeof(hs->error)];

    if (error == NULL) {
        /* Established: libevent's OpenSSL bufferevent takes over in its open state (it
         * makes no SSL_clear and no handshake of its own). It starts with writing enabled
         * and no write event (libevent adds one only when output waits), and its read
         * event goes on the descriptor while ours is still there: no epoll_ctl either. */
        bev = bufferevent_openssl_socket_new(hs->base, hs->fd, hs->ssl, BUFFEREVENT_SSL_OPEN,
                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
        if (bev != NULL) {
            /* A peer that hangs up without close_notify is an EOF, not an error (common
             * in SMTP). */
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
            bufferevent_enable(bev, (bufferevent_get_enabled(bev) & EV_WRITE) ? EV_READ
                                                                              : EV_READ | EV_WRITE);
            if (!kick_attach(bev)) {
                bufferevent_free(bev); /* closes the socket, frees the SSL */
                bev = NULL;
                error = "out of memory";
            }
        } else {
            /* libevent freed the SSL on its failure path (BEV_OPT_CLOSE_ON_FREE). */
            evutil_closesocket(hs->fd);
            error = "out of memory";
        }
    } else {
        snprintf(why, sizeof(why), "%s", error);
        error = why;
        SSL_free(hs->ssl);
        evutil_closesocket(hs->fd);
    }
    event_free(hs->io);
    event_free(hs->deadline);
    free(hs);
    cb(bev, error, arg);
}

static void handshake_io(evutil_socket_t fd, short what, void *arg);

/* handshake_step - one SSL_do_handshake: 1 done, 0 waiting (io armed), -1 failed (why) */
static int handshake_step(struct handshake *hs, char *why, size_t size)
{
    ERR_clear_error();
    int r = SSL_do_handshake(hs->ssl);
    if (r == 1)
        return 1;
    short want;
    switch (SSL_get_error(hs->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        want = EV_READ;
        break;
    case SSL_ERROR_WANT_WRITE:
        want = EV_WRITE;
        break;
    default:
        handshake_fail(hs, r, why, size);
        return -1;
    }
    if (want != hs->want) {
        event_del(hs->io);
        event_assign(hs->io, hs->base, hs->fd, want | EV_PERSIST, handshake_io, hs);
        hs->want = want;
    }
    if (!event_pending(hs->io, want, NULL) && event_add(hs->io, NULL) < 0) {
        snprintf(why, size, "cannot watch the socket");
        return -1;
    }
    return 0;
}

/* handshake_io - the socket is ready (or wrap() finished already): go on */
static void handshake_io(evutil_socket_t fd, short what, void *arg)
{
    struct handshake *hs = arg;
    char why[sizeof(hs->error)];

    (void)fd, (void)what;
    if (hs->done || hs->error[0]) {
        handshake_end(hs, hs->done ? NULL : hs->error);
        return;
    }
    int r = handshake_step(hs, why, sizeof(why));
    if (r != 0)
        handshake_end(hs, r > 0 ? NULL : why);
}

/* handshake_deadline - the handshake took too long */
static void handshake_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    handshake_end(arg, "handshake timeout");
}

/* wrap - our own handshake on fd, with a deadline. We drive it rather than libevent's
 * bufferevent, whose handshake watches the socket for writing as well as reading from the
 * start and re-registers both events when it ends (seven epoll_ctl and an extra loop pass per
 * session). A client speaks first: its ClientHello is written here and now. */
static bool wrap(SSL *ssl, struct event_base *base, evutil_socket_t fd, bool server, unsigned ms,
                 pc_tls_handshake_cb *cb, void *arg)
{
    struct handshake *hs = calloc(1, sizeof(*hs));
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    if (hs == NULL || SSL_set_fd(ssl, fd) != 1 ||
        (hs->deadline = evtimer_new(base, handshake_deadline, hs)) == NULL ||
        (hs->io = event_new(base, fd, EV_READ | EV_PERSIST, handshake_io, hs)) == NULL) {
        if (hs && hs->deadline)
            event_free(hs->deadline);
        free(hs);
        SSL_free(ssl);
        return false;
    }
    hs->ssl = ssl, hs->fd = fd, hs->base = base, hs->want = EV_READ;
    hs->cb = cb, hs->arg = arg;
    /* Read-ahead from the first byte: a handshake flight or a batch of records in one read
     * (the kick, attached when the handshake ends, covers what it reads ahead of the talk). */
    SSL_set_read_ahead(ssl, 1);
    evtimer_add(hs->deadline, &tv);
    if (server) {
        /* The client speaks first: wait for its ClientHello (no read that finds nothing). */
        SSL_set_accept_state(ssl);
        event_add(hs->io, NULL);
        return true;
    }
    SSL_set_connect_state(ssl);
    int r = handshake_step(hs, hs->error, sizeof(hs->error));
    if (r != 0) {
        /* cb runs on the loop, never inside the caller's call */
        hs->done = r > 0;
        event_active(hs->io, EV_READ, 1);
    }
    return true;
}

/* pc_tls_server_wrap - start a server handshake */
bool pc_tls_server_wrap(struct pc_tls_server *srv, struct event_base *base, evutil_socket_t fd,
                        unsigned handshake_ms, pc_tls_handshake_cb *cb, void *arg)
{
    SSL *ssl = SSL_new(srv->ctx[0]);

    return ssl ? wrap(ssl, base, fd, true, handshake_ms, cb, arg) : false;
}

/* pc_tls_client_wrap - start a client handshake */
bool pc_tls_client_wrap(struct pc_tls_client *c, struct event_base *base, evutil_socket_t fd,
                        const char *name, unsigned handshake_ms, pc_tls_handshake_cb *cb, void *arg)
{
    SSL *ssl = SSL_new(c->ctx);

    if (ssl == NULL)
        return false;
    /* SNI is a host name, never an address literal (RFC 6066 section 3). */
    if (name && name[0] && strspn(name, "0123456789.:[]") != strlen(name))
        SSL_set_tlsext_host_name(ssl, name);
    if (c->mode == PC_TLS_CLIENT_VERIFY) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (name == NULL || X509_VERIFY_PARAM_set1_host(vp, name, 0) != 1) {
            SSL_free(ssl);
            return false;
        }
    }
    return wrap(ssl, base, fd, false, handshake_ms, cb, arg);
}

/* pc_tls_facts - what the handshake established */
void pc_tls_facts(struct bufferevent *bev, struct pc_tls_facts *f)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);

    memset(f, 0, sizeof(*f));
    if (ssl == NULL)
        return;
    snprintf(f->version, sizeof(f->version), "%s", SSL_get_version(ssl));
    snprintf(f->cipher, sizeof(f->cipher), "%s", SSL_get_cipher_name(ssl));
    f->bits = SSL_get_cipher_bits(ssl, NULL);
    const char *sni = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (sni && SSL_is_server(ssl))
        snprintf(f->sni, sizeof(f->sni), "%s", sni);
    X509 *peer = SSL_get1_peer_certificate(ssl);
    if (peer == NULL)
        return;
    BIO *mem = BIO_new(BIO_s_mem());
    if (mem && X509_NAME_print_ex(mem, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) >= 0) {
        int n = BIO_read(mem, f->peer_subject, sizeof(f->peer_subject) - 1);
        f->peer_subject[n > 0 ? n : 0] = 0;
    }
    BIO_free(mem);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    if (X509_digest(peer, EVP_sha256(), md, &mdlen) == 1)
        for (unsigned i = 0; i < mdlen && i < 32; i++)
            snprintf(f->peer_sha256 + 2 * i, 3, "%02x", md[i]);
    f->peer_verified = !SSL_is_server(ssl) && SSL_get_verify_mode(ssl) != SSL_VERIFY_NONE &&
                       SSL_get_verify_result(ssl) == X509_V_OK;
    X509_free(peer);
}
