/* The live side of the elastic evaluation (planner/elastic_live.c) and the figures of
 * `einet elastic`: the tally of a live run against a hand-computed case, the stratified
 * deadlines, the answer in effect at one time, and the JSON curves and --plot of the tool. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "planner/elastic.h"
#include "test_util.h"

/* Two blocks of 1 ms each, no links: H = 2 ms. */
static elastic_t *two_blocks(planner_dist_kind_t kind)
{
    planner_profile_t p;
    planner_profile_init(&p, 2);
    p.conv_ms[0] = p.conv_ms[1] = 0.6;
    p.branch_ms[0] = p.branch_ms[1] = 0.4;
    planner_dist_t d = {kind, 0.5, 0.25};
    ei_err_t err;
    elastic_t *el = elastic_new(&p, &d, &err);
    assert_non_null(el);
    return el;
}

/* Six answers worked out by hand: two right (one complete), one wrong, one with no exit,
 * one failed (rejected), and latencies past their deadlines by 10, 30, 50, 70 and 100 us;
 * one deadline answer came 2 us early (a bug the tally must count). */
static void test_tally_by_hand(void **state)
{
    (void)state;
    elastic_t *el = two_blocks(PLANNER_DIST_UNIFORM);
    const elastic_live_answer_t a[] = {
        {0.100, 2, 0, 0, 0.110}, /* no exit yet: wrong, 10 us late */
        {0.900, 2, 1, 1, 0.930}, /* exit 1 right, 30 us late */
        {1.450, 2, 1, 0, 1.500}, /* exit 1 wrong, 50 us late */
        {1.900, 1, 2, 1, 1.700}, /* complete before its deadline: right */
        {1.950, 2, 2, 1, 2.050}, /* exit 2 right (sic: a deadline answer), 100 us late */
        {0.450, 2, 1, 1, 0.448}, /* 2 us early */
        {1.200, 4, 0, 0, 0.000}, /* rejected: failed, wrong */
    };
    int n = (int)(sizeof a / sizeof a[0]);
    elastic_live_result_t r;
    double acc[3];
    elastic_curve_t curve = {3, acc};
    ei_err_t err;
    assert_int_equal(elastic_live_tally(el, a, n, &r, &curve, &err), 0);
    assert_int_equal(r.answers, 7);
    assert_int_equal(r.deadline, 5 + 0 + 0 + 1 - 1); /* statuses 2: rows 1,2,3,5,6 */
    assert_int_equal(r.complete, 1);
    assert_int_equal(r.failed, 1);
    assert_int_equal(r.early, 1);
    assert_true(fabs(r.accuracy - 4.0 / 7) < 1e-12);
    /* late of the deadline answers, sorted: -2, 10, 30, 50, 100 us: p50 = 30, p99 = max. */
    assert_true(fabs(r.late_p50_us - 30) < 1e-6);
    assert_true(fabs(r.late_p99_us - 100) < 1e-6);
    assert_true(fabs(r.late_max_us - 100) < 1e-6);
    /* Bins nearest 0, 1 and 2 ms: {0.1, 0.45} -> 1/2; {0.9, 1.45, 1.2} -> 1/3; {1.9, 1.95} -> 1. */
    assert_true(fabs(acc[0] - 0.5) < 1e-12);
    assert_true(fabs(acc[1] - 1.0 / 3) < 1e-12);
    assert_true(fabs(acc[2] - 1.0) < 1e-12);
    assert_int_equal(elastic_live_tally(el, a, 0, &r, NULL, &err), EI_E_RANGE);
    elastic_destroy(&el);
}

/* One draw in each stratum of equal probability: uniform draws sorted fall in
 * [i H / N, (i + 1) H / N); normal ones have F(draw) in [i / N, (i + 1) / N). */
static void test_deadlines_are_stratified(void **state)
{
    (void)state;
    enum { N = 997 };
    double *t = malloc(N * sizeof *t);
    for (int kind = 0; kind < 2; kind++) {
        elastic_t *el = two_blocks(kind ? PLANNER_DIST_NORMAL : PLANNER_DIST_UNIFORM);
        elastic_live_deadlines(el, N, 42, t);
        int *hit = calloc(N, sizeof *hit), in_order = 1;
        for (int i = 0; i < N; i++) {
            double u = planner_cdf(elastic_planner(el), t[i]);
            int s = (int)floor(u * N - 1e-9);
            s = s < 0 ? 0 : s >= N ? N - 1 : s;
            hit[s]++;
            in_order &= i == 0 || t[i] > t[i - 1];
            assert_true(t[i] >= 0 && t[i] <= elastic_horizon(el));
        }
        for (int s = 0; s < N; s++)
            assert_int_equal(hit[s], 1);
        assert_false(in_order); /* shuffled, so images and times are not paired in order */
        free(hit);
        elastic_destroy(&el);
    }
    free(t);
}

/* The answer in effect at tau, from a trace by hand: exit 1 arrives at 1.0 ms, exit 2 at
 * 2.0 ms = H (never in effect before H; the last interval holds exit 1). */
static void test_trace_at(void **state)
{
    (void)state;
    elastic_t *el = two_blocks(PLANNER_DIST_UNIFORM);
    elastic_trace_t tr;
    memset(&tr, 0, sizeof tr);
    tr.n = 2;
    tr.executed[0] = tr.executed[1] = 1;
    tr.arrive_ms[0] = 1.0;
    tr.arrive_ms[1] = 1.5;
    const uint8_t right_wrong[2] = {1, 0}, wrong_right[2] = {0, 1};
    assert_int_equal(elastic_trace_at(el, &tr, right_wrong, 0.99), 0);
    assert_int_equal(elastic_trace_at(el, &tr, right_wrong, 1.0), 1);
    assert_int_equal(elastic_trace_at(el, &tr, right_wrong, 1.49), 1);
    assert_int_equal(elastic_trace_at(el, &tr, right_wrong, 1.5), 0);
    assert_int_equal(elastic_trace_at(el, &tr, wrong_right, 2.0), 1);
    /* Averaged over a fine grid, the values integrate to elastic_trace_value's. */
    double sum = 0;
    for (int g = 0; g < 20000; g++)
        sum += elastic_trace_at(el, &tr, wrong_right, (g + 0.5) * 2.0 / 20000);
    assert_true(fabs(sum / 20000 - elastic_trace_value(el, &tr, wrong_right)) < 1e-3);
    /* Over a horizon of 4 ms instead (a live run's deadlines): exit 1 right on [1, 1.5),
     * exit 2 right on [1.5, 4): 0.5 / 4 and 2.5 / 4 by hand; a horizon of 0 is refused. */
    ei_err_t err;
    assert_int_equal(elastic_set_horizon(el, 4.0, &err), 0);
    assert_true(fabs(elastic_horizon(el) - 4.0) < 1e-12);
    assert_true(fabs(elastic_trace_value(el, &tr, right_wrong) - 0.125) < 1e-12);
    assert_true(fabs(elastic_trace_value(el, &tr, wrong_right) - 0.625) < 1e-12);
    assert_int_equal(elastic_trace_at(el, &tr, wrong_right, 3.9), 1);
    assert_int_equal(elastic_set_horizon(el, 0, &err), EI_E_RANGE);
    elastic_destroy(&el);
}

/* Runs `einet ARGS`, stdout into out (cap bytes) and stderr into err; the exit code. The
 * stderr file is a private temporary one (mkstemp), never a predictable /tmp path. */
static int run_capture(const char *args, char *out, size_t cap, char *errbuf, size_t ecap)
{
    char cmd[1024], errpath[] = "/tmp/einet-test-live-err-XXXXXX";
    int fd = mkstemp(errpath);
    assert_true(fd >= 0);
    close(fd);
    snprintf(cmd, sizeof cmd, "'%s/einet' %s 2>'%s'", getenv("EINET_BIN"), args, errpath);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    FILE *e = fopen(errpath, "rb");
    size_t m = e ? fread(errbuf, 1, ecap - 1, e) : 0;
    errbuf[m] = 0;
    if (e)
        fclose(e);
    unlink(errpath);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* --json on 30 samples: each policy's curve on the time grid, values in [0, 1], whose mean
 * (uniform interruption) is its elastic accuracy up to the grid's resolution; the fixed
 * plans are given. */
static void test_json_curves(void **state)
{
    (void)state;
    static char out[1 << 20], errbuf[4096];
    assert_int_equal(run_capture("elastic --samples 30 --json --policies static-100,static-opt,"
                                 "confidence-0.9",
                                 out, sizeof out, errbuf, sizeof errbuf),
                     0);
    json_t *root = json_loads(out, 0, NULL);
    assert_non_null(root);
    json_t *curves = json_object_get(root, "curves");
    json_t *t = json_object_get(curves, "t_ms"), *pred = json_object_get(curves, "predicted");
    assert_int_equal(json_array_size(t), 401);
    double H = json_real_value(json_object_get(root, "horizon_ms"));
    assert_true(fabs(json_real_value(json_array_get(t, 400)) - H) < 1e-4);
    const char *key;
    json_t *v;
    int policies = 0;
    json_object_foreach(pred, key, v)
    {
        assert_int_equal(json_array_size(v), 401);
        double sum = 0;
        for (size_t g = 0; g < 401; g++) {
            double x = json_real_value(json_array_get(v, g));
            assert_true(x >= 0 && x <= 1);
            sum += g == 0 || g == 400 ? x / 2 : x;
        }
        double acc = json_real_value(json_object_get(json_object_get(root, "policies"), key));
        assert_true(fabs(sum / 400 - acc) < 0.01);
        policies++;
    }
    assert_int_equal(policies, 3);
    json_t *d = json_object_get(json_object_get(root, "details"), "static-100");
    assert_string_equal(json_string_value(json_object_get(d, "plan")), "11111111");
    assert_string_equal(json_string_value(json_object_get(root, "model")), "fmnist-8exit");
    json_decref(root);
}

/* A --plot path that cannot be written: exit 1 and one line of text on stderr (no PNG
 * bytes), before any work; a writable one gets a PNG. */
static void test_plot(void **state)
{
    (void)state;
    static char out[1 << 16], errbuf[1 << 16];
    assert_int_equal(run_capture("elastic --samples 10 --policies static-100,static-opt "
                                 "--plot /nonexistent-dir/x.png",
                                 out, sizeof out, errbuf, sizeof errbuf),
                     1);
    size_t len = strlen(errbuf);
    assert_true(len > 0 && len < 200);
    assert_int_equal(strchr(errbuf, '\n') - errbuf, (long)len - 1);
    for (size_t i = 0; i < len; i++)
        assert_true(errbuf[i] == '\n' || (errbuf[i] >= 32 && errbuf[i] < 127));
    assert_non_null(strstr(errbuf, "/nonexistent-dir/x.png"));
    if (system("command -v gnuplot >/dev/null 2>&1") != 0)
        return; /* the figure needs gnuplot; scripts/setup.sh installs it */
    char path[] = "/tmp/einet-test-plot-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char args[256];
    snprintf(args, sizeof args, "elastic --samples 10 --policies static-100,static-opt --plot %s",
             path);
    assert_int_equal(run_capture(args, out, sizeof out, errbuf, sizeof errbuf), 0);
    FILE *f = fopen(path, "rb");
    unsigned char magic[8] = {0};
    assert_non_null(f);
    assert_int_equal(fread(magic, 1, 8, f), 8);
    fclose(f);
    unlink(path);
    assert_memory_equal(magic, "\x89PNG\r\n\x1a\n", 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tally_by_hand),
        cmocka_unit_test(test_deadlines_are_stratified),
        cmocka_unit_test(test_trace_at),
        cmocka_unit_test(test_json_curves),
        cmocka_unit_test(test_plot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
