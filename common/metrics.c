#include "metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

/* Bucket bounds: batch sizes up to the largest sensible batch.max_events;
 * Neo4j and PostgreSQL from a fast local commit to a request timeout; the
 * sync latency from a lane's normal pace to a long outage. */
static const double batch_bounds[] = {1, 5, 10, 25, 50, 100, 250, 500,
                                      1000, 2000, 5000};
static const double neo4j_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                      0.5, 1, 2.5, 5, 10, 30, 60};
static const double pg_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                   0.1, 0.25, 0.5, 1, 2.5, 5, 10};
static const double sync_bounds[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                     30, 60, 120, 300, 600, 1800};

/* a stage is often milliseconds: finer at the low end */
static const double stage_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                      0.5, 1, 2.5, 5, 10, 30, 60, 300};
static const char *const stage_names[METRICS__STAGES] = {
    "capture", "kafka", "worker", "neo4j"};

#define NBOUNDS(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *const target_names[] = {"neo4j", "postgres", "kafka"};

/* By enum metrics_pg_refusal: the SQLSTATE, and what it says in /readyz. */
static const char *const pg_refusal_states[] = {"25006", "42501"};
static const char *const pg_refusal_reasons[] = {
    "postgres refuses writes: 25006 read-only transaction (a replica after "
    "failover?)",
    "postgres refuses writes: 42501 insufficient privilege (a grant of the "
    "writer role missing?)"};

int64_t metrics_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t unix_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void hist_init(struct metrics_hist *h, const double *bounds, int n)
{
    h->bounds = bounds;
    h->nbounds = n < METRICS_HIST_BUCKETS_MAX ? n : METRICS_HIST_BUCKETS_MAX;
}

enum ns_err metrics_init(struct metrics *m, const int *lanes)
{
    memset(m, 0, sizeof(*m));
    if (pthread_mutex_init(&m->lock, NULL) != 0)
        return NS_ERR_NOMEM;
    m->started_ms = metrics_now_ms();
    m->started_unix_ms = unix_ms();
    m->heartbeat_ms = m->started_ms;
    for (int l = 0; l < LANE__COUNT; l++) {
        m->lane_on[l] = lanes ? lanes[l] != 0 : 1;
        hist_init(&m->sync_seconds[l], sync_bounds, NBOUNDS(sync_bounds));
    }
    for (int st = 0; st < METRICS__STAGES; st++)
        hist_init(&m->stage_seconds[st], stage_bounds, NBOUNDS(stage_bounds));
    hist_init(&m->batch_size, batch_bounds, NBOUNDS(batch_bounds));
    hist_init(&m->neo4j_seconds, neo4j_bounds, NBOUNDS(neo4j_bounds));
    hist_init(&m->pg_seconds, pg_bounds, NBOUNDS(pg_bounds));
    return NS_OK;
}

void metrics_destroy(struct metrics *m)
{
    if (!m || !m->started_ms)
        return;
    pthread_mutex_destroy(&m->lock);
    free(m->parts);
    m->parts = NULL;
    m->part_count = m->part_cap = 0;
    m->started_ms = 0;
}

void metrics_hist_observe(struct metrics_hist *h, double value)
{
    int i = 0;

    while (i < h->nbounds && value > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum_micro += (uint64_t)(value * 1e6 + 0.5);
}

void metrics_sync_observe(struct metrics *m, int lane, int64_t source_ts_ms)
{
    int64_t ms;

    if (source_ts_ms <= 0 || lane < 0 || lane >= LANE__COUNT)
        return;
    ms = unix_ms() - source_ts_ms;
    /* clocks of different hosts may disagree by a little */
    metrics_hist_observe(&m->sync_seconds[lane], ms > 0 ? ms / 1000.0 : 0.0);
}

int64_t metrics_unix_ms(void)
{
    return unix_ms();
}

void metrics_stages_observe(struct metrics *m, int64_t source_ts_ms,
                            int64_t envelope_ts_ms, int64_t kafka_ts_ms,
                            int64_t apply_start_ms)
{
    int64_t at[METRICS__STAGES + 1] = {source_ts_ms, envelope_ts_ms,
                                       kafka_ts_ms, apply_start_ms,
                                       unix_ms()};

    for (int st = 0; st < METRICS__STAGES; st++) {
        int64_t ms = at[st + 1] - at[st];

        if (at[st] > 0 && at[st + 1] > 0)
            metrics_hist_observe(&m->stage_seconds[st],
                                 ms > 0 ? ms / 1000.0 : 0.0);
    }
}

void metrics_retry(struct metrics *m, enum metrics_target target,
                   const uint64_t *lane_events)
{
    if (target == METRICS_NEO4J)
        m->neo4j_retries++;
    else if (target == METRICS_PG)
        m->pg_retries++;
    else
        m->kafka_retries++;
    for (int l = 0; lane_events && l < LANE__COUNT; l++)
        m->lanes[l].retried[target] += lane_events[l];
    m->down[target] = 1;
}

void metrics_target_seen(struct metrics *m, enum metrics_target target,
                         int up)
{
    m->down[target] = !up;
    if (target == METRICS_PG && up)
        m->pg_refusing = 0;
}

void metrics_pg_refused(struct metrics *m, const char *sqlstate)
{
    int refusing = 0;

    for (int r = 0; sqlstate && r < METRICS__PG_REFUSALS && !refusing; r++)
        if (strcmp(sqlstate, pg_refusal_states[r]) == 0) {
            m->pg_refused[r]++;
            refusing = r + 1;
        }
    m->pg_refusing = refusing;
}

void metrics_heartbeat(struct metrics *m)
{
    m->heartbeat_ms = metrics_now_ms();
}

enum ns_err metrics_partitions_set(struct metrics *m,
                                   const struct metrics_partition *parts,
                                   size_t count, int assigned)
{
    enum ns_err err = NS_OK;

    pthread_mutex_lock(&m->lock);
    if (count > m->part_cap) {
        struct metrics_partition *p = realloc(m->parts, count * sizeof(*p));
        if (!p) {
            err = NS_ERR_NOMEM;
            goto cleanup;
        }
        m->parts = p;
        m->part_cap = count;
    }
    if (count)
        memcpy(m->parts, parts, count * sizeof(*parts));
    m->part_count = count;
    m->assigned = assigned;
cleanup:
    pthread_mutex_unlock(&m->lock);
    return err;
}

int metrics_alive(const struct metrics *m, int64_t stuck_ms)
{
    return metrics_now_ms() - m->heartbeat_ms <= stuck_ms;
}

int metrics_ready(const struct metrics *m, char *why, size_t why_size)
{
    static const char *const reasons[] = {
        "neo4j unreachable", "postgresql unreachable", "kafka unreachable"};
    int64_t age;

    /* a server outage first: it is also why partitions may be missing */
    for (int t = 0; t < METRICS__TARGETS; t++)
        if (m->down[t]) {
            int refusing = m->pg_refusing;

            /* reachable, but refusing: say why, the fix differs */
            snprintf(why, why_size, "%s",
                     t == METRICS_PG && refusing > 0 &&
                     refusing <= METRICS__PG_REFUSALS
                         ? pg_refusal_reasons[refusing - 1] : reasons[t]);
            return 0;
        }
    age = metrics_now_ms() - m->heartbeat_ms;
    if (age > METRICS_READY_STALL_MS) {
        snprintf(why, why_size, "consumer loop blocked for %lld s",
                 (long long)(age / 1000));
        return 0;
    }
    if (m->assigned <= 0) {
        snprintf(why, why_size, "no partitions assigned");
        return 0;
    }
    return 1;
}

/* --- Prometheus text ----------------------------------------------------- */

static enum ns_err head(struct buf *out, const char *name, const char *type,
                        const char *help)
{
    return buf_addf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
                    type);
}

/* Label values here are worker names, lane names and topic names: plain
 * identifiers, but escape as the format asks anyway. */
static enum ns_err label_value(struct buf *out, const char *s)
{
    enum ns_err err = NS_OK;

    for (; *s && !err; s++) {
        if (*s == '\\' || *s == '"')
            err = buf_addf(out, "\\%c", *s);
        else if (*s == '\n')
            err = buf_adds(out, "\\n");
        else
            err = buf_add(out, s, 1);
    }
    return err;
}

static enum ns_err hist_write(struct buf *out, const char *name,
                              const struct metrics_hist *h,
                              const char *labels)
{
    uint64_t cum = 0;
    enum ns_err err = NS_OK;

    for (int i = 0; i <= h->nbounds && !err; i++) {
        cum += h->counts[i];
        if (i < h->nbounds)
            err = buf_addf(out, "%s_bucket{%s,le=\"%g\"} %llu\n", name,
                           labels, h->bounds[i], (unsigned long long)cum);
        else
            err = buf_addf(out, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name,
                           labels, (unsigned long long)cum);
    }
    if (!err)
        err = buf_addf(out, "%s_sum{%s} %.6f\n%s_count{%s} %llu\n", name,
                       labels, (double)h->sum_micro / 1e6, name, labels,
                       (unsigned long long)cum);
    return err;
}

/* One counter per consumed lane. */
static enum ns_err lane_counter(struct buf *out, const struct metrics *m,
                                const char *wl, const char *name,
                                const char *help, size_t field)
{
    enum ns_err err = head(out, name, "counter", help);

    for (int l = 0; l < LANE__COUNT && !err; l++) {
        const _Atomic uint64_t *v;
        if (!m->lane_on[l])
            continue;
        v = (const _Atomic uint64_t *)((const char *)&m->lanes[l] + field);
        err = buf_addf(out, "%s{%s,lane=\"%s\"} %llu\n", name, wl,
                       mapping_lane_name((enum mapping_lane)l),
                       (unsigned long long)*v);
    }
    return err;
}

static enum ns_err write_counters(struct buf *out, const struct metrics *m,
                                  const char *wl)
{
    enum ns_err err;

    err = lane_counter(out, m, wl, "nexus_events_consumed_total",
                       "Kafka messages read from the lane topics.",
                       offsetof(struct metrics_lane, consumed));
    if (!err)
        err = lane_counter(out, m, wl, "nexus_events_applied_total",
                           "Changes committed to Neo4j.",
                           offsetof(struct metrics_lane, applied));
    if (!err)
        err = lane_counter(out, m, wl, "nexus_events_skipped_total",
                           "Events with nothing to apply: tombstones, "
                           "write-back echoes, stale changes.",
                           offsetof(struct metrics_lane, skipped));
    if (!err)
        err = lane_counter(out, m, wl, "nexus_events_dlq_total",
                           "Events sent to the dead letter topic.",
                           offsetof(struct metrics_lane, dlq));
    if (!err)
        err = head(out, "nexus_events_retried_total", "counter",
                   "Events of batches retried after a transient failure, "
                   "once per retry, by the server that failed.");
    for (int l = 0; l < LANE__COUNT && !err; l++)
        for (int t = 0; t < METRICS__TARGETS && !err && m->lane_on[l]; t++)
            err = buf_addf(out, "nexus_events_retried_total{%s,lane=\"%s\","
                                "target=\"%s\"} %llu\n", wl,
                           mapping_lane_name((enum mapping_lane)l),
                           target_names[t],
                           (unsigned long long)m->lanes[l].retried[t]);
    if (!err)
        err = head(out, "nexus_retries_total", "counter",
                   "Batch retries after a transient failure, by the server "
                   "that failed.");
    if (!err)
        err = buf_addf(out, "nexus_retries_total{%s,target=\"neo4j\"} %llu\n"
                            "nexus_retries_total{%s,target=\"postgres\"} %llu\n"
                            "nexus_retries_total{%s,target=\"kafka\"} %llu\n",
                       wl, (unsigned long long)m->neo4j_retries, wl,
                       (unsigned long long)m->pg_retries, wl,
                       (unsigned long long)m->kafka_retries);
    if (!err)
        err = head(out, "nexus_pg_write_refused_total", "counter",
                   "Write-back attempts PostgreSQL refused and the worker "
                   "retries, by SQLSTATE: 25006 read-only transaction (a "
                   "replica), 42501 insufficient privilege.");
    for (int r = 0; r < METRICS__PG_REFUSALS && !err; r++)
        err = buf_addf(out, "nexus_pg_write_refused_total{%s,sqlstate=\"%s\"} "
                            "%llu\n", wl, pg_refusal_states[r],
                       (unsigned long long)m->pg_refused[r]);
    if (!err)
        err = head(out, "nexus_batches_total", "counter",
                   "Batches applied and committed.");
    if (!err)
        err = buf_addf(out, "nexus_batches_total{%s} %llu\n", wl,
                       (unsigned long long)m->batches);
    if (!err)
        err = head(out, "nexus_neo4j_transactions_total", "counter",
                   "Neo4j transactions run (more than one per batch when a "
                   "rejected batch is split).");
    if (!err)
        err = buf_addf(out, "nexus_neo4j_transactions_total{%s} %llu\n", wl,
                       (unsigned long long)m->neo4j_transactions);
    if (!err)
        err = head(out, "nexus_writeback_rows_total", "counter",
                   "Rows whose sync_status was written back to PostgreSQL.");
    if (!err)
        err = buf_addf(out, "nexus_writeback_rows_total{%s} %llu\n", wl,
                       (unsigned long long)m->writeback_rows);
    if (!err)
        err = head(out, "nexus_tombstones_pruned_total", "counter",
                   "Delete markers (NexusTombstone) pruned past the horizon.");
    if (!err)
        err = buf_addf(out, "nexus_tombstones_pruned_total{%s} %llu\n", wl,
                       (unsigned long long)m->markers_pruned);
    return err;
}

static enum ns_err write_histograms(struct buf *out, const struct metrics *m,
                                    const char *wl)
{
    char labels[256];
    enum ns_err err;

    err = head(out, "nexus_batch_size_events", "histogram",
               "Kafka messages per applied batch.");
    if (!err)
        err = hist_write(out, "nexus_batch_size_events", &m->batch_size, wl);
    if (!err)
        err = head(out, "nexus_neo4j_commit_seconds", "histogram",
                   "Time to commit one batch to Neo4j, failed attempts "
                   "included (one transaction; several when a rejected "
                   "batch is split).");
    if (!err)
        err = hist_write(out, "nexus_neo4j_commit_seconds", &m->neo4j_seconds,
                         wl);
    if (!err)
        err = head(out, "nexus_pg_writeback_seconds", "histogram",
                   "Time the loop waited for one batch's sync_status "
                   "write-back to PostgreSQL, which runs while the next "
                   "batch goes to Neo4j; failed attempts included.");
    if (!err)
        err = hist_write(out, "nexus_pg_writeback_seconds", &m->pg_seconds,
                         wl);
    if (!err)
        err = head(out, "nexus_sync_latency_seconds", "histogram",
                   "End-to-end sync latency of applied changes: from the "
                   "PostgreSQL commit (source.ts_ms) to the Neo4j commit.");
    for (int l = 0; l < LANE__COUNT && !err; l++) {
        if (!m->lane_on[l])
            continue;
        snprintf(labels, sizeof(labels), "%s,lane=\"%s\"", wl,
                 mapping_lane_name((enum mapping_lane)l));
        err = hist_write(out, "nexus_sync_latency_seconds",
                         &m->sync_seconds[l], labels);
    }
    if (!err)
        err = head(out, "nexus_sync_stage_seconds", "histogram",
                   "The sync latency's stages: capture (PostgreSQL commit "
                   "to Debezium's event), kafka (to the record's broker "
                   "timestamp), worker (to the start of the batch's Neo4j "
                   "transaction), neo4j (to its commit).");
    for (int st = 0; st < METRICS__STAGES && !err; st++) {
        snprintf(labels, sizeof(labels), "%s,stage=\"%s\"", wl,
                 stage_names[st]);
        err = hist_write(out, "nexus_sync_stage_seconds",
                         &m->stage_seconds[st], labels);
    }
    return err;
}

static enum ns_err write_lag(struct buf *out, struct metrics *m,
                             const char *wl)
{
    enum ns_err err;

    err = head(out, "nexus_lane_lag_messages", "gauge",
               "Messages behind the high watermark, summed over the "
               "lane's assigned partitions.");
    for (int l = 0; l < LANE__COUNT && !err; l++)
        if (m->lane_on[l])
            err = buf_addf(out, "nexus_lane_lag_messages{%s,lane=\"%s\"} "
                                "%lld\n", wl,
                           mapping_lane_name((enum mapping_lane)l),
                           (long long)m->lanes[l].lag);
    if (!err)
        err = head(out, "nexus_consumer_lag_messages", "gauge",
                   "Messages behind the high watermark per assigned "
                   "partition.");
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->part_count && !err; i++) {
        const struct metrics_partition *p = &m->parts[i];
        err = buf_addf(out, "nexus_consumer_lag_messages{%s,lane=\"%s\","
                            "topic=\"", wl,
                       p->lane >= 0 ? mapping_lane_name(
                                          (enum mapping_lane)p->lane)
                                    : "unknown");
        if (!err)
            err = label_value(out, p->topic);
        if (!err)
            err = buf_addf(out, "\",partition=\"%d\"} %lld\n",
                           (int)p->partition, (long long)p->lag);
    }
    pthread_mutex_unlock(&m->lock);
    if (!err)
        err = head(out, "nexus_assigned_partitions", "gauge",
                   "Partitions assigned to this consumer group member.");
    if (!err)
        err = buf_addf(out, "nexus_assigned_partitions{%s} %d\n", wl,
                       (int)m->assigned);
    return err;
}

static enum ns_err write_health(struct buf *out, const struct metrics *m,
                                const char *wl, const char *worker,
                                const char *version)
{
    char why[64];
    enum ns_err err;

    err = head(out, "nexus_target_up", "gauge",
               "1 when the server answered the worker's last contact.");
    for (int t = 0; t < METRICS__TARGETS && !err; t++)
        err = buf_addf(out, "nexus_target_up{%s,target=\"%s\"} %d\n", wl,
                       target_names[t], m->down[t] ? 0 : 1);
    if (!err)
        err = head(out, "nexus_ready", "gauge",
                   "1 when /readyz answers 200.");
    if (!err)
        err = buf_addf(out, "nexus_ready{%s} %d\n", wl,
                       metrics_ready(m, why, sizeof(why)));
    if (!err)
        err = head(out, "nexus_loop_heartbeat_age_seconds", "gauge",
                   "Time since the consumer loop last turned.");
    if (!err)
        err = buf_addf(out, "nexus_loop_heartbeat_age_seconds{%s} %.3f\n", wl,
                       (double)(metrics_now_ms() - m->heartbeat_ms) / 1000.0);
    if (!err)
        err = head(out, "nexus_start_time_seconds", "gauge",
                   "Start time of the worker process, Unix time.");
    if (!err)
        err = buf_addf(out, "nexus_start_time_seconds{%s} %.3f\n", wl,
                       (double)m->started_unix_ms / 1000.0);
    if (!err)
        err = head(out, "nexus_build_info", "gauge",
                   "Version of the worker and of librdkafka; always 1.");
    if (!err)
        err = buf_adds(out, "nexus_build_info{worker=\"");
    if (!err)
        err = label_value(out, worker);
    if (!err)
        err = buf_addf(out, "\",version=\"%s\",librdkafka=\"%s\"} 1\n",
                       version, rd_kafka_version_str());
    return err;
}

enum ns_err metrics_write_prometheus(struct metrics *m, const char *worker,
                                     const char *version, struct buf *out)
{
    struct buf wl;
    enum ns_err err;

    buf_init(&wl, 256);
    err = buf_adds(&wl, "worker=\"");
    if (!err)
        err = label_value(&wl, worker);
    if (!err)
        err = buf_adds(&wl, "\"");
    if (!err)
        err = write_counters(out, m, buf_str(&wl));
    if (!err)
        err = write_histograms(out, m, buf_str(&wl));
    if (!err)
        err = write_lag(out, m, buf_str(&wl));
    if (!err)
        err = write_health(out, m, buf_str(&wl), worker, version);
    buf_free(&wl);
    return err;
}

/* --- JSON stats file ----------------------------------------------------- */

void metrics_write_json(const struct metrics *m, const char *worker, FILE *f)
{
    fprintf(f, "{\"worker\":\"%s\",\"uptime_ms\":%lld,\"batches\":%llu,"
               "\"neo4j_transactions\":%llu,\"neo4j_retries\":%llu,"
               "\"pg_retries\":%llu,\"kafka_retries\":%llu,"
               "\"writeback_rows\":%llu,\"last_batch_ms\":%.1f,"
               "\"neo4j_ms_total\":%.1f,\"pg_ms_total\":%.1f,"
               "\"assigned\":%d,\"lanes\":{",
            worker, (long long)(metrics_now_ms() - m->started_ms),
            (unsigned long long)m->batches,
            (unsigned long long)m->neo4j_transactions,
            (unsigned long long)m->neo4j_retries,
            (unsigned long long)m->pg_retries,
            (unsigned long long)m->kafka_retries,
            (unsigned long long)m->writeback_rows, m->last_batch_ms,
            m->neo4j_ms_total, m->pg_ms_total, (int)m->assigned);
    for (int l = 0; l < LANE__COUNT; l++) {
        const struct metrics_lane *ml = &m->lanes[l];
        fprintf(f, "%s\"%s\":{\"consumed\":%llu,\"applied\":%llu,"
                   "\"skipped\":%llu,\"dlq\":%llu,\"lag\":%lld}",
                l ? "," : "", mapping_lane_name((enum mapping_lane)l),
                (unsigned long long)ml->consumed,
                (unsigned long long)ml->applied,
                (unsigned long long)ml->skipped, (unsigned long long)ml->dlq,
                (long long)ml->lag);
    }
    fputs("}}\n", f);
}

enum ns_err metrics_write_file(const struct metrics *m, const char *worker,
                               const char *path)
{
    char tmp[1024];
    FILE *f;
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);

    if (n < 0 || (size_t)n >= sizeof(tmp))
        return NS_ERR_LIMIT;
    f = fopen(tmp, "w");
    if (!f)
        return NS_ERR_IO;
    metrics_write_json(m, worker, f);
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        return NS_ERR_IO;
    return NS_OK;
}
