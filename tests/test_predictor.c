/* Tests of planner/predictor: the evidence encodings and loss masks on crafted cases, the
 * masked losses against hand-computed values and their gradients against finite differences,
 * training on a synthetic CS-profile whose future is learnable, evaluation against a plain
 * recomputation, predictor files and their errors, and `einet predictor` usage errors. */
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

#include "tests/test_util.h"

#include "nn/safetensors.h"
#include "planner/predictor.h"

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/einet-test-predictor-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd);
}

static predictor_t *make(predictor_kind_t kind, int n, int K, int h1, int h2, uint64_t seed)
{
    ei_err_t err = {0};
    predictor_t *p = predictor_new(kind, n, K, h1, h2, seed, &err);
    if (!p)
        fail_msg("%s", err.msg);
    return p;
}

/* ---- evidence and masks ---- */

static void test_confidence_features(void **state)
{
    (void)state;
    predictor_t *p = make(PREDICTOR_CONFIDENCE, 5, 3, 4, 3, 1);
    /* Exit confidences (max probability): 0.5, 0.6, 0.7, 0.8, 0.9. */
    const float probs[15] = {0.5f, 0.3f, 0.2f, 0.2f, 0.6f,  0.2f,  0.1f, 0.2f,
                             0.7f, 0.8f, 0.1f, 0.1f, 0.05f, 0.05f, 0.9f};
    float in[5];
    /* Exit 0 skipped (no earlier value: 0), exit 1 ran, 2 skipped (repeats exit 1), 3 ran;
     * x = 4: exit 4 is the future (0). */
    const uint8_t ex[5] = {0, 1, 0, 1, 0};
    predictor_features(p, probs, ex, 4, in);
    const float want[5] = {0, 0.6f, 0.6f, 0.8f, 0};
    assert_memory_equal(in, want, sizeof want);
    /* x = 2: exits 2.. are future even if the executed array says otherwise. */
    const uint8_t all[5] = {1, 1, 1, 1, 1};
    predictor_features(p, probs, all, 2, in);
    const float want2[5] = {0.5f, 0.6f, 0, 0, 0};
    assert_memory_equal(in, want2, sizeof want2);
    predictor_features(p, probs, all, 0, in);
    for (int j = 0; j < 5; j++)
        assert_true(in[j] == 0);
    /* Predict: executed exits before x keep their observed confidence (eq. (1)). */
    double s[5];
    predictor_predict(p, probs, ex, 4, s);
    assert_true(s[1] == 0.6f && s[3] == 0.8f);
    for (int j = 0; j < 5; j++)
        assert_true(s[j] >= 0 && s[j] <= 1);
    predictor_destroy(&p);
    assert_null(p);
}

static void test_correctness_features(void **state)
{
    (void)state;
    predictor_t *p = make(PREDICTOR_CORRECTNESS, 3, 2, 4, 3, 1);
    assert_int_equal(predictor_inputs(p), 7 * 3 + 2);
    const float probs[6] = {0.75f, 0.25f, 0.5f, 0.5f, 0.1f, 0.9f};
    const uint8_t ex[3] = {1, 0, 0};
    float in[23];
    predictor_features(p, probs, ex, 2, in);
    /* Exit 0: seen, executed, max 0.75, margin 0.5, entropy / ln 2, agrees with itself, gives
     * its own class 0.75. Exit 1: seen, skipped. Exit 2: future. Then exit 0's vector. */
    double h = -(0.75 * log(0.75) + 0.25 * log(0.25)) / log(2.0);
    const float want[23] = {1, 1, 0.75f, 0.5f, (float)h, 1, 0.75f, 1, 0, 0,     0,    0,
                            0, 0, 0,     0,    0,        0, 0,     0, 0, 0.75f, 0.25f};
    for (int i = 0; i < 23; i++)
        if (fabsf(in[i] - want[i]) > 1e-6f)
            fail_msg("input %d: %g, want %g", i, (double)in[i], (double)want[i]);
    /* With exit 2 run as well it becomes the latest: exit 0 disagrees with its class 1. */
    const uint8_t ex2[3] = {1, 0, 1};
    predictor_features(p, probs, ex2, 3, in);
    assert_true(in[5] == 0 && in[6] == 0.25f); /* exit 0: agreement, p(class 1) */
    assert_true(in[14] == 1 && in[15] == 1 && in[16] == 0.9f && in[19] == 1);
    assert_true(in[21] == 0.1f && in[22] == 0.9f);
    predictor_destroy(&p);
}

static void test_masks(void **state)
{
    (void)state;
    const uint8_t ex[5] = {1, 0, 1, 0, 0};
    float m[5];
    /* EINet eq. (3): only the exits after the current one count. */
    predictor_mask(PREDICTOR_CONFIDENCE, 5, ex, 3, m);
    const float conf[5] = {0, 0, 0, 1, 1};
    assert_memory_equal(m, conf, sizeof conf);
    /* Correctness: the future and the executed exits (whose correctness is unknown too). */
    predictor_mask(PREDICTOR_CORRECTNESS, 5, ex, 3, m);
    const float corr[5] = {1, 0, 1, 1, 1};
    assert_memory_equal(m, corr, sizeof corr);
    predictor_mask(PREDICTOR_CONFIDENCE, 5, ex, 0, m);
    for (int j = 0; j < 5; j++)
        assert_true(m[j] == 1);
}

/* ---- losses and gradients ---- */

/* fc3 = 0 and its bias = logits: every output is sigmoid(bias) whatever the input. */
static void fix_outputs(predictor_t *p, const float *logits, int n)
{
    nn_param_t *w = predictor_param(p, 4, NULL), *b = predictor_param(p, 5, NULL);
    memset(w->value->data, 0, nn_tensor_numel(w->value) * sizeof(float));
    memcpy(b->value->data, logits, (size_t)n * sizeof(float));
}

static void test_loss_crafted(void **state)
{
    (void)state;
    /* Outputs 0.5, 0.75, 0.25. */
    const float logits[3] = {0, (float)log(3.0), (float)-log(3.0)};
    const float in[2 * 3] = {0.3f, 0.2f, 0, 0, 0, 0};
    const float target[2 * 3] = {1, 0.5f, 0, 1, 0.5f, 0};
    float mask[2 * 3];
    const uint8_t ex[3] = {1, 0, 0};
    predictor_t *p = make(PREDICTOR_CONFIDENCE, 3, 2, 4, 3, 1);
    fix_outputs(p, logits, 3);
    predictor_mask(PREDICTOR_CONFIDENCE, 3, ex, 1, mask);     /* row 0: x = 1 */
    predictor_mask(PREDICTOR_CONFIDENCE, 3, ex, 0, mask + 3); /* row 1: nothing seen */
    /* Row 0: (0.75-0.5)^2 + 0.25^2 = 0.125; row 1: 0.5^2 + 0.125 = 0.375; mean 0.25. */
    double loss = predictor_loss(p, in, target, mask, 2, 1);
    assert_true(fabs(loss - 0.25) < 1e-6);
    /* d/d bias: (1/2) sum_rows mask 2 (o - t) o (1 - o). */
    const float *g = predictor_param(p, 5, NULL)->grad->data;
    assert_true(fabs(g[0] - (-0.125)) < 1e-6);
    assert_true(fabs(g[1] - 0.09375) < 1e-6);
    assert_true(fabs(g[2] - 0.09375) < 1e-6);
    /* Masked-out targets do not matter. */
    float t2[6];
    memcpy(t2, target, sizeof t2);
    t2[0] = 0.123f;
    assert_true(predictor_loss(p, in, t2, mask, 2, 0) == loss);
    predictor_destroy(&p);

    /* Correctness: BCE on the kept outputs. Row 0 (exit 0 ran, x = 1): all three count. */
    p = make(PREDICTOR_CORRECTNESS, 3, 2, 4, 3, 1);
    fix_outputs(p, logits, 3);
    float cin[23] = {0}, cm[3];
    const float ct[3] = {1, 0, 0};
    predictor_mask(PREDICTOR_CORRECTNESS, 3, ex, 1, cm);
    double want = -log(0.5) - log(1 - 0.75) - log(1 - 0.25);
    assert_true(fabs(predictor_loss(p, cin, ct, cm, 1, 1) - want) < 1e-6);
    g = predictor_param(p, 5, NULL)->grad->data;
    assert_true(fabs(g[0] + 0.5) < 1e-6 && fabs(g[1] - 0.75) < 1e-6 && fabs(g[2] - 0.25) < 1e-6);
    predictor_destroy(&p);
}

static void check_gradient(predictor_kind_t kind, int n, int K)
{
    predictor_t *p = make(kind, n, K, 6, 5, 11);
    int in_dim = predictor_inputs(p), batch = 3;
    float *in = malloc((size_t)(batch * in_dim) * sizeof *in);
    float target[3 * 8], mask[3 * 8];
    ei_rng_t r;
    ei_rng_seed(&r, 5);
    for (int i = 0; i < batch * in_dim; i++)
        in[i] = (float)ei_rng_uniform(&r);
    for (int i = 0; i < batch * n; i++) {
        target[i] =
            kind == PREDICTOR_CONFIDENCE ? (float)ei_rng_uniform(&r) : (float)ei_rng_below(&r, 2);
        mask[i] = (i % n) >= (i / n); /* row b keeps exits >= b */
    }
    predictor_loss(p, in, target, mask, batch, 1);
    int checked = 0;
    for (int q = 0; q < predictor_param_count(p); q++) {
        const char *name;
        nn_param_t *prm = predictor_param(p, q, &name);
        size_t len = nn_tensor_numel(prm->value);
        float *grad = malloc(len * sizeof *grad);
        memcpy(grad, prm->grad->data, len * sizeof *grad);
        for (size_t i = 0; i < len; i++) {
            float keep = prm->value->data[i], h = 1e-2f;
            prm->value->data[i] = keep + h;
            double up = predictor_loss(p, in, target, mask, batch, 0);
            prm->value->data[i] = keep - h;
            double down = predictor_loss(p, in, target, mask, batch, 0);
            prm->value->data[i] = keep;
            double fd = (up - down) / (2.0 * h);
            if (fabs(fd - grad[i]) > 2e-3 + 2e-2 * fabs(fd))
                fail_msg("%s %s[%zu]: gradient %g, finite difference %g", predictor_kind_name(kind),
                         name, i, (double)grad[i], fd);
            checked++;
        }
        free(grad);
    }
    assert_true(checked > 50);
    free(in);
    predictor_destroy(&p);
}

static void test_gradient_vs_finite_differences(void **state)
{
    (void)state;
    check_gradient(PREDICTOR_CONFIDENCE, 4, 3);
    check_gradient(PREDICTOR_CORRECTNESS, 3, 3);
}

/* ---- training, evaluation, files ---- */

/* Synthetic 3-exit profile: easy samples (half) are confident and right at every exit; hard
 * ones are unsure at exit 0 (right half the time), always wrong at exit 1, right at exit 2. */
static profile_cs_t *synthetic(int count, uint64_t seed)
{
    ei_err_t err = {0};
    profile_cs_t *cs = profile_cs_new(count, 3, 2, "val", "synthetic", &err);
    ei_rng_t r;
    ei_rng_seed(&r, seed);
    for (int i = 0; i < count; i++) {
        float p[6];
        int easy = ei_rng_below(&r, 2) == 0, label = (int)ei_rng_below(&r, 2);
        float u = 0.02f * (float)ei_rng_uniform(&r);
        if (easy) {
            const float e[6] = {0.05f, 0.95f, 0.03f, 0.97f, 0.02f, 0.98f};
            memcpy(p, e, sizeof p);
        } else {
            const float h[6] = {0.45f, 0.55f, 0.7f, 0.3f, 0.2f, 0.8f};
            memcpy(p, h, sizeof p);
        }
        p[0] -= u, p[1] += u;
        /* Class 1 is the label's class except at a hard sample's exit 1 (wrong) and, half the
         * time, its exit 0. */
        if (label == 0)
            for (int k = 0; k < 3; k++) {
                float t = p[2 * k];
                p[2 * k] = p[2 * k + 1];
                p[2 * k + 1] = t;
            }
        if (!easy && ei_rng_below(&r, 2)) {
            float t = p[0];
            p[0] = p[1];
            p[1] = t;
        }
        assert_int_equal(profile_cs_set(cs, i, p, label, i, &err), 0);
    }
    return cs;
}

static void test_training_learns_the_future(void **state)
{
    (void)state;
    profile_cs_t *cs = synthetic(600, 3);
    predictor_opts_t o;
    predictor_opts_default(&o);
    o.kind = PREDICTOR_CORRECTNESS;
    o.hidden1 = 16;
    o.hidden2 = 8;
    o.epochs = 20;
    o.lr = 1e-2;
    ei_err_t err = {0};
    predictor_t *p = predictor_train(cs, &o, &err);
    assert_non_null(p);
    const float easy[6] = {0.05f, 0.95f, 0, 0, 0, 0}, hard[6] = {0.45f, 0.55f, 0, 0, 0, 0};
    const uint8_t ex[3] = {1, 0, 0};
    double s[3];
    predictor_predict(p, easy, ex, 1, s);
    assert_true(s[0] > 0.85 && s[1] > 0.85 && s[2] > 0.85);
    predictor_predict(p, hard, ex, 1, s);
    assert_true(s[0] > 0.3 && s[0] < 0.7 && s[1] < 0.15 && s[2] > 0.85);
    predictor_eval_t ev;
    assert_int_equal(predictor_evaluate(p, cs, &ev, &err), 0);
    assert_true(ev.mse < 0.5 * ev.const_mse);
    predictor_destroy(&p);

    /* The paper's kind learns the future confidences: 0.98 at exit 2 for easy samples. */
    o.kind = PREDICTOR_CONFIDENCE;
    o.epochs = 80;
    p = predictor_train(cs, &o, &err);
    assert_non_null(p);
    predictor_predict(p, easy, ex, 1, s);
    if (!(fabs(s[2] - 0.98) < 0.03 && s[0] == 0.95f))
        fail_msg("easy: %g %g %g", s[0], s[1], s[2]);
    predictor_predict(p, hard, ex, 1, s);
    assert_true(fabs(s[1] - 0.7) < 0.05 && fabs(s[2] - 0.8) < 0.05);
    predictor_destroy(&p);
    o.epochs = 0;
    assert_null(predictor_train(cs, &o, &err));
    assert_int_equal(err.code, EI_E_RANGE);
    profile_cs_destroy(&cs);
}

static void test_evaluate_recomputed(void **state)
{
    (void)state;
    profile_cs_t *cs = synthetic(40, 8);
    predictor_t *p = make(PREDICTOR_CONFIDENCE, 3, 2, 5, 4, 2);
    predictor_eval_t ev;
    ei_err_t err = {0};
    assert_int_equal(predictor_evaluate(p, cs, &ev, &err), 0);
    /* Fig. 4 patterns: x = 0, 1, 2 with every earlier exit run; future exits only. */
    double sse = 0;
    long count = 0;
    for (int s = 0; s < 40; s++)
        for (int x = 0; x < 3; x++) {
            uint8_t ex[3] = {0 < x, 1 < x, 0};
            double sc[3];
            predictor_predict(p, profile_cs_probs(cs, s), ex, x, sc);
            for (int j = x; j < 3; j++, count++)
                sse += pow(sc[j] - profile_cs_conf(cs, s)[j], 2);
        }
    assert_int_equal(ev.outputs, count);
    assert_true(fabs(ev.mse - sse / count) < 1e-12);
    profile_cs_t *other = profile_cs_new(2, 4, 2, "x", "y", &err);
    assert_int_equal(predictor_evaluate(p, other, &ev, &err), EI_E_SHAPE);
    profile_cs_destroy(&other);
    predictor_destroy(&p);
    profile_cs_destroy(&cs);
}

static void test_file_round_trip(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/p.safetensors", tmpdir);
    ei_err_t err = {0};
    for (int kind = 0; kind < 2; kind++) {
        predictor_t *a = make((predictor_kind_t)kind, 4, 3, 7, 5, 9), *b;
        assert_int_equal(predictor_save(a, path, "m", "{\"x\":1}", &err), 0);
        assert_non_null(b = predictor_load(path, &err));
        assert_int_equal(predictor_kind(b), kind);
        int h1, h2;
        predictor_hidden(b, &h1, &h2);
        assert_true(h1 == 7 && h2 == 5 && predictor_exits(b) == 4 && predictor_classes(b) == 3);
        const float probs[12] = {0.2f, 0.3f, 0.5f, 0.6f, 0.2f, 0.2f, 0.1f, 0.1f, 0.8f, 0, 1, 0};
        const uint8_t ex[4] = {1, 0, 1, 0};
        double sa[4], sb[4];
        predictor_predict(a, probs, ex, 3, sa);
        predictor_predict(b, probs, ex, 3, sb);
        assert_memory_equal(sa, sb, sizeof sa);
        predictor_destroy(&a);
        predictor_destroy(&b);
    }
    assert_null(predictor_load("/nonexistent/p.safetensors", &err));
}

static void test_file_malformed(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/bad.safetensors", tmpdir);
    predictor_t *p = make(PREDICTOR_CONFIDENCE, 2, 2, 3, 2, 1);
    nn_st_entry_t e[6];
    for (int i = 0; i < 6; i++) {
        nn_param_t *prm = predictor_param(p, i, &e[i].name);
        e[i].ndim = i % 2 ? 1 : 2;
        e[i].shape[0] = prm->value->n;
        e[i].shape[1] = prm->value->c;
        e[i].data = prm->value->data;
    }
    static const struct {
        const char *key, *value;
        int drop, code;
        const char *needle;
    } cases[] = {
        {"kind", "psychic", 0, EI_E_FORMAT, "metadata kind"},
        {"inputs", "9", 0, EI_E_SHAPE, "metadata inputs: 9"},
        {"exits", "two", 0, EI_E_FORMAT, "metadata exits"},
        {"hidden", "3", 0, EI_E_FORMAT, "metadata hidden"},
        {"hidden", "4,2", 0, EI_E_SHAPE, "fc1.weight"},
        {"version", "7", 0, EI_E_VERSION, "metadata version"},
        {"format", "einet-model", 0, EI_E_FORMAT, "metadata format"},
        {"kind", "confidence", 1, EI_E_NOTFOUND, "fc3.bias"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        nn_st_meta_t meta[] = {{"format", "einet-predictor"},
                               {"version", "1"},
                               {"kind", "confidence"},
                               {"exits", "2"},
                               {"classes", "2"},
                               {"inputs", "2"},
                               {"hidden", "3,2"}};
        for (int m = 0; m < 7; m++)
            if (!strcmp(meta[m].key, cases[c].key))
                meta[m].value = cases[c].value;
        ei_err_t err = {0};
        assert_int_equal(nn_st_write(path, e, 6 - cases[c].drop, meta, 7, &err), 0);
        predictor_t *q = predictor_load(path, &err);
        if (q || err.code != cases[c].code || !strstr(err.msg, cases[c].needle) ||
            !strstr(err.msg, path))
            fail_msg("case %zu: loaded %d, code %d, message '%s'", c, q != NULL, err.code, err.msg);
    }
    predictor_destroy(&p);
}

/* ---- the command ---- */

static void test_cli(void **state)
{
    (void)state;
    if (!getenv("EINET_BIN"))
        skip();
    assert_int_equal(tu_run_einet("predictor"), 2);
    assert_int_equal(tu_run_einet("predictor --help"), 0);
    assert_int_equal(tu_run_einet("predictor train --help"), 0);
    assert_int_equal(tu_run_einet("predictor frob"), 2);
    assert_int_equal(tu_run_einet("predictor train --kind psychic"), 2);
    assert_int_equal(tu_run_einet("predictor train --hidden 3"), 2);
    assert_int_equal(tu_run_einet("predictor train --epochs 0"), 2);
    assert_int_equal(tu_run_einet("predictor train --bogus"), 2);
    assert_int_equal(tu_run_einet("predictor eval"), 2);
    assert_int_equal(tu_run_einet("predictor train --profiles /nonexistent"), 1);
    /* A real run on a small synthetic profile directory. */
    char args[512], path[256];
    profile_cs_t *val = synthetic(200, 1), *test = synthetic(100, 2);
    ei_err_t err = {0};
    snprintf(path, sizeof path, "%s/%s", tmpdir, PROFILE_CS_VAL_FILE);
    assert_int_equal(profile_cs_save(val, path, &err), 0);
    snprintf(path, sizeof path, "%s/%s", tmpdir, PROFILE_CS_TEST_FILE);
    assert_int_equal(profile_cs_save(test, path, &err), 0);
    snprintf(args, sizeof args, "predictor train --profiles %s --epochs 2 --quiet", tmpdir);
    assert_int_equal(tu_run_einet(args), 0);
    snprintf(path, sizeof path, "%s/predictor-correctness.safetensors", tmpdir);
    assert_int_equal(access(path, R_OK), 0);
    snprintf(args, sizeof args, "predictor eval --profiles %s %s", tmpdir, path);
    assert_int_equal(tu_run_einet(args), 0);
    profile_cs_destroy(&val);
    profile_cs_destroy(&test);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_confidence_features),
        cmocka_unit_test(test_correctness_features),
        cmocka_unit_test(test_masks),
        cmocka_unit_test(test_loss_crafted),
        cmocka_unit_test(test_gradient_vs_finite_differences),
        cmocka_unit_test(test_training_learns_the_future),
        cmocka_unit_test(test_evaluate_recomputed),
        cmocka_unit_test(test_file_round_trip),
        cmocka_unit_test(test_file_malformed),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
