#include "verify_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "verify_run.h"
#include "verify_value.h"

enum ns_err verify_pg_fail(PGconn *pg, const char *what, char *errstr,
                           size_t errstr_size)
{
    ns_err_set(errstr, errstr_size, "could not %s: %s", what,
               PQerrorMessage(pg));
    return PQstatus(pg) == CONNECTION_OK ? NS_ERR_PG_PERMANENT
                                         : NS_ERR_PG_TRANSIENT;
}

/* The SQL expression that reads a column in the form verify_value_param()
 * takes. */
static enum ns_err pg_column_expr(struct buf *b,
                                  const struct mapping_property *p)
{
    switch (p->type) {
    case COL_TIMESTAMPTZ:
    case COL_TIMESTAMP:
        return buf_addf(b, "CASE WHEN isfinite(\"%1$s\") THEN (extract(epoch "
                           "FROM \"%1$s\") * 1000000)::bigint::text ELSE "
                           "\"%1$s\"::text END", p->column);
    case COL_DATE:
        return buf_addf(b, "CASE WHEN isfinite(\"%1$s\") THEN (\"%1$s\" - "
                           "DATE '1970-01-01')::text ELSE \"%1$s\"::text END",
                        p->column);
    case COL_TEXT_ARRAY:
        return buf_addf(b, "array_to_json(\"%s\")::text", p->column);
    default:
        return buf_addf(b, "\"%s\"::text", p->column);
    }
}

/* Non-zero when column of schema.table is a uuid (byte order = text order
 * of its lower-case form, and its index serves the ORDER BY). */
static enum ns_err pg_column_is_uuid(PGconn *pg, const char *schema,
                                     const char *table, const char *column,
                                     int *is_uuid, char *errstr,
                                     size_t errstr_size)
{
    char rel[256];
    const char *params[2];
    PGresult *res;
    enum ns_err err = NS_OK;

    snprintf(rel, sizeof(rel), "\"%s\".\"%s\"", schema, table);
    params[0] = rel;
    params[1] = column;
    res = PQexecParams(pg,
                       "SELECT atttypid = 'uuid'::regtype FROM pg_attribute "
                       "WHERE attrelid = $1::regclass AND attname = $2 "
                       "AND NOT attisdropped",
                       2, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        err = verify_pg_fail(pg, "read the key column type", errstr,
                             errstr_size);
    } else if (PQntuples(res) != 1) {
        ns_err_set(errstr, errstr_size, "column %s.%s does not exist", table,
                   column);
        err = NS_ERR_CONFIG;
    } else {
        *is_uuid = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    }
    PQclear(res);
    return err;
}

/* Key expression, ordering and comparison for one key column. */
static enum ns_err pg_key_expr(struct buf *b, const char *column, int is_uuid)
{
    if (is_uuid)
        return buf_addf(b, "\"%s\"", column);
    return buf_addf(b, "\"%s\"::text COLLATE \"C\"", column);
}

/*
 * The page queries of a table: sql_first has no lower bound, sql_next
 * starts after $1 (node) or ($1, $2) (link); both end in LIMIT $n.
 */
enum ns_err verify_pg_build_sql(struct run *run, char *errstr,
                                size_t errstr_size)
{
    const struct mapping *map = run->vf->map;
    const struct mapping_table *tbl = run->tbl;
    const char *kcol[2];
    int nkeys = tbl->kind == MAPPING_NODE ? 1 : 2, is_uuid[2] = {0, 0};
    enum ns_err err = NS_OK;
    struct buf cols, order, cond;

    if (tbl->kind == MAPPING_NODE) {
        kcol[0] = tbl->key_column;
    } else {
        kcol[0] = tbl->from.column;
        kcol[1] = tbl->to.column;
    }
    for (int i = 0; i < nkeys && !err; i++)
        err = pg_column_is_uuid(run->vf->pg, map->pg_schema, tbl->table,
                                kcol[i], &is_uuid[i], errstr, errstr_size);
    if (err)
        return err;

    buf_init(&cols, VERIFY_SQL_MAX);
    buf_init(&order, VERIFY_SQL_MAX);
    buf_init(&cond, VERIFY_SQL_MAX);
    for (int i = 0; i < nkeys && !err; i++)
        err = buf_addf(&cols, "%s\"%s\"::text", i ? ", " : "", kcol[i]);
    if (!err)
        err = buf_addf(&cols, ", \"%s\"::text", map->sync.version);
    for (size_t i = 0; i < tbl->prop_count && !err; i++) {
        err = buf_adds(&cols, ", ");
        if (!err)
            err = pg_column_expr(&cols, &tbl->props[i]);
    }
    for (size_t i = 0; tbl->kind == MAPPING_NODE && i < tbl->parent_count &&
                       !err; i++)
        err = buf_addf(&cols, ", \"%s\"::text", tbl->parents[i].column);
    for (int i = 0; i < nkeys && !err; i++) {
        err = buf_adds(&order, i ? ", " : "");
        if (!err)
            err = pg_key_expr(&order, kcol[i], is_uuid[i]);
    }
    if (!err)
        err = buf_adds(&cond, "(");
    if (!err)
        err = buf_adds(&cond, buf_str(&order));
    if (!err && nkeys == 1)
        err = buf_addf(&cond, ") > ($1%s)", is_uuid[0] ? "::uuid" : "");
    if (!err && nkeys == 2)
        err = buf_addf(&cond, ") > ($1%s, $2%s)",
                       is_uuid[0] ? "::uuid" : "", is_uuid[1] ? "::uuid" : "");
    if (!err)
        err = buf_addf(&run->sql_first,
                       "SELECT %s FROM \"%s\".\"%s\" ORDER BY %s LIMIT $1",
                       buf_str(&cols), map->pg_schema, tbl->table,
                       buf_str(&order));
    if (!err)
        err = buf_addf(&run->sql_next,
                       "SELECT %s FROM \"%s\".\"%s\" WHERE %s ORDER BY %s "
                       "LIMIT $%d",
                       buf_str(&cols), map->pg_schema, tbl->table,
                       buf_str(&cond), buf_str(&order), nkeys + 1);
    if (err)
        ns_err_set(errstr, errstr_size, "could not build the SQL of %s: %s",
                   tbl->table, ns_err_str(err));
    buf_free(&cols);
    buf_free(&order);
    buf_free(&cond);
    return err;
}

/* The current WAL position: every commit before it is visible to the
 * next statement, so a graph state older than it predates our read. */
static enum ns_err pg_wal_lsn(PGconn *pg, int64_t *out, char *errstr,
                              size_t errstr_size)
{
    PGresult *res = PQexec(pg, "SELECT (pg_current_wal_lsn() - '0/0')"
                               "::bigint::text");
    enum ns_err err = NS_OK;

    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        err = verify_pg_fail(pg, "read the WAL position", errstr, errstr_size);
    else if (verify_value_parse_int64(PQgetvalue(res, 0, 0), out) != 0) {
        ns_err_set(errstr, errstr_size, "unexpected WAL position");
        err = NS_ERR_PG_PERMANENT;
    }
    PQclear(res);
    return err;
}

static enum ns_err pg_page_fetch(struct run *run, char *errstr,
                                 size_t errstr_size)
{
    struct pg_page *pg = &run->pg;
    int nkeys = run->tbl->kind == MAPPING_NODE ? 1 : 2;
    char limit[32];
    const char *params[3];
    int nparams = 0;
    enum ns_err err;

    PQclear(pg->res);
    pg->res = NULL;
    pg->n = pg->i = 0;
    err = pg_wal_lsn(run->vf->pg, &pg->snap_lsn, errstr, errstr_size);
    if (err)
        return err;
    snprintf(limit, sizeof(limit), "%zu", run->vf->opt.chunk);
    if (pg->started)
        for (int i = 0; i < nkeys; i++)
            params[nparams++] = pg->after[i];
    params[nparams++] = limit;
    pg->res = PQexecParams(run->vf->pg,
                           buf_str(pg->started ? &run->sql_next
                                               : &run->sql_first),
                           nparams, NULL, params, NULL, NULL, 0);
    pg->started = 1;
    if (PQresultStatus(pg->res) != PGRES_TUPLES_OK)
        return verify_pg_fail(run->vf->pg, "read a page of rows", errstr,
                              errstr_size);
    pg->n = PQntuples(pg->res);
    pg->done = (size_t)pg->n < run->vf->opt.chunk;
    for (int i = 0; pg->n > 0 && i < nkeys; i++)
        snprintf(pg->after[i], sizeof(pg->after[i]), "%s",
                 PQgetvalue(pg->res, pg->n - 1, i));
    return NS_OK;
}

/* Non-zero when a row is current, fetching the next page when needed. */
enum ns_err verify_pg_page_has(struct run *run, int *has, char *errstr,
                               size_t errstr_size)
{
    struct pg_page *pg = &run->pg;
    enum ns_err err;

    if (!pg->started || (pg->i >= pg->n && !pg->done)) {
        err = pg_page_fetch(run, errstr, errstr_size);
        if (err)
            return err;
    }
    *has = pg->i < pg->n;
    return NS_OK;
}

const char *verify_pg_val(const struct run *run, int col)
{
    if (PQgetisnull(run->pg.res, run->pg.i, col))
        return NULL;
    return PQgetvalue(run->pg.res, run->pg.i, col);
}
