/* The metrics and health server: libmicrohttpd on its own thread, serving a snapshot the
 * loop publishes under a mutex (see ops.h). */
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <microhttpd.h>

#include "ops/ops.h"

struct ops_http {
    struct MHD_Daemon *d;
    pthread_mutex_t mu;
    char *metrics; /* the snapshot, guarded by mu */
    size_t len;
    int ready;
    char why[256];
    double published; /* ei_now() of the last publish; 0: never */
};

const char *ops_addr_check(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr)
        return "expected host:port, such as 127.0.0.1:9600";
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || port < 0 || port > 65535)
        return "expected host:port with a port from 0 to 65535, such as 127.0.0.1:9600";
    return NULL;
}

/* host:port to an IPv4 socket address (getaddrinfo: numeric or a name such as localhost). */
static int resolve(const char *addr, struct sockaddr_in *out, ei_err_t *err)
{
    const char *why = ops_addr_check(addr);
    if (why)
        return ei_err_set(err, EI_E_INVAL, "metrics address '%s': %s", addr, why);
    char host[256];
    const char *colon = strrchr(addr, ':');
    snprintf(host, sizeof host, "%.*s", (int)(colon - addr), addr);
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(strcmp(host, "*") ? host : "0.0.0.0", colon + 1, &hints, &res);
    if (rc != 0 || !res)
        return ei_err_set(err, EI_E_INVAL, "metrics address '%s': %s", addr, gai_strerror(rc));
    memcpy(out, res->ai_addr, sizeof *out);
    freeaddrinfo(res);
    return 0;
}

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *type,
                               const char *body, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    enum MHD_Result rc = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result text(struct MHD_Connection *conn, unsigned status, const char *body)
{
    return respond(conn, status, "text/plain; charset=utf-8", body, strlen(body));
}

static enum MHD_Result serve_metrics(ops_http_t *h, struct MHD_Connection *conn)
{
    pthread_mutex_lock(&h->mu);
    enum MHD_Result rc = respond(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                                 h->metrics ? h->metrics : "", h->metrics ? h->len : 0);
    pthread_mutex_unlock(&h->mu);
    return rc;
}

static enum MHD_Result serve_health(ops_http_t *h, struct MHD_Connection *conn, int ready)
{
    char body[320];
    unsigned status = MHD_HTTP_OK;
    pthread_mutex_lock(&h->mu);
    double age = h->published > 0 ? ei_now() - h->published : 0;
    if (h->published > 0 && age > OPS_STALL_S) {
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        snprintf(body, sizeof body, "loop stalled: nothing published for %.0f s\n", age);
    } else if (ready && !h->ready) {
        status = MHD_HTTP_SERVICE_UNAVAILABLE;
        snprintf(body, sizeof body, "not ready: %s\n", h->published > 0 ? h->why : "starting");
    } else {
        snprintf(body, sizeof body, "%s\n", ready ? "ready" : "ok");
    }
    pthread_mutex_unlock(&h->mu);
    return text(conn, status, body);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    (void)upload_data;
    (void)con_cls;
    ops_http_t *h = cls;
    if (*upload_data_size) /* a body is not read: drop it */
        *upload_data_size = 0;
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
        return text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    if (!strcmp(url, "/metrics"))
        return serve_metrics(h, conn);
    if (!strcmp(url, "/healthz"))
        return serve_health(h, conn, 0);
    if (!strcmp(url, "/readyz"))
        return serve_health(h, conn, 1);
    return text(conn, MHD_HTTP_NOT_FOUND, "not found: try /metrics, /healthz or /readyz\n");
}

ops_http_t *ops_http_start(const char *addr, ei_err_t *err)
{
    struct sockaddr_in sa;
    if (resolve(addr, &sa, err) < 0)
        return NULL;
    ops_http_t *h = calloc(1, sizeof *h);
    if (!h) {
        ei_err_set(err, EI_E_NOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&h->mu, NULL);
    h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL, 0, NULL, NULL,
                            on_request, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT, 64u, MHD_OPTION_CONNECTION_TIMEOUT,
                            10u, MHD_OPTION_END);
    if (!h->d) {
        ei_err_set(err, EI_E_IO, "metrics address '%s': cannot listen (in use?)", addr);
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    return h;
}

int ops_http_port(const ops_http_t *h)
{
    const union MHD_DaemonInfo *i = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    return i ? i->port : -1;
}

void ops_http_publish(ops_http_t *h, const ops_buf_t *m, int ready, const char *why)
{
    char *copy = NULL;
    if (!m->failed && (copy = malloc(m->len + 1)) != NULL) {
        memcpy(copy, m->p ? m->p : "", m->len);
        copy[m->len] = 0;
    }
    pthread_mutex_lock(&h->mu);
    if (copy) {
        free(h->metrics);
        h->metrics = copy;
        h->len = m->len;
    }
    h->ready = ready;
    snprintf(h->why, sizeof h->why, "%s", why ? why : "");
    h->published = ei_now();
    pthread_mutex_unlock(&h->mu);
}

void ops_http_stop(ops_http_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ops_http_t *h = *self_p;
    MHD_stop_daemon(h->d);
    pthread_mutex_destroy(&h->mu);
    free(h->metrics);
    free(h);
    *self_p = NULL;
}
