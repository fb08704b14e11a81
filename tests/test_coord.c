/* Tests of the coordinator's pure modules: the per-request state machine (exactly one
 * answer under every ordering of final exit, deadline, link failures, hand-back and
 * shutdown, checked against a plain reference), the expiry heap, result lookups, statistics
 * (percentiles against a sorted reference, counters), cluster health and its events, and
 * the routing of fault commands. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coordinator/cluster.h"
#include "coordinator/requests.h"
#include "coordinator/resend.h"
#include "coordinator/stats.h"
#include "runtime/fault.h"

/* ---- a recorder of answers ---- */

#define MAX_ANS 4096

typedef struct rec {
    int n;
    einet_Answer a[MAX_ANS];
    int pos[MAX_ANS];
    int per_id[MAX_ANS]; /* answers per request id */
} rec_t;

static void on_answer(const reqs_done_t *d, void *arg)
{
    rec_t *r = arg;
    assert_true(r->n < MAX_ANS);
    r->a[r->n] = *d->answer;
    r->pos[r->n++] = d->pos;
    if (d->answer->request_id < MAX_ANS)
        r->per_id[d->answer->request_id]++;
}

static reqs_client_t client(uint64_t cid, int label)
{
    reqs_client_t c;
    memset(&c, 0, sizeof c);
    c.peer = xport_peer("client", 6);
    c.seq = cid + 100;
    c.client_id = cid;
    c.has_label = label >= 0;
    c.label = label >= 0 ? (uint32_t)label : 0;
    return c;
}

static einet_ExitResult result(uint32_t exit, int tier, uint32_t cls, int last)
{
    einet_ExitResult r;
    memset(&r, 0, sizeof r);
    r.exit = exit;
    r.tier = tier;
    r.class_id = cls;
    r.confidence = 0.5f + 0.05f * (float)exit;
    r.probs_count = 10;
    r.probs[cls] = r.confidence;
    r.last = last;
    return r;
}

/* ---- every ordering of the events of one request ---- */

enum { EV_MID, EV_FINAL, EV_DEADLINE, EV_LINK_EC, EV_LINK_DE, EV_HANDBACK, EV_SHUTDOWN, N_EV };

typedef struct model {
    int answered, status, exit, pos, late;
} model_t;

/* The reference: what the contract says each event does to one request. */
static void model_apply(model_t *m, int ev)
{
    int late_kind = ev == EV_MID || ev == EV_FINAL || ev == EV_HANDBACK;
    if (m->answered) {
        m->late += late_kind;
        return;
    }
    switch (ev) {
    case EV_MID: /* exit 4 from the edge (pipeline index 1) */
        m->exit = m->exit > 4 ? m->exit : 4;
        m->pos = m->pos > 1 ? m->pos : 1;
        return;
    case EV_FINAL:
        m->exit = 8;
        m->answered = 1;
        m->status = einet_Status_STATUS_COMPLETE;
        return;
    case EV_DEADLINE:
        m->answered = 1;
        m->status = einet_Status_STATUS_DEADLINE;
        return;
    case EV_LINK_EC: /* edge-cloud: cuts requests not heard from beyond the edge */
    case EV_LINK_DE: /* device-edge: cuts requests not heard from beyond the device */
        if (m->pos <= (ev == EV_LINK_EC ? 1 : 0)) {
            m->answered = 1;
            m->status = einet_Status_STATUS_LINK;
        }
        return;
    case EV_HANDBACK:
        m->answered = 1;
        m->status = einet_Status_STATUS_LINK;
        return;
    case EV_SHUTDOWN:
        m->answered = 1;
        m->status = einet_Status_STATUS_SHUTDOWN;
        return;
    }
}

static void real_apply(reqs_t *q, uint64_t id, int ev, uint64_t *now)
{
    einet_ExitResult mid = result(4, einet_Tier_TIER_EDGE, 3, 0);
    einet_ExitResult fin = result(8, einet_Tier_TIER_CLOUD, 7, 1);
    *now += 10;
    switch (ev) {
    case EV_MID:
        reqs_exit(q, id, &mid, 1, *now);
        break;
    case EV_FINAL:
        reqs_exit(q, id, &fin, 2, *now);
        break;
    case EV_DEADLINE:
        *now = 1000000; /* the expiry set at add */
        reqs_expire(q, *now);
        break;
    case EV_LINK_EC:
        reqs_fail_upto(q, 1, einet_Status_STATUS_LINK, "edge-cloud link down", *now);
        break;
    case EV_LINK_DE:
        reqs_fail_upto(q, 0, einet_Status_STATUS_LINK, "device-edge link down", *now);
        break;
    case EV_HANDBACK:
        reqs_answer(q, id, einet_Status_STATUS_LINK, "handed back", *now);
        break;
    case EV_SHUTDOWN:
        reqs_answer_all(q, einet_Status_STATUS_SHUTDOWN, "shutdown", *now);
        break;
    }
}

static int next_perm(int *a, int n)
{
    int i = n - 2;
    while (i >= 0 && a[i] >= a[i + 1])
        i--;
    if (i < 0)
        return 0;
    int j = n - 1;
    while (a[j] <= a[i])
        j--;
    int t = a[i];
    a[i] = a[j];
    a[j] = t;
    for (int l = i + 1, r = n - 1; l < r; l++, r--) {
        t = a[l];
        a[l] = a[r];
        a[r] = t;
    }
    return 1;
}

static void run_order(const int *ev, int n, rec_t *rec)
{
    memset(rec, 0, sizeof *rec);
    reqs_t *q = reqs_new(4, 16, on_answer, rec);
    assert_non_null(q);
    reqs_client_t c = client(42, 7);
    uint64_t id, now = 100;
    assert_int_equal(reqs_add(q, &c, now, 1000000, einet_Status_STATUS_DEADLINE, "deadline", &id), 0);
    model_t m = {0};
    for (int i = 0; i < n; i++) {
        model_apply(&m, ev[i]);
        real_apply(q, id, ev[i], &now);
        /* never twice, and never before the reference says so */
        assert_int_equal(rec->n, m.answered);
    }
    reqs_answer_all(q, einet_Status_STATUS_SHUTDOWN, "end", now);
    model_apply(&m, EV_SHUTDOWN);
    assert_int_equal(rec->n, 1);
    assert_int_equal(rec->a[0].request_id, id);
    assert_int_equal(rec->a[0].client_id, 42);
    assert_int_equal(rec->a[0].status, m.status);
    assert_int_equal(rec->a[0].exit, m.exit);
    assert_int_equal(rec->a[0].tier, m.exit == 8   ? einet_Tier_TIER_CLOUD
                                     : m.exit == 4 ? einet_Tier_TIER_EDGE
                                                   : einet_Tier_TIER_NONE);
    assert_true(rec->a[0].has_label);
    assert_int_equal(rec->a[0].label, 7);
    assert_int_equal(reqs_late(q), (uint64_t)m.late);
    assert_int_equal(reqs_pending(q), 0);
    reqs_destroy(&q);
    assert_null(q);
}

static void test_every_ordering_one_answer(void **state)
{
    (void)state;
    int ev[N_EV];
    for (int i = 0; i < N_EV; i++)
        ev[i] = i;
    rec_t *rec = malloc(sizeof *rec);
    int orders = 0;
    do {
        /* every prefix too: the events that happen before the shutdown at the end */
        for (int len = 0; len <= N_EV; len++)
            run_order(ev, len, rec);
        orders++;
    } while (next_perm(ev, N_EV));
    assert_int_equal(orders, 5040);
    free(rec);
}

/* ---- many requests, random events, each answered once ---- */

static void test_random_interleavings(void **state)
{
    (void)state;
    rec_t *rec = calloc(1, sizeof *rec);
    ei_rng_t rng;
    ei_rng_seed(&rng, 7);
    for (int round = 0; round < 20; round++) {
        memset(rec, 0, sizeof *rec);
        reqs_t *q = reqs_new(64, 1024, on_answer, rec);
        uint64_t now = 1000, ids[200];
        int nids = 0, rejected = 0;
        for (int step = 0; step < 2000; step++) {
            now += ei_rng_below(&rng, 50);
            uint32_t r = ei_rng_below(&rng, 100);
            if (r < 30 && nids < 200) {
                reqs_client_t c = client((uint64_t)nids, (int)ei_rng_below(&rng, 10));
                uint64_t at = ei_rng_below(&rng, 2) ? now + ei_rng_below(&rng, 5000) : 0;
                if (reqs_add(q, &c, now, at, einet_Status_STATUS_DEADLINE, "d", &ids[nids]) == 0)
                    nids++;
                else
                    rejected++;
            } else if (r < 70 && nids) {
                uint64_t id = ids[ei_rng_below(&rng, (uint32_t)nids)];
                uint32_t k = 1 + ei_rng_below(&rng, 8);
                einet_ExitResult x = result(k, 1 + (int)((k - 1) / 3), k % 10, k == 8);
                reqs_exit(q, id, &x, (int)((k - 1) / 3), now);
            } else if (r < 85) {
                reqs_expire(q, now);
            } else if (r < 90) {
                reqs_fail_upto(q, (int)ei_rng_below(&rng, 3), einet_Status_STATUS_LINK, "l", now);
            } else if (nids) {
                reqs_answer(q, ids[ei_rng_below(&rng, (uint32_t)nids)], einet_Status_STATUS_LINK,
                            "h", now);
            }
            assert_true(reqs_pending(q) <= 64);
            uint64_t nx = reqs_next_expiry(q);
            assert_true(nx == 0 || nx > 0);
        }
        reqs_answer_all(q, einet_Status_STATUS_SHUTDOWN, "end", now);
        assert_int_equal(rec->n, nids);
        for (int i = 0; i < nids; i++)
            assert_int_equal(rec->per_id[ids[i]], 1);
        /* ids are unique and increasing */
        for (int i = 1; i < nids; i++)
            assert_true(ids[i] > ids[i - 1]);
        for (int i = 0; i < rec->n; i++) {
            const einet_Answer *a = &rec->a[i];
            assert_true(a->latency_us <= now);
            if (a->status == einet_Status_STATUS_COMPLETE)
                assert_int_equal(a->exit, 8);
        }
        reqs_destroy(&q);
        (void)rejected;
    }
    free(rec);
}

/* ---- expiries ---- */

static void test_expiry_order_and_deepest(void **state)
{
    (void)state;
    rec_t *rec = calloc(1, sizeof *rec);
    reqs_t *q = reqs_new(100, 128, on_answer, rec);
    uint64_t at[100], id[100];
    ei_rng_t rng;
    ei_rng_seed(&rng, 3);
    for (int i = 0; i < 100; i++) {
        reqs_client_t c = client((uint64_t)i, -1);
        at[i] = 1000 + ei_rng_below(&rng, 10000);
        assert_int_equal(reqs_add(q, &c, 0, at[i], einet_Status_STATUS_DEADLINE, "late", &id[i]), 0);
        einet_ExitResult x = result(3, einet_Tier_TIER_DEVICE, 2, 0), y = result(1, 1, 5, 0);
        reqs_exit(q, id[i], &x, 0, 10);
        reqs_exit(q, id[i], &y, 0, 20); /* shallower, later: the deeper one stays */
    }
    assert_int_equal(reqs_add(q, &(reqs_client_t){0}, 0, 0, 0, "", &(uint64_t){0}), EI_E_RANGE);
    for (uint64_t t = 0; t <= 12000; t += 250) {
        uint64_t nx = reqs_next_expiry(q);
        reqs_expire(q, t);
        int due = 0;
        for (int i = 0; i < 100; i++)
            due += at[i] <= t;
        assert_int_equal(rec->n, due);
        if (nx)
            assert_true(nx > t - 250 || t == 0);
    }
    for (int i = 0; i < rec->n; i++) {
        assert_int_equal(rec->a[i].status, einet_Status_STATUS_DEADLINE);
        assert_int_equal(rec->a[i].exit, 3);
        assert_int_equal(rec->a[i].class_id, 2);
        assert_int_equal(rec->a[i].latency_us, at[rec->a[i].client_id] <= 12000 ? rec->a[i].latency_us : 0);
        assert_string_equal(rec->a[i].reason, "late");
    }
    assert_int_equal(reqs_next_expiry(q), 0);
    reqs_destroy(&q);
    free(rec);
}

/* The kept tasks (resend.h): every id a reqs table of the same max_pending hands out while
 * others are pending has its own slot, so a kept task is found until dropped, whatever else
 * is kept and dropped meanwhile; the input is copied (the caller's buffer may go), a slot's
 * buffer is reused, keeping the same request again keeps its `resent`, and a dropped or
 * never-kept id is not found. Checked against a plain list over 5,000 random steps. */
static void test_resend_keeps_until_dropped(void **state)
{
    (void)state;
    enum { MAXP = 24, STEPS = 5000, NUMEL = 7 };
    rec_t *rec = calloc(1, sizeof *rec);
    reqs_t *q = reqs_new(MAXP, 64, on_answer, rec);
    resend_t *r = resend_new(MAXP);
    assert_non_null(q);
    assert_non_null(r);
    assert_null(resend_new(0));
    uint64_t live[MAXP];
    int nlive = 0;
    unsigned seed = 7;
    for (int step = 0; step < STEPS; step++) {
        seed = seed * 1103515245u + 12345u;
        if (nlive < MAXP && (nlive == 0 || (seed >> 16) % 3 != 0)) {
            reqs_client_t cl = client((uint64_t)step, -1);
            uint64_t id;
            assert_int_equal(reqs_add(q, &cl, 0, 0, einet_Status_STATUS_LINK, "lost", &id), 0);
            einet_Task t = {.request_id = id, .plan_count = 3, .has_deadline_us = true,
                            .deadline_us = id * 10};
            t.plan[1] = true;
            float in[NUMEL];
            for (int i = 0; i < NUMEL; i++)
                in[i] = (float)id + (float)i / 8;
            assert_int_equal(resend_keep(r, &t, in, NUMEL, step % 2 ? "device-2" : NULL), 0);
            memset(in, 0, sizeof in); /* kept as a copy */
            live[nlive++] = id;
        } else {
            int k = (int)((seed >> 8) % (unsigned)nlive);
            uint64_t id = live[k];
            resend_drop(r, id);
            assert_null(resend_find(r, id));
            assert_int_equal(reqs_answer(q, id, einet_Status_STATUS_LINK, "done", 1), 1);
            live[k] = live[--nlive];
        }
        assert_int_equal(resend_count(r), nlive);
        for (int j = 0; j < nlive; j++) {
            resend_task_t *e = resend_find(r, live[j]);
            assert_non_null(e);
            assert_true(e->id == live[j] && e->task.request_id == live[j]);
            assert_true(e->task.deadline_us == live[j] * 10 && e->task.plan[1]);
            assert_int_equal(e->numel, NUMEL);
            for (int i = 0; i < NUMEL; i++)
                assert_true(e->input[i] == (float)live[j] + (float)i / 8);
        }
    }
    assert_null(resend_find(r, 0));
    /* sent again: kept anew from its own copy, still marked resent; another id is not */
    assert_true(nlive > 0);
    resend_task_t *e = resend_find(r, live[0]);
    e->resent = 1;
    einet_Task t = e->task;
    t.deadline_us = 5;
    assert_int_equal(resend_keep(r, &t, e->input, e->numel, e->device), 0);
    e = resend_find(r, live[0]);
    assert_int_equal(e->resent, 1);
    assert_true(e->task.deadline_us == 5);
    assert_true(e->input[0] == (float)live[0]);
    resend_drop(r, live[0]);
    resend_drop(r, live[0]); /* twice: nothing more */
    assert_int_equal(resend_count(r), nlive - 1);
    resend_destroy(&r);
    assert_null(r);
    resend_destroy(&r);
    reqs_destroy(&q);
    free(rec);
}

/* A replica's death (issue 11): a device's answers only the requests sent to it and not
 * heard from beyond it; reqs_expire_upto moves only earlier expiries of requests not heard
 * from beyond pos, and they are then answered once at the new time, deepest exit kept. */
static void test_fail_node_and_orphan_expiry(void **state)
{
    (void)state;
    rec_t *rec = calloc(1, sizeof *rec);
    reqs_t *q = reqs_new(64, 64, on_answer, rec);
    uint64_t id[12];
    for (int i = 0; i < 12; i++) {
        reqs_client_t c = client((uint64_t)i, -1);
        assert_int_equal(reqs_add(q, &c, 0, i == 11 ? 500 : 0, einet_Status_STATUS_DEADLINE,
                                  "deadline", &id[i]),
                         0);
        reqs_set_node(q, id[i], i % 3); /* devices 0, 1, 2 */
    }
    einet_ExitResult edge = result(4, einet_Tier_TIER_EDGE, 7, 0);
    reqs_exit(q, id[3], &edge, 1, 10); /* device 0's request 3 is beyond it, at the edge */
    /* device 0 dies: its requests 0, 6, 9 are inside it; 3 (at the edge) is not */
    uint64_t in0[4] = {0};
    assert_int_equal(reqs_of_node(q, 0, 0, in0, 4), 3);
    assert_int_equal(reqs_of_node(q, 0, 0, NULL, 0), 3); /* counted without room */
    assert_int_equal(reqs_of_node(q, 0, 0, in0, 2), 3);  /* two written, three counted */
    assert_int_equal(reqs_of_node(q, 0, 0, in0, 4), 3);
    for (int i = 0; i < 3; i++) {
        assert_true(in0[i] == id[0] || in0[i] == id[6] || in0[i] == id[9]);
        assert_int_equal(reqs_answer(q, in0[i], einet_Status_STATUS_LINK, "device-1 lost", 20), 1);
    }
    assert_int_equal(in0[3], 0);
    assert_int_equal(rec->n, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(rec->a[i].client_id % 3, 0);
    assert_true(reqs_is_pending(q, id[3]));
    assert_int_equal(reqs_of_node(q, 0, 0, in0, 4), 0); /* answered: no longer inside it */
    assert_int_equal(reqs_of_node(q, 0, 1, in0, 4), 1); /* up to the edge: request 3 */
    assert_true(in0[0] == id[3]);
    /* an edge dies: requests not heard from beyond the edge (all but none here) get an
     * expiry at 1000 unless theirs is earlier (request 11: 500) */
    int moved = reqs_expire_upto(q, 1, 1000, einet_Status_STATUS_LINK, "lost with edge-1");
    assert_int_equal(moved, 8); /* 9 pending, request 11 keeps its earlier 500 */
    reqs_expire(q, 999);
    assert_int_equal(rec->n, 4); /* request 11 at 500, with its deadline */
    assert_int_equal(rec->a[3].client_id, 11);
    assert_int_equal(rec->a[3].status, einet_Status_STATUS_DEADLINE);
    reqs_expire(q, 1000);
    assert_int_equal(rec->n, 12);
    for (int i = 4; i < 12; i++) {
        assert_int_equal(rec->a[i].status, einet_Status_STATUS_LINK);
        assert_string_equal(rec->a[i].reason, "lost with edge-1");
        if (rec->a[i].client_id == 3)
            assert_int_equal(rec->a[i].exit, 4); /* the deepest exit kept */
    }
    for (int i = 0; i < 12; i++)
        assert_int_equal(rec->per_id[id[i]], 1);
    reqs_destroy(&q);
    free(rec);
}

/* A request that stays pending while many others come and go keeps its slot: ids skip it. */
static void test_ids_skip_a_held_slot(void **state)
{
    (void)state;
    rec_t *rec = calloc(1, sizeof *rec);
    reqs_t *q = reqs_new(2, 4, on_answer, rec);
    reqs_client_t c = client(1, -1);
    uint64_t old, id;
    assert_int_equal(reqs_add(q, &c, 0, 0, einet_Status_STATUS_LINK, "", &old), 0);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(reqs_add(q, &c, 0, 0, einet_Status_STATUS_LINK, "", &id), 0);
        assert_int_equal(reqs_add(q, &c, 0, 0, 0, "", &(uint64_t){0}), EI_E_RANGE);
        assert_int_equal(reqs_answer(q, id, einet_Status_STATUS_LINK, "x", 1), 1);
    }
    einet_ResultReply rr;
    reqs_lookup(q, old, 5, &rr);
    assert_true(rr.found && rr.pending);
    assert_int_equal(rr.answer.latency_us, 5);
    assert_int_equal(reqs_answer(q, old, einet_Status_STATUS_LINK, "x", 9), 1);
    assert_int_equal(rec->n, 51);
    reqs_destroy(&q);
    free(rec);
}

static void test_lookup(void **state)
{
    (void)state;
    rec_t *rec = calloc(1, sizeof *rec);
    reqs_t *q = reqs_new(8, 4, on_answer, rec);
    reqs_client_t c = client(9, 3);
    uint64_t id[6];
    einet_ResultReply rr;
    for (int i = 0; i < 6; i++)
        assert_int_equal(reqs_add(q, &c, 100, 0, 0, "", &id[i]), 0);
    einet_ExitResult x = result(2, einet_Tier_TIER_DEVICE, 3, 0);
    reqs_exit(q, id[0], &x, 0, 150);
    reqs_lookup(q, id[0], 300, &rr);
    assert_true(rr.found && rr.pending && rr.has_answer);
    assert_int_equal(rr.answer.exit, 2);
    assert_int_equal(rr.answer.class_id, 3);
    assert_int_equal(rr.answer.latency_us, 200);
    for (int i = 0; i < 6; i++)
        reqs_answer(q, id[i], einet_Status_STATUS_LINK, "cut", 400);
    reqs_lookup(q, id[5], 900, &rr);
    assert_true(rr.found && !rr.pending);
    assert_int_equal(rr.answer.status, einet_Status_STATUS_LINK);
    assert_string_equal(rr.answer.reason, "cut");
    assert_int_equal(rr.answer.latency_us, 300);
    reqs_lookup(q, id[0], 900, &rr); /* only the latest 4 answers are kept */
    assert_false(rr.found);
    reqs_lookup(q, 0, 900, &rr);
    assert_false(rr.found);
    reqs_lookup(q, 12345, 900, &rr);
    assert_false(rr.found);
    reqs_destroy(&q);
    free(rec);
}

/* ---- statistics ---- */

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static void test_percentiles_vs_sorted(void **state)
{
    (void)state;
    static const size_t sizes[] = {1, 2, 3, 7, 10, 100, 101, 999, 4096};
    static const double ps[] = {0.1, 1, 25, 50, 95, 99, 99.9, 100};
    ei_rng_t rng;
    ei_rng_seed(&rng, 11);
    float *v = malloc(4096 * sizeof *v), *s = malloc(4096 * sizeof *s);
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        size_t n = sizes[si];
        for (int trial = 0; trial < 20; trial++) {
            for (size_t i = 0; i < n; i++) /* ties on purpose: few distinct values */
                s[i] = trial % 2 ? (float)ei_rng_below(&rng, 7) : (float)ei_rng_uniform(&rng);
            memcpy(v, s, n * sizeof *v);
            qsort(s, n, sizeof *s, cmp_float);
            for (size_t pi = 0; pi < sizeof ps / sizeof *ps; pi++) {
                size_t rank = (size_t)ceil(ps[pi] / 100.0 * (double)n);
                rank = rank < 1 ? 1 : rank;
                float got = stats_percentile(v, n, ps[pi]);
                assert_true(got == s[rank - 1]);
            }
        }
    }
    assert_true(stats_percentile(v, 0, 50) == 0);
    free(v);
    free(s);
}

static void test_stats_counters(void **state)
{
    (void)state;
    stats_t *st = stats_new(8, 64);
    einet_Answer a;
    float lat[100];
    int n = 0;
    for (int i = 0; i < 100; i++) {
        memset(&a, 0, sizeof a);
        stats_request(st);
        a.status = 1 + i % 6;
        a.exit = a.status == einet_Status_STATUS_REJECTED ? 0 : (uint32_t)(i % 9);
        a.tier = a.exit == 0 ? 0 : 1 + (int)(a.exit - 1) / 3;
        a.class_id = (uint32_t)(i % 10);
        a.has_label = i % 4 != 0;
        a.label = (uint32_t)(i % 5);
        a.latency_us = (uint64_t)(1000 * (i + 1));
        stats_answer(st, &a);
        if (a.status != einet_Status_STATUS_REJECTED)
            lat[n++] = (float)(i + 1);
    }
    stats_bad(st, STATS_SOCK_CLIENTS);
    stats_bad(st, STATS_SOCK_NODES);
    stats_bad(st, STATS_SOCK_NODES);
    for (int i = 0; i < 20; i++)
        stats_fault(st, (uint64_t)i, 3, 0, i == 19 ? "the last one, with a long name that is cut at sixty-three characters" : "f");
    einet_StatsReply r;
    memset(&r, 0, sizeof r);
    stats_fill(st, &r);
    assert_int_equal(r.requests, 100);
    uint64_t sum = 0, labelled = 0, correct = 0, by_exit[9] = {0};
    for (int i = 0; i < 100; i++) {
        int status = 1 + i % 6;
        if (status == einet_Status_STATUS_REJECTED)
            continue;
        int exit = i % 9;
        by_exit[exit]++;
        if (i % 4 != 0) {
            labelled++;
            correct += exit > 0 && i % 10 == i % 5;
        }
    }
    for (int s = 0; s < 7; s++)
        sum += r.by_status[s];
    assert_int_equal(sum, 100);
    assert_int_equal(r.by_status[einet_Status_STATUS_REJECTED], 17);
    for (int e = 0; e < 9; e++)
        assert_int_equal(r.by_exit[e], by_exit[e]);
    assert_int_equal(r.labelled, labelled);
    assert_int_equal(r.correct, correct);
    assert_int_equal(r.bad_messages, 3);
    assert_int_equal(stats_bad_count(st, STATS_SOCK_NODES), 2);
    assert_int_equal(r.faults_seen, 20);
    assert_int_equal(r.faults_count, STATS_FAULTS_KEPT);
    assert_int_equal(r.faults[0].at_us, 4); /* oldest kept first */
    assert_int_equal(strlen(r.faults[15].what), 63);
    /* the window keeps the latest 64 latencies */
    float *w = lat + (n - 64);
    qsort(w, 64, sizeof *w, cmp_float);
    assert_true(fabsf(r.latency_p50_ms - w[31]) < 1e-4f);
    assert_true(fabsf(r.latency_p99_ms - w[63]) < 1e-4f);
    stats_reset(st);
    memset(&r, 0, sizeof r);
    stats_fill(st, &r);
    assert_int_equal(r.requests, 0);
    assert_int_equal(r.faults_count, 0);
    assert_true(r.latency_p95_ms == 0);
    stats_destroy(&st);
    assert_null(st);
}

/* A stop rule's result answers the request `early` at once with that exit, whatever came
 * before it; anything after it is late. A result without `stopped` does not. */
static void test_stopped_answers_early(void **state)
{
    (void)state;
    rec_t *rec = calloc(1, sizeof *rec);
    reqs_t *q = reqs_new(8, 16, on_answer, rec);
    reqs_client_t c = client(7, 3);
    uint64_t id;
    assert_int_equal(reqs_add(q, &c, 100, 0, einet_Status_STATUS_LINK, "", &id), 0);
    einet_ExitResult x = result(1, einet_Tier_TIER_DEVICE, 3, 0);
    x.mflop = 1.17f;
    assert_int_equal(reqs_exit(q, id, &x, 0, 150), REQS_NOTED);
    einet_ExitResult y = result(4, einet_Tier_TIER_EDGE, 2, 0);
    y.stopped = true;
    y.mflop = 20.5f;
    assert_int_equal(reqs_exit(q, id, &y, 1, 400), REQS_ANSWERED);
    assert_int_equal(rec->n, 1);
    assert_int_equal(rec->a[0].status, einet_Status_STATUS_EARLY);
    assert_int_equal(rec->a[0].exit, 4);
    assert_int_equal(rec->a[0].tier, einet_Tier_TIER_EDGE);
    assert_int_equal(rec->a[0].class_id, 2);
    assert_true(rec->a[0].mflop == 20.5f);
    assert_int_equal(rec->a[0].latency_us, 300);
    assert_int_equal(rec->pos[0], 1);
    einet_ExitResult z = result(8, einet_Tier_TIER_CLOUD, 3, 1);
    assert_int_equal(reqs_exit(q, id, &z, 2, 500), REQS_LATE);
    assert_int_equal(rec->n, 1);
    reqs_destroy(&q);
    free(rec);
}

/* `early` answers per exit and tier with their accuracy, and the mean compute. */
static void test_stats_early(void **state)
{
    (void)state;
    stats_t *st = stats_new(8, 64);
    static const struct {
        int status, exit, tier, cls, label;
        float mflop;
    } ans[] = {
        {einet_Status_STATUS_EARLY, 1, einet_Tier_TIER_DEVICE, 4, 4, 1.0f},
        {einet_Status_STATUS_EARLY, 1, einet_Tier_TIER_DEVICE, 4, 5, 1.0f},
        {einet_Status_STATUS_EARLY, 2, einet_Tier_TIER_DEVICE, 1, 1, 10.0f},
        {einet_Status_STATUS_EARLY, 4, einet_Tier_TIER_EDGE, 0, -1, 20.0f},
        {einet_Status_STATUS_EARLY, 7, einet_Tier_TIER_CLOUD, 9, 2, 40.0f},
        {einet_Status_STATUS_COMPLETE, 8, einet_Tier_TIER_CLOUD, 3, 3, 40.0f},
    };
    for (size_t i = 0; i < sizeof ans / sizeof ans[0]; i++) {
        einet_Answer a;
        memset(&a, 0, sizeof a);
        a.status = ans[i].status;
        a.exit = (uint32_t)ans[i].exit;
        a.tier = ans[i].tier;
        a.class_id = (uint32_t)ans[i].cls;
        a.has_label = ans[i].label >= 0;
        a.label = ans[i].label >= 0 ? (uint32_t)ans[i].label : 0;
        a.mflop = ans[i].mflop;
        stats_request(st);
        stats_answer(st, &a);
    }
    einet_StatsReply *r = calloc(1, sizeof *r);
    stats_fill(st, r);
    assert_true(r->by_status_count > einet_Status_STATUS_EARLY);
    assert_int_equal(r->by_status[einet_Status_STATUS_EARLY], 5);
    assert_int_equal(r->labelled_by_status[einet_Status_STATUS_EARLY], 4);
    assert_int_equal(r->correct_by_status[einet_Status_STATUS_EARLY], 2);
    assert_int_equal(r->early_by_exit_count, 9);
    const uint64_t n_exit[9] = {0, 2, 1, 0, 1, 0, 0, 1, 0}, lab_exit[9] = {0, 2, 1, 0, 0, 0, 0, 1, 0};
    const uint64_t ok_exit[9] = {0, 1, 1, 0, 0, 0, 0, 0, 0};
    for (int k = 0; k < 9; k++) {
        assert_int_equal(r->early_by_exit[k], n_exit[k]);
        assert_int_equal(r->early_labelled_by_exit[k], lab_exit[k]);
        assert_int_equal(r->early_correct_by_exit[k], ok_exit[k]);
    }
    assert_int_equal(r->early_by_tier_count, 4);
    assert_int_equal(r->early_by_tier[einet_Tier_TIER_DEVICE], 3);
    assert_int_equal(r->early_by_tier[einet_Tier_TIER_EDGE], 1);
    assert_int_equal(r->early_by_tier[einet_Tier_TIER_CLOUD], 1);
    assert_int_equal(r->early_labelled_by_tier[einet_Tier_TIER_EDGE], 0);
    assert_int_equal(r->early_correct_by_tier[einet_Tier_TIER_DEVICE], 2);
    assert_int_equal(r->early_correct_by_tier[einet_Tier_TIER_CLOUD], 0);
    assert_true(fabsf(r->mflop_mean - 112.0f / 6.0f) < 1e-5f);
    stats_reset(st);
    memset(r, 0, sizeof *r);
    stats_fill(st, r);
    assert_int_equal(r->early_by_exit[1], 0);
    assert_int_equal(r->early_by_tier[einet_Tier_TIER_DEVICE], 0);
    assert_true(r->mflop_mean == 0);
    free(r);
    stats_destroy(&st);
}

/* ---- cluster health ---- */

static einet_Heartbeat hb(int tier, int first, int last, int draining)
{
    einet_Heartbeat h;
    memset(&h, 0, sizeof h);
    h.tier = tier;
    h.first_block = (uint32_t)first;
    h.last_block = (uint32_t)last;
    h.draining = draining;
    return h;
}

static int has_event(const cluster_event_t *ev, int n, cluster_ev_kind_t kind, int pos)
{
    for (int i = 0; i < n; i++)
        if (ev[i].kind == kind && ev[i].pos == pos)
            return 1;
    return 0;
}

static void test_cluster_health(void **state)
{
    (void)state;
    cluster_t c;
    conf_tiers_t t = {3, {1, 2, 3}};
    cluster_event_t ev[6];
    cluster_init(&c, &t, 8, 500000);
    assert_int_equal(cluster_tick(&c, 0, ev), 0);
    assert_int_equal(cluster_broken(&c), 0);
    einet_Heartbeat d = hb(1, 1, 2, 0), e = hb(2, 3, 5, 0), k = hb(3, 6, 8, 0);
    cluster_heartbeat(&c, 0, &d, 1000);
    cluster_heartbeat(&c, 1, &e, 1000);
    cluster_heartbeat(&c, 2, &k, 1000);
    int n = cluster_tick(&c, 1000, ev);
    assert_int_equal(n, 3);
    assert_true(has_event(ev, n, CLUSTER_EV_NODE_UP, 2));
    assert_int_equal(cluster_broken(&c), 1); /* device-edge not reported up yet */
    einet_Fault up = {.link = 1, .clear = true}, up2 = {.link = 2, .clear = true};
    einet_Fault down2 = {.link = 2, .down_ms = 600}, wrong = {.link = 2, .clear = true};
    assert_int_equal(cluster_link_report(&c, 0, &up), 0);
    assert_int_equal(cluster_link_report(&c, 1, &up2), 0);
    assert_int_equal(cluster_link_report(&c, 0, &wrong), EI_E_RANGE);
    assert_int_equal(cluster_link_report(&c, 2, &up2), EI_E_RANGE);
    n = cluster_tick(&c, 1000, ev);
    assert_int_equal(n, 2);
    assert_true(cluster_all_healthy(&c));
    /* the edge reports its link down */
    assert_int_equal(cluster_link_report(&c, 1, &down2), 0);
    n = cluster_tick(&c, 2000, ev);
    assert_int_equal(n, 1);
    assert_true(has_event(ev, n, CLUSTER_EV_LINK_DOWN, 1));
    assert_int_equal(cluster_broken(&c), 2);
    cluster_link_report(&c, 1, &up2);
    assert_int_equal(cluster_tick(&c, 3000, ev), 1);
    /* the cloud goes silent past the timeout; the others keep beating */
    cluster_heartbeat(&c, 0, &d, 400000);
    cluster_heartbeat(&c, 1, &e, 400000);
    n = cluster_tick(&c, 501001, ev);
    assert_int_equal(n, 1);
    assert_true(has_event(ev, n, CLUSTER_EV_NODE_DOWN, 2));
    assert_int_equal(cluster_broken(&c), 2);
    einet_StatsReply r;
    memset(&r, 0, sizeof r);
    cluster_fill(&c, 501001, &r);
    assert_int_equal(r.nodes_count, 3);
    assert_int_equal(r.links_count, 2);
    assert_true(r.nodes[0].healthy && r.nodes[1].healthy && !r.nodes[2].healthy);
    /* a lost node still says when it was last seen (never "no heartbeat yet") */
    assert_true(r.nodes[2].last_seen_us > 500000 && r.nodes[2].last_seen_us <= 500001);
    assert_true(r.links[0].up && r.links[1].up);
    /* it comes back; the device drains; the edge claims the wrong blocks */
    cluster_heartbeat(&c, 2, &k, 501002);
    einet_Heartbeat dd = hb(1, 1, 2, 1), bad = hb(2, 4, 5, 0);
    cluster_heartbeat(&c, 0, &dd, 501002);
    cluster_heartbeat(&c, 1, &bad, 501002);
    n = cluster_tick(&c, 501003, ev);
    assert_true(has_event(ev, n, CLUSTER_EV_NODE_UP, 2));
    assert_true(has_event(ev, n, CLUSTER_EV_NODE_DRAINING, 0));
    assert_true(has_event(ev, n, CLUSTER_EV_NODE_DOWN, 1));
    assert_true(has_event(ev, n, CLUSTER_EV_LINK_DOWN, 1));
    assert_int_equal(cluster_broken(&c), 0);
    assert_false(cluster_all_healthy(&c));
}

static void test_cluster_profile_reports(void **state)
{
    (void)state;
    cluster_t c;
    conf_tiers_t t = {2, {1, 3}};
    cluster_init(&c, &t, 4, 1000);
    assert_int_equal(cluster_pos(&c, 3), 1);
    assert_int_equal(cluster_pos(&c, 2), -1);
    einet_ProfileReport r;
    memset(&r, 0, sizeof r);
    r.tier = 1;
    r.blocks_count = 3;
    r.blocks[0] = (einet_BlockTiming){1, 0.5f, 0.1f, 10};
    r.blocks[1] = (einet_BlockTiming){2, 0.7f, 0.2f, 0};  /* no samples: ignored */
    r.blocks[2] = (einet_BlockTiming){9, 0.7f, 0.2f, 3};  /* beyond the model: ignored */
    r.next_latency_ms = 2.5f;
    r.next_bandwidth_mbps = 100;
    r.next_samples = 4;
    cluster_profile(&c, 0, &r);
    assert_true(cluster_take_changed(&c));
    assert_false(cluster_take_changed(&c));
    assert_true(c.conv_ms[0] == 0.5f && c.samples[0] == 10 && c.samples[1] == 0);
    assert_true(c.node[0].link_latency_ms == 2.5f && c.node[0].link_bw_mbps == 100);
}

/* ---- fault routing, as the coordinator does it ---- */

static void test_fault_routing(void **state)
{
    (void)state;
    const int three[3] = {1, 2, 3}, two[2] = {1, 3};
    ei_err_t err;
    int tier = 0;
    einet_Fault f = {.link = einet_Link_LINK_EDGE_CLOUD, .down_ms = 3000};
    assert_int_equal(fault_target(&f, three, 3, &tier, &err), 0);
    assert_int_equal(tier, einet_Tier_TIER_EDGE);
    f.link = einet_Link_LINK_DEVICE_EDGE;
    assert_int_equal(fault_target(&f, three, 3, &tier, &err), 0);
    assert_int_equal(tier, einet_Tier_TIER_DEVICE);
    assert_int_equal(fault_target(&f, two, 2, &tier, &err), 0); /* device-cloud */
    f.link = einet_Link_LINK_EDGE_CLOUD;
    assert_int_equal(fault_target(&f, two, 2, &tier, &err), EI_E_RANGE);
    assert_non_null(strstr(err.msg, "not in this pipeline"));
    einet_Fault k = {.kill = einet_Tier_TIER_CLOUD};
    assert_int_equal(fault_target(&k, three, 3, &tier, &err), 0);
    assert_int_equal(tier, einet_Tier_TIER_CLOUD);
    k.kill = einet_Tier_TIER_EDGE;
    assert_int_equal(fault_target(&k, two, 2, &tier, &err), EI_E_RANGE);
    einet_Fault both = {.link = 1, .kill = 1}, none = {0};
    assert_int_equal(fault_target(&both, three, 3, &tier, &err), EI_E_FORMAT);
    assert_int_equal(fault_target(&none, three, 3, &tier, &err), EI_E_FORMAT);
}

/* Requests recorded before a restart come back under their own ids, with their deepest
 * result; new ids go on above them; an expiry set later (when the held request is sent)
 * answers it with that status, once. */
static void test_restore_after_restart(void **state)
{
    (void)state;
    rec_t *rec = calloc(1, sizeof *rec);
    reqs_t *q = reqs_new(8, 64, on_answer, rec);
    reqs_set_next_id(q, 1000);
    reqs_client_t c = client(5, 3);
    einet_Answer best;
    memset(&best, 0, sizeof best);
    best.exit = 4;
    best.tier = einet_Tier_TIER_EDGE;
    best.class_id = 3;
    best.confidence = 0.625f;
    assert_int_equal(reqs_restore(q, 990, &c, 100, 0, einet_Status_STATUS_LINK, "", &best), 0);
    assert_int_equal(reqs_restore(q, 995, &c, 100, 0, einet_Status_STATUS_LINK, "", NULL), 0);
    /* Its slot taken, or an id of 0: refused. */
    assert_int_equal(reqs_restore(q, 990, &c, 100, 0, einet_Status_STATUS_LINK, "", NULL),
                     EI_E_RANGE);
    assert_int_equal(reqs_restore(q, 0, &c, 100, 0, einet_Status_STATUS_LINK, "", NULL),
                     EI_E_RANGE);
    uint64_t id;
    assert_int_equal(reqs_add(q, &c, 200, 0, einet_Status_STATUS_LINK, "", &id), 0);
    assert_int_equal(id, 1000);
    assert_true(reqs_is_pending(q, 990) && reqs_is_pending(q, 995));
    assert_false(reqs_is_pending(q, 991));
    /* Held without an expiry until sent; then its deadline answers it. */
    assert_int_equal(reqs_next_expiry(q), 0);
    assert_int_equal(reqs_set_expiry(q, 990, 5000, einet_Status_STATUS_DEADLINE, "late"), 1);
    assert_int_equal(reqs_set_expiry(q, 991, 5000, einet_Status_STATUS_DEADLINE, "late"), 0);
    assert_int_equal(reqs_next_expiry(q), 5000);
    assert_int_equal(reqs_expire(q, 5000), 1);
    assert_int_equal(rec->n, 1);
    const einet_Answer *a = &rec->a[0];
    assert_int_equal(a->request_id, 990);
    assert_int_equal(a->status, einet_Status_STATUS_DEADLINE);
    assert_string_equal(a->reason, "late");
    assert_int_equal(a->exit, 4);
    assert_int_equal(a->class_id, 3);
    assert_int_equal(a->latency_us, 4900);
    /* A deeper result for the other restored one still counts. */
    einet_ExitResult x = result(8, einet_Tier_TIER_CLOUD, 2, 1);
    assert_int_equal(reqs_exit(q, 995, &x, 2, 6000), REQS_ANSWERED);
    assert_int_equal(rec->a[1].status, einet_Status_STATUS_COMPLETE);
    assert_int_equal(reqs_expire(q, 1u << 30), 0);
    assert_int_equal(rec->per_id[990] + rec->per_id[995], 2);
    reqs_destroy(&q);
    free(rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_ordering_one_answer),
        cmocka_unit_test(test_random_interleavings),
        cmocka_unit_test(test_expiry_order_and_deepest),
        cmocka_unit_test(test_ids_skip_a_held_slot),
        cmocka_unit_test(test_fail_node_and_orphan_expiry),
        cmocka_unit_test(test_resend_keeps_until_dropped),
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_restore_after_restart),
        cmocka_unit_test(test_percentiles_vs_sorted),
        cmocka_unit_test(test_stats_counters),
        cmocka_unit_test(test_stopped_answers_early),
        cmocka_unit_test(test_stats_early),
        cmocka_unit_test(test_cluster_health),
        cmocka_unit_test(test_cluster_profile_reports),
        cmocka_unit_test(test_fault_routing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
