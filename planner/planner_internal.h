/* Details shared by the planner's files: the planner object, the interruption
 * distribution's survival function and the arrival stack that every evaluation uses. */
#ifndef PLANNER_INTERNAL_H
#define PLANNER_INTERNAL_H

#include <math.h>

#include "planner.h"

/* Room for the base entry, the pending results and every exit. */
#define PL_STACK_MAX (2 * PLANNER_MAX_EXITS + 2)

/* One entry of the arrival stack: a result arriving at `at` with score `score`, deeper than
 * every entry below it, and `cum` = the integral of the answer's score over [t0, H] if this
 * entry stayed in effect until H (Abel form: each arrival adds a step of height
 * score - score_below that lasts to H, worth (score - score_below) * (1 - F(at))). */
typedef struct pl_entry {
    double at, score, cum;
    int exit; /* 0-based exit, -1 for the base, -2 - i for pending result i */
} pl_entry_t;

typedef struct pl_stack {
    pl_entry_t e[PL_STACK_MAX];
    int top;
} pl_stack_t;

/* A label of the Pareto search: a plan of the free exits up to its last executed one, with
 * B = the branch time it spent (free exits) and cum = its value if that exit stayed in
 * effect to H. */
typedef struct pl_label {
    double B, cum, room; /* room: what later exits can still add, at most */
    uint64_t mask;
} pl_label_t;

/* A staircase step for the branch-and-bound bound: from `at` on, some exit with this
 * score can have arrived. */
typedef struct pl_step {
    double at, score;
} pl_step_t;

struct planner {
    planner_profile_t prof;
    planner_dist_t dist;
    int n;
    double H;
    /* A[k]: arrival of exit k when every earlier branch is skipped; Pc[k] = sum_{l<k}(c_l+L_l);
     * Bpre[k] = sum_{l<k} b_l. In a plan, a_k = A[k] + sum of b_l over executed l < k. */
    double A[PLANNER_MAX_EXITS], Pc[PLANNER_MAX_EXITS + 1], Bpre[PLANNER_MAX_EXITS + 1];
    double b[PLANNER_MAX_EXITS];
    double sufmin_A[PLANNER_MAX_EXITS + 1]; /* min_{j >= k} A[j]; +inf at n */
    /* mono_from[x] = 1 if A[j] >= A[i] - b[i] for all x <= i < j (arrivals in depth order). */
    uint8_t mono_from[PLANNER_MAX_EXITS + 1];
    /* Exits sorted by A (ties by index), for the staircase bound. */
    int by_arrival[PLANNER_MAX_EXITS];
    /* Truncated normal: F(t) = (Phi((t - mean) * inv) - phi0) / mass, phiH = Phi at H. */
    double mean, inv_sd_sqrt2, phi0, phiH, inv_mass;
    double inv_H;
    /* Scratch of the searches: sized here so that searches allocate nothing. */
    pl_step_t stair[PLANNER_MAX_EXITS + 1][PLANNER_MAX_EXITS + 1];
    int stair_len[PLANNER_MAX_EXITS + 1];
    double dp_g[PLANNER_MAX_EXITS];
    int dp_pred[PLANNER_MAX_EXITS], dp_best_pred[PLANNER_MAX_EXITS];
    /* Label pool of the Pareto search: grown on demand and kept, so that repeated searches
     * allocate nothing once it has reached its working size. */
    pl_label_t *labels;
    size_t labels_cap;
    int lab_first[PLANNER_MAX_EXITS], lab_count[PLANNER_MAX_EXITS];
};

/* 1 - F(t): the probability that the interruption comes after t. */
static inline double pl_surv(const planner_t *p, double t)
{
    if (t <= 0)
        return 1.0;
    if (t >= p->H)
        return 0.0;
    if (p->dist.kind == PLANNER_DIST_UNIFORM)
        return (p->H - t) * p->inv_H;
    double phi = 0.5 * erfc(-(t - p->mean) * p->inv_sd_sqrt2);
    return (p->phiH - phi) * p->inv_mass;
}

/* The evaluation context of one call: where free bits start, their arrival shift and the
 * stack holding the base answer and pending results. */
typedef struct pl_ctx {
    int x;        /* first free bit */
    double shift; /* a_j = A[j] + shift + sum of b over executed free l < j */
    double t0;
    pl_stack_t base; /* base entry and pending results, pushed */
} pl_ctx_t;

void pl__ctx_init(const planner_t *p, const planner_offset_t *off, pl_ctx_t *ctx);

/* Pushes a result arriving at `at`: entries arriving at or after it are shadowed by this
 * deeper one and popped. Returns the index written; the caller that needs to undo saves
 * top and e[index] first. */
static inline int pl_push(const planner_t *p, pl_stack_t *s, double at, double score, int exit)
{
    while (s->top > 0 && s->e[s->top].at >= at)
        s->top--;
    const pl_entry_t *below = &s->e[s->top];
    int pos = s->top + 1;
    s->e[pos].at = at;
    s->e[pos].score = score;
    s->e[pos].cum = below->cum + (score - below->score) * pl_surv(p, at);
    s->e[pos].exit = exit;
    s->top = pos;
    return pos;
}

/* What pl_push_undo() overwrote, to put back in reverse order of the pushes. */
typedef struct pl_undo {
    int top, pos;
    pl_entry_t saved;
} pl_undo_t;

static inline void pl_push_undo(const planner_t *p, pl_stack_t *s, double at, double score,
                                int exit, pl_undo_t *u)
{
    u->top = s->top;
    int t = s->top;
    while (t > 0 && s->e[t].at >= at)
        t--;
    u->pos = t + 1;
    u->saved = s->e[t + 1];
    s->top = t;
    pl_push(p, s, at, score, exit);
}

static inline void pl_undo(pl_stack_t *s, const pl_undo_t *u)
{
    s->e[u->pos] = u->saved;
    s->top = u->top;
}

/* Value of the free bits given as a mask (bit j = exit j), from the context's base. */
double pl__eval_mask(const planner_t *p, const pl_ctx_t *ctx, const double *scores, uint64_t mask);

/* Result helpers: fill plan bits from a mask plus the spent prefix, evaluate, set algo. */
void pl__result_set(const planner_t *p, const pl_ctx_t *ctx, const planner_offset_t *off,
                    const double *scores, uint64_t mask, uint64_t evaluated, const char *algo,
                    planner_result_t *res);

/* 1 if, for this context, interruption is uniform and every free exit arrives in depth order
 * in every plan, no earlier than the pending results and no later than H: then the
 * expectation is linear in each arrival time and nothing is ever shadowed (exact.c). */
int pl__in_order_uniform(const planner_t *p, const pl_ctx_t *ctx);
/* 1 if every free exit arrives in depth order in every plan and no earlier than the pending
 * results (any distribution; arrivals past H allowed). */
int pl__in_order(const planner_t *p, const pl_ctx_t *ctx);

/* Fills p->stair[k] for k = x..n: the exits j >= k in order of A_j, keeping those whose
 * score beats every one arriving no later (the best score that can have arrived by each time,
 * before the shift). */
void pl__build_stairs(planner_t *p, int x, const double *scores);

/* Greedy from a start mask, keeping the best plan seen (start included). */
uint64_t pl__greedy_from(const planner_t *p, const pl_ctx_t *ctx, const double *scores,
                         uint64_t start, double *best_val, uint64_t *evaluated);

static inline uint64_t pl_free_mask(int n, int x)
{
    uint64_t all = n >= 64 ? ~0ULL : ((1ULL << n) - 1);
    uint64_t spent = x >= 64 ? ~0ULL : ((1ULL << x) - 1);
    return all & ~spent;
}

#endif
