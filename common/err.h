/*
 * err.h - the error codes every fallible nexus-sync function returns.
 *
 * 0 is success. Each code is either transient (retrying can help: a server
 * is down, a deadlock) or permanent (the input itself is wrong and goes to
 * the DLQ). Detail goes into the caller's errstr buffer.
 */
#ifndef NS_ERR_H
#define NS_ERR_H

#include <stddef.h>

enum ns_err {
    NS_OK = 0,
    NS_ERR_NOMEM,      /* allocation failed */
    NS_ERR_LIMIT,      /* a hard size cap was reached */
    NS_ERR_CONFIG,     /* configuration is invalid: fatal at start-up */
    NS_ERR_PARSE,      /* input is not valid JSON / not a Debezium event */
    NS_ERR_SCHEMA,     /* event does not fit the mapping: unknown table,
                          missing key, wrong type */
    NS_ERR_NEO4J_TRANSIENT, /* Neo4j unreachable, 5xx, deadlock: retry */
    NS_ERR_NEO4J_PERMANENT, /* Neo4j rejected the statement: DLQ */
    NS_ERR_PG_TRANSIENT,    /* PostgreSQL unreachable: retry */
    NS_ERR_PG_PERMANENT,    /* PostgreSQL rejected the statement */
    NS_ERR_KAFKA,           /* Kafka client error */
    NS_ERR_IO,              /* local I/O */
    NS_ERR__COUNT
};

/* Short constant name of an error code; never NULL. */
const char *ns_err_str(enum ns_err err);

/* Format a reason into the caller's errstr; errstr may be NULL or 0-sized. */
void ns_err_set(char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Non-zero when retrying the same operation later can succeed. */
int ns_err_is_retriable(enum ns_err err);

#endif
