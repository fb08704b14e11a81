/* Which connection holds each node's slot (see members.h). */
#include <stdio.h>
#include <string.h>

#include "wire/members.h"

void members_init(members_t *m, int n, uint64_t timeout_us)
{
    EI_ASSERT(n >= 0 && n <= MEMBERS_MAX);
    memset(m, 0, sizeof *m);
    m->n = n;
    m->timeout_us = timeout_us;
}

static int same_peer(const xport_peer_t *a, const xport_peer_t *b)
{
    return a->len == b->len && memcmp(a->id, b->id, a->len) == 0;
}

int members_find(const members_t *m, const xport_peer_t *peer)
{
    for (int i = 0; i < m->n; i++)
        if (m->slot[i].bound && same_peer(&m->slot[i].peer, peer))
            return i;
    return -1;
}

int members_held_by_other(const members_t *m, int i, const xport_peer_t *peer)
{
    EI_ASSERT(i >= 0 && i < m->n);
    return m->slot[i].bound && !same_peer(&m->slot[i].peer, peer);
}

static void take(member_t *s, const xport_peer_t *peer, const char *key, uint64_t now_us)
{
    s->bound = 1;
    s->peer = *peer;
    snprintf(s->key, sizeof s->key, "%s", key ? key : "");
    s->heard_us = now_us;
}

members_claim_t members_claim(members_t *m, int i, const xport_peer_t *peer, const char *key,
                              uint64_t now_us, int holder_alive)
{
    EI_ASSERT(i >= 0 && i < m->n);
    member_t *s = &m->slot[i];
    if (!s->bound) {
        take(s, peer, key, now_us);
        return MEMBERS_NEW;
    }
    if (same_peer(&s->peer, peer)) {
        s->heard_us = now_us;
        return MEMBERS_SAME;
    }
    /* The holder keeps its slot while its connection is up and it speaks: nobody can take
     * a live node's place. A holder whose connection is gone, or that has been silent for
     * the timeout (half-open), gives way to the claimant. */
    if (holder_alive && now_us - s->heard_us <= m->timeout_us)
        return MEMBERS_DUPLICATE;
    take(s, peer, key, now_us);
    return MEMBERS_TAKEN;
}

void members_heard(members_t *m, int i, uint64_t now_us)
{
    EI_ASSERT(i >= 0 && i < m->n);
    m->slot[i].heard_us = now_us;
}
