/* einet-node's Prometheus metrics and readiness (see metrics.h). */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "node/node_internal.h"

static const char *const sock_names[NODE_METRICS_SOCKS] = {"coordinator", "bind", "next"};

void node__metrics_bad(node_t *nd, const char *what, int code)
{
    int i = -code > 0 && -code < OPS_CODES ? -code : 0;
    for (int s = 0; s < NODE_METRICS_SOCKS; s++)
        if (!strcmp(what, sock_names[s]))
            nd->metrics.bad[s][i]++;
}

static void render_counts(node_t *nd, ops_buf_t *b)
{
    static const struct {
        const char *name, *help;
        size_t off;
    } c[] = {
        {"einet_tasks_total", "Tasks (requests) received from the coordinator.",
         offsetof(node_counts_t, tasks)},
        {"einet_maps_received_total", "Feature maps received from the previous tier.",
         offsetof(node_counts_t, maps)},
        {"einet_exits_sent_total", "Exit results sent to the coordinator.",
         offsetof(node_counts_t, exits_sent)},
        {"einet_maps_sent_total", "Feature maps sent to the next tier.",
         offsetof(node_counts_t, maps_sent)},
        {"einet_handed_back_total", "Requests handed back to the coordinator.",
         offsetof(node_counts_t, handed_back)},
        {"einet_cancelled_total", "Requests dropped because the coordinator answered them.",
         offsetof(node_counts_t, cancelled)},
        {"einet_deadline_dropped_total", "Requests dropped past their deadline.",
         offsetof(node_counts_t, dropped_deadline)},
        {"einet_send_failed_total", "Sends ZeroMQ refused.", offsetof(node_counts_t, send_failed)},
        {"einet_batches_total", "Batches run (dynamic batching; a lone request is a batch of 1).",
         offsetof(node_counts_t, batches)},
        {"einet_early_total", "Requests answered here because their stop rule fired.",
         offsetof(node_counts_t, early)},
    };
    node_counts_t k = node_counts(nd);
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        ops_prom_counter(b, c[i].name, c[i].help,
                         (double)*(const uint64_t *)((const char *)&k + c[i].off));
    ops_prom_gauge(b, "einet_inflight_requests", "Requests this node holds (queued or running).",
                   (double)node__inflight(nd));
    char labels[96];
    ops_prom_family(b, "einet_bad_messages_total", "counter",
                    "Messages refused, by socket and reason (the error code's name).");
    for (int s = 0; s < NODE_METRICS_SOCKS; s++)
        for (int i = 0; i < OPS_CODES; i++) {
            if (!nd->metrics.bad[s][i] && i != -EI_E_FORMAT)
                continue;
            snprintf(labels, sizeof labels, "socket=\"%s\",reason=\"%s\"", sock_names[s],
                     ops_code_name(-i));
            ops_prom_sample(b, "einet_bad_messages_total", labels, (double)nd->metrics.bad[s][i]);
        }
}

static void render_links(node_t *nd, ops_buf_t *b)
{
    char labels[96];
    const char *t = node__tier_name(nd->conf.tier);
    ops_prom_family(b, "einet_node_up", "gauge",
                    "1 while this node serves (0 once it drains).");
    snprintf(labels, sizeof labels, "tier=\"%s\",name=\"%s\"", t, t);
    ops_prom_sample(b, "einet_node_up", labels, !nd->draining);
    ops_prom_gauge(b, "einet_coordinator_latency_seconds",
                   "One-way latency to the coordinator, from heartbeat round trips.",
                   link_latency_ms(&nd->coord_link) / 1e3);
    if (!nd->n_next)
        return;
    /* one sample per next-tier replica (peer: its endpoint, as `next` lists it) */
    char lab[NODE_MAX_NEXT][CONF_STR_MAX + 64];
    for (int i = 0; i < nd->n_next; i++)
        snprintf(lab[i], sizeof lab[i], "link=\"%s\",peer=\"%.200s\"", node__link_name(nd),
                 nd->nx[i].endpoint);
    ops_prom_family(b, "einet_link_up", "gauge", "1 while the link to the next tier is up.");
    for (int i = 0; i < nd->n_next; i++)
        ops_prom_sample(b, "einet_link_up", lab[i], nd->nx[i].link.up);
    ops_prom_family(b, "einet_link_latency_seconds", "gauge",
                    "One-way latency of the link to the next tier, as measured.");
    for (int i = 0; i < nd->n_next; i++)
        ops_prom_sample(b, "einet_link_latency_seconds", lab[i],
                        link_latency_ms(&nd->nx[i].link) / 1e3);
    ops_prom_family(b, "einet_link_bandwidth_bytes_per_second", "gauge",
                    "Bandwidth of the link to the next tier, as measured (0: not yet).");
    for (int i = 0; i < nd->n_next; i++)
        ops_prom_sample(b, "einet_link_bandwidth_bytes_per_second", lab[i],
                        nd->nx[i].link.bw_mbps * 1e6 / 8);
}

static void render_blocks(node_t *nd, ops_buf_t *b)
{
    char labels[96];
    ops_prom_family(b, "einet_block_seconds", "gauge",
                    "Measured time of each block this node runs, by part: conv (the block) "
                    "or branch (its exit), as the emulated machine (slowdown) takes it.");
    for (int k = nd->conf.first_block; k <= nd->conf.last_block && k <= nd->n; k++) {
        snprintf(labels, sizeof labels, "block=\"%d\",part=\"conv\"", k);
        ops_prom_sample(b, "einet_block_seconds", labels, nd->conv_ms[k - 1] / 1e3);
        snprintf(labels, sizeof labels, "block=\"%d\",part=\"branch\"", k);
        ops_prom_sample(b, "einet_block_seconds", labels, nd->branch_ms[k - 1] / 1e3);
    }
}

void node__metrics_render(node_t *nd, ops_buf_t *b)
{
    render_counts(nd, b);
    render_links(nd, b);
    render_blocks(nd, b);
    ops_prom_build_info(b);
    ops_prom_process(b);
}

/* Ready: not draining, the coordinator answered a heartbeat within the timeout, and the
 * link to the next tier (if any) is up. */
static int ready(node_t *nd, char *why, size_t cap)
{
    uint64_t now = node__now_us(), timeout = (uint64_t)nd->conf.heartbeat_timeout_ms * 1000;
    const link_state_t *cl = &nd->coord_link;
    if (nd->draining)
        snprintf(why, cap, "draining");
    else if (!cl->last_reply_us || now - cl->last_reply_us > timeout)
        snprintf(why, cap, "no heartbeat reply from the coordinator for %d ms",
                 nd->conf.heartbeat_timeout_ms);
    else if (nd->n_next && !node__next_up(nd))
        snprintf(why, cap, "%s link down", node__link_name(nd));
    else
        return 1;
    return 0;
}

static void on_timer(uv_timer_t *t)
{
    node_t *nd = t->data;
    ops_buf_t b;
    char why[128] = "";
    ops_buf_init(&b);
    node__metrics_render(nd, &b);
    int ok = ready(nd, why, sizeof why);
    ops_http_publish(nd->metrics.http, &b, ok, why);
    ops_buf_free(&b);
}

int node__metrics_start(node_t *nd, ei_err_t *err)
{
    if (!nd->conf.metrics[0])
        return 0;
    nd->metrics.http = ops_http_start(nd->conf.metrics, err);
    if (!nd->metrics.http)
        return ei_err_prefix(err, "%s: ", "[node] metrics");
    uv_timer_init(nd->loop, &nd->metrics.timer);
    nd->metrics.timer.data = nd;
    nd->metrics.timer_open = 1;
    uv_timer_start(&nd->metrics.timer, on_timer, 0, NODE_METRICS_MS);
    ei_log(EI_LOG_INFO, "metrics on http://%s (port %d): /metrics, /healthz, /readyz",
           nd->conf.metrics, ops_http_port(nd->metrics.http));
    return 0;
}

void node__metrics_stop(node_t *nd)
{
    ops_http_stop(&nd->metrics.http);
    if (nd->metrics.timer_open)
        uv_close((uv_handle_t *)&nd->metrics.timer, NULL);
    nd->metrics.timer_open = 0;
}
