/* Planning instances as JSON (the input of `einet plan`): parsing with jansson and checking
 * every field, so that a malformed instance gets one message naming the field at fault. */
#include <math.h>
#include <string.h>

#include <jansson.h>

#include "planner_internal.h"

static const char *const known_fields[] = {
    "conv_ms", "branch_ms", "link_ms",  "result_ms", "scores", "dist",   "search",
    "m",       "m_upto",    "n_random", "seed",      "plan",   "offset",
};

static int check_known(json_t *obj, const char *const *names, size_t count, const char *where,
                       ei_err_t *err)
{
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        size_t i = 0;
        while (i < count && strcmp(key, names[i]))
            i++;
        if (i == count)
            return ei_err_set(err, EI_E_FORMAT, "%s%s%s: unknown field", where, *where ? "." : "",
                              key);
    }
    return 0;
}

/* An array of at most `max` numbers (field `key` of obj, called `name` in messages) into
 * out[]; *len gets its length. */
static int get_list(json_t *obj, const char *key, const char *name, int max, double *out, int *len,
                    ei_err_t *err)
{
    json_t *a = json_object_get(obj, key);
    if (!a)
        return ei_err_set(err, EI_E_FORMAT, "%s: missing", name);
    if (!json_is_array(a))
        return ei_err_set(err, EI_E_FORMAT, "%s: expected an array of numbers", name);
    int n = (int)json_array_size(a);
    if (n > max)
        return ei_err_set(err, EI_E_SHAPE, "%s: %d entries, at most %d", name, n, max);
    for (int k = 0; k < n; k++) {
        json_t *v = json_array_get(a, (size_t)k);
        if (!json_is_number(v))
            return ei_err_set(err, EI_E_FORMAT, "%s[%d]: not a number", name, k);
        out[k] = json_number_value(v);
    }
    *len = n;
    return 0;
}

/* A per-exit array: exactly n numbers, n being the length of conv_ms. */
static int get_per_exit(json_t *root, const char *key, int n, double *out, ei_err_t *err)
{
    int len, rc = get_list(root, key, key, PLANNER_MAX_EXITS, out, &len, err);
    if (rc)
        return rc;
    if (len != n)
        return ei_err_set(err, EI_E_SHAPE, "%s: %d entries, conv_ms has %d", key, len, n);
    return 0;
}

/* An integer field in [lo, hi]; absent leaves *out unchanged. */
static int get_long(json_t *obj, const char *field, const char *name, long lo, long hi, long *out,
                    ei_err_t *err)
{
    json_t *v = json_object_get(obj, field);
    if (!v)
        return 0;
    double d = json_is_integer(v) ? (double)json_integer_value(v)
               : json_is_real(v)  ? json_real_value(v)
                                  : NAN;
    if (!json_is_number(v) || d != floor(d))
        return ei_err_set(err, EI_E_FORMAT, "%s: expected an integer", name);
    if (d < (double)lo || d > (double)hi)
        return ei_err_set(err, EI_E_RANGE, "%s: %.0f outside [%ld, %ld]", name, d, lo, hi);
    *out = (long)d;
    return 0;
}

static int get_bits(json_t *obj, const char *field, const char *name, int want, uint8_t *out,
                    ei_err_t *err)
{
    json_t *a = json_object_get(obj, field);
    if (!json_is_array(a))
        return ei_err_set(err, EI_E_FORMAT, "%s: expected an array of 0 and 1", name);
    if ((int)json_array_size(a) != want)
        return ei_err_set(err, EI_E_SHAPE, "%s: %d entries, expected %d", name,
                          (int)json_array_size(a), want);
    for (int k = 0; k < want; k++) {
        json_t *v = json_array_get(a, (size_t)k);
        if (!json_is_integer(v) || (json_integer_value(v) != 0 && json_integer_value(v) != 1))
            return ei_err_set(err, EI_E_RANGE, "%s[%d]: expected 0 or 1", name, k);
        out[k] = (uint8_t)json_integer_value(v);
    }
    return 0;
}

static int parse_dist(json_t *root, planner_dist_t *dist, ei_err_t *err)
{
    json_t *d = json_object_get(root, "dist");
    if (!d)
        return ei_err_set(err, EI_E_FORMAT, "dist: missing");
    if (!json_is_object(d))
        return ei_err_set(err, EI_E_FORMAT,
                          "dist: expected {\"kind\":\"uniform\"} or "
                          "{\"kind\":\"normal\",\"mu\":M,\"sigma\":S}");
    static const char *const fields[] = {"kind", "mu", "sigma"};
    int rc = check_known(d, fields, 3, "dist", err);
    if (rc)
        return rc;
    const char *kind = json_string_value(json_object_get(d, "kind"));
    if (!kind)
        return ei_err_set(err, EI_E_FORMAT, "dist.kind: missing (uniform or normal)");
    memset(dist, 0, sizeof *dist);
    if (!strcmp(kind, "uniform")) {
        if (json_object_get(d, "mu") || json_object_get(d, "sigma"))
            return ei_err_set(err, EI_E_FORMAT, "dist: mu and sigma belong to kind normal");
        dist->kind = PLANNER_DIST_UNIFORM;
        return 0;
    }
    if (strcmp(kind, "normal"))
        return ei_err_set(err, EI_E_RANGE, "dist.kind: unknown '%s' (uniform or normal)", kind);
    dist->kind = PLANNER_DIST_NORMAL;
    json_t *mu = json_object_get(d, "mu"), *sigma = json_object_get(d, "sigma");
    if (!json_is_number(mu))
        return ei_err_set(err, EI_E_FORMAT, "dist.mu: %s", mu ? "not a number" : "missing");
    if (!json_is_number(sigma))
        return ei_err_set(err, EI_E_FORMAT, "dist.sigma: %s", sigma ? "not a number" : "missing");
    dist->mu = json_number_value(mu);
    dist->sigma = json_number_value(sigma);
    return planner_dist_check(dist, err);
}

static int parse_offset(json_t *root, int n, planner_offset_t *off, ei_err_t *err)
{
    json_t *o = json_object_get(root, "offset");
    if (!json_is_object(o))
        return ei_err_set(err, EI_E_FORMAT, "offset: expected an object");
    static const char *const fields[] = {"x",     "t0_ms",      "c0",
                                         "spent", "pending_ms", "pending_scores"};
    int rc = check_known(o, fields, 6, "offset", err);
    if (rc)
        return rc;
    planner_offset_init(off);
    long x = -1;
    if ((rc = get_long(o, "x", "offset.x", 0, n, &x, err)))
        return rc;
    if (x < 0)
        return ei_err_set(err, EI_E_FORMAT, "offset.x: missing");
    off->x = (int)x;
    json_t *t0 = json_object_get(o, "t0_ms"), *c0 = json_object_get(o, "c0");
    if (!json_is_number(t0))
        return ei_err_set(err, EI_E_FORMAT, "offset.t0_ms: %s", t0 ? "not a number" : "missing");
    off->t0_ms = json_number_value(t0);
    if (c0 && !json_is_number(c0))
        return ei_err_set(err, EI_E_FORMAT, "offset.c0: not a number");
    off->c0 = c0 ? json_number_value(c0) : 0;
    if (json_object_get(o, "spent") &&
        (rc = get_bits(o, "spent", "offset.spent", off->x, off->spent, err)))
        return rc;
    json_t *pm = json_object_get(o, "pending_ms"), *ps = json_object_get(o, "pending_scores");
    if (!pm != !ps)
        return ei_err_set(err, EI_E_FORMAT, "offset.%s: missing (it goes with offset.%s)",
                          pm ? "pending_scores" : "pending_ms",
                          pm ? "pending_ms" : "pending_scores");
    if (pm) {
        int np, ns;
        if ((rc = get_list(o, "pending_ms", "offset.pending_ms", off->x, off->pending_ms, &np,
                           err)) ||
            (rc = get_list(o, "pending_scores", "offset.pending_scores", off->x, off->pending_score,
                           &ns, err)))
            return rc;
        if (np != ns)
            return ei_err_set(err, EI_E_SHAPE,
                              "offset.pending_scores: %d entries, offset.pending_ms has %d", ns,
                              np);
        off->n_pending = np;
    }
    return planner_offset_check(off, n, err);
}

static int parse_root(json_t *root, planner_instance_t *inst, ei_err_t *err)
{
    int rc = check_known(root, known_fields, sizeof known_fields / sizeof known_fields[0], "", err);
    if (rc)
        return rc;
    planner_profile_t *pr = &inst->profile;
    int n;
    if ((rc = get_list(root, "conv_ms", "conv_ms", PLANNER_MAX_EXITS, pr->conv_ms, &n, err)))
        return rc;
    if (n == 0)
        return ei_err_set(err, EI_E_SHAPE, "conv_ms: empty; at least one exit is needed");
    pr->n = n;
    if ((rc = get_per_exit(root, "branch_ms", n, pr->branch_ms, err)) ||
        (json_object_get(root, "link_ms") &&
         (rc = get_per_exit(root, "link_ms", n, pr->link_ms, err))) ||
        (json_object_get(root, "result_ms") &&
         (rc = get_per_exit(root, "result_ms", n, pr->result_ms, err))) ||
        (rc = planner_profile_check(pr, err)) ||
        (rc = get_per_exit(root, "scores", n, inst->scores, err)) ||
        (rc = planner_scores_check(inst->scores, n, err)) ||
        (rc = parse_dist(root, &inst->dist, err)))
        return rc;
    json_t *search = json_object_get(root, "search");
    if (!search)
        return ei_err_set(err, EI_E_FORMAT, "search: missing");
    if (!json_is_string(search) || planner_search_parse(json_string_value(search), &inst->kind))
        return ei_err_set(err, EI_E_RANGE,
                          "search: unknown '%s' (exact, hybrid, greedy, enum, random, all, none)",
                          json_is_string(search) ? json_string_value(search) : "non-string");
    long m = inst->m, nr = inst->n_random, seed = 1;
    if ((rc = get_long(root, "m", "m", 0, PLANNER_MAX_EXITS, &m, err)) ||
        (rc = get_long(root, "n_random", "n_random", 1, PLANNER_RANDOM_MAX, &nr, err)) ||
        (rc = get_long(root, "seed", "seed", 0, (1L << 53), &seed, err)))
        return rc;
    inst->m = (int)m;
    json_t *upto = json_object_get(root, "m_upto");
    if (upto && !json_is_boolean(upto))
        return ei_err_set(err, EI_E_FORMAT, "m_upto: expected true or false");
    inst->m_upto = json_is_true(upto);
    inst->n_random = nr;
    inst->seed = (uint64_t)seed;
    if (json_object_get(root, "plan")) {
        if ((rc = get_bits(root, "plan", "plan", n, inst->plan, err)))
            return rc;
        inst->has_plan = 1;
    }
    if (json_object_get(root, "offset")) {
        if ((rc = parse_offset(root, n, &inst->offset, err)))
            return rc;
        inst->has_offset = 1;
    }
    planner_search_t s;
    planner_search_init(&s);
    s.kind = inst->kind;
    s.m = inst->m;
    s.n_random = inst->n_random;
    s.plan = inst->has_plan ? inst->plan : NULL;
    return planner_search_check(&s, n, inst->has_offset ? inst->offset.x : 0, err);
}

int planner_instance_parse(const char *text, size_t len, planner_instance_t *inst, ei_err_t *err)
{
    memset(inst, 0, sizeof *inst);
    inst->m = 4;
    inst->n_random = 10000;
    inst->seed = 1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return ei_err_set(err, EI_E_FORMAT, "line %d, column %d: %s", jerr.line, jerr.column,
                          jerr.text);
    int rc = json_is_object(root)
                 ? parse_root(root, inst, err)
                 : ei_err_set(err, EI_E_FORMAT, "expected a JSON object {\"conv_ms\": ...}");
    json_decref(root);
    return rc;
}
