/* Tests of nn/dataset: the installed Fashion-MNIST checked against an independent read of
 * the raw files, synthetic IDX files for every kind of damage, and the seeded split. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/test_util.h"
#include <dirent.h>
#include <unistd.h>
#include <zlib.h>

#include "common/ei.h"
#include "nn/dataset.h"

/* ---------------------------------------------------------------- helpers */

typedef struct fixture {
    char dir[64];
} fixture_t;

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    strcpy(fx->dir, "/tmp/einet-test-ds-XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    tu_rmdir(fx->dir);
    free(fx);
    return 0;
}

/* Decompresses a whole .gz file with zlib's inflate (not gzread, which the loader uses). */
static unsigned char *inflate_file(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    size_t zn = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *z = malloc(zn);
    assert_non_null(z);
    assert_int_equal(fread(z, 1, zn, fp), zn);
    fclose(fp);
    size_t cap = zn * 8, len = 0;
    unsigned char *out = malloc(cap);
    assert_non_null(out);
    z_stream s = {0};
    assert_int_equal(inflateInit2(&s, 16 + MAX_WBITS), Z_OK); /* gzip wrapper */
    s.next_in = z;
    s.avail_in = (uInt)zn;
    int rc;
    do {
        if (len == cap) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        s.next_out = out + len;
        s.avail_out = (uInt)(cap - len);
        rc = inflate(&s, Z_NO_FLUSH);
        assert_true(rc == Z_OK || rc == Z_STREAM_END);
        len = cap - s.avail_out;
    } while (rc != Z_STREAM_END);
    inflateEnd(&s);
    free(z);
    *n = len;
    return out;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

/* Writes dir/name as gzip: magic, the dims, then body. */
static void write_idx(const char *dir, const char *name, uint32_t magic, const uint32_t *dims,
                      int ndims, const unsigned char *body, size_t n)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    gzFile gz = gzopen(path, "wb");
    assert_non_null(gz);
    unsigned char h[16];
    put_be32(h, magic);
    for (int i = 0; i < ndims; i++)
        put_be32(h + 4 + 4 * i, dims[i]);
    assert_int_equal(gzwrite(gz, h, 4 + 4 * (unsigned)ndims), 4 + 4 * ndims);
    if (n)
        assert_int_equal(gzwrite(gz, body, (unsigned)n), (int)n);
    assert_int_equal(gzclose(gz), Z_OK);
}

/* A small valid test split: count images of h x w with pixel (i*31 + j) % 256, labels
 * i % 10. */
enum { SYN_N = 12, SYN_H = 3, SYN_W = 5 };
static unsigned char syn_pixels[SYN_N * SYN_H * SYN_W], syn_labels[SYN_N];

static void write_synthetic(const char *dir, const char *prefix)
{
    char in[64], ln[64];
    snprintf(in, sizeof in, "%s-images-idx3-ubyte.gz", prefix);
    snprintf(ln, sizeof ln, "%s-labels-idx1-ubyte.gz", prefix);
    for (int i = 0; i < SYN_N * SYN_H * SYN_W; i++)
        syn_pixels[i] = (unsigned char)((i * 31) % 256);
    for (int i = 0; i < SYN_N; i++)
        syn_labels[i] = (unsigned char)(i % 10);
    uint32_t idims[3] = {SYN_N, SYN_H, SYN_W}, ldims[1] = {SYN_N};
    write_idx(dir, in, 0x803, idims, 3, syn_pixels, sizeof syn_pixels);
    write_idx(dir, ln, 0x801, ldims, 1, syn_labels, sizeof syn_labels);
}

static void expect_load_error(const char *dir, const char *split, int code, const char *want)
{
    ei_err_t err = {0};
    nn_dataset_t *ds = nn_dataset_load(dir, split, &err);
    if (ds || err.code != code || !strstr(err.msg, want))
        fail_msg("load %s %s: got %s, code %d, \"%s\"; wanted code %d and \"%s\"", dir, split,
                 ds ? "a data set" : "nothing", err.code, err.msg, code, want);
    nn_dataset_destroy(&ds);
}

/* ---------------------------------------------------------------- the real data set */

/* The loaded split equals an independent inflate of the raw files, byte for byte. */
static void check_real_split(const char *split, const char *prefix, int count)
{
    ei_err_t err = {0};
    nn_dataset_t *ds = nn_dataset_load(NN_DATASET_DEFAULT_DIR, split, &err);
    if (!ds)
        fail_msg("%s", err.msg);
    assert_int_equal(ds->count, count);
    assert_int_equal(ds->h, 28);
    assert_int_equal(ds->w, 28);
    assert_int_equal(ds->classes, 10);
    /* Known facts: both splits start with an ankle boot (9), classes are balanced. */
    assert_int_equal(ds->labels[0], 9);
    int hist[10] = {0};
    for (int i = 0; i < count; i++)
        hist[ds->labels[i]]++;
    for (int c = 0; c < 10; c++)
        assert_int_equal(hist[c], count / 10);

    char path[256];
    size_t n;
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte.gz", NN_DATASET_DEFAULT_DIR, prefix);
    unsigned char *raw = inflate_file(path, &n);
    assert_int_equal(n, 16 + (size_t)count * 784);
    assert_int_equal(be32(raw), 0x803);
    int max = 0;
    for (size_t i = 0; i < (size_t)count * 784; i++) {
        if (ds->images[i] != (float)raw[16 + i] / 255.0f)
            fail_msg("%s pixel %zu: %g, raw byte %d", split, i, ds->images[i], raw[16 + i]);
        max = raw[16 + i] > max ? raw[16 + i] : max;
    }
    assert_int_equal(max, 255);
    free(raw);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte.gz", NN_DATASET_DEFAULT_DIR, prefix);
    raw = inflate_file(path, &n);
    assert_int_equal(n, 8 + (size_t)count);
    assert_memory_equal(ds->labels, raw + 8, (size_t)count);
    free(raw);
    nn_dataset_destroy(&ds);
    assert_null(ds);
}

static void test_real_test_split(void **state)
{
    (void)state;
    check_real_split("test", "t10k", 10000);
}

static void test_real_train_split(void **state)
{
    (void)state;
    check_real_split("train", "train", 60000);
}

/* ---------------------------------------------------------------- synthetic files */

static void test_synthetic_and_data_dir(void **state)
{
    fixture_t *fx = *state;
    write_synthetic(fx->dir, "t10k");
    ei_err_t err = {0};
    nn_dataset_t *ds = nn_dataset_load(fx->dir, "test", &err);
    assert_non_null(ds);
    assert_int_equal(ds->count, SYN_N);
    assert_int_equal(ds->h, SYN_H);
    assert_int_equal(ds->w, SYN_W);
    for (int i = 0; i < SYN_N * SYN_H * SYN_W; i++)
        assert_true(ds->images[i] == (float)syn_pixels[i] / 255.0f);
    assert_memory_equal(ds->labels, syn_labels, SYN_N);
    nn_dataset_destroy(&ds);
    nn_dataset_destroy(&ds); /* NULL is fine */

    /* dir NULL: $EINET_DATA_DIR first, the installed set when it is unset or empty. */
    const char *old = getenv("EINET_DATA_DIR");
    char *saved = old ? strdup(old) : NULL;
    setenv("EINET_DATA_DIR", fx->dir, 1);
    ds = nn_dataset_load(NULL, "test", &err);
    assert_non_null(ds);
    assert_int_equal(ds->count, SYN_N);
    nn_dataset_destroy(&ds);
    expect_load_error(NULL, "train", EI_E_NOTFOUND, fx->dir);
    setenv("EINET_DATA_DIR", "", 1);
    ds = nn_dataset_load(NULL, "test", &err);
    assert_non_null(ds);
    assert_int_equal(ds->count, 10000);
    nn_dataset_destroy(&ds);
    if (saved)
        setenv("EINET_DATA_DIR", saved, 1);
    else
        unsetenv("EINET_DATA_DIR");
    free(saved);

    expect_load_error(fx->dir, "val", EI_E_INVAL, "unknown split 'val'");
    expect_load_error(fx->dir, NULL, EI_E_INVAL, "unknown split");
}

static void test_missing_files_name_the_package(void **state)
{
    fixture_t *fx = *state;
    char want[400];
    snprintf(want, sizeof want, "%s/train-images-idx3-ubyte.gz: not found", fx->dir);
    expect_load_error(fx->dir, "train", EI_E_NOTFOUND, want);
    expect_load_error(fx->dir, "train", EI_E_NOTFOUND,
                      "install the Debian package dataset-fashion-mnist "
                      "(apt-get install dataset-fashion-mnist)");
    /* Images present, labels missing: the labels file is named. */
    write_synthetic(fx->dir, "train");
    char lpath[256];
    snprintf(lpath, sizeof lpath, "%s/train-labels-idx1-ubyte.gz", fx->dir);
    unlink(lpath);
    snprintf(want, sizeof want, "%s: not found", lpath);
    expect_load_error(fx->dir, "train", EI_E_NOTFOUND, want);
    expect_load_error("/nonexistent/einet", "test", EI_E_NOTFOUND, "dataset-fashion-mnist");
}

static void test_damaged_files(void **state)
{
    fixture_t *fx = *state;
    const char *img = "t10k-images-idx3-ubyte.gz", *lab = "t10k-labels-idx1-ubyte.gz";
    uint32_t idims[3] = {SYN_N, SYN_H, SYN_W}, ldims[1] = {SYN_N};
    unsigned char big[SYN_N * SYN_H * SYN_W + 10] = {0};

    write_synthetic(fx->dir, "t10k");
    write_idx(fx->dir, img, 0x801, idims, 3, syn_pixels, sizeof syn_pixels);
    expect_load_error(fx->dir, "test", EI_E_FORMAT,
                      "bad magic number 0x00000801, expected 0x00000803");
    write_synthetic(fx->dir, "t10k");
    write_idx(fx->dir, lab, 0x803, ldims, 1, syn_labels, sizeof syn_labels);
    expect_load_error(fx->dir, "test", EI_E_FORMAT, "t10k-labels-idx1-ubyte.gz: bad magic");

    /* Counts that disagree. */
    write_synthetic(fx->dir, "t10k");
    uint32_t fewer[1] = {SYN_N - 1};
    write_idx(fx->dir, lab, 0x801, fewer, 1, syn_labels, SYN_N - 1);
    expect_load_error(fx->dir, "test", EI_E_FORMAT, "11 labels, but");

    /* Truncation: in the header, in the pixels, in the labels. */
    write_synthetic(fx->dir, "t10k");
    write_idx(fx->dir, img, 0x803, idims, 2, NULL, 0);
    expect_load_error(fx->dir, "test", EI_E_FORMAT, "shorter than the 16-byte IDX header");
    write_idx(fx->dir, img, 0x803, idims, 3, syn_pixels, sizeof syn_pixels - 1);
    expect_load_error(fx->dir, "test", EI_E_FORMAT,
                      "truncated: the header promises 180 bytes of pixels, the file has 179");
    write_synthetic(fx->dir, "t10k");
    write_idx(fx->dir, lab, 0x801, ldims, 1, syn_labels, 4);
    expect_load_error(fx->dir, "test", EI_E_FORMAT, "12 bytes of labels, the file has 4");
    /* A header that promises two billion images does not make us allocate them. */
    uint32_t huge[3] = {2000000000u, SYN_H, SYN_W};
    write_idx(fx->dir, img, 0x803, huge, 3, syn_pixels, sizeof syn_pixels);
    expect_load_error(fx->dir, "test", EI_E_FORMAT, "the file has 180");

    /* Data after the promised end. */
    write_synthetic(fx->dir, "t10k");
    write_idx(fx->dir, img, 0x803, idims, 3, big, sizeof big);
    expect_load_error(fx->dir, "test", EI_E_FORMAT, "data continues after the 180 bytes");

    /* Implausible dims. */
    uint32_t zero[3] = {SYN_N, 0, SYN_W}, wide[3] = {SYN_N, SYN_H, 5000}, none[3] = {0, 3, 5};
    write_idx(fx->dir, img, 0x803, zero, 3, NULL, 0);
    expect_load_error(fx->dir, "test", EI_E_FORMAT, "implausible dims 12 x 0 x 5");
    write_idx(fx->dir, img, 0x803, wide, 3, NULL, 0);
    expect_load_error(fx->dir, "test", EI_E_FORMAT, "implausible dims 12 x 3 x 5000");
    write_idx(fx->dir, img, 0x803, none, 3, NULL, 0);
    expect_load_error(fx->dir, "test", EI_E_FORMAT, "implausible dims 0 x 3 x 5");

    /* A label that is not a class. */
    write_synthetic(fx->dir, "t10k");
    unsigned char bad_labels[SYN_N];
    memcpy(bad_labels, syn_labels, SYN_N);
    bad_labels[7] = 10;
    write_idx(fx->dir, lab, 0x801, ldims, 1, bad_labels, SYN_N);
    expect_load_error(fx->dir, "test", EI_E_FORMAT, "label 10 at index 7 is not a class 0..9");
}

/* The compressed stream itself cut short or corrupted. */
static void test_damaged_gzip(void **state)
{
    fixture_t *fx = *state;
    char path[256];
    snprintf(path, sizeof path, "%s/t10k-images-idx3-ubyte.gz", fx->dir);
    unsigned char pixels[4000];
    ei_rng_t r;
    ei_rng_seed(&r, 5);
    for (size_t i = 0; i < sizeof pixels; i++)
        pixels[i] = (unsigned char)ei_rng_below(&r, 256); /* incompressible */
    uint32_t dims[3] = {10, 20, 20}, ldims[1] = {10};
    write_idx(fx->dir, "t10k-labels-idx1-ubyte.gz", 0x801, ldims, 1,
              (const unsigned char *)"\0\1\2\3\4\5\6\7\10\11", 10);
    write_idx(fx->dir, "t10k-images-idx3-ubyte.gz", 0x803, dims, 3, pixels, sizeof pixels);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    unsigned char z[8192];
    size_t zn = fread(z, 1, sizeof z, fp);
    fclose(fp);
    assert_true(zn > 4000 && zn < sizeof z);

    /* Cut the compressed file at several points. */
    size_t cuts[] = {zn / 3, zn / 2, zn - 9};
    for (size_t i = 0; i < 3; i++) {
        fp = fopen(path, "wb");
        fwrite(z, 1, cuts[i], fp);
        fclose(fp);
        expect_load_error(fx->dir, "test", EI_E_FORMAT, "truncated");
    }
    /* Flip bytes inside the deflate data or the trailer: the loader reads to the end of
     * the stream, so zlib checks the CRC and length and every flip is caught. */
    for (int it = 0; it < 50; it++) {
        unsigned char bad[8192];
        memcpy(bad, z, zn);
        size_t at = 20 + ei_rng_below(&r, (uint32_t)(zn - 20));
        bad[at] ^= (unsigned char)(1 + ei_rng_below(&r, 255));
        fp = fopen(path, "wb");
        fwrite(bad, 1, zn, fp);
        fclose(fp);
        expect_load_error(fx->dir, "test", EI_E_FORMAT, "t10k-images-idx3-ubyte.gz: ");
    }
}

/* ---------------------------------------------------------------- split */

static void test_split(void **state)
{
    (void)state;
    enum { N = 1000, V = 150 };
    static int tr[N], va[V], tr2[N], va2[V], seen[N];
    nn_dataset_split(N, V, 42, tr, va);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < N - V; i++)
        seen[tr[i]]++;
    for (int i = 0; i < V; i++)
        seen[va[i]]++;
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1); /* disjoint and covering */

    /* Plain reference: shuffle 0..N-1 with the same seed, the last V are validation. */
    int ref[N];
    for (int i = 0; i < N; i++)
        ref[i] = i;
    ei_rng_t r;
    ei_rng_seed(&r, 42);
    ei_rng_shuffle(&r, ref, N);
    assert_memory_equal(tr, ref, sizeof(int) * (N - V));
    assert_memory_equal(va, ref + N - V, sizeof(int) * V);

    nn_dataset_split(N, V, 42, tr2, va2);
    assert_memory_equal(tr, tr2, sizeof(int) * (N - V));
    assert_memory_equal(va, va2, sizeof(int) * V);
    nn_dataset_split(N, V, 43, tr2, va2);
    assert_true(memcmp(va, va2, sizeof(int) * V) != 0);

    /* The same on every machine: values computed outside C (a Python transcription of
     * splitmix64 seeding, xoshiro256** and the Fisher-Yates in common/ei.c). */
    int t10[7], v10[3];
    nn_dataset_split(10, 3, 42, t10, v10);
    const int want_t[7] = {9, 1, 4, 2, 8, 7, 6};
    const int want_v[3] = {5, 3, 0};
    assert_memory_equal(t10, want_t, sizeof t10);
    assert_memory_equal(v10, want_v, sizeof v10);

    /* Edges: no validation, all validation, nothing at all. */
    int all[5], none_v[1];
    nn_dataset_split(5, 0, 1, all, none_v);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 5; i++)
        seen[all[i]]++;
    for (int i = 0; i < 5; i++)
        assert_int_equal(seen[i], 1);
    nn_dataset_split(5, 5, 1, none_v, all);
    nn_dataset_split(0, 0, 1, none_v, all);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_test_split),
        cmocka_unit_test(test_real_train_split),
        cmocka_unit_test_setup_teardown(test_synthetic_and_data_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_files_name_the_package, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_gzip, setup, teardown),
        cmocka_unit_test(test_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
