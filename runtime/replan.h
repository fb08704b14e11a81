/* replan: the bridge between a request in flight and the planner. It turns the configured
 * search into a planner_search_t, and after exit x has run at elapsed time t0 it searches
 * the bits of blocks x+1..n again (bits up to x are spent), with the exits already sent as
 * the answer in effect or results still on their way (planner offsets, planner.h). Shared by
 * einet-node (replanning) and einet-coord (initial plans). */
#ifndef RUNTIME_REPLAN_H
#define RUNTIME_REPLAN_H

#include <stdint.h>

#include "common/ei.h"
#include "planner/planner.h"

/* The planner search for a config's `search` value (conf_search_t), with the hybrid's
 * m = 4 (clamped to the free bits at search time), n_random and seed for random. */
void replan_search_init(planner_search_t *s, int conf_search, long n_random, uint64_t seed);

/* An exit a request has run: its 1-based index and when its result reaches the coordinator
 * on the request's timeline (ms; 0 or anything <= t0 once it has). */
typedef struct replan_exit {
    int exit;
    double arrive_ms;
} replan_exit_t;

/* Replans plan[x..n-1] (0-based; blocks x+1..n) after block x (1..n-1) finished at t0_ms,
 * given the exits run so far (depth order, the deepest being x when its branch ran) and the
 * scores of all n exits. Leaves the plan alone and returns 0 when there is nothing to gain
 * (t0 at or past the horizon, nothing left to plan); returns 1 when it searched (the plan
 * may be unchanged), or a negative code with err set. */
int replan_after(planner_t *p, const planner_search_t *s, const double *scores, uint8_t *plan,
                 int x, double t0_ms, const replan_exit_t *seen, int nseen, ei_err_t *err) EI_CHECK;

/* The initial plan of a request (no exit run yet): 1 when searched, or a negative code. */
int replan_initial(planner_t *p, const planner_search_t *s, const double *scores, uint8_t *plan,
                   ei_err_t *err) EI_CHECK;

#endif
