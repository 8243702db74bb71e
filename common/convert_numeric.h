/*
 * convert_numeric.h - a numeric(p,s) column value as Debezium writes it,
 * turned into a JSON number parameter.
 *
 * Debezium (decimal.handling.mode=precise) writes a base64 big-endian two's
 * complement unscaled integer with the scale in the schema, or, for numeric
 * without scale, {"scale": s, "value": base64} (VariableScaleDecimal);
 * decimal.handling.mode=string writes decimal text, double a JSON number.
 * convert.h's convert_value() dispatches here for COL_NUMERIC.
 */
#ifndef NS_CONVERT_NUMERIC_H
#define NS_CONVERT_NUMERIC_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct cJSON;

/*
 * Integral finite double d within int64_t: 0 and *out gets it; -1 and
 * *out untouched otherwise.
 */
int convert_numeric_to_int64(double d, int64_t *out);

/*
 * Convert one numeric column value: a JSON number as is; a
 * {"scale": s, "value": base64} object (its own scale wins); or a string.
 * With a known scale (>= 0) a string that is valid base64 is the unscaled
 * integer, so "1234" is base64 there; any other string must be a decimal
 * number. Without a scale (-1) a string must be a decimal number.
 *
 * v is a JSON number, object or string, not NULL (convert_value() handles
 * null, the TOAST placeholder and other JSON kinds). On success *out is a
 * new cJSON number the caller owns (cJSON_Delete). Returns NS_ERR_SCHEMA
 * for a malformed value, a scale out of range, a value beyond a double or
 * longer than the limit, or NS_ERR_NOMEM, with the reason in errstr and
 * no item handed over.
 */
enum ns_err convert_numeric_value(const struct cJSON *v, int scale,
                                  struct cJSON **out, char *errstr,
                                  size_t errstr_size);

#endif
