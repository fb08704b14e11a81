/* scores: what each exit is worth to the planner. The accuracy expectation weighs every
 * exit by a score in [0, 1] (DESIGN.md, "Accuracy expectation"); until a CS-Predictor is
 * configured the score of exit k is its accuracy on the validation split the model was
 * trained with, the same for every sample. scores_for() is the one place a per-sample
 * predictor plugs in: it gets the exits a request has seen and returns all n scores.
 * Shared by einet-node (replanning) and einet-coord (initial plans). */
#ifndef NODE_SCORES_H
#define NODE_SCORES_H

#include "common/ei.h"
#include "nn/model.h"

#define SCORES_MAX_EXITS 128
/* Validation samples evaluated at start-up (about 1.5 s with the
 * data set load, for the default model). */
#define SCORES_VAL_SAMPLES 500

typedef struct scores {
    int n;
    double acc[SCORES_MAX_EXITS]; /* per exit, 0-based */
    char source[96];              /* where the numbers came from, for logs */
} scores_t;

/* One exit a request has run: what a predictor reads. */
typedef struct scores_seen {
    int exit; /* 1-based */
    float confidence;
    int class_id;
    int nprobs;
    float probs[16];
} scores_seen_t;

/* A fallback that needs nothing: deeper exits score higher (0.5 + 0.4 k / n). */
void scores_prior(scores_t *s, int n);

/* Per-exit accuracy of the model file at model_path on up to `samples` images of the
 * validation split it was trained with (the seed and size in its metadata "info"; the
 * trainer's defaults when absent), from the Fashion-MNIST training set in data_dir (NULL:
 * the default). 0, or a negative code with err set (no data set, bad model file). */
int scores_from_validation(scores_t *s, const char *model_path, const char *data_dir, int samples,
                           ei_err_t *err) EI_CHECK;

/* The scores to plan a request's remaining exits with, given the exits it has seen so far
 * (depth order; nseen may be 0). out gets s->n values in [0, 1]. */
void scores_for(const scores_t *s, const scores_seen_t *seen, int nseen, double *out);

#endif
