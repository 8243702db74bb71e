/*
 * schema.h - the Neo4j constraints and indexes the mapping needs, created
 * at start-up (idempotent: IF NOT EXISTS), waiting for Neo4j if it is not
 * up yet.
 */
#ifndef NS_SCHEMA_H
#define NS_SCHEMA_H

#include <stddef.h>

#include "err.h"
#include "mapping.h"
#include "metrics.h"
#include "neo4j.h"
#include "retry.h"

/* Run every schema statement; a transient failure is retried with policy,
 * waiting with poller, until it succeeds or the poller gives up. */
enum ns_err schema_ensure(struct neo4j_client *nc, const struct mapping *map,
                          const struct retry_policy *policy,
                          const struct retry_poller *poller,
                          struct metrics *metrics, char *errstr,
                          size_t errstr_size);

#endif
