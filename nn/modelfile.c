/* Model files: the model's tensors in safetensors with the architecture JSON in the
 * metadata ("format": "einet-model", "version": "1", "arch": ..., "info": ...). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn_internal.h"
#include "safetensors.h"

#define MODEL_FORMAT "einet-model"
#define MODEL_VERSION "1"

/* A parameter's shape as PyTorch has it: the leading ndim of (n, c, h, w), so a 1x1 conv
 * weight stays [out, in, 1, 1] and a bias is [out]. */
static int param_shape(const nn_param_t *p, int64_t *dims)
{
    const nn_tensor_t *t = p->value;
    dims[0] = t->n, dims[1] = t->c, dims[2] = t->h, dims[3] = t->w;
    return p->ndim;
}

typedef struct {
    nn_st_entry_t *entries;
    char (*names)[128];
    int count, cap;
} collect_t;

static void collect(const char *name, nn_param_t *p, void *arg)
{
    collect_t *c = arg;
    if (c->count == c->cap)
        return;
    nn_st_entry_t *e = &c->entries[c->count];
    snprintf(c->names[c->count], sizeof c->names[0], "%s", name);
    int64_t dims[4];
    int nd = param_shape(p, dims);
    *e = (nn_st_entry_t){.name = c->names[c->count], .ndim = nd, .data = p->value->data};
    memcpy(e->shape, dims, sizeof dims);
    c->count++;
}

static void count_all(const char *name, nn_param_t *p, void *arg)
{
    (void)name;
    (void)p;
    (*(int *)arg)++;
}

int nn_model_save(const nn_model_t *self, const char *path, const char *info_json, ei_err_t *err)
{
    if (self->inference)
        return ei_err_set(err, EI_E_INVAL, "%s: a model prepared for inference (batch norms "
                          "folded) cannot be saved", path);
    nn_model_t *m = (nn_model_t *)self;
    int total = 0;
    nn_model_visit_params(m, count_all, &total);
    collect_t c = {ei_calloc((size_t)total, sizeof *c.entries),
                   ei_calloc((size_t)total, sizeof *c.names), 0, total};
    int rc;
    if (!c.entries || !c.names) {
        rc = ei_err_set(err, EI_E_NOMEM, "out of memory saving %s", path);
    } else {
        nn_model_visit_params(m, collect, &c);
        nn_st_meta_t meta[] = {{"format", MODEL_FORMAT},
                               {"version", MODEL_VERSION},
                               {"arch", self->arch_json},
                               {"info", info_json ? info_json : "{}"}};
        rc = nn_st_write(path, c.entries, c.count, meta, 4, err);
    }
    free(c.entries);
    free(c.names);
    return rc;
}

typedef struct {
    const nn_st_file_t *file;
    const char *path;
    ei_err_t *err;
    int rc, seen;
} loader_t;


static void load_one(const char *name, nn_param_t *p, void *arg)
{
    loader_t *l = arg;
    if (l->rc)
        return;
    int64_t dims[4];
    int nd = param_shape(p, dims);
    l->rc = nn_st_read(l->file, name, dims, nd, p->value->data, l->err);
    if (l->rc) {
        ei_err_prefix(l->err, "%s: ", l->path);
        return;
    }
    l->seen++;
    long bad = nn_tensor_find_nonfinite(p->value->data, nn_tensor_numel(p->value));
    if (bad >= 0)
        l->rc = ei_err_set(l->err, EI_E_NONFINITE, "%s: tensor '%s' has a non-finite value at "
                           "index %ld", l->path, name, bad);
}

static int check_meta(const nn_st_file_t *f, const char *path, ei_err_t *err)
{
    const char *format = nn_st_meta(f, "format"), *version = nn_st_meta(f, "version");
    if (!format || strcmp(format, MODEL_FORMAT))
        return ei_err_set(err, EI_E_FORMAT, "%s: not an einet model file (metadata \"format\" "
                          "is %s%s%s, expected \"" MODEL_FORMAT "\")", path, format ? "\"" : "",
                          format ? format : "missing", format ? "\"" : "");
    if (!version || strcmp(version, MODEL_VERSION))
        return ei_err_set(err, EI_E_VERSION, "%s: model file version %s is not supported "
                          "(this einet reads version " MODEL_VERSION ")", path,
                          version ? version : "missing");
    if (!nn_st_meta(f, "arch"))
        return ei_err_set(err, EI_E_FORMAT, "%s: metadata has no \"arch\"", path);
    return 0;
}

typedef struct {
    const char *name;
    int found;
} finder_t;

static void find_name(const char *name, nn_param_t *p, void *arg)
{
    (void)p;
    finder_t *fd = arg;
    fd->found |= !strcmp(name, fd->name);
}

/* Every expected tensor was read, yet the file has more: name the first stranger. */
static int report_unknown(nn_model_t *m, const nn_st_file_t *f, const char *path, ei_err_t *err)
{
    for (int i = 0; i < nn_st_count(f); i++) {
        finder_t fd = {nn_st_entry(f, i)->name, 0};
        nn_model_visit_params(m, find_name, &fd);
        if (!fd.found)
            return ei_err_set(err, EI_E_FORMAT, "%s: unexpected tensor '%s' (not in the "
                              "architecture)", path, fd.name);
    }
    return ei_err_set(err, EI_E_FORMAT, "%s: duplicate tensor names", path);
}

nn_model_t *nn_model_load(const char *path, int max_batch, ei_err_t *err)
{
    nn_st_file_t *f = nn_st_open(path, err);
    if (!f)
        return NULL;
    nn_model_t *m = NULL;
    if (check_meta(f, path, err))
        goto done;
    char source[600];
    snprintf(source, sizeof source, "%s (arch metadata)", path);
    m = nn_model_from_arch(nn_st_meta(f, "arch"), source, max_batch, err);
    if (!m)
        goto done;
    loader_t l = {f, path, err, 0, 0};
    nn_model_visit_params(m, load_one, &l);
    if (!l.rc && l.seen != nn_st_count(f))
        l.rc = report_unknown(m, f, path, err);
    if (l.rc)
        nn_model_destroy(&m);
done:
    nn_st_close(&f);
    return m;
}
