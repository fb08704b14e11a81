/* The multi-exit model: building from an architecture, block-wise and full inference,
 * and the joint-training step (Scardapane et al., eq. 6: a weighted sum of exit losses). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layer_internal.h"
#include "nn_internal.h"

static int check_branch_end(const nn_seq_t *br, int classes, int b, ei_err_t *err)
{
    const nn_layer_spec_t *last = nn_layer_spec(br->layers[br->count - 1]);
    if (last->kind != NN_DENSE || br->out.c != classes)
        return ei_err_set(err, EI_E_SHAPE,
                          "block %d branch: must end in a dense layer with %d outputs (the "
                          "classes), ends in %s with %d", b, classes, nn_kind_name(last->kind),
                          br->out.c);
    return 0;
}

static int build_blocks(nn_model_t *m, const nn_arch_t *a, ei_err_t *err)
{
    nn_shape_t in = a->input;
    for (int b = 0; b < a->nblocks; b++) {
        nn_block_t *blk = &m->blocks[b];
        int rc = nn__seq_init(&blk->conv, a->parts[2 * b], a->counts[2 * b], in, m->max_batch,
                              err);
        if (rc)
            return ei_err_prefix(err, "block %d conv: ", b);
        in = blk->conv.out;
        rc = nn__seq_init(&blk->branch, a->parts[2 * b + 1], a->counts[2 * b + 1], in,
                          m->max_batch, err);
        if (rc)
            return ei_err_prefix(err, "block %d branch: ", b);
        rc = check_branch_end(&blk->branch, m->classes, b, err);
        if (rc)
            return rc;
        size_t w = nn__seq_workspace(&blk->conv, m->max_batch);
        size_t wb = nn__seq_workspace(&blk->branch, m->max_batch);
        m->ws_floats = w > m->ws_floats ? w : m->ws_floats;
        m->ws_floats = wb > m->ws_floats ? wb : m->ws_floats;
    }
    return 0;
}

nn_model_t *nn_model_from_arch(const char *json, const char *source, int max_batch,
                               ei_err_t *err)
{
    nn_arch_t a;
    if (max_batch < 1 || max_batch > 65536) {
        ei_err_set(err, EI_E_INVAL, "max_batch %d out of range [1, 65536]", max_batch);
        return NULL;
    }
    if (nn__arch_parse(json, source, &a, err))
        return NULL;
    nn_model_t *m = ei_calloc(1, sizeof *m);
    if (!m)
        goto nomem;
    m->name = strdup(a.name);
    m->arch_json = strdup(json);
    m->input = a.input;
    m->classes = a.classes;
    m->nblocks = a.nblocks;
    m->max_batch = max_batch;
    m->threads = nn_threads();
    m->blocks = ei_calloc((size_t)a.nblocks, sizeof *m->blocks);
    if (!m->name || !m->arch_json || !m->blocks)
        goto nomem;
    if (build_blocks(m, &a, err)) {
        ei_err_prefix(err, "%s: ", source);
        goto fail;
    }
    m->ws = ei_calloc(m->ws_floats * (size_t)m->threads + 1, sizeof(float));
    m->probs = ei_calloc((size_t)max_batch * (size_t)m->classes, sizeof(float));
    if (!m->ws || !m->probs)
        goto nomem;
    nn__arch_free(&a);
    return m;
nomem:
    ei_err_set(err, EI_E_NOMEM, "%s: out of memory building the model", source);
fail:
    nn__arch_free(&a);
    nn_model_destroy(&m);
    return NULL;
}

/* The whole architecture file as a string (at most 16 MiB); caller frees. */
static char *read_arch_file(const char *path, ei_err_t *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        ei_err_set(err, EI_E_NOTFOUND, "%s: cannot open architecture file", path);
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    do {
        if (len + 4096 + 1 > cap) {
            cap = cap ? 2 * cap : 65536;
            char *nb = cap > (16u << 20) ? NULL : realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                ei_err_set(err, EI_E_FORMAT, "%s: architecture file too large", path);
                return NULL;
            }
            buf = nb;
        }
        got = fread(buf + len, 1, 4096, f);
        len += got;
    } while (got > 0);
    fclose(f);
    buf[len] = '\0';
    return buf;
}

nn_model_t *nn_model_load_arch(const char *path, int max_batch, ei_err_t *err)
{
    char *buf = read_arch_file(path, err);
    if (!buf)
        return NULL;
    nn_model_t *m = nn_model_from_arch(buf, path, max_batch, err);
    free(buf);
    return m;
}

int nn_arch_file_input(const char *path, nn_shape_t *input, ei_err_t *err)
{
    char *buf = read_arch_file(path, err);
    if (!buf)
        return err ? err->code : EI_E_NOTFOUND;
    nn_arch_t a;
    int rc = nn__arch_parse(buf, path, &a, err);
    free(buf);
    if (rc)
        return rc;
    *input = a.input;
    nn__arch_free(&a);
    return 0;
}

void nn_model_destroy(nn_model_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nn_model_t *m = *self_p;
    for (int b = 0; m->blocks && b < m->nblocks; b++) {
        nn__wino_pair_destroy(&m->blocks[b].pair);
        nn__seq_free(&m->blocks[b].conv);
        nn__seq_free(&m->blocks[b].branch);
        if (m->dfeat)
            nn_tensor_destroy(&m->dfeat[b]);
        if (m->dtmp)
            nn_tensor_destroy(&m->dtmp[b]);
    }
    free(m->blocks);
    free(m->dfeat);
    free(m->dtmp);
    free(m->ws);
    free(m->probs);
    free(m->dlogits);
    free(m->name);
    free(m->arch_json);
    free(m);
    *self_p = NULL;
}

static void init_seq(nn_seq_t *s, ei_rng_t *rng)
{
    for (int i = 0; i < s->count; i++)
        nn_layer_init(s->layers[i], rng);
}

void nn_model_init(nn_model_t *self, uint64_t seed)
{
    ei_rng_t rng;
    ei_rng_seed(&rng, seed);
    for (int b = 0; b < self->nblocks; b++) {
        init_seq(&self->blocks[b].conv, &rng);
        init_seq(&self->blocks[b].branch, &rng);
    }
}

/* A full forward runs blk's branch conv and the next block's conv as one Winograd pair
 * when both have the lowering on the same map: one input transform and fatter products
 * (docs/nn.md). The workspace grows to the pair's share if it needs more (here, once;
 * when it cannot, the convs keep running one after the other). */
static void pair_block(nn_model_t *m, nn_block_t *blk, nn_block_t *next)
{
    if (!nn__seq_head(&blk->branch, &blk->head) || !nn__seq_head(&next->conv, &blk->next_head))
        return;
    blk->pair = nn__wino_pair_new(blk->head.layer, blk->next_head.layer);
    if (!blk->pair)
        return;
    size_t need = nn__wino_pair_share(blk->pair, m->max_batch);
    if (need <= m->ws_floats)
        return;
    float *ws = ei_calloc(need * (size_t)m->threads + 1, sizeof(float));
    if (!ws) {
        nn__wino_pair_destroy(&blk->pair);
        return;
    }
    free(m->ws);
    m->ws = ws;
    m->ws_floats = need;
}

void nn_model_prepare_inference(nn_model_t *self)
{
    if (self->inference)
        return;
    for (int b = 0; b < self->nblocks; b++) {
        nn__seq_fold(&self->blocks[b].conv);
        nn__seq_fold(&self->blocks[b].branch);
    }
    for (int b = 0; b + 1 < self->nblocks; b++)
        pair_block(self, &self->blocks[b], &self->blocks[b + 1]);
    self->inference = 1;
}

int nn_model_blocks(const nn_model_t *self)
{
    return self->nblocks;
}

int nn_model_classes(const nn_model_t *self)
{
    return self->classes;
}

int nn_model_max_batch(const nn_model_t *self)
{
    return self->max_batch;
}

const char *nn_model_name(const nn_model_t *self)
{
    return self->name;
}

const char *nn_model_arch_json(const nn_model_t *self)
{
    return self->arch_json;
}

nn_shape_t nn_model_input_shape(const nn_model_t *self)
{
    return self->input;
}

nn_shape_t nn_model_feature_shape(const nn_model_t *self, int k)
{
    EI_ASSERT(k >= 0 && k < self->nblocks);
    return self->blocks[k].conv.out;
}

double nn_model_conv_flops(const nn_model_t *self, int k)
{
    EI_ASSERT(k >= 0 && k < self->nblocks);
    return nn__seq_flops(&self->blocks[k].conv);
}

double nn_model_branch_flops(const nn_model_t *self, int k)
{
    EI_ASSERT(k >= 0 && k < self->nblocks);
    return nn__seq_flops(&self->blocks[k].branch);
}

static nn_seq_t *part(const nn_model_t *m, int k, int branch)
{
    EI_ASSERT(k >= 0 && k < m->nblocks);
    return branch ? &m->blocks[k].branch : &m->blocks[k].conv;
}

int nn_model_part_layers(const nn_model_t *self, int k, int branch)
{
    return part(self, k, branch)->count;
}

nn_layer_t *nn_model_part_layer(nn_model_t *self, int k, int branch, int i)
{
    nn_seq_t *s = part(self, k, branch);
    EI_ASSERT(i >= 0 && i < s->count);
    return s->layers[i];
}

static void count_param(const char *name, nn_param_t *p, void *arg)
{
    (void)name;
    if (p->grad)
        *(size_t *)arg += nn_tensor_numel(p->value);
}

size_t nn_model_param_count(const nn_model_t *self)
{
    size_t n = 0;
    nn_model_visit_params((nn_model_t *)self, count_param, &n);
    return n;
}

/* Every outside tensor is checked before it reaches a kernel: shape, batch, finiteness. */
static int check_input(const nn_model_t *m, nn_shape_t want, const nn_tensor_t *x,
                       const char *what, int k, int own, ei_err_t *err)
{
    if (x->n < 1 || x->n > m->max_batch)
        return ei_err_set(err, EI_E_SHAPE, "%s %d: batch of %d outside [1, %d]", what, k, x->n,
                          m->max_batch);
    if (x->c != want.c || x->h != want.h || x->w != want.w)
        return ei_err_set(err, EI_E_SHAPE, "%s %d: expected input (%d, %d, %d), got (%d, %d, %d)",
                          what, k, want.c, want.h, want.w, x->c, x->h, x->w);
    if (own) /* the model's own map: as finite as the input it came from, checked then */
        return 0;
    size_t per = nn_tensor_sample_numel(x);
    long bad = nn_tensor_find_nonfinite(x->data, nn_tensor_numel(x));
    if (bad >= 0)
        return ei_err_set(err, EI_E_NONFINITE,
                          "%s %d: sample %ld of the batch has a non-finite value at index %ld",
                          what, k, bad / (long)per, bad % (long)per);
    return 0;
}

/* Whether x is the feature map conv part k left in the model's own buffer (the node runs
 * block after block on them): no outside data to check again. */
static int own_map(const nn_model_t *m, int k, const nn_tensor_t *x)
{
    if (k < 0)
        return 0;
    const nn_seq_t *s = &m->blocks[k].conv;
    for (int i = s->count - 1; i >= 0; i--)
        if (!s->skip[i])
            return x->data == s->act[i]->data;
    return 0;
}

/* ---- inference, the batch shared out among the engine's threads ---- */

/* One inference job: blocks [k0, k1) (their conv parts when conv, their branches when
 * branch) on the batch x, cut into count chunks of `chunk` samples that the threads take
 * in turn, each with its own share of the workspace. */
typedef struct infer_job {
    nn_model_t *m;
    const nn_tensor_t *x;
    int k0, k1, conv, branch;
    float *probs; /* branch k's probabilities at probs[(k - k0) * n * K] */
    int chunk, count;
} infer_job_t;

/* Samples [s0, s0 + n) of activation `at` of a sequence. */
static nn_tensor_t act_view(const nn_seq_t *s, int at, int s0, int n)
{
    const nn_tensor_t *a = s->act[at];
    return nn_tensor_view(a->data + (size_t)s0 * nn_tensor_sample_numel(a), n, a->c, a->h,
                          a->w);
}

static void infer_chunk(void *arg, int item, int tid)
{
    const infer_job_t *j = arg;
    nn_model_t *m = j->m;
    int s0 = item * j->chunk, n = j->x->n - s0 < j->chunk ? j->x->n - s0 : j->chunk;
    int K = m->classes;
    float *ws = m->ws + (size_t)tid * m->ws_floats;
    nn_tensor_t cur = nn_tensor_view(j->x->data + (size_t)s0 * nn_tensor_sample_numel(j->x), n,
                                     j->x->c, j->x->h, j->x->w);
    int from = 0; /* the conv part's first layer still to run (past a pair's head) */
    for (int k = j->k0; k < j->k1; k++) {
        nn_block_t *blk = &m->blocks[k];
        if (j->conv)
            nn__seq_forward_from(&blk->conv, from, &cur, s0, ws, &cur);
        from = 0;
        if (j->branch) {
            nn_tensor_t logits, head = cur;
            int from_b = 0;
            if (blk->pair && j->conv && k + 1 < j->k1) { /* this branch's and the next conv */
                head = act_view(&blk->branch, blk->head.at, s0, n);
                nn_tensor_t next = act_view(&m->blocks[k + 1].conv, blk->next_head.at, s0, n);
                nn__wino_pair_forward(blk->pair, &cur, &head, blk->head.relu, blk->head.pool,
                                      &next, blk->next_head.relu, blk->next_head.pool, ws);
                from_b = blk->head.next;
                from = blk->next_head.next;
                cur = next;
            }
            nn__seq_forward_from(&blk->branch, from_b, &head, s0, ws, &logits);
            nn_softmax(logits.data, n, K,
                       j->probs + ((size_t)(k - j->k0) * j->x->n + s0) * (size_t)K);
        }
    }
}

/* Chunks: one per thread at most twice over, so a thread slowed by other load on the
 * machine leaves its second chunk to the others; none below 4 samples. */
static void infer_run(infer_job_t *j)
{
    int n = j->x->n, t = nn__loop_threads(j->m->threads);
    int count = t > 1 ? 2 * t : 1;
    count = count < (n + 3) / 4 ? count : (n + 3) / 4;
    count = count < 1 ? 1 : count;
    j->chunk = (n + count - 1) / count;
    j->count = (n + j->chunk - 1) / j->chunk;
    nn__parallel_for(j->count, t, infer_chunk, j);
}

/* The activation that holds a sequence's output after an inference run, with the batch
 * set; x itself for an empty sequence. */
static const nn_tensor_t *seq_output(nn_seq_t *s, const nn_tensor_t *x)
{
    const nn_tensor_t *out = x;
    for (int i = 0; i < s->count; i++) {
        s->act[i]->n = x->n;
        if (!s->skip[i])
            out = s->act[i];
    }
    return out;
}

const nn_tensor_t *nn_model_conv(nn_model_t *self, int k, const nn_tensor_t *x, ei_err_t *err)
{
    if (k < 0 || k >= self->nblocks) {
        ei_err_set(err, EI_E_RANGE, "block %d does not exist (model has %d)", k, self->nblocks);
        return NULL;
    }
    nn_shape_t want = k ? self->blocks[k - 1].conv.out : self->input;
    if (check_input(self, want, x, "conv part", k, own_map(self, k - 1, x), err))
        return NULL;
    infer_job_t j = {.m = self, .x = x, .k0 = k, .k1 = k + 1, .conv = 1};
    infer_run(&j);
    return seq_output(&self->blocks[k].conv, x);
}

int nn_model_branch(nn_model_t *self, int k, const nn_tensor_t *x, float *probs, ei_err_t *err)
{
    if (k < 0 || k >= self->nblocks)
        return ei_err_set(err, EI_E_RANGE, "block %d does not exist (model has %d)", k,
                          self->nblocks);
    int rc =
        check_input(self, self->blocks[k].conv.out, x, "branch", k, own_map(self, k, x), err);
    if (rc)
        return rc;
    infer_job_t j = {.m = self, .x = x, .k0 = k, .k1 = k + 1, .branch = 1, .probs = probs};
    infer_run(&j);
    return 0;
}

int nn_model_forward(nn_model_t *self, const nn_tensor_t *x, float *probs, ei_err_t *err)
{
    /* Only the model input needs checking: later maps are the model's own. */
    if (check_input(self, self->input, x, "conv part", 0, 0, err))
        return err ? err->code : EI_E_INVAL;
    infer_job_t j = {.m = self, .x = x, .k0 = 0, .k1 = self->nblocks, .conv = 1, .branch = 1,
                     .probs = probs};
    infer_run(&j);
    return 0;
}

/* ---- training ---- */

static void visit_seq(nn_seq_t *s, int b, const char *part, nn_param_visit_fn fn, void *arg)
{
    for (int i = 0; i < s->count; i++) {
        int np = nn_layer_param_count(s->layers[i]);
        for (int j = 0; j < np; j++) {
            nn_param_t *p = nn_layer_param(s->layers[i], j);
            char name[128];
            snprintf(name, sizeof name, "blocks.%d.%s.%d.%s", b, part, i, p->name);
            fn(name, p, arg);
        }
    }
}

void nn_model_visit_params(nn_model_t *self, nn_param_visit_fn fn, void *arg)
{
    for (int b = 0; b < self->nblocks; b++) {
        visit_seq(&self->blocks[b].conv, b, "conv", fn, arg);
        visit_seq(&self->blocks[b].branch, b, "branch", fn, arg);
    }
}

static void zero_grad(const char *name, nn_param_t *p, void *arg)
{
    (void)name;
    (void)arg;
    if (p->grad)
        memset(p->grad->data, 0, nn_tensor_numel(p->grad) * sizeof(float));
}

void nn_model_zero_grad(nn_model_t *self)
{
    nn_model_visit_params(self, zero_grad, NULL);
}

static int train_buffers(nn_model_t *m)
{
    if (m->dfeat)
        return 0;
    m->dfeat = ei_calloc((size_t)m->nblocks, sizeof *m->dfeat);
    m->dtmp = ei_calloc((size_t)m->nblocks, sizeof *m->dtmp);
    m->dlogits = ei_calloc((size_t)m->max_batch * (size_t)m->classes, sizeof(float));
    if (!m->dfeat || !m->dtmp || !m->dlogits)
        return EI_E_NOMEM;
    for (int b = 0; b < m->nblocks; b++) {
        nn_shape_t s = m->blocks[b].conv.out;
        m->dfeat[b] = nn_tensor_new(m->max_batch, s.c, s.h, s.w);
        m->dtmp[b] = nn_tensor_new(m->max_batch, s.c, s.h, s.w);
        if (!m->dfeat[b] || !m->dtmp[b])
            return EI_E_NOMEM;
    }
    return 0;
}

static int count_correct(const float *p, const int *labels, int n, int k)
{
    int correct = 0;
    for (int s = 0; s < n; s++) {
        int best = 0;
        for (int c = 1; c < k; c++)
            if (p[s * k + c] > p[s * k + best])
                best = c;
        correct += best == labels[s];
    }
    return correct;
}

static void add_into(nn_tensor_t *dst, const nn_tensor_t *src)
{
    size_t n = nn_tensor_numel(src);
    for (size_t i = 0; i < n; i++)
        dst->data[i] += src->data[i];
}

float nn_model_train_step(nn_model_t *self, const nn_tensor_t *x, const int *labels,
                          const float *weights, float *exit_loss, int *exit_correct)
{
    EI_ASSERT(!self->inference && x->n <= self->max_batch);
    EI_ASSERT(train_buffers(self) == 0);
    const int n = x->n, K = self->classes;
    const nn_tensor_t *feat = x;
    for (int b = 0; b < self->nblocks; b++)
        feat = nn__seq_forward(&self->blocks[b].conv, feat, self->ws, 1);
    float total = 0;
    /* Backward from the deepest block: the gradient of feature map b is its branch's
     * plus what conv part b+1 sends back. */
    for (int b = self->nblocks - 1; b >= 0; b--) {
        nn_block_t *blk = &self->blocks[b];
        const nn_tensor_t *fb = blk->conv.act[blk->conv.count - 1];
        const nn_tensor_t *logits = nn__seq_forward(&blk->branch, fb, self->ws, 1);
        float w = weights ? weights[b] : 1.0f;
        float loss = nn_softmax_xent(logits->data, labels, n, K, self->probs, self->dlogits, w);
        total += w * loss;
        if (exit_loss)
            exit_loss[b] = loss;
        if (exit_correct)
            exit_correct[b] = count_correct(self->probs, labels, n, K);
        nn_tensor_t dl = nn_tensor_view(self->dlogits, n, K, 1, 1);
        nn_tensor_t *dfeat = self->dfeat[b];
        dfeat->n = n;
        EI_ASSERT(nn__seq_backward(&blk->branch, fb, &dl, b + 1 < self->nblocks ? self->dtmp[b]
                                                                                 : dfeat,
                                   self->ws) == 0);
        if (b + 1 < self->nblocks)
            add_into(dfeat, self->dtmp[b]);
        const nn_tensor_t *in = b ? self->blocks[b - 1].conv.act[self->blocks[b - 1].conv.count - 1]
                                  : x;
        /* conv part b's input gradient is feature map b-1's share from this side. */
        nn_tensor_t *din = b ? self->dfeat[b - 1] : NULL;
        EI_ASSERT(nn__seq_backward(&blk->conv, in, dfeat, din, self->ws) == 0);
    }
    return total;
}
