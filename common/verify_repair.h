/*
 * verify_repair.h - verify's repairs: what the merge join finds wrong is
 * queued in a `struct pending` (upserts of rows, deletes of nodes, links
 * and parent relationships) and sent about a page's worth at a time
 * through the workers' own statements (apply.h, cypher.h), with the
 * stale-event guards intact (see verify.h for the rules).
 *
 * Private to the verify modules. A `struct pending` (verify_run.h) is
 * owned by its run: verify_repair_init() fills it, verify_repair_free()
 * empties it. Nothing is sent unless opt.repair is set.
 */
#ifndef NS_VERIFY_REPAIR_H
#define NS_VERIFY_REPAIR_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "verify_run.h"

/* Room for cap upserts and delete lists for parent_count parents.
 * NS_ERR_NOMEM when out of memory (verify_repair_free() still frees what
 * was made). */
enum ns_err verify_repair_init(struct pending *pend, size_t cap,
                               size_t parent_count);

/* Free everything pend holds and zero it; safe on a zeroed pend. */
void verify_repair_free(struct pending *pend);

/*
 * Queue an upsert of the current PostgreSQL row (k1, or k1|k2 for a
 * link). props is taken over, freed on failure too. lsn and version go
 * into the row as the guards expect them; kind says what must still be
 * looked up before it is sent, eid the temporal version compared (NULL
 * or "" for none). A parent key that cannot be converted counts the row
 * as not repaired and is no error. NS_ERR_LIMIT when the queue is full.
 */
enum ns_err verify_repair_upsert(struct run *run, const char *k1,
                                 const char *k2, cJSON *props, int64_t lsn,
                                 int64_t version, enum pend_kind kind,
                                 const char *eid);

/* Append {name: value, lsn, ts} to the delete list list (one of
 * run->pend's); a negative lsn is sent as 0. NS_ERR_NOMEM only. */
enum ns_err verify_repair_delete(struct run *run, cJSON *list,
                                 const char *name, const char *value,
                                 int64_t lsn);

/* Send every queued repair (when opt.repair is set) and empty the queue;
 * what the graph accepted and what it did not are added to the table's
 * counts. Any server error stops with its detail in errstr. */
enum ns_err verify_repair_flush(struct run *run, char *errstr,
                                size_t errstr_size);

/* verify_repair_flush() once a page's worth is queued and nothing queued
 * can come back into the graph pages still to read. */
enum ns_err verify_repair_maybe_flush(struct run *run, char *errstr,
                                      size_t errstr_size);

#endif
