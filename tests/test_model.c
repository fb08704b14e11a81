/* Tests of the multi-exit model: building from architecture files, block-wise and full
 * inference, joint-training gradients, model files and their errors. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "nn/model.h"
#include "nn/nn_internal.h" /* the blocks' Winograd pairs */
#include "nn/safetensors.h"
#include "nn/train.h"

/* Three blocks on 1x8x8 inputs, 4 classes: a conv+bn+relu(+pool) part and a small
 * conv+pool+dense+dense branch each, like the shipped architecture in miniature. */
static const char tiny_arch[] =
    "{\"name\":\"tiny\",\"input\":[1,8,8],\"classes\":4,\"blocks\":["
    "{\"conv\":[{\"type\":\"conv\",\"out\":4,\"k\":3,\"pad\":1},{\"type\":\"bn\"},{\"type\":\"relu\"}],"
    " \"branch\":[{\"type\":\"conv\",\"out\":3,\"k\":3,\"stride\":2,\"pad\":1},{\"type\":\"relu\"},"
    "  {\"type\":\"avgpool\",\"size\":2},{\"type\":\"dense\",\"out\":6},{\"type\":\"relu\"},"
    "  {\"type\":\"dense\",\"out\":4}]},"
    "{\"conv\":[{\"type\":\"conv\",\"out\":6,\"k\":3,\"pad\":1},{\"type\":\"bn\"},{\"type\":\"relu\"},"
    "  {\"type\":\"maxpool\",\"k\":2}],"
    " \"branch\":[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":4}]},"
    "{\"conv\":[{\"type\":\"conv\",\"out\":5,\"k\":3,\"pad\":1},{\"type\":\"bn\"},{\"type\":\"relu\"}],"
    " \"branch\":[{\"type\":\"gap\"},{\"type\":\"dense\",\"out\":5},{\"type\":\"relu\"},"
    "  {\"type\":\"dense\",\"out\":4}]}]}";

/* The same shapes (1x8x8 in, 4 classes, block 1 leaving 6x4x4) with ResNet's units:
 * block 0 a conv then a basic residual unit (identity shortcut, the second conv in 2
 * groups), block 1 a down-sampling unit (stride 2, depthwise second conv, 1x1 conv
 * shortcut), block 2 a unit of pointwise and 3x3 convs with a 1x1 shortcut. */
static const char res_arch[] =
    "{\"name\":\"tiny-res\",\"input\":[1,8,8],\"classes\":4,\"blocks\":["
    "{\"conv\":[{\"type\":\"conv\",\"out\":4,\"k\":3,\"pad\":1},{\"type\":\"bn\"},{\"type\":\"relu\"},"
    "  {\"type\":\"residual\",\"path\":[{\"type\":\"conv\",\"out\":4,\"k\":3,\"pad\":1},{\"type\":\"bn\"},"
    "   {\"type\":\"relu\"},{\"type\":\"conv\",\"out\":4,\"k\":3,\"pad\":1,\"groups\":2},{\"type\":\"bn\"}]},"
    "  {\"type\":\"relu\"}],"
    " \"branch\":[{\"type\":\"conv\",\"out\":3,\"k\":3,\"stride\":2,\"pad\":1},{\"type\":\"relu\"},"
    "  {\"type\":\"avgpool\",\"size\":2},{\"type\":\"dense\",\"out\":6},{\"type\":\"relu\"},"
    "  {\"type\":\"dense\",\"out\":4}]},"
    "{\"conv\":[{\"type\":\"residual\",\"path\":[{\"type\":\"conv\",\"out\":6,\"k\":3,\"stride\":2,\"pad\":1},"
    "   {\"type\":\"bn\"},{\"type\":\"relu\"},{\"type\":\"conv\",\"out\":6,\"k\":3,\"pad\":1,\"groups\":6},"
    "   {\"type\":\"bn\"}],"
    "  \"shortcut\":[{\"type\":\"conv\",\"out\":6,\"k\":1,\"stride\":2},{\"type\":\"bn\"}]},"
    "  {\"type\":\"relu\"}],"
    " \"branch\":[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":4}]},"
    "{\"conv\":[{\"type\":\"residual\",\"path\":[{\"type\":\"conv\",\"out\":5,\"k\":1},{\"type\":\"bn\"},"
    "   {\"type\":\"relu\"},{\"type\":\"conv\",\"out\":5,\"k\":3,\"pad\":1},{\"type\":\"bn\"}],"
    "  \"shortcut\":[{\"type\":\"conv\",\"out\":5,\"k\":1},{\"type\":\"bn\"}]},{\"type\":\"relu\"}],"
    " \"branch\":[{\"type\":\"gap\"},{\"type\":\"dense\",\"out\":5},{\"type\":\"relu\"},"
    "  {\"type\":\"dense\",\"out\":4}]}]}";

/* The architecture tiny() builds: the residual tests run the plain ones on res_arch. */
static const char *arch_in_use = tiny_arch;

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/einet-test-model-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd);
}

static nn_model_t *tiny(int batch, uint64_t seed)
{
    ei_err_t err = {0};
    nn_model_t *m = nn_model_from_arch(arch_in_use, "tiny", batch, &err);
    if (!m)
        fail_msg("%s", err.msg);
    nn_model_init(m, seed);
    return m;
}

static void fill(float *x, size_t n, uint64_t seed)
{
    ei_rng_t r;
    ei_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)ei_rng_uniform(&r);
}

static void test_shapes_and_blockwise_equals_full(void **state)
{
    (void)state;
    nn_model_t *m = tiny(4, 1);
    assert_int_equal(nn_model_blocks(m), 3);
    assert_int_equal(nn_model_feature_shape(m, 1).c, 6);
    assert_int_equal(nn_model_feature_shape(m, 1).h, 4);
    nn_tensor_t *x = nn_tensor_new(4, 1, 8, 8);
    fill(x->data, nn_tensor_numel(x), 2);
    float full[3 * 4 * 4], part[4 * 4];
    ei_err_t err = {0};
    assert_int_equal(nn_model_forward(m, x, full, &err), 0);
    const nn_tensor_t *cur = x;
    for (int k = 0; k < 3; k++) {
        cur = nn_model_conv(m, k, cur, &err);
        assert_non_null(cur);
        assert_int_equal(nn_model_branch(m, k, cur, part, &err), 0);
        for (int i = 0; i < 16; i++)
            assert_true(part[i] == full[k * 16 + i]);
        for (int s = 0; s < 4; s++) {
            float sum = 0;
            for (int c = 0; c < 4; c++)
                sum += part[s * 4 + c];
            assert_true(fabsf(sum - 1) < 1e-5f);
        }
    }
    nn_tensor_destroy(&x);
    nn_model_destroy(&m);
}

/* A batch through the model gives each sample what it gets alone, every exit, before and
 * after the batch norms are folded; 37 samples cut the convs' batches into ragged groups. */
static void test_batch_equals_single(void **state)
{
    (void)state;
    enum { N = 37, E = 3, K = 4 };
    nn_model_t *m = tiny(N, 6);
    nn_tensor_t *x = nn_tensor_new(N, 1, 8, 8);
    fill(x->data, nn_tensor_numel(x), 7);
    static float batch[E * N * K];
    float one[E * K];
    ei_err_t err;
    for (int folded = 0; folded < 2; folded++) {
        if (folded)
            nn_model_prepare_inference(m);
        assert_int_equal(nn_model_forward(m, x, batch, &err), 0);
        for (int s = 0; s < N; s++) {
            nn_tensor_t xs = nn_tensor_view(x->data + s * 64, 1, 1, 8, 8);
            assert_int_equal(nn_model_forward(m, &xs, one, &err), 0);
            for (int e = 0; e < E; e++)
                for (int c = 0; c < K; c++) {
                    float b = batch[(e * N + s) * K + c], o = one[e * K + c];
                    if (fabsf(b - o) > 1e-6f)
                        fail_msg("folded %d sample %d exit %d class %d: batch %.8g, alone %.8g",
                                 folded, s, e, c, b, o);
                }
        }
    }
    nn_tensor_destroy(&x);
    nn_model_destroy(&m);
}

/* On two threads the engine computes what it does on one: the same training step (batch
 * statistics, every gradient) and the same batched inference. */
static void copy_grads(const char *name, nn_param_t *p, void *arg)
{
    (void)name;
    float **dst = arg;
    if (!p->grad)
        return;
    memcpy(*dst, p->grad->data, nn_tensor_numel(p->grad) * sizeof(float));
    *dst += nn_tensor_numel(p->grad);
}

static void test_two_threads_match_one(void **state)
{
    (void)state;
    enum { N = 23, E = 3, K = 4 };
    size_t np;
    float *g[2], *p[2], loss[2];
    static float probs[2][E * N * K];
    int labels[N];
    for (int s = 0; s < N; s++)
        labels[s] = s % K;
    for (int t = 0; t < 2; t++) {
        assert_int_equal(nn_set_threads(t + 1), 0);
        nn_model_t *m = tiny(N, 9);
        np = nn_model_param_count(m);
        nn_tensor_t *x = nn_tensor_new(N, 1, 8, 8);
        fill(x->data, nn_tensor_numel(x), 8);
        nn_model_zero_grad(m);
        loss[t] = nn_model_train_step(m, x, labels, NULL, NULL, NULL);
        g[t] = malloc(np * sizeof(float));
        float *at = g[t];
        nn_model_visit_params(m, copy_grads, &at);
        ei_err_t err;
        nn_model_prepare_inference(m);
        assert_int_equal(nn_model_forward(m, x, probs[t], &err), 0);
        p[t] = probs[t];
        nn_tensor_destroy(&x);
        nn_model_destroy(&m);
    }
    assert_int_equal(nn_set_threads(1), 0);
    assert_true(fabsf(loss[0] - loss[1]) <= 1e-6f * fabsf(loss[0]));
    for (size_t i = 0; i < np; i++)
        if (fabsf(g[0][i] - g[1][i]) > 1e-5f * (1 + fabsf(g[0][i])))
            fail_msg("gradient %zu: one thread %.8g, two %.8g", i, g[0][i], g[1][i]);
    for (int i = 0; i < E * N * K; i++)
        assert_true(fabsf(p[0][i] - p[1][i]) <= 1e-6f);
    free(g[0]);
    free(g[1]);
}

/* Train a few steps so batch-norm running statistics are not the identity, then check
 * that folding them into the convs changes nothing beyond rounding. */
static void test_fold_matches_unfolded(void **state)
{
    (void)state;
    nn_model_t *m = tiny(8, 3);
    nn_tensor_t *x = nn_tensor_new(8, 1, 8, 8);
    int labels[8] = {0, 1, 2, 3, 0, 1, 2, 3};
    for (int step = 0; step < 5; step++) {
        fill(x->data, nn_tensor_numel(x), 10 + (uint64_t)step);
        nn_model_zero_grad(m);
        nn_model_train_step(m, x, labels, NULL, NULL, NULL);
    }
    float a[3 * 8 * 4], b[3 * 8 * 4];
    ei_err_t err;
    assert_int_equal(nn_model_forward(m, x, a, &err), 0);
    nn_model_prepare_inference(m);
    assert_int_equal(nn_model_forward(m, x, b, &err), 0);
    for (int i = 0; i < 3 * 8 * 4; i++)
        assert_true(fabsf(a[i] - b[i]) < 1e-5f);
    assert_int_not_equal(nn_model_save(m, "/tmp/never-written.safetensors", NULL, &err), 0);
    nn_tensor_destroy(&x);
    nn_model_destroy(&m);
}

typedef struct {
    int index;
    nn_param_t *found;
    char name[128];
} pick_t;

static void pick(const char *name, nn_param_t *p, void *arg)
{
    pick_t *pk = arg;
    if (p->grad && pk->index-- == 0) {
        pk->found = p;
        snprintf(pk->name, sizeof pk->name, "%s", name);
    }
}

/* The wiring of joint training (branch gradients added to the next conv part's) checked
 * against finite differences of the weighted loss on every trainable tensor. */
static void test_train_step_gradients(void **state)
{
    (void)state;
    nn_model_t *m = tiny(5, 4);
    nn_tensor_t *x = nn_tensor_new(5, 1, 8, 8);
    fill(x->data, nn_tensor_numel(x), 5);
    int labels[5] = {0, 3, 1, 2, 1};
    const float w[3] = {0.5f, 1.0f, 2.0f};
    for (int pi = 0;; pi++) {
        pick_t pk = {pi, NULL, ""};
        nn_model_visit_params(m, pick, &pk);
        if (!pk.found)
            break;
        nn_model_zero_grad(m);
        nn_model_train_step(m, x, labels, w, NULL, NULL);
        size_t n = nn_tensor_numel(pk.found->value);
        /* The finite-difference steps add to the grads too: keep the analytic ones first. */
        float *grad = malloc(n * sizeof(float));
        memcpy(grad, pk.found->grad->data, n * sizeof(float));
        for (size_t j = 0; j < n; j += 1 + n / 4) {
            float *v = &pk.found->value->data[j], keep = *v, g = grad[j];
            /* ReLU and max-pool kinks can spoil one step size: a right gradient agrees
             * at some scale, a wrong one at none. */
            double best = INFINITY, fd = 0;
            for (float h = 1e-2f; h > 5e-5f; h /= 3) {
                *v = keep + h;
                double lp = nn_model_train_step(m, x, labels, w, NULL, NULL);
                *v = keep - h;
                double lm = nn_model_train_step(m, x, labels, w, NULL, NULL);
                *v = keep;
                double d = (lp - lm) / (2 * h);
                if (fabs(d - g) < best)
                    best = fabs(d - g), fd = d;
            }
            if (best > 1e-2 * fmax(1.0, fabs(fd)))
                fail_msg("%s[%zu]: analytic %g, finite difference %g", pk.name, j, g, fd);
        }
        free(grad);
    }
    nn_tensor_destroy(&x);
    nn_model_destroy(&m);
}

static void test_loss_falls(void **state)
{
    (void)state;
    nn_model_t *m = tiny(16, 6);
    /* A learnable toy task: the class is the brightest quadrant of the image. */
    nn_dataset_t d = {.count = 256, .h = 8, .w = 8, .classes = 4};
    d.images = calloc(256 * 64, sizeof(float));
    d.labels = calloc(256, 1);
    ei_rng_t r;
    ei_rng_seed(&r, 9);
    for (int i = 0; i < 256; i++) {
        int q = (int)ei_rng_below(&r, 4);
        d.labels[i] = (uint8_t)q;
        for (int p = 0; p < 64; p++) {
            int y = p / 8, xx = p % 8, quad = (y >= 4) * 2 + (xx >= 4);
            d.images[i * 64 + p] = (float)(0.3 * ei_rng_uniform(&r) + (quad == q ? 0.7 : 0));
        }
    }
    int idx[256];
    for (int i = 0; i < 256; i++)
        idx[i] = i;
    double before[3], after[3];
    ei_err_t err = {0};
    assert_int_equal(nn_eval_exits(m, &d, idx, 256, before, NULL, &err), 0);
    nn_train_opts_t o;
    nn_train_opts_default(&o);
    o.epochs = 6, o.batch = 16, o.lr = 0.05, o.augment_flip = 0, o.warmup_epochs = 0;
    o.log = fopen("/dev/null", "w");
    assert_int_equal(nn_train(m, &d, idx, 256, NULL, 0, &o, &err), 0);
    fclose(o.log);
    assert_int_equal(nn_eval_exits(m, &d, idx, 256, after, NULL, &err), 0);
    for (int e = 0; e < 3; e++)
        assert_true(after[e] > 0.9 && after[e] > before[e] + 0.3);
    free(d.images);
    free(d.labels);
    nn_model_destroy(&m);
}

static void save_tiny(const char *path, nn_model_t *m)
{
    ei_err_t err = {0};
    if (nn_model_save(m, path, "{\"note\":\"test\"}", &err))
        fail_msg("%s", err.msg);
}

static void path_in_tmp(char *buf, size_t len, const char *name)
{
    snprintf(buf, len, "%s/%s", tmpdir, name);
}

static void test_round_trip_bit_exact(void **state)
{
    (void)state;
    char p1[128], p2[128];
    path_in_tmp(p1, sizeof p1, "a.safetensors");
    path_in_tmp(p2, sizeof p2, "b.safetensors");
    nn_model_t *m = tiny(2, 7);
    save_tiny(p1, m);
    ei_err_t err = {0};
    nn_model_t *l = nn_model_load(p1, 2, &err);
    assert_non_null(l);
    save_tiny(p2, l);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "cmp -s %s %s", p1, p2);
    assert_int_equal(system(cmd), 0);
    nn_tensor_t *x = nn_tensor_new(2, 1, 8, 8);
    fill(x->data, nn_tensor_numel(x), 8);
    float a[24], b[24];
    assert_int_equal(nn_model_forward(m, x, a, &err), 0);
    assert_int_equal(nn_model_forward(l, x, b, &err), 0);
    assert_memory_equal(a, b, sizeof a);
    nn_tensor_destroy(&x);
    nn_model_destroy(&m);
    nn_model_destroy(&l);
}

static void expect_load_error(const char *path, const char *needle)
{
    ei_err_t err = {0};
    nn_model_t *m = nn_model_load(path, 1, &err);
    if (m)
        fail_msg("loading %s should fail", path);
    if (!strstr(err.msg, needle))
        fail_msg("error '%s' does not mention '%s'", err.msg, needle);
}

static void test_truncated_file(void **state)
{
    (void)state;
    char p[128];
    path_in_tmp(p, sizeof p, "t.safetensors");
    nn_model_t *m = tiny(1, 1);
    save_tiny(p, m);
    nn_model_destroy(&m);
    FILE *f = fopen(p, "rb");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fclose(f);
    assert_int_equal(truncate(p, size - 10), 0);
    expect_load_error(p, p);
    assert_int_equal(truncate(p, 5), 0);
    expect_load_error(p, p);
}

static void test_corrupted_file(void **state)
{
    (void)state;
    char p[128];
    path_in_tmp(p, sizeof p, "c.safetensors");
    nn_model_t *m = tiny(1, 1);
    save_tiny(p, m);
    nn_model_destroy(&m);
    /* Damage the JSON header: its first brace becomes garbage. */
    FILE *f = fopen(p, "r+b");
    fseek(f, 8, SEEK_SET);
    fputc('#', f);
    fclose(f);
    expect_load_error(p, p);
}

/* A valid file whose tensors do not fit the architecture in its own metadata. */
static void test_mismatched_file(void **state)
{
    (void)state;
    char p[128];
    path_in_tmp(p, sizeof p, "m.safetensors");
    float w[4 * 1 * 5 * 5] = {0};
    nn_st_entry_t e = {.name = "blocks.0.conv.0.weight", .ndim = 4, .shape = {4, 1, 5, 5}, .data = w};
    nn_st_meta_t meta[] = {{"format", "einet-model"}, {"version", "1"}, {"arch", tiny_arch}};
    ei_err_t err = {0};
    assert_int_equal(nn_st_write(p, &e, 1, meta, 3, &err), 0);
    expect_load_error(p, "blocks.0.conv.0.weight");
    /* And a file that is not an einet model at all. */
    nn_st_meta_t other[] = {{"format", "pt"}};
    assert_int_equal(nn_st_write(p, &e, 1, other, 1, &err), 0);
    expect_load_error(p, "not an einet model");
}

static void expect_arch_error(const char *json, const char *needle)
{
    ei_err_t err = {0};
    nn_model_t *m = nn_model_from_arch(json, "bad.json", 1, &err);
    if (m)
        fail_msg("architecture should be refused: %s", json);
    if (!strstr(err.msg, needle))
        fail_msg("error '%s' does not mention '%s'", err.msg, needle);
}

static void test_arch_unknown_layer(void **state)
{
    (void)state;
    expect_arch_error("{\"input\":[1,8,8],\"classes\":4,\"blocks\":[{\"conv\":[{\"type\":\"conv3d\","
                      "\"out\":2,\"k\":3}],\"branch\":[{\"type\":\"dense\",\"out\":4}]}]}",
                      "unknown layer type 'conv3d'");
    expect_arch_error("{\"input\":[1,8,8],\"classes\":4,\"blocks\":[{\"conv\":[{\"type\":\"conv\","
                      "\"out\":2,\"k\":3,\"strde\":2}],\"branch\":[{\"type\":\"dense\",\"out\":4}]}]}",
                      "unknown key 'strde'");
    expect_arch_error("{\"input\":[1,8,8],\"classes\":4,\"blocks\":[", "bad.json: line");
}

static void test_arch_inconsistent_shapes(void **state)
{
    (void)state;
    /* A 9x9 kernel cannot slide over an 8x8 input without padding. */
    expect_arch_error("{\"input\":[1,8,8],\"classes\":4,\"blocks\":[{\"conv\":[{\"type\":\"conv\","
                      "\"out\":2,\"k\":9}],\"branch\":[{\"type\":\"dense\",\"out\":4}]}]}",
                      "block 0 conv");
    /* A branch whose logits do not match the classes. */
    expect_arch_error("{\"input\":[1,8,8],\"classes\":4,\"blocks\":[{\"conv\":[{\"type\":\"conv\","
                      "\"out\":2,\"k\":3}],\"branch\":[{\"type\":\"dense\",\"out\":3}]}]}",
                      "4 outputs");
}

static void test_nan_input(void **state)
{
    (void)state;
    nn_model_t *m = tiny(2, 1);
    nn_tensor_t *x = nn_tensor_new(2, 1, 8, 8);
    x->data[64 + 10] = NAN;
    float probs[24];
    ei_err_t err = {0};
    assert_int_equal(nn_model_forward(m, x, probs, &err), EI_E_NONFINITE);
    assert_non_null(strstr(err.msg, "sample 1"));
    assert_null(nn_model_conv(m, 0, x, &err));
    nn_tensor_t wrong = nn_tensor_view(x->data, 1, 1, 4, 16);
    assert_null(nn_model_conv(m, 0, &wrong, &err));
    assert_non_null(strstr(err.msg, "expected input (1, 8, 8)"));
    nn_tensor_destroy(&x);
    nn_model_destroy(&m);
}

/* Each test above again on the residual architecture (as the plain one, it must pass). */
#define ON_RES(test)                        \
    static void res_##test(void **state)    \
    {                                       \
        arch_in_use = res_arch;             \
        test(state);                        \
        arch_in_use = tiny_arch;            \
    }
ON_RES(test_shapes_and_blockwise_equals_full)
ON_RES(test_batch_equals_single)
ON_RES(test_two_threads_match_one)
ON_RES(test_fold_matches_unfolded)
ON_RES(test_train_step_gradients)
ON_RES(test_loss_falls)
ON_RES(test_round_trip_bit_exact)

/* Dropout: seeded (two models of one seed train alike), the identity in inference
 * (skipped once folded, copied before). */
static void test_dropout_model(void **state)
{
    (void)state;
    static const char arch[] =
        "{\"input\":[1,8,8],\"classes\":4,\"blocks\":["
        "{\"conv\":[{\"type\":\"conv\",\"out\":4,\"k\":3,\"pad\":1},{\"type\":\"relu\"},"
        "  {\"type\":\"dropout\",\"p\":0.5}],"
        " \"branch\":[{\"type\":\"gap\"},{\"type\":\"dropout\",\"p\":0.2},{\"type\":\"dense\",\"out\":4}]}]}";
    ei_err_t err = {0};
    nn_model_t *a = nn_model_from_arch(arch, "d", 8, &err), *b = nn_model_from_arch(arch, "d", 8, &err);
    assert_non_null(a);
    assert_non_null(b);
    nn_model_init(a, 3);
    nn_model_init(b, 3);
    nn_tensor_t *x = nn_tensor_new(8, 1, 8, 8);
    fill(x->data, nn_tensor_numel(x), 4);
    int labels[8] = {0, 1, 2, 3, 0, 1, 2, 3};
    float la = nn_model_train_step(a, x, labels, NULL, NULL, NULL);
    float lb = nn_model_train_step(b, x, labels, NULL, NULL, NULL);
    assert_true(la == lb);
    float l2 = nn_model_train_step(a, x, labels, NULL, NULL, NULL); /* another mask */
    assert_true(l2 != la);
    float p1[8 * 4], p2[8 * 4];
    assert_int_equal(nn_model_forward(a, x, p1, &err), 0);
    assert_int_equal(nn_model_forward(a, x, p2, &err), 0);
    assert_memory_equal(p1, p2, sizeof p1); /* no masks in inference */
    nn_model_prepare_inference(a);
    assert_int_equal(nn_model_forward(a, x, p2, &err), 0);
    assert_memory_equal(p1, p2, sizeof p1);
    nn_tensor_destroy(&x);
    nn_model_destroy(&a);
    nn_model_destroy(&b);
}

/* Maps where the convs take Winograd's lowering (16-24 channels; 14x14: F(2x2), 7x7:
 * F(4x4)), so that a full forward runs each branch conv with the next block's conv as one
 * pair (blocks 0 and 1; block 1's conv with its maxpool fused): the probabilities equal
 * those of the blocks run one by one (nn_model_conv and nn_model_branch, no pairs) within
 * 1e-5, and those of the unprepared model (im2col, batch norms unfolded) within 1e-4, on
 * one thread and two; 37 samples make ragged groups. */
static const char wino_arch[] =
    "{\"name\":\"wino\",\"input\":[16,14,14],\"classes\":4,\"blocks\":["
    "{\"conv\":[{\"type\":\"conv\",\"out\":16,\"k\":3,\"pad\":1},{\"type\":\"bn\"},{\"type\":\"relu\"}],"
    " \"branch\":[{\"type\":\"conv\",\"out\":8,\"k\":3,\"pad\":1},{\"type\":\"relu\"},"
    "  {\"type\":\"avgpool\",\"size\":2},{\"type\":\"dense\",\"out\":4}]},"
    "{\"conv\":[{\"type\":\"conv\",\"out\":24,\"k\":3,\"pad\":1},{\"type\":\"bn\"},{\"type\":\"relu\"},"
    "  {\"type\":\"maxpool\",\"k\":2}],"
    " \"branch\":[{\"type\":\"conv\",\"out\":8,\"k\":3,\"pad\":1},{\"type\":\"relu\"},{\"type\":\"gap\"},"
    "  {\"type\":\"dense\",\"out\":4}]},"
    "{\"conv\":[{\"type\":\"conv\",\"out\":16,\"k\":3,\"pad\":1},{\"type\":\"bn\"},{\"type\":\"relu\"}],"
    " \"branch\":[{\"type\":\"gap\"},{\"type\":\"dense\",\"out\":4}]}]}";

static void check_wino_pairs(int threads)
{
    enum { N = 37, E = 3, K = 4 };
    assert_int_equal(nn_set_threads(threads), 0);
    ei_err_t err = {0};
    nn_model_t *m = nn_model_from_arch(wino_arch, "wino", N, &err);
    assert_non_null(m);
    nn_model_init(m, 12);
    nn_tensor_t *x = nn_tensor_new(N, 16, 14, 14);
    fill(x->data, nn_tensor_numel(x), 13);
    static float plain[E * N * K], full[E * N * K], part[N * K];
    assert_int_equal(nn_model_forward(m, x, plain, &err), 0);
    nn_model_prepare_inference(m);
    assert_non_null(m->blocks[0].pair);
    assert_non_null(m->blocks[1].pair);
    assert_null(m->blocks[2].pair);
    assert_int_equal(nn_model_forward(m, x, full, &err), 0);
    double spread = 0;
    const nn_tensor_t *cur = x;
    for (int k = 0; k < E; k++) {
        cur = nn_model_conv(m, k, cur, &err);
        assert_non_null(cur);
        assert_int_equal(nn_model_branch(m, k, cur, part, &err), 0);
        for (int i = 0; i < N * K; i++) {
            float f = full[k * N * K + i];
            spread = fmax(spread, fabs(f - 1.0 / K));
            if (fabsf(f - part[i]) > 1e-5f || fabsf(f - plain[k * N * K + i]) > 1e-4f)
                fail_msg("%d threads, exit %d [%d]: full %.8g, block by block %.8g, "
                         "unprepared %.8g", threads, k, i, f, part[i], plain[k * N * K + i]);
        }
    }
    assert_true(spread > 0.02); /* the exits tell the samples apart: the check can fail */
    nn_tensor_destroy(&x);
    nn_model_destroy(&m);
    assert_int_equal(nn_set_threads(1), 0);
}

static void test_wino_pairs(void **state)
{
    (void)state;
    check_wino_pairs(1);
    check_wino_pairs(2);
}

static void test_arch_residual_errors(void **state)
{
    (void)state;
    /* the path halves the map, the identity cannot: named down to the layer */
    expect_arch_error("{\"input\":[1,8,8],\"classes\":4,\"blocks\":[{\"conv\":[{\"type\":\"residual\","
                      "\"path\":[{\"type\":\"conv\",\"out\":1,\"k\":3,\"stride\":2,\"pad\":1}]}],"
                      "\"branch\":[{\"type\":\"flatten\"},{\"type\":\"dense\",\"out\":4}]}]}",
                      "bad.json: block 0 conv: layer 0 (residual): residual: the path gives 1x4x4 but "
                      "the identity shortcut gives 1x8x8");
    expect_arch_error("{\"input\":[1,8,8],\"classes\":4,\"blocks\":[{\"conv\":[{\"type\":\"residual\","
                      "\"path\":[]}],\"branch\":[{\"type\":\"dense\",\"out\":4}]}]}",
                      "bad.json: block 0 conv layer 0: \"path\" must be a non-empty array of layers");
    expect_arch_error("{\"input\":[1,8,8],\"classes\":4,\"blocks\":[{\"conv\":[{\"type\":\"residual\","
                      "\"path\":[{\"type\":\"relu\"}],\"shortcut\":[{\"type\":\"conv\",\"out\":1,"
                      "\"k\":1,\"group\":1}]}],\"branch\":[{\"type\":\"dense\",\"out\":4}]}]}",
                      "bad.json: block 0 conv layer 0 shortcut layer 0: unknown key 'group' for a conv");
    expect_arch_error("{\"input\":[3,8,8],\"classes\":4,\"blocks\":[{\"conv\":[{\"type\":\"conv\","
                      "\"out\":4,\"k\":3,\"groups\":2}],\"branch\":[{\"type\":\"dense\",\"out\":4}]}]}",
                      "2 groups must divide the input channels (3)");
    expect_arch_error("{\"input\":[1,8,8],\"classes\":4,\"blocks\":[{\"conv\":[{\"type\":\"dropout\","
                      "\"p\":1.5}],\"branch\":[{\"type\":\"dense\",\"out\":4}]}]}",
                      "bad.json: block 0 conv layer 0: a dropout layer needs \"p\" in [0, 1)");
}

static void test_shipped_architecture_builds(void **state)
{
    (void)state;
    ei_err_t err = {0};
    nn_model_t *m = nn_model_load_arch("configs/models/fmnist-8exit.json", 1, &err);
    if (!m)
        fail_msg("%s", err.msg);
    assert_true(nn_model_blocks(m) >= 8);
    nn_model_destroy(&m);
    m = nn_model_load_arch("configs/models/fmnist-resnet-6exit.json", 1, &err);
    if (!m)
        fail_msg("%s", err.msg);
    assert_int_equal(nn_model_blocks(m), 6);
    double mflop = 0;
    for (int k = 0; k < 6; k++)
        mflop += (nn_model_conv_flops(m, k) + nn_model_branch_flops(m, k)) / 1e6;
    assert_true(mflop < 2 * 45); /* the goal: at most twice the plain model's */
    nn_model_destroy(&m);
}

/* The shift augmentation: every sample comes out as itself moved by one (dy, dx) in
 * [-2, 2]^2 with zeros moved in (found by trying all 25 against a plain reference), and
 * over 2,000 samples every one of the 25 moves occurs. */
static void test_augment_shift(void **state)
{
    (void)state;
    enum { N = 2000, C = 2, H = 7, W = 6, MAX = 2, MOVES = (2 * MAX + 1) * (2 * MAX + 1) };
    nn_tensor_t *x = nn_tensor_new(N, C, H, W);
    assert_non_null(x);
    size_t per = nn_tensor_sample_numel(x);
    float *orig = malloc((size_t)N * per * sizeof *orig), tmp[C * H * W];
    ei_rng_t rng;
    ei_rng_seed(&rng, 3);
    for (size_t i = 0; i < (size_t)N * per; i++)
        orig[i] = x->data[i] = 1.0f + (float)ei_rng_uniform(&rng); /* never 0 */
    nn_augment_shift(x, MAX, &rng, tmp);
    int seen[MOVES] = {0};
    for (int s = 0; s < N; s++) {
        const float *in = orig + (size_t)s * per, *out = x->data + (size_t)s * per;
        int found = -1;
        for (int m = 0; m < MOVES && found < 0; m++) {
            int dy = m / (2 * MAX + 1) - MAX, dx = m % (2 * MAX + 1) - MAX, same = 1;
            for (int c = 0; c < C && same; c++)
                for (int r = 0; r < H && same; r++)
                    for (int q = 0; q < W && same; q++) {
                        int sr = r - dy, sq = q - dx;
                        float want = sr < 0 || sr >= H || sq < 0 || sq >= W
                                         ? 0.0f
                                         : in[((size_t)c * H + (size_t)sr) * W + (size_t)sq];
                        same = out[((size_t)c * H + (size_t)r) * W + (size_t)q] == want;
                    }
            if (same)
                found = m;
        }
        assert_true(found >= 0);
        seen[found]++;
    }
    for (int m = 0; m < MOVES; m++)
        assert_true(seen[m] > 0);
    free(orig);
    nn_tensor_destroy(&x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes_and_blockwise_equals_full),
        cmocka_unit_test(test_batch_equals_single),
        cmocka_unit_test(test_two_threads_match_one),
        cmocka_unit_test(test_fold_matches_unfolded),
        cmocka_unit_test(test_train_step_gradients),
        cmocka_unit_test(test_loss_falls),
        cmocka_unit_test(test_round_trip_bit_exact),
        cmocka_unit_test(test_truncated_file),
        cmocka_unit_test(test_corrupted_file),
        cmocka_unit_test(test_mismatched_file),
        cmocka_unit_test(test_arch_unknown_layer),
        cmocka_unit_test(test_arch_inconsistent_shapes),
        cmocka_unit_test(test_nan_input),
        cmocka_unit_test(test_shipped_architecture_builds),
        cmocka_unit_test(res_test_shapes_and_blockwise_equals_full),
        cmocka_unit_test(res_test_batch_equals_single),
        cmocka_unit_test(res_test_two_threads_match_one),
        cmocka_unit_test(res_test_fold_matches_unfolded),
        cmocka_unit_test(res_test_train_step_gradients),
        cmocka_unit_test(res_test_loss_falls),
        cmocka_unit_test(res_test_round_trip_bit_exact),
        cmocka_unit_test(test_dropout_model),
        cmocka_unit_test(test_arch_residual_errors),
        cmocka_unit_test(test_wino_pairs),
        cmocka_unit_test(test_augment_shift),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
