/* einet profile: the block-wise profiles of a model (EINet §IV-B) on this machine: the
 * ET-profile (block times at batch 1) and the CS-profiles of the validation and test splits. */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "cli/client.h"
#include "cli/elastic_live.h"
#include "nn/dataset.h"
#include "nn/model.h"
#include "nn/safetensors.h"
#include "planner/profile.h"

#define DEFAULT_MODEL "models/fmnist-8exit.safetensors"

static const char usage_text[] =
    "usage: einet profile [--model FILE] [--out DIR] [options]\n"
    "       einet profile --from-cluster [--coordinator ENDPOINT] --out FILE.json\n"
    "Runs the validation split (the samples training held out) and the test split through\n"
    "every block at batch 1 and writes DIR/" PROFILE_ET_FILE " (each block's conv-part and "
    "branch\ntime: mean, std, p95), DIR/" PROFILE_CS_VAL_FILE " and DIR/" PROFILE_CS_TEST_FILE
    "\n(every exit's softmax vector for every sample; docs/elastic.md).\n"
    "  --model FILE    model file (default: the shipped " DEFAULT_MODEL ")\n"
    "  --out DIR       profile directory (default: the model file's name with .profile\n"
    "                  for .safetensors, e.g. models/fmnist-8exit.profile)\n"
    "  --val N         validation samples (default: as the model was trained, else 5000)\n"
    "  --seed N        split seed (default: as the model was trained, else 1)\n"
    "  --test N        only the first N test images (default all 10000)\n"
    "  --warmup N      samples run before timing starts (default 100)\n"
    "  --threads N     OpenBLAS threads (default 1, as a tier runs)\n"
    "  --data DIR      Fashion-MNIST directory (default " NN_DATASET_DEFAULT_DIR ")\n"
    "  --from-cluster  save the running cluster's live ET-profile instead (block times per\n"
    "                  node, links, result delays and the dispatch time, as the\n"
    "                  coordinator measures them) to FILE.json, for 'einet elastic --et'\n"
    CLIENT_OPTS_HELP;

typedef struct {
    const char *model, *out, *data;
    long val, seed, test, warmup, threads;
    int from_cluster;
    client_opts_t o;
} args_t;

/* The validation size and seed the model was trained with, from its info metadata. */
static void model_split(const char *path, long *val, long *seed)
{
    nn_st_file_t *f = nn_st_open(path, NULL);
    const char *info = f ? nn_st_meta(f, "info") : NULL;
    json_t *root = info ? json_loads(info, 0, NULL) : NULL;
    json_t *v = json_object_get(root, "val"), *s = json_object_get(root, "seed");
    if (*val < 0 && json_is_integer(v))
        *val = (long)json_integer_value(v);
    if (*seed < 0 && json_is_integer(s))
        *seed = (long)json_integer_value(s);
    json_decref(root);
    nn_st_close(&f);
}

/* Profiles one split (idx NULL: the first count samples) into a new CS-profile. */
static profile_cs_t *profile_split(nn_model_t *m, const nn_dataset_t *d, const int *idx, int count,
                                   const char *split, double *conv, double *branch, ei_err_t *err)
{
    profile_cs_t *cs = profile_cs_new(count, nn_model_blocks(m), nn_model_classes(m), split,
                                      nn_model_name(m), err);
    if (cs && profile_measure(m, d, idx, count, cs, conv, branch, stderr, err))
        profile_cs_destroy(&cs);
    return cs;
}

static void print_summary(const profile_et_t *et, const profile_cs_t *val, const profile_cs_t *test,
                          const char *dir)
{
    double va[PLANNER_MAX_EXITS], ta[PLANNER_MAX_EXITS];
    profile_cs_accuracy(val, va, NULL);
    profile_cs_accuracy(test, ta, NULL);
    printf("profiles of %s in %s: %d validation and %d test samples, %d timed\n", et->model, dir,
           profile_cs_count(val), profile_cs_count(test), et->samples);
    printf("exit  conv ms (std, p95)         branch ms (std, p95)       val acc  test acc\n");
    for (int k = 0; k < et->times.n; k++)
        printf("%4d  %7.4f (%6.4f, %6.4f)   %7.4f (%6.4f, %6.4f)   %7.4f  %8.4f\n", k + 1,
               et->times.conv_ms[k], et->conv_std_ms[k], et->conv_p95_ms[k], et->times.branch_ms[k],
               et->branch_std_ms[k], et->branch_p95_ms[k], va[k], ta[k]);
}

static int write_all(const char *dir, const profile_et_t *et, const profile_cs_t *val,
                     const profile_cs_t *test, ei_err_t *err)
{
    char path[4096];
    if (mkdir(dir, 0777) && errno != EEXIST)
        return ei_err_set(err, EI_E_IO, "%s: %s", dir, strerror(errno));
    snprintf(path, sizeof path, "%s/%s", dir, PROFILE_ET_FILE);
    int rc = profile_et_save(et, path, err);
    snprintf(path, sizeof path, "%s/%s", dir, PROFILE_CS_VAL_FILE);
    rc = rc ? rc : profile_cs_save(val, path, err);
    snprintf(path, sizeof path, "%s/%s", dir, PROFILE_CS_TEST_FILE);
    return rc ? rc : profile_cs_save(test, path, err);
}

static int run(nn_model_t *m, nn_dataset_t *train, nn_dataset_t *test, const args_t *a,
               ei_err_t *err)
{
    int n = nn_model_blocks(m), n_val = (int)a->val, n_test = (int)a->test;
    int *tr = malloc((size_t)(train->count - n_val) * sizeof *tr);
    int *va = malloc((size_t)n_val * sizeof *va);
    size_t rows = (size_t)(n_val + n_test) * (size_t)n;
    double *conv = malloc(rows * sizeof *conv), *branch = malloc(rows * sizeof *branch);
    profile_cs_t *cs_val = NULL, *cs_test = NULL, *warm = NULL;
    profile_et_t et;
    int rc = tr && va && conv && branch ? 0 : ei_err_set(err, EI_E_NOMEM, "out of memory");
    if (!rc) {
        nn_dataset_split(train->count, n_val, (uint64_t)a->seed, tr, va);
        if (a->warmup > 0) {
            fprintf(stderr, "einet profile: %ld warm-up samples\n", a->warmup);
            warm = profile_split(m, test, NULL, (int)a->warmup, "warmup", NULL, NULL, err);
        }
        if (!warm && a->warmup > 0)
            rc = err->code;
    }
    if (!rc && !(cs_val = profile_split(m, train, va, n_val, "val", conv, branch, err)))
        rc = err->code;
    if (!rc &&
        !(cs_test = profile_split(m, test, NULL, n_test, "test", conv + (size_t)n_val * (size_t)n,
                                  branch + (size_t)n_val * (size_t)n, err)))
        rc = err->code;
    if (!rc) {
        profile_et_init(&et, n);
        et.threads = (int)a->threads;
        snprintf(et.model, sizeof et.model, "%s", nn_model_name(m));
        rc = profile_et_summarise(&et, conv, branch, n_val + n_test, n, err);
    }
    if (!rc)
        rc = write_all(a->out, &et, cs_val, cs_test, err);
    if (!rc)
        print_summary(&et, cs_val, cs_test, a->out);
    profile_cs_destroy(&warm);
    profile_cs_destroy(&cs_val);
    profile_cs_destroy(&cs_test);
    free(tr);
    free(va);
    free(conv);
    free(branch);
    return rc;
}

/* An integer flag value in [lo, hi]; 0 or the usage error's exit code. */
static int num_arg(const char *flag, long lo, long hi, long *out)
{
    if (cli_parse_long(optarg, lo, hi, out))
        return cli_usage_error("profile", "%s: '%s' is not an integer in [%ld, %ld]", flag, optarg,
                               lo, hi);
    return 0;
}

/* 0 to go on, -1 after --help, else a usage error's exit code. */
static int parse_args(int argc, char **argv, args_t *a)
{
    static const struct option longopts[] = {
        {"model", required_argument, 0, 'm'},   {"out", required_argument, 0, 'o'},
        {"val", required_argument, 0, 'v'},     {"seed", required_argument, 0, 's'},
        {"test", required_argument, 0, 'n'},    {"warmup", required_argument, 0, 'w'},
        {"threads", required_argument, 0, 't'}, {"data", required_argument, 0, 'd'},
        {"from-cluster", no_argument, 0, 'C'},  CLIENT_LONGOPTS,
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    int c, rc = 0;
    opterr = 0;
    while (!rc && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int r = client_opts_parse("profile", &a->o, c, optarg);
        if (r < 0)
            return CLI_USAGE;
        if (r > 0)
            continue;
        switch (c) {
        case 'C':
            a->from_cluster = 1;
            break;
        case 'm':
            a->model = optarg;
            break;
        case 'o':
            a->out = optarg;
            break;
        case 'd':
            a->data = optarg;
            break;
        case 'v':
            rc = num_arg("--val", 1, 59999, &a->val);
            break;
        case 's':
            rc = num_arg("--seed", 0, 0x7fffffffL, &a->seed);
            break;
        case 'n':
            rc = num_arg("--test", 1, 10000, &a->test);
            break;
        case 'w':
            rc = num_arg("--warmup", 0, 10000, &a->warmup);
            break;
        case 't':
            rc = num_arg("--threads", 1, 256, &a->threads);
            break;
        case 'h':
            fputs(usage_text, stdout);
            return -1;
        default:
            return cli_bad_option("profile", argv, optind);
        }
    }
    if (!rc && optind < argc)
        return cli_usage_error("profile", "unexpected argument '%s'", argv[optind]);
    if (!rc && a->from_cluster && !a->out)
        return cli_usage_error("profile", "--from-cluster needs --out FILE.json");
    if (!rc && a->from_cluster && client_opts_finish("profile", &a->o))
        return CLI_USAGE;
    return rc;
}

/* --from-cluster: the live ET-profile into a->out. */
static int save_live(const args_t *a)
{
    ei_err_t err = {0};
    profile_et_t et;
    if (live_profile_fetch(a->o.endpoint, a->o.timeout_ms, &et, &err) ||
        profile_et_save(&et, a->out, &err))
        return cli_fail("profile", "%s", err.msg);
    planner_profile_t p = profile_et_clock(&et);
    double t = 0;
    for (int k = 0; k < p.n; k++)
        t += p.conv_ms[k] + p.branch_ms[k] + (k + 1 < p.n ? p.link_ms[k] : 0);
    printf("live ET-profile of %s saved to %s: %d blocks, dispatch %.4f ms, horizon %.4f ms\n",
           a->o.endpoint, a->out, p.n, et.dispatch_ms, t + p.result_ms[p.n - 1]);
    return CLI_OK;
}

int cmd_profile(int argc, char **argv)
{
    args_t a = {.val = -1, .seed = -1, .test = 10000, .warmup = 100, .threads = 1};
    char modelbuf[1024], outbuf[1100];
    client_opts_init(&a.o);
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    if (a.from_cluster)
        return save_live(&a);
    if (!a.model)
        a.model = cli_default_path(DEFAULT_MODEL, modelbuf, sizeof modelbuf);
    if (!a.out) {
        size_t len = strlen(a.model), ext = strlen(".safetensors");
        if (len > ext && !strcmp(a.model + len - ext, ".safetensors"))
            len -= ext;
        snprintf(outbuf, sizeof outbuf, "%.*s.profile", (int)len, a.model);
        a.out = outbuf;
    }
    model_split(a.model, &a.val, &a.seed);
    a.val = a.val < 1 ? 5000 : a.val;
    a.seed = a.seed < 0 ? 1 : a.seed;
    openblas_set_num_threads((int)a.threads);
    ei_err_t err = {0};
    nn_model_t *m = nn_model_load(a.model, 1, &err);
    if (!m)
        return cli_fail("profile", "%s", err.msg);
    if ((rc = cli_check_data("profile", a.model, nn_model_input_shape(m), a.data,
                             "train,test")) != CLI_OK) {
        nn_model_destroy(&m);
        return rc;
    }
    nn_model_prepare_inference(m);
    nn_dataset_t *train = nn_dataset_load(a.data, "train", &err);
    nn_dataset_t *test = train ? nn_dataset_load(a.data, "test", &err) : NULL;
    if (test && (a.val >= train->count || a.test > test->count))
        rc = cli_usage_error("profile", "--val %ld / --test %ld: the splits have %d and %d", a.val,
                             a.test, train->count, test->count);
    else if (!test)
        rc = cli_fail("profile", "%s", err.msg);
    else if (run(m, train, test, &a, &err))
        rc = cli_fail("profile", "%s", err.msg);
    nn_dataset_destroy(&train);
    nn_dataset_destroy(&test);
    nn_model_destroy(&m);
    return rc;
}
