/*
 * process.h - one batch's life, below the loop: prepare (parse, map,
 * coalesce) → apply to Neo4j (retried; the previous batch's write-back
 * lands meanwhile) → dead letters to the DLQ → this batch's write-back
 * sent, its offsets to be committed when it lands (writeback.h).
 *
 * It owns nothing across batches: everything it needs is handed over in
 * a process_env, the retry's poller included, so it never calls back
 * into the loop except through that poller.
 */
#ifndef NS_PROCESS_H
#define NS_PROCESS_H

#include <stddef.h>
#include <signal.h>

#include "batch.h"
#include "config.h"
#include "dlq.h"
#include "err.h"
#include "mapping.h"
#include "metrics.h"
#include "neo4j.h"
#include "retry.h"
#include "writeback.h"

struct process_env {
    const struct config *cfg;
    const struct mapping *map;
    struct neo4j_client *nc;
    struct dlq *dlq;
    struct writeback *wb;
    struct metrics *metrics;
    const struct retry_policy *policy;
    const struct retry_poller *poller;  /* serves Kafka while waiting */
    const int *revoked;  /* set by a rebalance inside a poll: the batch is
                            taken away, abandon it */
};

/*
 * Take batch b through its life. NS_OK when its write-back was sent, or
 * when *env->revoked became set (nothing of it is then sent or
 * committed: the caller rewinds); an error with errstr when the poller
 * gave up (stopping) or the batch cannot go on.
 */
enum ns_err process_batch(const struct process_env *env,
                          const struct batch *b, char *errstr,
                          size_t errstr_size);

#endif
