/* link: one node's view of its link to the next tier. Heartbeats go out every interval and
 * come back as replies; the link is down when no reply has come for the timeout, or at once
 * when ZeroMQ refuses a send (no connection), and up again with the first reply after that.
 * Round trips give the one-way latency (half the smallest of the recent round trips, so a
 * reply held up behind the peer's compute does not count), and a heartbeat sent right behind
 * a feature map measures bandwidth: its extra round trip is the time the map's bytes took.
 *
 * Pure state: callers pass now_us (monotonic microseconds). */
#ifndef NODE_LINK_H
#define NODE_LINK_H

#include <stddef.h>
#include <stdint.h>

#define LINK_RTT_WINDOW 8

typedef struct link_state {
    uint64_t timeout_us;
    int up;
    uint64_t last_reply_us; /* 0: never */
    uint64_t since_us;      /* when the silence being timed started */
    uint64_t rtt_us[LINK_RTT_WINDOW];
    int nrtt, rtt_at;
    double bw_mbps; /* 0: not measured */
    uint64_t rtt_samples, bw_samples;
    uint64_t probe_seq; /* heartbeat sent behind a feature map; 0: none out */
    size_t probe_bytes;
} link_state_t;

/* Starts down, timing silence from now_us. */
void link_init(link_state_t *l, uint64_t timeout_us, uint64_t now_us);

/* The reply to heartbeat seq came with round trip rtt_us. Returns 1 when this brings the
 * link up. */
int link_on_reply(link_state_t *l, uint64_t seq, uint64_t rtt_us, uint64_t now_us);

/* Heartbeat seq was sent right behind `bytes` of feature map. Ignored while a probe is out. */
void link_probe(link_state_t *l, uint64_t seq, size_t bytes);

/* A send on the link was refused. Returns 1 when this takes the link down. */
int link_on_send_fail(link_state_t *l, uint64_t now_us);

/* Returns 1 when the link goes down now because nothing came back for the timeout. */
int link_tick(link_state_t *l, uint64_t now_us);

/* One-way latency estimate in ms (0 before any round trip). */
double link_latency_ms(const link_state_t *l);

/* How long the link has been silent, in ms. */
uint64_t link_silent_ms(const link_state_t *l, uint64_t now_us);

#endif
