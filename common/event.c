/*
 * event.c - parse one Debezium PostgreSQL change event (JSON converter).
 *
 * The raw Kafka value is first scanned once, without recursion: it must be
 * within EVENT_MAX_BYTES, valid UTF-8, free of NUL bytes and of the escape
 * \u0000 (which cJSON would silently turn into a truncated C string), and
 * nest no deeper than EVENT_MAX_DEPTH. Only then does cJSON parse a
 * NUL-terminated copy, so cJSON's recursion is bounded by our own limit
 * long before its CJSON_NESTING_LIMIT.
 *
 * Envelope members are looked up case-sensitively and a duplicated member
 * the event depends on is an error: two readers of the same JSON must not
 * disagree on which "op" or "after" counts.
 */
#include "event.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"

/* Deepest nesting of objects/arrays accepted; a Debezium envelope with its
 * schema needs about 6, a jsonb column travels as a string. */
#define EVENT_MAX_DEPTH 64

/* Longest excerpt of a bad value quoted in an error message. */
#define EVENT_QUOTE_MAX 32

#define EVENT_DECIMAL_NAME "org.apache.kafka.connect.data.Decimal"

/*
 * Copy at most EVENT_QUOTE_MAX bytes of s into dst (size dstsize) for an
 * error message, replacing anything but printable ASCII with '?' so a
 * hostile value cannot forge log lines. Adds "..." when s was cut.
 */
static const char *event_quote(const char *s, char *dst, size_t dstsize)
{
    size_t i, n = 0;

    if (dstsize < EVENT_QUOTE_MAX + 4)
        return "";
    for (i = 0; s[i] && n < EVENT_QUOTE_MAX; i++)
        dst[n++] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '\'') ? s[i] : '?';
    if (s[i]) {
        memcpy(dst + n, "...", 3);
        n += 3;
    }
    dst[n] = '\0';
    return dst;
}

/*
 * Length of the valid UTF-8 sequence starting at p (at most avail bytes),
 * or 0 when it is invalid: truncated, overlong, a surrogate, above
 * U+10FFFF, or a stray continuation byte. p[0] is >= 0x80.
 */
static size_t event_utf8_seq(const unsigned char *p, size_t avail)
{
    unsigned char b0 = p[0];
    size_t n, i;
    unsigned char lo = 0x80, hi = 0xBF;

    if (b0 >= 0xC2 && b0 <= 0xDF) {
        n = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        n = 3;
        if (b0 == 0xE0)
            lo = 0xA0;          /* overlong */
        else if (b0 == 0xED)
            hi = 0x9F;          /* UTF-16 surrogates */
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        n = 4;
        if (b0 == 0xF0)
            lo = 0x90;          /* overlong */
        else if (b0 == 0xF4)
            hi = 0x8F;          /* above U+10FFFF */
    } else {
        return 0;               /* continuation byte, C0/C1, F5..FF */
    }
    if (avail < n)
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

/*
 * One pass over the raw bytes before any parsing: NUL bytes, invalid UTF-8,
 * the escape \u0000 inside strings, and nesting depth outside strings.
 * Tracks string state only approximately enough for that: the JSON parser
 * that follows rejects anything malformed this scan lets through.
 */
static enum ns_err event_scan(const unsigned char *p, size_t len,
                              char *errstr, size_t errstr_size)
{
    size_t i, n;
    int in_string = 0, escaped = 0;
    unsigned depth = 0;

    for (i = 0; i < len; i++) {
        unsigned char b = p[i];

        if (b == 0) {
            ns_err_set(errstr, errstr_size,
                         "payload contains a NUL byte at byte %zu", i);
            return NS_ERR_PARSE;
        }
        if (b >= 0x80) {
            n = event_utf8_seq(p + i, len - i);
            if (n == 0) {
                ns_err_set(errstr, errstr_size,
                             "payload is not valid UTF-8 at byte %zu", i);
                return NS_ERR_PARSE;
            }
            escaped = 0;
            i += n - 1;
            continue;
        }
        if (in_string) {
            if (escaped) {
                escaped = 0;
                if (b == 'u' && len - i > 4 &&
                    memcmp(p + i + 1, "0000", 4) == 0) {
                    ns_err_set(errstr, errstr_size,
                                 "payload contains the escape \\u0000 at "
                                 "byte %zu", i - 1);
                    return NS_ERR_PARSE;
                }
            } else if (b == '\\') {
                escaped = 1;
            } else if (b == '"') {
                in_string = 0;
            }
            continue;
        }
        if (b == '"') {
            in_string = 1;
        } else if (b == '{' || b == '[') {
            depth++;
            if (depth > EVENT_MAX_DEPTH) {
                ns_err_set(errstr, errstr_size,
                             "payload nests deeper than %d levels at byte %zu",
                             EVENT_MAX_DEPTH, i);
                return NS_ERR_PARSE;
            }
        } else if ((b == '}' || b == ']') && depth > 0) {
            depth--;
        }
    }
    return NS_OK;
}

static int event_is_json_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * Non-zero when the value is JSON null, or the envelope
 * {"schema":null,"payload":null} that Kafka's JsonConverter wrote for a
 * tombstone before it learnt to write a real null.
 */
int event_is_tombstone(const void *payload, size_t len)
{
    const unsigned char *p = payload;
    size_t start = 0, end = len, members = 0;
    cJSON *root = NULL, *item;
    char text[129];
    int tomb = 0;

    if (!payload || len == 0)
        return 1;
    while (start < end && event_is_json_space(p[start]))
        start++;
    while (end > start && event_is_json_space(p[end - 1]))
        end--;
    if (end - start == 4 && memcmp(p + start, "null", 4) == 0)
        return 1;
    /* The old envelope form is short; do not parse anything bigger. */
    if (end - start > sizeof(text) - 1 || end == start || p[start] != '{')
        return 0;
    if (memchr(p + start, '\0', end - start))
        return 0;
    memcpy(text, p + start, end - start);
    text[end - start] = '\0';
    root = cJSON_ParseWithOpts(text, NULL, 1);
    if (!cJSON_IsObject(root))
        goto cleanup;
    cJSON_ArrayForEach(item, root) {
        members++;
        if (!item->string || !cJSON_IsNull(item) ||
            (strcmp(item->string, "schema") != 0 &&
             strcmp(item->string, "payload") != 0))
            goto cleanup;
    }
    tomb = members >= 1 && members <= 2 &&
           cJSON_GetObjectItemCaseSensitive(root, "payload") != NULL;

cleanup:
    cJSON_Delete(root);
    return tomb;
}

/*
 * Find member key of obj, case-sensitively. *found is NULL when absent.
 * Returns NS_ERR_SCHEMA when the member appears more than once. what names
 * obj in the message ("payload", "source").
 */
static enum ns_err event_member(const cJSON *obj, const char *what,
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
static enum ns_err event_int_member(const cJSON *obj, const char *what,
                                    const char *key, int64_t *out,
                                    char *errstr, size_t errstr_size)
{
    const cJSON *v;
    enum ns_err err;
    double d;

    *out = -1;
    err = event_member(obj, what, key, &v, errstr, errstr_size);
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
static int event_parse_digits(const char *p, size_t n, int64_t *out)
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
static int event_sequence_elem(const char **pp, int64_t *out)
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
    if (!q || event_parse_digits(p + 1, (size_t)(q - p - 1), out) != 0)
        return -1;
    *pp = q + 1;
    return 0;
}

static const char *event_skip_space(const char *p)
{
    while (event_is_json_space((unsigned char)*p))
        p++;
    return p;
}

/*
 * source.sequence is a string holding a JSON array of two LSNs as strings,
 * ["<last commit lsn>","<current lsn>"], either of which may be null.
 * Parsed by hand: the format is fixed and this avoids a second recursive
 * parse of untrusted text. Absent or null leaves *last_commit at -1.
 */
static enum ns_err event_sequence(const cJSON *source, int64_t *last_commit,
                                  int64_t *current, char *errstr,
                                  size_t errstr_size)
{
    const cJSON *v;
    const char *p;
    int64_t first = -1, second = -1;
    enum ns_err err;

    *last_commit = *current = -1;
    err = event_member(source, "source", "sequence", &v, errstr, errstr_size);
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
    p = event_skip_space(v->valuestring);
    if (*p++ != '[')
        goto bad;
    p = event_skip_space(p);
    if (event_sequence_elem(&p, &first) != 0)
        goto bad;
    p = event_skip_space(p);
    if (*p++ != ',')
        goto bad;
    p = event_skip_space(p);
    if (event_sequence_elem(&p, &second) != 0)
        goto bad;
    p = event_skip_space(p);
    if (*p++ != ']')
        goto bad;
    p = event_skip_space(p);
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
static enum ns_err event_snapshot(const cJSON *source, int *snapshot,
                                  char *errstr, size_t errstr_size)
{
    static const char *const on[] = {
        "true", "first", "first_in_data_collection", "last",
        "last_in_data_collection", "incremental"};
    const cJSON *v;
    enum ns_err err;
    char q[EVENT_QUOTE_MAX + 4];
    size_t i;

    *snapshot = 0;
    err = event_member(source, "source", "snapshot", &v, errstr, errstr_size);
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
                 event_quote(v->valuestring, q, sizeof(q)));
    return NS_ERR_SCHEMA;
}

/*
 * Copy the string member key of source into dst (EVENT_NAME_MAX bytes).
 * Absent or null gives "" when optional, an error otherwise; an empty
 * string is an error when required.
 */
static enum ns_err event_name_member(const cJSON *source, const char *key,
                                     int required, char *dst, char *errstr,
                                     size_t errstr_size)
{
    const cJSON *v;
    enum ns_err err;
    size_t n;

    dst[0] = '\0';
    err = event_member(source, "source", key, &v, errstr, errstr_size);
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
    if (n >= EVENT_NAME_MAX) {
        ns_err_set(errstr, errstr_size,
                     "source.%s is %zu bytes, longer than %d", key, n,
                     EVENT_NAME_MAX - 1);
        return NS_ERR_SCHEMA;
    }
    memcpy(dst, v->valuestring, n + 1);
    return NS_OK;
}

static enum ns_err event_source(struct event *ev, const cJSON *source,
                                char *errstr, size_t errstr_size)
{
    enum ns_err err;
    /* A logical decoding message belongs to no table: Debezium sends "". */
    int table_required = ev->op != EVENT_OP_MESSAGE;

    err = event_name_member(source, "table", table_required, ev->table,
                            errstr, errstr_size);
    if (err)
        return err;
    err = event_name_member(source, "schema", 0, ev->schema, errstr,
                            errstr_size);
    if (err)
        return err;
    err = event_int_member(source, "source", "lsn", &ev->lsn, errstr,
                           errstr_size);
    if (err)
        return err;
    err = event_int_member(source, "source", "txId", &ev->tx_id, errstr,
                           errstr_size);
    if (err)
        return err;
    err = event_int_member(source, "source", "ts_ms", &ev->ts_ms, errstr,
                           errstr_size);
    if (err)
        return err;
    err = event_sequence(source, &ev->last_commit_lsn, &ev->sequence_lsn,
                         errstr, errstr_size);
    if (err)
        return err;
    return event_snapshot(source, &ev->snapshot, errstr, errstr_size);
}

/* A row image member: absent or null gives NULL, else it must be an
 * object. */
static enum ns_err event_image(const cJSON *payload, const char *key,
                               const cJSON **out, char *errstr,
                               size_t errstr_size)
{
    const cJSON *v;
    enum ns_err err;

    *out = NULL;
    err = event_member(payload, "payload", key, &v, errstr, errstr_size);
    if (err)
        return err;
    if (!v || cJSON_IsNull(v))
        return NS_OK;
    if (!cJSON_IsObject(v)) {
        ns_err_set(errstr, errstr_size, "%s is %s, not an object or null",
                     key, convert_json_kind(v));
        return NS_ERR_SCHEMA;
    }
    *out = v;
    return NS_OK;
}

static enum ns_err event_op(const cJSON *payload, enum event_op *op,
                            char *errstr, size_t errstr_size)
{
    const cJSON *v;
    enum ns_err err;
    const char *s;
    char q[EVENT_QUOTE_MAX + 4];

    err = event_member(payload, "payload", "op", &v, errstr, errstr_size);
    if (err)
        return err;
    if (!v || cJSON_IsNull(v)) {
        ns_err_set(errstr, errstr_size, "missing op");
        return NS_ERR_SCHEMA;
    }
    if (!cJSON_IsString(v) || !v->valuestring) {
        ns_err_set(errstr, errstr_size, "op is %s, not a string",
                     convert_json_kind(v));
        return NS_ERR_SCHEMA;
    }
    s = v->valuestring;
    if (s[0] != '\0' && s[1] == '\0' && strchr("cudrtm", s[0])) {
        *op = (enum event_op)s[0];
        return NS_OK;
    }
    ns_err_set(errstr, errstr_size, "unknown op '%s'",
                 event_quote(s, q, sizeof(q)));
    return NS_ERR_SCHEMA;
}

/*
 * Find the payload: the "payload" member of a {"schema","payload"}
 * envelope, or the root itself. A root with "op" is always bare; a root
 * with "schema" or "payload" and no "op" is the envelope.
 */
static enum ns_err event_unwrap(struct event *ev, const cJSON **payload,
                                char *errstr, size_t errstr_size)
{
    const cJSON *op, *schema, *inner;
    enum ns_err err;

    *payload = NULL;
    err = event_member(ev->root, "the message", "op", &op, errstr, errstr_size);
    if (err)
        return err;
    err = event_member(ev->root, "the message", "schema", &schema, errstr,
                       errstr_size);
    if (err)
        return err;
    err = event_member(ev->root, "the message", "payload", &inner, errstr,
                       errstr_size);
    if (err)
        return err;
    if (op || (!schema && !inner)) {
        *payload = ev->root;
        return NS_OK;
    }
    if (!inner) {
        ns_err_set(errstr, errstr_size,
                     "envelope has a schema but no payload");
        return NS_ERR_SCHEMA;
    }
    if (cJSON_IsNull(inner)) {
        ns_err_set(errstr, errstr_size, "envelope payload is null");
        return NS_ERR_PARSE;
    }
    if (!cJSON_IsObject(inner)) {
        ns_err_set(errstr, errstr_size, "payload is %s, not an object",
                     convert_json_kind(inner));
        return NS_ERR_PARSE;
    }
    if (schema && !cJSON_IsNull(schema) && !cJSON_IsObject(schema)) {
        ns_err_set(errstr, errstr_size, "schema is %s, not an object",
                     convert_json_kind(schema));
        return NS_ERR_SCHEMA;
    }
    ev->value_schema = cJSON_IsObject(schema) ? schema : NULL;
    *payload = inner;
    return NS_OK;
}

/* Which row images each op needs, once members are known to be objects. */
static enum ns_err event_check_images(struct event *ev, const cJSON *before,
                                      const cJSON *after, char *errstr,
                                      size_t errstr_size)
{
    switch (ev->op) {
    case EVENT_OP_CREATE:
    case EVENT_OP_READ:
    case EVENT_OP_UPDATE:
        /* before of an update is null under REPLICA IDENTITY DEFAULT. */
        if (!after) {
            ns_err_set(errstr, errstr_size,
                         "op '%c' needs an after row image", (char)ev->op);
            return NS_ERR_SCHEMA;
        }
        break;
    case EVENT_OP_DELETE:
        if (!before) {
            ns_err_set(errstr, errstr_size,
                         "op 'd' needs a before row image");
            return NS_ERR_SCHEMA;
        }
        break;
    case EVENT_OP_TRUNCATE:
    case EVENT_OP_MESSAGE:
        break;
    }
    ev->before = before;
    ev->after = after;
    return NS_OK;
}

/*
 * Parse, then validate in the order a reader would: envelope, op, source,
 * row images. Every failure releases the partial event.
 */
enum ns_err event_parse(const void *payload, size_t len, struct event **out,
                        char *errstr, size_t errstr_size)
{
    struct event *ev = NULL;
    char *text = NULL;
    const char *end = NULL;
    const cJSON *body, *source, *before, *after;
    enum ns_err err;

    if (errstr && errstr_size)
        errstr[0] = '\0';
    if (!out) {
        ns_err_set(errstr, errstr_size, "no place for the event");
        return NS_ERR_PARSE;
    }
    *out = NULL;
    if (!payload || len == 0) {
        ns_err_set(errstr, errstr_size, "payload is empty (a tombstone)");
        return NS_ERR_PARSE;
    }
    if (len > EVENT_MAX_BYTES) {
        ns_err_set(errstr, errstr_size,
                     "payload is %zu bytes, larger than the limit of %u",
                     len, EVENT_MAX_BYTES);
        return NS_ERR_PARSE;
    }
    err = event_scan(payload, len, errstr, errstr_size);
    if (err)
        return err;

    text = malloc(len + 1);
    ev = calloc(1, sizeof(*ev));
    if (!text || !ev) {
        ns_err_set(errstr, errstr_size, "out of memory parsing event");
        err = NS_ERR_NOMEM;
        goto cleanup;
    }
    memcpy(text, payload, len);
    text[len] = '\0';
    ev->lsn = ev->tx_id = ev->ts_ms = ev->last_commit_lsn = -1;
    ev->sequence_lsn = -1;

    ev->root = cJSON_ParseWithOpts(text, &end, 1);
    if (!ev->root) {
        size_t at = end && end >= text && end <= text + len
                        ? (size_t)(end - text) : len;

        ns_err_set(errstr, errstr_size,
                     "payload is not valid JSON (error at byte %zu of %zu)",
                     at, len);
        err = NS_ERR_PARSE;
        goto cleanup;
    }
    if (cJSON_IsNull(ev->root)) {
        ns_err_set(errstr, errstr_size, "payload is null (a tombstone)");
        err = NS_ERR_PARSE;
        goto cleanup;
    }
    if (!cJSON_IsObject(ev->root)) {
        ns_err_set(errstr, errstr_size, "payload is %s, not an object",
                     convert_json_kind(ev->root));
        err = NS_ERR_PARSE;
        goto cleanup;
    }

    err = event_unwrap(ev, &body, errstr, errstr_size);
    if (err)
        goto cleanup;
    err = event_op(body, &ev->op, errstr, errstr_size);
    if (err)
        goto cleanup;
    err = event_member(body, "payload", "source", &source, errstr,
                       errstr_size);
    if (err)
        goto cleanup;
    if (!source || cJSON_IsNull(source)) {
        ns_err_set(errstr, errstr_size, "missing source");
        err = NS_ERR_SCHEMA;
        goto cleanup;
    }
    if (!cJSON_IsObject(source)) {
        ns_err_set(errstr, errstr_size, "source is %s, not an object",
                     convert_json_kind(source));
        err = NS_ERR_SCHEMA;
        goto cleanup;
    }
    err = event_source(ev, source, errstr, errstr_size);
    if (err)
        goto cleanup;
    err = event_image(body, "before", &before, errstr, errstr_size);
    if (err)
        goto cleanup;
    err = event_image(body, "after", &after, errstr, errstr_size);
    if (err)
        goto cleanup;
    err = event_check_images(ev, before, after, errstr, errstr_size);
    if (err)
        goto cleanup;

    *out = ev;
    ev = NULL;

cleanup:
    event_free(ev);
    free(text);
    return err;
}

void event_free(struct event *ev)
{
    if (!ev)
        return;
    cJSON_Delete(ev->root);
    free(ev);
}

const struct cJSON *event_row(const struct event *ev)
{
    if (!ev)
        return NULL;
    switch (ev->op) {
    case EVENT_OP_CREATE:
    case EVENT_OP_UPDATE:
    case EVENT_OP_READ:
        return ev->after;
    case EVENT_OP_DELETE:
        return ev->before;
    case EVENT_OP_TRUNCATE:
    case EVENT_OP_MESSAGE:
        break;
    }
    return NULL;
}

/* First member key of obj that is a string, case-sensitive; else NULL. */
static const char *event_str_member(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/*
 * The scale of column in one struct schema (the schema of "after" or
 * "before"): 0 and up when it is a Decimal with a valid scale parameter,
 * -1 otherwise. *found tells whether the column was there at all.
 */
static int event_struct_scale(const cJSON *st, const char *column,
                              int *found)
{
    const cJSON *fields = cJSON_GetObjectItemCaseSensitive(st, "fields");
    const cJSON *f, *params, *scale;
    const char *name, *s;
    int64_t v;
    double d;

    *found = 0;
    if (!cJSON_IsArray(fields))
        return -1;
    cJSON_ArrayForEach(f, fields) {
        name = event_str_member(f, "field");
        if (!name || strcmp(name, column) != 0)
            continue;
        *found = 1;
        name = event_str_member(f, "name");
        if (!name || strcmp(name, EVENT_DECIMAL_NAME) != 0)
            return -1;
        params = cJSON_GetObjectItemCaseSensitive(f, "parameters");
        scale = cJSON_GetObjectItemCaseSensitive(params, "scale");
        if (cJSON_IsString(scale)) {
            s = scale->valuestring;
            if (!s || event_parse_digits(s, strlen(s), &v) != 0 ||
                v > 0x7fffffff)
                return -1;
            return (int)v;
        }
        if (cJSON_IsNumber(scale)) {
            d = scale->valuedouble;
            if (!isfinite(d) || d != floor(d) || d < 0 || d > 0x7fffffff)
                return -1;
            return (int)d;
        }
        return -1;
    }
    return -1;
}

int event_column_scale(const struct event *ev, const char *column)
{
    static const char *const images[] = {"after", "before"};
    const cJSON *fields, *f;
    const char *name;
    size_t i;
    int found, scale;

    if (!ev || !ev->value_schema || !column)
        return -1;
    fields = cJSON_GetObjectItemCaseSensitive(ev->value_schema, "fields");
    if (!cJSON_IsArray(fields))
        return -1;
    for (i = 0; i < sizeof(images) / sizeof(images[0]); i++) {
        cJSON_ArrayForEach(f, fields) {
            name = event_str_member(f, "field");
            if (!name || strcmp(name, images[i]) != 0)
                continue;
            scale = event_struct_scale(f, column, &found);
            if (found)
                return scale;
        }
    }
    return -1;
}
