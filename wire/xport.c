/* xport: ZeroMQ sockets on a libuv loop (see xport.h for the edge-trigger contract). */
#include "wire/xport.h"
#include "wire/sec.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

struct xport_msg {
    xport_peer_t peer;
    int n;
    zmq_msg_t frames[XPORT_MAX_FRAMES];
    void *aligned[XPORT_MAX_FRAMES]; /* owned copies made by xport_msg_aligned */
};

struct xport {
    uv_loop_t *loop;
    void *sock;
    int type;
    uv_poll_t poll;
    uv_idle_t idle;
    uv_timer_t recheck; /* the safety net for a lost ZMQ_FD edge (XPORT_RECHECK_MS) */
    int open_handles;   /* freed when every handle's close callback has run */
    xport_recv_cb *cb;
    void *arg;
    int in_drain;
    int closing;
    int fd;             /* ZMQ_FD */
    char endpoint[256];
    xport_stats_t stats;
};

xport_peer_t xport_peer(const void *id, size_t len)
{
    xport_peer_t p;
    memset(&p, 0, sizeof p);
    if (len > sizeof p.id)
        len = sizeof p.id;
    p.len = (uint8_t)len;
    if (len)
        memcpy(p.id, id, len);
    return p;
}

/* ---- received messages ---- */

static xport_msg_t *msg_alloc(void)
{
    xport_msg_t *m = calloc(1, sizeof *m);
    if (m)
        for (int i = 0; i < XPORT_MAX_FRAMES; i++)
            zmq_msg_init(&m->frames[i]);
    return m;
}

void xport_msg_destroy(xport_msg_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    xport_msg_t *m = *self_p;
    for (int i = 0; i < XPORT_MAX_FRAMES; i++) {
        zmq_msg_close(&m->frames[i]);
        free(m->aligned[i]);
    }
    free(m);
    *self_p = NULL;
}

int xport_msg_frames(const xport_msg_t *m)
{
    return m->n;
}

const void *xport_msg_data(const xport_msg_t *m, int i, size_t *size)
{
    EI_ASSERT(i >= 0 && i < m->n);
    /* zmq_msg_data/size take a non-const pointer but do not modify the message. */
    zmq_msg_t *f = (zmq_msg_t *)&m->frames[i];
    if (size)
        *size = zmq_msg_size(f);
    return zmq_msg_data(f);
}

const xport_peer_t *xport_msg_peer(const xport_msg_t *m)
{
    return &m->peer;
}

const char *xport_msg_meta(const xport_msg_t *m, const char *property)
{
    if (m->n < 1)
        return NULL;
    return zmq_msg_gets((zmq_msg_t *)&m->frames[0], property);
}

const void *xport_msg_aligned(xport_msg_t *m, int i, size_t *size)
{
    size_t n;
    const void *p = xport_msg_data(m, i, &n);
    if (size)
        *size = n;
    if ((uintptr_t)p % XPORT_ALIGN == 0)
        return p;
    if (!m->aligned[i]) {
        size_t cap = (n + XPORT_ALIGN - 1) / XPORT_ALIGN * XPORT_ALIGN;
        m->aligned[i] = aligned_alloc(XPORT_ALIGN, cap ? cap : XPORT_ALIGN);
        if (!m->aligned[i])
            return NULL;
        memcpy(m->aligned[i], p, n);
    }
    return m->aligned[i];
}

xport_msg_t *xport_msg_new(const xport_peer_t *from, const xport_frame_t *frames, int n)
{
    if (n < 0 || n > XPORT_MAX_FRAMES)
        return NULL;
    xport_msg_t *m = msg_alloc();
    if (!m)
        return NULL;
    if (from)
        m->peer = *from;
    for (int i = 0; i < n; i++) {
        zmq_msg_close(&m->frames[i]);
        if (zmq_msg_init_size(&m->frames[i], frames[i].size) != 0) {
            zmq_msg_init(&m->frames[i]);
            xport_msg_destroy(&m);
            return NULL;
        }
        if (frames[i].size)
            memcpy(zmq_msg_data(&m->frames[i]), frames[i].data, frames[i].size);
        m->n = i + 1;
    }
    return m;
}

/* ---- the socket ---- */

static int zerr(ei_err_t *err, int code, const char *what, const char *endpoint)
{
    return ei_err_set(err, code, "%s%s%s: %s", what, endpoint ? " " : "", endpoint ? endpoint : "",
                      zmq_strerror(zmq_errno()));
}

static int set_int(void *sock, int opt, int v)
{
    return zmq_setsockopt(sock, opt, &v, sizeof v);
}

static int configure(xport_t *x, const xport_opts_t *o, ei_err_t *err)
{
    int64_t maxmsg = o->maxmsgsize > 0 ? o->maxmsgsize : XPORT_MAXMSGSIZE;
    int rc = set_int(x->sock, ZMQ_LINGER, o->linger_ms >= 0 ? o->linger_ms : XPORT_LINGER_MS);
    rc |= set_int(x->sock, ZMQ_SNDHWM, o->sndhwm > 0 ? o->sndhwm : XPORT_HWM);
    rc |= set_int(x->sock, ZMQ_RCVHWM, o->rcvhwm > 0 ? o->rcvhwm : XPORT_HWM);
    rc |= zmq_setsockopt(x->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (o->immediate)
        rc |= set_int(x->sock, ZMQ_IMMEDIATE, 1);
    if (o->type == ZMQ_ROUTER)
        rc |= set_int(x->sock, ZMQ_ROUTER_MANDATORY, 1);
    if (o->identity)
        rc |= zmq_setsockopt(x->sock, ZMQ_ROUTING_ID, o->identity, strlen(o->identity));
    if (rc)
        return zerr(err, EI_E_INVAL, "xport: setting socket options", NULL);
    return sec_apply(o->sec, x->sock, o->server_cert, err);
}

static void on_poll(uv_poll_t *h, int status, int events);
static void on_idle(uv_idle_t *h);
static void on_recheck(uv_timer_t *h);

static int init_handles(xport_t *x, ei_err_t *err)
{
    int fd;
    size_t sz = sizeof fd;
    if (zmq_getsockopt(x->sock, ZMQ_FD, &fd, &sz) != 0)
        return zerr(err, EI_E_IO, "xport: ZMQ_FD", NULL);
    x->fd = fd;
    int rc = uv_poll_init(x->loop, &x->poll, fd);
    if (rc < 0)
        return ei_err_set(err, EI_E_IO, "xport: uv_poll_init: %s", uv_strerror(rc));
    x->open_handles++;
    uv_idle_init(x->loop, &x->idle);
    x->open_handles++;
    uv_timer_init(x->loop, &x->recheck);
    uv_unref((uv_handle_t *)&x->recheck); /* never what keeps a loop running */
    x->open_handles++;
    x->poll.data = x->idle.data = x->recheck.data = x;
    return 0;
}

static void on_handle_closed(uv_handle_t *h)
{
    xport_t *x = h->data;
    if (--x->open_handles == 0)
        free(x);
}

/* Handles are closed before the socket: libuv must stop polling a descriptor before
 * ZeroMQ closes it, or the loop may end up watching a reused descriptor. */
static void finish_close(xport_t *x)
{
    void *sock = x->sock;
    x->sock = NULL;
    if (x->open_handles == 0) {
        free(x);
    } else {
        if (!uv_is_closing((uv_handle_t *)&x->poll))
            uv_close((uv_handle_t *)&x->poll, on_handle_closed);
        uv_close((uv_handle_t *)&x->idle, on_handle_closed);
        uv_close((uv_handle_t *)&x->recheck, on_handle_closed);
    }
    if (sock)
        zmq_close(sock);
}

xport_t *xport_new(uv_loop_t *loop, void *zctx, const xport_opts_t *opts, ei_err_t *err)
{
    xport_t *x = calloc(1, sizeof *x);
    if (!x) {
        ei_err_set(err, EI_E_NOMEM, "xport: out of memory");
        return NULL;
    }
    x->loop = loop;
    x->type = opts->type;
    x->sock = zmq_socket(zctx, opts->type);
    if (!x->sock) {
        zerr(err, EI_E_INVAL, "xport: zmq_socket", NULL);
        goto fail;
    }
    if (configure(x, opts, err) < 0 || init_handles(x, err) < 0)
        goto fail;
    return x;
fail:
    finish_close(x);
    return NULL;
}

void xport_destroy(xport_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    xport_t *x = *self_p;
    *self_p = NULL;
    x->closing = 1;
    x->cb = NULL;
    uv_poll_stop(&x->poll);
    uv_idle_stop(&x->idle);
    uv_timer_stop(&x->recheck);
    if (!x->in_drain) /* else drain() finishes once the callback returns */
        finish_close(x);
}

int xport_bind(xport_t *x, const char *endpoint, ei_err_t *err)
{
    if (zmq_bind(x->sock, endpoint) != 0)
        return zerr(err, EI_E_IO, "xport: cannot bind", endpoint);
    size_t sz = sizeof x->endpoint;
    if (zmq_getsockopt(x->sock, ZMQ_LAST_ENDPOINT, x->endpoint, &sz) != 0)
        snprintf(x->endpoint, sizeof x->endpoint, "%s", endpoint);
    return 0;
}

int xport_connect(xport_t *x, const char *endpoint, ei_err_t *err)
{
    if (zmq_connect(x->sock, endpoint) != 0)
        return zerr(err, EI_E_IO, "xport: cannot connect to", endpoint);
    return 0;
}

const char *xport_endpoint(const xport_t *x)
{
    return x->endpoint;
}

void *xport_socket(xport_t *x)
{
    return x->sock;
}

xport_stats_t xport_stats(const xport_t *x)
{
    return x->stats;
}

/* ---- receiving ---- */

/* 1 when ZeroMQ holds a message for us. Asking also makes ZeroMQ process its pending
 * commands, which is what re-arms ZMQ_FD for the next edge. */
static int readable(xport_t *x)
{
    int ev = 0;
    size_t sz = sizeof ev;
    if (zmq_getsockopt(x->sock, ZMQ_EVENTS, &ev, &sz) != 0)
        return 0;
    return (ev & ZMQ_POLLIN) != 0;
}

/* Takes one part into m (the routing id of a ROUTER goes to m->peer). Returns 0 when the
 * part was kept, 1 when it had to be discarded (too many frames or m is NULL). */
static int take_part(xport_t *x, xport_msg_t *m, zmq_msg_t *part, int first)
{
    if (!m)
        return 1;
    if (first && x->type == ZMQ_ROUTER) {
        m->peer = xport_peer(zmq_msg_data(part), zmq_msg_size(part));
        return 0;
    }
    if (m->n == XPORT_MAX_FRAMES)
        return 1;
    zmq_msg_move(&m->frames[m->n++], part);
    return 0;
}

/* Receives one whole multipart message, or NULL when none was waiting or it was dropped.
 * ZeroMQ delivers multipart messages atomically, so once the first part is here the rest
 * are too and the loop below cannot block. */
static xport_msg_t *recv_one(xport_t *x)
{
    xport_msg_t *m = msg_alloc();
    int first = 1, more = 1, bad = 0;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, x->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part);
            bad |= !first; /* mid-message failure: do not deliver a torn message */
            break;
        }
        more = zmq_msg_more(&part);
        bad |= take_part(x, m, &part, first);
        zmq_msg_close(&part);
        first = 0;
    }
    if (first || bad) {
        x->stats.dropped += bad;
        xport_msg_destroy(&m);
    }
    return m;
}

/* Delivers up to XPORT_BUDGET messages. Afterwards ZMQ_EVENTS is asked once more: if a
 * message is still waiting (budget spent, or a send inside a callback consumed the edge)
 * the idle hook keeps the loop from sleeping until it is delivered. */
static void drain(xport_t *x)
{
    x->in_drain++;
    for (int i = 0; i < XPORT_BUDGET && x->cb && readable(x); i++) {
        xport_msg_t *m = recv_one(x);
        if (!m)
            continue;
        x->stats.received++;
        x->cb(x, &m, x->arg);
        xport_msg_destroy(&m);
    }
    x->in_drain--;
    if (x->closing) {
        if (!x->in_drain)
            finish_close(x);
        return;
    }
    if (x->cb && readable(x))
        uv_idle_start(&x->idle, on_idle);
    else
        uv_idle_stop(&x->idle);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    (void)status; /* an error on ZMQ_FD still leaves ZMQ_EVENTS as the truth */
    (void)events;
    drain(h->data);
}

static void on_idle(uv_idle_t *h)
{
    drain(h->data);
}

/* The safety net: every XPORT_RECHECK_MS, a message that waits while ZMQ_FD signals
 * nothing and no idle hook is set would wait for the next unrelated wakeup: its edge was
 * consumed by a ZeroMQ call no ZMQ_EVENTS check followed. It is delivered now and counted
 * in stats.rescued. (With ZMQ_FD signalled, the poll callback is due: nothing to do.) */
static void on_recheck(uv_timer_t *h)
{
    xport_t *x = h->data;
    struct pollfd p = {.fd = x->fd, .events = POLLIN};
    if (x->in_drain || !x->cb || uv_is_active((uv_handle_t *)&x->idle) || poll(&p, 1, 0) != 0)
        return;
    if (!readable(x))
        return;
    x->stats.rescued++;
    drain(x);
}

int xport_start(xport_t *x, xport_recv_cb *cb, void *arg, ei_err_t *err)
{
    if (x->closing)
        return ei_err_set(err, EI_E_INVAL, "xport: start after destroy");
    x->cb = cb;
    x->arg = arg;
    int rc = uv_poll_start(&x->poll, UV_READABLE, on_poll);
    if (rc < 0)
        return ei_err_set(err, EI_E_IO, "xport: uv_poll_start: %s", uv_strerror(rc));
    /* Messages that arrived before start already spent their edge. */
    uv_idle_start(&x->idle, on_idle);
    uv_timer_start(&x->recheck, on_recheck, XPORT_RECHECK_MS, XPORT_RECHECK_MS);
    return 0;
}

void xport_stop(xport_t *x)
{
    x->cb = NULL;
    uv_poll_stop(&x->poll);
    uv_idle_stop(&x->idle);
    uv_timer_stop(&x->recheck);
}

/* ---- sending ---- */

static int frame_init(zmq_msg_t *z, const xport_frame_t *f)
{
    if (f->free_fn)
        return zmq_msg_init_data(z, (void *)f->data, f->size, f->free_fn, f->hint);
    if (zmq_msg_init_size(z, f->size) != 0)
        return -1;
    if (f->size)
        memcpy(zmq_msg_data(z), f->data, f->size);
    return 0;
}

/* Builds every part before sending any, so a failure leaves nothing half-sent. Zero-copy
 * frames whose part could not be built are freed here, keeping xport_send's promise. */
static int build_parts(xport_t *x, const xport_peer_t *to, const xport_frame_t *frames, int n,
                       zmq_msg_t *parts, int *np)
{
    int k = 0, ok = 1;
    if (x->type == ZMQ_ROUTER) {
        xport_frame_t id = {to->id, to->len, NULL, NULL};
        ok = frame_init(&parts[k++], &id) == 0;
    }
    for (int i = 0; i < n; i++) {
        if (ok && frame_init(&parts[k], &frames[i]) == 0) {
            k++;
            continue;
        }
        ok = 0;
        if (frames[i].free_fn)
            frames[i].free_fn((void *)frames[i].data, frames[i].hint);
    }
    *np = k;
    return ok ? 0 : -1;
}

static void close_parts(zmq_msg_t *parts, int from, int n)
{
    for (int i = from; i < n; i++)
        zmq_msg_close(&parts[i]);
}

static int check_send(xport_t *x, const xport_peer_t *to, const xport_frame_t *frames, int n,
                      ei_err_t *err)
{
    int bad = x->closing || n < 1 || n > XPORT_MAX_FRAMES ||
              (x->type == ZMQ_ROUTER && (!to || to->len == 0));
    if (!bad)
        return 0;
    for (int i = 0; i < n && i < XPORT_MAX_FRAMES; i++)
        if (frames[i].free_fn)
            frames[i].free_fn((void *)frames[i].data, frames[i].hint);
    if (x->closing)
        return ei_err_set(err, EI_E_INVAL, "xport: send after destroy");
    if (n < 1 || n > XPORT_MAX_FRAMES)
        return ei_err_set(err, EI_E_INVAL, "xport: %d frames (1..%d allowed)", n, XPORT_MAX_FRAMES);
    return ei_err_set(err, EI_E_INVAL, "xport: a ROUTER send needs the peer's routing id");
}

int xport_send(xport_t *x, const xport_peer_t *to, const xport_frame_t *frames, int n,
               ei_err_t *err)
{
    int rc = check_send(x, to, frames, n, err);
    if (rc < 0)
        return rc;
    zmq_msg_t parts[XPORT_MAX_FRAMES + 1];
    int np = 0;
    if (build_parts(x, to, frames, n, parts, &np) < 0) {
        close_parts(parts, 0, np);
        x->stats.send_failed++;
        return ei_err_set(err, EI_E_NOMEM, "xport: out of memory building a message");
    }
    for (int i = 0; i < np; i++) {
        if (zmq_msg_send(&parts[i], x->sock, ZMQ_DONTWAIT | (i + 1 < np ? ZMQ_SNDMORE : 0)) >= 0)
            continue;
        int e = zmq_errno();
        close_parts(parts, i, np);
        x->stats.send_failed++;
        /* EAGAIN: the peer's queue is at its high-water mark (or, on a DEALER with
         * ZMQ_IMMEDIATE, no connection is up); anything else: the peer is gone. */
        rc = ei_err_set(err, e == EAGAIN ? EI_E_BUSY : EI_E_PEER, "xport: send failed%s: %s",
                        i ? " mid-message" : "", zmq_strerror(e));
        break;
    }
    if (rc == 0)
        x->stats.sent++;
    /* The send may have processed the socket's pending commands and so consumed the edge
     * ZMQ_FD would have signalled for a message that arrived meanwhile. */
    if (x->cb && readable(x))
        uv_idle_start(&x->idle, on_idle);
    return rc;
}
