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

/* Caps on the SQL text of one UPDATE and on one array parameter. */
#define PG_STATUS_SQL_MAX (64u * 1024u)
#define PG_STATUS_ARRAY_MAX (64u * 1024u * 1024u)

/* last_sync_error keeps at most this many bytes of a reason. */
#define PG_STATUS_ERROR_MAX 2000u

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

/* Parameters of one UPDATE: up to two keys, the version or the reason, and
 * the element id. */
#define PG_STATUS_PARAMS 4

/*
 * The UPDATEs run per table in this order, so that an event which failed
 * and a later one which succeeded, both in one batch, leave SUCCESS; the
 * other way round the version guard already keeps the stale SUCCESS out.
 * SUCCESS rows without an element id are updated apart from those with
 * one, so a missing id never erases a stored one: the writer role may
 * update the id column but not read it, which rules out COALESCE.
 */
enum pg_status_pass {
    PG_STATUS_PASS_FAILED = 0,
    PG_STATUS_PASS_SUCCESS_ID,
    PG_STATUS_PASS_SUCCESS,
    PG_STATUS_PASS__COUNT
};

/* The tables of the statements in flight are kept for error messages. */
#define PG_STATUS_SENT_MAX 64

struct pg_status {
    char *conninfo;
    const struct mapping *map;    /* borrowed: outlives the writer */
    PGconn *conn;                 /* NULL until the first write */
    struct buf sql;
    struct buf arr[PG_STATUS_PARAMS];
    int in_flight;                /* sent and synced, results not read */
    int timeout_ms;               /* bound on one wait for results */
    size_t sent_count;
    const struct mapping_table *sent[PG_STATUS_SENT_MAX];
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

static const char *pg_status_id_column(const struct mapping_table *tbl)
{
    return tbl->node_id_column ? tbl->node_id_column : tbl->rel_id_column;
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
    for (size_t i = 0; i < PG_STATUS_PARAMS; i++)
        buf_init(&ps->arr[i], PG_STATUS_ARRAY_MAX);
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
    for (size_t i = 0; i < PG_STATUS_PARAMS; i++)
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

/*
 * Length of the valid UTF-8 sequence at p, 0 when p starts an invalid one
 * (overlong, surrogate, past U+10FFFF, cut short). Never reads past a NUL.
 */
static size_t pg_status_utf8_len(const unsigned char *p)
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
static enum ns_err pg_status_array_add(struct buf *b, const char *s,
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
        size_t len = pg_status_utf8_len(p);

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

static enum ns_err pg_status_array_add_int(struct buf *b, int64_t v)
{
    return buf_addf(b, "%s%lld", b->len > 1 ? "," : "", (long long)v);
}

/*
 * Whether s is uuid input PostgreSQL accepts (uuid_in): 32 hex digits,
 * optionally between braces, with a '-' allowed after any group of four.
 */
static int pg_status_uuid_ok(const char *s)
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

/*
 * Whether every key of a row fits its column. The UPDATE casts keys to
 * uuid[] (the schema's key columns are uuid; the mapping declares no other
 * type for them), and one element the cast rejects (22P02) fails the whole
 * write-back transaction, so such a row is left out instead.
 */
static int pg_status_row_fits(const struct pg_status_row *row)
{
    for (size_t k = 0; k < row->tbl->key_count; k++)
        if (!pg_status_uuid_ok(row->keys[k]))
            return 0;
    return 1;
}

/* A key as printable text for a log line, cut to fit out. */
static void pg_status_key_text(const char *key, char *out, size_t out_size)
{
    size_t i = 0;

    for (; key[i] && i + 1 < out_size; i++)
        out[i] = key[i] >= 0x20 && key[i] < 0x7f ? key[i] : '?';
    out[i] = '\0';
}

static int pg_status_in_pass(const struct pg_status_row *row,
                             enum pg_status_pass pass)
{
    int has_id = pg_status_id_column(row->tbl) != NULL &&
                 row->element_id != NULL;

    switch (pass) {
    case PG_STATUS_PASS_FAILED:
        return row->outcome == PG_STATUS_FAILED;
    case PG_STATUS_PASS_SUCCESS_ID:
        return row->outcome == PG_STATUS_SUCCESS && has_id;
    case PG_STATUS_PASS_SUCCESS:
        return row->outcome == PG_STATUS_SUCCESS && !has_id;
    case PG_STATUS_PASS__COUNT:
        break;
    }
    return 0;
}

/*
 * Build the UPDATE of one (table, pass) into ps->sql. Keys are joined as
 * uuid, the columns of the sync block and the id column come from the
 * mapping (checked identifiers, quoted):
 *   UPDATE "s"."t" AS t SET ... FROM unnest($1::uuid[], ..) AS u(k0, ..)
 *   WHERE t."key0" = u.k0 ... [AND t."pg_version" = u.ver]
 */
static enum ns_err pg_status_sql(struct pg_status *ps,
                                 const struct mapping_table *tbl,
                                 enum pg_status_pass pass, int *nparams)
{
    const struct mapping_sync *sync = &ps->map->sync;
    struct buf *b = &ps->sql;
    size_t nk = tbl->key_count;
    int np = (int)nk;
    enum ns_err err;

    buf_reset(b);
    err = buf_addf(b, "UPDATE \"%s\".\"%s\" AS t SET ", ps->map->pg_schema,
                   tbl->table);
    if (!err && pass == PG_STATUS_PASS_FAILED)
        err = buf_addf(b, "\"%s\" = 'FAILED', \"%s\" = t.\"%s\" + 1, "
                       "\"%s\" = u.err", sync->status, sync->attempts,
                       sync->attempts, sync->error);
    else if (!err)
        err = buf_addf(b, "\"%s\" = 'SUCCESS', \"%s\" = now(), "
                       "\"%s\" = NULL", sync->status, sync->timestamp,
                       sync->error);
    if (!err && pass == PG_STATUS_PASS_SUCCESS_ID)
        err = buf_addf(b, ", \"%s\" = u.eid", pg_status_id_column(tbl));
    if (!err)
        err = buf_adds(b, " FROM unnest(");
    for (size_t k = 0; !err && k < nk; k++)
        err = buf_addf(b, "$%zu::uuid[], ", k + 1);
    if (!err && pass == PG_STATUS_PASS_FAILED) {
        err = buf_addf(b, "$%d::text[]", ++np);
    } else if (!err) {
        err = buf_addf(b, "$%d::bigint[]", ++np);
        if (!err && pass == PG_STATUS_PASS_SUCCESS_ID)
            err = buf_addf(b, ", $%d::text[]", ++np);
    }
    if (!err)
        err = buf_adds(b, ") AS u(");
    for (size_t k = 0; !err && k < nk; k++)
        err = buf_addf(b, "k%zu, ", k);
    if (!err)
        err = buf_adds(b, pass == PG_STATUS_PASS_FAILED ? "err" :
                       pass == PG_STATUS_PASS_SUCCESS_ID ? "ver, eid" :
                       "ver");
    if (!err)
        err = buf_adds(b, ") WHERE ");
    for (size_t k = 0; !err && k < nk; k++)
        err = buf_addf(b, "%st.\"%s\" = u.k%zu", k ? " AND " : "",
                       tbl->key_columns[k], k);
    if (!err && pass != PG_STATUS_PASS_FAILED)
        err = buf_addf(b, " AND t.\"%s\" = u.ver", sync->version);
    /* A row already marked SUCCESS for this version (a replay, a retried
     * batch) is left alone: no write, no WAL, no echo event to consume. */
    if (!err && pass != PG_STATUS_PASS_FAILED)
        err = buf_addf(b, " AND (t.\"%s\" IS DISTINCT FROM 'SUCCESS' OR "
                       "t.\"%s\" IS NOT NULL", sync->status, sync->error);
    if (!err && pass == PG_STATUS_PASS_SUCCESS_ID)
        err = buf_addf(b, " OR t.\"%s\" IS DISTINCT FROM u.eid",
                       pg_status_id_column(tbl));
    if (!err && pass != PG_STATUS_PASS_FAILED)
        err = buf_adds(b, ")");
    *nparams = np;
    return err;
}

/* Fill the array parameters of one (table, pass); *count gets the rows. */
static enum ns_err pg_status_arrays(struct pg_status *ps,
                                    const struct pg_status_row *rows,
                                    size_t n, const struct mapping_table *tbl,
                                    enum pg_status_pass pass, size_t *count)
{
    size_t nk = tbl->key_count;
    enum ns_err err = NS_OK;

    *count = 0;
    for (size_t i = 0; i < PG_STATUS_PARAMS; i++) {
        buf_reset(&ps->arr[i]);
        err = buf_add(&ps->arr[i], "{", 1);
        if (err)
            return err;
    }
    for (size_t i = 0; !err && i < n; i++) {
        const struct pg_status_row *row = &rows[i];

        if (row->tbl != tbl || !pg_status_in_pass(row, pass) ||
            !pg_status_row_fits(row))
            continue;
        for (size_t k = 0; !err && k < nk; k++)
            err = pg_status_array_add(&ps->arr[k], row->keys[k],
                                      PG_STATUS_ARRAY_MAX);
        if (!err && pass == PG_STATUS_PASS_FAILED)
            err = pg_status_array_add(&ps->arr[nk], row->error,
                                      PG_STATUS_ERROR_MAX);
        else if (!err)
            err = pg_status_array_add_int(&ps->arr[nk], row->version);
        if (!err && pass == PG_STATUS_PASS_SUCCESS_ID)
            err = pg_status_array_add(&ps->arr[nk + 1], row->element_id,
                                      PG_STATUS_ARRAY_MAX);
        (*count)++;
    }
    for (size_t i = 0; !err && i < PG_STATUS_PARAMS; i++)
        err = buf_add(&ps->arr[i], "}", 1);
    return err;
}

/* Reject rows the SQL cannot express before anything is sent. */
static enum ns_err pg_status_check_rows(const struct pg_status_row *rows,
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
    const char *values[PG_STATUS_PARAMS];
    char msg[512];
    size_t fitting = 0;
    enum ns_err err;

    if (ps->in_flight) {
        ns_err_set(errstr, errstr_size, "a sync status write is already in "
                   "flight");
        return NS_ERR_PG_PERMANENT;
    }
    ps->sent_count = 0;
    if (n == 0)
        return NS_OK;
    err = pg_status_check_rows(rows, n, errstr, errstr_size);
    if (err)
        return err;
    for (size_t i = 0; i < n; i++) {
        const struct mapping_table *tbl = rows[i].tbl;
        char key[2][80];

        if (pg_status_row_fits(&rows[i])) {
            fitting++;
            continue;
        }
        if (!log_enabled(LOG_WARN))
            continue;
        pg_status_key_text(rows[i].keys[0], key[0], sizeof(key[0]));
        if (tbl->key_count > 1)
            pg_status_key_text(rows[i].keys[1], key[1], sizeof(key[1]));
        log_msg(LOG_WARN, "skipped the sync status write-back of %s key "
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
        for (int pass = 0; pass < PG_STATUS_PASS__COUNT; pass++) {
            size_t count;
            int nparams;

            err = pg_status_arrays(ps, rows, n, tbl, pass, &count);
            if (!err && count > 0)
                err = pg_status_sql(ps, tbl, pass, &nparams);
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

enum ns_err pg_status_write(struct pg_status *ps,
                            const struct pg_status_row *rows, size_t n,
                            char *errstr, size_t errstr_size)
{
    enum ns_err err = pg_status_send(ps, rows, n, errstr, errstr_size);

    return err ? err : pg_status_wait(ps, errstr, errstr_size);
}
