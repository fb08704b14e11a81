/* Batches of messages (proto/messages.proto, Batch): several encoded messages to one peer
 * as one ZeroMQ message of two frames, the Batch envelope and the payload holding each
 * message's frames back to back, each padded to WIRE_BATCH_ALIGN bytes so that every
 * tensor inside stays aligned for float reads where the payload is. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire/wire_internal.h"

static size_t padded(size_t n)
{
    return (n + WIRE_BATCH_ALIGN - 1) / WIRE_BATCH_ALIGN * WIRE_BATCH_ALIGN;
}

static int grow(wire_batch_out_t *b, size_t need)
{
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64 * 1024;
    while (cap < need)
        cap *= 2;
    uint8_t *p = realloc(b->buf, cap);
    if (!p)
        return EI_E_NOMEM;
    b->buf = p;
    b->cap = cap;
    return 0;
}

int wire_batch_add(wire_batch_out_t *b, const void *env, size_t env_len, const void *tensor,
                   size_t tensor_bytes, ei_err_t *err)
{
    if (!tensor)
        tensor_bytes = 0;
    size_t pe = padded(env_len), pt = padded(tensor_bytes);
    if (env_len == 0 || env_len > WIRE_ENVELOPE_MAX || tensor_bytes > WIRE_TENSOR_MAX_BYTES)
        return ei_err_set(err, EI_E_RANGE, "batch: a message of %zu + %zu bytes cannot travel "
                          "in a batch", env_len, tensor_bytes);
    if (b->hdr.count >= WIRE_MAX_BATCH || b->len + pe + pt > WIRE_BATCH_MAX_BYTES)
        return ei_err_set(err, EI_E_RANGE, "batch: full (%u messages, %zu bytes)",
                          (unsigned)b->hdr.count, b->len);
    if (grow(b, b->len + pe + pt) < 0)
        return ei_err_set(err, EI_E_NOMEM, "batch: out of memory for %zu bytes", b->len + pe + pt);
    memcpy(b->buf + b->len, env, env_len);
    memset(b->buf + b->len + env_len, 0, pe - env_len);
    b->len += pe;
    if (tensor_bytes) {
        memcpy(b->buf + b->len, tensor, tensor_bytes);
        memset(b->buf + b->len + tensor_bytes, 0, pt - tensor_bytes);
        b->len += pt;
    }
    b->hdr.env_bytes[b->hdr.count] = (uint32_t)env_len;
    b->hdr.tensor_bytes[b->hdr.count] = (uint32_t)tensor_bytes;
    b->hdr.count++;
    b->hdr.env_bytes_count = b->hdr.tensor_bytes_count = (pb_size_t)b->hdr.count;
    return 0;
}

void wire_batch_item(const wire_batch_out_t *b, int i, const uint8_t **env, size_t *env_len,
                     const float **tensor, size_t *tensor_bytes)
{
    EI_ASSERT(i >= 0 && (uint32_t)i < b->hdr.count);
    size_t off = 0;
    for (int k = 0; k < i; k++)
        off += padded(b->hdr.env_bytes[k]) + padded(b->hdr.tensor_bytes[k]);
    *env = b->buf + off;
    *env_len = b->hdr.env_bytes[i];
    *tensor_bytes = b->hdr.tensor_bytes[i];
    *tensor = *tensor_bytes ? (const float *)(const void *)(b->buf + off + padded(*env_len)) : NULL;
}

int wire_batch_send(xport_t *x, const xport_peer_t *to, const wire_batch_out_t *b, uint64_t seq,
                    ei_err_t *err)
{
    if (b->hdr.count == 0)
        return 0;
    if (b->hdr.count == 1) { /* as itself: no batch for one */
        const uint8_t *env;
        const float *tensor;
        size_t len, tbytes;
        wire_batch_item(b, 0, &env, &len, &tensor, &tbytes);
        xport_frame_t f[2] = {{env, len, NULL, NULL}, {tensor, tbytes, NULL, NULL}};
        return xport_send(x, to, f, tensor ? 2 : 1, err);
    }
    einet_Envelope env;
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len;
    wire_env_init(&env, einet_Envelope_batch_tag);
    env.seq = seq;
    env.body.batch = b->hdr;
    int rc = wire_encode(&env, b->len, buf, sizeof buf, &len, err);
    if (rc < 0)
        return rc;
    xport_frame_t f[2] = {{buf, len, NULL, NULL}, {b->buf, b->len, NULL, NULL}};
    rc = xport_send(x, to, f, 2, err);
    if (rc < 0)
        ei_err_prefix(err, "sending a batch of %u: ", (unsigned)b->hdr.count);
    return rc;
}

void wire_batch_clear(wire_batch_out_t *b)
{
    b->len = 0;
    memset(&b->hdr, 0, sizeof b->hdr);
}

void wire_batch_free(wire_batch_out_t *b)
{
    free(b->buf);
    memset(b, 0, sizeof *b);
}

static int may_travel(pb_size_t tag)
{
    switch (tag) {
    case einet_Envelope_exit_result_tag:
    case einet_Envelope_cancel_tag:
    case einet_Envelope_fault_tag:
    case einet_Envelope_moved_tag:
    case einet_Envelope_feature_map_tag:
    case einet_Envelope_taken_tag:
    case einet_Envelope_task_tag:
        return 1;
    }
    return 0;
}

int wire_batch_next(const wire_in_t *batch, wire_batch_it_t *it, wire_in_t *item, ei_err_t *err)
{
    const einet_Batch *h = &batch->env.body.batch;
    EI_ASSERT(batch->env.which_body == einet_Envelope_batch_tag && batch->payload);
    if (it->i >= (int)h->count)
        return 0;
    int i = it->i++;
    size_t elen = h->env_bytes[i], tbytes = h->tensor_bytes[i];
    const uint8_t *env = batch->payload + it->off;
    /* wire_recv checked that the sizes add up to the payload: these are inside it */
    it->off += padded(elen) + padded(tbytes);
    memset(item, 0, sizeof *item);
    item->peer = batch->peer;
    item->who = batch->who;
    int rc = wire_decode(env, elen, tbytes ? tbytes : WIRE_NO_TENSOR, &item->env, err);
    if (rc == 0 && !may_travel(item->env.which_body))
        rc = ei_err_set(err, EI_E_FORMAT, "%s may not travel in a batch",
                        wire_body_name(item->env.which_body));
    if (rc < 0)
        return ei_err_prefix(err, "batch message %d of %u: ", i + 1, (unsigned)h->count);
    if (tbytes) {
        item->tensor = (const float *)(const void *)(env + padded(elen));
        item->tensor_numel = tbytes / sizeof(float);
    }
    return 1;
}
