/* resend: the tasks the coordinator keeps so that it can send them once more. The
 * coordinator is the devices' sender: as a node keeps each map it sent until the next tier
 * has taken the request over (runtime/handoff.c), the coordinator keeps each task - the
 * Task as first sent, its input, the device the request named - until the request is heard
 * from beyond the device, or answered. When a device dies or restarts with requests inside
 * it, each of their tasks goes once more to another live device (coord__fail_cut_off); a
 * second loss answers the request `link`, as before.
 *
 * A table indexed by request id like the pending requests' ring (coordinator/requests.c,
 * same size for the same max_pending), so a pending request's slot is its own; an input
 * buffer, once allocated, stays with its slot. Pure state: no sockets, no clock. */
#ifndef COORDINATOR_RESEND_H
#define COORDINATOR_RESEND_H

#include <stddef.h>
#include <stdint.h>

#include "common/ei.h"
#include "proto/messages.pb.h"

typedef struct resend resend_t;

/* One kept task. */
typedef struct resend_task {
    uint64_t id;                      /* the request; 0: a free slot */
    einet_Task task;                  /* as first sent: its deadline from the receipt */
    float *input;                     /* numel floats (the slot's buffer, cap of them) */
    size_t numel, cap;
    char device[sizeof(((einet_Request *)0)->device)]; /* the device it named; "": any */
    int resent;                       /* sent a second time already */
} resend_task_t;

/* Room for max_pending requests at once. Caller owns the result; NULL when out of memory
 * or max_pending < 1. */
resend_t *resend_new(int max_pending);
void resend_destroy(resend_t **self_p);

/* Keeps task t (request t->request_id) with its input[0..numel) and the device it named
 * (NULL or "": any), replacing what its slot held. `resent` is kept when the slot already
 * holds the same request (the task sent again is kept as the second one). 0, or
 * EI_E_NOMEM (nothing kept). */
int resend_keep(resend_t *self, const einet_Task *t, const float *input, size_t numel,
                const char *device) EI_CHECK;

/* The task kept for request id; NULL when none (or self is NULL). */
resend_task_t *resend_find(resend_t *self, uint64_t id);

/* Forgets request id's task (heard from beyond the device, or answered). Accepts NULL. */
void resend_drop(resend_t *self, uint64_t id);

/* Tasks kept now. */
int resend_count(const resend_t *self);

#endif
