/* Attacks on a real cluster, as a matrix in the manner of CZMQ's zauth self-test: for each
 * attacker (no key, an unknown key, a client key, a stolen routing id, a stray duplicate
 * node, a forged last result, maps from a stranger or a tier that is not the previous one,
 * floods, a coordinator that sends a device forged batches of tasks) the test asserts what it gets (nothing, or a refusal that names nothing) and what
 * it changes (nothing), while legitimate traffic runs: every request answered, every
 * answer equal to the single-process forward.
 *
 * The cluster is started by deploy/local.sh with ports unique to the test; the attackers
 * are raw ZeroMQ sockets in this process (speaking einet's wire format) and extra einet-node
 * processes. `test_attack CASE...` runs the cases named on one cluster: keyless (steal,
 * orphan, stray, forgedlast, inject, flood, frames, fakecoord) or, when the first case is `keys`, the
 * cluster with CURVE on (keys, nokey, unknownkey, client, operator, nodekey, keystray).
 * docs/security.md lists the attacks and what stops each. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <czmq.h>
#include <jansson.h>
#include <pb_encode.h>
#include <zmq.h>

#include "cli/client.h"
#include "common/ei.h"
#include "itest.h"
#include "nn/dataset.h"
#include "nn/model.h"
#include "wire/sec.h"
#include "wire/wire.h"

#define CLASSES 10
#define MAX_IMG 1000
#define HB_MS 50
/* As test_cluster.c: wide margins, so a loaded machine never fails a case. */
#define HB_TIMEOUT_MS 3000
#define SLACK_MS 3000

static nn_dataset_t *g_test;
static nn_model_t *g_model;
static int g_blocks;
static float *g_probs;
static char *g_done;
static itest_cluster_t g_cluster;
static char g_out[1 << 20], g_err[1 << 16];
static char g_key[1100], g_server_key[1100]; /* the client's flags on a cluster with keys */

/* ---- references ---- */

static const float *forward(int i)
{
    if (!g_done[i]) {
        nn_tensor_t *x = nn_tensor_new(1, 1, g_test->h, g_test->w);
        memcpy(x->data, g_test->images + (size_t)i * 784, 784 * sizeof(float));
        ei_err_t err;
        assert_int_equal(nn_model_forward(g_model, x, g_probs + (size_t)i * g_blocks * CLASSES,
                                          &err), 0);
        nn_tensor_destroy(&x);
        g_done[i] = 1;
    }
    return g_probs + (size_t)i * g_blocks * CLASSES;
}

/* The class and confidence the final exit gives image i in one process. */
static int final_class(int i, double *conf)
{
    const float *p = forward(i) + (size_t)(g_blocks - 1) * CLASSES;
    int best = 0;
    for (int c = 1; c < CLASSES; c++)
        best = p[c] > p[best] ? c : best;
    *conf = p[best];
    return best;
}

/* ---- the legitimate client ---- */

/* `einet infer` arguments with the client's keys when the cluster has them. */
static int infer_argv(char **argv, int n, const char *count, const char *deadline)
{
    static char bin[1024];
    argv[n++] = (char *)itest_bin("einet", bin, sizeof bin);
    argv[n++] = (char *)"infer";
    argv[n++] = (char *)"--coordinator";
    argv[n++] = g_cluster.clients;
    argv[n++] = (char *)"--json";
    argv[n++] = (char *)"--count";
    argv[n++] = (char *)count;
    if (deadline) {
        argv[n++] = (char *)"--deadline-ms";
        argv[n++] = (char *)deadline;
    }
    if (g_cluster.keys) {
        argv[n++] = (char *)"--key";
        argv[n++] = g_key;
        argv[n++] = (char *)"--server-key";
        argv[n++] = g_server_key;
    }
    argv[n] = NULL;
    return n;
}

typedef struct answers {
    int n, by_status[8], equal; /* equal: complete answers equal to the forward */
    long long last_id;
} answers_t;

/* Parses einet infer's JSON lines in text: every image once, every complete answer from
 * the final exit and equal to the forward (class, confidence within 1e-5). */
static answers_t parse_answers(char *text, int count)
{
    answers_t a;
    memset(&a, 0, sizeof a);
    char *seen = calloc((size_t)count, 1);
    for (char *p = text, *nl; p && *p; p = nl ? nl + 1 : NULL) {
        nl = strchr(p, '\n');
        if (nl)
            *nl = 0;
        json_t *o = json_loads(p, 0, NULL);
        if (!o)
            fail_msg("not a JSON line: %s", p);
        int i = (int)json_integer_value(json_object_get(o, "index"));
        const char *st = json_string_value(json_object_get(o, "status"));
        int exit = (int)json_integer_value(json_object_get(o, "exit"));
        int cls = (int)json_integer_value(json_object_get(o, "class"));
        double conf = json_real_value(json_object_get(o, "confidence")), ref;
        long long id = json_integer_value(json_object_get(o, "id"));
        assert_true(i >= 0 && i < count);
        assert_int_equal(seen[i]++, 0);
        int status = 0;
        for (int s = 0; s < 7; s++)
            if (!strcmp(client_status_name(s), st))
                status = s;
        a.by_status[status]++;
        a.last_id = id > a.last_id ? id : a.last_id;
        if (status == einet_Status_STATUS_COMPLETE) {
            assert_int_equal(exit, g_blocks);
            int want = final_class(i, &ref);
            if (cls != want || conf < ref - 1e-5 || conf > ref + 1e-5)
                fail_msg("image %d: complete answer class %d confidence %.7f, the forward gives "
                         "class %d confidence %.7f", i, cls, conf, want, ref);
            a.equal++;
        }
        a.n++;
        json_decref(o);
    }
    free(seen);
    assert_int_equal(a.n, count);
    return a;
}

/* Runs einet infer to the end and checks every answer. */
static answers_t infer(int count, const char *deadline)
{
    char n[16], *argv[24];
    snprintf(n, sizeof n, "%d", count);
    infer_argv(argv, 0, n, deadline);
    int rc = itest_run(argv, g_out, sizeof g_out, g_err, sizeof g_err, 120000);
    if (rc != 0) {
        itest_cluster_dump_logs(&g_cluster);
        fail_msg("einet infer: exit %d: %s", rc, g_err);
    }
    return parse_answers(g_out, count);
}

/* einet infer in the background, its output into a file, while an attack runs here. */
typedef struct bg {
    itest_proc_t p;
    char out[300];
    int count;
} bg_t;

static void bg_start(bg_t *b, int count, const char *deadline)
{
    char n[16], *argv[24];
    snprintf(n, sizeof n, "%d", count);
    snprintf(b->out, sizeof b->out, "%s/infer.out", g_cluster.dir);
    unlink(b->out);
    b->count = count;
    infer_argv(argv, 0, n, deadline);
    assert_int_equal(itest_spawn(&b->p, argv, 0, b->out, NULL), 0);
}

static int bg_running(bg_t *b)
{
    int status;
    return b->p.pid > 0 && waitpid(b->p.pid, &status, WNOHANG) == 0;
}

static answers_t bg_finish(bg_t *b)
{
    int rc = itest_proc_wait(&b->p, 120000);
    if (rc != 0 && rc != -1) { /* -1: already reaped by bg_running */
        itest_cluster_dump_logs(&g_cluster);
        fail_msg("einet infer: exit %d", rc);
    }
    FILE *f = fopen(b->out, "r");
    assert_non_null(f);
    size_t len = fread(g_out, 1, sizeof g_out - 1, f);
    fclose(f);
    g_out[len] = 0;
    return parse_answers(g_out, b->count);
}

/* ---- the coordinator's view, as an operator (keyless: anyone) sees it ---- */

static client_t *operator_client(void)
{
    char k[1100], s[1100];
    ei_err_t err;
    client_t *c = g_cluster.keys
                      ? client_new_keys(g_cluster.clients,
                                        itest_cluster_key(&g_cluster, "operator", 1, k, sizeof k),
                                        itest_cluster_key(&g_cluster, "coordinator", 0, s,
                                                          sizeof s),
                                        &err)
                      : client_new(g_cluster.clients, &err);
    if (!c)
        fail_msg("%s", err.msg);
    return c;
}

static void stats(einet_StatsReply *out)
{
    client_t *c = operator_client();
    einet_Envelope *env = calloc(1, sizeof *env);
    ei_err_t err;
    wire_env_init(env, einet_Envelope_stats_query_tag);
    if (client_call(c, env, einet_Envelope_stats_reply_tag, 5000, &err) != 0)
        fail_msg("stats: %s", err.msg);
    *out = env->body.stats_reply;
    free(env);
    client_destroy(&c);
}

static uint64_t refused(const char *sock, const char *reason)
{
    einet_StatsReply *s = calloc(1, sizeof *s);
    stats(s);
    uint64_t n = 0;
    for (int i = 0; i < s->refusals_count; i++)
        if (!strcmp(s->refusals[i].socket, sock) && !strcmp(s->refusals[i].reason, reason))
            n = s->refusals[i].count;
    free(s);
    return n;
}

static int all_healthy(void)
{
    einet_StatsReply *s = calloc(1, sizeof *s);
    stats(s);
    int ok = s->nodes_count == 3;
    for (int i = 0; i < s->nodes_count; i++)
        ok &= s->nodes[i].healthy;
    for (int i = 0; i < s->links_count; i++)
        ok &= s->links[i].up;
    free(s);
    return ok;
}

/* Waits until the cluster is healthy, at most ms; the time it took in ms, or fails. */
static double wait_healthy(int ms, const char *after)
{
    double t0 = ei_now();
    while (!all_healthy()) {
        if (ei_now() - t0 > ms / 1e3) {
            itest_cluster_dump_logs(&g_cluster);
            fail_msg("not healthy %d ms after %s", ms, after);
        }
        usleep(20000);
    }
    return (ei_now() - t0) * 1e3;
}

/* ---- attackers: raw ZeroMQ sockets speaking einet's wire format ---- */

#define ATK_IDS 1024

typedef struct atk {
    void *ctx, *sock;
    uint64_t seq;
    int errors, refused_plain, tasks, other;
    uint64_t ids[ATK_IDS]; /* tasks received, not yet returned by atk_poll */
    int head, n_ids;
    int batches; /* Batch messages received */
    char last_error[300];
} atk_t;

/* A DEALER to endpoint with routing id `id` (NULL: ZeroMQ's) and, when cert is set, CURVE
 * with that certificate (a zcert the caller owns) against the server key file. */
static void atk_open(atk_t *a, const char *endpoint, const char *id, zcert_t *cert,
                     const char *server_key)
{
    memset(a, 0, sizeof *a);
    a->ctx = zmq_ctx_new();
    a->sock = zmq_socket(a->ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(a->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (id)
        zmq_setsockopt(a->sock, ZMQ_ROUTING_ID, id, strlen(id));
    if (cert) {
        zcert_t *srv = zcert_load(server_key);
        assert_non_null(srv);
        zcert_apply(cert, a->sock);
        zmq_setsockopt(a->sock, ZMQ_CURVE_SERVERKEY, zcert_public_txt(srv), 40);
        zcert_destroy(&srv);
    }
    assert_int_equal(zmq_connect(a->sock, endpoint), 0);
}

static void atk_close(atk_t *a)
{
    if (a->sock)
        zmq_close(a->sock);
    if (a->ctx)
        zmq_ctx_term(a->ctx);
    a->sock = a->ctx = NULL;
}

static void atk_send(atk_t *a, einet_Envelope *env, const float *tensor, size_t numel)
{
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len;
    ei_err_t err;
    env->seq = ++a->seq;
    assert_int_equal(wire_encode(env, tensor ? numel * 4 : WIRE_NO_TENSOR, buf, sizeof buf, &len,
                                 &err), 0);
    zmq_send(a->sock, buf, len, ZMQ_DONTWAIT | (tensor ? ZMQ_SNDMORE : 0));
    if (tensor)
        zmq_send(a->sock, tensor, numel * 4, ZMQ_DONTWAIT);
}

static void atk_heartbeat(atk_t *a, int tier, int first, int last)
{
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_heartbeat_tag);
    env.body.heartbeat.tier = tier;
    env.body.heartbeat.seq = a->seq + 1;
    env.body.heartbeat.sent_at_us = (uint64_t)(ei_now() * 1e6);
    env.body.heartbeat.first_block = (uint32_t)first;
    env.body.heartbeat.last_block = (uint32_t)last;
    atk_send(a, &env, NULL, 0);
}

/* Counts one message that came (an error, a task: its id joins the queue, or other). */
static void atk_count(atk_t *a, const einet_Envelope *env)
{
    if (env->which_body == einet_Envelope_error_tag) {
        a->errors++;
        a->refused_plain += !strcmp(env->body.error.message, "refused");
        snprintf(a->last_error, sizeof a->last_error, "%s", env->body.error.message);
    } else if (env->which_body == einet_Envelope_task_tag) {
        a->tasks++;
        if (a->n_ids < ATK_IDS)
            a->ids[(a->head + a->n_ids++) % ATK_IDS] = env->body.task.request_id;
    } else {
        a->other++;
    }
}

/* Receives for ms, or until a task comes; counts what came (errors, tasks, alone or
 * inside a Batch: the coordinator sends a device the tasks of one turn as one). Returns
 * the oldest task id not returned yet, 0 when there is none. */
static uint64_t atk_poll(atk_t *a, int ms)
{
    zmq_pollitem_t it = {a->sock, 0, ZMQ_POLLIN, 0};
    double until = ei_now() + ms / 1e3;
    int before = a->tasks;
    while (a->tasks == before &&
           zmq_poll(&it, 1, (long)((until - ei_now()) * 1e3 > 0 ? (until - ei_now()) * 1e3 : 0)) >
               0) {
        zmq_msg_t f[2];
        int n = 0, more = 1;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            zmq_msg_recv(&m, a->sock, 0);
            more = zmq_msg_more(&m);
            if (n < 2)
                f[n++] = m;
            else
                zmq_msg_close(&m);
        }
        xport_frame_t fr[2];
        for (int i = 0; i < n; i++)
            fr[i] = (xport_frame_t){zmq_msg_data(&f[i]), zmq_msg_size(&f[i]), NULL, NULL};
        xport_msg_t *msg = xport_msg_new(NULL, fr, n);
        wire_in_t *in = calloc(1, sizeof *in), *item = calloc(1, sizeof *item);
        int rc = wire_recv(msg, in, NULL);
        if (rc == 0 && in->env.which_body == einet_Envelope_batch_tag) {
            wire_batch_it_t bi = {0, 0};
            while (wire_batch_next(in, &bi, item, NULL) == 1)
                atk_count(a, &item->env);
            a->batches++;
        } else if (rc == 0) {
            atk_count(a, &in->env);
        }
        free(in);
        free(item);
        xport_msg_destroy(&msg);
        for (int i = 0; i < n; i++)
            zmq_msg_close(&f[i]);
    }
    if (!a->n_ids)
        return 0;
    uint64_t id = a->ids[a->head];
    a->head = (a->head + 1) % ATK_IDS;
    a->n_ids--;
    return id;
}

/* A feature map after block `block` for request id, of the right shape, all zeros. */
static void atk_map(atk_t *a, uint64_t id, int block)
{
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_feature_map_tag);
    einet_FeatureMap *f = &env.body.feature_map;
    f->request_id = id;
    f->block = (uint32_t)block;
    f->plan_count = (pb_size_t)g_blocks;
    for (int k = 0; k < g_blocks; k++)
        f->plan[k] = true;
    nn_shape_t s = nn_model_feature_shape(g_model, block - 1);
    uint32_t shape[4] = {1, (uint32_t)s.c, (uint32_t)s.h, (uint32_t)s.w};
    wire_meta_set(&f->tensor, &f->has_tensor, shape, 4);
    size_t numel = (size_t)s.c * s.h * s.w;
    float *t = calloc(numel, sizeof *t);
    atk_send(a, &env, t, numel);
    free(t);
}

static void atk_exit(atk_t *a, uint64_t id, int exit, int tier, int last)
{
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_exit_result_tag);
    einet_ExitResult *r = &env.body.exit_result;
    r->request_id = id;
    r->exit = (uint32_t)exit;
    r->tier = tier;
    r->class_id = 3;
    r->confidence = 0.99f;
    r->last = last;
    atk_send(a, &env, NULL, 0);
}

/* The n messages as one Batch (proto/messages.proto), its count told as `count` (a lie
 * when it differs from n). */
static void atk_batch(atk_t *a, einet_Envelope *envs, int n, uint32_t count)
{
    wire_batch_out_t b = {0};
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len;
    ei_err_t err;
    for (int i = 0; i < n; i++) {
        envs[i].seq = ++a->seq;
        assert_int_equal(wire_encode(&envs[i], WIRE_NO_TENSOR, buf, sizeof buf, &len, &err), 0);
        assert_int_equal(wire_batch_add(&b, buf, len, NULL, 0, &err), 0);
    }
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_batch_tag);
    env.seq = ++a->seq;
    env.body.batch = b.hdr;
    env.body.batch.count = count;
    pb_ostream_t s = pb_ostream_from_buffer(buf, sizeof buf);
    assert_true(pb_encode(&s, einet_Envelope_fields, &env));
    zmq_send(a->sock, buf, s.bytes_written, ZMQ_DONTWAIT | ZMQ_SNDMORE);
    zmq_send(a->sock, b.buf, b.len, ZMQ_DONTWAIT);
    wire_batch_free(&b);
}

/* ---- keyless cases ---- */

/* A peer connects to the nodes socket with the routing id `device` (what took the device's
 * tasks before) and claims the device in heartbeats while a client streams: it gets no
 * task, its forged `last` results change nothing, and every answer is the forward's. */
static void test_steal(void **state)
{
    (void)state;
    uint64_t dup0 = refused("nodes", "duplicate"), unk0 = refused("nodes", "unknown-node");
    atk_t a;
    atk_open(&a, g_cluster.nodes, "device", NULL, NULL);
    bg_t b;
    bg_start(&b, 100, NULL);
    uint64_t id = 1;
    while (bg_running(&b)) {
        atk_heartbeat(&a, einet_Tier_TIER_DEVICE, 1, 2);
        for (int k = 0; k < 5; k++, id++)
            atk_exit(&a, id, g_blocks, einet_Tier_TIER_CLOUD, 1);
        atk_poll(&a, HB_MS);
    }
    answers_t r = bg_finish(&b);
    atk_poll(&a, 200);
    atk_close(&a);
    uint64_t dup = refused("nodes", "duplicate") - dup0, unk = refused("nodes", "unknown-node") - unk0;
    printf("  steal: the thief got %d tasks and %d refusals (last: %s); %llu claims refused as "
           "duplicate, %llu forged results refused; %d of 100 answers complete and equal to the "
           "forward\n", a.tasks, a.errors, a.last_error, (unsigned long long)dup,
           (unsigned long long)unk, r.equal);
    assert_int_equal(a.tasks, 0);
    assert_true(dup >= 1);
    assert_true(unk >= 1);
    assert_int_equal(r.equal, 100);
}

/* A peer holds the routing id `device` for a while, sending nothing, then leaves; then
 * strangers connect, claim every tier and leave, 20 times. The real nodes never stop being
 * healthy (before, the coordinator stopped reading the device for good). */
static void test_orphan(void **state)
{
    (void)state;
    atk_t a;
    atk_open(&a, g_cluster.nodes, "device", NULL, NULL);
    double t0 = ei_now();
    int unhealthy = 0, checks = 0;
    while (ei_now() - t0 < 2.0) {
        unhealthy += !all_healthy();
        checks++;
        usleep(50000);
    }
    atk_close(&a);
    static const char *const ids[] = {"device", "edge", "cloud", NULL};
    for (int i = 0; i < 20; i++) {
        atk_open(&a, g_cluster.nodes, ids[i % 4], NULL, NULL);
        atk_heartbeat(&a, 1 + i % 3, i % 3 == 0 ? 1 : i % 3 == 1 ? 3 : 6, i % 3 == 0 ? 2 : i % 3 == 1 ? 5 : 8);
        atk_poll(&a, 20);
        atk_close(&a);
        unhealthy += !all_healthy();
        checks++;
    }
    double ms = wait_healthy(HB_TIMEOUT_MS + SLACK_MS, "the strangers left");
    answers_t r = infer(100, NULL);
    printf("  orphan: unhealthy in %d of %d checks during the attack; healthy %.0f ms after it; "
           "%d of 100 answers complete and equal to the forward\n", unhealthy, checks, ms,
           r.equal);
    assert_int_equal(unhealthy, 0);
    assert_int_equal(r.equal, 100);
}

/* A node started from a config file by name: its program, log in the run directory. */
static void spawn_node(itest_proc_t *p, const char *config, const char *log)
{
    char bin[1024], path[600], lp[600];
    snprintf(path, sizeof path, "%s/%s", g_cluster.dir, config);
    snprintf(lp, sizeof lp, "%s/%s", g_cluster.run_dir, log);
    char *argv[] = {(char *)itest_bin("einet-node", bin, sizeof bin), (char *)"--config", path,
                    NULL};
    assert_int_equal(itest_spawn(p, argv, 0, lp, lp), 0);
}

/* A second einet-node with the device's config (a stray left over from a failed `up`): it
 * is refused while the device lives, and takes over when the device dies. */
static void test_stray(void **state)
{
    (void)state;
    uint64_t dup0 = refused("nodes", "duplicate");
    itest_proc_t stray;
    spawn_node(&stray, "device.ini", "stray.log");
    double t0 = ei_now();
    while (refused("nodes", "duplicate") == dup0 && ei_now() - t0 < 20)
        usleep(50000);
    uint64_t dup = refused("nodes", "duplicate") - dup0;
    answers_t r1 = infer(50, NULL);
    pid_t dev = itest_cluster_pid(&g_cluster, "device");
    assert_true(dev > 0);
    assert_int_equal(kill(dev, SIGKILL), 0);
    double ms = wait_healthy(HB_TIMEOUT_MS + SLACK_MS, "the device was killed with a stray");
    answers_t r2 = infer(30, NULL);
    printf("  stray: %llu claims refused as duplicate while the device lived; %d of 50 "
           "complete; the stray took over %.0f ms after the device was killed; %d of 30 "
           "complete\n", (unsigned long long)dup, r1.equal, ms, r2.equal);
    kill(stray.pid, SIGKILL);
    itest_proc_wait(&stray, 5000);
    assert_true(dup >= 1);
    assert_int_equal(r1.equal, 50);
    assert_int_equal(r2.equal, 30);
    assert_int_equal(itest_cluster_restart(&g_cluster), 0);
    wait_healthy(HB_TIMEOUT_MS + SLACK_MS, "the device was restarted");
}

/* With the device dead, a peer takes its place (keyless: a name is all it takes), receives
 * tasks and answers each with a forged `last` result from the device, every other one
 * inside a Batch with a `taken` the coordinator does not take: each refused on its own, so
 * no request is answered complete with the forged class; a batch whose count lies is
 * refused whole. The real device, restarted, takes its place back at once. */
static void test_forgedlast(void **state)
{
    (void)state;
    uint64_t forged0 = refused("nodes", "not-its-exit"), malformed0 = refused("nodes", "malformed");
    pid_t dev = itest_cluster_pid(&g_cluster, "device");
    assert_true(dev > 0);
    assert_int_equal(kill(dev, SIGKILL), 0);
    double t0 = ei_now();
    while (all_healthy() && ei_now() - t0 < 10)
        usleep(20000);
    atk_t a;
    atk_open(&a, g_cluster.nodes, NULL, NULL, NULL);
    einet_Envelope link;
    wire_env_init(&link, einet_Envelope_fault_tag);
    link.body.fault.link = einet_Link_LINK_DEVICE_EDGE;
    link.body.fault.clear = true;
    t0 = ei_now();
    while (!all_healthy() && ei_now() - t0 < 10) {
        atk_heartbeat(&a, einet_Tier_TIER_DEVICE, 1, 2);
        atk_send(&a, &link, NULL, 0);
        atk_poll(&a, 30);
    }
    assert_true(all_healthy());
    bg_t b;
    bg_start(&b, 20, "400");
    int forged = 0, batched = 0;
    double hb = 0;
    while (bg_running(&b)) {
        if (ei_now() - hb > HB_MS / 1e3) {
            atk_heartbeat(&a, einet_Tier_TIER_DEVICE, 1, 2);
            atk_send(&a, &link, NULL, 0);
            hb = ei_now();
        }
        uint64_t id = atk_poll(&a, 10);
        if (id && forged % 2) {
            atk_exit(&a, id, 2, einet_Tier_TIER_DEVICE, 1);
            forged++;
        } else if (id) { /* the same inside a batch, beside a body the socket refuses */
            einet_Envelope two[2];
            wire_env_init(&two[0], einet_Envelope_exit_result_tag);
            two[0].body.exit_result = (einet_ExitResult){.request_id = id, .exit = 2,
                                                         .tier = einet_Tier_TIER_DEVICE,
                                                         .class_id = 3, .confidence = 0.99f,
                                                         .last = true};
            wire_env_init(&two[1], einet_Envelope_taken_tag);
            two[1].body.taken.request_id = id;
            atk_batch(&a, two, 2, 2);
            forged++;
            batched++;
        }
    }
    einet_Envelope one;
    wire_env_init(&one, einet_Envelope_taken_tag);
    one.body.taken.request_id = 1;
    atk_batch(&a, &one, 1, 3); /* a count that lies */
    answers_t r = bg_finish(&b);
    atk_poll(&a, 200);
    uint64_t refusals = refused("nodes", "not-its-exit") - forged0;
    uint64_t malformed = refused("nodes", "malformed") - malformed0;
    atk_close(&a);
    printf("  forgedlast: %d tasks to the impostor (%d batches of them), %d forged last results "
           "(%d in batches), %llu refused, %llu malformed; answers: %d complete, %d deadline, "
           "%d link\n", a.tasks, a.batches, forged, batched, (unsigned long long)refusals, (unsigned long long)malformed,
           r.by_status[einet_Status_STATUS_COMPLETE], r.by_status[einet_Status_STATUS_DEADLINE],
           r.by_status[einet_Status_STATUS_LINK]);
    assert_true(forged > 0 && batched > 0);
    assert_int_equal(refusals, (uint64_t)forged);
    /* each batch's taken, and the lying batch */
    assert_int_equal(malformed, (uint64_t)batched + 1);
    assert_int_equal(r.by_status[einet_Status_STATUS_COMPLETE], 0);
    assert_int_equal(itest_cluster_restart(&g_cluster), 0);
    double ms = wait_healthy(HB_TIMEOUT_MS + SLACK_MS, "the device was restarted");
    answers_t r2 = infer(50, NULL);
    printf("  forgedlast: the restarted device healthy %.0f ms after up; %d of 50 complete\n", ms,
           r2.equal);
    assert_int_equal(r2.equal, 50);
}

/* Feature maps into the cloud from a stranger (no heartbeat), from a peer claiming to be the
 * device (not the cloud's previous tier) and from one claiming the live edge: all refused
 * with "refused" and nothing else, none run, while the real traffic is answered exactly. */
static void test_inject(void **state)
{
    (void)state;
    answers_t r0 = infer(10, NULL);
    uint64_t next_id = (uint64_t)r0.last_id + 1;
    atk_t a[3];
    const int claim_tier[3] = {0, einet_Tier_TIER_DEVICE, einet_Tier_TIER_EDGE};
    for (int i = 0; i < 3; i++)
        atk_open(&a[i], g_cluster.cloud_bind, i == 2 ? "edge" : NULL, NULL, NULL);
    bg_t b;
    bg_start(&b, 100, NULL);
    int maps = 0;
    while (bg_running(&b) || maps == 0) {
        for (int i = 0; i < 3; i++) {
            if (claim_tier[i])
                atk_heartbeat(&a[i], claim_tier[i], i == 1 ? 1 : 3, 5);
            for (int k = 0; k < 10; k++)
                atk_map(&a[i], next_id + (uint64_t)((maps + k) % 150), 5);
            atk_poll(&a[i], 5);
        }
        maps += 10;
    }
    answers_t r = bg_finish(&b);
    int errors = 0, plain = 0;
    for (int i = 0; i < 3; i++) {
        atk_poll(&a[i], 200);
        errors += a[i].errors;
        plain += a[i].refused_plain;
        atk_close(&a[i]);
    }
    assert_true(wait_healthy(HB_TIMEOUT_MS + SLACK_MS, "the injection") >= 0);
    printf("  inject: %d maps from each of 3 strangers; %d refusals back, %d of them just "
           "\"refused\"; %d of 100 answers complete and equal to the forward\n", maps, errors,
           plain, r.equal);
    assert_int_equal(r.equal, 100);
    assert_true(errors > 0);
    assert_int_equal(plain, errors);
}

static long file_size(const char *name)
{
    char path[600];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s.log", g_cluster.run_dir, name);
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* 20,000 one-byte messages to the cloud's bind: refused, and its log grows by a few lines
 * (before: 8.3 MB for 100,000). */
static void test_flood(void **state)
{
    (void)state;
    long before = file_size("cloud");
    atk_t a;
    atk_open(&a, g_cluster.cloud_bind, NULL, NULL, NULL);
    int hwm = 0;
    zmq_setsockopt(a.sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    usleep(100000);
    for (int i = 0; i < 20000; i++)
        zmq_send(a.sock, "x", 1, 0);
    atk_poll(&a, 1500);
    int errors = a.errors;
    atk_close(&a);
    long grown = file_size("cloud") - before;
    printf("  flood: 20000 one-byte messages to the cloud: %d refusals back, its log grew by %ld "
           "bytes\n", errors, grown);
    assert_true(errors > 0);
    assert_true(grown < 8192);
    wait_healthy(HB_TIMEOUT_MS + SLACK_MS, "the flood");
}

/* Messages of 6 frames to the coordinator's clients socket are counted, not lost. */
static void test_frames(void **state)
{
    (void)state;
    uint64_t before = refused("clients", "too-many-frames");
    atk_t a;
    atk_open(&a, g_cluster.clients, NULL, NULL, NULL);
    usleep(100000);
    for (int i = 0; i < 300; i++)
        for (int f = 0; f < 6; f++)
            zmq_send(a.sock, "abc", 3, f < 5 ? ZMQ_SNDMORE : 0);
    uint64_t got = 0;
    double t0 = ei_now();
    while ((got = refused("clients", "too-many-frames") - before) < 300 && ei_now() - t0 < 10)
        usleep(50000);
    atk_close(&a);
    printf("  frames: 300 messages of 6 frames, %llu counted\n", (unsigned long long)got);
    assert_int_equal(got, 300);
}

/* ---- a coordinator that lies to a device ---- */

typedef struct fakec {
    void *ctx, *sock;
    zmq_msg_t peer; /* the device's routing id */
    int known, errors, finals;
    uint64_t seq;
    char err[4][300];
    int final_of[4], class_of[4]; /* per test image (request id - 1) */
    float conf_of[4];
} fakec_t;

/* Sends env (and tensor bytes, or a raw payload) to the device on the ROUTER. */
static void fakec_send(fakec_t *f, const uint8_t *env, size_t len, const void *more,
                       size_t more_len)
{
    zmq_msg_t id;
    zmq_msg_init(&id);
    zmq_msg_copy(&id, &f->peer);
    zmq_msg_send(&id, f->sock, ZMQ_SNDMORE);
    zmq_send(f->sock, env, len, more ? ZMQ_SNDMORE : 0);
    if (more)
        zmq_send(f->sock, more, more_len, 0);
}

static void fakec_take(fakec_t *f, const einet_Envelope *env)
{
    if (env->which_body == einet_Envelope_error_tag) {
        if (f->errors < 4)
            snprintf(f->err[f->errors], sizeof f->err[0], "%s", env->body.error.message);
        f->errors++;
    } else if (env->which_body == einet_Envelope_exit_result_tag && env->body.exit_result.last) {
        const einet_ExitResult *r = &env->body.exit_result;
        assert_true(r->request_id >= 1 && r->request_id <= 4);
        f->final_of[r->request_id - 1]++;
        f->class_of[r->request_id - 1] = (int)r->class_id;
        f->conf_of[r->request_id - 1] = r->confidence;
        f->finals++;
    }
}

/* Receives for up to ms: answers heartbeats, takes errors and final exits (alone or in a
 * batch). */
static void fakec_poll(fakec_t *f, int ms)
{
    zmq_pollitem_t it = {f->sock, 0, ZMQ_POLLIN, 0};
    double until = ei_now() + ms / 1e3;
    while (ei_now() < until && zmq_poll(&it, 1, (long)((until - ei_now()) * 1e3) + 1) > 0) {
        zmq_msg_t fr[3];
        int n = 0, more = 1;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            zmq_msg_recv(&m, f->sock, 0);
            more = zmq_msg_more(&m);
            if (n < 3)
                fr[n++] = m;
            else
                zmq_msg_close(&m);
        }
        if (!f->known) {
            zmq_msg_init(&f->peer);
            zmq_msg_copy(&f->peer, &fr[0]);
        }
        xport_frame_t x[2];
        for (int i = 1; i < n; i++)
            x[i - 1] = (xport_frame_t){zmq_msg_data(&fr[i]), zmq_msg_size(&fr[i]), NULL, NULL};
        xport_msg_t *msg = xport_msg_new(NULL, x, n - 1);
        wire_in_t *in = calloc(1, sizeof *in), *item = calloc(1, sizeof *item);
        assert_int_equal(wire_recv(msg, in, NULL), 0);
        if (in->env.which_body == einet_Envelope_heartbeat_tag) {
            einet_Envelope r;
            uint8_t buf[WIRE_ENVELOPE_MAX];
            size_t len;
            wire_env_init(&r, einet_Envelope_heartbeat_reply_tag);
            r.seq = ++f->seq;
            r.reply_to = in->env.seq;
            r.body.heartbeat_reply.seq = in->env.body.heartbeat.seq;
            r.body.heartbeat_reply.echo_sent_at_us = in->env.body.heartbeat.sent_at_us;
            assert_int_equal(wire_encode(&r, WIRE_NO_TENSOR, buf, sizeof buf, &len, NULL), 0);
            fakec_send(f, buf, len, NULL, 0);
            f->known = 1;
        } else if (in->env.which_body == einet_Envelope_batch_tag) {
            wire_batch_it_t bi = {0, 0};
            while (wire_batch_next(in, &bi, item, NULL) == 1)
                fakec_take(f, &item->env);
        } else {
            fakec_take(f, &in->env);
        }
        free(in);
        free(item);
        xport_msg_destroy(&msg);
        for (int i = 0; i < n; i++)
            zmq_msg_close(&fr[i]);
    }
}

/* Sends b with header hdr (a lie where it differs from b's own). */
static void fakec_batch(fakec_t *f, const wire_batch_out_t *b, const einet_Batch *hdr)
{
    einet_Envelope env;
    uint8_t buf[WIRE_ENVELOPE_MAX];
    wire_env_init(&env, einet_Envelope_batch_tag);
    env.seq = ++f->seq;
    env.body.batch = *hdr;
    pb_ostream_t s = pb_ostream_from_buffer(buf, sizeof buf);
    assert_true(pb_encode(&s, einet_Envelope_fields, &env));
    fakec_send(f, buf, s.bytes_written, b->buf, b->len);
}

/* The device's config with the whole model (no next tier) and `coordinator` = endpoint. */
static void write_fake_device(const char *endpoint, char *path, size_t cap)
{
    char src[600], line[1200];
    snprintf(src, sizeof src, "%s/device.ini", g_cluster.dir);
    snprintf(path, cap, "%s/fake-device.ini", g_cluster.dir);
    FILE *in = fopen(src, "r"), *out = fopen(path, "w");
    assert_non_null(in);
    assert_non_null(out);
    while (fgets(line, sizeof line, in)) {
        if (!strncmp(line, "next", 4))
            continue;
        if (!strncmp(line, "last_block", 10))
            fprintf(out, "last_block = %d\n", g_blocks);
        else if (!strncmp(line, "coordinator", 11))
            fprintf(out, "coordinator = %s\n", endpoint);
        else
            fputs(line, out);
    }
    fclose(in);
    fclose(out);
}

/* A device process whose coordinator is this test: once it has introduced itself, it gets
 * a batch of tasks for test images 0 and 3 around a task whose image is 4 bytes short and
 * a heartbeat reply (which never travels in a batch); then the same batch telling 3
 * messages for its 4 sizes, and one telling 257 messages. Each bad part is refused,
 * named, and only that part: the device answers images 0 and 3 once each, exactly as the
 * single-process forward. */
static void test_fakecoord(void **state)
{
    (void)state;
    fakec_t f;
    memset(&f, 0, sizeof f);
    f.ctx = zmq_ctx_new();
    f.sock = zmq_socket(f.ctx, ZMQ_ROUTER);
    int linger = 0;
    zmq_setsockopt(f.sock, ZMQ_LINGER, &linger, sizeof linger);
    assert_int_equal(zmq_bind(f.sock, "tcp://127.0.0.1:*"), 0);
    char endpoint[128], path[600];
    size_t elen = sizeof endpoint;
    zmq_getsockopt(f.sock, ZMQ_LAST_ENDPOINT, endpoint, &elen);
    write_fake_device(endpoint, path, sizeof path);
    itest_proc_t dev;
    spawn_node(&dev, "fake-device.ini", "fake-device.log");
    double t0 = ei_now();
    while (!f.known && ei_now() - t0 < 30)
        fakec_poll(&f, 50);
    assert_true(f.known);
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len;
    wire_batch_out_t b = {0};
    for (int i = 0; i < 4; i++) {
        einet_Envelope e;
        if (i == 2) {
            wire_env_init(&e, einet_Envelope_heartbeat_reply_tag);
            e.seq = ++f.seq;
            assert_int_equal(wire_encode(&e, WIRE_NO_TENSOR, buf, sizeof buf, &len, NULL), 0);
            assert_int_equal(wire_batch_add(&b, buf, len, NULL, 0, NULL), 0);
            continue;
        }
        wire_env_init(&e, einet_Envelope_task_tag);
        e.seq = ++f.seq;
        e.body.task.request_id = (uint64_t)i + 1; /* image i */
        const uint32_t shape[4] = {1, 1, 28, 28};
        wire_meta_set(&e.body.task.input, &e.body.task.has_input, shape, 4);
        e.body.task.plan_count = (pb_size_t)g_blocks;
        for (int k = 0; k < g_blocks; k++)
            e.body.task.plan[k] = true;
        assert_int_equal(wire_encode(&e, 784 * 4, buf, sizeof buf, &len, NULL), 0);
        assert_int_equal(wire_batch_add(&b, buf, len, g_test->images + (size_t)i * 784,
                                        i == 1 ? 783 * 4 : 784 * 4, NULL), 0);
    }
    fakec_batch(&f, &b, &b.hdr);
    einet_Batch h = b.hdr;
    h.count = 3;
    fakec_batch(&f, &b, &h);
    h = b.hdr;
    h.count = WIRE_MAX_BATCH + 1;
    fakec_batch(&f, &b, &h);
    wire_batch_free(&b);
    t0 = ei_now();
    while ((f.finals < 2 || f.errors < 4) && ei_now() - t0 < 30)
        fakec_poll(&f, 50);
    fakec_poll(&f, 300); /* nothing more may come */
    kill(dev.pid, SIGTERM);
    itest_proc_wait(&dev, 5000);
    zmq_msg_close(&f.peer);
    zmq_close(f.sock);
    zmq_ctx_term(f.ctx);
    printf("  fakecoord: %d final answers, %d refusals:\n", f.finals, f.errors);
    for (int i = 0; i < 4 && i < f.errors; i++)
        printf("    %s\n", f.err[i]);
    assert_int_equal(f.errors, 4);
    assert_string_equal(f.err[0], "batch message 2 of 4: task.input: shape promises 3136 bytes, "
                                  "the tensor frame has 3132");
    assert_string_equal(f.err[1], "batch message 3 of 4: heartbeat_reply may not travel in a "
                                  "batch");
    assert_string_equal(f.err[2], "batch.env_bytes: 4 sizes for 3 messages");
    assert_string_equal(f.err[3], "batch.count: 257, expected 1..256");
    assert_int_equal(f.finals, 2);
    for (int i = 0; i < 4; i += 3) {
        double conf;
        assert_int_equal(f.final_of[i], 1);
        assert_int_equal(f.class_of[i], final_class(i, &conf));
        assert_true(fabs(f.conf_of[i] - conf) <= 1e-5);
    }
}

/* ---- cases with keys ---- */

/* The secure cluster serves a client key: every answer complete and the forward's. */
static void test_keys(void **state)
{
    (void)state;
    answers_t r = infer(100, NULL);
    printf("  keys: %d of 100 answers complete and equal to the forward over CURVE\n", r.equal);
    assert_int_equal(r.equal, 100);
}

/* What a stranger (mode: 0 no key, 1 a key not on the allow-list) gets from each socket:
 * nothing; and nothing changes (the coordinator's request and refusal counts). */
static void stranger(int with_key)
{
    char srv[1100];
    itest_cluster_key(&g_cluster, "coordinator", 0, srv, sizeof srv);
    char edge[1100], cloud[1100];
    itest_cluster_key(&g_cluster, "edge", 0, edge, sizeof edge);
    itest_cluster_key(&g_cluster, "cloud", 0, cloud, sizeof cloud);
    const char *eps[4] = {g_cluster.clients, g_cluster.nodes, g_cluster.edge_bind,
                          g_cluster.cloud_bind};
    const char *keys[4] = {srv, srv, edge, cloud};
    einet_StatsReply *s0 = calloc(1, sizeof *s0), *s1 = calloc(1, sizeof *s1);
    stats(s0);
    int got = 0;
    for (int e = 0; e < 4; e++) {
        zcert_t *cert = with_key ? zcert_new() : NULL;
        atk_t a;
        atk_open(&a, eps[e], NULL, cert, keys[e]);
        einet_Envelope env;
        wire_env_init(&env, einet_Envelope_stats_query_tag);
        env.body.stats_query.reset = true;
        atk_send(&a, &env, NULL, 0);
        atk_heartbeat(&a, einet_Tier_TIER_DEVICE, 1, 2);
        atk_map(&a, 1, e == 2 ? 2 : 5);
        atk_poll(&a, 500);
        got += a.errors + a.tasks + a.other;
        atk_close(&a);
        zcert_destroy(&cert);
    }
    stats(s1);
    printf("  %s: %d messages back from 4 sockets; requests %llu -> %llu, bad messages %llu -> "
           "%llu\n", with_key ? "unknownkey" : "nokey", got, (unsigned long long)s0->requests,
           (unsigned long long)s1->requests, (unsigned long long)s0->bad_messages,
           (unsigned long long)s1->bad_messages);
    assert_int_equal(got, 0);
    assert_int_equal(s1->requests, s0->requests);
    assert_int_equal(s1->bad_messages, s0->bad_messages);
    assert_true(s1->uptime_us > s0->uptime_us); /* not reset */
    free(s0);
    free(s1);
}

static void test_nokey(void **state)
{
    (void)state;
    stranger(0);
}

static void test_unknownkey(void **state)
{
    (void)state;
    stranger(1);
}

/* `einet CMD ARGS...` with the key of `who`; its exit code. */
static int einet_as(const char *who, ...)
{
    char bin[1024], k[1100], s[1100];
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)itest_bin("einet", bin, sizeof bin);
    va_list ap;
    va_start(ap, who);
    for (char *x; n < 24 && (x = va_arg(ap, char *)) != NULL;)
        argv[n++] = x;
    va_end(ap);
    argv[n++] = (char *)"--coordinator";
    argv[n++] = g_cluster.clients;
    argv[n++] = (char *)"--key";
    argv[n++] = (char *)itest_cluster_key(&g_cluster, who, 1, k, sizeof k);
    argv[n++] = (char *)"--server-key";
    argv[n++] = (char *)itest_cluster_key(&g_cluster, "coordinator", 0, s, sizeof s);
    argv[n] = NULL;
    return itest_run(argv, g_out, sizeof g_out, g_err, sizeof g_err, 20000);
}

static long long infer_one_as(const char *who)
{
    assert_int_equal(einet_as(who, "infer", "--count", "1", "--json", NULL), 0);
    json_t *o = json_loads(g_out, 0, NULL);
    assert_non_null(o);
    long long id = json_integer_value(json_object_get(o, "id"));
    json_decref(o);
    return id;
}

/* A client key submits and reads its own results and the statistics, and nothing more:
 * faults, kills, resets and other keys' results are refused with a clear error. */
static void test_client(void **state)
{
    (void)state;
    uint64_t forb0 = refused("clients", "forbidden"), own0 = refused("clients", "not-owner");
    long long mine = infer_one_as("client"), theirs = infer_one_as("operator");
    char id[32];
    snprintf(id, sizeof id, "%lld", mine);
    assert_int_equal(einet_as("client", "result", id, NULL), 0);
    assert_int_equal(einet_as("client", "stats", NULL), 0);
    snprintf(id, sizeof id, "%lld", theirs);
    assert_int_equal(einet_as("client", "result", id, NULL), 1);
    assert_non_null(strstr(g_err, "not one this key submitted"));
    assert_int_equal(einet_as("client", "fault", "--kill", "cloud", NULL), 1);
    assert_non_null(strstr(g_err, "only an operator"));
    assert_int_equal(einet_as("client", "fault", "--link", "edge-cloud", "--down", "60000", NULL),
                     1);
    assert_int_equal(einet_as("client", "stats", "--reset", NULL), 1);
    assert_non_null(strstr(g_err, "only an operator"));
    uint64_t forb = refused("clients", "forbidden") - forb0;
    uint64_t own = refused("clients", "not-owner") - own0;
    assert_true(itest_cluster_pid(&g_cluster, "cloud") > 0);
    assert_true(all_healthy());
    printf("  client: own result and stats read; 1 other key's result, 2 faults and 1 reset "
           "refused (counted: %llu forbidden, %llu not-owner); the cloud still runs\n",
           (unsigned long long)forb, (unsigned long long)own);
    assert_int_equal(forb, 3);
    assert_int_equal(own, 1);
}

/* An operator key reads any result, resets statistics and injects faults. */
static void test_operator(void **state)
{
    (void)state;
    long long theirs = infer_one_as("client");
    char id[32];
    snprintf(id, sizeof id, "%lld", theirs);
    assert_int_equal(einet_as("operator", "result", id, NULL), 0);
    assert_int_equal(einet_as("operator", "fault", "--link", "edge-cloud", "--clear", NULL), 0);
    assert_int_equal(einet_as("operator", "stats", "--reset", NULL), 0);
    printf("  operator: read a client's result, injected a fault, reset the statistics\n");
}

/* A node's key is no client, a client's key no node: each refused where it does not belong. */
static void test_nodekey(void **state)
{
    (void)state;
    uint64_t forb0 = refused("clients", "forbidden"), unk0 = refused("nodes", "unknown-node");
    assert_int_equal(einet_as("device", "stats", NULL), 1);
    assert_non_null(strstr(g_err, "a node key cannot use the clients endpoint"));
    char k[1100], s[1100];
    zcert_t *cert = zcert_load(itest_cluster_key(&g_cluster, "client", 1, k, sizeof k));
    atk_t a;
    atk_open(&a, g_cluster.nodes, NULL, cert,
             itest_cluster_key(&g_cluster, "coordinator", 0, s, sizeof s));
    atk_heartbeat(&a, einet_Tier_TIER_DEVICE, 1, 2);
    atk_poll(&a, 500);
    atk_close(&a);
    zcert_destroy(&cert);
    /* The device's own key on the cloud's bind: not the cloud's previous tier. */
    cert = zcert_load(itest_cluster_key(&g_cluster, "device", 1, k, sizeof k));
    atk_t m;
    atk_open(&m, g_cluster.cloud_bind, NULL, cert,
             itest_cluster_key(&g_cluster, "cloud", 0, s, sizeof s));
    atk_heartbeat(&m, einet_Tier_TIER_DEVICE, 1, 5);
    atk_map(&m, 1, 5);
    atk_poll(&m, 500);
    atk_close(&m);
    zcert_destroy(&cert);
    uint64_t forb = refused("clients", "forbidden") - forb0;
    uint64_t unk = refused("nodes", "unknown-node") - unk0;
    printf("  nodekey: the device's key on the clients socket refused (%llu); the client's key "
           "claiming the device refused (%llu, reply \"%s\"); the device's key on the cloud's "
           "bind refused (%d replies, all \"refused\": %d)\n", (unsigned long long)forb,
           (unsigned long long)unk, a.last_error, m.errors, m.refused_plain);
    assert_int_equal(forb, 1);
    assert_int_equal(unk, 1);
    assert_string_equal(a.last_error, "refused");
    assert_int_equal(m.errors, 2);
    assert_int_equal(m.refused_plain, 2);
    assert_true(all_healthy());
}

/* ---- setup ---- */

/* Every case runs on the same kind of cluster: heartbeats the loaded machine never misses. */
#define CASE(name, fn) {name, fn, {.heartbeat_ms = HB_MS, .heartbeat_timeout_ms = HB_TIMEOUT_MS}}
static const itest_case_t cases[] = {
    CASE("steal", test_steal),         CASE("orphan", test_orphan),
    CASE("stray", test_stray),         CASE("forgedlast", test_forgedlast),
    CASE("inject", test_inject),       CASE("flood", test_flood),
    CASE("frames", test_frames),       CASE("fakecoord", test_fakecoord),
    CASE("keys", test_keys),
    CASE("nokey", test_nokey),         CASE("unknownkey", test_unknownkey),
    CASE("client", test_client),       CASE("operator", test_operator),
    CASE("nodekey", test_nodekey),     CASE("keystray", test_stray),
};
#undef CASE

/* With keys: the client's key pair and the coordinator's public key for the cases. */
static void read_keys(itest_cluster_t *c)
{
    itest_cluster_key(c, "client", 1, g_key, sizeof g_key);
    itest_cluster_key(c, "coordinator", 0, g_server_key, sizeof g_server_key);
}

static itest_suite_t suite = {
    .prog = "test_attack",
    .usage = "keyless: steal orphan stray forgedlast inject flood frames fakecoord; with "
             "keys, first `keys`: nokey unknownkey client operator nodekey keystray",
    .cases = cases,
    .n_cases = (int)(sizeof cases / sizeof cases[0]),
    .cluster = &g_cluster,
    .after_up = read_keys,
};

int main(int argc, char **argv)
{
    int picked[sizeof cases / sizeof cases[0]];
    int n = itest_pick_cases(&suite, argc, argv, picked);
    if (n == 0)
        return 2;
    suite.keys = !strcmp(argv[1], "keys");
    zsys_handler_set(NULL);
    char model_path[1024];
    ei_err_t err;
    if (!itest_have_programs() || !itest_model_path(model_path, sizeof model_path))
        return ITEST_SKIP;
    g_test = nn_dataset_load(NULL, "test", &err);
    g_model = g_test ? nn_model_load(model_path, 1, &err) : NULL;
    if (!g_model) {
        fprintf(stderr, "test_attack: %s\n", err.msg);
        return 1;
    }
    nn_model_prepare_inference(g_model);
    g_blocks = nn_model_blocks(g_model);
    g_probs = calloc((size_t)MAX_IMG * (size_t)g_blocks * CLASSES, sizeof *g_probs);
    g_done = calloc(MAX_IMG, 1);
    int rc = itest_run_cases(&suite, picked, n, argv[1]);
    free(g_probs);
    free(g_done);
    nn_model_destroy(&g_model);
    nn_dataset_destroy(&g_test);
    return rc;
}
