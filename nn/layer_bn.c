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

/* out = a * (x - x0) + b * z + c0 on channel c of every sample, or max(0, .) of it with
 * relu; z may be NULL (no b term) and out may be x or z: each element is read before it is
 * written. With mask, z counts only where mask > 0 (the gradient through a ReLU whose
 * output mask is). Centring x first keeps precision when the mean is large against the
 * spread. */
static void channel_affine(const nn_tensor_t *x, float x0, float a, const nn_tensor_t *z, float b,
                           float c0, nn_tensor_t *out, int c, int relu, const nn_tensor_t *mask)
{
    size_t plane = (size_t)x->h * x->w, sample = nn_tensor_sample_numel(x);
    for (int s = 0; s < x->n; s++) {
        size_t at = s * sample + c * plane;
        const float *px = x->data + at;
        float *po = out->data + at;
        if (z && mask) {
            const float *pz = z->data + at, *pm = mask->data + at;
            for (size_t i = 0; i < plane; i++) /* no branch: vectorises */
                po[i] = a * (px[i] - x0) + b * (pz[i] * (float)(pm[i] > 0)) + c0;
        } else if (z) {
            for (size_t i = 0; i < plane; i++)
                po[i] = a * (px[i] - x0) + b * z->data[at + i] + c0;
        } else if (relu) {
            for (size_t i = 0; i < plane; i++) {
                float v = a * (px[i] - x0) + c0;
                po[i] = v > 0 ? v : 0;
            }
        } else {
            for (size_t i = 0; i < plane; i++)
                po[i] = a * (px[i] - x0) + c0;
        }
    }
}

/* Over channel c of every sample, in one pass: *sdy = sum g and *sdyx = sum g * (x - x0),
 * g = dy, or dy where mask > 0 (mask may be NULL); in lanes as nn__sum, each plane's
 * lanes gathered into doubles. */
static void channel_grad_sums(const nn_tensor_t *dy, const nn_tensor_t *mask,
                              const nn_tensor_t *x, float x0, int c, double *sdy, double *sdyx)
{
    size_t plane = (size_t)x->h * x->w, sample = nn_tensor_sample_numel(x);
    double a = 0, b = 0;
    for (int s = 0; s < x->n; s++) {
        size_t at = s * sample + c * plane, i = 0;
        const float *pg = dy->data + at, *px = x->data + at;
        const float *pm = mask ? mask->data + at : NULL;
        float la[8] = {0}, lb[8] = {0};
        if (pm) /* apart, so that each loop vectorises */
            for (; i + 8 <= plane; i += 8)
                for (int l = 0; l < 8; l++) {
                    float g = pg[i + l] * (float)(pm[i + l] > 0); /* no branch: vectorises */
                    la[l] += g;
                    lb[l] += g * (px[i + l] - x0);
                }
        else
            for (; i + 8 <= plane; i += 8)
                for (int l = 0; l < 8; l++) {
                    la[l] += pg[i + l];
                    lb[l] += pg[i + l] * (px[i + l] - x0);
                }
        for (; i < plane; i++) {
            float g = pg[i];
            g = pm && !(pm[i] > 0) ? 0 : g;
            a += g;
            b += (double)g * (px[i] - x0);
        }
        for (int l = 0; l < 8; l++) {
            a += la[l];
            b += lb[l];
        }
    }
    *sdy = a;
    *sdyx = b;
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
    const nn_tensor_t *mask; /* backward through a ReLU: its output */
    nn_tensor_t *y, *dx;
    int training, relu;
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
        channel_affine(j->x, mean, gamma[c] * invstd, NULL, 0, beta[c], j->y, c, j->relu, NULL);
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
    const nn_tensor_t *x = j->x, *dy = j->dy;
    const float *gamma = self->params[GAMMA].value->data;
    float *dgamma = self->params[GAMMA].grad->data, *dbeta = self->params[BETA].grad->data;
    double m = (double)x->n * x->h * x->w;
    for (int c = (int)lo; c < (int)hi; c++) {
        float mean = self->batch_mean[c], invstd = self->batch_invstd[c];
        double sdy, sdyx;
        channel_grad_sums(dy, j->mask, x, mean, c, &sdy, &sdyx);
        sdyx *= invstd; /* sum dy * xhat */
        dgamma[c] += (float)sdyx;
        dbeta[c] += (float)sdy;
        if (!j->dx)
            continue;
        double k = gamma[c] * invstd, bx = -k * invstd * sdyx / m;
        channel_affine(x, mean, (float)bx, dy, (float)k, (float)(-k * sdy / m), j->dx, c, 0,
                       j->mask);
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
