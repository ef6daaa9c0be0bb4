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

#endif
