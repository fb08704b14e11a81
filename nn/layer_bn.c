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

/* Over channel c of every sample: sum x (a == NULL) or sum (a - a0) * (x - x0). */
static double channel_dot(const nn_tensor_t *a, float a0, const nn_tensor_t *x, float x0, int c)
{
    size_t plane = (size_t)x->h * x->w, sample = nn_tensor_sample_numel(x);
    double acc = 0;
    for (int s = 0; s < x->n; s++) {
        size_t at = s * sample + c * plane;
        acc +=
            a ? plane_dot(a->data + at, a0, x->data + at, x0, plane) : nn__sum(x->data + at, plane);
    }
    return acc;
}

/* out = a * (x - x0) + b * z + c0 on channel c of every sample; z may be NULL (no b term)
 * and out may be x or z: each element is read before it is written. Centring x first keeps
 * precision when the mean is large against the spread. */
static void channel_affine(const nn_tensor_t *x, float x0, float a, const nn_tensor_t *z, float b,
                           float c0, nn_tensor_t *out, int c)
{
    size_t plane = (size_t)x->h * x->w, sample = nn_tensor_sample_numel(x);
    for (int s = 0; s < x->n; s++) {
        size_t at = s * sample + c * plane;
        const float *px = x->data + at;
        float *po = out->data + at;
        if (z)
            for (size_t i = 0; i < plane; i++)
                po[i] = a * (px[i] - x0) + b * z->data[at + i] + c0;
        else
            for (size_t i = 0; i < plane; i++)
                po[i] = a * (px[i] - x0) + c0;
    }
}

/* Batch mean and 1/sqrt(var + eps) of channel c; moves the running statistics. */
static void batch_stats(nn_layer_t *self, const nn_tensor_t *x, int c)
{
    double m = (double)x->n * x->h * x->w;
    float mean = (float)(channel_dot(NULL, 0, x, 0, c) / m);
    double var = channel_dot(x, mean, x, mean, c) / m;
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
    nn_tensor_t *y, *dx;
    int training;
} bn_job_t;

static void bn_forward_range(void *arg, size_t lo, size_t hi)
{
    const bn_job_t *j = arg;
    nn_layer_t *self = j->self;
    const float *gamma = self->params[GAMMA].value->data, *beta = self->params[BETA].value->data;
    const float *rm = self->params[RUNNING_MEAN].value->data;
    const float *rv = self->params[RUNNING_VAR].value->data;
    for (int c = (int)lo; c < (int)hi; c++) {
        float mean, invstd;
        if (j->training) {
            batch_stats(self, j->x, c);
            mean = self->batch_mean[c], invstd = self->batch_invstd[c];
        } else {
            mean = rm[c], invstd = 1.0f / sqrtf(rv[c] + NN_BN_EPS);
        }
        channel_affine(j->x, mean, gamma[c] * invstd, NULL, 0, beta[c], j->y, c);
    }
}

static void bn_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                       int training)
{
    (void)ws;
    bn_job_t j = {.self = self, .x = x, .y = y, .training = training};
    nn__parallel_range((size_t)self->in.c, self->threads, bn_forward_range, &j);
    if (training)
        self->have_batch = 1;
}

/* With xhat = (x - mean) * invstd and m values per channel:
 * dgamma = sum dy * xhat, dbeta = sum dy,
 * dx = gamma * invstd * (dy - dbeta / m - xhat * dgamma / m), affine in dy and x - mean. */
static void bn_backward_range(void *arg, size_t lo, size_t hi)
{
    const bn_job_t *j = arg;
    nn_layer_t *self = j->self;
    const nn_tensor_t *x = j->x, *dy = j->dy;
    const float *gamma = self->params[GAMMA].value->data;
    float *dgamma = self->params[GAMMA].grad->data, *dbeta = self->params[BETA].grad->data;
    double m = (double)x->n * x->h * x->w;
    for (int c = (int)lo; c < (int)hi; c++) {
        float mean = self->batch_mean[c], invstd = self->batch_invstd[c];
        double sdy = channel_dot(NULL, 0, dy, 0, c);
        double sdyx = channel_dot(dy, 0, x, mean, c) * invstd; /* sum dy * xhat */
        dgamma[c] += (float)sdyx;
        dbeta[c] += (float)sdy;
        if (!j->dx)
            continue;
        double k = gamma[c] * invstd, bx = -k * invstd * sdyx / m;
        channel_affine(x, mean, (float)bx, dy, (float)k, (float)(-k * sdy / m), j->dx, c);
    }
}

static void bn_backward(nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *y,
                        const nn_tensor_t *dy, nn_tensor_t *dx, float *ws)
{
    (void)y, (void)ws;
    EI_ASSERT(self->have_batch);
    bn_job_t j = {.self = self, .x = x, .dy = dy, .dx = dx};
    nn__parallel_range((size_t)self->in.c, self->threads, bn_backward_range, &j);
}

const nn_layer_ops_t nn__bn_ops = {bn_setup, NULL, NULL, bn_init, bn_forward, bn_backward, NULL};
