/* The option table of einet-coord's config file (docs/config.md describes it for users). */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "wire/conf.h"
#include "wire/wire.h"

#define N(field) offsetof(conf_coord_t, field)
#define S(field) sizeof(((conf_coord_t *)0)->field)

static const conf_choice_t searches[] = {
    {"hybrid", CONF_SEARCH_HYBRID}, {"greedy", CONF_SEARCH_GREEDY}, {"enum", CONF_SEARCH_ENUM},
    {"exact", CONF_SEARCH_EXACT},   {"random", CONF_SEARCH_RANDOM}, {NULL, 0},
};

static const conf_choice_t interrupts[] = {
    {"uniform", CONF_INTERRUPT_UNIFORM},
    {"normal", CONF_INTERRUPT_NORMAL},
    {NULL, 0},
};

static const conf_choice_t syncs[] = {
    {"normal", CONF_SYNC_NORMAL},
    {"full", CONF_SYNC_FULL},
    {NULL, 0},
};

static int tier_of(const char *name, size_t len)
{
    static const char *const names[] = {"device", "edge", "cloud"};
    for (int i = 0; i < 3; i++)
        if (strlen(names[i]) == len && strncasecmp(name, names[i], len) == 0)
            return einet_Tier_TIER_DEVICE + i;
    return 0;
}

/* "device,edge,cloud": the tiers in pipeline order, each once, device first. */
static const char *parse_tiers(const char *text, void *field)
{
    static const char *const expected =
        "expected tiers in pipeline order, each once, such as device,edge,cloud";
    conf_tiers_t t = {0};
    const char *p = text;
    while (*p) {
        size_t len = strcspn(p, ", ");
        int tier = tier_of(p, len);
        if (!tier || t.n == CONF_MAX_TIERS || (t.n && tier <= t.tier[t.n - 1]))
            return expected;
        t.tier[t.n++] = tier;
        p += len;
        p += strspn(p, ", ");
    }
    if (t.n == 0 || t.tier[0] != einet_Tier_TIER_DEVICE)
        return expected;
    *(conf_tiers_t *)field = t;
    return NULL;
}

/* "none", "confidence:T", "entropy:T", "einet:A" (wire_stop_parse). */
static const char *parse_stop(const char *text, void *field)
{
    einet_StopRule r;
    char why[160];
    if (wire_stop_parse(text, &r, why, sizeof why) < 0)
        return "expected none, confidence:T, entropy:T or einet:A with the number in [0, 1]";
    conf_stop_t *s = field;
    s->kind = r.kind;
    s->threshold = r.threshold;
    return NULL;
}

static const conf_option_t options[] = {
    {"coordinator", "clients", CONF_STRING, N(clients), S(clients), 0, 0, NULL, NULL, NULL,
     conf_check_endpoint, "endpoint clients send requests, queries and faults to (bound)"},
    {"coordinator", "nodes", CONF_STRING, N(nodes), S(nodes), 0, 0, NULL, NULL, NULL,
     conf_check_endpoint, "endpoint the nodes connect to (bound)"},
    {"coordinator", "tiers", CONF_CUSTOM, N(tiers), 0, 0, 0, "device,edge,cloud", NULL, parse_tiers,
     NULL, "the tiers of the pipeline, in order"},
    {"coordinator", "heartbeat_timeout_ms", CONF_INT, N(heartbeat_timeout_ms), 0, 10, 600000, "500",
     NULL, NULL, NULL, "a node silent this long is failed: its requests get 'link'"},
    {"coordinator", "deadline_ms", CONF_INT, N(deadline_ms), 0, 0, WIRE_MAX_DEADLINE_MS, "0", NULL,
     NULL, NULL, "deadline of requests that set none; 0: none"},
    {"coordinator", "max_pending", CONF_INT, N(max_pending), 0, 1, 1000000, "1024", NULL, NULL,
     NULL, "requests held at once; more are answered 'rejected'"},
    {"coordinator", "profile_interval_ms", CONF_INT, N(profile_interval_ms), 0, 10, 600000, "1000",
     NULL, NULL, NULL, "how often the live ET-profile is pushed to the nodes"},
    {"coordinator", "model", CONF_PATH, N(model), S(model), 0, 0, NULL, NULL, NULL, NULL,
     "model file: block count and feature-map sizes"},
    {"coordinator", "profile", CONF_PATH, N(profile), S(profile), 0, 0, "", NULL, NULL, NULL,
     "ET/CS-profile file the first plans are made with; empty: the nodes' first reports"},
    {"coordinator", "predictor", CONF_PATH, N(predictor), S(predictor), 0, 0, "", NULL, NULL, NULL,
     "CS-Predictor file; empty: plan from the average CS-profile"},
    {"coordinator", "metrics", CONF_STRING, N(metrics), S(metrics), 0, 0, "", NULL, NULL,
     conf_check_hostport_or_empty,
     "host:port serving GET /metrics, /healthz and /readyz over HTTP; empty: off"},
    {"coordinator", "log_level", CONF_ENUM, N(log_level), 0, 0, 0, "info", conf_log_levels, NULL,
     NULL, "lowest level logged: debug, info, warn or error"},
    {"coordinator", "log_format", CONF_ENUM, N(log_format), 0, 0, 0, "text", conf_log_formats, NULL,
     NULL, "log lines as text (RFC 3339 time, level, key=value) or json (one object a line)"},
    {"coordinator", "class_names", CONF_STRING, N(class_names), S(class_names), 0, 0, "", NULL,
     NULL, NULL, "the classes' names, comma-separated in class order, for model_info; empty: none"},
    {"coordinator", "stop", CONF_CUSTOM, N(stop), 0, 0, 0, "none", NULL, parse_stop, NULL,
     "stop rule of requests that set none: none, confidence:T, entropy:T or einet:A"},
    {"planner", "search", CONF_ENUM, N(search), 0, 0, 0, "hybrid", searches, NULL, NULL,
     "exit-plan search"},
    {"planner", "interrupt", CONF_ENUM, N(interrupt), 0, 0, 0, "uniform", interrupts, NULL, NULL,
     "distribution F of the interruption time over [0, H]"},
    {"planner", "mu", CONF_DOUBLE, N(mu), 0, 0, 1, "0.5", NULL, NULL, NULL,
     "mean of the normal F, as a fraction of H"},
    {"planner", "sigma", CONF_DOUBLE, N(sigma), 0, 0.001, 10, "0.25", NULL, NULL, NULL,
     "deviation of the normal F, as a fraction of H"},
    {"planner", "random_plans", CONF_INT, N(random_plans), 0, 1, 1000000, "100", NULL, NULL, NULL,
     "plans tried by the random search"},
    {"planner", "seed", CONF_INT, N(seed), 0, 0, 2147483647, "1", NULL, NULL, NULL,
     "seed of the random search"},
    {"coordinator", "key", CONF_PATH, N(key), S(key), 0, 0, "", NULL, NULL, NULL,
     "the coordinator's secret certificate (einet keygen); empty: keyless (unauthenticated)"},
    {"coordinator", "trust", CONF_PATH, N(trust), S(trust), 0, 0, "", NULL, NULL, NULL,
     "directory of public certificates (nodes, clients, operators) the sockets admit"},
    {"journal", "enabled", CONF_BOOL, N(journal), 0, 0, 1, "yes", NULL, NULL, NULL,
     "record accepted requests and answers in SQLite, so ids and results survive restarts"},
    {"journal", "path", CONF_PATH_NEW, N(journal_path), S(journal_path), 0, 0, "", NULL, NULL, NULL,
     "the database file; empty: coordinator.db in $EINET_RUN_DIR, else in the working directory"},
    {"journal", "sync", CONF_ENUM, N(journal_sync), 0, 0, 0, "normal", syncs, NULL, NULL,
     "SQLite synchronous: normal survives a crash of the process, full a power loss too"},
    {"journal", "keep_input", CONF_BOOL, N(journal_keep_input), 0, 0, 1, "yes", NULL, NULL, NULL,
     "keep each request's image until it is answered, so a restart can continue it"},
    {"journal", "keep_rows", CONF_INT, N(journal_keep_rows), 0, 1, 2000000000, "1000000", NULL,
     NULL, NULL, "answered requests kept for result queries (the newest ones)"},
    {"journal", "keep_hours", CONF_INT, N(journal_keep_hours), 0, 1, 876000, "168", NULL, NULL,
     NULL, "answered requests older than this are forgotten"},
};

static const char *finish(void *target, const char **key)
{
    conf_coord_t *c = target;
    if (strcmp(c->clients, c->nodes) == 0) {
        *key = "nodes";
        return "'nodes' and 'clients' must be different endpoints";
    }
    if (!c->key[0] != !c->trust[0]) {
        *key = c->key[0] ? "key" : "trust";
        return "'key' and 'trust' go together: both (CURVE) or neither (keyless)";
    }
    return NULL;
}

const conf_table_t conf_coord_table = {options, sizeof options / sizeof options[0], finish};

int conf_coord_load(conf_coord_t *c, const char *path, ei_err_t *err)
{
    memset(c, 0, sizeof *c);
    return conf_load(&conf_coord_table, c, path, err);
}
