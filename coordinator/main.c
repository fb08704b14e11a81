/* einet-coord --config FILE: the coordinator (coordinator/coord.h, docs/tiers.md). */
#include <stdio.h>
#include <string.h>

#include <uv.h>
#include <zmq.h>

#include "coordinator/coord.h"

static void on_signal(uv_signal_t *s, int signum)
{
    (void)signum;
    coord_shutdown(s->data);
}

static int usage(FILE *out)
{
    fprintf(out, "usage: einet-coord --config FILE\n\nkeys of FILE:\n");
    conf_describe(&conf_coord_table, out);
    return out == stdout ? 0 : 2;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            path = argv[++i];
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return usage(stdout);
        else
            return usage(stderr);
    }
    if (!path)
        return usage(stderr);
    conf_coord_t conf;
    ei_err_t err;
    if (conf_coord_load(&conf, path, &err) < 0) {
        fprintf(stderr, "einet-coord: %s\n", err.msg);
        return 2;
    }
    uv_loop_t loop;
    uv_loop_init(&loop);
    void *zctx = zmq_ctx_new();
    coord_t *c = coord_new(&conf, &loop, zctx, &err);
    if (!c) {
        fprintf(stderr, "einet-coord: %s\n", err.msg);
        zmq_ctx_term(zctx);
        return 1;
    }
    uv_signal_t sigterm, sigint;
    uv_signal_init(&loop, &sigterm);
    uv_signal_init(&loop, &sigint);
    sigterm.data = sigint.data = c;
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_unref((uv_handle_t *)&sigterm); /* the coordinator's own handles keep the loop alive */
    uv_unref((uv_handle_t *)&sigint);
    int rc = coord_start(c, &err);
    if (rc < 0) {
        fprintf(stderr, "einet-coord: %s\n", err.msg);
        coord_shutdown(c);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&sigterm, NULL);
    uv_close((uv_handle_t *)&sigint, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    coord_destroy(&c);
    uv_loop_close(&loop);
    zmq_ctx_term(zctx);
    return rc < 0 ? 1 : 0;
}
