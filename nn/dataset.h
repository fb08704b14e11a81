/* Fashion-MNIST (or any IDX image set) loading: gzip-compressed IDX files as Debian's
 * dataset-fashion-mnist package installs them in /usr/share/datasets/fashion-mnist. */
#ifndef NN_DATASET_H
#define NN_DATASET_H

#include <stdint.h>

#include "../common/ei.h"
#include "tensor.h"

#define NN_DATASET_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

typedef struct nn_dataset {
    int count;       /* number of images */
    int h, w;        /* image side (28 x 28) */
    int classes;     /* 10 */
    float *images;   /* count * h * w, scaled to [0, 1] */
    uint8_t *labels; /* count */
    char source[512]; /* the image file it came from, for messages */
} nn_dataset_t;

/* Loads split "train" (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz) or "test"
 * (t10k-...) from dir (NULL: NN_DATASET_DEFAULT_DIR or $EINET_DATA_DIR). Checks the IDX
 * magic numbers, dimensions, that image and label counts agree, and labels < 10. A
 * missing file fails with EI_E_NOTFOUND and a message that names the file and says to
 * install the Debian package dataset-fashion-mnist. Caller owns the result.
 * Bad files fail with EI_E_FORMAT: truncated, corrupt gzip (the CRC is checked: files are
 * read to the end), or data beyond what the header announces. A file under the .gz name
 * that is not compressed is read as plain IDX (zlib's transparent mode). */
nn_dataset_t *nn_dataset_load(const char *dir, const char *split, ei_err_t *err);
void nn_dataset_destroy(nn_dataset_t **self_p);

/* Reads only the header of split's image file into *out (count, h, w, classes, source;
 * images and labels NULL, nothing to free): milliseconds where nn_dataset_load reads every
 * image, so a command can check an architecture against the data before the heavy work.
 * Errors as nn_dataset_load's for the image file. */
int nn_dataset_probe(const char *dir, const char *split, nn_dataset_t *out,
                     ei_err_t *err) EI_CHECK;

/* The shape of one sample, (1, h, w): IDX images have one channel. */
nn_shape_t nn_dataset_shape(const nn_dataset_t *self);

/* Splits indices 0..count-1 with a fixed seed into a training part and a validation part
 * of n_val samples (a seeded shuffle, so the split is the same on every machine).
 * train_idx and val_idx are caller-provided arrays of count - n_val and n_val ints. */
void nn_dataset_split(int count, int n_val, uint64_t seed, int *train_idx, int *val_idx);

#endif
