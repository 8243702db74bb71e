#include "httpd.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "buf.h"
#include "log.h"
#include "version.h"

/* The exposition of a worker is a few kilobytes; this is far above it. */
#define HTTPD_BODY_MAX (4u << 20)

struct httpd {
    struct MHD_Daemon *daemon;
    struct metrics *m;
    char worker[64];
    int64_t stuck_ms;
};

static void httpd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    size_t n;

    (void)cls;
    vsnprintf(msg, sizeof(msg), fmt, ap);
    n = strlen(msg);
    while (n && msg[n - 1] == '\n')
        msg[--n] = '\0';
    log_msg(NS_LOG_WARN, "http server: %s", msg);
}

/* Queue a response that takes over body (malloc'd; NULL for none). */
static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status,
                             const char *type, char *body)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = MHD_create_response_from_buffer(body ? strlen(body) : 0, body,
                                           body ? MHD_RESPMEM_MUST_FREE
                                                : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    ret = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *conn,
                                  unsigned status, const char *text)
{
    return reply(conn, status, "text/plain; charset=utf-8", strdup(text));
}

static enum MHD_Result serve_metrics(struct httpd *h,
                                     struct MHD_Connection *conn)
{
    struct buf out;
    enum ns_err err;

    buf_init(&out, HTTPD_BODY_MAX);
    err = metrics_write_prometheus(h->m, h->worker, NEXUS_VERSION, &out);
    if (err) {
        buf_free(&out);
        log_msg(NS_LOG_ERROR, "could not render /metrics: %s", ns_err_str(err));
        return reply_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR,
                          "could not render metrics\n");
    }
    return reply(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                 buf_take(&out));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    struct httpd *h = cls;
    char why[128], text[160];

    (void)version;
    (void)upload;
    (void)con_cls;
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
        strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                          "only GET and HEAD\n");
    if (*upload_size) /* a GET with a body: ignore the body */
        *upload_size = 0;
    if (strcmp(url, "/metrics") == 0)
        return serve_metrics(h, conn);
    if (strcmp(url, "/healthz") == 0) {
        if (metrics_alive(h->m, h->stuck_ms))
            return reply_text(conn, MHD_HTTP_OK, "ok\n");
        snprintf(text, sizeof(text), "consumer loop stuck for more than "
                 "%lld ms\n", (long long)h->stuck_ms);
        return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, text);
    }
    if (strcmp(url, "/readyz") == 0) {
        if (metrics_ready(h->m, why, sizeof(why)))
            return reply_text(conn, MHD_HTTP_OK, "ready\n");
        snprintf(text, sizeof(text), "not ready: %s\n", why);
        return reply_text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, text);
    }
    return reply_text(conn, MHD_HTTP_NOT_FOUND,
                      "not found: try /metrics, /healthz, /readyz\n");
}

enum ns_err httpd_start(const char *bind_addr, int port, struct metrics *m,
                        const char *worker, int64_t stuck_ms,
                        struct httpd **out, char *errstr, size_t errstr_size)
{
    struct httpd *h = NULL;
    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    const struct sockaddr *sa;
    unsigned flags = MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    enum ns_err err = NS_OK;

    *out = NULL;
    if (port <= 0 || port > 65535) {
        ns_err_set(errstr, errstr_size, "metrics port %d is out of range",
                   port);
        return NS_ERR_CONFIG;
    }
    memset(&sin, 0, sizeof(sin));
    memset(&sin6, 0, sizeof(sin6));
    if (inet_pton(AF_INET, bind_addr, &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)port);
        sa = (const struct sockaddr *)&sin;
    } else if (inet_pton(AF_INET6, bind_addr, &sin6.sin6_addr) == 1) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons((uint16_t)port);
        sa = (const struct sockaddr *)&sin6;
        flags |= MHD_USE_IPv6;
    } else {
        ns_err_set(errstr, errstr_size, "metrics bind address \"%s\" is not "
                   "an IPv4 or IPv6 address", bind_addr);
        return NS_ERR_CONFIG;
    }
    h = calloc(1, sizeof(*h));
    if (!h) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    h->m = m;
    h->stuck_ms = stuck_ms;
    snprintf(h->worker, sizeof(h->worker), "%s", worker);
    h->daemon = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, h,
        MHD_OPTION_EXTERNAL_LOGGER, httpd_log, NULL, /* first, as MHD asks */
        MHD_OPTION_SOCK_ADDR, sa,
        /* a scraper or a probe needs few connections; a slow client must
         * not hold one for long */
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)32,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
        MHD_OPTION_END);
    if (!h->daemon) {
        ns_err_set(errstr, errstr_size, "could not serve metrics on %s port "
                   "%d (address in use?)", bind_addr, port);
        err = NS_ERR_IO;
        goto cleanup;
    }
    log_msg(NS_LOG_INFO, "serving /metrics, /healthz, /readyz on %s port %d",
            bind_addr, port);
cleanup:
    if (err) {
        free(h);
        h = NULL;
    }
    *out = h;
    return err;
}

void httpd_free(struct httpd *h)
{
    if (!h)
        return;
    if (h->daemon)
        MHD_stop_daemon(h->daemon);
    free(h);
}
