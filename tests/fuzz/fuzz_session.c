/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_session 1 - arbitrary client bytes through the real SMTP state machine
 * DESCRIPTION
 *	A socketpair stands in for the client connection; the session runs the
 *	relay chain and delivers into a Maildir under /dev/shm. The input is
 *	sent after the greeting, then the client half-closes and the loop runs
 *	until the session is gone. Invariant checked: every reply line starts
 *	with three digits, and no session outlives its input. The listener
 *	offers AUTH without TLS, checked against a Dovecot socket that does not
 *	exist (454 at once), so that the AUTH exchange's input mode is fuzzed
 *	too.
 */
#include <arpa/inet.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/filter.h"
#include "core/session.h"
#include "gateway/conf.h"
#include "gateway/smtp_server.h"
#include "lib/log.h"

static struct event_base *base;
static struct pc_services svc;
static struct pc_conf *conf;

/* closed - the session is gone */
static void closed(void *arg, const struct pc_ip *ip)
{
    (void)ip;
    *(int *)arg = 1;
}

/* setup - one loop and one configuration for every input */
static void setup(void)
{
    char path[] = "/tmp/pc-fuzz-session-XXXXXX";
    int fd = mkstemp(path);
    const char *cfg = "hostname = \"fuzz.example\"\n"
                      "listener \"in\" { address = \"127.0.0.1:1\" backend = \"m\" auth = \"a\" "
                      "auth_plaintext = true }\n"
                      "auth \"a\" { dovecot = \"unix:/nonexistent/pc-fuzz-auth\" }\n"
                      "backend \"m\" { maildir = \"/dev/shm/pc-fuzz-maildir\" }\n"
                      "relay { domains = { \"example.com\" } }\n"
                      "limits { max_message_size = 65536 max_recipients = 5 max_errors = 50 }\n"
                      "timeouts { command = 2s data = 2s }\n";
    struct pc_err err = {{0}};

    if (fd < 0 || write(fd, cfg, strlen(cfg)) != (ssize_t)strlen(cfg))
        abort();
    close(fd);
    conf = pc_conf_load(path, &err);
    unlink(path);
    if (conf == NULL) {
        fprintf(stderr, "%s\n", err.msg);
        abort();
    }
    pc_log_init("fuzz", PC_LOG_STDERR, 0);
    base = event_base_new();
    svc.base = base;
    svc.hostname = conf->hostname;
    if (pc_conf_start(conf, &svc, &err) < 0) { /* builds the AUTH back end */
        fprintf(stderr, "%s\n", err.msg);
        abort();
    }
    if (getenv("PC_FUZZ_VERBOSE") == NULL)
        pc_log_set_verbose(-1);
}

/* drain - read what the session said; check reply syntax */
static void drain(int fd, int *greeted)
{
    char buf[65536];
    ssize_t n;

    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        if (n >= 3 && memcmp(buf, "220", 3) == 0)
            *greeted = 1;
        if (n < 4 || buf[0] < '2' || buf[0] > '5')
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2], done = 0, greeted = 0;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(4242)};

    if (conf == NULL)
        setup();
    if (size > 200000)
        return 0;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return 0;
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    pc_smtp_accept(&svc, conf, &conf->listeners[0], sv[0], (struct sockaddr *)&sin, sizeof(sin),
                   closed, &done, NULL);
    for (int i = 0; i < 100 && !greeted && !done; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        drain(sv[1], &greeted);
    }
    /* Send line by line and let the loop settle in between, as a client waits for
     * replies; otherwise every DATA would be a pipelining violation. */
    size_t off = 0;
    while (!done && off < size) {
        const uint8_t *nl = memchr(data + off, '\n', size - off);
        size_t end = nl ? (size_t)(nl - data) + 1 : size;
        while (off < end && !done) {
            ssize_t n = write(sv[1], data + off, end - off);
            if (n > 0)
                off += (size_t)n;
            event_base_loop(base, EVLOOP_NONBLOCK);
            drain(sv[1], &greeted);
        }
        for (int i = 0; i < 4 && !done; i++) {
            event_base_loop(base, EVLOOP_NONBLOCK);
            drain(sv[1], &greeted);
        }
    }
    shutdown(sv[1], SHUT_WR);
    for (int i = 0; i < 1000 && !done; i++) {
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        drain(sv[1], &greeted);
    }
    /* Let the deferred free run. */
    for (int i = 0; i < 10 && !done; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    if (!done)
        abort();
    close(sv[1]);
    return 0;
}
