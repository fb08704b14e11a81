/* Layer sequences: a conv part or a branch, with buffers sized once. */
#include <stdlib.h>

#include "layer_internal.h"
#include "nn_internal.h"

int nn__seq_init(nn_seq_t *s, const nn_layer_spec_t *specs, int count, nn_shape_t in,
                 int max_batch, ei_err_t *err)
{
    *s = (nn_seq_t){.count = count, .in = in, .out = in, .max_batch = max_batch};
    s->layers = ei_calloc((size_t)count, sizeof *s->layers);
    s->skip = ei_calloc((size_t)count, 1);
    s->act = ei_calloc((size_t)count, sizeof *s->act);
    s->grad = ei_calloc((size_t)count, sizeof *s->grad);
    if (!s->layers || !s->skip || !s->act || !s->grad)
        goto nomem;
    for (int i = 0; i < count; i++) {
        s->layers[i] = nn_layer_new(&specs[i], s->out, err);
        if (!s->layers[i])
            return ei_err_prefix(err, "layer %d (%s): ", i, nn_kind_name(specs[i].kind));
        s->out = nn_layer_out_shape(s->layers[i]);
        s->act[i] = nn_tensor_new(max_batch, s->out.c, s->out.h, s->out.w);
        if (!s->act[i])
            goto nomem;
        if (specs[i].kind == NN_RESIDUAL && nn__residual_reserve(s->layers[i], max_batch))
            goto nomem;
    }
    return 0;
nomem:
    return ei_err_set(err, EI_E_NOMEM, "out of memory building a layer sequence");
}

void nn__seq_free(nn_seq_t *s)
{
    for (int i = 0; i < s->count; i++) {
        if (s->layers)
            nn_layer_destroy(&s->layers[i]);
        if (s->act)
            nn_tensor_destroy(&s->act[i]);
        if (s->grad)
            nn_tensor_destroy(&s->grad[i]);
    }
    free(s->layers);
    free(s->skip);
    free(s->act);
    free(s->grad);
    *s = (nn_seq_t){0};
}

int nn__seq_reserve(nn_seq_t *s, int n)
{
    if (n <= s->max_batch)
        return 0;
    for (int i = 0; i < s->count; i++) {
        nn_shape_t o = nn_layer_out_shape(s->layers[i]);
        nn_tensor_destroy(&s->act[i]);
        nn_tensor_destroy(&s->grad[i]); /* made again by the next backward */
        s->act[i] = nn_tensor_new(n, o.c, o.h, o.w);
        if (!s->act[i])
            return EI_E_NOMEM;
        if (nn_layer_spec(s->layers[i])->kind == NN_RESIDUAL &&
            nn__residual_reserve(s->layers[i], n))
            return EI_E_NOMEM;
    }
    s->max_batch = n;
    return 0;
}

void nn__seq_fold(nn_seq_t *s)
{
    for (int i = 0; i < s->count; i++) {
        nn_kind_t kind = nn_layer_spec(s->layers[i])->kind;
        if (kind == NN_DROPOUT) /* the identity in inference */
            s->skip[i] = 1;
        else if (kind == NN_RESIDUAL)
            nn_layer_prepare_inference(s->layers[i]);
    }
    for (int i = 1; i < s->count; i++) {
        if (nn_layer_spec(s->layers[i])->kind != NN_BN)
            continue;
        int c = i - 1; /* the conv before it, past skipped dropouts */
        while (c > 0 && s->skip[c] && nn_layer_spec(s->layers[c])->kind == NN_DROPOUT)
            c--;
        if (nn_layer_spec(s->layers[c])->kind != NN_CONV || s->skip[c])
            continue;
        if (nn_layer_fold_bn(s->layers[c], s->layers[i]) == 0)
            s->skip[i] = 1;
    }
    for (int i = 0; i < s->count; i++) /* after folding: the lowering takes the weights */
        if (nn_layer_spec(s->layers[i])->kind == NN_CONV && !s->skip[i])
            nn_layer_prepare_inference(s->layers[i]);
}

size_t nn__seq_workspace(const nn_seq_t *s, int n)
{
    size_t ws = 0;
    for (int i = 0; i < s->count; i++) {
        size_t w = nn_layer_workspace(s->layers[i], n);
        if (w > ws)
            ws = w;
    }
    return ws;
}

double nn__seq_flops(const nn_seq_t *s)
{
    double f = 0;
    for (int i = 0; i < s->count; i++)
        if (!s->skip[i])
            f += nn_layer_flops(s->layers[i]);
    return f;
}

static nn_kind_t kind_of(const nn_seq_t *s, int i)
{
    return nn_layer_spec(s->layers[i])->kind;
}

/* Layer i runs together with a ReLU right after it (a conv, a residual layer or a batch
 * norm): one pass writes the ReLU's activation; the first layer's own is never read (its
 * backward needs its input, the ReLU's its output). */
static int fuses_relu(const nn_seq_t *s, int i)
{
    nn_kind_t k = kind_of(s, i);
    return k == NN_CONV || k == NN_RESIDUAL || k == NN_BN;
}

/* The layer after i that runs; *fuse = 1 when i fuses with it, a ReLU. */
static int next_step(const nn_seq_t *s, int i, int *fuse)
{
    int j = i + 1;
    while (j < s->count && s->skip[j])
        j++;
    *fuse = j < s->count && fuses_relu(s, i) && kind_of(s, j) == NN_RELU;
    return j;
}

/* The step that starts at layer i (not skipped): the layers it runs together (a conv or
 * residual layer with the ReLU after it; in inference a Winograd conv with its ReLU and a
 * 2x2 maxpool after that), the index of the activation it writes (*at) and of its last
 * layer (returned). */
static int step_of(const nn_seq_t *s, int i, int training, int *fuse, int *pool, int *at)
{
    int j = next_step(s, i, fuse), unused;
    int k = *fuse ? next_step(s, j, &unused) : s->count; /* a maxpool after the ReLU */
    *pool = !training && k < s->count && nn__conv_pool_fusable(s->layers[i], s->layers[k]);
    *at = *pool ? k : *fuse ? j : i;
    return *at;
}

/* The layers from `from` on, on samples [s0, s0 + x->n) of the sequence's buffers (x holds
 * those samples' input to layer `from`); returns the index of the activation that holds
 * the output, -1 for none. Other threads may run other samples of the same sequence at
 * the same time: only views of the buffers are made here. */
static int seq_run(nn_seq_t *s, int from, const nn_tensor_t *x, int s0, float *ws, int training)
{
    nn_tensor_t cur = *x;
    int last = -1;
    for (int i = from; i < s->count; i++) {
        if (s->skip[i])
            continue;
        int fuse, pool, at;
        int end = step_of(s, i, training, &fuse, &pool, &at);
        nn_tensor_t *a = s->act[at];
        nn_tensor_t y = nn_tensor_view(a->data + (size_t)s0 * nn_tensor_sample_numel(a), x->n,
                                       a->c, a->h, a->w);
        if (pool)
            nn__conv_forward_relu_pool(s->layers[i], &cur, &y, ws);
        else if (kind_of(s, i) == NN_RESIDUAL)
            nn__residual_forward_at(s->layers[i], &cur, &y, s0, ws, training, fuse);
        else if (kind_of(s, i) == NN_BN)
            nn__bn_forward_relu(s->layers[i], &cur, &y, training, fuse);
        else if (fuse)
            nn__layer_forward_relu(s->layers[i], &cur, &y, ws, training);
        else
            nn_layer_forward(s->layers[i], &cur, &y, ws, training);
        cur = y;
        last = at;
        i = end;
    }
    return last;
}

int nn__seq_head(const nn_seq_t *s, nn_seq_head_t *h)
{
    int i = 0;
    while (i < s->count && s->skip[i])
        i++;
    if (i >= s->count || kind_of(s, i) != NN_CONV)
        return 0;
    h->layer = s->layers[i];
    h->next = step_of(s, i, 0, &h->relu, &h->pool, &h->at) + 1;
    return 1;
}

const nn_tensor_t *nn__seq_forward(nn_seq_t *s, const nn_tensor_t *x, float *ws, int training)
{
    int last = seq_run(s, 0, x, 0, ws, training);
    for (int i = 0; i < s->count; i++)
        s->act[i]->n = x->n; /* the batch the backward and the caller see */
    return last < 0 ? x : s->act[last];
}

void nn__seq_forward_at(nn_seq_t *s, const nn_tensor_t *x, int s0, float *ws, nn_tensor_t *out)
{
    nn__seq_forward_from(s, 0, x, s0, ws, out);
}

void nn__seq_forward_from(nn_seq_t *s, int from, const nn_tensor_t *x, int s0, float *ws,
                          nn_tensor_t *out)
{
    int last = seq_run(s, from, x, s0, ws, 0);
    if (last < 0) {
        *out = *x;
        return;
    }
    nn_tensor_t *a = s->act[last];
    *out = nn_tensor_view(a->data + (size_t)s0 * nn_tensor_sample_numel(a), x->n, a->c, a->h,
                          a->w);
}

/* Gradient buffers are made on the first backward: inference never pays for them. */
static int seq_grads(nn_seq_t *s)
{
    for (int i = 0; i < s->count; i++) {
        if (s->grad[i])
            continue;
        nn_shape_t o = nn_layer_out_shape(s->layers[i]);
        s->grad[i] = nn_tensor_new(s->max_batch, o.c, o.h, o.w);
        if (!s->grad[i])
            return EI_E_NOMEM;
    }
    return 0;
}

int nn__seq_backward(nn_seq_t *s, const nn_tensor_t *x, const nn_tensor_t *dy, nn_tensor_t *dx,
                     float *ws)
{
    EI_ASSERT(s->count > 0);
    int rc = seq_grads(s);
    if (rc)
        return rc;
    const nn_tensor_t *d = dy;
    for (int i = s->count - 1; i >= 0; i--) {
        EI_ASSERT(!s->skip[i]);
        /* a batch norm and its ReLU ran as one (seq_run): back through both at once, the
           ReLU's output its mask; the norm's own activation was never written */
        int bn_relu = i > 0 && kind_of(s, i) == NN_RELU && kind_of(s, i - 1) == NN_BN;
        i -= bn_relu;
        const nn_tensor_t *in = i ? s->act[i - 1] : x;
        nn_tensor_t *din = i ? s->grad[i - 1] : dx;
        if (din)
            din->n = x->n;
        if (bn_relu)
            nn__bn_backward_relu(s->layers[i], in, s->act[i + 1], d, din);
        else
            nn_layer_backward(s->layers[i], in, s->act[i], d, din, ws);
        d = din;
    }
    return 0;
}
