/* What a node does with each message on its sockets: the coordinator's (tasks, profile
 * updates, faults, cancels, heartbeat replies), its bind socket (feature maps and heartbeats
 * from the previous tier's replicas) and one socket per next-tier replica (heartbeat
 * replies, `taken`). Anything refused is answered with an Error, counted and logged; the
 * node goes on serving. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/node_internal.h"

void node__log_bad(node_t *nd, const char *fmt, ...)
{
    uint64_t n = ++nd->logged_bad;
    if (n > NODE_LOG_BAD && n % 1000 != 0)
        return;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ei_log(EI_LOG_WARN, "%s (%llu so far)", msg, (unsigned long long)n);
}

static void refuse(node_t *nd, xport_t *x, const wire_in_t *in, int code, const char *what,
                   const char *msg)
{
    ei_err_t err;
    nd->counts.bad_messages++;
    node__metrics_bad(nd, what, code);
    node__log_bad(nd, "%s refused on %s: %s", wire_body_name(in->env.which_body), what, msg);
    /* Never answer an error with an error: two peers could bounce them forever. */
    if (in->env.which_body == einet_Envelope_error_tag)
        return;
    if (wire_refuse(x, in, code, msg, &err) < 0)
        nd->counts.send_failed++;
}

/* A refusal on the bind socket to a connection that is not the previous tier's node: logged
 * with the reason, answered with nothing it could learn from (no shapes, no names). */
static void refuse_stranger(node_t *nd, const wire_in_t *in, const char *logged)
{
    ei_err_t err;
    nd->counts.bad_messages++;
    node__log_bad(nd, "%s refused on bind: %s", wire_body_name(in->env.which_body), logged);
    if (in->env.which_body != einet_Envelope_error_tag &&
        wire_refuse(nd->bind, in, EI_E_DENIED, "refused", &err) < 0)
        nd->counts.send_failed++;
}

/* A tensor description equals the one a node expects: [C, H, W] or [1, C, H, W]. */
static int shape_is(const einet_TensorMeta *m, nn_shape_t s, char *why, size_t cap)
{
    return wire_meta_is_sample(m, s.c, s.h, s.w, why, cap);
}

/* msg_p NULL: the input came in a batch (whose message holds many), so the job keeps its
 * own copy of its numel floats. */
static job_t *job_new(node_t *nd, uint64_t id, int start, const bool *plan, xport_msg_t **msg_p,
                      const float *tensor, size_t numel)
{
    job_t *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    if (!msg_p) {
        j->own = malloc(numel * sizeof(float));
        if (!j->own) {
            free(j);
            return NULL;
        }
        memcpy(j->own, tensor, numel * sizeof(float));
        tensor = j->own;
    }
    j->request_id = id;
    j->start = j->k = start;
    for (int i = 0; i < nd->n; i++)
        j->plan[i] = plan[i] ? 1 : 0;
    j->recv_us = node__now_us();
    j->mark_ns = j->recv_us * 1000;
    if (msg_p) {
        j->msg = *msg_p; /* the tensor points into it */
        *msg_p = NULL;
    }
    j->input = tensor;
    return j;
}

/* ---- from the coordinator ---- */

static void on_task(node_t *nd, wire_in_t *in, xport_msg_t **msg_p)
{
    const einet_Task *t = &in->env.body.task;
    char why[160];
    if (nd->conf.first_block != 1) {
        snprintf(why, sizeof why, "task: this node starts at block %d", nd->conf.first_block);
        refuse(nd, nd->coord, in, EI_E_INVAL, "coordinator", why);
        return;
    }
    if ((int)t->plan_count != nd->n || !shape_is(&t->input, nd->in_shape, why, sizeof why)) {
        if ((int)t->plan_count != nd->n)
            snprintf(why, sizeof why, "plan of %u bits, the model has %d blocks",
                     (unsigned)t->plan_count, nd->n);
        char msg[200];
        snprintf(msg, sizeof msg, "task.input: %s", why);
        refuse(nd, nd->coord, in, EI_E_SHAPE, "coordinator", msg);
        node__hand_back(nd, t->request_id, "bad task");
        return;
    }
    nd->counts.tasks++;
    job_t *j = job_new(nd, t->request_id, 1, t->plan, msg_p, in->tensor, in->tensor_numel);
    if (!j) {
        node__hand_back(nd, t->request_id, "out of memory");
        return;
    }
    j->has_deadline = t->has_deadline_us;
    j->deadline_us = t->deadline_us;
    node__job_policy(j, t->policy, t->has_interrupt ? &t->interrupt : NULL);
    if (t->has_stop) {
        j->stop_kind = t->stop.kind;
        j->stop_threshold = t->stop.threshold;
    }
    node__job_add(nd, j);
}

static void on_profile(node_t *nd, const wire_in_t *in)
{
    const einet_ProfileUpdate *u = &in->env.body.profile_update;
    ei_err_t err;
    if ((int)u->blocks_count != nd->n) {
        char why[96];
        snprintf(why, sizeof why, "profile_update.blocks: %u blocks, the model has %d",
                 (unsigned)u->blocks_count, nd->n);
        refuse(nd, nd->coord, in, EI_E_SHAPE, "coordinator", why);
        return;
    }
    for (int k = 0; k < nd->n; k++) {
        nd->result_ms[k] = u->blocks[k].r_ms;
        nd->link_ms[k] = u->blocks[k].l_ms;
    }
    nd->profile_version = u->version;
    /* A coordinator sends its profile when it first hears from a node: one that has just
     * restarted learns this node's link state at once, not at the next report. */
    node__report_link(nd);
    if (nd->n > PLANNER_MAX_EXITS)
        return;
    planner_profile_t p;
    planner_profile_init(&p, nd->n);
    for (int k = 0; k < nd->n; k++) {
        p.conv_ms[k] = u->blocks[k].c_ms;
        p.branch_ms[k] = u->blocks[k].b_ms;
        p.link_ms[k] = u->blocks[k].l_ms;
        p.result_ms[k] = u->blocks[k].r_ms;
    }
    /* Deadlines count from the coordinator's receipt: plan on that clock, d0 before c_1. */
    nd->dispatch_ms = u->dispatch_ms;
    p.conv_ms[0] += u->dispatch_ms;
    planner_dist_t dist = {PLANNER_DIST_UNIFORM, 0.5, 0.25};
    int rc = 0;
    if (nd->planner)
        rc = planner_set_profile(nd->planner, &p, &err);
    else if (!(nd->planner = planner_new(&p, &dist, &err)))
        rc = err.code;
    if (rc < 0)
        ei_log(EI_LOG_WARN, "profile %llu not used: %s", (unsigned long long)u->version,
                err.msg);
}

static void on_fault(node_t *nd, const wire_in_t *in)
{
    const einet_Fault *f = &in->env.body.fault;
    char what[128];
    if ((int)f->kill == nd->conf.tier) {
        ei_log(EI_LOG_INFO, "fault: kill %s", node__tier_name(nd->conf.tier));
        fflush(stderr);
        raise(SIGKILL);
    }
    if (f->link == einet_Link_LINK_NONE || (int)f->link != node__link_id(nd) || !nd->n_next) {
        refuse(nd, nd->coord, in, EI_E_RANGE, "coordinator", "fault: not for this node's link");
        return;
    }
    uint64_t now = node__now_us();
    fault_apply(&nd->fault, f, now);
    if (f->clear)
        node__delay_release(nd);
    fault_describe(&nd->fault, now, what, sizeof what);
    ei_log(EI_LOG_INFO, "fault on %s: %s", node__link_name(nd), what);
}

static void dispatch_coord(node_t *nd, xport_t *x, wire_in_t *in, xport_msg_t **msg_p);

/* A batch of tasks from the coordinator (proto/messages.proto, Batch): each is taken as if
 * it had come alone (its job keeps a copy of its image); a bad one is refused on its own. */
static void on_coord_batch(node_t *nd, xport_t *x, const wire_in_t *in)
{
    wire_in_t item;
    wire_batch_it_t it = {0, 0};
    ei_err_t err;
    int rc;
    while ((rc = wire_batch_next(in, &it, &item, &err)) != 0) {
        if (rc < 0) {
            refuse(nd, x, &item, rc, "coordinator", err.msg);
            continue;
        }
        nd->counts.tasks_batched += item.env.which_body == einet_Envelope_task_tag;
        dispatch_coord(nd, x, &item, NULL);
    }
}

/* msg_p NULL: in came inside a batch. */
static void dispatch_coord(node_t *nd, xport_t *x, wire_in_t *in, xport_msg_t **msg_p)
{
    switch (in->env.which_body) {
    case einet_Envelope_task_tag:
        on_task(nd, in, msg_p);
        break;
    case einet_Envelope_batch_tag:
        on_coord_batch(nd, x, in);
        break;
    case einet_Envelope_profile_update_tag:
        on_profile(nd, in);
        break;
    case einet_Envelope_heartbeat_reply_tag: {
        uint64_t now = node__now_us(), echo = in->env.body.heartbeat_reply.echo_sent_at_us;
        link_on_reply(&nd->coord_link, in->env.body.heartbeat_reply.seq,
                      now > echo ? now - echo : 0, now);
        node__outbox_flush(nd); /* what waited for the coordinator to know this node */
        node__check_chain(nd, &in->env.body.heartbeat_reply);
        break;
    }
    case einet_Envelope_fault_tag:
        on_fault(nd, in);
        break;
    case einet_Envelope_cancel_tag: /* answered: no work left, no map to move */
        node__cancel(nd, in->env.body.cancel.request_id);
        handoff_drop(nd->ledger, in->env.body.cancel.request_id);
        break;
    case einet_Envelope_error_tag:
        node__log_bad(nd, "the coordinator refused a message: %s", in->env.body.error.message);
        break;
    case einet_Envelope_ack_tag:
        break;
    default:
        refuse(nd, x, in, EI_E_FORMAT, "coordinator", "unexpected body from the coordinator");
        break;
    }
}

void node__on_coord(xport_t *x, xport_msg_t **msg_p, void *arg)
{
    node_t *nd = arg;
    wire_in_t in;
    ei_err_t err;
    int rc = wire_recv(*msg_p, &in, &err);
    if (rc < 0) {
        refuse(nd, x, &in, rc, "coordinator", err.msg);
        return;
    }
    dispatch_coord(nd, x, &in, msg_p);
}

/* ---- from the previous tier ---- */

/* The job of request id held here (queued or in the batch, not finished), or NULL. */
static job_t *held_job(node_t *nd, uint64_t id)
{
    for (job_t *j = nd->head; j; j = j->next)
        if (j->request_id == id)
            return j;
    for (int i = 0; i < nd->bn; i++)
        if (nd->batch[i]->request_id == id && !nd->batch[i]->done)
            return nd->batch[i];
    return NULL;
}

/* A map for a request this node holds, or a copy of a map it has passed on (same request,
 * same sent_at_us: a sender moved it here after finding another replica dead, or moved it
 * back): dropped. Held: this sender is told `taken` too when the job leaves; passed on:
 * at once. 1 when it was a duplicate. */
static int duplicate(node_t *nd, uint64_t id, uint64_t sent_at, const xport_peer_t *peer)
{
    job_t *j = held_job(nd, id);
    if (j) {
        int known = 0;
        for (int i = 0; i < j->npeers; i++)
            known |= j->peers[i].len == peer->len && !memcmp(j->peers[i].id, peer->id, peer->len);
        if (!known && j->npeers < NODE_JOB_PEERS)
            j->peers[j->npeers++] = *peer;
        nd->counts.duplicates++;
        return 1;
    }
    for (int i = 0; i < NODE_PASSED_RING; i++)
        if (nd->passed[i].id == id && nd->passed[i].sent_at == sent_at) {
            node__send_taken(nd, peer, id);
            nd->counts.duplicates++;
            return 1;
        }
    return 0;
}

static void on_map(node_t *nd, wire_in_t *in, xport_msg_t **msg_p)
{
    const einet_FeatureMap *f = &in->env.body.feature_map;
    char why[160], msg[200];
    int start = (int)f->block + 1;
    if (start != nd->conf.first_block) {
        snprintf(msg, sizeof msg, "feature_map.block: %u, this node starts at block %d",
                 (unsigned)f->block, nd->conf.first_block);
        refuse(nd, nd->bind, in, EI_E_RANGE, "bind", msg);
        return;
    }
    if (f->seen_count > f->block) {
        snprintf(msg, sizeof msg, "feature_map.seen: %u exits after %u blocks",
                 (unsigned)f->seen_count, (unsigned)f->block);
        refuse(nd, nd->bind, in, EI_E_RANGE, "bind", msg);
        return;
    }
    nn_shape_t s = nn_model_feature_shape(nd->model, (int)f->block - 1);
    if ((int)f->plan_count != nd->n || !shape_is(&f->tensor, s, why, sizeof why)) {
        if ((int)f->plan_count != nd->n)
            snprintf(why, sizeof why, "plan of %u bits, the model has %d blocks",
                     (unsigned)f->plan_count, nd->n);
        snprintf(msg, sizeof msg, "feature_map.tensor: %s", why);
        refuse(nd, nd->bind, in, EI_E_SHAPE, "bind", msg);
        node__hand_back(nd, f->request_id, "bad map"); /* answered now, not at its expiry */
        return;
    }
    if (duplicate(nd, f->request_id, f->sent_at_us, &in->peer))
        return;
    nd->counts.maps++;
    uint64_t wall = node__wall_us(), transfer;
    /* One-way transfer from the sender's clock where it agrees with ours (one host, NTP);
     * else the link time of the live profile. */
    if (wall >= f->sent_at_us && wall - f->sent_at_us < 60000000ull)
        transfer = wall - f->sent_at_us;
    else
        transfer = (uint64_t)(nd->link_ms[f->block - 1] * 1000.0);
    job_t *j = job_new(nd, f->request_id, start, f->plan, msg_p, in->tensor, in->tensor_numel);
    if (!j) {
        node__hand_back(nd, f->request_id, "out of memory");
        return;
    }
    j->owner = nd; /* its sender keeps the map until this node says `taken` */
    j->npeers = 1;
    j->peers[0] = in->peer;
    j->map_sent_at = f->sent_at_us;
    j->elapsed0_us = f->elapsed_us + transfer;
    nd->transfer_sum_ms += (double)transfer / 1000.0;
    nd->transfer_n++;
    j->has_deadline = f->has_deadline_us;
    j->deadline_us = f->deadline_us;
    node__job_policy(j, f->policy, f->has_interrupt ? &f->interrupt : NULL);
    if (f->has_stop) {
        j->stop_kind = f->stop.kind;
        j->stop_threshold = f->stop.threshold;
    }
    j->mflop = f->mflop;
    for (pb_size_t i = 0; i < f->seen_count; i++) {
        scores_seen_t *e = &j->seen[i];
        e->exit = (int)f->seen[i].exit;
        e->confidence = f->seen[i].confidence;
        e->class_id = (int)f->seen[i].class_id;
        e->nprobs = f->seen[i].probs_count;
        memcpy(e->probs, f->seen[i].probs, sizeof(float) * f->seen[i].probs_count);
        j->arrive[i].exit = e->exit;
        j->arrive[i].arrive_ms = 0; /* sent upstream: taken as arrived */
    }
    j->nseen = f->seen_count;
    node__job_add(nd, j);
}

static void on_peer_heartbeat(node_t *nd, const wire_in_t *in)
{
    ei_err_t err;
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_heartbeat_reply_tag);
    env.reply_to = in->env.seq;
    env.seq = ++nd->seq;
    env.body.heartbeat_reply.tier = nd->conf.tier;
    env.body.heartbeat_reply.seq = in->env.body.heartbeat.seq;
    env.body.heartbeat_reply.echo_sent_at_us = in->env.body.heartbeat.sent_at_us;
    env.body.heartbeat_reply.profile_version = nd->profile_version;
    /* what the previous tier routes by (runtime/route.h) and notices a restart by */
    einet_HeartbeatReply *r = &env.body.heartbeat_reply;
    r->in_flight = (uint32_t)node__inflight(nd);
    r->instance = nd->instance;
    snprintf(r->name, sizeof r->name, "%s", nd->conf.name);
    double ms = 0;
    for (int k = nd->conf.first_block; k <= nd->conf.last_block && k <= nd->n; k++)
        ms += nd->conv_ms[k - 1] + nd->branch_ms[k - 1];
    r->ms_per_req = (float)ms;
    r->draining = nd->draining;
    r->next_down = nd->n_next && !node__next_up(nd); /* it could not pass a map on */
    if (wire_send(nd->bind, &in->peer, &env, NULL, &err) < 0)
        nd->counts.send_failed++;
}

/* 1 when the connection holding the previous tier's place still takes messages: the
 * probe is an Ack, which a node ignores. */
static int prev_alive(node_t *nd, int slot)
{
    einet_Envelope env;
    ei_err_t err;
    wire_env_init(&env, einet_Envelope_ack_tag);
    env.seq = ++nd->seq;
    return wire_send(nd->bind, &nd->prev.slot[slot].peer, &env, NULL, &err) == 0;
}

/* A connection that holds no place on the bind claims the previous tier's: with a heartbeat
 * naming that tier and the blocks right before this node's (keyless), or with that tier's
 * key (keys: any message, the key proves it). Refused while another live connection holds
 * it. 1 when the sender now holds the place. */
static int claim_prev(node_t *nd, const wire_in_t *in)
{
    const einet_Heartbeat *h = &in->env.body.heartbeat;
    int hello = in->env.which_body == einet_Envelope_heartbeat_tag;
    char why[128];
    if (sec_enabled(nd->sec) ? in->who.role != SEC_ROLE_NODE || in->who.tier != nd->prev_tier ||
                                   (hello && (int)h->tier != nd->prev_tier)
                             : !hello || (int)h->tier != nd->prev_tier ||
                                   (int)h->last_block + 1 != nd->conf.first_block) {
        snprintf(why, sizeof why, "not from %s, the previous tier%s", node__tier_name(nd->prev_tier),
                 hello ? "" : " (a node introduces itself with a heartbeat)");
        refuse_stranger(nd, in, why);
        return 0;
    }
    /* the previous tier may have several replicas: each node (its key, or keyless its
     * name, the tier's when it gives none) has a slot of its own */
    const char *id = sec_enabled(nd->sec) ? in->who.key
                     : h->name[0]         ? h->name
                                          : node__tier_name(nd->prev_tier);
    int slot = -1;
    for (int i = 0; i < nd->prev.n && slot < 0; i++)
        if (nd->prev.slot[i].bound && strcmp(nd->prev_id[i], id) == 0)
            slot = i;
    for (int i = 0; i < nd->prev.n && slot < 0; i++)
        if (!nd->prev.slot[i].bound)
            slot = i;
    if (slot < 0) {
        snprintf(why, sizeof why, "more than %d nodes of %s", nd->prev.n,
                 node__tier_name(nd->prev_tier));
        refuse_stranger(nd, in, why);
        return 0;
    }
    int alive = members_held_by_other(&nd->prev, slot, &in->peer) ? prev_alive(nd, slot) : 1;
    members_claim_t r =
        members_claim(&nd->prev, slot, &in->peer, in->who.key, node__now_us(), alive);
    if (r == MEMBERS_DUPLICATE) {
        snprintf(why, sizeof why, "a second connection claims %s, which is connected and alive",
                 node__tier_name(nd->prev_tier));
        refuse_stranger(nd, in, why);
        return 0;
    }
    if (r == MEMBERS_TAKEN)
        ei_log(EI_LOG_INFO, "%s (%s) is back on a new connection", node__tier_name(nd->prev_tier),
               sec_enabled(nd->sec) ? "its key" : id);
    snprintf(nd->prev_id[slot], sizeof nd->prev_id[slot], "%s", id);
    return 1;
}

/* A batch of maps from the previous tier (proto/messages.proto, Batch): each is taken as
 * if it had come alone; a bad one is refused on its own. */
static void on_map_batch(node_t *nd, xport_t *x, const wire_in_t *in)
{
    wire_in_t item;
    wire_batch_it_t it = {0, 0};
    ei_err_t err;
    int rc;
    while ((rc = wire_batch_next(in, &it, &item, &err)) != 0) {
        if (rc < 0)
            refuse(nd, x, &item, rc, "bind", err.msg);
        else if (item.env.which_body == einet_Envelope_feature_map_tag &&
                 ++nd->counts.maps_batched)
            on_map(nd, &item, NULL);
        else
            refuse(nd, x, &item, EI_E_FORMAT, "bind", "unexpected body from the previous tier");
    }
}

void node__on_bind(xport_t *x, xport_msg_t **msg_p, void *arg)
{
    node_t *nd = arg;
    wire_in_t in;
    ei_err_t err;
    int rc = wire_recv(*msg_p, &in, &err);
    int member = members_find(&nd->prev, &in.peer) >= 0;
    if (rc < 0) {
        if (member)
            refuse(nd, x, &in, rc, "bind", err.msg);
        else
            refuse_stranger(nd, &in, err.msg);
        return;
    }
    if (!member && !claim_prev(nd, &in))
        return;
    members_heard(&nd->prev, members_find(&nd->prev, &in.peer), node__now_us());
    switch (in.env.which_body) {
    case einet_Envelope_feature_map_tag:
        on_map(nd, &in, msg_p);
        break;
    case einet_Envelope_batch_tag:
        on_map_batch(nd, x, &in);
        break;
    case einet_Envelope_heartbeat_tag:
        on_peer_heartbeat(nd, &in);
        break;
    case einet_Envelope_error_tag:
        node__log_bad(nd, "the previous tier refused a message: %s", in.env.body.error.message);
        break;
    default:
        refuse(nd, x, &in, EI_E_FORMAT, "bind", "unexpected body from the previous tier");
        break;
    }
}

/* ---- from the next tier's replicas ---- */

static void on_next_reply(node_t *nd, int r, const einet_HeartbeatReply *h, uint64_t now)
{
    node_next_t *x = &nd->nx[r];
    x->in_flight = h->in_flight;
    x->ms_per_req = h->ms_per_req;
    x->draining = h->draining;
    x->next_down = h->next_down;
    if (h->name[0])
        snprintf(x->name, sizeof x->name, "%s", h->name);
    if (h->instance && x->instance && h->instance != x->instance) {
        /* a new process behind the endpoint: what the old one held is gone */
        x->instance = h->instance;
        node__next_lost(nd, r, "restarted: its held maps move");
    }
    x->instance = h->instance;
    if (link_on_reply(&x->link, h->seq, now > h->echo_sent_at_us ? now - h->echo_sent_at_us : 0,
                      now)) {
        ei_log(EI_LOG_INFO, "%s link to %s up", node__link_name(nd),
               x->name[0] ? x->name : x->endpoint);
        if (nd->link_reported != 1)
            node__report_link(nd);
    }
}

void node__handle_next(node_t *nd, int r, xport_msg_t **msg_p)
{
    wire_in_t in;
    ei_err_t err;
    xport_t *x = nd->nx[r].x;
    int rc = wire_recv(*msg_p, &in, &err);
    if (rc < 0) {
        refuse(nd, x, &in, rc, "next", err.msg);
        return;
    }
    switch (in.env.which_body) {
    case einet_Envelope_heartbeat_reply_tag:
        on_next_reply(nd, r, &in.env.body.heartbeat_reply, node__now_us());
        break;
    case einet_Envelope_taken_tag: /* that tier has the request: the copy kept goes */
        handoff_taken(nd->ledger, in.env.body.taken.request_id);
        break;
    case einet_Envelope_batch_tag: { /* a batch's `taken`, each as if it came alone */
        wire_in_t item;
        wire_batch_it_t it = {0, 0};
        while ((rc = wire_batch_next(&in, &it, &item, &err)) != 0) {
            if (rc < 0)
                refuse(nd, x, &item, rc, "next", err.msg);
            else if (item.env.which_body == einet_Envelope_taken_tag)
                handoff_taken(nd->ledger, item.env.body.taken.request_id);
            else
                refuse(nd, x, &item, EI_E_FORMAT, "next", "unexpected body from the next tier");
        }
        break;
    }
    case einet_Envelope_error_tag:
        node__log_bad(nd, "the next tier refused a message: %s", in.env.body.error.message);
        break;
    case einet_Envelope_ack_tag: /* an identity check: the connection is alive */
        break;
    default:
        refuse(nd, x, &in, EI_E_FORMAT, "next", "unexpected body from the next tier");
        break;
    }
}

void node__on_next(xport_t *x, xport_msg_t **msg_p, void *arg)
{
    node_next_t *nx = arg;
    node_t *nd = nx->nd;
    (void)x;
    uint64_t now = node__now_us(), at = fault_deliver_at(&nd->fault, FAULT_IN, now);
    if (at == FAULT_NEVER && !nx->link.up) {
        nd->counts.fault_discarded++;
        return;
    }
    if ((at > now || nd->held[FAULT_IN] > 0) &&
        node__delay_incoming(nd, nx->i, msg_p, at > now ? at : now) == 0)
        return;
    node__handle_next(nd, nx->i, msg_p);
}
