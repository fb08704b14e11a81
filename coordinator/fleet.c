/* Membership of a fleet (see fleet.h). */
#include <stdio.h>
#include <string.h>

#include "coordinator/fleet.h"
#include "proto/messages.pb.h"
#include "runtime/route.h"

void fleet_init(fleet_t *f, const int *tiers, int n, uint64_t timeout_us, uint64_t forget_us)
{
    memset(f, 0, sizeof *f);
    f->n_tiers = n < FLEET_MAX_TIERS ? n : FLEET_MAX_TIERS;
    for (int i = 0; i < f->n_tiers; i++)
        f->tier[i] = tiers[i];
    f->timeout_us = timeout_us;
    f->forget_us = forget_us > timeout_us ? forget_us : timeout_us;
}

int fleet_find(const fleet_t *f, const char *name)
{
    for (int i = 0; i < FLEET_MAX_NODES; i++)
        if (f->node[i].used && strcmp(f->node[i].name, name) == 0)
            return i;
    return -1;
}

static int tier_pos(const fleet_t *f, int tier)
{
    for (int i = 0; i < f->n_tiers; i++)
        if (f->tier[i] == tier)
            return i;
    return -1;
}

int fleet_join(fleet_t *f, const char *name, int tier, uint64_t now_us)
{
    int pos = tier_pos(f, tier);
    size_t len = strlen(name);
    if (pos < 0 || len == 0 || len >= FLEET_NAME_MAX)
        return EI_E_INVAL;
    int i = fleet_find(f, name);
    if (i >= 0)
        return f->node[i].tier == tier ? i : EI_E_INVAL;
    for (i = 0; i < FLEET_MAX_NODES && f->node[i].used; i++)
        ;
    if (i == FLEET_MAX_NODES)
        return EI_E_RANGE;
    fleet_node_t *n = &f->node[i];
    memset(n, 0, sizeof *n);
    n->used = 1;
    memcpy(n->name, name, len + 1);
    n->tier = tier;
    n->pos = pos;
    n->joined_us = n->last_seen_us = now_us;
    return i;
}

int fleet_heartbeat(fleet_t *f, const char *name, int tier, uint32_t in_flight, int draining,
                    uint64_t now_us)
{
    int i = fleet_join(f, name, tier, now_us);
    if (i < 0)
        return i;
    fleet_node_t *n = &f->node[i];
    n->last_seen_us = now_us;
    n->in_flight = in_flight;
    n->sent = 0; /* counted in its in_flight from now on */
    n->draining = draining;
    return i;
}

void fleet_fill(const fleet_t *f, uint64_t now_us, einet_StatsReply *out)
{
    pb_size_t k = 0;
    for (int pos = 0; pos < f->n_tiers; pos++) {
        pb_size_t k0 = k;
        for (int i = 0; i < FLEET_MAX_NODES && k < pb_arraysize(einet_StatsReply, nodes); i++) {
            const fleet_node_t *n = &f->node[i];
            if (!n->used || n->pos != pos)
                continue;
            einet_NodeStats *s = &out->nodes[k++];
            memset(s, 0, sizeof *s);
            s->tier = n->tier;
            s->healthy = n->state == FLEET_UP;
            s->last_seen_us = now_us > n->last_seen_us ? now_us - n->last_seen_us : 0;
            s->first_block = n->first_block;
            s->last_block = n->last_block;
            s->in_flight = n->in_flight;
            snprintf(s->name, sizeof s->name, "%s", n->name);
            s->link_up = s->healthy && !n->link_down;
        }
        if (k == k0 && k < pb_arraysize(einet_StatsReply, nodes)) {
            /* a tier nobody serves yet: listed, unhealthy, never seen */
            memset(&out->nodes[k], 0, sizeof out->nodes[k]);
            out->nodes[k++].tier = f->tier[pos];
        }
    }
    out->nodes_count = k;
}

static fleet_event_t *event(fleet_event_t *e, fleet_ev_kind_t kind, int i, const fleet_node_t *n)
{
    e->kind = kind;
    e->node = i;
    e->pos = n->pos;
    memcpy(e->name, n->name, sizeof e->name);
    return e;
}

int fleet_tick(fleet_t *f, uint64_t now_us, fleet_event_t *ev, int max)
{
    int k = 0;
    for (int i = 0; i < FLEET_MAX_NODES && k < max; i++) {
        fleet_node_t *n = &f->node[i];
        if (!n->used)
            continue;
        uint64_t silent = now_us > n->last_seen_us ? now_us - n->last_seen_us : 0;
        if (silent > f->forget_us) {
            event(&ev[k++], FLEET_EV_FORGOTTEN, i, n);
            memset(n, 0, sizeof *n);
            continue;
        }
        fleet_state_t s = silent > f->timeout_us ? FLEET_DOWN
                          : n->draining           ? FLEET_DRAINING
                                                  : FLEET_UP;
        if (s == n->state)
            continue;
        n->state = s;
        if (s == FLEET_DOWN)
            n->sent = 0; /* what it held is lost with it */
        event(&ev[k++], s == FLEET_UP ? FLEET_EV_UP : s == FLEET_DRAINING ? FLEET_EV_DRAINING
                                                                          : FLEET_EV_DOWN,
              i, n);
    }
    return k;
}

int fleet_up(const fleet_t *f, int pos)
{
    int k = 0;
    for (int i = 0; i < FLEET_MAX_NODES; i++)
        k += f->node[i].used && f->node[i].pos == pos && f->node[i].state == FLEET_UP;
    return k;
}

int fleet_pick_other(fleet_t *f, int pos, int except)
{
    /* the tier's nodes only, so ties rotate among them evenly */
    route_replica_t r[FLEET_MAX_NODES];
    int idx[FLEET_MAX_NODES], n = 0;
    for (int i = 0; i < FLEET_MAX_NODES; i++) {
        const fleet_node_t *nd = &f->node[i];
        if (!nd->used || nd->pos != pos)
            continue;
        r[n].alive = nd->state == FLEET_UP && !nd->link_down && i != except;
        r[n].queued = nd->in_flight + nd->sent;
        r[n].ms_per_req = nd->ms_per_req;
        idx[n++] = i;
    }
    int k = route_pick(r, n, f->rr++);
    return k < 0 ? -1 : idx[k];
}

int fleet_pick(fleet_t *f, int pos)
{
    return fleet_pick_other(f, pos, -1);
}

void fleet_sent(fleet_t *f, int i)
{
    f->node[i].sent++;
}

void fleet_done(fleet_t *f, int i)
{
    if (f->node[i].sent)
        f->node[i].sent--;
}
