/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	conf 3h - the configuration: one table, bounded values, file:line errors
 * DESCRIPTION
 *	A pc_conf is one generation of the configuration: parsed, validated,
 *	with every filter configured. Sessions hold a reference to the
 *	generation they started under, so a reload swaps in a new one while
 *	sessions in flight finish under the old.
 * SEE ALSO
 *	portcullis.conf(5)
 */
#ifndef PC_CONF_H
#define PC_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "lib/cidr.h"
#include "lib/log.h"
#include "core/chain.h"
#include "core/settings.h"
#include "gateway/postscreen.h"

struct pc_err;
struct pc_authdb;
struct pc_senders;
struct pc_tls_client;
struct pc_tls_server;

enum pc_identity {
    PC_IDENT_NONE,
    PC_IDENT_XCLIENT,
    PC_IDENT_XFORWARD,
    PC_IDENT_PROXY_V2, /* a PROXY protocol header opens each connection (Exim hosts_proxy) */
    PC_IDENT_PROXY_V1
};
enum pc_bare_newline { PC_BARE_REJECT, PC_BARE_NORMALIZE };
/* listener tls: none, STARTTLS offered (RFC 3207), or implicit TLS from the first byte (RFC 8314)
 */
enum pc_listen_tls { PC_LTLS_NONE, PC_LTLS_STARTTLS, PC_LTLS_IMPLICIT };

struct pc_backend_conf {
    const char *name;
    const char **addresses; /* host:port, tried in order (fail over) */
    size_t naddr;
    const char *maildir; /* instead of addresses: the embedded Maildir backend */
    enum pc_identity identity;
    bool lmtp;
    const char *helo_name;
    int tls;                    /* enum pc_tls_client_mode (gateway/tls.h) */
    const char *tls_ca;         /* verify: the CA file (resolved), NULL: the system store */
    const char *tls_name;       /* verify: the name the certificate must carry; also SNI */
    struct pc_tls_client *tlsc; /* built with the generation when tls is not none */
};

/* auth "name" { } - a credential back end (gateway/authdb.h); built by the AUTH door. */
struct pc_auth_conf {
    const char *name;
    struct pc_authdb *db;      /* built by pc_conf_start, freed with the generation */
    const char *password_file; /* resolved against the configuration's directory, or NULL */
    const char *dovecot;       /* "unix:/path" or "inet:ADDRESS:PORT", or NULL */
    unsigned timeout_ms;       /* per request */
    const char *origin;        /* "file:line" of the section, for errors */
};

/* Which door a listener is: an SMTP proxy, a milter (libmilter), or a Postfix policy
 * service; milter and policy listeners have no backend. */
enum pc_listener_protocol { PC_PROTO_SMTP, PC_PROTO_MILTER, PC_PROTO_POLICY };

struct pc_listener_conf {
    const char *name;
    const char *address;
    enum pc_listener_protocol protocol;
    const char *backend_name;
    struct pc_backend_conf *backend; /* NULL for a milter or policy listener */
    struct pc_chain chain;
    bool trusted;
    int line;
    bool proxy_protocol;            /* a PROXY protocol header precedes the SMTP session */
    struct pc_cidr_list proxy_from; /* the proxies allowed to send it */
    unsigned proxy_timeout_ms;      /* to receive the whole header */
    enum pc_listen_tls tls;
    struct pc_tls_server *tls_server; /* this generation's certificates (gateway/tls.h) */
    unsigned tls_timeout_ms;          /* a whole handshake */
    bool tls_ask_client_cert;         /* ask (never require) a client certificate, for facts */
    bool require_tls, require_auth;   /* no MAIL before them (530 5.7.0) */
    struct pc_auth_conf *auth;        /* AUTH offered with this back end, or NULL */
    bool auth_plaintext;              /* AUTH offered without TLS too */
    unsigned auth_max_failures;       /* per client address within an hour, then 421 */
    struct pc_senders *senders;       /* sender_login_map (gateway/senderlogin.h), or NULL */
    bool postscreen;                  /* the checks of the postscreen section apply */
    bool chunking;                    /* CHUNKING in our EHLO, BDAT served (else 502) */
};

struct pc_limits {
    size_t max_message_size, max_recipients, max_command_length, max_line_length;
    size_t max_header_size, max_headers, max_errors, max_connections, max_connections_per_ip;
    size_t spool_threshold;
    size_t max_commands, max_junk_commands; /* per session; past them 421 4.7.0 */
    size_t min_data_rate;                   /* bytes/second of message content */
    struct pc_cidr_list connection_limit_exceptions;
};

struct pc_timeouts { /* milliseconds; RFC 5321 4.5.3.2 defaults */
    unsigned command, data, backend_connect, backend_greeting, backend_command;
    unsigned backend_data_init, backend_data_block, backend_data_done;
};

/* The configuration read without -c; the Makefile sets it from sysconfdir. */
#ifndef PC_CONFIG_FILE
#define PC_CONFIG_FILE "/etc/portcullis/portcullis.conf"
#endif

struct pc_conf {
    struct pc_settings core; /* what core/ reads, and the reference count (core/settings.h) */
    void *cfg;               /* cfg_t *, kept for filters that read their section late */
    const char *path;
    const char *hostname;
    const char *banner;
    const char *spool_dir;
    const char *log;
    enum pc_log_target log_target;
    bool log_json;
    const char *syslog_name;
    bool metrics_enabled;
    const char *metrics_address; /* host:port of the Prometheus endpoint */
    const char *user, *group;    /* drop to these after binding ("" = stay) */
    bool run_as_root;            /* started as root without user: allowed to keep running */
    unsigned workers;            /* worker processes (>= 1; "0" resolved to the CPUs online) */
    unsigned worker_timeout;     /* ms a worker's loop may stay silent before it is killed */
    bool delay_reject, soft_bounce, smtputf8;
    enum pc_bare_newline bare_newline;
    bool nul_strip; /* nul = "strip": drop NUL bytes instead of refusing the message */
    struct pc_limits limits;
    struct pc_timeouts timeouts;
    struct pc_listener_conf *listeners;
    size_t nlisteners;
    struct pc_backend_conf *backends;
    size_t nbackends;
    struct pc_auth_conf *auths;
    size_t nauths;
    /* dns { } - the shared resolver (core/dns.h) */
    const char **dns_nameservers;
    size_t dns_nnameservers;
    unsigned dns_timeout;
    struct pc_ps_conf postscreen; /* postscreen { } (gateway/postscreen.h) */
    void **filter_conf;           /* indexed like pc_filter_registry */
    bool *filter_used;
    struct pc_pool *pool;
};

/* pc_conf_load - parse and validate; path NULL means the embedded defaults */
struct pc_conf *pc_conf_load(const char *path, struct pc_err *);
/* pc_conf_start - start the filters that some chain uses */
int pc_conf_start(struct pc_conf *, struct pc_services *, struct pc_err *);
/* pc_conf_auth - the auth section called name, or NULL */
const struct pc_auth_conf *pc_conf_auth(const struct pc_conf *, const char *name);
/* pc_conf_filter_cfg - an empty libconfuse tree of one filter's section, generated from its
 * rows with their validators (for tests that configure a filter alone); cfg_free it */
struct pc_filter_ops;
cfg_t *pc_conf_filter_cfg(const struct pc_filter_ops *);
void pc_conf_ref(struct pc_conf *);
void pc_conf_unref(struct pc_conf *);
/* pc_conf_print_defaults - every parameter with its default, as "section.name = value" */
void pc_conf_print_defaults(void);
/* pc_conf_print - every parameter's effective value in the file (NULL: the defaults); with
 * only_changed, those that differ from the default (postconf -n). -1 if the file is bad. */
int pc_conf_print(const char *path, bool only_changed, struct pc_err *);

#endif
