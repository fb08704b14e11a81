/* bench_search: time per call of the exit-plan searches on random instances shaped like a
 * real multi-exit model's profile, against the time of one block's inference (the budget a
 * replanning step must stay far below), and hybrid's distance to the exact optimum. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/ei.h"
#include "planner/planner.h"

#define MAX_INSTANCES 64

static const char usage_text[] =
    "usage: bench_search [--block-ms T] [--instances K] [--seed S] [--min-time SEC]\n"
    "Times exact, hybrid (m=4) and greedy under uniform and normal(0.5, 0.25) interruption\n"
    "for n = 8, 16, 24, 40, on K random instances each (default 20), and prints each time\n"
    "per call and its ratio to one block's inference time T (default 0.1 ms), and the mean\n"
    "and worst gap of hybrid and greedy to the optimum.\n";

typedef struct inst {
    planner_profile_t pr;
    double C[PLANNER_MAX_EXITS];
} inst_t;

static double unif(ei_rng_t *r, double lo, double hi)
{
    return lo + (hi - lo) * ei_rng_uniform(r);
}

/* Conv parts 0.05-0.4 ms, branches 10-80% of their conv part, confidences rising with depth
 * with noise: the shape of the profiled 8-exit model and of MSDNet's. */
static void gen(ei_rng_t *r, int n, inst_t *in)
{
    planner_profile_init(&in->pr, n);
    for (int k = 0; k < n; k++) {
        in->pr.conv_ms[k] = unif(r, 0.05, 0.4);
        in->pr.branch_ms[k] = in->pr.conv_ms[k] * unif(r, 0.1, 0.8);
        double c = 0.3 + 0.6 * (k + 1) / n + 0.12 * ei_rng_normal(r);
        in->C[k] = c < 0 ? 0 : c > 1 ? 1 : c;
    }
}

/* Thread CPU time in seconds: on a shared machine it leaves out the time other processes
 * hold the core, which wall time would charge to the search. */
static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef enum { S_EXACT, S_HYBRID, S_GREEDY } which_t;

static int run(planner_t *p, which_t w, const double *C, planner_result_t *res)
{
    switch (w) {
    case S_EXACT:
        return planner_search_exact(p, C, NULL, res);
    case S_HYBRID:
        return planner_search_hybrid(p, C, NULL, 4, 0, res, NULL);
    case S_GREEDY:
        return planner_search_greedy(p, C, NULL, res);
    }
    return -1;
}

/* Mean seconds per call over the instances: each instance is repeated until min_time/K
 * has passed, so fast calls are not lost in the clock's resolution. */
static double time_search(planner_t **ps, const inst_t *ins, int K, which_t w, double min_time,
                          double *values, const char **algo)
{
    double total = 0;
    for (int i = 0; i < K; i++) {
        planner_result_t res;
        long reps = 0;
        double t0 = cpu_now(), el;
        do {
            if (run(ps[i], w, ins[i].C, &res))
                return NAN;
            reps++;
            el = cpu_now() - t0;
        } while (el < min_time / K);
        total += el / (double)reps;
        values[i] = res.expectation;
        *algo = res.algo;
    }
    return total / K;
}

static void print_row(int n, const char *dist, const char *search, const char *algo, double s,
                      double block_ms)
{
    printf("%4d  %-8s %-8s %-5s %12.3f %14.4f\n", n, dist, search, algo, s * 1e6,
           s * 1e3 / block_ms);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"block-ms", required_argument, 0, 'b'}, {"instances", required_argument, 0, 'k'},
        {"seed", required_argument, 0, 's'},     {"min-time", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    double block_ms = 0.1, min_time = 0.2;
    int K = 20, c;
    uint64_t seed = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        char *end = NULL;
        switch (c) {
        case 'b':
            block_ms = strtod(optarg, &end);
            if (*end || !(block_ms > 0)) {
                fprintf(stderr, "bench_search: --block-ms: expected a time > 0 in ms\n");
                return 2;
            }
            break;
        case 'k':
            K = (int)strtol(optarg, &end, 10);
            if (*end || K < 1 || K > MAX_INSTANCES) {
                fprintf(stderr, "bench_search: --instances: expected 1..%d\n", MAX_INSTANCES);
                return 2;
            }
            break;
        case 's':
            seed = strtoull(optarg, &end, 10);
            break;
        case 't':
            min_time = strtod(optarg, &end);
            if (*end || !(min_time > 0)) {
                fprintf(stderr, "bench_search: --min-time: expected seconds > 0\n");
                return 2;
            }
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            fputs(usage_text, stderr);
            return 2;
        }
    }
    static const int sizes[] = {8, 16, 24, 40};
    static const planner_dist_t dists[2] = {{PLANNER_DIST_UNIFORM, 0, 0},
                                            {PLANNER_DIST_NORMAL, 0.5, 0.25}};
    static const char *const dist_names[2] = {"uniform", "normal"};
    static const char *const search_names[3] = {"exact", "hybrid4", "greedy"};
    printf("search time per call (thread CPU time), mean over %d random instances per n; "
           "block time %.4g ms\n",
           K, block_ms);
    printf("%4s  %-8s %-8s %-5s %12s %14s\n", "n", "dist", "search", "algo", "us/call",
           "x block time");
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int n = sizes[si];
        for (int d = 0; d < 2; d++) {
            ei_rng_t r;
            ei_rng_seed(&r, seed * 1000 + (uint64_t)n);
            inst_t ins[MAX_INSTANCES];
            planner_t *ps[MAX_INSTANCES];
            ei_err_t err = {0};
            for (int i = 0; i < K; i++) {
                gen(&r, n, &ins[i]);
                ps[i] = planner_new(&ins[i].pr, &dists[d], &err);
                if (!ps[i]) {
                    fprintf(stderr, "bench_search: %s\n", err.msg);
                    return 1;
                }
            }
            double vals[3][MAX_INSTANCES];
            for (int w = 0; w < 3; w++) {
                const char *algo = "";
                double s = time_search(ps, ins, K, (which_t)w, min_time, vals[w], &algo);
                print_row(n, dist_names[d], search_names[w], algo, s, block_ms);
            }
            for (int w = 1; w < 3; w++) {
                double sum = 0, worst = 0;
                for (int i = 0; i < K; i++) {
                    double gap = (vals[0][i] - vals[w][i]) / vals[0][i];
                    sum += gap;
                    worst = fmax(worst, gap);
                }
                printf("%4d  %-8s %-8s gap to exact: mean %.4f%%, worst %.4f%%\n", n, dist_names[d],
                       search_names[w], 100 * sum / K, 100 * worst);
            }
            for (int i = 0; i < K; i++)
                planner_destroy(&ps[i]);
        }
    }
    return 0;
}
