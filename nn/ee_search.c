/* The class-specific EE design-space search: block times, the feature bank, the figures of
 * Bonato & Bouganis eqs. 1-7 and the Pareto choice. */
#include "ee_search.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"

/* ---- times ---- */

double ee_search_t_ms(const ee_search_times_t *t)
{
    return ee_search_delta_ms(t, t->n) + t->final_branch_ms;
}

double ee_search_delta_ms(const ee_search_times_t *t, int layer)
{
    double s = 0;
    for (int j = 0; j < layer && j < t->n; j++)
        s += t->conv_ms[j];
    return s;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* One sample through every conv part and the final branch; times into row. */
static int time_sample(nn_model_t *b, const nn_tensor_t *x, double *row, float *probs,
                       ei_err_t *err)
{
    int n = nn_model_blocks(b);
    const nn_tensor_t *cur = x;
    for (int k = 0; k < n; k++) {
        double t0 = ei_now();
        cur = nn_model_conv(b, k, cur, err);
        if (!cur)
            return err ? err->code : EI_E_INVAL;
        row[k] = 1e3 * (ei_now() - t0);
    }
    double t0 = ei_now();
    int rc = nn_model_branch(b, n - 1, cur, probs, err);
    row[n] = 1e3 * (ei_now() - t0);
    return rc;
}

int ee_search_times_measure(nn_model_t *b, const nn_dataset_t *data, const int *idx, int count,
                            ee_search_times_t *t, ei_err_t *err)
{
    int n = nn_model_blocks(b);
    if (n > EE_MAX_LAYERS || count < 1)
        return ei_err_set(err, EI_E_RANGE, "ee times: %d blocks, %d classes, %d samples", n,
                          nn_model_classes(b), count);
    int rc = nn_model_check_data(b, NULL, data, err);
    if (rc)
        return rc;
    nn_shape_t in = nn_model_input_shape(b);
    nn_tensor_t *x = nn_tensor_new(1, in.c, in.h, in.w);
    double *rows = ei_calloc((size_t)count * (size_t)(n + 1), sizeof(double));
    double *col = ei_calloc((size_t)count, sizeof(double));
    float *probs = ei_calloc((size_t)nn_model_classes(b), sizeof(float));
    rc = !x || !rows || !col || !probs ? ei_err_set(err, EI_E_NOMEM, "ee times: out of memory") : 0;
    for (int s = 0; s < count && !rc; s++) {
        int label;
        nn_dataset_batch(data, idx ? idx + s : NULL, s, 1, x, &label);
        rc = time_sample(b, x, rows + (size_t)s * (n + 1), probs, err);
    }
    for (int k = 0; k <= n && !rc; k++) {
        for (int s = 0; s < count; s++)
            col[s] = rows[(size_t)s * (n + 1) + k];
        double m = median(col, count);
        if (k < n)
            t->conv_ms[k] = m;
        else
            t->final_branch_ms = m;
    }
    t->n = n;
    nn_tensor_destroy(&x);
    free(rows);
    free(col);
    free(probs);
    return rc;
}

double ee_search_time_ee(ee_t *ee, const nn_tensor_t *const *taps1, int reps)
{
    double *v = ei_calloc((size_t)(reps > 0 ? reps : 1), sizeof(double));
    EI_ASSERT(v);
    float p;
    for (int r = 0; r < reps; r++) {
        double t0 = ei_now();
        int rc = ee_check(ee, taps1, &p, NULL);
        v[r] = 1e3 * (ei_now() - t0);
        EI_ASSERT(rc >= 0); /* the taps come from the same model */
    }
    double m = reps > 0 ? median(v, reps) : 0;
    free(v);
    return m;
}

/* ---- figures ---- */

void ee_search_count(const uint8_t *label, const uint8_t *pred_b, const float *p_k, int n,
                     int target, double alpha, ee_search_counts_t *c)
{
    memset(c, 0, sizeof *c);
    for (int s = 0; s < n; s++) {
        int is_k = label[s] == target, right = pred_b[s] == label[s];
        c->n++;
        c->k += is_k;
        c->b_right_k += is_k && right;
        c->b_right_not_k += !is_k && right;
        c->b_pred_k += pred_b[s] == target;
        if ((double)p_k[s] >= alpha) {
            c->tp_ee += is_k;
            c->fp_ee += !is_k;
        } else {
            c->tp_b += right;
            c->tp_kb += is_k && right;
            c->fn_kb += is_k && !right;
        }
    }
}

static double ratio(long num, long den)
{
    return den ? (double)num / (double)den : NAN;
}

void ee_search_figures(const ee_search_counts_t *c, double alpha, double t_ms, double delta_ms,
                       double e_ms, ee_search_figures_t *f)
{
    memset(f, 0, sizeof *f);
    f->c = *c;
    long other = c->n - c->k, taken = c->tp_ee + c->fp_ee;
    long num5 = c->tp_b - c->tp_kb, den5 = c->n - taken - (c->tp_kb + c->fn_kb);
    long right_ee = c->tp_ee + (other - c->fp_ee);
    f->alpha = alpha;
    f->beta = ratio(c->b_right_not_k, other);
    f->eta = ratio(c->b_right_k, c->k);
    f->zeta = ratio(c->b_right_k, c->b_pred_k);
    f->gamma = ratio(taken, c->k);
    f->acc_b = ratio(num5, den5);
    f->acc_ee = ratio(right_ee, c->n);
    f->acc_g = ratio(c->tp_ee + c->tp_kb, c->tp_ee + c->tp_kb + c->fn_kb);
    f->precision = ratio(c->tp_ee, taken);
    /* Exact comparisons on the counts: a/b >= p/q <=> a q >= p b for positive b, q. */
    f->c5 = den5 > 0 && other > 0 && num5 * other >= c->b_right_not_k * den5;
    f->c6 = c->n > 0 && c->k > 0 && right_ee * c->k >= c->b_right_k * c->n;
    f->c7 = c->k > 0 && c->tp_ee + c->tp_kb >= c->b_right_k;
    f->met = f->c5 && f->c6 && f->c7;
    f->t_ms = t_ms, f->delta_ms = delta_ms, f->e_ms = e_ms;
    double early = delta_ms + e_ms, late = t_ms + e_ms;
    f->t2_ms = (1 - f->gamma) * (t_ms - delta_ms) + delta_ms + e_ms;
    double tk = c->k ? (c->tp_ee * early + (c->k - c->tp_ee) * late) / c->k : NAN;
    double to = other ? (c->fp_ee * early + (other - c->fp_ee) * late) / other : NAN;
    f->gain = t_ms / tk;
    f->loss = to / t_ms;
    f->viable = f->met && f->gain > 1;
}

static int dominates(const ee_search_figures_t *a, const ee_search_figures_t *b)
{
    return a->gain >= b->gain && a->loss <= b->loss && (a->gain > b->gain || a->loss < b->loss);
}

int ee_search_choose(const ee_search_figures_t *pts, int n, uint8_t *front)
{
    int best = -1;
    for (int i = 0; i < n; i++) {
        int on = pts[i].viable;
        for (int j = 0; j < n && on; j++)
            on = !(pts[j].viable && dominates(&pts[j], &pts[i]));
        if (front)
            front[i] = (uint8_t)on;
        if (!on)
            continue;
        double r = pts[i].gain / pts[i].loss;
        double rb = best < 0 ? -1 : pts[best].gain / pts[best].loss;
        if (best < 0 || r > rb || (r == rb && pts[i].gain > pts[best].gain))
            best = i;
    }
    return best;
}

/* ---- the bank ---- */

void ee_search_bank_destroy(ee_search_bank_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ee_search_bank_t *self = *self_p;
    free(self->feat);
    free(self->label);
    free(self->pred_b);
    for (int j = 0; j < self->layers; j++)
        nn_tensor_destroy(&self->taps1[j]);
    free(self);
    *self_p = NULL;
}

static int argmax(const float *p, int k)
{
    int best = 0;
    for (int c = 1; c < k; c++)
        best = p[c] > p[best] ? c : best;
    return best;
}

/* Rows [row, row + nb) from x: B's taps, the features and the final exit's prediction. */
static int bank_rows(ee_search_bank_t *bank, nn_model_t *b, ee_t *all, const nn_tensor_t *x,
                     int row, float *probs, int *keep_taps1, ei_err_t *err)
{
    const nn_tensor_t *taps[EE_MAX_LAYERS], *cur = x;
    for (int k = 0; k < bank->layers; k++) {
        if (!(cur = taps[k] = nn_model_conv(b, k, cur, err)))
            return err ? err->code : EI_E_INVAL;
    }
    int rc = nn_model_branch(b, bank->layers - 1, cur, probs, err);
    if (!rc)
        rc = ee_features(all, taps, bank->feat + (size_t)row * bank->features,
                         (size_t)bank->features, err);
    for (int s = 0; s < x->n && !rc; s++)
        bank->pred_b[row + s] = (uint8_t)argmax(probs + (size_t)s * bank->classes, bank->classes);
    if (!rc && *keep_taps1) { /* the first sample's taps at batch 1, for timing the EEs */
        for (int k = 0; k < bank->layers; k++)
            memcpy(bank->taps1[k]->data, taps[k]->data,
                   nn_tensor_sample_numel(taps[k]) * sizeof(float));
        *keep_taps1 = 0;
    }
    return rc;
}

static ee_search_bank_t *bank_alloc(nn_model_t *b, int count, int pool, ee_t **all, ei_err_t *err)
{
    int n = nn_model_blocks(b);
    if (n > EE_MAX_LAYERS || nn_model_classes(b) > 256) {
        ei_err_set(err, EI_E_RANGE, "ee bank: %d blocks and %d classes (at most %d and 256)", n,
                   nn_model_classes(b), EE_MAX_LAYERS);
        return NULL;
    }
    ee_spec_t spec = {.target = 0, .layer = n, .kp = 1, .pool = pool, .alpha = 1};
    if (!(*all = ee_new_for_model(&spec, b, nn_model_max_batch(b), err)))
        return NULL;
    ee_search_bank_t *bank = ei_calloc(1, sizeof *bank);
    if (!bank)
        goto nomem;
    bank->layers = n, bank->pool = pool, bank->count = count;
    bank->classes = nn_model_classes(b);
    bank->features = ee_features_count(*all);
    for (int j = 0; j < n; j++) {
        ee_spec_t one = {.target = 0, .layer = j + 1, .kp = 0, .pool = pool, .alpha = 1};
        ee_t *e = ee_new_for_model(&one, b, 1, err);
        if (!e)
            goto fail;
        bank->offset[j + 1] = bank->offset[j] + ee_features_count(e);
        ee_destroy(&e);
        nn_shape_t s = nn_model_feature_shape(b, j);
        if (!(bank->taps1[j] = nn_tensor_new(1, s.c, s.h, s.w)))
            goto nomem;
    }
    EI_ASSERT(bank->offset[n] == bank->features);
    bank->feat = ei_calloc((size_t)count * (size_t)bank->features + 1, sizeof(float));
    bank->label = ei_calloc((size_t)count + 1, 1);
    bank->pred_b = ei_calloc((size_t)count + 1, 1);
    if (!bank->feat || !bank->label || !bank->pred_b)
        goto nomem;
    return bank;
nomem:
    ei_err_set(err, EI_E_NOMEM, "ee bank: out of memory for %d rows", count);
fail:
    ee_search_bank_destroy(&bank);
    ee_destroy(all);
    return NULL;
}

/* One source of rows: data[idx[0..n-1]] (idx NULL: the first n). */
static int bank_fill(ee_search_bank_t *bank, nn_model_t *b, ee_t *all, const nn_dataset_t *data,
                     const int *idx, int n, int row0, int *keep_taps1, FILE *log, ei_err_t *err)
{
    int batch = nn_model_max_batch(b), K = bank->classes;
    nn_shape_t in = nn_model_input_shape(b);
    int rc = nn_model_check_data(b, NULL, data, err);
    if (rc)
        return rc;
    nn_tensor_t *x = nn_tensor_new(batch, 1, in.h, in.w);
    float *probs = ei_calloc((size_t)batch * K, sizeof(float));
    int *labels = ei_calloc((size_t)batch, sizeof(int));
    rc = !x || !probs || !labels ? ei_err_set(err, EI_E_NOMEM, "ee bank: out of memory") : 0;
    for (int at = 0; at < n && !rc; at += batch) {
        int nb = n - at < batch ? n - at : batch;
        nn_tensor_t xv = nn_tensor_view(x->data, nb, 1, in.h, in.w);
        nn_dataset_batch(data, idx ? idx + at : NULL, idx ? 0 : at, nb, &xv, labels);
        for (int s = 0; s < nb; s++)
            bank->label[row0 + at + s] = (uint8_t)labels[s];
        rc = bank_rows(bank, b, all, &xv, row0 + at, probs, keep_taps1, err);
        if (log && ((at / batch) % 50 == 49))
            fprintf(log, "ee bank: %d/%d rows\n", row0 + at + nb, bank->count);
    }
    nn_tensor_destroy(&x);
    free(probs);
    free(labels);
    return rc;
}

ee_search_bank_t *ee_search_bank_new(nn_model_t *b, const nn_dataset_t *train, const int *train_idx,
                                     int n_train, const int *val_idx, int n_val,
                                     const nn_dataset_t *test, int n_test, int pool, FILE *log,
                                     ei_err_t *err)
{
    if (n_train < 0 || n_val < 0 || n_test < 0 || n_train + n_val + n_test < 1 ||
        (n_train + n_val && !train) || (n_test && (!test || n_test > test->count))) {
        ei_err_set(err, EI_E_INVAL, "ee bank: %d training, %d validation and %d test rows", n_train,
                   n_val, n_test);
        return NULL;
    }
    ee_t *all = NULL;
    ee_search_bank_t *bank = bank_alloc(b, n_train + n_val + n_test, pool, &all, err);
    if (!bank)
        return NULL;
    bank->n_train = n_train, bank->n_val = n_val, bank->n_test = n_test;
    int keep = 1, rc = 0;
    if (n_train)
        rc = bank_fill(bank, b, all, train, train_idx, n_train, 0, &keep, log, err);
    if (!rc && n_val)
        rc = bank_fill(bank, b, all, train, val_idx, n_val, n_train, &keep, log, err);
    if (!rc && n_test)
        rc = bank_fill(bank, b, all, test, NULL, n_test, n_train + n_val, &keep, log, err);
    ee_destroy(&all);
    if (rc)
        ee_search_bank_destroy(&bank);
    return bank;
}

/* ---- the search ---- */

void ee_search_opts_default(ee_search_opts_t *o)
{
    *o = (ee_search_opts_t){.kp_off = 1,
                            .kp_on = 1,
                            .alpha_lo = 0.95,
                            .alpha_hi = 1.0,
                            .alpha_step = 0.01,
                            .time_reps = 201};
    ee_train_opts_default(&o->train);
}

/* This EE's features in the bank: the prefix of the row (KP on) or layer i's slice. */
static const float *bank_feat(const ee_search_bank_t *bank, const ee_spec_t *s)
{
    return bank->feat + (s->kp ? 0 : bank->offset[s->layer - 1]);
}

void ee_search_eval_rows(ee_t *ee, const ee_search_bank_t *bank, int first, int n,
                         const ee_search_times_t *times, double e_ms, ee_search_figures_t *f)
{
    const ee_spec_t *s = ee_spec(ee);
    float *pk = ei_calloc((size_t)n + 1, sizeof(float));
    EI_ASSERT(pk); /* n floats beside a bank of n rows of features */
    ee_head_probs(ee, bank_feat(bank, s) + (size_t)first * bank->features, (size_t)bank->features,
                  NULL, n, pk);
    ee_search_counts_t c;
    ee_search_count(bank->label + first, bank->pred_b + first, pk, n, s->target, s->alpha, &c);
    ee_search_figures(&c, s->alpha, ee_search_t_ms(times), ee_search_delta_ms(times, s->layer),
                      e_ms, f);
    free(pk);
}

void ee_search_result_clear(ee_search_result_t *res)
{
    ee_destroy(&res->ee);
    memset(res, 0, sizeof *res);
}

static double gain_loss(const ee_search_figures_t *f)
{
    return f->gain / f->loss;
}

/* Whether a beats b by the rule of ee_search_choose (ratio, then gain). */
static int better(const ee_search_figures_t *a, const ee_search_figures_t *b)
{
    double ra = gain_loss(a), rb = gain_loss(b);
    return ra > rb || (ra == rb && a->gain > b->gain);
}

typedef struct search_state {
    const ee_search_bank_t *bank;
    const ee_search_times_t *times;
    const ee_search_opts_t *o;
    ee_search_result_t *res;
    float *pk;
    ee_search_figures_t *points;
    int cap;
} search_state_t;

/* The alpha sweep of one trained EE on the validation split. */
static void sweep(search_state_t *st, ee_search_candidate_t *cand, int *keep)
{
    const ee_search_bank_t *bank = st->bank;
    const ee_search_opts_t *o = st->o;
    ee_search_result_t *res = st->res;
    double t = ee_search_t_ms(st->times), delta = ee_search_delta_ms(st->times, cand->layer);
    int steps = (int)floor((o->alpha_hi - o->alpha_lo) / o->alpha_step + 1e-9);
    for (int a = 0; a <= steps; a++) {
        double alpha = round((o->alpha_lo + a * o->alpha_step) * 1e9) / 1e9;
        ee_search_counts_t c;
        ee_search_figures_t f;
        ee_search_count(bank->label + bank->n_train, bank->pred_b + bank->n_train, st->pk,
                        bank->n_val, res->target, alpha, &c);
        ee_search_figures(&c, alpha, t, delta, cand->e_ms, &f);
        if (!f.viable)
            continue;
        if (res->points < st->cap)
            st->points[res->points++] = f;
        if (!cand->viable++ || better(&f, &cand->best))
            cand->best = f;
        if (!res->found || better(&f, &res->val)) {
            res->found = 1;
            res->val = f;
            *keep = 1;
        }
    }
}

/* Trains, times and sweeps one (layer, KP) EE. */
static int try_candidate(search_state_t *st, int layer, int kp, ei_err_t *err)
{
    const ee_search_bank_t *bank = st->bank;
    ee_search_result_t *res = st->res;
    ee_search_candidate_t *cand = &res->cand[res->ncand++];
    *cand = (ee_search_candidate_t){.layer = layer, .kp = kp};
    ee_spec_t spec = {
        .target = res->target, .layer = layer, .kp = kp, .pool = bank->pool, .alpha = 1};
    nn_shape_t shapes[EE_MAX_LAYERS];
    for (int j = 0; j < layer; j++)
        shapes[j] = nn_tensor_shape(bank->taps1[j]);
    ee_t *ee = ee_new(&spec, shapes, 256, err);
    if (!ee)
        return err ? err->code : EI_E_NOMEM;
    int *rows = ei_calloc((size_t)bank->n_train + bank->n_val, sizeof(int));
    if (!rows) {
        ee_destroy(&ee);
        return ei_err_set(err, EI_E_NOMEM, "ee search: out of memory");
    }
    for (int r = 0; r < bank->n_train + bank->n_val; r++)
        rows[r] = r;
    ee_train_data_t d = {.feat = bank_feat(bank, &spec),
                         .ld = (size_t)bank->features,
                         .label = bank->label,
                         .train_rows = rows,
                         .n_train = bank->n_train,
                         .val_rows = rows + bank->n_train,
                         .n_val = bank->n_val};
    int rc = ee_train(ee, &d, &st->o->train, &cand->train, err);
    free(rows);
    if (rc) {
        ee_destroy(&ee);
        return rc;
    }
    cand->e_ms = ee_search_time_ee(ee, (const nn_tensor_t *const *)bank->taps1, st->o->time_reps);
    ee_head_probs(ee, d.feat + (size_t)bank->n_train * d.ld, d.ld, NULL, bank->n_val, st->pk);
    int keep = 0;
    sweep(st, cand, &keep);
    if (keep) {
        ee_set_alpha(ee, res->val.alpha);
        ee_destroy(&res->ee);
        res->ee = ee;
    } else {
        ee_destroy(&ee);
    }
    if (st->o->log)
        fprintf(st->o->log,
                "ee search: class %d layer %d kp %s: %d epochs (best %d, balanced "
                "acc %.4f, %.1f s), e %.4f ms, %d viable alpha%s%s\n",
                res->target, layer, kp ? "on" : "off", cand->train.epochs, cand->train.best_epoch,
                cand->train.val_bacc, cand->train.seconds, cand->e_ms, cand->viable,
                cand->viable == 1 ? "" : "s", cand->viable ? "" : " (none feasible)");
    return 0;
}

/* B alone (the EE answers nothing) on rows [first, first + n). */
static void baseline(const ee_search_bank_t *bank, int first, int n, int target, double *beta,
                     double *eta, double *zeta)
{
    static const float never = 0;
    ee_search_counts_t c = {0};
    for (int s = 0; s < n; s++) {
        ee_search_counts_t one;
        ee_search_count(bank->label + first + s, bank->pred_b + first + s, &never, 1, target, 2.0,
                        &one);
        c.n += one.n, c.k += one.k, c.b_right_k += one.b_right_k;
        c.b_right_not_k += one.b_right_not_k, c.b_pred_k += one.b_pred_k;
    }
    ee_search_figures_t f;
    ee_search_figures(&c, 2.0, 1, 0, 0, &f);
    *beta = f.beta, *eta = f.eta, *zeta = f.zeta;
}

static int check_search(const ee_search_bank_t *bank, const ee_search_times_t *times, int target,
                        const ee_search_opts_t *o, ei_err_t *err)
{
    if (target < 0 || target >= bank->classes)
        return ei_err_set(err, EI_E_INVAL, "ee search: target class %d is not in [0, %d)", target,
                          bank->classes);
    if (times->n != bank->layers)
        return ei_err_set(err, EI_E_INVAL, "ee search: times for %d blocks, the bank has %d",
                          times->n, bank->layers);
    if (!bank->n_train || !bank->n_val)
        return ei_err_set(err, EI_E_INVAL,
                          "ee search: the bank needs training and validation "
                          "rows (%d, %d)",
                          bank->n_train, bank->n_val);
    if (!(o->alpha_step > 0) || !(o->alpha_lo >= 0) || !(o->alpha_hi <= 1) ||
        o->alpha_lo > o->alpha_hi || (!o->kp_off && !o->kp_on))
        return ei_err_set(err, EI_E_INVAL,
                          "ee search: alpha range [%g, %g] step %g, kp off %d "
                          "on %d",
                          o->alpha_lo, o->alpha_hi, o->alpha_step, o->kp_off, o->kp_on);
    return 0;
}

int ee_search_class(const ee_search_bank_t *bank, const ee_search_times_t *times, int target,
                    const ee_search_opts_t *o, ee_search_result_t *res, ei_err_t *err)
{
    memset(res, 0, sizeof *res);
    res->target = target;
    int rc = check_search(bank, times, target, o, err);
    if (rc)
        return rc;
    int lo = o->layer_lo > 0 ? o->layer_lo : 1;
    int hi = o->layer_hi > 0 && o->layer_hi < bank->layers ? o->layer_hi : bank->layers;
    int nalpha = (int)floor((o->alpha_hi - o->alpha_lo) / o->alpha_step + 1e-9) + 1;
    search_state_t st = {
        .bank = bank, .times = times, .o = o, .res = res, .cap = 2 * (hi - lo + 1) * nalpha};
    st.pk = ei_calloc((size_t)bank->n_val, sizeof(float));
    st.points = ei_calloc((size_t)st.cap + 1, sizeof *st.points);
    if (!st.pk || !st.points)
        rc = ei_err_set(err, EI_E_NOMEM, "ee search: out of memory");
    baseline(bank, bank->n_train, bank->n_val, target, &res->beta, &res->eta, &res->zeta);
    baseline(bank, bank->n_train + bank->n_val, bank->n_test, target, &res->beta_t, &res->eta_t,
             &res->zeta_t);
    for (int layer = lo; layer <= hi && !rc; layer++) {
        if (o->kp_off)
            rc = try_candidate(&st, layer, 0, err);
        /* At layer 1 KP on taps the same single map as KP off. */
        if (!rc && o->kp_on && (layer > 1 || !o->kp_off))
            rc = try_candidate(&st, layer, 1, err);
    }
    if (!rc && res->found) {
        uint8_t *front = ei_calloc((size_t)res->points + 1, 1);
        EI_ASSERT(front);
        int pick = ee_search_choose(st.points, res->points, front);
        EI_ASSERT(pick >= 0 && !better(&st.points[pick], &res->val) &&
                  !better(&res->val, &st.points[pick]));
        for (int i = 0; i < res->points; i++)
            res->front += front[i];
        free(front);
        const ee_search_candidate_t *c = NULL;
        for (int i = 0; i < res->ncand && !c; i++)
            if (res->cand[i].layer == ee_layer(res->ee) && res->cand[i].kp == ee_spec(res->ee)->kp)
                c = &res->cand[i];
        if (bank->n_test)
            ee_search_eval_rows(res->ee, bank, bank->n_train + bank->n_val, bank->n_test, times,
                                c->e_ms, &res->test);
    }
    free(st.pk);
    free(st.points);
    if (rc)
        ee_search_result_clear(res);
    return rc;
}
