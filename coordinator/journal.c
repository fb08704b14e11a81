/* The coordinator's SQLite journal (see journal.h). One table of requests keyed by id and a
 * one-row table of the next id; every statement is prepared once at open, every SQLite
 * return code is checked and reported with the database's own message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "coordinator/journal.h"

enum {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_ACCEPT,
    ST_EXIT,
    ST_ANSWER,
    ST_UNDELIVERED,
    ST_LOOKUP,
    ST_PENDING,
    ST_NEXT_SET,
    ST_TRIM_ROWS,
    ST_TRIM_AGE,
    ST_COUNT,
    ST_OWNER,
    ST_N
};

/* The columns every read returns, in this order (read_row below). */
#define COLS                                                                                    \
    "id, client_id, label, recv_us, deadline_ms, input, status, reason, exit, tier, class_id, " \
    "confidence, probs, latency_us, undelivered"

static const char *const sql[ST_N] = {
    [ST_BEGIN] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_ACCEPT] = "INSERT INTO requests (id, client_id, label, recv_us, deadline_ms, input, "
                  "owner) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [ST_EXIT] = "UPDATE requests SET exit = ?2, tier = ?3, class_id = ?4, confidence = ?5, "
                "probs = ?6 WHERE id = ?1 AND status = 0 AND exit < ?2",
    [ST_ANSWER] = "UPDATE requests SET status = ?2, reason = ?3, exit = ?4, tier = ?5, "
                  "class_id = ?6, confidence = ?7, probs = ?8, latency_us = ?9, "
                  "answered_us = ?10, input = NULL WHERE id = ?1 AND status = 0",
    [ST_UNDELIVERED] = "UPDATE requests SET undelivered = 1 WHERE id = ?1",
    [ST_LOOKUP] = "SELECT " COLS " FROM requests WHERE id = ?1",
    [ST_PENDING] = "SELECT " COLS " FROM requests WHERE status = 0 ORDER BY id",
    [ST_NEXT_SET] = "UPDATE meta SET next_id = ?1 WHERE next_id < ?1",
    [ST_TRIM_ROWS] = "DELETE FROM requests WHERE id <= ?1 AND status <> 0",
    [ST_TRIM_AGE] = "DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE "
                    "recv_us < ?1 AND status <> 0 ORDER BY id LIMIT 100000)",
    [ST_COUNT] = "SELECT count(*) FROM requests",
    [ST_OWNER] = "SELECT 1 FROM requests WHERE id = ?1 AND owner = ?2",
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta (next_id INTEGER NOT NULL);"
    "INSERT INTO meta (next_id) SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM meta);"
    "CREATE TABLE IF NOT EXISTS requests ("
    " id INTEGER PRIMARY KEY,"       /* the coordinator's request id */
    " client_id INTEGER NOT NULL,"   /* the client's tag */
    " label INTEGER,"                /* NULL: none sent */
    " recv_us INTEGER NOT NULL,"     /* wall clock at receipt, microseconds */
    " deadline_ms INTEGER NOT NULL," /* 0: none */
    " input BLOB,"                   /* float32 image while pending (keep_input) */
    " status INTEGER NOT NULL DEFAULT 0," /* einet.Status; 0: pending */
    " reason TEXT,"
    " exit INTEGER NOT NULL DEFAULT 0," /* the deepest result so far, then the answer's */
    " tier INTEGER NOT NULL DEFAULT 0,"
    " class_id INTEGER NOT NULL DEFAULT 0,"
    " confidence REAL NOT NULL DEFAULT 0,"
    " probs BLOB,"
    " latency_us INTEGER NOT NULL DEFAULT 0,"
    " answered_us INTEGER,"
    " undelivered INTEGER NOT NULL DEFAULT 0,"
    " owner TEXT);"                  /* the submitting client's public key ("": keyless) */
    "CREATE INDEX IF NOT EXISTS requests_pending ON requests (id) WHERE status = 0;";

struct journal {
    sqlite3 *db;
    sqlite3 *ckpt_db; /* checkpoints only (journal_checkpoint), possibly on another thread */
    sqlite3_stmt *st[ST_N];
    char path[512];
    int in_tx;
    int keep_input;
    int64_t keep_rows, keep_us;
    uint64_t next_id;     /* above every id recorded */
    uint64_t next_stored; /* meta.next_id as last written */
};

static int fail(journal_t *j, ei_err_t *err, const char *what)
{
    return ei_err_set(err, EI_E_IO, "journal %s: %s: %s", j->path, what,
                      j->db ? sqlite3_errmsg(j->db) : "cannot allocate a handle");
}

static int exec(journal_t *j, const char *text, ei_err_t *err)
{
    char *msg = NULL;
    if (sqlite3_exec(j->db, text, NULL, NULL, &msg) == SQLITE_OK)
        return 0;
    int rc = ei_err_set(err, EI_E_IO, "journal %s: %.60s: %s", j->path, text,
                        msg ? msg : sqlite3_errmsg(j->db));
    sqlite3_free(msg);
    return rc;
}

/* Runs a prepared statement that returns no rows, then resets it. */
static int run(journal_t *j, int which, ei_err_t *err)
{
    sqlite3_stmt *s = j->st[which];
    int rc = sqlite3_step(s);
    int ok = rc == SQLITE_DONE;
    if (!ok)
        fail(j, err, sql[which]);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return ok ? 0 : err->code;
}

static int begin(journal_t *j, ei_err_t *err)
{
    if (j->in_tx)
        return 0;
    int rc = run(j, ST_BEGIN, err);
    j->in_tx = rc == 0;
    return rc;
}

static int64_t scalar(journal_t *j, const char *text)
{
    sqlite3_stmt *s;
    int64_t v = -1;
    if (sqlite3_prepare_v2(j->db, text, -1, &s, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(s) == SQLITE_ROW)
        v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    return v;
}

journal_t *journal_open(const journal_opts_t *o, ei_err_t *err)
{
    journal_t *j = calloc(1, sizeof *j);
    if (!j) {
        ei_err_set(err, EI_E_NOMEM, "out of memory");
        return NULL;
    }
    snprintf(j->path, sizeof j->path, "%s", o->path);
    j->keep_input = o->keep_input;
    j->keep_rows = o->keep_rows;
    j->keep_us = o->keep_us;
    char pragmas[160];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA busy_timeout=5000; "
             "PRAGMA wal_autocheckpoint=0;",
             o->sync_full ? "FULL" : "NORMAL");
    if (sqlite3_open_v2(o->path, &j->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        fail(j, err, "cannot open");
        goto fail;
    }
    if (exec(j, pragmas, err) < 0 || exec(j, schema, err) < 0)
        goto fail;
    if (sqlite3_open_v2(o->path, &j->ckpt_db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK ||
        sqlite3_busy_timeout(j->ckpt_db, 5000) != SQLITE_OK) {
        ei_err_set(err, EI_E_IO, "journal %s: second connection: %s", j->path,
                   j->ckpt_db ? sqlite3_errmsg(j->ckpt_db) : "cannot allocate a handle");
        goto fail;
    }
    for (int i = 0; i < ST_N; i++)
        if (sqlite3_prepare_v2(j->db, sql[i], -1, &j->st[i], NULL) != SQLITE_OK) {
            fail(j, err, sql[i]);
            goto fail;
        }
    int64_t stored = scalar(j, "SELECT next_id FROM meta");
    int64_t top = scalar(j, "SELECT coalesce(max(id), 0) + 1 FROM requests");
    if (stored < 1 || top < 1) {
        fail(j, err, "reading the next id");
        goto fail;
    }
    j->next_stored = (uint64_t)stored;
    j->next_id = (uint64_t)(stored > top ? stored : top);
    return j;
fail:
    journal_close(&j);
    return NULL;
}

void journal_close(journal_t **self_p)
{
    journal_t *j = self_p ? *self_p : NULL;
    if (!j)
        return;
    if (j->in_tx) {
        ei_err_t err;
        if (journal_commit(j, &err) < 0)
            ei_log(EI_LOG_ERROR, "%s", err.msg);
    }
    for (int i = 0; i < ST_N; i++)
        sqlite3_finalize(j->st[i]);
    sqlite3_close(j->ckpt_db);
    sqlite3_close(j->db);
    free(j);
    *self_p = NULL;
}

uint64_t journal_next_id(const journal_t *self)
{
    return self->next_id;
}

int journal_dirty(const journal_t *self)
{
    return self->in_tx;
}

static int bind_probs(sqlite3_stmt *s, int col, const float *p, pb_size_t n)
{
    if (n == 0)
        return sqlite3_bind_null(s, col);
    return sqlite3_bind_blob(s, col, p, (int)(n * sizeof(float)), SQLITE_TRANSIENT);
}

int journal_accept(journal_t *j, uint64_t id, uint64_t client_id, int has_label, uint32_t label,
                   uint64_t recv_us, uint32_t deadline_ms, const float *input, size_t numel,
                   const char *owner, ei_err_t *err)
{
    int rc = begin(j, err);
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = j->st[ST_ACCEPT];
    sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)client_id);
    if (has_label)
        sqlite3_bind_int64(s, 3, label);
    sqlite3_bind_int64(s, 4, (sqlite3_int64)recv_us);
    sqlite3_bind_int64(s, 5, deadline_ms);
    if (j->keep_input && input && numel)
        sqlite3_bind_blob(s, 6, input, (int)(numel * sizeof(float)), SQLITE_STATIC);
    sqlite3_bind_text(s, 7, owner ? owner : "", -1, SQLITE_STATIC);
    rc = run(j, ST_ACCEPT, err);
    if (rc == 0 && id >= j->next_id)
        j->next_id = id + 1;
    return rc;
}

int journal_exit(journal_t *j, uint64_t id, const einet_ExitResult *r, ei_err_t *err)
{
    int rc = begin(j, err);
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = j->st[ST_EXIT];
    sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
    sqlite3_bind_int64(s, 2, r->exit);
    sqlite3_bind_int64(s, 3, r->tier);
    sqlite3_bind_int64(s, 4, r->class_id);
    sqlite3_bind_double(s, 5, r->confidence);
    bind_probs(s, 6, r->probs, r->probs_count);
    return run(j, ST_EXIT, err);
}

int journal_answer(journal_t *j, const einet_Answer *a, uint64_t now_us, ei_err_t *err)
{
    int rc = begin(j, err);
    if (rc < 0)
        return rc;
    sqlite3_stmt *s = j->st[ST_ANSWER];
    sqlite3_bind_int64(s, 1, (sqlite3_int64)a->request_id);
    sqlite3_bind_int64(s, 2, a->status);
    sqlite3_bind_text(s, 3, a->reason, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, a->exit);
    sqlite3_bind_int64(s, 5, a->tier);
    sqlite3_bind_int64(s, 6, a->class_id);
    sqlite3_bind_double(s, 7, a->confidence);
    bind_probs(s, 8, a->probs, a->probs_count);
    sqlite3_bind_int64(s, 9, (sqlite3_int64)a->latency_us);
    sqlite3_bind_int64(s, 10, (sqlite3_int64)now_us);
    return run(j, ST_ANSWER, err);
}

int journal_undelivered(journal_t *j, uint64_t id, ei_err_t *err)
{
    int rc = begin(j, err);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(j->st[ST_UNDELIVERED], 1, (sqlite3_int64)id);
    return run(j, ST_UNDELIVERED, err);
}

int journal_commit(journal_t *j, ei_err_t *err)
{
    if (!j->in_tx)
        return 0;
    int rc = 0;
    if (j->next_id > j->next_stored) {
        sqlite3_bind_int64(j->st[ST_NEXT_SET], 1, (sqlite3_int64)j->next_id);
        rc = run(j, ST_NEXT_SET, err);
    }
    if (rc == 0)
        rc = run(j, ST_COMMIT, err);
    if (rc < 0) {
        ei_err_t ignored;
        (void)run(j, ST_ROLLBACK, &ignored);
    } else {
        j->next_stored = j->next_id;
    }
    j->in_tx = 0;
    return rc;
}

/* One row of a COLS query into r (input pointing into SQLite's buffer) and its status. */
static int read_row(sqlite3_stmt *s, journal_row_t *r, int *status, int *undelivered,
                    char *reason, size_t cap)
{
    memset(r, 0, sizeof *r);
    r->id = (uint64_t)sqlite3_column_int64(s, 0);
    r->client_id = (uint64_t)sqlite3_column_int64(s, 1);
    r->has_label = sqlite3_column_type(s, 2) != SQLITE_NULL;
    r->label = (uint32_t)sqlite3_column_int64(s, 2);
    r->recv_us = (uint64_t)sqlite3_column_int64(s, 3);
    r->deadline_ms = (uint32_t)sqlite3_column_int64(s, 4);
    r->input = sqlite3_column_blob(s, 5);
    r->input_numel = (size_t)sqlite3_column_bytes(s, 5) / sizeof(float);
    if (!r->input_numel)
        r->input = NULL;
    *status = (int)sqlite3_column_int64(s, 6);
    const unsigned char *why = sqlite3_column_text(s, 7);
    snprintf(reason, cap, "%s", why ? (const char *)why : "");
    einet_Answer *b = &r->best;
    b->request_id = r->id;
    b->client_id = r->client_id;
    b->exit = (uint32_t)sqlite3_column_int64(s, 8);
    b->tier = (einet_Tier)sqlite3_column_int64(s, 9);
    b->class_id = (uint32_t)sqlite3_column_int64(s, 10);
    b->confidence = (float)sqlite3_column_double(s, 11);
    size_t np = (size_t)sqlite3_column_bytes(s, 12) / sizeof(float);
    const void *probs = sqlite3_column_blob(s, 12);
    if (probs && np <= sizeof b->probs / sizeof b->probs[0]) {
        memcpy(b->probs, probs, np * sizeof(float));
        b->probs_count = (pb_size_t)np;
    }
    b->latency_us = (uint64_t)sqlite3_column_int64(s, 13);
    b->has_label = r->has_label;
    b->label = r->label;
    *undelivered = (int)sqlite3_column_int64(s, 14);
    return 0;
}

/* A pending row copied out of SQLite's buffers, so the callbacks may write. */
typedef struct held_row {
    journal_row_t r;
    float *input;
} held_row_t;

static void free_held(held_row_t *h, int n)
{
    for (int i = 0; i < n; i++)
        free(h[i].input);
    free(h);
}

int journal_each_pending(journal_t *j, journal_row_fn *fn, void *arg, ei_err_t *err)
{
    sqlite3_stmt *s = j->st[ST_PENDING];
    held_row_t *held = NULL;
    int n = 0, cap = 0, step, rc = 0;
    while ((step = sqlite3_step(s)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            held_row_t *h = realloc(held, (size_t)cap * sizeof *h);
            if (!h) {
                rc = ei_err_set(err, EI_E_NOMEM, "journal %s: out of memory", j->path);
                break;
            }
            held = h;
        }
        held_row_t *h = &held[n];
        int status, undelivered;
        char reason[8];
        read_row(s, &h->r, &status, &undelivered, reason, sizeof reason);
        h->input = NULL;
        if (h->r.input) {
            h->input = malloc(h->r.input_numel * sizeof(float));
            if (!h->input) {
                rc = ei_err_set(err, EI_E_NOMEM, "journal %s: out of memory", j->path);
                break;
            }
            memcpy(h->input, h->r.input, h->r.input_numel * sizeof(float));
        }
        h->r.input = h->input;
        n++;
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = fail(j, err, sql[ST_PENDING]);
    sqlite3_reset(s);
    for (int i = 0; rc == 0 && i < n; i++)
        fn(&held[i].r, arg);
    free_held(held, n);
    return rc < 0 ? rc : n;
}

int journal_lookup(journal_t *j, uint64_t id, einet_ResultReply *out, ei_err_t *err)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *s = j->st[ST_LOOKUP];
    sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
    int step = sqlite3_step(s);
    if (step == SQLITE_ROW) {
        journal_row_t r;
        int status, undelivered;
        read_row(s, &r, &status, &undelivered, out->answer.reason, sizeof out->answer.reason);
        einet_Answer reason_kept = out->answer;
        out->found = out->has_answer = true;
        out->answer = r.best;
        memcpy(out->answer.reason, reason_kept.reason, sizeof out->answer.reason);
        out->answer.status = (einet_Status)status;
        out->undelivered = undelivered != 0;
        if (status == 0) {
            out->pending = true;
            out->answer.status = einet_Status_STATUS_DEADLINE;
            snprintf(out->answer.reason, sizeof out->answer.reason,
                     "pending: the deepest result so far");
        }
    }
    if (step != SQLITE_ROW && step != SQLITE_DONE)
        fail(j, err, sql[ST_LOOKUP]);
    sqlite3_reset(s);
    return step == SQLITE_ROW || step == SQLITE_DONE ? 0 : err->code;
}

int journal_trim(journal_t *j, uint64_t now_us, ei_err_t *err)
{
    int rc = begin(j, err);
    if (rc < 0)
        return rc;
    int n = 0;
    if ((int64_t)j->next_id - 1 > j->keep_rows) {
        sqlite3_bind_int64(j->st[ST_TRIM_ROWS], 1, (sqlite3_int64)j->next_id - 1 - j->keep_rows);
        if ((rc = run(j, ST_TRIM_ROWS, err)) < 0)
            return rc;
        n += sqlite3_changes(j->db);
    }
    if ((int64_t)now_us > j->keep_us) {
        sqlite3_bind_int64(j->st[ST_TRIM_AGE], 1, (sqlite3_int64)now_us - j->keep_us);
        if ((rc = run(j, ST_TRIM_AGE, err)) < 0)
            return rc;
        n += sqlite3_changes(j->db);
    }
    return n;
}

int64_t journal_count(journal_t *j)
{
    sqlite3_stmt *s = j->st[ST_COUNT];
    int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
    sqlite3_reset(s);
    return v;
}

int journal_checkpoint(journal_t *j, ei_err_t *err)
{
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(j->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
        return ei_err_set(err, EI_E_IO, "journal %s: checkpoint: %s", j->path,
                          sqlite3_errmsg(j->ckpt_db));
    return log > done ? log - done : 0;
}

int journal_owner_is(journal_t *j, uint64_t id, const char *owner)
{
    sqlite3_stmt *s = j->st[ST_OWNER];
    sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
    sqlite3_bind_text(s, 2, owner ? owner : "", -1, SQLITE_STATIC);
    int yes = sqlite3_step(s) == SQLITE_ROW;
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return yes;
}
