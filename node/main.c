/* einet-node --config FILE: one tier of the pipeline (node/node.h, docs/tiers.md). */
#include <stddef.h>

#include "node/node.h"
#include "wire/service.h"

static int load(void *conf, const char *path, ei_err_t *err)
{
    if (conf_node_load(conf, path, err) < 0)
        return err->code;
    return conf_check_files(&conf_node_table, conf, path, err);
}

static void *create(const void *conf, uv_loop_t *loop, void *zctx, ei_err_t *err)
{
    return node_new(conf, loop, zctx, err);
}

static int start(void *self, ei_err_t *err)
{
    return node_start(self, err);
}

static void stop(void *self)
{
    node_drain(self);
}

static int exit_code(void *self)
{
    return node_exit_code(self);
}

static void destroy(void *self)
{
    node_t *nd = self;
    node_destroy(&nd);
}

int main(int argc, char **argv)
{
    static const wire_service_t svc = {"einet-node", "keys of FILE ([node] section):",
                                       &conf_node_table, sizeof(conf_node_t), load, create,
                                       start, stop, destroy, offsetof(conf_node_t, log_level),
                                       exit_code};
    return wire_service_main(&svc, argc, argv);
}
