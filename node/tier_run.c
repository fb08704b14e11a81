/* The compute side of a node: a FIFO of jobs (one per request on this tier) and the block
 * loop. One block runs per loop iteration (an idle handle), so heartbeats and incoming
 * messages are handled between blocks; a block blocks the loop for its compute time only
 * (0.1-2 ms for the default model). The slow-down factor s emulates a weaker machine: after
 * a block that took t, the node waits (s - 1) t on a timer before it goes on (sub-ms
 * remainders carried to the next wait), so the block's results leave at s t and the node
 * takes no other work meanwhile, as the slower machine would not. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node/node_internal.h"

/* Weight of a new sample in a block's time. */
#define TIMING_ALPHA 0.1

void node__job_free(job_t **job_p)
{
    if (!job_p || !*job_p)
        return;
    xport_msg_destroy(&(*job_p)->msg);
    free(*job_p);
    *job_p = NULL;
}

static int inflight(const node_t *nd)
{
    return nd->queued + (nd->cur ? 1 : 0);
}

void node__job_add(node_t *nd, job_t *job)
{
    if (nd->draining || nd->closed) {
        node__hand_back(nd, job->request_id, "draining");
        node__job_free(&job);
        return;
    }
    if (inflight(nd) >= nd->conf.max_inflight) {
        node__hand_back(nd, job->request_id, "full");
        node__job_free(&job);
        return;
    }
    job->next = NULL;
    if (nd->tail)
        nd->tail->next = job;
    else
        nd->head = job;
    nd->tail = job;
    nd->queued++;
    if (!nd->waiting)
        uv_idle_start(&nd->work, node__work);
}

static job_t *pop(node_t *nd)
{
    job_t *j = nd->head;
    if (!j)
        return NULL;
    nd->head = j->next;
    if (!nd->head)
        nd->tail = NULL;
    nd->queued--;
    j->next = NULL;
    return j;
}

static uint64_t elapsed_us(const job_t *j, uint64_t now_us)
{
    return j->elapsed0_us + (now_us > j->recv_us ? now_us - j->recv_us : 0);
}

int node__is_cancelled(const node_t *nd, uint64_t request_id)
{
    for (int i = 0; i < NODE_CANCEL_RING; i++)
        if (nd->cancelled[i] == request_id)
            return 1;
    return 0;
}

void node__cancel(node_t *nd, uint64_t request_id)
{
    nd->cancelled[nd->cancel_at] = request_id;
    nd->cancel_at = (nd->cancel_at + 1) % NODE_CANCEL_RING;
    job_t **pp = &nd->head, *prev = NULL;
    while (*pp) {
        job_t *j = *pp;
        if (j->request_id != request_id) {
            prev = j;
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        if (nd->tail == j)
            nd->tail = prev;
        nd->queued--;
        nd->counts.cancelled++;
        node__job_free(&j);
    }
}

/* A job not worth finishing: answered already, or past its deadline (the coordinator
 * answers it on its own timer). */
static int job_dead(node_t *nd, const job_t *j, uint64_t now_us)
{
    if (node__is_cancelled(nd, j->request_id)) {
        nd->counts.cancelled++;
        return 1;
    }
    if (j->has_deadline && elapsed_us(j, now_us) > j->deadline_us) {
        nd->counts.dropped_deadline++;
        return 1;
    }
    return 0;
}

static void finish_job(node_t *nd)
{
    node__job_free(&nd->cur);
    if (nd->head)
        uv_idle_start(&nd->work, node__work);
    else
        node__maybe_close(nd);
}

static void note_time(double *ewma, double ms)
{
    *ewma = *ewma > 0 ? (1 - TIMING_ALPHA) * *ewma + TIMING_ALPHA * ms : ms;
}

/* ---- exits ---- */

static void replan(node_t *nd, job_t *j, int k, double t0_ms)
{
    if (!nd->planner || k >= nd->n || nd->n > PLANNER_MAX_EXITS)
        return;
    double scores[SCORES_MAX_EXITS];
    ei_err_t err;
    scores_for(&nd->scores, j->seen, j->nseen, k, scores);
    if (replan_after(nd->planner, &nd->search, scores, j->plan, k, t0_ms, j->arrive, j->nseen,
                     &err) < 0)
        ei_log(EI_LOG_INFO, "replanning request %llu: %s",
                (unsigned long long)j->request_id, err.msg);
}

static void send_exit(node_t *nd, job_t *j, int k, uint64_t now_us)
{
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_exit_result_tag);
    einet_ExitResult *r = &env.body.exit_result;
    int K = nd->classes, best = 0;
    for (int c = 1; c < K; c++)
        best = nd->probs[c] > nd->probs[best] ? c : best;
    uint64_t el = elapsed_us(j, now_us);
    r->request_id = j->request_id;
    r->exit = (uint32_t)k;
    r->tier = nd->conf.tier;
    r->class_id = (uint32_t)best;
    r->confidence = nd->probs[best];
    r->elapsed_us = el;
    r->sent_at_us = node__wall_us();
    r->probs_count = (pb_size_t)K;
    memcpy(r->probs, nd->probs, sizeof(float) * (size_t)K);
    r->last = k == nd->n;
    if (node__send_coord(nd, &env) == 0)
        nd->counts.exits_sent++;
    if (j->nseen >= NODE_MAX_BLOCKS)
        return; /* cannot happen with a checked map: at most one entry per block */
    scores_seen_t *s = &j->seen[j->nseen];
    s->exit = k;
    s->confidence = r->confidence;
    s->class_id = best;
    s->nprobs = K;
    memcpy(s->probs, nd->probs, sizeof(float) * (size_t)K);
    j->arrive[j->nseen].exit = k;
    j->arrive[j->nseen].arrive_ms = (double)el / 1000.0 + nd->result_ms[k - 1];
    j->nseen++;
    replan(nd, j, k, (double)el / 1000.0);
}

/* The class-specific early exit fired after block k: a final result, class k of the EE with
 * confidence P(k) (no softmax vector: the EE has two outputs, k and not k). */
static void send_early_exit(node_t *nd, const job_t *j, int k, uint64_t now_us)
{
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_exit_result_tag);
    einet_ExitResult *r = &env.body.exit_result;
    r->request_id = j->request_id;
    r->exit = (uint32_t)k;
    r->tier = nd->conf.tier;
    r->class_id = (uint32_t)ee_target(nd->ee);
    r->confidence = j->ee_pk < 0 ? 0 : j->ee_pk > 1 ? 1 : j->ee_pk;
    r->elapsed_us = elapsed_us(j, now_us);
    r->sent_at_us = node__wall_us();
    r->early_exit = true;
    if (node__send_coord(nd, &env) == 0)
        nd->counts.exits_sent++;
}

/* ---- the tier boundary ---- */

static void fill_map(node_t *nd, const job_t *j, int k, uint64_t now_us, einet_Envelope *env)
{
    wire_env_init(env, einet_Envelope_feature_map_tag);
    einet_FeatureMap *f = &env->body.feature_map;
    f->request_id = j->request_id;
    f->block = (uint32_t)k;
    f->plan_count = (pb_size_t)nd->n;
    for (int i = 0; i < nd->n; i++)
        f->plan[i] = j->plan[i] != 0;
    f->elapsed_us = elapsed_us(j, now_us);
    nn_shape_t s = nn_model_feature_shape(nd->model, k - 1);
    const uint32_t shape[4] = {1, (uint32_t)s.c, (uint32_t)s.h, (uint32_t)s.w};
    wire_meta_set(&f->tensor, &f->has_tensor, shape, 4);
    f->seen_count = (pb_size_t)j->nseen;
    for (int i = 0; i < j->nseen; i++) {
        einet_ExitSeen *e = &f->seen[i];
        e->exit = (uint32_t)j->seen[i].exit;
        e->confidence = j->seen[i].confidence;
        e->class_id = (uint32_t)j->seen[i].class_id;
        e->probs_count = (pb_size_t)j->seen[i].nprobs;
        memcpy(e->probs, j->seen[i].probs, sizeof(float) * (size_t)j->seen[i].nprobs);
    }
    f->has_deadline_us = j->has_deadline;
    f->deadline_us = j->deadline_us;
    f->sent_at_us = node__wall_us();
}

static void forward(node_t *nd, job_t *j, int k)
{
    char why[64];
    if (!nd->next || !nd->link.up) {
        snprintf(why, sizeof why, "%s link down", node__link_name(nd));
        node__hand_back(nd, j->request_id, why);
        return;
    }
    einet_Envelope env; /* large (the seen exits): one per forward, on the stack */
    fill_map(nd, j, k, node__now_us(), &env);
    size_t numel = nn_tensor_numel(j->cur);
    if (node__send_next(nd, &env, j->cur->data, numel, j->request_id) < 0) {
        snprintf(why, sizeof why, "%s send refused", node__link_name(nd));
        node__hand_back(nd, j->request_id, why);
        return;
    }
    nd->counts.maps_sent++;
    node__heartbeat_next(nd, numel * sizeof(float));
}

/* ---- the block loop ---- */

/* Block k's results are out (after the slow-down wait): send the exit, move on. */
static void finish_block(node_t *nd)
{
    job_t *j = nd->cur;
    uint64_t now = node__now_us();
    int k = j->k;
    if (job_dead(nd, j, now)) {
        finish_job(nd);
        return;
    }
    if (j->ee_fired) { /* final: the request is answered, nothing more to run */
        send_early_exit(nd, j, k, now);
        finish_job(nd);
        return;
    }
    if (j->branch_ran)
        send_exit(nd, j, k, now);
    j->k++;
    if (j->k <= nd->conf.last_block) {
        uv_idle_start(&nd->work, node__work);
        return;
    }
    if (k < nd->n)
        forward(nd, j, k);
    finish_job(nd);
}

static void slow_down(node_t *nd, uint64_t took_ns)
{
    nd->slow_debt_ms += (nd->conf.slowdown - 1.0) * (double)took_ns / 1e6;
    uint64_t wait = (uint64_t)nd->slow_debt_ms;
    if (wait == 0) {
        finish_block(nd);
        return;
    }
    nd->slow_debt_ms -= (double)wait;
    nd->waiting = 1;
    uv_idle_stop(&nd->work);
    uv_timer_start(&nd->slow_timer, node__slow_done, wait, 0);
}

void node__slow_done(uv_timer_t *t)
{
    node_t *nd = t->data;
    nd->waiting = 0;
    if (nd->cur)
        finish_block(nd);
}

/* The view of a job's input: the image (block 1) or the received map of block start-1. */
static nn_tensor_t input_view(const node_t *nd, const job_t *j)
{
    nn_shape_t s = j->start == 1 ? nd->in_shape : nn_model_feature_shape(nd->model, j->start - 2);
    return nn_tensor_view((float *)j->input, 1, s.c, s.h, s.w);
}

static void run_block(node_t *nd, job_t *j)
{
    ei_err_t err;
    int k = j->k;
    nn_tensor_t in = input_view(nd, j);
    const nn_tensor_t *x = j->cur ? j->cur : &in;
    uint64_t t0 = uv_hrtime();
    const nn_tensor_t *y = nn_model_conv(nd->model, k - 1, x, &err);
    uint64_t t1 = uv_hrtime();
    /* The final exit always runs: a request is complete only with its final answer. */
    int branch = y && (j->plan[k - 1] || k == nd->n);
    if (branch && nn_model_branch(nd->model, k - 1, y, nd->probs, &err) < 0)
        y = NULL;
    uint64_t t2 = uv_hrtime();
    if (!y) {
        ei_log(EI_LOG_INFO, "request %llu block %d: %s",
                (unsigned long long)j->request_id, k, err.msg);
        node__hand_back(nd, j->request_id, "compute failed");
        finish_job(nd);
        return;
    }
    note_time(&nd->conv_ms[k - 1], nd->conf.slowdown * (double)(t1 - t0) / 1e6);
    nd->conv_n[k - 1]++;
    if (branch)
        note_time(&nd->branch_ms[k - 1], nd->conf.slowdown * (double)(t2 - t1) / 1e6);
    j->cur = y;
    j->taps[k - 1] = y;
    j->branch_ran = branch;
    if (nd->ee && k == ee_layer(nd->ee)) {
        int fired = ee_check(nd->ee, j->taps, &j->ee_pk, &err);
        if (fired < 0)
            ei_log(EI_LOG_INFO, "early exit: %s", err.msg);
        j->ee_fired = fired > 0;
        t2 = uv_hrtime(); /* the check is on the critical path: part of the block's time */
    }
    if (nd->conf.slowdown > 1.0)
        slow_down(nd, t2 - t0);
    else
        finish_block(nd);
}

void node__work(uv_idle_t *h)
{
    node_t *nd = h->data;
    uv_idle_stop(h);
    if (nd->waiting)
        return;
    if (!nd->cur) {
        nd->cur = pop(nd);
        if (!nd->cur) {
            node__maybe_close(nd);
            return;
        }
    }
    if (job_dead(nd, nd->cur, node__now_us())) {
        finish_job(nd);
        return;
    }
    run_block(nd, nd->cur);
}

void node__hand_back_queue(node_t *nd)
{
    job_t *j;
    while ((j = pop(nd)) != NULL) {
        node__hand_back(nd, j->request_id, "draining");
        node__job_free(&j);
    }
}

int node__warmup(node_t *nd, ei_err_t *err)
{
    int first = nd->conf.first_block;
    nn_shape_t s = first == 1 ? nd->in_shape : nn_model_feature_shape(nd->model, first - 2);
    nn_tensor_t *x0 = nn_tensor_new(1, s.c, s.h, s.w);
    if (!x0)
        return ei_err_set(err, EI_E_NOMEM, "out of memory");
    for (int rep = 0; rep < NODE_WARMUP_RUNS; rep++) {
        const nn_tensor_t *x = x0;
        for (int k = first; k <= nd->conf.last_block; k++) {
            uint64_t t0 = uv_hrtime();
            x = nn_model_conv(nd->model, k - 1, x, err);
            uint64_t t1 = uv_hrtime();
            if (!x || nn_model_branch(nd->model, k - 1, x, nd->probs, err) < 0) {
                nn_tensor_destroy(&x0);
                return ei_err_prefix(err, "block %d: ", k);
            }
            uint64_t t2 = uv_hrtime();
            /* The last run counts: the first ones are cold. */
            nd->conv_ms[k - 1] = nd->conf.slowdown * (double)(t1 - t0) / 1e6;
            nd->branch_ms[k - 1] = nd->conf.slowdown * (double)(t2 - t1) / 1e6;
        }
    }
    nn_tensor_destroy(&x0);
    return 0;
}
