/* Tests of the layer library: every forward against direct nested loops written here,
 * every backward against central finite differences of L = sum(y * r), softmax
 * cross-entropy, concatenation, batch-norm folding and the checks of bad specs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/layer.h"
#include "nn/layer_internal.h" /* nn__layer_forward_relu */

typedef struct cfg {
    nn_layer_spec_t spec;
    nn_shape_t in;
    int n;
} cfg_t;

static float uniform(ei_rng_t *r, double lo, double hi)
{
    return (float)(lo + (hi - lo) * ei_rng_uniform(r));
}

static int pick(ei_rng_t *r, int lo, int hi) /* in [lo, hi] */
{
    return lo + (int)ei_rng_below(r, (uint32_t)(hi - lo + 1));
}

static void fill_uniform(float *a, size_t n, ei_rng_t *r, double lo, double hi)
{
    for (size_t i = 0; i < n; i++)
        a[i] = uniform(r, lo, hi);
}

static float *ws_new(const nn_layer_t *l, int n)
{
    /* Exactly the size asked for, so ASan catches any use beyond it. */
    size_t sz = nn_layer_workspace(l, n);
    float *ws = sz ? malloc(sz * sizeof(float)) : NULL;
    assert_true(!sz || ws);
    return ws;
}

/* name is suffix or ends in ".suffix" (a residual layer's "path.1.gamma"). */
static int ends_with(const char *name, const char *suffix)
{
    size_t n = strlen(name), k = strlen(suffix);
    return n >= k && !strcmp(name + n - k, suffix) && (n == k || name[n - k - 1] == '.');
}

/* A layer with every parameter random (positive gamma and variances), so biases, shifts and
 * running statistics all show in the output. */
static nn_layer_t *make_layer(const cfg_t *c, ei_rng_t *r)
{
    ei_err_t err = {0};
    nn_layer_t *l = nn_layer_new(&c->spec, c->in, &err);
    if (!l)
        fail_msg("nn_layer_new: %s", err.msg);
    nn_layer_init(l, r);
    for (int i = 0; i < nn_layer_param_count(l); i++) {
        nn_param_t *p = nn_layer_param(l, i);
        int positive = ends_with(p->name, "gamma") || ends_with(p->name, "running_var");
        fill_uniform(p->value->data, nn_tensor_numel(p->value), r, positive ? 0.5 : -0.5,
                     positive ? 1.5 : 0.5);
    }
    return l;
}

static nn_tensor_t *tensor_for(int n, nn_shape_t s)
{
    nn_tensor_t *t = nn_tensor_new(n, s.c, s.h, s.w);
    assert_non_null(t);
    return t;
}

static void forward(nn_layer_t *l, const nn_tensor_t *x, nn_tensor_t *y, int training)
{
    float *ws = ws_new(l, x->n);
    nn_layer_forward(l, x, y, ws, training);
    free(ws);
}

static int eff_stride(const nn_layer_spec_t *sp)
{
    return sp->stride ? sp->stride : sp->kind == NN_CONV ? 1 : sp->k;
}

/* ---- Naive references, in double, straight from the definitions. ---- */

/* Output channel o of a conv of G groups sees input channels [g0, g0 + cg): those of its
 * group, o / (O / G); its weights are [o, ch - g0, a, e]. */
static int groups_of(const nn_layer_spec_t *sp)
{
    return sp->groups > 0 ? sp->groups : 1;
}

static void ref_conv(const cfg_t *c, const float *x, const float *w, const float *b, double *y)
{
    int C = c->in.c, H = c->in.h, W = c->in.w, k = c->spec.k, p = c->spec.pad;
    int s = eff_stride(&c->spec), O = c->spec.out, G = groups_of(&c->spec), cg = C / G;
    int OH = (H + 2 * p - k) / s + 1, OW = (W + 2 * p - k) / s + 1;
    for (int n = 0; n < c->n; n++)
        for (int o = 0; o < O; o++)
            for (int i = 0; i < OH; i++)
                for (int j = 0; j < OW; j++) {
                    double acc = b[o];
                    int g0 = o / (O / G) * cg;
                    for (int ch = g0; ch < g0 + cg; ch++)
                        for (int a = 0; a < k; a++)
                            for (int e = 0; e < k; e++) {
                                int ih = i * s - p + a, iw = j * s - p + e;
                                if (ih >= 0 && ih < H && iw >= 0 && iw < W)
                                    acc += (double)w[((o * cg + ch - g0) * k + a) * k + e] *
                                           x[((n * C + ch) * H + ih) * W + iw];
                            }
                    y[((n * O + o) * OH + i) * OW + j] = acc;
                }
}

/* Rows lo..hi of output i: PyTorch's adaptive bins, or the k-window at i*s-p clipped. */
static void ref_window(const nn_layer_spec_t *sp, int i, int in, int *lo, int *hi)
{
    if (sp->size > 0) {
        *lo = (int)floor((double)i * in / sp->size);
        *hi = (int)ceil((double)(i + 1) * in / sp->size);
    } else {
        *lo = i * eff_stride(sp) - sp->pad;
        *hi = *lo + sp->k;
        *lo = *lo < 0 ? 0 : *lo;
        *hi = *hi > in ? in : *hi;
    }
}

static void ref_pool(const cfg_t *c, const float *x, double *y)
{
    const nn_layer_spec_t *sp = &c->spec;
    int H = c->in.h, W = c->in.w, s = eff_stride(sp);
    int OH = sp->size ? sp->size : (H + 2 * sp->pad - sp->k) / s + 1;
    int OW = sp->size ? sp->size : (W + 2 * sp->pad - sp->k) / s + 1;
    for (int pl = 0; pl < c->n * c->in.c; pl++)
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                int h0, h1, w0, w1;
                ref_window(sp, i, H, &h0, &h1);
                ref_window(sp, j, W, &w0, &w1);
                double best = -INFINITY, sum = 0;
                for (int a = h0; a < h1; a++)
                    for (int e = w0; e < w1; e++) {
                        double v = x[(pl * H + a) * W + e];
                        best = v > best ? v : best;
                        sum += v;
                    }
                double area = sp->size ? (h1 - h0) * (w1 - w0) : sp->k * sp->k;
                y[(pl * OH + i) * OW + j] = sp->kind == NN_MAXPOOL ? best : sum / area;
            }
}

static void ref_bn(const cfg_t *c, const float *x, nn_layer_t *l, int training, double *y)
{
    int C = c->in.c, hw = c->in.h * c->in.w;
    const float *g = nn_layer_param(l, 0)->value->data, *b = nn_layer_param(l, 1)->value->data;
    const float *rm = nn_layer_param(l, 2)->value->data, *rv = nn_layer_param(l, 3)->value->data;
    for (int ch = 0; ch < C; ch++) {
        double mean = 0, var = 0, m = (double)c->n * hw;
        for (int n = 0; n < c->n; n++)
            for (int i = 0; i < hw; i++)
                mean += x[(n * C + ch) * hw + i] / m;
        for (int n = 0; n < c->n; n++)
            for (int i = 0; i < hw; i++)
                var += pow(x[(n * C + ch) * hw + i] - mean, 2) / m;
        if (!training)
            mean = rm[ch], var = rv[ch];
        for (int n = 0; n < c->n; n++)
            for (int i = 0; i < hw; i++) {
                int at = (n * C + ch) * hw + i;
                y[at] = g[ch] * (x[at] - mean) / sqrt(var + 1e-5) + b[ch];
            }
    }
}

static void forward(nn_layer_t *l, const nn_tensor_t *x, nn_tensor_t *y, int training);

/* A residual layer's chain run layer by layer, each made on its own (and checked against
 * its naive reference in the other tests) with the residual layer's parameters from
 * index *pi on. Returns the output; the caller destroys it. */
static nn_tensor_t *ref_chain(nn_layer_t *l, int *pi, const nn_layer_spec_t *specs, int count,
                              const nn_tensor_t *x, int training)
{
    nn_tensor_t *cur = tensor_for(x->n, (nn_shape_t){x->c, x->h, x->w});
    memcpy(cur->data, x->data, nn_tensor_numel(x) * sizeof(float));
    for (int i = 0; i < count; i++) {
        ei_err_t err = {0};
        nn_layer_t *sub = nn_layer_new(&specs[i], (nn_shape_t){cur->c, cur->h, cur->w}, &err);
        if (!sub)
            fail_msg("reference chain layer %d: %s", i, err.msg);
        for (int j = 0; j < nn_layer_param_count(sub); j++) {
            nn_param_t *d = nn_layer_param(sub, j), *src = nn_layer_param(l, (*pi)++);
            assert_int_equal(nn_tensor_numel(d->value), nn_tensor_numel(src->value));
            memcpy(d->value->data, src->value->data, nn_tensor_numel(d->value) * sizeof(float));
        }
        nn_tensor_t *y = tensor_for(x->n, nn_layer_out_shape(sub));
        forward(sub, cur, y, training);
        nn_tensor_destroy(&cur);
        nn_layer_destroy(&sub);
        cur = y;
    }
    return cur;
}

/* y = the layer's output on x, by the references above. */
static void reference(nn_layer_t *l, const cfg_t *c, const float *x, int training, double *y)
{
    size_t in = (size_t)c->in.c * c->in.h * c->in.w, total = in * c->n;
    switch (c->spec.kind) {
    case NN_RESIDUAL: {
        nn_tensor_t xv = nn_tensor_view((float *)x, c->n, c->in.c, c->in.h, c->in.w);
        int pi = 0;
        nn_tensor_t *a = ref_chain(l, &pi, c->spec.path, c->spec.npath, &xv, training);
        nn_tensor_t *b = ref_chain(l, &pi, c->spec.shortcut, c->spec.nshortcut, &xv, training);
        assert_int_equal(pi, nn_layer_param_count(l));
        assert_int_equal(nn_tensor_numel(a), nn_tensor_numel(b));
        for (size_t i = 0; i < nn_tensor_numel(a); i++)
            y[i] = (double)a->data[i] + b->data[i];
        nn_tensor_destroy(&a);
        nn_tensor_destroy(&b);
        break;
    }
    case NN_CONV:
        ref_conv(c, x, nn_layer_param(l, 0)->value->data, nn_layer_param(l, 1)->value->data, y);
        break;
    case NN_BN:
        ref_bn(c, x, l, training, y);
        break;
    case NN_MAXPOOL:
    case NN_AVGPOOL:
        ref_pool(c, x, y);
        break;
    case NN_RELU:
        for (size_t i = 0; i < total; i++)
            y[i] = x[i] > 0 ? x[i] : 0;
        break;
    case NN_FLATTEN:
        for (size_t i = 0; i < total; i++)
            y[i] = x[i];
        break;
    case NN_GAP: {
        size_t hw = (size_t)c->in.h * c->in.w;
        for (size_t pl = 0; pl < total / hw; pl++) {
            y[pl] = 0;
            for (size_t i = 0; i < hw; i++)
                y[pl] += x[pl * hw + i] / (double)hw;
        }
        break;
    }
    case NN_DENSE: {
        const float *w = nn_layer_param(l, 0)->value->data, *b = nn_layer_param(l, 1)->value->data;
        for (int n = 0; n < c->n; n++)
            for (int o = 0; o < c->spec.out; o++) {
                y[n * c->spec.out + o] = b[o];
                for (size_t i = 0; i < in; i++)
                    y[n * c->spec.out + o] += (double)w[o * in + i] * x[n * in + i];
            }
        break;
    }
    default:
        fail_msg("no reference for kind %d", c->spec.kind);
    }
}

/* ---- Random configurations, valid by construction. ---- */

static cfg_t random_cfg(ei_rng_t *r, nn_kind_t kind)
{
    static const int ks[] = {1, 3, 5, 2};
    cfg_t c = {{kind, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {pick(r, 1, 4), 0, 0}, pick(r, 1, 3)};
    nn_layer_spec_t *sp = &c.spec;
    sp->k = ks[ei_rng_below(r, kind == NN_CONV ? 3 : 4)];
    sp->stride = pick(r, 0, 2);
    sp->pad = kind == NN_CONV || kind == NN_MAXPOOL ? pick(r, 0, sp->k - 1) : 0;
    sp->out = pick(r, 1, 5);
    int side = sp->k - 2 * sp->pad > 1 ? sp->k - 2 * sp->pad : 1;
    c.in.h = pick(r, side, side + 7);
    c.in.w = pick(r, side, side + 7);
    if (kind == NN_AVGPOOL && ei_rng_below(r, 2))
        sp->size = pick(r, 1, c.in.h < c.in.w ? c.in.h : c.in.w);
    return c;
}

/* Forward of the layer on random x equals the reference within 1e-4 relative. */
static void check_forward(const cfg_t *c, ei_rng_t *r, int training)
{
    nn_layer_t *l = make_layer(c, r);
    nn_tensor_t *x = tensor_for(c->n, c->in), *y = tensor_for(c->n, nn_layer_out_shape(l));
    fill_uniform(x->data, nn_tensor_numel(x), r, -1, 1);
    double *want = calloc(nn_tensor_numel(y), sizeof *want);
    reference(l, c, x->data, training, want);
    forward(l, x, y, training);
    for (size_t i = 0; i < nn_tensor_numel(y); i++)
        if (fabs(y->data[i] - want[i]) > 1e-4 * (1 + fabs(want[i])))
            fail_msg("%s k%d s%d p%d size%d in %dx%dx%d n%d: y[%zu] = %g, want %g",
                     nn_kind_name(c->spec.kind), c->spec.k, c->spec.stride, c->spec.pad,
                     c->spec.size, c->in.c, c->in.h, c->in.w, c->n, i, y->data[i], want[i]);
    free(want);
    nn_tensor_destroy(&x);
    nn_tensor_destroy(&y);
    nn_layer_destroy(&l);
}

static void check_forward_random(nn_kind_t kind, int count, int training)
{
    ei_rng_t r;
    ei_rng_seed(&r, 1000 + kind);
    for (int i = 0; i < count; i++) {
        cfg_t c = random_cfg(&r, kind);
        check_forward(&c, &r, training);
    }
}

static void test_conv_forward(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 1);
    /* kind, out, k, stride, pad, size; in c, h, w; n */
    /* clang-format off */
    static const cfg_t fixed[] = {
        {{NN_CONV, 4, 1, 1, 0, 0, 0, 0, NULL, NULL, 0, 0}, {3, 5, 7}, 2},  /* pointwise: no im2col */
        {{NN_CONV, 3, 1, 2, 0, 0, 0, 0, NULL, NULL, 0, 0}, {2, 7, 6}, 2},  /* 1x1 stride 2 */
        {{NN_CONV, 5, 3, 2, 1, 0, 0, 0, NULL, NULL, 0, 0}, {3, 9, 7}, 3},  /* stride 2, padding */
        {{NN_CONV, 3, 5, 1, 2, 0, 0, 0, NULL, NULL, 0, 0}, {2, 8, 11}, 2}, /* 5x5 same padding, non-square */
        {{NN_CONV, 2, 5, 3, 4, 0, 0, 0, NULL, NULL, 0, 0}, {1, 3, 4}, 1},  /* padding larger than the input */
        {{NN_CONV, 8, 3, 0, 1, 0, 0, 0, NULL, NULL, 0, 0}, {4, 6, 6}, 4},  /* stride 0 means 1 */
        {{NN_CONV, 2, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {2, 1, 5}, 2},  /* same padding, taps that see only pads */
        {{NN_CONV, 2, 5, 1, 2, 0, 0, 0, NULL, NULL, 0, 0}, {2, 2, 2}, 2},
        {{NN_CONV, 3, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {1, 4, 1}, 1},
        {{NN_CONV, 6, 3, 1, 1, 0, 2, 0, NULL, NULL, 0, 0}, {4, 6, 5}, 2},  /* 2 groups */
        {{NN_CONV, 6, 3, 2, 1, 0, 3, 0, NULL, NULL, 0, 0}, {3, 7, 7}, 2},  /* depthwise, x2 */
        {{NN_CONV, 4, 1, 1, 0, 0, 4, 0, NULL, NULL, 0, 0}, {4, 5, 5}, 2},  /* depthwise 1x1 */
        {{NN_CONV, 6, 5, 1, 2, 0, 3, 0, NULL, NULL, 0, 0}, {6, 4, 9}, 1},  /* 3 groups, 5x5 */
    };
    /* clang-format on */
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        check_forward(&fixed[i], &r, 0);
    check_forward_random(NN_CONV, 100, 0);
}

static void test_pool_forward(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 2);
    /* clang-format off */
    static const cfg_t fixed[] = {
        {{NN_MAXPOOL, 0, 2, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {3, 8, 6}, 2},
        {{NN_MAXPOOL, 0, 3, 2, 1, 0, 0, 0, NULL, NULL, 0, 0}, {2, 7, 9}, 2},
        {{NN_AVGPOOL, 0, 2, 2, 0, 0, 0, 0, NULL, NULL, 0, 0}, {3, 7, 5}, 2},
        {{NN_AVGPOOL, 0, 0, 0, 0, 3, 0, 0, NULL, NULL, 0, 0}, {2, 7, 5}, 2}, /* adaptive, bins overlap */
        {{NN_AVGPOOL, 0, 0, 0, 0, 4, 0, 0, NULL, NULL, 0, 0}, {1, 10, 4}, 1},
    };
    /* clang-format on */
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        check_forward(&fixed[i], &r, 0);
    check_forward_random(NN_MAXPOOL, 60, 0);
    check_forward_random(NN_AVGPOOL, 60, 0);
}

static void test_other_forward(void **state)
{
    (void)state;
    check_forward_random(NN_BN, 15, 1);
    check_forward_random(NN_BN, 15, 0);
    check_forward_random(NN_RELU, 5, 0);
    check_forward_random(NN_GAP, 5, 0);
    check_forward_random(NN_DENSE, 15, 0);
    check_forward_random(NN_FLATTEN, 5, 0);
    ei_rng_t r;
    ei_rng_seed(&r, 3);
    cfg_t one = {{NN_DENSE, 7, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {3, 2, 2}, 1}; /* n = 1 takes sgemv */
    check_forward(&one, &r, 0);
}

/* ---- Gradients against central differences. ---- */

enum { X_UNIFORM, X_DISTINCT, X_OFF_ZERO };

static void fill_input(float *x, size_t n, int how, ei_rng_t *r)
{
    if (how == X_DISTINCT) { /* a shuffled grid: no ties, gaps of 2/n */
        int *perm = malloc(n * sizeof *perm);
        for (size_t i = 0; i < n; i++)
            perm[i] = (int)i;
        ei_rng_shuffle(r, perm, (int)n);
        for (size_t i = 0; i < n; i++)
            x[i] = 2.0f * perm[i] / (float)n - 1;
        free(perm);
        return;
    }
    fill_uniform(x, n, r, -1, 1);
    if (how == X_OFF_ZERO)
        for (size_t i = 0; i < n; i++)
            x[i] += x[i] < 0 ? -0.1f : 0.1f;
}

static double loss_of(nn_layer_t *l, const nn_tensor_t *x, nn_tensor_t *y, const float *r,
                      int training)
{
    forward(l, x, y, training);
    double acc = 0;
    for (size_t i = 0; i < nn_tensor_numel(y); i++)
        acc += (double)y->data[i] * r[i];
    return acc;
}

/* d loss / d v[i] by central differences, v being x or a parameter of l. */
static double numeric(nn_layer_t *l, const nn_tensor_t *x, nn_tensor_t *y, const float *r,
                      int training, float *v, float h)
{
    float keep = *v;
    *v = keep + h;
    double up = loss_of(l, x, y, r, training);
    *v = keep - h;
    double down = loss_of(l, x, y, r, training);
    *v = keep;
    return (up - down) / (2.0 * h);
}

static void expect_close(const char *what, size_t i, double got, double want, double tol)
{
    if (fabs(got - want) > tol * (1 + fabs(want)))
        fail_msg("%s[%zu]: analytic %.7g, numeric %.7g", what, i, got, want);
}

/* Several ReLUs in a chain (residual layers, batch norm spreading a change over the batch)
 * make kinks likely somewhere: then the numeric derivative closest to the analytic one
 * over steps h, h/3, ..., h/81 is taken (a right gradient agrees at some step, a wrong one
 * at none). */
static int several_steps;

static double numeric_near(nn_layer_t *l, const nn_tensor_t *x, nn_tensor_t *y, const float *r,
                           int training, float *v, float h, double got)
{
    double best = numeric(l, x, y, r, training, v, h);
    for (int i = 0; several_steps && i < 4; i++) {
        h /= 3;
        double d = numeric(l, x, y, r, training, v, h);
        best = fabs(d - got) < fabs(best - got) ? d : best;
    }
    return best;
}

static void check_grads(const cfg_t *c, int how, int training, float h, double tol, uint64_t seed)
{
    ei_rng_t r;
    ei_rng_seed(&r, seed);
    nn_layer_t *l = make_layer(c, &r);
    nn_shape_t os = nn_layer_out_shape(l);
    nn_tensor_t *x = tensor_for(c->n, c->in), *dx = tensor_for(c->n, c->in);
    nn_tensor_t *y = tensor_for(c->n, os), *dy = tensor_for(c->n, os);
    fill_input(x->data, nn_tensor_numel(x), how, &r);
    fill_uniform(dy->data, nn_tensor_numel(dy), &r, -1, 1);
    forward(l, x, y, training);
    nn_layer_zero_grad(l);
    float *ws = ws_new(l, c->n);
    nn_layer_backward(l, x, y, dy, dx, ws);
    free(ws);
    for (size_t i = 0; i < nn_tensor_numel(x); i++)
        expect_close("dx", i, dx->data[i],
                     numeric_near(l, x, y, dy->data, training, &x->data[i], h, dx->data[i]), tol);
    for (int p = 0; p < nn_layer_param_count(l); p++) {
        nn_param_t *pa = nn_layer_param(l, p);
        for (size_t i = 0; pa->grad && i < nn_tensor_numel(pa->value); i++)
            expect_close(pa->name, i, pa->grad->data[i],
                         numeric_near(l, x, y, dy->data, training, &pa->value->data[i], h,
                                      pa->grad->data[i]),
                         tol);
    }
    nn_tensor_destroy(&x);
    nn_tensor_destroy(&dx);
    nn_tensor_destroy(&y);
    nn_tensor_destroy(&dy);
    nn_layer_destroy(&l);
}

/* ---- Batched conv against per-sample runs and naive references. ---- */

/* dW, db and dx of conv from the definition, in double: every output gradient dy[n,o,i,j]
 * reaches the weights and inputs its forward term touched. */
static void ref_conv_backward(const cfg_t *c, const float *x, const float *w, const float *dy,
                              double *dw, double *db, double *dx)
{
    int C = c->in.c, H = c->in.h, W = c->in.w, k = c->spec.k, p = c->spec.pad;
    int s = eff_stride(&c->spec), O = c->spec.out, G = groups_of(&c->spec), cg = C / G;
    int OH = (H + 2 * p - k) / s + 1, OW = (W + 2 * p - k) / s + 1;
    memset(dw, 0, (size_t)O * cg * k * k * sizeof *dw);
    memset(db, 0, (size_t)O * sizeof *db);
    memset(dx, 0, (size_t)c->n * C * H * W * sizeof *dx);
    for (int n = 0; n < c->n; n++)
        for (int o = 0; o < O; o++)
            for (int i = 0; i < OH; i++)
                for (int j = 0; j < OW; j++) {
                    double g = dy[((n * O + o) * OH + i) * OW + j];
                    db[o] += g;
                    int g0 = o / (O / G) * cg;
                    for (int ch = g0; ch < g0 + cg; ch++)
                        for (int a = 0; a < k; a++)
                            for (int e = 0; e < k; e++) {
                                int ih = i * s - p + a, iw = j * s - p + e;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= W)
                                    continue;
                                size_t wi = (size_t)((o * cg + ch - g0) * k + a) * k + e;
                                size_t xi = (size_t)((n * C + ch) * H + ih) * W + iw;
                                dw[wi] += g * x[xi];
                                dx[xi] += g * w[wi];
                            }
                }
}

static void expect_near(const char *what, const cfg_t *c, size_t i, double got, double want,
                        double tol)
{
    if (fabs(got - want) > tol * (1 + fabs(want)))
        fail_msg("%s: conv k%d s%d p%d out %d in %dx%dx%d n%d: [%zu] = %.8g, want %.8g", what,
                 c->spec.k, c->spec.stride, c->spec.pad, c->spec.out, c->in.c, c->in.h, c->in.w,
                 c->n, i, got, want);
}

/* One conv on a batch of c->n: forward (plain and with the ReLU fused) and backward of the
 * whole batch against each sample run alone and against the references. Batches are large
 * enough and maps wide enough that the layer cuts them into several groups of samples,
 * the last one ragged. */
static void check_conv_batched(const cfg_t *c, ei_rng_t *r)
{
    nn_layer_t *l = make_layer(c, r);
    nn_shape_t os = nn_layer_out_shape(l);
    size_t in_sz = nn_shape_numel(c->in), out_sz = nn_shape_numel(os);
    size_t nw = nn_tensor_numel(nn_layer_param(l, 0)->value), nx = in_sz * c->n;
    nn_tensor_t *x = tensor_for(c->n, c->in), *y = tensor_for(c->n, os);
    nn_tensor_t *yr = tensor_for(c->n, os), *dy = tensor_for(c->n, os);
    nn_tensor_t *dx = tensor_for(c->n, c->in), *dx1 = tensor_for(c->n, c->in);
    nn_tensor_t *y1 = tensor_for(1, os);
    fill_uniform(x->data, nx, r, -1, 1);
    fill_uniform(dy->data, out_sz * c->n, r, -1, 1);
    double *want = calloc(out_sz * c->n, sizeof *want), *rdw = calloc(nw, sizeof *rdw);
    double *rdb = calloc((size_t)os.c, sizeof *rdb), *rdx = calloc(nx, sizeof *rdx);
    float *ws = ws_new(l, c->n);
    reference(l, c, x->data, 0, want);
    nn_layer_forward(l, x, y, ws, 0);
    nn__layer_forward_relu(l, x, yr, ws, 0);
    for (int s = 0; s < c->n; s++) { /* the same sample alone */
        nn_tensor_t xs = nn_tensor_view(x->data + s * in_sz, 1, c->in.c, c->in.h, c->in.w);
        nn_tensor_t ys = *y1;
        float *ws1 = ws_new(l, 1);
        nn_layer_forward(l, &xs, &ys, ws1, 0);
        free(ws1);
        for (size_t i = 0; i < out_sz; i++) {
            size_t at = s * out_sz + i;
            expect_near("batched forward vs one sample", c, at, y->data[at], ys.data[i], 1e-5);
        }
    }
    for (size_t i = 0; i < out_sz * c->n; i++) {
        expect_near("batched forward vs reference", c, i, y->data[i], want[i], 1e-4);
        expect_near("fused relu", c, i, yr->data[i], y->data[i] > 0 ? y->data[i] : 0, 0);
    }
    /* A training forward (Winograd's lowering where the conv has it), plain and fused. */
    nn_layer_forward(l, x, yr, ws, 1);
    for (size_t i = 0; i < out_sz * c->n; i++)
        expect_near("training forward vs reference", c, i, yr->data[i], want[i], 1e-4);
    nn__layer_forward_relu(l, x, yr, ws, 1);
    for (size_t i = 0; i < out_sz * c->n; i++)
        expect_near("training forward, fused relu", c, i, yr->data[i],
                    want[i] > 0 ? want[i] : 0, 1e-4);
    /* Backward of the batch, then of each sample alone (grads accumulate over calls). */
    nn_param_t *pw = nn_layer_param(l, 0), *pb = nn_layer_param(l, 1);
    nn_layer_zero_grad(l);
    nn_layer_backward(l, x, y, dy, dx, ws);
    float *dw = malloc(nw * sizeof *dw), *db = malloc((size_t)os.c * sizeof *db);
    memcpy(dw, pw->grad->data, nw * sizeof *dw);
    memcpy(db, pb->grad->data, (size_t)os.c * sizeof *db);
    nn_layer_zero_grad(l);
    for (int s = 0; s < c->n; s++) {
        nn_tensor_t xs = nn_tensor_view(x->data + s * in_sz, 1, c->in.c, c->in.h, c->in.w);
        nn_tensor_t ys = nn_tensor_view(y->data + s * out_sz, 1, os.c, os.h, os.w);
        nn_tensor_t dys = nn_tensor_view(dy->data + s * out_sz, 1, os.c, os.h, os.w);
        nn_tensor_t dxs = nn_tensor_view(dx1->data + s * in_sz, 1, c->in.c, c->in.h, c->in.w);
        float *ws1 = ws_new(l, 1);
        nn_layer_backward(l, &xs, &ys, &dys, &dxs, ws1);
        free(ws1);
    }
    ref_conv_backward(c, x->data, pw->value->data, dy->data, rdw, rdb, rdx);
    for (size_t i = 0; i < nw; i++) {
        expect_near("batched dW vs per sample", c, i, dw[i], pw->grad->data[i], 1e-4);
        expect_near("batched dW vs reference", c, i, dw[i], rdw[i], 1e-4);
    }
    for (int o = 0; o < os.c; o++) {
        expect_near("batched db vs per sample", c, (size_t)o, db[o], pb->grad->data[o], 1e-4);
        expect_near("batched db vs reference", c, (size_t)o, db[o], rdb[o], 1e-4);
    }
    for (size_t i = 0; i < nx; i++) {
        expect_near("batched dx vs per sample", c, i, dx->data[i], dx1->data[i], 1e-5);
        expect_near("batched dx vs reference", c, i, dx->data[i], rdx[i], 1e-4);
    }
    free(ws);
    free(dw);
    free(db);
    free(want);
    free(rdw);
    free(rdb);
    free(rdx);
    nn_tensor_destroy(&x);
    nn_tensor_destroy(&y);
    nn_tensor_destroy(&yr);
    nn_tensor_destroy(&dy);
    nn_tensor_destroy(&dx);
    nn_tensor_destroy(&dx1);
    nn_tensor_destroy(&y1);
    nn_layer_destroy(&l);
}

static void test_conv_batched(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 13);
    /* clang-format off */
    static const cfg_t fixed[] = {
        {{NN_CONV, 16, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {8, 7, 7}, 45},    /* 21 samples a group: 21, 21, 3 */
        {{NN_CONV, 8, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {4, 20, 20}, 7},    /* 3 a group, 7 = 3 + 3 + 1 */
        {{NN_CONV, 4, 3, 2, 1, 0, 0, 0, NULL, NULL, 0, 0}, {3, 30, 30}, 5},    /* stride 2 */
        {{NN_CONV, 6, 1, 1, 0, 0, 0, 0, NULL, NULL, 0, 0}, {5, 12, 12}, 19},   /* pointwise */
        {{NN_CONV, 5, 1, 1, 0, 0, 0, 0, NULL, NULL, 0, 0}, {3, 40, 40}, 3},    /* pointwise, one sample a group */
        {{NN_CONV, 3, 5, 1, 2, 0, 0, 0, NULL, NULL, 0, 0}, {2, 9, 11}, 30},
        {{NN_CONV, 4, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {200, 6, 6}, 9},    /* col too large for many samples */
        {{NN_CONV, 8, 3, 1, 1, 0, 4, 0, NULL, NULL, 0, 0}, {8, 7, 7}, 45},     /* 4 groups */
        {{NN_CONV, 16, 3, 1, 1, 0, 16, 0, NULL, NULL, 0, 0}, {16, 14, 14}, 9}, /* depthwise */
        {{NN_CONV, 12, 3, 2, 1, 0, 6, 0, NULL, NULL, 0, 0}, {6, 15, 15}, 7},   /* depthwise x2, stride 2 */
        {{NN_CONV, 6, 1, 1, 0, 0, 3, 0, NULL, NULL, 0, 0}, {6, 12, 12}, 19},   /* grouped pointwise */
        {{NN_CONV, 4, 1, 1, 0, 0, 2, 0, NULL, NULL, 0, 0}, {4, 40, 40}, 3},    /* the same, a sample a group */
        /* training through Winograd's lowering: the forward (16 or more input channels)
           and dx (16 or more output channels), F(2x2) from 12x12 up, F(4x4) below */
        {{NN_CONV, 32, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {16, 14, 14}, 9},
        {{NN_CONV, 16, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {24, 7, 7}, 20},
        {{NN_CONV, 20, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {3, 12, 13}, 5},    /* dx only */
        {{NN_CONV, 80, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {16, 8, 8}, 3},     /* forward only */
        {{NN_CONV, 17, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {18, 13, 9}, 4},    /* F(4x4), ragged tiles */
        /* dW through Winograd F(3x3, 2x2) (16 or more input channels, maps of 12x12 and
           up), odd sides: the last tiles overhang */
        {{NN_CONV, 8, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {16, 13, 15}, 6},
    };
    /* clang-format on */
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        check_conv_batched(&fixed[i], &r);
    for (int i = 0; i < 25; i++) { /* random shapes, batches up to 40 */
        cfg_t c = random_cfg(&r, NN_CONV);
        c.n = pick(&r, 1, 40);
        c.in.h += pick(&r, 0, 24);
        c.in.w += pick(&r, 0, 24);
        c.in.c = pick(&r, 1, 12);
        check_conv_batched(&c, &r);
    }
}

/* A conv prepared for inference (nn_layer_prepare_inference): a 3x3 stride-1 conv of one
 * channel group with at least 16 input channels on a map of at least 12x12 gets
 * Winograd's F(2x2, 3x3), on maps of 6x6 to 11x11 F(4x4, 3x3) (wino), every other conv
 * keeps im2col. Either way the batch
 * equals the naive reference within 1e-4 relative and each sample run alone within 1e-5
 * (OpenBLAS may sum a product of another width in another order), the fused ReLU is max(0, .) of the plain output exactly, and the layer prepared with
 * nn_set_winograd(0) (im2col) agrees within 1e-4. */
static void check_conv_prepared(const cfg_t *c, ei_rng_t *r, int wino)
{
    nn_layer_t *l = make_layer(c, r), *li = make_layer(c, r);
    for (int i = 0; i < 2; i++) /* the same weights in both */
        memcpy(nn_layer_param(li, i)->value->data, nn_layer_param(l, i)->value->data,
               nn_tensor_numel(nn_layer_param(l, i)->value) * sizeof(float));
    nn_layer_prepare_inference(l);
    nn_set_winograd(0);
    nn_layer_prepare_inference(li);
    nn_set_winograd(1);
    if ((l->wino != NULL) != wino || li->wino)
        fail_msg("conv k%d s%d p%d g%d in %dx%dx%d: Winograd %s, want %s", c->spec.k,
                 c->spec.stride, c->spec.pad, c->spec.groups, c->in.c, c->in.h, c->in.w,
                 l->wino ? "on" : "off", wino ? "on" : "off");
    nn_shape_t os = nn_layer_out_shape(l);
    size_t in_sz = nn_shape_numel(c->in), out_sz = nn_shape_numel(os);
    nn_tensor_t *x = tensor_for(c->n, c->in), *y = tensor_for(c->n, os);
    nn_tensor_t *yr = tensor_for(c->n, os), *yi = tensor_for(c->n, os), *y1 = tensor_for(1, os);
    fill_uniform(x->data, in_sz * c->n, r, -1, 1);
    double *want = calloc(out_sz * c->n, sizeof *want);
    reference(l, c, x->data, 0, want);
    float *ws = ws_new(l, c->n), *wsi = ws_new(li, c->n), *ws1 = ws_new(l, 1);
    nn_layer_forward(l, x, y, ws, 0);
    nn__layer_forward_relu(l, x, yr, ws, 0);
    nn_layer_forward(li, x, yi, wsi, 0);
    for (size_t i = 0; i < out_sz * c->n; i++) {
        expect_near("prepared forward vs reference", c, i, y->data[i], want[i], 1e-4);
        expect_near("prepared vs im2col", c, i, y->data[i], yi->data[i], 1e-4);
        expect_near("fused relu", c, i, yr->data[i], y->data[i] > 0 ? y->data[i] : 0, 0);
    }
    /* F(4x4)'s transforms scale the products' rounding by up to 100 (B^T's 4 and 5, A^T's
       8), so a sample alone (products of another width, summed in another order) agrees
       with its batch only as closely as both agree with the reference. */
    double tol1 = nn__wino_tile(l) == 4 && l->wino ? 1e-4 : 1e-5;
    for (int s = 0; s < c->n; s++) {
        nn_tensor_t xs = nn_tensor_view(x->data + s * in_sz, 1, c->in.c, c->in.h, c->in.w);
        nn_layer_forward(l, &xs, y1, ws1, 0);
        for (size_t i = 0; i < out_sz; i++)
            expect_near("prepared batch vs one sample", c, s * out_sz + i, y->data[s * out_sz + i],
                        y1->data[i], tol1);
    }
    free(want);
    free(ws);
    free(wsi);
    free(ws1);
    nn_tensor_destroy(&x);
    nn_tensor_destroy(&y);
    nn_tensor_destroy(&yr);
    nn_tensor_destroy(&yi);
    nn_tensor_destroy(&y1);
    nn_layer_destroy(&l);
    nn_layer_destroy(&li);
}

static void check_conv_prepared_all(ei_rng_t *r)
{
    /* clang-format off */
    static const struct { cfg_t c; int wino; } fixed[] = {
        {{{NN_CONV, 8, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {16, 12, 12}, 9}, 1},  /* 36 tiles, 8 a group: 8 + 1 */
        {{{NN_CONV, 5, 3, 1, 0, 0, 0, 0, NULL, NULL, 0, 0}, {20, 17, 15}, 6}, 1},  /* no padding, odd 15x13 */
        {{{NN_CONV, 7, 3, 1, 2, 0, 0, 0, NULL, NULL, 0, 0}, {16, 12, 15}, 3}, 1},  /* padding 2: 14x17 */
        {{{NN_CONV, 16, 3, 0, 1, 0, 0, 0, NULL, NULL, 0, 0}, {24, 28, 28}, 2}, 1}, /* stride 0 means 1 */
        {{{NN_CONV, 3, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {17, 13, 12}, 1}, 1},  /* one sample, odd */
        {{{NN_CONV, 8, 3, 2, 1, 0, 0, 0, NULL, NULL, 0, 0}, {16, 14, 14}, 5}, 0},  /* stride 2 */
        {{{NN_CONV, 8, 3, 1, 1, 0, 2, 0, NULL, NULL, 0, 0}, {32, 14, 14}, 5}, 0},  /* 2 groups */
        {{{NN_CONV, 16, 3, 1, 1, 0, 16, 0, NULL, NULL, 0, 0}, {16, 14, 14}, 3}, 0}, /* depthwise */
        {{{NN_CONV, 8, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {15, 14, 14}, 5}, 0},  /* too few channels */
        {{{NN_CONV, 8, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {16, 11, 14}, 5}, 1},  /* F(4x4): 11x14 */
        {{{NN_CONV, 16, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {64, 7, 7}, 70}, 1},  /* F(4x4), 7x7 in 8x8 */
        {{{NN_CONV, 9, 3, 1, 0, 0, 0, 0, NULL, NULL, 0, 0}, {16, 10, 13}, 4}, 1},  /* F(4x4) unpadded, 8x11 */
        {{{NN_CONV, 5, 3, 1, 2, 0, 0, 0, NULL, NULL, 0, 0}, {20, 6, 9}, 3}, 1},    /* F(4x4), padding 2: 8x11 */
        {{{NN_CONV, 8, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {16, 6, 30}, 2}, 1},   /* F(4x4), 6 rows */
        {{{NN_CONV, 8, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {16, 5, 14}, 5}, 0},   /* map too small */
        {{{NN_CONV, 32, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {128, 3, 3}, 64}, 0}, /* 3x3: im2col */
        {{{NN_CONV, 8, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {65, 7, 7}, 3}, 0},    /* F(4x4): too many channels */
        {{{NN_CONV, 8, 5, 1, 2, 0, 0, 0, NULL, NULL, 0, 0}, {16, 14, 14}, 3}, 0},  /* 5x5 */
        {{{NN_CONV, 8, 1, 1, 0, 0, 0, 0, NULL, NULL, 0, 0}, {16, 14, 14}, 3}, 0},  /* pointwise */
    };
    /* clang-format on */
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        check_conv_prepared(&fixed[i].c, r, fixed[i].wino);
    for (int i = 0; i < 12; i++) { /* random eligible shapes, batches up to 12 */
        cfg_t c = {{NN_CONV, pick(r, 1, 20), 3, 1, pick(r, 0, 2), 0, 0, 0, NULL, NULL, 0, 0},
                   {pick(r, 16, 24), pick(r, 14, 30), pick(r, 14, 30)}, pick(r, 1, 12)};
        check_conv_prepared(&c, r, 1);
    }
    for (int i = 0; i < 12; i++) { /* random F(4x4) shapes (maps 6..11), batches up to 40 */
        int p = pick(r, 0, 2);
        cfg_t c = {{NN_CONV, pick(r, 1, 40), 3, 1, p, 0, 0, 0, NULL, NULL, 0, 0},
                   {pick(r, 16, 64), pick(r, 8 - 2 * p, 13 - 2 * p), pick(r, 8 - 2 * p, 13 - 2 * p)},
                   pick(r, 1, 40)};
        check_conv_prepared(&c, r, 1);
    }
}

static void test_conv_prepared(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 19);
    check_conv_prepared_all(&r);
    assert_int_equal(nn_set_threads(2), 0); /* layers made now have a share for each */
    check_conv_prepared_all(&r);
    assert_int_equal(nn_set_threads(1), 0);
}

/* A prepared Winograd conv, its ReLU and a 2x2 stride-2 maxpool in one pass
 * (nn__conv_forward_relu_pool) give exactly what the conv with the ReLU fused and the pool
 * after it give, bit for bit: F(2x2) and F(4x4) tiles, even and odd maps (the pool drops
 * the last row and column), ragged groups of samples. */
static void check_conv_pool(const cfg_t *c, ei_rng_t *r)
{
    nn_layer_t *l = make_layer(c, r);
    nn_layer_prepare_inference(l);
    nn_shape_t os = nn_layer_out_shape(l);
    nn_layer_spec_t ps = {.kind = NN_MAXPOOL, .k = 2};
    ei_err_t err = {0};
    nn_layer_t *pool = nn_layer_new(&ps, os, &err);
    assert_non_null(pool);
    assert_true(nn__conv_pool_fusable(l, pool));
    nn_shape_t pshape = nn_layer_out_shape(pool);
    nn_tensor_t *x = tensor_for(c->n, c->in), *y = tensor_for(c->n, os);
    nn_tensor_t *p = tensor_for(c->n, pshape), *pf = tensor_for(c->n, pshape);
    fill_uniform(x->data, nn_shape_numel(c->in) * c->n, r, -1, 1);
    float *ws = ws_new(l, c->n);
    nn__layer_forward_relu(l, x, y, ws, 0);
    nn_layer_forward(pool, y, p, NULL, 0);
    nn__conv_forward_relu_pool(l, x, pf, ws);
    for (size_t i = 0; i < nn_shape_numel(pshape) * c->n; i++)
        if (memcmp(&p->data[i], &pf->data[i], sizeof(float)))
            fail_msg("conv+relu+maxpool in %dx%dx%d n%d: [%zu] = %.9g, want %.9g", c->in.c,
                     c->in.h, c->in.w, c->n, i, pf->data[i], p->data[i]);
    free(ws);
    nn_tensor_destroy(&x);
    nn_tensor_destroy(&y);
    nn_tensor_destroy(&p);
    nn_tensor_destroy(&pf);
    nn_layer_destroy(&pool);
    nn_layer_destroy(&l);
}

static void test_conv_pool(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 23);
    /* clang-format off */
    static const cfg_t fixed[] = {
        {{NN_CONV, 32, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {16, 28, 28}, 3},  /* F(2x2), the model's block 2 */
        {{NN_CONV, 8, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {16, 15, 13}, 9},   /* F(2x2), odd map */
        {{NN_CONV, 16, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {64, 7, 7}, 70},   /* F(4x4), the model's block 7 */
        {{NN_CONV, 8, 3, 1, 0, 0, 0, 0, NULL, NULL, 0, 0}, {20, 12, 10}, 5},   /* F(4x4), 10x8 */
    };
    /* clang-format on */
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        check_conv_pool(&fixed[i], &r);
    for (int i = 0; i < 10; i++) {
        cfg_t c = {{NN_CONV, pick(&r, 1, 20), 3, 1, pick(&r, 0, 2), 0, 0, 0, NULL, NULL, 0, 0},
                   {pick(&r, 16, 40), pick(&r, 8, 30), pick(&r, 8, 30)}, pick(&r, 1, 20)};
        check_conv_pool(&c, &r);
    }
    assert_int_equal(nn_set_threads(2), 0);
    check_conv_pool(&fixed[2], &r);
    assert_int_equal(nn_set_threads(1), 0);
}

/* max(0, .) of a reference map when relu, then its 2x2 stride-2 maxpool when pool (the
 * whole windows only): in place, *h and *w updated. */
static void ref_relu_pool(double *y, int n, int c, int *h, int *w, int relu, int pool)
{
    size_t total = (size_t)n * c * *h * *w;
    for (size_t i = 0; relu && i < total; i++)
        y[i] = y[i] > 0 ? y[i] : 0;
    if (!pool)
        return;
    int ph = *h / 2, pw = *w / 2;
    for (int p = 0; p < n * c; p++) /* in place: window (i, j) is read before it is written */
        for (int i = 0; i < ph; i++)
            for (int j = 0; j < pw; j++) {
                const double *a = y + (size_t)p * *h * *w + (size_t)(2 * i) * *w + 2 * j;
                double m = fmax(fmax(a[0], a[1]), fmax(a[*w], a[*w + 1]));
                y[(size_t)p * ph * pw + (size_t)i * pw + j] = m;
            }
    *h = ph;
    *w = pw;
}

/* One of two convs on the same map run as a Winograd pair against its reference (1e-4
 * relative) and against the layer run alone (1e-5 for F(2x2), 1e-4 for F(4x4), as a
 * sample alone against its batch). */
static void check_pair_side(const char *what, nn_layer_t *l, const cfg_t *c, const float *x,
                            const nn_tensor_t *xt, const nn_tensor_t *y, int relu, int pool)
{
    nn_shape_t os = nn_layer_out_shape(l);
    int h = os.h, w = os.w;
    double *want = calloc(nn_shape_numel(os) * c->n, sizeof *want);
    assert_non_null(want);
    reference(l, c, x, 0, want);
    ref_relu_pool(want, c->n, os.c, &h, &w, relu, pool);
    nn_tensor_t *alone = nn_tensor_new(c->n, os.c, h, w);
    float *ws = ws_new(l, c->n);
    if (pool)
        nn__conv_forward_relu_pool(l, xt, alone, ws);
    else if (relu)
        nn__layer_forward_relu(l, xt, alone, ws, 0);
    else
        nn_layer_forward(l, xt, alone, ws, 0);
    double tol1 = nn__wino_tile(l) == 4 ? 1e-4 : 1e-5;
    assert_int_equal(nn_tensor_numel(y), nn_tensor_numel(alone));
    for (size_t i = 0; i < nn_tensor_numel(y); i++) {
        expect_near(what, c, i, y->data[i], want[i], 1e-4);
        expect_near(what, c, i, y->data[i], alone->data[i], tol1);
    }
    free(ws);
    free(want);
    nn_tensor_destroy(&alone);
}

/* Two prepared Winograd convs on one map (a block's branch conv and the next block's
 * conv) as one pair (nn__wino_pair_forward): each output equals its conv's (with the
 * ReLU fused or not, the 2x2 maxpool after the ReLU or not), F(2x2) and F(4x4), ragged groups of samples,
 * the workspace exactly the pair's share; and convs that do not read the same map the
 * same way do not pair. */
static void check_conv_pair(const cfg_t *ca, int mb, int relu_a, int pool_a, int relu_b,
                            int pool_b, ei_rng_t *r)
{
    cfg_t cb = *ca;
    cb.spec.out = mb;
    nn_layer_t *la = make_layer(ca, r), *lb = make_layer(&cb, r);
    nn_layer_prepare_inference(la);
    nn_layer_prepare_inference(lb);
    nn__wino_pair_t *pr = nn__wino_pair_new(la, lb);
    assert_non_null(pr);
    nn_shape_t oa = nn_layer_out_shape(la), ob = nn_layer_out_shape(lb);
    nn_tensor_t *x = tensor_for(ca->n, ca->in);
    nn_tensor_t *ya = nn_tensor_new(ca->n, oa.c, pool_a ? oa.h / 2 : oa.h, pool_a ? oa.w / 2 : oa.w);
    nn_tensor_t *yb = nn_tensor_new(ca->n, ob.c, pool_b ? ob.h / 2 : ob.h, pool_b ? ob.w / 2 : ob.w);
    fill_uniform(x->data, nn_shape_numel(ca->in) * ca->n, r, -1, 1);
    float *ws = malloc(nn__wino_pair_share(pr, ca->n) * sizeof(float));
    assert_non_null(ws);
    nn__wino_pair_forward(pr, x, ya, relu_a, pool_a, yb, relu_b, pool_b, ws);
    check_pair_side("pair, first conv", la, ca, x->data, x, ya, relu_a, pool_a);
    check_pair_side("pair, second conv", lb, &cb, x->data, x, yb, relu_b, pool_b);
    free(ws);
    nn__wino_pair_destroy(&pr);
    assert_null(pr);
    nn__wino_pair_destroy(&pr); /* NULL: nothing */
    nn_tensor_destroy(&x);
    nn_tensor_destroy(&ya);
    nn_tensor_destroy(&yb);
    nn_layer_destroy(&la);
    nn_layer_destroy(&lb);
}

/* Pairs refused: other padding, another map, a conv without the lowering. */
static void check_no_pair(const cfg_t *ca, const cfg_t *cb, ei_rng_t *r)
{
    nn_layer_t *la = make_layer(ca, r), *lb = make_layer(cb, r);
    nn_layer_prepare_inference(la);
    nn_layer_prepare_inference(lb);
    assert_null(nn__wino_pair_new(la, lb));
    assert_null(nn__wino_pair_new(lb, la));
    nn_layer_destroy(&la);
    nn_layer_destroy(&lb);
}

static void test_conv_pair(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 29);
    /* clang-format off */
    static const cfg_t fixed[] = {
        {{NN_CONV, 16, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {32, 14, 14}, 64}, /* F(2x2), the model's blocks 2-3 */
        {{NN_CONV, 16, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {64, 7, 7}, 64},   /* F(4x4), blocks 4-6 */
        {{NN_CONV, 5, 3, 1, 0, 0, 0, 0, NULL, NULL, 0, 0}, {20, 13, 15}, 9},   /* F(2x2), unpadded, odd */
        {{NN_CONV, 7, 3, 1, 2, 0, 0, 0, NULL, NULL, 0, 0}, {24, 7, 9}, 41},    /* F(4x4), padding 2 */
    };
    /* clang-format on */
    check_conv_pair(&fixed[0], 64, 1, 0, 1, 1, &r);
    check_conv_pair(&fixed[1], 128, 1, 0, 1, 1, &r);
    check_conv_pair(&fixed[1], 64, 1, 0, 1, 0, &r);
    check_conv_pair(&fixed[2], 3, 1, 1, 0, 0, &r);
    check_conv_pair(&fixed[3], 11, 1, 1, 0, 0, &r);
    for (int i = 0; i < 8; i++) { /* random shapes of both tiles, batches up to 70 */
        int p = pick(&r, 0, 2);
        cfg_t c = {{NN_CONV, pick(&r, 1, 24), 3, 1, p, 0, 0, 0, NULL, NULL, 0, 0},
                   {pick(&r, 16, 64), pick(&r, 8 - 2 * p, 20), pick(&r, 8 - 2 * p, 20)},
                   pick(&r, 1, 70)};
        int relu_a = pick(&r, 0, 1), relu_b = pick(&r, 0, 1); /* a pool comes after a ReLU */
        check_conv_pair(&c, pick(&r, 1, 40), relu_a, relu_a && pick(&r, 0, 1), relu_b,
                        relu_b && pick(&r, 0, 1), &r);
    }
    cfg_t a = {{NN_CONV, 8, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {32, 14, 14}, 1};
    cfg_t b = a;
    b.spec.pad = 0; /* another padding */
    check_no_pair(&a, &b, &r);
    b = a;
    b.in.h = 12; /* another map */
    check_no_pair(&a, &b, &r);
    b = a;
    b.spec.stride = 2; /* im2col */
    check_no_pair(&a, &b, &r);
}

/* The same checks with the engine on two threads: groups of samples, channels and planes
 * shared out, the weight gradients summed per thread and added up. */
static void check_bn_relu_fused(nn_shape_t in, int n, uint64_t seed);

static void test_layers_two_threads(void **state)
{
    (void)state;
    assert_int_equal(nn_set_threads(2), 0);
    assert_int_equal(nn_threads(), 2);
    ei_rng_t r;
    ei_rng_seed(&r, 17);
    /* clang-format off */
    static const cfg_t fixed[] = {
        {{NN_CONV, 16, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {8, 7, 7}, 45},
        {{NN_CONV, 8, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {4, 20, 20}, 7},
        {{NN_CONV, 4, 3, 2, 1, 0, 0, 0, NULL, NULL, 0, 0}, {3, 30, 30}, 5},
        {{NN_CONV, 6, 1, 1, 0, 0, 0, 0, NULL, NULL, 0, 0}, {5, 12, 12}, 19},
        {{NN_CONV, 4, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {200, 6, 6}, 9},
        {{NN_CONV, 8, 3, 1, 1, 0, 4, 0, NULL, NULL, 0, 0}, {8, 7, 7}, 45},
        {{NN_CONV, 16, 3, 1, 1, 0, 16, 0, NULL, NULL, 0, 0}, {16, 14, 14}, 9},
        /* training through Winograd: forward, dx and dW (each thread its own sums) */
        {{NN_CONV, 32, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {16, 14, 14}, 9},
        {{NN_CONV, 16, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {24, 7, 7}, 20},
        {{NN_CONV, 8, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {16, 13, 15}, 6},
    };
    /* clang-format on */
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        check_conv_batched(&fixed[i], &r);
    check_bn_relu_fused((nn_shape_t){70, 5, 5}, 6, 45); /* channel ranges split */
    check_forward_random(NN_BN, 10, 1);
    check_forward_random(NN_MAXPOOL, 20, 0);
    check_forward_random(NN_AVGPOOL, 20, 0);
    check_forward_random(NN_RELU, 5, 0);
    cfg_t bn = {{NN_BN, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {5, 3, 4}, 6};
    check_grads(&bn, X_UNIFORM, 1, 1e-2f, 2e-4, 31);
    cfg_t mp = {{NN_MAXPOOL, 0, 2, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {4, 6, 7}, 5};
    check_grads(&mp, X_DISTINCT, 0, 1e-3f, 2e-4, 32);
    cfg_t rl = {{NN_RELU, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {3, 4, 4}, 6};
    check_grads(&rl, X_OFF_ZERO, 0, 1e-2f, 2e-4, 33);
    assert_int_equal(nn_set_threads(1), 0);
    assert_int_not_equal(nn_set_threads(0), 0);
}

static void test_conv_dense_backward(void **state)
{
    (void)state;
    /* clang-format off */
    static const cfg_t convs[] = {
        {{NN_CONV, 3, 3, 2, 1, 0, 0, 0, NULL, NULL, 0, 0}, {2, 7, 6}, 2},
        {{NN_CONV, 2, 5, 1, 2, 0, 0, 0, NULL, NULL, 0, 0}, {2, 5, 6}, 2},
        {{NN_CONV, 4, 1, 1, 0, 0, 0, 0, NULL, NULL, 0, 0}, {3, 4, 3}, 2},
        {{NN_CONV, 2, 1, 2, 0, 0, 0, 0, NULL, NULL, 0, 0}, {2, 5, 5}, 1},
        {{NN_CONV, 2, 3, 3, 2, 0, 0, 0, NULL, NULL, 0, 0}, {1, 4, 5}, 2},
        {{NN_CONV, 2, 5, 1, 2, 0, 0, 0, NULL, NULL, 0, 0}, {2, 2, 3}, 2},
        {{NN_CONV, 4, 3, 1, 1, 0, 2, 0, NULL, NULL, 0, 0}, {4, 5, 5}, 2}, /* 2 groups */
        {{NN_CONV, 6, 3, 2, 1, 0, 3, 0, NULL, NULL, 0, 0}, {3, 6, 6}, 2}, /* depthwise x2 */
        {{NN_CONV, 4, 1, 1, 0, 0, 2, 0, NULL, NULL, 0, 0}, {4, 3, 3}, 1}, /* grouped pointwise */
        {{NN_DENSE, 5, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {3, 2, 3}, 3},
        {{NN_DENSE, 4, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {6, 1, 1}, 1},
    };
    /* clang-format on */
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++)
        check_grads(&convs[i], X_UNIFORM, 1, 1e-2f, 2e-4, 10 + i);
    /* Training through Winograd's lowering (forward and dx): F(4x4) on 6x6, F(2x2) on
       12x12 (and dW through F(3x3, 2x2) there). The loss is linear in every value, so a wide step has no truncation error
       and keeps the lowering's rounding (1e-6 of the loss) small against it. */
    /* clang-format off */
    static const cfg_t wino[] = {
        {{NN_CONV, 16, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {16, 6, 6}, 2},
        {{NN_CONV, 16, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {16, 12, 12}, 1},
    };
    /* clang-format on */
    for (size_t i = 0; i < sizeof wino / sizeof wino[0]; i++)
        check_grads(&wino[i], X_UNIFORM, 1, 0.25f, 1e-3, 30 + i);
}

static void test_bn_backward(void **state)
{
    (void)state;
    /* clang-format off */
    static const cfg_t bns[] = {
        {{NN_BN, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {3, 3, 4}, 2},
        {{NN_BN, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {2, 1, 1}, 5}, /* after a dense: one value per sample */
        {{NN_BN, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {70, 2, 3}, 2}, /* more channels than a sweep takes */
    };
    /* clang-format on */
    for (size_t i = 0; i < sizeof bns / sizeof bns[0]; i++) {
        check_grads(&bns[i], X_UNIFORM, 1, 1e-2f, 2e-4, 20 + i);
        ei_rng_t r;
        ei_rng_seed(&r, 25 + i);
        check_forward(&bns[i], &r, 1); /* against the naive reference */
        check_forward(&bns[i], &r, 0);
    }
}

/* A batch norm and the ReLU after it in one pass (what a layer sequence runs in training)
 * against the two layers one after the other: the forward exactly, the backward (input
 * gradient, dgamma, dbeta) within float rounding of the sums, with and without dx. */
static void check_bn_relu_fused(nn_shape_t in, int n, uint64_t seed)
{
    ei_rng_t r;
    ei_rng_seed(&r, seed);
    cfg_t c = {{NN_BN, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, in, n};
    cfg_t cr = {{NN_RELU, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, in, n};
    nn_layer_t *bn = make_layer(&c, &r), *relu = make_layer(&cr, &r);
    size_t total = nn_shape_numel(in) * n;
    nn_tensor_t *x = tensor_for(n, in), *yb = tensor_for(n, in), *y = tensor_for(n, in);
    nn_tensor_t *yf = tensor_for(n, in), *dy = tensor_for(n, in), *db = tensor_for(n, in);
    nn_tensor_t *dx = tensor_for(n, in), *dxf = tensor_for(n, in);
    fill_uniform(x->data, total, &r, -2, 3);
    fill_uniform(dy->data, total, &r, -1, 1);
    nn_layer_forward(bn, x, yb, NULL, 1);
    nn_layer_forward(relu, yb, y, NULL, 1);
    nn__bn_forward_relu(bn, x, yf, 1, 1);
    for (size_t i = 0; i < total; i++)
        if (yf->data[i] != y->data[i])
            fail_msg("bn+relu forward [%zu] = %.8g, want %.8g", i, yf->data[i], y->data[i]);
    int nc = in.c;
    float *want = malloc(2 * (size_t)nc * sizeof *want);
    for (int with_dx = 0; with_dx < 2; with_dx++) {
        nn_layer_zero_grad(bn);
        nn_layer_backward(relu, yb, y, dy, db, NULL);
        nn_layer_backward(bn, x, yb, db, with_dx ? dx : NULL, NULL);
        memcpy(want, nn_layer_param(bn, 0)->grad->data, (size_t)nc * sizeof *want);
        memcpy(want + nc, nn_layer_param(bn, 1)->grad->data, (size_t)nc * sizeof *want);
        nn_layer_zero_grad(bn);
        nn__bn_backward_relu(bn, x, y, dy, with_dx ? dxf : NULL);
        for (int i = 0; i < nc; i++) {
            expect_close("fused dgamma", (size_t)i, nn_layer_param(bn, 0)->grad->data[i],
                         want[i], 1e-5);
            expect_close("fused dbeta", (size_t)i, nn_layer_param(bn, 1)->grad->data[i],
                         want[nc + i], 1e-5);
        }
        for (size_t i = 0; with_dx && i < total; i++)
            expect_close("fused dx", i, dxf->data[i], dx->data[i], 1e-5);
    }
    free(want);
    nn_tensor_destroy(&x);
    nn_tensor_destroy(&yb);
    nn_tensor_destroy(&y);
    nn_tensor_destroy(&yf);
    nn_tensor_destroy(&dy);
    nn_tensor_destroy(&db);
    nn_tensor_destroy(&dx);
    nn_tensor_destroy(&dxf);
    nn_layer_destroy(&bn);
    nn_layer_destroy(&relu);
}

static void test_bn_relu_fused(void **state)
{
    (void)state;
    check_bn_relu_fused((nn_shape_t){3, 5, 7}, 4, 41);   /* planes not a multiple of 8 */
    check_bn_relu_fused((nn_shape_t){16, 8, 8}, 9, 42);  /* whole lanes */
    check_bn_relu_fused((nn_shape_t){5, 1, 1}, 17, 43);  /* one value a plane */
    check_bn_relu_fused((nn_shape_t){130, 3, 3}, 3, 44); /* three sweeps of channels */
}

static void test_pool_backward(void **state)
{
    (void)state;
    /* clang-format off */
    static const cfg_t pools[] = {
        {{NN_MAXPOOL, 0, 2, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {2, 6, 5}, 2},
        {{NN_MAXPOOL, 0, 3, 2, 1, 0, 0, 0, NULL, NULL, 0, 0}, {2, 7, 6}, 2},
        {{NN_MAXPOOL, 0, 3, 1, 2, 0, 0, 0, NULL, NULL, 0, 0}, {1, 4, 5}, 2}, /* overlapping windows */
        {{NN_AVGPOOL, 0, 2, 2, 0, 0, 0, 0, NULL, NULL, 0, 0}, {2, 5, 6}, 2},
        {{NN_AVGPOOL, 0, 3, 1, 0, 0, 0, 0, NULL, NULL, 0, 0}, {1, 5, 4}, 2},
        {{NN_AVGPOOL, 0, 0, 0, 0, 3, 0, 0, NULL, NULL, 0, 0}, {2, 7, 5}, 2}, /* adaptive, not divisible */
        {{NN_GAP, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {3, 3, 4}, 2},
        {{NN_FLATTEN, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {2, 3, 2}, 2},
    };
    /* clang-format on */
    for (size_t i = 0; i < sizeof pools / sizeof pools[0]; i++)
        check_grads(&pools[i], X_DISTINCT, 0, 1e-3f, 2e-4, 30 + i);
    cfg_t relu = {{NN_RELU, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {2, 4, 3}, 2};
    check_grads(&relu, X_OFF_ZERO, 0, 1e-2f, 2e-4, 40);
}

/* With ties the first maximum in scan order takes the gradient, in forward's order. */
static void test_maxpool_ties(void **state)
{
    (void)state;
    nn_layer_spec_t sp = {NN_MAXPOOL, 0, 3, 2, 1, 0, 0, 0, NULL, NULL, 0, 0};
    nn_layer_t *l = nn_layer_new(&sp, (nn_shape_t){1, 5, 5}, NULL);
    assert_non_null(l);
    nn_tensor_t *x = nn_tensor_new(1, 1, 5, 5), *y = nn_tensor_new(1, 1, 3, 3);
    nn_tensor_t *dy = nn_tensor_new(1, 1, 3, 3), *dx = nn_tensor_new(1, 1, 5, 5);
    for (int i = 0; i < 9; i++)
        dy->data[i] = (float)(i + 1);
    nn_layer_forward(l, x, y, NULL, 1); /* all zero: every window is one tie */
    nn_layer_backward(l, x, y, dy, dx, NULL);
    /* Window (i, j) starts at row max(0, 2i - 1) = 0, 1, 3 and the same column. */
    static const float want[25] = {1, 2, 0, 3, 0, 4, 5, 0, 6, 0, 0, 0, 0,
                                   0, 0, 7, 8, 0, 9, 0, 0, 0, 0, 0, 0};
    for (int i = 0; i < 25; i++)
        assert_true(dx->data[i] == want[i]);
    nn_tensor_destroy(&x);
    nn_tensor_destroy(&y);
    nn_tensor_destroy(&dy);
    nn_tensor_destroy(&dx);
    nn_layer_destroy(&l);
}

/* The 2x2 maxpool's own backward (no zeroing pass) against the rule written out: each
 * window's dy to its first largest input in scan order, every other input (a trailing
 * odd row or column too) zero, whatever dx held before. Inputs from a few levels, so
 * windows tie often. */
static void test_maxpool2_backward(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 77);
    static const nn_shape_t shapes[] = {{3, 6, 8}, {2, 7, 5}, {1, 9, 9}, {4, 2, 3}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        nn_shape_t in = shapes[k];
        nn_layer_spec_t sp = {NN_MAXPOOL, 0, 2, 2, 0, 0, 0, 0, NULL, NULL, 0, 0};
        nn_layer_t *l = nn_layer_new(&sp, in, NULL);
        assert_non_null(l);
        nn_shape_t os = nn_layer_out_shape(l);
        int n = 3, h = in.h, w = in.w, oh = os.h, ow = os.w;
        nn_tensor_t *x = tensor_for(n, in), *y = tensor_for(n, os);
        nn_tensor_t *dy = tensor_for(n, os), *dx = tensor_for(n, in);
        for (size_t i = 0; i < nn_tensor_numel(x); i++)
            x->data[i] = (float)pick(&r, 0, 3);
        fill_uniform(dy->data, nn_tensor_numel(dy), &r, -1, 1);
        nn__fill(dx->data, nn_tensor_numel(dx), NAN);
        nn_layer_forward(l, x, y, NULL, 1);
        nn_layer_backward(l, x, y, dy, dx, NULL);
        for (int pl = 0; pl < n * in.c; pl++) {
            const float *px = x->data + (size_t)pl * h * w, *pg = dy->data + (size_t)pl * oh * ow;
            float want[81] = {0};
            for (int i = 0; i < oh; i++)
                for (int j = 0; j < ow; j++) {
                    int best = 2 * i * w + 2 * j;
                    for (int a = 2 * i; a < 2 * i + 2; a++)
                        for (int b = 2 * j; b < 2 * j + 2; b++)
                            best = px[a * w + b] > px[best] ? a * w + b : best;
                    want[best] = pg[i * ow + j];
                }
            for (int i = 0; i < h * w; i++)
                if (dx->data[(size_t)pl * h * w + i] != want[i])
                    fail_msg("maxpool2 %dx%dx%d plane %d: dx[%d] = %g, want %g", in.c, h, w, pl,
                             i, dx->data[(size_t)pl * h * w + i], want[i]);
        }
        nn_tensor_destroy(&x);
        nn_tensor_destroy(&y);
        nn_tensor_destroy(&dy);
        nn_tensor_destroy(&dx);
        nn_layer_destroy(&l);
    }
}

/* Backward adds to the grads, and dx == NULL leaves them the same. */
static void test_backward_accumulates(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 5);
    cfg_t c = {{NN_CONV, 3, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, {2, 5, 5}, 2};
    nn_layer_t *l = make_layer(&c, &r);
    nn_tensor_t *x = tensor_for(2, c.in), *y = tensor_for(2, nn_layer_out_shape(l));
    nn_tensor_t *dy = tensor_for(2, nn_layer_out_shape(l)), *dx = tensor_for(2, c.in);
    fill_uniform(x->data, nn_tensor_numel(x), &r, -1, 1);
    fill_uniform(dy->data, nn_tensor_numel(dy), &r, -1, 1);
    float *ws = ws_new(l, 2);
    nn_layer_forward(l, x, y, ws, 1);
    nn_layer_zero_grad(l);
    nn_layer_backward(l, x, y, dy, dx, ws);
    nn_param_t *w = nn_layer_param(l, 0);
    size_t nw = nn_tensor_numel(w->grad);
    float *once = malloc(nw * sizeof *once);
    memcpy(once, w->grad->data, nw * sizeof *once);
    nn_layer_backward(l, x, y, dy, NULL, ws);
    for (size_t i = 0; i < nw; i++)
        assert_float_equal(w->grad->data[i], 2 * once[i], 1e-5 * (1 + fabsf(once[i])));
    nn_layer_zero_grad(l);
    for (size_t i = 0; i < nw; i++)
        assert_true(w->grad->data[i] == 0);
    free(once);
    free(ws);
    nn_tensor_destroy(&x);
    nn_tensor_destroy(&y);
    nn_tensor_destroy(&dy);
    nn_tensor_destroy(&dx);
    nn_layer_destroy(&l);
}

/* Training moves the running statistics by momentum 0.1 toward the batch mean and the
 * unbiased batch variance. */
static void test_bn_running_stats(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 6);
    cfg_t c = {{NN_BN, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {2, 3, 3}, 3};
    nn_layer_t *l = make_layer(&c, &r);
    nn_tensor_t *x = tensor_for(3, c.in), *y = tensor_for(3, c.in);
    fill_uniform(x->data, nn_tensor_numel(x), &r, 2, 5);
    float rm0[2], rv0[2];
    memcpy(rm0, nn_layer_param(l, 2)->value->data, sizeof rm0);
    memcpy(rv0, nn_layer_param(l, 3)->value->data, sizeof rv0);
    assert_null(nn_layer_param(l, 2)->grad);
    assert_null(nn_layer_param(l, 3)->grad);
    forward(l, x, y, 1);
    for (int ch = 0; ch < 2; ch++) {
        double mean = 0, ss = 0, m = 27;
        for (int n = 0; n < 3; n++)
            for (int i = 0; i < 9; i++)
                mean += x->data[(n * 2 + ch) * 9 + i] / m;
        for (int n = 0; n < 3; n++)
            for (int i = 0; i < 9; i++)
                ss += pow(x->data[(n * 2 + ch) * 9 + i] - mean, 2);
        assert_float_equal(nn_layer_param(l, 2)->value->data[ch], 0.9 * rm0[ch] + 0.1 * mean, 1e-5);
        assert_float_equal(nn_layer_param(l, 3)->value->data[ch],
                           0.9 * rv0[ch] + 0.1 * ss / (m - 1), 1e-5);
    }
    nn_tensor_destroy(&x);
    nn_tensor_destroy(&y);
    nn_layer_destroy(&l);
}

/* ---- Softmax, cross-entropy, concatenation. ---- */

static double ref_xent(const float *z, const int *labels, int n, int k)
{
    double loss = 0;
    for (int i = 0; i < n; i++) {
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < k; j++)
            mx = fmax(mx, z[i * k + j]);
        for (int j = 0; j < k; j++)
            s += exp(z[i * k + j] - mx);
        loss += mx + log(s) - z[i * k + labels[i]];
    }
    return loss / n;
}

static void test_softmax_xent(void **state)
{
    (void)state;
    enum { N = 4, K = 5 };
    ei_rng_t r;
    ei_rng_seed(&r, 7);
    float z[N * K], p[N * K], dz[N * K], q[N * K];
    int labels[N] = {0, 4, 2, 2};
    fill_uniform(z, N * K, &r, -3, 3);
    float loss = nn_softmax_xent(z, labels, N, K, p, dz, 0.7f);
    assert_float_equal(loss, ref_xent(z, labels, N, K), 1e-5);
    nn_softmax(z, N, K, q);
    for (int i = 0; i < N; i++) {
        double sum = 0;
        for (int j = 0; j < K; j++) {
            sum += q[i * K + j];
            assert_float_equal(p[i * K + j], q[i * K + j], 1e-7);
            assert_true((q[i * K + j] > q[i * K]) == (z[i * K + j] > z[i * K]));
        }
        assert_float_equal(sum, 1, 1e-6);
    }
    for (int i = 0; i < N * K; i++) {
        float keep = z[i];
        z[i] = keep + 1e-2f;
        double up = ref_xent(z, labels, N, K);
        z[i] = keep - 1e-2f;
        double down = ref_xent(z, labels, N, K);
        z[i] = keep;
        expect_close("dz", (size_t)i, dz[i], 0.7 * (up - down) / 2e-2, 1e-4);
    }
    /* p may alias z; dz may be NULL. */
    memcpy(q, z, sizeof z);
    assert_float_equal(nn_softmax_xent(q, labels, N, K, q, NULL, 1), loss, 1e-6);
    for (int i = 0; i < N * K; i++)
        assert_float_equal(q[i], p[i], 1e-7);
}

/* Logits far beyond exp's range give finite probabilities, gradients and loss. */
static void test_softmax_stable(void **state)
{
    (void)state;
    float z[6] = {1000, 999, -1000, -1e30f, 0, 88.8f}, p[6], dz[6];
    int labels[2] = {1, 0};
    float loss = nn_softmax_xent(z, labels, 2, 3, p, dz, 1);
    assert_true(isfinite(loss));
    assert_true(nn_tensor_find_nonfinite(p, 6) < 0 && nn_tensor_find_nonfinite(dz, 6) < 0);
    assert_float_equal(p[0], 1 / (1 + exp(-1.0)), 1e-6);
    assert_float_equal(p[3], 0, 0);
    assert_float_equal(p[5], 1, 1e-6);
    double row0 = log(1 + exp(-1.0)) + 1, row1 = 88.8f + 1e30f; /* lse - z[label] */
    assert_float_equal(loss / ((row0 + row1) / 2), 1, 1e-6);
    assert_float_equal(dz[3], -0.5, 1e-6);
}

/* The plain reference: the first index that is not finite, or -1. */
static long first_nonfinite(const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return (long)i;
    return -1;
}

/* The blocked search against the plain loop: every length up to past two blocks, each kind
 * of non-finite value (and the finite extremes, which must pass) at every position, and a
 * second bad value later, which must not be the one named. */
static void test_find_nonfinite(void **state)
{
    (void)state;
    const float bad[] = {NAN, -NAN, INFINITY, -INFINITY};
    const float edge[] = {FLT_MAX, -FLT_MAX, FLT_MIN, 1e-45f, -0.0f};
    enum { N = 600 };
    float *x = malloc(N * sizeof *x);
    assert_non_null(x);
    for (size_t n = 0; n <= N; n += n < 40 ? 1 : 37) {
        for (size_t i = 0; i < n; i++)
            x[i] = edge[i % 5];
        assert_int_equal(nn_tensor_find_nonfinite(x, n), -1);
        for (size_t at = 0; at < n; at++) {
            x[at] = bad[at % 4];
            if (at + 300 < n)
                x[at + 300] = bad[(at + 1) % 4];
            assert_int_equal(nn_tensor_find_nonfinite(x, n), first_nonfinite(x, n));
            assert_int_equal(nn_tensor_find_nonfinite(x, n), (long)at);
            x[at] = edge[at % 5];
            if (at + 300 < n)
                x[at + 300] = edge[(at + 300) % 5];
        }
    }
    free(x);
}

static void test_concat(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 8);
    nn_tensor_t *a = nn_tensor_new(2, 2, 2, 1), *b = nn_tensor_new(2, 3, 1, 1);
    nn_tensor_t *c = nn_tensor_new(2, 1, 2, 2), *y = nn_tensor_new(2, 11, 1, 1);
    nn_tensor_t *dy = nn_tensor_new(2, 11, 1, 1);
    nn_tensor_t *xs[3] = {a, b, c};
    for (int i = 0; i < 3; i++)
        fill_uniform(xs[i]->data, nn_tensor_numel(xs[i]), &r, -1, 1);
    nn_concat_forward((const nn_tensor_t *const *)xs, 3, y);
    static const int sizes[3] = {4, 3, 4};
    for (int s = 0; s < 2; s++)
        for (int i = 0, off = 0; i < 3; off += sizes[i++])
            for (int j = 0; j < sizes[i]; j++)
                assert_true(y->data[s * 11 + off + j] == xs[i]->data[s * sizes[i] + j]);
    fill_uniform(dy->data, 22, &r, -1, 1);
    nn_concat_backward(dy, xs, 3);
    for (int s = 0; s < 2; s++)
        for (int i = 0, off = 0; i < 3; off += sizes[i++])
            for (int j = 0; j < sizes[i]; j++)
                assert_true(xs[i]->data[s * sizes[i] + j] == dy->data[s * 11 + off + j]);
    for (int i = 0; i < 3; i++)
        nn_tensor_destroy(&xs[i]);
    nn_tensor_destroy(&y);
    nn_tensor_destroy(&dy);
}

/* ---- Folding, init, bookkeeping, bad specs. ---- */

static void test_fold_bn(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 9);
    cfg_t cc = {{NN_CONV, 4, 3, 2, 1, 0, 0, 0, NULL, NULL, 0, 0}, {3, 7, 8}, 2};
    nn_layer_t *conv = make_layer(&cc, &r);
    cfg_t bc = {{NN_BN, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, nn_layer_out_shape(conv), 2};
    nn_layer_t *bn = make_layer(&bc, &r);
    nn_tensor_t *x = tensor_for(2, cc.in), *y = tensor_for(2, bc.in), *z = tensor_for(2, bc.in);
    nn_tensor_t *folded = tensor_for(2, bc.in);
    fill_uniform(x->data, nn_tensor_numel(x), &r, -1, 1);
    forward(conv, x, y, 0);
    forward(bn, y, z, 0);
    assert_int_equal(nn_layer_fold_bn(conv, bn), 0);
    forward(conv, x, folded, 0);
    for (size_t i = 0; i < nn_tensor_numel(z); i++)
        assert_float_equal(folded->data[i], z->data[i], 1e-5 * (1 + fabsf(z->data[i])));
    assert_int_equal(nn_layer_fold_bn(bn, conv), EI_E_INVAL);
    cfg_t wrong = {{NN_BN, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, {5, 4, 4}, 1};
    nn_layer_t *bn5 = make_layer(&wrong, &r);
    assert_int_equal(nn_layer_fold_bn(conv, bn5), EI_E_INVAL);
    nn_layer_destroy(&bn5);
    nn_tensor_destroy(&x);
    nn_tensor_destroy(&y);
    nn_tensor_destroy(&z);
    nn_tensor_destroy(&folded);
    nn_layer_destroy(&conv);
    nn_layer_destroy(&bn);
}

/* ---- Residual layers and dropout ---- */

#define SP(kind, out, k, stride, pad, groups) {kind, out, k, stride, pad, 0, groups, 0, NULL, NULL, 0, 0}
/* clang-format off */
/* ResNet's basic block on 4 channels, the second conv in 2 groups; identity shortcut. */
static const nn_layer_spec_t basic_path[] = {
    SP(NN_CONV, 4, 3, 1, 1, 0), SP(NN_BN, 0, 0, 0, 0, 0), SP(NN_RELU, 0, 0, 0, 0, 0),
    SP(NN_CONV, 4, 3, 1, 1, 2), SP(NN_BN, 0, 0, 0, 0, 0)};
/* Down-sampling: stride 2 and 6 channels, a depthwise second conv; 1x1 conv shortcut. */
static const nn_layer_spec_t down_path[] = {
    SP(NN_CONV, 6, 3, 2, 1, 0), SP(NN_BN, 0, 0, 0, 0, 0), SP(NN_RELU, 0, 0, 0, 0, 0),
    SP(NN_CONV, 6, 3, 1, 1, 6), SP(NN_BN, 0, 0, 0, 0, 0)};
static const nn_layer_spec_t down_shortcut[] = {SP(NN_CONV, 6, 1, 2, 0, 0), SP(NN_BN, 0, 0, 0, 0, 0)};
/* A residual layer inside a residual layer's path. */
static const nn_layer_spec_t nested_path[] = {
    {NN_RESIDUAL, 0, 0, 0, 0, 0, 0, 0, basic_path, NULL, 5, 0}, SP(NN_RELU, 0, 0, 0, 0, 0),
    SP(NN_CONV, 4, 1, 1, 0, 0)};
static const cfg_t residuals[] = {
    {{NN_RESIDUAL, 0, 0, 0, 0, 0, 0, 0, basic_path, NULL, 5, 0}, {4, 6, 5}, 3},
    {{NN_RESIDUAL, 0, 0, 0, 0, 0, 0, 0, down_path, down_shortcut, 5, 2}, {3, 7, 6}, 3},
    {{NN_RESIDUAL, 0, 0, 0, 0, 0, 0, 0, nested_path, NULL, 3, 0}, {4, 5, 5}, 2},
};
/* clang-format on */
#define NRES (sizeof residuals / sizeof residuals[0])

static void test_residual_forward(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 41);
    for (size_t i = 0; i < NRES; i++) {
        check_forward(&residuals[i], &r, 1);
        check_forward(&residuals[i], &r, 0);
    }
    nn_layer_t *l = make_layer(&residuals[1], &r);
    nn_shape_t o = nn_layer_out_shape(l);
    assert_true(o.c == 6 && o.h == 4 && o.w == 3);
    /* parameters under their chains' names, PyTorch's module paths */
    assert_int_equal(nn_layer_param_count(l), 2 + 4 + 2 + 4 + 2 + 4);
    assert_string_equal(nn_layer_param(l, 0)->name, "path.0.weight");
    assert_string_equal(nn_layer_param(l, 3)->name, "path.1.beta");
    assert_string_equal(nn_layer_param(l, 6)->name, "path.3.weight");
    assert_int_equal(nn_layer_param(l, 6)->value->c, 1); /* depthwise: 1 input channel each */
    assert_string_equal(nn_layer_param(l, 12)->name, "shortcut.0.weight");
    assert_string_equal(nn_layer_param(l, 17)->name, "shortcut.1.running_var");
    /* flops: the chains' convs and one add per output value */
    double want = 2.0 * 6 * 3 * 9 * 12 + 2.0 * 6 * 1 * 9 * 12 + 2.0 * 6 * 3 * 12 + 6 * 12;
    assert_float_equal(nn_layer_flops(l), want, 0);
    nn_layer_destroy(&l);
}

static void test_residual_backward(void **state)
{
    (void)state;
    several_steps = 1;
    for (size_t i = 0; i < NRES; i++)
        check_grads(&residuals[i], X_UNIFORM, 1, 1e-2f, 5e-3, 50 + i);
    several_steps = 0;
}

/* Batch norms folded into the chains' convs give the unfolded inference output. */
static void test_residual_fold(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 43);
    for (size_t i = 0; i < NRES; i++) {
        const cfg_t *c = &residuals[i];
        nn_layer_t *l = make_layer(c, &r);
        nn_shape_t os = nn_layer_out_shape(l);
        nn_tensor_t *x = tensor_for(c->n, c->in), *a = tensor_for(c->n, os);
        nn_tensor_t *b = tensor_for(c->n, os);
        fill_uniform(x->data, nn_tensor_numel(x), &r, -1, 1);
        forward(l, x, a, 0);
        float w0 = nn_layer_param(l, 0)->value->data[0];
        nn_layer_prepare_inference(l);
        assert_true(nn_layer_param(l, 0)->value->data[0] != w0); /* folded */
        forward(l, x, b, 0);
        for (size_t j = 0; j < nn_tensor_numel(a); j++)
            assert_float_equal(b->data[j], a->data[j], 1e-5 * (1 + fabsf(a->data[j])));
        nn_tensor_destroy(&x);
        nn_tensor_destroy(&a);
        nn_tensor_destroy(&b);
        nn_layer_destroy(&l);
    }
}

static void test_residual_bad(void **state)
{
    (void)state;
    ei_err_t err = {0};
    /* the path down-samples, the identity cannot */
    nn_layer_spec_t sp = {NN_RESIDUAL, 0, 0, 0, 0, 0, 0, 0, down_path, NULL, 5, 0};
    assert_null(nn_layer_new(&sp, (nn_shape_t){3, 7, 6}, &err));
    assert_int_equal(err.code, EI_E_SHAPE);
    assert_non_null(strstr(err.msg, "residual: the path gives 6x4x3 but the identity"));
    sp.npath = 0;
    assert_null(nn_layer_new(&sp, (nn_shape_t){3, 7, 6}, &err));
    assert_non_null(strstr(err.msg, "path needs at least one layer"));
    /* a bad layer inside names the chain */
    nn_layer_spec_t bad_path[] = {SP(NN_CONV, 4, 3, 1, 1, 3)};
    nn_layer_spec_t bad = {NN_RESIDUAL, 0, 0, 0, 0, 0, 0, 0, bad_path, NULL, 1, 0};
    assert_null(nn_layer_new(&bad, (nn_shape_t){4, 5, 5}, &err));
    assert_int_equal(err.code, EI_E_SHAPE);
    assert_non_null(strstr(err.msg, "residual path layer 0 (conv): conv: 3 groups must divide"));
}

static void test_dropout(void **state)
{
    (void)state;
    const float p = 0.25f;
    nn_layer_spec_t sp = {NN_DROPOUT, 0, 0, 0, 0, 0, 0, p, NULL, NULL, 0, 0};
    nn_shape_t in = {4, 50, 50};
    ei_rng_t r;
    ei_rng_seed(&r, 5);
    nn_layer_t *l = nn_layer_new(&sp, in, NULL), *l2 = nn_layer_new(&sp, in, NULL);
    assert_non_null(l);
    nn_layer_init(l, &r);
    ei_rng_seed(&r, 5);
    nn_layer_init(l2, &r);
    nn_tensor_t *x = tensor_for(2, in), *y = tensor_for(2, in), *y2 = tensor_for(2, in);
    nn_tensor_t *dy = tensor_for(2, in), *dx = tensor_for(2, in);
    size_t n = nn_tensor_numel(x);
    fill_uniform(x->data, n, &r, 0.5, 1.5);
    fill_uniform(dy->data, n, &r, -1, 1);
    forward(l, x, y, 1);
    forward(l2, x, y2, 1);
    size_t zeros = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(y->data[i] == y2->data[i]); /* same seed, same mask */
        if (y->data[i] == 0)
            zeros++;
        else
            assert_float_equal(y->data[i], x->data[i] / (1 - p), 1e-6);
    }
    /* 20,000 draws: the share of zeros is p within 8 standard deviations (0.0031 each) */
    assert_true(fabs((double)zeros / n - p) < 0.025);
    nn_layer_backward(l, x, y, dy, dx, NULL);
    for (size_t i = 0; i < n; i++)
        assert_float_equal(dx->data[i], y->data[i] == 0 ? 0 : dy->data[i] / (1 - p), 1e-6);
    forward(l, x, y2, 1); /* the next batch draws a new mask */
    size_t same = 0;
    for (size_t i = 0; i < n; i++)
        same += (y->data[i] == 0) == (y2->data[i] == 0);
    assert_true(same < n);
    forward(l, x, y, 0); /* inference: the identity */
    assert_memory_equal(y->data, x->data, n * sizeof(float));
    assert_float_equal(nn_layer_flops(l), 0, 0);
    nn_layer_destroy(&l);
    nn_layer_destroy(&l2);
    ei_err_t err = {0};
    sp.p = 1.0f;
    assert_null(nn_layer_new(&sp, in, &err));
    assert_int_equal(err.code, EI_E_INVAL);
    assert_non_null(strstr(err.msg, "dropout: p 1 must be in [0, 1)"));
    nn_tensor_destroy(&x);
    nn_tensor_destroy(&y);
    nn_tensor_destroy(&y2);
    nn_tensor_destroy(&dy);
    nn_tensor_destroy(&dx);
}

static void test_init_and_params(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 11);
    nn_layer_spec_t sp = {NN_CONV, 64, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0};
    nn_layer_t *l = nn_layer_new(&sp, (nn_shape_t){32, 8, 8}, NULL);
    assert_non_null(l);
    nn_layer_init(l, &r);
    assert_int_equal(nn_layer_param_count(l), 2);
    nn_param_t *w = nn_layer_param(l, 0), *b = nn_layer_param(l, 1);
    assert_string_equal(w->name, "weight");
    assert_string_equal(b->name, "bias");
    assert_int_equal(w->ndim, 4);
    assert_int_equal(b->ndim, 1);
    assert_true(w->value->n == 64 && w->value->c == 32 && w->value->h == 3 && w->value->w == 3);
    double s2 = 0;
    size_t nw = nn_tensor_numel(w->value);
    for (size_t i = 0; i < nw; i++)
        s2 += (double)w->value->data[i] * w->value->data[i];
    assert_float_equal(sqrt(s2 / nw), sqrt(2.0 / 288), 0.03 * sqrt(2.0 / 288));
    for (int i = 0; i < 64; i++)
        assert_true(b->value->data[i] == 0);
    assert_float_equal(nn_layer_flops(l), 2.0 * 64 * 288 * 64, 0);
    nn_layer_destroy(&l);
    assert_null(l);
    nn_layer_destroy(&l);

    nn_layer_spec_t ds = {NN_DENSE, 10, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0};
    l = nn_layer_new(&ds, (nn_shape_t){4, 3, 3}, NULL);
    assert_int_equal(nn_layer_param(l, 0)->ndim, 2);
    assert_float_equal(nn_layer_flops(l), 2.0 * 10 * 36, 0);
    nn_shape_t o = nn_layer_out_shape(l);
    assert_true(o.c == 10 && o.h == 1 && o.w == 1);
    nn_layer_destroy(&l);

    nn_layer_spec_t bs = {NN_BN, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0};
    l = nn_layer_new(&bs, (nn_shape_t){3, 2, 2}, NULL);
    static const char *const names[] = {"gamma", "beta", "running_mean", "running_var"};
    static const float after_new[] = {1, 0, 0, 1};
    assert_int_equal(nn_layer_param_count(l), 4);
    for (int i = 0; i < 4; i++) {
        assert_string_equal(nn_layer_param(l, i)->name, names[i]);
        assert_true((nn_layer_param(l, i)->grad != NULL) == (i < 2));
        assert_true(nn_layer_param(l, i)->value->data[2] == after_new[i]);
    }
    assert_float_equal(nn_layer_flops(l), 0, 0);
    nn_layer_destroy(&l);
}

static void test_kind_names(void **state)
{
    (void)state;
    for (int k = 0; k < NN_KIND_COUNT; k++)
        assert_int_equal(nn_kind_from_name(nn_kind_name((nn_kind_t)k)), k);
    assert_int_equal(nn_kind_from_name("conv"), NN_CONV);
    assert_int_equal(nn_kind_from_name("bogus"), -1);
    assert_int_equal(nn_kind_from_name(""), -1);
    assert_int_equal(nn_kind_from_name(NULL), -1);
    assert_string_equal(nn_kind_name(NN_KIND_COUNT), "unknown");
}

static void expect_bad(nn_layer_spec_t sp, nn_shape_t in, int code, const char *needle)
{
    ei_err_t err = {0};
    nn_layer_t *l = nn_layer_new(&sp, in, &err);
    assert_null(l);
    assert_int_equal(err.code, code);
    if (!strstr(err.msg, needle))
        fail_msg("message '%s' lacks '%s'", err.msg, needle);
    assert_null(nn_layer_new(&sp, in, NULL)); /* no err record: still no crash */
}

static void test_bad_specs(void **state)
{
    (void)state;
    nn_shape_t in = {3, 3, 3};
    expect_bad((nn_layer_spec_t){NN_CONV, 4, 5, 1, 0, 0, 0, 0, NULL, NULL, 0, 0}, in, EI_E_SHAPE,
               "conv: kernel 5 with padding 0 does not fit input 3x3");
    expect_bad((nn_layer_spec_t){NN_MAXPOOL, 0, 4, 1, 0, 0, 0, 0, NULL, NULL, 0, 0}, (nn_shape_t){1, 8, 3}, EI_E_SHAPE,
               "does not fit input 8x3");
    expect_bad((nn_layer_spec_t){NN_CONV, 0, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, in, EI_E_INVAL, "0 outputs");
    expect_bad((nn_layer_spec_t){NN_DENSE, -2, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, in, EI_E_INVAL, "-2 outputs");
    expect_bad((nn_layer_spec_t){NN_CONV, 4, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, (nn_shape_t){0, 3, 3}, EI_E_SHAPE,
               "below 1");
    expect_bad((nn_layer_spec_t){NN_BN, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, (nn_shape_t){0, 3, 3}, EI_E_SHAPE,
               "bn: input shape 0x3x3");
    expect_bad((nn_layer_spec_t){NN_CONV, 4, 0, 1, 0, 0, 0, 0, NULL, NULL, 0, 0}, in, EI_E_INVAL, "kernel 0");
    expect_bad((nn_layer_spec_t){NN_CONV, 4, 3, 1, 3, 0, 0, 0, NULL, NULL, 0, 0}, in, EI_E_INVAL, "padding 3");
    expect_bad((nn_layer_spec_t){NN_CONV, 4, 3, -1, 1, 0, 0, 0, NULL, NULL, 0, 0}, in, EI_E_INVAL, "stride -1");
    expect_bad((nn_layer_spec_t){NN_MAXPOOL, 0, 2, 2, -1, 0, 0, 0, NULL, NULL, 0, 0}, in, EI_E_INVAL, "padding -1");
    expect_bad((nn_layer_spec_t){NN_AVGPOOL, 0, 0, 0, 0, 4, 0, 0, NULL, NULL, 0, 0}, in, EI_E_SHAPE, "adaptive size 4");
    expect_bad((nn_layer_spec_t){NN_AVGPOOL, 0, 0, 0, 0, -1, 0, 0, NULL, NULL, 0, 0}, in, EI_E_INVAL, "size -1");
    expect_bad((nn_layer_spec_t){NN_AVGPOOL, 0, 3, 1, 1, 0, 0, 0, NULL, NULL, 0, 0}, in, EI_E_INVAL, "padding 1");
    expect_bad((nn_layer_spec_t){(nn_kind_t)42, 1, 1, 1, 0, 0, 0, 0, NULL, NULL, 0, 0}, in, EI_E_INVAL, "kind 42");
    expect_bad((nn_layer_spec_t){NN_CONV, 1 << 20, 1 << 10, 1, 0, 0, 0, 0, NULL, NULL, 0, 0},
               (nn_shape_t){1 << 10, 1 << 10, 1 << 10}, EI_E_SHAPE, "too many weights");
    expect_bad((nn_layer_spec_t){NN_FLATTEN, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0, 0}, (nn_shape_t){1 << 12, 1 << 12, 1 << 8},
               EI_E_SHAPE, "too large");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_forward),     cmocka_unit_test(test_pool_forward),
        cmocka_unit_test(test_other_forward),    cmocka_unit_test(test_conv_dense_backward),
        cmocka_unit_test(test_bn_backward),      cmocka_unit_test(test_pool_backward),
        cmocka_unit_test(test_maxpool_ties),     cmocka_unit_test(test_backward_accumulates),
        cmocka_unit_test(test_bn_running_stats), cmocka_unit_test(test_softmax_xent),
        cmocka_unit_test(test_softmax_stable),   cmocka_unit_test(test_find_nonfinite),
        cmocka_unit_test(test_concat),
        cmocka_unit_test(test_fold_bn),          cmocka_unit_test(test_init_and_params),
        cmocka_unit_test(test_kind_names),       cmocka_unit_test(test_bad_specs),
        cmocka_unit_test(test_conv_batched),     cmocka_unit_test(test_layers_two_threads),
        cmocka_unit_test(test_residual_forward), cmocka_unit_test(test_residual_backward),
        cmocka_unit_test(test_residual_fold),    cmocka_unit_test(test_residual_bad),
        cmocka_unit_test(test_dropout),          cmocka_unit_test(test_conv_prepared),
        cmocka_unit_test(test_conv_pool),        cmocka_unit_test(test_conv_pair),
        cmocka_unit_test(test_bn_relu_fused),    cmocka_unit_test(test_maxpool2_backward),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
