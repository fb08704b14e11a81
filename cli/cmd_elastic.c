/* einet elastic: elastic accuracy (DESIGN.md) of every exit policy on the test CS-profile,
 * as a table or JSON, and optionally a plot of accuracy in effect against interruption time. */
#include <cblas.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "cli/client.h"
#include "cli/elastic_live.h"
#include "planner/elastic.h"
#include "planner/predictor.h"
#include "planner/profile.h"

#define DEFAULT_PROFILES "models/fmnist-8exit.profile"
#define DEFAULT_PREDICTOR "predictor-correctness.safetensors"
#define PAPER_PREDICTOR "predictor-confidence.safetensors"
#define MAX_POLICIES 24
#define CURVE_POINTS 401
#define LIVE_POINTS 41
#define LIVE_DEFAULT "einet,static-100,static-opt,confidence-0.9"
#define MAX_FIXED 8

static const char usage_text[] =
    "usage: einet elastic [--dist uniform|normal:MU:SIGMA] [--samples N] [--json]\n"
    "                     [--plot FILE.png] [options]\n"
    "Elastic accuracy on the test split of every exit policy: the integral over the\n"
    "interruption time of 1[answer in effect correct], computed exactly, planner time\n"
    "charged (docs/elastic.md defines every policy).\n"
    "  --dist D          uniform (default) or normal:MU:SIGMA (fractions of the horizon)\n"
    "  --samples N       the first N test samples (default all)\n"
    "  --json            {\"dist\":..., \"samples\":N, \"policies\":{\"einet\":acc, ...}, ...}\n"
    "  --plot FILE.png   accuracy in effect against interruption time for the main\n"
    "                    policies (einet, einet-confidence, static-100, static-opt,\n"
    "                    confidence-0.9, single-exit, oracle), drawn by gnuplot\n"
    "  --profiles DIR    profile directory (default: the shipped " DEFAULT_PROFILES ")\n"
    "  --predictor FILE  einet's predictor (default DIR/" DEFAULT_PREDICTOR ")\n"
    "  --policies LIST   comma-separated names to run (default all)\n"
    "  --m M             hybrid's enumeration stage for einet (default 4)\n"
    "  --search S        einet's replanning search: hybrid (default), greedy, exact, enum\n"
    "  --random-plans N  plans drawn per replan by random (default 10000)\n"
    "  --overhead-us X   charge X us per replan instead of the measured time\n"
    "  --et FILE         the ET-profile to predict for (default DIR/et.json), e.g. a\n"
    "                    cluster's live one saved by 'einet profile --from-cluster'\n"
    "  --fixed NAME=BITS one more fixed-plan policy (e.g. pre-opt=11011011; up to 8)\n"
    "  --live            also measure on the running cluster at --coordinator: the first\n"
    "                    N test images (--samples, default 2000), each with a deadline\n"
    "                    drawn from --dist over the live horizon H, under every policy in\n"
    "                    turn (default " LIVE_DEFAULT "),\n"
    "                    beside the prediction from the same live ET-profile\n"
    "  --warmup N        --live: requests sent first, not counted (default 300)\n"
    "  --seed N          --live: seed of the deadlines (default 1)\n"
    "  --data DIR        --live: Fashion-MNIST directory\n" CLIENT_OPTS_HELP
    "Policies: einet, einet-confidence (EINet's confidence predictor, when\n"
    "DIR/" PAPER_PREDICTOR " exists), static-25, static-50, static-100, static-opt,\n"
    "confidence-0.8, confidence-0.9, confidence-0.95, confidence-0.99, random, single-exit,\n"
    "oracle.\n";

typedef struct {
    const char *dir, *pred_path, *plot, *only, *et_path, *data;
    planner_dist_t dist;
    long samples, m, n_random, warmup, seed;
    int search_set; /* --search given: einet's policies replan with `search` */
    planner_search_kind_t search;
    double overhead_us;
    int json, live;
    client_opts_t o;
    int nfixed;
    char fixed_name[MAX_FIXED][ELASTIC_NAME_MAX];
    char fixed_plan[MAX_FIXED][PLANNER_MAX_EXITS + 1];
} args_t;

typedef struct {
    profile_et_t et;
    profile_cs_t *val, *test;
    predictor_t *pred, *paper;
    elastic_t *el;
    int count;
    elastic_policy_t pol[MAX_POLICIES];
    elastic_result_t res[MAX_POLICIES];
    double *curve[MAX_POLICIES];
    elastic_live_result_t live[MAX_POLICIES];
    double at_taus[MAX_POLICIES]; /* --live: the prediction judged at the run's deadlines */
    double H[MAX_POLICIES];       /* --live: each phase's deadline horizon (warm-up profile) */
    double H_run[MAX_POLICIES];   /* --live: the horizon of the profile during the run */
    profile_et_t live_et[MAX_POLICIES];
    double *live_curve[MAX_POLICIES];
    char model[PROFILE_NAME_MAX];
    profile_et_t et_end; /* --live: the live profile again after the run */
} run_t;

static int parse_dist(const char *s, planner_dist_t *d)
{
    char tail;
    d->mu = d->sigma = 0;
    if (!strcmp(s, "uniform")) {
        d->kind = PLANNER_DIST_UNIFORM;
        return 0;
    }
    d->kind = PLANNER_DIST_NORMAL;
    return sscanf(s, "normal:%lf:%lf%c", &d->mu, &d->sigma, &tail) == 2 && d->sigma > 0 &&
                   d->mu > -10 && d->mu < 10 && d->sigma < 100
               ? 0
               : -1;
}

static int bad_value(const char *flag, const char *what)
{
    return cli_usage_error("elastic", "%s: '%s' is not %s", flag, optarg, what);
}

/* --fixed NAME=BITS: 0, or -1 when malformed or one too many. */
static int parse_fixed(const char *s, args_t *a)
{
    const char *eq = strchr(s, '=');
    if (!eq || eq == s || eq - s >= ELASTIC_NAME_MAX || !eq[1] ||
        strlen(eq + 1) > PLANNER_MAX_EXITS || strspn(eq + 1, "01") != strlen(eq + 1) ||
        a->nfixed >= MAX_FIXED)
        return -1;
    snprintf(a->fixed_name[a->nfixed], ELASTIC_NAME_MAX, "%.*s", (int)(eq - s), s);
    snprintf(a->fixed_plan[a->nfixed], PLANNER_MAX_EXITS + 1, "%s", eq + 1);
    a->nfixed++;
    return 0;
}

/* 0 to go on, -1 after --help, else a usage error's exit code. */
static int parse_args(int argc, char **argv, args_t *a)
{
    static const struct option longopts[] = {{"dist", required_argument, 0, 'D'},
                                             {"samples", required_argument, 0, 'n'},
                                             {"json", no_argument, 0, 'j'},
                                             {"plot", required_argument, 0, 'P'},
                                             {"profiles", required_argument, 0, 'p'},
                                             {"predictor", required_argument, 0, 'r'},
                                             {"policies", required_argument, 0, 'L'},
                                             {"m", required_argument, 0, 'm'},
                                             {"search", required_argument, 0, 'S'},
                                             {"random-plans", required_argument, 0, 'R'},
                                             {"overhead-us", required_argument, 0, 'o'},
                                             {"et", required_argument, 0, 'E'},
                                             {"fixed", required_argument, 0, 'F'},
                                             {"live", no_argument, 0, 'V'},
                                             {"warmup", required_argument, 0, 'W'},
                                             {"seed", required_argument, 0, 's'},
                                             {"data", required_argument, 0, 'd'},
                                             CLIENT_LONGOPTS,
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int r = client_opts_parse("elastic", &a->o, c, optarg);
        if (r < 0)
            return CLI_USAGE;
        if (r > 0)
            continue;
        switch (c) {
        case 'E':
            a->et_path = optarg;
            break;
        case 'F':
            if (parse_fixed(optarg, a))
                return bad_value("--fixed", "NAME=BITS (a new name, 0/1 characters; at most 8)");
            break;
        case 'V':
            a->live = 1;
            break;
        case 'W':
            if (cli_parse_long(optarg, 0, 100000, &a->warmup))
                return bad_value("--warmup", "an integer in [0, 100000]");
            break;
        case 's':
            if (cli_parse_long(optarg, 0, 0x7fffffffL, &a->seed))
                return bad_value("--seed", "a non-negative integer");
            break;
        case 'd':
            a->data = optarg;
            break;
        case 'D':
            if (parse_dist(optarg, &a->dist))
                return bad_value("--dist", "uniform or normal:MU:SIGMA with SIGMA > 0");
            break;
        case 'n':
            if (cli_parse_long(optarg, 1, 10000000, &a->samples))
                return bad_value("--samples", "a positive integer");
            break;
        case 'm':
            if (cli_parse_long(optarg, 0, PLANNER_MAX_EXITS, &a->m))
                return bad_value("--m", "in [0, 64]");
            break;
        case 'S': {
            planner_search_kind_t k;
            if (planner_search_parse(optarg, &k) || k == PLANNER_SEARCH_RANDOM)
                return bad_value("--search", "hybrid, greedy, exact or enum");
            a->search = k;
            a->search_set = 1;
            break;
        }
        case 'R':
            if (cli_parse_long(optarg, 1, PLANNER_RANDOM_MAX, &a->n_random))
                return bad_value("--random-plans", "a positive integer");
            break;
        case 'o':
            if (cli_parse_double(optarg, 0, 1e9, &a->overhead_us))
                return bad_value("--overhead-us", "a non-negative number");
            break;
        case 'j':
            a->json = 1;
            break;
        case 'P':
            if (strchr(optarg, '\'') || !*optarg)
                return bad_value("--plot", "a file name without quotes");
            a->plot = optarg;
            break;
        case 'p':
            a->dir = optarg;
            break;
        case 'r':
            a->pred_path = optarg;
            break;
        case 'L':
            a->only = optarg;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return -1;
        default:
            return cli_bad_option("elastic", argv, optind);
        }
    }
    if (optind < argc)
        return cli_usage_error("elastic", "unexpected argument '%s'", argv[optind]);
    if (a->live && client_opts_finish("elastic", &a->o))
        return CLI_USAGE;
    if (a->live && a->et_path)
        return cli_usage_error("elastic", "--live predicts from the cluster's own profile: "
                                          "leave out --et");
    return 0;
}

/* 1 if name is in the comma-separated list (or there is no list). */
static int wanted(const char *list, const char *name)
{
    size_t len = strlen(name);
    for (const char *s = list; s && *s;) {
        const char *e = strchr(s, ',');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        if (l == len && !strncmp(s, name, len))
            return 1;
        s = e ? e + 1 : s + l;
    }
    return !list;
}

static int load_all(run_t *r, const args_t *a, const char *dir, ei_err_t *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, PROFILE_ET_FILE);
    if (a->live ? live_profile_fetch(a->o.endpoint, a->o.timeout_ms, &r->et, err)
                : profile_et_load(a->et_path ? a->et_path : path, &r->et, err))
        return err->code;
    snprintf(path, sizeof path, "%s/%s", dir, PROFILE_CS_VAL_FILE);
    if (!(r->val = profile_cs_load(path, err)))
        return err->code;
    snprintf(path, sizeof path, "%s/%s", dir, PROFILE_CS_TEST_FILE);
    if (!(r->test = profile_cs_load(path, err)))
        return err->code;
    int n = r->et.times.n;
    if (profile_cs_exits(r->val) != n || profile_cs_exits(r->test) != n)
        return ei_err_set(err, EI_E_SHAPE,
                          "%s: the ET-profile has %d blocks, the CS-profiles "
                          "%d and %d exits",
                          dir, n, profile_cs_exits(r->val), profile_cs_exits(r->test));
    if (a->pred_path)
        snprintf(path, sizeof path, "%s", a->pred_path);
    else
        snprintf(path, sizeof path, "%s/%s", dir, DEFAULT_PREDICTOR);
    if (!(r->pred = predictor_load(path, err)))
        return err->code;
    snprintf(path, sizeof path, "%s/%s", dir, PAPER_PREDICTOR);
    if (predictor_kind(r->pred) != PREDICTOR_CONFIDENCE && access(path, R_OK) == 0 &&
        !(r->paper = predictor_load(path, err)))
        return err->code;
    planner_profile_t clock = profile_et_clock(&r->et);
    if (!(r->el = elastic_new(&clock, &a->dist, err)))
        return err->code;
    snprintf(r->model, sizeof r->model, "%s", profile_cs_model(r->test));
    return 0;
}

static void add(run_t *r, const args_t *a, const elastic_policy_t *p)
{
    if (wanted(a->only, p->name) && r->count < MAX_POLICIES)
        r->pol[r->count++] = *p;
}

static int make_policies(run_t *r, const args_t *a, ei_err_t *err)
{
    int n = r->et.times.n;
    elastic_policy_t p;
    planner_search_t hybrid, random;
    planner_search_init(&hybrid);
    hybrid.kind = a->search_set ? a->search : PLANNER_SEARCH_HYBRID;
    hybrid.m = (int)a->m;
    random = hybrid;
    random.kind = PLANNER_SEARCH_RANDOM;
    random.n_random = a->n_random;
    elastic_policy_planned(&p, "einet", r->pred, &hybrid);
    p.overhead_us = a->overhead_us;
    add(r, a, &p);
    if (r->paper) {
        elastic_policy_planned(&p, "einet-confidence", r->paper, &hybrid);
        p.overhead_us = a->overhead_us;
        add(r, a, &p);
    }
    elastic_policy_every(&p, "static-25", n, 4);
    add(r, a, &p);
    elastic_policy_every(&p, "static-50", n, 2);
    add(r, a, &p);
    elastic_policy_every(&p, "static-100", n, 1);
    add(r, a, &p);
    double acc[PLANNER_MAX_EXITS];
    uint8_t plan[PLANNER_MAX_EXITS];
    profile_cs_accuracy(r->val, acc, NULL);
    if (elastic_static_opt(r->el, acc, plan, err))
        return err->code;
    elastic_policy_fixed(&p, "static-opt", plan, n);
    add(r, a, &p);
    static const double thresholds[] = {0.8, 0.9, 0.95, 0.99};
    for (int i = 0; i < 4; i++) {
        elastic_policy_confidence(&p, thresholds[i]);
        add(r, a, &p);
    }
    elastic_policy_planned(&p, "random", r->pred, &random);
    p.overhead_us = a->overhead_us;
    add(r, a, &p);
    elastic_policy_single(&p, n);
    add(r, a, &p);
    elastic_policy_oracle(&p);
    add(r, a, &p);
    for (int i = 0; i < a->nfixed; i++) {
        if ((int)strlen(a->fixed_plan[i]) != n)
            return ei_err_set(err, EI_E_SHAPE, "--fixed %s: %d bits, the profile has %d blocks",
                              a->fixed_name[i], (int)strlen(a->fixed_plan[i]), n);
        uint8_t bits[PLANNER_MAX_EXITS];
        for (int k = 0; k < n; k++)
            bits[k] = a->fixed_plan[i][k] == '1';
        elastic_policy_fixed(&p, a->fixed_name[i], bits, n);
        if (r->count < MAX_POLICIES) /* asked for by name: always run */
            r->pol[r->count++] = p;
    }
    return 0;
}

static const elastic_result_t *find(const run_t *r, const char *name)
{
    for (int i = 0; i < r->count; i++)
        if (!strcmp(r->pol[i].name, name))
            return &r->res[i];
    return NULL;
}

/* Share of the static-opt-to-oracle gap a policy closes (NAN when either is missing). */
static double gap_share(const run_t *r, const elastic_result_t *x)
{
    const elastic_result_t *so = find(r, "static-opt"), * or = find(r, "oracle");
    if (!so || ! or || !(or->accuracy > so->accuracy))
        return NAN;
    return (x->accuracy - so->accuracy) / (or->accuracy - so->accuracy);
}

static json_t *dist_json(const planner_dist_t *d)
{
    if (d->kind == PLANNER_DIST_UNIFORM)
        return json_pack("{s:s}", "kind", "uniform");
    return json_pack("{s:s, s:f, s:f}", "kind", "normal", "mu", d->mu, "sigma", d->sigma);
}

/* H of an ET-profile on the coordinator's clock: a_n of the all-ones plan. */
static double horizon_of(const profile_et_t *et)
{
    planner_profile_t p = profile_et_clock(et);
    double t = 0;
    for (int k = 0; k < p.n; k++)
        t += p.conv_ms[k] + p.branch_ms[k] + (k + 1 < p.n ? p.link_ms[k] : 0);
    return p.n ? t + p.result_ms[p.n - 1] : 0;
}

static json_t *doubles_json(const double *v, int n)
{
    json_t *a = json_array();
    for (int k = 0; k < n; k++)
        json_array_append_new(a, json_real(v[k]));
    return a;
}

/* A phase's live profile (the mean the prediction used). */
static json_t *profile_json(const profile_et_t *et)
{
    int n = et->times.n;
    return json_pack("{s:o, s:o, s:o, s:o}", "conv_ms", doubles_json(et->times.conv_ms, n),
                     "branch_ms", doubles_json(et->times.branch_ms, n), "link_ms",
                     doubles_json(et->times.link_ms, n), "result_ms",
                     doubles_json(et->times.result_ms, n));
}

static json_t *plan_json(const elastic_policy_t *p, int n)
{
    char bits[PLANNER_MAX_EXITS + 1];
    for (int k = 0; k < n; k++)
        bits[k] = p->plan[k] ? '1' : '0';
    bits[n] = 0;
    return json_string(bits);
}

/* The curves: the time grid (ms) and each policy's accuracy in effect on it (predicted;
 * with --live also the measured one on a coarser grid, null where no deadline fell). */
static json_t *curves_json(const run_t *r, const args_t *a)
{
    /* --live: each policy has its own horizon, so the grid is the fraction of it. */
    double H = a->live ? 1.0 : elastic_horizon(r->el);
    json_t *t = json_array(), *pol = json_object(), *root = json_object();
    for (int g = 0; g < CURVE_POINTS; g++)
        json_array_append_new(t, json_real(H * g / (CURVE_POINTS - 1)));
    for (int i = 0; i < r->count; i++) {
        json_t *v = json_array();
        for (int g = 0; g < CURVE_POINTS; g++)
            json_array_append_new(v, json_real(r->curve[i][g]));
        json_object_set_new(pol, r->pol[i].name, v);
    }
    json_object_set_new(root, a->live ? "t_fraction_of_horizon" : "t_ms", t);
    json_object_set_new(root, "predicted", pol);
    if (a->live) {
        json_t *lt = json_array(), *lp = json_object();
        for (int g = 0; g < LIVE_POINTS; g++)
            json_array_append_new(lt, json_real(H * g / (LIVE_POINTS - 1)));
        for (int i = 0; i < r->count; i++) {
            json_t *v = json_array();
            for (int g = 0; g < LIVE_POINTS; g++)
                json_array_append_new(v, isfinite(r->live_curve[i][g])
                                             ? json_real(r->live_curve[i][g])
                                             : json_null());
            json_object_set_new(lp, r->pol[i].name, v);
        }
        json_object_set_new(root, "live_t_fraction_of_horizon", lt);
        json_object_set_new(root, "live", lp);
    }
    return root;
}

static json_t *live_json(const elastic_live_result_t *x, double predicted)
{
    return json_pack("{s:f, s:f, s:f, s:i, s:i, s:i, s:i, s:f, s:f, s:f}", "live", x->accuracy,
                     "predicted", predicted, "diff", x->accuracy - predicted, "deadline",
                     x->deadline, "complete", x->complete, "failed", x->failed, "early",
                     x->early, "late_p50_us", x->late_p50_us, "late_p99_us", x->late_p99_us,
                     "late_max_us", x->late_max_us);
}

static void print_json(const run_t *r, const args_t *a)
{
    json_t *pol = json_object(), *detail = json_object(), *gaps = json_object();
    json_t *live = json_object();
    int n = elastic_profile(r->el)->n;
    for (int i = 0; i < r->count; i++) {
        const elastic_result_t *x = &r->res[i];
        json_object_set_new(pol, r->pol[i].name, json_real(x->accuracy));
        json_t *d = json_pack("{s:f, s:f, s:f, s:f, s:f}", "branches", x->branches, "replans",
                              x->replans, "predict_us", x->predict_us, "search_us",
                              x->search_us, "charged_ms", x->charged_ms);
        if (r->pol[i].kind == ELASTIC_FIXED)
            json_object_set_new(d, "plan", plan_json(&r->pol[i], n));
        json_object_set_new(detail, r->pol[i].name, d);
        double g = gap_share(r, x);
        if (r->pol[i].kind == ELASTIC_PLANNED && isfinite(g))
            json_object_set_new(gaps, r->pol[i].name, json_real(g));
        if (a->live)
        {
            json_t *lj = live_json(&r->live[i], x->accuracy);
            json_object_set_new(lj, "predicted_at_deadlines", json_real(r->at_taus[i]));
            json_object_set_new(lj, "horizon_ms", json_real(r->H[i]));
            json_object_set_new(lj, "horizon_run_ms", json_real(r->H_run[i]));
            json_object_set_new(lj, "dispatch_ms", json_real(r->live_et[i].dispatch_ms));
            json_object_set_new(lj, "profile", profile_json(&r->live_et[i]));
            json_object_set_new(live, r->pol[i].name, lj);
        }
    }
    json_t *root = json_pack("{s:s, s:o, s:i, s:o, s:f, s:f, s:o, s:o}", "model", r->model,
                             "dist", dist_json(&a->dist), "samples", r->res[0].samples,
                             "policies", pol, "horizon_ms", elastic_horizon(r->el),
                             "dispatch_ms", r->et.dispatch_ms, "gap_share", gaps, "details",
                             detail);
    if (a->live) {
        json_object_set_new(root, "live", live);
        json_object_set_new(root, "horizon_after_ms", json_real(horizon_of(&r->et_end)));
    } else {
        json_decref(live);
    }
    json_object_set_new(root, "curves", curves_json(r, a));
    char *text = json_dumps(root, JSON_PRESERVE_ORDER | JSON_COMPACT | JSON_REAL_PRECISION(6));
    puts(text);
    free(text);
    json_decref(root);
}

static void print_live(const run_t *r)
{
    printf("\nlive on the cluster, each policy in its own phase, one request at a time: deadlines "
           "tau ~ F over H (the warm-up's live profile), predicted from the mean live profile "
           "during the run (whose own horizon is Hrun) over the same [0, H]; after all runs "
           "the live H was %.4f ms, dispatch %.4f ms:\n",
           horizon_of(&r->et_end), r->et_end.dispatch_ms);
    printf("%-18s %7s %7s %9s %9s %8s %9s %8s %9s %9s %7s %10s %10s %10s\n", "policy", "H ms",
           "Hrun ms",
           "predicted", "live", "diff", "pred@tau", "diff@tau", "deadline", "complete",
           "failed", "late p50us", "late p99us", "late maxus");
    for (int i = 0; i < r->count; i++) {
        const elastic_live_result_t *x = &r->live[i];
        printf("%-18s %7.4f %7.4f %9.4f %9.4f %+8.4f %9.4f %+8.4f %9d %9d %7d %10.1f %10.1f "
               "%10.1f\n",
               r->pol[i].name, r->H[i], r->H_run[i], r->res[i].accuracy, x->accuracy, x->accuracy - r->res[i].accuracy,
               r->at_taus[i], x->accuracy - r->at_taus[i], x->deadline, x->complete, x->failed,
               x->late_p50_us, x->late_p99_us, x->late_max_us);
    }
}

static void print_table(const run_t *r, const args_t *a, const char *dir)
{
    if (a->dist.kind == PLANNER_DIST_UNIFORM)
        printf("elastic accuracy, uniform interruption");
    else
        printf("elastic accuracy, normal(%g, %g) interruption", a->dist.mu, a->dist.sigma);
    printf(", %d test samples of %s, horizon %.4f ms", r->res[0].samples, dir,
           elastic_horizon(r->el));
    if (a->live || a->et_path)
        printf(" (%s ET-profile %s, dispatch %.4f ms)", a->live ? "live" : "the",
               a->live ? a->o.endpoint : a->et_path, r->et.dispatch_ms);
    printf("\n%-18s %8s %9s %8s %11s %10s %11s %9s\n", "policy", "accuracy", "branches",
           "replans", "predict us", "search us", "charged ms", "gap share");
    for (int i = 0; i < r->count; i++) {
        const elastic_result_t *x = &r->res[i];
        printf("%-18s %8.4f %9.2f %8.2f", r->pol[i].name, x->accuracy, x->branches, x->replans);
        double g = gap_share(r, x);
        if (r->pol[i].kind == ELASTIC_PLANNED && isfinite(g))
            printf(" %11.2f %10.2f %11.4f %8.1f%%\n", x->predict_us, x->search_us, x->charged_ms,
                   100 * g);
        else if (r->pol[i].kind == ELASTIC_PLANNED)
            printf(" %11.2f %10.2f %11.4f %9s\n", x->predict_us, x->search_us, x->charged_ms, "-");
        else
            printf(" %11s %10s %11s %9s\n", "-", "-", "-", "");
    }
    if (a->live)
        print_live(r);
}

/* The policies drawn by --plot (those of them that ran; all that ran if none did). */
static int plotted(const run_t *r, int i)
{
    static const char *const main_policies[] = {"einet",      "einet-confidence", "static-100",
                                                "static-opt", "confidence-0.9",   "single-exit",
                                                "oracle"};
    int any = 0, mine = 0;
    for (int q = 0; q < r->count; q++)
        for (size_t m = 0; m < sizeof main_policies / sizeof main_policies[0]; m++)
            if (!strcmp(r->pol[q].name, main_policies[m])) {
                any = 1;
                mine |= q == i;
            }
    return mine || !any;
}

/* The y range of the zoomed top panel: the plotted curves from where they have an answer
 * (values >= 0.5; the ramp before the first arrival is clipped), with a small margin. */
static void zoom_range(const run_t *r, double *lo, double *hi)
{
    *lo = 1;
    *hi = 0;
    for (int i = 0; i < r->count; i++)
        for (int g = 0; plotted(r, i) && g < CURVE_POINTS; g++)
            if (r->curve[i][g] >= 0.5) {
                *lo = fmin(*lo, r->curve[i][g]);
                *hi = fmax(*hi, r->curve[i][g]);
            }
    if (*lo > *hi) {
        *lo = 0;
        *hi = 1;
    }
    double m = fmax(0.005, 0.05 * (*hi - *lo));
    *lo = fmax(0, *lo - m);
    *hi = fmin(1, *hi + m);
}

/* The y range of the difference panel: each plotted policy minus static-100 where both
 * have an answer in effect (>= 0.5; around the first arrivals the step of a slightly
 * earlier or later arrival would fill the panel), with a margin. */
static void diff_range(const run_t *r, int ref, double *lo, double *hi)
{
    *lo = -0.005;
    *hi = 0.005;
    for (int i = 0; i < r->count; i++)
        for (int g = 0; plotted(r, i) && i != ref && g < CURVE_POINTS; g++)
            if (r->curve[i][g] >= 0.5 && r->curve[ref][g] >= 0.5) {
                *lo = fmin(*lo, r->curve[i][g] - r->curve[ref][g]);
                *hi = fmax(*hi, r->curve[i][g] - r->curve[ref][g]);
            }
    double m = 0.1 * (*hi - *lo);
    *lo -= m;
    *hi += m;
}

/* Writes rows of (time, one column per policy) to a new temporary file (name into path). */
static int write_columns(char *path, double H, int points, double *const *cols, int count)
{
    int fd = mkstemp(path);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    for (int g = 0; g < points; g++) {
        fprintf(f, "%.6f", H * g / (points - 1));
        for (int i = 0; i < count; i++)
            isfinite(cols[i][g]) ? fprintf(f, " %.6f", cols[i][g]) : fprintf(f, " NaN");
        fputc('\n', f);
    }
    return fclose(f) ? -1 : 0;
}

static int find_index(const run_t *r, const char *name)
{
    for (int i = 0; i < r->count; i++)
        if (!strcmp(r->pol[i].name, name))
            return i;
    return -1;
}

/* The two panels' plot commands: top, accuracy in effect (predicted lines, live points);
 * bottom, each policy's accuracy minus static-100's. */
static void plot_panels(FILE *gp, const run_t *r, const args_t *a, const char *data,
                        const char *live)
{
    char dist[64] = "uniform";
    if (a->dist.kind == PLANNER_DIST_NORMAL)
        snprintf(dist, sizeof dist, "normal(%g, %g)", a->dist.mu, a->dist.sigma);
    double lo, hi, H = a->live ? 1.0 : elastic_horizon(r->el);
    zoom_range(r, &lo, &hi);
    int ref = find_index(r, "static-100");
    fprintf(gp, "set multiplot layout %d,1 title '%s: %d test samples, %s interruption%s'\n",
            ref >= 0 ? 2 : 1, r->model, r->res[0].samples, dist,
            a->live ? " (lines: predicted from the live profile; points: measured live)" : "");
    fprintf(gp, "set lmargin at screen 0.08\nset rmargin at screen 0.62\n"
                "set xrange [0:%g]\nset grid\nset key outside right top box\n"
                "set ylabel 'accuracy in effect (zoomed)'\nset yrange [%g:%g]\nplot ",
            H, lo, hi);
    for (int i = 0, first = 1; i < r->count; i++)
        if (plotted(r, i)) {
            fprintf(gp, "%s'%s' using 1:%d with lines lw 2 lc %d title '%s (%.4f)'",
                    first ? "" : ", ", data, i + 2, i + 1, r->pol[i].name, r->res[i].accuracy);
            if (live)
                fprintf(gp, ", '%s' using 1:%d with points pt 7 ps 0.6 lc %d title '%s live "
                            "(%.4f)'",
                        live, i + 2, i + 1, r->pol[i].name, r->live[i].accuracy);
            first = 0;
        }
    fprintf(gp, "\n");
    if (ref < 0)
        return;
    fprintf(gp, "set xlabel '%s'\nset ylabel 'minus static-100'\n",
            a->live ? "interruption time / H (H: each policy own live horizon)"
                    : "interruption time (ms)");
    diff_range(r, ref, &lo, &hi);
    fprintf(gp, "set yrange [%g:%g]\nplot ", lo, hi);
    for (int i = 0, first = 1; i < r->count; i++)
        if (plotted(r, i) && i != ref) {
            fprintf(gp, "%s'%s' using 1:($%d-$%d) with lines lw 2 lc %d title '%s'",
                    first ? "" : ", ", data, i + 2, ref + 2, i + 1, r->pol[i].name);
            if (live)
                fprintf(gp, ", '%s' using 1:($%d-$%d) with points pt 7 ps 0.6 lc %d notitle",
                        live, i + 2, ref + 2, i + 1);
            first = 0;
        }
    fprintf(gp, "\nunset multiplot\n");
}

/* The first line of a file, for an error message. */
static void first_line(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    out[0] = 0;
    if (f && fgets(out, (int)cap, f))
        out[strcspn(out, "\r\n")] = 0;
    if (f)
        fclose(f);
}

/* Has gnuplot draw the figure into a->plot: the curves go to temporary files, gnuplot's
 * output to nowhere and its messages to a third file, whose first line a failure shows. */
static int plot(const run_t *r, const args_t *a, ei_err_t *err)
{
    char data[] = "/tmp/einet-elastic-XXXXXX", live[] = "/tmp/einet-elastic-live-XXXXXX";
    char errs[] = "/tmp/einet-elastic-err-XXXXXX";
    double H = a->live ? 1.0 : elastic_horizon(r->el);
    if (write_columns(data, H, CURVE_POINTS, r->curve, r->count) ||
        (a->live && write_columns(live, H, LIVE_POINTS, r->live_curve, r->count)))
        return ei_err_set(err, EI_E_IO, "--plot: cannot write a temporary file in /tmp");
    int efd = mkstemp(errs);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "gnuplot >/dev/null 2>%s", errs);
    FILE *gp = efd >= 0 ? popen(cmd, "w") : NULL;
    int rc = gp ? 0 : ei_err_set(err, EI_E_IO, "--plot: cannot run gnuplot");
    if (gp) {
        fprintf(gp, "set terminal pngcairo size 1100,900 noenhanced\nset output '%s'\n", a->plot);
        plot_panels(gp, r, a, data, a->live ? live : NULL);
        int st = pclose(gp);
        char line[160];
        first_line(errs, line, sizeof line);
        if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st))
            rc = ei_err_set(err, EI_E_IO, "--plot: gnuplot could not write %s%s%s", a->plot,
                            line[0] ? ": " : "", line);
    }
    if (efd >= 0) {
        close(efd);
        unlink(errs);
    }
    unlink(data);
    if (a->live)
        unlink(live);
    return rc;
}

/* 1 if a program of that name is on $PATH. */
static int on_path(const char *prog)
{
    const char *path = getenv("PATH");
    char buf[4096];
    for (const char *s = path; s && *s;) {
        const char *e = strchr(s, ':');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        snprintf(buf, sizeof buf, "%.*s/%s", (int)l, s, prog);
        if (access(buf, X_OK) == 0)
            return 1;
        s = e ? e + 1 : s + l;
    }
    return 0;
}

/* The prediction's own answers at the live run's deadlines: the offline traces judged at
 * tau_i instead of integrated, so live minus this is free of the draws' sampling noise. */
static int at_taus(run_t *r, int p, const double *tau, int samples, double *out, ei_err_t *err)
{
    uint8_t initial[PLANNER_MAX_EXITS];
    const elastic_policy_t *pol = &r->pol[p];
    int rc = pol->kind == ELASTIC_PLANNED ? elastic_initial_plan(r->el, pol, initial, err) : 0;
    double sum = 0;
    for (int i = 0; i < samples && !rc; i++) {
        elastic_trace_t tr;
        rc = elastic_run_sample(r->el, pol, pol->kind == ELASTIC_PLANNED ? initial : NULL,
                                r->test, i, &tr, err);
        if (!rc)
            sum += elastic_trace_at(r->el, &tr, profile_cs_correct(r->test, i), tau[i]);
    }
    *out = sum / samples;
    return rc;
}

/* --live, one policy's phase: a warm-up with its traffic (the first phase's mean live
 * profile gives the horizon H every phase's deadlines are drawn over, so the policies are
 * compared on one [0, H] and the same deadlines; static-opt's plan is searched on its own
 * warm-up's profile over H); the measured run, during which the coordinator's live
 * profiles are averaged; then the prediction from that run's mean profile over [0, H].
 * Each policy is measured alone: a cluster's block times depend on the traffic it carries
 * (which exits run, which requests stop early), so a profile of mixed traffic would
 * describe none of them. */
static int live_policy(run_t *r, const args_t *a, int p, int samples, ei_err_t *err)
{
    live_opts_t o = {a->o.endpoint, a->o.timeout_ms, a->data, samples, (int)a->warmup,
                     (uint64_t)a->seed, &a->dist};
    elastic_policy_t *pol = &r->pol[p];
    profile_et_t warm;
    fprintf(stderr, "einet elastic --live: %s\n", pol->name);
    int rc = live_warmup(&o, r->el, pol, 1, &warm, err);
    planner_profile_t clock = profile_et_clock(&warm);
    elastic_t *el = rc ? NULL : elastic_new(&clock, &a->dist, err), *run = NULL;
    if (!rc && !el)
        rc = err->code;
    if (!rc && p > 0)
        rc = elastic_set_horizon(el, r->H[0], err);
    if (!rc && !strcmp(pol->name, "static-opt")) {
        double acc[PLANNER_MAX_EXITS];
        profile_cs_accuracy(r->val, acc, NULL);
        rc = elastic_static_opt(el, acc, pol->plan, err);
    }
    double *tau = malloc((size_t)samples * sizeof *tau);
    if (!rc && !tau)
        rc = ei_err_set(err, EI_E_NOMEM, "out of memory");
    if (!rc)
        rc = live_measure(&o, el, pol, 1, &r->live[p], &r->live_curve[p], LIVE_POINTS, tau,
                          &r->live_et[p], err);
    if (!rc) {
        r->H[p] = elastic_horizon(el);
        clock = profile_et_clock(&r->live_et[p]);
        if (!(run = elastic_new(&clock, &a->dist, err)))
            rc = err->code;
    }
    if (!rc) {
        r->H_run[p] = elastic_horizon(run);
        rc = elastic_set_horizon(run, r->H[p], err);
    }
    elastic_curve_t curve = {CURVE_POINTS, r->curve[p]};
    if (!rc)
        rc = elastic_evaluate(run, pol, r->test, samples, &r->res[p], &curve, err);
    if (!rc) {
        elastic_t *keep = r->el;
        r->el = run; /* at_taus judges on this context */
        rc = at_taus(r, p, tau, samples, &r->at_taus[p], err);
        r->el = keep;
    }
    free(tau);
    elastic_destroy(&el);
    elastic_destroy(&run);
    return rc ? ei_err_prefix(err, "%s: ", pol->name) : 0;
}

static int run_policies(run_t *r, const args_t *a, ei_err_t *err)
{
    int samples =
        (int)(a->samples < profile_cs_count(r->test) ? a->samples : profile_cs_count(r->test));
    for (int i = 0; i < r->count; i++) {
        elastic_curve_t curve = {CURVE_POINTS, NULL};
        if (!(curve.acc = r->curve[i] = calloc(CURVE_POINTS, sizeof(double))) ||
            !(r->live_curve[i] = calloc(LIVE_POINTS, sizeof(double))))
            return ei_err_set(err, EI_E_NOMEM, "out of memory");
        if (elastic_evaluate(r->el, &r->pol[i], r->test, samples, &r->res[i], &curve, err))
            return ei_err_prefix(err, "%s: ", r->pol[i].name);
    }
    if (!a->live)
        return 0;
    int rc = 0;
    for (int p = 0; p < r->count && !rc; p++)
        rc = live_policy(r, a, p, samples, err);
    return rc;
}

static void run_free(run_t *r)
{
    for (int i = 0; i < r->count; i++) {
        free(r->curve[i]);
        free(r->live_curve[i]);
    }
    elastic_destroy(&r->el);
    predictor_destroy(&r->pred);
    predictor_destroy(&r->paper);
    profile_cs_destroy(&r->val);
    profile_cs_destroy(&r->test);
}

/* Every name of --policies must be a policy made here. */
static int check_list(const run_t *r, const char *list)
{
    for (const char *s = list; s && *s;) {
        const char *e = strchr(s, ',');
        int l = e ? (int)(e - s) : (int)strlen(s), found = 0;
        for (int i = 0; i < r->count; i++)
            found |= (int)strlen(r->pol[i].name) == l && !strncmp(r->pol[i].name, s, (size_t)l);
        if (!found)
            return cli_usage_error("elastic", "--policies: unknown or unavailable policy '%.*s'", l,
                                   s);
        s = e ? e + 1 : s + l;
    }
    return 0;
}

static int run(run_t *r, const args_t *a, const char *dir)
{
    ei_err_t err = {0};
    if (load_all(r, a, dir, &err))
        return cli_fail("elastic", "%s%s", err.msg,
                        err.code == EI_E_NOTFOUND ? " (make the profiles with 'einet profile' "
                                                    "and 'einet predictor train')"
                                                  : "");
    if (make_policies(r, a, &err))
        return cli_fail("elastic", "%s", err.msg);
    int rc = check_list(r, a->only);
    if (rc)
        return rc;
    if (run_policies(r, a, &err))
        return cli_fail("elastic", "%s", err.msg);
    if (a->live && live_profile_fetch(a->o.endpoint, a->o.timeout_ms, &r->et_end, &err))
        return cli_fail("elastic", "the live profile after the run: %s", err.msg);
    a->json ? print_json(r, a) : print_table(r, a, dir);
    if (a->plot && plot(r, a, &err))
        return cli_fail("elastic", "%s", err.msg);
    return CLI_OK;
}

/* A --plot path that cannot be written is an error before any work (nothing is left
 * behind: a file the check made is removed). */
static int check_plot_path(const char *path)
{
    struct stat st;
    int existed = stat(path, &st) == 0;
    FILE *f = fopen(path, "ab");
    if (!f)
        return cli_fail("elastic", "--plot %s: %s", path, strerror(errno));
    fclose(f);
    if (!existed)
        unlink(path);
    return 0;
}

int cmd_elastic(int argc, char **argv)
{
    args_t a = {.samples = -1, .m = 4, .n_random = 10000, .overhead_us = -1,
                .warmup = 300, .seed = 1};
    client_opts_init(&a.o);
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    if (a.samples < 0)
        a.samples = a.live ? 2000 : 10000000;
    if (a.live && !a.only)
        a.only = LIVE_DEFAULT;
    if (a.plot && !on_path("gnuplot"))
        return cli_fail("elastic", "--plot needs gnuplot, which is not on PATH (Debian: "
                                   "apt-get install gnuplot-nox)");
    if (a.plot && (rc = check_plot_path(a.plot)))
        return rc;
    char dirbuf[1024];
    const char *dir = a.dir ? a.dir : cli_default_path(DEFAULT_PROFILES, dirbuf, sizeof dirbuf);
    openblas_set_num_threads(1);
    run_t *r = ei_calloc(1, sizeof *r);
    if (!r)
        return cli_fail("elastic", "out of memory");
    rc = run(r, &a, dir);
    run_free(r);
    free(r);
    return rc;
}
