/*
 * tombstone.h - pruning of the delete markers that cypher.h's statements
 * leave: (:NexusTombstone {key, ep, lsn, ts}) for every deleted node
 * ("Label/key") and relationship ("TYPE/a->b").
 *
 * A marker keeps an older change of its element from bringing it back
 * (a second group, a replay, a DLQ re-drive). It is only needed while such
 * a change can still arrive: markers whose delete was committed at the
 * source (ts) before the horizon are deleted. With a horizon of at least
 * the lane topics' retention, no event older than a pruned marker can
 * still be read from Kafka. Markers written before ts existed have none
 * and are never pruned.
 */
#ifndef NS_TOMBSTONE_H
#define NS_TOMBSTONE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "mapping.h"
#include "neo4j.h"

/*
 * Delete up to limit markers of the elements of worker's tables (by key
 * prefix, so instances of different workers never contend) whose ts is
 * before cutoff_ms, in one transaction. *deleted gets the count: limit
 * means there may be more. Errors as neo4j_run, detail in errstr.
 */
enum ns_err tombstone_prune(struct neo4j_client *nc, const struct mapping *map,
                            const char *worker, int64_t cutoff_ms,
                            size_t limit, size_t *deleted, char *errstr,
                            size_t errstr_size);

#endif
