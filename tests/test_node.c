/* Tests of einet-node's modules: the link state machine and its estimates, fault
 * injection (commands and verdicts), replanning with planner offsets (against the planner
 * called by hand), exit scores; and a whole pipeline in one process: a coordinator and two
 * tier nodes on inproc sockets of one loop, driven by a client socket, checking that the
 * answers equal the single-process forward, that a cut link yields `link` answers and a
 * restored one complete answers again, and that a coordinator stopping answers every
 * request it holds - each request exactly once. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <pb_encode.h>
#include <zmq.h>

#include "coordinator/coord.h"
#include "nn/ee.h"
#include "nn/model.h"
#include "runtime/fault.h"
#include "node/link.h"
#include "node/node.h"
#include "runtime/replan.h"
#include "runtime/scores.h"
#include "wire/conf.h"
#include "wire/wire.h"
#include "test_util.h"

/* A private scratch directory (mkdtemp, 0700) for the files the tests write: no test writes
 * a predictable /tmp path. Removed at the end. */
static char g_scratch[] = "/tmp/einet-test-node-XXXXXX";

/* ---- link ---- */

static void test_link_state(void **state)
{
    (void)state;
    link_state_t l;
    link_init(&l, 500000, 1000);
    assert_false(l.up);
    assert_int_equal(link_tick(&l, 900000), 0); /* down already: no change */
    assert_int_equal(link_on_reply(&l, 1, 400, 1000000), 1);
    assert_true(l.up);
    assert_int_equal(link_on_reply(&l, 2, 300, 1100000), 0);
    assert_true(fabs(link_latency_ms(&l) - 0.15) < 1e-9); /* half the smallest round trip */
    assert_int_equal(link_tick(&l, 1600000), 0);          /* 500 ms: not yet */
    assert_int_equal(link_tick(&l, 1600001), 1);          /* silent past the timeout */
    assert_false(l.up);
    assert_int_equal(link_silent_ms(&l, 1700000), 600);
    assert_int_equal(link_on_reply(&l, 3, 300, 1700000), 1);
    assert_int_equal(link_on_send_fail(&l, 1700001), 1);
    assert_int_equal(link_on_send_fail(&l, 1700002), 0);
    assert_false(l.up);
}

static void test_link_bandwidth_probe(void **state)
{
    (void)state;
    link_state_t l;
    link_init(&l, 500000, 0);
    for (uint64_t s = 1; s <= 8; s++)
        link_on_reply(&l, s, 1000, s * 100);
    /* 100 kB behind heartbeat 9: its round trip is 1000 us longer: 800 Mbit/s */
    link_probe(&l, 9, 100000);
    link_probe(&l, 10, 1); /* one probe at a time */
    link_on_reply(&l, 9, 2000, 1000);
    assert_true(fabs(l.bw_mbps - 800.0) < 1e-6);
    assert_int_equal(l.bw_samples, 1);
    assert_int_equal(l.rtt_samples, 8); /* the probe is not a latency sample */
    assert_true(fabs(link_latency_ms(&l) - 0.5) < 1e-9);
    /* an excess below the noise floor measures nothing */
    link_probe(&l, 11, 100000);
    link_on_reply(&l, 11, 1010, 1100);
    assert_int_equal(l.bw_samples, 1);
}

/* ---- faults ---- */

static void test_fault_commands(void **state)
{
    (void)state;
    fault_state_t f;
    char text[128];
    fault_init(&f, 1);
    assert_int_equal(fault_deliver_at(&f, FAULT_OUT, 10), 10);
    assert_false(fault_active(&f, 0));
    fault_describe(&f, 0, text, sizeof text);
    assert_string_equal(text, "none");
    /* down 3 s: everything waits for the end of the window, then passes */
    einet_Fault down = {.link = 2, .down_ms = 3000};
    fault_apply(&f, &down, 1000000);
    assert_int_equal(fault_deliver_at(&f, FAULT_OUT, 1000000), 4000000);
    assert_int_equal(fault_deliver_at(&f, FAULT_IN, 3999999), 4000000);
    fault_describe(&f, 2000000, text, sizeof text);
    assert_string_equal(text, "down 2000 ms more");
    assert_int_equal(fault_deliver_at(&f, FAULT_OUT, 4000000), 4000000);
    /* delay: constant lateness */
    einet_Fault delay = {.link = 2, .delay_ms = 20};
    fault_apply(&f, &delay, 5000000);
    assert_int_equal(fault_deliver_at(&f, FAULT_OUT, 5000000), 5020000);
    /* loss 25%: f lost transmissions cost 200 (2^f - 1) ms, f geometric */
    einet_Fault loss = {.link = 2, .loss_pct = 25};
    fault_apply(&f, &loss, 5000000);
    int late[4] = {0};
    for (int i = 0; i < 20000; i++) {
        fault_release(&f); /* each on its own, no head-of-line blocking */
        uint64_t at = fault_deliver_at(&f, FAULT_OUT, 6000000) - 6000000 - 20000;
        for (int l = 0; l < 4; l++)
            late[l] += at == (uint64_t)FAULT_RTO_US * ((1u << l) - 1);
    }
    assert_true(late[0] > 14600 && late[0] < 15400); /* 75% */
    assert_true(late[1] > 3450 && late[1] < 4050);   /* 18.75% */
    assert_true(late[2] > 750 && late[2] < 1120);    /* 4.7% */
    fault_describe(&f, 5000000, text, sizeof text);
    assert_string_equal(text, "delay 20 ms, loss 25%");
    /* in order within a direction: never before the previous one */
    fault_release(&f);
    uint64_t prev = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t at = fault_deliver_at(&f, FAULT_OUT, 7000000 + (uint64_t)i);
        assert_true(at >= prev);
        prev = at;
    }
    /* clear restores and lets the order restart */
    einet_Fault clear = {.link = 2, .clear = true};
    fault_apply(&f, &clear, 8000000);
    assert_false(fault_active(&f, 8000000));
    assert_int_equal(fault_deliver_at(&f, FAULT_OUT, 8000000), 8000000);
    /* 100% loss: never delivered, nor anything behind it, until the link is lost */
    einet_Fault all = {.link = 2, .clear = true, .loss_pct = 200};
    fault_apply(&f, &all, 9000000);
    assert_true(f.loss_pct == 100); /* clamped */
    assert_true(fault_deliver_at(&f, FAULT_IN, 9000000) == FAULT_NEVER);
    fault_apply(&f, &clear, 9500000);
    fault_lost(&f);
    assert_int_equal(fault_deliver_at(&f, FAULT_IN, 9600000), 9600000);
}

/* ---- replanning ---- */

static planner_t *toy_planner(int n)
{
    planner_profile_t p;
    planner_profile_init(&p, n);
    for (int k = 0; k < n; k++) {
        p.conv_ms[k] = 1 + k % 3;
        p.branch_ms[k] = 0.5 + 0.25 * (k % 2);
        p.result_ms[k] = 0.2;
    }
    p.link_ms[2] = 3; /* a tier boundary after block 3 */
    planner_dist_t d = {PLANNER_DIST_UNIFORM, 0.5, 0.25};
    ei_err_t err;
    planner_t *pl = planner_new(&p, &d, &err);
    assert_non_null(pl);
    return pl;
}

static void test_replan_matches_planner(void **state)
{
    (void)state;
    const int n = 8;
    planner_t *pl = toy_planner(n);
    double scores[8] = {0.3, 0.45, 0.5, 0.62, 0.66, 0.7, 0.72, 0.8};
    planner_search_t s;
    replan_search_init(&s, CONF_SEARCH_ENUM, 100, 1);
    assert_int_equal(s.kind, PLANNER_SEARCH_ENUM);
    ei_err_t err;
    uint8_t plan[8] = {1, 0, 1, 1, 0, 1, 0, 1};
    /* exit 1 arrived long ago, exit 3 is on its way */
    replan_exit_t seen[2] = {{1, 0.5}, {3, 6.2}};
    uint8_t got[8];
    memcpy(got, plan, sizeof got);
    assert_int_equal(replan_after(pl, &s, scores, got, 3, 6.0, seen, 2, &err), 1);
    assert_memory_equal(got, plan, 3); /* spent bits kept */
    planner_offset_t off;
    planner_offset_init(&off);
    off.x = 3;
    off.t0_ms = 6.0;
    off.c0 = scores[0];
    off.n_pending = 1;
    off.pending_ms[0] = 6.2;
    off.pending_score[0] = scores[2];
    memcpy(off.spent, plan, 3);
    planner_result_t res;
    planner_search_t e;
    planner_search_init(&e);
    e.kind = PLANNER_SEARCH_ENUM;
    assert_int_equal(planner_search(pl, &e, scores, &off, &res, &err), 0);
    assert_memory_equal(got, res.plan, n);
    assert_true(fabs(planner_expect(pl, scores, got, &off) - res.expectation) < 1e-12);
    /* nothing to plan: past the horizon, or after the last block */
    memcpy(got, plan, sizeof got);
    assert_int_equal(replan_after(pl, &s, scores, got, 3, 1e6, seen, 2, &err), 0);
    assert_int_equal(replan_after(pl, &s, scores, got, n, 1.0, seen, 2, &err), 0);
    assert_memory_equal(got, plan, n);
    /* the initial plan is the planner's own */
    assert_int_equal(replan_initial(pl, &s, scores, got, &err), 1);
    assert_int_equal(planner_search(pl, &e, scores, NULL, &res, &err), 0);
    assert_memory_equal(got, res.plan, n);
    /* hybrid's m is clamped to the free bits */
    replan_search_init(&s, CONF_SEARCH_HYBRID, 100, 1);
    memcpy(got, plan, sizeof got);
    assert_int_equal(replan_after(pl, &s, scores, got, 6, 10.0, seen, 2, &err), 1);
    planner_destroy(&pl);
}

static void test_scores(void **state)
{
    (void)state;
    scores_t s;
    scores_prior(&s, 4, 5);
    double out[4], ref[4];
    scores_for(&s, NULL, 0, 0, out);
    for (int k = 0; k < 4; k++) {
        assert_true(out[k] > 0 && out[k] <= 1);
        assert_true(k == 0 || out[k] > out[k - 1]);
    }
    ei_err_t err;
    assert_true(scores_from_validation(&s, "/nonexistent/model.safetensors", NULL, 10, &err) < 0);
    char path[128];
    scores_profile_path("/a/b/m.safetensors", path, sizeof path);
    assert_string_equal(path, "/a/b/m.profile/cs-val.safetensors");
    /* with a predictor: what predictor_predict gives for the same evidence */
    predictor_t *p = predictor_new(PREDICTOR_CORRECTNESS, 4, 5, 8, 8, 3, &err);
    assert_non_null(p);
    snprintf(path, sizeof path, "%s/pred.safetensors", g_scratch);
    assert_int_equal(predictor_save(p, path, "toy", NULL, &err), 0);
    assert_int_equal(scores_load_predictor(&s, path, &err), 0);
    scores_seen_t seen[2] = {{1, 0.6f, 2, 5, {0.1f, 0.1f, 0.6f, 0.1f, 0.1f}},
                             {2, 0.5f, 0, 5, {0.5f, 0.2f, 0.1f, 0.1f, 0.1f}}};
    scores_for(&s, seen, 2, 2, out);
    float probs[20] = {0.1f, 0.1f, 0.6f, 0.1f, 0.1f, 0.5f, 0.2f, 0.1f, 0.1f, 0.1f};
    uint8_t executed[4] = {1, 1, 0, 0};
    predictor_predict(p, probs, executed, 2, ref);
    for (int k = 0; k < 4; k++)
        assert_true(out[k] == ref[k]);
    scores_t wrong;
    scores_prior(&wrong, 5, 5);
    assert_int_equal(scores_load_predictor(&wrong, path, &err), EI_E_SHAPE);
    assert_non_null(strstr(err.msg, "4 exits and 5 classes"));
    scores_release(&s);
    assert_null(s.pred);
    predictor_destroy(&p);
    unlink(path);
}

/* ---- a pipeline in one process ---- */

#define PIPE_N 4
#define PIPE_BATCH 20

static const char *const toy_arch =
    "{\"name\": \"toy\", \"input\": [1, 8, 8], \"classes\": 5, \"blocks\": ["
    "{\"conv\": [{\"type\": \"conv\", \"out\": 4, \"k\": 3, \"pad\": 1}, {\"type\": \"relu\"}],"
    " \"branch\": [{\"type\": \"flatten\"}, {\"type\": \"dense\", \"out\": 5}]},"
    "{\"conv\": [{\"type\": \"conv\", \"out\": 6, \"k\": 3, \"pad\": 1}, {\"type\": \"relu\"},"
    " {\"type\": \"maxpool\", \"k\": 2}],"
    " \"branch\": [{\"type\": \"flatten\"}, {\"type\": \"dense\", \"out\": 5}]},"
    "{\"conv\": [{\"type\": \"conv\", \"out\": 6, \"k\": 3, \"pad\": 1}, {\"type\": \"bn\"},"
    " {\"type\": \"relu\"}],"
    " \"branch\": [{\"type\": \"gap\"}, {\"type\": \"dense\", \"out\": 5}]},"
    "{\"conv\": [{\"type\": \"conv\", \"out\": 8, \"k\": 3, \"pad\": 1}, {\"type\": \"relu\"}],"
    " \"branch\": [{\"type\": \"flatten\"}, {\"type\": \"dense\", \"out\": 5}]}]}";

typedef struct pipe {
    uv_loop_t loop;
    void *zctx;
    coord_t *coord;
    node_t *device, *edge;
    xport_t *client;
    uv_timer_t timer;
    int phase, healthy, link_down, acked, want_nodes;
    uint64_t accepted; /* requests the coordinator has read, from its last stats reply */
    double give_up;    /* ei_now() past which the scenario hangs */
    uint64_t seq, sent, first_id;
    int answers[5 * PIPE_BATCH + 1]; /* per client_id */
    uint64_t acked_id[5 * PIPE_BATCH + 1]; /* the id of its `accepted` */
    int status[5 * PIPE_BATCH + 1];
    uint32_t cls[5 * PIPE_BATCH + 1], exit_of[5 * PIPE_BATCH + 1];
    float conf[5 * PIPE_BATCH + 1];
    int got, errors;
    float images[5 * PIPE_BATCH + 1][64];
} pipe_t;

/* The pipeline's timeouts. Nothing below waits for a time to pass: each step waits for the
 * state it needs (healthy, link down, requests read) as the coordinator reports it, so the
 * scenario is the same on a fast machine and on a loaded one. The heartbeat timeout only
 * has to be longer than any stall of this process (a loaded machine, a sanitizer build);
 * the cut is as long as the test, so only the heartbeat timeout ends it. */
#define PIPE_HB_MS 20
#define PIPE_HB_TIMEOUT_MS 2000
#define PIPE_CUT_MS 600000
#define PIPE_GIVE_UP_S 120 /* a hang guard only, far beyond any healthy run */
static void send_request(pipe_t *p, uint64_t cid)
{
    einet_Envelope env;
    ei_err_t err;
    wire_env_init(&env, einet_Envelope_request_tag);
    env.seq = ++p->seq;
    env.body.request.client_id = cid;
    const uint32_t shape[4] = {1, 1, 8, 8};
    wire_meta_set(&env.body.request.input, &env.body.request.has_input, shape, 4);
    wire_payload_t t = {p->images[cid], 64, NULL, NULL};
    assert_int_equal(wire_send(p->client, NULL, &env, &t, &err), 0);
    p->sent++;
}

static void send_simple(pipe_t *p, pb_size_t tag, const einet_Fault *f)
{
    einet_Envelope env;
    ei_err_t err;
    wire_env_init(&env, tag);
    env.seq = ++p->seq;
    if (f)
        env.body.fault = *f;
    assert_int_equal(wire_send(p->client, NULL, &env, NULL, &err), 0);
}

static void on_client(xport_t *x, xport_msg_t **msg_p, void *arg)
{
    pipe_t *p = arg;
    wire_in_t in;
    ei_err_t err;
    (void)x;
    assert_int_equal(wire_recv(*msg_p, &in, &err), 0);
    if (in.env.which_body == einet_Envelope_stats_reply_tag) {
        const einet_StatsReply *s = &in.env.body.stats_reply;
        int ok = (int)s->nodes_count == p->want_nodes && (int)s->links_count == p->want_nodes - 1;
        for (pb_size_t i = 0; ok && i < s->nodes_count; i++)
            ok = s->nodes[i].healthy;
        for (pb_size_t i = 0; ok && i < s->links_count; i++)
            ok = s->links[i].up;
        p->healthy = ok;
        p->link_down = s->links_count >= 1 && !s->links[0].up;
        p->accepted = s->requests;
    } else if (in.env.which_body == einet_Envelope_ack_tag) {
        p->acked = in.env.body.ack.ok ? 1 : -1;
    } else if (in.env.which_body == einet_Envelope_accepted_tag) {
        /* The acknowledgement comes first, once, with the id the answer will carry. */
        const einet_Accepted *a = &in.env.body.accepted;
        assert_true(a->client_id < 5 * PIPE_BATCH + 1);
        assert_int_equal(p->answers[a->client_id], 0);
        assert_int_equal(p->acked_id[a->client_id], 0);
        p->acked_id[a->client_id] = a->request_id;
    } else if (in.env.which_body == einet_Envelope_answer_tag) {
        const einet_Answer *a = &in.env.body.answer;
        assert_true(a->client_id < 5 * PIPE_BATCH + 1);
        assert_int_equal(a->request_id, p->acked_id[a->client_id]);
        p->answers[a->client_id]++;
        p->status[a->client_id] = a->status;
        p->cls[a->client_id] = a->class_id;
        p->conf[a->client_id] = a->confidence;
        p->exit_of[a->client_id] = a->exit;
        p->got++;
    } else {
        p->errors++;
    }
}

static void pipe_stop(pipe_t *p)
{
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, NULL);
    xport_destroy(&p->client);
    node_drain(p->device);
    node_drain(p->edge);
}

static void send_batch(pipe_t *p)
{
    for (int i = 0; i < PIPE_BATCH; i++)
        send_request(p, p->sent);
}

static void cut_device_edge(pipe_t *p)
{
    einet_Fault f = {.link = einet_Link_LINK_DEVICE_EDGE, .down_ms = PIPE_CUT_MS};
    send_simple(p, einet_Envelope_fault_tag, &f);
}

/* Polls the coordinator's statistics until ready(p) holds, then does next(p) and moves on. */
static void step_when(pipe_t *p, int ready, void (*next)(pipe_t *))
{
    if (!ready) {
        send_simple(p, einet_Envelope_stats_query_tag, NULL);
        return;
    }
    p->healthy = p->link_down = 0;
    p->accepted = 0;
    if (next)
        next(p);
    p->phase++;
}

static void restore_device_edge(pipe_t *p)
{
    einet_Fault f = {.link = einet_Link_LINK_DEVICE_EDGE, .clear = true};
    send_simple(p, einet_Envelope_fault_tag, &f);
}

static void stop_coordinator(pipe_t *p)
{
    coord_shutdown(p->coord);
}

/* The scenario, one step per tick; every step waits for a state, never for a time. */
static void on_tick(uv_timer_t *t)
{
    pipe_t *p = t->data;
    if (ei_now() > p->give_up)
        fail_msg("pipeline stuck in phase %d: %d of %llu answered", p->phase, p->got,
                 (unsigned long long)p->sent);
    switch (p->phase) {
    case 0: /* all healthy: the first batch, answered complete */
        step_when(p, p->healthy, send_batch);
        break;
    case 1: /* answered: cut device-edge until it is restored */
        if (p->got == PIPE_BATCH)
            step_when(p, 1, cut_device_edge);
        break;
    case 2: /* the device declared the link down: a batch during the cut */
        step_when(p, p->link_down, send_batch);
        break;
    case 3: /* answered `link`: restore */
        if (p->got == 2 * PIPE_BATCH)
            step_when(p, 1, restore_device_edge);
        break;
    case 4: /* healthy again: a batch answered complete */
        step_when(p, p->healthy, send_batch);
        break;
    case 5: /* a batch the coordinator must still hold when it stops: the edge never gets
             * it (cut again; the heartbeat timeout is far away) */
        if (p->got == 3 * PIPE_BATCH) {
            cut_device_edge(p);
            step_when(p, 1, send_batch);
        }
        break;
    case 6: /* the coordinator has read all of them: SIGTERM to it */
        step_when(p, p->accepted == 4 * PIPE_BATCH, stop_coordinator);
        break;
    case 7:
        if (p->got == 4 * PIPE_BATCH)
            pipe_stop(p);
        break;
    }
}

static char *write_model(char *path, size_t cap)
{
    ei_err_t err;
    nn_model_t *m = nn_model_from_arch(toy_arch, "toy", 1, &err);
    assert_non_null(m);
    nn_model_init(m, 5);
    snprintf(path, cap, "%s/model.safetensors", g_scratch);
    assert_int_equal(nn_model_save(m, path, NULL, &err), 0);
    nn_model_destroy(&m);
    return path;
}

/* The coordinator's journal of a test, beside its model file. */
static void unlink_journal(const char *model)
{
    static const char *const ext[] = {".db", ".db-wal", ".db-shm"};
    for (int i = 0; i < 3; i++) {
        char path[160];
        snprintf(path, sizeof path, "%s%s", model, ext[i]);
        unlink(path);
    }
}

static node_t *make_node(pipe_t *p, const char *text)
{
    conf_node_t c;
    ei_err_t err;
    if (conf_load_string(&conf_node_table, &c, "node.ini", text, &err) < 0)
        fail_msg("%s", err.msg);
    node_t *nd = node_new(&c, &p->loop, p->zctx, &err);
    if (!nd)
        fail_msg("%s", err.msg);
    assert_int_equal(node_start(nd, &err), 0);
    return nd;
}

static void test_pipeline_in_process(void **state)
{
    (void)state;
    setenv("EINET_DATA_DIR", "/nonexistent", 1); /* exit scores: the prior, at once */
    char model[128], text[1024];
    write_model(model, sizeof model);
    pipe_t *p = calloc(1, sizeof *p);
    p->want_nodes = 2;
    ei_rng_t rng;
    ei_rng_seed(&rng, 9);
    for (int i = 0; i < 5 * PIPE_BATCH + 1; i++)
        for (int j = 0; j < 64; j++)
            p->images[i][j] = (float)ei_rng_uniform(&rng);
    uv_loop_init(&p->loop);
    p->zctx = zmq_ctx_new();
    ei_err_t err;
    conf_coord_t cc;
    snprintf(text, sizeof text,
             "[coordinator]\nclients = inproc://t-clients\nnodes = inproc://t-nodes\n"
             "tiers = device,edge\nheartbeat_timeout_ms = %d\nmodel = %s\n"
             "profile_interval_ms = 50\n[journal]\npath = %s.db\n",
             PIPE_HB_TIMEOUT_MS, model, model);
    assert_int_equal(conf_load_string(&conf_coord_table, &cc, "coord.ini", text, &err), 0);
    p->coord = coord_new(&cc, &p->loop, p->zctx, &err);
    assert_non_null(p->coord);
    assert_int_equal(coord_start(p->coord, &err), 0);
    snprintf(text, sizeof text,
             "[node]\ntier = edge\nfirst_block = 3\nlast_block = 4\nmodel = %s\n"
             "bind = inproc://t-edge\ncoordinator = inproc://t-nodes\nheartbeat_ms = %d\n"
             "heartbeat_timeout_ms = %d\nthreads = 2\n",
             model, PIPE_HB_MS, PIPE_HB_TIMEOUT_MS);
    assert_int_equal(nn_threads(), 1);
    p->edge = make_node(p, text); /* `threads` is the engine's pool */
    assert_int_equal(nn_threads(), 2);
    snprintf(text, sizeof text,
             "[node]\ntier = device\nfirst_block = 1\nlast_block = 2\nmodel = %s\n"
             "next = inproc://t-edge\ncoordinator = inproc://t-nodes\nheartbeat_ms = %d\n"
             "heartbeat_timeout_ms = %d\nslowdown = 3\nthreads = 2\n",
             model, PIPE_HB_MS, PIPE_HB_TIMEOUT_MS);
    p->device = make_node(p, text);
    xport_opts_t o = {.type = ZMQ_DEALER, .linger_ms = 0};
    p->client = xport_new(&p->loop, p->zctx, &o, &err);
    assert_int_equal(xport_connect(p->client, "inproc://t-clients", &err), 0);
    assert_int_equal(xport_start(p->client, on_client, p, &err), 0);
    uv_timer_init(&p->loop, &p->timer);
    p->timer.data = p;
    p->give_up = ei_now() + PIPE_GIVE_UP_S;
    uv_timer_start(&p->timer, on_tick, 5, 5);
    uv_run(&p->loop, UV_RUN_DEFAULT);

    /* every request answered exactly once */
    assert_int_equal(p->errors, 0);
    assert_int_equal(p->sent, 4 * PIPE_BATCH);
    for (uint64_t i = 0; i < p->sent; i++)
        assert_int_equal(p->answers[i], 1);
    /* the answers equal the single-process forward */
    nn_model_t *m = nn_model_load(model, 1, &err);
    assert_non_null(m);
    nn_model_prepare_inference(m);
    float probs[PIPE_N * 5];
    int shutdown = 0;
    for (int i = 0; i < 4 * PIPE_BATCH; i++) {
        int batch = i / PIPE_BATCH;
        if (batch == 0 || batch == 2)
            assert_int_equal(p->status[i], einet_Status_STATUS_COMPLETE);
        if (batch == 1) /* device-edge cut: the device's exits at most */
            assert_true(p->status[i] == einet_Status_STATUS_LINK && p->exit_of[i] <= 2);
        if (batch == 3) { /* held when the coordinator stopped: the device's exits at most */
            shutdown += p->status[i] == einet_Status_STATUS_SHUTDOWN;
            if (p->status[i] != einet_Status_STATUS_SHUTDOWN || p->exit_of[i] > 2)
                fail_msg("request %d: status %d exit %u", i, p->status[i], p->exit_of[i]);
        }
        if (p->exit_of[i] == 0)
            continue;
        nn_tensor_t x = nn_tensor_view(p->images[i], 1, 1, 8, 8);
        assert_int_equal(nn_model_forward(m, &x, probs, &err), 0);
        const float *q = probs + (p->exit_of[i] - 1) * 5;
        int best = 0;
        for (int c = 1; c < 5; c++)
            best = q[c] > q[best] ? c : best;
        assert_int_equal(p->cls[i], best);
        assert_true(fabsf(p->conf[i] - q[best]) <= 1e-5f);
    }
    assert_int_equal(shutdown, PIPE_BATCH);
    /* each batch of 20 requests was read in one turn: its tasks reached the device batched */
    node_counts_t k = node_counts(p->device);
    printf("  device: %llu tasks, %llu of them from batches\n", (unsigned long long)k.tasks,
           (unsigned long long)k.tasks_batched);
    /* (the last batch's may still wait in the device's socket when it stops) */
    assert_true(k.tasks >= 2 * PIPE_BATCH && k.tasks <= 4 * PIPE_BATCH);
    assert_true(k.tasks_batched > 1 && k.tasks_batched <= k.tasks);
    assert_int_equal(nn_set_threads(1), 0);
    nn_model_destroy(&m);
    coord_destroy(&p->coord);
    node_destroy(&p->device);
    node_destroy(&p->edge);
    assert_int_equal(uv_loop_close(&p->loop), 0);
    zmq_ctx_term(p->zctx);
    unlink_journal(model);
    unlink(model);
    free(p);
}

/* ---- the device's class-specific early exit, in a one-tier pipeline (batch_max 1) ---- */

static void on_ee_tick(uv_timer_t *t)
{
    pipe_t *p = t->data;
    if (ei_now() > p->give_up)
        fail_msg("early-exit pipeline stuck: %d of %llu answered", p->got,
                 (unsigned long long)p->sent);
    if (p->phase == 0 && p->healthy) {
        for (int i = 0; i < PIPE_BATCH; i++)
            send_request(p, p->sent);
        p->phase = 1;
    } else if (p->phase == 0) {
        send_simple(p, einet_Envelope_stats_query_tag, NULL);
    } else if (p->phase == 1 && p->got == PIPE_BATCH) {
        uv_timer_stop(&p->timer);
        uv_close((uv_handle_t *)&p->timer, NULL);
        xport_destroy(&p->client);
        node_drain(p->device);
        coord_shutdown(p->coord);
    }
}

static void test_device_early_exit(void **state)
{
    (void)state;
    setenv("EINET_DATA_DIR", "/nonexistent", 1);
    char model[128], eefile[128], text[1024];
    write_model(model, sizeof model);
    ei_err_t err;
    nn_model_t *m = nn_model_load(model, 1, &err);
    assert_non_null(m);
    nn_model_prepare_inference(m);
    /* target class 3 after block 2, alpha 0: it accepts every sample */
    ee_spec_t spec = {3, 2, 1, 2, 0.0};
    ee_t *ee = ee_new_for_model(&spec, m, 1, &err);
    assert_non_null(ee);
    ee_init(ee, 4);
    snprintf(eefile, sizeof eefile, "%s/ee.safetensors", g_scratch);
    ee_backbone_ref_t bb = {model, "toy", NULL};
    assert_int_equal(ee_save(ee, eefile, &bb, NULL, &err), 0);
    pipe_t *p = calloc(1, sizeof *p);
    p->want_nodes = 1;
    ei_rng_t rng;
    ei_rng_seed(&rng, 5);
    for (int i = 0; i < PIPE_BATCH; i++)
        for (int j = 0; j < 64; j++)
            p->images[i][j] = (float)ei_rng_uniform(&rng);
    uv_loop_init(&p->loop);
    p->zctx = zmq_ctx_new();
    conf_coord_t cc;
    snprintf(text, sizeof text,
             "[coordinator]\nclients = inproc://e-clients\nnodes = inproc://e-nodes\n"
             "tiers = device\nheartbeat_timeout_ms = %d\nmodel = %s\n[journal]\nenabled = no\n",
             PIPE_HB_TIMEOUT_MS, model);
    assert_int_equal(conf_load_string(&conf_coord_table, &cc, "coord.ini", text, &err), 0);
    /* Without a journal the ids start at the wall clock in us: above any a predecessor
     * handed out (docs/protocol.md). */
    struct timespec t0;
    clock_gettime(CLOCK_REALTIME, &t0);
    uint64_t t0_us = (uint64_t)t0.tv_sec * 1000000u + (uint64_t)t0.tv_nsec / 1000u;
    p->coord = coord_new(&cc, &p->loop, p->zctx, &err);
    assert_non_null(p->coord);
    assert_int_equal(coord_start(p->coord, &err), 0);
    snprintf(text, sizeof text,
             "[node]\ntier = device\nfirst_block = 1\nlast_block = 4\nmodel = %s\n"
             "coordinator = inproc://e-nodes\nheartbeat_ms = %d\nheartbeat_timeout_ms = %d\n"
             "ee = %s\nbatch_max = 1\n", model, PIPE_HB_MS, PIPE_HB_TIMEOUT_MS, eefile);
    p->device = make_node(p, text);
    xport_opts_t o = {.type = ZMQ_DEALER, .linger_ms = 0};
    p->client = xport_new(&p->loop, p->zctx, &o, &err);
    assert_int_equal(xport_connect(p->client, "inproc://e-clients", &err), 0);
    assert_int_equal(xport_start(p->client, on_client, p, &err), 0);
    uv_timer_init(&p->loop, &p->timer);
    p->timer.data = p;
    p->give_up = ei_now() + PIPE_GIVE_UP_S;
    uv_timer_start(&p->timer, on_ee_tick, 5, 5);
    uv_run(&p->loop, UV_RUN_DEFAULT);
    assert_int_equal(p->errors, 0);
    for (int i = 0; i < 5 * PIPE_BATCH + 1; i++)
        if (p->acked_id[i])
            assert_true(p->acked_id[i] >= t0_us);
    for (int i = 0; i < PIPE_BATCH; i++) {
        assert_int_equal(p->answers[i], 1);
        assert_int_equal(p->status[i], einet_Status_STATUS_DEVICE_EE);
        assert_int_equal(p->exit_of[i], 2);
        assert_int_equal(p->cls[i], 3);
        /* P(k) as the EE gives it on the single-process taps */
        nn_tensor_t x = nn_tensor_view(p->images[i], 1, 1, 8, 8);
        const nn_tensor_t *taps[2];
        taps[0] = nn_model_conv(m, 0, &x, &err);
        taps[1] = nn_model_conv(m, 1, taps[0], &err);
        float pk;
        assert_int_equal(ee_check(ee, taps, &pk, &err), 1);
        assert_true(fabsf(pk - p->conf[i]) <= 1e-6f);
    }
    /* a device that runs one request at a time (batch_max 1) gets one message per task,
     * though its 20 came in one turn of the coordinator's loop */
    node_counts_t k = node_counts(p->device);
    assert_int_equal(k.tasks, PIPE_BATCH);
    assert_int_equal(k.tasks_batched, 0);
    ee_destroy(&ee);
    nn_model_destroy(&m);
    coord_destroy(&p->coord);
    node_destroy(&p->device);
    assert_int_equal(uv_loop_close(&p->loop), 0);
    zmq_ctx_term(p->zctx);
    unlink(model);
    unlink(eefile);
    free(p);
}

/* ---- a device fed by a coordinator that lies ---- */

/* The test plays the coordinator on a ROUTER: it answers the device's heartbeats, then
 * sends batches of tasks (proto Batch): good tasks around a short image and a body that
 * may not travel in a batch, a batch whose count lies and one of more than 256 messages.
 * The device refuses each bad one, naming what and where, runs the good tasks and answers
 * each exactly as the single-process forward. */
typedef struct fake {
    uv_loop_t loop;
    void *zctx;
    xport_t *sock;
    node_t *device;
    xport_peer_t peer;
    uv_timer_t timer;
    int known, sent, finals, errors;
    uint64_t seq;
    double give_up;
    char err[4][sizeof(((einet_Error *)0)->message)];
    uint32_t cls[8], exit_of[8], finals_of[8];
    float conf[8];
    float images[4][64];
} fake_t;

static void fake_take(fake_t *f, const wire_in_t *in)
{
    if (in->env.which_body == einet_Envelope_error_tag) {
        if (f->errors < 4)
            snprintf(f->err[f->errors], sizeof f->err[0], "%s", in->env.body.error.message);
        f->errors++;
    } else if (in->env.which_body == einet_Envelope_exit_result_tag) {
        const einet_ExitResult *r = &in->env.body.exit_result;
        assert_true(r->request_id < 8);
        if (r->last) {
            f->finals_of[r->request_id]++;
            f->finals++;
            f->cls[r->request_id] = r->class_id;
            f->conf[r->request_id] = r->confidence;
            f->exit_of[r->request_id] = r->exit;
        }
    }
}

static void on_fake(xport_t *x, xport_msg_t **msg_p, void *arg)
{
    fake_t *f = arg;
    wire_in_t in, item;
    ei_err_t err;
    (void)x;
    assert_int_equal(wire_recv(*msg_p, &in, &err), 0);
    f->peer = in.peer;
    if (in.env.which_body == einet_Envelope_heartbeat_tag) {
        einet_Envelope r;
        wire_env_init(&r, einet_Envelope_heartbeat_reply_tag);
        r.seq = ++f->seq;
        r.reply_to = in.env.seq;
        r.body.heartbeat_reply.seq = in.env.body.heartbeat.seq;
        r.body.heartbeat_reply.echo_sent_at_us = in.env.body.heartbeat.sent_at_us;
        assert_int_equal(wire_send(f->sock, &f->peer, &r, NULL, &err), 0);
        f->known = 1;
    } else if (in.env.which_body == einet_Envelope_batch_tag) {
        wire_batch_it_t it = {0, 0};
        int rc;
        while ((rc = wire_batch_next(&in, &it, &item, &err)) != 0) {
            assert_int_equal(rc, 1);
            fake_take(f, &item);
        }
    } else {
        fake_take(f, &in);
    }
}

/* A task for request id with image i of f (numel floats sent: 64 is right). */
static size_t fake_task(fake_t *f, uint64_t id, uint8_t *buf)
{
    einet_Envelope e;
    ei_err_t err;
    size_t len;
    wire_env_init(&e, einet_Envelope_task_tag);
    e.seq = ++f->seq;
    e.body.task.request_id = id;
    const uint32_t shape[4] = {1, 1, 8, 8};
    wire_meta_set(&e.body.task.input, &e.body.task.has_input, shape, 4);
    e.body.task.plan_count = PIPE_N;
    for (int k = 0; k < PIPE_N; k++)
        e.body.task.plan[k] = true;
    assert_int_equal(wire_encode(&e, 64 * 4, buf, WIRE_ENVELOPE_MAX, &len, &err), 0);
    return len;
}

/* Sends batch b with its header as given (a lie where it differs from b's). */
static void fake_send(fake_t *f, const wire_batch_out_t *b, const einet_Batch *hdr)
{
    einet_Envelope e;
    static uint8_t buf[WIRE_ENVELOPE_MAX];
    ei_err_t err;
    wire_env_init(&e, einet_Envelope_batch_tag);
    e.seq = ++f->seq;
    e.body.batch = *hdr;
    pb_ostream_t s = pb_ostream_from_buffer(buf, sizeof buf);
    assert_true(pb_encode(&s, einet_Envelope_fields, &e));
    xport_frame_t fr[2] = {{buf, s.bytes_written, NULL, NULL}, {b->buf, b->len, NULL, NULL}};
    assert_int_equal(xport_send(f->sock, &f->peer, fr, 2, &err), 0);
}

static void fake_attack(fake_t *f)
{
    static uint8_t buf[WIRE_ENVELOPE_MAX];
    wire_batch_out_t b = {0};
    ei_err_t err;
    size_t len;
    /* 1: tasks 1 and 4 good; 2 with an image 4 bytes short; 3 a heartbeat reply */
    for (uint64_t id = 1; id <= 4; id++) {
        if (id == 3) {
            einet_Envelope e;
            wire_env_init(&e, einet_Envelope_heartbeat_reply_tag);
            e.seq = ++f->seq;
            assert_int_equal(wire_encode(&e, WIRE_NO_TENSOR, buf, sizeof buf, &len, &err), 0);
            assert_int_equal(wire_batch_add(&b, buf, len, NULL, 0, &err), 0);
            continue;
        }
        len = fake_task(f, id, buf);
        assert_int_equal(wire_batch_add(&b, buf, len, f->images[id - 1],
                                        id == 2 ? 60 * 4 : 64 * 4, &err), 0);
    }
    fake_send(f, &b, &b.hdr);
    /* 2: the same batch telling 3 messages for its 4 sizes */
    einet_Batch h = b.hdr;
    h.count = 3;
    fake_send(f, &b, &h);
    /* 3: 257 messages told (the sizes can list 256) */
    h = b.hdr;
    h.count = WIRE_MAX_BATCH + 1;
    fake_send(f, &b, &h);
    wire_batch_free(&b);
    f->sent = 1;
}

static void on_fake_tick(uv_timer_t *t)
{
    fake_t *f = t->data;
    if (ei_now() > f->give_up)
        fail_msg("the device answered %d tasks and sent %d errors", f->finals, f->errors);
    if (f->known && !f->sent)
        fake_attack(f);
    if (f->sent && f->finals == 2 && f->errors == 4) {
        uv_timer_stop(&f->timer);
        uv_close((uv_handle_t *)&f->timer, NULL);
        node_drain(f->device);
        xport_destroy(&f->sock);
    }
}

static void test_device_refuses_forged_batches(void **state)
{
    (void)state;
    setenv("EINET_DATA_DIR", "/nonexistent", 1);
    char model[128], text[1024];
    write_model(model, sizeof model);
    fake_t *f = calloc(1, sizeof *f);
    ei_rng_t rng;
    ei_rng_seed(&rng, 11);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 64; j++)
            f->images[i][j] = (float)ei_rng_uniform(&rng);
    uv_loop_init(&f->loop);
    f->zctx = zmq_ctx_new();
    ei_err_t err;
    xport_opts_t o = {.type = ZMQ_ROUTER, .linger_ms = 0};
    f->sock = xport_new(&f->loop, f->zctx, &o, &err);
    assert_non_null(f->sock);
    assert_int_equal(xport_bind(f->sock, "inproc://f-nodes", &err), 0);
    assert_int_equal(xport_start(f->sock, on_fake, f, &err), 0);
    snprintf(text, sizeof text,
             "[node]\ntier = device\nfirst_block = 1\nlast_block = 4\nmodel = %s\n"
             "coordinator = inproc://f-nodes\nheartbeat_ms = %d\nheartbeat_timeout_ms = %d\n"
             "batch_max = 4\n", model, PIPE_HB_MS, PIPE_HB_TIMEOUT_MS);
    conf_node_t c;
    if (conf_load_string(&conf_node_table, &c, "node.ini", text, &err) < 0)
        fail_msg("%s", err.msg);
    f->device = node_new(&c, &f->loop, f->zctx, &err);
    if (!f->device)
        fail_msg("%s", err.msg);
    assert_int_equal(node_start(f->device, &err), 0);
    uv_timer_init(&f->loop, &f->timer);
    f->timer.data = f;
    f->give_up = ei_now() + PIPE_GIVE_UP_S;
    uv_timer_start(&f->timer, on_fake_tick, 5, 5);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    for (int i = 0; i < 4; i++)
        printf("  refused: %s\n", f->err[i]);
    assert_string_equal(f->err[0], "batch message 2 of 4: task.input: shape promises 256 "
                                    "bytes, the tensor frame has 240");
    assert_string_equal(f->err[1], "batch message 3 of 4: heartbeat_reply may not travel in a "
                                   "batch");
    assert_string_equal(f->err[2], "batch.env_bytes: 4 sizes for 3 messages");
    assert_string_equal(f->err[3], "batch.count: 257, expected 1..256");
    /* tasks 1 and 4 ran, once each, to the forward's answer */
    assert_int_equal(f->finals_of[1], 1);
    assert_int_equal(f->finals_of[4], 1);
    assert_int_equal(f->finals_of[2] + f->finals_of[3], 0);
    node_counts_t k = node_counts(f->device);
    assert_int_equal(k.tasks, 2);
    assert_int_equal(k.tasks_batched, 2);
    nn_model_t *m = nn_model_load(model, 1, &err);
    assert_non_null(m);
    nn_model_prepare_inference(m);
    float probs[PIPE_N * 5];
    for (int id = 1; id <= 4; id += 3) {
        nn_tensor_t x = nn_tensor_view(f->images[id - 1], 1, 1, 8, 8);
        assert_int_equal(nn_model_forward(m, &x, probs, &err), 0);
        const float *q = probs + (PIPE_N - 1) * 5;
        int best = 0;
        for (int cl = 1; cl < 5; cl++)
            best = q[cl] > q[best] ? cl : best;
        assert_int_equal(f->exit_of[id], PIPE_N);
        assert_int_equal(f->cls[id], best);
        assert_true(fabsf(f->conf[id] - q[best]) <= 1e-5f);
    }
    nn_model_destroy(&m);
    node_destroy(&f->device);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    zmq_ctx_term(f->zctx);
    unlink(model);
    free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_link_state),
        cmocka_unit_test(test_link_bandwidth_probe),
        cmocka_unit_test(test_fault_commands),
        cmocka_unit_test(test_replan_matches_planner),
        cmocka_unit_test(test_scores),
        cmocka_unit_test(test_pipeline_in_process),
        cmocka_unit_test(test_device_early_exit),
        cmocka_unit_test(test_device_refuses_forged_batches),
    };
    if (!mkdtemp(g_scratch)) {
        perror("mkdtemp");
        return 1;
    }
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tu_rmdir(g_scratch);
    return rc;
}
