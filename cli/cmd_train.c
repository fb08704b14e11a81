/* einet train: joint training of a multi-exit model on Fashion-MNIST. */
#include <cblas.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "nn/dataset.h"
#include "nn/model.h"
#include "nn/train.h"

#define DEFAULT_ARCH "configs/models/fmnist-8exit.json"

static const char usage_text[] =
    "usage: einet train [--arch FILE] [--epochs N] [--out FILE] [options]\n"
    "  --arch FILE         architecture file (default " DEFAULT_ARCH ")\n"
    "  --init FILE         start from this model file's weights (a second training stage;\n"
    "                      its architecture must be --arch's when both are given)\n"
    "  --out FILE          model file to write (default model.safetensors)\n"
    "  --epochs N          epochs (default 15)\n"
    "  --batch N           batch size (default 128)\n"
    "  --lr X              peak learning rate (default 0.05 for sgd, 0.001 for adam)\n"
    "  --optimizer NAME    sgd (Nesterov momentum) or adam (default sgd)\n"
    "  --schedule NAME     cosine, step or const (default cosine)\n"
    "  --momentum X        SGD momentum (default 0.9)\n"
    "  --weight-decay X    on conv and dense weights (default 5e-4)\n"
    "  --seed N            initialisation, shuffling and split seed (default 1)\n"
    "  --val N             validation samples carved from the training set (default 5000)\n"
    "  --limit N           train on the first N of the remaining samples only\n"
    "  --no-flip           no random horizontal flips\n"
    "  --shift N           random translations by up to N pixels per axis (default 0)\n"
    "  --threads N         threads the engine shares each batch among (default 2)\n"
    "  --data DIR          Fashion-MNIST directory (default " NN_DATASET_DEFAULT_DIR ")\n";

typedef struct {
    const char *arch, *out, *data, *init;
    long val, limit, threads;
    nn_train_opts_t opts;
    int lr_given;
} train_args_t;

static int parse_choice(const char *s, const char *const *names, int count)
{
    for (int i = 0; i < count; i++)
        if (!strcmp(s, names[i]))
            return i;
    return -1;
}

static int parse_args(int argc, char **argv, train_args_t *a)
{
    static const struct option longopts[] = {
        {"arch", required_argument, 0, 'a'},     {"out", required_argument, 0, 'o'},
        {"epochs", required_argument, 0, 'e'},   {"batch", required_argument, 0, 'b'},
        {"lr", required_argument, 0, 'l'},       {"optimizer", required_argument, 0, 'O'},
        {"schedule", required_argument, 0, 'S'}, {"momentum", required_argument, 0, 'm'},
        {"weight-decay", required_argument, 0, 'w'}, {"seed", required_argument, 0, 's'},
        {"val", required_argument, 0, 'v'},      {"limit", required_argument, 0, 'L'},
        {"no-flip", no_argument, 0, 'F'},        {"threads", required_argument, 0, 't'},
        {"shift", required_argument, 0, 'X'},    {"init", required_argument, 0, 'I'},
        {"data", required_argument, 0, 'd'},     {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    static const char *const opt_names[] = {"sgd", "adam"};
    static const char *const sched_names[] = {"cosine", "step", "const"};
    long v;
    int c, i;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'a': a->arch = optarg; break;
        case 'I': a->init = optarg; break;
        case 'o': a->out = optarg; break;
        case 'd': a->data = optarg; break;
        case 'F': a->opts.augment_flip = 0; break;
        case 'h': fputs(usage_text, stdout); return -1;
        case 'e':
            if (cli_parse_long(optarg, 1, 1000, &v))
                return cli_usage_error("train", "--epochs: '%s' is not in [1, 1000]", optarg);
            a->opts.epochs = (int)v;
            break;
        case 'b':
            if (cli_parse_long(optarg, 1, 4096, &v))
                return cli_usage_error("train", "--batch: '%s' is not in [1, 4096]", optarg);
            a->opts.batch = (int)v;
            break;
        case 's':
            if (cli_parse_long(optarg, 0, 1L << 40, &v))
                return cli_usage_error("train", "--seed: '%s' is not a non-negative integer",
                                       optarg);
            a->opts.seed = (uint64_t)v;
            break;
        case 'v':
            if (cli_parse_long(optarg, 0, 50000, &a->val))
                return cli_usage_error("train", "--val: '%s' is not in [0, 50000]", optarg);
            break;
        case 'L':
            if (cli_parse_long(optarg, 1, 60000, &a->limit))
                return cli_usage_error("train", "--limit: '%s' is not in [1, 60000]", optarg);
            break;
        case 'X':
            if (cli_parse_long(optarg, 0, 8, &v))
                return cli_usage_error("train", "--shift: '%s' is not in [0, 8]", optarg);
            a->opts.augment_shift = (int)v;
            break;
        case 't':
            if (cli_parse_long(optarg, 1, 64, &a->threads))
                return cli_usage_error("train", "--threads: '%s' is not in [1, 64]", optarg);
            break;
        case 'l':
            if (cli_parse_double(optarg, 1e-9, 10, &a->opts.lr))
                return cli_usage_error("train", "--lr: '%s' is not in (0, 10]", optarg);
            a->lr_given = 1;
            break;
        case 'm':
            if (cli_parse_double(optarg, 0, 0.999, &a->opts.momentum))
                return cli_usage_error("train", "--momentum: '%s' is not in [0, 0.999]", optarg);
            break;
        case 'w':
            if (cli_parse_double(optarg, 0, 1, &a->opts.weight_decay))
                return cli_usage_error("train", "--weight-decay: '%s' is not in [0, 1]", optarg);
            break;
        case 'O':
            if ((i = parse_choice(optarg, opt_names, 2)) < 0)
                return cli_usage_error("train", "--optimizer: '%s' is not sgd or adam", optarg);
            a->opts.optimizer = (nn_optimizer_t)i;
            break;
        case 'S':
            if ((i = parse_choice(optarg, sched_names, 3)) < 0)
                return cli_usage_error("train", "--schedule: '%s' is not cosine, step or const",
                                       optarg);
            a->opts.schedule = (nn_schedule_t)i;
            break;
        default:
            return cli_bad_option("train", argv, optind);
        }
    }
    if (optind < argc)
        return cli_usage_error("train", "unexpected argument '%s'", argv[optind]);
    if (a->opts.optimizer == NN_OPT_ADAM && !a->lr_given)
        a->opts.lr = 0.001;
    return 0;
}

static int run_training(const train_args_t *a, nn_model_t *m, const nn_dataset_t *train)
{
    ei_err_t err = {0};
    int n_val = (int)a->val, n_rest = train->count - n_val;
    int *tr = ei_calloc((size_t)n_rest, sizeof(int)), *va = ei_calloc((size_t)n_val + 1, sizeof(int));
    if (!tr || !va) {
        free(tr);
        free(va);
        return cli_fail("train", "out of memory");
    }
    nn_dataset_split(train->count, n_val, a->opts.seed, tr, va);
    int n_train = a->limit && a->limit < n_rest ? (int)a->limit : n_rest;
    fprintf(stderr, "einet train: %s, %zu parameters, %d training and %d validation samples\n",
            nn_model_name(m), nn_model_param_count(m), n_train, n_val);
    double t0 = ei_now();
    int rc = nn_train(m, train, tr, n_train, va, n_val, &a->opts, &err);
    double secs = ei_now() - t0;
    free(tr);
    free(va);
    if (rc)
        return cli_fail("train", "%s", err.msg);
    char info[512];
    snprintf(info, sizeof info,
             "{\"epochs\":%d,\"batch\":%d,\"lr\":%g,\"optimizer\":\"%s\",\"seed\":%llu,"
             "\"val\":%d,\"train_samples\":%d,\"flip\":%d,\"shift\":%d,\"init\":\"%s\","
             "\"train_seconds\":%.0f}",
             a->opts.epochs, a->opts.batch, a->opts.lr,
             a->opts.optimizer == NN_OPT_SGD ? "sgd" : "adam",
             (unsigned long long)a->opts.seed, n_val, n_train, a->opts.augment_flip,
             a->opts.augment_shift, a->init ? a->init : "", secs);
    if (nn_model_save(m, a->out, info, &err))
        return cli_fail("train", "%s", err.msg);
    fprintf(stderr, "einet train: wrote %s after %.0f s\n", a->out, secs);
    return CLI_OK;
}

/* The model to train: built from the architecture and initialised from the seed, or the
 * weights of --init (whose architecture must be the one named). */
static nn_model_t *init_model(const train_args_t *a, ei_err_t *err)
{
    nn_model_t *m = nn_model_load_arch(a->arch, a->opts.batch, err);
    if (!m || !a->init) {
        if (m)
            nn_model_init(m, a->opts.seed);
        return m;
    }
    nn_model_t *from = nn_model_load(a->init, a->opts.batch, err);
    if (from && strcmp(nn_model_arch_json(from), nn_model_arch_json(m)) != 0) {
        ei_err_set(err, EI_E_SHAPE, "--init %s: its architecture (%s) is not %s's (%s)", a->init,
                   nn_model_name(from), a->arch, nn_model_name(m));
        nn_model_destroy(&from);
    }
    nn_model_destroy(&m);
    return from;
}

int cmd_train(int argc, char **argv)
{
    char archbuf[1024];
    train_args_t a = {.arch = NULL, .out = "model.safetensors", .val = 5000, .threads = 2};
    nn_train_opts_default(&a.opts);
    a.opts.progress = isatty(STDERR_FILENO);
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    if (!a.arch)
        a.arch = cli_default_path(DEFAULT_ARCH, archbuf, sizeof archbuf);
    ei_err_t err = {0};
    nn_shape_t input;
    /* The input first: blocks built for another size can fail with a less telling error. */
    if (nn_arch_file_input(a.arch, &input, &err))
        return cli_fail("train", "%s", err.msg);
    if ((rc = cli_check_data("train", a.arch, input, a.data, "train")) != CLI_OK)
        return rc;
    if (nn_set_threads((int)a.threads))
        return cli_fail("train", "could not start %ld threads", a.threads);
    nn_model_t *m = init_model(&a, &err);
    if (!m)
        return cli_fail("train", "%s", err.msg);
    nn_dataset_t *train = nn_dataset_load(a.data, "train", &err);
    if (!train) {
        nn_model_destroy(&m);
        return cli_fail("train", "%s", err.msg);
    }
    if (a.val >= train->count)
        rc = cli_usage_error("train", "--val %ld leaves no training samples", a.val);
    else
        rc = run_training(&a, m, train);
    nn_dataset_destroy(&train);
    nn_model_destroy(&m);
    return rc;
}
