/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	param 3h - one configuration parameter as a table row
 * DESCRIPTION
 *	Every parameter of portcullis.conf(5) is a row: section, name, type,
 *	default, bounds, an optional validator and a one-line doc. The core's
 *	rows are in gateway/conf.c (pc_params); each filter declares its own
 *	section's rows in its ops (core/filter.h, .params), so that a filter
 *	lives in filters/ while the one loader in gateway/conf.c generates
 *	the libconfuse options, the bounds check, -p/-n and the docs check
 *	from all of them alike.
 *
 *	A row of type PT_SECTION is a repeating titled section inside its
 *	section (ratelimit's limit "name" { }); its own rows carry the
 *	section "PARENT.NAME" ("ratelimit.limit").
 */
#ifndef PC_PARAM_H
#define PC_PARAM_H

#include <confuse.h>

/* The type of a parameter: how it is parsed, checked and printed. */
enum pc_ptype { PT_STR, PT_INT, PT_BOOL, PT_LIST, PT_DURATION, PT_SECTION };

struct pc_param_row {
    const char *section; /* "" for the top level; "ratelimit.limit" inside a section */
    const char *name;    /* NULL ends a filter's table */
    enum pc_ptype type;
    const char *def; /* as libconfuse would read it; NULL: unset unless configured */
    long min, max;   /* PT_INT: the value; PT_DURATION: milliseconds (both always bounded) */
    int (*check)(cfg_t *, cfg_opt_t *); /* more than the type and bounds, or NULL */
    const char *doc;
};

#endif
