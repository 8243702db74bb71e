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

/*
 * Run every schema statement; a transient failure is retried with policy,
 * waiting with poller, until it succeeds or the poller gives up. Before
 * each retry, Neo4j is checked again (neo4j_client_check; db and user only
 * name them): a server down at start-up that comes up without the database
 * or refusing the credentials is a configuration error, NS_ERR_CONFIG.
 */
enum ns_err schema_ensure(struct neo4j_client *nc, const struct mapping *map,
                          const char *db, const char *user,
                          const struct retry_policy *policy,
                          const struct retry_poller *poller,
                          struct metrics *metrics, char *errstr,
                          size_t errstr_size);

#endif
