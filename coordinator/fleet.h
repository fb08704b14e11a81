/* fleet: the coordinator's membership of a cluster with any number of nodes per tier
 * (issue 11). Each node has a unique name (keyless: from its config; with keys: its key's
 * identity) and a place in the pipeline (its tier, which the coordinator's `tiers` key
 * orders). Nodes join by their first heartbeat, are up while they heartbeat within the
 * timeout, drain on SIGTERM, go down when silent and are forgotten after `forget_us` of
 * silence, so a replica can join and leave at run time. The coordinator picks the device of
 * a request that names none here (route.h: the least expected wait, never a node known
 * down). Pure state: callers pass now_us.
 *
 * coord.c keeps both: this per node (membership slots, sends, stats), cluster.h per tier
 * (a tier is up while any of its nodes is; the live profile's measurements); docs/tiers.md,
 * "Replicas and routing". */
#ifndef COORDINATOR_FLEET_H
#define COORDINATOR_FLEET_H

#include <stdint.h>

#include "common/ei.h"
#include "proto/messages.pb.h"

#define FLEET_MAX_NODES 16 /* = MEMBERS_MAX: one membership slot each */
#define FLEET_MAX_TIERS 3
#define FLEET_NAME_MAX 32

typedef enum { FLEET_DOWN = 0, FLEET_UP, FLEET_DRAINING } fleet_state_t;

typedef struct fleet_node {
    int used;
    char name[FLEET_NAME_MAX];
    int tier;                /* einet_Tier */
    int pos;                 /* its tier's pipeline index */
    uint64_t joined_us, last_seen_us;
    uint32_t in_flight;      /* as its last heartbeat said */
    uint32_t first_block, last_block; /* as its last heartbeat said */
    uint32_t sent;           /* requests the coordinator sent it since its last heartbeat */
    int draining;
    int link_down;           /* its outgoing link, as it reports it, is down */
    double ms_per_req;       /* measured time per request; <= 0: not yet */
    uint32_t batch_max;      /* as its last heartbeat said (0: a node that does not say) */
    fleet_state_t state;     /* as of the last fleet_tick */
} fleet_node_t;

typedef struct fleet {
    int n_tiers;
    int tier[FLEET_MAX_TIERS]; /* einet_Tier, in pipeline order */
    uint64_t timeout_us, forget_us;
    fleet_node_t node[FLEET_MAX_NODES];
    unsigned rr;               /* rotates ties between equal replicas */
} fleet_t;

typedef enum { FLEET_EV_UP, FLEET_EV_DRAINING, FLEET_EV_DOWN, FLEET_EV_FORGOTTEN } fleet_ev_kind_t;

typedef struct fleet_event {
    fleet_ev_kind_t kind;
    int node;                /* its index (a forgotten node's slot is free again after) */
    int pos;
    char name[FLEET_NAME_MAX];
} fleet_event_t;

/* tiers: n einet_Tier values in pipeline order. forget_us >= timeout_us. */
void fleet_init(fleet_t *f, const int *tiers, int n, uint64_t timeout_us, uint64_t forget_us);

/* A heartbeat of node `name` of `tier`: the node's index (joined when new). EI_E_INVAL when
 * the tier is not in the pipeline, the name is empty or too long, or the name is held by a
 * node of another tier; EI_E_RANGE when FLEET_MAX_NODES are known. */
int fleet_heartbeat(fleet_t *f, const char *name, int tier, uint32_t in_flight, int draining,
                    uint64_t now_us) EI_CHECK;

/* The node `name` of `tier` without refreshing it: its index, joining it (silent since
 * now_us, down until the next tick) when new; errors as fleet_heartbeat. For a connection
 * that claims a node before the claim is granted. */
int fleet_join(fleet_t *f, const char *name, int tier, uint64_t now_us) EI_CHECK;

/* Fills a StatsReply's nodes: every known node in pipeline order, with its name. */
void fleet_fill(const fleet_t *f, uint64_t now_us, einet_StatsReply *out);

/* The node's index, or -1. */
int fleet_find(const fleet_t *f, const char *name);

/* Re-evaluates every node at now_us; writes up to max events for the changes since the
 * last call. Returns their number. A node silent for forget_us leaves (FORGOTTEN). */
int fleet_tick(fleet_t *f, uint64_t now_us, fleet_event_t *ev, int max);

/* Nodes up at pipeline index pos (as of the last tick). */
int fleet_up(const fleet_t *f, int pos);

/* The node at pipeline index pos to send a request to: up, its link up, least expected wait (its
 * heartbeat's in_flight plus what was sent since, times its measured speed). -1 when none. */
int fleet_pick(fleet_t *f, int pos);
/* As fleet_pick, never node `except` (one that lost what it held: restarted, or dead). */
int fleet_pick_other(fleet_t *f, int pos, int except);

/* The coordinator sent node i a request / heard the end of one there. */
void fleet_sent(fleet_t *f, int i);
void fleet_done(fleet_t *f, int i);

#endif
