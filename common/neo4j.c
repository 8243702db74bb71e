/*
 * neo4j.c - the Neo4j HTTP client: the curl handle and its options, one
 * request per neo4j_run() and the reading of its answer, the classification
 * of Neo4j's status codes, the start-up check. The request body is built by
 * neo4j_body.c.
 */
#include "neo4j.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "buf.h"
#include "log.h"
#include "neo4j_body.h"

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
    char *endpoint;               /* {url}/db/{db}/tx/commit */
    char *shown;                  /* endpoint fit to log: password masked */
    struct buf req;               /* request body, capped */
    struct buf resp;              /* response body, capped */
    int resp_overflow;            /* the write callback hit the cap */
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

/* Builds "{url}/db/{db}/tx/commit" into *out (caller frees). */
static enum ns_err neo4j_endpoint(CURL *curl, const char *url, const char *db,
                                  char **out)
{
    struct buf b;
    char *db_esc = NULL;
    size_t url_len = strlen(url);
    enum ns_err err;

    buf_init(&b, 4096);
    while (url_len > 0 && url[url_len - 1] == '/')
        url_len--;
    db_esc = curl_easy_escape(curl, db, 0);
    if (!db_esc) {
        err = NS_ERR_NOMEM;
        goto cleanup;
    }
    err = buf_add(&b, url, url_len);
    if (err)
        goto cleanup;
    err = buf_addf(&b, "/db/%s/tx/commit", db_esc);
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
    err = neo4j_endpoint(nc->curl, url, db, &nc->endpoint);
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
    rc = curl_easy_setopt(nc->curl, CURLOPT_URL, nc->endpoint);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_POST, 1L);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_HTTPHEADER, nc->headers);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_WRITEFUNCTION,
                              neo4j_write_cb);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_WRITEDATA, nc);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_ERRORBUFFER, nc->curl_err);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
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
    free(nc->endpoint);
    free(nc->shown);
    buf_free(&nc->req);
    buf_free(&nc->resp);
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
 * Contract in neo4j.h. Failure paths, in order: the body cannot be built or
 * is too large (permanent: the batch must be split, or a parameter is not
 * JSON); the transfer fails (transient, except a response past the cap,
 * which says the statements return too much: permanent); the server answers
 * with errors[] (classified by code); a non-2xx status or a body that is
 * not the expected JSON, with no Neo4j code in it (transient: a proxy or a
 * server in trouble, not the event's fault).
 */
enum ns_err neo4j_run(struct neo4j_client *nc, const struct neo4j_stmt *stmts,
                      size_t n, struct cJSON **results, size_t *failed_stmt,
                      char *errstr, size_t errstr_size)
{
    cJSON *body = NULL;
    cJSON *resp = NULL;
    const cJSON *errors;
    const cJSON *first;
    const cJSON *res;
    long status = 0;
    CURLcode rc;
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

    body = neo4j_body_new(stmts, n);
    if (!body) {
        err = NS_ERR_NOMEM;
        ns_err_set(errstr, errstr_size, "out of memory building request");
        goto cleanup;
    }
    buf_reset(&nc->req);
    err = neo4j_body_write(&nc->req, body);
    if (err == NS_ERR_NOMEM) {
        ns_err_set(errstr, errstr_size, "out of memory printing request");
        goto cleanup;
    }
    if (err == NS_ERR_LIMIT) {
        ns_err_set(errstr, errstr_size,
                      "request exceeds %u bytes or nests deeper than %d",
                      NEO4J_MAX_REQUEST, NEO4J_BODY_MAX_DEPTH);
        err = NS_ERR_NEO4J_PERMANENT;
        goto cleanup;
    }
    if (err) {
        ns_err_set(errstr, errstr_size,
                      "parameters hold an item that is not JSON");
        err = NS_ERR_NEO4J_PERMANENT;
        goto cleanup;
    }

    buf_reset(&nc->resp);
    nc->resp_overflow = 0;
    nc->curl_err[0] = '\0';
    rc = curl_easy_setopt(nc->curl, CURLOPT_POSTFIELDSIZE_LARGE,
                          (curl_off_t)nc->req.len);
    if (rc == CURLE_OK)
        rc = curl_easy_setopt(nc->curl, CURLOPT_POSTFIELDS,
                              buf_str(&nc->req));
    if (rc == CURLE_OK)
        rc = curl_easy_perform(nc->curl);
    /* The body buffer is reused; leave no stale pointer in the handle.
     * Setting a pointer option cannot fail. */
    (void)curl_easy_setopt(nc->curl, CURLOPT_POSTFIELDS, NULL);
    nc->failure = rc == CURLE_OK || nc->resp_overflow ?
                  NEO4J_FAILURE_ANSWERED : NEO4J_FAILURE_UNREACHED;
    if (rc != CURLE_OK) {
        if (nc->resp_overflow) {
            err = NS_ERR_NEO4J_PERMANENT;
            ns_err_set(errstr, errstr_size,
                          "Neo4j response exceeds the %u byte limit",
                          NEO4J_MAX_RESPONSE);
        } else {
            err = NS_ERR_NEO4J_TRANSIENT;
            ns_err_set(errstr, errstr_size,
                          "could not reach Neo4j at %s: %s", nc->shown,
                          nc->curl_err[0] ? nc->curl_err :
                          curl_easy_strerror(rc));
        }
        goto cleanup;
    }
    rc = curl_easy_getinfo(nc->curl, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK)
        status = 0;

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
    if (!err)
        nc->failure = NEO4J_FAILURE_NONE;
    cJSON_Delete(resp);
    cJSON_Delete(body);
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
