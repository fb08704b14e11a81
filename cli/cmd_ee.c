/* einet ee-search and ee-eval: the class-specific early exits of Bonato &
 * Bouganis on the baseline B (the default backbone with its final exit only):
 * the design-space search with its Table-3-like report, and the test-split
 * evaluation of a saved EE. */
#include <cblas.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "nn/dataset.h"
#include "nn/ee.h"
#include "nn/ee_search.h"
#include "nn/model.h"
#include "nn/safetensors.h"
#include "planner/profile.h"

#define DEFAULT_MODEL "models/fmnist-8exit.safetensors"
#define BANK_BATCH 256
#define TIME_SAMPLES 200

static const char search_usage[] =
    "usage: einet ee-search (--target K | --all-classes) [options]\n"
    "Class-specific early exits (Bonato & Bouganis): for every conv layer i of B (the model's\n"
    "backbone with its final exit only) and each KP setting, trains an EE branch with B\n"
    "frozen, sweeps alpha over [0.95, 1.0], keeps the points that meet constraints (5)-(7) on\n"
    "the validation split with a time gain, picks the largest gain/loss on the Pareto front\n"
    "and reports it on the test split. docs/ee.md.\n"
    "  --model FILE       model file (default: the shipped " DEFAULT_MODEL ")\n"
    "  --target K         one target class (0-based)\n"
    "  --all-classes      every class: a Table-3-like table (markdown, or JSON with --json)\n"
    "  --kp on|off|both   KP settings to try (default both)\n"
    "  --alpha-step S     alpha grid step over [0.95, 1.0] (default 0.01)\n"
    "  --layers A-B       only conv layers A..B (1-based, default all)\n"
    "  --pool S           each tapped map is average-pooled to min(S, its side) per side\n"
    "                     (default 4)\n"
    "  --train-limit N    training rows for the EEs, from the model's training split\n"
    "                     (default 30000; the split has 60000 minus the validation samples)\n"
    "  --patience N       early-stopping patience in epochs (default 10)\n"
    "  --seed N           EE initialisation and sampling seed (default 1)\n"
    "  --save DIR         write each chosen EE to DIR/ee-class<K>.safetensors\n"
    "  --et FILE|measure  B's block times: an ET-profile (einet profile), or measured here at\n"
    "                     batch 1 (default: the model's .profile/et.json if it exists, else\n"
    "                     measured); each EE's own time is always measured\n"
    "  --json             JSON instead of a table\n"
    "  --threads N        OpenBLAS threads for running B over the images (default 2; timing\n"
    "                     and EE training use 1)\n"
    "  --data DIR         Fashion-MNIST directory (default " NN_DATASET_DEFAULT_DIR ")\n";

static const char eval_usage[] =
    "usage: einet ee-eval --ee FILE [--model FILE] [--json] [options]\n"
    "Evaluates a saved class-specific EE with its baseline on the test split: constraints\n"
    "(5)-(7) against B's own test accuracies, gain and loss from batch-1 times, precision.\n"
    "  --ee FILE          EE file (from einet ee-search --save)\n"
    "  --model FILE       its backbone (default: the path recorded in the EE file)\n"
    "  --samples N        only the first N test images (default all 10000)\n"
    "  --et FILE|measure  B's block times (default as ee-search: the model's ET-profile)\n"
    "  --json             one JSON object\n"
    "  --threads N        OpenBLAS threads for running B (default 2; timing uses 1)\n"
    "  --data DIR         Fashion-MNIST directory (default " NN_DATASET_DEFAULT_DIR ")\n";

static const char *const fmnist_names[10] = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                             "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                             "Bag",         "Ankle boot"};

static const char *class_name(int k, int classes)
{
    return classes == 10 && k >= 0 && k < 10 ? fmnist_names[k] : "";
}

/* ---- shared ---- */

/* A number, or null when it is not finite (an empty denominator). */
static json_t *jnum(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *figures_json(const ee_search_figures_t *f)
{
    json_t *o = json_object();
    json_object_set_new(o, "alpha", json_real(f->alpha));
    json_object_set_new(o, "gamma", jnum(f->gamma));
    json_object_set_new(o, "t_ms", jnum(f->t_ms));
    json_object_set_new(o, "delta_ms", jnum(f->delta_ms));
    json_object_set_new(o, "e_ms", jnum(f->e_ms));
    json_object_set_new(o, "t2_ms", jnum(f->t2_ms));
    json_object_set_new(o, "gain", jnum(f->gain));
    json_object_set_new(o, "loss", jnum(f->loss));
    json_object_set_new(o, "beta", jnum(f->beta));
    json_object_set_new(o, "eta", jnum(f->eta));
    json_object_set_new(o, "zeta", jnum(f->zeta));
    json_object_set_new(o, "acc_b_v_minus_k", jnum(f->acc_b));
    json_object_set_new(o, "acc_ee", jnum(f->acc_ee));
    json_object_set_new(o, "acc_ee_global", jnum(f->acc_g));
    json_object_set_new(o, "precision", jnum(f->precision));
    json_object_set_new(o, "c5", json_boolean(f->c5));
    json_object_set_new(o, "c6", json_boolean(f->c6));
    json_object_set_new(o, "c7", json_boolean(f->c7));
    json_object_set_new(o, "constraints_met", json_boolean(f->met));
    json_object_set_new(o, "samples", json_integer(f->c.n));
    json_object_set_new(o, "k_samples", json_integer(f->c.k));
    json_object_set_new(o, "tp_ee", json_integer(f->c.tp_ee));
    json_object_set_new(o, "fp_ee", json_integer(f->c.fp_ee));
    return o;
}

static json_t *times_json(const ee_search_times_t *t, const char *source)
{
    json_t *conv = json_array();
    for (int k = 0; k < t->n; k++)
        json_array_append_new(conv, json_real(t->conv_ms[k]));
    return json_pack("{s:f, s:o, s:f, s:s}", "t_ms", ee_search_t_ms(t), "conv_ms", conv,
                     "final_branch_ms", t->final_branch_ms, "source", source);
}

static void print_json(json_t *root)
{
    char *text = json_dumps(root, JSON_REAL_PRECISION(6) | JSON_INDENT(1));
    if (text)
        puts(text);
    free(text);
    json_decref(root);
}

/* Seed and validation size of the model's training split from its "info"
 * metadata (the defaults of einet train when absent). */
static void model_split(const char *path, uint64_t *seed, int *n_val)
{
    *seed = 1, *n_val = 5000;
    nn_st_file_t *f = nn_st_open(path, NULL);
    const char *info = f ? nn_st_meta(f, "info") : NULL;
    json_t *j = info ? json_loads(info, 0, NULL) : NULL;
    json_t *s = json_object_get(j, "seed"), *v = json_object_get(j, "val");
    if (json_is_integer(s) && json_integer_value(s) >= 0)
        *seed = (uint64_t)json_integer_value(s);
    if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) < 60000)
        *n_val = (int)json_integer_value(v);
    json_decref(j);
    nn_st_close(&f);
}

/* B's block times, from one place: an ET-profile (et a path; NULL: the model's
 * own
 * "<model>.profile/et.json" when it exists) or measured here on
 * data[idx[0..count-1]] at batch 1 with one thread, as the tiers run the blocks
 * (et "measure", or no profile). source (len bytes) says which. */
static int load_times(const char *et, const char *model_path, nn_model_t *m,
                      const nn_dataset_t *data, const int *idx, int count, ee_search_times_t *t,
                      char *source, size_t len, ei_err_t *err)
{
    char def[1200];
    if (!et) {
        size_t n = strlen(model_path), ext = strlen(".safetensors");
        int cut =
            n > ext && !strcmp(model_path + n - ext, ".safetensors") ? (int)(n - ext) : (int)n;
        snprintf(def, sizeof def, "%.*s.profile/" PROFILE_ET_FILE, cut, model_path);
        et = access(def, R_OK) == 0 ? def : "measure";
    }
    if (!strcmp(et, "measure")) {
        openblas_set_num_threads(1);
        snprintf(source, len, "measured here: batch 1, 1 thread, medians over %d images", count);
        return ee_search_times_measure(m, data, idx, count, t, err);
    }
    profile_et_t p;
    int rc = profile_et_load(et, &p, err);
    if (rc)
        return rc;
    int n = nn_model_blocks(m);
    if (p.times.n != n)
        return ei_err_set(err, EI_E_SHAPE, "%s: ET-profile of %d blocks, the model has %d", et,
                          p.times.n, n);
    if (strcmp(p.model, nn_model_name(m)))
        return ei_err_set(err, EI_E_INVAL, "%s: ET-profile of model '%s', not '%s'", et, p.model,
                          nn_model_name(m));
    t->n = n;
    for (int k = 0; k < n; k++)
        t->conv_ms[k] = p.times.conv_ms[k];
    t->final_branch_ms = p.times.branch_ms[n - 1];
    snprintf(source, len, "ET-profile %s: means of %d samples at batch %d, %d thread%s", et,
             p.samples, p.batch, p.threads, p.threads == 1 ? "" : "s");
    return 0;
}

static const char *ok_mark(int ok)
{
    return ok ? "yes" : "NO";
}

/* ---- ee-search ---- */

typedef struct search_args {
    const char *model, *save, *data, *et;
    int target, all, json;
    long pool, train_limit, threads, layer_lo, layer_hi, patience, seed;
    ee_search_opts_t opts;
} search_args_t;

static int parse_kp(const char *s, ee_search_opts_t *o)
{
    if (!strcmp(s, "on"))
        o->kp_on = 1, o->kp_off = 0;
    else if (!strcmp(s, "off"))
        o->kp_on = 0, o->kp_off = 1;
    else if (!strcmp(s, "both"))
        o->kp_on = 1, o->kp_off = 1;
    else
        return -1;
    return 0;
}

static int parse_layers(const char *s, long *lo, long *hi)
{
    int used = 0;
    if (sscanf(s, "%ld-%ld%n", lo, hi, &used) == 2 && !s[used] && *lo >= 1 && *hi >= *lo &&
        *hi <= EE_MAX_LAYERS)
        return 0;
    used = 0;
    if (sscanf(s, "%ld%n", lo, &used) == 1 && !s[used] && *lo >= 1 && *lo <= EE_MAX_LAYERS) {
        *hi = *lo;
        return 0;
    }
    return -1;
}

static int search_parse(int argc, char **argv, search_args_t *a)
{
    static const struct option longopts[] = {{"model", required_argument, 0, 'm'},
                                             {"target", required_argument, 0, 'k'},
                                             {"all-classes", no_argument, 0, 'A'},
                                             {"kp", required_argument, 0, 'K'},
                                             {"alpha-step", required_argument, 0, 'a'},
                                             {"layers", required_argument, 0, 'L'},
                                             {"pool", required_argument, 0, 'p'},
                                             {"train-limit", required_argument, 0, 'l'},
                                             {"patience", required_argument, 0, 'P'},
                                             {"seed", required_argument, 0, 's'},
                                             {"save", required_argument, 0, 'S'},
                                             {"json", no_argument, 0, 'j'},
                                             {"threads", required_argument, 0, 't'},
                                             {"data", required_argument, 0, 'd'},
                                             {"et", required_argument, 0, 'E'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    long target = -1;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'm':
            a->model = optarg;
            break;
        case 'A':
            a->all = 1;
            break;
        case 'S':
            a->save = optarg;
            break;
        case 'E':
            a->et = optarg;
            break;
        case 'j':
            a->json = 1;
            break;
        case 'd':
            a->data = optarg;
            break;
        case 'h':
            fputs(search_usage, stdout);
            return -1;
        case 'k':
            if (cli_parse_long(optarg, 0, 255, &target))
                return cli_usage_error("ee-search", "--target: '%s' is not a class in [0, 255]",
                                       optarg);
            break;
        case 'K':
            if (parse_kp(optarg, &a->opts))
                return cli_usage_error("ee-search", "--kp: '%s' is not on, off or both", optarg);
            break;
        case 'a':
            if (cli_parse_double(optarg, 1e-4, 0.05, &a->opts.alpha_step))
                return cli_usage_error("ee-search", "--alpha-step: '%s' is not in [0.0001, 0.05]",
                                       optarg);
            break;
        case 'L':
            if (parse_layers(optarg, &a->layer_lo, &a->layer_hi))
                return cli_usage_error("ee-search",
                                       "--layers: '%s' is not A-B or A with 1 <= A <= B", optarg);
            break;
        case 'p':
            if (cli_parse_long(optarg, 1, 64, &a->pool))
                return cli_usage_error("ee-search", "--pool: '%s' is not in [1, 64]", optarg);
            break;
        case 'l':
            if (cli_parse_long(optarg, 10, 1000000, &a->train_limit))
                return cli_usage_error("ee-search", "--train-limit: '%s' is not in [10, 1000000]",
                                       optarg);
            break;
        case 'P':
            if (cli_parse_long(optarg, 1, 1000, &a->patience))
                return cli_usage_error("ee-search", "--patience: '%s' is not in [1, 1000]", optarg);
            break;
        case 's':
            if (cli_parse_long(optarg, 0, 0x7fffffffL, &a->seed))
                return cli_usage_error("ee-search", "--seed: '%s' is not a non-negative integer",
                                       optarg);
            break;
        case 't':
            if (cli_parse_long(optarg, 1, 256, &a->threads))
                return cli_usage_error("ee-search", "--threads: '%s' is not in [1, 256]", optarg);
            break;
        default:
            return cli_bad_option("ee-search", argv, optind);
        }
    }
    if (optind < argc)
        return cli_usage_error("ee-search", "unexpected argument '%s'", argv[optind]);
    if ((target >= 0) == a->all)
        return cli_usage_error("ee-search", "give exactly one of --target K and --all-classes");
    a->target = (int)target;
    return 0;
}

/* Everything a search run loads. */
typedef struct search_run {
    nn_model_t *m;
    nn_dataset_t *train, *test;
    int *tr, *va, n_train, n_val;
    ee_search_times_t times;
    char times_source[1400];
    ee_search_bank_t *bank;
    char fnv[17];
    int refused; /* an exit code cli_check_data already reported */
} search_run_t;

static void run_free(search_run_t *r)
{
    ee_search_bank_destroy(&r->bank);
    free(r->tr);
    free(r->va);
    nn_dataset_destroy(&r->train);
    nn_dataset_destroy(&r->test);
    nn_model_destroy(&r->m);
}

static int run_load(const search_args_t *a, search_run_t *r, ei_err_t *err)
{
    int rc;
    if ((rc = ee_file_fnv1a(a->model, r->fnv, err)))
        return rc;
    if (!(r->m = nn_model_load(a->model, BANK_BATCH, err)))
        return err->code;
    if ((r->refused = cli_check_data("ee-search", a->model, nn_model_input_shape(r->m),
                                     a->data, "train,test")))
        return EI_E_SHAPE;
    if (!a->all && a->target >= nn_model_classes(r->m)) /* before minutes of work */
        return ei_err_set(err, EI_E_RANGE, "--target %d: the model %s has %d classes (0..%d)",
                          a->target, a->model, nn_model_classes(r->m),
                          nn_model_classes(r->m) - 1);
    nn_model_prepare_inference(r->m);
    if (!(r->train = nn_dataset_load(a->data, "train", err)) ||
        !(r->test = nn_dataset_load(a->data, "test", err)))
        return err->code;
    uint64_t seed;
    model_split(a->model, &seed, &r->n_val);
    if (r->n_val >= r->train->count)
        return ei_err_set(err, EI_E_RANGE, "validation split of %d samples, %d in the set",
                          r->n_val, r->train->count);
    int rest = r->train->count - r->n_val;
    r->tr = ei_calloc((size_t)rest, sizeof(int));
    r->va = ei_calloc((size_t)r->n_val, sizeof(int));
    if (!r->tr || !r->va)
        return ei_err_set(err, EI_E_NOMEM, "out of memory");
    nn_dataset_split(r->train->count, r->n_val, seed, r->tr, r->va);
    r->n_train = a->train_limit && a->train_limit < rest ? (int)a->train_limit : rest;
    int nt = r->n_val < TIME_SAMPLES ? r->n_val : TIME_SAMPLES;
    if ((rc = load_times(a->et, a->model, r->m, r->train, r->va, nt, &r->times, r->times_source,
                         sizeof r->times_source, err)))
        return rc;
    openblas_set_num_threads((int)a->threads);
    fprintf(stderr,
            "einet ee-search: running B over %d training, %d validation and %d test images\n",
            r->n_train, r->n_val, r->test->count);
    r->bank = ee_search_bank_new(r->m, r->train, r->tr, r->n_train, r->va, r->n_val, r->test,
                                 r->test->count, (int)a->pool, stderr, err);
    openblas_set_num_threads(1);
    return r->bank ? 0 : err->code;
}

static json_t *candidate_json(const ee_search_candidate_t *c)
{
    return json_pack("{s:i, s:s, s:i, s:i, s:f, s:f, s:f, s:i, s:o}", "layer", c->layer, "kp",
                     c->kp ? "on" : "off", "epochs", c->train.epochs, "best_epoch",
                     c->train.best_epoch, "val_balanced_acc", c->train.val_bacc, "train_s",
                     c->train.seconds, "e_ms", c->e_ms, "viable_alphas", c->viable, "best_val",
                     c->viable ? figures_json(&c->best) : json_null());
}

static json_t *result_json(const ee_search_result_t *r, int classes)
{
    json_t *cands = json_array();
    for (int i = 0; i < r->ncand; i++)
        json_array_append_new(cands, candidate_json(&r->cand[i]));
    json_t *chosen = json_null();
    if (r->found) {
        const ee_spec_t *s = ee_spec(r->ee);
        chosen = json_pack("{s:i, s:s, s:f, s:o, s:o}", "layer", s->layer, "kp",
                           s->kp ? "on" : "off", "alpha", s->alpha, "val", figures_json(&r->val),
                           "test", figures_json(&r->test));
    }
    json_t *o = json_pack("{s:i, s:s, s:b}", "target", r->target, "class_name",
                          class_name(r->target, classes), "found", r->found);
    json_object_set_new(o, "beta", jnum(r->beta));
    json_object_set_new(o, "eta", jnum(r->eta));
    json_object_set_new(o, "zeta", jnum(r->zeta));
    json_object_set_new(o, "beta_test", jnum(r->beta_t));
    json_object_set_new(o, "eta_test", jnum(r->eta_t));
    json_object_set_new(o, "zeta_test", jnum(r->zeta_t));
    json_object_set_new(o, "viable_points", json_integer(r->points));
    json_object_set_new(o, "pareto_front", json_integer(r->front));
    json_object_set_new(o, "chosen", chosen);
    json_object_set_new(o, "candidates", cands);
    return o;
}

static void fmt3(char *buf, size_t len, double v)
{
    if (isfinite(v))
        snprintf(buf, len, "%.3f", v);
    else
        snprintf(buf, len, "-");
}

static void print_row(const ee_search_result_t *r, int classes)
{
    printf("| %d | %s |", r->target, class_name(r->target, classes));
    if (!r->found) {
        /* 23 columns: k, class, then KP, i, alpha empty, B's own figures, the verdict. */
        printf(" - | - | - | %.3f | %.3f | %.3f | no feasible EE |", r->beta, r->eta, r->zeta);
        for (int c = 0; c < 11; c++)
            printf(" |");
        printf(" %.3f | %.3f | - |\n", r->beta_t, r->eta_t);
        return;
    }
    const ee_spec_t *s = ee_spec(r->ee);
    const ee_search_figures_t *v = &r->val, *t = &r->test;
    char p[16], pt[16];
    fmt3(p, sizeof p, v->precision);
    fmt3(pt, sizeof pt, t->precision);
    printf(" %s | %d | %g | %.3f | %.3f | %.3f | %.2f | %.2f | %.3f | %.3f | %.3f | %s |",
           s->kp ? "on" : "off", s->layer, s->alpha, v->beta, v->eta, v->zeta, v->gain, v->loss,
           v->acc_b, v->acc_ee, v->acc_g, p);
    printf(" %.2f | %.2f | %.3f | %.3f | %.3f | %s | %.3f | %.3f | %s |\n", t->gain, t->loss,
           t->acc_b, t->acc_ee, t->acc_g, pt, t->beta, t->eta, ok_mark(t->met));
}

static void print_table(const search_args_t *a, const search_run_t *r,
                        const ee_search_result_t *res, int count)
{
    const ee_search_times_t *t = &r->times;
    printf("B = %s (%s) with its final exit only: t = %.4f ms (conv parts", a->model,
           nn_model_name(r->m), ee_search_t_ms(t));
    for (int k = 0; k < t->n; k++)
        printf(" %.4f", t->conv_ms[k]);
    printf(", final branch %.4f); times: %s.\n", t->final_branch_ms, r->times_source);
    printf("EEs trained on %d rows, judged on %d validation rows, reported on %d test rows "
           "(primed); pooling avg:%ld.\n\n",
           r->n_train, r->n_val, r->test->count, a->pool);
    printf("| k | class | KP | i | alpha | beta | eta | zeta | gain | loss | acc B(V-k) | acc EE | "
           "acc EE_G | prec | gain' | loss' | acc B(V-k)' | acc EE' | acc EE_G' | prec' | beta' | "
           "eta' | (5)-(7) hold' |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|--"
           "-|---|\n");
    for (int i = 0; i < count; i++)
        print_row(&res[i], r->bank->classes);
}

static int save_chosen(const search_args_t *a, const search_run_t *r, const ee_search_result_t *res,
                       ei_err_t *err)
{
    if (!res->found)
        return 0;
    mkdir(a->save, 0755); /* an existing directory is fine; a real failure shows
                             at the write */
    char path[4096];
    snprintf(path, sizeof path, "%s/ee-class%d.safetensors", a->save, res->target);
    json_t *info = result_json(res, r->bank->classes);
    json_object_del(info, "candidates");
    json_object_set_new(info, "times", times_json(&r->times, r->times_source));
    char *text = json_dumps(info, JSON_REAL_PRECISION(6) | JSON_COMPACT);
    json_decref(info);
    ee_backbone_ref_t bb = {a->model, nn_model_name(r->m), r->fnv};
    int rc = text ? ee_save(res->ee, path, &bb, text, err)
                  : ei_err_set(err, EI_E_NOMEM, "out of memory");
    free(text);
    if (!rc)
        fprintf(stderr, "einet ee-search: wrote %s\n", path);
    return rc;
}

static int search_all(const search_args_t *a, search_run_t *r, ee_search_result_t *res, int *count,
                      ei_err_t *err)
{
    int lo = a->all ? 0 : a->target, hi = a->all ? r->bank->classes - 1 : a->target;
    if (hi >= r->bank->classes)
        return ei_err_set(err, EI_E_RANGE, "--target %d: the model has %d classes", hi,
                          r->bank->classes);
    *count = 0;
    for (int k = lo; k <= hi; k++) {
        int rc = ee_search_class(r->bank, &r->times, k, &a->opts, &res[(*count)++], err);
        if (!rc && a->save)
            rc = save_chosen(a, r, &res[*count - 1], err);
        if (rc)
            return rc;
    }
    return 0;
}

int cmd_ee_search(int argc, char **argv)
{
    char pathbuf[1024];
    search_args_t a = {.pool = 4, .train_limit = 30000, .threads = 2, .patience = 10, .seed = 1};
    ee_search_opts_default(&a.opts);
    int rc = search_parse(argc, argv, &a);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    if (!a.model)
        a.model = cli_default_path(DEFAULT_MODEL, pathbuf, sizeof pathbuf);
    a.opts.layer_lo = (int)a.layer_lo, a.opts.layer_hi = (int)a.layer_hi;
    a.opts.train.patience = (int)a.patience;
    a.opts.train.seed = (uint64_t)a.seed;
    a.opts.log = stderr;
    double t0 = ei_now();
    ei_err_t err = {0};
    search_run_t r = {0};
    ee_search_result_t *res = ei_calloc(256, sizeof *res);
    int count = 0;
    rc = !res ? ei_err_set(&err, EI_E_NOMEM, "out of memory") : run_load(&a, &r, &err);
    if (!rc)
        rc = search_all(&a, &r, res, &count, &err);
    if (!rc && a.json) {
        json_t *classes = json_array();
        for (int i = 0; i < count; i++)
            json_array_append_new(classes, result_json(&res[i], r.bank->classes));
        json_t *root =
            json_pack("{s:s, s:s, s:s, s:o, s:i, s:f, s:i, s:i, s:i, s:f, s:o}", "model", a.model,
                      "name", nn_model_name(r.m), "model_fnv1a", r.fnv, "times",
                      times_json(&r.times, r.times_source), "pool", (int)a.pool, "alpha_step",
                      a.opts.alpha_step, "train_rows", r.n_train, "val_rows", r.n_val, "test_rows",
                      r.test->count, "seconds", ei_now() - t0, "classes", classes);
        print_json(root);
    } else if (!rc) {
        print_table(&a, &r, res, count);
    }
    for (int i = 0; i < count; i++)
        ee_search_result_clear(&res[i]);
    free(res);
    run_free(&r);
    if (rc)
        return r.refused ? r.refused : cli_fail("ee-search", "%s", err.msg);
    fprintf(stderr, "einet ee-search: done in %.0f s\n", ei_now() - t0);
    return CLI_OK;
}

/* ---- ee-eval ---- */

typedef struct eval_args {
    const char *ee, *model, *data, *et;
    long samples, threads;
    int json;
} eval_args_t;

static int eval_parse(int argc, char **argv, eval_args_t *a)
{
    static const struct option longopts[] = {{"ee", required_argument, 0, 'e'},
                                             {"model", required_argument, 0, 'm'},
                                             {"samples", required_argument, 0, 'n'},
                                             {"json", no_argument, 0, 'j'},
                                             {"threads", required_argument, 0, 't'},
                                             {"data", required_argument, 0, 'd'},
                                             {"help", no_argument, 0, 'h'},
                                             {"et", required_argument, 0, 'E'},
                                             {0, 0, 0, 0}};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'E':
            a->et = optarg;
            break;
        case 'e':
            a->ee = optarg;
            break;
        case 'm':
            a->model = optarg;
            break;
        case 'j':
            a->json = 1;
            break;
        case 'd':
            a->data = optarg;
            break;
        case 'h':
            fputs(eval_usage, stdout);
            return -1;
        case 'n':
            if (cli_parse_long(optarg, 1, 10000, &a->samples))
                return cli_usage_error("ee-eval", "--samples: '%s' is not in [1, 10000]", optarg);
            break;
        case 't':
            if (cli_parse_long(optarg, 1, 256, &a->threads))
                return cli_usage_error("ee-eval", "--threads: '%s' is not in [1, 256]", optarg);
            break;
        default:
            return cli_bad_option("ee-eval", argv, optind);
        }
    }
    if (optind < argc)
        return cli_usage_error("ee-eval", "unexpected argument '%s'", argv[optind]);
    if (!a->ee)
        return cli_usage_error("ee-eval", "--ee FILE is required");
    return 0;
}

/* The backbone path: --model, else the recorded one (relative paths also tried
 * against the source tree); its bytes must be those the EE was made for. */
static int eval_backbone(const eval_args_t *a, const ee_t *ee, char *buf, int len,
                         const char **path, ei_err_t *err)
{
    *path = a->model;
    if (!*path) {
        const char *rec = ee_backbone(ee);
        if (!*rec)
            return ei_err_set(err, EI_E_INVAL, "%s records no backbone: give --model", a->ee);
        /* Copied: the EE (and its metadata) is reloaded against the model later. */
        if (rec[0] == '/')
            snprintf(buf, (size_t)len, "%s", rec);
        *path = rec[0] == '/' ? buf : cli_default_path(rec, buf, len);
    }
    char fnv[17];
    int rc = ee_file_fnv1a(*path, fnv, err);
    if (rc)
        return rc;
    if (*ee_backbone_fnv1a(ee) && strcmp(fnv, ee_backbone_fnv1a(ee)))
        return ei_err_set(
            err, EI_E_INVAL,
            "%s was made for a backbone with FNV-1a %s, %s has %s (a different or retrained model)",
            a->ee, ee_backbone_fnv1a(ee), *path, fnv);
    return 0;
}

static void eval_print(const eval_args_t *a, const char *model, const char *source, const ee_t *ee,
                       const ee_search_figures_t *f)
{
    const ee_spec_t *s = ee_spec(ee);
    if (a->json) {
        json_t *o = figures_json(f);
        json_object_set_new(o, "target", json_integer(s->target));
        json_object_set_new(o, "layer", json_integer(s->layer));
        json_object_set_new(o, "kp", json_string(s->kp ? "on" : "off"));
        json_object_set_new(o, "pooling", json_integer(s->pool));
        json_object_set_new(o, "ee", json_string(a->ee));
        json_object_set_new(o, "model", json_string(model));
        json_object_set_new(o, "times_source", json_string(source));
        print_json(o);
        return;
    }
    char p[16];
    fmt3(p, sizeof p, f->precision);
    printf("EE %s: target %d, after conv layer %d, KP %s, alpha %g, pooling avg:%d\n", a->ee,
           s->target, s->layer, s->kp ? "on" : "off", s->alpha, s->pool);
    printf("backbone %s, %ld test images (%ld of class %d)\n", model, f->c.n, f->c.k, s->target);
    printf("answered at the EE: %ld of class k, %ld others (gamma %.3f, precision %s, B's zeta "
           "%.3f)\n",
           f->c.tp_ee, f->c.fp_ee, f->gamma, p, f->zeta);
    printf("times: t %.4f ms, delta_i %.4f ms, e_i %.4f ms, t'' %.4f ms: gain %.2fx, loss "
           "%.2fx\n(times: %s)\n",
           f->t_ms, f->delta_ms, f->e_ms, f->t2_ms, f->gain, f->loss, source);
    printf("(5) acc B(V-k) %.4f >= beta %.4f: %s\n", f->acc_b, f->beta, ok_mark(f->c5));
    printf("(6) acc EE     %.4f >= eta  %.4f: %s\n", f->acc_ee, f->eta, ok_mark(f->c6));
    printf("(7) acc EE_G   %.4f >= eta  %.4f: %s\n", f->acc_g, f->eta, ok_mark(f->c7));
}

/* *refused: the exit code of a refusal cli_check_data already reported (else 0). */
static int eval_run(const eval_args_t *a, int *refused, ei_err_t *err)
{
    char buf[1024];
    const char *model;
    ee_t *ee = ee_load(a->ee, NULL, BANK_BATCH, err);
    if (!ee)
        return err->code;
    nn_model_t *m = NULL;
    nn_dataset_t *test = NULL;
    ee_search_bank_t *bank = NULL;
    int rc = eval_backbone(a, ee, buf, sizeof buf, &model, err);
    if (rc)
        goto done;
    ee_destroy(&ee); /* reloaded against the model: the taps are checked */
    if (!(m = nn_model_load(model, BANK_BATCH, err)) ||
        !(ee = ee_load(a->ee, m, BANK_BATCH, err))) {
        rc = err->code;
        goto done;
    }
    if ((*refused = cli_check_data("ee-eval", model, nn_model_input_shape(m), a->data, "test"))) {
        rc = EI_E_SHAPE;
        goto done;
    }
    if (!(test = nn_dataset_load(a->data, "test", err))) {
        rc = err->code;
        goto done;
    }
    nn_model_prepare_inference(m);
    int n = a->samples < test->count ? (int)a->samples : test->count;
    ee_search_times_t times;
    char source[1400];
    if ((rc = load_times(a->et, model, m, test, NULL, n < TIME_SAMPLES ? n : TIME_SAMPLES, &times,
                         source, sizeof source, err)))
        goto done;
    openblas_set_num_threads((int)a->threads);
    bank = ee_search_bank_new(m, NULL, NULL, 0, NULL, 0, test, n, ee_spec(ee)->pool, NULL, err);
    openblas_set_num_threads(1);
    if (!bank) {
        rc = err->code;
        goto done;
    }
    double e_ms = ee_search_time_ee(ee, (const nn_tensor_t *const *)bank->taps1, 201);
    ee_search_figures_t f;
    ee_search_eval_rows(ee, bank, 0, n, &times, e_ms, &f);
    eval_print(a, model, source, ee, &f);
done:
    ee_search_bank_destroy(&bank);
    nn_dataset_destroy(&test);
    nn_model_destroy(&m);
    ee_destroy(&ee);
    return rc;
}

int cmd_ee_eval(int argc, char **argv)
{
    eval_args_t a = {.samples = 10000, .threads = 2};
    int rc = eval_parse(argc, argv, &a);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    ei_err_t err = {0};
    int refused = 0;
    if (eval_run(&a, &refused, &err))
        return refused ? refused : cli_fail("ee-eval", "%s", err.msg);
    return CLI_OK;
}
