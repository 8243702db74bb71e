/*
 * neo4j.c - the Neo4j HTTP client: the curl handle and its options, the
 * choice of transport, the requests of neo4j_run() (one to tx/commit, or a
 * Query API transaction) and the reading of their answers, the
 * classification of Neo4j's status codes, the start-up check. Bodies and
 * answers of the Query API are neo4j_query.c's, the tx body neo4j_body.c's.
 */
#include "neo4j.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "buf.h"
#include "log.h"
#include "neo4j_body.h"
#include "neo4j_query.h"

/*
 * Caps on what one request may send and receive. A batch whose body or
 * response would pass them is refused rather than buffered without end.
 */
#define NEO4J_MAX_REQUEST (64u * 1024u * 1024u)
#define NEO4J_MAX_RESPONSE (64u * 1024u * 1024u)

/* Connecting to a live server on a LAN takes milliseconds; a refused
 * connection fails at once. Past this a server counts as unreachable. */
#define NEO4J_CONNECT_TIMEOUT_MS 3000L

struct neo4j_client {
    CURL *curl;                   /* one easy handle: keeps the connection */
    struct curl_slist *headers;
    struct curl_slist *tx_headers; /* headers and the cluster affinity of
                                     the open Query API transaction */
    char *endpoint;               /* {url}/db/{db}/tx/commit */
    char *query;                  /* {url}/db/{db}/query/v2 */
    char *root;                   /* {url}/: the discovery document */
    char *shown;                  /* endpoint fit to log: password masked */
    struct buf req;               /* request body, capped */
    struct buf resp;              /* response body, capped */
    struct buf url;               /* a Query API transaction's url */
    int resp_overflow;            /* the write callback hit the cap */
    long timeout_ms;
    enum neo4j_api api;           /* in use; AUTO until discovered */
    char affinity[512];           /* neo4j-cluster-affinity answered */
    int affinity_overflow;        /* ... longer than the buffer */
    enum neo4j_failure failure;   /* how the last neo4j_run ended */
    char curl_err[CURL_ERROR_SIZE];
};

/* libcurl write callback: append to the capped response buffer. Returning
 * less than asked aborts the transfer with CURLE_WRITE_ERROR. */
static size_t neo4j_write_cb(char *ptr, size_t size, size_t nmemb,
                             void *userdata)
{
    struct neo4j_client *nc = userdata;
    size_t len = size * nmemb;

    if (buf_add(&nc->resp, ptr, len) != NS_OK) {
        nc->resp_overflow = 1;
        return 0;
    }
    return len;
}

/* libcurl header callback: keep the cluster member that holds a Query API
 * transaction (Aura), to send it back on the transaction's next requests. */
static size_t neo4j_header_cb(char *ptr, size_t size, size_t nmemb,
                              void *userdata)
{
    static const char name[] = "neo4j-cluster-affinity:";
    struct neo4j_client *nc = userdata;
    size_t len = size * nmemb, skip = sizeof(name) - 1, vlen;

    if (len <= skip || strncasecmp(ptr, name, skip) != 0)
        return len;
    while (skip < len && (ptr[skip] == ' ' || ptr[skip] == '\t'))
        skip++;
    vlen = len - skip;
    while (vlen > 0 && strchr(" \t\r\n", ptr[skip + vlen - 1]))
        vlen--;
    nc->affinity_overflow = vlen >= sizeof(nc->affinity);
    if (!nc->affinity_overflow) {
        memcpy(nc->affinity, ptr + skip, vlen);
        nc->affinity[vlen] = '\0';
    }
    return len;
}

/* Builds "{url}/db/{db}" + tail into *out (caller frees). */
static enum ns_err neo4j_endpoint(CURL *curl, const char *url, const char *db,
                                  const char *tail, char **out)
{
    struct buf b;
    char *db_esc = NULL;
    size_t url_len = strlen(url);
    enum ns_err err;

    buf_init(&b, 4096);
    while (url_len > 0 && url[url_len - 1] == '/')
        url_len--;
    db_esc = db ? curl_easy_escape(curl, db, 0) : NULL;
    if (db && !db_esc) {
        err = NS_ERR_NOMEM;
        goto cleanup;
    }
    err = buf_add(&b, url, url_len);
    if (!err && db)
        err = buf_addf(&b, "/db/%s", db_esc);
    if (!err)
        err = buf_adds(&b, tail);
    if (err)
        goto cleanup;
    *out = buf_take(&b);

cleanup:
    curl_free(db_esc);
    buf_free(&b);
    return err;
}

enum ns_err neo4j_client_new(const char *url, const char *db,
                             const char *user, const char *password,
                             long timeout_ms, struct neo4j_client **out,
                             char *errstr, size_t errstr_size)
{
    struct neo4j_client *nc = NULL;
    enum ns_err err = NS_OK;
    CURLcode rc;
    long connect_ms;
    size_t shown_size;
    static const char *const headers[] = {
        "Content-Type: application/json",
        "Accept: application/json;charset=UTF-8",
        /* the body goes at once; no 100-continue round trip */
        "Expect:",
    };

    *out = NULL;
    if (!url || (strncmp(url, "http://", 7) != 0 &&
                 strncmp(url, "https://", 8) != 0)) {
        ns_err_set(errstr, errstr_size,
                      "Neo4j url must start with http:// or https://");
        return NS_ERR_CONFIG;
    }
    if (!db || !*db) {
        ns_err_set(errstr, errstr_size, "Neo4j database name is empty");
        return NS_ERR_CONFIG;
    }
    if (timeout_ms <= 0) {
        ns_err_set(errstr, errstr_size,
                      "Neo4j timeout must be positive, got %ld ms", timeout_ms);
        return NS_ERR_CONFIG;
    }

    /* Reference counted: paired with curl_global_cleanup in free. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        ns_err_set(errstr, errstr_size, "could not initialise libcurl");
        return NS_ERR_NOMEM;
    }
    nc = calloc(1, sizeof(*nc));
    if (!nc) {
        curl_global_cleanup();
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    buf_init(&nc->req, NEO4J_MAX_REQUEST);
    buf_init(&nc->resp, NEO4J_MAX_RESPONSE);
    buf_init(&nc->url, 8192);
    nc->timeout_ms = timeout_ms;
    nc->curl = curl_easy_init();
    if (!nc->curl) {
        err = NS_ERR_NOMEM;
        ns_err_set(errstr, errstr_size, "could not create a curl handle");
        goto cleanup;
    }
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        struct curl_slist *list = curl_slist_append(nc->headers, headers[i]);

        if (!list) {
            err = NS_ERR_NOMEM;
            ns_err_set(errstr, errstr_size, "out of memory");
            goto cleanup;
        }
        nc->headers = list;
    }
    err = neo4j_endpoint(nc->curl, url, db, "/tx/commit", &nc->endpoint);
    if (!err)
        err = neo4j_endpoint(nc->curl, url, db, "/query/v2", &nc->query);
    if (!err)
        err = neo4j_endpoint(nc->curl, url, NULL, "/", &nc->root);
    if (err) {
        ns_err_set(errstr, errstr_size, "could not build the Neo4j url");
        goto cleanup;
    }
    shown_size = strlen(nc->endpoint) + sizeof("********");
    nc->shown = malloc(shown_size);
    if (!nc->shown) {
        err = NS_ERR_NOMEM;
        ns_err_set(errstr, errstr_size, "out of memory");
        goto cleanup;
    }
    log_url_text(nc->endpoint, nc->shown, shown_size);

    connect_ms = timeout_ms < NEO4J_CONNECT_TIMEOUT_MS ?
                 timeout_ms : NEO4J_CONNECT_TIMEOUT_MS;
    rc = curl_easy_setopt(nc->curl, CURLOPT_WRITEFUNCTION, neo4j_write_cb);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_WRITEDATA, nc);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_HEADERFUNCTION,
                              neo4j_header_cb);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_HEADERDATA, nc);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_ERRORBUFFER, nc->curl_err);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_TCP_NODELAY, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_TCP_KEEPALIVE, 1L);
    /* no SIGALRM for timeouts: workers may be multi-threaded */
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_NOSIGNAL, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_FOLLOWLOCATION, 0L);
    /* libcurl's defaults, stated: https is never used unverified */
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_SSL_VERIFYPEER, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_SSL_VERIFYHOST, 2L);
    if (rc == CURLE_OK && user) {
        rc = curl_easy_setopt(nc->curl, CURLOPT_HTTPAUTH,
                              (long)CURLAUTH_BASIC);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(nc->curl, CURLOPT_USERNAME, user);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(nc->curl, CURLOPT_PASSWORD,
                                  password ? password : "");
    }
    if (rc != CURLE_OK) {
        err = NS_ERR_CONFIG;
        ns_err_set(errstr, errstr_size,
                      "could not configure the curl handle: %s",
                      curl_easy_strerror(rc));
        goto cleanup;
    }

    *out = nc;
    nc = NULL;

cleanup:
    neo4j_client_free(nc);
    return err;
}

void neo4j_client_free(struct neo4j_client *nc)
{
    if (!nc)
        return;
    if (nc->curl)
        curl_easy_cleanup(nc->curl);
    curl_slist_free_all(nc->headers);
    curl_slist_free_all(nc->tx_headers);
    free(nc->endpoint);
    free(nc->query);
    free(nc->root);
    free(nc->shown);
    buf_free(&nc->req);
    buf_free(&nc->resp);
    buf_free(&nc->url);
    free(nc);
    curl_global_cleanup();
}

enum ns_err neo4j_client_set_ca_file(struct neo4j_client *nc,
                                     const char *ca_file, char *errstr,
                                     size_t errstr_size)
{
    CURLcode rc;

    if (strncmp(nc->endpoint, "https://", 8) != 0) {
        ns_err_set(errstr, errstr_size,
                   "a Neo4j CA file needs an https url, not %s", nc->shown);
        return NS_ERR_CONFIG;
    }
    rc = curl_easy_setopt(nc->curl, CURLOPT_CAINFO, ca_file);
    if (rc != CURLE_OK) {
        ns_err_set(errstr, errstr_size, "could not use the CA file %s: %s",
                   ca_file, curl_easy_strerror(rc));
        return NS_ERR_CONFIG;
    }
    return NS_OK;
}

/*
 * How many statements ran to completion before an error. A statement that
 * fails while running still leaves a result (its columns, maybe some rows),
 * one that fails to compile leaves none, so counting results is not enough;
 * a completed result is the one that carries "stats".
 */
static size_t neo4j_completed(const cJSON *res)
{
    const cJSON *it;
    size_t done = 0;

    cJSON_ArrayForEach(it, res) {
        if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(it, "stats")))
            break;
        done++;
    }
    return done;
}

/*
 * Codes that say this request itself is wrong: the statement, or the data
 * of the event in it. Sent again unchanged they fail again, so the change
 * goes to the DLQ. Every other code, ClientError or not, is retried: a
 * ClientError can be the environment's (NotALeader and
 * ForbiddenOnReadOnlyDatabase during a leader switch, DatabaseNotFound
 * while a database starts, Security, TransactionTimedOut, EntityNotFound
 * when another writer deleted a node mid-transaction), and dead-lettering
 * on those loses data. See Neo4j's status code list.
 */
static const char *const neo4j_permanent_codes[] = {
    "Neo.ClientError.Schema.ConstraintValidationFailed",
    "Neo.ClientError.Statement.ConstraintVerificationFailed",
    "Neo.ClientError.Statement.TypeError",
    "Neo.ClientError.Statement.SyntaxError",
    "Neo.ClientError.Statement.SemanticError",
    "Neo.ClientError.Statement.ArgumentError",
    "Neo.ClientError.Statement.ParameterMissing",
    "Neo.ClientError.Statement.ArithmeticError",
    "Neo.ClientError.Request.Invalid",
    "Neo.ClientError.Request.InvalidFormat",
};

enum ns_err neo4j_classify(const char *code)
{
    size_t n = sizeof(neo4j_permanent_codes) /
               sizeof(neo4j_permanent_codes[0]);

    if (!code)
        return NS_ERR_NEO4J_TRANSIENT;
    for (size_t i = 0; i < n; i++)
        if (strcmp(code, neo4j_permanent_codes[i]) == 0)
            return NS_ERR_NEO4J_PERMANENT;
    return NS_ERR_NEO4J_TRANSIENT;
}

/* Codes of the server's state, never of one request: a cluster between
 * leaders, a database starting, stopped or read-only, credentials, the
 * server itself failing or out of memory or transactions. (Not
 * MemoryPoolOutOfMemoryError: one huge statement gives it, alone.) */
static const char *const neo4j_environment_prefixes[] = {
    "Neo.ClientError.Cluster.",
    "Neo.TransientError.Cluster.",
    "Neo.ClientError.Database.DatabaseNotFound",
    "Neo.TransientError.General.DatabaseUnavailable",
    "Neo.ClientError.General.ForbiddenOnReadOnlyDatabase",
    "Neo.ClientError.Security.",
    "Neo.TransientError.Security.",
    "Neo.DatabaseError.",
    "Neo.TransientError.General.OutOfMemoryError",
    "Neo.TransientError.General.DatabaseUnavailable",
    "Neo.TransientError.Transaction.MaximumTransactionLimitReached",
    "Neo.TransientError.Request.ResourceExhaustion",
};

int neo4j_reason_is_environment(const char *reason)
{
    size_t n = sizeof(neo4j_environment_prefixes) /
               sizeof(neo4j_environment_prefixes[0]);

    for (size_t i = 0; reason && i < n; i++)
        if (strncmp(reason, neo4j_environment_prefixes[i],
                    strlen(neo4j_environment_prefixes[i])) == 0)
            return 1;
    return 0;
}

enum neo4j_failure neo4j_last_failure(const struct neo4j_client *nc)
{
    return nc->failure;
}

/* A status, without a Neo4j code, that says nothing about the request:
 * the server or a gateway cannot take requests now (408, 429, 5xx), or
 * the way to it is wrong (401, 403, 407 credentials at a gateway, 404 a
 * wrong path). */
static int neo4j_status_unavailable(long status)
{
    return status == 401 || status == 403 || status == 404 ||
           status == 407 || status == 408 || status == 429 || status >= 500;
}

/*
 * One request to url: method "POST" (the body is nc->req), "GET" or
 * "DELETE", within timeout_ms. Only the transfer is judged: NS_OK when an
 * answer came (*status, the body in nc->resp, nc->failure ANSWERED);
 * NS_ERR_NEO4J_PERMANENT when it passed the response cap (ANSWERED);
 * NS_ERR_NEO4J_TRANSIENT when none came (UNREACHED).
 */
static enum ns_err neo4j_request(struct neo4j_client *nc, const char *method,
                                 const char *url,
                                 const struct curl_slist *headers,
                                 long timeout_ms, long *status, char *errstr,
                                 size_t errstr_size)
{
    CURLcode rc;
    char shown[1024];

    *status = 0;
    buf_reset(&nc->resp);
    nc->resp_overflow = 0;
    nc->curl_err[0] = '\0';
    rc = curl_easy_setopt(nc->curl, CURLOPT_URL, url);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_HTTPHEADER, headers);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    if (rc == CURLE_OK && strcmp(method, "POST") == 0) {
        rc = curl_easy_setopt(nc->curl, CURLOPT_POST, 1L);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(nc->curl, CURLOPT_POSTFIELDSIZE_LARGE,
                                  (curl_off_t)nc->req.len);
        if (rc == CURLE_OK)
            rc = curl_easy_setopt(nc->curl, CURLOPT_POSTFIELDS,
                                  buf_str(&nc->req));
    } else if (rc == CURLE_OK) {
        rc = curl_easy_setopt(nc->curl, CURLOPT_HTTPGET, 1L);
        if (rc == CURLE_OK && strcmp(method, "GET") != 0)
            rc = curl_easy_setopt(nc->curl, CURLOPT_CUSTOMREQUEST, method);
    }
    if (rc == CURLE_OK)
        rc = curl_easy_perform(nc->curl);
    /* The body buffer is reused; leave no stale pointer in the handle.
     * Setting a pointer option cannot fail. */
    (void)curl_easy_setopt(nc->curl, CURLOPT_POSTFIELDS, NULL);
    (void)curl_easy_setopt(nc->curl, CURLOPT_CUSTOMREQUEST, NULL);
    nc->failure = rc == CURLE_OK || nc->resp_overflow ?
                  NEO4J_FAILURE_ANSWERED : NEO4J_FAILURE_UNREACHED;
    if (nc->resp_overflow) {
        ns_err_set(errstr, errstr_size, "Neo4j response exceeds the %u "
                   "byte limit", NEO4J_MAX_RESPONSE);
        return NS_ERR_NEO4J_PERMANENT;
    }
    if (rc != CURLE_OK) {
        ns_err_set(errstr, errstr_size, "could not reach Neo4j at %s: %s",
                   log_url_text(url, shown, sizeof(shown)),
                   nc->curl_err[0] ? nc->curl_err : curl_easy_strerror(rc));
        return NS_ERR_NEO4J_TRANSIENT;
    }
    if (curl_easy_getinfo(nc->curl, CURLINFO_RESPONSE_CODE, status) !=
        CURLE_OK)
        *status = 0;
    return NS_OK;
}

/* nc->req holds a body; err is what writing it returned. Its errors in
 * neo4j_run's terms (permanent: the batch must be split, or a parameter
 * is not JSON). */
static enum ns_err neo4j_body_failed(enum ns_err err, char *errstr,
                                     size_t errstr_size)
{
    if (err == NS_ERR_NOMEM) {
        ns_err_set(errstr, errstr_size, "out of memory printing request");
        return err;
    }
    if (err == NS_ERR_LIMIT)
        ns_err_set(errstr, errstr_size, "request exceeds %u bytes or nests "
                   "deeper than %d", NEO4J_MAX_REQUEST, NEO4J_BODY_MAX_DEPTH);
    else
        ns_err_set(errstr, errstr_size,
                   "parameters hold an item that is not JSON");
    return NS_ERR_NEO4J_PERMANENT;
}

/*
 * The batch in one request to tx/commit. Failure paths, in order: the body
 * cannot be built or is too large; the transfer fails (neo4j_request); the
 * server answers with errors[] (classified by code); a non-2xx status or a
 * body that is not the expected JSON, with no Neo4j code in it (transient:
 * a proxy or a server in trouble, not the event's fault).
 */
static enum ns_err neo4j_run_tx(struct neo4j_client *nc,
                                const struct neo4j_stmt *stmts, size_t n,
                                cJSON **results, size_t *failed_stmt,
                                char *errstr, size_t errstr_size)
{
    cJSON *body = NULL;
    cJSON *resp = NULL;
    const cJSON *errors;
    const cJSON *first;
    const cJSON *res;
    long status = 0;
    enum ns_err err = NS_OK;

    body = neo4j_body_new(stmts, n);
    if (!body) {
        err = NS_ERR_NOMEM;
        ns_err_set(errstr, errstr_size, "out of memory building request");
        goto cleanup;
    }
    buf_reset(&nc->req);
    err = neo4j_body_write(&nc->req, body);
    if (err) {
        err = neo4j_body_failed(err, errstr, errstr_size);
        goto cleanup;
    }
    err = neo4j_request(nc, "POST", nc->endpoint, nc->headers, nc->timeout_ms,
                        &status, errstr, errstr_size);
    if (err)
        goto cleanup;

    resp = cJSON_ParseWithLength(buf_str(&nc->resp), nc->resp.len);
    if (!resp || !cJSON_IsObject(resp)) {
        if (neo4j_status_unavailable(status))
            nc->failure = NEO4J_FAILURE_UNREACHED;
        err = NS_ERR_NEO4J_TRANSIENT;
        ns_err_set(errstr, errstr_size,
                      "could not parse the Neo4j response: HTTP %ld, %zu "
                      "bytes", status, nc->resp.len);
        goto cleanup;
    }

    errors = cJSON_GetObjectItemCaseSensitive(resp, "errors");
    first = cJSON_IsArray(errors) ? cJSON_GetArrayItem(errors, 0) : NULL;
    res = cJSON_GetObjectItemCaseSensitive(resp, "results");
    if (first) {
        const cJSON *code = cJSON_GetObjectItemCaseSensitive(first, "code");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(first, "message");
        const char *code_s = cJSON_IsString(code) ? code->valuestring :
                             "Neo.Unknown";
        const char *msg_s = cJSON_IsString(msg) ? msg->valuestring : "";

        err = neo4j_classify(code_s);
        ns_err_set(errstr, errstr_size, "%s: %s", code_s, msg_s);
        /* Statements run in order and stop at the first error. */
        if (failed_stmt && cJSON_IsArray(res)) {
            size_t done = neo4j_completed(res);

            *failed_stmt = done < n ? done : n;
        }
        goto cleanup;
    }
    if (status < 200 || status > 299) {
        if (neo4j_status_unavailable(status))
            nc->failure = NEO4J_FAILURE_UNREACHED;
        err = NS_ERR_NEO4J_TRANSIENT;
        ns_err_set(errstr, errstr_size,
                      "Neo4j answered HTTP %ld without an error code", status);
        goto cleanup;
    }
    if (!cJSON_IsArray(res) || (size_t)cJSON_GetArraySize(res) != n) {
        err = NS_ERR_NEO4J_TRANSIENT;
        ns_err_set(errstr, errstr_size,
                      "Neo4j response has %d results for %zu statements",
                      cJSON_IsArray(res) ? cJSON_GetArraySize(res) : -1, n);
        goto cleanup;
    }
    if (results)
        *results = cJSON_DetachItemFromObjectCaseSensitive(resp, "results");

cleanup:
    cJSON_Delete(resp);
    cJSON_Delete(body);
    return err;
}

/*
 * Roll back the Query API transaction tx_id after a failure. Bounded by
 * the connect timeout: the server would drop it when it expires, but its
 * locks would hold the retry until then. 404: the server has dropped it
 * already (it does on an error it answered). Keeps nc->failure.
 */
static void neo4j_query_rollback(struct neo4j_client *nc, const char *tx_id,
                                 const struct curl_slist *headers)
{
    enum neo4j_failure failure = nc->failure;
    char why[512] = "";
    long status = 0;

    buf_reset(&nc->url);
    if (buf_addf(&nc->url, "%s/tx/%s", nc->query, tx_id) != NS_OK)
        ns_err_set(why, sizeof(why), "out of memory");
    else if (neo4j_request(nc, "DELETE", buf_str(&nc->url), headers,
                           NEO4J_CONNECT_TIMEOUT_MS, &status, why,
                           sizeof(why)) == NS_OK &&
             !(status >= 200 && status <= 299) && status != 404)
        ns_err_set(why, sizeof(why), "HTTP %ld", status);
    if (why[0])
        log_msg(LOG_WARN, "could not roll back Neo4j transaction %s, the "
                "server drops it when it expires: %s", tx_id, why);
    nc->failure = failure;
}

/* Send the cluster affinity of the transaction just opened (Aura) on its
 * next requests: nc->tx_headers are nc->headers and that header. */
static enum ns_err neo4j_query_affinity(struct neo4j_client *nc,
                                        const struct curl_slist **headers,
                                        char *errstr, size_t errstr_size)
{
    struct buf line;
    enum ns_err err = NS_OK;

    *headers = nc->headers;
    if (nc->affinity_overflow) {
        ns_err_set(errstr, errstr_size, "Neo4j answered a "
                   "neo4j-cluster-affinity header of %zu bytes or more",
                   sizeof(nc->affinity));
        return NS_ERR_NEO4J_TRANSIENT;
    }
    if (!nc->affinity[0])
        return NS_OK;
    curl_slist_free_all(nc->tx_headers);
    nc->tx_headers = NULL;
    buf_init(&line, sizeof(nc->affinity) + 64);
    err = buf_addf(&line, "neo4j-cluster-affinity: %s", nc->affinity);
    for (const struct curl_slist *h = nc->headers; !err && h; h = h->next) {
        struct curl_slist *list = curl_slist_append(nc->tx_headers, h->data);

        err = list ? NS_OK : NS_ERR_NOMEM;
        nc->tx_headers = list ? list : nc->tx_headers;
    }
    if (!err) {
        struct curl_slist *list = curl_slist_append(nc->tx_headers,
                                                    buf_str(&line));

        err = list ? NS_OK : NS_ERR_NOMEM;
        nc->tx_headers = list ? list : nc->tx_headers;
    }
    buf_free(&line);
    if (err) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return err;
    }
    *headers = nc->tx_headers;
    return NS_OK;
}

/*
 * The batch through the Query API: one statement in one request to
 * query/v2; n > 1 in an explicit transaction, statement i in request i
 * (open, run, commit with the last). Failure paths as neo4j_run_tx's, per
 * request, with the caps on the sum of the bodies and of the answers; a
 * follow-up answered 404 means the server lost the transaction
 * (restarted, expired, another cluster member): transient, unreached. An
 * open transaction is rolled back on any failure.
 */
static enum ns_err neo4j_run_query(struct neo4j_client *nc,
                                   const struct neo4j_stmt *stmts, size_t n,
                                   cJSON **results, size_t *failed_stmt,
                                   char *errstr, size_t errstr_size)
{
    struct neo4j_query_answer ans = {0};
    const struct curl_slist *headers = nc->headers;
    cJSON *list = cJSON_CreateArray();
    char tx_id[sizeof(ans.tx_id)] = "";
    size_t sent = 0, got = 0;
    enum ns_err err = NS_OK;

    nc->affinity[0] = '\0';
    nc->affinity_overflow = 0;
    for (size_t i = 0; !err && i < n; i++) {
        long status = 0;

        nc->failure = NEO4J_FAILURE_LOCAL;
        buf_reset(&nc->url);
        buf_reset(&nc->req);
        err = list ? NS_OK : NS_ERR_NOMEM;
        if (!err && n == 1)
            err = buf_adds(&nc->url, nc->query);
        else if (!err)
            err = buf_addf(&nc->url, "%s/tx%s%s%s", nc->query,
                           i ? "/" : "", tx_id, i + 1 == n ? "/commit" : "");
        if (!err)
            err = neo4j_query_body_write(&nc->req, &stmts[i]);
        sent += nc->req.len;
        if (!err && sent > NEO4J_MAX_REQUEST)
            err = NS_ERR_LIMIT;
        if (err) {
            err = neo4j_body_failed(err, errstr, errstr_size);
            break;
        }
        err = neo4j_request(nc, "POST", buf_str(&nc->url), headers,
                            nc->timeout_ms, &status, errstr, errstr_size);
        got += nc->resp.len;
        if (!err && got > NEO4J_MAX_RESPONSE) {
            err = NS_ERR_NEO4J_PERMANENT;
            ns_err_set(errstr, errstr_size, "Neo4j response exceeds the %u "
                       "byte limit", NEO4J_MAX_RESPONSE);
        }
        if (!err)
            err = neo4j_query_answer_read(buf_str(&nc->resp), nc->resp.len,
                                          &ans, errstr, errstr_size);
        if (err == NS_ERR_NEO4J_TRANSIENT && ans.code[0] && i > 0 &&
            (status == 404 || strcmp(ans.code, "Neo.ClientError."
                                     "Transaction.TransactionNotFound") == 0)) {
            nc->failure = NEO4J_FAILURE_UNREACHED;
            tx_id[0] = '\0';
        } else if (err == NS_ERR_NEO4J_TRANSIENT && ans.code[0]) {
            err = neo4j_classify(ans.code);
            if (failed_stmt)
                *failed_stmt = i;
        } else if (err == NS_ERR_PARSE || (!err && (status < 200 ||
                                                    status > 299))) {
            if (neo4j_status_unavailable(status))
                nc->failure = NEO4J_FAILURE_UNREACHED;
            ns_err_set(errstr, errstr_size, err ? "could not parse the Neo4j "
                       "response: HTTP %ld, %zu bytes" : "Neo4j answered HTTP "
                       "%ld without an error code", status, nc->resp.len);
            err = NS_ERR_NEO4J_TRANSIENT;
        } else if (!err && n > 1 && i == 0 && !ans.tx_id[0]) {
            err = NS_ERR_NEO4J_TRANSIENT;
            ns_err_set(errstr, errstr_size, "Neo4j opened no transaction: "
                       "its answer has no transaction.id");
        } else if (!err && n > 1 && i == 0) {
            memcpy(tx_id, ans.tx_id, sizeof(tx_id));
            err = neo4j_query_affinity(nc, &headers, errstr, errstr_size);
        }
        if (!err && !cJSON_AddItemToArray(list, ans.result)) {
            err = NS_ERR_NOMEM;
            ns_err_set(errstr, errstr_size, "out of memory");
        } else if (!err) {
            ans.result = NULL;
        }
        neo4j_query_answer_clear(&ans);
    }
    if (err && tx_id[0])
        neo4j_query_rollback(nc, tx_id, headers);
    if (!err && results) {
        *results = list;
        list = NULL;
    }
    cJSON_Delete(list);
    return err;
}

/*
 * neo4j.api auto, before the first request: GET {url}/ and keep tx/commit
 * where the server lists it (one round trip per batch, about 30% faster
 * than the Query API on 5.26), else the Query API (Aura, later releases).
 * Nothing is decided until the server answers: a failure is transient and
 * unreached, as the statements were not sent.
 */
static enum ns_err neo4j_discover(struct neo4j_client *nc, char *errstr,
                                  size_t errstr_size)
{
    struct neo4j_query_discovery d;
    char why[512], shown[1024];
    long status = 0;
    enum ns_err err;

    err = neo4j_request(nc, "GET", nc->root, nc->headers, nc->timeout_ms,
                        &status, why, sizeof(why));
    if (!err && (status < 200 || status > 299)) {
        err = NS_ERR_NEO4J_TRANSIENT;
        ns_err_set(why, sizeof(why), "HTTP %ld", status);
    }
    if (!err)
        err = neo4j_query_discovery_read(buf_str(&nc->resp), nc->resp.len,
                                         &d, why, sizeof(why));
    log_url_text(nc->root, shown, sizeof(shown));
    if (err) {
        nc->failure = NEO4J_FAILURE_UNREACHED;
        ns_err_set(errstr, errstr_size, "could not read Neo4j's discovery "
                   "document at %s to choose its API (neo4j.api auto; query "
                   "or tx choose without it): %s", shown, why);
        return NS_ERR_NEO4J_TRANSIENT;
    }
    nc->api = d.tx ? NEO4J_API_TX : NEO4J_API_QUERY;
    log_msg(LOG_INFO, "Neo4j %s %s at %s: using %s: %s", d.version,
            d.edition, shown, d.tx ? "the HTTP transactional API (tx/commit)"
            : "the Query API (query/v2)", d.tx ? "the server offers it, one "
            "round trip a batch (neo4j.api query forces the Query API)" :
            d.query ? "the server offers no transactional endpoint" :
            "the server lists neither endpoint");
    return NS_OK;
}

int neo4j_api_parse(const char *name)
{
    static const char *const names[] = {"auto", "query", "tx"};

    for (int i = 0; name && i < 3; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

const char *neo4j_api_name(enum neo4j_api api)
{
    return api == NEO4J_API_QUERY ? "query" : api == NEO4J_API_TX ? "tx" :
           "auto";
}

void neo4j_client_set_api(struct neo4j_client *nc, enum neo4j_api api)
{
    nc->api = api;
}

enum neo4j_api neo4j_client_api(const struct neo4j_client *nc)
{
    return nc->api;
}

/* Contract in neo4j.h: the checks shared by both transports, then one. */
enum ns_err neo4j_run(struct neo4j_client *nc, const struct neo4j_stmt *stmts,
                      size_t n, struct cJSON **results, size_t *failed_stmt,
                      char *errstr, size_t errstr_size)
{
    enum ns_err err = NS_OK;

    if (results)
        *results = NULL;
    if (failed_stmt)
        *failed_stmt = n;
    nc->failure = NEO4J_FAILURE_LOCAL;
    for (size_t i = 0; i < n; i++) {
        if (!stmts[i].cypher ||
            (stmts[i].params && !cJSON_IsObject(stmts[i].params))) {
            ns_err_set(errstr, errstr_size,
                          "statement %zu has no text or its parameters are "
                          "not an object", i);
            if (failed_stmt)
                *failed_stmt = i;
            return NS_ERR_NEO4J_PERMANENT;
        }
    }
    if (nc->api == NEO4J_API_AUTO)
        err = neo4j_discover(nc, errstr, errstr_size);
    if (!err && nc->api == NEO4J_API_QUERY)
        err = neo4j_run_query(nc, stmts, n, results, failed_stmt, errstr,
                              errstr_size);
    else if (!err)
        err = neo4j_run_tx(nc, stmts, n, results, failed_stmt, errstr,
                           errstr_size);
    if (!err)
        nc->failure = NEO4J_FAILURE_NONE;
    return err;
}

/*
 * Contract in neo4j.h. neo4j_run writes "code: message". The loop retries
 * these codes (a database briefly missing in a cluster); at start-up they
 * are almost always a typo.
 */
enum ns_err neo4j_client_check(struct neo4j_client *nc, const char *db,
                               const char *user, char *errstr,
                               size_t errstr_size)
{
    struct neo4j_stmt stmt = {"RETURN 1", NULL};
    char why[512];
    enum ns_err err = neo4j_run(nc, &stmt, 1, NULL, NULL, why, sizeof(why));

    if (!err)
        return NS_OK;
    if (strstr(why, "Neo.ClientError.Database.DatabaseNotFound:") == why) {
        ns_err_set(errstr, errstr_size, "Neo4j database \"%s\" does not "
                   "exist at %s: set neo4j.database (NEXUS_NEO4J_DB) to one "
                   "that SHOW DATABASES lists, or create it (%s)", db,
                   nc->shown, why);
        return NS_ERR_CONFIG;
    }
    if (strstr(why, "Neo.ClientError.Security.Unauthorized:") == why ||
        strstr(why, "Neo.ClientError.Security.CredentialsExpired:") == why) {
        ns_err_set(errstr, errstr_size, "Neo4j refused the credentials of "
                   "user \"%s\" at %s: check neo4j.user and the password "
                   "(NEXUS_NEO4J_USER, NEXUS_NEO4J_PASSWORD or "
                   "NEXUS_NEO4J_PASSWORD_FILE) (%s)", user ? user : "",
                   nc->shown, why);
        return NS_ERR_CONFIG;
    }
    ns_err_set(errstr, errstr_size, "%s", why);
    return err == NS_ERR_NEO4J_PERMANENT ? NS_ERR_NEO4J_TRANSIENT : err;
}
