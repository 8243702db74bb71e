/*
 * neo4j_body.c - the request body of the Neo4j HTTP transactional endpoint
 * (contracts in neo4j_body.h): the cJSON tree of the statements and its
 * JSON text, written into a capped buffer. neo4j.c sends it.
 */
#include "neo4j_body.h"

#include <stdio.h>

#include <cjson/cJSON.h>

/* Contract in neo4j_body.h. */
cJSON *neo4j_body_new(const struct neo4j_stmt *stmts, size_t n)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *list = NULL;

    if (!root)
        return NULL;
    list = cJSON_AddArrayToObject(root, "statements");
    if (!list)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        cJSON *stmt = cJSON_CreateObject();
        cJSON *item;

        if (!stmt)
            goto fail;
        cJSON_AddItemToArray(list, stmt);
        item = cJSON_CreateStringReference(stmts[i].cypher);
        if (!item)
            goto fail;
        cJSON_AddItemToObject(stmt, "statement", item);
        /* An object reference points at the first member, not at the
         * object: it prints as the caller's object without owning it. */
        item = cJSON_CreateObjectReference(
            stmts[i].params ? stmts[i].params->child : NULL);
        if (!item)
            goto fail;
        cJSON_AddItemToObject(stmt, "parameters", item);
        /* Only a statement that ran to its end gets "stats": that is how
         * neo4j_run tells which one failed (neo4j_completed in
         * neo4j.c). */
        if (!cJSON_AddTrueToObject(stmt, "includeStats"))
            goto fail;
    }
    return root;

fail:
    cJSON_Delete(root);
    return NULL;
}

/* A JSON string: '"', '\\' and control characters escaped, other bytes
 * (UTF-8) as they are. */
static enum ns_err neo4j_body_json_string(struct buf *b, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *run = p;
    enum ns_err err = buf_add(b, "\"", 1);

    for (; !err && *p; p++) {
        if (*p >= 0x20 && *p != '"' && *p != '\\')
            continue;
        err = buf_add(b, run, (size_t)(p - run));
        if (err)
            break;
        run = p + 1;
        switch (*p) {
        case '"': err = buf_adds(b, "\\\""); break;
        case '\\': err = buf_adds(b, "\\\\"); break;
        case '\n': err = buf_adds(b, "\\n"); break;
        case '\r': err = buf_adds(b, "\\r"); break;
        case '\t': err = buf_adds(b, "\\t"); break;
        default: err = buf_addf(b, "\\u%04x", *p); break;
        }
    }
    if (!err)
        err = buf_add(b, run, (size_t)(p - run));
    if (!err)
        err = buf_add(b, "\"", 1);
    return err;
}

/*
 * A JSON number. cJSON keeps numbers as doubles and prints an integral one
 * of 1e15 or more as "1e+15", which Neo4j reads as FLOAT; a BIGINT column
 * must stay INTEGER, so integral values within the int64 range are printed
 * as integers. Others take the shortest of %.15g and %.17g that reads back
 * exactly, as cJSON does; NaN and infinities, which JSON lacks, are null.
 */
static enum ns_err neo4j_body_json_number(struct buf *b, double d)
{
    char tmp[64];
    double back;

    if (d != d || d > 1.7976931348623157e308 || d < -1.7976931348623157e308)
        return buf_adds(b, "null");
    if (d >= -9.2e18 && d <= 9.2e18 && d == (double)(long long)d)
        return buf_addf(b, "%lld", (long long)d);
    snprintf(tmp, sizeof(tmp), "%1.15g", d);
    if (sscanf(tmp, "%lg", &back) != 1 || back != d)
        snprintf(tmp, sizeof(tmp), "%1.17g", d);
    return buf_adds(b, tmp);
}

/*
 * Serialize item into b. Used instead of cJSON_Print so that the body
 * grows inside its cap and numbers keep their integer type (see above).
 * Reference items (borrowed parameters) print as what they point to.
 */
static enum ns_err neo4j_body_json_write(struct buf *b, const cJSON *item,
                                         int depth)
{
    const cJSON *child;
    enum ns_err err = NS_OK;
    int object = cJSON_IsObject(item);

    if (depth > NEO4J_BODY_MAX_DEPTH)
        return NS_ERR_LIMIT;
    if (cJSON_IsNull(item))
        return buf_adds(b, "null");
    if (cJSON_IsTrue(item))
        return buf_adds(b, "true");
    if (cJSON_IsFalse(item))
        return buf_adds(b, "false");
    if (cJSON_IsNumber(item))
        return neo4j_body_json_number(b, item->valuedouble);
    if (cJSON_IsString(item))
        return neo4j_body_json_string(b, item->valuestring ? item->valuestring :
                                 "");
    if (cJSON_IsRaw(item) && item->valuestring)
        return buf_adds(b, item->valuestring);
    if (!object && !cJSON_IsArray(item))
        return NS_ERR_PARSE;
    err = buf_add(b, object ? "{" : "[", 1);
    for (child = item->child; !err && child; child = child->next) {
        if (child != item->child)
            err = buf_add(b, ",", 1);
        if (!err && object)
            err = neo4j_body_json_string(b, child->string ? child->string : "");
        if (!err && object)
            err = buf_add(b, ":", 1);
        if (!err)
            err = neo4j_body_json_write(b, child, depth + 1);
    }
    if (!err)
        err = buf_add(b, object ? "}" : "]", 1);
    return err;
}

/* Contract in neo4j_body.h. */
enum ns_err neo4j_body_write(struct buf *b, const cJSON *body)
{
    return neo4j_body_json_write(b, body, 0);
}
