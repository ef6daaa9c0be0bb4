/*
 * NAME
 *	dns_weak 3 - link-time fallbacks for gateway/dns.h
 * DESCRIPTION
 *	Weak definitions so that filters using the resolver link while the
 *	real implementation (gateway/dns.c, the DNS issue) is not yet on this
 *	branch. Any strong definition overrides them. pc_dns_lookup() here
 *	answers nothing (NULL), which callers treat as "try later".
 *	Delete this file once gateway/dns.c is merged.
 */
#include "gateway/dns.h"

#include <stddef.h>

/* pc_dns_lookup - no resolver linked: no query */
__attribute__((weak)) struct pc_dns_query *pc_dns_lookup(struct pc_dns *d, const char *name,
                                                         int rrtype, pc_dns_cb *cb, void *arg)
{
    (void)d, (void)name, (void)rrtype, (void)cb, (void)arg;
    return NULL;
}

/* pc_dns_cancel - no resolver linked: nothing to cancel */
__attribute__((weak)) void pc_dns_cancel(struct pc_dns_query *q)
{
    (void)q;
}
