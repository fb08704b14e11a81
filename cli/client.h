/* client: the einet tool's side of the coordinator's `clients` endpoint (docs/protocol.md),
 * shared by `einet infer`, `stats`, `result` and `fault`. One DEALER socket, plain
 * blocking calls bounded by timeouts (zmq_poll); no event loop is needed on this side.
 *
 * Also the pieces every client command shares: the --coordinator / --timeout-ms flags,
 * the names of statuses, tiers and links, and the JSON form of an Answer. */
#ifndef CLI_CLIENT_H
#define CLI_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "common/ei.h"
#include "wire/wire.h"

/* Default of --timeout-ms: how long a command waits to reach the coordinator and for each
 * reply. */
#define CLIENT_TIMEOUT_MS 5000

/* The environment variable that stands in for --coordinator (deploy/local.sh prints the
 * endpoint; `export EINET_COORDINATOR=$(deploy/local.sh up ... | tail -1)`). */
#define CLIENT_ENV "EINET_COORDINATOR"

typedef struct client client_t;

/* A DEALER connected to endpoint (ZMQ_IMMEDIATE, so a send waits for a live connection
 * rather than queueing for a coordinator that is not there). Connecting is asynchronous:
 * an unreachable endpoint shows on the first send. Caller owns the result; NULL and *err
 * (EI_E_INVAL for a malformed endpoint) on failure. */
client_t *client_new(const char *endpoint, ei_err_t *err);

/* The same over CURVE (docs/security.md): key is the caller's secret certificate file,
 * server_key the coordinator's public one; both NULL or "" is client_new. EI_E_INVAL /
 * EI_E_IO naming the file when one is missing, public where a secret one is needed, or
 * readable by others. */
client_t *client_new_keys(const char *endpoint, const char *key, const char *server_key,
                          ei_err_t *err);

/* Closes the socket and the context at once (linger 0). Accepts NULL; clears *self_p. */
void client_destroy(client_t **self_p);

const char *client_endpoint(const client_t *self);

/* Gives env the next seq (returned in env->seq) and sends it, with the tensor frame
 * data[0..numel) when the body carries one (NULL, 0 otherwise). Waits at most timeout_ms
 * for a connection: EI_E_PEER "cannot reach the coordinator at ..." when none comes up.
 * A message that fails the protocol's checks is refused before sending (EI_E_FORMAT,
 * EI_E_RANGE, EI_E_SHAPE). 0 on success. */
int client_send(client_t *self, einet_Envelope *env, const float *data, size_t numel,
                int timeout_ms, ei_err_t *err) EI_CHECK;

/* Receives and decodes one message, waiting at most timeout_ms (0: only what is already
 * there). EI_E_TIMEOUT when nothing arrived; the decoder's code and message (naming the
 * field) when the reply is malformed, and the message is then dropped. 0 on success. */
int client_recv(client_t *self, einet_Envelope *env, int timeout_ms, ei_err_t *err) EI_CHECK;

/* One request and its reply: sends *env, then receives until the message answering its
 * seq arrives (others are skipped) or timeout_ms passes. The reply replaces *env. An
 * Error body is returned as EI_E_PEER with the coordinator's message; a reply of another
 * body than reply_tag as EI_E_FORMAT. EI_E_TIMEOUT "no reply from the coordinator at ...
 * within N ms". */
int client_call(client_t *self, einet_Envelope *env, pb_size_t reply_tag, int timeout_ms,
                ei_err_t *err) EI_CHECK;

/* Names as on the command line and in JSON: "complete", "deadline", ... / "device",
 * "edge", "cloud" / "device-edge", "edge-cloud". "none" for 0, "unknown" out of range. */
const char *client_status_name(int status);
const char *client_tier_name(int tier);
const char *client_link_name(int link);

/* The value of a name above, or -1 when it is none of them (the *_NONE names included). */
int client_tier_parse(const char *name);
int client_link_parse(const char *name);

/* An Answer as the JSON object `einet infer` and `einet result` print:
 * {"id", "status", "class", "confidence", "exit", "tier", "latency_ms", "label", "mflop"}
 * (mflop: compute spent on the request up to the exit answered) plus
 * "index" (the client's tag: the test image's index) and "reason" when one is given.
 * class is -1 and tier null when no exit arrived (docs/protocol.md), label is null when
 * none was sent. New reference. */
json_t *client_answer_json(const einet_Answer *a);

/* Counts v[0..n) as a JSON object keyed by name(i) (NULL: the index), zero counts left
 * out. New reference. */
json_t *client_counts_json(const uint64_t *v, int n, const char *(*name)(int));

/* Parses the flags every client command shares: --coordinator ENDPOINT and
 * --timeout-ms N, from getopt_long's option character c and optarg. Returns 1 when the
 * option was one of them, 0 when it was not, and -1 (after printing the reason) for a bad
 * value: the command then exits with CLI_USAGE. */
typedef struct client_opts {
    const char *endpoint;
    long timeout_ms;
    const char *key;        /* --key: the caller's secret certificate; NULL: keyless */
    const char *server_key; /* --server-key: the coordinator's public certificate */
} client_opts_t;

/* The environment variables that stand in for --key and --server-key. */
#define CLIENT_KEY_ENV "EINET_KEY"
#define CLIENT_SERVER_KEY_ENV "EINET_SERVER_KEY"

#define CLIENT_OPT_COORDINATOR 0x1001
#define CLIENT_OPT_TIMEOUT 0x1002
#define CLIENT_OPT_KEY 0x1003
#define CLIENT_OPT_SERVER_KEY 0x1004
#define CLIENT_LONGOPTS                                                   \
    {"coordinator", required_argument, 0, CLIENT_OPT_COORDINATOR},        \
    {"timeout-ms", required_argument, 0, CLIENT_OPT_TIMEOUT},             \
    {"key", required_argument, 0, CLIENT_OPT_KEY},                        \
    {"server-key", required_argument, 0, CLIENT_OPT_SERVER_KEY}

void client_opts_init(client_opts_t *o);
int client_opts_parse(const char *cmd, client_opts_t *o, int c, const char *arg);

/* Completes the options after parsing: the endpoint from $EINET_COORDINATOR when the flag
 * was not given. 0, or -1 after printing the reason when no endpoint is known. */
int client_opts_finish(const char *cmd, client_opts_t *o);

/* Help text of the shared flags, for each command's usage. */
#define CLIENT_OPTS_HELP                                                                    \
    "  --coordinator ENDPOINT  the coordinator's client endpoint, e.g. tcp://127.0.0.1:5600\n" \
    "                          (default: $" CLIENT_ENV ")\n"                                 \
    "  --timeout-ms N          wait at most N ms to reach the coordinator and for a reply\n"  \
    "                          (default 5000)\n"                                              \
    "  --key FILE              your secret certificate, on a cluster with keys (CURVE)\n"    \
    "                          (default: $" CLIENT_KEY_ENV ")\n"                              \
    "  --server-key FILE       the coordinator's public certificate (default: $"           \
    CLIENT_SERVER_KEY_ENV ")\n"

/* Connects and runs one query: client_new + client_call with o's endpoint and timeout,
 * reporting any failure as "einet CMD: ..." on stderr. 0 with the reply in *env, or
 * CLI_FAIL. */
int client_query(const char *cmd, const client_opts_t *o, einet_Envelope *env,
                 pb_size_t reply_tag);

#endif
