/*
 * change.h - one Debezium event turned into one row of Cypher parameters.
 *
 * A change knows its table, its action (upsert or delete), its key and a
 * cJSON row laid out for the statements of cypher.h:
 *   node upsert   {k, ep, lsn, v, ts, p: {property: value...}, par: [key...]}
 *   node delete   {k, ep, lsn, v, ts}
 *   link upsert   {a, b, ep, lsn, v, ts, p: {...}}
 *   link delete   {a, b, ep, lsn, v, ts}
 * k/a/b are key values; (ep, lsn) the source position that the guards
 * compare, ep the configured source epoch (raised when the source's LSNs
 * restart, so positions stay ordered); v the row's pg_version, ts the
 * commit time in epoch milliseconds. A column
 * that arrived as Debezium's unavailable-TOAST placeholder is left out of
 * p, and the change's shape (bit i = property i present) says so, so the
 * statement for that shape never overwrites it.
 */
#ifndef NS_CHANGE_H
#define NS_CHANGE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "event.h"
#include "mapping.h"

struct cJSON;

enum change_action { CHANGE_UPSERT = 0, CHANGE_DELETE };

/* Most properties a mapped table may have: the shape is a 64-bit mask. */
#define CHANGE_MAX_PROPS 64
#define CHANGE_KEY_MAX 160

struct change {
    const struct mapping_table *tbl;
    enum change_action action;
    uint64_t shape;
    struct cJSON *row;           /* owned */
    char key[CHANGE_KEY_MAX];    /* "table|key1|key2": coalescing identity */
    char key_values[2][64];      /* key column values, tbl->key_columns order */
    int64_t version;             /* pg_version of the row, -1 when absent */
    int64_t epoch;               /* source epoch: compared before lsn */
    int64_t lsn;
    size_t msg_index;            /* the Kafka message it came from */
    unsigned round;              /* 0, or for a versioned link the number of
                                    earlier changes of its row in the batch:
                                    round r is applied after round r - 1 */
};

enum change_result {
    CHANGE_READY = 0,   /* *out holds a change to apply */
    CHANGE_SKIP         /* nothing to apply: the update changed only the
                           sync bookkeeping (our own write-back echo) */
};

/*
 * Build the change for ev, whose table is tbl (a node or link table), at
 * source epoch epoch (config source.epoch).
 * On NS_OK *result says whether out was filled; out->row is then owned by
 * the caller (change_clear). NS_ERR_SCHEMA when the event does not fit the
 * mapping (missing or malformed key, a value of the wrong type, truncate),
 * reason in errstr, out untouched.
 */
enum ns_err change_from_event(const struct mapping *map,
                              const struct mapping_table *tbl,
                              const struct event *ev, int64_t epoch,
                              size_t msg_index, struct change *out, enum change_result *result,
                              char *errstr, size_t errstr_size);

/* Release the row; the change may be reused. */
void change_clear(struct change *ch);

/*
 * Coalesce changes in place, keeping arrival order: several changes to one
 * key become one, the newest at the source by (epoch, lsn, pg_version);
 * when the latest is an upsert that left a
 * TOASTed property out, the value from an earlier upsert of the same row
 * is carried over. Dropped changes are cleared. Returns the new count.
 * The msg_index of a merged change is that of the latest.
 *
 * A versioned (temporal) link keeps every change instead, each a version
 * of its history, numbered by round; only an exact redelivery (same
 * position, version and action) is dropped.
 */
size_t change_coalesce(struct change *changes, size_t n);

#endif
