/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	registry 3 - the filters this build knows, by name
 * DESCRIPTION
 *	A listener's "filters" list names entries of this table. Adding a
 *	filter is one extern line and one table line; nothing registers
 *	itself at load time.
 */
#include <string.h>

#include "filters/filter.h"

extern const struct pc_filter_ops pc_filter_relay;
extern const struct pc_filter_ops pc_filter_rdns;
extern const struct pc_filter_ops pc_filter_dnsbl;
extern const struct pc_filter_ops pc_filter_spf;
extern const struct pc_filter_ops pc_filter_ratelimit;
extern const struct pc_filter_ops pc_filter_dkim;
extern const struct pc_filter_ops pc_filter_dmarc;
extern const struct pc_filter_ops pc_filter_rules;
extern const struct pc_filter_ops pc_filter_authres;
extern const struct pc_filter_ops pc_filter_greylist;

const struct pc_filter_ops *const pc_filter_registry[] = {
    &pc_filter_relay,
    &pc_filter_rdns,
    &pc_filter_dnsbl,
    &pc_filter_spf,
    &pc_filter_ratelimit,
    &pc_filter_dkim,
    &pc_filter_dmarc,
    &pc_filter_rules,
    &pc_filter_authres,
    &pc_filter_greylist,
    NULL,
};

/* pc_filter_find - registry entry by name */
const struct pc_filter_ops *pc_filter_find(const char *name)
{
    for (size_t i = 0; pc_filter_registry[i]; i++)
        if (strcmp(pc_filter_registry[i]->name, name) == 0)
            return pc_filter_registry[i];
    return NULL;
}
