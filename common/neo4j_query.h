/*
 * neo4j_query.h - Neo4j's Query API (/db/{db}/query/v2, 5.25 and later,
 * Aura): a batch as one explicit transaction, and the server's discovery
 * document.
 *
 * neo4j_query_run() sends through neo4j_http; the rest is pure (no I/O):
 * the body of one statement, its answer read into the shape of the HTTP
 * transactional endpoint's results, which endpoints GET {url}/ lists.
 * neo4j.c chooses the transport and classifies the codes.
 */
#ifndef NS_NEO4J_QUERY_H
#define NS_NEO4J_QUERY_H

#include <stddef.h>

#include "buf.h"
#include "err.h"
#include "neo4j_body.h" /* struct neo4j_stmt */
#include "neo4j_http.h"

struct cJSON;

/*
 * Append the body {"statement":..,"parameters":{..}} of stmt (a text;
 * params NULL or an object, borrowed) to b. Errors as neo4j_body_write():
 * NS_ERR_LIMIT past b's cap or too deep, NS_ERR_NOMEM, NS_ERR_PARSE for an
 * item that is not JSON; b then holds part of the text.
 */
enum ns_err neo4j_query_body_write(struct buf *b,
                                   const struct neo4j_stmt *stmt);

/* One answer of the Query API, read by neo4j_query_answer_read(). */
struct neo4j_query_answer {
    struct cJSON *result;   /* {"columns":[..],"data":[{"row":[..]},..]},
                               owned (neo4j_query_answer_clear) */
    char tx_id[64];         /* transaction.id of an explicit transaction,
                               "" when the answer has none */
    char code[128];         /* errors[0].code, "" when no error */
};

/*
 * Read the answer text (len bytes, need not end in NUL) into ans, which
 * the caller zeroed or cleared:
 *  - NS_OK: no errors[]; ans->result holds data.fields as "columns" and
 *    each of data.values as {"row": [...]}, ans->tx_id the transaction's
 *    id if any;
 *  - NS_ERR_NEO4J_TRANSIENT: the answer holds errors[] (with or without
 *    data); ans->code is its first code ("Neo.Unknown" when it has none),
 *    errstr "code: message"; the caller classifies the code (neo4j.h);
 *  - NS_ERR_PARSE: not JSON, or neither errors[] nor well-formed data;
 *  - NS_ERR_NOMEM.
 * On every failure ans->result is NULL. errstr gets a sentence on failure.
 */
enum ns_err neo4j_query_answer_read(const char *text, size_t len,
                                    struct neo4j_query_answer *ans,
                                    char *errstr, size_t errstr_size);

/* Free ans->result and empty ans; NULL ok. */
void neo4j_query_answer_clear(struct neo4j_query_answer *ans);

/* What the discovery document (GET {url}/) lists. */
struct neo4j_query_discovery {
    int tx;                 /* "transaction": the HTTP transactional API */
    int query;              /* "query": the Query API */
    char version[32];       /* neo4j_version, "" when absent */
    char edition[32];       /* neo4j_edition, "" when absent */
};

/*
 * Read a discovery document (len bytes) into *d. NS_OK when it is a JSON
 * object (whatever it lists), NS_ERR_PARSE with errstr otherwise.
 */
enum ns_err neo4j_query_discovery_read(const char *text, size_t len,
                                       struct neo4j_query_discovery *d,
                                       char *errstr, size_t errstr_size);

/*
 * Run n >= 1 statements in one transaction through the Query API at base
 * ({url}/db/{db}/query/v2) over h. One statement is one request to base;
 * n > 1 open a transaction with the first (base/tx), run each next one in
 * its own request (base/tx/{id}), the last with the commit
 * (base/tx/{id}/commit), sending back the neo4j-cluster-affinity the
 * server answered; any failure rolls the transaction back (DELETE
 * base/tx/{id}, bounded by NEO4J_HTTP_CONNECT_TIMEOUT_MS).
 *
 * Returns and errstr as neo4j_run() (neo4j.h), except that a Neo4j code is
 * left to the caller to classify: NS_ERR_NEO4J_TRANSIENT with the code in
 * code (else code is "") and *failed_stmt the statement whose request got
 * it (else n). A follow-up answered 404 or TransactionNotFound (the server
 * lost the transaction) is transient and unreached, with code "". The
 * caps of neo4j_http apply to the sum of the bodies and of the answers.
 * *failure says how it ended; on success *results (results may be NULL)
 * is the caller's.
 */
enum ns_err neo4j_query_run(struct neo4j_http *h, const char *base,
                            const struct neo4j_stmt *stmts, size_t n,
                            struct cJSON **results, size_t *failed_stmt,
                            enum neo4j_failure *failure, char *code,
                            size_t code_size, char *errstr,
                            size_t errstr_size);

#endif
