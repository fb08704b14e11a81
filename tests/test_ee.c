/* Tests of the class-specific early exits: the figures and constraints of Bonato & Bouganis
 * eqs. 3-7 against hand-computed confusion counts, the Pareto choice, the KP concatenation's
 * shapes and values against a naive reference and its gradients against finite
 * differences, balanced training, EE files and their errors, and a small end-to-end search
 * whose device-side check agrees with the bank it was searched on. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "nn/ee.h"
#include "nn/ee_search.h"
#include "nn/model.h"
#include "nn/safetensors.h"
#include "nn/train.h"

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/einet-test-ee-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- figures against hand-computed counts ---- */

/* Ten samples, target class 1: label, B's prediction, the EE's P(k). */
static const uint8_t hand_label[10] = {1, 1, 1, 1, 0, 0, 2, 2, 3, 3};
static const uint8_t hand_pred[10] = {1, 1, 0, 2, 0, 1, 2, 0, 3, 3};
static const float hand_pk[10] = {0.99f, 0.50f, 0.97f, 0.10f, 0.96f,
                                  0.20f, 0.00f, 0.98f, 0.30f, 0.94f};

static void test_figures_hand_counts(void **state)
{
    (void)state;
    ee_search_counts_t c;
    ee_search_figures_t f;
    /* alpha 0.95: the EE takes s0, s2 (class 1) and s4, s7 (others). */
    ee_search_count(hand_label, hand_pred, hand_pk, 10, 1, 0.95, &c);
    assert_int_equal(c.n, 10);
    assert_int_equal(c.k, 4);
    assert_int_equal(c.tp_ee, 2);
    assert_int_equal(c.fp_ee, 2);
    assert_int_equal(c.tp_b, 4); /* s1, s6, s8, s9 right at Out:B */
    assert_int_equal(c.tp_kb, 1);
    assert_int_equal(c.fn_kb, 1);
    assert_int_equal(c.b_right_k, 2);
    assert_int_equal(c.b_right_not_k, 4);
    assert_int_equal(c.b_pred_k, 3);
    ee_search_figures(&c, 0.95, 10.0, 2.0, 1.0, &f);
    assert_float_equal(f.beta, 4.0 / 6, 1e-12);
    assert_float_equal(f.eta, 0.5, 1e-12);
    assert_float_equal(f.zeta, 2.0 / 3, 1e-12);
    assert_float_equal(f.gamma, 1.0, 1e-12);
    assert_float_equal(f.acc_b, 0.75, 1e-12); /* (4 - 1) / (10 - 4 - 2) */
    assert_float_equal(f.acc_ee, 0.6, 1e-12); /* (2 + 4) / 10 */
    assert_float_equal(f.acc_g, 0.75, 1e-12); /* (2 + 1) / 4 */
    assert_float_equal(f.precision, 0.5, 1e-12);
    assert_float_equal(f.t2_ms, 3.0, 1e-12);      /* (1 - 1)(10 - 2) + 2 + 1 */
    assert_float_equal(f.gain, 10.0 / 7, 1e-12);  /* class 1: 3, 3, 11, 11 ms */
    assert_float_equal(f.loss, 50.0 / 60, 1e-12); /* others: 3, 3, 11 x 4 ms */
    assert_true(f.c5 && f.c6 && f.c7 && f.met && f.viable);
}

static void test_figures_equalities_hold(void **state)
{
    (void)state;
    ee_search_counts_t c;
    ee_search_figures_t f;
    /* alpha 0.98: s0 and s7 taken; eq. 7 gives exactly eta = 0.5, which holds. */
    ee_search_count(hand_label, hand_pred, hand_pk, 10, 1, 0.98, &c);
    assert_int_equal(c.tp_ee, 1);
    assert_int_equal(c.fp_ee, 1);
    assert_int_equal(c.tp_b, 5);
    assert_int_equal(c.fn_kb, 2);
    ee_search_figures(&c, 0.98, 10.0, 2.0, 1.0, &f);
    assert_float_equal(f.acc_b, 0.8, 1e-12);
    assert_float_equal(f.acc_g, 0.5, 1e-12);
    assert_true(f.c7);
    assert_float_equal(f.gamma, 0.5, 1e-12);
    assert_float_equal(f.t2_ms, 0.5 * 8 + 3, 1e-12);
    /* alpha 0.93 adds s9 (B right on it): eq. 5 gives exactly beta = 2/3, which holds. */
    ee_search_count(hand_label, hand_pred, hand_pk, 10, 1, 0.93, &c);
    ee_search_figures(&c, 0.93, 10.0, 2.0, 1.0, &f);
    assert_float_equal(f.acc_b, 2.0 / 3, 1e-12);
    assert_true(f.c5);
}

static void test_figures_violations(void **state)
{
    (void)state;
    ee_search_counts_t c;
    ee_search_figures_t f;
    /* alpha 0.25 takes s8 and s9 too, which B had right: (5) drops to 1/2 < 2/3. */
    ee_search_count(hand_label, hand_pred, hand_pk, 10, 1, 0.25, &c);
    assert_int_equal(c.tp_ee, 3);
    assert_int_equal(c.fp_ee, 4);
    ee_search_figures(&c, 0.25, 10.0, 2.0, 1.0, &f);
    assert_float_equal(f.acc_b, 0.5, 1e-12);
    assert_false(f.c5);
    assert_float_equal(f.acc_ee, 0.5, 1e-12); /* = eta: (6) holds */
    assert_true(f.c6);
    assert_true(f.c7);
    assert_false(f.met);
    assert_false(f.viable);
    /* alpha 0: everything taken; (5) has an empty denominator and fails. */
    ee_search_count(hand_label, hand_pred, hand_pk, 10, 1, 0.0, &c);
    ee_search_figures(&c, 0.0, 10.0, 2.0, 1.0, &f);
    assert_true(isnan(f.acc_b));
    assert_false(f.c5);
    /* Nothing taken: precision undefined, gain 10/11 < 1, not viable though (5)-(7) hold. */
    ee_search_count(hand_label, hand_pred, hand_pk, 10, 1, 1.0, &c);
    ee_search_figures(&c, 1.0, 10.0, 2.0, 1.0, &f);
    assert_true(isnan(f.precision));
    assert_true(f.met);
    assert_float_equal(f.gain, 10.0 / 11, 1e-12);
    assert_float_equal(f.loss, 1.1, 1e-12);
    assert_false(f.viable);
    /* (6) fails when the EE is wrong more often than B on k. */
    ee_search_counts_t bad = {.n = 10,
                              .k = 4,
                              .tp_ee = 0,
                              .fp_ee = 5,
                              .tp_b = 3,
                              .tp_kb = 3,
                              .fn_kb = 1,
                              .b_right_k = 3,
                              .b_right_not_k = 5,
                              .b_pred_k = 3};
    ee_search_figures(&bad, 0.95, 10.0, 2.0, 1.0, &f);
    assert_float_equal(f.acc_ee, 0.1, 1e-12); /* tn = 6 - 5 = 1 */
    assert_false(f.c6);
}

static ee_search_figures_t point(double gain, double loss, int viable)
{
    ee_search_figures_t f = {0};
    f.gain = gain, f.loss = loss, f.viable = viable;
    return f;
}

static void test_pareto_choice(void **state)
{
    (void)state;
    ee_search_figures_t p[6] = {point(2, 1.1, 1),  point(3, 1.5, 1),   point(2.5, 1.6, 1),
                                point(10, 1.0, 0), point(1.5, 1.0, 1), point(4, 2.0, 1)};
    uint8_t front[6];
    /* Without p5: p1 has the largest ratio (2.0); p2 is dominated by p1; p3 is infeasible. */
    assert_int_equal(ee_search_choose(p, 5, front), 1);
    uint8_t want[5] = {1, 1, 0, 0, 1};
    assert_memory_equal(front, want, 5);
    /* p5 ties p1's ratio with a larger gain. */
    assert_int_equal(ee_search_choose(p, 6, front), 5);
    assert_true(front[5] && front[1]);
    ee_search_figures_t none[2] = {point(3, 1, 0), point(2, 1, 0)};
    assert_int_equal(ee_search_choose(none, 2, NULL), -1);
}

/* ---- the branch: shapes, values, gradients ---- */

static const nn_shape_t shapes3[3] = {{2, 6, 6}, {3, 4, 4}, {4, 3, 3}};

static void fill(nn_tensor_t *t, uint64_t seed)
{
    ei_rng_t rng;
    ei_rng_seed(&rng, seed);
    for (size_t i = 0; i < nn_tensor_numel(t); i++) {
        double v = ei_rng_uniform(&rng) * 2 - 1;
        t->data[i] = (float)(fabs(v) < 0.05 ? v + (v < 0 ? -0.1 : 0.1) : v); /* off the kink */
    }
}

/* Naive ReLU + adaptive average pool to s x s + flatten of sample n of t into out. */
static int ref_pool(const nn_tensor_t *t, int n, int s, float *out)
{
    s = s < t->h ? s : t->h;
    s = s < t->w ? s : t->w;
    int at = 0;
    for (int c = 0; c < t->c; c++)
        for (int i = 0; i < s; i++)
            for (int j = 0; j < s; j++) {
                int h0 = i * t->h / s, h1 = ((i + 1) * t->h + s - 1) / s;
                int w0 = j * t->w / s, w1 = ((j + 1) * t->w + s - 1) / s;
                double sum = 0;
                for (int y = h0; y < h1; y++)
                    for (int x = w0; x < w1; x++) {
                        float v = t->data[(((size_t)n * t->c + c) * t->h + y) * t->w + x];
                        sum += v > 0 ? v : 0;
                    }
                out[at++] = (float)(sum / ((h1 - h0) * (w1 - w0)));
            }
    return at;
}

static void make_taps(nn_tensor_t **taps, int n, uint64_t seed)
{
    for (int j = 0; j < 3; j++) {
        taps[j] = nn_tensor_new(n, shapes3[j].c, shapes3[j].h, shapes3[j].w);
        fill(taps[j], seed + (uint64_t)j);
    }
}

static void free_taps(nn_tensor_t **taps, int count)
{
    for (int j = 0; j < count; j++)
        nn_tensor_destroy(&taps[j]);
}

static void test_kp_shapes_and_values(void **state)
{
    (void)state;
    ei_err_t err = {0};
    nn_tensor_t *taps[3];
    make_taps(taps, 2, 7);
    struct {
        int kp, pool, features;
    } cases[] = {{1, 2, 2 * 4 + 3 * 4 + 4 * 4},   /* KP on: layers 1..3, each pooled to 2x2 */
                 {0, 2, 4 * 4},                   /* KP off: layer 3 alone */
                 {1, 4, 2 * 16 + 3 * 16 + 4 * 9}, /* pooling sized to its input: 3x3 stays 3x3 */
                 {1, 1, 2 + 3 + 4}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ee_spec_t spec = {
            .target = 0, .layer = 3, .kp = cases[i].kp, .pool = cases[i].pool, .alpha = 0.95};
        ee_t *ee = ee_new(&spec, shapes3, 4, &err);
        assert_non_null(ee);
        int F = ee_features_count(ee);
        assert_int_equal(F, cases[i].features);
        float got[2 * 200], want[200];
        assert_int_equal(ee_features(ee, (const nn_tensor_t *const *)taps, got, 200, &err), 0);
        for (int s = 0; s < 2; s++) {
            int at = 0;
            for (int j = spec.kp ? 0 : 2; j < 3; j++)
                at += ref_pool(taps[j], s, spec.pool, want + at);
            assert_int_equal(at, F);
            for (int q = 0; q < F; q++)
                assert_float_equal(got[s * 200 + q], want[q], 1e-6);
        }
        ee_destroy(&ee);
        assert_null(ee);
    }
    free_taps(taps, 3);
}

/* The loss of ee on taps against is_k (forward, then backward for the loss value). */
static double loss_of(ee_t *ee, nn_tensor_t **taps, const uint8_t *is_k)
{
    float pk[4];
    ei_err_t err = {0};
    assert_int_equal(ee_forward(ee, (const nn_tensor_t *const *)taps, pk, &err), 0);
    nn_layer_zero_grad(ee_dense(ee));
    return ee_backward(ee, (const nn_tensor_t *const *)taps, is_k, NULL);
}

static void check_grad(double analytic, double numeric)
{
    double scale = fabs(analytic) > fabs(numeric) ? fabs(analytic) : fabs(numeric);
    if (fabs(analytic - numeric) > 2e-3 + 2e-2 * scale)
        fail_msg("gradient %.6g, finite difference %.6g", analytic, numeric);
}

static void gradient_case(int kp)
{
    ei_err_t err = {0};
    ee_spec_t spec = {.target = 1, .layer = 3, .kp = kp, .pool = 2, .alpha = 0.95};
    ee_t *ee = ee_new(&spec, shapes3, 4, &err);
    assert_non_null(ee);
    ee_init(ee, 3);
    nn_tensor_t *taps[3], *dtaps[3];
    make_taps(taps, 3, 11);
    for (int j = 0; j < 3; j++)
        dtaps[j] = nn_tensor_new(3, shapes3[j].c, shapes3[j].h, shapes3[j].w);
    const uint8_t is_k[3] = {1, 0, 1};
    float pk[3];
    assert_int_equal(ee_forward(ee, (const nn_tensor_t *const *)taps, pk, &err), 0);
    nn_layer_zero_grad(ee_dense(ee));
    ee_backward(ee, (const nn_tensor_t *const *)taps, is_k, dtaps);
    /* Copy the analytic gradients before the finite differences overwrite them. */
    nn_param_t *w = nn_layer_param(ee_dense(ee), 0);
    int nw = 2 * ee_features_count(ee);
    float *dw = malloc((size_t)nw * sizeof(float));
    memcpy(dw, w->grad->data, (size_t)nw * sizeof(float));
    const float h = 1e-2f;
    for (int j = 0; j < 3; j++) {
        for (size_t i = 0; i < nn_tensor_numel(taps[j]); i += 3) {
            float keep = taps[j]->data[i];
            taps[j]->data[i] = keep + h;
            double up = loss_of(ee, taps, is_k);
            taps[j]->data[i] = keep - h;
            double down = loss_of(ee, taps, is_k);
            taps[j]->data[i] = keep;
            double numeric = (up - down) / (2 * h);
            if (!kp && j < 2)
                assert_float_equal(numeric, 0, 1e-6); /* KP off: layers 1-2 are not read */
            else
                check_grad(dtaps[j]->data[i], numeric);
        }
    }
    for (int i = 0; i < nw; i += 2) {
        float keep = w->value->data[i];
        w->value->data[i] = keep + h;
        double up = loss_of(ee, taps, is_k);
        w->value->data[i] = keep - h;
        double down = loss_of(ee, taps, is_k);
        w->value->data[i] = keep;
        check_grad(dw[i], (up - down) / (2 * h));
    }
    free(dw);
    free_taps(taps, 3);
    free_taps(dtaps, 3);
    ee_destroy(&ee);
}

static void test_kp_gradients(void **state)
{
    (void)state;
    gradient_case(1);
    gradient_case(0);
}

static void test_bad_taps_and_specs(void **state)
{
    (void)state;
    ei_err_t err = {0};
    ee_spec_t spec = {.target = 0, .layer = 3, .kp = 1, .pool = 2, .alpha = 0.95};
    ee_t *ee = ee_new(&spec, shapes3, 2, &err);
    nn_tensor_t *taps[3];
    make_taps(taps, 1, 5);
    nn_tensor_t *wrong = nn_tensor_new(1, 3, 5, 4);
    const nn_tensor_t *bad[3] = {taps[0], wrong, taps[2]};
    float pk;
    assert_int_equal(ee_check(ee, bad, &pk, &err), EI_E_SHAPE);
    assert_non_null(strstr(err.msg, "layer 2"));
    const nn_tensor_t *missing[3] = {taps[0], NULL, taps[2]};
    assert_int_equal(ee_check(ee, missing, &pk, &err), EI_E_INVAL);
    /* KP off reads layer 3 alone: the others may be absent. */
    ee_spec_t off = spec;
    off.kp = 0;
    ee_t *e2 = ee_new(&off, shapes3, 1, &err);
    const nn_tensor_t *only[3] = {NULL, NULL, taps[2]};
    assert_true(ee_check(e2, only, &pk, &err) >= 0);
    nn_tensor_t *three = nn_tensor_new(3, 4, 3, 3);
    const nn_tensor_t *big[3] = {NULL, NULL, three};
    assert_int_equal(ee_check(e2, big, &pk, &err), EI_E_RANGE); /* batch 3 > max 1 */
    ee_spec_t nope = spec;
    nope.pool = 0;
    assert_null(ee_new(&nope, shapes3, 1, &err));
    nope = spec, nope.alpha = 1.5;
    assert_null(ee_new(&nope, shapes3, 1, &err));
    assert_int_equal(err.code, EI_E_INVAL);
    nn_tensor_destroy(&wrong);
    nn_tensor_destroy(&three);
    free_taps(taps, 3);
    ee_destroy(&ee);
    ee_destroy(&e2);
}

/* ---- training ---- */

/* Rows of F features: class 0..9 by row % 10; class 3 shifted along two features. */
static float *separable(int rows, int F, uint8_t *label, uint64_t seed)
{
    ei_rng_t rng;
    ei_rng_seed(&rng, seed);
    float *x = malloc((size_t)rows * F * sizeof(float));
    for (int r = 0; r < rows; r++) {
        label[r] = (uint8_t)(r % 10);
        for (int j = 0; j < F; j++)
            x[(size_t)r * F + j] = (float)(ei_rng_normal(&rng) * (j + 1) + 5 * j);
        if (label[r] == 3) {
            x[(size_t)r * F + 1] += 8;
            x[(size_t)r * F + 4] -= 12;
        }
    }
    return x;
}

static void test_training_balanced(void **state)
{
    (void)state;
    ei_err_t err = {0};
    nn_shape_t sh[1] = {{6, 1, 1}};
    ee_spec_t spec = {.target = 3, .layer = 1, .kp = 0, .pool = 1, .alpha = 0.5};
    ee_t *ee = ee_new(&spec, sh, 64, &err);
    assert_non_null(ee);
    int rows = 3000, F = 6;
    uint8_t *label = malloc((size_t)rows);
    float *x = separable(rows, F, label, 9);
    int *idx = malloc((size_t)rows * sizeof(int));
    for (int r = 0; r < rows; r++)
        idx[r] = r;
    ee_train_data_t d = {.feat = x,
                         .ld = (size_t)F,
                         .label = label,
                         .train_rows = idx,
                         .n_train = 2000,
                         .val_rows = idx + 2000,
                         .n_val = 1000};
    ee_train_opts_t o;
    ee_train_opts_default(&o);
    ee_train_result_t res;
    assert_int_equal(ee_train(ee, &d, &o, &res, &err), 0);
    assert_true(res.val_bacc > 0.97);
    assert_true(res.epochs - res.best_epoch <= o.patience);
    /* The folded weights read raw features: recall of k and of the others both high. */
    float *pk = malloc(1000 * sizeof(float));
    ee_head_probs(ee, x, (size_t)F, idx + 2000, 1000, pk);
    int tp = 0, pos = 0, tn = 0, neg = 0;
    for (int r = 0; r < 1000; r++) {
        int k = label[2000 + r] == 3, says = pk[r] >= 0.5f;
        pos += k, neg += !k, tp += k && says, tn += !k && !says;
    }
    assert_true((double)tp / pos > 0.95);
    assert_true((double)tn / neg > 0.95);
    /* No class-k training rows is refused. */
    spec.target = 7;
    ee_t *e7 = ee_new(&spec, sh, 64, &err);
    int only[4] = {0, 1, 2, 3}; /* classes 0..3 */
    d.train_rows = only, d.n_train = 4;
    assert_int_equal(ee_train(e7, &d, &o, NULL, &err), EI_E_INVAL);
    assert_non_null(strstr(err.msg, "class 7"));
    ee_destroy(&e7);
    free(pk);
    free(x);
    free(label);
    free(idx);
    ee_destroy(&ee);
}

/* ---- files ---- */

static void test_file_round_trip_and_errors(void **state)
{
    (void)state;
    ei_err_t err = {0};
    ee_spec_t spec = {.target = 2, .layer = 3, .kp = 1, .pool = 2, .alpha = 0.97};
    ee_t *ee = ee_new(&spec, shapes3, 1, &err);
    ee_init(ee, 5);
    char path[128];
    snprintf(path, sizeof path, "%s/ee.safetensors", tmpdir);
    ee_backbone_ref_t bb = {"models/x.safetensors", "x", "0123456789abcdef"};
    assert_int_equal(ee_save(ee, path, &bb, "{\"note\":1}", &err), 0);
    ee_t *back = ee_load(path, NULL, 1, &err);
    assert_non_null(back);
    assert_int_equal(ee_target(back), 2);
    assert_int_equal(ee_layer(back), 3);
    assert_int_equal(ee_spec(back)->kp, 1);
    assert_int_equal(ee_spec(back)->pool, 2);
    assert_true(ee_alpha(back) == 0.97);
    assert_string_equal(ee_backbone(back), "models/x.safetensors");
    assert_string_equal(ee_backbone_fnv1a(back), "0123456789abcdef");
    assert_string_equal(ee_info(back), "{\"note\":1}");
    nn_tensor_t *taps[3];
    make_taps(taps, 1, 21);
    float p1, p2;
    int a1 = ee_check(ee, (const nn_tensor_t *const *)taps, &p1, &err);
    int a2 = ee_check(back, (const nn_tensor_t *const *)taps, &p2, &err);
    assert_int_equal(a1, a2);
    assert_true(p1 == p2);
    /* Bad metadata names the key. */
    float w[2 * 36] = {0}, b[2] = {0};
    nn_st_entry_t e[2] = {{.name = "dense.weight", .ndim = 2, .shape = {2, 36}, .data = w},
                          {.name = "dense.bias", .ndim = 1, .shape = {2}, .data = b}};
    nn_st_meta_t meta[] = {{"format", "einet-ee"}, {"version", "1"},   {"target", "2"},
                           {"layer", "3"},         {"kp", "on"},       {"alpha", "0.97"},
                           {"pooling", "avg:2"},   {"features", "36"}, {"taps", "2x6x6,3x4x4"}};
    assert_int_equal(nn_st_write(path, e, 2, meta, 9, &err), 0);
    assert_null(ee_load(path, NULL, 1, &err));
    assert_int_equal(err.code, EI_E_FORMAT);
    assert_non_null(strstr(err.msg, "\"taps\""));
    meta[8].value = "2x6x6,3x4x4,4x3x3";
    meta[4].value = "maybe";
    assert_int_equal(nn_st_write(path, e, 2, meta, 9, &err), 0);
    assert_null(ee_load(path, NULL, 1, &err));
    assert_non_null(strstr(err.msg, "\"kp\""));
    meta[4].value = "on";
    meta[7].value = "35";
    assert_int_equal(nn_st_write(path, e, 2, meta, 9, &err), 0);
    assert_null(ee_load(path, NULL, 1, &err));
    assert_non_null(strstr(err.msg, "36"));
    meta[7].value = "36";
    meta[0].value = "einet-model";
    assert_int_equal(nn_st_write(path, e, 2, meta, 9, &err), 0);
    assert_null(ee_load(path, NULL, 1, &err));
    assert_non_null(strstr(err.msg, "not an einet EE file"));
    free_taps(taps, 3);
    ee_destroy(&ee);
    ee_destroy(&back);
}

/* ---- a small end-to-end search ---- */

/* Two blocks on 1x8x8 inputs, 3 classes. */
static const char small_arch[] =
    "{\"name\":\"small\",\"input\":[1,8,8],\"classes\":3,\"blocks\":["
    "{\"conv\":[{\"type\":\"conv\",\"out\":4,\"k\":3,\"pad\":1},{\"type\":\"relu\"}],"
    " \"branch\":[{\"type\":\"gap\"},{\"type\":\"dense\",\"out\":3}]},"
    "{\"conv\":[{\"type\":\"conv\",\"out\":6,\"k\":3,\"pad\":1},{\"type\":\"relu\"},"
    "  {\"type\":\"maxpool\",\"k\":2}],"
    " \"branch\":[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":3}]}]}";

/* Images of class c carry a bright 3x3 patch at a class-specific place, plus noise; one in
 * seven carries another class's patch, so neither B nor an EE can be perfect. Class 0 is
 * the rarer (15%), as a target class is among ten. */
static nn_dataset_t *synthetic(int count, uint64_t seed)
{
    nn_dataset_t *d = calloc(1, sizeof *d);
    d->count = count, d->h = 8, d->w = 8, d->classes = 3;
    d->images = malloc((size_t)count * 64 * sizeof(float));
    d->labels = malloc((size_t)count);
    ei_rng_t rng;
    ei_rng_seed(&rng, seed);
    for (int s = 0; s < count; s++) {
        int c = ei_rng_uniform(&rng) < 0.15 ? 0 : 1 + (int)ei_rng_below(&rng, 2);
        d->labels[s] = (uint8_t)c;
        float *im = d->images + (size_t)s * 64;
        for (int i = 0; i < 64; i++)
            im[i] = (float)(0.3 * ei_rng_uniform(&rng));
        int at = ei_rng_uniform(&rng) < 0.15 ? (c + 1 + (int)ei_rng_below(&rng, 2)) % 3 : c;
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 3; x++)
                im[(1 + 2 * at + y) * 8 + 1 + 2 * at + x] += 0.8f;
    }
    return d;
}

static void free_synthetic(nn_dataset_t *d)
{
    free(d->images);
    free(d->labels);
    free(d);
}

static void test_small_search_end_to_end(void **state)
{
    (void)state;
    ei_err_t err = {0};
    nn_model_t *m = nn_model_from_arch(small_arch, "small", 32, &err);
    assert_non_null(m);
    nn_model_init(m, 4);
    nn_dataset_t *train = synthetic(900, 1), *test = synthetic(300, 2);
    int tr[600], va[300];
    for (int i = 0; i < 600; i++)
        tr[i] = i;
    for (int i = 0; i < 300; i++)
        va[i] = 600 + i;
    nn_train_opts_t to;
    nn_train_opts_default(&to);
    to.epochs = 2, to.batch = 32, to.augment_flip = 0, to.log = fopen("/dev/null", "w");
    assert_int_equal(nn_train(m, train, tr, 600, va, 300, &to, &err), 0);
    fclose(to.log);
    nn_model_prepare_inference(m);
    ee_search_times_t times;
    assert_int_equal(ee_search_times_measure(m, train, va, 20, &times, &err), 0);
    assert_int_equal(times.n, 2);
    assert_true(times.conv_ms[0] > 0 && times.conv_ms[1] > 0 && times.final_branch_ms > 0);
    /* Block times of a larger model, so the figures do not hang on this machine's load. */
    times.conv_ms[0] = 1, times.conv_ms[1] = 4, times.final_branch_ms = 1;
    ee_search_bank_t *bank =
        ee_search_bank_new(m, train, tr, 600, va, 300, test, 300, 2, NULL, &err);
    assert_non_null(bank);
    assert_int_equal(bank->count, 1200);
    assert_int_equal(bank->features, 4 * 4 + 6 * 4);
    assert_int_equal(bank->offset[1], 16);
    ee_search_opts_t o;
    ee_search_opts_default(&o);
    o.alpha_step = 0.01;
    ee_search_result_t res;
    assert_int_equal(ee_search_class(bank, &times, 0, &o, &res, &err), 0);
    assert_int_equal(res.ncand, 3); /* layer 1 (KP off = on), layer 2 off and on */
    assert_true(res.found);
    const ee_spec_t *s = ee_spec(res.ee);
    assert_true(s->alpha >= 0.95 && s->alpha <= 1.0);
    assert_true(res.val.viable && res.val.gain > 1);
    assert_true(res.front >= 1 && res.front <= res.points);
    for (int i = 0; i < res.ncand; i++)
        if (res.cand[i].viable)
            assert_false(res.cand[i].best.gain / res.cand[i].best.loss >
                         res.val.gain / res.val.loss);
    assert_int_equal(res.test.c.n, 300);
    /* The device path (taps -> ee_check) agrees with the bank the search used. */
    const float *feat = bank->feat + (s->kp ? 0 : bank->offset[s->layer - 1]);
    nn_tensor_t *x = nn_tensor_new(1, 1, 8, 8);
    for (int i = 0; i < 20; i++) {
        memcpy(x->data, test->images + (size_t)i * 64, 64 * sizeof(float));
        const nn_tensor_t *taps[2], *cur = x;
        for (int k = 0; k < s->layer; k++)
            cur = taps[k] = nn_model_conv(m, k, cur, &err);
        float dev, ref;
        int took = ee_check(res.ee, taps, &dev, &err);
        ee_head_probs(res.ee, feat + (size_t)(900 + i) * bank->features, (size_t)bank->features,
                      NULL, 1, &ref);
        assert_float_equal(dev, ref, 1e-5);
        assert_int_equal(took, (double)dev >= s->alpha);
    }
    /* Saved and reloaded against the model, the test figures come out the same. */
    char path[128];
    snprintf(path, sizeof path, "%s/ee-class0.safetensors", tmpdir);
    assert_int_equal(ee_save(res.ee, path, NULL, NULL, &err), 0);
    ee_t *back = ee_load(path, m, 32, &err);
    assert_non_null(back);
    ee_search_figures_t f;
    ee_search_eval_rows(back, bank, 900, 300, &times, res.test.e_ms, &f);
    assert_int_equal(f.c.tp_ee, res.test.c.tp_ee);
    assert_int_equal(f.c.fp_ee, res.test.c.fp_ee);
    assert_true(f.gain == res.test.gain);
    /* A model with other shapes refuses it. */
    nn_model_t *other = nn_model_from_arch(
        "{\"name\":\"o\",\"input\":[1,8,8],\"classes\":3,\"blocks\":[{\"conv\":[{\"type\":\"conv\","
        "\"out\":5,\"k\":3,\"pad\":1}],\"branch\":[{\"type\":\"gap\"},{\"type\":\"dense\","
        "\"out\":3}]}]}",
        "o", 1, &err);
    assert_null(ee_load(path, other, 1, &err));
    assert_int_equal(err.code, EI_E_SHAPE);
    nn_model_destroy(&other);
    ee_destroy(&back);
    nn_tensor_destroy(&x);
    ee_search_result_clear(&res);
    assert_null(res.ee);
    ee_search_bank_destroy(&bank);
    free_synthetic(train);
    free_synthetic(test);
    nn_model_destroy(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_figures_hand_counts),
        cmocka_unit_test(test_figures_equalities_hold),
        cmocka_unit_test(test_figures_violations),
        cmocka_unit_test(test_pareto_choice),
        cmocka_unit_test(test_kp_shapes_and_values),
        cmocka_unit_test(test_kp_gradients),
        cmocka_unit_test(test_bad_taps_and_specs),
        cmocka_unit_test(test_training_balanced),
        cmocka_unit_test(test_file_round_trip_and_errors),
        cmocka_unit_test(test_small_search_end_to_end),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
