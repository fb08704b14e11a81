/* The layers that are more than one operation: the residual unit (the sum of a path and a
 * shortcut, two layer chains on the same input, as ResNet's basic block) and dropout.
 *
 * A residual layer holds its chains as sequences of its own (nn/seq.c), so everything a
 * chain does elsewhere it does here too: conv+ReLU fused, batch norms folded into their
 * convs for inference, the engine's threads inside each layer. Their activation buffers
 * are sized for the batch of the sequence that holds the layer; in inference several
 * threads run disjoint samples of them at once (nn__residual_forward_at). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layer_internal.h"
#include "nn_internal.h"

typedef struct residual {
    nn_seq_t path, shortcut; /* shortcut.count 0: the identity */
    float *dtmp;             /* training: the shortcut's input gradient, cap samples */
    int cap;                 /* samples the buffers hold */
} residual_t;

/* The chain's parameters under "<what>.<i>.<name>", appended to self->xparams. */
static int list_params(nn_layer_t *self, nn_seq_t *s, const char *what)
{
    for (int i = 0; i < s->count; i++)
        for (int j = 0; j < nn_layer_param_count(s->layers[i]); j++) {
            nn_param_t *p = nn_layer_param(s->layers[i], j);
            char name[96];
            snprintf(name, sizeof name, "%s.%d.%s", what, i, p->name);
            nn_param_t *q = &self->xparams[self->nxparams];
            *q = *p;
            q->name = strdup(name);
            if (!q->name)
                return EI_E_NOMEM;
            self->nxparams++;
        }
    return 0;
}

static int count_params(const nn_seq_t *s)
{
    int n = 0;
    for (int i = 0; i < s->count; i++)
        n += nn_layer_param_count(s->layers[i]);
    return n;
}

static int residual_setup(nn_layer_t *self, ei_err_t *err)
{
    const nn_layer_spec_t *sp = &self->spec;
    if (!sp->path || sp->npath < 1)
        return ei_err_set(err, EI_E_INVAL, "residual: the path needs at least one layer");
    if (sp->nshortcut < 0 || (sp->nshortcut > 0 && !sp->shortcut))
        return ei_err_set(err, EI_E_INVAL, "residual: bad shortcut");
    residual_t *r = ei_calloc(1, sizeof *r);
    if (!r)
        return EI_E_NOMEM;
    self->state = r;
    r->cap = 1;
    int rc = nn__seq_init(&r->path, sp->path, sp->npath, self->in, 1, err);
    if (rc)
        return ei_err_prefix(err, "residual path ");
    if (sp->nshortcut > 0) {
        rc = nn__seq_init(&r->shortcut, sp->shortcut, sp->nshortcut, self->in, 1, err);
        if (rc)
            return ei_err_prefix(err, "residual shortcut ");
    }
    nn_shape_t a = r->path.out, b = sp->nshortcut > 0 ? r->shortcut.out : self->in;
    if (a.c != b.c || a.h != b.h || a.w != b.w)
        return ei_err_set(err, EI_E_SHAPE,
                          "residual: the path gives %dx%dx%d but the %s gives %dx%dx%d (a "
                          "shortcut of a 1x1 conv with the path's stride and channels fits)",
                          a.c, a.h, a.w, sp->nshortcut > 0 ? "shortcut" : "identity shortcut",
                          b.c, b.h, b.w);
    self->out = a;
    int np = count_params(&r->path) + count_params(&r->shortcut);
    self->xparams = ei_calloc((size_t)np + 1, sizeof *self->xparams);
    if (!self->xparams)
        return EI_E_NOMEM;
    rc = list_params(self, &r->path, "path");
    rc = rc ? rc : list_params(self, &r->shortcut, "shortcut");
    /* the chains are built: the caller's spec arrays are not needed (nor kept) */
    self->spec.path = self->spec.shortcut = NULL;
    return rc;
}

static void residual_destroy(nn_layer_t *self)
{
    residual_t *r = self->state;
    if (!r)
        return;
    nn__seq_free(&r->path);
    nn__seq_free(&r->shortcut);
    free(r->dtmp);
    free(r);
    self->state = NULL;
}

int nn__residual_reserve(nn_layer_t *self, int n)
{
    residual_t *r = self->state;
    if (n <= r->cap)
        return 0;
    int rc = nn__seq_reserve(&r->path, n);
    rc = rc ? rc : nn__seq_reserve(&r->shortcut, n);
    if (rc)
        return rc;
    free(r->dtmp);
    r->dtmp = NULL; /* made again by the next backward */
    r->cap = n;
    return 0;
}

static size_t residual_workspace(const nn_layer_t *self, int n)
{
    const residual_t *r = self->state;
    size_t a = nn__seq_workspace(&r->path, n), b = nn__seq_workspace(&r->shortcut, n);
    return a > b ? a : b;
}

/* The sum counts as one operation per output value. */
static double residual_flops(const nn_layer_t *self)
{
    const residual_t *r = self->state;
    return nn__seq_flops(&r->path) + nn__seq_flops(&r->shortcut) +
           (double)nn_shape_numel(self->out);
}

static void residual_init(nn_layer_t *self, ei_rng_t *rng)
{
    residual_t *r = self->state;
    for (int i = 0; i < r->path.count; i++)
        nn_layer_init(r->path.layers[i], rng);
    for (int i = 0; i < r->shortcut.count; i++)
        nn_layer_init(r->shortcut.layers[i], rng);
}

void nn__residual_forward_at(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, int s0,
                             float *ws, int training, int relu)
{
    residual_t *r = self->state;
    nn_tensor_t p, q;
    if (training) {
        EI_ASSERT(s0 == 0);
        EI_ASSERT(nn__residual_reserve(self, x->n) == 0);
        p = *nn__seq_forward(&r->path, x, ws, 1);
        q = r->shortcut.count ? *nn__seq_forward(&r->shortcut, x, ws, 1) : *x;
    } else {
        EI_ASSERT(s0 + x->n <= r->cap);
        nn__seq_forward_at(&r->path, x, s0, ws, &p);
        if (r->shortcut.count)
            nn__seq_forward_at(&r->shortcut, x, s0, ws, &q);
        else
            q = *x;
    }
    size_t n = nn_tensor_numel(y);
    const float *a = p.data, *b = q.data;
    float *o = y->data;
    if (relu)
        for (size_t i = 0; i < n; i++)
            o[i] = a[i] + b[i] > 0 ? a[i] + b[i] : 0;
    else
        for (size_t i = 0; i < n; i++)
            o[i] = a[i] + b[i];
}

static void residual_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                             int training)
{
    if (!training) /* a layer on its own: its buffers must hold the batch */
        EI_ASSERT(nn__residual_reserve(self, x->n) == 0);
    nn__residual_forward_at(self, x, y, 0, ws, training, 0);
}

/* dx = path'(dy) + shortcut'(dy) (dy itself for the identity). */
static void residual_backward(nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *y,
                              const nn_tensor_t *dy, nn_tensor_t *dx, float *ws)
{
    (void)y;
    residual_t *r = self->state;
    EI_ASSERT(nn__seq_backward(&r->path, x, dy, dx, ws) == 0);
    if (!r->shortcut.count) {
        if (dx)
            for (size_t i = 0, n = nn_tensor_numel(dx); i < n; i++)
                dx->data[i] += dy->data[i];
        return;
    }
    if (!dx) {
        EI_ASSERT(nn__seq_backward(&r->shortcut, x, dy, NULL, ws) == 0);
        return;
    }
    if (!r->dtmp) {
        r->dtmp = ei_calloc((size_t)r->cap * nn_shape_numel(self->in), sizeof(float));
        EI_ASSERT(r->dtmp);
    }
    nn_tensor_t d = nn_tensor_view(r->dtmp, x->n, self->in.c, self->in.h, self->in.w);
    EI_ASSERT(nn__seq_backward(&r->shortcut, x, dy, &d, ws) == 0);
    for (size_t i = 0, n = nn_tensor_numel(dx); i < n; i++)
        dx->data[i] += d.data[i];
}

void nn__residual_prepare(nn_layer_t *self)
{
    residual_t *r = self->state;
    nn__seq_fold(&r->path);
    nn__seq_fold(&r->shortcut);
}

const nn_layer_ops_t nn__residual_ops = {residual_setup,   residual_workspace, residual_flops,
                                         residual_init,    residual_forward,   residual_backward,
                                         residual_destroy};

/* ---- dropout ---- */

typedef struct dropout {
    ei_rng_t rng;
    float *mask; /* training: 0 or 1 / (1 - p) per value of the last batch */
    size_t cap;  /* floats of mask */
} dropout_t;

static int dropout_setup(nn_layer_t *self, ei_err_t *err)
{
    float p = self->spec.p;
    if (!(p >= 0 && p < 1))
        return ei_err_set(err, EI_E_INVAL, "dropout: p %g must be in [0, 1)", (double)p);
    dropout_t *d = ei_calloc(1, sizeof *d);
    if (!d)
        return EI_E_NOMEM;
    ei_rng_seed(&d->rng, 1);
    self->state = d;
    return 0;
}

static void dropout_destroy(nn_layer_t *self)
{
    dropout_t *d = self->state;
    if (d)
        free(d->mask);
    free(d);
    self->state = NULL;
}

static void dropout_init(nn_layer_t *self, ei_rng_t *rng)
{
    dropout_t *d = self->state;
    ei_rng_seed(&d->rng, ei_rng_next(rng));
}

static void dropout_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                            int training)
{
    (void)ws;
    dropout_t *d = self->state;
    size_t n = nn_tensor_numel(x);
    if (!training) {
        if (y->data != x->data)
            memcpy(y->data, x->data, n * sizeof(float));
        return;
    }
    if (n > d->cap) {
        free(d->mask);
        d->mask = ei_calloc(n, sizeof(float));
        EI_ASSERT(d->mask);
        d->cap = n;
    }
    float p = self->spec.p, keep = 1.0f / (1.0f - p);
    for (size_t i = 0; i < n; i++)
        d->mask[i] = ei_rng_uniform(&d->rng) < p ? 0.0f : keep;
    for (size_t i = 0; i < n; i++)
        y->data[i] = x->data[i] * d->mask[i];
}

static void dropout_backward(nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *y,
                             const nn_tensor_t *dy, nn_tensor_t *dx, float *ws)
{
    (void)y, (void)ws;
    dropout_t *d = self->state;
    if (!dx)
        return;
    size_t n = nn_tensor_numel(x);
    EI_ASSERT(n <= d->cap);
    for (size_t i = 0; i < n; i++)
        dx->data[i] = dy->data[i] * d->mask[i];
}

const nn_layer_ops_t nn__dropout_ops = {dropout_setup,   NULL,           NULL,           dropout_init,
                                        dropout_forward, dropout_backward, dropout_destroy};
