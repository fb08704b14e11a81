/* The engine's threads: a small pool that runs the items of one parallel loop at a time,
 * each item taken from a shared counter, so a thread that the machine's other load holds
 * back simply takes fewer items. The calling thread works too. A loop started from inside
 * a loop (a model's chunk running its layers), or while another caller's loop runs, runs
 * inline in the thread that started it, as thread 0 of the workspace it was given. */
#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "layer_internal.h"

typedef struct pool {
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    int threads;   /* including the caller's */
    int started;   /* helper threads running */
    long epoch;    /* bumped for every loop */
    int busy;      /* helpers still in the current loop */
    int running;   /* a loop is under way (another caller then runs its loop inline) */
    /* the current loop */
    nn__item_fn fn;
    void *arg;
    int count, max; /* items; threads with tid >= max take none */
    atomic_int next;
} pool_t;

static pool_t pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                      PTHREAD_COND_INITIALIZER, 1, 0, 0, 0, 0, NULL, NULL, 0, 0, 0};

static _Thread_local int my_tid = -1; /* -1: not inside a loop */

static void run_items(int tid)
{
    int prev = my_tid;
    if (tid >= pool.max)
        return;
    my_tid = tid;
    for (int i; (i = atomic_fetch_add(&pool.next, 1)) < pool.count;)
        pool.fn(pool.arg, i, tid);
    my_tid = prev;
}

static void *helper(void *p)
{
    int tid = (int)(intptr_t)p;
    long seen = 0;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (pool.epoch == seen)
            pthread_cond_wait(&pool.wake, &pool.mu);
        seen = pool.epoch;
        if (tid >= pool.threads) /* not wanted in this loop */
            continue;
        pthread_mutex_unlock(&pool.mu);
        run_items(tid);
        pthread_mutex_lock(&pool.mu);
        if (--pool.busy == 0)
            pthread_cond_signal(&pool.done);
    }
    return NULL;
}

int nn_set_threads(int n)
{
    if (n < 1 || n > NN_MAX_THREADS)
        return EI_E_INVAL;
    pthread_mutex_lock(&pool.mu);
    int rc = 0;
    while (pool.started < n - 1 && !rc) {
        pthread_t t;
        rc = pthread_create(&t, NULL, helper, (void *)(intptr_t)(pool.started + 1));
        if (!rc) {
            pthread_detach(t);
            pool.started++;
        }
    }
    pool.threads = rc ? pool.started + 1 : n;
    pthread_mutex_unlock(&pool.mu);
    /* Every product runs inside one of the engine's threads: OpenBLAS's own would only
     * compete with them. */
    openblas_set_num_threads(1);
    return rc ? EI_E_NOMEM : 0;
}

int nn_threads(void)
{
    return pool.threads;
}

int nn__loop_threads(int max)
{
    if (my_tid >= 0)
        return 1;
    return pool.threads < max ? pool.threads : max;
}

void nn__parallel_for(int count, int max, nn__item_fn fn, void *arg)
{
    if (count <= 0)
        return;
    int inline_run = my_tid >= 0 || pool.threads == 1 || count == 1 || max <= 1;
    if (!inline_run) {
        pthread_mutex_lock(&pool.mu);
        inline_run = pool.running;
        pool.running = 1;
        if (inline_run)
            pthread_mutex_unlock(&pool.mu);
    }
    if (inline_run) { /* nested, busy with another caller's loop, or nothing to share */
        int prev = my_tid;
        my_tid = prev >= 0 ? prev : 0;
        for (int i = 0; i < count; i++)
            fn(arg, i, 0); /* one thread: the first share of whatever workspace it was given */
        my_tid = prev;
        return;
    }
    pool.fn = fn;
    pool.arg = arg;
    pool.count = count;
    pool.max = max;
    atomic_store(&pool.next, 0);
    pool.busy = pool.threads - 1;
    pool.epoch++;
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);
    run_items(0);
    pthread_mutex_lock(&pool.mu);
    while (pool.busy > 0)
        pthread_cond_wait(&pool.done, &pool.mu);
    pool.running = 0;
    pthread_mutex_unlock(&pool.mu);
}

typedef struct range_job {
    size_t total, step;
    nn__range_fn fn;
    void *arg;
} range_job_t;

static void range_item(void *arg, int item, int tid)
{
    (void)tid;
    const range_job_t *j = arg;
    size_t lo = (size_t)item * j->step, hi = lo + j->step < j->total ? lo + j->step : j->total;
    j->fn(j->arg, lo, hi);
}

void nn__parallel_range(size_t total, int max, nn__range_fn fn, void *arg)
{
    int t = nn__loop_threads(max);
    if (t <= 1 || total < 2) {
        if (total)
            fn(arg, 0, total);
        return;
    }
    size_t pieces = (size_t)(2 * t) < total ? (size_t)(2 * t) : total;
    range_job_t j = {total, (total + pieces - 1) / pieces, fn, arg};
    nn__parallel_for((int)((total + j.step - 1) / j.step), t, range_item, &j);
}
