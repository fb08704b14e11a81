/* einet: the command-line tool. Dispatches to one subcommand per job. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} cli_command_t;

static const cli_command_t commands[] = {
    {"train", cmd_train, "train a multi-exit model and write a model file"},
    {"eval", cmd_eval, "evaluate a model on the 10,000 test images, per exit"},
    {"plan", cmd_plan, "search an exit plan for one planning instance (JSON)"},
    {"ee-search", cmd_ee_search, "search class-specific early exits (Bonato & Bouganis)"},
    {"ee-eval", cmd_ee_eval, "evaluate a saved class-specific early exit on the test split"},
    {"profile", cmd_profile, "measure a model's ET- and CS-profiles (block times, exit outputs)"},
    {"predictor", cmd_predictor, "train a CS-Predictor on the validation CS-profile"},
    {"elastic", cmd_elastic, "elastic accuracy of every exit policy on the test split"},
    {"infer", cmd_infer, "stream test images through a running cluster, one JSON line per answer"},
    {"stats", cmd_stats, "the coordinator's statistics: statuses, exits, tiers, links, nodes"},
    {"result", cmd_result, "one request's answer by id"},
    {"fault", cmd_fault, "inject a link failure, delay or loss, or kill a tier's node"},
    {"keygen", cmd_keygen, "write a CURVE certificate pair for a cluster with keys"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: einet COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n'einet COMMAND --help' describes one command; 'einet --version' the build.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_USAGE;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("einet %s (commit %s)\n", ei_version(), ei_commit());
        return CLI_OK;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return CLI_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "einet: unknown command '%s' (try 'einet --help')\n", argv[1]);
    return CLI_USAGE;
}
