/* einet elastic: elastic accuracy (DESIGN.md) of every exit policy on the test CS-profile,
 * as a table or JSON, and optionally a plot of accuracy in effect against interruption time. */
#include <cblas.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "planner/elastic.h"
#include "planner/predictor.h"
#include "planner/profile.h"

#define DEFAULT_PROFILES "models/fmnist-8exit.profile"
#define DEFAULT_PREDICTOR "predictor-correctness.safetensors"
#define PAPER_PREDICTOR "predictor-confidence.safetensors"
#define MAX_POLICIES 24
#define CURVE_POINTS 401

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
    "Policies: einet, einet-confidence (EINet's confidence predictor, when\n"
    "DIR/" PAPER_PREDICTOR " exists), static-25, static-50, static-100, static-opt,\n"
    "confidence-0.8, confidence-0.9, confidence-0.95, confidence-0.99, random, single-exit,\n"
    "oracle.\n";

typedef struct {
    const char *dir, *pred_path, *plot, *only;
    planner_dist_t dist;
    long samples, m, n_random;
    int search_set; /* --search given: einet's policies replan with `search` */
    planner_search_kind_t search;
    double overhead_us;
    int json;
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
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
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
    if (profile_et_load(path, &r->et, err))
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
    if (!(r->el = elastic_new(&r->et.times, &a->dist, err)))
        return err->code;
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

static void print_json(const run_t *r, const args_t *a)
{
    json_t *pol = json_object(), *detail = json_object(), *gaps = json_object();
    for (int i = 0; i < r->count; i++) {
        const elastic_result_t *x = &r->res[i];
        json_object_set_new(pol, r->pol[i].name, json_real(x->accuracy));
        json_object_set_new(detail, r->pol[i].name,
                            json_pack("{s:f, s:f, s:f, s:f, s:f}", "branches", x->branches,
                                      "replans", x->replans, "predict_us", x->predict_us,
                                      "search_us", x->search_us, "charged_ms", x->charged_ms));
        double g = gap_share(r, x);
        if (r->pol[i].kind == ELASTIC_PLANNED && isfinite(g))
            json_object_set_new(gaps, r->pol[i].name, json_real(g));
    }
    json_t *root = json_pack("{s:o, s:i, s:o, s:f, s:o, s:o}", "dist", dist_json(&a->dist),
                             "samples", r->res[0].samples, "policies", pol, "horizon_ms",
                             elastic_horizon(r->el), "gap_share", gaps, "details", detail);
    char *text = json_dumps(root, JSON_PRESERVE_ORDER | JSON_COMPACT | JSON_REAL_PRECISION(6));
    puts(text);
    free(text);
    json_decref(root);
}

static void print_table(const run_t *r, const args_t *a, const char *dir)
{
    if (a->dist.kind == PLANNER_DIST_UNIFORM)
        printf("elastic accuracy, uniform interruption");
    else
        printf("elastic accuracy, normal(%g, %g) interruption", a->dist.mu, a->dist.sigma);
    printf(", %d test samples of %s, horizon %.4f ms\n", r->res[0].samples, dir,
           elastic_horizon(r->el));
    printf("%-18s %8s %9s %8s %11s %10s %11s %9s\n", "policy", "accuracy", "branches", "replans",
           "predict us", "search us", "charged ms", "gap share");
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

/* Writes the curves as columns (time in ms, then one per policy) to a temporary file and has
 * gnuplot draw them; gnuplot's messages go to stderr. */
static int plot(const run_t *r, const args_t *a, ei_err_t *err)
{
    char data[] = "/tmp/einet-elastic-XXXXXX";
    int fd = mkstemp(data);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f)
        return ei_err_set(err, EI_E_IO, "--plot: cannot make a temporary file");
    double H = elastic_horizon(r->el);
    for (int g = 0; g < CURVE_POINTS; g++) {
        fprintf(f, "%.6f", H * g / (CURVE_POINTS - 1));
        for (int i = 0; i < r->count; i++)
            fprintf(f, " %.6f", r->curve[i][g]);
        fputc('\n', f);
    }
    fclose(f);
    FILE *gp = popen("gnuplot 1>&2", "w");
    int rc = gp ? 0 : ei_err_set(err, EI_E_IO, "--plot: cannot run gnuplot");
    if (gp) {
        char dist[64] = "uniform";
        if (a->dist.kind == PLANNER_DIST_NORMAL)
            snprintf(dist, sizeof dist, "normal(%g, %g)", a->dist.mu, a->dist.sigma);
        fprintf(gp, "set terminal pngcairo size 960,600 noenhanced\nset output '%s'\n", a->plot);
        fprintf(gp,
                "set title '%d test samples; in brackets: elastic accuracy, %s interruption'\n"
                "set xlabel 'interruption time (ms)'\nset ylabel 'accuracy in effect'\n"
                "set key right center opaque box\nset grid\nset yrange [0:1]\n"
                "set xrange [0:%g]\nplot ",
                r->res[0].samples, dist, H);
        for (int i = 0, first = 1; i < r->count; i++)
            if (plotted(r, i)) {
                fprintf(gp, "%s'%s' using 1:%d with lines lw 2 title '%s (%.4f)'",
                        first ? "" : ", ", data, i + 2, r->pol[i].name, r->res[i].accuracy);
                first = 0;
            }
        fprintf(gp, "\n");
        int st = pclose(gp);
        if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st))
            rc = ei_err_set(err, EI_E_IO, "--plot: gnuplot failed (exit status %d) writing %s",
                            WIFEXITED(st) ? WEXITSTATUS(st) : -1, a->plot);
    }
    unlink(data);
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

static int run_policies(run_t *r, const args_t *a, ei_err_t *err)
{
    int samples =
        (int)(a->samples < profile_cs_count(r->test) ? a->samples : profile_cs_count(r->test));
    for (int i = 0; i < r->count; i++) {
        elastic_curve_t curve = {CURVE_POINTS, NULL};
        if (a->plot && !(curve.acc = r->curve[i] = calloc(CURVE_POINTS, sizeof(double))))
            return ei_err_set(err, EI_E_NOMEM, "out of memory");
        if (elastic_evaluate(r->el, &r->pol[i], r->test, samples, &r->res[i],
                             a->plot ? &curve : NULL, err))
            return ei_err_prefix(err, "%s: ", r->pol[i].name);
    }
    return 0;
}

static void run_free(run_t *r)
{
    for (int i = 0; i < r->count; i++)
        free(r->curve[i]);
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
    a->json ? print_json(r, a) : print_table(r, a, dir);
    if (a->plot && plot(r, a, &err))
        return cli_fail("elastic", "%s", err.msg);
    return CLI_OK;
}

int cmd_elastic(int argc, char **argv)
{
    args_t a = {.samples = 10000000, .m = 4, .n_random = 10000, .overhead_us = -1};
    int rc = parse_args(argc, argv, &a);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    if (a.plot && !on_path("gnuplot"))
        return cli_fail("elastic", "--plot needs gnuplot, which is not on PATH (Debian: "
                                   "apt-get install gnuplot-nox)");
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
