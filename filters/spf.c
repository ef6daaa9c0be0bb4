/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	spf 3 - Sender Policy Framework check of MAIL FROM (or HELO for <>)
 * DESCRIPTION
 *	libspf2 evaluates the policy; it is synchronous, so each check runs
 *	on the worker pool (gateway/worker.h) and its answer comes back to
 *	the loop, which resumes the chain.
 *
 *	libspf2 gets a DNS layer of ours (an SPF_dns_server_t) instead of its
 *	resolv layer: each lookup is posted from the worker thread to the
 *	event loop (event_base_once is thread-safe under evthread pthreads),
 *	asked of the one shared resolver (gateway/dns.h: libunbound, its
 *	cache, dns.nameservers, dns.timeout), and the worker waits for the
 *	answer on a condition variable. We chose this over a second,
 *	per-thread resolver so that SPF sees exactly the DNS every other
 *	check sees (split DNS, the test servers) and shares one cache. The
 *	wait is bounded: dns.timeout makes the resolver answer "try later",
 *	and a guard timer on the worker side covers a loop that stopped.
 *
 *	Where libspf2 1.2.10 falls short of RFC 7208 we correct it here:
 *	- void lookups (4.6.4): libspf2 does not count them; our DNS layer
 *	  does, and more than two turn the result into permerror;
 *	- SPF_RESULT_INVALID and errors: DNS trouble is temperror, anything
 *	  else permerror, never a pass;
 *	- IPv4-mapped IPv6 clients are checked as IPv4 (RFC 7208 5.6 / 4291);
 *	- the limit of 10 DNS mechanisms is set explicitly, more than 10 MX
 *	  names is permerror;
 *	- records are checked against the RFC 7208 ABNF first (libspf2 is
 *	  lax: non-ASCII, bad domain-specs, bad macros...): permerror;
 *	- CIDR length 0, which libspf2 refuses, is rewritten into forms it
 *	  accepts where one exists for the client's family;
 *	- type SPF (99) is not queried (discontinued, RFC 7208 3.1);
 *	- only the first 10 PTR names reach libspf2 (it errs on more);
 *	- an abandoned or overlong check fails its remaining lookups at once;
 *	- SPF_request_query_mailfrom() passes every 127.0.0.0/8 client; we
 *	  run libspf2's get_record + interpret ourselves without that.
 *	A check holds a worker thread while its lookups run (libspf2 cannot
 *	yield), so concurrent SPF checks are bounded by the pool size.
 *
 *	Result actions: fail refuses with 550 5.7.23, temperror 451 4.7.24
 *	(RFC 7372), the rest continue; each is configurable. Clients in
 *	trusted_networks, authenticated clients and clients of a trusted
 *	listener are checked (fact, header) but never refused.
 *
 *	Facts: spf = pass | fail | softfail | neutral | none | temperror |
 *	permerror, spf_domain (the identity checked), spf_identity (mailfrom
 *	or helo). Header: Received-SPF (RFC 7208 9.1), added at end of data.
 * SEE ALSO
 *	RFC 7208, RFC 7372, libspf2
 */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <spf2/spf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "filters/filter.h"
#include "gateway/conf.h"
#include "gateway/dns.h"
#include "gateway/worker.h"
#include "lib/log.h"
#include "lib/pool.h"
#include "policy/chain.h"

enum spf_result {
    SPF_R_NONE,
    SPF_R_NEUTRAL,
    SPF_R_PASS,
    SPF_R_FAIL,
    SPF_R_SOFTFAIL,
    SPF_R_TEMPERROR,
    SPF_R_PERMERROR,
    SPF_R_COUNT
};

static const char *const spf_result_names[SPF_R_COUNT] = {
    "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"};

enum spf_act { SPF_ACT_CONTINUE, SPF_ACT_REJECT, SPF_ACT_TEMPFAIL };

#define SPF_MAX_VOID 2       /* RFC 7208 4.6.4 */
#define SPF_MAX_DNS_MECH 10  /* RFC 7208 4.6.4 */
#define SPF_TXT_MAX 4096
#define SPF_ALPHA(c) ((((unsigned char)(c) | 0x20) >= 'a') && (((unsigned char)(c) | 0x20) <= 'z'))

struct spf_conf {
    enum spf_act act[SPF_R_COUNT];
    struct pc_cidr_list trusted;
    bool header;
};

/* What a check needs, copied so that the worker never touches the session. */
struct spf_job {
    struct pc_dns *dns;
    struct event_base *base;
    unsigned guard_ms;
    struct pc_ip ip;
    char helo[PC_DNS_NAME_MAX];
    char sender[PC_PATH_MAX + 1]; /* local@domain or "" */
    char domain[PC_DNS_NAME_MAX];
    char receiver[PC_DNS_NAME_MAX];
    bool helo_identity;
    /* results */
    enum spf_result result;
    unsigned voids;
    bool bad_record; /* an SPF record failed spf_record_ok() */
    char ptr_names[32][PC_DNS_NAME_MAX]; /* PTR answers so far: their A lookups are not voids */
    unsigned nptr_names;
    bool mx_over;    /* an MX answer had more than 10 names (RFC 7208 4.6.4) */
    char comment[256];
    /* owner */
    struct spf_ctx *ctx; /* NULL once the session gave up on it */
    /* Read by the worker: once set, or past the deadline, lookups fail at once, so an
     * abandoned or endless check (a record with many slow names) frees its worker soon. */
    _Atomic bool abandoned;
    struct timespec deadline; /* CLOCK_MONOTONIC */
};

struct spf_ctx {
    struct pc_session *s;
    const struct spf_conf *c;
    struct spf_job *job;
    char *header; /* Received-SPF value, for end of data */
};

/* ---------------------------------------------------------------------- */
/* Strict record syntax (RFC 7208 section 12 ABNF). libspf2 accepts much   */
/* that the RFC calls a permerror; a record failing this check makes the  */
/* whole result permerror (4.6: "syntax errors anywhere in the record").  */

/* spf_macro_string - RFC 7208 7.1 macro-string in s[0..n); *ends_macro: ends with an expand */
static bool spf_macro_string(const char *s, size_t n, bool *ends_macro)
{
    *ends_macro = false;
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        if (c != '%') {
            if (c < 0x21 || c > 0x7e)
                return false;
            *ends_macro = false;
            i++;
            continue;
        }
        if (i + 1 >= n)
            return false;
        char m = s[i + 1];
        if (m == '%' || m == '_' || m == '-') {
            *ends_macro = true;
            i += 2;
            continue;
        }
        if (m != '{' || i + 2 >= n || !strchr("slodiphvSLODIPHV", s[i + 2]) || s[i + 2] == 0)
            return false;
        size_t k = i + 3;
        while (k < n && s[k] >= '0' && s[k] <= '9')
            k++;
        if (k < n && (s[k] == 'r' || s[k] == 'R'))
            k++;
        while (k < n && s[k] && strchr(".-+,/_=", s[k]))
            k++;
        if (k >= n || s[k] != '}')
            return false;
        *ends_macro = true;
        i = k + 1;
    }
    return true;
}

/* spf_toplabel - RFC 7208 toplabel: alphanumerics with a letter, or with an inner "-" */
static bool spf_toplabel(const char *s, size_t n)
{
    bool alpha = false;

    if (n == 0 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= '0' && c <= '9') || SPF_ALPHA(c) || c == '-'))
            return false;
        alpha |= SPF_ALPHA(c) || c == '-';
    }
    return alpha;
}

/* spf_domain_spec - macro-string domain-end (RFC 7208 7.1) */
static bool spf_domain_spec(const char *s, size_t n)
{
    bool ends_macro;

    if (n == 0 || !spf_macro_string(s, n, &ends_macro))
        return false;
    if (ends_macro)
        return true;
    if (s[n - 1] == '.')
        n--;
    size_t dot = n;
    while (dot > 0 && s[dot - 1] != '.')
        dot--;
    if (dot == 0) /* a single label is no domain */
        return false;
    return spf_toplabel(s + dot, n - dot);
}

/* spf_cidr - "/N" with 0 <= N <= max, no leading zeros */
static bool spf_cidr(const char *s, size_t n, unsigned max)
{
    unsigned v = 0;

    if (n == 0 || n > 3 || (n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    return v <= max;
}

/* spf_dual_cidr - [ "/" ip4-cidr ] [ "//" ip6-cidr ] */
static bool spf_dual_cidr(const char *s, size_t n)
{
    const char *dd = NULL;

    for (size_t i = 0; i + 1 < n; i++)
        if (s[i] == '/' && s[i + 1] == '/') {
            dd = s + i;
            break;
        }
    if (dd) {
        if (!spf_cidr(dd + 2, (size_t)(s + n - dd - 2), 128))
            return false;
        n = (size_t)(dd - s);
    }
    if (n == 0)
        return true;
    return s[0] == '/' && spf_cidr(s + 1, n - 1, 32);
}

/* spf_find_cidr - where a trailing dual-cidr ("/N", "//N" or "/N//M") starts, or n;
 * a '/' earlier on belongs to the domain-spec (a:foo:bar/baz.example.com) */
static size_t spf_find_cidr(const char *s, size_t n)
{
    size_t i = n;

    for (int part = 0; part < 2; part++) {
        size_t d = i;
        while (d > 0 && s[d - 1] >= '0' && s[d - 1] <= '9')
            d--;
        if (d == i || d == 0 || s[d - 1] != '/')
            break;
        i = d - 1;
        if (i > 0 && s[i - 1] == '/') { /* "//M": the IPv6 part, only as the last part */
            if (part != 0)
                return n == i ? n : i + 1;
            i--;
        }
    }
    return i;
}

/* spf_term_ok - one mechanism or modifier; counts redirect/exp */
static bool spf_term_ok(const char *t, size_t n, int *redirects, int *exps)
{
    static const char *const mech[] = {"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"};
    size_t name = 0;

    while (name < n && (SPF_ALPHA(t[name]) ||
                        (name && ((t[name] >= '0' && t[name] <= '9') || t[name] == '-' ||
                                  t[name] == '_' || t[name] == '.'))))
        name++;
    if (name && name < n && t[name] == '=') { /* modifier */
        const char *v = t + name + 1;
        size_t vn = n - name - 1;
        bool em;
        if (name == 8 && strncasecmp(t, "redirect", 8) == 0)
            return ++*redirects == 1 && spf_domain_spec(v, vn);
        if (name == 3 && strncasecmp(t, "exp", 3) == 0)
            return ++*exps == 1 && spf_domain_spec(v, vn);
        return spf_macro_string(v, vn, &em);
    }
    if (n && strchr("+-~?", t[0]))
        t++, n--;
    for (size_t m = 0; m < sizeof(mech) / sizeof(mech[0]); m++) {
        size_t ml = strlen(mech[m]);
        if (n < ml || strncasecmp(t, mech[m], ml) != 0)
            continue;
        if (n > ml && t[ml] != ':' && t[ml] != '/')
            continue;
        const char *a = t + ml;
        size_t an = n - ml;
        switch (m) {
        case 0: /* all */
            return an == 0;
        case 1: /* include */
        case 7: /* exists */
            return an > 1 && a[0] == ':' && spf_domain_spec(a + 1, an - 1);
        case 2: /* a */
        case 3: /* mx */ {
            size_t c = spf_find_cidr(a, an);
            if (c > 0 && (a[0] != ':' || !spf_domain_spec(a + 1, c - 1)))
                return false;
            return spf_dual_cidr(a + c, an - c);
        }
        case 4: /* ptr */
            return an == 0 || (a[0] == ':' && spf_domain_spec(a + 1, an - 1));
        case 5:   /* ip4 */
        case 6: { /* ip6 */
            char buf[64];
            unsigned char bin[16];
            size_t c;
            if (an < 2 || a[0] != ':')
                return false;
            for (c = 1; c < an && a[c] != '/'; c++)
                ;
            if (c - 1 >= sizeof(buf))
                return false;
            memcpy(buf, a + 1, c - 1);
            buf[c - 1] = 0;
            if (inet_pton(m == 5 ? AF_INET : AF_INET6, buf, bin) != 1)
                return false;
            if (c == an)
                return true;
            return spf_cidr(a + c + 1, an - c - 1, m == 5 ? 32 : 128);
        }
        }
    }
    return false;
}

/* spf_record_ok - a TXT string that starts "v=spf1": is all of it RFC 7208 syntax */
static bool spf_record_ok(const char *r, size_t n)
{
    int redirects = 0, exps = 0;
    size_t i = 6;

    if (n < 6 || strncasecmp(r, "v=spf1", 6) != 0 || (n > 6 && r[6] != ' '))
        return false;
    for (size_t k = 0; k < n; k++)
        if ((unsigned char)r[k] < 0x20 || (unsigned char)r[k] > 0x7e)
            return false; /* 3.1: 7-bit ASCII; NUL and control characters included */
    while (i < n) {
        while (i < n && r[i] == ' ')
            i++;
        size_t j = i;
        while (j < n && r[j] != ' ')
            j++;
        if (j > i && !spf_term_ok(r + i, j - i, &redirects, &exps))
            return false;
        i = j;
    }
    return true;
}

/* spf_rewrite_cidr0 - say what a CIDR length of 0 means in terms libspf2 accepts (it
 * refuses /0 when it compiles a record, RFC 7208 5.6 allows it). Only the client's family
 * matters: ip4:X/0 is "ip4:0.0.0.0/1 ip4:128.0.0.0/1", ip6:X/0 likewise with two /1s; for
 * an IPv4 client a[:d]/0 is exists:d (some A record) and a //0 IPv6 length is irrelevant
 * (becomes //128), for an IPv6 client the IPv4 length is irrelevant (becomes /32). What
 * has no equivalent (mx/0 for IPv4, a//0 or mx//0 for IPv6) is left for libspf2 to refuse.
 * Returns the new length, or -1 when nothing changed or it does not fit. */
static long spf_rewrite_cidr0(const char *r, size_t n, bool v4, char *out, size_t size)
{
    size_t o = 0, i = 0;
    bool changed = false, overflow = false;

#define SPF_PUT(p, l)                                                                              \
    ((o + (l) < size) ? (void)(memcpy(out + o, (p), (l)), o += (l)) : (void)(overflow = true))
    while (i < n) {
        size_t j = i;
        while (j < n && r[j] != ' ')
            j++;
        const char *t = r + i;
        size_t tn = j - i, q = (tn && strchr("+-~?", t[0])) ? 1 : 0;
        const char *m = t + q;
        size_t mn = tn - q, c = spf_find_cidr(m, mn);
        bool is_a = mn >= 1 && (m[0] | 0x20) == 'a' && (mn == 1 || m[1] == ':' || m[1] == '/');
        bool is_mx = mn >= 2 && strncasecmp(m, "mx", 2) == 0 && (mn == 2 || m[2] == ':' || m[2] == '/');
        bool is_ip4 = mn > 4 && strncasecmp(m, "ip4:", 4) == 0;
        bool is_ip6 = mn > 4 && strncasecmp(m, "ip6:", 4) == 0;
        const char *cidr = m + c, *c6 = NULL;
        size_t cn = mn - c;
        for (size_t k = 0; k + 1 < cn; k++)
            if (cidr[k] == '/' && cidr[k + 1] == '/')
                c6 = cidr + k;
        bool v4zero = cn >= 2 && cidr[0] == '/' && cidr[1] == '0' && (cn == 2 || cidr[2] == '/');
        bool v6zero = c6 && (size_t)(cidr + cn - c6) == 3 && c6[2] == '0';
        if (is_ip4 && cn == 2 && v4zero) {
            if (!v4) /* never matches an IPv6 client: any ip4 network says the same */
                SPF_PUT(t, q), SPF_PUT("ip4:0.0.0.0/32", 14);
            else
                SPF_PUT(t, q), SPF_PUT("ip4:0.0.0.0/1 ", 14), SPF_PUT(t, q),
                    SPF_PUT("ip4:128.0.0.0/1", 15);
            changed = true;
        } else if (is_ip6 && cn == 2 && v4zero) {
            if (v4)
                SPF_PUT(t, q), SPF_PUT("ip6:::/128", 10);
            else
                SPF_PUT(t, q), SPF_PUT("ip6:::/1 ", 9), SPF_PUT(t, q), SPF_PUT("ip6:8000::/1", 12);
            changed = true;
        } else if ((is_a || is_mx) && (v4zero || v6zero)) {
            size_t base = c; /* mechanism and domain, without the cidr */
            if (v4 && v4zero && is_mx) {
                SPF_PUT(t, tn);
            } else if (v4 && v4zero) { /* a/0: some A record */
                SPF_PUT(t, q);
                SPF_PUT("exists:", 7);
                if (base > 2)
                    SPF_PUT(m + 2, base - 2);
                else
                    SPF_PUT("%{d}", 4);
                changed = true;
            } else if (v4 && v6zero) {
                SPF_PUT(t, q + base);
                if (c6 > cidr)
                    SPF_PUT(cidr, (size_t)(c6 - cidr));
                SPF_PUT("//128", 5);
                changed = true;
            } else if (!v4 && v4zero && !v6zero) {
                SPF_PUT(t, q + base);
                SPF_PUT("/32", 3);
                if (c6)
                    SPF_PUT(c6, (size_t)(cidr + cn - c6));
                changed = true;
            } else {
                SPF_PUT(t, tn);
            }
        } else {
            SPF_PUT(t, tn);
        }
        while (j < n && r[j] == ' ')
            SPF_PUT(" ", 1), j++;
        i = j;
    }
#undef SPF_PUT
    if (overflow)
        return -1;
    out[o] = 0;
    return changed ? (long)o : -1;
}

/* spf_is_record - does a TXT string claim to be an SPF record (RFC 7208 4.5) */
static bool spf_is_record(const char *r, size_t n)
{
    return n >= 6 && strncasecmp(r, "v=spf1", 6) == 0 && (n == 6 || r[6] == ' ');
}

/* ---------------------------------------------------------------------- */
/* The DNS layer: libspf2 lookups through the shared resolver.            */

struct spf_dnsreq {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs; /* worker + loop */
    bool done;
    struct pc_dns *dns;
    char name[PC_DNS_NAME_MAX * 2];
    int rrtype;
    enum pc_dns_status st;
    bool nxdomain;
    size_t n;
    char **rr;
    size_t *len;
};

/* dnsreq_unref - drop one holder; the last frees */
static void dnsreq_unref(struct spf_dnsreq *r)
{
    pthread_mutex_lock(&r->mu);
    int left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->rr[i]);
    free(r->rr);
    free(r->len);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}

/* dnsreq_answer - loop thread: copy the answer for the worker, wake it */
static void dnsreq_answer(void *arg, enum pc_dns_status st, const struct pc_dns_answer *a)
{
    struct spf_dnsreq *r = arg;

    pthread_mutex_lock(&r->mu);
    r->st = st;
    r->nxdomain = st == PC_DNS_NOTFOUND && a && a->nxdomain;
    if (st == PC_DNS_FOUND && a->n) {
        r->rr = calloc(a->n, sizeof(char *));
        r->len = calloc(a->n, sizeof(size_t));
        if (r->rr == NULL || r->len == NULL)
            r->st = PC_DNS_TRYLATER;
        for (size_t i = 0; r->st == PC_DNS_FOUND && i < a->n; i++) {
            if ((r->rr[i] = malloc(a->rr_len[i] + 1)) == NULL) {
                r->st = PC_DNS_TRYLATER;
                break;
            }
            memcpy(r->rr[i], a->rr[i], a->rr_len[i]);
            r->len[i] = a->rr_len[i];
            r->n = i + 1;
        }
    }
    r->done = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    dnsreq_unref(r);
}

/* dnsreq_start - loop thread: ask the resolver */
static void dnsreq_start(evutil_socket_t fd, short what, void *arg)
{
    struct spf_dnsreq *r = arg;

    (void)fd, (void)what;
    if (pc_dns_lookup(r->dns, r->name, r->rrtype, dnsreq_answer, r) == NULL)
        dnsreq_answer(r, PC_DNS_TRYLATER, NULL);
}

/* spf_dns_ask - worker thread: one lookup through the loop, bounded wait */
static struct spf_dnsreq *spf_dns_ask(struct spf_job *job, const char *name, int rrtype)
{
    struct spf_dnsreq *r = calloc(1, sizeof(*r));
    struct timeval now_tv = {0, 0};
    struct timespec until;

    if (r == NULL)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->refs = 2;
    r->dns = job->dns;
    r->rrtype = rrtype;
    snprintf(r->name, sizeof(r->name), "%s", name);
    if (event_base_once(job->base, -1, EV_TIMEOUT, dnsreq_start, r, &now_tv) < 0) {
        r->refs = 1;
        r->st = PC_DNS_TRYLATER;
        return r;
    }
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += job->guard_ms / 1000 + 1;
    pthread_mutex_lock(&r->mu);
    while (!r->done)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &until) == ETIMEDOUT)
            break;
    if (!r->done)
        r->st = PC_DNS_TRYLATER; /* the loop is gone or stuck; it frees its half later */
    pthread_mutex_unlock(&r->mu);
    return r;
}

/* spf_dns_name_ok - could this name be asked at all: labels 1..63, total <= 253 */
static bool spf_dns_name_ok(const char *d)
{
    size_t len = strlen(d), label = 0;

    if (len && d[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (d[i] == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (++label > 63) {
            return false;
        }
    }
    return label > 0;
}

/* spf_dns_lookup - libspf2's lookup hook */
static SPF_dns_rr_t *spf_dns_lookup(SPF_dns_server_t *srv, const char *domain, ns_type type,
                                    int should_cache)
{
    struct spf_job *job = srv->hook;
    SPF_dns_rr_t *rr;
    struct spf_dnsreq *r;

    (void)should_cache;
    /* RFC 7208 3.1: type SPF (99) is discontinued; libspf2 still asks it first. */
    if (type == ns_t_spf)
        return SPF_dns_rr_new_init(srv, domain ? domain : "", type, 0, NO_DATA);
    /* A name that cannot exist in the DNS (empty or long labels) does not exist. */
    if (domain == NULL || !spf_dns_name_ok(domain)) {
        if (type != ns_t_txt)
            job->voids++;
        return SPF_dns_rr_new_init(srv, domain ? domain : "", type, 0, HOST_NOT_FOUND);
    }
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (atomic_load(&job->abandoned) || now.tv_sec > job->deadline.tv_sec ||
        (now.tv_sec == job->deadline.tv_sec && now.tv_nsec >= job->deadline.tv_nsec))
        return SPF_dns_rr_new_init(srv, domain, type, 0, TRY_AGAIN);
    if ((r = spf_dns_ask(job, domain, type)) == NULL)
        return SPF_dns_rr_new_init(srv, domain, type, 0, TRY_AGAIN);
    if (type == ns_t_mx && r->st == PC_DNS_FOUND && r->n > 10)
        job->mx_over = true;
    if (r->st == PC_DNS_TRYLATER) {
        rr = SPF_dns_rr_new_init(srv, domain, type, 0, TRY_AGAIN);
    } else if (r->st == PC_DNS_NOTFOUND || r->n == 0) {
        bool ptr_name = false;
        for (size_t i = 0; i < job->nptr_names; i++)
            ptr_name |= strcasecmp(job->ptr_names[i], domain) == 0;
        /* 4.6.4 counts the mechanisms' own lookups, not the checks of PTR names (5.5) */
        if (type != ns_t_txt && type != ns_t_spf && !(ptr_name && type != ns_t_ptr))
            job->voids++;
        rr = SPF_dns_rr_new_init(srv, domain, type, 0, r->nxdomain ? HOST_NOT_FOUND : NO_DATA);
    } else {
        rr = SPF_dns_rr_new_init(srv, domain, type, 0, NETDB_SUCCESS);
        int k = 0;
        for (size_t i = 0; rr && i < r->n; i++) {
            char name[PC_DNS_NAME_MAX * 4 + 8];
            const char *d = r->rr[i];
            size_t l = r->len[i];
            switch (type) {
            case ns_t_a:
            case ns_t_aaaa:
                if (l != (type == ns_t_a ? 4u : 16u))
                    continue;
                if (SPF_dns_rr_buf_realloc(rr, k, l) != SPF_E_SUCCESS)
                    goto fail;
                memcpy(rr->rr[k], d, l);
                break;
            case ns_t_mx:
            case ns_t_ptr: {
                size_t skip = type == ns_t_mx ? 2 : 0;
                /* 4.6.4: only the first 10 PTR names are checked, the rest ignored, not an
                 * error (libspf2 fails on more, depending on the order libunbound rotates) */
                if (type == ns_t_ptr && k >= 10)
                    continue;
                if (l < skip || pc_dns_rdata_name(d + skip, l - skip, name, sizeof(name)) < 0)
                    continue;
                if (SPF_dns_rr_buf_realloc(rr, k, strlen(name) + 1) != SPF_E_SUCCESS)
                    goto fail;
                /* every PTR answer counts: libunbound rotates RRsets, libspf2 may ask twice */
                if (type == ns_t_ptr && job->nptr_names < 32) {
                    char *slot = job->ptr_names[job->nptr_names++];
                    snprintf(slot, PC_DNS_NAME_MAX, "%.*s", PC_DNS_NAME_MAX - 1, name);
                }
                memcpy(rr->rr[k], name, strlen(name) + 1);
                break;
            }
            case ns_t_txt:
            case ns_t_spf: {
                char *txt = malloc(SPF_TXT_MAX);
                long n = txt ? pc_dns_rdata_txt(d, l, txt, SPF_TXT_MAX) : -1;
                if (n >= 0 && spf_is_record(txt, (size_t)n)) {
                    char *fixed = malloc(SPF_TXT_MAX);
                    long fn;
                    if (!spf_record_ok(txt, (size_t)n))
                        job->bad_record = true;
                    else if (fixed && strstr(txt, "/0") &&
                             (fn = spf_rewrite_cidr0(txt, (size_t)n, pc_ip_is_v4(&job->ip), fixed,
                                                     SPF_TXT_MAX)) >= 0) {
                        memcpy(txt, fixed, (size_t)fn + 1);
                        n = fn;
                    }
                    free(fixed);
                }
                if (n < 0 || SPF_dns_rr_buf_realloc(rr, k, (size_t)n + 1) != SPF_E_SUCCESS) {
                    free(txt);
                    if (n < 0)
                        continue;
                    goto fail;
                }
                memcpy(rr->rr[k], txt, (size_t)n + 1);
                free(txt);
                break;
            }
            default:
                continue;
            }
            k++;
        }
        if (rr) {
            rr->num_rr = k;
            if (k == 0)
                rr->herrno = NO_DATA;
        }
    }
    dnsreq_unref(r);
    return rr;
fail:
    SPF_dns_rr_free(rr);
    dnsreq_unref(r);
    return SPF_dns_rr_new_init(srv, domain, type, 0, TRY_AGAIN);
}

/* spf_map - libspf2's result and error code to ours (INVALID is never a pass) */
static enum spf_result spf_map(SPF_result_t r, SPF_errcode_t e)
{
    switch (r) {
    case SPF_RESULT_PASS:
        return SPF_R_PASS;
    case SPF_RESULT_FAIL:
        return SPF_R_FAIL;
    case SPF_RESULT_SOFTFAIL:
        return SPF_R_SOFTFAIL;
    case SPF_RESULT_NEUTRAL:
        return SPF_R_NEUTRAL;
    case SPF_RESULT_NONE:
        return SPF_R_NONE;
    case SPF_RESULT_TEMPERROR:
        return SPF_R_TEMPERROR;
    case SPF_RESULT_PERMERROR:
        return SPF_R_PERMERROR;
    case SPF_RESULT_INVALID:
    default:
        return e == SPF_E_DNS_ERROR || e == SPF_E_NO_MEMORY || e == SPF_E_INTERNAL_ERROR
                   ? SPF_R_TEMPERROR
                   : SPF_R_PERMERROR;
    }
}

/* spf_query - SPF_request_query_mailfrom() without its free pass for loopback clients
 * (127.0.0.0/8 would always "pass", which is wrong behind a local relay and useless in
 * tests); the steps are libspf2's public get_record + interpret. */
static SPF_response_t *spf_query(SPF_server_t *srv, SPF_request_t *req)
{
    SPF_response_t *resp;
    SPF_record_t *rec = NULL;
    SPF_errcode_t err;

    req->cur_dom = req->env_from_dp ? req->env_from_dp : req->helo_dom;
    if (req->cur_dom == NULL || (resp = SPF_response_new(req)) == NULL)
        return NULL;
    err = SPF_server_get_record(srv, req, resp, &rec);
    if (err != SPF_E_SUCCESS) {
        if (rec)
            SPF_record_free(rec);
        /* RFC 7208 4.4/4.5: no record is none, DNS trouble temperror, the rest permerror */
        /* libspf2 says SPF_E_NOT_SPF also for a record that failed to compile */
        bool none = err == SPF_E_NOT_SPF && rec == NULL;
        SPF_i_done(resp,
                   none                     ? SPF_RESULT_NONE
                   : err == SPF_E_DNS_ERROR ? SPF_RESULT_TEMPERROR
                                            : SPF_RESULT_PERMERROR,
                   SPF_REASON_NONE, err);
        return resp;
    }
    resp->spf_record_exp = rec;
    SPF_record_interpret(rec, req, resp, 0);
    resp->spf_record_exp = NULL;
    SPF_record_free(rec);
    return resp;
}

/* spf_run - worker thread: evaluate the job's identity */
static void spf_run(struct spf_job *job)
{
    SPF_dns_server_t dns = {.lookup = spf_dns_lookup, .name = "portcullis", .hook = job};
    SPF_server_t *srv = NULL;
    SPF_request_t *req = NULL;
    SPF_response_t *resp = NULL;
    char ipbuf[64];

    job->result = SPF_R_NONE;
    job->voids = 0;
    job->nptr_names = 0;
    job->comment[0] = 0;
    if (job->domain[0] == 0 || !pc_dns_hostname_ok(job->domain)) {
        snprintf(job->comment, sizeof(job->comment), "no usable domain to check");
        return;
    }
    srv = SPF_server_new_dns(&dns, 0);
    if (srv == NULL || (req = SPF_request_new(srv)) == NULL) {
        job->result = SPF_R_TEMPERROR;
        goto out;
    }
    SPF_server_set_max_dns_mech(srv, SPF_MAX_DNS_MECH);
    SPF_server_set_rec_dom(srv, job->receiver);
    /* libspf2's default explanation points at a defunct web site (a macro-string: %_ is a space) */
    SPF_response_t *scratch = NULL; /* libspf2 reports compile errors into a response */
    SPF_server_set_explanation(srv, "%{i}%_is%_not%_allowed%_to%_send%_mail%_for%_%{o}", &scratch);
    if (scratch)
        SPF_response_free(scratch);
    pc_ip_format(&job->ip, ipbuf, sizeof(ipbuf));
    if (pc_ip_is_v4(&job->ip)) { /* IPv4-mapped IPv6 too: RFC 7208 section 5 */
        struct in_addr a4;
        memcpy(&a4, job->ip.b + 12, 4);
        SPF_request_set_ipv4(req, a4);
    } else {
        struct in6_addr a6;
        memcpy(&a6, job->ip.b, 16);
        SPF_request_set_ipv6(req, a6);
    }
    if (job->helo[0])
        SPF_request_set_helo_dom(req, job->helo);
    /* For HELO (null sender) the identity is postmaster@helo (RFC 7208 2.3, 2.4). */
    if (SPF_request_set_env_from(req, job->helo_identity ? job->domain : job->sender) != 0) {
        job->result = SPF_R_NONE;
        snprintf(job->comment, sizeof(job->comment), "malformed sender");
        goto out;
    }
    if ((resp = spf_query(srv, req)) == NULL) {
        job->result = SPF_R_TEMPERROR;
        goto out;
    }
    job->result = spf_map(SPF_response_result(resp), SPF_response_errcode(resp));
    if (job->result != SPF_R_TEMPERROR && job->result != SPF_R_NONE &&
        (job->bad_record || job->mx_over || job->voids > SPF_MAX_VOID)) {
        job->result = SPF_R_PERMERROR;
        snprintf(job->comment, sizeof(job->comment), "%s",
                 job->bad_record ? "invalid SPF record (RFC 7208 4.6)"
                 : job->mx_over  ? "more than 10 MX names (RFC 7208 4.6.4)"
                                 : "too many void lookups (RFC 7208 4.6.4)");
    } else if (job->result == SPF_R_FAIL && SPF_response_get_explanation(resp)) {
        /* the domain's exp= text: printable only, it ends up in our reply */
        pc_printable_copy(job->comment, sizeof(job->comment), SPF_response_get_explanation(resp),
                          strlen(SPF_response_get_explanation(resp)));
    }
out:
    if (resp)
        SPF_response_free(resp);
    if (req)
        SPF_request_free(req);
    if (srv)
        SPF_server_free(srv);
}

/* spf_job_init - what to check: MAIL FROM, or HELO (as postmaster@helo) when use_helo */
static void spf_job_init(struct spf_job *job, const struct pc_services *svc,
                         const struct pc_ip *ip, const char *helo, const char *from_addr,
                         const char *from_domain, bool use_helo)
{
    job->dns = svc->dns;
    job->base = svc->base;
    job->guard_ms = 30000;
    atomic_init(&job->abandoned, false);
    clock_gettime(CLOCK_MONOTONIC, &job->deadline);
    job->deadline.tv_sec += 30; /* the filter's own timeout, normally, is shorter */
    job->ip = *ip;
    snprintf(job->receiver, sizeof(job->receiver), "%s",
             svc->hostname ? svc->hostname : "localhost");
    /* The HELO name feeds %{h} as given (7.3); only a host name can be the identity. */
    if (helo && strlen(helo) < sizeof(job->helo))
        pc_printable_copy(job->helo, sizeof(job->helo), helo, strlen(helo));
    if (use_helo) {
        job->helo_identity = true;
        if (pc_dns_hostname_ok(job->helo))
            snprintf(job->domain, sizeof(job->domain), "%s", job->helo);
    } else {
        snprintf(job->sender, sizeof(job->sender), "%s", from_addr);
        if (strlen(from_domain) < sizeof(job->domain))
            snprintf(job->domain, sizeof(job->domain), "%s", from_domain);
    }
}

/* ---------------------------------------------------------------------- */
/* The filter.                                                            */

static cfg_opt_t spf_opts[] = {
    CFG_STR("fail_action", "reject", CFGF_NONE),
    CFG_STR("softfail_action", "continue", CFGF_NONE),
    CFG_STR("neutral_action", "continue", CFGF_NONE),
    CFG_STR("none_action", "continue", CFGF_NONE),
    CFG_STR("temperror_action", "tempfail", CFGF_NONE),
    CFG_STR("permerror_action", "continue", CFGF_NONE),
    CFG_STR_LIST("trusted_networks", "{}", CFGF_NONE),
    CFG_BOOL("header", cfg_true, CFGF_NONE),
    CFG_END()};

/* spf_configure - actions per result, trusted networks */
static int spf_configure(cfg_t *sec, void **out, struct pc_err *err)
{
    static const char *const opt[SPF_R_COUNT] = {
        "none_action",     "neutral_action",   "pass_action_unused", "fail_action",
        "softfail_action", "temperror_action", "permerror_action"};
    struct spf_conf *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return -1;
    pc_cidr_list_init(&c->trusted);
    *out = c;
    for (int r = 0; r < SPF_R_COUNT; r++) {
        if (r == SPF_R_PASS)
            continue;
        const char *v = cfg_getstr(sec, opt[r]);
        if (strcasecmp(v, "continue") == 0)
            c->act[r] = SPF_ACT_CONTINUE;
        else if (strcasecmp(v, "reject") == 0)
            c->act[r] = SPF_ACT_REJECT;
        else if (strcasecmp(v, "tempfail") == 0)
            c->act[r] = SPF_ACT_TEMPFAIL;
        else {
            pc_err_set(err, sec, "spf: %s must be continue, reject or tempfail", opt[r]);
            return -1;
        }
    }
    for (unsigned i = 0; i < cfg_size(sec, "trusted_networks"); i++) {
        const char *n = cfg_getnstr(sec, "trusted_networks", i);
        if (!pc_cidr_list_add(&c->trusted, n)) {
            pc_err_set(err, sec, "spf: trusted_networks: bad network \"%s\"", n);
            return -1;
        }
    }
    c->header = cfg_getbool(sec, "header");
    return 0;
}

/* spf_quiet - drop libspf2's warnings: our own log line says what matters */
static void spf_quiet(const char *file, int line, const char *msg)
{
    (void)file, (void)line, (void)msg;
}

/* spf_start - quiet libspf2's own stderr chatter (process-wide, set once) */
static int spf_start(void *conf, struct pc_services *svc)
{
    (void)conf, (void)svc;
    SPF_warning_handler = spf_quiet;
    SPF_info_handler = spf_quiet;
    SPF_debug_handler = spf_quiet;
    return 0;
}

/* spf_destroy - release configuration */
static void spf_destroy(void *conf)
{
    struct spf_conf *c = conf;

    pc_cidr_list_free(&c->trusted);
    free(c);
}

/* spf_attach - per-session context */
static int spf_attach(struct pc_session *s, void *conf, void **ctx)
{
    struct spf_ctx *x = pc_pool_zalloc(s->pool, sizeof(*x));

    x->s = s;
    x->c = conf;
    *ctx = x;
    return 0;
}

/* spf_abandon - the session no longer wants the running job; done() frees it */
static void spf_abandon(struct spf_ctx *x)
{
    if (x->job) {
        x->job->ctx = NULL;
        atomic_store(&x->job->abandoned, true);
        x->job = NULL;
    }
}

/* spf_cancel - the chain gave up */
static void spf_cancel(struct pc_session *s, void *conf, void *ctx)
{
    (void)s, (void)conf;
    spf_abandon(ctx);
}

/* spf_work - worker thread */
static void spf_work(void *arg)
{
    spf_run(arg);
}

/* spf_header_value - the Received-SPF field body (RFC 7208 9.1), from sanitised data */
static char *spf_header_value(struct pc_session *s, const struct spf_job *job)
{
    const char *r = spf_result_names[job->result];
    char who[PC_PATH_MAX + 16];

    if (job->helo_identity)
        snprintf(who, sizeof(who), "postmaster@%s", job->domain);
    else
        snprintf(who, sizeof(who), "%s", job->sender);
    for (char *p = who; *p; p++) /* a quoted local part may hold anything */
        if (*p == '"' || *p == '\\' || *p == '(' || *p == ')' || (unsigned char)*p < 0x21 ||
            (unsigned char)*p > 0x7e)
            *p = '?';
    /* The field belongs to this transaction: in the session's pool it would stay until the
     * client leaves, growing with every MAIL. */
    return pc_pool_printf(s->txn ? s->txn->pool : s->pool,
                          "%s (%s: domain of %s %s %s) client-ip=%s; envelope-from=\"%s\"; "
                          "helo=%s; receiver=%s; identity=%s;",
                          r, job->receiver, who,
                          job->result == SPF_R_PASS   ? "designates"
                          : job->result == SPF_R_FAIL ? "does not designate"
                                                      : "gives result for",
                          s->client.addr, s->client.addr, job->helo_identity ? "" : who,
                          pc_dns_hostname_ok(job->helo) ? job->helo : "unknown", job->receiver,
                          job->helo_identity ? "helo" : "mailfrom");
}

/* spf_done - loop thread: record and decide */
static void spf_done(void *arg)
{
    struct spf_job *job = arg;
    struct spf_ctx *x = job->ctx;
    struct pc_verdict v;

    if (x == NULL) { /* abandoned */
        free(job);
        return;
    }
    struct pc_session *s = x->s;
    x->job = NULL;
    pc_verdict_clear(&v);
    pc_fact_add(s, "spf", "%s", spf_result_names[job->result]);
    pc_fact_add(s, "spf_domain", "%s", job->domain);
    pc_fact_add(s, "spf_identity", "%s", job->helo_identity ? "helo" : "mailfrom");
    pc_info("%s: spf: %s[%s] %s=%s result=%s%s%s", s->sid, s->client.name, s->client.addr,
            job->helo_identity ? "helo" : "mailfrom", job->domain, spf_result_names[job->result],
            job->comment[0] ? " " : "", job->comment);
    if (x->c->header)
        x->header = spf_header_value(s, job);
    bool trusted = s->trusted || s->auth_user || pc_cidr_list_match(&x->c->trusted, &s->client.ip);
    switch (trusted ? SPF_ACT_CONTINUE : x->c->act[job->result]) {
    case SPF_ACT_CONTINUE:
        break;
    case SPF_ACT_REJECT:
        pc_verdict_set(&v, PC_REJECT, 550, "5.7.23",
                       "SPF %s for %s from [%s]%s%s", spf_result_names[job->result], job->domain,
                       s->client.addr, job->comment[0] ? ": " : "", job->comment);
        break;
    case SPF_ACT_TEMPFAIL:
        /* PC_ERROR: the filter's on_error may choose to let it through */
        pc_verdict_set(&v, PC_ERROR, 451, "4.7.24", "SPF %s for %s; try again later",
                       spf_result_names[job->result], job->domain);
        break;
    }
    free(job);
    pc_chain_resume(s, &v);
}

/* spf_mail - start the check on a worker */
static enum pc_action spf_mail(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    struct spf_ctx *x = ctx;
    const struct pc_mailbox *from = &s->txn->from;
    struct spf_job *job;

    (void)conf;
    x->header = NULL;
    if (s->svc->dns == NULL || s->svc->workers == NULL) {
        pc_verdict_set(v, PC_ERROR, 451, "4.7.24", "no resolver");
        return PC_ERROR;
    }
    if ((job = calloc(1, sizeof(*job))) == NULL)
        return PC_ERROR;
    spf_job_init(job, s->svc, &s->client.ip, s->helo, from->addr, from->domain,
                 from->null || from->domain[0] == 0 || from->literal);
    /* the resolver answers within dns.timeout; the guard only covers a stopped loop */
    if (s->conf && s->conf->dns_timeout)
        job->guard_ms = s->conf->dns_timeout + 1000;
    job->ctx = x;
    x->job = job;
    pc_worker_submit(s->svc->workers, spf_work, spf_done, job);
    return PC_PENDING;
}

/* spf_eom - add Received-SPF */
static enum pc_action spf_eom(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    struct spf_ctx *x = ctx;

    (void)conf, (void)v;
    if (x->header)
        pc_header_add(s, "Received-SPF", x->header);
    return PC_CONTINUE;
}

/* spf_reset - end of transaction */
static void spf_reset(struct pc_session *s, void *conf, void *ctx)
{
    struct spf_ctx *x = ctx;

    (void)s, (void)conf;
    spf_abandon(x);
    x->header = NULL;
}

/* spf_detach - end of session */
static void spf_detach(struct pc_session *s, void *conf, void *ctx)
{
    (void)s, (void)conf;
    spf_abandon(ctx);
}

const struct pc_filter_ops pc_filter_spf = {
    .name = "spf",
    .abi = PC_FILTER_ABI,
    .opts = spf_opts,
    .configure = spf_configure,
    .start = spf_start,
    .destroy = spf_destroy,
    .attach = spf_attach,
    .reset = spf_reset,
    .detach = spf_detach,
    .cancel = spf_cancel,
    .stage = {[PC_STAGE_MAIL] = spf_mail, [PC_STAGE_EOM] = spf_eom},
};
