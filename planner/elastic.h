/* elastic: the elastic evaluation (DESIGN.md "Elastic accuracy", EINet §VI). Each exit policy
 * is run on every sample of a CS-profile against the ET-profile's clock: which branches run,
 * when each result arrives (planner overhead included), and from that, exactly, the integral
 * over the interruption time tau of 1[the answer in effect at tau is correct] dF(tau).
 *
 * The policies (docs/elastic.md defines each precisely):
 *   ELASTIC_FIXED       one plan for every sample: static-25/50/100 (every 4th / 2nd / every
 *                       branch, the final one always), static-opt (the exact optimum with
 *                       scores = per-exit validation accuracy), single-exit (final only);
 *   ELASTIC_CONFIDENCE  every branch until the first exit whose confidence >= threshold,
 *                       then inference stops: that answer holds to H;
 *   ELASTIC_PLANNED     EINet: an initial plan from the predictor's scores with nothing
 *                       seen, then after every executed exit the predictor and a search
 *                       (hybrid m = 4 for `einet`, random N = 10000 for `random`) replan the
 *                       remaining bits from the elapsed time; their time is charged;
 *   ELASTIC_ORACLE      the exact optimum with scores = the sample's true correctness bits:
 *                       the ceiling of every policy on the same ET-profile. */
#ifndef PLANNER_ELASTIC_H
#define PLANNER_ELASTIC_H

#include <stdint.h>

#include "../common/ei.h"
#include "planner.h"
#include "predictor.h"
#include "profile.h"

typedef enum {
    ELASTIC_FIXED = 0,
    ELASTIC_CONFIDENCE,
    ELASTIC_PLANNED,
    ELASTIC_ORACLE,
} elastic_kind_t;

#define ELASTIC_NAME_MAX 40

/* An evaluation context: the ET-profile, the interruption distribution and a planner made
 * from them (the searches' scratch), plus the running estimate of the planner's overhead.
 * Not thread-safe; one per thread. */
typedef struct elastic elastic_t;

/* Makes a context (profile and distribution checked, copied). Caller owns the result; NULL
 * with err set on a bad profile or distribution or no memory. */
elastic_t *elastic_new(const planner_profile_t *prof, const planner_dist_t *dist, ei_err_t *err);
void elastic_destroy(elastic_t **self_p);
/* Interruptions over [0, H_ms] instead of the profile's own H (planner_set_horizon). */
int elastic_set_horizon(elastic_t *self, double H_ms, ei_err_t *err) EI_CHECK;
/* The planner inside (owned by the context), its profile and horizon H. */
planner_t *elastic_planner(elastic_t *self);
const planner_profile_t *elastic_profile(const elastic_t *self);
double elastic_horizon(const elastic_t *self);

/* One policy. A plain value; `pred` is borrowed (the caller keeps it alive). */
typedef struct elastic_policy {
    char name[ELASTIC_NAME_MAX];
    elastic_kind_t kind;
    uint8_t plan[PLANNER_MAX_EXITS]; /* FIXED */
    double threshold;                /* CONFIDENCE */
    predictor_t *pred;               /* PLANNED */
    planner_search_t search;         /* PLANNED */
    int replan;                      /* PLANNED: 1 = after every executed exit, 0 = never */
    double overhead_us; /* PLANNED: < 0 charges each call's measured wall time (predictor +
                         * search); >= 0 charges this fixed time per replan instead */
} elastic_policy_t;

/* Fixed plans: a given one; every `every`-th exit (exits every-1, 2 every-1, ... and the
 * final one, 0-based); only the final exit. */
void elastic_policy_fixed(elastic_policy_t *p, const char *name, const uint8_t *plan, int n);
void elastic_policy_every(elastic_policy_t *p, const char *name, int n, int every);
void elastic_policy_single(elastic_policy_t *p, int n);
/* "confidence-<threshold>" with that threshold. */
void elastic_policy_confidence(elastic_policy_t *p, double threshold);
/* A planned policy replanning after every executed exit with measured overhead. */
void elastic_policy_planned(elastic_policy_t *p, const char *name, predictor_t *pred,
                            const planner_search_t *search);
void elastic_policy_oracle(elastic_policy_t *p);

/* static-opt's plan: the exact search's optimum with scores = acc (per-exit validation
 * accuracy), written to plan. 0 or the planner's error. */
int elastic_static_opt(elastic_t *el, const double *acc, uint8_t *plan, ei_err_t *err) EI_CHECK;

/* What a policy did on one sample. arrive_ms[k] is exit k's arrival when it ran (INFINITY
 * otherwise); value is the sample's elastic accuracy. */
typedef struct elastic_trace {
    int n;
    uint8_t executed[PLANNER_MAX_EXITS];
    double arrive_ms[PLANNER_MAX_EXITS];
    int replans;
    double predict_us, search_us; /* measured wall time of this sample's planner calls */
    double charged_ms;            /* overhead charged to the sample */
    double value;
} elastic_trace_t;

/* A timeline piece: exit `exit` (-1: no answer) in effect on [start_ms, end_ms). */
typedef struct elastic_interval {
    double start_ms, end_ms;
    int exit;
} elastic_interval_t;

/* The answer-in-effect intervals of a trace over [0, H] (results arriving at or after H
 * never take effect; a shallower result arriving after a deeper one never does): at most
 * n + 1, in time order, covering [0, H]. Returns the count. */
int elastic_timeline(const elastic_t *el, const elastic_trace_t *tr, elastic_interval_t *out);

/* correct[exit in effect at tau] for a trace: 1 or 0 (0 before the first arrival). */
int elastic_trace_at(const elastic_t *el, const elastic_trace_t *tr, const uint8_t *correct,
                     double tau_ms);

/* Integral over tau of correct[exit in effect at tau] dF(tau) for a trace. */
double elastic_trace_value(const elastic_t *el, const elastic_trace_t *tr, const uint8_t *correct);

/* Runs a policy on sample i of cs under the context's ET-profile and distribution and
 * fills *tr (value included). A PLANNED policy's initial plan is `initial` (see
 * elastic_initial_plan; NULL: computed now, uncharged). 0, or a planner error. */
int elastic_run_sample(elastic_t *el, const elastic_policy_t *pol, const uint8_t *initial,
                       const profile_cs_t *cs, int i, elastic_trace_t *tr, ei_err_t *err) EI_CHECK;

/* A planned policy's plan before anything is seen: the same for every sample, so the
 * coordinator computes it once and it is not charged. */
int elastic_initial_plan(elastic_t *el, const elastic_policy_t *pol, uint8_t *plan,
                         ei_err_t *err) EI_CHECK;

/* Accuracy in effect against time: points values at tau = g H / (points - 1). */
typedef struct elastic_curve {
    int points;
    double *acc; /* caller-owned, points values */
} elastic_curve_t;

/* A policy over the first `samples` samples of cs. */
typedef struct elastic_result {
    double accuracy;   /* mean of the samples' values */
    double branches;   /* mean branches run per sample */
    double replans;    /* mean replans per sample */
    double predict_us; /* mean measured predictor time per replan */
    double search_us;  /* mean measured search time per replan */
    double charged_ms; /* mean overhead charged per sample */
    int samples;
} elastic_result_t;

/* Evaluates a policy; fills *res and, when curve is not NULL, its accuracy-in-effect curve.
 * 0, or EI_E_SHAPE (the profiles disagree on n, samples out of range) / a planner
 * error. */
int elastic_evaluate(elastic_t *el, const elastic_policy_t *pol, const profile_cs_t *cs,
                     int samples, elastic_result_t *res, elastic_curve_t *curve,
                     ei_err_t *err) EI_CHECK;

/* ---- live measurement (einet elastic --live) ----
 * A running cluster is measured by sending sample i with a deadline tau_i drawn from the
 * context's distribution over its horizon H and judging the answer in effect at tau_i; the
 * mean over the samples estimates the elastic accuracy that elastic_evaluate predicts. */

/* count interruption times (ms) for a live run: one in each of count strata of equal
 * probability under F, at a random point inside it, the strata in a random order (seeded),
 * so the measured mean carries no variance from where in [0, H] the draws fall. */
void elastic_live_deadlines(const elastic_t *el, int count, uint64_t seed, double *out_ms);

/* One answer of a live run. status is the Answer's (proto Status: 1 complete, 2 deadline,
 * 8 early: a stop rule ended it, counted with complete; others are failures). */
typedef struct elastic_live_answer {
    double deadline_ms; /* tau: the request's deadline */
    int status;
    int exit;           /* 0: no exit had arrived */
    int correct;        /* the answer's class is the label (0 without an exit) */
    double latency_ms;  /* the coordinator's receipt to its answer */
} elastic_live_answer_t;

typedef struct elastic_live_result {
    double accuracy; /* mean of correct over the answers: the live elastic accuracy */
    int answers, deadline, complete, failed; /* by status; failed: any other status */
    int early;       /* deadline answers with latency < deadline (a bug if any) */
    double late_p50_us, late_p99_us, late_max_us; /* latency - deadline, deadline answers */
} elastic_live_result_t;

/* Tallies a live run's answers. When curve is not NULL, curve->acc[g] gets the mean
 * correctness of the answers whose deadline is nearest to g H / (points - 1) (NAN where
 * none is). 0, or EI_E_RANGE when count < 1. */
int elastic_live_tally(const elastic_t *el, const elastic_live_answer_t *a, int count,
                       elastic_live_result_t *res, elastic_curve_t *curve,
                       ei_err_t *err) EI_CHECK;

#endif
