/* A user's own input files for `einet infer --input`: PNG images (libpng's simplified API
 * converts any PNG - palette, 16-bit, with alpha - to 8-bit gray or RGB) and NumPy .npy
 * arrays of float32, turned into the model's input [C, H, W] (see cli.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

#include "cli.h"

#define NPY_MAX_BYTES (256u << 20)

/* Bilinear resampling of one channel from sw x sh to w x h (pixel centres aligned). */
static void resample(const float *src, int sw, int sh, float *dst, int w, int h)
{
    for (int y = 0; y < h; y++) {
        double fy = ((double)y + 0.5) * sh / h - 0.5;
        int y0 = fy < 0 ? 0 : (int)fy, y1 = y0 + 1 < sh ? y0 + 1 : sh - 1;
        double ty = fy < 0 ? 0 : fy - y0;
        for (int x = 0; x < w; x++) {
            double fx = ((double)x + 0.5) * sw / w - 0.5;
            int x0 = fx < 0 ? 0 : (int)fx, x1 = x0 + 1 < sw ? x0 + 1 : sw - 1;
            double tx = fx < 0 ? 0 : fx - x0;
            double top = src[y0 * sw + x0] * (1 - tx) + src[y0 * sw + x1] * tx;
            double bot = src[y1 * sw + x0] * (1 - tx) + src[y1 * sw + x1] * tx;
            dst[y * w + x] = (float)(top * (1 - ty) + bot * ty);
        }
    }
}

static int load_png(const char *path, int c, int h, int w, int resize, float *out, ei_err_t *err)
{
    if (c != 1 && c != 3)
        return ei_err_set(err, EI_E_SHAPE, "%s: the model takes %d channels; a PNG gives 1 "
                          "(gray) or 3 (RGB)", path, c);
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&img, path))
        return ei_err_set(err, EI_E_FORMAT, "%s: not a readable PNG image: %s", path,
                          img.message);
    int iw = (int)img.width, ih = (int)img.height;
    if ((iw != w || ih != h) && !resize) {
        png_image_free(&img);
        return ei_err_set(err, EI_E_SHAPE, "%s: %dx%d pixels, the model takes %dx%d (--resize "
                          "scales it)", path, iw, ih, w, h);
    }
    img.format = c == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
    size_t n = (size_t)iw * (size_t)ih;
    png_bytep px = malloc(PNG_IMAGE_SIZE(img));
    float *plane = malloc(n * sizeof *plane);
    int rc = 0;
    if (!px || !plane)
        rc = ei_err_set(err, EI_E_NOMEM, "%s: out of memory for %dx%d pixels", path, iw, ih);
    else if (!png_image_finish_read(&img, NULL, px, 0, NULL))
        rc = ei_err_set(err, EI_E_FORMAT, "%s: PNG data: %s", path, img.message);
    for (int ch = 0; rc == 0 && ch < c; ch++) { /* interleaved 8-bit to planar [0, 1] */
        for (size_t i = 0; i < n; i++)
            plane[i] = (float)px[i * (size_t)c + (size_t)ch] / 255.0f;
        float *dst = out + (size_t)ch * (size_t)h * (size_t)w;
        if (iw == w && ih == h)
            memcpy(dst, plane, n * sizeof *plane);
        else
            resample(plane, iw, ih, dst, w, h);
    }
    png_image_free(&img);
    free(px);
    free(plane);
    return rc;
}

/* The value of 'key' in a .npy header dict, copied into val: a parenthesized tuple, or the
 * text up to the next ',' or '}'. */
static int npy_field(const char *hdr, const char *key, char *val, size_t cap)
{
    char pat[32];
    snprintf(pat, sizeof pat, "'%s':", key);
    const char *p = strstr(hdr, pat);
    if (!p)
        return -1;
    p += strlen(pat);
    p += strspn(p, " ");
    const char *close = *p == '(' ? strchr(p, ')') : NULL;
    size_t len = close ? (size_t)(close - p) + 1 : strcspn(p, ",}");
    if (*p == '(' && !close)
        return -1;
    while (len && p[len - 1] == ' ')
        len--;
    snprintf(val, cap, "%.*s", (int)len, p);
    return 0;
}

/* The dims of a shape tuple "(1, 28, 28)" with the leading 1s dropped; their number. */
static int npy_dims(const char *tuple, long *dims, int cap)
{
    int n = 0;
    const char *p = tuple + (tuple[0] == '(');
    while (*p && *p != ')') {
        char *end;
        long d = strtol(p, &end, 10);
        if (end == p)
            break;
        if (n < cap && !(n == 0 && d == 1))
            dims[n++] = d;
        p = end + strspn(end, ", ");
    }
    return n;
}

static int npy_check_header(const char *path, const char *hdr, int c, int h, int w,
                            ei_err_t *err)
{
    char descr[32] = "", order[16] = "", shape[96] = "";
    if (npy_field(hdr, "descr", descr, sizeof descr) ||
        npy_field(hdr, "shape", shape, sizeof shape) ||
        npy_field(hdr, "fortran_order", order, sizeof order))
        return ei_err_set(err, EI_E_FORMAT, "%s: .npy header without descr, fortran_order "
                          "and shape: %.80s", path, hdr);
    if (strcmp(descr, "'<f4'") && strcmp(descr, "'=f4'"))
        return ei_err_set(err, EI_E_FORMAT, "%s: dtype %s, expected float32 ('<f4'): "
                          "numpy.save(path, a.astype(numpy.float32))", path, descr);
    if (strcmp(order, "False"))
        return ei_err_set(err, EI_E_FORMAT, "%s: a Fortran-order array; save a C-order one "
                          "(numpy.ascontiguousarray)", path);
    long dims[8];
    int nd = npy_dims(shape, dims, 8);
    int ok = (nd == 3 && dims[0] == c && dims[1] == h && dims[2] == w) ||
             (c == 1 && nd == 2 && dims[0] == h && dims[1] == w);
    if (!ok)
        return ei_err_set(err, EI_E_SHAPE, "%s: shape %s, the model takes (%d, %d, %d) "
                          "(or (1, %d, %d, %d))", path, shape, c, h, w, c, h, w);
    return 0;
}

static int load_npy(const char *path, FILE *f, int c, int h, int w, float *out, ei_err_t *err)
{
    unsigned char pre[12];
    if (fread(pre, 1, 10, f) != 10)
        return ei_err_set(err, EI_E_FORMAT, "%s: truncated .npy header", path);
    size_t hlen = pre[8] | (size_t)pre[9] << 8;
    if (pre[6] < 1 || pre[6] > 3)
        return ei_err_set(err, EI_E_FORMAT, "%s: .npy version %d.%d is not supported", path,
                          pre[6], pre[7]);
    if (pre[6] >= 2) {
        if (fread(pre + 10, 1, 2, f) != 2)
            return ei_err_set(err, EI_E_FORMAT, "%s: truncated .npy header", path);
        hlen |= (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
    }
    if (hlen > 65536)
        return ei_err_set(err, EI_E_FORMAT, "%s: a %zu-byte .npy header", path, hlen);
    char *hdr = calloc(1, hlen + 1);
    if (!hdr)
        return ei_err_set(err, EI_E_NOMEM, "out of memory");
    int rc = fread(hdr, 1, hlen, f) == hlen ? npy_check_header(path, hdr, c, h, w, err)
                                            : ei_err_set(err, EI_E_FORMAT, "%s: truncated .npy "
                                                         "header", path);
    free(hdr);
    if (rc < 0)
        return rc;
    size_t n = (size_t)c * (size_t)h * (size_t)w;
    if (fread(out, sizeof *out, n, f) != n)
        return ei_err_set(err, EI_E_FORMAT, "%s: the data ends before %zu float32 values",
                          path, n);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(out[i]))
            return ei_err_set(err, EI_E_NONFINITE, "%s: non-finite value (%g) at index %zu",
                              path, (double)out[i], i);
    return 0;
}

int cli_input_load(const char *path, int c, int h, int w, int resize, float *out, ei_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return ei_err_set(err, EI_E_NOTFOUND, "%s: cannot open: %s", path, strerror(errno));
    unsigned char magic[8] = {0};
    size_t got = fread(magic, 1, sizeof magic, f);
    int rc;
    if (got >= 6 && !memcmp(magic, "\x93NUMPY", 6)) {
        rewind(f);
        rc = load_npy(path, f, c, h, w, out, err); /* arrays are never resized */
    } else if (got == 8 && !png_sig_cmp(magic, 0, 8)) {
        rc = load_png(path, c, h, w, resize, out, err);
    } else {
        rc = ei_err_set(err, EI_E_FORMAT, "%s: not a PNG image or a .npy array", path);
    }
    fclose(f);
    return rc;
}
