/*
 * kafka.h - librdkafka configuration shared by the worker's consumer, the
 * dead letter producer and the tools: one way to layer properties, one log
 * callback in our format, one wording for client-wide errors.
 */
#ifndef NS_KAFKA_H
#define NS_KAFKA_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "err.h"

/*
 * A new configuration from three NULL-terminated lists of name, value
 * pairs, set in this order: defaults (ours, which the user may override),
 * props (the user's kafka.* settings), forced (what our guarantees rest
 * on, which no setting may weaken). Any list may be NULL. librdkafka's log
 * lines go through log.c; quiet makes its INFO lines DEBUG (tools).
 * On success *out is the caller's (rd_kafka_new() adopts it); on failure
 * *out is NULL and errstr names the property.
 */
enum ns_err kafka_conf_new(const char *const *defaults,
                           const char *const *props,
                           const char *const *forced, int quiet,
                           rd_kafka_conf_t **out, char *errstr,
                           size_t errstr_size);

/* Log a client-wide error (an error_cb) as "<who>: NAME: reason", at
 * ERROR for a fatal one, else WARN. */
void kafka_log_error(const char *who, int err, const char *reason);

/*
 * rd_kafka_seek_partitions(), where a seek not acknowledged in time is not
 * an error: it is queued and still happens (librdkafka before 2.1 waited
 * timeout_ms microseconds, issue #4230, so most seeks "timed out"). Any
 * other error is one: the caller destroys it; per-partition errors are in
 * parts.
 */
rd_kafka_error_t *kafka_seek(rd_kafka_t *rk,
                             rd_kafka_topic_partition_list_t *parts,
                             int timeout_ms);

/*
 * Resume paused partitions where their consumption stood. librdkafka 2.0
 * may fetch a resumed partition again from its committed offset, which
 * reads again what was delivered since; the partitions are sought to their
 * positions instead. A failed seek only costs those duplicates: logged.
 */
void kafka_resume(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts);

/* Log "partitions <what> (N): topic[p] ..." at INFO. */
void kafka_log_partitions(const char *what,
                          const rd_kafka_topic_partition_list_t *parts);

#endif
