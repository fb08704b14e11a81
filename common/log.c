/* The one logging function (see ei.h): RFC 3339 time, level and program as key=value
 * fields or as a JSON object, one write per line. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/ei.h"

static const char *g_prog = "einet";
static int g_level = EI_LOG_INFO, g_format = EI_LOG_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void ei_log_setup(const char *prog, int level, int format)
{
    g_prog = prog ? prog : "einet";
    g_level = level;
    g_format = format;
}

/* Appends s with `"`, `\` and control characters escaped (JSON rules, which logfmt's quoted
 * values share). */
static size_t put_escaped(char *buf, size_t at, size_t cap, const char *s)
{
    for (; *s && at + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            buf[at++] = '\\';
            buf[at++] = (char)ch;
        } else if (ch == '\n') {
            buf[at++] = '\\';
            buf[at++] = 'n';
        } else if (ch < 0x20) {
            at += (size_t)snprintf(buf + at, cap - at, "\\u%04x", ch);
        } else {
            buf[at++] = (char)ch;
        }
    }
    return at;
}

static size_t put(char *buf, size_t at, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (at + n >= cap)
        n = at < cap ? cap - at - 1 : 0;
    memcpy(buf + at, s, n);
    return at + n;
}

size_t ei_log_format(char *buf, size_t cap, int format, uint64_t unix_us, int level,
                     const char *prog, const char *msg)
{
    char ts[40];
    time_t sec = (time_t)(unix_us / 1000000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%06uZ", (unsigned)(unix_us % 1000000));
    const char *lv = level_names[level < 0 ? 0 : level > 3 ? 3 : level];
    size_t at = 0;
    if (cap < 16)
        return 0;
    if (format == EI_LOG_JSON) {
        at += (size_t)snprintf(buf, cap, "{\"time\":\"%s\",\"level\":\"%s\",\"prog\":\"", ts, lv);
        at = put_escaped(buf, at < cap ? at : cap, cap, prog);
        at = put(buf, at, cap, "\",\"msg\":\"");
        at = put_escaped(buf, at, cap, msg);
        at = put(buf, at, cap, "\"}\n");
    } else {
        at += (size_t)snprintf(buf, cap, "time=%s level=%s prog=%s msg=\"", ts, lv, prog);
        at = put_escaped(buf, at < cap ? at : cap, cap, msg);
        at = put(buf, at, cap, "\"\n");
    }
    if (at >= cap)
        at = cap - 1;
    buf[at] = 0;
    return at;
}

void ei_log(int level, const char *fmt, ...)
{
    if (level < g_level)
        return;
    char msg[2048], line[4200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    uint64_t us = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
    size_t n = ei_log_format(line, sizeof line, g_format, us, level, g_prog, msg);
    if (write(STDERR_FILENO, line, n) < 0)
        return; /* nowhere left to say so */
}
