/* The training loop: batches, optimiser, schedule, progress and validation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"

void nn_train_opts_default(nn_train_opts_t *o)
{
    *o = (nn_train_opts_t){.epochs = 15,
                           .batch = 128,
                           .lr = 0.05,
                           .momentum = 0.9,
                           .weight_decay = 5e-4,
                           .optimizer = NN_OPT_SGD,
                           .schedule = NN_SCHED_COSINE,
                           .warmup_epochs = 1,
                           .seed = 1,
                           .augment_flip = 1,
                           .progress = 0};
}

/* One trainable tensor with its optimiser state. */
typedef struct {
    nn_param_t *p;
    float *m, *v; /* momentum / Adam first and second moments */
    int decay;
} slot_t;

typedef struct {
    slot_t *slots;
    int count, cap;
    long step;
} optim_t;

static void add_slot(const char *name, nn_param_t *p, void *arg)
{
    optim_t *o = arg;
    if (!p->grad)
        return;
    if (o->count == o->cap) {
        o->cap = o->cap ? 2 * o->cap : 64;
        o->slots = realloc(o->slots, (size_t)o->cap * sizeof *o->slots);
        EI_ASSERT(o->slots);
    }
    size_t n = nn_tensor_numel(p->value);
    slot_t *s = &o->slots[o->count++];
    s->p = p;
    s->m = ei_calloc(n, sizeof(float));
    s->v = ei_calloc(n, sizeof(float));
    EI_ASSERT(s->m && s->v);
    /* Weight decay on conv and dense weights, not on biases or batch-norm scales. */
    const char *last = strrchr(name, '.');
    s->decay = last && !strcmp(last + 1, "weight");
}

static void optim_free(optim_t *o)
{
    for (int i = 0; i < o->count; i++) {
        free(o->slots[i].m);
        free(o->slots[i].v);
    }
    free(o->slots);
}

static void sgd_update(slot_t *s, const nn_train_opts_t *o, float lr)
{
    float *w = s->p->value->data, *g = s->p->grad->data, *m = s->m;
    float mu = (float)o->momentum, wd = s->decay ? (float)o->weight_decay : 0.0f;
    size_t n = nn_tensor_numel(s->p->value);
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] + wd * w[i];
        m[i] = mu * m[i] + gi;
        w[i] -= lr * (gi + mu * m[i]); /* Nesterov */
    }
}

static void adam_update(slot_t *s, const nn_train_opts_t *o, float lr, long t)
{
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
    float *w = s->p->value->data, *g = s->p->grad->data, *m = s->m, *v = s->v;
    float wd = s->decay ? (float)o->weight_decay : 0.0f;
    float c1 = 1.0f - powf(b1, (float)t), c2 = 1.0f - powf(b2, (float)t);
    size_t n = nn_tensor_numel(s->p->value);
    for (size_t i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        /* Decoupled weight decay (AdamW). */
        w[i] -= lr * ((m[i] / c1) / (sqrtf(v[i] / c2) + eps) + wd * w[i]);
    }
}

static double schedule_lr(const nn_train_opts_t *o, double progress /* epochs done */)
{
    if (progress < o->warmup_epochs)
        return o->lr * (progress + 1e-3) / o->warmup_epochs;
    double f = (progress - o->warmup_epochs) / fmax(1e-9, o->epochs - o->warmup_epochs);
    switch (o->schedule) {
    case NN_SCHED_COSINE:
        return o->lr * 0.5 * (1.0 + cos(M_PI * f));
    case NN_SCHED_STEP:
        return o->lr * (f < 0.5 ? 1.0 : f < 0.75 ? 0.1 : 0.01);
    case NN_SCHED_CONST:
        break;
    }
    return o->lr;
}

int nn_model_check_data(const nn_model_t *m, const char *source, const nn_dataset_t *data,
                        ei_err_t *err)
{
    return nn_arch_check_input(source ? source : nn_model_name(m), nn_model_input_shape(m),
                               nn_dataset_shape(data), data->source[0] ? data->source : "data set",
                               err);
}

int nn_arch_check_split(const char *arch, nn_shape_t input, const char *dir, const char *split,
                        ei_err_t *err)
{
    nn_dataset_t head;
    int rc = nn_dataset_probe(dir, split, &head, err);
    return rc ? rc : nn_arch_check_input(arch, input, nn_dataset_shape(&head), head.source, err);
}

int nn_arch_check_served(const char *source, nn_shape_t input, ei_err_t *err)
{
    ei_err_t probe = {0};
    int rc = nn_arch_check_split(source, input, NULL, "test", &probe);
    if (rc == EI_E_SHAPE && err)
        *err = probe;
    return rc == EI_E_SHAPE ? rc : 0;
}

void nn_dataset_batch(const nn_dataset_t *data, const int *idx, int first, int n, nn_tensor_t *x,
                      int *labels)
{
    EI_ASSERT(x->c == 1 && x->h == data->h && x->w == data->w);
    size_t per = (size_t)data->h * (size_t)data->w;
    x->n = n;
    for (int s = 0; s < n; s++) {
        int i = idx ? idx[first + s] : first + s;
        memcpy(x->data + (size_t)s * per, data->images + (size_t)i * per, per * sizeof(float));
        if (labels)
            labels[s] = data->labels[i];
    }
}

static void flip_some(nn_tensor_t *x, ei_rng_t *rng)
{
    for (int s = 0; s < x->n; s++) {
        if (ei_rng_below(rng, 2))
            continue;
        float *img = x->data + (size_t)s * nn_tensor_sample_numel(x);
        for (int r = 0; r < x->c * x->h; r++) {
            float *row = img + (size_t)r * x->w;
            for (int a = 0, b = x->w - 1; a < b; a++, b--) {
                float t = row[a];
                row[a] = row[b];
                row[b] = t;
            }
        }
    }
}

void nn_augment_shift(nn_tensor_t *x, int max, ei_rng_t *rng, float *tmp)
{
    size_t per = nn_tensor_sample_numel(x);
    for (int s = 0; s < x->n; s++) {
        int dy = (int)ei_rng_below(rng, (uint64_t)(2 * max + 1)) - max;
        int dx = (int)ei_rng_below(rng, (uint64_t)(2 * max + 1)) - max;
        if (!dy && !dx)
            continue;
        float *img = x->data + (size_t)s * per;
        memcpy(tmp, img, per * sizeof *tmp);
        for (int c = 0; c < x->c; c++)
            for (int r = 0; r < x->h; r++) {
                float *row = img + ((size_t)c * x->h + (size_t)r) * x->w;
                int sr = r - dy;
                for (int q = 0; q < x->w; q++) {
                    int sq = q - dx;
                    row[q] = sr < 0 || sr >= x->h || sq < 0 || sq >= x->w
                                 ? 0.0f
                                 : tmp[((size_t)c * x->h + (size_t)sr) * x->w + (size_t)sq];
                }
            }
    }
}

static void progress_line(const nn_train_opts_t *o, FILE *log, int epoch, int batch, int nbatches,
                          double loss, double rate, double eta)
{
    int width = 24, done = (int)((double)width * batch / nbatches);
    if (o->progress) {
        fprintf(log, "\repoch %d/%d [", epoch + 1, o->epochs);
        for (int i = 0; i < width; i++)
            fputc(i < done ? '#' : '.', log);
        fprintf(log, "] %d/%d loss %.4f %.0f img/s ETA %02d:%02d   ", batch, nbatches, loss, rate,
                (int)eta / 60, (int)eta % 60);
    } else {
        fprintf(log, "epoch %d/%d batch %d/%d loss %.4f %.0f img/s ETA %02d:%02d\n", epoch + 1,
                o->epochs, batch, nbatches, loss, rate, (int)eta / 60, (int)eta % 60);
    }
    fflush(log);
}

int nn_eval_exits(nn_model_t *m, const nn_dataset_t *data, const int *idx, int n, double *acc,
                  double *conf, ei_err_t *err)
{
    int B = nn_model_max_batch(m), K = nn_model_classes(m), E = nn_model_blocks(m);
    int rc = nn_model_check_data(m, NULL, data, err);
    if (rc)
        return rc;
    nn_shape_t in = nn_model_input_shape(m);
    nn_tensor_t *x = nn_tensor_new(B, in.c, in.h, in.w);
    float *probs = ei_calloc((size_t)E * B * K, sizeof(float));
    int *labels = ei_calloc((size_t)B, sizeof(int));
    rc = x && probs && labels ? 0 : ei_err_set(err, EI_E_NOMEM, "out of memory");
    for (int e = 0; e < E; e++)
        acc[e] = 0, conf ? conf[e] = 0 : 0;
    for (int first = 0; !rc && first < n; first += B) {
        int nb = n - first < B ? n - first : B;
        nn_dataset_batch(data, idx, first, nb, x, labels);
        rc = nn_model_forward(m, x, probs, err);
        for (int e = 0; !rc && e < E; e++) {
            for (int s = 0; s < nb; s++) {
                const float *p = probs + ((size_t)e * nb + s) * K;
                int best = 0;
                for (int c = 1; c < K; c++)
                    best = p[c] > p[best] ? c : best;
                acc[e] += best == labels[s];
                if (conf)
                    conf[e] += p[best];
            }
        }
    }
    for (int e = 0; e < E && n > 0; e++)
        acc[e] /= n, conf ? conf[e] /= n : 0;
    nn_tensor_destroy(&x);
    free(probs);
    free(labels);
    return rc;
}

static int check_opts(const nn_train_opts_t *o, ei_err_t *err)
{
    if (o->epochs < 1 || o->batch < 1 || !(o->lr > 0) || o->momentum < 0 || o->momentum >= 1 ||
        o->weight_decay < 0 || o->warmup_epochs < 0 || o->warmup_epochs > o->epochs ||
        o->augment_shift < 0 || o->augment_shift > 8)
        return ei_err_set(err, EI_E_INVAL, "training options out of range");
    return 0;
}

static void report_val(nn_model_t *m, const nn_dataset_t *data, const int *val_idx, int n_val,
                       FILE *log)
{
    int E = nn_model_blocks(m);
    double *acc = ei_calloc((size_t)E, sizeof(double));
    ei_err_t err;
    if (acc && nn_eval_exits(m, data, val_idx, n_val, acc, NULL, &err) == 0) {
        fprintf(log, "  validation accuracy by exit:");
        for (int e = 0; e < E; e++)
            fprintf(log, " %.4f", acc[e]);
        fputc('\n', log);
    }
    free(acc);
}

int nn_train(nn_model_t *m, const nn_dataset_t *data, const int *train_idx, int n_train,
             const int *val_idx, int n_val, const nn_train_opts_t *o, ei_err_t *err)
{
    int rc = check_opts(o, err);
    if (rc || (rc = nn_model_check_data(m, NULL, data, err)) != 0)
        return rc;
    int B = o->batch < nn_model_max_batch(m) ? o->batch : nn_model_max_batch(m);
    int E = nn_model_blocks(m), nbatches = n_train / B; /* drop the ragged last batch */
    if (nbatches < 1)
        return ei_err_set(err, EI_E_INVAL, "%d training samples is less than one batch of %d",
                          n_train, B);
    FILE *log = o->log ? o->log : stderr;
    nn_shape_t in = nn_model_input_shape(m);
    nn_tensor_t *x = nn_tensor_new(B, in.c, in.h, in.w);
    int *labels = ei_calloc((size_t)B, sizeof(int)), *order = ei_calloc((size_t)n_train, sizeof(int));
    int *correct = ei_calloc((size_t)E, sizeof(int));
    float *shift_tmp = ei_calloc(nn_shape_numel(in), sizeof(float));
    optim_t opt = {0};
    if (!x || !labels || !order || !correct || !shift_tmp) {
        rc = ei_err_set(err, EI_E_NOMEM, "out of memory");
        goto done;
    }
    nn_model_visit_params(m, add_slot, &opt);
    memcpy(order, train_idx, (size_t)n_train * sizeof(int));
    ei_rng_t rng;
    ei_rng_seed(&rng, o->seed ^ 0x5eedf00dull);
    double t0 = ei_now();
    long seen = 0, total = (long)o->epochs * nbatches * B;
    for (int ep = 0; ep < o->epochs && !rc; ep++) {
        ei_rng_shuffle(&rng, order, n_train);
        double ep_loss = 0;
        int correct_last = 0;
        for (int b = 0; b < nbatches; b++) {
            nn_dataset_batch(data, order, b * B, B, x, labels);
            if (o->augment_flip)
                flip_some(x, &rng);
            if (o->augment_shift > 0)
                nn_augment_shift(x, o->augment_shift, &rng, shift_tmp);
            nn_model_zero_grad(m);
            float loss = nn_model_train_step(m, x, labels, o->exit_weights, NULL, correct);
            correct_last += correct[E - 1];
            if (!isfinite(loss)) {
                rc = ei_err_set(err, EI_E_NONFINITE, "loss became non-finite at epoch %d batch "
                                "%d (learning rate too high?)", ep + 1, b + 1);
                break;
            }
            float lr = (float)schedule_lr(o, ep + (double)b / nbatches);
            opt.step++;
            for (int i = 0; i < opt.count; i++)
                o->optimizer == NN_OPT_SGD ? sgd_update(&opt.slots[i], o, lr)
                                           : adam_update(&opt.slots[i], o, lr, opt.step);
            ep_loss += loss;
            seen += B;
            int every = o->progress ? 10 : (nbatches / 10 ? nbatches / 10 : 1);
            if ((b + 1) % every == 0 || b + 1 == nbatches) {
                double el = ei_now() - t0, rate = seen / el;
                progress_line(o, log, ep, b + 1, nbatches, ep_loss / (b + 1), rate,
                              (total - seen) / rate);
            }
        }
        if (o->progress)
            fputc('\n', log);
        fprintf(log, "epoch %d/%d done: loss %.4f, final-exit train accuracy %.4f, %.0f s\n",
                ep + 1, o->epochs, ep_loss / nbatches, (double)correct_last / (nbatches * B),
                ei_now() - t0);
        if (n_val > 0 && !rc)
            report_val(m, data, val_idx, n_val, log);
    }
done:
    optim_free(&opt);
    nn_tensor_destroy(&x);
    free(labels);
    free(order);
    free(correct);
    free(shift_tmp);
    return rc;
}
