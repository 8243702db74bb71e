/*
 * dlq.h - the dead-letter queue producer.
 *
 * An event that cannot be applied goes to the DLQ topic with its original
 * key and value and headers that say why:
 *   nexus.reason          human-readable reason
 *   nexus.error.class     ns_err_str() of the error (parse, schema, ...)
 *   nexus.source.topic / nexus.source.partition / nexus.source.offset
 *   nexus.worker          worker name
 *   nexus.time            ISO-8601 UTC time of the decision
 *   nexus.truncated       only on a letter cut to fit message.max.bytes:
 *                         "key=N value=M", the original sizes
 * plus the original message's own headers. The producer is idempotent with
 * acks=all; offsets of DLQ'd events are committed only after dlq_flush()
 * reports every send acknowledged.
 */
#ifndef NS_DLQ_H
#define NS_DLQ_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct dlq;

/* The original message, as the consumer loop saw it. */
struct dlq_source {
    const char *topic;
    int32_t partition;
    int64_t offset;
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
    void *headers;   /* rd_kafka_headers_t * of the source message, or NULL */
};

/*
 * Create a producer to topic for worker. kafka_props is a NULL-terminated
 * list of librdkafka name/value pairs applied first (bootstrap.servers,
 * security settings, ...). On success *out is owned by the caller.
 */
enum ns_err dlq_new(const char *const *kafka_props, const char *topic,
                    const char *worker, struct dlq **out, char *errstr,
                    size_t errstr_size);

/* Flush with a bounded wait and free; NULL ok. */
void dlq_free(struct dlq *dlq);

/* Queue one dead letter (asynchronous). NS_ERR_KAFKA when it cannot even
 * be queued. */
enum ns_err dlq_send(struct dlq *dlq, const struct dlq_source *src,
                     enum ns_err error_class, const char *reason,
                     char *errstr, size_t errstr_size);

/*
 * Wait up to timeout_ms until every queued dead letter is acknowledged.
 * NS_ERR_KAFKA if any failed or the wait timed out (the caller must not
 * commit the offsets and will retry the batch).
 */
enum ns_err dlq_flush(struct dlq *dlq, int timeout_ms, char *errstr,
                      size_t errstr_size);

/* The last value of header name in headers (rd_kafka_headers_t *, may be
 * NULL) as a C string in out, cut to fit; "" when absent. */
void dlq_header_str(const void *headers, const char *name, char *out,
                    size_t out_size);

/* Dead letters acknowledged since start. */
uint64_t dlq_sent_count(const struct dlq *dlq);

#endif
