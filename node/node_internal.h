/* What node.c (lifecycle, timers), node_recv.c (the three sockets), node_send.c (sending,
 * faults on the next link, hand-backs) and tier_run.c (jobs and compute) share. */
#ifndef NODE_INTERNAL_H
#define NODE_INTERNAL_H

#include <stdint.h>

#include <uv.h>

#include "nn/ee.h"
#include "nn/model.h"
#include "runtime/fault.h"
#include "runtime/handoff.h"
#include "runtime/route.h"
#include "node/link.h"
#include "node/metrics.h"
#include "node/node.h"
#include "runtime/replan.h"
#include "runtime/scores.h"
#include "node/slow.h"
#include "planner/planner.h"
#include "wire/members.h"
#include "wire/sec.h"
#include "wire/wire.h"

#define NODE_MAX_BLOCKS WIRE_MAX_BLOCKS
#define NODE_CANCEL_RING 1024
#define NODE_REPORT_MS 1000
#define NODE_WARMUP_RUNS 3
/* Samples a reported mean takes at least (block times). */
#define NODE_REPORT_MIN 20
#define NODE_MAX_BATCH 256
/* Next-tier replicas a node sends to at most (its `next` list). */
#define NODE_MAX_NEXT CONF_MAX_NEXT
/* Maps kept for failover until the next tier takes them over (beyond: sent, not kept). */
#define NODE_LEDGER_MAX 8192
/* Senders one request's job answers `taken` to (a map resent to this node again). */
#define NODE_JOB_PEERS 4
/* Requests this node recently passed on or ended (a duplicate map for one is dropped). */
#define NODE_PASSED_RING 4096

/* One request on this tier: from its input (task image or received feature map) through
 * blocks start..last_block. */
typedef struct job {
    uint64_t request_id;
    int start, k;             /* first block here, next block to run (1-based) */
    uint8_t plan[NODE_MAX_BLOCKS];
    uint64_t elapsed0_us;     /* request time on arrival */
    uint64_t recv_us;         /* monotonic arrival */
    uint64_t mark_ns;         /* when its last block here ended (exit stamped), or arrival */
    int policy;               /* einet_Policy: planned (replans), fixed, confidence */
    int has_dist;             /* planned for its own interruption distribution */
    planner_dist_t dist;
    int has_deadline;
    uint64_t deadline_us;
    xport_msg_t *msg;         /* owns the input's bytes */
    float *own;               /* or this copy does (a map that came in a batch) */
    const float *input;
    const nn_tensor_t *cur;   /* map after block k-1 (a view of the batch's model-owned map,
                                 in curv); NULL before the first */
    nn_tensor_t curv;
    nn_tensor_t tapv[NODE_MAX_BLOCKS];
    float probs[WIRE_MAX_CLASSES]; /* block k's exit, when its branch ran */
    int done;                 /* answered, forwarded or dropped: rides out the batch idle */
    int branch_ran;           /* block k's branch ran (for the slow-down wait) */
    int ee_fired;             /* the device's class-specific exit accepted at block k */
    float ee_pk;              /* its P(k) */
    const nn_tensor_t *taps[NODE_MAX_BLOCKS]; /* conv outputs so far, for the EE */
    int nseen;
    scores_seen_t seen[NODE_MAX_BLOCKS];
    replan_exit_t arrive[NODE_MAX_BLOCKS];
    int stop_kind;            /* the request's stop rule (planner/stop.h), 0: none */
    double stop_threshold;
    double mflop;             /* compute spent on the request so far, conv parts and branches */
    struct node *owner;       /* set for a map: its leaving is told to its senders */
    uint64_t map_sent_at;     /* the map's sent_at_us: with the id, what a resent copy repeats */
    int npeers;               /* the previous tier's senders of its map (bind connections), */
    xport_peer_t peers[NODE_JOB_PEERS]; /* told `taken` when the job leaves this node */
    struct job *next;
} job_t;

/* A message to the coordinator that ZeroMQ could not take (its queue was full): kept, in
 * order, and sent again before anything that must follow it. */
typedef struct outbox_msg {
    struct outbox_msg *next;
    size_t len;
    uint8_t bytes[];
} outbox_msg_t;

/* Messages the outbox holds at most; beyond, a message is dropped and counted (the
 * coordinator then answers its request at its own expiry). */
#define NODE_OUTBOX_MAX 100000
/* ZeroMQ's queue towards the coordinator, in messages (exit results are ~100 bytes). */
#define NODE_COORD_HWM 20000

/* A message held back by an injected delay on the next link. */
typedef struct delayed {
    uint64_t at_us;
    int outgoing;
    uint8_t *frame0;          /* outgoing: the encoded envelope */
    size_t len0;
    float *tensor;            /* outgoing: the tensor frame, or NULL */
    size_t tensor_bytes;
    uint64_t request_id;      /* outgoing feature map: its request, for a hand-back */
    int replica;              /* the next-tier replica it goes to or came from */
    xport_msg_t *msg;         /* incoming */
    struct delayed *next;
} delayed_t;

/* One replica of the next tier: its own socket and link state (heartbeats, round trips),
 * what its heartbeat replies say of it, and whether its maps wait to be moved. */
typedef struct node_next {
    struct node *nd;
    int i;
    xport_t *x;
    char endpoint[CONF_STR_MAX];
    char name[32];            /* from its heartbeat replies; "" before the first */
    link_state_t link;
    uint64_t instance;        /* its process, as its last reply said; 0: none yet */
    uint32_t in_flight;       /* its queue, as its last reply said */
    double ms_per_req;        /* its time per request, as its last reply said */
    int draining;
    int next_down;            /* it reports no link up to its own next tier */
    int lost;                 /* found dead (or restarted): its held maps are to move */
    uint64_t lost_us;         /* when it was found so */
    wire_batch_out_t ob;      /* maps coalesced for it (node__coalesce_begin) */
    size_t ob_probe;          /* their tensor bytes: the one probe after the batch */
} node_next_t;

struct node {
    conf_node_t conf;
    uv_loop_t *loop;
    void *zctx;
    nn_model_t *model;
    ee_t *ee;                 /* the device's class-specific early exit, or NULL */
    int n, classes;
    nn_shape_t in_shape;
    xport_t *coord, *bind;
    node_next_t nx[NODE_MAX_NEXT]; /* the next tier's replicas (`next`), n_next of them */
    int n_next;
    handoff_t *ledger;        /* maps sent and not yet taken over (runtime/handoff.h) */
    uint64_t instance;        /* random per process, in heartbeat replies */
    unsigned route_rr;        /* rotates ties between equal replicas */
    int failing;              /* node__failover runs (no re-entry) */
    /* maps whose jobs left this node (passed on or ended), by request id and the map's
     * sent_at_us: a resent copy of one of them (failover) is a duplicate; a new map for the
     * same request (a restarted coordinator sending the task again) is not */
    struct { uint64_t id, sent_at; } passed[NODE_PASSED_RING];
    int passed_at;
    uv_timer_t hb_timer, report_timer, slow_timer, delay_timer;
    uv_idle_t work;
    int handles_open;
    /* jobs: a FIFO, and the batch running through the blocks (batch_max at most) */
    job_t *head, *tail;
    job_t *batch[NODE_MAX_BATCH];
    int bn;                   /* jobs in the batch; 0: none runs */
    const nn_tensor_t *bcur;  /* the batch's map after its previous block (model-owned) */
    float *bin, *bsub, *bprobs; /* batch input gathered, branch subset gathered, probs */
    uv_timer_t batch_timer;   /* the wait for a batch to fill (batch_wait_ms) */
    int batch_timing;         /* batch_timer runs */
    int queued, waiting;
    slow_t slow;              /* the slow-down's wait still owed */
    /* links */
    link_state_t coord_link;  /* to the coordinator (round trips only) */
    int link_reported;        /* -1: never, else the state last reported */
    fault_state_t fault;
    delayed_t *delayed;       /* held by injected faults, in delivery order */
    int held[2];              /* of them, outgoing (FAULT_OUT) and incoming (FAULT_IN) */
    uint64_t hb_seq, seq;
    /* planning */
    planner_t *planner;
    planner_search_t search;
    uint64_t profile_version;
    double result_ms[NODE_MAX_BLOCKS], link_ms[NODE_MAX_BLOCKS];
    double dispatch_ms;       /* the coordinator's receipt to the device's start */
    scores_t scores;          /* a prior until the validation scores are computed */
    uv_work_t scores_work;
    scores_t scores_next;     /* computed off the loop thread */
    int scores_rc, scores_busy;
    /* measured times of this node's blocks, ms, as the emulated machine takes them */
    double conv_ms[NODE_MAX_BLOCKS], branch_ms[NODE_MAX_BLOCKS];
    uint32_t conv_n[NODE_MAX_BLOCKS];
    /* since the last mean reported: sums and counts of the same (reported as means once
     * NODE_REPORT_MIN came), the last means reported; the transfers of the maps received
     * and the hand-overs of the maps sent since the last report */
    double conv_sum[NODE_MAX_BLOCKS], branch_sum[NODE_MAX_BLOCKS];
    uint32_t branch_n[NODE_MAX_BLOCKS];
    double conv_rep[NODE_MAX_BLOCKS], branch_rep[NODE_MAX_BLOCKS];
    double transfer_sum_ms, boundary_sum_ms;
    uint32_t transfer_n, boundary_n;
    uint64_t cancelled[NODE_CANCEL_RING];
    int cancel_at;
    int draining, closed;
    int exit_code;            /* 2 once the node refused to run (node__check_chain) */
    node_counts_t counts;
    float probs[WIRE_MAX_CLASSES];
    /* trust */
    sec_t *sec;               /* keys, or keyless */
    int prev_tier;            /* the tier whose maps the bind takes */
    members_t prev;           /* which connections on the bind are that tier's nodes */
    char prev_id[MEMBERS_MAX][MEMBERS_KEY_MAX]; /* each slot's node: its key, or its name */
    uint64_t logged_bad;      /* refusals logged (the first NODE_LOG_BAD, then every 1000th) */
    node_metrics_t metrics; /* GET /metrics (node/metrics.h) */
    double conv_mflop[NODE_MAX_BLOCKS], branch_mflop[NODE_MAX_BLOCKS]; /* the model's */
    outbox_msg_t *outbox, **outbox_tail;
    int outbox_n;
    /* Between node__coalesce_begin and _end (a batch's results going out), the messages to
     * the coordinator, to each next replica and the `taken` to one previous node are
     * collected and leave as one message per peer (proto/messages.proto, Batch). */
    int coalescing;
    wire_batch_out_t ob_coord, ob_taken;
    xport_peer_t ob_taken_peer;
};

#define NODE_LOG_BAD 10

/* Logs a refusal or a peer's complaint, rate-limited (a flood must not fill the disk). */
void node__log_bad(node_t *nd, const char *fmt, ...) EI_PRINTF(2, 3);

/* Monotonic and wall-clock microseconds. */
uint64_t node__now_us(void);
uint64_t node__wall_us(void);

/* The link this node's next socket carries (device-edge for the device, edge-cloud for the
 * edge), as the protocol numbers it. */
int node__link_id(const node_t *nd);
const char *node__link_name(const node_t *nd);
const char *node__tier_name(int tier);

/* node.c: checks the node's model against the coordinator's at the node's first and last
 * block (the coordinator's heartbeat reply); a model that does not chain with the tiers
 * around it makes the node say so in one line and drain, to exit with code 2. */
void node__check_chain(node_t *nd, const einet_HeartbeatReply *r);

/* node_recv.c */
void node__on_coord(xport_t *x, xport_msg_t **msg_p, void *arg);
void node__on_bind(xport_t *x, xport_msg_t **msg_p, void *arg);
/* arg: the replica (node_next_t) */
void node__on_next(xport_t *x, xport_msg_t **msg_p, void *arg);
void node__handle_next(node_t *nd, int r, xport_msg_t **msg_p);

/* node_send.c */
/* Sends to the coordinator (sets env->seq). Exit results, hand-backs and link reports that
 * ZeroMQ cannot take now wait in the outbox, in order (0 is returned); heartbeats and
 * profile reports are not kept (the next one replaces them). 0 or a negative code
 * (counted). */
int node__send_coord(node_t *nd, einet_Envelope *env);
/* Sends what the outbox holds, in order, until ZeroMQ refuses again. Called with every
 * heartbeat and before every send to the coordinator. */
void node__outbox_flush(node_t *nd);
/* Frees what the outbox still holds (at close). */
void node__outbox_free(node_t *nd);
/* Sends to next-tier replica r through the link's injected faults (sets env->seq): 0 when
 * sent, dropped or held back; EI_E_PEER when ZeroMQ refused it (r is then down). */
int node__send_next(node_t *nd, int r, einet_Envelope *env, const float *tensor, size_t numel,
                    uint64_t request_id);
/* 1 while any next-tier replica's link is up. */
int node__next_up(const node_t *nd);
/* The job leaves this node (done, forwarded, dropped): its senders are told `taken` and the
 * request is remembered as passed (a duplicate map is then dropped). */
void node__job_leaves(node_t *nd, job_t *j);
/* Replica r was found dead: its held maps move to other alive replicas (or go back to the
 * coordinator when none is left). */
void node__next_lost(node_t *nd, int r, const char *why);
/* Moves what dead replicas held and drops kept maps past their deadline. */
void node__failover(node_t *nd);
/* Holds an incoming message from next-tier replica r back until at_us (takes *msg_p). */
int node__delay_incoming(node_t *nd, int r, xport_msg_t **msg_p, uint64_t at_us);
/* Sends a feature map (env, its tensor) to the replica route_pick chooses and keeps a copy
 * in the ledger; a replica refusing it is marked down and another tried. 0, or EI_E_PEER
 * when no replica is alive. */
int node__send_map(node_t *nd, einet_Envelope *env, const float *tensor, size_t numel,
                   uint64_t request_id);
/* From begin to end, messages to the coordinator that must arrive in order (exit results,
 * hand-backs, link reports, moves), feature maps sent now to a next replica and `taken` are
 * collected per peer; end sends each peer's as one message (one message as itself), in
 * that order: coordinator, replicas, previous tier, and one probe heartbeat per replica. A
 * batch the coordinator's socket refuses waits in the outbox message by message; one a
 * replica refuses marks it down, and the ledger's copies move (node__link_down). Must not
 * span a turn of the loop. */
void node__coalesce_begin(node_t *nd);
void node__coalesce_end(node_t *nd);
/* Tells the previous tier's node at peer (on the bind) that this tier took request_id over. */
void node__send_taken(node_t *nd, const xport_peer_t *peer, uint64_t request_id);
void node__hand_back(node_t *nd, uint64_t request_id, const char *why);
void node__report_link(node_t *nd);
/* Heartbeats every next-tier replica, or only r (r >= 0) with probe_bytes for bandwidth. */
void node__heartbeat_next(node_t *nd, int r, size_t probe_bytes);
void node__delay_fire(uv_timer_t *t);
/* Drain: frees everything held, handing back held feature maps. */
void node__delay_clear(node_t *nd);
/* Replica r's link was declared down (r < 0: every replica's): what was held for it is
 * lost with the connection (the ledger keeps the maps, which move to another replica). */
void node__delay_discard(node_t *nd, int r);
/* A clear: everything held goes now, in order. */
void node__delay_release(node_t *nd);
/* Declares replica r's link down: logs, discards what it held, moves its maps, and reports
 * to the coordinator when no replica is left up. */
void node__link_down(node_t *nd, int r, const char *why);

/* tier_run.c */
/* Sets a job's exit policy from a task or map (interrupt NULL: the node's uniform). */
void node__job_policy(job_t *j, int policy, const einet_Interrupt *interrupt);
/* Takes a job (a parsed task or map); hands it back when the node is draining or full. */
void node__job_add(node_t *nd, job_t *job);
void node__job_free(job_t **job_p);
void node__work(uv_idle_t *h);
void node__slow_done(uv_timer_t *t);
void node__batch_wait_done(uv_timer_t *t);
/* Jobs held: queued plus running. */
int node__inflight(const node_t *nd);
/* The batch buffers for conf.batch_max requests (node_new). */
int node__batch_alloc(node_t *nd, ei_err_t *err) EI_CHECK;
void node__batch_free(node_t *nd);
/* Drops queued jobs of a request the coordinator has answered. */
void node__cancel(node_t *nd, uint64_t request_id);
int node__is_cancelled(const node_t *nd, uint64_t request_id);
/* Hands back every queued job (draining). */
void node__hand_back_queue(node_t *nd);
void node__maybe_close(node_t *nd);
/* Runs every block of this node a few times on zeros: warms caches, seeds the timings. */
int node__warmup(node_t *nd, ei_err_t *err) EI_CHECK;

#endif
