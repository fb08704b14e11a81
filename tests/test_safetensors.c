/* Tests of nn/safetensors: bit-exact round trips, the header layout other readers expect,
 * and a clear error (never a crash) for every way a file can be cut or corrupted. */
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
#include <jansson.h>
#include <math.h>
#include <unistd.h>

#include "common/ei.h"
#include "nn/safetensors.h"

/* ---------------------------------------------------------------- helpers */

typedef struct fixture {
    char dir[64];
    char path[128]; /* dir/model.st */
} fixture_t;

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    if (!fx)
        return -1;
    strcpy(fx->dir, "/tmp/einet-test-st-XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    snprintf(fx->path, sizeof fx->path, "%s/model.st", fx->dir);
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

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += de->d_name[0] != '.';
    closedir(d);
    return n;
}

static void write_bytes(const char *path, const void *buf, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)size + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)size, fp), (size_t)size);
    fclose(fp);
    *n = (size_t)size;
    return buf;
}

/* Writes a file by hand: 8-byte little-endian length, the header as given, ndata bytes
 * of data (a byte pattern). */
static void write_raw_st(const char *path, const char *header, size_t ndata)
{
    size_t hl = strlen(header), n = 8 + hl + ndata;
    unsigned char *buf = malloc(n);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < ndata; i++)
        buf[8 + hl + i] = (unsigned char)(i * 7);
    write_bytes(path, buf, n);
    free(buf);
}

/* Opens path, expecting failure with code and a message holding the path and want. */
static void expect_open_error(const char *path, int code, const char *want)
{
    ei_err_t err = {0};
    nn_st_file_t *f = nn_st_open(path, &err);
    if (f || err.code != code || !strstr(err.msg, want) || !strstr(err.msg, path))
        fail_msg("open %s: got %s, code %d, message \"%s\"; wanted code %d and \"%s\"", path,
                 f ? "a file" : "no file", err.code, err.msg, code, want);
    nn_st_close(&f);
}

/* Three tensors whose floats include the awkward bit patterns, plus an empty one. */
enum { N_A = 16 * 1 * 3 * 3, N_B = 16, N_C = 2 * 3 * 4 * 5 };
typedef struct sample {
    float a[N_A], b[N_B], c[N_C];
    nn_st_entry_t e[4];
    nn_st_meta_t m[2];
} sample_t;

static void sample_init(sample_t *s)
{
    ei_rng_t r;
    ei_rng_seed(&r, 11);
    for (int i = 0; i < N_A; i++)
        s->a[i] = (float)ei_rng_normal(&r);
    for (int i = 0; i < N_C; i++) {
        uint32_t bits = (uint32_t)ei_rng_next(&r); /* any pattern, NaN payloads included */
        memcpy(&s->c[i], &bits, 4);
    }
    const float odd[N_B] = {0.0f,    -0.0f,         INFINITY,        -INFINITY, NAN,   1e-45f,
                            -1e-45f, 3.4028235e38f, 1.17549435e-38f, 1.0f,      -1.0f, 0.1f};
    memcpy(s->b, odd, sizeof odd);
    nn_st_entry_t e[4] = {
        {"blocks.0.conv.0.weight", 4, {16, 1, 3, 3}, s->a},
        {"blocks.0.conv.0.bias", 1, {16}, s->b},
        {"empty", 2, {0, 3}, NULL},
        {"exit.\xc3\xa9t\xc3\xa9", 4, {2, 3, 4, 5}, s->c}, /* UTF-8 name */
    };
    memcpy(s->e, e, sizeof e);
    s->m[0] = (nn_st_meta_t){"format", "pt"};
    s->m[1] = (nn_st_meta_t){"einet.arch", "{\"blocks\": 4, \"note\": \"caf\xc3\xa9\"}"};
}

/* ---------------------------------------------------------------- round trips */

static void test_roundtrip_bit_exact(void **state)
{
    fixture_t *fx = *state;
    sample_t *s = malloc(sizeof *s);
    assert_non_null(s);
    sample_init(s);
    ei_err_t err = {0};
    /* Twice: the second write replaces the first atomically. */
    for (int pass = 0; pass < 2; pass++)
        assert_int_equal(nn_st_write(fx->path, s->e, 4, s->m, 2, &err), 0);
    assert_int_equal(count_files(fx->dir), 1); /* no temp file left behind */

    nn_st_file_t *f = nn_st_open(fx->path, &err);
    assert_non_null(f);
    assert_int_equal(nn_st_count(f), 4);
    for (int i = 0; i < 4; i++) {
        const nn_st_entry_t *got = nn_st_entry(f, i);
        assert_string_equal(got->name, s->e[i].name); /* offset order is the given order */
        assert_int_equal(got->ndim, s->e[i].ndim);
        size_t numel = 1;
        for (int d = 0; d < got->ndim; d++) {
            assert_int_equal(got->shape[d], s->e[i].shape[d]);
            numel *= (size_t)got->shape[d];
        }
        assert_true((uintptr_t)got->data % sizeof(float) == 0);
        if (numel)
            assert_memory_equal(got->data, s->e[i].data, numel * sizeof(float));
        assert_ptr_equal(nn_st_find(f, s->e[i].name), got);
    }
    assert_null(nn_st_find(f, "nope"));
    assert_string_equal(nn_st_meta(f, "format"), "pt");
    assert_string_equal(nn_st_meta(f, "einet.arch"), s->m[1].value);
    assert_null(nn_st_meta(f, "missing"));

    float out[N_A];
    int64_t shape[4] = {16, 1, 3, 3};
    assert_int_equal(nn_st_read(f, "blocks.0.conv.0.weight", shape, 4, out, &err), 0);
    assert_memory_equal(out, s->a, sizeof out);
    nn_st_close(&f);
    assert_null(f);
    nn_st_close(&f); /* NULL is fine */
    free(s);
}

/* The bytes on disk follow the format exactly: length, padded header, data in order. */
static void test_written_layout(void **state)
{
    fixture_t *fx = *state;
    sample_t *s = malloc(sizeof *s);
    assert_non_null(s);
    sample_init(s);
    ei_err_t err = {0};
    assert_int_equal(nn_st_write(fx->path, s->e, 4, s->m, 2, &err), 0);
    size_t size;
    unsigned char *buf = read_bytes(fx->path, &size);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | buf[i];
    assert_int_equal(hl % 8, 0);
    assert_int_equal(buf[8], '{');
    size_t data_size = sizeof s->a + sizeof s->b + sizeof s->c;
    assert_int_equal(size, 8 + hl + data_size);
    /* Any padding is spaces. */
    size_t end = 8 + (size_t)hl;
    while (buf[end - 1] == ' ')
        end--;
    assert_int_equal(buf[end - 1], '}');
    assert_true(8 + hl - end < 8);

    json_error_t jerr;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)hl, JSON_REJECT_DUPLICATES, &jerr);
    assert_non_null(root);
    assert_int_equal(json_object_size(root), 5);
    json_t *meta = json_object_get(root, "__metadata__");
    assert_true(json_is_object(meta));
    assert_string_equal(json_string_value(json_object_get(meta, "format")), "pt");
    json_int_t at = 0;
    for (int i = 0; i < 4; i++) {
        json_t *info = json_object_get(root, s->e[i].name);
        assert_true(json_is_object(info));
        assert_int_equal(json_object_size(info), 3);
        assert_string_equal(json_string_value(json_object_get(info, "dtype")), "F32");
        json_t *shape = json_object_get(info, "shape"),
               *offs = json_object_get(info, "data_offsets");
        assert_int_equal(json_array_size(shape), s->e[i].ndim);
        json_int_t nbytes = 4;
        for (int d = 0; d < s->e[i].ndim; d++) {
            assert_int_equal(json_integer_value(json_array_get(shape, d)), s->e[i].shape[d]);
            nbytes *= s->e[i].shape[d];
        }
        assert_int_equal(json_integer_value(json_array_get(offs, 0)), at);
        assert_int_equal(json_integer_value(json_array_get(offs, 1)), at + nbytes);
        if (nbytes)
            assert_memory_equal(buf + 8 + hl + at, s->e[i].data, (size_t)nbytes);
        at += nbytes;
    }
    assert_int_equal(at, data_size);
    json_decref(root);
    free(buf);
    free(s);
}

/* Files made by hand the way other writers make them open too. */
static void test_hand_made_files(void **state)
{
    fixture_t *fx = *state;
    ei_err_t err = {0};
    /* JSON key order differs from offset order; entries come back in offset order. */
    write_raw_st(fx->path,
                 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
                 "\"b\":{\"data_offsets\":[0,4],\"shape\":[1],\"dtype\":\"F32\"}}   ",
                 12);
    nn_st_file_t *f = nn_st_open(fx->path, &err);
    assert_non_null(f);
    assert_int_equal(nn_st_count(f), 2);
    assert_string_equal(nn_st_entry(f, 0)->name, "b");
    assert_string_equal(nn_st_entry(f, 1)->name, "a");
    unsigned char want[12];
    for (int i = 0; i < 12; i++)
        want[i] = (unsigned char)(i * 7);
    assert_memory_equal(nn_st_entry(f, 0)->data, want, 4);
    assert_memory_equal(nn_st_entry(f, 1)->data, want + 4, 8);
    assert_true((uintptr_t)nn_st_entry(f, 1)->data % 4 == 0); /* header length 138: moved */
    assert_null(nn_st_meta(f, "x"));
    nn_st_close(&f);

    /* No tensors at all. */
    write_raw_st(fx->path, "{}", 0);
    f = nn_st_open(fx->path, &err);
    assert_non_null(f);
    assert_int_equal(nn_st_count(f), 0);
    nn_st_close(&f);
    write_raw_st(fx->path, "{\"__metadata__\":{\"k\":\"v\"}}", 0);
    f = nn_st_open(fx->path, &err);
    assert_non_null(f);
    assert_string_equal(nn_st_meta(f, "k"), "v");
    nn_st_close(&f);
}

/* ---------------------------------------------------------------- bad files */

static void test_truncated_everywhere(void **state)
{
    fixture_t *fx = *state;
    float a[6] = {1, 2, 3, 4, 5, 6}, b[2] = {7, 8};
    nn_st_entry_t e[2] = {{"a", 2, {2, 3}, a}, {"b", 1, {2}, b}};
    nn_st_meta_t m = {"k", "v"};
    ei_err_t err = {0};
    assert_int_equal(nn_st_write(fx->path, e, 2, &m, 1, &err), 0);
    size_t size;
    unsigned char *buf = read_bytes(fx->path, &size);
    size_t hl = buf[0] | (size_t)buf[1] << 8, data = size - 8 - hl;
    /* Every cut fails cleanly: inside the length, inside the header, inside the data. */
    for (size_t cut = 0; cut < size; cut++) {
        write_bytes(fx->path, buf, cut);
        if (cut < 8)
            expect_open_error(fx->path, EI_E_FORMAT, "shorter than the 8-byte header length");
        else if (cut < 8 + hl)
            expect_open_error(fx->path, EI_E_FORMAT, "truncated: header length is");
        else {
            char want[128];
            snprintf(want, sizeof want, "truncated: header says %zu bytes of data, file has %zu",
                     data, cut - 8 - hl);
            expect_open_error(fx->path, EI_E_FORMAT, want);
        }
    }
    free(buf);
}

typedef struct bad_case {
    const char *header;
    size_t ndata;
    const char *want;
} bad_case_t;

#define T4(extra) "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}" extra "}"

static void test_corrupt_headers(void **state)
{
    fixture_t *fx = *state;
    static const bad_case_t cases[] = {
        {"{\"a\":", 0, "header is not valid JSON at line 1 column"},
        {"", 0, "header is not valid JSON"},
        {"{\"a\":1}\x01", 0, "header is not valid JSON"},
        {"{\"\xff\":1}", 0, "header is not valid JSON"}, /* not UTF-8 */
        {"[1,2]", 0, "header is not a JSON object"},
        {T4(",\"t\":{}"), 16, "duplicate"},
        {"{\"w\":3}", 0, "tensor 'w': entry is not a JSON object"},
        {"{\"w\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]}}", 8,
         "tensor 'w': unsupported dtype 'F16'"},
        {"{\"w\":{\"shape\":[4],\"data_offsets\":[0,16]}}", 16, "tensor 'w': 'dtype' is missing"},
        {"{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,16]}}", 16, "tensor 'w': 'shape'"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[4]}}", 16, "tensor 'w': 'data_offsets'"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[16,1,3,3],\"data_offsets\":[0,100]}}", 100,
         "tensor 'w': data_offsets [0,100] do not match shape [16,1,3,3] x F32 (576 bytes)"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,16]}}", 16,
         "tensor 'w': shape dim 0 is negative (-1)"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8,
         "tensor 'w': shape dim 0 is not an integer"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4,
         "tensor 'w': shape has 0 dims"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
         "tensor 'w': shape has 5 dims"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,4]}}", 4,
         "tensor 'w': shape [4611686018427387904,4] is too large"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4,
         "tensor 'w': 'data_offsets' is not an array of two non-negative integers"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4,
         "tensor 'w': 'data_offsets'"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8,
         "tensor 'w': data_offsets [8,4] end before they begin"},
        {T4(",\"u\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}"), 24,
         "tensor 'u': data_offsets [8,24] overlap tensor 't' [0,16]"},
        {T4(",\"u\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}"), 16, "overlap"},
        {T4(",\"u\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[20,24]}"), 24,
         "tensor 'u': data_offsets [20,24] leave a gap: the previous data ends at 16"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[1000000,1000004]}}", 4,
         "tensor 'w': data_offsets [1000000,1000004] leave a gap"},
        {T4(""), 8, "truncated: header says 16 bytes of data, file has 8"},
        {"{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[9223372036854775800,"
         "9223372036854775804]}}",
         4, "leave a gap"},
        {T4(""), 20, "4 bytes of data after the last tensor"},
        {T4(",\"__metadata__\":{\"k\":1}"), 16, "metadata 'k': value is not a string"},
        {T4(",\"__metadata__\":{\"k\":null}"), 16, "metadata 'k': value is not a string"},
        {T4(",\"__metadata__\":[\"k\"]"), 16, "'__metadata__' is not a JSON object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_raw_st(fx->path, cases[i].header, cases[i].ndata);
        expect_open_error(fx->path, EI_E_FORMAT, cases[i].want);
    }
}

static void test_bad_lengths_and_paths(void **state)
{
    fixture_t *fx = *state;
    unsigned char buf[16] = {0};
    /* A header length over 100 MB is rejected before anything is read. */
    uint64_t big = 200u * 1024 * 1024;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(big >> (8 * i));
    write_bytes(fx->path, buf, sizeof buf);
    expect_open_error(fx->path, EI_E_FORMAT, "header length 209715200 exceeds the limit");
    memset(buf, 0xff, 8);
    write_bytes(fx->path, buf, sizeof buf);
    expect_open_error(fx->path, EI_E_FORMAT, "exceeds the limit");
    /* A NUL inside the header. */
    unsigned char nul[16] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '"', 'a', '"', 0, ':', '1', '}'};
    write_bytes(fx->path, nul, sizeof nul);
    expect_open_error(fx->path, EI_E_FORMAT, "not valid JSON");

    char missing[160];
    snprintf(missing, sizeof missing, "%s/none.st", fx->dir);
    expect_open_error(missing, EI_E_NOTFOUND, "cannot open");
    expect_open_error(fx->dir, EI_E_IO, "not a readable regular file");
}

/* Random byte flips: open either succeeds with consistent entries or fails cleanly. */
static void test_fuzz_byte_flips(void **state)
{
    fixture_t *fx = *state;
    sample_t *s = malloc(sizeof *s);
    assert_non_null(s);
    sample_init(s);
    ei_err_t err = {0};
    assert_int_equal(nn_st_write(fx->path, s->e, 4, s->m, 2, &err), 0);
    size_t size;
    unsigned char *orig = read_bytes(fx->path, &size), *buf = malloc(size);
    assert_non_null(buf);
    size_t hl = orig[0] | (size_t)orig[1] << 8;
    ei_rng_t r;
    ei_rng_seed(&r, 2024);
    int opened = 0, failed = 0;
    for (int it = 0; it < 2000; it++) {
        memcpy(buf, orig, size);
        int flips = 1 + (int)ei_rng_below(&r, 4);
        for (int k = 0; k < flips; k++) {
            /* Mostly the length and header, where the parser lives. */
            size_t span = ei_rng_below(&r, 8) ? 8 + hl : size;
            size_t at = ei_rng_below(&r, (uint32_t)span);
            buf[at] = ei_rng_below(&r, 2) ? (unsigned char)ei_rng_next(&r)
                                          : (unsigned char)(buf[at] ^ (1u << ei_rng_below(&r, 8)));
        }
        write_bytes(fx->path, buf, size);
        err.code = 0;
        err.msg[0] = '\0';
        nn_st_file_t *f = nn_st_open(fx->path, &err);
        if (f) {
            opened++;
            for (int i = 0; i < nn_st_count(f); i++) {
                const nn_st_entry_t *e = nn_st_entry(f, i);
                size_t numel = 1;
                for (int d = 0; d < e->ndim; d++)
                    numel *= (size_t)e->shape[d];
                assert_true(numel * 4 <= size);
                volatile float sink = 0; /* touch every byte: ASan checks the bounds */
                for (size_t j = 0; j < numel; j++)
                    sink += e->data[j];
                (void)sink;
            }
            nn_st_close(&f);
        } else {
            failed++;
            assert_true(err.code == EI_E_FORMAT);
            assert_non_null(strstr(err.msg, fx->path));
        }
    }
    assert_true(opened > 0 && failed > 0);
    free(buf);
    free(orig);
    free(s);
}

/* ---------------------------------------------------------------- read and write errors */

static void test_read_checks_name_and_shape(void **state)
{
    fixture_t *fx = *state;
    sample_t *s = malloc(sizeof *s);
    assert_non_null(s);
    sample_init(s);
    ei_err_t err = {0};
    assert_int_equal(nn_st_write(fx->path, s->e, 4, NULL, 0, &err), 0);
    nn_st_file_t *f = nn_st_open(fx->path, &err);
    assert_non_null(f);
    float out[N_A];
    int64_t wrong[4] = {16, 1, 5, 5};
    assert_int_equal(nn_st_read(f, "blocks.0.conv.0.weight", wrong, 4, out, &err), EI_E_SHAPE);
    assert_non_null(strstr(err.msg, "tensor 'blocks.0.conv.0.weight': expected shape "
                                    "[16,1,5,5], found [16,1,3,3]"));
    assert_non_null(strstr(err.msg, fx->path));
    int64_t flat[1] = {144};
    assert_int_equal(nn_st_read(f, "blocks.0.conv.0.weight", flat, 1, out, &err), EI_E_SHAPE);
    assert_non_null(strstr(err.msg, "expected shape [144], found [16,1,3,3]"));
    assert_int_equal(nn_st_read(f, "blocks.9.conv.0.weight", flat, 1, out, &err), EI_E_NOTFOUND);
    assert_non_null(strstr(err.msg, "missing tensor 'blocks.9.conv.0.weight'"));
    assert_null(nn_st_meta(f, "format"));
    int64_t empty[2] = {0, 3};
    assert_int_equal(nn_st_read(f, "empty", empty, 2, out, &err), 0);
    nn_st_close(&f);
    free(s);
}

static void test_write_rejects_bad_input(void **state)
{
    fixture_t *fx = *state;
    float x[4] = {1, 2, 3, 4};
    nn_st_entry_t good = {"x", 1, {4}, x};
    ei_err_t err = {0};
    assert_int_equal(nn_st_write(fx->path, &good, 1, NULL, 0, &err), 0);

    nn_st_entry_t dup[2] = {good, good};
    assert_int_equal(nn_st_write(fx->path, dup, 2, NULL, 0, &err), EI_E_INVAL);
    assert_non_null(strstr(err.msg, "repeated"));
    nn_st_entry_t reserved = {"__metadata__", 1, {4}, x};
    assert_int_equal(nn_st_write(fx->path, &reserved, 1, NULL, 0, &err), EI_E_INVAL);
    nn_st_entry_t neg = {"n", 2, {-1, 4}, x};
    assert_int_equal(nn_st_write(fx->path, &neg, 1, NULL, 0, &err), EI_E_INVAL);
    assert_non_null(strstr(err.msg, "tensor 'n'"));
    nn_st_entry_t nodims = {"z", 0, {0}, x};
    assert_int_equal(nn_st_write(fx->path, &nodims, 1, NULL, 0, &err), EI_E_INVAL);
    nn_st_entry_t nodata = {"d", 1, {4}, NULL};
    assert_int_equal(nn_st_write(fx->path, &nodata, 1, NULL, 0, &err), EI_E_INVAL);
    nn_st_entry_t badname = {"bad\xff", 1, {4}, x};
    assert_int_equal(nn_st_write(fx->path, &badname, 1, NULL, 0, &err), EI_E_INVAL);
    assert_non_null(strstr(err.msg, "UTF-8"));
    nn_st_meta_t m[2] = {{"k", "v"}, {"k", "w"}};
    assert_int_equal(nn_st_write(fx->path, &good, 1, m, 2, &err), EI_E_INVAL);
    nn_st_meta_t badv = {"k", "\xc3"};
    assert_int_equal(nn_st_write(fx->path, &good, 1, &badv, 1, &err), EI_E_INVAL);

    char nodir[200];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/m.st", fx->dir);
    assert_int_equal(nn_st_write(nodir, &good, 1, NULL, 0, &err), EI_E_IO);
    assert_non_null(strstr(err.msg, nodir));

    /* None of the failures touched the good file or left a temp file. */
    assert_int_equal(count_files(fx->dir), 1);
    nn_st_file_t *f = nn_st_open(fx->path, &err);
    assert_non_null(f);
    assert_int_equal(nn_st_count(f), 1);
    assert_memory_equal(nn_st_entry(f, 0)->data, x, sizeof x);
    nn_st_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_bit_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_written_layout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hand_made_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_lengths_and_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fuzz_byte_flips, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_checks_name_and_shape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_rejects_bad_input, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
