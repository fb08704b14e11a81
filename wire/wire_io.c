/* Whole messages over xport: frame 0 is the envelope, frame 1 the tensor's raw bytes for
 * the bodies that carry one (docs/protocol.md). */
#include <stdio.h>
#include <string.h>

#include "wire/wire_internal.h"

int wire_recv(xport_msg_t *msg, wire_in_t *in, ei_err_t *err)
{
    int n = xport_msg_frames(msg);
    memset(in, 0, sizeof *in);
    in->peer = *xport_msg_peer(msg);
    in->who = sec_peer_of(msg);
    size_t len, tbytes = WIRE_NO_TENSOR;
    const uint8_t *buf = n >= 1 ? xport_msg_data(msg, 0, &len) : NULL;
    if (buf && len == 0 && n >= 2) { /* REQ's delimiter: answered with one, so REQ reads it */
        in->delimited = 1;
        return ei_err_set(err, EI_E_UNSUPPORTED, "an empty first frame (a REQ socket?): "
                          "clients must use a DEALER socket (docs/protocol.md)");
    }
    if (n < 1 || n > 2)
        return ei_err_set(err, EI_E_FORMAT, "message of %d frames (1 envelope + 0 or 1 tensor)", n);
    if (n == 2)
        xport_msg_data(msg, 1, &tbytes);
    int rc = wire_decode(buf, len, tbytes, &in->env, err);
    if (rc < 0 || n == 1)
        return rc;
    /* The decoder has checked the frame's size against the shape (a batch's layout); only
     * alignment remains. */
    const void *frame = xport_msg_aligned(msg, 1, NULL);
    if (frame && in->env.which_body == einet_Envelope_batch_tag) {
        in->payload = frame;
        in->payload_bytes = tbytes;
        return 0;
    }
    in->tensor = frame;
    if (!in->tensor)
        return ei_err_set(err, EI_E_NOMEM, "%s: out of memory aligning the tensor frame",
                          wire_body_name(in->env.which_body));
    in->tensor_numel = tbytes / sizeof(float);
    return 0;
}

static void free_payload(const wire_payload_t *t)
{
    if (t && t->free_fn)
        t->free_fn((void *)t->data, t->hint);
}

int wire_send(xport_t *x, const xport_peer_t *to, const einet_Envelope *env,
              const wire_payload_t *tensor, ei_err_t *err)
{
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len, tbytes = WIRE_NO_TENSOR;
    int with_tensor = wire_env_tensor_const(env) != NULL;
    if (with_tensor && (!tensor || !tensor->data)) {
        free_payload(tensor);
        return ei_err_set(err, EI_E_INVAL, "sending %s: no tensor data given",
                          wire_body_name(env->which_body));
    }
    if (with_tensor)
        tbytes = tensor->numel * sizeof(float);
    int rc = wire_encode(env, tbytes, buf, sizeof buf, &len, err);
    if (rc < 0) {
        free_payload(tensor);
        return rc;
    }
    xport_frame_t frames[2] = {{buf, len, NULL, NULL}, {NULL, 0, NULL, NULL}};
    if (with_tensor)
        frames[1] = (xport_frame_t){tensor->data, tbytes, tensor->free_fn, tensor->hint};
    else
        free_payload(tensor); /* a payload given for a body without one is not sent */
    rc = xport_send(x, to, frames, with_tensor ? 2 : 1, err);
    if (rc < 0)
        ei_err_prefix(err, "sending %s: ", wire_body_name(env->which_body));
    return rc;
}

int wire_send_error(xport_t *x, const xport_peer_t *to, uint64_t reply_to, int code,
                    const char *message, ei_err_t *err)
{
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_error_tag);
    env.reply_to = reply_to;
    env.body.error.code = code;
    env.body.error.version = WIRE_VERSION;
    snprintf(env.body.error.message, sizeof env.body.error.message, "%s", message);
    return wire_send(x, to, &env, NULL, err);
}

int wire_refuse(xport_t *x, const wire_in_t *in, int code, const char *message, ei_err_t *err)
{
    const xport_peer_t *to = in->peer.len ? &in->peer : NULL;
    if (!in->delimited)
        return wire_send_error(x, to, in->env.seq, code, message, err);
    einet_Envelope env;
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len;
    wire_env_init(&env, einet_Envelope_error_tag);
    env.body.error.code = code;
    env.body.error.version = WIRE_VERSION;
    snprintf(env.body.error.message, sizeof env.body.error.message, "%s", message);
    int rc = wire_encode(&env, WIRE_NO_TENSOR, buf, sizeof buf, &len, err);
    if (rc < 0)
        return rc;
    xport_frame_t frames[2] = {{"", 0, NULL, NULL}, {buf, len, NULL, NULL}};
    return xport_send(x, to, frames, 2, err);
}
