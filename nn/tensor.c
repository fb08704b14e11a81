/* Tensor allocation and views. */
#include "tensor.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

nn_tensor_t *nn_tensor_new(int n, int c, int h, int w)
{
    if (n < 1 || c < 1 || h < 1 || w < 1)
        return NULL;
    nn_tensor_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    *t = nn_tensor_view(NULL, n, c, h, w);
    t->data = calloc(nn_tensor_numel(t), sizeof(float));
    if (!t->data) {
        free(t);
        return NULL;
    }
    t->owns = 1;
    return t;
}

void nn_tensor_destroy(nn_tensor_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nn_tensor_t *t = *self_p;
    if (t->owns)
        free(t->data);
    free(t);
    *self_p = NULL;
}

nn_tensor_t nn_tensor_view(float *data, int n, int c, int h, int w)
{
    nn_tensor_t t = {n, c, h, w, data, 0};
    return t;
}

/* Floats tested together before looking for where the first bad one is. */
#define FINITE_BLOCK 256

long nn_tensor_find_nonfinite(const float *data, size_t n)
{
    /* Every map a node receives passes here, so the common case (all finite) must run at
     * memory speed: a block's exponent tests are OR-ed without a branch, which the
     * compiler vectorises, and only a block with a hit is searched element by element.
     * A float is Inf or NaN exactly when its exponent bits are all ones. */
    for (size_t b = 0; b < n; b += FINITE_BLOCK) {
        size_t e = n - b < FINITE_BLOCK ? n : b + FINITE_BLOCK;
        uint32_t bad = 0;
        for (size_t i = b; i < e; i++) {
            uint32_t bits;
            memcpy(&bits, &data[i], sizeof bits);
            bad |= (bits & 0x7f800000u) == 0x7f800000u;
        }
        if (!bad)
            continue;
        for (size_t i = b; i < e; i++)
            if (!isfinite(data[i]))
                return (long)i;
    }
    return -1;
}
