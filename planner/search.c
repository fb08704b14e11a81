/* The exit-plan searches of DESIGN.md other than exact (exact.c): enum, greedy, hybrid
 * (EINet Algorithm 2), random, and the fixed plans all and none; plus the checks of their
 * parameters and the dispatcher. Every search walks plans through the arrival stack with
 * undo, so a plan that differs from the last one by its deepest bits costs only those bits,
 * and nothing is allocated. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "planner_internal.h"

static const char *const search_names[] = {
    [PLANNER_SEARCH_EXACT] = "exact",   [PLANNER_SEARCH_HYBRID] = "hybrid",
    [PLANNER_SEARCH_GREEDY] = "greedy", [PLANNER_SEARCH_ENUM] = "enum",
    [PLANNER_SEARCH_RANDOM] = "random", [PLANNER_SEARCH_ALL] = "all",
    [PLANNER_SEARCH_NONE] = "none",
};
#define N_SEARCHES ((int)(sizeof search_names / sizeof search_names[0]))

const char *planner_search_name(planner_search_kind_t kind)
{
    return (int)kind >= 0 && (int)kind < N_SEARCHES ? search_names[kind] : "?";
}

int planner_search_parse(const char *name, planner_search_kind_t *kind)
{
    for (int i = 0; i < N_SEARCHES; i++)
        if (!strcmp(name, search_names[i])) {
            *kind = (planner_search_kind_t)i;
            return 0;
        }
    return -1;
}

void planner_search_init(planner_search_t *s)
{
    memset(s, 0, sizeof *s);
    s->kind = PLANNER_SEARCH_EXACT;
    s->m = 4;
    s->n_random = 10000;
    s->seed = 1;
}

/* C(n, k), saturating at 2^62. */
static uint64_t binom(int n, int k)
{
    if (k < 0 || k > n)
        return 0;
    if (k > n - k)
        k = n - k;
    uint64_t c = 1;
    for (int i = 1; i <= k; i++) {
        /* c * (n - k + i) / i stays exact: c is C(n-k+i-1, i-1). */
        if (c > (1ULL << 62) / (uint64_t)(n - k + i))
            return 1ULL << 62;
        c = c * (uint64_t)(n - k + i) / (uint64_t)i;
    }
    return c;
}

int planner_search_check(const planner_search_t *s, int n, int x, ei_err_t *err)
{
    int free_bits = n - x;
    switch (s->kind) {
    case PLANNER_SEARCH_EXACT:
    case PLANNER_SEARCH_GREEDY:
    case PLANNER_SEARCH_ALL:
        return 0;
    case PLANNER_SEARCH_HYBRID:
        if (s->m < 0 || s->m > free_bits)
            return ei_err_set(err, EI_E_RANGE, "m: %d outside [0, %d] (the free exits)", s->m,
                              free_bits);
        if (binom(free_bits, s->m) > (uint64_t)PLANNER_ENUM_MAX_PLANS)
            return ei_err_set(err, EI_E_RANGE,
                              "m: C(%d, %d) plans to enumerate, more than the limit %ld", free_bits,
                              s->m, PLANNER_ENUM_MAX_PLANS);
        return 0;
    case PLANNER_SEARCH_ENUM:
        if (free_bits > PLANNER_ENUM_MAX_BITS)
            return ei_err_set(err, EI_E_RANGE,
                              "search: enum over %d exits is 2^%d plans; at most %d exits "
                              "(use exact, which is optimal too)",
                              free_bits, free_bits, PLANNER_ENUM_MAX_BITS);
        return 0;
    case PLANNER_SEARCH_RANDOM:
        if (s->n_random < 1 || s->n_random > PLANNER_RANDOM_MAX)
            return ei_err_set(err, EI_E_RANGE, "n_random: %ld outside [1, %ld]", s->n_random,
                              PLANNER_RANDOM_MAX);
        return 0;
    case PLANNER_SEARCH_NONE:
        if (!s->plan)
            return ei_err_set(err, EI_E_INVAL, "plan: required with \"search\":\"none\"");
        for (int k = 0; k < n; k++)
            if (s->plan[k] > 1)
                return ei_err_set(err, EI_E_RANGE, "plan[%d]: %d, expected 0 or 1", k, s->plan[k]);
        return 0;
    }
    return ei_err_set(err, EI_E_RANGE, "search: unknown search %d", (int)s->kind);
}

/* ---- enum: every plan, depth first ------------------------------------------------------ */

typedef struct walk {
    const planner_t *p;
    const double *scores;
    pl_stack_t s;
    double best;
    uint64_t best_mask, count;
} walk_t;

static void walk_init(walk_t *w, const planner_t *p, const pl_ctx_t *ctx, const double *scores)
{
    w->p = p;
    w->scores = scores;
    memcpy(w->s.e, ctx->base.e, (size_t)(ctx->base.top + 1) * sizeof ctx->base.e[0]);
    w->s.top = ctx->base.top;
    w->best = -INFINITY;
    w->best_mask = 0;
    w->count = 0;
}

static void walk_leaf(walk_t *w, uint64_t mask)
{
    double v = w->s.e[w->s.top].cum;
    w->count++;
    if (v > w->best) {
        w->best = v;
        w->best_mask = mask;
    }
}

static void enum_rec(walk_t *w, int k, double bs, uint64_t mask)
{
    if (k == w->p->n) {
        walk_leaf(w, mask);
        return;
    }
    enum_rec(w, k + 1, bs, mask);
    pl_undo_t u;
    pl_push_undo(w->p, &w->s, w->p->A[k] + bs, w->scores[k], k, &u);
    enum_rec(w, k + 1, bs + w->p->b[k], mask | 1ULL << k);
    pl_undo(&w->s, &u);
}

int planner_search_enum(planner_t *self, const double *scores, const planner_offset_t *off,
                        planner_result_t *res, ei_err_t *err)
{
    planner_search_t s;
    planner_search_init(&s);
    s.kind = PLANNER_SEARCH_ENUM;
    int rc = planner_search_check(&s, self->n, off ? off->x : 0, err);
    if (rc)
        return rc;
    pl_ctx_t ctx;
    walk_t w;
    pl__ctx_init(self, off, &ctx);
    walk_init(&w, self, &ctx, scores);
    enum_rec(&w, ctx.x, ctx.shift, 0);
    pl__result_set(self, &ctx, off, scores, w.best_mask, w.count, "enum", res);
    return 0;
}

/* ---- greedy ----------------------------------------------------------------------------- */

/* The values of cur | j for every free j not in cur, in one sweep: the stack holds cur's
 * exits shallower than j; j and cur's deeper exits (shifted by b_j) are pushed on top and
 * undone. Returns the best j (-1 if none) and its value. */
static int greedy_step(const planner_t *p, const pl_ctx_t *ctx, const double *scores, uint64_t cur,
                       double *val, uint64_t *evaluated)
{
    pl_stack_t s;
    pl_undo_t log[PLANNER_MAX_EXITS + 1];
    memcpy(s.e, ctx->base.e, (size_t)(ctx->base.top + 1) * sizeof s.e[0]);
    s.top = ctx->base.top;
    double bs = ctx->shift, best = -INFINITY;
    int best_j = -1;
    for (int j = ctx->x; j < p->n; j++) {
        if (cur >> j & 1) {
            pl_push(p, &s, p->A[j] + bs, scores[j], j);
            bs += p->b[j];
            continue;
        }
        int nl = 0;
        pl_push_undo(p, &s, p->A[j] + bs, scores[j], j, &log[nl++]);
        double bj = bs + p->b[j];
        for (uint64_t rest = j + 1 < 64 ? cur >> (j + 1) << (j + 1) : 0; rest; rest &= rest - 1) {
            int i = __builtin_ctzll(rest);
            pl_push_undo(p, &s, p->A[i] + bj, scores[i], i, &log[nl++]);
            bj += p->b[i];
        }
        double v = s.e[s.top].cum;
        (*evaluated)++;
        if (v > best) {
            best = v;
            best_j = j;
        }
        while (nl > 0)
            pl_undo(&s, &log[--nl]);
    }
    *val = best;
    return best_j;
}

/* greedy_step() when pl__in_order_uniform() holds: then 1 - F is linear and nothing is
 * shadowed, so inserting j only adds j's step, turns the next member k's step into
 * (C_k - C_j)(1 - F(a_k + b_j)) and lowers every later step's sum by b_j / H times
 * (C_last - C_k): O(1) per candidate from suffix sums, O(n) per step. */
static int greedy_step_linear(const planner_t *p, const pl_ctx_t *ctx, const double *C,
                              uint64_t cur, double *val, uint64_t *evaluated)
{
    const pl_entry_t *base = &ctx->base.e[ctx->base.top];
    const double H = p->H, inv = p->inv_H;
    double a[PLANNER_MAX_EXITS], step[PLANNER_MAX_EXITS], tail[PLANNER_MAX_EXITS + 1];
    int mem[PLANNER_MAX_EXITS], m = 0;
    double bs = ctx->shift, prev = base->score;
    for (uint64_t rest = cur; rest; rest &= rest - 1) {
        int i = __builtin_ctzll(rest);
        mem[m] = i;
        a[m] = p->A[i] + bs;
        step[m] = (C[i] - prev) * (H - a[m]) * inv;
        prev = C[i];
        bs += p->b[i];
        m++;
    }
    const double c_last = prev;
    tail[m] = 0;
    for (int t = m - 1; t >= 0; t--)
        tail[t] = step[t] + tail[t + 1];
    double cum = base->cum, cp = base->score, best = -INFINITY;
    int best_j = -1, t = 0;
    bs = ctx->shift;
    for (int j = ctx->x; j < p->n; j++) {
        if (t < m && mem[t] == j) {
            cum += step[t];
            cp = C[j];
            bs += p->b[j];
            t++;
            continue;
        }
        const double bj = p->b[j];
        double v = cum + (C[j] - cp) * (H - p->A[j] - bs) * inv;
        if (t < m) {
            const double ck = C[mem[t]];
            v += (ck - C[j]) * (H - a[t] - bj) * inv + tail[t + 1] - bj * inv * (c_last - ck);
        }
        (*evaluated)++;
        if (v > best) {
            best = v;
            best_j = j;
        }
    }
    *val = best;
    return best_j;
}

/* Up to max_steps greedy additions from start; *best_val and *best_mask get the best plan
 * seen (start included). Returns the plan reached. */
static uint64_t greedy_run(const planner_t *p, const pl_ctx_t *ctx, const double *scores,
                           uint64_t start, int max_steps, double *best_val, uint64_t *best_mask,
                           uint64_t *evaluated)
{
    uint64_t cur = start, best = start;
    double bv = pl__eval_mask(p, ctx, scores, start);
    (*evaluated)++;
    uint64_t all = pl_free_mask(p->n, ctx->x);
    const int linear = pl__in_order_uniform(p, ctx);
    for (int step = 0; step < max_steps && cur != all; step++) {
        double v;
        int j = linear ? greedy_step_linear(p, ctx, scores, cur, &v, evaluated)
                       : greedy_step(p, ctx, scores, cur, &v, evaluated);
        EI_ASSERT(j >= 0);
        cur |= 1ULL << j;
        if (v > bv) {
            bv = v;
            best = cur;
        }
    }
    *best_val = bv;
    *best_mask = best;
    return cur;
}

uint64_t pl__greedy_from(const planner_t *p, const pl_ctx_t *ctx, const double *scores,
                         uint64_t start, double *best_val, uint64_t *evaluated)
{
    uint64_t best;
    greedy_run(p, ctx, scores, start, PLANNER_MAX_EXITS, best_val, &best, evaluated);
    return best;
}

int planner_search_greedy(planner_t *self, const double *scores, const planner_offset_t *off,
                          planner_result_t *res)
{
    pl_ctx_t ctx;
    pl__ctx_init(self, off, &ctx);
    uint64_t ev = 0;
    double v;
    uint64_t best = pl__greedy_from(self, &ctx, scores, 0, &v, &ev);
    pl__result_set(self, &ctx, off, scores, best, ev, "greedy", res);
    return 0;
}

/* ---- hybrid: every plan with exactly m outputs, then greedy from the best --------------- */

/* The leaves below one node of the enumeration: one more output j >= start. Each value is
 * the entry j lands on plus j's step, read without writing; when no j can shadow the top
 * entry (`clear`), under uniform interruption that is a short branch-free loop. */
static void comb_last(walk_t *w, int start, double bs, uint64_t mask, int clear)
{
    const planner_t *p = w->p;
    const pl_entry_t *e = w->s.e;
    const int top = w->s.top;
    const double *A = p->A, *C = w->scores;
    double best = w->best;
    int best_j = -1;
    if (clear) {
        const double cum = e[top].cum, sc = e[top].score;
        if (p->dist.kind == PLANNER_DIST_UNIFORM) {
            const double hb = p->H - bs, inv = p->inv_H;
            for (int j = start; j < p->n; j++) {
                double f = (hb - A[j]) * inv;
                double v = cum + (C[j] - sc) * (f < 0 ? 0 : f);
                if (v > best) {
                    best = v;
                    best_j = j;
                }
            }
        } else {
            for (int j = start; j < p->n; j++) {
                double v = cum + (C[j] - sc) * pl_surv(p, A[j] + bs);
                if (v > best) {
                    best = v;
                    best_j = j;
                }
            }
        }
    } else {
        for (int j = start; j < p->n; j++) {
            double at = A[j] + bs;
            int t = top;
            while (t > 0 && e[t].at >= at)
                t--;
            double v = e[t].cum + (C[j] - e[t].score) * pl_surv(p, at);
            if (v > best) {
                best = v;
                best_j = j;
            }
        }
    }
    w->count += (uint64_t)(p->n - start);
    if (best_j >= 0) {
        w->best = best;
        w->best_mask = mask | 1ULL << best_j;
    }
}

/* What exits >= start can add to the value of a stack none of them can shadow, whose top
 * scores sc: at any tau the answer is at most the best score that can have arrived
 * (p->stair[start], shifted by bs), so the sum of the steps is at most the integral of
 * (stair - sc)^+ dF, in Abel form sum over the stair's steps above sc. */
static double stair_room(const planner_t *p, int start, double bs, double sc)
{
    const pl_step_t *st = p->stair[start];
    double room = 0, below = sc;
    for (int q = 0; q < p->stair_len[start]; q++) {
        if (st[q].score <= below)
            continue;
        double sv = pl_surv(p, st[q].at + bs);
        if (sv <= 0)
            break;
        room += (st[q].score - below) * sv;
        below = st[q].score;
    }
    return room;
}

/* Every plan with exactly `left` more outputs from exits >= start; with upto, the inner nodes
 * of the same tree (plans with fewer outputs) are leaves too, at no extra push.
 * Pruning: when no exit >= start can shadow the top entry, every completion's value is the
 * top's plus at most stair_room(); if even that cannot beat the best plan seen, no plan
 * below does.
 * The result is the same as visiting every leaf (ties keep the first found). */
static void comb_rec(walk_t *w, int start, int left, int upto, double bs, uint64_t mask)
{
    if (upto || left == 0)
        walk_leaf(w, mask);
    if (left == 0)
        return;
    const planner_t *p = w->p;
    const pl_entry_t *top = &w->s.e[w->s.top];
    const int clear = p->sufmin_A[start] + bs >= top->at;
    if (clear && top->cum + stair_room(p, start, bs, top->score) <= w->best)
        return;
    if (left == 1) {
        comb_last(w, start, bs, mask, clear);
        return;
    }
    const int last = upto ? p->n - 1 : p->n - left;
    for (int j = start; j <= last; j++) {
        pl_undo_t u;
        pl_push_undo(p, &w->s, p->A[j] + bs, w->scores[j], j, &u);
        comb_rec(w, j + 1, left - 1, upto, bs + p->b[j], mask | 1ULL << j);
        pl_undo(&w->s, &u);
    }
}

int planner_search_hybrid(planner_t *self, const double *scores, const planner_offset_t *off, int m,
                          int upto, planner_result_t *res, ei_err_t *err)
{
    planner_search_t s;
    planner_search_init(&s);
    s.kind = PLANNER_SEARCH_HYBRID;
    s.m = m;
    int rc = planner_search_check(&s, self->n, off ? off->x : 0, err);
    if (rc)
        return rc;
    pl_ctx_t ctx;
    walk_t w;
    pl__ctx_init(self, off, &ctx);
    walk_init(&w, self, &ctx, scores);
    /* A good plan with m outputs first (m greedy steps from empty), so that the enumeration
     * prunes from the start; it finds the best plan with m outputs all the same. */
    uint64_t ev = 0, ignored;
    double v;
    w.best_mask = greedy_run(self, &ctx, scores, 0, m, &v, &ignored, &ev);
    w.best = pl__eval_mask(self, &ctx, scores, w.best_mask);
    pl__build_stairs(self, ctx.x, scores);
    comb_rec(&w, ctx.x, m, upto, ctx.shift, 0);
    ev += w.count;
    /* Algorithm 2, lines 3-12: greedy from the enumeration's best, keeping the best seen
     * (which includes that start). */
    uint64_t best = pl__greedy_from(self, &ctx, scores, w.best_mask, &v, &ev);
    pl__result_set(self, &ctx, off, scores, best, ev, upto ? "hybrid-upto" : "hybrid", res);
    return 0;
}

/* ---- random, all, none ------------------------------------------------------------------ */

int planner_search_random(planner_t *self, const double *scores, const planner_offset_t *off,
                          long n_plans, uint64_t seed, planner_result_t *res, ei_err_t *err)
{
    planner_search_t s;
    planner_search_init(&s);
    s.kind = PLANNER_SEARCH_RANDOM;
    s.n_random = n_plans;
    int rc = planner_search_check(&s, self->n, off ? off->x : 0, err);
    if (rc)
        return rc;
    pl_ctx_t ctx;
    pl__ctx_init(self, off, &ctx);
    uint64_t all = pl_free_mask(self->n, ctx.x), best_mask = 0;
    double best = -INFINITY;
    ei_rng_t rng;
    ei_rng_seed(&rng, seed);
    for (long i = 0; i < n_plans; i++) {
        uint64_t mask = ei_rng_next(&rng) & all;
        double v = pl__eval_mask(self, &ctx, scores, mask);
        if (v > best) {
            best = v;
            best_mask = mask;
        }
    }
    pl__result_set(self, &ctx, off, scores, best_mask, (uint64_t)n_plans, "random", res);
    return 0;
}

int planner_search(planner_t *self, const planner_search_t *s, const double *scores,
                   const planner_offset_t *off, planner_result_t *res, ei_err_t *err)
{
    int rc = planner_search_check(s, self->n, off ? off->x : 0, err);
    if (rc)
        return rc;
    pl_ctx_t ctx;
    switch (s->kind) {
    case PLANNER_SEARCH_EXACT:
        return planner_search_exact(self, scores, off, res);
    case PLANNER_SEARCH_HYBRID:
        return planner_search_hybrid(self, scores, off, s->m, s->m_upto, res, err);
    case PLANNER_SEARCH_GREEDY:
        return planner_search_greedy(self, scores, off, res);
    case PLANNER_SEARCH_ENUM:
        return planner_search_enum(self, scores, off, res, err);
    case PLANNER_SEARCH_RANDOM:
        return planner_search_random(self, scores, off, s->n_random, s->seed, res, err);
    case PLANNER_SEARCH_ALL:
        pl__ctx_init(self, off, &ctx);
        pl__result_set(self, &ctx, off, scores, pl_free_mask(self->n, ctx.x), 1, "all", res);
        return 0;
    case PLANNER_SEARCH_NONE: {
        pl__ctx_init(self, off, &ctx);
        uint64_t mask = 0;
        for (int k = ctx.x; k < self->n; k++)
            mask |= (uint64_t)(s->plan[k] & 1) << k;
        pl__result_set(self, &ctx, off, scores, mask, 1, "none", res);
        return 0;
    }
    }
    return ei_err_set(err, EI_E_RANGE, "search: unknown search %d", (int)s->kind);
}
