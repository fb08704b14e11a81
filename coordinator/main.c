/* einet-coord --config FILE: the coordinator (coordinator/coord.h, docs/tiers.md). */
#include <stddef.h>

#include "coordinator/coord.h"
#include "wire/service.h"

static int load(void *conf, const char *path, ei_err_t *err)
{
    if (conf_coord_load(conf, path, err) < 0)
        return err->code;
    return conf_check_files(&conf_coord_table, conf, path, err);
}

static void *create(const void *conf, uv_loop_t *loop, void *zctx, ei_err_t *err)
{
    return coord_new(conf, loop, zctx, err);
}

static int start(void *self, ei_err_t *err)
{
    return coord_start(self, err);
}

static void stop(void *self)
{
    coord_shutdown(self);
}

static void destroy(void *self)
{
    coord_t *c = self;
    coord_destroy(&c);
}

int main(int argc, char **argv)
{
    static const wire_service_t svc = {"einet-coord", "keys of FILE:", &conf_coord_table,
                                       sizeof(conf_coord_t), load, create, start, stop,
                                       destroy, offsetof(conf_coord_t, log_level), NULL};
    return wire_service_main(&svc, argc, argv);
}
