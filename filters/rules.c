/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	rules 3 - the filter that runs the operator's rule files
 * DESCRIPTION
 *	configure() compiles every rule file named in "files" into one
 *	read-only rule set per configuration generation: a reload compiles
 *	the new files beside the old set, and sessions in flight keep the
 *	set of the generation they started under. Nothing here is global.
 *
 *	All compile errors are collected ("file:line:col: message"); as many
 *	as fit go into the configuration error that "portcullis -t" prints,
 *	the rest are logged.
 *
 *	Rules at stage header run at end of headers; rules at body, mime and
 *	eom, and then the score thresholds, run at end of message.
 *
 *	Those two stages read message content, and a hostile message can make
 *	them slow (a catastrophic regex over 999 headers, 100,000 nested
 *	multiparts), so they run on the worker pool and the loop keeps serving
 *	other clients (issue 13 section 5). The hook returns PC_PENDING; the
 *	worker, holding the job's lock (the loop leaves the session alone
 *	while the stage is pending), reads a one-part message's MIME view
 *	straight from the spool (pc_mime_parse_fast: linear, and it stops once
 *	cancelled), or else takes a private snapshot of the message
 *	(pc_mime_src_new) and lets go of the lock while GMime parses it; then,
 *	holding the lock again, it evaluates the rules against the session.
 *	Each message has a CPU budget (cpu_budget): past it the stage ends
 *	with PC_ERROR, i.e. on_error (tempfail by default). If the chain
 *	gives up first (timeout, client gone), cancel() tells the worker to
 *	stop and waits for it to let go of the session: at most one regex
 *	call, bounded by regex_match_limit, or one step of the fast path's
 *	read of the body. Without a worker pool (portcullis test) the stages
 *	run inline.
 *
 *	The end-of-message verdict known, the MIME view and the raw body are
 *	freed at once instead of at the end of the transaction (after the
 *	backend answered), so sessions waiting for the backend hold nothing.
 * SEE ALSO
 *	portcullis.rules(5), portcullis.conf(5)
 */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/filter.h"
#include "core/session.h"
#include "core/worker.h"
#include "lib/log.h"
#include "lib/parse.h"
#include "core/chain.h"
#include "rules/rules.h"
#include "filters/registry.h"

struct rules_conf {
    struct pc_rules *rules; /* NULL when no files are named */
};

struct rules_job;

/* pc_rules_filter_content_rules - rules at the header and body stages */
size_t pc_rules_filter_content_rules(const void *conf)
{
    const struct rules_conf *c = conf;

    if (c == NULL || c->rules == NULL)
        return 0;
    return pc_rules_count(c->rules, PC_RS_HEADER) + pc_rules_count(c->rules, PC_RS_BODY);
}

/* Per session. */
struct rules_ctx {
    struct pc_rules_run *run;
    struct rules_job *job; /* a stage on a worker, or NULL */
};

/* One header or body stage on a worker. Freed by job_done() on the loop. */
struct rules_job {
    pthread_mutex_t lock; /* held by the worker while it reads or changes the session */
    atomic_bool cancelled;
    struct pc_session *s;
    const struct pc_rules *rules;
    struct rules_ctx *x;
    enum pc_rstage stage;
    bool want_mime;          /* body stage: the rules read the MIME view */
    struct pc_mime_src *src; /* a snapshot of a message to parse, owned by the job */
    struct pc_mime *mime;    /* parsed, not yet handed to the run */
    struct pc_verdict v;
    enum pc_action a;
};

/* The filter's section as rows of the one configuration table (core/param.h). */
static const struct pc_param_row rules_params[] = {
    {"rules", "files", PT_LIST, "{}", 0, 0, NULL, "rule files, in order"},
    {"rules", "mime_max_depth", PT_INT, "20", 1, 1000, NULL, "MIME nesting parsed"},
    {"rules", "mime_max_parts", PT_INT, "1000", 1, 100000, NULL, "MIME parts parsed"},
    {"rules", "max_text_size", PT_INT, "1048576", 1024, 1073741824, NULL,
     "bytes of decoded text rules see"},
    {"rules", "regex_match_limit", PT_INT, "1000000", 1000, 1000000000, NULL, "PCRE2 match limit"},
    {"rules", "regex_depth_limit", PT_INT, "10000", 100, 1000000000, NULL, "PCRE2 depth limit"},
    {"rules", "mime_limit_action", PT_STR, "reject", 0, 0, NULL,
     "past a MIME limit: reject, tempfail or accept"},
    {"rules", "cpu_budget", PT_STR, "1s", 0, 0, NULL, "CPU time per message for the rules"},
    {0}};

struct rules_errs {
    struct pc_err *err;
    size_t used;
    int n, logged;
};

/* rules_errfn - collect one compile error */
static void rules_errfn(void *arg, const char *msg)
{
    struct rules_errs *e = arg;
    size_t len = strlen(msg);

    e->n++;
    /* Keep room for a final "... and N more" line. */
    if (e->logged == 0 && e->used + len + 2 < sizeof(e->err->msg) - 48) {
        if (e->used)
            e->err->msg[e->used++] = '\n';
        memcpy(e->err->msg + e->used, msg, len + 1);
        e->used += len;
        return;
    }
    e->logged++;
    pc_err("%s", msg);
}

/* int_opt - an integer option within bounds */
static bool int_opt(cfg_t *sec, const char *name, long min, long max, long *out, struct pc_err *err)
{
    long v = cfg_getint(sec, name);

    if (v < min || v > max) {
        pc_err_set(err, sec, "rules: %s = %ld is out of range [%ld, %ld]", name, v, min, max);
        return false;
    }
    *out = v;
    return true;
}

/* rules_configure - compile the rule files of this generation */
static int rules_configure(cfg_t *sec, void **out, struct pc_err *err)
{
    struct rules_conf *c = calloc(1, sizeof(*c));
    struct pc_rules_limits lim;
    long depth, parts, text, ml, dl;

    if (c == NULL)
        return -1;
    if (!int_opt(sec, "mime_max_depth", 1, 1000, &depth, err) ||
        !int_opt(sec, "mime_max_parts", 1, 100000, &parts, err) ||
        !int_opt(sec, "max_text_size", 1024, 1073741824L, &text, err) ||
        !int_opt(sec, "regex_match_limit", 1000, 1000000000L, &ml, err) ||
        !int_opt(sec, "regex_depth_limit", 100, 1000000000L, &dl, err)) {
        free(c);
        return -1;
    }
    lim.mime.max_depth = (unsigned)depth;
    lim.mime.max_parts = (unsigned)parts;
    lim.mime.max_text = (size_t)text;
    lim.match_limit = (unsigned long)ml;
    lim.depth_limit = (unsigned long)dl;
    lim.mime.skip = 0;
    const char *mla = cfg_getstr(sec, "mime_limit_action");
    if (strcasecmp(mla, "reject") == 0)
        lim.mime_limit_action = PC_MLA_REJECT;
    else if (strcasecmp(mla, "tempfail") == 0)
        lim.mime_limit_action = PC_MLA_TEMPFAIL;
    else if (strcasecmp(mla, "accept") == 0)
        lim.mime_limit_action = PC_MLA_ACCEPT;
    else {
        pc_err_set(err, sec,
                   "rules: mime_limit_action must be reject, tempfail or accept, not \"%s\"", mla);
        free(c);
        return -1;
    }
    unsigned long long budget;
    if (!pc_parse_duration(cfg_getstr(sec, "cpu_budget"), &budget) || budget < 10 ||
        budget > 3600000) {
        pc_err_set(err, sec, "rules: cpu_budget = \"%s\" must be a duration from 10ms to 1h",
                   cfg_getstr(sec, "cpu_budget"));
        free(c);
        return -1;
    }
    lim.cpu_budget_ms = (unsigned long)budget;
    size_t n = cfg_size(sec, "files");
    if (n == 0) {
        *out = c;
        return 0;
    }
    const char **files = calloc(n, sizeof(*files));
    char(*paths)[PATH_MAX] = calloc(n, sizeof(*paths));
    if (files == NULL || paths == NULL) {
        free(files);
        free(paths);
        free(c);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *f = cfg_getnstr(sec, "files", (unsigned)i);
        if ((files[i] = pc_conf_path(sec, f, paths[i], sizeof(paths[i]))) == NULL) {
            pc_err_set(err, sec, "rules: file name too long: %s", f);
            free(files);
            free(paths);
            free(c);
            return -1;
        }
    }
    struct rules_errs e = {.err = err};
    err->msg[0] = 0;
    c->rules = pc_rules_compile(files, n, &lim, rules_errfn, &e);
    free(files);
    free(paths);
    if (c->rules == NULL) {
        if (e.logged)
            snprintf(err->msg + e.used, sizeof(err->msg) - e.used,
                     "\n... and %d more errors (logged)", e.logged);
        else if (e.used == 0)
            pc_err_set(err, sec, "rules: the rule files did not compile");
        free(c); /* a failed configure leaves nothing behind */
        return -1;
    }
    *out = c;
    return 0;
}

/* rules_destroy - release a generation's rule set */
static void rules_destroy(void *conf)
{
    struct rules_conf *c = conf;

    pc_rules_free(c->rules);
    free(c);
}

/* rules_attach - per-session evaluation state */
static int rules_attach(struct pc_session *s, void *conf, void **ctx)
{
    struct rules_conf *c = conf;
    struct rules_ctx *x;

    (void)s;
    *ctx = NULL;
    if (c->rules == NULL)
        return 0;
    if ((x = calloc(1, sizeof(*x))) == NULL)
        return -1;
    x->run = pc_rules_run_new(c->rules);
    *ctx = x;
    return 0;
}

/* thread_ns - this thread's CPU time */
static uint64_t thread_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* job_free - release a job and what it still owns */
static void job_free(struct rules_job *job)
{
    pc_mime_src_free(job->src);
    pc_mime_free(job->mime);
    pthread_mutex_destroy(&job->lock);
    free(job);
}

/* job_view - holding the lock: a one-part message's view straight from the spool (bounded,
 * linear, and it checks the cancel flag), or else a snapshot to parse without the lock */
static void job_view(struct rules_job *job, uint64_t *parse_ns)
{
    const struct pc_msg *msg = &job->s->txn->msg;
    unsigned long budget = pc_rules_budget_left(job->rules, job->x->run);
    uint64_t t0 = thread_ns();

    job->mime = pc_mime_parse_fast(msg, pc_rules_mime_limits(job->rules), &job->cancelled, budget);
    if (job->mime == NULL) {
        job->src = pc_mime_src_new(msg);
        /* The parse stops (as if the input ended) past the budget or once cancelled, so an
         * abandoned or hostile message does not keep a worker busy for seconds. */
        pc_mime_src_budget(job->src, &job->cancelled, budget);
    }
    *parse_ns += thread_ns() - t0;
}

/* job_work - worker thread: the MIME view, then evaluate holding the lock */
static void job_work(void *arg)
{
    struct rules_job *job = arg;
    uint64_t parse_ns = 0;

    if (job->want_mime) {
        pthread_mutex_lock(&job->lock);
        if (!atomic_load(&job->cancelled))
            job_view(job, &parse_ns);
        pthread_mutex_unlock(&job->lock);
    }
    if (job->src && !atomic_load(&job->cancelled)) {
        uint64_t t0 = thread_ns();
        job->mime = pc_mime_parse_src(job->src, pc_rules_mime_limits(job->rules));
        parse_ns += thread_ns() - t0;
    }
    pthread_mutex_lock(&job->lock);
    if (!atomic_load(&job->cancelled)) {
        struct pc_rules_run *run = job->x->run;
        if (job->mime) {
            pc_rules_set_mime(run, job->s, job->mime);
            job->mime = NULL;
            pc_rules_charge(run, parse_ns);
        }
        job->a = pc_rules_eval(job->rules, run, job->s, job->stage, &job->v);
    }
    pthread_mutex_unlock(&job->lock);
}

/* job_done - loop thread: resume the chain with the stage's verdict */
static void job_done(void *arg)
{
    struct rules_job *job = arg;

    if (atomic_load(&job->cancelled)) { /* the session may be gone */
        job_free(job);
        return;
    }
    struct pc_session *s = job->s;
    struct rules_ctx *x = job->x;
    struct pc_verdict v = job->v;
    x->job = NULL;
    if (job->stage == PC_RS_BODY)
        pc_rules_release(x->run);
    if (job->a == PC_CONTINUE)
        pc_verdict_clear(&v);
    v.action = job->a;
    job_free(job);
    pc_chain_resume(s, &v);
}

/* rules_cancel - the chain gave up: stop the worker and wait until it leaves the session */
static void rules_cancel(struct pc_session *s, void *conf, void *ctx)
{
    struct rules_ctx *x = ctx;
    struct rules_job *job = x ? x->job : NULL;

    (void)s, (void)conf;
    if (job == NULL)
        return;
    atomic_store(&job->cancelled, true);
    pc_rules_stop(x->run, true);
    /* The worker holds the lock only while it evaluates, and checks the stop flag before
     * every rule and regex call: this waits for one call at most. */
    pthread_mutex_lock(&job->lock);
    pthread_mutex_unlock(&job->lock);
    x->job = NULL; /* job_done() frees it */
}

/* rules_reset - end of transaction: forget the message's MIME view */
static void rules_reset(struct pc_session *s, void *conf, void *ctx)
{
    struct rules_ctx *x = ctx;

    if (x == NULL)
        return;
    rules_cancel(s, conf, ctx);
    pc_rules_run_reset(x->run);
}

/* rules_detach - end of session */
static void rules_detach(struct pc_session *s, void *conf, void *ctx)
{
    struct rules_ctx *x = ctx;

    if (x == NULL)
        return;
    rules_cancel(s, conf, ctx);
    pc_rules_run_free(x->run);
    free(x);
}

/* run - one rule stage; the content stages on a worker when there is a pool */
static enum pc_action run(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v,
                          enum pc_rstage stage)
{
    struct rules_conf *c = conf;
    struct rules_ctx *x = ctx;

    if (c->rules == NULL || x == NULL)
        return PC_CONTINUE;
    bool content = stage == PC_RS_HEADER || stage == PC_RS_BODY;
    size_t n = pc_rules_count(c->rules, stage);
    if (stage != PC_RS_BODY && n == 0)
        return PC_CONTINUE;
    if (!content || n == 0 || s->svc == NULL || s->svc->workers == NULL || s->txn == NULL) {
        enum pc_action a = pc_rules_eval(c->rules, x->run, s, stage, v);
        if (stage == PC_RS_BODY)
            pc_rules_release(x->run);
        return a;
    }
    struct rules_job *job = calloc(1, sizeof(*job));
    if (job == NULL)
        return PC_ERROR;
    pthread_mutex_init(&job->lock, NULL);
    job->s = s;
    job->rules = c->rules;
    job->x = x;
    job->stage = stage;
    pc_verdict_clear(&job->v);
    job->want_mime = stage == PC_RS_BODY && pc_rules_needs_mime(c->rules);
    pc_rules_stop(x->run, false);
    x->job = job;
    pc_worker_submit(s->svc->workers, job_work, job_done, job);
    return PC_PENDING;
}

#define RULES_HOOK(fn, stage)                                                                      \
    static enum pc_action fn(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)    \
    {                                                                                              \
        return run(s, conf, ctx, v, stage);                                                        \
    }

/* rules_connect, rules_helo, ... - one hook per rule stage */
RULES_HOOK(rules_connect, PC_RS_CONNECT)
RULES_HOOK(rules_helo, PC_RS_HELO)
RULES_HOOK(rules_mail, PC_RS_MAIL)
RULES_HOOK(rules_rcpt, PC_RS_RCPT)
RULES_HOOK(rules_eoh, PC_RS_HEADER)
RULES_HOOK(rules_eom, PC_RS_BODY)

const struct pc_filter_ops pc_filter_rules = {
    .name = "rules",
    .abi = PC_FILTER_ABI,
    .params = rules_params,
    .configure = rules_configure,
    .destroy = rules_destroy,
    .attach = rules_attach,
    .reset = rules_reset,
    .detach = rules_detach,
    .cancel = rules_cancel,
    .stage = {[PC_STAGE_CONNECT] = rules_connect,
              [PC_STAGE_HELO] = rules_helo,
              [PC_STAGE_MAIL] = rules_mail,
              [PC_STAGE_RCPT] = rules_rcpt,
              [PC_STAGE_EOH] = rules_eoh,
              [PC_STAGE_EOM] = rules_eom},
};
