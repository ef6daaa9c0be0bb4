/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	metrics 3h - counters, gauges and histograms in Prometheus text format
 * DESCRIPTION
 *	A fixed set of metric families (declared in lib/metrics.c, so that a
 *	typo in a name cannot make a new one) with up to two labels each.
 *	Series are created on first use; label values are copied. Every call
 *	is thread-safe and cheap (a short list walk and atomic instructions,
 *	no lock, no system call). With workers, each process counts in its
 *	slot of a region its parent shares, and the exposition is the merge
 *	of every slot. Rendering follows the text exposition format 0.0.4.
 * SEE ALSO
 *	https://prometheus.io/docs/instrumenting/exposition_formats/
 *	https://prometheus.io/docs/practices/naming/
 */
#ifndef PC_METRICS_H
#define PC_METRICS_H

#include <stdbool.h>

struct pc_buf;
struct pc_metrics_region;

enum pc_metric_id {
    PC_M_CONNECTIONS,         /* counter {listener} */
    PC_M_CONNECTIONS_ACTIVE,  /* gauge */
    PC_M_CONNECTIONS_REFUSED, /* counter {reason} */
    PC_M_TRANSACTIONS,        /* counter {outcome} */
    PC_M_RECIPIENTS,          /* counter {outcome} */
    PC_M_REPLIES,             /* counter {class} */
    PC_M_VERDICTS,            /* counter {filter, action} */
    PC_M_RULE_HITS,           /* counter {rule} */
    PC_M_STAGE_SECONDS,       /* histogram {stage} */
    PC_M_BACKEND_SECONDS,     /* histogram {command} */
    PC_M_BACKEND_ERRORS,      /* counter {command} */
    PC_M_BACKEND_UP,          /* gauge {backend} */
    PC_M_DNS_SECONDS,         /* histogram {result} */
    PC_M_REDIS_SECONDS,       /* histogram {result} */
    PC_M_REDIS_UP,            /* gauge {server} */
    PC_M_SPOOL_BYTES,         /* gauge {where} */
    PC_M_MESSAGE_BYTES,       /* counter */
    PC_M_RELOADS,             /* counter {result} */
    PC_M_START_TIME,          /* gauge */
    PC_M_SCRAPES,             /* counter */
    PC_M_WORKERS,             /* gauge */
    PC_M_PS_FAILS,            /* counter {check, action} */
    PC_M_PS_RESULTS,          /* counter {result} */
    PC_M_SERIES_DROPPED,      /* counter */
    PC_M_COUNT
};

/* pc_metric_add - counter or gauge += v (labels NULL when the family has fewer) */
void pc_metric_add(enum pc_metric_id, const char *l1, const char *l2, double v);
/* pc_metric_set - gauge = v */
void pc_metric_set(enum pc_metric_id, const char *l1, const char *l2, double v);
/* pc_metric_observe - histogram sample */
void pc_metric_observe(enum pc_metric_id, const char *l1, double v);
/* pc_metrics_render - every family, text format */
void pc_metrics_render(struct pc_buf *);
/* pc_metrics_region_new - nslots empty slots (shared: visible to processes forked later) */
struct pc_metrics_region *pc_metrics_region_new(unsigned nslots, bool shared);
/* pc_metrics_attach - this process counts in slot i and renders every slot of the region */
void pc_metrics_attach(struct pc_metrics_region *, unsigned i);
/* pc_metrics_slot_gone - slot i's process died: zero the gauges of what it held */
void pc_metrics_slot_gone(struct pc_metrics_region *, unsigned i);
/* pc_metrics_reset - drop every series of every slot (tests) */
void pc_metrics_reset(void);
/* pc_seconds_since - monotonic seconds since t (a struct timespec *) */
double pc_seconds_since(const void *t);

#endif
