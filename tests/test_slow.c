/* node/slow.c: the slow-down's waits, driven by a test clock. The wait after a block that
 * took t is (s - 1) t to the clock's resolution, every time (not whole milliseconds now
 * and then), an overshoot is carried as a credit, and the totals match (s - 1) sum t. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "node/slow.h"

/* A clock that advances `step` ns per reading, plus `jump` once at reading `jump_at`. */
typedef struct fake_clock {
    uint64_t now, step, jump;
    int reads, jump_at;
} fake_clock_t;

static uint64_t fake_read(void *arg)
{
    fake_clock_t *c = arg;
    c->now += c->step;
    if (++c->reads == c->jump_at)
        c->now += c->jump;
    return c->now;
}

/* Block times of 37 us to 0.9 ms, slow-down 2: each wait is the block's time to within one
 * clock step (the clock is read until the end is reached, no more). */
static void test_each_wait_is_exact(void **state)
{
    (void)state;
    slow_t s;
    slow_init(&s, 2.0);
    fake_clock_t c = {1000000, 250, 0, 0, 0};
    uint64_t total_took = 0, total_waited = 0;
    for (int i = 0; i < 500; i++) {
        uint64_t took = 37000 + (uint64_t)(i * 7919 % 863000);
        uint64_t start = c.now;
        uint64_t want = slow_begin(&s, took, start);
        assert_true(want + 250 >= took && want <= took + 250);
        assert_int_equal(slow_timer_ms(&s), 0); /* under 2 ms: spun, never a timer */
        uint64_t end = slow_finish(&s, fake_read, NULL, &c);
        assert_true(end >= start + want);
        assert_true(end < start + want + 250 + 1);
        total_took += took;
        total_waited += end - start;
    }
    /* The carried overshoot keeps the total within one step of (s - 1) sum t. */
    assert_true(total_waited + 250 >= total_took && total_waited <= total_took + 250);
}

/* A slow-down of 1.5 and a factor of 1 (no wait at all). */
static void test_factors(void **state)
{
    (void)state;
    slow_t s;
    fake_clock_t c = {0, 100, 0, 0, 0};
    slow_init(&s, 1.5);
    uint64_t want = slow_begin(&s, 400000, c.now);
    assert_int_equal(want, 200000);
    uint64_t t0 = c.now, end = slow_finish(&s, fake_read, NULL, &c);
    assert_int_equal(end - t0, 200000);
    slow_init(&s, 1.0);
    assert_int_equal(slow_begin(&s, 400000, c.now), 0);
}

/* A preempted spin (the clock jumps 120 us past the end) is paid back by the next wait,
 * and a jump beyond the cap is carried only up to SLOW_CARRY_MAX_NS. */
static void test_overshoot_is_carried(void **state)
{
    (void)state;
    slow_t s;
    slow_init(&s, 2.0);
    fake_clock_t c = {0, 1000, 120000, 0, 3};
    uint64_t t0 = c.now;
    slow_begin(&s, 100000, t0);
    uint64_t end = slow_finish(&s, fake_read, NULL, &c);
    uint64_t over = end - t0 - 100000; /* the jump took it past the end */
    assert_true(over >= 20000);
    t0 = c.now;
    uint64_t want = slow_begin(&s, 300000, t0); /* owes 300 us less the overshoot */
    assert_true(want + 1 >= 300000 - over && want <= 300000 - over + 1);
    slow_finish(&s, fake_read, NULL, &c);
    c.jump_at = c.reads + 2;
    c.jump = 5000000; /* a 5 ms stall */
    t0 = c.now;
    slow_begin(&s, 10000, t0);
    slow_finish(&s, fake_read, NULL, &c);
    assert_true(s.owed_ns >= -SLOW_CARRY_MAX_NS - 1);
    /* The next waits are shortened by at most the cap. */
    want = slow_begin(&s, 1000000, c.now);
    assert_true(want + (uint64_t)SLOW_CARRY_MAX_NS + 1000 >= 1000000);
}

/* Waits of 2 ms and more leave whole milliseconds beyond the first to a timer; the rest is
 * spun to the end measured from the block's end, whatever the timer did. */
static void test_long_waits_use_the_timer(void **state)
{
    (void)state;
    slow_t s;
    slow_init(&s, 3.0);
    fake_clock_t c = {0, 500, 0, 0, 0};
    uint64_t t0 = c.now;
    uint64_t want = slow_begin(&s, 2600000, t0); /* 5.2 ms owed */
    assert_int_equal(want, 5200000);
    assert_int_equal(slow_timer_ms(&s), 4);
    c.now += 4700000; /* the timer fired 0.7 ms late */
    uint64_t end = slow_finish(&s, fake_read, NULL, &c);
    assert_true(end >= t0 + want && end <= t0 + want + 500);
}

/* A fake sleep: jumps the clock to the end it is asked for, plus a lateness `late` ns, and
 * counts the calls. */
typedef struct fake_sleeper {
    fake_clock_t clock;
    uint64_t late;
    int sleeps;
} fake_sleeper_t;

static uint64_t sleeper_read(void *arg)
{
    return fake_read(&((fake_sleeper_t *)arg)->clock);
}

static void sleeper_sleep(uint64_t until_ns, void *arg)
{
    fake_sleeper_t *f = arg;
    f->sleeps++;
    if (f->clock.now < until_ns + f->late)
        f->clock.now = until_ns + f->late;
}

/* With a sleep function the wait is one sleep and two clock readings, never a spin (an
 * emulated slow machine must not burn this one's CPU), a late wake-up is carried as a
 * credit, and over many waits the total stays (s - 1) sum t within the carry cap. */
static void test_waits_sleep_not_spin(void **state)
{
    (void)state;
    slow_t s;
    slow_init(&s, 4.0);
    fake_sleeper_t f = {{1000000, 100, 0, 0, 0}, 30000, 0};
    uint64_t total_took = 0, total_waited = 0;
    for (int i = 0; i < 300; i++) {
        uint64_t took = 20000 + (uint64_t)(i * 7919 % 400000);
        uint64_t start = f.clock.now;
        slow_begin(&s, took, start);
        int reads = f.clock.reads, sleeps = f.sleeps;
        uint64_t end = slow_finish(&s, sleeper_read, sleeper_sleep, &f);
        assert_true(f.clock.reads - reads <= 2);
        assert_true(f.sleeps - sleeps <= 1);
        total_took += took;
        total_waited += end - start;
    }
    /* 30 us late every time, carried: the total is 3 x sum t within one late wake-up. */
    assert_true(total_waited + 100 >= 3 * total_took);
    assert_true(total_waited <= 3 * total_took + 30000 + 200);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_wait_is_exact),
        cmocka_unit_test(test_factors),
        cmocka_unit_test(test_overshoot_is_carried),
        cmocka_unit_test(test_long_waits_use_the_timer),
        cmocka_unit_test(test_waits_sleep_not_spin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
