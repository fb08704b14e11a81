/* Temporary until the commands land (removed before any issue is resolved). */
#include "cli.h"
int cmd_train(int argc, char **argv) { (void)argc; (void)argv; return cli_fail("train", "not built yet"); }
int cmd_eval(int argc, char **argv) { (void)argc; (void)argv; return cli_fail("eval", "not built yet"); }
int cmd_plan(int argc, char **argv) { (void)argc; (void)argv; return cli_fail("plan", "not built yet"); }
