/*
 * lanes.h - the worker's lane topics and their priority.
 *
 * A worker reads one topic per lane (critical, normal, low). The table
 * knows the topics' names, formatted once from the mapping at start-up
 * (a prefix may hold dots, so names are compared, never parsed), and
 * which lanes are paused: while a higher lane is busy, the partitions of
 * every lower lane are paused. It owns only that state; the consumer
 * hands it the Kafka handle and the lag it measured.
 */
#ifndef NS_LANES_H
#define NS_LANES_H

#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "err.h"
#include "mapping.h"
#include "metrics.h"

struct lanes {
    char topics[LANE__COUNT][256];  /* "" for a lane not consumed */
    int64_t seen_ms[LANE__COUNT];   /* last message of each lane */
    int paused_below;               /* lanes >= this are paused */
};

/* Topic names of worker's lanes, those with enabled[lane] set. */
enum ns_err lanes_init(struct lanes *lanes, const struct mapping *map,
                       const char *worker, const int *enabled,
                       char *errstr, size_t errstr_size);

/* The lane of one of the worker's topics, -1 for any other topic. */
int lanes_of_topic(const struct lanes *lanes, const char *topic);

/* A message of lane was delivered: pause the lower lanes at once when
 * they are being served. */
void lanes_seen(struct lanes *lanes, rd_kafka_t *rk, int lane,
                const int64_t *lag);

/* Pause or resume partitions so that only the highest busy lane and
 * those above it are served; lag[lane] is the lane's known backlog. */
void lanes_update(struct lanes *lanes, rd_kafka_t *rk, const int64_t *lag);

/* Every partition was resumed (after a retry's wait): nothing is paused
 * by priority any more; the next lanes_update decides again. */
void lanes_all_resumed(struct lanes *lanes);

/* Partitions newly assigned start unpaused; with the cooperative protocol
 * those of paused lanes are paused again at once. */
void lanes_assigned(struct lanes *lanes, rd_kafka_t *rk,
                    const rd_kafka_topic_partition_list_t *parts, int coop);

/* Measure the lag of every assigned partition (from its position, or
 * its commit before its first message) into metrics: per partition and
 * per lane. */
void lanes_measure_lag(const struct lanes *lanes, rd_kafka_t *rk,
                       struct metrics *metrics);

#endif
