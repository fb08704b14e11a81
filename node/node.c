/* einet-node's lifecycle: loading, sockets, the heartbeat and report timers, draining on
 * SIGTERM (see node.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "nn/train.h"
#include "node/node_internal.h"

uint64_t node__now_us(void)
{
    return uv_hrtime() / 1000;
}

uint64_t node__wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

const char *node__tier_name(int tier)
{
    static const char *const names[] = {"none", "device", "edge", "cloud"};
    return tier >= 0 && tier <= 3 ? names[tier] : "?";
}

int node__link_id(const node_t *nd)
{
    /* The link leaving the device is device-edge, the one leaving the edge edge-cloud
     * (also in a two-tier device,cloud pipeline, where the device's link is "device-edge"). */
    return nd->conf.tier == einet_Tier_TIER_EDGE ? einet_Link_LINK_EDGE_CLOUD
                                                   : einet_Link_LINK_DEVICE_EDGE;
}

const char *node__link_name(const node_t *nd)
{
    return node__link_id(nd) == einet_Link_LINK_EDGE_CLOUD ? "edge-cloud" : "device-edge";
}

static int check_blocks(node_t *nd, ei_err_t *err)
{
    const conf_node_t *c = &nd->conf;
    if (c->last_block > nd->n)
        return ei_err_set(err, EI_E_RANGE, "%s: last_block %d, the model has %d blocks", c->model,
                          c->last_block, nd->n);
    if (c->last_block < nd->n && !c->next[0])
        return ei_err_set(err, EI_E_INVAL,
                          "'next' is empty but blocks %d..%d are left for a next tier",
                          c->last_block + 1, nd->n);
    if (c->ee[0] && (c->tier != einet_Tier_TIER_DEVICE || c->first_block != 1))
        return ei_err_set(err, EI_E_INVAL, "'ee' is for the device (the tier with block 1)");
    if (nd->classes > WIRE_MAX_CLASSES)
        return ei_err_set(err, EI_E_RANGE, "%s: %d classes, the protocol carries %d", c->model,
                          nd->classes, WIRE_MAX_CLASSES);
    return 0;
}

/* The validation scores take a second or two (loading the training set, running the
 * model): a worker thread computes them while the node already serves with a prior. */
static void scores_run(uv_work_t *w)
{
    node_t *nd = w->data;
    ei_err_t err;
    nd->scores_rc = scores_from_validation(&nd->scores_next, nd->conf.model, NULL,
                                           SCORES_VAL_SAMPLES, &err);
    if (nd->scores_rc < 0)
        snprintf(nd->scores_next.source, sizeof nd->scores_next.source, "%.90s", err.msg);
}

static void scores_done(uv_work_t *w, int status)
{
    node_t *nd = w->data;
    nd->scores_busy = 0;
    if (status == 0 && nd->scores_rc == 0 && nd->scores_next.n == nd->n) {
        memcpy(nd->scores.acc, nd->scores_next.acc, sizeof nd->scores.acc);
        snprintf(nd->scores.source, sizeof nd->scores.source, "%s", nd->scores_next.source);
    } else {
        ei_log(EI_LOG_WARN, "exit scores: %s; keeping the prior",
                nd->scores_next.source);
    }
    node__maybe_close(nd);
}

/* Exit scores: the predictor named in the config (an error if it does not load), and the
 * accuracies from the model's CS-profile when it has one, else measured off the loop. */
static int load_scores(node_t *nd, ei_err_t *err)
{
    char cs[CONF_STR_MAX + 64];
    ei_err_t e2;
    scores_prior(&nd->scores, nd->n, nd->classes);
    if (nd->conf.predictor[0] && scores_load_predictor(&nd->scores, nd->conf.predictor, err) < 0)
        return err->code;
    scores_profile_path(nd->conf.model, cs, sizeof cs);
    if (access(cs, R_OK) == 0 && scores_from_profile(&nd->scores, cs, &e2) == 0)
        return 0;
    nd->scores_next = nd->scores;
    nd->scores_next.pred = NULL;
    nd->scores_work.data = nd;
    nd->scores_busy = uv_queue_work(nd->loop, &nd->scores_work, scores_run, scores_done) == 0;
    return 0;
}

/* The device's class-specific early exit: it must tap blocks this node runs. */
static int load_ee(node_t *nd, ei_err_t *err)
{
    if (!nd->conf.ee[0])
        return 0;
    nd->ee = ee_load(nd->conf.ee, nd->model, 1, err);
    if (!nd->ee)
        return err->code;
    if (ee_layer(nd->ee) > nd->conf.last_block)
        return ei_err_set(err, EI_E_RANGE, "%s: the early exit follows block %d, the device runs "
                          "blocks 1..%d", nd->conf.ee, ee_layer(nd->ee), nd->conf.last_block);
    ei_log(EI_LOG_INFO, "early exit for class %d after block %d, alpha %g",
            ee_target(nd->ee), ee_layer(nd->ee), ee_alpha(nd->ee));
    return 0;
}

/* server_cert: the public certificate of the server a DEALER connects to (NULL for the
 * bind socket, a CURVE server when keys are on). */
static xport_t *socket_new(node_t *nd, int type, const char *server_cert, ei_err_t *err)
{
    xport_opts_t o = {.type = type, .linger_ms = -1, .immediate = 1, .sec = nd->sec,
                      .server_cert = server_cert};
    return xport_new(nd->loop, nd->zctx, &o, err);
}

/* One DEALER per next-tier replica (`next` lists them), each with its own link state; the
 * maps sent and not yet taken over wait in the ledger. */
static int make_next(node_t *nd, ei_err_t *err)
{
    char list[NODE_MAX_NEXT][CONF_STR_MAX];
    int n = conf_list_split(nd->conf.next, list, NODE_MAX_NEXT);
    if (n < 1)
        return ei_err_set(err, EI_E_INVAL, "'next': expected 1 to %d endpoints separated by "
                          "commas", NODE_MAX_NEXT);
    /* One certificate for every replica, or one per replica in `next`'s order (the
     * configuration checked the count). */
    char keys[NODE_MAX_NEXT][CONF_STR_MAX];
    int nk = nd->conf.next_key[0] ? conf_list_split(nd->conf.next_key, keys, NODE_MAX_NEXT) : 0;
    uint64_t now = node__now_us(), timeout = (uint64_t)nd->conf.heartbeat_timeout_ms * 1000;
    for (int i = 0; i < n; i++) {
        node_next_t *x = &nd->nx[i];
        x->nd = nd;
        x->i = i;
        memcpy(x->endpoint, list[i], sizeof x->endpoint); /* both CONF_STR_MAX */
        link_init(&x->link, timeout, now);
        nd->n_next = i + 1; /* counted as soon as it has a socket to destroy */
        const char *key = nk < 1 ? "" : keys[nk == n ? i : 0];
        if (!(x->x = socket_new(nd, ZMQ_DEALER, key, err)))
            return err->code;
    }
    return 0;
}

static void destroy_next(node_t *nd)
{
    for (int i = 0; i < nd->n_next; i++)
        xport_destroy(&nd->nx[i].x);
}

/* Random routing ids everywhere: a node is known by its heartbeat and its key, not by a
 * routing id (any peer could claim one, and a reconnect would be refused as a duplicate). */
static int make_sockets(node_t *nd, ei_err_t *err)
{
    nd->sec = sec_new(nd->zctx, "einet-node", nd->conf.key, nd->conf.trust, err);
    if (!nd->sec)
        return err->code;
    /* A deep queue towards the coordinator: under load it may fall behind for a moment,
     * and what a node sends it (results, hand-backs) must not be refused for that. */
    xport_opts_t co = {.type = ZMQ_DEALER, .linger_ms = -1, .immediate = 1, .sec = nd->sec,
                       .server_cert = nd->conf.coordinator_key, .sndhwm = NODE_COORD_HWM,
                       .rcvhwm = NODE_COORD_HWM};
    nd->coord = xport_new(nd->loop, nd->zctx, &co, err);
    if (!nd->coord)
        return err->code;
    if (nd->conf.bind[0] && !(nd->bind = socket_new(nd, ZMQ_ROUTER, NULL, err)))
        return err->code;
    if (!(nd->ledger = handoff_new(NODE_LEDGER_MAX))) /* empty on the last tier */
        return ei_err_set(err, EI_E_NOMEM, "out of memory");
    if (nd->conf.last_block < nd->n && make_next(nd, err) < 0)
        return err->code;
    nd->prev_tier = nd->conf.previous ? nd->conf.previous : nd->conf.tier - 1;
    members_init(&nd->prev, MEMBERS_MAX, (uint64_t)nd->conf.heartbeat_timeout_ms * 1000);
    if (!nd->conf.name[0]) /* a node unnamed is its tier */
        snprintf(nd->conf.name, sizeof nd->conf.name, "%s", node__tier_name(nd->conf.tier));
    return 0;
}

static void init_handles(node_t *nd)
{
    uv_timer_init(nd->loop, &nd->hb_timer);
    uv_timer_init(nd->loop, &nd->report_timer);
    uv_timer_init(nd->loop, &nd->slow_timer);
    uv_timer_init(nd->loop, &nd->delay_timer);
    uv_timer_init(nd->loop, &nd->batch_timer);
    uv_idle_init(nd->loop, &nd->work);
    nd->batch_timer.data = nd;
    nd->hb_timer.data = nd->report_timer.data = nd->slow_timer.data = nd;
    nd->delay_timer.data = nd->work.data = nd;
    nd->handles_open = 6;
    slow_init(&nd->slow, nd->conf.slowdown);
    /* The slow-down's waits end in a sleep to the microsecond (slow.h): 1 us of timer slack
     * instead of the default 50 us. */
    if (nd->conf.slowdown > 1.0)
        (void)prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
}

node_t *node_new(const conf_node_t *conf, uv_loop_t *loop, void *zctx, ei_err_t *err)
{
    node_t *nd = calloc(1, sizeof *nd);
    if (!nd) {
        ei_err_set(err, EI_E_NOMEM, "out of memory");
        return NULL;
    }
    nd->conf = *conf;
    nd->loop = loop;
    nd->zctx = zctx;
    nd->link_reported = -1;
    /* The engine's own pool (OpenBLAS then runs one thread inside each); before the model
     * is made, which sizes its workspace for the count in force. */
    if (nn_set_threads(conf->threads) < 0) {
        ei_err_set(err, EI_E_NOMEM, "could not start %d compute threads ('threads' in [node])",
                   conf->threads);
        goto fail;
    }
    nd->model = nn_model_load(conf->model, conf->batch_max, err);
    if (!nd->model)
        goto fail;
    nn_model_prepare_inference(nd->model);
    nd->n = nn_model_blocks(nd->model);
    nd->classes = nn_model_classes(nd->model);
    nd->in_shape = nn_model_input_shape(nd->model);
    for (int k = 0; k < nd->n && k < NODE_MAX_BLOCKS; k++) {
        nd->conv_mflop[k] = nn_model_conv_flops(nd->model, k) / 1e6;
        nd->branch_mflop[k] = nn_model_branch_flops(nd->model, k) / 1e6;
    }
    if (check_blocks(nd, err) < 0 || nn_arch_check_served(conf->model, nd->in_shape, err) < 0 ||
        load_ee(nd, err) < 0 || node__batch_alloc(nd, err) < 0 || node__warmup(nd, err) < 0 ||
        make_sockets(nd, err) < 0 || load_scores(nd, err) < 0)
        goto fail;
    replan_search_init(&nd->search, conf->search, 100, 1);
    fault_init(&nd->fault, (uint64_t)conf->tier * 7919u + (uint64_t)node__wall_us());
    uint64_t now = node__now_us(), timeout = (uint64_t)conf->heartbeat_timeout_ms * 1000;
    link_init(&nd->coord_link, timeout, now);
    /* this process, as the next tier's heartbeat replies name it: a restart shows */
    nd->instance = ((uint64_t)getpid() << 32) ^ node__wall_us() ^ uv_hrtime();
    if (!nd->instance)
        nd->instance = 1;
    init_handles(nd);
    return nd;
fail:
    node__batch_free(nd);
    xport_destroy(&nd->coord);
    xport_destroy(&nd->bind);
    destroy_next(nd);
    handoff_destroy(&nd->ledger);
    sec_destroy(&nd->sec);
    nn_model_destroy(&nd->model);
    ee_destroy(&nd->ee);
    scores_release(&nd->scores);
    free(nd);
    return NULL;
}

/* ---- timers ---- */

static void heartbeat_coord(node_t *nd)
{
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
    h->batch_max = (uint32_t)nd->conf.batch_max; /* > 1: batches of tasks welcome */
    node__outbox_flush(nd);
    node__send_coord(nd, &env);
}

static void on_heartbeat(uv_timer_t *t)
{
    node_t *nd = t->data;
    heartbeat_coord(nd);
    node__heartbeat_next(nd, -1, 0);
    for (int i = 0; i < nd->n_next; i++)
        if (link_tick(&nd->nx[i].link, node__now_us())) {
            char why[64];
            snprintf(why, sizeof why, "no reply for %d ms", nd->conf.heartbeat_timeout_ms);
            node__link_down(nd, i, why);
        }
    if (nd->n_next)
        node__failover(nd); /* also drops kept maps past their deadline */
}

static void send_report(node_t *nd)
{
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_profile_report_tag);
    einet_ProfileReport *r = &env.body.profile_report;
    r->tier = nd->conf.tier;
    for (int k = nd->conf.first_block; k <= nd->conf.last_block; k++) {
        einet_BlockTiming *b = &r->blocks[r->blocks_count++];
        b->block = (uint32_t)k;
        /* The mean of the samples since the last mean reported, once there are enough
         * of them (a branch a planner rarely runs stays stable), else the last mean
         * reported, else the running average (seeded by the warm-up). */
        uint32_t cn = nd->conv_n[k - 1], bn = nd->branch_n[k - 1];
        b->samples = cn ? cn : 1; /* the warm-up counts once */
        if (cn >= NODE_REPORT_MIN) {
            nd->conv_rep[k - 1] = nd->conv_sum[k - 1] / cn;
            nd->conv_n[k - 1] = 0;
            nd->conv_sum[k - 1] = 0;
        }
        if (bn >= NODE_REPORT_MIN) {
            nd->branch_rep[k - 1] = nd->branch_sum[k - 1] / bn;
            nd->branch_n[k - 1] = 0;
            nd->branch_sum[k - 1] = 0;
        }
        b->conv_ms = (float)(nd->conv_rep[k - 1] > 0 ? nd->conv_rep[k - 1] : nd->conv_ms[k - 1]);
        b->branch_ms =
            (float)(nd->branch_rep[k - 1] > 0 ? nd->branch_rep[k - 1] : nd->branch_ms[k - 1]);
    }
    /* the link to the next tier: the mean over its replicas measured */
    double lat = 0, bw = 0;
    uint64_t samples = 0;
    int nl = 0, nb = 0;
    for (int i = 0; i < nd->n_next; i++) {
        const link_state_t *l = &nd->nx[i].link;
        if (!l->rtt_samples)
            continue;
        lat += link_latency_ms(l);
        samples += l->rtt_samples;
        nl++;
        if (l->bw_mbps > 0) {
            bw += l->bw_mbps;
            nb++;
        }
    }
    if (nl) {
        r->next_latency_ms = (float)(lat / nl);
        r->next_bandwidth_mbps = (float)(nb ? bw / nb : 0);
        r->next_samples = (uint32_t)(samples < UINT32_MAX ? samples : UINT32_MAX);
    }
    r->coord_latency_ms = (float)link_latency_ms(&nd->coord_link);
    if (nd->transfer_n) {
        r->prev_transfer_ms = (float)(nd->transfer_sum_ms / nd->transfer_n);
        r->prev_samples = nd->transfer_n;
    }
    nd->transfer_sum_ms = 0;
    nd->transfer_n = 0;
    if (nd->boundary_n)
        r->boundary_ms = (float)(nd->boundary_sum_ms / nd->boundary_n);
    nd->boundary_sum_ms = 0;
    nd->boundary_n = 0;
    node__send_coord(nd, &env);
}

static void on_report(uv_timer_t *t)
{
    node_t *nd = t->data;
    /* The coordinator knows a connection by its first heartbeat: until one has been
     * answered, a report could arrive first and be refused as from no node. */
    if (!nd->coord_link.up)
        return;
    send_report(nd);
    node__report_link(nd); /* repeated, so a restarted coordinator learns it */
}

int node_start(node_t *nd, ei_err_t *err)
{
    const conf_node_t *c = &nd->conf;
    if (nd->bind && xport_bind(nd->bind, c->bind, err) < 0)
        return err->code;
    if (xport_connect(nd->coord, c->coordinator, err) < 0)
        return err->code;
    for (int i = 0; i < nd->n_next; i++)
        if (xport_connect(nd->nx[i].x, nd->nx[i].endpoint, err) < 0 ||
            xport_start(nd->nx[i].x, node__on_next, &nd->nx[i], err) < 0)
            return err->code;
    if (xport_start(nd->coord, node__on_coord, nd, err) < 0 ||
        (nd->bind && xport_start(nd->bind, node__on_bind, nd, err) < 0) ||
        node__metrics_start(nd, err) < 0)
        return err->code;
    uv_timer_start(&nd->hb_timer, on_heartbeat, 0, (uint64_t)c->heartbeat_ms);
    uv_timer_start(&nd->report_timer, on_report, 200, NODE_REPORT_MS);
    ei_log(EI_LOG_INFO, "%s runs blocks %d..%d of %d%s%s, coordinator %s%s%s",
            node__tier_name(c->tier), c->first_block, c->last_block, nd->n,
            nd->bind ? ", bound to " : "", nd->bind ? xport_endpoint(nd->bind) : "",
            c->coordinator, nd->n_next ? ", next " : "", nd->n_next ? c->next : "");
    return 0;
}

/* ---- draining and closing ---- */

static void on_closed(uv_handle_t *h)
{
    node_t *nd = h->data;
    nd->handles_open--;
}

/* Messages xport dropped for having more frames than any message has. */
static uint64_t dropped(const node_t *nd)
{
    uint64_t n = 0;
    const xport_t *x[2] = {nd->coord, nd->bind};
    for (int i = 0; i < 2; i++)
        n += x[i] ? xport_stats(x[i]).dropped : 0;
    for (int i = 0; i < nd->n_next; i++)
        n += nd->nx[i].x ? xport_stats(nd->nx[i].x).dropped : 0;
    return n;
}

static void close_all(node_t *nd)
{
    nd->closed = 1;
    uv_timer_stop(&nd->hb_timer);
    node__delay_clear(nd);
    node__metrics_stop(nd);
    uv_close((uv_handle_t *)&nd->hb_timer, on_closed);
    uv_close((uv_handle_t *)&nd->report_timer, on_closed);
    uv_close((uv_handle_t *)&nd->slow_timer, on_closed);
    uv_close((uv_handle_t *)&nd->delay_timer, on_closed);
    uv_close((uv_handle_t *)&nd->batch_timer, on_closed);
    uv_close((uv_handle_t *)&nd->work, on_closed);
    nd->counts.bad_messages += dropped(nd); /* messages of too many frames, refused by xport */
    node__outbox_flush(nd);
    node__outbox_free(nd);
    xport_destroy(&nd->coord);
    xport_destroy(&nd->bind);
    destroy_next(nd);
    node_counts_t k = nd->counts;
    ei_log(EI_LOG_INFO,
            "%s stopped: %llu tasks, %llu maps in, %llu exits, %llu maps out, "
            "%llu handed back, %llu cancelled, %llu past deadline, %llu refused, %llu batches, "
            "%llu largest batch, %llu early, %llu maps moved, %llu duplicate maps, "
            "%llu coalesced sends, %llu maps from batches, %llu tasks from batches",
            node__tier_name(nd->conf.tier), (unsigned long long)k.tasks,
            (unsigned long long)k.maps, (unsigned long long)k.exits_sent,
            (unsigned long long)k.maps_sent, (unsigned long long)k.handed_back,
            (unsigned long long)k.cancelled, (unsigned long long)k.dropped_deadline,
            (unsigned long long)k.bad_messages, (unsigned long long)k.batches,
            (unsigned long long)k.batch_largest, (unsigned long long)k.early,
            (unsigned long long)k.moved, (unsigned long long)k.duplicates,
            (unsigned long long)k.coalesced, (unsigned long long)k.maps_batched,
            (unsigned long long)k.tasks_batched);
}

void node__maybe_close(node_t *nd)
{
    if (nd->draining && !nd->closed && !nd->bn && !nd->head && !nd->delayed && !nd->scores_busy)
        close_all(nd);
}

void node_drain(node_t *nd)
{
    if (nd->draining)
        return;
    nd->draining = 1;
    ei_log(EI_LOG_INFO, "%s draining", node__tier_name(nd->conf.tier));
    heartbeat_coord(nd); /* before the hand-backs, so the coordinator says why */
    node__hand_back_queue(nd);
    node__delay_clear(nd);
    node__maybe_close(nd);
}

int node_exit_code(const node_t *self)
{
    return self->exit_code;
}

static nn_shape_t reply_shape(const uint32_t *d)
{
    return (nn_shape_t){(int)d[0], (int)d[1], (int)d[2]};
}

void node__check_chain(node_t *nd, const einet_HeartbeatReply *r)
{
    const conf_node_t *c = &nd->conf;
    if (nd->draining || !r->blocks)
        return;
    char src[CONF_STR_MAX + 64], ref[160];
    ei_err_t err = {0};
    int first = c->first_block, last = c->last_block, rc = 0;
    snprintf(src, sizeof src, "%s (%s, blocks %d..%d)", c->model, node__tier_name(c->tier), first,
             last);
    if ((int)r->blocks != nd->n)
        rc = ei_err_set(&err, EI_E_SHAPE, "%s: the model has %d blocks, the coordinator's %u: "
                        "every tier must run the same architecture", src, nd->n, r->blocks);
    if (!rc && r->block_in_count == 3) {
        nn_shape_t in = first == 1 ? nd->in_shape : nn_model_feature_shape(nd->model, first - 2);
        snprintf(ref, sizeof ref, "the coordinator's model at block %d, what the %s sends", first,
                 first == 1 ? "coordinator" : "tier before");
        rc = nn_arch_check_shape(src, "input", in, reply_shape(r->block_in), ref, &err);
    }
    if (!rc && r->block_out_count == 3) {
        snprintf(ref, sizeof ref, "the coordinator's model after block %d, what the tier after "
                 "takes", last);
        rc = nn_arch_check_shape(src, "output", nn_model_feature_shape(nd->model, last - 1),
                                 reply_shape(r->block_out), ref, &err);
    }
    if (!rc)
        return;
    ei_log(EI_LOG_ERROR, "%s", err.msg);
    nd->exit_code = 2;
    node_drain(nd);
}

void node_destroy(node_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    node_t *nd = *self_p;
    while (nd->head) {
        job_t *j = nd->head;
        nd->head = j->next;
        node__job_free(&j);
    }
    for (int i = 0; i < nd->bn; i++)
        node__job_free(&nd->batch[i]);
    nd->bn = 0;
    node__batch_free(nd);
    node__outbox_free(nd);
    node__delay_clear(nd);
    handoff_destroy(&nd->ledger);
    sec_destroy(&nd->sec);
    planner_destroy(&nd->planner);
    nn_model_destroy(&nd->model);
    ee_destroy(&nd->ee);
    scores_release(&nd->scores);
    free(nd);
    *self_p = NULL;
}

node_counts_t node_counts(const node_t *nd)
{
    node_counts_t k = nd->counts;
    k.fault_held = nd->fault.held;
    if (!nd->closed)
        k.bad_messages += dropped(nd);
    return k;
}
