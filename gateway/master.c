/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	master 3 - workers = N: one parent, N worker processes
 * DESCRIPTION
 *	The parent binds every listener, drops privileges and forks the
 *	workers; each worker runs the usual event loop (server 3) on
 *	sockets the parent bound for it. The parent serves no client: it
 *	owns the signals and systemd's view of the service.
 *
 *	Sockets: one SO_REUSEPORT socket per listener and worker, bound by
 *	the parent before privileges go (port 25) and kept open by it. The
 *	kernel spreads connections over the group by a hash of the
 *	addresses, so workers are woken one at a time (no thundering herd on
 *	one shared socket) and a busy worker does not steal what a free one
 *	could take. Because the parent keeps every socket, connections that
 *	queue on a dead worker's socket wait for its replacement instead of
 *	being reset, and the replacement needs no privilege to bind. A
 *	socket systemd passed (socket activation) is one socket: every worker
 *	accepts on it.
 *
 *	Signals, all taken synchronously (sigtimedwait) so the parent has no
 *	event loop to share with its children: SIGHUP loads the configuration
 *	and, only when it is valid, passes SIGHUP on to every worker, which
 *	reloads as a single process does; SIGTERM/SIGINT pass on and the
 *	parent exits once every worker has drained; SIGUSR1 reopens the logs
 *	here and in every worker. A worker that dies is replaced with the
 *	parent's current configuration, at once if it had run 10 s, else
 *	after a backoff that doubles up to 30 s. A worker that dies before
 *	the first READY=1 fails the start, with its exit status.
 *
 *	Workers live in their own process group (a Ctrl-C or killpg reaches
 *	the parent only, which passes it on once) and die with the parent
 *	(PR_SET_PDEATHSIG). Only the parent speaks to systemd.
 *
 *	Stuck workers: a worker's loop stores the monotonic time in its slot
 *	of a shared page every second (server.c on_beat); the parent reads
 *	the slots once a second, with no system call, and SIGKILLs a worker
 *	whose loop has been silent for worker_timeout (a library call that
 *	never returns, SIGSTOP); the restart logic above replaces it. A
 *	draining worker beats on while its loop turns, so slow sessions never
 *	look stuck (its own 30 s grace bounds them), and one that has left its
 *	loop to exit clears its slot. The systemd watchdog ping is sent only
 *	while no worker is stuck past worker_timeout: one that a SIGKILL does
 *	not remove (uninterruptible sleep) stops the pings and systemd
 *	restarts the whole service.
 *
 *	Shared state, all mapped before the first fork: the ready flags and
 *	heartbeats above; the instance's session id counter (each session
 *	takes the next with one atomic add, so ids never repeat across
 *	workers); and the metrics region (metrics 3): a slot per worker and
 *	one for the parent. A dead worker's slot is kept, its gauges of held
 *	state (connections open, spool bytes) zeroed, and its replacement
 *	counts on in it, so the totals worker 0 serves never go back while
 *	the parent lives.
 * SEE ALSO
 *	socket(7) SO_REUSEPORT, sd_notify(3), prctl(2)
 */
#include "gateway/master.h"

#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "gateway/conf.h"
#include "gateway/server.h"
#include "gateway/service.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/parse.h"

#define PC_BACKLOG        1024
#define PC_RESTART_MAX_MS 30000
#define PC_STABLE_SECONDS 10 /* a worker that ran this long is replaced at once */
#define PC_TICK_MS        200
#define PC_CHECK_MS       1000 /* how often the parent reads the heartbeats */

struct pc_wslot {
    pid_t pid;          /* 0: not running */
    struct timespec up; /* when it was started */
    long delay_ms;      /* backoff before the next restart */
    long long due_ms;   /* restart at this monotonic time; 0: none pending */
    bool killed;        /* SIGKILLed as stuck: not again */
};

struct pc_master {
    struct pc_conf *conf; /* the current generation: replacements start with it */
    unsigned n;
    size_t nl;           /* listeners bound at start */
    char **names;        /* nl listener names */
    int *fds;            /* n * nl sockets: worker i's for listener k at i * nl + k */
    volatile int *ready; /* n flags in a shared page */
    long long *beat;     /* n heartbeats in a shared page (monotonic ms; 0: not watched) */
    unsigned long long *session_ids;   /* shared: the last session id of the instance */
    struct pc_metrics_region *metrics; /* shared: a slot per worker, then the parent's */
    long long next_check;
    bool stuck; /* a worker was silent past worker_timeout at the last check */
    struct pc_wslot *w;
    bool stopping, started;
    int fail_rc; /* a worker failed the start: exit with this */
};

/* The parent of this process: reachable, so LeakSanitizer in a worker sees no leak. */
static struct pc_master *volatile pc_master_running;

/* now_ms - monotonic milliseconds */
static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* reuseport_socket - one listening socket of a SO_REUSEPORT group */
static int reuseport_socket(const struct addrinfo *ai)
{
    int one = 1;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, PC_BACKLOG) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* bind_one - listener k: systemd's socket for every worker, or one socket per worker */
static int bind_one(struct pc_master *m, size_t k, const struct pc_listener_conf *lc)
{
    char host[256], port[16];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;

    if (lc->protocol == PC_PROTO_MILTER) { /* libmilter binds it, in worker 0 (server.c) */
        for (unsigned i = 0; i < m->n; i++)
            m->fds[i * m->nl + k] = -1;
        pc_info("listener %s on %s: served by worker 0 alone (libmilter)", lc->name, lc->address);
        return 0;
    }
    if (!pc_parse_hostport(lc->address, host, sizeof(host), port, sizeof(port)) ||
        getaddrinfo(host, port, &hints, &res) != 0) {
        pc_err("listener %s: cannot resolve %s", lc->name, lc->address);
        return -1;
    }
    int shared = pc_listen_fd_take(res->ai_addr, res->ai_addrlen);
    for (unsigned i = 0; i < m->n; i++) {
        int fd = shared >= 0 ? shared : reuseport_socket(res);
        if (fd < 0) {
            pc_err("listener %s: cannot listen on %s: %s", lc->name, lc->address, strerror(errno));
            freeaddrinfo(res);
            return -1;
        }
        m->fds[i * m->nl + k] = fd;
    }
    freeaddrinfo(res);
    pc_info("listener %s on %s: %s", lc->name, lc->address,
            shared >= 0 ? "socket from systemd, shared by every worker"
                        : "one SO_REUSEPORT socket per worker");
    return 0;
}

/* bind_all - every listener of the starting configuration */
static int bind_all(struct pc_master *m)
{
    const struct pc_conf *c = m->conf;

    m->nl = c->nlisteners;
    m->names = calloc(m->nl ? m->nl : 1, sizeof(*m->names));
    m->fds = calloc((size_t)m->n * (m->nl ? m->nl : 1), sizeof(*m->fds));
    if (m->names == NULL || m->fds == NULL)
        pc_fatal("out of memory");
    pc_listen_fds_init();
    for (size_t k = 0; k < m->nl; k++) {
        m->names[k] = strdup(c->listeners[k].name);
        if (m->names[k] == NULL)
            pc_fatal("out of memory");
        if (bind_one(m, k, &c->listeners[k]) < 0)
            return -1;
    }
    pc_listen_fds_close_unused();
    return 0;
}

/* child_fds - in a worker: close the sockets that belong to the other workers */
static void child_fds(const struct pc_master *m, unsigned me)
{
    for (unsigned i = 0; i < m->n; i++)
        for (size_t k = 0; i != me && k < m->nl; k++)
            if (m->fds[i * m->nl + k] != m->fds[me * m->nl + k])
                close(m->fds[i * m->nl + k]);
}

/* run_child - in the forked worker: serve, then exit (never returns) */
static void run_child(struct pc_master *m, unsigned i, pid_t parent)
{
    struct pc_worker_env env = {.index = i,
                                .count = m->n,
                                .nfds = m->nl,
                                .names = (const char *const *)m->names,
                                .fds = m->fds + (size_t)i * m->nl,
                                .ready = m->ready + i,
                                .beat = m->beat + i,
                                .session_ids = m->session_ids};

    /* A worker must not outlive its parent (nobody would replace or stop it). */
    if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || getppid() != parent)
        _exit(EX_OSERR);
    setpgid(0, 0);
    unsetenv("NOTIFY_SOCKET"); /* only the parent speaks to systemd (NotifyAccess=main) */
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    child_fds(m, i);
    pc_metrics_attach(m->metrics, i); /* a replacement counts on where the dead one stopped */
    exit(pc_server_run_worker(m->conf, &env));
}

/* spawn - start worker i (signals stay blocked in it until its loop takes them) */
static void spawn(struct pc_master *m, unsigned i)
{
    pid_t parent = getpid();
    pid_t pid = fork();

    if (pid < 0) {
        pc_err("worker %u: fork: %s; retrying", i, strerror(errno));
        m->w[i].due_ms = now_ms() + 1000;
        return;
    }
    if (pid == 0) {
        pc_conf_ref(m->conf);
        run_child(m, i, parent);
    }
    m->ready[i] = 0;
    __atomic_store_n(&m->beat[i], 0LL, __ATOMIC_RELAXED);
    m->w[i].pid = pid;
    m->w[i].due_ms = 0;
    m->w[i].killed = false;
    clock_gettime(CLOCK_MONOTONIC, &m->w[i].up);
    pc_info("worker %u started, pid %ld", i, (long)pid);
}

/* tell - pass a signal on to every running worker */
static void tell(const struct pc_master *m, int sig)
{
    for (unsigned i = 0; i < m->n; i++)
        if (m->w[i].pid > 0)
            kill(m->w[i].pid, sig);
}

/* running - how many workers are alive */
static unsigned running(const struct pc_master *m)
{
    unsigned n = 0;

    for (unsigned i = 0; i < m->n; i++)
        n += m->w[i].pid > 0;
    return n;
}

/* exited - worker i is gone: schedule its replacement, or fail the start */
static void exited(struct pc_master *m, unsigned i, int status)
{
    struct pc_wslot *w = &m->w[i];
    struct timespec now;
    char how[64];

    clock_gettime(CLOCK_MONOTONIC, &now);
    if (WIFSIGNALED(status))
        snprintf(how, sizeof(how), "killed by signal %d", WTERMSIG(status));
    else
        snprintf(how, sizeof(how), "exit status %d", WEXITSTATUS(status));
    pid_t pid = w->pid;
    w->pid = 0;
    /* Its counters stay in its slot for its replacement; its connections and spool are gone. */
    pc_metrics_slot_gone(m->metrics, i);
    if (m->stopping) {
        pc_info("worker %u (pid %ld) stopped: %s", i, (long)pid, how);
        return;
    }
    if (!m->started) {
        pc_err("worker %u (pid %ld) failed to start: %s", i, (long)pid, how);
        m->fail_rc = WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status) : 1;
        return;
    }
    if (now.tv_sec - w->up.tv_sec >= PC_STABLE_SECONDS)
        w->delay_ms = 0;
    else
        w->delay_ms = w->delay_ms ? 2 * w->delay_ms : 1000;
    if (w->delay_ms > PC_RESTART_MAX_MS)
        w->delay_ms = PC_RESTART_MAX_MS;
    pc_warn("worker %u (pid %ld) died: %s; replacing it in %ld ms", i, (long)pid, how, w->delay_ms);
    w->due_ms = now_ms() + w->delay_ms;
}

/* reap - collect every worker that ended */
static void reap(struct pc_master *m)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
        for (unsigned i = 0; i < m->n; i++)
            if (m->w[i].pid == pid)
                exited(m, i, status);
}

/* reload - SIGHUP: workers are told only about a configuration that loads */
static void reload(struct pc_master *m)
{
    struct pc_err err = {{0}};
    struct timespec ts;
    const char *path = strcmp(m->conf->path, "(embedded defaults)") ? m->conf->path : NULL;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    pc_notify("RELOADING=1\nMONOTONIC_USEC=%llu",
              (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
    struct pc_conf *next = pc_conf_load(path, &err);
    if (next == NULL) {
        pc_err("reload failed, keeping the running configuration (workers not told): %s", err.msg);
        pc_metric_add(PC_M_RELOADS, "failed", NULL, 1); /* no worker counts this one */
    } else {
        pc_conf_unref(m->conf);
        m->conf = next;
        pc_log_init(next->syslog_name, next->log_target, LOG_MAIL);
        pc_log_set_format(next->log_json ? PC_LOG_JSON : PC_LOG_TEXT);
        if (next->workers != m->n)
            pc_warn("reload: workers = %u needs a restart (running %u)", next->workers, m->n);
        pc_info("reload: configuration valid, telling %u workers", running(m));
        tell(m, SIGHUP);
    }
    pc_notify("READY=1\nSTATUS=serving: %u of %u workers running", running(m), m->n);
}

/* close_listeners - the parent lets go of every listening socket: once a draining worker has
 * exited, its socket must leave the SO_REUSEPORT group, or the kernel would go on queueing
 * new clients on it, where nobody answers (the workers still draining answer them 421) */
static void close_listeners(struct pc_master *m)
{
    for (size_t j = 0; j < (size_t)m->n * m->nl; j++) {
        if (m->fds[j] < 0)
            continue;
        close(m->fds[j]);
        for (size_t k = j + 1; k < (size_t)m->n * m->nl; k++)
            if (m->fds[k] == m->fds[j])
                m->fds[k] = -1; /* a socket from systemd: one descriptor for every worker */
        m->fds[j] = -1;
    }
}

/* on_signal - one signal taken from the pending set */
static void on_signal(struct pc_master *m, int sig)
{
    switch (sig) {
    case SIGHUP:
        reload(m);
        break;
    case SIGUSR1:
        pc_log_reopen();
        pc_info("logs reopened");
        tell(m, SIGUSR1);
        break;
    case SIGTERM:
    case SIGINT:
        /* A second stop signal passes on too: the workers then close at once. */
        if (!m->stopping)
            pc_info("signal %d: stopping %u workers", sig, running(m));
        m->stopping = true;
        close_listeners(m);
        pc_notify("STOPPING=1\nSTATUS=stopping: %u workers draining", running(m));
        tell(m, sig);
        break;
    default:
        break;
    }
}

/* check_beats - once a second: SIGKILL every worker whose loop is silent past worker_timeout
 * (reap and exited then replace it); note whether one is, for the watchdog ping */
static void check_beats(struct pc_master *m, long long now)
{
    if (now < m->next_check)
        return;
    m->next_check = now + PC_CHECK_MS;
    m->stuck = false;
    for (unsigned i = 0; i < m->n; i++) {
        long long beat = __atomic_load_n(&m->beat[i], __ATOMIC_RELAXED);
        /* 0: not yet in its loop (its start is bounded by its own timeouts) or leaving it. */
        if (m->w[i].pid <= 0 || !m->ready[i] || beat == 0 || now - beat < m->conf->worker_timeout)
            continue;
        m->stuck = true;
        if (m->w[i].killed)
            continue; /* told once; if it does not go, the withheld ping lets systemd act */
        pc_err("worker %u pid %ld stuck for %llds: killed", i, (long)m->w[i].pid,
               (now - beat) / 1000);
        kill(m->w[i].pid, SIGKILL);
        m->w[i].killed = true;
    }
}

/* housekeeping - restarts that are due, READY=1 once all started, watchdog and status */
static void housekeeping(struct pc_master *m, long long *next_status)
{
    long long now = now_ms();
    unsigned ready = 0;

    for (unsigned i = 0; i < m->n; i++) {
        if (!m->stopping && m->w[i].pid == 0 && m->w[i].due_ms && now >= m->w[i].due_ms)
            spawn(m, i);
        ready += m->w[i].pid > 0 && m->ready[i];
    }
    check_beats(m, now);
    if (!m->started && ready == m->n) {
        m->started = true;
        pc_info("portcullis started: %s, %u workers", m->conf->path, m->n);
        pc_notify("READY=1\nSTATUS=serving: %u workers", m->n);
        *next_status = now;
    }
    if (m->started && now >= *next_status) {
        uint64_t wd = pc_watchdog_usec() / 2000, every = wd && wd < 5000 ? wd : 5000;
        pc_notify("%sSTATUS=%s: %u of %u workers running%s", wd && !m->stuck ? "WATCHDOG=1\n" : "",
                  m->stopping ? "stopping" : "serving", running(m), m->n,
                  m->stuck ? ", one stuck" : "");
        *next_status = now + (long long)every;
    }
}

/* supervise - the parent's loop: signals, children, timers */
static int supervise(struct pc_master *m, const sigset_t *set)
{
    long long next_status = 0;
    const struct timespec tick = {0, PC_TICK_MS * 1000000L};

    for (;;) {
        int sig = sigtimedwait(set, NULL, &tick);
        if (sig > 0 && sig != SIGCHLD)
            on_signal(m, sig);
        reap(m);
        if (m->fail_rc) {
            m->stopping = true;
            tell(m, SIGTERM);
            while (running(m) && (sig = sigtimedwait(set, NULL, &tick)) >= -1)
                reap(m);
            return m->fail_rc;
        }
        if (m->stopping && running(m) == 0)
            return 0;
        housekeeping(m, &next_status);
    }
}

/* pc_master_run - bind, drop privileges, fork conf->workers workers, supervise them */
int pc_master_run(struct pc_conf *conf)
{
    struct pc_master *m = calloc(1, sizeof(*m));
    struct pc_err err = {{0}};
    sigset_t set;

    if (m == NULL)
        pc_fatal("out of memory");
    pc_master_running = m;
    m->conf = conf;
    m->n = conf->workers;
    pc_log_init(conf->syslog_name, conf->log_target, LOG_MAIL);
    pc_log_set_format(conf->log_json ? PC_LOG_JSON : PC_LOG_TEXT);
    signal(SIGPIPE, SIG_IGN);
    m->w = calloc(m->n, sizeof(*m->w));
    /* One shared page of "ready" flags: the parent's READY=1 waits for every worker. */
    m->ready =
        mmap(NULL, m->n * sizeof(int), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    /* Their heartbeats: read by the parent without a system call (check_beats). */
    m->beat = mmap(NULL, m->n * sizeof(long long), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    /* Session ids: one counter for the instance, so that S1, S2, ... name one session each in
     * the logs of every worker (an atomic add per session, no system call). */
    m->session_ids = mmap(NULL, sizeof(*m->session_ids), PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m->w == NULL || m->ready == MAP_FAILED || m->beat == MAP_FAILED ||
        m->session_ids == MAP_FAILED)
        pc_fatal("out of memory");
    /* Metrics: a slot per worker, which outlives it (counters never go back while we live),
     * and one of ours for the start time and the reloads no worker saw. */
    m->metrics = pc_metrics_region_new(m->n + 1, true);
    pc_metrics_attach(m->metrics, m->n);
    {
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        pc_metric_set(PC_M_START_TIME, NULL, NULL, (double)now.tv_sec);
    }
    if (bind_all(m) < 0)
        return EX_UNAVAILABLE;
    if (pc_privs_drop(conf->user, conf->group, conf->run_as_root, &err) < 0) {
        pc_err("%s", err.msg);
        return EX_CONFIG;
    }
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    for (unsigned i = 0; i < m->n; i++)
        spawn(m, i);
    int rc = supervise(m, &set);
    pc_info("portcullis stopped");
    return rc;
}
