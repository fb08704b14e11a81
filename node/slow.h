/* slow: the slow-down that makes a node emulate a machine `factor` times slower. After a
 * block that took t the node owes a wait of (factor - 1) t, measured from the block's end,
 * so the block's results leave at factor x t, as the planner's ET-profile (which the node
 * reports as factor x t) assumes. The wait is served to the microsecond: whole
 * milliseconds beyond the first on a libuv timer (the loop serves heartbeats meanwhile),
 * the rest by sleeping to the end on the monotonic clock (clock_nanosleep with an absolute
 * end, the caller's sleep function), never by spinning: an emulated slow machine must not
 * burn the CPU that the other processes on this one need, or a fleet of them emulates
 * machines slower than configured. A wait that ends late (the sleep woke late, the timer
 * fired late) carries the excess, up to SLOW_CARRY_MAX_NS, as a credit against the next
 * wait, so the mean stays exact. Pure arithmetic and a wait on a clock the caller passes:
 * tests drive it with their own clock. */
#ifndef NODE_SLOW_H
#define NODE_SLOW_H

#include <stdint.h>

/* The most an overshoot is carried to later waits (ns). */
#define SLOW_CARRY_MAX_NS 2000000.0

/* A monotonic clock in ns (uv_hrtime in the node; a test's own clock in tests). */
typedef uint64_t slow_clock_fn(void *arg);
/* Sleeps until the clock reads until_ns (it may wake early or late: the clock decides). */
typedef void slow_sleep_fn(uint64_t until_ns, void *arg);

typedef struct slow {
    double factor;
    double owed_ns;  /* still owed; negative: a credit from an earlier overshoot */
    uint64_t from_ns, want_ns; /* the wait under way: since when, how long */
} slow_t;

void slow_init(slow_t *s, double factor);

/* A block that took took_ns ended at now_ns: starts its wait and returns how long it is
 * (ns; 0: nothing owed, go on at once). */
uint64_t slow_begin(slow_t *s, uint64_t took_ns, uint64_t now_ns);

/* Of the wait under way, the whole milliseconds to leave to a timer: those beyond the
 * first (a libuv timer may fire up to a millisecond late), 0 for a wait under 2 ms. */
uint64_t slow_timer_ms(const slow_t *s);

/* Waits until the wait under way is over, and settles it (an overshoot becomes a credit):
 * sleeps through sleep (NULL: spins on the clock), reading the clock after each wake-up.
 * Returns the clock reading at the end. */
uint64_t slow_finish(slow_t *s, slow_clock_fn *clock, slow_sleep_fn *sleep, void *arg);

#endif
