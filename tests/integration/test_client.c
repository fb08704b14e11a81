/* The client commands (einet infer, stats, result, fault) against a small fake coordinator:
 * a ROUTER socket in a thread of this test that speaks the wire protocol and can be told
 * to misbehave (stay silent, answer twice, report an unhealthy node, refuse a fault). The
 * einet program runs as a real child process. What the fake received is checked as well
 * as what einet printed: the images and labels sent are the test set's. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <zmq.h>

#include "common/ei.h"
#include "itest.h"
#include "nn/dataset.h"
#include "wire/wire.h"

#define MAX_SEEN 256

typedef enum { FAKE_NORMAL, FAKE_SILENT_ODD, FAKE_TWICE } fake_mode_t;

typedef struct fake {
    void *ctx, *sock;
    char endpoint[64];
    pthread_t thread;
    volatile int stop;
    fake_mode_t mode;
    int edge_unhealthy, refuse_faults;
    /* what arrived */
    pthread_mutex_t lock;
    int requests, bad_shape, deadline_ms;
    int seen[MAX_SEEN];        /* requests per client_id */
    double checksum[MAX_SEEN]; /* sum of the image's pixels */
    int label[MAX_SEEN];
    einet_Fault last_fault;
    int faults;
    uint64_t next_id;
} fake_t;

static nn_dataset_t *g_test;

static void fake_send(fake_t *f, zmq_msg_t *id, einet_Envelope *env)
{
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len;
    ei_err_t err;
    env->version = WIRE_VERSION;
    if (wire_encode(env, WIRE_NO_TENSOR, buf, sizeof buf, &len, &err) != 0) {
        fprintf(stderr, "fake: encode: %s\n", err.msg);
        return;
    }
    zmq_msg_t copy;
    zmq_msg_init(&copy);
    zmq_msg_copy(&copy, id);
    zmq_msg_send(&copy, f->sock, ZMQ_SNDMORE);
    zmq_send(f->sock, buf, len, 0);
}

static void fake_on_request(fake_t *f, zmq_msg_t *id, const einet_Envelope *in,
                            const void *bytes, size_t numel)
{
    /* ZeroMQ may hand a small frame at any offset: copy it to read floats. */
    float img[784] = {0};
    memcpy(img, bytes, (numel < 784 ? numel : 784) * sizeof(float));
    const einet_Request *r = &in->body.request;
    pthread_mutex_lock(&f->lock);
    f->requests++;
    f->bad_shape += numel != 784 || r->input.shape_count != 4 || r->input.shape[2] != 28;
    if (r->client_id < MAX_SEEN) {
        double sum = 0;
        for (size_t i = 0; i < numel && i < 784; i++)
            sum += img[i];
        f->seen[r->client_id]++;
        f->checksum[r->client_id] = sum;
        f->label[r->client_id] = r->has_label ? (int)r->label : -1;
    }
    f->deadline_ms = r->has_deadline_ms ? (int)r->deadline_ms : 0;
    pthread_mutex_unlock(&f->lock);
    if (f->mode == FAKE_SILENT_ODD && r->client_id % 2)
        return;
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_answer_tag);
    env.reply_to = in->seq;
    einet_Answer *a = &env.body.answer;
    a->request_id = ++f->next_id;
    a->client_id = r->client_id;
    a->status = einet_Status_STATUS_COMPLETE;
    a->exit = 8;
    a->tier = einet_Tier_TIER_CLOUD;
    a->class_id = r->has_label ? r->label : 0;
    a->confidence = 0.875f;
    a->latency_us = 1500 + 10 * r->client_id;
    a->has_label = r->has_label;
    a->label = r->label;
    fake_send(f, id, &env);
    if (f->mode == FAKE_TWICE)
        fake_send(f, id, &env);
}

static void fake_on_stats(fake_t *f, zmq_msg_t *id, const einet_Envelope *in)
{
    einet_Envelope *env = calloc(1, sizeof *env);
    wire_env_init(env, einet_Envelope_stats_reply_tag);
    env->reply_to = in->seq;
    einet_StatsReply *s = &env->body.stats_reply;
    s->requests = 12;
    s->by_status_count = 7;
    s->by_status[1] = 10;
    s->by_status[3] = 2;
    s->by_exit_count = 9;
    s->by_exit[8] = 10;
    s->by_exit[5] = 2;
    s->by_tier_count = 4;
    s->by_tier[2] = 2;
    s->by_tier[3] = 10;
    s->labelled = 12;
    s->correct = 11;
    s->latency_p50_ms = 3.5f;
    s->latency_p95_ms = 7.25f;
    s->latency_p99_ms = 9.0f;
    s->links_count = 2;
    for (int i = 0; i < 2; i++)
        s->links[i] = (einet_LinkStats){(einet_Link)(i + 1), 0.05f, 900.0f, 40, true};
    s->nodes_count = 3;
    static const int first[] = {1, 3, 6}, last[] = {2, 5, 8};
    for (int i = 0; i < 3; i++)
        s->nodes[i] = (einet_NodeStats){(einet_Tier)(i + 1), true, 20000, (uint32_t)first[i],
                                        (uint32_t)last[i], 0, "", true};
    if (f->edge_unhealthy) {
        s->nodes[1].healthy = false;
        s->nodes[1].last_seen_us = 812000;
        s->links[1].up = false;
    }
    s->bad_messages = 3;
    s->faults_seen = 1;
    s->faults_count = 1;
    s->faults[0] = (einet_FaultEvent){1234567, einet_Tier_TIER_EDGE, einet_Link_LINK_EDGE_CLOUD,
                                      "link down (injected)"};
    s->uptime_us = 60000000;
    fake_send(f, id, env);
    free(env);
}

static void fake_on_message(fake_t *f, zmq_msg_t *frames, int n)
{
    einet_Envelope *in = calloc(1, sizeof *in);
    ei_err_t err;
    size_t tbytes = n == 3 ? zmq_msg_size(&frames[2]) : WIRE_NO_TENSOR;
    if (n < 2 || wire_decode(zmq_msg_data(&frames[1]), zmq_msg_size(&frames[1]), tbytes, in,
                             &err) != 0) {
        fprintf(stderr, "fake: refused a message: %s\n", n < 2 ? "no body" : err.msg);
        free(in);
        return;
    }
    einet_Envelope out;
    switch (in->which_body) {
    case einet_Envelope_request_tag:
        fake_on_request(f, &frames[0], in, n == 3 ? zmq_msg_data(&frames[2]) : NULL,
                        n == 3 ? tbytes / 4 : 0);
        break;
    case einet_Envelope_stats_query_tag:
        fake_on_stats(f, &frames[0], in);
        break;
    case einet_Envelope_result_query_tag:
        wire_env_init(&out, einet_Envelope_result_reply_tag);
        out.reply_to = in->seq;
        if (in->body.result_query.request_id == 7) {
            einet_ResultReply *r = &out.body.result_reply;
            r->found = true;
            r->has_answer = true;
            r->answer.request_id = 7;
            r->answer.client_id = 6;
            r->answer.status = einet_Status_STATUS_LINK;
            r->answer.exit = 5;
            r->answer.tier = einet_Tier_TIER_EDGE;
            r->answer.class_id = 3;
            r->answer.confidence = 0.5f;
            r->answer.latency_us = 25000;
            snprintf(r->answer.reason, sizeof r->answer.reason, "edge-cloud down");
        }
        fake_send(f, &frames[0], &out);
        break;
    case einet_Envelope_fault_tag:
        pthread_mutex_lock(&f->lock);
        f->last_fault = in->body.fault;
        f->faults++;
        pthread_mutex_unlock(&f->lock);
        wire_env_init(&out, einet_Envelope_ack_tag);
        out.reply_to = in->seq;
        out.body.ack.ok = !f->refuse_faults;
        snprintf(out.body.ack.detail, sizeof out.body.ack.detail, "%s",
                 f->refuse_faults ? "cloud is not connected" : "relayed to edge");
        fake_send(f, &frames[0], &out);
        break;
    default:
        break;
    }
    free(in);
}

static void *fake_main(void *arg)
{
    fake_t *f = arg;
    while (!f->stop) {
        zmq_pollitem_t item = {f->sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 20) <= 0)
            continue;
        zmq_msg_t frames[4];
        int n = 0, more = 1;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, f->sock, 0) < 0)
                break;
            more = zmq_msg_more(&m);
            if (n < 4)
                frames[n++] = m;
            else
                zmq_msg_close(&m);
        }
        fake_on_message(f, frames, n);
        for (int i = 0; i < n; i++)
            zmq_msg_close(&frames[i]);
    }
    return NULL;
}

static fake_t *fake_start(fake_mode_t mode)
{
    fake_t *f = calloc(1, sizeof *f);
    f->mode = mode;
    pthread_mutex_init(&f->lock, NULL);
    f->ctx = zmq_ctx_new();
    f->sock = zmq_socket(f->ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(f->sock, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_bind(f->sock, "tcp://127.0.0.1:*"), 0);
    size_t len = sizeof f->endpoint;
    zmq_getsockopt(f->sock, ZMQ_LAST_ENDPOINT, f->endpoint, &len);
    pthread_create(&f->thread, NULL, fake_main, f);
    return f;
}

static void fake_stop(fake_t **fp)
{
    fake_t *f = *fp;
    f->stop = 1;
    pthread_join(f->thread, NULL);
    zmq_close(f->sock);
    zmq_ctx_term(f->ctx);
    pthread_mutex_destroy(&f->lock);
    free(f);
    *fp = NULL;
}

static char g_out[1 << 20], g_err[1 << 16];

/* Parses einet infer's stdout: one JSON object per line. */
static int parse_lines(const char *text, json_t **objs, int cap)
{
    int n = 0;
    const char *p = text;
    while (*p && n < cap) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        json_error_t je;
        objs[n] = json_loadb(p, len, 0, &je);
        if (!objs[n])
            fail_msg("not a JSON line: %.*s (%s)", (int)len, p, je.text);
        n++;
        p += len + (nl != NULL);
    }
    return n;
}

static double image_sum(int i)
{
    double s = 0;
    for (int k = 0; k < 784; k++)
        s += g_test->images[(size_t)i * 784 + (size_t)k];
    return s;
}

static void test_infer_streams_and_prints(void **state)
{
    (void)state;
    fake_t *f = fake_start(FAKE_NORMAL);
    int rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 30000, "infer",
                         "--coordinator", f->endpoint, "--count", "40", "--window", "4",
                         "--deadline-ms", "250", "--json", NULL);
    fake_stop(&f);
    if (rc != 0)
        fail_msg("exit %d\n%s", rc, g_err);
    json_t *objs[64];
    int n = parse_lines(g_out, objs, 64);
    assert_int_equal(n, 40);
    int got[40] = {0};
    for (int i = 0; i < n; i++) {
        json_t *o = objs[i];
        int idx = (int)json_integer_value(json_object_get(o, "index"));
        assert_true(idx >= 0 && idx < 40);
        got[idx]++;
        assert_int_equal(json_integer_value(json_object_get(o, "label")), g_test->labels[idx]);
        assert_int_equal(json_integer_value(json_object_get(o, "class")), g_test->labels[idx]);
        assert_string_equal(json_string_value(json_object_get(o, "status")), "complete");
        assert_string_equal(json_string_value(json_object_get(o, "tier")), "cloud");
        assert_int_equal(json_integer_value(json_object_get(o, "exit")), 8);
        assert_true(json_integer_value(json_object_get(o, "id")) >= 1);
        assert_float_equal(json_real_value(json_object_get(o, "confidence")), 0.875, 1e-9);
        assert_float_equal(json_real_value(json_object_get(o, "latency_ms")),
                           1.5 + 0.01 * idx, 1e-9);
        json_decref(o);
    }
    for (int i = 0; i < 40; i++)
        assert_int_equal(got[i], 1);
    /* The summary (stderr, --json) counts what was printed. */
    const char *sum = strstr(g_err, "{\"sent\"");
    assert_non_null(sum);
    json_t *s = json_loads(sum, JSON_DISABLE_EOF_CHECK, NULL);
    assert_non_null(s);
    assert_int_equal(json_integer_value(json_object_get(s, "answered")), 40);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(s, "by_status"), "complete")), 40);
    assert_float_equal(json_real_value(json_object_get(s, "accuracy")), 1.0, 1e-12);
    json_decref(s);
}

static void test_infer_sends_the_test_images(void **state)
{
    (void)state;
    fake_t *f = fake_start(FAKE_NORMAL);
    int rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 30000, "infer",
                         "--coordinator", f->endpoint, "--count", "25", "--deadline-ms", "70",
                         "--quiet", NULL);
    assert_int_equal(rc, 0);
    pthread_mutex_lock(&f->lock);
    assert_int_equal(f->requests, 25);
    assert_int_equal(f->bad_shape, 0);
    assert_int_equal(f->deadline_ms, 70);
    for (int i = 0; i < 25; i++) {
        assert_int_equal(f->seen[i], 1);
        assert_int_equal(f->label[i], g_test->labels[i]);
        assert_float_equal(f->checksum[i], image_sum(i), 1e-6);
    }
    pthread_mutex_unlock(&f->lock);
    fake_stop(&f);
}

/* A client's timeout of a few hundred ms worked when it returned well before what a hang
 * would take (the 20 s request timeout, or itest's 30 s kill): the bound leaves room for a
 * loaded, sanitizer-instrumented machine and says nothing about its speed otherwise. */
#define TIMEOUT_WORKED_S 15.0

static void test_infer_request_timeout(void **state)
{
    (void)state;
    fake_t *f = fake_start(FAKE_SILENT_ODD);
    double t0 = ei_now();
    int rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 30000, "infer",
                         "--coordinator", f->endpoint, "--count", "6", "--timeout-ms", "300",
                         NULL);
    double secs = ei_now() - t0;
    fake_stop(&f);
    assert_int_equal(rc, 1);
    assert_true(secs < TIMEOUT_WORKED_S);
    json_t *objs[8];
    int n = parse_lines(g_out, objs, 8);
    assert_int_equal(n, 3);
    for (int i = 0; i < n; i++) {
        assert_int_equal(json_integer_value(json_object_get(objs[i], "index")) % 2, 0);
        json_decref(objs[i]);
    }
    assert_non_null(strstr(g_err, "image 1: no answer within 300 ms"));
    assert_non_null(strstr(g_err, "3 of 6 images got no answer in time"));
}

static void test_infer_overall_timeout(void **state)
{
    (void)state;
    fake_t *f = fake_start(FAKE_SILENT_ODD);
    double t0 = ei_now();
    int rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 30000, "infer",
                         "--coordinator", f->endpoint, "--count", "6", "--timeout-ms", "20000",
                         "--total-timeout-ms", "400", NULL);
    double secs = ei_now() - t0;
    fake_stop(&f);
    assert_int_equal(rc, 1);
    assert_true(secs < TIMEOUT_WORKED_S);
    assert_non_null(strstr(g_err, "overall timeout: 3 of 6 images answered"));
}

static void test_infer_answered_twice(void **state)
{
    (void)state;
    fake_t *f = fake_start(FAKE_TWICE);
    int rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 30000, "infer",
                         "--coordinator", f->endpoint, "--count", "5", "--window", "1", NULL);
    fake_stop(&f);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(g_err, "answered twice"));
    json_t *objs[16];
    int n = parse_lines(g_out, objs, 16);
    assert_int_equal(n, 5); /* each printed once */
    for (int i = 0; i < n; i++)
        json_decref(objs[i]);
}

static void test_unreachable(void **state)
{
    (void)state;
    /* A port just bound and closed again: nothing listens there. */
    fake_t *f = fake_start(FAKE_NORMAL);
    char ep[64];
    snprintf(ep, sizeof ep, "%s", f->endpoint);
    fake_stop(&f);
    const char *cmds[][4] = {{"stats", NULL}, {"result", "3", NULL}, {"infer", "--count", "3", NULL},
                             {"fault", "--kill", "cloud", NULL}};
    for (int i = 0; i < 4; i++) {
        double t0 = ei_now();
        int rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 30000, cmds[i][0],
                             "--coordinator", ep, "--timeout-ms", "400",
                             cmds[i][1] ? cmds[i][1] : NULL, cmds[i][1] ? cmds[i][2] : NULL,
                             NULL);
        double secs = ei_now() - t0;
        assert_int_equal(rc, 1);
        assert_true(secs < TIMEOUT_WORKED_S);
        if (!strstr(g_err, "cannot reach the coordinator at"))
            fail_msg("%s: %s", cmds[i][0], g_err);
    }
}

static void test_stats(void **state)
{
    (void)state;
    fake_t *f = fake_start(FAKE_NORMAL);
    int rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "stats",
                         "--coordinator", f->endpoint, "--json", NULL);
    assert_int_equal(rc, 0);
    json_t *s = json_loads(g_out, 0, NULL);
    assert_non_null(s);
    assert_int_equal(json_integer_value(json_object_get(s, "requests")), 12);
    json_t *bs = json_object_get(s, "by_status");
    assert_int_equal(json_integer_value(json_object_get(bs, "complete")), 10);
    assert_int_equal(json_integer_value(json_object_get(bs, "link")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "by_exit"), "5")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "by_tier"), "edge")),
                     2);
    assert_float_equal(json_real_value(json_object_get(s, "accuracy")), 11.0 / 12, 1e-5);
    assert_float_equal(json_real_value(json_object_get(s, "latency_p95_ms")), 7.25, 1e-6);
    json_t *nodes = json_object_get(s, "nodes");
    assert_int_equal(json_array_size(nodes), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(nodes, 1), "tier")),
                        "edge");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(nodes, 2), "first_block")),
                     6);
    assert_true(json_is_true(json_object_get(json_array_get(json_object_get(s, "links"), 1), "up")));
    assert_int_equal(json_integer_value(json_object_get(s, "bad_messages")), 3);
    json_decref(s);

    rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "stats", "--coordinator",
                     f->endpoint, NULL);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(g_out, "12 requests"));
    assert_non_null(strstr(g_out, "edge-cloud"));
    assert_non_null(strstr(g_out, "link down (injected)"));

    rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "stats", "--coordinator",
                     f->endpoint, "--healthy", NULL);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(g_out, "healthy: device edge cloud"));
    f->edge_unhealthy = 1;
    rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "stats", "--coordinator",
                     f->endpoint, "--healthy", NULL);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(g_out, "unhealthy: node edge (last seen 812 ms ago), link edge-cloud down"));
    fake_stop(&f);
}

static void test_result(void **state)
{
    (void)state;
    fake_t *f = fake_start(FAKE_NORMAL);
    setenv("EINET_COORDINATOR", f->endpoint, 1); /* instead of --coordinator */
    int rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "result", "7", NULL);
    assert_int_equal(rc, 0);
    json_t *o = json_loads(g_out, 0, NULL);
    assert_non_null(o);
    assert_int_equal(json_integer_value(json_object_get(o, "id")), 7);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "link");
    assert_string_equal(json_string_value(json_object_get(o, "tier")), "edge");
    assert_string_equal(json_string_value(json_object_get(o, "reason")), "edge-cloud down");
    assert_true(json_is_false(json_object_get(o, "pending")));
    assert_true(json_is_null(json_object_get(o, "label")));
    json_decref(o);
    rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "result", "8", NULL);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(g_err, "has no request 8"));
    unsetenv("EINET_COORDINATOR");
    fake_stop(&f);
}

static void test_fault(void **state)
{
    (void)state;
    fake_t *f = fake_start(FAKE_NORMAL);
    int rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "fault",
                         "--coordinator", f->endpoint, "--link", "edge-cloud", "--down", "1.5",
                         "--loss", "12.5", NULL);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(g_out, "ok: relayed to edge"));
    assert_int_equal(f->last_fault.link, einet_Link_LINK_EDGE_CLOUD);
    assert_int_equal(f->last_fault.down_ms, 1500);
    assert_float_equal(f->last_fault.loss_pct, 12.5, 1e-6);
    assert_int_equal(f->last_fault.kill, 0);
    rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "fault", "--coordinator",
                     f->endpoint, "--link", "device-edge", "--clear", NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(f->last_fault.link, einet_Link_LINK_DEVICE_EDGE);
    assert_true(f->last_fault.clear);
    f->refuse_faults = 1;
    rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "fault", "--coordinator",
                     f->endpoint, "--kill", "cloud", NULL);
    assert_int_equal(rc, 1);
    assert_int_equal(f->last_fault.kill, einet_Tier_TIER_CLOUD);
    assert_non_null(strstr(g_err, "refused: cloud is not connected"));
    assert_int_equal(f->faults, 3);
    fake_stop(&f);
}

static void test_usage_errors(void **state)
{
    (void)state;
    const char *ep = "tcp://127.0.0.1:1";
    struct {
        const char *args[6];
        const char *msg;
    } cases[] = {
        {{"infer", "--coordinator", ep, "--count", "0"}, "--count"},
        {{"infer", "--coordinator", ep, "--deadline-ms", "-3"}, "--deadline-ms"},
        {{"infer", "--coordinator", "udp://x:1"}, "expected tcp://"},
        {{"infer"}, "--coordinator ENDPOINT is required"},
        {{"stats", "--coordinator", ep, "--bogus"}, "--bogus"},
        {{"result", "--coordinator", ep}, "ID is missing"},
        {{"result", "--coordinator", ep, "abc"}, "not a positive integer"},
        {{"fault", "--coordinator", ep}, "--link"},
        {{"fault", "--coordinator", ep, "--link", "cloud-moon"}, "cloud-moon"},
        {{"fault", "--coordinator", ep, "--kill", "edge", "--clear"}, "cannot be combined"},
        {{"fault", "--coordinator", ep, "--link", "edge-cloud", "--loss"}, "--loss"},
    };
    unsetenv("EINET_COORDINATOR");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *const *a = cases[i].args;
        int rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, a[0], a[1], a[2],
                             a[3], a[4], a[5], NULL);
        if (rc != 2 || !strstr(g_err, cases[i].msg))
            fail_msg("case %zu (%s): exit %d, stderr: %s", i, a[0], rc, g_err);
    }
    const char *cmds[] = {"infer", "stats", "result", "fault"};
    for (int i = 0; i < 4; i++) {
        int rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, cmds[i], "--help",
                             NULL);
        assert_int_equal(rc, 0);
        assert_non_null(strstr(g_out, "--coordinator ENDPOINT"));
    }
}

int main(void)
{
    ei_err_t err;
    char bin[1024];
    if (access(itest_bin("einet", bin, sizeof bin), X_OK) != 0) {
        fprintf(stderr, "SKIP: %s is not built\n", bin);
        return ITEST_SKIP;
    }
    g_test = nn_dataset_load(NULL, "test", &err);
    if (!g_test) {
        fprintf(stderr, "SKIP: %s\n", err.msg);
        return ITEST_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_infer_streams_and_prints),
        cmocka_unit_test(test_infer_sends_the_test_images),
        cmocka_unit_test(test_infer_request_timeout),
        cmocka_unit_test(test_infer_overall_timeout),
        cmocka_unit_test(test_infer_answered_twice),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_stats),
        cmocka_unit_test(test_result),
        cmocka_unit_test(test_fault),
        cmocka_unit_test(test_usage_errors),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    nn_dataset_destroy(&g_test);
    return rc;
}
