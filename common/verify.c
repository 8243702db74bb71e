#include "verify.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "apply.h"
#include "buf.h"
#include "change.h"
#include "convert.h"
#include "cypher.h"

#if defined(__has_include) && __has_include(<libpq-fe.h>)
#include <libpq-fe.h>
#else
#include <postgresql/libpq-fe.h>
#endif

#define VERIFY_SQL_MAX (64u * 1024u)
#define VERIFY_CYPHER_MAX (64u * 1024u)
#define VERIFY_SHOW_MAX 200          /* characters of a value in a report */

/* Fixed columns of a PostgreSQL page before the properties. */
#define PG_NODE_FIXED 2              /* key, pg_version */
#define PG_LINK_FIXED 3              /* a, b, pg_version */

/* Columns of a Neo4j page row. */
enum { NEO_NODE_K = 0, NEO_NODE_LSN, NEO_NODE_V, NEO_NODE_PROPS,
       NEO_NODE_PARENTS };
enum { NEO_LINK_A = 0, NEO_LINK_B, NEO_LINK_EID, NEO_LINK_LSN, NEO_LINK_V,
       NEO_LINK_PROPS };

struct verify_example {
    const char *kind;     /* static: "missing", "extra", "mismatch", ... */
    char *key;            /* node key, or "a|b" for a link */
    char *property;       /* mismatch only */
    char *pg;             /* JSON text of the PostgreSQL-side value */
    char *neo4j;          /* JSON text of the graph-side value */
};

struct table_result {
    const struct mapping_table *tbl;
    struct verify_counts c;
    struct verify_example *ex;
    size_t ex_count;
};

struct verify {
    const struct mapping *map;
    PGconn *pg;
    struct neo4j_client *nc;
    struct verify_options opt;
    struct table_result *results;
    size_t result_count;
};

/* What a pending upsert still needs checked against the graph. */
enum pend_kind {
    PEND_SEEN = 0,        /* element exists: lsn/v already final */
    PEND_MISSING_NODE,    /* look up its tombstone first */
    PEND_TEMPORAL         /* look up the versions of the pair first */
};

struct pend_meta {
    enum pend_kind kind;
    int64_t snap_lsn;     /* PostgreSQL WAL position before the row's read */
    char eid[96];         /* PEND_TEMPORAL: the current version seen, or "" */
    int skip;             /* decided not to send */
};

/* Repairs waiting to be sent, at most about one page's worth. */
struct pending {
    struct change *changes;
    struct pend_meta *meta;
    size_t n;
    size_t cap;
    cJSON *node_deletes;      /* rows {k, lsn, ts} for the delete stmt */
    cJSON *rel_deletes;       /* rows {eid, lsn, ts} */
    cJSON **parent_deletes;   /* per parent: rows {eid} */
    size_t parent_count;
    int unsafe;               /* holds a temporal re-version of the pair at
                                 the end of the current graph page */
};

/* One page of PostgreSQL rows. */
struct pg_page {
    PGresult *res;
    int n;
    int i;
    int done;                 /* no page after this one */
    int started;
    char after[2][CHANGE_KEY_MAX];
    int64_t snap_lsn;
};

/* One page of graph rows. */
struct neo_page {
    cJSON *res;
    cJSON *cur;               /* current row array */
    int done;
    int started;
    size_t n;
    char after[3][CHANGE_KEY_MAX];
};

/* Everything one table run needs. */
struct run {
    struct verify *vf;
    const struct mapping_table *tbl;
    struct table_result *tr;
    struct buf sql_first;
    struct buf sql_next;
    struct buf cypher;
    struct pg_page pg;
    struct neo_page neo;
    struct pending pend;
    int64_t now_ms;
};

/* ---------------------------------------------------------------------- */
/* small helpers                                                          */

static int64_t verify_now_ms(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static char *verify_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Integer text to int64; -1 when it is not one. */
static int parse_int64(const char *s, int64_t *out)
{
    char *end;
    long long v;

    if (!s || !*s)
        return -1;
    v = strtoll(s, &end, 10);
    if (*end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int is_string_type(enum col_type t)
{
    return t == COL_UUID || t == COL_TEXT || t == COL_ENUM || t == COL_JSON;
}

static int is_temporal(enum col_type t)
{
    return t == COL_TIMESTAMPTZ || t == COL_TIMESTAMP;
}

/* JSON text of v, cut to VERIFY_SHOW_MAX characters (caller frees). */
static char *show_json(const cJSON *v)
{
    char *s = v ? cJSON_PrintUnformatted(v) : strdup("null");
    size_t len;

    if (!s)
        return NULL;
    len = strlen(s);
    if (len > VERIFY_SHOW_MAX) {
        size_t cut = VERIFY_SHOW_MAX - 3;

        /* never split a UTF-8 sequence: the report must stay valid */
        while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
            cut--;
        memcpy(s + cut, "...", 4);
    }
    return s;
}

/* The graph-side value for people: temporal epochs back as ISO text. */
static char *show_neo(const cJSON *v, enum col_type type)
{
    int64_t us;
    char iso[48];
    cJSON *tmp;
    char *s;

    if (is_temporal(type) && cJSON_IsString(v) &&
        parse_int64(v->valuestring, &us) == 0 &&
        convert_iso_from_micros(us, type == COL_TIMESTAMPTZ, iso, sizeof(iso)) == 0) {
        tmp = cJSON_CreateString(iso);
        s = show_json(tmp);
        cJSON_Delete(tmp);
        return s;
    }
    return show_json(v);
}

/* ---------------------------------------------------------------------- */
/* results                                                                */

static void example_free(struct verify_example *ex)
{
    free(ex->key);
    free(ex->property);
    free(ex->pg);
    free(ex->neo4j);
}

/* Keep an example while the table has fewer than limit_report. Values are
 * copied; ownership of pg/neo4j strings passes to the example. */
static enum ns_err example_add(struct run *run, const char *kind,
                               const char *k1, const char *k2,
                               const char *property, char *pg, char *neo4j)
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
        example_free(ex);
        return NS_ERR_NOMEM;
    }
    tr->ex_count++;
    return NS_OK;
}

/* ---------------------------------------------------------------------- */
/* PostgreSQL side                                                        */

static enum ns_err pg_fail(PGconn *pg, const char *what, char *errstr,
                           size_t errstr_size)
{
    ns_err_set(errstr, errstr_size, "could not %s: %s", what,
               PQerrorMessage(pg));
    return PQstatus(pg) == CONNECTION_OK ? NS_ERR_PG_PERMANENT
                                         : NS_ERR_PG_TRANSIENT;
}

/* The SQL expression that reads a column in the form pg_param() takes. */
static enum ns_err pg_column_expr(struct buf *b, const struct mapping_property *p)
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
        err = pg_fail(pg, "read the key column type", errstr, errstr_size);
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
static enum ns_err pg_build_sql(struct run *run, char *errstr,
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
        err = pg_fail(pg, "read the WAL position", errstr, errstr_size);
    else if (parse_int64(PQgetvalue(res, 0, 0), out) != 0) {
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
        return pg_fail(run->vf->pg, "read a page of rows", errstr,
                       errstr_size);
    pg->n = PQntuples(pg->res);
    pg->done = (size_t)pg->n < run->vf->opt.chunk;
    for (int i = 0; pg->n > 0 && i < nkeys; i++)
        snprintf(pg->after[i], sizeof(pg->after[i]), "%s",
                 PQgetvalue(pg->res, pg->n - 1, i));
    return NS_OK;
}

/* Non-zero when a row is current, fetching the next page when needed. */
static enum ns_err pg_page_has(struct run *run, int *has, char *errstr,
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

static const char *pg_val(const struct run *run, int col)
{
    if (PQgetisnull(run->pg.res, run->pg.i, col))
        return NULL;
    return PQgetvalue(run->pg.res, run->pg.i, col);
}

/*
 * A column read by pg_column_expr() as the parameter value a worker would
 * send for the same row: the text is first put in the form Debezium
 * writes (or one convert_value() accepts as such), then converted by
 * convert_value() itself. text NULL is SQL NULL. *out is owned by the
 * caller; NS_ERR_SCHEMA when the value cannot be converted (a worker
 * would send that event to the DLQ), reason in errstr.
 */
static enum ns_err pg_param(const char *text, const struct mapping_property *p,
                            cJSON **out, char *errstr, size_t errstr_size)
{
    cJSON *in = NULL;
    enum ns_err err;
    int64_t us;
    char iso[48];
    int scale = p->scale;

    *out = NULL;
    if (!text)
        return convert_value(NULL, p->type, scale, out, errstr, errstr_size);
    switch (p->type) {
    case COL_INT:
        in = cJSON_CreateNumber(strtod(text, NULL));
        break;
    case COL_FLOAT:
        if (strcmp(text, "NaN") == 0 || strcmp(text, "Infinity") == 0 ||
            strcmp(text, "-Infinity") == 0)
            in = cJSON_CreateString(text);
        else
            in = cJSON_CreateNumber(strtod(text, NULL));
        break;
    case COL_NUMERIC:
        /* a decimal string: with a known scale it could read as base64 */
        scale = -1;
        in = cJSON_CreateString(text);
        break;
    case COL_BOOL:
        in = cJSON_CreateBool(strcmp(text, "true") == 0 ||
                              strcmp(text, "t") == 0);
        break;
    case COL_TIMESTAMPTZ:
    case COL_TIMESTAMP:
        if (parse_int64(text, &us) == 0 &&
            convert_iso_from_micros(us, p->type == COL_TIMESTAMPTZ, iso,
                            sizeof(iso)) == 0)
            in = cJSON_CreateString(iso);
        else
            in = cJSON_CreateString(text);
        break;
    case COL_DATE:
        if (parse_int64(text, &us) == 0)
            in = cJSON_CreateNumber((double)us);
        else
            in = cJSON_CreateString(text);
        break;
    case COL_TEXT_ARRAY:
        in = cJSON_Parse(text);
        if (!in) {
            ns_err_set(errstr, errstr_size, "array is not valid JSON");
            return NS_ERR_SCHEMA;
        }
        break;
    default:
        in = cJSON_CreateString(text);
        break;
    }
    if (!in) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    err = convert_value(in, p->type, scale, out, errstr, errstr_size);
    cJSON_Delete(in);
    return err;
}

/* ---------------------------------------------------------------------- */
/* graph side                                                             */

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

static enum ns_err neo_build_cypher(struct run *run)
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
static enum ns_err neo_query(struct neo4j_client *nc, const char *cypher,
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

static const cJSON *neo_row(const cJSON *data_item)
{
    return cJSON_GetObjectItemCaseSensitive(data_item, "row");
}

static const char *neo_str(const cJSON *row, int i)
{
    const cJSON *v = cJSON_GetArrayItem(row, i);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* An integer column (srcLsn, pgVersion); -1 when absent. */
static int64_t neo_int(const cJSON *row, int i)
{
    const cJSON *v = cJSON_GetArrayItem(row, i);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : -1;
}

static enum ns_err flush_pending(struct run *run, char *errstr,
                                 size_t errstr_size);

static enum ns_err neo_page_fetch(struct run *run, char *errstr,
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
    err = neo_query(run->vf->nc, buf_str(&run->cypher), params, &np->res,
                    errstr, errstr_size);
    if (err)
        goto cleanup;
    np->started = 1;
    np->n = (size_t)cJSON_GetArraySize(np->res);
    np->done = np->n < run->vf->opt.chunk;
    np->cur = np->res->child;
    last = cJSON_GetArrayItem(np->res, (int)np->n - 1);
    if (last) {
        const cJSON *row = neo_row(last);
        int nk = run->tbl->kind == MAPPING_NODE ? 1 : 3;
        for (int i = 0; i < nk; i++) {
            const char *s = neo_str(row, i);
            snprintf(np->after[i], sizeof(np->after[i]), "%s", s ? s : "");
        }
    }
    /* Repairs held back for the pair at the end of the previous page can
     * go now: their new versions sort before this page's end. */
    err = flush_pending(run, errstr, errstr_size);

cleanup:
    cJSON_Delete(params);
    return err;
}

static enum ns_err neo_page_has(struct run *run, int *has, char *errstr,
                                size_t errstr_size)
{
    struct neo_page *np = &run->neo;
    enum ns_err err;

    if (!np->started || (!np->cur && !np->done)) {
        err = neo_page_fetch(run, errstr, errstr_size);
        if (err)
            return err;
    }
    *has = np->cur != NULL;
    return NS_OK;
}

/* Non-zero when the current graph row is the last of its page. */
static int neo_at_page_end(const struct run *run)
{
    return run->neo.cur && !run->neo.cur->next;
}

/* ---------------------------------------------------------------------- */
/* comparison                                                             */

/* Equal when the stored value is what the worker would have written. */
static int value_equal(const struct mapping_property *p, const char *pg_text,
                       const cJSON *param, const cJSON *neo)
{
    if (cJSON_IsObject(neo))
        return 0; /* a stored value of another type */
    if (cJSON_IsNull(param) || !neo || cJSON_IsNull(neo))
        return cJSON_IsNull(param) && (!neo || cJSON_IsNull(neo));
    if (is_temporal(p->type))
        return cJSON_IsString(neo) && pg_text &&
               strcmp(neo->valuestring, pg_text) == 0;
    if (is_string_type(p->type) || p->type == COL_DATE) {
        cJSON *ja, *jb;
        int same;

        if (!cJSON_IsString(neo) || !cJSON_IsString(param))
            return 0;
        if (strcmp(neo->valuestring, param->valuestring) == 0)
            return 1;
        if (p->type != COL_JSON)
            return 0;
        /* same document written another way (json keeps the text) */
        ja = cJSON_Parse(neo->valuestring);
        jb = cJSON_Parse(param->valuestring);
        same = ja && jb && cJSON_Compare(ja, jb, 1);
        cJSON_Delete(ja);
        cJSON_Delete(jb);
        return same;
    }
    if (p->type == COL_BOOL)
        return cJSON_IsBool(neo) && cJSON_IsTrue(neo) == cJSON_IsTrue(param);
    if (p->type == COL_TEXT_ARRAY)
        return cJSON_IsArray(neo) && cJSON_Compare(neo, param, 1);
    return cJSON_IsNumber(neo) && cJSON_IsNumber(param) &&
           neo->valuedouble == param->valuedouble;
}

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
        const char *text = pg_val(run, first_col + (int)i);
        cJSON *param = NULL;
        char why[256];
        enum ns_err cerr = pg_param(text, p, &param, why, sizeof(why));

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
                err = example_add(run, "mismatch", k1, k2, p->property,
                                  show_json(tmp), show_neo(gv, p->type));
                cJSON_Delete(tmp);
                if (err)
                    goto cleanup;
            }
        } else {
            if (graph && !value_equal(p, text, param, gv)) {
                (*off)++;
                err = example_add(run, "mismatch", k1, k2, p->property,
                                  show_json(param), show_neo(gv, p->type));
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

/* ---------------------------------------------------------------------- */
/* pending repairs                                                        */

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

static void pending_free(struct pending *pend)
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

static enum ns_err pending_init(struct pending *pend, size_t cap,
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
static enum ns_err pending_upsert(struct run *run, const char *k1,
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
            const char *text = pg_val(run, PG_NODE_FIXED +
                                      (int)tbl->prop_count + (int)i);
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
static enum ns_err pending_delete(struct run *run, cJSON *list,
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
    err = neo_query(run->vf->nc, cypher, params, &rows, errstr, errstr_size);
    if (err)
        goto cleanup;
    cJSON_ArrayForEach(item, rows) {
        const cJSON *row = neo_row(item);
        int64_t i = neo_int(row, 0), tomb = neo_int(row, 1);
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
        err = neo_query(run->vf->nc, buf_str(&cypher), params, &rows, errstr,
                        errstr_size);
    if (err)
        goto cleanup;
    cJSON_ArrayForEach(item, rows) {
        const cJSON *row = neo_row(item);
        int64_t i = neo_int(row, 0), latest = neo_int(row, 1);
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
            const char *eid = neo_str(only, 0);
            ok = cJSON_GetArraySize(cur) == 1 && eid &&
                 strcmp(eid, meta->eid) == 0 &&
                 neo_int(only, 1) <= ch->version;
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
    err = neo_query(run->vf->nc, cypher, params, &res, errstr, errstr_size);
    if (!err)
        *count += counted ? (uint64_t)cJSON_GetArraySize(res) : n;
    cJSON_Delete(res);
    cJSON_Delete(params);
    return err;
}

static enum ns_err flush_pending(struct run *run, char *errstr,
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
static enum ns_err maybe_flush(struct run *run, char *errstr,
                               size_t errstr_size)
{
    if (pending_size(&run->pend) < run->vf->opt.chunk || run->pend.unsafe)
        return NS_OK;
    return flush_pending(run, errstr, errstr_size);
}

/* ---------------------------------------------------------------------- */
/* merge-joins                                                            */

static int64_t pg_version_of(const struct run *run, int col)
{
    int64_t v = 0;
    const char *s = pg_val(run, col);

    if (s && parse_int64(s, &v) == 0)
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
    err = example_add(run, "missing", k1, k2, NULL, NULL, NULL);
    if (!err && run->vf->opt.repair)
        err = row_props(run, fixed, NULL, k1, k2, &props, &off);
    if (err || !run->vf->opt.repair)
        return err;
    if (!props) {
        run->tr->c.repair_skipped++;
        return NS_OK;
    }
    err = pending_upsert(run, k1, k2, props, 0, pg_version_of(run, fixed - 1),
                         node ? PEND_MISSING_NODE
                              : run->tbl->temporal ? PEND_TEMPORAL : PEND_SEEN,
                         NULL);
    if (!err)
        err = maybe_flush(run, errstr, errstr_size);
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
        err = example_add(run, "extra", neo_str(row, NEO_NODE_K), NULL, NULL,
                          NULL, NULL);
    else
        err = example_add(run, "extra", neo_str(row, NEO_LINK_A),
                          neo_str(row, NEO_LINK_B), NULL, NULL, NULL);
    if (err || !run->vf->opt.repair)
        return err;
    if (node)
        err = pending_delete(run, run->pend.node_deletes, "k",
                             neo_str(row, NEO_NODE_K),
                             neo_int(row, NEO_NODE_LSN));
    else
        err = pending_delete(run, run->pend.rel_deletes, "eid",
                             neo_str(row, NEO_LINK_EID),
                             neo_int(row, NEO_LINK_LSN));
    if (!err)
        err = maybe_flush(run, errstr, errstr_size);
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
        const char *want = pg_val(run, PG_NODE_FIXED + (int)tbl->prop_count +
                                           (int)i);
        const cJSON *edge;
        int found = 0;

        cJSON_ArrayForEach(edge, per) {
            const char *pk = neo_str(edge, 0);
            if (want && pk && !found && strcmp(pk, want) == 0) {
                found = 1;
                continue;
            }
            run->tr->c.parent_extra++;
            err = example_add(run, "parent_extra", k, NULL,
                              tbl->parents[i].type,
                              show_json(cJSON_GetArrayItem(edge, 0)), NULL);
            if (!err && run->vf->opt.repair)
                err = pending_delete(run, run->pend.parent_deletes[i], "eid",
                                     neo_str(edge, 1), 0);
            if (err)
                break;
        }
        if (!err && want && !found) {
            cJSON *tmp = cJSON_CreateString(want);
            run->tr->c.parent_missing++;
            *need_upsert = 1;
            err = example_add(run, "parent_missing", k, NULL,
                              tbl->parents[i].type, show_json(tmp), NULL);
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
    int64_t lsn = neo_int(row, node ? NEO_NODE_LSN : NEO_LINK_LSN);
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
    if (!node && run->tbl->temporal && neo_at_page_end(run))
        run->pend.unsafe = 1;
    err = pending_upsert(run, k1, k2, props, lsn < 0 ? 0 : lsn,
                         pg_version_of(run, fixed - 1),
                         !node && run->tbl->temporal ? PEND_TEMPORAL
                                                     : PEND_SEEN,
                         node ? NULL : neo_str(row, NEO_LINK_EID));
    props = NULL;
    if (!err)
        err = maybe_flush(run, errstr, errstr_size);

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
        g1 = neo_str(row, NEO_NODE_K);
        return strcmp(pg_val(run, 0), g1 ? g1 : "");
    }
    g1 = neo_str(row, NEO_LINK_A);
    g2 = neo_str(row, NEO_LINK_B);
    c = strcmp(pg_val(run, 0), g1 ? g1 : "");
    return c ? c : strcmp(pg_val(run, 1), g2 ? g2 : "");
}

static enum ns_err merge_join(struct run *run, char *errstr,
                              size_t errstr_size)
{
    int node = run->tbl->kind == MAPPING_NODE;
    enum ns_err err = NS_OK;

    for (;;) {
        int has_pg, has_neo, c;
        const cJSON *row;
        char k1[CHANGE_KEY_MAX], k2[CHANGE_KEY_MAX];

        err = pg_page_has(run, &has_pg, errstr, errstr_size);
        if (!err)
            err = neo_page_has(run, &has_neo, errstr, errstr_size);
        if (err || (!has_pg && !has_neo))
            break;
        row = has_neo ? neo_row(run->neo.cur) : NULL;
        if (has_pg) {
            snprintf(k1, sizeof(k1), "%s", pg_val(run, 0));
            snprintf(k2, sizeof(k2), "%s", node ? "" : pg_val(run, 1));
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
        err = flush_pending(run, errstr, errstr_size);
    return err;
}

/* ---------------------------------------------------------------------- */
/* public                                                                 */

enum ns_err verify_new(const struct mapping *map, const char *pg_conninfo,
                       struct neo4j_client *nc,
                       const struct verify_options *opt, struct verify **out,
                       char *errstr, size_t errstr_size)
{
    struct verify *vf = NULL;
    PGresult *res = NULL;
    enum ns_err err = NS_OK;

    *out = NULL;
    if (opt->chunk == 0) {
        ns_err_set(errstr, errstr_size, "chunk must be at least 1");
        return NS_ERR_CONFIG;
    }
    vf = calloc(1, sizeof(*vf));
    if (!vf)
        return NS_ERR_NOMEM;
    vf->map = map;
    vf->nc = nc;
    vf->opt = *opt;
    vf->pg = PQconnectdb(pg_conninfo);
    if (!vf->pg || PQstatus(vf->pg) != CONNECTION_OK) {
        ns_err_set(errstr, errstr_size, "could not connect to PostgreSQL: %s",
                   vf->pg ? PQerrorMessage(vf->pg) : "out of memory");
        err = NS_ERR_PG_TRANSIENT;
        goto cleanup;
    }
    /* Values read in one fixed form, whatever the role's defaults. */
    res = PQexec(vf->pg, "SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO'; "
                         "SET extra_float_digits TO 1");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        err = pg_fail(vf->pg, "set up the session", errstr, errstr_size);
        goto cleanup;
    }

cleanup:
    PQclear(res);
    if (err) {
        verify_free(vf);
        return err;
    }
    *out = vf;
    return NS_OK;
}

void verify_free(struct verify *vf)
{
    if (!vf)
        return;
    for (size_t i = 0; i < vf->result_count; i++) {
        for (size_t j = 0; j < vf->results[i].ex_count; j++)
            example_free(&vf->results[i].ex[j]);
        free(vf->results[i].ex);
    }
    free(vf->results);
    if (vf->pg)
        PQfinish(vf->pg);
    free(vf);
}

enum ns_err verify_table_run(struct verify *vf,
                             const struct mapping_table *tbl, char *errstr,
                             size_t errstr_size)
{
    struct table_result *grown;
    struct run run;
    enum ns_err err;

    if (tbl->kind == MAPPING_NONE) {
        ns_err_set(errstr, errstr_size, "table %s has no graph element",
                   tbl->table);
        return NS_ERR_CONFIG;
    }
    grown = realloc(vf->results, (vf->result_count + 1) * sizeof(*grown));
    if (!grown)
        return NS_ERR_NOMEM;
    vf->results = grown;
    memset(&vf->results[vf->result_count], 0, sizeof(*grown));
    vf->results[vf->result_count].tbl = tbl;
    vf->results[vf->result_count].ex =
        calloc(vf->opt.limit_report ? vf->opt.limit_report : 1,
               sizeof(struct verify_example));
    if (!vf->results[vf->result_count].ex)
        return NS_ERR_NOMEM;

    memset(&run, 0, sizeof(run));
    run.vf = vf;
    run.tbl = tbl;
    run.tr = &vf->results[vf->result_count++];
    run.now_ms = verify_now_ms();
    buf_init(&run.sql_first, VERIFY_SQL_MAX);
    buf_init(&run.sql_next, VERIFY_SQL_MAX);
    buf_init(&run.cypher, VERIFY_CYPHER_MAX);
    /* room for a page's worth plus what one step can add before the
     * flush check: the cap is never reached in practice */
    err = pending_init(&run.pend, vf->opt.chunk * 2 + 2,
                       tbl->kind == MAPPING_NODE ? tbl->parent_count : 0);
    if (err) {
        ns_err_set(errstr, errstr_size, "out of memory");
        goto cleanup;
    }
    err = pg_build_sql(&run, errstr, errstr_size);
    if (!err && neo_build_cypher(&run) != NS_OK) {
        ns_err_set(errstr, errstr_size, "could not build the Cypher of %s",
                   tbl->table);
        err = NS_ERR_LIMIT;
    }
    if (!err)
        err = merge_join(&run, errstr, errstr_size);

cleanup:
    PQclear(run.pg.res);
    cJSON_Delete(run.neo.res);
    pending_free(&run.pend);
    buf_free(&run.sql_first);
    buf_free(&run.sql_next);
    buf_free(&run.cypher);
    return err;
}

static uint64_t counts_divergences(const struct verify_counts *c)
{
    return c->missing + c->extra + c->mismatched + c->parent_missing +
           c->parent_extra;
}

uint64_t verify_divergences(const struct verify *vf)
{
    uint64_t n = 0;

    for (size_t i = 0; i < vf->result_count; i++)
        n += counts_divergences(&vf->results[i].c);
    return n;
}

const struct verify_counts *verify_table_counts(const struct verify *vf,
                                                size_t table_index,
                                                const char **table_name)
{
    if (table_index >= vf->result_count)
        return NULL;
    if (table_name)
        *table_name = vf->results[table_index].tbl->table;
    return &vf->results[table_index].c;
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
             add_count(obj, "divergences", counts_divergences(c));

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
