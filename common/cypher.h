/*
 * cypher.h - Cypher statement text for the change rows of change.h.
 *
 * One statement per (table, action, shape), always `UNWIND $rows AS row`;
 * every value is a parameter. Labels, types and property names come from
 * the mapping, which only admits plain identifiers.
 *
 * Guards built into every statement:
 *  - stale events: nodes and relationships keep srcLsn (and pgVersion) of
 *    the change they reflect; an older change never overwrites them;
 *  - deletes: a deleted node leaves a (:NexusTombstone {key: "Label/id",
 *    lsn}) so that a late change from another worker (a link to it, or a
 *    parent reference) does not bring it back; the node's own newer upsert
 *    removes the tombstone;
 *  - temporal link tables (INCLUDES): a change closes the current version
 *    (validTo) and creates a new one (validFrom); the current state is the
 *    relationship whose validTo IS NULL.
 * Upserts return (k or a, b), v and the element id, for the write-back.
 */
#ifndef NS_CYPHER_H
#define NS_CYPHER_H

#include <stdint.h>

#include "buf.h"
#include "change.h"
#include "err.h"
#include "mapping.h"

#define CYPHER_TOMBSTONE_LABEL "NexusTombstone"

/* Append the statement for (tbl, action, shape) to out. */
enum ns_err cypher_statement(const struct mapping *map,
                             const struct mapping_table *tbl,
                             enum change_action action, uint64_t shape,
                             struct buf *out);

/*
 * Append the schema statements, separated by "\n;\n": a uniqueness
 * constraint per node label (on its key property) and for tombstones,
 * all IF NOT EXISTS. Run each at start-up.
 */
enum ns_err cypher_schema_statements(const struct mapping *map,
                                     struct buf *out);

/* Key property of label: from the node table that owns it, else "id". */
const char *cypher_label_key(const struct mapping *map, const char *label);

#endif
