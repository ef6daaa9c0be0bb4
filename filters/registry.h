/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	registry 3h - the filters this build knows, by name
 * DESCRIPTION
 *	The table lives with the filters (filters/registry.c); the core's
 *	filter interface (core/filter.h) does not know which filters exist.
 */
#ifndef PC_REGISTRY_H
#define PC_REGISTRY_H

#include "core/filter.h"

extern const struct pc_filter_ops *const pc_filter_registry[];
/* pc_filter_find - the filter called name, or NULL */
const struct pc_filter_ops *pc_filter_find(const char *name);

/* pc_rules_filter_content_rules - how many rules of a rules filter's configuration read the
 * message (header and body stages): a door without the message (policy) never fires them */
size_t pc_rules_filter_content_rules(const void *conf);

#endif
