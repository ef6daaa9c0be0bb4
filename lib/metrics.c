/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	metrics 3 - counters, gauges and histograms in Prometheus text format
 * DESCRIPTION
 *	Names follow Prometheus' conventions: a portcullis_ prefix, _total
 *	for counters, base units (_seconds, _bytes). Label sets are small and
 *	bounded by configuration (listeners, filters, rules), never by peers:
 *	no address, sender or HELO is ever a label value.
 *
 *	Storage: a region of slots, one per process that counts. A process
 *	writes only to its own slot and renders the merge of every slot.
 *	With workers = 1 the region is private and has one slot, so the
 *	exposition is that process's, as it always was. With workers = N the
 *	parent creates a shared region (MAP_SHARED, before it forks) with a
 *	slot per worker plus one of its own; a worker that dies leaves its
 *	slot, and its replacement carries on counting in it, so no counter
 *	the endpoint shows ever goes back while the parent lives.
 *
 *	A slot is a fixed table of series (PC_MSERIES) with one list per
 *	family, threaded through the table by index. Updates take no lock:
 *	values change with atomic instructions (the loop thread and the
 *	worker threads that evaluate rules may count the same series), and a
 *	new series is published with a release store after it is complete,
 *	so a reader in another process, or one killed half-way through a
 *	creation, never sees half a series. Only creation takes a mutex,
 *	private to the process. A slot that is full drops the updates of new
 *	series and counts them (portcullis_metrics_series_dropped_total),
 *	logging once per process.
 *	Histogram buckets are stored per interval and made cumulative when
 *	rendered.
 *
 *	Merging: counters and histograms add up. Gauges merge by kind (enum
 *	pc_merge): what every process holds now adds up (connections open,
 *	spool bytes; the parent zeroes a dead worker's, which went with it);
 *	a peer's state (backend_up, redis_up) is the most recent observation
 *	by any worker, ordered by a sequence shared by the region; what every
 *	process reports alike (workers, start time, reloads) is the largest.
 * SEE ALSO
 *	https://prometheus.io/docs/instrumenting/exposition_formats/
 */
#include "lib/metrics.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "lib/buf.h"
#include "lib/log.h"

enum pc_mtype { PC_COUNTER, PC_GAUGE, PC_HISTOGRAM };

#define PC_NBUCKETS 14
/* 100 us to 30 s: a filter's DNS answer, a backend's reply, a slow body scan. */
static const double pc_buckets[PC_NBUCKETS] = {0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                               0.05,   0.1,    0.25,  0.5,    1,     5,    30};

/* How the slots' values of one series make the exposed one. */
enum pc_merge {
    PC_MERGE_SUM,      /* counters, histograms: every process's work, dead or alive */
    PC_MERGE_SUM_LIVE, /* gauges of what processes hold now; a dead worker's is zeroed */
    PC_MERGE_LATEST,   /* gauges of a peer's state: the most recent observation wins */
    PC_MERGE_MAX       /* gauges and counters every process reports alike */
};

#define PC_MSERIES 2048 /* series per slot */
#define PC_MLABEL0 96   /* bytes of the first label value, NUL included (longer: cut) */
#define PC_MLABEL1 32   /* of the second (actions) */

/* One series in a slot (shared memory with workers: no pointers, only indexes). */
struct pc_mseries {
    uint32_t next;   /* index + 1 of the family's next series; 0: last */
    uint32_t family; /* enum pc_metric_id */
    char lv0[PC_MLABEL0], lv1[PC_MLABEL1];
    double value, sum;
    uint64_t count, stamp;         /* stamp: region sequence at the last set (LATEST) */
    uint64_t buckets[PC_NBUCKETS]; /* samples in (bucket i-1, bucket i], not cumulative */
};

/* What one process counts. */
struct pc_mslot {
    uint32_t head[PC_M_COUNT]; /* index + 1 of each family's first series */
    uint32_t used;             /* series taken */
    uint64_t dropped;          /* series that found the slot full */
    struct pc_mseries s[PC_MSERIES];
};

/* Every worker bumps seq: alone on its cache line, away from slot 0's lists (false sharing). */
struct pc_metrics_region {
    size_t size;
    unsigned nslots;
    _Alignas(64) uint64_t seq; /* orders LATEST gauges across processes */
    _Alignas(64) struct pc_mslot slots[];
};

struct pc_family {
    const char *name, *help;
    enum pc_mtype type;
    const char *labels[2];
    enum pc_merge merge;
};

static struct pc_family pc_families[PC_M_COUNT] = {
    [PC_M_CONNECTIONS] = {"portcullis_connections_total",
                          "SMTP connections accepted",
                          PC_COUNTER,
                          {"listener", NULL},
                          PC_MERGE_SUM},
    [PC_M_CONNECTIONS_ACTIVE] = {"portcullis_connections_active",
                                 "SMTP connections open now",
                                 PC_GAUGE,
                                 {NULL, NULL},
                                 PC_MERGE_SUM_LIVE},
    [PC_M_CONNECTIONS_REFUSED] = {"portcullis_connections_refused_total",
                                  "Connections refused with 421 at accept",
                                  PC_COUNTER,
                                  {"reason", NULL},
                                  PC_MERGE_SUM},
    [PC_M_TRANSACTIONS] = {"portcullis_transactions_total",
                           "Mail transactions by outcome (sent, rejected, tempfail, discarded, "
                           "abandoned)",
                           PC_COUNTER,
                           {"outcome", NULL},
                           PC_MERGE_SUM},
    [PC_M_RECIPIENTS] = {"portcullis_recipients_total",
                         "Recipients by outcome",
                         PC_COUNTER,
                         {"outcome", NULL},
                         PC_MERGE_SUM},
    [PC_M_REPLIES] = {"portcullis_replies_total",
                      "Replies to clients by code class",
                      PC_COUNTER,
                      {"class", NULL},
                      PC_MERGE_SUM},
    [PC_M_VERDICTS] = {"portcullis_verdicts_total",
                       "Filter decisions by filter and action",
                       PC_COUNTER,
                       {"filter", "action"},
                       PC_MERGE_SUM},
    [PC_M_RULE_HITS] = {"portcullis_rule_hits_total",
                        "Rules that matched",
                        PC_COUNTER,
                        {"rule", NULL},
                        PC_MERGE_SUM},
    [PC_M_STAGE_SECONDS] = {"portcullis_stage_duration_seconds",
                            "Time the filter chain took per stage",
                            PC_HISTOGRAM,
                            {"stage", NULL},
                            PC_MERGE_SUM},
    [PC_M_BACKEND_SECONDS] = {"portcullis_backend_reply_duration_seconds",
                              "Time from a command to the backend's reply",
                              PC_HISTOGRAM,
                              {"command", NULL},
                              PC_MERGE_SUM},
    [PC_M_BACKEND_ERRORS] = {"portcullis_backend_errors_total",
                             "Backend unreachable, timed out or broken, by command",
                             PC_COUNTER,
                             {"command", NULL},
                             PC_MERGE_SUM},
    [PC_M_BACKEND_UP] = {"portcullis_backend_up",
                         "1 when the backend's last answer was its own, 0 when it could not be "
                         "reached, timed out or broke",
                         PC_GAUGE,
                         {"backend", NULL},
                         PC_MERGE_LATEST},
    [PC_M_DNS_SECONDS] = {"portcullis_dns_query_duration_seconds",
                          "DNS lookups by result",
                          PC_HISTOGRAM,
                          {"result", NULL},
                          PC_MERGE_SUM},
    [PC_M_REDIS_SECONDS] = {"portcullis_redis_request_duration_seconds",
                            "Rate limit store requests by result",
                            PC_HISTOGRAM,
                            {"result", NULL},
                            PC_MERGE_SUM},
    [PC_M_REDIS_UP] = {"portcullis_redis_up",
                       "1 when the Redis server answers",
                       PC_GAUGE,
                       {"server", NULL},
                       PC_MERGE_LATEST},
    [PC_M_SPOOL_BYTES] = {"portcullis_spool_bytes",
                          "Message bytes held now, in memory or file",
                          PC_GAUGE,
                          {"where", NULL},
                          PC_MERGE_SUM_LIVE},
    [PC_M_MESSAGE_BYTES] = {"portcullis_message_bytes_total",
                            "Message bytes received",
                            PC_COUNTER,
                            {NULL, NULL},
                            PC_MERGE_SUM},
    [PC_M_RELOADS] = {"portcullis_reloads_total",
                      "Configuration reloads by result",
                      PC_COUNTER,
                      {"result", NULL},
                      PC_MERGE_MAX},
    [PC_M_START_TIME] = {"portcullis_start_time_seconds",
                         "Start time, seconds since the epoch",
                         PC_GAUGE,
                         {NULL, NULL},
                         PC_MERGE_MAX},
    [PC_M_SCRAPES] = {"portcullis_metrics_scrapes_total",
                      "Scrapes of this endpoint",
                      PC_COUNTER,
                      {NULL, NULL},
                      PC_MERGE_SUM},
    [PC_M_WORKERS] = {"portcullis_workers",
                      "Worker processes; every figure in this scrape is the sum over all of them",
                      PC_GAUGE,
                      {NULL, NULL},
                      PC_MERGE_MAX},
    [PC_M_PS_FAILS] = {"portcullis_postscreen_failures_total",
                       "Postscreen checks a client failed, by check and configured action",
                       PC_COUNTER,
                       {"check", "action"},
                       PC_MERGE_SUM},
    [PC_M_PS_RESULTS] = {"portcullis_postscreen_results_total",
                         "Postscreen outcomes: pass_new, pass_old, skip, hangup",
                         PC_COUNTER,
                         {"result", NULL},
                         PC_MERGE_SUM},
    [PC_M_SERIES_DROPPED] = {"portcullis_metrics_series_dropped_total",
                             "Updates not counted because a process's table of series was full",
                             PC_COUNTER,
                             {NULL, NULL},
                             PC_MERGE_SUM},
};

static pthread_mutex_t pc_metrics_lock = PTHREAD_MUTEX_INITIALIZER; /* creation only */
static pthread_once_t pc_metrics_once = PTHREAD_ONCE_INIT;
static struct pc_metrics_region *pc_region; /* what this process renders */
static struct pc_mslot *pc_mine;            /* where it counts */
static struct pc_mseries pc_overflow;       /* where a series that found no room counts */
static bool pc_overflow_logged;

/* pc_metrics_region_new - a region of nslots empty slots; shared: MAP_SHARED, for workers */
struct pc_metrics_region *pc_metrics_region_new(unsigned nslots, bool shared)
{
    size_t size = sizeof(struct pc_metrics_region) + (size_t)nslots * sizeof(struct pc_mslot);
    /* Anonymous pages: untouched series cost no memory (about 570 kB of address space per slot,
     * reserved nowhere). */
    struct pc_metrics_region *r =
        mmap(NULL, size, PROT_READ | PROT_WRITE,
             (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

    if (r == MAP_FAILED)
        pc_fatal("out of memory"); /* as lib/pool.c and lib/buf.c: exit, systemd restarts */
    r->size = size;
    r->nslots = nslots;
    return r;
}

/* private_region - workers = 1, tests, portcullis test: one slot of our own */
static void private_region(void)
{
    if (pc_mine == NULL)
        pc_metrics_attach(pc_metrics_region_new(1, false), 0);
}

/* pc_metrics_attach - count in slot i of r from now on, render all of r */
void pc_metrics_attach(struct pc_metrics_region *r, unsigned i)
{
    pc_region = r;
    pc_mine = &r->slots[i < r->nslots ? i : r->nslots - 1];
}

/* mine - this process's slot */
static inline struct pc_mslot *mine(void)
{
    if (__builtin_expect(pc_mine == NULL, 0))
        pthread_once(&pc_metrics_once, private_region);
    return pc_mine;
}

/* at - series number idx (index + 1) of a slot, or NULL past the end or at 0 */
static inline struct pc_mseries *at(struct pc_mslot *m, uint32_t idx)
{
    return idx - 1 < PC_MSERIES ? &m->s[idx - 1] : NULL;
}

/* label_eq - a stored value equals v as it was stored (cut to cap - 1 bytes) */
static inline bool label_eq(const char *stored, const char *v, size_t cap)
{
    size_t i = 0;

    for (; i < cap - 1 && v[i]; i++)
        if (stored[i] != v[i])
            return false;
    return stored[i] == 0;
}

/* label_copy - store v, cut to cap - 1 bytes */
static void label_copy(char *d, const char *v, size_t cap)
{
    size_t n = strlen(v);

    if (n > cap - 1)
        n = cap - 1;
    memcpy(d, v, n);
    d[n] = 0;
}

/* find - the series with these label values in a family list, or NULL; *last: its end */
static struct pc_mseries *find(struct pc_mslot *m, unsigned fam, const char *l1, const char *l2,
                               uint32_t **last)
{
    uint32_t *link = &m->head[fam];
    struct pc_mseries *e;

    /* Bounded, as a slot another process wrote may be read here. */
    for (int n = 0; n < PC_MSERIES && (e = at(m, __atomic_load_n(link, __ATOMIC_ACQUIRE))); n++) {
        if (label_eq(e->lv0, l1, PC_MLABEL0) && label_eq(e->lv1, l2, PC_MLABEL1))
            return e;
        link = &e->next;
    }
    if (last)
        *last = link;
    return NULL;
}

/* create - a new series at the end of its family's list, published once complete */
static struct pc_mseries *create(struct pc_mslot *m, unsigned fam, const char *l1, const char *l2)
{
    uint32_t *link = NULL;

    pthread_mutex_lock(&pc_metrics_lock);
    struct pc_mseries *e = find(m, fam, l1, l2, &link); /* another thread may have made it */
    if (e == NULL && m->used < PC_MSERIES) {
        e = &m->s[m->used];
        memset(e, 0, sizeof(*e)); /* a worker killed while making it may have left bytes */
        e->family = fam;
        label_copy(e->lv0, l1, PC_MLABEL0);
        label_copy(e->lv1, l2, PC_MLABEL1);
        __atomic_store_n(&m->used, m->used + 1, __ATOMIC_RELEASE);
        __atomic_store_n(link, m->used, __ATOMIC_RELEASE); /* appended: first-use order */
    } else if (e == NULL) {
        __atomic_fetch_add(&m->dropped, 1, __ATOMIC_RELAXED);
        e = &pc_overflow;
        if (!pc_overflow_logged)
            pc_warn("metrics: more than %d series; new ones are not counted", PC_MSERIES);
        pc_overflow_logged = true;
    }
    pthread_mutex_unlock(&pc_metrics_lock);
    return e;
}

/* series - find or create in this process's slot */
static inline struct pc_mseries *series(unsigned fam, const char *l1, const char *l2)
{
    struct pc_mslot *m = mine();
    const struct pc_family *f = &pc_families[fam];

    l1 = f->labels[0] && l1 ? l1 : "";
    l2 = f->labels[1] && l2 ? l2 : "";
    struct pc_mseries *e = find(m, fam, l1, l2, NULL);
    return e ? e : create(m, fam, l1, l2);
}

/* add_double - *p += v, atomically (relaxed: only the sum matters) */
static inline void add_double(double *p, double v)
{
    double old, sum;

    __atomic_load(p, &old, __ATOMIC_RELAXED);
    do
        sum = old + v;
    while (!__atomic_compare_exchange(p, &old, &sum, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
}

/* pc_metric_add - counter or gauge += v */
void pc_metric_add(enum pc_metric_id id, const char *l1, const char *l2, double v)
{
    add_double(&series(id, l1, l2)->value, v);
}

/* pc_metric_set - gauge = v */
void pc_metric_set(enum pc_metric_id id, const char *l1, const char *l2, double v)
{
    struct pc_mseries *e = series(id, l1, l2);

    __atomic_store(&e->value, &v, __ATOMIC_RELAXED);
    if (pc_families[id].merge == PC_MERGE_LATEST)
        __atomic_store_n(&e->stamp, __atomic_add_fetch(&pc_region->seq, 1, __ATOMIC_RELAXED),
                         __ATOMIC_RELAXED);
}

/* pc_metric_observe - one histogram sample */
void pc_metric_observe(enum pc_metric_id id, const char *l1, double v)
{
    struct pc_mseries *e = series(id, l1, NULL);
    int i = 0;

    while (i < PC_NBUCKETS && v > pc_buckets[i])
        i++;
    add_double(&e->sum, v);
    __atomic_fetch_add(&e->count, 1, __ATOMIC_RELAXED);
    if (i < PC_NBUCKETS)
        __atomic_fetch_add(&e->buckets[i], 1, __ATOMIC_RELAXED);
}

/* put_label_value - exposition format escaping: backslash, quote, newline */
static void put_label_value(struct pc_buf *b, const char *v, size_t cap)
{
    for (size_t i = 0; i < cap && v[i]; i++) {
        if (v[i] == '\\' || v[i] == '"')
            pc_buf_putc(b, '\\'), pc_buf_putc(b, v[i]);
        else if (v[i] == '\n')
            pc_buf_puts(b, "\\n");
        else
            pc_buf_putc(b, v[i]);
    }
}

/* put_labels - {a="x",b="y"} plus an optional le, or nothing */
static void put_labels(struct pc_buf *b, const struct pc_family *f, const struct pc_mseries *s,
                       const char *le)
{
    const char *lv[2] = {s->lv0, s->lv1};
    const size_t cap[2] = {PC_MLABEL0, PC_MLABEL1};
    bool any = false;

    for (int i = 0; i < 2; i++)
        if (f->labels[i]) {
            pc_buf_puts(b, any ? "," : "{");
            pc_buf_printf(b, "%s=\"", f->labels[i]);
            put_label_value(b, lv[i], cap[i]);
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

/* One series of the exposition: the merge of the slots' series with its labels. */
struct pc_merged {
    const struct pc_mseries *key; /* the first slot's, for the label values */
    uint32_t next;                /* index + 1 of the family's next merged series */
    double value, sum;
    uint64_t count, stamp, buckets[PC_NBUCKETS];
};

struct pc_merge_state {
    struct pc_merged *v;
    uint32_t n, cap, *hash, mask;
    uint32_t head[PC_M_COUNT], tail[PC_M_COUNT];
};

/* key_hash - FNV-1a of the family and both label values */
static uint32_t key_hash(const struct pc_mseries *e)
{
    uint32_t h = 2166136261u ^ e->family;

    for (size_t i = 0; i < PC_MLABEL0 && e->lv0[i]; i++)
        h = (h ^ (unsigned char)e->lv0[i]) * 16777619u;
    h = (h ^ 0xff) * 16777619u;
    for (size_t i = 0; i < PC_MLABEL1 && e->lv1[i]; i++)
        h = (h ^ (unsigned char)e->lv1[i]) * 16777619u;
    return h;
}

/* same_key - two slots' series are one series of the exposition */
static bool same_key(const struct pc_mseries *a, const struct pc_mseries *b)
{
    return a->family == b->family && strncmp(a->lv0, b->lv0, PC_MLABEL0) == 0 &&
           strncmp(a->lv1, b->lv1, PC_MLABEL1) == 0;
}

/* load_double - a value another process may be writing */
static double load_double(const double *p)
{
    double v;

    __atomic_load(p, &v, __ATOMIC_RELAXED);
    return v;
}

/* merge_one - fold a slot's series into the exposition */
static void merge_one(struct pc_merge_state *st, const struct pc_mseries *e)
{
    const struct pc_family *f = &pc_families[e->family];
    uint32_t h = key_hash(e) & st->mask;
    struct pc_merged *m;

    while (st->hash[h] && !same_key(st->v[st->hash[h] - 1].key, e))
        h = (h + 1) & st->mask;
    double value = load_double(&e->value);
    uint64_t stamp = __atomic_load_n(&e->stamp, __ATOMIC_RELAXED);
    if (st->hash[h] == 0) {
        if (st->n == st->cap)
            return; /* published after "used" was read (merge): in the next scrape */
        m = &st->v[st->n++];
        st->hash[h] = st->n;
        m->key = e;
        m->value = value;
        m->stamp = stamp;
        if (st->tail[e->family])
            st->v[st->tail[e->family] - 1].next = st->n;
        else
            st->head[e->family] = st->n;
        st->tail[e->family] = st->n;
    } else {
        m = &st->v[st->hash[h] - 1];
        if (f->merge == PC_MERGE_SUM || f->merge == PC_MERGE_SUM_LIVE)
            m->value += value;
        else if (f->merge == PC_MERGE_MAX && value > m->value)
            m->value = value;
        else if (f->merge == PC_MERGE_LATEST && stamp > m->stamp)
            m->value = value, m->stamp = stamp;
    }
    if (f->type != PC_HISTOGRAM)
        return;
    m->sum += load_double(&e->sum);
    m->count += __atomic_load_n(&e->count, __ATOMIC_RELAXED);
    for (int i = 0; i < PC_NBUCKETS; i++)
        m->buckets[i] += __atomic_load_n(&e->buckets[i], __ATOMIC_RELAXED);
}

/* merge - every slot of the region into one set of series; dropped: the slots' overflow */
static void merge(struct pc_merge_state *st, uint64_t *dropped)
{
    uint32_t total = 0, size = 16;

    memset(st, 0, sizeof(*st));
    *dropped = 0;
    for (unsigned k = 0; k < pc_region->nslots; k++) {
        uint32_t used = __atomic_load_n(&pc_region->slots[k].used, __ATOMIC_ACQUIRE);
        total += used < PC_MSERIES ? used : PC_MSERIES;
        *dropped += __atomic_load_n(&pc_region->slots[k].dropped, __ATOMIC_RELAXED);
    }
    while (size < 2 * total)
        size *= 2;
    st->v = calloc(total ? total : 1, sizeof(*st->v));
    st->hash = calloc(size, sizeof(*st->hash));
    if (st->v == NULL || st->hash == NULL)
        pc_fatal("out of memory");
    st->mask = size - 1;
    st->cap = total;
    for (unsigned k = 0; k < pc_region->nslots; k++) {
        struct pc_mslot *m = &pc_region->slots[k];
        for (unsigned fam = 0; fam < PC_M_COUNT; fam++) {
            const uint32_t *link = &m->head[fam];
            const struct pc_mseries *e;
            for (int n = 0; n < PC_MSERIES && (e = at(m, __atomic_load_n(link, __ATOMIC_ACQUIRE)));
                 n++, link = &e->next)
                if (e->family == fam)
                    merge_one(st, e);
        }
    }
}

/* put_series - one merged series, or a histogram's buckets, sum and count */
static void put_series(struct pc_buf *b, const struct pc_family *f, const struct pc_merged *m)
{
    uint64_t cum = 0;

    if (f->type != PC_HISTOGRAM) {
        pc_buf_puts(b, f->name);
        put_labels(b, f, m->key, NULL);
        put_value(b, m->value);
        return;
    }
    for (int i = 0; i <= PC_NBUCKETS; i++) {
        char le[32];
        if (i == PC_NBUCKETS)
            snprintf(le, sizeof(le), "+Inf");
        else
            snprintf(le, sizeof(le), "%g", pc_buckets[i]);
        /* A sample counted but not yet in its bucket (or by a worker killed in between) must
         * not make a bucket exceed +Inf: the count bounds every bucket. */
        cum += i < PC_NBUCKETS ? m->buckets[i] : 0;
        pc_buf_printf(b, "%s_bucket", f->name);
        put_labels(b, f, m->key, le);
        put_value(b, (double)(i == PC_NBUCKETS || cum > m->count ? m->count : cum));
    }
    pc_buf_printf(b, "%s_sum", f->name);
    put_labels(b, f, m->key, NULL);
    put_value(b, m->sum);
    pc_buf_printf(b, "%s_count", f->name);
    put_labels(b, f, m->key, NULL);
    put_value(b, (double)m->count);
}

/* pc_metrics_render - the whole exposition: every slot's series merged */
void pc_metrics_render(struct pc_buf *b)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    struct pc_merge_state st;
    uint64_t dropped;

    mine();
    merge(&st, &dropped);
    for (int id = 0; id < PC_M_COUNT; id++) {
        const struct pc_family *f = &pc_families[id];
        pc_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, types[f->type]);
        if (id == PC_M_SERIES_DROPPED) {
            pc_buf_printf(b, "%s %llu\n", f->name, (unsigned long long)dropped);
            continue;
        }
        if (st.head[id] == 0 && f->type != PC_HISTOGRAM && f->labels[0] == NULL) {
            pc_buf_printf(b, "%s 0\n", f->name); /* an unlabelled series always exists */
            continue;
        }
        for (uint32_t i = st.head[id]; i; i = st.v[i - 1].next)
            put_series(b, f, &st.v[i - 1]);
    }
    free(st.v);
    free(st.hash);
}

/* pc_metrics_slot_gone - the worker that counted in slot i died: what it held went with it */
void pc_metrics_slot_gone(struct pc_metrics_region *r, unsigned i)
{
    struct pc_mslot *m;
    const double zero = 0;

    if (r == NULL || i >= r->nslots)
        return;
    m = &r->slots[i];
    uint32_t used = __atomic_load_n(&m->used, __ATOMIC_ACQUIRE);
    for (uint32_t k = 0; k < used && k < PC_MSERIES; k++)
        if (m->s[k].family < PC_M_COUNT && pc_families[m->s[k].family].merge == PC_MERGE_SUM_LIVE)
            __atomic_store(&m->s[k].value, &zero, __ATOMIC_RELAXED);
}

/* pc_metrics_reset - forget every series of the region (tests) */
void pc_metrics_reset(void)
{
    mine();
    pthread_mutex_lock(&pc_metrics_lock);
    for (unsigned k = 0; k < pc_region->nslots; k++) {
        struct pc_mslot *m = &pc_region->slots[k];
        memset(m->head, 0, sizeof(m->head));
        m->used = 0;
        m->dropped = 0;
    }
    pc_region->seq = 0;
    pc_overflow_logged = false;
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
