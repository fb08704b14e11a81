/* Per-hop cost of einet's wire path against raw ZeroMQ and memcpy of the same bytes, in the
 * same run. For each message that crosses a tier boundary of the default partition
 * (configs/fmnist-3tier: the task's input image, the feature maps after the device's and
 * the edge's last blocks) it times:
 *   memcpy     copying the tensor's bytes once;
 *   zmq        zmq_send of the bytes from a DEALER and zmq_msg_recv on a ROUTER (tcp
 *              loopback, one context), blocking calls, nothing else;
 *   einet      wire_send (check, encode the envelope, 2 frames) from a DEALER xport and
 *              wire_recv (decode, check, align) in a ROUTER xport's callback, both on one
 *              libuv loop: what a node does per hop;
 *   enc / dec  wire_encode / wire_decode of the envelope alone (CPU only).
 * "w=1" has one message in flight (hop latency); "w=64" keeps 64 in flight (throughput).
 * zmq and einet run twice: plain, and with CURVE (both ends proving keys made for the run,
 * the server's ZAP handler CZMQ's zauth over an allow-list, as every einet socket with keys;
 * docs/security.md). The CURVE columns compare einet's CURVE hop with raw ZeroMQ's CURVE hop
 * carrying the same bytes, and CURVE with plain.
 * Usage: bench_wire [messages per run [runs]] (default 2000 and 5; more runs on a busy
 * machine, since the best run is the one least disturbed). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "common/ei.h"
#include "nn/model.h"
#include "wire/conf.h"
#include "wire/sec.h"
#include "wire/wire.h"

#define REPS 5 /* default; bench_wire N REPS on a busy machine */
#define WINDOW 64

typedef struct hop {
    char what[64];
    uint32_t shape[4];
    int block; /* 0: the task (input image) */
    size_t numel;
} hop_t;

/* One pair of raw ZeroMQ sockets and one pair of xports, plain or with CURVE. */
typedef struct pair {
    void *zdealer, *zrouter; /* raw ZeroMQ pair */
    xport_t *xdealer, *xrouter;
} pair_t;

typedef struct bench {
    void *ctx;
    uv_loop_t loop;
    pair_t pair[2]; /* plain, CURVE */
    sec_t *server, *client;
    char keydir[64], server_pub[128];
    void *zdealer, *zrouter; /* the pair being timed */
    xport_t *xdealer, *xrouter;
    const hop_t *hop;
    float *data;
    einet_Envelope env;
    int n, window, sent, received, errors;
} bench_t;

/* The message a hop carries: a Task with the image, or a FeatureMap with two exits seen. */
static void make_env(einet_Envelope *env, const hop_t *h, int blocks)
{
    if (h->block == 0) {
        wire_env_init(env, einet_Envelope_task_tag);
        einet_Task *t = &env->body.task;
        t->request_id = 12345;
        wire_meta_set(&t->input, &t->has_input, h->shape, 4);
        t->plan_count = (pb_size_t)blocks;
        for (int k = 0; k < blocks; k++)
            t->plan[k] = k % 2 || k == blocks - 1;
        return;
    }
    wire_env_init(env, einet_Envelope_feature_map_tag);
    einet_FeatureMap *f = &env->body.feature_map;
    f->request_id = 12345;
    f->block = (uint32_t)h->block;
    f->plan_count = (pb_size_t)blocks;
    for (int k = 0; k < blocks; k++)
        f->plan[k] = k % 2 || k == blocks - 1;
    f->elapsed_us = 2100;
    wire_meta_set(&f->tensor, &f->has_tensor, h->shape, 4);
    f->seen_count = 2;
    for (int i = 0; i < 2; i++) {
        f->seen[i].exit = (uint32_t)(h->block - 1 + i);
        f->seen[i].confidence = 0.7f;
        f->seen[i].class_id = 3;
        f->seen[i].probs_count = 10;
        for (int c = 0; c < 10; c++)
            f->seen[i].probs[c] = c == 3 ? 0.7f : 0.3f / 9;
    }
    f->sent_at_us = 1700000000000000ull;
}

/* The hops of the partition in dir (device.ini, edge.ini) for the model's architecture. */
static int load_hops(hop_t *hops, int *blocks, ei_err_t *err)
{
    conf_node_t dev, edge;
    int rc = conf_node_load(&dev, "configs/fmnist-3tier/device.ini", err);
    if (!rc)
        rc = conf_node_load(&edge, "configs/fmnist-3tier/edge.ini", err);
    if (rc)
        return rc;
    nn_model_t *m = nn_model_load_arch("configs/models/fmnist-8exit.json", 1, err);
    if (!m)
        return err->code;
    *blocks = nn_model_blocks(m);
    nn_shape_t in = nn_model_input_shape(m);
    hops[0] = (hop_t){"task: input image", {1, (uint32_t)in.c, (uint32_t)in.h, (uint32_t)in.w},
                      0, nn_shape_numel(in)};
    int cut[2] = {dev.last_block, edge.last_block};
    for (int i = 0; i < 2; i++) {
        nn_shape_t s = nn_model_feature_shape(m, cut[i] - 1);
        hop_t *h = &hops[i + 1];
        snprintf(h->what, sizeof h->what, "%s: map after block %d",
                 i == 0 ? "device->edge" : "edge->cloud", cut[i]);
        h->shape[0] = 1;
        h->shape[1] = (uint32_t)s.c;
        h->shape[2] = (uint32_t)s.h;
        h->shape[3] = (uint32_t)s.w;
        h->block = cut[i];
        h->numel = nn_shape_numel(s);
    }
    nn_model_destroy(&m);
    return 0;
}

static double run_memcpy(bench_t *b)
{
    float *dst = malloc(b->hop->numel * sizeof(float));
    double t = ei_now();
    for (int i = 0; i < b->n; i++) {
        memcpy(dst, b->data, b->hop->numel * sizeof(float));
        __asm__ volatile("" ::"r"(dst) : "memory"); /* keep the copy */
    }
    t = ei_now() - t;
    free(dst);
    return t;
}

static void zmq_recv_one(bench_t *b)
{
    zmq_msg_t id, m;
    zmq_msg_init(&id);
    zmq_msg_init(&m);
    if (zmq_msg_recv(&id, b->zrouter, 0) < 0 || zmq_msg_recv(&m, b->zrouter, 0) < 0)
        b->errors++;
    b->errors += zmq_msg_size(&m) != b->hop->numel * sizeof(float);
    zmq_msg_close(&id);
    zmq_msg_close(&m);
}

static double run_zmq(bench_t *b)
{
    size_t bytes = b->hop->numel * sizeof(float);
    double t = ei_now();
    int sent = 0;
    for (; sent < b->window && sent < b->n; sent++)
        zmq_send(b->zdealer, b->data, bytes, 0);
    for (int got = 0; got < b->n; got++) {
        zmq_recv_one(b);
        if (sent < b->n) {
            zmq_send(b->zdealer, b->data, bytes, 0);
            sent++;
        }
    }
    return ei_now() - t;
}

static int einet_send(bench_t *b)
{
    ei_err_t err;
    wire_payload_t p = {b->data, b->hop->numel, NULL, NULL};
    if (wire_send(b->xdealer, NULL, &b->env, &p, &err) != 0) {
        fprintf(stderr, "bench_wire: %s\n", err.msg);
        b->errors++;
        return -1;
    }
    b->sent++;
    return 0;
}

static void on_einet(xport_t *x, xport_msg_t **msg_p, void *arg)
{
    (void)x;
    bench_t *b = arg;
    wire_in_t *in = malloc(sizeof *in);
    ei_err_t err;
    if (wire_recv(*msg_p, in, &err) != 0 || in->tensor_numel != b->hop->numel) {
        b->errors++;
        fprintf(stderr, "bench_wire: %s\n", err.msg);
    }
    free(in);
    b->received++;
    if (b->sent < b->n)
        einet_send(b);
    if (b->received == b->n)
        uv_stop(&b->loop);
}

static double run_einet(bench_t *b)
{
    b->sent = b->received = 0;
    double t = ei_now();
    while (b->sent < b->window && b->sent < b->n)
        if (einet_send(b))
            return 0;
    uv_run(&b->loop, UV_RUN_DEFAULT);
    return ei_now() - t;
}

static double run_encode(bench_t *b)
{
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len;
    double t = ei_now();
    for (int i = 0; i < b->n; i++)
        b->errors += wire_encode(&b->env, b->hop->numel * 4, buf, sizeof buf, &len, NULL) != 0;
    return ei_now() - t;
}

static double run_decode(bench_t *b)
{
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len;
    einet_Envelope *out = malloc(sizeof *out);
    b->errors += wire_encode(&b->env, b->hop->numel * 4, buf, sizeof buf, &len, NULL) != 0;
    double t = ei_now();
    for (int i = 0; i < b->n; i++)
        b->errors += wire_decode(buf, len, b->hop->numel * 4, out, NULL) != 0;
    t = ei_now() - t;
    free(out);
    return t;
}

/* Keys for the CURVE pair: a server allowing only the client's public key. */
static int make_keys(bench_t *b, ei_err_t *err)
{
    char pub[1024], secret[1100], trust[128];
    snprintf(b->keydir, sizeof b->keydir, "/tmp/einet-bench-wire-XXXXXX");
    if (!mkdtemp(b->keydir))
        return ei_err_set(err, EI_E_IO, "mkdtemp failed");
    snprintf(trust, sizeof trust, "%s/trust", b->keydir);
    if (sec_keygen(b->keydir, "server", SEC_ROLE_COORDINATOR, 0, pub, sizeof pub, err) ||
        sec_keygen(trust, "client", SEC_ROLE_NODE, 2, pub, sizeof pub, err))
        return err->code;
    snprintf(b->server_pub, sizeof b->server_pub, "%s/server.key", b->keydir);
    snprintf(secret, sizeof secret, "%s_secret", b->server_pub);
    b->server = sec_new(b->ctx, "bench_wire", secret, trust, err);
    snprintf(secret, sizeof secret, "%s/client.key_secret", trust);
    b->client = b->server ? sec_new(b->ctx, "bench_wire", secret, "", err) : NULL;
    return b->client ? 0 : err->code;
}

static int open_pair(bench_t *b, pair_t *p, int curve, ei_err_t *err)
{
    char ep[128];
    size_t len = sizeof ep;
    p->zrouter = zmq_socket(b->ctx, ZMQ_ROUTER);
    p->zdealer = zmq_socket(b->ctx, ZMQ_DEALER);
    int hwm = 10000;
    zmq_setsockopt(p->zdealer, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(p->zrouter, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (curve && (sec_apply(b->server, p->zrouter, NULL, err) ||
                  sec_apply(b->client, p->zdealer, b->server_pub, err)))
        return err->code;
    if (zmq_bind(p->zrouter, "tcp://127.0.0.1:*") != 0)
        return ei_err_set(err, EI_E_IO, "bind: %s", zmq_strerror(zmq_errno()));
    zmq_getsockopt(p->zrouter, ZMQ_LAST_ENDPOINT, ep, &len);
    if (zmq_connect(p->zdealer, ep) != 0)
        return ei_err_set(err, EI_E_IO, "connect: %s", zmq_strerror(zmq_errno()));
    xport_opts_t ro = {.type = ZMQ_ROUTER, .linger_ms = 0}, dopt = {.type = ZMQ_DEALER,
                                                                   .linger_ms = 0};
    ro.rcvhwm = dopt.sndhwm = 10000;
    if (curve) {
        ro.sec = b->server;
        dopt.sec = b->client;
        dopt.server_cert = b->server_pub;
    }
    p->xrouter = xport_new(&b->loop, b->ctx, &ro, err);
    p->xdealer = p->xrouter ? xport_new(&b->loop, b->ctx, &dopt, err) : NULL;
    if (!p->xdealer)
        return err->code;
    if (xport_bind(p->xrouter, "tcp://127.0.0.1:*", err) ||
        xport_connect(p->xdealer, xport_endpoint(p->xrouter), err) ||
        xport_start(p->xrouter, on_einet, b, err))
        return err->code;
    /* Let both connections come up (and CURVE finish its handshake) before anything is
     * timed. */
    zmq_send(p->zdealer, "x", 1, 0);
    zmq_msg_t m;
    zmq_msg_init(&m);
    zmq_msg_recv(&m, p->zrouter, 0);
    zmq_msg_recv(&m, p->zrouter, 0);
    zmq_msg_close(&m);
    return 0;
}

static int open_sockets(bench_t *b, ei_err_t *err)
{
    b->ctx = sec_context(); /* the ZAP handler must share the sockets' context */
    uv_loop_init(&b->loop);
    if (make_keys(b, err))
        return err->code;
    for (int c = 0; c < 2; c++)
        if (open_pair(b, &b->pair[c], c, err))
            return err->code;
    return 0;
}

static void close_sockets(bench_t *b)
{
    int zero = 0;
    for (int c = 0; c < 2; c++) {
        pair_t *p = &b->pair[c];
        xport_destroy(&p->xdealer);
        xport_destroy(&p->xrouter);
        zmq_setsockopt(p->zdealer, ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt(p->zrouter, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(p->zdealer);
        zmq_close(p->zrouter);
    }
    uv_run(&b->loop, UV_RUN_DEFAULT);
    uv_loop_close(&b->loop);
    sec_destroy(&b->server);
    sec_destroy(&b->client);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", b->keydir);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_wire: could not remove %s\n", b->keydir);
    sec_context_end();
}

/* The pair the next runs time. */
static void use_pair(bench_t *b, int curve)
{
    pair_t *p = &b->pair[curve];
    b->zdealer = p->zdealer;
    b->zrouter = p->zrouter;
    b->xdealer = p->xdealer;
    b->xrouter = p->xrouter;
}

static double run_zmq_curve(bench_t *b)
{
    use_pair(b, 1);
    double t = run_zmq(b);
    use_pair(b, 0);
    return t;
}

static double run_einet_curve(bench_t *b)
{
    use_pair(b, 1);
    double t = run_einet(b);
    use_pair(b, 0);
    return t;
}

typedef double (*method_fn)(bench_t *b);

/* Best of REPS runs of each method, the methods taking turns, in microseconds per message. */
static int g_reps = REPS;

static void measure(bench_t *b, const method_fn *fns, int count, double *us)
{
    for (int i = 0; i < count; i++)
        us[i] = 1e30;
    for (int r = 0; r < g_reps; r++)
        for (int i = 0; i < count; i++) {
            double t = fns[i](b) * 1e6 / b->n;
            us[i] = t < us[i] ? t : us[i];
        }
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2000;
    g_reps = argc > 2 ? atoi(argv[2]) : REPS;
    if (n < 10 || g_reps < 1 || argc > 3) {
        fprintf(stderr, "usage: bench_wire [messages per run >= 10 [runs >= 1]]\n");
        return 2;
    }
    ei_err_t err = {0};
    hop_t hops[3];
    int blocks = 0;
    if (load_hops(hops, &blocks, &err)) {
        fprintf(stderr, "bench_wire: %s (run from the source root)\n", err.msg);
        return 1;
    }
    bench_t *b = calloc(1, sizeof *b);
    b->n = n;
    if (open_sockets(b, &err)) {
        fprintf(stderr, "bench_wire: %s\n", err.msg);
        return 1;
    }
    use_pair(b, 0);
    printf("per-hop cost, us per message (best of %d runs of %d messages; tcp loopback;\n"
           "+c: with CURVE, keys and the zauth allow-list as on an einet cluster with keys)\n",
           g_reps, n);
    printf("%-36s %7s %7s %6s %6s %7s %7s %8s %8s %9s %9s %10s %10s\n", "hop", "bytes",
           "memcpy", "enc", "dec", "zmq", "einet", "zmq+c", "einet+c", "einet/zmq",
           "einet/cpy", "e+c/zmq+c", "zmq+c/zmq");
    for (int i = 0; i < 3; i++) {
        b->hop = &hops[i];
        b->data = calloc(hops[i].numel, sizeof(float));
        for (size_t k = 0; k < hops[i].numel; k++)
            b->data[k] = (float)(k % 97) / 97.0f;
        make_env(&b->env, &hops[i], blocks);
        for (int w = 1; w <= WINDOW; w *= WINDOW) {
            static const method_fn fns[] = {run_memcpy, run_encode,    run_decode,
                                            run_zmq,    run_einet,     run_zmq_curve,
                                            run_einet_curve};
            double us[7];
            b->window = w;
            measure(b, fns, 7, us);
            printf("%-31s w=%-2d %7zu %7.2f %6.2f %6.2f %7.2f %7.2f %8.2f %8.2f %9.2f %9.1f "
                   "%10.2f %10.2f\n",
                   hops[i].what, w, hops[i].numel * 4, us[0], us[1], us[2], us[3], us[4], us[5],
                   us[6], us[4] / us[3], us[4] / us[0], us[6] / us[5], us[5] / us[3]);
        }
        free(b->data);
    }
    close_sockets(b);
    int errors = b->errors;
    free(b);
    if (errors)
        fprintf(stderr, "bench_wire: %d messages went wrong\n", errors);
    return errors ? 1 : 0;
}
