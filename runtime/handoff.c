/* The maps a tier answers for until the next tier takes them over (see handoff.h). Entries
 * sit in sending order in one array: a node holds at most its max_inflight-sized window, so
 * a linear scan is cheaper than any index and "oldest first" comes for free. */
#include <stdlib.h>
#include <string.h>

#include "runtime/handoff.h"

struct handoff {
    size_t n, max;
    handoff_entry_t *e;
};

handoff_t *handoff_new(size_t max)
{
    handoff_t *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->max = max ? max : 1;
    h->e = calloc(h->max, sizeof *h->e);
    if (!h->e) {
        free(h);
        return NULL;
    }
    return h;
}

static void entry_free(handoff_entry_t *e)
{
    free(e->frame);
    free(e->tensor);
}

void handoff_destroy(handoff_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    handoff_t *h = *self_p;
    for (size_t i = 0; i < h->n; i++)
        entry_free(&h->e[i]);
    free(h->e);
    free(h);
    *self_p = NULL;
}

static long find(const handoff_t *h, uint64_t id)
{
    for (size_t i = 0; i < h->n; i++)
        if (h->e[i].request_id == id)
            return (long)i;
    return -1;
}

int handoff_keep(handoff_t *h, uint64_t id, int replica, uint64_t now_us, uint64_t deadline_us,
                 void **frame_p, size_t frame_bytes, float **tensor_p, size_t tensor_bytes)
{
    if (find(h, id) >= 0)
        return EI_E_INVAL;
    if (h->n == h->max)
        return EI_E_RANGE;
    handoff_entry_t *e = &h->e[h->n++];
    memset(e, 0, sizeof *e);
    e->request_id = id;
    e->replica = replica;
    e->sent_us = now_us;
    e->deadline_us = deadline_us;
    e->frame = *frame_p;
    e->frame_bytes = frame_bytes;
    e->tensor = tensor_p ? *tensor_p : NULL;
    e->tensor_bytes = tensor_p ? tensor_bytes : 0;
    *frame_p = NULL;
    if (tensor_p)
        *tensor_p = NULL;
    return 0;
}

static void remove_at(handoff_t *h, size_t i)
{
    entry_free(&h->e[i]);
    memmove(&h->e[i], &h->e[i + 1], (h->n - i - 1) * sizeof *h->e);
    h->n--;
}

int handoff_drop(handoff_t *h, uint64_t id)
{
    long i = find(h, id);
    if (i < 0)
        return 0;
    remove_at(h, (size_t)i);
    return 1;
}

int handoff_taken(handoff_t *h, uint64_t id)
{
    return handoff_drop(h, id);
}

int handoff_lost(const handoff_t *h, int replica, uint64_t *ids, int max)
{
    int k = 0;
    for (size_t i = 0; i < h->n && k < max; i++)
        if (h->e[i].replica == replica)
            ids[k++] = h->e[i].request_id;
    return k;
}

const handoff_entry_t *handoff_get(const handoff_t *h, uint64_t id)
{
    long i = find(h, id);
    return i < 0 ? NULL : &h->e[i];
}

int handoff_moved(handoff_t *h, uint64_t id, int replica, uint64_t now_us)
{
    long i = find(h, id);
    if (i < 0)
        return EI_E_NOTFOUND;
    h->e[i].replica = replica;
    h->e[i].sent_us = now_us;
    h->e[i].resent++;
    return 0;
}

uint32_t handoff_count(const handoff_t *h, int replica)
{
    uint32_t k = 0;
    for (size_t i = 0; i < h->n; i++)
        k += h->e[i].replica == replica;
    return k;
}

uint32_t handoff_total(const handoff_t *h)
{
    return (uint32_t)h->n;
}

int handoff_expired(const handoff_t *h, uint64_t now_us, uint64_t *ids, int max)
{
    int k = 0;
    for (size_t i = 0; i < h->n && k < max; i++)
        if (h->e[i].deadline_us && h->e[i].deadline_us <= now_us)
            ids[k++] = h->e[i].request_id;
    return k;
}
