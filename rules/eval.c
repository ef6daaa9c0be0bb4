/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	eval 3 - evaluate compiled rules against a session
 * DESCRIPTION
 *	A test over a field with several values (recipients, headers of the
 *	same name, MIME parts, values of a fact) is true when some value
 *	passes it; "!=" and "!~" are the negation of that ("no value is").
 *	Text comparison with == and contains ignores case; regexes follow
 *	their own flags.
 *
 *	The MIME view and the raw body are read on first use and kept until
 *	the end-of-message verdict is known (pc_rules_release), or at the
 *	latest until the end of the transaction. A regex that hits its match
 *	or depth limit counts as not matching and is logged, never fatal.
 *
 *	The CPU budget is checked with the thread's CPU clock before every
 *	rule and every regex call, so one message costs at most its budget
 *	plus one call (itself bounded by the match limit). Once over, no
 *	action of the rule being evaluated is applied: its test results are
 *	no longer meaningful.
 */
#include <ctype.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/session.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/pool.h"
#include "rules/rules_int.h"

struct pc_rules_run {
    struct pc_mime *mime;
    pcre2_match_data *md;
    char *raw;
    size_t raw_len;
    bool raw_done;
    const struct rl_rule *rule; /* being evaluated, for log lines */
    uint64_t used_ns;           /* CPU spent on this message by finished stages */
    uint64_t t0;                /* thread CPU clock at the start of the running stage */
    uint64_t w0;                /* wall clock then */
    bool timing;                /* a header or body stage is running */
    bool over;                  /* budget exhausted or stopped: no more tests */
    atomic_bool stop;           /* pc_rules_stop() from another thread */
};

/* wall_ns - monotonic wall clock */
static uint64_t wall_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* cpu_ns - this thread's CPU time */
static uint64_t cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* stopped - told to stop by another thread (the evaluation was abandoned) */
static bool stopped(struct pc_rules_run *run)
{
    return atomic_load_explicit(&run->stop, memory_order_relaxed);
}

/* over_budget - has this message used its CPU budget (or been stopped) */
static bool over_budget(const struct pc_rules *rs, struct pc_rules_run *run)
{
    if (run->over || stopped(run))
        return true;
    if (!run->timing || rs->lim.cpu_budget_ms == 0)
        return false;
    uint64_t budget = (uint64_t)rs->lim.cpu_budget_ms * 1000000u;
    /* A thread's CPU time never exceeds the wall time it ran for, and the wall clock costs no
     * system call (vDSO), the thread CPU clock does: ask it only when it could be over. */
    if (run->used_ns + (wall_ns() - run->w0) <= budget)
        return false;
    uint64_t used = run->used_ns + (cpu_ns() - run->t0);
    return run->over = used > budget;
}

/* pc_rules_stop - another thread wants the evaluation to end soon (or no more: false) */
void pc_rules_stop(struct pc_rules_run *r, bool stop)
{
    atomic_store(&r->stop, stop);
}

/* pc_rules_charge - CPU spent for this message outside pc_rules_eval (a parse on a worker) */
void pc_rules_charge(struct pc_rules_run *r, uint64_t ns)
{
    r->used_ns += ns;
}

/* pc_rules_run_new - per-session state */
struct pc_rules_run *pc_rules_run_new(const struct pc_rules *rs)
{
    struct pc_rules_run *r = calloc(1, sizeof(*r));

    (void)rs;
    if (r == NULL || (r->md = pcre2_match_data_create(1, NULL)) == NULL)
        pc_fatal("out of memory");
    return r;
}

/* pc_rules_release - the verdict is known: the message's views are no longer needed */
void pc_rules_release(struct pc_rules_run *r)
{
    pc_mime_free(r->mime);
    r->mime = NULL;
    free(r->raw);
    r->raw = NULL;
    r->raw_len = 0;
}

/* pc_rules_run_reset - end of transaction */
void pc_rules_run_reset(struct pc_rules_run *r)
{
    pc_rules_release(r);
    r->raw_done = false;
    r->used_ns = 0;
    r->timing = r->over = false;
    atomic_store(&r->stop, false);
}

/* pc_rules_run_free - end of session */
void pc_rules_run_free(struct pc_rules_run *r)
{
    if (r == NULL)
        return;
    pc_rules_run_reset(r);
    pcre2_match_data_free(r->md);
    free(r);
}

/* txn_id - for log lines */
static const char *txn_id(const struct pc_session *s)
{
    return s->txn ? s->txn->id : s->sid;
}

/* pc_rules_needs_mime - does some body-stage rule read the MIME view */
bool pc_rules_needs_mime(const struct pc_rules *rs)
{
    return rs->needs_mime;
}

/* pc_rules_mime_limits - the limits a view for this set is parsed with */
const struct pc_mime_limits *pc_rules_mime_limits(const struct pc_rules *rs)
{
    return &rs->lim.mime;
}

/* pc_rules_set_mime - adopt a parsed view; its limits become facts */
void pc_rules_set_mime(struct pc_rules_run *run, struct pc_session *s, struct pc_mime *m)
{
    static const struct {
        unsigned bit;
        const char *name;
    } lims[] = {{PC_MIME_LIM_DEPTH, "depth"},
                {PC_MIME_LIM_PARTS, "parts"},
                {PC_MIME_LIM_TEXT, "text"},
                {PC_MIME_LIM_BUDGET, "budget"}};

    pc_mime_free(run->mime);
    run->mime = m;
    /* Every limit reached is a value of the fact: a text limit must not hide a parts limit. */
    for (size_t i = 0; i < sizeof(lims) / sizeof(lims[0]); i++)
        if (m->limits & lims[i].bit)
            pc_fact_add(s, "mime.limit", "%s", lims[i].name);
    if (m->error)
        pc_fact_add(s, "mime.error", "unparsable");
    /* A parse cut short saw only part of the message: never a verdict from that. */
    if (m->limits & PC_MIME_LIM_BUDGET)
        run->over = true;
}

/* pc_rules_budget_left - milliseconds of CPU the message has left (at least 1) */
unsigned long pc_rules_budget_left(const struct pc_rules *rs, const struct pc_rules_run *run)
{
    uint64_t budget = (uint64_t)rs->lim.cpu_budget_ms * 1000000u;

    if (rs->lim.cpu_budget_ms == 0)
        return 0;
    if (run->used_ns >= budget)
        return 1;
    unsigned long ms = (unsigned long)((budget - run->used_ns) / 1000000u);
    return ms ? ms : 1;
}

/* pc_rules_mime - parse on first use; limits become facts */
static const struct pc_mime *pc_rules_mime(const struct pc_rules *rs, struct pc_rules_run *run,
                                           struct pc_session *s)
{
    if (run->mime || s->txn == NULL)
        return run->mime;
    pc_rules_set_mime(
        run, s,
        pc_mime_parse_live(&s->txn->msg, &rs->lim.mime, &run->stop, pc_rules_budget_left(rs, run)));
    return run->mime;
}

/* raw_body - the first max_text bytes of the body as received */
static void raw_body(const struct pc_rules *rs, struct pc_rules_run *run, struct pc_session *s)
{
    if (run->raw_done || s->txn == NULL)
        return;
    run->raw_done = true;
    size_t n = s->txn->msg.body_len;
    if (n > rs->lim.mime.max_text)
        n = rs->lim.mime.max_text;
    run->raw = malloc(n + 1);
    if (run->raw == NULL)
        pc_fatal("out of memory");
    ssize_t got = n ? pc_msg_body_read(&s->txn->msg, 0, run->raw, n) : 0;
    run->raw_len = got > 0 ? (size_t)got : 0;
    run->raw[run->raw_len] = 0;
}

/* contains_ci - case-insensitive substring search over bytes */
static bool contains_ci(const char *h, size_t hl, const char *n, size_t nl)
{
    if (nl == 0)
        return true;
    if (nl > hl)
        return false;
    int f0 = tolower((unsigned char)n[0]), f1 = toupper((unsigned char)n[0]);
    for (size_t i = 0; i + nl <= hl; i++) {
        if (h[i] != f0 && h[i] != f1)
            continue;
        size_t k = 1;
        while (k < nl && tolower((unsigned char)h[i + k]) == tolower((unsigned char)n[k]))
            k++;
        if (k == nl)
            return true;
    }
    return false;
}

/* domain_of - the part after the last @, for a domain list tested on an address */
static const char *domain_of(const char *v)
{
    const char *at = strrchr(v, '@');
    return at ? at + 1 : v;
}

/* test_str - one text value against a test */
static bool test_str(const struct pc_rules *rs, struct pc_rules_run *run, struct pc_session *s,
                     const struct rl_node *n, const char *v, size_t len)
{
    switch (n->op) {
    case RO_EXISTS:
        return true;
    case RO_EQ:
        return len == n->str_len && strncasecmp(v, n->str, len) == 0;
    case RO_CONTAINS:
        if (n->re) /* a literal (rules.c compile_literal): no backtracking to bound */
            return pcre2_match(n->re, (PCRE2_SPTR)v, len, 0, 0, run->md, NULL) >= 0;
        return contains_ci(v, len, n->str, n->str_len);
    case RO_IN_LIST:
        if (n->list->kind == RL_DOMAINS)
            return pc_rl_list_has(n->list, domain_of(v));
        return pc_rl_list_has(n->list, v);
    case RO_MATCH: {
        if (over_budget(rs, run))
            return false;
        if (n->nlits && !pc_rl_prefilter_pass(n, v, len, run->md))
            return false; /* none of the literals every match contains */
        int rc = pcre2_match(n->re, (PCRE2_SPTR)v, len, 0, 0, run->md, rs->mctx);
        if (rc >= 0)
            return true;
        if (rc != PCRE2_ERROR_NOMATCH) {
            PCRE2_UCHAR msg[120];
            pcre2_get_error_message(rc, msg, sizeof(msg));
            pc_warn("%s: rules: rule %s: regex on %s: %s; counted as no match", txn_id(s),
                    run->rule ? run->rule->name : "?", pc_rl_fields[n->field].name, (char *)msg);
            pc_fact_add(s, "rules.regex_error", "%s", run->rule ? run->rule->name : "?");
        }
        return false;
    }
    default:
        return false;
    }
}

/* test_num - one number against a test */
static bool test_num(const struct rl_node *n, double v)
{
    switch (n->op) {
    case RO_EXISTS:
        return true;
    case RO_EQ:
        return v == n->num;
    case RO_LT:
        return v < n->num;
    case RO_LE:
        return v <= n->num;
    case RO_GT:
        return v > n->num;
    case RO_GE:
        return v >= n->num;
    default:
        return false;
    }
}

#define STR(x) ((x) != NULL && test_str(rs, run, s, n, (x), strlen(x)))

/* rcpt_in_scope - at RCPT the current recipient; later those the transaction kept */
static bool rcpt_in_scope(const struct pc_txn *t, const struct pc_rcpt *r, enum pc_rstage stage)
{
    if (stage == PC_RS_RCPT)
        return r == t->cur_rcpt;
    return t->naccepted == 0 || (r->flags & PC_RCPT_ACCEPTED);
}

/* test_headers - every header of that name, decoded or raw */
static bool test_headers(const struct pc_rules *rs, struct pc_rules_run *run, struct pc_session *s,
                         const struct rl_node *n)
{
    const struct pc_msg *m = &s->txn->msg;

    for (int i = 0;; i++) {
        ssize_t k = pc_msg_header_find(m, n->arg, i);
        if (k < 0)
            return false;
        if (n->op == RO_EXISTS)
            return true;
        char *raw = pc_msg_header_value(m, (size_t)k, s->txn->pool);
        bool hit;
        if (n->field == RF_HEADER && strstr(raw, "=?")) {
            char *d = pc_mime_decode_header(raw);
            hit = STR(d);
            free(d);
        } else {
            hit = STR(raw);
        }
        if (hit)
            return true;
    }
}

/* test_field - does some value of the field pass */
static bool test_field(const struct pc_rules *rs, struct pc_rules_run *run, struct pc_session *s,
                       const struct rl_node *n, enum pc_rstage stage)
{
    const struct pc_txn *t = s->txn;
    const struct pc_mime *m;

    switch (n->field) {
    case RF_CLIENT_IP:
        if (s->client.salen == 0)
            return false;
        if (n->op == RO_IN_CIDR)
            return pc_cidr_match(&n->cidr, &s->client.ip);
        if (n->op == RO_IN_LIST)
            return pc_rl_list_has_ip(n->list, &s->client.ip);
        return STR(s->client.addr);
    case RF_CLIENT_NAME:
        return STR(s->client.name);
    case RF_CLIENT_PTR:
        return STR(s->client.ptr);
    case RF_HELO:
        return STR(s->helo);
    case RF_AUTH:
        return STR(s->auth_user);
    case RF_FROM:
        return t && STR(t->from.addr);
    case RF_FROM_LOCAL:
        return t && !t->from.null && STR(t->from.local);
    case RF_FROM_DOMAIN:
        return t && !t->from.null && STR(t->from.domain);
    case RF_RCPT:
    case RF_RCPT_LOCAL:
    case RF_RCPT_DOMAIN:
        for (size_t i = 0; t && i < t->nrcpt; i++) {
            const struct pc_rcpt *r = &t->rcpts[i];
            if (!rcpt_in_scope(t, r, stage))
                continue;
            const char *v = n->field == RF_RCPT         ? r->mb.addr
                            : n->field == RF_RCPT_LOCAL ? r->mb.local
                                                        : r->mb.domain;
            if (STR(v))
                return true;
        }
        return false;
    case RF_RCPT_COUNT:
        return t && test_num(n, (double)(stage == PC_RS_RCPT || t->naccepted == 0 ? t->nrcpt
                                                                                  : t->naccepted));
    case RF_SIZE:
        return t && test_num(n, (double)t->msg.size);
    case RF_HEADER:
    case RF_HEADER_RAW:
        return t && test_headers(rs, run, s, n);
    case RF_HEADERS:
        for (size_t i = 0; t && i < t->msg.nhdrs; i++) {
            const struct pc_header *h = &t->msg.hdrs[i];
            if (h->deleted)
                continue;
            char *v = pc_pool_printf(t->pool, "%.*s: %s", (int)h->name_len, h->name,
                                     pc_msg_header_value(&t->msg, i, t->pool));
            if (STR(v))
                return true;
        }
        return false;
    case RF_BODY:
        m = pc_rules_mime(rs, run, s);
        return m && test_str(rs, run, s, n, m->text, m->text_len);
    case RF_BODY_RAW:
        raw_body(rs, run, s);
        return run->raw && test_str(rs, run, s, n, run->raw, run->raw_len);
    case RF_PART_TYPE:
    case RF_PART_FILENAME:
    case RF_PART_SIZE:
    case RF_PART_ENCODING:
    case RF_PART_DISPOSITION:
    case RF_PART_CHARSET:
        m = pc_rules_mime(rs, run, s);
        for (size_t i = 0; m && i < m->nparts; i++) {
            const struct pc_mime_part *p = &m->parts[i];
            bool hit;
            switch (n->field) {
            case RF_PART_TYPE:
                hit = STR(p->type);
                break;
            case RF_PART_FILENAME:
                hit = STR(p->filename);
                break;
            case RF_PART_SIZE:
                hit = test_num(n, (double)p->size);
                break;
            case RF_PART_ENCODING:
                hit = p->encoding[0] && STR(p->encoding);
                break;
            case RF_PART_DISPOSITION:
                hit = p->disposition[0] && STR(p->disposition);
                break;
            default:
                hit = STR(p->charset);
                break;
            }
            if (hit)
                return true;
        }
        return false;
    case RF_MIME_PARTS:
        m = pc_rules_mime(rs, run, s);
        return m && test_num(n, (double)m->nparts);
    case RF_MIME_DEPTH:
        m = pc_rules_mime(rs, run, s);
        return m && test_num(n, (double)m->depth);
    case RF_FACT:
        if (strncmp(n->arg, "mime.", 5) == 0 && stage == PC_RS_BODY)
            pc_rules_mime(rs, run, s); /* its limits are facts */
        for (const struct pc_fact *f = pc_fact_next(s, n->arg, NULL); f;
             f = pc_fact_next(s, n->arg, f))
            if (STR(f->value))
                return true;
        return false;
    case RF_SCORE:
        return test_num(n, pc_score_total(s));
    default:
        return false;
    }
}

/* eval_node - the condition tree */
static bool eval_node(const struct pc_rules *rs, struct pc_rules_run *run, struct pc_session *s,
                      const struct rl_node *n, enum pc_rstage stage)
{
    switch (n->type) {
    case RN_AND:
        return eval_node(rs, run, s, n->a, stage) && eval_node(rs, run, s, n->b, stage);
    case RN_OR:
        return eval_node(rs, run, s, n->a, stage) || eval_node(rs, run, s, n->b, stage);
    case RN_NOT:
        return !eval_node(rs, run, s, n->a, stage);
    default:
        return test_field(rs, run, s, n, stage);
    }
}

/* remove_headers - mark every header of that name deleted */
static void remove_headers(struct pc_session *s, const char *name)
{
    ssize_t k;

    while (s->txn && (k = pc_msg_header_find(&s->txn->msg, name, 0)) >= 0)
        pc_header_remove(s, (size_t)k);
}

/* apply - one action; the decision for terminal actions */
static enum pc_action apply(struct pc_session *s, const char *who, const struct rl_action *a,
                            struct pc_verdict *v)
{
    switch (a->type) {
    case RA_SCORE:
        pc_score_add(s, "rules", who, a->score);
        return PC_CONTINUE;
    case RA_ADD_HEADER:
        pc_header_add(s, a->header, a->text);
        return PC_CONTINUE;
    case RA_REMOVE_HEADER:
        remove_headers(s, a->header);
        return PC_CONTINUE;
    case RA_ACCEPT:
        pc_verdict_set(v, PC_ACCEPT, 0, NULL, "Ok");
        return PC_ACCEPT;
    case RA_DISCARD:
        pc_verdict_set(v, PC_DISCARD, 0, NULL, "Ok");
        return PC_DISCARD;
    case RA_REJECT:
    case RA_TEMPFAIL:
        pc_verdict_set(v, a->type == RA_REJECT ? PC_REJECT : PC_TEMPFAIL, a->code, a->enh, "%s",
                       a->text);
        return v->action;
    }
    return PC_CONTINUE;
}

/* score_summary - "7.5 (rule_a=3.5, rule_b=4)", oldest symbol first */
static char *score_summary(struct pc_session *s, struct pc_pool *pool)
{
    const struct pc_symbol *lists[2] = {s->symbols, s->txn ? s->txn->symbols : NULL};
    char *out = pc_pool_printf(pool, "%g", pc_score_total(s));
    const char *sep = " (";

    for (int l = 0; l < 2; l++) {
        size_t n = 0, i;
        for (const struct pc_symbol *y = lists[l]; y; y = y->next)
            n++;
        const struct pc_symbol **v = pc_pool_alloc(pool, (n ? n : 1) * sizeof(*v));
        i = n;
        for (const struct pc_symbol *y = lists[l]; y; y = y->next)
            v[--i] = y;
        for (i = 0; i < n && strlen(out) < 900; i++) {
            out = pc_pool_printf(pool, "%s%s%s=%g", out, sep, v[i]->name, v[i]->score);
            sep = ", ";
        }
    }
    if (sep[0] == ',')
        out = pc_pool_printf(pool, "%s)", out);
    return out;
}

/* thresholds - map the total score to actions, highest decisive threshold wins */
static enum pc_action thresholds(const struct pc_rules *rs, struct pc_session *s,
                                 struct pc_verdict *v)
{
    double total = pc_score_total(s);
    const struct rl_threshold *decide = NULL;

    if (rs->score_header && s->txn)
        pc_header_add(s, rs->score_header, score_summary(s, s->txn->pool));
    for (size_t i = 0; i < rs->nthr && rs->thr[i].score <= total; i++) {
        const struct rl_threshold *t = &rs->thr[i];
        if (t->act.type == RA_ADD_HEADER)
            pc_header_add(s, t->act.header, t->act.text);
        else
            decide = t;
    }
    if (decide == NULL)
        return PC_CONTINUE;
    enum pc_action a = apply(s, "threshold", &decide->act, v);
    v->rule =
        s->txn ? pc_pool_printf(s->txn->pool, "score %g >= %g", total, decide->score) : "threshold";
    pc_info("%s: rules: score %g reached threshold %g: %s", txn_id(s), total, decide->score,
            pc_action_name(a));
    return a;
}

/* limit_verdict - fail closed: a message past a MIME limit that rules inspect */
static enum pc_action limit_verdict(const struct pc_rules *rs, struct pc_rules_run *run,
                                    struct pc_session *s, struct pc_verdict *v)
{
    const struct pc_mime *m = run->mime;

    if (m == NULL || !(m->limits & (PC_MIME_LIM_DEPTH | PC_MIME_LIM_PARTS)))
        return PC_CONTINUE;
    const char *which = (m->limits & PC_MIME_LIM_PARTS) ? "parts" : "depth";
    switch (rs->lim.mime_limit_action) {
    case PC_MLA_ACCEPT:
        return PC_CONTINUE;
    case PC_MLA_TEMPFAIL:
        pc_verdict_set(v, PC_TEMPFAIL, 451, "4.3.4",
                       "Message MIME structure exceeds the %s limit; it cannot be inspected",
                       which);
        break;
    case PC_MLA_REJECT:
        /* RFC 3463 X.3.4: the message is too big (here: too complex) for this system. */
        pc_verdict_set(v, PC_REJECT, 552, "5.3.4",
                       "Message MIME structure exceeds the %s limit; it cannot be inspected",
                       which);
        break;
    }
    v->rule = s->txn ? pc_pool_printf(s->txn->pool, "mime.limit=%s", which) : "mime.limit";
    pc_info("%s: rules: MIME %s limit reached: mime_limit_action=%s", txn_id(s), which,
            rs->lim.mime_limit_action == PC_MLA_REJECT ? "reject" : "tempfail");
    return v->action;
}

/* budget_verdict - the message used its CPU budget: could not decide */
static enum pc_action budget_verdict(const struct pc_rules *rs, struct pc_rules_run *run,
                                     struct pc_session *s, enum pc_rstage stage,
                                     struct pc_verdict *v)
{
    if (!stopped(run)) {
        pc_warn("%s: rules: CPU budget of %lu ms used up at %s (rule %s); not inspected further",
                txn_id(s), rs->lim.cpu_budget_ms, pc_rl_stage_name(stage),
                run->rule ? run->rule->name : "-");
        pc_fact_add(s, "rules.budget", "exceeded");
    }
    pc_verdict_set(v, PC_ERROR, 451, "4.3.0",
                   "Message could not be inspected in time; try again later");
    v->rule = "cpu_budget";
    return PC_ERROR;
}

/* stage_end - account the CPU a header or body stage used */
static enum pc_action stage_end(struct pc_rules_run *run, enum pc_action a)
{
    if (run->timing) {
        run->used_ns += cpu_ns() - run->t0;
        run->timing = false;
    }
    run->rule = NULL;
    return a;
}

/* pc_rules_eval - one stage */
enum pc_action pc_rules_eval(const struct pc_rules *rs, struct pc_rules_run *run,
                             struct pc_session *s, enum pc_rstage stage, struct pc_verdict *v)
{
    if (stage == PC_RS_HEADER || stage == PC_RS_BODY) {
        run->t0 = cpu_ns();
        run->w0 = wall_ns();
        run->timing = true;
    }
    /* Parse first: the limits are facts before any rule runs, and the budget covers it. */
    if (stage == PC_RS_BODY && rs->needs_mime)
        pc_rules_mime(rs, run, s);
    for (size_t i = 0; i < rs->nrules[stage]; i++) {
        const struct rl_rule *r = rs->rules[stage][i];
        run->rule = r;
        if (over_budget(rs, run))
            return stage_end(run, budget_verdict(rs, run, s, stage, v));
        bool hit = eval_node(rs, run, s, r->cond, stage);
        if (run->over || stopped(run))
            return stage_end(run, budget_verdict(rs, run, s, stage, v));
        if (!hit)
            continue;
        double score = 0;
        for (size_t k = 0; k < r->nact; k++)
            if (r->act[k].type == RA_SCORE)
                score += r->act[k].score;
        pc_fact_add(s, "rule", "%s", r->name);
        pc_metric_add(PC_M_RULE_HITS, r->name, NULL, 1);
        pc_info("%s: rules: rule %s matched at %s%s (score %g)", txn_id(s), r->name,
                pc_rl_stage_name(stage), r->log_only ? ", log-only: actions not applied" : "",
                score);
        if (r->log_only) {
            /* Doors that can say so without refusing (the policy door's WARN) look for it. */
            pc_fact_add(s, "rule.log_only", "%s", r->name);
            continue;
        }
        for (size_t k = 0; k < r->nact; k++) {
            enum pc_action a = apply(s, r->name, &r->act[k], v);
            if (a != PC_CONTINUE) {
                v->rule = r->name;
                return stage_end(run, a);
            }
        }
    }
    run->rule = NULL;
    if (over_budget(rs, run))
        return stage_end(run, budget_verdict(rs, run, s, stage, v));
    if (stage == PC_RS_BODY) {
        enum pc_action a = limit_verdict(rs, run, s, v);
        if (a != PC_CONTINUE)
            return stage_end(run, a);
        return stage_end(run, thresholds(rs, s, v));
    }
    return stage_end(run, PC_CONTINUE);
}
