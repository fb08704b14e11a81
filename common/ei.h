/* Shared foundation of every einet module: error codes and the error record that carries
 * a message a person can read, the assert macro for bugs, and a small seeded RNG. */
#ifndef EI_H
#define EI_H

#include <stddef.h>
#include <stdint.h>

/* Error codes: 0 is success, every failure is one negative code from this table
 * (as libuv's UV_ERRNO_MAP). ei_strerror() gives the short text. */
#define EI_ERRNO_MAP(XX)                                   \
    XX(NOMEM, -1, "out of memory")                         \
    XX(IO, -2, "input/output error")                       \
    XX(FORMAT, -3, "malformed input")                      \
    XX(SHAPE, -4, "shape mismatch")                        \
    XX(INVAL, -5, "invalid argument")                      \
    XX(NOTFOUND, -6, "not found")                          \
    XX(NONFINITE, -7, "non-finite value")                  \
    XX(VERSION, -8, "unsupported version")                 \
    XX(RANGE, -9, "value out of range")                    \
    XX(TIMEOUT, -10, "timed out")                          \
    XX(PEER, -11, "peer failure")                          \
    XX(UNSUPPORTED, -12, "unsupported")                    \
    XX(DENIED, -13, "permission denied")                   \
    XX(BUSY, -14, "busy: a queue is full")

enum {
    EI_OK = 0,
#define XX(name, code, text) EI_E_##name = (code),
    EI_ERRNO_MAP(XX)
#undef XX
};

#define EI_CHECK __attribute__((warn_unused_result))
#define EI_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* An error record: the code and a message naming what was wrong and where.
 * Functions that can fail for outside reasons take an ei_err_t * (which may be NULL). */
typedef struct ei_err {
    int code;
    char msg[512];
} ei_err_t;

const char *ei_strerror(int code);

/* Sets *err (if not NULL) to code and the formatted message; returns code, so callers
 * can write `return ei_err_set(err, EI_E_FORMAT, "...")`. */
int ei_err_set(ei_err_t *err, int code, const char *fmt, ...) EI_PRINTF(3, 4);

/* Prefixes the message already in *err with more context ("model.st: " + msg). */
int ei_err_prefix(ei_err_t *err, const char *fmt, ...) EI_PRINTF(2, 3);

/* Bugs, never bad input: abort with file and line (as GGML_ASSERT). */
#define EI_ASSERT(x)                                          \
    do {                                                      \
        if (!(x))                                             \
            ei__assert_fail(__FILE__, __LINE__, #x);          \
    } while (0)
void ei__assert_fail(const char *file, int line, const char *expr) __attribute__((noreturn));

/* Allocation that aborts on failure is never used on outside input sizes; these return
 * NULL and the caller reports EI_E_NOMEM. */
void *ei_calloc(size_t n, size_t size);

/* A seeded pseudo-random generator (xoshiro256**): training, shuffling and tests
 * are reproducible from one 64-bit seed. */
typedef struct ei_rng {
    uint64_t s[4];
} ei_rng_t;

void ei_rng_seed(ei_rng_t *rng, uint64_t seed);
uint64_t ei_rng_next(ei_rng_t *rng);
double ei_rng_uniform(ei_rng_t *rng);              /* in [0, 1) */
double ei_rng_normal(ei_rng_t *rng);               /* standard normal */
uint32_t ei_rng_below(ei_rng_t *rng, uint32_t n);  /* in [0, n) */
void ei_rng_shuffle(ei_rng_t *rng, int *a, int n); /* Fisher-Yates */

/* Monotonic wall time in seconds. */
double ei_now(void);

/* Logging: the one function every einet program logs through. Each line goes to stderr in
 * one write, as text (logfmt: `time=2026-11-29T05:08:17.123456Z level=info prog=einet-coord
 * msg="..."`) or as a JSON object (`{"time":...,"level":...,"prog":...,"msg":...}`); the
 * time is RFC 3339 in UTC with microseconds. Lines below the set level are dropped. */
enum { EI_LOG_DEBUG = 0, EI_LOG_INFO = 1, EI_LOG_WARN = 2, EI_LOG_ERROR = 3 };
enum { EI_LOG_TEXT = 0, EI_LOG_JSON = 1 };

/* Sets the program name, the lowest level written and the format (defaults: "einet",
 * EI_LOG_INFO, EI_LOG_TEXT). Call before other threads log. */
void ei_log_setup(const char *prog, int level, int format);
void ei_log(int level, const char *fmt, ...) EI_PRINTF(2, 3);
/* Formats one line into buf (cap bytes, ending in a newline when it fits) at wall time
 * unix_us; what ei_log writes. Returns its length. */
size_t ei_log_format(char *buf, size_t cap, int format, uint64_t unix_us, int level,
                     const char *prog, const char *msg);

/* The project version ("0.1.0") and the git commit the build came from ("3f2a9c1d0e4b",
 * "-dirty" appended for uncommitted changes, "unknown" outside a git tree). */
const char *ei_version(void);
const char *ei_commit(void);

#endif
