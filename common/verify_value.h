/*
 * verify_value.h - one column value as verify sees it: the PostgreSQL
 * text turned into the parameter a worker would send, the comparison
 * with the value stored in the graph, and the short form shown in
 * reports.
 *
 * Used by the verify modules (verify_pg, verify_join, verify_report); it
 * knows nothing of a run and keeps no state.
 */
#ifndef NS_VERIFY_VALUE_H
#define NS_VERIFY_VALUE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "mapping.h"

struct cJSON;

/* Integer text (the whole string) to *out; 0 on success, -1 when s is
 * NULL, empty or not an integer (*out unchanged). */
int verify_value_parse_int64(const char *s, int64_t *out);

/* JSON text of v (NULL: "null"), cut to a report's width on a UTF-8
 * boundary. Caller frees; NULL when out of memory. */
char *verify_value_show(const struct cJSON *v);

/* The graph-side value for people: temporal epochs (text) of a
 * timestamp column shown back as ISO text, the rest as
 * verify_value_show(). Caller frees; NULL when out of memory. */
char *verify_value_show_neo(const struct cJSON *v, enum col_type type);

/*
 * A column read by verify_pg as the parameter value a worker would send
 * for the same row: the text is first put in the form Debezium writes (or
 * one convert_value() accepts as such), then converted by convert_value()
 * itself. text NULL is SQL NULL. *out is owned by the caller; NS_ERR_SCHEMA
 * when the value cannot be converted (a worker would send that event to
 * the DLQ), reason in errstr; NS_ERR_NOMEM when out of memory.
 */
enum ns_err verify_value_param(const char *text,
                               const struct mapping_property *p,
                               struct cJSON **out, char *errstr,
                               size_t errstr_size);

/* Non-zero when neo (the graph's stored value as verify_neo4j reads it,
 * NULL when absent) is what a worker would have written for param, the
 * converted value of pg_text. Nothing is taken over. */
int verify_value_equal(const struct mapping_property *p, const char *pg_text,
                       const struct cJSON *param, const struct cJSON *neo);

#endif
