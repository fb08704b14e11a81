/* Link state and measurement (see link.h). */
#include <string.h>

#include "node/link.h"

/* Weight of a new bandwidth sample. */
#define LINK_BW_ALPHA 0.25
/* Round-trip excess below this is noise, not transfer time. */
#define LINK_MIN_EXCESS_US 20

void link_init(link_state_t *l, uint64_t timeout_us, uint64_t now_us)
{
    memset(l, 0, sizeof *l);
    l->timeout_us = timeout_us;
    l->since_us = now_us;
}

static uint64_t base_rtt(const link_state_t *l)
{
    uint64_t m = 0;
    for (int i = 0; i < l->nrtt; i++)
        if (i == 0 || l->rtt_us[i] < m)
            m = l->rtt_us[i];
    return m;
}

static void bandwidth_sample(link_state_t *l, uint64_t rtt_us)
{
    uint64_t base = base_rtt(l);
    if (l->nrtt == 0 || rtt_us < base + LINK_MIN_EXCESS_US)
        return;
    double mbps = (double)l->probe_bytes * 8.0 / (double)(rtt_us - base); /* bits/us */
    l->bw_mbps = l->bw_samples ? (1 - LINK_BW_ALPHA) * l->bw_mbps + LINK_BW_ALPHA * mbps : mbps;
    l->bw_samples++;
}

int link_on_reply(link_state_t *l, uint64_t seq, uint64_t rtt_us, uint64_t now_us)
{
    if (l->probe_seq && seq == l->probe_seq) {
        bandwidth_sample(l, rtt_us);
        l->probe_seq = 0;
    } else {
        l->rtt_us[l->rtt_at] = rtt_us;
        l->rtt_at = (l->rtt_at + 1) % LINK_RTT_WINDOW;
        if (l->nrtt < LINK_RTT_WINDOW)
            l->nrtt++;
        l->rtt_samples++;
    }
    l->last_reply_us = now_us;
    l->since_us = now_us;
    if (l->up)
        return 0;
    l->up = 1;
    return 1;
}

void link_probe(link_state_t *l, uint64_t seq, size_t bytes)
{
    if (l->probe_seq)
        return;
    l->probe_seq = seq;
    l->probe_bytes = bytes;
}

int link_on_send_fail(link_state_t *l, uint64_t now_us)
{
    l->probe_seq = 0;
    if (!l->up)
        return 0;
    l->up = 0;
    l->since_us = now_us;
    return 1;
}

int link_tick(link_state_t *l, uint64_t now_us)
{
    if (!l->up || now_us - l->since_us <= l->timeout_us)
        return 0;
    l->up = 0;
    l->probe_seq = 0; /* its reply, if it ever comes, measures nothing */
    return 1;
}

double link_latency_ms(const link_state_t *l)
{
    return (double)base_rtt(l) / 2000.0;
}

uint64_t link_silent_ms(const link_state_t *l, uint64_t now_us)
{
    return now_us > l->since_us ? (now_us - l->since_us) / 1000 : 0;
}
