/* wire: einet's messages on the wire. Encodes and decodes the Envelope of
 * proto/messages.proto (one version field and one body) with nanopb, checks every decoded
 * message against the protocol's rules (enums, indices, probabilities, tensor shapes), and
 * sends and receives whole messages through xport: the envelope frame, then the tensor's
 * raw bytes as a separate frame for the bodies that carry one (docs/protocol.md).
 *
 * Callers fill and read the generated structs (einet_Envelope, einet_FeatureMap, ...)
 * directly; every error names the body and field ("feature_map.seen[2].probs: array
 * overflow", "exit_result.confidence: 1.5 is not a probability"). */
#ifndef WIRE_WIRE_H
#define WIRE_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "common/ei.h"
#include "proto/messages.pb.h"
#include "proto/tensor.pb.h"
#include "wire/sec.h"
#include "wire/xport.h"

#define WIRE_VERSION einet_Protocol_PROTOCOL_VERSION /* proto/messages.proto */

/* Limits of the protocol; proto/messages.options holds the same numbers. */
#define WIRE_MAX_BLOCKS 128
#define WIRE_MAX_CLASSES 16
#define WIRE_MAX_DIMS 4
#define WIRE_TENSOR_MAX_BYTES (4u << 20) /* 1 Mi floats: far above any feature map */
#define WIRE_ENVELOPE_MAX einet_Envelope_size
#define WIRE_MAX_DEADLINE_MS 3600000u
#define WIRE_MAX_BATCH 256 /* messages in one Batch (proto/messages.options) */
/* A batch's payload frame at most: below xport's largest incoming frame (XPORT_MAXMSGSIZE). */
#define WIRE_BATCH_MAX_BYTES (6u << 20)
#define WIRE_BATCH_ALIGN 8

/* Passed as tensor_bytes when a message has no tensor frame. */
#define WIRE_NO_TENSOR ((size_t)-1)

/* Zeroes env and makes it a body of kind `tag` (einet_Envelope_feature_map_tag, ...) at
 * WIRE_VERSION. */
void wire_env_init(einet_Envelope *env, pb_size_t tag);

/* The body's name as in errors and docs ("feature_map"); "none" for 0, "unknown" else. */
const char *wire_body_name(pb_size_t tag);

/* The TensorMeta the body carries (request.input, task.input, feature_map.tensor), NULL
 * for bodies that carry none. The pointer is into env. */
einet_TensorMeta *wire_env_tensor(einet_Envelope *env);
const einet_TensorMeta *wire_env_tensor_const(const einet_Envelope *env);

/* Sets a tensor description (float32) and its presence flag; ndim 1..WIRE_MAX_DIMS. */
void wire_meta_set(einet_TensorMeta *meta, bool *has, const uint32_t *shape, int ndim);

/* Number of floats the description promises; 0 when a dimension is 0 or the size exceeds
 * WIRE_TENSOR_MAX_BYTES. */
size_t wire_meta_numel(const einet_TensorMeta *meta);

/* 1 when the description is one sample of shape (c, h, w): [c, h, w] or [1, c, h, w].
 * Otherwise 0, with "shape [..], expected [1,c,h,w]" in why[0..cap). */
int wire_meta_is_sample(const einet_TensorMeta *meta, int c, int h, int w, char *why,
                        size_t cap);

/* Checks env against the protocol's rules, tensor_bytes being the size of the tensor frame
 * that goes with it (WIRE_NO_TENSOR: none). Both encode and decode run it, so a message
 * that decodes is one that encodes. 0 or EI_E_FORMAT / EI_E_RANGE / EI_E_SHAPE /
 * EI_E_VERSION with the field named in *err. */
int wire_check(const einet_Envelope *env, size_t tensor_bytes, ei_err_t *err) EI_CHECK;

/* Encodes env into buf[0..cap) after wire_check; *len gets the size. cap >=
 * WIRE_ENVELOPE_MAX always suffices. 0 or a negative code. */
int wire_encode(const einet_Envelope *env, size_t tensor_bytes, uint8_t *buf, size_t cap,
                size_t *len, ei_err_t *err) EI_CHECK;

/* Decodes an envelope frame and checks it (as wire_check). On failure env->seq holds the
 * sender's seq when it could be read, for the error reply's reply_to. EI_E_VERSION for a
 * version other than WIRE_VERSION (version 0 = missing), EI_E_RANGE for a frame larger
 * than WIRE_ENVELOPE_MAX, EI_E_FORMAT for bad protobuf, EI_E_SHAPE when the tensor frame's
 * size disagrees with the shape. */
int wire_decode(const uint8_t *buf, size_t len, size_t tensor_bytes, einet_Envelope *env,
                ei_err_t *err) EI_CHECK;

/* A received message, decoded. tensor points into the xport message (no copy unless
 * ZeroMQ handed the frame misaligned), so it lives as long as that message. */
typedef struct wire_in {
    einet_Envelope env;
    const float *tensor; /* NULL when the body carries no tensor */
    size_t tensor_numel;
    xport_peer_t peer; /* the sender's routing id on a ROUTER: where replies go, never who */
    sec_peer_t who;    /* who sent it, as its key proved (empty on a keyless socket) */
    int delimited;     /* an empty first frame came (a REQ socket): refused; see wire_refuse */
    const uint8_t *payload; /* a Batch body: its payload frame (aligned), else NULL */
    size_t payload_bytes;
} wire_in_t;

/* Decodes msg (1 or 2 frames) into *in. On failure in->peer and, when readable,
 * in->env.seq are still set so the caller can send an error reply. */
int wire_recv(xport_msg_t *msg, wire_in_t *in, ei_err_t *err) EI_CHECK;

/* The tensor that goes with a message being sent. data is copied unless free_fn is set
 * (then xport owns it from the call on, see xport_frame_t). */
typedef struct wire_payload {
    const float *data;
    size_t numel;
    xport_free_fn *free_fn;
    void *hint;
} wire_payload_t;

/* Checks, encodes and sends env, plus tensor as the second frame when the body carries
 * one (tensor must then be non-NULL and match the shape). `to` is the peer on a ROUTER.
 * 0, EI_E_BUSY / EI_E_PEER when ZeroMQ would not take it now (see xport_send), or a check
 * error. */
int wire_send(xport_t *x, const xport_peer_t *to, const einet_Envelope *env,
              const wire_payload_t *tensor, ei_err_t *err) EI_CHECK;

/* The Error reply to a message refused by wire_recv or its handler: wire_send_error to the
 * sender, with an empty delimiter frame first when the message came from a REQ socket, so
 * that socket reads the refusal instead of waiting forever. */
int wire_refuse(xport_t *x, const wire_in_t *in, int code, const char *message, ei_err_t *err);

/* Sends an Error body with code and message (truncated to fit), answering seq reply_to. */
int wire_send_error(xport_t *x, const xport_peer_t *to, uint64_t reply_to, int code,
                    const char *message, ei_err_t *err) EI_CHECK;

/* A self-contained Tensor message (shape, dtype, data inside; see proto/tensor.proto).
 * wire_tensor_size gives the encoded size of a tensor of that shape. decode writes the data
 * into data[0..cap) floats and refuses a tensor that does not fit or whose data disagrees
 * with its shape; *ndim and shape[0..WIRE_MAX_DIMS) get the shape. */
size_t wire_tensor_size(const uint32_t *shape, int ndim);
int wire_tensor_encode(const uint32_t *shape, int ndim, const float *data, uint8_t *buf, size_t cap,
                       size_t *len, ei_err_t *err) EI_CHECK;
int wire_tensor_decode(const uint8_t *buf, size_t len, uint32_t *shape, int *ndim, float *data,
                       size_t cap, ei_err_t *err) EI_CHECK;

/* ---- batches (proto/messages.proto, Batch) ----
 * A sender appends encoded messages to a wire_batch_out_t and sends them as one ZeroMQ
 * message; a receiver's wire_recv checks the batch's layout (count, sizes, the payload
 * frame's length) and wire_batch_next hands out its messages one at a time, each decoded and
 * checked as wire_recv would a message that came alone. */

/* A batch being built. Zero-initialise it; wire_batch_free releases its buffer. */
typedef struct wire_batch_out {
    uint8_t *buf; /* the payload so far */
    size_t len, cap;
    einet_Batch hdr;
} wire_batch_out_t;

/* Appends one message: its encoded envelope env[0..env_len) and, when its body carries
 * one, its tensor frame tensor[0..tensor_bytes) (NULL, 0: none); both are copied. 0;
 * EI_E_RANGE when the batch is full (WIRE_MAX_BATCH messages, or WIRE_BATCH_MAX_BYTES with
 * this one): send it first; EI_E_NOMEM. */
int wire_batch_add(wire_batch_out_t *b, const void *env, size_t env_len, const void *tensor,
                   size_t tensor_bytes, ei_err_t *err) EI_CHECK;

/* Message i of the batch being built: its envelope and tensor frames (*tensor NULL: none). */
void wire_batch_item(const wire_batch_out_t *b, int i, const uint8_t **env, size_t *env_len,
                     const float **tensor, size_t *tensor_bytes);

/* Sends what the batch holds to `to` (as wire_send): one message as itself, several as one
 * Batch message with envelope seq `seq`; nothing when it is empty. The batch keeps its
 * messages (wire_batch_item reads them after a refused send) until wire_batch_clear.
 * 0 or xport_send's codes. */
int wire_batch_send(xport_t *x, const xport_peer_t *to, const wire_batch_out_t *b, uint64_t seq,
                    ei_err_t *err) EI_CHECK;

void wire_batch_clear(wire_batch_out_t *b);
void wire_batch_free(wire_batch_out_t *b);

/* Where the reading of a received batch is. Zero-initialise it. */
typedef struct wire_batch_it {
    int i;      /* the next message */
    size_t off; /* its offset in the payload */
} wire_batch_it_t;

/* The next message of the batch in *batch (as wire_recv gave it) decoded into *item, with
 * the batch's sender (peer, key) and item->tensor pointing into the batch's payload (it
 * lives as long as the batch's xport message). 1 when a message came, 0 at the end, or a
 * negative code with the error in *err ("batch message 2 of 5: feature_map.tensor: ...",
 * item->env.seq set when readable): that message is refused, the following ones can still
 * be read. A body that may not travel in a batch (anything but exit_result, cancel, fault,
 * moved, feature_map, taken and task; a batch inside one) is refused with EI_E_FORMAT. */
int wire_batch_next(const wire_in_t *batch, wire_batch_it_t *it, wire_in_t *item,
                    ei_err_t *err) EI_CHECK;

/* Stop rules (StopRule) as written on the command line and in config files: "none",
 * "confidence:T", "entropy:T" or "einet:A", the number in [0, 1] (docs/elastic.md, "Stop
 * rules"). parse: 0, or -1 with why[0..cap) saying what was expected. format writes the
 * same text back ("none" for kind none); kind_name gives "none", "confidence", ... */
int wire_stop_parse(const char *text, einet_StopRule *rule, char *why, size_t cap) EI_CHECK;
void wire_stop_format(const einet_StopRule *rule, char *buf, size_t cap);
const char *wire_stop_kind_name(int kind);

#endif
