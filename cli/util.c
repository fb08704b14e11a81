/* Error reporting and number parsing shared by the subcommands. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "nn/train.h"

static int vreport(const char *cmd, int code, const char *fmt, va_list ap)
{
    fprintf(stderr, "einet %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    return code;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vreport(cmd, CLI_USAGE, fmt, ap);
    va_end(ap);
    return rc;
}

int cli_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vreport(cmd, CLI_FAIL, fmt, ap);
    va_end(ap);
    return rc;
}

int cli_parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int cli_parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int cli_bad_option(const char *cmd, char **argv, int optind_after)
{
    const char *arg = argv[optind_after - 1];
    return cli_usage_error(cmd, "unknown option or missing value: '%s' (see --help)",
                           arg ? arg : "?");
}

const char *cli_default_path(const char *rel, char *buf, int len)
{
    /* The shipped files live in the source tree: $EINET_HOME, else the working directory
     * when it holds them, else the source tree this program was built from. */
    const char *home = getenv("EINET_HOME");
    if (home && *home)
        snprintf(buf, (size_t)len, "%s/%s", home, rel);
    else if (access(rel, R_OK) == 0)
        snprintf(buf, (size_t)len, "%s", rel);
    else
        snprintf(buf, (size_t)len, "%s/%s", EINET_SOURCE_DIR, rel);
    return buf;
}

int cli_check_data(const char *cmd, const char *source, nn_shape_t input, const char *dir,
                   const char *splits)
{
    static const char *const names[] = {"train", "test"};
    ei_err_t err = {0};
    for (int i = 0; i < 2; i++) {
        if (!strstr(splits, names[i]))
            continue;
        int rc = nn_arch_check_split(source, input, dir, names[i], &err);
        if (rc == EI_E_SHAPE)
            return cli_usage_error(cmd, "%s", err.msg);
        if (rc)
            return cli_fail(cmd, "%s", err.msg);
    }
    return CLI_OK;
}
