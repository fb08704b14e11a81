/* Layers of the engine: each has a forward and a backward pass over a batch of NCHW
 * float32 tensors. Parameters live in the layer; activations and scratch memory belong to
 * the caller (a sequence or a model sizes them once), so forward allocates nothing.
 *
 * Conventions (the same as PyTorch, so weights can be compared and moved across):
 *   conv weight [out, in, k, k] + bias [out]; dense weight [out, in] + bias [out], the
 *   dense input is the flattened (c*h*w) sample; batch norm gamma, beta, running_mean,
 *   running_var [c], eps 1e-5, momentum 0.1 for the running statistics.
 */
#ifndef NN_LAYER_H
#define NN_LAYER_H

#include "../common/ei.h"
#include "tensor.h"

typedef enum nn_kind {
    NN_CONV,    /* conv2d: out channels, square kernel k, stride, zero padding */
    NN_BN,      /* batch normalisation over channels */
    NN_RELU,    /* max(0, x) */
    NN_MAXPOOL, /* k x k window, stride (0 means k), padding pad (pads never win) */
    NN_AVGPOOL, /* k x k window, stride; or, with size > 0, adaptive to size x size outputs
                   (PyTorch's AdaptiveAvgPool2d bins: floor(i*H/s) .. ceil((i+1)*H/s)) */
    NN_GAP,     /* global average pool: (c, h, w) -> (c, 1, 1) */
    NN_DENSE,   /* fully connected: out features */
    NN_FLATTEN, /* (c, h, w) -> (c*h*w, 1, 1); a no-op on the data */
    NN_RESIDUAL, /* path(x) + shortcut(x): two layer chains on the same input whose outputs
                    are summed; no shortcut layers means the identity (ResNet's basic
                    block: path conv-bn-relu-conv-bn, shortcut none or 1x1 conv-bn) */
    NN_DROPOUT, /* training: each value zeroed with probability p, the rest scaled by
                   1 / (1 - p) (seeded by nn_layer_init); inference: the identity */
    NN_KIND_COUNT
} nn_kind_t;

typedef struct nn_layer_spec {
    nn_kind_t kind;
    int out;    /* conv: output channels; dense: output features */
    int k;      /* conv, pools: kernel side */
    int stride; /* conv, pools: stride (0 means 1 for conv, k for pools) */
    int pad;    /* conv, maxpool: zero padding on each side */
    int size;   /* avgpool: adaptive output side, 0 when k/stride are used */
    int groups; /* conv: channel groups (0 means 1); in and out channels must be multiples.
                   groups = in channels is a depthwise convolution */
    float p;    /* dropout: probability of zeroing, in [0, 1) */
    /* residual: the path's and the shortcut's layers (nshortcut 0: identity). Read only
       while the layer is made (it builds its own chains from them); NULL afterwards. */
    const struct nn_layer_spec *path, *shortcut;
    int npath, nshortcut;
} nn_layer_spec_t;

/* A trainable tensor or a buffer (grad == NULL: running statistics). Names are the
 * suffixes used in model files: "weight", "bias", "gamma", "beta", "running_mean",
 * "running_var". */
typedef struct nn_param {
    const char *name;
    nn_tensor_t *value;
    nn_tensor_t *grad;
    int ndim; /* rank in PyTorch's layout: the leading ndim of (n, c, h, w) are the shape
                 (conv weight 4, dense weight 2, the vectors 1; the other sizes are 1) */
} nn_param_t;

typedef struct nn_layer nn_layer_t;

/* Threads the engine runs a batch on (default 1): the samples, groups of samples or
 * channels of a layer are shared out among them. OpenBLAS is set to one thread, since every
 * product then runs inside one of these. Layers and models size their workspace for the
 * count in force when they are made, and use no more threads than that. EI_E_INVAL outside
 * [1, 64]; EI_E_NOMEM if a thread cannot be started (the ones that could are used). */
int nn_set_threads(int n) EI_CHECK;
int nn_threads(void);

/* "conv", "bn", "relu", "maxpool", "avgpool", "gap", "dense", "flatten", "residual",
 * "dropout"; -1 if unknown. */
int nn_kind_from_name(const char *name);
const char *nn_kind_name(nn_kind_t kind);

/* Creates a layer for per-sample input shape in. Checks the spec (positive sizes, kernel
 * no larger than the padded input, ...) and fails with EI_E_SHAPE or EI_E_INVAL and a
 * message naming the problem. Parameters are zero (bn: gamma 1, running_var 1) until
 * nn_layer_init. Caller owns the result. */
nn_layer_t *nn_layer_new(const nn_layer_spec_t *spec, nn_shape_t in, ei_err_t *err);
void nn_layer_destroy(nn_layer_t **self_p);

const nn_layer_spec_t *nn_layer_spec(const nn_layer_t *self);
nn_shape_t nn_layer_in_shape(const nn_layer_t *self);
nn_shape_t nn_layer_out_shape(const nn_layer_t *self);

/* Parameters in a fixed order; the layer owns them. A residual layer lists its chains'
 * parameters as "path.<i>.<param>" and "shortcut.<i>.<param>" (i the layer's index in
 * its chain). */
int nn_layer_param_count(const nn_layer_t *self);
nn_param_t *nn_layer_param(nn_layer_t *self, int i);

/* Sets every parameter gradient to zero (backward adds to them). */
void nn_layer_zero_grad(nn_layer_t *self);

/* He-normal weights for conv and dense (fan-in), zero biases; bn as after new; a
 * residual layer its chains' layers in order; dropout seeds its own generator from rng. */
void nn_layer_init(nn_layer_t *self, ei_rng_t *rng);

/* Floats of scratch memory forward or backward needs for a batch of n (im2col etc.). */
size_t nn_layer_workspace(const nn_layer_t *self, int n);

/* Forward multiply-adds x2 for one sample (conv and dense; 0 for the rest). */
double nn_layer_flops(const nn_layer_t *self);

/* y = layer(x) for x->n samples. x and y are caller-owned with the in and out shapes;
 * ws holds nn_layer_workspace(n) floats. training = 1: batch norm uses and keeps the
 * batch statistics and updates the running ones; 0: running statistics. */
void nn_layer_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                      int training);

/* Given x, y = forward(x) in training mode and dy = dLoss/dy, adds dLoss/dparam to the
 * parameters' grads and writes dLoss/dx into dx (dx may be NULL when not needed).
 * Must follow the forward of the same batch (batch norm keeps its batch statistics).
 * ws holds nn_layer_workspace(n) floats. relu, bn and flatten may run in place: y == x in
 * forward (for bn only when no backward follows, which needs the x) and dx == dy here. */
void nn_layer_backward(nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *y,
                       const nn_tensor_t *dy, nn_tensor_t *dx, float *ws);

/* Folds batch norm bn (running statistics) into the conv layer before it, for inference:
 * conv's weight and bias absorb the affine map; bn must then be skipped. EI_E_INVAL if the
 * kinds or channel counts do not fit. */
int nn_layer_fold_bn(nn_layer_t *conv, const nn_layer_t *bn) EI_CHECK;

/* Prepares a layer for inference: a residual layer folds the batch norms of its chains
 * into their convs and skips its dropouts; a 3x3 stride-1 conv of one channel group gets
 * Winograd's F(2x2, 3x3) lowering, made from its weights as they are now (so call it after
 * any batch-norm folding; the chains and nn_model_prepare_inference do). Other kinds are
 * unchanged (their folding is the chain's that holds them). Training is impossible after:
 * the weights must not change. */
void nn_layer_prepare_inference(nn_layer_t *self);

/* Whether nn_layer_prepare_inference gives 3x3 stride-1 convs Winograd's lowering
 * (default on); off, they keep im2col + sgemm. For benchmarks comparing the two. */
void nn_set_winograd(int on);

/* Row-wise softmax of z [n, k] into p (may alias z). */
void nn_softmax(const float *z, int n, int k, float *p);

/* Mean cross-entropy of logits z [n, k] against labels; writes the probabilities into p
 * and, when dz is not NULL, scale * dLoss/dz into dz (scale lets weighted exit losses
 * share one call). */
float nn_softmax_xent(const float *z, const int *labels, int n, int k, float *p, float *dz,
                      float scale);

/* Concatenation of per-sample flattened features: y[s] = x_0[s] ++ x_1[s] ++ ... The
 * class-specific exits join the pooled maps of several layers this way. y must have
 * sum of the inputs' c*h*w features per sample, as (F, 1, 1). */
void nn_concat_forward(const nn_tensor_t *const *xs, int count, nn_tensor_t *y);
/* Splits dy back into the dxs (overwrites them). */
void nn_concat_backward(const nn_tensor_t *dy, nn_tensor_t *const *dxs, int count);

#endif
