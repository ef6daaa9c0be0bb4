/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	service 3 - running as a system service: privileges, systemd
 * DESCRIPTION
 *	Socket activation: systemd passes listening sockets from fd 3 on
 *	(LISTEN_FDS, LISTEN_PID). A listener whose configured address is the
 *	address a passed socket is bound to uses that socket instead of
 *	binding its own, so a .socket unit can hold port 25 across restarts.
 *
 *	Privileges: portcullis binds, opens its logs and reads every key as
 *	root, then takes the configured user's groups, group and user, all
 *	three ids (real, effective, saved) at once so that root cannot be
 *	regained; a final setuid(0) that succeeds is fatal. Staying root is
 *	an explicit choice (run_as_root), because GMime, libopendkim, libspf2
 *	and libopendmarc parse hostile input inside this process.
 *
 *	Readiness: sd_notify() lines. The caller decides when: READY=1 once
 *	every listener is bound, RELOADING=1 and READY=1 around a reload,
 *	STOPPING=1 at the first stop signal, STATUS= with the counts, and
 *	WATCHDOG=1 from a loop timer (a stuck loop stops sending them).
 * SEE ALSO
 *	sd_notify(3), sd_listen_fds(3), systemd.service(5) Type=notify
 */
#include "gateway/service.h"

#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "filters/filter.h"
#include "lib/log.h"

#define PC_MAX_LISTEN_FDS 64

static int listen_fds[PC_MAX_LISTEN_FDS];
static bool listen_taken[PC_MAX_LISTEN_FDS];
static int nlisten_fds;

/* pc_listen_fds_init - note the sockets systemd passed us (LISTEN_FDS); 0 or their count */
int pc_listen_fds_init(void)
{
    /* Unset the variables: a child (none today) must not think they are its own. */
    int n = sd_listen_fds(1);

    if (n <= 0)
        return 0;
    if (n > PC_MAX_LISTEN_FDS) {
        pc_warn("socket activation: %d sockets passed, using the first %d", n, PC_MAX_LISTEN_FDS);
        n = PC_MAX_LISTEN_FDS;
    }
    for (int i = 0; i < n; i++) {
        listen_fds[i] = SD_LISTEN_FDS_START + i;
        listen_taken[i] = false;
    }
    nlisten_fds = n;
    return n;
}

/* same_address - two socket addresses name the same IP and port */
static bool same_address(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return false;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return false;
}

/* pc_listen_fd_take - a passed listening TCP socket bound to this address, or -1 */
int pc_listen_fd_take(const struct sockaddr *sa, socklen_t len)
{
    for (int i = 0; i < nlisten_fds; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);

        if (listen_taken[i] || sd_is_socket(listen_fds[i], sa->sa_family, SOCK_STREAM, 1) <= 0 ||
            getsockname(listen_fds[i], (struct sockaddr *)&ss, &sl) < 0)
            continue;
        if (same_address((struct sockaddr *)&ss, sa)) {
            listen_taken[i] = true;
            return listen_fds[i];
        }
    }
    (void)len;
    return -1;
}

/* pc_listen_fds_close_unused - close (and log) passed sockets no listener claimed */
void pc_listen_fds_close_unused(void)
{
    for (int i = 0; i < nlisten_fds; i++)
        if (!listen_taken[i]) {
            pc_warn("socket activation: fd %d matches no listener address; closed", listen_fds[i]);
            close(listen_fds[i]);
            listen_taken[i] = true;
        }
}

/* root_allowed - run_as_root in the configuration or PORTCULLIS_RUN_AS_ROOT=1 */
static bool root_allowed(bool run_as_root)
{
    const char *env = getenv("PORTCULLIS_RUN_AS_ROOT");

    return run_as_root || (env && strcmp(env, "1") == 0);
}

/* pc_privs_drop - become user:group (names) when root; refuse root unless allowed */
int pc_privs_drop(const char *user, const char *group, bool run_as_root, struct pc_err *err)
{
    if (geteuid() != 0) {
        if (user && *user) {
            struct passwd *pw = getpwnam(user);
            if (pw == NULL || pw->pw_uid != geteuid())
                pc_info("not started as root: user = %s ignored, running as uid %ld", user,
                        (long)geteuid());
        }
        return 0;
    }
    if (user == NULL || *user == 0) {
        if (root_allowed(run_as_root)) {
            pc_warn("running as root (run_as_root): the filters parse hostile input as root");
            return 0;
        }
        pc_err_set(err, NULL,
                   "refusing to run as root: set user (e.g. user = \"portcullis\") or "
                   "run_as_root = yes");
        return -1;
    }
    errno = 0;
    struct passwd *pw = getpwnam(user);
    if (pw == NULL) {
        pc_err_set(err, NULL, "user \"%s\": %s", user, errno ? strerror(errno) : "no such user");
        return -1;
    }
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    if (group && *group) {
        errno = 0;
        struct group *gr = getgrnam(group);
        if (gr == NULL) {
            pc_err_set(err, NULL, "group \"%s\": %s", group,
                       errno ? strerror(errno) : "no such group");
            return -1;
        }
        gid = gr->gr_gid;
    }
    if (uid == 0 && !root_allowed(run_as_root)) {
        pc_err_set(err, NULL, "user \"%s\" is root: set run_as_root = yes to mean it", user);
        return -1;
    }
    /* Groups first: once the uid is gone, so is the right to change them. */
    if (initgroups(user, gid) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0) {
        pc_err_set(err, NULL, "cannot become %s (uid %ld, gid %ld): %s", user, (long)uid, (long)gid,
                   strerror(errno));
        return -1;
    }
    if (uid != 0 && setuid(0) == 0)
        pc_fatal("privilege drop to %s failed: root could be regained", user);
    pc_info("running as %s (uid %ld, gid %ld)", user, (long)uid, (long)gid);
    return 0;
}

/* pc_notify - a state line to the service manager (no-op without NOTIFY_SOCKET) */
void pc_notify(const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (getenv("NOTIFY_SOCKET") == NULL)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    int rc = sd_notify(0, line);
    if (rc < 0)
        pc_debug("sd_notify: %s", strerror(-rc));
}

/* pc_watchdog_usec - the watchdog interval systemd expects (WATCHDOG_USEC), or 0 */
uint64_t pc_watchdog_usec(void)
{
    uint64_t usec = 0;

    return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}
