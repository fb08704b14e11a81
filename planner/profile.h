/* profile: the block-wise model profiles of EINet §IV-B. An ET-profile holds each block's
 * conv-part and branch times measured on this machine at batch 1 (means, as the planner
 * reads them, with their spread) and the link terms of DESIGN.md; a CS-profile holds, for
 * every profiled sample, every exit's softmax vector, from which its confidence (max
 * probability) and correctness follow.
 *
 * Files (docs/elastic.md): an ET-profile is JSON (jansson); a CS-profile is a safetensors
 * file with tensors "probs" [count, n, K], "labels" [count] and "index" [count] (dataset
 * indices, as floats: exact below 2^24) and metadata naming the format, the split and the
 * model. A profile directory holds et.json, cs-val.safetensors and cs-test.safetensors. */
#ifndef PLANNER_PROFILE_H
#define PLANNER_PROFILE_H

#include <stdint.h>
#include <stdio.h>

#include "../common/ei.h"
#include "../nn/dataset.h"
#include "../nn/model.h"
#include "planner.h"

#define PROFILE_ET_FILE "et.json"
#define PROFILE_CS_VAL_FILE "cs-val.safetensors"
#define PROFILE_CS_TEST_FILE "cs-test.safetensors"
#define PROFILE_MAX_CLASSES 1000
#define PROFILE_NAME_MAX 64

/* ET-profile: `times` is what the planner reads (means over the timed samples; link_ms and
 * result_ms are 0 on one machine and filled from live measurements across tiers); the
 * spread of each time over the samples is kept beside it. A plain value. */
typedef struct profile_et {
    planner_profile_t times;
    double conv_std_ms[PLANNER_MAX_EXITS], conv_p95_ms[PLANNER_MAX_EXITS];
    double branch_std_ms[PLANNER_MAX_EXITS], branch_p95_ms[PLANNER_MAX_EXITS];
    int samples; /* samples timed (0: unknown, e.g. a hand-made profile) */
    int batch;   /* batch size timed (1) */
    int threads; /* OpenBLAS threads while timing */
    char model[PROFILE_NAME_MAX];
    /* A live profile's dispatch time (a running cluster's coordinator: request receipt to
     * the device's start, ms; 0 for one machine). Its timeline starts at the coordinator's
     * receipt, so every arrival and the horizon are later by this much (profile_et_clock). */
    double dispatch_ms;
} profile_et_t;

/* The planner profile on the coordinator's clock: times with dispatch_ms added to the
 * first conv part (so a_k and H count from the request's receipt). */
planner_profile_t profile_et_clock(const profile_et_t *et);

/* A zeroed profile of n blocks (batch 1, model "?"). */
void profile_et_init(profile_et_t *et, int n);

/* Summarises per-sample times: conv_ms and branch_ms hold count rows of n times (ms); each
 * block's mean goes to et->times, its standard deviation and 95th percentile beside it.
 * link_ms and result_ms are left as they are. 0, or EI_E_NOMEM / EI_E_RANGE (count < 1,
 * a negative or non-finite time). */
int profile_et_summarise(profile_et_t *et, const double *conv_ms, const double *branch_ms,
                         int count, int n, ei_err_t *err) EI_CHECK;

/* JSON text of the profile (docs/elastic.md). Caller frees the result; NULL if out of
 * memory. */
char *profile_et_dumps(const profile_et_t *et);
/* Parses and checks JSON text (len bytes); source names it in messages ("et.json: line 3
 * column 5: ...", "et.json: branch_ms[2]: -1 is negative"). 0, or EI_E_FORMAT / EI_E_SHAPE /
 * EI_E_RANGE / EI_E_NONFINITE. */
int profile_et_parse(const char *text, size_t len, const char *source, profile_et_t *et,
                     ei_err_t *err) EI_CHECK;
/* The same through a file (written atomically). EI_E_IO / EI_E_NOTFOUND for file errors. */
int profile_et_save(const profile_et_t *et, const char *path, ei_err_t *err) EI_CHECK;
int profile_et_load(const char *path, profile_et_t *et, ei_err_t *err) EI_CHECK;

typedef struct profile_cs profile_cs_t;

/* An empty CS-profile of count samples, n exits and K classes for split ("val", "test" or
 * anything) of model; every sample must then be set. Caller owns the result; NULL with err
 * set for sizes out of range or no memory. */
profile_cs_t *profile_cs_new(int count, int n, int classes, const char *split, const char *model,
                             ei_err_t *err);
void profile_cs_destroy(profile_cs_t **self_p);

/* Sets sample i: its n rows of K probabilities (copied), its label and dataset index. The
 * confidence and correctness of each exit are derived from them (argmax, lowest class on
 * ties). 0, or EI_E_RANGE (a probability outside [0, 1] or non-finite, a label outside
 * [0, K)). */
int profile_cs_set(profile_cs_t *self, int i, const float *probs, int label, int index,
                   ei_err_t *err) EI_CHECK;

int profile_cs_count(const profile_cs_t *self);
int profile_cs_exits(const profile_cs_t *self);
int profile_cs_classes(const profile_cs_t *self);
const char *profile_cs_split(const profile_cs_t *self);
const char *profile_cs_model(const profile_cs_t *self);
/* Sample i's n x K probabilities, n confidences, n correctness bits, label and dataset
 * index; the pointers are owned by the profile. */
const float *profile_cs_probs(const profile_cs_t *self, int i);
const float *profile_cs_conf(const profile_cs_t *self, int i);
const uint8_t *profile_cs_correct(const profile_cs_t *self, int i);
int profile_cs_label(const profile_cs_t *self, int i);
int profile_cs_index(const profile_cs_t *self, int i);
/* Per-exit accuracy and mean confidence over the samples (n values each; conf may be NULL). */
void profile_cs_accuracy(const profile_cs_t *self, double *acc, double *conf);

/* Writes / reads a CS-profile file. Reading checks the format metadata, the shapes against
 * each other, probabilities in [0, 1] and labels in [0, K): a violation is EI_E_FORMAT /
 * EI_E_SHAPE / EI_E_RANGE naming the file and the tensor. Caller owns the result. */
int profile_cs_save(const profile_cs_t *self, const char *path, ei_err_t *err) EI_CHECK;
profile_cs_t *profile_cs_load(const char *path, ei_err_t *err);

/* Runs data[idx[0..count-1]] one at a time (batch 1) through every block of m (prepared for
 * inference, max_batch >= 1) and fills cs (count samples, m's exits and classes) and, when
 * not NULL, conv_ms and branch_ms (count x n times in ms, each conv part and branch timed
 * on its own). log (may be NULL) gets a line every 10%. 0, or a negative code with err. */
int profile_measure(nn_model_t *m, const nn_dataset_t *data, const int *idx, int count,
                    profile_cs_t *cs, double *conv_ms, double *branch_ms, FILE *log,
                    ei_err_t *err) EI_CHECK;

#endif
