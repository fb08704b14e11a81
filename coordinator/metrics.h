/* metrics: what einet-coord exports over HTTP when its `metrics` key is set (ops/ops.h,
 * docs/metrics.md). Counters that only grow (unlike stats, which `einet stats --reset`
 * zeroes), kept by the coordinator as requests arrive and answers leave; a timer on the
 * loop renders them with the cluster's nodes and links into the text the HTTP thread
 * serves. */
#ifndef COORDINATOR_METRICS_H
#define COORDINATOR_METRICS_H

#include <stdint.h>

#include <uv.h>

#include "coordinator/stats.h"
#include "ops/ops.h"
#include "wire/wire.h"

/* How often the loop publishes a fresh snapshot. */
#define COORD_METRICS_MS 250
#define COORD_METRICS_STATUSES 9 /* einet_Status 0..8 */

typedef struct coord_metrics {
    ops_http_t *http; /* NULL: metrics off */
    uv_timer_t timer;
    int timer_open;
    uint64_t received;
    uint64_t by_status[COORD_METRICS_STATUSES];
    /* answers by status, exit (0..WIRE_MAX_BLOCKS) and tier (0..3) */
    uint64_t answers[COORD_METRICS_STATUSES][WIRE_MAX_BLOCKS + 1][4];
    ops_hist_t latency;                            /* seconds, every answer but rejected */
    uint64_t bad[STATS_SOCKS][OPS_CODES]; /* by socket and -code */
} coord_metrics_t;

struct coord;

/* Sets the histogram's buckets (coord_new). */
void coord__metrics_init(struct coord *c);
/* Starts the HTTP server on the config's `metrics` address (nothing when it is empty) and
 * the publishing timer. 0 or a negative code with err set. */
int coord__metrics_start(struct coord *c, ei_err_t *err) EI_CHECK;
/* Stops the server and closes the timer (coord_shutdown). */
void coord__metrics_stop(struct coord *c);

void coord__metrics_request(struct coord *c);
void coord__metrics_answer(struct coord *c, const einet_Answer *a);
void coord__metrics_bad(struct coord *c, int sock, int code);

/* The text /metrics serves, rendered now (tests read it without HTTP). Caller frees b. */
void coord__metrics_render(struct coord *c, ops_buf_t *b);

#endif
