/* Temporary until the commands land (removed before any issue is resolved). */
#include "cli.h"
int cmd_plan(int argc, char **argv) { (void)argc; (void)argv; return cli_fail("plan", "not built yet"); }
