/* The layers without weights: ReLU, max and average pooling (fixed or adaptive windows),
 * global average pooling and flatten. Every pool walks the same windows: output o of a
 * side covers inputs [lo, hi) of that side, clipped to the input (padding never counts). */
#include "layer_internal.h"

#include <math.h>
#include <string.h>

static size_t plane_count(const nn_tensor_t *t)
{
    return (size_t)t->n * t->c;
}

/* Window of output o along a side of n_in inputs and n_out outputs. */
static void pool_window(const nn_layer_t *self, int o, int n_in, int n_out, int *lo, int *hi)
{
    if (self->spec.size > 0) { /* AdaptiveAvgPool2d: floor(o*n/s) .. ceil((o+1)*n/s) */
        *lo = (int)((long long)o * n_in / n_out);
        *hi = (int)(((long long)(o + 1) * n_in + n_out - 1) / n_out);
        return;
    }
    int start = o * self->stride - self->spec.pad, end = start + self->spec.k;
    *lo = start < 0 ? 0 : start;
    *hi = end > n_in ? n_in : end;
}

/* Index in the plane of the first largest value of the window (the rule maxpool's forward
 * and backward share, so the gradient goes where the forward's maximum came from). */
static int window_argmax(const float *p, int w, int h0, int h1, int w0, int w1)
{
    int best = h0 * w + w0;
    float m = p[best];
    for (int i = h0; i < h1; i++)
        for (int j = w0; j < w1; j++) {
            int at = i * w + j, gt = p[at] > m; /* selects, not branches, on the data */
            best = gt ? at : best;
            m = gt ? p[at] : m;
        }
    return best;
}

/* The same maximum as p[window_argmax(...)], without the branches on the data. */
static float window_max(const float *p, int w, int h0, int h1, int w0, int w1)
{
    float m = p[h0 * w + w0];
    for (int i = h0; i < h1; i++)
        for (int j = w0; j < w1; j++)
            m = p[i * w + j] > m ? p[i * w + j] : m;
    return m;
}

static float window_sum(const float *p, int w, int h0, int h1, int w0, int w1)
{
    float acc = 0;
    for (int i = h0; i < h1; i++)
        for (int j = w0; j < w1; j++)
            acc += p[i * w + j];
    return acc;
}

/* Visits every output of every plane with its window: forward (dx == NULL) writes y,
 * backward adds dy into the window of dx (the argmax only, for maxpool). */
static void pool_sweep(const nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y,
                       const nn_tensor_t *dy, nn_tensor_t *dx, size_t lo, size_t hi)
{
    int h = self->in.h, w = self->in.w, oh = self->out.h, ow = self->out.w;
    int is_max = self->spec.kind == NN_MAXPOOL;
    size_t ip = (size_t)h * w, op = (size_t)oh * ow;
    for (size_t pl = lo; pl < hi; pl++) {
        const float *px = x->data + pl * ip;
        for (int i = 0; i < oh; i++) {
            int h0, h1, w0, w1;
            pool_window(self, i, h, oh, &h0, &h1);
            for (int j = 0; j < ow; j++) {
                pool_window(self, j, w, ow, &w0, &w1);
                size_t at = pl * op + (size_t)i * ow + j;
                float area = (float)((h1 - h0) * (w1 - w0));
                if (!dx && is_max)
                    y->data[at] = window_max(px, w, h0, h1, w0, w1);
                else if (!dx)
                    y->data[at] = window_sum(px, w, h0, h1, w0, w1) / area;
                else if (is_max)
                    dx->data[pl * ip + window_argmax(px, w, h0, h1, w0, w1)] += dy->data[at];
                else
                    for (int a = h0; a < h1; a++)
                        for (int b = w0; b < w1; b++)
                            dx->data[pl * ip + a * w + b] += dy->data[at] / area;
            }
        }
    }
}

#define MAXPOOL2_ROW 1024 /* widest output row (x2) maxpool2_forward takes row-wise */

/* Maxpool 2x2 stride 2 without padding, the common case: two rows of the input give one
 * of the output (a trailing odd row or column is never read, as in the windows). */
static void maxpool2_forward(const nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y,
                             size_t lo, size_t hi)
{
    int w = self->in.w, oh = self->out.h, ow = self->out.w;
    size_t ip = (size_t)self->in.h * w, op = (size_t)oh * ow;
    for (size_t pl = lo; pl < hi; pl++) {
        const float *px = x->data + pl * ip;
        float *py = y->data + pl * op;
        for (int i = 0; i < oh; i++) {
            const float *r0 = px + (size_t)2 * i * w, *r1 = r0 + w;
            float *out = py + (size_t)i * ow;
            if (2 * ow <= MAXPOOL2_ROW) { /* the rows' maximum, then the pairs': both
                                             loops vectorise */
                float m[MAXPOOL2_ROW];
                for (int q = 0; q < 2 * ow; q++)
                    m[q] = r1[q] > r0[q] ? r1[q] : r0[q];
                for (int j = 0; j < ow; j++)
                    out[j] = m[2 * j + 1] > m[2 * j] ? m[2 * j + 1] : m[2 * j];
                continue;
            }
            for (int j = 0; j < ow; j++) {
                float a = r0[2 * j] > r0[2 * j + 1] ? r0[2 * j] : r0[2 * j + 1];
                float b = r1[2 * j] > r1[2 * j + 1] ? r1[2 * j] : r1[2 * j + 1];
                out[j] = b > a ? b : a;
            }
        }
    }
}

#define POOL_TABLE 64 /* output sides up to this have their windows tabulated once */

/* The same windows as pool_sweep, tabulated per side, for the forward. */
static void pool_forward_tab(const nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y,
                             size_t lo, size_t hi)
{
    int h = self->in.h, w = self->in.w, oh = self->out.h, ow = self->out.w;
    int is_max = self->spec.kind == NN_MAXPOOL;
    int r0[POOL_TABLE], r1[POOL_TABLE], c0[POOL_TABLE], c1[POOL_TABLE];
    for (int i = 0; i < oh; i++)
        pool_window(self, i, h, oh, &r0[i], &r1[i]);
    for (int j = 0; j < ow; j++)
        pool_window(self, j, w, ow, &c0[j], &c1[j]);
    size_t ip = (size_t)h * w, op = (size_t)oh * ow;
    for (size_t pl = lo; pl < hi; pl++) {
        const float *px = x->data + pl * ip;
        float *py = y->data + pl * op;
        for (int i = 0; i < oh; i++)
            for (int j = 0; j < ow; j++) {
                float v;
                if (is_max) {
                    v = window_max(px, w, r0[i], r1[i], c0[j], c1[j]);
                } else {
                    float area = (float)((r1[i] - r0[i]) * (c1[j] - c0[j]));
                    v = window_sum(px, w, r0[i], r1[i], c0[j], c1[j]) / area;
                }
                py[(size_t)i * ow + j] = v;
            }
    }
}

static int is_maxpool2(const nn_layer_t *self)
{
    const nn_layer_spec_t *sp = &self->spec;
    return sp->kind == NN_MAXPOOL && sp->k == 2 && self->stride == 2 && sp->pad == 0;
}

/* The gradient of a 2x2 maxpool: each window's dy to its first largest input, in the
 * order window_argmax scans, and zeros to the other three (the windows do not overlap,
 * so each input is written once: no zeroing pass first). A trailing odd row or column,
 * which no window reads, gets zeros. The choice is arithmetic on 0/1 factors, so the
 * loop over a row of windows vectorises (a non-finite dy would spread to its window's
 * other inputs, as it would through any later sum). */
static void maxpool2_backward(const nn_layer_t *self, const nn_tensor_t *x,
                              const nn_tensor_t *dy, nn_tensor_t *dx, size_t lo, size_t hi)
{
    int h = self->in.h, w = self->in.w, oh = self->out.h, ow = self->out.w;
    size_t ip = (size_t)h * w, op = (size_t)oh * ow;
    for (size_t pl = lo; pl < hi; pl++) {
        const float *px = x->data + pl * ip, *pdy = dy->data + pl * op;
        float *pdx = dx->data + pl * ip;
        for (int i = 0; i < oh; i++) {
            const float *r0 = px + (size_t)2 * i * w, *r1 = r0 + w, *g = pdy + (size_t)i * ow;
            float *d0 = pdx + (size_t)2 * i * w, *d1 = d0 + w;
            for (int j = 0; j < ow; j++) {
                /* Each row's first largest, then the second row's only when strictly
                 * larger: the scan order's first largest. The choices as 0/1 factors. */
                float a = r0[2 * j], b = r0[2 * j + 1], c = r1[2 * j], d = r1[2 * j + 1];
                float fb = (float)(b > a), fd = (float)(d > c);
                float m0 = b > a ? b : a, m1 = d > c ? d : c;
                float low = (float)(m1 > m0), v = g[j], up = v * (1 - low), dn = v * low;
                d0[2 * j] = up * (1 - fb);
                d0[2 * j + 1] = up * fb;
                d1[2 * j] = dn * (1 - fd);
                d1[2 * j + 1] = dn * fd;
            }
            if (w > 2 * ow) {
                d0[w - 1] = 0;
                d1[w - 1] = 0;
            }
        }
        if (h > 2 * oh)
            memset(pdx + (size_t)(h - 1) * w, 0, (size_t)w * sizeof(float));
    }
}

typedef struct pool_job {
    nn_layer_t *self;
    const nn_tensor_t *x, *dy;
    nn_tensor_t *y, *dx;
} pool_job_t;

static void pool_forward_range(void *arg, size_t lo, size_t hi)
{
    const pool_job_t *j = arg;
    if (is_maxpool2(j->self))
        maxpool2_forward(j->self, j->x, j->y, lo, hi);
    else if (j->self->out.h <= POOL_TABLE && j->self->out.w <= POOL_TABLE)
        pool_forward_tab(j->self, j->x, j->y, lo, hi);
    else
        pool_sweep(j->self, j->x, j->y, NULL, NULL, lo, hi);
}

static void pool_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                         int training)
{
    (void)ws, (void)training;
    pool_job_t j = {.self = self, .x = x, .y = y};
    nn__parallel_range(plane_count(x), self->threads, pool_forward_range, &j);
}

static void pool_backward_range(void *arg, size_t lo, size_t hi)
{
    const pool_job_t *j = arg;
    size_t ip = (size_t)j->self->in.h * j->self->in.w;
    if (is_maxpool2(j->self)) { /* writes every input's gradient */
        maxpool2_backward(j->self, j->x, j->dy, j->dx, lo, hi);
        return;
    }
    memset(j->dx->data + lo * ip, 0, (hi - lo) * ip * sizeof(float));
    pool_sweep(j->self, j->x, NULL, j->dy, j->dx, lo, hi);
}

static void pool_backward(nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *y,
                          const nn_tensor_t *dy, nn_tensor_t *dx, float *ws)
{
    (void)y, (void)ws;
    if (!dx)
        return;
    pool_job_t j = {.self = self, .x = x, .dy = dy, .dx = dx};
    nn__parallel_range(plane_count(x), self->threads, pool_backward_range, &j);
}

static int maxpool_setup(nn_layer_t *self, ei_err_t *err)
{
    return nn__window_setup(self, "maxpool", err);
}

static int avgpool_setup(nn_layer_t *self, ei_err_t *err)
{
    int s = self->spec.size;
    if (s < 0)
        return ei_err_set(err, EI_E_INVAL, "avgpool: adaptive size %d must not be negative", s);
    if (s > 0 && (s > self->in.h || s > self->in.w))
        return ei_err_set(err, EI_E_SHAPE, "avgpool: adaptive size %d exceeds input %dx%d", s,
                          self->in.h, self->in.w);
    if (s > 0) {
        self->out.h = self->out.w = s;
        return 0;
    }
    if (self->spec.pad != 0)
        return ei_err_set(err, EI_E_INVAL, "avgpool: padding %d is not supported (only 0)",
                          self->spec.pad);
    return nn__window_setup(self, "avgpool", err);
}

const nn_layer_ops_t nn__maxpool_ops = {maxpool_setup, NULL,         NULL,
                                        NULL,          pool_forward, pool_backward, NULL};
const nn_layer_ops_t nn__avgpool_ops = {avgpool_setup, NULL,         NULL,
                                        NULL,          pool_forward, pool_backward, NULL};

static int same_shape_setup(nn_layer_t *self, ei_err_t *err)
{
    (void)self, (void)err;
    return 0;
}

typedef struct relu_job {
    const float *a, *b; /* forward: x; backward: y and dy */
    float *out;
} relu_job_t;

static void relu_forward_range(void *arg, size_t lo, size_t hi)
{
    const relu_job_t *j = arg;
    for (size_t i = lo; i < hi; i++)
        j->out[i] = j->a[i] > 0 ? j->a[i] : 0;
}

static void relu_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                         int training)
{
    (void)ws, (void)training;
    relu_job_t j = {x->data, NULL, y->data};
    nn__parallel_range(nn_tensor_numel(x), self->threads, relu_forward_range, &j);
}

/* dx = dy where the output is positive; y > 0 exactly where x > 0, and y survives an
 * in-place forward where x does not. */
static void relu_backward_range(void *arg, size_t lo, size_t hi)
{
    const relu_job_t *j = arg;
    for (size_t i = lo; i < hi; i++) {
        float g = j->b[i]; /* loaded either way, so the select needs no branch */
        j->out[i] = j->a[i] > 0 ? g : 0;
    }
}

static void relu_backward(nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *y,
                          const nn_tensor_t *dy, nn_tensor_t *dx, float *ws)
{
    (void)x, (void)ws;
    if (!dx)
        return;
    relu_job_t j = {y->data, dy->data, dx->data};
    nn__parallel_range(nn_tensor_numel(y), self->threads, relu_backward_range, &j);
}

const nn_layer_ops_t nn__relu_ops = {same_shape_setup, NULL,         NULL, NULL,
                                     relu_forward,     relu_backward, NULL};

static int gap_setup(nn_layer_t *self, ei_err_t *err)
{
    (void)err;
    self->out.h = self->out.w = 1;
    return 0;
}

static void gap_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                        int training)
{
    (void)self, (void)ws, (void)training;
    size_t plane = (size_t)x->h * x->w;
    for (size_t pl = 0; pl < plane_count(x); pl++)
        y->data[pl] = (float)(nn__sum(x->data + pl * plane, plane) / (double)plane);
}

static void gap_backward(nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *y,
                         const nn_tensor_t *dy, nn_tensor_t *dx, float *ws)
{
    (void)self, (void)y, (void)ws;
    if (!dx)
        return;
    size_t plane = (size_t)x->h * x->w;
    for (size_t pl = 0; pl < plane_count(x); pl++)
        nn__fill(dx->data + pl * plane, plane, dy->data[pl] / (float)plane);
}

const nn_layer_ops_t nn__gap_ops = {gap_setup, NULL, NULL, NULL, gap_forward, gap_backward, NULL};

static int flatten_setup(nn_layer_t *self, ei_err_t *err)
{
    (void)err;
    self->out = (nn_shape_t){(int)nn_shape_numel(self->in), 1, 1};
    return 0;
}

static void copy_unless_same(const nn_tensor_t *from, nn_tensor_t *to)
{
    if (from->data != to->data)
        memcpy(to->data, from->data, nn_tensor_numel(from) * sizeof(float));
}

static void flatten_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                            int training)
{
    (void)self, (void)ws, (void)training;
    copy_unless_same(x, y);
}

static void flatten_backward(nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *y,
                             const nn_tensor_t *dy, nn_tensor_t *dx, float *ws)
{
    (void)self, (void)x, (void)y, (void)ws;
    if (dx)
        copy_unless_same(dy, dx);
}

const nn_layer_ops_t nn__flatten_ops = {flatten_setup,   NULL, NULL, NULL, flatten_forward,
                                        flatten_backward, NULL};
