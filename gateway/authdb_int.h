/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	authdb_int 3h - what every credential back end implements (private)
 * DESCRIPTION
 *	A back end embeds struct pc_authdb first and its requests embed
 *	struct pc_auth_req first; pc_authdb_start and pc_auth_cancel dispatch
 *	through the ops table.
 */
#ifndef PC_AUTHDB_INT_H
#define PC_AUTHDB_INT_H

#include "gateway/authdb.h"

struct pc_authdb_ops {
    const char *name;
    struct pc_auth_req *(*start)(struct pc_authdb *, const struct pc_auth_creds *, pc_auth_cb *,
                                 void *);
    void (*cancel)(struct pc_auth_req *);
    void (*destroy)(struct pc_authdb *);
};

struct pc_authdb {
    const struct pc_authdb_ops *ops;
};

struct pc_auth_req {
    struct pc_authdb *db;
};

/* pc_dovecot_reply - one answer line from Dovecot's auth service ("OK\t7\tuser=a",
 * "FAIL\t7\ttemp", "CONT\t7\t..."): its request id and result; cont for CONT. False for
 * anything else (the connection is then broken off). For the fuzz target too. */
bool pc_dovecot_reply(const char *line, unsigned long *id, enum pc_auth_result *res, bool *cont);

#endif
