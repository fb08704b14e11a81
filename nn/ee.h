/* ee: the class-specific early exit of Bonato & Bouganis (Fig. 3). A branch e attached
 * after conv layer i of a frozen baseline B answers "is this sample of target class k?":
 * every tapped feature map goes through a ReLU and an adaptive average pool sized to its
 * input (to min(s, h, w) per side), is flattened, and the pooled taps are concatenated
 * (KP = on: the maps of layers 1..i, the dense connection; KP = off: layer i alone); one
 * dense layer and a softmax over {k, not k} follow. A sample is answered at the EE when
 * P(k) >= alpha.
 *
 * Layers and taps: "conv layer i" (1-based) is conv part i of B, and its tap is the feature
 * map nn_model_conv returns for part i - 1 (0-based). Each conv part of the shipped model
 * holds exactly one conv layer (conv + bn + relu [+ maxpool]); a model whose conv parts
 * hold several conv layers gets one attachment point per part.
 *
 * Training (ee_train) works on precomputed features: the ReLU and the pools have no
 * parameters and B is frozen, so the concatenated pooled taps of every sample are computed
 * once (ee_features) and only the dense layer is fitted.
 *
 * EE files are safetensors: tensors "dense.weight" [2, F] and "dense.bias" [2] (row 0 is
 * class k, row 1 "not k") and metadata format "einet-ee", version "1", target, layer, kp
 * ("on"/"off"), alpha, pooling ("avg:S"), features, backbone (the model file path),
 * backbone_name, backbone_fnv1a (of the model file's bytes, 16 hex digits), taps (the
 * tapped shapes, "CxHxW,..."), info (JSON with the search's figures, or "{}").
 *
 * Inference (the device node): ee_load, then after conv part ee_layer(ee) - 1 has run,
 * ee_check(ee, taps, &p_k, err) at batch 1; it allocates nothing. docs/ee.md. */
#ifndef NN_EE_H
#define NN_EE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/ei.h"
#include "layer.h"
#include "model.h"
#include "tensor.h"

#define EE_MAX_LAYERS 256
#define EE_FORMAT "einet-ee"
#define EE_CLASS_K 0     /* index of P(k) in the EE's two outputs */
#define EE_CLASS_NOT_K 1 /* index of P(not k) */

typedef struct ee_spec {
    int target;   /* class k, 0-based */
    int layer;    /* conv layer (= conv part) i, 1-based */
    int kp;       /* 1: taps of layers 1..i concatenated; 0: layer i alone */
    int pool;     /* adaptive average pool output side s (>= 1) */
    double alpha; /* acceptance threshold on P(k) */
} ee_spec_t;

typedef struct ee ee_t;

/* A new EE with zero weights. shapes[j] is the per-sample shape of conv layer j + 1's
 * output, for j = 0..spec->layer - 1 (with KP off only shapes[layer - 1] is used, but all
 * are given). Buffers are sized for max_batch samples. Caller owns the result; NULL with
 * err set (EI_E_INVAL / EI_E_SHAPE / EI_E_NOMEM) for a bad spec or shape. */
ee_t *ee_new(const ee_spec_t *spec, const nn_shape_t *shapes, int max_batch, ei_err_t *err);

/* ee_new with the shapes of B's conv parts 1..spec->layer. */
ee_t *ee_new_for_model(const ee_spec_t *spec, const nn_model_t *b, int max_batch, ei_err_t *err);

void ee_destroy(ee_t **self_p);

const ee_spec_t *ee_spec(const ee_t *self);
int ee_layer(const ee_t *self);
int ee_target(const ee_t *self);
double ee_alpha(const ee_t *self);
void ee_set_alpha(ee_t *self, double alpha);
int ee_max_batch(const ee_t *self);
/* Number of features F that enter the dense layer. */
int ee_features_count(const ee_t *self);
/* Forward multiply-adds x2 of the dense layer for one sample (pools: F adds more). */
double ee_flops(const ee_t *self);
/* The dense layer (weight [2, F], bias [2]); owned by the EE. */
nn_layer_t *ee_dense(ee_t *self);
/* He-normal dense weights from the seed, zero bias. */
void ee_init(ee_t *self, uint64_t seed);

/* Metadata a loaded EE carries (NULL/"" when absent); owned by the EE. */
const char *ee_backbone(const ee_t *self);
const char *ee_backbone_name(const ee_t *self);
const char *ee_backbone_fnv1a(const ee_t *self);
const char *ee_info(const ee_t *self);

/* The taps: taps[j] is conv layer j + 1's output, n samples (the same n for all), for
 * j = 0..layer - 1; with KP off only taps[layer - 1] is read and the others may be NULL. */

/* P(k) of every sample into p_k[0..n-1]; keeps the activations for ee_backward. 0, or
 * EI_E_SHAPE / EI_E_RANGE (a tap of the wrong shape, n > max_batch) with err set. */
int ee_forward(ee_t *self, const nn_tensor_t *const *taps, float *p_k, ei_err_t *err) EI_CHECK;

/* After ee_forward of the same taps: the mean cross-entropy of the two-way softmax against
 * is_k[s] (1: sample s is of class k), whose gradients are added to the dense layer's
 * grads; dL/dtaps[j] is written into dtaps[j] when dtaps and dtaps[j] are not NULL (same
 * shapes as the taps). Returns the loss. */
float ee_backward(ee_t *self, const nn_tensor_t *const *taps, const uint8_t *is_k,
                  nn_tensor_t *const *dtaps);

/* The device-side check at any batch <= max_batch (the node uses batch 1): P(k) of
 * sample 0 into *p_k; returns 1 when P(k) >= alpha, 0 when not, or a negative code with err
 * set for taps of the wrong shape. Allocates nothing. */
int ee_check(ee_t *self, const nn_tensor_t *const *taps, float *p_k, ei_err_t *err) EI_CHECK;

/* The concatenated pooled taps (the dense layer's input): F floats per sample into
 * feat + s * ld, s = 0..n-1. Same errors as ee_forward. */
int ee_features(ee_t *self, const nn_tensor_t *const *taps, float *feat, size_t ld,
                ei_err_t *err) EI_CHECK;

/* P(k) from precomputed features: rows feat + rows[r] * ld (rows NULL: r itself),
 * r = 0..n-1, into p_k[r]. Any n (processed in chunks of max_batch). */
void ee_head_probs(ee_t *self, const float *feat, size_t ld, const int *rows, int n, float *p_k);

/* Training of the dense layer alone on precomputed features, B frozen. */
typedef struct ee_train_data {
    const float *feat;    /* this EE's F features of row r at feat + r * ld */
    size_t ld;            /* row stride in floats (>= F) */
    const uint8_t *label; /* class of row r */
    const int *train_rows;
    int n_train;
    const int *val_rows;
    int n_val;
} ee_train_data_t;

typedef struct ee_train_opts {
    int max_epochs;      /* cap (default 200) */
    int patience;        /* stop after this many epochs without a better validation
                            balanced accuracy (default 10, as Bonato & Bouganis) */
    int batch;           /* default 128 */
    double lr;           /* Adam (default 3e-3) */
    double weight_decay; /* L2 on the dense weight (default 1e-4) */
    uint64_t seed;       /* initialisation and sampling */
} ee_train_opts_t;

typedef struct ee_train_result {
    int epochs;      /* epochs run */
    int best_epoch;  /* 1-based epoch whose weights were kept */
    double val_bacc; /* its validation balanced accuracy (mean of the recalls of k and
                        not k, P(k) >= 0.5 as the decision) */
    double seconds;
} ee_train_result_t;

void ee_train_opts_default(ee_train_opts_t *o);

/* Fits the dense layer: features standardised (mean and deviation from the training rows),
 * every epoch all class-k training rows and as many not-k rows drawn afresh (balanced
 * sampling, so e cannot learn "never k"), Adam on the cross-entropy; early stopping on the
 * validation balanced accuracy; the best weights are kept with the standardisation folded
 * into them, so the EE then reads raw features. 0, or EI_E_INVAL (no class-k or no other
 * training rows, options out of range) / EI_E_NOMEM / EI_E_NONFINITE with err set. res
 * may be NULL. */
int ee_train(ee_t *self, const ee_train_data_t *d, const ee_train_opts_t *o, ee_train_result_t *res,
             ei_err_t *err) EI_CHECK;

/* Where an EE belongs: the backbone's file path, name and fingerprint. */
typedef struct ee_backbone_ref {
    const char *path;
    const char *name;
    const char *fnv1a; /* 16 hex digits, or NULL */
} ee_backbone_ref_t;

/* FNV-1a 64 of a file's bytes as 16 hex digits into out[17]. 0, or EI_E_IO / EI_E_NOTFOUND. */
int ee_file_fnv1a(const char *path, char out[17], ei_err_t *err) EI_CHECK;

/* Writes the EE (weights, spec and metadata; info is a JSON object string or NULL).
 * 0 or a negative code with err set. */
int ee_save(const ee_t *self, const char *path, const ee_backbone_ref_t *bb, const char *info,
            ei_err_t *err) EI_CHECK;

/* Loads an EE file. With b not NULL, the tapped shapes recorded in the file must equal b's
 * conv-part outputs (EI_E_SHAPE naming the layer otherwise) and the target must be one of
 * b's classes. Metadata and tensors are checked (EI_E_FORMAT naming the file and the key
 * or tensor). Caller owns the result. */
ee_t *ee_load(const char *path, const nn_model_t *b, int max_batch, ei_err_t *err);

#endif
