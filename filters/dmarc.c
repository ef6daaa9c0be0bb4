/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	dmarc 3 - DMARC policy of the From domain (libopendmarc)
 * DESCRIPTION
 *	At the end of the message, after the dkim filter and the SPF check
 *	have recorded their facts, the filter finds the author domain,
 *	looks up its policy record through the shared resolver (the From
 *	domain's _dmarc TXT, then the organizational domain's), and lets
 *	libopendmarc decide alignment and the policy to apply. DNS lookups are
 *	ours, never libopendmarc's: its own query function is synchronous.
 *
 *	The author domain must be unambiguous. Several From fields, or
 *	mailboxes of different domains, are refused (reject_multiple_from):
 *	evaluating one of them while the reader's program shows another is
 *	how OpenDMARC's CVE-2019-16378 was exploited. A From that cannot be
 *	parsed never crashes the parser (CVE-2021-34555) and yields
 *	dmarc=permerror, or a refusal with reject_malformed_from.
 *
 *	p=reject refuses with 550 5.7.1 (honor_reject), p=quarantine adds
 *	quarantine_header and the fact dmarc_quarantine (rules decide),
 *	p=none only records. pct= sampling applies the next milder policy to
 *	the messages outside the sample (RFC 7489 6.6.4).
 *
 *	libopendmarc keeps the public suffix list in process-wide state; it is
 *	read once (pthread_once), so changing public_suffix_list needs a
 *	restart, not a reload.
 * SEE ALSO
 *	RFC 7489, RFC 5322 section 3.6.2, RFC 8601
 */
#include "filters/dmarc.h"

#include <limits.h>
#include <ctype.h>
#include <opendmarc/dmarc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "filters/dkim.h"
#include "core/filter.h"
#include "core/session.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/pool.h"
#include "core/chain.h"

/* Not in dmarc.h, exported by libopendmarc 1.4: organizational domain via the PSL. */
int opendmarc_get_tld(u_char *domain, u_char *tld, size_t tld_len);

#define DMARC_DEFAULT_PSL "/usr/share/publicsuffix/public_suffix_list.dat"

/* ---- library state (process-wide in libopendmarc) ----------------------- */

static pthread_once_t dmarc_once = PTHREAD_ONCE_INIT;
static char dmarc_psl[1024];
static bool dmarc_psl_loaded;
static int dmarc_init_rc;

/* dmarc_init_once - libopendmarc's one-time setup */
static void dmarc_init_once(void)
{
    OPENDMARC_LIB_T lib;

    memset(&lib, 0, sizeof(lib));
    if (dmarc_psl[0] && access(dmarc_psl, R_OK) == 0) {
        lib.tld_type = OPENDMARC_TLD_TYPE_MOZILLA;
        pc_strlcpy((char *)lib.tld_source_file, dmarc_psl, sizeof(lib.tld_source_file));
        dmarc_psl_loaded = true;
    } else {
        lib.tld_type = OPENDMARC_TLD_TYPE_NONE;
    }
    dmarc_init_rc = opendmarc_policy_library_init(&lib) == DMARC_PARSE_OKAY ? 0 : -1;
}

/* pc_dmarc_library - initialise once; the first path given wins */
int pc_dmarc_library(const char *psl_path)
{
    if (dmarc_psl[0] == 0 && psl_path)
        pc_strlcpy(dmarc_psl, psl_path, sizeof(dmarc_psl));
    pthread_once(&dmarc_once, dmarc_init_once);
    return dmarc_init_rc;
}

/* pc_dmarc_org_domain - RFC 7489 3.2 organizational domain */
void pc_dmarc_org_domain(const char *domain, char *out, size_t size)
{
    const char *p, *last = NULL, *prev = NULL;

    if (dmarc_psl_loaded && opendmarc_get_tld((u_char *)domain, (u_char *)out, size) == 0 &&
        out[0]) {
        return;
    }
    /* Without a suffix list: the last two labels. */
    for (p = domain; (p = strchr(p, '.')) != NULL; p++) {
        prev = last;
        last = p;
    }
    pc_strlcpy(out, prev ? prev + 1 : domain, size);
}

/* ---- the From field --------------------------------------------------------- */

/* is_from - header named From, tolerating white space before the colon */
static bool is_from(const struct pc_header *h)
{
    size_t n = h->name_len;

    while (n > 0 && (h->name[n - 1] == ' ' || h->name[n - 1] == '\t'))
        n--;
    return n == 4 && strncasecmp(h->name, "From", 4) == 0;
}

/* pc_dmarc_from - author domain(s) of the message */
enum pc_from_status pc_dmarc_from(const struct pc_msg *m, struct pc_from_domains *fd)
{
    size_t fields = 0;

    memset(fd, 0, sizeof(*fd));
    for (size_t i = 0; i < m->nhdrs; i++) {
        const struct pc_header *h = &m->hdrs[i];
        if (!is_from(h))
            continue;
        fields++;
        pc_from_parse(h->value, h->value_len, fd);
    }
    if (fields > 1 || fd->ndomain > 1)
        return PC_FROM_MULTIPLE;
    if (fd->ndomain == 0)
        return PC_FROM_NONE;
    return fd->malformed ? PC_FROM_MALFORMED : PC_FROM_ONE;
}

/* pc_from_status_name - for facts and logs */
const char *pc_from_status_name(enum pc_from_status st)
{
    static const char *names[] = {"one", "none", "multiple", "malformed"};

    return names[st];
}

/* pc_dmarc_pick - RFC 7489 6.6.3: records not starting with v=DMARC1 are ignored;
 * more than one remaining means no policy */
const char *pc_dmarc_pick(const char *const *txt, size_t n)
{
    const char *found = NULL;

    for (size_t i = 0; i < n; i++) {
        const char *t = txt[i];
        if (strncmp(t, "v=DMARC1", 8) != 0 ||
            (t[8] != ';' && t[8] != ' ' && t[8] != '\t' && t[8] != 0))
            continue;
        if (found)
            return NULL;
        found = t;
    }
    return found;
}

/* dkim_outcome - RFC 8601 dkim result to libopendmarc's constant */
static int dkim_outcome(const char *r)
{
    if (strcmp(r, "pass") == 0)
        return DMARC_POLICY_DKIM_OUTCOME_PASS;
    if (strcmp(r, "temperror") == 0)
        return DMARC_POLICY_DKIM_OUTCOME_TMPFAIL;
    if (strcmp(r, "neutral") == 0 || strcmp(r, "none") == 0)
        return DMARC_POLICY_DKIM_OUTCOME_NONE;
    return DMARC_POLICY_DKIM_OUTCOME_FAIL;
}

/* spf_outcome - RFC 7208 result to libopendmarc's constant */
static int spf_outcome(const char *r)
{
    if (strcasecmp(r, "pass") == 0)
        return DMARC_POLICY_SPF_OUTCOME_PASS;
    if (strcasecmp(r, "fail") == 0 || strcasecmp(r, "softfail") == 0)
        return DMARC_POLICY_SPF_OUTCOME_FAIL;
    if (strcasecmp(r, "temperror") == 0)
        return DMARC_POLICY_SPF_OUTCOME_TMPFAIL;
    return DMARC_POLICY_SPF_OUTCOME_NONE;
}

/* bare - domain without a trailing dot, lower case, into buf */
static const char *bare(const char *d, char *buf, size_t size)
{
    size_t n = 0;

    for (; d[n] && n + 1 < size; n++)
        buf[n] = (char)tolower((unsigned char)d[n]);
    if (n > 0 && buf[n - 1] == '.')
        n--;
    buf[n] = 0;
    return buf;
}

/*
 * aligned - RFC 7489 3.1: strict means the same domain, relaxed the same
 * organizational domain. Computed here: libopendmarc 1.4.2's
 * opendmarc_policy_check_alignment() treats adkim=s like relaxed once a
 * public suffix list is loaded (mail.example.com "aligns" strictly with
 * example.com), which test_dmarc's eval_table catches.
 */
static bool aligned(const char *id, const char *from, int mode)
{
    char a[256], b[256], oa[256], ob[256];

    bare(id, a, sizeof(a));
    bare(from, b, sizeof(b));
    if (strcmp(a, b) == 0)
        return true;
    if (mode == DMARC_RECORD_A_STRICT)
        return false;
    pc_dmarc_org_domain(a, oa, sizeof(oa));
    pc_dmarc_org_domain(b, ob, sizeof(ob));
    return strcasecmp(oa, ob) == 0;
}

/* pc_dmarc_eval - parse the record with libopendmarc, then RFC 7489 6.6.2 */
int pc_dmarc_eval(const struct pc_dmarc_in *in, struct pc_dmarc_out *out)
{
    DMARC_POLICY_T *p;
    int rc = 0, pv = 0, sp = 0, adkim = 0, aspf = 0, pct = 100;

    memset(out, 0, sizeof(*out));
    out->pct = 100;
    out->result = "permerror";
    if (pc_dmarc_library(NULL) < 0)
        return -1;
    if (in->record == NULL) {
        out->result = "none";
        return 0;
    }
    p = opendmarc_policy_connect_init((u_char *)"0.0.0.0", DMARC_POLICY_IP_TYPE_IPV4);
    if (p == NULL)
        return -1;
    if (opendmarc_policy_store_from_domain(p, (u_char *)in->from_domain) != DMARC_PARSE_OKAY ||
        opendmarc_policy_store_dmarc(p, (u_char *)in->record, (u_char *)in->from_domain,
                                     (u_char *)in->org_domain) != DMARC_PARSE_OKAY ||
        opendmarc_policy_fetch_p(p, &pv) != DMARC_PARSE_OKAY || pv == DMARC_RECORD_P_UNSPECIFIED) {
        rc = -1;
        goto out;
    }
    opendmarc_policy_fetch_sp(p, &sp);
    opendmarc_policy_fetch_adkim(p, &adkim);
    opendmarc_policy_fetch_aspf(p, &aspf);
    if (opendmarc_policy_fetch_pct(p, &pct) == DMARC_PARSE_OKAY && pct >= 0 && pct <= 100)
        out->pct = pct;
    /* sp= governs subdomains: the record came from the organizational domain. */
    out->sp_used = in->org_domain && sp != DMARC_RECORD_P_UNSPECIFIED;
    out->policy = (char)(out->sp_used ? sp : pv);
    for (size_t i = 0; i < in->ndkim && i < PC_DMARC_MAX_DKIM; i++)
        if (dkim_outcome(in->dkim_result[i]) == DMARC_POLICY_DKIM_OUTCOME_PASS &&
            aligned(in->dkim_domain[i], in->from_domain, adkim))
            out->dkim_aligned = true;
    if (in->spf && spf_outcome(in->spf) == DMARC_POLICY_SPF_OUTCOME_PASS && in->spf_domain &&
        in->spf_domain[0])
        out->spf_aligned = aligned(in->spf_domain, in->from_domain, aspf);
    out->result = out->dkim_aligned || out->spf_aligned ? "pass" : "fail";
out:
    opendmarc_policy_connect_shutdown(p);
    return rc;
}

/* ---- the filter --------------------------------------------------------------- */

struct dmarc_conf {
    bool reject_multiple_from, reject_malformed_from, honor_reject, honor_pct;
    char *quarantine_header;
};

struct dmarc_ctx {
    struct pc_session *s;
    const struct dmarc_conf *c;
    struct pc_dns_query *q;
    char domain[256], org[256];
    bool asking_org;
};

/* The filter's section as rows of the one configuration table (core/param.h). */
static const struct pc_param_row dmarc_params[] = {
    {"dmarc", "reject_multiple_from", PT_BOOL, "true", 0, 0, NULL,
     "refuse a message with several From addresses"},
    {"dmarc", "reject_malformed_from", PT_BOOL, "false", 0, 0, NULL,
     "refuse a From without a usable domain"},
    {"dmarc", "honor_reject", PT_BOOL, "true", 0, 0, NULL, "apply p=reject"},
    {"dmarc", "honor_pct", PT_BOOL, "true", 0, 0, NULL, "apply pct= sampling"},
    {"dmarc", "quarantine_header", PT_STR, "X-DMARC-Quarantine", 0, 0, NULL,
     "header added for p=quarantine"},
    {"dmarc", "public_suffix_list", PT_STR, "", 0, 0, NULL,
     "the public suffix list file; empty: built in"},
    {0}};

/* dmarc_configure - options; the suffix list is checked here, read once */
static int dmarc_configure(cfg_t *sec, void **out, struct pc_err *err)
{
    struct dmarc_conf *c = calloc(1, sizeof(*c));
    char full[PATH_MAX];
    const char *psl = pc_conf_path(sec, cfg_getstr(sec, "public_suffix_list"), full, sizeof(full));
    const char *qh = cfg_getstr(sec, "quarantine_header");

    if (c == NULL)
        return -1;
    *out = c;
    c->reject_multiple_from = cfg_getbool(sec, "reject_multiple_from");
    c->reject_malformed_from = cfg_getbool(sec, "reject_malformed_from");
    c->honor_reject = cfg_getbool(sec, "honor_reject");
    c->honor_pct = cfg_getbool(sec, "honor_pct");
    c->quarantine_header = strdup(qh);
    for (const char *p = qh; *p; p++)
        if (*p <= ' ' || *p >= 127 || *p == ':') {
            pc_err_set(err, sec, "dmarc: quarantine_header: \"%s\" is not a field name", qh);
            return -1;
        }
    if (psl == NULL) {
        pc_err_set(err, sec, "dmarc: public_suffix_list: file name too long");
        return -1;
    }
    if (psl[0] && access(psl, R_OK) < 0) {
        pc_err_set(err, sec, "dmarc: public_suffix_list: cannot read \"%s\"", psl);
        return -1;
    }
    if (pc_dmarc_library(psl[0] ? psl : DMARC_DEFAULT_PSL) < 0) {
        pc_err_set(err, sec, "dmarc: cannot initialise libopendmarc");
        return -1;
    }
    return 0;
}

/* dmarc_destroy - release configuration */
static void dmarc_destroy(void *conf)
{
    struct dmarc_conf *c = conf;

    free(c->quarantine_header);
    free(c);
}

/* dmarc_attach - per-session context */
static int dmarc_attach(struct pc_session *s, void *conf, void **ctx)
{
    struct dmarc_ctx *x = pc_pool_zalloc(s->pool, sizeof(*x));

    x->s = s;
    x->c = conf;
    *ctx = x;
    return 0;
}

/* dmarc_drop - cancel a lookup */
static void dmarc_drop(struct pc_session *s, void *conf, void *ctx)
{
    struct dmarc_ctx *x = ctx;

    (void)s, (void)conf;
    if (x->q) {
        pc_dns_cancel(x->q);
        x->q = NULL;
    }
}

/* fill_in - DKIM and SPF results from the facts */
static void fill_in(struct pc_session *s, struct pc_dmarc_in *in, struct pc_pool *pool)
{
    const struct pc_fact *f = NULL;

    in->spf = pc_fact_get(s, "spf");
    in->spf_domain = pc_fact_get(s, "spf_domain");
    const char *ident = pc_fact_get(s, "spf_identity");
    in->spf_helo = ident && strcmp(ident, "helo") == 0;
    if (in->spf_domain == NULL && s->txn) {
        in->spf_domain = s->txn->from.domain;
        if (in->spf_domain == NULL || in->spf_domain[0] == 0) { /* null sender: HELO identity */
            in->spf_domain = s->helo;
            in->spf_helo = true;
        }
    }
    while ((f = pc_fact_next(s, "dkim_sig", f)) != NULL && in->ndkim < PC_DMARC_MAX_DKIM) {
        char r[32], d[256], sel[64];
        if (sscanf(f->value, "%31s d=%255s s=%63s", r, d, sel) != 3)
            continue;
        in->dkim_result[in->ndkim] = pc_pool_strdup(pool, r);
        in->dkim_domain[in->ndkim] = pc_pool_strdup(pool, d);
        in->dkim_selector[in->ndkim] = pc_pool_strdup(pool, sel);
        in->ndkim++;
    }
}

/* dmarc_decide - evaluate with the record found (or none) and make the verdict */
static enum pc_action dmarc_decide(struct dmarc_ctx *x, const char *record, struct pc_verdict *v)
{
    struct pc_session *s = x->s;
    const struct dmarc_conf *c = x->c;
    struct pc_dmarc_in in = {.from_domain = x->domain, .record = record};
    struct pc_dmarc_out out;
    const char *pname;
    char applied;

    if (x->asking_org)
        in.org_domain = x->org;
    fill_in(s, &in, s->txn->pool);
    if (pc_dmarc_eval(&in, &out) < 0) {
        pc_fact_add(s, "dmarc", "permerror");
        pc_fact_add(s, "dmarc_domain", "%s", x->domain);
        return PC_CONTINUE;
    }
    pc_fact_add(s, "dmarc", "%s", out.result);
    pc_fact_add(s, "dmarc_domain", "%s", x->domain);
    if (record == NULL)
        return PC_CONTINUE;
    applied = out.policy;
    /* RFC 7489 6.6.4: outside the pct= sample, apply the next milder policy. */
    if (strcmp(out.result, "fail") == 0 && c->honor_pct && out.pct < 100 &&
        (int)arc4random_uniform(100) >= out.pct)
        applied =
            applied == DMARC_RECORD_P_REJECT ? DMARC_RECORD_P_QUARANTINE : DMARC_RECORD_P_NONE;
    pname = out.policy == DMARC_RECORD_P_REJECT       ? "reject"
            : out.policy == DMARC_RECORD_P_QUARANTINE ? "quarantine"
                                                      : "none";
    pc_fact_add(s, "dmarc_policy", "%s", pname);
    pc_info("%s: dmarc: header.from=%s result=%s p=%s%s dkim_aligned=%d spf_aligned=%d", s->txn->id,
            x->domain, out.result, pname, out.sp_used ? " (sp)" : "", out.dkim_aligned,
            out.spf_aligned);
    if (strcmp(out.result, "fail") != 0)
        return PC_CONTINUE;
    if (applied == DMARC_RECORD_P_REJECT && c->honor_reject) {
        pc_verdict_set(v, PC_REJECT, 550, "5.7.1", "Rejected by DMARC policy for %s (RFC 7489)",
                       x->domain);
        return PC_REJECT;
    }
    if (applied == DMARC_RECORD_P_REJECT || applied == DMARC_RECORD_P_QUARANTINE) {
        pc_fact_add(s, "dmarc_quarantine", "%s", x->domain);
        if (c->quarantine_header[0])
            pc_header_add(
                s, c->quarantine_header,
                pc_pool_printf(s->txn->pool, "policy=%s; header.from=%s", pname, x->domain));
    }
    return PC_CONTINUE;
}

static void dmarc_on_answer(void *arg, enum pc_dns_status st, const struct pc_dns_answer *a);

/* dmarc_ask - look up _dmarc.<name>; PC_PENDING, or a settled action */
static enum pc_action dmarc_ask(struct dmarc_ctx *x, const char *name, struct pc_verdict *v)
{
    struct pc_session *s = x->s;
    char q[300];

    snprintf(q, sizeof(q), "_dmarc.%s", name);
    if (s->svc && s->svc->dns &&
        (x->q = pc_dns_lookup(s->svc->dns, q, 16 /* TXT */, dmarc_on_answer, x)) != NULL)
        return PC_PENDING;
    pc_fact_add(s, "dmarc", "temperror");
    pc_fact_add(s, "dmarc_domain", "%s", x->domain);
    (void)v;
    return PC_CONTINUE;
}

/* dmarc_on_answer - a policy record (or none) arrived */
static void dmarc_on_answer(void *arg, enum pc_dns_status st, const struct pc_dns_answer *a)
{
    struct dmarc_ctx *x = arg;
    struct pc_session *s = x->s;
    struct pc_verdict v;
    enum pc_action act;
    const char *rec = NULL;

    x->q = NULL;
    pc_verdict_clear(&v);
    if (st == PC_DNS_TRYLATER) {
        pc_fact_add(s, "dmarc", "temperror");
        pc_fact_add(s, "dmarc_domain", "%s", x->domain);
        pc_chain_resume(s, &v);
        return;
    }
    if (st == PC_DNS_FOUND && a && a->n > 0) {
        size_t n = a->n < 8 ? a->n : 8;
        const char *txt[8];
        for (size_t i = 0; i < n; i++) {
            char *t = pc_pool_alloc(s->txn->pool, 4096);
            txt[i] = pc_dkim_txt_join(a->rr[i], a->rr_len[i], t, 4096) ? t : "";
        }
        rec = pc_dmarc_pick(txt, n);
    }
    if (rec == NULL && !x->asking_org) {
        /* RFC 7489 6.6.3: fall back to the organizational domain. */
        pc_dmarc_org_domain(x->domain, x->org, sizeof(x->org));
        if (strcasecmp(x->org, x->domain) != 0) {
            x->asking_org = true;
            if (dmarc_ask(x, x->org, &v) == PC_PENDING)
                return;
            pc_chain_resume(s, &v);
            return;
        }
    }
    act = dmarc_decide(x, rec, &v);
    if (act == PC_CONTINUE)
        pc_verdict_clear(&v);
    pc_chain_resume(s, &v);
}

/* dmarc_eom - find the author domain, then its policy */
static enum pc_action dmarc_eom(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    const struct dmarc_conf *c = conf;
    struct dmarc_ctx *x = ctx;
    struct pc_from_domains fd;
    enum pc_from_status st;

    if (s->txn == NULL)
        return PC_CONTINUE;
    /* Our own outgoing mail (a source the dkim filter signs for, an authenticated
     * or trusted client) is not judged by its author domain's policy. */
    const char *mode = pc_fact_get(s, "dkim_mode");
    if (s->trusted || s->auth_user || (mode && strcmp(mode, "sign") == 0))
        return PC_CONTINUE;
    st = pc_dmarc_from(&s->txn->msg, &fd);
    x->asking_org = false;
    if (st != PC_FROM_ONE)
        pc_fact_add(s, "dmarc_from", "%s", pc_from_status_name(st));
    if ((st == PC_FROM_MULTIPLE && (c->reject_multiple_from || fd.ndomain != 1)) ||
        st == PC_FROM_NONE || (st == PC_FROM_MALFORMED && c->reject_malformed_from)) {
        pc_fact_add(s, "dmarc", "permerror");
        if (st == PC_FROM_MULTIPLE && c->reject_multiple_from) {
            pc_verdict_set(v, PC_REJECT, 550, "5.7.1",
                           "Multiple From addresses are not accepted (RFC 5322 3.6.2)");
            return PC_REJECT;
        }
        if (st != PC_FROM_MULTIPLE && c->reject_malformed_from) {
            pc_verdict_set(v, PC_REJECT, 550, "5.7.1", "Malformed or missing From address");
            return PC_REJECT;
        }
        return PC_CONTINUE;
    }
    pc_strlcpy(x->domain, fd.domain[0], sizeof(x->domain));
    return dmarc_ask(x, x->domain, v);
}

const struct pc_filter_ops pc_filter_dmarc = {
    .name = "dmarc",
    /* RFC 7489 4: the policy judges the alignment of both results. */
    .needs = (const char *const[]){"spf", "dkim", NULL},
    .abi = PC_FILTER_ABI,
    .params = dmarc_params,
    .configure = dmarc_configure,
    .destroy = dmarc_destroy,
    .attach = dmarc_attach,
    .reset = dmarc_drop,
    .detach = dmarc_drop,
    .cancel = dmarc_drop,
    .stage = {[PC_STAGE_EOM] = dmarc_eom},
};
