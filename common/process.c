#include "process.h"

#include <stdio.h>
#include <stdlib.h>

#include "apply.h"
#include "change.h"
#include "deadletter.h"
#include "log.h"
#include "neo4j.h"
#include "prepare.h"

/* The batch being processed, as the steps below share it. */
struct batch_run {
    const struct process_env *env;
    const struct batch *b;
    struct batch_item *items;         /* one per message */
    struct change *changes;           /* coalesced */
    struct apply_result *results;     /* one per change */
    size_t nch;
    uint64_t lanes[LANE__COUNT];      /* messages per lane */
};

/* The batch's rows for PostgreSQL: SUCCESS for the applied upserts,
 * FAILED for the dead events whose row is known. */
static enum ns_err writeback_rows(struct batch_run *run)
{
    enum ns_err err = NS_OK;

    for (size_t i = 0; !err && i < run->nch; i++) {
        const struct change *ch = &run->changes[i];
        const char *keys[2] = {ch->key_values[0], ch->key_values[1]};

        if (run->results[i].status == APPLY_APPLIED &&
            ch->action == CHANGE_UPSERT)
            err = writeback_add_success(run->env->wb, ch->tbl, keys,
                                        ch->version,
                                        run->results[i].element_id);
    }
    for (size_t i = 0; !err && i < run->b->count; i++) {
        const struct batch_item *it = &run->items[i];
        const char *keys[2] = {it->keys[0], it->keys[1]};

        if (it->dead && it->has_keys && it->tbl)
            err = writeback_add_failed(run->env->wb, it->tbl, keys,
                                       it->reason);
    }
    return err;
}

/* Kafka is served between the single transactions of a split, so a
 * long one cannot outlast max.poll.interval.ms (apply's tick); a stop or
 * a revoke seen there ends the split. */
static int serve_kafka(void *opaque)
{
    const struct retry_poller *poller = opaque;

    return poller->poll(poller->opaque, 0);
}

/*
 * A poison pill: the same answer from the server, word for word,
 * retry.poison_after times in a row, and not one that names the server's
 * state (a leader switch, a database down or read-only) nor a server that
 * did not answer. Then the batch itself is the cause: split it, and what
 * fails alone is dead-lettered.
 */
static int is_poison(const struct batch_run *run,
                     const struct retry_state *state, const char *last_error)
{
    return state->same_in_a_row >= run->env->cfg->poison_after &&
           neo4j_last_failure(run->env->nc) == NEO4J_FAILURE_ANSWERED &&
           !neo4j_reason_is_environment(last_error);
}

/* One try of the batch's Neo4j transaction (retry_op); errstr holds the
 * last try's error when there was one. */
static enum ns_err try_apply(void *arg, const struct retry_state *state,
                             char *errstr, size_t errstr_size)
{
    struct batch_run *run = arg;
    struct metrics *metrics = run->env->metrics;
    struct apply_options opts = {0, serve_kafka,
                                 (void *)run->env->poller};
    struct apply_stats st;
    int64_t t0 = metrics_now_ms();
    enum ns_err err;

    if (is_poison(run, state, errstr)) {
        opts.force_split = 1;
        log_msg(NS_LOG_WARN, "the same failure %d times in a row: taking it as "
                "the fault of an event of this batch; applying its %zu "
                "changes one by one: %s", state->same_in_a_row, run->nch,
                errstr);
    }
    err = apply_changes(run->env->nc, run->env->map, run->changes, run->nch,
                        run->results, &st, &opts, errstr, errstr_size);
    metrics->neo4j_ms_total += (double)(metrics_now_ms() - t0);
    metrics->neo4j_transactions += st.transactions;
    if (run->nch)
        metrics_hist_observe(&metrics->neo4j_seconds,
                             (double)(metrics_now_ms() - t0) / 1000.0);
    metrics_target_seen(metrics, METRICS_NEO4J, !ns_err_is_retriable(err));
    if (ns_err_is_retriable(err))
        metrics_retry(metrics, METRICS_NEO4J, run->lanes);
    return err;
}

/* Count what became of the changes; the dead ones take the messages
 * folded into them along. */
static void record_results(struct batch_run *run)
{
    struct metrics *metrics = run->env->metrics;

    for (size_t i = 0; i < run->nch; i++) {
        const struct apply_result *res = &run->results[i];
        struct batch_item *it = &run->items[run->changes[i].msg_index];

        if (res->status == APPLY_FAILED) {
            prepare_item_dead(it, NS_ERR_NEO4J_PERMANENT, res->reason);
            prepare_dead_folded(run->items, run->b->count, &run->changes[i],
                                res->reason);
        } else if (res->status == APPLY_APPLIED) {
            metrics->lanes[it->lane].applied++;
            metrics_sync_observe(metrics, it->lane, it->source_ts_ms);
        } else {
            metrics->lanes[it->lane].skipped++;
        }
    }
}

/* Apply, retried until it succeeds, fails for good, or the poller gives
 * up. The previous batch's write-back, sent before, lands after the
 * first try: it ran in PostgreSQL while Neo4j worked. */
static enum ns_err apply_run(struct batch_run *run, char *errstr,
                             size_t errstr_size)
{
    const struct process_env *env = run->env;
    struct retry_state first = {0, 0};
    enum ns_err err, wb_err;
    char why[1024];

    err = try_apply(run, &first, errstr, errstr_size);
    wb_err = writeback_finish(env->wb, env->policy, env->poller, why,
                              sizeof(why));
    if (wb_err) {
        ns_err_set(errstr, errstr_size, "could not write the previous "
                   "batch's sync status: %s", why);
        return wb_err;
    }
    if (ns_err_is_retriable(err) && !*env->revoked)
        err = retry_run(env->policy, env->poller, err, "could not commit to "
                        "Neo4j", try_apply, run, errstr, errstr_size);
    if (err && !*env->revoked)
        log_msg(NS_LOG_ERROR, "could not apply batch: %s", errstr);
    return err;
}

/* Dead letters, then this batch's write-back. */
static enum ns_err finish_run(struct batch_run *run, char *errstr,
                              size_t errstr_size)
{
    const struct process_env *env = run->env;
    rd_kafka_topic_partition_list_t *offs;
    enum ns_err err;
    char why[1024];

    err = deadletter_send(env->dlq, run->items, run->b->count, env->policy,
                          env->poller, env->metrics, run->lanes, why,
                          sizeof(why));
    if (err || *env->revoked) {
        ns_err_set(errstr, errstr_size, "could not send the batch's dead "
                   "letters: %s", why);
        return err;
    }
    err = writeback_finish(env->wb, env->policy, env->poller, why,
                           sizeof(why));
    if (err) {
        ns_err_set(errstr, errstr_size, "could not write the previous "
                   "batch's sync status: %s", why);
        return err;
    }
    err = writeback_rows(run);
    if (err) {
        ns_err_set(errstr, errstr_size, "could not prepare the sync status "
                   "rows: %s", ns_err_str(err));
        return err;
    }
    offs = batch_offsets(run->b, 0, NULL);
    err = offs ? writeback_send(env->wb, offs, run->lanes) : NS_ERR_NOMEM;
    if (err)
        ns_err_set(errstr, errstr_size, "could not start the sync status "
                   "write-back: %s", ns_err_str(err));
    return err;
}

enum ns_err process_batch(const struct process_env *env,
                          const struct batch *b, char *errstr,
                          size_t errstr_size)
{
    struct batch_run run = {env, b, NULL, NULL, NULL, 0, {0}};
    size_t n = b->count, raw = 0;
    int64_t t0 = metrics_now_ms();
    enum ns_err err = NS_OK;

    run.items = calloc(n ? n : 1, sizeof(*run.items));
    run.changes = calloc(n ? n : 1, sizeof(*run.changes));
    if (!run.items || !run.changes) {
        err = NS_ERR_NOMEM;
        ns_err_set(errstr, errstr_size, "out of memory for a batch of %zu "
                   "messages", n);
        goto cleanup;
    }
    raw = prepare_batch(env->cfg, env->map, b, run.items, run.changes,
                        env->metrics, run.lanes);
    run.nch = change_coalesce(run.changes, raw);
    for (size_t i = 0; i < run.nch; i++)
        run.items[run.changes[i].msg_index].survives = 1;
    /* events folded into a later change of the same key count as applied
     * through it */
    if (raw > run.nch)
        log_msg(NS_LOG_DEBUG, "coalesced %zu changes into %zu", raw, run.nch);
    run.results = calloc(run.nch ? run.nch : 1, sizeof(*run.results));
    if (!run.results) {
        err = NS_ERR_NOMEM;
        ns_err_set(errstr, errstr_size, "out of memory for the results of "
                   "%zu changes", run.nch);
        goto cleanup;
    }
    err = apply_run(&run, errstr, errstr_size);
    if (!err && !*env->revoked) {
        record_results(&run);
        err = finish_run(&run, errstr, errstr_size);
    }
    if (*env->revoked) {
        err = NS_OK;  /* abandoned: the caller rewinds */
        goto cleanup;
    }
    if (err)
        goto cleanup;
    env->metrics->batches++;
    metrics_hist_observe(&env->metrics->batch_size, (double)n);
    env->metrics->last_batch_ms = (double)(metrics_now_ms() - t0);
    log_msg(NS_LOG_DEBUG, "batch of %zu messages, %zu changes applied in "
            "%.0f ms", n, run.nch, env->metrics->last_batch_ms);

cleanup:
    for (size_t i = 0; run.changes && i < run.nch; i++)
        change_clear(&run.changes[i]);
    free(run.results);
    free(run.changes);
    free(run.items);
    return err;
}
