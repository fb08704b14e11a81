/* A real cluster on loopback: einet-coord and three einet-node processes started by
 * deploy/local.sh with ports unique to the test, driven by the einet program and by an
 * in-process client (cli/client.c) that paces requests while faults are injected.
 *
 * Cases (`test_cluster CASE...`; the cases named share one cluster, as ctest runs them:
 * integration_healthy = forward badinput, integration_deadline, integration_faults = cut
 * kill killcmd):
 *   forward   no faults: every answer complete, from the final exit, and equal to the
 *             single-process forward (same class, confidence within 1e-5); statistics agree
 *   deadline  an edge-cloud link delayed far beyond a short deadline: `deadline` answers
 *             from the device's or edge's exits, equal to the forward at the exit reported;
 *             `einet result` agrees
 *   deadline_us  deadlines of 1 us to 10 s (einet infer --deadline-us): `deadline` answers
 *             no earlier than the deadline with an exit that arrived by then (none at 1 us),
 *             `complete` only when the final exit arrived by the deadline
 *   cut       edge-cloud cut mid-stream (einet fault --down, then --clear): `link` answers
 *             from the device or edge within the heartbeat timeout, full depth after restore
 *   kill      SIGKILL of the cloud node mid-stream, then deploy/local.sh up restarts it
 *   killcmd   `einet fault --kill edge`: the edge dies, answers come from the device's
 *             exits until it is restarted
 *   badinput  random bytes, truncated and oversized frames, wrong tensor shapes, unknown
 *             versions and too many frames sent to every socket: refused, counted, and the
 *             cluster keeps serving
 *   ee        the device runs models/ee-class1.safetensors (Trouser after block 1): every
 *             image on which the same EE fires in this process is answered `device_ee` by
 *             the device alone (class 1, P(k) within 1e-5), every other one goes on and is
 *             answered complete as `forward`; the statistics count the device_ee answers and
 *             the edge and cloud received maps only for the others (their logs at stop).
 *             Must be the first case on its cluster (integration_ee).
 *   batched   every node batches (batch_max 16, batch_wait_ms 20), 64 requests in flight:
 *             every answer exactly once, complete and equal to the forward; the nodes' totals
 *             at stop show batches of more than one request (integration_batched)
 *   stop      stop rules: the cluster's default (coordinator key `stop`), none, confidence,
 *             entropy and einet's rule with the shipped correctness predictor: every answer
 *             is `early` exactly where the single-process forward (and the predictor, run
 *             here) says the rule fires, from that exit's tier, with its class; otherwise
 *             complete. The statistics count the early answers per exit and tier with their
 *             accuracy; the nodes' totals at stop show edge and cloud never saw the requests
 *             answered before them. Must be the first case on its cluster (integration_stop).
 *   stopbatched  the same on nodes that batch (batch_max 16, batch_wait_ms 20): a request
 *             answered early leaves its batch while the others go on
 *             (integration_stop_batched).
 * In every case each request is answered exactly once and the coordinator's statistics
 * agree with what the client received. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>
#include <cmocka.h>
#include <jansson.h>
#include <zmq.h>

#include "cli/client.h"
#include "common/ei.h"
#include "itest.h"
#include "nn/dataset.h"
#include "nn/ee.h"
#include "nn/model.h"
#include "planner/predictor.h"
#include "planner/stop.h"
#include "wire/wire.h"

#define MAX_REQ 2000
#define CLASSES 10
#define N_STATUS 16 /* room for every Status value */
/* Timeouts. No case depends on how fast this machine is: the heartbeat timeout is far
 * longer than any stall of a loaded (or sanitizer-instrumented) process, so a healthy node
 * is never taken for a dead one, and the upper bounds below are only there to catch an
 * answer that never comes in time at all (a missed heartbeat timeout or deadline timer). */
#define HB_MS 50
#define HB_TIMEOUT_MS 3000
/* Slack on top of the heartbeat timeout (or the deadline) for the answer that follows it:
 * heartbeat intervals, the coordinator's reaction, scheduling on a machine with both cores
 * busy. */
#define LINK_SLACK_MS 3000
/* The deadline case: edge-cloud messages are delayed by DEADLINE_LINK_DELAY_MS, more than
 * ten times the deadline, so by construction no cloud exit can arrive before the deadline,
 * however fast the machine. The heartbeat round trip then takes twice the delay, so that
 * cluster's heartbeat timeout leaves room for it. */
#define DEADLINE_MS 40
#define DEADLINE_LINK_DELAY_MS 500
#define DEADLINE_HB_TIMEOUT_MS (4 * DEADLINE_LINK_DELAY_MS + HB_TIMEOUT_MS)

static nn_dataset_t *g_test;
static nn_model_t *g_model;
static float *g_probs; /* [MAX_REQ][blocks][CLASSES], computed on demand */
static char *g_done;
static int g_blocks;
static itest_cluster_t g_cluster;
static char g_out[1 << 20], g_err[1 << 16];
static long g_sent; /* requests sent to the cluster by any case so far */

/* The single-process forward of test image i: every exit's probabilities. */
static const float *forward(int i)
{
    if (!g_done[i]) {
        nn_tensor_t *x = nn_tensor_new(1, 1, g_test->h, g_test->w);
        memcpy(x->data, g_test->images + (size_t)i * 784, 784 * sizeof(float));
        ei_err_t err;
        assert_int_equal(nn_model_forward(g_model, x, g_probs + (size_t)i * g_blocks * CLASSES,
                                          &err),
                         0);
        nn_tensor_destroy(&x);
        g_done[i] = 1;
    }
    return g_probs + (size_t)i * g_blocks * CLASSES;
}

/* An answer with an exit must be exactly what that exit computes in one process. */
static void check_against_forward(int i, int exit, int cls, double conf)
{
    if (exit == 0) {
        assert_int_equal(cls, -1);
        return;
    }
    assert_true(exit >= 1 && exit <= g_blocks);
    const float *p = forward(i) + (size_t)(exit - 1) * CLASSES;
    int best = 0;
    for (int c = 1; c < CLASSES; c++)
        best = p[c] > p[best] ? c : best;
    if (cls != best || conf < p[best] - 1e-5 || conf > p[best] + 1e-5)
        fail_msg("image %d exit %d: answer class %d confidence %.7f, the forward gives class %d "
                 "confidence %.7f",
                 i, exit, cls, conf, best, p[best]);
}

/* The tier that runs block k in the clusters of these tests (itest_tier_split: device 1-2,
 * edge 3-5, cloud 6-8 of the 8-block model): every answer's tier must be its exit's. */
static int tier_of_exit(int k)
{
    int last[4];
    itest_tier_split(g_blocks, last);
    return k <= last[1] ? einet_Tier_TIER_DEVICE
                        : k <= last[2] ? einet_Tier_TIER_EDGE : einet_Tier_TIER_CLOUD;
}

/* ---- what the client received, and the statistics it must agree with ---- */

typedef struct tally {
    uint64_t requests, by_status[N_STATUS], by_exit[WIRE_MAX_BLOCKS + 1], by_tier[4];
    uint64_t labelled, correct, labelled_by_status[N_STATUS], correct_by_status[N_STATUS];
} tally_t;

static void tally_add(tally_t *t, int status, int exit, int tier, int cls, int label)
{
    t->by_status[status]++;
    t->by_exit[exit]++;
    t->by_tier[exit ? tier : 0]++;
    t->labelled++;
    t->correct += exit > 0 && cls == label;
    t->labelled_by_status[status]++;
    t->correct_by_status[status] += exit > 0 && cls == label;
}

static void stats_query(einet_StatsReply *out)
{
    client_opts_t o = {g_cluster.clients, 5000, NULL, NULL};
    einet_Envelope *env = calloc(1, sizeof *env);
    wire_env_init(env, einet_Envelope_stats_query_tag);
    assert_int_equal(client_query("test", &o, env, einet_Envelope_stats_reply_tag), 0);
    *out = env->body.stats_reply;
    free(env);
}

/* Zeroes the coordinator's counters, so a case that shares a cluster counts from zero. */
static void stats_reset(void)
{
    client_opts_t o = {g_cluster.clients, 5000, NULL, NULL};
    einet_Envelope *env = calloc(1, sizeof *env);
    wire_env_init(env, einet_Envelope_stats_query_tag);
    env->body.stats_query.reset = true;
    assert_int_equal(client_query("test", &o, env, einet_Envelope_stats_reply_tag), 0);
    free(env);
}

static void check_stats_agree(const tally_t *t)
{
    einet_StatsReply *s = calloc(1, sizeof *s);
    stats_query(s);
    assert_int_equal(s->requests, t->requests);
    for (int i = 0; i < N_STATUS; i++)
        if ((i < s->by_status_count ? s->by_status[i] : 0) != t->by_status[i])
            fail_msg("status %d: the coordinator counts %llu, the client got %llu", i,
                     (unsigned long long)(i < s->by_status_count ? s->by_status[i] : 0),
                     (unsigned long long)t->by_status[i]);
    for (int k = 0; k <= g_blocks; k++)
        if ((k < s->by_exit_count ? s->by_exit[k] : 0) != t->by_exit[k])
            fail_msg("exit %d: the coordinator counts %llu, the client got %llu", k,
                     (unsigned long long)(k < s->by_exit_count ? s->by_exit[k] : 0),
                     (unsigned long long)t->by_exit[k]);
    for (int i = 0; i < 4; i++)
        if ((i < s->by_tier_count ? s->by_tier[i] : 0) != t->by_tier[i])
            fail_msg("tier %d: the coordinator counts %llu, the client got %llu", i,
                     (unsigned long long)(i < s->by_tier_count ? s->by_tier[i] : 0),
                     (unsigned long long)t->by_tier[i]);
    assert_int_equal(s->labelled, t->labelled);
    assert_int_equal(s->correct, t->correct);
    /* Accuracy per status (device-ee answers among them) as the client counts it. */
    for (int i = 0; i < N_STATUS; i++) {
        uint64_t l = i < s->labelled_by_status_count ? s->labelled_by_status[i] : 0;
        uint64_t c = i < s->correct_by_status_count ? s->correct_by_status[i] : 0;
        if (l != t->labelled_by_status[i] || c != t->correct_by_status[i])
            fail_msg("status %d: the coordinator counts %llu of %llu right, the client %llu of "
                     "%llu", i, (unsigned long long)c, (unsigned long long)l,
                     (unsigned long long)t->correct_by_status[i],
                     (unsigned long long)t->labelled_by_status[i]);
    }
    free(s);
}

/* ---- `einet infer` runs ---- */

typedef struct infer_line {
    int index, status, exit, tier, cls, label;
    long long id;
    double conf, latency_ms;
} infer_line_t;

static int status_of(const char *s)
{
    for (int i = 0; i < N_STATUS; i++)
        if (!strcmp(client_status_name(i), s))
            return i;
    fail_msg("unknown status '%s'", s);
    return -1;
}

static int tier_of(json_t *v)
{
    return json_is_null(v) ? 0 : client_tier_parse(json_string_value(v));
}

/* Runs einet infer with a deadline or a stop rule (either may be NULL) and `window` requests
 * in flight, and parses its lines; every image 0..count-1 exactly once. */
static const char *g_deadline_flag = "--deadline-ms"; /* test_deadline_us: --deadline-us */

static int run_infer_args(infer_line_t *lines, int count, tally_t *t, const char *deadline,
                          const char *stop, int window)
{
    char n[16], w[16];
    snprintf(n, sizeof n, "%d", count);
    snprintf(w, sizeof w, "%d", window);
    const char *flag = stop ? "--stop" : deadline ? g_deadline_flag : NULL;
    int rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 120000, "infer",
                         "--coordinator", g_cluster.clients, "--count", n, "--json", "--window",
                         w, flag, stop ? stop : deadline, NULL);
    if (rc != 0) {
        itest_cluster_dump_logs(&g_cluster);
        fail_msg("einet infer: exit %d\n%s", rc, g_err);
    }
    int got = 0, *seen = calloc((size_t)count, sizeof *seen);
    for (char *p = g_out, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        *nl = 0;
        json_t *o = json_loads(p, 0, NULL);
        assert_non_null(o);
        infer_line_t *l = &lines[got++];
        l->index = (int)json_integer_value(json_object_get(o, "index"));
        l->id = json_integer_value(json_object_get(o, "id"));
        l->status = status_of(json_string_value(json_object_get(o, "status")));
        l->exit = (int)json_integer_value(json_object_get(o, "exit"));
        l->tier = tier_of(json_object_get(o, "tier"));
        l->cls = (int)json_integer_value(json_object_get(o, "class"));
        l->label = (int)json_integer_value(json_object_get(o, "label"));
        l->conf = json_real_value(json_object_get(o, "confidence"));
        l->latency_ms = json_real_value(json_object_get(o, "latency_ms"));
        json_decref(o);
        assert_true(l->index >= 0 && l->index < count);
        assert_int_equal(seen[l->index]++, 0);
        assert_int_equal(l->label, g_test->labels[l->index]);
        /* A device_ee answer is the EE's, not an exit's: test_ee checks it. */
        if (l->status != einet_Status_STATUS_DEVICE_EE)
            check_against_forward(l->index, l->exit, l->cls, l->conf);
        assert_true(l->exit == 0 || l->tier == tier_of_exit(l->exit));
        tally_add(t, l->status, l->exit, l->tier, l->cls, l->label);
        t->requests++;
    }
    assert_int_equal(got, count);
    g_sent += count;
    free(seen);
    return got;
}

static int run_infer_window(infer_line_t *lines, int count, tally_t *t, const char *deadline,
                            int window)
{
    return run_infer_args(lines, count, t, deadline, NULL, window);
}

static int run_infer_with(infer_line_t *lines, int count, tally_t *t, const char *deadline,
                          const char *stop)
{
    return run_infer_args(lines, count, t, deadline, stop, 16); /* einet infer's default */
}

static int run_infer(infer_line_t *lines, int count, tally_t *t, const char *deadline)
{
    return run_infer_window(lines, count, t, deadline, 16); /* einet infer's default */
}

static void test_forward(void **state)
{
    (void)state;
    infer_line_t *lines = calloc(300, sizeof *lines);
    tally_t t = {0};
    stats_reset();
    run_infer(lines, 300, &t, NULL);
    for (int i = 0; i < 300; i++) {
        assert_string_equal(client_status_name(lines[i].status), "complete");
        assert_int_equal(lines[i].exit, g_blocks);
        assert_int_equal(lines[i].tier, einet_Tier_TIER_CLOUD);
    }
    check_stats_agree(&t);
    /* einet result gives the same answer again. */
    char id[32];
    snprintf(id, sizeof id, "%lld", lines[17].id);
    assert_int_equal(itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "result",
                                 "--coordinator", g_cluster.clients, id, NULL),
                     0);
    json_t *o = json_loads(g_out, 0, NULL);
    assert_non_null(o);
    assert_int_equal(json_integer_value(json_object_get(o, "index")), lines[17].index);
    assert_int_equal(json_integer_value(json_object_get(o, "class")), lines[17].cls);
    assert_true(json_is_false(json_object_get(o, "pending")));
    json_decref(o);
    free(lines);
}

static void einet_fault(const char *a, const char *b, const char *c, const char *d);

/* Deadline answers, whatever the speed: the cloud's exits come too late by construction
 * (the delayed edge-cloud link), so every answer is `deadline`, from an exit of the device
 * or the edge (or none), no earlier than the deadline. */
static void test_deadline(void **state)
{
    (void)state;
    enum { N = 40 };
    char delay[16], deadline[16];
    snprintf(delay, sizeof delay, "%d", DEADLINE_LINK_DELAY_MS);
    snprintf(deadline, sizeof deadline, "%d", DEADLINE_MS);
    einet_fault("--link", "edge-cloud", "--delay", delay);
    infer_line_t *lines = calloc(N, sizeof *lines);
    tally_t t = {0};
    stats_reset();
    run_infer(lines, N, &t, deadline);
    for (int i = 0; i < N; i++) {
        infer_line_t *l = &lines[i];
        if (l->status != einet_Status_STATUS_DEADLINE)
            fail_msg("image %d: status %s, not deadline (exit %d)", l->index,
                     client_status_name(l->status), l->exit);
        if (l->exit > 5)
            fail_msg("image %d: exit %d from the cloud, %.1f ms after it was sent over a link "
                     "that delays by %d ms", l->index, l->exit, l->latency_ms,
                     DEADLINE_LINK_DELAY_MS);
        assert_true(l->exit == 0 || l->tier == einet_Tier_TIER_DEVICE ||
                    l->tier == einet_Tier_TIER_EDGE);
        assert_true(l->latency_ms >= DEADLINE_MS - 1);
        assert_true(l->latency_ms <= DEADLINE_MS + LINK_SLACK_MS);
    }
    printf("  %d deadline answers by exit:", N);
    for (int k = 0; k <= g_blocks; k++)
        if (t.by_exit[k])
            printf(" %d: %llu", k, (unsigned long long)t.by_exit[k]);
    printf("\n");
    check_stats_agree(&t);
    /* The stored result is the deepest exit that arrived, as answered. */
    char id[32];
    snprintf(id, sizeof id, "%lld", lines[N - 1].id);
    assert_int_equal(itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "result",
                                 "--coordinator", g_cluster.clients, id, NULL),
                     0);
    json_t *o = json_loads(g_out, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(o, "exit")), lines[N - 1].exit);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "deadline");
    json_decref(o);
    einet_fault("--link", "edge-cloud", "--clear", NULL);
    free(lines);
}

/* einet infer with --deadline-us D, 16 in flight. */
static int run_infer_us(infer_line_t *lines, int count, tally_t *t, const char *us)
{
    g_deadline_flag = "--deadline-us";
    int got = run_infer_args(lines, count, t, us, NULL, 16);
    g_deadline_flag = "--deadline-ms";
    return got;
}

/* Deadlines in microseconds, whatever the speed: an answer is `deadline` exactly when the
 * final exit had not arrived by the deadline (latency >= deadline, the deepest exit that
 * had arrived), `complete` only when it had (latency <= deadline); no exit can come back
 * within 1 us of the request's receipt (a round trip to the device alone takes longer), so
 * a 1 us deadline is answered with none; a deadline of 10 s leaves every request complete.
 * The exits answered are the single-process forward's (run_infer_args checks it). */
static void test_deadline_us(void **state)
{
    (void)state;
    enum { N = 25 };
    static const long us[] = {1, 150, 400, 800, 1500, 3000, 10000000};
    infer_line_t *lines = calloc(N, sizeof *lines);
    tally_t t = {0};
    stats_reset();
    for (size_t d = 0; d < sizeof us / sizeof us[0]; d++) {
        char v[24];
        snprintf(v, sizeof v, "%ld", us[d]);
        run_infer_us(lines, N, &t, v);
        int by_status[16] = {0};
        for (int i = 0; i < N; i++) {
            const infer_line_t *l = &lines[i];
            double lat_us = l->latency_ms * 1000;
            by_status[l->status]++;
            if (l->status == einet_Status_STATUS_DEADLINE) {
                if (lat_us < us[d] - 0.5)
                    fail_msg("deadline %ld us: image %d answered at %.0f us", us[d], l->index,
                             lat_us);
                assert_true(l->exit < g_blocks);
            } else if (l->status == einet_Status_STATUS_COMPLETE) {
                if (lat_us > us[d] + 0.5)
                    fail_msg("deadline %ld us: image %d complete at %.0f us, after it", us[d],
                             l->index, lat_us);
                assert_int_equal(l->exit, g_blocks);
            } else {
                fail_msg("deadline %ld us: image %d answered %s", us[d], l->index,
                         client_status_name(l->status));
            }
            if (us[d] == 1)
                assert_int_equal(l->exit, 0);
            if (us[d] == 10000000)
                assert_int_equal(l->status, einet_Status_STATUS_COMPLETE);
        }
        printf("  deadline %ld us: %d deadline, %d complete\n", us[d],
               by_status[einet_Status_STATUS_DEADLINE], by_status[einet_Status_STATUS_COMPLETE]);
    }
    check_stats_agree(&t);
    /* Usage: a deadline of 0 us, or both flags, is refused before anything is sent. */
    assert_int_equal(itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "infer",
                                 "--coordinator", g_cluster.clients, "--deadline-us", "0", NULL),
                     2);
    assert_int_equal(itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "infer",
                                 "--coordinator", g_cluster.clients, "--deadline-us", "5",
                                 "--deadline-ms", "5", NULL),
                     2);
    free(lines);
}

/* ---- a paced stream through faults ---- */

typedef struct rec {
    uint64_t id; /* from the acknowledgement */
    int answers;
    double sent_at, answered_at;
    einet_Answer a;
} rec_t;

typedef struct stream {
    client_t *c;
    rec_t *recs;
    int sent, answered, inflight, duplicates;
    uint64_t first_seq;
    tally_t t;
} stream_t;

static void stream_send(stream_t *s)
{
    int i = s->sent;
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_request_tag);
    einet_Request *r = &env.body.request;
    r->client_id = (uint64_t)i;
    uint32_t shape[4] = {1, 1, 28, 28};
    wire_meta_set(&r->input, &r->has_input, shape, 4);
    r->has_label = true;
    r->label = g_test->labels[i];
    ei_err_t err;
    if (client_send(s->c, &env, g_test->images + (size_t)i * 784, 784, 5000, &err) != 0)
        fail_msg("send: %s", err.msg);
    s->recs[i].sent_at = ei_now();
    s->sent++;
    g_sent++;
    s->inflight++;
    s->t.requests++;
}

/* Receives for at most ms; returns the image index of an answer, or -1. */
static int stream_poll(stream_t *s, int ms)
{
    einet_Envelope env;
    ei_err_t err;
    int rc = client_recv(s->c, &env, ms, &err);
    if (rc == EI_E_TIMEOUT)
        return -1;
    if (rc != 0)
        fail_msg("receive: %s", err.msg);
    if (env.which_body == einet_Envelope_accepted_tag) {
        /* The acknowledgement: its id, before the answer. */
        int i = (int)env.body.accepted.client_id;
        assert_true(i >= 0 && i < s->sent);
        assert_int_equal(s->recs[i].answers, 0);
        assert_int_equal(s->recs[i].id, 0);
        s->recs[i].id = env.body.accepted.request_id;
        return -1;
    }
    if (env.which_body != einet_Envelope_answer_tag)
        fail_msg("the coordinator sent %s, not an answer", wire_body_name(env.which_body));
    einet_Answer *a = &env.body.answer;
    int i = (int)a->client_id;
    assert_true(i >= 0 && i < s->sent);
    rec_t *r = &s->recs[i];
    if (r->answers++) {
        s->duplicates++;
        fail_msg("image %d answered twice: %s then %s", i, client_status_name(r->a.status),
                 client_status_name(a->status));
    }
    assert_int_equal(a->request_id, r->id);
    r->a = *a;
    r->answered_at = ei_now();
    s->answered++;
    s->inflight--;
    assert_true(a->has_label && a->label == g_test->labels[i]);
    check_against_forward(i, (int)a->exit, a->exit ? (int)a->class_id : -1, a->confidence);
    tally_add(&s->t, a->status, (int)a->exit, a->tier, (int)a->class_id, (int)a->label);
    return i;
}

/* Waits for every request still in flight, then a little longer for duplicates. */
static void stream_drain(stream_t *s)
{
    double until = ei_now() + 60;
    while (s->inflight > 0 && ei_now() < until)
        stream_poll(s, 100);
    if (s->inflight > 0) {
        itest_cluster_dump_logs(&g_cluster);
        fail_msg("%d of %d requests never answered", s->inflight, s->sent);
    }
    while (stream_poll(s, 300) >= 0)
        ;
}

typedef void fault_fn(void);

/* Streams requests (at most 8 in flight, one every 3 ms) and moves through three phases:
 * 20 complete answers, then inject() and wait until 10 `link` answers came, then restore()
 * and wait until 20 requests sent after the restore came back complete. */
static rec_t g_recs[MAX_REQ];
static stream_t g_stream; /* static, so a failed assertion leaks nothing */

static void run_fault_stream(fault_fn *inject, fault_fn *restore, int cloud_may_answer)
{
    stream_t s = {0};
    ei_err_t err;
    memset(g_recs, 0, sizeof g_recs);
    s.recs = g_recs;
    stats_reset();
    client_destroy(&g_stream.c);
    s.c = g_stream.c = client_new(g_cluster.clients, &err);
    assert_non_null(s.c);
    int phase = 0, complete_before = 0, links = 0, complete_after = 0;
    double t_inject = 0, t_restore = 0, first_link = 0, next_send = 0;
    double limit = ei_now() + 150;
    while (phase < 3) {
        if (ei_now() > limit || s.sent == MAX_REQ) {
            itest_cluster_dump_logs(&g_cluster);
            fail_msg("stuck in phase %d: %d sent, %d answered, %d complete before, %d link, "
                     "%d complete after",
                     phase, s.sent, s.answered, complete_before, links, complete_after);
        }
        if (s.inflight < 8 && ei_now() >= next_send) {
            stream_send(&s);
            next_send = ei_now() + 0.003;
        }
        int i = stream_poll(&s, 2);
        if (i >= 0) {
            const einet_Answer *a = &s.recs[i].a;
            assert_true(a->exit == 0 || (int)a->tier == tier_of_exit((int)a->exit));
            if (a->status == einet_Status_STATUS_COMPLETE) {
                assert_int_equal(a->exit, g_blocks);
                assert_int_equal(a->tier, einet_Tier_TIER_CLOUD);
            } else if (a->status == einet_Status_STATUS_LINK) {
                /* Only requests that met the failure fail, with the deepest exit reached
                 * (the cloud's own exits only when it died midway), within the heartbeat
                 * timeout. */
                assert_true(phase >= 1);
                assert_true(s.recs[i].answered_at >= t_inject);
                assert_true(a->exit < (uint32_t)g_blocks);
                assert_true(a->exit <= 5 || cloud_may_answer);
                if (a->latency_us / 1e3 > HB_TIMEOUT_MS + LINK_SLACK_MS)
                    fail_msg("image %d: link answer after %.1f ms", i, a->latency_us / 1e3);
                if (!first_link)
                    first_link = s.recs[i].answered_at;
                links++;
            } else {
                fail_msg("image %d: unexpected status %s", i, client_status_name(a->status));
            }
            complete_before += phase == 0 && a->status == einet_Status_STATUS_COMPLETE;
            complete_after += phase == 2 && a->status == einet_Status_STATUS_COMPLETE &&
                              s.recs[i].sent_at > t_restore;
        }
        if (phase == 0 && complete_before >= 20) {
            inject();
            t_inject = ei_now();
            phase = 1;
        } else if (phase == 1 && links >= 10) {
            restore();
            t_restore = ei_now();
            phase = 2;
        } else if (phase == 2 && complete_after >= 20) {
            phase = 3;
        }
    }
    stream_drain(&s);
    assert_int_equal(s.duplicates, 0);
    assert_true(first_link - t_inject <= (HB_TIMEOUT_MS + LINK_SLACK_MS) / 1e3);
    printf("  %d requests: first link answer %.0f ms after the fault, %d link answers, "
           "%d complete after the restore\n",
           s.sent, (first_link - t_inject) * 1e3, links, complete_after);
    check_stats_agree(&s.t);
    client_destroy(&g_stream.c);
}

static void einet_fault(const char *a, const char *b, const char *c, const char *d)
{
    int rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "fault",
                         "--coordinator", g_cluster.clients, a, b, c, d, NULL);
    if (rc != 0)
        fail_msg("einet fault %s %s %s %s: exit %d: %s", a, b, c ? c : "", d ? d : "", rc,
                 g_err);
}

static void cut_edge_cloud(void)
{
    einet_fault("--link", "edge-cloud", "--down", "60");
}

static void restore_edge_cloud(void)
{
    einet_fault("--link", "edge-cloud", "--clear", NULL);
}

static void test_cut(void **state)
{
    (void)state;
    run_fault_stream(cut_edge_cloud, restore_edge_cloud, 0);
}

static void kill_cloud(void)
{
    pid_t pid = itest_cluster_pid(&g_cluster, "cloud");
    assert_true(pid > 0);
    assert_int_equal(kill(pid, SIGKILL), 0);
}

static void restart_cloud(void)
{
    assert_int_equal(itest_cluster_restart(&g_cluster), 0);
}

static void test_kill(void **state)
{
    (void)state;
    run_fault_stream(kill_cloud, restart_cloud, 1);
}

/* `einet fault --kill edge`: the edge node dies at once; requests are answered `link` from
 * the device's exits until deploy/local.sh up brings the edge back. */
static void test_killcmd(void **state)
{
    (void)state;
    einet_fault("--kill", "edge", NULL, NULL);
    double t0 = ei_now();
    einet_StatsReply *st = calloc(1, sizeof *st);
    for (;;) {
        stats_query(st);
        if (!st->nodes[1].healthy)
            break;
        if (ei_now() - t0 > (HB_TIMEOUT_MS + LINK_SLACK_MS) / 1e3)
            fail_msg("edge still healthy %.0f ms after --kill", (ei_now() - t0) * 1e3);
        usleep(20000);
    }
    free(st);
    assert_true(itest_cluster_pid(&g_cluster, "edge") < 0);
    stats_reset();
    infer_line_t *lines = calloc(20, sizeof *lines);
    tally_t t = {0};
    run_infer(lines, 20, &t, NULL);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(lines[i].status, einet_Status_STATUS_LINK);
        assert_true(lines[i].exit <= 2);
    }
    check_stats_agree(&t);
    assert_int_equal(itest_cluster_restart(&g_cluster), 0);
    memset(&t, 0, sizeof t);
    stats_reset();
    run_infer(lines, 20, &t, NULL);
    for (int i = 0; i < 20; i++)
        assert_int_equal(lines[i].status, einet_Status_STATUS_COMPLETE);
    free(lines);
}

/* ---- bad input to every socket ---- */

typedef struct junk {
    const char *what;
    int frames;
    size_t size[3];
    int kind; /* 0: random bytes; else the envelope of junk_envelope(kind) and zeroed data */
} junk_t;

enum { J_RANDOM, J_TRUNCATED, J_VERSION, J_BAD_FRAME, J_WRONG_MAP, J_WRONG_INPUT };

static const junk_t junks[] = {
    {"random bytes", 1, {57}, J_RANDOM},
    {"empty frame", 1, {0}, J_RANDOM},
    {"oversized envelope", 1, {WIRE_ENVELOPE_MAX + 100}, J_RANDOM},
    {"three frames", 3, {10, 10, 10}, J_RANDOM},
    {"truncated request", 1, {0}, J_TRUNCATED},
    {"unknown version", 1, {0}, J_VERSION},
    {"tensor frame disagreeing with its shape", 2, {0, 100}, J_BAD_FRAME},
    {"feature map of the wrong shape for its block", 2, {0, 64 * 7 * 7 * 4}, J_WRONG_MAP},
    {"request of the wrong input shape", 2, {0, 3 * 28 * 28 * 4}, J_WRONG_INPUT},
};

#define N_JUNK ((int)(sizeof junks / sizeof junks[0]))

/* The envelope bytes of a junk message into buf; returns its length. */
static size_t junk_envelope(int kind, uint8_t *buf, size_t cap)
{
    einet_Envelope *env = calloc(1, sizeof *env);
    size_t len = 0;
    ei_err_t err;
    if (kind == J_BAD_FRAME || kind == J_WRONG_MAP) {
        /* After block 2 the map is 32x14x14; J_WRONG_MAP claims 64x7x7 (and sends that). */
        wire_env_init(env, einet_Envelope_feature_map_tag);
        einet_FeatureMap *f = &env->body.feature_map;
        f->request_id = 999999;
        f->block = 2;
        f->plan_count = (pb_size_t)g_blocks;
        for (int k = 0; k < g_blocks; k++)
            f->plan[k] = true;
        uint32_t good[4] = {1, 32, 14, 14}, bad[4] = {1, 64, 7, 7};
        wire_meta_set(&f->tensor, &f->has_tensor, kind == J_WRONG_MAP ? bad : good, 4);
        size_t bytes = kind == J_WRONG_MAP ? 64 * 7 * 7 * 4 : 32 * 14 * 14 * 4;
        assert_int_equal(wire_encode(env, bytes, buf, cap, &len, &err), 0);
    } else {
        wire_env_init(env, einet_Envelope_request_tag);
        uint32_t shape[4] = {1, kind == J_WRONG_INPUT ? 3 : 1, 28, 28};
        wire_meta_set(&env->body.request.input, &env->body.request.has_input, shape, 4);
        env->seq = 4242;
        assert_int_equal(wire_encode(env, shape[1] * 784 * 4, buf, cap, &len, &err), 0);
        if (kind == J_TRUNCATED)
            len = len > 6 ? len - 5 : 1;
        if (kind == J_VERSION)
            buf[1] = 2; /* field 1 (version) is the first byte pair: 0x08 0x01 */
    }
    free(env);
    return len;
}

/* Lines of NAME's log that contain what. */
static int log_lines(const itest_cluster_t *c, const char *name, const char *what)
{
    char path[512], line[1024];
    snprintf(path, sizeof path, "%s/%s.log", c->run_dir, name);
    FILE *f = fopen(path, "r");
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        n += strstr(line, what) != NULL;
    if (f)
        fclose(f);
    return n;
}

static int send_junk(void *sock, const junk_t *j, ei_rng_t *rng)
{
    uint8_t *buf = calloc(1, 64 * 7 * 7 * 4 + WIRE_ENVELOPE_MAX);
    int rc = 0;
    for (int f = 0; f < j->frames && !rc; f++) {
        size_t n = j->size[f];
        if (f == 0 && j->kind)
            n = junk_envelope(j->kind, buf, WIRE_ENVELOPE_MAX);
        else if (j->kind)
            memset(buf, 0, n);
        else
            for (size_t k = 0; k < n; k++)
                buf[k] = (uint8_t)ei_rng_next(rng);
        rc = zmq_send(sock, buf, n, f + 1 < j->frames ? ZMQ_SNDMORE : 0) < 0;
    }
    free(buf);
    return rc;
}

static void test_badinput(void **state)
{
    (void)state;
    const char *endpoints[] = {g_cluster.clients, g_cluster.nodes, g_cluster.edge_bind,
                               g_cluster.cloud_bind};
    const char *names[] = {"coordinator clients", "coordinator nodes", "edge bind",
                           "cloud bind"};
    einet_StatsReply *before = calloc(1, sizeof *before), *after = calloc(1, sizeof *after);
    stats_query(before);
    void *ctx = zmq_ctx_new();
    ei_rng_t rng;
    ei_rng_seed(&rng, 7);
    int to_coord = 0, errors_back = 0, rejected_back = 0;
    for (int e = 0; e < 4; e++) {
        void *sock = zmq_socket(ctx, ZMQ_DEALER);
        /* Linger, so closing the socket delivers what is still queued. */
        int linger = 3000, one = 1, tmo = 3000;
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(sock, ZMQ_IMMEDIATE, &one, sizeof one);
        zmq_setsockopt(sock, ZMQ_SNDTIMEO, &tmo, sizeof tmo);
        zmq_setsockopt(sock, ZMQ_IDENTITY, "junk-sender", 11);
        assert_int_equal(zmq_connect(sock, endpoints[e]), 0);
        for (size_t j = 0; j < sizeof junks / sizeof junks[0]; j++) {
            if (send_junk(sock, &junks[j], &rng))
                fail_msg("%s: could not send %s", names[e], junks[j].what);
            /* A request of the wrong shape decodes: it is answered `rejected`, not
             * counted as a bad message. */
            to_coord += e == 1 || (e == 0 && junks[j].kind != J_WRONG_INPUT);
        }
        /* The coordinator's client endpoint answers each refusal with an Error. */
        if (e == 0) {
            zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
            while (zmq_poll(&item, 1, 1000) > 0) {
                char buf[WIRE_ENVELOPE_MAX];
                int n = zmq_recv(sock, buf, sizeof buf, 0);
                einet_Envelope *env = calloc(1, sizeof *env);
                if (n > 0 && wire_decode((uint8_t *)buf, (size_t)n, WIRE_NO_TENSOR, env, NULL) == 0) {
                    errors_back += env->which_body == einet_Envelope_error_tag;
                    rejected_back += env->which_body == einet_Envelope_answer_tag &&
                                     env->body.answer.status == einet_Status_STATUS_REJECTED;
                }
                free(env);
            }
        }
        zmq_close(sock);
    }
    zmq_ctx_term(ctx);
    printf("  %d bad messages to the coordinator; on the client endpoint %d error replies, %d "
           "rejected answers\n",
           to_coord, errors_back, rejected_back);
    /* Each refusal on the client endpoint is answered: an Error, or `rejected`. */
    assert_int_equal(errors_back, N_JUNK - 1);
    assert_int_equal(rejected_back, 1);
    /* Still serving, and healthy: a fresh stream is answered in full, and correctly. */
    infer_line_t *lines = calloc(50, sizeof *lines);
    tally_t t = {0};
    run_infer(lines, 50, &t, NULL);
    for (int i = 0; i < 50; i++)
        assert_string_equal(client_status_name(lines[i].status), "complete");
    free(lines);
    stats_query(after);
    if (after->bad_messages < before->bad_messages + (uint64_t)to_coord)
        fail_msg("bad_messages went from %llu to %llu after %d bad messages to the coordinator",
                 (unsigned long long)before->bad_messages,
                 (unsigned long long)after->bad_messages, to_coord);
    for (int i = 0; i < after->nodes_count; i++)
        assert_true(after->nodes[i].healthy);
    /* The nodes count and log what their bind socket refused. */
    assert_true(log_lines(&g_cluster, "edge", "refused on bind") >= N_JUNK);
    assert_true(log_lines(&g_cluster, "cloud", "refused on bind") >= N_JUNK);
    free(before);
    free(after);
}

/* ---- the device's class-specific early exit ---- */

/* The number in "... N what" of the `stopped:` line of NAME's log (the node's totals). */
static long long stopped_count(const char *name, const char *what)
{
    char path[512], line[1024];
    snprintf(path, sizeof path, "%s/%s.log", g_cluster.run_dir, name);
    FILE *f = fopen(path, "r");
    long long n = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (!strstr(line, " stopped: "))
            continue;
        char *at = strstr(line, what);
        if (!at)
            fail_msg("%s.log: no '%s' in %s", name, what, line);
        while (at > line && at[-1] == ' ')
            at--;
        while (at > line && at[-1] >= '0' && at[-1] <= '9')
            at--;
        n = atoll(at);
    }
    if (f)
        fclose(f);
    if (n < 0)
        fail_msg("%s.log has no 'stopped:' line", name);
    return n;
}

/* What the device must do with test image i: run conv parts 1..layer at batch 1, keep their
 * maps, ee_check. 1: fires, with P(k) in *p_k. */
static int ee_fires(ee_t *ee, int i, float *p_k)
{
    ei_err_t err;
    const nn_tensor_t *taps[EE_MAX_LAYERS] = {0};
    nn_tensor_t x = nn_tensor_view(g_test->images + (size_t)i * 784, 1, 1, g_test->h, g_test->w);
    const nn_tensor_t *y = &x;
    for (int k = 1; k <= ee_layer(ee); k++) {
        y = nn_model_conv(g_model, k - 1, y, &err);
        if (!y)
            fail_msg("image %d block %d: %s", i, k, err.msg);
        taps[k - 1] = y;
    }
    int fired = ee_check(ee, taps, p_k, &err);
    if (fired < 0)
        fail_msg("image %d: ee_check: %s", i, err.msg);
    return fired;
}

static void test_ee(void **state)
{
    (void)state;
    const char *path = g_cluster.opts.device_ee;
    if (!path)
        fail_msg("the cluster's device runs no EE: name `ee` first");
    if (g_sent)
        fail_msg("%ld requests were sent before: the nodes' totals would not be this case's",
                 g_sent);
    char file[1024];
    snprintf(file, sizeof file, "%s/%s", ITEST_SOURCE_DIR, path);
    ei_err_t err;
    ee_t *ee = ee_load(file, g_model, 1, &err);
    if (!ee)
        fail_msg("%s", err.msg);
    const int k = ee_target(ee), layer = ee_layer(ee);
    assert_int_equal(tier_of_exit(layer), einet_Tier_TIER_DEVICE);
    int n = 300, fired = 0, went_on = 0, ee_correct = 0, k_went_on = 0;
    infer_line_t *lines = NULL;
    tally_t t;
    for (;;) {
        free(lines);
        lines = calloc((size_t)n, sizeof *lines);
        memset(&t, 0, sizeof t);
        stats_reset();
        run_infer(lines, n, &t, NULL);
        fired = went_on = ee_correct = k_went_on = 0;
        for (int r = 0; r < n; r++) {
            const infer_line_t *l = &lines[r];
            float p_k = -1;
            int fires = ee_fires(ee, l->index, &p_k);
            if (fires) {
                if (l->status != einet_Status_STATUS_DEVICE_EE || l->tier != einet_Tier_TIER_DEVICE)
                    fail_msg("image %d: P(%d) %.6f >= alpha %g, but the answer is %s from tier %d "
                             "(exit %d)",
                             l->index, k, p_k, ee_alpha(ee), client_status_name(l->status),
                             l->tier, l->exit);
                assert_int_equal(l->cls, k);
                assert_int_equal(l->exit, layer);
                if (l->conf < p_k - 1e-5 || l->conf > p_k + 1e-5)
                    fail_msg("image %d: device_ee confidence %.7f, P(k) here %.7f", l->index,
                             l->conf, p_k);
                fired++;
                ee_correct += l->label == k;
            } else {
                if (l->status != einet_Status_STATUS_COMPLETE)
                    fail_msg("image %d: P(%d) %.6f < alpha %g, but the answer is %s (exit %d)",
                             l->index, k, p_k, ee_alpha(ee), client_status_name(l->status),
                             l->exit);
                assert_int_equal(l->exit, g_blocks); /* and run_infer compared it */
                assert_int_equal(l->tier, einet_Tier_TIER_CLOUD);
                went_on++;
                k_went_on += l->label == k;
            }
        }
        if ((fired > 0 && went_on > 0) || n >= 1000)
            break;
        n = 1000; /* not both kinds yet: more images */
    }
    assert_true(fired > 0);
    assert_true(went_on > 0);
    printf("  %d images, class %d after block %d at alpha %g: %d answered device_ee (%d of "
           "them right: of class %d), %d went on (%d of class %d)\n",
           n, k, layer, ee_alpha(ee), fired, ee_correct, k, went_on, k_went_on, k);
    /* The statistics: as many device_ee answers as the client got, and the accuracy over
     * all answers (the EE's included: class k right when the label is k). */
    check_stats_agree(&t);
    einet_StatsReply *st = calloc(1, sizeof *st);
    stats_query(st);
    assert_true(st->by_status_count > einet_Status_STATUS_DEVICE_EE);
    assert_int_equal(st->by_status[einet_Status_STATUS_DEVICE_EE], fired);
    assert_int_equal(st->by_status[einet_Status_STATUS_COMPLETE], went_on);
    free(st);
    /* Edge and cloud never saw the device_ee requests: their totals at stop. Then the cluster
     * comes back for any case named after this one. */
    assert_int_equal(itest_cluster_stop(&g_cluster), 0);
    long long dev_tasks = stopped_count("device", "tasks");
    long long dev_out = stopped_count("device", "maps out");
    long long edge_in = stopped_count("edge", "maps in");
    long long edge_out = stopped_count("edge", "maps out");
    long long cloud_in = stopped_count("cloud", "maps in");
    printf("  node totals: device %lld tasks, %lld maps out; edge %lld maps in, %lld out; cloud "
           "%lld maps in\n",
           dev_tasks, dev_out, edge_in, edge_out, cloud_in);
    assert_int_equal(dev_tasks, n);
    assert_int_equal(dev_out, went_on);
    assert_int_equal(edge_in, went_on);
    assert_int_equal(edge_out, went_on);
    assert_int_equal(cloud_in, went_on);
    assert_int_equal(itest_cluster_restart(&g_cluster), 0);
    free(lines);
    ee_destroy(&ee);
}

/* Dynamic batching: every node takes up to 16 queued requests as one batch, waiting up to
 * 20 ms for it to fill, and 64 requests are kept in flight, so batches form whatever the
 * machine's speed. Every request is answered exactly once, complete, with exactly what the
 * single-process forward at batch 1 gives (run_infer compares class and confidence), and
 * the nodes did run batches of more than one request (their totals at stop). A batch's
 * results travel batched too (proto/messages.proto, Batch): a node that ran a batch of
 * several sent coalesced messages, and the next tier unpacked maps from them, each one
 * answered as above; and the coordinator's tasks made in one turn of its loop reached the
 * device as one batch. */
static void test_batched(void **state)
{
    (void)state;
    enum { N = 400 };
    infer_line_t *lines = calloc(N, sizeof *lines);
    tally_t t = {0};
    stats_reset();
    run_infer_window(lines, N, &t, NULL, 64);
    for (int i = 0; i < N; i++) {
        assert_string_equal(client_status_name(lines[i].status), "complete");
        assert_int_equal(lines[i].exit, g_blocks);
    }
    check_stats_agree(&t);
    assert_int_equal(itest_cluster_stop(&g_cluster), 0);
    static const char *const tiers[] = {"device", "edge", "cloud"};
    for (int i = 0; i < 3; i++) {
        long long batches = stopped_count(tiers[i], "batches");
        long long largest = stopped_count(tiers[i], "largest batch");
        printf("  %s: %lld batches, largest %lld\n", tiers[i], batches, largest);
        assert_true(largest > 1 && largest <= 16);
        assert_true(batches >= (N + 15) / 16 && batches < N);
        long long coalesced = stopped_count(tiers[i], "coalesced sends");
        long long unpacked = stopped_count(tiers[i], "maps from batches");
        printf("  %s: %lld coalesced sends, %lld maps from batches\n", tiers[i], coalesced,
               unpacked);
        /* a batch of several that ran to this node's end sent them its exits or maps */
        assert_true(coalesced > 0);
        /* the tier before ran batches of several: its maps came batched */
        if (i > 0)
            assert_true(unpacked > 1 && unpacked <= N);
        else
            assert_int_equal(unpacked, 0);
        /* the coordinator's tasks of one turn came to the device as one batch */
        long long tasks = stopped_count(tiers[i], "tasks from batches");
        printf("  %s: %lld tasks from batches\n", tiers[i], tasks);
        if (i == 0)
            assert_true(tasks > 1 && tasks <= N);
        else
            assert_int_equal(tasks, 0);
    }
    assert_int_equal(stopped_count("device", "tasks"), N);
    assert_int_equal(stopped_count("cloud", "maps in"), N);
    assert_int_equal(itest_cluster_restart(&g_cluster), 0);
    free(lines);
}

/* ---- stop rules ---- */

#define STOP_PREDICTOR "models/fmnist-8exit.profile/predictor-correctness.safetensors"
#define STOP_DEFAULT "entropy:0.2" /* the cluster's rule in this case */
/* A value this close to a rule's threshold may fall either way between this process and
 * a node (the same arithmetic in another order): the image is then not held to one side. */
#define STOP_BORDER 1e-4

typedef struct stop_expect {
    int status, exit, border;
} stop_expect_t;

/* Where rule must stop test image i, as a node runs it (planner/stop.h): the threshold
 * rules look at every exit, einet's runs exit 1, then the branches its predictor gives a
 * chance, and stops where the predicted probability of being right reaches A. */
static stop_expect_t stop_expected(int i, const einet_StopRule *r, predictor_t *pred)
{
    const float *p = forward(i);
    double scores[WIRE_MAX_BLOCKS], A = r->threshold, v = 0;
    uint8_t executed[WIRE_MAX_BLOCKS] = {0};
    stop_expect_t e = {einet_Status_STATUS_COMPLETE, g_blocks, 0};
    int einet = r->kind == einet_StopKind_STOP_EINET;
    for (int k = 1; k < g_blocks && r->kind != einet_StopKind_STOP_NONE; k++) {
        const float *pk = p + (size_t)(k - 1) * CLASSES;
        if (einet && k > 1) {
            e.border |= fabs(scores[k - 1] - (A - STOP_EINET_MARGIN)) < STOP_BORDER;
            if (!stop_einet_branch(A, scores[k - 1]))
                continue;
        }
        executed[k - 1] = 1;
        if (einet)
            predictor_predict(pred, p, executed, k, scores);
        v = einet ? scores[k - 1]
                  : r->kind == einet_StopKind_STOP_ENTROPY ? stop_entropy(pk, CLASSES)
                                                           : stop_confidence(pk, CLASSES);
        e.border |= fabs(v - A) < STOP_BORDER;
        if (stop_fires(r->kind, A, pk, CLASSES, einet ? scores[k - 1] : 0)) {
            e.status = einet_Status_STATUS_EARLY;
            e.exit = k;
            return e;
        }
    }
    return e;
}

/* Node totals as the answers imply them: how many requests each tier saw. */
typedef struct stop_flow {
    long long sent, early[4]; /* early answers by tier */
} stop_flow_t;

/* One rule over n images: every answer where stop_expected says; returns the early ones. */
static int stop_case(const char *rule, int n, predictor_t *pred, stop_flow_t *flow)
{
    einet_StopRule r;
    char why[160];
    const char *effective = rule ? rule : STOP_DEFAULT;
    assert_int_equal(wire_stop_parse(effective, &r, why, sizeof why), 0);
    infer_line_t *lines = calloc((size_t)n, sizeof *lines);
    tally_t t = {0};
    stats_reset();
    run_infer_with(lines, n, &t, NULL, rule);
    int early = 0, border = 0, tiers[4] = {0};
    for (int i = 0; i < n; i++) {
        const infer_line_t *l = &lines[i];
        stop_expect_t e = stop_expected(l->index, &r, pred);
        if (e.border && (l->status != e.status || l->exit != e.exit)) {
            border++; /* a value at the threshold: either side is right */
        } else if (l->status != e.status || l->exit != e.exit) {
            fail_msg("%s, image %d: answered %s at exit %d (tier %d), the forward stops %s at "
                     "exit %d",
                     effective, l->index, client_status_name(l->status), l->exit, l->tier,
                     client_status_name(e.status), e.exit);
        }
        assert_true(l->status == einet_Status_STATUS_EARLY ||
                    l->status == einet_Status_STATUS_COMPLETE);
        /* run_infer compared class and confidence with the forward and the tier with the
         * exit's. */
        if (l->status == einet_Status_STATUS_EARLY) {
            assert_true(l->exit < g_blocks);
            early++;
            tiers[l->tier]++;
            flow->early[l->tier]++;
        } else {
            assert_int_equal(l->exit, g_blocks);
        }
    }
    flow->sent += n;
    assert_true(border <= n / 100);
    printf("  %-16s %d images: %d early (device %d, edge %d, cloud %d), %d complete%s\n",
           effective, n, early, tiers[1], tiers[2], tiers[3], n - early,
           border ? " (some at the threshold)" : "");
    /* The statistics: early answers per exit and tier, and their accuracy. */
    check_stats_agree(&t);
    einet_StatsReply *s = calloc(1, sizeof *s);
    stats_query(s);
    uint64_t by_exit[WIRE_MAX_BLOCKS + 1] = {0}, right_exit[WIRE_MAX_BLOCKS + 1] = {0};
    uint64_t by_tier[4] = {0}, right_tier[4] = {0};
    for (int i = 0; i < n; i++) {
        const infer_line_t *l = &lines[i];
        if (l->status != einet_Status_STATUS_EARLY)
            continue;
        by_exit[l->exit]++;
        by_tier[l->tier]++;
        right_exit[l->exit] += l->cls == l->label;
        right_tier[l->tier] += l->cls == l->label;
    }
    assert_int_equal(s->early_by_exit_count, g_blocks + 1);
    assert_int_equal(s->early_by_tier_count, 4);
    for (int k = 0; k <= g_blocks; k++) {
        assert_int_equal(s->early_by_exit[k], by_exit[k]);
        assert_int_equal(s->early_labelled_by_exit[k], by_exit[k]);
        assert_int_equal(s->early_correct_by_exit[k], right_exit[k]);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(s->early_by_tier[i], by_tier[i]);
        assert_int_equal(s->early_correct_by_tier[i], right_tier[i]);
    }
    free(s);
    free(lines);
    return early;
}

static void test_stop(void **state)
{
    (void)state;
    if (g_sent)
        fail_msg("%ld requests were sent before: the nodes' totals would not be this case's",
                 g_sent);
    ei_err_t err;
    char file[1024];
    snprintf(file, sizeof file, "%s/%s", ITEST_SOURCE_DIR, STOP_PREDICTOR);
    predictor_t *pred = predictor_load(file, &err);
    if (!pred)
        fail_msg("%s", err.msg);
    /* The cluster plans with the same predictor and has a rule of its own. */
    assert_int_equal(itest_cluster_stop(&g_cluster), 0);
    static const char *const inis[] = {"coordinator", "device", "edge", "cloud"};
    for (int i = 0; i < 4; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s.ini", g_cluster.dir, inis[i]);
        FILE *f = fopen(path, "a");
        assert_non_null(f);
        fprintf(f, "predictor = %s\n%s", file, i == 0 ? "stop = " STOP_DEFAULT "\n" : "");
        assert_int_equal(fclose(f), 0);
    }
    assert_int_equal(itest_cluster_restart(&g_cluster), 0);
    stop_flow_t flow = {0};
    const int n = 300;
    assert_true(stop_case(NULL, n, pred, &flow) > 0);        /* the cluster's rule */
    assert_int_equal(stop_case("none", n, pred, &flow), 0); /* overrides it */
    assert_true(stop_case("confidence:0.95", n, pred, &flow) > 0);
    assert_true(stop_case("entropy:0.1", n, pred, &flow) > 0);
    assert_true(stop_case("einet:0.97", n, pred, &flow) > 0);
    predictor_destroy(&pred);
    /* Each tier saw only the requests no earlier tier answered: the nodes' totals. */
    assert_int_equal(itest_cluster_stop(&g_cluster), 0);
    long long to_edge = flow.sent - flow.early[1], to_cloud = to_edge - flow.early[2];
    printf("  node totals: device %lld tasks, %lld early, %lld maps out; edge %lld maps in, %lld "
           "early, %lld out; cloud %lld maps in, %lld early\n",
           stopped_count("device", "tasks"), stopped_count("device", "early"),
           stopped_count("device", "maps out"), stopped_count("edge", "maps in"),
           stopped_count("edge", "early"), stopped_count("edge", "maps out"),
           stopped_count("cloud", "maps in"), stopped_count("cloud", "early"));
    assert_true(flow.early[1] > 0 && flow.early[2] > 0);
    assert_int_equal(stopped_count("device", "tasks"), flow.sent);
    assert_int_equal(stopped_count("device", "early"), flow.early[1]);
    assert_int_equal(stopped_count("device", "maps out"), to_edge);
    assert_int_equal(stopped_count("edge", "maps in"), to_edge);
    assert_int_equal(stopped_count("edge", "early"), flow.early[2]);
    assert_int_equal(stopped_count("edge", "maps out"), to_cloud);
    assert_int_equal(stopped_count("cloud", "maps in"), to_cloud);
    assert_int_equal(stopped_count("cloud", "early"), flow.early[3]);
    if (g_cluster.opts.batch_max > 1) { /* the device did run batches that some left early */
        printf("  device: largest batch %lld\n", stopped_count("device", "largest batch"));
        assert_true(stopped_count("device", "largest batch") > 1);
    }
    assert_int_equal(itest_cluster_restart(&g_cluster), 0);
}

/* ---- setup ---- */

static const itest_case_t cases[] = {
    {"forward", test_forward, {HB_MS, HB_TIMEOUT_MS, {0}, 0, NULL, 0, 0, NULL}},
    {"deadline", test_deadline, {HB_MS, DEADLINE_HB_TIMEOUT_MS, {0}, 0, NULL, 0, 0, NULL}},
    {"deadline_us", test_deadline_us, {HB_MS, HB_TIMEOUT_MS, {0}, 0, NULL, 0, 0, NULL}},
    {"ee", test_ee, {HB_MS, HB_TIMEOUT_MS, {0}, 0, "models/ee-class1.safetensors", 0, 0, NULL}},
    {"cut", test_cut, {HB_MS, HB_TIMEOUT_MS, {0}, 0, NULL, 0, 0, NULL}},
    {"kill", test_kill, {HB_MS, HB_TIMEOUT_MS, {0}, 0, NULL, 0, 0, NULL}},
    {"killcmd", test_killcmd, {HB_MS, HB_TIMEOUT_MS, {0}, 0, NULL, 0, 0, NULL}},
    {"badinput", test_badinput, {HB_MS, HB_TIMEOUT_MS, {0}, 0, NULL, 0, 0, NULL}},
    {"batched", test_batched, {HB_MS, HB_TIMEOUT_MS, {0}, 0, NULL, 16, 20, NULL}},
    {"stop", test_stop, {HB_MS, HB_TIMEOUT_MS, {0}, 0, NULL, 0, 0, NULL}},
    {"stopbatched", test_stop, {HB_MS, HB_TIMEOUT_MS, {0}, 0, NULL, 16, 20, NULL}},
};

static void drop_stream(void) { client_destroy(&g_stream.c); }

static const itest_suite_t suite = {
    .prog = "test_cluster",
    .usage = "forward, deadline, deadline_us, cut, kill, killcmd, badinput, ee, batched, stop, "
             "stopbatched; the cases share one cluster made with the first one's options",
    .cases = cases,
    .n_cases = (int)(sizeof cases / sizeof cases[0]),
    .cluster = &g_cluster,
    .before_down = drop_stream,
};

int main(int argc, char **argv)
{
    int picked[sizeof cases / sizeof cases[0]];
    int n = itest_pick_cases(&suite, argc, argv, picked);
    if (n == 0)
        return 2;
    char model_path[1024];
    ei_err_t err;
    if (!itest_have_programs())
        return ITEST_SKIP;
    if (!itest_model_path(model_path, sizeof model_path))
        return ITEST_SKIP;
    g_test = nn_dataset_load(NULL, "test", &err);
    g_model = g_test ? nn_model_load(model_path, 1, &err) : NULL;
    if (!g_model) {
        fprintf(stderr, "test_cluster: %s\n", err.msg);
        return 1;
    }
    nn_model_prepare_inference(g_model);
    g_blocks = nn_model_blocks(g_model);
    g_probs = calloc((size_t)MAX_REQ * (size_t)g_blocks * CLASSES, sizeof *g_probs);
    g_done = calloc(MAX_REQ, 1);
    int rc = itest_run_cases(&suite, picked, n, argv[1]);
    free(g_probs);
    free(g_done);
    nn_model_destroy(&g_model);
    nn_dataset_destroy(&g_test);
    return rc;
}
