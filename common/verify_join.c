#include "verify_join.h"

#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "verify_neo4j.h"
#include "verify_pg.h"
#include "verify_repair.h"
#include "verify_report.h"
#include "verify_run.h"
#include "verify_value.h"

/*
 * The properties object of the current PostgreSQL row, converted as the
 * workers convert; compared with graph (the graph's value list, or NULL
 * for a missing element). *props gets the object (caller frees) or NULL
 * when a value cannot be converted; *off counts differing properties.
 */
static enum ns_err row_props(struct run *run, int first_col,
                             const cJSON *graph, const char *k1,
                             const char *k2, cJSON **props, size_t *off)
{
    const struct mapping_table *tbl = run->tbl;
    cJSON *obj = cJSON_CreateObject();
    const cJSON *gv = graph ? graph->child : NULL;
    int convertible = 1;
    enum ns_err err = NS_OK;

    *props = NULL;
    *off = 0;
    if (!obj)
        return NS_ERR_NOMEM;
    for (size_t i = 0; i < tbl->prop_count; i++) {
        const struct mapping_property *p = &tbl->props[i];
        const char *text = verify_pg_val(run, first_col + (int)i);
        cJSON *param = NULL;
        char why[256];
        enum ns_err cerr = verify_value_param(text, p, &param, why,
                                              sizeof(why));

        if (cerr == NS_ERR_NOMEM) {
            err = cerr;
            goto cleanup;
        }
        if (cerr) {
            convertible = 0;
            if (graph) {
                char msg[300];
                cJSON *tmp;

                (*off)++;
                snprintf(msg, sizeof(msg), "unconvertible: %s", why);
                tmp = cJSON_CreateString(msg);
                err = verify_report_example_add(
                    run, "mismatch", k1, k2, p->property,
                    verify_value_show(tmp),
                    verify_value_show_neo(gv, p->type));
                cJSON_Delete(tmp);
                if (err)
                    goto cleanup;
            }
        } else {
            if (graph && !verify_value_equal(p, text, param, gv)) {
                (*off)++;
                err = verify_report_example_add(
                    run, "mismatch", k1, k2, p->property,
                    verify_value_show(param),
                    verify_value_show_neo(gv, p->type));
                if (err) {
                    cJSON_Delete(param);
                    goto cleanup;
                }
            }
            cJSON_AddItemToObject(obj, p->property, param);
        }
        if (gv)
            gv = gv->next;
    }
    if (convertible) {
        *props = obj;
        obj = NULL;
    }

cleanup:
    cJSON_Delete(obj);
    return err;
}

static int64_t pg_version_of(const struct run *run, int col)
{
    int64_t v = 0;
    const char *s = verify_pg_val(run, col);

    if (s && verify_value_parse_int64(s, &v) == 0)
        return v;
    return 0;
}

/* A row with no element: count it, and queue its upsert. */
static enum ns_err on_missing(struct run *run, const char *k1, const char *k2,
                              char *errstr, size_t errstr_size)
{
    int node = run->tbl->kind == MAPPING_NODE;
    int fixed = node ? PG_NODE_FIXED : PG_LINK_FIXED;
    cJSON *props = NULL;
    size_t off;
    enum ns_err err;

    run->tr->c.missing++;
    err = verify_report_example_add(run, "missing", k1, k2, NULL, NULL, NULL);
    if (!err && run->vf->opt.repair)
        err = row_props(run, fixed, NULL, k1, k2, &props, &off);
    if (err || !run->vf->opt.repair)
        return err;
    if (!props) {
        run->tr->c.repair_skipped++;
        return NS_OK;
    }
    err = verify_repair_upsert(run, k1, k2, props, 0,
                               pg_version_of(run, fixed - 1),
                               node ? PEND_MISSING_NODE
                                    : run->tbl->temporal ? PEND_TEMPORAL
                                                         : PEND_SEEN,
                               NULL);
    if (err)
        ns_err_set(errstr, errstr_size, "could not queue the repair of a "
                   "missing row of %s: %s", run->tbl->table, ns_err_str(err));
    else
        err = verify_repair_maybe_flush(run, errstr, errstr_size);
    return err;
}

/* An element with no row. */
static enum ns_err on_extra(struct run *run, const cJSON *row, char *errstr,
                            size_t errstr_size)
{
    int node = run->tbl->kind == MAPPING_NODE;
    enum ns_err err;

    if (node && !cJSON_IsNumber(cJSON_GetArrayItem(row, NEO_NODE_LSN))) {
        run->tr->c.placeholders++;
        return NS_OK;
    }
    run->tr->c.extra++;
    if (node)
        err = verify_report_example_add(run, "extra",
                                        verify_neo4j_str(row, NEO_NODE_K),
                                        NULL, NULL, NULL, NULL);
    else
        err = verify_report_example_add(run, "extra",
                                        verify_neo4j_str(row, NEO_LINK_A),
                                        verify_neo4j_str(row, NEO_LINK_B),
                                        NULL, NULL, NULL);
    if (err || !run->vf->opt.repair)
        return err;
    if (node)
        err = verify_repair_delete(run, run->pend.node_deletes, "k",
                                   verify_neo4j_str(row, NEO_NODE_K),
                                   verify_neo4j_int(row, NEO_NODE_LSN));
    else
        err = verify_repair_delete(run, run->pend.rel_deletes, "eid",
                                   verify_neo4j_str(row, NEO_LINK_EID),
                                   verify_neo4j_int(row, NEO_LINK_LSN));
    if (!err)
        err = verify_repair_maybe_flush(run, errstr, errstr_size);
    return err;
}

/* Parent relationships of a node whose row has them in its columns. */
static enum ns_err check_parents(struct run *run, const char *k,
                                 const cJSON *graph_parents, int *need_upsert)
{
    const struct mapping_table *tbl = run->tbl;
    const cJSON *per = graph_parents ? graph_parents->child : NULL;
    enum ns_err err = NS_OK;

    for (size_t i = 0; !err && i < tbl->parent_count;
         i++, per = per ? per->next : NULL) {
        const char *want = verify_pg_val(run, PG_NODE_FIXED +
                                                  (int)tbl->prop_count +
                                                  (int)i);
        const cJSON *edge;
        int found = 0;

        cJSON_ArrayForEach(edge, per) {
            const char *pk = verify_neo4j_str(edge, 0);
            if (want && pk && !found && strcmp(pk, want) == 0) {
                found = 1;
                continue;
            }
            run->tr->c.parent_extra++;
            err = verify_report_example_add(
                run, "parent_extra", k, NULL, tbl->parents[i].type,
                verify_value_show(cJSON_GetArrayItem(edge, 0)), NULL);
            if (!err && run->vf->opt.repair)
                err = verify_repair_delete(run, run->pend.parent_deletes[i],
                                           "eid", verify_neo4j_str(edge, 1),
                                           0);
            if (err)
                break;
        }
        if (!err && want && !found) {
            cJSON *tmp = cJSON_CreateString(want);
            run->tr->c.parent_missing++;
            *need_upsert = 1;
            err = verify_report_example_add(run, "parent_missing", k, NULL,
                                            tbl->parents[i].type,
                                            verify_value_show(tmp), NULL);
            cJSON_Delete(tmp);
        }
    }
    return err;
}

/* A row and its element: compare properties (and parents). */
static enum ns_err on_pair(struct run *run, const char *k1, const char *k2,
                           const cJSON *row, char *errstr, size_t errstr_size)
{
    int node = run->tbl->kind == MAPPING_NODE;
    int fixed = node ? PG_NODE_FIXED : PG_LINK_FIXED;
    const cJSON *graph = cJSON_GetArrayItem(row, node ? NEO_NODE_PROPS
                                                      : NEO_LINK_PROPS);
    int64_t lsn = verify_neo4j_int(row, node ? NEO_NODE_LSN : NEO_LINK_LSN);
    cJSON *props = NULL;
    size_t off = 0;
    int need = 0;
    enum ns_err err;

    err = row_props(run, fixed, graph, k1, k2, &props, &off);
    if (!err && node)
        err = check_parents(run, k1,
                            cJSON_GetArrayItem(row, NEO_NODE_PARENTS), &need);
    if (err)
        goto cleanup;
    if (off) {
        run->tr->c.mismatched++;
        run->tr->c.mismatched_props += off;
        need = 1;
    }
    if (!need || !run->vf->opt.repair)
        goto cleanup;
    if (!props) {
        run->tr->c.repair_skipped++;
        goto cleanup;
    }
    if (!node && run->tbl->temporal && verify_neo4j_at_page_end(run))
        run->pend.unsafe = 1;
    err = verify_repair_upsert(run, k1, k2, props, lsn < 0 ? 0 : lsn,
                               pg_version_of(run, fixed - 1),
                               !node && run->tbl->temporal ? PEND_TEMPORAL
                                                           : PEND_SEEN,
                               node ? NULL
                                    : verify_neo4j_str(row, NEO_LINK_EID));
    props = NULL;
    if (err)
        ns_err_set(errstr, errstr_size, "could not queue the repair of a "
                   "row of %s: %s", run->tbl->table, ns_err_str(err));
    else
        err = verify_repair_maybe_flush(run, errstr, errstr_size);

cleanup:
    cJSON_Delete(props);
    return err;
}

/* Order of the current PostgreSQL row against a graph row: <0, 0, >0. */
static int key_cmp(const struct run *run, const cJSON *row)
{
    int c;
    const char *g1, *g2;

    if (run->tbl->kind == MAPPING_NODE) {
        g1 = verify_neo4j_str(row, NEO_NODE_K);
        return strcmp(verify_pg_val(run, 0), g1 ? g1 : "");
    }
    g1 = verify_neo4j_str(row, NEO_LINK_A);
    g2 = verify_neo4j_str(row, NEO_LINK_B);
    c = strcmp(verify_pg_val(run, 0), g1 ? g1 : "");
    return c ? c : strcmp(verify_pg_val(run, 1), g2 ? g2 : "");
}

/* Non-zero when a graph row is current, fetching the next page when
 * needed. */
static enum ns_err neo_page_has(struct run *run, int *has, char *errstr,
                                size_t errstr_size)
{
    struct neo_page *np = &run->neo;
    enum ns_err err;

    if (!np->started || (!np->cur && !np->done)) {
        err = verify_neo4j_page_fetch(run, errstr, errstr_size);
        /* Repairs held back for the pair at the end of the previous page
         * can go now: their new versions sort before this page's end. */
        if (!err)
            err = verify_repair_flush(run, errstr, errstr_size);
        if (err)
            return err;
    }
    *has = np->cur != NULL;
    return NS_OK;
}

enum ns_err verify_join_run(struct run *run, char *errstr, size_t errstr_size)
{
    int node = run->tbl->kind == MAPPING_NODE;
    enum ns_err err = NS_OK;

    for (;;) {
        int has_pg, has_neo, c;
        const cJSON *row;
        char k1[CHANGE_KEY_MAX], k2[CHANGE_KEY_MAX];

        err = verify_pg_page_has(run, &has_pg, errstr, errstr_size);
        if (!err)
            err = neo_page_has(run, &has_neo, errstr, errstr_size);
        if (err || (!has_pg && !has_neo))
            break;
        row = has_neo ? verify_neo4j_row(run->neo.cur) : NULL;
        if (has_pg) {
            snprintf(k1, sizeof(k1), "%s", verify_pg_val(run, 0));
            snprintf(k2, sizeof(k2), "%s", node ? "" : verify_pg_val(run, 1));
        }
        c = !has_neo ? -1 : !has_pg ? 1 : key_cmp(run, row);
        if (c < 0) {
            run->tr->c.rows++;
            err = on_missing(run, k1, node ? NULL : k2, errstr, errstr_size);
            run->pg.i++;
        } else if (c > 0) {
            if (!node || cJSON_IsNumber(cJSON_GetArrayItem(row, NEO_NODE_LSN)))
                run->tr->c.graph++;
            err = on_extra(run, row, errstr, errstr_size);
            run->neo.cur = run->neo.cur->next;
        } else {
            run->tr->c.rows++;
            run->tr->c.graph++;
            err = on_pair(run, k1, node ? NULL : k2, row, errstr,
                          errstr_size);
            run->pg.i++;
            run->neo.cur = run->neo.cur->next;
        }
        if (err)
            break;
    }
    if (!err)
        err = verify_repair_flush(run, errstr, errstr_size);
    return err;
}
