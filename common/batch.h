/*
 * batch.h - Kafka messages held in memory, counted in messages and bytes.
 *
 * The worker holds messages in two of these: the batch being collected
 * and applied, and the backlog delivered while it could not collect (a
 * retry's wait, a split). Both have hard limits in messages and in bytes
 * (payload and key), checked before a message is taken, so neither ever
 * overshoots; only a single message larger than the byte limit is taken
 * alone, since it must go somewhere. The list owns its messages.
 */
#ifndef NS_BATCH_H
#define NS_BATCH_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "err.h"

struct batch {
    rd_kafka_message_t **msgs;  /* owned, in delivery order */
    int *lanes;                 /* the lane of each message */
    size_t count;
    size_t bytes;               /* payloads and keys of msgs */
    size_t max_count;           /* limits; the arrays hold max_count */
    size_t max_bytes;
};

/* Arrays for max_count messages; NS_ERR_NOMEM on failure. */
enum ns_err batch_init(struct batch *b, size_t max_count, size_t max_bytes);

/* Destroy the messages held and the arrays. */
void batch_free(struct batch *b);

/* The bytes m counts for. */
size_t batch_message_bytes(const rd_kafka_message_t *m);

/* Non-zero when m may be added without passing a limit; an empty list
 * takes any one message. */
int batch_fits(const struct batch *b, const rd_kafka_message_t *m);

/* Append m (the list takes it over); the caller checked batch_fits. */
void batch_add(struct batch *b, rd_kafka_message_t *m, int lane);

/* Move messages from the front of from to the end of b while they fit;
 * returns how many moved. */
size_t batch_take(struct batch *b, struct batch *from);

/* Destroy every message. */
void batch_clear(struct batch *b);

/* Destroy the messages of the partitions in parts. */
void batch_drop_partitions(struct batch *b,
                           const rd_kafka_topic_partition_list_t *parts);

/* Non-zero when a message belongs to one of parts. */
int batch_touches(const struct batch *b,
                  const rd_kafka_topic_partition_list_t *parts);

/*
 * Per partition, the offset after its last message (to commit), or with
 * first set, the offset of its first message (to read it again), limited
 * to the partitions in only when only is not NULL. The caller destroys
 * the list; NULL when out of memory.
 */
rd_kafka_topic_partition_list_t *
batch_offsets(const struct batch *b, int first,
              const rd_kafka_topic_partition_list_t *only);

#endif
