/* predictor: the CS-Predictors (EINet §IV-C, DESIGN.md "CS-Predictor"). A predictor takes what
 * the exits run so far showed and scores every exit for the planner's expectation.
 *
 * Two kinds, the same MLP (dense, ReLU, dense, ReLU, dense, sigmoid; hidden 256, 128 for
 * n <= 30 exits, 2048, 1024 for more, unless told otherwise; the correctness kind takes a
 * quarter of those sizes by default):
 *   PREDICTOR_CONFIDENCE  the paper's: input = the confidences seen so far (a skipped exit
 *     takes the nearest earlier executed value, future ones 0), output = all n confidences,
 *     trained with the masked MSE of EINet eq. (3): only future exits count.
 *   PREDICTOR_CORRECTNESS beyond the paper: input = richer evidence of each executed exit's
 *     softmax vector (max probability, margin, normalised entropy, argmax agreement with
 *     the latest executed exit, the probability it gives the latest exit's class) and the
 *     latest executed exit's whole vector; output = each exit's probability of being
 *     correct, trained with masked binary cross-entropy on the correctness bits. The mask
 *     keeps the future exits and the executed ones (the planner needs the probability that
 *     the answer in effect is right, which no exit observes).
 * docs/elastic.md gives the features, how training patterns are drawn (EINet Fig. 4
 * generalised to skipped exits) and the file format.
 *
 * Evidence: probs holds n rows of K probabilities (only the rows of executed exits are
 * read), executed[j] = 1 if exit j ran, and x = the number of blocks passed (0..n): exits
 * j < x are spent, j >= x are future. Exits are numbered from 0. */
#ifndef PLANNER_PREDICTOR_H
#define PLANNER_PREDICTOR_H

#include <stdint.h>
#include <stdio.h>

#include "../common/ei.h"
#include "../nn/layer.h"
#include "profile.h"

typedef enum { PREDICTOR_CONFIDENCE = 0, PREDICTOR_CORRECTNESS = 1 } predictor_kind_t;

typedef struct predictor predictor_t;

typedef struct predictor_opts {
    predictor_kind_t kind;
    int hidden1, hidden2; /* 0: the kind's default sizes */
    int epochs;           /* passes over the training samples */
    int patterns;         /* evidence patterns drawn per sample and epoch */
    int batch;
    double lr;      /* Adam's step */
    double clip;    /* gradient clipping: largest global L2 norm */
    double holdout; /* share of the samples held out to pick the best epoch */
    uint64_t seed;
    FILE *log; /* a line per epoch; NULL: quiet */
} predictor_opts_t;

/* Defaults: confidence kind, the kind's hidden sizes, 40 epochs of 8 patterns, batch 256,
 * lr 1e-3, clip 1, holdout 0.1, seed 1, quiet. */
void predictor_opts_default(predictor_opts_t *o);

/* "confidence" / "correctness" and back (parse returns 0 or -1). */
const char *predictor_kind_name(predictor_kind_t kind);
int predictor_kind_parse(const char *name, predictor_kind_t *kind) EI_CHECK;

/* An untrained predictor (He-normal weights from seed) for n exits and K classes; hidden
 * sizes 0 take the kind's defaults. Caller owns it. NULL with err set on bad sizes or no memory. */
predictor_t *predictor_new(predictor_kind_t kind, int n, int classes, int hidden1, int hidden2,
                           uint64_t seed, ei_err_t *err);
void predictor_destroy(predictor_t **self_p);

/* Trains a new predictor on a CS-profile (the validation split): every epoch draws
 * o->patterns evidence patterns per sample, Adam with gradient clipping, and keeps the
 * weights of the epoch with the lowest loss on the held-out samples. Caller owns it. */
predictor_t *predictor_train(const profile_cs_t *cs, const predictor_opts_t *o, ei_err_t *err);

predictor_kind_t predictor_kind(const predictor_t *self);
int predictor_exits(const predictor_t *self);
int predictor_classes(const predictor_t *self);
int predictor_inputs(const predictor_t *self);
void predictor_hidden(const predictor_t *self, int *hidden1, int *hidden2);

/* Scores for the planner: n values in [0, 1]. Confidence kind: the observed confidence for
 * executed exits j < x (eq. (1): what was seen replaces the prediction), the prediction for
 * the others. Correctness kind: the predicted probability of being correct for every exit.
 * Allocates nothing; not thread-safe (the predictor holds the scratch). */
void predictor_predict(predictor_t *self, const float *probs, const uint8_t *executed, int x,
                       double *scores);

/* The MLP's input for some evidence (predictor_inputs() floats) and the loss mask (n
 * floats, 1 where the exit's output counts): the pieces predict and training share. */
void predictor_features(const predictor_t *self, const float *probs, const uint8_t *executed, int x,
                        float *in);
void predictor_mask(predictor_kind_t kind, int n, const uint8_t *executed, int x, float *mask);

/* The training loss of a batch: in holds batch rows of inputs, target and mask batch rows of
 * n values. Confidence kind: (1/batch) sum mask (o - t)^2 (eq. (3)); correctness kind:
 * (1/batch) sum mask BCE(o, t). With backward = 1 the parameters' gradients are set to
 * d loss / d param (zeroed first). Grows scratch memory as batch needs (0 or EI_E_NOMEM
 * through *loss = NAN). */
double predictor_loss(predictor_t *self, const float *in, const float *target, const float *mask,
                      int batch, int backward);

/* The MLP's parameters (fc1.weight, fc1.bias, ..., fc3.bias), for tests and tools; owned
 * by the predictor. */
int predictor_param_count(const predictor_t *self);
nn_param_t *predictor_param(predictor_t *self, int i, const char **name);

/* Error of a predictor on a CS-profile (the test split), over the evidence patterns of EINet
 * Fig. 4: for every sample, x = 0 (nothing seen) and every prefix x = 1..n-1 with all of
 * exits 0..x-1 executed. Targets are the confidences (confidence kind) or the correctness
 * bits (correctness kind). mse and bce average over the outputs the kind's mask keeps;
 * const_mse is that of the best constant per exit (each exit's mean target on cs). */
typedef struct predictor_eval {
    double mse, bce, const_mse;
    long outputs; /* outputs averaged over */
} predictor_eval_t;
int predictor_evaluate(predictor_t *self, const profile_cs_t *cs, predictor_eval_t *ev,
                       ei_err_t *err) EI_CHECK;

/* Safetensors file: tensors fc{1,2,3}.{weight,bias}, metadata format "einet-predictor",
 * version, kind, exits, classes, inputs, hidden, model and info (a JSON object string, may be
 * NULL on save). Loading checks every one. Caller owns the loaded predictor. */
int predictor_save(const predictor_t *self, const char *path, const char *model,
                   const char *info_json, ei_err_t *err) EI_CHECK;
predictor_t *predictor_load(const char *path, ei_err_t *err);

#endif
