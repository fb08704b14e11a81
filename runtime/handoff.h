/* handoff: the feature maps a tier has sent and still answers for. A node keeps each map it
 * sends to a next-tier replica until that tier has taken the request over - it sent its own
 * next map, or its final exit went to the coordinator - and says so with a `taken` for the
 * request. When a replica dies, or the link to it goes down, the maps it held are handed
 * out again (handoff_lost) and the node resends each to another alive replica (route.h);
 * only a request with no replica left, or past its deadline, is handed back to the
 * coordinator (answered `link` / `deadline` with its deepest exit, which failover never
 * makes worse: the exits already reported stay the answer in effect).
 *
 * Exactly once: an entry is moved, never copied; the next tier drops a map for a request it
 * already holds or has passed on (its own ledger and cancel ring), and the coordinator keeps
 * one answer per request (coordinator/requests.c).
 *
 * Pure state, apart from the allocations: callers pass now_us. Entries own their bytes. */
#ifndef RUNTIME_HANDOFF_H
#define RUNTIME_HANDOFF_H

#include <stddef.h>
#include <stdint.h>

#include "common/ei.h"

typedef struct handoff handoff_t;

typedef struct handoff_entry {
    uint64_t request_id;
    int replica;          /* where it was sent last */
    uint64_t sent_us;     /* when it was sent last (for failover times) */
    uint64_t deadline_us; /* monotonic; 0: none */
    uint32_t resent;      /* times it was moved to another replica */
    void *frame;          /* the encoded envelope and the tensor, as sent */
    size_t frame_bytes;
    float *tensor;
    size_t tensor_bytes;
} handoff_entry_t;

/* Room for `max` maps at once (more: handoff_keep refuses). Caller owns the result; NULL
 * when out of memory. */
handoff_t *handoff_new(size_t max);
/* Frees every entry still held; accepts NULL and clears *self_p. */
void handoff_destroy(handoff_t **self_p);

/* Keeps what was sent for request id to replica. Takes ownership of *frame_p and *tensor_p
 * (both cleared) on success. EI_E_RANGE when max entries are held, EI_E_INVAL when the
 * request is held already; nothing is taken then. */
int handoff_keep(handoff_t *h, uint64_t id, int replica, uint64_t now_us, uint64_t deadline_us,
                 void **frame_p, size_t frame_bytes, float **tensor_p,
                 size_t tensor_bytes) EI_CHECK;

/* The next tier took request id over: its entry is freed. 1 when it was held, else 0 (a
 * late or repeated `taken`). */
int handoff_taken(handoff_t *h, uint64_t id);

/* Up to max entries held by replica (dead, or its link down), oldest first, into ids.
 * They stay held; the caller moves each (handoff_moved) or drops it (handoff_drop). */
int handoff_lost(const handoff_t *h, int replica, uint64_t *ids, int max);

/* The entry of request id, or NULL. Valid until the next call that changes h. */
const handoff_entry_t *handoff_get(const handoff_t *h, uint64_t id);

/* Request id was resent to replica at now_us. 0, or EI_E_NOTFOUND. */
int handoff_moved(handoff_t *h, uint64_t id, int replica, uint64_t now_us);

/* Forgets request id (handed back, cancelled, answered). 1 when it was held. */
int handoff_drop(handoff_t *h, uint64_t id);

/* Requests held by replica (its load as this sender sees it), and in all. */
uint32_t handoff_count(const handoff_t *h, int replica);
uint32_t handoff_total(const handoff_t *h);

/* Up to max held requests whose deadline is at or before now_us, into ids (they stay held). */
int handoff_expired(const handoff_t *h, uint64_t now_us, uint64_t *ids, int max);

#endif
