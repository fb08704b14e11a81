/* wire/sec.h, wire/members.h and the key options of the config files. The CURVE matrix
 * follows CZMQ's zauth self-test: a server with the allow-list, and clients with no key,
 * an unknown key, the right key against the wrong server key, and the right key; each must
 * connect or be refused, and an admitted message carries its key's role and tier. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <czmq.h>
#include <zmq.h>

#include "wire/conf.h"
#include "wire/members.h"
#include "wire/sec.h"
#include "wire/wire.h"

static char g_dir[64];

/* ---- members ---- */

static xport_peer_t peer(const char *id)
{
    return xport_peer(id, strlen(id));
}

static void test_members_claims(void **state)
{
    (void)state;
    members_t m;
    members_init(&m, 3, 1000);
    xport_peer_t a = peer("a"), b = peer("b");
    assert_int_equal(members_find(&m, &a), -1);
    assert_int_equal(members_claim(&m, 0, &a, "", 0, 1), MEMBERS_NEW);
    assert_int_equal(members_find(&m, &a), 0);
    assert_int_equal(members_claim(&m, 0, &a, "", 10, 1), MEMBERS_SAME);
    /* A live holder keeps its place: a second connection is refused... */
    assert_true(members_held_by_other(&m, 0, &b));
    assert_int_equal(members_claim(&m, 0, &b, "", 500, 1), MEMBERS_DUPLICATE);
    assert_int_equal(members_find(&m, &b), -1);
    assert_int_equal(members_find(&m, &a), 0);
    /* ... until its connection is gone (a restart) ... */
    assert_int_equal(members_claim(&m, 0, &b, "", 600, 0), MEMBERS_TAKEN);
    assert_int_equal(members_find(&m, &b), 0);
    assert_int_equal(members_find(&m, &a), -1);
    /* ... or it has been silent for the timeout (half-open). */
    members_heard(&m, 0, 700);
    assert_int_equal(members_claim(&m, 0, &a, "", 1700, 1), MEMBERS_DUPLICATE);
    assert_int_equal(members_claim(&m, 0, &a, "", 1701, 1), MEMBERS_TAKEN);
    /* Places are independent. */
    assert_int_equal(members_claim(&m, 2, &b, "KEY", 1701, 1), MEMBERS_NEW);
    assert_string_equal(m.slot[2].key, "KEY");
    assert_int_equal(members_find(&m, &b), 2);
}

/* ---- keygen ---- */

static void test_keygen(void **state)
{
    (void)state;
    char pub[1024], secret[1100], dir[128];
    ei_err_t err;
    snprintf(dir, sizeof dir, "%s/keys", g_dir);
    assert_int_equal(sec_keygen(dir, "edge", SEC_ROLE_NODE, 2, pub, sizeof pub, &err), 0);
    snprintf(secret, sizeof secret, "%s_secret", pub);
    struct stat st;
    assert_int_equal(stat(dir, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(stat(secret, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(stat(pub, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    zcert_t *c = zcert_load(pub);
    assert_non_null(c);
    assert_string_equal(zcert_meta(c, "role"), "node");
    assert_string_equal(zcert_meta(c, "tier"), "edge");
    zcert_destroy(&c);
    /* Never overwritten; names and roles checked. */
    assert_int_equal(sec_keygen(dir, "edge", SEC_ROLE_NODE, 2, pub, sizeof pub, &err), EI_E_INVAL);
    assert_non_null(strstr(err.msg, "never overwritten"));
    assert_int_equal(sec_keygen(dir, "../x", SEC_ROLE_CLIENT, 0, pub, sizeof pub, &err), EI_E_INVAL);
    assert_int_equal(sec_keygen(dir, "x", SEC_ROLE_CLIENT, 2, pub, sizeof pub, &err), EI_E_INVAL);
    assert_int_equal(sec_keygen(dir, "x", SEC_ROLE_NODE, 0, pub, sizeof pub, &err), EI_E_INVAL);
    /* A secret certificate: not the public one, not readable by others. */
    assert_null(sec_new(NULL, "test", pub, "", &err));
    assert_non_null(strstr(err.msg, "a public certificate"));
    assert_int_equal(chmod(secret, 0640), 0);
    assert_null(sec_new(NULL, "test", secret, "", &err));
    assert_non_null(strstr(err.msg, "chmod 600"));
    assert_int_equal(chmod(secret, 0600), 0);
    sec_t *s = sec_new(NULL, "test", secret, "", &err);
    assert_non_null(s);
    assert_true(sec_enabled(s));
    sec_destroy(&s);
    assert_null(s);
    s = sec_new(NULL, "test", "", "", &err); /* keyless */
    assert_non_null(s);
    assert_false(sec_enabled(s));
    sec_peer_t anyone = {{0}, SEC_ROLE_NONE, 0, {0}};
    assert_true(sec_may(s, &anyone, SEC_DO_FAULT));
    sec_destroy(&s);
}

/* ---- the CURVE matrix ---- */

static void *g_ctx;
static sec_t *g_server;

/* 1 when a message from a client with cert `cert` (NULL: no CURVE) that trusts the server
 * key in file server_key arrives at a server made by sec; *role and *tier get what the
 * metadata says. */
/* A PAIR socket that receives sock's failed-handshake events (either side of a refused
 * connection reports one). */
static void *watch_handshakes(void *sock, const char *name)
{
    static int seq; /* an inproc endpoint stays taken after its monitor stops */
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://sec-monitor-%s-%d", name, ++seq);
    assert_int_equal(zmq_socket_monitor(sock, ep,
                                        ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                            ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                            ZMQ_EVENT_HANDSHAKE_FAILED_AUTH),
                     0);
    void *mon = zmq_socket(g_ctx, ZMQ_PAIR);
    int zero = 0;
    zmq_setsockopt(mon, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_connect(mon, ep), 0);
    return mon;
}

/* Does a client with cert (NULL: none) checking server_key get a message through to a
 * CURVE server? Decided by what happens - the message arrives (1), or a side reports a
 * failed handshake (0) - never by how long it takes: the 60 s bound only stops a hang. */
static int can_connect(zcert_t *cert, const char *server_key, int *role, int *tier)
{
    ei_err_t err;
    void *srv = zmq_socket(g_ctx, ZMQ_ROUTER), *cli = zmq_socket(g_ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(srv, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(cli, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(sec_apply(g_server, srv, NULL, &err), 0);
    if (cert) {
        zcert_t *s = zcert_load(server_key);
        zcert_apply(cert, cli);
        zmq_setsockopt(cli, ZMQ_CURVE_SERVERKEY, zcert_public_txt(s), 40);
        zcert_destroy(&s);
    }
    void *mon_srv = watch_handshakes(srv, "srv"), *mon_cli = watch_handshakes(cli, "cli");
    assert_int_equal(zmq_bind(srv, "tcp://127.0.0.1:*"), 0);
    char ep[128];
    size_t sz = sizeof ep;
    zmq_getsockopt(srv, ZMQ_LAST_ENDPOINT, ep, &sz);
    assert_int_equal(zmq_connect(cli, ep), 0);
    zmq_send(cli, "hello", 5, 0);
    zmq_pollitem_t it[3] = {{srv, 0, ZMQ_POLLIN, 0}, {mon_srv, 0, ZMQ_POLLIN, 0},
                            {mon_cli, 0, ZMQ_POLLIN, 0}};
    int n = zmq_poll(it, 3, 60000);
    assert_true(n > 0); /* neither outcome within a minute: a hang */
    int ok = (it[0].revents & ZMQ_POLLIN) != 0;
    if (ok) {
        zmq_msg_t id, body;
        zmq_msg_init(&id);
        zmq_msg_init(&body);
        zmq_msg_recv(&id, srv, 0);
        zmq_msg_recv(&body, srv, 0);
        const char *r = zmq_msg_gets(&body, "role"), *t = zmq_msg_gets(&body, "tier");
        *role = sec_role_parse(r);
        *tier = t && !strcmp(t, "cloud") ? 3 : 0;
        zmq_msg_close(&id);
        zmq_msg_close(&body);
    }
    zmq_socket_monitor(srv, NULL, 0);
    zmq_socket_monitor(cli, NULL, 0);
    zmq_close(mon_srv);
    zmq_close(mon_cli);
    zmq_close(cli);
    zmq_close(srv);
    return ok;
}

static void test_curve_matrix(void **state)
{
    (void)state;
    char trust[128], pub[1024], secret[1100], srvkey[1100], cloud[1024];
    ei_err_t err;
    snprintf(trust, sizeof trust, "%s/trust", g_dir);
    assert_int_equal(sec_keygen(trust, "coordinator", SEC_ROLE_COORDINATOR, 0, pub, sizeof pub,
                                &err), 0);
    snprintf(srvkey, sizeof srvkey, "%s", pub);
    snprintf(secret, sizeof secret, "%s_secret", pub);
    assert_int_equal(sec_keygen(trust, "cloud", SEC_ROLE_NODE, 3, cloud, sizeof cloud, &err), 0);
    g_ctx = sec_context();
    g_server = sec_new(g_ctx, "test", secret, trust, &err);
    assert_non_null(g_server);
    int role = -1, tier = -1;
    /* No key: the handshake fails. */
    assert_false(can_connect(NULL, srvkey, &role, &tier));
    /* A key not on the allow-list: refused by the ZAP handler. */
    zcert_t *stranger = zcert_new();
    assert_false(can_connect(stranger, srvkey, &role, &tier));
    zcert_destroy(&stranger);
    /* The right key checking the wrong server key: the client refuses the server. */
    char cloud_secret[1100];
    snprintf(cloud_secret, sizeof cloud_secret, "%s_secret", cloud);
    zcert_t *mine = zcert_load(cloud_secret);
    assert_non_null(mine);
    assert_false(can_connect(mine, cloud, &role, &tier));
    /* The right key: admitted, with the role and tier of the allow-list's certificate. */
    assert_true(can_connect(mine, srvkey, &role, &tier));
    assert_int_equal(role, SEC_ROLE_NODE);
    assert_int_equal(tier, 3);
    zcert_destroy(&mine);
    /* A client socket without a server key is an error, not a silent plain socket. */
    void *s = zmq_socket(g_ctx, ZMQ_DEALER);
    assert_int_equal(sec_apply(g_server, s, "", &err), EI_E_INVAL);
    zmq_close(s);
    sec_destroy(&g_server);
}

/* ---- config keys ---- */

static int load_node(const char *extra, ei_err_t *err)
{
    char text[1024];
    conf_node_t c;
    snprintf(text, sizeof text,
             "[node]\ntier = edge\nfirst_block = 3\nlast_block = 5\nmodel = m\n"
             "bind = tcp://127.0.0.1:7000\nnext = tcp://127.0.0.1:7001\n"
             "coordinator = tcp://127.0.0.1:7002\n%s", extra);
    memset(&c, 0, sizeof c);
    return conf_load_string(&conf_node_table, &c, "edge.ini", text, err);
}

/* A keyed edge node whose `next` and `next_key` are given, loaded as name. */
static int load_next(const char *name, const char *next, const char *next_key, conf_node_t *c,
                     ei_err_t *err)
{
    char text[1024];
    snprintf(text, sizeof text,
             "[node]\ntier = edge\nfirst_block = 3\nlast_block = 5\nmodel = m\n"
             "bind = tcp://127.0.0.1:7000\nnext = %s\ncoordinator = tcp://127.0.0.1:7002\n"
             "key = k\ntrust = t\ncoordinator_key = c\nnext_key = %s\n", next, next_key);
    memset(c, 0, sizeof *c);
    return conf_load_string(&conf_node_table, c, name, text, err);
}

/* `next_key`: one certificate for every replica, or one per `next` entry in its order, each
 * resolved against the file's directory and (by the programs' check) readable. */
static void test_conf_next_keys(void **state)
{
    (void)state;
    ei_err_t err;
    conf_node_t *c = calloc(1, sizeof *c);
    const char *two = "tcp://127.0.0.1:7001, tcp://127.0.0.1:7003";
    assert_int_equal(load_next("/cfg/edge.ini", two, "keys/a.key", c, &err), 0);
    assert_string_equal(c->next_key, "/cfg/keys/a.key");
    assert_int_equal(load_next("/cfg/edge.ini", two, "keys/a.key, /abs/b.key", c, &err), 0);
    assert_string_equal(c->next_key, "/cfg/keys/a.key,/abs/b.key");
    assert_true(load_next("/cfg/edge.ini", two, "a.key, b.key, c.key", c, &err) < 0);
    assert_non_null(strstr(err.msg, "edge.ini:12: 'next_key' lists a different number"));
    assert_true(load_next("/cfg/edge.ini", two, "a.key,", c, &err) < 0);
    assert_non_null(strstr(err.msg, "'next_key'"));
    /* The files: every one of the list is checked, the missing one named. */
    char path[300], key[300];
    snprintf(key, sizeof key, "%s/a.key", g_dir);
    FILE *f = fopen(key, "w");
    assert_non_null(f);
    fclose(f);
    snprintf(path, sizeof path, "%s/edge.ini", g_dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "[node]\ntier = edge\nfirst_block = 3\nlast_block = 5\nmodel = a.key\n"
               "bind = tcp://127.0.0.1:7000\nnext = %s\ncoordinator = tcp://127.0.0.1:7002\n"
               "key = a.key\ntrust = .\ncoordinator_key = a.key\nnext_key = a.key, b.key\n",
            two);
    fclose(f);
    assert_true(conf_check_files(&conf_node_table, c, path, &err) < 0);
    char want[400];
    snprintf(want, sizeof want, "'next_key' in [node]: cannot open '%s/b.key'", g_dir);
    assert_non_null(strstr(err.msg, want));
    free(c);
}

static void test_conf_keys(void **state)
{
    (void)state;
    ei_err_t err;
    assert_int_equal(load_node("", &err), 0);
    assert_int_equal(load_node("key = k\ntrust = t\ncoordinator_key = c\nnext_key = n\n", &err), 0);
    assert_true(load_node("trust = t\n", &err) < 0);
    assert_non_null(strstr(err.msg, "'key' is not"));
    assert_true(load_node("key = k\ntrust = t\nnext_key = n\n", &err) < 0);
    assert_non_null(strstr(err.msg, "coordinator_key"));
    assert_true(load_node("key = k\ntrust = t\ncoordinator_key = c\n", &err) < 0);
    assert_non_null(strstr(err.msg, "next_key"));
    assert_true(load_node("key = k\ncoordinator_key = c\nnext_key = n\n", &err) < 0);
    assert_non_null(strstr(err.msg, "'trust'"));
    assert_true(load_node("previous = edge\n", &err) < 0);
    assert_non_null(strstr(err.msg, "edge.ini:9: 'previous' must be a tier before this one"));
    conf_coord_t cc;
    memset(&cc, 0, sizeof cc);
    assert_true(conf_load_string(&conf_coord_table, &cc, "coordinator.ini",
                                 "[coordinator]\nclients = tcp://127.0.0.1:1\n"
                                 "nodes = tcp://127.0.0.1:2\nmodel = m\nkey = k\n", &err) < 0);
    assert_non_null(strstr(err.msg, "'key' and 'trust' go together"));
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/einet-test-sec-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_members_claims),
        cmocka_unit_test(test_keygen),
        cmocka_unit_test(test_curve_matrix),
        cmocka_unit_test(test_conf_keys),
        cmocka_unit_test(test_conf_next_keys),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    sec_context_end();
    return rc;
}
