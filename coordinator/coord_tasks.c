/* The coordinator's tasks to the devices: where each goes, batching, and sending one
 * again when its device is lost.
 *
 * Batching: a task made during a turn of the event loop waits in its device's queue, and at
 * the end of the turn (the loop's check phase, right after the sockets' callbacks; and its
 * prepare phase, for tasks made by timers) each device's queue leaves as one message: one
 * task alone as itself, several as one Batch (docs/protocol.md, "Batches"). Nothing waits
 * on a timer, so a lone request is not delayed; under load the device gets its turn's tasks
 * in one ZeroMQ message and one wake-up. Each task keeps its own seq, plan, deadline and
 * request: a request answered before its task left (its device died in the same turn) is
 * taken out of the batch, and a batch the socket refuses answers each of its requests as a
 * refused lone task did.
 *
 * Sending again: every task sent is kept (coordinator/resend.h) until its request is heard
 * from beyond the device or answered. A device that dies (no heartbeat within the timeout)
 * or restarts (a new connection under its name) takes what it held with it; each such
 * request's task goes once more to another live device, the least loaded, with the deadline
 * it has left (docs/tiers.md, "Replicas and routing"). */
#include <stdio.h>
#include <stdlib.h>
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

/* Drops device ni's queued tasks (it is lost: its requests are sent again or answered). */
static void drop_queue(coord_t *c, int ni)
{
    coord_taskq_t *q = &c->taskq[ni];
    for (uint32_t i = 0; i < q->b.hdr.count; i++)
        fleet_done(&c->fleet, ni);
    c->tasks_waiting -= (int)q->b.hdr.count;
    wire_batch_clear(&q->b);
}

/* Sends request id's task env to device ni (-1: none alive), as coord__dispatch_task. */
static int send_to(coord_t *c, int ni, uint64_t id, einet_Envelope *env, const float *input,
                   size_t numel, const char *device)
{
    int rc = EI_E_PEER;
    if (ni >= 0 && c->fleet.node[ni].state == FLEET_UP && ni < c->members.n &&
        c->members.slot[ni].bound)
        rc = c->fleet.node[ni].batch_max > 1 ? coord__queue_task(c, ni, id, env, input, numel)
                                             : coord__send_node(c, ni, env, input, numel);
    if (rc == EI_E_BUSY) {
        reqs_answer(c->reqs, id, einet_Status_STATUS_REJECTED,
                    "busy: the device's queue is full", coord__now_us());
        return -1;
    }
    if (rc < 0) {
        reqs_answer(c->reqs, id, einet_Status_STATUS_LINK, "the device is unreachable",
                    coord__now_us());
        return -1;
    }
    fleet_sent(&c->fleet, ni);
    reqs_set_node(c->reqs, id, ni); /* its death cuts off what it held */
    if (c->trace)
        ei_log(EI_LOG_INFO, "trace task request=%llu node=%s", (unsigned long long)id,
               c->fleet.node[ni].name);
    if (resend_keep(c->resend, &env->body.task, input, numel, device) < 0)
        ei_log(EI_LOG_WARN, "request %llu: out of memory: its task is not kept (the loss of "
               "%s would answer it 'link')", (unsigned long long)id, c->fleet.node[ni].name);
    return ni;
}

int coord__dispatch_task(coord_t *c, uint64_t id, einet_Envelope *env, const float *input,
                         size_t numel, const char *device)
{
    int ni = device && device[0] ? fleet_find(&c->fleet, device) : fleet_pick(&c->fleet, 0);
    if (device && device[0] && (ni < 0 || c->fleet.node[ni].pos != 0)) {
        char why[96];
        snprintf(why, sizeof why, "request.device: no device named '%.40s'", device);
        reqs_answer(c->reqs, id, einet_Status_STATUS_REJECTED, why, coord__now_us());
        return -1;
    }
    return send_to(c, ni, id, env, input, numel, device);
}

/* Request id was inside device `from` when it was lost (why): its task goes once more to
 * another live device (one whose link to the next tier is up; not `from`, which may have
 * restarted but lost what it held and may not have its own link yet), else the request is
 * answered `link` with why: one sent again before, one naming `from` (it must run there),
 * one without time left, or no other device up. */
static void resend_one(coord_t *c, uint64_t id, int from, const char *why, uint64_t now)
{
    resend_task_t *e = resend_find(c->resend, id);
    uint64_t recv = 0;
    int to = e && !e->resent && !e->device[0] ? fleet_pick_other(&c->fleet, 0, from) : -1;
    if (to < 0 || !reqs_received_us(c->reqs, id, &recv)) {
        reqs_answer(c->reqs, id, einet_Status_STATUS_LINK, why, now);
        return;
    }
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_task_tag);
    env.body.task = e->task;
    einet_Task *t = &env.body.task;
    uint64_t spent = now > recv ? now - recv : 0;
    if (t->has_deadline_us && spent >= t->deadline_us) {
        reqs_answer(c->reqs, id, einet_Status_STATUS_LINK, why, now); /* no time left */
        return;
    }
    if (t->has_deadline_us) /* the task's timeline starts when the device receives it */
        t->deadline_us -= spent;
    e->resent = 1;
    if (send_to(c, to, id, &env, e->input, e->numel, NULL) < 0)
        return; /* answered there */
    c->resent++;
    if (c->trace)
        ei_log(EI_LOG_INFO, "trace resent request=%llu from=%s to=%s at_us=%llu",
               (unsigned long long)id, c->fleet.node[from].name, c->fleet.node[to].name,
               (unsigned long long)spent);
}

void coord__resend_device(coord_t *c, int ni, const char *why, uint64_t now)
{
    drop_queue(c, ni);
    int n = reqs_of_node(c->reqs, ni, 0, NULL, 0);
    uint64_t *ids = n > 0 ? malloc((size_t)n * sizeof *ids) : NULL, one;
    if (n > 0 && !ids) { /* out of memory: answered one by one, as before sending again */
        while (reqs_of_node(c->reqs, ni, 0, &one, 1) > 0)
            reqs_answer(c->reqs, one, einet_Status_STATUS_LINK, why, now);
        return;
    }
    n = n > 0 ? reqs_of_node(c->reqs, ni, 0, ids, n) : 0;
    /* the ids first, then the sends */
    for (int i = 0; i < n; i++)
        resend_one(c, ids[i], ni, why, now);
    free(ids);
    if (n > 0)
        ei_log(EI_LOG_WARN, "%s: %d requests inside it sent again or answered", why, n);
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
