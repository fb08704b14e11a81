/* requests: the coordinator's per-request state. Each request held is pending until exactly
 * one of these answers it: its final exit (or the device's early exit) arrives, its expiry
 * passes (the caller's deadline, a path known broken, or a result that never came), a node
 * or link on its remaining path fails, the node holding it hands it back, or the
 * coordinator shuts down. Every transition to "answered" goes through one function, which
 * records the answer for result queries and hands it to the caller's callback exactly once;
 * any later event for that request is counted as late and ignored.
 *
 * Pure state: no sockets, no clock (callers pass now_us), so every ordering of events can
 * be driven by a test. */
#ifndef COORDINATOR_REQUESTS_H
#define COORDINATOR_REQUESTS_H

#include <stdint.h>

#include "common/ei.h"
#include "proto/messages.pb.h"
#include "wire/xport.h"

typedef struct reqs reqs_t;

/* Who asked: where the answer goes. */
typedef struct reqs_client {
    xport_peer_t peer; /* routing id on the clients socket */
    uint64_t seq;      /* the request envelope's seq: the answer's reply_to */
    uint64_t client_id;
    int has_label;
    uint32_t label;
} reqs_client_t;

/* One answer leaving: the Answer body, the client it goes to, and how far the request got
 * (pipeline index of the deepest tier heard from; 0 = the device or nothing). */
typedef struct reqs_done {
    const einet_Answer *answer;
    const reqs_client_t *client;
    int pos;
} reqs_done_t;

/* Called once per answered request, before the function that answered it returns. It may
 * call reqs_* read-only functions but must not add or answer requests. */
typedef void reqs_answer_fn(const reqs_done_t *done, void *arg);

/* A table for up to max_pending requests at once, remembering the latest `keep` answers
 * (rounded up to a power of two) for result queries. Caller owns the result; NULL when out
 * of memory or an argument is < 1. */
reqs_t *reqs_new(int max_pending, int keep, reqs_answer_fn *fn, void *arg);
void reqs_destroy(reqs_t **self_p);

/* Adds a pending request received at now_us, to be answered with expire_status and
 * expire_reason at expire_us if nothing answers it earlier (expire_us 0: never; status
 * STATUS_DEADLINE or STATUS_LINK). *id gets its new id (> 0, increasing). 0, or EI_E_RANGE
 * when max_pending requests are held. */
int reqs_add(reqs_t *self, const reqs_client_t *client, uint64_t now_us, uint64_t expire_us,
             int expire_status, const char *expire_reason, uint64_t *id) EI_CHECK;

/* Ids handed out from now on start at next_id or above (ids of a journal that outlived a
 * restart are never reused). */
void reqs_set_next_id(reqs_t *self, uint64_t next_id);

/* Adds a pending request under a given id (one recorded before a restart), received at
 * recv_us on this process's clock, with the deepest result recorded so far (best: exit,
 * tier, class_id, confidence, probs; NULL: none). As reqs_add otherwise; EI_E_RANGE also
 * when the id's slot is taken. */
int reqs_restore(reqs_t *self, uint64_t id, const reqs_client_t *client, uint64_t recv_us,
                 uint64_t expire_us, int expire_status, const char *expire_reason,
                 const einet_Answer *best) EI_CHECK;

/* Moves a pending request's expiry (0: never). 1 if it is pending, 0 if not. */
int reqs_set_expiry(reqs_t *self, uint64_t id, uint64_t expire_us, int expire_status,
                    const char *expire_reason);

/* 1 while request id is pending. */
int reqs_is_pending(const reqs_t *self, uint64_t id);

/* What an exit result did. */
enum {
    REQS_NOTED = 0,    /* recorded (the deepest so far, or shallower and ignored) */
    REQS_ANSWERED = 1, /* final (last exit, early exit, stop rule): the request was answered */
    REQS_LATE = 2,     /* the request is answered already, or unknown */
};

/* An exit result for request id from the tier at pipeline index pos. REQS_*. A result that
 * comes after the request's expiry (now_us > expire_us: the expiry timer has not run yet)
 * does not count: the request is answered at once with its expiry status and what had
 * arrived by then, and the result is late. */
int reqs_exit(reqs_t *self, uint64_t id, const einet_ExitResult *r, int pos, uint64_t now_us);

/* Answers request id now with status and reason if it is pending (a hand-back, a failed
 * send). 1 if it was answered here, 0 if not pending. */
int reqs_answer(reqs_t *self, uint64_t id, int status, const char *reason, uint64_t now_us);

/* Answers with status and reason every pending request that has not been heard from
 * beyond pipeline index pos (its deepest tier's index <= pos): what a failure of the node at
 * pos, or of the link leaving it, cuts off. Returns the number answered. */
int reqs_fail_upto(reqs_t *self, int pos, int status, const char *reason, uint64_t now_us);

/* Request id was sent to the device of fleet index node. */
void reqs_set_node(reqs_t *self, uint64_t id, int node);

/* The pending requests sent to the device of fleet index node and not heard from beyond
 * pipeline index pos: what that device's death or restart cuts off. Their ids into
 * ids[0..cap), oldest slot first; returns how many there are (more than cap: only cap
 * written). */
int reqs_of_node(const reqs_t *self, int node, int pos, uint64_t *ids, int cap);

/* Moves the expiry of every pending request not heard from beyond pos to expire_us where
 * that is earlier (status and reason with it). Returns the number moved. */
int reqs_expire_upto(reqs_t *self, int pos, uint64_t expire_us, int status, const char *reason);

/* Answers every pending request whose expiry is <= now_us. Returns the number answered. */
int reqs_expire(reqs_t *self, uint64_t now_us);

/* The earliest expiry among pending requests, 0 when none. */
uint64_t reqs_next_expiry(reqs_t *self);

/* Answers every pending request with status (STATUS_SHUTDOWN). Returns the number. */
int reqs_answer_all(reqs_t *self, int status, const char *reason, uint64_t now_us);

/* Fills a ResultReply for id: found = 0 when unknown (or forgotten); pending with the
 * deepest result so far; or the answer that was sent. */
void reqs_lookup(const reqs_t *self, uint64_t id, uint64_t now_us, einet_ResultReply *out);

/* When pending request id was received: 1 and *recv_us, or 0 when it is not pending. */
int reqs_received_us(const reqs_t *self, uint64_t id, uint64_t *recv_us);

int reqs_pending(const reqs_t *self);
/* Events for requests already answered (or unknown). */
uint64_t reqs_late(const reqs_t *self);

#endif
