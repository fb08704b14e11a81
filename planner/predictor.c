/* CS-Predictors: the evidence encodings of the two kinds, the MLP (nn/ dense layers), its
 * masked losses, training with Adam and gradient clipping on patterns drawn from a
 * CS-profile, evaluation and the safetensors file. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../nn/safetensors.h"
#include "predictor.h"

#define PRED_FORMAT "einet-predictor"
#define PRED_VERSION 1
#define CORR_PER_EXIT                                                                              \
    7 /* seen, executed, max prob, margin, entropy, agreement, p(latest class)                     \
       */
#define MAX_HIDDEN 4096

struct predictor {
    predictor_kind_t kind;
    int n, K, in_dim, h[2];
    nn_layer_t *fc[3];
    /* inference scratch, batch 1 */
    float *x1, *a1, *a2, *z;
    /* training scratch, grown to the largest batch seen */
    int cap;
    float *tx, *ta1, *ta2, *tz, *dz, *da2, *da1;
};

static const char *const kind_names[] = {"confidence", "correctness"};

const char *predictor_kind_name(predictor_kind_t kind)
{
    return (unsigned)kind < 2 ? kind_names[kind] : "unknown";
}

int predictor_kind_parse(const char *name, predictor_kind_t *kind)
{
    for (int i = 0; i < 2; i++)
        if (name && !strcmp(name, kind_names[i])) {
            *kind = (predictor_kind_t)i;
            return 0;
        }
    return -1;
}

void predictor_opts_default(predictor_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->kind = PREDICTOR_CONFIDENCE;
    o->epochs = 40;
    o->patterns = 8;
    o->batch = 256;
    o->lr = 1e-3;
    o->clip = 1.0;
    o->holdout = 0.1;
    o->seed = 1;
}

static int input_size(predictor_kind_t kind, int n, int K)
{
    return kind == PREDICTOR_CONFIDENCE ? n : CORR_PER_EXIT * n + K;
}

predictor_t *predictor_new(predictor_kind_t kind, int n, int classes, int hidden1, int hidden2,
                           uint64_t seed, ei_err_t *err)
{
    if ((unsigned)kind > 1 || n < 1 || n > PLANNER_MAX_EXITS || classes < 2 ||
        classes > PROFILE_MAX_CLASSES || hidden1 < 0 || hidden1 > MAX_HIDDEN || hidden2 < 0 ||
        hidden2 > MAX_HIDDEN) {
        ei_err_set(err, EI_E_RANGE, "predictor: kind %d, %d exits, %d classes, hidden %d, %d",
                   (int)kind, n, classes, hidden1, hidden2);
        return NULL;
    }
    predictor_t *p = ei_calloc(1, sizeof *p);
    if (!p)
        goto nomem;
    p->kind = kind;
    p->n = n;
    p->K = classes;
    p->in_dim = input_size(kind, n, classes);
    /* The paper's sizes for its predictor; the correctness kind learns as well with a
     * quarter of them (docs/elastic.md) and costs a third of the time per call. */
    int big = n > 30, corr = kind == PREDICTOR_CORRECTNESS;
    p->h[0] = hidden1 ? hidden1 : (big ? 2048 : 256) >> (corr ? 2 : 0);
    p->h[1] = hidden2 ? hidden2 : (big ? 1024 : 128) >> (corr ? 2 : 0);
    int sizes[4] = {p->in_dim, p->h[0], p->h[1], n};
    ei_rng_t rng;
    ei_rng_seed(&rng, seed);
    for (int l = 0; l < 3; l++) {
        nn_layer_spec_t spec = {.kind = NN_DENSE, .out = sizes[l + 1]};
        p->fc[l] = nn_layer_new(&spec, (nn_shape_t){sizes[l], 1, 1}, err);
        if (!p->fc[l]) {
            predictor_destroy(&p);
            return NULL;
        }
        nn_layer_init(p->fc[l], &rng);
    }
    p->x1 = ei_calloc((size_t)p->in_dim, sizeof(float));
    p->a1 = ei_calloc((size_t)p->h[0], sizeof(float));
    p->a2 = ei_calloc((size_t)p->h[1], sizeof(float));
    p->z = ei_calloc((size_t)n, sizeof(float));
    if (!p->x1 || !p->a1 || !p->a2 || !p->z)
        goto nomem;
    return p;
nomem:
    predictor_destroy(&p);
    ei_err_set(err, EI_E_NOMEM, "predictor: out of memory");
    return NULL;
}

static void free_train_scratch(predictor_t *p)
{
    float **bufs[] = {&p->tx, &p->ta1, &p->ta2, &p->tz, &p->dz, &p->da2, &p->da1};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        free(*bufs[i]);
        *bufs[i] = NULL;
    }
    p->cap = 0;
}

void predictor_destroy(predictor_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    predictor_t *p = *self_p;
    for (int l = 0; l < 3; l++)
        nn_layer_destroy(&p->fc[l]);
    free(p->x1);
    free(p->a1);
    free(p->a2);
    free(p->z);
    free_train_scratch(p);
    free(p);
    *self_p = NULL;
}

predictor_kind_t predictor_kind(const predictor_t *self)
{
    return self->kind;
}
int predictor_exits(const predictor_t *self)
{
    return self->n;
}
int predictor_classes(const predictor_t *self)
{
    return self->K;
}
int predictor_inputs(const predictor_t *self)
{
    return self->in_dim;
}

void predictor_hidden(const predictor_t *self, int *hidden1, int *hidden2)
{
    *hidden1 = self->h[0];
    *hidden2 = self->h[1];
}

int predictor_param_count(const predictor_t *self)
{
    (void)self;
    return 6;
}

nn_param_t *predictor_param(predictor_t *self, int i, const char **name)
{
    static const char *const names[6] = {"fc1.weight", "fc1.bias",   "fc2.weight",
                                         "fc2.bias",   "fc3.weight", "fc3.bias"};
    EI_ASSERT(i >= 0 && i < 6);
    if (name)
        *name = names[i];
    return nn_layer_param(self->fc[i / 2], i % 2);
}

/* ---- evidence ---- */

static int argmax(const float *p, int K)
{
    int best = 0;
    for (int c = 1; c < K; c++)
        best = p[c] > p[best] ? c : best;
    return best;
}

/* The paper's input: observed confidences, a skipped exit repeating the nearest earlier
 * executed one (0 before any), future exits 0. */
static void confidence_features(const predictor_t *p, const float *probs, const uint8_t *executed,
                                int x, float *in)
{
    float last = 0;
    for (int j = 0; j < p->n; j++) {
        if (j < x && executed[j]) {
            const float *row = probs + (size_t)j * (size_t)p->K;
            last = row[argmax(row, p->K)];
        }
        in[j] = j < x ? last : 0;
    }
}

/* Richer evidence: seven numbers per exit and the latest executed exit's vector. */
static void correctness_features(const predictor_t *p, const float *probs, const uint8_t *executed,
                                 int x, float *in)
{
    int n = p->n, K = p->K, latest = -1;
    for (int j = 0; j < x && j < n; j++)
        latest = executed[j] ? j : latest;
    memset(in, 0, (size_t)p->in_dim * sizeof *in);
    const float *lrow = latest >= 0 ? probs + (size_t)latest * (size_t)K : NULL;
    int lclass = lrow ? argmax(lrow, K) : 0;
    double log_k = log((double)K);
    for (int j = 0; j < n; j++) {
        float *f = in + (size_t)j * CORR_PER_EXIT;
        f[0] = j < x;
        if (j >= x || !executed[j])
            continue;
        const float *row = probs + (size_t)j * (size_t)K;
        int top = argmax(row, K);
        float second = 0;
        double ent = 0;
        for (int c = 0; c < K; c++) {
            if (c != top && row[c] > second)
                second = row[c];
            if (row[c] > 0)
                ent -= (double)row[c] * log((double)row[c]);
        }
        f[1] = 1;
        f[2] = row[top];
        f[3] = row[top] - second;
        f[4] = (float)(ent / log_k);
        f[5] = top == lclass;
        f[6] = row[lclass];
    }
    if (lrow)
        memcpy(in + (size_t)n * CORR_PER_EXIT, lrow, (size_t)K * sizeof *in);
}

void predictor_features(const predictor_t *self, const float *probs, const uint8_t *executed, int x,
                        float *in)
{
    EI_ASSERT(x >= 0 && x <= self->n);
    if (self->kind == PREDICTOR_CONFIDENCE)
        confidence_features(self, probs, executed, x, in);
    else
        correctness_features(self, probs, executed, x, in);
}

void predictor_mask(predictor_kind_t kind, int n, const uint8_t *executed, int x, float *mask)
{
    for (int j = 0; j < n; j++)
        mask[j] = j >= x || (kind == PREDICTOR_CORRECTNESS && executed[j]);
}

/* ---- the MLP ---- */

static double sigmoid(double z)
{
    return z >= 0 ? 1 / (1 + exp(-z)) : exp(z) / (1 + exp(z));
}

static void relu(float *a, size_t count)
{
    for (size_t i = 0; i < count; i++)
        a[i] = a[i] > 0 ? a[i] : 0;
}

/* Forward of `batch` rows of x through the three layers into z (logits). */
static void mlp_forward(predictor_t *p, float *x, float *a1, float *a2, float *z, int batch)
{
    nn_tensor_t tx = nn_tensor_view(x, batch, p->in_dim, 1, 1);
    nn_tensor_t t1 = nn_tensor_view(a1, batch, p->h[0], 1, 1);
    nn_tensor_t t2 = nn_tensor_view(a2, batch, p->h[1], 1, 1);
    nn_tensor_t tz = nn_tensor_view(z, batch, p->n, 1, 1);
    nn_layer_forward(p->fc[0], &tx, &t1, NULL, 0);
    relu(a1, (size_t)batch * (size_t)p->h[0]);
    nn_layer_forward(p->fc[1], &t1, &t2, NULL, 0);
    relu(a2, (size_t)batch * (size_t)p->h[1]);
    nn_layer_forward(p->fc[2], &t2, &tz, NULL, 0);
}

void predictor_predict(predictor_t *self, const float *probs, const uint8_t *executed, int x,
                       double *scores)
{
    predictor_features(self, probs, executed, x, self->x1);
    mlp_forward(self, self->x1, self->a1, self->a2, self->z, 1);
    for (int j = 0; j < self->n; j++) {
        double s = sigmoid(self->z[j]);
        if (self->kind == PREDICTOR_CONFIDENCE && j < x && executed[j]) {
            const float *row = probs + (size_t)j * (size_t)self->K;
            s = row[argmax(row, self->K)];
        }
        scores[j] = s < 0 ? 0 : s > 1 ? 1 : s;
    }
}

static int grow_scratch(predictor_t *p, int batch)
{
    if (batch <= p->cap)
        return 0;
    free_train_scratch(p);
    size_t b = (size_t)batch;
    p->tx = malloc(b * (size_t)p->in_dim * sizeof(float));
    p->ta1 = malloc(b * (size_t)p->h[0] * sizeof(float));
    p->ta2 = malloc(b * (size_t)p->h[1] * sizeof(float));
    p->tz = malloc(b * (size_t)p->n * sizeof(float));
    p->dz = malloc(b * (size_t)p->n * sizeof(float));
    p->da2 = malloc(b * (size_t)p->h[1] * sizeof(float));
    p->da1 = malloc(b * (size_t)p->h[0] * sizeof(float));
    if (!p->tx || !p->ta1 || !p->ta2 || !p->tz || !p->dz || !p->da2 || !p->da1) {
        free_train_scratch(p);
        return EI_E_NOMEM;
    }
    p->cap = batch;
    return 0;
}

/* Loss of one output with logit z, target t; *dz gets d loss / d z. */
static double output_loss(predictor_kind_t kind, double z, double t, double *dz)
{
    double o = sigmoid(z);
    if (kind == PREDICTOR_CONFIDENCE) {
        *dz = 2 * (o - t) * o * (1 - o);
        return (o - t) * (o - t);
    }
    *dz = o - t;
    /* BCE from the logit: log(1 + e^z) - t z, computed without overflow. */
    double softplus = z > 0 ? z + log1p(exp(-z)) : log1p(exp(z));
    return softplus - t * z;
}

static void mlp_backward(predictor_t *p, int batch)
{
    nn_tensor_t t1 = nn_tensor_view(p->ta1, batch, p->h[0], 1, 1);
    nn_tensor_t t2 = nn_tensor_view(p->ta2, batch, p->h[1], 1, 1);
    nn_tensor_t tx = nn_tensor_view(p->tx, batch, p->in_dim, 1, 1);
    nn_tensor_t tz = nn_tensor_view(p->tz, batch, p->n, 1, 1);
    nn_tensor_t dz = nn_tensor_view(p->dz, batch, p->n, 1, 1);
    nn_tensor_t d2 = nn_tensor_view(p->da2, batch, p->h[1], 1, 1);
    nn_tensor_t d1 = nn_tensor_view(p->da1, batch, p->h[0], 1, 1);
    for (int l = 0; l < 3; l++)
        nn_layer_zero_grad(p->fc[l]);
    nn_layer_backward(p->fc[2], &t2, &tz, &dz, &d2, NULL);
    for (size_t i = 0; i < (size_t)batch * (size_t)p->h[1]; i++)
        p->da2[i] = p->ta2[i] > 0 ? p->da2[i] : 0;
    nn_layer_backward(p->fc[1], &t1, &t2, &d2, &d1, NULL);
    for (size_t i = 0; i < (size_t)batch * (size_t)p->h[0]; i++)
        p->da1[i] = p->ta1[i] > 0 ? p->da1[i] : 0;
    nn_layer_backward(p->fc[0], &tx, &t1, &d1, NULL, NULL);
}

double predictor_loss(predictor_t *self, const float *in, const float *target, const float *mask,
                      int batch, int backward)
{
    if (batch < 1 || grow_scratch(self, batch))
        return NAN;
    int n = self->n;
    memcpy(self->tx, in, (size_t)batch * (size_t)self->in_dim * sizeof(float));
    mlp_forward(self, self->tx, self->ta1, self->ta2, self->tz, batch);
    double loss = 0;
    for (size_t i = 0; i < (size_t)batch * (size_t)n; i++) {
        double d = 0;
        if (mask[i] != 0)
            loss += mask[i] * output_loss(self->kind, self->tz[i], target[i], &d);
        self->dz[i] = (float)(mask[i] * d / batch);
    }
    if (backward)
        mlp_backward(self, batch);
    return loss / batch;
}

/* ---- training ---- */

/* Draws an evidence pattern as the planner meets them: x = 0 (the initial plan), or right
 * after an executed exit x - 1, with the exits before it all executed (EINet Fig. 4's rows)
 * a quarter of the time and each executed with probability 1/2 otherwise. Returns x. */
static int draw_pattern(ei_rng_t *rng, int n, uint8_t *executed)
{
    memset(executed, 0, (size_t)n);
    if (n == 1 || ei_rng_below(rng, (uint32_t)n) == 0)
        return 0;
    int x = 1 + (int)ei_rng_below(rng, (uint32_t)(n - 1));
    int all = ei_rng_below(rng, 4) == 0;
    for (int j = 0; j < x - 1; j++)
        executed[j] = all || ei_rng_below(rng, 2);
    executed[x - 1] = 1;
    return x;
}

/* One training row: input, target and mask of sample s under a pattern. */
static void make_row(const predictor_t *p, const profile_cs_t *cs, int s, const uint8_t *executed,
                     int x, float *in, float *target, float *mask)
{
    predictor_features(p, profile_cs_probs(cs, s), executed, x, in);
    const float *conf = profile_cs_conf(cs, s);
    const uint8_t *correct = profile_cs_correct(cs, s);
    for (int j = 0; j < p->n; j++)
        target[j] = p->kind == PREDICTOR_CONFIDENCE ? conf[j] : correct[j];
    predictor_mask(p->kind, p->n, executed, x, mask);
}

/* A set of rows (inputs, targets, masks). */
typedef struct rows {
    int count;
    float *in, *target, *mask;
} rows_t;

static int rows_alloc(rows_t *r, int count, int in_dim, int n)
{
    r->count = count;
    r->in = malloc((size_t)count * (size_t)in_dim * sizeof(float));
    r->target = malloc((size_t)count * (size_t)n * sizeof(float));
    r->mask = malloc((size_t)count * (size_t)n * sizeof(float));
    return r->in && r->target && r->mask ? 0 : EI_E_NOMEM;
}

static void rows_free(rows_t *r)
{
    free(r->in);
    free(r->target);
    free(r->mask);
    memset(r, 0, sizeof *r);
}

/* Fills rows with `per` drawn patterns for each of samples[0..count-1]. */
static void draw_rows(const predictor_t *p, const profile_cs_t *cs, const int *samples, int count,
                      int per, ei_rng_t *rng, rows_t *r)
{
    uint8_t executed[PLANNER_MAX_EXITS];
    for (int i = 0; i < count * per; i++) {
        int x = draw_pattern(rng, p->n, executed);
        make_row(p, cs, samples[i / per], executed, x, r->in + (size_t)i * (size_t)p->in_dim,
                 r->target + (size_t)i * (size_t)p->n, r->mask + (size_t)i * (size_t)p->n);
    }
}

/* Mean loss over a set of rows, in batches. */
static double rows_loss(predictor_t *p, const rows_t *r, int batch)
{
    double sum = 0;
    for (int i = 0; i < r->count; i += batch) {
        int b = r->count - i < batch ? r->count - i : batch;
        sum += b * predictor_loss(p, r->in + (size_t)i * (size_t)p->in_dim,
                                  r->target + (size_t)i * (size_t)p->n,
                                  r->mask + (size_t)i * (size_t)p->n, b, 0);
    }
    return sum / r->count;
}

/* Adam state and the best weights seen, one slot per parameter. */
typedef struct adam {
    float *m[6], *v[6], *best[6];
    long t;
} adam_t;

static int adam_init(adam_t *a, predictor_t *p)
{
    memset(a, 0, sizeof *a);
    for (int i = 0; i < 6; i++) {
        size_t len = nn_tensor_numel(predictor_param(p, i, NULL)->value);
        a->m[i] = ei_calloc(len, sizeof(float));
        a->v[i] = ei_calloc(len, sizeof(float));
        a->best[i] = ei_calloc(len, sizeof(float));
        if (!a->m[i] || !a->v[i] || !a->best[i])
            return EI_E_NOMEM;
    }
    return 0;
}

static void adam_free(adam_t *a)
{
    for (int i = 0; i < 6; i++) {
        free(a->m[i]);
        free(a->v[i]);
        free(a->best[i]);
    }
}

/* One Adam step with the gradients clipped to a global L2 norm of at most clip. */
static void adam_step(adam_t *a, predictor_t *p, double lr, double clip)
{
    double norm2 = 0;
    for (int i = 0; i < 6; i++) {
        const nn_tensor_t *g = predictor_param(p, i, NULL)->grad;
        for (size_t k = 0; k < nn_tensor_numel(g); k++)
            norm2 += (double)g->data[k] * g->data[k];
    }
    double scale = clip > 0 && sqrt(norm2) > clip ? clip / sqrt(norm2) : 1;
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    a->t++;
    double c1 = 1 - pow(b1, (double)a->t), c2 = 1 - pow(b2, (double)a->t);
    for (int i = 0; i < 6; i++) {
        nn_param_t *prm = predictor_param(p, i, NULL);
        for (size_t k = 0; k < nn_tensor_numel(prm->value); k++) {
            double g = scale * prm->grad->data[k];
            a->m[i][k] = (float)(b1 * a->m[i][k] + (1 - b1) * g);
            a->v[i][k] = (float)(b2 * a->v[i][k] + (1 - b2) * g * g);
            prm->value->data[k] -= (float)(lr * (a->m[i][k] / c1) / (sqrt(a->v[i][k] / c2) + eps));
        }
    }
}

static void copy_params(predictor_t *p, adam_t *a, int to_best)
{
    for (int i = 0; i < 6; i++) {
        nn_tensor_t *v = predictor_param(p, i, NULL)->value;
        size_t bytes = nn_tensor_numel(v) * sizeof(float);
        if (to_best)
            memcpy(a->best[i], v->data, bytes);
        else
            memcpy(v->data, a->best[i], bytes);
    }
}

/* Shuffles the rows of r in place (Fisher-Yates over whole rows). */
static void shuffle_rows(rows_t *r, int in_dim, int n, ei_rng_t *rng, float *tmp)
{
    for (int i = r->count - 1; i > 0; i--) {
        int j = (int)ei_rng_below(rng, (uint32_t)(i + 1));
        struct {
            float *base;
            int w;
        } parts[3] = {{r->in, in_dim}, {r->target, n}, {r->mask, n}};
        for (int q = 0; q < 3; q++) {
            size_t w = (size_t)parts[q].w, bytes = w * sizeof(float);
            memcpy(tmp, parts[q].base + (size_t)i * w, bytes);
            memcpy(parts[q].base + (size_t)i * w, parts[q].base + (size_t)j * w, bytes);
            memcpy(parts[q].base + (size_t)j * w, tmp, bytes);
        }
    }
}

static int train_epochs(predictor_t *p, const profile_cs_t *cs, const int *order, int n_train,
                        int n_hold, const predictor_opts_t *o, ei_err_t *err)
{
    ei_rng_t rng;
    ei_rng_seed(&rng, o->seed ^ 0x9e3779b97f4a7c15ULL);
    rows_t train = {0}, hold = {0};
    adam_t adam;
    float *tmp = malloc((size_t)(p->in_dim > p->n ? p->in_dim : p->n) * sizeof(float));
    int rc = adam_init(&adam, p);
    if (!rc && (!tmp || rows_alloc(&train, n_train * o->patterns, p->in_dim, p->n) ||
                rows_alloc(&hold, n_hold * 2 * p->n, p->in_dim, p->n)))
        rc = EI_E_NOMEM;
    if (rc) {
        ei_err_set(err, rc, "predictor training: out of memory");
        goto done;
    }
    draw_rows(p, cs, order + n_train, n_hold, 2 * p->n, &rng, &hold);
    double best = INFINITY;
    for (int e = 0; e < o->epochs && !rc; e++) {
        draw_rows(p, cs, order, n_train, o->patterns, &rng, &train);
        shuffle_rows(&train, p->in_dim, p->n, &rng, tmp);
        double sum = 0;
        for (int i = 0; i < train.count; i += o->batch) {
            int b = train.count - i < o->batch ? train.count - i : o->batch;
            double l = predictor_loss(p, train.in + (size_t)i * (size_t)p->in_dim,
                                      train.target + (size_t)i * (size_t)p->n,
                                      train.mask + (size_t)i * (size_t)p->n, b, 1);
            if (!isfinite(l)) {
                rc = ei_err_set(err, EI_E_NONFINITE, "predictor training: loss %g at epoch %d", l,
                                e + 1);
                break;
            }
            adam_step(&adam, p, o->lr, o->clip);
            sum += l * b;
        }
        double h = n_hold ? rows_loss(p, &hold, o->batch) : sum / train.count;
        if (h < best) {
            best = h;
            copy_params(p, &adam, 1);
        }
        if (o->log)
            fprintf(o->log, "epoch %d/%d: train loss %.5f, held-out loss %.5f%s\n", e + 1,
                    o->epochs, sum / train.count, h, h == best ? " (best)" : "");
    }
    if (!rc)
        copy_params(p, &adam, 0);
done:
    free(tmp);
    rows_free(&train);
    rows_free(&hold);
    adam_free(&adam);
    return rc;
}

predictor_t *predictor_train(const profile_cs_t *cs, const predictor_opts_t *o, ei_err_t *err)
{
    int count = profile_cs_count(cs);
    if (o->epochs < 1 || o->patterns < 1 || o->batch < 1 || !(o->lr > 0) || !(o->clip >= 0) ||
        !(o->holdout >= 0 && o->holdout < 1)) {
        ei_err_set(err, EI_E_RANGE,
                   "predictor training: bad options (epochs %d, patterns %d, "
                   "batch %d, lr %g, clip %g, holdout %g)",
                   o->epochs, o->patterns, o->batch, o->lr, o->clip, o->holdout);
        return NULL;
    }
    int n_hold = (int)(o->holdout * count), n_train = count - n_hold;
    if (n_train < 1) {
        ei_err_set(err, EI_E_RANGE, "predictor training: %d samples leave none to train on", count);
        return NULL;
    }
    predictor_t *p = predictor_new(o->kind, profile_cs_exits(cs), profile_cs_classes(cs),
                                   o->hidden1, o->hidden2, o->seed, err);
    int *order = malloc((size_t)count * sizeof *order);
    if (!p || !order) {
        if (p)
            ei_err_set(err, EI_E_NOMEM, "predictor training: out of memory");
        free(order);
        predictor_destroy(&p);
        return NULL;
    }
    ei_rng_t rng;
    ei_rng_seed(&rng, o->seed);
    for (int i = 0; i < count; i++)
        order[i] = i;
    ei_rng_shuffle(&rng, order, count);
    if (train_epochs(p, cs, order, n_train, n_hold, o, err))
        predictor_destroy(&p);
    free(order);
    return p;
}

/* ---- evaluation ---- */

int predictor_evaluate(predictor_t *self, const profile_cs_t *cs, predictor_eval_t *ev,
                       ei_err_t *err)
{
    int n = self->n, count = profile_cs_count(cs);
    if (profile_cs_exits(cs) != n || profile_cs_classes(cs) != self->K)
        return ei_err_set(err, EI_E_SHAPE,
                          "predictor for %d exits and %d classes, CS-profile of %d and %d", n,
                          self->K, profile_cs_exits(cs), profile_cs_classes(cs));
    double mean[PLANNER_MAX_EXITS] = {0}, sse = 0, bce = 0, const_sse = 0;
    long outputs = 0;
    uint8_t executed[PLANNER_MAX_EXITS];
    float in_mask[PLANNER_MAX_EXITS], target[PLANNER_MAX_EXITS];
    double scores[PLANNER_MAX_EXITS];
    /* The constant baseline needs each exit's mean target first. */
    for (int s = 0; s < count; s++)
        for (int j = 0; j < n; j++)
            mean[j] += (self->kind == PREDICTOR_CONFIDENCE ? profile_cs_conf(cs, s)[j]
                                                           : profile_cs_correct(cs, s)[j]) /
                       (double)count;
    for (int s = 0; s < count; s++) {
        for (int x = 0; x < n; x++) {
            for (int j = 0; j < n; j++)
                executed[j] = j < x;
            make_row(self, cs, s, executed, x, self->x1, target, in_mask);
            predictor_predict(self, profile_cs_probs(cs, s), executed, x, scores);
            for (int j = 0; j < n; j++) {
                if (!in_mask[j])
                    continue;
                double o = scores[j], t = target[j];
                sse += (o - t) * (o - t);
                const_sse += (mean[j] - t) * (mean[j] - t);
                double oc = o < 1e-7 ? 1e-7 : o > 1 - 1e-7 ? 1 - 1e-7 : o;
                bce -= t * log(oc) + (1 - t) * log(1 - oc);
                outputs++;
            }
        }
    }
    ev->outputs = outputs;
    ev->mse = outputs ? sse / (double)outputs : 0;
    ev->bce = outputs ? bce / (double)outputs : 0;
    ev->const_mse = outputs ? const_sse / (double)outputs : 0;
    return 0;
}

/* ---- files ---- */

int predictor_save(const predictor_t *self, const char *path, const char *model,
                   const char *info_json, ei_err_t *err)
{
    predictor_t *p = (predictor_t *)self; /* parameters are only read */
    nn_st_entry_t entries[6];
    for (int i = 0; i < 6; i++) {
        const char *name;
        nn_param_t *prm = predictor_param(p, i, &name);
        entries[i].name = name;
        entries[i].ndim = i % 2 ? 1 : 2;
        entries[i].shape[0] = prm->value->n;
        entries[i].shape[1] = prm->value->c;
        entries[i].shape[2] = entries[i].shape[3] = 0;
        entries[i].data = prm->value->data;
    }
    char version[16], exits[16], classes[16], inputs[16], hidden[32];
    snprintf(version, sizeof version, "%d", PRED_VERSION);
    snprintf(exits, sizeof exits, "%d", self->n);
    snprintf(classes, sizeof classes, "%d", self->K);
    snprintf(inputs, sizeof inputs, "%d", self->in_dim);
    snprintf(hidden, sizeof hidden, "%d,%d", self->h[0], self->h[1]);
    nn_st_meta_t meta[] = {{"format", PRED_FORMAT},
                           {"version", version},
                           {"kind", predictor_kind_name(self->kind)},
                           {"exits", exits},
                           {"classes", classes},
                           {"inputs", inputs},
                           {"hidden", hidden},
                           {"model", model ? model : "?"},
                           {"info", info_json ? info_json : "{}"}};
    return nn_st_write(path, entries, 6, meta, (int)(sizeof meta / sizeof meta[0]), err);
}

/* Integer metadata value in [lo, hi]. */
static int meta_int(const nn_st_file_t *f, const char *key, int lo, int hi, int *out, ei_err_t *err)
{
    const char *v = nn_st_meta(f, key);
    char *end;
    long l = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || l < lo || l > hi)
        return ei_err_set(err, EI_E_FORMAT, "metadata %s: %s%s%s is not an integer in [%d, %d]",
                          key, v ? "'" : "", v ? v : "missing", v ? "'" : "", lo, hi);
    *out = (int)l;
    return 0;
}

static predictor_t *load_from(const nn_st_file_t *f, ei_err_t *err)
{
    const char *fmt = nn_st_meta(f, "format"), *hidden = nn_st_meta(f, "hidden");
    predictor_kind_t kind;
    int version = 0, n = 0, K = 0, inputs = 0, h1, h2;
    if (!fmt || strcmp(fmt, PRED_FORMAT)) {
        ei_err_set(err, EI_E_FORMAT, "metadata format: expected \"%s\"", PRED_FORMAT);
        return NULL;
    }
    if (meta_int(f, "version", 0, 1 << 20, &version, err) ||
        meta_int(f, "exits", 1, PLANNER_MAX_EXITS, &n, err) ||
        meta_int(f, "classes", 2, PROFILE_MAX_CLASSES, &K, err) ||
        meta_int(f, "inputs", 1, 1 << 20, &inputs, err))
        return NULL;
    if (version != PRED_VERSION) {
        ei_err_set(err, EI_E_VERSION, "metadata version: %d, this program reads %d", version,
                   PRED_VERSION);
        return NULL;
    }
    if (predictor_kind_parse(nn_st_meta(f, "kind"), &kind)) {
        ei_err_set(err, EI_E_FORMAT, "metadata kind: expected confidence or correctness");
        return NULL;
    }
    if (!hidden || sscanf(hidden, "%d,%d", &h1, &h2) != 2 || h1 < 1 || h2 < 1 || h1 > MAX_HIDDEN ||
        h2 > MAX_HIDDEN) {
        ei_err_set(err, EI_E_FORMAT, "metadata hidden: expected two sizes \"H1,H2\"");
        return NULL;
    }
    if (inputs != input_size(kind, n, K)) {
        ei_err_set(err, EI_E_SHAPE,
                   "metadata inputs: %d, a %s predictor of %d exits and %d "
                   "classes has %d",
                   inputs, predictor_kind_name(kind), n, K, input_size(kind, n, K));
        return NULL;
    }
    predictor_t *p = predictor_new(kind, n, K, h1, h2, 1, err);
    for (int i = 0; p && i < 6; i++) {
        const char *name;
        nn_param_t *prm = predictor_param(p, i, &name);
        int64_t shape[2] = {prm->value->n, prm->value->c};
        if (nn_st_read(f, name, shape, i % 2 ? 1 : 2, prm->value->data, err))
            predictor_destroy(&p);
    }
    for (int i = 0; p && i < 6; i++) {
        const nn_tensor_t *v = predictor_param(p, i, NULL)->value;
        long bad = nn_tensor_find_nonfinite(v->data, nn_tensor_numel(v));
        if (bad >= 0) {
            const char *name;
            predictor_param(p, i, &name);
            ei_err_set(err, EI_E_NONFINITE, "tensor '%s': non-finite value at %ld", name, bad);
            predictor_destroy(&p);
        }
    }
    if (p && nn_st_count(f) != 6) {
        ei_err_set(err, EI_E_FORMAT, "%d tensors, a predictor has 6", nn_st_count(f));
        predictor_destroy(&p);
    }
    return p;
}

predictor_t *predictor_load(const char *path, ei_err_t *err)
{
    nn_st_file_t *f = nn_st_open(path, err);
    if (!f)
        return NULL;
    predictor_t *p = load_from(f, err);
    if (!p && err && !strstr(err->msg, path))
        ei_err_prefix(err, "%s: ", path);
    nn_st_close(&f);
    return p;
}
