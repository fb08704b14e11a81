/* The slow-down's waits (see slow.h). */
#include "node/slow.h"

void slow_init(slow_t *s, double factor)
{
    s->factor = factor;
    s->owed_ns = 0;
    s->from_ns = s->want_ns = 0;
}

uint64_t slow_begin(slow_t *s, uint64_t took_ns, uint64_t now_ns)
{
    if (s->factor > 1.0)
        s->owed_ns += (s->factor - 1.0) * (double)took_ns;
    s->from_ns = now_ns;
    s->want_ns = s->owed_ns > 0 ? (uint64_t)(s->owed_ns + 0.5) : 0;
    return s->want_ns;
}

uint64_t slow_timer_ms(const slow_t *s)
{
    uint64_t ms = s->want_ns / 1000000u;
    return ms >= 2 ? ms - 1 : 0;
}

uint64_t slow_finish(slow_t *s, slow_clock_fn *clock, slow_sleep_fn *sleep, void *arg)
{
    uint64_t until = s->from_ns + s->want_ns, now = clock(arg);
    while (now < until) {
        if (sleep)
            sleep(until, arg);
        now = clock(arg);
    }
    s->owed_ns -= (double)(now - s->from_ns);
    if (s->owed_ns < -SLOW_CARRY_MAX_NS)
        s->owed_ns = -SLOW_CARRY_MAX_NS;
    s->want_ns = 0;
    return now;
}
