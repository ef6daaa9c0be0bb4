/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	policy_door 3 - a Postfix policy service in front of the transaction engine
 * DESCRIPTION
 *	Postfix's check_policy_service sends one request per restriction
 *	check: "name=value" lines and an empty line; we answer one
 *	"action=..." line and an empty line, and the connection carries many
 *	requests. This door owns that syntax, the I/O and the reply; the
 *	rules of the transaction are the engine's (gateway/engine.h), as for
 *	the SMTP door and "portcullis test".
 *
 *	Postfix asks at several points of one SMTP transaction and marks
 *	them with the same "instance" attribute (set at MAIL FROM). A table
 *	of sessions keyed by instance (bounded, idle entries expire) lets
 *	the chain see the whole envelope once: a request brings its session
 *	up to the request's protocol_state, running each engine step that
 *	has not run yet (connect, HELO, MAIL, each RCPT, DATA and the
 *	content stages) exactly once. So a rate limit on messages counts a
 *	message once, at the first of DATA and END-OF-MESSAGE. A request
 *	without an instance (CONNECT, HELO with smtpd_delay_reject = no)
 *	gets a session of its own.
 *
 *	Replies: DUNNO when nothing was decided; OK when a filter accepted;
 *	a refusal as "action=CODE ENH text" (Postfix takes numeric codes,
 *	so the client hears our code and enhanced code); a refusal the
 *	engine holds until RCPT (delay_reject) asked about before RCPT: a
 *	5xx as is (Postfix delays it itself), a 4xx as DEFER_IF_PERMIT;
 *	DISCARD; the first header a filter added as PREPEND at DATA (Postfix
 *	cannot prepend at END-OF-MESSAGE). The content stages see no message
 *	here: rules that need the body or headers do not fire.
 *
 *	Malformed input (see lib/policy_attr.h for the bounds) closes the
 *	connection: Postfix then logs it and applies its
 *	default_action (451 4.3.5), which is the safe side.
 * SEE ALSO
 *	Postfix SMTPD_POLICY_README, access(5), RFC 3463
 */
#include "gateway/policy_door.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/chain.h"
#include "core/session.h"
#include "core/txnlog.h"
#include "filters/registry.h"
#include "gateway/bevio.h"
#include "gateway/conf.h"
#include "gateway/engine.h"
#include "gateway/smtp_proto.h"
#include "lib/buf.h"
#include "lib/cidr.h"
#include "lib/log.h"
#include "lib/policy_attr.h"
#include "lib/pool.h"

#define PD_SESSIONS_MAX 4096 /* transactions remembered at once */
#define PD_BUCKETS      1024
/* A transaction silent this long is forgotten (Postfix's smtpd_timeout is 300s). */
#define PD_IDLE_SECONDS  600
#define PD_INSTANCE_MAX  64
#define PD_READ_TIMEOUT  3600 /* Postfix closes an idle policy connection after 300s itself */
#define PD_WRITE_TIMEOUT 60
#define PD_ACTION_MAX    1000 /* an action line; a longer PREPEND is left out, not cut */

/* The engine steps in transaction order; a request asks for one of them. */
enum pd_step { PD_CONNECT, PD_HELO, PD_MAIL, PD_RCPT, PD_DATA, PD_CONTENT, PD_DONE, PD_OTHER };

struct pd_conn;

struct pd_sess {
    struct pd_sess *hnext;       /* hash chain */
    struct pd_sess *prev, *next; /* the LRU list, most recent first */
    char instance[PD_INSTANCE_MAX + 1];
    bool in_table;
    time_t used;
    struct pc_session *s;
    struct pc_engine eng;
    struct pd_conn *conn;    /* the connection waiting for this session, or NULL */
    enum pd_step step;       /* the next step to run */
    enum pd_step ran;        /* the step that ran last (the pending one) */
    enum pd_step target;     /* the step the current request asks about */
    bool busy;               /* a step is pending */
    bool over;               /* a refusal ended the transaction: final is the answer from now */
    bool prepended;          /* the PREPEND went out */
    unsigned warned;         /* log-only rule matches already said as WARN */
    struct pc_verdict final; /* the refusal that ended it, or the content verdict */
};

struct pd_conn {
    struct pc_services *svc;
    struct pc_conf *const *current; /* the server's generation: a reload applies to the next
                                     * transaction, not after Postfix reconnects */
    char listener[128];
    struct bufferevent *bev;
    struct event *free_ev;
    pc_smtp_closed_fn *closed;
    void *closed_arg;
    struct pc_ip peer;
    char peer_addr[64];
    struct pd_sess *waiting; /* the session whose step is pending */
    bool closing;
    bool in_read; /* pd_read is on the stack: it goes on by itself */
    unsigned long nreq;
    struct pc_pa_request req;
};

/* The table of transactions: one per process, shared by every policy connection, because
 * Postfix may reopen its connection within a transaction. */
static struct pd_table {
    struct pd_sess *bucket[PD_BUCKETS];
    struct pd_sess *head, *tail;
    size_t n;
} pd_tab;

static void advance(struct pd_sess *);
static void pd_read(struct pd_conn *);

/* hash - FNV-1a of the instance */
static unsigned hash(const char *s)
{
    unsigned h = 2166136261u;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h % PD_BUCKETS;
}

/* lru_unlink - take a session out of the LRU list */
static void lru_unlink(struct pd_sess *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        pd_tab.head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    else
        pd_tab.tail = x->prev;
    x->prev = x->next = NULL;
}

/* lru_front - a session was used: to the front */
static void lru_front(struct pd_sess *x)
{
    x->next = pd_tab.head;
    if (pd_tab.head)
        pd_tab.head->prev = x;
    pd_tab.head = x;
    if (pd_tab.tail == NULL)
        pd_tab.tail = x;
}

/* sess_free - forget a transaction (out of the table first) */
static void sess_free(struct pd_sess *x)
{
    if (x->in_table) {
        struct pd_sess **p = &pd_tab.bucket[hash(x->instance)];
        while (*p != x)
            p = &(*p)->hnext;
        *p = x->hnext;
        lru_unlink(x);
        pd_tab.n--;
    }
    pc_txnlog_end(x->s);
    pc_session_free(x->s);
    free(x);
}

/* evicted - a transaction forgotten before its time: said at most once per 10 seconds, with
 * the count, so that a flood of new transactions does not flood the log too */
static void evicted(const struct pd_sess *x)
{
    static time_t said;
    static unsigned long n;
    time_t now = time(NULL);

    n++;
    if (now - said < 10)
        return;
    pc_warn("policy: %d transactions open: forgot %lu of the oldest (lately %s) before their "
            "end",
            PD_SESSIONS_MAX, n, x->instance);
    said = now;
    n = 0;
}

/* expire - forget idle transactions; past the bound, the least recently used */
static void expire(void)
{
    time_t now = time(NULL);

    for (struct pd_sess *x = pd_tab.tail, *prev; x; x = prev) {
        prev = x->prev;
        if (x->busy)
            continue;
        if (now - x->used >= PD_IDLE_SECONDS)
            sess_free(x);
        else if (pd_tab.n >= PD_SESSIONS_MAX) {
            evicted(x);
            sess_free(x);
        } else
            break;
    }
}

/* lookup - the transaction of an instance, or NULL */
static struct pd_sess *lookup(const char *instance)
{
    for (struct pd_sess *x = pd_tab.bucket[hash(instance)]; x; x = x->hnext)
        if (strcmp(x->instance, instance) == 0)
            return x;
    return NULL;
}

/* set_client - the client Postfix talks to, from client_address and client_port */
static void set_client(struct pc_session *s, const char *ip, const char *port)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    unsigned p = port ? (unsigned)strtoul(port, NULL, 10) : 0;

    memset(&ss, 0, sizeof(ss));
    if (ip && inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)p);
        pc_session_set_client(s, (struct sockaddr *)in, sizeof(*in));
    } else if (ip && inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)p);
        pc_session_set_client(s, (struct sockaddr *)in6, sizeof(*in6));
    }
    /* else: "unknown" address; the session keeps the unspecified one */
}

/* known - a Postfix value that says something ("" and "unknown" say nothing) */
static const char *known(const struct pc_pa_request *r, const char *name)
{
    const char *v = pc_pa_get(r, name);

    return v && *v && strcmp(v, "unknown") != 0 ? v : NULL;
}

/* session_facts - what Postfix knows of the client, into the fields the SMTP door fills */
static void session_facts(struct pc_session *s, const struct pc_pa_request *r)
{
    const char *v;

    set_client(s, known(r, "client_address"), pc_pa_get(r, "client_port"));
    /* client_name is Postfix's verified name, reverse_client_name the unverified PTR. */
    pc_strlcpy(s->client.name, (v = known(r, "client_name")) ? v : "unknown",
               sizeof(s->client.name));
    pc_strlcpy(s->client.ptr, (v = known(r, "reverse_client_name")) ? v : "unknown",
               sizeof(s->client.ptr));
    if ((v = known(r, "sasl_username")) != NULL)
        s->auth_user = pc_pool_strdup(s->pool, v);
    if ((v = known(r, "encryption_protocol")) != NULL) {
        const char *c = known(r, "encryption_cipher");
        s->tls = true;
        s->tls_info = pc_pool_printf(s->pool, "%s%s%s", v, c ? " " : "", c ? c : "");
    }
    if ((v = known(r, "ccert_subject")) != NULL)
        pc_fact_add(s, "tls.client_subject", "%s", v);
    if ((v = known(r, "ccert_fingerprint")) != NULL)
        pc_fact_add(s, "tls.client_fingerprint", "%s", v);
    if ((v = known(r, "protocol_name")) != NULL)
        s->esmtp = strcmp(v, "ESMTP") == 0;
}

static const struct pc_door pd_door = {.name = "policy", .stage_done = pc_engine_door_done};

static void eng_done(void *, enum pc_stage, enum pc_action, struct pc_verdict *);

/* sess_new - a transaction's session, in the table when it has an instance */
static struct pd_sess *sess_new(struct pd_conn *c, struct pc_conf *conf,
                                const struct pc_listener_conf *lc, const char *instance)
{
    struct pd_sess *x = calloc(1, sizeof(*x));

    if (x == NULL)
        pc_fatal("out of memory");
    x->s = pc_session_new(c->svc, &conf->core, lc->name, &lc->chain, &pd_door, &x->eng);
    pc_engine_init(&x->eng, x->s, eng_done, x);
    x->s->trusted = lc->trusted;
    session_facts(x->s, &c->req);
    x->used = time(NULL);
    if (instance && *instance) {
        expire();
        pc_strlcpy(x->instance, instance, sizeof(x->instance));
        unsigned h = hash(x->instance);
        x->hnext = pd_tab.bucket[h];
        pd_tab.bucket[h] = x;
        lru_front(x);
        x->in_table = true;
        pd_tab.n++;
    }
    if (pc_chain_attach(x->s) < 0) {
        pc_verdict_set(&x->final, PC_TEMPFAIL, 451, "4.3.0", "Error: filter attach failed");
        x->over = true;
    }
    return x;
}

/* step_of - the step a protocol_state asks about */
static enum pd_step step_of(const char *state)
{
    static const struct {
        const char *name;
        enum pd_step step;
    } map[] = {{"CONNECT", PD_CONNECT}, {"EHLO", PD_HELO},
               {"HELO", PD_HELO},       {"MAIL", PD_MAIL},
               {"RCPT", PD_RCPT},       {"DATA", PD_DATA},
               {"BDAT", PD_DATA},       {"END-OF-MESSAGE", PD_CONTENT}};

    for (size_t i = 0; state && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(state, map[i].name) == 0)
            return map[i].step;
    return PD_OTHER; /* VRFY, ETRN: nothing of ours to check */
}

/* send_action - the one writer of replies: "action=..." and the empty line (within
 * PD_ACTION_MAX, well under the 2048 bytes Postfix reads in a line) */
static void send_action(struct pd_conn *c, const char *action)
{
    char line[PD_ACTION_MAX + 16];
    int n = snprintf(line, sizeof(line), "action=%s\n\n", action);

    if (c == NULL || c->closing || c->bev == NULL)
        return;
    if (n >= (int)sizeof(line)) /* cut the text, keep the block's end */
        n = (int)sizeof(line) - 1, line[n - 2] = '\n', line[n - 1] = '\n';
    pc_log_flush(); /* Postfix, once answered, finds the lines logged before */
    pc_bev_write(c->bev, line, (size_t)n);
}

/* refusal_text - "CODE ENH text" for a refusal, through the SMTP reply formatter (soft_bounce,
 * class agreement, control characters) so that Postfix's client hears what ours would */
static int refusal_text(const struct pc_conf *conf, struct pc_verdict *v, enum pc_stage st,
                        char *out, size_t size)
{
    struct pc_reply_opts o = {.soft_bounce = conf->soft_bounce};
    struct pc_buf b;

    pc_buf_init(&b, 2 * PC_VERDICT_TEXT);
    pc_verdict_finish(v, st);
    int code = pc_reply_format(&b, v->code, &v->enh, v->text, &o);
    size_t n = b.len;
    while (n && (b.data[n - 1] == '\n' || b.data[n - 1] == '\r'))
        n--;
    snprintf(out, size, "%.*s", (int)n, b.data ? b.data : "");
    pc_buf_free(&b);
    return code;
}

/* reply_refusal - a refusal as a numeric action (a held 4xx before RCPT: DEFER_IF_PERMIT) */
static void reply_refusal(struct pd_sess *x, struct pc_verdict *v, enum pc_stage st, bool held)
{
    char text[PC_VERDICT_TEXT + 32], act[PC_VERDICT_TEXT + 64];
    int code = refusal_text(x->s->conf, v, st, text, sizeof(text));

    if (v->action == PC_DISCARD)
        snprintf(act, sizeof(act), "DISCARD %s", v->text[0] ? v->text : "discarded");
    else if (held && code / 100 == 4)
        /* Postfix's delay_reject: a later hard refusal still wins over our temporary one. */
        snprintf(act, sizeof(act), "DEFER_IF_PERMIT %s", text + 4);
    else
        snprintf(act, sizeof(act), "%s", text);
    send_action(x->conn, act);
}

/* warn_log_only - a log-only rule matched since the last reply: WARN (Postfix logs it) */
static bool warn_log_only(struct pd_sess *x)
{
    unsigned n = 0;
    const char *last = NULL;
    char act[300];

    for (const struct pc_fact *f = pc_fact_next(x->s, "rule.log_only", NULL); f;
         f = pc_fact_next(x->s, "rule.log_only", f), n++)
        last = f->value;
    if (n == x->warned)
        return false;
    x->warned = n;
    snprintf(act, sizeof(act), "WARN portcullis: log-only rule %s matched", last);
    send_action(x->conn, act);
    return true;
}

/* prepend - the first header a filter added, as PREPEND (one action per reply); false when it
 * does not fit in an action line (then it is logged and left out: a cut header lies) */
static bool prepend(struct pd_sess *x, const struct pc_txn *t)
{
    char act[PD_ACTION_MAX + 1];
    const struct pc_hdr_add *h = t->msg.added;
    int n = snprintf(act, sizeof(act), "PREPEND %s: %s", h->name, h->value);

    x->prepended = true;
    if (n < 0 || n >= (int)sizeof(act)) {
        pc_warn("%s: policy: header %s is too long for a PREPEND action; not added", t->id,
                h->name);
        return false;
    }
    for (char *p = act; *p; p++) /* a folded value becomes one line */
        if (*p == '\r' || *p == '\n' || *p == '\t')
            *p = ' ';
    if (h->next)
        pc_info("%s: policy: only the first added header (%s) is prepended: one action per "
                "reply",
                t->id, h->name);
    send_action(x->conn, act);
    return true;
}

/* reply_go_on - nothing refused: OK if a filter accepted, a header to add, else DUNNO */
static void reply_go_on(struct pd_sess *x)
{
    struct pc_session *s = x->s;
    struct pc_txn *t = s->txn;
    const struct pc_verdict *h = x->eng.held.action       ? &x->eng.held
                                 : x->eng.held_txn.action ? &x->eng.held_txn
                                                          : NULL;

    if (h && x->target < PD_RCPT) {
        struct pc_verdict v = *h;
        reply_refusal(x, &v, x->target == PD_MAIL ? PC_STAGE_MAIL : PC_STAGE_CONNECT, true);
        return;
    }
    if (t && t->discard) {
        send_action(x->conn, "DISCARD discarded by policy");
        return;
    }
    if (t && t->msg.added && x->target == PD_DATA && !x->prepended && prepend(x, t))
        return;
    if (warn_log_only(x))
        return;
    send_action(x->conn, s->accepted || (t && t->accepted) ? "OK" : "DUNNO");
}

/* finish_request - the request is answered: read the next one */
static void finish_request(struct pd_sess *x)
{
    struct pd_conn *c = x->conn;

    x->busy = false;
    x->conn = NULL;
    x->used = time(NULL);
    if (x->in_table) {
        lru_unlink(x);
        lru_front(x);
    }
    /* After the end of the message (or a request without an instance) nothing comes back. */
    if (!x->in_table || x->target == PD_CONTENT)
        sess_free(x);
    if (c) {
        c->waiting = NULL;
        if (!c->in_read) /* an answer that came later: read what Postfix sent meanwhile */
            pd_read(c);
    }
}

/* stage_of - the engine stage a step runs */
static enum pc_stage stage_of(enum pd_step st)
{
    static const enum pc_stage map[] = {PC_STAGE_CONNECT, PC_STAGE_HELO, PC_STAGE_MAIL,
                                        PC_STAGE_RCPT,    PC_STAGE_DATA, PC_STAGE_EOM};
    return st <= PD_CONTENT ? map[st] : PC_STAGE_EOM;
}

/* end_with - a refusal ends the transaction (every later request hears it) */
static void end_with(struct pd_sess *x, const struct pc_verdict *v)
{
    x->final = *v;
    x->over = true;
}

/* outcome - a step's result; true to go on to the next step */
static bool outcome(struct pd_sess *x, enum pd_step st, enum pc_action a, struct pc_verdict *v)
{
    switch (st) {
    case PD_CONNECT:
    case PD_HELO:
    case PD_MAIL:
        if (a == PC_CONTINUE || a == PC_ACCEPT)
            return true;
        end_with(x, v);
        return true; /* the loop answers with it */
    case PD_RCPT:
        if (a == PC_CONTINUE)
            pc_engine_rcpt_accepted(&x->eng);
        if (x->target != PD_RCPT) { /* the recipient DATA named: its refusal is the answer */
            if (a != PC_CONTINUE && a != PC_ACCEPT)
                end_with(x, v);
            return true;
        }
        if (a != PC_CONTINUE && a != PC_ACCEPT)
            reply_refusal(x, v, PC_STAGE_RCPT, false);
        else
            reply_go_on(x);
        return false;
    case PD_DATA:
        if (a != PC_CONTINUE)
            end_with(x, v);
        return true;
    default: /* the content stages: their verdict answers DATA and END-OF-MESSAGE alike */
        if (a == PC_CONTINUE)
            pc_verdict_clear(&x->final);
        else
            end_with(x, v);
        return true;
    }
}

/* eng_done - a pending step finished */
static void eng_done(void *arg, enum pc_stage stage, enum pc_action a, struct pc_verdict *v)
{
    struct pd_sess *x = arg;

    (void)stage;
    x->busy = false;
    if (outcome(x, x->ran, a, v))
        advance(x);
    else
        finish_request(x);
}

/* mailbox - "<addr>" of a Postfix envelope address through the SMTP path parser */
static bool mailbox(struct pc_pool *pool, const char *a, struct pc_mailbox *mb)
{
    char *p = pc_pool_printf(pool, "<%s>", a ? a : "");
    size_t end;

    return pc_path_parse(p, strlen(p), pool, mb, &end) == NULL;
}

/* run - start one step; its outcome now, or PC_PENDING */
static enum pc_action run(struct pd_sess *x, enum pd_step st, struct pc_verdict *v,
                          const struct pc_pa_request *r)
{
    struct pc_session *s = x->s;

    switch (st) {
    case PD_CONNECT:
        return pc_engine_connect(&x->eng, v);
    case PD_HELO:
        s->helo = pc_pool_strdup(s->pool, pc_pa_get(r, "helo_name"));
        return pc_engine_helo(&x->eng, v);
    case PD_MAIL: {
        struct pc_txn *t = pc_txn_new(s);
        const char *size = pc_pa_get(r, "size");
        if (!mailbox(t->pool, pc_pa_get(r, "sender"), &t->from)) {
            pc_verdict_set(v, PC_REJECT, 501, "5.1.7", "Bad sender address syntax");
            return PC_REJECT;
        }
        t->size_param = size ? (size_t)strtoull(size, NULL, 10) : 0;
        /* Our id beside Postfix's, so that the two logs can be read together. */
        pc_info("%s: policy: client=%s[%s] instance=%s postfix_queue_id=%s", t->id, s->client.name,
                s->client.addr, x->instance[0] ? x->instance : "-",
                known(r, "queue_id") ? known(r, "queue_id") : "-");
        return pc_engine_mail(&x->eng, v);
    }
    case PD_RCPT: {
        struct pc_mailbox mb;
        /* Postfix bounds them (smtpd_recipient_limit); a transaction here grows no further. */
        if (s->txn->nrcpt >= s->conf->limits.max_recipients) {
            pc_verdict_set(v, PC_TEMPFAIL, 452, "4.5.3", "Error: too many recipients");
            return PC_TEMPFAIL;
        }
        if (!mailbox(s->txn->pool, pc_pa_get(r, "recipient"), &mb)) {
            pc_verdict_set(v, PC_REJECT, 501, "5.1.3", "Bad recipient address syntax");
            return PC_REJECT;
        }
        s->txn->cur_rcpt = pc_txn_add_rcpt(s->txn, &mb, "");
        return pc_engine_rcpt(&x->eng, v);
    }
    case PD_DATA:
        s->txn->cur_rcpt = NULL;
        return pc_engine_data(&x->eng, v);
    default: {
        /* No message here: the content stages run on an empty one of Postfix's size (at DATA
         * the client's SIZE=, at END-OF-MESSAGE what arrived), for bytes limits and rules. */
        const char *size = pc_pa_get(r, "size");
        s->txn->msg.size = size ? (size_t)strtoull(size, NULL, 10) : 0;
        return pc_engine_eom(&x->eng, 0, v);
    }
    }
}

/* upto - the last step a request runs: DATA runs the content stages too (there is no message
 * to wait for), so that a message counts at the first of DATA and END-OF-MESSAGE */
static enum pd_step upto(const struct pd_sess *x)
{
    return x->target == PD_DATA ? PD_CONTENT : x->target;
}

/* wanted - must this step run for the current request */
static bool wanted(const struct pd_sess *x, enum pd_step st, const struct pc_pa_request *r)
{
    const char *helo = known(r, "helo_name"), *rcpt = pc_pa_get(r, "recipient");

    if (st > upto(x))
        return false;
    if (st == PD_HELO)
        return helo != NULL;
    /* A RCPT runs for a RCPT request; DATA without any RCPT request runs the one Postfix
     * names, if any (the restriction may sit in smtpd_data_restrictions alone). */
    if (st == PD_RCPT)
        return x->target == PD_RCPT || (x->s->txn->nrcpt == 0 && rcpt && *rcpt);
    return true;
}

/* advance - run the steps up to the request's; answer it */
static void advance(struct pd_sess *x)
{
    struct pd_conn *c = x->conn;
    const struct pc_pa_request *r = c ? &c->req : NULL; /* the waiting connection keeps it */
    struct pc_verdict v;

    /* Without its connection (Postfix went away) no further step runs. */
    while (r && !x->over && x->step <= upto(x)) {
        enum pd_step st = x->step;
        /* Every RCPT request runs one RCPT step: RCPT stays next until a later request. */
        if (st != PD_RCPT || x->target != PD_RCPT)
            x->step = st + 1;
        if (!wanted(x, st, r))
            continue;
        x->ran = st;
        pc_verdict_clear(&v);
        enum pc_action a = run(x, st, &v, r);
        if (a == PC_PENDING) {
            x->busy = true;
            return;
        }
        if (!outcome(x, st, a, &v)) {
            finish_request(x);
            return;
        }
    }
    if (x->over)
        reply_refusal(x, &x->final, stage_of(x->target), false);
    else
        reply_go_on(x);
    finish_request(x);
}

/* serve - one request: find or make its transaction, run it up to the asked step */
static void serve(struct pd_conn *c)
{
    const char *req = pc_pa_get(&c->req, "request");
    const char *instance = pc_pa_get(&c->req, "instance");
    enum pd_step target = step_of(pc_pa_get(&c->req, "protocol_state"));
    struct pd_sess *x = NULL;

    c->nreq++;
    if (req == NULL || strcmp(req, "smtpd_access_policy") != 0) {
        pc_warn("policy: %s: request %s unknown; closing", c->peer_addr, req ? req : "(none)");
        c->closing = true;
        return;
    }
    if (target == PD_OTHER) {
        send_action(c, "DUNNO");
        return;
    }
    if (instance && strlen(instance) > PD_INSTANCE_MAX)
        instance = NULL; /* not Postfix's: not tracked */
    if (instance && *instance && (x = lookup(instance)) != NULL && x->busy) {
        send_action(c, "451 4.3.0 Error: transaction busy, try again");
        return;
    }
    if (x == NULL) {
        struct pc_conf *conf = *c->current;
        const struct pc_listener_conf *lc = NULL;
        for (size_t i = 0; i < conf->nlisteners; i++)
            if (strcmp(conf->listeners[i].name, c->listener) == 0)
                lc = &conf->listeners[i];
        if (lc == NULL) { /* removed by a reload: the MTA goes on without us */
            send_action(c, "DUNNO");
            return;
        }
        x = sess_new(c, conf, lc, target >= PD_MAIL ? instance : NULL);
    }
    /* A repeated or late request for a step already past (END-OF-MESSAGE after DATA ran the
     * content stages) is answered from what happened: nothing runs twice. */
    x->target = target;
    x->conn = c;
    c->waiting = x;
    advance(x);
}

/* conn_free - from the loop, outside the connection's callbacks */
static void conn_free(evutil_socket_t fd, short what, void *arg)
{
    struct pd_conn *c = arg;
    struct pc_ip ip = c->peer;

    (void)fd, (void)what;
    if (c->waiting)
        c->waiting->conn = NULL; /* the step finishes without anyone to answer */
    pc_debug("policy: %s: closed after %lu requests", c->peer_addr, c->nreq);
    if (c->bev)
        bufferevent_free(c->bev);
    event_free(c->free_ev);
    pc_smtp_closed_fn *cb = c->closed;
    void *arg2 = c->closed_arg;
    free(c);
    if (cb)
        cb(arg2, &ip);
}

/* conn_close - stop; free from the loop */
static void conn_close(struct pd_conn *c)
{
    c->closing = true;
    if (c->bev)
        bufferevent_disable(c->bev, EV_READ);
    event_active(c->free_ev, 0, 0);
}

/* pd_read - every whole request in the input, one at a time */
static void pd_read(struct pd_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);

    c->in_read = true;
    while (!c->closing && c->waiting == NULL) {
        size_t len = evbuffer_get_length(in), used;
        size_t take = len < PC_PA_SIZE_MAX + 1 ? len : PC_PA_SIZE_MAX + 1;
        const char *why;
        const char *data = (const char *)evbuffer_pullup(in, (ssize_t)take);
        if (take == 0)
            break;
        enum pc_pa_status st = pc_pa_parse(data, take, &c->req, &used, &why);
        if (st == PC_PA_MORE)
            break;
        if (st == PC_PA_ERROR) {
            pc_warn("policy: %s: malformed request (%s); closing", c->peer_addr, why);
            conn_close(c);
            break;
        }
        evbuffer_drain(in, used);
        serve(c);
        if (c->closing)
            conn_close(c);
    }
    c->in_read = false;
}

/* on_read - bytes from Postfix */
static void on_read(struct bufferevent *bev, void *arg)
{
    (void)bev;
    pd_read(arg);
}

/* on_event - Postfix closed, or a timeout */
static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct pd_conn *c = arg;

    (void)bev;
    if (what & BEV_EVENT_TIMEOUT)
        pc_info("policy: %s: idle timeout", c->peer_addr);
    if (!c->closing)
        conn_close(c);
}

/* pc_policy_accept - serve a policy client */
void pc_policy_accept(struct pc_services *svc, struct pc_conf *const *current,
                      const struct pc_listener_conf *lc, evutil_socket_t fd,
                      const struct sockaddr *sa, socklen_t salen, pc_smtp_closed_fn *closed,
                      void *closed_arg)
{
    struct pd_conn *c = calloc(1, sizeof(*c));
    struct timeval rt = {PD_READ_TIMEOUT, 0}, wt = {PD_WRITE_TIMEOUT, 0};

    (void)salen;
    if (c == NULL)
        pc_fatal("out of memory");
    c->svc = svc;
    c->current = current;
    pc_strlcpy(c->listener, lc->name, sizeof(c->listener));
    c->closed = closed;
    c->closed_arg = closed_arg;
    pc_ip_from_sockaddr(sa, &c->peer);
    pc_ip_format(&c->peer, c->peer_addr, sizeof(c->peer_addr));
    c->free_ev = event_new(svc->base, -1, 0, conn_free, c);
    c->bev = bufferevent_socket_new(svc->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (c->bev == NULL || c->free_ev == NULL)
        pc_fatal("out of memory");
    pc_bev_nodelay(c->bev);
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_set_timeouts(c->bev, &rt, &wt);
    /* A request is bounded: a client that sends more without waiting is read no further. */
    bufferevent_setwatermark(c->bev, EV_READ, 0, 4 * PC_PA_SIZE_MAX);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    pc_debug("policy: connection from %s on %s", c->peer_addr, lc->name);
}

/* pc_policy_check - filters and rules that need the message, on a policy listener */
int pc_policy_check(const struct pc_conf *conf)
{
    int n = 0;

    for (size_t i = 0; i < conf->nlisteners; i++) {
        const struct pc_listener_conf *l = &conf->listeners[i];
        if (l->protocol != PC_PROTO_POLICY)
            continue;
        for (size_t k = 0; k < l->chain.n; k++) {
            const char *name = l->chain.links[k].ops->name;
            size_t nr = strcmp(name, "rules") == 0
                            ? pc_rules_filter_content_rules(l->chain.links[k].conf)
                            : 0;
            if (nr) {
                fprintf(stderr,
                        "%s: warning: listener \"%s\" (protocol policy): %zu rules at the "
                        "header or body stage see no header and no body there: Postfix does "
                        "not show a policy service the message\n",
                        conf->path, l->name, nr);
                n++;
            } else if (strcmp(name, "dkim") == 0) {
                fprintf(stderr,
                        "%s: warning: listener \"%s\" (protocol policy): dkim needs the "
                        "message, which a policy service never sees\n",
                        conf->path, l->name);
                n++;
            }
        }
    }
    return n;
}
