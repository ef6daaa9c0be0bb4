/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	maildir 3 - the embedded Maildir backend's delivery
 * DESCRIPTION
 *	Writes on the loop thread: the Maildir backend is the embedded
 *	default for trying portcullis out, not the production path. It
 *	fsyncs before the rename, so that its 250 means the message is on
 *	disk (RFC 5321 6.1: a server that accepted a message is responsible
 *	for it).
 * SEE ALSO
 *	https://cr.yp.to/proto/maildir.html
 */
#include "gateway/maildir.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "core/msg.h"
#include "lib/log.h"

/* maildir_dirs - tmp, new and cur exist (the first delivery makes them) */
static void maildir_dirs(const char *dir)
{
    mkdir(dir, 0700);
    for (const char *sub = "tmp\0new\0cur\0"; *sub; sub += 4) {
        char d[PATH_MAX];
        snprintf(d, sizeof(d), "%s/%s", dir, sub);
        mkdir(d, 0700);
    }
}

/* maildir_write - the message with LF line ends (the local convention) into fd; 0 or -1 */
static int maildir_write(int fd, const struct pc_msg *msg, const char *received)
{
    struct pc_msg_cursor c;
    char buf[65536];
    ssize_t n;

    pc_msg_cursor_init(&c);
    while ((n = pc_msg_read(msg, &c, received, buf, sizeof(buf))) > 0) {
        size_t o = 0;
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] != '\r')
                buf[o++] = buf[i];
        if (write(fd, buf, o) != (ssize_t)o)
            return -1;
    }
    return n < 0 ? -1 : 0;
}

/* pc_maildir_deliver - tmp, fsync, rename to new */
bool pc_maildir_deliver(const char *sid, const char *dir, const char *hostname,
                        const struct pc_msg *msg, const char *received)
{
    static unsigned seq;
    char tmp[PATH_MAX], dst[PATH_MAX], name[256];
    struct timeval tv;

    gettimeofday(&tv, NULL);
    snprintf(name, sizeof(name), "%ld.M%ldP%ldQ%u.%s", (long)tv.tv_sec, (long)tv.tv_usec,
             (long)getpid(), ++seq, hostname);
    maildir_dirs(dir);
    snprintf(tmp, sizeof(tmp), "%s/tmp/%s", dir, name);
    snprintf(dst, sizeof(dst), "%s/new/%s", dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        goto fail;
    if (maildir_write(fd, msg, received) < 0 || fsync(fd) < 0) {
        pc_err("%s: maildir %s: %m", sid, dir);
        close(fd);
        unlink(tmp);
        return false;
    }
    if (close(fd) < 0 || rename(tmp, dst) < 0)
        goto fail;
    return true;
fail:
    pc_err("%s: maildir %s: %m", sid, dir);
    unlink(tmp);
    return false;
}
