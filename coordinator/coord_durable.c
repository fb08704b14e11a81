/* What makes einet-coord lose nothing: the journal's batches (one per turn of the event
 * loop, committed before any client hears of what they hold), the queue of client messages
 * that waits for that commit, answers that could not be delivered (kept and counted), and
 * the start-up, when requests recorded before a restart are continued or answered
 * `restarted` and new requests are held until the cluster is known. docs/protocol.md
 * states the guarantees. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coordinator/coord_internal.h"

/* Retention runs this often (a DELETE over the oldest ids, in the current batch). */
#define COORD_TRIM_MS 10000
/* Group commit: a batch is committed at most this long after the previous commit when a
 * client message waits for it (at once when more wait than COORD_COMMIT_BATCH), so a busy
 * coordinator commits ~1000 times a second, however many turns its loop takes. Writes
 * that no client waits for (exit results) are committed within COORD_COMMIT_IDLE_US. */
#define COORD_COMMIT_US 1000
#define COORD_COMMIT_BATCH 256
#define COORD_COMMIT_IDLE_US 200000
/* Deeper exit results of pending requests are written this often, and the journal's log
 * is copied into the database as often, off the loop thread. */
#define COORD_CHECKPOINT_MS 200
/* Journal failures are logged one by one up to this many, then every 1000th. */
#define COORD_LOG_JOURNAL 10

uint64_t coord__wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void journal_failed(coord_t *c, const ei_err_t *err)
{
    uint64_t n = ++c->journal_errors;
    if (n <= COORD_LOG_JOURNAL || n % 1000 == 0)
        ei_log(EI_LOG_ERROR, "journal (%llu failures so far): %s",
                (unsigned long long)n, err->msg);
}

int coord__journal_open(coord_t *c, ei_err_t *err)
{
    if (!c->conf.journal) {
        /* No record of the ids handed out before: start from the wall clock in us, so a
         * restarted coordinator hands out ids above its predecessor's unless it ran faster
         * than one request per microsecond on average (or the clock went back). */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        reqs_set_next_id(c->reqs, (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u);
        return 0;
    }
    char path[CONF_STR_MAX + 32];
    const char *run = getenv("EINET_RUN_DIR");
    if (c->conf.journal_path[0])
        snprintf(path, sizeof path, "%s", c->conf.journal_path);
    else if (run && run[0])
        snprintf(path, sizeof path, "%.*s/coordinator.db", CONF_STR_MAX, run);
    else
        snprintf(path, sizeof path, "coordinator.db");
    journal_opts_t o = {path, c->conf.journal_sync == CONF_SYNC_FULL, c->conf.journal_keep_input,
                        c->conf.journal_keep_rows,
                        (int64_t)c->conf.journal_keep_hours * 3600 * 1000000};
    c->journal = journal_open(&o, err);
    if (!c->journal)
        return err->code;
    reqs_set_next_id(c->reqs, journal_next_id(c->journal));
    ei_log(EI_LOG_INFO, "journal %s (synchronous=%s): next request id %llu", path,
            o.sync_full ? "FULL" : "NORMAL", (unsigned long long)journal_next_id(c->journal));
    return 0;
}

/* ---- client messages after the commit ---- */

void coord__queue_client(coord_t *c, const xport_peer_t *peer, einet_Envelope *env,
                         uint64_t answer_id)
{
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len;
    ei_err_t err;
    env->seq = ++c->seq;
    if (wire_encode(env, WIRE_NO_TENSOR, buf, sizeof buf, &len, &err) < 0) {
        ei_log(EI_LOG_ERROR, "%s not sent: %s", wire_body_name(env->which_body),
                err.msg);
        return;
    }
    coord_out_t *o = malloc(sizeof *o + len);
    if (!o) {
        ei_log(EI_LOG_ERROR, "out of memory queueing a %s",
                wire_body_name(env->which_body));
        return;
    }
    o->next = NULL;
    o->peer = *peer;
    o->answer_id = answer_id;
    o->len = len;
    memcpy(o->bytes, buf, len);
    *c->out_tail = o;
    c->out_tail = &o->next;
    c->n_out++;
}

static void undelivered(coord_t *c, uint64_t id)
{
    ei_err_t err;
    c->undelivered++;
    if (c->journal && journal_undelivered(c->journal, id, &err) < 0)
        journal_failed(c, &err);
}

void coord__flush(coord_t *c)
{
    ei_err_t err;
    uv_timer_stop(&c->flush_timer);
    if (c->journal && journal_dirty(c->journal)) {
        uint64_t t0 = coord__now_us();
        if (journal_commit(c->journal, &err) < 0)
            journal_failed(c, &err); /* logged; what the batch held is not durable */
        c->last_commit_us = coord__now_us();
        if (c->last_commit_us - t0 > 100000)
            ei_log(EI_LOG_WARN, "journal: a commit took %llu ms",
                   (unsigned long long)(c->last_commit_us - t0) / 1000);
    }
    coord_out_t *o = c->out_head;
    c->out_head = NULL;
    c->out_tail = &c->out_head;
    c->n_out = 0;
    while (o) {
        coord_out_t *next = o->next;
        xport_frame_t f = {o->bytes, o->len, NULL, NULL};
        int rc = o->peer.len && c->clients ? xport_send(c->clients, &o->peer, &f, 1, &err)
                                           : EI_E_PEER;
        if (rc < 0 && o->answer_id)
            undelivered(c, o->answer_id); /* kept: `einet result` reads it */
        free(o);
        o = next;
    }
}

static void on_flush_timer(uv_timer_t *t)
{
    coord__flush(t->data);
}

/* Each turn of the loop: the tasks queued since the check phase go; then commit and send
 * the client messages now, or within COORD_COMMIT_US. */
static void on_flush(uv_prepare_t *h)
{
    coord_t *c = h->data;
    coord__flush_tasks(c); /* made by timers since the check phase */
    if (!c->journal) {
        coord__flush(c);
        return;
    }
    uint64_t now = coord__now_us(), since = now - c->last_commit_us;
    if (!c->out_head) {
        if (journal_dirty(c->journal) && since >= COORD_COMMIT_IDLE_US)
            coord__flush(c);
        else if (journal_dirty(c->journal) && !uv_is_active((uv_handle_t *)&c->flush_timer))
            uv_timer_start(&c->flush_timer, on_flush_timer,
                           (COORD_COMMIT_IDLE_US - since) / 1000 + 1, 0);
        return;
    }
    if (since >= COORD_COMMIT_US || c->n_out >= COORD_COMMIT_BATCH) {
        coord__flush(c);
        return;
    }
    uint64_t ms = (COORD_COMMIT_US - since + 999) / 1000;
    if (!uv_is_active((uv_handle_t *)&c->flush_timer) ||
        uv_timer_get_due_in(&c->flush_timer) > ms)
        uv_timer_start(&c->flush_timer, on_flush_timer, ms, 0);
}

static void on_trim(uv_timer_t *t)
{
    coord_t *c = t->data;
    ei_err_t err;
    int n = journal_trim(c->journal, coord__wall_us(), &err);
    if (n < 0)
        journal_failed(c, &err);
}

/* Checkpoints (the fsyncs of synchronous=NORMAL) run on libuv's thread pool, so a slow
 * disk never stalls the loop that answers clients. */
static void ckpt_run(uv_work_t *w)
{
    coord_t *c = w->data;
    c->ckpt_rc = journal_checkpoint(c->journal, &c->ckpt_err);
}

static void ckpt_done(uv_work_t *w, int status)
{
    coord_t *c = w->data;
    c->ckpt_busy = 0;
    if (status == 0 && c->ckpt_rc < 0)
        journal_failed(c, &c->ckpt_err);
}

static void on_ckpt(uv_timer_t *t)
{
    coord_t *c = t->data;
    coord__journal_sweep(c);
    if (c->ckpt_busy || c->closing)
        return;
    c->ckpt_work.data = c;
    c->ckpt_busy = uv_queue_work(c->loop, &c->ckpt_work, ckpt_run, ckpt_done) == 0;
}

void coord__durable_start(coord_t *c)
{
    uv_prepare_start(&c->flush_prep, on_flush);
    if (c->journal) {
        uv_timer_start(&c->trim_timer, on_trim, COORD_TRIM_MS, COORD_TRIM_MS);
        uv_timer_start(&c->ckpt_timer, on_ckpt, COORD_CHECKPOINT_MS, COORD_CHECKPOINT_MS);
    }
}

void coord__durable_close(coord_t *c, uv_close_cb cb)
{
    coord__flush(c);
    uv_close((uv_handle_t *)&c->flush_prep, cb);
    uv_close((uv_handle_t *)&c->flush_timer, cb);
    uv_close((uv_handle_t *)&c->trim_timer, cb);
    uv_close((uv_handle_t *)&c->ckpt_timer, cb);
}

void coord__journal_exit(coord_t *c, const einet_ExitResult *r)
{
    if (!c->journal)
        return;
    if (c->n_dirty == c->cap_dirty) {
        int cap = c->cap_dirty ? 2 * c->cap_dirty : 1024;
        uint64_t *d = realloc(c->dirty, (size_t)cap * sizeof *d);
        if (!d)
            return; /* the answer will record it; only a restart meanwhile would miss it */
        c->dirty = d;
        c->cap_dirty = cap;
    }
    if (c->n_dirty == 0 || c->dirty[c->n_dirty - 1] != r->request_id)
        c->dirty[c->n_dirty++] = r->request_id;
}

static int cmp_id(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

void coord__journal_sweep(coord_t *c)
{
    ei_err_t err;
    if (!c->journal || c->n_dirty == 0)
        return;
    qsort(c->dirty, (size_t)c->n_dirty, sizeof *c->dirty, cmp_id);
    uint64_t now = coord__now_us();
    einet_ResultReply rr;
    for (int i = 0; i < c->n_dirty; i++) {
        if (i > 0 && c->dirty[i] == c->dirty[i - 1])
            continue;
        reqs_lookup(c->reqs, c->dirty[i], now, &rr);
        if (!rr.pending || rr.answer.exit == 0)
            continue; /* answered meanwhile: the answer holds it */
        einet_ExitResult x;
        memset(&x, 0, sizeof x);
        x.request_id = c->dirty[i];
        x.exit = rr.answer.exit;
        x.tier = rr.answer.tier;
        x.class_id = rr.answer.class_id;
        x.confidence = rr.answer.confidence;
        x.probs_count = rr.answer.probs_count;
        memcpy(x.probs, rr.answer.probs, sizeof(float) * rr.answer.probs_count);
        if (journal_exit(c->journal, x.request_id, &x, &err) < 0)
            journal_failed(c, &err);
    }
    c->n_dirty = 0;
}

void coord__journal_answer(coord_t *c, const einet_Answer *a)
{
    ei_err_t err;
    if (c->journal && a->request_id && journal_answer(c->journal, a, coord__wall_us(), &err) < 0)
        journal_failed(c, &err);
}

/* ---- start-up ---- */

int coord__hold(coord_t *c, uint64_t id, const float *input, size_t numel, uint32_t deadline_ms,
                uint64_t deadline_at_us, const einet_StopRule *stop)
{
    if (c->n_held == c->cap_held) {
        int cap = c->cap_held ? 2 * c->cap_held : 64;
        coord_held_t *h = realloc(c->held, (size_t)cap * sizeof *h);
        if (!h)
            return EI_E_NOMEM;
        c->held = h;
        c->cap_held = cap;
    }
    float *copy = malloc(numel * sizeof(float));
    if (!copy)
        return EI_E_NOMEM;
    memcpy(copy, input, numel * sizeof(float));
    c->held[c->n_held++] = (coord_held_t){id, deadline_at_us, deadline_ms, copy, numel,
                                          stop != NULL, stop ? *stop : (einet_StopRule){0}};
    return 0;
}

static void answer_restarted(coord_t *c, const journal_row_t *row, const char *why,
                             uint64_t now_wall)
{
    einet_Answer a = row->best;
    a.status = einet_Status_STATUS_RESTARTED;
    snprintf(a.reason, sizeof a.reason, "the coordinator restarted: %s", why);
    a.latency_us = now_wall > row->recv_us ? now_wall - row->recv_us : 0;
    coord__journal_answer(c, &a);
    undelivered(c, a.request_id); /* its client's connection ended with the old process */
    stats_answer(c->stats, &a);
    c->restarted++;
}

static void restore_row(const journal_row_t *row, void *arg)
{
    coord_t *c = arg;
    uint64_t wall = coord__wall_us(), mono = coord__now_us();
    uint64_t age = wall > row->recv_us ? wall - row->recv_us : 0;
    uint64_t deadline_us = (uint64_t)row->deadline_ms * 1000;
    size_t numel = (size_t)c->in_shape.c * (size_t)c->in_shape.h * (size_t)c->in_shape.w;
    if (!row->input || row->input_numel != numel) {
        answer_restarted(c, row, "the request's image was not kept", wall);
        return;
    }
    if (row->deadline_ms && age >= deadline_us) {
        answer_restarted(c, row, "its deadline passed meanwhile", wall);
        return;
    }
    reqs_client_t cl = {.client_id = row->client_id, .has_label = row->has_label,
                        .label = row->label}; /* no peer: the client collects it by id */
    uint64_t recv = mono > age ? mono - age : 0;
    if (reqs_restore(c->reqs, row->id, &cl, recv, 0, einet_Status_STATUS_LINK, "", &row->best) < 0 ||
        coord__hold(c, row->id, row->input, numel, row->deadline_ms,
                    row->deadline_ms ? recv + deadline_us : 0, NULL) < 0) {
        if (reqs_is_pending(c->reqs, row->id))
            reqs_answer(c->reqs, row->id, einet_Status_STATUS_RESTARTED,
                        "the coordinator restarted: no room to continue it", mono);
        else
            answer_restarted(c, row, "no room to continue it", wall);
        return;
    }
    c->restored++;
}

int coord__restore(coord_t *c, ei_err_t *err)
{
    int n = c->journal ? journal_each_pending(c->journal, restore_row, c, err) : 0;
    if (n < 0)
        return n;
    c->holding = 1;
    c->hold_until_us = coord__now_us() + 2 * (uint64_t)c->conf.heartbeat_timeout_ms * 1000 +
                       COORD_HOLD_EXTRA_MS * 1000;
    if (n > 0)
        ei_log(EI_LOG_INFO,
               "%d requests were pending at the last stop: %llu continue once the cluster is "
               "known, %llu answered 'restarted'",
                n, (unsigned long long)c->restored, (unsigned long long)c->restarted);
    coord__flush(c);
    return 0;
}

/* One held request goes on, with the deadline it has left. */
static void resume_one(coord_t *c, const coord_held_t *h, uint64_t now)
{
    einet_TensorMeta meta;
    bool has;
    uint32_t shape[4] = {1, (uint32_t)c->in_shape.c, (uint32_t)c->in_shape.h,
                         (uint32_t)c->in_shape.w};
    char why[128];
    int status;
    if (!reqs_is_pending(c->reqs, h->id))
        return; /* answered meanwhile (a result of the old run arrived) */
    if (cluster_broken(&c->cluster) == 0) {
        snprintf(why, sizeof why, "%s is down", cluster_tier_name(c->cluster.node[0].tier));
        reqs_answer(c->reqs, h->id, einet_Status_STATUS_LINK, why, now);
        return;
    }
    uint32_t left_ms = 0;
    if (h->deadline_at_us) {
        if (h->deadline_at_us <= now) {
            snprintf(why, sizeof why, "deadline of %u ms passed", (unsigned)h->deadline_ms);
            reqs_answer(c->reqs, h->id, einet_Status_STATUS_DEADLINE, why, now);
            return;
        }
        left_ms = (uint32_t)((h->deadline_at_us - now + 999) / 1000);
    }
    uint64_t at = coord__expiry(c, left_ms, now, &status, why, sizeof why);
    if (h->deadline_at_us && status == einet_Status_STATUS_DEADLINE)
        snprintf(why, sizeof why, "deadline of %u ms passed", (unsigned)h->deadline_ms);
    reqs_set_expiry(c->reqs, h->id, at, status, why);
    wire_meta_set(&meta, &has, shape, 4);
    coord__send_task(c, h->id, &meta, h->input, h->numel, left_ms,
                     h->has_stop ? &h->stop : NULL, NULL);
}

void coord__resume(coord_t *c)
{
    if (!c->holding)
        return;
    uint64_t now = coord__now_us();
    if (cluster_broken(&c->cluster) < c->cluster.n_tiers && now < c->hold_until_us)
        return;
    c->holding = 0;
    if (c->n_held)
        ei_log(EI_LOG_INFO, "the cluster is %s: %d held requests go on",
                cluster_broken(&c->cluster) == c->cluster.n_tiers ? "healthy" : "not healthy",
                c->n_held);
    for (int i = 0; i < c->n_held; i++) {
        resume_one(c, &c->held[i], now);
        free(c->held[i].input);
    }
    free(c->held);
    c->held = NULL;
    c->n_held = c->cap_held = 0;
    coord__arm_expiry(c);
}
