/* Replica routing (runtime/route.h) against a brute-force reference, and the failover
 * ledger (runtime/handoff.h) driven through seeded kills against a plain model: every
 * request taken over exactly once, never sent to a replica known dead, none lost. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/ei.h"
#include "runtime/handoff.h"
#include "runtime/route.h"

static void test_pick_cases(void **state)
{
    (void)state;
    route_replica_t r[3] = {{1, 4, 2.0}, {1, 1, 2.0}, {1, 0, 10.0}};
    /* waits 10, 4, 10 */
    assert_int_equal(route_pick(r, 3, 0), 1);
    r[1].alive = 0; /* never one known dead, however idle */
    r[1].queued = 0;
    assert_int_equal(route_pick(r, 3, 0), 0); /* 10 = 10: the first from start */
    assert_int_equal(route_pick(r, 3, 2), 2);
    r[0].alive = r[2].alive = 0;
    assert_int_equal(route_pick(r, 3, 0), -1);
    assert_int_equal(route_pick(r, 0, 0), -1);
    /* an unmeasured replica counts as the mean of the measured: (0+1) x 3 < (1+1) x 2 */
    route_replica_t u[3] = {{1, 1, 2.0}, {1, 0, 0.0}, {1, 5, 4.0}};
    assert_int_equal(route_pick(u, 3, 0), 1);
    assert_true(route_wait_ms(&u[1], 3.0) == 3.0);
    /* equal replicas share: round robin over the start */
    route_replica_t e[2] = {{1, 0, 1.0}, {1, 0, 1.0}};
    assert_int_equal(route_pick(e, 2, 0), 0);
    assert_int_equal(route_pick(e, 2, 1), 1);
}

static void test_pick_reference(void **state)
{
    (void)state;
    ei_rng_t rng;
    ei_rng_seed(&rng, 11);
    for (int t = 0; t < 20000; t++) {
        int n = 1 + (int)ei_rng_below(&rng, 8);
        route_replica_t r[8];
        double sum = 0;
        int m = 0;
        for (int i = 0; i < n; i++) {
            r[i].alive = ei_rng_below(&rng, 4) != 0;
            r[i].queued = ei_rng_below(&rng, 6);
            r[i].ms_per_req = ei_rng_below(&rng, 5) == 0 ? 0 : 0.5 + ei_rng_below(&rng, 8);
            if (r[i].alive && r[i].ms_per_req > 0) {
                sum += r[i].ms_per_req;
                m++;
            }
        }
        unsigned start = ei_rng_below(&rng, 100);
        double mean = m ? sum / m : 1.0;
        int want = -1;
        double best = 0;
        for (int j = 0; j < n; j++) { /* reference: scan from start, strict improvement */
            int i = (int)((start + (unsigned)j) % (unsigned)n);
            double ms = r[i].ms_per_req > 0 ? r[i].ms_per_req : mean;
            double w = (r[i].queued + 1.0) * ms;
            if (r[i].alive && (want < 0 || w < best)) {
                want = i;
                best = w;
            }
        }
        assert_int_equal(route_pick(r, n, start), want);
    }
}

static int keep(handoff_t *h, uint64_t id, int replica, uint64_t now, uint64_t deadline)
{
    void *frame = malloc(16);
    float *tensor = malloc(8 * sizeof *tensor);
    assert_non_null(frame);
    assert_non_null(tensor);
    memset(frame, (int)(id & 0xff), 16);
    int rc = handoff_keep(h, id, replica, now, deadline, &frame, 16, &tensor, 8 * sizeof(float));
    if (rc == 0) {
        assert_null(frame);
        assert_null(tensor);
    }
    free(frame);
    free(tensor);
    return rc;
}

static void test_handoff_basics(void **state)
{
    (void)state;
    handoff_t *h = handoff_new(3);
    assert_non_null(h);
    assert_int_equal(keep(h, 1, 0, 100, 0), 0);
    assert_int_equal(keep(h, 2, 1, 110, 500), 0);
    assert_int_equal(keep(h, 2, 0, 120, 0), EI_E_INVAL); /* held already: kept once */
    assert_int_equal(keep(h, 3, 0, 130, 0), 0);
    assert_int_equal(keep(h, 4, 1, 140, 0), EI_E_RANGE); /* full */
    assert_int_equal(handoff_count(h, 0), 2);
    assert_int_equal(handoff_count(h, 1), 1);
    uint64_t ids[4];
    assert_int_equal(handoff_lost(h, 0, ids, 4), 2);
    assert_true(ids[0] == 1 && ids[1] == 3); /* oldest first */
    assert_int_equal(handoff_moved(h, 1, 1, 200), 0);
    const handoff_entry_t *e = handoff_get(h, 1);
    assert_non_null(e);
    assert_int_equal(e->replica, 1);
    assert_int_equal(e->resent, 1);
    assert_true(e->sent_us == 200);
    assert_int_equal(((const unsigned char *)e->frame)[0], 1); /* the bytes as sent */
    assert_int_equal(handoff_moved(h, 9, 1, 200), EI_E_NOTFOUND);
    assert_int_equal(handoff_expired(h, 499, ids, 4), 0);
    assert_int_equal(handoff_expired(h, 500, ids, 4), 1);
    assert_true(ids[0] == 2);
    assert_int_equal(handoff_taken(h, 2), 1);
    assert_int_equal(handoff_taken(h, 2), 0); /* a repeated taken changes nothing */
    assert_int_equal(handoff_total(h), 2);
    handoff_destroy(&h); /* frees what is still held (ASan checks) */
    assert_null(h);
    handoff_destroy(&h);
}

/* A sender with R next-tier replicas, requests sent by route_pick on its own ledger's
 * counts; replicas die and come back at random (one always alive); a dead replica's
 * requests are resent. A live replica takes each request it holds over after a random
 * time; a dead one loses everything it held. Each request must be taken over exactly once
 * and never be sent to a replica that was dead when sent. */
#define SIM_REQS 5000
#define SIM_R 3

static void test_failover_sim(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 5; seed++) {
        ei_rng_t rng;
        ei_rng_seed(&rng, seed);
        handoff_t *h = handoff_new(64);
        assert_non_null(h);
        int alive[SIM_R] = {1, 1, 1};
        static uint8_t taken[SIM_REQS + 1];
        memset(taken, 0, sizeof taken);
        uint64_t next = 1, now = 0, resent = 0;
        unsigned rr = 0;
        while (next <= SIM_REQS || handoff_total(h) > 0) {
            now += 10;
            int ev = (int)ei_rng_below(&rng, 100);
            if (ev < 3) { /* a kill, leaving one alive; its requests move */
                int r = (int)ei_rng_below(&rng, SIM_R), up = 0;
                for (int i = 0; i < SIM_R; i++)
                    up += alive[i];
                if (alive[r] && up > 1) {
                    alive[r] = 0;
                    uint64_t ids[64];
                    int k = handoff_lost(h, r, ids, 64);
                    for (int i = 0; i < k; i++) {
                        route_replica_t rep[SIM_R];
                        for (int j = 0; j < SIM_R; j++)
                            rep[j] = (route_replica_t){alive[j], handoff_count(h, j), 1.0};
                        int to = route_pick(rep, SIM_R, rr++);
                        assert_true(to >= 0 && alive[to]);
                        assert_int_equal(handoff_moved(h, ids[i], to, now), 0);
                        resent++;
                    }
                    assert_int_equal(handoff_count(h, r), 0);
                }
            } else if (ev < 6) { /* a restart */
                alive[ei_rng_below(&rng, SIM_R)] = 1;
            } else if (ev < 50 && next <= SIM_REQS) { /* send the next request */
                route_replica_t rep[SIM_R];
                for (int j = 0; j < SIM_R; j++)
                    rep[j] = (route_replica_t){alive[j], handoff_count(h, j), 1.0 + j};
                int to = route_pick(rep, SIM_R, rr++);
                assert_true(to >= 0 && alive[to]);
                if (keep(h, next, to, now, 0) == 0)
                    next++;
            } else { /* some replica takes over the oldest request it holds */
                int r = (int)ei_rng_below(&rng, SIM_R);
                uint64_t id;
                if (alive[r] && handoff_lost(h, r, &id, 1) == 1) {
                    assert_int_equal(handoff_taken(h, id), 1);
                    assert_int_equal(taken[id], 0);
                    taken[id] = 1;
                }
            }
        }
        for (uint64_t id = 1; id <= SIM_REQS; id++)
            assert_int_equal(taken[id], 1);
        assert_true(resent > 0); /* the kills did move requests */
        handoff_destroy(&h);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pick_cases),
        cmocka_unit_test(test_pick_reference),
        cmocka_unit_test(test_handoff_basics),
        cmocka_unit_test(test_failover_sim),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
