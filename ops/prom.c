/* Prometheus text exposition format (see ops.h). */
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

#include "ops/ops.h"

void ops_buf_init(ops_buf_t *b)
{
    memset(b, 0, sizeof *b);
}

void ops_buf_free(ops_buf_t *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

static int grow(ops_buf_t *b, size_t need)
{
    if (b->len + need + 1 <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + need + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

void ops_buf_printf(ops_buf_t *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || grow(b, (size_t)n) < 0) {
        b->failed = 1;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void ops_prom_family(ops_buf_t *b, const char *name, const char *type, const char *help)
{
    ops_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void ops_prom_sample(ops_buf_t *b, const char *name, const char *labels, double v)
{
    char num[40];
    /* counts exactly (below 2^53), other values to 15 digits */
    if (v == floor(v) && fabs(v) < 9007199254740992.0)
        snprintf(num, sizeof num, "%.0f", v);
    else
        snprintf(num, sizeof num, "%.15g", v);
    if (labels && labels[0])
        ops_buf_printf(b, "%s{%s} %s\n", name, labels, num);
    else
        ops_buf_printf(b, "%s %s\n", name, num);
}

void ops_prom_counter(ops_buf_t *b, const char *name, const char *help, double v)
{
    ops_prom_family(b, name, "counter", help);
    ops_prom_sample(b, name, "", v);
}

void ops_prom_gauge(ops_buf_t *b, const char *name, const char *help, double v)
{
    ops_prom_family(b, name, "gauge", help);
    ops_prom_sample(b, name, "", v);
}

void ops_hist_init(ops_hist_t *h, const double *bound, int n)
{
    memset(h, 0, sizeof *h);
    h->n = n > OPS_HIST_MAX ? OPS_HIST_MAX : n < 0 ? 0 : n;
    memcpy(h->bound, bound, (size_t)h->n * sizeof *bound);
}

void ops_hist_observe(ops_hist_t *h, double v)
{
    int i = 0;
    while (i < h->n && v > h->bound[i])
        i++;
    h->bucket[i]++;
    h->count++;
    h->sum += v;
}

void ops_prom_hist(ops_buf_t *b, const char *name, const char *help, const ops_hist_t *h)
{
    ops_prom_family(b, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; i < h->n; i++) {
        cum += h->bucket[i];
        ops_buf_printf(b, "%s_bucket{le=\"%.15g\"} %llu\n", name, h->bound[i],
                       (unsigned long long)cum);
    }
    ops_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
    ops_buf_printf(b, "%s_sum %.15g\n%s_count %llu\n", name, h->sum, name,
                   (unsigned long long)h->count);
}

/* Fields 22 (starttime, clock ticks after boot) and 23 (vsize, bytes) of /proc/self/stat;
 * the command name (field 2) may hold spaces, so parsing starts after its ')'. */
static int read_stat(unsigned long long *start_ticks, unsigned long long *vsize)
{
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    /* after ')': field 3 onwards; starttime is the 20th of them, vsize the 21st */
    int field = 3;
    for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " "), field++) {
        if (field == 22)
            *start_ticks = strtoull(tok, NULL, 10);
        if (field == 23) {
            *vsize = strtoull(tok, NULL, 10);
            return 0;
        }
    }
    return -1;
}

static double boot_time(void)
{
    char line[256];
    double bt = -1;
    FILE *f = fopen("/proc/stat", "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "btime ", 6))
            bt = strtod(line + 6, NULL);
    if (f)
        fclose(f);
    return bt;
}

static long resident_pages(void)
{
    long size = 0, rss = -1;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f && fscanf(f, "%ld %ld", &size, &rss) != 2)
        rss = -1;
    if (f)
        fclose(f);
    return rss;
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

void ops_prom_process(ops_buf_t *b)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
        ops_prom_counter(b, "process_cpu_seconds_total",
                         "Total user and system CPU time spent in seconds.", cpu);
    }
    long rss = resident_pages();
    if (rss >= 0)
        ops_prom_gauge(b, "process_resident_memory_bytes", "Resident memory size in bytes.",
                       (double)rss * (double)sysconf(_SC_PAGESIZE));
    unsigned long long start = 0, vsize = 0;
    double bt = boot_time();
    if (read_stat(&start, &vsize) == 0) {
        ops_prom_gauge(b, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
                       (double)vsize);
        if (bt >= 0)
            ops_prom_gauge(b, "process_start_time_seconds",
                           "Start time of the process since unix epoch in seconds.",
                           bt + (double)start / (double)sysconf(_SC_CLK_TCK));
    }
    int fds = open_fds();
    if (fds >= 0)
        ops_prom_gauge(b, "process_open_fds", "Number of open file descriptors.", fds);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        ops_prom_gauge(b, "process_max_fds", "Maximum number of open file descriptors.",
                       (double)rl.rlim_cur);
}

void ops_prom_build_info(ops_buf_t *b)
{
    ops_prom_family(b, "einet_build_info", "gauge",
                    "The einet version and the git commit this program was built from.");
    ops_buf_printf(b, "einet_build_info{version=\"%s\",commit=\"%s\"} 1\n", ei_version(),
                   ei_commit());
}

const char *ops_code_name(int code)
{
    static const char *const names[OPS_CODES] = {
#define XX(name, num, text) [-(num)] = #name,
        EI_ERRNO_MAP(XX)
#undef XX
    };
    static _Thread_local char lower[OPS_CODES][16];
    int i = -code;
    if (i <= 0 || i >= OPS_CODES || !names[i])
        return "other";
    if (!lower[i][0])
        for (int k = 0; names[i][k] && k < 15; k++)
            lower[i][k] = (char)tolower((unsigned char)names[i][k]);
    return lower[i];
}
