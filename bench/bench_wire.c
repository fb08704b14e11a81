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
 * Usage: bench_wire [messages per run] (default 2000). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "common/ei.h"
#include "nn/model.h"
#include "wire/conf.h"
#include "wire/wire.h"

#define REPS 5
#define WINDOW 64

typedef struct hop {
    char what[64];
    uint32_t shape[4];
    int block; /* 0: the task (input image) */
    size_t numel;
} hop_t;

typedef struct bench {
    void *ctx;
    uv_loop_t loop;
    void *zdealer, *zrouter; /* raw ZeroMQ pair */
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

static int open_sockets(bench_t *b, ei_err_t *err)
{
    b->ctx = zmq_ctx_new();
    uv_loop_init(&b->loop);
    char ep[128];
    size_t len = sizeof ep;
    b->zrouter = zmq_socket(b->ctx, ZMQ_ROUTER);
    b->zdealer = zmq_socket(b->ctx, ZMQ_DEALER);
    int hwm = 10000;
    zmq_setsockopt(b->zdealer, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(b->zrouter, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_bind(b->zrouter, "tcp://127.0.0.1:*") != 0)
        return ei_err_set(err, EI_E_IO, "bind: %s", zmq_strerror(zmq_errno()));
    zmq_getsockopt(b->zrouter, ZMQ_LAST_ENDPOINT, ep, &len);
    if (zmq_connect(b->zdealer, ep) != 0)
        return ei_err_set(err, EI_E_IO, "connect: %s", zmq_strerror(zmq_errno()));
    xport_opts_t ro = {.type = ZMQ_ROUTER, .linger_ms = 0}, dopt = {.type = ZMQ_DEALER,
                                                                   .linger_ms = 0};
    ro.rcvhwm = dopt.sndhwm = 10000;
    b->xrouter = xport_new(&b->loop, b->ctx, &ro, err);
    b->xdealer = b->xrouter ? xport_new(&b->loop, b->ctx, &dopt, err) : NULL;
    if (!b->xdealer)
        return err->code;
    if (xport_bind(b->xrouter, "tcp://127.0.0.1:*", err) ||
        xport_connect(b->xdealer, xport_endpoint(b->xrouter), err) ||
        xport_start(b->xrouter, on_einet, b, err))
        return err->code;
    /* Let both connections come up before anything is timed. */
    zmq_send(b->zdealer, "x", 1, 0);
    zmq_msg_t m;
    zmq_msg_init(&m);
    zmq_msg_recv(&m, b->zrouter, 0);
    zmq_msg_recv(&m, b->zrouter, 0);
    zmq_msg_close(&m);
    return 0;
}

static void close_sockets(bench_t *b)
{
    xport_destroy(&b->xdealer);
    xport_destroy(&b->xrouter);
    uv_run(&b->loop, UV_RUN_DEFAULT);
    uv_loop_close(&b->loop);
    int zero = 0;
    zmq_setsockopt(b->zdealer, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(b->zrouter, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(b->zdealer);
    zmq_close(b->zrouter);
    zmq_ctx_term(b->ctx);
}

typedef double (*method_fn)(bench_t *b);

/* Best of REPS runs of each method, the methods taking turns, in microseconds per message. */
static void measure(bench_t *b, const method_fn *fns, int count, double *us)
{
    for (int i = 0; i < count; i++)
        us[i] = 1e30;
    for (int r = 0; r < REPS; r++)
        for (int i = 0; i < count; i++) {
            double t = fns[i](b) * 1e6 / b->n;
            us[i] = t < us[i] ? t : us[i];
        }
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 2000;
    if (n < 10) {
        fprintf(stderr, "usage: bench_wire [messages per run >= 10]\n");
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
    printf("per-hop cost, us per message (best of %d runs of %d messages; tcp loopback)\n",
           REPS, n);
    printf("%-36s %7s %8s %8s %8s %8s %8s %9s %9s\n", "hop", "bytes", "memcpy", "enc",
           "dec", "zmq", "einet", "einet/zmq", "einet/cpy");
    for (int i = 0; i < 3; i++) {
        b->hop = &hops[i];
        b->data = calloc(hops[i].numel, sizeof(float));
        for (size_t k = 0; k < hops[i].numel; k++)
            b->data[k] = (float)(k % 97) / 97.0f;
        make_env(&b->env, &hops[i], blocks);
        for (int w = 1; w <= WINDOW; w *= WINDOW) {
            static const method_fn fns[] = {run_memcpy, run_encode, run_decode, run_zmq,
                                            run_einet};
            double us[5];
            b->window = w;
            measure(b, fns, 5, us);
            printf("%-31s w=%-2d %7zu %8.2f %8.2f %8.2f %8.2f %8.2f %9.2f %9.1f\n", hops[i].what,
                   w, hops[i].numel * 4, us[0], us[1], us[2], us[3], us[4], us[4] / us[3],
                   us[4] / us[0]);
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
