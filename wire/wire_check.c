/* The protocol's rules beyond what protobuf can say: enums in range, 1-based indices within
 * WIRE_MAX_BLOCKS, probabilities in [0, 1], plans as long as the blocks they cover, tensor
 * shapes that agree with their frame. Decoded input that passes here is safe to index with. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>

#include "wire/wire_internal.h"

_Static_assert(WIRE_MAX_BLOCKS == sizeof(((einet_Task *)0)->plan) / sizeof(bool),
               "proto/messages.options and WIRE_MAX_BLOCKS disagree");
_Static_assert(WIRE_MAX_CLASSES == sizeof(((einet_ExitResult *)0)->probs) / sizeof(float),
               "proto/messages.options and WIRE_MAX_CLASSES disagree");
_Static_assert(WIRE_MAX_DIMS == sizeof(((einet_TensorMeta *)0)->shape) / sizeof(uint32_t),
               "proto/tensor.options and WIRE_MAX_DIMS disagree");
/* Error.code's enum in proto/messages.proto is common/ei.h's table. */
#define WIRE_SAME_CODE(name)                                                                    \
    _Static_assert((int)einet_ErrorCode_ERROR_##name == EI_E_##name,                           \
                   "proto ErrorCode and EI_E_" #name " disagree");
WIRE_SAME_CODE(NOMEM)
WIRE_SAME_CODE(IO)
WIRE_SAME_CODE(FORMAT)
WIRE_SAME_CODE(SHAPE)
WIRE_SAME_CODE(INVAL)
WIRE_SAME_CODE(NOTFOUND)
WIRE_SAME_CODE(NONFINITE)
WIRE_SAME_CODE(VERSION)
WIRE_SAME_CODE(RANGE)
WIRE_SAME_CODE(TIMEOUT)
WIRE_SAME_CODE(PEER)
WIRE_SAME_CODE(UNSUPPORTED)

/* Sets *err to "<path>: <what>"; path names the field ("exit_result.confidence"). */
static int bad(ei_err_t *err, int code, const char *path, const char *fmt, ...) EI_PRINTF(4, 5);
static int bad(ei_err_t *err, int code, const char *path, const char *fmt, ...)
{
    char what[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ei_err_set(err, code, "%s: %s", path, what);
}

static int check_tier(einet_Tier t, int allow_none, const char *path, ei_err_t *err)
{
    if ((t == einet_Tier_TIER_NONE && !allow_none) || t < einet_Tier_TIER_NONE ||
        t > einet_Tier_TIER_CLOUD)
        return bad(err, EI_E_RANGE, path, "%d is not a tier (1 device, 2 edge, 3 cloud)", (int)t);
    return 0;
}

static int check_index(uint32_t k, uint32_t lo, uint32_t hi, const char *path, ei_err_t *err)
{
    if (k < lo || k > hi)
        return bad(err, EI_E_RANGE, path, "%u is out of range %u..%u", (unsigned)k, (unsigned)lo,
                   (unsigned)hi);
    return 0;
}

static int check_prob(float p, const char *path, ei_err_t *err)
{
    if (!(p >= 0.0f && p <= 1.0f)) /* also refuses NaN */
        return bad(err, EI_E_RANGE, path, "%g is not a probability", (double)p);
    return 0;
}

static int check_time(float ms, const char *path, ei_err_t *err)
{
    if (!(ms >= 0.0f && ms < 1e9f))
        return bad(err, EI_E_RANGE, path, "%g is not a duration in ms", (double)ms);
    return 0;
}

/* The checks run on every message sent and received, so a field's name (an snprintf) is
 * made only once a value is found wrong. */
static int probs_ok(const float *p, pb_size_t n)
{
    for (pb_size_t i = 0; i < n; i++)
        if (!(p[i] >= 0.0f && p[i] <= 1.0f))
            return 0;
    return 1;
}

static int check_probs(const float *p, pb_size_t n, const char *path, ei_err_t *err)
{
    char at[96];
    for (pb_size_t i = 0; i < n; i++) {
        if (p[i] >= 0.0f && p[i] <= 1.0f)
            continue;
        snprintf(at, sizeof at, "%.80s[%u]", path, (unsigned)i);
        return check_prob(p[i], at, err);
    }
    return 0;
}

static int check_plan(pb_size_t n, uint32_t at_least, const char *path, ei_err_t *err)
{
    if (n < 1 || n < at_least)
        return bad(err, EI_E_RANGE, path, "%u bits, need %u..%u", (unsigned)n,
                   (unsigned)(at_least ? at_least : 1), WIRE_MAX_BLOCKS);
    return 0;
}

/* A predicted class must be one of the classes and, when the softmax vector travels with
 * it, one of its entries. */
static int check_class(uint32_t c, pb_size_t nprobs, const char *path, ei_err_t *err)
{
    uint32_t limit = nprobs ? nprobs : WIRE_MAX_CLASSES;
    if (c >= limit)
        return bad(err, EI_E_RANGE, path, "class %u, only %u classes", (unsigned)c,
                   (unsigned)limit);
    return 0;
}

int wire_meta_is_sample(const einet_TensorMeta *m, int c, int h, int w, char *why, size_t cap)
{
    const uint32_t *d = m->shape;
    int ok = (m->shape_count == 3 && d[0] == (uint32_t)c && d[1] == (uint32_t)h &&
              d[2] == (uint32_t)w) ||
             (m->shape_count == 4 && d[0] == 1 && d[1] == (uint32_t)c && d[2] == (uint32_t)h &&
              d[3] == (uint32_t)w);
    if (!ok) {
        char got[64] = "";
        size_t k = 0;
        for (pb_size_t i = 0; i < m->shape_count && k < sizeof got; i++)
            k += (size_t)snprintf(got + k, sizeof got - k, "%s%u", i ? "," : "", (unsigned)d[i]);
        snprintf(why, cap, "shape [%s], expected [1,%d,%d,%d]", got, c, h, w);
    }
    return ok;
}

size_t wire_meta_numel(const einet_TensorMeta *meta)
{
    size_t numel = 1, max = WIRE_TENSOR_MAX_BYTES / sizeof(float);
    if (meta->shape_count < 1 || meta->shape_count > WIRE_MAX_DIMS)
        return 0;
    for (pb_size_t i = 0; i < meta->shape_count; i++) {
        /* Dividing first keeps the product from overflowing on hostile shapes. */
        if (meta->shape[i] == 0 || meta->shape[i] > max / numel)
            return 0;
        numel *= meta->shape[i];
    }
    return numel;
}

static int check_meta(const einet_TensorMeta *m, bool has, size_t frame, const char *path,
                      ei_err_t *err)
{
    if (!has)
        return bad(err, EI_E_FORMAT, path, "missing");
    if (m->dtype != einet_DType_DTYPE_F32)
        return bad(err, EI_E_FORMAT, path, "dtype %d is not float32", (int)m->dtype);
    size_t numel = wire_meta_numel(m);
    if (numel == 0)
        return bad(err, EI_E_SHAPE, path, "shape of %u dims with a zero dimension or over %u bytes",
                   (unsigned)m->shape_count, WIRE_TENSOR_MAX_BYTES);
    if (frame == WIRE_NO_TENSOR)
        return bad(err, EI_E_SHAPE, path, "the tensor frame is missing");
    if (frame != numel * sizeof(float))
        return bad(err, EI_E_SHAPE, path, "shape promises %zu bytes, the tensor frame has %zu",
                   numel * sizeof(float), frame);
    return 0;
}

static int check_stop(const einet_StopRule *r, bool has, const char *path, ei_err_t *err)
{
    char at[96];
    if (!has)
        return 0;
    snprintf(at, sizeof at, "%s.kind", path);
    if (r->kind < einet_StopKind_STOP_NONE || r->kind > einet_StopKind_STOP_EINET)
        return bad(err, EI_E_RANGE, at, "%d is not a stop rule", (int)r->kind);
    snprintf(at, sizeof at, "%s.threshold", path);
    return check_prob(r->threshold, at, err);
}

static int check_mflop(float v, const char *path, ei_err_t *err)
{
    if (!(v >= 0.0f && v < 1e9f))
        return bad(err, EI_E_RANGE, path, "%g is not a compute count in MFLOP", (double)v);
    return 0;
}

/* A request's exit policy (task, map and request carry the same three fields). */
static int check_policy(int policy, float threshold, bool has_int, const einet_Interrupt *in,
                        const char *body, ei_err_t *err)
{
    char path[48];
    snprintf(path, sizeof path, "%s.policy", body);
    if (policy < einet_Policy_POLICY_PLANNED || policy > einet_Policy_POLICY_CONFIDENCE)
        return bad(err, EI_E_RANGE, path, "%d is not a policy (0 planned, 1 fixed, 2 confidence)",
                   policy);
    snprintf(path, sizeof path, "%s.threshold", body);
    if (!(threshold >= 0 && threshold <= 1))
        return bad(err, EI_E_RANGE, path, "%g is not in [0, 1]", (double)threshold);
    snprintf(path, sizeof path, "%s.interrupt", body);
    if (has_int && in->normal &&
        !(in->sigma > 0 && in->sigma < 100 && in->mu > -10 && in->mu < 10))
        return bad(err, EI_E_RANGE, path, "normal(%g, %g): need -10 < mu < 10, 0 < sigma < 100",
                   (double)in->mu, (double)in->sigma);
    return 0;
}

static int check_request(const einet_Request *r, size_t frame, ei_err_t *err)
{
    int rc = check_stop(&r->stop, r->has_stop, "request.stop", err);
    if (rc == 0 && r->has_deadline_ms)
        rc = check_index(r->deadline_ms, 1, WIRE_MAX_DEADLINE_MS, "request.deadline_ms", err);
    if (rc == 0 && r->has_deadline_us &&
        (r->deadline_us < 1 || r->deadline_us > (uint64_t)WIRE_MAX_DEADLINE_MS * 1000))
        rc = bad(err, EI_E_RANGE, "request.deadline_us", "%llu is out of range 1..%llu",
                 (unsigned long long)r->deadline_us,
                 (unsigned long long)WIRE_MAX_DEADLINE_MS * 1000);
    if (rc == 0)
        rc = check_policy(r->policy, r->threshold, r->has_interrupt, &r->interrupt, "request",
                          err);
    if (rc == 0 && r->policy == einet_Policy_POLICY_FIXED && r->plan_count == 0)
        rc = bad(err, EI_E_RANGE, "request.plan", "the fixed policy needs a plan");
    if (rc == 0 && r->has_label)
        rc = check_class(r->label, 0, "request.label", err);
    return rc ? rc : check_meta(&r->input, r->has_input, frame, "request.input", err);
}

static int check_task(const einet_Task *t, size_t frame, ei_err_t *err)
{
    /* Nodes key their work, dedup and cancellations by the id; the coordinator's ids start
     * at 1, and 0 would match every empty slot of the node's cancelled ring. */
    if (t->request_id == 0)
        return bad(err, EI_E_RANGE, "task.request_id", "0 is not an id");
    int rc = check_plan(t->plan_count, 1, "task.plan", err);
    rc = rc ? rc : check_stop(&t->stop, t->has_stop, "task.stop", err);
    if (rc == 0)
        rc = check_policy(t->policy, t->threshold, t->has_interrupt, &t->interrupt, "task", err);
    return rc ? rc : check_meta(&t->input, t->has_input, frame, "task.input", err);
}

/* What check_seen checks of one exit, without naming anything (see probs_ok). */
static int seen_ok(const einet_FeatureMap *f, const einet_ExitSeen *s)
{
    uint32_t classes = s->probs_count ? s->probs_count : WIRE_MAX_CLASSES;
    return s->exit >= 1 && s->exit <= f->block && s->confidence >= 0.0f &&
           s->confidence <= 1.0f && s->class_id < classes && probs_ok(s->probs, s->probs_count);
}

static int check_seen(const einet_FeatureMap *f, ei_err_t *err)
{
    char at[96];
    for (pb_size_t i = 0; i < f->seen_count; i++) {
        const einet_ExitSeen *s = &f->seen[i];
        int rc = 0;
        if (seen_ok(f, s))
            continue;
        snprintf(at, sizeof at, "feature_map.seen[%u].exit", (unsigned)i);
        rc = rc ? rc : check_index(s->exit, 1, f->block, at, err);
        snprintf(at, sizeof at, "feature_map.seen[%u].confidence", (unsigned)i);
        rc = rc ? rc : check_prob(s->confidence, at, err);
        snprintf(at, sizeof at, "feature_map.seen[%u].class_id", (unsigned)i);
        rc = rc ? rc : check_class(s->class_id, s->probs_count, at, err);
        snprintf(at, sizeof at, "feature_map.seen[%u].probs", (unsigned)i);
        rc = rc ? rc : check_probs(s->probs, s->probs_count, at, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static int check_feature_map(const einet_FeatureMap *f, size_t frame, ei_err_t *err)
{
    if (f->request_id == 0)
        return bad(err, EI_E_RANGE, "feature_map.request_id", "0 is not an id");
    int rc = check_index(f->block, 1, WIRE_MAX_BLOCKS - 1, "feature_map.block", err);
    if (rc == 0)
        rc = check_plan(f->plan_count, f->block + 1, "feature_map.plan", err);
    if (rc == 0)
        rc = check_seen(f, err);
    rc = rc ? rc : check_stop(&f->stop, f->has_stop, "feature_map.stop", err);
    rc = rc ? rc : check_mflop(f->mflop, "feature_map.mflop", err);
    if (rc == 0)
        rc = check_policy(f->policy, f->threshold, f->has_interrupt, &f->interrupt,
                          "feature_map", err);
    return rc ? rc : check_meta(&f->tensor, f->has_tensor, frame, "feature_map.tensor", err);
}

static int check_exit_result(const einet_ExitResult *r, ei_err_t *err)
{
    int rc = check_index(r->exit, 1, WIRE_MAX_BLOCKS, "exit_result.exit", err);
    rc = rc ? rc : check_tier(r->tier, 0, "exit_result.tier", err);
    rc = rc ? rc : check_class(r->class_id, r->probs_count, "exit_result.class_id", err);
    rc = rc ? rc : check_prob(r->confidence, "exit_result.confidence", err);
    rc = rc ? rc : check_mflop(r->mflop, "exit_result.mflop", err);
    return rc ? rc : check_probs(r->probs, r->probs_count, "exit_result.probs", err);
}

static int check_answer(const einet_Answer *a, const char *path, ei_err_t *err)
{
    char at[96];
    int rc = 0;
    snprintf(at, sizeof at, "%s.status", path);
    if (a->status <= einet_Status_STATUS_NONE || a->status > _einet_Status_MAX)
        return bad(err, EI_E_RANGE, at, "%d is not a status", (int)a->status);
    snprintf(at, sizeof at, "%s.exit", path);
    rc = check_index(a->exit, 0, WIRE_MAX_BLOCKS, at, err);
    snprintf(at, sizeof at, "%s.tier", path);
    rc = rc ? rc : check_tier(a->tier, a->exit == 0, at, err);
    snprintf(at, sizeof at, "%s.confidence", path);
    rc = rc ? rc : check_prob(a->confidence, at, err);
    snprintf(at, sizeof at, "%s.class_id", path);
    rc = rc ? rc : check_class(a->class_id, a->probs_count, at, err);
    snprintf(at, sizeof at, "%s.mflop", path);
    rc = rc ? rc : check_mflop(a->mflop, at, err);
    snprintf(at, sizeof at, "%s.probs", path);
    return rc ? rc : check_probs(a->probs, a->probs_count, at, err);
}

static int check_heartbeat(const einet_Heartbeat *h, ei_err_t *err)
{
    int rc = check_tier(h->tier, 0, "heartbeat.tier", err);
    if (rc == 0 && (h->first_block > h->last_block || h->last_block > WIRE_MAX_BLOCKS))
        rc = bad(err, EI_E_RANGE, "heartbeat.last_block", "blocks %u..%u are not a range in 1..%u",
                 (unsigned)h->first_block, (unsigned)h->last_block, WIRE_MAX_BLOCKS);
    return rc;
}

static int check_profile_report(const einet_ProfileReport *p, ei_err_t *err)
{
    char at[96];
    int rc = check_tier(p->tier, 0, "profile_report.tier", err);
    for (pb_size_t i = 0; rc == 0 && i < p->blocks_count; i++) {
        snprintf(at, sizeof at, "profile_report.blocks[%u].block", (unsigned)i);
        rc = check_index(p->blocks[i].block, 1, WIRE_MAX_BLOCKS, at, err);
        snprintf(at, sizeof at, "profile_report.blocks[%u].conv_ms", (unsigned)i);
        rc = rc ? rc : check_time(p->blocks[i].conv_ms, at, err);
        snprintf(at, sizeof at, "profile_report.blocks[%u].branch_ms", (unsigned)i);
        rc = rc ? rc : check_time(p->blocks[i].branch_ms, at, err);
    }
    rc = rc ? rc : check_time(p->next_latency_ms, "profile_report.next_latency_ms", err);
    rc = rc ? rc : check_time(p->next_bandwidth_mbps, "profile_report.next_bandwidth_mbps", err);
    rc = rc ? rc : check_time(p->prev_transfer_ms, "profile_report.prev_transfer_ms", err);
    rc = rc ? rc : check_time(p->boundary_ms, "profile_report.boundary_ms", err);
    return rc ? rc : check_time(p->coord_latency_ms, "profile_report.coord_latency_ms", err);
}

static int check_profile_update(const einet_ProfileUpdate *p, ei_err_t *err)
{
    char at[96];
    if (p->blocks_count < 1)
        return bad(err, EI_E_RANGE, "profile_update.blocks", "empty");
    for (pb_size_t i = 0; i < p->blocks_count; i++) {
        const einet_BlockProfile *b = &p->blocks[i];
        const float v[4] = {b->c_ms, b->b_ms, b->l_ms, b->r_ms};
        static const char *const names[4] = {"c_ms", "b_ms", "l_ms", "r_ms"};
        for (int j = 0; j < 4; j++) {
            snprintf(at, sizeof at, "profile_update.blocks[%u].%s", (unsigned)i, names[j]);
            int rc = check_time(v[j], at, err);
            if (rc < 0)
                return rc;
        }
    }
    int rc = check_time(p->dispatch_ms, "profile_update.dispatch_ms", err);
    return rc ? rc : check_time(p->horizon_ms, "profile_update.horizon_ms", err);
}

static int check_fault(const einet_Fault *f, ei_err_t *err)
{
    if (f->link < einet_Link_LINK_NONE || f->link > einet_Link_LINK_EDGE_CLOUD)
        return bad(err, EI_E_RANGE, "fault.link", "%d is not a link", (int)f->link);
    int rc = check_tier(f->kill, 1, "fault.kill", err);
    if (rc == 0 && !(f->loss_pct >= 0.0f && f->loss_pct <= 100.0f))
        rc = bad(err, EI_E_RANGE, "fault.loss_pct", "%g is not a percentage", (double)f->loss_pct);
    if (rc == 0 && f->link == einet_Link_LINK_NONE && f->kill == einet_Tier_TIER_NONE)
        rc = bad(err, EI_E_FORMAT, "fault", "names neither a link nor a tier to kill");
    if (rc == 0 && f->link == einet_Link_LINK_NONE && (f->down_ms || f->delay_ms || f->loss_pct))
        rc = bad(err, EI_E_FORMAT, "fault.link", "link settings without a link");
    return rc;
}

static int check_stats_reply(const einet_StatsReply *s, ei_err_t *err)
{
    const float p[3] = {s->latency_p50_ms, s->latency_p95_ms, s->latency_p99_ms};
    static const char *const names[3] = {"stats_reply.latency_p50_ms", "stats_reply.latency_p95_ms",
                                         "stats_reply.latency_p99_ms"};
    for (int i = 0; i < 3; i++) {
        int rc = check_time(p[i], names[i], err);
        if (rc < 0)
            return rc;
    }
    if (s->correct > s->labelled)
        return bad(err, EI_E_RANGE, "stats_reply.correct", "more correct than labelled answers");
    return 0;
}

/* Bodies that may carry no tensor must come without a tensor frame. */
static int no_frame(size_t frame, pb_size_t tag, ei_err_t *err)
{
    if (frame == WIRE_NO_TENSOR)
        return 0;
    return ei_err_set(err, EI_E_SHAPE, "%s: carries no tensor, but a %zu-byte tensor frame came",
                      wire_body_name(tag), frame);
}

/* A batch's layout: count messages, their sizes, and a payload frame that holds exactly
 * them (each frame padded to WIRE_BATCH_ALIGN), so a reader never reads past it. */
static int check_batch(const einet_Batch *b, size_t frame, ei_err_t *err)
{
    if (b->count < 1 || b->count > WIRE_MAX_BATCH)
        return bad(err, EI_E_RANGE, "batch.count", "%u, expected 1..%d", (unsigned)b->count,
                   WIRE_MAX_BATCH);
    if (b->env_bytes_count != b->count)
        return bad(err, EI_E_FORMAT, "batch.env_bytes", "%u sizes for %u messages",
                   (unsigned)b->env_bytes_count, (unsigned)b->count);
    if (b->tensor_bytes_count != b->count)
        return bad(err, EI_E_FORMAT, "batch.tensor_bytes", "%u sizes for %u messages",
                   (unsigned)b->tensor_bytes_count, (unsigned)b->count);
    if (frame == WIRE_NO_TENSOR)
        return bad(err, EI_E_SHAPE, "batch", "the payload frame is missing");
    size_t sum = 0, a = WIRE_BATCH_ALIGN - 1;
    for (pb_size_t i = 0; i < b->count; i++) {
        char path[48];
        snprintf(path, sizeof path, "batch.env_bytes[%u]", (unsigned)i);
        if (b->env_bytes[i] == 0 || b->env_bytes[i] > WIRE_ENVELOPE_MAX)
            return bad(err, EI_E_RANGE, path, "%u, expected 1..%u", (unsigned)b->env_bytes[i],
                       (unsigned)WIRE_ENVELOPE_MAX);
        snprintf(path, sizeof path, "batch.tensor_bytes[%u]", (unsigned)i);
        if (b->tensor_bytes[i] > WIRE_TENSOR_MAX_BYTES)
            return bad(err, EI_E_RANGE, path, "%u, more than %u", (unsigned)b->tensor_bytes[i],
                       WIRE_TENSOR_MAX_BYTES);
        sum += ((size_t)b->env_bytes[i] + a) / (a + 1) * (a + 1) +
               ((size_t)b->tensor_bytes[i] + a) / (a + 1) * (a + 1);
    }
    if (sum != frame)
        return bad(err, EI_E_SHAPE, "batch", "%u messages of %zu bytes (each frame padded to %d), "
                   "the payload frame has %zu", (unsigned)b->count, sum, WIRE_BATCH_ALIGN, frame);
    return 0;
}

static int check_body(const einet_Envelope *e, size_t frame, ei_err_t *err)
{
    switch (e->which_body) {
    case einet_Envelope_request_tag:
        return check_request(&e->body.request, frame, err);
    case einet_Envelope_task_tag:
        return check_task(&e->body.task, frame, err);
    case einet_Envelope_feature_map_tag:
        return check_feature_map(&e->body.feature_map, frame, err);
    case einet_Envelope_exit_result_tag:
        return check_exit_result(&e->body.exit_result, err);
    case einet_Envelope_answer_tag:
        return check_answer(&e->body.answer, "answer", err);
    case einet_Envelope_heartbeat_tag:
        return check_heartbeat(&e->body.heartbeat, err);
    case einet_Envelope_heartbeat_reply_tag:
        return check_tier(e->body.heartbeat_reply.tier, 1, "heartbeat_reply.tier", err);
    case einet_Envelope_profile_report_tag:
        return check_profile_report(&e->body.profile_report, err);
    case einet_Envelope_profile_update_tag:
        return check_profile_update(&e->body.profile_update, err);
    case einet_Envelope_result_reply_tag:
        if (e->body.result_reply.found && !e->body.result_reply.has_answer)
            return bad(err, EI_E_FORMAT, "result_reply.answer", "missing for a found request");
        if (e->body.result_reply.has_answer)
            return check_answer(&e->body.result_reply.answer, "result_reply.answer", err);
        return 0;
    case einet_Envelope_stats_reply_tag:
        return check_stats_reply(&e->body.stats_reply, err);
    case einet_Envelope_fault_tag:
        return check_fault(&e->body.fault, err);
    case einet_Envelope_accepted_tag:
        if (e->body.accepted.request_id == 0)
            return bad(err, EI_E_RANGE, "accepted.request_id", "0 is not an id");
        return 0;
    case einet_Envelope_taken_tag:
        if (e->body.taken.request_id == 0)
            return bad(err, EI_E_RANGE, "taken.request_id", "0 is not an id");
        return 0;
    case einet_Envelope_moved_tag:
        if (e->body.moved.request_id == 0)
            return bad(err, EI_E_RANGE, "moved.request_id", "0 is not an id");
        return 0;
    case einet_Envelope_batch_tag:
        return check_batch(&e->body.batch, frame, err);
    case einet_Envelope_result_query_tag:
    case einet_Envelope_stats_query_tag:
    case einet_Envelope_ack_tag:
    case einet_Envelope_cancel_tag:
    case einet_Envelope_error_tag:
    case einet_Envelope_model_info_query_tag:
    case einet_Envelope_model_info_reply_tag:
        return 0;
    }
    return ei_err_set(err, EI_E_FORMAT, "envelope: no body");
}

int wire_check(const einet_Envelope *env, size_t tensor_bytes, ei_err_t *err)
{
    if (env->version != WIRE_VERSION)
        return ei_err_set(err, EI_E_VERSION, "envelope.version: %u is not supported (this is %u)",
                          (unsigned)env->version, WIRE_VERSION);
    if (!wire_env_tensor_const(env) && env->which_body != einet_Envelope_batch_tag) {
        int rc = no_frame(tensor_bytes, env->which_body, err);
        if (rc < 0)
            return rc;
    }
    return check_body(env, tensor_bytes, err);
}
