/* Sending from a node: to the coordinator, and to the next tier's replicas through the
 * injected faults of that link (sent, or held back on a timer in order, see fault.h),
 * noticing refused sends as link failures; each feature map to the replica with the least
 * expected wait (runtime/route.h), kept in the ledger (runtime/handoff.h) until that tier
 * takes it over, and moved to another replica when its own dies; hand-backs and link
 * reports to the coordinator. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/node_internal.h"

void node__outbox_flush(node_t *nd)
{
    ei_err_t err;
    /* not before the coordinator has answered a heartbeat: it refuses anything else from
     * a connection it does not know yet (a node just started, with results to send) */
    while (nd->outbox && nd->coord && nd->coord_link.last_reply_us) {
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
    wire_batch_free(&nd->ob_coord);
    wire_batch_free(&nd->ob_taken);
    for (int i = 0; i < nd->n_next; i++)
        wire_batch_free(&nd->nx[i].ob);
}

static int outbox_add_bytes(node_t *nd, const uint8_t *buf, size_t len)
{
    outbox_msg_t *m = nd->outbox_n < NODE_OUTBOX_MAX ? malloc(sizeof *m + len) : NULL;
    if (!m) {
        nd->counts.send_failed++;
        return EI_E_BUSY;
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

static int outbox_add(node_t *nd, const einet_Envelope *env)
{
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len;
    ei_err_t err;
    int rc = wire_encode(env, WIRE_NO_TENSOR, buf, sizeof buf, &len, &err);
    if (rc < 0) {
        nd->counts.send_failed++;
        return rc;
    }
    return outbox_add_bytes(nd, buf, len);
}

/* ---- coalescing a batch's messages ---- */

/* The coordinator's batch goes; what ZeroMQ cannot take now waits in the outbox (empty
 * while the batch was collected), in order. */
static void flush_coord(node_t *nd)
{
    wire_batch_out_t *b = &nd->ob_coord;
    if (!b->hdr.count)
        return;
    ei_err_t err;
    int rc = nd->coord ? wire_batch_send(nd->coord, NULL, b, ++nd->seq, &err) : EI_E_PEER;
    nd->counts.coalesced += rc == 0 && b->hdr.count > 1;
    if (rc == EI_E_BUSY) {
        for (int i = 0; i < (int)b->hdr.count; i++) {
            const uint8_t *env;
            const float *t;
            size_t len, tb;
            wire_batch_item(b, i, &env, &len, &t, &tb);
            outbox_add_bytes(nd, env, len);
        }
    } else if (rc < 0) {
        nd->counts.send_failed += b->hdr.count;
    }
    wire_batch_clear(b);
}

static int coalesce_coord(node_t *nd, const einet_Envelope *env)
{
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len;
    ei_err_t err;
    int rc = wire_encode(env, WIRE_NO_TENSOR, buf, sizeof buf, &len, &err);
    if (rc == 0 && (rc = wire_batch_add(&nd->ob_coord, buf, len, NULL, 0, &err)) == EI_E_RANGE) {
        flush_coord(nd); /* full: it goes first */
        rc = wire_batch_add(&nd->ob_coord, buf, len, NULL, 0, &err);
    }
    if (rc < 0) {
        ei_log(EI_LOG_INFO, "%s", err.msg);
        nd->counts.send_failed++;
    }
    return rc;
}

static void link_failed(node_t *nd, int r);

static void flush_next(node_t *nd, int r)
{
    node_next_t *x = &nd->nx[r];
    if (!x->ob.hdr.count)
        return;
    ei_err_t err;
    size_t probe = x->ob_probe;
    int rc = wire_batch_send(x->x, NULL, &x->ob, ++nd->seq, &err);
    nd->counts.coalesced += rc == 0 && x->ob.hdr.count > 1;
    wire_batch_clear(&x->ob);
    x->ob_probe = 0;
    if (rc == 0) {
        node__heartbeat_next(nd, r, probe);
    } else if (rc == EI_E_PEER || rc == EI_E_BUSY) {
        nd->counts.send_failed++;
        link_failed(nd, r); /* the maps are in the ledger: they move with r's others */
    } else {
        ei_log(EI_LOG_INFO, "%s", err.msg);
    }
}

/* A map to replica r joins r's batch: 1, or EI_E_PEER when r went down meanwhile. */
static int coalesce_map(node_t *nd, int r, const void *frame0, size_t len0, const float *tensor,
                        size_t tbytes)
{
    node_next_t *x = &nd->nx[r];
    ei_err_t err;
    int rc = wire_batch_add(&x->ob, frame0, len0, tensor, tbytes, &err);
    if (rc == EI_E_RANGE) {
        flush_next(nd, r); /* full: it goes first */
        if (!x->link.up)
            return EI_E_PEER;
        rc = wire_batch_add(&x->ob, frame0, len0, tensor, tbytes, &err);
    }
    if (rc < 0) {
        ei_log(EI_LOG_INFO, "%s", err.msg);
        return rc;
    }
    x->ob_probe += tbytes;
    return 1;
}

static void flush_taken(node_t *nd)
{
    ei_err_t err;
    if (nd->ob_taken.hdr.count && nd->bind) {
        if (wire_batch_send(nd->bind, &nd->ob_taken_peer, &nd->ob_taken, ++nd->seq, &err) < 0)
            nd->counts.send_failed++; /* the sender is gone: nothing waits for this */
        else
            nd->counts.coalesced += nd->ob_taken.hdr.count > 1;
    }
    wire_batch_clear(&nd->ob_taken);
}

void node__coalesce_begin(node_t *nd)
{
    nd->coalescing = 1;
}

void node__coalesce_end(node_t *nd)
{
    nd->coalescing = 0;
    flush_coord(nd);
    for (int r = 0; r < nd->n_next; r++)
        flush_next(nd, r);
    flush_taken(nd);
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
    if (keep && nd->coalescing && !nd->outbox && nd->coord_link.last_reply_us)
        return coalesce_coord(nd, env);
    if (keep && (nd->outbox || !nd->coord_link.last_reply_us)) {
        node__outbox_flush(nd);
        if (nd->outbox || !nd->coord_link.last_reply_us)
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

int node__next_up(const node_t *nd)
{
    for (int i = 0; i < nd->n_next; i++)
        if (nd->nx[i].link.up)
            return 1;
    return 0;
}

/* A replica for logs and traces: its name once it gave one, else its endpoint. */
static const char *next_label(const node_next_t *x)
{
    return x->name[0] ? x->name : x->endpoint;
}

void node__report_link(node_t *nd)
{
    if (!nd->n_next || !nd->coord || !nd->coord_link.up) /* on_report says why */
        return;
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_fault_tag);
    einet_Fault *f = &env.body.fault;
    f->link = node__link_id(nd);
    int up = node__next_up(nd);
    if (up) {
        f->clear = true;
    } else { /* silent since the last of them went quiet */
        uint64_t now = node__now_us(), silent = UINT64_MAX;
        for (int i = 0; i < nd->n_next; i++) {
            uint64_t s = link_silent_ms(&nd->nx[i].link, now);
            silent = s < silent ? s : silent;
        }
        f->down_ms = silent > 0 && silent < UINT32_MAX ? (uint32_t)silent : 1;
    }
    if (node__send_coord(nd, &env) == 0)
        nd->link_reported = up;
}

void node__link_down(node_t *nd, int r, const char *why)
{
    node_next_t *x = &nd->nx[r];
    ei_log(EI_LOG_WARN, "%s link to %s down (%s)", node__link_name(nd), next_label(x), why);
    /* The connection is lost with what it held; the ledger's copies move elsewhere. */
    node__delay_discard(nd, r);
    wire_batch_clear(&x->ob);
    x->ob_probe = 0;
    if (!node__next_up(nd))
        fault_lost(&nd->fault);
    /* reported before any hand-back, so the coordinator says `link` for those */
    if (nd->link_reported != node__next_up(nd))
        node__report_link(nd);
    x->lost = 1;
    x->lost_us = node__now_us();
    node__failover(nd);
}

static void link_failed(node_t *nd, int r)
{
    if (link_on_send_fail(&nd->nx[r].link, node__now_us()))
        node__link_down(nd, r, "send refused");
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

/* Keeps a copy of the encoded bytes (sent_at_us and the elapsed time are those of the
 * original send) until the delay is over. */
static int delay_outgoing(node_t *nd, int r, const void *frame0, size_t len0, const float *tensor,
                          size_t tbytes, uint64_t request_id, uint64_t at_us)
{
    delayed_t *d = calloc(1, sizeof *d);
    if (d) {
        d->frame0 = malloc(len0);
        d->tensor = tensor ? malloc(tbytes ? tbytes : 1) : NULL;
    }
    if (!d || !d->frame0 || (tensor && !d->tensor)) {
        if (d) {
            free(d->frame0);
            free(d->tensor);
            free(d);
        }
        return EI_E_NOMEM;
    }
    memcpy(d->frame0, frame0, len0);
    d->len0 = len0;
    if (tensor)
        memcpy(d->tensor, tensor, tbytes);
    d->tensor_bytes = tensor ? tbytes : 0;
    d->outgoing = 1;
    d->replica = r;
    d->request_id = request_id;
    d->at_us = at_us;
    delay_push(nd, d);
    return 0;
}

static void delay_send(node_t *nd, delayed_t *d)
{
    ei_err_t err;
    xport_frame_t f[2] = {{d->frame0, d->len0, NULL, NULL}, {d->tensor, d->tensor_bytes, NULL, NULL}};
    node_next_t *x = &nd->nx[d->replica];
    if (xport_send(x->x, NULL, f, d->tensor ? 2 : 1, &err) < 0) {
        /* a kept map moves with the replica's others (or is handed back by the move) */
        int kept = d->request_id && handoff_get(nd->ledger, d->request_id);
        nd->counts.send_failed++;
        link_failed(nd, d->replica);
        if (d->request_id && !kept)
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
            node__handle_next(nd, d->replica, &d->msg);
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
        if (d->outgoing && d->request_id) {
            handoff_drop(nd->ledger, d->request_id);
            node__hand_back(nd, d->request_id, "draining");
        }
        delayed_free(nd, d);
    }
}

void node__delay_discard(node_t *nd, int r)
{
    delayed_t **pp = &nd->delayed;
    while (*pp) {
        delayed_t *d = *pp;
        if (r >= 0 && d->replica != r) {
            pp = &d->next;
            continue;
        }
        *pp = d->next;
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

int node__delay_incoming(node_t *nd, int r, xport_msg_t **msg_p, uint64_t at_us)
{
    delayed_t *d = calloc(1, sizeof *d);
    if (!d)
        return EI_E_NOMEM;
    d->msg = *msg_p;
    *msg_p = NULL;
    d->replica = r;
    d->at_us = at_us;
    delay_push(nd, d);
    return 0;
}

/* ---- the next tier's replicas ---- */

/* Encoded bytes to replica r through the link's injected faults: 0 when sent, dropped or
 * held back, 1 when `batchable` and joined r's batch while coalescing; EI_E_PEER /
 * EI_E_BUSY when ZeroMQ refused them (r is then down). */
static int send_raw(node_t *nd, int r, const void *frame0, size_t len0, const float *tensor,
                    size_t tbytes, uint64_t request_id, int batchable)
{
    ei_err_t err;
    node_next_t *x = &nd->nx[r];
    uint64_t now = node__now_us(), at = fault_deliver_at(&nd->fault, FAULT_OUT, now);
    if (at == FAULT_NEVER && !x->link.up) {
        nd->counts.fault_discarded++; /* into a connection already declared lost */
        return 0;
    }
    if (at > now || nd->held[FAULT_OUT] > 0) /* late, or behind one that is */
        return delay_outgoing(nd, r, frame0, len0, tensor, tbytes, request_id,
                              at > now ? at : now);
    if (batchable && nd->coalescing)
        return coalesce_map(nd, r, frame0, len0, tensor, tbytes);
    xport_frame_t f[2] = {{frame0, len0, NULL, NULL}, {tensor, tbytes, NULL, NULL}};
    int rc = xport_send(x->x, NULL, f, tensor ? 2 : 1, &err);
    if (rc == EI_E_PEER || rc == EI_E_BUSY) {
        nd->counts.send_failed++;
        link_failed(nd, r);
    } else if (rc < 0) {
        ei_log(EI_LOG_INFO, "%s", err.msg);
    }
    return rc;
}

int node__send_next(node_t *nd, int r, einet_Envelope *env, const float *tensor, size_t numel,
                    uint64_t request_id)
{
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len, tbytes = tensor ? numel * sizeof(float) : WIRE_NO_TENSOR;
    ei_err_t err;
    if (r < 0 || r >= nd->n_next)
        return EI_E_PEER;
    env->seq = ++nd->seq;
    int rc = wire_encode(env, tbytes, buf, sizeof buf, &len, &err);
    if (rc < 0) {
        ei_log(EI_LOG_INFO, "%s", err.msg);
        return rc;
    }
    return send_raw(nd, r, buf, len, tensor, tensor ? tbytes : 0, request_id, 0);
}

/* The replica a map goes to: alive (its link up, not draining, not just found dead), the
 * least expected wait (what it holds from this node plus the queue it reports, times its
 * time per request); one whose own next link is up before one reporting it down (that one
 * only when no other is left: its link may be back by the time the map is through, as in a
 * chain of one node per tier). -1 when none is alive. */
static int pick_replica(node_t *nd)
{
    route_replica_t r[NODE_MAX_NEXT] = {{0}};
    int any_next_down = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < nd->n_next; i++) {
            const node_next_t *x = &nd->nx[i];
            r[i].alive = x->link.up && !x->draining && !x->lost && (pass || !x->next_down);
            r[i].queued = handoff_count(nd->ledger, i) + x->in_flight;
            r[i].ms_per_req = x->ms_per_req;
            any_next_down |= x->next_down;
        }
        int k = route_pick(r, nd->n_next, nd->route_rr++);
        if (k >= 0 || !any_next_down)
            return k;
    }
    return -1;
}

/* Keeps what was sent to replica r for request id (copies), until that tier takes it over. */
static void keep(node_t *nd, int r, uint64_t id, uint64_t deadline_us, const void *frame0,
                 size_t len0, const float *tensor, size_t tbytes)
{
    void *f = malloc(len0);
    float *t = tbytes ? malloc(tbytes) : NULL;
    handoff_drop(nd->ledger, id); /* sent again from here: the newer copy counts */
    int rc = f && (t || !tbytes) ? 0 : EI_E_NOMEM;
    if (rc == 0) {
        memcpy(f, frame0, len0);
        if (tbytes)
            memcpy(t, tensor, tbytes);
        rc = handoff_keep(nd->ledger, id, r, node__now_us(), deadline_us, &f, len0, &t, tbytes);
    }
    if (rc < 0)
        nd->counts.unkept++; /* sent all the same, without failover */
    free(f);
    free(t);
}

int node__send_map(node_t *nd, einet_Envelope *env, const float *tensor, size_t numel,
                   uint64_t request_id)
{
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len, tbytes = numel * sizeof(float);
    ei_err_t err;
    const einet_FeatureMap *m = &env->body.feature_map;
    uint64_t now = node__now_us(), deadline = 0;
    if (m->has_deadline_us) /* the request's budget left, on this node's clock */
        deadline = now + (m->deadline_us > m->elapsed_us ? m->deadline_us - m->elapsed_us : 0);
    for (;;) {
        int r = pick_replica(nd);
        if (r < 0)
            return EI_E_PEER;
        env->seq = ++nd->seq;
        int rc = wire_encode(env, tbytes, buf, sizeof buf, &len, &err);
        if (rc < 0) {
            ei_log(EI_LOG_INFO, "%s", err.msg);
            return rc;
        }
        rc = send_raw(nd, r, buf, len, tensor, tbytes, request_id, 1);
        if (rc >= 0) {
            keep(nd, r, request_id, deadline, buf, len, tensor, tbytes);
            if (rc == 0) /* a batch's map: one probe after the batch (flush_next) */
                node__heartbeat_next(nd, r, tbytes);
            return 0;
        }
        if (rc != EI_E_PEER && rc != EI_E_BUSY)
            return rc;
        /* r refused it and is down now: the next pick is another replica */
    }
}

/* Tells the coordinator that request id's map moved from replica `from` to `to`. */
static void note_moved(node_t *nd, uint64_t id, const node_next_t *from, const node_next_t *to,
                       uint32_t block, uint64_t now)
{
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_moved_tag);
    einet_Moved *m = &env.body.moved;
    m->request_id = id;
    snprintf(m->from, sizeof m->from, "%.63s", next_label(from));
    snprintf(m->to, sizeof m->to, "%.63s", next_label(to));
    uint64_t last = from->link.last_reply_us;
    uint64_t silent = last && now > last ? (now - last) / 1000 : 0;
    m->silent_ms = silent < UINT32_MAX ? (uint32_t)silent : UINT32_MAX;
    m->block = block;
    node__send_coord(nd, &env);
}

/* Moves request id, held by dead replica r, to another alive one: resent as kept (same
 * bytes), or handed back to the coordinator when no replica is left. Dropped when its
 * deadline has passed or the coordinator has answered it. */
static void move_one(node_t *nd, uint64_t id, int r, uint64_t now)
{
    const handoff_entry_t *e = handoff_get(nd->ledger, id);
    if (!e || e->replica != r)
        return;
    if ((e->deadline_us && e->deadline_us <= now) || node__is_cancelled(nd, id)) {
        handoff_drop(nd->ledger, id); /* the coordinator answers it on its own */
        return;
    }
    for (;;) {
        int to = pick_replica(nd);
        if (to < 0) {
            char why[80];
            snprintf(why, sizeof why, "%s link down: no replica left", node__link_name(nd));
            handoff_drop(nd->ledger, id);
            node__hand_back(nd, id, why);
            return;
        }
        e = handoff_get(nd->ledger, id);
        /* a node forwards after its last block: the map is of that block */
        uint32_t block = (uint32_t)nd->conf.last_block;
        int rc = send_raw(nd, to, e->frame, e->frame_bytes, e->tensor, e->tensor_bytes, id, 0);
        if (rc == 0) {
            if (handoff_moved(nd->ledger, id, to, now) == 0)
                nd->counts.moved++;
            note_moved(nd, id, &nd->nx[r], &nd->nx[to], block, now);
            return;
        }
        /* `to` refused it and is down now (marked lost): try another */
    }
}

static void move_held(node_t *nd, int r)
{
    uint32_t n = handoff_count(nd->ledger, r);
    if (!n)
        return;
    uint64_t *ids = malloc(n * sizeof *ids);
    if (!ids) {
        ei_log(EI_LOG_ERROR, "failover: out of memory; %u maps of %s stay", (unsigned)n,
               next_label(&nd->nx[r]));
        return;
    }
    int k = handoff_lost(nd->ledger, r, ids, (int)n);
    uint64_t now = node__now_us();
    if (k > 0)
        ei_log(EI_LOG_INFO, "failover: %d maps held by %s move", k, next_label(&nd->nx[r]));
    for (int i = 0; i < k; i++)
        move_one(nd, ids[i], r, now);
    free(ids);
}

void node__failover(node_t *nd)
{
    /* no re-entry: a resend refused marks another replica lost, which this loop serves */
    if (nd->failing)
        return;
    nd->failing = 1;
    for (int again = 1; again;) {
        again = 0;
        for (int r = 0; r < nd->n_next; r++)
            if (nd->nx[r].lost) {
                nd->nx[r].lost = 0;
                move_held(nd, r);
                again = 1;
            }
    }
    uint64_t ids[64];
    int k;
    while ((k = handoff_expired(nd->ledger, node__now_us(), ids, 64)) > 0)
        for (int i = 0; i < k; i++) /* past its deadline: the coordinator answers it */
            handoff_drop(nd->ledger, ids[i]);
    nd->failing = 0;
}

void node__next_lost(node_t *nd, int r, const char *why)
{
    ei_log(EI_LOG_WARN, "%s: %s", next_label(&nd->nx[r]), why);
    nd->nx[r].lost = 1;
    nd->nx[r].lost_us = node__now_us();
    node__failover(nd);
}

void node__heartbeat_next(node_t *nd, int r, size_t probe_bytes)
{
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_heartbeat_tag);
    einet_Heartbeat *h = &env.body.heartbeat;
    h->tier = nd->conf.tier;
    h->first_block = (uint32_t)nd->conf.first_block;
    h->last_block = (uint32_t)nd->conf.last_block;
    h->in_flight = (uint32_t)node__inflight(nd);
    h->draining = nd->draining;
    h->profile_version = nd->profile_version;
    snprintf(h->name, sizeof h->name, "%s", nd->conf.name);
    for (int i = r < 0 ? 0 : r; i < (r < 0 ? nd->n_next : r + 1); i++) {
        h->seq = ++nd->hb_seq;
        h->sent_at_us = node__now_us();
        if (probe_bytes)
            link_probe(&nd->nx[i].link, h->seq, probe_bytes);
        node__send_next(nd, i, &env, NULL, 0, 0);
    }
}

/* ---- the previous tier: taken ---- */

void node__job_leaves(node_t *nd, job_t *j)
{
    if (!j->npeers)
        return;
    nd->passed[nd->passed_at].id = j->request_id;
    nd->passed[nd->passed_at].sent_at = j->map_sent_at;
    nd->passed_at = (nd->passed_at + 1) % NODE_PASSED_RING;
    for (int i = 0; i < j->npeers; i++)
        node__send_taken(nd, &j->peers[i], j->request_id);
    j->npeers = 0;
}

void node__send_taken(node_t *nd, const xport_peer_t *peer, uint64_t request_id)
{
    einet_Envelope env;
    ei_err_t err;
    if (!nd->bind)
        return;
    wire_env_init(&env, einet_Envelope_taken_tag);
    env.seq = ++nd->seq;
    env.body.taken.request_id = request_id;
    if (nd->coalescing) {
        uint8_t buf[WIRE_ENVELOPE_MAX];
        size_t len;
        if (nd->ob_taken.hdr.count && (nd->ob_taken_peer.len != peer->len ||
                                       memcmp(nd->ob_taken_peer.id, peer->id, peer->len)))
            flush_taken(nd); /* another sender's go to it on their own */
        int rc = wire_encode(&env, WIRE_NO_TENSOR, buf, sizeof buf, &len, &err);
        if (rc == 0) {
            rc = wire_batch_add(&nd->ob_taken, buf, len, NULL, 0, &err);
            if (rc == EI_E_RANGE) { /* full: it goes first */
                flush_taken(nd);
                rc = wire_batch_add(&nd->ob_taken, buf, len, NULL, 0, &err);
            }
        }
        if (rc == 0) {
            nd->ob_taken_peer = *peer;
            return;
        }
    }
    if (wire_send(nd->bind, peer, &env, NULL, &err) < 0)
        nd->counts.send_failed++; /* the sender is gone: nothing waits for this */
}
