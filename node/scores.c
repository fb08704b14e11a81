/* Exit scores from the validation split (see scores.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "nn/dataset.h"
#include "nn/safetensors.h"
#include "nn/train.h"
#include "node/scores.h"

/* The trainer's defaults (cli/cmd_train.c), used when a model file does not say. */
#define SCORES_DEFAULT_VAL 5000
#define SCORES_DEFAULT_SEED 1
#define SCORES_BATCH 100

void scores_prior(scores_t *s, int n)
{
    memset(s, 0, sizeof *s);
    s->n = n < SCORES_MAX_EXITS ? n : SCORES_MAX_EXITS;
    for (int k = 0; k < s->n; k++)
        s->acc[k] = 0.5 + 0.4 * (k + 1) / s->n;
    snprintf(s->source, sizeof s->source, "prior (deeper exits score higher)");
}

/* The validation split's size and seed from the model file's "info" metadata. */
static void read_split(const char *model_path, int *val, uint64_t *seed)
{
    *val = SCORES_DEFAULT_VAL;
    *seed = SCORES_DEFAULT_SEED;
    nn_st_file_t *f = nn_st_open(model_path, NULL);
    const char *info = f ? nn_st_meta(f, "info") : NULL;
    json_t *j = info ? json_loads(info, 0, NULL) : NULL;
    json_t *v = json_object_get(j, "val"), *sd = json_object_get(j, "seed");
    if (json_is_integer(v) && json_integer_value(v) > 0)
        *val = (int)json_integer_value(v);
    if (json_is_integer(sd) && json_integer_value(sd) >= 0)
        *seed = (uint64_t)json_integer_value(sd);
    json_decref(j);
    nn_st_close(&f);
}

static int eval_split(scores_t *s, nn_model_t *m, const nn_dataset_t *data, int val, uint64_t seed,
                      int samples, ei_err_t *err)
{
    if (val >= data->count)
        val = data->count / 10;
    int *tr = malloc(sizeof(int) * (size_t)(data->count - val));
    int *va = malloc(sizeof(int) * (size_t)val + 1);
    if (!tr || !va) {
        free(tr);
        free(va);
        return ei_err_set(err, EI_E_NOMEM, "scores: out of memory");
    }
    nn_dataset_split(data->count, val, seed, tr, va);
    int count = samples < val ? samples : val;
    int rc = nn_eval_exits(m, data, va, count, s->acc, NULL, err);
    free(tr);
    free(va);
    if (rc == 0)
        snprintf(s->source, sizeof s->source, "validation accuracy (%d samples)", count);
    return rc;
}

int scores_from_validation(scores_t *s, const char *model_path, const char *data_dir, int samples,
                           ei_err_t *err)
{
    nn_model_t *m = nn_model_load(model_path, SCORES_BATCH, err);
    if (!m)
        return err ? err->code : EI_E_IO;
    int n = nn_model_blocks(m);
    if (n > SCORES_MAX_EXITS) {
        nn_model_destroy(&m);
        return ei_err_set(err, EI_E_RANGE, "scores: %d exits, at most %d", n, SCORES_MAX_EXITS);
    }
    nn_model_prepare_inference(m);
    nn_dataset_t *data = nn_dataset_load(data_dir, "train", err);
    int rc = data ? 0 : (err ? err->code : EI_E_IO);
    nn_shape_t in = nn_model_input_shape(m);
    if (rc == 0 && (in.c != 1 || in.h != data->h || in.w != data->w))
        rc = ei_err_set(err, EI_E_SHAPE, "scores: the model takes [%d,%d,%d], the data set has "
                        "[1,%d,%d] images", in.c, in.h, in.w, data->h, data->w);
    int val;
    uint64_t seed;
    read_split(model_path, &val, &seed);
    memset(s, 0, sizeof *s);
    s->n = n;
    if (rc == 0)
        rc = eval_split(s, m, data, val, seed, samples > 0 ? samples : 1, err);
    nn_dataset_destroy(&data);
    nn_model_destroy(&m);
    return rc;
}

void scores_for(const scores_t *s, const scores_seen_t *seen, int nseen, double *out)
{
    /* No per-sample predictor yet: every request gets the validation accuracies. A
     * CS-Predictor replaces this body (seen -> n predicted scores). */
    (void)seen;
    (void)nseen;
    for (int k = 0; k < s->n; k++)
        out[k] = s->acc[k] < 0 ? 0 : s->acc[k] > 1 ? 1 : s->acc[k];
}
