/* Block-wise model profiles (EINet §IV-B): measuring them on this machine, ET-profiles as
 * JSON and CS-profiles as safetensors files. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "../nn/safetensors.h"
#include "../nn/train.h"
#include "profile.h"

#define ET_FORMAT "einet-et-profile"
#define CS_FORMAT "einet-cs-profile"
#define FORMAT_VERSION 1

struct profile_cs {
    int count, n, classes;
    float *probs;     /* count x n x K */
    float *conf;      /* count x n */
    uint8_t *correct; /* count x n */
    int *labels, *index;
    char split[PROFILE_NAME_MAX], model[PROFILE_NAME_MAX];
};

/* ---- ET-profiles ---- */

void profile_et_init(profile_et_t *et, int n)
{
    memset(et, 0, sizeof *et);
    planner_profile_init(&et->times, n);
    et->batch = 1;
    et->threads = 1;
    snprintf(et->model, sizeof et->model, "?");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Mean, standard deviation and 95th percentile (nearest rank) of column k of rows x n. */
static void column_stats(const double *v, int count, int n, int k, double *tmp, double *mean,
                         double *std, double *p95)
{
    double s = 0, ss = 0;
    for (int i = 0; i < count; i++) {
        tmp[i] = v[(size_t)i * (size_t)n + (size_t)k];
        s += tmp[i];
    }
    *mean = s / count;
    for (int i = 0; i < count; i++)
        ss += (tmp[i] - *mean) * (tmp[i] - *mean);
    *std = count > 1 ? sqrt(ss / (count - 1)) : 0;
    qsort(tmp, (size_t)count, sizeof *tmp, cmp_double);
    int rank = (int)ceil(0.95 * count) - 1;
    *p95 = tmp[rank < 0 ? 0 : rank];
}

int profile_et_summarise(profile_et_t *et, const double *conv_ms, const double *branch_ms,
                         int count, int n, ei_err_t *err)
{
    if (count < 1 || n < 1 || n > PLANNER_MAX_EXITS)
        return ei_err_set(err, EI_E_RANGE, "ET-profile: %d samples of %d blocks", count, n);
    for (size_t i = 0; i < (size_t)count * (size_t)n; i++)
        if (!isfinite(conv_ms[i]) || conv_ms[i] < 0 || !isfinite(branch_ms[i]) || branch_ms[i] < 0)
            return ei_err_set(err, EI_E_RANGE, "ET-profile: sample %zu block %zu: bad time",
                              i / (size_t)n, i % (size_t)n);
    double *tmp = malloc((size_t)count * sizeof *tmp);
    if (!tmp)
        return ei_err_set(err, EI_E_NOMEM, "ET-profile: out of memory");
    et->times.n = n;
    for (int k = 0; k < n; k++) {
        column_stats(conv_ms, count, n, k, tmp, &et->times.conv_ms[k], &et->conv_std_ms[k],
                     &et->conv_p95_ms[k]);
        column_stats(branch_ms, count, n, k, tmp, &et->times.branch_ms[k], &et->branch_std_ms[k],
                     &et->branch_p95_ms[k]);
    }
    et->samples = count;
    free(tmp);
    return 0;
}

static json_t *json_doubles(const double *v, int n)
{
    json_t *a = json_array();
    for (int k = 0; k < n; k++)
        json_array_append_new(a, json_real(v[k]));
    return a;
}

char *profile_et_dumps(const profile_et_t *et)
{
    int n = et->times.n;
    json_t *root = json_object();
    json_object_set_new(root, "format", json_string(ET_FORMAT));
    json_object_set_new(root, "version", json_integer(FORMAT_VERSION));
    json_object_set_new(root, "model", json_string(et->model));
    json_object_set_new(root, "samples", json_integer(et->samples));
    json_object_set_new(root, "batch", json_integer(et->batch));
    json_object_set_new(root, "threads", json_integer(et->threads));
    json_object_set_new(root, "conv_ms", json_doubles(et->times.conv_ms, n));
    json_object_set_new(root, "conv_std_ms", json_doubles(et->conv_std_ms, n));
    json_object_set_new(root, "conv_p95_ms", json_doubles(et->conv_p95_ms, n));
    json_object_set_new(root, "branch_ms", json_doubles(et->times.branch_ms, n));
    json_object_set_new(root, "branch_std_ms", json_doubles(et->branch_std_ms, n));
    json_object_set_new(root, "branch_p95_ms", json_doubles(et->branch_p95_ms, n));
    json_object_set_new(root, "link_ms", json_doubles(et->times.link_ms, n));
    json_object_set_new(root, "result_ms", json_doubles(et->times.result_ms, n));
    if (et->dispatch_ms > 0)
        json_object_set_new(root, "dispatch_ms", json_real(et->dispatch_ms));
    char *text = json_dumps(root, JSON_PRESERVE_ORDER | JSON_INDENT(1) | JSON_COMPACT);
    json_decref(root);
    return text;
}

planner_profile_t profile_et_clock(const profile_et_t *et)
{
    planner_profile_t p = et->times;
    if (p.n > 0)
        p.conv_ms[0] += et->dispatch_ms;
    return p;
}

static const char *const et_fields[] = {
    "format",        "version",       "model",       "samples",     "batch",
    "threads",       "conv_ms",       "conv_std_ms", "conv_p95_ms", "branch_ms",
    "branch_std_ms", "branch_p95_ms", "link_ms",     "result_ms",   "dispatch_ms",
};

/* Per-block array `key` of root into out[0..n-1]; n < 0 sets n from its length. Absent
 * and optional leaves out as it is. */
static int get_blocks(json_t *root, const char *key, int optional, int *n, double *out,
                      ei_err_t *err)
{
    json_t *a = json_object_get(root, key);
    if (!a)
        return optional ? 0 : ei_err_set(err, EI_E_FORMAT, "%s: missing", key);
    if (!json_is_array(a))
        return ei_err_set(err, EI_E_FORMAT, "%s: expected an array of numbers", key);
    int len = (int)json_array_size(a);
    if (*n < 0) {
        if (len < 1 || len > PLANNER_MAX_EXITS)
            return ei_err_set(err, EI_E_SHAPE, "%s: %d entries, expected 1..%d", key, len,
                              PLANNER_MAX_EXITS);
        *n = len;
    } else if (len != *n) {
        return ei_err_set(err, EI_E_SHAPE, "%s: %d entries, conv_ms has %d", key, len, *n);
    }
    for (int k = 0; k < len; k++) {
        json_t *v = json_array_get(a, (size_t)k);
        if (!json_is_number(v))
            return ei_err_set(err, EI_E_FORMAT, "%s[%d]: not a number", key, k);
        out[k] = json_number_value(v);
        if (!isfinite(out[k]) || out[k] < 0)
            return ei_err_set(err, EI_E_RANGE, "%s[%d]: %g is negative", key, k, out[k]);
    }
    return 0;
}

/* Optional integer field in [lo, hi]. */
static int get_int(json_t *root, const char *key, int lo, int hi, int *out, ei_err_t *err)
{
    json_t *v = json_object_get(root, key);
    if (!v)
        return 0;
    if (!json_is_integer(v))
        return ei_err_set(err, EI_E_FORMAT, "%s: expected an integer", key);
    json_int_t i = json_integer_value(v);
    if (i < lo || i > hi)
        return ei_err_set(err, EI_E_RANGE, "%s: %lld outside [%d, %d]", key, (long long)i, lo, hi);
    *out = (int)i;
    return 0;
}

static int et_from_json(json_t *root, profile_et_t *et, ei_err_t *err)
{
    if (!json_is_object(root))
        return ei_err_set(err, EI_E_FORMAT, "expected a JSON object");
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        size_t i = 0, count = sizeof et_fields / sizeof et_fields[0];
        while (i < count && strcmp(key, et_fields[i]))
            i++;
        if (i == count)
            return ei_err_set(err, EI_E_FORMAT, "%s: unknown field", key);
    }
    json_t *fmt = json_object_get(root, "format");
    if (fmt && (!json_is_string(fmt) || strcmp(json_string_value(fmt), ET_FORMAT)))
        return ei_err_set(err, EI_E_FORMAT, "format: expected \"%s\"", ET_FORMAT);
    int version = FORMAT_VERSION, rc;
    if ((rc = get_int(root, "version", 0, 1000000, &version, err)))
        return rc;
    if (version != FORMAT_VERSION)
        return ei_err_set(err, EI_E_VERSION, "version: %d, this program reads %d", version,
                          FORMAT_VERSION);
    int n = -1;
    double tmp[PLANNER_MAX_EXITS];
    if ((rc = get_blocks(root, "conv_ms", 0, &n, tmp, err)))
        return rc;
    profile_et_init(et, n);
    memcpy(et->times.conv_ms, tmp, (size_t)n * sizeof *tmp);
    if ((rc = get_blocks(root, "branch_ms", 0, &n, et->times.branch_ms, err)) ||
        (rc = get_blocks(root, "link_ms", 1, &n, et->times.link_ms, err)) ||
        (rc = get_blocks(root, "result_ms", 1, &n, et->times.result_ms, err)) ||
        (rc = get_blocks(root, "conv_std_ms", 1, &n, et->conv_std_ms, err)) ||
        (rc = get_blocks(root, "conv_p95_ms", 1, &n, et->conv_p95_ms, err)) ||
        (rc = get_blocks(root, "branch_std_ms", 1, &n, et->branch_std_ms, err)) ||
        (rc = get_blocks(root, "branch_p95_ms", 1, &n, et->branch_p95_ms, err)) ||
        (rc = get_int(root, "samples", 0, INT32_MAX, &et->samples, err)) ||
        (rc = get_int(root, "batch", 1, 1 << 20, &et->batch, err)) ||
        (rc = get_int(root, "threads", 1, 1 << 16, &et->threads, err)))
        return rc;
    json_t *d = json_object_get(root, "dispatch_ms");
    if (d && (!json_is_number(d) || !(json_number_value(d) >= 0) ||
              !isfinite(json_number_value(d))))
        return ei_err_set(err, EI_E_RANGE, "dispatch_ms: expected a number >= 0");
    et->dispatch_ms = d ? json_number_value(d) : 0;
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_string(model))
        return ei_err_set(err, EI_E_FORMAT, "model: expected a string");
    if (model)
        snprintf(et->model, sizeof et->model, "%s", json_string_value(model));
    return planner_profile_check(&et->times, err);
}

int profile_et_parse(const char *text, size_t len, const char *source, profile_et_t *et,
                     ei_err_t *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ei_err_set(err, EI_E_FORMAT, "%s: line %d column %d: %s", source, jerr.line,
                          jerr.column, jerr.text);
    int rc = et_from_json(root, et, err);
    json_decref(root);
    if (rc)
        ei_err_prefix(err, "%s: ", source);
    return rc;
}

/* Reads a whole file into a NUL-terminated buffer the caller frees. */
static char *read_text(const char *path, size_t *len, ei_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        ei_err_set(err, errno == ENOENT ? EI_E_NOTFOUND : EI_E_IO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1)
            break;
        char *grown = realloc(buf, cap * 2);
        if (!grown) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = grown;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        ei_err_set(err, buf ? EI_E_IO : EI_E_NOMEM, "%s: %s", path,
                   buf ? "read error" : "out of memory");
        return NULL;
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

int profile_et_save(const profile_et_t *et, const char *path, ei_err_t *err)
{
    char *text = profile_et_dumps(et);
    if (!text)
        return ei_err_set(err, EI_E_NOMEM, "%s: out of memory", path);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    ok = f && !fclose(f) && ok;
    free(text);
    if (!ok || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return ei_err_set(err, EI_E_IO, "%s: %s", path, strerror(e));
    }
    return 0;
}

int profile_et_load(const char *path, profile_et_t *et, ei_err_t *err)
{
    size_t len;
    char *text = read_text(path, &len, err);
    if (!text)
        return err ? err->code : EI_E_IO;
    int rc = profile_et_parse(text, len, path, et, err);
    free(text);
    return rc;
}

/* ---- CS-profiles ---- */

profile_cs_t *profile_cs_new(int count, int n, int classes, const char *split, const char *model,
                             ei_err_t *err)
{
    if (count < 1 || count > (1 << 24) || n < 1 || n > PLANNER_MAX_EXITS || classes < 2 ||
        classes > PROFILE_MAX_CLASSES) {
        ei_err_set(err, EI_E_RANGE,
                   "CS-profile: %d samples, %d exits, %d classes (at most 2^24, %d, %d)", count, n,
                   classes, PLANNER_MAX_EXITS, PROFILE_MAX_CLASSES);
        return NULL;
    }
    profile_cs_t *cs = ei_calloc(1, sizeof *cs);
    size_t rows = (size_t)count * (size_t)n;
    if (!cs)
        goto fail;
    cs->count = count;
    cs->n = n;
    cs->classes = classes;
    snprintf(cs->split, sizeof cs->split, "%s", split ? split : "?");
    snprintf(cs->model, sizeof cs->model, "%s", model ? model : "?");
    cs->probs = ei_calloc(rows * (size_t)classes, sizeof *cs->probs);
    cs->conf = ei_calloc(rows, sizeof *cs->conf);
    cs->correct = ei_calloc(rows, 1);
    cs->labels = ei_calloc((size_t)count, sizeof *cs->labels);
    cs->index = ei_calloc((size_t)count, sizeof *cs->index);
    if (!cs->probs || !cs->conf || !cs->correct || !cs->labels || !cs->index)
        goto fail;
    return cs;
fail:
    profile_cs_destroy(&cs);
    ei_err_set(err, EI_E_NOMEM, "CS-profile: out of memory for %d samples", count);
    return NULL;
}

void profile_cs_destroy(profile_cs_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    profile_cs_t *cs = *self_p;
    free(cs->probs);
    free(cs->conf);
    free(cs->correct);
    free(cs->labels);
    free(cs->index);
    free(cs);
    *self_p = NULL;
}

int profile_cs_set(profile_cs_t *self, int i, const float *probs, int label, int index,
                   ei_err_t *err)
{
    EI_ASSERT(i >= 0 && i < self->count);
    int n = self->n, K = self->classes;
    if (label < 0 || label >= K)
        return ei_err_set(err, EI_E_RANGE, "sample %d: label %d outside [0, %d)", i, label, K);
    for (int j = 0; j < n * K; j++)
        if (!(probs[j] >= 0 && probs[j] <= 1)) /* also catches NaN */
            return ei_err_set(err, EI_E_RANGE, "sample %d exit %d class %d: probability %g", i,
                              j / K, j % K, (double)probs[j]);
    size_t row = (size_t)i * (size_t)n;
    memcpy(self->probs + row * (size_t)K, probs, (size_t)(n * K) * sizeof *probs);
    for (int k = 0; k < n; k++) {
        const float *p = probs + (size_t)k * (size_t)K;
        int best = 0;
        for (int c = 1; c < K; c++)
            best = p[c] > p[best] ? c : best;
        self->conf[row + (size_t)k] = p[best];
        self->correct[row + (size_t)k] = best == label;
    }
    self->labels[i] = label;
    self->index[i] = index;
    return 0;
}

int profile_cs_count(const profile_cs_t *self)
{
    return self->count;
}
int profile_cs_exits(const profile_cs_t *self)
{
    return self->n;
}
int profile_cs_classes(const profile_cs_t *self)
{
    return self->classes;
}
const char *profile_cs_split(const profile_cs_t *self)
{
    return self->split;
}
const char *profile_cs_model(const profile_cs_t *self)
{
    return self->model;
}

const float *profile_cs_probs(const profile_cs_t *self, int i)
{
    return self->probs + (size_t)i * (size_t)self->n * (size_t)self->classes;
}

const float *profile_cs_conf(const profile_cs_t *self, int i)
{
    return self->conf + (size_t)i * (size_t)self->n;
}

const uint8_t *profile_cs_correct(const profile_cs_t *self, int i)
{
    return self->correct + (size_t)i * (size_t)self->n;
}

int profile_cs_label(const profile_cs_t *self, int i)
{
    return self->labels[i];
}
int profile_cs_index(const profile_cs_t *self, int i)
{
    return self->index[i];
}

void profile_cs_accuracy(const profile_cs_t *self, double *acc, double *conf)
{
    for (int k = 0; k < self->n; k++) {
        double a = 0, c = 0;
        for (int i = 0; i < self->count; i++) {
            a += profile_cs_correct(self, i)[k];
            c += profile_cs_conf(self, i)[k];
        }
        acc[k] = a / self->count;
        if (conf)
            conf[k] = c / self->count;
    }
}

int profile_cs_save(const profile_cs_t *self, const char *path, ei_err_t *err)
{
    float *labels = malloc((size_t)self->count * sizeof *labels);
    float *index = malloc((size_t)self->count * sizeof *index);
    if (!labels || !index) {
        free(labels);
        free(index);
        return ei_err_set(err, EI_E_NOMEM, "%s: out of memory", path);
    }
    for (int i = 0; i < self->count; i++) {
        labels[i] = (float)self->labels[i];
        index[i] = (float)self->index[i];
    }
    nn_st_entry_t entries[] = {
        {"probs", 3, {self->count, self->n, self->classes, 0}, self->probs},
        {"labels", 1, {self->count, 0, 0, 0}, labels},
        {"index", 1, {self->count, 0, 0, 0}, index},
    };
    char version[16];
    snprintf(version, sizeof version, "%d", FORMAT_VERSION);
    nn_st_meta_t meta[] = {{"format", CS_FORMAT},
                           {"version", version},
                           {"split", self->split},
                           {"model", self->model}};
    int rc = nn_st_write(path, entries, 3, meta, 4, err);
    free(labels);
    free(index);
    return rc;
}

/* An integer-valued float in [lo, hi), or -1. */
static int float_int(float v, int lo, int hi)
{
    return v >= (float)lo && v < (float)hi && v == floorf(v) ? (int)v : -1;
}

static profile_cs_t *cs_from_file(const nn_st_file_t *f, ei_err_t *err)
{
    const char *fmt = nn_st_meta(f, "format"), *ver = nn_st_meta(f, "version");
    if (!fmt || strcmp(fmt, CS_FORMAT)) {
        ei_err_set(err, EI_E_FORMAT, "metadata format: expected \"%s\", found %s%s%s", CS_FORMAT,
                   fmt ? "\"" : "", fmt ? fmt : "none", fmt ? "\"" : "");
        return NULL;
    }
    if (!ver || atoi(ver) != FORMAT_VERSION) {
        ei_err_set(err, EI_E_VERSION, "metadata version: %s, this program reads %d",
                   ver ? ver : "none", FORMAT_VERSION);
        return NULL;
    }
    const nn_st_entry_t *probs = nn_st_find(f, "probs"), *labels = nn_st_find(f, "labels"),
                        *index = nn_st_find(f, "index");
    if (!probs || !labels || !index) {
        ei_err_set(err, EI_E_FORMAT, "missing tensor '%s'",
                   !probs    ? "probs"
                   : !labels ? "labels"
                             : "index");
        return NULL;
    }
    if (probs->ndim != 3 || labels->ndim != 1 || index->ndim != 1 ||
        labels->shape[0] != probs->shape[0] || index->shape[0] != probs->shape[0]) {
        ei_err_set(err, EI_E_SHAPE,
                   "tensors 'probs', 'labels', 'index': expected shapes [count, n, K], [count], "
                   "[count]");
        return NULL;
    }
    int count = (int)probs->shape[0], n = (int)probs->shape[1], K = (int)probs->shape[2];
    if (probs->shape[0] > (1 << 24) || probs->shape[1] > PLANNER_MAX_EXITS ||
        probs->shape[2] > PROFILE_MAX_CLASSES) {
        ei_err_set(err, EI_E_SHAPE, "tensor 'probs': shape too large");
        return NULL;
    }
    profile_cs_t *cs =
        profile_cs_new(count, n, K, nn_st_meta(f, "split"), nn_st_meta(f, "model"), err);
    for (int i = 0; cs && i < count; i++) {
        int label = float_int(labels->data[i], 0, K), idx = float_int(index->data[i], 0, 1 << 24);
        if (label < 0 || idx < 0) {
            ei_err_set(err, EI_E_RANGE, "tensor '%s' [%d]: %g is not %s",
                       label < 0 ? "labels" : "index", i,
                       (double)(label < 0 ? labels->data[i] : index->data[i]),
                       label < 0 ? "a class" : "an index");
            profile_cs_destroy(&cs);
        } else if (profile_cs_set(cs, i, probs->data + (size_t)i * (size_t)(n * K), label, idx,
                                  err)) {
            ei_err_prefix(err, "tensor 'probs': ");
            profile_cs_destroy(&cs);
        }
    }
    return cs;
}

profile_cs_t *profile_cs_load(const char *path, ei_err_t *err)
{
    nn_st_file_t *f = nn_st_open(path, err);
    if (!f)
        return NULL;
    profile_cs_t *cs = cs_from_file(f, err);
    if (!cs && err && !strstr(err->msg, path))
        ei_err_prefix(err, "%s: ", path);
    nn_st_close(&f);
    return cs;
}

/* ---- measuring ---- */

int profile_measure(nn_model_t *m, const nn_dataset_t *data, const int *idx, int count,
                    profile_cs_t *cs, double *conv_ms, double *branch_ms, FILE *log, ei_err_t *err)
{
    int n = nn_model_blocks(m), K = nn_model_classes(m);
    nn_shape_t in = nn_model_input_shape(m);
    if (n != cs->n || K != cs->classes || count != cs->count)
        return ei_err_set(err, EI_E_SHAPE,
                          "CS-profile of %d x %d x %d for a model of %d exits, "
                          "%d classes and %d samples",
                          cs->count, cs->n, cs->classes, n, K, count);
    int rc = nn_model_check_data(m, NULL, data, err);
    if (rc)
        return rc;
    nn_tensor_t *x = nn_tensor_new(1, 1, in.h, in.w);
    float *probs = malloc((size_t)(n * K) * sizeof *probs);
    rc = x && probs ? 0 : ei_err_set(err, EI_E_NOMEM, "out of memory");
    for (int i = 0; i < count && !rc; i++) {
        int label;
        nn_dataset_batch(data, idx, i, 1, x, &label);
        const nn_tensor_t *cur = x;
        for (int k = 0; k < n && !rc; k++) {
            double t0 = ei_now();
            cur = nn_model_conv(m, k, cur, err);
            double t1 = ei_now();
            rc = cur ? nn_model_branch(m, k, cur, probs + (size_t)k * (size_t)K, err) : err->code;
            double t2 = ei_now();
            if (conv_ms)
                conv_ms[(size_t)i * (size_t)n + (size_t)k] = 1e3 * (t1 - t0);
            if (branch_ms)
                branch_ms[(size_t)i * (size_t)n + (size_t)k] = 1e3 * (t2 - t1);
        }
        if (!rc)
            rc = profile_cs_set(cs, i, probs, label, idx ? idx[i] : i, err);
        if (log && count >= 10 && (i + 1) % (count / 10) == 0)
            fprintf(log, "  %s: %d/%d samples\n", cs->split, i + 1, count);
    }
    nn_tensor_destroy(&x);
    free(probs);
    return rc;
}
