/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	tls 3 - TLS contexts (server by SNI, client for the backend) on libevent
 * DESCRIPTION
 *	One SSL_CTX per certificate pair; the first context answers every
 *	handshake and its servername callback moves a connection to the pair
 *	that names the requested host. Handshakes run inside libevent's
 *	OpenSSL bufferevent with a deadline timer of our own: a bufferevent
 *	read timeout would restart with every byte (a slow handshake would
 *	never end), and a deadline is what lesson 19 asks for.
 * SEE ALSO
 *	RFC 3207, RFC 8314, RFC 7525 section 3, RFC 8996
 */
#include "gateway/tls.h"

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
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

struct handshake {
    struct bufferevent *bev;
    struct event *deadline;
    pc_tls_handshake_cb *cb;
    void *arg;
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
    /* Peers that close without close_notify are common in SMTP; libevent reports them as EOF. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
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

/* handshake_end - stop watching, tell the caller */
static void handshake_end(struct handshake *hs, const char *error)
{
    struct bufferevent *bev = hs->bev;
    pc_tls_handshake_cb *cb = hs->cb;
    void *arg = hs->arg;

    bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
    event_free(hs->deadline);
    free(hs);
    cb(bev, error, arg);
}

/* handshake_event - libevent reports the handshake's end */
static void handshake_event(struct bufferevent *bev, short what, void *arg)
{
    struct handshake *hs = arg;
    char why[300];

    if (what & BEV_EVENT_CONNECTED) {
        handshake_end(hs, NULL);
        return;
    }
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    unsigned long e = bufferevent_get_openssl_error(bev);
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (e && vr != X509_V_OK)
        snprintf(why, sizeof(why), "certificate verification failed: %s",
                 X509_verify_cert_error_string(vr));
    else if (e)
        ERR_error_string_n(e, why, sizeof(why));
    else
        snprintf(why, sizeof(why), "%s", what & BEV_EVENT_EOF ? "connection closed" : "I/O error");
    while (bufferevent_get_openssl_error(bev))
        ;
    handshake_end(hs, why);
}

/* handshake_deadline - the handshake took too long */
static void handshake_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    handshake_end(arg, "handshake timeout");
}

/* wrap - an OpenSSL bufferevent on fd, with a deadline */
static struct bufferevent *wrap(SSL *ssl, struct event_base *base, evutil_socket_t fd,
                                enum bufferevent_ssl_state state, unsigned ms,
                                pc_tls_handshake_cb *cb, void *arg)
{
    struct handshake *hs = calloc(1, sizeof(*hs));
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};

    if (hs == NULL || (hs->deadline = evtimer_new(base, handshake_deadline, hs)) == NULL) {
        free(hs);
        SSL_free(ssl);
        return NULL;
    }
    hs->bev = bufferevent_openssl_socket_new(base, fd, ssl, state,
                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (hs->bev == NULL) {
        /* Whether libevent already freed ssl on this path differs between versions: a leak
         * when out of memory is better than a double free. */
        event_free(hs->deadline);
        free(hs);
        return NULL;
    }
    hs->cb = cb, hs->arg = arg;
    /* A peer that hangs up without close_notify is an EOF, not an error (common in SMTP). */
    bufferevent_openssl_set_allow_dirty_shutdown(hs->bev, 1);
    bufferevent_setcb(hs->bev, NULL, NULL, handshake_event, hs);
    bufferevent_enable(hs->bev, EV_READ | EV_WRITE);
    evtimer_add(hs->deadline, &tv);
    return hs->bev;
}

/* pc_tls_server_wrap - start a server handshake */
struct bufferevent *pc_tls_server_wrap(struct pc_tls_server *srv, struct event_base *base,
                                       evutil_socket_t fd, unsigned handshake_ms,
                                       pc_tls_handshake_cb *cb, void *arg)
{
    SSL *ssl = SSL_new(srv->ctx[0]);

    return ssl ? wrap(ssl, base, fd, BUFFEREVENT_SSL_ACCEPTING, handshake_ms, cb, arg) : NULL;
}

/* pc_tls_client_wrap - start a client handshake */
struct bufferevent *pc_tls_client_wrap(struct pc_tls_client *c, struct event_base *base,
                                       evutil_socket_t fd, const char *name, unsigned handshake_ms,
                                       pc_tls_handshake_cb *cb, void *arg)
{
    SSL *ssl = SSL_new(c->ctx);

    if (ssl == NULL)
        return NULL;
    /* SNI is a host name, never an address literal (RFC 6066 section 3). */
    if (name && name[0] && strspn(name, "0123456789.:[]") != strlen(name))
        SSL_set_tlsext_host_name(ssl, name);
    if (c->mode == PC_TLS_CLIENT_VERIFY) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (name == NULL || X509_VERIFY_PARAM_set1_host(vp, name, 0) != 1) {
            SSL_free(ssl);
            return NULL;
        }
    }
    return wrap(ssl, base, fd, BUFFEREVENT_SSL_CONNECTING, handshake_ms, cb, arg);
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
