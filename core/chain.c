/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	chain 3 - run a listener's filters over a stage
 * DESCRIPTION
 *	The runner keeps its position (stage, item, link) in the session so
 *	that a pending filter can resume exactly where it stopped. Reading
 *	from the client is the door's business: it stops while a stage is
 *	pending and starts again in stage_done().
 */
#include "core/chain.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/session.h"
#include "core/settings.h"
#include "core/txnlog.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/pool.h"

#define PC_BODY_CHUNK 65536

struct pc_chain_state {
    enum pc_stage stage;
    size_t item, link;
    bool pending, running;
    struct timespec t0; /* the stage started (for portcullis_stage_duration_seconds) */
    struct event *timer;
    char *chunk;
};

/* pc_on_error_parse - failure policy from text */
bool pc_on_error_parse(const char *s, enum pc_on_error *out)
{
    if (strcasecmp(s, "tempfail") == 0)
        *out = PC_ONERR_TEMPFAIL;
    else if (strcasecmp(s, "accept") == 0)
        *out = PC_ONERR_ACCEPT;
    else if (strcasecmp(s, "reject") == 0)
        *out = PC_ONERR_REJECT;
    else
        return false;
    return true;
}

/* state_free - pool cleanup for the runner state */
static void state_free(void *arg)
{
    struct pc_chain_state *st = arg;

    if (st->timer)
        event_free(st->timer);
    free(st->chunk);
}

/* pc_chain_attach - per-session filter contexts */
int pc_chain_attach(struct pc_session *s)
{
    const struct pc_chain *c = s->chain;

    s->run = pc_pool_zalloc(s->pool, sizeof(*s->run));
    pc_pool_cleanup(s->pool, state_free, s->run);
    s->fctx = pc_pool_zalloc(s->pool, (c->n ? c->n : 1) * sizeof(void *));
    for (size_t i = 0; i < c->n; i++) {
        const struct pc_filter_ops *ops = c->links[i].ops;
        if (ops->attach && ops->attach(s, c->links[i].conf, &s->fctx[i]) < 0) {
            pc_warn("%s: filter %s: attach failed", s->sid, ops->name);
            return -1;
        }
    }
    return 0;
}

/* pc_chain_reset - end of transaction */
static void pc_chain_reset(struct pc_session *s)
{
    const struct pc_chain *c = s->chain;

    for (size_t i = 0; i < c->n; i++)
        if (c->links[i].ops->reset)
            c->links[i].ops->reset(s, c->links[i].conf, s->fctx[i]);
}

/* cancel_pending - give up on the link that is waiting */
static void cancel_pending(struct pc_session *s)
{
    struct pc_chain_state *st = s->run;
    const struct pc_chain_link *l;

    if (!st->pending)
        return;
    st->pending = false;
    if (st->timer)
        evtimer_del(st->timer);
    l = &s->chain->links[st->link];
    if (l->ops->cancel)
        l->ops->cancel(s, l->conf, s->fctx[st->link]);
}

/* pc_chain_detach - end of session */
void pc_chain_detach(struct pc_session *s)
{
    const struct pc_chain *c = s->chain;

    if (s->run == NULL)
        return;
    cancel_pending(s);
    for (size_t i = 0; i < c->n; i++)
        if (c->links[i].ops->detach)
            c->links[i].ops->detach(s, c->links[i].conf, s->fctx[i]);
}

/* held_for_rcpt - a refusal the door keeps until RCPT (delay_reject) and logs there */
static bool held_for_rcpt(const struct pc_session *s, const struct pc_verdict *v)
{
    return s->holds_refusals && s->set && s->set->delay_reject && s->run->stage <= PC_STAGE_MAIL &&
           (v->action == PC_REJECT || v->action == PC_TEMPFAIL);
}

/* log_decision - one Postfix-style line per decision the client hears (core/txnlog.h) */
static void log_decision(struct pc_session *s, const struct pc_verdict *v, bool dry_run)
{
    char client[PC_HOSTNAME_MAX + 80];
    const char *qid = s->txn ? s->txn->id : "NOQUEUE";

    pc_metric_add(PC_M_VERDICTS, v->filter ? v->filter : "-",
                  dry_run ? "dry_run" : pc_action_name(v->action), 1);
    if (dry_run) {
        pc_txnlog_verdict(s, v, s->run->stage, "reject_warning");
    } else if (v->action == PC_ACCEPT) {
        /* Not a refusal: no "reject:"-style line that log tools would count. */
        struct pc_log_fields f = {.queue_id = s->txn ? s->txn->id : NULL,
                                  .client = client,
                                  .filter = v->filter,
                                  .rule = v->rule};
        snprintf(client, sizeof(client), "%s[%s]", s->client.name, s->client.addr);
        pc_logf(LOG_INFO, &f, "%s: %s: filter %s accepted%s%s at %s", qid, client,
                v->filter ? v->filter : "-", v->rule ? ", rule " : "", v->rule ? v->rule : "",
                pc_txnlog_stage(s, s->run->stage));
    } else if (!held_for_rcpt(s, v)) {
        pc_txnlog_verdict(s, v, s->run->stage, v->action == PC_DISCARD ? "discard" : "reject");
    }
}

/* settle - apply on_error, ACCEPT and dry-run; true when the verdict ends the stage */
static bool settle(struct pc_session *s, const struct pc_chain_link *l, struct pc_verdict *v)
{
    enum pc_stage stage = s->run->stage;

    if (v->filter == NULL)
        v->filter = l->ops->name;
    if (v->action == PC_ERROR) {
        switch (l->on_error) {
        case PC_ONERR_ACCEPT:
            pc_info("%s: %s: filter %s could not decide (%s); on_error=accept",
                    s->txn ? s->txn->id : "NOQUEUE", pc_stage_name(stage), v->filter,
                    v->text[0] ? v->text : "no reason");
            pc_verdict_clear(v);
            return false;
        case PC_ONERR_REJECT:
            v->action = PC_REJECT;
            if (v->code / 100 != 5)
                v->code = 0, v->enh.cls = 0;
            break;
        case PC_ONERR_TEMPFAIL:
            v->action = PC_TEMPFAIL;
            if (v->code / 100 != 4) {
                v->code = 451;
                v->enh = (struct pc_enh){4, 3, 0};
            }
            break;
        }
    }
    if (v->action == PC_CONTINUE)
        return false;
    if (v->action == PC_ACCEPT) {
        if (s->txn && stage >= PC_STAGE_MAIL)
            s->txn->accepted = true;
        else
            s->accepted = true;
        pc_verdict_finish(v, stage);
        log_decision(s, v, false);
        pc_verdict_clear(v);
        return false;
    }
    pc_verdict_finish(v, stage);
    if (s->chain->dry_run) {
        log_decision(s, v, true);
        pc_verdict_clear(v);
        return false;
    }
    if (v->action == PC_DISCARD && s->txn)
        s->txn->discard = true;
    log_decision(s, v, false);
    return true;
}

/* load_item - set the current header or body chunk; false when the stage is exhausted */
static bool load_item(struct pc_session *s)
{
    struct pc_chain_state *st = s->run;
    struct pc_txn *t = s->txn;

    if (st->stage == PC_STAGE_HEADER) {
        if (t == NULL || st->item >= t->msg.nhdrs)
            return false;
        t->cur_header = &t->msg.hdrs[st->item];
        t->cur_header_index = st->item;
        return true;
    }
    if (st->stage == PC_STAGE_BODY) {
        size_t off = st->item * PC_BODY_CHUNK;
        if (t == NULL || off >= t->msg.body_len)
            return false;
        if (st->chunk == NULL && (st->chunk = malloc(PC_BODY_CHUNK)) == NULL)
            pc_fatal("out of memory");
        ssize_t n = pc_msg_body_read(&t->msg, off, st->chunk, PC_BODY_CHUNK);
        if (n <= 0)
            return false;
        t->cur_body = st->chunk;
        t->cur_body_len = (size_t)n;
        t->cur_body_off = off;
        return true;
    }
    return st->item == 0;
}

/* stage_has_hooks - skip per-item iteration when nobody listens */
static bool stage_has_hooks(const struct pc_chain *c, enum pc_stage stage)
{
    for (size_t i = 0; i < c->n; i++)
        if (c->links[i].ops->stage[stage])
            return true;
    return false;
}

static void on_timeout(evutil_socket_t, short, void *);

/* run_loop - walk links and items from the saved position */
static enum pc_action run_loop(struct pc_session *s, struct pc_verdict *out)
{
    struct pc_chain_state *st = s->run;
    const struct pc_chain *c = s->chain;

    if (!stage_has_hooks(c, st->stage))
        goto done;
    while (load_item(s)) {
        for (; st->link < c->n; st->link++) {
            const struct pc_chain_link *l = &c->links[st->link];
            pc_stage_fn *hook = l->ops->stage[st->stage];
            bool skipped =
                (s->accepted || (s->txn && s->txn->accepted)) && !(l->ops->flags & PC_FILTER_GATE);
            if (hook == NULL || skipped)
                continue;
            pc_verdict_clear(out);
            out->filter = l->ops->name;
            out->action = hook(s, l->conf, s->fctx[st->link], out);
            if (out->action == PC_PENDING) {
                st->pending = true;
                if (st->timer == NULL)
                    st->timer = evtimer_new(s->svc->base, on_timeout, s);
                struct timeval tv = {l->timeout_ms / 1000, (l->timeout_ms % 1000) * 1000};
                evtimer_add(st->timer, &tv);
                return PC_PENDING;
            }
            if (settle(s, l, out))
                return out->action;
        }
        st->link = 0;
        st->item++;
    }
done:
    pc_verdict_clear(out);
    return PC_CONTINUE;
}

/* pc_chain_run - run one stage */
enum pc_action pc_chain_run(struct pc_session *s, enum pc_stage stage, struct pc_verdict *out)
{
    struct pc_chain_state *st = s->run;

    if (st->pending)
        pc_fatal("%s: chain run while a stage is pending", s->sid);
    st->stage = stage;
    st->item = 0;
    st->link = 0;
    st->running = true;
    clock_gettime(CLOCK_MONOTONIC, &st->t0);
    enum pc_action a = run_loop(s, out);
    st->running = false;
    if (a != PC_PENDING)
        pc_metric_observe(PC_M_STAGE_SECONDS, pc_stage_name(stage), pc_seconds_since(&st->t0));
    return a;
}

/* finish_async - continue after a pending link settled, then tell the door */
static void finish_async(struct pc_session *s, struct pc_verdict *v)
{
    struct pc_chain_state *st = s->run;
    const struct pc_chain_link *l = &s->chain->links[st->link];

    if (!settle(s, l, v)) {
        st->link++;
        st->running = true;
        enum pc_action a = run_loop(s, v);
        st->running = false;
        if (a == PC_PENDING)
            return;
    }
    pc_metric_observe(PC_M_STAGE_SECONDS, pc_stage_name(st->stage), pc_seconds_since(&st->t0));
    s->door->stage_done(s, st->stage, v);
}

/* pc_chain_resume - a pending filter answers */
void pc_chain_resume(struct pc_session *s, struct pc_verdict *v)
{
    struct pc_chain_state *st = s->run;

    if (!st->pending)
        pc_fatal("%s: resume without a pending filter", s->sid);
    if (st->running)
        pc_fatal("%s: filter resumed from inside its own hook", s->sid);
    st->pending = false;
    evtimer_del(st->timer);
    if (v->action == PC_PENDING)
        v->action = PC_ERROR;
    finish_async(s, v);
}

/* on_timeout - a pending filter took too long: cancel it, apply on_error */
static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct pc_session *s = arg;
    struct pc_chain_state *st = s->run;
    const struct pc_chain_link *l = &s->chain->links[st->link];
    struct pc_verdict v;

    (void)fd, (void)what;
    cancel_pending(s);
    pc_verdict_clear(&v); /* pc_verdict_set leaves rule alone: it was stack garbage in the log */
    pc_verdict_set(&v, PC_ERROR, 0, NULL, "%s check timed out", l->ops->name);
    v.filter = l->ops->name;
    finish_async(s, &v);
}

/* pc_txn_free - end of transaction: filters reset, memory released */
void pc_txn_free(struct pc_session *s)
{
    if (s->txn == NULL)
        return;
    if (s->run)
        pc_chain_reset(s);
    pc_pool_destroy(s->txn->pool);
    s->txn = NULL;
}

/* pc_session_free - end of session: transaction, filters, memory */
void pc_session_free(struct pc_session *s)
{
    if (s->txn)
        pc_txn_free(s);
    if (s->run)
        pc_chain_detach(s);
    if (s->set)
        pc_settings_unref(s->set);
    pc_pool_destroy(s->helo_pool);
    pc_pool_destroy(s->pool);
}
