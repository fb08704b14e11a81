/* Sending from a node: to the coordinator, and to the next tier through the injected faults
 * of that link (sent, or held back on a timer in order, see fault.h), noticing refused
 * sends as link failures; hand-backs and link reports to the coordinator. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/node_internal.h"

void node__outbox_flush(node_t *nd)
{
    ei_err_t err;
    while (nd->outbox && nd->coord) {
        outbox_msg_t *m = nd->outbox;
        xport_frame_t f = {m->bytes, m->len, NULL, NULL};
        int rc = xport_send(nd->coord, NULL, &f, 1, &err);
        if (rc == EI_E_BUSY)
            return; /* still full: the next heartbeat tries again */
        if (rc < 0)
            nd->counts.send_failed++;
        nd->outbox = m->next;
        if (!nd->outbox)
            nd->outbox_tail = &nd->outbox;
        nd->outbox_n--;
        free(m);
    }
}

void node__outbox_free(node_t *nd)
{
    while (nd->outbox) {
        outbox_msg_t *m = nd->outbox;
        nd->outbox = m->next;
        free(m);
    }
    nd->outbox_tail = &nd->outbox;
    nd->outbox_n = 0;
}

static int outbox_add(node_t *nd, const einet_Envelope *env)
{
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len;
    ei_err_t err;
    int rc = wire_encode(env, WIRE_NO_TENSOR, buf, sizeof buf, &len, &err);
    outbox_msg_t *m = rc == 0 && nd->outbox_n < NODE_OUTBOX_MAX ? malloc(sizeof *m + len) : NULL;
    if (!m) {
        nd->counts.send_failed++;
        return rc < 0 ? rc : EI_E_BUSY;
    }
    m->next = NULL;
    m->len = len;
    memcpy(m->bytes, buf, len);
    if (!nd->outbox_tail)
        nd->outbox_tail = &nd->outbox;
    *nd->outbox_tail = m;
    nd->outbox_tail = &m->next;
    nd->outbox_n++;
    return 0;
}

int node__send_coord(node_t *nd, einet_Envelope *env)
{
    ei_err_t err;
    if (!nd->coord)
        return EI_E_PEER;
    env->seq = ++nd->seq;
    /* Results, hand-backs and link reports must arrive, and in order: behind what waits. */
    int keep = env->which_body != einet_Envelope_heartbeat_tag &&
               env->which_body != einet_Envelope_profile_report_tag;
    if (keep && nd->outbox) {
        node__outbox_flush(nd);
        if (nd->outbox)
            return outbox_add(nd, env);
    }
    int rc = wire_send(nd->coord, NULL, env, NULL, &err);
    if (rc == EI_E_BUSY && keep)
        return outbox_add(nd, env);
    if (rc < 0)
        nd->counts.send_failed++;
    return rc;
}

void node__hand_back(node_t *nd, uint64_t request_id, const char *why)
{
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_cancel_tag);
    env.body.cancel.request_id = request_id;
    /* the coordinator names the cause from what it knows of the cluster, and this */
    snprintf(env.body.cancel.reason, sizeof env.body.cancel.reason, "%s", why ? why : "");
    node__send_coord(nd, &env);
    nd->counts.handed_back++;
}

void node__report_link(node_t *nd)
{
    if (!nd->next || !nd->coord || !nd->coord_link.up) /* on_report says why */
        return;
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_fault_tag);
    einet_Fault *f = &env.body.fault;
    f->link = node__link_id(nd);
    if (nd->link.up) {
        f->clear = true;
    } else {
        uint64_t silent = link_silent_ms(&nd->link, node__now_us());
        f->down_ms = silent > 0 && silent < UINT32_MAX ? (uint32_t)silent : 1;
    }
    if (node__send_coord(nd, &env) == 0)
        nd->link_reported = nd->link.up;
}

void node__link_down(node_t *nd, const char *why)
{
    ei_log(EI_LOG_WARN, "%s link down (%s)", node__link_name(nd), why);
    /* The connection is lost with what it held: the coordinator answers those requests. */
    node__delay_discard(nd);
    fault_lost(&nd->fault);
    node__report_link(nd);
}

static void link_failed(node_t *nd)
{
    if (link_on_send_fail(&nd->link, node__now_us()))
        node__link_down(nd, "send refused");
}

/* ---- injected delays ---- */

static void delay_arm(node_t *nd)
{
    if (!nd->delayed) {
        uv_timer_stop(&nd->delay_timer);
        return;
    }
    uint64_t now = node__now_us(), at = nd->delayed->at_us;
    if (at == FAULT_NEVER) { /* held until a clear or the link is declared down */
        uv_timer_stop(&nd->delay_timer);
        return;
    }
    uint64_t ms = at > now ? (at - now + 999) / 1000 : 0;
    uv_timer_start(&nd->delay_timer, node__delay_fire, ms, 0);
}

static void delay_push(node_t *nd, delayed_t *d)
{
    delayed_t **pp = &nd->delayed;
    while (*pp && (*pp)->at_us <= d->at_us)
        pp = &(*pp)->next;
    d->next = *pp;
    *pp = d;
    nd->held[d->outgoing ? FAULT_OUT : FAULT_IN]++;
    delay_arm(nd);
}

static void delayed_free(node_t *nd, delayed_t *d)
{
    nd->held[d->outgoing ? FAULT_OUT : FAULT_IN]--;
    free(d->frame0);
    free(d->tensor);
    xport_msg_destroy(&d->msg);
    free(d);
}

/* Encodes now (so sent_at_us and the elapsed time are those of the original send) and
 * keeps the bytes until the delay is over. */
static int delay_outgoing(node_t *nd, const einet_Envelope *env, const float *tensor,
                          size_t numel, uint64_t request_id, uint64_t at_us)
{
    ei_err_t err;
    delayed_t *d = calloc(1, sizeof *d);
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len, tbytes = tensor ? numel * sizeof(float) : WIRE_NO_TENSOR;
    int rc = d ? wire_encode(env, tbytes, buf, sizeof buf, &len, &err) : EI_E_NOMEM;
    if (rc == 0) {
        d->frame0 = malloc(len);
        d->tensor = tensor ? malloc(tbytes) : NULL;
        rc = d->frame0 && (!tensor || d->tensor) ? 0 : EI_E_NOMEM;
    }
    if (rc < 0) {
        if (d) {
            free(d->frame0);
            free(d->tensor);
            free(d);
        }
        return rc;
    }
    memcpy(d->frame0, buf, len);
    d->len0 = len;
    if (tensor)
        memcpy(d->tensor, tensor, tbytes);
    d->tensor_bytes = tensor ? tbytes : 0;
    d->outgoing = 1;
    d->request_id = request_id;
    d->at_us = at_us;
    delay_push(nd, d);
    return 0;
}

static void delay_send(node_t *nd, delayed_t *d)
{
    ei_err_t err;
    xport_frame_t f[2] = {{d->frame0, d->len0, NULL, NULL}, {d->tensor, d->tensor_bytes, NULL, NULL}};
    if (!nd->next || xport_send(nd->next, NULL, f, d->tensor ? 2 : 1, &err) < 0) {
        nd->counts.send_failed++;
        link_failed(nd);
        if (d->request_id)
            node__hand_back(nd, d->request_id, "send refused");
    }
}

void node__delay_fire(uv_timer_t *t)
{
    node_t *nd = t->data;
    uint64_t now = node__now_us();
    while (nd->delayed && nd->delayed->at_us <= now) {
        delayed_t *d = nd->delayed;
        nd->delayed = d->next;
        if (d->outgoing)
            delay_send(nd, d);
        else
            node__handle_next(nd, &d->msg);
        delayed_free(nd, d);
    }
    delay_arm(nd);
    node__maybe_close(nd);
}

void node__delay_clear(node_t *nd)
{
    while (nd->delayed) {
        delayed_t *d = nd->delayed;
        nd->delayed = d->next;
        if (d->outgoing && d->request_id)
            node__hand_back(nd, d->request_id, "draining");
        delayed_free(nd, d);
    }
}

void node__delay_discard(node_t *nd)
{
    while (nd->delayed) {
        delayed_t *d = nd->delayed;
        nd->delayed = d->next;
        nd->counts.fault_discarded++;
        delayed_free(nd, d);
    }
    delay_arm(nd);
}

void node__delay_release(node_t *nd)
{
    uint64_t now = node__now_us();
    for (delayed_t *d = nd->delayed; d; d = d->next)
        d->at_us = now; /* the order stays */
    delay_arm(nd);
}

int node__delay_incoming(node_t *nd, xport_msg_t **msg_p, uint64_t at_us)
{
    delayed_t *d = calloc(1, sizeof *d);
    if (!d)
        return EI_E_NOMEM;
    d->msg = *msg_p;
    *msg_p = NULL;
    d->at_us = at_us;
    delay_push(nd, d);
    return 0;
}

/* ---- the next link ---- */

int node__send_next(node_t *nd, einet_Envelope *env, const float *tensor, size_t numel,
                    uint64_t request_id)
{
    ei_err_t err;
    if (!nd->next)
        return EI_E_PEER;
    env->seq = ++nd->seq;
    uint64_t now = node__now_us(), at = fault_deliver_at(&nd->fault, FAULT_OUT, now);
    if (at == FAULT_NEVER && !nd->link.up) {
        nd->counts.fault_discarded++; /* into a connection already declared lost */
        return 0;
    }
    if (at > now || nd->held[FAULT_OUT] > 0) /* late, or behind one that is */
        return delay_outgoing(nd, env, tensor, numel, request_id, at > now ? at : now);
    wire_payload_t p = {tensor, numel, NULL, NULL};
    int rc = wire_send(nd->next, NULL, env, tensor ? &p : NULL, &err);
    if (rc == EI_E_PEER || rc == EI_E_BUSY) {
        nd->counts.send_failed++;
        link_failed(nd);
    } else if (rc < 0) {
        ei_log(EI_LOG_INFO, "%s", err.msg);
    }
    return rc;
}

void node__heartbeat_next(node_t *nd, size_t probe_bytes)
{
    if (!nd->next)
        return;
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_heartbeat_tag);
    einet_Heartbeat *h = &env.body.heartbeat;
    h->tier = nd->conf.tier;
    h->seq = ++nd->hb_seq;
    h->sent_at_us = node__now_us();
    h->first_block = (uint32_t)nd->conf.first_block;
    h->last_block = (uint32_t)nd->conf.last_block;
    h->in_flight = (uint32_t)node__inflight(nd);
    h->draining = nd->draining;
    h->profile_version = nd->profile_version;
    snprintf(h->name, sizeof h->name, "%s", nd->conf.name);
    if (probe_bytes)
        link_probe(&nd->link, h->seq, probe_bytes);
    node__send_next(nd, &env, NULL, 0, 0);
}
