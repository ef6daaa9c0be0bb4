/*
 * NAME
 *	dns 3h - the one asynchronous resolver (libunbound on the event loop)
 * DESCRIPTION
 *	Every DNS-based filter (rdns, dnsbl, spf, dkim, dmarc) asks through
 *	this interface. Answers are three-valued: found, not found (NXDOMAIN
 *	or no data), try later (timeout, SERVFAIL, network trouble). The
 *	callback runs on the loop thread, never from inside pc_dns_lookup().
 *	pc_dns_cancel() guarantees that the callback will not run.
 *
 *	Interface fixed by the proxy core; implemented by the DNS issue.
 */
#ifndef PC_DNS_H
#define PC_DNS_H

#include <stdbool.h>
#include <stddef.h>

struct event_base;
struct pc_err;
struct pc_dns;
struct pc_dns_query;

enum pc_dns_status { PC_DNS_FOUND, PC_DNS_NOTFOUND, PC_DNS_TRYLATER };

struct pc_dns_answer {
    int rrtype;
    size_t n;               /* records */
    const char *const *rr;  /* raw RDATA of each record */
    const size_t *rr_len;
    const char *canon;      /* canonical name, if a CNAME was followed */
    bool nxdomain;          /* PC_DNS_NOTFOUND: NXDOMAIN (true) or NODATA (false) */
};

typedef void pc_dns_cb(void *arg, enum pc_dns_status, const struct pc_dns_answer *);

struct pc_dns *pc_dns_create(struct event_base *, const char *const *nameservers, size_t n,
                             unsigned timeout_ms, struct pc_err *);
void pc_dns_free(struct pc_dns *);
struct pc_dns_query *pc_dns_lookup(struct pc_dns *, const char *name, int rrtype, pc_dns_cb *,
                                   void *arg);
void pc_dns_cancel(struct pc_dns_query *);

#endif
