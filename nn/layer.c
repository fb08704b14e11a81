/* The layer object: construction with spec checks, parameters, dispatch of forward and
 * backward to the per-kind operations, batch-norm folding and feature concatenation. */
#include "layer_internal.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[NN_KIND_COUNT] = {
    [NN_CONV] = "conv",       [NN_BN] = "bn",   [NN_RELU] = "relu",   [NN_MAXPOOL] = "maxpool",
    [NN_AVGPOOL] = "avgpool", [NN_GAP] = "gap", [NN_DENSE] = "dense", [NN_FLATTEN] = "flatten",
    [NN_RESIDUAL] = "residual", [NN_DROPOUT] = "dropout",
};

static const nn_layer_ops_t *const kind_ops[NN_KIND_COUNT] = {
    [NN_CONV] = &nn__conv_ops,       [NN_BN] = &nn__bn_ops,           [NN_RELU] = &nn__relu_ops,
    [NN_MAXPOOL] = &nn__maxpool_ops, [NN_AVGPOOL] = &nn__avgpool_ops, [NN_GAP] = &nn__gap_ops,
    [NN_DENSE] = &nn__dense_ops,     [NN_FLATTEN] = &nn__flatten_ops,
    [NN_RESIDUAL] = &nn__residual_ops, [NN_DROPOUT] = &nn__dropout_ops,
};

int nn_kind_from_name(const char *name)
{
    for (int i = 0; name && i < NN_KIND_COUNT; i++)
        if (strcmp(name, kind_names[i]) == 0)
            return i;
    return -1;
}

const char *nn_kind_name(nn_kind_t kind)
{
    return (unsigned)kind < NN_KIND_COUNT ? kind_names[kind] : "unknown";
}

void nn__fill(float *a, size_t n, float v)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) /* blocks of 8 vectorise at -O2 too */
        for (int l = 0; l < 8; l++)
            a[i + l] = v;
    for (; i < n; i++)
        a[i] = v;
}

double nn__sum(const float *x, size_t n)
{
    float lane[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            lane[l] += x[i + l];
    double acc = 0;
    for (; i < n; i++)
        acc += x[i];
    for (int l = 0; l < 8; l++)
        acc += lane[l];
    return acc;
}

int nn__layer_add_param(nn_layer_t *self, const char *name, int ndim, int n, int c, int h, int w,
                        int trainable)
{
    EI_ASSERT(self->nparams < NN_LAYER_MAX_PARAMS);
    nn_param_t *p = &self->params[self->nparams];
    p->name = name;
    p->ndim = ndim;
    p->value = nn_tensor_new(n, c, h, w);
    p->grad = trainable ? nn_tensor_new(n, c, h, w) : NULL;
    self->nparams++; /* counted even when half made, so destroy frees it */
    return p->value && (p->grad || !trainable) ? 0 : EI_E_NOMEM;
}

int nn__window_setup(nn_layer_t *self, const char *what, ei_err_t *err)
{
    const nn_layer_spec_t *sp = &self->spec;
    if (sp->k < 1)
        return ei_err_set(err, EI_E_INVAL, "%s: kernel %d must be at least 1", what, sp->k);
    if (sp->stride < 0)
        return ei_err_set(err, EI_E_INVAL, "%s: stride %d must not be negative", what, sp->stride);
    if (sp->pad < 0 || sp->pad >= sp->k)
        return ei_err_set(err, EI_E_INVAL, "%s: padding %d must be in [0, kernel %d)", what,
                          sp->pad, sp->k);
    long long ph = self->in.h + 2LL * sp->pad, pw = self->in.w + 2LL * sp->pad;
    if (ph < sp->k || pw < sp->k)
        return ei_err_set(err, EI_E_SHAPE, "%s: kernel %d with padding %d does not fit input %dx%d",
                          what, sp->k, sp->pad, self->in.h, self->in.w);
    self->stride = sp->stride ? sp->stride : (self->spec.kind == NN_CONV ? 1 : sp->k);
    self->out.h = (int)((ph - sp->k) / self->stride + 1);
    self->out.w = (int)((pw - sp->k) / self->stride + 1);
    return 0;
}

/* Sizes the BLAS calls and tensors can index with an int. */
static int check_sizes(const nn_layer_t *self, ei_err_t *err)
{
    double weights = self->nparams ? (double)nn_tensor_numel(self->params[0].value) : 0;
    if ((double)nn_shape_numel(self->in) > INT_MAX || (double)nn_shape_numel(self->out) > INT_MAX ||
        weights > INT_MAX)
        return ei_err_set(err, EI_E_SHAPE, "%s: input %dx%dx%d gives sizes too large",
                          nn_kind_name(self->spec.kind), self->in.c, self->in.h, self->in.w);
    return 0;
}

static int check_weight_count(const nn_layer_spec_t *sp, nn_shape_t in, ei_err_t *err)
{
    int groups = sp->groups > 0 ? sp->groups : 1;
    double fan_in =
        sp->kind == NN_CONV ? (double)in.c / groups * sp->k * sp->k : (double)nn_shape_numel(in);
    if (fan_in * sp->out > INT_MAX)
        return ei_err_set(err, EI_E_SHAPE, "%s: %d outputs of fan-in %.0f are too many weights",
                          nn_kind_name(sp->kind), sp->out, fan_in);
    return 0;
}

nn_layer_t *nn_layer_new(const nn_layer_spec_t *spec, nn_shape_t in, ei_err_t *err)
{
    if ((unsigned)spec->kind >= NN_KIND_COUNT) {
        ei_err_set(err, EI_E_INVAL, "unknown layer kind %d", (int)spec->kind);
        return NULL;
    }
    if (in.c < 1 || in.h < 1 || in.w < 1) {
        ei_err_set(err, EI_E_SHAPE, "%s: input shape %dx%dx%d has a dimension below 1",
                   nn_kind_name(spec->kind), in.c, in.h, in.w);
        return NULL;
    }
    if ((spec->kind == NN_CONV || spec->kind == NN_DENSE) && spec->out < 1) {
        ei_err_set(err, EI_E_INVAL, "%s: %d outputs, need at least 1", nn_kind_name(spec->kind),
                   spec->out);
        return NULL;
    }
    if ((spec->kind == NN_CONV && spec->k >= 1) || spec->kind == NN_DENSE)
        if (check_weight_count(spec, in, err))
            return NULL;
    nn_layer_t *self = calloc(1, sizeof *self);
    if (!self) {
        ei_err_set(err, EI_E_NOMEM, "%s: out of memory", nn_kind_name(spec->kind));
        return NULL;
    }
    self->spec = *spec;
    self->ops = kind_ops[spec->kind];
    self->threads = nn_threads();
    self->in = self->out = in;
    int rc = self->ops->setup(self, err);
    if (rc == EI_E_NOMEM)
        ei_err_set(err, rc, "%s: out of memory for parameters", nn_kind_name(spec->kind));
    if (rc || check_sizes(self, err))
        goto fail;
    return self;
fail:
    nn_layer_destroy(&self);
    return NULL;
}

void nn_layer_destroy(nn_layer_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nn_layer_t *self = *self_p;
    if (self->ops && self->ops->destroy)
        self->ops->destroy(self);
    for (int i = 0; i < self->nxparams; i++)
        free((char *)self->xparams[i].name);
    free(self->xparams);
    for (int i = 0; i < self->nparams; i++) {
        nn_tensor_destroy(&self->params[i].value);
        nn_tensor_destroy(&self->params[i].grad);
    }
    free(self->batch_mean);
    free(self->batch_invstd);
    free(self->wino);
    free(self);
    *self_p = NULL;
}

const nn_layer_spec_t *nn_layer_spec(const nn_layer_t *self)
{
    return &self->spec;
}

nn_shape_t nn_layer_in_shape(const nn_layer_t *self)
{
    return self->in;
}

nn_shape_t nn_layer_out_shape(const nn_layer_t *self)
{
    return self->out;
}

int nn_layer_param_count(const nn_layer_t *self)
{
    return self->xparams ? self->nxparams : self->nparams;
}

nn_param_t *nn_layer_param(nn_layer_t *self, int i)
{
    EI_ASSERT(i >= 0 && i < nn_layer_param_count(self));
    return self->xparams ? &self->xparams[i] : &self->params[i];
}

void nn_layer_zero_grad(nn_layer_t *self)
{
    for (int i = 0; i < nn_layer_param_count(self); i++) {
        nn_param_t *p = nn_layer_param(self, i);
        if (p->grad)
            nn__fill(p->grad->data, nn_tensor_numel(p->grad), 0);
    }
}

void nn_layer_init(nn_layer_t *self, ei_rng_t *rng)
{
    if (self->ops->init)
        self->ops->init(self, rng);
}

size_t nn_layer_workspace(const nn_layer_t *self, int n)
{
    return self->ops->workspace ? self->ops->workspace(self, n) : 0;
}

double nn_layer_flops(const nn_layer_t *self)
{
    return self->ops->flops ? self->ops->flops(self) : 0;
}

static void check_tensor(const nn_tensor_t *t, int n, nn_shape_t s)
{
    EI_ASSERT(t && t->data && n >= 1 && t->n == n && t->c == s.c && t->h == s.h && t->w == s.w);
}

void nn_layer_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                      int training)
{
    check_tensor(x, x->n, self->in);
    check_tensor(y, x->n, self->out);
    EI_ASSERT(ws || nn_layer_workspace(self, x->n) == 0);
    self->ops->forward(self, x, y, ws, training);
}

void nn_layer_prepare_inference(nn_layer_t *self)
{
    if (self->spec.kind == NN_RESIDUAL)
        nn__residual_prepare(self);
    else if (self->spec.kind == NN_CONV)
        nn__wino_prepare(self);
}

void nn__layer_forward_relu(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                            int training)
{
    EI_ASSERT(self->spec.kind == NN_CONV);
    check_tensor(x, x->n, self->in);
    check_tensor(y, x->n, self->out);
    EI_ASSERT(ws || nn_layer_workspace(self, x->n) == 0);
    nn__conv_forward(self, x, y, ws, 1, training);
}

void nn_layer_backward(nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *y,
                       const nn_tensor_t *dy, nn_tensor_t *dx, float *ws)
{
    check_tensor(x, x->n, self->in);
    check_tensor(y, x->n, self->out);
    check_tensor(dy, x->n, self->out);
    if (dx)
        check_tensor(dx, x->n, self->in);
    EI_ASSERT(ws || nn_layer_workspace(self, x->n) == 0);
    self->ops->backward(self, x, y, dy, dx, ws);
}

int nn_layer_fold_bn(nn_layer_t *conv, const nn_layer_t *bn)
{
    if (!conv || !bn || conv->spec.kind != NN_CONV || bn->spec.kind != NN_BN ||
        bn->in.c != conv->out.c)
        return EI_E_INVAL;
    float *w = conv->params[0].value->data, *b = conv->params[1].value->data;
    const float *gamma = bn->params[0].value->data, *beta = bn->params[1].value->data;
    const float *mean = bn->params[2].value->data, *var = bn->params[3].value->data;
    size_t fan_in = (size_t)(conv->in.c / conv->groups) * conv->spec.k * conv->spec.k;
    for (int o = 0; o < conv->out.c; o++) {
        float scale = gamma[o] / sqrtf(var[o] + NN_BN_EPS);
        for (size_t j = 0; j < fan_in; j++)
            w[o * fan_in + j] *= scale;
        b[o] = (b[o] - mean[o]) * scale + beta[o];
    }
    return 0;
}

/* Copies between each sample of y and the same sample of every x_i, in order: x into y
 * (to_y) or y back into the x. */
static void concat_walk(const nn_tensor_t *y, const nn_tensor_t *const *xs, int count, int to_y)
{
    size_t fy = nn_tensor_sample_numel(y), off = 0;
    for (int i = 0; i < count; i++) {
        size_t fx = nn_tensor_sample_numel(xs[i]);
        EI_ASSERT(xs[i]->n == y->n && off + fx <= fy);
        for (int s = 0; s < y->n; s++) {
            float *py = y->data + s * fy + off, *px = xs[i]->data + s * fx;
            memcpy(to_y ? py : px, to_y ? px : py, fx * sizeof(float));
        }
        off += fx;
    }
    EI_ASSERT(off == fy);
}

void nn_concat_forward(const nn_tensor_t *const *xs, int count, nn_tensor_t *y)
{
    concat_walk(y, xs, count, 1);
}

void nn_concat_backward(const nn_tensor_t *dy, nn_tensor_t *const *dxs, int count)
{
    concat_walk(dy, (const nn_tensor_t *const *)dxs, count, 0);
}
