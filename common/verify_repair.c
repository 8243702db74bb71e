#include "verify_repair.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "apply.h"
#include "buf.h"
#include "change.h"
#include "convert.h"
#include "cypher.h"
#include "verify_neo4j.h"
#include "verify_pg.h"
#include "verify_run.h"

static void pending_clear(struct pending *pend)
{
    for (size_t i = 0; i < pend->n; i++)
        change_clear(&pend->changes[i]);
    pend->n = 0;
    cJSON_Delete(pend->node_deletes);
    cJSON_Delete(pend->rel_deletes);
    pend->node_deletes = cJSON_CreateArray();
    pend->rel_deletes = cJSON_CreateArray();
    for (size_t i = 0; i < pend->parent_count; i++) {
        cJSON_Delete(pend->parent_deletes[i]);
        pend->parent_deletes[i] = cJSON_CreateArray();
    }
    pend->unsafe = 0;
}

void verify_repair_free(struct pending *pend)
{
    pending_clear(pend);
    free(pend->changes);
    free(pend->meta);
    cJSON_Delete(pend->node_deletes);
    cJSON_Delete(pend->rel_deletes);
    for (size_t i = 0; i < pend->parent_count; i++)
        cJSON_Delete(pend->parent_deletes[i]);
    free(pend->parent_deletes);
    memset(pend, 0, sizeof(*pend));
}

enum ns_err verify_repair_init(struct pending *pend, size_t cap,
                               size_t parent_count)
{
    memset(pend, 0, sizeof(*pend));
    pend->cap = cap;
    pend->changes = calloc(cap, sizeof(*pend->changes));
    pend->meta = calloc(cap, sizeof(*pend->meta));
    pend->parent_count = parent_count;
    pend->parent_deletes = calloc(parent_count ? parent_count : 1,
                                  sizeof(cJSON *));
    if (!pend->changes || !pend->meta || !pend->parent_deletes)
        return NS_ERR_NOMEM;
    pending_clear(pend);
    if (!pend->node_deletes || !pend->rel_deletes)
        return NS_ERR_NOMEM;
    for (size_t i = 0; i < parent_count; i++)
        if (!pend->parent_deletes[i])
            return NS_ERR_NOMEM;
    return NS_OK;
}

static size_t pending_size(const struct pending *pend)
{
    size_t n = pend->n + (size_t)cJSON_GetArraySize(pend->node_deletes) +
               (size_t)cJSON_GetArraySize(pend->rel_deletes);

    for (size_t i = 0; i < pend->parent_count; i++)
        n += (size_t)cJSON_GetArraySize(pend->parent_deletes[i]);
    return n;
}

/*
 * Queue an upsert of the current PostgreSQL row. props is taken over.
 * lsn and version go into the row as the guards expect them.
 */
enum ns_err verify_repair_upsert(struct run *run, const char *k1,
                                 const char *k2, cJSON *props, int64_t lsn,
                                 int64_t version, enum pend_kind kind,
                                 const char *eid)
{
    const struct mapping_table *tbl = run->tbl;
    struct pending *pend = &run->pend;
    struct change *ch;
    struct pend_meta *meta;
    cJSON *row = cJSON_CreateObject(), *par;
    enum ns_err err = NS_OK;

    if (!row || pend->n == pend->cap) {
        cJSON_Delete(props);
        cJSON_Delete(row);
        return row ? NS_ERR_LIMIT : NS_ERR_NOMEM;
    }
    if (tbl->kind == MAPPING_NODE) {
        if (!cJSON_AddStringToObject(row, "k", k1))
            err = NS_ERR_NOMEM;
    } else if (!cJSON_AddStringToObject(row, "a", k1) ||
               !cJSON_AddStringToObject(row, "b", k2)) {
        err = NS_ERR_NOMEM;
    }
    if (!err && (!cJSON_AddNumberToObject(row, "ep",
                                          (double)run->vf->opt.epoch) ||
                 !cJSON_AddNumberToObject(row, "lsn", (double)lsn) ||
                 !cJSON_AddNumberToObject(row, "ts", (double)run->now_ms) ||
                 !cJSON_AddNumberToObject(row, "v", (double)version)))
        err = NS_ERR_NOMEM;
    if (!err) {
        cJSON_AddItemToObject(row, "p", props);
        props = NULL;
    }
    if (!err && tbl->kind == MAPPING_NODE && tbl->parent_count) {
        par = cJSON_AddArrayToObject(row, "par");
        for (size_t i = 0; par && !err && i < tbl->parent_count; i++) {
            const char *text = verify_pg_val(run, PG_NODE_FIXED +
                                                      (int)tbl->prop_count +
                                                      (int)i);
            cJSON *in = text ? cJSON_CreateString(text) : NULL, *pv = NULL;
            char why[256];

            if (text && !in)
                err = NS_ERR_NOMEM;
            else if (convert_value(in, COL_UUID, -1, &pv, why, sizeof(why)))
                err = NS_ERR_SCHEMA;   /* not repairable: skipped below */
            else
                cJSON_AddItemToArray(par, pv);
            cJSON_Delete(in);
        }
        if (!par)
            err = NS_ERR_NOMEM;
    }
    if (err) {
        cJSON_Delete(props);
        cJSON_Delete(row);
        if (err != NS_ERR_SCHEMA)
            return err;
        run->tr->c.repair_skipped++;
        return NS_OK;
    }
    ch = &pend->changes[pend->n];
    meta = &pend->meta[pend->n];
    memset(ch, 0, sizeof(*ch));
    memset(meta, 0, sizeof(*meta));
    ch->tbl = tbl;
    ch->action = CHANGE_UPSERT;
    ch->shape = tbl->prop_count >= 64 ? ~UINT64_C(0)
                                      : (UINT64_C(1) << tbl->prop_count) - 1;
    ch->row = row;
    ch->version = version;
    ch->epoch = run->vf->opt.epoch;
    ch->lsn = lsn;
    snprintf(ch->key_values[0], sizeof(ch->key_values[0]), "%s", k1);
    if (k2)
        snprintf(ch->key_values[1], sizeof(ch->key_values[1]), "%s", k2);
    snprintf(ch->key, sizeof(ch->key), "%s|%s%s%s", tbl->table, k1,
             k2 ? "|" : "", k2 ? k2 : "");
    meta->kind = kind;
    meta->snap_lsn = run->pg.snap_lsn;
    snprintf(meta->eid, sizeof(meta->eid), "%s", eid ? eid : "");
    pend->n++;
    return NS_OK;
}

/* Append {k|eid, lsn, ts} to a delete list. */
enum ns_err verify_repair_delete(struct run *run, cJSON *list,
                                 const char *name, const char *value,
                                 int64_t lsn)
{
    cJSON *row = cJSON_CreateObject();

    if (!row || !cJSON_AddStringToObject(row, name, value) ||
        !cJSON_AddNumberToObject(row, "ep", (double)run->vf->opt.epoch) ||
        !cJSON_AddNumberToObject(row, "lsn", (double)(lsn < 0 ? 0 : lsn)) ||
        !cJSON_AddNumberToObject(row, "ts", (double)run->now_ms)) {
        cJSON_Delete(row);
        return NS_ERR_NOMEM;
    }
    cJSON_AddItemToArray(list, row);
    return NS_OK;
}

/* Missing nodes: past a tombstone older than our read, or not at all. */
static enum ns_err resolve_tombstones(struct run *run, char *errstr,
                                      size_t errstr_size)
{
    struct pending *pend = &run->pend;
    cJSON *params = cJSON_CreateObject(), *keys, *rows = NULL;
    const cJSON *item;
    char cypher[256];
    size_t asked = 0;
    enum ns_err err = NS_OK;

    keys = params ? cJSON_AddArrayToObject(params, "rows") : NULL;
    if (!keys) {
        err = NS_ERR_NOMEM;
        goto cleanup;
    }
    for (size_t i = 0; i < pend->n; i++) {
        cJSON *r;
        if (pend->meta[i].kind != PEND_MISSING_NODE)
            continue;
        r = cJSON_CreateObject();
        if (!r || !cJSON_AddNumberToObject(r, "i", (double)i) ||
            !cJSON_AddStringToObject(r, "k", pend->changes[i].key_values[0])) {
            cJSON_Delete(r);
            err = NS_ERR_NOMEM;
            goto cleanup;
        }
        cJSON_AddItemToArray(keys, r);
        asked++;
    }
    if (!asked)
        goto cleanup;
    snprintf(cypher, sizeof(cypher),
             "UNWIND $rows AS row\n"
             "MATCH (t:" CYPHER_TOMBSTONE_LABEL " {key: '%s/' + row.k})\n"
             "RETURN row.i, t.lsn", run->tbl->label);
    err = verify_neo4j_query(run->vf->nc, cypher, params, &rows, errstr,
                             errstr_size);
    if (err)
        goto cleanup;
    cJSON_ArrayForEach(item, rows) {
        const cJSON *row = verify_neo4j_row(item);
        int64_t i = verify_neo4j_int(row, 0), tomb = verify_neo4j_int(row, 1);
        struct change *ch;

        if (i < 0 || (size_t)i >= pend->n)
            continue;
        ch = &pend->changes[i];
        if (tomb >= pend->meta[i].snap_lsn) {
            /* deleted in the graph after our read: leave it */
            pend->meta[i].skip = 1;
            continue;
        }
        ch->lsn = tomb + 1;
        cJSON_ReplaceItemInObjectCaseSensitive(
            ch->row, "lsn", cJSON_CreateNumber((double)ch->lsn));
    }

cleanup:
    if (err == NS_ERR_NOMEM)
        ns_err_set(errstr, errstr_size, "out of memory");
    cJSON_Delete(rows);
    cJSON_Delete(params);
    return err;
}

/* Temporal links: a new version must come after every existing one, and
 * only if the current version is still the one compared. */
static enum ns_err resolve_temporal(struct run *run, char *errstr,
                                    size_t errstr_size)
{
    const struct mapping *map = run->vf->map;
    const struct mapping_table *tbl = run->tbl;
    struct pending *pend = &run->pend;
    cJSON *params = cJSON_CreateObject(), *list, *rows = NULL;
    const cJSON *item;
    struct buf cypher;
    size_t asked = 0;
    enum ns_err err = NS_OK;

    buf_init(&cypher, VERIFY_CYPHER_MAX);
    list = params ? cJSON_AddArrayToObject(params, "rows") : NULL;
    if (!list) {
        err = NS_ERR_NOMEM;
        goto cleanup;
    }
    for (size_t i = 0; i < pend->n; i++) {
        cJSON *r;
        if (pend->meta[i].kind != PEND_TEMPORAL)
            continue;
        r = cJSON_CreateObject();
        if (!r || !cJSON_AddNumberToObject(r, "i", (double)i) ||
            !cJSON_AddStringToObject(r, "a", pend->changes[i].key_values[0]) ||
            !cJSON_AddStringToObject(r, "b", pend->changes[i].key_values[1])) {
            cJSON_Delete(r);
            err = NS_ERR_NOMEM;
            goto cleanup;
        }
        cJSON_AddItemToArray(list, r);
        asked++;
    }
    if (!asked)
        goto cleanup;
    err = buf_addf(&cypher,
                   "UNWIND $rows AS row\n"
                   "OPTIONAL MATCH (a:%s {%s: row.a})-[h:%s]->(b:%s {%s: row.b})\n"
                   "WITH row, max(coalesce(h.closedLsn, h.srcLsn)) AS latest,\n"
                   "  collect(CASE WHEN h IS NOT NULL AND h.validTo IS NULL THEN "
                   "[elementId(h), coalesce(h.pgVersion, 0)] END) AS cur\n"
                   "RETURN row.i, latest, cur",
                   tbl->from.label, cypher_label_key(map, tbl->from.label),
                   tbl->rel_type, tbl->to.label,
                   cypher_label_key(map, tbl->to.label));
    if (!err)
        err = verify_neo4j_query(run->vf->nc, buf_str(&cypher), params, &rows,
                                 errstr, errstr_size);
    if (err)
        goto cleanup;
    cJSON_ArrayForEach(item, rows) {
        const cJSON *row = verify_neo4j_row(item);
        int64_t i = verify_neo4j_int(row,
                                     0), latest = verify_neo4j_int(row, 1);
        const cJSON *cur = cJSON_GetArrayItem(row, 2);
        struct pend_meta *meta;
        struct change *ch;
        int ok;

        if (i < 0 || (size_t)i >= pend->n)
            continue;
        meta = &pend->meta[i];
        ch = &pend->changes[i];
        if (meta->eid[0]) {
            /* mismatch: the version compared must still be the current
             * one, and not newer than the row */
            const cJSON *only = cJSON_GetArrayItem(cur, 0);
            const char *eid = verify_neo4j_str(only, 0);
            ok = cJSON_GetArraySize(cur) == 1 && eid &&
                 strcmp(eid, meta->eid) == 0 &&
                 verify_neo4j_int(only, 1) <= ch->version;
        } else {
            /* missing: no current version, and the last one closed
             * before our read */
            ok = cJSON_GetArraySize(cur) == 0 &&
                 (latest < 0 || latest < meta->snap_lsn);
        }
        if (!ok) {
            meta->skip = 1;
            continue;
        }
        ch->lsn = latest < 0 ? 0 : latest + 1;
        cJSON_ReplaceItemInObjectCaseSensitive(
            ch->row, "lsn", cJSON_CreateNumber((double)ch->lsn));
    }

cleanup:
    if (err == NS_ERR_NOMEM)
        ns_err_set(errstr, errstr_size, "out of memory");
    buf_free(&cypher);
    cJSON_Delete(rows);
    cJSON_Delete(params);
    return err;
}

/* Run a delete statement over rows; *count gets the rows it returned. */
static enum ns_err run_deletes(struct run *run, const char *cypher,
                               cJSON *rows, int counted, uint64_t *count,
                               char *errstr, size_t errstr_size)
{
    cJSON *params, *res = NULL;
    enum ns_err err;
    size_t n = (size_t)cJSON_GetArraySize(rows);

    if (n == 0)
        return NS_OK;
    params = cJSON_CreateObject();
    if (!params)
        return NS_ERR_NOMEM;
    cJSON_AddItemReferenceToObject(params, "rows", rows);
    err = verify_neo4j_query(run->vf->nc, cypher, params, &res, errstr,
                             errstr_size);
    if (!err)
        *count += counted ? (uint64_t)cJSON_GetArraySize(res) : n;
    cJSON_Delete(res);
    cJSON_Delete(params);
    return err;
}

enum ns_err verify_repair_flush(struct run *run, char *errstr,
                                size_t errstr_size)
{
    const struct mapping *map = run->vf->map;
    const struct mapping_table *tbl = run->tbl;
    struct pending *pend = &run->pend;
    struct table_result *tr = run->tr;
    struct change *send = NULL;
    struct apply_result *results = NULL;
    struct apply_stats stats;
    struct buf cypher;
    size_t nsend = 0;
    uint64_t done = 0;
    enum ns_err err = NS_OK;

    if (!run->vf->opt.repair || pending_size(pend) == 0)
        return NS_OK;
    buf_init(&cypher, VERIFY_CYPHER_MAX);

    /* Wrong relationships first, so the upserts below see the rest. */
    for (size_t i = 0; !err && i < pend->parent_count; i++) {
        const struct mapping_parent *par = &tbl->parents[i];
        buf_reset(&cypher);
        err = buf_addf(&cypher,
                       "UNWIND $rows AS row\n"
                       "MATCH (p:%s)-[r:%s]->(n:%s) WHERE elementId(r) = row.eid\n"
                       "DELETE r RETURN row.eid",
                       par->label, par->type, tbl->label);
        if (!err)
            err = run_deletes(run, buf_str(&cypher), pend->parent_deletes[i],
                              1, &done, errstr, errstr_size);
    }
    if (!err && tbl->kind == MAPPING_RELATIONSHIP) {
        buf_reset(&cypher);
        err = buf_addf(&cypher,
                       "UNWIND $rows AS row\n"
                       "MATCH (a:%s)-[r:%s]->(b:%s) WHERE elementId(r) = row.eid\n"
                       "  AND (r.srcLsn IS NULL OR r.srcLsn <= row.lsn)%s\n",
                       tbl->from.label, tbl->rel_type, tbl->to.label,
                       tbl->temporal ? " AND r.validTo IS NULL" : "");
        if (!err)
            err = buf_adds(&cypher,
                           tbl->temporal
                               ? "SET r.validTo = datetime({epochMillis: "
                                 "row.ts}), r.closedLsn = row.lsn\n"
                                 "RETURN row.eid"
                               : "DELETE r RETURN row.eid");
        if (!err)
            err = run_deletes(run, buf_str(&cypher), pend->rel_deletes, 1,
                              &done, errstr, errstr_size);
    }
    if (!err && tbl->kind == MAPPING_RELATIONSHIP && tbl->temporal)
        err = resolve_temporal(run, errstr, errstr_size);
    if (!err && tbl->kind == MAPPING_NODE)
        err = resolve_tombstones(run, errstr, errstr_size);
    if (err)
        goto cleanup;

    send = calloc(pend->n ? pend->n : 1, sizeof(*send));
    results = calloc(pend->n ? pend->n : 1, sizeof(*results));
    if (!send || !results) {
        err = NS_ERR_NOMEM;
        goto cleanup;
    }
    for (size_t i = 0; i < pend->n; i++) {
        if (pend->meta[i].skip)
            tr->c.repair_skipped++;
        else
            send[nsend++] = pend->changes[i];   /* borrowed rows */
    }
    err = apply_changes(run->vf->nc, map, send, nsend, results, &stats,
                        NULL, errstr, errstr_size);
    if (err)
        goto cleanup;
    for (size_t i = 0; i < nsend; i++) {
        if (results[i].status == APPLY_APPLIED)
            done++;
        else
            tr->c.repair_skipped++;
    }

    if (tbl->kind == MAPPING_NODE) {
        buf_reset(&cypher);
        err = cypher_statement(map, tbl, CHANGE_DELETE, 0, &cypher);
        if (!err)
            err = run_deletes(run, buf_str(&cypher), pend->node_deletes, 0,
                              &done, errstr, errstr_size);
    }

cleanup:
    if (err == NS_ERR_NOMEM || err == NS_ERR_LIMIT)
        ns_err_set(errstr, errstr_size, "could not build the repair of %s: "
                   "%s", tbl->table, ns_err_str(err));
    tr->c.repaired += done;
    free(send);
    free(results);
    buf_free(&cypher);
    pending_clear(pend);
    return err;
}

/* Send the queued repairs when a page's worth is waiting and nothing
 * queued can come back into the graph pages still to read. */
enum ns_err verify_repair_maybe_flush(struct run *run, char *errstr,
                                      size_t errstr_size)
{
    if (pending_size(&run->pend) < run->vf->opt.chunk || run->pend.unsafe)
        return NS_OK;
    return verify_repair_flush(run, errstr, errstr_size);
}
