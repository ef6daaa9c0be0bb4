/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	metrics_http 3h - the Prometheus endpoint (GET /metrics)
 * DESCRIPTION
 *	Off unless metrics.enabled; listens on metrics.address (loopback by
 *	default) on the main event loop with libevent's evhttp.
 */
#ifndef PC_METRICS_HTTP_H
#define PC_METRICS_HTTP_H

#include <stdbool.h>

struct event_base;

/* pc_metrics_http_configure - (re)bind when the address changed, stop when disabled; -1 on a
 * bind error (logged) */
int pc_metrics_http_configure(struct event_base *, bool enabled, const char *address);
void pc_metrics_http_stop(void);

#endif
