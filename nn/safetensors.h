/* Model files in the safetensors format: an 8-byte little-endian header length, a JSON
 * header {"name": {"dtype":"F32","shape":[...],"data_offsets":[b,e]}, ...,
 * "__metadata__": {"key":"string", ...}}, then the raw little-endian tensor bytes.
 * Any safetensors reader opens what this writes. Only F32 tensors are written or read. */
#ifndef NN_SAFETENSORS_H
#define NN_SAFETENSORS_H

#include <stdint.h>

#include "../common/ei.h"

#define NN_ST_MAX_DIMS 4

typedef struct nn_st_entry {
    const char *name;
    int ndim;
    int64_t shape[NN_ST_MAX_DIMS];
    const float *data; /* numel floats */
} nn_st_entry_t;

typedef struct nn_st_meta {
    const char *key;
    const char *value;
} nn_st_meta_t;

/* Writes the entries (in the given order) and the metadata to path, atomically (a temp
 * file renamed over path). Returns 0 or a negative code with err set. */
int nn_st_write(const char *path, const nn_st_entry_t *entries, int count,
                const nn_st_meta_t *meta, int nmeta, ei_err_t *err) EI_CHECK;

typedef struct nn_st_file nn_st_file_t;

/* Reads and validates a whole file: header length within the file, header valid JSON
 * object, every entry with dtype F32, 1..4 non-negative dims, data_offsets in bounds,
 * matching numel*4, entries contiguous and non-overlapping and covering the data area,
 * metadata values strings. Any violation fails with EI_E_FORMAT and a message naming the
 * file and the entry. Caller owns the result. */
nn_st_file_t *nn_st_open(const char *path, ei_err_t *err);
void nn_st_close(nn_st_file_t **self_p);

/* Metadata value for key, or NULL. Owned by the file. */
const char *nn_st_meta(const nn_st_file_t *self, const char *key);

int nn_st_count(const nn_st_file_t *self);
/* Entry i (0..count-1), in file offset order; the data pointer points into the file's
 * buffer (owned by the file, aligned for float). */
const nn_st_entry_t *nn_st_entry(const nn_st_file_t *self, int i);
const nn_st_entry_t *nn_st_find(const nn_st_file_t *self, const char *name);

/* Copies tensor name into dst after checking that it exists and its shape equals
 * shape[0..ndim-1]; errors say "tensor 'blocks.0.conv.0.weight': expected shape [16,1,3,3],
 * found [16,1,5,5]" or "missing tensor ...". */
int nn_st_read(const nn_st_file_t *self, const char *name, const int64_t *shape, int ndim,
               float *dst, ei_err_t *err) EI_CHECK;

#endif
