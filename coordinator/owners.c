/* The owner of each recent request (see owners.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/owners.h"

typedef struct owner {
    uint64_t id; /* 0: empty */
    char key[SEC_KEY_MAX];
} owner_t;

struct owners {
    size_t mask;
    owner_t *ring;
};

owners_t *owners_new(size_t keep)
{
    size_t n = 1;
    while (n < keep)
        n <<= 1;
    owners_t *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->mask = n - 1;
    o->ring = calloc(n, sizeof *o->ring);
    if (!o->ring)
        owners_destroy(&o);
    return o;
}

void owners_destroy(owners_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->ring);
    free(*self_p);
    *self_p = NULL;
}

void owners_set(owners_t *self, uint64_t id, const char *key)
{
    owner_t *o = &self->ring[id & self->mask];
    o->id = id;
    snprintf(o->key, sizeof o->key, "%s", key ? key : "");
}

int owners_is(const owners_t *self, uint64_t id, const char *key)
{
    const owner_t *o = &self->ring[id & self->mask];
    return id && o->id == id && key && key[0] && strcmp(o->key, key) == 0;
}
