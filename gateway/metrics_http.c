/* SPDX-License-Identifier: MIT */
/*
 * NAME
 *	metrics_http 3 - the Prometheus endpoint (GET /metrics)
 * DESCRIPTION
 *	Rendering merges every process's series (metrics 3: with workers,
 *	each counts in its slot of a region the parent shares, and this
 *	endpoint, in worker 0, serves the instance's totals): its cost grows
 *	with the number of series (filters, rules, stages) and workers,
 *	never with the number of sessions. Only GET and HEAD of /metrics are served; the
 *	endpoint has no authentication, which is why it is off by default
 *	and binds to loopback unless told otherwise.
 * SEE ALSO
 *	https://prometheus.io/docs/instrumenting/exposition_formats/ (text format 0.0.4)
 */
#include "gateway/metrics_http.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/buf.h"
#include "lib/log.h"
#include "lib/metrics.h"
#include "lib/parse.h"

static struct evhttp *pc_metrics_http;
static char pc_metrics_bound[300];

/* on_request - the exposition, or 404/405 */
static void on_request(struct evhttp_request *req, void *arg)
{
    const char *uri = evhttp_request_get_uri(req);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    struct pc_buf b;

    (void)arg;
    if (uri == NULL || (strcmp(uri, "/metrics") != 0 && strncmp(uri, "/metrics?", 9) != 0)) {
        evhttp_send_error(req, HTTP_NOTFOUND, "try /metrics");
        return;
    }
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        evhttp_send_error(req, 405, "GET only");
        return;
    }
    pc_metric_add(PC_M_SCRAPES, NULL, NULL, 1);
    /* Headers and body may leave in two writes: without TCP_NODELAY the second waits for the
     * client's delayed ACK (40 ms per scrape on a kept-alive connection). */
    struct evhttp_connection *hc = evhttp_request_get_connection(req);
    struct bufferevent *bev = hc ? evhttp_connection_get_bufferevent(hc) : NULL;
    int one = 1;
    if (bev && bufferevent_getfd(bev) >= 0)
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    pc_buf_init(&b, 0);
    pc_metrics_render(&b);
    struct evbuffer *out = evbuffer_new();
    evbuffer_add(out, b.data, b.len);
    pc_buf_free(&b);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(req, HTTP_OK, "OK", out);
    evbuffer_free(out);
}

/* pc_metrics_http_stop - close the endpoint */
void pc_metrics_http_stop(void)
{
    if (pc_metrics_http) {
        evhttp_free(pc_metrics_http);
        pc_metrics_http = NULL;
    }
    pc_metrics_bound[0] = 0;
}

/* pc_metrics_http_configure - follow the configuration */
int pc_metrics_http_configure(struct event_base *base, bool enabled, const char *address)
{
    char host[256], port[16];

    if (!enabled) {
        if (pc_metrics_http)
            pc_info("metrics: endpoint %s closed", pc_metrics_bound);
        pc_metrics_http_stop();
        return 0;
    }
    if (pc_metrics_http && strcmp(pc_metrics_bound, address) == 0)
        return 0;
    pc_metrics_http_stop();
    if (!pc_parse_hostport(address, host, sizeof(host), port, sizeof(port)) || !port[0]) {
        pc_err("metrics: address %s is not host:port", address);
        return -1;
    }
    pc_metrics_http = evhttp_new(base);
    if (pc_metrics_http == NULL) {
        pc_err("metrics: out of memory");
        return -1;
    }
    evhttp_set_allowed_methods(pc_metrics_http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    /* A scrape is small; a client that sends more or stalls is not a Prometheus server. */
    evhttp_set_max_headers_size(pc_metrics_http, 8192);
    evhttp_set_max_body_size(pc_metrics_http, 0);
    evhttp_set_timeout(pc_metrics_http, 10);
    evhttp_set_gencb(pc_metrics_http, on_request, NULL);
    if (evhttp_bind_socket(pc_metrics_http, host, (ev_uint16_t)atoi(port)) != 0) {
        pc_err("metrics: cannot listen on %s", address);
        evhttp_free(pc_metrics_http);
        pc_metrics_http = NULL;
        return -1;
    }
    snprintf(pc_metrics_bound, sizeof(pc_metrics_bound), "%s", address);
    pc_info("metrics: Prometheus endpoint on http://%s/metrics", address);
    return 0;
}
