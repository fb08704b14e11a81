/* An architecture whose input does not match the data: the one check (nn_arch_check_input),
 * the header-only probe it runs on, the library functions that take a model and a data set,
 * and the real einet program, which must refuse each bad shape with one line and exit 2
 * before it loads any data (was: a segfault, or training on misaligned bytes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <jansson.h>
#include <zlib.h>

#include "nn/dataset.h"
#include "nn/model.h"
#include "nn/train.h"
#include "planner/profile.h"
#include "test_util.h"

#define SIDE 28
#define COUNT 64

/* Two data directories: "full", a small but complete 28x28 set, and "head", whose image
 * files are only a header promising 60000 images (no pixels, no labels): a command that
 * loaded any data before checking the architecture would fail there with another error. */
typedef struct fixture {
    char dir[256], full[300], head[300];
    pid_t coord; /* a coordinator a test started (0: none); teardown stops it if a check failed */
} fixture_t;

static void write_idx(const char *dir, const char *name, uint32_t magic, const uint32_t *dims,
                      int ndims, const unsigned char *body, size_t n)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    gzFile gz = gzopen(path, "wb");
    assert_non_null(gz);
    unsigned char h[16];
    uint32_t v[4] = {magic, dims[0], ndims > 1 ? dims[1] : 0, ndims > 2 ? dims[2] : 0};
    for (int i = 0; i <= ndims; i++)
        for (int b = 0; b < 4; b++)
            h[4 * i + b] = (unsigned char)(v[i] >> (24 - 8 * b));
    assert_int_equal(gzwrite(gz, h, 4 + 4 * (unsigned)ndims), 4 + 4 * ndims);
    if (n)
        assert_int_equal(gzwrite(gz, body, (unsigned)n), (int)n);
    assert_int_equal(gzclose(gz), Z_OK);
}

static void write_full(const char *dir, const char *prefix)
{
    static unsigned char px[COUNT * SIDE * SIDE], lab[COUNT];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (unsigned char)(i * 7 % 251);
    for (int i = 0; i < COUNT; i++)
        lab[i] = (unsigned char)(i % 10);
    char in[64], ln[64];
    snprintf(in, sizeof in, "%s-images-idx3-ubyte.gz", prefix);
    snprintf(ln, sizeof ln, "%s-labels-idx1-ubyte.gz", prefix);
    uint32_t d[3] = {COUNT, SIDE, SIDE}, c = COUNT;
    write_idx(dir, in, 0x803, d, 3, px, sizeof px);
    write_idx(dir, ln, 0x801, &c, 1, lab, sizeof lab);
}

static void write_head(const char *dir, const char *prefix)
{
    char in[64];
    snprintf(in, sizeof in, "%s-images-idx3-ubyte.gz", prefix);
    uint32_t d[3] = {60000, SIDE, SIDE};
    write_idx(dir, in, 0x803, d, 3, NULL, 0);
}

static void rm_tree(const char *dir)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof *fx);
    snprintf(fx->dir, sizeof fx->dir, "/tmp/einet-test-arch.XXXXXX");
    if (!mkdtemp(fx->dir))
        return -1;
    snprintf(fx->full, sizeof fx->full, "%s/full", fx->dir);
    snprintf(fx->head, sizeof fx->head, "%s/head", fx->dir);
    if (mkdir(fx->full, 0700) || mkdir(fx->head, 0700))
        return -1;
    write_full(fx->full, "train");
    write_full(fx->full, "t10k");
    write_head(fx->head, "train");
    write_head(fx->head, "t10k");
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    if (fx->coord > 0) {
        kill(fx->coord, SIGKILL);
        waitpid(fx->coord, NULL, 0);
    }
    rm_tree(fx->dir);
    free(fx);
    return 0;
}

/* A one-block architecture that builds for any input of at least 2x2. */
static char *tiny_arch(int c, int h, int w)
{
    char *s = malloc(512);
    snprintf(s, 512,
             "{\"name\": \"tiny\", \"input\": [%d, %d, %d], \"classes\": 10, \"blocks\": [{"
             "\"conv\": [{\"type\": \"conv\", \"out\": 4, \"k\": 3, \"stride\": 1, \"pad\": 1}, "
             "{\"type\": \"relu\"}, {\"type\": \"maxpool\", \"k\": 2, \"stride\": 2}], "
             "\"branch\": [{\"type\": \"flatten\"}, {\"type\": \"dense\", \"out\": 10}]}]}",
             c, h, w);
    return s;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

/* The shipped 8-exit architecture with its input replaced. */
static void write_shipped_with_input(const char *path, int c, int h, int w)
{
    json_error_t jerr;
    json_t *root = json_load_file("configs/models/fmnist-8exit.json", 0, &jerr);
    assert_non_null(root);
    assert_int_equal(json_object_set_new(root, "input", json_pack("[i,i,i]", c, h, w)), 0);
    assert_int_equal(json_dump_file(root, path, 0), 0);
    json_decref(root);
}

static const int bad_shapes[][3] = {{1, 14, 14}, {3, 32, 32}, {1, 28, 27}, {2, 28, 28}};
#define NBAD ((int)(sizeof bad_shapes / sizeof bad_shapes[0]))

static void expected_line(char *buf, size_t len, const char *cmd, const char *source,
                          const int *in, const char *datafile)
{
    snprintf(buf, len,
             "einet %s: %s: declared input [%d,%d,%d] does not match the data's shape "
             "[1,28,28] (%s)\n",
             cmd, source, in[0], in[1], in[2], datafile);
}

/* ---- the check itself ---- */

static void test_check_input(void **state)
{
    (void)state;
    ei_err_t err = {0};
    nn_shape_t data = {1, 28, 28};
    assert_int_equal(nn_arch_check_input("a.json", (nn_shape_t){1, 28, 28}, data, "d", &err), 0);
    for (int i = 0; i < NBAD; i++) {
        nn_shape_t in = {bad_shapes[i][0], bad_shapes[i][1], bad_shapes[i][2]};
        memset(&err, 0, sizeof err);
        assert_int_equal(nn_arch_check_input("x/a.json", in, data, "data/f.gz", &err),
                         EI_E_SHAPE);
        assert_int_equal(err.code, EI_E_SHAPE);
        char want[512];
        snprintf(want, sizeof want,
                 "x/a.json: declared input [%d,%d,%d] does not match the data's shape [1,28,28] "
                 "(data/f.gz)",
                 in.c, in.h, in.w);
        assert_string_equal(err.msg, want);
    }
    /* Order matters: a [28,28,1] declaration is not the [1,28,28] data. */
    assert_int_equal(nn_arch_check_input("a", (nn_shape_t){28, 28, 1}, data, "d", NULL),
                     EI_E_SHAPE);
}

static void test_probe_reads_the_header_only(void **state)
{
    fixture_t *fx = *state;
    nn_dataset_t d;
    ei_err_t err = {0};
    assert_int_equal(nn_dataset_probe(fx->head, "train", &d, &err), 0);
    assert_int_equal(d.count, 60000);
    assert_int_equal(d.h, SIDE);
    assert_int_equal(d.w, SIDE);
    assert_null(d.images);
    assert_null(d.labels);
    char want[600];
    snprintf(want, sizeof want, "%s/train-images-idx3-ubyte.gz", fx->head);
    assert_string_equal(d.source, want);
    nn_shape_t s = nn_dataset_shape(&d);
    assert_true(s.c == 1 && s.h == SIDE && s.w == SIDE);
    /* The same file fails a full load: the probe really did not read the pixels. */
    assert_null(nn_dataset_load(fx->head, "train", &err));
    assert_int_equal(err.code, EI_E_FORMAT);
    /* A full load names the same source. */
    nn_dataset_t *full = nn_dataset_load(fx->full, "test", &err);
    assert_non_null(full);
    snprintf(want, sizeof want, "%s/t10k-images-idx3-ubyte.gz", fx->full);
    assert_string_equal(full->source, want);
    nn_dataset_destroy(&full);
    assert_int_equal(nn_dataset_probe(fx->dir, "train", &d, &err), EI_E_NOTFOUND);
    assert_int_equal(nn_dataset_probe(fx->head, "val", &d, &err), EI_E_INVAL);
    uint32_t dims[3] = {5, 28, 28};
    write_idx(fx->dir, "train-images-idx3-ubyte.gz", 0x801, dims, 3, NULL, 0);
    assert_int_equal(nn_dataset_probe(fx->dir, "train", &d, &err), EI_E_FORMAT);
    assert_non_null(strstr(err.msg, "bad magic"));
}

static void test_check_split_and_file_input(void **state)
{
    fixture_t *fx = *state;
    ei_err_t err = {0};
    char path[400], data[600], want[1200];
    snprintf(path, sizeof path, "%s/a.json", fx->dir);
    snprintf(data, sizeof data, "%s/t10k-images-idx3-ubyte.gz", fx->head);
    for (int i = 0; i < NBAD; i++) {
        write_shipped_with_input(path, bad_shapes[i][0], bad_shapes[i][1], bad_shapes[i][2]);
        nn_shape_t in;
        assert_int_equal(nn_arch_file_input(path, &in, &err), 0);
        assert_true(in.c == bad_shapes[i][0] && in.h == bad_shapes[i][1] &&
                    in.w == bad_shapes[i][2]);
        assert_int_equal(nn_arch_check_split(path, in, fx->head, "test", &err), EI_E_SHAPE);
        expected_line(want, sizeof want, "x", path, bad_shapes[i], data);
        assert_non_null(strstr(want, err.msg));
    }
    write_shipped_with_input(path, 1, 28, 28);
    nn_shape_t in;
    assert_int_equal(nn_arch_file_input(path, &in, &err), 0);
    assert_int_equal(nn_arch_check_split(path, in, fx->head, "test", &err), 0);
    /* Missing data is the probe's error, never a shape mismatch. */
    assert_int_equal(nn_arch_check_split(path, in, fx->dir, "test", &err), EI_E_NOTFOUND);
    write_text(path, "{\"input\": [1, 28]}");
    assert_int_equal(nn_arch_file_input(path, &in, &err), EI_E_FORMAT);
    assert_non_null(strstr(err.msg, "\"input\" must be [C, H, W]"));
}

/* ---- library functions that take a model and a data set refuse instead of crashing ---- */

static void test_library_refuses(void **state)
{
    fixture_t *fx = *state;
    ei_err_t err = {0};
    nn_dataset_t *data = nn_dataset_load(fx->full, "train", &err);
    assert_non_null(data);
    int idx[COUNT];
    for (int i = 0; i < COUNT; i++)
        idx[i] = i;
    for (int i = 0; i < NBAD; i++) {
        char *json = tiny_arch(bad_shapes[i][0], bad_shapes[i][1], bad_shapes[i][2]);
        nn_model_t *m = nn_model_from_arch(json, "tiny.json", 16, &err);
        free(json);
        assert_non_null(m);
        nn_model_init(m, 1);
        nn_train_opts_t o;
        nn_train_opts_default(&o);
        o.epochs = 1, o.batch = 16;
        memset(&err, 0, sizeof err);
        assert_int_equal(nn_train(m, data, idx, COUNT, NULL, 0, &o, &err), EI_E_SHAPE);
        assert_non_null(strstr(err.msg, "tiny: declared input"));
        double acc[1];
        assert_int_equal(nn_eval_exits(m, data, idx, COUNT, acc, NULL, &err), EI_E_SHAPE);
        assert_int_equal(nn_model_check_data(m, "m.safetensors", data, &err), EI_E_SHAPE);
        assert_non_null(strstr(err.msg, "m.safetensors: declared input"));
        assert_non_null(strstr(err.msg, data->source));
        nn_model_prepare_inference(m);
        profile_cs_t *cs = profile_cs_new(4, 1, 10, "val", "tiny", &err);
        assert_non_null(cs);
        double cms[1], bms[1];
        assert_int_equal(profile_measure(m, data, idx, 4, cs, cms, bms, NULL, &err), EI_E_SHAPE);
        profile_cs_destroy(&cs);
        nn_model_destroy(&m);
    }
    /* The matching architecture trains and evaluates on the same data. */
    char *json = tiny_arch(1, 28, 28);
    nn_model_t *m = nn_model_from_arch(json, "tiny.json", 16, &err);
    free(json);
    assert_non_null(m);
    nn_model_init(m, 1);
    nn_train_opts_t o;
    nn_train_opts_default(&o);
    o.epochs = 1, o.batch = 16, o.log = fopen("/dev/null", "w");
    assert_int_equal(nn_train(m, data, idx, COUNT, NULL, 0, &o, &err), 0);
    fclose(o.log);
    double acc[1];
    assert_int_equal(nn_eval_exits(m, data, idx, COUNT, acc, NULL, &err), 0);
    assert_true(acc[0] >= 0 && acc[0] <= 1);
    nn_model_destroy(&m);
    nn_dataset_destroy(&data);
}

/* ---- the real einet program ---- */

/* Runs `PREFIX $EINET_BIN/PROG ARGS`, stderr into buf; the exit code (-1 if it did not
 * exit). */
static int run_prog(const fixture_t *fx, const char *prefix, const char *prog, const char *args,
                    char *buf, size_t len)
{
    char cmd[2048], errf[400];
    snprintf(errf, sizeof errf, "%s/stderr.txt", fx->dir);
    snprintf(cmd, sizeof cmd, "%s '%s/%s' %s >/dev/null 2>'%s'", prefix, getenv("EINET_BIN"), prog,
             args, errf);
    int st = system(cmd);
    FILE *f = fopen(errf, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int run_capture(const fixture_t *fx, const char *args, char *buf, size_t len)
{
    return run_prog(fx, "", "einet", args, buf, len);
}

static void expect_refusal(const fixture_t *fx, const char *cmd, const char *args,
                           const char *source, const int *in, const char *dir, const char *split)
{
    char out[4096], want[1200], data[600];
    snprintf(data, sizeof data, "%s/%s-images-idx3-ubyte.gz", dir, split);
    expected_line(want, sizeof want, cmd, source, in, data);
    int rc = run_capture(fx, args, out, sizeof out);
    if (rc != 2 || strcmp(out, want))
        fail_msg("einet %s\nexit %d, stderr:\n%swanted exit 2 and:\n%s", args, rc, out, want);
}

static void test_cli_train_refuses(void **state)
{
    fixture_t *fx = *state;
    char arch[400], args[2000];
    for (int i = 0; i < NBAD; i++) {
        const int *s = bad_shapes[i];
        /* The shipped architecture with another input, and a small one that builds for it. */
        snprintf(arch, sizeof arch, "%s/shipped-%dx%dx%d.json", fx->dir, s[0], s[1], s[2]);
        write_shipped_with_input(arch, s[0], s[1], s[2]);
        snprintf(args, sizeof args, "train --arch '%s' --data '%s' --out '%s/x.safetensors'", arch,
                 fx->head, fx->dir);
        expect_refusal(fx, "train", args, arch, s, fx->head, "train");
        snprintf(arch, sizeof arch, "%s/tiny-%dx%dx%d.json", fx->dir, s[0], s[1], s[2]);
        char *json = tiny_arch(s[0], s[1], s[2]);
        write_text(arch, json);
        free(json);
        snprintf(args, sizeof args, "train --arch '%s' --data '%s' --out '%s/x.safetensors'", arch,
                 fx->head, fx->dir);
        expect_refusal(fx, "train", args, arch, s, fx->head, "train");
        snprintf(args, sizeof args,
                 "train --arch '%s' --data '%s' --out '%s/x.safetensors' --epochs 1 --batch 16 "
                 "--val 16", arch, fx->full, fx->dir);
        expect_refusal(fx, "train", args, arch, s, fx->full, "train");
    }
    /* The control: the matching architecture trains on the same small set. */
    char *json = tiny_arch(1, 28, 28);
    snprintf(arch, sizeof arch, "%s/tiny-ok.json", fx->dir);
    write_text(arch, json);
    free(json);
    snprintf(args, sizeof args,
             "train --arch '%s' --data '%s' --out '%s/ok.safetensors' --epochs 1 --batch 16 "
             "--val 16", arch, fx->full, fx->dir);
    char out[4096];
    assert_int_equal(run_capture(fx, args, out, sizeof out), 0);
    /* A second stage from its weights (--init) trains too; from another architecture's
     * weights it is refused, naming both. */
    snprintf(args, sizeof args,
             "train --arch '%s' --init '%s/ok.safetensors' --data '%s' --out '%s/ok2.safetensors' "
             "--epochs 1 --batch 16 --val 16 --shift 1", arch, fx->dir, fx->full, fx->dir);
    assert_int_equal(run_capture(fx, args, out, sizeof out), 0);
    snprintf(args, sizeof args,
             "train --arch configs/models/fmnist-8exit.json --init '%s/ok.safetensors' "
             "--data '%s' --out '%s/no.safetensors' --epochs 1 --batch 16 --val 16",
             fx->dir, fx->full, fx->dir); /* ctest runs in the source tree */
    assert_int_not_equal(run_capture(fx, args, out, sizeof out), 0);
    if (!strstr(out, "ok.safetensors: its architecture") || !strstr(out, "fmnist-8exit.json"))
        fail_msg("einet %s\nstderr:\n%s", args, out);
}

static void test_cli_model_commands_refuse(void **state)
{
    fixture_t *fx = *state;
    char model[400], args[1200];
    for (int i = 0; i < NBAD; i++) {
        const int *s = bad_shapes[i];
        char *json = tiny_arch(s[0], s[1], s[2]);
        ei_err_t err = {0};
        nn_model_t *m = nn_model_from_arch(json, "tiny.json", 1, &err);
        free(json);
        assert_non_null(m);
        nn_model_init(m, 1);
        snprintf(model, sizeof model, "%s/tiny-%dx%dx%d.safetensors", fx->dir, s[0], s[1], s[2]);
        assert_int_equal(nn_model_save(m, model, NULL, &err), 0);
        nn_model_destroy(&m);
        snprintf(args, sizeof args, "eval --model '%s' --data '%s'", model, fx->head);
        expect_refusal(fx, "eval", args, model, s, fx->head, "t10k");
        snprintf(args, sizeof args, "profile --model '%s' --data '%s' --out '%s/prof'", model,
                 fx->head, fx->dir);
        expect_refusal(fx, "profile", args, model, s, fx->head, "train");
        snprintf(args, sizeof args, "ee-search --target 0 --model '%s' --data '%s'", model,
                 fx->head);
        expect_refusal(fx, "ee-search", args, model, s, fx->head, "train");
    }
}

/* A one-block model file with the given input, written with the library. */
static void write_tiny_model(const char *path, int c, int h, int w)
{
    char *json = tiny_arch(c, h, w);
    ei_err_t err = {0};
    nn_model_t *m = nn_model_from_arch(json, "tiny.json", 1, &err);
    free(json);
    assert_non_null(m);
    nn_model_init(m, 1);
    assert_int_equal(nn_model_save(m, path, NULL, &err), 0);
    nn_model_destroy(&m);
}

/* einet-node and einet-coord: a model for another input than the data the cluster serves
 * ($EINET_DATA_DIR) is refused at start-up with one line and exit 2, before any socket. */
static void test_services_refuse_at_startup(void **state)
{
    fixture_t *fx = *state;
    char model[400], node[400], coord[400], env[400], args[500], out[4096], want[1200];
    char data[600];
    snprintf(node, sizeof node, "%s/node.ini", fx->dir);
    snprintf(coord, sizeof coord, "%s/coord.ini", fx->dir);
    snprintf(env, sizeof env, "EINET_DATA_DIR='%s' timeout 20", fx->head);
    snprintf(data, sizeof data, "%s/t10k-images-idx3-ubyte.gz", fx->head);
    snprintf(model, sizeof model, "%s/m.safetensors", fx->dir);
    char text[2000];
    snprintf(text, sizeof text,
             "[node]\ntier = device\nfirst_block = 1\nlast_block = 1\nmodel = %s\n"
             "coordinator = tcp://127.0.0.1:1\n", model);
    write_text(node, text);
    snprintf(text, sizeof text,
             "[coordinator]\nclients = ipc://%s/c.sock\nnodes = ipc://%s/n.sock\ntiers = device\n"
             "model = %s\n[journal]\npath = %s/coord.db\n", fx->dir, fx->dir, model, fx->dir);
    write_text(coord, text);
    static const char *const progs[] = {"einet-node", "einet-coord"};
    const char *confs[] = {node, coord};
    for (int i = 0; i < NBAD; i++) {
        const int *s = bad_shapes[i];
        write_tiny_model(model, s[0], s[1], s[2]);
        for (int p = 0; p < 2; p++) {
            snprintf(args, sizeof args, "--config '%s'", confs[p]);
            /* One structured log line (common/log.c): time=... level=error prog=... msg="..." */
            snprintf(want, sizeof want,
                     " level=error prog=%s msg=\"%s: declared input [%d,%d,%d] does not match the "
                     "data's shape [1,28,28] (%s)\"\n", progs[p], model, s[0], s[1], s[2], data);
            int rc = run_prog(fx, env, progs[p], args, out, sizeof out);
            char *at = strstr(out, want);
            if (rc != 2 || strncmp(out, "time=", 5) || !at || at[strlen(want)] ||
                strchr(out, '\n') != at + strlen(want) - 1)
                fail_msg("%s %s\nexit %d, stderr:\n%swanted exit 2 and:\n%s", progs[p], args, rc,
                         out, want);
        }
    }
    /* The control: the matching model starts and runs until the timeout stops it (124). */
    write_tiny_model(model, 1, 28, 28);
    snprintf(env, sizeof env, "EINET_DATA_DIR='%s' timeout 2", fx->head);
    for (int p = 0; p < 2; p++) {
        snprintf(args, sizeof args, "--config '%s'", confs[p]);
        assert_int_equal(run_prog(fx, env, progs[p], args, out, sizeof out), 124);
        assert_null(strstr(out, "declared input"));
    }
}

/* nblocks blocks on [1,28,28]; block 1's conv has out1 channels, the others 4. */
static void write_chain_model(const char *path, int nblocks, int out1)
{
    char json[2048] = "{\"name\": \"chain\", \"input\": [1, 28, 28], \"classes\": 10, \"blocks\": [";
    for (int b = 0; b < nblocks; b++) {
        char blk[400];
        snprintf(blk, sizeof blk,
                 "%s{\"conv\": [{\"type\": \"conv\", \"out\": %d, \"k\": 3, \"pad\": 1}, "
                 "{\"type\": \"relu\"}], \"branch\": [{\"type\": \"gap\"}, "
                 "{\"type\": \"dense\", \"out\": 10}]}",
                 b ? ", " : "", b ? 4 : out1);
        strcat(json, blk);
    }
    strcat(json, "]}");
    ei_err_t err = {0};
    nn_model_t *m = nn_model_from_arch(json, "chain.json", 1, &err);
    if (!m)
        fail_msg("%s", err.msg);
    nn_model_init(m, 1);
    assert_int_equal(nn_model_save(m, path, NULL, &err), 0);
    nn_model_destroy(&m);
}

/* Nodes whose models do not chain with the coordinator's (and so with the tiers around
 * them): each says so in one line and exits 2 after the coordinator's first heartbeat
 * reply; a node with the coordinator's model keeps running. */
static void test_nodes_refuse_unchained(void **state)
{
    fixture_t *fx = *state;
    char coord_model[400], conf[400], text[2000], log[400];
    snprintf(coord_model, sizeof coord_model, "%s/coord.safetensors", fx->dir);
    write_chain_model(coord_model, 2, 4);
    snprintf(conf, sizeof conf, "%s/coord.ini", fx->dir);
    snprintf(text, sizeof text,
             "[coordinator]\nclients = ipc://%s/c.sock\nnodes = ipc://%s/n.sock\n"
             "tiers = device,edge\nmodel = %s\n[journal]\npath = %s/coord.db\n", fx->dir, fx->dir,
             coord_model, fx->dir);
    write_text(conf, text);
    snprintf(log, sizeof log, "%s/coord.log", fx->dir);
    setenv("EINET_DATA_DIR", fx->head, 1);
    pid_t pid = fork();
    assert_true(pid >= 0);
    fx->coord = pid;
    if (pid == 0) {
        char prog[400];
        snprintf(prog, sizeof prog, "%s/einet-coord", getenv("EINET_BIN"));
        if (!freopen(log, "w", stderr) || !freopen("/dev/null", "w", stdout))
            _exit(127);
        execl(prog, prog, "--config", conf, (char *)NULL);
        _exit(127);
    }
    struct {
        const char *tier;
        int first, last, nblocks, out1;
        const char *want; /* the refusal after "einet-node: MODEL (TIER, blocks A..B): " */
    } cases[] = {
        {"device", 1, 1, 2, 8,
         "declared output [8,28,28] does not match the data's shape [4,28,28] (the "
         "coordinator's model after block 1, what the tier after takes)"},
        {"edge", 2, 2, 2, 8,
         "declared input [8,28,28] does not match the data's shape [4,28,28] (the coordinator's "
         "model at block 2, what the tier before sends)"},
        {"device", 1, 3, 3, 4,
         "the model has 3 blocks, the coordinator's 2: every tier must run the same "
         "architecture"},
        {"device", 1, 1, 2, 4, NULL}, /* the coordinator's own architecture: runs */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char model[400], node[400], args[500], out[4096], want[1200];
        snprintf(model, sizeof model, "%s/node%zu.safetensors", fx->dir, i);
        write_chain_model(model, cases[i].nblocks, cases[i].out1);
        snprintf(node, sizeof node, "%s/node%zu.ini", fx->dir, i);
        int device = !strcmp(cases[i].tier, "device");
        snprintf(text, sizeof text,
                 "[node]\ntier = %s\nfirst_block = %d\nlast_block = %d\nmodel = %s\n"
                 "coordinator = ipc://%s/n.sock\n%s = ipc://%s/edge.sock\n",
                 cases[i].tier, cases[i].first, cases[i].last, model, fx->dir,
                 device ? "next" : "bind", fx->dir);
        write_text(node, text);
        snprintf(args, sizeof args, "--config '%s'", node);
        int rc = run_prog(fx, cases[i].want ? "timeout 30" : "timeout 3", "einet-node", args, out,
                          sizeof out);
        if (!cases[i].want) {
            assert_int_equal(rc, 124);
            assert_null(strstr(out, "declared"));
            continue;
        }
        /* One structured log line (common/log.c): time=... level=error prog=... msg="..." */
        snprintf(want, sizeof want, " level=error prog=einet-node msg=\"%s (%s, blocks %d..%d): %s\"\n",
                 model, cases[i].tier, cases[i].first, cases[i].last, cases[i].want);
        const char *at = strstr(out, want);
        if (rc != 2 || !at || strstr(at + 1, want))
            fail_msg("case %zu: exit %d, stderr:\n%swanted exit 2 and once:%s", i, rc, out, want);
    }
    kill(pid, SIGTERM);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    fx->coord = 0;
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    unsetenv("EINET_DATA_DIR");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_input),
        cmocka_unit_test_setup_teardown(test_probe_reads_the_header_only, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_split_and_file_input, setup, teardown),
        cmocka_unit_test_setup_teardown(test_library_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_train_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli_model_commands_refuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_services_refuse_at_startup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nodes_refuse_unchained, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
