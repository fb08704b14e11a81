/* The stop rules (see stop.h). */
#include <math.h>

#include "stop.h"

double stop_confidence(const float *probs, int K)
{
    double best = 0;
    for (int c = 0; c < K; c++)
        best = probs[c] > best ? probs[c] : best;
    return best;
}

double stop_entropy(const float *probs, int K)
{
    if (K < 2)
        return 0;
    double h = 0;
    for (int c = 0; c < K; c++)
        if (probs[c] > 0)
            h -= probs[c] * log(probs[c]);
    h /= log(K);
    return h < 0 ? 0 : h > 1 ? 1 : h;
}

int stop_fires(int kind, double threshold, const float *probs, int K, double right)
{
    switch (kind) {
    case STOP_KIND_CONFIDENCE:
        return stop_confidence(probs, K) >= threshold;
    case STOP_KIND_ENTROPY:
        return stop_entropy(probs, K) <= threshold;
    case STOP_KIND_EINET:
        return right >= threshold;
    default:
        return 0;
    }
}

int stop_einet_branch(double A, double right)
{
    return right >= A - STOP_EINET_MARGIN;
}
