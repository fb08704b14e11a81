/* einet-coord's Prometheus metrics and readiness (see metrics.h). */
#include <stdio.h>
#include <string.h>

#include "coordinator/coord_internal.h"

static const double latency_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                        0.25,  0.5,    1,     2.5,  5,     10,   30};

static const char *const status_names[COORD_METRICS_STATUSES] = {
    "none", "complete", "deadline", "link", "rejected", "device-ee", "shutdown", "restarted",
    "early"};

void coord__metrics_request(coord_t *c)
{
    c->metrics.received++;
}

void coord__metrics_answer(coord_t *c, const einet_Answer *a)
{
    coord_metrics_t *m = &c->metrics;
    int st = a->status >= 0 && a->status < COORD_METRICS_STATUSES ? a->status : 0;
    m->by_status[st]++;
    uint32_t ex = a->exit <= WIRE_MAX_BLOCKS ? a->exit : 0;
    int tier = a->tier >= 0 && a->tier < 4 ? a->tier : 0;
    m->answers[st][ex][tier]++;
    if (st != einet_Status_STATUS_REJECTED)
        ops_hist_observe(&m->latency, (double)a->latency_us / 1e6);
}

void coord__metrics_bad(coord_t *c, int sock, int code)
{
    int i = -code > 0 && -code < OPS_CODES ? -code : 0;
    if (sock >= 0 && sock < STATS_SOCKS)
        c->metrics.bad[sock][i]++;
}

static void render_requests(coord_t *c, ops_buf_t *b)
{
    coord_metrics_t *m = &c->metrics;
    char labels[160];
    ops_prom_counter(b, "einet_requests_received_total",
                     "Requests received on the clients socket.", (double)m->received);
    ops_prom_family(b, "einet_requests_total", "counter",
                    "Requests answered, by the answer's status (each request once).");
    for (int s = 1; s < COORD_METRICS_STATUSES; s++) {
        snprintf(labels, sizeof labels, "status=\"%s\"", status_names[s]);
        ops_prom_sample(b, "einet_requests_total", labels, (double)m->by_status[s]);
    }
    ops_prom_family(b, "einet_answers_total", "counter",
                    "Answers sent, by status, exit (0: none) and the tier of that exit.");
    for (int s = 1; s < COORD_METRICS_STATUSES; s++)
        for (int e = 0; e <= c->n && e <= WIRE_MAX_BLOCKS; e++)
            for (int t = 0; t < 4; t++) {
                if (!m->answers[s][e][t])
                    continue;
                snprintf(labels, sizeof labels, "status=\"%s\",exit=\"%d\",tier=\"%s\"",
                         status_names[s], e, t ? cluster_tier_name(t) : "none");
                ops_prom_sample(b, "einet_answers_total", labels, (double)m->answers[s][e][t]);
            }
    ops_prom_hist(b, "einet_request_latency_seconds",
                  "Time from a request's arrival to its answer (every status but rejected).",
                  &m->latency);
    ops_prom_gauge(b, "einet_inflight_requests", "Requests held, not yet answered.",
                   (double)reqs_pending(c->reqs));
    ops_prom_counter(b, "einet_late_results_total",
                     "Results for requests already answered or unknown.",
                     (double)reqs_late(c->reqs));
}

static void render_bad(coord_t *c, ops_buf_t *b)
{
    static const char *const socks[STATS_SOCKS] = {"clients", "nodes"};
    char labels[96];
    ops_prom_family(b, "einet_bad_messages_total", "counter",
                    "Messages refused, by socket and reason (the error code's name).");
    for (int s = 0; s < STATS_SOCKS; s++)
        for (int i = 0; i < OPS_CODES; i++) {
            /* every socket's format count always, so a rate() has a series from the start */
            if (!c->metrics.bad[s][i] && i != -EI_E_FORMAT)
                continue;
            snprintf(labels, sizeof labels, "socket=\"%s\",reason=\"%s\"", socks[s],
                     ops_code_name(-i));
            ops_prom_sample(b, "einet_bad_messages_total", labels, (double)c->metrics.bad[s][i]);
        }
}

static void render_cluster(coord_t *c, ops_buf_t *b)
{
    const cluster_t *cl = &c->cluster;
    char labels[96];
    ops_prom_family(b, "einet_node_up", "gauge",
                    "1 while the node of a tier heartbeats in time and is not draining.");
    for (int i = 0; i < cl->n_tiers; i++) {
        const char *t = cluster_tier_name(cl->node[i].tier);
        snprintf(labels, sizeof labels, "tier=\"%s\",name=\"%s\"", t, t);
        ops_prom_sample(b, "einet_node_up", labels, cl->node[i].state == CLUSTER_UP);
    }
    ops_prom_family(b, "einet_node_inflight_requests", "gauge",
                    "Requests a node holds, as its last heartbeat said.");
    for (int i = 0; i < cl->n_tiers; i++) {
        snprintf(labels, sizeof labels, "tier=\"%s\"", cluster_tier_name(cl->node[i].tier));
        ops_prom_sample(b, "einet_node_inflight_requests", labels, cl->node[i].in_flight);
    }
    static const struct {
        const char *name, *type, *help;
    } fam[3] = {
        {"einet_link_up", "gauge", "1 while the link is up (reported up by a node that is up)."},
        {"einet_link_latency_seconds", "gauge", "One-way latency of the link, as measured."},
        {"einet_link_bandwidth_bytes_per_second", "gauge",
         "Bandwidth of the link, as measured (0: not yet)."},
    };
    for (int f = 0; f < 3; f++) {
        ops_prom_family(b, fam[f].name, fam[f].type, fam[f].help);
        for (int i = 0; i + 1 < cl->n_tiers; i++) {
            const cluster_node_t *nd = &cl->node[i];
            double v = f == 0   ? nd->link_up
                       : f == 1 ? (double)nd->link_latency_ms / 1e3
                                : (double)nd->link_bw_mbps * 1e6 / 8;
            snprintf(labels, sizeof labels, "link=\"%s\"", cluster_link_name(i + 1));
            ops_prom_sample(b, fam[f].name, labels, v);
        }
    }
}

void coord__metrics_render(coord_t *c, ops_buf_t *b)
{
    render_requests(c, b);
    render_bad(c, b);
    render_cluster(c, b);
    ops_prom_gauge(b, "einet_uptime_seconds", "Seconds since the coordinator started.",
                   (double)coord__uptime_us(c) / 1e6);
    ops_prom_build_info(b);
    ops_prom_process(b);
}

/* Ready: not stopping, and every tier of the pipeline has a node that is up. */
static int ready(const coord_t *c, char *why, size_t cap)
{
    if (c->closing) {
        snprintf(why, cap, "shutting down");
        return 0;
    }
    for (int i = 0; i < c->cluster.n_tiers; i++) {
        const cluster_node_t *nd = &c->cluster.node[i];
        if (nd->state != CLUSTER_UP) {
            snprintf(why, cap, "%s is %s", cluster_tier_name(nd->tier),
                     nd->state == CLUSTER_DRAINING ? "draining"
                     : nd->seen                    ? "down"
                                                   : "not connected yet");
            return 0;
        }
    }
    return 1;
}

static void publish(coord_t *c)
{
    ops_buf_t b;
    char why[128] = "";
    ops_buf_init(&b);
    coord__metrics_render(c, &b);
    int ok = ready(c, why, sizeof why);
    ops_http_publish(c->metrics.http, &b, ok, why);
    ops_buf_free(&b);
}

static void on_timer(uv_timer_t *t)
{
    publish(t->data);
}

void coord__metrics_init(coord_t *c)
{
    ops_hist_init(&c->metrics.latency, latency_bounds,
                  (int)(sizeof latency_bounds / sizeof latency_bounds[0]));
}

int coord__metrics_start(coord_t *c, ei_err_t *err)
{
    if (!c->conf.metrics[0])
        return 0;
    c->metrics.http = ops_http_start(c->conf.metrics, err);
    if (!c->metrics.http)
        return ei_err_prefix(err, "%s: ", "[coordinator] metrics");
    uv_timer_init(c->loop, &c->metrics.timer);
    c->metrics.timer.data = c;
    c->metrics.timer_open = 1;
    uv_timer_start(&c->metrics.timer, on_timer, 0, COORD_METRICS_MS);
    ei_log(EI_LOG_INFO, "metrics on http://%s (port %d): /metrics, /healthz, /readyz",
           c->conf.metrics, ops_http_port(c->metrics.http));
    return 0;
}

void coord__metrics_stop(coord_t *c)
{
    ops_http_stop(&c->metrics.http);
    if (c->metrics.timer_open)
        uv_close((uv_handle_t *)&c->metrics.timer, NULL);
    c->metrics.timer_open = 0;
}
