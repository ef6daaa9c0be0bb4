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

#endif
