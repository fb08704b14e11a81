/* One main() for einet's long-running processes. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "service.h"
#include "sec.h"

typedef struct {
    const wire_service_t *svc;
    void *self;
} running_t;

static void on_signal(uv_signal_t *s, int signum)
{
    (void)signum;
    running_t *r = s->data;
    r->svc->stop(r->self);
}

static int usage(const wire_service_t *svc, FILE *out)
{
    fprintf(out, "usage: %s --config FILE | --version\n\n%s\n", svc->prog, svc->keys_note);
    conf_describe(svc->table, out);
    return out == stdout ? 0 : 2;
}

static const char *parse_args(const wire_service_t *svc, int argc, char **argv, int *rc)
{
    const char *path = NULL;
    *rc = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            path = argv[++i];
        else if (!strcmp(argv[i], "--version"))
            return *rc = 0, printf("%s %s (commit %s)\n", svc->prog, ei_version(), ei_commit()),
                   NULL;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return *rc = usage(svc, stdout), NULL;
        else
            return *rc = usage(svc, stderr), NULL;
    }
    if (!path)
        *rc = usage(svc, stderr);
    return path;
}

/* Runs the loop with the signal handlers in place; they do not keep the loop alive by
 * themselves: the service's own handles do. */
static int run(const wire_service_t *svc, running_t *r, uv_loop_t *loop)
{
    uv_signal_t sigterm, sigint;
    uv_signal_init(loop, &sigterm);
    uv_signal_init(loop, &sigint);
    sigterm.data = sigint.data = r;
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_unref((uv_handle_t *)&sigterm);
    uv_unref((uv_handle_t *)&sigint);
    ei_err_t err;
    int rc = svc->start(r->self, &err);
    if (rc < 0) {
        ei_log(EI_LOG_ERROR, "%s", err.msg);
        svc->stop(r->self);
    }
    uv_run(loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    if (rc < 0)
        return 1;
    return svc->exit_code ? svc->exit_code(r->self) : 0;
}

int wire_service_main(const wire_service_t *svc, int argc, char **argv)
{
    int rc;
    const char *path = parse_args(svc, argc, argv, &rc);
    if (!path)
        return rc;
    ei_log_setup(svc->prog, EI_LOG_INFO, EI_LOG_TEXT);
    void *conf = calloc(1, svc->conf_size);
    ei_err_t err;
    if (!conf || svc->load(conf, path, &err) < 0) {
        fprintf(stderr, "%s: %s\n", svc->prog, conf ? err.msg : "out of memory");
        free(conf);
        return 2;
    }
    const int *log = (const int *)((const char *)conf + svc->log_offset);
    ei_log_setup(svc->prog, log[0], log[1]);
    uv_loop_t loop;
    uv_loop_init(&loop);
    void *zctx = sec_context(); /* CZMQ's, so the ZAP handler guards these sockets */
    running_t r = {svc, svc->create(conf, &loop, zctx, &err)};
    if (!r.self) {
        ei_log(EI_LOG_ERROR, "%s", err.msg);
        /* A model that does not fit the data is a configuration error, as a bad config is. */
        rc = err.code == EI_E_SHAPE ? 2 : 1;
    } else {
        rc = run(svc, &r, &loop);
        svc->destroy(r.self);
    }
    uv_loop_close(&loop);
    sec_context_end();
    free(conf);
    return rc;
}
