/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	metrics 3 - counters, gauges and histograms in Prometheus text format
 * DESCRIPTION
 *	Names follow Prometheus' conventions: a portcullis_ prefix, _total
 *	for counters, base units (_seconds, _bytes). Label sets are small and
 *	bounded by configuration (listeners, filters, rules), never by peers:
 *	no address, sender or HELO is ever a label value.
 * SEE ALSO
 *	https://prometheus.io/docs/instrumenting/exposition_formats/
 */
#include "lib/metrics.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/log.h"

enum pc_mtype { PC_COUNTER, PC_GAUGE, PC_HISTOGRAM };

#define PC_NBUCKETS 14
/* 100 us to 30 s: a filter's DNS answer, a backend's reply, a slow body scan. */
static const double pc_buckets[PC_NBUCKETS] = {0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                               0.05,   0.1,    0.25,  0.5,    1,     5,    30};

struct pc_series {
    struct pc_series *next;
    char *lv[2];
    double value, sum;
    unsigned long long count, buckets[PC_NBUCKETS];
};

struct pc_family {
    const char *name, *help;
    enum pc_mtype type;
    const char *labels[2];
    struct pc_series *head;
};

static struct pc_family pc_families[PC_M_COUNT] = {
    [PC_M_CONNECTIONS] = {"portcullis_connections_total",
                          "SMTP connections accepted",
                          PC_COUNTER,
                          {"listener", NULL},
                          NULL},
    [PC_M_CONNECTIONS_ACTIVE] = {"portcullis_connections_active",
                                 "SMTP connections open now",
                                 PC_GAUGE,
                                 {NULL, NULL},
                                 NULL},
    [PC_M_CONNECTIONS_REFUSED] = {"portcullis_connections_refused_total",
                                  "Connections refused with 421 at accept",
                                  PC_COUNTER,
                                  {"reason", NULL},
                                  NULL},
    [PC_M_TRANSACTIONS] = {"portcullis_transactions_total",
                           "Mail transactions by outcome (sent, rejected, tempfail, discarded, "
                           "abandoned)",
                           PC_COUNTER,
                           {"outcome", NULL},
                           NULL},
    [PC_M_RECIPIENTS] = {"portcullis_recipients_total",
                         "Recipients by outcome",
                         PC_COUNTER,
                         {"outcome", NULL},
                         NULL},
    [PC_M_REPLIES] = {"portcullis_replies_total",
                      "Replies to clients by code class",
                      PC_COUNTER,
                      {"class", NULL},
                      NULL},
    [PC_M_VERDICTS] = {"portcullis_verdicts_total",
                       "Filter decisions by filter and action",
                       PC_COUNTER,
                       {"filter", "action"},
                       NULL},
    [PC_M_RULE_HITS] =
        {"portcullis_rule_hits_total", "Rules that matched", PC_COUNTER, {"rule", NULL}, NULL},
    [PC_M_STAGE_SECONDS] = {"portcullis_stage_duration_seconds",
                            "Time the filter chain took per stage",
                            PC_HISTOGRAM,
                            {"stage", NULL},
                            NULL},
    [PC_M_BACKEND_SECONDS] = {"portcullis_backend_reply_duration_seconds",
                              "Time from a command to the backend's reply",
                              PC_HISTOGRAM,
                              {"command", NULL},
                              NULL},
    [PC_M_BACKEND_ERRORS] = {"portcullis_backend_errors_total",
                             "Backend unreachable, timed out or broken, by command",
                             PC_COUNTER,
                             {"command", NULL},
                             NULL},
    [PC_M_BACKEND_UP] = {"portcullis_backend_up",
                         "1 when the backend's last answer was its own, 0 when it could not be "
                         "reached, timed out or broke",
                         PC_GAUGE,
                         {"backend", NULL},
                         NULL},
    [PC_M_DNS_SECONDS] = {"portcullis_dns_query_duration_seconds",
                          "DNS lookups by result",
                          PC_HISTOGRAM,
                          {"result", NULL},
                          NULL},
    [PC_M_REDIS_SECONDS] = {"portcullis_redis_request_duration_seconds",
                            "Rate limit store requests by result",
                            PC_HISTOGRAM,
                            {"result", NULL},
                            NULL},
    [PC_M_REDIS_UP] = {"portcullis_redis_up",
                       "1 when the Redis server answers",
                       PC_GAUGE,
                       {"server", NULL},
                       NULL},
    [PC_M_SPOOL_BYTES] = {"portcullis_spool_bytes",
                          "Message bytes held now, in memory or file",
                          PC_GAUGE,
                          {"where", NULL},
                          NULL},
    [PC_M_MESSAGE_BYTES] = {"portcullis_message_bytes_total",
                            "Message bytes received",
                            PC_COUNTER,
                            {NULL, NULL},
                            NULL},
    [PC_M_RELOADS] = {"portcullis_reloads_total",
                      "Configuration reloads by result",
                      PC_COUNTER,
                      {"result", NULL},
                      NULL},
    [PC_M_START_TIME] = {"portcullis_start_time_seconds",
                         "Start time, seconds since the epoch",
                         PC_GAUGE,
                         {NULL, NULL},
                         NULL},
    [PC_M_SCRAPES] = {"portcullis_metrics_scrapes_total",
                      "Scrapes of this endpoint",
                      PC_COUNTER,
                      {NULL, NULL},
                      NULL},
    /* Set only with workers > 1: each worker counts for itself and worker 0 serves the
     * scrape, so a reader must know the figures are a 1/N sample, not the host's total. */
    [PC_M_WORKERS] = {"portcullis_workers",
                      "Worker processes; every other figure in this scrape is worker 0's alone",
                      PC_GAUGE,
                      {NULL, NULL},
                      NULL},
    [PC_M_PS_FAILS] = {"portcullis_postscreen_failures_total",
                       "Postscreen checks a client failed, by check and configured action",
                       PC_COUNTER,
                       {"check", "action"},
                       NULL},
    [PC_M_PS_RESULTS] = {"portcullis_postscreen_results_total",
                         "Postscreen outcomes: pass_new, pass_old, skip, hangup",
                         PC_COUNTER,
                         {"result", NULL},
                         NULL},
};

static pthread_mutex_t pc_metrics_lock = PTHREAD_MUTEX_INITIALIZER;

/* xstrdup - copy or die */
static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        pc_fatal("out of memory"); /* as lib/pool.c and lib/buf.c: exit, systemd restarts */
    return d;
}

/* series - find or create; called with the lock held */
static struct pc_series *series(struct pc_family *f, const char *l1, const char *l2)
{
    const char *lv[2] = {f->labels[0] ? (l1 ? l1 : "") : NULL,
                         f->labels[1] ? (l2 ? l2 : "") : NULL};
    struct pc_series **p;

    for (p = &f->head; *p; p = &(*p)->next) {
        struct pc_series *s = *p;
        if ((lv[0] == NULL || strcmp(s->lv[0], lv[0]) == 0) &&
            (lv[1] == NULL || strcmp(s->lv[1], lv[1]) == 0))
            return s;
    }
    struct pc_series *s = calloc(1, sizeof(*s));
    if (s == NULL)
        pc_fatal("out of memory"); /* as lib/pool.c and lib/buf.c: exit, systemd restarts */
    for (int i = 0; i < 2; i++)
        s->lv[i] = lv[i] ? xstrdup(lv[i]) : NULL;
    *p = s; /* appended: output order is first-use order, stable between scrapes */
    return s;
}

/* pc_metric_add - counter or gauge += v */
void pc_metric_add(enum pc_metric_id id, const char *l1, const char *l2, double v)
{
    pthread_mutex_lock(&pc_metrics_lock);
    series(&pc_families[id], l1, l2)->value += v;
    pthread_mutex_unlock(&pc_metrics_lock);
}

/* pc_metric_set - gauge = v */
void pc_metric_set(enum pc_metric_id id, const char *l1, const char *l2, double v)
{
    pthread_mutex_lock(&pc_metrics_lock);
    series(&pc_families[id], l1, l2)->value = v;
    pthread_mutex_unlock(&pc_metrics_lock);
}

/* pc_metric_observe - one histogram sample */
void pc_metric_observe(enum pc_metric_id id, const char *l1, double v)
{
    pthread_mutex_lock(&pc_metrics_lock);
    struct pc_series *s = series(&pc_families[id], l1, NULL);
    s->sum += v;
    s->count++;
    for (int i = 0; i < PC_NBUCKETS; i++)
        if (v <= pc_buckets[i])
            s->buckets[i]++;
    pthread_mutex_unlock(&pc_metrics_lock);
}

/* put_label_value - exposition format escaping: backslash, quote, newline */
static void put_label_value(struct pc_buf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            pc_buf_putc(b, '\\'), pc_buf_putc(b, *v);
        else if (*v == '\n')
            pc_buf_puts(b, "\\n");
        else
            pc_buf_putc(b, *v);
    }
}

/* put_labels - {a="x",b="y"} plus an optional le, or nothing */
static void put_labels(struct pc_buf *b, const struct pc_family *f, const struct pc_series *s,
                       const char *le)
{
    bool any = false;

    for (int i = 0; i < 2; i++)
        if (f->labels[i]) {
            pc_buf_puts(b, any ? "," : "{");
            pc_buf_printf(b, "%s=\"", f->labels[i]);
            put_label_value(b, s->lv[i]);
            pc_buf_putc(b, '"');
            any = true;
        }
    if (le) {
        pc_buf_printf(b, "%sle=\"%s\"", any ? "," : "{", le);
        any = true;
    }
    if (any)
        pc_buf_putc(b, '}');
}

/* put_value - a sample value as Prometheus reads it */
static void put_value(struct pc_buf *b, double v)
{
    if (v == (double)(long long)v && v < 1e15 && v > -1e15)
        pc_buf_printf(b, " %lld\n", (long long)v);
    else
        pc_buf_printf(b, " %.9g\n", v);
}

/* pc_metrics_render - the whole exposition */
void pc_metrics_render(struct pc_buf *b)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};

    pthread_mutex_lock(&pc_metrics_lock);
    for (int id = 0; id < PC_M_COUNT; id++) {
        const struct pc_family *f = &pc_families[id];
        pc_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, types[f->type]);
        if (f->head == NULL && f->type != PC_HISTOGRAM && f->labels[0] == NULL) {
            pc_buf_printf(b, "%s 0\n", f->name); /* an unlabelled series always exists */
            continue;
        }
        for (const struct pc_series *s = f->head; s; s = s->next) {
            if (f->type != PC_HISTOGRAM) {
                pc_buf_puts(b, f->name);
                put_labels(b, f, s, NULL);
                put_value(b, s->value);
                continue;
            }
            for (int i = 0; i <= PC_NBUCKETS; i++) {
                char le[32];
                if (i == PC_NBUCKETS)
                    snprintf(le, sizeof(le), "+Inf");
                else
                    snprintf(le, sizeof(le), "%g", pc_buckets[i]);
                pc_buf_printf(b, "%s_bucket", f->name);
                put_labels(b, f, s, le);
                put_value(b, (double)(i == PC_NBUCKETS ? s->count : s->buckets[i]));
            }
            pc_buf_printf(b, "%s_sum", f->name);
            put_labels(b, f, s, NULL);
            put_value(b, s->sum);
            pc_buf_printf(b, "%s_count", f->name);
            put_labels(b, f, s, NULL);
            put_value(b, (double)s->count);
        }
    }
    pthread_mutex_unlock(&pc_metrics_lock);
}

/* pc_metrics_reset - forget every series */
void pc_metrics_reset(void)
{
    pthread_mutex_lock(&pc_metrics_lock);
    for (int id = 0; id < PC_M_COUNT; id++) {
        struct pc_series *s = pc_families[id].head, *n;
        for (; s; s = n) {
            n = s->next;
            free(s->lv[0]);
            free(s->lv[1]);
            free(s);
        }
        pc_families[id].head = NULL;
    }
    pthread_mutex_unlock(&pc_metrics_lock);
}

/* pc_seconds_since - monotonic seconds since t */
double pc_seconds_since(const void *arg)
{
    const struct timespec *t = arg;
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + (double)(now.tv_nsec - t->tv_nsec) / 1e9;
}
