/* einet predictor: trains a CS-Predictor on the validation CS-profile, reports its error on
 * the test CS-profile and the cost of one call, and writes it (safetensors). */
#include <cblas.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "planner/predictor.h"
#include "planner/profile.h"

#define DEFAULT_PROFILES "models/fmnist-8exit.profile"

static const char usage_text[] =
    "usage: einet predictor train [--profiles DIR] [--kind KIND] [--out FILE] [options]\n"
    "       einet predictor eval [--profiles DIR] FILE\n"
    "train: trains a CS-Predictor on DIR/" PROFILE_CS_VAL_FILE " (EINet Fig. 4 patterns,\n"
    "masked loss, Adam with gradient clipping), prints its MSE on DIR/" PROFILE_CS_TEST_FILE
    "\nand the time of one call, and writes it. eval: the same report for a predictor file.\n"
    "  --profiles DIR   profile directory (default: the shipped " DEFAULT_PROFILES ")\n"
    "  --kind KIND      confidence (EINet's: confidences in, confidences out) or\n"
    "                   correctness (softmax evidence in, probability of being right out;\n"
    "                   the default)\n"
    "  --out FILE       predictor file (default DIR/predictor-KIND.safetensors)\n"
    "  --epochs N       passes over the samples (default 40)\n"
    "  --patterns N     evidence patterns per sample and epoch (default 8)\n"
    "  --hidden H1,H2   hidden sizes (default 256,128 for n <= 30 exits, 2048,1024 above;\n"
    "                   a quarter of those for the correctness kind)\n"
    "  --batch N        batch size (default 256)\n"
    "  --lr X           Adam step (default 0.001)\n"
    "  --clip X         gradient clipping: largest global norm (default 1)\n"
    "  --holdout X      share of the samples kept to pick the best epoch (default 0.1)\n"
    "  --seed N         initialisation and pattern seed (default 1)\n"
    "  --quiet          no line per epoch\n";

typedef struct {
    int train;
    const char *dir, *out, *file;
    int quiet;
    predictor_opts_t o;
} args_t;

static int bad_value(const char *flag, const char *what)
{
    return cli_usage_error("predictor", "%s: '%s' is not %s", flag, optarg, what);
}

static int parse_option(int c, args_t *a)
{
    long v;
    double d;
    switch (c) {
    case 'p':
        a->dir = optarg;
        return 0;
    case 'o':
        a->out = optarg;
        return 0;
    case 'q':
        a->quiet = 1;
        return 0;
    case 'k':
        return predictor_kind_parse(optarg, &a->o.kind) ? bad_value("--kind", "confidence or "
                                                                              "correctness")
                                                        : 0;
    case 'e':
        if (cli_parse_long(optarg, 1, 100000, &v))
            return bad_value("--epochs", "in [1, 100000]");
        a->o.epochs = (int)v;
        return 0;
    case 'n':
        if (cli_parse_long(optarg, 1, 1000, &v))
            return bad_value("--patterns", "in [1, 1000]");
        a->o.patterns = (int)v;
        return 0;
    case 'b':
        if (cli_parse_long(optarg, 1, 65536, &v))
            return bad_value("--batch", "in [1, 65536]");
        a->o.batch = (int)v;
        return 0;
    case 's':
        if (cli_parse_long(optarg, 0, 0x7fffffffL, &v))
            return bad_value("--seed", "a non-negative integer");
        a->o.seed = (uint64_t)v;
        return 0;
    case 'H': {
        char tail;
        if (sscanf(optarg, "%d,%d%c", &a->o.hidden1, &a->o.hidden2, &tail) != 2 ||
            a->o.hidden1 < 1 || a->o.hidden2 < 1 || a->o.hidden1 > 4096 || a->o.hidden2 > 4096)
            return bad_value("--hidden", "two sizes H1,H2 in [1, 4096]");
        return 0;
    }
    case 'l':
        if (cli_parse_double(optarg, 1e-9, 10, &d))
            return bad_value("--lr", "in [1e-9, 10]");
        a->o.lr = d;
        return 0;
    case 'c':
        if (cli_parse_double(optarg, 0, 1e9, &d))
            return bad_value("--clip", "a non-negative number");
        a->o.clip = d;
        return 0;
    case 'x':
        if (cli_parse_double(optarg, 0, 0.9, &d))
            return bad_value("--holdout", "in [0, 0.9]");
        a->o.holdout = d;
        return 0;
    }
    return -1;
}

/* 0 to go on, -1 after --help, else a usage error's exit code. */
static int parse_args(int argc, char **argv, args_t *a)
{
    static const struct option longopts[] = {
        {"profiles", required_argument, 0, 'p'}, {"kind", required_argument, 0, 'k'},
        {"out", required_argument, 0, 'o'},      {"epochs", required_argument, 0, 'e'},
        {"patterns", required_argument, 0, 'n'}, {"hidden", required_argument, 0, 'H'},
        {"batch", required_argument, 0, 'b'},    {"lr", required_argument, 0, 'l'},
        {"clip", required_argument, 0, 'c'},     {"holdout", required_argument, 0, 'x'},
        {"seed", required_argument, 0, 's'},     {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_USAGE : -1;
    }
    if (strcmp(argv[1], "train") && strcmp(argv[1], "eval"))
        return cli_usage_error("predictor", "unknown subcommand '%s' (train or eval)", argv[1]);
    a->train = !strcmp(argv[1], "train");
    int c, rc = 0;
    opterr = 0;
    optind = 2;
    while (!rc && (c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c == 'h') {
            fputs(usage_text, stdout);
            return -1;
        }
        rc = parse_option(c, a);
        if (rc < 0)
            return cli_bad_option("predictor", argv, optind);
    }
    if (rc)
        return rc;
    if (!a->train && optind == argc - 1)
        a->file = argv[optind++];
    else if (!a->train)
        return cli_usage_error("predictor", "eval takes one predictor file");
    if (optind < argc)
        return cli_usage_error("predictor", "unexpected argument '%s'", argv[optind]);
    return 0;
}

/* Mean wall time of one predictor call over the test samples' prefix patterns, in us. */
static double time_call(predictor_t *p, const profile_cs_t *cs)
{
    int n = predictor_exits(p), calls = 0;
    uint8_t executed[PLANNER_MAX_EXITS];
    double scores[PLANNER_MAX_EXITS];
    double t0 = ei_now();
    for (int s = 0; s < profile_cs_count(cs) && calls < 20000; s++)
        for (int x = 1; x < n; x++, calls++) {
            for (int j = 0; j < n; j++)
                executed[j] = j < x;
            predictor_predict(p, profile_cs_probs(cs, s), executed, x, scores);
        }
    return calls ? 1e6 * (ei_now() - t0) / calls : 0;
}

static int report(predictor_t *p, const profile_cs_t *test, predictor_eval_t *ev, double *call_us,
                  ei_err_t *err)
{
    int rc = predictor_evaluate(p, test, ev, err);
    if (rc)
        return rc;
    int h1, h2;
    predictor_hidden(p, &h1, &h2);
    *call_us = time_call(p, test);
    printf("%s predictor (%d inputs, hidden %d,%d, %d exits): test MSE %.5f over %ld outputs "
           "(best constant per exit %.5f)",
           predictor_kind_name(predictor_kind(p)), predictor_inputs(p), h1, h2, predictor_exits(p),
           ev->mse, ev->outputs, ev->const_mse);
    if (predictor_kind(p) == PREDICTOR_CORRECTNESS)
        printf(", BCE %.5f", ev->bce);
    printf("; %.2f us per call\n", *call_us);
    return 0;
}

static int train(const args_t *a, const char *dir, ei_err_t *err)
{
    char path[4096], out[4096], info[512];
    snprintf(path, sizeof path, "%s/%s", dir, PROFILE_CS_VAL_FILE);
    profile_cs_t *val = profile_cs_load(path, err);
    snprintf(path, sizeof path, "%s/%s", dir, PROFILE_CS_TEST_FILE);
    profile_cs_t *test = val ? profile_cs_load(path, err) : NULL;
    predictor_t *p = test ? predictor_train(val, &a->o, err) : NULL;
    predictor_eval_t ev;
    double call_us;
    int rc = p ? report(p, test, &ev, &call_us, err) : err->code;
    if (!rc) {
        snprintf(out, sizeof out, "%s/predictor-%s.safetensors", dir,
                 predictor_kind_name(a->o.kind));
        snprintf(info, sizeof info,
                 "{\"test_mse\":%.6g,\"test_bce\":%.6g,\"test_const_mse\":%.6g,\"call_us\":%.3g,"
                 "\"epochs\":%d,\"patterns\":%d,\"lr\":%g,\"clip\":%g,\"seed\":%llu,"
                 "\"val_samples\":%d}",
                 ev.mse, ev.bce, ev.const_mse, call_us, a->o.epochs, a->o.patterns, a->o.lr,
                 a->o.clip, (unsigned long long)a->o.seed, profile_cs_count(val));
        rc = predictor_save(p, a->out ? a->out : out, profile_cs_model(val), info, err);
        if (!rc)
            fprintf(stderr, "einet predictor: wrote %s\n", a->out ? a->out : out);
    }
    predictor_destroy(&p);
    profile_cs_destroy(&val);
    profile_cs_destroy(&test);
    return rc;
}

static int eval(const args_t *a, const char *dir, ei_err_t *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, PROFILE_CS_TEST_FILE);
    profile_cs_t *test = profile_cs_load(path, err);
    predictor_t *p = test ? predictor_load(a->file, err) : NULL;
    predictor_eval_t ev;
    double call_us;
    int rc = p ? report(p, test, &ev, &call_us, err) : err->code;
    predictor_destroy(&p);
    profile_cs_destroy(&test);
    return rc;
}

int cmd_predictor(int argc, char **argv)
{
    args_t a = {0};
    predictor_opts_default(&a.o);
    a.o.kind = PREDICTOR_CORRECTNESS;
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    a.o.log = a.quiet ? NULL : stderr;
    char dirbuf[1024];
    const char *dir = a.dir ? a.dir : cli_default_path(DEFAULT_PROFILES, dirbuf, sizeof dirbuf);
    openblas_set_num_threads(1);
    ei_err_t err = {0};
    rc = a.train ? train(&a, dir, &err) : eval(&a, dir, &err);
    return rc ? cli_fail("predictor", "%s", err.msg) : CLI_OK;
}
