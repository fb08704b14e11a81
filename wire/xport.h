/* xport: a ZeroMQ socket driven by a libuv loop. The socket's ZMQ_FD is watched by a
 * uv_poll_t; because that descriptor is edge-triggered (it signals "something changed",
 * not "a message is waiting"), every wakeup drains while ZMQ_EVENTS reports ZMQ_POLLIN, and
 * every send re-checks ZMQ_EVENTS through an idle hook, since a send can consume the edge
 * of a message that arrived meanwhile. As a safety net for a wakeup lost all the same
 * (a suite run once saw a client's connection go unread for 30 s while the loop ran, cause
 * not found), a timer that does not keep the loop alive rechecks every XPORT_RECHECK_MS and
 * delivers what waits (xport_stats_t.rescued). Whole multipart messages are delivered to
 * one callback; sends never block the loop.
 *
 * Every call must come from the loop's thread (ZeroMQ sockets are not thread-safe). */
#ifndef WIRE_XPORT_H
#define WIRE_XPORT_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "common/ei.h"

typedef struct xport xport_t;
typedef struct xport_msg xport_msg_t;

/* Payload frames of one message (a ROUTER's routing-id frame is not counted). A message
 * with more is dropped on receipt and counted in xport_stats_t.dropped. */
#define XPORT_MAX_FRAMES 4

/* Defaults chosen for einet's traffic: a few hundred in-flight requests per peer, feature
 * maps up to a few hundred kB, and quick exit (pending messages to a dead peer are dropped
 * after XPORT_LINGER_MS rather than holding the process on close). */
#define XPORT_HWM 1000
#define XPORT_LINGER_MS 100
#define XPORT_MAXMSGSIZE (8 << 20)

/* At most this many messages are delivered per wakeup, so one busy socket cannot starve
 * the loop's timers; the rest follow on the next loop iteration. */
#define XPORT_BUDGET 256

#define XPORT_ALIGN 8

/* How often a started socket checks ZMQ_EVENTS on its own, in case a wakeup was lost (an
 * edge consumed by a ZeroMQ call no ZMQ_EVENTS check followed): the longest such a message
 * can wait. Each check is one zmq_getsockopt; the timer does not keep a loop alive. */
#define XPORT_RECHECK_MS 100

/* A peer's ZeroMQ routing id, copied by value so it can be stored (a coordinator keeps
 * one per pending request). len = 0: no routing id (non-ROUTER sockets). */
typedef struct xport_peer {
    uint8_t len;
    uint8_t id[255];
} xport_peer_t;

/* Called by ZeroMQ's I/O thread (not the loop thread) when it is done with zero-copy data. */
typedef void xport_free_fn(void *data, void *hint);

/* One frame to send. With free_fn NULL the bytes are copied before xport_send returns;
 * otherwise the frame is sent without a copy and xport owns data from the call on, even
 * when the send fails: free_fn(data, hint) runs once nothing needs it any more. */
typedef struct xport_frame {
    const void *data;
    size_t size;
    xport_free_fn *free_fn;
    void *hint;
} xport_frame_t;

struct sec;

typedef struct xport_opts {
    int type;             /* ZMQ_ROUTER, ZMQ_DEALER, ZMQ_PUSH, ZMQ_PULL or ZMQ_PAIR */
    const char *identity; /* routing id of a DEALER (NULL: ZeroMQ picks one) */
    int sndhwm, rcvhwm;   /* 0: XPORT_HWM */
    int linger_ms;        /* < 0: XPORT_LINGER_MS */
    int64_t maxmsgsize;   /* largest incoming frame; 0: XPORT_MAXMSGSIZE */
    int immediate;        /* 1: ZMQ_IMMEDIATE, so sends fail while a connect is not up
                           * (no queueing for an absent peer); 0: queue up to the HWM */
    const struct sec *sec;   /* keys (wire/sec.h); NULL or keyless: plain ZeroMQ */
    const char *server_cert; /* with keys: NULL makes a CURVE server, else the public
                              * certificate file of the server this socket connects to */
} xport_opts_t;

typedef struct xport_stats {
    uint64_t received;    /* messages delivered to the callback */
    uint64_t sent;        /* messages handed to ZeroMQ */
    uint64_t send_failed; /* sends refused: EAGAIN (peer slow or gone), EHOSTUNREACH, ... */
    uint64_t dropped;     /* incoming messages with too many frames */
    uint64_t rescued;     /* times XPORT_RECHECK_MS found a message no wakeup was due for */
} xport_stats_t;

/* Delivers one whole message. The callback may keep it by setting *msg_p to NULL (it then
 * owns it and frees it with xport_msg_destroy); otherwise it is freed when the callback
 * returns. The callback may send on any xport and may destroy this one. */
typedef void xport_recv_cb(xport_t *x, xport_msg_t **msg_p, void *arg);

/* A new socket of opts->type in the ZeroMQ context zctx, driven by loop. ROUTER sockets are
 * made ROUTER_MANDATORY so a send to an unknown or vanished peer fails with a message
 * instead of vanishing. Caller owns the result; NULL and *err on failure. */
xport_t *xport_new(uv_loop_t *loop, void *zctx, const xport_opts_t *opts, ei_err_t *err);

/* Closes the socket at once and releases the handle once the loop runs its close
 * callbacks (so uv_run must run again before uv_loop_close). Accepts NULL; clears *self_p.
 * Safe inside this xport's own receive callback. */
void xport_destroy(xport_t **self_p);

/* Bind or connect an endpoint ("tcp://127.0.0.1:5600", "tcp://127.0.0.1:*", "ipc://..."). */
int xport_bind(xport_t *x, const char *endpoint, ei_err_t *err) EI_CHECK;
int xport_connect(xport_t *x, const char *endpoint, ei_err_t *err) EI_CHECK;

/* The endpoint last bound, with a wildcard port resolved; "" before any bind. */
const char *xport_endpoint(const xport_t *x);

/* Starts delivering messages to cb (replacing any previous callback). */
int xport_start(xport_t *x, xport_recv_cb *cb, void *arg, ei_err_t *err) EI_CHECK;

/* Stops delivery; messages wait in ZeroMQ's queue until xport_start. */
void xport_stop(xport_t *x);

/* Sends frames[0..n) as one message, to peer `to` on a ROUTER (NULL elsewhere). Never
 * blocks: when ZeroMQ cannot take the message now it fails, and the caller decides whether
 * the peer is unreachable or the message waits in a bounded queue of its own: EI_E_BUSY
 * when the peer's queue is at its high-water mark (or, on a DEALER with ZMQ_IMMEDIATE, no
 * connection is up: EAGAIN either way), EI_E_PEER when the peer is unknown or gone (a
 * ROUTER_MANDATORY send to an unknown routing id). Zero-copy frames are owned by xport
 * from the call on (see xport_frame_t). 0 or EI_E_BUSY / EI_E_PEER / EI_E_INVAL. */
int xport_send(xport_t *x, const xport_peer_t *to, const xport_frame_t *frames, int n,
               ei_err_t *err) EI_CHECK;

xport_stats_t xport_stats(const xport_t *x);

/* The raw ZeroMQ socket, for options this module does not set (ZMQ_SUBSCRIBE, ...). */
void *xport_socket(xport_t *x);

/* A received message: the sender's routing id (ROUTER) and its payload frames, which stay
 * in ZeroMQ's buffers (no copy) until xport_msg_destroy. */
int xport_msg_frames(const xport_msg_t *m);
const void *xport_msg_data(const xport_msg_t *m, int i, size_t *size);
const xport_peer_t *xport_msg_peer(const xport_msg_t *m);

/* A property of the connection the message came on (ZeroMQ metadata: "User-Id", and the
 * certificate metadata the ZAP handler returned, wire/sec.h). NULL when it has none. */
const char *xport_msg_meta(const xport_msg_t *m, const char *property);

/* Frame i's bytes at an address aligned to XPORT_ALIGN (enough for float and double).
 * ZeroMQ may hand small frames
 * at any offset inside its receive buffer; only then is the frame copied, once, into memory
 * the message owns. NULL when out of memory. */
const void *xport_msg_aligned(xport_msg_t *m, int i, size_t *size);

/* A message built from the given frames (copied), as if it had been received from peer
 * `from` (NULL: none): for tests and for feeding recorded traffic to a decoder. */
xport_msg_t *xport_msg_new(const xport_peer_t *from, const xport_frame_t *frames, int n);

void xport_msg_destroy(xport_msg_t **self_p);

/* A routing id from bytes (truncated to 255). */
xport_peer_t xport_peer(const void *id, size_t len);

#endif
