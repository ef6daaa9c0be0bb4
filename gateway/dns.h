/* SPDX-License-Identifier: MIT */
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

/* pc_dns_zone_file - answer only from a zone file's records: every other name is NXDOMAIN
 * ("portcullis test --dns-zone", offline runs). Call before the first lookup. */
int pc_dns_zone_file(struct pc_dns *, const char *path, struct pc_err *);

/* Helpers for the filters (additive: the declarations above are fixed). */
struct pc_ip;

#define PC_DNS_NAME_MAX 254 /* presentation form of a name, without the root dot, plus NUL */
#define PC_DNS_T_A 1
#define PC_DNS_T_NS 2
#define PC_DNS_T_CNAME 5
#define PC_DNS_T_PTR 12
#define PC_DNS_T_MX 15
#define PC_DNS_T_TXT 16
#define PC_DNS_T_AAAA 28

/* pc_dns_reverse - "4.3.2.1.in-addr.arpa" / nibbles ".ip6.arpa", or under zone (DNSBL) */
bool pc_dns_reverse(const struct pc_ip *, const char *zone, char *buf, size_t size);
/* pc_dns_rdata_ip - decode A (4 bytes) or AAAA (16 bytes) RDATA; IPv4 is stored mapped */
bool pc_dns_rdata_ip(int rrtype, const char *rd, size_t len, struct pc_ip *);
/* pc_dns_rdata_name - uncompressed wire name (PTR, CNAME, MX+2) to text without the root
 * dot; bytes outside printable ASCII, '.' and '\' inside labels come out as \DDD
 * (RFC 1035 5.1), so the text is always printable. -1 on malformed or over-long data. */
int pc_dns_rdata_name(const char *rd, size_t len, char *buf, size_t size);
/* pc_dns_rdata_txt - concatenate a TXT record's character-strings (RFC 7208 3.3); -1 on
 * malformed data or when it does not fit; bytes are copied as they are (NUL included) */
long pc_dns_rdata_txt(const char *rd, size_t len, char *buf, size_t size);
/* pc_dns_hostname_ok - LDH host name (underscore tolerated), labels 1..63, total <= 253 */
bool pc_dns_hostname_ok(const char *name);
/* pc_dns_hostname_clean - a name fit for logs, headers and the backend: lower case, one
 * trailing dot dropped, must pass pc_dns_hostname_ok, else "unknown"; returns out */
const char *pc_dns_hostname_clean(const char *in, size_t len, char *out, size_t size);

#endif
