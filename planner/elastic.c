/* The elastic evaluation: runs exit policies sample by sample on the ET-profile's clock and
 * integrates the correctness of the answer in effect exactly over the intervals. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "elastic.h"

struct elastic {
    planner_profile_t prof;
    planner_t *pl;
    double H;
    /* Running mean of the measured planner overhead per replan, in ms: a replan plans from
     * the time it will take effect, its start plus this estimate. */
    double overhead_sum_ms;
    long overhead_count;
};

elastic_t *elastic_new(const planner_profile_t *prof, const planner_dist_t *dist, ei_err_t *err)
{
    elastic_t *el = ei_calloc(1, sizeof *el);
    if (!el) {
        ei_err_set(err, EI_E_NOMEM, "elastic: out of memory");
        return NULL;
    }
    el->prof = *prof;
    el->pl = planner_new(prof, dist, err);
    if (!el->pl) {
        free(el);
        return NULL;
    }
    el->H = planner_horizon(el->pl);
    return el;
}

void elastic_destroy(elastic_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    planner_destroy(&(*self_p)->pl);
    free(*self_p);
    *self_p = NULL;
}

int elastic_set_horizon(elastic_t *self, double H_ms, ei_err_t *err)
{
    int rc = planner_set_horizon(self->pl, H_ms, err);
    if (!rc)
        self->H = H_ms;
    return rc;
}

planner_t *elastic_planner(elastic_t *self)
{
    return self->pl;
}
const planner_profile_t *elastic_profile(const elastic_t *self)
{
    return &self->prof;
}
double elastic_horizon(const elastic_t *self)
{
    return self->H;
}

/* ---- policies ---- */

static void policy_clear(elastic_policy_t *p, const char *name, elastic_kind_t kind)
{
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->kind = kind;
    planner_search_init(&p->search);
    p->overhead_us = -1;
}

void elastic_policy_fixed(elastic_policy_t *p, const char *name, const uint8_t *plan, int n)
{
    policy_clear(p, name, ELASTIC_FIXED);
    memcpy(p->plan, plan, (size_t)n);
}

void elastic_policy_every(elastic_policy_t *p, const char *name, int n, int every)
{
    policy_clear(p, name, ELASTIC_FIXED);
    for (int k = 0; k < n; k++)
        p->plan[k] = (k + 1) % every == 0 || k == n - 1;
}

void elastic_policy_single(elastic_policy_t *p, int n)
{
    policy_clear(p, "single-exit", ELASTIC_FIXED);
    p->plan[n - 1] = 1;
}

void elastic_policy_confidence(elastic_policy_t *p, double threshold)
{
    char name[ELASTIC_NAME_MAX];
    snprintf(name, sizeof name, "confidence-%g", threshold);
    policy_clear(p, name, ELASTIC_CONFIDENCE);
    p->threshold = threshold;
}

void elastic_policy_planned(elastic_policy_t *p, const char *name, predictor_t *pred,
                            const planner_search_t *search)
{
    policy_clear(p, name, ELASTIC_PLANNED);
    p->pred = pred;
    p->search = *search;
    p->replan = 1;
}

void elastic_policy_oracle(elastic_policy_t *p)
{
    policy_clear(p, "oracle", ELASTIC_ORACLE);
}

int elastic_static_opt(elastic_t *el, const double *acc, uint8_t *plan, ei_err_t *err)
{
    int rc = planner_scores_check(acc, el->prof.n, err);
    if (rc)
        return rc;
    planner_result_t res;
    rc = planner_search_exact(el->pl, acc, NULL, &res);
    if (rc)
        return ei_err_set(err, rc, "static-opt: exact search failed");
    memcpy(plan, res.plan, (size_t)el->prof.n);
    return 0;
}

/* ---- timelines ---- */

static void trace_init(elastic_trace_t *tr, int n)
{
    memset(tr, 0, sizeof *tr);
    tr->n = n;
    for (int k = 0; k < n; k++)
        tr->arrive_ms[k] = INFINITY;
}

int elastic_timeline(const elastic_t *el, const elastic_trace_t *tr, elastic_interval_t *out)
{
    /* Arrivals before H in time order (ties: shallower first, so the deeper one wins). */
    int order[PLANNER_MAX_EXITS], m = 0;
    for (int k = 0; k < tr->n; k++)
        if (tr->executed[k] && tr->arrive_ms[k] < el->H)
            order[m++] = k;
    for (int i = 1; i < m; i++)
        for (int j = i; j > 0 && tr->arrive_ms[order[j]] < tr->arrive_ms[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    int count = 0, cur = -1;
    double t = 0;
    for (int i = 0; i < m; i++) {
        int k = order[i];
        double a = tr->arrive_ms[k] > 0 ? tr->arrive_ms[k] : 0;
        if (k < cur)
            continue; /* a deeper answer is already in effect */
        if (a > t)
            out[count++] = (elastic_interval_t){t, a, cur};
        cur = k;
        t = a > t ? a : t;
    }
    if (el->H > t)
        out[count++] = (elastic_interval_t){t, el->H, cur};
    return count;
}

int elastic_trace_at(const elastic_t *el, const elastic_trace_t *tr, const uint8_t *correct,
                     double tau_ms)
{
    elastic_interval_t iv[PLANNER_MAX_EXITS + 1];
    int count = elastic_timeline(el, tr, iv);
    for (int i = 0; i < count; i++)
        if (tau_ms >= iv[i].start_ms && (tau_ms < iv[i].end_ms || i == count - 1))
            return iv[i].exit >= 0 && correct[iv[i].exit];
    return 0;
}

double elastic_trace_value(const elastic_t *el, const elastic_trace_t *tr, const uint8_t *correct)
{
    elastic_interval_t iv[PLANNER_MAX_EXITS + 1];
    int count = elastic_timeline(el, tr, iv);
    double v = 0;
    for (int i = 0; i < count; i++)
        if (iv[i].exit >= 0 && correct[iv[i].exit])
            v += planner_cdf(el->pl, iv[i].end_ms) - planner_cdf(el->pl, iv[i].start_ms);
    return v;
}

/* Arrival times of a plan run without planner overhead. */
static void run_plan(const elastic_t *el, const uint8_t *plan, elastic_trace_t *tr)
{
    const planner_profile_t *p = &el->prof;
    double t = 0;
    trace_init(tr, p->n);
    for (int k = 0; k < p->n; k++) {
        t += p->conv_ms[k];
        if (plan[k]) {
            t += p->branch_ms[k];
            tr->executed[k] = 1;
            tr->arrive_ms[k] = t + p->result_ms[k];
        }
        t += k < p->n - 1 ? p->link_ms[k] : 0;
    }
}

/* ---- planned policies ---- */

/* The policy's search for `free` free bits: hybrid cannot enumerate more than those. */
static planner_search_t search_for(const elastic_policy_t *pol, int free)
{
    planner_search_t s = pol->search;
    s.m = s.m > free ? free : s.m;
    return s;
}

int elastic_initial_plan(elastic_t *el, const elastic_policy_t *pol, uint8_t *plan, ei_err_t *err)
{
    uint8_t none[PLANNER_MAX_EXITS] = {0};
    double scores[PLANNER_MAX_EXITS];
    planner_result_t res;
    EI_ASSERT(pol->kind == ELASTIC_PLANNED && pol->pred);
    /* With x = 0 no probability row is read. */
    predictor_predict(pol->pred, NULL, none, 0, scores);
    planner_search_t search = search_for(pol, el->prof.n);
    int rc = planner_search(el->pl, &search, scores, NULL, &res, err);
    if (!rc)
        memcpy(plan, res.plan, (size_t)el->prof.n);
    return rc;
}

/* The replanning offset after block k (0-based) finished at t0: spent bits, the answer in
 * effect at t0 and the results still on their way (deeper than it, in depth order). */
static void make_offset(const elastic_trace_t *tr, int k, double t0, const double *scores,
                        planner_offset_t *off)
{
    planner_offset_init(off);
    off->x = k + 1;
    off->t0_ms = t0;
    int in_effect = -1;
    for (int j = 0; j <= k; j++) {
        off->spent[j] = tr->executed[j];
        if (tr->executed[j] && tr->arrive_ms[j] <= t0)
            in_effect = j;
    }
    off->c0 = in_effect >= 0 ? scores[in_effect] : 0;
    for (int j = in_effect + 1; j <= k; j++)
        if (tr->executed[j]) {
            off->pending_ms[off->n_pending] = tr->arrive_ms[j];
            off->pending_score[off->n_pending++] = scores[j];
        }
}

/* One replan after block k: the predictor on what the sample showed, then the search over
 * bits k+1..n-1 from t0. Writes the new bits into plan and returns the wall time. */
static int replan(elastic_t *el, const elastic_policy_t *pol, const float *probs,
                  elastic_trace_t *tr, int k, double t0, uint8_t *plan, ei_err_t *err)
{
    double scores[PLANNER_MAX_EXITS];
    planner_offset_t off;
    planner_result_t res;
    double ta = ei_now();
    predictor_predict(pol->pred, probs, tr->executed, k + 1, scores);
    double tb = ei_now();
    make_offset(tr, k, t0, scores, &off);
    planner_search_t search = search_for(pol, el->prof.n - k - 1);
    int rc = planner_search(el->pl, &search, scores, &off, &res, err);
    double tc = ei_now();
    if (rc)
        return rc;
    memcpy(plan + k + 1, res.plan + k + 1, (size_t)(el->prof.n - k - 1));
    tr->predict_us += 1e6 * (tb - ta);
    tr->search_us += 1e6 * (tc - tb);
    tr->replans++;
    return 0;
}

static int run_planned(elastic_t *el, const elastic_policy_t *pol, const uint8_t *initial,
                       const profile_cs_t *cs, int i, elastic_trace_t *tr, ei_err_t *err)
{
    const planner_profile_t *p = &el->prof;
    uint8_t plan[PLANNER_MAX_EXITS];
    int rc = initial ? (memcpy(plan, initial, (size_t)p->n), 0)
                     : elastic_initial_plan(el, pol, plan, err);
    double t = 0;
    trace_init(tr, p->n);
    for (int k = 0; k < p->n && !rc; k++) {
        t += p->conv_ms[k];
        if (plan[k]) {
            t += p->branch_ms[k];
            tr->executed[k] = 1;
            tr->arrive_ms[k] = t + p->result_ms[k];
            if (pol->replan && k < p->n - 1) {
                double fixed = pol->overhead_us >= 0 ? pol->overhead_us / 1e3 : -1;
                double est = fixed >= 0           ? fixed
                             : el->overhead_count ? el->overhead_sum_ms / el->overhead_count
                                                  : 0;
                double before = tr->predict_us + tr->search_us;
                rc = replan(el, pol, profile_cs_probs(cs, i), tr, k, t + est, plan, err);
                double o = fixed >= 0 ? fixed : (tr->predict_us + tr->search_us - before) / 1e3;
                el->overhead_sum_ms += o;
                el->overhead_count++;
                tr->charged_ms += o;
                t += o;
            }
        }
        t += k < p->n - 1 ? p->link_ms[k] : 0;
    }
    return rc;
}

/* ---- running policies ---- */

int elastic_run_sample(elastic_t *el, const elastic_policy_t *pol, const uint8_t *initial,
                       const profile_cs_t *cs, int i, elastic_trace_t *tr, ei_err_t *err)
{
    int n = el->prof.n, rc = 0;
    const uint8_t *correct = profile_cs_correct(cs, i);
    uint8_t plan[PLANNER_MAX_EXITS] = {0};
    switch (pol->kind) {
    case ELASTIC_FIXED:
        run_plan(el, pol->plan, tr);
        break;
    case ELASTIC_CONFIDENCE: {
        const float *conf = profile_cs_conf(cs, i);
        for (int k = 0; k < n; k++) {
            plan[k] = 1;
            if (conf[k] >= pol->threshold)
                break; /* inference stops: this answer holds to H */
        }
        run_plan(el, plan, tr);
        break;
    }
    case ELASTIC_ORACLE: {
        double scores[PLANNER_MAX_EXITS];
        planner_result_t res;
        for (int k = 0; k < n; k++)
            scores[k] = correct[k];
        rc = planner_search_exact(el->pl, scores, NULL, &res);
        if (rc)
            return ei_err_set(err, rc, "oracle: exact search failed on sample %d", i);
        run_plan(el, res.plan, tr);
        break;
    }
    case ELASTIC_PLANNED:
        rc = run_planned(el, pol, initial, cs, i, tr, err);
        break;
    }
    if (!rc)
        tr->value = elastic_trace_value(el, tr, correct);
    return rc;
}

/* Adds a trace's correct intervals to the curve's difference array (points + 1 slots). */
static void curve_add(const elastic_t *el, const elastic_trace_t *tr, const uint8_t *correct,
                      double *diff, int points)
{
    elastic_interval_t iv[PLANNER_MAX_EXITS + 1];
    int count = elastic_timeline(el, tr, iv);
    double scale = (points - 1) / el->H;
    for (int i = 0; i < count; i++) {
        if (iv[i].exit < 0 || !correct[iv[i].exit])
            continue;
        /* Grid points g with start <= g H / (points-1) < end; the end of time counts too. */
        int g0 = (int)ceil(iv[i].start_ms * scale - 1e-9);
        int g1 = iv[i].end_ms >= el->H ? points : (int)ceil(iv[i].end_ms * scale - 1e-9);
        if (g1 > g0) {
            diff[g0] += 1;
            diff[g1] -= 1;
        }
    }
}

int elastic_evaluate(elastic_t *el, const elastic_policy_t *pol, const profile_cs_t *cs,
                     int samples, elastic_result_t *res, elastic_curve_t *curve, ei_err_t *err)
{
    int n = el->prof.n;
    if (profile_cs_exits(cs) != n)
        return ei_err_set(err, EI_E_SHAPE, "CS-profile has %d exits, the ET-profile %d",
                          profile_cs_exits(cs), n);
    if (samples < 1 || samples > profile_cs_count(cs))
        return ei_err_set(err, EI_E_RANGE, "%d samples, the CS-profile has %d", samples,
                          profile_cs_count(cs));
    if (pol->kind == ELASTIC_PLANNED && (!pol->pred || predictor_exits(pol->pred) != n ||
                                         predictor_classes(pol->pred) != profile_cs_classes(cs)))
        return ei_err_set(err, EI_E_SHAPE,
                          "%s: the predictor does not fit %d exits and %d "
                          "classes",
                          pol->name, n, profile_cs_classes(cs));
    uint8_t initial[PLANNER_MAX_EXITS];
    int rc = pol->kind == ELASTIC_PLANNED ? elastic_initial_plan(el, pol, initial, err) : 0;
    double *diff = curve ? ei_calloc((size_t)curve->points + 1, sizeof *diff) : NULL;
    if (curve && !diff)
        return ei_err_set(err, EI_E_NOMEM, "out of memory");
    memset(res, 0, sizeof *res);
    el->overhead_sum_ms = 0;
    el->overhead_count = 0;
    long replans = 0;
    for (int i = 0; i < samples && !rc; i++) {
        elastic_trace_t tr;
        rc = elastic_run_sample(el, pol, initial, cs, i, &tr, err);
        if (rc)
            break;
        res->accuracy += tr.value;
        for (int k = 0; k < n; k++)
            res->branches += tr.executed[k];
        replans += tr.replans;
        res->predict_us += tr.predict_us;
        res->search_us += tr.search_us;
        res->charged_ms += tr.charged_ms;
        if (diff)
            curve_add(el, &tr, profile_cs_correct(cs, i), diff, curve->points);
    }
    res->samples = samples;
    res->accuracy /= samples;
    res->branches /= samples;
    res->replans = (double)replans / samples;
    res->charged_ms /= samples;
    res->predict_us = replans ? res->predict_us / replans : 0;
    res->search_us = replans ? res->search_us / replans : 0;
    for (int g = 0; diff && g < curve->points; g++) {
        diff[g + 1] += diff[g];
        curve->acc[g] = diff[g] / samples;
    }
    free(diff);
    return rc;
}
