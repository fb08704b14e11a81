/* The self-contained Tensor message: shape, dtype and data all inside the protobuf. The
 * data field is a nanopb callback that streams the floats from and to the caller's memory,
 * because a static bytes field would be capped at 64 kB by Debian's nanopb. */
#include <string.h>

#include <pb_decode.h>
#include <pb_encode.h>

#include "wire/wire_internal.h"

typedef struct out_data {
    const float *data;
    size_t bytes;
} out_data_t;

typedef struct in_data {
    float *data;
    size_t cap_bytes;
    size_t got;
    int calls;
    int refused; /* the callback said no: the fault is in the data field */
} in_data_t;

static bool encode_data(pb_ostream_t *s, const pb_field_t *field, void *const *arg)
{
    const out_data_t *d = *arg;
    return pb_encode_tag_for_field(s, field) &&
           pb_encode_string(s, (const pb_byte_t *)d->data, d->bytes);
}

static bool decode_data(pb_istream_t *s, const pb_field_t *field, void **arg)
{
    (void)field;
    in_data_t *d = *arg;
    d->refused = 1;
    if (d->calls++)
        PB_RETURN_ERROR(s, "data given twice");
    if (s->bytes_left > d->cap_bytes)
        PB_RETURN_ERROR(s, "data larger than the caller's buffer");
    d->refused = 0;
    d->got = s->bytes_left;
    return pb_read(s, (pb_byte_t *)d->data, s->bytes_left);
}

static int check_shape(const uint32_t *shape, int ndim, const char *what, ei_err_t *err)
{
    einet_TensorMeta m = {0};
    if (ndim < 1 || ndim > WIRE_MAX_DIMS)
        return ei_err_set(err, EI_E_SHAPE, "%s.shape: %d dims (1..%d)", what, ndim, WIRE_MAX_DIMS);
    wire_meta_set(&m, NULL, shape, ndim);
    if (wire_meta_numel(&m) == 0)
        return ei_err_set(err, EI_E_SHAPE, "%s.shape: a zero dimension or over %u bytes", what,
                          WIRE_TENSOR_MAX_BYTES);
    return 0;
}

static void fill(einet_Tensor *t, const uint32_t *shape, int ndim, out_data_t *d)
{
    memset(t, 0, sizeof *t);
    t->shape_count = (pb_size_t)ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->dtype = einet_DType_DTYPE_F32;
    t->data.funcs.encode = encode_data;
    t->data.arg = d;
}

static size_t numel_of(const uint32_t *shape, int ndim)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

size_t wire_tensor_size(const uint32_t *shape, int ndim)
{
    if (check_shape(shape, ndim, "tensor", NULL) < 0)
        return 0;
    out_data_t d = {NULL, numel_of(shape, ndim) * sizeof(float)};
    einet_Tensor t;
    fill(&t, shape, ndim, &d);
    pb_ostream_t s = PB_OSTREAM_SIZING;
    /* A sizing stream never writes, so the NULL data is not read. */
    return pb_encode(&s, einet_Tensor_fields, &t) ? s.bytes_written : 0;
}

int wire_tensor_encode(const uint32_t *shape, int ndim, const float *data, uint8_t *buf, size_t cap,
                       size_t *len, ei_err_t *err)
{
    int rc = check_shape(shape, ndim, "tensor", err);
    if (rc < 0)
        return rc;
    out_data_t d = {data, numel_of(shape, ndim) * sizeof(float)};
    einet_Tensor t;
    fill(&t, shape, ndim, &d);
    pb_ostream_t s = pb_ostream_from_buffer(buf, cap);
    if (!pb_encode(&s, einet_Tensor_fields, &t))
        return ei_err_set(err, EI_E_RANGE, "encoding tensor: %s (buffer of %zu bytes)",
                          PB_GET_ERROR(&s), cap);
    *len = s.bytes_written;
    return 0;
}

static int decoded_ok(const einet_Tensor *t, const in_data_t *d, ei_err_t *err)
{
    if (t->dtype != einet_DType_DTYPE_F32)
        return ei_err_set(err, EI_E_FORMAT, "tensor.dtype: %d is not float32", (int)t->dtype);
    int rc = check_shape(t->shape, t->shape_count, "tensor", err);
    if (rc < 0)
        return rc;
    size_t want = numel_of(t->shape, t->shape_count) * sizeof(float);
    if (d->got != want)
        return ei_err_set(err, EI_E_SHAPE, "tensor.data: %zu bytes, the shape promises %zu", d->got,
                          want);
    return 0;
}

int wire_tensor_decode(const uint8_t *buf, size_t len, uint32_t *shape, int *ndim, float *data,
                       size_t cap, ei_err_t *err)
{
    in_data_t d = {data, cap * sizeof(float), 0, 0, 0};
    einet_Tensor t;
    memset(&t, 0, sizeof t);
    t.data.funcs.decode = decode_data;
    t.data.arg = &d;
    pb_istream_t s = pb_istream_from_buffer(buf, len);
    if (!pb_decode(&s, einet_Tensor_fields, &t)) {
        char path[96] = "";
        const char *why = PB_GET_ERROR(&s);
        /* The locator decodes without our callback, so a data fault is named here. */
        if (d.refused)
            strcpy(path, ".data");
        else
            wire__locate(&einet_Tensor_msg, buf, len, path, sizeof path, &why);
        return ei_err_set(err, EI_E_FORMAT, "tensor%s: %s", path, why);
    }
    int rc = decoded_ok(&t, &d, err);
    if (rc < 0)
        return rc;
    *ndim = t.shape_count;
    memcpy(shape, t.shape, t.shape_count * sizeof *shape);
    return 0;
}
