/*
 * metrics.h - a worker's counters, histograms and health, and their export.
 *
 * The consumer loop's thread is the only writer. Readers are the loop
 * itself, the stats file (JSON, written by the loop) and the HTTP server's
 * thread (Prometheus text, /healthz, /readyz). Scalars are C11 atomics, so
 * a counter update on the hot path is one atomic add and the HTTP thread
 * never blocks the loop; only the per-partition lag table, updated once a
 * second, is guarded by a mutex.
 */
#ifndef NS_METRICS_H
#define NS_METRICS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "buf.h"
#include "err.h"
#include "mapping.h"

/* The servers a worker depends on: retries and readiness are per target. */
enum metrics_target {
    METRICS_NEO4J = 0,
    METRICS_PG,
    METRICS_KAFKA,
    METRICS__TARGETS
};

struct metrics_lane {
    _Atomic uint64_t consumed;     /* Kafka messages read */
    _Atomic uint64_t applied;      /* changes committed to Neo4j */
    _Atomic uint64_t skipped;      /* tombstones, write-back echoes, stale */
    _Atomic uint64_t dlq;          /* sent to the DLQ */
    _Atomic uint64_t retried[METRICS__TARGETS]; /* events of retried batches,
                                                   once per retry */
    _Atomic int64_t lag;           /* messages behind the high watermark */
};

#define METRICS_HIST_BUCKETS_MAX 16

/* The SQLSTATEs with which PostgreSQL refuses the write-back while the
 * worker retries it: the cause lies with the cluster or its grants. */
enum metrics_pg_refusal {
    METRICS_PG_READ_ONLY = 0,      /* 25006 read_only_sql_transaction */
    METRICS_PG_PRIVILEGE,          /* 42501 insufficient_privilege */
    METRICS__PG_REFUSALS
};

/* Not ready while the loop has not turned for this long: it is blocked in
 * a call (a Neo4j request near its timeout, a Kafka commit while the
 * brokers are away) and not consuming. */
#define METRICS_READY_STALL_MS 30000

/*
 * A Prometheus histogram with fixed upper bounds. counts[i] holds the
 * observations of bucket i alone (counts[nbounds] is +Inf); the export
 * makes them cumulative and takes _count from the buckets, so _count and
 * the +Inf bucket always agree.
 */
struct metrics_hist {
    const double *bounds;          /* static, ascending */
    int nbounds;
    _Atomic uint64_t counts[METRICS_HIST_BUCKETS_MAX + 1];
    _Atomic uint64_t sum_micro;    /* sum of the values times 10^6: an
                                      atomic double would need libatomic */
};

/*
 * The stages of a change's way from PostgreSQL to Neo4j, whose sum is the
 * sync latency: capture (commit to Debezium's event, the envelope's
 * ts_ms), kafka (to the record's timestamp in the broker), worker (to the
 * start of its batch's Neo4j transaction: fetch, batching, the batch
 * before), neo4j (to its commit, retries included).
 */
enum metrics_stage {
    METRICS_STAGE_CAPTURE,
    METRICS_STAGE_KAFKA,
    METRICS_STAGE_WORKER,
    METRICS_STAGE_NEO4J,
    METRICS__STAGES
};

/* Consumer lag of one assigned partition. */
struct metrics_partition {
    char topic[192];
    int32_t partition;
    int lane;
    int64_t lag;
};

struct metrics {
    struct metrics_lane lanes[LANE__COUNT];
    _Atomic uint64_t batches;
    _Atomic uint64_t neo4j_transactions;
    _Atomic uint64_t neo4j_retries;
    _Atomic uint64_t pg_retries;
    _Atomic uint64_t kafka_retries;
    _Atomic uint64_t writeback_rows;
    _Atomic uint64_t markers_pruned;   /* delete markers past the horizon */
    _Atomic uint64_t pg_refused[METRICS__PG_REFUSALS]; /* refused writes */
    double last_batch_ms;          /* these only go to the stats file, */
    double neo4j_ms_total;         /* read and written by the loop alone */
    double pg_ms_total;            /* waiting for the write-back */
    int64_t started_ms;            /* monotonic, set by metrics_init */
    int64_t started_unix_ms;       /* wall clock, set by metrics_init */

    struct metrics_hist batch_size;     /* messages per batch */
    struct metrics_hist neo4j_seconds;  /* one batch's commit to Neo4j */
    struct metrics_hist pg_seconds;     /* one sync_status write-back */
    struct metrics_hist sync_seconds[LANE__COUNT]; /* PG commit to Neo4j */
    struct metrics_hist stage_seconds[METRICS__STAGES]; /* its stages */

    /* health, as last seen by the loop */
    _Atomic int64_t heartbeat_ms;  /* monotonic time of the last loop turn */
    _Atomic int down[METRICS__TARGETS]; /* non-zero: last contact failed */
    _Atomic int assigned;          /* partitions assigned to this member */
    _Atomic int pg_refusing;       /* 1 + the refusal of the last failed
                                      write-back, 0 when none */

    int lane_on[LANE__COUNT];      /* lanes the worker consumes */
    pthread_mutex_t lock;          /* guards parts and part_count */
    struct metrics_partition *parts;
    size_t part_count;
    size_t part_cap;
};

/*
 * Set every number to zero and start the clocks. lanes (LANE__COUNT flags,
 * may be NULL for all) selects the lanes the export shows. Release with
 * metrics_destroy().
 */
enum ns_err metrics_init(struct metrics *m, const int *lanes);

/* Free the partition table and the mutex; a zeroed struct is fine. */
void metrics_destroy(struct metrics *m);

/* Milliseconds on the monotonic clock. */
int64_t metrics_now_ms(void);

/* Record one observation. */
void metrics_hist_observe(struct metrics_hist *h, double value);

/*
 * One end-to-end sync latency: from source_ts_ms (the event's
 * source.ts_ms, PostgreSQL's commit time on the wall clock) to now, the
 * Neo4j commit. Ignored when source_ts_ms is not positive.
 */
void metrics_sync_observe(struct metrics *m, int lane, int64_t source_ts_ms);

/*
 * The stages of one applied change (enum metrics_stage), from wall-clock
 * instants in ms: PostgreSQL's commit, Debezium's event, the Kafka record,
 * the start of its batch's Neo4j transaction; the end is now. A stage
 * with an unknown end (not positive) is not observed; one the hosts'
 * clocks make negative counts as 0.
 */
void metrics_stages_observe(struct metrics *m, int64_t source_ts_ms,
                            int64_t envelope_ts_ms, int64_t kafka_ts_ms,
                            int64_t apply_start_ms);

/* The wall clock in ms since the epoch (the instants above). */
int64_t metrics_unix_ms(void);

/*
 * A batch is retried because target failed: counts one retry and, per
 * lane, the batch's events (lane_events, LANE__COUNT entries).
 */
void metrics_retry(struct metrics *m, enum metrics_target target,
                   const uint64_t *lane_events);

/* The loop saw target answer (up non-zero) or fail (0). PostgreSQL seen
 * up also ends a refusal (metrics_pg_refused). */
void metrics_target_seen(struct metrics *m, enum metrics_target target,
                         int up);

/*
 * A write-back failed with a transient error whose SQLSTATE is sqlstate
 * (pg_status_last_sqlstate(); NULL or "" for none). 25006 and 42501 are
 * counted in nexus_pg_write_refused_total and make /readyz name them until
 * PostgreSQL is seen up; any other cause ends the refusal (the readiness
 * reason is then the outage).
 */
void metrics_pg_refused(struct metrics *m, const char *sqlstate);

/* The loop is alive: called on every turn, also while backing off. */
void metrics_heartbeat(struct metrics *m);

/*
 * Replace the per-partition lag table (copied; count entries) and the
 * number of assigned partitions (a partition without a known watermark
 * yet is assigned but has no lag entry).
 */
enum ns_err metrics_partitions_set(struct metrics *m,
                                   const struct metrics_partition *parts,
                                   size_t count, int assigned);

/*
 * Liveness: non-zero when the loop turned within stuck_ms. Readiness:
 * non-zero when Neo4j, PostgreSQL and Kafka answered on their last
 * contact, the loop turned within METRICS_READY_STALL_MS and partitions
 * are assigned; otherwise why receives a short reason.
 */
int metrics_alive(const struct metrics *m, int64_t stuck_ms);
int metrics_ready(const struct metrics *m, char *why, size_t why_size);

/*
 * Append the Prometheus text exposition (format 0.0.4) of every metric to
 * out, labelled worker=worker. version goes into nexus_build_info.
 */
enum ns_err metrics_write_prometheus(struct metrics *m, const char *worker,
                                     const char *version, struct buf *out);

/* Write the counters as JSON to f. */
void metrics_write_json(const struct metrics *m, const char *worker, FILE *f);

/* Write the counters to path through a temporary file and rename. */
enum ns_err metrics_write_file(const struct metrics *m, const char *worker,
                               const char *path);

#endif
