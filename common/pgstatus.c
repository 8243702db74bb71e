/*
 * pgstatus.c - the sync_status writer: the connection and its bounds, the
 * pipelined send, the wait for the outcome and the classification of
 * PostgreSQL's errors. The SQL text and its array parameters are built by
 * pgstatus_sql.c.
 */
#include "pgstatus.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Debian keeps libpq's headers in a subdirectory (pkg-config --cflags). */
#if defined(__has_include) && __has_include(<libpq-fe.h>)
#include <libpq-fe.h>
#else
#include <postgresql/libpq-fe.h>
#endif

#include "buf.h"
#include "log.h"
#include "pgstatus_sql.h"

/* Defaults a conninfo string may override: a dead host must not hang the
 * worker, nor may a row lock held by someone else. The lock timeout is
 * shorter than PostgreSQL's deadlock_timeout (1 s), so when a write-back
 * and an application transaction lock the same rows in opposite orders,
 * the write-back gives up first (55P03, retried) and the application's
 * transaction never sees a deadlock error. */
#define PG_STATUS_CONNECT_TIMEOUT "10"

/* A peer that vanished without a FIN or RST (a half-open connection: a
 * crashed host, a dropped NAT entry, a failover) would otherwise block the
 * worker until the kernel gives up, about two hours. Keepalives probe an
 * idle connection after 10 s, every 5 s, 3 times; tcp_user_timeout (ms)
 * ends one whose sent data stays unacknowledged. Defaults a conninfo may
 * override. */
#define PG_STATUS_KEEPALIVES_IDLE "10"
#define PG_STATUS_KEEPALIVES_INTERVAL "5"
#define PG_STATUS_KEEPALIVES_COUNT "3"
#define PG_STATUS_TCP_USER_TIMEOUT "30000"

/* Default bound, in ms, on one wait for the outcome of a write-back (and
 * for the ROLLBACK of a left-over transaction). A peer that acknowledges
 * packets but never answers (a hung server, a proxy that stopped
 * forwarding) is not caught by keepalives; this bound catches it. It
 * matches statement_timeout below: a healthy server answers before it.
 * pg_status_set_timeout() changes it. */
#define PG_STATUS_RESULT_TIMEOUT_MS 30000
#define PG_STATUS_OPTIONS "-c statement_timeout=30000 -c lock_timeout=200"

/* The tables of the statements in flight are kept for error messages. */
#define PG_STATUS_SENT_MAX 64

struct pg_status {
    char *conninfo;
    const struct mapping *map;    /* borrowed: outlives the writer */
    PGconn *conn;                 /* NULL until the first write */
    struct buf sql;
    struct buf arr[PG_STATUS_SQL_PARAMS];
    int in_flight;                /* sent and synced, results not read */
    int timeout_ms;               /* bound on one wait for results */
    size_t sent_count;
    const struct mapping_table *sent[PG_STATUS_SENT_MAX];
    char last_sqlstate[6];        /* of the last write's failure, or "" */
};

/* libpq messages end in a newline and may span lines; keep the first. */
static void pg_status_first_line(const char *msg, char *out, size_t out_size)
{
    size_t len = strcspn(msg, "\n");

    if (len >= out_size)
        len = out_size - 1;
    memcpy(out, msg, len);
    out[len] = '\0';
}

enum ns_err pg_status_new(const char *conninfo, const struct mapping *map,
                          struct pg_status **out, char *errstr,
                          size_t errstr_size)
{
    struct pg_status *ps = NULL;
    const struct mapping_sync *sync;
    enum ns_err err = NS_OK;

    *out = NULL;
    if (!conninfo || !map) {
        ns_err_set(errstr, errstr_size,
                          "conninfo and mapping are required");
        return NS_ERR_CONFIG;
    }
    /* The mapping loader checks names already; SQL is spliced from them,
     * so check again where the splicing happens. */
    sync = &map->sync;
    if (!mapping_is_identifier(map->pg_schema) ||
        !mapping_is_identifier(sync->version) ||
        !mapping_is_identifier(sync->status) ||
        !mapping_is_identifier(sync->attempts) ||
        !mapping_is_identifier(sync->error) ||
        !mapping_is_identifier(sync->timestamp)) {
        ns_err_set(errstr, errstr_size,
                          "mapping schema or sync column names are not "
                          "plain identifiers");
        return NS_ERR_CONFIG;
    }
    for (size_t i = 0; i < map->table_count; i++) {
        const struct mapping_table *tbl = &map->tables[i];
        int ok = mapping_is_identifier(tbl->table) &&
                 tbl->key_count <= 2 &&
                 (!tbl->node_id_column ||
                  mapping_is_identifier(tbl->node_id_column)) &&
                 (!tbl->rel_id_column ||
                  mapping_is_identifier(tbl->rel_id_column));

        for (size_t k = 0; ok && k < tbl->key_count; k++)
            ok = mapping_is_identifier(tbl->key_columns[k]);
        if (!ok && tbl->kind != MAPPING_NONE) {
            ns_err_set(errstr, errstr_size,
                              "table %s: names are not plain identifiers "
                              "or it has more than two key columns",
                              tbl->table ? tbl->table : "?");
            return NS_ERR_CONFIG;
        }
    }

    ps = calloc(1, sizeof(*ps));
    if (!ps) {
        err = NS_ERR_NOMEM;
        ns_err_set(errstr, errstr_size, "out of memory");
        goto cleanup;
    }
    buf_init(&ps->sql, PG_STATUS_SQL_MAX);
    for (size_t i = 0; i < PG_STATUS_SQL_PARAMS; i++)
        buf_init(&ps->arr[i], PG_STATUS_SQL_ARRAY_MAX);
    ps->map = map;
    ps->timeout_ms = PG_STATUS_RESULT_TIMEOUT_MS;
    ps->conninfo = strdup(conninfo);
    if (!ps->conninfo) {
        err = NS_ERR_NOMEM;
        ns_err_set(errstr, errstr_size, "out of memory");
        goto cleanup;
    }
    *out = ps;
    ps = NULL;

cleanup:
    pg_status_free(ps);
    return err;
}

void pg_status_set_timeout(struct pg_status *ps, int timeout_ms)
{
    ps->timeout_ms = timeout_ms > 0 ? timeout_ms : PG_STATUS_RESULT_TIMEOUT_MS;
}

void pg_status_free(struct pg_status *ps)
{
    if (!ps)
        return;
    if (ps->conn)
        PQfinish(ps->conn);
    buf_free(&ps->sql);
    for (size_t i = 0; i < PG_STATUS_SQL_PARAMS; i++)
        buf_free(&ps->arr[i]);
    free(ps->conninfo);
    free(ps);
}

/*
 * Make sure there is a usable connection: the first call connects, a
 * connection that broke is reset. conninfo comes last so that anything it
 * sets wins over our defaults (expand_dbname).
 */
static enum ns_err pg_status_connect(struct pg_status *ps, char *errstr,
                                     size_t errstr_size)
{
    static const char *const keywords[] = {
        "connect_timeout", "keepalives", "keepalives_idle",
        "keepalives_interval", "keepalives_count", "tcp_user_timeout",
        "client_encoding", "options", "fallback_application_name", "dbname",
        NULL};
    const char *values[] = {
        PG_STATUS_CONNECT_TIMEOUT, "1", PG_STATUS_KEEPALIVES_IDLE,
        PG_STATUS_KEEPALIVES_INTERVAL, PG_STATUS_KEEPALIVES_COUNT,
        PG_STATUS_TCP_USER_TIMEOUT, "UTF8", PG_STATUS_OPTIONS, "nexus-sync",
        ps->conninfo, NULL};
    char msg[512];

    if (ps->conn && PQstatus(ps->conn) == CONNECTION_OK)
        return NS_OK;
    if (ps->conn)
        PQreset(ps->conn);
    else
        ps->conn = PQconnectdbParams(keywords, values, 1);
    if (!ps->conn) {
        ns_err_set(errstr, errstr_size,
                          "could not connect to PostgreSQL: out of memory");
        return NS_ERR_NOMEM;
    }
    if (PQstatus(ps->conn) != CONNECTION_OK) {
        pg_status_first_line(PQerrorMessage(ps->conn), msg, sizeof(msg));
        ns_err_set(errstr, errstr_size,
                          "could not connect to PostgreSQL: %s", msg);
        return NS_ERR_PG_TRANSIENT;
    }
    /* Every wait goes through pg_status_ready(), which polls the socket
     * with a deadline; a blocking libpq call could wait forever. */
    if (PQsetnonblocking(ps->conn, 1) != 0) {
        pg_status_first_line(PQerrorMessage(ps->conn), msg, sizeof(msg));
        ns_err_set(errstr, errstr_size,
                   "could not make the PostgreSQL connection non-blocking: "
                   "%s", msg);
        PQfinish(ps->conn);
        ps->conn = NULL;
        return NS_ERR_PG_TRANSIENT;
    }
    return NS_OK;
}

static int64_t pg_status_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

enum pg_status_wait_result {
    PG_STATUS_READY = 0,     /* PQgetResult() will not block */
    PG_STATUS_TIMED_OUT,     /* deadline passed, no answer */
    PG_STATUS_BROKEN         /* the connection failed */
};

/*
 * Flush what is queued and read what arrived until a result can be taken
 * without blocking, or until deadline (monotonic ms).
 */
static enum pg_status_wait_result pg_status_ready(PGconn *conn,
                                                  int64_t deadline)
{
    for (;;) {
        int flushing = PQflush(conn);
        struct pollfd pfd;
        int64_t left;
        int rc;

        /* a broken connection may still hold the server's last words
         * (a FATAL error): let PQgetResult() hand them over */
        if (flushing < 0 || !PQconsumeInput(conn))
            return PQisBusy(conn) ? PG_STATUS_BROKEN : PG_STATUS_READY;
        if (!PQisBusy(conn))
            return PG_STATUS_READY;
        left = deadline - pg_status_now_ms();
        if (left <= 0)
            return PG_STATUS_TIMED_OUT;
        pfd.fd = PQsocket(conn);
        pfd.events = POLLIN | (flushing ? POLLOUT : 0);
        pfd.revents = 0;
        if (pfd.fd < 0)
            return PG_STATUS_BROKEN;
        rc = poll(&pfd, 1, left > 1000000 ? 1000000 : (int)left);
        if (rc < 0 && errno != EINTR)
            return PG_STATUS_BROKEN;
    }
}

/*
 * Whether a failed statement can succeed later. A lost connection has no
 * SQLSTATE; of the server's classes, connection exceptions (08), rollbacks
 * for serialization or deadlock (40: 40001, 40P01), lack of resources (53),
 * operator intervention and cancels such as statement_timeout or a
 * shutdown (57, 57P0x), system errors (58) and lock_not_available (55P03)
 * are transient. So are read_only_sql_transaction (25006: we reached a
 * standby, or a primary demoted by a failover) and insufficient_privilege
 * (42501: a grant missing while an operator fixes it): dropping the
 * bookkeeping would lose it for good, a retry lands it once the cluster or
 * the grant is back. Everything else is the statement's fault (syntax,
 * data).
 */
static enum ns_err pg_status_classify(PGconn *conn, const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) :
                        NULL;

    if (PQstatus(conn) != CONNECTION_OK || !state || strlen(state) != 5)
        return NS_ERR_PG_TRANSIENT;
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "40", 2) == 0 ||
        strncmp(state, "53", 2) == 0 || strncmp(state, "57", 2) == 0 ||
        strncmp(state, "58", 2) == 0 || strcmp(state, "55P03") == 0 ||
        strcmp(state, "25006") == 0 || strcmp(state, "42501") == 0)
        return NS_ERR_PG_TRANSIENT;
    return NS_ERR_PG_PERMANENT;
}

/* End a failed transaction, within the result bound. A connection that
 * cannot even roll back is dropped, so the next call starts from a fresh
 * one. */
static void pg_status_abort(struct pg_status *ps)
{
    int64_t deadline = pg_status_now_ms() + ps->timeout_ms;
    int ok;

    if (!ps->conn || PQstatus(ps->conn) != CONNECTION_OK)
        return;
    if (PQtransactionStatus(ps->conn) == PQTRANS_IDLE)
        return;
    ok = PQsendQuery(ps->conn, "ROLLBACK");
    while (ok) {
        PGresult *res;

        if (pg_status_ready(ps->conn, deadline) != PG_STATUS_READY) {
            ok = 0;
            break;
        }
        res = PQgetResult(ps->conn);
        if (!res)
            break;
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            ok = 0;
        PQclear(res);
    }
    if (!ok || PQtransactionStatus(ps->conn) != PQTRANS_IDLE) {
        PQfinish(ps->conn);
        ps->conn = NULL;
    }
}

/* Drop the connection: a pipeline cut short (nothing synced, so nothing
 * committed) or in an unknown state. The next write connects again. */
static void pg_status_drop(struct pg_status *ps)
{
    if (ps->conn)
        PQfinish(ps->conn);
    ps->conn = NULL;
    ps->in_flight = 0;
}

/*
 * Contract in pgstatus.h. For each table in order of first appearance the
 * FAILED, SUCCESS-with-id and SUCCESS passes that have rows, in pipeline
 * mode: every UPDATE goes out at once, and the sync at the end makes them
 * one implicit transaction that commits or rolls back as a whole.
 */
enum ns_err pg_status_send(struct pg_status *ps,
                           const struct pg_status_row *rows, size_t n,
                           char *errstr, size_t errstr_size)
{
    const char *values[PG_STATUS_SQL_PARAMS];
    char msg[512];
    size_t fitting = 0;
    enum ns_err err;

    if (ps->in_flight) {
        ns_err_set(errstr, errstr_size, "a sync status write is already in "
                   "flight");
        return NS_ERR_PG_PERMANENT;
    }
    ps->last_sqlstate[0] = '\0';
    ps->sent_count = 0;
    if (n == 0)
        return NS_OK;
    err = pg_status_sql_check_rows(rows, n, errstr, errstr_size);
    if (err)
        return err;
    for (size_t i = 0; i < n; i++) {
        const struct mapping_table *tbl = rows[i].tbl;
        char key[2][80];

        if (pg_status_sql_row_fits(&rows[i])) {
            fitting++;
            continue;
        }
        if (!log_enabled(NS_LOG_WARN))
            continue;
        pg_status_sql_key_text(rows[i].keys[0], key[0], sizeof(key[0]));
        if (tbl->key_count > 1)
            pg_status_sql_key_text(rows[i].keys[1], key[1], sizeof(key[1]));
        log_msg(NS_LOG_WARN, "skipped the sync status write-back of %s key "
                "%s%s%s: a key is not a valid uuid", tbl->table, key[0],
                tbl->key_count > 1 ? "," : "",
                tbl->key_count > 1 ? key[1] : "");
    }
    if (fitting == 0)
        return NS_OK;
    err = pg_status_connect(ps, errstr, errstr_size);
    if (err)
        return err;
    /* a transaction left open by a failure we could not roll back */
    pg_status_abort(ps);
    if (!ps->conn) {
        ns_err_set(errstr, errstr_size,
                          "could not roll back an open transaction");
        return NS_ERR_PG_TRANSIENT;
    }
    if (!PQenterPipelineMode(ps->conn)) {
        pg_status_first_line(PQerrorMessage(ps->conn), msg, sizeof(msg));
        ns_err_set(errstr, errstr_size, "could not enter pipeline mode: %s",
                   msg);
        pg_status_drop(ps);
        return NS_ERR_PG_TRANSIENT;
    }

    for (size_t i = 0; i < n; i++) {
        const struct mapping_table *tbl = rows[i].tbl;
        int seen = 0;

        for (size_t j = 0; j < i && !seen; j++)
            seen = rows[j].tbl == tbl;
        if (seen)
            continue;
        for (int pass = 0; pass < PG_STATUS_SQL_PASS__COUNT; pass++) {
            size_t count;
            int nparams;

            err = pg_status_sql_arrays(ps->arr, rows, n, tbl, pass, &count);
            if (!err && count > 0)
                err = pg_status_sql_build(&ps->sql, ps->map, tbl, pass,
                                          &nparams);
            if (err) {
                ns_err_set(errstr, errstr_size,
                                  "could not build the sync status update "
                                  "of %s: %s", tbl->table, ns_err_str(err));
                if (err != NS_ERR_NOMEM)
                    err = NS_ERR_PG_PERMANENT;
                goto cleanup;
            }
            if (count == 0)
                continue;
            for (int p = 0; p < nparams; p++)
                values[p] = buf_str(&ps->arr[p]);
            if (!PQsendQueryParams(ps->conn, buf_str(&ps->sql), nparams,
                                   NULL, values, NULL, NULL, 0)) {
                pg_status_first_line(PQerrorMessage(ps->conn), msg,
                                     sizeof(msg));
                ns_err_set(errstr, errstr_size, "could not send the sync "
                           "status update of %s: %s", tbl->table, msg);
                err = NS_ERR_PG_TRANSIENT;
                goto cleanup;
            }
            if (ps->sent_count < PG_STATUS_SENT_MAX)
                ps->sent[ps->sent_count] = tbl;
            ps->sent_count++;
        }
    }
    if (!PQpipelineSync(ps->conn)) {
        pg_status_first_line(PQerrorMessage(ps->conn), msg, sizeof(msg));
        ns_err_set(errstr, errstr_size, "could not send the sync status: %s",
                   msg);
        err = NS_ERR_PG_TRANSIENT;
        goto cleanup;
    }
    ps->in_flight = 1;

cleanup:
    if (err)
        pg_status_drop(ps);
    return err;
}

enum ns_err pg_status_wait(struct pg_status *ps, char *errstr,
                           size_t errstr_size)
{
    enum ns_err err = NS_OK;
    enum pg_status_wait_result wr = PG_STATUS_READY;
    int64_t deadline;
    size_t query = 0;
    int synced = 0, empty = 0, read_only = 0;
    char msg[512];

    if (!ps->in_flight)
        return NS_OK;
    ps->in_flight = 0;
    deadline = pg_status_now_ms() + ps->timeout_ms;
    /* One result and a NULL per statement, then the sync. Two NULLs in a
     * row mean the results ended early: the connection is gone. No call
     * below blocks: each PQgetResult waits in pg_status_ready(), bounded
     * by the deadline. */
    while (!synced && empty < 2) {
        PGresult *res;

        wr = pg_status_ready(ps->conn, deadline);
        if (wr != PG_STATUS_READY)
            break;
        res = PQgetResult(ps->conn);
        if (!res) {
            empty++;
            continue;
        }
        empty = 0;
        switch (PQresultStatus(res)) {
        case PGRES_PIPELINE_SYNC:
            synced = 1;
            break;
        case PGRES_COMMAND_OK:
        case PGRES_PIPELINE_ABORTED: /* after the error reported below */
            query++;
            break;
        default:
            if (!err) {
                const struct mapping_table *tbl =
                    query < PG_STATUS_SENT_MAX && query < ps->sent_count
                        ? ps->sent[query] : NULL;
                const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

                err = pg_status_classify(ps->conn, res);
                read_only = state && strcmp(state, "25006") == 0;
                if (state && strlen(state) == 5)
                    memcpy(ps->last_sqlstate, state, 6);
                pg_status_first_line(PQresultErrorMessage(res), msg,
                                     sizeof(msg));
                if (!msg[0])
                    pg_status_first_line(PQerrorMessage(ps->conn), msg,
                                         sizeof(msg));
                ns_err_set(errstr, errstr_size, "could not update sync "
                           "status of %s: %s%s%s", tbl ? tbl->table : "?",
                           state ? state : "", state ? " " : "", msg);
            }
            query++;
            break;
        }
        PQclear(res);
    }
    if (wr == PG_STATUS_TIMED_OUT) {
        /* The server or the path to it stopped answering. A cancel would
         * need a new connection over the same dead path, so the connection
         * is dropped; the server's statement_timeout ends the statement if
         * it is still running. */
        ns_err_set(errstr, errstr_size, "no answer from PostgreSQL within "
                   "%d ms while writing sync status; connection dropped",
                   ps->timeout_ms);
        pg_status_drop(ps);
        return NS_ERR_PG_TRANSIENT;
    }
    if (!synced || !PQexitPipelineMode(ps->conn)) {
        if (!err) {
            pg_status_first_line(PQerrorMessage(ps->conn), msg, sizeof(msg));
            ns_err_set(errstr, errstr_size, "lost the connection while "
                       "writing sync status: %s", msg);
        }
        /* the sync went out, so the outcome is unknown; every UPDATE may
         * be repeated */
        err = NS_ERR_PG_TRANSIENT;
        pg_status_drop(ps);
    } else if (read_only) {
        /* a session on a read-only server stays read-only: the retry must
         * connect again (target_session_attrs picks the new primary) */
        pg_status_drop(ps);
    }
    return err;
}

int pg_status_in_flight(const struct pg_status *ps)
{
    return ps->in_flight;
}

const char *pg_status_last_sqlstate(const struct pg_status *ps)
{
    return ps ? ps->last_sqlstate : "";
}

enum ns_err pg_status_write(struct pg_status *ps,
                            const struct pg_status_row *rows, size_t n,
                            char *errstr, size_t errstr_size)
{
    enum ns_err err = pg_status_send(ps, rows, n, errstr, errstr_size);

    return err ? err : pg_status_wait(ps, errstr, errstr_size);
}
