/* What coord.c (lifecycle, timers, cluster events, answers) and coord_recv.c (the clients
 * and nodes sockets) share. */
#ifndef COORDINATOR_COORD_INTERNAL_H
#define COORDINATOR_COORD_INTERNAL_H

#include <stdint.h>

#include <uv.h>

#include "coordinator/cluster.h"
#include "coordinator/coord.h"
#include "coordinator/journal.h"
#include "coordinator/fleet.h"
#include "coordinator/liveprof.h"
#include "coordinator/owners.h"
#include "coordinator/metrics.h"
#include "coordinator/requests.h"
#include "coordinator/resend.h"
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
    COORD_REF_NAME,         /* a node key claiming another node's name */
    COORD_REFUSALS
} coord_refusal_t;
/* A message to a client, sent only once the journal batch it depends on is committed:
 * acknowledgements, answers and query replies leave in the order they were made. */
typedef struct coord_out {
    struct coord_out *next;
    xport_peer_t peer;
    uint64_t answer_id; /* an answer: its request id, marked undelivered if the send fails */
    size_t len;
    uint8_t bytes[];
} coord_out_t;

/* A request accepted while the coordinator starts (or recorded before a restart), held
 * until the cluster is known: its image and its deadline on this process's clock. */
typedef struct coord_held {
    uint64_t id;
    uint64_t deadline_at_us; /* 0: none */
    uint32_t deadline_ms;
    float *input;
    size_t numel;
    int has_stop; /* the request's own stop rule (one recorded before a restart: none) */
    einet_StopRule stop;
} coord_held_t;

/* Tasks waiting for the end of the loop's turn to leave for one device, as one message
 * (coord_tasks.c): the encoded tasks and their requests' ids. */
typedef struct coord_taskq {
    wire_batch_out_t b;
    int ni; /* the device's fleet index */
    uint64_t id[WIRE_MAX_BATCH];
} coord_taskq_t;

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
    uv_timer_t tick_timer, profile_timer;
    /* Expiries (deadlines) at microsecond precision: libuv's timers tick in whole ms, so
     * the earliest expiry arms a CLOCK_MONOTONIC timerfd (uv_hrtime's clock) on a poll. */
    int expiry_fd;
    uv_poll_t expiry_poll;
    uint64_t expiry_armed_us; /* 0: not armed */
    uint64_t start_us, seq;
    int closing, handles_open;
    int trace; /* $EINET_COORD_TRACE set: log every task sent, exit result, move */
    uint64_t logged_bad[STATS_SOCKS];
    sec_t *sec;                 /* keys, or keyless */
    members_t members;          /* which connection is each node (slot = its fleet index) */
    fleet_t fleet;              /* the nodes, any number per tier (coordinator/fleet.h) */
    owners_t *owners;           /* which key submitted each recent request */
    uint64_t refused[STATS_SOCKS][COORD_REFUSALS];
    uint64_t dropped_seen[STATS_SOCKS]; /* of xport's dropped counts, already counted */
    uint64_t rescued_seen[STATS_SOCKS]; /* of xport's rescued counts, already logged */
    coord_metrics_t metrics; /* GET /metrics (coordinator/metrics.h) */
    /* durable state (coord_durable.c) */
    journal_t *journal;          /* NULL: [journal] enabled = no */
    coord_out_t *out_head, **out_tail;
    int n_out;
    uv_prepare_t flush_prep;     /* commits the batch, then sends what waited for it */
    uv_timer_t flush_timer;      /* ... at most COORD_COMMIT_US later, batching turns */
    uint64_t last_commit_us;
    uv_timer_t trim_timer;
    uv_timer_t ckpt_timer;       /* records deeper results, checkpoints on a worker thread */
    uint64_t *dirty;             /* ids with a deeper result not yet in the journal */
    int n_dirty, cap_dirty;
    uv_work_t ckpt_work;
    int ckpt_busy, ckpt_rc;
    ei_err_t ckpt_err;
    coord_held_t *held;
    int n_held, cap_held;
    int holding;                 /* starting: requests are held until the cluster is known */
    uint64_t hold_until_us;
    uint64_t accepted, undelivered, restored, restarted, journal_errors;
    uint64_t moved; /* maps the nodes moved from a dead replica to another (failover) */
    resend_t *resend; /* every task sent, until its request is beyond the device (resend.h) */
    uint64_t resent;  /* tasks sent again after their device was lost */
    /* tasks batched per device (coord_tasks.c) */
    coord_taskq_t taskq[FLEET_MAX_NODES];
    int tasks_waiting;      /* in all the queues */
    uv_check_t task_check;  /* sends them at the end of each turn of the loop */
    uint64_t task_batches, tasks_batched; /* Batch messages of tasks sent, tasks in them */
};

uint64_t coord__now_us(void);
uint64_t coord__uptime_us(const coord_t *c);

/* coord.c */
void coord__on_answer(const reqs_done_t *d, void *arg);
/* Node ni at pipeline index pos died (msg says so): answers what nobody can continue. */
void coord__fail_cut_off(coord_t *c, int ni, int pos, const char *msg, uint64_t now);
void coord__arm_expiry(coord_t *c);
void coord__tick(coord_t *c);
void coord__push_profile(coord_t *c, int pos);
/* To node ni (its fleet index = its membership slot). */
int coord__send_node(coord_t *c, int ni, einet_Envelope *env, const float *tensor, size_t numel);
/* The up node at pipeline index pos that a command for its tier goes to, or -1. */
int coord__node_at(const coord_t *c, int pos);

/* The names of a `class_names` list, into out (NULL: only counted). Their number, or
 * -1 - i when name i (0-based) is empty or too long for the protocol. */
int coord__class_names(const char *list, einet_ModelInfoReply *out);

/* coord_recv.c */
/* Counts the messages xport dropped for having too many frames as refused. */
void coord__count_dropped(coord_t *c);
void coord__fill_refusals(const coord_t *c, einet_StatsReply *s);
/* Sends request id's task to the device: plan, image, the deadline left (ms, 0: none) and
 * its stop rule (NULL: the cluster's), on the device named `device` (NULL or "": the
 * least loaded one that is up; coordinator/fleet.h).
 * Answers it `rejected` (busy) or `link` when the device cannot take it. */
void coord__send_task(coord_t *c, uint64_t id, const einet_TensorMeta *meta, const float *input,
                      size_t numel, uint32_t deadline_ms, const einet_StopRule *stop,
                      const char *device);
/* When nothing else answers a request: its deadline, a lost message, or (path broken) the
 * heartbeat timeout. Returns the expiry time, *status and reason. */
uint64_t coord__expiry(const coord_t *c, uint32_t deadline_ms, uint64_t now, int *status,
                       char *reason, size_t cap);
/* The same with the deadline in microseconds (0: none). */
uint64_t coord__expiry_us(const coord_t *c, uint64_t deadline_us, uint64_t now, int *status,
                          char *reason, size_t cap);

/* coord_tasks.c */
/* Queues request id's task env (seq set here; input as its tensor) for device ni: it
 * leaves at the end of this turn of the loop with the turn's other tasks for ni, as one
 * message (coord__flush_tasks). 0, or a negative code (the task does not encode: logged;
 * out of memory) and the request is the caller's to answer. Answered when the send fails. */
int coord__queue_task(coord_t *c, int ni, uint64_t id, einet_Envelope *env, const float *input,
                      size_t numel) EI_CHECK;
/* Sends task env (its input as the tensor frame) to the device the request names, else the
 * least loaded one that is up (fleet.h): at once to a device that runs one request at a
 * time (or does not say: a node older than Heartbeat.batch_max), else at the end of this
 * turn of the loop with the turn's other tasks for it as one Batch, and keeps it to send
 * again (resend.h). Answers the request at once when that cannot be: `rejected` for an
 * unknown device or a full queue (overload, not a failure), `link` for a device that is
 * down or unreachable (for a batched task: when its batch's send fails). The device's fleet
 * index, or -1 when answered. */
int coord__dispatch_task(coord_t *c, uint64_t id, einet_Envelope *env, const float *input,
                         size_t numel, const char *device);
/* Device ni died or restarted (why): the requests inside it (sent to it, not heard from
 * beyond it) go once more to another live device - a second loss, a request naming ni, no
 * other device or no time left answers them `link` with why - and its queued tasks are
 * dropped. */
void coord__resend_device(coord_t *c, int ni, const char *why, uint64_t now);
/* Sends every device's queued tasks: one as itself, several as one Batch. A request
 * answered meanwhile is left out; one whose send ZeroMQ refuses is answered `rejected`
 * (busy) or `link` (unreachable). */
void coord__flush_tasks(coord_t *c);
/* Starts the check handle that flushes at the end of every turn. */
void coord__tasks_start(coord_t *c);
/* Frees the queues (what they held is dropped). */
void coord__tasks_free(coord_t *c);

/* coord_durable.c */
uint64_t coord__wall_us(void);
/* Opens the journal named by the config (none when disabled). 0 or a negative code. */
int coord__journal_open(coord_t *c, ei_err_t *err) EI_CHECK;
/* Start-up: every request recorded but not answered is held to be continued (image kept,
 * deadline not passed) or answered `restarted` with its deepest recorded result. */
int coord__restore(coord_t *c, ei_err_t *err) EI_CHECK;
/* Starts the flush and retention handles (the loop's prepare phase and a timer). */
void coord__durable_start(coord_t *c);
/* Closes them; *open counts the handles whose close callbacks are still due. */
void coord__durable_close(coord_t *c, uv_close_cb cb);
/* Queues env for a client (seq set here); answer_id > 0 for an answer. */
void coord__queue_client(coord_t *c, const xport_peer_t *peer, einet_Envelope *env,
                         uint64_t answer_id);
/* Commits the journal's batch, then sends every queued client message. */
void coord__flush(coord_t *c);
/* Holds request id until the cluster is known (copies the image). 0 or EI_E_NOMEM. */
int coord__hold(coord_t *c, uint64_t id, const float *input, size_t numel, uint32_t deadline_ms,
                uint64_t deadline_at_us, const einet_StopRule *stop) EI_CHECK;
/* Once starting is over (the cluster healthy, or the hold time passed): sends the tasks of
 * every held request. Called from the tick. */
void coord__resume(coord_t *c);
/* An exit result deeper than what request r->request_id had: recorded in the journal with
 * the next sweep (every COORD_CHECKPOINT_MS), so the many requests answered sooner cost no
 * write for it. */
void coord__journal_exit(coord_t *c, const einet_ExitResult *r);
/* Writes the deepest result of every pending request marked by coord__journal_exit. */
void coord__journal_sweep(coord_t *c);
/* Journal write for an answer (errors logged and counted). */
void coord__journal_answer(coord_t *c, const einet_Answer *a);
void coord__on_clients(xport_t *x, xport_msg_t **msg_p, void *arg);
void coord__on_nodes(xport_t *x, xport_msg_t **msg_p, void *arg);

#endif
