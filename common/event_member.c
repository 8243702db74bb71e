/*
 * event_member.c - strict readers of the members of a Debezium event's JSON
 * objects (the message, its payload, source).
 *
 * Members are looked up case-sensitively and a duplicated member the event
 * depends on is an error: two readers of the same JSON must not disagree on
 * which "op" or "after" counts. The typed readers of source's members
 * (integers, names, sequence, snapshot) say what they found when it is of
 * the wrong type, and hostile text is quoted in messages only after
 * event_member_quote() has made it printable. Nothing here keeps state or
 * allocates; event.c assembles the event from these readers.
 */
#include "event_member.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "convert.h"

/*
 * Copy at most EVENT_MEMBER_QUOTE_MAX bytes of s into dst (size dstsize)
 * for an error message, replacing anything but printable ASCII with '?' so a
 * hostile value cannot forge log lines. Adds "..." when s was cut.
 */
const char *event_member_quote(const char *s, char *dst, size_t dstsize)
{
    size_t i, n = 0;

    if (dstsize < EVENT_MEMBER_QUOTE_MAX + 4)
        return "";
    for (i = 0; s[i] && n < EVENT_MEMBER_QUOTE_MAX; i++)
        dst[n++] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\'') ? s[i] : '?';
    if (s[i]) {
        memcpy(dst + n, "...", 3);
        n += 3;
    }
    dst[n] = '\0';
    return dst;
}

static int event_member_is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * Find member key of obj, case-sensitively. *found is NULL when absent.
 * Returns NS_ERR_SCHEMA when the member appears more than once. what names
 * obj in the message ("payload", "source").
 */
enum ns_err event_member_find(const cJSON *obj, const char *what,
                              const char *key, const cJSON **found,
                              char *errstr, size_t errstr_size)
{
    const cJSON *item;

    *found = NULL;
    cJSON_ArrayForEach(item, obj) {
        if (!item->string || strcmp(item->string, key) != 0)
            continue;
        if (*found) {
            ns_err_set(errstr, errstr_size, "duplicate member '%s' in %s",
                         key, what);
            *found = NULL;
            return NS_ERR_SCHEMA;
        }
        *found = item;
    }
    return NS_OK;
}

/*
 * A non-negative integral JSON number that fits int64_t. Absent or null
 * leaves *out at -1.
 */
enum ns_err event_member_int(const cJSON *obj, const char *what,
                             const char *key, int64_t *out, char *errstr,
                             size_t errstr_size)
{
    const cJSON *v;
    enum ns_err err;
    double d;

    *out = -1;
    err = event_member_find(obj, what, key, &v, errstr, errstr_size);
    if (err)
        return err;
    if (!v || cJSON_IsNull(v))
        return NS_OK;
    if (!cJSON_IsNumber(v)) {
        ns_err_set(errstr, errstr_size, "%s.%s is %s, not a number", what,
                     key, convert_json_kind(v));
        return NS_ERR_SCHEMA;
    }
    d = v->valuedouble;
    /* 9223372036854775808.0 is 2^63, the first double past INT64_MAX. */
    if (!isfinite(d) || d != floor(d) || d < 0 || d >= 9223372036854775808.0) {
        ns_err_set(errstr, errstr_size,
                     "%s.%s is not a non-negative 64-bit integer", what, key);
        return NS_ERR_SCHEMA;
    }
    *out = (int64_t)d;
    return NS_OK;
}

/* Parse n decimal digits [p, p+n) into a non-negative int64. */
int event_member_digits(const char *p, size_t n, int64_t *out)
{
    int64_t v = 0;
    size_t i;

    if (n == 0)
        return -1;
    for (i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        if (v > (INT64_MAX - (p[i] - '0')) / 10)
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    *out = v;
    return 0;
}

/*
 * One element of source.sequence at *pp: null or a string of decimal
 * digits. Advances *pp past it. -1 on a malformed element.
 */
static int event_member_sequence_elem(const char **pp, int64_t *out)
{
    const char *p = *pp, *q;

    if (strncmp(p, "null", 4) == 0) {
        *out = -1;
        *pp = p + 4;
        return 0;
    }
    if (*p != '"')
        return -1;
    q = strchr(p + 1, '"');
    if (!q || event_member_digits(p + 1, (size_t)(q - p - 1), out) != 0)
        return -1;
    *pp = q + 1;
    return 0;
}

static const char *event_member_skip_space(const char *p)
{
    while (event_member_is_space((unsigned char)*p))
        p++;
    return p;
}

/*
 * source.sequence is a string holding a JSON array of two LSNs as strings,
 * ["<last commit lsn>","<current lsn>"], either of which may be null.
 * Parsed by hand: the format is fixed and this avoids a second recursive
 * parse of untrusted text. Absent or null leaves *last_commit at -1.
 */
enum ns_err event_member_sequence(const cJSON *source, int64_t *last_commit,
                                  int64_t *current, char *errstr,
                                  size_t errstr_size)
{
    const cJSON *v;
    const char *p;
    int64_t first = -1, second = -1;
    enum ns_err err;

    *last_commit = *current = -1;
    err = event_member_find(source, "source", "sequence", &v, errstr,
                            errstr_size);
    if (err)
        return err;
    if (!v || cJSON_IsNull(v))
        return NS_OK;
    if (!cJSON_IsString(v) || !v->valuestring) {
        ns_err_set(errstr, errstr_size,
                     "source.sequence is %s, not a string",
                     convert_json_kind(v));
        return NS_ERR_SCHEMA;
    }
    p = event_member_skip_space(v->valuestring);
    if (*p++ != '[')
        goto bad;
    p = event_member_skip_space(p);
    if (event_member_sequence_elem(&p, &first) != 0)
        goto bad;
    p = event_member_skip_space(p);
    if (*p++ != ',')
        goto bad;
    p = event_member_skip_space(p);
    if (event_member_sequence_elem(&p, &second) != 0)
        goto bad;
    p = event_member_skip_space(p);
    if (*p++ != ']')
        goto bad;
    p = event_member_skip_space(p);
    if (*p != '\0')
        goto bad;
    *last_commit = first;
    *current = second;
    return NS_OK;

bad:
    ns_err_set(errstr, errstr_size,
                 "source.sequence is not a JSON array of two LSN strings "
                 "or nulls");
    return NS_ERR_SCHEMA;
}

/*
 * source.snapshot: absent, null, false and "false" are 0; true and the
 * strings "true", "first", "first_in_data_collection", "last",
 * "last_in_data_collection" and "incremental" are 1.
 */
enum ns_err event_member_snapshot(const cJSON *source, int *snapshot,
                                  char *errstr, size_t errstr_size)
{
    static const char *const on[] = {
        "true", "first", "first_in_data_collection", "last",
        "last_in_data_collection", "incremental"};
    const cJSON *v;
    enum ns_err err;
    char q[EVENT_MEMBER_QUOTE_MAX + 4];
    size_t i;

    *snapshot = 0;
    err = event_member_find(source, "source", "snapshot", &v, errstr,
                            errstr_size);
    if (err)
        return err;
    if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v))
        return NS_OK;
    if (cJSON_IsTrue(v)) {
        *snapshot = 1;
        return NS_OK;
    }
    if (!cJSON_IsString(v) || !v->valuestring) {
        ns_err_set(errstr, errstr_size,
                     "source.snapshot is %s, not a boolean or string",
                     convert_json_kind(v));
        return NS_ERR_SCHEMA;
    }
    if (strcmp(v->valuestring, "false") == 0)
        return NS_OK;
    for (i = 0; i < sizeof(on) / sizeof(on[0]); i++) {
        if (strcmp(v->valuestring, on[i]) == 0) {
            *snapshot = 1;
            return NS_OK;
        }
    }
    ns_err_set(errstr, errstr_size, "unknown source.snapshot '%s'",
                 event_member_quote(v->valuestring, q, sizeof(q)));
    return NS_ERR_SCHEMA;
}

/*
 * Copy the string member key of source into dst (dstsize bytes).
 * Absent or null gives "" when optional, an error otherwise; an empty
 * string is an error when required.
 */
enum ns_err event_member_name(const cJSON *source, const char *key,
                              int required, char *dst, size_t dstsize,
                              char *errstr, size_t errstr_size)
{
    const cJSON *v;
    enum ns_err err;
    size_t n;

    dst[0] = '\0';
    err = event_member_find(source, "source", key, &v, errstr, errstr_size);
    if (err)
        return err;
    if (!v || cJSON_IsNull(v)) {
        if (!required)
            return NS_OK;
        ns_err_set(errstr, errstr_size, "missing source.%s", key);
        return NS_ERR_SCHEMA;
    }
    if (!cJSON_IsString(v) || !v->valuestring) {
        ns_err_set(errstr, errstr_size, "source.%s is %s, not a string",
                     key, convert_json_kind(v));
        return NS_ERR_SCHEMA;
    }
    n = strlen(v->valuestring);
    if (n == 0 && required) {
        ns_err_set(errstr, errstr_size, "source.%s is empty", key);
        return NS_ERR_SCHEMA;
    }
    if (n >= dstsize) {
        ns_err_set(errstr, errstr_size,
                     "source.%s is %zu bytes, longer than %zu", key, n,
                     dstsize - 1);
        return NS_ERR_SCHEMA;
    }
    memcpy(dst, v->valuestring, n + 1);
    return NS_OK;
}
