/* node: einet-node, one tier of the pipeline. It runs blocks first_block..last_block of the
 * model for every task (device) or feature map (edge, cloud) it receives, sends each exit
 * it runs to the coordinator, replans the remaining exits, and passes the feature map to
 * the next tier; it heartbeats the coordinator and the next tier, measures its blocks and
 * its links and reports them, and obeys fault-injection commands. docs/tiers.md tells the
 * design, docs/protocol.md the sockets and messages.
 *
 * Everything runs on one libuv loop: ZeroMQ sockets through xport, timers for heartbeats,
 * reports, injected delays and the slow-down, and an idle handle that runs one block per
 * loop iteration so heartbeats are answered between blocks. */
#ifndef NODE_NODE_H
#define NODE_NODE_H

#include <stdint.h>

#include <uv.h>

#include "common/ei.h"
#include "wire/conf.h"

typedef struct node node_t;

/* Loads the model (prepared for inference) and the exit scores, sets OpenBLAS's thread
 * count, and makes the sockets (not yet bound or connected) in ZeroMQ context zctx on
 * loop. conf is copied. Caller owns the result; NULL with err set on failure. */
node_t *node_new(const conf_node_t *conf, uv_loop_t *loop, void *zctx, ei_err_t *err);

/* Binds and connects the sockets and starts the timers. 0 or a negative code. */
int node_start(node_t *self, ei_err_t *err) EI_CHECK;

/* SIGTERM: takes no new work (new tasks and maps are handed back to the coordinator),
 * hands back what is queued, finishes the request it is computing, then closes its
 * sockets and timers so the loop ends. Safe to call more than once. */
void node_drain(node_t *self);

/* The process's exit code once the loop has ended: 0, or 2 when the node refused to run
 * because its model does not chain with the coordinator's. */
int node_exit_code(const node_t *self);

/* Frees the node. Its handles must be closed first: call node_drain (also after a failed
 * node_start) and run the loop until it returns. Accepts NULL; clears *self_p. */
void node_destroy(node_t **self_p);

/* What the node did, for logs and tests. */
typedef struct node_counts {
    uint64_t tasks, maps, exits_sent, maps_sent, handed_back, dropped_deadline, cancelled;
    uint64_t bad_messages, send_failed;
    uint64_t fault_held;      /* messages held back by injected faults */
    uint64_t fault_discarded; /* held messages lost when the link was declared down */
    uint64_t batches;         /* batches run (dynamic batching; one request is a batch of 1) */
    uint64_t batch_largest;   /* the most requests one batch held */
    uint64_t early;           /* requests answered here because their stop rule fired */
    uint64_t moved;           /* maps resent to another replica (one found dead) */
    uint64_t duplicates;      /* maps dropped: the request is held or passed on here */
    uint64_t unkept;          /* maps sent without a copy kept (the ledger was full) */
    uint64_t coalesced;       /* Batch messages sent (several messages as one) */
    uint64_t maps_batched;    /* maps received inside a Batch */
    uint64_t tasks_batched;   /* tasks received inside a Batch (from the coordinator) */
} node_counts_t;

node_counts_t node_counts(const node_t *self);

#endif
