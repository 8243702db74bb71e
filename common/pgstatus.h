/*
 * pgstatus.h - the workers' write-back of sync state into PostgreSQL.
 *
 * After a batch is committed to Neo4j (or its bad events acknowledged by the
 * DLQ), one UPDATE per (table, outcome) records the outcome on the source
 * rows, all in one PostgreSQL transaction sent as one pipeline, values passed as arrays with
 * PQexecParams, never spliced into SQL. Column and table names come only
 * from the mapping.
 *
 * SUCCESS sets sync_status, last_sync_timestamp = now(), last_sync_error =
 * NULL and the Neo4j element id (node_id_column / rel_id_column when the
 * mapping has one), only where pg_version still equals the applied version:
 * an older apply never marks a newer row as synced. FAILED sets sync_status,
 * sync_attempts + 1 and last_sync_error whatever the version.
 *
 * This module owns the connection, the send, the wait and the classification
 * of PostgreSQL's errors. The rows to write (struct pg_status_row), the SQL
 * text and its array parameters are pgstatus_sql's (pgstatus_sql.h,
 * included here).
 */
#ifndef NS_PGSTATUS_H
#define NS_PGSTATUS_H

#include <stddef.h>

#include "err.h"
#include "mapping.h"
#include "pgstatus_sql.h" /* struct pg_status_row, enum pg_status_outcome */

struct pg_status;

/*
 * Create a writer for a libpq connection string. Connects lazily: the
 * first write connects, a broken connection is re-opened on the next call.
 * On success *out is owned by the caller (pg_status_free).
 */
enum ns_err pg_status_new(const char *conninfo, const struct mapping *map,
                          struct pg_status **out, char *errstr,
                          size_t errstr_size);

/*
 * Bound, in ms, on each wait for the server's answer (default 30000; <= 0
 * restores it). The connection also has TCP keepalives and a
 * tcp_user_timeout. When the bound passes, the connection is dropped and
 * the wait returns NS_ERR_PG_TRANSIENT.
 */
void pg_status_set_timeout(struct pg_status *ps, int timeout_ms);

/* Close and free; NULL ok. */
void pg_status_free(struct pg_status *ps);

/*
 * Write n rows (any tables, any outcomes) in one transaction: send, then
 * wait.
 * NS_ERR_PG_TRANSIENT when the server is unreachable, did not answer
 * within the bound, the connection broke, the server is read-only (25006)
 * or a grant is missing (42501) (nothing written; retry),
 * NS_ERR_PG_PERMANENT when the server rejected a statement (a bug or a
 * schema mismatch), detail in errstr. A row whose key is not a valid uuid
 * is left out with a warning; the others are written.
 */
enum ns_err pg_status_write(struct pg_status *ps,
                            const struct pg_status_row *rows, size_t n,
                            char *errstr, size_t errstr_size);

/*
 * The same write in two halves, so the caller can work while PostgreSQL
 * runs it: send puts every UPDATE on the wire at once (libpq pipeline
 * mode) and returns; wait reads the outcome. One write in flight at a
 * time. rows need not outlive send. A send error means nothing was
 * committed; wait returns what pg_status_write() would have, and NS_OK when
 * nothing is in flight.
 */
enum ns_err pg_status_send(struct pg_status *ps,
                           const struct pg_status_row *rows, size_t n,
                           char *errstr, size_t errstr_size);
enum ns_err pg_status_wait(struct pg_status *ps, char *errstr,
                           size_t errstr_size);
int pg_status_in_flight(const struct pg_status *ps);

/*
 * The SQLSTATE of the last write's failure ("25006", "42501", ...), "" when
 * it succeeded, is still in flight or failed without one (a lost
 * connection). Owned by ps, valid until its next send; ps may be NULL.
 */
const char *pg_status_last_sqlstate(const struct pg_status *ps);

#endif
