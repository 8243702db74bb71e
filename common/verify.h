/*
 * verify.h - compare PostgreSQL with the Neo4j graph through the mapping,
 * and optionally repair what differs.
 *
 * One table at a time, both sides are read in pages of `chunk` rows in the
 * same key order (PostgreSQL: the key column, uuid byte order or text
 * COLLATE "C"; Neo4j: the key property, string order) with keyset
 * pagination, and merge-joined, so memory does not grow with the data.
 *
 * Node table (label L, key property k):
 *   missing   a row with no (:L {k}) node
 *   extra     a (:L) node with no row; bare placeholders (no srcLsn: an
 *             endpoint or parent MERGEd before its own row arrived) and
 *             (:NexusTombstone) nodes are not entities and are not counted
 *   mismatch  a mapped property whose stored value differs from the row's
 *             value converted as the workers convert it (convert.h)
 *   parent    (:P)-[:T]->(:L) relationships from the row's foreign key:
 *             missing, or extra (another parent, or a duplicate)
 * Link table (type T from (:A) to (:B)):
 *   missing / extra / mismatch per (a, b) pair; for a temporal table only
 *   the current version (validTo IS NULL) counts; a second relationship
 *   for one pair is extra.
 *
 * Repair (opt.repair) goes through the workers' own statements (cypher.h,
 * apply.h) with the stale-event guards intact, so it never overwrites a
 * change newer than what it compared:
 *   - a mismatched node or link is upserted with lsn = the srcLsn seen on
 *     it and v = the row's pg_version: the guard lets it through only if
 *     the element did not move on and its pgVersion is not newer;
 *   - a missing node or link gets lsn 0 (any real event wins over it),
 *     or, past a tombstone / a closed temporal version older than the
 *     PostgreSQL read, that position + 1; a newer one is left alone;
 *   - an extra node is deleted with the workers' delete statement (lsn =
 *     its srcLsn: DETACH DELETE plus a tombstone); an extra link or parent
 *     relationship is deleted by element id and type, an extra temporal
 *     version is closed (validTo) as a delete event would close it.
 *
 * verify.c holds the handle and drives one table's run; the pieces are
 * verify_pg (PostgreSQL pages), verify_neo4j (graph pages), verify_join
 * (the merge join and comparison), verify_repair (repairs), verify_value
 * (column values) and verify_report (examples and the reports, whose
 * functions a tool takes from verify_report.h). verify_run.h is their
 * private shared header.
 */
#ifndef NS_VERIFY_H
#define NS_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "mapping.h"
#include "neo4j.h"
#include "verify_types.h"

struct verify;

/*
 * Create a verifier. pg_conninfo is a libpq connection string (with the
 * password); the connection is opened here. nc and map are borrowed and
 * must outlive the verifier. On success *out is owned by the caller
 * (verify_free). NS_ERR_PG_TRANSIENT when PostgreSQL cannot be reached.
 */
enum ns_err verify_new(const struct mapping *map, const char *pg_conninfo,
                       struct neo4j_client *nc,
                       const struct verify_options *opt, struct verify **out,
                       char *errstr, size_t errstr_size);

/* Close the connection and free results; NULL ok. */
void verify_free(struct verify *vf);

/*
 * Compare one node or link table (and repair it when asked); its counts
 * and first examples are added to the verifier's results. A table with no
 * graph element is NS_ERR_CONFIG. Any server error stops the table with
 * its detail in errstr.
 */
enum ns_err verify_table_run(struct verify *vf,
                             const struct mapping_table *tbl, char *errstr,
                             size_t errstr_size);

/* Number of divergences found so far (missing, extra, mismatched and
 * parent counts of every table). */
uint64_t verify_divergences(const struct verify *vf);

/* Counts of the table_index-th table run, or NULL past the end. */
const struct verify_counts *verify_table_counts(const struct verify *vf,
                                                size_t table_index,
                                                const char **table_name);

#endif
