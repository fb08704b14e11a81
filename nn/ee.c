/* The class-specific early exit branch: ReLU and an adaptive average pool per tapped map,
 * concatenation, one dense layer, a two-way softmax; its training on precomputed features
 * and its files. */
#include "ee.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors.h"

#define EE_VERSION "1"
#define EE_STATS_ROWS 20000 /* training rows the standardisation statistics come from */

/* One tapped map's path into the concatenation. */
typedef struct ee_tap {
    nn_layer_t *relu, *pool;
    nn_tensor_t *r, *p;   /* relu and pool outputs, max_batch samples */
    nn_tensor_t *dr, *dp; /* their gradients */
} ee_tap_t;

struct ee {
    ee_spec_t spec;
    int max_batch;
    int first, ntaps; /* taps used: first .. first + ntaps - 1 (0-based layers) */
    nn_shape_t shapes[EE_MAX_LAYERS];
    ee_tap_t *taps;
    nn_layer_t *dense;
    int features;
    nn_tensor_t *feat, *dfeat; /* (max_batch, F, 1, 1) */
    nn_tensor_t *logits, *dlogits;
    float *probs;
    float *ws;
    char *backbone, *backbone_name, *backbone_fnv1a, *info;
};

static nn_tensor_t view_n(const nn_tensor_t *t, int n)
{
    return nn_tensor_view(t->data, n, t->c, t->h, t->w);
}

static int check_spec(const ee_spec_t *spec, ei_err_t *err)
{
    if (spec->layer < 1 || spec->layer > EE_MAX_LAYERS)
        return ei_err_set(err, EI_E_INVAL, "ee: layer %d is not in [1, %d]", spec->layer,
                          EE_MAX_LAYERS);
    if (spec->target < 0)
        return ei_err_set(err, EI_E_INVAL, "ee: target class %d is negative", spec->target);
    if (spec->kp != 0 && spec->kp != 1)
        return ei_err_set(err, EI_E_INVAL, "ee: kp must be 0 or 1, not %d", spec->kp);
    if (spec->pool < 1)
        return ei_err_set(err, EI_E_INVAL, "ee: pooling side %d is not positive", spec->pool);
    if (!isfinite(spec->alpha) || spec->alpha < 0 || spec->alpha > 1)
        return ei_err_set(err, EI_E_INVAL, "ee: alpha %g is not in [0, 1]", spec->alpha);
    return 0;
}

static int min3(int a, int b, int c)
{
    int m = a < b ? a : b;
    return m < c ? m : c;
}

static int tap_init(ee_tap_t *t, nn_shape_t in, int pool, int max_batch, ei_err_t *err)
{
    nn_layer_spec_t rs = {.kind = NN_RELU};
    nn_layer_spec_t ps = {.kind = NN_AVGPOOL, .size = min3(pool, in.h, in.w)};
    t->relu = nn_layer_new(&rs, in, err);
    t->pool = t->relu ? nn_layer_new(&ps, in, err) : NULL;
    if (!t->pool)
        return err ? err->code : EI_E_INVAL;
    nn_shape_t o = nn_layer_out_shape(t->pool);
    t->r = nn_tensor_new(max_batch, in.c, in.h, in.w);
    t->dr = nn_tensor_new(max_batch, in.c, in.h, in.w);
    t->p = nn_tensor_new(max_batch, o.c, o.h, o.w);
    t->dp = nn_tensor_new(max_batch, o.c, o.h, o.w);
    if (!t->r || !t->dr || !t->p || !t->dp)
        return ei_err_set(err, EI_E_NOMEM, "ee: out of memory for a %dx%dx%d tap", in.c, in.h,
                          in.w);
    return 0;
}

static void tap_free(ee_tap_t *t)
{
    nn_layer_destroy(&t->relu);
    nn_layer_destroy(&t->pool);
    nn_tensor_destroy(&t->r);
    nn_tensor_destroy(&t->dr);
    nn_tensor_destroy(&t->p);
    nn_tensor_destroy(&t->dp);
}

static size_t max_size(size_t a, size_t b)
{
    return a > b ? a : b;
}

/* The dense layer, its activation buffers and the shared workspace. */
static int head_init(ee_t *self, ei_err_t *err)
{
    nn_layer_spec_t ds = {.kind = NN_DENSE, .out = 2};
    self->dense = nn_layer_new(&ds, (nn_shape_t){self->features, 1, 1}, err);
    if (!self->dense)
        return err ? err->code : EI_E_INVAL;
    int b = self->max_batch;
    self->feat = nn_tensor_new(b, self->features, 1, 1);
    self->dfeat = nn_tensor_new(b, self->features, 1, 1);
    self->logits = nn_tensor_new(b, 2, 1, 1);
    self->dlogits = nn_tensor_new(b, 2, 1, 1);
    self->probs = ei_calloc((size_t)b * 2, sizeof(float));
    size_t ws = nn_layer_workspace(self->dense, b);
    for (int j = 0; j < self->ntaps; j++) {
        ws = max_size(ws, nn_layer_workspace(self->taps[j].relu, b));
        ws = max_size(ws, nn_layer_workspace(self->taps[j].pool, b));
    }
    self->ws = ei_calloc(ws + 1, sizeof(float));
    if (!self->feat || !self->dfeat || !self->logits || !self->dlogits || !self->probs || !self->ws)
        return ei_err_set(err, EI_E_NOMEM, "ee: out of memory for %d features", self->features);
    return 0;
}

ee_t *ee_new(const ee_spec_t *spec, const nn_shape_t *shapes, int max_batch, ei_err_t *err)
{
    if (check_spec(spec, err))
        return NULL;
    if (max_batch < 1) {
        ei_err_set(err, EI_E_INVAL, "ee: max_batch %d is not positive", max_batch);
        return NULL;
    }
    ee_t *self = ei_calloc(1, sizeof *self);
    if (!self) {
        ei_err_set(err, EI_E_NOMEM, "ee: out of memory");
        return NULL;
    }
    self->spec = *spec;
    self->max_batch = max_batch;
    self->first = spec->kp ? 0 : spec->layer - 1;
    self->ntaps = spec->kp ? spec->layer : 1;
    memcpy(self->shapes, shapes, (size_t)spec->layer * sizeof *shapes);
    self->taps = ei_calloc((size_t)self->ntaps, sizeof *self->taps);
    if (!self->taps) {
        ei_err_set(err, EI_E_NOMEM, "ee: out of memory");
        goto fail;
    }
    for (int j = 0; j < self->ntaps; j++) {
        nn_shape_t in = shapes[self->first + j];
        if (tap_init(&self->taps[j], in, spec->pool, max_batch, err)) {
            ei_err_prefix(err, "ee: layer %d: ", self->first + j + 1);
            goto fail;
        }
        self->features += (int)nn_shape_numel(nn_layer_out_shape(self->taps[j].pool));
    }
    if (head_init(self, err))
        goto fail;
    return self;
fail:
    ee_destroy(&self);
    return NULL;
}

ee_t *ee_new_for_model(const ee_spec_t *spec, const nn_model_t *b, int max_batch, ei_err_t *err)
{
    if (check_spec(spec, err))
        return NULL;
    if (spec->layer > nn_model_blocks(b)) {
        ei_err_set(err, EI_E_INVAL, "ee: layer %d is beyond the model's %d conv parts", spec->layer,
                   nn_model_blocks(b));
        return NULL;
    }
    if (spec->target >= nn_model_classes(b)) {
        ei_err_set(err, EI_E_INVAL, "ee: target class %d is not one of the model's %d",
                   spec->target, nn_model_classes(b));
        return NULL;
    }
    nn_shape_t shapes[EE_MAX_LAYERS];
    for (int j = 0; j < spec->layer; j++)
        shapes[j] = nn_model_feature_shape(b, j);
    return ee_new(spec, shapes, max_batch, err);
}

void ee_destroy(ee_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ee_t *self = *self_p;
    for (int j = 0; self->taps && j < self->ntaps; j++)
        tap_free(&self->taps[j]);
    free(self->taps);
    nn_layer_destroy(&self->dense);
    nn_tensor_destroy(&self->feat);
    nn_tensor_destroy(&self->dfeat);
    nn_tensor_destroy(&self->logits);
    nn_tensor_destroy(&self->dlogits);
    free(self->probs);
    free(self->ws);
    free(self->backbone);
    free(self->backbone_name);
    free(self->backbone_fnv1a);
    free(self->info);
    free(self);
    *self_p = NULL;
}

const ee_spec_t *ee_spec(const ee_t *self)
{
    return &self->spec;
}

int ee_layer(const ee_t *self)
{
    return self->spec.layer;
}

int ee_target(const ee_t *self)
{
    return self->spec.target;
}

double ee_alpha(const ee_t *self)
{
    return self->spec.alpha;
}

void ee_set_alpha(ee_t *self, double alpha)
{
    EI_ASSERT(alpha >= 0 && alpha <= 1);
    self->spec.alpha = alpha;
}

int ee_max_batch(const ee_t *self)
{
    return self->max_batch;
}

int ee_features_count(const ee_t *self)
{
    return self->features;
}

double ee_flops(const ee_t *self)
{
    return nn_layer_flops(self->dense);
}

nn_layer_t *ee_dense(ee_t *self)
{
    return self->dense;
}

void ee_init(ee_t *self, uint64_t seed)
{
    ei_rng_t rng;
    ei_rng_seed(&rng, seed);
    nn_layer_init(self->dense, &rng);
}

const char *ee_backbone(const ee_t *self)
{
    return self->backbone ? self->backbone : "";
}

const char *ee_backbone_name(const ee_t *self)
{
    return self->backbone_name ? self->backbone_name : "";
}

const char *ee_backbone_fnv1a(const ee_t *self)
{
    return self->backbone_fnv1a ? self->backbone_fnv1a : "";
}

const char *ee_info(const ee_t *self)
{
    return self->info ? self->info : "{}";
}

/* ---- forward and backward ---- */

/* Checks the taps the EE reads; returns the batch size or a negative code. */
static int check_taps(const ee_t *self, const nn_tensor_t *const *taps, ei_err_t *err)
{
    if (!taps)
        return ei_err_set(err, EI_E_INVAL, "ee: no taps given");
    int n = -1;
    for (int j = 0; j < self->ntaps; j++) {
        int l = self->first + j;
        const nn_tensor_t *t = taps[l];
        nn_shape_t want = self->shapes[l];
        if (!t)
            return ei_err_set(err, EI_E_INVAL, "ee: tap of layer %d missing", l + 1);
        if (t->c != want.c || t->h != want.h || t->w != want.w)
            return ei_err_set(err, EI_E_SHAPE,
                              "ee: tap of layer %d is %dx%dx%d, expected "
                              "%dx%dx%d",
                              l + 1, t->c, t->h, t->w, want.c, want.h, want.w);
        if (n >= 0 && t->n != n)
            return ei_err_set(err, EI_E_SHAPE,
                              "ee: tap of layer %d holds %d samples, layer %d "
                              "%d",
                              l + 1, t->n, self->first + 1, n);
        n = t->n;
    }
    if (n < 1 || n > self->max_batch)
        return ei_err_set(err, EI_E_RANGE, "ee: batch of %d samples, the EE takes 1..%d", n,
                          self->max_batch);
    return n;
}

/* ReLU, pool and concatenation of the taps into self->feat; returns n or a negative code. */
static int features_forward(ee_t *self, const nn_tensor_t *const *taps, ei_err_t *err)
{
    int n = check_taps(self, taps, err);
    if (n < 0)
        return n;
    nn_tensor_t pv[EE_MAX_LAYERS];
    const nn_tensor_t *pp[EE_MAX_LAYERS];
    for (int j = 0; j < self->ntaps; j++) {
        ee_tap_t *t = &self->taps[j];
        nn_tensor_t r = view_n(t->r, n);
        pv[j] = view_n(t->p, n);
        pp[j] = &pv[j];
        nn_layer_forward(t->relu, taps[self->first + j], &r, self->ws, 0);
        nn_layer_forward(t->pool, &r, &pv[j], self->ws, 0);
    }
    nn_tensor_t f = view_n(self->feat, n);
    nn_concat_forward(pp, self->ntaps, &f);
    return n;
}

/* Dense layer and softmax on the n rows of self->feat; P(k) into p_k. */
static void head_forward(ee_t *self, int n, float *p_k)
{
    nn_tensor_t f = view_n(self->feat, n), z = view_n(self->logits, n);
    nn_layer_forward(self->dense, &f, &z, self->ws, 0);
    nn_softmax(z.data, n, 2, self->probs);
    for (int s = 0; s < n && p_k; s++)
        p_k[s] = self->probs[2 * s + EE_CLASS_K];
}

int ee_forward(ee_t *self, const nn_tensor_t *const *taps, float *p_k, ei_err_t *err)
{
    int n = features_forward(self, taps, err);
    if (n < 0)
        return n;
    head_forward(self, n, p_k);
    return 0;
}

float ee_backward(ee_t *self, const nn_tensor_t *const *taps, const uint8_t *is_k,
                  nn_tensor_t *const *dtaps)
{
    int n = taps[self->first]->n;
    int labels[n];
    for (int s = 0; s < n; s++)
        labels[s] = is_k[s] ? EE_CLASS_K : EE_CLASS_NOT_K;
    nn_tensor_t f = view_n(self->feat, n), df = view_n(self->dfeat, n);
    nn_tensor_t z = view_n(self->logits, n), dz = view_n(self->dlogits, n);
    float loss = nn_softmax_xent(z.data, labels, n, 2, self->probs, dz.data, 1.0f);
    nn_layer_backward(self->dense, &f, &z, &dz, &df, self->ws);
    if (!dtaps)
        return loss;
    nn_tensor_t dpv[EE_MAX_LAYERS];
    nn_tensor_t *dpp[EE_MAX_LAYERS];
    for (int j = 0; j < self->ntaps; j++) {
        dpv[j] = view_n(self->taps[j].dp, n);
        dpp[j] = &dpv[j];
    }
    nn_concat_backward(&df, dpp, self->ntaps);
    for (int j = 0; j < self->ntaps; j++) {
        ee_tap_t *t = &self->taps[j];
        nn_tensor_t *dx = dtaps[self->first + j];
        if (!dx)
            continue;
        nn_tensor_t r = view_n(t->r, n), p = view_n(t->p, n), dr = view_n(t->dr, n);
        nn_layer_backward(t->pool, &r, &p, &dpv[j], &dr, self->ws);
        nn_layer_backward(t->relu, taps[self->first + j], &r, &dr, dx, self->ws);
    }
    return loss;
}

int ee_check(ee_t *self, const nn_tensor_t *const *taps, float *p_k, ei_err_t *err)
{
    int n = features_forward(self, taps, err);
    if (n < 0)
        return n;
    head_forward(self, n, NULL);
    float p = self->probs[EE_CLASS_K];
    if (p_k)
        *p_k = p;
    return (double)p >= self->spec.alpha;
}

int ee_features(ee_t *self, const nn_tensor_t *const *taps, float *feat, size_t ld, ei_err_t *err)
{
    int n = features_forward(self, taps, err);
    if (n < 0)
        return n;
    size_t F = (size_t)self->features;
    for (int s = 0; s < n; s++)
        memcpy(feat + (size_t)s * ld, self->feat->data + (size_t)s * F, F * sizeof(float));
    return 0;
}

void ee_head_probs(ee_t *self, const float *feat, size_t ld, const int *rows, int n, float *p_k)
{
    size_t F = (size_t)self->features;
    for (int at = 0; at < n; at += self->max_batch) {
        int nb = n - at < self->max_batch ? n - at : self->max_batch;
        for (int s = 0; s < nb; s++) {
            size_t r = rows ? (size_t)rows[at + s] : (size_t)(at + s);
            memcpy(self->feat->data + (size_t)s * F, feat + r * ld, F * sizeof(float));
        }
        head_forward(self, nb, p_k + at);
    }
}

/* ---- training ---- */

void ee_train_opts_default(ee_train_opts_t *o)
{
    *o = (ee_train_opts_t){.max_epochs = 200,
                           .patience = 10,
                           .batch = 128,
                           .lr = 3e-3,
                           .weight_decay = 1e-4,
                           .seed = 1};
}

/* Everything one training run allocates. */
typedef struct trainer {
    const ee_train_data_t *d;
    int F, target;
    float *mu, *inv_sd; /* standardisation */
    int *pos, *neg, npos, nneg;
    int *order; /* one epoch's rows */
    nn_tensor_t *x, *z, *dz;
    float *p;
    float *m, *v; /* Adam moments of weight then bias */
    float *best;  /* best weight then bias */
    long step;
} trainer_t;

static void trainer_free(trainer_t *t)
{
    free(t->mu);
    free(t->inv_sd);
    free(t->pos);
    free(t->neg);
    free(t->order);
    nn_tensor_destroy(&t->x);
    nn_tensor_destroy(&t->z);
    nn_tensor_destroy(&t->dz);
    free(t->p);
    free(t->m);
    free(t->v);
    free(t->best);
}

static int trainer_alloc(trainer_t *t, int batch, ei_err_t *err)
{
    size_t F = (size_t)t->F, P = 2 * F + 2;
    const ee_train_data_t *d = t->d;
    t->mu = ei_calloc(F, sizeof(float));
    t->inv_sd = ei_calloc(F, sizeof(float));
    t->pos = ei_calloc((size_t)d->n_train, sizeof(int));
    t->neg = ei_calloc((size_t)d->n_train, sizeof(int));
    t->order = ei_calloc((size_t)d->n_train, sizeof(int));
    t->x = nn_tensor_new(batch, t->F, 1, 1);
    t->z = nn_tensor_new(batch, 2, 1, 1);
    t->dz = nn_tensor_new(batch, 2, 1, 1);
    t->p = ei_calloc((size_t)batch * 2, sizeof(float));
    t->m = ei_calloc(P, sizeof(float));
    t->v = ei_calloc(P, sizeof(float));
    t->best = ei_calloc(P, sizeof(float));
    if (!t->mu || !t->inv_sd || !t->pos || !t->neg || !t->order || !t->x || !t->z || !t->dz ||
        !t->p || !t->m || !t->v || !t->best)
        return ei_err_set(err, EI_E_NOMEM, "ee: out of memory for training");
    return 0;
}

/* Mean and inverse deviation of every feature over the first training rows. */
static int trainer_stats(trainer_t *t, ei_err_t *err)
{
    const ee_train_data_t *d = t->d;
    int rows = d->n_train < EE_STATS_ROWS ? d->n_train : EE_STATS_ROWS;
    double *s1 = ei_calloc((size_t)t->F * 2, sizeof(double));
    if (!s1)
        return ei_err_set(err, EI_E_NOMEM, "ee: out of memory for training");
    double *s2 = s1 + t->F;
    for (int r = 0; r < rows; r++) {
        const float *f = d->feat + (size_t)d->train_rows[r] * d->ld;
        for (int j = 0; j < t->F; j++) {
            s1[j] += f[j];
            s2[j] += (double)f[j] * f[j];
        }
    }
    for (int j = 0; j < t->F; j++) {
        double mean = s1[j] / rows, var = s2[j] / rows - mean * mean;
        t->mu[j] = (float)mean;
        t->inv_sd[j] = (float)(1.0 / sqrt((var > 0 ? var : 0) + 1e-6));
    }
    free(s1);
    return 0;
}

/* Standardised rows into t->x. */
static void gather(trainer_t *t, const int *rows, int n)
{
    const ee_train_data_t *d = t->d;
    for (int s = 0; s < n; s++) {
        const float *f = d->feat + (size_t)rows[s] * d->ld;
        float *x = t->x->data + (size_t)s * t->F;
        for (int j = 0; j < t->F; j++)
            x[j] = (f[j] - t->mu[j]) * t->inv_sd[j];
    }
}

static void adam_step(trainer_t *t, ee_t *ee, const ee_train_opts_t *o)
{
    nn_param_t *w = nn_layer_param(ee->dense, 0), *b = nn_layer_param(ee->dense, 1);
    size_t nw = 2 * (size_t)t->F;
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    t->step++;
    double c1 = 1 - pow(b1, (double)t->step), c2 = 1 - pow(b2, (double)t->step);
    float lr = (float)(o->lr * sqrt(c2) / c1);
    for (size_t i = 0; i < nw + 2; i++) {
        float *val = i < nw ? &w->value->data[i] : &b->value->data[i - nw];
        float g = i < nw ? w->grad->data[i] + (float)o->weight_decay * *val : b->grad->data[i - nw];
        t->m[i] = (float)(b1 * t->m[i] + (1 - b1) * g);
        t->v[i] = (float)(b2 * t->v[i] + (1 - b2) * g * g);
        *val -= lr * t->m[i] / (sqrtf(t->v[i]) + (float)eps);
    }
}

/* One epoch over all class-k rows and as many fresh not-k rows; returns the mean loss. */
static double train_epoch(trainer_t *t, ee_t *ee, const ee_train_opts_t *o, ei_rng_t *rng)
{
    int nn = t->nneg < t->npos ? t->nneg : t->npos, count = 0;
    for (int i = 0; i < nn; i++) { /* partial Fisher-Yates: nn distinct not-k rows */
        int j = i + (int)ei_rng_below(rng, (uint32_t)(t->nneg - i));
        int tmp = t->neg[i];
        t->neg[i] = t->neg[j];
        t->neg[j] = tmp;
        t->order[count++] = t->neg[i];
    }
    memcpy(t->order + count, t->pos, (size_t)t->npos * sizeof(int));
    count += t->npos;
    ei_rng_shuffle(rng, t->order, count);
    double loss = 0;
    int labels[o->batch];
    for (int at = 0; at < count; at += o->batch) {
        int nb = count - at < o->batch ? count - at : o->batch;
        gather(t, t->order + at, nb);
        for (int s = 0; s < nb; s++)
            labels[s] = t->d->label[t->order[at + s]] == t->target ? EE_CLASS_K : EE_CLASS_NOT_K;
        nn_tensor_t x = view_n(t->x, nb), z = view_n(t->z, nb), dz = view_n(t->dz, nb);
        nn_layer_zero_grad(ee->dense);
        nn_layer_forward(ee->dense, &x, &z, NULL, 1);
        loss += nb * nn_softmax_xent(z.data, labels, nb, 2, t->p, dz.data, 1.0f);
        nn_layer_backward(ee->dense, &x, &z, &dz, NULL, NULL);
        adam_step(t, ee, o);
    }
    return loss / count;
}

/* Balanced accuracy on the validation rows with the current (standardised) weights. */
static double val_bacc(trainer_t *t, ee_t *ee, int batch)
{
    const ee_train_data_t *d = t->d;
    long tp = 0, pos = 0, tn = 0, neg = 0;
    for (int at = 0; at < d->n_val; at += batch) {
        int nb = d->n_val - at < batch ? d->n_val - at : batch;
        gather(t, d->val_rows + at, nb);
        nn_tensor_t x = view_n(t->x, nb), z = view_n(t->z, nb);
        nn_layer_forward(ee->dense, &x, &z, NULL, 0);
        nn_softmax(z.data, nb, 2, t->p);
        for (int s = 0; s < nb; s++) {
            int is_k = d->label[d->val_rows[at + s]] == t->target;
            int says_k = t->p[2 * s + EE_CLASS_K] >= 0.5f;
            pos += is_k, neg += !is_k;
            tp += is_k && says_k, tn += !is_k && !says_k;
        }
    }
    return 0.5 * ((pos ? (double)tp / pos : 1) + (neg ? (double)tn / neg : 1));
}

static void copy_params(ee_t *ee, float *dst, int to_layer, int F)
{
    float *w = nn_layer_param(ee->dense, 0)->value->data;
    float *b = nn_layer_param(ee->dense, 1)->value->data;
    size_t nw = 2 * (size_t)F;
    if (to_layer) {
        memcpy(w, dst, nw * sizeof(float));
        memcpy(b, dst + nw, 2 * sizeof(float));
    } else {
        memcpy(dst, w, nw * sizeof(float));
        memcpy(dst + nw, b, 2 * sizeof(float));
    }
}

/* W' = W diag(inv_sd), b' = b - W' mu: the same outputs on raw features. */
static void fold_standardisation(trainer_t *t, ee_t *ee)
{
    float *w = nn_layer_param(ee->dense, 0)->value->data;
    float *b = nn_layer_param(ee->dense, 1)->value->data;
    for (int c = 0; c < 2; c++) {
        double shift = 0;
        for (int j = 0; j < t->F; j++) {
            float *wj = &w[(size_t)c * t->F + j];
            *wj *= t->inv_sd[j];
            shift += (double)*wj * t->mu[j];
        }
        b[c] = (float)(b[c] - shift);
    }
}

static int check_train(const ee_t *self, const ee_train_data_t *d, const ee_train_opts_t *o,
                       ei_err_t *err)
{
    if (o->max_epochs < 1 || o->patience < 1 || o->batch < 1 || o->batch > 4096 || !(o->lr > 0) ||
        !(o->weight_decay >= 0))
        return ei_err_set(err, EI_E_INVAL,
                          "ee: training options out of range (epochs %d, "
                          "patience %d, batch %d, lr %g, weight decay %g)",
                          o->max_epochs, o->patience, o->batch, o->lr, o->weight_decay);
    if (d->ld < (size_t)self->features)
        return ei_err_set(err, EI_E_INVAL, "ee: row stride %zu below the %d features", d->ld,
                          self->features);
    if (d->n_train < 1 || d->n_val < 1)
        return ei_err_set(err, EI_E_INVAL, "ee: %d training and %d validation rows; need both",
                          d->n_train, d->n_val);
    return 0;
}

static int split_classes(trainer_t *t, ei_err_t *err)
{
    const ee_train_data_t *d = t->d;
    for (int r = 0; r < d->n_train; r++) {
        int row = d->train_rows[r];
        if (d->label[row] == t->target)
            t->pos[t->npos++] = row;
        else
            t->neg[t->nneg++] = row;
    }
    if (!t->npos || !t->nneg)
        return ei_err_set(err, EI_E_INVAL,
                          "ee: %d training rows of class %d and %d of the "
                          "others; need both",
                          t->npos, t->target, t->nneg);
    return 0;
}

int ee_train(ee_t *self, const ee_train_data_t *d, const ee_train_opts_t *o, ee_train_result_t *res,
             ei_err_t *err)
{
    int rc = check_train(self, d, o, err);
    if (rc)
        return rc;
    double t0 = ei_now();
    trainer_t t = {.d = d, .F = self->features, .target = self->spec.target};
    if ((rc = trainer_alloc(&t, o->batch, err)) || (rc = split_classes(&t, err)))
        goto done;
    if ((rc = trainer_stats(&t, err)))
        goto done;
    ee_init(self, o->seed);
    ei_rng_t rng;
    ei_rng_seed(&rng, o->seed ^ 0x9e3779b97f4a7c15ull);
    double best = -1;
    int best_epoch = 0, epoch = 0;
    while (epoch < o->max_epochs && epoch - best_epoch < o->patience) {
        epoch++;
        double loss = train_epoch(&t, self, o, &rng);
        if (!isfinite(loss)) {
            rc = ei_err_set(err, EI_E_NONFINITE, "ee: loss is %g at epoch %d", loss, epoch);
            goto done;
        }
        double bacc = val_bacc(&t, self, o->batch);
        if (bacc > best) {
            best = bacc, best_epoch = epoch;
            copy_params(self, t.best, 0, t.F);
        }
    }
    copy_params(self, t.best, 1, t.F);
    fold_standardisation(&t, self);
    if (res)
        *res = (ee_train_result_t){
            .epochs = epoch, .best_epoch = best_epoch, .val_bacc = best, .seconds = ei_now() - t0};
done:
    trainer_free(&t);
    return rc;
}

/* ---- files ---- */

int ee_file_fnv1a(const char *path, char out[17], ei_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return ei_err_set(err, errno == ENOENT ? EI_E_NOTFOUND : EI_E_IO, "%s: %s", path,
                          strerror(errno));
    uint64_t h = 0xcbf29ce484222325ull;
    unsigned char buf[65536];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0)
        for (size_t i = 0; i < got; i++)
            h = (h ^ buf[i]) * 0x100000001b3ull;
    int bad = ferror(f);
    fclose(f);
    if (bad)
        return ei_err_set(err, EI_E_IO, "%s: read error", path);
    snprintf(out, 17, "%016llx", (unsigned long long)h);
    return 0;
}

/* "CxHxW,CxHxW,..." of the layer shapes. */
static void taps_text(const ee_t *self, char *buf, size_t len)
{
    size_t at = 0;
    buf[0] = 0;
    for (int j = 0; j < self->spec.layer && at < len; j++)
        at += (size_t)snprintf(buf + at, len - at, "%s%dx%dx%d", j ? "," : "", self->shapes[j].c,
                               self->shapes[j].h, self->shapes[j].w);
}

int ee_save(const ee_t *self, const char *path, const ee_backbone_ref_t *bb, const char *info,
            ei_err_t *err)
{
    ee_t *m = (ee_t *)self;
    nn_param_t *w = nn_layer_param(m->dense, 0), *b = nn_layer_param(m->dense, 1);
    nn_st_entry_t entries[] = {
        {.name = "dense.weight", .ndim = 2, .shape = {2, self->features}, .data = w->value->data},
        {.name = "dense.bias", .ndim = 1, .shape = {2}, .data = b->value->data}};
    char target[16], layer[16], alpha[32], pooling[32], features[16];
    char *taps = ei_calloc((size_t)self->spec.layer * 40 + 1, 1);
    if (!taps)
        return ei_err_set(err, EI_E_NOMEM, "out of memory saving %s", path);
    taps_text(self, taps, (size_t)self->spec.layer * 40 + 1);
    snprintf(target, sizeof target, "%d", self->spec.target);
    snprintf(layer, sizeof layer, "%d", self->spec.layer);
    snprintf(alpha, sizeof alpha, "%.17g", self->spec.alpha);
    snprintf(pooling, sizeof pooling, "avg:%d", self->spec.pool);
    snprintf(features, sizeof features, "%d", self->features);
    nn_st_meta_t meta[] = {{"format", EE_FORMAT},
                           {"version", EE_VERSION},
                           {"target", target},
                           {"layer", layer},
                           {"kp", self->spec.kp ? "on" : "off"},
                           {"alpha", alpha},
                           {"pooling", pooling},
                           {"features", features},
                           {"taps", taps},
                           {"backbone", bb && bb->path ? bb->path : ""},
                           {"backbone_name", bb && bb->name ? bb->name : ""},
                           {"backbone_fnv1a", bb && bb->fnv1a ? bb->fnv1a : ""},
                           {"info", info ? info : "{}"}};
    int rc = nn_st_write(path, entries, 2, meta, (int)(sizeof meta / sizeof meta[0]), err);
    free(taps);
    return rc;
}

static int meta_long(const nn_st_file_t *f, const char *path, const char *key, long lo, long hi,
                     long *out, ei_err_t *err)
{
    const char *v = nn_st_meta(f, key);
    if (!v)
        return ei_err_set(err, EI_E_FORMAT, "%s: metadata has no \"%s\"", path, key);
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return ei_err_set(err, EI_E_FORMAT,
                          "%s: metadata \"%s\": '%s' is not an integer in "
                          "[%ld, %ld]",
                          path, key, v, lo, hi);
    *out = x;
    return 0;
}

/* The spec and tapped shapes from the metadata. */
static int read_spec(const nn_st_file_t *f, const char *path, ee_spec_t *spec, nn_shape_t *shapes,
                     long *features, ei_err_t *err)
{
    const char *fmt = nn_st_meta(f, "format"), *ver = nn_st_meta(f, "version");
    if (!fmt || strcmp(fmt, EE_FORMAT))
        return ei_err_set(err, EI_E_FORMAT,
                          "%s: not an einet EE file (metadata \"format\" is "
                          "'%s', expected '" EE_FORMAT "')",
                          path, fmt ? fmt : "(none)");
    if (!ver || strcmp(ver, EE_VERSION))
        return ei_err_set(err, EI_E_VERSION,
                          "%s: EE file version '%s', this build reads "
                          "'" EE_VERSION "'",
                          path, ver ? ver : "(none)");
    long target, layer, pool;
    int rc;
    if ((rc = meta_long(f, path, "target", 0, 999999, &target, err)) ||
        (rc = meta_long(f, path, "layer", 1, EE_MAX_LAYERS, &layer, err)) ||
        (rc = meta_long(f, path, "features", 1, 1L << 30, features, err)))
        return rc;
    const char *kp = nn_st_meta(f, "kp"), *alpha = nn_st_meta(f, "alpha");
    const char *pooling = nn_st_meta(f, "pooling"), *taps = nn_st_meta(f, "taps");
    if (!kp || (strcmp(kp, "on") && strcmp(kp, "off")))
        return ei_err_set(err, EI_E_FORMAT, "%s: metadata \"kp\" must be 'on' or 'off'", path);
    char *end;
    double a = alpha ? strtod(alpha, &end) : NAN;
    if (!alpha || end == alpha || *end || !(a >= 0 && a <= 1))
        return ei_err_set(err, EI_E_FORMAT, "%s: metadata \"alpha\" must be a number in [0, 1]",
                          path);
    int used = 0;
    if (!pooling || sscanf(pooling, "avg:%ld%n", &pool, &used) != 1 || pooling[used] || pool < 1 ||
        pool > 4096)
        return ei_err_set(err, EI_E_FORMAT, "%s: metadata \"pooling\" must be 'avg:S'", path);
    const char *at = taps ? taps : "";
    for (int j = 0; j < layer; j++) {
        nn_shape_t *s = &shapes[j];
        used = 0;
        if (sscanf(at, "%dx%dx%d%n", &s->c, &s->h, &s->w, &used) != 3 || s->c < 1 || s->h < 1 ||
            s->w < 1 || (at[used] != (j + 1 < layer ? ',' : '\0')))
            return ei_err_set(err, EI_E_FORMAT,
                              "%s: metadata \"taps\" must list %ld shapes "
                              "CxHxW separated by commas (layer %d)",
                              path, layer, j + 1);
        at += used + (j + 1 < layer);
    }
    *spec = (ee_spec_t){.target = (int)target,
                        .layer = (int)layer,
                        .kp = !strcmp(kp, "on"),
                        .pool = (int)pool,
                        .alpha = a};
    return 0;
}

static int check_against_model(const ee_spec_t *spec, const nn_shape_t *shapes, const nn_model_t *b,
                               const char *path, ei_err_t *err)
{
    if (spec->layer > nn_model_blocks(b))
        return ei_err_set(err, EI_E_SHAPE, "%s: EE after layer %d, the model has %d conv parts",
                          path, spec->layer, nn_model_blocks(b));
    if (spec->target >= nn_model_classes(b))
        return ei_err_set(err, EI_E_SHAPE, "%s: target class %d, the model has %d classes", path,
                          spec->target, nn_model_classes(b));
    for (int j = 0; j < spec->layer; j++) {
        nn_shape_t m = nn_model_feature_shape(b, j), s = shapes[j];
        if (m.c != s.c || m.h != s.h || m.w != s.w)
            return ei_err_set(err, EI_E_SHAPE,
                              "%s: layer %d tap is %dx%dx%d in the EE file, "
                              "%dx%dx%d in the model",
                              path, j + 1, s.c, s.h, s.w, m.c, m.h, m.w);
    }
    return 0;
}

static char *dup_meta(const nn_st_file_t *f, const char *key)
{
    const char *v = nn_st_meta(f, key);
    return v ? strdup(v) : NULL;
}

ee_t *ee_load(const char *path, const nn_model_t *b, int max_batch, ei_err_t *err)
{
    nn_st_file_t *f = nn_st_open(path, err);
    if (!f)
        return NULL;
    ee_t *self = NULL;
    ee_spec_t spec;
    nn_shape_t shapes[EE_MAX_LAYERS];
    long features;
    if (read_spec(f, path, &spec, shapes, &features, err))
        goto fail;
    if (b && check_against_model(&spec, shapes, b, path, err))
        goto fail;
    if (!(self = ee_new(&spec, shapes, max_batch, err))) {
        ei_err_prefix(err, "%s: ", path);
        goto fail;
    }
    if (features != self->features) {
        ei_err_set(err, EI_E_FORMAT,
                   "%s: metadata says %ld features, the taps and pooling "
                   "give %d",
                   path, features, self->features);
        goto fail;
    }
    int64_t ws[2] = {2, features}, bs[1] = {2};
    if (nn_st_read(f, "dense.weight", ws, 2, nn_layer_param(self->dense, 0)->value->data, err) ||
        nn_st_read(f, "dense.bias", bs, 1, nn_layer_param(self->dense, 1)->value->data, err)) {
        ei_err_prefix(err, "%s: ", path);
        goto fail;
    }
    if (nn_st_count(f) != 2) {
        ei_err_set(err, EI_E_FORMAT,
                   "%s: %d tensors, an EE file holds dense.weight and "
                   "dense.bias only",
                   path, nn_st_count(f));
        goto fail;
    }
    self->backbone = dup_meta(f, "backbone");
    self->backbone_name = dup_meta(f, "backbone_name");
    self->backbone_fnv1a = dup_meta(f, "backbone_fnv1a");
    self->info = dup_meta(f, "info");
    nn_st_close(&f);
    return self;
fail:
    ee_destroy(&self);
    nn_st_close(&f);
    return NULL;
}
