/*
 * pgstatus_sql.c - the SQL text and array parameters of the sync_status
 * write-back (contracts in pgstatus_sql.h). Pure: builds into the caller's
 * buffers and checks rows; pgstatus.c sends what is built here.
 */
#include "pgstatus_sql.h"

#include <string.h>

/* last_sync_error keeps at most this many bytes of a reason. */
#define PG_STATUS_SQL_ERROR_MAX 2000u

static const char *pg_status_sql_id_column(const struct mapping_table *tbl)
{
    return tbl->node_id_column ? tbl->node_id_column : tbl->rel_id_column;
}

/*
 * Length of the valid UTF-8 sequence at p, 0 when p starts an invalid one
 * (overlong, surrogate, past U+10FFFF, cut short). Never reads past a NUL.
 */
static size_t pg_status_sql_utf8_len(const unsigned char *p)
{
    unsigned char c = p[0];

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if ((p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xE0 && p[1] < 0xA0) || (c == 0xED && p[1] > 0x9F))
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if ((p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 ||
            (p[3] & 0xC0) != 0x80)
            return 0;
        if ((c == 0xF0 && p[1] < 0x90) || (c == 0xF4 && p[1] > 0x8F))
            return 0;
        return 4;
    }
    return 0;
}

/*
 * Append one element to a PostgreSQL array literal under construction
 * ("{" already there). NULL becomes the bare NULL; any other value is
 * double-quoted with '"' and '\' backslash-escaped, so commas, braces,
 * blanks and the word NULL stay data. Invalid UTF-8 bytes become '?' (the
 * server would reject the whole array, and with it the batch), and the
 * value is cut after max bytes on a character boundary, marked by "...".
 */
static enum ns_err pg_status_sql_array_add(struct buf *b, const char *s,
                                           size_t max)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t used = 0;
    enum ns_err err;

    if (b->len > 1) {
        err = buf_add(b, ",", 1);
        if (err)
            return err;
    }
    if (!s)
        return buf_adds(b, "NULL");
    err = buf_add(b, "\"", 1);
    while (!err && *p) {
        size_t len = pg_status_sql_utf8_len(p);

        if (used + (len ? len : 1) > max) {
            err = buf_adds(b, "...");
            break;
        }
        if (len == 0) {
            err = buf_add(b, "?", 1);
            len = 1;
        } else if (*p == '"' || *p == '\\') {
            err = buf_add(b, "\\", 1);
            if (!err)
                err = buf_add(b, p, 1);
        } else {
            err = buf_add(b, p, len);
        }
        p += len;
        used += len;
    }
    if (!err)
        err = buf_add(b, "\"", 1);
    return err;
}

static enum ns_err pg_status_sql_array_add_int(struct buf *b, int64_t v)
{
    return buf_addf(b, "%s%lld", b->len > 1 ? "," : "", (long long)v);
}

/*
 * Whether s is uuid input PostgreSQL accepts (uuid_in): 32 hex digits,
 * optionally between braces, with a '-' allowed after any group of four.
 */
static int pg_status_sql_uuid_ok(const char *s)
{
    static const char hex[] = "0123456789abcdefABCDEF";
    int braces = *s == '{';

    if (braces)
        s++;
    for (int i = 0; i < 16; i++) {
        if (!s[0] || !s[1] || !strchr(hex, s[0]) || !strchr(hex, s[1]))
            return 0;
        s += 2;
        if (*s == '-' && i % 2 == 1 && i < 15)
            s++;
    }
    if (braces && *s++ != '}')
        return 0;
    return *s == '\0';
}

/* Contract in pgstatus_sql.h. */
int pg_status_sql_row_fits(const struct pg_status_row *row)
{
    for (size_t k = 0; k < row->tbl->key_count; k++)
        if (!pg_status_sql_uuid_ok(row->keys[k]))
            return 0;
    return 1;
}

/* Contract in pgstatus_sql.h. */
void pg_status_sql_key_text(const char *key, char *out, size_t out_size)
{
    size_t i = 0;

    for (; key[i] && i + 1 < out_size; i++)
        out[i] = key[i] >= 0x20 && key[i] < 0x7f ? key[i] : '?';
    out[i] = '\0';
}

static int pg_status_sql_in_pass(const struct pg_status_row *row,
                                 enum pg_status_sql_pass pass)
{
    int has_id = pg_status_sql_id_column(row->tbl) != NULL &&
                 row->element_id != NULL;

    switch (pass) {
    case PG_STATUS_SQL_PASS_FAILED:
        return row->outcome == PG_STATUS_FAILED;
    case PG_STATUS_SQL_PASS_SUCCESS_ID:
        return row->outcome == PG_STATUS_SUCCESS && has_id;
    case PG_STATUS_SQL_PASS_SUCCESS:
        return row->outcome == PG_STATUS_SUCCESS && !has_id;
    case PG_STATUS_SQL_PASS__COUNT:
        break;
    }
    return 0;
}

/*
 * Contract in pgstatus_sql.h. Keys are joined as uuid, the columns of the
 * sync block and the id column come from the mapping (checked identifiers,
 * quoted):
 *   UPDATE "s"."t" AS t SET ... FROM unnest($1::uuid[], ..) AS u(k0, ..)
 *   WHERE t."key0" = u.k0 ... [AND t."pg_version" = u.ver]
 */
enum ns_err pg_status_sql_build(struct buf *sql, const struct mapping *map,
                                const struct mapping_table *tbl,
                                enum pg_status_sql_pass pass, int *nparams)
{
    const struct mapping_sync *sync = &map->sync;
    struct buf *b = sql;
    size_t nk = tbl->key_count;
    int np = (int)nk;
    enum ns_err err;

    buf_reset(b);
    err = buf_addf(b, "UPDATE \"%s\".\"%s\" AS t SET ", map->pg_schema,
                   tbl->table);
    if (!err && pass == PG_STATUS_SQL_PASS_FAILED)
        err = buf_addf(b, "\"%s\" = 'FAILED', \"%s\" = t.\"%s\" + 1, "
                       "\"%s\" = u.err", sync->status, sync->attempts,
                       sync->attempts, sync->error);
    else if (!err)
        err = buf_addf(b, "\"%s\" = 'SUCCESS', \"%s\" = now(), "
                       "\"%s\" = NULL", sync->status, sync->timestamp,
                       sync->error);
    if (!err && pass == PG_STATUS_SQL_PASS_SUCCESS_ID)
        err = buf_addf(b, ", \"%s\" = u.eid", pg_status_sql_id_column(tbl));
    if (!err)
        err = buf_adds(b, " FROM unnest(");
    for (size_t k = 0; !err && k < nk; k++)
        err = buf_addf(b, "$%zu::uuid[], ", k + 1);
    if (!err && pass == PG_STATUS_SQL_PASS_FAILED) {
        err = buf_addf(b, "$%d::text[]", ++np);
    } else if (!err) {
        err = buf_addf(b, "$%d::bigint[]", ++np);
        if (!err && pass == PG_STATUS_SQL_PASS_SUCCESS_ID)
            err = buf_addf(b, ", $%d::text[]", ++np);
    }
    if (!err)
        err = buf_adds(b, ") AS u(");
    for (size_t k = 0; !err && k < nk; k++)
        err = buf_addf(b, "k%zu, ", k);
    if (!err)
        err = buf_adds(b, pass == PG_STATUS_SQL_PASS_FAILED ? "err" :
                       pass == PG_STATUS_SQL_PASS_SUCCESS_ID ? "ver, eid" :
                       "ver");
    if (!err)
        err = buf_adds(b, ") WHERE ");
    for (size_t k = 0; !err && k < nk; k++)
        err = buf_addf(b, "%st.\"%s\" = u.k%zu", k ? " AND " : "",
                       tbl->key_columns[k], k);
    if (!err && pass != PG_STATUS_SQL_PASS_FAILED)
        err = buf_addf(b, " AND t.\"%s\" = u.ver", sync->version);
    /* A row already marked SUCCESS for this version (a replay, a retried
     * batch) is left alone: no write, no WAL, no echo event to consume. */
    if (!err && pass != PG_STATUS_SQL_PASS_FAILED)
        err = buf_addf(b, " AND (t.\"%s\" IS DISTINCT FROM 'SUCCESS' OR "
                       "t.\"%s\" IS NOT NULL", sync->status, sync->error);
    if (!err && pass == PG_STATUS_SQL_PASS_SUCCESS_ID)
        err = buf_addf(b, " OR t.\"%s\" IS DISTINCT FROM u.eid",
                       pg_status_sql_id_column(tbl));
    if (!err && pass != PG_STATUS_SQL_PASS_FAILED)
        err = buf_adds(b, ")");
    *nparams = np;
    return err;
}

/* Contract in pgstatus_sql.h. */
enum ns_err pg_status_sql_arrays(struct buf arr[PG_STATUS_SQL_PARAMS],
                                 const struct pg_status_row *rows, size_t n,
                                 const struct mapping_table *tbl,
                                 enum pg_status_sql_pass pass, size_t *count)
{
    size_t nk = tbl->key_count;
    enum ns_err err = NS_OK;

    *count = 0;
    for (size_t i = 0; i < PG_STATUS_SQL_PARAMS; i++) {
        buf_reset(&arr[i]);
        err = buf_add(&arr[i], "{", 1);
        if (err)
            return err;
    }
    for (size_t i = 0; !err && i < n; i++) {
        const struct pg_status_row *row = &rows[i];

        if (row->tbl != tbl || !pg_status_sql_in_pass(row, pass) ||
            !pg_status_sql_row_fits(row))
            continue;
        for (size_t k = 0; !err && k < nk; k++)
            err = pg_status_sql_array_add(&arr[k], row->keys[k],
                                          PG_STATUS_SQL_ARRAY_MAX);
        if (!err && pass == PG_STATUS_SQL_PASS_FAILED)
            err = pg_status_sql_array_add(&arr[nk], row->error,
                                          PG_STATUS_SQL_ERROR_MAX);
        else if (!err)
            err = pg_status_sql_array_add_int(&arr[nk], row->version);
        if (!err && pass == PG_STATUS_SQL_PASS_SUCCESS_ID)
            err = pg_status_sql_array_add(&arr[nk + 1], row->element_id,
                                          PG_STATUS_SQL_ARRAY_MAX);
        (*count)++;
    }
    for (size_t i = 0; !err && i < PG_STATUS_SQL_PARAMS; i++)
        err = buf_add(&arr[i], "}", 1);
    return err;
}

/* Contract in pgstatus_sql.h. */
enum ns_err pg_status_sql_check_rows(const struct pg_status_row *rows,
                                     size_t n, char *errstr,
                                     size_t errstr_size)
{
    for (size_t i = 0; i < n; i++) {
        const struct pg_status_row *row = &rows[i];
        const char *why = NULL;

        if (!row->tbl || row->tbl->kind == MAPPING_NONE)
            why = "no captured table";
        else if (row->tbl->key_count < 1 || row->tbl->key_count > 2)
            why = "table has not one or two key columns";
        else if (row->outcome != PG_STATUS_SUCCESS &&
                 row->outcome != PG_STATUS_FAILED)
            why = "unknown outcome";
        for (size_t k = 0; !why && k < row->tbl->key_count; k++)
            if (!row->keys[k])
                why = "key value missing";
        if (why) {
            ns_err_set(errstr, errstr_size,
                              "could not write sync status of row %zu "
                              "(%s): %s", i,
                              row->tbl && row->tbl->table ? row->tbl->table :
                              "?", why);
            return NS_ERR_PG_PERMANENT;
        }
    }
    return NS_OK;
}
