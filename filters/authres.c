/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	authres 3 - one Authentication-Results field with our authserv-id
 * DESCRIPTION
 *	This filter owns the Authentication-Results field, so that spf, dkim
 *	and dmarc each only record facts and the field is written once, from
 *	whatever checks ran. List it after them in the chain (it reads their
 *	facts at the end of the message): filters = {..., spf, dkim, dmarc,
 *	authres}.
 *
 *	Incoming fields that claim our authserv-id are forgeries or stale
 *	(RFC 8601 section 5) and are removed. Each field's own authserv-id is
 *	parsed and compared, and the field is marked deleted by its index in
 *	the spooled header array, so the removal cannot slip to a
 *	neighbouring field the way OpenDKIM's ordinal counting did
 *	(CVE-2022-48521). Fields of other ADMDs are kept.
 *
 *	It runs as a gate filter, also after another filter said ACCEPT (a
 *	whitelist rule must not let a forged field with our id through).
 *	The authserv-id defaults to the configured hostname.
 * SEE ALSO
 *	RFC 8601, RFC 7601 section 5, RFC 7489 section 11.2
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "filters/authres.h"
#include "core/filter.h"
#include "core/session.h"
#include "lib/authres.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/pool.h"

struct authres_conf {
    char *servid; /* NULL: the hostname */
};

/* The filter's section as rows of the one configuration table (core/param.h). */
static const struct pc_param_row authres_params[] = {
    {"authres", "authserv_id", PT_STR, "", 0, 0, NULL,
     "the authserv-id of Authentication-Results; empty: hostname"},
    {0}};

/* authres_configure - check the authserv-id */
static int authres_configure(cfg_t *sec, void **out, struct pc_err *err)
{
    struct authres_conf *c = calloc(1, sizeof(*c));
    const char *id = cfg_getstr(sec, "authserv_id");

    if (c == NULL)
        return -1;
    *out = c;
    for (const char *p = id; *p; p++)
        if (*p <= ' ' || *p >= 127 || strchr("()<>@,;:\\\"/[]?=", *p)) {
            pc_err_set(err, sec, "authres: authserv_id: \"%s\" is not a token (RFC 8601 2.2)", id);
            return -1;
        }
    c->servid = id[0] ? strdup(id) : NULL;
    return 0;
}

/* authres_destroy - release configuration */
static void authres_destroy(void *conf)
{
    struct authres_conf *c = conf;

    free(c->servid);
    free(c);
}

/* servid - ours, from the configuration or the hostname */
static const char *servid(const struct authres_conf *c, const struct pc_session *s, char *buf,
                          size_t size)
{
    if (c->servid)
        return c->servid;
    if (s->svc && s->svc->hostname && s->svc->hostname[0])
        return s->svc->hostname;
    if (gethostname(buf, size) < 0 || buf[0] == 0)
        pc_strlcpy(buf, "localhost", size);
    buf[size - 1] = 0;
    return buf;
}

/* is_authres - header named Authentication-Results (white space before the colon tolerated) */
static bool is_authres(const struct pc_header *h)
{
    static const char name[] = "Authentication-Results";
    size_t n = h->name_len;

    while (n > 0 && (h->name[n - 1] == ' ' || h->name[n - 1] == '\t'))
        n--;
    return n == sizeof(name) - 1 && strncasecmp(h->name, name, n) == 0;
}

/* pc_authres_remove_ours - delete incoming fields with our authserv-id; how many */
size_t pc_authres_remove_ours(struct pc_session *s, const char *id)
{
    struct pc_msg *m = &s->txn->msg;
    size_t removed = 0;
    char got[256];

    for (size_t i = 0; i < m->nhdrs; i++) {
        const struct pc_header *h = &m->hdrs[i];
        if (h->deleted || !is_authres(h))
            continue;
        if (pc_authres_servid(h->value, h->value_len, got, sizeof(got)) &&
            strcasecmp(got, id) == 0) {
            pc_header_remove(s, i);
            removed++;
        }
    }
    return removed;
}

/* comment - a reason safe inside an RFC 8601 comment */
static void comment(struct pc_buf *b, const char *reason)
{
    if (reason == NULL || reason[0] == 0)
        return;
    pc_buf_puts(b, " (");
    for (const char *p = reason; *p; p++)
        pc_buf_putc(b,
                    (*p == '(' || *p == ')' || *p == '\\' || (unsigned char)*p < ' ') ? ' ' : *p);
    pc_buf_putc(b, ')');
}

/* pvalue - a property value as a token, or else a quoted-string: a signature's
 * d= or s= is attacker-chosen and must not be able to forge another resinfo */
static void pvalue(struct pc_buf *b, const char *v)
{
    bool token = v[0] != 0;

    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr(".-_", *p))
            token = false;
    if (token) {
        pc_buf_puts(b, v);
        return;
    }
    pc_buf_putc(b, '"');
    for (const char *p = v; *p; p++) {
        if ((unsigned char)*p < ' ' || *p == 0x7f)
            continue;
        if (*p == '"' || *p == '\\')
            pc_buf_putc(b, '\\');
        pc_buf_putc(b, *p);
    }
    pc_buf_putc(b, '"');
}

/* pc_authres_value - the field value from the session's facts, pool-allocated */
char *pc_authres_value(struct pc_session *s, const char *id)
{
    struct pc_buf b;
    const struct pc_fact *f = NULL;
    const char *spf = pc_fact_get(s, "spf"), *dkim = pc_fact_get(s, "dkim");
    const char *dmarc = pc_fact_get(s, "dmarc");
    bool any = false;
    char *out;

    pc_buf_init(&b, 16384);
    pc_buf_puts(&b, id);
    if (spf) {
        const struct pc_txn *t = s->txn;
        pc_buf_puts(&b, ";\r\n\tspf=");
        pvalue(&b, spf);
        /* The domain only (RFC 8601 2.7.2 allows it): a quoted local part could
         * otherwise carry text that looks like another result. */
        const char *sd = pc_fact_get(s, "spf_domain"), *si = pc_fact_get(s, "spf_identity");
        if (sd && sd[0]) {
            pc_buf_puts(&b, si && strcmp(si, "helo") == 0 ? " smtp.helo=" : " smtp.mailfrom=");
            pvalue(&b, sd);
        } else if (t && t->from.domain && t->from.domain[0]) {
            pc_buf_puts(&b, " smtp.mailfrom=");
            pvalue(&b, t->from.domain);
        } else if (s->helo) {
            pc_buf_puts(&b, " smtp.helo=");
            pvalue(&b, s->helo);
        }
        any = true;
    }
    while ((f = pc_fact_next(s, "dkim_sig", f)) != NULL) {
        char r[32], d[256], sel[64], a[32];
        const char *reason = strstr(f->value, " reason=");
        if (sscanf(f->value, "%31s d=%255s s=%63s a=%31s", r, d, sel, a) != 4)
            continue;
        pc_buf_printf(&b, ";\r\n\tdkim=%s", r);
        comment(&b, reason ? reason + 8 : NULL);
        pc_buf_puts(&b, " header.d=");
        pvalue(&b, d);
        pc_buf_puts(&b, " header.s=");
        pvalue(&b, sel);
        pc_buf_puts(&b, " header.a=");
        pvalue(&b, a);
        any = true;
    }
    if (dkim && strcmp(dkim, "none") == 0) {
        pc_buf_puts(&b, ";\r\n\tdkim=none");
        any = true;
    }
    if (dmarc) {
        const char *pol = pc_fact_get(s, "dmarc_policy"), *dom = pc_fact_get(s, "dmarc_domain");
        pc_buf_printf(&b, ";\r\n\tdmarc=%s", dmarc);
        if (pol)
            pc_buf_printf(&b, " (p=%s)", pol);
        if (dom) {
            pc_buf_puts(&b, " header.from=");
            pvalue(&b, dom);
        }
        any = true;
    }
    if (!any)
        pc_buf_puts(&b, "; none");
    out = pc_pool_strndup(s->txn->pool, b.data, b.len);
    pc_buf_free(&b);
    return out;
}

/* authres_eom - remove forged fields, add ours */
static enum pc_action authres_eom(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)
{
    char buf[256];
    const char *id;
    size_t n;

    (void)ctx, (void)v;
    if (s->txn == NULL)
        return PC_CONTINUE;
    id = servid(conf, s, buf, sizeof(buf));
    if ((n = pc_authres_remove_ours(s, id)) > 0)
        pc_info("%s: authres: removed %zu Authentication-Results claiming \"%s\"", s->txn->id, n,
                id);
    pc_header_add(s, "Authentication-Results", pc_authres_value(s, id));
    return PC_CONTINUE;
}

const struct pc_filter_ops pc_filter_authres = {
    .name = "authres",
    /* RFC 8601: it reports their results, so it runs after those listed. */
    .after = (const char *const[]){"spf", "dkim", "dmarc", NULL},
    .abi = PC_FILTER_ABI,
    /* A gate: forged fields must go even when a rule has accepted the message. */
    .flags = PC_FILTER_GATE,
    .params = authres_params,
    .configure = authres_configure,
    .destroy = authres_destroy,
    .stage = {[PC_STAGE_EOM] = authres_eom},
};
