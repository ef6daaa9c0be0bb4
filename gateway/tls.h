/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	tls 3h - TLS contexts (server by SNI, client for the backend) on libevent
 * DESCRIPTION
 *	A pc_tls_server is built once per configuration generation from the
 *	listener's certificate/key pairs; a reload that fails to build one
 *	keeps the old generation (and so the old certificates). It lives as
 *	long as the generation: sessions already hold the generation, so no
 *	separate reference is needed. The first pair is the default; a client
 *	that sends SNI gets the first pair whose certificate names that host
 *	(X509_check_host: SAN, wildcards as RFC 6125 allows).
 *
 *	Policy, the same for every context: TLS 1.2 at least (RFC 8996 retired
 *	1.0 and 1.1; RFC 7525), no renegotiation (the attack surface of
 *	CVE-2009-3555 and CVE-2011-1473 for no SMTP benefit), no compression
 *	(CRIME), server cipher preference, and for TLS 1.2 only AEAD suites
 *	with forward secrecy - the "intermediate" profile every current MTA and
 *	client supports, so that testssl.sh rates nothing HIGH. TLS 1.3 keeps
 *	OpenSSL's default suites. The system openssl.cnf may only tighten this.
 *
 *	Wiring STARTTLS (RFC 3207) as a command-table row:
 *	  1. reply "220 2.0.0 Ready to start TLS"; once written, discard every
 *	     byte already buffered (plaintext pipelined after STARTTLS is an
 *	     injection, CVE-2011-0411), then free the plain bufferevent without
 *	     closing the socket;
 *	  2. bev = pc_tls_server_wrap(srv, base, fd, handshake_ms, cb, arg);
 *	  3. cb(bev, error, arg) runs once on the loop: error NULL - call
 *	     pc_tls_facts, reset the session to the greeting state (RFC 3207
 *	     section 4.2), install the door's callbacks on bev and go on;
 *	     otherwise free bev (it owns the socket), log error, end the session.
 *	Implicit TLS (RFC 8314, port 465) is step 2 right after accept().
 *	The backend (client) side is the same with pc_tls_client_wrap after
 *	the backend's "220" to our STARTTLS; any bytes after that 220 are
 *	discarded first (response injection).
 * SEE ALSO
 *	RFC 3207, RFC 8314, RFC 7525, RFC 8996, RFC 6125, RFC 7435
 */
#ifndef PC_TLS_H
#define PC_TLS_H

#include <event2/util.h>
#include <stdbool.h>
#include <stddef.h>

struct bufferevent;
struct event_base;
struct pc_err;

/* One certificate chain and its key (PEM). origin is "file:line" of the option naming them,
 * so that -t reports where the bad pair was configured. key may be NULL: the key is in cert. */
struct pc_tls_pair {
    const char *cert, *key;
    const char *origin;
};

enum pc_tls_client_mode {
    PC_TLS_CLIENT_NONE,    /* never STARTTLS */
    PC_TLS_CLIENT_MAY,     /* STARTTLS when offered, certificate not checked (RFC 7435) */
    PC_TLS_CLIENT_ENCRYPT, /* STARTTLS required, certificate not checked */
    PC_TLS_CLIENT_VERIFY,  /* STARTTLS required, chain checked against ca and the name */
};

/* What a finished handshake established (facts for rules, log, Received header). */
struct pc_tls_facts {
    char version[16];       /* "TLSv1.3" */
    char cipher[64];        /* "TLS_AES_256_GCM_SHA384" */
    int bits;               /* symmetric key bits */
    char sni[256];          /* server side: the name the client asked for, "" if none */
    char peer_subject[256]; /* the peer certificate's subject (RFC 2253), "" if none */
    char peer_sha256[65];   /* its SHA-256 fingerprint, lowercase hex, "" if none */
    bool peer_verified;     /* client side under verify: chain and name checked */
};

struct pc_tls_server;
struct pc_tls_client;

/* pc_tls_handshake_cb - the handshake ended: error NULL and bev, an OpenSSL bufferevent that
 * owns the socket, enabled for reading and writing; or bev NULL (the socket is closed) and why
 * it failed ("handshake timeout", an OpenSSL reason, a verification error; for the log). It
 * runs once, on the loop, never within the wrap call; the deadline guarantees that it runs. */
typedef void pc_tls_handshake_cb(struct bufferevent *bev, const char *error, void *arg);

/* pc_tls_server_new - contexts for pairs[0..n) (n >= 1); ask_client_cert requests (never
 * requires) a client certificate, for the fingerprint fact. NULL and err "origin: why". */
struct pc_tls_server *pc_tls_server_new(const struct pc_tls_pair *pairs, size_t n,
                                        bool ask_client_cert, struct pc_err *err);
void pc_tls_server_free(struct pc_tls_server *);

/* pc_tls_client_new - the backend side; ca (PEM file or NULL: the system store) is read only
 * under VERIFY; cert/key (may be NULL) is our client certificate. NULL and err on failure. */
struct pc_tls_client *pc_tls_client_new(enum pc_tls_client_mode, const char *ca,
                                        const struct pc_tls_pair *client_cert, struct pc_err *err);
void pc_tls_client_free(struct pc_tls_client *);
/* pc_tls_client_mode_parse - "none" | "may" | "encrypt" | "verify" */
bool pc_tls_client_mode_parse(const char *, enum pc_tls_client_mode *);

/* pc_tls_server_wrap - start a server handshake on a connected socket, which it owns from
 * then on; cb runs once, within handshake_ms (a deadline, not an idle timer). False if out of
 * memory (fd is then still the caller's). The caller must not touch fd meanwhile. */
bool pc_tls_server_wrap(struct pc_tls_server *, struct event_base *, evutil_socket_t fd,
                        unsigned handshake_ms, pc_tls_handshake_cb *cb, void *arg);
/* pc_tls_client_wrap - the same for the backend side; name is sent as SNI and, under VERIFY,
 * is the name the certificate must carry (X509_VERIFY_PARAM_set1_host). */
bool pc_tls_client_wrap(struct pc_tls_client *, struct event_base *, evutil_socket_t fd,
                        const char *name, unsigned handshake_ms, pc_tls_handshake_cb *cb,
                        void *arg);

/* pc_tls_facts - fill f from a bufferevent after a successful handshake */
void pc_tls_facts(struct bufferevent *, struct pc_tls_facts *f);

#endif
