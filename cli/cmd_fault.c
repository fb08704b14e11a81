/* einet fault: fault injection through the coordinator, inside the nodes, so a link can
 * fail (for a time, with added delay or random loss) or a tier die on any machine. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "client.h"

#define CMD "fault"

static const char usage_text[] =
    "usage: einet fault --coordinator ENDPOINT --link device-edge|edge-cloud\n"
    "                   [--down SECONDS] [--delay MS] [--loss PCT] [--clear]\n"
    "       einet fault --coordinator ENDPOINT --kill device|edge|cloud\n"
    "Injects a fault inside the nodes, through the coordinator. On a link (its sending\n"
    "node applies it): --down drops everything for SECONDS, --delay adds MS of one-way\n"
    "delay, --loss drops PCT percent at random; --clear restores the link first (alone: just\n"
    "restores it). --kill makes that tier's node exit at once, as with SIGKILL.\n"
    "Prints the node's acknowledgement.\n" CLIENT_OPTS_HELP
    "Exit status: 0 when the fault was applied, 1 when it was refused or the coordinator\n"
    "cannot be reached, 2 for a usage error.\n";

typedef struct {
    int link, kill, clear, any_link_setting;
    double down_s, delay_ms, loss_pct;
} fault_args_t;

static int parse_value(const char *flag, const char *s, double hi, double *out)
{
    if (cli_parse_double(s, 0, hi, out))
        return cli_usage_error(CMD, "%s: '%s' is not in [0, %g]", flag, s, hi);
    return 0;
}

static int check_args(const fault_args_t *f)
{
    if (f->kill && (f->link || f->any_link_setting || f->clear))
        return cli_usage_error(CMD, "--kill cannot be combined with link settings");
    if (!f->kill && !f->link)
        return cli_usage_error(CMD, "give --link LINK with --down, --delay, --loss or "
                                    "--clear, or --kill TIER (see --help)");
    if (f->link && !f->any_link_setting && !f->clear)
        return cli_usage_error(CMD, "--link needs --down, --delay, --loss or --clear");
    if (!f->link && f->any_link_setting)
        return cli_usage_error(CMD, "--down, --delay and --loss need --link");
    return 0;
}

static int parse_args(int argc, char **argv, client_opts_t *o, fault_args_t *f)
{
    static const struct option longopts[] = {
        CLIENT_LONGOPTS,
        {"link", required_argument, 0, 'l'},
        {"down", required_argument, 0, 'D'},
        {"delay", required_argument, 0, 'd'},
        {"loss", required_argument, 0, 'L'},
        {"clear", no_argument, 0, 'c'},
        {"kill", required_argument, 0, 'k'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int c, rc = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1 && !rc) {
        int r = client_opts_parse(CMD, o, c, optarg);
        if (r < 0)
            return CLI_USAGE;
        if (r > 0)
            continue;
        switch (c) {
        case 'h': fputs(usage_text, stdout); return -1;
        case 'c': f->clear = 1; break;
        case 'D': rc = parse_value("--down", optarg, 86400, &f->down_s); break;
        case 'd': rc = parse_value("--delay", optarg, 3600000, &f->delay_ms); break;
        case 'L': rc = parse_value("--loss", optarg, 100, &f->loss_pct); break;
        case 'l':
            if ((f->link = client_link_parse(optarg)) < 0)
                return cli_usage_error(CMD, "--link: '%s' is not device-edge or edge-cloud",
                                       optarg);
            break;
        case 'k':
            if ((f->kill = client_tier_parse(optarg)) < 0)
                return cli_usage_error(CMD, "--kill: '%s' is not device, edge or cloud", optarg);
            break;
        default: return cli_bad_option(CMD, argv, optind);
        }
        f->any_link_setting |= c == 'D' || c == 'd' || c == 'L';
    }
    if (rc)
        return rc;
    if (optind < argc)
        return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
    if ((rc = check_args(f)))
        return rc;
    return client_opts_finish(CMD, o) ? CLI_USAGE : 0;
}

int cmd_fault(int argc, char **argv)
{
    client_opts_t o;
    fault_args_t f = {0};
    client_opts_init(&o);
    int rc = parse_args(argc, argv, &o, &f);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_fault_tag);
    einet_Fault *m = &env.body.fault;
    m->link = (einet_Link)f.link;
    m->kill = (einet_Tier)f.kill;
    m->clear = f.clear;
    m->down_ms = (uint32_t)(f.down_s * 1e3 + 0.5);
    m->delay_ms = (uint32_t)(f.delay_ms + 0.5);
    m->loss_pct = (float)f.loss_pct;
    rc = client_query(CMD, &o, &env, einet_Envelope_ack_tag);
    if (rc)
        return rc;
    if (!env.body.ack.ok)
        return cli_fail(CMD, "refused: %s", env.body.ack.detail[0] ? env.body.ack.detail : "no reason given");
    printf("ok%s%s\n", env.body.ack.detail[0] ? ": " : "", env.body.ack.detail);
    return CLI_OK;
}
