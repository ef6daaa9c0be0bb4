/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	dkim_filter 3 - verify DKIM signatures; sign mail from trusted sources
 * DESCRIPTION
 *	The filter shell over filters/dkim.c (the libopendkim glue). At the
 *	end of the message the filter feeds the spooled headers to
 *	libopendkim. Keys are never looked up by the library itself: its key
 *	callback answers from the keys this job has been given, and otherwise
 *	says "try again", so dkim_eoh() returns DKIM_STAT_CBTRYAGAIN and the
 *	filter asks the shared resolver (core/dns.h) and returns
 *	PC_PENDING. It asks for every signature's key at once (the names come
 *	from libopendkim's prescreen callback), so several signatures cost one
 *	round trip. When all have answered, dkim_eoh() is called again (it is
 *	re-entrant after CBTRYAGAIN), and once every key is known the body is
 *	canonicalised and hashed on a worker thread (core/worker.h) from
 *	the job's own copy of the body, and the filter resumes the chain.
 *	Signing hashes on the loop (trusted, usually small, submissions).
 *
 *	RFC 8301: rsa-sha1 signatures and RSA keys shorter than min_key_bits
 *	never pass (result "policy"). Ed25519 (RFC 8463) is accepted when the
 *	library supports it (libopendkim 2.11 does).
 *
 *	Clients in mynetworks, authenticated clients and clients of a trusted
 *	listener are signed instead of verified, like OpenDKIM's
 *	InternalHosts: the key table names keys (name domain:selector:file),
 *	the signing table maps the From address or domain (a glob, first
 *	match wins) to a key name. Keys are read and checked at configure
 *	time, so a missing key is an error at portcullis -t.
 *
 *	Facts: dkim (summary), dkim_sig (one per signature), dkim_partial
 *	(l= shorter than the body), dkim_signed (what we signed), dkim_mode
 *	(sign or verify: how this filter saw the source).
 * SEE ALSO
 *	RFC 6376, RFC 8301, RFC 8463, RFC 8601, opendkim.conf(5) KeyTable and SigningTable
 */
#include <ctype.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/chain.h"
#include "core/filter.h"
#include "core/session.h"
#include "core/worker.h"
#include "filters/dkim.h"
#include "lib/authres.h"
#include "lib/log.h"
#include "lib/pool.h"

#define DKIM_NAME_MAX PC_DKIM_NAME_MAX
#define DKIM_TXT_MAX  PC_DKIM_TXT_MAX

/* ---- the filter ----------------------------------------------------------- */

struct dkim_keyent {
    char *name;
    struct pc_dkim_key *key;
};

struct dkim_signent {
    char *pattern;
    size_t key;
};

struct dkim_conf {
    struct dkim_lib *vlib, *slib;
    bool verify;
    unsigned min_key_bits;
    struct pc_cidr_list mynetworks;
    struct dkim_keyent *keys;
    size_t nkeys;
    struct dkim_signent *sigs;
    size_t nsigs;
    bool rh, rb;
};

struct dkim_task;
struct dkim_lookup;

struct dkim_ctx {
    struct pc_session *s;
    const struct dkim_conf *c;
    struct pc_dkimv *job;
    struct dkim_lookup *lookups; /* key lookups in flight, all at once */
    size_t inflight;
    struct dkim_task *task; /* body hashing on a worker */
};

/* One key lookup in flight; the answer is kept until all have arrived. */
struct dkim_lookup {
    struct dkim_ctx *x;
    struct pc_dns_query *q;
    char name[DKIM_NAME_MAX];
};

/* Owned by the worker until done() runs; x is NULL once the session gave up. */
struct dkim_task {
    struct pc_dkimv *job;
    struct dkim_ctx *x;
};

/* The filter's section as rows of the one configuration table (core/param.h). */
static const struct pc_param_row dkim_params[] = {
    {"dkim", "verify", PT_BOOL, "true", 0, 0, NULL,
     "verify signatures of mail from outside mynetworks"},
    {"dkim", "min_key_bits", PT_INT, "1024", 512, 16384, NULL,
     "shorter RSA keys do not verify (RFC 8301)"},
    {"dkim", "mynetworks", PT_LIST, "{127.0.0.0/8, ::1/128}", 0, 0, NULL,
     "clients whose mail is signed; unset: mynetworks"},
    {"dkim", "key_table", PT_LIST, "{}", 0, 0, NULL, "NAME DOMAIN:SELECTOR:KEYFILE entries"},
    {"dkim", "signing_table", PT_LIST, "{}", 0, 0, NULL, "SENDER-PATTERN KEYNAME entries"},
    {"dkim", "canonicalization", PT_STR, "relaxed/relaxed", 0, 0, NULL,
     "header/body canonicalization of signatures"},
    {"dkim", "oversign_headers", PT_LIST, "{From}", 0, 0, NULL,
     "headers signed once more than present"},
    {0}};

/* dkim_destroy - release configuration */
static void dkim_destroy(void *conf)
{
    struct dkim_conf *c = conf;

    if (c == NULL)
        return;
    pc_dkim_lib_free(c->vlib);
    pc_dkim_lib_free(c->slib);
    pc_cidr_list_free(&c->mynetworks);
    for (size_t i = 0; i < c->nkeys; i++) {
        free(c->keys[i].name);
        pc_dkim_key_free(c->keys[i].key);
    }
    free(c->keys);
    for (size_t i = 0; i < c->nsigs; i++)
        free(c->sigs[i].pattern);
    free(c->sigs);
    free(c);
}

/* canon_parse - "relaxed/simple" etc.; a single word applies to the header only (RFC 6376 3.5) */
static bool canon_parse(const char *v, bool *rh, bool *rb)
{
    char h[16] = "", b[16] = "simple";

    if (sscanf(v, "%15[a-z]/%15[a-z]", h, b) < 1)
        return false;
    if ((strcmp(h, "relaxed") != 0 && strcmp(h, "simple") != 0) ||
        (strcmp(b, "relaxed") != 0 && strcmp(b, "simple") != 0))
        return false;
    *rh = strcmp(h, "relaxed") == 0;
    *rb = strcmp(b, "relaxed") == 0;
    return true;
}

/* keytable_add - "name domain:selector:/path/to/key" */
static int keytable_add(struct dkim_conf *c, cfg_t *sec, const char *line, struct pc_err *err)
{
    char name[128], dom[256], sel[64], path[1024], full[PATH_MAX], e[300];
    const char *file;
    struct pc_dkim_key *k;

    if (sscanf(line, "%127s %255[^:]:%63[^:]:%1023s", name, dom, sel, path) != 4 ||
        !pc_domain_valid(dom, strlen(dom), false) || !pc_domain_valid(sel, strlen(sel), false)) {
        pc_err_set(err, sec, "dkim: key_table: bad entry \"%s\" (name domain:selector:keyfile)",
                   line);
        return -1;
    }
    for (size_t i = 0; i < c->nkeys; i++)
        if (strcmp(c->keys[i].name, name) == 0) {
            pc_err_set(err, sec, "dkim: key_table: key \"%s\" defined twice", name);
            return -1;
        }
    if ((file = pc_conf_path(sec, path, full, sizeof(full))) == NULL) {
        pc_err_set(err, sec, "dkim: key_table: key \"%s\": file name too long", name);
        return -1;
    }
    if ((k = pc_dkim_key_load(file, dom, sel, e, sizeof(e))) == NULL) {
        pc_err_set(err, sec, "dkim: key_table: key \"%s\": %s", name, e);
        return -1;
    }
    c->keys[c->nkeys].name = strdup(name);
    c->keys[c->nkeys++].key = k;
    return 0;
}

/* signtable_add - "pattern keyname" */
static int signtable_add(struct dkim_conf *c, cfg_t *sec, const char *line, struct pc_err *err)
{
    char pat[300], name[128];

    if (sscanf(line, "%299s %127s", pat, name) != 2) {
        pc_err_set(err, sec, "dkim: signing_table: bad entry \"%s\" (pattern keyname)", line);
        return -1;
    }
    for (size_t i = 0; i < c->nkeys; i++)
        if (strcmp(c->keys[i].name, name) == 0) {
            c->sigs[c->nsigs].pattern = strdup(pat);
            c->sigs[c->nsigs++].key = i;
            return 0;
        }
    pc_err_set(err, sec, "dkim: signing_table: \"%s\": no key named \"%s\" in key_table", pat,
               name);
    return -1;
}

/* dkim_configure - libraries, networks, keys */
static int dkim_configure(cfg_t *sec, void **out, struct pc_err *err)
{
    struct dkim_conf *c = calloc(1, sizeof(*c));
    long bits = cfg_getint(sec, "min_key_bits");
    unsigned nk = cfg_size(sec, "key_table"), ns = cfg_size(sec, "signing_table");
    unsigned no = cfg_size(sec, "oversign_headers");
    const char **over;

    if (c == NULL)
        return -1;
    pc_cidr_list_init(&c->mynetworks);
    *out = c;
    c->verify = cfg_getbool(sec, "verify");
    if (bits < 512 || bits > 16384) {
        pc_err_set(err, sec, "dkim: min_key_bits: %ld out of range 512..16384", bits);
        return -1;
    }
    c->min_key_bits = (unsigned)bits;
    if (!canon_parse(cfg_getstr(sec, "canonicalization"), &c->rh, &c->rb)) {
        pc_err_set(err, sec, "dkim: canonicalization: \"%s\" (relaxed|simple[/relaxed|simple])",
                   cfg_getstr(sec, "canonicalization"));
        return -1;
    }
    for (unsigned i = 0; i < cfg_size(sec, "mynetworks"); i++) {
        const char *n = cfg_getnstr(sec, "mynetworks", i);
        if (!pc_cidr_list_add(&c->mynetworks, n)) {
            pc_err_set(err, sec, "dkim: mynetworks: bad network \"%s\"", n);
            return -1;
        }
    }
    c->keys = calloc(nk + 1, sizeof(*c->keys));
    c->sigs = calloc(ns + 1, sizeof(*c->sigs));
    over = calloc(no + 1, sizeof(*over));
    if (c->keys == NULL || c->sigs == NULL || over == NULL) {
        free(over);
        return -1;
    }
    for (unsigned i = 0; i < nk; i++)
        if (keytable_add(c, sec, cfg_getnstr(sec, "key_table", i), err) < 0) {
            free(over);
            return -1;
        }
    for (unsigned i = 0; i < ns; i++)
        if (signtable_add(c, sec, cfg_getnstr(sec, "signing_table", i), err) < 0) {
            free(over);
            return -1;
        }
    for (unsigned i = 0; i < no; i++)
        over[i] = cfg_getnstr(sec, "oversign_headers", i);
    c->vlib = pc_dkim_verify_lib(c->min_key_bits);
    c->slib = pc_dkim_sign_lib(over, no);
    free(over);
    if (c->vlib == NULL || c->slib == NULL) {
        pc_err_set(err, sec, "dkim: cannot initialise libopendkim");
        return -1;
    }
    return 0;
}

/* dkim_attach - per-session context */
static int dkim_attach(struct pc_session *s, void *conf, void **ctx)
{
    struct dkim_ctx *x = pc_pool_zalloc(s->pool, sizeof(*x));

    x->s = s;
    x->c = conf;
    *ctx = x;
    return 0;
}

/* dkim_drop - cancel a lookup and free the job */
static void dkim_drop(struct dkim_ctx *x)
{
    for (size_t i = 0; x->lookups && i < PC_DKIM_MAX_SIGS; i++)
        if (x->lookups[i].q) {
            pc_dns_cancel(x->lookups[i].q);
            x->lookups[i].q = NULL;
        }
    x->inflight = 0;
    if (x->task) { /* the worker's done() frees it */
        x->task->x = NULL;
        x->task = NULL;
    }
    pc_dkimv_free(x->job);
    x->job = NULL;
}

/* dkim_reset - end of transaction */
static void dkim_reset(struct pc_session *s, void *conf, void *ctx)
{
    (void)s, (void)conf;
    dkim_drop(ctx);
}

/* dkim_cancel - the chain gave up on us */
static void dkim_cancel(struct pc_session *s, void *conf, void *ctx)
{
    (void)s, (void)conf;
    dkim_drop(ctx);
}

/* result_rank - which result summarises several signatures (best first) */
static int result_rank(const char *r)
{
    static const char *order[] = {"pass", "fail", "policy", "permerror", "temperror", "neutral"};

    for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
        if (strcmp(r, order[i]) == 0)
            return (int)i;
    return 99;
}

/* dkim_facts - publish the job's results */
static void dkim_facts(struct pc_session *s, const struct pc_dkimv *j)
{
    size_t n;
    const struct pc_dkim_result *r = pc_dkimv_results(j, &n);
    const char *best = "none";

    for (size_t i = 0; i < n; i++) {
        pc_fact_add(s, "dkim_sig", "%s d=%s s=%s a=%s%s%s", r[i].result,
                    r[i].domain[0] ? r[i].domain : "-", r[i].selector[0] ? r[i].selector : "-",
                    r[i].alg, r[i].reason[0] ? " reason=" : "", r[i].reason);
        if (r[i].partial_body)
            pc_fact_add(s, "dkim_partial", "d=%s l=%ld", r[i].domain, r[i].l);
        if (i == 0 || result_rank(r[i].result) < result_rank(best))
            best = r[i].result;
        pc_debug("%s: dkim: d=%s s=%s a=%s bits=%u l=%ld: %s %s", s->txn->id, r[i].domain,
                 r[i].selector, r[i].alg, r[i].key_bits, r[i].l, r[i].result, r[i].reason);
    }
    pc_fact_add(s, "dkim", "%s", best);
}

static void dkim_on_key(void *arg, enum pc_dns_status st, const struct pc_dns_answer *a);

static void dkim_work(void *arg);
static void dkim_done(void *arg);

/* dkim_step - run the job; PC_PENDING while a key is looked up or the body hashed */
static enum pc_action dkim_step(struct dkim_ctx *x)
{
    struct pc_session *s = x->s;
    enum pc_dkimv_state st;

    while ((st = pc_dkimv_run(x->job)) != PC_DKIMV_DONE) {
        if (st == PC_DKIMV_NEED_BODY) {
            struct dkim_task *t = malloc(sizeof(*t));
            if (t == NULL || pc_dkimv_snapshot(x->job) < 0) {
                free(t);
                pc_dkimv_body(x->job); /* on the loop after all */
                continue;
            }
            t->job = x->job;
            t->x = x;
            x->job = NULL;
            x->task = t;
            pc_worker_submit(s->svc->workers, dkim_work, dkim_done, t);
            return PC_PENDING;
        }
        /* NEED_KEY: ask for every key the signatures need, all at once. */
        const char *names[PC_DKIM_MAX_SIGS];
        size_t n = pc_dkimv_pending(x->job, names, PC_DKIM_MAX_SIGS);
        if (s->svc == NULL || s->svc->dns == NULL || n == 0) {
            pc_dkimv_key(x->job, PC_DNS_TRYLATER, NULL);
            continue;
        }
        if (x->lookups == NULL)
            x->lookups = pc_pool_zalloc(s->pool, PC_DKIM_MAX_SIGS * sizeof(*x->lookups));
        for (size_t i = 0; i < n; i++) {
            struct dkim_lookup *l = &x->lookups[i];
            l->x = x;
            pc_strlcpy(l->name, names[i], sizeof(l->name));
            l->q = NULL;
        }
        x->inflight = n;
        for (size_t i = 0; i < n; i++) {
            struct dkim_lookup *l = &x->lookups[i];
            l->q = pc_dns_lookup(s->svc->dns, l->name, PC_DNS_T_TXT, dkim_on_key, l);
            if (l->q == NULL) {
                pc_dkimv_answer(x->job, l->name, PC_DNS_TRYLATER, NULL);
                x->inflight--;
            }
        }
        if (x->inflight > 0)
            return PC_PENDING;
    }
    dkim_facts(s, x->job);
    pc_dkimv_free(x->job);
    x->job = NULL;
    return PC_CONTINUE;
}

/* dkim_work - on a worker thread: only the job, never the session */
static void dkim_work(void *arg)
{
    struct dkim_task *t = arg;

    pc_dkimv_body(t->job);
}

/* dkim_done - back on the loop: publish and resume, unless the session gave up */
static void dkim_done(void *arg)
{
    struct dkim_task *t = arg;
    struct dkim_ctx *x = t->x;
    struct pc_verdict v;

    if (x == NULL) {
        pc_dkimv_free(t->job);
        free(t);
        return;
    }
    x->task = NULL;
    x->job = t->job;
    free(t);
    if (dkim_step(x) == PC_PENDING)
        return;
    pc_verdict_clear(&v);
    pc_chain_resume(x->s, &v);
}

/* dkim_on_key - one key arrived; when the last one has, continue the job and resume */
static void dkim_on_key(void *arg, enum pc_dns_status st, const struct pc_dns_answer *a)
{
    struct dkim_lookup *l = arg;
    struct dkim_ctx *x = l->x;
    char *txt = NULL;
    struct pc_verdict v;

    l->q = NULL;
    if (st == PC_DNS_FOUND && a && a->n > 0) {
        /* RFC 6376 3.6.2.2: several records give undefined results; use the first valid one. */
        txt = malloc(DKIM_TXT_MAX);
        bool ok = false;
        for (size_t i = 0; txt && i < a->n && !ok; i++)
            ok = pc_dkim_txt_join(a->rr[i], a->rr_len[i], txt, DKIM_TXT_MAX);
        if (!ok)
            st = PC_DNS_NOTFOUND;
    } else if (st == PC_DNS_FOUND) {
        st = PC_DNS_NOTFOUND;
    }
    pc_dkimv_answer(x->job, l->name, st, txt);
    free(txt);
    if (--x->inflight > 0)
        return;
    if (dkim_step(x) == PC_PENDING)
        return;
    pc_verdict_clear(&v);
    pc_chain_resume(x->s, &v);
}

/* dkim_trusted - a source whose mail we sign rather than verify */
static bool dkim_trusted(const struct dkim_conf *c, const struct pc_session *s)
{
    return s->trusted || s->auth_user || pc_cidr_list_match(&c->mynetworks, &s->client.ip);
}

/* from_address - the single From address as "local@domain", lower-cased domain */
static bool from_address(struct pc_session *s, char *out, size_t size, char *dom, size_t dsize)
{
    const struct pc_msg *m = &s->txn->msg;
    ssize_t i = pc_msg_header_find(m, "From", 0);
    struct pc_from_domains fd = {0};
    char *v, *lt, *gt;

    if (i < 0 || pc_msg_header_find(m, "From", 1) >= 0)
        return false;
    pc_from_parse(m->hdrs[i].value, m->hdrs[i].value_len, &fd);
    if (fd.malformed || fd.n != 1 || fd.ndomain != 1)
        return false;
    pc_strlcpy(dom, fd.domain[0], dsize);
    v = pc_msg_header_value(m, (size_t)i, s->txn->pool);
    if ((lt = strrchr(v, '<')) != NULL && (gt = strchr(lt, '>')) != NULL) {
        *gt = 0;
        v = lt + 1;
    }
    while (isspace((unsigned char)*v))
        v++;
    pc_strlcpy(out, v, size);
    for (char *e = out + strlen(out); e > out && isspace((unsigned char)e[-1]);)
        *--e = 0;
    return true;
}

/* dkim_sign_msg - sign with the first signing-table match for the From address */
static void dkim_sign_msg(struct pc_session *s, const struct dkim_conf *c)
{
    char addr[512], dom[256], e[300];
    const struct dkim_signent *hit = NULL;

    if (c->nsigs == 0)
        return;
    if (!from_address(s, addr, sizeof(addr), dom, sizeof(dom))) {
        pc_info("%s: dkim: not signed: no single From address", s->txn->id);
        return;
    }
    for (size_t i = 0; i < c->nsigs && hit == NULL; i++) {
        const char *p = c->sigs[i].pattern;
        const char *subject = strchr(p, '@') ? addr : dom;
        if (fnmatch(p, subject, FNM_CASEFOLD) == 0)
            hit = &c->sigs[i];
    }
    if (hit == NULL)
        return;
    const struct pc_dkim_key *k = c->keys[hit->key].key;
    char *sig = pc_dkim_sign(c->slib, k, &s->txn->msg, s->txn->id, c->rh, c->rb, e, sizeof(e));
    if (sig == NULL) {
        pc_warn("%s: dkim: %s", s->txn->id, e);
        return;
    }
    pc_header_add(s, "DKIM-Signature", sig);
    pc_fact_add(s, "dkim_signed", "d=%s s=%s a=%s", pc_dkim_key_domain(k), pc_dkim_key_selector(k),
                pc_dkim_key_alg(k));
    free(sig);
}

/* dkim_filter_eom - sign for trusted sources, verify for the others */
static enum pc_action dkim_filter_eom(struct pc_session *s, void *conf, void *ctx,
                                      struct pc_verdict *v)
{
    const struct dkim_conf *c = conf;
    struct dkim_ctx *x = ctx;

    (void)v;
    if (s->txn == NULL)
        return PC_CONTINUE;
    if (dkim_trusted(c, s)) {
        pc_fact_add(s, "dkim_mode", "sign");
        dkim_sign_msg(s, c);
        return PC_CONTINUE;
    }
    if (!c->verify)
        return PC_CONTINUE;
    pc_fact_add(s, "dkim_mode", "verify");
    dkim_drop(x);
    x->job = pc_dkimv_new(c->vlib, &s->txn->msg, s->txn->id);
    if (x->job == NULL) {
        pc_verdict_set(v, PC_ERROR, 0, NULL, "DKIM verification unavailable");
        return PC_ERROR;
    }
    if (s->svc && s->svc->workers)
        pc_dkimv_defer_body(x->job);
    return dkim_step(x);
}

const struct pc_filter_ops pc_filter_dkim = {
    .name = "dkim",
    .abi = PC_FILTER_ABI,
    .params = dkim_params,
    .configure = dkim_configure,
    .destroy = dkim_destroy,
    .attach = dkim_attach,
    .reset = dkim_reset,
    .detach = dkim_reset,
    .cancel = dkim_cancel,
    .stage = {[PC_STAGE_EOM] = dkim_filter_eom},
};
