/* itest: what einet's integration tests share. Child processes (spawn, wait with a
 * timeout, read their output line by line with a timeout), and a real cluster on loopback:
 * config files with ports unique to the test written into a temporary directory, started
 * and stopped with deploy/local.sh, so the tests exercise the very script users run. */
#ifndef ITEST_H
#define ITEST_H

#include <stddef.h>
#include <sys/types.h>

/* ctest's SKIP_RETURN_CODE: the test cannot run here and says why on stderr. */
#define ITEST_SKIP 77

/* ---- processes ---- */

typedef struct itest_proc {
    pid_t pid;
    int out_fd;     /* the child's stdout, when piped; else -1 */
    char buf[8192]; /* read but not yet returned by itest_proc_line */
    size_t len;
    int eof;
} itest_proc_t;

/* Starts argv[0] (a path) with stdout piped to the caller (pipe_out) or appended to
 * out_path (NULL: inherited) and stderr appended to err_path (NULL: inherited). 0 or -1. */
int itest_spawn(itest_proc_t *p, char *const argv[], int pipe_out, const char *out_path,
                const char *err_path);

/* The next line of the child's stdout without its newline, waiting at most timeout_ms.
 * 1: a line; 0: end of output; -1: timed out. */
int itest_proc_line(itest_proc_t *p, char *line, size_t cap, int timeout_ms);

/* Waits for the child at most timeout_ms, then kills it (SIGKILL) and reaps it. Its exit
 * code, 128 + the signal that ended it, or -1 when it had to be killed. Closes the pipe. */
int itest_proc_wait(itest_proc_t *p, int timeout_ms);

/* Runs argv to completion (at most timeout_ms) with stdout and stderr collected into
 * out[0..cap) and err[0..cap) (either may be NULL); returns as itest_proc_wait. */
int itest_run(char *const argv[], char *out, size_t out_cap, char *err, size_t err_cap,
              int timeout_ms);

/* $EINET_BIN/name (the build's bin directory, set by ctest) into buf. */
const char *itest_bin(const char *name, char *buf, size_t cap);

/* 1 when $EINET_BIN holds einet-node and einet-coord (else prints why on stderr). */
int itest_have_programs(void);

/* The model the cluster runs: $EINET_TEST_MODEL, else the shipped
 * models/fmnist-8exit.safetensors (absolute path). NULL when the file does not exist. */
const char *itest_model_path(char *buf, size_t cap);

/* ---- a cluster on loopback ---- */

/* The blocks of each tier of a model of `blocks` blocks: tier t (1 device, 2 edge, 3
 * cloud) runs blocks last[t-1]+1 .. last[t] (last[0] = 0): the thirds, which for the
 * shipped 8-block model are 1-2, 3-5 and 6-8 as in configs/fmnist-3tier. */
void itest_tier_split(int blocks, int last[4]);

typedef struct itest_cluster_opts {
    int heartbeat_ms;         /* 0: 50 */
    int heartbeat_timeout_ms; /* 0: 300 */
    double slowdown[4];       /* per tier (index einet_Tier); 0: 1 */
    int deadline_ms;          /* the coordinator's default deadline; 0: none */
    const char *device_ee;    /* class-specific EE file for the device (`ee` key): absolute,
                                 or relative to the source root; NULL: none */
    int batch_max;            /* every node's batch_max; 0: the default */
    double batch_wait_ms;     /* every node's batch_wait_ms (with batch_max set) */
    const char *coord_extra;  /* appended to coordinator.ini (keys of [coordinator], then
                                 further sections); NULL: none */
} itest_cluster_opts_t;

typedef struct itest_cluster {
    int keys;          /* CURVE on: certificates in dir/keys, made by deploy/local.sh up */
    char dir[256];     /* the config directory */
    char run_dir[300]; /* logs and pid files (EINET_RUN_DIR of deploy/local.sh) */
    char clients[64], nodes[64], edge_bind[64], cloud_bind[64];
    char model[1024];
    itest_cluster_opts_t opts;
} itest_cluster_t;

/* Writes the four config files with free loopback ports into a new temporary directory
 * and runs `deploy/local.sh up` on it. 0, or -1 after printing local.sh's output. */
int itest_cluster_up(itest_cluster_t *c, const itest_cluster_opts_t *opts);

/* The same with keys (keys = 1): every config names its certificate in dir/keys (made by
 * deploy/local.sh up: coordinator, device, edge, cloud, client, operator), so every socket
 * runs CURVE with the allow-list dir/keys (docs/security.md). */
int itest_cluster_up_keys(itest_cluster_t *c, const itest_cluster_opts_t *opts, int keys);

/* dir/keys/NAME.key (secret = 0) or NAME.key_secret (secret = 1) of a cluster with keys. */
const char *itest_cluster_key(const itest_cluster_t *c, const char *name, int secret, char *buf,
                              size_t cap);

/* `deploy/local.sh up` again: restarts whatever process is not running and waits until
 * the cluster is healthy. 0 or -1. */
int itest_cluster_restart(itest_cluster_t *c);

/* `deploy/local.sh down`, keeping the directory and the logs (the nodes write their
 * totals there when they stop); itest_cluster_restart starts it again. 0 or -1. */
int itest_cluster_stop(itest_cluster_t *c);

/* `deploy/local.sh down`, then removes the directory. */
void itest_cluster_down(itest_cluster_t *c);

/* The pid of a running process of the cluster ("coordinator", "device", ...); -1 when it
 * is not running (or is a zombie nobody reaped). */
pid_t itest_cluster_pid(const itest_cluster_t *c, const char *name);

/* Prints the last lines of each process's log on stderr (after a failure). */
void itest_cluster_dump_logs(const itest_cluster_t *c);

/* ---- cases sharing one cluster ---- */

typedef struct itest_case {
    const char *name;
    void (*fn)(void **state);
    itest_cluster_opts_t opts; /* the cluster's options when this case is named first */
} itest_case_t;

typedef struct itest_suite {
    const char *prog;                     /* for the usage line */
    const char *usage;                    /* the cases, as the usage line lists them */
    const itest_case_t *cases;
    int n_cases;
    itest_cluster_t *cluster;             /* up before the first case, down after the last */
    int keys;                             /* CURVE on every socket (itest_cluster_up_keys) */
    void (*after_up)(itest_cluster_t *c); /* NULL: nothing */
    void (*before_down)(void);            /* NULL: nothing */
} itest_suite_t;

/* The index of each case argv[1..] names, in order, into picked (room for n_cases). The
 * count, or 0 after printing the usage when a name is unknown or none is given. */
int itest_pick_cases(const itest_suite_t *s, int argc, char *const argv[], int *picked);

/* Runs the n picked cases as one cmocka group named group: the cluster starts with the
 * first picked case's options before them (its logs printed when it does not come up) and
 * stops after them. cmocka's result. */
int itest_run_cases(const itest_suite_t *s, const int *picked, int n, const char *group);

/* Runs `einet ARGS...` (NULL-terminated) to completion with output collected; as
 * itest_run. */
int itest_einet(char *out, size_t out_cap, char *err, size_t err_cap, int timeout_ms, ...);

#endif
