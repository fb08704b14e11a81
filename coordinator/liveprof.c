/* The live ET-profile and the initial plan (see liveprof.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "coordinator/liveprof.h"
#include "runtime/replan.h"

#define LIVEPROF_TIMING_RUNS 5

struct liveprof {
    int n;
    uint64_t version;
    double own_conv_ms[CLUSTER_MAX_BLOCKS], own_branch_ms[CLUSTER_MAX_BLOCKS];
    double map_bytes[CLUSTER_MAX_BLOCKS];
    einet_BlockProfile blocks[CLUSTER_MAX_BLOCKS];
    uint8_t plan[CLUSTER_MAX_BLOCKS];
    double horizon_ms, expectation;
    scores_t scores;
    planner_t *planner; /* NULL when n > PLANNER_MAX_EXITS: every exit runs */
    planner_search_t search;
    planner_dist_t dist;
};

/* The coordinator's own block times: the last of a few runs on zeros (the first are cold). */
static int time_blocks(liveprof_t *lp, nn_model_t *m, ei_err_t *err)
{
    nn_shape_t s = nn_model_input_shape(m);
    nn_tensor_t *x0 = nn_tensor_new(1, s.c, s.h, s.w);
    float probs[1024];
    if (!x0 || nn_model_classes(m) > 1024) {
        nn_tensor_destroy(&x0);
        return ei_err_set(err, EI_E_NOMEM, "timing blocks: out of memory");
    }
    for (int rep = 0; rep < LIVEPROF_TIMING_RUNS; rep++) {
        const nn_tensor_t *x = x0;
        for (int k = 0; k < lp->n; k++) {
            uint64_t t0 = uv_hrtime();
            x = nn_model_conv(m, k, x, err);
            uint64_t t1 = uv_hrtime();
            if (!x || nn_model_branch(m, k, x, probs, err) < 0) {
                nn_tensor_destroy(&x0);
                return ei_err_prefix(err, "timing block %d: ", k + 1);
            }
            lp->own_conv_ms[k] = (double)(t1 - t0) / 1e6;
            lp->own_branch_ms[k] = (double)(uv_hrtime() - t1) / 1e6;
        }
    }
    nn_tensor_destroy(&x0);
    return 0;
}

static void set_dist(liveprof_t *lp, const conf_coord_t *c)
{
    lp->dist.kind = c->interrupt == CONF_INTERRUPT_NORMAL ? PLANNER_DIST_NORMAL
                                                          : PLANNER_DIST_UNIFORM;
    lp->dist.mu = c->mu;
    lp->dist.sigma = c->sigma;
}

liveprof_t *liveprof_new(nn_model_t *m, const conf_coord_t *conf, const scores_t *s,
                         const planner_profile_t *et, ei_err_t *err)
{
    liveprof_t *lp = calloc(1, sizeof *lp);
    if (!lp) {
        ei_err_set(err, EI_E_NOMEM, "out of memory");
        return NULL;
    }
    lp->n = nn_model_blocks(m);
    lp->scores = *s;
    set_dist(lp, conf);
    replan_search_init(&lp->search, conf->search, conf->random_plans, (uint64_t)conf->seed);
    for (int k = 0; k < lp->n; k++) {
        lp->map_bytes[k] = (double)nn_shape_numel(nn_model_feature_shape(m, k)) * sizeof(float);
        lp->plan[k] = 1;
    }
    cluster_t none;
    conf_tiers_t one = {1, {einet_Tier_TIER_DEVICE}};
    cluster_init(&none, &one, lp->n, 1);
    if (et && et->n == lp->n)
        for (int k = 0; k < lp->n; k++) {
            lp->own_conv_ms[k] = et->conv_ms[k];
            lp->own_branch_ms[k] = et->branch_ms[k];
        }
    if (lp->n > CLUSTER_MAX_BLOCKS || ((!et || et->n != lp->n) && time_blocks(lp, m, err) < 0) ||
        liveprof_rebuild(lp, &none, err) < 0) {
        if (lp->n > CLUSTER_MAX_BLOCKS)
            ei_err_set(err, EI_E_RANGE, "%d blocks, at most %d", lp->n, CLUSTER_MAX_BLOCKS);
        liveprof_destroy(&lp);
        return NULL;
    }
    return lp;
}

void liveprof_destroy(liveprof_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    planner_destroy(&(*self_p)->planner);
    free(*self_p);
    *self_p = NULL;
}

/* The node that runs block k (0-based), -1 when none has said. */
static int owner(const cluster_t *c, int k)
{
    for (int i = 0; i < c->n_tiers; i++) {
        const cluster_node_t *nd = &c->node[i];
        if (nd->last_block && (int)nd->first_block <= k + 1 && k + 1 <= (int)nd->last_block)
            return i;
    }
    return -1;
}

static void build(liveprof_t *lp, const cluster_t *c, einet_BlockProfile *b)
{
    for (int k = 0; k < lp->n; k++) {
        int measured = k < c->n_blocks && c->samples[k] > 0;
        b[k].c_ms = measured ? c->conv_ms[k] : (float)lp->own_conv_ms[k];
        b[k].b_ms = measured ? c->branch_ms[k] : (float)lp->own_branch_ms[k];
        b[k].l_ms = 0;
        b[k].r_ms = 0;
        int i = owner(c, k);
        if (i < 0)
            continue;
        const cluster_node_t *nd = &c->node[i];
        b[k].r_ms = nd->coord_latency_ms;
        if (k + 1 == (int)nd->last_block && i + 1 < c->n_tiers) {
            double l = nd->link_latency_ms;
            if (nd->link_bw_mbps > 0)
                l += lp->map_bytes[k] * 8.0 / ((double)nd->link_bw_mbps * 1000.0);
            b[k].l_ms = (float)l;
        }
    }
}

static int replan(liveprof_t *lp, const planner_profile_t *p, ei_err_t *err)
{
    if (lp->n > PLANNER_MAX_EXITS)
        return 0; /* beyond the planner: every exit runs */
    int rc = 0;
    if (lp->planner)
        rc = planner_set_profile(lp->planner, p, err);
    else if (!(lp->planner = planner_new(p, &lp->dist, err)))
        rc = err ? err->code : EI_E_INVAL;
    double scores[SCORES_MAX_EXITS];
    scores_for(&lp->scores, NULL, 0, 0, scores);
    if (rc == 0)
        rc = replan_initial(lp->planner, &lp->search, scores, lp->plan, err);
    if (rc < 0)
        return rc;
    lp->horizon_ms = planner_horizon(lp->planner);
    lp->expectation = planner_expect(lp->planner, scores, lp->plan, NULL);
    return 0;
}

int liveprof_rebuild(liveprof_t *lp, const cluster_t *c, ei_err_t *err)
{
    einet_BlockProfile b[CLUSTER_MAX_BLOCKS];
    build(lp, c, b);
    planner_profile_t p;
    planner_profile_init(&p, lp->n < PLANNER_MAX_EXITS ? lp->n : PLANNER_MAX_EXITS);
    for (int k = 0; k < p.n; k++) {
        p.conv_ms[k] = b[k].c_ms;
        p.branch_ms[k] = b[k].b_ms;
        p.link_ms[k] = b[k].l_ms;
        p.result_ms[k] = b[k].r_ms;
    }
    int rc = replan(lp, &p, err);
    if (rc < 0)
        return rc;
    memcpy(lp->blocks, b, sizeof(einet_BlockProfile) * (size_t)lp->n);
    lp->version++;
    return 0;
}

void liveprof_set_scores(liveprof_t *lp, const scores_t *s)
{
    lp->scores = *s;
}

void liveprof_fill(const liveprof_t *lp, einet_ProfileUpdate *out)
{
    memset(out, 0, sizeof *out);
    out->version = lp->version;
    out->blocks_count = (pb_size_t)lp->n;
    memcpy(out->blocks, lp->blocks, sizeof(einet_BlockProfile) * (size_t)lp->n);
}

uint64_t liveprof_version(const liveprof_t *lp)
{
    return lp->version;
}

const uint8_t *liveprof_plan(const liveprof_t *lp)
{
    return lp->plan;
}

int liveprof_blocks(const liveprof_t *lp)
{
    return lp->n;
}

double liveprof_horizon_ms(const liveprof_t *lp)
{
    return lp->horizon_ms;
}

double liveprof_expectation(const liveprof_t *lp)
{
    return lp->expectation;
}
