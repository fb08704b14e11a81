/* coord: einet-coord. It takes client requests on its clients socket, gives each an id and
 * sends it with its initial plan to the device, keeps every request's deepest result until
 * exactly one answer goes back (complete, device_ee, deadline, link, rejected, shutdown),
 * tracks the nodes' health and links from their heartbeats and reports, pushes the live
 * ET-profile to them, relays fault commands, and answers result and statistics queries.
 * docs/tiers.md tells the design, docs/protocol.md the sockets and messages. */
#ifndef COORDINATOR_COORD_H
#define COORDINATOR_COORD_H

#include <stdint.h>

#include <uv.h>

#include "common/ei.h"
#include "wire/conf.h"

/* A request with no deadline that has had no final result for this long is answered
 * `link` (a message was lost: injected loss, or a node that died with it). */
#define COORD_LOST_MS 30000
/* When a replica dies while another of its tier is up, the senders' ledgers move what it
 * held; a request it held that no ledger kept (its sender died before it: two adjacent
 * tiers down at once) is lost with it, and answered `link` this long after, if nothing
 * else answered it by then (every other request there ends well within it). */
#define COORD_ORPHAN_MS 10000
/* After a start, requests are held (not sent to the device) until the cluster is healthy,
 * or at most 2 heartbeat timeouts plus this long: a restarted coordinator learns the nodes'
 * and links' state from their heartbeats and reports before it sends work. */
#define COORD_HOLD_EXTRA_MS 2000
/* ZeroMQ's queues on the nodes socket, in messages per node. */
#define COORD_NODES_HWM 20000
/* A node silent for this many heartbeat timeouts has left the fleet (coordinator/fleet.h). */
#define COORD_FORGET_TIMEOUTS 20
/* Answers remembered in memory for result queries (the journal keeps more). */
#define COORD_KEEP_ANSWERS 65536
/* With this environment variable set, every exit result is logged to stderr as
 * "einet-coord: trace exit request=ID exit=K tier=T class=C confidence=P elapsed_us=E". */
#define COORD_TRACE_ENV "EINET_COORD_TRACE"

typedef struct coord coord_t;

/* Loads the model (shapes, block count, start-up timing) and the exit scores and makes the
 * sockets in ZeroMQ context zctx on loop (not yet bound). conf is copied. Caller owns the
 * result; NULL with err set on failure. */
coord_t *coord_new(const conf_coord_t *conf, uv_loop_t *loop, void *zctx, ei_err_t *err);

/* Binds both sockets and starts the timers. 0 or a negative code with err set. */
int coord_start(coord_t *self, ei_err_t *err) EI_CHECK;

/* SIGTERM: answers every request held (status shutdown, the deepest result so far), then
 * closes sockets and timers so the loop ends. Safe to call more than once. */
void coord_shutdown(coord_t *self);

/* Frees it once the loop has run its close callbacks (after coord_shutdown). Accepts NULL;
 * clears *self_p. */
void coord_destroy(coord_t **self_p);

#endif
