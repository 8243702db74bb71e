/*
 * metrics.h - a worker's counters, per lane, and their export.
 *
 * Counters are plain integers owned by the consumer loop's thread. They are
 * written as one JSON object to a stats file (atomically, by rename) that
 * the demo's progress display and the tests read.
 */
#ifndef NS_METRICS_H
#define NS_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "err.h"
#include "mapping.h"

struct metrics_lane {
    uint64_t consumed;     /* Kafka messages read */
    uint64_t applied;      /* changes committed to Neo4j */
    uint64_t skipped;      /* tombstones, write-back echoes, stale */
    uint64_t dlq;          /* sent to the DLQ */
    int64_t lag;           /* messages behind the high watermark */
};

struct metrics {
    struct metrics_lane lanes[LANE__COUNT];
    uint64_t batches;
    uint64_t neo4j_transactions;
    uint64_t neo4j_retries;
    uint64_t pg_retries;
    uint64_t kafka_retries;
    uint64_t writeback_rows;
    double last_batch_ms;
    double neo4j_ms_total;
    int64_t started_ms;
};

/* Milliseconds on the monotonic clock. */
int64_t metrics_now_ms(void);

/* Write the counters as JSON to f. */
void metrics_write_json(const struct metrics *m, const char *worker, FILE *f);

/* Write the counters to path through a temporary file and rename. */
enum ns_err metrics_write_file(const struct metrics *m, const char *worker,
                               const char *path);

#endif
