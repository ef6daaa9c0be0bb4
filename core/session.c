/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	session 3 - SMTP session and transaction, independent of the front door
 * DESCRIPTION
 *	Construction, recipients, and the functions filters use to record
 *	facts, scores and headers. A session's memory is its pool; a
 *	transaction has a pool of its own so that RSET gives everything back
 *	at once. The ends (pc_session_free, pc_txn_free) are in core/chain.c,
 *	because they reset and detach the filters first.
 */
#include "core/session.h"

#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/settings.h"
#include "lib/buf.h"
#include "lib/log.h"
#include "lib/qid.h"
#include "lib/pool.h"

/* The last session id: this process's, or the instance's in a page its workers share. */
static unsigned long long pc_session_local;
static unsigned long long *pc_session_counter = &pc_session_local;

/* pc_session_ids_share - take ids from a counter other processes take from too */
void pc_session_ids_share(unsigned long long *counter)
{
    pc_session_counter = counter;
}

/* pc_session_new - a session bound to a configuration generation */
struct pc_session *pc_session_new(struct pc_services *svc, struct pc_settings *set,
                                  const char *listener, const struct pc_chain *chain,
                                  const struct pc_door *door, void *door_ctx)
{
    struct pc_pool *pool = pc_pool_create(4096);
    struct pc_session *s = pc_pool_zalloc(pool, sizeof(*s));

    s->pool = pool;
    s->svc = svc;
    s->set = set;
    if (set) {
        pc_settings_ref(set);
        s->conf = set->owner;
    }
    s->chain = chain;
    s->door = door;
    s->door_ctx = door_ctx;
    s->listener = listener;
    s->id = __atomic_add_fetch(pc_session_counter, 1, __ATOMIC_RELAXED);
    snprintf(s->sid, sizeof(s->sid), "S%llx", (unsigned long long)s->id);
    s->facts_tail = &s->facts;
    pc_strlcpy(s->client.name, "unknown", sizeof(s->client.name));
    pc_strlcpy(s->client.ptr, "unknown", sizeof(s->client.ptr));
    pc_strlcpy(s->client.addr, "unknown", sizeof(s->client.addr));
    return s;
}

/* pc_session_set_client - identity from the peer address */
void pc_session_set_client(struct pc_session *s, const struct sockaddr *sa, socklen_t len)
{
    if (len > sizeof(s->client.sa))
        len = sizeof(s->client.sa);
    memcpy(&s->client.sa, sa, len);
    s->client.salen = len;
    if (pc_ip_from_sockaddr(sa, &s->client.ip))
        pc_ip_format(&s->client.ip, s->client.addr, sizeof(s->client.addr));
    if (sa->sa_family == AF_INET)
        s->client.port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
    else if (sa->sa_family == AF_INET6)
        s->client.port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
}

/* pc_session_set_local - our end of the connection (getsockname, or a PROXY header's
 * destination): what an outbound PROXY header and Dovecot's lip= name, not the listener's
 * configured (perhaps wildcard) address */
void pc_session_set_local(struct pc_session *s, const struct sockaddr *sa)
{
    struct pc_ip ip;

    if (!pc_ip_from_sockaddr(sa, &ip))
        return;
    pc_ip_format(&ip, s->local_addr, sizeof(s->local_addr));
    if (sa->sa_family == AF_INET)
        s->local_port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
    else if (sa->sa_family == AF_INET6)
        s->local_port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
}

/* pc_session_helo_reset - undo the previous HELO's findings, start a pool for the next ones.
 * Outside a transaction, only the HELO stage adds findings once the first HELO began (reading
 * stops while the connect stage is pending), so everything past the marks belongs to it. */
void pc_session_helo_reset(struct pc_session *s)
{
    if (s->helo_pool == NULL) {
        s->helo_facts_mark = s->facts_tail;
        s->helo_symbols_mark = s->symbols;
        s->helo_score_mark = s->score;
    } else {
        *s->helo_facts_mark = NULL;
        s->facts_tail = s->helo_facts_mark;
        s->symbols = s->helo_symbols_mark;
        s->score = s->helo_score_mark;
        pc_pool_destroy(s->helo_pool);
    }
    s->helo_pool = pc_pool_create(1024);
}

/* pc_session_rewind - forget the HELO and what filters found about it. What the connect stage
 * found (the client's address and name) still holds: the peer has not changed. Filters whose
 * context remembers a HELO see a new one at the next HELO stage. */
void pc_session_rewind(struct pc_session *s)
{
    if (s->helo_pool) {
        pc_session_helo_reset(s); /* undo to the marks, then drop the pool it starts */
        pc_pool_destroy(s->helo_pool);
        s->helo_pool = NULL;
    }
    s->helo = NULL;
    s->esmtp = false;
}

/* session_pool - where a finding outside a transaction goes */
static struct pc_pool *session_pool(struct pc_session *s)
{
    return s->helo_pool ? s->helo_pool : s->pool;
}

/* msg_free - pool cleanup for the spool */
static void msg_free(void *arg)
{
    pc_msg_free(arg);
}

/* pc_txn_new - start a transaction (at MAIL) */
struct pc_txn *pc_txn_new(struct pc_session *s)
{
    struct pc_pool *pool = pc_pool_create(4096);
    struct pc_txn *t = pc_pool_zalloc(pool, sizeof(*t));
    const struct pc_settings *c = s->set;
    struct timespec ts;

    t->pool = pool;
    /* Unique across gateways and restarts, so that ids from several hosts can share a log. */
    pc_qid_make(t->id, sizeof(t->id));
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t->out.t_mail = ts;
    t->facts_tail = &t->facts;
    pc_msg_init(&t->msg, c ? c->max_header_size : 102400, c ? c->max_headers : 1000,
                c ? c->spool_threshold : 262144, c ? c->spool_dir : "/tmp");
    pc_pool_cleanup(pool, msg_free, &t->msg);
    s->txn = t;
    return t;
}

/* pc_txn_add_rcpt - remember a recipient */
struct pc_rcpt *pc_txn_add_rcpt(struct pc_txn *t, const struct pc_mailbox *mb, const char *params)
{
    if (t->nrcpt == t->rcpt_cap) {
        size_t cap = t->rcpt_cap ? t->rcpt_cap * 2 : 8;
        struct pc_rcpt *v = pc_pool_alloc(t->pool, cap * sizeof(*v));
        if (t->nrcpt)
            memcpy(v, t->rcpts, t->nrcpt * sizeof(*v));
        t->rcpts = v;
        t->rcpt_cap = cap;
    }
    struct pc_rcpt *r = &t->rcpts[t->nrcpt++];
    r->mb = *mb;
    r->params = params ? pc_pool_strdup(t->pool, params) : "";
    r->flags = 0;
    return r;
}

/* pc_fact_add - record a finding on the transaction, or the session outside one */
void pc_fact_add(struct pc_session *s, const char *name, const char *fmt, ...)
{
    struct pc_pool *pool = s->txn ? s->txn->pool : session_pool(s);
    struct pc_fact ***tail = s->txn ? &s->txn->facts_tail : &s->facts_tail;
    struct pc_fact *f = pc_pool_zalloc(pool, sizeof(*f));
    va_list ap;

    f->name = pc_pool_strdup(pool, name);
    va_start(ap, fmt);
    f->value = pc_printable(pc_pool_vprintf(pool, fmt, ap));
    va_end(ap);
    **tail = f;
    *tail = &f->next;
}

/* fact_scan - first fact after prev with this name, in transaction then session */
const struct pc_fact *pc_fact_next(const struct pc_session *s, const char *name,
                                   const struct pc_fact *prev)
{
    const struct pc_fact *lists[2] = {s->txn ? s->txn->facts : NULL, s->facts};
    bool found_prev = prev == NULL;

    for (int i = 0; i < 2; i++)
        for (const struct pc_fact *f = lists[i]; f; f = f->next) {
            if (!found_prev) {
                found_prev = f == prev;
                continue;
            }
            if (strcasecmp(f->name, name) == 0)
                return f;
        }
    return NULL;
}

/* pc_fact_get - first value of a fact, or NULL */
const char *pc_fact_get(const struct pc_session *s, const char *name)
{
    const struct pc_fact *f = pc_fact_next(s, name, NULL);

    return f ? f->value : NULL;
}

/* pc_score_add - add a named score to the transaction (or session) */
void pc_score_add(struct pc_session *s, const char *filter, const char *symbol, double score)
{
    struct pc_pool *pool = s->txn ? s->txn->pool : session_pool(s);
    struct pc_symbol *sym = pc_pool_zalloc(pool, sizeof(*sym));

    sym->name = pc_pool_strdup(pool, symbol);
    sym->filter = filter;
    sym->score = score;
    if (s->txn) {
        sym->next = s->txn->symbols;
        s->txn->symbols = sym;
        s->txn->score += score;
    } else {
        sym->next = s->symbols;
        s->symbols = sym;
        s->score += score;
    }
}

/* pc_score_total - session plus transaction score */
double pc_score_total(const struct pc_session *s)
{
    return s->score + (s->txn ? s->txn->score : 0);
}

/* pc_header_add - prepend a header to the current message */
void pc_header_add(struct pc_session *s, const char *name, const char *value)
{
    if (s->txn)
        pc_msg_add_header(&s->txn->msg, s->txn->pool, name, value);
}

/* pc_header_remove - drop an original header by index */
void pc_header_remove(struct pc_session *s, size_t index)
{
    if (s->txn && index < s->txn->msg.nhdrs)
        s->txn->msg.hdrs[index].deleted = true;
}
