/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	server 3 - the process: event loop, listeners, signals, reload
 * DESCRIPTION
 *	One event loop serves every listener. Connection limits (in all and
 *	per client address) are enforced at accept with a 421. SIGHUP loads
 *	the configuration aside and swaps it in only when it is valid; new
 *	sessions use the new generation, sessions in flight finish under the
 *	one they started with. Listener addresses are bound at start; a
 *	reload that changes them says that a restart is needed.
 *	SIGTERM and SIGINT stop serving new clients (they hear 421 4.3.2 at
 *	once) and let sessions finish for a grace period, so that no
 *	transaction is cut off by a routine restart. SIGUSR1 reopens the logs.
 *	A failed accept (EMFILE, ENFILE, ENOBUFS) pauses every listener on a
 *	timer and is logged once per interval, as nginx does, instead of
 *	spinning on a connection it cannot take.
 */
#include "gateway/server.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "core/filter.h"
#include "core/session.h"
#include "gateway/backend.h"
#include "gateway/conf.h"
#include "core/dns.h"
#include "gateway/metrics_http.h"
#include "gateway/milter.h"
#include "gateway/policy_door.h"
#include "gateway/proxy_in.h"
#include "gateway/service.h"
#include "gateway/smtp_server.h"
#include "core/worker.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/parse.h"

#define PC_GRACE_SECONDS 30
/* After EMFILE/ENFILE at accept the listeners pause this long (nginx does the same): the
 * pending connection stays readable, so retrying at once would spin a core at 100%. */
#define PC_ACCEPT_PAUSE_MS 500
/* At most one log line about paused accepts per this many seconds. */
#define PC_ACCEPT_LOG_SECONDS 10

struct pc_ipcount {
    struct pc_ipcount *next;
    struct pc_ip ip;
    unsigned n;
};

#define PC_IPHASH 4096

struct pc_listener {
    struct pc_server *srv;
    char name[128]; /* copied: a reload frees the generation it came from */
    char address[300];
    struct evconnlistener *evl;
};

struct pc_server {
    struct event_base *base;
    const struct pc_worker_env *wenv; /* NULL: the only process (workers = 1) */
    struct pc_services svc;
    struct pc_conf *conf;
    struct pc_listener *listeners;
    size_t nlisteners;
    size_t nconn;
    struct pc_ipcount *iphash[PC_IPHASH];
    struct event *sigterm, *sigint, *sighup, *grace, *accept_resume;
    struct event *sigusr1, *tick; /* log reopen; systemd watchdog and status */
    struct event *beat;           /* worker: heartbeat to the parent (master.c) */
    unsigned long naccepted, nreloads;
    bool stopping;
    bool accept_paused;
    time_t accept_logged;        /* when the last accept-pause line was written */
    unsigned long accept_errors; /* accept failures since that line */
};

/* ip_slot - hash bucket of an address */
static struct pc_ipcount **ip_slot(struct pc_server *srv, const struct pc_ip *ip)
{
    unsigned h = 2166136261u;

    for (int i = 0; i < 16; i++)
        h = (h ^ ip->b[i]) * 16777619u;
    return &srv->iphash[h % PC_IPHASH];
}

/* ip_count - the counter of an address, created on demand */
static struct pc_ipcount *ip_count(struct pc_server *srv, const struct pc_ip *ip, bool create)
{
    struct pc_ipcount **slot = ip_slot(srv, ip);

    for (struct pc_ipcount *e = *slot; e; e = e->next)
        if (memcmp(&e->ip, ip, sizeof(*ip)) == 0)
            return e;
    if (!create)
        return NULL;
    struct pc_ipcount *e = calloc(1, sizeof(*e));
    if (e == NULL)
        pc_fatal("out of memory");
    e->ip = *ip;
    e->next = *slot;
    *slot = e;
    return e;
}

/* One admitted connection: the address its per-client counter was charged to. */
struct pc_conn_ticket {
    struct pc_server *srv;
    struct pc_ip ip;
};

/* A connection whose PROXY header is being read. */
struct pc_proxy_wait {
    struct pc_server *srv;
    char listener[128];
    struct sockaddr_storage peer;
    socklen_t peerlen;
};

/* idle - no session of any door is open (the milter door counts its own) */
static bool idle(const struct pc_server *srv)
{
    return srv->nconn == 0 && pc_milter_sessions() == 0;
}

/* on_milter_idle - the last milter session of a drain ended */
static void on_milter_idle(void *arg)
{
    struct pc_server *srv = arg;

    if (srv->stopping && idle(srv))
        event_base_loopexit(srv->base, NULL);
}

/* on_session_closed - counters down, for the address charged at admission (whatever the
 * session's client became since); exit when draining and idle */
static void on_session_closed(void *arg, const struct pc_ip *client)
{
    struct pc_conn_ticket *t = arg;
    struct pc_server *srv = t->srv;
    const struct pc_ip *ip = &t->ip;
    struct pc_ipcount **slot = ip_slot(srv, ip);

    (void)client;

    srv->nconn--;
    for (struct pc_ipcount **pe = slot; *pe; pe = &(*pe)->next)
        if (memcmp(&(*pe)->ip, ip, sizeof(*ip)) == 0) {
            if (--(*pe)->n == 0) {
                struct pc_ipcount *e = *pe;
                *pe = e->next;
                free(e);
            }
            break;
        }
    free(t);
    if (srv->stopping && idle(srv))
        event_base_loopexit(srv->base, NULL);
}

/* refuse - say 421 on a socket we will not serve, without a session (a policy client just
 * sees the close: an SMTP line is no answer in its protocol, and it falls back by itself) */
static void refuse(struct pc_server *srv, const struct pc_listener_conf *lc, evutil_socket_t fd,
                   const char *enh, const char *why)
{
    char line[300];

    if (lc && lc->protocol != PC_PROTO_SMTP) {
        evutil_closesocket(fd);
        return;
    }
    int n = snprintf(line, sizeof(line), "421 %s %s Error: %s, try again later\r\n", enh,
                     srv->conf->hostname, why);
    /* Best effort: the socket is fresh, the line is small, the buffer is empty. */
    if (write(fd, line, (size_t)n) < 0)
        pc_debug("refuse: %m");
    evutil_closesocket(fd);
}

/* listener_conf - the current generation's settings for a bound listener */
static const struct pc_listener_conf *listener_conf(struct pc_server *srv, const char *name)
{
    for (size_t i = 0; i < srv->conf->nlisteners; i++)
        if (strcmp(srv->conf->listeners[i].name, name) == 0)
            return &srv->conf->listeners[i];
    return NULL;
}

/* admit - per-client limit on the client's address (the real one behind a proxy), then SMTP */
static void admit(struct pc_server *srv, const struct pc_listener_conf *lc, evutil_socket_t fd,
                  const struct sockaddr *sa, socklen_t salen, const struct pc_pp_info *proxy)
{
    const struct pc_limits *lim = &srv->conf->limits;
    struct pc_conn_ticket *t = calloc(1, sizeof(*t));

    if (t == NULL)
        pc_fatal("out of memory");
    t->srv = srv;
    pc_ip_from_sockaddr(sa, &t->ip);
    struct pc_ipcount *e = ip_count(srv, &t->ip, true);
    /* A policy listener's clients are the MTA's processes, all from its address. */
    if (lc->protocol == PC_PROTO_SMTP && e->n >= lim->max_connections_per_ip &&
        !pc_cidr_list_match(&lim->connection_limit_exceptions, &t->ip)) {
        char a[64];
        pc_warn("too many connections from %s", pc_ip_format(&t->ip, a, sizeof(a)));
        pc_metric_add(PC_M_CONNECTIONS_REFUSED, "per_ip_limit", NULL, 1);
        free(t); /* max_connections_per_ip >= 1: the counter existed already */
        refuse(srv, lc, fd, "4.7.0", "too many connections from your address");
        return;
    }
    e->n++;
    srv->nconn++;
    srv->naccepted++;
    evutil_make_socket_nonblocking(fd);
    if (lc->protocol == PC_PROTO_POLICY)
        pc_policy_accept(&srv->svc, &srv->conf, lc, fd, sa, salen, on_session_closed, t);
    else
        pc_smtp_accept(&srv->svc, srv->conf, lc, fd, sa, salen, on_session_closed, t, proxy);
}

/* on_proxy_header - the PROXY header was read (info) or not (why) */
static void on_proxy_header(void *arg, evutil_socket_t fd, const struct pc_pp_info *info,
                            const char *why)
{
    struct pc_proxy_wait *w = arg;
    struct pc_server *srv = w->srv;
    const struct pc_listener_conf *lc = listener_conf(srv, w->listener);
    char peer[64], client[64];
    struct pc_ip ip;

    srv->nconn--;
    pc_ip_from_sockaddr((struct sockaddr *)&w->peer, &ip);
    pc_ip_format(&ip, peer, sizeof(peer));
    if (info == NULL) {
        pc_warn("listener %s: bad PROXY header from %s: %s; connection closed", w->listener, peer,
                why);
        evutil_closesocket(fd);
    } else if (lc == NULL || srv->stopping) {
        refuse(srv, lc, fd, "4.3.2", "service shutting down");
    } else {
        const struct sockaddr *sa = (const struct sockaddr *)&w->peer;
        socklen_t salen = w->peerlen;
        if (!info->local) {
            sa = (const struct sockaddr *)&info->src;
            salen = info->srclen;
        }
        pc_ip_from_sockaddr(sa, &ip);
        pc_info("listener %s: PROXY v%d from %s: client %s%s%s%s", w->listener, info->version, peer,
                info->local ? "(the proxy itself) " : "", pc_ip_format(&ip, client, sizeof(client)),
                info->tls.present ? " tls=" : "",
                info->tls.present ? (info->tls.version[0] ? info->tls.version : "yes") : "");
        admit(srv, lc, fd, sa, salen, info);
    }
    free(w);
    if (srv->stopping && idle(srv))
        event_base_loopexit(srv->base, NULL);
}

/* on_accept - a new connection */
static void on_accept(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    struct pc_listener *l = arg;
    struct pc_server *srv = l->srv;
    const struct pc_limits *lim = &srv->conf->limits;
    const struct pc_listener_conf *lc = listener_conf(srv, l->name);

    (void)evl;
    if (lc == NULL || srv->stopping) {
        pc_metric_add(PC_M_CONNECTIONS_REFUSED, "stopping", NULL, 1);
        /* RFC 3463 4.3.2: system not accepting network messages (we are draining). */
        refuse(srv, lc, fd, "4.3.2", "service shutting down");
        return;
    }
    if (srv->nconn >= lim->max_connections) {
        pc_warn("connection limit %zu reached; refusing a client", lim->max_connections);
        pc_metric_add(PC_M_CONNECTIONS_REFUSED, "limit", NULL, 1);
        refuse(srv, lc, fd, "4.7.0", "too many connections");
        return;
    }
    if (!lc->proxy_protocol) {
        admit(srv, lc, fd, sa, (socklen_t)salen, NULL);
        return;
    }
    /* The header comes first, and only from the proxies we know (section 2: a receiver
     * that accepted it from anyone would let any client choose its address). */
    struct pc_ip ip;
    char a[64];
    pc_ip_from_sockaddr(sa, &ip);
    if (!pc_cidr_list_match(&lc->proxy_from, &ip)) {
        pc_warn("listener %s: connection from %s, which is not in proxy_from; closed", l->name,
                pc_ip_format(&ip, a, sizeof(a)));
        evutil_closesocket(fd);
        return;
    }
    struct pc_proxy_wait *w = calloc(1, sizeof(*w));
    if (w == NULL)
        pc_fatal("out of memory");
    w->srv = srv;
    pc_strlcpy(w->listener, l->name, sizeof(w->listener));
    memcpy(&w->peer, sa, (size_t)salen < sizeof(w->peer) ? (size_t)salen : sizeof(w->peer));
    w->peerlen = (socklen_t)salen;
    evutil_make_socket_nonblocking(fd);
    srv->nconn++; /* a header being read holds a connection slot */
    if (pc_proxy_read(srv->base, fd, lc->proxy_timeout_ms, on_proxy_header, w) < 0)
        pc_fatal("out of memory");
}

/* on_accept_resume - the accept pause is over: listen again */
static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    struct pc_server *srv = arg;

    (void)fd, (void)what;
    srv->accept_paused = false;
    for (size_t i = 0; i < srv->nlisteners; i++)
        if (srv->listeners[i].evl)
            evconnlistener_enable(srv->listeners[i].evl);
}

/* on_accept_error - EMFILE and friends: pause every listener on a timer instead of spinning.
 * libevent retries EAGAIN and ECONNABORTED itself; what reaches us is a lack of resources. */
static void on_accept_error(struct evconnlistener *evl, void *arg)
{
    struct pc_listener *l = arg;
    struct pc_server *srv = l->srv;
    int err = errno;
    time_t now = time(NULL);
    struct timeval tv = {PC_ACCEPT_PAUSE_MS / 1000, (PC_ACCEPT_PAUSE_MS % 1000) * 1000};

    (void)evl;
    srv->accept_errors++;
    if (now - srv->accept_logged >= PC_ACCEPT_LOG_SECONDS) {
        pc_warn("listener %s: accept: %s; pausing new connections for %dms (%lu accept "
                "failures since the last such line)",
                l->name, strerror(err), PC_ACCEPT_PAUSE_MS, srv->accept_errors);
        srv->accept_logged = now;
        srv->accept_errors = 0;
    }
    if (srv->accept_paused)
        return;
    srv->accept_paused = true;
    for (size_t i = 0; i < srv->nlisteners; i++)
        if (srv->listeners[i].evl)
            evconnlistener_disable(srv->listeners[i].evl);
    evtimer_add(srv->accept_resume, &tv);
}

/* worker_fd - the socket the parent bound for a listener of this worker, or -1 */
static int worker_fd(const struct pc_worker_env *w, const char *name)
{
    for (size_t i = 0; i < w->nfds; i++)
        if (strcmp(w->names[i], name) == 0)
            return w->fds[i];
    return -1;
}

/* serves_singletons - the only process, or worker 0 of several: what one process alone may
 * serve. The metrics endpoint (one address; it renders every worker's slot of the shared metrics
 * region) and the milter listener (libmilter binds its own socket and runs one smfi_main per
 * process). */
static bool serves_singletons(const struct pc_server *srv)
{
    return srv->wenv == NULL || srv->wenv->index == 0;
}

/* bind_listener - one listening socket */
static int bind_listener(struct pc_server *srv, struct pc_listener *l,
                         const struct pc_listener_conf *lc)
{
    char host[256], port[16];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;

    l->srv = srv;
    pc_strlcpy(l->name, lc->name, sizeof(l->name));
    snprintf(l->address, sizeof(l->address), "%s", lc->address);
    if (lc->protocol == PC_PROTO_MILTER) /* libmilter owns this socket */
        return serves_singletons(srv) ? pc_milter_open(&srv->svc, srv->conf, lc) : 0;
    if (!pc_parse_hostport(lc->address, host, sizeof(host), port, sizeof(port)) ||
        getaddrinfo(host, port, &hints, &res) != 0) {
        pc_err("listener %s: cannot resolve %s", lc->name, lc->address);
        return -1;
    }
    /* A socket systemd passed for this address (socket activation) is used as it is; so is
     * one the parent bound for this worker (workers > 1). */
    int fd = srv->wenv ? worker_fd(srv->wenv, lc->name)
                       : pc_listen_fd_take(res->ai_addr, res->ai_addrlen);
    if (srv->wenv && fd < 0) {
        freeaddrinfo(res);
        pc_warn("listener %s: not bound when the workers started; restart to serve it", lc->name);
        return 0;
    }
    if (fd >= 0) {
        evutil_make_socket_nonblocking(fd);
        evutil_make_socket_closeonexec(fd);
        l->evl = evconnlistener_new(srv->base, on_accept, l, LEV_OPT_CLOSE_ON_FREE, 0, fd);
    } else
        l->evl = evconnlistener_new_bind(srv->base, on_accept, l,
                                         LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                             LEV_OPT_CLOSE_ON_EXEC,
                                         1024, res->ai_addr, (int)res->ai_addrlen);
    freeaddrinfo(res);
    if (l->evl == NULL) {
        pc_err("listener %s: cannot listen on %s: %s", lc->name, lc->address, strerror(errno));
        return -1;
    }
    evconnlistener_set_error_cb(l->evl, on_accept_error);
    pc_info("listener %s on %s%s, %s%s", lc->name, lc->address,
            srv->wenv ? " (socket from the parent)"
            : fd >= 0 ? " (socket from systemd)"
                      : "",
            lc->backend ? "backend " : "policy service", lc->backend ? lc->backend->name : "");
    return 0;
}

/* apply_log_conf - log target, format and syslog_name of a configuration generation */
static void apply_log_conf(const struct pc_conf *conf)
{
    pc_log_init(conf->syslog_name, conf->log_target, LOG_MAIL);
    pc_log_set_format(conf->log_json ? PC_LOG_JSON : PC_LOG_TEXT);
}

/* notify_status - the counts systemctl status shows */
static void notify_status(struct pc_server *srv, const char *state)
{
    pc_notify("%sSTATUS=%s: %zu sessions open, %lu accepted, %lu reloads", state,
              srv->stopping ? "stopping" : "serving", srv->nconn, srv->naccepted, srv->nreloads);
}

/* on_tick - systemd watchdog keep-alive and status, from the loop: a stuck loop stays silent */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct pc_server *srv = arg;

    (void)fd, (void)what;
    notify_status(srv, pc_watchdog_usec() ? "WATCHDOG=1\n" : "");
}

/* on_beat - a worker's heartbeat: the parent reads it from the shared page to see that this
 * loop still turns (a library call that never returns leaves it old, and the parent kills us) */
static void on_beat(evutil_socket_t fd, short what, void *arg)
{
    struct pc_server *srv = arg;
    struct timespec ts;

    (void)fd, (void)what;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    __atomic_store_n(srv->wenv->beat, (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000,
                     __ATOMIC_RELAXED);
}

/* beat_start - a worker beats once now and every second while its loop runs */
static void beat_start(struct pc_server *srv)
{
    struct timeval tv = {1, 0};

    if (srv->wenv == NULL || srv->wenv->beat == NULL)
        return;
    srv->beat = event_new(srv->base, -1, EV_PERSIST, on_beat, srv);
    event_add(srv->beat, &tv);
    on_beat(-1, 0, srv);
}

/* beat_stop - leaving the loop: what follows turns no loop, so the parent stops watching (0) */
static void beat_stop(struct pc_server *srv)
{
    if (srv->beat == NULL)
        return;
    __atomic_store_n(srv->wenv->beat, 0LL, __ATOMIC_RELAXED);
    event_free(srv->beat);
    srv->beat = NULL;
}

/* on_reopen - SIGUSR1: reopen the logs (after rotation) */
static void on_reopen(evutil_socket_t sig, short what, void *arg)
{
    (void)sig, (void)what, (void)arg;
    pc_log_reopen();
    pc_info("logs reopened");
}

/* reload - load a new generation, swapped in only when valid */
static void reload(struct pc_server *srv)
{
    struct pc_err err = {{0}};
    const char *path = strcmp(srv->conf->path, "(embedded defaults)") ? srv->conf->path : NULL;

    struct pc_conf *next = pc_conf_load(path, &err);
    if (next == NULL) {
        pc_err("reload failed, keeping the running configuration: %s", err.msg);
        pc_metric_add(PC_M_RELOADS, "failed", NULL, 1);
        return;
    }
    if (pc_conf_start(next, &srv->svc, &err) < 0) {
        pc_err("reload failed, keeping the running configuration: %s", err.msg);
        pc_metric_add(PC_M_RELOADS, "failed", NULL, 1);
        pc_conf_unref(next);
        return;
    }
    for (size_t i = 0; i < srv->nlisteners; i++) {
        bool found = false;
        for (size_t k = 0; k < next->nlisteners; k++)
            if (!strcmp(next->listeners[k].name, srv->listeners[i].name)) {
                found = true;
                if (strcmp(next->listeners[k].address, srv->listeners[i].address))
                    pc_warn("reload: listener %s address changed; restart to apply",
                            srv->listeners[i].name);
            }
        if (!found)
            pc_warn("reload: listener %s removed; it refuses new clients until restart",
                    srv->listeners[i].name);
    }
    if (next->nlisteners > srv->nlisteners)
        pc_warn("reload: new listeners need a restart");
    pc_backend_generation(srv->base, next);
    pc_milter_generation(next);
    pc_conf_unref(srv->conf);
    srv->conf = next;
    srv->svc.hostname = next->hostname;
    apply_log_conf(next);
    pc_metrics_http_configure(srv->base, next->metrics_enabled && serves_singletons(srv),
                              next->metrics_address);
    pc_metric_add(PC_M_RELOADS, "ok", NULL, 1);
    srv->nreloads++;
    pc_info("reloaded %s", next->path);
}

/* on_reload - SIGHUP: tell systemd a reload runs, reload, ready again either way */
static void on_reload(evutil_socket_t sig, short what, void *arg)
{
    struct pc_server *srv = arg;
    struct timespec ts;

    (void)sig, (void)what;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    pc_notify("RELOADING=1\nMONOTONIC_USEC=%llu",
              (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
    reload(srv);
    notify_status(srv, "READY=1\n");
}

/* on_grace - sessions did not finish in time */
static void on_grace(evutil_socket_t fd, short what, void *arg)
{
    struct pc_server *srv = arg;

    (void)fd, (void)what;
    pc_warn("stopping with %zu sessions still open", srv->nconn + pc_milter_sessions());
    event_base_loopexit(srv->base, NULL);
}

/* on_stop - SIGTERM/SIGINT: stop accepting, drain */
static void on_stop(evutil_socket_t sig, short what, void *arg)
{
    struct pc_server *srv = arg;
    struct timeval tv = {PC_GRACE_SECONDS, 0};

    (void)what;
    if (srv->stopping) {
        event_base_loopexit(srv->base, NULL);
        return;
    }
    pc_info("signal %d: stopping; waiting up to %ds for %zu sessions", (int)sig, PC_GRACE_SECONDS,
            srv->nconn + pc_milter_sessions());
    srv->stopping = true;
    pc_milter_stop();
    notify_status(srv, "STOPPING=1\n");
    /* The listeners stay open while we drain: a new client hears 421 from on_accept at once
     * instead of waiting in the backlog until we exit. */
    if (idle(srv)) {
        event_base_loopexit(srv->base, NULL);
        return;
    }
    srv->grace = evtimer_new(srv->base, on_grace, srv);
    evtimer_add(srv->grace, &tv);
}

/* raise_nofile - as many descriptors as we may have: idle clients cost one each */
static void raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The server of this process: reachable from here, one abandoned by a failed start is not a
 * leak to LeakSanitizer (the process exits at once). */
static struct pc_server *volatile pc_running;

static int serve(struct pc_conf *conf, const struct pc_worker_env *w);

/* pc_server_run - serve until stopped: the only process */
int pc_server_run(struct pc_conf *conf)
{
    return serve(conf, NULL);
}

/* pc_server_run_worker - serve until stopped: one of several workers on the parent's sockets */
int pc_server_run_worker(struct pc_conf *conf, const struct pc_worker_env *w)
{
    return serve(conf, w);
}

/* add_signals - stop, reload and reopen on signals; then take the ones a parent held back */
static void add_signals(struct pc_server *srv)
{
    sigset_t none;

    srv->sigterm = evsignal_new(srv->base, SIGTERM, on_stop, srv);
    srv->sigint = evsignal_new(srv->base, SIGINT, on_stop, srv);
    srv->sighup = evsignal_new(srv->base, SIGHUP, on_reload, srv);
    evsignal_add(srv->sigterm, NULL);
    evsignal_add(srv->sigint, NULL);
    evsignal_add(srv->sighup, NULL);
    srv->sigusr1 = evsignal_new(srv->base, SIGUSR1, on_reopen, srv);
    evsignal_add(srv->sigusr1, NULL);
    /* A worker is forked with these blocked, so that a SIGTERM sent during its start drains
     * it instead of killing it; pending ones arrive now, at our handlers. */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

/* serve - the event loop of this process, until stopped */
static int serve(struct pc_conf *conf, const struct pc_worker_env *w)
{
    struct pc_server *srv = calloc(1, sizeof(*srv));
    struct pc_err err = {{0}};
    int rc = 0;

    if (srv == NULL)
        pc_fatal("out of memory");
    pc_running = srv;
    srv->wenv = w;
    apply_log_conf(conf);
    signal(SIGPIPE, SIG_IGN);
    /* SIGUSR1's default action terminates: ignored until on_reopen takes it over below. */
    signal(SIGUSR1, SIG_IGN);
    raise_nofile();
    evthread_use_pthreads();
    srv->base = event_base_new();
    srv->conf = conf;
    srv->svc.base = srv->base;
    srv->svc.hostname = conf->hostname;
    /* SPF holds a worker while its lookups run on the loop: room for several at once. */
    srv->svc.workers = pc_workers_create(srv->base, 16);
    srv->svc.dns = pc_dns_create(srv->base, conf->dns_nameservers, conf->dns_nnameservers,
                                 conf->dns_timeout, &err);
    if (srv->svc.dns == NULL) {
        pc_err("%s", err.msg);
        return EX_CONFIG;
    }
    if (pc_conf_start(conf, &srv->svc, &err) < 0) {
        pc_err("%s", err.msg);
        return EX_CONFIG;
    }
    srv->accept_resume = evtimer_new(srv->base, on_accept_resume, srv);
    /* Learn what the backends offer before the first client hears our EHLO (bounded). */
    pc_backend_generation(srv->base, conf);
    while (pc_backend_probing())
        event_base_loop(srv->base, EVLOOP_ONCE);
    if (w == NULL)
        pc_listen_fds_init();
    srv->nlisteners = conf->nlisteners;
    srv->listeners = calloc(conf->nlisteners, sizeof(*srv->listeners));
    for (size_t i = 0; i < conf->nlisteners; i++)
        if (bind_listener(srv, &srv->listeners[i], &conf->listeners[i]) < 0)
            return EX_UNAVAILABLE;
    if (w == NULL)
        pc_listen_fds_close_unused();
    if (w == NULL) { /* with workers, the parent's start (master.c) */
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        pc_metric_set(PC_M_START_TIME, NULL, NULL, (double)now.tv_sec);
    }
    if (w && w->session_ids)
        pc_session_ids_share(w->session_ids);
    /* Bound before the privileges go, like the listeners (a reload rebinds as the user). */
    if (pc_metrics_http_configure(srv->base, conf->metrics_enabled && serves_singletons(srv),
                                  conf->metrics_address) < 0)
        return EX_UNAVAILABLE;
    pc_metric_set(PC_M_WORKERS, NULL, NULL, w ? (double)w->count : 1.0);
    /* Everything root is needed for is done: listeners bound, logs open, keys read (a
     * worker's parent dropped them before forking it). */
    if (w == NULL && pc_privs_drop(conf->user, conf->group, conf->run_as_root, &err) < 0) {
        pc_err("%s", err.msg);
        return EX_CONFIG;
    }
    add_signals(srv);
    /* After the signal events: libmilter's threads must find the loop's handlers in place.
     * libmilter binds its own socket (no SO_REUSEPORT) and runs one smfi_main per process:
     * with workers, worker 0 alone serves the milter listener. */
    if (serves_singletons(srv) && pc_milter_run(on_milter_idle, srv) < 0)
        return EX_UNAVAILABLE;
    if (getenv("NOTIFY_SOCKET")) {
        /* Half the watchdog interval, as sd_watchdog_enabled(3) advises; status every 5 s. */
        uint64_t wd = pc_watchdog_usec() / 2, every = wd && wd < 5000000 ? wd : 5000000;
        struct timeval tv = {(time_t)(every / 1000000), (suseconds_t)(every % 1000000)};
        srv->tick = event_new(srv->base, -1, EV_PERSIST, on_tick, srv);
        event_add(srv->tick, &tv);
    }
    if (w)
        pc_info("worker %u of %u started: %s, %zu listeners", w->index, w->count, conf->path,
                conf->nlisteners);
    else
        pc_info("portcullis started: %s, %zu listeners", conf->path, conf->nlisteners);
    beat_start(srv);
    if (w && w->ready)
        *w->ready = 1; /* the parent says READY=1 once every worker has */
    notify_status(srv, "READY=1\n");
    if (event_base_dispatch(srv->base) < 0 || pc_milter_failed())
        rc = 1;
    beat_stop(srv);
    /* A capability probe a reload started just before the stop ends on its own timer: let it,
     * so that its connection and its configuration reference are freed, not abandoned. */
    while (pc_backend_probing())
        event_base_loop(srv->base, EVLOOP_ONCE);
    pc_info("portcullis stopped");
    for (size_t i = 0; i < srv->nlisteners; i++)
        if (srv->listeners[i].evl)
            evconnlistener_free(srv->listeners[i].evl);
    free(srv->listeners);
    event_free(srv->sigterm);
    event_free(srv->sigint);
    event_free(srv->sighup);
    event_free(srv->accept_resume);
    event_free(srv->sigusr1);
    pc_metrics_http_stop();
    if (srv->tick)
        event_free(srv->tick);
    if (srv->grace)
        event_free(srv->grace);
    pc_workers_destroy(srv->svc.workers);
    if (idle(srv))
        pc_dns_free(srv->svc.dns);
    /* Per-address counters go whatever happens to the sessions (they only count them). */
    for (size_t i = 0; i < PC_IPHASH; i++)
        while (srv->iphash[i]) {
            struct pc_ipcount *e = srv->iphash[i];
            srv->iphash[i] = e->next;
            free(e);
        }
    /* Sessions still open at exit are abandoned with the process: clients retry. A milter
     * callback may still post to the loop: then the loop is not freed either. */
    if (idle(srv)) {
        pc_conf_unref(srv->conf);
        event_base_free(srv->base);
    }
    free(srv);
    return rc;
}
