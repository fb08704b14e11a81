/* stats: what the coordinator counts for `einet stats`: requests and answers by status,
 * exit and tier, accuracy where labels came, answer latency percentiles, faults seen, and
 * malformed messages refused per socket. Nodes, links and their health are filled in by the
 * cluster module; this one owns the counters.
 *
 * Latency percentiles are nearest-rank over the latest STATS_WINDOW answers since start or
 * the last reset (every status but `rejected`). Pure state: callers pass times. */
#ifndef COORDINATOR_STATS_H
#define COORDINATOR_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "proto/messages.pb.h"

#define STATS_WINDOW (1u << 20)
#define STATS_FAULTS_KEPT 16

enum { STATS_SOCK_CLIENTS = 0, STATS_SOCK_NODES = 1, STATS_SOCKS = 2 };

typedef struct stats stats_t;

/* Counters for a model of n exits, keeping up to `window` latencies (0: STATS_WINDOW).
 * Caller owns the result; NULL when out of memory. */
stats_t *stats_new(int n_exits, size_t window);
void stats_destroy(stats_t **self_p);

/* A request arrived (counted whatever becomes of it). */
void stats_request(stats_t *self);
/* An answer left. */
void stats_answer(stats_t *self, const einet_Answer *a);
/* A message refused on socket sock (STATS_SOCK_*). */
void stats_bad(stats_t *self, int sock);
uint64_t stats_bad_count(const stats_t *self, int sock);
/* A fault seen (injected, a link down or up, a node lost or back), at coordinator uptime
 * at_us. tier / link may be 0. what is truncated to the protocol's 63 characters. */
void stats_fault(stats_t *self, uint64_t at_us, int tier, int link, const char *what);

/* Fills the counters, percentiles and faults of a StatsReply (links, nodes and uptime are
 * left as they are). */
void stats_fill(stats_t *self, einet_StatsReply *out);
/* Zeroes every counter, the latencies and the faults. */
void stats_reset(stats_t *self);

/* Nearest-rank percentile p (0 < p <= 100) of v[0..n): the ceil(p n / 100)-th smallest
 * value. Reorders v. 0 for n = 0. */
float stats_percentile(float *v, size_t n, double p);

#endif
