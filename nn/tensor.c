/* Tensor allocation and views. */
#include "tensor.h"

#include <math.h>
#include <stdlib.h>

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

long nn_tensor_find_nonfinite(const float *data, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(data[i]))
            return (long)i;
    return -1;
}
