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
 * SEE ALSO
 *	portcullis.rules(5), portcullis.conf(5)
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "filters/filter.h"
#include "lib/log.h"
#include "rules/rules.h"

struct rules_conf {
    struct pc_rules *rules; /* NULL when no files are named */
};

static cfg_opt_t rules_opts[] = {
    CFG_STR_LIST("files", "{}", CFGF_NONE),
    CFG_INT("mime_max_depth", 20, CFGF_NONE),
    CFG_INT("mime_max_parts", 1000, CFGF_NONE),
    CFG_INT("max_text_size", 1048576, CFGF_NONE),
    CFG_INT("regex_match_limit", 1000000, CFGF_NONE),
    CFG_INT("regex_depth_limit", 10000, CFGF_NONE),
    CFG_END()};

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
static bool int_opt(cfg_t *sec, const char *name, long min, long max, long *out,
                    struct pc_err *err)
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

    (void)s;
    *ctx = c->rules ? pc_rules_run_new(c->rules) : NULL;
    return 0;
}

/* rules_reset - end of transaction: forget the message's MIME view */
static void rules_reset(struct pc_session *s, void *conf, void *ctx)
{
    (void)s, (void)conf;
    if (ctx)
        pc_rules_run_reset(ctx);
}

/* rules_detach - end of session */
static void rules_detach(struct pc_session *s, void *conf, void *ctx)
{
    (void)s, (void)conf;
    pc_rules_run_free(ctx);
}

/* run - one rule stage */
static enum pc_action run(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v,
                          enum pc_rstage stage)
{
    struct rules_conf *c = conf;

    if (c->rules == NULL || ctx == NULL)
        return PC_CONTINUE;
    if (stage != PC_RS_BODY && pc_rules_count(c->rules, stage) == 0)
        return PC_CONTINUE;
    return pc_rules_eval(c->rules, ctx, s, stage, v);
}

#define RULES_HOOK(fn, stage)                                                                     \
    static enum pc_action fn(struct pc_session *s, void *conf, void *ctx, struct pc_verdict *v)  \
    {                                                                                             \
        return run(s, conf, ctx, v, stage);                                                       \
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
    .opts = rules_opts,
    .configure = rules_configure,
    .destroy = rules_destroy,
    .attach = rules_attach,
    .reset = rules_reset,
    .detach = rules_detach,
    .stage = {[PC_STAGE_CONNECT] = rules_connect,
              [PC_STAGE_HELO] = rules_helo,
              [PC_STAGE_MAIL] = rules_mail,
              [PC_STAGE_RCPT] = rules_rcpt,
              [PC_STAGE_EOH] = rules_eoh,
              [PC_STAGE_EOM] = rules_eom},
};
