/*
 * prepare.h - a batch's Kafka messages parsed and mapped into changes,
 * and what became of each message.
 *
 * Every message of the batch gets a batch_item: it either produced a
 * change for Neo4j, was skipped (a Kafka tombstone, a change the mapping
 * ignores), or is dead, with a reason, for the DLQ. The parsed event is
 * freed at once: a cJSON tree is many times the size of its row, and the
 * change owns copies of what it needs.
 */
#ifndef NS_PREPARE_H
#define NS_PREPARE_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "batch.h"
#include "change.h"
#include "config.h"
#include "err.h"
#include "mapping.h"
#include "metrics.h"

/* What became of one Kafka message of the batch. */
struct batch_item {
    rd_kafka_message_t *msg;        /* borrowed from the batch */
    int lane;
    int dead;                       /* goes to the DLQ */
    enum ns_err error_class;
    char reason[512];
    const struct mapping_table *tbl;  /* known table, for FAILED write-back */
    char keys[2][64];
    int has_keys;
    int64_t source_ts_ms;           /* source.ts_ms, for the sync latency */
    int64_t envelope_ts_ms;         /* Debezium's ts_ms, for its stages */
    int64_t kafka_ts_ms;            /* the record's timestamp, -1 if none */
    int has_change;                 /* a change was built from it: its row
                                       identity is in change_key */
    char change_key[CHANGE_KEY_MAX];
    int survives;                   /* its change outlived coalescing (a
                                       later version of a link can too) */
};

/*
 * Parse and map the batch's messages: items[i] for b->msgs[i], the
 * changes built into changes (room for b->count), in message order.
 * Counts consumed and skipped messages in metrics and the batch's
 * messages per lane in lane_events (LANE__COUNT). Returns how many
 * changes were built. Never fails: a message that cannot be used is dead.
 */
size_t prepare_batch(const struct config *cfg, const struct mapping *map,
                     const struct batch *b, struct batch_item *items,
                     struct change *changes, struct metrics *metrics,
                     uint64_t *lane_events);

/* Mark it dead with its class and reason. */
void prepare_item_dead(struct batch_item *it, enum ns_err cls,
                       const char *reason);

/*
 * The change ch failed for good: every message folded into it (the same
 * row, coalesced away; not one whose own change survived, as the
 * versions of a link do) is dead too, each with its own position, since it
 * was never applied and may carry values (TOASTed columns) that the
 * surviving message lacks.
 */
void prepare_dead_folded(struct batch_item *items, size_t n,
                         const struct change *ch, const char *reason);

#endif
