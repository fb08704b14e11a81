/* The compute side of a node: a FIFO of jobs (one per request on this tier) and the block
 * loop. Dynamic batching: when the loop is free it takes up to batch_max queued jobs as one
 * batch (waiting up to batch_wait_ms, counted from the oldest job's arrival, for more to
 * come when fewer are queued), and the batch runs through this tier's blocks together: one
 * conv part per block for all of them, the branch for the subset whose plan bit is set (or
 * at the final block), each job then sending its own exit, checking its own deadline and
 * cancellation, and leaving at the tier's end on its own. A job answered or dropped rides
 * out the batch without sending anything more. One block runs per loop iteration (an idle
 * handle), so heartbeats and incoming messages are handled between blocks; a block blocks
 * the loop for its compute time only. The slow-down factor s emulates a weaker machine:
 * after a block that took t, the node waits (s - 1) t to the microsecond (node/slow.h)
 * before it goes on, so the block's results leave at s t and the node
 * takes no other work meanwhile, as the slower machine would not. The block times the node
 * learns and reports (the planner's ET-profile) are those of the batches as they run: the
 * time each request of a batch waits for the block. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "node/node_internal.h"
#include "planner/stop.h"

/* Weight of a new sample in a block's time. */
#define TIMING_ALPHA 0.1

void node__job_free(job_t **job_p)
{
    if (!job_p || !*job_p)
        return;
    if ((*job_p)->owner) /* it leaves this node: its senders forget their copies */
        node__job_leaves((*job_p)->owner, *job_p);
    xport_msg_destroy(&(*job_p)->msg);
    free((*job_p)->own);
    free(*job_p);
    *job_p = NULL;
}

int node__inflight(const node_t *nd)
{
    return nd->queued + nd->bn;
}

int node__batch_alloc(node_t *nd, ei_err_t *err)
{
    size_t in = 0, feat = 0, B = (size_t)nd->conf.batch_max;
    for (int k = 1; k <= nd->n; k++) {
        size_t f = nn_shape_numel(nn_model_feature_shape(nd->model, k - 1));
        size_t i = k == 1 ? nn_shape_numel(nd->in_shape)
                          : nn_shape_numel(nn_model_feature_shape(nd->model, k - 2));
        feat = f > feat ? f : feat;
        in = i > in ? i : in;
    }
    nd->bin = calloc(B * in, sizeof(float));
    nd->bsub = calloc(B * feat, sizeof(float));
    nd->bprobs = calloc(B * (size_t)nd->classes, sizeof(float));
    if (!nd->bin || !nd->bsub || !nd->bprobs)
        return ei_err_set(err, EI_E_NOMEM, "out of memory for batches of %d",
                          nd->conf.batch_max);
    return 0;
}

void node__batch_free(node_t *nd)
{
    free(nd->bin);
    free(nd->bsub);
    free(nd->bprobs);
    nd->bin = nd->bsub = nd->bprobs = NULL;
}

void node__job_add(node_t *nd, job_t *job)
{
    if (nd->draining || nd->closed) {
        node__hand_back(nd, job->request_id, "draining");
        node__job_free(&job);
        return;
    }
    if (node__inflight(nd) >= nd->conf.max_inflight) {
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

/* The batch has left the blocks: its jobs are freed, the loop takes the next. */
static void finish_batch(node_t *nd)
{
    int coalesce = nd->bn > 1; /* the batch's `taken` go as one message per sender */
    if (coalesce)
        node__coalesce_begin(nd);
    for (int i = 0; i < nd->bn; i++)
        node__job_free(&nd->batch[i]);
    if (coalesce)
        node__coalesce_end(nd);
    nd->bn = 0;
    nd->bcur = NULL;
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

void node__job_policy(job_t *j, int policy, const einet_Interrupt *interrupt)
{
    j->policy = policy;
    j->has_dist = interrupt != NULL;
    if (interrupt) {
        j->dist.kind = interrupt->normal ? PLANNER_DIST_NORMAL : PLANNER_DIST_UNIFORM;
        j->dist.mu = interrupt->mu;
        j->dist.sigma = interrupt->sigma;
    }
}

/* Only planned requests replan, each under its own interruption distribution when it names
 * one (the planner's is switched for the search and back: a few arithmetic operations). */
static void replan(node_t *nd, job_t *j, int k, double t0_ms)
{
    if (!nd->planner || k >= nd->n || nd->n > PLANNER_MAX_EXITS ||
        j->policy != einet_Policy_POLICY_PLANNED)
        return;
    double scores[SCORES_MAX_EXITS];
    ei_err_t err;
    static const planner_dist_t uniform = {PLANNER_DIST_UNIFORM, 0, 0};
    int rc = j->has_dist ? planner_set_dist(nd->planner, &j->dist, &err) : 0;
    scores_for(&nd->scores, j->seen, j->nseen, k, scores);
    if (rc == 0)
        rc = replan_after(nd->planner, &nd->search, scores, j->plan, k, t0_ms, j->arrive,
                          j->nseen, &err);
    if (rc < 0)
        ei_log(EI_LOG_INFO, "replanning request %llu: %s",
                (unsigned long long)j->request_id, err.msg);
    if (j->has_dist && planner_set_dist(nd->planner, &uniform, &err) < 0)
        ei_log(EI_LOG_INFO, "planner distribution: %s", err.msg);
}

/* The request's stop rule after exit k (its output in j->probs, recorded in j->seen):
 * 1 when it fires. einet's rule also plans the branches after k from the same scores
 * (planner/stop.h); the threshold rules run every branch (run_block). */
static int stop_rule(node_t *nd, job_t *j, int k)
{
    if (!j->stop_kind || k >= nd->n)
        return 0;
    if (j->stop_kind != STOP_KIND_EINET)
        return stop_fires(j->stop_kind, j->stop_threshold, j->probs, nd->classes, 0);
    double scores[SCORES_MAX_EXITS];
    scores_for(&nd->scores, j->seen, j->nseen, k, scores);
    /* Without a predictor the scores are per-exit accuracies: this exit's own confidence
     * stands for its probability of being right. */
    if (!nd->scores.pred)
        scores[k - 1] = stop_confidence(j->probs, nd->classes);
    if (stop_fires(STOP_KIND_EINET, j->stop_threshold, j->probs, nd->classes, scores[k - 1]))
        return 1;
    for (int i = k; i < nd->n - 1; i++)
        j->plan[i] = (uint8_t)stop_einet_branch(j->stop_threshold, scores[i]);
    j->plan[nd->n - 1] = 1;
    return 0;
}

/* Sends exit k's result and feeds it to the request's stop rule or replanning. 1 when the
 * stop rule fired: the result went out final (`stopped`) and nothing more runs. */
static int send_exit(node_t *nd, job_t *j, int k, uint64_t now_us)
{
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_exit_result_tag);
    einet_ExitResult *r = &env.body.exit_result;
    int K = nd->classes, best = 0;
    const float *probs = j->probs;
    for (int c = 1; c < K; c++)
        best = probs[c] > probs[best] ? c : best;
    uint64_t el = elapsed_us(j, now_us);
    if (j->nseen < NODE_MAX_BLOCKS) { /* always, with a checked map: one entry per block */
        scores_seen_t *s = &j->seen[j->nseen];
        s->exit = k;
        s->confidence = probs[best];
        s->class_id = best;
        s->nprobs = K;
        memcpy(s->probs, probs, sizeof(float) * (size_t)K);
        j->arrive[j->nseen].exit = k;
        /* On the coordinator's clock, as the planner's profile and the deadlines are. */
        j->arrive[j->nseen].arrive_ms = nd->dispatch_ms + (double)el / 1000.0 +
                                        nd->result_ms[k - 1];
        j->nseen++;
    }
    int stopped = stop_rule(nd, j, k);
    r->request_id = j->request_id;
    r->exit = (uint32_t)k;
    r->tier = nd->conf.tier;
    r->class_id = (uint32_t)best;
    r->confidence = probs[best];
    r->elapsed_us = el;
    r->sent_at_us = node__wall_us();
    r->probs_count = (pb_size_t)K;
    memcpy(r->probs, probs, sizeof(float) * (size_t)K);
    r->last = k == nd->n;
    r->stopped = stopped;
    r->mflop = (float)j->mflop;
    if (node__send_coord(nd, &env) == 0)
        nd->counts.exits_sent++;
    nd->counts.early += stopped;
    if (!j->stop_kind)
        replan(nd, j, k, nd->dispatch_ms + (double)el / 1000.0);
    return stopped;
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
    f->has_stop = j->stop_kind != 0;
    f->stop.kind = (einet_StopKind)j->stop_kind;
    f->stop.threshold = (float)j->stop_threshold;
    f->mflop = (float)j->mflop;
    f->policy = j->policy;
    f->has_interrupt = j->has_dist;
    f->interrupt.normal = j->dist.kind == PLANNER_DIST_NORMAL;
    f->interrupt.mu = (float)j->dist.mu;
    f->interrupt.sigma = (float)j->dist.sigma;
    f->sent_at_us = node__wall_us();
}

static void forward(node_t *nd, job_t *j, int k)
{
    char why[64];
    if (!node__next_up(nd)) {
        snprintf(why, sizeof why, "%s link down", node__link_name(nd));
        node__hand_back(nd, j->request_id, why);
        return;
    }
    einet_Envelope env; /* large (the seen exits): one per forward, on the stack */
    uint64_t now = node__now_us();
    fill_map(nd, j, k, now, &env);
    /* The hand-over starts at the last exit: what came between counts as the link's. */
    nd->boundary_sum_ms += now * 1000 > j->mark_ns ? (double)(now * 1000 - j->mark_ns) / 1e6 : 0;
    nd->boundary_n++;
    size_t numel = nn_tensor_numel(j->cur);
    /* to a next-tier replica, kept until that tier takes it over (node_send.c) */
    if (node__send_map(nd, &env, j->cur->data, numel, j->request_id) < 0) {
        snprintf(why, sizeof why, "%s send refused", node__link_name(nd));
        node__hand_back(nd, j->request_id, why);
        return;
    }
    nd->counts.maps_sent++;
}

/* ---- the block loop ---- */

/* Block k's results of one job are out: its exit, its early exit, or its map to the next
 * tier; marks it done when nothing more of it is to run here. */
static void finish_job_block(node_t *nd, job_t *j, int k, uint64_t now)
{
    if (j->done)
        return;
    j->mark_ns = now * 1000; /* the exit's e_k: the next block counts from here */
    if (job_dead(nd, j, now)) {
        j->done = 1;
        return;
    }
    if (j->ee_fired) { /* final: the request is answered, nothing more to run */
        send_early_exit(nd, j, k, now);
        j->done = 1;
        return;
    }
    if (j->branch_ran && send_exit(nd, j, k, now)) {
        j->done = 1; /* a stop rule fired: answered here, nothing forwarded */
        return;
    }
    j->k++;
    if (j->k <= nd->conf.last_block)
        return;
    if (k < nd->n)
        forward(nd, j, k);
    j->done = 1;
}

/* Block k's results are out (after the slow-down wait): every job sends its own, and the
 * batch goes on to the next block while any of it is left to run. */
static void finish_block(node_t *nd)
{
    uint64_t now = node__now_us();
    int k = nd->batch[0]->k, left = 0, coalesce = nd->bn > 1;
    /* the batch's exits leave as one message to the coordinator, its maps as one per
     * next-tier replica (the receivers unpack them into the same per-request work) */
    if (coalesce)
        node__coalesce_begin(nd);
    for (int i = 0; i < nd->bn; i++) {
        job_t *j = nd->batch[i];
        if (j->done) { /* riding out the batch: keep its block count in step */
            j->k++;
            continue;
        }
        finish_job_block(nd, j, k, now);
        if (j->done && j->k == k) /* stopped before moving on: keep it in step */
            j->k++;
        left += !j->done;
    }
    if (coalesce)
        node__coalesce_end(nd);
    if (left && k + 1 <= nd->conf.last_block)
        uv_idle_start(&nd->work, node__work);
    else
        finish_batch(nd);
}

static uint64_t hrtime_clock(void *arg)
{
    (void)arg;
    return uv_hrtime();
}

/* uv_hrtime reads CLOCK_MONOTONIC: sleep to an absolute time on it (the process's timer
 * slack is set small at start-up, node.c). */
static void hrtime_sleep(uint64_t until_ns, void *arg)
{
    (void)arg;
    struct timespec ts = {(time_t)(until_ns / 1000000000u), (long)(until_ns % 1000000000u)};
    (void)clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

/* This thread's CPU time (ns): what a block cost, however long the machine's other
 * processes kept it off the CPU. */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void slow_down(node_t *nd, uint64_t took_ns, uint64_t end_ns)
{
    if (!slow_begin(&nd->slow, took_ns, end_ns)) {
        finish_block(nd);
        return;
    }
    uint64_t ms = slow_timer_ms(&nd->slow);
    if (ms == 0) {
        slow_finish(&nd->slow, hrtime_clock, hrtime_sleep, NULL);
        finish_block(nd);
        return;
    }
    nd->waiting = 1;
    uv_idle_stop(&nd->work);
    uv_update_time(nd->loop);
    uv_timer_start(&nd->slow_timer, node__slow_done, ms, 0);
}

void node__slow_done(uv_timer_t *t)
{
    node_t *nd = t->data;
    nd->waiting = 0;
    slow_finish(&nd->slow, hrtime_clock, hrtime_sleep, NULL);
    if (nd->bn)
        finish_block(nd);
}

/* The batch's input to block k: the jobs' inputs (images, or the received maps of block
 * k-1) gathered into bin, or the one job's in place; later blocks take the batch's map. */
static const nn_tensor_t *batch_input(node_t *nd, int k, nn_tensor_t *view)
{
    if (nd->bcur)
        return nd->bcur;
    nn_shape_t s = k == 1 ? nd->in_shape : nn_model_feature_shape(nd->model, k - 2);
    size_t per = nn_shape_numel(s);
    if (nd->bn == 1) {
        *view = nn_tensor_view((float *)nd->batch[0]->input, 1, s.c, s.h, s.w);
        return view;
    }
    for (int i = 0; i < nd->bn; i++)
        memcpy(nd->bin + (size_t)i * per, nd->batch[i]->input, per * sizeof(float));
    *view = nn_tensor_view(nd->bin, nd->bn, s.c, s.h, s.w);
    return view;
}

/* Branch k for the jobs whose plan has it (every job at the final block, and at every block
 * the jobs with a threshold stop rule): on the batch's map itself when that is all of them,
 * else on their rows gathered into bsub; each such job gets its probabilities. Returns
 * whether any ran, or a negative code. */
static int batch_branch(node_t *nd, int k, const nn_tensor_t *y, ei_err_t *err)
{
    int rows[NODE_MAX_BATCH], m = 0, K = nd->classes;
    for (int i = 0; i < nd->bn; i++) {
        job_t *j = nd->batch[i];
        /* A threshold stop rule looks at every exit. */
        int every = j->stop_kind && j->stop_kind != STOP_KIND_EINET;
        j->branch_ran = !j->done && (j->plan[k - 1] || k == nd->n || every);
        if (j->branch_ran)
            rows[m++] = i;
    }
    if (!m)
        return 0;
    const nn_tensor_t *x = y;
    nn_tensor_t sub;
    if (m < nd->bn) {
        size_t per = nn_tensor_sample_numel(y);
        for (int r = 0; r < m; r++)
            memcpy(nd->bsub + (size_t)r * per, y->data + (size_t)rows[r] * per,
                   per * sizeof(float));
        sub = nn_tensor_view(nd->bsub, m, y->c, y->h, y->w);
        x = &sub;
    }
    int rc = nn_model_branch(nd->model, k - 1, x, nd->bprobs, err);
    if (rc < 0)
        return rc;
    for (int r = 0; r < m; r++)
        memcpy(nd->batch[rows[r]]->probs, nd->bprobs + (size_t)r * K, sizeof(float) * (size_t)K);
    return 1;
}

static void run_block(node_t *nd)
{
    ei_err_t err;
    int k = nd->batch[0]->k;
    nn_tensor_t view;
    const nn_tensor_t *x = batch_input(nd, k, &view);
    uint64_t t0 = uv_hrtime(), c0 = thread_cpu_ns();
    const nn_tensor_t *y = nn_model_conv(nd->model, k - 1, x, &err);
    uint64_t t1 = uv_hrtime();
    /* The final exit always runs: a request is complete only with its final answer. */
    int branch = y ? batch_branch(nd, k, y, &err) : 0;
    uint64_t t2 = uv_hrtime();
    if (!y || branch < 0) {
        ei_log(EI_LOG_INFO, "block %d of a batch of %d: %s", k, nd->bn, err.msg);
        for (int i = 0; i < nd->bn; i++)
            if (!nd->batch[i]->done)
                node__hand_back(nd, nd->batch[i]->request_id, "compute failed");
        finish_batch(nd);
        return;
    }
    /* What the planner must see is the time between exits as it passes: conv part k counts
     * from the end of block k-1 here (its exit sent, the replan, the loop's turn) or the
     * job's arrival (the batch's first job), plus the slow-down of its compute; the branch
     * its slowed compute. */
    uint64_t mark = nd->batch[0]->mark_ns;
    double s = nd->conf.slowdown, lead = t0 > mark ? (double)(t0 - mark) / 1e6 : 0;
    double conv = lead + s * (double)(t1 - t0) / 1e6, br = s * (double)(t2 - t1) / 1e6;
    note_time(&nd->conv_ms[k - 1], conv);
    nd->conv_sum[k - 1] += conv;
    nd->conv_n[k - 1]++;
    if (branch) {
        note_time(&nd->branch_ms[k - 1], br);
        nd->branch_sum[k - 1] += br;
        nd->branch_n[k - 1]++;
    }
    nd->bcur = y;
    size_t per = nn_tensor_sample_numel(y);
    for (int i = 0; i < nd->bn; i++) {
        job_t *j = nd->batch[i];
        j->curv = nn_tensor_view(y->data + (size_t)i * per, 1, y->c, y->h, y->w);
        j->cur = &j->curv;
        j->tapv[k - 1] = j->curv;
        j->taps[k - 1] = &j->tapv[k - 1];
        if (!j->done)
            j->mflop += nd->conv_mflop[k - 1] + (j->branch_ran ? nd->branch_mflop[k - 1] : 0);
    }
    if (nd->ee && k == ee_layer(nd->ee)) {
        for (int i = 0; i < nd->bn; i++) {
            job_t *j = nd->batch[i];
            if (j->done)
                continue;
            int fired = ee_check(nd->ee, j->taps, &j->ee_pk, &err);
            if (fired < 0)
                ei_log(EI_LOG_INFO, "early exit: %s", err.msg);
            j->ee_fired = fired > 0;
        }
        t2 = uv_hrtime(); /* the check is on the critical path: part of the block's time */
    }
    /* The wait is (s - 1) x the block's cost: its CPU time when the node computes on this
     * thread alone (threads = 1), so time spent preempted by the machine's other processes
     * is not multiplied by s; with more threads (the engine's pool), the wall time. */
    uint64_t c2 = thread_cpu_ns();
    if (nd->conf.slowdown > 1.0)
        slow_down(nd, nd->conf.threads == 1 && c2 > c0 ? c2 - c0 : t2 - t0, t2);
    else
        finish_block(nd);
}

/* Takes the next batch from the queue: up to batch_max live jobs (the queue holds only
 * jobs that have not started, all at this tier's first block). Returns 0 when there is
 * none yet: the queue is empty, or the batch is waiting to fill (batch_timer). */
static int take_batch(node_t *nd)
{
    uint64_t now = node__now_us();
    while (nd->head && job_dead(nd, nd->head, now)) {
        job_t *j = pop(nd);
        node__job_free(&j);
    }
    if (!nd->head) {
        node__maybe_close(nd);
        return 0;
    }
    int B = nd->conf.batch_max;
    uint64_t waited = now - nd->head->recv_us, wait = (uint64_t)(nd->conf.batch_wait_ms * 1000);
    if (nd->queued < B && waited < wait && !nd->draining) {
        if (!nd->batch_timing) {
            nd->batch_timing = 1;
            uv_timer_start(&nd->batch_timer, node__batch_wait_done, (wait - waited + 999) / 1000,
                           0);
        }
        return 0;
    }
    if (nd->batch_timing) {
        uv_timer_stop(&nd->batch_timer);
        nd->batch_timing = 0;
    }
    while (nd->bn < B && nd->head) {
        job_t *j = pop(nd);
        if (job_dead(nd, j, now)) {
            node__job_free(&j);
            continue;
        }
        nd->batch[nd->bn++] = j;
    }
    nd->bcur = NULL;
    if (nd->bn) {
        nd->counts.batches++;
        if ((uint64_t)nd->bn > nd->counts.batch_largest)
            nd->counts.batch_largest = (uint64_t)nd->bn;
    }
    return nd->bn > 0;
}

void node__batch_wait_done(uv_timer_t *t)
{
    node_t *nd = t->data;
    nd->batch_timing = 0;
    if (!nd->waiting && !nd->bn && nd->head)
        uv_idle_start(&nd->work, node__work);
}

void node__work(uv_idle_t *h)
{
    node_t *nd = h->data;
    uv_idle_stop(h);
    if (nd->waiting)
        return;
    if (!nd->bn && !take_batch(nd))
        return;
    int alive = 0;
    uint64_t now = node__now_us();
    for (int i = 0; i < nd->bn; i++) {
        job_t *j = nd->batch[i];
        if (!j->done && job_dead(nd, j, now))
            j->done = 1;
        alive += !j->done;
    }
    if (!alive) {
        finish_batch(nd);
        return;
    }
    run_block(nd);
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
    if (nd->conf.batch_max == 1)
        return 0;
    /* Once at the largest batch, untimed: every buffer it uses is touched before a request
     * needs it. */
    nn_tensor_t xb = nn_tensor_view(nd->bin, nd->conf.batch_max, s.c, s.h, s.w);
    const nn_tensor_t *x = &xb;
    for (int k = first; k <= nd->conf.last_block; k++) {
        x = nn_model_conv(nd->model, k - 1, x, err);
        if (!x || nn_model_branch(nd->model, k - 1, x, nd->bprobs, err) < 0)
            return ei_err_prefix(err, "block %d: ", k);
    }
    return 0;
}
