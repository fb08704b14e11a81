/* Replica choice by expected wait (see route.h). */
#include "runtime/route.h"

double route_wait_ms(const route_replica_t *r, double mean_ms)
{
    double ms = r->ms_per_req > 0 ? r->ms_per_req : mean_ms;
    return ((double)r->queued + 1.0) * ms;
}

int route_pick(const route_replica_t *r, int n, unsigned start)
{
    if (n <= 0)
        return -1;
    double sum = 0;
    int measured = 0;
    for (int i = 0; i < n; i++)
        if (r[i].alive && r[i].ms_per_req > 0) {
            sum += r[i].ms_per_req;
            measured++;
        }
    double mean = measured ? sum / measured : 1.0;
    int best = -1;
    double best_wait = 0;
    for (int j = 0; j < n; j++) {
        int i = (int)((start + (unsigned)j) % (unsigned)n);
        if (!r[i].alive)
            continue;
        double w = route_wait_ms(&r[i], mean);
        if (best < 0 || w < best_wait) {
            best = i;
            best_wait = w;
        }
    }
    return best;
}
