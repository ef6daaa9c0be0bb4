/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	services 3h - process-wide services shared by sessions and filters
 * DESCRIPTION
 *	The event loop, the worker pool (core/worker.h) and the one resolver
 *	(core/dns.h) are owned by main() and lent to every session and filter.
 *	They sit below the filters: a filter uses them, never the other way.
 */
#ifndef PC_SERVICES_H
#define PC_SERVICES_H

struct event_base;
struct pc_workers;
struct pc_dns;

/* Process-wide services, owned by main(), shared by every filter. */
struct pc_services {
    struct event_base *base;
    struct pc_workers *workers; /* blocking work off the loop: core/worker.h */
    struct pc_dns *dns;         /* the one resolver: core/dns.h (NULL until configured) */
    const char *hostname;       /* our name: Received, Authentication-Results */
};

#endif
