/*
 * pgstatus_sql.h - the SQL text and the array parameters of the sync_status
 * write-back, and the rows it is built from.
 *
 * Pure: no connection, no I/O. For one (table, pass) it builds the
 * UPDATE ... FROM unnest($1::uuid[], ...) text into a capped buffer and the
 * PostgreSQL array literals of its parameters into others, and it checks
 * rows before anything is sent. Table and column names come only from the
 * mapping (checked identifiers, quoted); values go only into the arrays,
 * never into the SQL. pgstatus owns the connection and sends what is built
 * here; pgstatus.h includes this header, so its callers see the row type.
 */
#ifndef NS_PGSTATUS_SQL_H
#define NS_PGSTATUS_SQL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"
#include "mapping.h"

/* Caps on the SQL text of one UPDATE and on one array parameter: the caps
 * to give buf_init() for the buffers handed to the functions below. */
#define PG_STATUS_SQL_MAX (64u * 1024u)
#define PG_STATUS_SQL_ARRAY_MAX (64u * 1024u * 1024u)

/* Parameters of one UPDATE: up to two keys, the version or the reason, and
 * the element id. */
#define PG_STATUS_SQL_PARAMS 4

enum pg_status_outcome { PG_STATUS_SUCCESS = 0, PG_STATUS_FAILED };

struct pg_status_row {
    const struct mapping_table *tbl;
    enum pg_status_outcome outcome;
    const char *keys[2];      /* key column values in tbl->key_columns order */
    int64_t version;          /* applied pg_version; SUCCESS only */
    const char *element_id;   /* Neo4j elementId or NULL; SUCCESS only */
    const char *error;        /* reason; FAILED only */
};

/*
 * The UPDATEs run per table in this order, so that an event which failed
 * and a later one which succeeded, both in one batch, leave SUCCESS; the
 * other way round the version guard already keeps the stale SUCCESS out.
 * SUCCESS rows without an element id are updated apart from those with
 * one, so a missing id never erases a stored one: the writer role may
 * update the id column but not read it, which rules out COALESCE.
 */
enum pg_status_sql_pass {
    PG_STATUS_SQL_PASS_FAILED = 0,
    PG_STATUS_SQL_PASS_SUCCESS_ID,
    PG_STATUS_SQL_PASS_SUCCESS,
    PG_STATUS_SQL_PASS__COUNT
};

/*
 * Reject rows the SQL cannot express before anything is sent: no captured
 * table, not one or two key columns, an unknown outcome, a key missing.
 * NS_ERR_PG_PERMANENT naming the first such row in errstr, else NS_OK.
 * rows is borrowed.
 */
enum ns_err pg_status_sql_check_rows(const struct pg_status_row *rows,
                                     size_t n, char *errstr,
                                     size_t errstr_size);

/*
 * Non-zero when every key of row (checked by pg_status_sql_check_rows())
 * fits its column. The UPDATE casts keys to uuid[] (the schema's key
 * columns are uuid; the mapping declares no other type for them), and one
 * element the cast rejects (22P02) fails the whole write-back transaction,
 * so such a row is left out instead.
 */
int pg_status_sql_row_fits(const struct pg_status_row *row);

/*
 * A key as printable text for a log line: bytes outside printable ASCII
 * become '?', cut to fit out (out_size >= 1). Writes only into out.
 */
void pg_status_sql_key_text(const char *key, char *out, size_t out_size);

/*
 * Build the UPDATE of one (table, pass) of map into sql (reset first; a
 * buffer of the caller's, capped at PG_STATUS_SQL_MAX); *nparams gets the
 * number of its parameters. NS_ERR_LIMIT past the cap, NS_ERR_NOMEM; sql
 * then holds part of the text. map and tbl are borrowed; their names must
 * be checked identifiers (pg_status_new() checks them).
 */
enum ns_err pg_status_sql_build(struct buf *sql, const struct mapping *map,
                                const struct mapping_table *tbl,
                                enum pg_status_sql_pass pass, int *nparams);

/*
 * Fill arr, the caller's PG_STATUS_SQL_PARAMS buffers (each reset first,
 * capped at PG_STATUS_SQL_ARRAY_MAX), with the array literals of the rows
 * of (tbl, pass) whose keys fit; *count gets how many rows went in.
 * Arrays the UPDATE does not use stay "{}". NS_ERR_LIMIT past a cap,
 * NS_ERR_NOMEM. rows (checked by pg_status_sql_check_rows()) is borrowed.
 */
enum ns_err pg_status_sql_arrays(struct buf arr[PG_STATUS_SQL_PARAMS],
                                 const struct pg_status_row *rows, size_t n,
                                 const struct mapping_table *tbl,
                                 enum pg_status_sql_pass pass, size_t *count);

#endif
