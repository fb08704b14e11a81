/* Architecture files: JSON text -> blocks of layer specs, with errors that name the
 * block, the part and the layer. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn_internal.h"

/* Keys each layer type accepts; anything else is a typo worth reporting. */
static const char *const layer_keys[NN_KIND_COUNT][6] = {
    [NN_CONV] = {"out", "k", "stride", "pad", "groups", NULL},
    [NN_BN] = {NULL},
    [NN_RELU] = {NULL},
    [NN_MAXPOOL] = {"k", "stride", "pad", NULL},
    [NN_AVGPOOL] = {"k", "stride", "size", NULL},
    [NN_GAP] = {NULL},
    [NN_DENSE] = {"out", NULL},
    [NN_FLATTEN] = {NULL},
    [NN_RESIDUAL] = {"path", "shortcut", NULL},
    [NN_DROPOUT] = {"p", NULL},
};

/* Residual layers nest (a path may hold residual layers); this deep at most. */
#define MAX_NESTING 8

static int key_allowed(nn_kind_t kind, const char *key)
{
    if (!strcmp(key, "type"))
        return 1;
    for (int i = 0; layer_keys[kind][i]; i++)
        if (!strcmp(layer_keys[kind][i], key))
            return 1;
    return 0;
}

static int get_int(json_t *obj, const char *key, int dflt, int *out, const char *where,
                   ei_err_t *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 1 << 20)
        return ei_err_set(err, EI_E_FORMAT, "%s: '%s' must be an integer in [0, 1048576]",
                          where, key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int parse_chain(json_t *arr, const char *what, int need, nn_layer_spec_t **specs,
                       int *count, const char *where, int depth, ei_err_t *err);

/* The layers of spec arrays (residual layers own their chains' arrays). */
static void free_specs(nn_layer_spec_t *specs, int count)
{
    for (int i = 0; specs && i < count; i++) {
        free_specs((nn_layer_spec_t *)specs[i].path, specs[i].npath);
        free_specs((nn_layer_spec_t *)specs[i].shortcut, specs[i].nshortcut);
    }
    free(specs);
}

/* A residual layer's "path" (non-empty) and "shortcut" (absent or [] for the identity). */
static int parse_residual(json_t *jl, nn_layer_spec_t *spec, const char *where, int depth,
                          ei_err_t *err)
{
    if (depth >= MAX_NESTING)
        return ei_err_set(err, EI_E_FORMAT, "%s: residual layers nested deeper than %d", where,
                          MAX_NESTING);
    nn_layer_spec_t *path = NULL, *sc = NULL;
    int rc = parse_chain(json_object_get(jl, "path"), "path", 1, &path, &spec->npath, where,
                         depth + 1, err);
    spec->path = path;
    json_t *js = json_object_get(jl, "shortcut");
    if (!rc && js)
        rc = parse_chain(js, "shortcut", 0, &sc, &spec->nshortcut, where, depth + 1, err);
    spec->shortcut = sc;
    return rc;
}

static int parse_layer(json_t *jl, nn_layer_spec_t *spec, const char *where, int depth,
                       ei_err_t *err)
{
    if (!json_is_object(jl))
        return ei_err_set(err, EI_E_FORMAT, "%s: a layer must be a JSON object", where);
    const char *type = json_string_value(json_object_get(jl, "type"));
    if (!type)
        return ei_err_set(err, EI_E_FORMAT, "%s: missing \"type\"", where);
    int kind = nn_kind_from_name(type);
    if (kind < 0)
        return ei_err_set(err, EI_E_FORMAT,
                          "%s: unknown layer type '%s' (known: conv, bn, relu, maxpool, "
                          "avgpool, gap, dense, flatten, residual, dropout)", where, type);
    const char *key;
    json_t *val;
    json_object_foreach(jl, key, val) {
        if (!key_allowed((nn_kind_t)kind, key))
            return ei_err_set(err, EI_E_FORMAT, "%s: unknown key '%s' for a %s layer", where,
                              key, type);
    }
    *spec = (nn_layer_spec_t){.kind = (nn_kind_t)kind};
    int rc = get_int(jl, "out", 0, &spec->out, where, err);
    rc = rc ? rc : get_int(jl, "k", 0, &spec->k, where, err);
    rc = rc ? rc : get_int(jl, "stride", 0, &spec->stride, where, err);
    rc = rc ? rc : get_int(jl, "pad", 0, &spec->pad, where, err);
    rc = rc ? rc : get_int(jl, "size", 0, &spec->size, where, err);
    rc = rc ? rc : get_int(jl, "groups", 0, &spec->groups, where, err);
    if (rc)
        return rc;
    if (kind == NN_CONV && json_object_get(jl, "groups") && spec->groups < 1)
        return ei_err_set(err, EI_E_FORMAT, "%s: \"groups\" must be >= 1", where);
    if (kind == NN_DROPOUT) {
        json_t *p = json_object_get(jl, "p");
        if (!json_is_number(p) || json_number_value(p) < 0 || json_number_value(p) >= 1)
            return ei_err_set(err, EI_E_FORMAT, "%s: a dropout layer needs \"p\" in [0, 1)",
                              where);
        spec->p = (float)json_number_value(p);
    }
    if (kind == NN_RESIDUAL)
        return parse_residual(jl, spec, where, depth, err);
    if ((kind == NN_CONV || kind == NN_DENSE) && spec->out < 1)
        return ei_err_set(err, EI_E_FORMAT, "%s: a %s layer needs \"out\" >= 1", where, type);
    if ((kind == NN_CONV || kind == NN_MAXPOOL || (kind == NN_AVGPOOL && !spec->size)) &&
        spec->k < 1)
        return ei_err_set(err, EI_E_FORMAT, "%s: a %s layer needs \"k\" >= 1", where, type);
    return 0;
}

/* A residual layer's chain: an array (non-empty when need) of layers, named in errors
 * "<where> <what> layer <i>". */
static int parse_chain(json_t *arr, const char *what, int need, nn_layer_spec_t **specs,
                       int *count, const char *where, int depth, ei_err_t *err)
{
    *count = 0;
    if (!json_is_array(arr) || (need && json_array_size(arr) == 0))
        return ei_err_set(err, EI_E_FORMAT, "%s: \"%s\" must be a%s array of layers", where,
                          what, need ? " non-empty" : "n");
    int n = (int)json_array_size(arr);
    *specs = ei_calloc((size_t)n + 1, sizeof **specs);
    if (!*specs)
        return ei_err_set(err, EI_E_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        char sub[512];
        snprintf(sub, sizeof sub, "%s %s layer %d", where, what, i);
        (*count)++; /* counted before parsing, so a half-parsed layer is freed too */
        int rc = parse_layer(json_array_get(arr, (size_t)i), &(*specs)[i], sub, depth, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int parse_part(json_t *jb, const char *part, int b, nn_layer_spec_t **specs, int *count,
                      const char *source, ei_err_t *err)
{
    json_t *arr = json_object_get(jb, part);
    if (!json_is_array(arr) || json_array_size(arr) == 0)
        return ei_err_set(err, EI_E_FORMAT, "%s: block %d: \"%s\" must be a non-empty array",
                          source, b, part);
    int n = (int)json_array_size(arr);
    *count = 0;
    *specs = ei_calloc((size_t)n, sizeof **specs);
    if (!*specs)
        return ei_err_set(err, EI_E_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        char where[256];
        snprintf(where, sizeof where, "%s: block %d %s layer %d", source, b, part, i);
        (*count)++;
        int rc = parse_layer(json_array_get(arr, (size_t)i), &(*specs)[i], where, 0, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int parse_header(json_t *root, const char *source, nn_arch_t *a, ei_err_t *err)
{
    const char *name = json_string_value(json_object_get(root, "name"));
    a->name = strdup(name ? name : "unnamed");
    json_t *in = json_object_get(root, "input");
    if (!json_is_array(in) || json_array_size(in) != 3)
        return ei_err_set(err, EI_E_FORMAT, "%s: \"input\" must be [C, H, W]", source);
    int dims[3];
    for (int i = 0; i < 3; i++) {
        json_t *d = json_array_get(in, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 1 || json_integer_value(d) > 4096)
            return ei_err_set(err, EI_E_FORMAT, "%s: \"input\"[%d] must be in [1, 4096]",
                              source, i);
        dims[i] = (int)json_integer_value(d);
    }
    a->input = (nn_shape_t){dims[0], dims[1], dims[2]};
    json_t *k = json_object_get(root, "classes");
    if (!json_is_integer(k) || json_integer_value(k) < 2 || json_integer_value(k) > 1000)
        return ei_err_set(err, EI_E_FORMAT, "%s: \"classes\" must be an integer in [2, 1000]",
                          source);
    a->classes = (int)json_integer_value(k);
    return 0;
}

int nn__arch_parse(const char *json, const char *source, nn_arch_t *a, ei_err_t *err)
{
    *a = (nn_arch_t){0};
    json_error_t jerr;
    json_t *root = json_loads(json, 0, &jerr);
    if (!root)
        return ei_err_set(err, EI_E_FORMAT, "%s: line %d column %d: %s", source, jerr.line,
                          jerr.column, jerr.text);
    int rc = json_is_object(root) ? parse_header(root, source, a, err)
                                  : ei_err_set(err, EI_E_FORMAT, "%s: not a JSON object", source);
    json_t *blocks = json_object_get(root, "blocks");
    if (!rc && (!json_is_array(blocks) || json_array_size(blocks) < 1 ||
                json_array_size(blocks) > 256))
        rc = ei_err_set(err, EI_E_FORMAT, "%s: \"blocks\" must be an array of 1..256 blocks",
                        source);
    if (!rc) {
        a->nblocks = (int)json_array_size(blocks);
        a->parts = ei_calloc(2 * (size_t)a->nblocks, sizeof *a->parts);
        a->counts = ei_calloc(2 * (size_t)a->nblocks, sizeof *a->counts);
        if (!a->parts || !a->counts)
            rc = ei_err_set(err, EI_E_NOMEM, "out of memory");
    }
    for (int b = 0; !rc && b < a->nblocks; b++) {
        json_t *jb = json_array_get(blocks, (size_t)b);
        rc = parse_part(jb, "conv", b, &a->parts[2 * b], &a->counts[2 * b], source, err);
        if (!rc)
            rc = parse_part(jb, "branch", b, &a->parts[2 * b + 1], &a->counts[2 * b + 1],
                            source, err);
    }
    json_decref(root);
    if (rc)
        nn__arch_free(a);
    return rc;
}

void nn__arch_free(nn_arch_t *a)
{
    for (int i = 0; a->parts && i < 2 * a->nblocks; i++)
        free_specs(a->parts[i], a->counts ? a->counts[i] : 0);
    free(a->parts);
    free(a->counts);
    free(a->name);
    *a = (nn_arch_t){0};
}

int nn_arch_check_shape(const char *arch, const char *what, nn_shape_t declared, nn_shape_t data,
                        const char *data_source, ei_err_t *err)
{
    if (declared.c == data.c && declared.h == data.h && declared.w == data.w)
        return 0;
    return ei_err_set(err, EI_E_SHAPE,
                      "%s: declared %s [%d,%d,%d] does not match the data's shape [%d,%d,%d] "
                      "(%s)", arch, what, declared.c, declared.h, declared.w, data.c, data.h,
                      data.w, data_source);
}

int nn_arch_check_input(const char *arch, nn_shape_t input, nn_shape_t data,
                        const char *data_source, ei_err_t *err)
{
    return nn_arch_check_shape(arch, "input", input, data, data_source, err);
}
