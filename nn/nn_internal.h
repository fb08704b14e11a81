/* Details shared by the files of the nn module: layer sequences (a conv part or a
 * branch) and the model struct. */
#ifndef NN_INTERNAL_H
#define NN_INTERNAL_H

#include <stdint.h>

#include "layer.h"
#include "model.h"

/* A chain of layers with its activation buffers (and, for training, gradient buffers),
 * all sized for max_batch samples when the sequence is made. */
typedef struct nn_seq {
    int count;
    nn_layer_t **layers;
    uint8_t *skip;       /* 1: layer folded away (a batch norm after nn_model_prepare) */
    nn_tensor_t **act;   /* act[i]: output of layer i */
    nn_tensor_t **grad;  /* grad[i]: dLoss/d act[i]; NULL until training needs them */
    nn_shape_t in, out;
    int max_batch;
} nn_seq_t;

/* Builds the layers of specs on per-sample input shape in; err names the failing layer
 * by its index (the caller prefixes the block). */
int nn__seq_init(nn_seq_t *s, const nn_layer_spec_t *specs, int count, nn_shape_t in,
                 int max_batch, ei_err_t *err) EI_CHECK;
void nn__seq_free(nn_seq_t *s);
/* Grows the buffers to n samples (nothing when they hold that many); EI_E_NOMEM. */
int nn__seq_reserve(nn_seq_t *s, int n) EI_CHECK;
/* Inference: folds each batch norm into the conv before it, skips dropouts, prepares
 * residual layers' chains the same way. */
void nn__seq_fold(nn_seq_t *s);
size_t nn__seq_workspace(const nn_seq_t *s, int n);
double nn__seq_flops(const nn_seq_t *s);
/* Runs the layers; returns the last activation (or x itself for an empty sequence). */
const nn_tensor_t *nn__seq_forward(nn_seq_t *s, const nn_tensor_t *x, float *ws, int training);
/* Inference on samples [s0, s0 + x->n) of the buffers only (x holds their input), safe
 * to run for disjoint ranges on several threads with separate ws; *out is a view of the
 * output for those samples (x itself for an empty sequence). */
void nn__seq_forward_at(nn_seq_t *s, const nn_tensor_t *x, int s0, float *ws, nn_tensor_t *out);
/* nn__seq_forward_at from layer `from` on, x holding the samples' input to that layer (the
 * output of the step before it); *out as there, x itself when no layer is left. */
void nn__seq_forward_from(nn_seq_t *s, int from, const nn_tensor_t *x, int s0, float *ws,
                          nn_tensor_t *out);
/* The first step of a sequence in inference when it is a conv: the layer, whether its
 * ReLU and a 2x2 maxpool run with it, the activation it writes (act[at]) and the layer
 * after the step (next, for nn__seq_forward_from). Returns 1, or 0 when the first layer
 * that runs is not a conv. */
typedef struct nn_seq_head {
    nn_layer_t *layer;
    int relu, pool, at, next;
} nn_seq_head_t;
int nn__seq_head(const nn_seq_t *s, nn_seq_head_t *h);
/* Backward from dy (shape of the output) to dx (may be NULL). */
int nn__seq_backward(nn_seq_t *s, const nn_tensor_t *x, const nn_tensor_t *dy, nn_tensor_t *dx,
                     float *ws) EI_CHECK;

typedef struct nn__wino_pair nn__wino_pair_t; /* layer_internal.h */

/* pair (inference, NULL for none): this block's branch conv and the next block's conv run
 * as one Winograd product on this block's map (nn__wino_pair_t), with the two sequences'
 * first steps as head (the branch's) and next_head (the next conv part's). */
typedef struct nn_block {
    nn_seq_t conv;
    nn_seq_t branch;
    nn__wino_pair_t *pair;
    nn_seq_head_t head, next_head;
} nn_block_t;

struct nn_model {
    char *name;
    char *arch_json;
    nn_shape_t input;
    int classes;
    int nblocks;
    nn_block_t *blocks;
    int max_batch;
    int inference; /* batch norms folded */
    float *ws;        /* scratch: threads shares of ws_floats */
    size_t ws_floats; /* max over layers of their workspace at max_batch */
    int threads;      /* nn_threads() when made */
    /* training only */
    nn_tensor_t **dfeat;  /* dLoss/d feature map of block k */
    nn_tensor_t **dtmp;   /* branch k's input gradient, added into dfeat */
    float *probs, *dlogits;
};

/* Parses architecture JSON into blocks of layer specs. *specs_out is one array per
 * block part, in order conv0, branch0, conv1, ... with counts in *counts_out. */
typedef struct nn_arch {
    char *name;
    nn_shape_t input;
    int classes;
    int nblocks;
    nn_layer_spec_t **parts; /* 2 * nblocks arrays */
    int *counts;             /* 2 * nblocks */
} nn_arch_t;

int nn__arch_parse(const char *json, const char *source, nn_arch_t *arch, ei_err_t *err) EI_CHECK;
void nn__arch_free(nn_arch_t *arch);

#endif
