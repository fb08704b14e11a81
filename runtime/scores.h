/* scores: what each exit is worth to the planner. The accuracy expectation weighs every
 * exit by a score in [0, 1] (DESIGN.md, "Accuracy expectation"). With a CS-Predictor
 * (planner/predictor.h) the scores of a request are predicted from the exits it has seen;
 * without one, the score of exit k is its accuracy on the validation split, the same for
 * every sample: read from the model's validation CS-profile when there is one
 * (`<model>.profile/cs-val.safetensors`, as `einet profile` writes it), else measured on
 * the validation split the model was trained with. scores_for() is the one function the
 * planning code calls. Shared by einet-node (replanning) and einet-coord (initial plans). */
#ifndef RUNTIME_SCORES_H
#define RUNTIME_SCORES_H

#include "common/ei.h"
#include "nn/model.h"
#include "planner/predictor.h"

#define SCORES_MAX_EXITS 128
#define SCORES_MAX_CLASSES 16
/* Validation samples evaluated when no CS-profile is at hand (about 1.5 s with the data
 * set load, for the default model). */
#define SCORES_VAL_SAMPLES 500

typedef struct scores {
    int n, classes;
    double acc[SCORES_MAX_EXITS]; /* per exit, 0-based */
    char source[96];              /* where the numbers came from, for logs */
    predictor_t *pred;            /* owned; NULL: the accuracies */
} scores_t;

/* One exit a request has run: what a predictor reads. */
typedef struct scores_seen {
    int exit; /* 1-based */
    float confidence;
    int class_id;
    int nprobs;
    float probs[SCORES_MAX_CLASSES];
} scores_seen_t;

/* A fallback that needs nothing: deeper exits score higher (0.5 + 0.4 k / n). Sets n and
 * classes; no predictor. */
void scores_prior(scores_t *s, int n, int classes);

/* The accuracies from a CS-profile file (its per-exit accuracy over its samples). EI_E_SHAPE
 * when its exits are not s->n. Only acc and source change. */
int scores_from_profile(scores_t *s, const char *cs_path, ei_err_t *err) EI_CHECK;

/* The validation CS-profile that `einet profile` writes for a model file:
 * "DIR/NAME.profile/cs-val.safetensors" for "DIR/NAME.safetensors". */
void scores_profile_path(const char *model_path, char *out, size_t cap);

/* Per-exit accuracy of the model file at model_path on up to `samples` images of the
 * validation split it was trained with (the seed and size in its metadata "info"; the
 * trainer's defaults when absent), from the Fashion-MNIST training set in data_dir (NULL:
 * the default). Fills n, acc and source only; safe to run off the loop thread. 0, or a
 * negative code with err set (no data set, a model the images do not fit). */
int scores_from_validation(scores_t *s, const char *model_path, const char *data_dir, int samples,
                           ei_err_t *err) EI_CHECK;

/* Loads a CS-Predictor file for s->n exits and s->classes classes (checked). */
int scores_load_predictor(scores_t *s, const char *path, ei_err_t *err) EI_CHECK;

/* Frees the predictor. */
void scores_release(scores_t *s);

/* The scores to plan a request's remaining exits with, after x blocks (0..n) and the exits
 * it has seen (depth order; nseen may be 0). out gets s->n values in [0, 1]. Not
 * thread-safe with a predictor (it holds scratch memory). */
void scores_for(scores_t *s, const scores_seen_t *seen, int nseen, int x, double *out);

#endif
