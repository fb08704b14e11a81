/* The per-request state machine (see requests.h). Pending requests live in a ring indexed
 * by id; ids are handed out increasing, skipping any whose slot is still taken, so a lookup
 * is one probe. Expiries sit in a binary min-heap with lazy deletion: an entry whose request
 * was answered meanwhile is dropped when it surfaces. Answers are remembered in a second
 * ring for result queries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/requests.h"

typedef struct req {
    uint64_t id; /* 0: free slot */
    reqs_client_t client;
    uint64_t recv_us, expire_us;
    int expire_status;
    char expire_reason[96];
    int pos;
    int node;          /* the device's fleet index + 1 it was sent to; 0: not known */
    einet_Answer best; /* the deepest result so far; exit 0: none */
} req_t;

typedef struct heap_item {
    uint64_t at, id;
} heap_item_t;

struct reqs {
    reqs_answer_fn *fn;
    void *arg;
    int max_pending, npending;
    uint64_t next_id, late;
    size_t ring_mask, keep_mask;
    req_t *ring;
    einet_Answer *done; /* answered, by id & keep_mask; request_id 0: empty */
    heap_item_t *heap;
    size_t heap_n, heap_cap;
};

static size_t pow2_at_least(size_t v)
{
    size_t p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

reqs_t *reqs_new(int max_pending, int keep, reqs_answer_fn *fn, void *arg)
{
    if (max_pending < 1 || keep < 1 || !fn)
        return NULL;
    reqs_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->fn = fn;
    self->arg = arg;
    self->max_pending = max_pending;
    self->next_id = 1;
    size_t ring = pow2_at_least((size_t)max_pending * 2), kept = pow2_at_least((size_t)keep);
    self->ring_mask = ring - 1;
    self->keep_mask = kept - 1;
    self->heap_cap = 64;
    self->ring = calloc(ring, sizeof *self->ring);
    self->done = calloc(kept, sizeof *self->done);
    self->heap = malloc(self->heap_cap * sizeof *self->heap);
    if (!self->ring || !self->done || !self->heap)
        reqs_destroy(&self);
    return self;
}

void reqs_destroy(reqs_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    reqs_t *self = *self_p;
    free(self->ring);
    free(self->done);
    free(self->heap);
    free(self);
    *self_p = NULL;
}

static req_t *find(const reqs_t *self, uint64_t id)
{
    req_t *r = &self->ring[id & self->ring_mask];
    return id && r->id == id ? r : NULL;
}

/* ---- the expiry heap ---- */

static void heap_swap(heap_item_t *a, heap_item_t *b)
{
    heap_item_t t = *a;
    *a = *b;
    *b = t;
}

static void heap_up(heap_item_t *h, size_t i)
{
    while (i > 0 && h[(i - 1) / 2].at > h[i].at) {
        heap_swap(&h[(i - 1) / 2], &h[i]);
        i = (i - 1) / 2;
    }
}

static void heap_down(heap_item_t *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l].at < h[m].at)
            m = l;
        if (r < n && h[r].at < h[m].at)
            m = r;
        if (m == i)
            return;
        heap_swap(&h[m], &h[i]);
        i = m;
    }
}

static void heap_pop(reqs_t *self)
{
    self->heap[0] = self->heap[--self->heap_n];
    heap_down(self->heap, self->heap_n, 0);
}

/* An entry is live while its request is pending with that very expiry. */
static int heap_live(const reqs_t *self, const heap_item_t *e)
{
    const req_t *r = find(self, e->id);
    return r && r->expire_us == e->at;
}

/* Drops stale entries so the heap holds at most the pending requests (amortised: only
 * when it has grown to several times that). */
static void heap_compact(reqs_t *self)
{
    size_t k = 0;
    for (size_t i = 0; i < self->heap_n; i++)
        if (heap_live(self, &self->heap[i]))
            self->heap[k++] = self->heap[i];
    self->heap_n = k;
    for (size_t i = k / 2 + 1; i-- > 0;)
        heap_down(self->heap, self->heap_n, i);
}

static int heap_push(reqs_t *self, uint64_t at, uint64_t id)
{
    if (self->heap_n > 4 * (size_t)self->max_pending + 64)
        heap_compact(self);
    if (self->heap_n == self->heap_cap) {
        heap_item_t *h = realloc(self->heap, 2 * self->heap_cap * sizeof *h);
        if (!h)
            return EI_E_NOMEM;
        self->heap = h;
        self->heap_cap *= 2;
    }
    self->heap[self->heap_n] = (heap_item_t){at, id};
    heap_up(self->heap, self->heap_n++);
    return 0;
}

/* ---- answering: the only way out of "pending" ---- */

static void finish(reqs_t *self, req_t *r, int status, const char *reason, uint64_t now_us)
{
    einet_Answer a = r->best;
    a.request_id = r->id;
    a.client_id = r->client.client_id;
    a.status = status;
    snprintf(a.reason, sizeof a.reason, "%s", reason ? reason : "");
    a.latency_us = now_us > r->recv_us ? now_us - r->recv_us : 0;
    a.has_label = r->client.has_label;
    a.label = r->client.label;
    reqs_client_t client = r->client;
    int pos = r->pos;
    self->done[r->id & self->keep_mask] = a;
    r->id = 0; /* from here on every event for it is late */
    self->npending--;
    reqs_done_t d = {&a, &client, pos};
    self->fn(&d, self->arg);
}

static int place(reqs_t *self, uint64_t id, const reqs_client_t *client, uint64_t now_us,
                 uint64_t expire_us, int expire_status, const char *expire_reason)
{
    if (expire_us && heap_push(self, expire_us, id) < 0)
        return EI_E_NOMEM;
    req_t *r = &self->ring[id & self->ring_mask];
    memset(r, 0, sizeof *r);
    r->id = id;
    r->client = *client;
    r->recv_us = now_us;
    r->expire_us = expire_us;
    r->expire_status = expire_status;
    snprintf(r->expire_reason, sizeof r->expire_reason, "%s", expire_reason ? expire_reason : "");
    r->best.tier = einet_Tier_TIER_NONE;
    self->npending++;
    return 0;
}

int reqs_add(reqs_t *self, const reqs_client_t *client, uint64_t now_us, uint64_t expire_us,
             int expire_status, const char *expire_reason, uint64_t *id)
{
    if (self->npending >= self->max_pending)
        return EI_E_RANGE;
    /* At most half the ring is taken, so a free slot is near. */
    while (self->ring[self->next_id & self->ring_mask].id != 0)
        self->next_id++;
    int rc = place(self, self->next_id, client, now_us, expire_us, expire_status, expire_reason);
    if (rc < 0)
        return rc;
    *id = self->next_id++;
    return 0;
}

void reqs_set_next_id(reqs_t *self, uint64_t next_id)
{
    if (next_id > self->next_id)
        self->next_id = next_id;
}

int reqs_restore(reqs_t *self, uint64_t id, const reqs_client_t *client, uint64_t recv_us,
                 uint64_t expire_us, int expire_status, const char *expire_reason,
                 const einet_Answer *best)
{
    if (id == 0 || self->npending >= self->max_pending ||
        self->ring[id & self->ring_mask].id != 0)
        return EI_E_RANGE;
    int rc = place(self, id, client, recv_us, expire_us, expire_status, expire_reason);
    if (rc < 0)
        return rc;
    req_t *r = &self->ring[id & self->ring_mask];
    if (best && best->exit) {
        r->best.exit = best->exit;
        r->best.tier = best->tier;
        r->best.class_id = best->class_id;
        r->best.confidence = best->confidence;
        r->best.probs_count = best->probs_count;
        memcpy(r->best.probs, best->probs, sizeof(float) * best->probs_count);
    }
    reqs_set_next_id(self, id + 1);
    return 0;
}

int reqs_set_expiry(reqs_t *self, uint64_t id, uint64_t expire_us, int expire_status,
                    const char *expire_reason)
{
    req_t *r = find(self, id);
    if (!r)
        return 0;
    if (expire_us && heap_push(self, expire_us, id) < 0)
        expire_us = r->expire_us; /* out of memory: the old expiry stays */
    r->expire_us = expire_us;
    r->expire_status = expire_status;
    snprintf(r->expire_reason, sizeof r->expire_reason, "%s", expire_reason ? expire_reason : "");
    return 1;
}

int reqs_is_pending(const reqs_t *self, uint64_t id)
{
    return find(self, id) != NULL;
}

static void take_result(req_t *r, const einet_ExitResult *x)
{
    einet_Answer *b = &r->best;
    b->exit = x->exit;
    b->tier = x->tier;
    b->class_id = x->class_id;
    b->confidence = x->confidence;
    b->mflop = x->mflop;
    b->probs_count = x->probs_count;
    memcpy(b->probs, x->probs, sizeof(float) * x->probs_count);
}

int reqs_exit(reqs_t *self, uint64_t id, const einet_ExitResult *x, int pos, uint64_t now_us)
{
    req_t *r = find(self, id);
    if (!r) {
        self->late++;
        return REQS_LATE;
    }
    if (r->expire_us && now_us > r->expire_us) {
        /* Its expiry passed before this result came (the timer has not fired yet): the
         * answer is what had arrived by then, and this result is late. */
        finish(self, r, r->expire_status, r->expire_reason, now_us);
        self->late++;
        return REQS_LATE;
    }
    if (pos > r->pos)
        r->pos = pos;
    if (x->early_exit || x->stopped || x->exit > r->best.exit)
        take_result(r, x);
    if (x->stopped && !x->early_exit) {
        finish(self, r, einet_Status_STATUS_EARLY, "stop rule", now_us);
        return REQS_ANSWERED;
    }
    if (x->early_exit) {
        finish(self, r, einet_Status_STATUS_DEVICE_EE, "class-specific early exit", now_us);
        return REQS_ANSWERED;
    }
    if (x->last) {
        finish(self, r, einet_Status_STATUS_COMPLETE, "", now_us);
        return REQS_ANSWERED;
    }
    return REQS_NOTED;
}

int reqs_answer(reqs_t *self, uint64_t id, int status, const char *reason, uint64_t now_us)
{
    req_t *r = find(self, id);
    if (!r) {
        self->late++;
        return 0;
    }
    finish(self, r, status, reason, now_us);
    return 1;
}

int reqs_fail_upto(reqs_t *self, int pos, int status, const char *reason, uint64_t now_us)
{
    int n = 0;
    for (size_t i = 0; i <= self->ring_mask && self->npending > 0; i++) {
        req_t *r = &self->ring[i];
        if (r->id && r->pos <= pos) {
            finish(self, r, status, reason, now_us);
            n++;
        }
    }
    return n;
}

void reqs_set_node(reqs_t *self, uint64_t id, int node)
{
    req_t *r = find(self, id);
    if (r)
        r->node = node + 1;
}

int reqs_of_node(const reqs_t *self, int node, int pos, uint64_t *ids, int cap)
{
    int n = 0;
    for (size_t i = 0; i <= self->ring_mask; i++) {
        const req_t *r = &self->ring[i];
        if (r->id && r->node == node + 1 && r->pos <= pos) {
            if (n < cap)
                ids[n] = r->id;
            n++;
        }
    }
    return n;
}

int reqs_expire_upto(reqs_t *self, int pos, uint64_t expire_us, int status, const char *reason)
{
    int n = 0;
    for (size_t i = 0; i <= self->ring_mask && self->npending > 0; i++) {
        req_t *r = &self->ring[i];
        if (r->id && r->pos <= pos && (!r->expire_us || r->expire_us > expire_us)) {
            reqs_set_expiry(self, r->id, expire_us, status, reason);
            n++;
        }
    }
    return n;
}

int reqs_answer_all(reqs_t *self, int status, const char *reason, uint64_t now_us)
{
    return reqs_fail_upto(self, 1 << 30, status, reason, now_us);
}

int reqs_expire(reqs_t *self, uint64_t now_us)
{
    int n = 0;
    while (self->heap_n > 0 && self->heap[0].at <= now_us) {
        heap_item_t e = self->heap[0];
        heap_pop(self);
        req_t *r = find(self, e.id);
        if (r && r->expire_us == e.at) {
            finish(self, r, r->expire_status, r->expire_reason, now_us);
            n++;
        }
    }
    return n;
}

uint64_t reqs_next_expiry(reqs_t *self)
{
    while (self->heap_n > 0 && !heap_live(self, &self->heap[0]))
        heap_pop(self);
    return self->heap_n ? self->heap[0].at : 0;
}

void reqs_lookup(const reqs_t *self, uint64_t id, uint64_t now_us, einet_ResultReply *out)
{
    memset(out, 0, sizeof *out);
    const req_t *r = find(self, id);
    if (r) {
        out->found = out->pending = true;
        out->has_answer = true;
        out->answer = r->best;
        out->answer.request_id = id;
        out->answer.client_id = r->client.client_id;
        /* Not answered yet: the status it would get if cut off now. */
        out->answer.status = einet_Status_STATUS_DEADLINE;
        snprintf(out->answer.reason, sizeof out->answer.reason, "pending: the deepest result so far");
        out->answer.latency_us = now_us > r->recv_us ? now_us - r->recv_us : 0;
        out->answer.has_label = r->client.has_label;
        out->answer.label = r->client.label;
        return;
    }
    const einet_Answer *a = id ? &self->done[id & self->keep_mask] : NULL;
    if (a && a->request_id == id) {
        out->found = out->has_answer = true;
        out->answer = *a;
    }
}

int reqs_received_us(const reqs_t *self, uint64_t id, uint64_t *recv_us)
{
    const req_t *r = find(self, id);
    if (!r)
        return 0;
    *recv_us = r->recv_us;
    return 1;
}

int reqs_pending(const reqs_t *self)
{
    return self->npending;
}

uint64_t reqs_late(const reqs_t *self)
{
    return self->late;
}
