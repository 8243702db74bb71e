/*
 * neo4j.h - Neo4j client over HTTP: the transactional endpoint or the
 * Query API.
 *
 * One call runs a list of statements in one transaction. Two transports:
 *  - tx: POST {url}/db/{db}/tx/commit takes every statement in one
 *    request, so a batch is one round trip (deprecated in 5.26, absent on
 *    Aura);
 *  - query: the Query API (5.25 and later, Aura) takes one statement per
 *    request, so a batch of n > 1 statements is an explicit transaction of
 *    n requests: POST .../query/v2/tx opens it with the first,
 *    .../tx/{id} runs the next, .../tx/{id}/commit runs the last and
 *    commits, DELETE .../tx/{id} rolls it back; one statement is one
 *    request to .../query/v2.
 * Auto (the default) reads the server's discovery document (GET {url}/)
 * before the first statement and keeps tx where it is offered (faster on
 * 5.26), else the Query API. libcurl keeps the connection alive.
 *
 * This module owns the choice of transport, the tx/commit request and its
 * answer, and the classes of Neo4j's errors. The connection and one
 * request are neo4j_http's (neo4j_http.h, included here for enum
 * neo4j_failure), the statements (struct neo4j_stmt) and the tx body
 * neo4j_body's (included here), the Query API transaction neo4j_query's.
 */
#ifndef NS_NEO4J_H
#define NS_NEO4J_H

#include <stddef.h>

#include "err.h"
#include "neo4j_body.h" /* struct neo4j_stmt */
#include "neo4j_http.h" /* enum neo4j_failure */

struct cJSON;
struct neo4j_client;

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

/* Which HTTP API carries the statements (neo4j.api). */
enum neo4j_api {
    NEO4J_API_AUTO = 0,  /* tx where the discovery document lists it,
                            else the Query API */
    NEO4J_API_QUERY,     /* the Query API, explicit transactions */
    NEO4J_API_TX         /* the HTTP transactional endpoint, tx/commit */
};

/* "auto", "query" or "tx" as enum neo4j_api; -1 for anything else. */
int neo4j_api_parse(const char *name);

/* The name of an enum neo4j_api ("auto", "query", "tx"); never NULL. */
const char *neo4j_api_name(enum neo4j_api api);

/*
 * Choose the transport of nc before its first request (default
 * NEO4J_API_AUTO). With AUTO the first neo4j_run() (or the check) first
 * reads GET {url}/ and logs the choice and why; until an answer comes,
 * each run fails as unreachable (transient) and nothing is decided.
 */
void neo4j_client_set_api(struct neo4j_client *nc, enum neo4j_api api);

/* The transport nc uses: NEO4J_API_AUTO while not decided yet. */
enum neo4j_api neo4j_client_api(const struct neo4j_client *nc);

/*
 * Tell a configuration error from an outage before the worker starts: one
 * cheap request (RETURN 1) against the client's database, through the
 * client's transport (with NEO4J_API_AUTO the discovery document is read
 * first and the choice logged). db and user (may be NULL) only name them
 * in the message.
 *  - NS_OK: Neo4j answered;
 *  - NS_ERR_CONFIG: the database does not exist (DatabaseNotFound) or the
 *    credentials were refused (Security.Unauthorized, CredentialsExpired);
 *    errstr says which setting to fix;
 *  - anything else (NS_ERR_NEO4J_TRANSIENT, NS_ERR_NOMEM): not decided,
 *    Neo4j unreachable or failing; the caller goes on and retries later.
 * neo4j_run() itself never treats those codes as fatal: later, they may be
 * a cluster's passing state.
 */
enum ns_err neo4j_client_check(struct neo4j_client *nc, const char *db,
                               const char *user, char *errstr,
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
 * Non-zero when reason (an errstr that starts with the Neo4j code) names
 * the server's state, not the request: a cluster between leaders, a
 * database missing, unavailable or read-only, credentials. However often
 * such an error repeats, it is never a poison pill.
 */
int neo4j_reason_is_environment(const char *reason);

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
 * that completed before the error), else n. The Query API answers the same
 * classes; a follow-up request of its transaction answered 404 (the server
 * lost the transaction: restarted, expired, another cluster member) is
 * transient and unreached, whatever its code.
 */
enum ns_err neo4j_run(struct neo4j_client *nc, const struct neo4j_stmt *stmts,
                      size_t n, struct cJSON **results, size_t *failed_stmt,
                      char *errstr, size_t errstr_size);

/* enum neo4j_failure, how the last neo4j_run() of a client ended: see
 * neo4j_http.h. */

/*
 * What the last neo4j_run() of nc ended with, for a caller that must tell
 * an error the server answered (which may be the request's fault whatever
 * its class) from no answer (never the request's fault).
 */
enum neo4j_failure neo4j_last_failure(const struct neo4j_client *nc);

#endif
