/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	milter 3 - the milter door: libmilter's callbacks fed to the transaction engine
 * DESCRIPTION
 *	A thin client of the transaction engine (gateway/engine.h), like the
 *	SMTP door: the MTA's milter stages become engine steps, the engine's
 *	outcomes become milter replies. libmilter calls back on its own
 *	threads, one per MTA connection, while the chain, the resolver and
 *	Redis live on the event loop; so each callback posts a job to the
 *	loop (a queue under a mutex and event_active on one event) and waits
 *	on its connection's condition variable for the answer. No filter ever
 *	runs off the loop. While the end-of-message stages work, the waiting
 *	callback calls smfi_progress so that the MTA's milter timeout does
 *	not fire on a slow DNS or Redis answer.
 *
 *	Stages: connect, helo, envfrom, envrcpt and data run their engine
 *	step at once. Header fields are collected in the door and fed to the
 *	engine's spool with the first body chunk or at the end of message
 *	(the engine runs the header, body and end-of-message stages at the
 *	end, as for the SMTP door). abort and close end the transaction and
 *	the session on the loop.
 *
 *	Macros become session facts: {client_addr}, {client_name},
 *	{client_ptr} fill the client; {auth_authen} the authenticated user;
 *	{tls_version} and {cipher} the TLS state; i (the MTA's queue id) is
 *	logged beside ours and kept as the fact mta_queue_id; j and
 *	{daemon_name} are the facts mta_hostname and mta_daemon. They are
 *	asked for with smfi_setsymlist, so the MTA's own macro lists need no
 *	change.
 *
 *	Replies: a refusal goes back with smfi_setreply carrying our code
 *	and enhanced code, so a tempfail reaches the MTA's client as 4xx and
 *	a rejection as 5xx; discard is SMFIS_DISCARD. Header edits the
 *	filters made are applied at the end of message: removed fields with
 *	smfi_chgheader by their index among the fields of that name (last
 *	first, so no index shifts), then added fields with smfi_insheader at
 *	the top, in the order the SMTP door writes them. Every failure on our
 *	side is a tempfail.
 *
 *	Negotiation asks only for what the chain needs: without a content
 *	filter the MTA sends neither header nor body; header, end-of-header
 *	and body callbacks are "no reply" steps.
 *
 *	Signals: libmilter's smfi_main starts a thread that sigwait()s for
 *	SIGHUP, SIGTERM and SIGINT and stops the milter on any of them.
 *	smfi_main runs in a thread of its own that blocks every signal; the
 *	main thread keeps them unblocked, and the kernel gives a signal sent
 *	to the process to the main thread when it can take it, so the event
 *	loop's handlers reload and drain as for the SMTP door (draining
 *	refuses new MTA connections at connect and lets the others finish;
 *	smfi_stop would drop them). Should
 *	libmilter's thread take one anyway, smfi_main returns: that is logged
 *	and the process drains and stops (a supervisor restarts it).
 * SEE ALSO
 *	libmilter (smfi_register, smfi_main, smfi_setreply, smfi_insheader,
 *	smfi_chgheader, smfi_progress, smfi_setsymlist), Postfix MILTER_README
 */
#include "gateway/milter.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <libmilter/mfapi.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/chain.h"
#include "core/filter.h"
#include "core/txnlog.h"
#include "gateway/conf.h"
#include "gateway/engine.h"
#include "gateway/milter_lines.h"
#include "gateway/smtp_proto.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/parse.h"
#include "lib/pool.h"

/* How long an end-of-message callback waits between two smfi_progress calls. */
#define ML_PROGRESS_SECONDS 5
/* The header section the door holds before the spool takes it (the MTA bounds it too). */
#define ML_HEADER_MAX (4u << 20)
#define ML_MACROS     8

enum ml_kind {
    ML_CONNECT,
    ML_HELO,
    ML_MAIL,
    ML_RCPT,
    ML_DATA,
    ML_FEED,
    ML_EOM,
    ML_ABORT,
    ML_CLOSE
};

/* A header edit for the end-of-message callback to apply. */
struct ml_edit {
    struct ml_edit *next;
    char *name, *value; /* value NULL: remove the index-th field of this name */
    int index;
};

/* One MTA connection. The callback thread fills the request, the loop the answer; the queue's
 * mutex orders the two (one job at a time: libmilter serialises a connection's callbacks). */
struct ml_conn {
    struct ml_conn *qnext;
    pthread_cond_t cv;
    bool done;
    enum ml_kind kind;
    /* request */
    char *arg;    /* HELO name, or the path of MAIL/RCPT */
    char *params; /* ESMTP parameters, space separated */
    char *macro[ML_MACROS][2];
    struct sockaddr_storage sa;
    socklen_t salen;
    char host[PC_HOSTNAME_MAX + 1];
    struct pc_buf in; /* content not yet fed: whole lines but the last */
    bool in_overflow; /* the header section passed ML_HEADER_MAX */
    bool leadspc;     /* SMFIP_HDR_LEADSPC: header values keep their leading space, both ways */
    unsigned long nr; /* the SMFIP_NR_* steps negotiated: those answer SMFIS_NOREPLY */
    /* answer */
    sfsistat rc;
    char rcode[4], xcode[16], text[PC_VERDICT_TEXT];
    struct ml_edit *edits;
    /* loop side */
    struct pc_session *s;
    struct pc_engine eng;
    unsigned eom_flags;
};

/* The door of this process (libmilter has one smfi_main per process, so one listener). */
static struct {
    pthread_mutex_t mu;
    struct ml_conn *qhead, **qtail;
    struct event *wake;
    bool need_content; /* the chain has header, body or end-of-message filters */
    /* loop only */
    struct pc_services *svc;
    struct pc_conf *conf; /* generation for new sessions (a reference) */
    char listener[128];
    size_t nsessions;
    bool stopping;
    void (*idle)(void *);
    void *idle_arg;
    pthread_t thread;
    bool running;
    bool failed; /* smfi_main returned without pc_milter_stop */
} ml = {.mu = PTHREAD_MUTEX_INITIALIZER};

static const struct pc_door ml_door = {.name = "milter", .stage_done = pc_engine_door_done};

/* ---- the loop side ---- */

/* ml_listener - this door's listener in a generation, or NULL */
static const struct pc_listener_conf *ml_listener(const struct pc_conf *conf)
{
    for (size_t i = 0; i < conf->nlisteners; i++)
        if (strcmp(conf->listeners[i].name, ml.listener) == 0)
            return &conf->listeners[i];
    return NULL;
}

/* chain_needs_content - does a link hook a stage the MTA's header and body feed */
static bool chain_needs_content(const struct pc_chain *ch)
{
    for (size_t i = 0; i < ch->n; i++)
        for (int st = PC_STAGE_HEADER; st <= PC_STAGE_EOM; st++)
            if (ch->links[i].ops->stage[st])
                return true;
    return false;
}

/* chain_has - is the filter called name a link of the chain */
static bool chain_has(const struct pc_chain *ch, const char *name)
{
    for (size_t i = 0; i < ch->n; i++)
        if (strcmp(ch->links[i].ops->name, name) == 0)
            return true;
    return false;
}

/* complete - the answer is ready: wake the waiting callback */
static void complete(struct ml_conn *c)
{
    pthread_mutex_lock(&ml.mu);
    c->done = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&ml.mu);
}

/* set_reply - a refusal as code, enhanced code and text, through the one reply writer (class
 * agreement, soft_bounce); TEMPFAIL or REJECT by the class of the code written */
static void set_reply(struct ml_conn *c, const struct pc_verdict *v)
{
    struct pc_buf out;
    struct pc_reply_opts o = {.soft_bounce = c->s && c->eng.conf->soft_bounce};
    char one[PC_VERDICT_TEXT];
    int code = v->code ? v->code : v->action == PC_TEMPFAIL ? 451 : 554;

    /* One line: the MTA's reply is single-line unless smfi_setmlreply, which we do not need. */
    pc_strlcpy(one, v->text[0] ? v->text : "Error: refused", sizeof(one));
    for (char *p = one; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    pc_buf_init(&out, 0);
    code = pc_reply_format(&out, code, &v->enh, one, &o);
    snprintf(c->rcode, sizeof(c->rcode), "%03d", code);
    const char *p = out.data + 4, *sp = strchr(p, ' ');
    size_t el = sp ? (size_t)(sp - p) : 0;
    snprintf(c->xcode, sizeof(c->xcode), "%.*s", (int)el, p);
    snprintf(c->text, sizeof(c->text), "%.*s", (int)(out.len - 4 - el - 1 - 2), sp ? sp + 1 : p);
    pc_buf_free(&out);
    c->rc = code / 100 == 4 ? SMFIS_TEMPFAIL : SMFIS_REJECT;
}

/* txn_end - the transaction is over: its log summary, filters reset, spool freed */
static void txn_end(struct ml_conn *c)
{
    if (c->s->txn == NULL)
        return;
    pc_txnlog_end(c->s);
    pc_txn_free(c->s);
    pc_engine_txn_end(&c->eng);
}

/* edit_add - queue one header edit for the callback */
static struct ml_edit **edit_add(struct ml_edit **tail, const char *name, size_t nl,
                                 const char *value, int index, bool leadspc)
{
    struct ml_edit *e = calloc(1, sizeof(*e));

    if (e == NULL || (e->name = strndup(name, nl)) == NULL)
        pc_fatal("out of memory");
    if (value) {
        /* Folding is "\n" plus white space in a milter header value (libmilter and Postfix
         * add the CR); a CR here would reach the queue file as a bare CR. */
        e->value = malloc(strlen(value) + 2);
        if (e->value == NULL)
            pc_fatal("out of memory");
        char *o = e->value;
        if (leadspc) /* the MTA writes "name:" and the value as we give it */
            *o++ = ' ';
        for (const char *p = value; *p; p++)
            if (*p != '\r')
                *o++ = *p;
        *o = 0;
    }
    e->index = index;
    *tail = e;
    return &e->next;
}

/* collect_edits - what the filters did to the header: removals (last first), then additions */
static void collect_edits(struct ml_conn *c)
{
    const struct pc_msg *m = &c->s->txn->msg;
    struct ml_edit **tail = &c->edits;

    for (size_t i = m->nhdrs; i-- > 0;) {
        const struct pc_header *h = &m->hdrs[i];
        if (!h->deleted)
            continue;
        int nth = 0; /* 1-based among the fields of this name, as smfi_chgheader counts */
        for (size_t k = 0; k <= i; k++)
            if (m->hdrs[k].name_len == h->name_len &&
                strncasecmp(m->hdrs[k].name, h->name, h->name_len) == 0)
                nth++;
        tail = edit_add(tail, h->name, h->name_len, NULL, nth, false);
    }
    int at = 0;
    for (const struct pc_hdr_add *a = m->added; a; a = a->next)
        tail = edit_add(tail, a->name, strlen(a->name), a->value, at++, c->leadspc);
}

/* spool_line - one decoded content line into the engine's spool */
static void spool_line(void *arg, char *line, size_t len)
{
    struct ml_conn *c = arg;

    if (pc_engine_line(&c->eng, line, len) < 0)
        c->s->txn->msg.io_error = true;
}

/* feed - the door's complete lines to the spool; with all, the last partial line too */
static void feed(struct ml_conn *c, bool all)
{
    pc_ml_lines(&c->in, all, &c->eom_flags, spool_line, c);
}

/* answer - an engine step's outcome as the milter reply */
static void answer(struct ml_conn *c, enum pc_stage st, enum pc_action a, struct pc_verdict *v)
{
    struct pc_txn *t = c->s->txn;

    c->rc = SMFIS_CONTINUE;
    if (st == PC_STAGE_RCPT && t && t->cur_rcpt) {
        if (a == PC_CONTINUE)
            pc_engine_rcpt_accepted(&c->eng);
        t->cur_rcpt = NULL;
    }
    if (a == PC_CONTINUE || a == PC_ACCEPT) {
        if (st == PC_STAGE_EOM) {
            const char *j = pc_fact_get(c->s, "mta_hostname"),
                       *qid = pc_fact_get(c->s, "mta_queue_id");
            struct pc_enh ok = {2, 0, 0};
            collect_edits(c);
            /* The MTA queues the message: our lines say who took it and under which id. */
            pc_txnlog_delivered(
                c->s, "milter", pc_pool_printf(t->pool, "%s[milter]", j ? j : "mta"), 250, &ok,
                pc_pool_printf(t->pool, "Ok: continued, MTA queue id %s", qid ? qid : "unknown"));
        }
    } else if (a == PC_DISCARD) {
        c->rc = SMFIS_DISCARD;
    } else {
        if (a == PC_DISCONNECT)
            v->action = PC_TEMPFAIL, v->code = 421;
        set_reply(c, v);
    }
    if (st == PC_STAGE_EOM)
        txn_end(c);
}

/* step_done - a pending engine step finished (from the loop) */
static void step_done(void *arg, enum pc_stage st, enum pc_action a, struct pc_verdict *v)
{
    struct ml_conn *c = arg;

    answer(c, st, a, v);
    complete(c);
}

/* take_macros - the MTA's macros of this stage into the session */
static void take_macros(struct ml_conn *c)
{
    struct pc_session *s = c->s;

    for (int i = 0; i < ML_MACROS && c->macro[i][0]; i++) {
        const char *n = c->macro[i][0], *v = pc_printable(c->macro[i][1]);
        if (strcmp(n, "{client_name}") == 0 && v[0] != '[')
            pc_strlcpy(s->client.name, v, sizeof(s->client.name));
        else if (strcmp(n, "{client_ptr}") == 0 && v[0] != '[')
            pc_strlcpy(s->client.ptr, v, sizeof(s->client.ptr));
        else if (strcmp(n, "{auth_authen}") == 0 && v[0])
            s->auth_user = pc_pool_strdup(s->pool, v);
        else if (strcmp(n, "{tls_version}") == 0 && v[0])
            s->tls = true, s->tls_info = pc_pool_strdup(s->pool, v);
        else if (strcmp(n, "{cipher}") == 0 && v[0] && s->tls_info)
            s->tls_info = pc_pool_printf(s->pool, "%s %s", s->tls_info, v);
        else if (strcmp(n, "i") == 0 && s->txn && v[0] && !pc_fact_get(s, "mta_queue_id")) {
            pc_fact_add(s, "mta_queue_id", "%s", v);
            pc_info("%s: milter: MTA queue id %s", s->txn->id, v);
        } else if (strcmp(n, "j") == 0)
            pc_fact_add(s, "mta_hostname", "%s", v);
        else if (strcmp(n, "{daemon_name}") == 0)
            pc_fact_add(s, "mta_daemon", "%s", v);
    }
}

/* client_from_macro - {client_addr} when the MTA gave no socket address (a unix socket) */
static void client_from_macro(struct ml_conn *c)
{
    for (int i = 0; i < ML_MACROS && c->macro[i][0]; i++) {
        struct sockaddr_in in = {.sin_family = AF_INET};
        struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
        const char *v = c->macro[i][1];
        if (strcmp(c->macro[i][0], "{client_addr}") != 0)
            continue;
        if (inet_pton(AF_INET, v, &in.sin_addr) == 1)
            pc_session_set_client(c->s, (struct sockaddr *)&in, sizeof(in));
        else if (inet_pton(AF_INET6, v, &in6.sin6_addr) == 1)
            pc_session_set_client(c->s, (struct sockaddr *)&in6, sizeof(in6));
    }
}

/* run_connect - a new session under the current generation, then the connect step */
static enum pc_action run_connect(struct ml_conn *c, struct pc_verdict *v)
{
    const struct pc_listener_conf *lc = ml_listener(ml.conf);

    if (ml.stopping || lc == NULL) {
        pc_verdict_set(v, PC_TEMPFAIL, 421, "4.3.2", "Error: service shutting down");
        return PC_TEMPFAIL;
    }
    c->s = pc_session_new(ml.svc, &ml.conf->core, lc->name, &lc->chain, &ml_door, &c->eng);
    c->s->trusted = lc->trusted;
    pc_engine_init(&c->eng, c->s, step_done, c);
    ml.nsessions++;
    if (c->sa.ss_family == AF_INET || c->sa.ss_family == AF_INET6)
        pc_session_set_client(c->s, (struct sockaddr *)&c->sa, c->salen);
    else
        client_from_macro(c);
    /* Postfix names an unverified client "[address]"; our "unknown" says the same. */
    if (c->host[0] && c->host[0] != '[')
        pc_strlcpy(c->s->client.name, pc_printable(c->host), sizeof(c->s->client.name));
    take_macros(c);
    pc_info("%s: milter: connect from %s[%s] to %s", c->s->sid, c->s->client.name,
            c->s->client.addr, lc->name);
    if (pc_chain_attach(c->s) < 0) {
        pc_verdict_set(v, PC_TEMPFAIL, 421, "4.3.0", "Error: temporary failure, try again later");
        return PC_TEMPFAIL;
    }
    return pc_engine_connect(&c->eng, v);
}

/* parse_path - "<addr>" from the MTA into a mailbox of the transaction's pool */
static bool parse_path(struct ml_conn *c, struct pc_mailbox *mb)
{
    size_t end;
    const char *p = c->arg ? c->arg : "";

    return pc_path_parse(p, strlen(p), c->s->txn->pool, mb, &end) == NULL;
}

/* run_mail - a new transaction: sender, its parameters, the MAIL step */
static enum pc_action run_mail(struct ml_conn *c, struct pc_verdict *v)
{
    txn_end(c); /* an MTA that skipped abort: the old transaction ends here */
    struct pc_txn *t = pc_txn_new(c->s);
    char *p = c->params ? c->params : "";

    take_macros(c);
    if (!parse_path(c, &t->from)) {
        pc_verdict_set(v, PC_REJECT, 501, "5.1.7", "Bad sender address syntax");
        return PC_REJECT;
    }
    t->mail_params = pc_pool_strdup(t->pool, pc_printable(p));
    for (char *w = strtok(p, " "); w; w = strtok(NULL, " ")) {
        if (strcasecmp(w, "SMTPUTF8") == 0)
            t->smtputf8 = true;
        else if (strcasecmp(w, "BODY=8BITMIME") == 0)
            t->body_8bit = true;
        else if (strncasecmp(w, "SIZE=", 5) == 0)
            t->size_param = strtoul(w + 5, NULL, 10);
    }
    return pc_engine_mail(&c->eng, v);
}

/* run_rcpt - one recipient the MTA accepted; its relay restrictions ran before it asked us */
static enum pc_action run_rcpt(struct ml_conn *c, struct pc_verdict *v)
{
    struct pc_txn *t = c->s->txn;
    struct pc_mailbox mb;

    take_macros(c);
    if (!parse_path(c, &mb)) {
        pc_verdict_set(v, PC_REJECT, 501, "5.1.3", "Bad recipient address syntax");
        return PC_REJECT;
    }
    t->cur_rcpt = pc_txn_add_rcpt(t, &mb, pc_pool_strdup(t->pool, c->params ? c->params : ""));
    /* The MTA decides relaying (Postfix: smtpd_relay_restrictions) and calls the milter only for a
     * recipient it accepted, so the engine's "relay required" is the MTA's here; a chain that
     * lists relay applies our relay rules as well (as the SMTP and policy doors do). */
    if (!chain_has(c->s->chain, "relay"))
        t->cur_rcpt->flags |= PC_RCPT_RELAY_OK;
    return pc_engine_rcpt(&c->eng, v);
}

/* run_helo - the HELO step; the MTA does not say HELO or EHLO: ESMTP is what MTAs speak */
static enum pc_action run_helo(struct ml_conn *c, struct pc_verdict *v)
{
    take_macros(c);
    c->s->helo = pc_pool_strdup(c->s->pool, pc_printable(c->arg ? c->arg : ""));
    c->s->esmtp = true;
    return pc_engine_helo(&c->eng, v);
}

/* run_data - the DATA step; the door's content buffer starts empty */
static enum pc_action run_data(struct ml_conn *c, struct pc_verdict *v)
{
    c->eom_flags = 0;
    c->in_overflow = false;
    pc_buf_reset(&c->in);
    if (!pc_engine_data_ready(&c->eng, v))
        return v->action;
    return pc_engine_data(&c->eng, v);
}

/* run_step - the engine step of a job; PC_PENDING: step_done answers later */
static enum pc_action run_step(struct ml_conn *c, struct pc_verdict *v)
{
    if (c->kind != ML_CONNECT && c->s == NULL) {
        pc_verdict_set(v, PC_TEMPFAIL, 451, "4.3.0", "Error: no session");
        return PC_TEMPFAIL;
    }
    if (c->kind >= ML_MAIL && c->kind <= ML_EOM && c->kind != ML_MAIL && c->s->txn == NULL) {
        pc_verdict_set(v, PC_TEMPFAIL, 451, "4.3.0", "Error: no transaction");
        return PC_TEMPFAIL;
    }
    switch (c->kind) {
    case ML_CONNECT:
        return run_connect(c, v);
    case ML_HELO:
        return run_helo(c, v);
    case ML_MAIL:
        return run_mail(c, v);
    case ML_RCPT:
        return run_rcpt(c, v);
    case ML_DATA:
        return run_data(c, v);
    case ML_FEED:
        feed(c, false);
        return PC_CONTINUE;
    default: /* ML_EOM */
        take_macros(c);
        feed(c, true);
        if (c->in_overflow)
            c->s->txn->msg.header_overflow = true;
        return pc_engine_eom(&c->eng, c->eom_flags, v);
    }
}

/* stage_of - the engine stage a job answers for */
static enum pc_stage stage_of(enum ml_kind k)
{
    static const enum pc_stage map[] = {PC_STAGE_CONNECT, PC_STAGE_HELO, PC_STAGE_MAIL,
                                        PC_STAGE_RCPT,    PC_STAGE_DATA, PC_STAGE_BODY,
                                        PC_STAGE_EOM};
    return map[k];
}

/* session_end - the MTA closed: free the session; the last one of a drain says idle */
static void session_end(struct ml_conn *c)
{
    if (c->s) {
        txn_end(c);
        pc_info("%s: milter: disconnect from %s[%s]", c->s->sid, c->s->client.name,
                c->s->client.addr);
        pc_session_free(c->s);
        c->s = NULL;
        ml.nsessions--;
    }
    if (ml.stopping && ml.nsessions == 0 && ml.idle)
        ml.idle(ml.idle_arg);
}

/* run_job - one callback's request, on the loop */
static void run_job(struct ml_conn *c)
{
    struct pc_verdict v;

    pc_verdict_clear(&v);
    if (c->kind == ML_ABORT || c->kind == ML_CLOSE) {
        if (c->kind == ML_ABORT && c->s)
            txn_end(c);
        else if (c->kind == ML_CLOSE)
            session_end(c);
        c->rc = SMFIS_CONTINUE;
        complete(c);
        return;
    }
    enum pc_action a = run_step(c, &v);
    if (a == PC_PENDING)
        return;
    if (c->s == NULL) { /* refused before a session existed */
        set_reply(c, &v);
    } else
        answer(c, stage_of(c->kind), a, &v);
    complete(c);
}

/* on_wake - run every queued job */
static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    for (;;) {
        pthread_mutex_lock(&ml.mu);
        struct ml_conn *c = ml.qhead;
        if (c) {
            ml.qhead = c->qnext;
            if (ml.qhead == NULL)
                ml.qtail = &ml.qhead;
        }
        pthread_mutex_unlock(&ml.mu);
        if (c == NULL)
            return;
        run_job(c);
    }
}

/* ---- libmilter's threads ---- */

/* wait_answer - until the loop answered; at the end of message, smfi_progress meanwhile */
static void wait_answer(SMFICTX *ctx, struct ml_conn *c, enum ml_kind kind)
{
    pthread_mutex_lock(&ml.mu);
    while (!c->done) {
        if (kind != ML_EOM) {
            pthread_cond_wait(&c->cv, &ml.mu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += ML_PROGRESS_SECONDS;
        if (pthread_cond_timedwait(&c->cv, &ml.mu, &ts) == ETIMEDOUT) {
            /* The chain still works (DNS, Redis): tell the MTA we are alive. */
            pthread_mutex_unlock(&ml.mu);
            smfi_progress(ctx);
            pthread_mutex_lock(&ml.mu);
        }
    }
    pthread_mutex_unlock(&ml.mu);
}

/* call - post the connection's job to the loop and wait for its answer */
static sfsistat call(SMFICTX *ctx, struct ml_conn *c, enum ml_kind kind)
{
    pthread_mutex_lock(&ml.mu);
    c->kind = kind;
    c->done = false;
    c->rc = SMFIS_TEMPFAIL;
    c->rcode[0] = 0;
    c->qnext = NULL;
    *ml.qtail = c;
    ml.qtail = &c->qnext;
    pthread_mutex_unlock(&ml.mu);
    event_active(ml.wake, EV_READ, 0);
    wait_answer(ctx, c, kind);
    if (c->rcode[0] && (c->rc == SMFIS_TEMPFAIL || c->rc == SMFIS_REJECT))
        smfi_setreply(ctx, c->rcode, c->xcode[0] ? c->xcode : NULL, c->text);
    return c->rc;
}

/* macros - copy the macros we asked for at this stage (libmilter's copies change per stage) */
static void macros(SMFICTX *ctx, struct ml_conn *c, const char *const *names)
{
    int n = 0;

    for (int i = 0; i < ML_MACROS; i++) {
        free(c->macro[i][0]);
        free(c->macro[i][1]);
        c->macro[i][0] = c->macro[i][1] = NULL;
    }
    for (; names && *names && n < ML_MACROS; names++) {
        const char *v = smfi_getsymval(ctx, (char *)*names);
        if (v == NULL)
            continue;
        c->macro[n][0] = strdup(*names);
        c->macro[n][1] = strndup(v, 512);
        if (c->macro[n][0] == NULL || c->macro[n][1] == NULL)
            pc_fatal("out of memory");
        n++;
    }
}

/* set_arg - the stage's argument and parameters, owned by the connection */
static void set_arg(struct ml_conn *c, const char *arg, char **argv)
{
    struct pc_buf p;

    free(c->arg);
    free(c->params);
    c->arg = strndup(arg ? arg : "", 1024);
    pc_buf_init(&p, 4096);
    for (size_t i = 0; argv && argv[i]; i++)
        pc_buf_printf(&p, "%s%s", i ? " " : "", argv[i]);
    pc_buf_putc(&p, 0);
    c->params = strdup(p.data ? p.data : "");
    pc_buf_free(&p);
    if (c->arg == NULL || c->params == NULL)
        pc_fatal("out of memory");
}

static const char *const ml_connect_macros[] = {
    "j", "{daemon_name}", "{client_addr}", "{client_name}", "{client_ptr}", NULL};
static const char *const ml_helo_macros[] = {"{tls_version}", "{cipher}", NULL};
static const char *const ml_mail_macros[] = {"i", "{auth_authen}", NULL};
static const char *const ml_rcpt_macros[] = {"i", NULL};
/* Postfix names its queue file at the first accepted RCPT (smtpd_delay_open_until_valid_rcpt):
 * "i" may be known only from there on. */
static const char *const ml_eom_macros[] = {"i", NULL};

/* conn_free - the connection's memory (its session is gone already) */
static void conn_free(struct ml_conn *c)
{
    macros(NULL, c, NULL);
    for (struct ml_edit *e = c->edits, *n; e; e = n) {
        n = e->next;
        free(e->name);
        free(e->value);
        free(e);
    }
    free(c->arg);
    free(c->params);
    pc_buf_free(&c->in);
    pthread_cond_destroy(&c->cv);
    free(c);
}

/* conn_new - the connection's state, made at negotiation (or at connect for an MTA that does
 * not negotiate) */
static struct ml_conn *conn_new(SMFICTX *ctx)
{
    struct ml_conn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        return NULL;
    pthread_cond_init(&c->cv, NULL);
    pc_buf_init(&c->in, 0);
    smfi_setpriv(ctx, c);
    return c;
}

/* xx_connect - a new MTA connection */
static sfsistat xx_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *sa)
{
    struct ml_conn *c = smfi_getpriv(ctx);

    if (c == NULL && (c = conn_new(ctx)) == NULL)
        return SMFIS_TEMPFAIL;
    pc_strlcpy(c->host, host ? host : "", sizeof(c->host));
    if (sa && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)) {
        c->salen =
            sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
        memcpy(&c->sa, sa, c->salen);
    }
    macros(ctx, c, ml_connect_macros);
    return call(ctx, c, ML_CONNECT);
}

/* conn - the connection of a callback, or NULL when connect failed */
static struct ml_conn *conn(SMFICTX *ctx)
{
    return smfi_getpriv(ctx);
}

/* xx_helo - HELO/EHLO */
static sfsistat xx_helo(SMFICTX *ctx, char *name)
{
    struct ml_conn *c = conn(ctx);

    if (c == NULL)
        return SMFIS_TEMPFAIL;
    set_arg(c, name, NULL);
    macros(ctx, c, ml_helo_macros);
    return call(ctx, c, ML_HELO);
}

/* xx_envfrom - MAIL FROM: argv[0] the path, then its ESMTP parameters */
static sfsistat xx_envfrom(SMFICTX *ctx, char **argv)
{
    struct ml_conn *c = conn(ctx);

    if (c == NULL)
        return SMFIS_TEMPFAIL;
    set_arg(c, argv[0], argv + 1);
    macros(ctx, c, ml_mail_macros);
    return call(ctx, c, ML_MAIL);
}

/* xx_envrcpt - RCPT TO */
static sfsistat xx_envrcpt(SMFICTX *ctx, char **argv)
{
    struct ml_conn *c = conn(ctx);

    if (c == NULL)
        return SMFIS_TEMPFAIL;
    set_arg(c, argv[0], argv + 1);
    macros(ctx, c, ml_rcpt_macros);
    return call(ctx, c, ML_RCPT);
}

/* xx_data - DATA */
static sfsistat xx_data(SMFICTX *ctx)
{
    struct ml_conn *c = conn(ctx);

    return c ? call(ctx, c, ML_DATA) : SMFIS_TEMPFAIL;
}

/* quiet - the answer of a content step: none if the MTA agreed to that (SMFIP_NR_*) */
static sfsistat quiet(const struct ml_conn *c, unsigned long step)
{
    return (c->nr & step) ? SMFIS_NOREPLY : SMFIS_CONTINUE;
}

/* content - append content bytes, folding turned into CRLF lines */
static void content(struct ml_conn *c, const char *p, size_t n)
{
    pc_ml_content(&c->in, p, n);
}

/* xx_header - one field, kept in the door until the body (no reply: SMFIP_NR_HDR) */
static sfsistat xx_header(SMFICTX *ctx, char *name, char *value)
{
    struct ml_conn *c = conn(ctx);

    if (c == NULL)
        return SMFIS_TEMPFAIL;
    size_t n = strlen(name), vl = strlen(value);
    if (c->in.len + n + vl + 4 > ML_HEADER_MAX) {
        c->in_overflow = true;
        return quiet(c, SMFIP_NR_HDR);
    }
    /* With SMFIP_HDR_LEADSPC the value keeps its leading space: the field as it was sent. */
    content(c, name, n);
    pc_buf_puts(&c->in, c->leadspc ? ":" : ": ");
    content(c, value, vl);
    content(c, "\r\n", 2);
    return quiet(c, SMFIP_NR_HDR);
}

/* xx_eoh - the separator line */
static sfsistat xx_eoh(SMFICTX *ctx)
{
    struct ml_conn *c = conn(ctx);

    if (c == NULL)
        return SMFIS_TEMPFAIL;
    content(c, "\r\n", 2);
    return quiet(c, SMFIP_NR_EOH);
}

/* xx_body - a body chunk: complete lines go to the spool on the loop */
static sfsistat xx_body(SMFICTX *ctx, unsigned char *p, size_t n)
{
    struct ml_conn *c = conn(ctx);

    if (c == NULL)
        return SMFIS_TEMPFAIL;
    pc_buf_append(&c->in, p, n);
    call(ctx, c, ML_FEED);
    return quiet(c, SMFIP_NR_BODY);
}

/* apply_edits - the filters' header edits, from the end-of-message callback */
static bool apply_edits(SMFICTX *ctx, struct ml_conn *c)
{
    bool ok = true;

    for (struct ml_edit *e = c->edits, *n; e; e = n) {
        n = e->next;
        int r = e->value ? smfi_insheader(ctx, e->index, e->name, e->value)
                         : smfi_chgheader(ctx, e->name, e->index, NULL);
        if (r != MI_SUCCESS && ok)
            pc_warn("milter: the MTA refused to %s %s #%d", e->value ? "insert" : "remove", e->name,
                    e->index);
        ok = ok && r == MI_SUCCESS;
        free(e->name);
        free(e->value);
        free(e);
    }
    c->edits = NULL;
    return ok;
}

/* xx_eom - the end of the message: the engine's verdict, then the header edits */
static sfsistat xx_eom(SMFICTX *ctx)
{
    struct ml_conn *c = conn(ctx);

    if (c == NULL)
        return SMFIS_TEMPFAIL;
    macros(ctx, c, ml_eom_macros);
    sfsistat rc = call(ctx, c, ML_EOM);
    if (!apply_edits(ctx, c) && rc == SMFIS_CONTINUE) {
        /* Delivering without our Authentication-Results or with a forged one left in would be
         * worse than a retry. */
        smfi_setreply(ctx, "451", "4.3.0", "Error: header edit failed, try again later");
        return SMFIS_TEMPFAIL;
    }
    return rc;
}

/* xx_abort - the MTA dropped the transaction (RSET, or it refused it elsewhere) */
static sfsistat xx_abort(SMFICTX *ctx)
{
    struct ml_conn *c = conn(ctx);

    if (c)
        call(ctx, c, ML_ABORT);
    return SMFIS_CONTINUE;
}

/* xx_close - the MTA connection ends: the session goes on the loop, the memory here */
static sfsistat xx_close(SMFICTX *ctx)
{
    struct ml_conn *c = conn(ctx);

    if (c == NULL)
        return SMFIS_CONTINUE;
    call(ctx, c, ML_CLOSE);
    smfi_setpriv(ctx, NULL);
    conn_free(c);
    return SMFIS_CONTINUE;
}

/* symlist - ask for the macros of one stage (the MTA's defaults lack some) */
static void symlist(SMFICTX *ctx, int where, const char *const *names)
{
    char list[256] = "";

    for (; *names; names++)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", list[0] ? " " : "",
                 *names);
    smfi_setsymlist(ctx, where, list);
}

/* xx_negotiate - the actions we use and only the steps the chain needs */
static sfsistat xx_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
                             unsigned long f3, unsigned long *pf0, unsigned long *pf1,
                             unsigned long *pf2, unsigned long *pf3)
{
    unsigned long want = SMFIP_NOUNKNOWN, noreply = SMFIP_NR_HDR | SMFIP_NR_EOH | SMFIP_NR_BODY;

    (void)f2, (void)f3;
    pthread_mutex_lock(&ml.mu);
    bool content = ml.need_content;
    pthread_mutex_unlock(&ml.mu);
    if (!content)
        want |= SMFIP_NOHDRS | SMFIP_NOEOH | SMFIP_NOBODY;
    want |= f1 & (noreply | SMFIP_HDR_LEADSPC);
    *pf0 = f0 & (SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_SETSYMLIST);
    *pf1 = f1 & want;
    *pf2 = *pf3 = 0;
    struct ml_conn *c = smfi_getpriv(ctx) ? smfi_getpriv(ctx) : conn_new(ctx);
    if (c == NULL)
        return SMFIS_TEMPFAIL;
    c->leadspc = (*pf1 & SMFIP_HDR_LEADSPC) != 0;
    c->nr = *pf1 & noreply;
    if (f0 & SMFIF_SETSYMLIST) {
        symlist(ctx, SMFIM_CONNECT, ml_connect_macros);
        symlist(ctx, SMFIM_HELO, ml_helo_macros);
        symlist(ctx, SMFIM_ENVFROM, ml_mail_macros);
        symlist(ctx, SMFIM_ENVRCPT, ml_rcpt_macros);
        symlist(ctx, SMFIM_EOM, ml_eom_macros);
    }
    return SMFIS_CONTINUE;
}

static struct smfiDesc ml_desc = {
    .xxfi_name = "portcullis",
    .xxfi_version = SMFI_VERSION,
    .xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_SETSYMLIST,
    .xxfi_connect = xx_connect,
    .xxfi_helo = xx_helo,
    .xxfi_envfrom = xx_envfrom,
    .xxfi_envrcpt = xx_envrcpt,
    .xxfi_header = xx_header,
    .xxfi_eoh = xx_eoh,
    .xxfi_body = xx_body,
    .xxfi_eom = xx_eom,
    .xxfi_abort = xx_abort,
    .xxfi_close = xx_close,
    .xxfi_data = xx_data,
    .xxfi_negotiate = xx_negotiate,
};

/* ---- the process ---- */

/* to_libmilter - our "inet:host:port" (checked by the configuration) as libmilter's
 * "inet:port@host" */
static void to_libmilter(const char *a, char *out, size_t size)
{
    char host[256], port[16];
    size_t scheme = strcspn(a, ":");

    if (strncmp(a, "unix:", 5) == 0 ||
        !pc_parse_hostport(a + scheme + 1, host, sizeof(host), port, sizeof(port))) {
        pc_strlcpy(out, a, size);
        return;
    }
    snprintf(out, size, "%.*s:%s@%s", (int)scheme, a, port, host);
}

/* pc_milter_generation - new sessions use this configuration */
void pc_milter_generation(struct pc_conf *conf)
{
    const struct pc_listener_conf *lc;

    if (ml.conf == NULL)
        return; /* no milter listener in this process */
    pc_conf_ref(conf);
    pc_conf_unref(ml.conf);
    ml.conf = conf;
    lc = ml_listener(conf);
    pthread_mutex_lock(&ml.mu);
    ml.need_content = lc ? chain_needs_content(&lc->chain) : true;
    pthread_mutex_unlock(&ml.mu);
}

/* pc_milter_open - register with libmilter and bind the socket */
int pc_milter_open(struct pc_services *svc, struct pc_conf *conf, const struct pc_listener_conf *lc)
{
    char conn[512];

    if (ml.conf != NULL) {
        pc_err("listener %s: one milter listener per process (libmilter runs one smfi_main)",
               lc->name);
        return -1;
    }
    ml.svc = svc;
    ml.qtail = &ml.qhead;
    pc_strlcpy(ml.listener, lc->name, sizeof(ml.listener));
    pc_conf_ref(conf);
    ml.conf = conf;
    ml.need_content = chain_needs_content(&lc->chain);
    ml.wake = event_new(svc->base, -1, EV_READ, on_wake, NULL);
    to_libmilter(lc->address, conn, sizeof(conn));
    if (smfi_register(ml_desc) != MI_SUCCESS || smfi_setconn(conn) != MI_SUCCESS ||
        smfi_setbacklog(1024) != MI_SUCCESS || smfi_opensocket(true) != MI_SUCCESS) {
        pc_err("listener %s: cannot listen on %s (libmilter: %s)", lc->name, lc->address, conn);
        return -1;
    }
    pc_info("listener %s on %s, milter%s", lc->name, lc->address,
            ml.need_content ? "" : " (envelope only: no header or body asked for)");
    return 0;
}

/* milter_thread - smfi_main, with every signal blocked: they are the main thread's */
static void *milter_thread(void *arg)
{
    sigset_t all;

    (void)arg;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    int rc = smfi_main();
    pthread_mutex_lock(&ml.mu);
    bool asked = ml.running == false;
    ml.failed = !asked;
    pthread_mutex_unlock(&ml.mu);
    if (!asked) {
        /* libmilter's signal thread took a SIGHUP, SIGTERM or SIGINT meant for the loop and
         * stopped the milter: the process cannot serve milters again (one smfi_main), so it
         * drains and exits for its supervisor to restart it. */
        pc_err("milter: libmilter stopped serving (rc %d); stopping", rc);
        kill(getpid(), SIGTERM);
    }
    return NULL;
}

/* pc_milter_run - serve in libmilter's threads */
int pc_milter_run(void (*idle)(void *), void *arg)
{
    if (ml.conf == NULL)
        return 0;
    ml.idle = idle;
    ml.idle_arg = arg;
    ml.running = true;
    if (pthread_create(&ml.thread, NULL, milter_thread, NULL) != 0) {
        pc_err("milter: cannot start its thread: %m");
        return -1;
    }
    pthread_detach(ml.thread);
    return 0;
}

/* pc_milter_stop - refuse new MTA connections (421 4.3.2 at connect); the sessions in flight
 * finish. Not smfi_stop: libmilter drops the connections in flight when it stops, and the
 * MTA would apply milter_default_action to their messages. The process exits when the loop
 * does, and libmilter's threads with it. */
void pc_milter_stop(void)
{
    if (ml.conf == NULL || ml.stopping)
        return;
    ml.stopping = true;
    pthread_mutex_lock(&ml.mu);
    ml.running = false;
    pthread_mutex_unlock(&ml.mu);
}

/* pc_milter_failed - did libmilter stop on its own */
bool pc_milter_failed(void)
{
    pthread_mutex_lock(&ml.mu);
    bool f = ml.failed;
    pthread_mutex_unlock(&ml.mu);
    return f;
}

/* pc_milter_sessions - open milter sessions */
size_t pc_milter_sessions(void)
{
    return ml.nsessions;
}
