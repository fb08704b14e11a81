/* The coordinator's tasks to the devices, batched: a task made during a turn of the event
 * loop waits in its device's queue, and at the end of the turn (the loop's check phase,
 * right after the sockets' callbacks; and its prepare phase, for tasks made by timers)
 * each device's queue leaves as one message: one task alone as itself, several as one
 * Batch (docs/protocol.md, "Batches"). Nothing waits on a timer, so a lone request is not
 * delayed; under load the device gets its turn's tasks in one ZeroMQ message and one wake-up.
 * Each task keeps its own seq, plan, deadline and request: a request answered before its
 * task left (its device died in the same turn) is taken out of the batch, and a batch the
 * socket refuses answers each of its requests as a refused lone task did. */
#include <stdio.h>
#include <string.h>

#include "coordinator/coord_internal.h"

static void answer_unsent(coord_t *c, int ni, uint64_t id, int rc)
{
    fleet_done(&c->fleet, ni);
    if (rc == EI_E_BUSY)
        reqs_answer(c->reqs, id, einet_Status_STATUS_REJECTED,
                    "busy: the device's queue is full", coord__now_us());
    else
        reqs_answer(c->reqs, id, einet_Status_STATUS_LINK, "the device is unreachable",
                    coord__now_us());
}

/* Takes the tasks of requests answered meanwhile out of q (rare: the device died, or the
 * request expired, in the turn that queued them). */
static void drop_answered(coord_t *c, coord_taskq_t *q)
{
    int n = (int)q->b.hdr.count, keep = 0;
    for (int i = 0; i < n; i++)
        keep += reqs_is_pending(c->reqs, q->id[i]);
    if (keep == n)
        return;
    wire_batch_out_t kept = {0};
    ei_err_t err;
    int k = 0;
    for (int i = 0; i < n; i++) {
        const uint8_t *env;
        const float *tensor;
        size_t len, tbytes;
        if (!reqs_is_pending(c->reqs, q->id[i])) {
            fleet_done(&c->fleet, q->ni);
            continue;
        }
        wire_batch_item(&q->b, i, &env, &len, &tensor, &tbytes);
        /* it fitted in q: it fits in a batch of fewer */
        if (wire_batch_add(&kept, env, len, tensor, tbytes, &err) < 0) {
            answer_unsent(c, q->ni, q->id[i], EI_E_NOMEM);
            continue;
        }
        q->id[k++] = q->id[i];
    }
    wire_batch_free(&q->b);
    q->b = kept;
}

/* Sends device ni's queue. */
static void send_queue(coord_t *c, int ni)
{
    coord_taskq_t *q = &c->taskq[ni];
    ei_err_t err;
    if (!q->b.hdr.count)
        return;
    c->tasks_waiting -= (int)q->b.hdr.count;
    drop_answered(c, q);
    int n = (int)q->b.hdr.count;
    if (!n)
        return;
    int rc = c->nodes && ni < c->members.n && c->members.slot[ni].bound &&
                     c->fleet.node[ni].state == FLEET_UP
                 ? wire_batch_send(c->nodes, &c->members.slot[ni].peer, &q->b, ++c->seq, &err)
                 : EI_E_PEER;
    if (rc == 0 && n > 1) {
        c->task_batches++;
        c->tasks_batched += (uint64_t)n;
    }
    for (int i = 0; rc < 0 && i < n; i++)
        answer_unsent(c, ni, q->id[i], rc);
    wire_batch_clear(&q->b);
}

void coord__flush_tasks(coord_t *c)
{
    for (int ni = 0; c->tasks_waiting > 0 && ni < FLEET_MAX_NODES; ni++)
        send_queue(c, ni);
}

int coord__queue_task(coord_t *c, int ni, uint64_t id, einet_Envelope *env, const float *input,
                      size_t numel)
{
    coord_taskq_t *q = &c->taskq[ni];
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len, tbytes = numel * sizeof(float);
    ei_err_t err;
    env->seq = ++c->seq;
    int rc = wire_encode(env, tbytes, buf, sizeof buf, &len, &err);
    if (rc < 0) {
        ei_log(EI_LOG_ERROR, "request %llu: task not sent: %s", (unsigned long long)id, err.msg);
        return rc;
    }
    q->ni = ni;
    rc = wire_batch_add(&q->b, buf, len, input, tbytes, &err);
    if (rc == EI_E_RANGE) { /* full: it goes now, this task starts the next */
        send_queue(c, ni);
        rc = wire_batch_add(&q->b, buf, len, input, tbytes, &err);
    }
    if (rc < 0)
        return rc;
    q->id[q->b.hdr.count - 1] = id;
    c->tasks_waiting++;
    return 0;
}

static void on_check(uv_check_t *h)
{
    coord__flush_tasks(h->data);
}

void coord__tasks_start(coord_t *c)
{
    uv_check_start(&c->task_check, on_check);
}

void coord__tasks_free(coord_t *c)
{
    for (int ni = 0; ni < FLEET_MAX_NODES; ni++)
        wire_batch_free(&c->taskq[ni].b);
    c->tasks_waiting = 0;
}
