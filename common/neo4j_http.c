/*
 * neo4j_http.c - one HTTP request to Neo4j at a time (contracts in
 * neo4j_http.h): the curl handle, its options and callbacks.
 */
#include "neo4j_http.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "log.h"

struct neo4j_http {
    CURL *curl;                   /* one easy handle: keeps the connection */
    struct curl_slist *headers;
    struct curl_slist *tx_headers; /* headers and one affinity (below) */
    char tx_affinity[512];        /* the affinity tx_headers carry */
    struct buf req;               /* request body, capped */
    struct buf resp;              /* response body, capped */
    int resp_overflow;            /* the write callback hit the cap */
    long timeout_ms;
    char affinity[512];           /* neo4j-cluster-affinity answered */
    int affinity_overflow;        /* ... longer than the buffer */
    char curl_err[CURL_ERROR_SIZE];
};

/* libcurl write callback: append to the capped response buffer. Returning
 * less than asked aborts the transfer with CURLE_WRITE_ERROR. */
static size_t neo4j_http_write_cb(char *ptr, size_t size, size_t nmemb,
                                  void *userdata)
{
    struct neo4j_http *h = userdata;
    size_t len = size * nmemb;

    if (buf_add(&h->resp, ptr, len) != NS_OK) {
        h->resp_overflow = 1;
        return 0;
    }
    return len;
}

/* libcurl header callback: keep the cluster member that holds a Query API
 * transaction (Aura), to send it back on the transaction's next requests. */
static size_t neo4j_http_header_cb(char *ptr, size_t size, size_t nmemb,
                                   void *userdata)
{
    static const char name[] = "neo4j-cluster-affinity:";
    struct neo4j_http *h = userdata;
    size_t len = size * nmemb, skip = sizeof(name) - 1, vlen;

    if (len <= skip || strncasecmp(ptr, name, skip) != 0)
        return len;
    while (skip < len && (ptr[skip] == ' ' || ptr[skip] == '\t'))
        skip++;
    vlen = len - skip;
    while (vlen > 0 && strchr(" \t\r\n", ptr[skip + vlen - 1]))
        vlen--;
    h->affinity_overflow = vlen >= sizeof(h->affinity);
    if (!h->affinity_overflow) {
        memcpy(h->affinity, ptr + skip, vlen);
        h->affinity[vlen] = '\0';
    }
    return len;
}

enum ns_err neo4j_http_new(const char *user, const char *password,
                           long timeout_ms, struct neo4j_http **out,
                           char *errstr, size_t errstr_size)
{
    struct neo4j_http *h = NULL;
    enum ns_err err = NS_OK;
    CURLcode rc;
    long connect_ms = timeout_ms < NEO4J_HTTP_CONNECT_TIMEOUT_MS ?
                      timeout_ms : NEO4J_HTTP_CONNECT_TIMEOUT_MS;
    static const char *const headers[] = {
        "Content-Type: application/json",
        "Accept: application/json;charset=UTF-8",
        /* the body goes at once; no 100-continue round trip */
        "Expect:",
    };

    *out = NULL;
    /* Reference counted: paired with curl_global_cleanup in free. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ns_err_set(errstr, errstr_size, "could not initialise libcurl");
        return NS_ERR_NOMEM;
    }
    h = calloc(1, sizeof(*h));
    if (!h) {
        curl_global_cleanup();
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    buf_init(&h->req, NEO4J_HTTP_MAX_REQUEST);
    buf_init(&h->resp, NEO4J_HTTP_MAX_RESPONSE);
    h->timeout_ms = timeout_ms;
    h->curl = curl_easy_init();
    if (!h->curl) {
        err = NS_ERR_NOMEM;
        ns_err_set(errstr, errstr_size, "could not create a curl handle");
        goto cleanup;
    }
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        struct curl_slist *list = curl_slist_append(h->headers, headers[i]);

        if (!list) {
            err = NS_ERR_NOMEM;
            ns_err_set(errstr, errstr_size, "out of memory");
            goto cleanup;
        }
        h->headers = list;
    }
    rc = curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, neo4j_http_write_cb);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, h);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_HEADERFUNCTION,
                              neo4j_http_header_cb);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_HEADERDATA, h);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, h->curl_err);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_TCP_NODELAY, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_TCP_KEEPALIVE, 1L);
    /* no SIGALRM for timeouts: workers may be multi-threaded */
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_FOLLOWLOCATION, 0L);
    /* libcurl's defaults, stated: https is never used unverified */
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_SSL_VERIFYPEER, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_SSL_VERIFYHOST, 2L);
    if (rc == CURLE_OK && user) {
        rc = curl_easy_setopt(h->curl, CURLOPT_HTTPAUTH,
                              (long)CURLAUTH_BASIC);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(h->curl, CURLOPT_USERNAME, user);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(h->curl, CURLOPT_PASSWORD,
                                  password ? password : "");
    }
    if (rc != CURLE_OK) {
        err = NS_ERR_CONFIG;
        ns_err_set(errstr, errstr_size,
                   "could not configure the curl handle: %s",
                   curl_easy_strerror(rc));
        goto cleanup;
    }
    *out = h;
    h = NULL;

cleanup:
    neo4j_http_free(h);
    return err;
}

void neo4j_http_free(struct neo4j_http *h)
{
    if (!h)
        return;
    if (h->curl)
        curl_easy_cleanup(h->curl);
    curl_slist_free_all(h->headers);
    curl_slist_free_all(h->tx_headers);
    buf_free(&h->req);
    buf_free(&h->resp);
    free(h);
    curl_global_cleanup();
}

enum ns_err neo4j_http_set_ca_file(struct neo4j_http *h, const char *ca_file,
                                   char *errstr, size_t errstr_size)
{
    CURLcode rc = curl_easy_setopt(h->curl, CURLOPT_CAINFO, ca_file);

    if (rc != CURLE_OK) {
        ns_err_set(errstr, errstr_size, "could not use the CA file %s: %s",
                   ca_file, curl_easy_strerror(rc));
        return NS_ERR_CONFIG;
    }
    return NS_OK;
}

char *neo4j_http_url(struct neo4j_http *h, const char *url, const char *db,
                     const char *tail)
{
    struct buf b;
    char *db_esc = NULL;
    char *out = NULL;
    size_t url_len = strlen(url);
    enum ns_err err;

    buf_init(&b, 4096);
    while (url_len > 0 && url[url_len - 1] == '/')
        url_len--;
    db_esc = db ? curl_easy_escape(h->curl, db, 0) : NULL;
    if (db && !db_esc)
        goto cleanup;
    err = buf_add(&b, url, url_len);
    if (!err && db)
        err = buf_addf(&b, "/db/%s", db_esc);
    if (!err)
        err = buf_adds(&b, tail);
    if (!err)
        out = buf_take(&b);

cleanup:
    curl_free(db_esc);
    buf_free(&b);
    return out;
}

struct buf *neo4j_http_body(struct neo4j_http *h)
{
    return &h->req;
}

const struct buf *neo4j_http_answer(const struct neo4j_http *h)
{
    return &h->resp;
}

const char *neo4j_http_affinity(const struct neo4j_http *h)
{
    return h->affinity_overflow ? NULL : h->affinity;
}

/* The headers to send: the fixed ones, and the affinity when there is
 * one. The list with the affinity is kept while the affinity stays. */
static enum ns_err neo4j_http_headers(struct neo4j_http *h,
                                      const char *affinity,
                                      struct curl_slist **out)
{
    struct buf line;
    enum ns_err err;

    *out = h->headers;
    if (!affinity || !affinity[0])
        return NS_OK;
    if (strlen(affinity) >= sizeof(h->tx_affinity))
        return NS_ERR_LIMIT;
    if (h->tx_headers && strcmp(h->tx_affinity, affinity) == 0) {
        *out = h->tx_headers;
        return NS_OK;
    }
    curl_slist_free_all(h->tx_headers);
    h->tx_headers = NULL;
    buf_init(&line, sizeof(h->tx_affinity) + 64);
    err = buf_addf(&line, "neo4j-cluster-affinity: %s", affinity);
    for (const struct curl_slist *l = h->headers; !err && l; l = l->next) {
        struct curl_slist *list = curl_slist_append(h->tx_headers, l->data);

        err = list ? NS_OK : NS_ERR_NOMEM;
        h->tx_headers = list ? list : h->tx_headers;
    }
    if (!err) {
        struct curl_slist *list = curl_slist_append(h->tx_headers,
                                                    buf_str(&line));

        err = list ? NS_OK : NS_ERR_NOMEM;
        h->tx_headers = list ? list : h->tx_headers;
    }
    buf_free(&line);
    if (err) {
        curl_slist_free_all(h->tx_headers);
        h->tx_headers = NULL;
        return err;
    }
    memcpy(h->tx_affinity, affinity, strlen(affinity) + 1);
    *out = h->tx_headers;
    return NS_OK;
}

/* Contract in neo4j_http.h. */
enum ns_err neo4j_http_request(struct neo4j_http *h, const char *method,
                               const char *url, const char *affinity,
                               long timeout_ms, long *status,
                               enum neo4j_failure *failure, char *errstr,
                               size_t errstr_size)
{
    struct curl_slist *headers = NULL;
    CURLcode rc;
    char shown[1024];

    *status = 0;
    *failure = NEO4J_FAILURE_LOCAL;
    if (neo4j_http_headers(h, affinity, &headers) != NS_OK) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    buf_reset(&h->resp);
    h->resp_overflow = 0;
    h->curl_err[0] = '\0';
    h->affinity[0] = '\0';
    h->affinity_overflow = 0;
    rc = curl_easy_setopt(h->curl, CURLOPT_URL, url);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, headers);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS,
                              timeout_ms > 0 ? timeout_ms : h->timeout_ms);
    if (rc == CURLE_OK && strcmp(method, "POST") == 0) {
        rc = curl_easy_setopt(h->curl, CURLOPT_POST, 1L);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE,
                                  (curl_off_t)h->req.len);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS,
                                  buf_str(&h->req));
    } else if (rc == CURLE_OK) {
        rc = curl_easy_setopt(h->curl, CURLOPT_HTTPGET, 1L);
        if (rc == CURLE_OK && strcmp(method, "GET") != 0)
            rc = curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, method);
    }
    if (rc == CURLE_OK)
        rc = curl_easy_perform(h->curl);
    /* The body buffer is reused; leave no stale pointer in the handle.
     * Setting a pointer option cannot fail. */
    (void)curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, NULL);
    (void)curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, NULL);
    *failure = rc == CURLE_OK || h->resp_overflow ?
               NEO4J_FAILURE_ANSWERED : NEO4J_FAILURE_UNREACHED;
    if (h->resp_overflow) {
        ns_err_set(errstr, errstr_size, "Neo4j response exceeds the %u "
                   "byte limit", NEO4J_HTTP_MAX_RESPONSE);
        return NS_ERR_NEO4J_PERMANENT;
    }
    if (rc != CURLE_OK) {
        ns_err_set(errstr, errstr_size, "could not reach Neo4j at %s: %s",
                   log_url_text(url, shown, sizeof(shown)),
                   h->curl_err[0] ? h->curl_err : curl_easy_strerror(rc));
        return NS_ERR_NEO4J_TRANSIENT;
    }
    if (curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, status) !=
        CURLE_OK)
        *status = 0;
    return NS_OK;
}

int neo4j_http_status_unavailable(long status)
{
    return status == 401 || status == 403 || status == 404 ||
           status == 407 || status == 408 || status == 429 || status >= 500;
}

enum ns_err neo4j_http_body_failed(enum ns_err err, char *errstr,
                                   size_t errstr_size)
{
    if (err == NS_ERR_NOMEM) {
        ns_err_set(errstr, errstr_size, "out of memory printing request");
        return err;
    }
    if (err == NS_ERR_LIMIT)
        ns_err_set(errstr, errstr_size, "request exceeds %u bytes or nests "
                   "too deep", NEO4J_HTTP_MAX_REQUEST);
    else
        ns_err_set(errstr, errstr_size,
                   "parameters hold an item that is not JSON");
    return NS_ERR_NEO4J_PERMANENT;
}
