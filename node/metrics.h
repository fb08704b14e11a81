/* metrics: what einet-node exports over HTTP when its `metrics` key is set (ops/ops.h,
 * docs/metrics.md): its work counters, requests held, refused messages, its outgoing link,
 * the measured time of each of its blocks, and process metrics. A timer on the loop renders
 * them into the text the HTTP thread serves. */
#ifndef NODE_METRICS_H
#define NODE_METRICS_H

#include <stdint.h>

#include <uv.h>

#include "ops/ops.h"

#define NODE_METRICS_MS 250
#define NODE_METRICS_SOCKS 3 /* coordinator, bind, next */

typedef struct node_metrics {
    ops_http_t *http; /* NULL: metrics off */
    uv_timer_t timer;
    int timer_open;
    uint64_t bad[NODE_METRICS_SOCKS][OPS_CODES]; /* by socket and -code */
} node_metrics_t;

struct node;

/* Starts the HTTP server on the config's `metrics` address (nothing when it is empty) and
 * the publishing timer. 0 or a negative code with err set. */
int node__metrics_start(struct node *nd, ei_err_t *err) EI_CHECK;
/* Stops the server and closes the timer. */
void node__metrics_stop(struct node *nd);
/* A message refused on socket what ("coordinator", "bind", "next") with code. */
void node__metrics_bad(struct node *nd, const char *what, int code);
/* The text /metrics serves, rendered now. Caller frees b. */
void node__metrics_render(struct node *nd, ops_buf_t *b);

#endif
