/* Naming the field behind a nanopb decode error. nanopb says what went wrong ("array
 * overflow") but not where; einet's errors must name the field, so on the error path the
 * bytes are walked field by field to find the first one whose decoding fails. Field names
 * come from the FIELDLIST X-macros nanopb generates, so they never drift from the .proto. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pb_common.h>
#include <pb_decode.h>

#include "wire/wire_internal.h"

typedef struct fname {
    uint32_t tag;
    const char *name; /* "shape", or "(body,request,body.request)" for a oneof member */
} fname_t;

typedef struct mnames {
    const pb_msgdesc_t *desc;
    const fname_t *fields;
    size_t n;
} mnames_t;

#define FNAME(a, atype, htype, ltype, name, tag) {tag, #name},
#define NAMES(T) static const fname_t T##_names[] = {einet_##T##_FIELDLIST(FNAME, 0)};
#define ENTRY(T) {&einet_##T##_msg, T##_names, sizeof T##_names / sizeof T##_names[0]},
/* clang-format off */
#define EINET_MESSAGES(X)                                                                     \
    X(Tensor) X(TensorMeta) X(Request) X(Task) X(ExitSeen) X(FeatureMap) X(ExitResult)        \
    X(Answer) X(Heartbeat) X(HeartbeatReply) X(BlockTiming) X(ProfileReport) X(BlockProfile)  \
    X(ProfileUpdate) X(ResultQuery) X(ResultReply) X(StatsQuery) X(LinkStats) X(NodeStats)    \
    X(FaultEvent) X(StatsReply) X(Fault) X(Ack) X(Cancel) X(Error) X(Envelope) X(Interrupt)   \
    X(Taken) X(Moved)
/* clang-format on */

EINET_MESSAGES(NAMES)
static const mnames_t all_names[] = {EINET_MESSAGES(ENTRY)};

/* The largest message any walk decodes into: every nested type is part of an Envelope. */
typedef union scratch {
    einet_Envelope env;
    einet_Tensor tensor;
} scratch_t;

static void plain_name(const char *raw, char *buf, size_t cap)
{
    if (raw[0] != '(') {
        snprintf(buf, cap, "%s", raw);
        return;
    }
    /* "(body,request,body.request)": the member name sits between the first two commas. */
    const char *a = strchr(raw, ',');
    const char *b = a ? strchr(a + 1, ',') : NULL;
    int n = (a && b) ? (int)(b - a - 1) : (int)strlen(raw);
    snprintf(buf, cap, "%.*s", n, a ? a + 1 : raw);
}

const char *wire__field_name(const pb_msgdesc_t *desc, uint32_t tag, char *buf, size_t cap)
{
    for (size_t m = 0; m < sizeof all_names / sizeof all_names[0]; m++) {
        if (all_names[m].desc != desc)
            continue;
        for (size_t f = 0; f < all_names[m].n; f++)
            if (all_names[m].fields[f].tag == tag) {
                plain_name(all_names[m].fields[f].name, buf, cap);
                return buf;
            }
    }
    snprintf(buf, cap, "field %u", (unsigned)tag);
    return buf;
}

/* One field's place in the buffer. */
typedef struct span {
    size_t start, end;
    uint32_t tag;
    pb_wire_type_t wt;
} span_t;

/* Splits buf into fields. Returns how many were whole; *bad_why is set (and spans[n] holds
 * the tag, when it could be read) if the walk stopped on broken framing. */
static size_t split(const uint8_t *buf, size_t len, span_t *spans, const char **bad_why)
{
    size_t n = 0, pos = 0;
    *bad_why = NULL;
    while (pos < len) {
        pb_istream_t s = pb_istream_from_buffer(buf + pos, len - pos);
        bool eof;
        spans[n].start = pos;
        spans[n].tag = 0;
        if (!pb_decode_tag(&s, &spans[n].wt, &spans[n].tag, &eof) ||
            !pb_skip_field(&s, spans[n].wt)) {
            *bad_why = PB_GET_ERROR(&s);
            return n;
        }
        pos = len - s.bytes_left;
        spans[n++].end = pos;
    }
    return n;
}

static int prefix_fails(const pb_msgdesc_t *desc, const uint8_t *buf, size_t end, scratch_t *sc,
                        const char **why)
{
    pb_istream_t s = pb_istream_from_buffer(buf, end);
    memset(sc, 0, sizeof *sc);
    if (pb_decode(&s, desc, sc))
        return 0;
    *why = PB_GET_ERROR(&s);
    return 1;
}

/* Decoding is left to right, so if a prefix fails every longer one does: binary search for
 * the first field whose prefix fails. Returns n when none does. */
static size_t first_failing(const pb_msgdesc_t *desc, const uint8_t *buf, const span_t *spans,
                            size_t n, scratch_t *sc, const char **why)
{
    size_t lo = 0, hi = n;
    const char *w = NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (prefix_fails(desc, buf, spans[mid].end, sc, &w)) {
            hi = mid;
            *why = w;
        } else {
            lo = mid + 1;
        }
    }
    if (lo < n) /* re-run so *why belongs to exactly this prefix */
        prefix_fails(desc, buf, spans[lo].end, sc, why);
    return lo;
}

/* The field behind tag, or NULL when desc does not define it. */
static int find_field(const pb_msgdesc_t *desc, uint32_t tag, scratch_t *sc, pb_field_iter_t *it)
{
    memset(sc, 0, sizeof *sc);
    return pb_field_iter_begin(it, desc, sc) && pb_field_iter_find(it, tag);
}

/* Appends ".name", or ".name[i]" for the i-th occurrence of a repeated submessage (a packed
 * scalar array is one field on the wire, so it gets no index). */
static void append(char *path, size_t cap, const pb_msgdesc_t *desc, const span_t *spans, size_t i,
                   scratch_t *sc)
{
    char name[64];
    pb_field_iter_t it;
    size_t used = strlen(path), index = 0;
    int indexed = find_field(desc, spans[i].tag, sc, &it) &&
                  PB_HTYPE(it.type) == PB_HTYPE_REPEATED && PB_LTYPE_IS_SUBMSG(it.type);
    for (size_t j = 0; j < i; j++)
        index += spans[j].tag == spans[i].tag;
    wire__field_name(desc, spans[i].tag, name, sizeof name);
    if (indexed)
        snprintf(path + used, cap - used, ".%s[%zu]", name, index);
    else
        snprintf(path + used, cap - used, ".%s", name);
}

/* The submessage type behind tag, or NULL. */
static const pb_msgdesc_t *submsg_of(const pb_msgdesc_t *desc, uint32_t tag, scratch_t *sc)
{
    pb_field_iter_t it;
    if (!find_field(desc, tag, sc, &it))
        return NULL;
    return PB_LTYPE_IS_SUBMSG(it.type) ? it.submsg_desc : NULL;
}

static int locate_in(const pb_msgdesc_t *desc, const uint8_t *buf, size_t len, scratch_t *sc,
                     char *path, size_t cap, const char **why, int depth);

/* The failing field is a submessage: look inside it; if it decodes alone, the fault lies at
 * this level (a repeated count overflowing, say) and the path stops here. */
static void descend(const pb_msgdesc_t *desc, const uint8_t *buf, const span_t *sp, scratch_t *sc,
                    char *path, size_t cap, const char **why, int depth)
{
    const pb_msgdesc_t *sub = submsg_of(desc, sp->tag, sc);
    if (!sub || sp->wt != PB_WT_STRING || depth > 8)
        return;
    pb_istream_t s = pb_istream_from_buffer(buf + sp->start, sp->end - sp->start);
    uint32_t tag, size;
    pb_wire_type_t wt;
    bool eof;
    if (!pb_decode_tag(&s, &wt, &tag, &eof) || !pb_decode_varint32(&s, &size))
        return;
    const uint8_t *inner = buf + sp->end - s.bytes_left;
    size_t keep = strlen(path);
    const char *inner_why = NULL;
    if (locate_in(sub, inner, s.bytes_left, sc, path, cap, &inner_why, depth + 1))
        *why = inner_why;
    else
        path[keep] = '\0';
}

/* Returns 1 when a failing field was found in buf (path and *why then describe it). */
static int locate_in(const pb_msgdesc_t *desc, const uint8_t *buf, size_t len, scratch_t *sc,
                     char *path, size_t cap, const char **why, int depth)
{
    span_t *spans = malloc((len / 2 + 2) * sizeof *spans); /* a field takes >= 2 bytes */
    if (!spans)
        return 0;
    const char *bad_why;
    size_t n = split(buf, len, spans, &bad_why);
    size_t i = first_failing(desc, buf, spans, n, sc, why);
    int found = 1;
    if (i < n) {
        append(path, cap, desc, spans, i, sc);
        descend(desc, buf, &spans[i], sc, path, cap, why, depth);
    } else if (bad_why) {
        if (spans[n].tag)
            append(path, cap, desc, spans, n, sc);
        *why = bad_why;
    } else {
        found = 0;
    }
    free(spans);
    return found;
}

void wire__locate(const pb_msgdesc_t *desc, const uint8_t *buf, size_t len, char *path, size_t cap,
                  const char **why)
{
    path[0] = '\0';
    *why = "undecodable";
    scratch_t *sc = malloc(sizeof *sc);
    if (!sc)
        return;
    locate_in(desc, buf, len, sc, path, cap, why, 0);
    free(sc);
}
