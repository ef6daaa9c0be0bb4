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
 *	- the limit of 10 DNS mechanisms is set explicitly.
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
#include <spf2/spf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "filters/filter.h"
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
    char comment[256];
    /* owner */
    struct spf_ctx *ctx; /* NULL once the session gave up on it */
};

struct spf_ctx {
    struct pc_session *s;
    const struct spf_conf *c;
    struct spf_job *job;
    char *header; /* Received-SPF value, for end of data */
};

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

/* spf_dns_lookup - libspf2's lookup hook */
static SPF_dns_rr_t *spf_dns_lookup(SPF_dns_server_t *srv, const char *domain, ns_type type,
                                    int should_cache)
{
    struct spf_job *job = srv->hook;
    SPF_dns_rr_t *rr;
    struct spf_dnsreq *r;

    (void)should_cache;
    if (domain == NULL || strlen(domain) > 253 || (r = spf_dns_ask(job, domain, type)) == NULL)
        return SPF_dns_rr_new_init(srv, domain ? domain : "", type, 0, TRY_AGAIN);
    if (r->st == PC_DNS_TRYLATER) {
        rr = SPF_dns_rr_new_init(srv, domain, type, 0, TRY_AGAIN);
    } else if (r->st == PC_DNS_NOTFOUND || r->n == 0) {
        if (type != ns_t_txt && type != ns_t_spf)
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
                if (l < skip || pc_dns_rdata_name(d + skip, l - skip, name, sizeof(name)) < 0)
                    continue;
                if (SPF_dns_rr_buf_realloc(rr, k, strlen(name) + 1) != SPF_E_SUCCESS)
                    goto fail;
                memcpy(rr->rr[k], name, strlen(name) + 1);
                break;
            }
            case ns_t_txt:
            case ns_t_spf: {
                char *txt = malloc(SPF_TXT_MAX);
                long n = txt ? pc_dns_rdata_txt(d, l, txt, SPF_TXT_MAX) : -1;
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
        SPF_i_done(resp,
                   err == SPF_E_NOT_SPF     ? SPF_RESULT_NONE
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
    /* libspf2's default explanation points at a defunct web site */
    SPF_server_set_explanation(srv, "%{i} is not allowed to send mail for %{o}", NULL);
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
    if (job->voids > SPF_MAX_VOID && job->result != SPF_R_TEMPERROR) {
        job->result = SPF_R_PERMERROR;
        snprintf(job->comment, sizeof(job->comment), "too many void lookups (RFC 7208 4.6.4)");
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
    return pc_pool_printf(s->pool,
                          "%s (%s: domain of %s %s %s) client-ip=%s; envelope-from=\"%s\"; "
                          "helo=%s; receiver=%s; identity=%s;",
                          r, job->receiver, who,
                          job->result == SPF_R_PASS   ? "designates"
                          : job->result == SPF_R_FAIL ? "does not designate"
                                                      : "gives result for",
                          s->client.addr, s->client.addr, job->helo_identity ? "" : who,
                          job->helo[0] ? job->helo : "unknown", job->receiver,
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
    job->dns = s->svc->dns;
    job->base = s->svc->base;
    job->guard_ms = 30000;
    job->ip = s->client.ip;
    snprintf(job->receiver, sizeof(job->receiver), "%s",
             s->svc->hostname ? s->svc->hostname : "localhost");
    if (s->helo && strlen(s->helo) < sizeof(job->helo) && pc_dns_hostname_ok(s->helo))
        snprintf(job->helo, sizeof(job->helo), "%s", s->helo);
    if (from->null || from->domain[0] == 0 || from->literal) {
        job->helo_identity = true;
        snprintf(job->domain, sizeof(job->domain), "%s", job->helo);
    } else {
        snprintf(job->sender, sizeof(job->sender), "%s", from->addr);
        if (strlen(from->domain) < sizeof(job->domain))
            snprintf(job->domain, sizeof(job->domain), "%s", from->domain);
    }
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
