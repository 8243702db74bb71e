/*
 * event_member.h - strict readers of the members of a Debezium event's JSON
 * objects: a case-sensitive lookup that refuses a duplicated member, the
 * typed readers of the source block's members, and the quoting of hostile
 * text for error messages.
 *
 * Every reader borrows the objects it is handed and returns pointers into
 * them or copies into the caller's memory; nothing is allocated. event.h's
 * event_parse() is built from these.
 */
#ifndef NS_EVENT_MEMBER_H
#define NS_EVENT_MEMBER_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct cJSON;

/* Longest excerpt of a bad value quoted in an error message; a buffer for
 * event_member_quote() needs EVENT_MEMBER_QUOTE_MAX + 4 bytes. */
#define EVENT_MEMBER_QUOTE_MAX 32

/*
 * At most EVENT_MEMBER_QUOTE_MAX bytes of s, copied into dst (dstsize
 * bytes) with anything but printable ASCII and "'" replaced by '?', and
 * "..." added when s was cut. Returns dst, or "" when dstsize is below
 * EVENT_MEMBER_QUOTE_MAX + 4. s must not be NULL.
 */
const char *event_member_quote(const char *s, char *dst, size_t dstsize);

/*
 * Find member key of obj, case-sensitively; *found (borrowed from obj) is
 * NULL when absent. NS_ERR_SCHEMA, with *found NULL, when the member
 * appears more than once. what names obj in the message ("payload",
 * "source", "the message").
 */
enum ns_err event_member_find(const struct cJSON *obj, const char *what,
                              const char *key, const struct cJSON **found,
                              char *errstr, size_t errstr_size);

/*
 * Member key of obj as a non-negative integral JSON number that fits
 * int64_t. Absent or null leaves *out at -1 and returns NS_OK; anything
 * else that is not such a number, or a duplicate, is NS_ERR_SCHEMA.
 */
enum ns_err event_member_int(const struct cJSON *obj, const char *what,
                             const char *key, int64_t *out, char *errstr,
                             size_t errstr_size);

/*
 * The n decimal digits p[0..n) as a non-negative int64_t in *out. Returns
 * 0, or -1 (*out untouched) when n is 0, a byte is not a digit or the value
 * overflows.
 */
int event_member_digits(const char *p, size_t n, int64_t *out);

/*
 * source.sequence, a string holding ["<last commit lsn>","<current lsn>"]
 * (either may be null): *last_commit and *current get the two LSNs, -1 for
 * a null one or when the member is absent or null. NS_ERR_SCHEMA when it is
 * not of that form.
 */
enum ns_err event_member_sequence(const struct cJSON *source,
                                  int64_t *last_commit, int64_t *current,
                                  char *errstr, size_t errstr_size);

/*
 * source.snapshot as 0 or 1 in *snapshot: absent, null, false and "false"
 * are 0; true, "true", "first", "first_in_data_collection", "last",
 * "last_in_data_collection" and "incremental" are 1. NS_ERR_SCHEMA for
 * any other value.
 */
enum ns_err event_member_snapshot(const struct cJSON *source, int *snapshot,
                                  char *errstr, size_t errstr_size);

/*
 * Copy the string member key of source into dst (dstsize bytes, at least
 * 1). Absent or null gives "" when optional (required 0), an error
 * otherwise; an empty string is an error when required; a string of
 * dstsize bytes or more is an error. On error dst holds "".
 */
enum ns_err event_member_name(const struct cJSON *source, const char *key,
                              int required, char *dst, size_t dstsize,
                              char *errstr, size_t errstr_size);

#endif
