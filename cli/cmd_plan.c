/* einet plan: searches the exit plan of one planning instance (JSON) and prints the plan,
 * its accuracy expectation, the horizon, the plans evaluated and the search time. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "planner/planner.h"

/* Instances are small; this only stops a runaway pipe. */
#define MAX_INSTANCE_BYTES (16L << 20)

static const char usage_text[] =
    "usage: einet plan FILE|-\n"
    "Reads one planning instance (JSON; '-' reads standard input), searches its exit plan\n"
    "and prints one JSON object:\n"
    "  {\"plan\":[0|1,...], \"expectation\":E, \"horizon_ms\":H, \"evaluated\":COUNT,\n"
    "   \"search_us\":MICROSECONDS, \"algo\":METHOD}\n"
    "The instance:\n"
    "  {\"conv_ms\":[...], \"branch_ms\":[...], \"link_ms\":[...], \"result_ms\":[...],\n"
    "   \"scores\":[...], \"dist\":{\"kind\":\"uniform\"} or\n"
    "   {\"kind\":\"normal\",\"mu\":0.5,\"sigma\":0.25}, \"search\":\"exact\"|\"hybrid\"|\n"
    "   \"greedy\"|\"enum\"|\"random\"|\"all\"|\"none\", \"m\":4, \"m_upto\":false,\n"
    "   \"n_random\":10000, \"seed\":1, \"plan\":[...], \"offset\":{\"x\":X, \"t0_ms\":T,\n"
    "   \"c0\":C, \"spent\":[...], \"pending_ms\":[...], \"pending_scores\":[...]}}\n"
    "Arrays have one entry per exit; link_ms and result_ms default to zeros, m to 4\n"
    "(hybrid enumerates plans with exactly m outputs, with \"m_upto\":true at most m),\n"
    "n_random to 10000, seed to 1; \"plan\" is required by \"none\", which only evaluates it;\n"
    "\"offset\" replans after exit X at elapsed time T (docs/planner.md).\n"
    "Exit codes: 0 success, 1 the file cannot be read, 2 a malformed instance.\n";

/* Reads the whole stream; NULL on a read error or an oversized input (errno set). */
static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            if (cap >= (size_t)MAX_INSTANCE_BYTES) {
                free(buf);
                errno = EFBIG;
                return NULL;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                free(buf);
            buf = nb;
            cap *= 2;
        }
    }
    if (buf && ferror(f)) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* The shortest %g form that reads back as the same double. */
static void put_double(double v)
{
    char buf[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    fputs(buf, stdout);
}

static void print_result(const planner_result_t *res, int n, double horizon, double us)
{
    fputs("{\"plan\":[", stdout);
    for (int k = 0; k < n; k++)
        printf("%s%d", k ? "," : "", res->plan[k]);
    fputs("],\"expectation\":", stdout);
    put_double(res->expectation);
    fputs(",\"horizon_ms\":", stdout);
    put_double(horizon);
    printf(",\"evaluated\":%llu,\"search_us\":%.3f,\"algo\":\"%s\"}\n",
           (unsigned long long)res->evaluated, us, res->algo);
}

int cmd_plan(int argc, char **argv)
{
    static const struct option longopts[] = {{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        if (c == 'h') {
            fputs(usage_text, stdout);
            return CLI_OK;
        }
        return cli_bad_option("plan", argv, optind);
    }
    if (argc - optind != 1)
        return cli_usage_error("plan", "expected one instance file or '-' (see --help)");
    const char *path = argv[optind];
    int from_stdin = !strcmp(path, "-");
    const char *name = from_stdin ? "<stdin>" : path;
    FILE *f = from_stdin ? stdin : fopen(path, "rb");
    if (!f)
        return cli_fail("plan", "%s: %s", path, strerror(errno));
    size_t len = 0;
    char *text = read_all(f, &len);
    int read_errno = errno;
    if (!from_stdin)
        fclose(f);
    if (!text)
        return cli_fail("plan", "%s: %s", name, strerror(read_errno));

    planner_instance_t *inst = malloc(sizeof *inst);
    if (!inst) {
        free(text);
        return cli_fail("plan", "out of memory");
    }
    ei_err_t err = {0};
    int rc = planner_instance_parse(text, len, inst, &err);
    free(text);
    if (rc) {
        free(inst);
        return cli_usage_error("plan", "%s: %s", name, err.msg);
    }
    planner_t *p = planner_new(&inst->profile, &inst->dist, &err);
    if (!p) {
        free(inst);
        return cli_usage_error("plan", "%s: %s", name, err.msg);
    }
    planner_search_t s;
    planner_search_init(&s);
    s.kind = inst->kind;
    s.m = inst->m;
    s.m_upto = inst->m_upto;
    s.n_random = inst->n_random;
    s.seed = inst->seed;
    s.plan = inst->has_plan ? inst->plan : NULL;
    planner_result_t res;
    double t0 = ei_now();
    rc = planner_search(p, &s, inst->scores, inst->has_offset ? &inst->offset : NULL, &res, &err);
    double us = (ei_now() - t0) * 1e6;
    if (rc) {
        planner_destroy(&p);
        free(inst);
        return cli_usage_error("plan", "%s: %s", name, err.msg);
    }
    print_result(&res, inst->profile.n, planner_horizon(p), us);
    planner_destroy(&p);
    free(inst);
    return CLI_OK;
}
