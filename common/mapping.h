/*
 * mapping.h - the table-to-graph mapping loaded from schemas/mapping.cfg.
 *
 * A mapping is read once at start-up, validated, and then read-only. Labels,
 * relationship types and property names only ever come from here: they are
 * checked to be plain identifiers ([A-Za-z_][A-Za-z0-9_]*) at load time, so
 * the Cypher builder can splice them into statements.
 */
#ifndef NS_MAPPING_H
#define NS_MAPPING_H

#include <stddef.h>

#include "convert.h"
#include "err.h"

enum mapping_lane {
    LANE_CRITICAL = 0,
    LANE_HIGH,
    LANE_NORMAL,
    LANE_LOW,
    LANE__COUNT
};

enum mapping_kind {
    MAPPING_NODE = 0,      /* rows are entities */
    MAPPING_RELATIONSHIP,  /* rows are links between two entities */
    MAPPING_NONE           /* no graph element; not captured */
};

struct mapping_property {
    char *column;          /* PostgreSQL column */
    char *property;        /* Neo4j property */
    enum col_type type;
    int scale;             /* numeric scale, -1 when not fixed */
};

struct mapping_endpoint {
    char *label;           /* Neo4j label of the node at this end */
    char *column;          /* FK column holding that node's key */
};

struct mapping_parent {
    char *type;            /* relationship type, parent -> this node */
    char *label;           /* parent's label */
    char *column;          /* FK column holding the parent's key */
};

struct mapping_table {
    char *table;
    char *worker;
    enum mapping_lane lane;
    enum mapping_kind kind;
    char **key_columns;
    size_t key_count;

    /* MAPPING_NODE */
    char *label;
    char *key_column;      /* column whose value is the node key */
    char *key_property;    /* node property holding it (unique) */
    struct mapping_parent *parents;
    size_t parent_count;

    /* MAPPING_RELATIONSHIP */
    char *rel_type;
    struct mapping_endpoint from;
    struct mapping_endpoint to;
    int temporal;          /* versioned with validFrom/validTo (seed 003) */

    struct mapping_property *props;
    size_t prop_count;

    char *node_id_column;  /* write-back of the Neo4j element id, or NULL */
    char *rel_id_column;
};

struct mapping_sync {
    char *version;         /* pg_version */
    char *status;
    char *attempts;
    char *error;
    char *timestamp;
};

struct mapping {
    char *topic_prefix;
    char *dlq_topic;
    char *pg_schema;
    struct mapping_sync sync;
    struct mapping_table *tables;
    size_t table_count;
};

/*
 * Load and validate a mapping file. On success *out is a new mapping the
 * caller frees with mapping_free(). On failure returns NS_ERR_CONFIG with
 * "path:line: reason" in errstr and *out NULL.
 */
enum ns_err mapping_load(const char *path, struct mapping **out,
                         char *errstr, size_t errstr_size);

/* Free a mapping; NULL ok. */
void mapping_free(struct mapping *map);

/* The table named name, or NULL. */
const struct mapping_table *mapping_find(const struct mapping *map,
                                         const char *name);

/* The property mapped from column, or NULL. */
const struct mapping_property *mapping_table_prop(
    const struct mapping_table *tbl, const char *column);

/* Lane name ("critical", ...) and its parse (-1 when unknown). */
const char *mapping_lane_name(enum mapping_lane lane);
int mapping_lane_parse(const char *name);

/*
 * Kafka topic of a (lane, worker) pair: "<prefix>.<lane>.<worker>".
 * Writes into out; returns NS_ERR_LIMIT when it does not fit.
 */
enum ns_err mapping_topic(const struct mapping *map, enum mapping_lane lane,
                          const char *worker, char *out, size_t out_size);

/* Non-zero when worker owns at least one captured table in lane. */
int mapping_worker_has_lane(const struct mapping *map, const char *worker,
                            enum mapping_lane lane);

/* Non-zero when a string is a plain identifier usable in Cypher/SQL. */
int mapping_is_identifier(const char *s);

#endif
