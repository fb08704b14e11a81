/* einet-coord's lifecycle, timers, cluster events and answers (see coord.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <zmq.h>

#include "coordinator/coord_internal.h"
#include "nn/train.h"
#include "planner/profile.h"

/* Answers may still be on their way when the coordinator stops: let them go. */
#define COORD_CLIENT_LINGER_MS 1000

uint64_t coord__now_us(void)
{
    return uv_hrtime() / 1000;
}

uint64_t coord__uptime_us(const coord_t *c)
{
    return coord__now_us() - c->start_us;
}

/* Messages to a node go to the connection that holds its place (wire/members.h), never to
 * a routing id derived from its name, which any peer could claim. */
int coord__send_node(coord_t *c, int ni, einet_Envelope *env, const float *tensor, size_t numel)
{
    ei_err_t err;
    if (!c->nodes || ni < 0 || ni >= c->members.n || !c->members.slot[ni].bound)
        return EI_E_PEER;
    wire_payload_t p = {tensor, numel, NULL, NULL};
    env->seq = ++c->seq;
    return wire_send(c->nodes, &c->members.slot[ni].peer, env, tensor ? &p : NULL, &err);
}

int coord__node_at(const coord_t *c, int pos)
{
    for (int i = 0; i < FLEET_MAX_NODES; i++)
        if (c->fleet.node[i].used && c->fleet.node[i].pos == pos &&
            c->fleet.node[i].state == FLEET_UP)
            return i;
    return -1;
}

void coord__push_profile(coord_t *c, int pos)
{
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_profile_update_tag);
    liveprof_fill(c->prof, &env.body.profile_update);
    for (int i = 0; i < FLEET_MAX_NODES; i++) {
        const fleet_node_t *n = &c->fleet.node[i];
        if (n->used && (pos < 0 || n->pos == pos) && n->state != FLEET_DOWN)
            (void)coord__send_node(c, i, &env, NULL, 0);
    }
}

/* ---- answers ---- */

/* Tells the nodes that may still hold an answered request to drop it. */
static void send_cancels(coord_t *c, uint64_t id, int pos)
{
    einet_Envelope env;
    for (int i = 0; i < FLEET_MAX_NODES; i++) {
        const fleet_node_t *n = &c->fleet.node[i];
        if (!n->used || n->pos < pos || n->state == FLEET_DOWN)
            continue;
        wire_env_init(&env, einet_Envelope_cancel_tag);
        env.body.cancel.request_id = id;
        (void)coord__send_node(c, i, &env, NULL, 0);
    }
}

void coord__on_answer(const reqs_done_t *d, void *arg)
{
    coord_t *c = arg;
    einet_Envelope env;
    resend_drop(c->resend, d->answer->request_id);
    wire_env_init(&env, einet_Envelope_answer_tag);
    env.body.answer = *d->answer;
    env.reply_to = d->client->seq;
    /* Recorded in this turn's batch; sent once it is committed (coord__flush). */
    coord__journal_answer(c, d->answer);
    coord__queue_client(c, &d->client->peer, &env, d->answer->request_id);
    stats_answer(c->stats, d->answer);
    coord__metrics_answer(c, d->answer);
    int st = d->answer->status;
    if (d->answer->request_id && st != einet_Status_STATUS_COMPLETE &&
        st != einet_Status_STATUS_DEVICE_EE && st != einet_Status_STATUS_REJECTED)
        send_cancels(c, d->answer->request_id, d->pos);
}

/* The current plan as 0/1 characters, for logs. */
static const char *plan_text(coord_t *c)
{
    static char text[CLUSTER_MAX_BLOCKS + 1];
    const uint8_t *p = liveprof_plan(c->prof);
    for (int k = 0; k < c->n; k++)
        text[k] = p[k] ? '1' : '0';
    text[c->n] = 0;
    return text;
}

/* ---- timers ---- */

static void on_expiry(uv_poll_t *h, int status, int events)
{
    coord_t *c = h->data;
    uint64_t fired;
    (void)status;
    (void)events;
    if (read(c->expiry_fd, &fired, sizeof fired) < 0) { /* EAGAIN: nothing due; go on */
    }
    c->expiry_armed_us = 0;
    reqs_expire(c->reqs, coord__now_us());
    coord__arm_expiry(c);
}

void coord__arm_expiry(coord_t *c)
{
    if (c->closing)
        return;
    uint64_t next = reqs_next_expiry(c->reqs);
    if (!next || (c->expiry_armed_us && c->expiry_armed_us <= next))
        return;
    c->expiry_armed_us = next;
    /* Absolute on CLOCK_MONOTONIC, the clock of uv_hrtime() and coord__now_us(). */
    struct itimerspec its = {{0, 0}, {(time_t)(next / 1000000), (long)(next % 1000000) * 1000}};
    if (timerfd_settime(c->expiry_fd, TFD_TIMER_ABSTIME, &its, NULL) != 0) {
        ei_log(EI_LOG_ERROR, "arming the expiry timer failed; expiring now");
        c->expiry_armed_us = 0;
        reqs_expire(c->reqs, coord__now_us());
    }
}

static void on_event(coord_t *c, const cluster_event_t *e, uint64_t now)
{
    const cluster_node_t *nd = &c->cluster.node[e->pos];
    int link = e->kind == CLUSTER_EV_LINK_UP || e->kind == CLUSTER_EV_LINK_DOWN ? e->pos + 1 : 0;
    int up = e->kind == CLUSTER_EV_NODE_UP || e->kind == CLUSTER_EV_LINK_UP;
    ei_log(up ? EI_LOG_INFO : EI_LOG_WARN, "%s", e->what);
    stats_fault(c->stats, coord__uptime_us(c), link ? 0 : nd->tier, link, e->what);
    switch (e->kind) {
    case CLUSTER_EV_NODE_DOWN:
    case CLUSTER_EV_LINK_DOWN:
        reqs_fail_upto(c->reqs, e->pos, einet_Status_STATUS_LINK, e->what, now);
        break;
    case CLUSTER_EV_NODE_UP:
        coord__push_profile(c, e->pos);
        break;
    default:
        break;
    }
}

/* What the death (or restart) of node ni at pipeline index pos cuts off (docs/tiers.md,
 * "Replicas and routing"). A device's, with another device up: the requests sent to it and
 * not heard from beyond it, whose tasks the coordinator sends once more to another device
 * (coord_tasks.c). An edge's or a cloud's, with another replica of its tier up:
 * nothing at once - each sender keeps the maps it sent until that tier takes them over, and
 * moves them to a live replica (or hands them back when none is left); only a request whose
 * sender died before it is lost with it, answered at the orphan expiry. With no replica of
 * the tier left: every request not heard from beyond it, as before. */
void coord__fail_cut_off(coord_t *c, int ni, int pos, const char *msg, uint64_t now)
{
    int others = fleet_up(&c->fleet, pos) - (c->fleet.node[ni].state == FLEET_UP);
    char why[160];
    if (pos == 0 && others > 0) {
        coord__resend_device(c, ni, msg, now);
    } else if (others > 0) {
        snprintf(why, sizeof why, "no result for %d ms after %.100s: lost with it",
                 COORD_ORPHAN_MS, msg);
        reqs_expire_upto(c->reqs, pos, now + (uint64_t)COORD_ORPHAN_MS * 1000,
                         einet_Status_STATUS_LINK, why);
        coord__arm_expiry(c);
    } else {
        reqs_fail_upto(c->reqs, pos, einet_Status_STATUS_LINK, msg, now);
    }
}

/* A node of a tier that has several: its own comings and goings. */
static void on_fleet_event(coord_t *c, const fleet_event_t *e, uint64_t now)
{
    static const char *const what[] = {"up", "draining", "lost", "left"};
    char msg[96];
    snprintf(msg, sizeof msg, "node %s (%s) %s", e->name,
             cluster_tier_name(c->cluster.node[e->pos].tier), what[e->kind]);
    ei_log(e->kind == FLEET_EV_UP ? EI_LOG_INFO : EI_LOG_WARN, "%s", msg);
    if (e->kind == FLEET_EV_DOWN) {
        coord__fail_cut_off(c, e->node, e->pos, msg, now);
    } else if (e->kind == FLEET_EV_FORGOTTEN && e->node < c->members.n) {
        c->members.slot[e->node].bound = 0; /* the slot may go to another node now */
    } else if (e->kind == FLEET_EV_UP) {
        coord__push_profile(c, -1);
    }
}

void coord__tick(coord_t *c)
{
    cluster_event_t ev[2 * CONF_MAX_TIERS];
    uint64_t now = coord__now_us();
    int k = cluster_tick(&c->cluster, now, ev);
    for (int i = 0; i < k; i++)
        on_event(c, &ev[i], now);
    fleet_event_t fev[FLEET_MAX_NODES];
    k = fleet_tick(&c->fleet, now, fev, FLEET_MAX_NODES);
    for (int i = 0; i < k; i++)
        on_fleet_event(c, &fev[i], now);
    coord__resume(c);
}

static void on_tick(uv_timer_t *t)
{
    coord__tick(t->data);
}

static void on_profile_timer(uv_timer_t *t)
{
    coord_t *c = t->data;
    ei_err_t err;
    if (!cluster_take_changed(&c->cluster))
        return;
    if (liveprof_rebuild(c->prof, &c->cluster, &err) < 0) {
        ei_log(EI_LOG_WARN, "live profile not used: %s", err.msg);
        return;
    }
    coord__push_profile(c, -1);
}

/* ---- lifecycle ---- */

/* The validation scores take a second or two: a worker thread computes them while the
 * coordinator already plans with a prior, and the plan is made again when they come. */
static void scores_run(uv_work_t *w)
{
    coord_t *c = w->data;
    ei_err_t err;
    c->scores_rc = scores_from_validation(&c->scores_next, c->conf.model, NULL,
                                          SCORES_VAL_SAMPLES, &err);
    if (c->scores_rc < 0)
        snprintf(c->scores_next.source, sizeof c->scores_next.source, "%.90s", err.msg);
}

static void scores_done(uv_work_t *w, int status)
{
    coord_t *c = w->data;
    ei_err_t err;
    c->scores_busy = 0;
    if (status < 0 || c->scores_rc < 0 || c->scores_next.n != c->n) {
        ei_log(EI_LOG_WARN, "exit scores: %s; keeping the prior",
                c->scores_next.source);
        return;
    }
    memcpy(c->scores.acc, c->scores_next.acc, sizeof c->scores.acc);
    snprintf(c->scores.source, sizeof c->scores.source, "%s", c->scores_next.source);
    liveprof_set_scores(c->prof, &c->scores);
    if (c->closing || liveprof_rebuild(c->prof, &c->cluster, &err) < 0)
        return;
    ei_log(EI_LOG_INFO, "exit scores: %s; plan %s", c->scores.source,
            plan_text(c));
    coord__push_profile(c, -1);
}

static void load_scores(coord_t *c)
{
    c->scores_next = c->scores;
    c->scores_next.pred = NULL;
    c->scores_work.data = c;
    c->scores_busy = uv_queue_work(c->loop, &c->scores_work, scores_run, scores_done) == 0;
}

/* The profile files: `profile` names a profile directory (et.json, cs-val.safetensors), an
 * ET-profile (.json) or a CS-profile; empty, the model's own profile directory if any. */
static void profile_paths(const coord_t *c, char *et, char *cs, size_t cap)
{
    const char *p = c->conf.profile;
    struct stat st;
    et[0] = cs[0] = 0;
    if (!p[0]) {
        scores_profile_path(c->conf.model, cs, cap);
        const char *slash = strrchr(cs, '/');
        snprintf(et, cap, "%.*s/et.json", (int)(slash - cs), cs);
    } else if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(et, cap, "%s/et.json", p);
        snprintf(cs, cap, "%s/cs-val.safetensors", p);
    } else if (strlen(p) > 5 && strcmp(p + strlen(p) - 5, ".json") == 0) {
        snprintf(et, cap, "%s", p);
    } else {
        snprintf(cs, cap, "%s", p);
    }
}

/* Exit scores and first block times from the profile files, and the predictor. A file the
 * config names must load; the model's own profile directory is used only when present. */
static int load_profile(coord_t *c, profile_et_t *et, int *has_et, int *has_cs, ei_err_t *err)
{
    char etp[CONF_STR_MAX + 64], csp[CONF_STR_MAX + 64];
    int named = c->conf.profile[0] != 0;
    profile_paths(c, etp, csp, sizeof etp);
    *has_et = *has_cs = 0;
    if (etp[0] && access(etp, F_OK) == 0) {
        if (profile_et_load(etp, et, err) < 0)
            return err->code;
        *has_et = et->times.n == c->n;
    }
    if (csp[0] && access(csp, F_OK) == 0) {
        if (scores_from_profile(&c->scores, csp, err) < 0)
            return err->code;
        *has_cs = 1;
    }
    if (named && !*has_et && !*has_cs)
        return ei_err_set(err, EI_E_NOTFOUND, "profile '%s': no et.json or cs-val.safetensors",
                          c->conf.profile);
    if (c->conf.predictor[0] && scores_load_predictor(&c->scores, c->conf.predictor, err) < 0)
        return err->code;
    return 0;
}

int coord__class_names(const char *list, einet_ModelInfoReply *out)
{
    const char *p = list;
    if (out)
        out->class_names_count = 0;
    int n = 0;
    while (*p) {
        size_t len = strcspn(p, ",");
        size_t lead = strspn(p, " "), end = len;
        while (end > lead && p[end - 1] == ' ')
            end--;
        if (end == lead || end - lead >= sizeof out->class_names[0])
            return -1 - n;
        if (out && n < (int)(sizeof out->class_names / sizeof out->class_names[0])) {
            snprintf(out->class_names[n], sizeof out->class_names[n], "%.*s", (int)(end - lead),
                     p + lead);
            out->class_names_count = (pb_size_t)(n + 1);
        }
        n++;
        p += len + (p[len] == ',');
    }
    return n;
}

static int check_class_names(const coord_t *c, ei_err_t *err)
{
    int n = coord__class_names(c->conf.class_names, NULL), classes = nn_model_classes(c->model);
    if (n < 0)
        return ei_err_set(err, EI_E_RANGE, "[coordinator] class_names: name %d is empty or "
                          "longer than 31 characters", -n);
    if (n && n != classes)
        return ei_err_set(err, EI_E_RANGE, "[coordinator] class_names: %d names, the model "
                          "%s has %d classes", n, c->conf.model, classes);
    return 0;
}

static int make_parts(coord_t *c, ei_err_t *err)
{
    c->model = nn_model_load(c->conf.model, 1, err);
    if (!c->model)
        return err->code;
    nn_model_prepare_inference(c->model);
    c->n = nn_model_blocks(c->model);
    c->in_shape = nn_model_input_shape(c->model);
    if (nn_arch_check_served(c->conf.model, c->in_shape, err) < 0)
        return err->code;
    if (nn_model_classes(c->model) > WIRE_MAX_CLASSES)
        return ei_err_set(err, EI_E_RANGE, "%s: %d classes, the protocol carries %d",
                          c->conf.model, nn_model_classes(c->model), WIRE_MAX_CLASSES);
    if (check_class_names(c, err) < 0)
        return err->code;
    scores_prior(&c->scores, c->n, nn_model_classes(c->model));
    profile_et_t et;
    int has_et, has_cs;
    if (load_profile(c, &et, &has_et, &has_cs, err) < 0)
        return err->code;
    c->scores_computed = has_cs;
    c->prof = liveprof_new(c->model, &c->conf, &c->scores, has_et ? &et.times : NULL, err);
    c->reqs = reqs_new(c->conf.max_pending, COORD_KEEP_ANSWERS, coord__on_answer, c);
    c->stats = stats_new(c->n, 0);
    c->resend = resend_new(c->conf.max_pending);
    if (!c->prof)
        return err->code;
    if (!c->reqs || !c->stats || !c->resend)
        return ei_err_set(err, EI_E_NOMEM, "out of memory");
    if (coord__journal_open(c, err) < 0)
        return err->code;
    cluster_init(&c->cluster, &c->conf.tiers, c->n,
                 (uint64_t)c->conf.heartbeat_timeout_ms * 1000);
    members_init(&c->members, FLEET_MAX_NODES, (uint64_t)c->conf.heartbeat_timeout_ms * 1000);
    fleet_init(&c->fleet, c->conf.tiers.tier, c->conf.tiers.n,
               (uint64_t)c->conf.heartbeat_timeout_ms * 1000,
               (uint64_t)c->conf.heartbeat_timeout_ms * 1000 * COORD_FORGET_TIMEOUTS);
    c->owners = owners_new(COORD_KEEP_ANSWERS);
    if (!c->owners)
        return ei_err_set(err, EI_E_NOMEM, "out of memory");
    return 0;
}

/* No ZMQ_ROUTER_HANDOVER: a connection that claims a routing id already in use is turned
 * away by ZeroMQ, so no peer can take over (and then abandon) a live node's connection.
 * A restarted node comes back on a new connection and proves who it is (wire/members.h). */
static int make_sockets(coord_t *c, ei_err_t *err)
{
    c->sec = sec_new(c->zctx, "einet-coord", c->conf.key, c->conf.trust, err);
    if (!c->sec)
        return err->code;
    xport_opts_t co = {.type = ZMQ_ROUTER, .linger_ms = COORD_CLIENT_LINGER_MS, .sec = c->sec};
    /* Deep queues to and from the nodes: tasks, results and hand-backs are bounded by the
     * requests held (max_pending), and a burst must not be refused as if a node were gone. */
    xport_opts_t no = {.type = ZMQ_ROUTER, .linger_ms = -1, .sec = c->sec,
                       .sndhwm = COORD_NODES_HWM, .rcvhwm = COORD_NODES_HWM};
    c->clients = xport_new(c->loop, c->zctx, &co, err);
    if (!c->clients)
        return err->code;
    c->nodes = xport_new(c->loop, c->zctx, &no, err);
    if (!c->nodes)
        return err->code;
    return 0;
}

static void free_parts(coord_t *c)
{
    for (coord_out_t *o = c->out_head, *next; o; o = next) {
        next = o->next;
        free(o);
    }
    c->out_head = NULL;
    c->out_tail = &c->out_head;
    for (int i = 0; i < c->n_held; i++)
        free(c->held[i].input);
    free(c->held);
    c->held = NULL;
    c->n_held = 0;
    coord__tasks_free(c);
    free(c->dirty);
    c->dirty = NULL;
    c->n_dirty = c->cap_dirty = 0;
    journal_close(&c->journal);
    xport_destroy(&c->clients);
    xport_destroy(&c->nodes);
    sec_destroy(&c->sec);
    owners_destroy(&c->owners);
    liveprof_destroy(&c->prof);
    scores_release(&c->scores);
    reqs_destroy(&c->reqs);
    resend_destroy(&c->resend);
    stats_destroy(&c->stats);
    nn_model_destroy(&c->model);
}

coord_t *coord_new(const conf_coord_t *conf, uv_loop_t *loop, void *zctx, ei_err_t *err)
{
    coord_t *c = calloc(1, sizeof *c);
    if (!c) {
        ei_err_set(err, EI_E_NOMEM, "out of memory");
        return NULL;
    }
    c->conf = *conf;
    c->loop = loop;
    c->zctx = zctx;
    c->start_us = coord__now_us();
    c->trace = getenv(COORD_TRACE_ENV) != NULL;
    coord__metrics_init(c);
    c->out_tail = &c->out_head;
    c->expiry_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (c->expiry_fd < 0)
        ei_err_set(err, EI_E_IO, "timerfd_create: out of file descriptors");
    if (c->expiry_fd < 0 || make_parts(c, err) < 0 || make_sockets(c, err) < 0 ||
        uv_poll_init(loop, &c->expiry_poll, c->expiry_fd) != 0) {
        if (c->expiry_fd >= 0)
            close(c->expiry_fd);
        free_parts(c);
        free(c);
        return NULL;
    }
    c->expiry_poll.data = c;
    uv_poll_start(&c->expiry_poll, UV_READABLE, on_expiry);
    uv_timer_init(loop, &c->tick_timer);
    uv_timer_init(loop, &c->profile_timer);
    uv_prepare_init(loop, &c->flush_prep);
    uv_timer_init(loop, &c->trim_timer);
    uv_timer_init(loop, &c->ckpt_timer);
    uv_timer_init(loop, &c->flush_timer);
    uv_check_init(loop, &c->task_check);
    c->task_check.data = c;
    c->tick_timer.data = c->profile_timer.data = c;
    c->flush_prep.data = c->trim_timer.data = c->ckpt_timer.data = c->flush_timer.data = c;
    c->handles_open = 8;
    if (!c->scores_computed)
        load_scores(c);
    return c;
}

int coord_start(coord_t *c, ei_err_t *err)
{
    if (coord__restore(c, err) < 0)
        return err->code;
    coord__durable_start(c);
    coord__tasks_start(c);
    if (xport_bind(c->clients, c->conf.clients, err) < 0 ||
        xport_bind(c->nodes, c->conf.nodes, err) < 0 ||
        xport_start(c->clients, coord__on_clients, c, err) < 0 ||
        xport_start(c->nodes, coord__on_nodes, c, err) < 0 ||
        coord__metrics_start(c, err) < 0)
        return err->code;
    uint64_t tick = (uint64_t)c->conf.heartbeat_timeout_ms / 10;
    tick = tick < 5 ? 5 : tick > 50 ? 50 : tick;
    uv_timer_start(&c->tick_timer, on_tick, tick, tick);
    uv_timer_start(&c->profile_timer, on_profile_timer, (uint64_t)c->conf.profile_interval_ms,
                   (uint64_t)c->conf.profile_interval_ms);
    ei_log(EI_LOG_INFO,
            "%d blocks; clients on %s, nodes on %s; first plan %s (H %.2f ms; "
            "exit scores: %s%s)",
            c->n, xport_endpoint(c->clients), xport_endpoint(c->nodes), plan_text(c),
            liveprof_horizon_ms(c->prof), c->scores.source,
            c->scores.pred ? ", with a CS-Predictor" : "");
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    coord_t *c = h->data;
    c->handles_open--;
}

void coord_shutdown(coord_t *c)
{
    if (c->closing)
        return;
    int n = reqs_answer_all(c->reqs, einet_Status_STATUS_SHUTDOWN,
                            "the coordinator is shutting down", coord__now_us());
    c->closing = 1;
    coord__count_dropped(c);
    ei_log(EI_LOG_INFO,
            "stopping: answered %d held requests; %llu malformed messages refused "
            "from clients, %llu from nodes; %llu late results",
            n, (unsigned long long)stats_bad_count(c->stats, STATS_SOCK_CLIENTS),
            (unsigned long long)stats_bad_count(c->stats, STATS_SOCK_NODES),
            (unsigned long long)reqs_late(c->reqs));
    coord__durable_close(c, on_closed); /* commits and sends the answers just made */
    xport_stats_t xs = xport_stats(c->clients);
    ei_log(EI_LOG_INFO, "clients socket: %llu sent, %llu refused",
            (unsigned long long)xs.sent, (unsigned long long)xs.send_failed);
    coord__metrics_stop(c);
    ei_log(EI_LOG_INFO,
            "%llu requests accepted, %llu answers undelivered (kept for 'einet "
            "result'), %llu journal failures, %llu task batches (%llu tasks), %llu tasks "
            "sent again after their device was lost",
            (unsigned long long)c->accepted, (unsigned long long)c->undelivered,
            (unsigned long long)c->journal_errors, (unsigned long long)c->task_batches,
            (unsigned long long)c->tasks_batched, (unsigned long long)c->resent);
    uv_close((uv_handle_t *)&c->tick_timer, on_closed);
    uv_close((uv_handle_t *)&c->expiry_poll, on_closed);
    uv_close((uv_handle_t *)&c->profile_timer, on_closed);
    uv_close((uv_handle_t *)&c->task_check, on_closed);
    xport_destroy(&c->clients);
    xport_destroy(&c->nodes);
}

void coord_destroy(coord_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free_parts(*self_p);
    if ((*self_p)->expiry_fd >= 0)
        close((*self_p)->expiry_fd);
    free(*self_p);
    *self_p = NULL;
}
