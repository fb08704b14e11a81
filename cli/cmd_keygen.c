/* einet keygen: a CURVE certificate pair for a process or a person of a cluster with keys
 * (docs/security.md). CZMQ's zcert makes and writes it; the role, tier and name go into the
 * public certificate's metadata, which the coordinator and nodes read back through zauth:
 * a node's key is bound to its name (the coordinator admits it under that name only). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "client.h"
#include "wire/sec.h"

#define CMD "keygen"

static const char usage_text[] =
    "usage: einet keygen --out DIR [--role ROLE] [--tier TIER] NAME\n"
    "Writes a CURVE certificate pair: DIR/NAME.key (public: give it to the peers that must\n"
    "trust NAME) and DIR/NAME.key_secret (secret, mode 0600: NAME's own). DIR is made (0700)\n"
    "when missing; existing files are never overwritten. NAME goes into the certificate: a\n"
    "node key is admitted by the coordinator only for the node of that name (its config's\n"
    "`name`, default its tier), so a fleet gets one key per node (edge-1, edge-2, ...).\n"
    "  --out DIR      where the two files go (required)\n"
    "  --role ROLE    node, client, operator or coordinator; default: node for the names\n"
    "                 device, edge and cloud and TIER-anything (edge-2), operator for\n"
    "                 'operator', coordinator for 'coordinator', client for any other name\n"
    "  --tier TIER    device, edge or cloud: the tier of a node key (default: NAME, or\n"
    "                 what NAME has before its first '-')\n"
    "Clients submit requests and read their own results and the statistics; operators also\n"
    "inject faults, kill nodes, reset statistics and read every result.\n"
    "Exit status: 0, 1 when a file cannot be written or exists, 2 for a usage error.\n";

/* The tier a name stands for: "edge", or "edge-2" (a replica of the edge tier); else 0. */
static int tier_of(const char *s)
{
    char t[16];
    const char *dash = strchr(s, '-');
    size_t n = dash ? (size_t)(dash - s) : strlen(s);
    if (n >= sizeof t || (dash && !dash[1]))
        return 0;
    memcpy(t, s, n);
    t[n] = 0;
    return client_tier_parse(t);
}

static int default_role(const char *name)
{
    if (tier_of(name) > 0)
        return SEC_ROLE_NODE;
    if (!strcmp(name, "operator"))
        return SEC_ROLE_OPERATOR;
    if (!strcmp(name, "coordinator"))
        return SEC_ROLE_COORDINATOR;
    return SEC_ROLE_CLIENT;
}

int cmd_keygen(int argc, char **argv)
{
    static const struct option longopts[] = {{"out", required_argument, 0, 'o'},
                                              {"role", required_argument, 0, 'r'},
                                              {"tier", required_argument, 0, 't'},
                                              {"help", no_argument, 0, 'h'},
                                              {0, 0, 0, 0}};
    const char *out = NULL, *role_s = NULL, *tier_s = NULL;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'r': role_s = optarg; break;
        case 't': tier_s = optarg; break;
        case 'h': fputs(usage_text, stdout); return CLI_OK;
        default: return cli_bad_option(CMD, argv, optind);
        }
    }
    if (optind >= argc)
        return cli_usage_error(CMD, "NAME is missing (see --help)");
    if (optind + 1 < argc)
        return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind + 1]);
    if (!out)
        return cli_usage_error(CMD, "--out DIR is required");
    const char *name = argv[optind];
    int role = role_s ? sec_role_parse(role_s) : default_role(name);
    if (role < 0)
        return cli_usage_error(CMD, "--role '%s': expected node, client, operator or "
                               "coordinator", role_s);
    int tier = 0;
    if (role == SEC_ROLE_NODE) {
        tier = tier_s ? client_tier_parse(tier_s) : tier_of(name);
        if (tier <= 0)
            return cli_usage_error(CMD, "a node key needs --tier device, edge or cloud");
    } else if (tier_s) {
        return cli_usage_error(CMD, "--tier is only for a node key");
    }
    char pub[1024];
    ei_err_t err;
    if (sec_keygen(out, name, role, tier, pub, sizeof pub, &err) < 0)
        return err.code == EI_E_INVAL && strstr(err.msg, "name '")
                   ? cli_usage_error(CMD, "%s", err.msg)
                   : cli_fail(CMD, "%s", err.msg);
    printf("%s (%s%s%s) and %s_secret\n", pub, sec_role_name(role), tier ? ", tier " : "",
           tier ? client_tier_name(tier) : "", pub);
    return CLI_OK;
}
