/*
 * event.h - one Debezium PostgreSQL change event (JSON converter).
 *
 * Accepts the envelope with schemas ({"schema":..., "payload":{...}}) and
 * without ({"before":..., "after":..., "source":..., "op":...}). The parsed
 * event keeps the cJSON tree; before/after point into it and share its
 * lifetime, which ends at event_free().
 */
#ifndef NS_EVENT_H
#define NS_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct cJSON;

enum event_op {
    EVENT_OP_CREATE = 'c',
    EVENT_OP_UPDATE = 'u',
    EVENT_OP_DELETE = 'd',
    EVENT_OP_READ = 'r',      /* snapshot read: applied like a create */
    EVENT_OP_TRUNCATE = 't',  /* whole-table truncate: not applied, DLQ */
    EVENT_OP_MESSAGE = 'm'    /* logical decoding message: skipped */
};

#define EVENT_NAME_MAX 128

struct event {
    enum event_op op;
    char schema[EVENT_NAME_MAX];      /* source.schema */
    char table[EVENT_NAME_MAX];       /* source.table */
    const struct cJSON *before;       /* row image or NULL */
    const struct cJSON *after;        /* row image or NULL */
    int64_t lsn;                      /* source.lsn, -1 if absent */
    int64_t tx_id;                    /* source.txId, -1 if absent */
    int64_t ts_ms;                    /* source.ts_ms (commit time), -1 */
    int64_t envelope_ts_ms;           /* ts_ms: when Debezium made the
                                         event; -1 if absent or odd */
    int64_t last_commit_lsn;          /* source.sequence[0], -1 if absent */
    int64_t sequence_lsn;             /* source.sequence[1], -1 if absent */
    int snapshot;                     /* source.snapshot: true/"true"/
                                         "first"/"last"/"incremental";
                                         absent, null or "false" is 0 */
    struct cJSON *root;               /* owned */
    const struct cJSON *value_schema; /* "schema" of the envelope or NULL */
};

/* Largest payload event_parse accepts, bytes. */
#define EVENT_MAX_BYTES (16u * 1024u * 1024u)

/* Non-zero when a Kafka value is a tombstone (NULL/empty or JSON "null"). */
int event_is_tombstone(const void *payload, size_t len);

/*
 * Parse one Kafka message value. payload need not be NUL-terminated.
 * On success *out is a new event (event_free). On failure returns
 * NS_ERR_PARSE (not JSON, too deep, too large, not an object) or
 * NS_ERR_SCHEMA (no/unknown op, no source.table, missing before/after the
 * op needs, wrong member types), with the reason in errstr, *out NULL.
 * A tombstone is NS_ERR_PARSE: callers test event_is_tombstone() first.
 */
enum ns_err event_parse(const void *payload, size_t len, struct event **out,
                        char *errstr, size_t errstr_size);

/* Free an event and its tree; NULL ok. */
void event_free(struct event *ev);

/*
 * The row image that describes the row's current state: after for c/u/r,
 * before for d. NULL for t/m.
 */
const struct cJSON *event_row(const struct event *ev);

/*
 * Scale of a numeric column from the envelope schema (the "scale"
 * parameter of org.apache.kafka.connect.data.Decimal in the after or
 * before field), or -1 when the event carries no schema for it.
 */
int event_column_scale(const struct event *ev, const char *column);

#endif
