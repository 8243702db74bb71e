#include "cypher.h"

#include <stdio.h>
#include <string.h>

/*
 * Source positions are compared as Cypher lists, which order
 * lexicographically: [epoch, lsn, pg_version] for an element's state,
 * [epoch, lsn] for a marker. An element or marker without srcEpoch / ep
 * was written by epoch 0.
 */
#define ROW_POS "[row.ep, row.lsn]"
#define ROW_VPOS "[row.ep, row.lsn, coalesce(row.v, 0)]"

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

/* "SET x.a = ..., x.b = ..., x.srcLsn = row.lsn, ..." */
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
        err = buf_addf(b, "%s.srcLsn = row.lsn, %s.srcEpoch = row.ep, "
                          "%s.pgVersion = row.v\n", var, var, var);
    return err;
}

/* x reflects a position at or before this change's (idempotent). */
static enum ns_err fresh_guard(struct buf *b, const char *var)
{
    return buf_addf(b,
                    "(%s.srcLsn IS NULL OR [coalesce(%s.srcEpoch, 0), "
                    "%s.srcLsn, coalesce(%s.pgVersion, 0)] <= " ROW_VPOS ")",
                    var, var, var, var);
}

/* Marker var is absent or older than this change. */
static enum ns_err marker_older(struct buf *b, const char *var)
{
    return buf_addf(b, "(%s IS NULL OR [coalesce(%s.ep, 0), %s.lsn] < "
                       ROW_POS ")", var, var, var);
}

/* The marker of the element whose key expression is key_expr. */
static enum ns_err marker_match(struct buf *b, const char *var,
                                const char *key_expr)
{
    return buf_addf(b, "OPTIONAL MATCH (%s:" CYPHER_TOMBSTONE_LABEL
                       " {key: %s})\n", var, key_expr);
}

/* Node marker key: 'Label/' + key. */
static enum ns_err node_marker_match(struct buf *b, const char *var,
                                     const char *label, const char *key_expr)
{
    char expr[160];

    snprintf(expr, sizeof(expr), "'%s/' + %s", label, key_expr);
    return marker_match(b, var, expr);
}

/* Relationship marker key: 'TYPE/' + a + '->' + b. */
static enum ns_err link_marker_key(char *out, size_t out_size,
                                   const struct mapping_table *tbl)
{
    int n = snprintf(out, out_size, "'%s/' + row.a + '->' + row.b",
                     tbl->rel_type);
    return n > 0 && (size_t)n < out_size ? NS_OK : NS_ERR_SCHEMA;
}

/* Leave (or move forward) the marker of a deleted element: its position
 * and the source commit time, by which markers are pruned. */
static enum ns_err marker_write(struct buf *b, const char *key_expr)
{
    return buf_addf(b,
                    "MERGE (m:" CYPHER_TOMBSTONE_LABEL " {key: %s})\n"
                    "SET m += CASE WHEN m.lsn IS NULL OR [coalesce(m.ep, 0), "
                    "m.lsn] < " ROW_POS " THEN {lsn: row.lsn, ep: row.ep, "
                    "ts: row.ts} ELSE {} END",
                    key_expr);
}

/*
 * After MERGE (var): keep the element in w only when this change is not
 * older than what it reflects; gv is the stored pg_version, returned for
 * the warning about skipped changes whose version is newer. kept lists
 * variables to carry along (", tomb").
 */
static enum ns_err fresh_or_null(struct buf *b, const char *var,
                                 const char *carry, const char *marker)
{
    enum ns_err err = buf_addf(b, "WITH row, %s%s, %s.pgVersion AS gv, ", var,
                               carry, var);

    if (!err)
        err = fresh_guard(b, var);
    if (!err)
        err = buf_addf(b, " AS fresh\n"
                          "WITH row, gv, CASE WHEN fresh THEN %s END AS w, "
                          "CASE WHEN fresh THEN %s END AS %s\n",
                       var, marker, marker);
    return err;
}

static enum ns_err node_parents(const struct mapping *map,
                                const struct mapping_table *tbl, struct buf *b)
{
    enum ns_err err = NS_OK;

    for (size_t i = 0; !err && i < tbl->parent_count; i++) {
        const struct mapping_parent *par = &tbl->parents[i];
        const char *pkey = cypher_label_key(map, par->label);
        char key_expr[32];

        /* a moved row: drop the link to its former parent */
        err = buf_addf(b,
                       "WITH row, gv, w\n"
                       "CALL { WITH row, w\n"
                       "  OPTIONAL MATCH (old:%s)-[gone:%s]->(w)\n"
                       "  WHERE row.par[%zu] IS NULL OR old.%s <> row.par[%zu]\n"
                       "  DELETE gone }\n"
                       "WITH row, gv, w\n",
                       par->label, par->type, i, pkey, i);
        snprintf(key_expr, sizeof(key_expr), "row.par[%zu]", i);
        if (!err)
            err = node_marker_match(b, "ptomb", par->label, key_expr);
        if (!err)
            err = buf_addf(b,
                           "FOREACH (_ IN CASE WHEN w IS NULL OR "
                           "row.par[%zu] IS NULL OR NOT ",
                           i);
        if (!err)
            err = marker_older(b, "ptomb");
        if (!err)
            err = buf_addf(b,
                           " THEN [] ELSE [1] END |\n"
                           "  MERGE (p:%s {%s: row.par[%zu]})\n"
                           "  MERGE (p)-[pr:%s]->(w)\n"
                           "  SET pr.srcLsn = row.lsn, pr.srcEpoch = row.ep)\n",
                           par->label, pkey, i, par->type);
    }
    return err;
}

static enum ns_err node_upsert(const struct mapping *map,
                               const struct mapping_table *tbl,
                               uint64_t shape, struct buf *b)
{
    enum ns_err err;

    err = buf_adds(b, "UNWIND $rows AS row\n");
    if (!err)
        err = node_marker_match(b, "tomb", tbl->label, "row.k");
    if (!err)
        err = buf_adds(b, "WITH row, tomb WHERE ");
    if (!err)
        err = marker_older(b, "tomb");
    if (!err)
        err = buf_addf(b, "\nMERGE (n:%s {%s: row.k})\n", tbl->label,
                       tbl->key_property);
    if (!err)
        err = fresh_or_null(b, "n", ", tomb", "tomb");
    if (!err)
        err = set_props(b, tbl, shape, "w");
    if (!err)
        err = buf_adds(b, "DELETE tomb\n");
    if (!err)
        err = node_parents(map, tbl, b);
    if (!err)
        err = buf_adds(b, "WITH row, gv, w\n"
                          "RETURN row.k AS k, row.v AS v, elementId(w) AS eid, "
                          "gv");
    return err;
}

/*
 * A node delete removes the node's relationships at or before its own
 * position: the parent links of its own upserts, and links other workers
 * made before the delete. A relationship written after it (a link to the
 * re-created row, applied first by a worker that was ahead) stays, and the
 * node then stays too, as a bare placeholder (only its key) that the
 * re-create fills in; a relationship without a position (older versions)
 * goes.
 */
static enum ns_err node_delete(const struct mapping_table *tbl, struct buf *b)
{
    char key_expr[160];
    enum ns_err err;

    snprintf(key_expr, sizeof(key_expr), "'%s/' + row.k", tbl->label);
    err = buf_addf(b,
                   "UNWIND $rows AS row\n"
                   "OPTIONAL MATCH (n:%s {%s: row.k})\n"
                   "WITH row, n WHERE n IS NULL OR n.srcLsn IS NULL OR "
                   "[coalesce(n.srcEpoch, 0), n.srcLsn] <= " ROW_POS "\n"
                   "CALL { WITH row, n\n"
                   "  OPTIONAL MATCH (n)-[r]-()\n"
                   "  WITH r WHERE r IS NOT NULL AND (r.srcLsn IS NULL OR "
                   "[coalesce(r.srcEpoch, 0), r.srcLsn] <= " ROW_POS ")\n"
                   "  DELETE r }\n"
                   "CALL { WITH n\n"
                   "  OPTIONAL MATCH (n)-[rest]-()\n"
                   "  WITH n, count(rest) AS newer WHERE n IS NOT NULL\n"
                   "  FOREACH (_ IN CASE WHEN newer = 0 THEN [1] ELSE [] END |"
                   " DELETE n)\n"
                   "  FOREACH (_ IN CASE WHEN newer > 0 THEN [1] ELSE [] END |"
                   " SET n = {%s: n.%s}) }\n"
                   "WITH DISTINCT row\n",
                   tbl->label, tbl->key_property, tbl->key_property,
                   tbl->key_property);
    if (!err)
        err = marker_write(b, key_expr);
    return err;
}

/* UNWIND, the endpoints' and the relationship's own markers, then the two
 * endpoint MERGEs of a link row; leaves row, lm (the link's marker), a,
 * b. */
static enum ns_err link_endpoints(const struct mapping *map,
                                  const struct mapping_table *tbl,
                                  struct buf *b)
{
    char key_expr[160];
    enum ns_err err = buf_adds(b, "UNWIND $rows AS row\n");

    if (!err)
        err = node_marker_match(b, "ta", tbl->from.label, "row.a");
    if (!err)
        err = node_marker_match(b, "tb", tbl->to.label, "row.b");
    if (!err)
        err = link_marker_key(key_expr, sizeof(key_expr), tbl);
    if (!err)
        err = marker_match(b, "lm", key_expr);
    if (!err)
        err = buf_adds(b, "WITH row, lm WHERE ");
    if (!err)
        err = marker_older(b, "ta");
    if (!err)
        err = buf_adds(b, " AND ");
    if (!err)
        err = marker_older(b, "tb");
    if (!err)
        err = buf_adds(b, " AND ");
    if (!err)
        err = marker_older(b, "lm");
    if (!err)
        err = buf_addf(b,
                       "\nMERGE (a:%s {%s: row.a})\n"
                       "MERGE (b:%s {%s: row.b})\n",
                       tbl->from.label,
                       cypher_label_key(map, tbl->from.label), tbl->to.label,
                       cypher_label_key(map, tbl->to.label));
    return err;
}

static enum ns_err link_upsert(const struct mapping *map,
                               const struct mapping_table *tbl,
                               uint64_t shape, struct buf *b)
{
    enum ns_err err = link_endpoints(map, tbl, b);

    if (!err)
        err = buf_addf(b, "MERGE (a)-[r:%s]->(b)\n", tbl->rel_type);
    if (!err)
        err = fresh_or_null(b, "r", ", lm", "lm");
    if (!err)
        err = set_props(b, tbl, shape, "w");
    if (!err)
        err = buf_adds(b, "DELETE lm\n"
                          "RETURN row.a AS a, row.b AS b, row.v AS v, "
                          "elementId(w) AS eid, gv");
    return err;
}

/* The newest position in the history of (a)-[h]->(b): a version's close
 * or, while open, its start. NULL when there is no version. */
static enum ns_err latest_version(struct buf *b)
{
    return buf_adds(b, "max(CASE WHEN h IS NULL THEN null ELSE "
                       "[coalesce(h.closedEp, h.srcEpoch, 0), "
                       "coalesce(h.closedLsn, h.srcLsn)] END) AS latest\n"
                       "WHERE latest IS NULL OR latest < " ROW_POS "\n");
}

/* Versioned link: close the current version, open a new one, unless a
 * version or the pair's marker is at this or a later position (replay). */
static enum ns_err link_upsert_temporal(const struct mapping *map,
                                        const struct mapping_table *tbl,
                                        uint64_t shape, struct buf *b)
{
    enum ns_err err = link_endpoints(map, tbl, b);

    if (!err)
        err = buf_addf(b,
                       "WITH row, lm, a, b\n"
                       "OPTIONAL MATCH (a)-[h:%s]->(b)\n"
                       "WITH row, lm, a, b, ",
                       tbl->rel_type);
    if (!err)
        err = latest_version(b);
    if (!err)
        err = buf_addf(b,
                       "CALL { WITH row, a, b\n"
                       "  OPTIONAL MATCH (a)-[cur:%s]->(b) WHERE cur.validTo "
                       "IS NULL\n"
                       "  SET cur.validTo = datetime({epochMillis: row.ts}), "
                       "cur.closedLsn = row.lsn, cur.closedEp = row.ep }\n"
                       "CREATE (a)-[w:%s {validFrom: datetime({epochMillis: "
                       "row.ts})}]->(b)\n"
                       "DELETE lm\n",
                       tbl->rel_type, tbl->rel_type);
    if (!err)
        err = set_props(b, tbl, shape, "w");
    if (!err)
        err = buf_adds(b, "RETURN row.a AS a, row.b AS b, row.v AS v, "
                          "elementId(w) AS eid, null AS gv");
    return err;
}

static enum ns_err link_delete(const struct mapping *map,
                               const struct mapping_table *tbl, struct buf *b)
{
    char key_expr[160];
    enum ns_err err = link_marker_key(key_expr, sizeof(key_expr), tbl);

    if (!err)
        err = buf_addf(b,
                       "UNWIND $rows AS row\n"
                       "OPTIONAL MATCH (:%s {%s: row.a})-[h:%s]->"
                       "(:%s {%s: row.b})\n",
                       tbl->from.label, cypher_label_key(map, tbl->from.label),
                       tbl->rel_type, tbl->to.label,
                       cypher_label_key(map, tbl->to.label));
    if (err)
        return err;
    if (tbl->temporal) {
        /* close the open version; the history stays */
        err = buf_adds(b, "WITH row, collect(h) AS hs, ");
        if (!err)
            err = latest_version(b);
        if (!err)
            err = buf_adds(b, "FOREACH (cur IN [x IN hs WHERE x.validTo IS "
                              "NULL] | SET cur.validTo = datetime("
                              "{epochMillis: row.ts}), cur.closedLsn = "
                              "row.lsn, cur.closedEp = row.ep)\n");
    } else {
        err = buf_adds(b, "WITH row, h WHERE h IS NULL OR h.srcLsn IS NULL "
                          "OR [coalesce(h.srcEpoch, 0), h.srcLsn] <= "
                          ROW_POS "\nDELETE h\n");
    }
    if (!err)
        err = marker_write(b, key_expr);
    return err;
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
                                    ") REQUIRE t.key IS UNIQUE\n;\n"
                                    "CREATE INDEX nexus_tombstone_ts IF NOT "
                                    "EXISTS FOR (t:" CYPHER_TOMBSTONE_LABEL
                                    ") ON (t.ts)");

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
