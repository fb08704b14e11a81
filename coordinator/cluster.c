/* Node and link health (see cluster.h). */
#include <stdio.h>
#include <string.h>

#include "coordinator/cluster.h"

void cluster_init(cluster_t *c, const conf_tiers_t *tiers, int n_blocks, uint64_t timeout_us)
{
    memset(c, 0, sizeof *c);
    c->n_tiers = tiers->n;
    c->n_blocks = n_blocks;
    c->timeout_us = timeout_us;
    for (int i = 0; i < tiers->n; i++)
        c->node[i].tier = tiers->tier[i];
}

int cluster_pos(const cluster_t *c, int tier)
{
    for (int i = 0; i < c->n_tiers; i++)
        if (c->node[i].tier == tier)
            return i;
    return -1;
}

const char *cluster_tier_name(int tier)
{
    static const char *const names[] = {"none", "device", "edge", "cloud"};
    return tier >= 0 && tier <= 3 ? names[tier] : "?";
}

const char *cluster_link_name(int link)
{
    static const char *const names[] = {"none", "device-edge", "edge-cloud"};
    return link >= 0 && link <= 2 ? names[link] : "?";
}

void cluster_heartbeat(cluster_t *c, int pos, const einet_Heartbeat *h, uint64_t now_us)
{
    cluster_node_t *n = &c->node[pos];
    n->seen = 1;
    n->last_seen_us = now_us;
    n->first_block = h->first_block;
    n->last_block = h->last_block;
    n->in_flight = h->in_flight;
    n->draining = h->draining;
}

int cluster_link_report(cluster_t *c, int pos, const einet_Fault *f)
{
    if ((int)f->link != pos + 1 || pos + 1 >= c->n_tiers)
        return EI_E_RANGE;
    c->node[pos].link_reported_up = f->clear && f->down_ms == 0;
    return 0;
}

void cluster_profile(cluster_t *c, int pos, const einet_ProfileReport *r)
{
    cluster_node_t *n = &c->node[pos];
    n->reports++;
    n->coord_latency_ms = r->coord_latency_ms;
    if (r->boundary_ms > 0)
        n->boundary_ms = r->boundary_ms;
    if (r->prev_samples > 0) {
        n->prev_transfer_ms = r->prev_transfer_ms;
        n->prev_samples = r->prev_samples;
    }
    if (r->next_samples > 0) {
        n->link_latency_ms = r->next_latency_ms;
        n->link_bw_mbps = r->next_bandwidth_mbps;
        n->link_samples = r->next_samples;
    }
    for (pb_size_t i = 0; i < r->blocks_count; i++) {
        const einet_BlockTiming *b = &r->blocks[i];
        if (b->block < 1 || (int)b->block > c->n_blocks || b->samples == 0)
            continue;
        c->conv_ms[b->block - 1] = b->conv_ms;
        c->branch_ms[b->block - 1] = b->branch_ms;
        c->samples[b->block - 1] += b->samples;
    }
    c->changed = 1;
}

int cluster_take_changed(cluster_t *c)
{
    int ch = c->changed;
    c->changed = 0;
    return ch;
}

/* The blocks a node reports must be the ones its place in the pipeline needs: the device
 * starts at 1, each node right after the one before it, the last ends at n. */
static int range_ok(const cluster_t *c, int i)
{
    const cluster_node_t *n = &c->node[i];
    if (n->first_block < 1 || n->first_block > n->last_block || (int)n->last_block > c->n_blocks)
        return 0;
    if (i == 0 && n->first_block != 1)
        return 0;
    if (i == c->n_tiers - 1 && (int)n->last_block != c->n_blocks)
        return 0;
    if (i > 0 && c->node[i - 1].seen && n->first_block != c->node[i - 1].last_block + 1)
        return 0;
    return 1;
}

static cluster_state_t node_state(const cluster_t *c, int i, uint64_t now_us)
{
    const cluster_node_t *n = &c->node[i];
    if (!n->seen || now_us - n->last_seen_us > c->timeout_us || !range_ok(c, i))
        return CLUSTER_DOWN;
    return n->draining ? CLUSTER_DRAINING : CLUSTER_UP;
}

static cluster_event_t *event(cluster_event_t *e, cluster_ev_kind_t kind, int pos)
{
    e->kind = kind;
    e->pos = pos;
    e->what[0] = 0;
    return e;
}

static int tick_node(cluster_t *c, int i, uint64_t now_us, cluster_event_t *ev)
{
    cluster_node_t *n = &c->node[i];
    cluster_state_t s = node_state(c, i, now_us), was = n->state;
    if (s == was)
        return 0;
    n->state = s;
    const char *name = cluster_tier_name(n->tier);
    if (s == CLUSTER_UP) {
        snprintf(event(ev, CLUSTER_EV_NODE_UP, i)->what, sizeof ev->what, "%s up", name);
    } else if (s == CLUSTER_DRAINING) {
        snprintf(event(ev, CLUSTER_EV_NODE_DRAINING, i)->what, sizeof ev->what, "%s draining",
                 name);
    } else {
        if (n->seen && now_us - n->last_seen_us > c->timeout_us) {
            snprintf(event(ev, CLUSTER_EV_NODE_DOWN, i)->what, sizeof ev->what,
                     "%s lost: no heartbeat for %llu ms", name,
                     (unsigned long long)((now_us - n->last_seen_us) / 1000));
            n->seen = 0;
            n->link_reported_up = 0;
        } else {
            snprintf(event(ev, CLUSTER_EV_NODE_DOWN, i)->what, sizeof ev->what,
                     "%s runs blocks %u..%u: not its place", name, (unsigned)n->first_block,
                     (unsigned)n->last_block);
        }
    }
    return 1;
}

static int tick_link(cluster_t *c, int i, cluster_event_t *ev)
{
    cluster_node_t *n = &c->node[i];
    int up = n->state != CLUSTER_DOWN && n->link_reported_up;
    if (up == n->link_up)
        return 0;
    n->link_up = up;
    snprintf(event(ev, up ? CLUSTER_EV_LINK_UP : CLUSTER_EV_LINK_DOWN, i)->what, sizeof ev->what,
             "%s link %s", cluster_link_name(i + 1), up ? "up" : "down");
    return 1;
}

int cluster_tick(cluster_t *c, uint64_t now_us, cluster_event_t *ev)
{
    int k = 0;
    for (int i = 0; i < c->n_tiers; i++)
        k += tick_node(c, i, now_us, &ev[k]);
    for (int i = 0; i + 1 < c->n_tiers; i++)
        k += tick_link(c, i, &ev[k]);
    return k;
}

int cluster_broken(const cluster_t *c)
{
    for (int i = 0; i < c->n_tiers; i++) {
        if (c->node[i].state != CLUSTER_UP)
            return i;
        if (i + 1 < c->n_tiers && !c->node[i].link_up)
            return i + 1;
    }
    return c->n_tiers;
}

int cluster_all_healthy(const cluster_t *c)
{
    return cluster_broken(c) == c->n_tiers;
}

void cluster_fill(const cluster_t *c, uint64_t now_us, einet_StatsReply *out)
{
    out->nodes_count = (pb_size_t)c->n_tiers;
    for (int i = 0; i < c->n_tiers; i++) {
        const cluster_node_t *n = &c->node[i];
        einet_NodeStats *s = &out->nodes[i];
        memset(s, 0, sizeof *s);
        s->tier = n->tier;
        s->healthy = n->state == CLUSTER_UP;
        s->last_seen_us = n->last_seen_us ? now_us - n->last_seen_us : 0; /* kept once lost */
        s->first_block = n->first_block;
        s->last_block = n->last_block;
        s->in_flight = n->in_flight;
    }
    out->links_count = (pb_size_t)(c->n_tiers - 1);
    for (int i = 0; i + 1 < c->n_tiers; i++) {
        const cluster_node_t *n = &c->node[i];
        einet_LinkStats *l = &out->links[i];
        memset(l, 0, sizeof *l);
        l->link = i + 1;
        l->latency_ms = n->link_latency_ms;
        l->bandwidth_mbps = n->link_bw_mbps;
        l->samples = n->link_samples;
        l->up = n->link_up;
    }
}
