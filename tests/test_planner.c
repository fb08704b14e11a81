/* Tests of planner/: the accuracy expectation against hand-computed cases and a plain
 * reference (the DESIGN.md formulas evaluated interval by interval), every search against
 * exhaustive enumeration on seeded random instances, the instance parser, and `einet plan`. */
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

#include "planner/planner.h"

/* ---- instances and the reference ------------------------------------------------------ */

typedef struct inst {
    planner_profile_t pr;
    planner_dist_t dist;
    double C[PLANNER_MAX_EXITS];
} inst_t;

static const planner_dist_t UNIFORM = {PLANNER_DIST_UNIFORM, 0, 0};
static const planner_dist_t NORMAL = {PLANNER_DIST_NORMAL, 0.5, 0.25};

enum { FLAVOR_TIERS = 1, FLAVOR_RANDOM_SCORES = 2 };

static double unif(ei_rng_t *r, double lo, double hi)
{
    return lo + (hi - lo) * ei_rng_uniform(r);
}

/* A profile shaped like a real multi-exit model: conv parts 0.05-0.4 ms, branches 10-80%
 * of their conv part, scores rising with depth plus noise (or uniform at random). With
 * FLAVOR_TIERS the blocks are split over device/edge/cloud with link times at the two
 * boundaries and per-tier result delays, which can make arrivals come out of depth order. */
static void gen(ei_rng_t *r, int n, int flavor, const planner_dist_t *d, inst_t *out)
{
    memset(out, 0, sizeof *out);
    planner_profile_init(&out->pr, n);
    out->dist = *d;
    int k1 = 1 + (int)ei_rng_below(r, (uint32_t)(n > 2 ? n - 1 : 1));
    int k2 = k1 + (int)ei_rng_below(r, (uint32_t)(n - k1 + 1));
    double rt[3] = {unif(r, 0.3, 2), unif(r, 0, 1), unif(r, 0.2, 3)};
    for (int k = 0; k < n; k++) {
        out->pr.conv_ms[k] = unif(r, 0.05, 0.4);
        out->pr.branch_ms[k] = out->pr.conv_ms[k] * unif(r, 0.1, 0.8);
        if (flavor & FLAVOR_TIERS) {
            int tier = k < k1 ? 0 : k < k2 ? 1 : 2;
            out->pr.result_ms[k] = rt[tier];
            if (k == k1 - 1 || k == k2 - 1)
                out->pr.link_ms[k] = unif(r, 0.2, 2);
        }
        double c = (flavor & FLAVOR_RANDOM_SCORES)
                       ? ei_rng_uniform(r)
                       : 0.3 + 0.6 * (k + 1) / n + 0.12 * ei_rng_normal(r);
        out->C[k] = c < 0 ? 0 : c > 1 ? 1 : c;
    }
}

static double ref_cdf(const planner_dist_t *d, double H, double t)
{
    if (t <= 0)
        return 0;
    if (t >= H)
        return 1;
    if (d->kind == PLANNER_DIST_UNIFORM)
        return t / H;
    double m = d->mu * H, s = d->sigma * H;
    double lo = 0.5 * (1 + erf((0 - m) / (s * sqrt(2)))),
           hi = 0.5 * (1 + erf((H - m) / (s * sqrt(2))));
    return (0.5 * (1 + erf((t - m) / (s * sqrt(2)))) - lo) / (hi - lo);
}

/* DESIGN.md literally: e_k = sum_{j<k}(c_j + p_j b_j + L_j) + c_k + b_k, a_k = e_k + r_k,
 * H = a_n of the all-ones plan, the answer at tau the deepest arrived; integrated over the
 * pieces between sorted arrival times by CDF differences. With an offset, the base answer
 * and pending results come first (shallower than every free exit). */
static double ref_expect(const inst_t *in, const double *C, const uint8_t *plan,
                         const planner_offset_t *off)
{
    const planner_profile_t *p = &in->pr;
    int n = p->n;
    double H = 0;
    for (int k = 0; k < n; k++)
        H += p->conv_ms[k] +
             (k < n - 1 ? p->branch_ms[k] + p->link_ms[k] : p->branch_ms[k] + p->result_ms[k]);
    double at[3 * PLANNER_MAX_EXITS], sc[3 * PLANNER_MAX_EXITS];
    int cnt = 0, x = off ? off->x : 0;
    double t0 = off ? off->t0_ms : 0;
    at[cnt] = t0;
    sc[cnt++] = off ? off->c0 : 0;
    for (int i = 0; off && i < off->n_pending; i++) {
        at[cnt] = off->pending_ms[i];
        sc[cnt++] = off->pending_score[i];
    }
    double start = x > 0 ? t0 + p->link_ms[x - 1] : t0; /* conv part x+1 starts */
    for (int k = x; k < n; k++) {
        double e = start + p->conv_ms[k] + p->branch_ms[k];
        if (plan[k]) {
            at[cnt] = e + p->result_ms[k];
            sc[cnt++] = C[k];
        }
        start += p->conv_ms[k] + (plan[k] ? p->branch_ms[k] : 0) + p->link_ms[k];
    }
    /* Break points: t0, every arrival inside (t0, H), H. Events are in depth order. */
    double pts[3 * PLANNER_MAX_EXITS + 2];
    int np = 0;
    pts[np++] = t0;
    for (int i = 0; i < cnt; i++)
        if (at[i] > t0 && at[i] < H)
            pts[np++] = at[i];
    pts[np++] = H > t0 ? H : t0;
    for (int i = 1; i < np; i++) /* insertion sort */
        for (int j = i; j > 0 && pts[j] < pts[j - 1]; j--) {
            double t = pts[j];
            pts[j] = pts[j - 1];
            pts[j - 1] = t;
        }
    double E = 0;
    for (int i = 0; i + 1 < np; i++) {
        double u = pts[i], v = pts[i + 1];
        if (!(v > u))
            continue;
        int deepest = -1;
        for (int e = 0; e < cnt; e++)
            if (at[e] <= u)
                deepest = e; /* later events are deeper */
        double score = deepest >= 0 ? sc[deepest] : 0;
        E += score * (ref_cdf(&in->dist, H, v) - ref_cdf(&in->dist, H, u));
    }
    return E;
}

static planner_t *make(const inst_t *in)
{
    ei_err_t err = {0};
    planner_t *p = planner_new(&in->pr, &in->dist, &err);
    if (!p)
        fail_msg("planner_new: %s", err.msg);
    return p;
}

static void assert_close(double a, double b, double rel, const char *what)
{
    double tol = rel * fmax(fabs(a), fabs(b)) + 1e-15;
    if (!(fabs(a - b) <= tol))
        fail_msg("%s: %.17g vs %.17g (diff %.3g)", what, a, b, a - b);
}

/* A small hand-made instance: three blocks, c = b = 1 ms. */
static inst_t hand(const planner_dist_t *d)
{
    inst_t in;
    memset(&in, 0, sizeof in);
    planner_profile_init(&in.pr, 3);
    for (int k = 0; k < 3; k++)
        in.pr.conv_ms[k] = in.pr.branch_ms[k] = 1;
    in.C[0] = 0.5;
    in.C[1] = 0.7;
    in.C[2] = 0.9;
    in.dist = *d;
    return in;
}

static double expect_of(const inst_t *in, const uint8_t *plan, const planner_offset_t *off)
{
    planner_t *p = make(in);
    double e = planner_expect(p, in->C, plan, off);
    planner_destroy(&p);
    assert_null(p);
    return e;
}

/* ---- expectation: hand-computed cases ---------------------------------------------------- */

static void test_expect_uniform_hand(void **state)
{
    (void)state;
    inst_t in = hand(&UNIFORM);
    planner_t *p = make(&in);
    assert_true(planner_horizon(p) == 6);
    planner_destroy(&p);
    /* all ones: arrivals 2, 4, 6 of H = 6: (0.5*2 + 0.7*2 + 0.9*0) / 6 (the paper's sum). */
    assert_close(expect_of(&in, (const uint8_t[]){1, 1, 1}, NULL), 2.4 / 6, 1e-15, "111");
    assert_close(expect_of(&in, (const uint8_t[]){1, 0, 1}, NULL), (0.5 * 3 + 0.9 * 1) / 6, 1e-15,
                 "101");
    assert_close(expect_of(&in, (const uint8_t[]){0, 1, 0}, NULL), 0.7 * 3 / 6, 1e-15, "010");
    assert_close(expect_of(&in, (const uint8_t[]){0, 0, 1}, NULL), 0.9 * 2 / 6, 1e-15, "001");
    assert_true(expect_of(&in, (const uint8_t[]){0, 0, 0}, NULL) == 0);
}

static void test_expect_normal_hand(void **state)
{
    (void)state;
    inst_t in = hand(&NORMAL);
    /* F(t) = (Phi((t-3)/1.5) - Phi(-2)) / (Phi(2) - Phi(-2)); values computed separately
     * with Python's math.erf: 0.5 (F(5) - F(2)) + 0.9 (1 - F(5)) and
     * 0.5 (F(4) - F(2)) + 0.7 (F(6) - F(4)). */
    assert_close(expect_of(&in, (const uint8_t[]){1, 0, 1}, NULL), 0.408342805787013, 1e-13,
                 "normal 101");
    assert_close(expect_of(&in, (const uint8_t[]){1, 1, 1}, NULL), 0.42779178550538716, 1e-13,
                 "normal 111");
    planner_t *p = make(&in);
    assert_close(planner_cdf(p, 3), 0.5, 1e-15, "median at mu*H");
    assert_true(planner_cdf(p, 0) == 0 && planner_cdf(p, 6) == 1);
    planner_destroy(&p);
}

static void test_expect_links_hand(void **state)
{
    (void)state;
    inst_t in = hand(&UNIFORM);
    in.pr.link_ms[1] = 2; /* a tier boundary after block 2 */
    in.pr.link_ms[2] = 5; /* after the last block: never on any path */
    /* H = 8; all ones arrive at 2, 4, 8. */
    assert_close(expect_of(&in, (const uint8_t[]){1, 1, 1}, NULL), (0.5 * 2 + 0.7 * 4) / 8, 1e-15,
                 "links 111");
    /* 011: exit 2 at 1+1+1 = 3, exit 3 at 3+2+1+1 = 7. */
    assert_close(expect_of(&in, (const uint8_t[]){0, 1, 1}, NULL), (0.7 * 4 + 0.9 * 1) / 8, 1e-15,
                 "links 011");
}

static void test_expect_result_delays_hand(void **state)
{
    (void)state;
    inst_t in = hand(&UNIFORM);
    /* Exit 1's result takes 3 ms: it arrives at 5, after exit 2's (at 4), so under the
     * deepest-arrived rule it never takes effect in 111. */
    in.pr.result_ms[0] = 3;
    assert_close(expect_of(&in, (const uint8_t[]){1, 1, 1}, NULL), 0.7 * 2 / 6, 1e-15,
                 "out of order 111");
    assert_close(expect_of(&in, (const uint8_t[]){1, 0, 0}, NULL), 0.5 * 1 / 6, 1e-15, "100");
    /* 101: both arrive at 5; the deeper exit 3 wins at once. */
    assert_close(expect_of(&in, (const uint8_t[]){1, 0, 1}, NULL), 0.9 * 1 / 6, 1e-15, "101");
    /* A delay that pushes a result past H: exit 2 at 4 + 3 = 7 > H = 6 never counts. */
    in = hand(&UNIFORM);
    in.pr.result_ms[1] = 3;
    assert_close(expect_of(&in, (const uint8_t[]){1, 1, 0}, NULL), 0.5 * 4 / 6, 1e-15, "past H");
    planner_t *p = make(&in);
    planner_interval_t iv[2 * PLANNER_MAX_EXITS + 1];
    int cnt = planner_timeline(p, (const uint8_t[]){1, 1, 1}, NULL, iv);
    /* none on [0, 2), exit 0 on [2, 6): exit 2 arrives at 6 = H, exit 1 at 7. */
    assert_int_equal(cnt, 2);
    assert_int_equal(iv[0].exit, -1);
    assert_int_equal(iv[1].exit, 0);
    assert_true(iv[1].start_ms == 2 && iv[1].end_ms == 6);
    planner_destroy(&p);
}

static void test_expect_offset_hand(void **state)
{
    (void)state;
    inst_t in = hand(&UNIFORM);
    planner_offset_t off;
    planner_offset_init(&off);
    off.x = 1;       /* block 1 done (its exit ran) */
    off.t0_ms = 2.5; /* half a millisecond late */
    off.c0 = 0.5;
    off.spent[0] = 1;
    /* x11: exit 2 at 2.5+2 = 4.5, exit 3 at 6.5 > H: the integral over [2.5, 6] only. */
    assert_close(expect_of(&in, (const uint8_t[]){1, 1, 1}, &off), (0.5 * 2 + 0.7 * 1.5) / 6, 1e-15,
                 "offset x11");
    assert_close(expect_of(&in, (const uint8_t[]){0, 0, 1}, &off), (0.5 * 3 + 0.9 * 0.5) / 6, 1e-15,
                 "offset x01");
    /* Exit 1's result still in flight until 3.0; before it, an answer worth 0.2. */
    off.c0 = 0.2;
    off.n_pending = 1;
    off.pending_ms[0] = 3.0;
    off.pending_score[0] = 0.6;
    assert_close(expect_of(&in, (const uint8_t[]){1, 1, 1}, &off),
                 (0.2 * 0.5 + 0.6 * 1.5 + 0.7 * 1.5) / 6, 1e-15, "pending");
    /* The search keeps the spent bit and replans the rest. */
    planner_t *p = make(&in);
    planner_result_t res;
    assert_int_equal(planner_search_enum(p, in.C, &off, &res, NULL), 0);
    assert_int_equal(res.plan[0], 1);
    assert_int_equal(res.evaluated, 4);
    planner_destroy(&p);
}

/* ---- expectation against the reference on random instances ------------------------------ */

static void random_offset(ei_rng_t *r, const inst_t *in, planner_offset_t *off)
{
    planner_offset_init(off);
    off->x = (int)ei_rng_below(r, (uint32_t)in->pr.n + 1);
    double H = 0;
    for (int k = 0; k < in->pr.n; k++)
        H += in->pr.conv_ms[k] + in->pr.branch_ms[k] + in->pr.link_ms[k];
    off->t0_ms = unif(r, 0, 0.8 * H);
    off->c0 = ei_rng_uniform(r);
    off->n_pending = (int)ei_rng_below(r, (uint32_t)(off->x < 2 ? off->x + 1 : 3));
    double t = off->t0_ms;
    for (int i = 0; i < off->n_pending; i++) {
        t += unif(r, 0, 1);
        off->pending_ms[i] = t - (i == 1 ? unif(r, 0, t - off->t0_ms) : 0);
        off->pending_score[i] = ei_rng_uniform(r);
    }
    for (int k = 0; k < off->x; k++)
        off->spent[k] = ei_rng_below(r, 2);
}

static void test_expect_matches_reference(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 11);
    for (int it = 0; it < 400; it++) {
        inst_t in;
        int n = 1 + (int)ei_rng_below(&r, 20);
        gen(&r, n, (int)ei_rng_below(&r, 4), it % 2 ? &NORMAL : &UNIFORM, &in);
        planner_t *p = make(&in);
        planner_offset_t off;
        random_offset(&r, &in, &off);
        assert_int_equal(planner_offset_check(&off, n, NULL), 0);
        for (int t = 0; t < 10; t++) {
            uint8_t plan[PLANNER_MAX_EXITS];
            for (int k = 0; k < n; k++)
                plan[k] = ei_rng_below(&r, 2);
            const planner_offset_t *o = t % 2 ? &off : NULL;
            assert_close(planner_expect(p, in.C, plan, o), ref_expect(&in, in.C, plan, o), 1e-12,
                         "expect vs reference");
        }
        planner_destroy(&p);
    }
}

/* ---- searches against enum ---------------------------------------------------------------- */

typedef struct gap_stats {
    double sum, max;
    int count, optimal;
} gap_stats_t;

/* Runs every search on one instance and checks it against enum; gaps[0] and gaps[1] get
 * hybrid's relative distance to the optimum with exactly / at most m = 4 outputs. */
static void check_searches(planner_t *p, const inst_t *in, const planner_offset_t *off,
                           double *gaps)
{
    planner_result_t opt, res;
    ei_err_t err = {0};
    assert_int_equal(planner_search_enum(p, in->C, off, &opt, &err), 0);
    double best = opt.expectation;
    assert_close(best, ref_expect(in, in->C, opt.plan, off), 1e-12, "enum's value");

    planner_search_exact(p, in->C, off, &res);
    assert_close(res.expectation, best, 1e-12, "exact vs enum");
    assert_close(res.expectation, planner_expect(p, in->C, res.plan, off), 1e-15, "exact value");
    planner_search_bnb(p, in->C, off, &res);
    assert_close(res.expectation, best, 1e-12, "bnb vs enum");

    double slack = best + 1e-12 * fabs(best) + 1e-15;
    planner_search_greedy(p, in->C, off, &res);
    assert_true(res.expectation <= slack);
    assert_close(res.expectation, planner_expect(p, in->C, res.plan, off), 1e-15, "greedy");
    assert_int_equal(planner_search_random(p, in->C, off, 300, 5, &res, &err), 0);
    assert_true(res.expectation <= slack);
    assert_int_equal(res.evaluated, 300);
    int free_bits = in->pr.n - (off ? off->x : 0);
    int m = free_bits < 4 ? free_bits : 4;
    /* The enumeration stage by brute force: the best plan with exactly / at most m free
     * outputs; hybrid keeps the best plan seen, so it can only do better. */
    double best_m[2] = {-1, -1};
    int x = off ? off->x : 0;
    uint8_t plan[PLANNER_MAX_EXITS] = {0};
    for (uint32_t mask = 0; mask < 1u << free_bits; mask++) {
        int ones = __builtin_popcount(mask);
        if (ones > m)
            continue;
        for (int k = 0; k < free_bits; k++)
            plan[x + k] = mask >> k & 1;
        double v = planner_expect(p, in->C, plan, off);
        if (ones == m)
            best_m[0] = fmax(best_m[0], v);
        best_m[1] = fmax(best_m[1], v);
    }
    for (int upto = 0; upto < 2; upto++) {
        assert_int_equal(planner_search_hybrid(p, in->C, off, m, upto, &res, &err), 0);
        assert_true(res.expectation <= slack);
        if (!(res.expectation >= best_m[upto] - 1e-12 * best_m[upto] - 1e-15))
            fail_msg("hybrid(m=%d, upto=%d), n=%d x=%d: %.17g below the best such plan %.17g "
                     "(%s)",
                     m, upto, in->pr.n, x, res.expectation, best_m[upto], res.algo);
        assert_close(res.expectation, planner_expect(p, in->C, res.plan, off), 1e-15, "hybrid");
        for (int k = 0; off && k < off->x; k++)
            assert_int_equal(res.plan[k], off->spent[k]);
        if (gaps)
            gaps[upto] = best > 0 ? (best - res.expectation) / best : 0;
    }
}

static void searches_vs_enum(const planner_dist_t *d, uint64_t seed, int with_offset)
{
    ei_rng_t r;
    ei_rng_seed(&r, seed);
    int dp_used = 0, bnb_used = 0, pareto_used = 0;
    for (int it = 0; it < 200; it++) {
        inst_t in;
        int n = 1 + (int)ei_rng_below(&r, 14);
        gen(&r, n, (int)ei_rng_below(&r, 4), d, &in);
        planner_t *p = make(&in);
        planner_offset_t off;
        random_offset(&r, &in, &off);
        const planner_offset_t *o = with_offset ? &off : NULL;
        check_searches(p, &in, o, NULL);
        planner_result_t res;
        planner_search_exact(p, in.C, o, &res);
        dp_used += !strcmp(res.algo, "dp");
        bnb_used += !strcmp(res.algo, "bnb");
        pareto_used += !strcmp(res.algo, "pareto");
        assert_int_equal(planner_exact_dp_applies(p, o), !strcmp(res.algo, "dp"));
        planner_destroy(&p);
    }
    printf("    %s%s: exact used the DP on %d instances, Pareto labels on %d, "
           "branch-and-bound on %d\n",
           d->kind == PLANNER_DIST_UNIFORM ? "uniform" : "normal",
           with_offset ? " with offsets" : "", dp_used, pareto_used, bnb_used);
    /* Both exact methods must have been exercised under uniform interruption. */
    if (d->kind == PLANNER_DIST_UNIFORM) {
        assert_true(dp_used > 20);
        assert_true(bnb_used > 10);
    } else {
        assert_int_equal(dp_used, 0);
        assert_true(pareto_used > 20);
        assert_true(bnb_used > 10);
    }
    if (with_offset)
        assert_true(pareto_used + dp_used > 20);
}

static void test_searches_vs_enum_uniform(void **state)
{
    (void)state;
    searches_vs_enum(&UNIFORM, 21, 0);
}

static void test_searches_vs_enum_normal(void **state)
{
    (void)state;
    searches_vs_enum(&NORMAL, 22, 0);
    const planner_dist_t wide = {PLANNER_DIST_NORMAL, 0.3, 1.0};
    searches_vs_enum(&wide, 23, 0);
}

static void test_searches_vs_enum_offset(void **state)
{
    (void)state;
    searches_vs_enum(&UNIFORM, 24, 1);
    searches_vs_enum(&NORMAL, 25, 1);
}

/* The dynamic programme on instances with every arrival in depth order (no result delays):
 * it must be used and agree with enum, and beyond enum's reach with branch-and-bound. */
static void test_exact_dp(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 31);
    for (int it = 0; it < 200; it++) {
        inst_t in;
        int n = 1 + (int)ei_rng_below(&r, 14);
        gen(&r, n, (int)ei_rng_below(&r, 2) * FLAVOR_RANDOM_SCORES, &UNIFORM, &in);
        planner_t *p = make(&in);
        assert_true(planner_exact_dp_applies(p, NULL));
        planner_result_t a, b;
        planner_search_exact(p, in.C, NULL, &a);
        assert_string_equal(a.algo, "dp");
        assert_int_equal(planner_search_enum(p, in.C, NULL, &b, NULL), 0);
        assert_close(a.expectation, b.expectation, 1e-12, "dp vs enum");
        planner_destroy(&p);
    }
    for (int it = 0; it < 10; it++) {
        inst_t in;
        gen(&r, 24 + it, FLAVOR_RANDOM_SCORES * (it % 2), &UNIFORM, &in);
        planner_t *p = make(&in);
        planner_result_t a, b;
        planner_search_exact(p, in.C, NULL, &a);
        planner_search_bnb(p, in.C, NULL, &b);
        assert_string_equal(a.algo, "dp");
        assert_close(a.expectation, b.expectation, 1e-12, "dp vs bnb, n >= 24");
        planner_destroy(&p);
    }
}

/* greedy and hybrid exactly as DESIGN.md words them, on top of planner_expect(). */
static double ref_greedy_from(planner_t *p, const inst_t *in, uint8_t *plan)
{
    int n = in->pr.n;
    double best = planner_expect(p, in->C, plan, NULL);
    for (;;) {
        int bj = -1;
        double bv = -INFINITY;
        for (int j = 0; j < n; j++) {
            if (plan[j])
                continue;
            plan[j] = 1;
            double v = planner_expect(p, in->C, plan, NULL);
            plan[j] = 0;
            if (v > bv) {
                bv = v;
                bj = j;
            }
        }
        if (bj < 0)
            return best;
        plan[bj] = 1;
        best = fmax(best, bv);
    }
}

static void test_greedy_hybrid_reference(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 51);
    for (int it = 0; it < 200; it++) {
        inst_t in;
        int n = 1 + (int)ei_rng_below(&r, 14), m = n < 4 ? n : 4;
        /* Scores drawn at random have no ties, so the reference takes the same path. */
        gen(&r, n, FLAVOR_RANDOM_SCORES, it % 2 ? &NORMAL : &UNIFORM, &in);
        planner_t *p = make(&in);
        uint8_t plan[PLANNER_MAX_EXITS] = {0}, best_plan[PLANNER_MAX_EXITS] = {0};
        planner_result_t res;
        planner_search_greedy(p, in.C, NULL, &res);
        assert_close(res.expectation, ref_greedy_from(p, &in, plan), 1e-12, "greedy");
        double bm = -1;
        for (uint32_t mask = 0; mask < 1u << n; mask++) {
            if (__builtin_popcount(mask) != m)
                continue;
            for (int k = 0; k < n; k++)
                plan[k] = mask >> k & 1;
            double v = planner_expect(p, in.C, plan, NULL);
            if (v > bm) {
                bm = v;
                memcpy(best_plan, plan, (size_t)n);
            }
        }
        assert_int_equal(planner_search_hybrid(p, in.C, NULL, m, 0, &res, NULL), 0);
        assert_close(res.expectation, ref_greedy_from(p, &in, best_plan), 1e-12, "hybrid");
        planner_destroy(&p);
    }
}

/* hybrid's distance to the optimum on random instances with n = 8..16: with scores rising
 * with depth (as real confidences do) and with scores uniform at random. Plain hybrid (exactly
 * m outputs, DESIGN.md) cannot reach an optimum with fewer than m outputs, which random scores
 * often have; with m_upto it can. */
static void test_hybrid_gap(void **state)
{
    (void)state;
    const planner_dist_t *dists[2] = {&UNIFORM, &NORMAL};
    static const char *const shapes[2] = {"rising scores", "random scores"};
    for (int d = 0; d < 2; d++)
        for (int shape = 0; shape < 2; shape++) {
            ei_rng_t r;
            ei_rng_seed(&r, 41 + (uint64_t)(2 * d + shape));
            gap_stats_t g[2] = {{0}};
            for (int n = 8; n <= 16; n++)
                for (int it = 0; it < 20; it++) {
                    inst_t in;
                    int flavor = (int)ei_rng_below(&r, 2) | (shape ? FLAVOR_RANDOM_SCORES : 0);
                    gen(&r, n, flavor, dists[d], &in);
                    planner_t *p = make(&in);
                    double gaps[2];
                    check_searches(p, &in, NULL, gaps);
                    for (int u = 0; u < 2; u++) {
                        g[u].sum += gaps[u];
                        g[u].max = fmax(g[u].max, gaps[u]);
                        g[u].optimal += gaps[u] <= 1e-12;
                        g[u].count++;
                    }
                    planner_destroy(&p);
                }
            for (int u = 0; u < 2; u++)
                printf("    hybrid(m=4%s) vs optimum, %s, %s, n = 8..16, %d instances: "
                       "mean gap %.3f%%, max %.2f%%, optimal in %d\n",
                       u ? ", m_upto" : "", d ? "normal(0.5,0.25)" : "uniform", shapes[shape],
                       g[u].count, 100 * g[u].sum / g[u].count, 100 * g[u].max, g[u].optimal);
            /* The goal (within 0.5% on average): plain hybrid on realistic scores, m_upto on
             * every shape. */
            if (shape == 0)
                assert_true(g[0].sum / g[0].count < 0.005);
            assert_true(g[1].sum / g[1].count < 0.005);
        }
}

static void test_search_dispatch_and_checks(void **state)
{
    (void)state;
    inst_t in = hand(&UNIFORM);
    planner_t *p = make(&in);
    planner_search_t s;
    planner_search_init(&s);
    planner_result_t res;
    ei_err_t err = {0};
    s.kind = PLANNER_SEARCH_HYBRID;
    s.m = 4;
    assert_int_equal(planner_search(p, &s, in.C, NULL, &res, &err), EI_E_RANGE);
    assert_non_null(strstr(err.msg, "m:"));
    s.kind = PLANNER_SEARCH_RANDOM;
    s.n_random = 0;
    assert_int_equal(planner_search(p, &s, in.C, NULL, &res, &err), EI_E_RANGE);
    assert_non_null(strstr(err.msg, "n_random"));
    s.kind = PLANNER_SEARCH_NONE;
    assert_int_equal(planner_search(p, &s, in.C, NULL, &res, &err), EI_E_INVAL);
    assert_non_null(strstr(err.msg, "plan"));
    const uint8_t plan[3] = {1, 0, 1};
    s.plan = plan;
    assert_int_equal(planner_search(p, &s, in.C, NULL, &res, &err), 0);
    assert_close(res.expectation, 0.4, 1e-15, "none");
    assert_int_equal(res.evaluated, 1);
    s.kind = PLANNER_SEARCH_ALL;
    assert_int_equal(planner_search(p, &s, in.C, NULL, &res, &err), 0);
    assert_true(res.plan[0] && res.plan[1] && res.plan[2]);
    planner_destroy(&p);

    inst_t big;
    ei_rng_t r;
    ei_rng_seed(&r, 5);
    gen(&r, 40, 0, &UNIFORM, &big);
    p = make(&big);
    assert_int_equal(planner_search_enum(p, big.C, NULL, &res, &err), EI_E_RANGE);
    assert_non_null(strstr(err.msg, "enum"));
    assert_int_equal(planner_search_hybrid(p, big.C, NULL, 20, 0, &res, &err), EI_E_RANGE);
    assert_int_equal(planner_search_hybrid(p, big.C, NULL, 4, 0, &res, &err), 0);
    /* At most C(40,4) plans in the enumeration (fewer when pruned) plus greedy's. */
    assert_true(res.evaluated > 0 && res.evaluated <= 91390 + 1 + (36 * 37) / 2);
    planner_destroy(&p);

    planner_search_kind_t k;
    assert_int_equal(planner_search_parse("hybrid", &k), 0);
    assert_int_equal(k, PLANNER_SEARCH_HYBRID);
    assert_string_equal(planner_search_name(PLANNER_SEARCH_EXACT), "exact");
    assert_int_equal(planner_search_parse("Exact", &k), -1);
}

static void test_profile_checks(void **state)
{
    (void)state;
    inst_t in = hand(&UNIFORM);
    ei_err_t err = {0};
    in.pr.branch_ms[1] = -1;
    assert_null(planner_new(&in.pr, &in.dist, &err));
    assert_string_equal(err.msg, "branch_ms[1]: -1 is negative");
    in.pr.branch_ms[1] = NAN;
    assert_int_equal(planner_profile_check(&in.pr, &err), EI_E_NONFINITE);
    in = hand(&UNIFORM);
    planner_dist_t d = {PLANNER_DIST_NORMAL, 0.5, 0};
    assert_int_equal(planner_dist_check(&d, &err), EI_E_RANGE);
    d.sigma = 0.01;
    d.mu = 3; /* all the mass far beyond H */
    assert_int_equal(planner_dist_check(&d, &err), EI_E_RANGE);
    planner_t *p = make(&in);
    assert_int_equal(planner_set_dist(p, &d, &err), EI_E_RANGE);
    assert_true(planner_horizon(p) == 6);
    in.pr.conv_ms[0] = 3;
    assert_int_equal(planner_set_profile(p, &in.pr, &err), 0);
    assert_true(planner_horizon(p) == 8);
    planner_destroy(&p);
    planner_destroy(&p); /* NULL is fine */
}

/* ---- instances as JSON ----------------------------------------------------------------------- */

static int parse(const char *text, planner_instance_t *inst, ei_err_t *err)
{
    return planner_instance_parse(text, strlen(text), inst, err);
}

#define BASE "\"conv_ms\":[1,1,1],\"branch_ms\":[1,1,1],\"scores\":[0.5,0.7,0.9]"

static void test_instance_parse(void **state)
{
    (void)state;
    planner_instance_t *inst = malloc(sizeof *inst);
    ei_err_t err = {0};
    assert_int_equal(parse("{" BASE ",\"dist\":{\"kind\":\"normal\",\"mu\":0.5,\"sigma\":0.25},"
                           "\"search\":\"hybrid\",\"m\":2,\"link_ms\":[0,2,0]}",
                           inst, &err),
                     0);
    assert_int_equal(inst->profile.n, 3);
    assert_true(inst->profile.link_ms[1] == 2 && inst->profile.result_ms[2] == 0);
    assert_int_equal(inst->kind, PLANNER_SEARCH_HYBRID);
    assert_int_equal(inst->m, 2);
    assert_int_equal(inst->n_random, 10000);
    assert_true(inst->dist.kind == PLANNER_DIST_NORMAL && inst->dist.sigma == 0.25);
    assert_int_equal(parse("{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"none\","
                           "\"plan\":[1,0,1],\"offset\":{\"x\":1,\"t0_ms\":2.5,\"c0\":0.5,"
                           "\"spent\":[1],\"pending_ms\":[3],\"pending_scores\":[0.6]}}",
                           inst, &err),
                     0);
    assert_true(inst->has_plan && inst->has_offset && inst->offset.n_pending == 1);

    /* Each malformed instance: the field its message must name. */
    static const struct {
        const char *text, *field;
    } bad[] = {
        {"[1,2]", "JSON object"},
        {"{\"conv_ms\":[1,", "line 1"},
        {"not json", "line 1"},
        {"{\"branch_ms\":[1],\"scores\":[1],\"dist\":{\"kind\":\"uniform\"},\"search\":\"exact\"}",
         "conv_ms: missing"},
        {"{\"conv_ms\":[],\"branch_ms\":[],\"scores\":[]}", "conv_ms: empty"},
        {"{\"conv_ms\":[1,1],\"branch_ms\":[1],\"scores\":[1,1]}", "branch_ms: 1 entries"},
        {"{" BASE ",\"link_ms\":[0,0],\"dist\":{\"kind\":\"uniform\"},\"search\":\"exact\"}",
         "link_ms: 2 entries"},
        {"{\"conv_ms\":[1,-1,1],\"branch_ms\":[1,1,1],\"scores\":[1,1,1]}", "conv_ms[1]"},
        {"{\"conv_ms\":[1,1,1],\"branch_ms\":[1,\"a\",1],\"scores\":[1,1,1]}", "branch_ms[1]"},
        {"{\"conv_ms\":[1,1,1],\"branch_ms\":[1,1,1],\"result_ms\":[0,0,-2],\"scores\":[1,1,1]}",
         "result_ms[2]"},
        {"{\"conv_ms\":[1,1,1],\"branch_ms\":[1,1,1],\"scores\":[0.5,1.5,1]}", "scores[1]"},
        {"{\"conv_ms\":[1,1,1],\"branch_ms\":[1,1,1],\"scores\":[0.5,-0.1,1]}", "scores[1]"},
        {"{\"conv_ms\":[0,0,0],\"branch_ms\":[0,0,0],\"scores\":[1,1,1]}", "horizon"},
        {"{" BASE ",\"search\":\"exact\"}", "dist: missing"},
        {"{" BASE ",\"dist\":\"uniform\",\"search\":\"exact\"}", "dist:"},
        {"{" BASE ",\"dist\":{\"kind\":\"poisson\"},\"search\":\"exact\"}", "dist.kind"},
        {"{" BASE ",\"dist\":{\"kind\":\"normal\",\"mu\":0.5},\"search\":\"exact\"}", "dist.sigma"},
        {"{" BASE ",\"dist\":{\"kind\":\"normal\",\"mu\":0.5,\"sigma\":-1},\"search\":\"exact\"}",
         "dist.sigma"},
        {"{" BASE ",\"dist\":{\"kind\":\"normal\",\"mu\":0.5,\"sigma\":0.2,\"nu\":1},"
         "\"search\":\"exact\"}",
         "dist.nu"},
        {"{" BASE ",\"dist\":{\"kind\":\"uniform\"}}", "search: missing"},
        {"{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"astar\"}", "search: unknown"},
        {"{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"hybrid\",\"m\":5}", "m:"},
        {"{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"hybrid\",\"m\":1.5}", "m:"},
        {"{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"random\",\"n_random\":0}",
         "n_random"},
        {"{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"none\"}", "plan:"},
        {"{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"none\",\"plan\":[1,2,0]}",
         "plan[1]"},
        {"{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"none\",\"plan\":[1,0]}",
         "plan: 2 entries"},
        {"{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"exact\",\"serach\":1}",
         "serach: unknown field"},
        {"{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"exact\",\"search\":\"enum\"}",
         "line 1"},
        {"{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"exact\",\"offset\":{\"x\":4,"
         "\"t0_ms\":1}}",
         "offset.x"},
        {"{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"exact\",\"offset\":{\"x\":1}}",
         "offset.t0_ms"},
        {"{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"exact\",\"offset\":{\"x\":1,"
         "\"t0_ms\":2,\"pending_ms\":[1],\"pending_scores\":[0.5]}}",
         "offset.pending_ms[0]"},
        {"{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"exact\",\"offset\":{\"x\":2,"
         "\"t0_ms\":2,\"pending_ms\":[3,4],\"pending_scores\":[0.5]}}",
         "offset.pending_scores: 1 entries"},
        {"{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"exact\",\"offset\":{\"x\":2,"
         "\"t0_ms\":2,\"pending_ms\":[3]}}",
         "offset.pending_scores: missing"},
        {"{\"conv_ms\":[1e999],\"branch_ms\":[1],\"scores\":[1]}", "line 1"},
        {"{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"exact\",\"m_upto\":1}", "m_upto"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&err, 0, sizeof err);
        int rc = parse(bad[i].text, inst, &err);
        if (rc >= 0 || !strstr(err.msg, bad[i].field))
            fail_msg("case %zu: rc %d, message '%s' does not name '%s'", i, rc, err.msg,
                     bad[i].field);
    }
    /* enum beyond its limit is refused by name. */
    char text[4096];
    int len = snprintf(text, sizeof text, "{\"conv_ms\":[");
    for (int k = 0; k < 30; k++)
        len += snprintf(text + len, sizeof text - (size_t)len, "%s1", k ? "," : "");
    len += snprintf(text + len, sizeof text - (size_t)len, "],\"branch_ms\":[");
    for (int k = 0; k < 30; k++)
        len += snprintf(text + len, sizeof text - (size_t)len, "%s1", k ? "," : "");
    len += snprintf(text + len, sizeof text - (size_t)len, "],\"scores\":[");
    for (int k = 0; k < 30; k++)
        len += snprintf(text + len, sizeof text - (size_t)len, "%s0.5", k ? "," : "");
    snprintf(text + len, sizeof text - (size_t)len,
             "],\"dist\":{\"kind\":\"uniform\"},\"search\":\"enum\"}");
    assert_int_equal(parse(text, inst, &err), EI_E_RANGE);
    assert_non_null(strstr(err.msg, "search: enum"));
    free(inst);
}

/* ---- einet plan, the program -------------------------------------------------------------------
 */

/* Runs `einet plan` on text; returns the exit code, stdout in out (if not NULL). */
static int run_plan(const char *text, const char *extra_arg, char *out, size_t out_len)
{
    const char *bin = getenv("EINET_BIN");
    char in_path[] = "/tmp/einet_plan_in_XXXXXX", out_path[] = "/tmp/einet_plan_out_XXXXXX";
    int fd = mkstemp(in_path), fo = mkstemp(out_path);
    assert_true(fd >= 0 && fo >= 0);
    assert_true(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    close(fo);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s/einet' plan %s %s >%s 2>/dev/null", bin,
             extra_arg ? extra_arg : "", extra_arg ? "" : in_path, out_path);
    int st = system(cmd);
    if (out) {
        FILE *f = fopen(out_path, "r");
        size_t got = f ? fread(out, 1, out_len - 1, f) : 0;
        out[got] = '\0';
        if (f)
            fclose(f);
    }
    unlink(in_path);
    unlink(out_path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli_plan(void **state)
{
    (void)state;
    if (!getenv("EINET_BIN"))
        skip();
    char out[4096];
    assert_int_equal(run_plan("{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"enum\"}",
                              NULL, out, sizeof out),
                     0);
    json_error_t jerr;
    json_t *root = json_loads(out, 0, &jerr);
    assert_non_null(root);
    assert_close(json_real_value(json_object_get(root, "expectation")), 0.4, 1e-15, "cli E");
    assert_true(json_number_value(json_object_get(root, "horizon_ms")) == 6);
    assert_int_equal(json_integer_value(json_object_get(root, "evaluated")), 8);
    assert_int_equal(json_array_size(json_object_get(root, "plan")), 3);
    assert_true(json_is_number(json_object_get(root, "search_us")));
    json_decref(root);
    assert_int_equal(
        run_plan("{" BASE ",\"dist\":{\"kind\":\"uniform\"},\"search\":\"astar\"}", NULL, NULL, 0),
        2);
    assert_int_equal(
        run_plan("{\"conv_ms\":[1,1,1],\"branch_ms\":[1,1],\"scores\":[1,1,1]}", NULL, NULL, 0), 2);
    assert_int_equal(run_plan("garbage", NULL, NULL, 0), 2);
    assert_int_equal(run_plan("", "--help", out, sizeof out), 0);
    assert_non_null(strstr(out, "usage: einet plan"));
    assert_int_equal(run_plan("", "/nonexistent/instance.json", NULL, 0), 1);
    assert_int_equal(run_plan("", "a.json b.json", NULL, 0), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expect_uniform_hand),
        cmocka_unit_test(test_expect_normal_hand),
        cmocka_unit_test(test_expect_links_hand),
        cmocka_unit_test(test_expect_result_delays_hand),
        cmocka_unit_test(test_expect_offset_hand),
        cmocka_unit_test(test_expect_matches_reference),
        cmocka_unit_test(test_searches_vs_enum_uniform),
        cmocka_unit_test(test_searches_vs_enum_normal),
        cmocka_unit_test(test_searches_vs_enum_offset),
        cmocka_unit_test(test_exact_dp),
        cmocka_unit_test(test_greedy_hybrid_reference),
        cmocka_unit_test(test_hybrid_gap),
        cmocka_unit_test(test_search_dispatch_and_checks),
        cmocka_unit_test(test_profile_checks),
        cmocka_unit_test(test_instance_parse),
        cmocka_unit_test(test_cli_plan),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
