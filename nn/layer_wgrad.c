/* The weight gradient of a 3x3 stride-1 conv with padding 1 (one channel group) through
 * Winograd's F(3x3, 2x2), for training. dW[o][c] is the correlation of input plane c with
 * output-gradient plane o; cut the output into 2x2 tiles and each tile's share is the
 * 3x3 correlation of the 4x4 input patch around it with the tile's 2x2 gradient:
 * F(3, 2) in both directions, dW = G^T [(A g A^T) . (B^T d B)] G, with d the patch, g the
 * tile, B^T the input transform of F(2x2, 3x3), A = [1 0; 1 1; 1 -1; 0 -1] and
 * G^T = [1 .5 .5 0; 0 .5 -.5 0; 0 .5 .5 1] (F(2x2, 3x3)'s output and kernel transforms,
 * transposed: the same trilinear form read the other way). The sum over tiles and samples
 * is 16 products [out, tiles] x [tiles, in], so per tile and channel pair 16 multiplies
 * instead of 36, and the transforms write 4 floats per input or gradient value where
 * im2col wrote 9 per input value. Transforms use +, - and halving only: exact but for the
 * rounding of each sum, as F(2x2)'s forward.
 *
 * The batch is cut into groups of samples as the other lowerings do; each thread sums its
 * groups' products into its own [16][out][in] and db, added together at the end and
 * transformed once into dW. */
#include "layer_internal.h"

#include <cblas.h>
#include <string.h>

/* Tile columns one group aims at, and the most floats the group's transformed input and
 * gradient take together (they stay in L2 for the products). */
#define WGRAD_COLS 512
#define WGRAD_FLOATS (192 * 1024)
/* Where it pays against im2col + sgemm: enough input channels that the gradient's
 * transform (4 floats per value) is small against the input's, and maps of 12x12 and up.
 * A conv's whole backward at batch 128, one thread (CPU ms, this one against im2col's dW):
 * 16 -> 32 at 28x28 21.0 against 25.9, 32 -> 32 at 14x14 10.3 against 12.3, 32 -> 64 at
 * 14x14 18.4 against 19.9, 32 -> 16 at 14x14 6.5 against 8.6; but at 7x7 (16 tiles of 2x2
 * for 49 outputs) 64 -> 64 12.9 against 10.5, 64 -> 128 23.5 against 19.1. */
#define WGRAD_MIN_C 16
#define WGRAD_MIN_HW 12
/* Widest map the transforms' stack rows hold. */
#define WGRAD_MAX_W 512

#include <stdlib.h>
int nn__wgrad_fits(const nn_layer_t *self)
{
    if (getenv("NOWGRAD") && self->in.c < atoi(getenv("NOWGRAD"))) return 0;
    return self->spec.kind == NN_CONV && self->spec.k == 3 && self->stride == 1 &&
           self->spec.pad == 1 && self->groups == 1 && self->in.c >= WGRAD_MIN_C &&
           self->out.h >= WGRAD_MIN_HW && self->out.w >= WGRAD_MIN_HW &&
           self->out.h == self->in.h && self->out.w == self->in.w && self->in.w <= WGRAD_MAX_W;
}

static int tiles_of(const nn_layer_t *self)
{
    return ((self->out.h + 1) / 2) * ((self->out.w + 1) / 2);
}

static int group_max(const nn_layer_t *self, int n)
{
    int t = tiles_of(self), g = (WGRAD_COLS + t - 1) / t;
    long long fit = WGRAD_FLOATS / (16LL * (self->in.c + self->out.c) * t);
    g = fit < g ? (int)fit : g;
    g = g < 1 ? 1 : g;
    return g < n ? g : n;
}

/* Floats of the padded input plane: (2 th + 2) x (2 tw + 2). */
static size_t pad_floats(const nn_layer_t *self)
{
    return (size_t)((self->out.h + 1) / 2 * 2 + 2) * ((self->out.w + 1) / 2 * 2 + 2);
}

/* One thread's share: V [16][in][cols], D [16][out][cols], the padded plane, and its sums
 * M [16][out][in] and db [out]. */
size_t nn__wgrad_share(const nn_layer_t *self, int n)
{
    if (!nn__wgrad_fits(self))
        return 0;
    size_t cols = (size_t)group_max(self, n) * tiles_of(self);
    size_t c = (size_t)self->in.c, m = (size_t)self->out.c;
    return 16 * (c + m) * cols + pad_floats(self) + 16 * m * c + m;
}

/* B^T d B of every 4x4 patch of one input plane (patch (ti, tj) starts at row 2 ti - 1 and
 * column 2 tj - 1, zeros outside), value xi of tile t to v[xi * stride + t]. A band of
 * four padded rows is combined down the columns first (B^T d for every column at once),
 * then across: both loops run along a whole tile row, so they vectorise. */
static void input_tiles(const float *plane, int h, int w, int th, int tw, float *pad, float *v,
                        size_t stride)
{
    int ph = 2 * th + 2, pw = 2 * tw + 2;
    memset(pad, 0, (size_t)pw * sizeof(float));
    for (int i = 0; i < h; i++) {
        float *row = pad + (size_t)(i + 1) * pw;
        row[0] = 0;
        memcpy(row + 1, plane + (size_t)i * w, (size_t)w * sizeof(float));
        memset(row + 1 + w, 0, (size_t)(pw - 1 - w) * sizeof(float));
    }
    memset(pad + (size_t)(h + 1) * pw, 0, (size_t)(ph - h - 1) * pw * sizeof(float));
    float a[4][WGRAD_MAX_W + 4];
    for (int ti = 0; ti < th; ti++) {
        const float *r0 = pad + (size_t)2 * ti * pw, *r1 = r0 + pw, *r2 = r1 + pw, *r3 = r2 + pw;
        for (int q = 0; q < pw; q++) { /* B^T d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3 */
            a[0][q] = r0[q] - r2[q];
            a[1][q] = r1[q] + r2[q];
            a[2][q] = r2[q] - r1[q];
            a[3][q] = r1[q] - r3[q];
        }
        float *vt = v + (size_t)ti * tw;
        for (int r = 0; r < 4; r++) { /* (B^T d) B: the same on the columns */
            const float *ar = a[r];
            float *o0 = vt + (size_t)(r * 4) * stride, *o1 = o0 + stride, *o2 = o1 + stride;
            float *o3 = o2 + stride;
            for (int tj = 0; tj < tw; tj++) {
                float c0 = ar[2 * tj], c1 = ar[2 * tj + 1], c2 = ar[2 * tj + 2];
                float c3 = ar[2 * tj + 3];
                o0[tj] = c0 - c2;
                o1[tj] = c1 + c2;
                o2[tj] = c2 - c1;
                o3[tj] = c1 - c3;
            }
        }
    }
}

/* A g A^T of every 2x2 tile of one output-gradient plane (zeros past its edge), value xi of
 * tile t to d[xi * stride + t]; returns the plane's sum (for db). Row pairs first (A g),
 * then column pairs, as input_tiles. */
static float grad_tiles(const float *plane, int oh, int ow, int th, int tw, float *d,
                        size_t stride)
{
    float b[4][WGRAD_MAX_W + 4];
    int cw = 2 * tw;
    for (int ti = 0; ti < th; ti++) {
        const float *g0 = plane + (size_t)2 * ti * ow, *g1 = g0 + ow;
        int last = 2 * ti + 1 >= oh; /* no second row: zeros */
        for (int q = 0; q < ow; q++) { /* A g: rows g0, g0 + g1, g0 - g1, -g1 */
            float u = g0[q], l = last ? 0 : g1[q];
            b[0][q] = u;
            b[1][q] = u + l;
            b[2][q] = u - l;
            b[3][q] = -l;
        }
        for (int q = ow; q < cw; q++)
            b[0][q] = b[1][q] = b[2][q] = b[3][q] = 0;
        float *dt = d + (size_t)ti * tw;
        for (int r = 0; r < 4; r++) { /* (A g) A^T */
            const float *br = b[r];
            float *o0 = dt + (size_t)(r * 4) * stride, *o1 = o0 + stride, *o2 = o1 + stride;
            float *o3 = o2 + stride;
            for (int tj = 0; tj < tw; tj++) {
                float c0 = br[2 * tj], c1 = br[2 * tj + 1];
                o0[tj] = c0;
                o1[tj] = c0 + c1;
                o2[tj] = c0 - c1;
                o3[tj] = -c1;
            }
        }
    }
    return (float)nn__sum(plane, (size_t)oh * ow);
}

typedef struct wgrad_job {
    const nn_layer_t *self;
    const nn_tensor_t *x, *dy;
    float *ws;
    size_t share;
    int g;
    int used[NN_MAX_THREADS]; /* thread tid has summed into its share */
} wgrad_job_t;

static float *sums_of(const wgrad_job_t *j, int tid)
{
    const nn_layer_t *self = j->self;
    return j->ws + (size_t)tid * j->share + j->share - 16 * (size_t)self->out.c * self->in.c -
           self->out.c;
}

static void wgrad_group(void *arg, int item, int tid)
{
    wgrad_job_t *j = arg;
    const nn_layer_t *self = j->self;
    int c = self->in.c, m = self->out.c, h = self->in.h, w = self->in.w;
    int oh = self->out.h, ow = self->out.w, th = (oh + 1) / 2, tw = (ow + 1) / 2, T = th * tw;
    int s0 = item * j->g, g = j->x->n - s0 < j->g ? j->x->n - s0 : j->g;
    size_t ld = (size_t)g * T, cols = (size_t)j->g * T;
    size_t in_sz = nn_shape_numel(self->in), out_sz = nn_shape_numel(self->out);
    float *v = j->ws + (size_t)tid * j->share, *d = v + 16 * (size_t)c * cols;
    float *pad = d + 16 * (size_t)m * cols, *mm = sums_of(j, tid), *db = mm + 16 * (size_t)m * c;
    int first = !j->used[tid];
    if (first)
        memset(db, 0, (size_t)m * sizeof(float));
    for (int i = 0; i < c; i++)
        for (int s = 0; s < g; s++)
            input_tiles(j->x->data + (s0 + s) * in_sz + (size_t)i * h * w, h, w, th, tw, pad,
                        v + (size_t)i * ld + (size_t)s * T, (size_t)c * ld);
    for (int o = 0; o < m; o++)
        for (int s = 0; s < g; s++)
            db[o] += grad_tiles(j->dy->data + (s0 + s) * out_sz + (size_t)o * oh * ow, oh, ow,
                                th, tw, d + (size_t)o * ld + (size_t)s * T, (size_t)m * ld);
    for (int xi = 0; xi < 16; xi++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, c, (int)ld, 1.0f,
                    d + (size_t)xi * m * ld, (int)ld, v + (size_t)xi * c * ld, (int)ld,
                    first ? 0.0f : 1.0f, mm + (size_t)xi * m * c, c);
    j->used[tid] = 1;
}

/* dw[0..9) += G^T M G of the 16 sums M (stride apart). */
static void output_tile(const float *mm, size_t stride, float *dw)
{
    float x[16], t[3][4];
    for (int q = 0; q < 16; q++)
        x[q] = mm[q * stride];
    for (int q = 0; q < 4; q++) { /* G^T M */
        t[0][q] = x[q] + 0.5f * (x[4 + q] + x[8 + q]);
        t[1][q] = 0.5f * (x[4 + q] - x[8 + q]);
        t[2][q] = 0.5f * (x[4 + q] + x[8 + q]) + x[12 + q];
    }
    for (int r = 0; r < 3; r++) { /* (G^T M) G */
        dw[r * 3 + 0] += t[r][0] + 0.5f * (t[r][1] + t[r][2]);
        dw[r * 3 + 1] += 0.5f * (t[r][1] - t[r][2]);
        dw[r * 3 + 2] += 0.5f * (t[r][1] + t[r][2]) + t[r][3];
    }
}

void nn__wgrad(const nn_layer_t *self, const nn_tensor_t *x, const nn_tensor_t *dy, float *dw,
               float *db, float *ws, size_t share)
{
    EI_ASSERT(nn__wgrad_fits(self) && share >= nn__wgrad_share(self, x->n));
    static const wgrad_job_t zero;
    wgrad_job_t j = zero;
    j.self = self, j.x = x, j.dy = dy, j.ws = ws, j.share = share;
    int threads = nn__loop_threads(self->threads);
    int count = nn__split_groups(x->n, group_max(self, x->n), threads, &j.g);
    nn__parallel_for(count, threads, wgrad_group, &j);
    int m = self->out.c, c = self->in.c;
    size_t nm = 16 * (size_t)m * c + m;
    float *sum = sums_of(&j, 0);
    if (!j.used[0]) /* the other threads took every group */
        memset(sum, 0, nm * sizeof(float));
    for (int t = 1; t < threads; t++) {
        const float *p = sums_of(&j, t);
        for (size_t i = 0; j.used[t] && i < nm; i++)
            sum[i] += p[i];
    }
    for (int o = 0; o < m; o++) {
        db[o] += sum[16 * (size_t)m * c + o];
        for (int i = 0; i < c; i++)
            output_tile(sum + (size_t)o * c + i, (size_t)m * c, dw + ((size_t)o * c + i) * 9);
    }
}
