/* conf: config files of einet-node and einet-coord. INI syntax, read by inih; what the
 * keys mean lives in one option table per program (Redis style): name, type, bounds,
 * default, target field and validator. Every error names the file, the line and the key:
 * "device.ini:12: unknown key 'treshold' in [node]". docs/config.md lists the keys.
 *
 * Paths in a config file are relative to the directory of that file, so a cluster's files
 * work from wherever the processes are started. */
#ifndef WIRE_CONF_H
#define WIRE_CONF_H

#include <stddef.h>
#include <stdio.h>

#include "common/ei.h"

#define CONF_STR_MAX 256

typedef enum conf_type {
    CONF_STRING, /* char[size] */
    CONF_PATH,   /* char[size]; a relative path is resolved against the file's directory */
    CONF_INT,    /* int, within [min, max] */
    CONF_DOUBLE, /* double, finite, within [min, max] */
    CONF_BOOL,   /* int 0/1 from yes/no, true/false, on/off, 1/0 */
    CONF_ENUM,   /* int: the value of the matching choice */
    CONF_CUSTOM, /* parsed by the option's parse function */
    CONF_PATH_NEW, /* as CONF_PATH, for a file the program creates: its directory must exist */
    CONF_PATH_LIST, /* char[size]: 1..CONF_MAX_NEXT CONF_PATHs separated by commas, each
                       resolved and (when files are checked) readable */
} conf_type_t;

typedef struct conf_choice {
    const char *name;
    int value;
} conf_choice_t;

/* Parses text into field (CONF_CUSTOM). Returns NULL, or a message saying what was
 * expected ("a list of tiers such as device,edge,cloud"). */
typedef const char *conf_parse_fn(const char *text, void *field);

/* Checks a value already stored in field. Returns NULL, or a message saying what is wrong. */
typedef const char *conf_check_fn(const void *field);

typedef struct conf_option {
    const char *section;
    const char *name;
    conf_type_t type;
    size_t offset; /* of the field in the target struct */
    size_t size;   /* CONF_STRING / CONF_PATH: the buffer's size */
    double min, max;
    const char *def;              /* default, as it would be written in the file; NULL: required */
    const conf_choice_t *choices; /* CONF_ENUM: ends with {NULL, 0} */
    conf_parse_fn *parse;         /* CONF_CUSTOM */
    conf_check_fn *check;         /* optional */
    const char *help;             /* one line, for docs and --help */
} conf_option_t;

/* Checks relations between keys once the whole file is read. Returns NULL, or a message;
 * *key then names the key whose line the error points at. */
typedef const char *conf_finish_fn(void *target, const char **key);

typedef struct conf_table {
    const conf_option_t *options;
    int n;
    conf_finish_fn *finish; /* optional */
} conf_table_t;

/* Fills target from the defaults, then from the INI file at path, then runs the checks.
 * EI_E_IO when the file cannot be read; EI_E_FORMAT for syntax, unknown sections or keys,
 * duplicate keys and missing required keys; EI_E_RANGE for values out of bounds or refused
 * by a validator. On failure target holds partial data and must not be used. */
int conf_load(const conf_table_t *t, void *target, const char *path, ei_err_t *err) EI_CHECK;

/* conf_load, then every path key set in the file must name a readable file or directory:
 * EI_E_NOTFOUND "device.ini:5: 'model' in [node]: cannot open '/x/m.safetensors': No such
 * file or directory" otherwise. What the programs call (tests of the tables alone use
 * conf_load with paths that need not exist). */
int conf_check_files(const conf_table_t *t, void *target, const char *path, ei_err_t *err) EI_CHECK;

/* The same from a string; name stands for the file in messages and for resolving paths. */
int conf_load_string(const conf_table_t *t, void *target, const char *name, const char *text,
                     ei_err_t *err) EI_CHECK;

/* Writes one line per key: section, name, type, bounds or choices, default, help. */
void conf_describe(const conf_table_t *t, FILE *out);

/* Validators shared by the tables. */
const char *conf_check_endpoint(const void *field);          /* tcp://, ipc://, inproc:// */
const char *conf_check_endpoint_or_empty(const void *field); /* the same, or "" */
/* "" or 1..CONF_MAX_NEXT endpoints separated by commas (spaces around them allowed), each
 * as conf_check_endpoint, none twice. */
const char *conf_check_endpoint_list(const void *field);
#define CONF_MAX_NEXT 8
/* Splits a comma-separated list into up to max trimmed entries: their number, or -1 when
 * there are more, one is empty or one is too long. "" gives 0. */
int conf_list_split(const char *s, char (*out)[CONF_STR_MAX], int max);
const char *conf_check_hostport_or_empty(const void *field);  /* host:port, or "" */

/* The operations keys both programs take (docs/config.md, "Operations"): the metrics and
 * health HTTP address, the lowest log level written and the log line format. */
extern const conf_choice_t conf_log_levels[]; /* debug, info, warn, error: EI_LOG_* */
extern const conf_choice_t conf_log_formats[]; /* text, json: EI_LOG_TEXT, EI_LOG_JSON */

/* ---- einet-node ---- */

typedef enum conf_search {
    CONF_SEARCH_ENUM,
    CONF_SEARCH_GREEDY,
    CONF_SEARCH_HYBRID,
    CONF_SEARCH_RANDOM,
    CONF_SEARCH_EXACT,
} conf_search_t;

typedef struct conf_node {
    int tier; /* einet_Tier: 1 device, 2 edge, 3 cloud */
    char name[32]; /* unique in the cluster (issue 11); "": the tier's name */
    int first_block, last_block;
    char model[CONF_STR_MAX];
    char bind[CONF_STR_MAX];        /* feature maps and heartbeats from the previous tier */
    char next[CONF_STR_MAX];        /* the next tier's binds, one per replica, separated by
                                       commas; "" when this tier ends the model */
    char coordinator[CONF_STR_MAX]; /* the coordinator's node endpoint */
    int threads;
    double slowdown;
    int heartbeat_ms;
    int heartbeat_timeout_ms;
    int search;                   /* conf_search_t */
    char predictor[CONF_STR_MAX]; /* "" : keep the coordinator's plan, no replanning */
    char ee[CONF_STR_MAX];        /* class-specific early exit (device only); "" none */
    int max_inflight;
    int previous; /* einet_Tier whose feature maps the bind takes; 0: the tier before this */
    /* keys (wire/sec.h); all empty: a keyless cluster */
    char key[CONF_STR_MAX];             /* this node's secret certificate */
    char trust[CONF_STR_MAX];           /* allow-list directory for the bind socket */
    char coordinator_key[CONF_STR_MAX]; /* the coordinator's public certificate */
    char next_key[CONF_MAX_NEXT * CONF_STR_MAX]; /* the next tier's public certificate: one
                                                    for every replica, or one per `next` entry */
    char metrics[CONF_STR_MAX]; /* host:port of GET /metrics, /healthz, /readyz; "" off */
    int log_level, log_format;
    int batch_max;                /* requests run through a block together, at most */
    double batch_wait_ms;         /* how long a request may wait for a batch to fill */
} conf_node_t;

extern const conf_table_t conf_node_table;

/* conf_load with the node table. */
int conf_node_load(conf_node_t *c, const char *path, ei_err_t *err) EI_CHECK;

/* ---- einet-coord ---- */

#define CONF_MAX_TIERS 3

typedef enum conf_interrupt {
    CONF_INTERRUPT_UNIFORM,
    CONF_INTERRUPT_NORMAL,
} conf_interrupt_t;

typedef struct conf_tiers {
    int n;
    int tier[CONF_MAX_TIERS]; /* einet_Tier, in pipeline order */
} conf_tiers_t;

/* A stop rule (proto StopRule): kind 0 none, 1 confidence, 2 entropy, 3 einet. */
typedef struct conf_stop {
    int kind;
    float threshold;
} conf_stop_t;

typedef struct conf_coord {
    char clients[CONF_STR_MAX]; /* bind: requests, queries, faults from clients */
    char nodes[CONF_STR_MAX];   /* bind: the nodes connect here */
    conf_tiers_t tiers;
    int heartbeat_timeout_ms;
    int deadline_ms; /* for requests that set none; 0: no deadline */
    int max_pending;
    int profile_interval_ms;
    char model[CONF_STR_MAX];
    char profile[CONF_STR_MAX];
    char predictor[CONF_STR_MAX];
    /* [planner] */
    int search;    /* conf_search_t */
    int interrupt; /* conf_interrupt_t */
    double mu, sigma;
    int random_plans;
    int seed;
    /* keys (wire/sec.h); both empty: a keyless cluster */
    char key[CONF_STR_MAX];   /* the coordinator's secret certificate */
    char trust[CONF_STR_MAX]; /* allow-list directory: node, client and operator keys */
    char metrics[CONF_STR_MAX]; /* host:port of GET /metrics, /healthz, /readyz; "" off */
    int log_level, log_format;
    char class_names[CONF_STR_MAX * 2]; /* "T-shirt/top,Trouser,...": model_info; "" none */
    conf_stop_t stop; /* [coordinator] stop: the rule of requests that name none */
    /* [journal]: durable requests and answers (coordinator/journal.h) */
    int journal;                   /* 0: none (ids restart at 1, nothing survives a restart) */
    char journal_path[CONF_STR_MAX]; /* "": $EINET_RUN_DIR/coordinator.db, else ./coordinator.db */
    int journal_sync;              /* conf_sync_t */
    int journal_keep_input;        /* keep request images until answered, to continue them */
    int journal_keep_rows;         /* answered requests kept at most (newest) */
    int journal_keep_hours;        /* answered requests kept at most this long */
} conf_coord_t;

typedef enum conf_sync {
    CONF_SYNC_NORMAL = 1, /* SQLite synchronous=NORMAL: survives a process crash */
    CONF_SYNC_FULL = 2,   /* synchronous=FULL: survives a power loss as well */
} conf_sync_t;

extern const conf_table_t conf_coord_table;

int conf_coord_load(conf_coord_t *c, const char *path, ei_err_t *err) EI_CHECK;

#endif
