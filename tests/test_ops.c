/* Tests of ops/ (Prometheus text, histograms, the metrics and health HTTP server, over a
 * real socket) and of common/'s log line format. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/ei.h"
#include "ops/ops.h"

static void test_prom_text(void **state)
{
    (void)state;
    ops_buf_t b;
    ops_buf_init(&b);
    ops_prom_counter(&b, "x_total", "Some things.", 3);
    ops_prom_family(&b, "y", "gauge", "A gauge.");
    ops_prom_sample(&b, "y", "link=\"edge-cloud\"", 0.25);
    assert_false(b.failed);
    assert_string_equal(b.p, "# HELP x_total Some things.\n# TYPE x_total counter\nx_total 3\n"
                             "# HELP y A gauge.\n# TYPE y gauge\ny{link=\"edge-cloud\"} 0.25\n");
    /* a counter near 2^50 prints exactly */
    ops_buf_free(&b);
    ops_prom_sample(&b, "z", "", 1125899906842623.0);
    assert_string_equal(b.p, "z 1125899906842623\n");
    ops_buf_free(&b);
}

static void test_hist_cumulative(void **state)
{
    (void)state;
    const double bounds[] = {0.1, 1, 10};
    ops_hist_t h;
    ops_hist_init(&h, bounds, 3);
    const double v[] = {0.05, 0.1, 0.5, 2, 20, 30};
    for (size_t i = 0; i < 6; i++)
        ops_hist_observe(&h, v[i]);
    ops_buf_t b;
    ops_buf_init(&b);
    ops_prom_hist(&b, "lat", "L.", &h);
    /* le is "less or equal": 0.1 falls in the first bucket */
    assert_non_null(strstr(b.p, "lat_bucket{le=\"0.1\"} 2\n"));
    assert_non_null(strstr(b.p, "lat_bucket{le=\"1\"} 3\n"));
    assert_non_null(strstr(b.p, "lat_bucket{le=\"10\"} 4\n"));
    assert_non_null(strstr(b.p, "lat_bucket{le=\"+Inf\"} 6\n"));
    assert_non_null(strstr(b.p, "lat_sum 52.65\n"));
    assert_non_null(strstr(b.p, "lat_count 6\n"));
    ops_buf_free(&b);
}

static void test_process_and_names(void **state)
{
    (void)state;
    ops_buf_t b;
    ops_buf_init(&b);
    ops_prom_process(&b);
    ops_prom_build_info(&b);
    assert_non_null(strstr(b.p, "\nprocess_cpu_seconds_total "));
    assert_non_null(strstr(b.p, "\nprocess_resident_memory_bytes "));
    assert_non_null(strstr(b.p, "\nprocess_start_time_seconds "));
    assert_non_null(strstr(b.p, "\nprocess_open_fds "));
    char info[128];
    snprintf(info, sizeof info, "einet_build_info{version=\"%s\",commit=\"%s\"} 1\n", ei_version(),
             ei_commit());
    assert_non_null(strstr(b.p, info));
    ops_buf_free(&b);
    assert_string_equal(ops_code_name(EI_E_FORMAT), "format");
    assert_string_equal(ops_code_name(EI_E_NONFINITE), "nonfinite");
    assert_string_equal(ops_code_name(-99), "other");
    assert_string_equal(ops_code_name(0), "other");
    assert_null(ops_addr_check("127.0.0.1:9600"));
    assert_null(ops_addr_check("localhost:0"));
    assert_non_null(ops_addr_check("127.0.0.1"));
    assert_non_null(ops_addr_check(":80"));
    assert_non_null(ops_addr_check("h:70000"));
    assert_non_null(ops_addr_check("h:x"));
}

/* One HTTP/1.0 request to 127.0.0.1:port; the status code, body in body[cap]. */
static int http_get(int port, const char *method, const char *path, char *body, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: x\r\n\r\n", method, path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    static char resp[65536];
    size_t len = 0;
    ssize_t r;
    while ((r = read(fd, resp + len, sizeof resp - 1 - len)) > 0)
        len += (size_t)r;
    close(fd);
    resp[len] = 0;
    int status = 0;
    assert_int_equal(sscanf(resp, "HTTP/1.%*d %d", &status), 1);
    const char *at = strstr(resp, "\r\n\r\n");
    snprintf(body, cap, "%s", at ? at + 4 : "");
    return status;
}

static void test_http_server(void **state)
{
    (void)state;
    ei_err_t err;
    ops_http_t *h = ops_http_start("127.0.0.1:0", &err);
    assert_non_null(h);
    int port = ops_http_port(h);
    assert_true(port > 0);
    char body[4096];
    /* before the first snapshot: alive, not ready, empty metrics */
    assert_int_equal(http_get(port, "GET", "/healthz", body, sizeof body), 200);
    assert_int_equal(http_get(port, "GET", "/readyz", body, sizeof body), 503);
    assert_string_equal(body, "not ready: starting\n");
    assert_int_equal(http_get(port, "GET", "/metrics", body, sizeof body), 200);
    assert_string_equal(body, "");
    ops_buf_t b;
    ops_buf_init(&b);
    ops_prom_counter(&b, "einet_x_total", "X.", 7);
    ops_http_publish(h, &b, 0, "edge is down");
    assert_int_equal(http_get(port, "GET", "/readyz", body, sizeof body), 503);
    assert_string_equal(body, "not ready: edge is down\n");
    assert_int_equal(http_get(port, "GET", "/metrics", body, sizeof body), 200);
    assert_string_equal(body, b.p);
    ops_http_publish(h, &b, 1, "");
    assert_int_equal(http_get(port, "GET", "/readyz", body, sizeof body), 200);
    assert_string_equal(body, "ready\n");
    assert_int_equal(http_get(port, "GET", "/nothing", body, sizeof body), 404);
    assert_int_equal(http_get(port, "POST", "/metrics", body, sizeof body), 405);
    /* a second server on the same port is refused with a message naming the address */
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    assert_null(ops_http_start(addr, &err));
    assert_non_null(strstr(err.msg, addr));
    assert_null(ops_http_start("no-such-host.invalid:1", &err));
    ops_buf_free(&b);
    ops_http_stop(&h);
    assert_null(h);
    ops_http_stop(&h);
}

static void test_log_format(void **state)
{
    (void)state;
    char line[512];
    /* 2026-11-29T05:08:17.000042Z */
    uint64_t us = 1795928897ull * 1000000 + 42;
    size_t n = ei_log_format(line, sizeof line, EI_LOG_TEXT, us, EI_LOG_WARN, "einet-node",
                             "edge-cloud link down (\"no reply\")\n");
    assert_string_equal(line, "time=2026-11-29T05:08:17.000042Z level=warn prog=einet-node "
                              "msg=\"edge-cloud link down (\\\"no reply\\\")\\n\"\n");
    assert_int_equal(n, strlen(line));
    ei_log_format(line, sizeof line, EI_LOG_JSON, us, EI_LOG_INFO, "einet-coord", "a\tb");
    assert_string_equal(line, "{\"time\":\"2026-11-29T05:08:17.000042Z\",\"level\":\"info\","
                              "\"prog\":\"einet-coord\",\"msg\":\"a\\u0009b\"}\n");
    /* too long a message is cut, the line still ends in a newline-free, terminated string */
    char big[600];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    n = ei_log_format(line, 100, EI_LOG_TEXT, us, EI_LOG_INFO, "p", big);
    assert_true(n < 100);
    assert_int_equal(strlen(line), n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prom_text),   cmocka_unit_test(test_hist_cumulative),
        cmocka_unit_test(test_process_and_names), cmocka_unit_test(test_http_server),
        cmocka_unit_test(test_log_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
