/* coordinator/journal: a real SQLite file in a temporary directory. What is recorded reads
 * back exactly (answers, deepest results, images of pending requests), ids go on above
 * every id recorded across a close and reopen (and after retention dropped rows), an
 * uncommitted batch is not there after a reopen, retention never drops pending requests,
 * and a file that is not a database is refused with its name. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "coordinator/journal.h"

static char g_dir[64], g_path[128];

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/einet-journal-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    snprintf(g_path, sizeof g_path, "%s/j.db", g_dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static journal_t *open_j(int64_t keep_rows, int64_t keep_us)
{
    ei_err_t err;
    journal_opts_t o = {g_path, 0, 1, keep_rows, keep_us};
    journal_t *j = journal_open(&o, &err);
    if (!j)
        fail_msg("%s", err.msg);
    return j;
}

static void accept_one(journal_t *j, uint64_t id, uint64_t client_id, uint64_t recv_us,
                       const float *img)
{
    ei_err_t err;
    assert_int_equal(journal_accept(j, id, client_id, 1, (uint32_t)(client_id % 10), recv_us, 250,
                                    img, img ? 784 : 0, client_id % 2 ? "keyA" : "keyB", &err),
                     0);
}

static void answer_one(journal_t *j, uint64_t id, int status, uint32_t exit, uint64_t now)
{
    ei_err_t err;
    einet_Answer a;
    memset(&a, 0, sizeof a);
    a.request_id = id;
    a.status = status;
    snprintf(a.reason, sizeof a.reason, "why %llu", (unsigned long long)id);
    a.exit = exit;
    a.tier = einet_Tier_TIER_CLOUD;
    a.class_id = 7;
    a.confidence = 0.75f;
    a.latency_us = 4321;
    a.probs_count = 3;
    a.probs[0] = 0.25f;
    a.probs[1] = 0.75f;
    assert_int_equal(journal_answer(j, &a, now, &err), 0);
}

typedef struct seen {
    int n;
    uint64_t ids[16];
    uint32_t best_exit[16];
    float first_px[16];
    int has_input[16];
} seen_t;

static void on_row(const journal_row_t *r, void *arg)
{
    seen_t *s = arg;
    s->ids[s->n] = r->id;
    s->best_exit[s->n] = r->best.exit;
    s->has_input[s->n] = r->input != NULL && r->input_numel == 784;
    s->first_px[s->n] = r->input ? r->input[1] : -1;
    s->n++;
}

static void test_roundtrip_and_restart(void **state)
{
    (void)state;
    ei_err_t err;
    float img[784];
    for (int i = 0; i < 784; i++)
        img[i] = (float)i * 0.5f;
    journal_t *j = open_j(1000, (int64_t)1 << 50);
    assert_int_equal(journal_next_id(j), 1);
    for (uint64_t id = 1; id <= 5; id++)
        accept_one(j, id, 100 + id, 1000 * id, img);
    /* Deeper results replace shallower ones, never the reverse. */
    einet_ExitResult x;
    memset(&x, 0, sizeof x);
    x.exit = 4;
    x.tier = einet_Tier_TIER_EDGE;
    x.class_id = 3;
    x.confidence = 0.5f;
    assert_int_equal(journal_exit(j, 2, &x, &err), 0);
    x.exit = 2;
    assert_int_equal(journal_exit(j, 2, &x, &err), 0);
    answer_one(j, 1, einet_Status_STATUS_COMPLETE, 8, 5000);
    answer_one(j, 3, einet_Status_STATUS_DEADLINE, 5, 6000);
    assert_int_equal(journal_undelivered(j, 3, &err), 0);
    assert_true(journal_dirty(j));
    assert_int_equal(journal_commit(j, &err), 0);
    assert_false(journal_dirty(j));
    assert_int_equal(journal_next_id(j), 6);
    /* Left in an open batch: journal_close commits it. */
    accept_one(j, 6, 106, 6000, img);
    journal_close(&j);
    assert_null(j);

    j = open_j(1000, (int64_t)1 << 50);
    /* journal_close commits: id 6 is there, and ids go on above it. */
    assert_int_equal(journal_next_id(j), 7);
    einet_ResultReply r;
    assert_int_equal(journal_lookup(j, 1, &r, &err), 0);
    assert_true(r.found && !r.pending && !r.undelivered);
    assert_int_equal(r.answer.status, einet_Status_STATUS_COMPLETE);
    assert_int_equal(r.answer.client_id, 101);
    assert_true(r.answer.has_label);
    assert_int_equal(r.answer.label, 1);
    assert_int_equal(r.answer.exit, 8);
    assert_int_equal(r.answer.class_id, 7);
    assert_float_equal(r.answer.confidence, 0.75, 1e-7);
    assert_int_equal(r.answer.latency_us, 4321);
    assert_int_equal(r.answer.probs_count, 3);
    assert_float_equal(r.answer.probs[1], 0.75, 1e-7);
    assert_string_equal(r.answer.reason, "why 1");
    assert_int_equal(journal_lookup(j, 3, &r, &err), 0);
    assert_true(r.found && r.undelivered);
    assert_int_equal(r.answer.status, einet_Status_STATUS_DEADLINE);
    assert_int_equal(journal_lookup(j, 2, &r, &err), 0);
    assert_true(r.found && r.pending);
    assert_int_equal(r.answer.exit, 4);
    assert_int_equal(r.answer.class_id, 3);
    assert_int_equal(journal_lookup(j, 99, &r, &err), 0);
    assert_false(r.found);
    /* Who sent each: id 1 (client 101) by keyA, id 2 (client 102) by keyB. */
    assert_true(journal_owner_is(j, 1, "keyA"));
    assert_false(journal_owner_is(j, 1, "keyB"));
    assert_true(journal_owner_is(j, 2, "keyB"));
    assert_false(journal_owner_is(j, 99, "keyA"));
    /* The pending ones, in id order, with their images and deepest results. */
    seen_t s = {0};
    assert_int_equal(journal_each_pending(j, on_row, &s, &err), 4);
    assert_int_equal(s.n, 4);
    uint64_t want[4] = {2, 4, 5, 6};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(s.ids[i], want[i]);
        assert_true(s.has_input[i]);
        assert_float_equal(s.first_px[i], 0.5, 0);
    }
    assert_int_equal(s.best_exit[0], 4);
    /* An answer is written once: a second one for the same id changes nothing. */
    answer_one(j, 2, einet_Status_STATUS_RESTARTED, 4, 7000);
    answer_one(j, 2, einet_Status_STATUS_COMPLETE, 8, 8000);
    assert_int_equal(journal_commit(j, &err), 0);
    assert_int_equal(journal_lookup(j, 2, &r, &err), 0);
    assert_int_equal(r.answer.status, einet_Status_STATUS_RESTARTED);
    assert_int_equal(journal_count(j), 6);
    journal_close(&j);
}

static void test_retention(void **state)
{
    (void)state;
    ei_err_t err;
    snprintf(g_path, sizeof g_path, "%s/retention.db", g_dir);
    journal_t *j = open_j(3, 1000000); /* 3 newest ids, 1 s */
    uint64_t base = journal_next_id(j);
    for (uint64_t k = 0; k < 10; k++)
        accept_one(j, base + k, k, 10000000 + k * 100000, NULL);
    for (uint64_t k = 0; k < 10; k++)
        if (k != 1) /* base + 1 stays pending */
            answer_one(j, base + k, einet_Status_STATUS_COMPLETE, 8, 0);
    assert_int_equal(journal_commit(j, &err), 0);
    /* By rows: ids below newest - 3 go, except the pending one. */
    int n = journal_trim(j, 10000000, &err);
    assert_int_equal(n, 6);
    assert_int_equal(journal_commit(j, &err), 0);
    einet_ResultReply r;
    assert_int_equal(journal_lookup(j, base, &r, &err), 0);
    assert_false(r.found);
    assert_int_equal(journal_lookup(j, base + 1, &r, &err), 0);
    assert_true(r.found && r.pending);
    assert_int_equal(journal_lookup(j, base + 7, &r, &err), 0);
    assert_true(r.found);
    /* By age: everything received over 1 s before now goes, pending excepted. */
    n = journal_trim(j, 20000000, &err);
    assert_int_equal(n, 3);
    assert_int_equal(journal_commit(j, &err), 0);
    assert_int_equal(journal_count(j), 1);
    uint64_t next = journal_next_id(j);
    journal_close(&j);
    /* Ids still never go back, though the newest rows are gone. */
    j = open_j(3, 1000000);
    assert_int_equal(journal_next_id(j), next);
    journal_close(&j);
}

static void test_not_a_database(void **state)
{
    (void)state;
    char path[160];
    snprintf(path, sizeof path, "%s/junk.db", g_dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 200; i++)
        fputs("this is not an SQLite database\n", f);
    fclose(f);
    ei_err_t err;
    journal_opts_t o = {path, 0, 1, 10, 10};
    journal_t *j = journal_open(&o, &err);
    assert_null(j);
    assert_int_equal(err.code, EI_E_IO);
    assert_non_null(strstr(err.msg, path));
    o.path = "/nonexistent-dir/x/j.db";
    assert_null(journal_open(&o, &err));
    assert_non_null(strstr(err.msg, "/nonexistent-dir/x/j.db"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_and_restart),
        cmocka_unit_test(test_retention),
        cmocka_unit_test(test_not_a_database),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
