/*
 * neo4j_query.c - a batch as one Query API transaction, the statement
 * body, its answers and the discovery document (contracts in
 * neo4j_query.h). neo4j.c chooses this transport or tx/commit.
 */
#include "neo4j_query.h"

#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "log.h"

/* Contract in neo4j_query.h. */
enum ns_err neo4j_query_body_write(struct buf *b,
                                   const struct neo4j_stmt *stmt)
{
    cJSON *body = cJSON_CreateObject();
    cJSON *item;
    enum ns_err err = NS_ERR_NOMEM;

    if (!body)
        return NS_ERR_NOMEM;
    item = cJSON_CreateStringReference(stmt->cypher);
    if (!item || !cJSON_AddItemToObject(body, "statement", item)) {
        cJSON_Delete(item);
        goto cleanup;
    }
    /* borrowed as in neo4j_body_new: prints as the caller's object */
    item = cJSON_CreateObjectReference(stmt->params ? stmt->params->child :
                                       NULL);
    if (!item || !cJSON_AddItemToObject(body, "parameters", item)) {
        cJSON_Delete(item);
        goto cleanup;
    }
    err = neo4j_body_write(b, body);

cleanup:
    cJSON_Delete(body);
    return err;
}

void neo4j_query_answer_clear(struct neo4j_query_answer *ans)
{
    if (!ans)
        return;
    cJSON_Delete(ans->result);
    memset(ans, 0, sizeof(*ans));
}

/* errors[0] as "code: message" into errstr and its code into ans. */
static void neo4j_query_error(const cJSON *first,
                              struct neo4j_query_answer *ans, char *errstr,
                              size_t errstr_size)
{
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(first, "code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(first, "message");
    const char *code_s = cJSON_IsString(code) && code->valuestring[0] ?
                         code->valuestring : "Neo.Unknown";

    snprintf(ans->code, sizeof(ans->code), "%s", code_s);
    ns_err_set(errstr, errstr_size, "%s: %s", code_s,
               cJSON_IsString(msg) ? msg->valuestring : "");
}

/*
 * data {"fields":[..],"values":[[..],..]} into a new result
 * {"columns":[..],"data":[{"row":[..]},..]}. The arrays are moved out of
 * data, not copied: an answer holds up to the response cap.
 */
static enum ns_err neo4j_query_result(cJSON *data, cJSON **out, char *errstr,
                                      size_t errstr_size)
{
    cJSON *fields = cJSON_GetObjectItemCaseSensitive(data, "fields");
    cJSON *values = cJSON_GetObjectItemCaseSensitive(data, "values");
    cJSON *result = NULL;
    cJSON *rows;
    enum ns_err err = NS_ERR_NOMEM;

    if (!cJSON_IsArray(fields) || !cJSON_IsArray(values)) {
        ns_err_set(errstr, errstr_size, "the Neo4j answer has no "
                   "data.fields and data.values arrays");
        return NS_ERR_PARSE;
    }
    result = cJSON_CreateObject();
    if (!result)
        goto cleanup;
    cJSON_DetachItemViaPointer(data, fields);
    if (!cJSON_AddItemToObject(result, "columns", fields)) {
        cJSON_Delete(fields);
        goto cleanup;
    }
    rows = cJSON_AddArrayToObject(result, "data");
    if (!rows)
        goto cleanup;
    for (cJSON *row = values->child; row; row = values->child) {
        cJSON *rec;

        if (!cJSON_IsArray(row)) {
            err = NS_ERR_PARSE;
            ns_err_set(errstr, errstr_size, "a row of the Neo4j answer is "
                       "not an array");
            goto cleanup;
        }
        rec = cJSON_CreateObject();
        if (!rec || !cJSON_AddItemToArray(rows, rec)) {
            cJSON_Delete(rec);
            goto cleanup;
        }
        cJSON_DetachItemViaPointer(values, row);
        if (!cJSON_AddItemToObject(rec, "row", row)) {
            cJSON_Delete(row);
            goto cleanup;
        }
    }
    *out = result;
    result = NULL;
    err = NS_OK;

cleanup:
    if (err == NS_ERR_NOMEM)
        ns_err_set(errstr, errstr_size, "out of memory reading the Neo4j "
                   "answer");
    cJSON_Delete(result);
    return err;
}

/*
 * Contract in neo4j_query.h. A statement that fails while running answers
 * both data (what it returned so far) and errors[]: the error wins.
 */
enum ns_err neo4j_query_answer_read(const char *text, size_t len,
                                    struct neo4j_query_answer *ans,
                                    char *errstr, size_t errstr_size)
{
    cJSON *doc = cJSON_ParseWithLength(text, len);
    const cJSON *errors = cJSON_GetObjectItemCaseSensitive(doc, "errors");
    const cJSON *first = cJSON_IsArray(errors) ?
                         cJSON_GetArrayItem(errors, 0) : NULL;
    const cJSON *tx = cJSON_GetObjectItemCaseSensitive(doc, "transaction");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(tx, "id");
    enum ns_err err = NS_ERR_PARSE;

    neo4j_query_answer_clear(ans);
    if (!cJSON_IsObject(doc)) {
        ns_err_set(errstr, errstr_size, "the Neo4j answer is not a JSON "
                   "object (%zu bytes)", len);
        goto cleanup;
    }
    if (first) {
        neo4j_query_error(first, ans, errstr, errstr_size);
        err = NS_ERR_NEO4J_TRANSIENT;
        goto cleanup;
    }
    /* the id goes into the next urls as it is: no byte that needs
     * escaping */
    if (id && (!cJSON_IsString(id) || !id->valuestring[0] ||
               strlen(id->valuestring) >= sizeof(ans->tx_id) ||
               strspn(id->valuestring, "abcdefghijklmnopqrstuvwxyz"
                      "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
               strlen(id->valuestring))) {
        ns_err_set(errstr, errstr_size, "the Neo4j answer's transaction id "
                   "is not 1 to %zu letters, digits, '.', '_' or '-'",
                   sizeof(ans->tx_id) - 1);
        goto cleanup;
    }
    err = neo4j_query_result(cJSON_GetObjectItemCaseSensitive(doc, "data"),
                             &ans->result, errstr, errstr_size);
    if (!err && id)
        memcpy(ans->tx_id, id->valuestring, strlen(id->valuestring) + 1);

cleanup:
    cJSON_Delete(doc);
    return err;
}

/* Contract in neo4j_query.h. */
enum ns_err neo4j_query_discovery_read(const char *text, size_t len,
                                       struct neo4j_query_discovery *d,
                                       char *errstr, size_t errstr_size)
{
    cJSON *doc = cJSON_ParseWithLength(text, len);
    const cJSON *version, *edition;

    memset(d, 0, sizeof(*d));
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        ns_err_set(errstr, errstr_size, "the discovery document is not a "
                   "JSON object (%zu bytes)", len);
        return NS_ERR_PARSE;
    }
    d->tx = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(doc,
                                                            "transaction"));
    d->query = cJSON_IsString(cJSON_GetObjectItemCaseSensitive(doc, "query"));
    version = cJSON_GetObjectItemCaseSensitive(doc, "neo4j_version");
    edition = cJSON_GetObjectItemCaseSensitive(doc, "neo4j_edition");
    if (cJSON_IsString(version))
        snprintf(d->version, sizeof(d->version), "%s", version->valuestring);
    if (cJSON_IsString(edition))
        snprintf(d->edition, sizeof(d->edition), "%s", edition->valuestring);
    cJSON_Delete(doc);
    return NS_OK;
}

/*
 * Roll back the transaction tx_id after a failure. Bounded by the connect
 * timeout: the server would drop it when it expires, but its locks would
 * hold the retry until then. 404: the server has dropped it already (it
 * does on an error it answered).
 */
static void neo4j_query_rollback(struct neo4j_http *h, const char *base,
                                 const char *tx_id, const char *affinity)
{
    enum neo4j_failure failure;
    struct buf url;
    char why[512] = "";
    long status = 0;

    buf_init(&url, 8192);
    if (buf_addf(&url, "%s/tx/%s", base, tx_id) != NS_OK)
        ns_err_set(why, sizeof(why), "out of memory");
    else if (neo4j_http_request(h, "DELETE", buf_str(&url), affinity,
                                NEO4J_HTTP_CONNECT_TIMEOUT_MS, &status,
                                &failure, why, sizeof(why)) == NS_OK &&
             !(status >= 200 && status <= 299) && status != 404)
        ns_err_set(why, sizeof(why), "HTTP %ld", status);
    if (why[0])
        log_msg(NS_LOG_WARN, "could not roll back Neo4j transaction %s, the "
                "server drops it when it expires: %s", tx_id, why);
    buf_free(&url);
}

/* The url of request i of n: base, base/tx, base/tx/{id} or
 * base/tx/{id}/commit. */
static enum ns_err neo4j_query_url(struct buf *url, const char *base,
                                   size_t i, size_t n, const char *tx_id)
{
    buf_reset(url);
    if (n == 1)
        return buf_adds(url, base);
    return buf_addf(url, "%s/tx%s%s%s", base, i ? "/" : "", i ? tx_id : "",
                    i + 1 == n ? "/commit" : "");
}

/*
 * The answer to request i (its transfer went well): NS_OK with ans
 * filled, or the error in neo4j_query_run's terms. A transaction the
 * server says it lost clears tx_id: nothing to roll back.
 */
static enum ns_err neo4j_query_judge(struct neo4j_http *h, size_t i, size_t n,
                                     long status,
                                     struct neo4j_query_answer *ans,
                                     char *tx_id, size_t *failed_stmt,
                                     enum neo4j_failure *failure, char *code,
                                     size_t code_size, char *errstr,
                                     size_t errstr_size)
{
    const struct buf *answer = neo4j_http_answer(h);
    enum ns_err err = neo4j_query_answer_read(buf_str(answer), answer->len,
                                              ans, errstr, errstr_size);

    if (err == NS_ERR_NEO4J_TRANSIENT && i > 0 &&
        (status == 404 || strcmp(ans->code, "Neo.ClientError.Transaction."
                                 "TransactionNotFound") == 0)) {
        char why[512];

        snprintf(why, sizeof(why), "%s", errstr);
        ns_err_set(errstr, errstr_size, "Neo4j lost transaction %s (HTTP "
                   "%ld: a restart, an expiry or another cluster member): "
                   "%s", tx_id, status, why);
        *failure = NEO4J_FAILURE_UNREACHED;
        tx_id[0] = '\0';
        return err;
    }
    if (err == NS_ERR_NEO4J_TRANSIENT) {
        snprintf(code, code_size, "%s", ans->code);
        if (failed_stmt)
            *failed_stmt = i;
        return err;
    }
    if (err == NS_ERR_PARSE || (!err && (status < 200 || status > 299))) {
        if (neo4j_http_status_unavailable(status))
            *failure = NEO4J_FAILURE_UNREACHED;
        ns_err_set(errstr, errstr_size, err ? "could not parse the Neo4j "
                   "response: HTTP %ld, %zu bytes" : "Neo4j answered HTTP "
                   "%ld without an error code", status, answer->len);
        return NS_ERR_NEO4J_TRANSIENT;
    }
    if (!err && n > 1 && i == 0 && !ans->tx_id[0]) {
        ns_err_set(errstr, errstr_size, "Neo4j opened no transaction: its "
                   "answer has no transaction.id");
        return NS_ERR_NEO4J_TRANSIENT;
    }
    return err;
}

/* Contract in neo4j_query.h. */
enum ns_err neo4j_query_run(struct neo4j_http *h, const char *base,
                            const struct neo4j_stmt *stmts, size_t n,
                            cJSON **results, size_t *failed_stmt,
                            enum neo4j_failure *failure, char *code,
                            size_t code_size, char *errstr,
                            size_t errstr_size)
{
    struct neo4j_query_answer ans = {0};
    struct buf url;
    cJSON *list = cJSON_CreateArray();
    char tx_id[sizeof(ans.tx_id)] = "";
    char affinity[512] = "";
    size_t sent = 0, got = 0;
    enum ns_err err = list ? NS_OK : NS_ERR_NOMEM;

    code[0] = '\0';
    *failure = NEO4J_FAILURE_LOCAL;
    buf_init(&url, 8192);
    if (err)
        ns_err_set(errstr, errstr_size, "out of memory");
    for (size_t i = 0; !err && i < n; i++) {
        struct buf *body = neo4j_http_body(h);
        long status = 0;

        buf_reset(body);
        *failure = NEO4J_FAILURE_LOCAL;
        err = neo4j_query_url(&url, base, i, n, tx_id);
        if (!err)
            err = neo4j_query_body_write(body, &stmts[i]);
        sent += body->len;
        if (!err && sent > NEO4J_HTTP_MAX_REQUEST)
            err = NS_ERR_LIMIT;
        if (err) {
            err = neo4j_http_body_failed(err, errstr, errstr_size);
            break;
        }
        err = neo4j_http_request(h, "POST", buf_str(&url), affinity, 0,
                                 &status, failure, errstr, errstr_size);
        got += neo4j_http_answer(h)->len;
        if (!err && got > NEO4J_HTTP_MAX_RESPONSE) {
            err = NS_ERR_NEO4J_PERMANENT;
            ns_err_set(errstr, errstr_size, "Neo4j response exceeds the %u "
                       "byte limit", NEO4J_HTTP_MAX_RESPONSE);
        }
        if (!err)
            err = neo4j_query_judge(h, i, n, status, &ans, tx_id, failed_stmt,
                                    failure, code, code_size, errstr,
                                    errstr_size);
        if (!err && n > 1 && i == 0) {
            const char *aff = neo4j_http_affinity(h);

            memcpy(tx_id, ans.tx_id, sizeof(tx_id));
            if (!aff || strlen(aff) >= sizeof(affinity)) {
                err = NS_ERR_NEO4J_TRANSIENT;
                ns_err_set(errstr, errstr_size, "Neo4j answered a "
                           "neo4j-cluster-affinity header of %zu bytes or "
                           "more", sizeof(affinity));
            } else {
                memcpy(affinity, aff, strlen(aff) + 1);
            }
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
        neo4j_query_rollback(h, base, tx_id, affinity);
    if (!err && results) {
        *results = list;
        list = NULL;
    }
    buf_free(&url);
    cJSON_Delete(list);
    return err;
}
