/* Details shared by the files of the wire module. */
#ifndef WIRE_INTERNAL_H
#define WIRE_INTERNAL_H

#include <pb.h>

#include "wire/wire.h"

/* The field name of tag in messages of type desc, written to buf ("seen", "request");
 * "field N" for tags the message does not define. Returns buf. */
const char *wire__field_name(const pb_msgdesc_t *desc, uint32_t tag, char *buf, size_t cap);

/* After pb_decode of desc failed on buf[0..len), finds the field whose bytes made it fail,
 * descending into submessages, and writes its path (".feature_map.seen[2].probs") to
 * path[0..cap) and nanopb's reason to *why. Only runs on the error path; its cost is
 * O(n log n) in the message size so garbage cannot make a receiver spin. */
void wire__locate(const pb_msgdesc_t *desc, const uint8_t *buf, size_t len, char *path, size_t cap,
                  const char **why);

#endif
