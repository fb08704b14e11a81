/* What coord.c (lifecycle, timers, cluster events, answers) and coord_recv.c (the clients
 * and nodes sockets) share. */
#ifndef COORDINATOR_COORD_INTERNAL_H
#define COORDINATOR_COORD_INTERNAL_H

#include <stdint.h>

#include <uv.h>

#include "coordinator/cluster.h"
#include "coordinator/coord.h"
#include "coordinator/liveprof.h"
#include "coordinator/owners.h"
#include "coordinator/metrics.h"
#include "coordinator/requests.h"
#include "coordinator/stats.h"
#include "nn/model.h"
#include "runtime/scores.h"
#include "wire/members.h"
#include "wire/sec.h"
#include "wire/wire.h"

/* Why a message was refused, counted per socket (StatsReply.refusals). */
typedef enum {
    COORD_REF_MALFORMED,    /* does not decode, or not a message this socket takes */
    COORD_REF_UNKNOWN_NODE, /* from a connection that is no node of the pipeline */
    COORD_REF_DUPLICATE,    /* claims a node that a live connection holds */
    COORD_REF_FORBIDDEN,    /* the sender's key has not the role for it */
    COORD_REF_NOT_OWNER,    /* a client key asked for another key's result */
    COORD_REF_NOT_ITS_EXIT, /* an exit result for blocks the sender does not run */
    COORD_REF_FRAMES,       /* more frames than any message has (dropped by xport) */
    COORD_REFUSALS
} coord_refusal_t;

struct coord {
    conf_coord_t conf;
    uv_loop_t *loop;
    void *zctx;
    nn_model_t *model;
    int n;
    nn_shape_t in_shape;
    xport_t *clients, *nodes;
    reqs_t *reqs;
    stats_t *stats;
    cluster_t cluster;
    liveprof_t *prof;
    scores_t scores;          /* a prior until the validation scores are computed */
    uv_work_t scores_work;
    scores_t scores_next;     /* computed off the loop thread */
    int scores_rc, scores_busy, scores_computed;
    uv_timer_t tick_timer, expiry_timer, profile_timer;
    uint64_t expiry_armed_us; /* 0: not armed */
    uint64_t start_us, seq;
    int closing, handles_open;
    int trace; /* $EINET_COORD_TRACE set: log every exit result */
    uint64_t logged_bad[STATS_SOCKS];
    sec_t *sec;                 /* keys, or keyless */
    members_t members;          /* which connection is each pipeline position's node */
    owners_t *owners;           /* which key submitted each recent request */
    uint64_t refused[STATS_SOCKS][COORD_REFUSALS];
    uint64_t dropped_seen[STATS_SOCKS]; /* of xport's dropped counts, already counted */
    coord_metrics_t metrics; /* GET /metrics (coordinator/metrics.h) */
};

uint64_t coord__now_us(void);
uint64_t coord__uptime_us(const coord_t *c);

/* coord.c */
void coord__on_answer(const reqs_done_t *d, void *arg);
void coord__arm_expiry(coord_t *c);
void coord__tick(coord_t *c);
void coord__push_profile(coord_t *c, int pos);
int coord__send_node(coord_t *c, int pos, einet_Envelope *env, const float *tensor, size_t numel);

/* The names of a `class_names` list, into out (NULL: only counted). Their number, or
 * -1 - i when name i (0-based) is empty or too long for the protocol. */
int coord__class_names(const char *list, einet_ModelInfoReply *out);

/* coord_recv.c */
/* Counts the messages xport dropped for having too many frames as refused. */
void coord__count_dropped(coord_t *c);
void coord__fill_refusals(const coord_t *c, einet_StatsReply *s);
void coord__on_clients(xport_t *x, xport_msg_t **msg_p, void *arg);
void coord__on_nodes(xport_t *x, xport_msg_t **msg_p, void *arg);

#endif
