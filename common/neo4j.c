/*
 * neo4j.c - the Neo4j HTTP client: the choice of transport, the batch in
 * one request to tx/commit and the reading of its answer, the
 * classification of Neo4j's status codes, the start-up check. Requests go
 * through neo4j_http.c; the Query API transport is neo4j_query.c's, the tx
 * body neo4j_body.c's.
 */
#include "neo4j.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "log.h"
#include "neo4j_body.h"
#include "neo4j_http.h"
#include "neo4j_query.h"

struct neo4j_client {
    struct neo4j_http *http;      /* the connection */
    char *endpoint;               /* {url}/db/{db}/tx/commit */
    char *query;                  /* {url}/db/{db}/query/v2 */
    char *root;                   /* {url}/: the discovery document */
    char *shown;                  /* endpoint fit to log: password masked */
    enum neo4j_api api;           /* in use; AUTO until discovered */
    enum neo4j_failure failure;   /* how the last neo4j_run ended */
};

enum ns_err neo4j_client_new(const char *url, const char *db,
                             const char *user, const char *password,
                             long timeout_ms, struct neo4j_client **out,
                             char *errstr, size_t errstr_size)
{
    struct neo4j_client *nc = NULL;
    enum ns_err err = NS_OK;
    size_t shown_size;

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
    nc = calloc(1, sizeof(*nc));
    if (!nc) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    err = neo4j_http_new(user, password, timeout_ms, &nc->http, errstr,
                         errstr_size);
    if (err)
        goto cleanup;
    nc->endpoint = neo4j_http_url(nc->http, url, db, "/tx/commit");
    nc->query = neo4j_http_url(nc->http, url, db, "/query/v2");
    nc->root = neo4j_http_url(nc->http, url, NULL, "/");
    if (!nc->endpoint || !nc->query || !nc->root) {
        err = NS_ERR_NOMEM;
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
    neo4j_http_free(nc->http);
    free(nc->endpoint);
    free(nc->query);
    free(nc->root);
    free(nc->shown);
    free(nc);
}

enum ns_err neo4j_client_set_ca_file(struct neo4j_client *nc,
                                     const char *ca_file, char *errstr,
                                     size_t errstr_size)
{
    if (strncmp(nc->endpoint, "https://", 8) != 0) {
        ns_err_set(errstr, errstr_size,
                   "a Neo4j CA file needs an https url, not %s", nc->shown);
        return NS_ERR_CONFIG;
    }
    return neo4j_http_set_ca_file(nc->http, ca_file, errstr, errstr_size);
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

/*
 * The batch in one request to tx/commit. Failure paths, in order: the body
 * cannot be built or is too large; the transfer fails (neo4j_http); the
 * server answers with errors[] (classified by code); a non-2xx status or a
 * body that is not the expected JSON, with no Neo4j code in it (transient:
 * a proxy or a server in trouble, not the event's fault).
 */
static enum ns_err neo4j_run_tx(struct neo4j_client *nc,
                                const struct neo4j_stmt *stmts, size_t n,
                                cJSON **results, size_t *failed_stmt,
                                char *errstr, size_t errstr_size)
{
    const struct buf *answer;
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
    buf_reset(neo4j_http_body(nc->http));
    err = neo4j_body_write(neo4j_http_body(nc->http), body);
    if (err) {
        err = neo4j_http_body_failed(err, errstr, errstr_size);
        goto cleanup;
    }
    err = neo4j_http_request(nc->http, "POST", nc->endpoint, NULL, 0, &status,
                             &nc->failure, errstr, errstr_size);
    if (err)
        goto cleanup;

    answer = neo4j_http_answer(nc->http);
    resp = cJSON_ParseWithLength(buf_str(answer), answer->len);
    if (!resp || !cJSON_IsObject(resp)) {
        if (neo4j_http_status_unavailable(status))
            nc->failure = NEO4J_FAILURE_UNREACHED;
        err = NS_ERR_NEO4J_TRANSIENT;
        ns_err_set(errstr, errstr_size,
                      "could not parse the Neo4j response: HTTP %ld, %zu "
                      "bytes", status, answer->len);
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
        if (neo4j_http_status_unavailable(status))
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

    err = neo4j_http_request(nc->http, "GET", nc->root, NULL, 0, &status,
                             &nc->failure, why, sizeof(why));
    if (!err && (status < 200 || status > 299)) {
        err = NS_ERR_NEO4J_TRANSIENT;
        ns_err_set(why, sizeof(why), "HTTP %ld", status);
    }
    if (!err)
        err = neo4j_query_discovery_read(
            buf_str(neo4j_http_answer(nc->http)),
            neo4j_http_answer(nc->http)->len, &d, why, sizeof(why));
    log_url_text(nc->root, shown, sizeof(shown));
    if (err) {
        nc->failure = NEO4J_FAILURE_UNREACHED;
        ns_err_set(errstr, errstr_size, "could not read Neo4j's discovery "
                   "document at %s to choose its API (neo4j.api auto; query "
                   "or tx choose without it): %s", shown, why);
        return err == NS_ERR_NOMEM ? err : NS_ERR_NEO4J_TRANSIENT;
    }
    nc->api = d.tx ? NEO4J_API_TX : NEO4J_API_QUERY;
    log_msg(NS_LOG_INFO, "Neo4j %s %s at %s: using %s: %s", d.version,
            d.edition, shown, d.tx ? "the HTTP transactional API (tx/commit)"
            : "the Query API (query/v2)", d.tx ? "the server offers it, one "
            "round trip a batch (neo4j.api query forces the Query API)" :
            d.query ? "the server offers no transactional endpoint" :
            "the server lists neither endpoint");
    return NS_OK;
}

/* Contract in neo4j.h: the checks shared by both transports, then one. */
enum ns_err neo4j_run(struct neo4j_client *nc, const struct neo4j_stmt *stmts,
                      size_t n, struct cJSON **results, size_t *failed_stmt,
                      char *errstr, size_t errstr_size)
{
    char code[128];
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
    if (!err && nc->api == NEO4J_API_QUERY && n == 0) {
        /* nothing to send: the Query API has no empty transaction */
        if (results)
            *results = cJSON_CreateArray();
        if (results && !*results) {
            err = NS_ERR_NOMEM;
            ns_err_set(errstr, errstr_size, "out of memory");
        }
    } else if (!err && nc->api == NEO4J_API_QUERY) {
        err = neo4j_query_run(nc->http, nc->query, stmts, n, results,
                              failed_stmt, &nc->failure, code, sizeof(code),
                              errstr, errstr_size);
        if (err == NS_ERR_NEO4J_TRANSIENT && code[0])
            err = neo4j_classify(code);
    } else if (!err) {
        err = neo4j_run_tx(nc, stmts, n, results, failed_stmt, errstr,
                           errstr_size);
    }
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
