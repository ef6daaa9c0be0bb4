/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	settings 3h - what the core reads from a configuration generation
 * DESCRIPTION
 *	The core (session, transaction, chain runner) needs a handful of
 *	values from the configuration and must keep the generation alive
 *	while a session uses it. It must not know the whole configuration
 *	(gateway/conf.h sits five layers up), so the loader fills this small
 *	struct inside each generation and gives it a release function; the
 *	reference count lives here, so a session holds its generation
 *	without knowing what else the generation contains.
 */
#ifndef PC_SETTINGS_H
#define PC_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>

struct pc_settings {
    int refs;                              /* sessions (and the server) holding the generation */
    void (*release)(struct pc_settings *); /* the last unref frees the generation */
    void *owner;                           /* the door's view of it (gateway: struct pc_conf) */
    bool delay_reject;                     /* the engine holds early refusals until RCPT */
    size_t max_header_size, max_headers;   /* message limits (core/msg.h) */
    size_t spool_threshold;                /* bytes in memory before the spool file */
    const char *spool_dir;
};

/* pc_settings_ref - one more user of the generation */
void pc_settings_ref(struct pc_settings *);
/* pc_settings_unref - the last user releases the generation */
void pc_settings_unref(struct pc_settings *);

#endif
