/* The live ET-profile and the initial plan (see liveprof.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "coordinator/liveprof.h"
#include "runtime/replan.h"

#define LIVEPROF_TIMING_RUNS 5
/* Results a mean offset takes at least (an exit a planner rarely runs stays stable). */
#define LIVEPROF_MIN_SAMPLES 20

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
    /* Result offsets: arrival at the coordinator - request receipt - the node's elapsed
     * time, i.e. dispatch + result delay (ms); per pipeline index and per exit, the mean of
     * those since the last rebuild (sum, n) and the one the profile uses (value, has). */
    double tier_sum[CONF_MAX_TIERS], tier_off[CONF_MAX_TIERS];
    uint64_t tier_n[CONF_MAX_TIERS];
    int tier_has[CONF_MAX_TIERS];
    double exit_sum[CLUSTER_MAX_BLOCKS], exit_off[CLUSTER_MAX_BLOCKS];
    uint64_t exit_n[CLUSTER_MAX_BLOCKS];
    int exit_has[CLUSTER_MAX_BLOCKS];
    double dispatch_ms;
    planner_profile_t prof;  /* the current profile as the planner takes it */
    planner_t *alt;          /* plans for a request's own interruption distribution */
    planner_dist_t alt_dist;
    uint64_t alt_version;
    uint8_t alt_plan[CLUSTER_MAX_BLOCKS];
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
    planner_destroy(&(*self_p)->alt);
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

/* The dispatch time d0 (request receipt to the device's start): the device's measured
 * result offset less its result delay r; 0 until the device has sent results. */
static double dispatch_ms(liveprof_t *lp, const cluster_t *c)
{
    for (int i = 0; i < CONF_MAX_TIERS; i++)
        if (lp->tier_n[i] >= LIVEPROF_MIN_SAMPLES) {
            lp->tier_off[i] = lp->tier_sum[i] / (double)lp->tier_n[i];
            lp->tier_has[i] = 1;
            lp->tier_sum[i] = 0;
            lp->tier_n[i] = 0;
        }
    for (int k = 0; k < lp->n; k++)
        if (lp->exit_n[k] >= LIVEPROF_MIN_SAMPLES) {
            lp->exit_off[k] = lp->exit_sum[k] / (double)lp->exit_n[k];
            lp->exit_has[k] = 1;
            lp->exit_sum[k] = 0;
            lp->exit_n[k] = 0;
        }
    if (!lp->tier_has[0] || c->n_tiers < 1)
        return 0;
    double d = lp->tier_off[0] - c->node[0].coord_latency_ms;
    return d > 0 ? d : 0;
}

static void build(liveprof_t *lp, const cluster_t *c, einet_BlockProfile *b)
{
    lp->dispatch_ms = dispatch_ms(lp, c);
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
        /* Measured on real results: offset - d0, per exit where it has run. */
        double off = lp->exit_has[k] ? lp->exit_off[k] : lp->tier_has[i] ? lp->tier_off[i] : -1;
        if (off >= 0)
            b[k].r_ms = (float)(off - lp->dispatch_ms > 0 ? off - lp->dispatch_ms : 0);
        if (k + 1 == (int)nd->last_block && i + 1 < c->n_tiers) {
            double l = nd->link_latency_ms;
            if (nd->link_bw_mbps > 0)
                l += lp->map_bytes[k] * 8.0 / ((double)nd->link_bw_mbps * 1000.0);
            /* Better: the transfers the next node measured on real maps (sent_at to
             * arrival, whatever held them: the wire, a busy peer, an injected delay). */
            if (c->node[i + 1].prev_samples > 0)
                l = c->node[i + 1].prev_transfer_ms + nd->boundary_ms;
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
    /* Plans on the coordinator's clock (deadlines count from its receipt): d0 before c_1.
     * The blocks pushed keep c_1 as measured; the nodes add dispatch_ms themselves. */
    p.conv_ms[0] += lp->dispatch_ms;
    int rc = replan(lp, &p, err);
    if (rc < 0)
        return rc;
    memcpy(lp->blocks, b, sizeof(einet_BlockProfile) * (size_t)lp->n);
    lp->prof = p;
    lp->version++;
    return 0;
}

void liveprof_set_scores(liveprof_t *lp, const scores_t *s)
{
    lp->scores = *s;
}

void liveprof_note_offset(liveprof_t *lp, int pos, int exit, double offset_ms)
{
    if (pos < 0 || pos >= CONF_MAX_TIERS || exit < 1 || exit > lp->n || !(offset_ms >= 0) ||
        offset_ms > 1e4)
        return;
    lp->tier_sum[pos] += offset_ms;
    lp->tier_n[pos]++;
    lp->exit_sum[exit - 1] += offset_ms;
    lp->exit_n[exit - 1]++;
}

double liveprof_dispatch_ms(const liveprof_t *lp)
{
    return lp->dispatch_ms;
}

int liveprof_plan_for(liveprof_t *lp, const planner_dist_t *dist, uint8_t *plan, ei_err_t *err)
{
    if (lp->n > PLANNER_MAX_EXITS || (dist->kind == lp->dist.kind &&
                                      (dist->kind == PLANNER_DIST_UNIFORM ||
                                       (dist->mu == lp->dist.mu && dist->sigma == lp->dist.sigma)))) {
        memcpy(plan, lp->plan, (size_t)lp->n);
        return 0;
    }
    int same = lp->alt && lp->alt_version == lp->version && lp->alt_dist.kind == dist->kind &&
               lp->alt_dist.mu == dist->mu && lp->alt_dist.sigma == dist->sigma;
    if (!same) {
        int rc = 0;
        if (!lp->alt && !(lp->alt = planner_new(&lp->prof, dist, err)))
            return err ? err->code : EI_E_INVAL;
        if ((rc = planner_set_profile(lp->alt, &lp->prof, err)) < 0 ||
            (rc = planner_set_dist(lp->alt, dist, err)) < 0)
            return rc;
        double scores[SCORES_MAX_EXITS];
        scores_for(&lp->scores, NULL, 0, 0, scores);
        if ((rc = replan_initial(lp->alt, &lp->search, scores, lp->alt_plan, err)) < 0)
            return rc;
        lp->alt_dist = *dist;
        lp->alt_version = lp->version;
    }
    memcpy(plan, lp->alt_plan, (size_t)lp->n);
    return 0;
}

void liveprof_fill(const liveprof_t *lp, einet_ProfileUpdate *out)
{
    memset(out, 0, sizeof *out);
    out->version = lp->version;
    out->dispatch_ms = (float)lp->dispatch_ms;
    out->horizon_ms = (float)lp->horizon_ms; /* d0 included (the planner's profile) */
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
