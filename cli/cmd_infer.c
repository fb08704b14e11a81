/* einet infer: streams the first N Fashion-MNIST test images, with their labels, through
 * the coordinator, keeping a bounded window of requests in flight so the tiers overlap,
 * and prints one JSON line per answer. Never hangs: each request has a client-side
 * timeout, the whole run an overall one, and both end in a clear error. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "client.h"
#include "nn/dataset.h"

#define CMD "infer"
#define DEFAULT_COUNT 100
#define DEFAULT_WINDOW 16
#define DEFAULT_TOTAL_MS 600000
#define CLI_STATUSES 16 /* room for every Status value */
#define DEFAULT_RESTART_WAIT_MS 30000
/* Requests acknowledged but not answered for this long are asked for by id, every POLL_S:
 * their answer may have been kept by a coordinator that could not deliver it (restarted,
 * or this client was slow). */
#define POLL_AFTER_S 1.0
#define POLL_S 0.5
#define POLL_MAX 512
/* An unacknowledged request is sent again at most this many times (after a coordinator
 * restart it may never have been recorded). */
#define MAX_RESEND 3
#define QUERY_SLOTS 8192

static const char usage_text[] =
    "usage: einet infer --coordinator ENDPOINT [--count N] [--deadline-ms D | --deadline-us D]\n"
    "                   [--stop RULE] [--policy P] [--device NAME] [--json]\n"
    "       einet infer --coordinator ENDPOINT --input FILE... [--resize] [...]\n"
    "Sends the first N Fashion-MNIST test images with their labels (or the given files) and\n"
    "prints one JSON line per answer on stdout, in the order answers arrive:\n"
    "  {\"id\", \"index\", \"status\", \"class\", \"confidence\", \"exit\", \"tier\",\n"
    "   \"latency_ms\", \"label\", \"mflop\"[, \"reason\"][, \"input\"]}\n"
    "(id: the coordinator's request id, for 'einet result'; index: the test image or the\n"
    "file's position; input: the file). A summary\n"
    "follows on stderr: readable, or one JSON object with --json. Each request is\n"
    "acknowledged with its id at once; an acknowledged request whose answer does not come is\n"
    "asked for by id (after a coordinator restart, or answers it could not deliver), and an\n"
    "unacknowledged one is sent again (at most 3 times) once the coordinator is back.\n" CLIENT_OPTS_HELP
    "                          each request's answer is awaited that long after its\n"
    "                          deadline (or after sending, with no deadline)\n"
    "  --count N               images to send (default 100, at most 10000)\n"
    "  --deadline-ms D         each request's deadline, counted by the coordinator\n"
    "  --stop RULE             each request's stop rule: none, confidence:T, entropy:T or\n"
    "                          einet:A (docs/elastic.md); default: the cluster's (`stop`)\n"
    "  --deadline-us D         the same in microseconds (answered within the tolerance of\n"
    "                          docs/tiers.md, with the deepest exit arrived by then)\n"
    "  --policy P              how the nodes pick exits: planned (the cluster's, default),\n"
    "                          fixed:BITS (e.g. fixed:11111111, never replanned) or\n"
    "                          confidence:T (every branch until confidence >= T)\n"
    "  --device NAME           the device (node name) that must run every request\n"
    "                          (default: the coordinator picks the least loaded)\n"
    "  --window N              requests in flight at once (default 16)\n"
    "  --total-timeout-ms N    give up on the whole run after N ms (default 600000)\n"
    "  --json                  the summary as one JSON object\n"
    "  --acks                  also print {\"accepted\": ID, \"index\": I} as each request is\n"
    "                          acknowledged\n"
    "  --restart-wait-ms N     how long a silent coordinator is waited for (it may be\n"
    "                          restarting) before acknowledged requests are given up\n"
    "                          (default 30000)\n"
    "  --quiet                 no summary\n"
    "  --data DIR              Fashion-MNIST directory (default " NN_DATASET_DEFAULT_DIR ")\n"
    "  --input FILE...         send these files instead: PNG images (gray or RGB, converted\n"
    "                          to the model's channels, scaled to [0, 1]) or .npy float32\n"
    "                          arrays of the model's input shape; the shape comes from the\n"
    "                          coordinator (model_info); every file is checked before any\n"
    "                          is sent\n"
    "  --resize                scale PNG images of another size to the model's (bilinear)\n"
    "Exit status: 0 when every request got exactly one answer (of any status), 1 when one\n"
    "got none in time, was refused or answered twice, or the coordinator cannot be reached;\n"
    "2 for a usage error.\n";

enum { ST_UNSENT, ST_INFLIGHT, ST_ACKED, ST_ANSWERED, ST_TIMEDOUT };

typedef struct query_slot {
    uint64_t seq;
    long index;
} query_slot_t;

typedef struct infer {
    client_opts_t o;
    long count, deadline_ms, window, total_ms, restart_wait_ms;
    int has_stop;
    einet_StopRule stop;
    uint64_t deadline_us; /* from either flag */
    int policy;           /* einet_Policy */
    double threshold;
    char plan[WIRE_MAX_BLOCKS + 1];
    const char *device; /* --device: the node name that must run every request, or NULL */
    int json, quiet, print_acks;
    const char *data_dir;
    char **inputs; /* --input files (argv's), or NULL */
    int ninputs, resize, in_c;
    /* run state */
    client_t *c;
    nn_dataset_t *data;
    uint8_t *state, *resends;
    double *sent_at;
    uint64_t *id;      /* acknowledged (then answered) request id per image */
    uint64_t *seq_of;  /* the seq of each image's latest send, for Error replies */
    query_slot_t *queries;
    double last_heard, next_poll;
    int acks_seen;
    long next, low, inflight, answered, timed_out, refused, duplicates, strays;
    long acked, resent, queried, superseded;
    /* summary */
    uint64_t by_status[CLI_STATUSES], by_exit[WIRE_MAX_BLOCKS + 1], by_tier[4], labelled, correct;
    double *latency; /* coordinator-reported latency of each answer, ms */
    double latency_sum, mflop_sum;
    long reached[4]; /* answers from requests that reached each tier (index = Tier) */
    double t_start;
} infer_t;

static int parse_policy(const char *s, infer_t *a)
{
    if (!strcmp(s, "planned")) {
        a->policy = einet_Policy_POLICY_PLANNED;
        return 0;
    }
    if (!strncmp(s, "confidence:", 11)) {
        a->policy = einet_Policy_POLICY_CONFIDENCE;
        return cli_parse_double(s + 11, 0, 1, &a->threshold);
    }
    if (strncmp(s, "fixed:", 6) || !s[6] || strlen(s + 6) > WIRE_MAX_BLOCKS ||
        strspn(s + 6, "01") != strlen(s + 6))
        return -1;
    a->policy = einet_Policy_POLICY_FIXED;
    snprintf(a->plan, sizeof a->plan, "%s", s + 6);
    return 0;
}

static int parse_args(int argc, char **argv, infer_t *a)
{
    static const struct option longopts[] = {
        CLIENT_LONGOPTS,
        {"count", required_argument, 0, 'n'},
        {"deadline-ms", required_argument, 0, 'D'},
        {"stop", required_argument, 0, 'S'},
        {"deadline-us", required_argument, 0, 'U'},
        {"policy", required_argument, 0, 'P'},
        {"device", required_argument, 0, 'V'},
        {"window", required_argument, 0, 'w'},
        {"total-timeout-ms", required_argument, 0, 'T'},
        {"json", no_argument, 0, 'j'},
        {"acks", no_argument, 0, 'a'},
        {"restart-wait-ms", required_argument, 0, 'W'},
        {"quiet", no_argument, 0, 'q'},
        {"data", required_argument, 0, 'd'},
        {"input", required_argument, 0, 'i'},
        {"resize", no_argument, 0, 'R'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int r = client_opts_parse(CMD, &a->o, c, optarg);
        if (r < 0)
            return CLI_USAGE;
        if (r > 0)
            continue;
        switch (c) {
        case 'j': a->json = 1; break;
        case 'a': a->print_acks = 1; break;
        case 'W':
            if (cli_parse_long(optarg, 1, 86400000, &a->restart_wait_ms))
                return cli_usage_error(CMD, "--restart-wait-ms: '%s' is not in [1, 86400000]",
                                       optarg);
            break;
        case 'q': a->quiet = 1; break;
        case 'd': a->data_dir = optarg; break;
        case 'i': a->inputs[a->ninputs++] = optarg; break;
        case 'R': a->resize = 1; break;
        case 'V':
            if (!optarg[0] || strlen(optarg) >= sizeof(((einet_Request *)0)->device))
                return cli_usage_error(CMD, "--device: '%s' is not a node name (1 to %zu "
                                       "characters)", optarg,
                                       sizeof(((einet_Request *)0)->device) - 1);
            a->device = optarg;
            break;
        case 'h': fputs(usage_text, stdout); return -1;
        case 'n':
            if (cli_parse_long(optarg, 1, 10000, &a->count))
                return cli_usage_error(CMD, "--count: '%s' is not in [1, 10000]", optarg);
            break;
        case 'D':
            if (cli_parse_long(optarg, 1, WIRE_MAX_DEADLINE_MS, &a->deadline_ms))
                return cli_usage_error(CMD, "--deadline-ms: '%s' is not in [1, %u]", optarg,
                                       WIRE_MAX_DEADLINE_MS);
            if (a->deadline_us)
                return cli_usage_error(CMD, "--deadline-ms and --deadline-us: give one");
            a->deadline_us = (uint64_t)a->deadline_ms * 1000;
            break;
        case 'U': {
            long us;
            if (cli_parse_long(optarg, 1, (long)WIRE_MAX_DEADLINE_MS * 1000, &us))
                return cli_usage_error(CMD, "--deadline-us: '%s' is not in [1, %ld]", optarg,
                                       (long)WIRE_MAX_DEADLINE_MS * 1000);
            if (a->deadline_us)
                return cli_usage_error(CMD, "--deadline-ms and --deadline-us: give one");
            a->deadline_us = (uint64_t)us;
            break;
        }
        case 'P':
            if (parse_policy(optarg, a))
                return cli_usage_error(CMD, "--policy: '%s' is not planned, fixed:BITS (0/1 "
                                            "characters) or confidence:T (T in [0, 1])",
                                       optarg);
            break;
        case 'S': {
            char why[160];
            if (wire_stop_parse(optarg, &a->stop, why, sizeof why) < 0)
                return cli_usage_error(CMD, "--stop: %s", why);
            a->has_stop = 1;
            break;
        }
        case 'w':
            if (cli_parse_long(optarg, 1, 1000, &a->window))
                return cli_usage_error(CMD, "--window: '%s' is not in [1, 1000]", optarg);
            break;
        case 'T':
            if (cli_parse_long(optarg, 1, 86400000, &a->total_ms))
                return cli_usage_error(CMD, "--total-timeout-ms: '%s' is not in [1, 86400000]",
                                       optarg);
            break;
        default:
            return cli_bad_option(CMD, argv, optind);
        }
    }
    while (a->ninputs && optind < argc) /* --input a.png b.npy ... */
        a->inputs[a->ninputs++] = argv[optind++];
    if (optind < argc)
        return cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
    if (a->resize && !a->ninputs)
        return cli_usage_error(CMD, "--resize is for --input images");
    return client_opts_finish(CMD, &a->o) ? CLI_USAGE : 0;
}

/* The request's reply timeout: the shared --timeout-ms after its deadline. */
static double request_timeout_s(const infer_t *a)
{
    return (a->o.timeout_ms + a->deadline_us / 1e3) / 1e3;
}

static int send_request(infer_t *a, long i, ei_err_t *err)
{
    const nn_dataset_t *d = a->data;
    size_t numel = (size_t)a->in_c * (size_t)d->h * (size_t)d->w;
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_request_tag);
    einet_Request *r = &env.body.request;
    r->client_id = (uint64_t)i;
    uint32_t shape[4] = {1, (uint32_t)a->in_c, (uint32_t)d->h, (uint32_t)d->w};
    wire_meta_set(&r->input, &r->has_input, shape, 4);
    if (a->deadline_ms) { /* --deadline-ms: the field older coordinators read */
        r->has_deadline_ms = true;
        r->deadline_ms = (uint32_t)a->deadline_ms;
    } else if (a->deadline_us) {
        r->has_deadline_us = true;
        r->deadline_us = a->deadline_us;
    }
    r->policy = a->policy;
    r->threshold = (float)a->threshold;
    r->plan_count = (pb_size_t)strlen(a->plan);
    for (pb_size_t k = 0; k < r->plan_count; k++)
        r->plan[k] = a->plan[k] == '1';
    r->has_label = d->labels != NULL;
    r->label = d->labels ? d->labels[i] : 0;
    r->has_stop = a->has_stop;
    r->stop = a->stop;
    if (a->device)
        snprintf(r->device, sizeof r->device, "%s", a->device);
    int rc = client_send(a->c, &env, d->images + (size_t)i * numel, numel, (int)a->o.timeout_ms,
                         err);
    if (rc)
        return rc;
    a->seq_of[i] = env.seq;
    if (a->state[i] == ST_UNSENT)
        a->inflight++;
    a->state[i] = ST_INFLIGHT;
    a->sent_at[i] = ei_now();
    return 0;
}

static void print_answer(const infer_t *a, const einet_Answer *ans)
{
    json_t *o = client_answer_json(ans);
    if (a->ninputs)
        json_object_set_new(o, "input", json_string(a->inputs[ans->client_id]));
    char *text = json_dumps(o, JSON_REAL_PRECISION(9));
    if (text)
        puts(text);
    free(text);
    json_decref(o);
}

static void tally(infer_t *a, const einet_Answer *ans)
{
    a->by_status[ans->status < CLI_STATUSES ? ans->status : 0]++;
    a->by_exit[ans->exit <= WIRE_MAX_BLOCKS ? ans->exit : 0]++;
    a->by_tier[ans->tier < 4 ? ans->tier : 0]++;
    if (ans->has_label) {
        /* An answer without any exit counts as wrong, as in DESIGN.md. */
        a->labelled++;
        a->correct += ans->exit > 0 && ans->class_id == ans->label;
    }
    a->latency[a->answered] = ans->latency_us / 1e3;
    a->latency_sum += ans->latency_us / 1e3;
    a->mflop_sum += ans->mflop;
    /* The tiers a request reached: those up to its answer's (an answer with no exit says
     * nothing). */
    for (int t = einet_Tier_TIER_DEVICE; ans->exit && t <= (int)ans->tier && t < 4; t++)
        a->reached[t]++;
}

/* One answer: exactly one per request, for a request this run sent. */
static void on_answer(infer_t *a, const einet_Answer *ans)
{
    long i = (long)ans->client_id;
    if (ans->client_id >= (uint64_t)a->count || a->state[i] == ST_UNSENT) {
        fprintf(stderr, "einet infer: answer for image %llu, which was never sent: ignored\n",
                (unsigned long long)ans->client_id);
        a->strays++;
        return;
    }
    if (a->state[i] == ST_ANSWERED && ans->request_id != a->id[i]) {
        a->superseded++; /* an earlier send of a resent image: answered already */
        return;
    }
    if (a->state[i] == ST_ANSWERED) {
        fprintf(stderr, "einet infer: image %ld (request %llu) answered twice: the second, "
                        "'%s', ignored\n",
                i, (unsigned long long)ans->request_id, client_status_name(ans->status));
        a->duplicates++;
        return;
    }
    if (a->state[i] == ST_TIMEDOUT) {
        fprintf(stderr, "einet infer: image %ld: answer '%s' came after the timeout\n", i,
                client_status_name(ans->status));
        return;
    }
    a->state[i] = ST_ANSWERED;
    a->id[i] = ans->request_id;
    a->inflight--;
    tally(a, ans);
    a->answered++;
    print_answer(a, ans);
}

/* The acknowledgement of a request: its id, for queries. */
static void on_accepted(infer_t *a, const einet_Accepted *acc)
{
    long i = (long)acc->client_id;
    a->acks_seen = 1;
    if (acc->client_id >= (uint64_t)a->count || a->state[i] == ST_UNSENT) {
        fprintf(stderr, "einet infer: acknowledgement for image %llu, which was never sent\n",
                (unsigned long long)acc->client_id);
        a->strays++;
        return;
    }
    if (a->state[i] != ST_INFLIGHT)
        return; /* a resent image's other request: its first id is kept */
    a->state[i] = ST_ACKED;
    a->id[i] = acc->request_id;
    a->acked++;
    if (a->print_acks)
        printf("{\"accepted\": %llu, \"index\": %ld}\n", (unsigned long long)acc->request_id,
               i);
}

/* The reply to a query for an acknowledged request. */
static void on_result_reply(infer_t *a, const einet_Envelope *env)
{
    query_slot_t *q = &a->queries[env->reply_to % QUERY_SLOTS];
    if (q->seq != env->reply_to || q->seq == 0)
        return; /* a query whose slot was reused: it is asked again */
    long i = q->index;
    q->seq = 0;
    const einet_ResultReply *r = &env->body.result_reply;
    if (a->state[i] != ST_ACKED)
        return;
    if (!r->found) {
        fprintf(stderr, "einet infer: image %ld: the coordinator does not know request %llu\n", i,
                (unsigned long long)a->id[i]);
        a->state[i] = ST_TIMEDOUT;
        a->inflight--;
        a->timed_out++;
        return;
    }
    if (!r->pending && r->has_answer)
        on_answer(a, &r->answer);
}

/* Asks for the answers of requests acknowledged long ago and still unanswered. */
static void poll_acked(infer_t *a, double now)
{
    if (now < a->next_poll)
        return;
    a->next_poll = now + POLL_S;
    int n = 0;
    for (long i = a->low; i < a->next && n < POLL_MAX; i++) {
        if (a->state[i] != ST_ACKED || now - a->sent_at[i] < POLL_AFTER_S)
            continue;
        einet_Envelope env;
        ei_err_t err;
        wire_env_init(&env, einet_Envelope_result_query_tag);
        env.body.result_query.request_id = a->id[i];
        if (client_send(a->c, &env, NULL, 0, 0, &err) != 0)
            return; /* not connected now: the next round asks again */
        a->queries[env.seq % QUERY_SLOTS] = (query_slot_t){env.seq, i};
        a->queried++;
        n++;
    }
}

/* An Error reply refuses the request whose seq it answers. */
static void on_error(infer_t *a, const einet_Envelope *env)
{
    long i = -1;
    for (long k = a->low; k < a->next && i < 0; k++)
        if (a->seq_of[k] == env->reply_to)
            i = k;
    const einet_Error *e = &env->body.error;
    if (i < 0 || a->state[i] != ST_INFLIGHT) {
        fprintf(stderr, "einet infer: the coordinator sent an error: %s\n", e->message);
        a->strays++;
        return;
    }
    fprintf(stderr, "einet infer: image %ld refused by the coordinator: %s (%s)\n", i, e->message,
            ei_strerror(e->code));
    a->state[i] = ST_ANSWERED;
    a->inflight--;
    a->refused++;
}

/* Marks every request whose answer is overdue; they stop counting as in flight. An
 * unacknowledged request is sent again when this coordinator acknowledges requests (it may
 * have restarted before recording it); an acknowledged one is waited for while the
 * coordinator is heard from (it keeps every answer), up to --restart-wait-ms of silence. */
static void expire(infer_t *a, double now)
{
    while (a->low < a->next && a->state[a->low] != ST_INFLIGHT && a->state[a->low] != ST_ACKED)
        a->low++;
    double limit = request_timeout_s(a);
    int silent = now - a->last_heard > a->restart_wait_ms / 1e3;
    for (long i = a->low; i < a->next; i++) {
        if (a->state[i] == ST_ACKED && silent) {
            fprintf(stderr, "einet infer: image %ld (request %llu): no answer, and nothing from "
                            "the coordinator for %ld ms\n",
                    i, (unsigned long long)a->id[i], a->restart_wait_ms);
        } else if (a->state[i] != ST_INFLIGHT || a->sent_at[i] + limit > now) {
            continue;
        } else if (a->acks_seen && a->resends[i] < MAX_RESEND && !silent) {
            ei_err_t err;
            if (send_request(a, i, &err) == 0) {
                a->resends[i]++;
                a->resent++;
            }
            continue;
        } else {
            fprintf(stderr, "einet infer: image %ld: no answer within %ld ms of sending\n", i,
                    (long)(limit * 1e3));
        }
        a->state[i] = ST_TIMEDOUT;
        a->inflight--;
        a->timed_out++;
    }
}

/* Time to wait for the next message: until the oldest request in flight is overdue, the
 * next poll or the run's overall timeout, whichever comes first. */
static int wait_ms(infer_t *a, double now)
{
    while (a->low < a->next && a->state[a->low] != ST_INFLIGHT && a->state[a->low] != ST_ACKED)
        a->low++;
    double until = a->t_start + a->total_ms / 1e3;
    if (a->low < a->next && a->sent_at[a->low] + request_timeout_s(a) < until)
        until = a->sent_at[a->low] + request_timeout_s(a);
    if (a->acks_seen && a->next_poll < until)
        until = a->next_poll;
    double ms = (until - now) * 1e3 + 1;
    return ms < 0 ? 0 : ms > 100 ? 100 : (int)ms;
}

static int run(infer_t *a)
{
    ei_err_t err = {0};
    a->t_start = a->last_heard = ei_now();
    a->next_poll = a->t_start + POLL_S;
    int send_failed = 0;
    while (a->next < a->count || a->inflight > 0) {
        while (!send_failed && a->next < a->count && a->inflight < a->window) {
            if (send_request(a, a->next, &err)) {
                /* A coordinator that acknowledges requests may be restarting: try again
                 * while it has not been silent for --restart-wait-ms. */
                if (a->acks_seen && ei_now() - a->last_heard <= a->restart_wait_ms / 1e3)
                    break;
                /* Stop sending, but keep reading: answers to what was sent may already
                 * be queued (a coordinator answers everything it holds as it stops). */
                fprintf(stderr, "einet infer: image %ld: %s\n", a->next, err.msg);
                send_failed = 1;
                a->count = a->next;
                break;
            }
            a->next++;
        }
        if (a->inflight == 0 && (send_failed || a->next >= a->count))
            break;
        double now = ei_now();
        if (now - a->t_start >= a->total_ms / 1e3)
            return cli_fail(CMD,
                            "overall timeout: %ld of %ld images answered after %ld ms "
                            "(--total-timeout-ms)",
                            a->answered, a->count, a->total_ms);
        einet_Envelope env;
        int rc = client_recv(a->c, &env, wait_ms(a, now), &err);
        if (rc == 0)
            a->last_heard = ei_now();
        if (rc == 0 && env.which_body == einet_Envelope_answer_tag)
            on_answer(a, &env.body.answer);
        else if (rc == 0 && env.which_body == einet_Envelope_accepted_tag)
            on_accepted(a, &env.body.accepted);
        else if (rc == 0 && env.which_body == einet_Envelope_result_reply_tag)
            on_result_reply(a, &env);
        else if (rc == 0 && env.which_body == einet_Envelope_error_tag)
            on_error(a, &env);
        else if (rc == 0)
            fprintf(stderr, "einet infer: unexpected %s from the coordinator: ignored\n",
                    wire_body_name(env.which_body));
        else if (rc != EI_E_TIMEOUT)
            fprintf(stderr, "einet infer: bad reply ignored: %s\n", err.msg);
        expire(a, ei_now());
        if (a->acks_seen)
            poll_acked(a, ei_now());
    }
    return send_failed ? CLI_FAIL : 0;
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double percentile(const double *sorted, long n, double p)
{
    if (n == 0)
        return 0;
    long i = (long)(p * (double)(n - 1) + 0.5);
    return sorted[i];
}

static void summary_json(const infer_t *a, double secs, const double *p)
{
    json_t *o = json_pack(
        "{s:i, s:i, s:i, s:i, s:i, s:o, s:o, s:o, s:i, s:i, s:f, s:f, s:f, s:f, s:f, s:f}",
        "sent", (json_int_t)a->next, "answered", (json_int_t)a->answered, "timed_out",
        (json_int_t)a->timed_out, "refused", (json_int_t)a->refused, "duplicates",
        (json_int_t)a->duplicates, "by_status",
        client_counts_json(a->by_status, CLI_STATUSES, client_status_name), "by_exit",
        client_counts_json(a->by_exit, WIRE_MAX_BLOCKS + 1, NULL), "by_tier",
        client_counts_json(a->by_tier, 4, client_tier_name), "labelled", (json_int_t)a->labelled,
        "correct", (json_int_t)a->correct, "accuracy",
        a->labelled ? (double)a->correct / (double)a->labelled : 0.0, "latency_p50_ms", p[0],
        "latency_p95_ms", p[1], "latency_p99_ms", p[2], "seconds", secs, "answers_per_s",
        secs > 0 ? a->answered / secs : 0.0);
    double n = a->answered > 0 ? (double)a->answered : 1;
    json_object_set_new(o, "latency_mean_ms", json_real(a->latency_sum / n));
    json_object_set_new(o, "mflop_mean", json_real(a->mflop_sum / n));
    json_object_set_new(o, "reached_edge", json_real(a->reached[einet_Tier_TIER_EDGE] / n));
    json_object_set_new(o, "reached_cloud", json_real(a->reached[einet_Tier_TIER_CLOUD] / n));
    json_object_set_new(o, "accepted", json_integer(a->acked));
    json_object_set_new(o, "resent", json_integer(a->resent));
    json_object_set_new(o, "queried", json_integer(a->queried));
    json_object_set_new(o, "superseded", json_integer(a->superseded));
    json_object_set_new(o, "lost", json_integer(a->timed_out));
    char *text = json_dumps(o, JSON_REAL_PRECISION(6));
    fprintf(stderr, "%s\n", text ? text : "{}");
    free(text);
    json_decref(o);
}

static void summary_text(const infer_t *a, double secs, const double *p)
{
    fprintf(stderr, "%ld of %ld images answered in %.2f s (%.1f answers/s)", a->answered,
            a->next, secs, secs > 0 ? a->answered / secs : 0.0);
    if (a->timed_out || a->refused || a->duplicates)
        fprintf(stderr, "; %ld timed out, %ld refused, %ld answered twice", a->timed_out,
                a->refused, a->duplicates);
    fprintf(stderr, "\nacknowledged %ld; lost %ld", a->acked, a->timed_out);
    if (a->resent || a->queried)
        fprintf(stderr, "; %ld sent again, %ld asked for by id", a->resent, a->queried);
    fprintf(stderr, "\nby status:");
    for (int s = 0; s < CLI_STATUSES; s++)
        if (a->by_status[s])
            fprintf(stderr, " %s %llu", client_status_name(s),
                    (unsigned long long)a->by_status[s]);
    fprintf(stderr, "\nby exit:  ");
    for (int k = 0; k <= WIRE_MAX_BLOCKS; k++)
        if (a->by_exit[k])
            fprintf(stderr, " %d: %llu", k, (unsigned long long)a->by_exit[k]);
    fprintf(stderr, "\nby tier:  ");
    for (int t = 0; t < 4; t++)
        if (a->by_tier[t])
            fprintf(stderr, " %s %llu", client_tier_name(t), (unsigned long long)a->by_tier[t]);
    fprintf(stderr, "\naccuracy: %.4f (%llu of %llu labelled)\n",
            a->labelled ? (double)a->correct / (double)a->labelled : 0.0,
            (unsigned long long)a->correct, (unsigned long long)a->labelled);
    double n = a->answered > 0 ? (double)a->answered : 1;
    fprintf(stderr, "latency:   mean %.2f ms  p50 %.2f ms  p95 %.2f ms  p99 %.2f ms\n",
            a->latency_sum / n, p[0], p[1], p[2]);
    fprintf(stderr, "compute:   %.2f MFLOP per answer; reached the edge %.1f%%, the cloud %.1f%%\n",
            a->mflop_sum / n, 100 * a->reached[einet_Tier_TIER_EDGE] / n,
            100 * a->reached[einet_Tier_TIER_CLOUD] / n);
}

static void summary(infer_t *a)
{
    double secs = ei_now() - a->t_start;
    qsort(a->latency, (size_t)a->answered, sizeof *a->latency, cmp_double);
    double p[3] = {percentile(a->latency, a->answered, 0.50),
                   percentile(a->latency, a->answered, 0.95),
                   percentile(a->latency, a->answered, 0.99)};
    if (a->json)
        summary_json(a, secs, p);
    else
        summary_text(a, secs, p);
}

/* The model's input [C, H, W] from the coordinator (model_info), then every --input file
 * read and checked into a dataset without labels; nothing is sent before all are good. */
static int load_inputs(infer_t *a)
{
    ei_err_t err = {0};
    einet_Envelope env;
    wire_env_init(&env, einet_Envelope_model_info_query_tag);
    if (client_call(a->c, &env, einet_Envelope_model_info_reply_tag, (int)a->o.timeout_ms,
                    &err) < 0)
        return cli_fail(CMD, "asking the model's input shape: %s", err.msg);
    const einet_ModelInfoReply *m = &env.body.model_info_reply;
    uint64_t n3 = (uint64_t)m->input_shape[0] * m->input_shape[1] * m->input_shape[2];
    if (m->input_shape_count != 3 || n3 == 0 || n3 > (1u << 24) || m->input_shape[0] > 4096 ||
        m->input_shape[1] > 65536 || m->input_shape[2] > 65536)
        return cli_fail(CMD, "the coordinator gave no usable input shape");
    int c = (int)m->input_shape[0], h = (int)m->input_shape[1], w = (int)m->input_shape[2];
    size_t numel = (size_t)c * (size_t)h * (size_t)w;
    a->data = ei_calloc(1, sizeof *a->data);
    if (!a->data || !(a->data->images = ei_calloc((size_t)a->ninputs * numel, sizeof(float))))
        return cli_fail(CMD, "out of memory for %d inputs", a->ninputs);
    a->data->count = a->ninputs;
    a->data->h = h;
    a->data->w = w;
    a->in_c = c;
    for (int i = 0; i < a->ninputs; i++)
        if (cli_input_load(a->inputs[i], c, h, w, a->resize, a->data->images + (size_t)i * numel,
                           &err) < 0)
            return cli_usage_error(CMD, "%s", err.msg);
    return 0;
}

static int infer_main(infer_t *a)
{
    ei_err_t err = {0};
    if (a->ninputs) {
        a->c = client_new_keys(a->o.endpoint, a->o.key, a->o.server_key, &err);
        if (!a->c)
            return cli_fail(CMD, "%s", err.msg);
        int rc = load_inputs(a);
        if (rc)
            return rc;
        a->count = a->ninputs;
    } else {
        a->in_c = 1;
        a->data = nn_dataset_load(a->data_dir, "test", &err);
    }
    if (!a->data)
        return cli_fail(CMD, "%s", err.msg);
    if (a->count > a->data->count)
        a->count = a->data->count;
    a->state = ei_calloc((size_t)a->count, 1);
    a->resends = ei_calloc((size_t)a->count, 1);
    a->id = ei_calloc((size_t)a->count, sizeof *a->id);
    a->seq_of = ei_calloc((size_t)a->count, sizeof *a->seq_of);
    a->queries = ei_calloc(QUERY_SLOTS, sizeof *a->queries);
    a->sent_at = ei_calloc((size_t)a->count, sizeof *a->sent_at);
    a->latency = ei_calloc((size_t)a->count, sizeof *a->latency);
    if (!a->state || !a->sent_at || !a->latency || !a->resends || !a->id || !a->seq_of ||
        !a->queries)
        return cli_fail(CMD, "out of memory");
    if (!a->c && !(a->c = client_new_keys(a->o.endpoint, a->o.key, a->o.server_key, &err)))
        return cli_fail(CMD, "%s", err.msg);
    int rc = run(a);
    if (!a->quiet && a->next > 0)
        summary(a);
    if (rc)
        return rc;
    if (a->timed_out || a->refused || a->duplicates)
        return cli_fail(CMD, "%ld of %ld images got no answer in time, %ld were refused, %ld "
                             "answered twice",
                        a->timed_out, a->count, a->refused, a->duplicates);
    return CLI_OK;
}

int cmd_infer(int argc, char **argv)
{
    infer_t *a = ei_calloc(1, sizeof *a);
    if (!a)
        return cli_fail(CMD, "out of memory");
    client_opts_init(&a->o);
    a->count = DEFAULT_COUNT;
    a->window = DEFAULT_WINDOW;
    a->total_ms = DEFAULT_TOTAL_MS;
    a->restart_wait_ms = DEFAULT_RESTART_WAIT_MS;
    setvbuf(stdout, NULL, _IOLBF, 0); /* a reader of the pipe sees each answer at once */
    a->inputs = ei_calloc((size_t)argc + 1, sizeof *a->inputs);
    int rc = a->inputs ? parse_args(argc, argv, a) : cli_fail(CMD, "out of memory");
    if (rc == 0)
        rc = infer_main(a);
    else if (rc < 0)
        rc = CLI_OK;
    client_destroy(&a->c);
    nn_dataset_destroy(&a->data);
    free(a->state);
    free(a->resends);
    free(a->id);
    free(a->seq_of);
    free(a->queries);
    free(a->sent_at);
    free(a->latency);
    free(a->inputs);
    free(a);
    return rc;
}
