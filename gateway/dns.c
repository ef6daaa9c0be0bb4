/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	dns 3 - the one asynchronous resolver: libunbound on the event loop
 * DESCRIPTION
 *	One libunbound context for the process, in threaded async mode: its
 *	worker thread resolves and caches, and hands answers back through a
 *	pipe (ub_fd) that our libevent loop watches; ub_process() then runs
 *	the answer callbacks on the loop thread. We chose ub_fd over
 *	ub_ctx_create_event() because the latter needs libunbound to be built
 *	against the very libevent we link, and may answer from cache inside
 *	ub_resolve_event() itself, which our interface forbids.
 *
 *	Every query carries its own timer (dns.timeout): libunbound's internal
 *	retries can take far longer than an SMTP client waits. A timeout
 *	cancels the libunbound query and answers PC_DNS_TRYLATER.
 *
 *	With dns.nameservers set, every name is forwarded to them: libunbound's
 *	default local zones (localhost., test., invalid., 127.in-addr.arpa.,
 *	the RFC 1918/6303 reverse zones...) are replaced by transparent zones
 *	("nodefault" alone does not stop them in libunbound 1.17), so that a test
 *	server on loopback or a split-horizon site server sees every question.
 * SEE ALSO
 *	libunbound(3), RFC 1035, RFC 3596, RFC 6303, RFC 6761
 */
#include "gateway/dns.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unbound.h>

#include "filters/filter.h"
#include "lib/cidr.h"
#include "lib/log.h"
#include "lib/metrics.h"

struct pc_dns {
    struct ub_ctx *ub;
    struct event_base *base;
    struct event *ev_fd;
    unsigned timeout_ms;
    struct pc_dns_query *queries; /* outstanding, so pc_dns_free() can release them */
};

struct pc_dns_query {
    struct pc_dns *dns;
    struct pc_dns_query *next, **prevp;
    int async_id;
    bool submitted; /* libunbound holds it (else: failed to submit, timer reports it) */
    struct event *timer;
    pc_dns_cb *cb;
    void *arg;
    int rrtype;
    struct timespec t0; /* for portcullis_dns_query_duration_seconds */
};

/* Default local zones of libunbound (unbound.conf(5), "local-zone" defaults). */
static const char *const dns_default_zones[] = {
    "localhost.", "127.in-addr.arpa.", "onion.", "test.", "invalid.", "home.arpa.",
    "resolver.arpa.", "service.arpa.", "local.",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
    "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.", NULL};

/* query_unlink - take a query off the outstanding list and free it */
static void query_free(struct pc_dns_query *q)
{
    if (q->prevp) {
        *q->prevp = q->next;
        if (q->next)
            q->next->prevp = q->prevp;
    }
    if (q->timer)
        event_free(q->timer);
    free(q);
}

/* dns_deliver - map a libunbound result to our three values and call back */
static void dns_deliver(struct pc_dns_query *q, int err, struct ub_result *r)
{
    struct pc_dns_answer a = {.rrtype = q->rrtype};
    enum pc_dns_status st = PC_DNS_TRYLATER;
    size_t lens[64];
    pc_dns_cb *cb = q->cb;
    void *arg = q->arg;

    if (err == 0 && r != NULL && !r->bogus) {
        if (r->rcode == 3) { /* NXDOMAIN */
            st = PC_DNS_NOTFOUND;
            a.nxdomain = true;
        } else if (r->rcode == 0 && r->havedata) {
            st = PC_DNS_FOUND;
            while (a.n < 64 && r->data[a.n]) {
                lens[a.n] = (size_t)r->len[a.n];
                a.n++;
            }
            a.rr = (const char *const *)r->data;
            a.rr_len = lens;
            if (r->canonname && r->qname && strcasecmp(r->canonname, r->qname) != 0)
                a.canon = r->canonname;
        } else if (r->rcode == 0) {
            st = PC_DNS_NOTFOUND; /* NODATA */
        }
    }
    static const char *const names[] = {
        [PC_DNS_FOUND] = "found", [PC_DNS_NOTFOUND] = "notfound", [PC_DNS_TRYLATER] = "trylater"};
    pc_metric_observe(PC_M_DNS_SECONDS, names[st], pc_seconds_since(&q->t0));
    query_free(q);
    cb(arg, st, st == PC_DNS_TRYLATER ? NULL : &a);
}

/* on_ub_answer - libunbound's callback, run by ub_process() on the loop thread */
static void on_ub_answer(void *arg, int err, struct ub_result *r)
{
    dns_deliver(arg, err, r);
    if (r)
        ub_resolve_free(r);
}

/* on_ub_fd - libunbound's worker thread has answers for us */
static void on_ub_fd(evutil_socket_t fd, short what, void *arg)
{
    struct pc_dns *d = arg;

    (void)fd;
    (void)what;
    if (ub_process(d->ub) != 0)
        pc_warn("dns: ub_process failed");
}

/* on_timer - our own per-query timeout (or a query libunbound refused to take) */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct pc_dns_query *q = arg;

    (void)fd;
    (void)what;
    if (q->submitted)
        ub_cancel(q->dns->ub, q->async_id);
    dns_deliver(q, -1, NULL);
}

/* ns_format - "ip", "ip:port", "[v6]:port" or a bare IPv6 address to unbound's "ip@port" */
static bool ns_format(const char *ns, char *out, size_t size)
{
    char host[64];
    const char *port = NULL;
    struct in6_addr a6;
    struct in_addr a4;

    if (ns[0] == '[') {
        const char *e = strchr(ns, ']');
        if (e == NULL || (size_t)(e - ns - 1) >= sizeof(host))
            return false;
        memcpy(host, ns + 1, (size_t)(e - ns - 1));
        host[e - ns - 1] = 0;
        if (e[1] == ':')
            port = e + 2;
        else if (e[1] != 0)
            return false;
    } else if (inet_pton(AF_INET6, ns, &a6) == 1) {
        snprintf(host, sizeof(host), "%s", ns);
    } else {
        const char *c = strchr(ns, ':');
        size_t n = c ? (size_t)(c - ns) : strlen(ns);
        if (n >= sizeof(host))
            return false;
        memcpy(host, ns, n);
        host[n] = 0;
        if (c)
            port = c + 1;
    }
    if (inet_pton(AF_INET, host, &a4) != 1 && inet_pton(AF_INET6, host, &a6) != 1)
        return false;
    if (port) {
        char *end;
        long p = strtol(port, &end, 10);
        if (*port == 0 || *end != 0 || p < 1 || p > 65535)
            return false;
        snprintf(out, size, "%s@%ld", host, p);
    } else {
        snprintf(out, size, "%s", host);
    }
    return true;
}

/* dns_opt - set one libunbound option, reporting failure */
static bool dns_opt(struct pc_dns *d, const char *opt, const char *val, struct pc_err *err)
{
    int rc = ub_ctx_set_option(d->ub, opt, val);

    if (rc != 0) {
        snprintf(err->msg, sizeof(err->msg), "dns: %s %s: %s", opt, val, ub_strerror(rc));
        return false;
    }
    return true;
}

/* pc_dns_create - the resolver, forwarding to nameservers when given */
struct pc_dns *pc_dns_create(struct event_base *base, const char *const *nameservers, size_t n,
                             unsigned timeout_ms, struct pc_err *err)
{
    struct pc_dns *d = calloc(1, sizeof(*d));
    int rc;

    if (d == NULL || (d->ub = ub_ctx_create()) == NULL) {
        snprintf(err->msg, sizeof(err->msg), "dns: cannot create resolver context");
        free(d);
        return NULL;
    }
    d->base = base;
    d->timeout_ms = timeout_ms ? timeout_ms : 5000;
    if ((rc = ub_ctx_async(d->ub, 1)) != 0) {
        snprintf(err->msg, sizeof(err->msg), "dns: threads: %s", ub_strerror(rc));
        goto fail;
    }
    if (n == 0) {
        /* Without resolv.conf libunbound recurses from the root itself: still a resolver,
         * and a gateway whose chains use no DNS must start anyway. */
        if ((rc = ub_ctx_resolvconf(d->ub, NULL)) != 0)
            pc_warn("dns: resolv.conf: %s; resolving from the root", ub_strerror(rc));
    } else {
        for (size_t i = 0; i < n; i++) {
            char fwd[96];
            if (!ns_format(nameservers[i], fwd, sizeof(fwd))) {
                snprintf(err->msg, sizeof(err->msg),
                         "dns: nameservers: bad address \"%s\" (ip, ip:port or [v6]:port)",
                         nameservers[i]);
                goto fail;
            }
            if ((rc = ub_ctx_set_fwd(d->ub, fwd)) != 0) {
                snprintf(err->msg, sizeof(err->msg), "dns: nameserver %s: %s", fwd,
                         ub_strerror(rc));
                goto fail;
            }
        }
        /* The forwarders may be on loopback and may publish any name. */
        if (!dns_opt(d, "do-not-query-localhost:", "no", err) ||
            !dns_opt(d, "unblock-lan-zones:", "yes", err) ||
            !dns_opt(d, "insecure-lan-zones:", "yes", err))
            goto fail;
        for (size_t i = 0; dns_default_zones[i]; i++) {
            char z[128];
            snprintf(z, sizeof(z), "%s transparent", dns_default_zones[i]);
            if (!dns_opt(d, "local-zone:", z, err))
                goto fail;
        }
    }
    d->ev_fd = event_new(base, ub_fd(d->ub), EV_READ | EV_PERSIST, on_ub_fd, d);
    if (d->ev_fd == NULL || event_add(d->ev_fd, NULL) < 0) {
        snprintf(err->msg, sizeof(err->msg), "dns: cannot watch the resolver");
        goto fail;
    }
    return d;
fail:
    if (d->ev_fd)
        event_free(d->ev_fd);
    ub_ctx_delete(d->ub);
    free(d);
    return NULL;
}

/* pc_dns_zone_file - answer only from a zone file's records (offline runs) */
int pc_dns_zone_file(struct pc_dns *d, const char *path, struct pc_err *err)
{
    char line[4096];
    int lineno = 0, rc;
    FILE *f = fopen(path, "r");

    if (f == NULL) {
        snprintf(err->msg, sizeof(err->msg), "%s: %s", path, strerror(errno));
        return -1;
    }
    /* A static root zone: names the file does not list are NXDOMAIN, never asked upstream. */
    if ((rc = ub_ctx_zone_add(d->ub, ".", "static")) != 0) {
        snprintf(err->msg, sizeof(err->msg), "dns: zone file: %s", ub_strerror(rc));
        fclose(f);
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = 0;
        const char *p = line + strspn(line, " \t");
        if (*p == 0 || *p == ';' || *p == '#')
            continue;
        /* One complete record per line, absolute names: "name [ttl] [IN] type rdata". */
        if ((rc = ub_ctx_data_add(d->ub, p)) != 0) {
            snprintf(err->msg, sizeof(err->msg), "%s:%d: bad record: %s", path, lineno,
                     ub_strerror(rc));
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    return 0;
}

/* pc_dns_free - release the resolver; outstanding queries die without callbacks */
void pc_dns_free(struct pc_dns *d)
{
    if (d == NULL)
        return;
    while (d->queries)
        pc_dns_cancel(d->queries);
    event_free(d->ev_fd);
    ub_ctx_delete(d->ub);
    free(d);
}

/* pc_dns_lookup - start a query; the callback always runs later, on the loop */
struct pc_dns_query *pc_dns_lookup(struct pc_dns *d, const char *name, int rrtype, pc_dns_cb *cb,
                                   void *arg)
{
    struct pc_dns_query *q = calloc(1, sizeof(*q));
    struct timeval tv;

    if (q == NULL)
        return NULL;
    q->dns = d;
    q->cb = cb;
    q->arg = arg;
    q->rrtype = rrtype;
    clock_gettime(CLOCK_MONOTONIC, &q->t0);
    q->timer = evtimer_new(d->base, on_timer, q);
    if (q->timer == NULL) {
        free(q);
        return NULL;
    }
    q->next = d->queries;
    if (q->next)
        q->next->prevp = &q->next;
    q->prevp = &d->queries;
    d->queries = q;
    if (ub_resolve_async(d->ub, name, rrtype, 1, q, on_ub_answer, &q->async_id) == 0) {
        q->submitted = true;
        tv.tv_sec = d->timeout_ms / 1000;
        tv.tv_usec = (d->timeout_ms % 1000) * 1000;
    } else {
        tv.tv_sec = tv.tv_usec = 0; /* report TRYLATER from the loop, not from here */
    }
    evtimer_add(q->timer, &tv);
    return q;
}

/* pc_dns_cancel - forget a query: its callback will not run */
void pc_dns_cancel(struct pc_dns_query *q)
{
    if (q == NULL)
        return;
    /* In the loop thread an answer not yet processed is still known to
     * libunbound, and ub_cancel() makes ub_process() drop it silently. */
    if (q->submitted)
        ub_cancel(q->dns->ub, q->async_id);
    query_free(q);
}

/* pc_dns_reverse - reverse-mapping name of an address, under in-addr.arpa/ip6.arpa or zone */
bool pc_dns_reverse(const struct pc_ip *ip, const char *zone, char *buf, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    size_t off = 0;
    int n;

    if (pc_ip_is_v4(ip)) {
        n = snprintf(buf, size, "%u.%u.%u.%u.%s", ip->b[15], ip->b[14], ip->b[13], ip->b[12],
                     zone ? zone : "in-addr.arpa");
        return n > 0 && (size_t)n < size;
    }
    for (int i = 15; i >= 0; i--) {
        if (off + 4 >= size)
            return false;
        buf[off++] = hex[ip->b[i] & 15];
        buf[off++] = '.';
        buf[off++] = hex[ip->b[i] >> 4];
        buf[off++] = '.';
    }
    n = snprintf(buf + off, size - off, "%s", zone ? zone : "ip6.arpa");
    return n > 0 && (size_t)n < size - off;
}

/* pc_dns_rdata_ip - A or AAAA RDATA to an address */
bool pc_dns_rdata_ip(int rrtype, const char *rd, size_t len, struct pc_ip *ip)
{
    memset(ip, 0, sizeof(*ip));
    if (rrtype == PC_DNS_T_A && len == 4) {
        ip->b[10] = ip->b[11] = 0xff;
        memcpy(ip->b + 12, rd, 4);
        return true;
    }
    if (rrtype == PC_DNS_T_AAAA && len == 16) {
        memcpy(ip->b, rd, 16);
        return true;
    }
    return false;
}

/* pc_dns_rdata_name - wire-format name to escaped presentation text */
int pc_dns_rdata_name(const char *rd, size_t len, char *buf, size_t size)
{
    size_t i = 0, o = 0, wire = 0;

    if (size == 0)
        return -1;
    for (;;) {
        if (i >= len)
            return -1;
        unsigned l = (unsigned char)rd[i++];
        if (l == 0)
            break;
        if (l > 63 || i + l > len) /* compression pointers never appear in libunbound RDATA */
            return -1;
        wire += l + 1;
        if (wire > 254)
            return -1;
        if (o && o + 1 < size)
            buf[o++] = '.';
        for (unsigned k = 0; k < l; k++) {
            unsigned char c = (unsigned char)rd[i + k];
            if (c > 0x20 && c < 0x7f && c != '.' && c != '\\') {
                if (o + 1 >= size)
                    return -1;
                buf[o++] = (char)c;
            } else {
                if (o + 4 >= size)
                    return -1;
                snprintf(buf + o, 5, "\\%03u", c);
                o += 4;
            }
        }
        i += l;
    }
    buf[o] = 0;
    return (int)o;
}

/* pc_dns_rdata_txt - a TXT record's strings joined without separator (RFC 7208 3.3) */
long pc_dns_rdata_txt(const char *rd, size_t len, char *buf, size_t size)
{
    size_t i = 0, o = 0;

    if (size == 0)
        return -1;
    while (i < len) {
        size_t l = (unsigned char)rd[i++];
        if (i + l > len || o + l >= size)
            return -1;
        memcpy(buf + o, rd + i, l);
        o += l;
        i += l;
    }
    buf[o] = 0;
    return (long)o;
}

/* pc_dns_hostname_ok - LDH syntax (RFC 1123 2.1), underscores tolerated as Postfix does */
bool pc_dns_hostname_ok(const char *name)
{
    size_t label = 0, total = 0;

    if (name == NULL || *name == 0)
        return false;
    for (const char *p = name; *p; p++, total++) {
        unsigned char c = (unsigned char)*p;
        if (c == '.') {
            if (label == 0 || p[-1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!(isalnum(c) && c < 0x80) && c != '-' && c != '_')
            return false;
        if (c == '-' && label == 0)
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0 && total <= 253;
}

/* pc_dns_hostname_clean - a hostile name becomes "unknown"; a good one is lowercased */
const char *pc_dns_hostname_clean(const char *in, size_t len, char *out, size_t size)
{
    char tmp[PC_DNS_NAME_MAX + 2];

    if (size < 8) {
        if (size)
            out[0] = 0;
        return out;
    }
    if (len && in[len - 1] == '.')
        len--;
    if (len == 0 || len >= sizeof(tmp) || len >= size || memchr(in, 0, len) != NULL)
        goto bad;
    for (size_t i = 0; i < len; i++)
        tmp[i] = (char)tolower((unsigned char)in[i]);
    tmp[len] = 0;
    if (!pc_dns_hostname_ok(tmp))
        goto bad;
    memcpy(out, tmp, len + 1);
    return out;
bad:
    snprintf(out, size, "unknown");
    return out;
}
