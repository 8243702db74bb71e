/*
 * neo4j.h - Neo4j client over the HTTP transactional endpoint.
 *
 * One call runs a list of statements in one transaction with one request:
 * POST {url}/db/{db}/tx/commit. We use this endpoint rather than the Query
 * API because it takes several statements per request, so a whole batch is
 * one round trip and one transaction. libcurl keeps the connection alive.
 */
#ifndef NS_NEO4J_H
#define NS_NEO4J_H

#include <stddef.h>

#include "err.h"

struct cJSON;
struct neo4j_client;

struct neo4j_stmt {
    const char *cypher;            /* statement text (borrowed) */
    const struct cJSON *params;    /* parameter object (borrowed) or NULL */
};

/*
 * Create a client. url is the HTTP root ("http://127.0.0.1:57474"),
 * db the database name, timeout_ms the whole-request timeout. Nothing is
 * sent yet. On success *out is owned by the caller (neo4j_client_free).
 */
enum ns_err neo4j_client_new(const char *url, const char *db,
                             const char *user, const char *password,
                             long timeout_ms, struct neo4j_client **out,
                             char *errstr, size_t errstr_size);

/* Close the connection and free; NULL ok. */
void neo4j_client_free(struct neo4j_client *nc);

/*
 * Trust only the CA certificates in the PEM file ca_file (copied by
 * libcurl; the caller keeps it) instead of the system's, for an https url.
 * The server certificate and its host name are always verified for https,
 * with or without this call. NS_ERR_CONFIG when the url is not https or
 * libcurl refuses the option.
 */
enum ns_err neo4j_client_set_ca_file(struct neo4j_client *nc,
                                     const char *ca_file, char *errstr,
                                     size_t errstr_size);

/*
 * Whether a Neo4j status code (the "code" of an errors[] entry, NULL when
 * there is none) is this request's fault: NS_ERR_NEO4J_PERMANENT for the
 * few codes that say the statement or its data are wrong (syntax, type,
 * semantic, argument, missing parameter, arithmetic, constraint violated,
 * invalid request), NS_ERR_NEO4J_TRANSIENT for every other code, known or
 * not: the environment may heal (a leader switch, a read-only or starting
 * database, credentials, a timeout). Pure; exported for the unit tests.
 */
enum ns_err neo4j_classify(const char *code);

/*
 * Run n statements in one transaction.
 *
 * On success returns NS_OK and, when results is not NULL, *results is the
 * response's "results" array (one {"columns":[...],"data":[{"row":[...]}]}
 * per statement), owned by the caller (cJSON_Delete).
 *
 * On failure nothing was committed, *results is NULL and:
 *  - NS_ERR_NEO4J_PERMANENT: a code neo4j_classify() calls permanent
 *    (syntax, type, constraint, bad parameters): the statements or their
 *    data are wrong;
 *  - NS_ERR_NEO4J_TRANSIENT: anything else: connection refused/reset,
 *    timeout, HTTP 4xx/5xx without a Neo4j code, Neo.TransientError.*,
 *    Neo.DatabaseError.*, and every other Neo.ClientError.* (NotALeader,
 *    Security, DatabaseNotFound...): retry later.
 * errstr gets "code: message". *failed_stmt (if not NULL) gets the index of
 * the statement that failed when it can be told (the number of statements
 * that completed before the error), else n.
 */
enum ns_err neo4j_run(struct neo4j_client *nc, const struct neo4j_stmt *stmts,
                      size_t n, struct cJSON **results, size_t *failed_stmt,
                      char *errstr, size_t errstr_size);

#endif
