/* einet result: one request's answer by id, from the coordinator (the deepest result so
 * far while the request is still pending). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "client.h"

#define CMD "result"

static const char usage_text[] =
    "usage: einet result --coordinator ENDPOINT ID\n"
    "Prints request ID's answer as one JSON line, as 'einet infer' does, plus \"pending\":\n"
    "true while the request is not answered yet: the answer is then the deepest exit result\n"
    "so far, as if cut off now (status \"deadline\", reason \"pending: ...\").\n" CLIENT_OPTS_HELP
    "Exit status: 0, 1 when the coordinator has no request ID or cannot be reached, 2 for a\n"
    "usage error.\n";

int cmd_result(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLIENT_LONGOPTS, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    client_opts_t o;
    client_opts_init(&o);
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int r = client_opts_parse(CMD, &o, c, optarg);
        if (r < 0)
            return CLI_USAGE;
        if (r > 0)
            continue;
        if (c == 'h') {
            fputs(usage_text, stdout);
            return CLI_OK;
        }
        return cli_bad_option(CMD, argv, optind);
    }
    if (optind >= argc)
        return cli_usage_error(CMD, "the request ID is missing (see --help)");
    if (optind + 1 < argc)
        return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind + 1]);
    long id;
    if (cli_parse_long(argv[optind], 1, 0x7fffffffffffffffL, &id))
        return cli_usage_error(CMD, "request ID '%s' is not a positive integer", argv[optind]);
    if (client_opts_finish(CMD, &o))
        return CLI_USAGE;

    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_result_query_tag);
    env.body.result_query.request_id = (uint64_t)id;
    int rc = client_query(CMD, &o, &env, einet_Envelope_result_reply_tag);
    if (rc)
        return rc;
    const einet_ResultReply *r = &env.body.result_reply;
    if (!r->found)
        return cli_fail(CMD, "the coordinator at %s has no request %ld", o.endpoint, id);
    json_t *j = client_answer_json(&r->answer);
    json_object_set_new(j, "pending", json_boolean(r->pending));
    char *text = json_dumps(j, JSON_REAL_PRECISION(9));
    puts(text ? text : "{}");
    free(text);
    json_decref(j);
    return CLI_OK;
}
