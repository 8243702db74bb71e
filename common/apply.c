#include "apply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "cypher.h"
#include "log.h"

#define APPLY_STMT_MAX (256u * 1024u)

/* One UNWIND statement and the changes it carries. */
struct group {
    const struct mapping_table *tbl;
    enum change_action action;
    uint64_t shape;
    unsigned round;
    size_t *members;          /* indexes into changes */
    size_t count;
    struct buf text;
    cJSON *params;            /* {"rows": [...]} with references */
};

static void groups_free(struct group *groups, size_t n)
{
    for (size_t i = 0; groups && i < n; i++) {
        free(groups[i].members);
        buf_free(&groups[i].text);
        cJSON_Delete(groups[i].params);
    }
    free(groups);
}

/* qsort has no context argument in C11; apply runs on one thread. */
static const struct change *sort_changes;

static int by_change_key(const void *a, const void *b)
{
    return strcmp(sort_changes[*(const size_t *)a].key,
                  sort_changes[*(const size_t *)b].key);
}

/* idx[0..n) stably ordered by round (counting sort), so that every
 * statement of round r runs before any of round r + 1: the changes of one
 * versioned link then apply in source order. NULL when out of memory. */
static size_t *rounds_order(const struct change *changes, const size_t *idx,
                            size_t n)
{
    size_t *order = malloc((n ? n : 1) * sizeof(*order));
    size_t *start = NULL;
    unsigned max_round = 0;

    if (!order)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (changes[idx[i]].round > max_round)
            max_round = changes[idx[i]].round;
    if (max_round == 0) {
        memcpy(order, idx, n * sizeof(*order));
        return order;
    }
    start = calloc((size_t)max_round + 2, sizeof(*start));
    if (!start) {
        free(order);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        start[changes[idx[i]].round + 1]++;
    for (unsigned r = 1; r <= max_round + 1; r++)
        start[r] += start[r - 1];
    for (size_t i = 0; i < n; i++)
        order[start[changes[idx[i]].round]++] = idx[i];
    free(start);
    return order;
}

/* Build the groups for the changes whose index is in idx[0..n). On
 * failure writes errstr and leaves *out untouched. */
static enum ns_err build_groups(const struct mapping *map,
                                const struct change *changes,
                                const size_t *idx, size_t n,
                                struct group **out, size_t *out_count,
                                char *errstr, size_t errstr_size)
{
    struct group *groups = calloc(n ? n : 1, sizeof(*groups));
    size_t count = 0;
    enum ns_err err = NS_OK;

    size_t *order = rounds_order(changes, idx, n);

    if (!groups || !order) {
        free(groups);
        free(order);
        snprintf(errstr, errstr_size, "out of memory grouping %zu changes",
                 n);
        return NS_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const struct change *ch = &changes[order[i]];
        struct group *g = NULL;

        for (size_t j = 0; j < count; j++)
            if (groups[j].tbl == ch->tbl && groups[j].action == ch->action &&
                groups[j].shape == ch->shape && groups[j].round == ch->round) {
                g = &groups[j];
                break;
            }
        if (!g) {
            g = &groups[count++];
            g->tbl = ch->tbl;
            g->action = ch->action;
            g->shape = ch->shape;
            g->round = ch->round;
            g->members = calloc(n, sizeof(size_t));
            buf_init(&g->text, APPLY_STMT_MAX);
            g->params = cJSON_CreateObject();
            if (!g->members || !g->params ||
                !cJSON_AddArrayToObject(g->params, "rows")) {
                err = NS_ERR_NOMEM;
                snprintf(errstr, errstr_size, "out of memory grouping %zu "
                         "changes of table %s", n, ch->tbl->table);
                goto cleanup;
            }
            err = cypher_statement(map, g->tbl, g->action, g->shape, &g->text);
            if (err == NS_ERR_LIMIT) {
                snprintf(errstr, errstr_size, "the statement for table %s "
                         "(key %s%s%s) exceeds %u bytes", ch->tbl->table,
                         ch->key_values[0], ch->key_values[1][0] ? "/" : "",
                         ch->key_values[1], APPLY_STMT_MAX);
                goto cleanup;
            }
            if (err) {
                snprintf(errstr, errstr_size, "could not build the statement "
                         "for table %s (key %s%s%s): %s", ch->tbl->table,
                         ch->key_values[0], ch->key_values[1][0] ? "/" : "",
                         ch->key_values[1], ns_err_str(err));
                goto cleanup;
            }
        }
        g->members[g->count++] = order[i];
    }
    /* Rows in key order: concurrent writers then lock shared nodes in the
     * same order, which keeps Neo4j deadlocks rare. A group never holds two
     * changes of one row (coalesced, or in different rounds), so the order
     * does not change the result. */
    sort_changes = changes;
    for (size_t j = 0; j < count; j++) {
        struct group *g = &groups[j];
        cJSON *rows = cJSON_GetObjectItemCaseSensitive(g->params, "rows");

        qsort(g->members, g->count, sizeof(*g->members), by_change_key);
        for (size_t m = 0; m < g->count; m++)
            if (!cJSON_AddItemReferenceToArray(rows, changes[g->members[m]].row)) {
                err = NS_ERR_NOMEM;
                snprintf(errstr, errstr_size, "out of memory adding the "
                         "rows of table %s", g->tbl->table);
                goto cleanup;
            }
    }

cleanup:
    free(order);
    if (err) {
        groups_free(groups, count);
        return err;
    }
    *out = groups;
    *out_count = count;
    return NS_OK;
}

static const char *row_str(const cJSON *row, int i)
{
    const cJSON *v = cJSON_GetArrayItem(row, i);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A change the stale guard kept out although its pg_version is newer than
 * the element's: the source's positions went backwards (a restore, a new
 * cluster) and source.epoch was not raised, or a stale redelivery after a
 * re-insert. One line per statement, with the first such key. */
static void warn_newer_version_skipped(const struct group *g, size_t count,
                                       const char *key, double v, double gv)
{
    log_msg(LOG_WARN, "skipped %zu change(s) of %s older at the source than "
            "the graph although their pg_version is newer (e.g. key %s: "
            "version %.0f, graph %.0f); if the source's LSNs restarted, raise "
            "source.epoch", count, g->tbl->table, key, v, gv);
}

/* Mark a group's changes from its statement result: rows returned with an
 * element id were applied; rows returned without one, or not returned,
 * were kept out by the guards (stale, deleted). */
static void record_group(const struct group *g, const struct change *changes,
                         const cJSON *result, struct apply_result *results)
{
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(result, "data");
    const cJSON *rec;
    int is_node = g->tbl->kind == MAPPING_NODE;
    int eid_col = is_node ? 2 : 3;
    size_t next = 0, newer_skipped = 0;
    char first_key[160] = "";
    double first_v = 0, first_gv = 0;

    for (size_t m = 0; m < g->count; m++)
        results[g->members[m]].status =
            g->action == CHANGE_DELETE ? APPLY_APPLIED : APPLY_SKIPPED;
    if (g->action == CHANGE_DELETE)
        return;
    cJSON_ArrayForEach(rec, data) {
        const cJSON *row = cJSON_GetObjectItemCaseSensitive(rec, "row");
        const char *k1 = row_str(row, 0);
        const char *k2 = is_node ? NULL : row_str(row, 1);
        const char *eid = row_str(row, eid_col);
        const cJSON *v = cJSON_GetArrayItem(row, eid_col - 1);
        const cJSON *gv = cJSON_GetArrayItem(row, eid_col + 1);

        if (!eid) {
            if (cJSON_IsNumber(v) && cJSON_IsNumber(gv) &&
                v->valuedouble > gv->valuedouble && newer_skipped++ == 0) {
                snprintf(first_key, sizeof(first_key), "%s%s%s", k1 ? k1 : "",
                         k2 ? "/" : "", k2 ? k2 : "");
                first_v = v->valuedouble;
                first_gv = gv->valuedouble;
            }
            continue;
        }
        /* Results come back in row order, so the search starts after the
         * previous match and normally succeeds at once. */
        for (size_t step = 0; k1 && step < g->count; step++) {
            size_t m = (next + step) % g->count;
            const struct change *ch = &changes[g->members[m]];
            const cJSON *ka = cJSON_GetObjectItemCaseSensitive(
                ch->row, is_node ? "k" : "a");
            const cJSON *kb = is_node ? NULL
                              : cJSON_GetObjectItemCaseSensitive(ch->row, "b");
            if (strcmp(ka->valuestring, k1) != 0 ||
                (!is_node && (!k2 || strcmp(kb->valuestring, k2) != 0)))
                continue;
            results[g->members[m]].status = APPLY_APPLIED;
            snprintf(results[g->members[m]].element_id,
                     sizeof(results[0].element_id), "%s", eid);
            next = m + 1;
            break;
        }
    }
    if (newer_skipped)
        warn_newer_version_skipped(g, newer_skipped, first_key, first_v,
                                   first_gv);
}

/* One transaction over the changes idx[0..n). */
static enum ns_err run_once(struct neo4j_client *nc, const struct mapping *map,
                            const struct change *changes, const size_t *idx,
                            size_t n, struct apply_result *results,
                            struct apply_stats *stats, char *errstr,
                            size_t errstr_size)
{
    struct group *groups = NULL;
    struct neo4j_stmt *stmts = NULL;
    cJSON *res = NULL;
    size_t count = 0, failed = 0;
    enum ns_err err;

    err = build_groups(map, changes, idx, n, &groups, &count, errstr,
                       errstr_size);
    if (err)
        goto cleanup;
    stmts = calloc(count ? count : 1, sizeof(*stmts));
    if (!stmts) {
        err = NS_ERR_NOMEM;
        snprintf(errstr, errstr_size, "out of memory for %zu statements",
                 count);
        goto cleanup;
    }
    for (size_t i = 0; i < count; i++) {
        stmts[i].cypher = buf_str(&groups[i].text);
        stmts[i].params = groups[i].params;
    }
    stats->transactions++;
    stats->statements += (unsigned)count;
    err = neo4j_run(nc, stmts, count, &res, &failed, errstr, errstr_size);
    if (err)
        goto cleanup;
    for (size_t i = 0; i < count; i++)
        record_group(&groups[i], changes, cJSON_GetArrayItem(res, (int)i),
                     results);

cleanup:
    cJSON_Delete(res);
    free(stmts);
    groups_free(groups, count);
    return err;
}

enum ns_err apply_changes(struct neo4j_client *nc, const struct mapping *map,
                          const struct change *changes, size_t n,
                          struct apply_result *results,
                          struct apply_stats *stats, char *errstr,
                          size_t errstr_size)
{
    size_t *idx = NULL;
    enum ns_err err = NS_OK;

    memset(stats, 0, sizeof(*stats));
    for (size_t i = 0; i < n; i++)
        memset(&results[i], 0, sizeof(results[i]));
    if (n == 0)
        return NS_OK;
    idx = malloc(n * sizeof(*idx));
    if (!idx) {
        snprintf(errstr, errstr_size, "out of memory for %zu changes", n);
        return NS_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        idx[i] = i;

    err = run_once(nc, map, changes, idx, n, results, stats, errstr,
                   errstr_size);
    if (err != NS_ERR_NEO4J_PERMANENT || n == 1) {
        if (err == NS_ERR_NEO4J_PERMANENT) {
            results[0].status = APPLY_FAILED;
            snprintf(results[0].reason, sizeof(results[0].reason), "%s",
                     errstr);
            err = NS_OK;
        }
        goto cleanup;
    }

    /* Split: apply each change alone so one bad row cannot hold back the
     * others. Rare, so simplicity wins over fewer round trips. */
    log_msg(LOG_WARN, "batch of %zu changes rejected by Neo4j, applying them "
            "one by one: %s", n, errstr);
    for (size_t i = 0; i < n; i++) {
        char why[512];

        err = run_once(nc, map, changes, &idx[i], 1, results, stats, why,
                       sizeof(why));
        if (err == NS_ERR_NEO4J_PERMANENT) {
            results[i].status = APPLY_FAILED;
            snprintf(results[i].reason, sizeof(results[i].reason), "%.250s", why);
            err = NS_OK;
        } else if (err) {
            snprintf(errstr, errstr_size, "%s", why);
            goto cleanup;
        }
    }
    /* Every change of the batch (n > 1 here) rejected with the same code:
     * no set of events is that uniformly bad, the cause is the server or
     * the statements' shape (a schema or version change). Dead-lettering
     * would drop the whole batch; nothing was committed, so retry it. */
    {
        /* the code is the reason up to its first ": " */
        const char *end = strstr(results[0].reason, ": ");
        size_t len = end ? (size_t)(end - results[0].reason) : 0;
        size_t same = 0;

        while (len && strncmp(results[0].reason, "Neo.", 4) == 0 &&
               same < n && results[same].status == APPLY_FAILED &&
               strncmp(results[same].reason, results[0].reason,
                       len + 2) == 0)
            same++;
        if (same == n) {
            snprintf(errstr, errstr_size, "all %zu changes rejected alike, "
                     "retrying the batch: %.400s", n, results[0].reason);
            for (size_t i = 0; i < n; i++)
                memset(&results[i], 0, sizeof(results[i]));
            err = NS_ERR_NEO4J_TRANSIENT;
        }
    }

cleanup:
    free(idx);
    return err;
}
