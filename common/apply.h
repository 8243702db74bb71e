/*
 * apply.h - apply a batch of changes to Neo4j in one transaction.
 *
 * Changes are grouped by statement shape (table, action, present
 * properties) and round (change.h) into UNWIND statements, by round then
 * in order of first appearance, and sent as one request. When Neo4j
 * rejects the batch permanently, the batch is split: every change is
 * applied alone, so the good ones still commit and only the bad ones are
 * marked FAILED (for the DLQ). A caller that saw the same failure repeat
 * can ask for the split at once (struct apply_options).
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
    APPLY_FAILED     /* Neo4j rejected it permanently (in a forced split:
                        answered its transaction with an error); reason
                        set */
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
 * Options of apply_changes(); NULL means all zero.
 *
 * force_split: the caller has seen the same failure repeat (a poison pill:
 * a proxy's 4xx without a Neo4j code, Neo4j's memory-pool error for one
 * huge statement...). The whole-batch attempt is skipped and every change
 * is applied alone; a change whose transaction the server (or a proxy in
 * front of it) answered with an error is marked FAILED with that reason,
 * whatever the error's class: NS_ERR_NEO4J_PERMANENT, or a transient one
 * for which neo4j_last_failure() says NEO4J_FAILURE_ANSWERED. Not marked,
 * and returned as NS_ERR_NEO4J_TRANSIENT like any batch: no answer
 * (refused, reset, timeout, a code-less 408/429/502/503/504) and the
 * contention codes Neo.TransientError.Transaction.DeadlockDetected and
 * Neo.TransientError.Transaction.Lock*, which the same change survives
 * once the other writer is done.
 *
 * tick (may be NULL): called with tick_opaque before each single
 * transaction of a split, forced or not (so before the split starts and
 * between its transactions), so that the caller can serve its Kafka
 * consumer (max.poll.interval.ms) during a long split. It may be called
 * any number of times, none when there is no split; it must not call
 * apply_changes() or touch the changes, results or Neo4j client. When it
 * returns non-zero (asked to stop, partitions revoked) the split stops
 * there and apply_changes() returns NS_ERR_NEO4J_TRANSIENT: the changes
 * applied alone so far stay applied (idempotent when the batch comes
 * again), the results are meaningless.
 */
struct apply_options {
    int force_split;
    int (*tick)(void *opaque);
    void *tick_opaque;
};

/*
 * Apply n changes; results[i] receives the outcome of changes[i].
 * NS_OK when every change has a final status. NS_ERR_NEO4J_TRANSIENT when
 * Neo4j could not be reached or asked for a retry (see force_split for
 * the errors that mark one change FAILED instead), or when each of n > 1
 * changes, applied one by one, was rejected alike (the cause is taken to
 * be the environment, not n bad events): results are then meaningless,
 * retry the whole call later (it is idempotent). In a forced split, a
 * canary statement of no change (RETURN 1) decides that: when Neo4j
 * commits it, the changes are at fault and each is FAILED. "Alike" is
 * the same Neo4j code (the reason up to its first ": "; the messages may
 * differ), or for reasons without a Neo4j code (a proxy's status, a size
 * cap) the same whole reason text. NS_ERR_NOMEM or a statement error
 * (NS_ERR_LIMIT...) when the statements could not be built. Every error
 * writes errstr. opts may be NULL (the defaults).
 */
enum ns_err apply_changes(struct neo4j_client *nc, const struct mapping *map,
                          const struct change *changes, size_t n,
                          struct apply_result *results,
                          struct apply_stats *stats,
                          const struct apply_options *opts, char *errstr,
                          size_t errstr_size);

/*
 * The plan of one transaction: the UNWIND statements over changes
 * idx[0..n) (over changes[0..n) when idx is NULL), in the order
 * apply_changes() sends them. Exported for the unit tests, which check
 * that order and measure the memory a plan takes.
 * On NS_OK *out is owned by the caller (apply_plan_free); it borrows
 * map and the changes' rows, which must outlive it. On failure *out is
 * untouched and errstr says why (NS_ERR_NOMEM, or the statement error).
 */
struct apply_plan;
enum ns_err apply_plan_build(const struct mapping *map,
                             const struct change *changes, const size_t *idx,
                             size_t n, struct apply_plan **out, char *errstr,
                             size_t errstr_size);

/* The plan's statements, *count of them, owned by the plan. */
const struct neo4j_stmt *apply_plan_statements(const struct apply_plan *plan,
                                               size_t *count);

/* Free a plan; NULL ok. */
void apply_plan_free(struct apply_plan *plan);

#endif
