/* The table-driven config reader: inih splits the file into sections and keys, this file
 * gives them meaning from a conf_table_t. inih (as Debian builds it) does not pass line
 * numbers to its handler, so lines are fed to it through a reader that counts them. */
#include "wire/conf.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>

typedef struct parse {
    const conf_table_t *t;
    void *target;
    const char *name;       /* the file, as messages name it */
    char dir[CONF_STR_MAX]; /* where CONF_PATH values are relative to */
    int *lines;             /* line each option was set on; 0: not set */
    FILE *f;                /* source: a file ... */
    const char *s;          /* ... or a string */
    int line, next_line;
    int long_line; /* first line longer than inih's buffer ... */
    int line_max;  /* ... which holds this many characters */
    ei_err_t *err;
    int err_line; /* line of the first error (-1 for errors without a line); 0: none */
    int check_files; /* conf_check_files: every path set must name a readable file */
} parse_t;

/* Records the first error only: later ones are often consequences of it. */
static void fail(parse_t *p, int line, int code, const char *fmt, ...) EI_PRINTF(4, 5);
static void fail(parse_t *p, int line, int code, const char *fmt, ...)
{
    if (p->err_line)
        return;
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    p->err_line = line ? line : -1;
    if (line > 0)
        ei_err_set(p->err, code, "%s:%d: %s", p->name, line, what);
    else
        ei_err_set(p->err, code, "%s: %s", p->name, what);
}

/* ---- reading lines ---- */

static int next_char(parse_t *p)
{
    if (p->f)
        return getc(p->f);
    return *p->s ? (unsigned char)*p->s++ : EOF;
}

/* An fgets for inih that counts lines, drops leading blanks (inih would take an indented
 * line for the continuation of the previous value) and cuts over-long lines, remembering
 * the first so it is reported instead of whatever inih makes of the rest. */
static char *read_line(char *str, int num, void *stream)
{
    parse_t *p = stream;
    int c, n = 0;
    while ((c = next_char(p)) == ' ' || c == '\t')
        ;
    if (c == EOF)
        return NULL;
    p->line = ++p->next_line;
    while (c != EOF && c != '\n') {
        if (n < num - 2) {
            str[n++] = (char)c;
        } else if (!p->long_line) {
            p->long_line = p->line;
            p->line_max = num - 2;
        }
        c = next_char(p);
    }
    str[n++] = '\n';
    str[n] = '\0';
    return str;
}

/* ---- values ---- */

static void *field_of(const parse_t *p, const conf_option_t *o)
{
    return (char *)p->target + o->offset;
}

/* Value parsers return NULL or what was wrong; *range is set when the value was well formed
 * but outside the option's bounds. */
static const char *parse_int(const conf_option_t *o, const char *v, void *field, char *msg,
                             size_t cap, int *range)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (end == v || *end || errno)
        return "expected an integer";
    if (x < o->min || x > o->max) {
        snprintf(msg, cap, "out of range %.0f..%.0f", o->min, o->max);
        *range = 1;
        return msg;
    }
    *(int *)field = (int)x;
    return NULL;
}

static const char *parse_double(const conf_option_t *o, const char *v, void *field, char *msg,
                                size_t cap, int *range)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !isfinite(x))
        return "expected a number";
    if (x < o->min || x > o->max) {
        snprintf(msg, cap, "out of range %g..%g", o->min, o->max);
        *range = 1;
        return msg;
    }
    *(double *)field = x;
    return NULL;
}

static const char *parse_bool(const char *v, void *field)
{
    static const char *const yes[] = {"yes", "true", "on", "1"}, *const no[] = {"no", "false",
                                                                                "off", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
            *(int *)field = strcasecmp(v, yes[i]) == 0;
            return NULL;
        }
    }
    return "expected yes or no";
}

static const char *parse_enum(const conf_option_t *o, const char *v, void *field, char *msg,
                              size_t cap)
{
    size_t used = 0;
    for (const conf_choice_t *c = o->choices; c->name; c++) {
        if (strcasecmp(v, c->name) == 0) {
            *(int *)field = c->value;
            return NULL;
        }
    }
    used = (size_t)snprintf(msg, cap, "expected one of");
    for (const conf_choice_t *c = o->choices; c->name && used < cap; c++)
        used +=
            (size_t)snprintf(msg + used, cap - used, "%s %s", c == o->choices ? "" : ",", c->name);
    return msg;
}

static const char *parse_string(const parse_t *p, const conf_option_t *o, const char *v,
                                void *field, char *msg, size_t cap)
{
    int rel = (o->type == CONF_PATH || o->type == CONF_PATH_NEW) && v[0] && v[0] != '/' &&
              p->dir[0];
    int n = snprintf(field, o->size, "%s%s%s", rel ? p->dir : "", rel ? "/" : "", v);
    if (n < 0 || (size_t)n >= o->size) {
        snprintf(msg, cap, "longer than %zu characters%s", o->size - 1,
                 rel ? " once made relative to the file's directory" : "");
        return msg;
    }
    return NULL;
}

/* A comma-separated list of paths: each made relative to the file's directory as a
 * CONF_PATH, joined again with commas. */
static const char *parse_path_list(const parse_t *p, const conf_option_t *o, const char *v,
                                   void *field, char *msg, size_t cap)
{
    char list[CONF_MAX_NEXT][CONF_STR_MAX];
    int n = conf_list_split(v, list, CONF_MAX_NEXT);
    if (n < 0) {
        snprintf(msg, cap, "expected 1 to %d paths separated by commas, none empty",
                 CONF_MAX_NEXT);
        return msg;
    }
    char *out = field;
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        int rel = list[i][0] != '/' && p->dir[0];
        int w = snprintf(out + used, o->size - used, "%s%s%s%s", i ? "," : "", rel ? p->dir : "",
                         rel ? "/" : "", list[i]);
        if (w < 0 || (size_t)w >= o->size - used) {
            snprintf(msg, cap, "longer than %zu characters once made relative to the file's "
                     "directory", o->size - 1);
            return msg;
        }
        used += (size_t)w;
    }
    return NULL;
}

/* Stores text into o's field. Returns NULL or what was wrong. */
static const char *parse_value(const parse_t *p, const conf_option_t *o, const char *v, char *msg,
                               size_t cap, int *range)
{
    void *field = field_of(p, o);
    switch (o->type) {
    case CONF_STRING:
    case CONF_PATH:
    case CONF_PATH_NEW:
        return parse_string(p, o, v, field, msg, cap);
    case CONF_PATH_LIST:
        return parse_path_list(p, o, v, field, msg, cap);
    case CONF_INT:
        return parse_int(o, v, field, msg, cap, range);
    case CONF_DOUBLE:
        return parse_double(o, v, field, msg, cap, range);
    case CONF_BOOL:
        return parse_bool(v, field);
    case CONF_ENUM:
        return parse_enum(o, v, field, msg, cap);
    case CONF_CUSTOM:
        return o->parse(v, field);
    }
    return "unknown option type";
}

/* ---- the handler inih calls per key ---- */

static int find(const conf_table_t *t, const char *section, const char *name, int *section_known)
{
    *section_known = 0;
    for (int i = 0; i < t->n; i++) {
        if (strcmp(t->options[i].section, section) != 0)
            continue;
        *section_known = 1;
        if (strcmp(t->options[i].name, name) == 0)
            return i;
    }
    return -1;
}

static void set_key(parse_t *p, int i, const char *value)
{
    const conf_option_t *o = &p->t->options[i];
    char msg[300];
    int range = 0;
    const char *why = parse_value(p, o, value, msg, sizeof msg, &range);
    if (why && range) {
        fail(p, p->line, EI_E_RANGE, "'%s' in [%s] is %s, %s", o->name, o->section, value, why);
        return;
    }
    if (why) {
        fail(p, p->line, EI_E_FORMAT, "bad value '%s' for '%s' in [%s]: %s", value, o->name,
             o->section, why);
        return;
    }
    if (o->check && (why = o->check(field_of(p, o))) != NULL)
        fail(p, p->line, EI_E_RANGE, "'%s' in [%s]: %s", o->name, o->section, why);
    p->lines[i] = p->line;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    parse_t *p = user;
    int known;
    int i = find(p->t, section, name, &known);
    if (!section[0])
        fail(p, p->line, EI_E_FORMAT, "key '%s' outside any [section]", name);
    else if (i < 0 && !known)
        fail(p, p->line, EI_E_FORMAT, "unknown section [%s] (key '%s')", section, name);
    else if (i < 0)
        fail(p, p->line, EI_E_FORMAT, "unknown key '%s' in [%s]", name, section);
    else if (p->lines[i])
        fail(p, p->line, EI_E_FORMAT, "duplicate key '%s' in [%s] (first on line %d)", name,
             section, p->lines[i]);
    else
        set_key(p, i, value);
    return 1; /* keep going: inih's own return value then reports only syntax errors */
}

/* ---- whole file ---- */

static void apply_defaults(parse_t *p)
{
    char msg[300];
    int range = 0;
    for (int i = 0; i < p->t->n; i++) {
        const conf_option_t *o = &p->t->options[i];
        if (!o->def)
            continue;
        /* Defaults are text in the table; one that does not parse is a bug in the table. */
        const char *why = parse_value(p, o, o->def, msg, sizeof msg, &range);
        EI_ASSERT(why == NULL);
    }
}

static void check_complete(parse_t *p)
{
    for (int i = 0; i < p->t->n; i++) {
        const conf_option_t *o = &p->t->options[i];
        if (!o->def && !p->lines[i])
            fail(p, 0, EI_E_FORMAT, "missing required key '%s' in [%s]", o->name, o->section);
    }
    if (p->err_line || !p->t->finish)
        return;
    const char *key = NULL, *why = p->t->finish(p->target, &key);
    if (!why)
        return;
    for (int i = 0; i < p->t->n; i++)
        if (key && strcmp(p->t->options[i].name, key) == 0 && p->lines[i]) {
            fail(p, p->lines[i], EI_E_RANGE, "%s", why);
            return;
        }
    fail(p, 0, EI_E_RANGE, "%s", why);
}

static void set_dir(parse_t *p, const char *name)
{
    const char *slash = strrchr(name, '/');
    p->dir[0] = '\0';
    if (slash)
        snprintf(p->dir, sizeof p->dir, "%.*s", (int)(slash - name), name);
    if (slash == name)
        snprintf(p->dir, sizeof p->dir, "/");
}


/* Each path of a CONF_PATH_LIST must be readable. */
static void check_path_list(parse_t *p, const conf_option_t *o, int line, const char *v)
{
    char list[CONF_MAX_NEXT][CONF_STR_MAX];
    int n = conf_list_split(v, list, CONF_MAX_NEXT);
    for (int k = 0; k < n; k++)
        if (access(list[k], R_OK) != 0) {
            fail(p, line, EI_E_NOTFOUND, "'%s' in [%s]: cannot open '%s': %s", o->name,
                 o->section, list[k], strerror(errno));
            return;
        }
}

static int run(parse_t *p)
{
    p->lines = calloc((size_t)p->t->n + 1, sizeof *p->lines);
    if (!p->lines)
        return ei_err_set(p->err, EI_E_NOMEM, "%s: out of memory", p->name);
    apply_defaults(p);
    int syntax = ini_parse_stream(read_line, p, handler, p);
    /* A cut line is the root cause of whatever inih or the handler made of its pieces. */
    if (p->long_line && (!p->err_line || p->long_line <= p->err_line)) {
        p->err_line = 0;
        fail(p, p->long_line, EI_E_FORMAT, "line longer than %d characters", p->line_max);
    }
    /* inih counts lines as read_line does, so its line is comparable with ours. */
    if (syntax > 0 && (!p->err_line || syntax < p->err_line)) {
        p->err_line = 0;
        fail(p, syntax, EI_E_FORMAT, "syntax error: expected [section], key = value or a comment");
    }
    if (!p->err_line)
        check_complete(p);
    for (int i = 0; p->check_files && !p->err_line && i < p->t->n; i++) {
        const conf_option_t *o = &p->t->options[i];
        const char *v = field_of(p, o);
        if (o->type == CONF_PATH && p->lines[i] && v[0] && access(v, R_OK) != 0)
            fail(p, p->lines[i], EI_E_NOTFOUND, "'%s' in [%s]: cannot open '%s': %s", o->name,
                 o->section, v, strerror(errno));
        if (o->type == CONF_PATH_LIST && p->lines[i] && v[0])
            check_path_list(p, o, p->lines[i], v);
        if (o->type == CONF_PATH_NEW && p->lines[i] && v[0]) {
            char dir[CONF_STR_MAX];
            snprintf(dir, sizeof dir, "%s", v);
            char *slash = strrchr(dir, '/');
            if (slash)
                *(slash == dir ? slash + 1 : slash) = 0;
            if (access(slash ? dir : ".", W_OK | X_OK) != 0)
                fail(p, p->lines[i], EI_E_NOTFOUND,
                     "'%s' in [%s]: cannot create '%s' in '%s': %s", o->name, o->section, v,
                     slash ? dir : ".", strerror(errno));
        }
    }
    free(p->lines);
    return p->err_line ? p->err->code : 0;
}

int conf_load_string(const conf_table_t *t, void *target, const char *name, const char *text,
                     ei_err_t *err)
{
    ei_err_t local;
    parse_t p = {.t = t, .target = target, .name = name, .s = text, .err = err ? err : &local};
    set_dir(&p, name);
    return run(&p);
}

static int load_file(const conf_table_t *t, void *target, const char *path, int check_files,
                     ei_err_t *err)
{
    ei_err_t local;
    FILE *f = fopen(path, "r");
    if (!f)
        return ei_err_set(err, EI_E_IO, "%s: cannot open config: %s", path, strerror(errno));
    parse_t p = {.t = t, .target = target, .name = path, .f = f, .err = err ? err : &local,
                 .check_files = check_files};
    set_dir(&p, path);
    int rc = run(&p);
    fclose(f);
    return rc;
}

int conf_load(const conf_table_t *t, void *target, const char *path, ei_err_t *err)
{
    return load_file(t, target, path, 0, err);
}

int conf_check_files(const conf_table_t *t, void *target, const char *path, ei_err_t *err)
{
    return load_file(t, target, path, 1, err);
}

/* ---- shared validators and the description ---- */

static int port_ok(const char *s)
{
    if (strcmp(s, "*") == 0)
        return 1;
    char *end;
    long port = strtol(s, &end, 10);
    return end != s && !*end && port >= 1 && port <= 65535;
}

const char *conf_check_endpoint(const void *field)
{
    const char *e = field;
    static const char *const expected = "expected tcp://HOST:PORT, ipc://PATH or inproc://NAME";
    if (strncmp(e, "ipc://", 6) == 0 || strncmp(e, "inproc://", 9) == 0)
        return e[strncmp(e, "ipc://", 6) == 0 ? 6 : 9] ? NULL : expected;
    if (strncmp(e, "tcp://", 6) != 0)
        return expected;
    const char *colon = strrchr(e + 6, ':');
    if (!colon || colon == e + 6 || !port_ok(colon + 1))
        return expected;
    for (const char *c = e + 6; c < colon; c++)
        if (isspace((unsigned char)*c))
            return expected;
    return NULL;
}

const char *conf_check_endpoint_or_empty(const void *field)
{
    return ((const char *)field)[0] ? conf_check_endpoint(field) : NULL;
}

int conf_list_split(const char *s, char (*out)[CONF_STR_MAX], int max)
{
    int n = 0;
    while (*s) {
        while (*s == ' ' || *s == '\t')
            s++;
        const char *end = strchr(s, ',');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
            len--;
        if (n == max || len == 0 || len >= CONF_STR_MAX)
            return -1;
        memcpy(out[n], s, len);
        out[n][len] = 0;
        n++;
        if (!end)
            break;
        s = end + 1;
        if (!*s)
            return -1; /* a trailing comma: an empty entry */
    }
    return n;
}

const char *conf_check_endpoint_list(const void *field)
{
    static _Thread_local char msg[CONF_STR_MAX + 64];
    char list[CONF_MAX_NEXT][CONF_STR_MAX];
    const char *s = field;
    if (!s[0])
        return NULL;
    int n = conf_list_split(s, list, CONF_MAX_NEXT);
    if (n < 0) {
        snprintf(msg, sizeof msg, "expected 1 to %d endpoints separated by commas, none empty",
                 CONF_MAX_NEXT);
        return msg;
    }
    for (int i = 0; i < n; i++) {
        const char *why = conf_check_endpoint(list[i]);
        if (why) {
            snprintf(msg, sizeof msg, "'%.100s': %s", list[i], why);
            return msg;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(list[i], list[j]) == 0) {
                snprintf(msg, sizeof msg, "'%.100s' is listed twice", list[i]);
                return msg;
            }
    }
    return NULL;
}

const char *conf_check_hostport_or_empty(const void *field)
{
    const char *s = field;
    if (!s[0])
        return NULL;
    const char *colon = strrchr(s, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || colon == s || !colon[1] || *end || port < 0 || port > 65535)
        return "expected host:port with a port from 0 to 65535, such as 127.0.0.1:9600";
    return NULL;
}

const conf_choice_t conf_log_levels[] = {
    {"debug", EI_LOG_DEBUG}, {"info", EI_LOG_INFO}, {"warn", EI_LOG_WARN},
    {"error", EI_LOG_ERROR}, {NULL, 0},
};

const conf_choice_t conf_log_formats[] = {
    {"text", EI_LOG_TEXT},
    {"json", EI_LOG_JSON},
    {NULL, 0},
};

static const char *type_name(const conf_option_t *o)
{
    static const char *const names[] = {
        [CONF_STRING] = "string", [CONF_PATH] = "path",       [CONF_INT] = "int",
        [CONF_DOUBLE] = "number", [CONF_BOOL] = "bool",       [CONF_ENUM] = "choice",
        [CONF_CUSTOM] = "value",  [CONF_PATH_NEW] = "path",   [CONF_PATH_LIST] = "paths",
    };
    return names[o->type];
}

void conf_describe(const conf_table_t *t, FILE *out)
{
    for (int i = 0; i < t->n; i++) {
        const conf_option_t *o = &t->options[i];
        fprintf(out, "[%s] %s (%s", o->section, o->name, type_name(o));
        if (o->type == CONF_INT)
            fprintf(out, " %.0f..%.0f", o->min, o->max);
        if (o->type == CONF_DOUBLE)
            fprintf(out, " %g..%g", o->min, o->max);
        for (const conf_choice_t *c = o->type == CONF_ENUM ? o->choices : NULL; c && c->name; c++)
            fprintf(out, "%s%s", c == o->choices ? ": " : "|", c->name);
        fprintf(out, ") %s%s%s: %s\n", o->def ? "default '" : "required", o->def ? o->def : "",
                o->def ? "'" : "", o->help);
    }
}
