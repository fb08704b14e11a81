/* The main() of a long-running einet process (einet-node, einet-coord): reads --config,
 * makes the service on a libuv loop with a ZeroMQ context, stops it cleanly on SIGTERM or
 * SIGINT, and tears everything down once the loop has nothing left to do. The programs
 * differ only in the callbacks they give. */
#ifndef WIRE_SERVICE_H
#define WIRE_SERVICE_H

#include <uv.h>

#include "../common/ei.h"
#include "conf.h"

typedef struct wire_service {
    const char *prog;           /* "einet-node": prefixes every message */
    const char *keys_note;      /* what the usage text says before the keys */
    const conf_table_t *table;  /* the config keys, for --help */
    /* Loads the config file into a buffer the runner owns (conf_size bytes). */
    size_t conf_size;
    int (*load)(void *conf, const char *path, ei_err_t *err);
    /* Makes the service (NULL with err set), starts it, stops it (idempotent: closes its
     * handles so the loop ends), and frees it after the loop has ended. */
    void *(*create)(const void *conf, uv_loop_t *loop, void *zctx, ei_err_t *err);
    int (*start)(void *self, ei_err_t *err);
    void (*stop)(void *self);
    void (*destroy)(void *self);
    /* Offset in the config of `int log_level, log_format;` (in that order). */
    size_t log_offset;
    /* Optional: the exit code after a clean stop (a service that refused to run gives 2). */
    int (*exit_code)(void *self);
} wire_service_t;

/* Runs the service to the end. Exit codes: 0 after a clean stop (or what exit_code says),
 * 1 when the service could not be made or started, 2 for a usage or config error (also a
 * model that does not fit the data: EI_E_SHAPE from create). */
int wire_service_main(const wire_service_t *svc, int argc, char **argv);

#endif
