/* Envelope encoding and decoding: nanopb does the bytes, wire_check the rules, and
 * wire__locate names the field when nanopb refuses. */
#include <stdio.h>
#include <string.h>

#include <pb_decode.h>
#include <pb_encode.h>

#include "wire/wire_internal.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tensor frames are little-endian float32 sent as they lie in memory"
#endif

void wire_env_init(einet_Envelope *env, pb_size_t tag)
{
    memset(env, 0, sizeof *env);
    env->version = WIRE_VERSION;
    env->which_body = tag;
}

const char *wire_body_name(pb_size_t tag)
{
    static _Thread_local char name[64]; /* a stable pointer without locks */
    if (tag == 0)
        return "none";
    /* The names are those of the .proto, read from nanopb's generated field list. */
    wire__field_name(&einet_Envelope_msg, tag, name, sizeof name);
    return strncmp(name, "field ", 6) == 0 ? "unknown" : name;
}

einet_TensorMeta *wire_env_tensor(einet_Envelope *env)
{
    switch (env->which_body) {
    case einet_Envelope_request_tag:
        return &env->body.request.input;
    case einet_Envelope_task_tag:
        return &env->body.task.input;
    case einet_Envelope_feature_map_tag:
        return &env->body.feature_map.tensor;
    }
    return NULL;
}

const einet_TensorMeta *wire_env_tensor_const(const einet_Envelope *env)
{
    return wire_env_tensor((einet_Envelope *)env);
}

void wire_meta_set(einet_TensorMeta *meta, bool *has, const uint32_t *shape, int ndim)
{
    EI_ASSERT(ndim >= 1 && ndim <= WIRE_MAX_DIMS);
    memset(meta, 0, sizeof *meta);
    meta->dtype = einet_DType_DTYPE_F32;
    meta->shape_count = (pb_size_t)ndim;
    memcpy(meta->shape, shape, (size_t)ndim * sizeof *shape);
    if (has)
        *has = true;
}

int wire_encode(const einet_Envelope *env, size_t tensor_bytes, uint8_t *buf, size_t cap,
                size_t *len, ei_err_t *err)
{
    int rc = wire_check(env, tensor_bytes, err);
    if (rc < 0)
        return ei_err_prefix(err, "encoding: ");
    pb_ostream_t s = pb_ostream_from_buffer(buf, cap);
    if (!pb_encode(&s, einet_Envelope_fields, env))
        return ei_err_set(err, EI_E_RANGE, "encoding %s: %s (buffer of %zu bytes)",
                          wire_body_name(env->which_body), PB_GET_ERROR(&s), cap);
    *len = s.bytes_written;
    return 0;
}

/* Reads version and seq without decoding the body, so that a message from a peer speaking
 * another version is refused as such (and answered with its seq) even when its body would
 * not decode here. Field numbers 1 and 2 of Envelope never change. Returns 0 when the scan
 * reached the end, -1 when the bytes stopped being protobuf before it: with no version
 * seen by then they are garbage, refused as malformed rather than as a version mismatch. */
static int prescan(const uint8_t *buf, size_t len, uint32_t *version, uint64_t *seq)
{
    pb_istream_t s = pb_istream_from_buffer(buf, len);
    *version = 0;
    *seq = 0;
    while (s.bytes_left) {
        uint32_t tag;
        pb_wire_type_t wt;
        bool eof;
        uint64_t v;
        if (!pb_decode_tag(&s, &wt, &tag, &eof) || tag == 0)
            return -1;
        if ((tag == einet_Envelope_version_tag || tag == einet_Envelope_seq_tag) &&
            wt == PB_WT_VARINT) {
            if (!pb_decode_varint(&s, &v))
                return -1;
            if (tag == einet_Envelope_version_tag)
                *version = (uint32_t)v;
            else
                *seq = v;
        } else if (!pb_skip_field(&s, wt)) {
            return -1;
        }
    }
    return 0;
}

static int decode_failed(const uint8_t *buf, size_t len, pb_istream_t *s, ei_err_t *err)
{
    char path[160];
    const char *why = PB_GET_ERROR(s);
    wire__locate(&einet_Envelope_msg, buf, len, path, sizeof path, &why);
    return ei_err_set(err, EI_E_FORMAT, "envelope%s: %s", path, why);
}

int wire_decode(const uint8_t *buf, size_t len, size_t tensor_bytes, einet_Envelope *env,
                ei_err_t *err)
{
    uint32_t version;
    uint64_t seq;
    memset(env, 0, sizeof *env);
    if (prescan(buf, len, &version, &seq) < 0 && version == 0) {
        env->seq = seq;
        return ei_err_set(err, EI_E_FORMAT, "envelope: malformed: %zu bytes that are not a "
                          "protobuf Envelope", len);
    }
    if (version == 0) {
        env->seq = seq;
        return ei_err_set(err, EI_E_VERSION, "envelope.version: missing (this is %u)",
                          WIRE_VERSION);
    }
    if (version != WIRE_VERSION) {
        env->seq = seq;
        return ei_err_set(err, EI_E_VERSION, "envelope.version: %u is not supported (this is %u)",
                          (unsigned)version, WIRE_VERSION);
    }
    if (len > WIRE_ENVELOPE_MAX) {
        env->seq = seq;
        return ei_err_set(err, EI_E_RANGE, "envelope: %zu bytes, more than the largest valid (%u)",
                          len, (unsigned)WIRE_ENVELOPE_MAX);
    }
    pb_istream_t s = pb_istream_from_buffer(buf, len);
    if (!pb_decode(&s, einet_Envelope_fields, env)) {
        memset(env, 0, sizeof *env);
        env->seq = seq;
        return decode_failed(buf, len, &s, err);
    }
    return wire_check(env, tensor_bytes, err);
}
