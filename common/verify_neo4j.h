/*
 * verify_neo4j.h - verify's graph side: the page statement of a table
 * (nodes by key, or relationships by (a, b, element id)), its keyset
 * paging, and the helpers that run a statement and read its rows.
 *
 * Private to the verify modules: works on a `struct run` (verify_run.h),
 * whose graph page it owns (freed by verify_table_run()).
 */
#ifndef NS_VERIFY_NEO4J_H
#define NS_VERIFY_NEO4J_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "neo4j.h"
#include "verify_run.h"

/* The page statement of run->tbl into run->cypher; properties come back
 * in a form compared without guessing at formats. NS_ERR_LIMIT when it
 * does not fit (no errstr: the caller words it). */
enum ns_err verify_neo4j_build_cypher(struct run *run);

/* Run one statement with params (borrowed); *rows gets its "data" array
 * detached, owned by the caller (cJSON_Delete), NULL on failure. */
enum ns_err verify_neo4j_query(struct neo4j_client *nc, const char *cypher,
                               const cJSON *params, cJSON **rows,
                               char *errstr, size_t errstr_size);

/* The "row" array of one "data" item; borrowed. */
const cJSON *verify_neo4j_row(const cJSON *data_item);

/* Column i of a row as a string, NULL when it is not one; borrowed. */
const char *verify_neo4j_str(const cJSON *row, int i);

/* An integer column (srcLsn, pgVersion); -1 when absent. */
int64_t verify_neo4j_int(const cJSON *row, int i);

/* Fetch the next page of graph rows into run->neo, after the last key
 * seen. The caller sends the repairs held back for the previous page's
 * end (verify_repair_flush()) once it is in. */
enum ns_err verify_neo4j_page_fetch(struct run *run, char *errstr,
                                    size_t errstr_size);

/* Non-zero when the current graph row is the last of its page. */
int verify_neo4j_at_page_end(const struct run *run);

#endif
