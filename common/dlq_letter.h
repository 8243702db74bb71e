/*
 * dlq_letter.h - what one dead letter holds, and its size against a limit.
 *
 * Used by the DLQ producer (dlq.c): the headers of dlq.h, built from the
 * source message, and the cut of key and value that keeps the record under
 * the producer's message.max.bytes or the DLQ topic's max.message.bytes.
 */
#ifndef NS_DLQ_LETTER_H
#define NS_DLQ_LETTER_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "err.h"

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

/* What a record and its batch add to key, value and headers (Kafka's v2
 * record batch: 61 bytes of batch header, a few varints per record). */
#define DLQ_LETTER_RECORD_OVERHEAD 512u

/*
 * The headers of src's dead letter for worker (the source's own, except a
 * nexus.truncated of an earlier letter, then nexus.reason, error class,
 * source position, worker and time), and how much of key and value fit
 * beside them in a record of at most max_message bytes: *key_len and
 * *value_len hold the source's sizes on entry and what may be sent on
 * return (a prefix). A cut letter also gets nexus.truncated "key=N
 * value=M", the original sizes; the source's own headers are left out when
 * they alone would leave no room. Returns NULL when out of memory; the
 * caller owns the result (rd_kafka_headers_destroy, or producev).
 */
rd_kafka_headers_t *dlq_letter_headers(const char *worker, size_t max_message,
                                       const struct dlq_source *src,
                                       enum ns_err error_class,
                                       const char *reason, size_t *key_len,
                                       size_t *value_len);

#endif
