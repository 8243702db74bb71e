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
 *   nexus.truncated       only on a letter cut to fit: "key=N value=M",
 *                         the original sizes
 * plus the original message's own headers. The producer is idempotent with
 * acks=all; offsets of DLQ'd events are committed only after dlq_flush()
 * reports every send acknowledged.
 *
 * A letter never blocks the loop by its size: key and value are cut to a
 * prefix so that the record fits the producer's message.max.bytes and the
 * DLQ topic's max.message.bytes (read once by dlq_new). Should the broker
 * still refuse one as too large (the topic's limit could not be read, or
 * went down since), it is sent once more without its value; that one is
 * not retried again. nexus-dlq re-drives a cut letter with the original,
 * read back from the source topic.
 */
#ifndef NS_DLQ_H
#define NS_DLQ_H

#include <stddef.h>
#include <stdint.h>

#include "dlq_letter.h"
#include "err.h"

struct dlq;


/*
 * Create a producer to topic for worker. kafka_props is a NULL-terminated
 * list of librdkafka name/value pairs applied first (bootstrap.servers,
 * security settings, message.max.bytes as a cap of our own, ...). Asks the
 * broker for the topic's max.message.bytes, waiting at most 3 s; without
 * an answer (broker down, no DESCRIBE_CONFIGS right) it logs a warning and
 * goes on. On success *out is owned by the caller.
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
