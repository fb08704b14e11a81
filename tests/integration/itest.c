/* Child processes and loopback clusters for the integration tests (itest.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "itest.h"
#include "common/ei.h"
#include "nn/model.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void redirect(int fd, const char *path)
{
    if (!path)
        return;
    int f = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (f >= 0) {
        dup2(f, fd);
        close(f);
    }
}

int itest_spawn(itest_proc_t *p, char *const argv[], int pipe_out, const char *out_path,
                const char *err_path)
{
    int fds[2] = {-1, -1};
    memset(p, 0, sizeof *p);
    p->out_fd = -1;
    if (pipe_out && pipe(fds) != 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        if (pipe_out) {
            dup2(fds[1], 1);
            close(fds[0]);
            close(fds[1]);
        }
        redirect(1, out_path);
        redirect(2, err_path);
        execv(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    p->pid = pid;
    if (pipe_out) {
        close(fds[1]);
        p->out_fd = fds[0];
    }
    return 0;
}

int itest_proc_line(itest_proc_t *p, char *line, size_t cap, int timeout_ms)
{
    double until = now_s() + timeout_ms / 1e3;
    for (;;) {
        char *nl = memchr(p->buf, '\n', p->len);
        if (nl || (p->eof && p->len) || p->len == sizeof p->buf) {
            size_t n = nl ? (size_t)(nl - p->buf) : p->len;
            size_t k = n < cap - 1 ? n : cap - 1;
            memcpy(line, p->buf, k);
            line[k] = 0;
            size_t used = nl ? n + 1 : n;
            memmove(p->buf, p->buf + used, p->len - used);
            p->len -= used;
            return 1;
        }
        if (p->eof || p->out_fd < 0)
            return 0;
        int left = (int)((until - now_s()) * 1e3);
        if (left <= 0)
            return -1;
        struct pollfd pfd = {p->out_fd, POLLIN, 0};
        int rc = poll(&pfd, 1, left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            return -1;
        ssize_t got = read(p->out_fd, p->buf + p->len, sizeof p->buf - p->len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            p->eof = 1;
        else
            p->len += (size_t)got;
    }
}

int itest_proc_wait(itest_proc_t *p, int timeout_ms)
{
    double until = now_s() + timeout_ms / 1e3;
    int status = 0, killed = 0;
    for (;;) {
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid)
            break;
        if (r < 0 && errno != EINTR)
            return -1;
        if (now_s() > until && !killed) {
            kill(p->pid, SIGKILL);
            killed = 1;
        }
        usleep(2000);
    }
    if (p->out_fd >= 0)
        close(p->out_fd);
    p->out_fd = -1;
    if (killed)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Reads fd to its end into buf[0..cap) (NUL-terminated, truncated to fit). */
static void slurp(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    char sink[4096];
    for (;;) {
        char *dst = buf && len + 1 < cap ? buf + len : sink;
        size_t room = buf && len + 1 < cap ? cap - 1 - len : sizeof sink;
        ssize_t n = read(fd, dst, room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (dst != sink)
            len += (size_t)n;
    }
    if (buf && cap)
        buf[len] = 0;
}

int itest_run(char *const argv[], char *out, size_t out_cap, char *err, size_t err_cap,
              int timeout_ms)
{
    char err_path[] = "/tmp/einet-itest-errXXXXXX";
    int efd = mkstemp(err_path);
    if (efd < 0)
        return -1;
    itest_proc_t p;
    if (itest_spawn(&p, argv, 1, NULL, err_path) != 0) {
        close(efd);
        unlink(err_path);
        return -1;
    }
    /* Read stdout until the child closes it (or the timeout kills it). */
    size_t len = 0;
    char line[8192];
    int rc;
    double until = now_s() + timeout_ms / 1e3;
    while ((rc = itest_proc_line(&p, line, sizeof line, (int)((until - now_s()) * 1e3) + 1)) == 1)
        if (out && len + strlen(line) + 2 < out_cap)
            len += (size_t)sprintf(out + len, "%s\n", line);
    if (out && out_cap)
        out[len < out_cap ? len : out_cap - 1] = 0;
    int status = itest_proc_wait(&p, rc < 0 ? 0 : (int)((until - now_s()) * 1e3) + 1);
    slurp(efd, err, err_cap);
    close(efd);
    unlink(err_path);
    return status;
}

const char *itest_bin(const char *name, char *buf, size_t cap)
{
    const char *dir = getenv("EINET_BIN");
    snprintf(buf, cap, "%s/%s", dir && *dir ? dir : "build/bin", name);
    return buf;
}

int itest_have_programs(void)
{
    const char *names[] = {"einet", "einet-node", "einet-coord"};
    for (int i = 0; i < 3; i++) {
        char path[1024];
        if (access(itest_bin(names[i], path, sizeof path), X_OK) != 0) {
            fprintf(stderr, "SKIP: %s is not built (no such program)\n", path);
            return 0;
        }
    }
    return 1;
}

const char *itest_model_path(char *buf, size_t cap)
{
    const char *env = getenv("EINET_TEST_MODEL");
    char rel[1024];
    if (env && *env)
        snprintf(rel, sizeof rel, "%s", env);
    else
        snprintf(rel, sizeof rel, "%s/models/fmnist-8exit.safetensors", ITEST_SOURCE_DIR);
    if (!realpath(rel, buf) || cap < 1024) {
        fprintf(stderr, "no model file: %s (train one and set EINET_TEST_MODEL)\n", rel);
        return NULL;
    }
    return buf;
}

/* 1 when nothing listens on 127.0.0.1:port (a bind succeeds). */
static int port_free(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0;
    if (s >= 0)
        close(s);
    return ok;
}

/* Four consecutive free ports, starting from one derived from the pid, so tests running
 * at the same time (ctest -j) do not meet. All below 32768, where Linux's ephemeral ports
 * begin (ip_local_port_range): a port found free there could be taken by any outgoing
 * connection before the cluster binds it. */
static int pick_ports(void)
{
    int base = 20000 + (int)((unsigned)getpid() * 40503u % 3000u) * 4;
    for (int tries = 0; tries < 200; tries++, base += 4) {
        if (base > 32760)
            base = 20000;
        if (port_free(base) && port_free(base + 1) && port_free(base + 2) &&
            port_free(base + 3))
            return base;
    }
    return -1;
}

__attribute__((format(printf, 3, 4))) static int write_file(const char *dir, const char *name, const char *fmt, ...)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    return fclose(f);
}

/* The key lines of tier t's config (0: the coordinator's) on a cluster with keys. */
static void key_lines(const itest_cluster_t *c, int t, char *out, size_t cap)
{
    static const char *const names[] = {"coordinator", "device", "edge", "cloud"};
    out[0] = 0;
    if (!c->keys)
        return;
    if (t == 0) {
        snprintf(out, cap, "key = keys/coordinator.key_secret\ntrust = keys\n");
        return;
    }
    snprintf(out, cap, "key = keys/%s.key_secret\ncoordinator_key = keys/coordinator.key\n%s%s%s%s",
             names[t], t > 1 ? "trust = keys\n" : "", t < 3 ? "next_key = keys/" : "",
             t < 3 ? names[t + 1] : "", t < 3 ? ".key\n" : "");
}

void itest_tier_split(int blocks, int last[4])
{
    last[0] = 0;
    last[1] = blocks / 3;
    last[2] = 2 * blocks / 3;
    last[3] = blocks;
}

static int write_configs(itest_cluster_t *c)
{
    const itest_cluster_opts_t *o = &c->opts;
    char keys[256];
    key_lines(c, 0, keys, sizeof keys);
    int rc = write_file(c->dir, "coordinator.ini",
                        "[coordinator]\nclients = %s\nnodes = %s\ntiers = device,edge,cloud\n"
                        "heartbeat_timeout_ms = %d\ndeadline_ms = %d\nmodel = %s\n%s%s",
                        c->clients, c->nodes, o->heartbeat_timeout_ms, o->deadline_ms, c->model,
                        keys, o->coord_extra ? o->coord_extra : "");
    static const char *const tiers[] = {"", "device", "edge", "cloud"};
    int first[4], last[4];
    ei_err_t err = {0};
    nn_model_t *m = nn_model_load(c->model, 1, &err);
    if (!m) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    itest_tier_split(nn_model_blocks(m), last);
    nn_model_destroy(&m);
    for (int t = 1; t <= 3; t++)
        first[t] = last[t - 1] + 1;
    for (int t = 1; t <= 3 && rc == 0; t++) {
        char name[32], bind[96] = "", next[96] = "";
        snprintf(name, sizeof name, "%s.ini", tiers[t]);
        if (t == 2)
            snprintf(bind, sizeof bind, "bind = %s\n", c->edge_bind);
        if (t == 3)
            snprintf(bind, sizeof bind, "bind = %s\n", c->cloud_bind);
        if (t < 3)
            snprintf(next, sizeof next, "next = %s\n", t == 1 ? c->edge_bind : c->cloud_bind);
        char ee[PATH_MAX + 16] = "";
        if (t == 1 && o->device_ee) {
            char rel[1024], abs[PATH_MAX];
            snprintf(rel, sizeof rel, "%s%s%s", o->device_ee[0] == '/' ? "" : ITEST_SOURCE_DIR,
                     o->device_ee[0] == '/' ? "" : "/", o->device_ee);
            if (!realpath(rel, abs)) {
                fprintf(stderr, "no EE file: %s\n", rel);
                return -1;
            }
            snprintf(ee, sizeof ee, "ee = %s\n", abs);
        }
        key_lines(c, t, keys, sizeof keys);
        char batch[96] = "";
        if (o->batch_max > 0)
            snprintf(batch, sizeof batch, "batch_max = %d\nbatch_wait_ms = %g\n", o->batch_max,
                     o->batch_wait_ms);
        rc = write_file(c->dir, name,
                        "[node]\ntier = %s\nfirst_block = %d\nlast_block = %d\nmodel = %s\n%s%s"
                        "coordinator = %s\nthreads = 1\nslowdown = %g\nheartbeat_ms = %d\n"
                        "heartbeat_timeout_ms = %d\n%s%s%s",
                        tiers[t], first[t], last[t], c->model, bind, next, c->nodes,
                        o->slowdown[t] > 0 ? o->slowdown[t] : 1.0, o->heartbeat_ms,
                        o->heartbeat_timeout_ms, ee, batch, keys);
    }
    return rc;
}

static int local_sh(itest_cluster_t *c, const char *verb, int timeout_ms)
{
    char script[512], out[16384], err[16384];
    snprintf(script, sizeof script, "%s/deploy/local.sh", ITEST_SOURCE_DIR);
    setenv("EINET_RUN_DIR", c->run_dir, 1);
    char *argv[] = {script, (char *)verb, c->dir, NULL};
    int rc = itest_run(argv, out, sizeof out, err, sizeof err, timeout_ms);
    if (rc != 0)
        fprintf(stderr, "deploy/local.sh %s %s: exit %d\n--- stdout\n%s--- stderr\n%s\n", verb,
                c->dir, rc, out, err);
    return rc == 0 ? 0 : -1;
}

int itest_cluster_up(itest_cluster_t *c, const itest_cluster_opts_t *opts)
{
    return itest_cluster_up_keys(c, opts, 0);
}

const char *itest_cluster_key(const itest_cluster_t *c, const char *name, int secret, char *buf,
                              size_t cap)
{
    snprintf(buf, cap, "%s/keys/%s.key%s", c->dir, name, secret ? "_secret" : "");
    return buf;
}

int itest_cluster_up_keys(itest_cluster_t *c, const itest_cluster_opts_t *opts, int keys)
{
    memset(c, 0, sizeof *c);
    c->keys = keys;
    c->opts = *opts;
    if (!c->opts.heartbeat_ms)
        c->opts.heartbeat_ms = 50;
    if (!c->opts.heartbeat_timeout_ms)
        c->opts.heartbeat_timeout_ms = 300;
    if (!itest_model_path(c->model, sizeof c->model))
        return -1;
    snprintf(c->dir, sizeof c->dir, "/tmp/einet-itest-XXXXXX");
    if (!mkdtemp(c->dir))
        return -1;
    snprintf(c->run_dir, sizeof c->run_dir, "%s/run", c->dir);
    int port = pick_ports();
    if (port < 0)
        return -1;
    snprintf(c->clients, sizeof c->clients, "tcp://127.0.0.1:%d", port);
    snprintf(c->nodes, sizeof c->nodes, "tcp://127.0.0.1:%d", port + 1);
    snprintf(c->edge_bind, sizeof c->edge_bind, "tcp://127.0.0.1:%d", port + 2);
    snprintf(c->cloud_bind, sizeof c->cloud_bind, "tcp://127.0.0.1:%d", port + 3);
    if (write_configs(c) != 0)
        return -1;
    return local_sh(c, "up", 60000);
}

int itest_cluster_restart(itest_cluster_t *c)
{
    return local_sh(c, "up", 60000);
}

int itest_cluster_stop(itest_cluster_t *c)
{
    return c->dir[0] ? local_sh(c, "down", 30000) : -1;
}

void itest_cluster_down(itest_cluster_t *c)
{
    if (!c->dir[0])
        return;
    (void)local_sh(c, "down", 30000);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->dir);
    if (getenv("EINET_KEEP_TEST_DIR") == NULL && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", c->dir);
    c->dir[0] = 0;
}

pid_t itest_cluster_pid(const itest_cluster_t *c, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.pid", c->run_dir, name);
    FILE *f = fopen(path, "r");
    long pid = -1;
    if (f) {
        if (fscanf(f, "%ld", &pid) != 1)
            pid = -1;
        fclose(f);
    }
    if (pid <= 0 || kill((pid_t)pid, 0) != 0)
        return -1;
    /* The processes are orphans once local.sh exits; where nothing reaps them a dead one
     * lingers as a zombie, which kill(pid, 0) still finds. */
    char stat[64], state = 0;
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    f = fopen(path, "r");
    if (f) {
        if (fscanf(f, "%*d (%63[^)]) %c", stat, &state) != 2)
            state = 0;
        fclose(f);
    }
    return state == 'Z' || state == 'X' ? -1 : (pid_t)pid;
}

void itest_cluster_dump_logs(const itest_cluster_t *c)
{
    static const char *const names[] = {"coordinator", "device", "edge", "cloud"};
    for (int i = 0; i < 4; i++) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "echo '--- %s.log (last 15 lines)' >&2; tail -n 15 '%s/%s.log' >&2",
                 names[i], c->run_dir, names[i]);
        if (system(cmd) != 0)
            fprintf(stderr, "(no log)\n");
    }
}

int itest_einet(char *out, size_t out_cap, char *err, size_t err_cap, int timeout_ms, ...)
{
    char bin[1024];
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)itest_bin("einet", bin, sizeof bin);
    va_list ap;
    va_start(ap, timeout_ms);
    char *a;
    while (n < 31 && (a = va_arg(ap, char *)) != NULL)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    return itest_run(argv, out, out_cap, err, err_cap, timeout_ms);
}

/* ---- cases sharing one cluster ---- */

/* cmocka's group setup and teardown take no argument of ours: the suite being run. */
static const itest_suite_t *g_suite;
static const itest_case_t *g_first;

int itest_pick_cases(const itest_suite_t *s, int argc, char *const argv[], int *picked)
{
    int n = 0;
    for (int a = 1; a < argc; a++) {
        int found = -1;
        for (int i = 0; i < s->n_cases && found < 0; i++)
            if (!strcmp(argv[a], s->cases[i].name))
                found = i;
        if (found < 0 || n == s->n_cases) {
            n = 0;
            break;
        }
        picked[n++] = found;
    }
    if (n == 0)
        fprintf(stderr, "usage: %s CASE... (%s)\n", s->prog, s->usage);
    return n;
}

static int suite_setup(void **state)
{
    (void)state;
    itest_cluster_t *c = g_suite->cluster;
    if (itest_cluster_up_keys(c, &g_first->opts, g_suite->keys) != 0) {
        itest_cluster_dump_logs(c);
        itest_cluster_down(c);
        return -1;
    }
    if (g_suite->after_up)
        g_suite->after_up(c);
    return 0;
}

static int suite_teardown(void **state)
{
    (void)state;
    if (g_suite->before_down)
        g_suite->before_down();
    itest_cluster_down(g_suite->cluster);
    return 0;
}

int itest_run_cases(const itest_suite_t *s, const int *picked, int n, const char *group)
{
    struct CMUnitTest *tests = calloc((size_t)n, sizeof *tests);
    if (!tests || n < 1) {
        free(tests);
        return -1;
    }
    for (int i = 0; i < n; i++)
        tests[i] = (struct CMUnitTest){s->cases[picked[i]].name, s->cases[picked[i]].fn, NULL,
                                       NULL, NULL};
    g_suite = s;
    g_first = &s->cases[picked[0]];
    int rc = _cmocka_run_group_tests(group, tests, (size_t)n, suite_setup, suite_teardown);
    free(tests);
    return rc;
}
