/* ee_search: the design-space search for class-specific early exits of Bonato & Bouganis
 * §3: for every conv layer i of the frozen baseline B (the backbone with its final exit
 * only) and each KP setting, train an EE (nn/ee.h), sweep alpha, judge every point on the
 * validation split by the time model (eqs. 1-3), the classification rate gamma (eq. 4) and
 * the constraints (eqs. 5-7) with beta and eta B's own, and keep the viable point with the
 * largest gain/loss on the Pareto front; then report it on the test split.
 *
 * Figures for one split and one alpha, with V the samples, k the target's samples:
 *   beta  = B's accuracy on V-k, eta = B's accuracy on k, zeta = B's precision for k;
 *   gamma = (tp_EE + fp_EE) / |k|                                               (eq. 4)
 *   acc_B(V-k) = (tp_B - tp_kB) / (|V| - (tp_EE + fp_EE) - (tp_kB + fn_kB)) >= beta  (5)
 *   acc_EE     = (tp_EE + tn_EE) / |V| >= eta                                        (6)
 *   acc_EE,G   = (tp_EE + tp_kB) / (tp_EE + tp_kB + fn_kB) >= eta                    (7)
 *   t = sum of the conv-part times + the final branch time, delta_i = conv parts 1..i,
 *   e_i = the EE's time at batch 1; t'' = (1 - gamma)(t - delta_i) + delta_i + e_i  (eq. 3)
 *   gain = t / (mean time of the class-k samples), loss = (mean time of the others) / t,
 *   a sample taking delta_i + e_i when the EE answers it and t + e_i otherwise.
 * The constraints are compared exactly, on the integer counts. A point is viable when all
 * three hold and gain > 1 (a positive time saving, §3.3). */
#ifndef NN_EE_SEARCH_H
#define NN_EE_SEARCH_H

#include <stdint.h>
#include <stdio.h>

#include "../common/ei.h"
#include "dataset.h"
#include "ee.h"
#include "model.h"

/* Block times of B (ms, batch 1): conv part j and the final branch. */
typedef struct ee_search_times {
    int n;
    double conv_ms[EE_MAX_LAYERS];
    double final_branch_ms;
} ee_search_times_t;

/* t = sum of conv_ms + final_branch_ms, and delta_i = conv_ms[0..layer-1] summed. */
double ee_search_t_ms(const ee_search_times_t *t);
double ee_search_delta_ms(const ee_search_times_t *t, int layer);

/* The time measurement, in one place: runs data[idx[0..count-1]] at batch 1 through every
 * conv part and the final branch of b (prepared for inference) and keeps each one's median
 * time. 0, or a negative code with err set. */
int ee_search_times_measure(nn_model_t *b, const nn_dataset_t *data, const int *idx, int count,
                            ee_search_times_t *t, ei_err_t *err) EI_CHECK;

/* Median time (ms) of ee_check at batch 1 on taps1 (one sample's taps) over reps calls. */
double ee_search_time_ee(ee_t *ee, const nn_tensor_t *const *taps1, int reps);

/* Confusion counts of one split at one alpha (names as in the formulas above). */
typedef struct ee_search_counts {
    long n, k;         /* |V|, |k| */
    long tp_ee, fp_ee; /* answered at the EE: of class k / not */
    long tp_b;         /* right at Out:B among the samples the EE left (all classes) */
    long tp_kb, fn_kb; /* class-k samples left to Out:B: right / wrong */
    long b_right_k, b_right_not_k, b_pred_k; /* B alone: right on k, right on V-k, says k */
} ee_search_counts_t;

/* Counts of n samples: label, B's final-exit prediction and the EE's P(k) of each. */
void ee_search_count(const uint8_t *label, const uint8_t *pred_b, const float *p_k, int n,
                     int target, double alpha, ee_search_counts_t *c);

typedef struct ee_search_figures {
    ee_search_counts_t c;
    double alpha, beta, eta, zeta;
    double gamma;
    double t_ms, delta_ms, e_ms, t2_ms;
    double gain, loss;
    double acc_b, acc_ee, acc_g;
    double precision; /* tp_EE / (tp_EE + fp_EE); NAN when the EE answers nothing */
    int c5, c6, c7;   /* each constraint held */
    int met;          /* all three */
    int viable;       /* met and gain > 1 */
} ee_search_figures_t;

/* Every figure from the counts and the times (NAN where a denominator is 0; such a
 * constraint does not hold). */
void ee_search_figures(const ee_search_counts_t *c, double alpha, double t_ms, double delta_ms,
                       double e_ms, ee_search_figures_t *f);

/* The viable point with the largest gain/loss on the Pareto front (gain up, loss down) of
 * pts[0..n-1]; ties go to the larger gain, then the earlier point. front (may be NULL) gets
 * 1 for the non-dominated viable points. Returns its index, or -1 when none is viable. */
int ee_search_choose(const ee_search_figures_t *pts, int n, uint8_t *front);

/* Precomputed features: every row's pooled taps of all layers (the input of a KP = on EE
 * after the last layer), its label and B's final-exit prediction. Rows are the training
 * samples, then the validation samples, then the test samples. */
typedef struct ee_search_bank {
    int count, n_train, n_val, n_test;
    int layers, features, pool, classes;
    int offset[EE_MAX_LAYERS + 1]; /* first column of layer j's pooled tap (0-based j) */
    float *feat;                   /* count x features */
    uint8_t *label, *pred_b;
    nn_tensor_t *taps1[EE_MAX_LAYERS]; /* one sample's taps at batch 1, for timing */
} ee_search_bank_t;

/* Runs B (prepared for inference) over train[train_idx[0..n_train-1]],
 * train[val_idx[0..n_val-1]] and the first n_test images of test, in batches of
 * nn_model_max_batch(b). log (may be NULL) gets progress. Caller owns the result. */
ee_search_bank_t *ee_search_bank_new(nn_model_t *b, const nn_dataset_t *train, const int *train_idx,
                                     int n_train, const int *val_idx, int n_val,
                                     const nn_dataset_t *test, int n_test, int pool, FILE *log,
                                     ei_err_t *err);
void ee_search_bank_destroy(ee_search_bank_t **self_p);

typedef struct ee_search_opts {
    int kp_off, kp_on;                     /* which KP settings to try */
    int layer_lo, layer_hi;                /* layers tried, 1-based, inclusive (0, 0: all) */
    double alpha_lo, alpha_hi, alpha_step; /* default 0.95, 1.0, 0.01 */
    int time_reps;                         /* ee_check calls timed per EE (default 201) */
    ee_train_opts_t train;
    FILE *log; /* a line per trained EE; NULL: quiet */
} ee_search_opts_t;

void ee_search_opts_default(ee_search_opts_t *o);

/* One trained EE (layer, KP) and its best viable validation point, if any. */
typedef struct ee_search_candidate {
    int layer, kp;
    ee_train_result_t train;
    double e_ms;
    int viable;               /* viable alphas */
    ee_search_figures_t best; /* largest gain/loss among them (valid when viable > 0) */
} ee_search_candidate_t;

typedef struct ee_search_result {
    int target;
    double beta, eta, zeta;       /* B alone on the validation split */
    double beta_t, eta_t, zeta_t; /* on the test split */
    int ncand;
    ee_search_candidate_t cand[2 * EE_MAX_LAYERS];
    int points, front;             /* viable points seen, on the Pareto front */
    int found;                     /* a viable EE exists */
    ee_search_figures_t val, test; /* the chosen one's figures on both splits */
    ee_t *ee;                      /* the chosen EE, alpha set; owned by the result */
} ee_search_result_t;

/* The whole search for one target class on bank with B's times. res is overwritten; free
 * it with ee_search_result_clear. 0, or a negative code with err set. */
int ee_search_class(const ee_search_bank_t *bank, const ee_search_times_t *times, int target,
                    const ee_search_opts_t *o, ee_search_result_t *res, ei_err_t *err) EI_CHECK;
void ee_search_result_clear(ee_search_result_t *res);

/* Figures of a trained EE on rows [first, first + n) of bank at its alpha. */
void ee_search_eval_rows(ee_t *ee, const ee_search_bank_t *bank, int first, int n,
                         const ee_search_times_t *times, double e_ms, ee_search_figures_t *f);

#endif
