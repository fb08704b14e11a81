/* members: which connection speaks for each node a socket serves. A node is known by what
 * it proves (its CURVE public key on a secure cluster, its configured tier name on a keyless
 * one), never by a ZeroMQ routing id, which any peer may pick. A connection becomes a
 * node's member by claiming it in a heartbeat; the claim is refused while another live
 * connection holds that node (a stolen identity, or a stray duplicate process), and granted
 * at once when the holder is gone (a restarted node proving itself again) or has been
 * silent for the timeout (a half-open connection).
 *
 * The coordinator keeps one slot per pipeline position on its nodes socket; a node keeps
 * one slot for its previous tier on its bind socket. Pure state: callers pass now_us and
 * say whether the holder still answers (a send to its routing id succeeds). */
#ifndef WIRE_MEMBERS_H
#define WIRE_MEMBERS_H

#include <stdint.h>

#include "wire/xport.h"

#define MEMBERS_MAX 16 /* the coordinator's tiers; a node's previous-tier replicas */
#define MEMBERS_KEY_MAX 41 /* a Z85 CURVE public key and its terminator */

typedef struct member {
    int bound;
    xport_peer_t peer;         /* the connection that holds the slot */
    char key[MEMBERS_KEY_MAX]; /* the public key it proved; "" on a keyless cluster */
    uint64_t heard_us;         /* last message from it */
} member_t;

typedef struct members {
    int n;
    uint64_t timeout_us;
    member_t slot[MEMBERS_MAX];
} members_t;

/* What a claim did. */
typedef enum {
    MEMBERS_SAME = 0,  /* the holder again */
    MEMBERS_NEW,       /* the slot was free */
    MEMBERS_TAKEN,     /* the holder was gone or silent: the claimant holds the slot now */
    MEMBERS_DUPLICATE, /* a live connection holds the slot: refused */
} members_claim_t;

void members_init(members_t *m, int n, uint64_t timeout_us);

/* The slot held by the connection peer, or -1. */
int members_find(const members_t *m, const xport_peer_t *peer);

/* peer (which proved key, "" when keyless) claims slot i at now_us. holder_alive: the
 * current holder's connection still takes messages (only asked when another connection
 * holds the slot; pass 1 when unknown). */
members_claim_t members_claim(members_t *m, int i, const xport_peer_t *peer, const char *key,
                              uint64_t now_us, int holder_alive);

/* 1 when another connection than peer holds slot i: the caller then asks whether the
 * holder is alive before members_claim. */
int members_held_by_other(const members_t *m, int i, const xport_peer_t *peer);

/* A message from the holder of slot i. */
void members_heard(members_t *m, int i, uint64_t now_us);

#endif
