/* sec: einet's security, one module (docs/security.md). With keys, every ZeroMQ socket uses
 * CURVE: servers (the coordinator's clients and nodes sockets, a node's bind socket) admit
 * only public keys on an allow-list through a ZAP handler, CZMQ's zauth over a zcertstore
 * directory of public certificates; clients (a node's connections, the einet tool) prove
 * their own secret certificate and check the server's public one. Each certificate's
 * metadata gives its role (node with a tier, client, operator, coordinator), and zauth hands
 * that metadata to every message the key sends, so the receiver knows who sent it.
 *
 * Without keys (local demos, tests) nothing is authenticated: every peer is trusted as an
 * operator, and sec_new says so once at start-up.
 *
 * ZeroMQ runs the ZAP handler in the context of the sockets it guards, and zauth runs in
 * CZMQ's context: every einet service therefore makes its sockets in sec_context(). */
#ifndef WIRE_SEC_H
#define WIRE_SEC_H

#include <stddef.h>

#include "common/ei.h"
#include "wire/xport.h"

typedef enum {
    SEC_ROLE_NONE = 0,    /* keyless peer: nothing proven, everything allowed */
    SEC_ROLE_NODE,        /* a tier node: tier and name in its certificate */
    SEC_ROLE_CLIENT,      /* submits requests, reads its own results and the statistics */
    SEC_ROLE_OPERATOR,    /* and injects faults, kills nodes, resets statistics, reads all */
    SEC_ROLE_COORDINATOR, /* the coordinator's own key (a server key; never a client's) */
    SEC_ROLE_UNKNOWN,     /* a key on the allow-list whose certificate names no role */
} sec_role_t;

#define SEC_KEY_MAX 41 /* Z85 public key and its terminator */

/* Who sent a message, as its key proved it (all empty / 0 on a keyless socket). */
typedef struct sec_peer {
    char key[SEC_KEY_MAX];
    int role; /* sec_role_t */
    int tier; /* einet_Tier of a node key, else 0 */
    char name[32];
} sec_peer_t;

/* What a peer may do on the coordinator's clients socket. */
typedef enum {
    SEC_DO_REQUEST,     /* submit a request */
    SEC_DO_STATS,       /* read statistics */
    SEC_DO_RESET,       /* reset statistics */
    SEC_DO_FAULT,       /* inject a fault or kill a node */
    SEC_DO_READ_ANY,    /* read any client's result */
} sec_action_t;

typedef struct sec sec_t;

/* The ZeroMQ context every einet service makes its sockets in: CZMQ's, with CZMQ's own
 * SIGINT/SIGTERM handling off (the services handle signals on their loop). */
void *sec_context(void);
/* Ends it once every socket is closed (at process end). */
void sec_context_end(void);

/* Security for process `prog`: its own secret certificate (secret_cert, "" for none) and
 * the allow-list directory of public certificates its server sockets admit (trust, "" for
 * none: a process with server sockets needs one). Both empty: keyless, said once on stderr.
 * zctx must be sec_context() when trust is set. Caller owns the result; NULL and *err (the
 * file and what is wrong with it) on failure. */
sec_t *sec_new(void *zctx, const char *prog, const char *secret_cert, const char *trust,
               ei_err_t *err);
void sec_destroy(sec_t **self_p);

/* 1 when keys are on. */
int sec_enabled(const sec_t *self);

/* Makes sock, before bind or connect, a CURVE server (server_cert NULL) or a CURVE client
 * of the server whose public certificate is the file server_cert. No-op when keyless or
 * self is NULL. 0 or EI_E_INVAL / EI_E_IO naming the file. */
int sec_apply(const sec_t *self, void *sock, const char *server_cert, ei_err_t *err) EI_CHECK;

/* The sender of a received message, from the metadata zauth attached. */
sec_peer_t sec_peer_of(const xport_msg_t *msg);

/* 1 when peer may do action. Keyless: always; with keys, by role. */
int sec_may(const sec_t *self, const sec_peer_t *peer, sec_action_t action);

/* Writes a new certificate pair DIR/NAME.key (public, with role, tier and name in its
 * metadata) and DIR/NAME.key_secret (mode 0600), creating DIR (0700) when missing. An
 * existing file is never overwritten: EI_E_INVAL. The public path goes to pub[0..cap). */
int sec_keygen(const char *dir, const char *name, int role, int tier, char *pub, size_t cap,
               ei_err_t *err) EI_CHECK;

const char *sec_role_name(int role);
/* "node", "client", "operator", "coordinator" -> SEC_ROLE_*, else -1. */
int sec_role_parse(const char *name);

#endif
