/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	err 3h - configuration errors with their file and line
 * DESCRIPTION
 *	Every layer that reads configuration (filters, rate-limit stores, the
 *	resolver, the gateway) reports through struct pc_err, so it lives in
 *	the core on its own rather than in the filter interface. The functions
 *	are implemented by the configuration loader (gateway/conf.c), which
 *	knows the file being read.
 */
#ifndef PC_ERR_H
#define PC_ERR_H

#include <confuse.h>
#include <stddef.h>

/* A configuration error: "file:line: message". */
struct pc_err {
    char msg[4096]; /* every error of a configuration, one per line (portcullis -t) */
};

void pc_err_set(struct pc_err *, cfg_t *where, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* pc_conf_path - a file named in the configuration (rule file, list, key, certificate): a
 * relative path resolves against the directory of the file that names it, so that a
 * configuration reads the same whatever the working directory. Returns path itself when it
 * needs no change, else buf; NULL when buf is too small. */
const char *pc_conf_path(cfg_t *where, const char *path, char *buf, size_t size);

#endif
