/* Fashion-MNIST loading: gzip-compressed IDX image and label files, checked for every way
 * a download or an install can be wrong before a single image is used. */
#include "dataset.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define DS_MAGIC_IMAGES 0x00000803u /* unsigned bytes, 3 dims: count, rows, cols */
#define DS_MAGIC_LABELS 0x00000801u /* unsigned bytes, 1 dim: count */
#define DS_MAX_SIDE 4096
#define DS_CLASSES 10
#define DS_CHUNK (1u << 16)
#define DS_HINT                                                                                    \
    "install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist) "    \
    "or set EINET_DATA_DIR to a directory holding the IDX files"

/* Opens path for decompressed reading; a missing file says which package provides it. */
static int ds_open(const char *path, gzFile *gz_p, ei_err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return ei_err_set(err, EI_E_NOTFOUND, "%s: not found; %s", path, DS_HINT);
        return ei_err_set(err, EI_E_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    *gz_p = gzdopen(fd, "rb");
    if (!*gz_p) {
        close(fd);
        return ei_err_set(err, EI_E_NOMEM, "%s: out of memory opening the gzip stream", path);
    }
    return 0;
}

/* Reads up to n bytes; *got says how many arrived before the end of the stream. A corrupt
 * stream is an error, a stream that merely ends early is left to the caller to judge. */
static int ds_read(gzFile gz, const char *path, void *buf, size_t n, size_t *got, ei_err_t *err)
{
    *got = 0;
    while (*got < n) {
        size_t want = n - *got > DS_CHUNK ? DS_CHUNK : n - *got;
        int r = gzread(gz, (char *)buf + *got, (unsigned)want);
        if (r > 0) {
            *got += (size_t)r;
            continue;
        }
        int zerr = Z_OK;
        const char *msg = gzerror(gz, &zerr);
        if (strncmp(msg, "<fd:", 4) == 0 && strstr(msg, ": ")) /* gzdopen's name for us */
            msg = strstr(msg, ": ") + 2;
        if (r == 0 || zerr == Z_BUF_ERROR) /* Z_BUF_ERROR: the gzip stream was cut short */
            return 0;
        if (zerr == Z_ERRNO)
            return ei_err_set(err, EI_E_IO, "%s: read failed: %s", path, strerror(errno));
        return ei_err_set(err, EI_E_FORMAT, "%s: corrupt gzip data: %s", path, msg);
    }
    return 0;
}

/* Reads the IDX header: the magic number and ndims big-endian 32-bit dims. */
static int ds_header(gzFile gz, const char *path, uint32_t magic, uint32_t *dims, int ndims,
                     ei_err_t *err)
{
    unsigned char h[16];
    size_t n = 4 + 4 * (size_t)ndims, got;
    int rc = ds_read(gz, path, h, n, &got, err);
    if (rc)
        return rc;
    if (got < n)
        return ei_err_set(err, EI_E_FORMAT,
                          "%s: truncated: %zu bytes, shorter than the %zu-byte "
                          "IDX header",
                          path, got, n);
    uint32_t v[4];
    for (int i = 0; i <= ndims; i++)
        v[i] = (uint32_t)h[4 * i] << 24 | (uint32_t)h[4 * i + 1] << 16 |
               (uint32_t)h[4 * i + 2] << 8 | h[4 * i + 3];
    if (v[0] != magic)
        return ei_err_set(err, EI_E_FORMAT,
                          "%s: bad magic number 0x%08x, expected 0x%08x (IDX, unsigned bytes, "
                          "%d dims)",
                          path, v[0], magic, ndims);
    memcpy(dims, v + 1, (size_t)ndims * sizeof *dims);
    return 0;
}

/* Reads the n-byte body that follows the header, as bytes or as floats scaled to [0, 1].
 * The buffer grows with the data that actually arrives, so a header that promises more
 * than the file holds cannot make us allocate it. Caller owns *out. */
static int ds_body(gzFile gz, const char *path, const char *what, size_t n, int as_float,
                   void **out, ei_err_t *err)
{
    size_t esize = as_float ? sizeof(float) : 1, cap = 0, have = 0, got = 0;
    unsigned char *chunk = malloc(DS_CHUNK), *buf = NULL;
    int rc = chunk ? 0 : ei_err_set(err, EI_E_NOMEM, "%s: out of memory", path);
    while (!rc && have < n) {
        size_t want = n - have > DS_CHUNK ? DS_CHUNK : n - have;
        if ((rc = ds_read(gz, path, chunk, want, &got, err)) != 0 || got == 0)
            break;
        if (have + got > cap) {
            size_t ncap = cap * 2 > have + got ? cap * 2 : have + got;
            ncap = ncap < n ? ncap : n;
            unsigned char *nb = realloc(buf, ncap * esize);
            if (!nb) {
                rc = ei_err_set(err, EI_E_NOMEM, "%s: out of memory for %zu bytes", path, n);
                break;
            }
            buf = nb, cap = ncap;
        }
        if (as_float)
            for (size_t i = 0; i < got; i++)
                ((float *)buf)[have + i] = (float)chunk[i] / 255.0f;
        else
            memcpy(buf + have, chunk, got);
        have += got;
    }
    if (!rc && have < n)
        rc = ei_err_set(err, EI_E_FORMAT,
                        "%s: truncated: the header promises %zu bytes of %s, "
                        "the file has %zu",
                        path, n, what, have);
    if (!rc && (rc = ds_read(gz, path, chunk, 1, &got, err)) == 0 && got)
        rc = ei_err_set(err, EI_E_FORMAT,
                        "%s: data continues after the %zu bytes of %s the "
                        "header promises",
                        path, n, what);
    free(chunk);
    EI_ASSERT(rc || buf); /* n >= 1: the callers reject empty sets */
    if (rc)
        free(buf);
    else
        *out = buf;
    return rc;
}

/* The image file's header: magic and count x rows x cols within bounds; *n is the pixels. */
static int ds_image_dims(gzFile gz, const char *path, uint32_t *d, size_t *n, ei_err_t *err)
{
    int rc = ds_header(gz, path, DS_MAGIC_IMAGES, d, 3, err);
    if (rc)
        return rc;
    if (d[0] < 1 || d[0] > INT_MAX || d[1] < 1 || d[1] > DS_MAX_SIDE || d[2] < 1 ||
        d[2] > DS_MAX_SIDE || __builtin_mul_overflow((size_t)d[0], (size_t)d[1] * d[2], n) ||
        *n > SIZE_MAX / sizeof(float))
        return ei_err_set(err, EI_E_FORMAT,
                          "%s: implausible dims %u x %u x %u (count 1..%d, "
                          "sides 1..%d)",
                          path, d[0], d[1], d[2], INT_MAX, DS_MAX_SIDE);
    return 0;
}

static int ds_load_images(nn_dataset_t *ds, const char *path, ei_err_t *err)
{
    gzFile gz;
    int rc = ds_open(path, &gz, err);
    if (rc)
        return rc;
    uint32_t d[3] = {0};
    size_t n = 0;
    if ((rc = ds_image_dims(gz, path, d, &n, err)) == 0) {
        ds->count = (int)d[0], ds->h = (int)d[1], ds->w = (int)d[2];
        rc = ds_body(gz, path, "pixels", n, 1, (void **)&ds->images, err);
    }
    gzclose(gz);
    return rc;
}

static int ds_load_labels(nn_dataset_t *ds, const char *path, const char *images_path,
                          ei_err_t *err)
{
    gzFile gz;
    int rc = ds_open(path, &gz, err);
    if (rc)
        return rc;
    uint32_t n = 0;
    if ((rc = ds_header(gz, path, DS_MAGIC_LABELS, &n, 1, err)) != 0)
        goto out;
    if (n != (uint32_t)ds->count) {
        rc = ei_err_set(err, EI_E_FORMAT, "%s: %u labels, but %s has %d images", path, n,
                        images_path, ds->count);
        goto out;
    }
    if ((rc = ds_body(gz, path, "labels", n, 0, (void **)&ds->labels, err)) != 0)
        goto out;
    for (uint32_t i = 0; i < n; i++)
        if (ds->labels[i] >= DS_CLASSES) {
            rc = ei_err_set(err, EI_E_FORMAT, "%s: label %u at index %u is not a class 0..%d", path,
                            ds->labels[i], i, DS_CLASSES - 1);
            break;
        }
out:
    gzclose(gz);
    return rc;
}

/* The image and label file names of split in dir (NULL: $EINET_DATA_DIR or the default). */
static int ds_paths(const char *dir, const char *split, char *ipath, char *lpath, ei_err_t *err)
{
    const char *prefix = NULL;
    if (split && strcmp(split, "train") == 0)
        prefix = "train";
    else if (split && strcmp(split, "test") == 0)
        prefix = "t10k";
    if (!prefix)
        return ei_err_set(err, EI_E_INVAL, "unknown split '%s' (expected 'train' or 'test')",
                          split ? split : "(null)");
    if (!dir) {
        const char *env = getenv("EINET_DATA_DIR");
        dir = env && *env ? env : NN_DATASET_DEFAULT_DIR;
    }
    int ni = snprintf(ipath, PATH_MAX, "%s/%s-images-idx3-ubyte.gz", dir, prefix);
    int nl = snprintf(lpath, PATH_MAX, "%s/%s-labels-idx1-ubyte.gz", dir, prefix);
    if (ni < 0 || nl < 0 || ni >= PATH_MAX || nl >= PATH_MAX)
        return ei_err_set(err, EI_E_INVAL, "data directory path is too long: %s", dir);
    return 0;
}

nn_dataset_t *nn_dataset_load(const char *dir, const char *split, ei_err_t *err)
{
    char ipath[PATH_MAX], lpath[PATH_MAX];
    if (ds_paths(dir, split, ipath, lpath, err))
        return NULL;
    nn_dataset_t *ds = calloc(1, sizeof *ds);
    if (!ds) {
        ei_err_set(err, EI_E_NOMEM, "out of memory");
        return NULL;
    }
    ds->classes = DS_CLASSES;
    snprintf(ds->source, sizeof ds->source, "%.511s", ipath);
    if (ds_load_images(ds, ipath, err) != 0 || ds_load_labels(ds, lpath, ipath, err) != 0)
        nn_dataset_destroy(&ds);
    return ds;
}

int nn_dataset_probe(const char *dir, const char *split, nn_dataset_t *out, ei_err_t *err)
{
    char ipath[PATH_MAX], lpath[PATH_MAX];
    *out = (nn_dataset_t){.classes = DS_CLASSES};
    int rc = ds_paths(dir, split, ipath, lpath, err);
    gzFile gz;
    if (rc || (rc = ds_open(ipath, &gz, err)) != 0)
        return rc;
    uint32_t d[3] = {0};
    size_t n = 0;
    rc = ds_image_dims(gz, ipath, d, &n, err);
    gzclose(gz);
    if (rc)
        return rc;
    out->count = (int)d[0], out->h = (int)d[1], out->w = (int)d[2];
    snprintf(out->source, sizeof out->source, "%.511s", ipath);
    return 0;
}

nn_shape_t nn_dataset_shape(const nn_dataset_t *self)
{
    return (nn_shape_t){1, self->h, self->w};
}

void nn_dataset_destroy(nn_dataset_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->images);
    free((*self_p)->labels);
    free(*self_p);
    *self_p = NULL;
}

void nn_dataset_split(int count, int n_val, uint64_t seed, int *train_idx, int *val_idx)
{
    EI_ASSERT(count >= 0 && n_val >= 0 && n_val <= count);
    /* count comes from a loaded data set, whose images already take far more memory. */
    int *perm = malloc((size_t)(count ? count : 1) * sizeof *perm);
    EI_ASSERT(perm);
    for (int i = 0; i < count; i++)
        perm[i] = i;
    ei_rng_t rng;
    ei_rng_seed(&rng, seed);
    ei_rng_shuffle(&rng, perm, count);
    int n_train = count - n_val;
    if (n_train)
        memcpy(train_idx, perm, (size_t)n_train * sizeof *perm);
    if (n_val)
        memcpy(val_idx, perm + n_train, (size_t)n_val * sizeof *perm);
    free(perm);
}
