/* Inside the layer library: the layer object and the table of per-kind operations that
 * nn/layer.c dispatches to (conv and dense in layer_gemm.c, batch norm in layer_bn.c,
 * the element-wise and pooling layers in layer_pool.c). */
#ifndef NN_LAYER_INTERNAL_H
#define NN_LAYER_INTERNAL_H

#include "layer.h"

#define NN_LAYER_MAX_PARAMS 4
#define NN_BN_EPS 1e-5f
#define NN_BN_MOMENTUM 0.1f

typedef struct nn_layer_ops nn_layer_ops_t;

struct nn_layer {
    nn_layer_spec_t spec; /* as the caller gave it */
    const nn_layer_ops_t *ops;
    int stride; /* conv, pools: the effective stride (spec.stride 0 resolved) */
    nn_shape_t in, out;
    int nparams;
    nn_param_t params[NN_LAYER_MAX_PARAMS];
    /* bn: statistics of the last training batch, kept for backward; in.c floats each. */
    float *batch_mean, *batch_invstd;
    int have_batch;
    int threads; /* nn_threads() when made: the workspace has a share for each */
    int groups;  /* conv: channel groups (spec.groups 0 resolved to 1) */
    /* residual: its chains' parameters under their own names (the tensors are the
       chains' layers'); nparams is then 0 and these are listed instead */
    nn_param_t *xparams;
    int nxparams;
    void *state; /* residual, dropout: what the kind keeps (freed by ops->destroy) */
    /* conv prepared for inference with Winograd's lowering (layer_winograd.c): the
       transformed weights [16][out][in]; NULL: im2col */
    float *wino;
};

/* What one kind does. setup checks the spec against self->in, sets self->out and the
 * stride, and adds the parameters; it returns 0 or a negative code with err set.
 * workspace may be NULL (no scratch); backward gets dx == NULL when dx is not needed. */
struct nn_layer_ops {
    int (*setup)(nn_layer_t *self, ei_err_t *err);
    size_t (*workspace)(const nn_layer_t *self, int n);
    double (*flops)(const nn_layer_t *self);
    void (*init)(nn_layer_t *self, ei_rng_t *rng);
    void (*forward)(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                    int training);
    void (*backward)(nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *y,
                     const nn_tensor_t *dy, nn_tensor_t *dx, float *ws);
    void (*destroy)(nn_layer_t *self); /* frees state; may be NULL */
};

extern const nn_layer_ops_t nn__conv_ops, nn__dense_ops, nn__bn_ops, nn__relu_ops, nn__maxpool_ops,
    nn__avgpool_ops, nn__gap_ops, nn__flatten_ops, nn__residual_ops, nn__dropout_ops;

/* Residual layers (layer_residual.c). reserve sizes the chains' buffers for batches of n
 * (a sequence does it for its max_batch when made, so inference allocates nothing); 0 or
 * EI_E_NOMEM. forward_at runs samples [s0, s0 + x->n) of those buffers (x and y hold
 * those samples): in training s0 must be 0; in inference several threads may run
 * disjoint ranges at once. With relu the sum is written as max(0, .), the output of a
 * ReLU after the layer. */
int nn__residual_reserve(nn_layer_t *self, int n) EI_CHECK;
void nn__residual_forward_at(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, int s0,
                             float *ws, int training, int relu);
/* Folds the batch norms of the chains into their convs and skips their dropouts. */
void nn__residual_prepare(nn_layer_t *self);

/* Adds parameter `name` of shape (n, c, h, w), PyTorch rank ndim, with a gradient when
 * trainable. Returns 0 or EI_E_NOMEM. */
int nn__layer_add_param(nn_layer_t *self, const char *name, int ndim, int n, int c, int h, int w,
                        int trainable);

/* Checks k, stride and pad of a sliding window over self->in (k >= 1, stride >= 0,
 * 0 <= pad < k, at least one output) and sets self->stride and self->out's h and w.
 * Messages start with what ("conv", "maxpool"). */
int nn__window_setup(nn_layer_t *self, const char *what, ei_err_t *err);

/* nn_layer_forward of a conv layer followed by a ReLU, both in one pass: y = max(0,
 * conv(x)), the output the ReLU would give. Several threads may run it on one layer at
 * once (different samples): the layer is not written. */
void nn__layer_forward_relu(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                            int training);

/* The conv forward (layer_gemm.c), with the ReLU applied in the same pass when relu;
 * Winograd's lowering when the layer has it and this is not training. */
void nn__conv_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                      int relu, int training);

/* Winograd F(2x2, 3x3) for 3x3 stride-1 convs of one channel group (layer_winograd.c).
 * eligible: the layer can have it; share: floats of workspace one thread needs for a
 * batch of n (0 when not eligible); prepare: makes self->wino from the current weights
 * (nothing when not eligible, switched off by nn_set_winograd, or out of memory);
 * forward: y = conv(x) through it, ws holding `share` floats per thread. */
int nn__wino_eligible(const nn_layer_t *self);
int nn__wino_on(void); /* nn_set_winograd's setting */
int nn__wino_tile(const nn_layer_t *self);
int nn__wino_group_max(const nn_layer_t *self, int n);
size_t nn__wino_share(const nn_layer_t *self, int n);
void nn__wino_prepare(nn_layer_t *self);
void nn__wino_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                      size_t share, int relu, int pool);

/* Two prepared Winograd convs that read the same map (same input shape, padding and tile:
 * a block's branch conv and the next block's conv) run as one: one input transform, one
 * product per transform point with the two convs' output rows stacked (M = ma + mb: fatter
 * than either alone), then each output transform into its own map. new: NULL when the
 * two cannot pair (either without the lowering, different maps) or out of memory; the
 * pair copies the layers' transformed weights and biases, so it is made after they are
 * prepared and is destroyed before them (destroy accepts NULL and clears *self_p).
 * share: floats of workspace for a batch of n. forward: ya = a(x) (max(0, .) when relu_a;
 * with pool_a the 2x2 stride-2 maxpool of that, as nn__conv_forward_relu_pool), yb = b(x)
 * the same way, on the calling thread alone, ws holding share floats. */
typedef struct nn__wino_pair nn__wino_pair_t;
nn__wino_pair_t *nn__wino_pair_new(const nn_layer_t *a, const nn_layer_t *b);
void nn__wino_pair_destroy(nn__wino_pair_t **self_p);
size_t nn__wino_pair_share(const nn__wino_pair_t *self, int n);
void nn__wino_pair_forward(const nn__wino_pair_t *self, const nn_tensor_t *x, nn_tensor_t *ya,
                           int relu_a, int pool_a, nn_tensor_t *yb, int relu_b, int pool_b,
                           float *ws);

/* Batch norm with the ReLU after it in one pass (layer_bn.c): the forward writes y =
 * max(0, bn(x)) with relu (bn(x) without), the ReLU's output; the backward takes the
 * ReLU's output gradient dy and its output mask (NULL: none) and gives bn's input
 * gradient dx (NULL: only dgamma and dbeta), as the two layers' backwards would. */
void nn__bn_forward_relu(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, int training,
                         int relu);
void nn__bn_backward_relu(nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *mask,
                          const nn_tensor_t *dy, nn_tensor_t *dx);

/* Training: the weight gradient of a 3x3 stride-1 same conv of one group through
 * Winograd's F(3x3, 2x2) (layer_wgrad.c). fits: the layer can have it (and it pays);
 * share: floats of workspace one thread needs for a batch of n; nn__wgrad: dw += dW and
 * db += db of the batch (x, dy), ws holding `share` floats per thread. */
int nn__wgrad_fits(const nn_layer_t *self);
size_t nn__wgrad_share(const nn_layer_t *self, int n);
void nn__wgrad(const nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *dy, float *dw,
               float *db, float *ws, size_t share);

/* Inference: a conv prepared with Winograd's lowering, its ReLU and a 2x2 stride-2 maxpool
 * after it in one pass (fusable: the conv has the lowering and pool is such a maxpool);
 * y is the pool's output, equal to what the three layers give one after the other. */
int nn__conv_pool_fusable(const nn_layer_t *self, const nn_layer_t *pool);
void nn__conv_forward_relu_pool(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y,
                                float *ws);

/* ---- the engine's threads (nn/parallel.c) ---- */
#define NN_MAX_THREADS 64

typedef void (*nn__item_fn)(void *arg, int item, int tid);

/* Runs fn(arg, i, tid) for every i in [0, count) on at most max of the engine's threads,
 * tid in [0, max) naming the thread (for its share of a workspace); returns when all are
 * done. Called from inside such a loop it runs inline in the calling thread, as tid 0. */
void nn__parallel_for(int count, int max, nn__item_fn fn, void *arg);

/* fn(arg, lo, hi) over pieces of [0, total) on at most max threads (twice as many pieces
 * as threads, so that a slowed thread leaves work to the others); inline when alone. */
typedef void (*nn__range_fn)(void *arg, size_t lo, size_t hi);
void nn__parallel_range(size_t total, int max, nn__range_fn fn, void *arg);

/* Threads a loop started here would use: min(nn_threads(), max), 1 inside a loop. */
int nn__loop_threads(int max);

/* Splits n samples into groups of at most gmax for a loop on `threads` threads: the
 * count rounded up to a multiple of the threads (when there are samples enough), so no
 * thread idles at the end, the samples spread evenly. Returns the groups' count; *per:
 * samples per group (the last may hold fewer). */
int nn__split_groups(int n, int gmax, int threads, int *per);

/* Sets every element of a to v. */
void nn__fill(float *a, size_t n, float v);

/* Sum of x[0..n), in eight float lanes (the loop vectorises without reassociation, even
 * at -O2) gathered into a double. */
double nn__sum(const float *x, size_t n);

#endif
