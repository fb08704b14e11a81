/* Speed of the engine on a model: OpenBLAS sgemm peak measured in this run, each conv
 * layer's GFLOP/s at batch 1 and 64 with its ratio to that peak, and batch-1 latency and
 * batch-64 throughput of the full forward (every exit).
 *   bench_nn [--model FILE] [--threads N] */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/ei.h"
#include "nn/layer.h"
#include "nn/model.h"

/* Runs fn until at least min_s seconds passed (after one warm-up call); seconds per call. */
#define TIME_PER_CALL(min_s, stmt)                                   \
    ({                                                               \
        stmt;                                                        \
        long reps_ = 0;                                              \
        double t0_ = ei_now(), el_;                                  \
        do {                                                         \
            stmt;                                                    \
            reps_++;                                                 \
        } while ((el_ = ei_now() - t0_) < (min_s));                  \
        el_ / reps_;                                                 \
    })

static double sgemm_gflops(int m, int n, int k)
{
    float *a = calloc((size_t)m * k, 4), *b = calloc((size_t)k * n, 4), *c = calloc((size_t)m * n, 4);
    for (size_t i = 0; i < (size_t)m * k; i++)
        a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)k * n; i++)
        b[i] = (float)(i % 5) * 0.1f;
    double s = TIME_PER_CALL(0.3, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k,
                                               1.0f, a, k, b, n, 0.0f, c, n));
    free(a);
    free(b);
    free(c);
    return 2.0 * m * n * k / s / 1e9;
}

static void bench_layers(nn_model_t *m, double peak)
{
    printf("\nconv layers (forward, BN folded):\n");
    printf("block layer  in (c,h,w)     out (c,h,w)    MFLOP/img  b1 GFLOP/s  b1/peak  "
           "b64 GFLOP/s  b64/peak  sgemm(same M,N,K b1) GFLOP/s\n");
    for (int k = 0; k < nn_model_blocks(m); k++) {
        for (int part = 0; part < 2; part++) {
            for (int i = 0; i < nn_model_part_layers(m, k, part); i++) {
                nn_layer_t *l = nn_model_part_layer(m, k, part, i);
                const nn_layer_spec_t *sp = nn_layer_spec(l);
                if (sp->kind != NN_CONV)
                    continue;
                nn_shape_t in = nn_layer_in_shape(l), out = nn_layer_out_shape(l);
                double fl = nn_layer_flops(l), g[2];
                int batches[2] = {1, 64};
                for (int bi = 0; bi < 2; bi++) {
                    int n = batches[bi];
                    nn_tensor_t *x = nn_tensor_new(n, in.c, in.h, in.w);
                    nn_tensor_t *y = nn_tensor_new(n, out.c, out.h, out.w);
                    float *ws = calloc(nn_layer_workspace(l, n) + 1, sizeof(float));
                    double s = TIME_PER_CALL(0.2, nn_layer_forward(l, x, y, ws, 0));
                    g[bi] = fl * n / s / 1e9;
                    nn_tensor_destroy(&x);
                    nn_tensor_destroy(&y);
                    free(ws);
                }
                double same = sgemm_gflops(out.c, out.h * out.w, in.c * sp->k * sp->k);
                printf("%5d %-6s (%3d,%2d,%2d)   (%3d,%2d,%2d)   %9.2f  %10.1f  %6.0f%%  %11.1f  "
                       "%7.0f%%  %6.1f\n", k + 1, part ? "branch" : "conv", in.c, in.h, in.w,
                       out.c, out.h, out.w, fl / 1e6, g[0], 100 * g[0] / peak, g[1],
                       100 * g[1] / peak, same);
            }
        }
    }
}

static void bench_forward(nn_model_t *m, int batch, double *lat_s, double *thr)
{
    nn_shape_t in = nn_model_input_shape(m);
    nn_tensor_t *x = nn_tensor_new(batch, in.c, in.h, in.w);
    for (size_t i = 0; i < nn_tensor_numel(x); i++)
        x->data[i] = (float)(i % 13) / 13.0f;
    float *probs = calloc((size_t)nn_model_blocks(m) * batch * nn_model_classes(m), sizeof(float));
    ei_err_t err;
    double s = TIME_PER_CALL(1.0, EI_ASSERT(nn_model_forward(m, x, probs, &err) == 0));
    *lat_s = s;
    *thr = batch / s;
    free(probs);
    nn_tensor_destroy(&x);
}

int main(int argc, char **argv)
{
    const char *path = "models/fmnist-8exit.safetensors";
    int threads = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc)
            path = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_nn [--model FILE] [--threads N]\n");
            return 2;
        }
    }
    openblas_set_num_threads(threads);
    ei_err_t err = {0};
    nn_model_t *m = nn_model_load(path, 64, &err);
    if (!m) {
        fprintf(stderr, "bench_nn: %s\n", err.msg);
        return 1;
    }
    nn_model_prepare_inference(m);
    double peak = sgemm_gflops(1024, 1024, 1024);
    double flops = 0;
    for (int k = 0; k < nn_model_blocks(m); k++)
        flops += nn_model_conv_flops(m, k) + nn_model_branch_flops(m, k);
    printf("model %s: %d exits, %.1f MFLOP per image (all exits), %d thread(s)\n",
           nn_model_name(m), nn_model_blocks(m), flops / 1e6, threads);
    printf("OpenBLAS sgemm peak (1024^3, this run): %.1f GFLOP/s\n", peak);
    bench_layers(m, peak);
    double lat1, thr1, lat64, thr64;
    bench_forward(m, 1, &lat1, &thr1);
    bench_forward(m, 64, &lat64, &thr64);
    printf("\nfull forward, every exit:\n");
    printf("  batch 1 : %.3f ms per image, %.1f GFLOP/s (%.0f%% of sgemm peak)\n", lat1 * 1e3,
           flops / lat1 / 1e9, 100 * flops / lat1 / 1e9 / peak);
    printf("  batch 64: %.0f images/s, %.1f GFLOP/s (%.0f%% of sgemm peak)\n", thr64,
           flops * thr64 / 1e9, 100 * flops * thr64 / 1e9 / peak);
    nn_model_destroy(&m);
    return 0;
}
