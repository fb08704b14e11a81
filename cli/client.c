/* The einet tool's connection to the coordinator: a DEALER socket driven by plain
 * blocking calls with timeouts, the wire codec on raw buffers, and the names and JSON
 * forms the client commands print. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "cli.h"
#include "client.h"
#include "wire/conf.h"
#include "wire/sec.h"

struct client {
    void *ctx, *sock;
    uint64_t seq;
    char endpoint[256];
};

client_t *client_new(const char *endpoint, ei_err_t *err)
{
    return client_new_keys(endpoint, NULL, NULL, err);
}

/* CURVE on the client's socket: its own secret certificate, the server's public one. */
static int apply_keys(client_t *c, const char *key, const char *server_key, ei_err_t *err)
{
    key = key ? key : "";
    server_key = server_key ? server_key : "";
    if (!key[0] && !server_key[0])
        return 0;
    if (!key[0] || !server_key[0])
        return ei_err_set(err, EI_E_INVAL, "%s is set but %s is not: a cluster with keys needs "
                          "both", key[0] ? "--key" : "--server-key",
                          key[0] ? "--server-key" : "--key");
    sec_t *sec = sec_new(NULL, "einet", key, "", err);
    if (!sec)
        return err->code;
    int rc = sec_apply(sec, c->sock, server_key, err);
    sec_destroy(&sec);
    return rc;
}

client_t *client_new_keys(const char *endpoint, const char *key, const char *server_key,
                          ei_err_t *err)
{
    client_t *c = ei_calloc(1, sizeof *c);
    if (!c) {
        ei_err_set(err, EI_E_NOMEM, "out of memory");
        return NULL;
    }
    snprintf(c->endpoint, sizeof c->endpoint, "%s", endpoint);
    c->ctx = zmq_ctx_new();
    if (!c->ctx) {
        ei_err_set(err, EI_E_IO, "zmq_ctx_new: %s", zmq_strerror(errno));
        goto fail;
    }
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!c->sock) {
        ei_err_set(err, EI_E_IO, "zmq_socket: %s", zmq_strerror(errno));
        goto fail;
    }
    int zero = 0, one = 1, hwm = 10000;
    int64_t maxmsg = XPORT_MAXMSGSIZE;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(c->sock, ZMQ_IMMEDIATE, &one, sizeof one);
    zmq_setsockopt(c->sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(c->sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(c->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (apply_keys(c, key, server_key, err) < 0)
        goto fail;
    if (zmq_connect(c->sock, endpoint) != 0) {
        ei_err_set(err, EI_E_INVAL, "cannot connect to '%s': %s", endpoint,
                   zmq_strerror(errno));
        goto fail;
    }
    return c;
fail:
    client_destroy(&c);
    return NULL;
}

void client_destroy(client_t **self_p)
{
    client_t *c = self_p ? *self_p : NULL;
    if (!c)
        return;
    if (c->sock)
        zmq_close(c->sock);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    free(c);
    *self_p = NULL;
}

const char *client_endpoint(const client_t *self)
{
    return self->endpoint;
}

/* zmq_send of one frame waiting at most timeout_ms for the socket to take it: with
 * ZMQ_IMMEDIATE that is until a connection to the coordinator is up. */
static int send_frame(client_t *c, const void *data, size_t size, int more, int timeout_ms,
                      ei_err_t *err)
{
    zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms);
    for (;;) {
        if (zmq_send(c->sock, data, size, more ? ZMQ_SNDMORE : 0) >= 0)
            return 0;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN)
            return ei_err_set(err, EI_E_PEER,
                              "cannot reach the coordinator at %s: no connection within %d ms "
                              "(is einet-coord running there? with keys: --key and --server-key)",
                              c->endpoint, timeout_ms);
        return ei_err_set(err, EI_E_IO, "send to %s: %s", c->endpoint, zmq_strerror(errno));
    }
}

int client_send(client_t *self, einet_Envelope *env, const float *data, size_t numel,
                int timeout_ms, ei_err_t *err)
{
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len;
    env->version = WIRE_VERSION;
    env->seq = ++self->seq;
    size_t tbytes = data ? numel * sizeof(float) : WIRE_NO_TENSOR;
    int rc = wire_encode(env, tbytes, buf, sizeof buf, &len, err);
    if (rc)
        return rc;
    rc = send_frame(self, buf, len, data != NULL, timeout_ms, err);
    if (rc || !data)
        return rc;
    /* The envelope frame is queued once zmq_send returned, so the tensor frame that
     * completes the message goes at once. */
    return send_frame(self, data, tbytes, 0, timeout_ms, err);
}

/* Receives the rest of a multipart message into frames[0..2), dropping frames beyond. */
static int recv_message(client_t *c, zmq_msg_t frames[2], int *nframes, ei_err_t *err)
{
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, c->sock, 0) < 0) {
            zmq_msg_close(&m);
            for (int i = 0; i < n; i++)
                zmq_msg_close(&frames[i]);
            return ei_err_set(err, EI_E_IO, "receive from %s: %s", c->endpoint,
                              zmq_strerror(errno));
        }
        more = zmq_msg_more(&m);
        if (n < 2)
            frames[n] = m;
        else
            zmq_msg_close(&m);
        n++;
    }
    *nframes = n;
    return 0;
}

int client_recv(client_t *self, einet_Envelope *env, int timeout_ms, ei_err_t *err)
{
    zmq_pollitem_t item = {self->sock, 0, ZMQ_POLLIN, 0};
    int rc;
    double until = ei_now() + timeout_ms / 1e3;
    do {
        int left = (int)((until - ei_now()) * 1e3 + 0.999);
        rc = zmq_poll(&item, 1, left > 0 ? left : 0);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0)
        return ei_err_set(err, EI_E_IO, "poll: %s", zmq_strerror(errno));
    if (rc == 0)
        return ei_err_set(err, EI_E_TIMEOUT, "nothing from the coordinator at %s within %d ms",
                          self->endpoint, timeout_ms);
    zmq_msg_t frames[2];
    int n = 0;
    rc = recv_message(self, frames, &n, err);
    if (rc)
        return rc;
    if (n > 2)
        rc = ei_err_set(err, EI_E_FORMAT, "reply from %s has %d frames (at most 2)",
                        self->endpoint, n);
    else
        rc = wire_decode(zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]),
                         n == 2 ? zmq_msg_size(&frames[1]) : WIRE_NO_TENSOR, env, err);
    for (int i = 0; i < n && i < 2; i++)
        zmq_msg_close(&frames[i]);
    return rc;
}

int client_call(client_t *self, einet_Envelope *env, pb_size_t reply_tag, int timeout_ms,
                ei_err_t *err)
{
    pb_size_t tag = env->which_body;
    int rc = client_send(self, env, NULL, 0, timeout_ms, err);
    if (rc)
        return rc;
    uint64_t seq = env->seq;
    double until = ei_now() + timeout_ms / 1e3;
    for (;;) {
        int left = (int)((until - ei_now()) * 1e3);
        rc = client_recv(self, env, left > 0 ? left : 0, err);
        if (rc == EI_E_TIMEOUT)
            return ei_err_set(err, EI_E_TIMEOUT,
                              "no reply to %s from the coordinator at %s within %d ms",
                              wire_body_name(tag), self->endpoint, timeout_ms);
        if (rc)
            return ei_err_prefix(err, "reply to %s: ", wire_body_name(tag));
        if (env->reply_to != seq)
            continue;
        if (env->which_body == einet_Envelope_error_tag)
            return ei_err_set(err, EI_E_PEER, "the coordinator refused %s: %s (%s)",
                              wire_body_name(tag), env->body.error.message,
                              ei_strerror(env->body.error.code));
        if (env->which_body != reply_tag)
            return ei_err_set(err, EI_E_FORMAT, "the coordinator answered %s with %s, not %s",
                              wire_body_name(tag), wire_body_name(env->which_body),
                              wire_body_name(reply_tag));
        return 0;
    }
}

static const char *const status_names[] = {"none",     "complete",  "deadline", "link",
                                           "rejected", "device-ee", "shutdown", "restarted",
                                           "early"};
static const char *const tier_names[] = {"none", "device", "edge", "cloud"};
static const char *const link_names[] = {"none", "device-edge", "edge-cloud"};

#define NAME_OF(table, i) \
    ((i) >= 0 && (size_t)(i) < sizeof(table) / sizeof(table)[0] ? (table)[i] : "unknown")

const char *client_status_name(int status)
{
    return NAME_OF(status_names, status);
}

const char *client_tier_name(int tier)
{
    return NAME_OF(tier_names, tier);
}

const char *client_link_name(int link)
{
    return NAME_OF(link_names, link);
}

static int parse_name(const char *const *table, int n, const char *name)
{
    for (int i = 1; i < n; i++)
        if (!strcmp(table[i], name))
            return i;
    return -1;
}

int client_tier_parse(const char *name)
{
    return parse_name(tier_names, 4, name);
}

int client_link_parse(const char *name)
{
    return parse_name(link_names, 3, name);
}

json_t *client_answer_json(const einet_Answer *a)
{
    int none = a->exit == 0;
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t)a->request_id));
    json_object_set_new(o, "index", json_integer((json_int_t)a->client_id));
    json_object_set_new(o, "status", json_string(client_status_name(a->status)));
    json_object_set_new(o, "class", json_integer(none ? -1 : (json_int_t)a->class_id));
    json_object_set_new(o, "confidence", json_real(none ? 0.0 : a->confidence));
    json_object_set_new(o, "exit", json_integer(a->exit));
    json_object_set_new(o, "tier", none ? json_null() : json_string(client_tier_name(a->tier)));
    json_object_set_new(o, "latency_ms", json_real(a->latency_us / 1e3));
    json_object_set_new(o, "label", a->has_label ? json_integer(a->label) : json_null());
    json_object_set_new(o, "mflop", json_real(a->mflop));
    if (a->reason[0])
        json_object_set_new(o, "reason", json_string(a->reason));
    return o;
}

json_t *client_counts_json(const uint64_t *v, int n, const char *(*name)(int))
{
    json_t *o = json_object();
    for (int i = 0; i < n; i++) {
        char key[16];
        if (!v[i])
            continue;
        snprintf(key, sizeof key, "%d", i);
        json_object_set_new(o, name ? name(i) : key, json_integer((json_int_t)v[i]));
    }
    return o;
}

void client_opts_init(client_opts_t *o)
{
    o->endpoint = NULL;
    o->timeout_ms = CLIENT_TIMEOUT_MS;
    o->key = NULL;
    o->server_key = NULL;
}

int client_opts_parse(const char *cmd, client_opts_t *o, int c, const char *arg)
{
    switch (c) {
    case CLIENT_OPT_COORDINATOR:
        o->endpoint = arg;
        return 1;
    case CLIENT_OPT_KEY:
        o->key = arg;
        return 1;
    case CLIENT_OPT_SERVER_KEY:
        o->server_key = arg;
        return 1;
    case CLIENT_OPT_TIMEOUT:
        if (cli_parse_long(arg, 1, 3600000, &o->timeout_ms)) {
            cli_usage_error(cmd, "--timeout-ms: '%s' is not in [1, 3600000]", arg);
            return -1;
        }
        return 1;
    default:
        return 0;
    }
}

int client_opts_finish(const char *cmd, client_opts_t *o)
{
    if (!o->endpoint) {
        const char *env = getenv(CLIENT_ENV);
        if (env && *env)
            o->endpoint = env;
    }
    if (!o->endpoint) {
        cli_usage_error(cmd, "--coordinator ENDPOINT is required (or set $%s)", CLIENT_ENV);
        return -1;
    }
    if (!o->key && getenv(CLIENT_KEY_ENV) && *getenv(CLIENT_KEY_ENV))
        o->key = getenv(CLIENT_KEY_ENV);
    if (!o->server_key && getenv(CLIENT_SERVER_KEY_ENV) && *getenv(CLIENT_SERVER_KEY_ENV))
        o->server_key = getenv(CLIENT_SERVER_KEY_ENV);
    if ((o->key && o->key[0]) != (o->server_key && o->server_key[0])) {
        cli_usage_error(cmd, "--key and --server-key go together (a cluster with keys needs "
                        "both)");
        return -1;
    }
    const char *why = conf_check_endpoint(o->endpoint);
    if (why) {
        cli_usage_error(cmd, "--coordinator '%s': %s", o->endpoint, why);
        return -1;
    }
    return 0;
}

int client_query(const char *cmd, const client_opts_t *o, einet_Envelope *env,
                 pb_size_t reply_tag)
{
    ei_err_t err = {0};
    client_t *c = client_new_keys(o->endpoint, o->key, o->server_key, &err);
    if (!c)
        return cli_fail(cmd, "%s", err.msg);
    int rc = client_call(c, env, reply_tag, (int)o->timeout_ms, &err);
    client_destroy(&c);
    return rc ? cli_fail(cmd, "%s", err.msg) : 0;
}
