/* Speed of the engine on a model, every figure the median of --reps timed rounds taken in
 * this one run: OpenBLAS sgemm peak (1024^3 on every thread at once), optionally each conv layer's GFLOP/s at
 * batch 1 and 64, the full forward (every exit, batch norms folded) at batch 1 and 64 with
 * the batch-64 GFLOP/s as a fraction of the sgemm peak, and a training step at batch 128
 * (forward and backward of every exit, SGD with Nesterov momentum, as einet train runs).
 *   bench_nn [--model FILE] [--threads N] [--reps R] [--layers] [--lowerings] [--cpu-time]
 *            [--json] [--train-only]
 *   bench_nn --predict N [--model FILE] [--data DIR] [--batch B]
 * --threads N is the engine's threads (nn_set_threads; OpenBLAS then runs one in each).
 * --lowerings times the same model without Winograd's lowering in the same rounds, and
 * with --layers each conv's im2col lowering and OpenBLAS alone on its batch-64 product.
 * --cpu-time (one thread) times everything, the peak included, on the process's CPU clock:
 * on a shared machine the fractions of the peak then do not depend on the other load.
 * --train-only times the training step alone (for profiling it).
 * --predict writes, for the first N test images run in batches of B (default 64), one line
 * per image: the predicted class of every exit then its probabilities, for
 * bench/torch_compare.py to check sample by sample. */
#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/ei.h"
#include "nn/dataset.h"
#include "nn/layer.h"
#include "nn/model.h"
#include "nn/train.h"

/* The clock the figures are timed on: wall time, or with --cpu-time (one thread only)
 * the process's CPU time, which the machine's other load does not inflate. */
static double wall_clock(void)
{
    return ei_now();
}

static double cpu_clock(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double (*bench_clock)(void) = wall_clock;

/* Seconds per call of stmt: one warm-up call, then calls until min_s passed. */
#define TIME_PER_CALL(min_s, stmt)                                   \
    ({                                                               \
        stmt;                                                        \
        long reps_ = 0;                                              \
        double t0_ = bench_clock(), el_;                             \
        do {                                                         \
            stmt;                                                    \
            reps_++;                                                 \
        } while ((el_ = bench_clock() - t0_) < (min_s));             \
        el_ / reps_;                                                 \
    })

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct gemm {
    int m, n, k;
    float *a, *b, *c;
} gemm_t;

static gemm_t gemm_new(int m, int n, int k)
{
    gemm_t g = {m, n, k, calloc((size_t)m * k, 4), calloc((size_t)k * n, 4), calloc((size_t)m * n, 4)};
    EI_ASSERT(g.a && g.b && g.c);
    for (size_t i = 0; i < (size_t)m * k; i++)
        g.a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)k * n; i++)
        g.b[i] = (float)(i % 5) * 0.1f;
    return g;
}

static void gemm_free(gemm_t *g)
{
    free(g->a);
    free(g->b);
    free(g->c);
}

/* GFLOP/s of one round of sgemm calls lasting about min_s. */
static double gemm_round(gemm_t *g, double min_s)
{
    double s = TIME_PER_CALL(min_s, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->m,
                                                 g->n, g->k, 1.0f, g->a, g->k, g->b, g->n, 0.0f,
                                                 g->c, g->n));
    return 2.0 * g->m * g->n * g->k / s / 1e9;
}

typedef struct peak_arg {
    gemm_t g;
    double gflops;
} peak_arg_t;

static void *peak_thread(void *p)
{
    peak_arg_t *a = p;
    a->gflops = gemm_round(&a->g, 0.2);
    return NULL;
}

/* The sgemm peak of `threads` threads: each runs its own 1024^3 product (OpenBLAS on one
 * thread, as inside the engine) at the same time; their GFLOP/s added up. */
static double peak_round(peak_arg_t *args, int threads)
{
    pthread_t t[64];
    for (int i = 1; i < threads; i++)
        EI_ASSERT(pthread_create(&t[i], NULL, peak_thread, &args[i]) == 0);
    peak_thread(&args[0]);
    double sum = args[0].gflops;
    for (int i = 1; i < threads; i++) {
        pthread_join(t[i], NULL);
        sum += args[i].gflops;
    }
    return sum;
}

/* GFLOP/s of layer l's forward at batch n (median of 5 rounds). */
static double layer_gflops(nn_layer_t *l, int n)
{
    nn_shape_t in = nn_layer_in_shape(l), out = nn_layer_out_shape(l);
    nn_tensor_t *x = nn_tensor_new(n, in.c, in.h, in.w);
    nn_tensor_t *y = nn_tensor_new(n, out.c, out.h, out.w);
    float *ws = calloc(nn_layer_workspace(l, n) + 1, sizeof(float));
    EI_ASSERT(x && y && ws);
    for (size_t i = 0; i < nn_tensor_numel(x); i++)
        x->data[i] = (float)(i % 11) / 11.0f;
    double r[5];
    for (int rep = 0; rep < 5; rep++)
        r[rep] = TIME_PER_CALL(0.05, nn_layer_forward(l, x, y, ws, 0));
    nn_tensor_destroy(&x);
    nn_tensor_destroy(&y);
    free(ws);
    return nn_layer_flops(l) * n / median(r, 5) / 1e9;
}

/* Each conv layer at batch 1 and 64; with mi (the model without Winograd's lowering),
 * its layer at batch 64 too, and the direct product the im2col lowering runs for the
 * whole batch-64 layer at once ([out, in*k*k] x [in*k*k, 64*oh*ow], groups 1 only):
 * OpenBLAS's own speed on that shape, the ceiling of any lowering to it. */
static void bench_layers(nn_model_t *m, nn_model_t *mi, double peak)
{
    double fl_all = 0, t_gemm = 0, t_im2col = 0, t_layer = 0, t_group = 0;
    printf("\nconv layers (forward, BN folded; GFLOP/s, %% of the sgemm peak):\n");
    printf("block layer  in (c,h,w)    out (c,h,w)   MFLOP/img   b1 (%%)        b64 (%%)");
    if (mi)
        printf("       b64 im2col (%%)  sgemm [M,N,K] of b64 (%%)       "
               "sgemm of a group [M,N] (%%)");
    printf("\n");
    for (int k = 0; k < nn_model_blocks(m); k++) {
        for (int part = 0; part < 2; part++) {
            for (int i = 0; i < nn_model_part_layers(m, k, part); i++) {
                nn_layer_t *l = nn_model_part_layer(m, k, part, i);
                if (nn_layer_spec(l)->kind != NN_CONV)
                    continue;
                nn_shape_t in = nn_layer_in_shape(l), out = nn_layer_out_shape(l);
                double fl = nn_layer_flops(l), g1 = layer_gflops(l, 1), g64 = layer_gflops(l, 64);
                printf("%5d %-6s (%3d,%2d,%2d)  (%3d,%2d,%2d)  %9.2f  %6.1f (%3.0f%%)  "
                       "%6.1f (%3.0f%%)",
                       k + 1, part ? "branch" : "conv", in.c, in.h, in.w, out.c, out.h, out.w,
                       fl / 1e6, g1, 100 * g1 / peak, g64, 100 * g64 / peak);
                if (mi) {
                    double gi = layer_gflops(nn_model_part_layer(mi, k, part, i), 64);
                    int kk = nn_layer_spec(l)->k, hw = out.h * out.w, K = in.c * kk * kk;
                    gemm_t gm = gemm_new(out.c, 64 * hw, K);
                    /* the group of samples layer_gemm.c takes: about 1,024 columns, col
                       under 256 Ki floats */
                    int g = (1024 + hw - 1) / hw, fit = 256 * 1024 / (K * hw);
                    g = g < fit ? g : fit;
                    g = g < 1 ? 1 : g > 64 ? 64 : g;
                    gemm_t gg = gemm_new(out.c, g * hw, K);
                    double r[5], rg[5];
                    for (int rep = 0; rep < 5; rep++) {
                        r[rep] = gemm_round(&gm, 0.05);
                        rg[rep] = gemm_round(&gg, 0.05);
                    }
                    double gs = median(r, 5), gsg = median(rg, 5);
                    gemm_free(&gm);
                    gemm_free(&gg);
                    printf("  %6.1f (%3.0f%%)   [%3d,%6d,%4d] %6.1f (%3.0f%%)  [%3d,%5d] "
                           "%6.1f (%3.0f%%)",
                           gi, 100 * gi / peak, out.c, 64 * hw, K, gs, 100 * gs / peak, out.c,
                           g * hw, gsg, 100 * gsg / peak);
                    t_group += fl / gsg;
                    fl_all += fl;
                    t_gemm += fl / gs;
                    t_im2col += fl / gi;
                    t_layer += fl / g64;
                }
                printf("\n");
            }
        }
    }
    if (mi)
        printf("every conv at batch 64 together: this build %.1f GFLOP/s (%.0f%%), im2col "
               "%.1f (%.0f%%); OpenBLAS alone on the products: one per layer %.1f (%.0f%%), "
               "per group of samples %.1f (%.0f%%)\n",
               fl_all / t_layer, 100 * fl_all / t_layer / peak, fl_all / t_im2col,
               100 * fl_all / t_im2col / peak, fl_all / t_gemm, 100 * fl_all / t_gemm / peak,
               fl_all / t_group, 100 * fl_all / t_group / peak);
}

typedef struct fwd {
    nn_model_t *m;
    nn_tensor_t *x;
    float *probs;
} fwd_t;

static fwd_t fwd_new(nn_model_t *m, int batch)
{
    nn_shape_t in = nn_model_input_shape(m);
    fwd_t f = {m, nn_tensor_new(batch, in.c, in.h, in.w),
               calloc((size_t)nn_model_blocks(m) * batch * nn_model_classes(m), sizeof(float))};
    EI_ASSERT(f.x && f.probs);
    for (size_t i = 0; i < nn_tensor_numel(f.x); i++)
        f.x->data[i] = (float)(i % 13) / 13.0f;
    return f;
}

/* Images per second of one round of forwards lasting about min_s. */
static double fwd_round(fwd_t *f, double min_s)
{
    ei_err_t err;
    double s = TIME_PER_CALL(min_s, EI_ASSERT(nn_model_forward(f->m, f->x, f->probs, &err) == 0));
    return f->x->n / s;
}

static void fwd_free(fwd_t *f)
{
    nn_tensor_destroy(&f->x);
    free(f->probs);
}

/* A training step as nn_train takes it: zero the gradients, forward and backward of every
 * exit, then SGD with Nesterov momentum 0.9 and weight decay on every trainable tensor. */
typedef struct trainer {
    nn_model_t *m;
    nn_tensor_t *x;
    int *labels;
    float **mom;
    int nslots, cap;
} trainer_t;

static void add_momentum(const char *name, nn_param_t *p, void *arg)
{
    (void)name;
    trainer_t *t = arg;
    if (!p->grad)
        return;
    t->mom[t->nslots++] = calloc(nn_tensor_numel(p->value), sizeof(float));
}

static void count_trainable(const char *name, nn_param_t *p, void *arg)
{
    (void)name;
    *(int *)arg += p->grad != NULL;
}

typedef struct sgd_walk {
    trainer_t *t;
    int i;
} sgd_walk_t;

static void sgd_param(const char *name, nn_param_t *p, void *arg)
{
    (void)name;
    sgd_walk_t *s = arg;
    if (!p->grad)
        return;
    float *w = p->value->data, *g = p->grad->data, *mo = s->t->mom[s->i++];
    const float mu = 0.9f, lr = 0.01f, wd = 5e-4f;
    for (size_t i = 0, n = nn_tensor_numel(p->value); i < n; i++) {
        float gi = g[i] + wd * w[i];
        mo[i] = mu * mo[i] + gi;
        w[i] -= lr * (gi + mu * mo[i]);
    }
}

static trainer_t trainer_new(nn_model_t *m, int batch)
{
    trainer_t t = {.m = m};
    nn_shape_t in = nn_model_input_shape(m);
    t.x = nn_tensor_new(batch, in.c, in.h, in.w);
    t.labels = calloc((size_t)batch, sizeof(int));
    nn_model_visit_params(m, count_trainable, &t.cap);
    t.mom = calloc((size_t)t.cap, sizeof *t.mom);
    EI_ASSERT(t.x && t.labels && t.mom);
    nn_model_visit_params(m, add_momentum, &t);
    ei_rng_t rng;
    ei_rng_seed(&rng, 7);
    for (size_t i = 0; i < nn_tensor_numel(t.x); i++)
        t.x->data[i] = (float)ei_rng_uniform(&rng);
    for (int s = 0; s < batch; s++)
        t.labels[s] = (int)ei_rng_below(&rng, (uint32_t)nn_model_classes(m));
    return t;
}

static void train_step(trainer_t *t)
{
    nn_model_zero_grad(t->m);
    nn_model_train_step(t->m, t->x, t->labels, NULL, NULL, NULL);
    sgd_walk_t s = {t, 0};
    nn_model_visit_params(t->m, sgd_param, &s);
}

static double train_round(trainer_t *t, double min_s)
{
    double s = TIME_PER_CALL(min_s, train_step(t));
    return t->x->n / s;
}

static void trainer_free(trainer_t *t)
{
    for (int i = 0; i < t->nslots; i++)
        free(t->mom[i]);
    free(t->mom);
    free(t->labels);
    nn_tensor_destroy(&t->x);
}

/* --predict: per image, each exit's class then its K probabilities. */
static int predict(nn_model_t *m, const char *data_dir, int n, int batch)
{
    ei_err_t err = {0};
    nn_dataset_t *test = nn_dataset_load(data_dir, "test", &err);
    if (!test) {
        fprintf(stderr, "bench_nn: %s\n", err.msg);
        return 1;
    }
    n = n < test->count ? n : test->count;
    int E = nn_model_blocks(m), K = nn_model_classes(m);
    nn_shape_t in = nn_model_input_shape(m);
    nn_tensor_t *x = nn_tensor_new(batch, in.c, in.h, in.w);
    float *probs = calloc((size_t)E * batch * K, sizeof(float));
    EI_ASSERT(x && probs);
    int rc = 0;
    for (int first = 0; first < n && !rc; first += batch) {
        int nb = n - first < batch ? n - first : batch;
        nn_dataset_batch(test, NULL, first, nb, x, NULL);
        rc = nn_model_forward(m, x, probs, &err);
        for (int s = 0; s < nb && !rc; s++) {
            for (int e = 0; e < E; e++) {
                const float *p = probs + ((size_t)e * nb + s) * K;
                int best = 0;
                for (int c = 1; c < K; c++)
                    best = p[c] > p[best] ? c : best;
                printf("%d ", best);
            }
            for (int e = 0; e < E; e++)
                for (int c = 0; c < K; c++)
                    printf("%.9g%c", probs[((size_t)e * nb + s) * K + c],
                           e + 1 < E || c + 1 < K ? ' ' : '\n');
        }
    }
    if (rc)
        fprintf(stderr, "bench_nn: %s\n", err.msg);
    nn_tensor_destroy(&x);
    free(probs);
    nn_dataset_destroy(&test);
    return rc ? 1 : 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_nn [--model FILE] [--threads N] [--reps R] [--layers] "
                    "[--lowerings] [--cpu-time] [--json] [--train-only]\n"
                    "       bench_nn --predict N [--model FILE] [--data DIR] [--batch B]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *path = "models/fmnist-8exit.safetensors", *data_dir = NULL;
    int threads = 1, reps = 7, layers = 0, json = 0, npredict = 0, pbatch = 64, lowerings = 0;
    int train_only = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            path = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--predict") && i + 1 < argc)
            npredict = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            pbatch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--data") && i + 1 < argc)
            data_dir = argv[++i];
        else if (!strcmp(argv[i], "--layers"))
            layers = 1;
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--lowerings"))
            lowerings = 1;
        else if (!strcmp(argv[i], "--train-only"))
            train_only = 1;
        else if (!strcmp(argv[i], "--cpu-time"))
            bench_clock = cpu_clock;
        else
            return usage();
    }
    if (bench_clock == cpu_clock && threads != 1) {
        fprintf(stderr, "bench_nn: --cpu-time times one thread only\n");
        return usage();
    }
    if (threads < 1 || threads > 64 || reps < 1 || reps > 1000 || pbatch < 1 || pbatch > 4096 || npredict < 0)
        return usage();
    ei_err_t err = {0};
    if (nn_set_threads(threads)) {
        fprintf(stderr, "bench_nn: could not start %d threads\n", threads);
        return 1;
    }
    nn_model_t *m = nn_model_load(path, npredict ? pbatch : 64, &err);
    nn_model_t *mt = npredict ? NULL : nn_model_load(path, 128, &err);
    if (!m || (!npredict && !mt)) {
        fprintf(stderr, "bench_nn: %s\n", err.msg);
        return 1;
    }
    nn_model_prepare_inference(m);
    /* --lowerings: the same model prepared without Winograd's lowering (im2col + sgemm for
     * every conv), timed in the same rounds. */
    nn_model_t *mi = NULL;
    if (lowerings) {
        mi = nn_model_load(path, 64, &err);
        if (!mi) {
            fprintf(stderr, "bench_nn: %s\n", err.msg);
            return 1;
        }
        nn_set_winograd(0);
        nn_model_prepare_inference(mi);
        nn_set_winograd(1);
    }
    if (npredict) {
        int rc = predict(m, data_dir, npredict, pbatch);
        nn_model_destroy(&m);
        return rc;
    }
    double flops = 0;
    for (int k = 0; k < nn_model_blocks(m); k++)
        flops += nn_model_conv_flops(m, k) + nn_model_branch_flops(m, k);
    /* The measurements take turns round by round, so a burst of load from elsewhere on
     * the machine hits them alike; each figure is the median of its rounds. */
    peak_arg_t *pk = calloc((size_t)threads, sizeof *pk);
    EI_ASSERT(pk);
    for (int i = 0; i < threads; i++)
        pk[i].g = gemm_new(1024, 1024, 1024);
    fwd_t f1 = fwd_new(m, 1), f64 = fwd_new(m, 64);
    fwd_t i1 = fwd_new(mi ? mi : m, 1), i64 = fwd_new(mi ? mi : m, 64);
    trainer_t tr = trainer_new(mt, 128);
    double *r = calloc((size_t)reps * 6, sizeof(double));
    EI_ASSERT(r);
    for (int i = 0; i < reps && train_only; i++)
        r[3 * reps + i] = train_round(&tr, 0.5);
    if (train_only) /* profiling the training step: nothing else runs */
        printf("training step, batch 128 (forward + backward + SGD): %.0f images/s\n",
               median(r + 3 * reps, reps));
    for (int i = 0; i < reps && !train_only; i++) {
        r[i] = peak_round(pk, threads);
        r[reps + i] = fwd_round(&f1, 0.3);
        r[2 * reps + i] = fwd_round(&f64, 0.3);
        r[3 * reps + i] = train_round(&tr, 0.5);
        if (mi) {
            r[4 * reps + i] = fwd_round(&i1, 0.3);
            r[5 * reps + i] = fwd_round(&i64, 0.3);
        }
    }
    if (train_only)
        goto done;
    double peak = median(r, reps), thr1 = median(r + reps, reps);
    double thr64 = median(r + 2 * reps, reps), trn = median(r + 3 * reps, reps);
    double g64 = flops * thr64 / 1e9;
    if (json) {
        printf("{\"model\": \"%s\", \"threads\": %d, \"reps\": %d, \"mflop_per_image\": %.3f, "
               "\"sgemm_peak_gflops\": %.2f, \"forward_b1_img_s\": %.1f, "
               "\"forward_b64_img_s\": %.1f, \"forward_b64_gflops\": %.2f, "
               "\"forward_b64_of_peak\": %.4f, \"train_b128_img_s\": %.1f}\n",
               nn_model_name(m), threads, reps, flops / 1e6, peak, thr1, thr64, g64, g64 / peak,
               trn);
    } else {
        printf("model %s: %d exits, %.1f MFLOP per image (all exits), %d thread(s), medians of "
               "%d rounds, %s time\n", nn_model_name(m), nn_model_blocks(m), flops / 1e6, threads,
               reps, bench_clock == cpu_clock ? "CPU" : "wall");
        printf("OpenBLAS sgemm peak (1024^3 on each thread at once, this run): %.1f GFLOP/s\n",
               peak);
        printf("full forward, every exit:\n");
        printf("  batch 1 : %.3f ms per image, %.1f GFLOP/s (%.0f%% of sgemm peak)\n",
               1e3 / thr1, flops * thr1 / 1e9, 100 * flops * thr1 / 1e9 / peak);
        printf("  batch 64: %.0f images/s, %.1f GFLOP/s (%.0f%% of sgemm peak)\n", thr64, g64,
               100 * g64 / peak);
        printf("training step, batch 128 (forward + backward + SGD): %.0f images/s\n", trn);
        if (mi) {
            double a1 = median(r + 4 * reps, reps), a64 = median(r + 5 * reps, reps);
            printf("the same without Winograd (im2col + sgemm for every conv, same rounds):\n");
            printf("  batch 1 : %.3f ms per image (%.0f%% of peak); Winograd / im2col %.2fx\n",
                   1e3 / a1, 100 * flops * a1 / 1e9 / peak, thr1 / a1);
            printf("  batch 64: %.0f images/s (%.0f%% of peak); Winograd / im2col %.2fx\n", a64,
                   100 * flops * a64 / 1e9 / peak, thr64 / a64);
        }
        if (layers)
            bench_layers(m, mi, peak);
    }
done:
    free(r);
    for (int i = 0; i < threads; i++)
        gemm_free(&pk[i].g);
    free(pk);
    fwd_free(&f1);
    fwd_free(&f64);
    fwd_free(&i1);
    fwd_free(&i64);
    nn_model_destroy(&mi);
    trainer_free(&tr);
    nn_model_destroy(&m);
    nn_model_destroy(&mt);
    return 0;
}
