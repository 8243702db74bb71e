#include "writeback.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* The strings one row points to, copied out of the batch. */
struct saved_row {
    char keys[2][64];
    char element_id[96];
    char *error;
};

struct writeback {
    struct pg_status *ps;            /* borrowed */
    rd_kafka_t *rk;                  /* borrowed: commits */
    struct metrics *metrics;         /* borrowed */
    struct pg_status_row *rows;
    struct saved_row *saved;
    size_t n, max;
    rd_kafka_topic_partition_list_t *offsets;  /* pending when set */
    uint64_t lanes[LANE__COUNT];
    int busy;                        /* writeback_finish() is running */
    int64_t sent_ms;
};

enum ns_err writeback_new(struct pg_status *ps, rd_kafka_t *rk,
                          struct metrics *metrics, size_t max_rows,
                          struct writeback **out, char *errstr,
                          size_t errstr_size)
{
    struct writeback *wb = calloc(1, sizeof(*wb));

    *out = NULL;
    if (wb) {
        wb->rows = calloc(max_rows ? max_rows : 1, sizeof(*wb->rows));
        wb->saved = calloc(max_rows ? max_rows : 1, sizeof(*wb->saved));
    }
    if (!wb || !wb->rows || !wb->saved) {
        writeback_free(wb);
        ns_err_set(errstr, errstr_size, "out of memory for a write-back of "
                   "%zu rows", max_rows);
        return NS_ERR_NOMEM;
    }
    wb->ps = ps;
    wb->rk = rk;
    wb->metrics = metrics;
    wb->max = max_rows ? max_rows : 1;
    *out = wb;
    return NS_OK;
}

static void clear_rows(struct writeback *wb)
{
    for (size_t i = 0; i < wb->n; i++) {
        free(wb->saved[i].error);
        wb->saved[i].error = NULL;
    }
    wb->n = 0;
    if (wb->offsets)
        rd_kafka_topic_partition_list_destroy(wb->offsets);
    wb->offsets = NULL;
}

void writeback_free(struct writeback *wb)
{
    if (!wb)
        return;
    clear_rows(wb);
    free(wb->rows);
    free(wb->saved);
    free(wb);
}

int writeback_pending(const struct writeback *wb)
{
    return wb && wb->offsets != NULL;
}

/* The next free row with its keys copied; NULL when the batch has more
 * rows than it may (a bug) or a key does not fit. */
static struct pg_status_row *next_row(struct writeback *wb,
                                      const struct mapping_table *tbl,
                                      const char *const keys[2])
{
    struct pg_status_row *row;
    struct saved_row *sv;

    if (wb->offsets || wb->n == wb->max)
        return NULL;
    row = &wb->rows[wb->n];
    sv = &wb->saved[wb->n];
    memset(row, 0, sizeof(*row));
    memset(sv, 0, sizeof(*sv));
    for (size_t k = 0; k < tbl->key_count && k < 2; k++) {
        if (!keys[k] || strlen(keys[k]) >= sizeof(sv->keys[k]))
            return NULL;
        memcpy(sv->keys[k], keys[k], strlen(keys[k]) + 1);
        row->keys[k] = sv->keys[k];
    }
    row->tbl = tbl;
    return row;
}

enum ns_err writeback_add_success(struct writeback *wb,
                                  const struct mapping_table *tbl,
                                  const char *const keys[2], int64_t version,
                                  const char *element_id)
{
    struct pg_status_row *row = next_row(wb, tbl, keys);
    struct saved_row *sv = &wb->saved[wb->n];

    if (!row)
        return NS_ERR_LIMIT;
    if (element_id && element_id[0]) {
        snprintf(sv->element_id, sizeof(sv->element_id), "%s", element_id);
        row->element_id = sv->element_id;
    }
    row->outcome = PG_STATUS_SUCCESS;
    row->version = version;
    wb->n++;
    return NS_OK;
}

enum ns_err writeback_add_failed(struct writeback *wb,
                                 const struct mapping_table *tbl,
                                 const char *const keys[2],
                                 const char *reason)
{
    struct pg_status_row *row = next_row(wb, tbl, keys);
    struct saved_row *sv = &wb->saved[wb->n];

    if (!row)
        return NS_ERR_LIMIT;
    sv->error = strdup(reason);
    if (!sv->error)
        return NS_ERR_NOMEM;
    row->outcome = PG_STATUS_FAILED;
    row->error = sv->error;
    wb->n++;
    return NS_OK;
}

enum ns_err writeback_send(struct writeback *wb,
                           rd_kafka_topic_partition_list_t *offsets,
                           const uint64_t *lane_events)
{
    char errstr[512];

    if (wb->offsets) {
        rd_kafka_topic_partition_list_destroy(offsets);
        return NS_ERR_LIMIT;  /* the last one has not landed: a bug */
    }
    wb->offsets = offsets;
    memcpy(wb->lanes, lane_events, sizeof(wb->lanes));
    wb->sent_ms = metrics_now_ms();
    /* A send that fails leaves nothing in flight: finish writes again. */
    if (pg_status_send(wb->ps, wb->rows, wb->n, errstr, sizeof(errstr)))
        log_msg(NS_LOG_DEBUG, "write-back not sent yet: %s", errstr);
    return NS_OK;
}

/* One try of the write-back: the first waits for what was sent. */
static enum ns_err try_write(void *arg, const struct retry_state *state,
                             char *errstr, size_t errstr_size)
{
    struct writeback *wb = arg;
    enum ns_err err;

    if (state->attempt == 0 && pg_status_in_flight(wb->ps))
        err = pg_status_wait(wb->ps, errstr, errstr_size);
    else
        err = pg_status_write(wb->ps, wb->rows, wb->n, errstr, errstr_size);
    if (err == NS_ERR_PG_TRANSIENT) {
        metrics_target_seen(wb->metrics, METRICS_PG, 0);
        metrics_retry(wb->metrics, METRICS_PG, wb->lanes);
        /* a refused write (25006 read-only, 42501 no grant) is named in
         * /readyz while it lasts */
        metrics_pg_refused(wb->metrics, pg_status_last_sqlstate(wb->ps));
    }
    return err;
}

static void commit(struct writeback *wb)
{
    rd_kafka_resp_err_t kerr = rd_kafka_commit(wb->rk, wb->offsets, 0);

    if (kerr)
        /* The events were applied; whoever reads them again re-applies
         * them idempotently. */
        log_msg(NS_LOG_WARN, "could not commit offsets: %s",
                rd_kafka_err2str(kerr));
}

enum ns_err writeback_finish(struct writeback *wb,
                             const struct retry_policy *policy,
                             const struct retry_poller *poller, char *errstr,
                             size_t errstr_size)
{
    int64_t t0 = metrics_now_ms();
    struct retry_state once = {0, 0};
    enum ns_err err;

    if (!wb || !wb->offsets || wb->busy)  /* none yet: a rebalance at start */
        return NS_OK;
    wb->busy = 1;
    if (poller)
        err = retry_run(policy, poller, NS_OK, "could not write sync status to "
                        "PostgreSQL", try_write, wb, errstr, errstr_size);
    else
        err = try_write(wb, &once, errstr, errstr_size);
    wb->metrics->pg_ms_total += (double)(metrics_now_ms() - t0);
    log_msg(NS_LOG_DEBUG, "write-back of %zu rows landed %lld ms after it was "
            "sent, after a wait of %lld ms", wb->n,
            (long long)(metrics_now_ms() - wb->sent_ms),
            (long long)(metrics_now_ms() - t0));
    metrics_hist_observe(&wb->metrics->pg_seconds,
                         (double)(metrics_now_ms() - t0) / 1000.0);
    metrics_target_seen(wb->metrics, METRICS_PG, err != NS_ERR_PG_TRANSIENT);
    wb->busy = 0;
    if (err && err != NS_ERR_PG_PERMANENT) {
        if (err != NS_ERR_PG_TRANSIENT)
            log_msg(NS_LOG_ERROR, "could not write sync status: %s", errstr);
        return err;  /* pending: not committed */
    }
    if (err == NS_ERR_PG_PERMANENT)
        /* The graph is right; only the bookkeeping is lost. Loud, not
         * fatal. */
        log_msg(NS_LOG_ERROR, "could not write sync status: %s", errstr);
    else
        wb->metrics->writeback_rows += wb->n;
    commit(wb);
    clear_rows(wb);
    return NS_OK;
}
