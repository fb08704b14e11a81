/* Tests of cli/input.c (einet infer --input): PNG files written by libpng in every colour
 * type and depth read back as the pixels / 255; resizing against a plain reference; .npy
 * arrays of each accepted shape; and every refusal naming the file and what is wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli/input.c"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/einet-input-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static const char *path_of(const char *name)
{
    static char p[4][128];
    static int at;
    at = (at + 1) % 4;
    snprintf(p[at], sizeof p[at], "%s/%s", dir, name);
    return p[at];
}

/* Writes a PNG of w x h in format (PNG_FORMAT_*) from px with libpng's simplified API. */
static const char *write_png(const char *name, int w, int h, unsigned format, const void *px)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = format;
    const char *p = path_of(name);
    assert_true(png_image_write_to_file(&img, p, 0, px, 0, NULL));
    return p;
}

static const char *write_npy(const char *name, const char *descr, const char *shape,
                             const float *v, size_t n, int fortran)
{
    char hdr[256];
    int len = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }",
                       descr, fortran ? "True" : "False", shape);
    while ((10 + len + 1) % 64)
        hdr[len++] = ' ';
    hdr[len++] = '\n';
    const char *p = path_of(name);
    FILE *f = fopen(p, "wb");
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)len, 0};
    fwrite(pre, 1, 10, f);
    fwrite(hdr, 1, (size_t)len, f);
    fwrite(v, sizeof *v, n, f);
    fclose(f);
    return p;
}

static void test_png_gray_and_rgb(void **state)
{
    (void)state;
    unsigned char g[28 * 28], rgb[28 * 28 * 3];
    for (int i = 0; i < 28 * 28; i++) {
        g[i] = (unsigned char)(i * 37 % 256);
        rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = g[i];
    }
    float out[3 * 28 * 28];
    ei_err_t err;
    assert_int_equal(cli_input_load(write_png("g.png", 28, 28, PNG_FORMAT_GRAY, g), 1, 28, 28, 0,
                                    out, &err),
                     0);
    for (int i = 0; i < 28 * 28; i++)
        assert_true(out[i] == (float)g[i] / 255.0f);
    /* gray RGB converts to the same gray; a gray PNG given to a 3-channel model fills all */
    assert_int_equal(cli_input_load(write_png("rgb.png", 28, 28, PNG_FORMAT_RGB, rgb), 1, 28, 28,
                                    0, out, &err),
                     0);
    for (int i = 0; i < 28 * 28; i++)
        assert_true(abs((int)(out[i] * 255.0f + 0.5f) - g[i]) <= 1);
    assert_int_equal(cli_input_load(path_of("g.png"), 3, 28, 28, 0, out, &err), 0);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 28 * 28; i++)
            assert_true(out[c * 784 + i] == (float)g[i] / 255.0f);
    /* 16-bit linear and palette PNGs read too (libpng converts them) */
    uint16_t g16[28 * 28];
    for (int i = 0; i < 28 * 28; i++)
        g16[i] = i < 392 ? 0 : 65535;
    assert_int_equal(cli_input_load(write_png("g16.png", 28, 28, PNG_FORMAT_LINEAR_Y, g16), 1, 28,
                                    28, 0, out, &err),
                     0);
    assert_true(out[0] == 0.0f && out[783] == 1.0f);
}

static void test_png_sizes_and_resize(void **state)
{
    (void)state;
    unsigned char g[56 * 56];
    for (int y = 0; y < 56; y++)
        for (int x = 0; x < 56; x++)
            g[y * 56 + x] = (unsigned char)(x < 28 ? 0 : 255);
    const char *p = write_png("big.png", 56, 56, PNG_FORMAT_GRAY, g);
    float out[28 * 28];
    ei_err_t err;
    assert_int_equal(cli_input_load(p, 1, 28, 28, 0, out, &err), EI_E_SHAPE);
    assert_non_null(strstr(err.msg, p));
    assert_non_null(strstr(err.msg, "56x56 pixels, the model takes 28x28 (--resize"));
    /* halving: each output pixel is the mean of a 2x2 block, so left black, right white, and
     * the two middle columns straddle the edge at 1/2 */
    assert_int_equal(cli_input_load(p, 1, 28, 28, 1, out, &err), 0);
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) {
            float want = x < 13 ? 0.0f : x > 14 ? 1.0f : out[y * 28 + x];
            assert_float_equal(out[y * 28 + x], want, 1e-6);
        }
    assert_float_equal(out[13] + out[14], 1.0f, 1e-6);
    assert_int_equal(cli_input_load(p, 2, 28, 28, 1, out, &err), EI_E_SHAPE);
    assert_non_null(strstr(err.msg, "2 channels"));
    /* a truncated PNG */
    FILE *f = fopen(p, "r+b");
    assert_int_equal(ftruncate(fileno(f), 60), 0);
    fclose(f);
    assert_int_equal(cli_input_load(p, 1, 28, 28, 1, out, &err), EI_E_FORMAT);
    assert_non_null(strstr(err.msg, p));
}

static void test_npy(void **state)
{
    (void)state;
    float v[784], out[784];
    for (int i = 0; i < 784; i++)
        v[i] = (float)i / 784.0f - 0.25f;
    ei_err_t err;
    const char *shapes[] = {"(28, 28)", "(1, 28, 28)", "(1, 1, 28, 28)"};
    for (int s = 0; s < 3; s++) {
        memset(out, 0, sizeof out);
        assert_int_equal(cli_input_load(write_npy("a.npy", "<f4", shapes[s], v, 784, 0), 1, 28,
                                        28, 0, out, &err),
                         0);
        assert_memory_equal(out, v, sizeof v);
    }
    struct {
        const char *descr, *shape;
        size_t n;
        int fortran, code;
        const char *msg;
    } bad[] = {
        {"<f8", "(28, 28)", 784, 0, EI_E_FORMAT, "dtype '<f8', expected float32"},
        {">f4", "(28, 28)", 784, 0, EI_E_FORMAT, "dtype '>f4'"},
        {"<f4", "(28, 27)", 784, 0, EI_E_SHAPE, "shape (28, 27), the model takes (1, 28, 28)"},
        {"<f4", "(2, 28, 28)", 784, 0, EI_E_SHAPE, "shape (2, 28, 28)"},
        {"<f4", "(784,)", 784, 0, EI_E_SHAPE, "shape (784,)"},
        {"<f4", "(28, 28)", 700, 0, EI_E_FORMAT, "the data ends before 784 float32 values"},
        {"<f4", "(28, 28)", 784, 1, EI_E_FORMAT, "Fortran-order"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *p = write_npy("b.npy", bad[i].descr, bad[i].shape, v, bad[i].n, bad[i].fortran);
        assert_int_equal(cli_input_load(p, 1, 28, 28, 0, out, &err), bad[i].code);
        if (!strstr(err.msg, bad[i].msg) || !strstr(err.msg, p))
            fail_msg("case %zu: '%s'", i, err.msg);
    }
    v[5] = 1.0f / 0.0f;
    assert_int_equal(cli_input_load(write_npy("c.npy", "<f4", "(28, 28)", v, 784, 0), 1, 28, 28,
                                    0, out, &err),
                     EI_E_NONFINITE);
    assert_non_null(strstr(err.msg, "non-finite value (inf) at index 5"));
}

static void test_not_an_input(void **state)
{
    (void)state;
    float out[784];
    ei_err_t err;
    const char *p = path_of("notes.txt");
    FILE *f = fopen(p, "w");
    fputs("hello\n", f);
    fclose(f);
    assert_int_equal(cli_input_load(p, 1, 28, 28, 0, out, &err), EI_E_FORMAT);
    assert_non_null(strstr(err.msg, "not a PNG image or a .npy array"));
    assert_int_equal(cli_input_load(path_of("none.png"), 1, 28, 28, 0, out, &err), EI_E_NOTFOUND);
    assert_non_null(strstr(err.msg, "none.png: cannot open: No such file"));
    unsigned char hdr[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 9, 0, 10, 0};
    f = fopen(p, "wb");
    fwrite(hdr, 1, 10, f);
    fclose(f);
    assert_int_equal(cli_input_load(p, 1, 28, 28, 0, out, &err), EI_E_FORMAT);
    assert_non_null(strstr(err.msg, ".npy version 9.0"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png_gray_and_rgb), cmocka_unit_test(test_png_sizes_and_resize),
        cmocka_unit_test(test_npy), cmocka_unit_test(test_not_an_input),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
