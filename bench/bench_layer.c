/* Conv and dense forward speed against OpenBLAS's own sgemm of the same M, N, K, measured
 * in the same run: the ratio shows what im2col, the bias and the per-sample loop cost.
 * Usage: bench_layer [threads] (default 1). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/ei.h"
#include "nn/layer.h"

void openblas_set_num_threads(int num_threads);

typedef struct shape {
    const char *what;
    int n, c, hw, out, k, stride, pad; /* k == 0: dense */
} shape_t;

/* What one timed run does: a layer forward, or the sgemm calls it is compared with. */
typedef struct job job_t;
struct job {
    void (*run)(job_t *self);
    nn_layer_t *layer;
    nn_tensor_t *x, *y;
    float *ws;
    int m, n, k, calls;
    float *a, *b, *c;
};

static void run_layer(job_t *j)
{
    nn_layer_forward(j->layer, j->x, j->y, j->ws, 0);
}

static void run_sgemm(job_t *j)
{
    for (int s = 0; s < j->calls; s++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, j->m, j->n, j->k, 1.0f, j->a, j->k,
                    j->b, j->n, 1.0f, j->c, j->n);
}

/* Best time of reps runs of each job, the jobs taking turns so that all see the same
 * machine load. */
static void best_of(int reps, job_t *const *jobs, int count, double *best)
{
    for (int i = 0; i < count; i++)
        best[i] = 1e30;
    for (int r = 0; r < reps; r++)
        for (int i = 0; i < count; i++) {
            double t = ei_now();
            jobs[i]->run(jobs[i]);
            t = ei_now() - t;
            best[i] = t < best[i] ? t : best[i];
        }
}

/* Operands of `calls` sgemm calls of [m, k] x [k, n]. */
static job_t gemm_job(int m, int n, int k, int calls)
{
    job_t j = {.run = run_sgemm, .m = m, .n = n, .k = k, .calls = calls};
    j.a = calloc((size_t)m * k, sizeof(float));
    j.b = calloc((size_t)k * n, sizeof(float));
    j.c = calloc((size_t)m * n, sizeof(float));
    if (!j.a || !j.b || !j.c) {
        fprintf(stderr, "bench_layer: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < (size_t)m * k; i++)
        j.a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)k * n; i++)
        j.b[i] = (float)(i % 5) * 0.1f;
    return j;
}

static void free_gemm_job(job_t *j)
{
    free(j->a);
    free(j->b);
    free(j->c);
}

static void bench(const shape_t *s, ei_rng_t *rng)
{
    nn_layer_spec_t sp = {s->k ? NN_CONV : NN_DENSE, s->out, s->k, s->stride, s->pad, 0, 0, 0, NULL, NULL, 0, 0};
    nn_shape_t in = {s->c, s->hw, s->hw};
    ei_err_t err = {0};
    nn_layer_t *l = nn_layer_new(&sp, in, &err);
    if (!l) {
        fprintf(stderr, "bench_layer: %s\n", err.msg);
        exit(1);
    }
    nn_layer_init(l, rng);
    nn_shape_t os = nn_layer_out_shape(l);
    nn_tensor_t *x = nn_tensor_new(s->n, in.c, in.h, in.w);
    nn_tensor_t *y = nn_tensor_new(s->n, os.c, os.h, os.w);
    float *ws = calloc(nn_layer_workspace(l, s->n) + 1, sizeof(float));
    for (size_t i = 0; i < nn_tensor_numel(x); i++)
        x->data[i] = (float)ei_rng_normal(rng);
    job_t lj = {.run = run_layer, .layer = l, .x = x, .y = y, .ws = ws};
    /* The product the layer lowers to: per sample for conv, one for the batch for dense. */
    int kk = s->k ? s->c * s->k * s->k : s->c * s->hw * s->hw;
    job_t gj = s->k ? gemm_job(s->out, os.h * os.w, kk, s->n) : gemm_job(s->n, s->out, kk, 1);
    double t[2], flops = nn_layer_flops(l) * s->n;
    best_of(s->n > 8 ? 20 : 300, (job_t *const[]){&lj, &gj}, 2, t);
    free_gemm_job(&gj);
    printf("%-34s n=%-3d %8.2f GFLOP/s  sgemm %8.2f GFLOP/s  ratio %.2f\n", s->what, s->n,
           flops / t[0] * 1e-9, flops / t[1] * 1e-9, t[1] / t[0]);
    free(ws);
    nn_tensor_destroy(&x);
    nn_tensor_destroy(&y);
    nn_layer_destroy(&l);
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    openblas_set_num_threads(threads > 0 ? threads : 1);
    printf("bench_layer: forward vs cblas_sgemm of the same M, N, K, %d thread(s)\n", threads);
    static const shape_t shapes[] = {
        {"conv 32->32 3x3 pad 1 at 28x28", 1, 32, 28, 32, 3, 1, 1},
        {"conv 32->32 3x3 pad 1 at 28x28", 64, 32, 28, 32, 3, 1, 1},
        {"conv 1->16 3x3 pad 1 at 28x28", 64, 1, 28, 16, 3, 1, 1},
        {"conv 64->64 3x3 pad 1 at 14x14", 64, 64, 14, 64, 3, 1, 1},
        {"conv 64->128 3x3 stride 2 at 14x14", 64, 64, 14, 128, 3, 2, 1},
        {"conv 64->64 1x1 at 14x14", 64, 64, 14, 64, 1, 1, 0},
        {"dense 3136->256", 64, 64, 7, 256, 0, 0, 0},
        {"dense 3136->256", 1, 64, 7, 256, 0, 0, 0},
    };
    job_t peak = gemm_job(1024, 1024, 1024, 1);
    double t_peak;
    best_of(5, (job_t *const[]){&peak}, 1, &t_peak);
    printf("sgemm peak (1024 x 1024 x 1024): %.2f GFLOP/s\n", 2.0 * (1 << 30) / t_peak * 1e-9);
    free_gemm_job(&peak);
    ei_rng_t rng;
    ei_rng_seed(&rng, 1);
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        bench(&shapes[i], &rng);
    return 0;
}
