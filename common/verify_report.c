#include "verify_report.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "verify_run.h"

static char *verify_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

void verify_report_example_free(struct verify_example *ex)
{
    free(ex->key);
    free(ex->property);
    free(ex->pg);
    free(ex->neo4j);
}

/* Keep an example while the table has fewer than limit_report. Values are
 * copied; ownership of pg/neo4j strings passes to the example. */
enum ns_err verify_report_example_add(struct run *run, const char *kind,
                                      const char *k1, const char *k2,
                                      const char *property, char *pg,
                                      char *neo4j)
{
    struct table_result *tr = run->tr;
    struct verify_example *ex;
    size_t klen;

    if (tr->ex_count >= run->vf->opt.limit_report) {
        free(pg);
        free(neo4j);
        return NS_OK;
    }
    ex = &tr->ex[tr->ex_count];
    memset(ex, 0, sizeof(*ex));
    ex->kind = kind;
    klen = strlen(k1) + (k2 ? strlen(k2) + 1 : 0) + 1;
    ex->key = malloc(klen);
    if (ex->key)
        snprintf(ex->key, klen, "%s%s%s", k1, k2 ? "|" : "", k2 ? k2 : "");
    ex->property = verify_strdup(property);
    ex->pg = pg;
    ex->neo4j = neo4j;
    if (!ex->key || (property && !ex->property)) {
        verify_report_example_free(ex);
        return NS_ERR_NOMEM;
    }
    tr->ex_count++;
    return NS_OK;
}

uint64_t verify_report_divergences(const struct verify_counts *c)
{
    return c->missing + c->extra + c->mismatched + c->parent_missing +
           c->parent_extra;
}

void verify_report_text(const struct verify *vf, FILE *f)
{
    for (size_t i = 0; i < vf->result_count; i++) {
        const struct table_result *tr = &vf->results[i];
        const struct verify_counts *c = &tr->c;
        int node = tr->tbl->kind == MAPPING_NODE;

        fprintf(f, "%s: rows %llu, %s %llu, missing %llu, extra %llu, "
                   "mismatched %llu",
                tr->tbl->table, (unsigned long long)c->rows,
                node ? "nodes" : "relationships",
                (unsigned long long)c->graph, (unsigned long long)c->missing,
                (unsigned long long)c->extra,
                (unsigned long long)c->mismatched);
        if (node && tr->tbl->parent_count)
            fprintf(f, ", parent relationships missing %llu, extra %llu",
                    (unsigned long long)c->parent_missing,
                    (unsigned long long)c->parent_extra);
        if (c->placeholders)
            fprintf(f, ", placeholders %llu",
                    (unsigned long long)c->placeholders);
        if (vf->opt.repair)
            fprintf(f, ", repaired %llu, not repaired %llu",
                    (unsigned long long)c->repaired,
                    (unsigned long long)c->repair_skipped);
        fputc('\n', f);
        for (size_t j = 0; j < tr->ex_count; j++) {
            const struct verify_example *ex = &tr->ex[j];
            fprintf(f, "  %s %s %s", ex->kind,
                    node ? tr->tbl->label : tr->tbl->rel_type, ex->key);
            if (ex->property)
                fprintf(f, " %s", ex->property);
            if (ex->pg || ex->neo4j)
                fprintf(f, ": postgres %s, neo4j %s", ex->pg ? ex->pg : "-",
                        ex->neo4j ? ex->neo4j : "-");
            fputc('\n', f);
        }
    }
}

static int add_count(cJSON *obj, const char *name, uint64_t v)
{
    return cJSON_AddNumberToObject(obj, name, (double)v) != NULL;
}

static int add_counts(cJSON *obj, const struct verify_counts *c, int repair)
{
    int ok = add_count(obj, "rows", c->rows) &&
             add_count(obj, "graph", c->graph) &&
             add_count(obj, "missing", c->missing) &&
             add_count(obj, "extra", c->extra) &&
             add_count(obj, "mismatched", c->mismatched) &&
             add_count(obj, "mismatched_properties", c->mismatched_props) &&
             add_count(obj, "parent_missing", c->parent_missing) &&
             add_count(obj, "parent_extra", c->parent_extra) &&
             add_count(obj, "placeholders", c->placeholders) &&
             add_count(obj, "divergences", verify_report_divergences(c));

    if (ok && repair)
        ok = add_count(obj, "repaired", c->repaired) &&
             add_count(obj, "not_repaired", c->repair_skipped);
    return ok;
}

static int add_opt_string(cJSON *obj, const char *name, const char *s)
{
    if (!s)
        return 1;
    return cJSON_AddStringToObject(obj, name, s) != NULL;
}

cJSON *verify_report_json(const struct verify *vf)
{
    cJSON *doc = cJSON_CreateObject(), *tables, *totals;
    struct verify_counts sum;
    int ok;

    memset(&sum, 0, sizeof(sum));
    tables = doc ? cJSON_AddArrayToObject(doc, "tables") : NULL;
    ok = tables != NULL;
    for (size_t i = 0; ok && i < vf->result_count; i++) {
        const struct table_result *tr = &vf->results[i];
        int node = tr->tbl->kind == MAPPING_NODE;
        cJSON *t = cJSON_CreateObject(), *exs;

        ok = t && cJSON_AddStringToObject(t, "table", tr->tbl->table) &&
             cJSON_AddStringToObject(t, "element",
                                     node ? "node" : "relationship") &&
             cJSON_AddStringToObject(t, node ? "label" : "type",
                                     node ? tr->tbl->label
                                          : tr->tbl->rel_type) &&
             add_counts(t, &tr->c, vf->opt.repair);
        if (t)
            cJSON_AddItemToArray(tables, t);
        exs = ok ? cJSON_AddArrayToObject(t, "examples") : NULL;
        ok = ok && exs;
        for (size_t j = 0; ok && j < tr->ex_count; j++) {
            const struct verify_example *ex = &tr->ex[j];
            cJSON *e = cJSON_CreateObject();
            ok = e && cJSON_AddStringToObject(e, "kind", ex->kind) &&
                 cJSON_AddStringToObject(e, "key", ex->key) &&
                 add_opt_string(e, "property", ex->property) &&
                 add_opt_string(e, "postgres", ex->pg) &&
                 add_opt_string(e, "neo4j", ex->neo4j);
            if (e)
                cJSON_AddItemToArray(exs, e);
        }
        sum.rows += tr->c.rows;
        sum.graph += tr->c.graph;
        sum.missing += tr->c.missing;
        sum.extra += tr->c.extra;
        sum.mismatched += tr->c.mismatched;
        sum.mismatched_props += tr->c.mismatched_props;
        sum.parent_missing += tr->c.parent_missing;
        sum.parent_extra += tr->c.parent_extra;
        sum.placeholders += tr->c.placeholders;
        sum.repaired += tr->c.repaired;
        sum.repair_skipped += tr->c.repair_skipped;
    }
    totals = ok ? cJSON_AddObjectToObject(doc, "totals") : NULL;
    ok = ok && totals && add_counts(totals, &sum, vf->opt.repair);
    if (!ok) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}
