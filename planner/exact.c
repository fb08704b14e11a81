/* exact: the provably optimal exit plan for any n, by the first method that applies:
 *   "dp"     uniform interruption, arrivals in depth order, all by H: a dynamic programme
 *            over (terminal exit, last executed exit), O(n^3);
 *   "pareto" any distribution, arrivals in depth order: labels (last executed exit, branch
 *            time spent, value) with Pareto dominance, exact and in practice fast;
 *   "bnb"    otherwise (results that can arrive out of depth order): branch-and-bound over
 *            the bits with a sound bound.
 * docs/planner.md gives the arguments at more length.
 *
 * THE DYNAMIC PROGRAMME. Write A_k for exit k's arrival when every earlier branch is
 * skipped; in a plan, a_k = A_k + s + sum of b_l over executed l < k (s: the offset's shift,
 * 0 without one). Let the executed free exits be i_1 < ... < i_m, with j = i_m, and let the
 * answer in effect before them have score C_p (the offset's c0 or last pending result; 0).
 *
 * (1) If A_j - A_i + b_i >= 0 for all x <= i < j (planner_t.mono_from), then for consecutive
 *     executed exits a_{i_{k+1}} - a_{i_k} = A_{i_{k+1}} - A_{i_k} + b_{i_k} >= 0: arrivals
 *     come in depth order in every plan, so exit i_k is in effect exactly on
 *     [a_{i_k}, a_{i_{k+1}}) and i_m from a_j on. This gap does not depend on any other
 *     choice: that is the decomposition along consecutive outputs.
 * (2) If moreover every future arrival comes no earlier than the pending results (so none
 *     is popped) and no later than H in the all-ones completion (the latest it can be; then
 *     no interval needs the cap at H), the integral is, with F(t) = t / H,
 *        H * (E - E_p) = -C_p (H - a_{i_1}) + sum_{k<m} C_{i_k} (a_{i_{k+1}} - a_{i_k})
 *                        + C_j (H - a_j)
 *     where E_p is the value of the base answer held to H. The last term is the catch: H - a_j
 *     grows with every branch skipped before j, so it depends on all earlier choices, and a
 *     DP whose state is only "the last executed exit" is not exact (docs/planner.md has a
 *     counter-example). Substituting a_j = A_j + s + sum_{k<m} b_{i_k} moves that dependence
 *     onto the pairs:
 *        H * (E - E_p) = -C_p (H - A_{i_1} - s)
 *                        + sum_{k<m} [ C_{i_k} (A_{i_{k+1}} - A_{i_k}) + b_{i_k} (C_{i_k} - C_j) ]
 *                        + C_j (H - A_j - s),
 *     a sum of terms each of which depends on one consecutive pair and the terminal j only.
 * (3) So for each terminal j the best chain ending at j is a longest path in a DAG:
 *        g_j(i) = max( -C_p (H - A_i - s),
 *                      max_{x <= h < i} g_j(h) + C_h (A_i - A_h) + b_h (C_h - C_j) ),
 *     the best plan ending at j is worth g_j(j) + C_j (H - A_j - s), and the optimum is the
 *     best over j and the empty plan (worth 0). O(n^2) per terminal, O(n^3) in all; for
 *     n = 40 that is ~11,000 transitions.
 * Conditions (1)-(2) are checked per call (planner_exact_dp_applies). Without an offset they
 * reduce to (1): every plan's a_j is at most the all-ones a_j, which (1) keeps at most a_n = H.
 * (1) always holds when result delays are 0, since then a_j - a_i includes c_j + b_j >= 0.
 *
 * THE PARETO LABELS need only (1) and the pending condition of (2), for any F.
 * (a) Only steps up pay off: if an executed exit i scores no more than the answer before it
 *     (C_i <= C_p), drop the deepest such i. Over [a_i, a_k) (k: the next executed exit) the
 *     answer was C_i and becomes C_p, then C_k, both >= C_i (k steps up, being deeper than
 *     the deepest step down). From a_k on, the new answer at tau is the old one at tau + b_i,
 *     and the old one is non-decreasing there (all later steps are up). So the answer is
 *     pointwise no worse at every tau, for every F, and repeating this leaves a plan at least
 *     as good whose executed scores strictly increase.
 * (b) In such a plan, with the last executed exit i and the branch time B spent so far, the
 *     value is cum (the value if i stayed in effect to H) plus sum over later executed j of
 *     (C_j - C_prev) (1 - F(a_j)), every term >= 0, with a_j = A_j + s + B + (branch times
 *     between). So of two partial plans with the same last exit i, one with B1 <= B2 and
 *     cum1 >= cum2 does at least as well under every completion: the other is dominated.
 * The search goes through i = x..n-1, extends every kept label of every h < i with C_h < C_i
 * (and the base answer) by i, keeps the Pareto front in (B, cum) and drops a label when cum
 * plus an upper bound on what later exits can add (label_room) cannot beat the best plan.
 *
 * THE BRANCH-AND-BOUND decides bits x..n-1 in order. After bits < k are decided, the
 * answer at tau is the deepest result arrived: either a decided one (the stack's step
 * function, exactly known) or a future exit j >= k, which cannot arrive before A_j + s_k
 * (s_k: the shift plus the decided branch times; the earliest is when all between are
 * skipped). Hence for every completion the score in effect at tau is at most
 *     U(tau) = max( prefix(tau), max { C_j : j >= k, A_j + s_k <= tau } ),
 * and integral U dF bounds every completion. A subtree is pruned when that bound does not
 * exceed the best plan found; the plan that skips every remaining bit is evaluated at
 * every node for free (it is the stack's top), and greedy gives the first incumbent. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "planner_internal.h"

int pl__in_order(const planner_t *p, const pl_ctx_t *ctx)
{
    if (!p->mono_from[ctx->x])
        return 0;
    return ctx->x == p->n || p->sufmin_A[ctx->x] + ctx->shift >= ctx->base.e[ctx->base.top].at;
}

/* Conditions (1)-(2) of the dynamic programme for this call's context. */
int pl__in_order_uniform(const planner_t *p, const pl_ctx_t *ctx)
{
    if (p->dist.kind != PLANNER_DIST_UNIFORM || !pl__in_order(p, ctx))
        return 0;
    if (ctx->x == p->n)
        return 1;
    double last = (p->A[p->n - 1] + ctx->shift) + (p->Bpre[p->n - 1] - p->Bpre[ctx->x]);
    return last <= p->H;
}

int planner_exact_dp_applies(const planner_t *self, const planner_offset_t *off)
{
    pl_ctx_t ctx;
    pl__ctx_init(self, off, &ctx);
    return pl__in_order_uniform(self, &ctx);
}

/* The dynamic programme of (3) above; returns the best free mask. */
static uint64_t search_dp(planner_t *p, const pl_ctx_t *ctx, const double *C, uint64_t *ev)
{
    const int x = ctx->x, n = p->n;
    const double Cp = ctx->base.e[ctx->base.top].score, H = p->H, s = ctx->shift;
    const double *A = p->A, *b = p->b;
    double *g = p->dp_g, q[PLANNER_MAX_EXITS];
    int *pred = p->dp_pred;
    double best = 0; /* the empty plan */
    int best_j = -1;
    for (int j = x; j < n; j++) {
        const double Cj = C[j];
        for (int i = x; i <= j; i++) {
            /* g(h) + C_h (A_i - A_h) + b_h (C_h - C_j) = q_h + C_h A_i - b_h C_j. */
            double v = -Cp * (H - A[i] - s);
            int pr = -1;
            for (int h = x; h < i; h++) {
                double w = q[h] + C[h] * A[i] - b[h] * Cj;
                if (w > v) {
                    v = w;
                    pr = h;
                }
            }
            g[i] = v;
            pred[i] = pr;
            q[i] = v + C[i] * (b[i] - A[i]);
        }
        *ev += (uint64_t)(j - x + 1) * (uint64_t)(j - x) / 2 + 1;
        double total = g[j] + Cj * (H - A[j] - s);
        if (total > best) {
            best = total;
            best_j = j;
            memcpy(p->dp_best_pred + x, pred + x, (size_t)(j - x + 1) * sizeof pred[0]);
        }
    }
    uint64_t mask = 0;
    for (int i = best_j; i >= 0; i = p->dp_best_pred[i])
        mask |= 1ULL << i;
    return mask;
}

/* ---- Pareto labels: exact for any distribution when arrivals are in depth order ---------- */

/* Merges the sorted runs a[bounds[q] .. bounds[q+1]) (by B ascending, cum descending) into
 * one, ping-ponging with tmp; returns whichever of a and tmp holds the result. */
static int label_before(const pl_label_t *a, const pl_label_t *b)
{
    return a->B < b->B || (a->B == b->B && a->cum > b->cum);
}

static pl_label_t *label_merge(pl_label_t *a, pl_label_t *tmp, int *bounds, int runs)
{
    while (runs > 1) {
        int nr = 0;
        for (int q = 0; q < runs; q += 2) {
            int lo = bounds[q], mid = bounds[q + 1], hi = q + 2 <= runs ? bounds[q + 2] : mid;
            int i = lo, j = mid, o = lo;
            while (i < mid && j < hi)
                tmp[o++] = label_before(&a[j], &a[i]) ? a[j++] : a[i++];
            while (i < mid)
                tmp[o++] = a[i++];
            while (j < hi)
                tmp[o++] = a[j++];
            bounds[nr++] = lo;
        }
        bounds[nr] = bounds[runs];
        runs = nr;
        pl_label_t *t = a;
        a = tmp;
        tmp = t;
    }
    return a;
}

/* Past this the label search gives way to branch-and-bound (no instance seen comes near). */
#define PL_MAX_LABELS ((size_t)1 << 24)

static int labels_reserve(planner_t *p, size_t need)
{
    if (need <= p->labels_cap)
        return 0;
    if (need > PL_MAX_LABELS)
        return -1;
    size_t cap = p->labels_cap ? p->labels_cap : 1024;
    while (cap < need)
        cap *= 2;
    pl_label_t *nl = realloc(p->labels, cap * sizeof *nl);
    if (!nl)
        return -1;
    p->labels = nl;
    p->labels_cap = cap;
    return 0;
}

/* An upper bound on what the exits after i can still add to a plan whose last executed exit
 * is i with branch time B spent: only exits scoring above C_i are worth running, each step
 * is at most max_{j>i} C_j - C_i, and the first comes no earlier than
 * up_at[i] + shift + B, up_at[i] = min { A_j : j > i, C_j > C_i }. */
static double label_room(const planner_t *p, const double *sufmax, const double *up_at, int i,
                         double shift, double B, double ci)
{
    double gain = sufmax[i + 1] - ci;
    return gain > 0 ? gain * pl_surv(p, up_at[i] + shift + B) : 0;
}

/* The state of one Pareto search. */
typedef struct pareto {
    planner_t *p;
    const double *C;
    const pl_entry_t *base;
    double s, best;
    uint64_t best_mask;
    double sufmax[PLANNER_MAX_EXITS + 1], up_at[PLANNER_MAX_EXITS];
} pareto_t;

/* Writes to out[] the labels ending at exit i: from the base answer and from every kept
 * label ending at h < i, only stepping up (top of file), each front a run sorted by B
 * (bounds[] gets the runs' starts). Returns the count. */
static size_t pareto_extend(pareto_t *w, int x, int i, pl_label_t *out, int *bounds, int *runs)
{
    const planner_t *p = w->p;
    const double ci = w->C[i], bi = p->b[i];
    size_t k = 0;
    *runs = 0;
    if (ci > w->base->score) {
        bounds[(*runs)++] = 0;
        out[k].B = bi;
        out[k].cum = w->base->cum + (ci - w->base->score) * pl_surv(p, p->A[i] + w->s);
        out[k].mask = 1ULL << i;
        k++;
    }
    for (int h = x; h < i; h++) {
        if (!(ci > w->C[h]))
            continue;
        const pl_label_t *L = p->labels + p->lab_first[h];
        bounds[(*runs)++] = (int)k;
        for (int l = 0; l < p->lab_count[h]; l++) {
            if (L[l].cum + L[l].room <= w->best)
                continue;
            out[k].B = L[l].B + bi;
            out[k].cum = L[l].cum + (ci - w->C[h]) * pl_surv(p, p->A[i] + w->s + L[l].B);
            out[k].mask = L[l].mask | 1ULL << i;
            k++;
        }
    }
    bounds[*runs] = (int)k;
    return k;
}

/* Keeps, from in[0..k) sorted by B, the Pareto front (a label is dominated by one with no
 * more branch time spent and no less value) minus the labels that cannot beat the best plan
 * even with all later exits can add; updates the best plan. Returns the count kept. */
static size_t pareto_keep(pareto_t *w, int i, const pl_label_t *in, size_t k, pl_label_t *out)
{
    size_t kept = 0;
    double top = -INFINITY;
    for (size_t l = 0; l < k; l++) {
        if (!(in[l].cum > top))
            continue;
        top = in[l].cum;
        if (in[l].cum > w->best) {
            w->best = in[l].cum;
            w->best_mask = in[l].mask;
        }
        double room = label_room(w->p, w->sufmax, w->up_at, i, w->s, in[l].B, w->C[i]);
        if (in[l].cum + room > w->best) {
            out[kept] = in[l];
            out[kept++].room = room;
        }
    }
    return kept;
}

/* Returns 0 and the best mask, or -1 if the label pool cannot grow (the caller falls back
 * to branch-and-bound). See the top of this file for the argument. */
static int search_pareto(planner_t *p, const pl_ctx_t *ctx, const double *C, uint64_t *mask_out,
                         uint64_t *ev)
{
    pareto_t w = {.p = p, .C = C, .base = &ctx->base.e[ctx->base.top], .s = ctx->shift};
    w.best = w.base->cum; /* the empty plan */
    w.sufmax[p->n] = -INFINITY;
    for (int k = p->n - 1; k >= 0; k--)
        w.sufmax[k] = fmax(C[k], w.sufmax[k + 1]);
    for (int i = ctx->x; i < p->n; i++) {
        w.up_at[i] = INFINITY;
        for (int j = i + 1; j < p->n; j++)
            if (C[j] > C[i] && p->A[j] < w.up_at[i])
                w.up_at[i] = p->A[j];
    }
    size_t used = 0;
    for (int i = ctx->x; i < p->n; i++) {
        size_t most = 1; /* labels ending at i, at most */
        for (int h = ctx->x; h < i; h++)
            most += (size_t)p->lab_count[h];
        if (labels_reserve(p, used + 2 * most))
            return -1;
        pl_label_t *out = p->labels + used;
        int bounds[PLANNER_MAX_EXITS + 2], runs;
        size_t k = pareto_extend(&w, ctx->x, i, out, bounds, &runs);
        *ev += k;
        const pl_label_t *in = label_merge(out, out + most, bounds, runs);
        size_t kept = pareto_keep(&w, i, in, k, out);
        p->lab_first[i] = (int)used;
        p->lab_count[i] = (int)kept;
        used += kept;
    }
    *mask_out = w.best_mask;
    return 0;
}

/* ---- branch-and-bound ------------------------------------------------------------------- */

typedef struct bnb {
    const planner_t *p;
    const double *scores;
    pl_stack_t s;
    double best;
    uint64_t best_mask, nodes;
} bnb_t;

/* stair[k]: the exits j >= k in order of A_j, keeping those whose score beats every one
 * arriving no later: the best score that can have arrived by each time (before the shift). */
void pl__build_stairs(planner_t *p, int x, const double *scores)
{
    for (int k = x; k <= p->n; k++) {
        int len = 0;
        double top = 0;
        for (int r = 0; r < p->n; r++) {
            int j = p->by_arrival[r];
            if (j >= k && scores[j] > top) {
                top = scores[j];
                p->stair[k][len].at = p->A[j];
                p->stair[k][len].score = top;
                len++;
            }
        }
        p->stair_len[k] = len;
    }
}

/* Integral of U(tau) dF over [t0, H]: U is the larger of the decided results' step function
 * and the staircase of future exits shifted by bs. Both are merged in time order. */
static double bnb_bound(const bnb_t *w, int k, double bs)
{
    const planner_t *p = w->p;
    const pl_stack_t *s = &w->s;
    const pl_step_t *st = p->stair[k];
    const int ns = p->stair_len[k];
    int i = 1, q = 0;
    double pre = s->e[0].score, lvl = 0, surv = pl_surv(p, s->e[0].at), total = 0;
    for (;;) {
        double tp = i <= s->top ? s->e[i].at : INFINITY;
        double tq = q < ns ? st[q].at + bs : INFINITY;
        double t = tp < tq ? tp : tq;
        double u = pre > lvl ? pre : lvl;
        if (t >= p->H) {
            total += u * surv;
            return total;
        }
        double sv = pl_surv(p, t);
        total += u * (surv - sv);
        surv = sv;
        if (tp == t)
            pre = s->e[i++].score;
        if (tq == t)
            lvl = st[q++].score;
    }
}

static void bnb_rec(bnb_t *w, int k, double bs, uint64_t mask)
{
    const planner_t *p = w->p;
    w->nodes++;
    /* The completion that skips every remaining bit is this node's stack as it stands. */
    double cur = w->s.e[w->s.top].cum;
    if (cur > w->best) {
        w->best = cur;
        w->best_mask = mask;
    }
    if (k == p->n || bnb_bound(w, k, bs) <= w->best)
        return;
    /* Taking an exit that beats the answer in effect first tends to find good plans early. */
    int take_first = w->scores[k] > w->s.e[w->s.top].score;
    for (int pass = 0; pass < 2; pass++) {
        if ((pass == 0) == take_first) {
            pl_undo_t u;
            pl_push_undo(p, &w->s, p->A[k] + bs, w->scores[k], k, &u);
            bnb_rec(w, k + 1, bs + p->b[k], mask | 1ULL << k);
            pl_undo(&w->s, &u);
        } else {
            bnb_rec(w, k + 1, bs, mask);
        }
    }
}

int planner_search_bnb(planner_t *self, const double *scores, const planner_offset_t *off,
                       planner_result_t *res)
{
    pl_ctx_t ctx;
    pl__ctx_init(self, off, &ctx);
    bnb_t w;
    w.p = self;
    w.scores = scores;
    memcpy(w.s.e, ctx.base.e, (size_t)(ctx.base.top + 1) * sizeof ctx.base.e[0]);
    w.s.top = ctx.base.top;
    w.nodes = 0;
    w.best_mask = pl__greedy_from(self, &ctx, scores, 0, &w.best, &w.nodes);
    pl__build_stairs(self, ctx.x, scores);
    bnb_rec(&w, ctx.x, ctx.shift, 0);
    pl__result_set(self, &ctx, off, scores, w.best_mask, w.nodes, "bnb", res);
    return 0;
}

int planner_search_exact(planner_t *self, const double *scores, const planner_offset_t *off,
                         planner_result_t *res)
{
    pl_ctx_t ctx;
    pl__ctx_init(self, off, &ctx);
    uint64_t ev = 0, mask;
    if (pl__in_order_uniform(self, &ctx)) {
        mask = search_dp(self, &ctx, scores, &ev);
        pl__result_set(self, &ctx, off, scores, mask, ev, "dp", res);
        return 0;
    }
    if (pl__in_order(self, &ctx) && search_pareto(self, &ctx, scores, &mask, &ev) == 0) {
        pl__result_set(self, &ctx, off, scores, mask, ev, "pareto", res);
        return 0;
    }
    return planner_search_bnb(self, scores, off, res);
}
