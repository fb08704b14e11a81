/* The multi-exit model: n blocks, each a conv part (a slice of the backbone) and a branch
 * (the exit's classifier), described by an architecture file (JSON, under
 * configs/models/) and stored with its weights in a safetensors model file.
 *
 * Architecture file:
 *   {"name": "...", "input": [C, H, W], "classes": K,
 *    "blocks": [{"conv": [LAYER, ...], "branch": [LAYER, ...]}, ...]}
 *   LAYER = {"type": "conv", "out": 16, "k": 3, "stride": 1, "pad": 1}
 *         | {"type": "bn"} | {"type": "relu"} | {"type": "flatten"} | {"type": "gap"}
 *         | {"type": "maxpool", "k": 2, "stride": 2, "pad": 0}
 *         | {"type": "avgpool", "k": 2, "stride": 2} | {"type": "avgpool", "size": 4}
 *         | {"type": "dense", "out": 64}
 *   Every branch must end in a dense layer of K outputs (its logits).
 *
 * Tensor names in model files: "blocks.<k>.<conv|branch>.<i>.<param>", k and i from 0.
 * The inference path (nn_model_conv, nn_model_branch, nn_model_forward) allocates
 * nothing: every buffer is sized for max_batch when the model is made. */
#ifndef NN_MODEL_H
#define NN_MODEL_H

#include "../common/ei.h"
#include "layer.h"
#include "tensor.h"

typedef struct nn_model nn_model_t;

/* Builds a model, with zero weights, from architecture JSON text; source names the file
 * in error messages ("configs/models/x.json: block 3 conv layer 2: ..."). */
nn_model_t *nn_model_from_arch(const char *json, const char *source, int max_batch,
                               ei_err_t *err);

/* The one check wherever an architecture meets data or a tensor: the input the
 * architecture declares must be the data's sample shape, or the kernels would read
 * misaligned bytes or past the end of a buffer. arch names the architecture or model
 * file, data_source where the data came from (a data file, a config, a peer). Returns 0,
 * or EI_E_SHAPE with err set to one line naming both, e.g.
 * "a.json: declared input [1,14,14] does not match the data's shape [1,28,28] (DATA)". */
int nn_arch_check_input(const char *arch, nn_shape_t input, nn_shape_t data,
                        const char *data_source, ei_err_t *err) EI_CHECK;

/* The same check for any boundary of an architecture: what names it ("input", "output of
 * block 2"), the message reads "ARCH: declared WHAT [C,H,W] does not match ...". */
int nn_arch_check_shape(const char *arch, const char *what, nn_shape_t declared, nn_shape_t data,
                        const char *data_source, ei_err_t *err) EI_CHECK;

/* Reads an architecture file and builds the model from it. */
nn_model_t *nn_model_load_arch(const char *path, int max_batch, ei_err_t *err);

/* Reads an architecture file and gives the input [C, H, W] it declares, without building
 * the model, so a command can check it against the data first. 0 or a negative code with
 * err set (the file's, or a format error naming the file). */
int nn_arch_file_input(const char *path, nn_shape_t *input, ei_err_t *err) EI_CHECK;

/* Loads a model file (architecture from its metadata, then every tensor checked by name,
 * shape and dtype; unknown or missing tensors are errors). Caller owns the result. */
nn_model_t *nn_model_load(const char *path, int max_batch, ei_err_t *err);

/* Writes the model (weights + architecture + info, a JSON object string or NULL, in the
 * metadata). Refused (EI_E_INVAL) for a model prepared for inference (folded). */
int nn_model_save(const nn_model_t *self, const char *path, const char *info_json,
                  ei_err_t *err) EI_CHECK;

void nn_model_destroy(nn_model_t **self_p);

/* He-normal initialisation of every weight from the seed. */
void nn_model_init(nn_model_t *self, uint64_t seed);

/* Folds every batch norm into its conv for inference; training is impossible after. */
void nn_model_prepare_inference(nn_model_t *self);

int nn_model_blocks(const nn_model_t *self);
int nn_model_classes(const nn_model_t *self);
int nn_model_max_batch(const nn_model_t *self);
const char *nn_model_name(const nn_model_t *self);
const char *nn_model_arch_json(const nn_model_t *self); /* owned by the model */
nn_shape_t nn_model_input_shape(const nn_model_t *self);
/* Shape of conv part k's output (the feature map that leaves block k). */
nn_shape_t nn_model_feature_shape(const nn_model_t *self, int k);
/* Forward multiply-adds x2 per sample of conv part k / branch k. */
double nn_model_conv_flops(const nn_model_t *self, int k);
double nn_model_branch_flops(const nn_model_t *self, int k);
/* Number of parameters (trainable values) of the whole model. */
size_t nn_model_param_count(const nn_model_t *self);

/* Runs conv part k (0-based) on x: the model input for k = 0, else the feature map of
 * block k-1 (which may be a tensor the model returned, or one received from elsewhere).
 * Returns the feature map in a model-owned buffer valid until conv part k runs again,
 * or NULL with err set for a wrong shape, too large a batch or a non-finite input. */
const nn_tensor_t *nn_model_conv(nn_model_t *self, int k, const nn_tensor_t *x,
                                 ei_err_t *err);

/* Runs branch k on feature map x of block k; writes x->n rows of K probabilities into
 * probs. Returns 0 or a negative code with err set. */
int nn_model_branch(nn_model_t *self, int k, const nn_tensor_t *x, float *probs,
                    ei_err_t *err) EI_CHECK;

/* Full forward: every exit's probabilities, probs[k * x->n * K + s * K + c]. */
int nn_model_forward(nn_model_t *self, const nn_tensor_t *x, float *probs,
                     ei_err_t *err) EI_CHECK;

/* The layers of conv part k (branch = 0) or branch k (branch = 1), for benchmarks and
 * tools that look inside; owned by the model. A layer folded away is still listed. */
int nn_model_part_layers(const nn_model_t *self, int k, int branch);
nn_layer_t *nn_model_part_layer(nn_model_t *self, int k, int branch, int i);

/* ---- training (model must not be prepared for inference) ---- */

/* Visits every parameter (trainable ones have grad != NULL) with its full name. */
typedef void (*nn_param_visit_fn)(const char *name, nn_param_t *param, void *arg);
void nn_model_visit_params(nn_model_t *self, nn_param_visit_fn fn, void *arg);

/* Training step's forward and backward for a batch: forward in training mode, the loss
 * sum_k weights[k] * CE_k (weights NULL = all 1), gradients added to the params' grads.
 * Writes each exit's mean loss into exit_loss[k] and correct count into exit_correct[k]
 * (either may be NULL). Returns the weighted loss. */
float nn_model_train_step(nn_model_t *self, const nn_tensor_t *x, const int *labels,
                          const float *weights, float *exit_loss, int *exit_correct);

/* Zeroes every gradient. */
void nn_model_zero_grad(nn_model_t *self);

#endif
