/* Tests of planner/elastic: every policy's elastic accuracy on a small crafted profile
 * against hand-computed values (uniform) and brute-force integration (normal), the timeline
 * against the planner's own expectation, the charged overhead, the oracle as the ceiling of
 * every policy on random profiles, the accuracy-in-effect curve, and `einet elastic`. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "planner/elastic.h"

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/einet-test-elastic-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd);
}

static const planner_dist_t UNIFORM = {PLANNER_DIST_UNIFORM, 0, 0};
static const planner_dist_t NORMAL = {PLANNER_DIST_NORMAL, 0.5, 0.25};

/* ---- the crafted profile ---- */

/* Three blocks, c = b = 1 ms: with every branch, exits arrive at 2, 4 and 6 = H (never in
 * effect). Four samples, two classes, label 0; each exit's confidence and correctness:
 *   s0: 0.95 / 0.6 / 0.7, right right right
 *   s1: 0.6 / 0.85 / 0.9, wrong right wrong
 *   s2: 0.9 / 0.55 / 0.99, right wrong right
 *   s3: 0.55 / 0.6 / 0.65, wrong wrong wrong */
static const float crafted_conf[4][3] = {
    {0.95f, 0.6f, 0.7f}, {0.6f, 0.85f, 0.9f}, {0.9f, 0.55f, 0.99f}, {0.55f, 0.6f, 0.65f}};
static const int crafted_right[4][3] = {{1, 1, 1}, {0, 1, 0}, {1, 0, 1}, {0, 0, 0}};

static profile_cs_t *crafted_cs(void)
{
    ei_err_t err = {0};
    profile_cs_t *cs = profile_cs_new(4, 3, 2, "test", "crafted", &err);
    assert_non_null(cs);
    for (int i = 0; i < 4; i++) {
        float p[6];
        for (int k = 0; k < 3; k++) {
            float c = crafted_conf[i][k];
            p[2 * k] = crafted_right[i][k] ? c : 1 - c;
            p[2 * k + 1] = 1 - p[2 * k];
        }
        assert_int_equal(profile_cs_set(cs, i, p, 0, i, &err), 0);
    }
    return cs;
}

static planner_profile_t crafted_et(void)
{
    planner_profile_t pr;
    planner_profile_init(&pr, 3);
    for (int k = 0; k < 3; k++)
        pr.conv_ms[k] = pr.branch_ms[k] = 1;
    return pr;
}

static elastic_t *context(const planner_profile_t *pr, const planner_dist_t *d)
{
    ei_err_t err = {0};
    elastic_t *el = elastic_new(pr, d, &err);
    if (!el)
        fail_msg("%s", err.msg);
    return el;
}

static double evaluate(elastic_t *el, const elastic_policy_t *p, const profile_cs_t *cs)
{
    elastic_result_t res;
    ei_err_t err = {0};
    if (elastic_evaluate(el, p, cs, profile_cs_count(cs), &res, NULL, &err))
        fail_msg("%s: %s", p->name, err.msg);
    return res.accuracy;
}

static void assert_near(double a, double b, double tol, const char *what)
{
    if (!(fabs(a - b) <= tol))
        fail_msg("%s: %.17g vs %.17g", what, a, b);
}

static void test_crafted_uniform(void **state)
{
    (void)state;
    planner_profile_t pr = crafted_et();
    elastic_t *el = context(&pr, &UNIFORM);
    profile_cs_t *cs = crafted_cs();
    elastic_policy_t p;
    /* Direct count: correct time over H = 6 per sample, averaged. static-100: s0 on [2, 6),
     * s1 on [4, 6), s2 on [2, 4), s3 never: (4 + 2 + 2 + 0) / 24. */
    elastic_policy_every(&p, "static-100", 3, 1);
    assert_near(evaluate(el, &p, cs), 8.0 / 24, 1e-15, "static-100");
    /* single-exit: exit 3 alone arrives at 4: s0 and s2 on [4, 6). */
    elastic_policy_single(&p, 3);
    assert_near(evaluate(el, &p, cs), 4.0 / 24, 1e-15, "single-exit");
    /* static-50 on 3 exits: the 2nd and the final one; exit 2 arrives at 3: s0 and s1. */
    elastic_policy_every(&p, "static-50", 3, 2);
    assert_true(!p.plan[0] && p.plan[1] && p.plan[2]);
    assert_near(evaluate(el, &p, cs), 6.0 / 24, 1e-15, "static-50");
    /* confidence-0.8: s0 stops at exit 1 (right from 2 on), s1 runs to exit 2 (right from
     * 4), s2 stops at exit 1 (right from 2 on: exit 2's wrong answer never comes), s3 runs
     * everything. */
    elastic_policy_confidence(&p, 0.8);
    assert_string_equal(p.name, "confidence-0.8");
    assert_near(evaluate(el, &p, cs), 10.0 / 24, 1e-15, "confidence-0.8");
    /* oracle: s0 and s2 exit 1 alone (from 2), s1 exit 2 alone (arrives at 3). */
    elastic_policy_oracle(&p);
    assert_near(evaluate(el, &p, cs), 11.0 / 24, 1e-15, "oracle");
    /* The curve: accuracy in effect at tau = 0, 1, ..., 6. */
    double acc[7];
    elastic_curve_t curve = {7, acc};
    elastic_result_t res;
    ei_err_t err = {0};
    elastic_policy_every(&p, "static-100", 3, 1);
    assert_int_equal(elastic_evaluate(el, &p, cs, 4, &res, &curve, &err), 0);
    const double want[7] = {0, 0, 0.5, 0.5, 0.5, 0.5, 0.5};
    for (int g = 0; g < 7; g++)
        assert_near(acc[g], want[g], 1e-15, "curve");
    assert_int_equal(elastic_evaluate(el, &p, cs, 5, &res, NULL, &err), EI_E_RANGE);
    profile_cs_destroy(&cs);
    elastic_destroy(&el);
    assert_null(el);
}

/* F of the truncated normal, computed here from erf on its own. */
static double trunc_normal_cdf(double t, double H, double mu, double sigma)
{
    double m = mu * H, s = sigma * H * sqrt(2.0);
    double lo = erf((0 - m) / s), hi = erf((H - m) / s);
    t = t < 0 ? 0 : t > H ? H : t;
    return (erf((t - m) / s) - lo) / (hi - lo);
}

static void test_crafted_normal(void **state)
{
    (void)state;
    planner_profile_t pr = crafted_et();
    elastic_t *el = context(&pr, &NORMAL);
    profile_cs_t *cs = crafted_cs();
    elastic_policy_t p;
    elastic_policy_every(&p, "static-100", 3, 1);
    /* Brute force: the correct time of each sample integrated against the density by the
     * midpoint rule on 600,000 steps. */
    const double lo[4] = {2, 4, 2, 0}, hi[4] = {6, 6, 4, 0};
    double want = 0;
    int steps = 600000;
    for (int s = 0; s < 4; s++)
        for (int i = 0; i < steps; i++) {
            double t = 6.0 * (i + 0.5) / steps;
            if (t >= lo[s] && t < hi[s])
                want += (trunc_normal_cdf(6.0 * (i + 1) / steps, 6, 0.5, 0.25) -
                         trunc_normal_cdf(6.0 * i / steps, 6, 0.5, 0.25)) /
                        4;
        }
    assert_near(evaluate(el, &p, cs), want, 1e-9, "static-100 normal");
    profile_cs_destroy(&cs);
    elastic_destroy(&el);
}

/* ---- random profiles ---- */

static double unif(ei_rng_t *r, double a, double b)
{
    return a + (b - a) * ei_rng_uniform(r);
}

/* A random ET-profile; with tiers, links and result delays that can reorder arrivals. */
static planner_profile_t random_et(ei_rng_t *r, int n, int tiers)
{
    planner_profile_t pr;
    planner_profile_init(&pr, n);
    for (int k = 0; k < n; k++) {
        pr.conv_ms[k] = unif(r, 0.05, 0.4);
        pr.branch_ms[k] = pr.conv_ms[k] * unif(r, 0.1, 0.8);
        if (tiers) {
            pr.link_ms[k] = k == n / 3 || k == 2 * n / 3 ? unif(r, 0, 0.5) : 0;
            pr.result_ms[k] = k < n / 3 ? unif(r, 0, 0.4) : k < 2 * n / 3 ? unif(r, 0, 0.1) : 0;
        }
    }
    return pr;
}

/* Random samples whose exits grow more often right with depth. */
static profile_cs_t *random_cs(ei_rng_t *r, int count, int n, int K)
{
    ei_err_t err = {0};
    profile_cs_t *cs = profile_cs_new(count, n, K, "test", "random", &err);
    float *p = malloc((size_t)(n * K) * sizeof *p);
    for (int i = 0; i < count; i++) {
        int label = (int)ei_rng_below(r, (uint32_t)K);
        for (int k = 0; k < n; k++) {
            double sum = 0;
            for (int c = 0; c < K; c++)
                sum += p[k * K + c] = (float)ei_rng_uniform(r) + (c == label ? 0.1f * k : 0);
            for (int c = 0; c < K; c++)
                p[k * K + c] = (float)(p[k * K + c] / sum);
        }
        assert_int_equal(profile_cs_set(cs, i, p, label, i, &err), 0);
    }
    free(p);
    return cs;
}

/* Every policy worth comparing, over predictors of both kinds and several searches. */
static int all_policies(elastic_t *el, int n, predictor_t **preds, elastic_policy_t *pol)
{
    int count = 0;
    elastic_policy_every(&pol[count++], "static-25", n, 4);
    elastic_policy_every(&pol[count++], "static-50", n, 2);
    elastic_policy_every(&pol[count++], "static-100", n, 1);
    elastic_policy_single(&pol[count++], n);
    elastic_policy_confidence(&pol[count++], 0.3);
    elastic_policy_confidence(&pol[count++], 0.6);
    double acc[PLANNER_MAX_EXITS];
    uint8_t plan[PLANNER_MAX_EXITS];
    for (int k = 0; k < n; k++)
        acc[k] = 0.5 + 0.4 * k / n;
    ei_err_t err = {0};
    assert_int_equal(elastic_static_opt(el, acc, plan, &err), 0);
    elastic_policy_fixed(&pol[count++], "static-opt", plan, n);
    const planner_search_kind_t kinds[3] = {PLANNER_SEARCH_HYBRID, PLANNER_SEARCH_EXACT,
                                            PLANNER_SEARCH_RANDOM};
    const double overhead[3] = {-1, 0, 50};
    for (int q = 0; q < 2; q++)
        for (int s = 0; s < 3; s++) {
            planner_search_t search;
            planner_search_init(&search);
            search.kind = kinds[s];
            search.m = 2;
            search.n_random = 50;
            elastic_policy_planned(&pol[count], "planned", preds[q], &search);
            pol[count++].overhead_us = overhead[s];
        }
    return count;
}

static void test_oracle_is_the_ceiling(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 42);
    ei_err_t err = {0};
    for (int inst = 0; inst < 24; inst++) {
        int n = 2 + (int)ei_rng_below(&r, 9), K = 3;
        planner_profile_t pr = random_et(&r, n, inst % 2);
        elastic_t *el = context(&pr, inst % 3 ? &UNIFORM : &NORMAL);
        profile_cs_t *cs = random_cs(&r, 25, n, K);
        predictor_t *preds[2] = {predictor_new(PREDICTOR_CONFIDENCE, n, K, 8, 4, inst, &err),
                                 predictor_new(PREDICTOR_CORRECTNESS, n, K, 8, 4, inst, &err)};
        elastic_policy_t pol[16], oracle;
        int count = all_policies(el, n, preds, pol);
        elastic_policy_oracle(&oracle);
        for (int i = 0; i < 25; i++) {
            elastic_trace_t best, tr;
            assert_int_equal(elastic_run_sample(el, &oracle, NULL, cs, i, &best, &err), 0);
            for (int q = 0; q < count; q++) {
                assert_int_equal(elastic_run_sample(el, &pol[q], NULL, cs, i, &tr, &err), 0);
                if (tr.value > best.value + 1e-12)
                    fail_msg("instance %d sample %d: %s %.17g above the oracle's %.17g", inst, i,
                             pol[q].name, tr.value, best.value);
            }
        }
        predictor_destroy(&preds[0]);
        predictor_destroy(&preds[1]);
        profile_cs_destroy(&cs);
        elastic_destroy(&el);
    }
}

static void test_value_equals_planner_expectation(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 7);
    for (int inst = 0; inst < 200; inst++) {
        int n = 1 + (int)ei_rng_below(&r, 12);
        planner_profile_t pr = random_et(&r, n, inst % 2);
        elastic_t *el = context(&pr, inst % 2 ? &NORMAL : &UNIFORM);
        uint8_t plan[PLANNER_MAX_EXITS], correct[PLANNER_MAX_EXITS];
        double scores[PLANNER_MAX_EXITS];
        for (int k = 0; k < n; k++) {
            plan[k] = (uint8_t)ei_rng_below(&r, 2);
            correct[k] = (uint8_t)ei_rng_below(&r, 2);
            scores[k] = correct[k];
        }
        elastic_policy_t p;
        elastic_policy_fixed(&p, "fixed", plan, n);
        profile_cs_t *cs = random_cs(&r, 1, n, 2);
        elastic_trace_t tr;
        ei_err_t err = {0};
        assert_int_equal(elastic_run_sample(el, &p, NULL, cs, 0, &tr, &err), 0);
        double mine = elastic_trace_value(el, &tr, correct);
        double theirs = planner_expect(elastic_planner(el), scores, plan, NULL);
        assert_near(mine, theirs, 1e-12, "value vs planner_expect");
        /* The timeline covers [0, H] without gaps. */
        elastic_interval_t iv[PLANNER_MAX_EXITS + 1];
        int m = elastic_timeline(el, &tr, iv);
        assert_true(m >= 1 && iv[0].start_ms == 0 && iv[m - 1].end_ms == elastic_horizon(el));
        for (int i = 1; i < m; i++)
            assert_true(iv[i].start_ms == iv[i - 1].end_ms && iv[i].exit > iv[i - 1].exit);
        profile_cs_destroy(&cs);
        elastic_destroy(&el);
    }
}

static void test_overhead_is_charged(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 5);
    ei_err_t err = {0};
    for (int inst = 0; inst < 20; inst++) {
        int n = 3 + (int)ei_rng_below(&r, 6), K = 4;
        planner_profile_t pr = random_et(&r, n, inst % 2);
        elastic_t *el = context(&pr, &UNIFORM);
        profile_cs_t *cs = random_cs(&r, 10, n, K);
        predictor_t *pred = predictor_new(PREDICTOR_CORRECTNESS, n, K, 8, 4, inst, &err);
        planner_search_t s;
        planner_search_init(&s);
        s.kind = PLANNER_SEARCH_HYBRID;
        elastic_policy_t p;
        elastic_policy_planned(&p, "einet", pred, &s);
        for (int i = 0; i < 10; i++) {
            /* Fixed overhead X: exit k arrives X later for every replan before it, i.e. for
             * every exit executed before it. */
            double X = 0.0375;
            p.overhead_us = 1e3 * X;
            elastic_trace_t tr;
            assert_int_equal(elastic_run_sample(el, &p, NULL, cs, i, &tr, &err), 0);
            double t = 0;
            int before = 0;
            for (int k = 0; k < n; k++) {
                t += pr.conv_ms[k] + (tr.executed[k] ? pr.branch_ms[k] : 0);
                if (tr.executed[k]) {
                    assert_near(tr.arrive_ms[k], t + pr.result_ms[k] + X * before, 1e-12,
                                "arrival");
                    before++;
                }
                t += k < n - 1 ? pr.link_ms[k] : 0;
            }
            assert_int_equal(tr.replans, before - (tr.executed[n - 1] ? 1 : 0));
            assert_near(tr.charged_ms, X * tr.replans, 1e-12, "charged");
            /* Measured overhead: what is charged is what was measured. */
            p.overhead_us = -1;
            assert_int_equal(elastic_run_sample(el, &p, NULL, cs, i, &tr, &err), 0);
            assert_near(tr.charged_ms, (tr.predict_us + tr.search_us) / 1e3, 1e-9, "measured");
        }
        predictor_destroy(&pred);
        profile_cs_destroy(&cs);
        elastic_destroy(&el);
    }
}

/* ---- the command ---- */

static int run_einet(const char *args, char *out, size_t len)
{
    char cmd[1024], path[128];
    snprintf(path, sizeof path, "%s/out.txt", tmpdir);
    snprintf(cmd, sizeof cmd, "'%s/einet' %s >%s 2>/dev/null", getenv("EINET_BIN"), args, path);
    int st = system(cmd);
    if (out) {
        FILE *f = fopen(path, "r");
        size_t got = f ? fread(out, 1, len - 1, f) : 0;
        out[got] = 0;
        if (f)
            fclose(f);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The crafted profile as a profile directory with untrained predictors of both kinds. */
static void write_dir(void)
{
    char path[256];
    ei_err_t err = {0};
    profile_et_t et;
    profile_et_init(&et, 3);
    et.times = crafted_et();
    snprintf(path, sizeof path, "%s/%s", tmpdir, PROFILE_ET_FILE);
    assert_int_equal(profile_et_save(&et, path, &err), 0);
    profile_cs_t *cs = crafted_cs();
    snprintf(path, sizeof path, "%s/%s", tmpdir, PROFILE_CS_VAL_FILE);
    assert_int_equal(profile_cs_save(cs, path, &err), 0);
    snprintf(path, sizeof path, "%s/%s", tmpdir, PROFILE_CS_TEST_FILE);
    assert_int_equal(profile_cs_save(cs, path, &err), 0);
    for (int kind = 0; kind < 2; kind++) {
        predictor_t *p = predictor_new((predictor_kind_t)kind, 3, 2, 4, 3, 1, &err);
        snprintf(path, sizeof path, "%s/predictor-%s.safetensors", tmpdir,
                 predictor_kind_name((predictor_kind_t)kind));
        assert_int_equal(predictor_save(p, path, "crafted", NULL, &err), 0);
        predictor_destroy(&p);
    }
    profile_cs_destroy(&cs);
}

static void test_cli(void **state)
{
    (void)state;
    if (!getenv("EINET_BIN"))
        skip();
    write_dir();
    static char args[512], out[1 << 20]; /* the JSON carries every curve */
    assert_int_equal(run_einet("elastic --help", NULL, 0), 0);
    assert_int_equal(run_einet("elastic --bogus", NULL, 0), 2);
    assert_int_equal(run_einet("elastic --dist gamma", NULL, 0), 2);
    assert_int_equal(run_einet("elastic --dist normal:0.5:0", NULL, 0), 2);
    assert_int_equal(run_einet("elastic --dist normal:0.5", NULL, 0), 2);
    assert_int_equal(run_einet("elastic --samples 0", NULL, 0), 2);
    assert_int_equal(run_einet("elastic --m x", NULL, 0), 2);
    assert_int_equal(run_einet("elastic stray", NULL, 0), 2);
    assert_int_equal(run_einet("elastic --profiles /nonexistent", NULL, 0), 1);
    snprintf(args, sizeof args, "elastic --profiles %s --policies static-100,nope", tmpdir);
    assert_int_equal(run_einet(args, NULL, 0), 2);
    snprintf(args, sizeof args, "elastic --profiles %s --json --overhead-us 0", tmpdir);
    assert_int_equal(run_einet(args, out, sizeof out), 0);
    json_error_t jerr;
    json_t *root = json_loads(out, 0, &jerr);
    if (!root)
        fail_msg("not JSON: %s", out);
    json_t *pol = json_object_get(root, "policies");
    assert_int_equal(json_integer_value(json_object_get(root, "samples")), 4);
    assert_string_equal(json_string_value(json_object_get(json_object_get(root, "dist"), "kind")),
                        "uniform");
    assert_near(json_real_value(json_object_get(pol, "static-100")), 8.0 / 24, 1e-6, "cli 100");
    assert_near(json_real_value(json_object_get(pol, "single-exit")), 4.0 / 24, 1e-6, "cli 1");
    assert_near(json_real_value(json_object_get(pol, "confidence-0.8")), 10.0 / 24, 1e-6, "c.8");
    assert_near(json_real_value(json_object_get(pol, "oracle")), 11.0 / 24, 1e-6, "oracle");
    static const char *const names[] = {
        "einet",      "einet-confidence", "static-25",      "static-50",       "static-100",
        "static-opt", "confidence-0.8",   "confidence-0.9", "confidence-0.95", "confidence-0.99",
        "random",     "single-exit",      "oracle"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        json_t *v = json_object_get(pol, names[i]);
        if (!json_is_real(v) || json_real_value(v) > 11.0 / 24 + 1e-9)
            fail_msg("policy %s: missing or above the oracle", names[i]);
    }
    json_decref(root);
    snprintf(args, sizeof args, "elastic --profiles %s --dist normal:0.4:0.3 --policies oracle",
             tmpdir);
    assert_int_equal(run_einet(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "normal(0.4, 0.3)"));
    if (access("/usr/bin/gnuplot", X_OK) == 0) {
        char png[256];
        snprintf(png, sizeof png, "%s/plot.png", tmpdir);
        snprintf(args, sizeof args, "elastic --profiles %s --plot %s", tmpdir, png);
        assert_int_equal(run_einet(args, NULL, 0), 0);
        FILE *f = fopen(png, "rb");
        unsigned char magic[4] = {0};
        assert_non_null(f);
        assert_int_equal(fread(magic, 1, 4, f), 4);
        fclose(f);
        assert_memory_equal(magic, "\x89PNG", 4);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crafted_uniform),
        cmocka_unit_test(test_crafted_normal),
        cmocka_unit_test(test_value_equals_planner_expectation),
        cmocka_unit_test(test_overhead_is_charged),
        cmocka_unit_test(test_oracle_is_the_ceiling),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
