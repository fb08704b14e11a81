/* Error records, assert, RNG and clock shared by every module. */
#include "ei.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *ei_strerror(int code)
{
    switch (code) {
    case EI_OK:
        return "success";
#define XX(name, c, text) \
    case c:               \
        return text;
        EI_ERRNO_MAP(XX)
#undef XX
    }
    return "unknown error";
}

int ei_err_set(ei_err_t *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

int ei_err_prefix(ei_err_t *err, const char *fmt, ...)
{
    if (!err)
        return EI_E_INVAL;
    char head[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* Truncation of an over-long message is acceptable; the head comes first. */
    size_t hl = strlen(head);
    if (hl >= sizeof err->msg)
        hl = sizeof err->msg - 1;
    memcpy(err->msg, head, hl);
    size_t rest = sizeof err->msg - 1 - hl, ol = strnlen(old, sizeof old);
    if (ol > rest)
        ol = rest;
    memcpy(err->msg + hl, old, ol);
    err->msg[hl + ol] = '\0';
    return err->code;
}

void ei__assert_fail(const char *file, int line, const char *expr)
{
    fprintf(stderr, "einet: assertion failed at %s:%d: %s\n", file, line, expr);
    fflush(stderr);
    abort();
}

void *ei_calloc(size_t n, size_t size)
{
    if (n == 0 || size == 0)
        n = size = 1;
    return calloc(n, size);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void ei_rng_seed(ei_rng_t *rng, uint64_t seed)
{
    /* splitmix64 spreads one seed over the four words of state. */
    for (int i = 0; i < 4; i++) {
        uint64_t z = (seed += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        rng->s[i] = z ^ (z >> 31);
    }
}

uint64_t ei_rng_next(ei_rng_t *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double ei_rng_uniform(ei_rng_t *rng)
{
    return (double)(ei_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0);
}

double ei_rng_normal(ei_rng_t *rng)
{
    /* Box-Muller; the cosine half is enough for our uses. */
    double u1 = ei_rng_uniform(rng), u2 = ei_rng_uniform(rng);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint32_t ei_rng_below(ei_rng_t *rng, uint32_t n)
{
    return (uint32_t)(((ei_rng_next(rng) >> 32) * (uint64_t)n) >> 32);
}

void ei_rng_shuffle(ei_rng_t *rng, int *a, int n)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)ei_rng_below(rng, (uint32_t)i + 1);
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

double ei_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
