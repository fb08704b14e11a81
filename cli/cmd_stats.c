/* einet stats: the coordinator's statistics (requests by status, answers by exit and by
 * tier, accuracy, latency percentiles, links, nodes and their health, faults), as a
 * readable table or one JSON object. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "client.h"

#define CMD "stats"

static const char usage_text[] =
    "usage: einet stats --coordinator ENDPOINT [--json] [--reset] [--healthy]\n"
    "Prints the coordinator's statistics: requests by status, answers by exit and by tier,\n"
    "accuracy where labels were sent, latency percentiles, per-link latency and bandwidth,\n"
    "the nodes and their health, and the latest faults.\n" CLIENT_OPTS_HELP
    "  --json                  one JSON object instead of a table\n"
    "  --reset                 zero the counters after reading them\n"
    "  --healthy               only check health: exit 0 when every node is healthy and\n"
    "                          every link up, else say which is not and exit 1\n"
    "Exit status: 0, 1 when the coordinator cannot be reached or does not reply (or, with\n"
    "--healthy, something is unhealthy), 2 for a usage error.\n";

static json_t *links_json(const einet_StatsReply *s)
{
    json_t *a = json_array();
    for (int i = 0; i < s->links_count; i++) {
        const einet_LinkStats *l = &s->links[i];
        json_array_append_new(a, json_pack("{s:s, s:b, s:f, s:f, s:i}", "link",
                                           client_link_name(l->link), "up", l->up, "latency_ms",
                                           (double)l->latency_ms, "bandwidth_mbps",
                                           (double)l->bandwidth_mbps, "samples",
                                           (json_int_t)l->samples));
    }
    return a;
}

static json_t *nodes_json(const einet_StatsReply *s)
{
    json_t *a = json_array();
    for (int i = 0; i < s->nodes_count; i++) {
        const einet_NodeStats *n = &s->nodes[i];
        json_array_append_new(
            a, json_pack("{s:s, s:b, s:s, s:b, s:f, s:i, s:i, s:i}", "name",
                         n->name[0] ? n->name : client_tier_name(n->tier), "link_up", n->link_up,
                         "tier",
                         client_tier_name(n->tier),
                         "healthy", n->healthy, "last_seen_ms", n->last_seen_us / 1e3,
                         "first_block", (json_int_t)n->first_block, "last_block",
                         (json_int_t)n->last_block, "in_flight", (json_int_t)n->in_flight));
    }
    return a;
}

static json_t *faults_json(const einet_StatsReply *s)
{
    json_t *a = json_array();
    for (int i = 0; i < s->faults_count; i++) {
        const einet_FaultEvent *f = &s->faults[i];
        json_t *o = json_pack("{s:f, s:s}", "at_ms", f->at_us / 1e3, "what", f->what);
        if (f->tier)
            json_object_set_new(o, "tier", json_string(client_tier_name(f->tier)));
        if (f->link)
            json_object_set_new(o, "link", json_string(client_link_name(f->link)));
        json_array_append_new(a, o);
    }
    return a;
}

/* {"complete": 0.94, "device-ee": 1.0, ...}: accuracy of each status's labelled answers. */
static json_t *accuracy_by_status_json(const einet_StatsReply *s)
{
    json_t *o = json_object();
    for (int i = 0; i < s->labelled_by_status_count && i < s->correct_by_status_count; i++)
        if (s->labelled_by_status[i])
            json_object_set_new(o, client_status_name(i),
                                json_real((double)s->correct_by_status[i] /
                                          (double)s->labelled_by_status[i]));
    return o;
}

static void print_status_accuracy(const einet_StatsReply *s)
{
    printf("by status ");
    for (int i = 0; i < s->labelled_by_status_count && i < s->correct_by_status_count; i++)
        if (s->labelled_by_status[i])
            printf(" %s %.4f (%llu of %llu)", client_status_name(i),
                   (double)s->correct_by_status[i] / (double)s->labelled_by_status[i],
                   (unsigned long long)s->correct_by_status[i],
                   (unsigned long long)s->labelled_by_status[i]);
    printf("\n");
}

/* {"clients": {"forbidden": 3, ...}, "nodes": {...}}: refusals per socket and reason. */
static json_t *refusals_json(const einet_StatsReply *s)
{
    json_t *o = json_object();
    for (int i = 0; i < s->refusals_count; i++) {
        const einet_Refusal *r = &s->refusals[i];
        json_t *sock = json_object_get(o, r->socket);
        if (!sock) {
            sock = json_object();
            json_object_set_new(o, r->socket, sock);
        }
        json_object_set_new(sock, r->reason, json_integer((json_int_t)r->count));
    }
    return o;
}

/* `early` answers (a stop rule fired) per exit or tier: {"1": {"answers": 620, "accuracy":
 * 0.97}, ...}, labelled ones judged. */
static json_t *early_json(const uint64_t *n, const uint64_t *lab, const uint64_t *right,
                          int count, const char *(*name)(int))
{
    json_t *o = json_object();
    for (int i = 0; i < count; i++) {
        char key[16];
        if (!n[i])
            continue;
        snprintf(key, sizeof key, "%d", i);
        json_t *e = json_pack("{s:i}", "answers", (json_int_t)n[i]);
        if (lab[i])
            json_object_set_new(e, "accuracy", json_real((double)right[i] / (double)lab[i]));
        json_object_set_new(o, name ? name(i) : key, e);
    }
    return o;
}

static void print_early(const einet_StatsReply *s)
{
    int ne = s->early_by_exit_count, nt = s->early_by_tier_count;
    if (s->early_labelled_by_exit_count < ne || s->early_correct_by_exit_count < ne ||
        s->early_labelled_by_tier_count < nt || s->early_correct_by_tier_count < nt)
        return;
    printf("%-10s", "early");
    int any = 0;
    for (int i = 0; i < ne; i++) {
        if (!s->early_by_exit[i])
            continue;
        printf(" exit %d: %llu", i, (unsigned long long)s->early_by_exit[i]);
        if (s->early_labelled_by_exit[i])
            printf(" (%.4f right)", (double)s->early_correct_by_exit[i] /
                                        (double)s->early_labelled_by_exit[i]);
        any = 1;
    }
    for (int i = 0; i < nt; i++)
        if (s->early_by_tier[i])
            printf("%s %s %llu", i == 1 || !any ? ";" : ",", client_tier_name(i),
                   (unsigned long long)s->early_by_tier[i]);
    printf("%s\n", any ? "" : " -");
}

static void print_json(const einet_StatsReply *s)
{
    json_t *o = json_pack(
        "{s:i, s:o, s:o, s:o, s:i, s:i, s:f, s:f, s:f, s:f, s:o, s:o, s:i, s:i, s:o, s:f}",
        "requests", (json_int_t)s->requests, "by_status",
        client_counts_json(s->by_status, s->by_status_count, client_status_name), "by_exit",
        client_counts_json(s->by_exit, s->by_exit_count, NULL), "by_tier",
        client_counts_json(s->by_tier, s->by_tier_count, client_tier_name), "labelled",
        (json_int_t)s->labelled, "correct", (json_int_t)s->correct, "accuracy",
        s->labelled ? (double)s->correct / (double)s->labelled : 0.0, "latency_p50_ms",
        (double)s->latency_p50_ms, "latency_p95_ms", (double)s->latency_p95_ms,
        "latency_p99_ms", (double)s->latency_p99_ms, "links", links_json(s), "nodes",
        nodes_json(s), "bad_messages", (json_int_t)s->bad_messages, "faults_seen",
        (json_int_t)s->faults_seen, "faults", faults_json(s), "uptime_s", s->uptime_us / 1e6);
    json_object_set_new(o, "accuracy_by_status", accuracy_by_status_json(s));
    json_object_set_new(o, "refusals", refusals_json(s));
    int ne = s->early_by_exit_count, nt = s->early_by_tier_count;
    if (s->early_labelled_by_exit_count >= ne && s->early_correct_by_exit_count >= ne)
        json_object_set_new(o, "early_by_exit",
                            early_json(s->early_by_exit, s->early_labelled_by_exit,
                                       s->early_correct_by_exit, ne, NULL));
    if (s->early_labelled_by_tier_count >= nt && s->early_correct_by_tier_count >= nt)
        json_object_set_new(o, "early_by_tier",
                            early_json(s->early_by_tier, s->early_labelled_by_tier,
                                       s->early_correct_by_tier, nt, client_tier_name));
    json_object_set_new(o, "mflop_mean", json_real(s->mflop_mean));
    char *text = json_dumps(o, JSON_REAL_PRECISION(6));
    puts(text ? text : "{}");
    free(text);
    json_decref(o);
}

static void print_counts(const char *title, const uint64_t *v, int n, const char *(*name)(int))
{
    printf("%-10s", title);
    int any = 0;
    for (int i = 0; i < n; i++) {
        if (!v[i])
            continue;
        if (name)
            printf(" %s %llu", name(i), (unsigned long long)v[i]);
        else
            printf(" %d: %llu", i, (unsigned long long)v[i]);
        any = 1;
    }
    printf("%s\n", any ? "" : " -");
}

static void print_table(const einet_StatsReply *s)
{
    printf("uptime %.1f s, %llu requests, %llu bad messages refused, %llu faults seen\n",
           s->uptime_us / 1e6, (unsigned long long)s->requests,
           (unsigned long long)s->bad_messages, (unsigned long long)s->faults_seen);
    print_counts("status", s->by_status, s->by_status_count, client_status_name);
    print_counts("exit", s->by_exit, s->by_exit_count, NULL);
    print_counts("tier", s->by_tier, s->by_tier_count, client_tier_name);
    printf("accuracy   %.4f (%llu of %llu labelled)\n",
           s->labelled ? (double)s->correct / (double)s->labelled : 0.0,
           (unsigned long long)s->correct, (unsigned long long)s->labelled);
    print_status_accuracy(s);
    print_early(s);
    printf("compute    %.2f MFLOP per answer\n", (double)s->mflop_mean);
    printf("latency    p50 %.2f ms  p95 %.2f ms  p99 %.2f ms\n", (double)s->latency_p50_ms,
           (double)s->latency_p95_ms, (double)s->latency_p99_ms);
    printf("\n%-12s %-5s %12s %14s %8s\n", "link", "up", "latency ms", "bandwidth Mb/s",
           "samples");
    for (int i = 0; i < s->links_count; i++) {
        const einet_LinkStats *l = &s->links[i];
        printf("%-12s %-5s %12.3f %14.1f %8llu\n", client_link_name(l->link), l->up ? "yes" : "NO",
               (double)l->latency_ms, (double)l->bandwidth_mbps, (unsigned long long)l->samples);
    }
    printf("\n%-7s %-8s %-7s %14s %9s  %s\n", "node", "healthy", "blocks", "last seen ms",
           "in flight", "name");
    for (int i = 0; i < s->nodes_count; i++) {
        const einet_NodeStats *n = &s->nodes[i];
        char blocks[24];
        snprintf(blocks, sizeof blocks, "%u-%u", n->first_block, n->last_block);
        printf("%-7s %-8s %-7s %14.1f %9u  %s\n", client_tier_name(n->tier),
               n->healthy ? "yes" : "NO", blocks, n->last_seen_us / 1e3, n->in_flight,
               n->name[0] ? n->name : "-");
    }
    if (s->refusals_count)
        printf("\nrefused:");
    for (int i = 0; i < s->refusals_count; i++)
        printf(" %s/%s %llu", s->refusals[i].socket, s->refusals[i].reason,
               (unsigned long long)s->refusals[i].count);
    if (s->refusals_count)
        printf("\n");
    if (s->faults_count)
        printf("\nlatest faults:\n");
    for (int i = 0; i < s->faults_count; i++) {
        const einet_FaultEvent *f = &s->faults[i];
        printf("  %10.3f s  %-6s %-11s %s\n", f->at_us / 1e6, f->tier ? client_tier_name(f->tier) : "",
               f->link ? client_link_name(f->link) : "", f->what);
    }
}

/* "All healthy" of docs/protocol.md: every node healthy and every link up. Prints one line
 * on stdout either way; CLI_OK or CLI_FAIL. */
static int check_health(const einet_StatsReply *s)
{
    char why[512] = "";
    size_t len = 0;
    for (int i = 0; i < s->nodes_count && len < sizeof why; i++) {
        const einet_NodeStats *n = &s->nodes[i];
        char seen[48] = "no heartbeat yet";
        if (n->healthy)
            continue;
        if (n->last_seen_us)
            snprintf(seen, sizeof seen, "last seen %.0f ms ago", n->last_seen_us / 1e3);
        len += (size_t)snprintf(why + len, sizeof why - len, "%snode %s (%s)", len ? ", " : "",
                                n->name[0] ? n->name : client_tier_name(n->tier), seen);
    }
    for (int i = 0; i < s->links_count && len < sizeof why; i++)
        if (!s->links[i].up)
            len += (size_t)snprintf(why + len, sizeof why - len, "%slink %s down",
                                    len ? ", " : "", client_link_name(s->links[i].link));
    if (s->nodes_count == 0)
        snprintf(why, sizeof why, "the coordinator knows no nodes");
    if (why[0]) {
        printf("unhealthy: %s\n", why);
        return CLI_FAIL;
    }
    printf("healthy:");
    for (int i = 0; i < s->nodes_count; i++)
        printf(" %s", s->nodes[i].name[0] ? s->nodes[i].name : client_tier_name(s->nodes[i].tier));
    printf(", %d link%s up\n", s->links_count, s->links_count == 1 ? "" : "s");
    return CLI_OK;
}

int cmd_stats(int argc, char **argv)
{
    static const struct option longopts[] = {CLIENT_LONGOPTS,
                                              {"json", no_argument, 0, 'j'},
                                              {"reset", no_argument, 0, 'r'},
                                              {"healthy", no_argument, 0, 'H'},
                                              {"help", no_argument, 0, 'h'},
                                              {0, 0, 0, 0}};
    client_opts_t o;
    client_opts_init(&o);
    int json = 0, reset = 0, healthy = 0, c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int r = client_opts_parse(CMD, &o, c, optarg);
        if (r < 0)
            return CLI_USAGE;
        if (r > 0)
            continue;
        switch (c) {
        case 'j': json = 1; break;
        case 'r': reset = 1; break;
        case 'H': healthy = 1; break;
        case 'h': fputs(usage_text, stdout); return CLI_OK;
        default: return cli_bad_option(CMD, argv, optind);
        }
    }
    if (optind < argc)
        return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
    if (client_opts_finish(CMD, &o))
        return CLI_USAGE;
    einet_Envelope *env = ei_calloc(1, sizeof *env);
    if (!env)
        return cli_fail(CMD, "out of memory");
    wire_env_init(env, einet_Envelope_stats_query_tag);
    env->body.stats_query.reset = reset;
    int rc = client_query(CMD, &o, env, einet_Envelope_stats_reply_tag);
    if (!rc && healthy)
        rc = check_health(&env->body.stats_reply);
    else if (!rc)
        json ? print_json(&env->body.stats_reply) : print_table(&env->body.stats_reply);
    free(env);
    return rc;
}
