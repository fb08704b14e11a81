/* The kept tasks (see resend.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/resend.h"

struct resend {
    size_t mask;
    int count;
    resend_task_t *slot;
};

resend_t *resend_new(int max_pending)
{
    if (max_pending < 1)
        return NULL;
    resend_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    /* the size of the pending requests' ring (requests.c): a pending id's slot is its own */
    size_t n = 1;
    while (n < (size_t)max_pending * 2)
        n <<= 1;
    self->mask = n - 1;
    self->slot = calloc(n, sizeof *self->slot);
    if (!self->slot)
        resend_destroy(&self);
    return self;
}

void resend_destroy(resend_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    resend_t *self = *self_p;
    for (size_t i = 0; self->slot && i <= self->mask; i++)
        free(self->slot[i].input);
    free(self->slot);
    free(self);
    *self_p = NULL;
}

int resend_keep(resend_t *self, const einet_Task *t, const float *input, size_t numel,
                const char *device)
{
    resend_task_t *e = &self->slot[t->request_id & self->mask];
    int resent = e->id == t->request_id && e->resent;
    if (e->cap < numel) {
        float *buf = realloc(e->input, numel * sizeof *buf);
        if (!buf) {
            resend_drop(self, e->id);
            return EI_E_NOMEM;
        }
        e->input = buf;
        e->cap = numel;
    }
    if (!e->id)
        self->count++;
    e->id = t->request_id;
    e->task = *t;
    if (numel && input != e->input) /* the task sent again from its own copy */
        memcpy(e->input, input, numel * sizeof *input);
    e->numel = numel;
    snprintf(e->device, sizeof e->device, "%s", device ? device : "");
    e->resent = resent;
    return 0;
}

resend_task_t *resend_find(resend_t *self, uint64_t id)
{
    if (!self)
        return NULL;
    resend_task_t *e = &self->slot[id & self->mask];
    return id && e->id == id ? e : NULL;
}

void resend_drop(resend_t *self, uint64_t id)
{
    resend_task_t *e = resend_find(self, id);
    if (!e)
        return;
    e->id = 0; /* the buffer stays for the slot's next request */
    e->resent = 0;
    self->count--;
}

int resend_count(const resend_t *self)
{
    return self->count;
}
