/* Tests of wire/conf.h: good node and coordinator files, and every kind of bad one, each
 * message checked for file, line and key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/ei.h"
#include "wire/conf.h"
#include "wire/wire.h"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/einet-conf-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes text to dir/name and returns the path (static buffer). */
static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static const char *const device_ini = "; the device tier\n"
                                      "[node]\n"
                                      "tier = device\n"
                                      "first_block = 1\n"
                                      "last_block = 3\n"
                                      "model = ../models/fmnist.safetensors\n"
                                      "next = tcp://127.0.0.1:5602\n"
                                      "coordinator = tcp://127.0.0.1:5600   ; inline comment\n"
                                      "  threads = 2\n"
                                      "slowdown = 4.5\n"
                                      "ee = /abs/ee.safetensors\n";

static void test_node_good(void **state)
{
    (void)state;
    conf_node_t c;
    ei_err_t err = {0};
    const char *path = write_file("device.ini", device_ini);
    if (conf_node_load(&c, path, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(c.tier, einet_Tier_TIER_DEVICE);
    assert_int_equal(c.first_block, 1);
    assert_int_equal(c.last_block, 3);
    char want[300];
    snprintf(want, sizeof want, "%s/../models/fmnist.safetensors", dir);
    assert_string_equal(c.model, want); /* relative to the file's directory */
    assert_string_equal(c.ee, "/abs/ee.safetensors");
    assert_string_equal(c.next, "tcp://127.0.0.1:5602");
    assert_string_equal(c.coordinator, "tcp://127.0.0.1:5600");
    assert_string_equal(c.bind, "");
    assert_int_equal(c.threads, 2); /* indented: still a key, not a continuation */
    assert_true(c.slowdown == 4.5);
    /* defaults */
    assert_int_equal(c.heartbeat_ms, 100);
    assert_int_equal(c.heartbeat_timeout_ms, 500);
    assert_int_equal(c.search, CONF_SEARCH_HYBRID);
    assert_string_equal(c.predictor, "");
    assert_int_equal(c.max_inflight, 64);
}

static void test_coord_good(void **state)
{
    (void)state;
    conf_coord_t c;
    ei_err_t err = {0};
    const char *path = write_file("coord.ini", "[coordinator]\r\n"
                                               "clients = tcp://*:5600\r\n"
                                               "nodes = ipc:///tmp/einet-nodes\r\n"
                                               "tiers = device, cloud\r\n"
                                               "model = m.st\r\n"
                                               "profile = p.json\r\n"
                                               "deadline_ms = 25\r\n"
                                               "[planner]\r\n"
                                               "search = Greedy\r\n"
                                               "interrupt = normal\r\n"
                                               "mu = 0.7\r\n");
    if (conf_coord_load(&c, path, &err) != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(c.clients, "tcp://*:5600");
    assert_string_equal(c.nodes, "ipc:///tmp/einet-nodes");
    assert_int_equal(c.tiers.n, 2);
    assert_int_equal(c.tiers.tier[0], einet_Tier_TIER_DEVICE);
    assert_int_equal(c.tiers.tier[1], einet_Tier_TIER_CLOUD);
    assert_int_equal(c.deadline_ms, 25);
    assert_int_equal(c.search, CONF_SEARCH_GREEDY);
    assert_int_equal(c.interrupt, CONF_INTERRUPT_NORMAL);
    assert_true(c.mu == 0.7 && c.sigma == 0.25);
    assert_int_equal(c.heartbeat_timeout_ms, 500);
    char want[300];
    snprintf(want, sizeof want, "%s/m.st", dir);
    assert_string_equal(c.model, want);
}

/* Loads text as dir/name with the node table and expects code and exactly message
 * "<path>:<rest>" (rest starts with the line number, or ": " for errors without one). */
static void node_bad(const char *name, const char *text, int code, const char *rest)
{
    conf_node_t c;
    ei_err_t err = {0};
    const char *path = write_file(name, text);
    char want[600];
    snprintf(want, sizeof want, "%s%s", path, rest);
    assert_int_equal(conf_node_load(&c, path, &err), code);
    assert_string_equal(err.msg, want);
}

#define NODE_HEAD "[node]\ntier = edge\nmodel = m\ncoordinator = tcp://127.0.0.1:1\n"
/*                 line 1  2           3        4                                   */

static void test_node_bad(void **state)
{
    (void)state;
    node_bad("device.ini",
             NODE_HEAD "bind = tcp://127.0.0.1:2\nfirst_block = 1\n"
                       "last_block = 2\ntreshold = 3\n",
             EI_E_FORMAT, ":8: unknown key 'treshold' in [node]");
    node_bad("a.ini", NODE_HEAD "threads = abc\n", EI_E_FORMAT,
             ":5: bad value 'abc' for 'threads' in [node]: expected an integer");
    node_bad("a.ini", NODE_HEAD "threads = 99\n", EI_E_RANGE,
             ":5: 'threads' in [node] is 99, out of range 1..64");
    node_bad("a.ini", NODE_HEAD "slowdown = 0.5\n", EI_E_RANGE,
             ":5: 'slowdown' in [node] is 0.5, out of range 1..1000");
    node_bad("a.ini", NODE_HEAD "slowdown = nan\n", EI_E_FORMAT,
             ":5: bad value 'nan' for 'slowdown' in [node]: expected a number");
    node_bad("a.ini", NODE_HEAD "bind = tcp://127.0.0.1:2\nfirst_block = 1\n", EI_E_FORMAT,
             ": missing required key 'last_block' in [node]");
    node_bad("a.ini", "[node]\ntier = fog\n", EI_E_FORMAT,
             ":2: bad value 'fog' for 'tier' in [node]: expected one of device, edge, cloud");
    node_bad("a.ini", NODE_HEAD "bind = tcp://localhost\n", EI_E_RANGE,
             ":5: 'bind' in [node]: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME");
    node_bad("a.ini", NODE_HEAD "threads = 2\nthreads = 3\n", EI_E_FORMAT,
             ":6: duplicate key 'threads' in [node] (first on line 5)");
    node_bad("a.ini", NODE_HEAD "[nod]\nthreads = 2\n", EI_E_FORMAT,
             ":6: unknown section [nod] (key 'threads')");
    node_bad("a.ini", "tier = edge\n", EI_E_FORMAT, ":1: key 'tier' outside any [section]");
    node_bad("a.ini", NODE_HEAD "this line has no equals sign\n", EI_E_FORMAT,
             ":5: syntax error: expected [section], key = value or a comment");
    node_bad("a.ini", NODE_HEAD "bind = tcp://127.0.0.1:2\nfirst_block = 4\nlast_block = 2\n",
             EI_E_RANGE, ":7: 'last_block' (2) is before 'first_block' (4)");
    node_bad("a.ini", NODE_HEAD "first_block = 1\nlast_block = 2\n", EI_E_RANGE,
             ":2: 'bind' is required on the edge and cloud tiers (the previous tier sends there)");
    node_bad("a.ini",
             NODE_HEAD "bind = tcp://127.0.0.1:2\nfirst_block = 1\nlast_block = 2\n"
                       "heartbeat_ms = 500\nheartbeat_timeout_ms = 400\n",
             EI_E_RANGE, ":9: 'heartbeat_timeout_ms' must be longer than 'heartbeat_ms'");
    node_bad("a.ini", NODE_HEAD "first_block = 200\n", EI_E_RANGE,
             ":5: 'first_block' in [node] is 200, out of range 1..128");
}

static void test_long_line_and_missing_file(void **state)
{
    (void)state;
    char text[600];
    memset(text, 'x', sizeof text);
    memcpy(text, NODE_HEAD "predictor = ", strlen(NODE_HEAD "predictor = "));
    strcpy(text + 500, "\nthreads = 1\n");
    node_bad("a.ini", text, EI_E_FORMAT, ":5: line longer than 198 characters");
    conf_node_t c;
    ei_err_t err = {0};
    assert_int_equal(conf_node_load(&c, "/nonexistent/dev.ini", &err), EI_E_IO);
    assert_string_equal(err.msg,
                        "/nonexistent/dev.ini: cannot open config: No such file or directory");
}

static void test_coord_bad(void **state)
{
    (void)state;
    conf_coord_t c;
    ei_err_t err = {0};
    const char *base = "[coordinator]\nclients = tcp://*:1\nnodes = tcp://*:2\nmodel = m\n"
                       "profile = p\n";
    char text[400];
    snprintf(text, sizeof text, "%stiers = edge,device\n", base);
    assert_int_equal(conf_load_string(&conf_coord_table, &c, "coord.ini", text, &err), EI_E_FORMAT);
    assert_string_equal(err.msg, "coord.ini:6: bad value 'edge,device' for 'tiers' in "
                                 "[coordinator]: expected tiers in pipeline order, each once, "
                                 "such as device,edge,cloud");
    snprintf(text, sizeof text, "%stiers = device,device\n", base);
    assert_int_equal(conf_load_string(&conf_coord_table, &c, "coord.ini", text, &err), EI_E_FORMAT);
    snprintf(text, sizeof text, "%s[planner]\nsigma = 0\n", base);
    assert_int_equal(conf_load_string(&conf_coord_table, &c, "coord.ini", text, &err), EI_E_RANGE);
    assert_string_equal(err.msg, "coord.ini:7: 'sigma' in [planner] is 0, out of range 0.001..10");
    assert_int_equal(conf_load_string(&conf_coord_table, &c, "c.ini",
                                      "[coordinator]\nclients = tcp://*:1\nnodes = tcp://*:1\n"
                                      "model = m\nprofile = p\n",
                                      &err),
                     EI_E_RANGE);
    assert_string_equal(err.msg, "c.ini:3: 'nodes' and 'clients' must be different endpoints");
}

static void test_endpoints(void **state)
{
    (void)state;
    const char *good[] = {"tcp://127.0.0.1:5600", "tcp://*:1",  "tcp://host:*",
                          "ipc:///tmp/x",         "inproc://a", "tcp://[::1]:80"};
    const char *bad[] = {"",         "tcp://",    "tcp://host", "tcp://host:0", "tcp://host:70000",
                         "tcp://:5", "udp://a:1", "ipc://",     "tcp://a b:1",  "tcp://h:12x"};
    for (size_t i = 0; i < sizeof good / sizeof *good; i++)
        if (conf_check_endpoint(good[i]))
            fail_msg("refused %s", good[i]);
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (!conf_check_endpoint(bad[i]))
            fail_msg("accepted '%s'", bad[i]);
    assert_null(conf_check_endpoint_or_empty(""));
}

/* `next` as a list of next-tier replicas (issue 11): split and trimmed, each entry an
 * endpoint, none empty, none twice, at most CONF_MAX_NEXT; a node's own bind refused. */
static void test_endpoint_lists(void **state)
{
    (void)state;
    char out[CONF_MAX_NEXT][CONF_STR_MAX];
    assert_int_equal(conf_list_split("", out, CONF_MAX_NEXT), 0);
    assert_int_equal(conf_list_split("tcp://a:1", out, CONF_MAX_NEXT), 1);
    assert_string_equal(out[0], "tcp://a:1");
    assert_int_equal(conf_list_split(" tcp://a:1 ,tcp://b:2\t, ipc:///x ", out, CONF_MAX_NEXT), 3);
    assert_string_equal(out[0], "tcp://a:1");
    assert_string_equal(out[1], "tcp://b:2");
    assert_string_equal(out[2], "ipc:///x");
    assert_int_equal(conf_list_split("tcp://a:1,", out, CONF_MAX_NEXT), -1);
    assert_int_equal(conf_list_split("tcp://a:1,,tcp://b:2", out, CONF_MAX_NEXT), -1);
    assert_int_equal(conf_list_split("a,b,c", out, 2), -1);
    assert_null(conf_check_endpoint_list(""));
    assert_null(conf_check_endpoint_list("tcp://127.0.0.1:5711, tcp://127.0.0.1:5712"));
    const char *why = conf_check_endpoint_list("tcp://127.0.0.1:5711, tcp://127.0.0.1:5711");
    assert_non_null(why);
    assert_non_null(strstr(why, "'tcp://127.0.0.1:5711' is listed twice"));
    why = conf_check_endpoint_list("tcp://127.0.0.1:5711, udp://x:1");
    assert_non_null(why);
    assert_non_null(strstr(why, "'udp://x:1': expected tcp://HOST:PORT"));
    assert_non_null(conf_check_endpoint_list("tcp://a:1, "));
    assert_non_null(conf_check_endpoint_list("tcp://a:1,tcp://a:2,tcp://a:3,tcp://a:4,"
                                             "tcp://a:5,tcp://a:6,tcp://a:7,tcp://a:8,tcp://a:9"));
    node_bad("a.ini",
             NODE_HEAD "bind = tcp://127.0.0.1:2\nfirst_block = 1\nlast_block = 2\n"
                       "next = tcp://127.0.0.1:3, tcp://127.0.0.1:2\n",
             EI_E_RANGE, ":8: 'next' lists this node's own 'bind' endpoint");
    node_bad("a.ini", NODE_HEAD "next = tcp://127.0.0.1:3,,tcp://127.0.0.1:4\n", EI_E_RANGE,
             ":5: 'next' in [node]: expected 1 to 8 endpoints separated by commas, none empty");
}

/* metrics, log_level and log_format: defaults (off, info, text), values, refusals naming
 * the line. */
static void test_ops_keys(void **state)
{
    (void)state;
    conf_coord_t c;
    ei_err_t err = {0};
    const char *base = "[coordinator]\nclients = tcp://*:1\nnodes = tcp://*:2\nmodel = m\n";
    char text[400];
    assert_int_equal(conf_load_string(&conf_coord_table, &c, "c.ini", base, &err), 0);
    assert_string_equal(c.metrics, "");
    assert_int_equal(c.log_level, EI_LOG_INFO);
    assert_int_equal(c.log_format, EI_LOG_TEXT);
    snprintf(text, sizeof text, "%smetrics = 127.0.0.1:9600\nlog_level = warn\nlog_format = json\n",
             base);
    assert_int_equal(conf_load_string(&conf_coord_table, &c, "c.ini", text, &err), 0);
    assert_string_equal(c.metrics, "127.0.0.1:9600");
    assert_int_equal(c.log_level, EI_LOG_WARN);
    assert_int_equal(c.log_format, EI_LOG_JSON);
    snprintf(text, sizeof text, "%smetrics = 9600\n", base);
    assert_int_equal(conf_load_string(&conf_coord_table, &c, "c.ini", text, &err), EI_E_RANGE);
    assert_non_null(strstr(err.msg, "c.ini:5: "));
    assert_non_null(strstr(err.msg, "'metrics'"));
    snprintf(text, sizeof text, "%slog_level = loud\n", base);
    assert_int_equal(conf_load_string(&conf_coord_table, &c, "c.ini", text, &err), EI_E_FORMAT);
    assert_non_null(strstr(err.msg, "c.ini:5: "));
    assert_non_null(strstr(err.msg, "'log_level'"));
    conf_node_t n;
    snprintf(text, sizeof text, "%smetrics = localhost:0\nlog_format = json\n", device_ini);
    assert_int_equal(conf_load_string(&conf_node_table, &n, "d.ini", text, &err), 0);
    assert_string_equal(n.metrics, "localhost:0");
    assert_int_equal(n.log_format, EI_LOG_JSON);
}

/* conf_check_files (what einet-node and einet-coord load with): a path key naming a file
 * that cannot be opened is an error naming the file, line and key; existing files pass. */
static void test_check_files(void **state)
{
    (void)state;
    conf_node_t c;
    ei_err_t err = {0};
    write_file("m.safetensors", "x");
    const char *path = write_file("dev.ini", "[node]\ntier = device\nfirst_block = 1\n"
                                             "last_block = 2\nmodel = m.safetensors\n"
                                             "coordinator = tcp://127.0.0.1:5600\n"
                                             "predictor = missing.predictor\n");
    assert_int_equal(conf_node_load(&c, path, &err), 0); /* the table alone does not look */
    assert_int_equal(conf_check_files(&conf_node_table, &c, path, &err), EI_E_NOTFOUND);
    char want[1024];
    snprintf(want, sizeof want, "%s:7: 'predictor' in [node]: cannot open '%s/missing.predictor': "
             "No such file or directory", path, dir);
    assert_string_equal(err.msg, want);
    path = write_file("dev.ini", "[node]\ntier = device\nfirst_block = 1\nlast_block = 2\n"
                                 "model = m.safetensors\ncoordinator = tcp://127.0.0.1:5600\n");
    assert_int_equal(conf_check_files(&conf_node_table, &c, path, &err), 0);
}

/* [journal] path names a file einet-coord creates: a new file in an existing directory
 * passes conf_check_files (relative to the config's directory); one in a directory that is
 * not there is refused naming the line, the key and the directory. */
static void test_journal_keys(void **state)
{
    (void)state;
    conf_coord_t c;
    ei_err_t err = {0};
    write_file("m.safetensors", "x");
    const char *base = "[coordinator]\nclients = tcp://127.0.0.1:5600\n"
                       "nodes = tcp://127.0.0.1:5601\nmodel = m.safetensors\n[journal]\n";
    char text[512];
    snprintf(text, sizeof text, "%spath = new.db\nsync = full\nkeep_rows = 10\n", base);
    const char *path = write_file("coord.ini", text);
    assert_int_equal(conf_check_files(&conf_coord_table, &c, path, &err), 0);
    char want[1024];
    snprintf(want, sizeof want, "%s/new.db", dir);
    assert_string_equal(c.journal_path, want);
    assert_int_equal(c.journal, 1);
    assert_int_equal(c.journal_sync, CONF_SYNC_FULL);
    assert_int_equal(c.journal_keep_rows, 10);
    assert_int_equal(c.journal_keep_input, 1);
    assert_int_equal(c.journal_keep_hours, 168);
    snprintf(text, sizeof text, "%spath = no/such/dir/j.db\n", base);
    path = write_file("coord.ini", text);
    assert_int_equal(conf_check_files(&conf_coord_table, &c, path, &err), EI_E_NOTFOUND);
    snprintf(want, sizeof want, "%s:6: 'path' in [journal]: cannot create '%s/no/such/dir/j.db' "
             "in '%s/no/such/dir': No such file or directory", path, dir, dir);
    assert_string_equal(err.msg, want);
    snprintf(text, sizeof text, "%ssync = sometimes\n", base);
    path = write_file("coord.ini", text);
    assert_int_equal(conf_coord_load(&c, path, &err), EI_E_FORMAT);
    assert_non_null(strstr(err.msg, ":6: bad value 'sometimes' for 'sync' in [journal]"));
}

/* Every key of both tables appears in the description (and so can be documented). */
static void test_describe(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    conf_describe(&conf_node_table, f);
    conf_describe(&conf_coord_table, f);
    fclose(f);
    const conf_table_t *tables[2] = {&conf_node_table, &conf_coord_table};
    for (int t = 0; t < 2; t++)
        for (int i = 0; i < tables[t]->n; i++) {
            char key[128];
            snprintf(key, sizeof key, "[%s] %s (", tables[t]->options[i].section,
                     tables[t]->options[i].name);
            assert_non_null(strstr(buf, key));
        }
    assert_non_null(strstr(buf, "[node] search (choice: hybrid|greedy|enum|exact|random) "
                                "default 'hybrid'"));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node_good), cmocka_unit_test(test_coord_good),
        cmocka_unit_test(test_node_bad),  cmocka_unit_test(test_long_line_and_missing_file),
        cmocka_unit_test(test_coord_bad), cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_endpoint_lists),
        cmocka_unit_test(test_ops_keys), cmocka_unit_test(test_check_files),
        cmocka_unit_test(test_journal_keys),
        cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
