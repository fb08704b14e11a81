/* How many requests per second the coordinator's journal can record, by the way it is
 * written: what one request costs the coordinator's loop in SQLite (its acceptance with a
 * 28x28 image, four exit results, its answer) in batches of 64 per transaction (what the
 * coordinator does under load: one batch per turn of its loop), one transaction per
 * request (a lightly loaded coordinator), and one transaction per write (no batching), with
 * synchronous=NORMAL and FULL; a checkpoint every 1024 requests is included (the
 * coordinator runs it on a worker thread). Ratios are against the batched NORMAL figure of this run;
 * bench/bench_journal.sh sets them beside the cluster's answers/s with and without it.
 *
 *   bench_journal [REQUESTS]      (default 20000; the database lives in $TMPDIR) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/journal.h"

typedef struct mode {
    const char *name;
    int sync_full;
    int per_commit; /* requests per transaction; 0: every write its own transaction */
} mode_t_;

static int check(int rc, const ei_err_t *err)
{
    if (rc < 0) {
        fprintf(stderr, "bench_journal: %s\n", err->msg);
        exit(1);
    }
    return rc;
}

/* Records n requests (ids from first) as the coordinator would; returns requests/s. */
static double run(const mode_t_ *m, long n, const char *path)
{
    ei_err_t err;
    char wal[600], shm[600];
    snprintf(wal, sizeof wal, "%s-wal", path);
    snprintf(shm, sizeof shm, "%s-shm", path);
    unlink(path);
    unlink(wal);
    unlink(shm);
    journal_opts_t o = {path, m->sync_full, 1, 1000000000, (int64_t)1 << 60};
    journal_t *j = journal_open(&o, &err);
    if (!j)
        check(-1, &err);
    float image[784];
    for (int i = 0; i < 784; i++)
        image[i] = (float)i / 784.0f;
    einet_ExitResult x;
    memset(&x, 0, sizeof x);
    x.probs_count = 10;
    for (int i = 0; i < 10; i++)
        x.probs[i] = 0.1f;
    einet_Answer a;
    memset(&a, 0, sizeof a);
    double t0 = ei_now();
    for (long r = 0; r < n; r++) {
        uint64_t id = journal_next_id(j);
        check(journal_accept(j, id, (uint64_t)r, 1, (uint32_t)(r % 10), 1000000 + (uint64_t)r, 0,
                             image, 784, "", &err),
              &err);
        if (!m->per_commit)
            check(journal_commit(j, &err), &err);
        for (uint32_t k = 1; k <= 4; k++) {
            x.request_id = id;
            x.exit = 2 * k - 1;
            x.confidence = 0.5f + 0.1f * (float)k;
            check(journal_exit(j, id, &x, &err), &err);
            if (!m->per_commit)
                check(journal_commit(j, &err), &err);
        }
        a.request_id = id;
        a.client_id = (uint64_t)r;
        a.status = einet_Status_STATUS_COMPLETE;
        a.exit = 8;
        a.confidence = 0.9f;
        a.latency_us = 1234;
        check(journal_answer(j, &a, 2000000 + (uint64_t)r, &err), &err);
        if (!m->per_commit || (r + 1) % m->per_commit == 0)
            check(journal_commit(j, &err), &err);
        /* The coordinator checkpoints on a worker thread; here the cost is counted too. */
        if ((r + 1) % 1024 == 0)
            check(journal_checkpoint(j, &err), &err);
    }
    check(journal_commit(j, &err), &err);
    double secs = ei_now() - t0;
    if (journal_count(j) != n) {
        fprintf(stderr, "bench_journal: %lld rows, expected %ld\n",
                (long long)journal_count(j), n);
        exit(1);
    }
    journal_close(&j);
    unlink(path);
    unlink(wal);
    unlink(shm);
    return (double)n / secs;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 20000;
    if (n < 100) {
        fprintf(stderr, "usage: bench_journal [REQUESTS >= 100]\n");
        return 2;
    }
    const char *tmp = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/bench_journal.%d.db", tmp && *tmp ? tmp : "/tmp",
             (int)getpid());
    static const mode_t_ modes[] = {
        {"64 requests per transaction, synchronous=NORMAL (the coordinator under load)", 0, 64},
        {"1 request per transaction, synchronous=NORMAL", 0, 1},
        {"every write its own transaction, synchronous=NORMAL", 0, 0},
        {"64 requests per transaction, synchronous=FULL", 1, 64},
        {"1 request per transaction, synchronous=FULL", 1, 1},
    };
    double ref = 0;
    printf("journal: %ld requests, each = accept (28x28 image) + 4 exit results + answer\n", n);
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        /* The unbatched FULL modes fsync 6 or 1 times per request: fewer requests. */
        long k = modes[i].sync_full && modes[i].per_commit < 64 ? n / 20 : n;
        double rps = run(&modes[i], k, path);
        if (i == 0)
            ref = rps;
        printf("  %-78s %9.0f requests/s  %6.3fx\n", modes[i].name, rps, rps / ref);
    }
    return 0;
}
