/* The option table of einet-node's config file (docs/config.md describes it for users). */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "wire/conf.h"
#include "wire/wire.h"

#define N(field) offsetof(conf_node_t, field)
#define S(field) sizeof(((conf_node_t *)0)->field)

static const conf_choice_t tiers[] = {
    {"device", einet_Tier_TIER_DEVICE},
    {"edge", einet_Tier_TIER_EDGE},
    {"cloud", einet_Tier_TIER_CLOUD},
    {NULL, 0},
};

static const conf_choice_t previous_tiers[] = {
    {"auto", 0},
    {"device", einet_Tier_TIER_DEVICE},
    {"edge", einet_Tier_TIER_EDGE},
    {NULL, 0},
};

static const conf_choice_t searches[] = {
    {"hybrid", CONF_SEARCH_HYBRID}, {"greedy", CONF_SEARCH_GREEDY}, {"enum", CONF_SEARCH_ENUM},
    {"exact", CONF_SEARCH_EXACT},   {"random", CONF_SEARCH_RANDOM}, {NULL, 0},
};

/* Block indices are bounded by the wire protocol's plan length (WIRE_MAX_BLOCKS). */
static const conf_option_t options[] = {
    {"node", "tier", CONF_ENUM, N(tier), 0, 0, 0, NULL, tiers, NULL, NULL,
     "which tier this process is: device, edge or cloud"},
    {"node", "name", CONF_STRING, N(name), S(name), 0, 0, "", NULL, NULL, NULL,
     "this node's name, unique in the cluster (letters, digits, . _ -); default: the tier's"},
    {"node", "first_block", CONF_INT, N(first_block), 0, 1, WIRE_MAX_BLOCKS, NULL, NULL, NULL, NULL,
     "first block k this tier runs (1-based)"},
    {"node", "last_block", CONF_INT, N(last_block), 0, 1, WIRE_MAX_BLOCKS, NULL, NULL, NULL, NULL,
     "last block this tier runs; the model's last block on the final tier"},
    {"node", "model", CONF_PATH, N(model), S(model), 0, 0, NULL, NULL, NULL, NULL,
     "model file (safetensors with the architecture in its metadata)"},
    {"node", "bind", CONF_STRING, N(bind), S(bind), 0, 0, "", NULL, NULL,
     conf_check_endpoint_or_empty,
     "endpoint the previous tier sends feature maps to; required on edge and cloud"},
    {"node", "next", CONF_STRING, N(next), S(next), 0, 0, "", NULL, NULL,
     conf_check_endpoint_list,
     "the next tier's bind endpoints, one per replica, separated by commas (each map goes to "
     "the replica with the least expected wait, and moves to another when it dies); empty "
     "when this tier runs the model's last block"},
    {"node", "coordinator", CONF_STRING, N(coordinator), S(coordinator), 0, 0, NULL, NULL, NULL,
     conf_check_endpoint, "the coordinator's node endpoint (its [coordinator] nodes key)"},
    {"node", "threads", CONF_INT, N(threads), 0, 1, 64, "1", NULL, NULL, NULL,
     "compute threads (OpenBLAS and block workers)"},
    {"node", "slowdown", CONF_DOUBLE, N(slowdown), 0, 1, 1000, "1", NULL, NULL, NULL,
     "compute slow-down factor emulating a weaker machine (1: none)"},
    {"node", "heartbeat_ms", CONF_INT, N(heartbeat_ms), 0, 5, 60000, "100", NULL, NULL, NULL,
     "interval of heartbeats to the coordinator and the next tier"},
    {"node", "heartbeat_timeout_ms", CONF_INT, N(heartbeat_timeout_ms), 0, 10, 600000, "500", NULL,
     NULL, NULL, "a peer silent this long is taken as failed"},
    {"node", "search", CONF_ENUM, N(search), 0, 0, 0, "hybrid", searches, NULL, NULL,
     "exit-plan search used when replanning"},
    {"node", "predictor", CONF_PATH, N(predictor), S(predictor), 0, 0, "", NULL, NULL, NULL,
     "CS-Predictor file; empty: keep the plan the coordinator sent"},
    {"node", "ee", CONF_PATH, N(ee), S(ee), 0, 0, "", NULL, NULL, NULL,
     "class-specific early-exit file (device only); empty: none"},
    {"node", "max_inflight", CONF_INT, N(max_inflight), 0, 1, 100000, "64", NULL, NULL, NULL,
     "requests held at once; more are handed back as failed"},
    {"node", "previous", CONF_ENUM, N(previous), 0, 0, 0, "auto", previous_tiers, NULL, NULL,
     "the tier whose feature maps the bind takes; auto: device for the edge, edge for the cloud"},
    {"node", "key", CONF_PATH, N(key), S(key), 0, 0, "", NULL, NULL, NULL,
     "this node's secret certificate (einet keygen); empty: keyless (unauthenticated)"},
    {"node", "trust", CONF_PATH, N(trust), S(trust), 0, 0, "", NULL, NULL, NULL,
     "directory of public certificates the bind socket admits (with 'key', on edge and cloud)"},
    {"node", "coordinator_key", CONF_PATH, N(coordinator_key), S(coordinator_key), 0, 0, "", NULL,
     NULL, NULL, "the coordinator's public certificate (with 'key')"},
    {"node", "next_key", CONF_PATH_LIST, N(next_key), S(next_key), 0, 0, "", NULL, NULL, NULL,
     "the next tier's public certificates (with 'key', when 'next' is set): one for every "
     "replica 'next' lists, or one per entry of 'next', in its order"},
    {"node", "metrics", CONF_STRING, N(metrics), S(metrics), 0, 0, "", NULL, NULL,
     conf_check_hostport_or_empty,
     "host:port serving GET /metrics, /healthz and /readyz over HTTP; empty: off"},
    {"node", "log_level", CONF_ENUM, N(log_level), 0, 0, 0, "info", conf_log_levels, NULL,
     NULL, "lowest level logged: debug, info, warn or error"},
    {"node", "log_format", CONF_ENUM, N(log_format), 0, 0, 0, "text", conf_log_formats, NULL,
     NULL, "log lines as text (RFC 3339 time, level, key=value) or json (one object a line)"},
    {"node", "batch_max", CONF_INT, N(batch_max), 0, 1, 256, "12", NULL, NULL, NULL,
     "dynamic batching: queued requests run through a block together, at most this many "
     "(1: one at a time)"},
    {"node", "batch_wait_ms", CONF_DOUBLE, N(batch_wait_ms), 0, 0, 1000, "0", NULL, NULL, NULL,
     "dynamic batching: how long the oldest queued request may wait for more to join its "
     "batch (0: run what is queued at once)"},
};

/* Keys are all or nothing: with 'key', every socket of the node needs its counterpart. */
static const char *finish_keys(const conf_node_t *c, const char **key)
{
    int any = c->key[0] || c->trust[0] || c->coordinator_key[0] || c->next_key[0];
    if (!any)
        return NULL;
    *key = "key";
    if (!c->key[0])
        return "'trust', 'coordinator_key' or 'next_key' is set but 'key' is not";
    *key = "coordinator_key";
    if (!c->coordinator_key[0])
        return "'key' is set but 'coordinator_key' (the coordinator's public certificate) is not";
    *key = "next_key";
    if (c->next[0] && !c->next_key[0])
        return "'key' and 'next' are set but 'next_key' (the next tier's public certificate) "
               "is not";
    char list[CONF_MAX_NEXT][CONF_STR_MAX];
    int nk = conf_list_split(c->next_key, list, CONF_MAX_NEXT);
    int nn = conf_list_split(c->next, list, CONF_MAX_NEXT);
    if (nk > 1 && nk != nn)
        return "'next_key' lists a different number of certificates than 'next' has endpoints "
               "(one for all, or one per endpoint in the same order)";
    *key = "trust";
    if (c->bind[0] && !c->trust[0])
        return "'key' and 'bind' are set but 'trust' (the allow-list directory) is not";
    return NULL;
}

/* Relations between keys; the returned key is the one whose line the error points at. */
static const char *finish(void *target, const char **key)
{
    static _Thread_local char msg[160];
    conf_node_t *c = target;
    if (c->last_block < c->first_block) {
        *key = "last_block";
        snprintf(msg, sizeof msg, "'last_block' (%d) is before 'first_block' (%d)", c->last_block,
                 c->first_block);
        return msg;
    }
    for (const char *p = c->name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-')) {
            *key = "name";
            return "'name' may hold only letters, digits, '.', '_' and '-'";
        }
    if (c->tier != einet_Tier_TIER_DEVICE && !c->bind[0]) {
        *key = "tier";
        return "'bind' is required on the edge and cloud tiers (the previous tier sends there)";
    }
    if (c->tier != einet_Tier_TIER_DEVICE && c->ee[0]) {
        *key = "ee";
        return "'ee' (class-specific early exit) is only for the device tier";
    }
    char next[CONF_MAX_NEXT][CONF_STR_MAX];
    int nn = conf_list_split(c->next, next, CONF_MAX_NEXT);
    for (int i = 0; i < nn; i++)
        if (strcmp(next[i], c->bind) == 0) {
            *key = "next";
            return "'next' lists this node's own 'bind' endpoint";
        }
    if (c->heartbeat_timeout_ms <= c->heartbeat_ms) {
        *key = "heartbeat_timeout_ms";
        return "'heartbeat_timeout_ms' must be longer than 'heartbeat_ms'";
    }
    if (c->previous && c->previous >= c->tier) {
        *key = "previous";
        return "'previous' must be a tier before this one";
    }
    return finish_keys(c, key);
}

const conf_table_t conf_node_table = {options, sizeof options / sizeof options[0], finish};

int conf_node_load(conf_node_t *c, const char *path, ei_err_t *err)
{
    memset(c, 0, sizeof *c);
    return conf_load(&conf_node_table, c, path, err);
}
