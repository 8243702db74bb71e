/*
 * scan.h - how nexus-dlq reads Kafka: a consumer that is only ever
 * assigned partitions (no group, nothing committed), the partition count
 * of a topic, and a scan of a topic from its start (or a time) to the
 * high watermark taken when the scan began.
 *
 * Part of nexus-dlq (tools/dlq/, linked into bin/nexus-dlq only).
 */
#ifndef NS_DLQ_TOOL_SCAN_H
#define NS_DLQ_TOOL_SCAN_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "err.h"

/* Called for every message a scan reads; a non-zero return stops it. */
typedef enum ns_err (*scan_fn)(const rd_kafka_message_t *rkm, void *opaque,
                               char *errstr, size_t errstr_size);

/* A reader for cfg's Kafka settings: a consumer that joins no group and
 * commits nothing. On success *out is owned by the caller
 * (rd_kafka_consumer_close, rd_kafka_destroy); NS_ERR_KAFKA when it
 * cannot be made. */
enum ns_err reader_new(const struct config *cfg, rd_kafka_t **out,
                       char *errstr, size_t errstr_size);

/* Number of partitions of topic; NS_ERR_KAFKA when it does not exist,
 * NS_ERR_LIMIT past 1024. */
enum ns_err topic_partitions(rd_kafka_t *rk, const char *topic, int *count,
                             char *errstr, size_t errstr_size);

/*
 * Read every partition of topic from its start (since_ms < 0: the low
 * watermark; else the first offset at or after that time) to the high
 * watermark taken when the scan began, calling fn for each message.
 * Messages that arrive meanwhile are not read. Nothing is committed. A
 * non-zero return of fn stops the scan with that error; NS_ERR_KAFKA
 * when reading fails or takes longer than timeout_ms.
 */
enum ns_err topic_scan(rd_kafka_t *rk, const char *topic, int partitions,
                       int64_t since_ms, long timeout_ms, scan_fn fn,
                       void *opaque, char *errstr, size_t errstr_size);

#endif
