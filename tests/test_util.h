/* Helpers the cmocka test programs share: running the einet tool that ctest points to
 * ($EINET_BIN) and removing a scratch directory. Header-only: each test is one program. */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* Runs `$EINET_BIN/einet ARGS` with its output discarded; its exit code, or -1. */
static inline int tu_run_einet(const char *args)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s/einet' %s >/dev/null 2>&1", getenv("EINET_BIN"), args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Removes the files directly inside dir, then dir itself (tests make no subdirectories). */
static inline void tu_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char p[512];
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.') {
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
    if (d)
        closedir(d);
    rmdir(dir);
}

#endif
