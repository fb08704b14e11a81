/* CURVE, the allow-list ZAP handler and roles (see sec.h). Certificates, the certificate
 * store and the ZAP handler are CZMQ's (zcert, zcertstore, zauth); this file only decides
 * which sockets are servers or clients and what each role may do. */
#include "wire/sec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <czmq.h>

#include "proto/messages.pb.h"

#define SEC_PATH_MAX 1100

/* The ZAP domain of einet's server sockets (zauth admits by key, whatever the domain). */
#define SEC_ZAP_DOMAIN "einet"

struct sec {
    int enabled;
    zcert_t *cert;
    zactor_t *auth; /* the ZAP handler; NULL for a process without server sockets */
};

void *sec_context(void)
{
    zsys_handler_set(NULL);
    return zsys_init();
}

void sec_context_end(void)
{
    zsys_shutdown();
}

static int secret_is_zero(zcert_t *cert)
{
    const byte *k = zcert_secret_key(cert);
    for (int i = 0; i < 32; i++)
        if (k[i])
            return 0;
    return 1;
}

/* The secret certificate: readable, really secret, and readable by nobody else. */
static zcert_t *load_secret(const char *path, ei_err_t *err)
{
    struct stat st;
    char secret[SEC_PATH_MAX];
    size_t len = strlen(path);
    if (stat(path, &st) != 0) {
        ei_err_set(err, EI_E_IO, "key %s: %s (make one with einet keygen)", path, strerror(errno));
        return NULL;
    }
    /* zcert_load would quietly take NAME.key_secret beside a public NAME.key. */
    if ((len < 7 || strcmp(path + len - 7, "_secret") != 0) &&
        (size_t)snprintf(secret, sizeof secret, "%s_secret", path) < sizeof secret &&
        access(secret, F_OK) == 0) {
        ei_err_set(err, EI_E_INVAL, "key %s: a public certificate; 'key' names the secret one "
                   "(%s)", path, secret);
        return NULL;
    }
    if (st.st_mode & 077) {
        ei_err_set(err, EI_E_INVAL, "key %s: mode %04o lets others read a secret certificate "
                   "(chmod 600 it)", path, (unsigned)(st.st_mode & 07777));
        return NULL;
    }
    zcert_t *cert = zcert_load(path);
    if (!cert) {
        ei_err_set(err, EI_E_FORMAT, "key %s: not a certificate", path);
        return NULL;
    }
    if (secret_is_zero(cert)) {
        zcert_destroy(&cert);
        ei_err_set(err, EI_E_INVAL, "key %s: a public certificate; 'key' names the secret one "
                   "(NAME.key_secret)", path);
        return NULL;
    }
    return cert;
}

static int start_auth(sec_t *s, void *zctx, const char *trust, ei_err_t *err)
{
    struct stat st;
    if (stat(trust, &st) != 0 || !S_ISDIR(st.st_mode))
        return ei_err_set(err, EI_E_IO, "trust %s: not a directory of public certificates",
                          trust);
    if (zctx != zsys_init())
        return ei_err_set(err, EI_E_INVAL, "trust: the sockets are not in sec_context()");
    s->auth = zactor_new(zauth, NULL);
    if (!s->auth)
        return ei_err_set(err, EI_E_IO, "trust %s: cannot start the ZAP handler", trust);
    if (zstr_sendx(s->auth, "CURVE", trust, NULL) != 0 || zsock_wait(s->auth) != 0)
        return ei_err_set(err, EI_E_IO, "trust %s: the ZAP handler did not take it", trust);
    return 0;
}

sec_t *sec_new(void *zctx, const char *prog, const char *secret_cert, const char *trust,
               ei_err_t *err)
{
    sec_t *s = calloc(1, sizeof *s);
    if (!s) {
        ei_err_set(err, EI_E_NOMEM, "out of memory");
        return NULL;
    }
    zsys_handler_set(NULL); /* CZMQ must never take over SIGINT/SIGTERM */
    secret_cert = secret_cert ? secret_cert : "";
    trust = trust ? trust : "";
    if (!secret_cert[0] && !trust[0]) {
        (void)prog; /* ei_log names the program */
        ei_log(EI_LOG_WARN, "unauthenticated: no keys configured, so any process that reaches "
               "its sockets is trusted (docs/security.md)");
        return s;
    }
    if (!secret_cert[0]) {
        ei_err_set(err, EI_E_INVAL, "'trust' is set but 'key' (this process's secret "
                   "certificate) is not");
        goto fail;
    }
    if (!(s->cert = load_secret(secret_cert, err)))
        goto fail;
    if (trust[0] && start_auth(s, zctx, trust, err) < 0)
        goto fail;
    s->enabled = 1;
    return s;
fail:
    sec_destroy(&s);
    return NULL;
}

void sec_destroy(sec_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    sec_t *s = *self_p;
    zactor_destroy(&s->auth);
    zcert_destroy(&s->cert);
    free(s);
    *self_p = NULL;
}

int sec_enabled(const sec_t *self)
{
    return self && self->enabled;
}

int sec_apply(const sec_t *self, void *sock, const char *server_cert, ei_err_t *err)
{
    if (!sec_enabled(self))
        return 0;
    if (!server_cert) {
        int one = 1;
        if (!self->auth)
            return ei_err_set(err, EI_E_INVAL, "a server socket needs 'trust' (the allow-list)");
        zcert_apply(self->cert, sock);
        if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
            zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, SEC_ZAP_DOMAIN, strlen(SEC_ZAP_DOMAIN)) != 0)
            return ei_err_set(err, EI_E_INVAL, "CURVE server: %s", zmq_strerror(zmq_errno()));
        return 0;
    }
    if (!server_cert[0])
        return ei_err_set(err, EI_E_INVAL, "no server key: name the peer's public certificate");
    zcert_t *srv = zcert_load(server_cert);
    if (!srv)
        return ei_err_set(err, EI_E_IO, "server key %s: not a readable certificate", server_cert);
    zcert_apply(self->cert, sock);
    int rc = zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, zcert_public_txt(srv), 40);
    zcert_destroy(&srv);
    return rc ? ei_err_set(err, EI_E_INVAL, "CURVE client: %s", zmq_strerror(zmq_errno())) : 0;
}

static const char *const role_names[] = {"none", "node", "client", "operator", "coordinator",
                                         "unknown"};

const char *sec_role_name(int role)
{
    return role >= 0 && role <= SEC_ROLE_UNKNOWN ? role_names[role] : "unknown";
}

int sec_role_parse(const char *name)
{
    for (int i = SEC_ROLE_NODE; i <= SEC_ROLE_COORDINATOR; i++)
        if (name && !strcmp(name, role_names[i]))
            return i;
    return -1;
}

static int tier_parse(const char *name)
{
    static const char *const tiers[] = {"device", "edge", "cloud"};
    for (int i = 0; i < 3; i++)
        if (name && !strcmp(name, tiers[i]))
            return einet_Tier_TIER_DEVICE + i;
    return 0;
}

sec_peer_t sec_peer_of(const xport_msg_t *msg)
{
    sec_peer_t p;
    memset(&p, 0, sizeof p);
    const char *key = xport_msg_meta(msg, "User-Id");
    if (!key || strlen(key) != SEC_KEY_MAX - 1)
        return p;
    memcpy(p.key, key, SEC_KEY_MAX);
    int role = sec_role_parse(xport_msg_meta(msg, "role"));
    p.role = role < 0 ? SEC_ROLE_UNKNOWN : role;
    p.tier = p.role == SEC_ROLE_NODE ? tier_parse(xport_msg_meta(msg, "tier")) : 0;
    const char *name = xport_msg_meta(msg, "name");
    snprintf(p.name, sizeof p.name, "%s", name ? name : "");
    return p;
}

int sec_may(const sec_t *self, const sec_peer_t *peer, sec_action_t action)
{
    if (!sec_enabled(self))
        return 1;
    switch (peer->role) {
    case SEC_ROLE_OPERATOR:
        return 1;
    case SEC_ROLE_CLIENT:
        return action == SEC_DO_REQUEST || action == SEC_DO_STATS;
    default:
        return 0;
    }
}

/* ---- einet keygen ---- */

static int name_ok(const char *name)
{
    if (!name[0] || strlen(name) > 31)
        return 0;
    for (const char *c = name; *c; c++)
        if (!(*c == '-' || *c == '_' || (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') ||
              (*c >= 'A' && *c <= 'Z')))
            return 0;
    return 1;
}

static int make_dir(const char *dir, ei_err_t *err)
{
    struct stat st;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return ei_err_set(err, EI_E_IO, "--out %s: %s", dir, strerror(errno));
    if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return ei_err_set(err, EI_E_IO, "--out %s: not a directory (a symlink is refused)", dir);
    return 0;
}

int sec_keygen(const char *dir, const char *name, int role, int tier, char *pub, size_t cap,
               ei_err_t *err)
{
    static const char *const tiers[] = {"", "device", "edge", "cloud"};
    char secret[1100];
    struct stat st;
    if (!name_ok(name))
        return ei_err_set(err, EI_E_INVAL, "name '%s': use 1-31 letters, digits, '-' or '_'",
                          name);
    if (role < SEC_ROLE_NODE || role > SEC_ROLE_COORDINATOR || (role == SEC_ROLE_NODE) != (tier > 0) ||
        tier < 0 || tier > 3)
        return ei_err_set(err, EI_E_INVAL, "a node key needs a tier, and only a node key has one");
    if (make_dir(dir, err) < 0)
        return err->code;
    if ((size_t)snprintf(pub, cap, "%s/%s.key", dir, name) >= cap ||
        (size_t)snprintf(secret, sizeof secret, "%s_secret", pub) >= sizeof secret)
        return ei_err_set(err, EI_E_RANGE, "--out %s: path too long", dir);
    if (lstat(pub, &st) == 0 || lstat(secret, &st) == 0)
        return ei_err_set(err, EI_E_INVAL, "%s exists: keys are never overwritten (remove it "
                          "first)", lstat(pub, &st) == 0 ? pub : secret);
    zcert_t *cert = zcert_new();
    if (!cert)
        return ei_err_set(err, EI_E_IO, "cannot make a key pair");
    zcert_set_meta(cert, "role", "%s", sec_role_name(role));
    zcert_set_meta(cert, "name", "%s", name);
    if (tier)
        zcert_set_meta(cert, "tier", "%s", tiers[tier]);
    mode_t old = umask(077); /* the secret file is never readable by others, not even briefly */
    int rc = zcert_save(cert, pub);
    umask(old);
    zcert_destroy(&cert);
    if (rc != 0 || chmod(secret, 0600) != 0 || chmod(pub, 0644) != 0)
        return ei_err_set(err, EI_E_IO, "cannot write %s: %s", pub, strerror(errno));
    return 0;
}
