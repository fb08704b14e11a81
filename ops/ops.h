/* ops: what an operator, a Prometheus server or a load balancer reads from a running einet
 * process over HTTP. Two parts:
 *
 * - Text in the Prometheus exposition format (version 0.0.4): a growing buffer, samples,
 *   histograms with fixed buckets, and the standard process_* metrics from /proc.
 * - An HTTP server (libmicrohttpd, its own thread) on one address that serves GET /metrics,
 *   /healthz and /readyz from a snapshot. The process's libuv loop renders the snapshot and
 *   publishes it under a mutex; the server's thread only copies it, so it never reads the
 *   loop's state. /healthz is 200 while the loop keeps publishing (503 "loop stalled" when
 *   it has not for OPS_STALL_S seconds), /readyz 200 when the last snapshot said ready, else
 *   503 with the reason. docs/metrics.md lists what each program exports. */
#ifndef OPS_OPS_H
#define OPS_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "common/ei.h"

/* A loop that has not published for this long is reported stalled by /healthz. */
#define OPS_STALL_S 30.0

/* ---- Prometheus text ---- */

/* A growing text buffer. A failed allocation sets failed and drops later text. */
typedef struct ops_buf {
    char *p;
    size_t len, cap;
    int failed;
} ops_buf_t;

void ops_buf_init(ops_buf_t *b);
void ops_buf_free(ops_buf_t *b);
void ops_buf_printf(ops_buf_t *b, const char *fmt, ...) EI_PRINTF(2, 3);

/* "# HELP name help" and "# TYPE name type" (counter, gauge, histogram). */
void ops_prom_family(ops_buf_t *b, const char *name, const char *type, const char *help);
/* One sample: name{labels} value. labels is "" or 'a="x",b="y"' (values the caller made:
 * einet's own names, never outside text). */
void ops_prom_sample(ops_buf_t *b, const char *name, const char *labels, double v);
/* A counter family with one unlabelled sample. */
void ops_prom_counter(ops_buf_t *b, const char *name, const char *help, double v);
/* A gauge family with one unlabelled sample. */
void ops_prom_gauge(ops_buf_t *b, const char *name, const char *help, double v);

#define OPS_HIST_MAX 24

/* A histogram with fixed upper bounds (ascending; +Inf is implied). */
typedef struct ops_hist {
    int n;
    double bound[OPS_HIST_MAX];
    uint64_t bucket[OPS_HIST_MAX + 1]; /* not cumulative; [n] is above the last bound */
    uint64_t count;
    double sum;
} ops_hist_t;

/* Bounds beyond OPS_HIST_MAX are dropped. */
void ops_hist_init(ops_hist_t *h, const double *bound, int n);
void ops_hist_observe(ops_hist_t *h, double v);
/* The family, cumulative _bucket{le} samples, _sum and _count. */
void ops_prom_hist(ops_buf_t *b, const char *name, const char *help, const ops_hist_t *h);

/* process_cpu_seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_start_time_seconds, process_open_fds, process_max_fds (from /proc/self; a file
 * that cannot be read leaves its metrics out). */
void ops_prom_process(ops_buf_t *b);

/* Error codes as label values: index -code of a count array of OPS_CODES. */
#define OPS_CODES 16
/* The short name of an error code: "format", "version", "shape", ...; "other" outside the
 * table. */
const char *ops_code_name(int code);

/* einet_build_info{version,commit} 1. */
void ops_prom_build_info(ops_buf_t *b);

/* ---- HTTP ---- */

typedef struct ops_http ops_http_t;

/* Checks "host:port" (an IPv4 address or a host name, port 0..65535; 0 picks a free port).
 * NULL, or a message saying what is wrong. */
const char *ops_addr_check(const char *addr);

/* Serves /metrics, /healthz and /readyz on addr from its own thread; nothing is ready and
 * /metrics is empty until the first ops_http_publish. Caller owns the result; NULL with
 * err set when addr does not parse or cannot be bound. */
ops_http_t *ops_http_start(const char *addr, ei_err_t *err);

/* The port it listens on (the one picked, for port 0). */
int ops_http_port(const ops_http_t *self);

/* Replaces the snapshot: the metrics text (copied; a failed buffer keeps the last one),
 * ready or not and, when not, why (copied). Called from the loop's thread. */
void ops_http_publish(ops_http_t *self, const ops_buf_t *metrics, int ready, const char *why);

/* Stops the server (waits for its thread) and frees it. Accepts NULL; clears *self_p. */
void ops_http_stop(ops_http_t **self_p);

#endif
