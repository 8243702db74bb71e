/*
 * neo4j_body.h - the request body of the Neo4j HTTP transactional endpoint:
 * the statements to send, as a cJSON tree and as JSON text.
 *
 * Pure: no connection, no I/O. The text goes into the caller's capped
 * buffer; integral numbers stay integers (Neo4j INTEGER, not FLOAT). neo4j
 * sends what is built here; neo4j.h includes this header, so its callers
 * see struct neo4j_stmt.
 */
#ifndef NS_NEO4J_BODY_H
#define NS_NEO4J_BODY_H

#include <stddef.h>

#include "buf.h"
#include "err.h"

struct cJSON;

struct neo4j_stmt {
    const char *cypher;            /* statement text (borrowed) */
    const struct cJSON *params;    /* parameter object (borrowed) or NULL */
};

/* Deeper parameter trees are refused (cJSON_Parse stops at 1000 too). */
#define NEO4J_BODY_MAX_DEPTH 1000

/*
 * The request body {"statements":[{"statement":..,"parameters":..,
 * "includeStats":true},..]} of n statements (each with a text; params NULL
 * or an object). Statement texts and parameter objects are borrowed by
 * reference, so nothing of the caller's is copied: stmts must outlive the
 * tree. The caller frees the tree (cJSON_Delete), which frees only what was
 * made here. NULL when out of memory.
 */
struct cJSON *neo4j_body_new(const struct neo4j_stmt *stmts, size_t n);

/*
 * Append body (or any cJSON item) to b as JSON text. NS_ERR_LIMIT when b's
 * cap is reached or the tree nests deeper than NEO4J_BODY_MAX_DEPTH,
 * NS_ERR_NOMEM, NS_ERR_PARSE when it holds an item that is not JSON; b then
 * holds part of the text. body is borrowed.
 */
enum ns_err neo4j_body_write(struct buf *b, const struct cJSON *body);

#endif
