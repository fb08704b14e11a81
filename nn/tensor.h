/* Float32 NCHW tensors. A tensor either owns its data (made by nn_tensor_new, freed by
 * nn_tensor_destroy) or is a view on memory someone else owns (nn_tensor_view). */
#ifndef NN_TENSOR_H
#define NN_TENSOR_H

#include <stddef.h>

/* Shape of one sample: channels, height, width. A flat vector of F features is (F, 1, 1). */
typedef struct nn_shape {
    int c, h, w;
} nn_shape_t;

typedef struct nn_tensor {
    int n, c, h, w;
    float *data;
    int owns; /* 1: data is freed with the tensor */
} nn_tensor_t;

/* A new zeroed tensor; caller owns it. NULL when out of memory or a dimension is < 1. */
nn_tensor_t *nn_tensor_new(int n, int c, int h, int w);

/* Frees an owning tensor and its data; accepts NULL; clears *self_p. */
void nn_tensor_destroy(nn_tensor_t **self_p);

/* A non-owning view on data (no allocation). */
nn_tensor_t nn_tensor_view(float *data, int n, int c, int h, int w);

static inline size_t nn_shape_numel(nn_shape_t s)
{
    return (size_t)s.c * (size_t)s.h * (size_t)s.w;
}

static inline size_t nn_tensor_numel(const nn_tensor_t *t)
{
    return (size_t)t->n * (size_t)t->c * (size_t)t->h * (size_t)t->w;
}

static inline size_t nn_tensor_sample_numel(const nn_tensor_t *t)
{
    return (size_t)t->c * (size_t)t->h * (size_t)t->w;
}

static inline nn_shape_t nn_tensor_shape(const nn_tensor_t *t)
{
    nn_shape_t s = {t->c, t->h, t->w};
    return s;
}

/* Index of the first non-finite value, or -1 when all are finite. */
long nn_tensor_find_nonfinite(const float *data, size_t n);

#endif
