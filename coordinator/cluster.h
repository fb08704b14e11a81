/* cluster: the nodes and links as the coordinator sees them. Each tier of the pipeline
 * (`[coordinator] tiers`, device first) is a node that heartbeats the coordinator and
 * reports the state of its outgoing link; this module keeps what they said, decides who is
 * healthy (docs/protocol.md, "Health in stats_reply"), turns changes into events the
 * coordinator acts on, and fills the nodes and links of a StatsReply.
 *
 * Positions: pipeline index 0..n_tiers-1; the link leaving index i is einet_Link i + 1
 * (device-edge, edge-cloud). Pure state: callers pass now_us. */
#ifndef COORDINATOR_CLUSTER_H
#define COORDINATOR_CLUSTER_H

#include <stdint.h>

#include "proto/messages.pb.h"
#include "wire/conf.h"

#define CLUSTER_MAX_BLOCKS 128

typedef enum { CLUSTER_DOWN = 0, CLUSTER_UP, CLUSTER_DRAINING } cluster_state_t;

typedef struct cluster_node {
    int tier; /* einet_Tier */
    int seen; /* a heartbeat has come since the node was last lost */
    uint64_t last_seen_us;
    uint32_t first_block, last_block, in_flight;
    int draining;
    cluster_state_t state; /* as of the last cluster_tick */
    /* its outgoing link, as it reports it */
    int link_reported_up;
    int link_up; /* as of the last cluster_tick: reported up and the node up */
    float link_latency_ms, link_bw_mbps;
    uint64_t link_samples;
    float coord_latency_ms;
    float prev_transfer_ms;   /* mean transfer of maps into this node, as it measured them */
    uint64_t prev_samples;
    float boundary_ms;        /* its last exit to its feature map leaving */
    uint64_t reports; /* profile reports received */
} cluster_node_t;

typedef struct cluster {
    int n_tiers, n_blocks;
    uint64_t timeout_us;
    cluster_node_t node[CONF_MAX_TIERS];
    /* measured block times from the nodes' reports (ms); samples 0: none yet */
    float conv_ms[CLUSTER_MAX_BLOCKS], branch_ms[CLUSTER_MAX_BLOCKS];
    uint32_t samples[CLUSTER_MAX_BLOCKS];
    int changed; /* a report changed the measurements since cluster_take_changed */
} cluster_t;

typedef enum {
    CLUSTER_EV_NODE_UP,
    CLUSTER_EV_NODE_DOWN,     /* silent for the timeout: its requests are cut off */
    CLUSTER_EV_NODE_DRAINING, /* SIGTERM: no new work, it hands back what it holds */
    CLUSTER_EV_LINK_UP,
    CLUSTER_EV_LINK_DOWN,
} cluster_ev_kind_t;

typedef struct cluster_event {
    cluster_ev_kind_t kind;
    int pos; /* the node, or the node the link leaves */
    char what[64];
} cluster_event_t;

void cluster_init(cluster_t *c, const conf_tiers_t *tiers, int n_blocks, uint64_t timeout_us);

/* Pipeline index of a tier, -1 when it is not in the pipeline. */
int cluster_pos(const cluster_t *c, int tier);
/* The tier name used as routing id and in messages: "device", "edge", "cloud". */
const char *cluster_tier_name(int tier);
/* "device-edge", "edge-cloud" */
const char *cluster_link_name(int link);

void cluster_heartbeat(cluster_t *c, int pos, const einet_Heartbeat *h, uint64_t now_us);
/* A node's report of its outgoing link (a Fault body: down_ms > 0 down, clear up). 0, or
 * EI_E_RANGE when the link is not the one leaving that node. */
int cluster_link_report(cluster_t *c, int pos, const einet_Fault *f);
void cluster_profile(cluster_t *c, int pos, const einet_ProfileReport *r);

/* Re-evaluates every node and link at now_us; writes up to 2 * CONF_MAX_TIERS events for
 * the changes since the last call into ev. Returns their number. */
int cluster_tick(cluster_t *c, uint64_t now_us, cluster_event_t *ev);

/* The first pipeline index a new request cannot reach as of the last tick: a node not up,
 * or the node after a link that is down. n_tiers when the whole path works. */
int cluster_broken(const cluster_t *c);

/* 1 once every node is up and every link is up (as of the last tick). */
int cluster_all_healthy(const cluster_t *c);

/* Fills the nodes and links of a StatsReply. */
void cluster_fill(const cluster_t *c, uint64_t now_us, einet_StatsReply *out);

/* Returns and clears the "measurements changed" flag. */
int cluster_take_changed(cluster_t *c);

#endif
