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
 * disagree on which "op" or "after" counts. Those readers, and the ones of
 * source's members, live in event_member.c; this file owns the raw scan,
 * the tombstone test, the envelope, op and row images, and the schema's
 * numeric scales.
 */
#include "event.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"
#include "event_member.h"

/* Deepest nesting of objects/arrays accepted; a Debezium envelope with its
 * schema needs about 6, a jsonb column travels as a string. */
#define EVENT_MAX_DEPTH 64

#define EVENT_DECIMAL_NAME "org.apache.kafka.connect.data.Decimal"

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

static enum ns_err event_source(struct event *ev, const cJSON *source,
                                char *errstr, size_t errstr_size)
{
    enum ns_err err;
    /* A logical decoding message belongs to no table: Debezium sends "". */
    int table_required = ev->op != EVENT_OP_MESSAGE;

    err = event_member_name(source, "table", table_required, ev->table,
                            sizeof(ev->table), errstr, errstr_size);
    if (err)
        return err;
    err = event_member_name(source, "schema", 0, ev->schema,
                            sizeof(ev->schema), errstr, errstr_size);
    if (err)
        return err;
    err = event_member_int(source, "source", "lsn", &ev->lsn, errstr,
                           errstr_size);
    if (err)
        return err;
    err = event_member_int(source, "source", "txId", &ev->tx_id, errstr,
                           errstr_size);
    if (err)
        return err;
    err = event_member_int(source, "source", "ts_ms", &ev->ts_ms, errstr,
                           errstr_size);
    if (err)
        return err;
    err = event_member_sequence(source, &ev->last_commit_lsn,
                                &ev->sequence_lsn, errstr, errstr_size);
    if (err)
        return err;
    return event_member_snapshot(source, &ev->snapshot, errstr, errstr_size);
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
    err = event_member_find(payload, "payload", key, &v, errstr, errstr_size);
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
    char q[EVENT_MEMBER_QUOTE_MAX + 4];

    err = event_member_find(payload, "payload", "op", &v, errstr, errstr_size);
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
                 event_member_quote(s, q, sizeof(q)));
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
    err = event_member_find(ev->root, "the message", "op", &op, errstr,
                            errstr_size);
    if (err)
        return err;
    err = event_member_find(ev->root, "the message", "schema", &schema,
                            errstr, errstr_size);
    if (err)
        return err;
    err = event_member_find(ev->root, "the message", "payload", &inner,
                            errstr, errstr_size);
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
    char why_not[128];
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
    ev->envelope_ts_ms = -1;
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
    err = event_member_find(body, "payload", "source", &source, errstr,
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
    /* only times the capture stage: an odd one is ignored, not refused */
    if (event_member_int(body, "payload", "ts_ms", &ev->envelope_ts_ms,
                         why_not, sizeof(why_not)) != NS_OK)
        ev->envelope_ts_ms = -1;
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
            if (!s || event_member_digits(s, strlen(s), &v) != 0 ||
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
