/* owners: which key submitted each recent request, so a client key reads only its own
 * results (docs/security.md). A ring of the latest COORD_KEEP_ANSWERS request ids, like
 * the answers kept for result queries; an id that has left the ring has no known owner and
 * only an operator may read it. Pure state, apart from the one allocation. */
#ifndef COORDINATOR_OWNERS_H
#define COORDINATOR_OWNERS_H

#include <stddef.h>
#include <stdint.h>

#include "wire/sec.h"

typedef struct owners owners_t;

/* Room for the latest `keep` ids (rounded up to a power of two). Caller owns the result;
 * NULL when out of memory. */
owners_t *owners_new(size_t keep);
void owners_destroy(owners_t **self_p);

/* Request id was submitted by the public key `key`. */
void owners_set(owners_t *self, uint64_t id, const char *key);

/* 1 when request id is known to have been submitted by key. */
int owners_is(const owners_t *self, uint64_t id, const char *key);

#endif
