/* Tests of wire/wire.h: the self-contained tensor through nanopb, every message type
 * through encode/decode and through real sockets, and bad input (random bytes, truncation,
 * oversize, wrong tensor frames, unknown versions, 5000 random mutations) refused with an
 * error naming the field, never a crash. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zmq.h>

#include <pb_encode.h>

#include "common/ei.h"
#include "wire/wire.h"

static const pb_size_t all_tags[] = {
    einet_Envelope_request_tag,
    einet_Envelope_task_tag,
    einet_Envelope_feature_map_tag,
    einet_Envelope_exit_result_tag,
    einet_Envelope_answer_tag,
    einet_Envelope_heartbeat_tag,
    einet_Envelope_heartbeat_reply_tag,
    einet_Envelope_profile_report_tag,
    einet_Envelope_profile_update_tag,
    einet_Envelope_result_query_tag,
    einet_Envelope_result_reply_tag,
    einet_Envelope_stats_query_tag,
    einet_Envelope_stats_reply_tag,
    einet_Envelope_fault_tag,
    einet_Envelope_ack_tag,
    einet_Envelope_cancel_tag,
    einet_Envelope_error_tag,
    einet_Envelope_taken_tag,
    einet_Envelope_moved_tag,
};
#define NTAGS ((int)(sizeof all_tags / sizeof all_tags[0]))

static float probs10[10] = {0.01f, 0.02f, 0.03f, 0.04f, 0.5f, 0.1f, 0.1f, 0.1f, 0.05f, 0.05f};

static void sample_answer(einet_Answer *a)
{
    a->request_id = 77;
    a->client_id = 5;
    a->status = einet_Status_STATUS_DEADLINE;
    strcpy(a->reason, "deadline of 20 ms passed");
    a->exit = 3;
    a->tier = einet_Tier_TIER_EDGE;
    a->class_id = 4;
    a->confidence = 0.5f;
    a->latency_us = 20123;
    a->has_label = true;
    a->label = 4;
    a->probs_count = 10;
    memcpy(a->probs, probs10, sizeof probs10);
}

static void sample_feature_map(einet_FeatureMap *f)
{
    static const uint32_t shape[3] = {32, 7, 7};
    f->request_id = 1234567890123ull;
    f->block = 3;
    f->plan_count = 8;
    for (int i = 0; i < 8; i++)
        f->plan[i] = i % 3 != 1;
    f->elapsed_us = 4321;
    wire_meta_set(&f->tensor, &f->has_tensor, shape, 3);
    f->seen_count = 2;
    for (int i = 0; i < 2; i++) {
        f->seen[i].exit = (uint32_t)(1 + 2 * i);
        f->seen[i].confidence = 0.25f + 0.25f * (float)i;
        f->seen[i].class_id = (uint32_t)(7 - i);
        f->seen[i].probs_count = 10;
        memcpy(f->seen[i].probs, probs10, sizeof probs10);
    }
    f->has_deadline_us = true;
    f->deadline_us = 50000;
    f->sent_at_us = 99;
}

static void sample_stats(einet_StatsReply *s)
{
    s->requests = 1000;
    s->by_status_count = 7;
    for (int i = 0; i < 7; i++)
        s->by_status[i] = (uint64_t)(i * 10);
    s->by_exit_count = 9;
    for (int i = 0; i < 9; i++)
        s->by_exit[i] = (uint64_t)(i * 3);
    s->by_tier_count = 4;
    s->by_tier[3] = 900;
    s->labelled = 1000;
    s->correct = 912;
    s->latency_p50_ms = 3.5f;
    s->latency_p95_ms = 9.0f;
    s->latency_p99_ms = 20.25f;
    s->links_count = 2;
    s->links[1] = (einet_LinkStats){einet_Link_LINK_EDGE_CLOUD, 40.5f, 100.0f, 77, true};
    s->nodes_count = 3;
    s->nodes[2] = (einet_NodeStats){einet_Tier_TIER_CLOUD, true, 1500, 6, 8, 2, "", true};
    s->bad_messages = 3;
    s->faults_seen = 1;
    s->faults_count = 1;
    s->faults[0] = (einet_FaultEvent){12345, einet_Tier_TIER_EDGE, einet_Link_LINK_EDGE_CLOUD,
                                      "link edge-cloud down"};
    s->uptime_us = 60000000;
}

static void sample_profiles(einet_Envelope *e)
{
    if (e->which_body == einet_Envelope_profile_report_tag) {
        einet_ProfileReport *p = &e->body.profile_report;
        p->tier = einet_Tier_TIER_EDGE;
        p->blocks_count = 3;
        for (int i = 0; i < 3; i++)
            p->blocks[i] = (einet_BlockTiming){(uint32_t)(4 + i), 0.5f * (float)i, 0.125f, 100};
        p->next_latency_ms = 40.0f;
        p->next_bandwidth_mbps = 95.5f;
        p->next_samples = 12;
        p->coord_latency_ms = 0.25f;
        return;
    }
    einet_ProfileUpdate *u = &e->body.profile_update;
    u->version = 9;
    u->blocks_count = 8;
    for (int i = 0; i < 8; i++)
        u->blocks[i] = (einet_BlockProfile){1.0f + (float)i, 0.25f, i == 2 ? 10.0f : 0.0f, 0.5f};
}

/* A valid message of kind tag with most fields set; *tbytes gets its tensor frame size. */
static void sample(einet_Envelope *e, pb_size_t tag, size_t *tbytes)
{
    static const uint32_t image[3] = {1, 28, 28};
    wire_env_init(e, tag);
    e->seq = 1000 + tag;
    e->reply_to = tag;
    *tbytes = WIRE_NO_TENSOR;
    switch (tag) {
    case einet_Envelope_request_tag:
        e->body.request.client_id = 42;
        wire_meta_set(&e->body.request.input, &e->body.request.has_input, image, 3);
        e->body.request.has_deadline_ms = true;
        e->body.request.deadline_ms = 20;
        e->body.request.has_label = true;
        e->body.request.label = 9;
        *tbytes = 28 * 28 * 4;
        break;
    case einet_Envelope_task_tag:
        e->body.task.request_id = 7;
        wire_meta_set(&e->body.task.input, &e->body.task.has_input, image, 3);
        e->body.task.plan_count = 8;
        e->body.task.plan[0] = e->body.task.plan[7] = true;
        e->body.task.has_deadline_us = true;
        e->body.task.deadline_us = 20000;
        e->body.task.profile_version = 3;
        e->body.task.has_stop = true;
        e->body.task.stop = (einet_StopRule){einet_StopKind_STOP_EINET, 0.97f};
        *tbytes = 28 * 28 * 4;
        break;
    case einet_Envelope_feature_map_tag:
        sample_feature_map(&e->body.feature_map);
        *tbytes = 32 * 7 * 7 * 4;
        break;
    case einet_Envelope_exit_result_tag:
        e->body.exit_result = (einet_ExitResult){
            7, 8, einet_Tier_TIER_CLOUD, 4, 0.5f, 9000, 12, 10, {0}, false, true, true, 2.5f};
        memcpy(e->body.exit_result.probs, probs10, sizeof probs10);
        break;
    case einet_Envelope_answer_tag:
        sample_answer(&e->body.answer);
        break;
    case einet_Envelope_heartbeat_tag:
        e->body.heartbeat = (einet_Heartbeat){einet_Tier_TIER_EDGE, 17, 123456, 4, 6, 3, true, 2, "", 16};
        break;
    case einet_Envelope_heartbeat_reply_tag:
        e->body.heartbeat_reply = (einet_HeartbeatReply){
            einet_Tier_TIER_NONE, 17, 123456, 2, 8, 3, {16, 14, 14}, 3, {32, 7, 7},
            5, 0x1234567890ull, "edge-2", 1.5f, true, true};
        break;
    case einet_Envelope_profile_report_tag:
    case einet_Envelope_profile_update_tag:
        sample_profiles(e);
        break;
    case einet_Envelope_result_query_tag:
        e->body.result_query.request_id = 77;
        break;
    case einet_Envelope_result_reply_tag:
        e->body.result_reply.found = true;
        e->body.result_reply.has_answer = true;
        sample_answer(&e->body.result_reply.answer);
        break;
    case einet_Envelope_stats_query_tag:
        e->body.stats_query.reset = true;
        break;
    case einet_Envelope_stats_reply_tag:
        sample_stats(&e->body.stats_reply);
        break;
    case einet_Envelope_fault_tag:
        e->body.fault =
            (einet_Fault){einet_Link_LINK_EDGE_CLOUD, 2000, 15, 12.5f, einet_Tier_TIER_NONE, false};
        break;
    case einet_Envelope_ack_tag:
        e->body.ack.ok = true;
        strcpy(e->body.ack.detail, "link edge-cloud down for 2000 ms");
        break;
    case einet_Envelope_cancel_tag:
        e->body.cancel.request_id = 77;
        break;
    case einet_Envelope_taken_tag:
        e->body.taken.request_id = 77;
        break;
    case einet_Envelope_moved_tag:
        e->body.moved = (einet_Moved){77, "edge-1", "edge-2", 612, 2};
        break;
    case einet_Envelope_error_tag:
        e->body.error.code = (einet_ErrorCode)EI_E_VERSION;
        strcpy(e->body.error.message, "envelope.version: 2 is not supported (this is 1)");
        e->body.error.version = 1;
        break;
    }
}

static uint8_t encbuf[WIRE_ENVELOPE_MAX];

static size_t encode_ok(const einet_Envelope *e, size_t tbytes)
{
    size_t len = 0;
    ei_err_t err = {0};
    int rc = wire_encode(e, tbytes, encbuf, sizeof encbuf, &len, &err);
    if (rc != 0)
        fail_msg("encode: %s", err.msg);
    return len;
}

/* ---- the self-contained tensor (issue 2) ---- */

static void fill_random(float *x, size_t n, uint64_t seed)
{
    ei_rng_t r;
    ei_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)ei_rng_normal(&r);
}

static void tensor_roundtrip(const uint32_t *shape, int ndim, size_t numel)
{
    float *x = malloc(numel * sizeof *x), *y = calloc(numel, sizeof *y);
    size_t cap = wire_tensor_size(shape, ndim), len = 0;
    uint8_t *buf = malloc(cap);
    uint32_t got[WIRE_MAX_DIMS] = {0};
    int gdim = 0;
    ei_err_t err = {0};
    fill_random(x, numel, numel);
    assert_int_equal(wire_tensor_encode(shape, ndim, x, buf, cap, &len, &err), 0);
    assert_int_equal(len, cap);
    assert_int_equal(wire_tensor_decode(buf, len, got, &gdim, y, numel, &err), 0);
    assert_int_equal(gdim, ndim);
    assert_memory_equal(got, shape, (size_t)ndim * sizeof *shape);
    assert_memory_equal(x, y, numel * sizeof *x); /* bit-exact, NaN payloads included */
    /* One float less of room must be refused, naming the data field. */
    assert_int_equal(wire_tensor_decode(buf, len, got, &gdim, y, numel - 1, &err), EI_E_FORMAT);
    assert_non_null(strstr(err.msg, "tensor.data"));
    free(x);
    free(y);
    free(buf);
}

static void test_tensor_roundtrip(void **state)
{
    (void)state;
    const uint32_t image[3] = {1, 28, 28}, fmap[4] = {1, 64, 32, 32}, vec[1] = {10};
    tensor_roundtrip(image, 3, 784);
    tensor_roundtrip(fmap, 4, 65536); /* 256 kB: past nanopb's 64 kB static-field cap */
    tensor_roundtrip(vec, 1, 10);
}

static void test_tensor_bad(void **state)
{
    (void)state;
    const uint32_t shape[2] = {4, 4}, zero[2] = {4, 0};
    float x[16] = {0}, y[16];
    uint8_t buf[256];
    size_t len;
    uint32_t got[4];
    int nd;
    ei_err_t err = {0};
    assert_int_equal(wire_tensor_encode(zero, 2, x, buf, sizeof buf, &len, &err), EI_E_SHAPE);
    assert_int_equal(wire_tensor_encode(shape, 5, x, buf, sizeof buf, &len, &err), EI_E_SHAPE);
    assert_int_equal(wire_tensor_encode(shape, 2, x, buf, 10, &len, &err), EI_E_RANGE);
    assert_int_equal(wire_tensor_encode(shape, 2, x, buf, sizeof buf, &len, &err), 0);
    /* Every truncation fails cleanly: the data field is last, so each cut loses bytes. */
    for (size_t cut = 0; cut < len; cut++)
        assert_true(wire_tensor_decode(buf, cut, got, &nd, y, 16, &err) < 0);
    /* The shape promises 16 floats; claim 3x4 instead by editing the packed shape. */
    uint8_t bad[256];
    memcpy(bad, buf, len);
    assert_int_equal(bad[0], 0x0a); /* field 1, packed */
    bad[2] = 3;
    assert_int_equal(wire_tensor_decode(bad, len, got, &nd, y, 16, &err), EI_E_SHAPE);
    assert_string_equal(err.msg, "tensor.data: 64 bytes, the shape promises 48");
}

/* ---- every message type ---- */

static void test_every_message_roundtrips(void **state)
{
    (void)state;
    for (int i = 0; i < NTAGS; i++) {
        einet_Envelope e, d;
        size_t tbytes;
        ei_err_t err = {0};
        sample(&e, all_tags[i], &tbytes);
        size_t len = encode_ok(&e, tbytes);
        if (wire_decode(encbuf, len, tbytes, &d, &err) != 0)
            fail_msg("%s: %s", wire_body_name(all_tags[i]), err.msg);
        /* Both structs start zeroed, so equal fields mean equal bytes. */
        if (memcmp(&e, &d, sizeof e) != 0)
            fail_msg("%s does not round-trip", wire_body_name(all_tags[i]));
        assert_true(len <= WIRE_ENVELOPE_MAX);
    }
}

static void test_body_names(void **state)
{
    (void)state;
    assert_string_equal(wire_body_name(einet_Envelope_feature_map_tag), "feature_map");
    assert_string_equal(wire_body_name(einet_Envelope_heartbeat_reply_tag), "heartbeat_reply");
    assert_string_equal(wire_body_name(einet_Envelope_error_tag), "error");
    assert_string_equal(wire_body_name(0), "none");
    assert_string_equal(wire_body_name(29), "unknown");
}

/* The largest message the bounds allow still fits WIRE_ENVELOPE_MAX and round-trips. */
static void test_largest_feature_map(void **state)
{
    (void)state;
    einet_Envelope e, d;
    size_t tbytes;
    ei_err_t err = {0};
    sample(&e, einet_Envelope_feature_map_tag, &tbytes);
    einet_FeatureMap *f = &e.body.feature_map;
    f->block = WIRE_MAX_BLOCKS - 1;
    f->plan_count = WIRE_MAX_BLOCKS;
    f->seen_count = WIRE_MAX_BLOCKS - 1;
    for (int i = 0; i < WIRE_MAX_BLOCKS - 1; i++) {
        f->seen[i] = (einet_ExitSeen){(uint32_t)i + 1, 0.75f, 15, WIRE_MAX_CLASSES, {0}};
        for (int j = 0; j < WIRE_MAX_CLASSES; j++)
            f->seen[i].probs[j] = 1.0f / 3.0f;
    }
    size_t len = encode_ok(&e, tbytes);
    assert_int_equal(wire_decode(encbuf, len, tbytes, &d, &err), 0);
    assert_memory_equal(&e, &d, sizeof e);
}

/* ---- refusals, each naming the field ---- */

static void expect_refused(const einet_Envelope *e, size_t tbytes, int code, const char *msg)
{
    ei_err_t err = {0};
    size_t len;
    int rc = wire_encode(e, tbytes, encbuf, sizeof encbuf, &len, &err);
    assert_int_equal(rc, code);
    if (strstr(err.msg, msg) == NULL)
        fail_msg("expected '%s' in '%s'", msg, err.msg);
}

static void test_rules_name_the_field(void **state)
{
    (void)state;
    einet_Envelope e;
    size_t tb;
    sample(&e, einet_Envelope_exit_result_tag, &tb);
    e.body.exit_result.confidence = 1.5f;
    expect_refused(&e, tb, EI_E_RANGE, "exit_result.confidence: 1.5 is not a probability");
    sample(&e, einet_Envelope_exit_result_tag, &tb);
    e.body.exit_result.tier = 7;
    expect_refused(&e, tb, EI_E_RANGE, "exit_result.tier: 7 is not a tier");
    sample(&e, einet_Envelope_exit_result_tag, &tb);
    e.body.exit_result.class_id = 10;
    expect_refused(&e, tb, EI_E_RANGE, "exit_result.class_id: class 10, only 10 classes");
    sample(&e, einet_Envelope_feature_map_tag, &tb);
    e.body.feature_map.seen[1].probs[3] = NAN;
    expect_refused(&e, tb, EI_E_RANGE, "feature_map.seen[1].probs[3]: nan is not a probability");
    sample(&e, einet_Envelope_feature_map_tag, &tb);
    e.body.feature_map.plan_count = 3;
    expect_refused(&e, tb, EI_E_RANGE, "feature_map.plan: 3 bits, need 4..128");
    sample(&e, einet_Envelope_task_tag, &tb);
    e.body.task.plan_count = 0;
    expect_refused(&e, tb, EI_E_RANGE, "task.plan: 0 bits");
    sample(&e, einet_Envelope_task_tag, &tb);
    e.body.task.request_id = 0;
    expect_refused(&e, tb, EI_E_RANGE, "task.request_id: 0 is not an id");
    sample(&e, einet_Envelope_feature_map_tag, &tb);
    e.body.feature_map.request_id = 0;
    expect_refused(&e, tb, EI_E_RANGE, "feature_map.request_id: 0 is not an id");
    sample(&e, einet_Envelope_answer_tag, &tb);
    e.body.answer.status = einet_Status_STATUS_NONE;
    expect_refused(&e, tb, EI_E_RANGE, "answer.status: 0 is not a status");
    sample(&e, einet_Envelope_fault_tag, &tb);
    e.body.fault.link = einet_Link_LINK_NONE;
    expect_refused(&e, tb, EI_E_FORMAT, "fault: names neither a link nor a tier to kill");
    e.body.fault.kill = einet_Tier_TIER_EDGE;
    expect_refused(&e, tb, EI_E_FORMAT, "fault.link: link settings without a link");
    sample(&e, einet_Envelope_profile_update_tag, &tb);
    e.body.profile_update.blocks[2].l_ms = -1.0f;
    expect_refused(&e, tb, EI_E_RANGE, "profile_update.blocks[2].l_ms: -1 is not a duration");
    sample(&e, einet_Envelope_request_tag, &tb);
    e.body.request.has_input = false;
    expect_refused(&e, tb, EI_E_FORMAT, "request.input: missing");
    sample(&e, einet_Envelope_request_tag, &tb);
    e.body.request.has_stop = true;
    e.body.request.stop = (einet_StopRule){einet_StopKind_STOP_CONFIDENCE, 1.25f};
    expect_refused(&e, tb, EI_E_RANGE, "request.stop.threshold: 1.25 is not a probability");
    e.body.request.stop = (einet_StopRule){(einet_StopKind)9, 0.5f};
    expect_refused(&e, tb, EI_E_RANGE, "request.stop.kind: 9 is not a stop rule");
    sample(&e, einet_Envelope_exit_result_tag, &tb);
    e.body.exit_result.mflop = -1.0f;
    expect_refused(&e, tb, EI_E_RANGE, "exit_result.mflop: -1 is not a compute count in MFLOP");
    wire_env_init(&e, 0);
    expect_refused(&e, WIRE_NO_TENSOR, EI_E_FORMAT, "envelope: no body");
}

/* Stop rules as the command line and the configs write them, and back. */
static void test_stop_rule_text(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int kind;
        float threshold;
        const char *back;
    } good[] = {
        {"none", einet_StopKind_STOP_NONE, 0, "none"},
        {"confidence:0.95", einet_StopKind_STOP_CONFIDENCE, 0.95f, "confidence:0.95"},
        {"entropy:0.1", einet_StopKind_STOP_ENTROPY, 0.1f, "entropy:0.1"},
        {"einet:1", einet_StopKind_STOP_EINET, 1.0f, "einet:1"},
        {"einet:0", einet_StopKind_STOP_EINET, 0.0f, "einet:0"},
    };
    char why[160], back[64];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        einet_StopRule r;
        assert_int_equal(wire_stop_parse(good[i].text, &r, why, sizeof why), 0);
        assert_int_equal(r.kind, good[i].kind);
        assert_true(r.threshold == good[i].threshold);
        wire_stop_format(&r, back, sizeof back);
        assert_string_equal(back, good[i].back);
    }
    static const char *const bad[] = {"", "confidence", "confidence:", "confidence:1.5",
                                      "entropy:-0.1", "einet:nan", "einet:0.9x", "conf:0.9",
                                      "none:0.5", "Confidence:0.9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        einet_StopRule r;
        why[0] = 0;
        assert_int_equal(wire_stop_parse(bad[i], &r, why, sizeof why), -1);
        assert_non_null(strstr(why, bad[i]));
    }
    assert_string_equal(wire_stop_kind_name(einet_StopKind_STOP_ENTROPY), "entropy");
    assert_string_equal(wire_stop_kind_name(7), "unknown");
}

static void test_tensor_frame_checked(void **state)
{
    (void)state;
    einet_Envelope e, d;
    size_t tb;
    ei_err_t err = {0};
    sample(&e, einet_Envelope_request_tag, &tb);
    size_t len = encode_ok(&e, tb);
    assert_int_equal(wire_decode(encbuf, len, tb - 1, &d, &err), EI_E_SHAPE);
    assert_string_equal(err.msg,
                        "request.input: shape promises 3136 bytes, the tensor frame has 3135");
    assert_int_equal(wire_decode(encbuf, len, WIRE_NO_TENSOR, &d, &err), EI_E_SHAPE);
    assert_string_equal(err.msg, "request.input: the tensor frame is missing");
    sample(&e, einet_Envelope_cancel_tag, &tb);
    len = encode_ok(&e, tb);
    assert_int_equal(wire_decode(encbuf, len, 16, &d, &err), EI_E_SHAPE);
    assert_string_equal(err.msg, "cancel: carries no tensor, but a 16-byte tensor frame came");
    /* A shape whose product overflows 64 bits is refused, not wrapped around. */
    sample(&e, einet_Envelope_task_tag, &tb);
    const uint32_t huge[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 16};
    wire_meta_set(&e.body.task.input, NULL, huge, 4);
    expect_refused(&e, 0, EI_E_SHAPE, "task.input: shape of 4 dims with a zero dimension or over");
}

static void test_versions_refused(void **state)
{
    (void)state;
    einet_Envelope e, d;
    size_t tb;
    ei_err_t err = {0};
    sample(&e, einet_Envelope_heartbeat_tag, &tb);
    e.version = 2;
    uint8_t buf[WIRE_ENVELOPE_MAX + 8];
    pb_ostream_t s = pb_ostream_from_buffer(buf, sizeof buf);
    assert_true(pb_encode(&s, einet_Envelope_fields, &e));
    /* A future body this build cannot decode must still read as a version refusal. */
    buf[s.bytes_written++] = 0xfa; /* field 127, wire type 2, */
    buf[s.bytes_written++] = 0x07;
    buf[s.bytes_written++] = 0x05; /* length 5 but nothing follows */
    assert_int_equal(wire_decode(buf, s.bytes_written, tb, &d, &err), EI_E_VERSION);
    assert_string_equal(err.msg, "envelope.version: 2 is not supported (this is 1)");
    assert_int_equal(d.seq, e.seq); /* so the refusal can answer it */
    e.version = 0;
    s = pb_ostream_from_buffer(buf, sizeof buf);
    assert_true(pb_encode(&s, einet_Envelope_fields, &e));
    assert_int_equal(wire_decode(buf, s.bytes_written, tb, &d, &err), EI_E_VERSION);
    assert_int_equal(wire_decode(buf, 0, tb, &d, &err), EI_E_VERSION);
    assert_string_equal(err.msg, "envelope.version: missing (this is 1)");
    /* garbage is malformed, not a version mismatch; protobuf without a version is */
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0x07, 0x13};
    assert_int_equal(wire_decode(junk, sizeof junk, tb, &d, &err), EI_E_FORMAT);
    assert_string_equal(err.msg, "envelope: malformed: 5 bytes that are not a protobuf Envelope");
    static const uint8_t seq_only[] = {0x10, 0x05};
    assert_int_equal(wire_decode(seq_only, sizeof seq_only, tb, &d, &err), EI_E_VERSION);
    assert_int_equal(d.seq, 5);
}

/* Hand-made bytes whose protobuf breaks a bound; the error names the path. */
static void test_decode_errors_name_the_field(void **state)
{
    (void)state;
    einet_Envelope d;
    ei_err_t err = {0};
    /* version 1; feature_map { tensor { shape: packed 5 x 1 } } */
    static const uint8_t five_dims[] = {0x08, 0x01, 0x62, 0x09, 0x2a, 0x07, 0x0a,
                                        0x05, 0x01, 0x01, 0x01, 0x01, 0x01};
    assert_int_equal(wire_decode(five_dims, sizeof five_dims, 4, &d, &err), EI_E_FORMAT);
    assert_string_equal(err.msg, "envelope.feature_map.tensor.shape: array overflow");
    /* version 1; answer { reason: 200 x 'a' } */
    uint8_t reason[220] = {0x08, 0x01, 0x72, 0xcb, 0x01, 0x22, 0xc8, 0x01};
    memset(reason + 8, 'a', 200);
    assert_int_equal(wire_decode(reason, 208, WIRE_NO_TENSOR, &d, &err), EI_E_FORMAT);
    assert_string_equal(err.msg, "envelope.answer.reason: string overflow");
    /* version 1; feature_map { seen {exit 1}, seen { probs: 17 floats } } */
    uint8_t probs[120] = {0x08, 0x01, 0x62, 0x4c, 0x32, 0x02, 0x08, 0x01, 0x32, 0x46, 0x22, 0x44};
    memset(probs + 12, 0, 17 * 4);
    size_t n = 12 + 17 * 4;
    assert_int_equal(wire_decode(probs, n, 4, &d, &err), EI_E_FORMAT);
    assert_string_equal(err.msg, "envelope.feature_map.seen[1].probs: array overflow");
    /* version 1, then a field cut short */
    static const uint8_t cut[] = {0x08, 0x01, 0x10};
    assert_int_equal(wire_decode(cut, sizeof cut, WIRE_NO_TENSOR, &d, &err), EI_E_FORMAT);
    assert_non_null(strstr(err.msg, "envelope.seq: "));
}

static void test_oversized_and_random(void **state)
{
    (void)state;
    einet_Envelope d;
    ei_err_t err = {0};
    size_t big = WIRE_ENVELOPE_MAX + 100;
    uint8_t *buf = calloc(1, big);
    buf[0] = 0x08;
    buf[1] = 0x01;
    assert_int_equal(wire_decode(buf, big, WIRE_NO_TENSOR, &d, &err), EI_E_RANGE);
    assert_non_null(strstr(err.msg, "more than the largest valid"));
    ei_rng_t r;
    ei_rng_seed(&r, 11);
    for (int i = 0; i < 3000; i++) {
        size_t len = ei_rng_below(&r, 600);
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)ei_rng_next(&r);
        if (i % 2 && len >= 2) { /* half of them pass the version check */
            buf[0] = 0x08;
            buf[1] = 0x01;
        }
        err.msg[0] = '\0';
        if (wire_decode(buf, len, ei_rng_below(&r, 2) ? WIRE_NO_TENSOR : 3136, &d, &err) < 0)
            assert_true(strlen(err.msg) > 0);
    }
    free(buf);
}

/* Every prefix of every valid message decodes or fails cleanly. */
static void test_truncations(void **state)
{
    (void)state;
    for (int i = 0; i < NTAGS; i++) {
        einet_Envelope e, d;
        size_t tb;
        ei_err_t err;
        sample(&e, all_tags[i], &tb);
        size_t len = encode_ok(&e, tb);
        for (size_t cut = 0; cut < len; cut++) {
            err.msg[0] = '\0';
            if (wire_decode(encbuf, cut, tb, &d, &err) < 0)
                assert_true(err.msg[0] != '\0');
        }
    }
}

static void mutate(uint8_t *buf, size_t *len, ei_rng_t *r)
{
    int kind = (int)ei_rng_below(r, 5);
    size_t at = *len ? ei_rng_below(r, (uint32_t)*len) : 0;
    if (kind == 0 && *len)
        buf[at] ^= (uint8_t)(1u << ei_rng_below(r, 8));
    else if (kind == 1 && *len)
        buf[at] = (uint8_t)ei_rng_next(r);
    else if (kind == 2)
        *len = at;
    else if (kind == 3 && *len + 1 < WIRE_ENVELOPE_MAX) {
        memmove(buf + at + 1, buf + at, *len - at);
        buf[at] = (uint8_t)ei_rng_next(r);
        (*len)++;
    } else if (*len > 1) {
        memmove(buf + at, buf + at + 1, *len - at - 1);
        (*len)--;
    }
}

/* 5000 random mutations of valid encodings: each is refused cleanly or, when accepted,
 * is a message that encodes again, and whose encoding is stable from then on. (The structs
 * themselves may differ past a string's NUL when a mutation repeats a field.) */
static void test_fuzz_mutations(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 2024);
    static uint8_t buf[WIRE_ENVELOPE_MAX], again[WIRE_ENVELOPE_MAX], third[WIRE_ENVELOPE_MAX];
    int accepted = 0;
    for (int it = 0; it < 5000; it++) {
        einet_Envelope e, d, d2;
        size_t tb, len2, len3;
        ei_err_t err = {0};
        sample(&e, all_tags[ei_rng_below(&r, NTAGS)], &tb);
        size_t len = encode_ok(&e, tb);
        memcpy(buf, encbuf, len);
        for (int m = 1 + (int)ei_rng_below(&r, 3); m > 0; m--)
            mutate(buf, &len, &r);
        if (wire_decode(buf, len, tb, &d, &err) < 0) {
            assert_true(err.msg[0] != '\0');
            continue;
        }
        accepted++;
        assert_int_equal(wire_encode(&d, tb, again, sizeof again, &len2, &err), 0);
        assert_int_equal(wire_decode(again, len2, tb, &d2, &err), 0);
        assert_int_equal(wire_encode(&d2, tb, third, sizeof third, &len3, &err), 0);
        assert_int_equal(len2, len3);
        assert_memory_equal(again, third, len2);
    }
    /* Some mutations (a changed value) must stay valid, or the loop tested nothing. */
    assert_true(accepted > 100 && accepted < 4900);
}

/* ---- batches (issue 13: a batch's messages as one ZeroMQ message) ---- */

#define MAP_FLOATS (32 * 7 * 7)

/* The batch a node sends: two feature maps with their tensors, an exit result and a
 * taken, each encoded as it would go alone; items[] keeps what went in. */
static void batch_sample(wire_batch_out_t *b, einet_Envelope items[4], float t[2][MAP_FLOATS])
{
    static const pb_size_t tags[4] = {einet_Envelope_feature_map_tag,
                                      einet_Envelope_exit_result_tag,
                                      einet_Envelope_feature_map_tag, einet_Envelope_taken_tag};
    ei_err_t err = {0};
    for (int i = 0; i < 2; i++)
        fill_random(t[i], MAP_FLOATS, 100 + (uint64_t)i);
    for (int i = 0, m = 0; i < 4; i++) {
        size_t tb;
        sample(&items[i], tags[i], &tb);
        items[i].seq = 500 + (uint64_t)i;
        if (i == 2)
            items[i].body.feature_map.request_id = 99;
        size_t len = encode_ok(&items[i], tb);
        const float *tensor = tb == WIRE_NO_TENSOR ? NULL : t[m++];
        assert_int_equal(wire_batch_add(b, encbuf, len, tensor, tensor ? tb : 0, &err), 0);
    }
}

/* The two frames wire_batch_send would send, as a received message from "edge". */
static xport_msg_t *batch_msg(const wire_batch_out_t *b, const einet_Batch *hdr, size_t payload)
{
    einet_Envelope e;
    static uint8_t env[WIRE_ENVELOPE_MAX];
    wire_env_init(&e, einet_Envelope_batch_tag);
    e.seq = 77;
    e.body.batch = *hdr;
    pb_ostream_t s = pb_ostream_from_buffer(env, sizeof env);
    assert_true(pb_encode(&s, einet_Envelope_fields, &e));
    xport_peer_t from = xport_peer("edge", 4);
    xport_frame_t f[2] = {{env, s.bytes_written, NULL, NULL}, {b->buf, payload, NULL, NULL}};
    return xport_msg_new(&from, f, payload == WIRE_NO_TENSOR ? 1 : 2);
}

/* Reads every message of a batch; the tensors are compared with t. */
static void batch_expect(const wire_in_t *in, const einet_Envelope items[4],
                         float t[2][MAP_FLOATS])
{
    wire_batch_it_t it = {0, 0};
    wire_in_t item;
    ei_err_t err = {0};
    int m = 0;
    for (int i = 0; i < 4; i++) {
        int rc = wire_batch_next(in, &it, &item, &err);
        if (rc != 1)
            fail_msg("message %d: %d %s", i, rc, err.msg);
        assert_memory_equal(&item.env, &items[i], sizeof item.env);
        assert_int_equal(item.peer.len, in->peer.len);
        assert_memory_equal(item.peer.id, in->peer.id, in->peer.len);
        if (items[i].which_body == einet_Envelope_feature_map_tag) {
            assert_non_null(item.tensor);
            assert_int_equal((uintptr_t)item.tensor % sizeof(float), 0);
            assert_int_equal(item.tensor_numel, MAP_FLOATS);
            assert_memory_equal(item.tensor, t[m++], sizeof t[0]);
        } else {
            assert_null(item.tensor);
        }
    }
    assert_int_equal(wire_batch_next(in, &it, &item, &err), 0);
}

static void test_batch_roundtrip(void **state)
{
    (void)state;
    wire_batch_out_t b = {0};
    static einet_Envelope items[4];
    static float t[2][MAP_FLOATS];
    batch_sample(&b, items, t);
    assert_int_equal(b.hdr.count, 4);
    xport_msg_t *msg = batch_msg(&b, &b.hdr, b.len);
    static wire_in_t in;
    ei_err_t err = {0};
    assert_int_equal(wire_recv(msg, &in, &err), 0);
    assert_int_equal(in.env.which_body, einet_Envelope_batch_tag);
    assert_int_equal(in.payload_bytes, b.len);
    batch_expect(&in, items, t);
    xport_msg_destroy(&msg);
    /* what was added reads back as it went in (a refused send's messages go one by one) */
    const uint8_t *env;
    const float *tensor;
    size_t len, tb;
    wire_batch_item(&b, 2, &env, &len, &tensor, &tb);
    assert_int_equal(tb, sizeof t[1]);
    assert_memory_equal(tensor, t[1], tb);
    einet_Envelope d;
    assert_int_equal(wire_decode(env, len, tb, &d, &err), 0);
    assert_memory_equal(&d, &items[2], sizeof d);
    /* full at WIRE_MAX_BATCH messages: the caller sends and starts again */
    wire_batch_clear(&b);
    for (int i = 0; i < WIRE_MAX_BATCH; i++)
        assert_int_equal(wire_batch_add(&b, "x", 1, NULL, 0, &err), 0);
    assert_int_equal(wire_batch_add(&b, "x", 1, NULL, 0, &err), EI_E_RANGE);
    assert_string_equal(err.msg, "batch: full (256 messages, 2048 bytes)");
    wire_batch_free(&b);
}

/* Each way a batch's layout can lie is refused by wire_recv, naming what is wrong. */
static void test_batch_layout_refused(void **state)
{
    (void)state;
    wire_batch_out_t b = {0};
    static einet_Envelope items[4];
    static float t[2][MAP_FLOATS];
    static wire_in_t in;
    batch_sample(&b, items, t);
    size_t total = b.len;
    static const struct {
        int count, nenv, ntensor; /* -1: as built */
        long payload;             /* bytes cut from the payload; -1: no payload frame */
        int code;
        const char *msg;
    } cases[] = {
        {3, -1, -1, 0, EI_E_FORMAT, "batch.env_bytes: 4 sizes for 3 messages"},
        {0, 0, 0, 0, EI_E_RANGE, "batch.count: 0, expected 1..256"},
        {-1, -1, 3, 0, EI_E_FORMAT, "batch.tensor_bytes: 3 sizes for 4 messages"},
        {-1, -1, -1, 8, EI_E_SHAPE, NULL},
        {-1, -1, -1, -1, EI_E_SHAPE, "batch: the payload frame is missing"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        einet_Batch h = b.hdr;
        if (cases[c].count >= 0)
            h.count = (uint32_t)cases[c].count;
        if (cases[c].nenv >= 0)
            h.env_bytes_count = (pb_size_t)cases[c].nenv;
        if (cases[c].ntensor >= 0)
            h.tensor_bytes_count = (pb_size_t)cases[c].ntensor;
        size_t payload = cases[c].payload < 0 ? WIRE_NO_TENSOR : total - (size_t)cases[c].payload;
        xport_msg_t *msg = batch_msg(&b, &h, payload);
        ei_err_t err = {0};
        assert_int_equal(wire_recv(msg, &in, &err), cases[c].code);
        if (cases[c].msg)
            assert_string_equal(err.msg, cases[c].msg);
        assert_int_equal(in.env.seq, 77); /* so the refusal answers it */
        xport_msg_destroy(&msg);
    }
    /* the fifth size is 0: no envelope is empty */
    einet_Batch h = b.hdr;
    h.count = h.env_bytes_count = h.tensor_bytes_count = 5;
    h.env_bytes[4] = h.tensor_bytes[4] = 0;
    xport_msg_t *msg = batch_msg(&b, &h, total);
    ei_err_t err = {0};
    assert_int_equal(wire_recv(msg, &in, &err), EI_E_RANGE);
    char want[160];
    snprintf(want, sizeof want, "batch.env_bytes[4]: 0, expected 1..%u",
             (unsigned)WIRE_ENVELOPE_MAX);
    assert_string_equal(err.msg, want);
    xport_msg_destroy(&msg);
    /* a truncated payload: the sizes promise more than came */
    msg = batch_msg(&b, &b.hdr, total - 8);
    assert_int_equal(wire_recv(msg, &in, &err), EI_E_SHAPE);
    snprintf(want, sizeof want, "batch: 4 messages of %zu bytes (each frame padded to 8), "
             "the payload frame has %zu", total, total - 8);
    assert_string_equal(err.msg, want);
    printf("  %s\n", err.msg);
    xport_msg_destroy(&msg);
    wire_batch_free(&b);
}

/* A bad message inside a batch is refused on its own, named by its place; the others
 * are read all the same. */
static void test_batch_bad_message(void **state)
{
    (void)state;
    wire_batch_out_t b = {0};
    static einet_Envelope e;
    static wire_in_t in, item;
    static float t[MAP_FLOATS];
    ei_err_t err = {0};
    size_t tb, len;
    fill_random(t, MAP_FLOATS, 7);
    /* 1: a map whose tensor is 8 bytes short of its shape */
    sample(&e, einet_Envelope_feature_map_tag, &tb);
    len = encode_ok(&e, tb);
    assert_int_equal(wire_batch_add(&b, encbuf, len, t, tb - 8, &err), 0);
    /* 2: a heartbeat, which may not travel in a batch */
    sample(&e, einet_Envelope_heartbeat_tag, &tb);
    len = encode_ok(&e, tb);
    assert_int_equal(wire_batch_add(&b, encbuf, len, NULL, 0, &err), 0);
    /* 3: bytes that are no envelope */
    assert_int_equal(wire_batch_add(&b, "\xff\xff\xff\x07\x13", 5, NULL, 0, &err), 0);
    /* 4: a taken with a tensor it does not carry */
    sample(&e, einet_Envelope_taken_tag, &tb);
    len = encode_ok(&e, tb);
    assert_int_equal(wire_batch_add(&b, encbuf, len, t, 16, &err), 0);
    /* 5: a batch inside the batch */
    einet_Envelope inner;
    wire_env_init(&inner, einet_Envelope_batch_tag);
    inner.body.batch.count = inner.body.batch.env_bytes_count = 1;
    inner.body.batch.tensor_bytes_count = 1;
    inner.body.batch.env_bytes[0] = 8;
    static uint8_t ibuf[WIRE_ENVELOPE_MAX];
    size_t ilen;
    assert_int_equal(wire_encode(&inner, 8, ibuf, sizeof ibuf, &ilen, &err), 0);
    assert_int_equal(wire_batch_add(&b, ibuf, ilen, t, 8, &err), 0);
    /* 6: a good exit result */
    sample(&e, einet_Envelope_exit_result_tag, &tb);
    len = encode_ok(&e, tb);
    assert_int_equal(wire_batch_add(&b, encbuf, len, NULL, 0, &err), 0);
    xport_msg_t *msg = batch_msg(&b, &b.hdr, b.len);
    assert_int_equal(wire_recv(msg, &in, &err), 0);
    wire_batch_it_t it = {0, 0};
    static const struct {
        int rc;
        const char *msg;
    } want[] = {
        {EI_E_SHAPE, "batch message 1 of 6: feature_map.tensor: shape promises 6272 bytes, the "
                     "tensor frame has 6264"},
        {EI_E_FORMAT, "batch message 2 of 6: heartbeat may not travel in a batch"},
        {EI_E_FORMAT, "batch message 3 of 6: envelope: malformed: 5 bytes that are not a "
                      "protobuf Envelope"},
        {EI_E_SHAPE, "batch message 4 of 6: taken: carries no tensor, but a 16-byte tensor "
                     "frame came"},
        {EI_E_FORMAT, "batch message 5 of 6: batch may not travel in a batch"},
    };
    for (int i = 0; i < 5; i++) {
        assert_int_equal(wire_batch_next(&in, &it, &item, &err), want[i].rc);
        assert_string_equal(err.msg, want[i].msg);
        assert_int_equal(item.peer.len, 4); /* the sender, to refuse it */
    }
    assert_int_equal(wire_batch_next(&in, &it, &item, &err), 1);
    assert_memory_equal(&item.env, &e, sizeof e);
    assert_int_equal(wire_batch_next(&in, &it, &item, &err), 0);
    xport_msg_destroy(&msg);
    wire_batch_free(&b);
}

/* 3000 random mutations of a batch's envelope or payload: each is refused cleanly, by
 * wire_recv or message by message, and reading never leaves the payload (ASan). */
static void test_batch_fuzz(void **state)
{
    (void)state;
    ei_rng_t r;
    ei_rng_seed(&r, 2026);
    wire_batch_out_t b = {0};
    static einet_Envelope items[4], e;
    static float t[2][MAP_FLOATS];
    static wire_in_t in, item;
    static uint8_t env[WIRE_ENVELOPE_MAX];
    batch_sample(&b, items, t);
    wire_env_init(&e, einet_Envelope_batch_tag);
    e.body.batch = b.hdr;
    pb_ostream_t s = pb_ostream_from_buffer(env, sizeof env);
    assert_true(pb_encode(&s, einet_Envelope_fields, &e));
    uint8_t *pay = malloc(b.len + 64), *ebuf = malloc(WIRE_ENVELOPE_MAX);
    int whole = 0, items_ok = 0, items_bad = 0;
    for (int i = 0; i < 3000; i++) {
        size_t elen = s.bytes_written, plen = b.len;
        memcpy(ebuf, env, elen);
        memcpy(pay, b.buf, plen);
        if (i % 2)
            for (int m = 1 + (int)ei_rng_below(&r, 3); m > 0; m--)
                mutate(ebuf, &elen, &r);
        else
            for (int m = 1 + (int)ei_rng_below(&r, 3); m > 0; m--) {
                /* mostly in a message's envelope (the tensors are most of the bytes) */
                int k = (int)ei_rng_below(&r, 4);
                const uint8_t *ek;
                const float *tk;
                size_t lk, tbk;
                wire_batch_item(&b, k, &ek, &lk, &tk, &tbk);
                size_t at = (size_t)(ek - b.buf) + ei_rng_below(&r, (uint32_t)lk);
                if (ei_rng_below(&r, 8) == 0)
                    plen = ei_rng_below(&r, (uint32_t)plen); /* truncated */
                else if (at < plen)
                    pay[at] = (uint8_t)ei_rng_next(&r);
            }
        xport_frame_t f[2] = {{ebuf, elen, NULL, NULL}, {pay, plen, NULL, NULL}};
        xport_msg_t *msg = xport_msg_new(NULL, f, 2);
        ei_err_t err = {0};
        int rc = wire_recv(msg, &in, &err);
        if (rc < 0) {
            assert_true(err.msg[0] != '\0');
        } else if (in.env.which_body == einet_Envelope_batch_tag) {
            whole++;
            wire_batch_it_t it = {0, 0};
            while ((rc = wire_batch_next(&in, &it, &item, &err)) != 0) {
                if (rc < 0) {
                    assert_true(strncmp(err.msg, "batch message ", 14) == 0);
                    items_bad++;
                } else {
                    items_ok++;
                }
            }
        }
        xport_msg_destroy(&msg);
    }
    /* payload mutations keep the layout, so many batches are read and some of their
     * messages refused: the loop reached the per-message checks */
    printf("  %d batches read: %d messages taken, %d refused\n", whole, items_ok, items_bad);
    assert_true(whole > 500 && items_ok > 1000 && items_bad > 100);
    free(pay);
    free(ebuf);
    wire_batch_free(&b);
}

/* ---- through real sockets ---- */

typedef struct inbox {
    int got;
    int keep;          /* keep the message (a batch's payload lives in it) */
    xport_msg_t *msg;  /* the last one kept */
    wire_in_t in;
    int rc;
    ei_err_t err;
    float tensor[32 * 7 * 7];
    uv_loop_t *loop;
} inbox_t;

static void on_wire(xport_t *x, xport_msg_t **msg_p, void *arg)
{
    (void)x;
    inbox_t *box = arg;
    box->rc = wire_recv(*msg_p, &box->in, &box->err);
    if (box->keep) {
        xport_msg_destroy(&box->msg);
        box->msg = *msg_p;
        *msg_p = NULL;
    }
    if (box->rc == 0 && box->in.tensor)
        memcpy(box->tensor, box->in.tensor, box->in.tensor_numel * sizeof(float));
    box->got++;
    uv_stop(box->loop);
}

static void on_timeout(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void wait_for(inbox_t *box, int count, uv_loop_t *loop)
{
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, on_timeout, 5000, 0);
    while (box->got < count && uv_timer_get_due_in(&t) > 0)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    assert_int_equal(box->got, count);
}

typedef struct pair {
    uv_loop_t loop;
    void *ctx;
    xport_t *router, *dealer;
    inbox_t at_router, at_dealer;
} pair_t;

static void pair_open(pair_t *p)
{
    ei_err_t err = {0};
    memset(p, 0, sizeof *p);
    uv_loop_init(&p->loop);
    p->ctx = zmq_ctx_new();
    xport_opts_t ro = {.type = ZMQ_ROUTER}, dopt = {.type = ZMQ_DEALER, .identity = "device"};
    p->router = xport_new(&p->loop, p->ctx, &ro, &err);
    p->dealer = xport_new(&p->loop, p->ctx, &dopt, &err);
    assert_non_null(p->router);
    assert_non_null(p->dealer);
    assert_int_equal(xport_bind(p->router, "tcp://127.0.0.1:*", &err), 0);
    assert_int_equal(xport_connect(p->dealer, xport_endpoint(p->router), &err), 0);
    p->at_router.loop = p->at_dealer.loop = &p->loop;
    assert_int_equal(xport_start(p->router, on_wire, &p->at_router, &err), 0);
    assert_int_equal(xport_start(p->dealer, on_wire, &p->at_dealer, &err), 0);
}

static void pair_close(pair_t *p)
{
    xport_destroy(&p->router);
    xport_destroy(&p->dealer);
    uv_run(&p->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&p->loop), 0);
    zmq_ctx_term(p->ctx);
}

static void test_every_message_over_sockets(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p);
    float tensor[32 * 7 * 7];
    fill_random(tensor, 32 * 7 * 7, 5);
    for (int i = 0; i < NTAGS; i++) {
        einet_Envelope e;
        size_t tb;
        ei_err_t err = {0};
        sample(&e, all_tags[i], &tb);
        wire_payload_t pay = {tensor, tb == WIRE_NO_TENSOR ? 0 : tb / 4, NULL, NULL};
        assert_int_equal(wire_send(p.dealer, NULL, &e, &pay, &err), 0);
        wait_for(&p.at_router, i + 1, &p.loop);
        if (p.at_router.rc != 0)
            fail_msg("%s: %s", wire_body_name(all_tags[i]), p.at_router.err.msg);
        assert_memory_equal(&p.at_router.in.env, &e, sizeof e);
        assert_int_equal(p.at_router.in.peer.len, 6);
        assert_memory_equal(p.at_router.in.peer.id, "device", 6);
        if (tb != WIRE_NO_TENSOR) {
            assert_int_equal(p.at_router.in.tensor_numel, tb / 4);
            assert_memory_equal(p.at_router.tensor, tensor, tb);
        }
    }
    pair_close(&p);
}

/* A peer speaking version 2 is refused and told so in an Error it can read. */
static void test_version_refusal_reply(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p);
    einet_Envelope e;
    size_t tb;
    ei_err_t err = {0};
    sample(&e, einet_Envelope_stats_query_tag, &tb);
    e.version = 2;
    e.seq = 555;
    uint8_t buf[64];
    pb_ostream_t s = pb_ostream_from_buffer(buf, sizeof buf);
    assert_true(pb_encode(&s, einet_Envelope_fields, &e));
    xport_frame_t f = {buf, s.bytes_written, NULL, NULL};
    assert_int_equal(xport_send(p.dealer, NULL, &f, 1, &err), 0);
    wait_for(&p.at_router, 1, &p.loop);
    assert_int_equal(p.at_router.rc, EI_E_VERSION);
    assert_int_equal(p.at_router.in.env.seq, 555);
    assert_int_equal(wire_send_error(p.router, &p.at_router.in.peer, p.at_router.in.env.seq,
                                     p.at_router.rc, p.at_router.err.msg, &err),
                     0);
    wait_for(&p.at_dealer, 1, &p.loop);
    assert_int_equal(p.at_dealer.rc, 0);
    const einet_Envelope *r = &p.at_dealer.in.env;
    assert_int_equal(r->which_body, einet_Envelope_error_tag);
    assert_int_equal(r->reply_to, 555);
    assert_int_equal(r->body.error.code, EI_E_VERSION);
    assert_int_equal(r->body.error.version, WIRE_VERSION);
    assert_string_equal(r->body.error.message, "envelope.version: 2 is not supported (this is 1)");
    pair_close(&p);
}

/* Three frames, or a tensor frame that disagrees with the shape, are refused on receipt. */
static void test_bad_framing_over_sockets(void **state)
{
    (void)state;
    pair_t p;
    pair_open(&p);
    einet_Envelope e;
    size_t tb, len;
    ei_err_t err = {0};
    sample(&e, einet_Envelope_request_tag, &tb);
    assert_int_equal(wire_encode(&e, tb, encbuf, sizeof encbuf, &len, &err), 0);
    static float img[785];
    xport_frame_t f[3] = {
        {encbuf, len, NULL, NULL}, {img, 785 * 4, NULL, NULL}, {img, 4, NULL, NULL}};
    assert_int_equal(xport_send(p.dealer, NULL, f, 2, &err), 0);
    wait_for(&p.at_router, 1, &p.loop);
    assert_int_equal(p.at_router.rc, EI_E_SHAPE);
    assert_string_equal(p.at_router.err.msg,
                        "request.input: shape promises 3136 bytes, the tensor frame has 3140");
    assert_int_equal(xport_send(p.dealer, NULL, f, 3, &err), 0);
    wait_for(&p.at_router, 2, &p.loop);
    assert_int_equal(p.at_router.rc, EI_E_FORMAT);
    assert_int_equal(p.at_router.in.peer.len, 6); /* still known, to reply to */
    /* wire_send refuses a tensor body without its data, before anything is sent. */
    assert_int_equal(wire_send(p.dealer, NULL, &e, NULL, &err), EI_E_INVAL);
    pair_close(&p);
}

/* A batch goes through a real socket as one message, and a batch of one as itself. */
static void test_batch_over_sockets(void **state)
{
    (void)state;
    static pair_t p;
    pair_open(&p);
    p.at_router.keep = 1;
    wire_batch_out_t b = {0};
    static einet_Envelope items[4];
    static float t[2][MAP_FLOATS];
    ei_err_t err = {0};
    batch_sample(&b, items, t);
    assert_int_equal(wire_batch_send(p.dealer, NULL, &b, 42, &err), 0);
    wait_for(&p.at_router, 1, &p.loop);
    assert_int_equal(p.at_router.rc, 0);
    assert_int_equal(p.at_router.in.env.seq, 42);
    batch_expect(&p.at_router.in, items, t);
    wire_batch_clear(&b);
    size_t tb;
    sample(&items[0], einet_Envelope_feature_map_tag, &tb);
    size_t len = encode_ok(&items[0], tb);
    assert_int_equal(wire_batch_add(&b, encbuf, len, t[0], tb, &err), 0);
    assert_int_equal(wire_batch_send(p.dealer, NULL, &b, 43, &err), 0);
    wait_for(&p.at_router, 2, &p.loop);
    assert_int_equal(p.at_router.rc, 0);
    assert_memory_equal(&p.at_router.in.env, &items[0], sizeof items[0]);
    assert_memory_equal(p.at_router.tensor, t[0], tb);
    xport_msg_destroy(&p.at_router.msg);
    wire_batch_free(&b);
    pair_close(&p);
}

/* The coordinator's tasks to a device as one batch, through a real socket: each task reads
 * back as it went (its own id, plan, deadline, seq) with its image aligned and equal; a
 * task whose image frame is short, and a client's request (which never travels in a
 * batch), are refused by their place while the tasks around them are read. */
static void test_batch_tasks(void **state)
{
    (void)state;
    enum { IMG = 28 * 28 };
    static pair_t p;
    static einet_Envelope tasks[4], got;
    static float img[4][IMG];
    wire_batch_out_t b = {0};
    ei_err_t err = {0};
    size_t tb, len;
    pair_open(&p);
    p.at_router.keep = 1;
    for (int i = 0; i < 4; i++) {
        fill_random(img[i], IMG, 40 + (uint64_t)i);
        sample(&tasks[i], einet_Envelope_task_tag, &tb);
        tasks[i].seq = 900 + (uint64_t)i;
        tasks[i].body.task.request_id = 1000 + (uint64_t)i;
        tasks[i].body.task.plan[i] = true;
        tasks[i].body.task.deadline_us = 1000 * (uint64_t)(i + 1);
        len = encode_ok(&tasks[i], IMG * 4);
        /* message 2: its image 4 bytes short (and so the next one's offset unaligned
         * but for the padding) */
        assert_int_equal(wire_batch_add(&b, encbuf, len, img[i], i == 1 ? IMG * 4 - 4 : IMG * 4,
                                        &err), 0);
    }
    sample(&got, einet_Envelope_request_tag, &tb);
    len = encode_ok(&got, tb);
    assert_int_equal(wire_batch_add(&b, encbuf, len, img[0], tb, &err), 0);
    assert_int_equal(wire_batch_send(p.dealer, NULL, &b, 42, &err), 0);
    wait_for(&p.at_router, 1, &p.loop);
    assert_int_equal(p.at_router.rc, 0);
    wire_batch_it_t it = {0, 0};
    static wire_in_t item;
    for (int i = 0; i < 4; i++) {
        int rc = wire_batch_next(&p.at_router.in, &it, &item, &err);
        if (i == 1) {
            assert_int_equal(rc, EI_E_SHAPE);
            assert_string_equal(err.msg, "batch message 2 of 5: task.input: shape promises "
                                         "3136 bytes, the tensor frame has 3132");
            assert_int_equal(item.env.seq, 901); /* the refusal answers it */
            continue;
        }
        if (rc != 1)
            fail_msg("task %d: %d %s", i, rc, err.msg);
        assert_memory_equal(&item.env, &tasks[i], sizeof item.env);
        assert_int_equal((uintptr_t)item.tensor % sizeof(float), 0);
        assert_int_equal(item.tensor_numel, IMG);
        assert_memory_equal(item.tensor, img[i], sizeof img[i]);
    }
    assert_int_equal(wire_batch_next(&p.at_router.in, &it, &item, &err), EI_E_FORMAT);
    assert_string_equal(err.msg, "batch message 5 of 5: request may not travel in a batch");
    assert_int_equal(wire_batch_next(&p.at_router.in, &it, &item, &err), 0);
    xport_msg_destroy(&p.at_router.msg);
    wire_batch_free(&b);
    pair_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tensor_roundtrip),
        cmocka_unit_test(test_tensor_bad),
        cmocka_unit_test(test_every_message_roundtrips),
        cmocka_unit_test(test_body_names),
        cmocka_unit_test(test_largest_feature_map),
        cmocka_unit_test(test_rules_name_the_field),
        cmocka_unit_test(test_stop_rule_text),
        cmocka_unit_test(test_tensor_frame_checked),
        cmocka_unit_test(test_versions_refused),
        cmocka_unit_test(test_decode_errors_name_the_field),
        cmocka_unit_test(test_oversized_and_random),
        cmocka_unit_test(test_truncations),
        cmocka_unit_test(test_fuzz_mutations),
        cmocka_unit_test(test_every_message_over_sockets),
        cmocka_unit_test(test_version_refusal_reply),
        cmocka_unit_test(test_bad_framing_over_sockets),
        cmocka_unit_test(test_batch_roundtrip),
        cmocka_unit_test(test_batch_layout_refused),
        cmocka_unit_test(test_batch_bad_message),
        cmocka_unit_test(test_batch_fuzz),
        cmocka_unit_test(test_batch_over_sockets),
        cmocka_unit_test(test_batch_tasks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
