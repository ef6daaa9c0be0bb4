/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	fuzz_backend 1 - arbitrary backend reply streams through the real backend client
 * DESCRIPTION
 *	A whole session runs through the real SMTP state machine: a fixed client
 *	(EHLO, MAIL, two RCPTs, DATA, a message, QUIT) on a socketpair, and a
 *	backend on a Unix socket that answers with the fuzz input. The input is
 *	cut into chunks at each 0xff byte; a chunk is written (in one write) only
 *	when the gateway waits for the backend, and the connection is closed when
 *	the chunks run out. Each new backend connection starts over at the
 *	chunk that follows.
 *
 *	Invariant (issue 13, the 250 promise): the client hears 2xx for its
 *	message only when the last chunk before that reply was written after the
 *	backend had received the complete message (DATA, then CRLF.CRLF). Also:
 *	no RCPT or DATA on a backend connection that did not take MAIL first,
 *	and no session or backend connection outlives its input.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "filters/filter.h"
#include "gateway/conf.h"
#include "gateway/smtp_server.h"
#include "lib/log.h"

static struct event_base *base;
static struct pc_services svc;
static struct pc_conf *conf;
static int lfd = -1;
static char sock_path[108];

/* The backend side of one connection. */
struct peer {
    int fd;
    char seen[8192]; /* what the gateway sent, bounded */
    size_t nseen;
    int dot_seen; /* DATA, then the complete message */
    int mail_seen;
};

/* closed - the session is gone */
static void closed(void *arg, const struct pc_ip *ip)
{
    (void)ip;
    *(int *)arg = 1;
}

/* cleanup - remove the socket at exit */
static void cleanup(void)
{
    unlink(sock_path);
}

/* setup - one loop, one configuration and one listening socket for every input */
static void setup(void)
{
    char path[] = "/tmp/pc-fuzz-backend-XXXXXX";
    int fd = mkstemp(path);
    char cfg[1024];
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    struct pc_err err = {{0}};

    snprintf(sock_path, sizeof(sock_path), "/tmp/pc-fuzz-backend-%ld.sock", (long)getpid());
    unlink(sock_path);
    snprintf(cfg, sizeof(cfg),
             "hostname = \"fuzz.example\"\n"
             "listener \"in\" { address = \"127.0.0.1:1\" backend = \"b\" }\n"
             "backend \"b\" { address = { \"unix:%s\" } identity = \"xclient\" }\n"
             "relay { domains = { \"example.com\" } }\n"
             "timeouts { command = 60s data = 60s backend_connect = 60s backend_greeting = 60s "
             "backend_command = 60s backend_data_init = 60s backend_data_done = 60s }\n",
             sock_path);
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
    if (getenv("PC_FUZZ_VERBOSE") == NULL)
        pc_log_set_verbose(-2); /* the backend warns about every hostile stream */
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    pc_strlcpy(un.sun_path, sock_path, sizeof(un.sun_path));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&un, sizeof(un)) < 0 || listen(lfd, 16) < 0)
        abort();
    atexit(cleanup);
}

/* peer_read - what the gateway sent to the backend; track MAIL and the end of data */
static int peer_read(struct peer *p)
{
    char buf[4096];
    ssize_t n;
    int got = 0;

    while (p->fd >= 0 && (n = read(p->fd, buf, sizeof(buf))) > 0) {
        got = 1;
        size_t k = (size_t)n;
        if (k > sizeof(p->seen) - 1 - p->nseen)
            k = sizeof(p->seen) - 1 - p->nseen;
        memcpy(p->seen + p->nseen, buf, k);
        p->nseen += k;
        p->seen[p->nseen] = 0;
        char *mail = strstr(p->seen, "\r\nMAIL FROM:");
        if (strncmp(p->seen, "MAIL FROM:", 10) == 0 || mail)
            p->mail_seen = 1;
        /* Commands after EHLO/XCLIENT: RCPT or DATA must come after MAIL on this connection. */
        if ((strstr(p->seen, "\r\nRCPT TO:") || strstr(p->seen, "\r\nDATA\r\n")) && !p->mail_seen)
            abort();
        char *data = strstr(p->seen, "\r\nDATA\r\n");
        if (data && strstr(data + 6, "\r\n.\r\n"))
            p->dot_seen = 1;
    }
    return got;
}

/* client_reply - a complete reply from the session in buf (code, or 0 while incomplete) */
static int client_reply(char *buf, size_t *len)
{
    /* The last line of a reply has a space (or nothing) after the code. */
    size_t start = 0;
    for (size_t i = 0; i + 1 < *len; i++) {
        if (buf[i] != '\r' || buf[i + 1] != '\n')
            continue;
        if (i - start < 3 || buf[start] < '2' || buf[start] > '5')
            abort(); /* every reply line starts with three digits */
        if (i - start == 3 || buf[start + 3] == ' ') {
            int code = atoi(buf + start);
            memmove(buf, buf + i + 2, *len - (i + 2));
            *len -= i + 2;
            return code;
        }
        start = i + 2;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const script[] = {"EHLO client.example\r\n",
                                         "MAIL FROM:<a@b.example>\r\n",
                                         "RCPT TO:<x@example.com>\r\n",
                                         "RCPT TO:<y@example.com>\r\n",
                                         "DATA\r\n",
                                         "Subject: t\r\n\r\nbody\r\n.\r\n",
                                         "QUIT\r\n"};
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(4242)};
    struct peer peers[8];
    size_t npeers = 0, off = 0, step = 0;
    int sv[2], done = 0, idle = 0, last_after_dot = 0;
    char cbuf[65536];
    size_t clen = 0;
    bool greeted = false, waiting = false;

    if (conf == NULL)
        setup();
    if (size > 16384)
        return 0;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
        return 0;
    inet_pton(AF_INET, "192.0.2.7", &sin.sin_addr);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    pc_smtp_accept(&svc, conf, &conf->listeners[0], sv[0], (struct sockaddr *)&sin, sizeof(sin),
                   closed, &done, NULL);
    for (int iter = 0; iter < 20000 && idle < 50; iter++) {
        int progress = 0;
        event_base_loop(base, EVLOOP_NONBLOCK);
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd >= 0) {
            if (npeers == sizeof(peers) / sizeof(peers[0])) {
                close(fd);
            } else {
                memset(&peers[npeers], 0, sizeof(peers[0]));
                peers[npeers++].fd = fd;
            }
            progress = 1;
        }
        for (size_t i = 0; i < npeers; i++)
            progress |= peer_read(&peers[i]);
        ssize_t n = read(sv[1], cbuf + clen, sizeof(cbuf) - clen);
        if (n > 0) {
            clen += (size_t)n;
            progress = 1;
        }
        int code;
        while (!done && (code = client_reply(cbuf, &clen)) != 0) {
            progress = 1;
            if (!greeted) {
                greeted = true;
            } else if (step == 6) {
                /* The reply to the message: 2xx only for what the backend took whole. */
                if (code / 100 == 2 && !last_after_dot)
                    abort();
            } else if (step == 5 && code != 354) {
                step++; /* no content without 354 */
            }
            waiting = false;
            if (step < sizeof(script) / sizeof(script[0])) {
                const char *line = script[step++];
                if (write(sv[1], line, strlen(line)) < 0)
                    break;
                waiting = true;
            }
        }
        if (done)
            break;
        if (!progress && waiting) {
            /* The session waits for the backend: the next chunk, or hang up. */
            struct peer *p = npeers ? &peers[npeers - 1] : NULL;
            if (p && p->fd >= 0 && off < size) {
                const uint8_t *end = memchr(data + off, 0xff, size - off);
                size_t len = end ? (size_t)(end - (data + off)) : size - off;
                last_after_dot = p->dot_seen;
                if (len && write(p->fd, data + off, len) < 0) {
                    close(p->fd);
                    p->fd = -1;
                }
                off += len + (end != NULL);
                progress = 1;
            } else if (p && p->fd >= 0) {
                close(p->fd);
                p->fd = -1;
                progress = 1;
            }
        }
        idle = progress ? 0 : idle + 1;
    }
    /* The end: the client hangs up, the backends too; every object must go. */
    shutdown(sv[1], SHUT_WR);
    for (size_t i = 0; i < npeers; i++)
        if (peers[i].fd >= 0) {
            close(peers[i].fd);
            peers[i].fd = -1;
        }
    for (int i = 0; i < 2000 && !done; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        char junk[4096];
        while (read(sv[1], junk, sizeof(junk)) > 0)
            ;
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (fd >= 0)
            close(fd);
    }
    for (int i = 0; i < 20; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
    if (!done)
        abort();
    close(sv[1]);
    return 0;
}
