/* The live side of the elastic evaluation (see elastic.h): interruption times for a run
 * against a cluster, and the tally of its answers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "elastic.h"

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s)
{
    return (double)(splitmix(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* F^-1(u) on [0, H] by bisection on the planner's cdf (monotone). */
static double inverse_cdf(const elastic_t *el, double u)
{
    planner_t *pl = elastic_planner((elastic_t *)el);
    double lo = 0, hi = elastic_horizon(el);
    for (int i = 0; i < 60; i++) {
        double mid = 0.5 * (lo + hi);
        if (planner_cdf(pl, mid) < u)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

void elastic_live_deadlines(const elastic_t *el, int count, uint64_t seed, double *out_ms)
{
    uint64_t s = seed;
    int *order = malloc((size_t)count * sizeof *order);
    for (int i = 0; i < count; i++)
        order[i] = i;
    for (int i = count - 1; i > 0 && order; i--) { /* Fisher-Yates */
        int j = (int)(splitmix(&s) % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int i = 0; i < count; i++) {
        double u = ((order ? order[i] : i) + uniform01(&s)) / count;
        out_ms[i] = inverse_cdf(el, u);
    }
    free(order);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile of sorted v[0..n) (nearest rank). */
static double quantile(const double *v, int n, double q)
{
    int i = (int)ceil(q * n) - 1;
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static void tally_curve(const elastic_t *el, const elastic_live_answer_t *a, int count,
                        elastic_curve_t *curve)
{
    int P = curve->points;
    double H = elastic_horizon(el);
    int *seen = calloc((size_t)P, sizeof *seen);
    for (int g = 0; g < P; g++)
        curve->acc[g] = 0;
    for (int i = 0; i < count && seen; i++) {
        long g = lround(a[i].deadline_ms / H * (P - 1));
        g = g < 0 ? 0 : g >= P ? P - 1 : g;
        curve->acc[g] += a[i].correct;
        seen[g]++;
    }
    for (int g = 0; g < P; g++)
        curve->acc[g] = seen && seen[g] ? curve->acc[g] / seen[g] : NAN;
    free(seen);
}

int elastic_live_tally(const elastic_t *el, const elastic_live_answer_t *a, int count,
                       elastic_live_result_t *res, elastic_curve_t *curve, ei_err_t *err)
{
    if (count < 1)
        return ei_err_set(err, EI_E_RANGE, "a live run of %d answers", count);
    double *late = malloc((size_t)count * sizeof *late);
    if (!late)
        return ei_err_set(err, EI_E_NOMEM, "out of memory");
    memset(res, 0, sizeof *res);
    int nl = 0;
    for (int i = 0; i < count; i++) {
        res->accuracy += a[i].correct && a[i].exit > 0;
        res->answers++;
        if (a[i].status == 2) {
            res->deadline++;
            double d = (a[i].latency_ms - a[i].deadline_ms) * 1e3;
            res->early += d < -0.5; /* latency is whole microseconds */
            late[nl++] = d;
        } else if (a[i].status == 1 || a[i].status == 8) { /* complete, early (a stop) */
            res->complete++;
        } else {
            res->failed++;
        }
    }
    res->accuracy /= count;
    if (nl) {
        qsort(late, (size_t)nl, sizeof *late, cmp_double);
        res->late_p50_us = quantile(late, nl, 0.5);
        res->late_p99_us = quantile(late, nl, 0.99);
        res->late_max_us = late[nl - 1];
    }
    free(late);
    if (curve)
        tally_curve(el, a, count, curve);
    return 0;
}
