/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	maildir 3h - the embedded Maildir backend's delivery
 * DESCRIPTION
 *	Writes one message into a Maildir: a unique name in tmp/, the bytes
 *	with LF line ends, fsync, then rename into new/ (so a reader never
 *	sees half a message). The backend kind "maildir" (gateway/backend.c)
 *	answers MAIL and RCPT locally and calls this at the end of data.
 * SEE ALSO
 *	https://cr.yp.to/proto/maildir.html
 */
#ifndef PC_MAILDIR_H
#define PC_MAILDIR_H

#include <stdbool.h>

struct pc_msg;

/* pc_maildir_deliver - the message (after this Received header) into dir/new; false (logged
 * with sid) when it could not be written durably */
bool pc_maildir_deliver(const char *sid, const char *dir, const char *hostname,
                        const struct pc_msg *msg, const char *received);

#endif
