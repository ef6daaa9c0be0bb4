/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	txnlog 3 - the Postfix-compatible lines of a transaction
 * DESCRIPTION
 *	Postfix's smtpd writes "reject:" lines; its delivery agents write
 *	"to=<>, relay=, delay=, delays=, dsn=, status=" lines; its queue
 *	manager writes "from=<>, size=, nrcpt=". We are one process that does
 *	all three for a before-queue proxy, so the lines name the program as
 *	Postfix would ("smtpd" for the dialogue, "smtp" or "lmtp" for the
 *	hand-over to the backend) under our syslog_name.
 *
 *	received (client=) is logged when the backend took the message: a
 *	before-queue gateway receives only what it passed on, so pflogsumm's
 *	"received" equals "delivered" messages and "rejected" counts every
 *	refusal line.
 *
 *	delays=a/b/c/d (Postfix's four): a from MAIL to the final dot, b our
 *	end-of-message checks, c connection setup (0: the backend connection
 *	was opened during the dialogue and its time is in a), d the backend's
 *	handling of the content until its final reply.
 * SEE ALSO
 *	Postfix smtpd(8) and smtp(8) "delays", pflogsumm(1), RFC 3463 (dsn)
 */
#include "core/txnlog.h"

#include <stdio.h>
#include <string.h>

#include "core/session.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/pool.h"

/* pc_txnlog_stage - Postfix's stage names (pflogsumm groups rejects by them) */
const char *pc_txnlog_stage(const struct pc_session *s, enum pc_stage st)
{
    switch (st) {
    case PC_STAGE_CONNECT:
        return "CONNECT";
    case PC_STAGE_HELO:
        return s->esmtp ? "EHLO" : "HELO";
    case PC_STAGE_MAIL:
        return "MAIL";
    case PC_STAGE_RCPT:
        return "RCPT";
    case PC_STAGE_DATA:
        return "DATA";
    default:
        return "END-OF-MESSAGE";
    }
}

/* client_of - "name[addr]", the name escaped (it came from DNS) */
static const char *client_of(const struct pc_session *s, char *buf, size_t size)
{
    char name[PC_HOSTNAME_MAX * 4 + 1];

    snprintf(buf, size, "%s[%s]", pc_log_field(name, sizeof(name), s->client.name), s->client.addr);
    return buf;
}

/* secs - a duration as Postfix writes it: two decimals at most, "0" for nothing */
static const char *secs(double v, char *buf, size_t size)
{
    if (v < 0.005) /* the usual delay of a step: no formatting */
        return size > 1 ? memcpy(buf, "0", 2) : buf;
    snprintf(buf, size, v < 100 ? "%.2f" : "%.0f", v);
    char *e = buf + strlen(buf) - 1;
    if (strchr(buf, '.')) {
        while (*e == '0')
            *e-- = 0;
        if (*e == '.')
            *e = 0;
    }
    return buf;
}

/* ts_diff - b - a in seconds, 0 when either is unset */
static double ts_diff(const struct timespec *a, const struct timespec *b)
{
    if ((a->tv_sec == 0 && a->tv_nsec == 0) || (b->tv_sec == 0 && b->tv_nsec == 0))
        return 0;
    double d = (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
    return d > 0 ? d : 0;
}

/* dsn_of - the enhanced code, or the class's default (RFC 3463) */
static const char *dsn_of(int code, const struct pc_enh *e, char *buf, size_t size)
{
    if (e && e->cls)
        return pc_enh_format(e, buf, (int)size);
    snprintf(buf, size, "%d.0.0", code / 100);
    return buf;
}

/* pc_txnlog_refusal - one line per refusal the client hears */
void pc_txnlog_refusal(struct pc_session *s, const char *what, const char *stage, int code,
                       const struct pc_enh *enh, const char *text, const char *filter,
                       const char *rule, const char *relay)
{
    struct pc_txn *t = s->txn;
    const char *to = t && t->cur_rcpt && !strcmp(stage, "RCPT") ? t->cur_rcpt->mb.addr : NULL;
    char client[PC_HOSTNAME_MAX * 4 + 80], es[20] = "", tx[4 * PC_VERDICT_TEXT + 8];
    char from[4 * 300], rcpt[4 * 300], helo[4 * (PC_HOSTNAME_MAX + 1)];
    bool dry = strcmp(what, "reject_warning") == 0;

    if (to == NULL && t && strcmp(stage, "END-OF-MESSAGE") == 0)
        for (size_t i = 0; i < t->nrcpt && to == NULL; i++)
            if (t->rcpts[i].flags & PC_RCPT_ACCEPTED)
                to = t->rcpts[i].mb.addr; /* Postfix names the first recipient */
    if (enh && enh->cls) {
        pc_enh_format(enh, es, sizeof(es) - 1);
        strcat(es, " ");
    }
    struct pc_log_fields f = {.queue_id = t ? t->id : NULL,
                              .client = client_of(s, client, sizeof(client)),
                              .filter = filter,
                              .rule = rule};
    pc_logf(LOG_INFO, &f,
            "%s: %s: %s from %s: %d %s%s; from=<%s>%s%s%s proto=%s helo=<%s>%s%s%s%s%s%s",
            t ? t->id : "NOQUEUE", what, stage, client, code, es, pc_log_text(tx, sizeof(tx), text),
            t ? pc_log_field(from, sizeof(from), t->from.addr) : "", to ? " to=<" : "",
            to ? pc_log_field(rcpt, sizeof(rcpt), to) : "", to ? ">" : "",
            s->esmtp ? "ESMTP" : "SMTP", s->helo ? pc_log_field(helo, sizeof(helo), s->helo) : "",
            filter ? " filter=" : "", filter ? filter : "", rule ? " rule=" : "", rule ? rule : "",
            relay ? " relay=" : "", relay ? relay : "");
    if (dry)
        return;
    if (t == NULL)
        return;
    if (strcmp(stage, "RCPT") == 0) {
        t->out.rejected_rcpts++;
        pc_metric_add(PC_M_RECIPIENTS, code / 100 == 4 ? "tempfail" : "rejected", NULL, 1);
        if (t->out.status)
            return;
    } else if (strcmp(what, "discard") == 0) {
        t->out.status = "discarded";
    } else {
        t->out.status = code / 100 == 4 ? "tempfail" : "rejected";
    }
    /* The last refusal speaks for the transaction in the summary. */
    t->out.code = code;
    t->out.enh = enh ? *enh : (struct pc_enh){0, 0, 0};
    t->out.text = pc_pool_strdup(t->pool, text);
    t->out.filter = filter;
    t->out.rule = rule ? pc_pool_strdup(t->pool, rule) : NULL;
    t->out.relay = relay ? pc_pool_strdup(t->pool, relay) : NULL;
}

/* pc_txnlog_verdict - a filter's refusal */
void pc_txnlog_verdict(struct pc_session *s, const struct pc_verdict *v, enum pc_stage st,
                       const char *what)
{
    pc_txnlog_refusal(s, what, pc_txnlog_stage(s, st), v->code, &v->enh, v->text,
                      v->filter ? v->filter : "-", v->rule, NULL);
}

/* pc_txnlog_delivered - Postfix's smtpd, qmgr and smtp lines for a message passed on */
void pc_txnlog_delivered(struct pc_session *s, const char *prog, const char *relay, int code,
                         const struct pc_enh *enh, const char *text)
{
    struct pc_txn *t = s->txn;
    char client[PC_HOSTNAME_MAX * 4 + 80], from[4 * 300], rcpt[4 * 300], tx[4 * 600];
    char dsn[20], d[5][24];
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    struct pc_log_fields f = {.queue_id = t->id, .client = client_of(s, client, sizeof(client))};
    pc_logf(LOG_INFO, &f, "%s: client=%s", t->id, client);
    f.prog = prog;
    pc_logf(LOG_INFO, &f, "%s: from=<%s>, size=%zu, nrcpt=%zu (queue active)", t->id,
            pc_log_field(from, sizeof(from), t->from.addr), t->msg.size, t->naccepted);
    double a = ts_diff(&t->out.t_mail, &t->out.t_eod), b = ts_diff(&t->out.t_eod, &t->out.t_eom),
           dd = ts_diff(&t->out.t_eom, &now), all = ts_diff(&t->out.t_mail, &now);
    dsn_of(code, enh, dsn, sizeof(dsn));
    pc_log_text(tx, sizeof(tx), text);
    for (size_t i = 0; i < t->nrcpt; i++) {
        if (!(t->rcpts[i].flags & PC_RCPT_ACCEPTED))
            continue;
        pc_logf(LOG_INFO, &f,
                "%s: to=<%s>, relay=%s, delay=%s, delays=%s/%s/0/%s, dsn=%s, status=sent (%d %s "
                "%s)",
                t->id, pc_log_field(rcpt, sizeof(rcpt), t->rcpts[i].mb.addr), relay,
                secs(all, d[0], sizeof(d[0])), secs(a, d[1], sizeof(d[1])),
                secs(b, d[2], sizeof(d[2])), secs(dd, d[3], sizeof(d[3])), dsn, code, dsn, tx);
        pc_metric_add(PC_M_RECIPIENTS, "sent", NULL, 1);
    }
    t->out.status = "sent";
    t->out.code = code;
    t->out.enh = enh ? *enh : (struct pc_enh){0, 0, 0};
    t->out.text = pc_pool_strdup(t->pool, text);
    t->out.relay = pc_pool_strdup(t->pool, relay);
}

/* pc_txnlog_discarded - Postfix logs a discard action like a refusal */
void pc_txnlog_discarded(struct pc_session *s)
{
    struct pc_txn *t = s->txn;

    if (t->out.status == NULL)
        t->out.status = "discarded";
}

/* pc_txnlog_end - JSON summary and the transaction counter */
void pc_txnlog_end(struct pc_session *s)
{
    struct pc_txn *t = s->txn;
    char client[PC_HOSTNAME_MAX * 4 + 80], js[4][1300], dsn[20], d[4][24], rc[4096];
    struct timespec now;

    if (t == NULL)
        return;
    const char *status = t->out.status;
    if (status == NULL && t->out.rejected_rcpts && t->naccepted == 0)
        status = "rejected";
    if (status == NULL)
        status = "abandoned"; /* RSET, QUIT or a lost connection before the end */
    pc_metric_add(PC_M_TRANSACTIONS, status, NULL, 1);
    if (pc_log_get_format() != PC_LOG_JSON)
        return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    size_t o = 0;
    rc[0] = 0;
    for (size_t i = 0; i < t->nrcpt && o + 10 < sizeof(rc); i++)
        if (t->rcpts[i].flags & PC_RCPT_ACCEPTED) {
            o += (size_t)snprintf(rc + o, sizeof(rc) - o, "%s%s", o ? "," : "",
                                  pc_json_str(js[0], sizeof(js[0]), t->rcpts[i].mb.addr));
            if (o >= sizeof(rc))
                o = sizeof(rc) - 1;
        }
    char members[8192];
    struct pc_log_fields f = {.queue_id = t->id,
                              .client = client_of(s, client, sizeof(client)),
                              .filter = t->out.filter,
                              .rule = t->out.rule};
    snprintf(members, sizeof(members),
             "\"event\":\"transaction\",\"outcome\":\"%s\",\"from\":%s,\"rcpt\":[%s],"
             "\"rejected_rcpts\":%u,\"size\":%zu,\"helo\":%s,\"code\":%d,\"dsn\":\"%s\","
             "\"reply\":%s,\"relay\":%s,\"delay\":%s,\"delays\":\"%s/%s/0/%s\"",
             status, pc_json_str(js[0], sizeof(js[0]), t->from.addr), rc, t->out.rejected_rcpts,
             t->msg.size, pc_json_str(js[1], sizeof(js[1]), s->helo ? s->helo : ""), t->out.code,
             t->out.code ? dsn_of(t->out.code, &t->out.enh, dsn, sizeof(dsn)) : "",
             pc_json_str(js[2], sizeof(js[2]), t->out.text ? t->out.text : ""),
             pc_json_str(js[3], sizeof(js[3]), t->out.relay ? t->out.relay : "none"),
             secs(ts_diff(&t->out.t_mail, &now), d[0], 24),
             secs(ts_diff(&t->out.t_mail, &t->out.t_eod), d[1], 24),
             secs(ts_diff(&t->out.t_eod, &t->out.t_eom), d[2], 24),
             secs(t->out.t_eom.tv_sec ? ts_diff(&t->out.t_eom, &now) : 0, d[3], 24));
    pc_log_event(LOG_INFO, &f, members);
}
