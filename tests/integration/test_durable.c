/* The coordinator loses nothing (issue 10), shown with real processes on loopback: a
 * cluster started by deploy/local.sh, `einet infer` as a child process, SIGKILL of
 * einet-coord, and the journal it keeps (coordinator.db in the run directory).
 *
 * Cases (`test_durable CASE`, one cluster each):
 *   restart     one `einet infer` of thousands of requests; einet-coord is SIGKILLed three
 *               times mid-stream (the second time while the edge-cloud link is cut) and
 *               started again. infer must end with every image answered exactly once and
 *               lost 0; every id ever handed out is distinct, is answered exactly once in
 *               the journal (readable by `result`, never pending), names the image it was
 *               given to (no id reused for another request), and agrees with what infer
 *               printed for it.
 *   overload    8 `einet infer` at once, 500 requests each all in flight, against a cluster
 *               slowed (slowdown keys) far below that rate: every answer is complete,
 *               deadline or rejected with reason busy; none is link and none waited for the
 *               lost-message timeout; the coordinator counts no link answer.
 *   slowclient  a client sends 3000 requests and reads nothing for 10 s: afterwards every
 *               request's answer is readable by id; the answers it did receive plus those
 *               the coordinator counts as undelivered are exactly the requests sent.
 * No case depends on the machine's speed: every wait is for an event, with wide limits. */
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <zmq.h>

#include "cli/client.h"
#include "common/ei.h"
#include "itest.h"
#include "nn/dataset.h"
#include "wire/wire.h"

static nn_dataset_t *g_test;
static itest_cluster_t g_cluster;
static char g_out[1 << 16], g_err[1 << 16];

/* ---- the coordinator, by query ---- */

static void stats_query(einet_StatsReply *out)
{
    client_opts_t o = {g_cluster.clients, 10000, NULL, NULL};
    einet_Envelope *env = calloc(1, sizeof *env);
    wire_env_init(env, einet_Envelope_stats_query_tag);
    assert_int_equal(client_query("test", &o, env, einet_Envelope_stats_reply_tag), 0);
    *out = env->body.stats_reply;
    free(env);
}

/* Asks for one id's result on an open connection. */
static void result_query(client_t *c, uint64_t id, einet_ResultReply *out)
{
    einet_Envelope env;
    ei_err_t err;
    wire_env_init(&env, einet_Envelope_result_query_tag);
    env.body.result_query.request_id = id;
    if (client_call(c, &env, einet_Envelope_result_reply_tag, 10000, &err) != 0)
        fail_msg("result %llu: %s", (unsigned long long)id, err.msg);
    *out = env.body.result_reply;
}

static int status_of(const char *s)
{
    for (int i = 0; i < 8; i++)
        if (!strcmp(client_status_name(i), s))
            return i;
    fail_msg("unknown status '%s'", s);
    return -1;
}

/* ---- einet infer as a child, its lines parsed ---- */

typedef struct line {
    long long id;
    int index, status, exit, cls;
    char reason[128];
} line_t;

typedef struct run {
    itest_proc_t p;
    char err_path[512];
    char out_path[512]; /* stdout to this file, read at the end ("": a pipe, read live) */
    int count;
    long long *acked; /* per image: the id of its acknowledgement (0: none) */
    line_t *answer;   /* per image */
    int *answers;     /* per image: answer lines */
    int n_acks, n_answers, n_lines;
    int *order;       /* image of the k-th answer line */
} run_t;

static void run_start(run_t *r, int idx, int count, const char *window, const char *deadline,
                      int to_file)
{
    char bin[1024], n[16];
    memset(r, 0, sizeof *r);
    r->count = count;
    r->acked = calloc((size_t)count, sizeof *r->acked);
    r->answer = calloc((size_t)count, sizeof *r->answer);
    r->answers = calloc((size_t)count, sizeof *r->answers);
    r->order = calloc((size_t)count, sizeof *r->order);
    snprintf(n, sizeof n, "%d", count);
    snprintf(r->err_path, sizeof r->err_path, "%s/infer%d.err", g_cluster.dir, idx);
    if (to_file)
        snprintf(r->out_path, sizeof r->out_path, "%s/infer%d.out", g_cluster.dir, idx);
    const char *args[] = {itest_bin("einet", bin, sizeof bin), "infer", "--coordinator",
                          g_cluster.clients, "--count", n, "--window", window, "--json",
                          "--acks", "--restart-wait-ms", "60000", "--total-timeout-ms",
                          "300000", deadline ? "--deadline-ms" : NULL, deadline, NULL};
    char *argv[sizeof args / sizeof args[0]];
    memcpy(argv, args, sizeof args); /* exec's argv is not const */
    assert_int_equal(itest_spawn(&r->p, argv, !to_file, to_file ? r->out_path : NULL,
                                 r->err_path),
                     0);
}

static void run_free(run_t *r)
{
    free(r->acked);
    free(r->answer);
    free(r->answers);
    free(r->order);
}

/* Parses one stdout line of infer. */
static void run_line(run_t *r, const char *text)
{
    json_error_t jerr;
    json_t *o = json_loads(text, 0, &jerr);
    if (!o)
        fail_msg("infer printed '%s': %s", text, jerr.text);
    json_t *acc = json_object_get(o, "accepted");
    int i = (int)json_integer_value(json_object_get(o, "index"));
    assert_true(i >= 0 && i < r->count);
    if (acc) {
        assert_int_equal(r->acked[i], 0);
        r->acked[i] = json_integer_value(acc);
        r->n_acks++;
    } else {
        line_t *l = &r->answer[i];
        l->index = i;
        l->id = json_integer_value(json_object_get(o, "id"));
        l->status = status_of(json_string_value(json_object_get(o, "status")));
        l->exit = (int)json_integer_value(json_object_get(o, "exit"));
        l->cls = (int)json_integer_value(json_object_get(o, "class"));
        const char *why = json_string_value(json_object_get(o, "reason"));
        snprintf(l->reason, sizeof l->reason, "%s", why ? why : "");
        assert_int_equal(json_integer_value(json_object_get(o, "label")), g_test->labels[i]);
        r->answers[i]++;
        r->order[r->n_answers++] = i;
    }
    r->n_lines++;
    json_decref(o);
}

/* Reads lines until `answers` answers came (or the end). 1 if there are more to read. */
static int run_read(run_t *r, int answers)
{
    char text[1024];
    while (r->n_answers < answers) {
        int got = itest_proc_line(&r->p, text, sizeof text, 120000);
        if (got == 0)
            return 0;
        if (got < 0) {
            itest_cluster_dump_logs(&g_cluster);
            fail_msg("einet infer printed nothing for 120 s (%d answers so far)", r->n_answers);
        }
        run_line(r, text);
    }
    return 1;
}

/* Reads to the end; the exit code; the summary (the last stderr line, JSON) into *summary. */
static int run_finish(run_t *r, json_t **summary)
{
    int rc;
    if (r->out_path[0]) {
        rc = itest_proc_wait(&r->p, 300000);
        FILE *out = fopen(r->out_path, "r");
        char text[1024];
        while (out && fgets(text, sizeof text, out)) {
            text[strcspn(text, "\n")] = 0;
            run_line(r, text);
        }
        if (out)
            fclose(out);
    } else {
        run_read(r, 1 << 30);
        rc = itest_proc_wait(&r->p, 120000);
    }
    FILE *f = fopen(r->err_path, "r");
    char text[4096], last[4096] = "";
    while (f && fgets(text, sizeof text, f))
        if (text[0] == '{')
            snprintf(last, sizeof last, "%s", text);
    if (f)
        fclose(f);
    *summary = json_loads(last, 0, NULL);
    if (rc != 0 || !*summary) {
        char all[8192] = "";
        f = fopen(r->err_path, "r");
        size_t n = f ? fread(all, 1, sizeof all - 1, f) : 0;
        all[n] = 0;
        if (f)
            fclose(f);
        itest_cluster_dump_logs(&g_cluster);
        fail_msg("einet infer: exit %d\n%s", rc, all);
    }
    return rc;
}

static long summary_int(json_t *s, const char *key)
{
    return (long)json_integer_value(json_object_get(s, key));
}

/* ---- SIGKILL and restart ---- */

static void kill_coordinator(void)
{
    pid_t pid = itest_cluster_pid(&g_cluster, "coordinator");
    assert_true(pid > 0);
    assert_int_equal(kill(pid, SIGKILL), 0);
    for (int i = 0; i < 500 && itest_cluster_pid(&g_cluster, "coordinator") > 0; i++)
        usleep(10000);
    assert_true(itest_cluster_pid(&g_cluster, "coordinator") < 0);
}

/* Starts einet-coord alone, as deploy/local.sh does (same log and pid file), without
 * waiting for the cluster to be healthy (it is not while a link is cut). */
static void start_coordinator(void)
{
    char bin[1024], conf[512], log[512], pidf[512];
    snprintf(conf, sizeof conf, "%s/coordinator.ini", g_cluster.dir);
    snprintf(log, sizeof log, "%s/coordinator.log", g_cluster.run_dir);
    snprintf(pidf, sizeof pidf, "%s/coordinator.pid", g_cluster.run_dir);
    setenv("EINET_RUN_DIR", g_cluster.run_dir, 1);
    const char *args[] = {itest_bin("einet-coord", bin, sizeof bin), "--config", conf, NULL};
    char *argv[4];
    memcpy(argv, args, sizeof args);
    itest_proc_t p;
    assert_int_equal(itest_spawn(&p, argv, 0, log, log), 0);
    FILE *f = fopen(pidf, "w");
    assert_non_null(f);
    fprintf(f, "%d\n", (int)p.pid);
    fclose(f);
    /* Wait until it answers queries. */
    for (int i = 0;; i++) {
        if (itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "stats",
                        "--coordinator", g_cluster.clients, "--timeout-ms", "500", NULL) == 0)
            break;
        if (i == 100)
            fail_msg("the restarted coordinator does not answer: %s", g_err);
    }
}

static void fault(const char *a, const char *b, const char *c, const char *d)
{
    /* A restarted coordinator relays a fault only once the node is connected again. */
    for (int i = 0;; i++) {
        int rc = itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "fault",
                             "--coordinator", g_cluster.clients, a, b, c, d, NULL);
        if (rc == 0)
            return;
        if (i == 100)
            fail_msg("einet fault %s %s %s %s: %s", a, b, c, d ? d : "", g_err);
        usleep(50000);
    }
}

/* Log lines msg="N requests were pending at the last stop: C continue ..., R answered
 * 'restarted'" of the coordinator, summed. */
static void restarts_from_log(long *pending, long *continued, long *restarted)
{
    char path[512], text[1024];
    snprintf(path, sizeof path, "%s/coordinator.log", g_cluster.run_dir);
    FILE *f = fopen(path, "r");
    *pending = *continued = *restarted = 0;
    while (f && fgets(text, sizeof text, f)) {
        long n, c, r;
        const char *msg = strstr(text, "msg=\"");
        if (msg && sscanf(msg + 5, "%ld requests were pending at the last stop: %ld continue "
                                   "once the cluster is known, %ld",
                          &n, &c, &r) == 3) {
            *pending += n;
            *continued += c;
            *restarted += r;
        }
    }
    if (f)
        fclose(f);
}

/* One infer run's answers: every image exactly once, nothing lost, statuses among `allowed`
 * (a bit per status) or rejected busy (the nodes' queues are shared by the runs, and a
 * request continued after a restart may meet its first run still in the pipeline);
 * counted into by_status. */
static void check_run(const run_t *r, json_t *sum, unsigned allowed, int *by_status)
{
    assert_int_equal(summary_int(sum, "lost"), 0);
    assert_int_equal(summary_int(sum, "duplicates"), 0);
    assert_int_equal(summary_int(sum, "answered"), r->count);
    for (int i = 0; i < r->count; i++) {
        const line_t *l = &r->answer[i];
        if (r->answers[i] != 1)
            fail_msg("image %d: %d answers", i, r->answers[i]);
        int busy = l->status == einet_Status_STATUS_REJECTED && !strncmp(l->reason, "busy", 4);
        if ((!(allowed & (1u << l->status)) && !busy) || strstr(l->reason, "lost"))
            fail_msg("image %d: %s (%s)", i, client_status_name(l->status), l->reason);
        /* Acknowledged, and answered under an id it was given. */
        assert_true(r->acked[i] > 0);
        by_status[l->status]++;
    }
}

/* Every id the coordinator ever handed out: known, answered (never left pending), and
 * recorded for the image of the run it was acknowledged to, with the answer infer printed
 * for it. Ids never acknowledged (recorded just before a kill; infer sent the image again)
 * must be answered too. */
static void check_ids(run_t *runs, int nruns, long *orphans, long *undelivered,
                      long *restarted, uint64_t *a_restarted, uint64_t *next_id)
{
    einet_StatsReply *st = calloc(1, sizeof *st);
    stats_query(st);
    *next_id = st->next_id;
    free(st);
    int *owner = calloc(*next_id, sizeof *owner), *image = calloc(*next_id, sizeof *image);
    for (int k = 0; k < nruns; k++)
        for (int i = 0; i < runs[k].count; i++) {
            uint64_t id = (uint64_t)runs[k].acked[i];
            assert_true(id > 0 && id < *next_id);
            if (owner[id])
                fail_msg("id %llu acknowledged twice (run %d image %d, run %d image %d)",
                         (unsigned long long)id, owner[id] - 1, image[id], k, i);
            owner[id] = k + 1;
            image[id] = i;
        }
    client_t *c = client_new(g_cluster.clients, &(ei_err_t){0});
    assert_non_null(c);
    einet_ResultReply rr;
    *orphans = *undelivered = *restarted = 0;
    for (uint64_t id = 1; id < *next_id; id++) {
        result_query(c, id, &rr);
        if (!rr.found)
            fail_msg("id %llu (of %llu handed out) is unknown to the coordinator",
                     (unsigned long long)id, (unsigned long long)*next_id);
        if (rr.pending)
            fail_msg("id %llu is still pending", (unsigned long long)id);
        *undelivered += rr.undelivered;
        const einet_Answer *a = &rr.answer;
        if (a->status == einet_Status_STATUS_RESTARTED) {
            ++*restarted;
            *a_restarted = id;
        }
        if (!owner[id]) {
            ++*orphans;
            continue;
        }
        const run_t *r = &runs[owner[id] - 1];
        int i = image[id];
        if ((int)a->client_id != i)
            fail_msg("id %llu was acknowledged for image %d, the journal has image %d",
                     (unsigned long long)id, i, (int)a->client_id);
        const line_t *l = &r->answer[i];
        if (l->id == (long long)id &&
            (l->status != (int)a->status || l->exit != (int)a->exit ||
             (a->exit && l->cls != (int)a->class_id)))
            fail_msg("id %llu: infer printed %s exit %d class %d, the journal has %s exit %u "
                     "class %u", (unsigned long long)id, client_status_name(l->status), l->exit,
                     l->cls, client_status_name(a->status), (unsigned)a->exit,
                     (unsigned)a->class_id);
        /* An answer infer printed under another id of this image: that id is the image's
         * earlier send, answered too (counted as an orphan would be). */
    }
    client_destroy(&c);
    free(owner);
    free(image);
}

static void test_restart(void **state)
{
    (void)state;
    enum { N = 4000, N2 = 2500 };
    run_t r, r2;
    /* The main stream (no deadline: what was pending at a kill is continued), and beside
     * it one with a 200 ms deadline, shorter than a restart takes: what it has pending at
     * a kill is answered `restarted` with the deepest result recorded. */
    run_start(&r, 0, N, "48", NULL, 0);
    run_start(&r2, 1, N2, "16", "200", 1);
    /* Kill points: after 600 answers; after 1800, during an edge-cloud cut; after 3000. */
    assert_true(run_read(&r, 600));
    kill_coordinator();
    usleep(500000); /* down longer than the 200 ms deadline: those requests cannot go on */
    assert_int_equal(itest_cluster_restart(&g_cluster), 0);
    assert_true(run_read(&r, 1800));
    int cut_from = r.n_answers;
    fault("--link", "edge-cloud", "--down", "60");
    /* Killed once the cut shows: the first `link` answer came. */
    int links = 0;
    while (!links) {
        assert_true(run_read(&r, r.n_answers + 1));
        links = r.answer[r.order[r.n_answers - 1]].status == einet_Status_STATUS_LINK;
    }
    kill_coordinator();
    start_coordinator();
    usleep(300000);
    fault("--link", "edge-cloud", "--clear", NULL);
    assert_true(run_read(&r, 2200));
    int cut_to = r.n_answers;
    assert_true(run_read(&r, 3000));
    kill_coordinator();
    assert_int_equal(itest_cluster_restart(&g_cluster), 0);
    json_t *sum, *sum2;
    assert_int_equal(run_finish(&r, &sum), 0);
    assert_int_equal(run_finish(&r2, &sum2), 0);

    /* Every image of both runs answered exactly once; nothing lost. */
    int by_status[8] = {0}, by_status2[8] = {0};
    unsigned S = 1u << einet_Status_STATUS_COMPLETE, L = 1u << einet_Status_STATUS_LINK;
    unsigned D = 1u << einet_Status_STATUS_DEADLINE, R = 1u << einet_Status_STATUS_RESTARTED;
    check_run(&r, sum, S | L, by_status);
    check_run(&r2, sum2, S | L | D | R, by_status2);
    /* `link` only while the link was cut (and the heartbeat timeout after it). */
    for (int k = 0; k < r.n_answers; k++) {
        const line_t *l = &r.answer[r.order[k]];
        if (l->status == einet_Status_STATUS_LINK && (k < cut_from || k > cut_to + 200))
            fail_msg("answer %d (image %d): link outside the cut: %s", k, l->index, l->reason);
    }
    run_t runs[2] = {r, r2};
    long orphans, undelivered, restarted_ids;
    uint64_t a_restarted = 0, next_id;
    check_ids(runs, 2, &orphans, &undelivered, &restarted_ids, &a_restarted, &next_id);
    /* The tool reads them too: one answered `restarted` after a restart. */
    long pending, continued, restarted;
    restarts_from_log(&pending, &continued, &restarted);
    if (!(pending > 0 && continued > 0 && restarted > 0))
        fail_msg("at the restarts: %ld pending, %ld continued, %ld restarted (deadline run: "
                 "%.0f s)", pending, continued, restarted,
                 json_real_value(json_object_get(sum2, "seconds")));
    assert_int_equal(restarted_ids, restarted);
    char idtext[32];
    snprintf(idtext, sizeof idtext, "%llu", (unsigned long long)a_restarted);
    assert_int_equal(itest_einet(g_out, sizeof g_out, g_err, sizeof g_err, 10000, "result",
                                 "--coordinator", g_cluster.clients, idtext, NULL),
                     0);
    json_t *o = json_loads(g_out, 0, NULL);
    assert_non_null(o);
    assert_true(json_is_false(json_object_get(o, "pending")));
    assert_string_equal(json_string_value(json_object_get(o, "status")), "restarted");
    json_decref(o);
    printf("  %d + %d requests (the second with a 200 ms deadline), 3 SIGKILLs of the "
           "coordinator (one during an edge-cloud cut): %llu ids handed out, every one answered "
           "exactly once and readable by id, none reused (%ld never acknowledged: infer sent "
           "those images again), %ld answers kept undelivered and collected by id; at the "
           "restarts %ld requests were pending: %ld continued, %ld answered 'restarted'\n",
           N, N2, (unsigned long long)(next_id - 1), orphans, undelivered, pending, continued,
           restarted);
    printf("  infer (no deadline): lost %ld, sent again %ld, asked for by id %ld; complete %d "
           "link %d rejected busy %d\n",
           summary_int(sum, "lost"), summary_int(sum, "resent"), summary_int(sum, "queried"),
           by_status[einet_Status_STATUS_COMPLETE], by_status[einet_Status_STATUS_LINK],
           by_status[einet_Status_STATUS_REJECTED]);
    printf("  infer (200 ms deadline): lost %ld, sent again %ld, asked for by id %ld; complete "
           "%d deadline %d restarted %d link %d rejected busy %d\n",
           summary_int(sum2, "lost"), summary_int(sum2, "resent"), summary_int(sum2, "queried"),
           by_status2[einet_Status_STATUS_COMPLETE], by_status2[einet_Status_STATUS_DEADLINE],
           by_status2[einet_Status_STATUS_RESTARTED], by_status2[einet_Status_STATUS_LINK],
           by_status2[einet_Status_STATUS_REJECTED]);
    json_decref(sum);
    json_decref(sum2);
    run_free(&r);
    run_free(&r2);
}

static void test_overload(void **state)
{
    (void)state;
    enum { CLIENTS = 8, PER = 500 };
    run_t *r = calloc(CLIENTS, sizeof *r);
    /* Half the clients set a deadline, half none (those would show a lost message as a
     * wait for the 30 s lost timeout). */
    for (int k = 0; k < CLIENTS; k++)
        run_start(&r[k], k, PER, "500", k % 2 ? "3000" : NULL, 1);
    int by_status[8] = {0}, busy = 0;
    for (int k = 0; k < CLIENTS; k++) {
        json_t *sum;
        assert_int_equal(run_finish(&r[k], &sum), 0);
        assert_int_equal(summary_int(sum, "lost"), 0);
        for (int i = 0; i < PER; i++) {
            const line_t *l = &r[k].answer[i];
            assert_int_equal(r[k].answers[i], 1);
            by_status[l->status]++;
            if (l->status == einet_Status_STATUS_REJECTED) {
                if (strncmp(l->reason, "busy", 4) != 0)
                    fail_msg("client %d image %d: rejected '%s', not busy", k, i, l->reason);
                busy++;
            } else if (l->status != einet_Status_STATUS_COMPLETE &&
                       !(l->status == einet_Status_STATUS_DEADLINE && k % 2)) {
                itest_cluster_dump_logs(&g_cluster);
                fail_msg("client %d image %d: %s (%s)", k, i, client_status_name(l->status),
                         l->reason);
            }
        }
        json_decref(sum);
        run_free(&r[k]);
    }
    einet_StatsReply *st = calloc(1, sizeof *st);
    stats_query(st);
    assert_int_equal(st->by_status[einet_Status_STATUS_LINK], 0);
    printf("  %d clients x %d requests in flight on a slowed cluster: complete %d, deadline %d, "
           "rejected busy %d; link 0, lost 0\n",
           CLIENTS, PER, by_status[einet_Status_STATUS_COMPLETE],
           by_status[einet_Status_STATUS_DEADLINE], busy);
    /* The cluster was overloaded: some requests were turned away, some were served. */
    assert_true(busy > 0);
    assert_true(by_status[einet_Status_STATUS_COMPLETE] > 0);
    free(st);
    free(r);
}

/* ---- a client that does not read ---- */

static void raw_send(void *sock, int i)
{
    uint8_t buf[WIRE_ENVELOPE_MAX];
    size_t len;
    ei_err_t err;
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_request_tag);
    env.seq = (uint64_t)i + 1;
    einet_Request *q = &env.body.request;
    q->client_id = (uint64_t)i;
    uint32_t shape[4] = {1, 1, 28, 28};
    wire_meta_set(&q->input, &q->has_input, shape, 4);
    q->has_label = true;
    q->label = g_test->labels[i];
    assert_int_equal(wire_encode(&env, 784 * sizeof(float), buf, sizeof buf, &len, &err), 0);
    /* Bounded (ZMQ_SNDTIMEO): a coordinator that stops taking requests fails the test. */
    if (zmq_send(sock, buf, len, ZMQ_SNDMORE) < 0 ||
        zmq_send(sock, g_test->images + (size_t)i * 784, 784 * sizeof(float), 0) < 0) {
        /* Whether the coordinator still serves other connections tells a stalled process
         * from a stalled connection. */
        einet_StatsReply *st = calloc(1, sizeof *st);
        double t0 = ei_now();
        stats_query(st);
        fprintf(stderr, "request %d stuck: the coordinator answers another connection in "
                        "%.3f s (%llu requests so far)\n",
                i, ei_now() - t0, (unsigned long long)st->requests);
        free(st);
        itest_cluster_dump_logs(&g_cluster);
        fail_msg("request %d not sent within 30 s: %s", i, zmq_strerror(zmq_errno()));
    }
}

static void test_slowclient(void **state)
{
    (void)state;
    enum { N = 3000 };
    einet_StatsReply *st = calloc(1, sizeof *st);
    stats_query(st);
    uint64_t lo = st->next_id, undelivered0 = st->undelivered;
    void *ctx = zmq_ctx_new(), *sock = zmq_socket(ctx, ZMQ_DEALER);
    int small = 16, buf = 4096, zero = 0;
    zmq_setsockopt(sock, ZMQ_RCVHWM, &small, sizeof small);
    zmq_setsockopt(sock, ZMQ_RCVBUF, &buf, sizeof buf);
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    int send_timeout = 30000;
    zmq_setsockopt(sock, ZMQ_SNDTIMEO, &send_timeout, sizeof send_timeout);
    assert_int_equal(zmq_connect(sock, g_cluster.clients), 0);
    fprintf(stderr, "slowclient: sending %d requests, then 10 s without reading\n", N);
    /* Paced (one every 2 ms), so the cluster can answer most of them; reads nothing
     * meanwhile nor for 10 s after. */
    for (int i = 0; i < N; i++) {
        raw_send(sock, i);
        usleep(2000);
    }
    sleep(10);
    int *got = calloc(N, sizeof *got), answers = 0, acks = 0;
    uint64_t undelivered = 0;
    zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
    /* Reads until every request is accounted for: its answer received here, or counted
     * undelivered by the coordinator (what ZeroMQ took is delivered on a live connection,
     * however slowly a full pipe resumes). */
    for (double until = ei_now() + 120; answers + (int)undelivered < N;) {
        if (ei_now() > until)
            fail_msg("after 120 s: %d answers received, %llu undelivered, of %d", answers,
                     (unsigned long long)undelivered, N);
        if (zmq_poll(&item, 1, 500) <= 0) {
            stats_query(st);
            undelivered = st->undelivered - undelivered0;
            continue;
        }
        zmq_msg_t m;
        zmq_msg_init(&m);
        assert_true(zmq_msg_recv(&m, sock, 0) >= 0);
        einet_Envelope env;
        ei_err_t err;
        assert_false(zmq_msg_more(&m));
        assert_int_equal(wire_decode(zmq_msg_data(&m), zmq_msg_size(&m), WIRE_NO_TENSOR, &env,
                                     &err),
                         0);
        zmq_msg_close(&m);
        if (env.which_body == einet_Envelope_accepted_tag) {
            acks++;
        } else {
            assert_int_equal(env.which_body, einet_Envelope_answer_tag);
            int i = (int)env.body.answer.client_id;
            assert_true(i >= 0 && i < N);
            assert_int_equal(got[i]++, 0);
            answers++;
        }
    }
    zmq_close(sock);
    zmq_ctx_term(ctx);
    fprintf(stderr, "slowclient: reading every answer by id\n");
    /* Every request's answer by id: the ids this client was given are lo..next_id-1. */
    stats_query(st);
    uint64_t hi = st->next_id;
    assert_int_equal(st->undelivered - undelivered0, undelivered);
    assert_int_equal(hi - lo, N);
    client_t *c = client_new(g_cluster.clients, &(ei_err_t){0});
    int *found = calloc(N, sizeof *found), complete = 0;
    assert_non_null(c);
    einet_ResultReply rr;
    for (uint64_t id = lo; id < hi; id++) {
        result_query(c, id, &rr);
        if (!rr.found || rr.pending)
            fail_msg("id %llu: %s", (unsigned long long)id, rr.found ? "pending" : "unknown");
        int i = (int)rr.answer.client_id;
        assert_true(i >= 0 && i < N);
        assert_int_equal(found[i]++, 0);
        assert_int_equal(rr.answer.label, g_test->labels[i]);
        complete += rr.answer.status == einet_Status_STATUS_COMPLETE;
        /* Marked undelivered exactly when the client did not get it. */
        assert_int_equal(rr.undelivered, !got[i]);
    }
    client_destroy(&c);
    assert_int_equal(answers + (int)undelivered, N);
    printf("  a client sent %d requests and read nothing for 10 s: it then received %d "
           "acknowledgements and %d answers; the coordinator kept %llu undelivered; all %d "
           "answers read by id afterwards (%d complete)\n",
           N, acks, answers, (unsigned long long)undelivered, N, complete);
    free(got);
    free(found);

    /* A client that goes away with requests in flight: their answers cannot be sent; they
     * are kept, counted undelivered, and read by id from another connection. */
    enum { GONE = 500 };
    stats_query(st);
    lo = st->next_id;
    undelivered0 = st->undelivered;
    ctx = zmq_ctx_new();
    sock = zmq_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_SNDTIMEO, &send_timeout, sizeof send_timeout);
    assert_int_equal(zmq_connect(sock, g_cluster.clients), 0);
    fprintf(stderr, "slowclient: a client sends %d requests and leaves\n", GONE);
    for (int i = 0; i < GONE; i++)
        raw_send(sock, i); /* a burst: the device queues what it can take */
    /* It leaves once the coordinator has taken every request: each acknowledged, or refused
     * at once (busy). Leaving with requests still in the socket's queue would test ZeroMQ's
     * linger, not the coordinator. The device is still computing most of them. */
    int taken = 0, acked = 0;
    item = (zmq_pollitem_t){sock, 0, ZMQ_POLLIN, 0};
    for (double until = ei_now() + 120; taken < GONE;) {
        if (ei_now() > until && (itest_cluster_dump_logs(&g_cluster), 1))
            fail_msg("after 120 s the coordinator had taken %d of %d requests", taken, GONE);
        if (zmq_poll(&item, 1, 500) <= 0)
            continue;
        zmq_msg_t m;
        zmq_msg_init(&m);
        assert_true(zmq_msg_recv(&m, sock, 0) >= 0);
        einet_Envelope env;
        ei_err_t err;
        assert_int_equal(wire_decode(zmq_msg_data(&m), zmq_msg_size(&m), WIRE_NO_TENSOR, &env,
                                     &err),
                         0);
        zmq_msg_close(&m);
        acked += env.which_body == einet_Envelope_accepted_tag;
        taken += env.which_body == einet_Envelope_accepted_tag ||
                 (env.which_body == einet_Envelope_answer_tag && env.body.answer.request_id == 0);
    }
    zmq_close(sock); /* gone, with most of its requests still being computed */
    zmq_ctx_term(ctx);
    stats_query(st);
    assert_int_equal(st->next_id, lo + (uint64_t)acked);
    c = client_new(g_cluster.clients, &(ei_err_t){0});
    int kept = 0, flagged = 0;
    for (uint64_t id = lo; id < lo + (uint64_t)acked; id++) {
        for (double until = ei_now() + 60;;) {
            result_query(c, id, &rr);
            assert_true(rr.found);
            if (!rr.pending)
                break;
            if (ei_now() > until)
                fail_msg("id %llu still pending after 60 s", (unsigned long long)id);
            usleep(20000);
        }
        kept++;
    }
    /* Whether an answer was delivered is known once its send was tried: read them again. */
    for (uint64_t id = lo; id < lo + (uint64_t)acked; id++) {
        result_query(c, id, &rr);
        assert_true(rr.found && !rr.pending);
        flagged += rr.undelivered;
    }
    client_destroy(&c);
    stats_query(st);
    undelivered = st->undelivered - undelivered0;
    assert_int_equal(st->next_id, lo + (uint64_t)acked);
    assert_int_equal((uint64_t)flagged, undelivered);
    printf("  a client sent %d requests and left: all %d answers kept and read by id, %llu of "
           "them counted undelivered (answers ZeroMQ had already taken for the closing "
           "connection are not)\n",
           GONE, kept, (unsigned long long)undelivered);
    /* The device works through its queue of max_inflight requests long after the client
     * left; answers made after ZeroMQ saw the connection close are refused. */
    assert_true(undelivered > 0);
    free(st);
}

/* ---- cases ---- */

/* Heartbeat timeouts no loaded machine misses (as the other cluster tests): only the cut
 * and the kills are failures here. */
static const itest_case_t cases[] = {
    {"restart", test_restart, {.heartbeat_ms = 50, .heartbeat_timeout_ms = 3000}},
    /* Every tier 20x slower than this machine: only overload is in play. */
    {"overload", test_overload,
     {.heartbeat_ms = 50, .heartbeat_timeout_ms = 3000, .slowdown = {0, 20, 20, 20}}},
    {"slowclient", test_slowclient,
     {.heartbeat_ms = 50, .heartbeat_timeout_ms = 3000, .coord_extra = "max_pending = 4000\n"}},
};

static const itest_suite_t suite = {
    .prog = "test_durable",
    .usage = "restart, overload, slowclient",
    .cases = cases,
    .n_cases = (int)(sizeof cases / sizeof cases[0]),
    .cluster = &g_cluster,
};

int main(int argc, char **argv)
{
    int picked[sizeof cases / sizeof cases[0]];
    int n = itest_pick_cases(&suite, argc, argv, picked);
    if (n == 0)
        return 2;
    char model_path[1024];
    ei_err_t err;
    if (!itest_have_programs() || !itest_model_path(model_path, sizeof model_path))
        return ITEST_SKIP;
    g_test = nn_dataset_load(NULL, "test", &err);
    if (!g_test) {
        fprintf(stderr, "test_durable: %s\n", err.msg);
        return 1;
    }
    int rc = itest_run_cases(&suite, picked, n, argv[1]);
    nn_dataset_destroy(&g_test);
    return rc;
}
