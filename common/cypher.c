#include "cypher.h"

#include <stdio.h>
#include <string.h>

const char *cypher_label_key(const struct mapping *map, const char *label)
{
    for (size_t i = 0; i < map->table_count; i++) {
        const struct mapping_table *tbl = &map->tables[i];
        if (tbl->kind == MAPPING_NODE && strcmp(tbl->label, label) == 0)
            return tbl->key_property;
    }
    return "id";
}

/* The Cypher expression that turns a parameter into the stored value. */
static enum ns_err value_expr(struct buf *b, const struct mapping_property *p)
{
    const char *fn = NULL;

    switch (p->type) {
    case COL_TIMESTAMPTZ: fn = "datetime"; break;
    case COL_TIMESTAMP: fn = "localdatetime"; break;
    case COL_DATE: fn = "date"; break;
    case COL_NUMERIC:
    case COL_FLOAT: fn = "toFloat"; break;
    case COL_INT: fn = "toInteger"; break;
    default: break;
    }
    if (fn)
        return buf_addf(b, "%s(row.p.%s)", fn, p->property);
    return buf_addf(b, "row.p.%s", p->property);
}

/* "SET x.a = ..., x.b = ..., x.srcLsn = row.lsn, x.pgVersion = row.v" */
static enum ns_err set_props(struct buf *b, const struct mapping_table *tbl,
                             uint64_t shape, const char *var)
{
    enum ns_err err = buf_adds(b, "SET ");

    for (size_t i = 0; !err && i < tbl->prop_count; i++) {
        if (!(shape & (UINT64_C(1) << i)))
            continue;
        err = buf_addf(b, "%s.%s = ", var, tbl->props[i].property);
        if (!err)
            err = value_expr(b, &tbl->props[i]);
        if (!err)
            err = buf_adds(b, ", ");
    }
    if (!err)
        err = buf_addf(b, "%s.srcLsn = row.lsn, %s.pgVersion = row.v\n", var,
                       var);
    return err;
}

/* Newer-or-same source position than what x reflects (idempotent). */
static enum ns_err fresh_guard(struct buf *b, const char *var)
{
    return buf_addf(b,
                    "%s.srcLsn IS NULL OR %s.srcLsn < row.lsn OR "
                    "(%s.srcLsn = row.lsn AND coalesce(%s.pgVersion, 0) <= "
                    "coalesce(row.v, 0))",
                    var, var, var, var);
}

/* Tombstone of (label, key expr) that is not older than this change. */
static enum ns_err tomb_match(struct buf *b, const char *var,
                              const char *label, const char *key_expr)
{
    return buf_addf(b, "OPTIONAL MATCH (%s:" CYPHER_TOMBSTONE_LABEL
                       " {key: '%s/' + %s})\n",
                    var, label, key_expr);
}

static enum ns_err node_upsert(const struct mapping *map,
                               const struct mapping_table *tbl,
                               uint64_t shape, struct buf *b)
{
    enum ns_err err;

    err = buf_adds(b, "UNWIND $rows AS row\n");
    if (!err)
        err = tomb_match(b, "tomb", tbl->label, "row.k");
    if (!err)
        err = buf_adds(b, "WITH row, tomb WHERE tomb IS NULL OR "
                          "tomb.lsn < row.lsn\n");
    if (!err)
        err = buf_addf(b, "MERGE (n:%s {%s: row.k})\nWITH row, tomb, n WHERE ",
                       tbl->label, tbl->key_property);
    if (!err)
        err = fresh_guard(b, "n");
    if (!err)
        err = buf_adds(b, "\n");
    if (!err)
        err = set_props(b, tbl, shape, "n");
    if (!err)
        err = buf_adds(b, "DELETE tomb\n");
    for (size_t i = 0; !err && i < tbl->parent_count; i++) {
        const struct mapping_parent *par = &tbl->parents[i];
        const char *pkey = cypher_label_key(map, par->label);

        /* a moved row: drop the link to its former parent */
        err = buf_addf(b,
                       "WITH row, n\n"
                       "CALL { WITH row, n\n"
                       "  OPTIONAL MATCH (old:%s)-[gone:%s]->(n)\n"
                       "  WHERE row.par[%zu] IS NULL OR old.%s <> row.par[%zu]\n"
                       "  DELETE gone }\n"
                       "WITH row, n\n",
                       par->label, par->type, i, pkey, i);
        if (!err) {
            char key_expr[32];
            snprintf(key_expr, sizeof(key_expr), "row.par[%zu]", i);
            err = tomb_match(b, "ptomb", par->label, key_expr);
        }
        if (!err)
            err = buf_addf(b,
                           "FOREACH (_ IN CASE WHEN row.par[%zu] IS NULL OR "
                           "(ptomb IS NOT NULL AND ptomb.lsn >= row.lsn) "
                           "THEN [] ELSE [1] END |\n"
                           "  MERGE (p:%s {%s: row.par[%zu]})\n"
                           "  MERGE (p)-[:%s]->(n))\n",
                           i, par->label, pkey, i, par->type);
    }
    if (!err)
        err = buf_adds(b, "WITH row, n\n"
                          "RETURN row.k AS k, row.v AS v, elementId(n) AS eid");
    return err;
}

static enum ns_err node_delete(const struct mapping_table *tbl, struct buf *b)
{
    return buf_addf(b,
                    "UNWIND $rows AS row\n"
                    "OPTIONAL MATCH (n:%s {%s: row.k})\n"
                    "WITH row, n WHERE n IS NULL OR n.srcLsn IS NULL OR "
                    "n.srcLsn <= row.lsn\n"
                    "DETACH DELETE n\n"
                    "MERGE (t:" CYPHER_TOMBSTONE_LABEL " {key: '%s/' + row.k})\n"
                    "SET t.lsn = CASE WHEN t.lsn IS NULL OR t.lsn < row.lsn "
                    "THEN row.lsn ELSE t.lsn END",
                    tbl->label, tbl->key_property, tbl->label);
}

/* UNWIND, tombstone checks and the two endpoint MERGEs of a link row. */
static enum ns_err link_endpoints(const struct mapping *map,
                                  const struct mapping_table *tbl,
                                  struct buf *b)
{
    enum ns_err err = buf_adds(b, "UNWIND $rows AS row\n");

    if (!err)
        err = tomb_match(b, "ta", tbl->from.label, "row.a");
    if (!err)
        err = tomb_match(b, "tb", tbl->to.label, "row.b");
    if (!err)
        err = buf_addf(b,
                       "WITH row, ta, tb WHERE (ta IS NULL OR ta.lsn < row.lsn)"
                       " AND (tb IS NULL OR tb.lsn < row.lsn)\n"
                       "MERGE (a:%s {%s: row.a})\n"
                       "MERGE (b:%s {%s: row.b})\n",
                       tbl->from.label,
                       cypher_label_key(map, tbl->from.label), tbl->to.label,
                       cypher_label_key(map, tbl->to.label));
    return err;
}

/* The properties of link r, then its keys and element id for the
 * write-back. */
static enum ns_err link_set_return(const struct mapping_table *tbl,
                                   uint64_t shape, struct buf *b)
{
    enum ns_err err = set_props(b, tbl, shape, "r");

    if (!err)
        err = buf_adds(b, "RETURN row.a AS a, row.b AS b, row.v AS v, "
                          "elementId(r) AS eid");
    return err;
}

static enum ns_err link_upsert(const struct mapping *map,
                               const struct mapping_table *tbl,
                               uint64_t shape, struct buf *b)
{
    enum ns_err err = link_endpoints(map, tbl, b);

    if (!err)
        err = buf_addf(b, "MERGE (a)-[r:%s]->(b)\nWITH row, r WHERE ",
                       tbl->rel_type);
    if (!err)
        err = fresh_guard(b, "r");
    if (!err)
        err = buf_adds(b, "\n");
    if (!err)
        err = link_set_return(tbl, shape, b);
    return err;
}

/* Versioned link: close the current version, open a new one, unless a
 * version at this or a later position already exists (replay). */
static enum ns_err link_upsert_temporal(const struct mapping *map,
                                        const struct mapping_table *tbl,
                                        uint64_t shape, struct buf *b)
{
    enum ns_err err = link_endpoints(map, tbl, b);

    if (!err)
        err = buf_addf(b,
                       "WITH row, a, b\n"
                       "OPTIONAL MATCH (a)-[h:%s]->(b)\n"
                       "WITH row, a, b, max(coalesce(h.closedLsn, h.srcLsn)) "
                       "AS latest\n"
                       "WHERE latest IS NULL OR latest < row.lsn\n"
                       "CALL { WITH row, a, b\n"
                       "  OPTIONAL MATCH (a)-[cur:%s]->(b) WHERE cur.validTo "
                       "IS NULL\n"
                       "  SET cur.validTo = datetime({epochMillis: row.ts}), "
                       "cur.closedLsn = row.lsn }\n"
                       "CREATE (a)-[r:%s {validFrom: datetime({epochMillis: "
                       "row.ts})}]->(b)\n",
                       tbl->rel_type, tbl->rel_type, tbl->rel_type);
    if (!err)
        err = link_set_return(tbl, shape, b);
    return err;
}

static enum ns_err link_delete(const struct mapping *map,
                               const struct mapping_table *tbl, struct buf *b)
{
    enum ns_err err = buf_addf(b,
                               "UNWIND $rows AS row\n"
                               "MATCH (a:%s {%s: row.a})-[r:%s]->"
                               "(b:%s {%s: row.b})\n",
                               tbl->from.label,
                               cypher_label_key(map, tbl->from.label),
                               tbl->rel_type, tbl->to.label,
                               cypher_label_key(map, tbl->to.label));
    if (err)
        return err;
    if (tbl->temporal)
        return buf_adds(b, "WHERE r.validTo IS NULL AND r.srcLsn <= row.lsn\n"
                           "SET r.validTo = datetime({epochMillis: row.ts}), "
                           "r.closedLsn = row.lsn");
    return buf_adds(b, "WHERE r.srcLsn IS NULL OR r.srcLsn <= row.lsn\n"
                       "DELETE r");
}

enum ns_err cypher_statement(const struct mapping *map,
                             const struct mapping_table *tbl,
                             enum change_action action, uint64_t shape,
                             struct buf *out)
{
    if (tbl->kind == MAPPING_NODE)
        return action == CHANGE_UPSERT ? node_upsert(map, tbl, shape, out)
                                       : node_delete(tbl, out);
    if (tbl->kind == MAPPING_RELATIONSHIP) {
        if (action == CHANGE_DELETE)
            return link_delete(map, tbl, out);
        return tbl->temporal ? link_upsert_temporal(map, tbl, shape, out)
                             : link_upsert(map, tbl, shape, out);
    }
    return NS_ERR_SCHEMA;
}

enum ns_err cypher_schema_statements(const struct mapping *map,
                                     struct buf *out)
{
    enum ns_err err = buf_adds(out, "CREATE CONSTRAINT nexus_tombstone_key "
                                    "IF NOT EXISTS FOR (t:" CYPHER_TOMBSTONE_LABEL
                                    ") REQUIRE t.key IS UNIQUE");

    for (size_t i = 0; !err && i < map->table_count; i++) {
        const struct mapping_table *tbl = &map->tables[i];
        int seen = 0;

        if (tbl->kind != MAPPING_NODE)
            continue;
        for (size_t j = 0; j < i; j++)
            seen |= map->tables[j].kind == MAPPING_NODE &&
                    strcmp(map->tables[j].label, tbl->label) == 0;
        if (seen)
            continue;
        err = buf_addf(out,
                       "\n;\nCREATE CONSTRAINT nexus_%s_%s IF NOT EXISTS "
                       "FOR (n:%s) REQUIRE n.%s IS UNIQUE",
                       tbl->label, tbl->key_property, tbl->label,
                       tbl->key_property);
    }
    return err;
}
