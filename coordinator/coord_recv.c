/* What the coordinator does with each message: from clients (requests, result and stats
 * queries, faults) and from nodes (heartbeats, exit results, profile reports, link reports,
 * hand-backs). A message that does not decode, or is not one its socket takes, is refused
 * with an Error, counted per socket, and the coordinator goes on serving. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "coordinator/coord_internal.h"
#include "runtime/fault.h"

/* Refusals are logged one by one up to this many per socket, then every 1000th. */
#define COORD_LOG_BAD 10

static const char *const refusal_names[COORD_REFUSALS] = {
    "malformed", "unknown-node", "duplicate", "forbidden", "not-owner", "not-its-exit",
    "too-many-frames", "name-not-its-key",
};

static const char *sock_name(int sock)
{
    return sock == STATS_SOCK_CLIENTS ? "clients" : "nodes";
}

static void count_refusal(coord_t *c, int sock, int code, coord_refusal_t why, const char *msg)
{
    stats_bad(c->stats, sock);
    coord__metrics_bad(c, sock, code);
    c->refused[sock][why]++;
    uint64_t n = ++c->logged_bad[sock];
    if (n <= COORD_LOG_BAD || n % 1000 == 0)
        ei_log(EI_LOG_WARN, "refused on %s (%llu so far): %s: %s", sock_name(sock),
               (unsigned long long)n, refusal_names[why], msg);
}

/* Counts and logs a refusal and answers it with an Error carrying msg. */
static void refuse(coord_t *c, xport_t *x, int sock, const wire_in_t *in, int code,
                   coord_refusal_t why, const char *msg)
{
    ei_err_t err;
    count_refusal(c, sock, code, why, msg);
    if (in->env.which_body == einet_Envelope_error_tag)
        return; /* never answer an error with an error */
    if (wire_refuse(x, in, code, msg, &err) < 0)
        return; /* the sender is gone */
}

/* A refusal to a connection that is no node: it learns nothing (no shapes, no names). */
static void refuse_stranger(coord_t *c, const wire_in_t *in, coord_refusal_t why,
                            const char *logged)
{
    ei_err_t err;
    count_refusal(c, STATS_SOCK_NODES, EI_E_DENIED, why, logged);
    if (in->env.which_body != einet_Envelope_error_tag &&
        wire_refuse(c->nodes, in, EI_E_DENIED, "refused", &err) < 0)
        return; /* the sender is gone */
}

void coord__count_dropped(coord_t *c)
{
    xport_t *x[STATS_SOCKS] = {c->clients, c->nodes};
    for (int s = 0; s < STATS_SOCKS; s++) {
        uint64_t d = x[s] ? xport_stats(x[s]).dropped : c->dropped_seen[s];
        for (; c->dropped_seen[s] < d; c->dropped_seen[s]++)
            count_refusal(c, s, EI_E_FORMAT, COORD_REF_FRAMES, "a message of more than 4 frames");
        /* A lost wakeup is a bug somewhere below us: said, not only survived. */
        uint64_t r = x[s] ? xport_stats(x[s]).rescued : c->rescued_seen[s];
        if (r > c->rescued_seen[s])
            ei_log(EI_LOG_WARN,
                   "%s socket: %llu time(s) a message waited with no wakeup due (a lost "
                   "ZMQ_FD edge); the %d ms recheck delivered it",
                   sock_name(s), (unsigned long long)(r - c->rescued_seen[s]), XPORT_RECHECK_MS);
        c->rescued_seen[s] = r;
    }
}

void coord__fill_refusals(const coord_t *c, einet_StatsReply *s)
{
    s->refusals_count = 0;
    for (int k = 0; k < STATS_SOCKS; k++)
        for (int r = 0; r < COORD_REFUSALS; r++) {
            if (!c->refused[k][r] || s->refusals_count >= 32)
                continue;
            einet_Refusal *o = &s->refusals[s->refusals_count++];
            snprintf(o->socket, sizeof o->socket, "%s", sock_name(k));
            snprintf(o->reason, sizeof o->reason, "%s", refusal_names[r]);
            o->count = c->refused[k][r];
        }
}

/* Query replies wait for the batch like answers do, so a reply never tells of a state
 * that is not on disk yet, and replies and answers reach a client in the order made. */
static void reply(coord_t *c, const wire_in_t *in, einet_Envelope *env)
{
    env->reply_to = in->env.seq;
    coord__queue_client(c, &in->peer, env, 0);
}

/* ---- requests ---- */

/* An answer for a request that never got a place in the table (the table is full). */
static void answer_direct(coord_t *c, const reqs_client_t *cl, int status, const char *reason)
{
    einet_Answer a;
    memset(&a, 0, sizeof a);
    a.client_id = cl->client_id;
    a.status = status;
    snprintf(a.reason, sizeof a.reason, "%s", reason);
    a.has_label = cl->has_label;
    a.label = cl->label;
    reqs_done_t d = {&a, cl, 0};
    coord__on_answer(&d, c);
}

static int input_ok(const coord_t *c, const wire_in_t *in, char *why, size_t cap)
{
    char detail[112];
    nn_shape_t s = c->in_shape;
    if (!wire_meta_is_sample(&in->env.body.request.input, s.c, s.h, s.w, detail, sizeof detail)) {
        snprintf(why, cap, "request.input: %s", detail);
        return 0;
    }
    /* refused here, by name, rather than failing on the device as if it were overloaded */
    for (size_t i = 0; i < in->tensor_numel; i++)
        if (!isfinite(in->tensor[i])) {
            snprintf(why, cap, "request.input: non-finite value (%g) at index %zu",
                     (double)in->tensor[i], i);
            return 0;
        }
    return 1;
}

uint64_t coord__expiry_us(const coord_t *c, uint64_t deadline_us, uint64_t now, int *status,
                          char *reason, size_t cap)
{
    uint64_t at = now + (uint64_t)COORD_LOST_MS * 1000;
    *status = einet_Status_STATUS_LINK;
    snprintf(reason, cap, "no final result for %d ms: a message was lost", COORD_LOST_MS);
    if (deadline_us && now + deadline_us <= at) {
        at = now + deadline_us;
        *status = einet_Status_STATUS_DEADLINE;
        if (deadline_us % 1000)
            snprintf(reason, cap, "deadline of %llu us passed", (unsigned long long)deadline_us);
        else
            snprintf(reason, cap, "deadline of %llu ms passed",
                     (unsigned long long)(deadline_us / 1000));
    }
    int broken = cluster_broken(&c->cluster);
    uint64_t grace = now + (uint64_t)c->conf.heartbeat_timeout_ms * 1000;
    if (broken < c->cluster.n_tiers && grace < at) {
        at = grace;
        *status = einet_Status_STATUS_LINK;
        snprintf(reason, cap, "the path is broken before %s",
                 cluster_tier_name(c->cluster.node[broken].tier));
    }
    return at;
}

uint64_t coord__expiry(const coord_t *c, uint32_t deadline_ms, uint64_t now, int *status,
                       char *reason, size_t cap)
{
    return coord__expiry_us(c, (uint64_t)deadline_ms * 1000, now, status, reason, cap);
}

/* The request's initial plan under its policy: the cluster's (for its own interruption
 * distribution when it names one), its own fixed plan, or every branch. 0, or a negative
 * code with why filled. */
static int request_plan(coord_t *c, const einet_Request *r, uint8_t *plan, char *why, size_t cap)
{
    ei_err_t err;
    switch (r->policy) {
    case einet_Policy_POLICY_FIXED:
        if ((int)r->plan_count != c->n) {
            snprintf(why, cap, "request.plan: %u bits, the model has %d blocks",
                     (unsigned)r->plan_count, c->n);
            return EI_E_SHAPE;
        }
        for (int k = 0; k < c->n; k++)
            plan[k] = r->plan[k];
        return 0;
    case einet_Policy_POLICY_CONFIDENCE:
        memset(plan, 1, (size_t)c->n);
        return 0;
    default:
        break;
    }
    if (!r->has_interrupt) {
        memcpy(plan, liveprof_plan(c->prof), (size_t)c->n);
        return 0;
    }
    planner_dist_t d = {r->interrupt.normal ? PLANNER_DIST_NORMAL : PLANNER_DIST_UNIFORM,
                        r->interrupt.mu, r->interrupt.sigma};
    if (liveprof_plan_for(c->prof, &d, plan, &err) < 0) {
        snprintf(why, cap, "request.interrupt: %.100s", err.msg);
        return err.code;
    }
    return 0;
}

/* A live request's task: its deadline in us, its policy's plan and fields. A fixed policy
 * runs its plan and nothing else; the confidence policy is the confidence stop rule
 * (answered `early` where it fires). */
static void send_request_task(coord_t *c, uint64_t id, const wire_in_t *in, uint64_t deadline_us,
                              const uint8_t *plan)
{
    einet_Envelope env;
    const einet_Request *r = &in->env.body.request;
    wire_env_init(&env, einet_Envelope_task_tag);
    einet_Task *t = &env.body.task;
    t->request_id = id;
    t->input = r->input;
    t->has_input = true;
    t->plan_count = (pb_size_t)c->n;
    for (int k = 0; k < c->n; k++)
        t->plan[k] = plan[k] != 0;
    t->has_deadline_us = deadline_us > 0;
    t->deadline_us = deadline_us;
    t->profile_version = liveprof_version(c->prof);
    t->stop = r->has_stop ? r->stop
                          : (einet_StopRule){(einet_StopKind)c->conf.stop.kind,
                                             c->conf.stop.threshold};
    if (r->policy == einet_Policy_POLICY_FIXED)
        t->stop.kind = einet_StopKind_STOP_NONE;
    if (r->policy == einet_Policy_POLICY_CONFIDENCE)
        t->stop = (einet_StopRule){einet_StopKind_STOP_CONFIDENCE, r->threshold};
    t->has_stop = t->stop.kind != einet_StopKind_STOP_NONE;
    for (int k = 0; t->has_stop && k < c->n; k++)
        t->plan[k] = true;
    t->policy = r->policy;
    t->threshold = r->threshold;
    t->has_interrupt = r->has_interrupt;
    t->interrupt = r->interrupt;
    coord__dispatch_task(c, id, &env, in->tensor, in->tensor_numel, r->device);
}

void coord__send_task(coord_t *c, uint64_t id, const einet_TensorMeta *meta, const float *input,
                      size_t numel, uint32_t deadline_ms, const einet_StopRule *stop,
                      const char *device)
{
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_task_tag);
    einet_Task *t = &env.body.task;
    t->request_id = id;
    t->input = *meta;
    t->has_input = true;
    const uint8_t *plan = liveprof_plan(c->prof);
    t->plan_count = (pb_size_t)c->n;
    for (int k = 0; k < c->n; k++)
        t->plan[k] = plan[k] != 0;
    t->has_deadline_us = deadline_ms > 0;
    t->deadline_us = (uint64_t)deadline_ms * 1000;
    t->profile_version = liveprof_version(c->prof);
    /* The request's stop rule, else the cluster's. A rule decides which branches run (a
     * threshold rule every one, einet's from its predictor after exit 1), so the plan
     * starts with every bit set. */
    t->stop = stop ? *stop
                   : (einet_StopRule){(einet_StopKind)c->conf.stop.kind, c->conf.stop.threshold};
    t->has_stop = t->stop.kind != einet_StopKind_STOP_NONE;
    for (int k = 0; t->has_stop && k < c->n; k++)
        t->plan[k] = true;
    coord__dispatch_task(c, id, &env, input, numel, device);
}

/* The acknowledgement: the request is recorded under id (in this turn's batch, so it
 * leaves after the commit, before any answer to it). */
static void acknowledge(coord_t *c, const reqs_client_t *cl, uint64_t id)
{
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_accepted_tag);
    env.reply_to = cl->seq;
    env.body.accepted.request_id = id;
    env.body.accepted.client_id = cl->client_id;
    coord__queue_client(c, &cl->peer, &env, 0);
    c->accepted++;
}

/* Records request id; on failure it is answered `rejected` (the client is told why, and
 * no id it was given is lost). 0 or -1. */
static int record(coord_t *c, uint64_t id, const wire_in_t *in, uint32_t deadline_ms)
{
    const einet_Request *r = &in->env.body.request;
    ei_err_t err;
    if (!c->journal)
        return 0;
    if (journal_accept(c->journal, id, r->client_id, r->has_label, r->label, coord__wall_us(),
                       deadline_ms, in->tensor, in->tensor_numel, in->who.key, &err) == 0)
        return 0;
    char why[128];
    snprintf(why, sizeof why, "the journal cannot record it: %.90s", err.msg);
    ei_log(EI_LOG_ERROR, "request %llu: %s", (unsigned long long)id, err.msg);
    c->journal_errors++;
    reqs_answer(c->reqs, id, einet_Status_STATUS_REJECTED, why, coord__now_us());
    return -1;
}

static void on_request(coord_t *c, const wire_in_t *in)
{
    const einet_Request *r = &in->env.body.request;
    reqs_client_t cl = {in->peer, in->env.seq, r->client_id, r->has_label, r->label};
    char why[128];
    uint8_t plan[CLUSTER_MAX_BLOCKS];
    stats_request(c->stats);
    coord__metrics_request(c);
    if (!input_ok(c, in, why, sizeof why) || request_plan(c, r, plan, why, sizeof why) < 0) {
        answer_direct(c, &cl, einet_Status_STATUS_REJECTED, why);
        return;
    }
    uint64_t now = coord__now_us(), id;
    uint64_t deadline_us = r->has_deadline_us  ? r->deadline_us
                           : r->has_deadline_ms ? (uint64_t)r->deadline_ms * 1000
                                                : (uint64_t)c->conf.deadline_ms * 1000;
    /* The journal and a held request keep whole ms (rounded up). */
    uint32_t deadline_ms = (uint32_t)((deadline_us + 999) / 1000);
    int status = einet_Status_STATUS_LINK;
    uint64_t at = c->holding ? 0 : coord__expiry_us(c, deadline_us, now, &status, why, sizeof why);
    if (reqs_add(c->reqs, &cl, now, at, status, why, &id) < 0) {
        snprintf(why, sizeof why, "busy: %d requests held (max_pending)", reqs_pending(c->reqs));
        answer_direct(c, &cl, einet_Status_STATUS_REJECTED, why);
        return;
    }
    owners_set(c->owners, id, in->who.key);
    acknowledge(c, &cl, id);
    if (record(c, id, in, deadline_ms) < 0)
        return;
    if (c->holding) {
        /* Starting: the cluster's state is not known yet (after a restart, the nodes are
         * there but have not reported): held until it is, not answered `link`. */
        if (coord__hold(c, id, in->tensor, in->tensor_numel, deadline_ms,
                        deadline_ms ? now + (uint64_t)deadline_ms * 1000 : 0,
                        r->has_stop ? &r->stop : NULL) < 0)
            reqs_answer(c->reqs, id, einet_Status_STATUS_REJECTED, "busy: out of memory", now);
        return;
    }
    if (cluster_broken(&c->cluster) == 0) {
        snprintf(why, sizeof why, "%s is down", cluster_tier_name(c->cluster.node[0].tier));
        reqs_answer(c->reqs, id, einet_Status_STATUS_LINK, why, now);
        return;
    }
    send_request_task(c, id, in, deadline_us, plan);
    coord__arm_expiry(c);
}

static void on_fault_cmd(coord_t *c, const wire_in_t *in)
{
    const einet_Fault *f = &in->env.body.fault;
    einet_Envelope env;
    ei_err_t err;
    int tier = 0;
    wire_env_init(&env, einet_Envelope_ack_tag);
    einet_Ack *a = &env.body.ack;
    int tiers[CONF_MAX_TIERS];
    for (int i = 0; i < c->cluster.n_tiers; i++)
        tiers[i] = c->cluster.node[i].tier;
    int pos = -1;
    if (fault_target(f, tiers, c->cluster.n_tiers, &tier, &err) < 0) {
        snprintf(a->detail, sizeof a->detail, "%.120s", err.msg);
    } else if (c->cluster.node[pos = cluster_pos(&c->cluster, tier)].state == CLUSTER_DOWN) {
        snprintf(a->detail, sizeof a->detail, "%s is not connected", cluster_tier_name(tier));
    } else {
        einet_Envelope cmd;
        wire_env_init(&cmd, einet_Envelope_fault_tag);
        cmd.body.fault = *f;
        /* a link fault is the tier's link: every replica of the tier that is up gets it; a
         * kill takes one node */
        int sent = 0, failed = 0;
        for (int i = 0; i < FLEET_MAX_NODES && !(f->kill && sent); i++) {
            const fleet_node_t *n = &c->fleet.node[i];
            if (!n->used || n->pos != pos || n->state != FLEET_UP)
                continue;
            if (coord__send_node(c, i, &cmd, NULL, 0) == 0)
                sent++;
            else
                failed++;
        }
        a->ok = sent > 0 && !failed;
        snprintf(a->detail, sizeof a->detail, "%s %s (%d node%s)",
                 a->ok ? "relayed to" : "could not reach", cluster_tier_name(tier),
                 a->ok ? sent : failed ? failed : 0, (a->ok ? sent : failed) == 1 ? "" : "s");
    }
    if (a->ok) {
        char what[64];
        if (f->kill)
            snprintf(what, sizeof what, "injected: kill %s", cluster_tier_name(f->kill));
        else
            snprintf(what, sizeof what, "injected: %s%s down %u delay %u loss %g",
                     cluster_link_name(f->link), f->clear ? " clear," : "", (unsigned)f->down_ms,
                     (unsigned)f->delay_ms, (double)f->loss_pct);
        stats_fault(c->stats, coord__uptime_us(c), f->kill, f->link, what);
        ei_log(EI_LOG_INFO, "%s", what);
    }
    reply(c, in, &env);
}

static void on_stats_query(coord_t *c, const wire_in_t *in)
{
    einet_Envelope env;
    if (in->env.body.stats_query.reset && !sec_may(c->sec, &in->who, SEC_DO_RESET)) {
        refuse(c, c->clients, STATS_SOCK_CLIENTS, in, EI_E_DENIED, COORD_REF_FORBIDDEN,
               "stats_query.reset: only an operator key may reset the statistics");
        return;
    }
    wire_env_init(&env, einet_Envelope_stats_reply_tag);
    einet_StatsReply *s = &env.body.stats_reply;
    coord__count_dropped(c);
    stats_fill(c->stats, s);
    coord__fill_refusals(c, s);
    cluster_fill(&c->cluster, coord__now_us(), s);
    if (in->env.body.stats_query.with_profile) {
        s->has_profile = true;
        liveprof_fill(c->prof, &s->profile);
    }
    fleet_fill(&c->fleet, coord__now_us(), s); /* every node, by name */
    s->uptime_us = coord__uptime_us(c);
    s->undelivered = c->undelivered;
    s->accepted = c->accepted;
    s->next_id = c->journal ? journal_next_id(c->journal) : 0;
    reply(c, in, &env);
    if (in->env.body.stats_query.reset)
        stats_reset(c->stats);
}

/* The tier whose node runs block k, as the heartbeats say; TIER_NONE when none does yet. */
static int tier_of_exit(const coord_t *c, uint32_t k)
{
    for (int i = 0; i < c->cluster.n_tiers; i++) {
        const cluster_node_t *nd = &c->cluster.node[i];
        if (nd->seen && nd->first_block <= k && k <= nd->last_block)
            return nd->tier;
    }
    return einet_Tier_TIER_NONE;
}

static void on_model_info(coord_t *c, const wire_in_t *in)
{
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_model_info_reply_tag);
    einet_ModelInfoReply *m = &env.body.model_info_reply;
    m->protocol_version = WIRE_VERSION;
    snprintf(m->model, sizeof m->model, "%s", nn_model_name(c->model));
    m->input_shape_count = 3;
    m->input_shape[0] = (uint32_t)c->in_shape.c;
    m->input_shape[1] = (uint32_t)c->in_shape.h;
    m->input_shape[2] = (uint32_t)c->in_shape.w;
    m->classes = (uint32_t)nn_model_classes(c->model);
    coord__class_names(c->conf.class_names, m);
    m->exits_count = (pb_size_t)c->n;
    for (int k = 1; k <= c->n; k++) {
        m->exits[k - 1].exit = (uint32_t)k;
        m->exits[k - 1].tier = tier_of_exit(c, (uint32_t)k);
    }
    reply(c, in, &env);
}

static void on_result_query(coord_t *c, const wire_in_t *in)
{
    einet_Envelope env;
    uint64_t id = in->env.body.result_query.request_id;
    /* Owners from before a restart are in the journal. */
    if (!sec_may(c->sec, &in->who, SEC_DO_READ_ANY) && !owners_is(c->owners, id, in->who.key) &&
        !(c->journal && journal_owner_is(c->journal, id, in->who.key))) {
        char msg[128];
        snprintf(msg, sizeof msg, "result_query: request %llu is not one this key submitted",
                 (unsigned long long)id);
        refuse(c, c->clients, STATS_SOCK_CLIENTS, in, EI_E_DENIED, COORD_REF_NOT_OWNER, msg);
        return;
    }
    wire_env_init(&env, einet_Envelope_result_reply_tag);
    ei_err_t err;
    reqs_lookup(c->reqs, id, coord__now_us(), &env.body.result_reply);
    /* Answers come from the journal when there is one (older ones, those from before a
     * restart, and whether each was delivered); the reply leaves after this turn's commit,
     * like the answer it shows. Pending requests are read from memory. */
    if (!env.body.result_reply.pending && c->journal) {
        if (journal_lookup(c->journal, id, &env.body.result_reply, &err) < 0)
            ei_log(EI_LOG_ERROR, "journal: %s", err.msg);
    }
    reply(c, in, &env);
}

void coord__on_clients(xport_t *x, xport_msg_t **msg_p, void *arg)
{
    coord_t *c = arg;
    wire_in_t in;
    ei_err_t err;
    int rc = wire_recv(*msg_p, &in, &err);
    if (rc < 0) {
        refuse(c, x, STATS_SOCK_CLIENTS, &in, rc, COORD_REF_MALFORMED, err.msg);
        return;
    }
    if (sec_enabled(c->sec) && in.who.role != SEC_ROLE_CLIENT &&
        in.who.role != SEC_ROLE_OPERATOR) {
        char msg[96];
        snprintf(msg, sizeof msg, "%s: a %s key cannot use the clients endpoint",
                 wire_body_name(in.env.which_body), sec_role_name(in.who.role));
        refuse(c, x, STATS_SOCK_CLIENTS, &in, EI_E_DENIED, COORD_REF_FORBIDDEN, msg);
        return;
    }
    if (in.env.which_body == einet_Envelope_fault_tag &&
        !sec_may(c->sec, &in.who, SEC_DO_FAULT)) {
        refuse(c, x, STATS_SOCK_CLIENTS, &in, EI_E_DENIED, COORD_REF_FORBIDDEN,
               "fault: only an operator key may inject faults or kill nodes");
        return;
    }
    switch (in.env.which_body) {
    case einet_Envelope_request_tag:
        on_request(c, &in);
        break;
    case einet_Envelope_result_query_tag:
        on_result_query(c, &in);
        break;
    case einet_Envelope_stats_query_tag:
        on_stats_query(c, &in);
        break;
    case einet_Envelope_fault_tag:
        on_fault_cmd(c, &in);
        break;
    case einet_Envelope_model_info_query_tag:
        on_model_info(c, &in);
        break;
    default: {
        char msg[96];
        snprintf(msg, sizeof msg, "%s: not a message the clients socket takes",
                 wire_body_name(in.env.which_body));
        refuse(c, x, STATS_SOCK_CLIENTS, &in, EI_E_FORMAT, COORD_REF_MALFORMED, msg);
        break;
    }
    }
}

/* ---- nodes ---- */

static void put_shape(uint32_t *dst, pb_size_t *count, nn_shape_t s)
{
    dst[0] = (uint32_t)s.c, dst[1] = (uint32_t)s.h, dst[2] = (uint32_t)s.w;
    *count = 3;
}

/* The model's shapes at the node's first and last block: the node checks its own model
 * against them (node.c), so tiers whose models do not chain refuse to run. */
static void reply_blocks(const coord_t *c, const einet_Heartbeat *h, einet_HeartbeatReply *r)
{
    r->blocks = (uint32_t)c->n;
    if (h->first_block < 1 || h->first_block > h->last_block || (int)h->last_block > c->n)
        return;
    int first = (int)h->first_block, last = (int)h->last_block;
    put_shape(r->block_in, &r->block_in_count,
              first == 1 ? c->in_shape : nn_model_feature_shape(c->model, first - 2));
    put_shape(r->block_out, &r->block_out_count, nn_model_feature_shape(c->model, last - 1));
}

static void on_heartbeat(coord_t *c, int ni, const wire_in_t *in)
{
    const einet_Heartbeat *h = &in->env.body.heartbeat;
    uint64_t now = coord__now_us();
    fleet_node_t *fn = &c->fleet.node[ni];
    int pos = fn->pos;
    int was_seen = c->cluster.node[pos].seen;
    if (fleet_heartbeat(&c->fleet, fn->name, fn->tier, h->in_flight, h->draining, now) != ni)
        return; /* cannot be: the node is known by that name and tier */
    fn->first_block = h->first_block;
    fn->last_block = h->last_block;
    fn->batch_max = h->batch_max;
    /* the tier (cluster.h) drains only when no other replica of it is up */
    einet_Heartbeat th = *h;
    th.draining = h->draining && fleet_up(&c->fleet, pos) - (fn->state == FLEET_UP) == 0;
    cluster_heartbeat(&c->cluster, pos, &th, now);
    einet_Envelope env;
    ei_err_t err;
    wire_env_init(&env, einet_Envelope_heartbeat_reply_tag);
    env.reply_to = in->env.seq;
    env.seq = ++c->seq;
    env.body.heartbeat_reply.seq = h->seq;
    env.body.heartbeat_reply.echo_sent_at_us = h->sent_at_us;
    env.body.heartbeat_reply.profile_version = liveprof_version(c->prof);
    reply_blocks(c, h, &env.body.heartbeat_reply);
    if (wire_send(c->nodes, &in->peer, &env, NULL, &err) < 0)
        ei_log(EI_LOG_WARN, "heartbeat reply: %s", err.msg);
    if (h->profile_version != liveprof_version(c->prof) || !was_seen ||
        h->draining != (c->cluster.node[pos].state == CLUSTER_DRAINING))
        coord__tick(c); /* a node back, or draining: act now, not at the next tick */
    if (h->profile_version != liveprof_version(c->prof) && c->cluster.node[pos].state != CLUSTER_DOWN)
        coord__push_profile(c, pos);
}

static void on_exit_result(coord_t *c, int ni, const wire_in_t *in)
{
    int pos = c->fleet.node[ni].pos;
    const einet_ExitResult *r = &in->env.body.exit_result;
    const cluster_node_t *nd = &c->cluster.node[pos];
    char msg[112];
    msg[0] = 0;
    if ((int)r->exit > c->n || r->exit < nd->first_block || r->exit > nd->last_block)
        snprintf(msg, sizeof msg, "exit_result.exit: %u is not a block %s runs",
                 (unsigned)r->exit, cluster_tier_name(nd->tier));
    else if (r->last && (pos != c->cluster.n_tiers - 1 || (int)r->exit != c->n))
        snprintf(msg, sizeof msg, "exit_result.last: only the tier of block %d (the model's "
                 "last) ends a request", c->n);
    else if (r->early_exit && pos != 0)
        snprintf(msg, sizeof msg, "exit_result.early_exit: only the device answers early");
    if (msg[0]) {
        refuse(c, c->nodes, STATS_SOCK_NODES, in, EI_E_RANGE, COORD_REF_NOT_ITS_EXIT, msg);
        return;
    }
    uint64_t now = coord__now_us(), recv = 0;
    int known = reqs_received_us(c->reqs, r->request_id, &recv);
    if (known && now >= recv + r->elapsed_us)
        liveprof_note_offset(c->prof, pos, (int)r->exit,
                             (double)(now - recv - r->elapsed_us) / 1000.0);
    int what = reqs_exit(c->reqs, r->request_id, r, pos, now);
    if (pos > 0) /* taken over beyond the device: its task is not needed again */
        resend_drop(c->resend, r->request_id);
    if (what == REQS_NOTED)
        coord__journal_exit(c, r); /* the deepest result, should the coordinator restart */
    if (c->trace)
        ei_log(EI_LOG_INFO,
               "trace exit request=%llu exit=%u tier=%s node=%s class=%u "
               "confidence=%.9g elapsed_us=%llu arrived_us=%lld%s%s",
               (unsigned long long)r->request_id, (unsigned)r->exit,
               cluster_tier_name(r->tier), c->fleet.node[ni].name, (unsigned)r->class_id,
               (double)r->confidence,
               (unsigned long long)r->elapsed_us, known ? (long long)(now - recv) : -1LL,
               r->last ? " last" : "",
                what == REQS_LATE ? " late" : "");
}

/* A node moved a request's map from a dead next-tier replica to another (failover). */
static void on_moved(coord_t *c, int ni, const wire_in_t *in)
{
    const einet_Moved *m = &in->env.body.moved;
    uint64_t recv = 0;
    int known = reqs_received_us(c->reqs, m->request_id, &recv);
    c->moved++;
    if (c->trace)
        ei_log(EI_LOG_INFO,
               "trace moved request=%llu by=%s from=%s to=%s block=%u silent_ms=%u "
               "at_us=%lld wall_us=%llu%s",
               (unsigned long long)m->request_id, c->fleet.node[ni].name, m->from, m->to,
               (unsigned)m->block, (unsigned)m->silent_ms,
               known ? (long long)(coord__now_us() - recv) : -1LL,
               (unsigned long long)coord__wall_us(), known ? "" : " late");
}

/* A node handed a request back: answer it with what is known of why. */
static void on_hand_back(coord_t *c, int ni, const wire_in_t *in)
{
    int pos = c->fleet.node[ni].pos;
    const cluster_node_t *nd = &c->cluster.node[pos];
    const char *reason = in->env.body.cancel.reason;
    char why[128];
    int status = einet_Status_STATUS_LINK;
    if (nd->draining || !strcmp(reason, "draining")) {
        status = einet_Status_STATUS_SHUTDOWN;
        snprintf(why, sizeof why, "%s is shutting down", cluster_tier_name(nd->tier));
    } else if (pos + 1 < c->cluster.n_tiers &&
               (!nd->link_reported_up || c->fleet.node[ni].link_down ||
                strstr(reason, "send refused") || strstr(reason, "link down"))) {
        snprintf(why, sizeof why, "%s link down", cluster_link_name(pos + 1));
    } else if (reason[0] && strcmp(reason, "full") != 0) {
        /* the node could not serve it for its own reason: a bad task, a failed compute */
        status = einet_Status_STATUS_REJECTED;
        snprintf(why, sizeof why, "%s: %s", cluster_tier_name(nd->tier), reason);
    } else {
        /* A refused send reports the link down before the hand-back (same socket, in
         * order), so with the link up the node was full: overload. */
        status = einet_Status_STATUS_REJECTED;
        snprintf(why, sizeof why, "busy: %s holds max_inflight requests",
                 cluster_tier_name(nd->tier));
    }
    reqs_answer(c->reqs, in->env.body.cancel.request_id, status, why, coord__now_us());
}

static void on_link_report(coord_t *c, int ni, const wire_in_t *in)
{
    int pos = c->fleet.node[ni].pos;
    const einet_Fault *f = &in->env.body.fault;
    /* the node's own link decides where requests go (fleet_pick); the tier's link
     * (cluster.h) is up while any node of the tier has its link up */
    einet_Fault tf = *f;
    if ((int)f->link == pos + 1) {
        c->fleet.node[ni].link_down = !(f->clear && f->down_ms == 0);
        int any_up = 0;
        for (int i = 0; i < FLEET_MAX_NODES; i++) {
            const fleet_node_t *n = &c->fleet.node[i];
            any_up |= n->used && n->pos == pos && (n->state != FLEET_DOWN || i == ni) &&
                      !n->link_down;
        }
        tf.clear = any_up;
        tf.down_ms = any_up ? 0 : (f->down_ms ? f->down_ms : 1);
    }
    if (cluster_link_report(&c->cluster, pos, &tf) < 0) {
        refuse(c, c->nodes, STATS_SOCK_NODES, in, EI_E_RANGE, COORD_REF_MALFORMED,
               "fault.link: not the link leaving this node");
        return;
    }
    coord__tick(c);
}

/* 1 when the connection holding pos still takes messages (a send to it succeeds): a node
 * that died or reconnected has no connection there any more. The probe is an Ack, which a
 * node ignores. */
static int holder_alive(coord_t *c, int pos)
{
    einet_Envelope env;
    ei_err_t err;
    wire_env_init(&env, einet_Envelope_ack_tag);
    snprintf(env.body.ack.detail, sizeof env.body.ack.detail, "identity check");
    env.seq = ++c->seq;
    return wire_send(c->nodes, &c->members.slot[pos].peer, &env, NULL, &err) == 0;
}

/* A message from a connection that holds no place yet: the node introduces itself. Its
 * tier is what its key proves (keys: any message) or what its heartbeat says (keyless: the
 * configured name). A
 * claim on a node that a live connection holds is refused; one on a node whose connection
 * is gone or silent takes its place. The position, or -1 when refused. */
static int on_hello(coord_t *c, const wire_in_t *in, uint64_t now)
{
    int hello = in->env.which_body == einet_Envelope_heartbeat_tag;
    int claimed = hello ? (int)in->env.body.heartbeat.tier : in->who.tier;
    int pos = cluster_pos(&c->cluster, claimed);
    char msg[128];
    if (pos < 0 || (sec_enabled(c->sec) && (in->who.role != SEC_ROLE_NODE ||
                                            in->who.tier != claimed))) {
        snprintf(msg, sizeof msg, "%s claiming %s from %s", wire_body_name(in->env.which_body),
                 cluster_tier_name(claimed),
                 in->who.key[0] ? sec_role_name(in->who.role) : "an unknown connection");
        refuse_stranger(c, in, COORD_REF_UNKNOWN_NODE, msg);
        return -1;
    }
    /* the node's name: its heartbeat's, else its key's, else its tier's (one node of that
     * tier). With keys a node is the name its certificate carries (einet keygen writes it):
     * a key claiming any other name is refused, so one node's key cannot take another's
     * place in a fleet, even while that node is down. */
    const char *name = hello && in->env.body.heartbeat.name[0] ? in->env.body.heartbeat.name
                       : in->who.name[0]                       ? in->who.name
                                                               : cluster_tier_name(claimed);
    if (sec_enabled(c->sec) && strcmp(name, in->who.name) != 0) {
        snprintf(msg, sizeof msg, "%s claiming the name '%.31s' with the key of '%.31s'",
                 wire_body_name(in->env.which_body), name,
                 in->who.name[0] ? in->who.name : "(a key without a name)");
        refuse_stranger(c, in, COORD_REF_NAME, msg);
        return -1;
    }
    int ni = fleet_join(&c->fleet, name, claimed, now);
    if (ni < 0) {
        snprintf(msg, sizeof msg, "%s claiming %s as '%s': %s", wire_body_name(in->env.which_body),
                 cluster_tier_name(claimed), name,
                 ni == EI_E_RANGE ? "no room for another node" : "a node of another tier");
        refuse_stranger(c, in, COORD_REF_UNKNOWN_NODE, msg);
        return -1;
    }
    int alive = members_held_by_other(&c->members, ni, &in->peer) ? holder_alive(c, ni) : 1;
    int was_up = c->fleet.node[ni].state != FLEET_DOWN;
    switch (members_claim(&c->members, ni, &in->peer, in->who.key, now, alive)) {
    case MEMBERS_DUPLICATE:
        snprintf(msg, sizeof msg, "a second connection claims %s, which is connected and alive",
                 cluster_tier_name(claimed));
        refuse(c, c->nodes, STATS_SOCK_NODES, in, EI_E_DENIED, COORD_REF_DUPLICATE, msg);
        return -1;
    case MEMBERS_TAKEN:
        ei_log(EI_LOG_INFO, "%s is back on a new connection (the old one %s)",
               cluster_tier_name(claimed), alive ? "was silent" : "is gone");
        if (was_up) /* what it held went with the old connection */
            coord__fail_cut_off(c, ni, pos, "the node restarted", now);
        return ni;
    default:
        return ni;
    }
}

static int tier_of_body(const wire_in_t *in)
{
    switch (in->env.which_body) {
    case einet_Envelope_heartbeat_tag:
        return in->env.body.heartbeat.tier;
    case einet_Envelope_exit_result_tag:
        return in->env.body.exit_result.tier;
    case einet_Envelope_profile_report_tag:
        return in->env.body.profile_report.tier;
    default:
        return 0;
    }
}

static void dispatch_node(coord_t *c, int ni, const wire_in_t *in);

/* A node's batch (proto/messages.proto, Batch): each message handled as if it came alone,
 * in order; a bad one is refused on its own. */
static void on_node_batch(coord_t *c, int ni, const wire_in_t *in)
{
    wire_in_t item;
    wire_batch_it_t it = {0, 0};
    ei_err_t err;
    int rc;
    while ((rc = wire_batch_next(in, &it, &item, &err)) != 0) {
        if (rc < 0) {
            refuse(c, c->nodes, STATS_SOCK_NODES, &item, rc, COORD_REF_MALFORMED, err.msg);
            continue;
        }
        int tier = tier_of_body(&item);
        if (tier && tier != c->fleet.node[ni].tier) {
            refuse(c, c->nodes, STATS_SOCK_NODES, &item, EI_E_INVAL, COORD_REF_UNKNOWN_NODE,
                   "the tier in the message is not the sender's");
            continue;
        }
        dispatch_node(c, ni, &item);
    }
}

static void dispatch_node(coord_t *c, int ni, const wire_in_t *in)
{
    int pos = c->fleet.node[ni].pos;
    switch (in->env.which_body) {
    case einet_Envelope_heartbeat_tag:
        on_heartbeat(c, ni, in);
        break;
    case einet_Envelope_exit_result_tag:
        on_exit_result(c, ni, in);
        break;
    case einet_Envelope_profile_report_tag:
        cluster_profile(&c->cluster, pos, &in->env.body.profile_report);
        break;
    case einet_Envelope_fault_tag:
        on_link_report(c, ni, in);
        break;
    case einet_Envelope_cancel_tag:
        on_hand_back(c, ni, in);
        break;
    case einet_Envelope_moved_tag:
        on_moved(c, ni, in);
        break;
    case einet_Envelope_batch_tag:
        on_node_batch(c, ni, in);
        break;
    case einet_Envelope_error_tag:
        ei_log(EI_LOG_WARN, "%s refused a message: %s",
                cluster_tier_name(c->cluster.node[pos].tier), in->env.body.error.message);
        break;
    case einet_Envelope_ack_tag:
        break;
    default: {
        char msg[96];
        snprintf(msg, sizeof msg, "%s: not a message the nodes socket takes",
                 wire_body_name(in->env.which_body));
        refuse(c, c->nodes, STATS_SOCK_NODES, in, EI_E_FORMAT, COORD_REF_MALFORMED, msg);
        break;
    }
    }
}

void coord__on_nodes(xport_t *x, xport_msg_t **msg_p, void *arg)
{
    coord_t *c = arg;
    wire_in_t in;
    ei_err_t err;
    (void)x;
    int rc = wire_recv(*msg_p, &in, &err);
    int pos = members_find(&c->members, &in.peer);
    uint64_t now = coord__now_us();
    if (rc < 0) {
        if (pos < 0)
            refuse_stranger(c, &in, COORD_REF_MALFORMED, err.msg);
        else
            refuse(c, c->nodes, STATS_SOCK_NODES, &in, rc, COORD_REF_MALFORMED, err.msg);
        return;
    }
    /* A connection introduces itself with a heartbeat; with keys, its key already says
     * who it is, so any message of a node key does. */
    if (pos < 0 && (in.env.which_body == einet_Envelope_heartbeat_tag ||
                    (sec_enabled(c->sec) && in.who.role == SEC_ROLE_NODE)))
        pos = on_hello(c, &in, now);
    else if (pos < 0)
        refuse_stranger(c, &in, COORD_REF_UNKNOWN_NODE, "a message from a connection that is "
                        "no node (a node introduces itself with a heartbeat)");
    if (pos < 0)
        return;
    int tier = tier_of_body(&in);
    if (tier && tier != c->fleet.node[pos].tier) {
        refuse(c, c->nodes, STATS_SOCK_NODES, &in, EI_E_INVAL, COORD_REF_UNKNOWN_NODE,
               "the tier in the message is not the sender's");
        return;
    }
    members_heard(&c->members, pos, now);
    dispatch_node(c, pos, &in);
}
