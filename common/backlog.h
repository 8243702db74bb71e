/*
 * backlog.h - messages delivered while the loop cannot take them into a
 * batch (a retry's wait, a split, a batch already full), bounded in
 * messages and bytes.
 *
 * Nothing is ever dropped: a later message of the same partition could be
 * committed past it. When the backlog is full, the message's partition is
 * paused and rewound to it ("held"), so it is fetched again once the
 * backlog has drained; the memory a worker needs stays bounded whatever
 * the backlog on the broker. The backlog owns its messages and its list
 * of held partitions; it is handed the Kafka handle for each call.
 */
#ifndef NS_BACKLOG_H
#define NS_BACKLOG_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "batch.h"
#include "err.h"

struct backlog {
    struct batch msgs;                     /* delivery order */
    rd_kafka_topic_partition_list_t *held; /* paused and rewound */
};

enum ns_err backlog_init(struct backlog *bl, size_t max_count,
                         size_t max_bytes);
void backlog_free(struct backlog *bl);

/*
 * Keep m (taken over), or when full, hold its partition. NS_ERR_KAFKA with
 * errstr when the partition could not be rewound: m is lost to this
 * process, so the caller must stop before committing past it.
 */
enum ns_err backlog_keep(struct backlog *bl, rd_kafka_t *rk,
                         rd_kafka_message_t *m, int lane, char *errstr,
                         size_t errstr_size);

/* Resume the held partitions once the backlog is below half full. */
void backlog_release(struct backlog *bl, rd_kafka_t *rk);

/* Pause the held partitions again after every partition was resumed. */
void backlog_repause(struct backlog *bl, rd_kafka_t *rk);

/* Resume those of parts that are held, and forget the holds (their
 * partitions are being rewound by the caller). */
void backlog_unhold(struct backlog *bl, rd_kafka_t *rk,
                    const rd_kafka_topic_partition_list_t *parts);

/* Partitions given up or assigned anew: drop their messages and holds. */
void backlog_forget(struct backlog *bl,
                    const rd_kafka_topic_partition_list_t *parts);

/*
 * After batch b was abandoned because a rebalance revoked some of its
 * partitions: those still assigned (a cooperative rebalance) are rewound
 * to the batch's first message, with the backlog's messages and holds for
 * them dropped, so nothing after the last commit is skipped (with the
 * eager protocol every partition was revoked and the new assignment
 * starts from the commits). NS_ERR_KAFKA with errstr when a seek failed:
 * the caller must stop rather than read on past the abandoned messages.
 */
enum ns_err backlog_rewind(struct backlog *bl, rd_kafka_t *rk,
                           const struct batch *b, char *errstr,
                           size_t errstr_size);

#endif
