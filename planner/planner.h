/* planner: EINet's search engine. Given the block times of a multi-exit model (the
 * ET-profile), a score per exit (predicted confidence or probability of being right) and
 * the distribution of the interruption time, it computes the accuracy expectation of an
 * exit plan exactly (DESIGN.md, "Terms, fixed") and searches for the plan that maximises it.
 *
 * Plans are arrays of n uint8_t (1 = the branch runs), scores arrays of n doubles in [0, 1],
 * times in milliseconds. Exits are numbered 0..n-1 here (block k of DESIGN.md is index k-1).
 *
 * One planner_t holds a profile and a distribution with everything precomputed from them,
 * plus the scratch memory of the searches: searches and evaluations allocate nothing.
 * A planner_t is not safe to share between threads; make one per thread. */
#ifndef PLANNER_H
#define PLANNER_H

#include <stdint.h>

#include "../common/ei.h"

/* Plans are also handled as 64-bit masks inside the searches. */
#define PLANNER_MAX_EXITS 64
/* enum and the enumeration stage of hybrid visit at most this many plans. */
#define PLANNER_ENUM_MAX_PLANS (1L << 24)
/* enum runs for at most this many free bits (2^24 plans). */
#define PLANNER_ENUM_MAX_BITS 24
/* random draws at most this many plans. */
#define PLANNER_RANDOM_MAX 100000000L

/* ET-profile of one model on its tiers (DESIGN.md): per block k the conv-part time c_k,
 * the branch time b_k, the link time L_k after block k (0 inside a tier) and the time r_k
 * for exit k's result to reach the coordinator. All finite and >= 0. A plain value:
 * copy it freely. */
typedef struct planner_profile {
    int n;
    double conv_ms[PLANNER_MAX_EXITS];
    double branch_ms[PLANNER_MAX_EXITS];
    double link_ms[PLANNER_MAX_EXITS];
    double result_ms[PLANNER_MAX_EXITS];
} planner_profile_t;

/* Interruption time tau in [0, H]: uniform, or normal with mean mu*H and deviation
 * sigma*H truncated to [0, H] and renormalised. */
typedef enum { PLANNER_DIST_UNIFORM = 0, PLANNER_DIST_NORMAL = 1 } planner_dist_kind_t;

typedef struct planner_dist {
    planner_dist_kind_t kind;
    double mu, sigma; /* fractions of H; used by PLANNER_DIST_NORMAL only */
} planner_dist_t;

/* Replanning after block x (1 <= x <= n; x = 0 is the plain problem): bits 0..x-1 are spent
 * and kept, only bits x..n-1 are searched. Exit j >= x then arrives at
 *   a_j = t0_ms + L_x + sum_{x<l<j}(c_l + p_l b_l + L_l) + c_j + b_j + r_j   (1-based l, j)
 * i.e. t0_ms is the elapsed time at which block x finished (its branch included if it ran),
 * on the same clock as the horizon H, which stays that of the whole all-ones plan. From t0 the
 * answer in effect has score c0 (0 if none), and the results already sent but not yet
 * arrived are listed deepest last (pending_ms >= t0_ms). The integral before t0 is sunk:
 * an expectation with an offset is the integral of the score over [t0, H] only.
 * A plain value; planner_offset_init() gives the plain problem (x = 0, t0 = 0). */
typedef struct planner_offset {
    int x;
    double t0_ms;
    double c0;
    int n_pending;
    double pending_ms[PLANNER_MAX_EXITS];
    double pending_score[PLANNER_MAX_EXITS];
    uint8_t spent[PLANNER_MAX_EXITS]; /* bits 0..x-1, copied into every result plan */
} planner_offset_t;

typedef enum {
    PLANNER_SEARCH_EXACT = 0,
    PLANNER_SEARCH_HYBRID,
    PLANNER_SEARCH_GREEDY,
    PLANNER_SEARCH_ENUM,
    PLANNER_SEARCH_RANDOM,
    PLANNER_SEARCH_ALL,
    PLANNER_SEARCH_NONE,
} planner_search_kind_t;

/* Which search, with its parameters. planner_search_init() gives exact with the paper's
 * parameters (m = 4, n_random = 10000, seed = 1). */
typedef struct planner_search {
    planner_search_kind_t kind;
    int m;               /* hybrid: outputs of the enumeration stage, 0..free bits */
    int m_upto;          /* hybrid: enumerate plans with at most m outputs (default 0:
                          * exactly m, as DESIGN.md and EINet Algorithm 2 have it) */
    long n_random;       /* random: plans drawn, 1..PLANNER_RANDOM_MAX */
    uint64_t seed;       /* random: RNG seed */
    const uint8_t *plan; /* none: the plan to evaluate (n bits; bits < x are ignored) */
} planner_search_t;

/* What a search returns. `evaluated` counts complete plans evaluated (enum, hybrid, greedy,
 * random, all, none; hybrid's enumeration skips subtrees that cannot win, so it evaluates
 * fewer than C(n, m)), DP transitions (exact, algo "dp"), labels made (exact, "pareto") or
 * branch-and-bound nodes plus the greedy start (exact, "bnb"). `algo` is a static string
 * naming the method used. */
typedef struct planner_result {
    uint8_t plan[PLANNER_MAX_EXITS];
    double expectation;
    uint64_t evaluated;
    const char *algo;
} planner_result_t;

/* One piece of the answer-in-effect timeline: exit `exit` (0-based; -1 = the answer given
 * by the offset's c0, or none) is in effect on [start_ms, end_ms). */
typedef struct planner_interval {
    double start_ms, end_ms;
    int exit;
    int pending; /* 1 if `exit` indexes the offset's pending list rather than the model */
} planner_interval_t;

typedef struct planner planner_t;

/* Checks a profile (1 <= n <= PLANNER_MAX_EXITS, times finite and >= 0, horizon > 0) and a
 * distribution (mu finite, sigma > 0, enough mass in [0, H]). 0 or EI_E_RANGE /
 * EI_E_NONFINITE with a message naming the field ("branch_ms[3]: ..."). */
int planner_profile_check(const planner_profile_t *prof, ei_err_t *err) EI_CHECK;
int planner_dist_check(const planner_dist_t *dist, ei_err_t *err) EI_CHECK;
/* Checks n scores in [0, 1]; the message names "scores[k]". */
int planner_scores_check(const double *scores, int n, ei_err_t *err) EI_CHECK;
/* Checks an offset against n: 0 <= x <= n, t0 finite >= 0, c0 and pending scores in [0, 1],
 * pending times >= t0, spent bits 0/1. */
int planner_offset_check(const planner_offset_t *off, int n, ei_err_t *err) EI_CHECK;
/* Checks a search's parameters for n exits of which bits x..n-1 are free: m in
 * [0, n - x] with C(n - x, m) <= PLANNER_ENUM_MAX_PLANS, n - x <= PLANNER_ENUM_MAX_BITS for
 * enum, n_random range, an n-bit 0/1 plan for none. The message names the field. */
int planner_search_check(const planner_search_t *s, int n, int x, ei_err_t *err) EI_CHECK;

/* A zeroed profile of n blocks / the plain offset (x = 0, t0 = 0, c0 = 0) / exact search with
 * the paper's parameters. */
void planner_profile_init(planner_profile_t *prof, int n);
void planner_offset_init(planner_offset_t *off);
void planner_search_init(planner_search_t *s);

/* Names "exact", "hybrid", ... and back; parse returns 0 or -1. */
const char *planner_search_name(planner_search_kind_t kind);
int planner_search_parse(const char *name, planner_search_kind_t *kind) EI_CHECK;

/* Makes a planner for a profile and a distribution (both checked; copied). Caller owns the
 * result and frees it with planner_destroy(). NULL on error (EI_E_NOMEM or a check's code
 * in *err). */
planner_t *planner_new(const planner_profile_t *prof, const planner_dist_t *dist, ei_err_t *err);
/* Frees a planner; accepts NULL and sets *self_p to NULL. */
void planner_destroy(planner_t **self_p);
/* Replace the profile (e.g. fresh link measurements) or the distribution; nothing is
 * allocated. On error the planner keeps its previous state. */
int planner_set_profile(planner_t *self, const planner_profile_t *prof, ei_err_t *err) EI_CHECK;
int planner_set_dist(planner_t *self, const planner_dist_t *dist, ei_err_t *err) EI_CHECK;
/* Replaces the horizon H (the profile's a_n of the all-ones plan) by H_ms until the next
 * planner_set_profile: interruptions then fall in [0, H_ms] (einet elastic --live judges a
 * run's arrivals against the deadlines' horizon). 0 or EI_E_RANGE. */
int planner_set_horizon(planner_t *self, double H_ms, ei_err_t *err) EI_CHECK;

int planner_n(const planner_t *self);
/* H: a_n of the all-ones plan, in ms. */
double planner_horizon(const planner_t *self);
/* F(t) of the interruption distribution: 0 for t <= 0, 1 for t >= H. */
double planner_cdf(const planner_t *self, double t_ms);

/* E(plan): the integral over tau of the score of the answer in effect at tau, dF(tau)
 * (over [t0, H] with an offset; `off` may be NULL). Scores and plan have n entries;
 * only bits >= x of the plan are read. Inputs are the caller's to check (the *_check
 * functions); this never fails. */
double planner_expect(const planner_t *self, const double *scores, const uint8_t *plan,
                      const planner_offset_t *off);

/* The answer-in-effect timeline of a plan: up to n + n_pending + 1 intervals of positive
 * length, in time order, clipped to [t0, H] (exits arriving at or after H never take
 * effect). `out` needs room for PLANNER_MAX_EXITS * 2 + 1 entries. Returns the count. */
int planner_timeline(const planner_t *self, const uint8_t *plan, const planner_offset_t *off,
                     planner_interval_t *out);

/* Searches the free bits (>= x) of the plan for the highest expectation (`off` may be
 * NULL). Fills *res: the plan (bits < x copied from off->spent), its expectation as
 * planner_expect() gives it, the evaluation count and the method. 0, or EI_E_RANGE /
 * EI_E_INVAL with a message naming the parameter if planner_search_check() refuses. */
int planner_search(planner_t *self, const planner_search_t *s, const double *scores,
                   const planner_offset_t *off, planner_result_t *res, ei_err_t *err) EI_CHECK;

/* The searches one by one; the same contract as planner_search(). exact is provably
 * optimal for any n, by the first method that applies (res->algo names it): "dp", an O(n^3)
 * dynamic programme, under uniform interruption when planner_exact_dp_applies(); "pareto",
 * Pareto-dominance labels, for any distribution when arrivals come in depth order; "bnb",
 * branch-and-bound, otherwise. docs/planner.md gives the arguments. */
int planner_search_exact(planner_t *self, const double *scores, const planner_offset_t *off,
                         planner_result_t *res);
int planner_search_enum(planner_t *self, const double *scores, const planner_offset_t *off,
                        planner_result_t *res, ei_err_t *err) EI_CHECK;
int planner_search_greedy(planner_t *self, const double *scores, const planner_offset_t *off,
                          planner_result_t *res);
/* hybrid: the best plan with exactly m free outputs (with upto: at most m; same cost), then
 * greedy from it, keeping the best plan seen. */
int planner_search_hybrid(planner_t *self, const double *scores, const planner_offset_t *off, int m,
                          int upto, planner_result_t *res, ei_err_t *err) EI_CHECK;
int planner_search_random(planner_t *self, const double *scores, const planner_offset_t *off,
                          long n_plans, uint64_t seed, planner_result_t *res,
                          ei_err_t *err) EI_CHECK;
/* Branch-and-bound whatever the instance (exact's last resort; for tests and comparison). */
int planner_search_bnb(planner_t *self, const double *scores, const planner_offset_t *off,
                       planner_result_t *res);

/* 1 if exact uses the dynamic programme for this offset: uniform interruption, every
 * future exit arrives no earlier than any shallower future exit in every plan
 * (A_j >= A_i - b_i for x <= i < j), no earlier than the pending results, and by H. */
int planner_exact_dp_applies(const planner_t *self, const planner_offset_t *off);

/* A planning instance as `einet plan` reads it (docs/planner.md gives the JSON format). */
typedef struct planner_instance {
    planner_profile_t profile;
    planner_dist_t dist;
    double scores[PLANNER_MAX_EXITS];
    planner_search_kind_t kind;
    int m, m_upto;
    long n_random;
    uint64_t seed;
    int has_plan;
    uint8_t plan[PLANNER_MAX_EXITS];
    int has_offset;
    planner_offset_t offset;
} planner_instance_t;

/* Parses and checks one JSON instance from text (len bytes). 0, or EI_E_FORMAT (not JSON:
 * line and column; unknown or missing field), EI_E_RANGE / EI_E_NONFINITE / EI_E_SHAPE with
 * a message naming the field ("branch_ms: 3 entries, conv_ms has 4"). */
int planner_instance_parse(const char *text, size_t len, planner_instance_t *inst,
                           ei_err_t *err) EI_CHECK;

#endif
