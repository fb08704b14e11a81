/* Tests of planner/profile: ET-profile statistics, the JSON round trip and every malformed
 * field; CS-profiles (derived confidence and correctness, the file round trip, malformed
 * files); measuring a small real model block by block against its full forward pass; and
 * `einet profile` usage errors. */
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

#include "nn/model.h"
#include "nn/safetensors.h"
#include "planner/profile.h"

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/einet-test-profile-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd);
}

/* ---- ET-profiles ---- */

static void test_et_summarise(void **state)
{
    (void)state;
    /* 20 samples of 2 blocks: conv times 1..20, branch times all 0.5. */
    double conv[40], branch[40];
    for (int i = 0; i < 20; i++) {
        conv[2 * i] = i + 1;
        conv[2 * i + 1] = 2 * (i + 1);
        branch[2 * i] = branch[2 * i + 1] = 0.5;
    }
    profile_et_t et;
    profile_et_init(&et, 2);
    ei_err_t err = {0};
    assert_int_equal(profile_et_summarise(&et, conv, branch, 20, 2, &err), 0);
    assert_true(et.times.conv_ms[0] == 10.5 && et.times.conv_ms[1] == 21);
    /* Sample std of 1..20: sqrt(35). p95 by nearest rank: the 19th of 20. */
    assert_true(fabs(et.conv_std_ms[0] - sqrt(35.0)) < 1e-12);
    assert_true(fabs(et.conv_std_ms[1] - 2 * sqrt(35.0)) < 1e-12);
    assert_true(et.conv_p95_ms[0] == 19 && et.conv_p95_ms[1] == 38);
    assert_true(et.times.branch_ms[0] == 0.5 && et.branch_std_ms[1] == 0 &&
                et.branch_p95_ms[1] == 0.5);
    assert_int_equal(et.samples, 20);
    conv[3] = -1;
    assert_int_equal(profile_et_summarise(&et, conv, branch, 20, 2, &err), EI_E_RANGE);
    assert_int_equal(profile_et_summarise(&et, conv, branch, 0, 2, &err), EI_E_RANGE);
}

static void fill_et(profile_et_t *et, int n, uint64_t seed)
{
    ei_rng_t r;
    ei_rng_seed(&r, seed);
    profile_et_init(et, n);
    snprintf(et->model, sizeof et->model, "round-trip");
    et->samples = 1234;
    et->threads = 2;
    for (int k = 0; k < n; k++) {
        et->times.conv_ms[k] = 0.05 + ei_rng_uniform(&r) / 3;
        et->times.branch_ms[k] = ei_rng_uniform(&r) / 7;
        et->times.link_ms[k] = k == 2 ? 1.0 / 3 : 0;
        et->times.result_ms[k] = k >= 3 ? 0.125 : 0;
        et->conv_std_ms[k] = ei_rng_uniform(&r) / 11;
        et->conv_p95_ms[k] = et->times.conv_ms[k] * 1.1;
        et->branch_std_ms[k] = ei_rng_uniform(&r) / 13;
        et->branch_p95_ms[k] = et->times.branch_ms[k] * 1.2;
    }
}

static void test_et_round_trip(void **state)
{
    (void)state;
    profile_et_t a, b;
    fill_et(&a, 8, 7);
    char path[128];
    snprintf(path, sizeof path, "%s/et.json", tmpdir);
    ei_err_t err = {0};
    assert_int_equal(profile_et_save(&a, path, &err), 0);
    memset(&b, 0x5a, sizeof b);
    assert_int_equal(profile_et_load(path, &b, &err), 0);
    /* Every double survives exactly (jansson prints 17 significant digits). */
    assert_int_equal(b.times.n, 8);
    for (int k = 0; k < 8; k++) {
        assert_true(a.times.conv_ms[k] == b.times.conv_ms[k]);
        assert_true(a.times.branch_ms[k] == b.times.branch_ms[k]);
        assert_true(a.times.link_ms[k] == b.times.link_ms[k]);
        assert_true(a.times.result_ms[k] == b.times.result_ms[k]);
        assert_true(a.conv_std_ms[k] == b.conv_std_ms[k] && a.conv_p95_ms[k] == b.conv_p95_ms[k]);
        assert_true(a.branch_std_ms[k] == b.branch_std_ms[k] &&
                    a.branch_p95_ms[k] == b.branch_p95_ms[k]);
    }
    assert_string_equal(b.model, "round-trip");
    assert_int_equal(b.samples, 1234);
    assert_int_equal(b.threads, 2);
    assert_int_equal(b.batch, 1);
    /* A hand-written minimal profile: link and result times default to 0. */
    const char *min = "{\"conv_ms\":[1,2],\"branch_ms\":[0.5,0.25]}";
    assert_int_equal(profile_et_parse(min, strlen(min), "min", &b, &err), 0);
    assert_true(b.times.n == 2 && b.times.conv_ms[1] == 2 && b.times.branch_ms[1] == 0.25 &&
                b.times.link_ms[1] == 0 && b.times.result_ms[0] == 0);
    assert_int_equal(profile_et_load("/nonexistent/et.json", &b, &err), EI_E_NOTFOUND);
    assert_non_null(strstr(err.msg, "/nonexistent/et.json"));
}

static void test_et_malformed(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int code;
        const char *needle;
    } cases[] = {
        {"{\"conv_ms\":[1,2],", EI_E_FORMAT, "bad.json: line 1"},
        {"[1,2]", EI_E_FORMAT, "expected a JSON object"},
        {"{\"branch_ms\":[1]}", EI_E_FORMAT, "conv_ms: missing"},
        {"{\"conv_ms\":[1,2]}", EI_E_FORMAT, "branch_ms: missing"},
        {"{\"conv_ms\":[1,2],\"branch_ms\":[1]}", EI_E_SHAPE,
         "branch_ms: 1 entries, conv_ms has 2"},
        {"{\"conv_ms\":[1,-2],\"branch_ms\":[1,1]}", EI_E_RANGE, "conv_ms[1]"},
        {"{\"conv_ms\":[1,2],\"branch_ms\":[1,\"x\"]}", EI_E_FORMAT, "branch_ms[1]: not a number"},
        {"{\"conv_ms\":[],\"branch_ms\":[]}", EI_E_SHAPE, "conv_ms: 0 entries"},
        {"{\"conv_ms\":[1],\"branch_ms\":[1],\"link_ms\":[1,2]}", EI_E_SHAPE, "link_ms"},
        {"{\"conv_ms\":[1],\"branch_ms\":[1],\"result_ms\":{}}", EI_E_FORMAT, "result_ms"},
        {"{\"conv_ms\":[1],\"branch_ms\":[1],\"colour\":1}", EI_E_FORMAT, "colour: unknown field"},
        {"{\"format\":\"other\",\"conv_ms\":[1],\"branch_ms\":[1]}", EI_E_FORMAT, "format"},
        {"{\"version\":2,\"conv_ms\":[1],\"branch_ms\":[1]}", EI_E_VERSION, "version"},
        {"{\"samples\":1.5,\"conv_ms\":[1],\"branch_ms\":[1]}", EI_E_FORMAT, "samples"},
        {"{\"model\":3,\"conv_ms\":[1],\"branch_ms\":[1]}", EI_E_FORMAT, "model"},
        {"{\"conv_ms\":[0],\"branch_ms\":[0]}", EI_E_RANGE, "horizon"},
        {"{\"conv_ms\":[1],\"conv_ms\":[1],\"branch_ms\":[1]}", EI_E_FORMAT, "duplicate"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        profile_et_t et;
        ei_err_t err = {0};
        int rc = profile_et_parse(cases[i].text, strlen(cases[i].text), "bad.json", &et, &err);
        if (rc != cases[i].code || !strstr(err.msg, cases[i].needle) ||
            strncmp(err.msg, "bad.json: ", 10))
            fail_msg("case %zu (%s): code %d, message '%s'", i, cases[i].text, rc, err.msg);
    }
}

/* ---- CS-profiles ---- */

/* A random CS-profile: rows of probabilities that sum to 1. */
static profile_cs_t *random_cs(int count, int n, int K, uint64_t seed)
{
    ei_rng_t r;
    ei_rng_seed(&r, seed);
    ei_err_t err = {0};
    profile_cs_t *cs = profile_cs_new(count, n, K, "test", "random", &err);
    assert_non_null(cs);
    float *p = malloc((size_t)(n * K) * sizeof *p);
    for (int i = 0; i < count; i++) {
        for (int k = 0; k < n; k++) {
            double sum = 0;
            for (int c = 0; c < K; c++)
                sum += p[k * K + c] = (float)(ei_rng_uniform(&r) + 1e-3);
            for (int c = 0; c < K; c++)
                p[k * K + c] = (float)(p[k * K + c] / sum);
        }
        assert_int_equal(
            profile_cs_set(cs, i, p, (int)ei_rng_below(&r, (uint32_t)K), 100 + i, &err), 0);
    }
    free(p);
    return cs;
}

static void test_cs_derived(void **state)
{
    (void)state;
    ei_err_t err = {0};
    profile_cs_t *cs = profile_cs_new(2, 2, 3, "val", "m", &err);
    assert_non_null(cs);
    /* Sample 0, label 2: exit 0 says class 1 (0.5), exit 1 says class 2 (0.7).
     * Sample 1, label 0: exit 0 ties classes 0 and 1 (the lower wins), exit 1 says 1. */
    const float s0[] = {0.2f, 0.5f, 0.3f, 0.1f, 0.2f, 0.7f};
    const float s1[] = {0.4f, 0.4f, 0.2f, 0.3f, 0.6f, 0.1f};
    assert_int_equal(profile_cs_set(cs, 0, s0, 2, 17, &err), 0);
    assert_int_equal(profile_cs_set(cs, 1, s1, 0, 18, &err), 0);
    assert_true(profile_cs_conf(cs, 0)[0] == 0.5f && profile_cs_conf(cs, 0)[1] == 0.7f);
    assert_true(profile_cs_correct(cs, 0)[0] == 0 && profile_cs_correct(cs, 0)[1] == 1);
    assert_true(profile_cs_correct(cs, 1)[0] == 1 && profile_cs_correct(cs, 1)[1] == 0);
    assert_int_equal(profile_cs_index(cs, 1), 18);
    double acc[2], conf[2];
    profile_cs_accuracy(cs, acc, conf);
    assert_true(acc[0] == 0.5 && acc[1] == 0.5);
    assert_true(fabs(conf[0] - 0.45) < 1e-7 && fabs(conf[1] - 0.65) < 1e-7);
    /* Bad rows are refused and change nothing. */
    const float nan_row[] = {NAN, 0.5f, 0.5f, 0.1f, 0.2f, 0.7f};
    const float big_row[] = {0.2f, 1.5f, 0.3f, 0.1f, 0.2f, 0.7f};
    assert_int_equal(profile_cs_set(cs, 0, nan_row, 2, 0, &err), EI_E_RANGE);
    assert_int_equal(profile_cs_set(cs, 0, big_row, 2, 0, &err), EI_E_RANGE);
    assert_non_null(strstr(err.msg, "sample 0 exit 0 class 1"));
    assert_int_equal(profile_cs_set(cs, 0, s0, 3, 0, &err), EI_E_RANGE);
    assert_int_equal(profile_cs_label(cs, 0), 2);
    profile_cs_destroy(&cs);
    assert_null(cs);
    assert_null(profile_cs_new(0, 2, 3, "x", "y", &err));
    assert_null(profile_cs_new(5, PLANNER_MAX_EXITS + 1, 3, "x", "y", &err));
}

static void test_cs_round_trip(void **state)
{
    (void)state;
    profile_cs_t *a = random_cs(37, 5, 4, 3), *b;
    char path[128];
    snprintf(path, sizeof path, "%s/cs.safetensors", tmpdir);
    ei_err_t err = {0};
    assert_int_equal(profile_cs_save(a, path, &err), 0);
    assert_non_null(b = profile_cs_load(path, &err));
    assert_int_equal(profile_cs_count(b), 37);
    assert_int_equal(profile_cs_exits(b), 5);
    assert_int_equal(profile_cs_classes(b), 4);
    assert_string_equal(profile_cs_split(b), "test");
    assert_string_equal(profile_cs_model(b), "random");
    for (int i = 0; i < 37; i++) {
        assert_memory_equal(profile_cs_probs(a, i), profile_cs_probs(b, i), 20 * sizeof(float));
        assert_memory_equal(profile_cs_correct(a, i), profile_cs_correct(b, i), 5);
        assert_int_equal(profile_cs_label(a, i), profile_cs_label(b, i));
        assert_int_equal(profile_cs_index(b, i), 100 + i);
    }
    profile_cs_destroy(&a);
    profile_cs_destroy(&b);
}

/* Writes a CS-profile file with the given pieces; NULL data leaves a tensor out. */
static void write_cs(const char *path, const char *format, const float *probs,
                     const int64_t *pshape, const float *labels, int64_t nlabels)
{
    static const float index[4] = {0, 1, 2, 3};
    nn_st_entry_t e[3];
    int count = 0;
    if (probs)
        e[count++] = (nn_st_entry_t){"probs", 3, {pshape[0], pshape[1], pshape[2], 0}, probs};
    if (labels)
        e[count++] = (nn_st_entry_t){"labels", 1, {nlabels, 0, 0, 0}, labels};
    e[count++] = (nn_st_entry_t){"index", 1, {nlabels, 0, 0, 0}, index};
    nn_st_meta_t meta[] = {{"format", format}, {"version", "1"}};
    ei_err_t err = {0};
    assert_int_equal(nn_st_write(path, e, count, meta, 2, &err), 0);
}

static void test_cs_malformed(void **state)
{
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/bad.safetensors", tmpdir);
    float probs[2 * 2 * 2] = {0.5f, 0.5f, 0.9f, 0.1f, 0.2f, 0.8f, 0.3f, 0.7f};
    const int64_t shape[3] = {2, 2, 2};
    float labels[2] = {0, 0};
    ei_err_t err = {0};
    struct {
        const char *what;
        int code;
        const char *needle;
    } expect[6] = {
        {"good", 0, ""},
        {"wrong format", EI_E_FORMAT, "metadata format"},
        {"missing labels", EI_E_FORMAT, "missing tensor 'labels'"},
        {"label out of range", EI_E_RANGE, "tensor 'labels' [1]: 2 is not a class"},
        {"probability above 1", EI_E_RANGE, "tensor 'probs': sample 1 exit 0 class 1"},
        {"label count", EI_E_SHAPE, "expected shapes"},
    };
    for (int c = 0; c < 6; c++) {
        float p[8], l[2];
        memcpy(p, probs, sizeof p);
        memcpy(l, labels, sizeof l);
        if (c == 3)
            l[1] = 2;
        if (c == 4)
            p[5] = 1.25f;
        write_cs(path, c == 1 ? "einet-model" : "einet-cs-profile", p, shape, c == 2 ? NULL : l,
                 c == 5 ? 1 : 2);
        memset(&err, 0, sizeof err);
        profile_cs_t *cs = profile_cs_load(path, &err);
        if (expect[c].code == 0) {
            assert_non_null(cs);
            assert_true(profile_cs_correct(cs, 0)[0] == 1 && profile_cs_correct(cs, 1)[0] == 0);
        } else if (cs || err.code != expect[c].code || !strstr(err.msg, expect[c].needle) ||
                   !strstr(err.msg, path)) {
            fail_msg("%s: code %d, message '%s'", expect[c].what, err.code, err.msg);
        }
        profile_cs_destroy(&cs);
    }
    /* Not a safetensors file at all. */
    FILE *f = fopen(path, "w");
    fputs("hello", f);
    fclose(f);
    assert_null(profile_cs_load(path, &err));
    assert_int_equal(err.code, EI_E_FORMAT);
}

/* ---- measuring a real (tiny) model ---- */

static const char tiny_arch[] =
    "{\"name\":\"tiny\",\"input\":[1,8,8],\"classes\":4,\"blocks\":["
    "{\"conv\":[{\"type\":\"conv\",\"out\":4,\"k\":3,\"pad\":1},{\"type\":\"relu\"}],"
    " \"branch\":[{\"type\":\"gap\"},{\"type\":\"dense\",\"out\":4}]},"
    "{\"conv\":[{\"type\":\"conv\",\"out\":6,\"k\":3,\"pad\":1},{\"type\":\"relu\"},"
    "  {\"type\":\"maxpool\",\"k\":2}],"
    " \"branch\":[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":4}]}]}";

static void test_measure_equals_forward(void **state)
{
    (void)state;
    ei_err_t err = {0};
    nn_model_t *m = nn_model_from_arch(tiny_arch, "tiny", 5, &err);
    assert_non_null(m);
    nn_model_init(m, 3);
    nn_dataset_t d = {.count = 5, .h = 8, .w = 8, .classes = 4};
    float images[5 * 64];
    uint8_t labels[5] = {0, 1, 2, 3, 1};
    ei_rng_t r;
    ei_rng_seed(&r, 9);
    for (int i = 0; i < 5 * 64; i++)
        images[i] = (float)ei_rng_uniform(&r);
    d.images = images;
    d.labels = labels;
    const int idx[3] = {4, 0, 2};
    profile_cs_t *cs = profile_cs_new(3, 2, 4, "val", "tiny", &err);
    double conv[6], branch[6];
    assert_int_equal(profile_measure(m, &d, idx, 3, cs, conv, branch, NULL, &err), 0);
    /* The full forward pass on the same images gives the same probabilities. */
    nn_tensor_t *x = nn_tensor_new(5, 1, 8, 8);
    memcpy(x->data, images, sizeof images);
    float probs[2 * 5 * 4];
    assert_int_equal(nn_model_forward(m, x, probs, &err), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(profile_cs_index(cs, i), idx[i]);
        assert_int_equal(profile_cs_label(cs, i), labels[idx[i]]);
        for (int k = 0; k < 2; k++)
            for (int c = 0; c < 4; c++)
                assert_true(fabsf(profile_cs_probs(cs, i)[k * 4 + c] -
                                  probs[k * 5 * 4 + idx[i] * 4 + c]) < 1e-5f);
    }
    for (int i = 0; i < 6; i++)
        assert_true(conv[i] >= 0 && branch[i] >= 0 && conv[i] < 1e3);
    profile_cs_t *wrong = profile_cs_new(3, 3, 4, "val", "tiny", &err);
    assert_int_equal(profile_measure(m, &d, idx, 3, wrong, NULL, NULL, NULL, &err), EI_E_SHAPE);
    profile_cs_destroy(&wrong);
    profile_cs_destroy(&cs);
    nn_tensor_destroy(&x);
    nn_model_destroy(&m);
}

/* ---- the command ---- */

static void test_cli_usage(void **state)
{
    (void)state;
    if (!getenv("EINET_BIN"))
        skip();
    assert_int_equal(tu_run_einet("profile --help"), 0);
    assert_int_equal(tu_run_einet("profile --bogus"), 2);
    assert_int_equal(tu_run_einet("profile --val 0"), 2);
    assert_int_equal(tu_run_einet("profile --test 10001"), 2);
    assert_int_equal(tu_run_einet("profile --threads x"), 2);
    assert_int_equal(tu_run_einet("profile extra"), 2);
    assert_int_equal(tu_run_einet("profile --model /nonexistent.safetensors --out /tmp/x"), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_et_summarise),           cmocka_unit_test(test_et_round_trip),
        cmocka_unit_test(test_et_malformed),           cmocka_unit_test(test_cs_derived),
        cmocka_unit_test(test_cs_round_trip),          cmocka_unit_test(test_cs_malformed),
        cmocka_unit_test(test_measure_equals_forward), cmocka_unit_test(test_cli_usage),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
