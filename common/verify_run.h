/*
 * verify_run.h - PRIVATE to the verify modules (verify, verify_pg,
 * verify_neo4j, verify_join, verify_repair, verify_report): the verifier
 * handle and the state of one table run, which they all work on.
 *
 * Nothing outside those modules includes this header: tools see
 * `struct verify` only as the opaque handle of verify.h. Only constants
 * and types live here; each module's functions are in its own header.
 * Ownership: a `struct verify` (verify.c) owns its PostgreSQL connection
 * and its results; a `struct run` lives on verify_table_run()'s stack for
 * one table and owns its pages, its query texts and its pending repairs.
 */
#ifndef NS_VERIFY_RUN_H
#define NS_VERIFY_RUN_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "change.h"
#include "mapping.h"
#include "neo4j.h"
#include "verify_types.h"

#if defined(__has_include) && __has_include(<libpq-fe.h>)
#include <libpq-fe.h>
#else
#include <postgresql/libpq-fe.h>
#endif

#define VERIFY_SQL_MAX (64u * 1024u)
#define VERIFY_CYPHER_MAX (64u * 1024u)

/* Fixed columns of a PostgreSQL page before the properties. */
#define PG_NODE_FIXED 2              /* key, pg_version */
#define PG_LINK_FIXED 3              /* a, b, pg_version */

/* Columns of a Neo4j page row. */
enum { NEO_NODE_K = 0, NEO_NODE_LSN, NEO_NODE_V, NEO_NODE_PROPS,
       NEO_NODE_PARENTS };
enum { NEO_LINK_A = 0, NEO_LINK_B, NEO_LINK_EID, NEO_LINK_LSN, NEO_LINK_V,
       NEO_LINK_PROPS };

struct verify_example {
    const char *kind;     /* static: "missing", "extra", "mismatch", ... */
    char *key;            /* node key, or "a|b" for a link */
    char *property;       /* mismatch only */
    char *pg;             /* JSON text of the PostgreSQL-side value */
    char *neo4j;          /* JSON text of the graph-side value */
};

struct table_result {
    const struct mapping_table *tbl;
    struct verify_counts c;
    struct verify_example *ex;
    size_t ex_count;
};

struct verify {
    const struct mapping *map;
    PGconn *pg;
    struct neo4j_client *nc;
    struct verify_options opt;
    struct table_result *results;
    size_t result_count;
};

/* What a pending upsert still needs checked against the graph. */
enum pend_kind {
    PEND_SEEN = 0,        /* element exists: lsn/v already final */
    PEND_MISSING_NODE,    /* look up its tombstone first */
    PEND_TEMPORAL         /* look up the versions of the pair first */
};

struct pend_meta {
    enum pend_kind kind;
    int64_t snap_lsn;     /* PostgreSQL WAL position before the row's read */
    char eid[96];         /* PEND_TEMPORAL: the current version seen, or "" */
    int skip;             /* decided not to send */
};

/* Repairs waiting to be sent, at most about one page's worth. */
struct pending {
    struct change *changes;
    struct pend_meta *meta;
    size_t n;
    size_t cap;
    cJSON *node_deletes;      /* rows {k, lsn, ts} for the delete stmt */
    cJSON *rel_deletes;       /* rows {eid, lsn, ts} */
    cJSON **parent_deletes;   /* per parent: rows {eid} */
    size_t parent_count;
    int unsafe;               /* holds a temporal re-version of the pair at
                                 the end of the current graph page */
};

/* One page of PostgreSQL rows. */
struct pg_page {
    PGresult *res;
    int n;
    int i;
    int done;                 /* no page after this one */
    int started;
    char after[2][CHANGE_KEY_MAX];
    int64_t snap_lsn;
};

/* One page of graph rows. */
struct neo_page {
    cJSON *res;
    cJSON *cur;               /* current row array */
    int done;
    int started;
    size_t n;
    char after[3][CHANGE_KEY_MAX];
};

/* Everything one table run needs. */
struct run {
    struct verify *vf;
    const struct mapping_table *tbl;
    struct table_result *tr;
    struct buf sql_first;
    struct buf sql_next;
    struct buf cypher;
    struct pg_page pg;
    struct neo_page neo;
    struct pending pend;
    int64_t now_ms;
};

#endif
