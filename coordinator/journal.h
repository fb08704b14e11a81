/* journal: the coordinator's durable state, in SQLite. It owns the database handle and its
 * prepared statements; the rest of the coordinator calls these functions and never SQL.
 *
 * What it keeps: every accepted request (its id, the client's tag and label, receipt time,
 * deadline, and its image while it is pending, so a restarted coordinator can run it
 * again), the deepest exit result recorded so far, and the one answer (status, reason,
 * exit, tier, class, confidence, probabilities, latency, and whether it reached the
 * client). Ids are handed out above every id ever recorded, so they are never reused.
 *
 * Writes are batched: the first write opens a transaction and journal_commit() ends it.
 * The coordinator commits once per turn of its event loop and only then sends the
 * acknowledgements and answers of that turn, so whatever a client was told is on disk.
 *
 * The database is in WAL mode with synchronous=NORMAL by default: a commit is a write to
 * the log without an fsync, which survives any crash of the process (SIGKILL included:
 * the data is in the kernel) and keeps the database consistent after a power loss, where
 * the last transactions may be lost. synchronous=FULL (the `sync` key) fsyncs every commit
 * and survives a power loss too, at a cost per batch. docs/protocol.md says what a client
 * may rely on. */
#ifndef COORDINATOR_JOURNAL_H
#define COORDINATOR_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/ei.h"
#include "proto/messages.pb.h"

typedef struct journal journal_t;

typedef struct journal_opts {
    const char *path;
    int sync_full;     /* synchronous=FULL instead of NORMAL */
    int keep_input;    /* store request images while pending */
    int64_t keep_rows; /* answered requests kept: ids within keep_rows of the newest */
    int64_t keep_us;   /* answered requests received longer ago than this are dropped */
} journal_opts_t;

/* Opens (creating when missing) the database at o->path. Caller owns the result; NULL with
 * err set (naming the file and SQLite's message) on failure. */
journal_t *journal_open(const journal_opts_t *o, ei_err_t *err);

/* Commits what is pending and closes. Accepts NULL; clears *self_p. */
void journal_close(journal_t **self_p);

/* The first id never handed out (>= 1): above every id recorded, across restarts. */
uint64_t journal_next_id(const journal_t *self);

/* A request accepted as id at wall-clock time recv_us, with its deadline (0: none), its
 * image input[0..numel) (stored only with keep_input; may be NULL) and the public key of
 * the client that sent it (owner; NULL or "" on a keyless cluster). In the current batch.
 * 0 or a negative code with err set. */
int journal_accept(journal_t *self, uint64_t id, uint64_t client_id, int has_label,
                   uint32_t label, uint64_t recv_us, uint32_t deadline_ms, const float *input,
                   size_t numel, const char *owner, ei_err_t *err) EI_CHECK;

/* 1 when request id was recorded as sent by owner (a client key may read only its own
 * results, also after a restart), 0 otherwise or on error. */
int journal_owner_is(journal_t *self, uint64_t id, const char *owner);

/* An exit result for a pending request; kept when deeper than the one recorded. */
int journal_exit(journal_t *self, uint64_t id, const einet_ExitResult *r, ei_err_t *err) EI_CHECK;

/* The one answer of request a->request_id (status, reason, result, latency), at wall-clock
 * time now_us; its image is dropped. */
int journal_answer(journal_t *self, const einet_Answer *a, uint64_t now_us, ei_err_t *err) EI_CHECK;

/* The answer of id could not be sent to its client: kept for `result`, marked undelivered. */
int journal_undelivered(journal_t *self, uint64_t id, ei_err_t *err) EI_CHECK;

/* Ends the current batch (COMMIT); nothing to do when no write came since the last one.
 * 0 or a negative code: the batch is then rolled back. */
int journal_commit(journal_t *self, ei_err_t *err) EI_CHECK;

/* 1 while a batch is open (writes not yet committed). */
int journal_dirty(const journal_t *self);

/* A request as recorded: what a restart needs to continue or answer it. */
typedef struct journal_row {
    uint64_t id, client_id;
    int has_label;
    uint32_t label;
    uint64_t recv_us; /* wall clock */
    uint32_t deadline_ms;
    const float *input; /* NULL when not kept; valid during the callback only */
    size_t input_numel;
    einet_Answer best; /* exit, tier, class_id, confidence, probs of the deepest result */
} journal_row_t;

typedef void journal_row_fn(const journal_row_t *row, void *arg);

/* Calls fn for every request accepted but not answered, in id order. The callback may
 * call journal_answer (its writes join the current batch). Returns the number of rows, or
 * a negative code with err set. */
int journal_each_pending(journal_t *self, journal_row_fn *fn, void *arg, ei_err_t *err) EI_CHECK;

/* Fills out for id from the database: found = 0 when unknown (or dropped by retention);
 * pending with the deepest result so far (status deadline, as reqs_lookup does); or the
 * answer, with undelivered set when it never reached the client. */
int journal_lookup(journal_t *self, uint64_t id, einet_ResultReply *out, ei_err_t *err) EI_CHECK;

/* Drops answered requests beyond the retention bounds, at wall-clock time now_us (in the
 * current batch). Returns the number of rows dropped, or a negative code. */
int journal_trim(journal_t *self, uint64_t now_us, ei_err_t *err) EI_CHECK;

/* Copies the write-ahead log into the database (SQLite's PASSIVE checkpoint), on a second
 * connection of its own: the one call that may run on another thread than the rest (one
 * at a time), so the coordinator's loop never waits for it. The main connection never
 * checkpoints by itself (wal_autocheckpoint is off); with synchronous=NORMAL this is the
 * only place that fsyncs. Returns the log frames still not copied (0: all), or a negative
 * code with err set. */
int journal_checkpoint(journal_t *self, ei_err_t *err) EI_CHECK;

/* Requests recorded (all rows), for logs and tests; negative on error. */
int64_t journal_count(journal_t *self);

#endif
