/* The inference lowering of 3x3 stride-1 convs (groups 1): Winograd's F(2x2, 3x3) and
 * F(4x4, 3x3) (Lavin and Gray, 2015). Each m x m output tile (m = 2 or 4) is
 * A^T [(G g G^T) . (B^T d B)] A of the a x a input tile d around it (a = m + 2): per tile
 * and channel pair a^2 multiplies instead of 9 m^2 (16 for 36, or 36 for 144), the a^2
 * products of a group of samples being a^2 sgemm calls [out, in] x [in, tiles] on
 * OpenBLAS. The weights' transform U = G g G^T is made once, when the layer is prepared for
 * inference (after the batch norms are folded in); the input transform writes a^2 / m^2
 * floats per input value where im2col wrote 9, and the output transform adds the bias (and
 * the ReLU) on its way into NCHW. The tile is chosen by the map (nn__wino_tile): F(2x2) on
 * maps of 12x12 and more, F(4x4) on 6x6 to 11x11 (where 2x2 tiles cost as much per output
 * in transforms as they save, while 4x4 tiles cut the multiplies by 3 on a 7x7 map).
 *
 * Exactness: F(2x2)'s transforms use only +, - and halving (exact in binary floating point
 * except for the rounding of each sum), so the result differs from the direct sum by a few
 * units in the last place of the inputs' magnitudes (1e-6 relative in tests/test_layer.c).
 * F(4x4)'s use 4, 5 and 8 and its U divides by 6 and 24 (computed in double, rounded
 * once): the products' rounding is scaled by up to 100, 1e-5 to 7e-5 relative to the
 * output's magnitude for 16 to 64 input channels, growing with them; so F(4x4) is limited
 * to at most 64 input channels, and the tests hold every lowering to the naive reference
 * within 1e-4 relative. Training runs it too, on transforms of the current weights made
 * every step (layer_gemm.c, "Training through Winograd's lowering"). */
#include "layer_internal.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

/* Tile columns (tiles x samples) one group of products aims at, and the most floats the
 * group's transformed input and products may take together (1 MiB: they stay in L2 for
 * the output transform). With the paired convs' fatter products (M = 48-160), 512 and
 * 1,024 columns ran 3-5% faster than 256 with 512 KiB (docs/bench.md, 2026-11-29 14:00);
 * before the pairs 128 to 1,024 ran within the noise of each other. */
#define WINO_COLS 512
#define WINO_FLOATS (256 * 1024)

/* Where it pays (measured, docs/bench.md): its products have K = in channels, too thin
 * below 16 (at 28x28, batch 64: 8 channels ran level with im2col, 4 at half its speed).
 * F(2x2) on small maps: the tiles overhang the map (7x7 in 2x2 tiles computes 64 outputs
 * for 49) while the transforms cost as much per output (64 -> 64 at 7x7 ran at 0.84x of
 * im2col, 128 -> 128 at 3x3 at 0.71x); F(4x4) there: 1.1-1.3x im2col at 7x7, but on 3x3
 * maps (one tile, 16 outputs for 9) 0.85-0.96x, and at 14x14 and 28x28 0.65-0.73x of
 * F(2x2) (its products get 4x fewer columns per sample). */
#define WINO_MIN_C 16
#define WINO_MIN_HW 12
#define WINO4_MIN_HW 6
#define WINO4_MAX_C 64

/* Widest padded input row the transforms handle on the stack (floats), and the tiles
 * per output-transform chunk (4 floats each on the stack; a tile row, at most
 * WINO_MAX_W / 4 tiles, always fits). */
#define WINO_MAX_W 1024
#define WINO_OUT_CHUNK 512

static int winograd_on = 1;

void nn_set_winograd(int on)
{
    winograd_on = on != 0;
}

int nn__wino_on(void)
{
    return winograd_on;
}

/* The basic conditions: a 3x3 stride-1 conv of one group with enough input channels and
 * rows the transforms' stack buffers hold. */
static int wino_basic(const nn_layer_t *self)
{
    return self->spec.kind == NN_CONV && self->spec.k == 3 && self->stride == 1 &&
           self->groups == 1 && self->in.c >= WINO_MIN_C && self->out.w + 8 <= WINO_MAX_W / 2;
}

int nn__wino_tile(const nn_layer_t *self)
{
    if (!wino_basic(self))
        return 0;
    int hw = self->out.h < self->out.w ? self->out.h : self->out.w;
    if (hw >= WINO_MIN_HW)
        return 2;
    return hw >= WINO4_MIN_HW && self->in.c <= WINO4_MAX_C ? 4 : 0;
}

int nn__wino_eligible(const nn_layer_t *self)
{
    return nn__wino_tile(self) != 0;
}

/* Tiles of one sample's output map and values per tile (a x a, a = tile + 2). */
static int tiles_of(const nn_layer_t *self)
{
    int m = nn__wino_tile(self);
    return ((self->out.h + m - 1) / m) * ((self->out.w + m - 1) / m);
}

static int area_of(const nn_layer_t *self)
{
    int a = nn__wino_tile(self) + 2;
    return a * a;
}

/* Samples per group for products of m output rows at batch n. */
static int group_max_m(const nn_layer_t *self, int m, int n)
{
    int t = tiles_of(self), g = (WINO_COLS + t - 1) / t;
    long long per = (long long)area_of(self) * (self->in.c + m) * t;
    long long fit = WINO_FLOATS / per;
    g = fit < g ? (int)fit : g;
    g = g < 1 ? 1 : g;
    return g < n ? g : n;
}

int nn__wino_group_max(const nn_layer_t *self, int n)
{
    return group_max_m(self, self->out.c, n);
}

/* Floats of one thread's workspace for products of m output rows at batch n. */
static size_t share_m(const nn_layer_t *self, int m, int n)
{
    return (size_t)area_of(self) * (size_t)(self->in.c + m) * tiles_of(self) *
           (size_t)group_max_m(self, m, n);
}

size_t nn__wino_share(const nn_layer_t *self, int n)
{
    if (!nn__wino_eligible(self))
        return 0;
    return share_m(self, self->out.c, n);
}

/* U = G g G^T of F(4x4, 3x3) for one 3x3 kernel g, in double, rounded once. G's rows:
 * g0 / 4, -(g0 + g1 + g2) / 6, -(g0 - g1 + g2) / 6, g0 / 24 + g1 / 12 + g2 / 6,
 * g0 / 24 - g1 / 12 + g2 / 6, g2. */
static void kernel_f4(const float *g, float *u)
{
    static const double G[6][3] = {{0.25, 0, 0},
                                   {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                   {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                   {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                   {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                   {0, 0, 1}};
    double gg[6][3];
    for (int r = 0; r < 6; r++)
        for (int j = 0; j < 3; j++)
            gg[r][j] = G[r][0] * g[j] + G[r][1] * g[3 + j] + G[r][2] * g[6 + j];
    for (int r = 0; r < 6; r++)
        for (int q = 0; q < 6; q++)
            u[r * 6 + q] = (float)(gg[r][0] * G[q][0] + gg[r][1] * G[q][1] + gg[r][2] * G[q][2]);
}

/* U of F(2x2, 3x3): G's rows g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2 (exact). */
static void kernel_f2(const float *g, float *u)
{
    float gg[4][3];
    for (int j = 0; j < 3; j++) { /* G g */
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
}

void nn__wino_prepare(nn_layer_t *self)
{
    if (!winograd_on || !nn__wino_eligible(self))
        return;
    int m = self->out.c, c = self->in.c, a2 = area_of(self), f4 = nn__wino_tile(self) == 4;
    if (!self->wino)
        self->wino = malloc((size_t)a2 * m * c * sizeof(float));
    if (!self->wino) /* out of memory: the layer keeps im2col, which is as exact */
        return;
    const float *w = self->params[0].value->data;
    for (int o = 0; o < m; o++)
        for (int i = 0; i < c; i++) {
            float u[36];
            if (f4)
                kernel_f4(w + ((size_t)o * c + i) * 9, u);
            else
                kernel_f2(w + ((size_t)o * c + i) * 9, u);
            for (int xi = 0; xi < a2; xi++)
                self->wino[((size_t)xi * m + o) * c + i] = u[xi];
        }
}

/* Zeros: the rows of padding above and below a plane. */
static const float wino_zeros[WINO_MAX_W];

/* The `rows` input rows a band of tiles reads, starting at row y0 of an h x w plane: row
 * pointers into the plane, wino_zeros for the padding rows outside it. */
static void band_rows(const float *plane, int h, int w, int y0, int rows, const float **d)
{
    for (int r = 0; r < rows; r++) {
        int y = y0 + r;
        d[r] = y >= 0 && y < h ? plane + (size_t)y * w : wino_zeros;
    }
}

/* Zeros in the padding columns of e's rows (p before the w columns of the plane, the rest
 * up to pw after): the transforms below write only the plane's columns, read them all, so
 * the caller zeroes them once for all the planes of a group (per plane, gcc's memset calls
 * for these 1-2 floats cost 1-2% of the forward). */
static void zero_margins(float (*e)[WINO_MAX_W], int rows, int p, int w, int pw)
{
    for (int r = 0; r < rows; r++) {
        for (int x = 0; x < p; x++)
            e[r][x] = 0;
        for (int x = p + w; x < pw; x++)
            e[r][x] = 0;
    }
}

/* Input transform of one channel plane (h x w) of one sample: its th x tw tiles' 16
 * values to v[xi * ldv + t], t = ti * tw + tj. Per tile row B^T d down the columns of its
 * 4 input rows, read in place (rows outside the plane are zeros, the p columns of padding
 * before and the rest after kept zero in E), then d B per tile from 4 neighbouring columns
 * of E. The loops run across columns and tiles so that they vectorise; the plane is not
 * copied with its padding first (its rows are 3 to 28 floats, where the copy's calls cost
 * 7% of the batch-64 forward). */
static void plane_in(const float *plane, int h, int w, int p, int th, int tw, float *v,
                     size_t ldv, float (*e)[WINO_MAX_W])
{
    const float *d[4];
    for (int ti = 0; ti < th; ti++) {
        band_rows(plane, h, w, 2 * ti - p, 4, d);
        const float *d0 = d[0], *d1 = d[1], *d2 = d[2], *d3 = d[3];
        float *e0 = e[0] + p, *e1 = e[1] + p, *e2 = e[2] + p, *e3 = e[3] + p;
        for (int x = 0; x < w; x++) { /* B^T d: rows d0-d2, d1+d2, d2-d1, d1-d3 */
            e0[x] = d0[x] - d2[x];
            e1[x] = d1[x] + d2[x];
            e2[x] = d2[x] - d1[x];
            e3[x] = d1[x] - d3[x];
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
static void plane_out(const float *mo, size_t ldm, int tw, int tha, int th, float b, int relu,
                      float *plane, size_t ss, int oh, int ow)
{
    float y4[4 * WINO_OUT_CHUNK];
    int rows = WINO_OUT_CHUNK / tw, pairs = ow / 2;
    for (int t0 = 0; t0 < tha; t0 += rows) {
        int nr = tha - t0 < rows ? tha - t0 : rows, len = nr * tw;
        tiles_out(mo + (size_t)t0 * tw, ldm, len, b, relu, y4);
        const float *y00 = y4, *y01 = y4 + len, *y10 = y01 + len, *y11 = y10 + len;
        for (int tr = t0; tr < t0 + nr; tr++) {
            int k = (tr - t0) * tw, ti = tr % th;
            float *top = plane + (size_t)(tr / th) * ss + (size_t)(2 * ti) * ow, *bot = top + ow;
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

/* F(4x4, 3x3)'s input transform of one plane, as plane_in: 6x6 tiles 4 apart, B^T d B
 * with B^T's rows (4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
 * (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1): first down the
 * columns of the tile row's 6 input rows, then along 6 neighbouring columns per tile, into
 * v[(r * 6 + q) * ldv + t]. */
static void plane_in4(const float *plane, int h, int w, int p, int th, int tw, float *v,
                      size_t ldv, float (*e)[WINO_MAX_W])
{
    const float *d[6];
    for (int ti = 0; ti < th; ti++) {
        band_rows(plane, h, w, 4 * ti - p, 6, d);
        const float *d0 = d[0], *d1 = d[1], *d2 = d[2], *d3 = d[3], *d4 = d[4], *d5 = d[5];
        for (int x = 0; x < w; x++) {
            e[0][p + x] = 4.0f * d0[x] - 5.0f * d2[x] + d4[x];
            e[1][p + x] = -4.0f * (d1[x] + d2[x]) + d3[x] + d4[x];
            e[2][p + x] = 4.0f * (d1[x] - d2[x]) - d3[x] + d4[x];
            e[3][p + x] = 2.0f * (d3[x] - d1[x]) - d2[x] + d4[x];
            e[4][p + x] = 2.0f * (d1[x] - d3[x]) - d2[x] + d4[x];
            e[5][p + x] = 4.0f * d1[x] - 5.0f * d3[x] + d5[x];
        }
        for (int r = 0; r < 6; r++) {
            const float *er = e[r];
            float *v0 = v + (size_t)(r * 6) * ldv + (size_t)ti * tw, *v1 = v0 + ldv;
            float *v2 = v1 + ldv, *v3 = v2 + ldv, *v4 = v3 + ldv, *v5 = v4 + ldv;
            for (int t = 0; t < tw; t++) {
                const float *q = er + 4 * t;
                v0[t] = 4.0f * q[0] - 5.0f * q[2] + q[4];
                v1[t] = -4.0f * (q[1] + q[2]) + q[3] + q[4];
                v2[t] = 4.0f * (q[1] - q[2]) - q[3] + q[4];
                v3[t] = 2.0f * (q[3] - q[1]) - q[2] + q[4];
                v4[t] = 2.0f * (q[1] - q[3]) - q[2] + q[4];
                v5[t] = 4.0f * q[1] - 5.0f * q[3] + q[5];
            }
        }
    }
}

/* F(4x4, 3x3)'s output transform of len consecutive tiles of one output channel: A^T M A
 * with A^T's rows (1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0),
 * (0, 1, -1, 8, -8, 1), plus the bias (and max(0, .)), into y16's 16 arrays of len (the
 * tile's outputs row by row). */
static void tiles_out4(const float *restrict mo, size_t ldm, int len, float b, int relu,
                       float *restrict y16)
{
    for (int i = 0; i < len; i++) {
        float t[4][6];
        for (int q = 0; q < 6; q++) {
            float m0 = mo[q * ldm + i], m1 = mo[(6 + q) * ldm + i], m2 = mo[(12 + q) * ldm + i];
            float m3 = mo[(18 + q) * ldm + i], m4 = mo[(24 + q) * ldm + i];
            float m5 = mo[(30 + q) * ldm + i];
            float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
            t[0][q] = m0 + s12 + s34;
            t[1][q] = d12 + 2.0f * d34;
            t[2][q] = s12 + 4.0f * s34;
            t[3][q] = d12 + 8.0f * d34 + m5;
        }
        for (int r = 0; r < 4; r++) {
            float s12 = t[r][1] + t[r][2], d12 = t[r][1] - t[r][2];
            float s34 = t[r][3] + t[r][4], d34 = t[r][3] - t[r][4];
            float o[4] = {t[r][0] + s12 + s34 + b, d12 + 2.0f * d34 + b, s12 + 4.0f * s34 + b,
                          d12 + 8.0f * d34 + t[r][5] + b};
            for (int c = 0; c < 4; c++)
                y16[(size_t)(r * 4 + c) * len + i] = relu && o[c] < 0 ? 0 : o[c];
        }
    }
}

/* plane_out for F(4x4, 3x3)'s 4x4 tiles. */
static void plane_out4(const float *mo, size_t ldm, int tw, int tha, int th, float b, int relu,
                       float *plane, size_t ss, int oh, int ow)
{
    float y16[16 * WINO_OUT_CHUNK / 4];
    int rows = WINO_OUT_CHUNK / 4 / tw, full = ow / 4, rest = ow % 4;
    for (int t0 = 0; t0 < tha; t0 += rows) {
        int nr = tha - t0 < rows ? tha - t0 : rows, len = nr * tw;
        tiles_out4(mo + (size_t)t0 * tw, ldm, len, b, relu, y16);
        for (int tr = t0; tr < t0 + nr; tr++) {
            int k = (tr - t0) * tw, ti = tr % th;
            for (int r = 0; r < 4 && 4 * ti + r < oh; r++) {
                float *row = plane + (size_t)(tr / th) * ss + (size_t)(4 * ti + r) * ow;
                const float *y0 = y16 + (size_t)(r * 4) * len + k, *y1 = y0 + len;
                const float *y2 = y1 + len, *y3 = y2 + len;
                for (int tj = 0; tj < full; tj++) {
                    row[4 * tj] = y0[tj];
                    row[4 * tj + 1] = y1[tj];
                    row[4 * tj + 2] = y2[tj];
                    row[4 * tj + 3] = y3[tj];
                }
                const float *yc[3] = {y0, y1, y2};
                for (int c = 0; c < rest; c++)
                    row[4 * full + c] = yc[c][full];
            }
        }
    }
}

/* The output transform followed by a 2x2 stride-2 maxpool: each 2x2 window of the map is
 * one F(2x2) tile, or a quarter of an F(4x4) one, so the pooled plane (ph x pw, the whole
 * windows only, as the pool takes them) gets the maximum of the window's outputs straight
 * from the tiles; the full map is never written. The outputs are those plane_out(4) would
 * write, so the maxima are the pool's exactly. */
static void plane_out_pool(const float *mo, size_t ldm, int tile, int tw, int tha, int th,
                           float b, int relu, float *pp, size_t ss, int ph, int pw)
{
    float yt[16 * WINO_OUT_CHUNK / 4];
    int per = tile * tile, rows = WINO_OUT_CHUNK * 4 / per / tw, wins = tile / 2;
    for (int t0 = 0; t0 < tha; t0 += rows) {
        int nr = tha - t0 < rows ? tha - t0 : rows, len = nr * tw;
        if (tile == 4)
            tiles_out4(mo + (size_t)t0 * tw, ldm, len, b, relu, yt);
        else
            tiles_out(mo + (size_t)t0 * tw, ldm, len, b, relu, yt);
        for (int tr = t0; tr < t0 + nr; tr++)
            for (int wr = 0, ti = tr % th; wr < wins && ti * wins + wr < ph; wr++) {
                float *prow = pp + (size_t)(tr / th) * ss + (size_t)(ti * wins + wr) * pw;
                for (int tj = 0; tj < tw; tj++)
                    for (int wc = 0; wc < wins && tj * wins + wc < pw; wc++) {
                        /* the window's outputs: tile rows 2 wr, 2 wr + 1, columns 2 wc, 2 wc + 1 */
                        size_t k = (size_t)(tr - t0) * tw + tj;
                        const float *y0 = yt + (size_t)(2 * wr * tile + 2 * wc) * len + k;
                        const float *y1 = y0 + (size_t)tile * len;
                        float a = y0[0] > y0[len] ? y0[0] : y0[len];
                        float c = y1[0] > y1[len] ? y1[0] : y1[len];
                        prow[tj * wins + wc] = c > a ? c : a;
                    }
            }
    }
}

/* Where the output transform writes output rows [o0, o0 + m) of the products: y (the
 * conv's map, or with pool the 2x2 maxpool's), their biases, max(0, .) when relu. */
typedef struct wino_out {
    nn_tensor_t *y;
    const float *bias;
    int m, relu, pool;
} wino_out_t;

/* One Winograd run: self gives the geometry (input, tile, padding), u the transformed
 * weights [a2][m][c] of m output rows, split among nout outputs in order. */
typedef struct wino_job {
    const nn_layer_t *self;
    const float *u;
    int m;
    const nn_tensor_t *x;
    wino_out_t out[2];
    int nout;
    float *ws;
    size_t share;
    int g;
} wino_job_t;

/* The output transform of output rows [o0, o0 + o->m) of a group's products mm (m rows of
 * ld columns) into o->y, samples s0 .. s0 + g - 1. Per output channel the group's samples'
 * tiles are consecutive in M (a map of g * th tile rows), transformed together in loops
 * that long, each tile row then placed in its sample's plane. */
static void group_out(const nn_layer_t *self, const wino_out_t *o, const float *mm, int o0,
                      int m, size_t ld, int s0, int g)
{
    int oh = self->out.h, ow = self->out.w, tile = nn__wino_tile(self);
    int tw = (ow + tile - 1) / tile, th = (oh + tile - 1) / tile;
    size_t ldm = (size_t)m * ld;
    if (o->pool) { /* into the 2x2 maxpool's output */
        int ph = oh / 2, pw = ow / 2;
        for (int k = 0; k < o->m; k++)
            plane_out_pool(mm + (size_t)(o0 + k) * ld, ldm, tile, tw, g * th, th, o->bias[k],
                           o->relu, o->y->data + ((size_t)s0 * o->m + k) * ph * pw,
                           (size_t)o->m * ph * pw, ph, pw);
        return;
    }
    size_t out_sz = (size_t)o->m * oh * ow;
    for (int k = 0; k < o->m; k++) {
        float *plane = o->y->data + s0 * out_sz + (size_t)k * oh * ow;
        const float *mo = mm + (size_t)(o0 + k) * ld;
        if (tile == 4)
            plane_out4(mo, ldm, tw, g * th, th, o->bias[k], o->relu, plane, out_sz, oh, ow);
        else
            plane_out(mo, ldm, tw, g * th, th, o->bias[k], o->relu, plane, out_sz, oh, ow);
    }
}

/* One group of samples: input transform into V [a2][c][g * T], a2 products into
 * M [a2][m][g * T], output transforms into the outputs. */
static void wino_group(void *arg, int item, int tid)
{
    const wino_job_t *j = arg;
    const nn_layer_t *self = j->self;
    int c = self->in.c, m = j->m, h = self->in.h, w = self->in.w, p = self->spec.pad;
    int tile = nn__wino_tile(self), a2 = area_of(self);
    int tw = (self->out.w + tile - 1) / tile, th = (self->out.h + tile - 1) / tile, T = tw * th;
    int s0 = item * j->g, g = j->x->n - s0 < j->g ? j->x->n - s0 : j->g;
    size_t ld = (size_t)g * T, in_sz = nn_shape_numel(self->in);
    float *v = j->ws + (size_t)tid * j->share, *mm = v + (size_t)a2 * c * ld;
    float e[6][WINO_MAX_W]; /* the input transforms' rows, margins zeroed once */
    zero_margins(e, tile + 2, p, w, tile * tw + 2);
    for (int i = 0; i < c; i++) /* samples inner: they write neighbouring tiles of V */
        for (int s = 0; s < g; s++) {
            const float *plane = j->x->data + (s0 + s) * in_sz + (size_t)i * h * w;
            float *vc = v + (size_t)i * ld + (size_t)s * T;
            if (tile == 4)
                plane_in4(plane, h, w, p, th, tw, vc, (size_t)c * ld, e);
            else
                plane_in(plane, h, w, p, th, tw, vc, (size_t)c * ld, e);
        }
    for (int xi = 0; xi < a2; xi++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, (int)ld, c, 1.0f,
                    j->u + (size_t)xi * m * c, c, v + (size_t)xi * c * ld, (int)ld, 0.0f,
                    mm + (size_t)xi * m * ld, (int)ld);
    for (int k = 0, o0 = 0; k < j->nout; o0 += j->out[k].m, k++)
        group_out(self, &j->out[k], mm, o0, m, ld, s0, g);
}

void nn__wino_forward(nn_layer_t *self, const nn_tensor_t *x, nn_tensor_t *y, float *ws,
                      size_t share, int relu, int pool)
{
    wino_job_t j = {.self = self, .u = self->wino, .m = self->out.c, .x = x, .nout = 1,
                    .ws = ws, .share = share};
    j.out[0] = (wino_out_t){y, self->params[1].value->data, self->out.c, relu, pool};
    int threads = nn__loop_threads(self->threads);
    int count = nn__split_groups(x->n, nn__wino_group_max(self, x->n), threads, &j.g);
    nn__parallel_for(count, threads, wino_group, &j);
}

/* ---- two convs on one map ---- */

struct nn__wino_pair {
    const nn_layer_t *a, *b;
    float *u;    /* [a2][ma + mb][c]: a's rows of U, then b's */
    float *bias; /* ma + mb */
};

nn__wino_pair_t *nn__wino_pair_new(const nn_layer_t *a, const nn_layer_t *b)
{
    if (!a->wino || !b->wino || a->in.c != b->in.c || a->in.h != b->in.h ||
        a->in.w != b->in.w || a->spec.pad != b->spec.pad ||
        nn__wino_tile(a) != nn__wino_tile(b))
        return NULL;
    int c = a->in.c, ma = a->out.c, mb = b->out.c, m = ma + mb, a2 = area_of(a);
    nn__wino_pair_t *pr = calloc(1, sizeof *pr);
    float *u = malloc((size_t)a2 * m * c * sizeof(float)), *bias = malloc((size_t)m * sizeof(float));
    if (!pr || !u || !bias) { /* out of memory: the convs run one after the other */
        free(pr);
        free(u);
        free(bias);
        return NULL;
    }
    for (int xi = 0; xi < a2; xi++) {
        memcpy(u + (size_t)xi * m * c, a->wino + (size_t)xi * ma * c, (size_t)ma * c * sizeof(float));
        memcpy(u + ((size_t)xi * m + ma) * c, b->wino + (size_t)xi * mb * c,
               (size_t)mb * c * sizeof(float));
    }
    memcpy(bias, a->params[1].value->data, (size_t)ma * sizeof(float));
    memcpy(bias + ma, b->params[1].value->data, (size_t)mb * sizeof(float));
    *pr = (nn__wino_pair_t){a, b, u, bias};
    return pr;
}

void nn__wino_pair_destroy(nn__wino_pair_t **self_p)
{
    if (!*self_p)
        return;
    free((*self_p)->u);
    free((*self_p)->bias);
    free(*self_p);
    *self_p = NULL;
}

size_t nn__wino_pair_share(const nn__wino_pair_t *self, int n)
{
    return share_m(self->a, self->a->out.c + self->b->out.c, n);
}

void nn__wino_pair_forward(const nn__wino_pair_t *self, const nn_tensor_t *x, nn_tensor_t *ya,
                           int relu_a, int pool_a, nn_tensor_t *yb, int relu_b, int pool_b,
                           float *ws)
{
    const nn_layer_t *a = self->a, *b = self->b;
    int m = a->out.c + b->out.c;
    wino_job_t j = {.self = a, .u = self->u, .m = m, .x = x, .nout = 2, .ws = ws,
                    .share = nn__wino_pair_share(self, x->n), .g = group_max_m(a, m, x->n)};
    EI_ASSERT(ya->n == x->n && yb->n == x->n && ya->c == a->out.c && yb->c == b->out.c);
    j.out[0] = (wino_out_t){ya, self->bias, a->out.c, relu_a, pool_a};
    j.out[1] = (wino_out_t){yb, self->bias + a->out.c, b->out.c, relu_b, pool_b};
    for (int item = 0; item * j.g < x->n; item++)
        wino_group(&j, item, 0);
}
