/* The engine's threads: a small pool that runs the items of one parallel loop at a time,
 * each item taken from a shared counter, so a thread that the machine's other load holds
 * back simply takes fewer items. The calling thread works too. A loop started from inside
 * a loop (a model's chunk running its layers), or while another caller's loop runs, runs
 * inline in the thread that started it, as thread 0 of the workspace it was given. */
#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "layer_internal.h"

/* One loop as a thread sees it (copied under the lock, so a helper that wakes late never
 * reads a later loop's fields half written). */
typedef struct loop {
    nn__item_fn fn;
    void *arg;
    int count, max; /* items; threads with tid >= max take none */
    uint32_t epoch; /* bumped for every loop */
} loop_t;

typedef struct pool {
    pthread_mutex_t mu;
    pthread_cond_t wake, done_cv;
    int threads; /* including the caller's */
    int started; /* helper threads running */
    int running; /* a loop is under way (another caller then runs its loop inline) */
    loop_t cur;
    /* The next item: (epoch << 32) | index. An item is claimed by compare-and-swap with
     * the claimer's epoch, so a helper holding an old loop can never take a new one's. */
    _Atomic uint64_t ticket;
    atomic_int done; /* items of the current loop finished */
} pool_t;

static pool_t pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                      PTHREAD_COND_INITIALIZER, 1, 0, 0, {NULL, NULL, 0, 0, 0}, 0, 0};

static _Thread_local int my_tid = -1; /* -1: not inside a loop */

/* Takes items of loop l until none is left. The caller of the loop waits for the items to
 * be done, not for the helpers: a helper the machine does not schedule in time simply
 * finds nothing left when it runs. */
static void run_items(const loop_t *l, int tid)
{
    if (tid >= l->max)
        return;
    int prev = my_tid;
    my_tid = tid;
    for (;;) {
        uint64_t t = atomic_load(&pool.ticket);
        if ((uint32_t)(t >> 32) != l->epoch || (int)(uint32_t)t >= l->count)
            break;
        if (!atomic_compare_exchange_weak(&pool.ticket, &t, t + 1))
            continue;
        l->fn(l->arg, (int)(uint32_t)t, tid);
        if (atomic_fetch_add(&pool.done, 1) + 1 == l->count) {
            pthread_mutex_lock(&pool.mu);
            pthread_cond_signal(&pool.done_cv);
            pthread_mutex_unlock(&pool.mu);
        }
    }
    my_tid = prev;
}

static void *helper(void *p)
{
    int tid = (int)(intptr_t)p;
    uint32_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&pool.mu);
        while (pool.cur.epoch == seen)
            pthread_cond_wait(&pool.wake, &pool.mu);
        loop_t l = pool.cur;
        seen = l.epoch;
        pthread_mutex_unlock(&pool.mu);
        run_items(&l, tid);
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

int nn__split_groups(int n, int gmax, int threads, int *per)
{
    int count = (n + gmax - 1) / gmax;
    if (threads > 1) {
        count = (count + threads - 1) / threads * threads;
        count = count < n ? count : n;
    }
    *per = (n + count - 1) / count;
    return (n + *per - 1) / *per;
}

void nn__parallel_for(int count, int max, nn__item_fn fn, void *arg)
{
    if (count <= 0)
        return;
    int inline_run = my_tid >= 0 || pool.threads == 1 || count == 1 || max <= 1;
    loop_t l;
    if (!inline_run) {
        pthread_mutex_lock(&pool.mu);
        inline_run = pool.running;
        if (!inline_run) {
            pool.running = 1;
            pool.cur = (loop_t){fn, arg, count, max, pool.cur.epoch + 1};
            if (pool.cur.epoch == 0) /* 0 is the helpers' "seen nothing yet" */
                pool.cur.epoch = 1;
            atomic_store(&pool.done, 0);
            atomic_store(&pool.ticket, (uint64_t)pool.cur.epoch << 32);
            l = pool.cur;
            pthread_cond_broadcast(&pool.wake);
        }
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
    run_items(&l, 0);
    pthread_mutex_lock(&pool.mu);
    while (atomic_load(&pool.done) < count)
        pthread_cond_wait(&pool.done_cv, &pool.mu);
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
