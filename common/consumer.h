/*
 * consumer.h - a worker's life: the Kafka consumer loop.
 *
 * Reads the worker's lane topics in one consumer group, collects batches
 * (up to batch.max_events or batch.max_ms), turns events into changes,
 * applies them to Neo4j, writes sync state back to PostgreSQL, sends what
 * cannot be applied to the DLQ and only then commits the offsets. Transient
 * failures pause every assigned partition and retry the same batch with
 * exponential backoff and jitter; nothing is dropped. While a higher lane
 * has a backlog, the partitions of lower lanes are paused.
 */
#ifndef NS_CONSUMER_H
#define NS_CONSUMER_H

#include <signal.h>

#include "config.h"
#include "err.h"
#include "mapping.h"

struct consumer;

/*
 * Connect everything for cfg and map (both borrowed, must outlive the
 * consumer): Kafka consumer and DLQ producer, Neo4j client (schema
 * constraints are created here), PostgreSQL writer. NS_ERR_CONFIG for bad
 * settings; a server that is down is not an error here (retried in the
 * loop), except Neo4j's constraints, retried until stop is set.
 */
enum ns_err consumer_new(const struct config *cfg, const struct mapping *map,
                         volatile sig_atomic_t *stop, struct consumer **out,
                         char *errstr, size_t errstr_size);

/*
 * Run until *stop becomes non-zero: the batch in flight is finished and
 * committed first. Returns NS_OK on a clean stop.
 */
enum ns_err consumer_run(struct consumer *c, char *errstr, size_t errstr_size);

/* Close the Kafka consumer (leaving the group) and free; NULL ok. */
void consumer_free(struct consumer *c);

#endif
