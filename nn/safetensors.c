/* Model files in the safetensors format: a validating reader that trusts nothing in the
 * file, and an atomic writer whose output any safetensors reader accepts. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A header longer than this is corrupt or hostile; real headers are a few kilobytes. */
#define ST_MAX_HEADER (100u * 1024 * 1024)
/* Data areas are moved to the start of a buffer with this alignment (enough for SIMD). */
#define ST_ALIGN 64

struct nn_st_file {
    char *path;
    int count;
    nn_st_entry_t *entries; /* in file offset order; names owned, data into buf */
    int nmeta;
    nn_st_meta_t *meta; /* keys and values owned */
    void *buf;          /* the whole file; the data area moved to its start */
};

/* One entry while the header is validated: its offsets travel with it through the sort. */
typedef struct st_slot {
    nn_st_entry_t e;
    uint64_t begin, end;
} st_slot_t;

static void st_assert_little_endian(void)
{
    /* The data area is little-endian; we copy it as is, so the host must be too. */
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    EI_ASSERT(b == 1);
}

/* Sets err to "path: <message>" and returns code. */
static int st_fail(ei_err_t *err, const char *path, int code, const char *fmt, ...) EI_PRINTF(4, 5);
static int st_fail(ei_err_t *err, const char *path, int code, const char *fmt, ...)
{
    char msg[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ei_err_set(err, code, "%s: %s", path, msg);
}

/* Writes "[16,1,3,3]" into out (truncated to n bytes). */
static const char *st_shape_str(char *out, size_t n, const int64_t *shape, int ndim)
{
    size_t len = 0;
    len += (size_t)snprintf(out, n, "[");
    for (int i = 0; i < ndim && len < n; i++)
        len += (size_t)snprintf(out + len, n - len, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (len < n)
        snprintf(out + len, n - len, "]");
    return out;
}

/* Product of the dims times sizeof(float), or -1 when it does not fit in 63 bits. */
static int64_t st_nbytes(const int64_t *shape, int ndim)
{
    int64_t n = (int64_t)sizeof(float);
    for (int i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(n, shape[i], &n))
            return -1;
    return n;
}

/* ---------------------------------------------------------------- reading */

static void st_slots_free(st_slot_t *slots, int n)
{
    for (int i = 0; i < n; i++)
        free((char *)slots[i].e.name);
    free(slots);
}

/* Reads a non-negative JSON integer. */
static int st_json_uint(const json_t *v, int64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (int64_t)json_integer_value(v);
    return 0;
}

static int st_parse_shape(const char *path, const char *name, const json_t *jshape, st_slot_t *s,
                          ei_err_t *err)
{
    if (!json_is_array(jshape))
        return st_fail(err, path, EI_E_FORMAT, "tensor '%s': 'shape' is missing or not an array",
                       name);
    size_t nd = json_array_size(jshape);
    if (nd < 1 || nd > NN_ST_MAX_DIMS)
        return st_fail(err, path, EI_E_FORMAT,
                       "tensor '%s': shape has %zu dims, only 1..%d are supported", name, nd,
                       NN_ST_MAX_DIMS);
    s->e.ndim = (int)nd;
    for (size_t i = 0; i < nd; i++) {
        const json_t *d = json_array_get(jshape, i);
        if (!json_is_integer(d))
            return st_fail(err, path, EI_E_FORMAT, "tensor '%s': shape dim %zu is not an integer",
                           name, i);
        if (json_integer_value(d) < 0)
            return st_fail(err, path, EI_E_FORMAT, "tensor '%s': shape dim %zu is negative (%lld)",
                           name, i, (long long)json_integer_value(d));
        s->e.shape[i] = (int64_t)json_integer_value(d);
    }
    return 0;
}

static int st_parse_entry(const char *path, const char *name, const json_t *info, st_slot_t *s,
                          ei_err_t *err)
{
    char sh[128];
    if (!json_is_object(info))
        return st_fail(err, path, EI_E_FORMAT, "tensor '%s': entry is not a JSON object", name);
    const json_t *dtype = json_object_get(info, "dtype");
    if (!json_is_string(dtype))
        return st_fail(err, path, EI_E_FORMAT, "tensor '%s': 'dtype' is missing or not a string",
                       name);
    if (strcmp(json_string_value(dtype), "F32") != 0)
        return st_fail(err, path, EI_E_FORMAT,
                       "tensor '%s': unsupported dtype '%s' (only F32 is supported)", name,
                       json_string_value(dtype));
    int rc = st_parse_shape(path, name, json_object_get(info, "shape"), s, err);
    if (rc)
        return rc;
    const json_t *offs = json_object_get(info, "data_offsets");
    int64_t b, e;
    if (!json_is_array(offs) || json_array_size(offs) != 2 ||
        st_json_uint(json_array_get(offs, 0), &b) || st_json_uint(json_array_get(offs, 1), &e))
        return st_fail(err, path, EI_E_FORMAT,
                       "tensor '%s': 'data_offsets' is not an array of two non-negative integers",
                       name);
    if (b > e)
        return st_fail(err, path, EI_E_FORMAT,
                       "tensor '%s': data_offsets [%lld,%lld] end before they begin", name,
                       (long long)b, (long long)e);
    int64_t nbytes = st_nbytes(s->e.shape, s->e.ndim);
    st_shape_str(sh, sizeof sh, s->e.shape, s->e.ndim);
    if (nbytes < 0)
        return st_fail(err, path, EI_E_FORMAT, "tensor '%s': shape %s is too large", name, sh);
    if (e - b != nbytes)
        return st_fail(err, path, EI_E_FORMAT,
                       "tensor '%s': data_offsets [%lld,%lld] do not match shape %s x F32 "
                       "(%lld bytes)",
                       name, (long long)b, (long long)e, sh, (long long)nbytes);
    s->begin = (uint64_t)b;
    s->end = (uint64_t)e;
    return 0;
}

static int st_parse_meta(nn_st_file_t *f, const json_t *jmeta, ei_err_t *err)
{
    if (!json_is_object(jmeta))
        return st_fail(err, f->path, EI_E_FORMAT, "'__metadata__' is not a JSON object");
    f->meta = ei_calloc(json_object_size(jmeta), sizeof *f->meta);
    if (!f->meta)
        return st_fail(err, f->path, EI_E_NOMEM, "out of memory for metadata");
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)jmeta, key, v)
    {
        if (!json_is_string(v))
            return st_fail(err, f->path, EI_E_FORMAT, "metadata '%s': value is not a string", key);
        nn_st_meta_t *m = &f->meta[f->nmeta];
        m->key = strdup(key);
        m->value = strdup(json_string_value(v));
        f->nmeta++; /* counted before the check so close frees a half-made pair */
        if (!m->key || !m->value)
            return st_fail(err, f->path, EI_E_NOMEM, "out of memory for metadata");
    }
    return 0;
}

static int st_slot_cmp(const void *pa, const void *pb)
{
    const st_slot_t *a = pa, *b = pb;
    if (a->begin != b->begin)
        return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end)
        return a->end < b->end ? -1 : 1;
    return strcmp(a->e.name, b->e.name);
}

/* Checks that the sorted entries tile [0, data_size) exactly. */
static int st_check_layout(const char *path, const st_slot_t *s, int n, uint64_t data_size,
                           ei_err_t *err)
{
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        if (s[i].begin < at)
            return st_fail(err, path, EI_E_FORMAT,
                           "tensor '%s': data_offsets [%llu,%llu] overlap tensor '%s' [%llu,%llu]",
                           s[i].e.name, (unsigned long long)s[i].begin,
                           (unsigned long long)s[i].end, s[i - 1].e.name,
                           (unsigned long long)s[i - 1].begin, (unsigned long long)s[i - 1].end);
        if (s[i].begin > at)
            return st_fail(err, path, EI_E_FORMAT,
                           "tensor '%s': data_offsets [%llu,%llu] leave a gap: the previous data "
                           "ends at %llu",
                           s[i].e.name, (unsigned long long)s[i].begin,
                           (unsigned long long)s[i].end, (unsigned long long)at);
        at = s[i].end;
    }
    if (at > data_size)
        return st_fail(err, path, EI_E_FORMAT,
                       "truncated: header says %llu bytes of data, file has %llu",
                       (unsigned long long)at, (unsigned long long)data_size);
    if (at < data_size)
        return st_fail(err, path, EI_E_FORMAT,
                       "%llu bytes of data after the last tensor (header covers %llu of %llu)",
                       (unsigned long long)(data_size - at), (unsigned long long)at,
                       (unsigned long long)data_size);
    return 0;
}

/* Validates the parsed header and fills f's entries and metadata (data pointers not yet
 * set: the slots' offsets are returned sorted through *slots_p). */
static int st_parse_header(nn_st_file_t *f, const json_t *root, uint64_t data_size,
                           st_slot_t **slots_p, ei_err_t *err)
{
    if (!json_is_object(root))
        return st_fail(err, f->path, EI_E_FORMAT, "header is not a JSON object");
    size_t n = json_object_size(root);
    st_slot_t *slots = ei_calloc(n, sizeof *slots);
    if (!slots)
        return st_fail(err, f->path, EI_E_NOMEM, "out of memory for %zu header entries", n);
    int count = 0, rc = 0;
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)root, key, v)
    {
        if (strcmp(key, "__metadata__") == 0) {
            rc = st_parse_meta(f, v, err);
        } else {
            st_slot_t *s = &slots[count];
            rc = st_parse_entry(f->path, key, v, s, err);
            if (!rc && !(s->e.name = strdup(key)))
                rc = st_fail(err, f->path, EI_E_NOMEM, "out of memory for tensor names");
            count += !rc;
        }
        if (rc)
            break;
    }
    if (!rc) {
        qsort(slots, (size_t)count, sizeof *slots, st_slot_cmp);
        rc = st_check_layout(f->path, slots, count, data_size, err);
    }
    if (rc) {
        st_slots_free(slots, count);
        return rc;
    }
    f->count = count;
    *slots_p = slots;
    return 0;
}

/* Reads the whole of path into a buffer aligned for floats. */
static int st_read_file(const char *path, void **buf_p, uint64_t *size_p, ei_err_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return st_fail(err, path, errno == ENOENT ? EI_E_NOTFOUND : EI_E_IO, "cannot open: %s",
                       strerror(errno));
    struct stat st;
    int rc = 0;
    void *buf = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = st_fail(err, path, EI_E_IO, "not a readable regular file");
        goto out;
    }
    size_t size = (size_t)st.st_size;
    if (posix_memalign(&buf, ST_ALIGN, size ? size : 1) != 0) {
        buf = NULL;
        rc = st_fail(err, path, EI_E_NOMEM, "out of memory for %zu bytes", size);
        goto out;
    }
    for (size_t got = 0; got < size;) {
        ssize_t r = read(fd, (char *)buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = st_fail(err, path, EI_E_IO, "read failed after %zu of %zu bytes: %s", got, size,
                         r < 0 ? strerror(errno) : "file shrank");
            goto out;
        }
        got += (size_t)r;
    }
    *buf_p = buf;
    *size_p = size;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return rc;
}

/* Parses the header of the file image in f->buf and points the entries at their data. */
static int st_parse(nn_st_file_t *f, uint64_t size, ei_err_t *err)
{
    const unsigned char *p = f->buf;
    if (size < 8)
        return st_fail(err, f->path, EI_E_FORMAT,
                       "truncated: file is %llu bytes, shorter than the 8-byte header length",
                       (unsigned long long)size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | p[i];
    if (hlen > ST_MAX_HEADER)
        return st_fail(err, f->path, EI_E_FORMAT, "header length %llu exceeds the limit of %u",
                       (unsigned long long)hlen, ST_MAX_HEADER);
    if (hlen > size - 8)
        return st_fail(err, f->path, EI_E_FORMAT,
                       "truncated: header length is %llu bytes, file has %llu after the length",
                       (unsigned long long)hlen, (unsigned long long)(size - 8));
    json_error_t jerr;
    json_t *root = json_loadb((const char *)p + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return st_fail(err, f->path, EI_E_FORMAT,
                       "header is not valid JSON at line %d column %d: %s", jerr.line, jerr.column,
                       jerr.text);
    uint64_t data_size = size - 8 - hlen;
    st_slot_t *slots = NULL;
    int rc = st_parse_header(f, root, data_size, &slots, err);
    json_decref(root);
    if (rc)
        return rc;
    f->entries = ei_calloc((size_t)f->count, sizeof *f->entries);
    if (!f->entries) {
        st_slots_free(slots, f->count);
        f->count = 0;
        return st_fail(err, f->path, EI_E_NOMEM, "out of memory for the entries");
    }
    /* Moving the data area to the buffer's start aligns every tensor: offsets are
     * contiguous multiples of 4 from 0. */
    memmove(f->buf, p + 8 + hlen, (size_t)data_size);
    for (int i = 0; i < f->count; i++) {
        EI_ASSERT(slots[i].begin % sizeof(float) == 0);
        f->entries[i] = slots[i].e;
        f->entries[i].data = (const float *)((char *)f->buf + slots[i].begin);
    }
    free(slots); /* names now owned by entries */
    return 0;
}

nn_st_file_t *nn_st_open(const char *path, ei_err_t *err)
{
    st_assert_little_endian();
    EI_ASSERT(path);
    nn_st_file_t *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        st_fail(err, path, EI_E_NOMEM, "out of memory");
        goto fail;
    }
    uint64_t size = 0;
    if (st_read_file(path, &f->buf, &size, err) != 0 || st_parse(f, size, err) != 0)
        goto fail;
    return f;
fail:
    nn_st_close(&f);
    return NULL;
}

void nn_st_close(nn_st_file_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    nn_st_file_t *f = *self_p;
    for (int i = 0; i < f->count; i++)
        free((char *)f->entries[i].name);
    free(f->entries);
    for (int i = 0; i < f->nmeta; i++) {
        free((char *)f->meta[i].key);
        free((char *)f->meta[i].value);
    }
    free(f->meta);
    free(f->buf);
    free(f->path);
    free(f);
    *self_p = NULL;
}

const char *nn_st_meta(const nn_st_file_t *self, const char *key)
{
    for (int i = 0; i < self->nmeta; i++)
        if (strcmp(self->meta[i].key, key) == 0)
            return self->meta[i].value;
    return NULL;
}

int nn_st_count(const nn_st_file_t *self)
{
    return self->count;
}

const nn_st_entry_t *nn_st_entry(const nn_st_file_t *self, int i)
{
    EI_ASSERT(i >= 0 && i < self->count);
    return &self->entries[i];
}

const nn_st_entry_t *nn_st_find(const nn_st_file_t *self, const char *name)
{
    for (int i = 0; i < self->count; i++)
        if (strcmp(self->entries[i].name, name) == 0)
            return &self->entries[i];
    return NULL;
}

int nn_st_read(const nn_st_file_t *self, const char *name, const int64_t *shape, int ndim,
               float *dst, ei_err_t *err)
{
    EI_ASSERT(ndim >= 0 && ndim <= NN_ST_MAX_DIMS);
    const nn_st_entry_t *e = nn_st_find(self, name);
    if (!e)
        return st_fail(err, self->path, EI_E_NOTFOUND, "missing tensor '%s'", name);
    int same = e->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = e->shape[i] == shape[i];
    if (!same) {
        char want[128], got[128];
        return st_fail(err, self->path, EI_E_SHAPE, "tensor '%s': expected shape %s, found %s",
                       name, st_shape_str(want, sizeof want, shape, ndim),
                       st_shape_str(got, sizeof got, e->shape, e->ndim));
    }
    int64_t nbytes = st_nbytes(e->shape, e->ndim);
    if (nbytes > 0)
        memcpy(dst, e->data, (size_t)nbytes);
    return 0;
}

/* ---------------------------------------------------------------- writing */

/* {"dtype":"F32","shape":[...],"data_offsets":[begin,end]}, or NULL when out of memory. */
static json_t *st_entry_json(const nn_st_entry_t *e, int64_t begin, int64_t end)
{
    json_t *shape = json_array();
    for (int d = 0; shape && d < e->ndim; d++)
        if (json_array_append_new(shape, json_integer((json_int_t)e->shape[d])) != 0) {
            json_decref(shape);
            shape = NULL;
        }
    if (!shape)
        return NULL;
    return json_pack("{s:s, s:o, s:[I,I]}", "dtype", "F32", "shape", shape, "data_offsets",
                     (json_int_t)begin, (json_int_t)end);
}

/* Checks the caller's entries and builds the JSON header for them. */
static int st_build_header(const char *path, const nn_st_entry_t *entries, int count,
                           const nn_st_meta_t *meta, int nmeta, json_t **root_p, ei_err_t *err)
{
    json_t *root = json_object(), *jm = nmeta > 0 ? json_object() : NULL;
    int rc = 0;
    if (!root || (nmeta > 0 && (!jm || json_object_set(root, "__metadata__", jm) != 0))) {
        rc = st_fail(err, path, EI_E_NOMEM, "out of memory building the header");
        goto out;
    }
    for (int i = 0; i < nmeta && !rc; i++) {
        if (!meta[i].key || !meta[i].value || json_object_get(jm, meta[i].key))
            rc = st_fail(err, path, EI_E_INVAL, "metadata %d: key or value missing or repeated", i);
        else if (json_object_set_new(jm, meta[i].key, json_string(meta[i].value)) != 0)
            rc = st_fail(err, path, EI_E_INVAL, "metadata '%s': not valid UTF-8", meta[i].key);
    }
    int64_t at = 0;
    for (int i = 0; i < count && !rc; i++) {
        const nn_st_entry_t *e = &entries[i];
        const char *name = e->name ? e->name : "(null)";
        int64_t nbytes =
            e->ndim >= 1 && e->ndim <= NN_ST_MAX_DIMS ? st_nbytes(e->shape, e->ndim) : -1;
        for (int d = 0; nbytes >= 0 && d < e->ndim; d++)
            if (e->shape[d] < 0)
                nbytes = -1;
        if (!e->name || strcmp(name, "__metadata__") == 0 || json_object_get(root, name)) {
            rc = st_fail(err, path, EI_E_INVAL,
                         "tensor %d '%s': name missing, reserved or repeated", i, name);
            break;
        }
        if (nbytes < 0 || (nbytes > 0 && !e->data)) {
            rc = st_fail(err, path, EI_E_INVAL, "tensor '%s': bad shape or no data", name);
            break;
        }
        json_t *jname = json_string(name); /* NULL when the name is not valid UTF-8 */
        if (!jname) {
            rc = st_fail(err, path, EI_E_INVAL, "tensor %d: name is not valid UTF-8", i);
            break;
        }
        json_decref(jname);
        json_t *info = st_entry_json(e, at, at + nbytes);
        if (!info || json_object_set_new(root, name, info) != 0)
            rc = st_fail(err, path, EI_E_NOMEM, "out of memory building the header");
        at += nbytes;
    }
out:
    json_decref(jm);
    if (rc)
        json_decref(root);
    else
        *root_p = root;
    return rc;
}

static int st_write_all(FILE *fp, const nn_st_entry_t *entries, int count, const char *header,
                        size_t hlen)
{
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    if (fwrite(len, 1, 8, fp) != 8 || fwrite(header, 1, hlen, fp) != hlen)
        return -1;
    for (int i = 0; i < count; i++) {
        size_t nbytes = (size_t)st_nbytes(entries[i].shape, entries[i].ndim);
        if (nbytes && fwrite(entries[i].data, 1, nbytes, fp) != nbytes)
            return -1;
    }
    if (fflush(fp) != 0 || fsync(fileno(fp)) != 0)
        return -1;
    return 0;
}

int nn_st_write(const char *path, const nn_st_entry_t *entries, int count, const nn_st_meta_t *meta,
                int nmeta, ei_err_t *err)
{
    st_assert_little_endian();
    EI_ASSERT(path && count >= 0 && nmeta >= 0 && (entries || !count) && (meta || !nmeta));
    json_t *root = NULL;
    int rc = st_build_header(path, entries, count, meta, nmeta, &root, err);
    if (rc)
        return rc;
    char *json = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    size_t jlen = json ? strlen(json) : 0, hlen = (jlen + 7) / 8 * 8;
    char *header = json ? malloc(hlen) : NULL;
    size_t plen = strlen(path) + 16;
    char *tmp = malloc(plen);
    if (!header || !tmp) {
        rc = st_fail(err, path, EI_E_NOMEM, "out of memory writing the header");
        goto out;
    }
    /* Padding with spaces to a multiple of 8, as the reference writer does. */
    memcpy(header, json, jlen);
    memset(header + jlen, ' ', hlen - jlen);
    snprintf(tmp, plen, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        rc = st_fail(err, path, EI_E_IO, "cannot create a temp file: %s", strerror(errno));
        goto out;
    }
    int bad = 0, saved = 0;
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        bad = 1, saved = errno;
        close(fd);
    } else {
        bad = fchmod(fd, 0644) != 0 || st_write_all(fp, entries, count, header, hlen) != 0;
        saved = errno;
        if (fclose(fp) != 0 && !bad)
            bad = 1, saved = errno;
    }
    if (!bad && rename(tmp, path) != 0)
        bad = 1, saved = errno;
    if (bad) {
        unlink(tmp);
        rc = st_fail(err, path, EI_E_IO, "write failed: %s", strerror(saved));
    }
out:
    free(tmp);
    free(header);
    free(json);
    return rc;
}
