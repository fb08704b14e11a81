/* Exit scores: validation accuracies, CS-profiles, CS-Predictors (see scores.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "nn/dataset.h"
#include "nn/safetensors.h"
#include "nn/train.h"
#include "runtime/scores.h"
#include "planner/profile.h"

/* The trainer's defaults (cli/cmd_train.c), used when a model file does not say. */
#define SCORES_DEFAULT_VAL 5000
#define SCORES_DEFAULT_SEED 1
#define SCORES_BATCH 100

void scores_prior(scores_t *s, int n, int classes)
{
    memset(s, 0, sizeof *s);
    s->n = n < SCORES_MAX_EXITS ? n : SCORES_MAX_EXITS;
    s->classes = classes;
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
    if (rc == 0)
        rc = nn_model_check_data(m, model_path, data, err);
    int val;
    uint64_t seed;
    read_split(model_path, &val, &seed);
    s->n = n;
    if (rc == 0)
        rc = eval_split(s, m, data, val, seed, samples > 0 ? samples : 1, err);
    nn_dataset_destroy(&data);
    nn_model_destroy(&m);
    return rc;
}

void scores_profile_path(const char *model_path, char *out, size_t cap)
{
    size_t len = strlen(model_path), ext = strlen(".safetensors");
    if (len > ext && strcmp(model_path + len - ext, ".safetensors") == 0)
        len -= ext;
    snprintf(out, cap, "%.*s.profile/cs-val.safetensors", (int)len, model_path);
}

int scores_from_profile(scores_t *s, const char *cs_path, ei_err_t *err)
{
    profile_cs_t *cs = profile_cs_load(cs_path, err);
    if (!cs)
        return err ? err->code : EI_E_IO;
    int rc = 0;
    if (profile_cs_exits(cs) != s->n || profile_cs_count(cs) < 1)
        rc = ei_err_set(err, EI_E_SHAPE, "%s: %d exits, the model has %d", cs_path,
                        profile_cs_exits(cs), s->n);
    if (rc == 0) {
        profile_cs_accuracy(cs, s->acc, NULL);
        snprintf(s->source, sizeof s->source, "validation CS-profile (%d samples)",
                 profile_cs_count(cs));
    }
    profile_cs_destroy(&cs);
    return rc;
}

int scores_load_predictor(scores_t *s, const char *path, ei_err_t *err)
{
    predictor_t *p = predictor_load(path, err);
    if (!p)
        return err ? err->code : EI_E_IO;
    if (predictor_exits(p) != s->n || predictor_classes(p) != s->classes) {
        int e = predictor_exits(p), k = predictor_classes(p);
        predictor_destroy(&p);
        return ei_err_set(err, EI_E_SHAPE, "%s: a predictor for %d exits and %d classes, the "
                          "model has %d and %d", path, e, k, s->n, s->classes);
    }
    predictor_destroy(&s->pred);
    s->pred = p;
    return 0;
}

void scores_release(scores_t *s)
{
    predictor_destroy(&s->pred);
}

void scores_for(scores_t *s, const scores_seen_t *seen, int nseen, int x, double *out)
{
    if (s->pred) {
        float probs[SCORES_MAX_EXITS * SCORES_MAX_CLASSES] = {0};
        uint8_t executed[SCORES_MAX_EXITS] = {0};
        for (int i = 0; i < nseen; i++) {
            int j = seen[i].exit - 1;
            if (j < 0 || j >= s->n || seen[i].nprobs != s->classes)
                continue; /* no softmax vector: the predictor cannot read this exit */
            memcpy(probs + (size_t)j * s->classes, seen[i].probs, sizeof(float) * s->classes);
            executed[j] = 1;
        }
        predictor_predict(s->pred, probs, executed, x < 0 ? 0 : x > s->n ? s->n : x, out);
    } else {
        for (int k = 0; k < s->n; k++)
            out[k] = s->acc[k];
    }
    for (int k = 0; k < s->n; k++)
        out[k] = out[k] >= 0 ? (out[k] <= 1 ? out[k] : 1) : 0; /* NaN -> 0 too */
}
