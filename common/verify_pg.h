/*
 * verify_pg.h - verify's PostgreSQL side: the page queries of a table
 * and the keyset paging through its rows, in key order (uuid byte order
 * or text COLLATE "C"), one page of opt.chunk rows at a time.
 *
 * Private to the verify modules: works on a `struct run` (verify_run.h),
 * whose pg page it owns (freed with PQclear by verify_table_run()).
 */
#ifndef NS_VERIFY_PG_H
#define NS_VERIFY_PG_H

#include <stddef.h>

#include "err.h"
#include "verify_run.h"

/* errstr gets "could not <what>: <libpq message>"; NS_ERR_PG_PERMANENT
 * while the connection is good, else NS_ERR_PG_TRANSIENT. */
enum ns_err verify_pg_fail(PGconn *pg, const char *what, char *errstr,
                           size_t errstr_size);

/*
 * Build the page queries of run->tbl into run->sql_first (no lower bound)
 * and run->sql_next (after $1, or ($1, $2) for a link); both end in
 * LIMIT $n. NS_ERR_CONFIG when a key column does not exist, a PostgreSQL
 * error class when its type cannot be read, buf's error when the text
 * does not fit; detail in errstr.
 */
enum ns_err verify_pg_build_sql(struct run *run, char *errstr,
                                size_t errstr_size);

/* *has non-zero when a row is current (run->pg.i), fetching the next page
 * (and the WAL position before it, run->pg.snap_lsn) when needed. */
enum ns_err verify_pg_page_has(struct run *run, int *has, char *errstr,
                               size_t errstr_size);

/* Column col of the current row as text, NULL for SQL NULL; the text
 * belongs to the page and lives until the next fetch. */
const char *verify_pg_val(const struct run *run, int col);

#endif
