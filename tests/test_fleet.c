/* The coordinator's membership of a fleet (coordinator/fleet.h): unique names, joining and
 * leaving at run time, health by heartbeat, and the device pick (least loaded, never one
 * known down) against a brute-force reference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/ei.h"
#include "coordinator/fleet.h"

enum { DEVICE = 1, EDGE = 2, CLOUD = 3 };
static const int tiers3[3] = {DEVICE, EDGE, CLOUD};

static int has(const fleet_event_t *ev, int n, fleet_ev_kind_t kind, const char *name)
{
    for (int i = 0; i < n; i++)
        if (ev[i].kind == kind && strcmp(ev[i].name, name) == 0)
            return 1;
    return 0;
}

static void test_names(void **state)
{
    (void)state;
    fleet_t f;
    fleet_init(&f, tiers3, 3, 500, 5000);
    int a = fleet_heartbeat(&f, "dev-a", DEVICE, 0, 0, 10);
    int b = fleet_heartbeat(&f, "dev-b", DEVICE, 0, 0, 10);
    assert_true(a >= 0 && b >= 0 && a != b);
    assert_int_equal(fleet_heartbeat(&f, "dev-a", DEVICE, 3, 0, 20), a); /* the same node */
    assert_int_equal(f.node[a].in_flight, 3);
    assert_int_equal(fleet_heartbeat(&f, "dev-a", EDGE, 0, 0, 20), EI_E_INVAL); /* unique */
    assert_int_equal(fleet_heartbeat(&f, "", EDGE, 0, 0, 20), EI_E_INVAL);
    char longname[FLEET_NAME_MAX + 1];
    memset(longname, 'x', FLEET_NAME_MAX);
    longname[FLEET_NAME_MAX] = 0;
    assert_int_equal(fleet_heartbeat(&f, longname, EDGE, 0, 0, 20), EI_E_INVAL);
    const int two[2] = {DEVICE, CLOUD};
    fleet_t g;
    fleet_init(&g, two, 2, 500, 5000);
    assert_int_equal(fleet_heartbeat(&g, "edge-1", EDGE, 0, 0, 0), EI_E_INVAL); /* no edge tier */
    char name[16];
    for (int i = 0; i < FLEET_MAX_NODES; i++) {
        snprintf(name, sizeof name, "c%d", i);
        assert_true(fleet_heartbeat(&g, name, CLOUD, 0, 0, 0) >= 0);
    }
    assert_int_equal(fleet_heartbeat(&g, "one-more", CLOUD, 0, 0, 0), EI_E_RANGE);
    assert_int_equal(fleet_find(&g, "c7") >= 0, 1);
    assert_int_equal(fleet_find(&g, "nobody"), -1);
}

static void test_join_leave(void **state)
{
    (void)state;
    fleet_t f;
    fleet_event_t ev[FLEET_MAX_NODES];
    fleet_init(&f, tiers3, 3, 500, 5000);
    assert_int_equal(fleet_tick(&f, 0, ev, FLEET_MAX_NODES), 0);
    assert_true(fleet_heartbeat(&f, "edge-1", EDGE, 0, 0, 100) >= 0);
    assert_true(fleet_heartbeat(&f, "edge-2", EDGE, 0, 0, 100) >= 0);
    int n = fleet_tick(&f, 100, ev, FLEET_MAX_NODES);
    assert_int_equal(n, 2);
    assert_true(has(ev, n, FLEET_EV_UP, "edge-1") && has(ev, n, FLEET_EV_UP, "edge-2"));
    assert_int_equal(ev[0].pos, 1);
    assert_int_equal(fleet_up(&f, 1), 2);
    assert_int_equal(fleet_up(&f, 0), 0);
    /* edge-2 drains, edge-1 keeps talking; edge-2 then goes silent */
    assert_true(fleet_heartbeat(&f, "edge-2", EDGE, 0, 1, 300) >= 0);
    assert_true(fleet_heartbeat(&f, "edge-1", EDGE, 0, 0, 300) >= 0);
    n = fleet_tick(&f, 300, ev, FLEET_MAX_NODES);
    assert_int_equal(n, 1);
    assert_true(has(ev, n, FLEET_EV_DRAINING, "edge-2"));
    assert_int_equal(fleet_up(&f, 1), 1);
    assert_true(fleet_heartbeat(&f, "edge-1", EDGE, 0, 0, 800) >= 0);
    n = fleet_tick(&f, 801, ev, FLEET_MAX_NODES); /* 501 us silent > 500 */
    assert_int_equal(n, 1);
    assert_true(has(ev, n, FLEET_EV_DOWN, "edge-2"));
    assert_int_equal(fleet_tick(&f, 802, ev, FLEET_MAX_NODES), 0); /* no change, no event */
    n = fleet_tick(&f, 5301, ev, FLEET_MAX_NODES); /* edge-2 forgotten, edge-1 down */
    assert_int_equal(n, 2);
    assert_true(has(ev, n, FLEET_EV_FORGOTTEN, "edge-2") && has(ev, n, FLEET_EV_DOWN, "edge-1"));
    assert_int_equal(fleet_find(&f, "edge-2"), -1);
    /* a new replica joins at run time, and edge-1 comes back */
    assert_true(fleet_heartbeat(&f, "edge-3", EDGE, 0, 0, 5400) >= 0);
    assert_true(fleet_heartbeat(&f, "edge-1", EDGE, 0, 0, 5400) >= 0);
    n = fleet_tick(&f, 5400, ev, FLEET_MAX_NODES);
    assert_int_equal(n, 2);
    assert_true(has(ev, n, FLEET_EV_UP, "edge-3") && has(ev, n, FLEET_EV_UP, "edge-1"));
    assert_int_equal(fleet_up(&f, 1), 2);
}

static void test_pick_rotates(void **state)
{
    (void)state;
    fleet_t f;
    fleet_event_t ev[FLEET_MAX_NODES];
    fleet_init(&f, tiers3, 3, 500, 5000);
    const char *names[4] = {"d0", "d1", "d2", "d3"};
    int id[4], count[FLEET_MAX_NODES] = {0};
    assert_true(fleet_heartbeat(&f, "e0", EDGE, 0, 0, 0) >= 0); /* another tier: never picked */
    for (int i = 0; i < 4; i++)
        assert_true((id[i] = fleet_heartbeat(&f, names[i], DEVICE, 0, 0, 0)) >= 0);
    assert_int_equal(fleet_pick(&f, 0), -1); /* none up before the tick */
    fleet_tick(&f, 0, ev, FLEET_MAX_NODES);
    for (int k = 0; k < 1000; k++) {
        int p = fleet_pick(&f, 0);
        assert_true(p >= 0);
        count[p]++;
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(count[id[i]], 250); /* equal replicas share evenly */
    /* the least loaded wins; sent counts until done */
    assert_true(fleet_heartbeat(&f, "d0", DEVICE, 5, 0, 10) >= 0);
    assert_true(fleet_heartbeat(&f, "d1", DEVICE, 5, 0, 10) >= 0);
    assert_true(fleet_heartbeat(&f, "d2", DEVICE, 1, 0, 10) >= 0);
    assert_true(fleet_heartbeat(&f, "d3", DEVICE, 5, 0, 10) >= 0);
    assert_int_equal(fleet_pick(&f, 0), id[2]);
    for (int k = 0; k < 4; k++)
        fleet_sent(&f, id[2]); /* 1 + 4 = 5: equal with the others now */
    assert_int_equal(f.node[id[2]].sent, 4);
    fleet_sent(&f, id[2]);
    assert_true(fleet_pick(&f, 0) != id[2]);
    fleet_done(&f, id[2]);
    fleet_done(&f, id[2]);
    assert_int_equal(f.node[id[2]].sent, 3);
    assert_int_equal(fleet_pick(&f, 0), id[2]);
    /* the least loaded but excepted (it lost what it held): another; none but it: none */
    int other = fleet_pick_other(&f, 0, id[2]);
    assert_true(other >= 0 && other != id[2] && f.node[other].pos == 0);
    for (int i = 0; i < 4; i++)
        if (i != 2)
            f.node[id[i]].link_down = 1;
    assert_int_equal(fleet_pick_other(&f, 0, id[2]), -1);
    assert_int_equal(fleet_pick(&f, 0), id[2]);
}

static void test_pick_reference(void **state)
{
    (void)state;
    ei_rng_t rng;
    ei_rng_seed(&rng, 7);
    fleet_t f;
    fleet_event_t ev[FLEET_MAX_NODES];
    fleet_init(&f, tiers3, 3, 1000, 20000);
    uint64_t now = 0;
    int picks = 0, nones = 0;
    char name[16];
    for (int t = 0; t < 20000; t++) {
        now += 50;
        int r = (int)ei_rng_below(&rng, 10);
        if (r < 5) { /* one of 8 devices or 3 edges heartbeats */
            int d = (int)ei_rng_below(&rng, 11);
            snprintf(name, sizeof name, "%s%d", d < 8 ? "dev" : "edge", d);
            int i = fleet_heartbeat(&f, name, d < 8 ? DEVICE : EDGE, ei_rng_below(&rng, 6),
                                    ei_rng_below(&rng, 10) == 0, now);
            assert_true(i >= 0);
        } else if (r < 7) {
            fleet_tick(&f, now, ev, FLEET_MAX_NODES);
        } else {
            int pos = (int)ei_rng_below(&rng, 2);
            int p = fleet_pick(&f, pos);
            uint32_t best = UINT32_MAX;
            for (int i = 0; i < FLEET_MAX_NODES; i++) {
                const fleet_node_t *n = &f.node[i];
                if (n->used && n->pos == pos && n->state == FLEET_UP && n->in_flight + n->sent < best)
                    best = n->in_flight + n->sent;
            }
            if (best == UINT32_MAX) {
                assert_int_equal(p, -1);
                nones++;
            } else {
                assert_true(p >= 0);
                assert_int_equal(f.node[p].state, FLEET_UP); /* never one known down */
                assert_int_equal(f.node[p].pos, pos);
                assert_int_equal(f.node[p].in_flight + f.node[p].sent, best);
                fleet_sent(&f, p);
                picks++;
            }
        }
    }
    assert_true(picks > 1000 && nones > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_join_leave),
        cmocka_unit_test(test_pick_rotates),
        cmocka_unit_test(test_pick_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
