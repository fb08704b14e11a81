/* einet eval: per-exit accuracy, confidence and block times of a model on the test set. */
#include <cblas.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "nn/dataset.h"
#include "nn/model.h"
#include "nn/train.h"

#define DEFAULT_MODEL "models/fmnist-8exit.safetensors"

static const char usage_text[] =
    "usage: einet eval [--model FILE] [--json] [options]\n"
    "Runs every test image through every block at batch 1, as the tiers do, and prints\n"
    "each exit's accuracy, mean confidence and mean per-sample conv-part and branch time.\n"
    "  --model FILE    model file (default: the shipped " DEFAULT_MODEL ")\n"
    "  --json          one JSON object instead of a table\n"
    "  --samples N     only the first N test images (default all 10000)\n"
    "  --threads N     OpenBLAS threads (default 1)\n"
    "  --data DIR      Fashion-MNIST directory (default " NN_DATASET_DEFAULT_DIR ")\n";

typedef struct {
    int exits;
    long correct[256];
    double conf[256], conv_s[256], branch_s[256];
} tally_t;

static int argmax(const float *p, int k)
{
    int best = 0;
    for (int c = 1; c < k; c++)
        best = p[c] > p[best] ? c : best;
    return best;
}

/* One sample through every block, timing each conv part and branch on its own. */
static int eval_sample(nn_model_t *m, const nn_tensor_t *x, int label, tally_t *t, ei_err_t *err)
{
    float probs[1000];
    const nn_tensor_t *cur = x;
    int K = nn_model_classes(m);
    for (int k = 0; k < t->exits; k++) {
        double t0 = ei_now();
        cur = nn_model_conv(m, k, cur, err);
        if (!cur)
            return err->code;
        double t1 = ei_now();
        int rc = nn_model_branch(m, k, cur, probs, err);
        if (rc)
            return rc;
        double t2 = ei_now();
        int c = argmax(probs, K);
        t->correct[k] += c == label;
        t->conf[k] += probs[c];
        t->conv_s[k] += t1 - t0;
        t->branch_s[k] += t2 - t1;
    }
    return 0;
}

static void print_json(const nn_model_t *m, const char *path, const tally_t *t, int n, int threads)
{
    json_t *exits = json_array();
    for (int k = 0; k < t->exits; k++)
        json_array_append_new(
            exits, json_pack("{s:i, s:f, s:f, s:f, s:f, s:f, s:f}", "exit", k + 1, "accuracy",
                             (double)t->correct[k] / n, "mean_confidence", t->conf[k] / n,
                             "conv_ms", 1e3 * t->conv_s[k] / n, "branch_ms",
                             1e3 * t->branch_s[k] / n, "conv_mflop",
                             nn_model_conv_flops(m, k) / 1e6, "branch_mflop",
                             nn_model_branch_flops(m, k) / 1e6));
    json_t *root = json_pack("{s:s, s:s, s:i, s:i, s:o}", "model", path, "name", nn_model_name(m),
                             "samples", n, "threads", threads, "exits", exits);
    char *text = json_dumps(root, JSON_REAL_PRECISION(6));
    puts(text);
    free(text);
    json_decref(root);
}

static void print_table(const nn_model_t *m, const char *path, const tally_t *t, int n, int threads)
{
    printf("model %s (%s): %d test images, batch 1, %d thread%s\n", path, nn_model_name(m), n,
           threads, threads > 1 ? "s" : "");
    printf("exit  accuracy  mean conf  conv ms  branch ms  conv MFLOP  branch MFLOP\n");
    for (int k = 0; k < t->exits; k++)
        printf("%4d  %8.4f  %9.4f  %7.4f  %9.4f  %10.2f  %12.2f\n", k + 1,
               (double)t->correct[k] / n, t->conf[k] / n, 1e3 * t->conv_s[k] / n,
               1e3 * t->branch_s[k] / n, nn_model_conv_flops(m, k) / 1e6,
               nn_model_branch_flops(m, k) / 1e6);
}

static int evaluate(nn_model_t *m, const nn_dataset_t *test, int n, tally_t *t)
{
    ei_err_t err = {0};
    nn_shape_t in = nn_model_input_shape(m); /* checked against the data: cli_check_data */
    nn_tensor_t *x = nn_tensor_new(1, in.c, in.h, in.w);
    if (!x)
        return cli_fail("eval", "out of memory");
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        int label;
        nn_dataset_batch(test, NULL, i, 1, x, &label);
        rc = eval_sample(m, x, label, t, &err);
    }
    nn_tensor_destroy(&x);
    return rc ? cli_fail("eval", "%s", err.msg) : CLI_OK;
}

int cmd_eval(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'}, {"json", no_argument, 0, 'j'},
        {"samples", required_argument, 0, 'n'}, {"threads", required_argument, 0, 't'},
        {"data", required_argument, 0, 'd'},  {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    char pathbuf[1024];
    const char *path = NULL, *data = NULL;
    long samples = 10000, threads = 1;
    int json = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm': path = optarg; break;
        case 'j': json = 1; break;
        case 'd': data = optarg; break;
        case 'h': fputs(usage_text, stdout); return CLI_OK;
        case 'n':
            if (cli_parse_long(optarg, 1, 10000, &samples))
                return cli_usage_error("eval", "--samples: '%s' is not in [1, 10000]", optarg);
            break;
        case 't':
            if (cli_parse_long(optarg, 1, 256, &threads))
                return cli_usage_error("eval", "--threads: '%s' is not in [1, 256]", optarg);
            break;
        default:
            return cli_bad_option("eval", argv, optind);
        }
    }
    if (optind < argc)
        return cli_usage_error("eval", "unexpected argument '%s'", argv[optind]);
    if (!path)
        path = cli_default_path(DEFAULT_MODEL, pathbuf, sizeof pathbuf);
    openblas_set_num_threads((int)threads);
    ei_err_t err = {0};
    nn_model_t *m = nn_model_load(path, 1, &err);
    if (!m)
        return cli_fail("eval", "%s", err.msg);
    int rc = cli_check_data("eval", path, nn_model_input_shape(m), data, "test");
    if (rc != CLI_OK) {
        nn_model_destroy(&m);
        return rc;
    }
    nn_model_prepare_inference(m);
    nn_dataset_t *test = nn_dataset_load(data, "test", &err);
    if (!test) {
        nn_model_destroy(&m);
        return cli_fail("eval", "%s", err.msg);
    }
    int n = samples < test->count ? (int)samples : test->count;
    tally_t *t = ei_calloc(1, sizeof *t);
    t->exits = nn_model_blocks(m) < 256 ? nn_model_blocks(m) : 256;
    rc = evaluate(m, test, n, t);
    if (!rc)
        json ? print_json(m, path, t, n, (int)threads) : print_table(m, path, t, n, (int)threads);
    free(t);
    nn_dataset_destroy(&test);
    nn_model_destroy(&m);
    return rc;
}
