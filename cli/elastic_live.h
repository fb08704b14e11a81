/* elastic_live: the client side of `einet elastic --live` and `einet profile
 * --from-cluster`: reading a running cluster's live ET-profile, and streaming test images
 * through it, one at a time, each with a deadline drawn from the interruption distribution
 * over the live horizon, under each exit policy in turn. */
#ifndef CLI_ELASTIC_LIVE_H
#define CLI_ELASTIC_LIVE_H

#include "common/ei.h"
#include "planner/elastic.h"
#include "planner/profile.h"

/* The coordinator's live ET-profile (StatsQuery with_profile) as an ET-profile: block
 * times, links, result delays and the dispatch time; model named "live". 0 or a negative
 * code with err set (unreachable, no reply, a profile the planner refuses). */
int live_profile_fetch(const char *endpoint, long timeout_ms, profile_et_t *et,
                       ei_err_t *err) EI_CHECK;

typedef struct live_opts {
    const char *endpoint;
    long timeout_ms;   /* per answer, after its deadline */
    const char *data_dir;
    int samples;       /* the first N test images */
    int warmup;        /* requests sent first, without deadline, not counted */
    uint64_t seed;     /* of the deadlines */
    const planner_dist_t *dist;
} live_opts_t;

/* The warm-up: o->warmup images or more (after the first o->samples) run exactly as the
 * measured run will (every policy in turn, deadlines over el's horizon), so the cluster's
 * load and the coordinator's measurements are those of the run; it goes on until the
 * coordinator has made two live profiles after its first half (at most 50 o->warmup
 * images), and *mean gets their mean. 0 or a negative code with err set. */
int live_warmup(const live_opts_t *o, const elastic_t *el, const elastic_policy_t *pol,
                int npol, profile_et_t *mean, ei_err_t *err) EI_CHECK;

/* (run_mean, when not NULL, gets the mean of the live profiles the coordinator made during
 * the run.) Runs policies pol[0..npol) live: for every image i (in order) and every policy in turn,
 * one request with deadline tau_i (elastic_live_deadlines on el: the same tau_i for every
 * policy, so their differences carry less noise). Fills res[p] and, when curves is not
 * NULL, curves[p] (points values; see elastic_live_tally). Only fixed, confidence and
 * planned policies run live (planned: the cluster's own planning, with the distribution
 * of opts). Progress on stderr. 0 or a negative code with err set. */
int live_measure(const live_opts_t *o, const elastic_t *el, const elastic_policy_t *pol,
                 int npol, elastic_live_result_t *res, double **curves, int points,
                 double *tau_out, profile_et_t *run_mean, ei_err_t *err) EI_CHECK;

#endif
