/* Softmax and the softmax cross-entropy loss, computed through the log-sum-exp with the
 * row maximum taken out first so that no exponential overflows. */
#include "layer_internal.h"

#include <math.h>

/* p = softmax(z) for one row of k; returns log(sum exp z), the log-sum-exp. p may be z. */
static double softmax_row(const float *z, int k, float *p)
{
    float mx = z[0];
    for (int j = 1; j < k; j++)
        mx = z[j] > mx ? z[j] : mx;
    double sum = 0;
    for (int j = 0; j < k; j++)
        sum += exp((double)z[j] - mx);
    double lse = mx + log(sum);
    for (int j = 0; j < k; j++)
        p[j] = (float)exp((double)z[j] - lse);
    return lse;
}

void nn_softmax(const float *z, int n, int k, float *p)
{
    for (int i = 0; i < n; i++)
        softmax_row(z + (size_t)i * k, k, p + (size_t)i * k);
}

float nn_softmax_xent(const float *z, const int *labels, int n, int k, float *p, float *dz,
                      float scale)
{
    double loss = 0;
    for (int i = 0; i < n; i++) {
        const float *zi = z + (size_t)i * k;
        float *pi = p + (size_t)i * k;
        int y = labels[i];
        EI_ASSERT(y >= 0 && y < k);
        double zy = zi[y]; /* read before p, which may be z, is written */
        loss += softmax_row(zi, k, pi) - zy;
        if (!dz)
            continue;
        float *dzi = dz + (size_t)i * k, g = scale / (float)n;
        for (int j = 0; j < k; j++)
            dzi[j] = g * (pi[j] - (j == y));
    }
    return n > 0 ? (float)(loss / n) : 0.0f;
}
