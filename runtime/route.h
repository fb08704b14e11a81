/* route: which replica of the next tier takes a request. Both programs use it: the
 * coordinator picks the device of a request that names none, each node picks the next-tier
 * replica its feature map goes to (docs/tiers.md, "Replicas and routing").
 *
 * A replica is a candidate only when its owner knows nothing against it (alive: heartbeats
 * answered within the timeout, not draining, its link up). Among candidates the one with
 * the least expected wait wins: (queued + 1) x its measured time per request, where queued
 * counts what it holds from this sender (maps sent and not yet taken over) plus the queue
 * it reports. A replica not measured yet counts as fast as the mean of the measured ones
 * (as 1 ms when none is), so a new replica gets work at once and is measured by it. Ties go
 * to the first candidate at or after `start` (round robin over equals). Pure functions. */
#ifndef RUNTIME_ROUTE_H
#define RUNTIME_ROUTE_H

#include <stdint.h>

typedef struct route_replica {
    int alive;         /* no known reason against it */
    uint32_t queued;   /* requests it holds or that are on their way to it */
    double ms_per_req; /* measured time per request; <= 0: not measured yet */
} route_replica_t;

/* The index of the replica to send to, or -1 when none of the n is alive. */
int route_pick(const route_replica_t *r, int n, unsigned start);

/* Its expected wait (ms) as route_pick weighs it, with mean_ms standing in for an
 * unmeasured time; for logs and stats. */
double route_wait_ms(const route_replica_t *r, double mean_ms);

#endif
