/* Batch normalisation over channels, as PyTorch's BatchNorm2d: training normalises with
 * the batch statistics (biased variance) and moves the running ones toward them with
 * momentum 0.1 (unbiased variance); evaluation uses the running statistics. Every pass is
 * a per-channel affine map y = a * x + b, so the inner loops are plain axpy-like sweeps. */
#include "layer_internal.h"

#include <math.h>
#include <stdlib.h>

enum { GAMMA, BETA, RUNNING_MEAN, RUNNING_VAR };

static int bn_setup(nn_layer_t *self, ei_err_t *err)
{
    (void)err;
    int c = self->in.c, rc = 0;
    static const char *const names[] = {"gamma", "beta", "running_mean", "running_var"};
    for (int i = GAMMA; i <= RUNNING_VAR && !rc; i++)
        rc = nn__layer_add_param(self, names[i], 1, c, 1, 1, 1, i <= BETA);
    if (rc)
        return rc;
    self->batch_mean = calloc((size_t)c, sizeof(float));
    self->batch_invstd = calloc((size_t)c, sizeof(float));
    if (!self->batch_mean || !self->batch_invstd)
        return EI_E_NOMEM;
    nn__fill(self->params[GAMMA].value->data, (size_t)c, 1);
    nn__fill(self->params[RUNNING_VAR].value->data, (size_t)c, 1);
    return 0;
}

static void bn_init(nn_layer_t *self, ei_rng_t *rng)
{
    (void)rng;
    size_t c = (size_t)self->in.c;
    nn__fill(self->params[GAMMA].value->data, c, 1);
    nn__fill(self->params[BETA].value->data, c, 0);
    nn__fill(self->params[RUNNING_MEAN].value->data, c, 0);
    nn__fill(self->params[RUNNING_VAR].value->data, c, 1);
}

/* sum over i < n of (a[i] - a0) * (x[i] - x0), in lanes as nn__sum. */
static double plane_dot(const float *a, float a0, const float *x, float x0, size_t n)
{
    float lane[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            lane[l] += (a[i + l] - a0) * (x[i + l] - x0);
    double acc = 0;
    for (; i < n; i++)
        acc += (double)(a[i] - a0) * (x[i] - x0);
    for (int l = 0; l < 8; l++)
        acc += lane[l];
    return acc;
}

/* out = a * (x - x0) + b * z + c0 over one plane of n values, or max(0, .) of it with
 * relu; z may be NULL (no b term) and out may be x or z: each element is read before it is
 * written. With mask, z counts only where mask > 0 (the gradient through a ReLU whose
 * output mask is). Centring x first keeps precision when the mean is large against the
 * spread. */
static void plane_affine(const float *px, float x0, float a, const float *pz, float b, float c0,
                         float *po, size_t n, int relu, const float *pm)
{
    if (pz && pm) {
        for (size_t i = 0; i < n; i++) /* no branch: vectorises */
            po[i] = a * (px[i] - x0) + b * (pz[i] * (float)(pm[i] > 0)) + c0;
    } else if (pz) {
        for (size_t i = 0; i < n; i++)
            po[i] = a * (px[i] - x0) + b * pz[i] + c0;
    } else if (relu) {
        for (size_t i = 0; i < n; i++) {
            float v = a * (px[i] - x0) + c0;
            po[i] = v > 0 ? v : 0;
        }
    } else {
        for (size_t i = 0; i < n; i++)
            po[i] = a * (px[i] - x0) + c0;
    }
}

/* Over one plane of n values, in one pass: *sdy += sum g and *sdyx += sum g * (x - x0),
 * g = dy, or dy where mask > 0 (pm may be NULL); in lanes as nn__sum, gathered into the
 * doubles. */
static void plane_grad_sums(const float *pg, const float *pm, const float *px, float x0,
                            size_t n, double *sdy, double *sdyx)
{
    size_t i = 0;
    float la[8] = {0}, lb[8] = {0};
    if (pm) /* apart, so that each loop vectorises */
        for (; i + 8 <= n; i += 8)
            for (int l = 0; l < 8; l++) {
                float g = pg[i + l] * (float)(pm[i + l] > 0); /* no branch: vectorises */
                la[l] += g;
                lb[l] += g * (px[i + l] - x0);
            }
    else
        for (; i + 8 <= n; i += 8)
            for (int l = 0; l < 8; l++) {
                la[l] += pg[i + l];
                lb[l] += pg[i + l] * (px[i + l] - x0);
            }
    double a = *sdy, b = *sdyx;
    for (; i < n; i++) {
        float g = pg[i];
        g = pm && !(pm[i] > 0) ? 0 : g;
        a += g;
        b += (double)g * (px[i] - x0);
    }
    for (int l = 0; l < 8; l++) {
        a += la[l];
        b += lb[l];
    }
    *sdy = a;
    *sdyx = b;
}

/* Channels a sweep takes at once. Every pass walks the batch sample by sample and, in each
 * sample, this many consecutive channels' planes: one stream through memory. Channel by
 * channel (each a plane per sample, strided over the batch) ran at 3-9 GB/s, worst on 7x7
 * maps where a plane is a few cache lines. The sums per channel are the same, in the same
 * order. */
#define BN_CHUNK 64

/* Sets channel c's batch mean and 1/sqrt(var + eps) and moves the running statistics (m
 * values per channel). */
static void set_stats(nn_layer_t *self, int c, float mean, double var, double m)
{
    self->batch_mean[c] = mean;
    self->batch_invstd[c] = (float)(1.0 / sqrt(var + NN_BN_EPS));
    float *rm = self->params[RUNNING_MEAN].value->data, *rv = self->params[RUNNING_VAR].value->data;
    double unbiased = m > 1 ? var * m / (m - 1) : var;
    rm[c] = (1 - NN_BN_MOMENTUM) * rm[c] + NN_BN_MOMENTUM * mean;
    rv[c] = (float)((1 - NN_BN_MOMENTUM) * rv[c] + NN_BN_MOMENTUM * unbiased);
}

/* A pass over channels [lo, hi): forward (dy == NULL) or backward. */
typedef struct bn_job {
    nn_layer_t *self;
    const nn_tensor_t *x, *dy;
    const nn_tensor_t *mask; /* backward through a ReLU: its output */
    nn_tensor_t *y, *dx;
    int training, relu;
} bn_job_t;

/* Batch statistics of channels [c0, c0 + nc): the mean, then the centred sum of squares. */
static void batch_stats(nn_layer_t *self, const nn_tensor_t *x, int c0, int nc)
{
    size_t plane = (size_t)x->h * x->w, sample = nn_tensor_sample_numel(x);
    double m = (double)x->n * plane, acc[BN_CHUNK] = {0};
    float mean[BN_CHUNK];
    for (int s = 0; s < x->n; s++)
        for (int k = 0; k < nc; k++)
            acc[k] += nn__sum(x->data + s * sample + (size_t)(c0 + k) * plane, plane);
    for (int k = 0; k < nc; k++) {
        mean[k] = (float)(acc[k] / m);
        acc[k] = 0;
    }
    for (int s = 0; s < x->n; s++)
        for (int k = 0; k < nc; k++) {
            const float *px = x->data + s * sample + (size_t)(c0 + k) * plane;
            acc[k] += plane_dot(px, mean[k], px, mean[k], plane);
        }
    for (int k = 0; k < nc; k++)
        set_stats(self, c0 + k, mean[k], acc[k] / m, m);
}

static void bn_forward_range(void *arg, size_t lo, size_t hi)
{
    const bn_job_t *j = arg;
    nn_layer_t *self = j->self;
    const nn_tensor_t *x = j->x;
    const float *gamma = self->params[GAMMA].value->data, *beta = self->params[BETA].value->data;
    const float *rm = self->params[RUNNING_MEAN].value->data;
    const float *rv = self->params[RUNNING_VAR].value->data;
    size_t plane = (size_t)x->h * x->w, sample = nn_tensor_sample_numel(x);
    for (int c0 = (int)lo; c0 < (int)hi; c0 += BN_CHUNK) {
        int nc = (int)hi - c0 < BN_CHUNK ? (int)hi - c0 : BN_CHUNK;
        float mean[BN_CHUNK], scale[BN_CHUNK];
        if (j->training)
            batch_stats(self, x, c0, nc);
        for (int k = 0; k < nc; k++) {
            int c = c0 + k;
            float invstd = j->training ? self->batch_invstd[c] : 1.0f / sqrtf(rv[c] + NN_BN_EPS);
            mean[k] = j->training ? self->batch_mean[c] : rm[c];
            scale[k] = gamma[c] * invstd;
        }
        for (int s = 0; s < x->n; s++)
            for (int k = 0; k < nc; k++) {
                size_t at = s * sample + (size_t)(c0 + k) * plane;
                plane_affine(x->data + at, mean[k], scale[k], NULL, 0, beta[c0 + k],
                             j->y->data + at, plane, j->relu, NULL);
            }
    }
}

void nn__bn_forward_relu(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, int training,
                         int relu)
{
    EI_ASSERT(self->spec.kind == NN_BN && x->n == y->n && x->c == self->in.c &&
              y->c == self->in.c && x->h == y->h && x->w == y->w);
    bn_job_t j = {.self = self, .x = x, .y = y, .training = training, .relu = relu};
    nn__parallel_range((size_t)self->in.c, self->threads, bn_forward_range, &j);
    if (training)
        self->have_batch = 1;
}

static void bn_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                       int training)
{
    (void)ws;
    nn__bn_forward_relu(self, x, y, training, 0);
}

/* With xhat = (x - mean) * invstd and m values per channel:
 * dgamma = sum dy * xhat, dbeta = sum dy,
 * dx = gamma * invstd * (dy - dbeta / m - xhat * dgamma / m), affine in dy and x - mean. */
static void bn_backward_range(void *arg, size_t lo, size_t hi)
{
    const bn_job_t *j = arg;
    nn_layer_t *self = j->self;
    const nn_tensor_t *x = j->x, *dy = j->dy, *mask = j->mask;
    const float *gamma = self->params[GAMMA].value->data;
    float *dgamma = self->params[GAMMA].grad->data, *dbeta = self->params[BETA].grad->data;
    size_t plane = (size_t)x->h * x->w, sample = nn_tensor_sample_numel(x);
    double m = (double)x->n * plane;
    for (int c0 = (int)lo; c0 < (int)hi; c0 += BN_CHUNK) {
        int nc = (int)hi - c0 < BN_CHUNK ? (int)hi - c0 : BN_CHUNK;
        double sdy[BN_CHUNK] = {0}, sdyx[BN_CHUNK] = {0};
        for (int s = 0; s < x->n; s++)
            for (int k = 0; k < nc; k++) {
                size_t at = s * sample + (size_t)(c0 + k) * plane;
                plane_grad_sums(dy->data + at, mask ? mask->data + at : NULL, x->data + at,
                                self->batch_mean[c0 + k], plane, &sdy[k], &sdyx[k]);
            }
        float a[BN_CHUNK], b[BN_CHUNK], c1[BN_CHUNK];
        for (int k = 0; k < nc; k++) {
            int c = c0 + k;
            float invstd = self->batch_invstd[c];
            sdyx[k] *= invstd; /* sum dy * xhat */
            dgamma[c] += (float)sdyx[k];
            dbeta[c] += (float)sdy[k];
            double kk = gamma[c] * invstd;
            a[k] = (float)(-kk * invstd * sdyx[k] / m);
            b[k] = (float)kk;
            c1[k] = (float)(-kk * sdy[k] / m);
        }
        for (int s = 0; j->dx && s < x->n; s++)
            for (int k = 0; k < nc; k++) {
                size_t at = s * sample + (size_t)(c0 + k) * plane;
                plane_affine(x->data + at, self->batch_mean[c0 + k], a[k], dy->data + at, b[k],
                             c1[k], j->dx->data + at, plane, 0, mask ? mask->data + at : NULL);
            }
    }
}

static void bn_backward(nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *y,
                        const nn_tensor_t *dy, nn_tensor_t *dx, float *ws)
{
    (void)y, (void)ws;
    nn__bn_backward_relu(self, x, NULL, dy, dx);
}

void nn__bn_backward_relu(nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *mask,
                          const nn_tensor_t *dy, nn_tensor_t *dx)
{
    EI_ASSERT(self->have_batch && self->spec.kind == NN_BN && x->c == self->in.c &&
              dy->n == x->n && dy->c == x->c && dy->h == x->h && dy->w == x->w);
    EI_ASSERT(!mask || (mask->n == x->n && mask->c == x->c && mask->h == x->h &&
                        mask->w == x->w));
    EI_ASSERT(!dx || (dx->n == x->n && dx->c == x->c && dx->h == x->h && dx->w == x->w));
    bn_job_t j = {.self = self, .x = x, .dy = dy, .dx = dx, .mask = mask};
    nn__parallel_range((size_t)self->in.c, self->threads, bn_backward_range, &j);
}

const nn_layer_ops_t nn__bn_ops = {bn_setup, NULL, NULL, bn_init, bn_forward, bn_backward, NULL};
