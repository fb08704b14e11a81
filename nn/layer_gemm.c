/* The layers that are matrix products: conv2d lowered to sgemm through im2col, and dense.
 * Forward and backward both run on OpenBLAS.
 *
 * A batch is cut into groups of samples, each group one product: im2col writes the group's
 * samples side by side (row r of col is [tap r of sample 0 | tap r of sample 1 | ...]), so
 * one sgemm of [out, c*k*k] x [c*k*k, G*oh*ow] covers the group, and the result, laid out
 * [out, G*oh*ow], is copied into NCHW with the bias added. The group is as many samples as
 * make about GROUP_COLS columns (small maps need many samples to give sgemm a wide enough
 * product), bounded by the batch. A group of one sample multiplies straight into NCHW. */
#include "layer_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Output positions o in [0, n_out) whose input index o * s + off lies in [0, n_in) are
 * [lo, hi); the rest fall on zero padding. */
static void valid_range(int n_out, int n_in, int s, int off, int *lo, int *hi)
{
    int a = -off, b = n_in - off; /* need a <= o * s < b */
    *lo = a <= 0 ? 0 : (a + s - 1) / s;
    *hi = b <= 0 ? 0 : (b + s - 1) / s;
    if (*lo > n_out)
        *lo = n_out;
    if (*hi > n_out)
        *hi = n_out;
    if (*hi < *lo)
        *hi = *lo;
}

/* Conv geometry of one sample and one channel group (c is the group's input channels). */
typedef struct geom {
    int c, h, w, k, s, p, oh, ow;
} geom_t;

static geom_t geom_of(const nn_layer_t *self)
{
    geom_t g = {self->in.c / self->groups, self->in.h, self->in.w, self->spec.k,
                self->stride, self->spec.pad, self->out.h, self->out.w};
    return g;
}

/* A block of col is the [oh, ow] image one kernel tap (ki, kj) of one channel sees: output
 * (i, j) reads input (i * s + ki - p, j * s + kj - p), or zero padding outside the input.
 * Rows [rlo, rhi) and columns [lo, hi) of the block read inside the input. */
typedef struct tap {
    int ki, kj, lo, hi, rlo, rhi;
} tap_t;

static tap_t tap_of(const geom_t *g, int ki, int kj)
{
    tap_t t = {ki, kj, 0, 0, 0, 0};
    valid_range(g->ow, g->w, g->s, kj - g->p, &t.lo, &t.hi);
    valid_range(g->oh, g->h, g->s, ki - g->p, &t.rlo, &t.rhi);
    return t;
}

/* Columns [j0, j1) of rows [rlo, rhi): a strip of a few strided values (the padding
 * columns), too short to be worth a call per row. */
static void zero_columns(float *blk, int ow, int rlo, int rhi, int j0, int j1)
{
    for (int j = j0; j < j1; j++)
        for (int i = rlo; i < rhi; i++)
            blk[(size_t)i * ow + j] = 0;
}

/* The block row by row: copied from the plane (to_col) or added back into it. */
static void block_rows(const geom_t *g, const tap_t *t, float *plane, float *blk, int to_col)
{
    int ow = g->ow, s = g->s, off = t->kj - g->p;
    if (to_col) {
        memset(blk, 0, (size_t)t->rlo * ow * sizeof(float));
        memset(blk + (size_t)t->rhi * ow, 0, (size_t)(g->oh - t->rhi) * ow * sizeof(float));
        zero_columns(blk, ow, t->rlo, t->rhi, 0, t->lo);
        zero_columns(blk, ow, t->rlo, t->rhi, t->hi, ow);
    }
    for (int i = t->rlo; i < t->rhi; i++) {
        float *row = blk + (size_t)i * ow, *src = plane + (size_t)(i * s + t->ki - g->p) * g->w;
        if (!to_col && s == 1) /* contiguous: the loop vectorises */
            for (int j = t->lo; j < t->hi; j++)
                src[j + off] += row[j];
        else if (!to_col)
            for (int j = t->lo; j < t->hi; j++)
                src[j * s + off] += row[j];
        else if (s == 1)
            memcpy(row + t->lo, src + t->lo + off, (size_t)(t->hi - t->lo) * sizeof(float));
        else
            for (int j = t->lo; j < t->hi; j++)
                row[j] = src[j * s + off];
    }
}

/* With stride 1 and ow == w (same padding) the block is the plane shifted by a constant:
 * one flat copy, then the columns that ran across a row end into the neighbouring row
 * are set back to padding. Far fewer, longer copies than row by row. */
static void block_flat(const geom_t *g, const tap_t *t, const float *plane, float *blk)
{
    int ow = g->ow, hw = g->h * g->w, n = g->oh * ow;
    int shift = (t->ki - g->p) * g->w + t->kj - g->p;
    int q0 = t->rlo * ow, q1 = t->rhi * ow;
    q0 = q0 < -shift ? -shift : q0;
    q1 = q1 > hw - shift ? hw - shift : q1;
    if (q1 <= q0) { /* the tap sees only padding */
        memset(blk, 0, (size_t)n * sizeof(float));
        return;
    }
    memset(blk, 0, (size_t)q0 * sizeof(float));
    memcpy(blk + q0, plane + q0 + shift, (size_t)(q1 - q0) * sizeof(float));
    memset(blk + q1, 0, (size_t)(n - q1) * sizeof(float));
    zero_columns(blk, ow, t->rlo, t->rhi, 0, t->lo);
    zero_columns(blk, ow, t->rlo, t->rhi, t->hi, ow);
}

/* im2col of small maps as a gather through a table: for every tap and output position the
 * input's index in the plane, or the plane's size for padding (a zero placed after a copy
 * of the plane). On a 3x3 map a tap's block is 9 floats, far too short for the copies
 * above (a memset, a memcpy and the padding columns each); the table does it in one loop.
 * Where it pays (a scratch program timing both, batch groups as the layers run them, ns
 * per float of col): 128 channels at 3x3 0.31 against 0.91, 64 at 7x7 0.26 against 0.32,
 * stride 2 from 28x28 to 14x14 0.20 against 0.31; stride 1 at 14x14 0.19 against 0.14
 * (the flat copies win there). Bounds on the table and the plane's copy: stack arrays. */
#define GATHER_MAX_N1 64 /* outputs per map, stride 1 */
#define GATHER_MAX_N 256 /* other strides */
#define GATHER_MAX_TAB 4096
#define GATHER_MAX_PLANE 1024

static int gather_fits(const geom_t *g)
{
    int n = g->oh * g->ow;
    if (g->s == 1 && n > GATHER_MAX_N1)
        return 0;
    return n <= GATHER_MAX_N && g->k * g->k * n <= GATHER_MAX_TAB && g->h * g->w < GATHER_MAX_PLANE;
}

/* tab[t * n + q]: the input index tap t of output position q reads, or the plane's size
 * (the zero slot) for padding. */
static void gather_table(const geom_t *g, int *tab)
{
    int n = g->oh * g->ow, hw = g->h * g->w;
    for (int ki = 0; ki < g->k; ki++)
        for (int kj = 0; kj < g->k; kj++)
            for (int i = 0; i < g->oh; i++)
                for (int j = 0; j < g->ow; j++) {
                    int y = i * g->s + ki - g->p, xx = j * g->s + kj - g->p;
                    int in = y >= 0 && y < g->h && xx >= 0 && xx < g->w;
                    tab[(ki * g->k + kj) * n + i * g->ow + j] = in ? y * g->w + xx : hw;
                }
}

static void im2col_gather(const geom_t *g, const float *x, size_t in_sz, int G, float *col)
{
    int kk = g->k * g->k, n = g->oh * g->ow, hw = g->h * g->w;
    size_t ld = (size_t)n * G;
    int tab[GATHER_MAX_TAB];
    float buf[GATHER_MAX_PLANE];
    gather_table(g, tab);
    buf[hw] = 0;
    for (int c = 0; c < g->c; c++)
        for (int s = 0; s < G; s++) {
            memcpy(buf, x + s * in_sz + (size_t)c * hw, (size_t)hw * sizeof(float));
            float *base = col + (size_t)c * kk * ld + (size_t)s * n;
            for (int t = 0; t < kk; t++) {
                float *row = base + (size_t)t * ld;
                const int *tt = tab + t * n;
                for (int q = 0; q < n; q++)
                    row[q] = buf[tt[q]];
            }
        }
}

/* The adjoint of im2col_gather (col2im): per channel and sample the taps' blocks summed
 * through the same table into a copy of the plane (one zero slot for the padding), in tap
 * order as block_rows adds them, then added into the plane (which the caller zeroed):
 * the same sums in the same order. */
static void col2im_gather(const geom_t *g, float *x, size_t in_sz, int G, const float *col)
{
    int kk = g->k * g->k, n = g->oh * g->ow, hw = g->h * g->w;
    size_t ld = (size_t)n * G;
    int tab[GATHER_MAX_TAB];
    float buf[GATHER_MAX_PLANE];
    gather_table(g, tab);
    for (int c = 0; c < g->c; c++)
        for (int s = 0; s < G; s++) {
            memset(buf, 0, (size_t)(hw + 1) * sizeof(float));
            const float *base = col + (size_t)c * kk * ld + (size_t)s * n;
            for (int t = 0; t < kk; t++) {
                const float *row = base + (size_t)t * ld;
                const int *tt = tab + t * n;
                for (int q = 0; q < n; q++)
                    buf[tt[q]] += row[q];
            }
            float *pl = x + s * in_sz + (size_t)c * hw;
            for (int q = 0; q < hw; q++)
                pl[q] += buf[q];
        }
}

/* col [c*k*k, G*oh*ow] from the G samples at x, in_sz floats apart (to_col): row r of col
 * is tap r of sample 0, then of sample 1, ...; or the adjoint, the samples += col
 * scattered back (they must be zeroed first). Each tap's geometry is worked out once for
 * every channel and sample. */
static void im2col(const geom_t *g, float *x, size_t in_sz, int G, float *col, int to_col)
{
    size_t plane = (size_t)g->h * g->w, n = (size_t)g->oh * g->ow, ld = n * (size_t)G;
    int flat = to_col && g->s == 1 && g->ow == g->w;
    if (gather_fits(g)) {
        if (to_col)
            im2col_gather(g, x, in_sz, G, col);
        else
            col2im_gather(g, x, in_sz, G, col);
        return;
    }
    for (int ki = 0; ki < g->k; ki++)
        for (int kj = 0; kj < g->k; kj++) {
            tap_t t = tap_of(g, ki, kj);
            for (int c = 0; c < g->c; c++) {
                float *row = col + ((size_t)(c * g->k + ki) * g->k + kj) * ld;
                for (int s = 0; s < G; s++) {
                    float *pl = x + s * in_sz + c * plane, *blk = row + s * n;
                    if (flat)
                        block_flat(g, &t, pl, blk);
                    else
                        block_rows(g, &t, pl, blk, to_col);
                }
            }
        }
}

/* 1x1 stride-1 unpadded convs multiply the sample itself: no im2col. */
static int conv_pointwise(const nn_layer_t *self)
{
    return self->spec.k == 1 && self->stride == 1 && self->spec.pad == 0;
}

static int conv_setup(nn_layer_t *self, ei_err_t *err)
{
    int rc = nn__window_setup(self, "conv", err);
    if (rc)
        return rc;
    const nn_layer_spec_t *sp = &self->spec;
    self->groups = sp->groups > 0 ? sp->groups : 1;
    if (self->in.c % self->groups || sp->out % self->groups)
        return ei_err_set(err, EI_E_SHAPE,
                          "conv: %d groups must divide the input channels (%d) and the output "
                          "channels (%d)", self->groups, self->in.c, sp->out);
    self->out.c = sp->out;
    rc = nn__layer_add_param(self, "weight", 4, sp->out, self->in.c / self->groups, sp->k, sp->k,
                             1);
    return rc ? rc : nn__layer_add_param(self, "bias", 1, sp->out, 1, 1, 1, 1);
}

/* Columns one grouped product aims at, and the most floats its col may take: measured on
 * this machine's OpenBLAS (docs/nn.md): wide enough to run sgemm near its peak, small
 * enough that col stays in L2. */
#define GROUP_COLS 1024
#define GROUP_COL_FLOATS (256 * 1024)

/* Largest group of samples per product (the workspace is sized for it). */
static int conv_group_max(const nn_layer_t *self, int n)
{
    int hw = self->out.h * self->out.w, g = (GROUP_COLS + hw - 1) / hw;
    long long col = (long long)(self->in.c / self->groups) * self->spec.k * self->spec.k * hw;
    long long fit = GROUP_COL_FLOATS / col;
    g = fit < g ? (int)fit : g;
    g = g < 1 ? 1 : g;
    return g < n ? g : n;
}

/* Floats of col (im2col of a group) and of the product buffer (the group's [out, G*oh*ow]
 * output, or its gathered output gradient); a group of one needs no product buffer, and a
 * pointwise conv of one sample no col. */
static size_t conv_col_floats(const nn_layer_t *self, int group)
{
    if (group == 1 && conv_pointwise(self))
        return 0;
    return (size_t)(self->in.c / self->groups) * self->spec.k * self->spec.k * self->out.h *
           self->out.w * group;
}

/* ---- Training through Winograd's lowering ----
 * A training step runs the forward of an eligible 3x3 conv through Winograd's lowering
 * too, and the data gradient of a stride-1 "same" 3x3 conv (pad 1, one channel group) as
 * the forward of another conv: dx = conv(dy, W') with W'[c][o] = W[o][c] turned by 180
 * degrees, pad 1, no bias (dx[c][p][q] = sum over o, a, e of W[o][c][a][e] dy[o][p+1-a]
 * [q+1-e]). That replaces the product W^T dy, col2im's scatter and the zeroing of dx by
 * the lowering's fewer multiplies. Both transforms are made again every step from the
 * current weights (16 or 36 floats per weight pair: small against the products); the
 * buffers are made on the first training step and kept. The inference lowering
 * (self->wino, of the folded weights) is never touched: training's own are in
 * self->state. */
static size_t conv_share(const nn_layer_t *self, int n);

typedef struct conv_train {
    float *u;          /* the forward's transformed weights (nn__wino_prepare's layout) */
    float *ut;         /* the data gradient's, of W' */
    nn_tensor_t *wt;   /* W' [in][out][3][3] */
    nn_tensor_t *zero; /* the data gradient's bias: in.c zeros */
} conv_train_t;

static void conv_destroy(nn_layer_t *self)
{
    conv_train_t *st = self->state;
    if (!st)
        return;
    free(st->u);
    free(st->ut);
    nn_tensor_destroy(&st->wt);
    nn_tensor_destroy(&st->zero);
    free(st);
    self->state = NULL;
}

/* The data gradient can be the forward of the conv W' on dy: 3x3, stride 1, pad 1, one
 * group (then dx has dy's map), and that conv is eligible for the lowering. */
static int conv_dx_wino_fits(const nn_layer_t *self)
{
    if (self->spec.kind != NN_CONV || self->spec.k != 3 || self->stride != 1 ||
        self->spec.pad != 1 || self->groups != 1)
        return 0;
    nn_layer_t t = *self;
    t.in = self->out;
    t.out = self->in;
    t.spec.out = self->in.c;
    return nn__wino_eligible(&t);
}

/* The conv W' as a layer the lowering runs (a copy of self with the shapes swapped and
 * st's weights, bias and transform; st NULL: shapes only). */
static nn_layer_t conv_dx_layer(const nn_layer_t *self, const conv_train_t *st)
{
    nn_layer_t t = *self;
    t.in = self->out;
    t.out = self->in;
    t.spec.out = self->in.c;
    t.state = NULL;
    t.wino = st ? st->ut : NULL;
    if (st) {
        t.params[0].value = st->wt;
        t.params[1].value = st->zero;
    }
    return t;
}

/* The state, made on the first training step; NULL when out of memory (the layer then
 * trains through im2col, which is as exact). */
static conv_train_t *conv_train_state(nn_layer_t *self)
{
    if (self->state)
        return self->state;
    conv_train_t *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    self->state = st;
    if (conv_dx_wino_fits(self)) {
        st->wt = nn_tensor_new(self->in.c, self->out.c, 3, 3);
        st->zero = nn_tensor_new(self->in.c, 1, 1, 1);
        if (!st->wt || !st->zero) {
            nn_tensor_destroy(&st->wt);
            nn_tensor_destroy(&st->zero);
        } else {
            nn__fill(st->zero->data, (size_t)self->in.c, 0);
        }
    }
    return st;
}

/* The forward of a training step through the lowering: returns 0 when the layer cannot
 * have it (then im2col runs). */
static int conv_train_forward_wino(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y,
                                   float *ws, int relu)
{
    if (!nn__wino_on() || !nn__wino_eligible(self))
        return 0;
    conv_train_t *st = conv_train_state(self);
    if (!st)
        return 0;
    nn_layer_t t = *self; /* self->wino (inference's) stays as it is */
    t.wino = st->u;
    nn__wino_prepare(&t);
    st->u = t.wino;
    if (!st->u)
        return 0;
    nn__wino_forward(&t, x, y, ws, conv_share(self, x->n), relu, 0);
    return 1;
}

/* W' of the current weights and its transform, for dx through the lowering; returns the
 * state, or NULL when the layer cannot have it (then the products and col2im run). */
static conv_train_t *conv_dx_prepare(nn_layer_t *self)
{
    if (!nn__wino_on() || !conv_dx_wino_fits(self))
        return NULL;
    conv_train_t *st = conv_train_state(self);
    if (!st || !st->wt)
        return NULL;
    int m = self->out.c, c = self->in.c;
    const float *w = self->params[0].value->data;
    for (int o = 0; o < m; o++)
        for (int i = 0; i < c; i++) {
            const float *src = w + ((size_t)o * c + i) * 9;
            float *dst = st->wt->data + ((size_t)i * m + o) * 9;
            for (int q = 0; q < 9; q++)
                dst[q] = src[8 - q];
        }
    nn_layer_t t = conv_dx_layer(self, st);
    nn__wino_prepare(&t);
    st->ut = t.wino;
    return st->ut ? st : NULL;
}

/* One thread's share of the workspace: col, the product buffer, and the weight and bias
 * gradients it sums on its own in a backward (thread 0 adds into the layer's). */
static size_t conv_share(const nn_layer_t *self, int n)
{
    int g = conv_group_max(self, n);
    size_t prod = g > 1 ? nn_shape_numel(self->out) * g : 0;
    size_t grads = self->threads > 1 ? nn_tensor_numel(self->params[0].value) + self->out.c : 0;
    size_t im2col = conv_col_floats(self, g) + prod + grads, wino = nn__wino_share(self, n);
    size_t back = 0;
    if (conv_dx_wino_fits(self)) {
        nn_layer_t t = conv_dx_layer(self, NULL);
        back = nn__wino_share(&t, n);
    }
    wino = back > wino ? back : wino;
    size_t wgrad = nn__wgrad_share(self, n);
    wino = wgrad > wino ? wgrad : wino;
    return wino > im2col ? wino : im2col;
}

static size_t conv_workspace(const nn_layer_t *self, int n)
{
    return conv_share(self, n) * (size_t)self->threads;
}

static double conv_flops(const nn_layer_t *self)
{
    return 2.0 * self->out.c * (self->in.c / self->groups) * self->spec.k * self->spec.k *
           self->out.h * self->out.w;
}

/* Normal(0, sqrt(2 / fan_in)) weights and zero biases: He initialisation. */
static void he_init(nn_layer_t *self, ei_rng_t *rng)
{
    nn_tensor_t *w = self->params[0].value, *b = self->params[1].value;
    double sd = sqrt(2.0 / (double)nn_tensor_sample_numel(w));
    for (size_t i = 0; i < nn_tensor_numel(w); i++)
        w->data[i] = (float)(sd * ei_rng_normal(rng));
    nn__fill(b->data, nn_tensor_numel(b), 0);
}

/* A batch's split into groups: count groups of g samples (the last may be shorter), as
 * even as the largest group allows, and a multiple of the threads when there are several,
 * so that they finish together. */
typedef struct conv_job {
    nn_layer_t *self;
    const nn_tensor_t *x, *dy;
    nn_tensor_t *y, *dx;
    float *ws;
    size_t share; /* floats of ws per thread */
    int g, count, threads;
    int relu; /* forward: max(0, .) in the same pass */
    int no_dw; /* backward: dW and db are summed elsewhere (dx only) */
} conv_job_t;

static conv_job_t conv_job(nn_layer_t *self, const nn_tensor_t *x, float *ws)
{
    conv_job_t j = {.self = self, .x = x, .ws = ws, .share = conv_share(self, x->n)};
    j.threads = nn__loop_threads(self->threads);
    j.count = nn__split_groups(x->n, conv_group_max(self, x->n), j.threads, &j.g);
    return j;
}

/* im2col of channel group cg's channels of samples [s0, s0 + g) of x side by side in
 * col (ld = g * oh * ow); returns the product's right operand (the sample's channels
 * themselves for a pointwise conv of one sample). */
static const float *group_col(const nn_layer_t *self, const geom_t *gm, const nn_tensor_t *x,
                              int s0, int g, int cg, float *col)
{
    size_t in_sz = nn_shape_numel(self->in);
    float *xs = x->data + s0 * in_sz + (size_t)cg * gm->c * gm->h * gm->w;
    if (g == 1 && conv_pointwise(self))
        return xs;
    im2col(gm, xs, in_sz, g, col, 1);
    return col;
}

/* Copies between the group's product layout [m, g*n] and g NCHW samples of m planes of n:
 * into the samples with the bias added and, with relu, max(0, .) taken (to_nchw), or from
 * them. */
static void group_layout(float *prod, float *nchw, int m, int n, int g, const float *bias,
                         int relu, int to_nchw)
{
    size_t ld = (size_t)n * g;
    for (int s = 0; s < g; s++)
        for (int o = 0; o < m; o++) {
            float *p = prod + o * ld + (size_t)s * n, *q = nchw + ((size_t)s * m + o) * n;
            if (!to_nchw) {
                memcpy(p, q, (size_t)n * sizeof(float));
                continue;
            }
            float b = bias[o];
            if (relu)
                for (int j = 0; j < n; j++)
                    q[j] = p[j] + b > 0 ? p[j] + b : 0;
            else
                for (int j = 0; j < n; j++)
                    q[j] = p[j] + b;
        }
}

static void conv_forward_group(void *arg, int item, int tid)
{
    const conv_job_t *j = arg;
    nn_layer_t *self = j->self;
    geom_t gm = geom_of(self);
    const float *w = self->params[0].value->data, *b = self->params[1].value->data;
    int m = self->out.c, k = gm.c * gm.k * gm.k, n = gm.oh * gm.ow;
    int G = self->groups, mg = m / G; /* channel groups: one product each */
    int s0 = item * j->g, g = j->x->n - s0 < j->g ? j->x->n - s0 : j->g;
    float *ws = j->ws + tid * j->share;
    float *ys = j->y->data + (size_t)s0 * m * n;
    if (g == 1) { /* straight into NCHW */
        for (int o = 0; o < m; o++)
            nn__fill(ys + (size_t)o * n, (size_t)n, b[o]);
        for (int cg = 0; cg < G; cg++) {
            const float *col = group_col(self, &gm, j->x, s0, g, cg, ws);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mg, n, k, 1.0f,
                        w + (size_t)cg * mg * k, k, col, n, 1.0f, ys + (size_t)cg * mg * n, n);
        }
        if (j->relu)
            for (size_t i = 0; i < (size_t)m * n; i++)
                ys[i] = ys[i] > 0 ? ys[i] : 0;
        return;
    }
    float *prod = ws + conv_col_floats(self, conv_group_max(self, j->x->n));
    size_t ld = (size_t)n * g;
    for (int cg = 0; cg < G; cg++) {
        const float *col = group_col(self, &gm, j->x, s0, g, cg, ws);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mg, (int)ld, k, 1.0f,
                    w + (size_t)cg * mg * k, k, col, (int)ld, 0.0f, prod + cg * mg * ld, (int)ld);
    }
    group_layout(prod, ys, m, n, g, b, j->relu, 1);
}

void nn__conv_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                      int relu, int training)
{
    if (self->wino && !training) {
        nn__wino_forward(self, x, y, ws, conv_share(self, x->n), relu, 0);
        return;
    }
    if (training && conv_train_forward_wino(self, x, y, ws, relu))
        return;
    conv_job_t j = conv_job(self, x, ws);
    j.y = y;
    j.relu = relu;
    nn__parallel_for(j.count, j.threads, conv_forward_group, &j);
}

int nn__conv_pool_fusable(const nn_layer_t *self, const nn_layer_t *pool)
{
    const nn_layer_spec_t *sp = &pool->spec;
    return self->spec.kind == NN_CONV && self->wino && sp->kind == NN_MAXPOOL && sp->k == 2 &&
           pool->stride == 2 && sp->pad == 0;
}

void nn__conv_forward_relu_pool(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y,
                                float *ws)
{
    EI_ASSERT(self->wino && y->n == x->n && y->c == self->out.c && y->h == self->out.h / 2 &&
              y->w == self->out.w / 2);
    nn__wino_forward(self, x, y, ws, conv_share(self, x->n), 1, 1);
}

static void conv_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                         int training)
{
    nn__conv_forward(self, x, y, ws, 0, training);
}

/* db[o] += sum of row o of dy [m, n]. */
static void add_row_sums(const float *dy, int m, int n, float *db)
{
    for (int o = 0; o < m; o++)
        db[o] += (float)nn__sum(dy + (size_t)o * n, (size_t)n);
}

/* The gradients thread tid sums into: the layer's for thread 0, its share's otherwise. */
static float *grad_share(const conv_job_t *j, int tid)
{
    return j->ws + (size_t)tid * j->share + j->share - nn_tensor_numel(j->self->params[0].value) -
           j->self->out.c;
}

/* Per group: dy gathered into [m, g*n] (in place for one sample), db from its row sums,
 * dW += dy col^T in one product, and dcol = W^T dy in another, scattered back by col2im. */
static void conv_backward_group(void *arg, int item, int tid)
{
    const conv_job_t *j = arg;
    nn_layer_t *self = j->self;
    geom_t gm = geom_of(self);
    const float *w = self->params[0].value->data;
    float *dw = self->params[0].grad->data, *db = self->params[1].grad->data;
    if (tid > 0) {
        dw = grad_share(j, tid);
        db = dw + nn_tensor_numel(self->params[0].value);
    }
    int m = self->out.c, k = gm.c * gm.k * gm.k, n = gm.oh * gm.ow, pw = conv_pointwise(self);
    int G = self->groups, mg = m / G; /* channel groups: products of their own */
    size_t in_sz = nn_shape_numel(self->in), out_sz = nn_shape_numel(self->out);
    size_t gplane = (size_t)gm.c * gm.h * gm.w; /* one channel group of one sample */
    int s0 = item * j->g, g = j->x->n - s0 < j->g ? j->x->n - s0 : j->g, ld = n * g;
    float *ws = j->ws + tid * j->share;
    float *prod = ws + conv_col_floats(self, conv_group_max(self, j->x->n));
    float *dys = j->dy->data + s0 * out_sz;
    if (g > 1) {
        group_layout(prod, dys, m, n, g, NULL, 0, 0);
        dys = prod;
    }
    if (!j->no_dw)
        add_row_sums(dys, m, ld, db);
    float *dxs = j->dx ? j->dx->data + s0 * in_sz : NULL;
    if (dxs && !(g == 1 && pw))
        memset(dxs, 0, (size_t)g * in_sz * sizeof(float));
    for (int cg = 0; cg < G; cg++) {
        const float *wg = w + (size_t)cg * mg * k, *dyg = dys + (size_t)cg * mg * ld;
        if (!j->no_dw) {
            const float *col = group_col(self, &gm, j->x, s0, g, cg, ws);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, mg, k, ld, 1.0f, dyg, ld, col,
                        ld, 1.0f, dw + (size_t)cg * mg * k, k);
        }
        if (!dxs)
            continue;
        if (g == 1 && pw) { /* col is the sample: its gradient is the product itself */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, n, mg, 1.0f, wg, k, dyg, n,
                        0.0f, dxs + cg * gplane, n);
            continue;
        }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, ld, mg, 1.0f, wg, k, dyg, ld,
                    0.0f, ws, ld);
        im2col(&gm, dxs + cg * gplane, in_sz, g, ws, 0);
    }
}

static void conv_backward(nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *y,
                          const nn_tensor_t *dy, nn_tensor_t *dx, float *ws)
{
    (void)y;
    conv_job_t j = conv_job(self, x, ws);
    j.dy = dy;
    conv_train_t *st = dx ? conv_dx_prepare(self) : NULL;
    j.dx = st ? NULL : dx;
    j.no_dw = nn__wino_on() && nn__wgrad_fits(self);
    float *dw = self->params[0].grad->data, *db = self->params[1].grad->data;
    if (j.no_dw)
        nn__wgrad(self, x, dy, dw, db, ws, j.share);
    if (j.no_dw && !j.dx)
        j.count = 0; /* nothing left for the products */
    size_t ng = nn_tensor_numel(self->params[0].value) + (size_t)self->out.c;
    for (int t = 1; t < j.threads && j.count && !j.no_dw; t++)
        memset(grad_share(&j, t), 0, ng * sizeof(float));
    nn__parallel_for(j.count, j.threads, conv_backward_group, &j);
    size_t nw = nn_tensor_numel(self->params[0].value);
    for (int t = 1; t < j.threads && j.count && !j.no_dw; t++) {
        const float *p = grad_share(&j, t);
        for (size_t i = 0; i < nw; i++)
            dw[i] += p[i];
        for (int o = 0; o < self->out.c; o++)
            db[o] += p[nw + o];
    }
    if (st) { /* after the sums above: the lowering's scratch overlaps their shares */
        nn_layer_t t = conv_dx_layer(self, st);
        nn__wino_forward(&t, dy, dx, ws, j.share, 0, 0);
    }
}

const nn_layer_ops_t nn__conv_ops = {conv_setup,   conv_workspace, conv_flops,  he_init,
                                     conv_forward, conv_backward,  conv_destroy};

static int dense_setup(nn_layer_t *self, ei_err_t *err)
{
    (void)err;
    int in = (int)nn_shape_numel(self->in);
    self->out = (nn_shape_t){self->spec.out, 1, 1};
    int rc = nn__layer_add_param(self, "weight", 2, self->spec.out, in, 1, 1, 1);
    return rc ? rc : nn__layer_add_param(self, "bias", 1, self->spec.out, 1, 1, 1, 1);
}

static double dense_flops(const nn_layer_t *self)
{
    return 2.0 * self->out.c * (double)nn_shape_numel(self->in);
}

static void dense_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                          int training)
{
    (void)ws, (void)training;
    const float *w = self->params[0].value->data, *b = self->params[1].value->data;
    int in = (int)nn_shape_numel(self->in), out = self->out.c;
    for (int s = 0; s < x->n; s++)
        memcpy(y->data + (size_t)s * out, b, (size_t)out * sizeof(float));
    if (x->n == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, out, in, 1.0f, w, in, x->data, 1, 1.0f, y->data,
                    1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, x->n, out, in, 1.0f, x->data, in, w,
                    in, 1.0f, y->data, out);
}

static void dense_backward(nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *y,
                           const nn_tensor_t *dy, nn_tensor_t *dx, float *ws)
{
    (void)y, (void)ws;
    const float *w = self->params[0].value->data;
    float *dw = self->params[0].grad->data, *db = self->params[1].grad->data;
    int in = (int)nn_shape_numel(self->in), out = self->out.c;
    for (int s = 0; s < x->n; s++)
        for (int o = 0; o < out; o++)
            db[o] += dy->data[(size_t)s * out + o];
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, x->n, 1.0f, dy->data, out,
                x->data, in, 1.0f, dw, in);
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, x->n, in, out, 1.0f, dy->data, out,
                    w, in, 0.0f, dx->data, in);
}

const nn_layer_ops_t nn__dense_ops = {dense_setup, NULL,          dense_flops,
                                      he_init,     dense_forward, dense_backward, NULL};
