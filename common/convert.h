/*
 * convert.h - PostgreSQL column values as Debezium writes them, turned into
 * the JSON parameter values the Cypher statements expect.
 *
 * Debezium (JsonConverter, default time.precision.mode=adaptive,
 * decimal.handling.mode=precise) writes:
 *   uuid, text, enum     JSON string
 *   json, jsonb          JSON string holding the document (kept as string)
 *   int2/int4/int8       JSON number
 *   float4/float8        JSON number
 *   bool                 JSON true/false
 *   timestamptz          ISO-8601 string (io.debezium.time.ZonedTimestamp)
 *   timestamp            microseconds since the epoch (MicroTimestamp);
 *                        milliseconds for timestamp(0..3) (Timestamp)
 *   date                 days since the epoch (io.debezium.time.Date)
 *   numeric(p,s)         base64 big-endian two's complement unscaled integer,
 *                        scale in the schema; or, for numeric without scale,
 *                        {"scale": s, "value": base64} (VariableScaleDecimal)
 *   text[]               JSON array of strings
 * A TOASTed column that did not change arrives as the placeholder
 * "__debezium_unavailable_value" and must never overwrite a property.
 *
 * Temporal values leave here as ISO-8601 strings, which the Cypher builder
 * wraps in datetime()/localdatetime()/date(); numerics leave as doubles.
 */
#ifndef NS_CONVERT_H
#define NS_CONVERT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct cJSON;

enum col_type {
    COL_UUID = 0,
    COL_TEXT,
    COL_ENUM,
    COL_INT,
    COL_FLOAT,
    COL_BOOL,
    COL_JSON,
    COL_TIMESTAMPTZ,
    COL_TIMESTAMP,
    COL_DATE,
    COL_NUMERIC,
    COL_TEXT_ARRAY,
    COL__COUNT
};

/* The placeholder Debezium writes for an unchanged TOASTed value. */
#define CONVERT_UNAVAILABLE "__debezium_unavailable_value"

/* Type name as written in schemas/mapping.cfg ("uuid", "timestamptz", ...). */
const char *convert_type_name(enum col_type type);

/* Parse a type name; returns -1 when unknown. */
int convert_type_parse(const char *name);

/* "a string", "null", "an object"... for error messages; v may be NULL. */
const char *convert_json_kind(const struct cJSON *v);

/* Non-zero when v is the unchanged-TOAST placeholder. v may be NULL. */
int convert_is_unavailable(const struct cJSON *v);

/*
 * Epoch microseconds as ISO 8601 "YYYY-MM-DDTHH:MM:SS.ffffff", with a
 * trailing "Z" when zulu; out needs 28 bytes. -1 outside years 0000-9999.
 */
int convert_iso_from_micros(int64_t us, int zulu, char *out, size_t size);

/*
 * Convert one Debezium column value to a parameter value.
 *
 * v is the value from the event (NULL or JSON null give JSON null).
 * scale is the numeric scale from the mapping or the event schema, used
 * when a fixed-scale numeric arrives as a bare base64 string; -1 if unknown.
 * On success *out is a new cJSON item the caller owns (cJSON_Delete).
 * On a value that does not fit the type returns NS_ERR_SCHEMA with the
 * reason in errstr and *out NULL.
 */
enum ns_err convert_value(const struct cJSON *v, enum col_type type,
                          int scale, struct cJSON **out, char *errstr,
                          size_t errstr_size);

/*
 * A time as epoch milliseconds: all digits are epoch ms; otherwise
 * YYYY-MM-DD[(T| )HH:MM[:SS[.fff]]][Z|(+|-)HH:MM], UTC when no zone.
 * Returns 0, or -1 when s is neither.
 */
int convert_time_parse(const char *s, int64_t *out);

#endif
