/* The accuracy expectation: the planner object (profile, distribution, precomputed arrival
 * offsets), the checks of its inputs, and the exact evaluation of a plan.
 *
 * Evaluation walks the executed exits in depth order and keeps a stack of the results that
 * can still take effect: a deeper result arriving at a shadows every shallower one arriving
 * at or after a (DESIGN.md: the answer in effect is the deepest result arrived), so those are
 * popped. Each entry carries the integral of the answer's score over [t0, H] as if it stayed
 * in effect to H, so E(plan) is the top entry's value and adding an exit costs O(1)
 * amortised and one evaluation of F. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "planner_internal.h"

/* ---- checks ---------------------------------------------------------------------------- */

static int check_times(const double *v, int n, const char *field, ei_err_t *err)
{
    for (int k = 0; k < n; k++) {
        if (!isfinite(v[k]))
            return ei_err_set(err, EI_E_NONFINITE, "%s[%d]: not a finite number", field, k);
        if (v[k] < 0)
            return ei_err_set(err, EI_E_RANGE, "%s[%d]: %g is negative", field, k, v[k]);
        if (v[k] > 1e12)
            return ei_err_set(err, EI_E_RANGE, "%s[%d]: %g ms is implausibly large", field, k,
                              v[k]);
    }
    return 0;
}

static double horizon_of(const planner_profile_t *prof)
{
    double h = 0;
    for (int k = 0; k < prof->n - 1; k++)
        h += prof->conv_ms[k] + prof->link_ms[k];
    h += prof->conv_ms[prof->n - 1] + prof->branch_ms[prof->n - 1] + prof->result_ms[prof->n - 1];
    for (int k = 0; k < prof->n - 1; k++)
        h += prof->branch_ms[k];
    return h;
}

int planner_profile_check(const planner_profile_t *prof, ei_err_t *err)
{
    if (prof->n < 1 || prof->n > PLANNER_MAX_EXITS)
        return ei_err_set(err, EI_E_RANGE, "n: %d exits, expected 1..%d", prof->n,
                          PLANNER_MAX_EXITS);
    int rc;
    if ((rc = check_times(prof->conv_ms, prof->n, "conv_ms", err)) ||
        (rc = check_times(prof->branch_ms, prof->n, "branch_ms", err)) ||
        (rc = check_times(prof->link_ms, prof->n, "link_ms", err)) ||
        (rc = check_times(prof->result_ms, prof->n, "result_ms", err)))
        return rc;
    if (!(horizon_of(prof) > 0))
        return ei_err_set(err, EI_E_RANGE,
                          "conv_ms: the horizon (all-ones plan's last arrival) is 0 ms");
    return 0;
}

/* Phi(b) - Phi(a) for standard normal a <= b, without cancellation in either tail. */
static double phi_diff(double a, double b)
{
    if (a >= 0)
        return 0.5 * (erfc(a / M_SQRT2) - erfc(b / M_SQRT2));
    if (b <= 0)
        return 0.5 * (erfc(-b / M_SQRT2) - erfc(-a / M_SQRT2));
    return 1.0 - 0.5 * erfc(-a / M_SQRT2) - 0.5 * erfc(b / M_SQRT2);
}

int planner_dist_check(const planner_dist_t *dist, ei_err_t *err)
{
    if (dist->kind == PLANNER_DIST_UNIFORM)
        return 0;
    if (dist->kind != PLANNER_DIST_NORMAL)
        return ei_err_set(err, EI_E_RANGE, "dist.kind: unknown distribution %d", (int)dist->kind);
    if (!isfinite(dist->mu))
        return ei_err_set(err, EI_E_NONFINITE, "dist.mu: not a finite number");
    if (!isfinite(dist->sigma) || !(dist->sigma > 0))
        return ei_err_set(err, EI_E_RANGE, "dist.sigma: %g, expected a finite number > 0",
                          dist->sigma);
    double mass = phi_diff(-dist->mu / dist->sigma, (1 - dist->mu) / dist->sigma);
    if (!(mass >= 1e-6))
        return ei_err_set(err, EI_E_RANGE,
                          "dist: normal(mu=%g, sigma=%g) puts only %.3g of its mass in [0, H]; "
                          "truncating it to [0, H] is numerically meaningless",
                          dist->mu, dist->sigma, mass);
    return 0;
}

int planner_scores_check(const double *scores, int n, ei_err_t *err)
{
    for (int k = 0; k < n; k++) {
        if (!isfinite(scores[k]))
            return ei_err_set(err, EI_E_NONFINITE, "scores[%d]: not a finite number", k);
        if (scores[k] < 0 || scores[k] > 1)
            return ei_err_set(err, EI_E_RANGE, "scores[%d]: %g outside [0, 1]", k, scores[k]);
    }
    return 0;
}

int planner_offset_check(const planner_offset_t *off, int n, ei_err_t *err)
{
    if (off->x < 0 || off->x > n)
        return ei_err_set(err, EI_E_RANGE, "offset.x: %d outside [0, n=%d]", off->x, n);
    if (!isfinite(off->t0_ms) || off->t0_ms < 0)
        return ei_err_set(err, EI_E_RANGE, "offset.t0_ms: %g, expected a finite number >= 0",
                          off->t0_ms);
    if (!isfinite(off->c0) || off->c0 < 0 || off->c0 > 1)
        return ei_err_set(err, EI_E_RANGE, "offset.c0: %g outside [0, 1]", off->c0);
    if (off->n_pending < 0 || off->n_pending > off->x)
        return ei_err_set(err, EI_E_RANGE, "offset.pending: %d results, expected 0..x=%d",
                          off->n_pending, off->x);
    for (int i = 0; i < off->n_pending; i++) {
        if (!isfinite(off->pending_ms[i]) || off->pending_ms[i] < off->t0_ms)
            return ei_err_set(err, EI_E_RANGE,
                              "offset.pending_ms[%d]: %g, expected a finite time >= t0_ms", i,
                              off->pending_ms[i]);
        double c = off->pending_score[i];
        if (!isfinite(c) || c < 0 || c > 1)
            return ei_err_set(err, EI_E_RANGE, "offset.pending_scores[%d]: %g outside [0, 1]", i,
                              c);
    }
    for (int k = 0; k < off->x; k++)
        if (off->spent[k] > 1)
            return ei_err_set(err, EI_E_RANGE, "offset.spent[%d]: %d, expected 0 or 1", k,
                              off->spent[k]);
    return 0;
}

/* ---- the planner object ---------------------------------------------------------------- */

void planner_profile_init(planner_profile_t *prof, int n)
{
    memset(prof, 0, sizeof *prof);
    prof->n = n;
}

void planner_offset_init(planner_offset_t *off)
{
    memset(off, 0, sizeof *off);
}

/* Everything that depends on the profile alone. */
static void precompute_profile(planner_t *p)
{
    const planner_profile_t *pr = &p->prof;
    int n = pr->n;
    p->n = n;
    p->Pc[0] = p->Bpre[0] = 0;
    for (int k = 0; k < n; k++) {
        p->b[k] = pr->branch_ms[k];
        p->A[k] = p->Pc[k] + pr->conv_ms[k] + pr->branch_ms[k] + pr->result_ms[k];
        p->Pc[k + 1] = p->Pc[k] + pr->conv_ms[k] + pr->link_ms[k];
        p->Bpre[k + 1] = p->Bpre[k] + pr->branch_ms[k];
    }
    p->H = p->A[n - 1] + p->Bpre[n - 1];
    p->inv_H = 1.0 / p->H;
    /* Arrivals are in depth order in every plan iff a_j - a_i >= 0 for consecutive executed
     * i < j, i.e. A[j] - A[i] + b[i] >= 0 (everything between skipped is the worst case). */
    p->mono_from[n] = 1;
    p->sufmin_A[n] = INFINITY;
    for (int i = n - 1; i >= 0; i--) {
        p->mono_from[i] = p->mono_from[i + 1] && p->sufmin_A[i + 1] >= p->A[i] - p->b[i];
        p->sufmin_A[i] = fmin(p->A[i], p->sufmin_A[i + 1]);
    }
    /* Insertion sort by A, ties by depth: n <= 64 and stable, no shared state. */
    for (int k = 0; k < n; k++) {
        int i = k;
        while (i > 0 && p->A[p->by_arrival[i - 1]] > p->A[k]) {
            p->by_arrival[i] = p->by_arrival[i - 1];
            i--;
        }
        p->by_arrival[i] = k;
    }
}

static void precompute_dist(planner_t *p)
{
    if (p->dist.kind != PLANNER_DIST_NORMAL)
        return;
    double sd = p->dist.sigma * p->H;
    p->mean = p->dist.mu * p->H;
    p->inv_sd_sqrt2 = 1.0 / (sd * M_SQRT2);
    p->phi0 = 0.5 * erfc(p->mean * p->inv_sd_sqrt2);
    p->phiH = 0.5 * erfc(-(p->H - p->mean) * p->inv_sd_sqrt2);
    p->inv_mass = 1.0 / phi_diff(-p->dist.mu / p->dist.sigma, (1 - p->dist.mu) / p->dist.sigma);
}

planner_t *planner_new(const planner_profile_t *prof, const planner_dist_t *dist, ei_err_t *err)
{
    if (planner_profile_check(prof, err) || planner_dist_check(dist, err))
        return NULL;
    planner_t *p = ei_calloc(1, sizeof *p);
    if (!p) {
        ei_err_set(err, EI_E_NOMEM, "planner: out of memory");
        return NULL;
    }
    p->prof = *prof;
    p->dist = *dist;
    precompute_profile(p);
    precompute_dist(p);
    return p;
}

void planner_destroy(planner_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->labels);
    free(*self_p);
    *self_p = NULL;
}

int planner_set_profile(planner_t *self, const planner_profile_t *prof, ei_err_t *err)
{
    int rc = planner_profile_check(prof, err);
    if (rc)
        return rc;
    self->prof = *prof;
    precompute_profile(self);
    precompute_dist(self); /* mean and deviation scale with H */
    return 0;
}

int planner_set_dist(planner_t *self, const planner_dist_t *dist, ei_err_t *err)
{
    int rc = planner_dist_check(dist, err);
    if (rc)
        return rc;
    self->dist = *dist;
    precompute_dist(self);
    return 0;
}

int planner_set_horizon(planner_t *self, double H_ms, ei_err_t *err)
{
    if (!(H_ms > 0) || !isfinite(H_ms))
        return ei_err_set(err, EI_E_RANGE, "horizon %g ms: must be a positive number", H_ms);
    self->H = H_ms;
    self->inv_H = 1.0 / H_ms;
    precompute_dist(self);
    return 0;
}

int planner_n(const planner_t *self)
{
    return self->n;
}

double planner_horizon(const planner_t *self)
{
    return self->H;
}

double planner_cdf(const planner_t *self, double t)
{
    if (t <= 0)
        return 0;
    if (t >= self->H)
        return 1;
    if (self->dist.kind == PLANNER_DIST_UNIFORM)
        return t * self->inv_H;
    double phi = 0.5 * erfc(-(t - self->mean) * self->inv_sd_sqrt2);
    double f = (phi - self->phi0) * self->inv_mass;
    return f < 0 ? 0 : f > 1 ? 1 : f;
}

/* ---- evaluation ------------------------------------------------------------------------ */

void pl__ctx_init(const planner_t *p, const planner_offset_t *off, pl_ctx_t *ctx)
{
    int x = off ? off->x : 0;
    double t0 = off ? off->t0_ms : 0, c0 = off ? off->c0 : 0;
    ctx->x = x;
    ctx->t0 = t0;
    /* Conv part x+1 (1-based) starts at t0 + L_x; A[j] counts from time 0 with every
     * conv part and link before j, so subtract those of the spent blocks. */
    ctx->shift = x > 0 ? t0 + p->prof.link_ms[x - 1] - p->Pc[x] : t0;
    pl_stack_t *s = &ctx->base;
    s->top = 0;
    s->e[0].at = t0;
    s->e[0].score = c0;
    s->e[0].cum = c0 * pl_surv(p, t0);
    s->e[0].exit = -1;
    for (int i = 0; off && i < off->n_pending; i++)
        pl_push(p, s, off->pending_ms[i], off->pending_score[i], -2 - i);
}

static void stack_copy(pl_stack_t *dst, const pl_stack_t *src)
{
    memcpy(dst->e, src->e, (size_t)(src->top + 1) * sizeof src->e[0]);
    dst->top = src->top;
}

/* Runs the free bits of `mask` through a copy of the context's base stack. */
static void run_mask(const planner_t *p, const pl_ctx_t *ctx, const double *scores, uint64_t mask,
                     pl_stack_t *s)
{
    stack_copy(s, &ctx->base);
    double bs = ctx->shift;
    while (mask) {
        int j = __builtin_ctzll(mask);
        mask &= mask - 1;
        pl_push(p, s, p->A[j] + bs, scores ? scores[j] : 0, j);
        bs += p->b[j];
    }
}

double pl__eval_mask(const planner_t *p, const pl_ctx_t *ctx, const double *scores, uint64_t mask)
{
    pl_stack_t s;
    run_mask(p, ctx, scores, mask, &s);
    return s.e[s.top].cum;
}

static uint64_t plan_mask(const planner_t *p, int x, const uint8_t *plan)
{
    uint64_t m = 0;
    for (int k = x; k < p->n; k++)
        if (plan[k])
            m |= 1ULL << k;
    return m;
}

double planner_expect(const planner_t *self, const double *scores, const uint8_t *plan,
                      const planner_offset_t *off)
{
    pl_ctx_t ctx;
    pl__ctx_init(self, off, &ctx);
    return pl__eval_mask(self, &ctx, scores, plan_mask(self, ctx.x, plan));
}

int planner_timeline(const planner_t *self, const uint8_t *plan, const planner_offset_t *off,
                     planner_interval_t *out)
{
    pl_ctx_t ctx;
    pl_stack_t s;
    pl__ctx_init(self, off, &ctx);
    run_mask(self, &ctx, NULL, plan_mask(self, ctx.x, plan), &s);
    int count = 0;
    for (int i = 0; i <= s.top; i++) {
        double start = s.e[i].at > ctx.t0 ? s.e[i].at : ctx.t0;
        double end = i < s.top ? s.e[i + 1].at : self->H;
        if (end > self->H)
            end = self->H;
        if (!(end > start))
            continue;
        int ex = s.e[i].exit;
        out[count].start_ms = start;
        out[count].end_ms = end;
        out[count].pending = ex <= -2;
        out[count].exit = ex <= -2 ? -2 - ex : ex;
        count++;
    }
    return count;
}

void pl__result_set(const planner_t *p, const pl_ctx_t *ctx, const planner_offset_t *off,
                    const double *scores, uint64_t mask, uint64_t evaluated, const char *algo,
                    planner_result_t *res)
{
    memset(res->plan, 0, sizeof res->plan);
    for (int k = 0; k < ctx->x; k++)
        res->plan[k] = off->spent[k];
    for (int k = ctx->x; k < p->n; k++)
        res->plan[k] = (mask >> k) & 1;
    res->expectation = pl__eval_mask(p, ctx, scores, mask);
    res->evaluated = evaluated;
    res->algo = algo;
}
