/*
 * apply.h - apply a batch of changes to Neo4j in one transaction.
 *
 * Changes are grouped by statement shape (table, action, present
 * properties) and round (change.h) into UNWIND statements, by round then
 * in order of first appearance, and sent as one request. When Neo4j rejects the batch permanently, the batch
 * is split: every change is applied alone, so the good ones still commit
 * and only the bad ones are marked FAILED (for the DLQ).
 */
#ifndef NS_APPLY_H
#define NS_APPLY_H

#include <stddef.h>

#include "change.h"
#include "err.h"
#include "mapping.h"
#include "neo4j.h"

enum apply_status {
    APPLY_PENDING = 0,
    APPLY_APPLIED,   /* committed; element_id set for upserts */
    APPLY_SKIPPED,   /* the guards kept it out: stale or deleted entity */
    APPLY_FAILED     /* Neo4j rejected it permanently; reason set */
};

struct apply_result {
    enum apply_status status;
    char element_id[96];
    char reason[256];
};

struct apply_stats {
    unsigned transactions;
    unsigned statements;
};

/*
 * Apply n changes; results[i] receives the outcome of changes[i].
 * NS_OK when every change has a final status. NS_ERR_NEO4J_TRANSIENT when
 * Neo4j could not be reached or asked for a retry, or when it rejected each
 * of n > 1 changes, applied one by one, with the same code (the cause is
 * the environment, not n bad events): results are then meaningless, retry
 * the whole call later (it is idempotent).
 */
enum ns_err apply_changes(struct neo4j_client *nc, const struct mapping *map,
                          const struct change *changes, size_t n,
                          struct apply_result *results,
                          struct apply_stats *stats, char *errstr,
                          size_t errstr_size);

#endif
