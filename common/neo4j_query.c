/*
 * neo4j_query.c - the Query API's statement body, its answers and the
 * discovery document (contracts in neo4j_query.h). neo4j.c sends and
 * receives them.
 */
#include "neo4j_query.h"

#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

/* Contract in neo4j_query.h. */
enum ns_err neo4j_query_body_write(struct buf *b, const struct neo4j_stmt *stmt)
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
    if (id && (!cJSON_IsString(id) || !id->valuestring[0] ||
               strlen(id->valuestring) >= sizeof(ans->tx_id))) {
        ns_err_set(errstr, errstr_size, "the Neo4j answer's transaction id "
                   "is not a string of 1 to %zu bytes",
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
