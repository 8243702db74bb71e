/*
 * writeback.h - the sync_status write-back and the offset commit of an
 * applied batch, pipelined.
 *
 * A batch's rows (SUCCESS with the element id for applied upserts, FAILED
 * with the reason for dead events) are sent to PostgreSQL without waiting;
 * they land while the next batch is applied to Neo4j, and only then are
 * the batch's offsets committed. Committing late is safe even after a
 * rebalance: offsets only ever move past events this worker applied and
 * wrote back. One write-back is in flight at a time.
 *
 * The write-back owns its rows (copied) and its offsets; it borrows the
 * status writer, the Kafka handle (to commit) and the metrics.
 */
#ifndef NS_WRITEBACK_H
#define NS_WRITEBACK_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "err.h"
#include "mapping.h"
#include "metrics.h"
#include "pgstatus.h"
#include "retry.h"

struct writeback;

/* max_rows bounds the rows of one batch (one per message at most). */
enum ns_err writeback_new(struct pg_status *ps, rd_kafka_t *rk,
                          struct metrics *metrics, size_t max_rows,
                          struct writeback **out, char *errstr,
                          size_t errstr_size);

/* Drops a write-back that has not landed: its offsets stay uncommitted.
 * NULL is fine. */
void writeback_free(struct writeback *wb);

/* Non-zero while a batch's rows and offsets wait to land. */
int writeback_pending(const struct writeback *wb);

/* Rows of the next batch, added only while nothing is pending. keys has
 * tbl->key_count values; everything is copied. */
enum ns_err writeback_add_success(struct writeback *wb,
                                  const struct mapping_table *tbl,
                                  const char *const keys[2], int64_t version,
                                  const char *element_id);
enum ns_err writeback_add_failed(struct writeback *wb,
                                 const struct mapping_table *tbl,
                                 const char *const keys[2],
                                 const char *reason);

/*
 * Send the rows added since the last batch; offsets (taken over, even on
 * failure) are committed when they land. lane_events (LANE__COUNT) is
 * the batch's messages per lane, for the retry metrics. A send that fails
 * is not an error: writeback_finish writes the rows again.
 */
enum ns_err writeback_send(struct writeback *wb,
                           rd_kafka_topic_partition_list_t *offsets,
                           const uint64_t *lane_events);

/*
 * Land the pending write-back, then commit its offsets. A transient
 * failure is retried with policy, waiting with poller; with poller NULL
 * (inside a rebalance callback, which must not poll) it is not retried.
 * A permanent failure loses only bookkeeping: logged, and the offsets are
 * committed. NS_OK once committed or when nothing was pending; otherwise
 * the write-back stays pending, uncommitted, for a later call. A call made
 * while another is running (from a poll inside it) returns NS_OK at once.
 */
enum ns_err writeback_finish(struct writeback *wb,
                             const struct retry_policy *policy,
                             const struct retry_poller *poller, char *errstr,
                             size_t errstr_size);

#endif
