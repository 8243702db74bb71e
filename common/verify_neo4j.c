#include "verify_neo4j.h"

#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "cypher.h"
#include "verify_run.h"

/*
 * The stored value of var.prop in a form compared without guessing at
 * formats: temporal values as epoch microseconds (text), dates as
 * YYYY-MM-DD, the rest as they are; a value of another type than the
 * workers store comes back as {nexusType, value}.
 */
static enum ns_err neo_canon(struct buf *b, const char *var,
                             const struct mapping_property *p)
{
    char x[160];
    const char *type = "STRING", *expr = "%1$s";

    snprintf(x, sizeof(x), "%s.%s", var, p->property);
    switch (p->type) {
    case COL_INT: type = "INTEGER"; break;
    case COL_FLOAT:
    case COL_NUMERIC: type = "FLOAT"; break;
    case COL_BOOL: type = "BOOLEAN"; break;
    case COL_TIMESTAMPTZ:
        type = "ZONED DATETIME";
        expr = "toString(%1$s.epochSeconds * 1000000 + %1$s.microsecond)";
        break;
    case COL_TIMESTAMP:
        type = "LOCAL DATETIME";
        expr = "toString(datetime({datetime: %1$s, timezone: 'UTC'})"
               ".epochSeconds * 1000000 + %1$s.microsecond)";
        break;
    case COL_DATE:
        type = "DATE";
        expr = "toString(%1$s)";
        break;
    case COL_TEXT_ARRAY: type = "LIST<STRING>"; break;
    default: break;
    }
    if (buf_addf(b, "CASE WHEN %1$s IS NULL THEN null WHEN %1$s IS :: %2$s "
                    "THEN ", x, type) ||
        buf_addf(b, expr, x) ||
        buf_addf(b, " ELSE {nexusType: valueType(%1$s), value: %1$s} END",
                 x))
        return NS_ERR_LIMIT;
    return NS_OK;
}

enum ns_err verify_neo4j_build_cypher(struct run *run)
{
    const struct mapping *map = run->vf->map;
    const struct mapping_table *tbl = run->tbl;
    const char *var = tbl->kind == MAPPING_NODE ? "n" : "r";
    struct buf *b = &run->cypher;
    enum ns_err err;

    if (tbl->kind == MAPPING_NODE) {
        err = buf_addf(b,
                       "MATCH (n:%1$s) WHERE n.%2$s > $after\n"
                       "RETURN n.%2$s AS k, n.srcLsn AS lsn, "
                       "n.pgVersion AS v, [",
                       tbl->label, tbl->key_property);
    } else {
        const char *ak = cypher_label_key(map, tbl->from.label);
        const char *bk = cypher_label_key(map, tbl->to.label);
        err = buf_addf(b,
                       "MATCH (a:%s) WHERE a.%s >= $a\n"
                       "MATCH (a)-[r:%s]->(b:%s)\n"
                       "WHERE (a.%s > $a OR b.%s > $b OR (b.%s = $b AND "
                       "elementId(r) > $eid))%s\n"
                       "RETURN a.%s AS a, b.%s AS b, elementId(r) AS eid, "
                       "r.srcLsn AS lsn, r.pgVersion AS v, [",
                       tbl->from.label, ak, tbl->rel_type, tbl->to.label, ak,
                       bk, bk, tbl->temporal ? " AND r.validTo IS NULL" : "",
                       ak, bk);
    }
    for (size_t i = 0; !err && i < tbl->prop_count; i++) {
        err = buf_adds(b, i ? ",\n  " : "\n  ");
        if (!err)
            err = neo_canon(b, var, &tbl->props[i]);
    }
    if (!err)
        err = buf_adds(b, "] AS p");
    if (!err && tbl->kind == MAPPING_NODE) {
        err = buf_adds(b, ", [");
        for (size_t i = 0; !err && i < tbl->parent_count; i++) {
            const struct mapping_parent *par = &tbl->parents[i];
            err = buf_addf(b, "%s[(p:%s)-[pr:%s]->(n) | [p.%s, elementId(pr)]]",
                           i ? ", " : "", par->label, par->type,
                           cypher_label_key(map, par->label));
        }
        if (!err)
            err = buf_adds(b, "] AS par\nORDER BY k LIMIT $limit");
    } else if (!err) {
        err = buf_adds(b, "\nORDER BY a, b, eid LIMIT $limit");
    }
    return err;
}

/* Run one statement; *rows gets its "data" array detached (caller
 * frees). */
enum ns_err verify_neo4j_query(struct neo4j_client *nc, const char *cypher,
                               const cJSON *params, cJSON **rows, char *errstr,
                               size_t errstr_size)
{
    struct neo4j_stmt stmt = {cypher, params};
    cJSON *res = NULL, *first;
    enum ns_err err;

    *rows = NULL;
    err = neo4j_run(nc, &stmt, 1, &res, NULL, errstr, errstr_size);
    if (err)
        return err;
    first = cJSON_GetArrayItem(res, 0);
    *rows = cJSON_DetachItemFromObjectCaseSensitive(first, "data");
    cJSON_Delete(res);
    if (!*rows) {
        ns_err_set(errstr, errstr_size, "Neo4j answer has no data");
        return NS_ERR_NEO4J_PERMANENT;
    }
    return NS_OK;
}

const cJSON *verify_neo4j_row(const cJSON *data_item)
{
    return cJSON_GetObjectItemCaseSensitive(data_item, "row");
}

const char *verify_neo4j_str(const cJSON *row, int i)
{
    const cJSON *v = cJSON_GetArrayItem(row, i);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* An integer column (srcLsn, pgVersion); -1 when absent. */
int64_t verify_neo4j_int(const cJSON *row, int i)
{
    const cJSON *v = cJSON_GetArrayItem(row, i);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
}

enum ns_err verify_neo4j_page_fetch(struct run *run, char *errstr,
                                    size_t errstr_size)
{
    struct neo_page *np = &run->neo;
    cJSON *params = cJSON_CreateObject();
    enum ns_err err = NS_OK;
    cJSON *last;

    cJSON_Delete(np->res);
    np->res = NULL;
    np->cur = NULL;
    np->n = 0;
    if (!params)
        return NS_ERR_NOMEM;
    if (run->tbl->kind == MAPPING_NODE) {
        if (!cJSON_AddStringToObject(params, "after", np->after[0]))
            err = NS_ERR_NOMEM;
    } else if (!cJSON_AddStringToObject(params, "a", np->after[0]) ||
               !cJSON_AddStringToObject(params, "b", np->after[1]) ||
               !cJSON_AddStringToObject(params, "eid", np->after[2])) {
        err = NS_ERR_NOMEM;
    }
    if (!err && !cJSON_AddNumberToObject(params, "limit",
                                         (double)run->vf->opt.chunk))
        err = NS_ERR_NOMEM;
    if (err) {
        ns_err_set(errstr, errstr_size, "out of memory");
        goto cleanup;
    }
    err = verify_neo4j_query(run->vf->nc, buf_str(&run->cypher), params,
                             &np->res, errstr, errstr_size);
    if (err)
        goto cleanup;
    np->started = 1;
    np->n = (size_t)cJSON_GetArraySize(np->res);
    np->done = np->n < run->vf->opt.chunk;
    np->cur = np->res->child;
    last = cJSON_GetArrayItem(np->res, (int)np->n - 1);
    if (last) {
        const cJSON *row = verify_neo4j_row(last);
        int nk = run->tbl->kind == MAPPING_NODE ? 1 : 3;
        for (int i = 0; i < nk; i++) {
            const char *s = verify_neo4j_str(row, i);
            snprintf(np->after[i], sizeof(np->after[i]), "%s", s ? s : "");
        }
    }

cleanup:
    cJSON_Delete(params);
    return err;
}

/* Non-zero when the current graph row is the last of its page. */
int verify_neo4j_at_page_end(const struct run *run)
{
    return run->neo.cur && !run->neo.cur->next;
}
