/* exact: the provably optimal exit plan for any n.
 *
 * Under uniform interruption, with arrivals in depth order, a dynamic programme over
 * (terminal exit, last executed exit) finds it in O(n^3); otherwise (normal interruption,
 * out-of-order arrivals, or a replan that runs late) a branch-and-bound over the bits with
 * a sound bound does. docs/planner.md gives the argument at more length.
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
#include <string.h>

#include "planner_internal.h"

/* Conditions (1)-(2) of the dynamic programme for this call's context. */
int pl__in_order_uniform(const planner_t *p, const pl_ctx_t *ctx)
{
    if (p->dist.kind != PLANNER_DIST_UNIFORM || !p->mono_from[ctx->x])
        return 0;
    if (ctx->x == p->n)
        return 1;
    double min_a = INFINITY;
    for (int j = ctx->x; j < p->n; j++)
        if (p->A[j] < min_a)
            min_a = p->A[j];
    if (min_a + ctx->shift < ctx->base.e[ctx->base.top].at)
        return 0;
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
static void build_stairs(planner_t *p, int x, const double *scores)
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
    build_stairs(self, ctx.x, scores);
    bnb_rec(&w, ctx.x, ctx.shift, 0);
    pl__result_set(self, &ctx, off, scores, w.best_mask, w.nodes, "bnb", res);
    return 0;
}

int planner_search_exact(planner_t *self, const double *scores, const planner_offset_t *off,
                         planner_result_t *res)
{
    pl_ctx_t ctx;
    pl__ctx_init(self, off, &ctx);
    if (!pl__in_order_uniform(self, &ctx))
        return planner_search_bnb(self, scores, off, res);
    uint64_t ev = 0;
    uint64_t mask = search_dp(self, &ctx, scores, &ev);
    pl__result_set(self, &ctx, off, scores, mask, ev, "dp", res);
    return 0;
}
