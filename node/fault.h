/* fault: fault injection on a node's link to the next tier, so failures can be made on any
 * machine (docs/protocol.md: `einet fault`). The node at the link's sending end holds the
 * state and consults it for every message crossing the link, in both directions and
 * heartbeats included: while the link is "down" everything is dropped, `loss` drops each
 * message with that probability, `delay` holds each one back by that long. The node's own
 * failure detection then sees what a real cut, loss or delay would show it.
 *
 * Also where a Fault command is checked and routed: which node acts on it. Pure state:
 * callers pass now_us. */
#ifndef NODE_FAULT_H
#define NODE_FAULT_H

#include <stddef.h>
#include <stdint.h>

#include "common/ei.h"
#include "proto/messages.pb.h"

typedef struct fault_state {
    uint64_t down_until_us; /* 0: not down */
    uint32_t delay_ms;
    float loss_pct;
    uint64_t dropped, delayed;
    ei_rng_t rng;
} fault_state_t;

typedef enum { FAULT_PASS = 0, FAULT_DROP, FAULT_DELAY } fault_verdict_t;

void fault_init(fault_state_t *f, uint64_t seed);

/* Applies a Fault command for this link: `clear` restores it first, then down_ms (down from
 * now for that long), delay_ms and loss_pct replace what was set, where given (non-zero).
 * kill is not link state (the node acts on it). */
void fault_apply(fault_state_t *f, const einet_Fault *cmd, uint64_t now_us);

/* What happens to one message crossing the link at now_us; *delay_us gets the hold-back for
 * FAULT_DELAY. */
fault_verdict_t fault_verdict(fault_state_t *f, uint64_t now_us, uint64_t *delay_us);

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
