/* Joint training of a multi-exit model (Scardapane et al. eq. 6: the weighted sum of the
 * exits' cross-entropy losses) with SGD + momentum or Adam, a learning-rate schedule,
 * seeded shuffling, and per-exit evaluation. */
#ifndef NN_TRAIN_H
#define NN_TRAIN_H

#include <stdio.h>

#include "../common/ei.h"
#include "dataset.h"
#include "model.h"

typedef enum { NN_OPT_SGD, NN_OPT_ADAM } nn_optimizer_t;
typedef enum { NN_SCHED_COSINE, NN_SCHED_STEP, NN_SCHED_CONST } nn_schedule_t;

typedef struct nn_train_opts {
    int epochs;
    int batch;
    double lr;           /* peak learning rate */
    double momentum;     /* SGD momentum (Nesterov) */
    double weight_decay; /* on conv and dense weights only */
    nn_optimizer_t optimizer;
    nn_schedule_t schedule; /* cosine to 0 / x0.1 at 50% and 75% / constant */
    int warmup_epochs;      /* linear warm-up before the schedule */
    uint64_t seed;          /* initialisation and shuffling */
    int augment_flip;       /* random horizontal flips */
    int augment_shift;      /* random translations by up to this many pixels per axis */
    const float *exit_weights; /* one per block; NULL: all 1 */
    int progress;           /* 1: redrawn bar (a TTY), 0: a plain line every 10% */
    FILE *log;              /* where progress goes; NULL: stderr */
} nn_train_opts_t;

void nn_train_opts_default(nn_train_opts_t *o);

/* Trains m in place on data[train_idx[0..n_train-1]], reporting per-exit validation
 * accuracy on data[val_idx[...]] after every epoch (n_val may be 0). Returns 0, or a
 * negative code with err set (options out of range, a non-finite loss). */
int nn_train(nn_model_t *m, const nn_dataset_t *data, const int *train_idx, int n_train,
             const int *val_idx, int n_val, const nn_train_opts_t *o, ei_err_t *err) EI_CHECK;

/* Per-exit accuracy and mean confidence (max probability) of m on data[idx[0..n-1]] (idx
 * NULL: the first n), in batches. acc and conf hold nn_model_blocks(m) values each (conf
 * may be NULL). */
int nn_eval_exits(nn_model_t *m, const nn_dataset_t *data, const int *idx, int n, double *acc,
                  double *conf, ei_err_t *err) EI_CHECK;

/* nn_arch_check_input for a model and a data set: m's input against data's sample shape.
 * source names the model's architecture or model file (NULL: the model's name). Every
 * function here that takes a model and a data set calls it first; commands call it after
 * nn_dataset_probe, before loading anything heavy. 0 or EI_E_SHAPE with err set. */
int nn_model_check_data(const nn_model_t *m, const char *source, const nn_dataset_t *data,
                        ei_err_t *err) EI_CHECK;

/* nn_arch_check_input of input, declared by arch (a file name), against split ("train" or
 * "test") of the IDX data in dir (NULL: the default), reading only the image file's header
 * (nn_dataset_probe). Returns 0, EI_E_SHAPE for a mismatch (and for nothing else), or the
 * probe's error. */
int nn_arch_check_split(const char *arch, nn_shape_t input, const char *dir, const char *split,
                        ei_err_t *err) EI_CHECK;

/* The start-up check of einet-node and einet-coord: input, declared by the model file
 * source, against the data the cluster serves (the test split in $EINET_DATA_DIR or the
 * default directory, whose images the clients send and on which the node measures its exit
 * scores). EI_E_SHAPE with err set for a mismatch; 0 when it matches and also when this
 * machine has no readable data set (nothing to check against). */
int nn_arch_check_served(const char *source, nn_shape_t input, ei_err_t *err) EI_CHECK;

/* Moves each sample of x by its own (dy, dx), both uniform in [-max, max] from rng, the
 * pixels moved in from outside zero (the data set's background); tmp holds one sample. */
void nn_augment_shift(nn_tensor_t *x, int max, ei_rng_t *rng, float *tmp);

/* Copies images data[idx[0..n-1]] (idx NULL: from index first) into x (n, 1, h, w).
 * x of any other sample shape is a bug (the caller skipped nn_model_check_data): abort. */
void nn_dataset_batch(const nn_dataset_t *data, const int *idx, int first, int n, nn_tensor_t *x,
                      int *labels);

#endif
