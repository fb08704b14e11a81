/* fault: fault injection on a node's link to the next tier, so failures can be made on any
 * machine (docs/protocol.md: `einet fault`). The node at the link's sending end holds the
 * state and asks it, for every message crossing the link in either direction (heartbeats
 * included), when that message is delivered. The link is a TCP connection, and the
 * emulation keeps TCP's semantics: nothing is lost while the connection lives, messages
 * arrive in order, and trouble shows as lateness:
 *   down S   nothing crosses for S seconds: messages wait until the link is back;
 *   loss P   every transmission of a message is lost with probability P and retried after
 *            a retransmission timeout that doubles each time (200, 400, 800 ms, ...), so
 *            a message is late by 200 (2^f - 1) ms after f losses (at 100%: never);
 *   delay D  every message is D ms late;
 * and a message never overtakes an earlier one in its direction (head-of-line blocking).
 * When the node's own failure detection then declares the link down (no heartbeat reply
 * for the timeout), the connection counts as lost: the node discards what is held
 * (fault_lost) and the coordinator answers the requests cut off. A short cut thus costs
 * latency, a long one is a link failure - as with a real cable pulled and plugged back.
 *
 * Also where a Fault command is checked and routed: which node acts on it. Pure state:
 * callers pass now_us. */
#ifndef RUNTIME_FAULT_H
#define RUNTIME_FAULT_H

#include <stddef.h>
#include <stdint.h>

#include "common/ei.h"
#include "proto/messages.pb.h"

#define FAULT_RTO_US 200000u /* Linux's minimum TCP retransmission timeout */
#define FAULT_MAX_RETRIES 15 /* TCP gives up after about this many (tcp_retries2) */
#define FAULT_NEVER UINT64_MAX

enum { FAULT_OUT = 0, FAULT_IN = 1 };

typedef struct fault_state {
    uint64_t down_until_us; /* 0: not down */
    uint32_t delay_ms;
    float loss_pct;
    uint64_t last_at[2]; /* delivery time of the latest message per direction (order) */
    uint64_t held, lost_transmissions;
    ei_rng_t rng;
} fault_state_t;

void fault_init(fault_state_t *f, uint64_t seed);

/* Applies a Fault command for this link: `clear` restores it first (and lets everything
 * held go at once: fault_release), then down_ms (down from now for that long), delay_ms and
 * loss_pct replace what was set, where given (non-zero). kill is not link state (the node
 * acts on it). */
void fault_apply(fault_state_t *f, const einet_Fault *cmd, uint64_t now_us);

/* When a message crossing the link at now_us in direction dir (FAULT_OUT, FAULT_IN) is
 * delivered: now_us when nothing holds it back, FAULT_NEVER at 100% loss (or behind such a
 * message). Never earlier than the previous message in that direction. */
uint64_t fault_deliver_at(fault_state_t *f, int dir, uint64_t now_us);

/* The link was declared down: the connection is lost with what it held; order restarts. */
void fault_lost(fault_state_t *f);

/* Held messages may go now (a `clear`): order restarts from now. */
void fault_release(fault_state_t *f);

/* 1 while any fault is in effect at now_us. */
int fault_active(const fault_state_t *f, uint64_t now_us);

/* One line: "down 1500 ms more, delay 20 ms, loss 5%" or "none". */
void fault_describe(const fault_state_t *f, uint64_t now_us, char *buf, size_t cap);

/* The tier that must act on cmd, given the pipeline's tiers in order (device first): the
 * node at the sending end of cmd->link, or cmd->kill. Fills *err and returns EI_E_RANGE
 * when the link or tier is not part of this pipeline, EI_E_FORMAT for a command that
 * names both a link and a tier to kill, or neither. */
int fault_target(const einet_Fault *cmd, const int *tiers, int n_tiers, int *tier,
                 ei_err_t *err) EI_CHECK;

#endif
