/* The inference lowering of 3x3 stride-1 convs (groups 1): Winograd's F(2x2, 3x3) (Lavin
 * and Gray, 2015). Each 2x2 output tile is A^T [(G g G^T) . (B^T d B)] A of the 4x4 input
 * tile d around it: per tile and channel pair 16 multiplies instead of 36, the 16 products
 * of a group of samples being 16 sgemm calls [out, in] x [in, tiles] on OpenBLAS. The
 * weights' transform U = G g G^T is made once, when the layer is prepared for inference
 * (after the batch norms are folded in); the input transform writes 4 floats per input
 * value where im2col wrote 9, and the output transform adds the bias (and the ReLU) on its
 * way into NCHW.
 *
 * Exactness: the transforms use only +, - and halving (exact in binary floating point
 * except for the rounding of each sum), so the result differs from the direct sum by a few
 * units in the last place of the inputs' magnitudes; tests/test_layer.c holds it to the
 * naive reference within 1e-4 relative, as every lowering. Training keeps im2col (its
 * backward needs the same lowering's weights only, and the weights change every step). */
#include "layer_internal.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

/* Tile columns (tiles x samples) one group of products aims at, and the most floats the
 * group's transformed input and products may take together (512 KiB: they stay in L2 for
 * the output transform). 128 to 1,024 columns and 256 KiB to 1.5 MiB ran within the
 * machine's noise of each other (docs/bench.md). */
#define WINO_COLS 256
#define WINO_FLOATS (128 * 1024)

/* Where it pays (measured, docs/bench.md): its products have K = in channels, too thin
 * below 16 (at 28x28, batch 64: 8 channels ran level with im2col, 4 at half its speed),
 * and on small maps the tiles overhang the map (7x7 in 2x2 tiles computes 64 outputs for
 * 49) while the transforms cost as much per output (64 -> 64 at 7x7 ran at 0.84x of
 * im2col, 128 -> 128 at 3x3 at 0.71x). */
#define WINO_MIN_C 16
#define WINO_MIN_HW 12

/* Widest padded input row the transforms handle on the stack (floats), and the tiles
 * per output-transform chunk (4 floats each on the stack; a tile row, at most
 * WINO_MAX_W / 4 tiles, always fits). */
#define WINO_MAX_W 1024
#define WINO_OUT_CHUNK 512
/* Floats of padded input the input transform holds at once (8 or more padded rows). */
#define WINO_IN_FLOATS 8192

static int winograd_on = 1;

void nn_set_winograd(int on)
{
    winograd_on = on != 0;
}

int nn__wino_eligible(const nn_layer_t *self)
{
    return self->spec.kind == NN_CONV && self->spec.k == 3 && self->stride == 1 &&
           self->groups == 1 && self->in.c >= WINO_MIN_C && self->out.h >= WINO_MIN_HW &&
           self->out.w >= WINO_MIN_HW && self->out.w + 4 <= WINO_MAX_W / 2;
}

static int tiles_of(const nn_layer_t *self)
{
    return ((self->out.h + 1) / 2) * ((self->out.w + 1) / 2);
}

int nn__wino_group_max(const nn_layer_t *self, int n)
{
    int t = tiles_of(self), g = (WINO_COLS + t - 1) / t;
    long long per = 16LL * (self->in.c + self->out.c) * t, fit = WINO_FLOATS / per;
    g = fit < g ? (int)fit : g;
    g = g < 1 ? 1 : g;
    return g < n ? g : n;
}

size_t nn__wino_share(const nn_layer_t *self, int n)
{
    if (!nn__wino_eligible(self))
        return 0;
    return 16 * (size_t)(self->in.c + self->out.c) * tiles_of(self) *
           (size_t)nn__wino_group_max(self, n);
}

void nn__wino_prepare(nn_layer_t *self)
{
    if (!winograd_on || !nn__wino_eligible(self))
        return;
    int m = self->out.c, c = self->in.c;
    if (!self->wino)
        self->wino = malloc(16 * (size_t)m * c * sizeof(float));
    if (!self->wino) /* out of memory: the layer keeps im2col, which is as exact */
        return;
    const float *w = self->params[0].value->data;
    for (int o = 0; o < m; o++)
        for (int i = 0; i < c; i++) {
            const float *g = w + ((size_t)o * c + i) * 9;
            float gg[4][3], u[16];
            for (int j = 0; j < 3; j++) { /* G g: rows g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2 */
                gg[0][j] = g[j];
                gg[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
                gg[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
                gg[3][j] = g[6 + j];
            }
            for (int r = 0; r < 4; r++) { /* (G g) G^T, row by row */
                u[r * 4 + 0] = gg[r][0];
                u[r * 4 + 1] = 0.5f * (gg[r][0] + gg[r][1] + gg[r][2]);
                u[r * 4 + 2] = 0.5f * (gg[r][0] - gg[r][1] + gg[r][2]);
                u[r * 4 + 3] = gg[r][2];
            }
            for (int xi = 0; xi < 16; xi++)
                self->wino[((size_t)xi * m + o) * c + i] = u[xi];
        }
}


/* Input transform of one channel plane (h x w) of one sample: its th x tw tiles' 16
 * values to v[xi * ldv + t], t = ti * tw + tj. The plane is copied with its zero padding
 * (p rows and columns before, the rest after) a chunk of tile rows at a time, each input
 * row once; then per tile row B^T d along the columns for the whole padded row (E_r
 * below), and d B per tile from 4 neighbouring columns of E. The loops run across
 * columns and tiles so that they vectorise. */
static void plane_in(const float *plane, int h, int w, int p, int th, int tw, float *v,
                     size_t ldv)
{
    int pw = 2 * tw + 2; /* >= w + 2 p: the columns the tiles read */
    int nr_max = (WINO_IN_FLOATS / pw - 2) / 2;
    float pad[WINO_IN_FLOATS], e[4][WINO_MAX_W];
    for (int t0 = 0; t0 < th; t0 += nr_max) {
        int nr = th - t0 < nr_max ? th - t0 : nr_max;
        for (int r = 0; r < 2 * nr + 2; r++) {
            int y = 2 * t0 - p + r;
            float *d = pad + (size_t)r * pw;
            if (y < 0 || y >= h) {
                memset(d, 0, (size_t)pw * sizeof(float));
                continue;
            }
            memset(d, 0, (size_t)p * sizeof(float));
            memcpy(d + p, plane + (size_t)y * w, (size_t)w * sizeof(float));
            memset(d + p + w, 0, (size_t)(pw - p - w) * sizeof(float));
        }
        for (int ti = t0; ti < t0 + nr; ti++) {
            const float *d0 = pad + (size_t)(2 * (ti - t0)) * pw, *d1 = d0 + pw;
            const float *d2 = d1 + pw, *d3 = d2 + pw;
            for (int x = 0; x < pw; x++) { /* B^T d: rows d0-d2, d1+d2, d2-d1, d1-d3 */
                e[0][x] = d0[x] - d2[x];
                e[1][x] = d1[x] + d2[x];
                e[2][x] = d2[x] - d1[x];
                e[3][x] = d1[x] - d3[x];
            }
            for (int r = 0; r < 4; r++) { /* (B^T d) B on each row */
                const float *er = e[r];
                float *v0 = v + (size_t)(r * 4) * ldv + (size_t)ti * tw, *v1 = v0 + ldv;
                float *v2 = v1 + ldv, *v3 = v2 + ldv;
                for (int t = 0; t < tw; t++) {
                    float a = er[2 * t], b = er[2 * t + 1], c = er[2 * t + 2], dd = er[2 * t + 3];
                    v0[t] = a - c;
                    v1[t] = b + c;
                    v2[t] = c - b;
                    v3[t] = b - dd;
                }
            }
        }
    }
}

/* Output transform of len consecutive tiles of one output channel: the 2x2 tiles
 * A^T M A from the 16 products at mo[xi * ldm + i], plus the bias (and max(0, .)), into
 * y4's four arrays of len (top-left, top-right, bottom-left, bottom-right). One loop across
 * the tiles, long enough to vectorise (a tile row alone, 7 to 14 tiles here, is not). */
static void tiles_out(const float *restrict mo, size_t ldm, int len, float b, int relu,
                      float *restrict y4)
{
    float *y00 = y4, *y01 = y4 + len, *y10 = y01 + len, *y11 = y10 + len;
    for (int i = 0; i < len; i++) {
        float t0[4], t1[4];
        for (int q = 0; q < 4; q++) { /* A^T M: rows m0+m1+m2, m1-m2-m3 */
            float m0 = mo[q * ldm + i], m1 = mo[(4 + q) * ldm + i];
            float m2 = mo[(8 + q) * ldm + i], m3 = mo[(12 + q) * ldm + i];
            t0[q] = m0 + m1 + m2;
            t1[q] = m1 - m2 - m3;
        }
        float a = t0[0] + t0[1] + t0[2] + b, c = t0[1] - t0[2] - t0[3] + b; /* (A^T M) A */
        float d = t1[0] + t1[1] + t1[2] + b, e = t1[1] - t1[2] - t1[3] + b;
        if (relu) {
            a = a > 0 ? a : 0;
            c = c > 0 ? c : 0;
            d = d > 0 ? d : 0;
            e = e > 0 ? e : 0;
        }
        y00[i] = a;
        y01[i] = c;
        y10[i] = d;
        y11[i] = e;
    }
}

/* The output transform of one output plane (its T tiles' products at mo), tile rows
 * taken a chunk at a time, the 2x2 tiles then placed in the plane (those rows and columns
 * inside it). */
static void plane_out(const float *mo, size_t ldm, int tw, int th, float b, int relu,
                      float *plane, int oh, int ow)
{
    float y4[4 * WINO_OUT_CHUNK];
    int rows = WINO_OUT_CHUNK / tw, pairs = ow / 2;
    for (int t0 = 0; t0 < th; t0 += rows) {
        int nr = th - t0 < rows ? th - t0 : rows, len = nr * tw;
        tiles_out(mo + (size_t)t0 * tw, ldm, len, b, relu, y4);
        const float *y00 = y4, *y01 = y4 + len, *y10 = y01 + len, *y11 = y10 + len;
        for (int ti = t0; ti < t0 + nr; ti++) {
            int k = (ti - t0) * tw;
            float *top = plane + (size_t)(2 * ti) * ow, *bot = top + ow;
            for (int tj = 0; tj < pairs; tj++) {
                top[2 * tj] = y00[k + tj];
                top[2 * tj + 1] = y01[k + tj];
            }
            if (ow % 2)
                top[ow - 1] = y00[k + pairs];
            if (2 * ti + 1 >= oh)
                continue;
            for (int tj = 0; tj < pairs; tj++) {
                bot[2 * tj] = y10[k + tj];
                bot[2 * tj + 1] = y11[k + tj];
            }
            if (ow % 2)
                bot[ow - 1] = y10[k + pairs];
        }
    }
}

typedef struct wino_job {
    nn_layer_t *self;
    const nn_tensor_t *x;
    nn_tensor_t *y;
    float *ws;
    size_t share;
    int g, relu;
} wino_job_t;

/* One group of samples: input transform into V [16][c][g * T], 16 products into
 * M [16][m][g * T], output transform into y. */
static void wino_group(void *arg, int item, int tid)
{
    const wino_job_t *j = arg;
    const nn_layer_t *self = j->self;
    int c = self->in.c, m = self->out.c, h = self->in.h, w = self->in.w;
    int oh = self->out.h, ow = self->out.w, p = self->spec.pad;
    int tw = (ow + 1) / 2, T = tiles_of(self);
    int s0 = item * j->g, g = j->x->n - s0 < j->g ? j->x->n - s0 : j->g;
    size_t ld = (size_t)g * T, in_sz = nn_shape_numel(self->in), out_sz = nn_shape_numel(self->out);
    float *v = j->ws + (size_t)tid * j->share, *mm = v + 16 * (size_t)c * ld;
    int th = (oh + 1) / 2;
    for (int s = 0; s < g; s++)
        for (int i = 0; i < c; i++) {
            const float *plane = j->x->data + (s0 + s) * in_sz + (size_t)i * h * w;
            float *vc = v + (size_t)i * ld + (size_t)s * T;
            plane_in(plane, h, w, p, th, tw, vc, (size_t)c * ld);
        }
    for (int xi = 0; xi < 16; xi++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, (int)ld, c, 1.0f,
                    self->wino + (size_t)xi * m * c, c, v + (size_t)xi * c * ld, (int)ld, 0.0f,
                    mm + (size_t)xi * m * ld, (int)ld);
    const float *b = self->params[1].value->data;
    for (int s = 0; s < g; s++)
        for (int o = 0; o < m; o++) {
            float *plane = j->y->data + (s0 + s) * out_sz + (size_t)o * oh * ow;
            plane_out(mm + (size_t)o * ld + (size_t)s * T, (size_t)m * ld, tw, th, b[o], j->relu,
                      plane, oh, ow);
        }
}

void nn__wino_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                      size_t share, int relu)
{
    wino_job_t j = {self, x, y, ws, share, 0, relu};
    int n = x->n, gmax = nn__wino_group_max(self, n), threads = nn__loop_threads(self->threads);
    int count = (n + gmax - 1) / gmax;
    if (threads > 1) {
        count = (count + threads - 1) / threads * threads;
        count = count < n ? count : n;
    }
    j.g = (n + count - 1) / count;
    count = (n + j.g - 1) / j.g;
    nn__parallel_for(count, threads, wino_group, &j);
}
