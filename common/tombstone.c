#include "tombstone.h"

#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cypher.h"

/* The key prefixes of worker's elements, as a JSON array. NULL when out of
 * memory. */
static cJSON *worker_prefixes(const struct mapping *map, const char *worker)
{
    cJSON *list = cJSON_CreateArray();

    for (size_t i = 0; list && i < map->table_count; i++) {
        const struct mapping_table *tbl = &map->tables[i];
        char prefix[160];

        if (strcmp(tbl->worker, worker) != 0 || tbl->kind == MAPPING_NONE)
            continue;
        snprintf(prefix, sizeof(prefix), "%s/",
                 tbl->kind == MAPPING_NODE ? tbl->label : tbl->rel_type);
        if (!cJSON_AddItemToArray(list, cJSON_CreateString(prefix))) {
            cJSON_Delete(list);
            return NULL;
        }
    }
    return list;
}

enum ns_err tombstone_prune(struct neo4j_client *nc, const struct mapping *map,
                            const char *worker, int64_t cutoff_ms,
                            size_t limit, size_t *deleted, char *errstr,
                            size_t errstr_size)
{
    static const char prune[] =
        "MATCH (t:" CYPHER_TOMBSTONE_LABEL ") WHERE t.ts < $cutoff\n"
        "  AND any(p IN $prefixes WHERE t.key STARTS WITH p)\n"
        "WITH t LIMIT $limit\n"
        "DELETE t\n"
        "RETURN count(*) AS n";
    cJSON *params = cJSON_CreateObject(), *res = NULL, *prefixes = NULL;
    const cJSON *n;
    struct neo4j_stmt stmt = {prune, NULL};
    enum ns_err err = NS_OK;

    *deleted = 0;
    prefixes = worker_prefixes(map, worker);
    if (!params || !prefixes ||
        !cJSON_AddNumberToObject(params, "cutoff", (double)cutoff_ms) ||
        !cJSON_AddNumberToObject(params, "limit", (double)limit)) {
        err = NS_ERR_NOMEM;
        snprintf(errstr, errstr_size, "out of memory");
        goto cleanup;
    }
    cJSON_AddItemToObject(params, "prefixes", prefixes);
    prefixes = NULL;
    stmt.params = params;
    err = neo4j_run(nc, &stmt, 1, &res, NULL, errstr, errstr_size);
    if (err)
        goto cleanup;
    /* results[0].data[0].row[0] */
    n = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(
                cJSON_GetArrayItem(res, 0), "data"), 0), "row"), 0);
    if (!cJSON_IsNumber(n)) {
        snprintf(errstr, errstr_size, "unexpected answer to the marker prune");
        err = NS_ERR_NEO4J_PERMANENT;
        goto cleanup;
    }
    *deleted = (size_t)n->valuedouble;

cleanup:
    cJSON_Delete(prefixes);
    cJSON_Delete(params);
    cJSON_Delete(res);
    return err;
}
