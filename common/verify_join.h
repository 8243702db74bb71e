/*
 * verify_join.h - verify's merge join: the PostgreSQL pages (verify_pg)
 * and the graph pages (verify_neo4j) of one table walked side by side in
 * key order; each row and element is counted as missing, extra or a pair
 * whose properties (and parents) are compared, with examples kept
 * (verify_report) and repairs queued (verify_repair).
 *
 * Private to the verify modules.
 */
#ifndef NS_VERIFY_JOIN_H
#define NS_VERIFY_JOIN_H

#include <stddef.h>

#include "err.h"
#include "verify_run.h"

/*
 * Walk both sides of run->tbl to their ends, then send the last repairs.
 * run's queries are built and its pages empty; the counts and examples go
 * into run->tr. Any server error stops the table with its detail in
 * errstr.
 */
enum ns_err verify_join_run(struct run *run, char *errstr, size_t errstr_size);

#endif
