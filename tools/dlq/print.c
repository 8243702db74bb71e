#include "print.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

enum ns_err list_collect(const rd_kafka_message_t *rkm, void *opaque,
                         char *errstr, size_t errstr_size)
{
    struct groups *gs = opaque;
    struct letter *lt = letter_new(rkm, 0);
    struct group *g = NULL;

    if (!lt) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    for (size_t i = 0; i < gs->n && !g; i++)
        if (strcmp(gs->v[i].error_class, lt->error_class) == 0 &&
            strcmp(gs->v[i].source_topic, lt->source_topic) == 0 &&
            strcmp(gs->v[i].pattern, lt->pattern) == 0)
            g = &gs->v[i];
    if (!g) {
        if (gs->n == gs->cap) {
            size_t cap = gs->cap ? 2 * gs->cap : 16;
            struct group *v = realloc(gs->v, cap * sizeof(*v));

            if (!v) {
                letter_free(lt);
                ns_err_set(errstr, errstr_size, "out of memory");
                return NS_ERR_NOMEM;
            }
            gs->v = v;
            gs->cap = cap;
        }
        g = &gs->v[gs->n++];
        memset(g, 0, sizeof(*g));
        snprintf(g->error_class, sizeof(g->error_class), "%s",
                 lt->error_class);
        snprintf(g->source_topic, sizeof(g->source_topic), "%s",
                 lt->source_topic);
        snprintf(g->pattern, sizeof(g->pattern), "%s", lt->pattern);
        snprintf(g->example, sizeof(g->example), "%s", lt->reason);
    }
    if (!g->count || lt->timestamp_ms < g->first_ts) {
        g->first_ts = lt->timestamp_ms;
        g->first_partition = lt->partition;
        g->first_offset = lt->offset;
        snprintf(g->first_time, sizeof(g->first_time), "%s", lt->time);
    }
    if (!g->count || lt->timestamp_ms >= g->last_ts) {
        g->last_ts = lt->timestamp_ms;
        g->last_partition = lt->partition;
        g->last_offset = lt->offset;
        snprintf(g->last_time, sizeof(g->last_time), "%s", lt->time);
    }
    g->count++;
    letter_free(lt);
    return NS_OK;
}

int group_cmp(const void *a, const void *b)
{
    const struct group *ga = a, *gb = b;

    if (ga->count != gb->count)
        return ga->count > gb->count ? -1 : 1;
    return ga->first_ts < gb->first_ts ? -1 : ga->first_ts > gb->first_ts;
}

static cJSON *json_pos(int32_t partition, int64_t offset, const char *time)
{
    cJSON *o = cJSON_CreateObject();

    if (!o)
        return NULL;
    if (!cJSON_AddNumberToObject(o, "partition", partition) ||
        !cJSON_AddNumberToObject(o, "offset", (double)offset) ||
        !cJSON_AddStringToObject(o, "time", time)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* A JSON string of len bytes (not NUL-terminated), or null when p is
 * NULL; NULL only when out of memory. */
static cJSON *json_bytes(const void *p, size_t len)
{
    char *s;
    cJSON *v;

    if (!p)
        return cJSON_CreateNull();
    s = malloc(len + 1);
    if (!s)
        return NULL;
    memcpy(s, p, len);
    s[len] = '\0';
    v = cJSON_CreateString(s);
    free(s);
    return v;
}

/* Print doc as one line on stdout, then free it. */
static enum ns_err print_json_line(cJSON *doc, char *errstr,
                                   size_t errstr_size)
{
    char *text = cJSON_PrintUnformatted(doc);

    cJSON_Delete(doc);
    if (!text) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    printf("%s\n", text);
    free(text);
    return NS_OK;
}

enum ns_err list_print_json(const char *topic, const struct groups *gs,
                            uint64_t total, char *errstr, size_t errstr_size)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = NULL;

    if (!doc || !cJSON_AddStringToObject(doc, "topic", topic) ||
        !cJSON_AddNumberToObject(doc, "total", (double)total))
        goto cleanup;
    arr = cJSON_AddArrayToObject(doc, "groups");
    if (!arr)
        goto cleanup;
    for (size_t i = 0; i < gs->n; i++) {
        const struct group *g = &gs->v[i];
        cJSON *o = cJSON_CreateObject();
        cJSON *first, *last;

        if (!o)
            goto cleanup;
        cJSON_AddItemToArray(arr, o);
        first = json_pos(g->first_partition, g->first_offset, g->first_time);
        last = json_pos(g->last_partition, g->last_offset, g->last_time);
        if (first)
            cJSON_AddItemToObject(o, "first", first);
        if (last)
            cJSON_AddItemToObject(o, "last", last);
        if (!first || !last ||
            !cJSON_AddStringToObject(o, "error_class", g->error_class) ||
            !cJSON_AddStringToObject(o, "source_topic", g->source_topic) ||
            !cJSON_AddStringToObject(o, "reason", g->pattern) ||
            !cJSON_AddStringToObject(o, "example_reason", g->example) ||
            !cJSON_AddNumberToObject(o, "count", (double)g->count))
            goto cleanup;
    }
    return print_json_line(doc, errstr, errstr_size);
cleanup:
    cJSON_Delete(doc);
    ns_err_set(errstr, errstr_size, "out of memory");
    return NS_ERR_NOMEM;
}

void list_print_text(const char *topic, const struct groups *gs,
                     uint64_t total)
{
    printf("%s: %" PRIu64 " dead letter%s in %zu group%s\n", topic, total,
           total == 1 ? "" : "s", gs->n, gs->n == 1 ? "" : "s");
    for (size_t i = 0; i < gs->n; i++) {
        const struct group *g = &gs->v[i];

        printf("\n%" PRIu64 " x %s from %s\n", g->count,
               g->error_class[0] ? g->error_class : "(no class)",
               g->source_topic[0] ? g->source_topic : "(no source topic)");
        printf("  reason:  %s\n", g->pattern);
        if (strcmp(g->pattern, g->example) != 0)
            printf("  e.g.:    %s\n", g->example);
        printf("  first:   %d:%" PRId64 " at %s\n", (int)g->first_partition,
               g->first_offset, g->first_time);
        printf("  last:    %d:%" PRId64 " at %s\n", (int)g->last_partition,
               g->last_offset, g->last_time);
    }
}

/* Bytes as printable text: control and non-ASCII bytes as \xNN. */
static void print_bytes(FILE *f, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];

        if (c >= 0x20 && c < 0x7f && c != '\\')
            fputc(c, f);
        else if (c == '\\')
            fputs("\\\\", f);
        else
            fprintf(f, "\\x%02x", c);
    }
}

enum ns_err show_print_json(const struct letters *chosen, size_t n,
                            char *errstr, size_t errstr_size)
{
    cJSON *arr = cJSON_CreateArray();

    if (!arr)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        const struct letter *lt = chosen->v[i];
        cJSON *o = cJSON_CreateObject(), *h, *v;
        const char *name;
        const void *val;
        size_t size;

        if (!o)
            goto nomem;
        cJSON_AddItemToArray(arr, o);
        if (!cJSON_AddNumberToObject(o, "partition", lt->partition) ||
            !cJSON_AddNumberToObject(o, "offset", (double)lt->offset) ||
            !cJSON_AddStringToObject(o, "time", lt->time))
            goto nomem;
        h = cJSON_AddArrayToObject(o, "headers");
        if (!h)
            goto nomem;
        for (size_t k = 0; lt->hdrs &&
             rd_kafka_header_get_all(lt->hdrs, k, &name, &val, &size) ==
                 RD_KAFKA_RESP_ERR_NO_ERROR; k++) {
            cJSON *pair = cJSON_CreateArray();

            if (!pair)
                goto nomem;
            cJSON_AddItemToArray(h, pair);
            v = json_bytes(val, size);
            if (!v)
                goto nomem;
            cJSON_AddItemToArray(pair, cJSON_CreateString(name));
            cJSON_AddItemToArray(pair, v);
        }
        v = json_bytes(lt->key, lt->key_len);
        if (!v)
            goto nomem;
        cJSON_AddItemToObject(o, "key", v);
        v = json_bytes(lt->value, lt->value_len);
        if (!v)
            goto nomem;
        cJSON_AddItemToObject(o, "value", v);
    }
    return print_json_line(arr, errstr, errstr_size);
nomem:
    cJSON_Delete(arr);
    ns_err_set(errstr, errstr_size, "out of memory");
    return NS_ERR_NOMEM;
}

void show_print_text(const char *topic, const struct letters *chosen, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct letter *lt = chosen->v[i];
        const char *name;
        const void *val;
        size_t size;

        printf("%s--- %s %d:%" PRId64 " at %s\n", i ? "\n" : "", topic,
               (int)lt->partition, lt->offset, lt->time);
        for (size_t k = 0; lt->hdrs &&
             rd_kafka_header_get_all(lt->hdrs, k, &name, &val, &size) ==
                 RD_KAFKA_RESP_ERR_NO_ERROR; k++) {
            printf("header %s: ", name);
            if (val)
                print_bytes(stdout, val, size);
            else
                fputs("(null)", stdout);
            fputc('\n', stdout);
        }
        fputs("key: ", stdout);
        if (lt->key)
            print_bytes(stdout, lt->key, lt->key_len);
        else
            fputs("(null)", stdout);
        fputs("\nvalue: ", stdout);
        if (lt->value)
            print_bytes(stdout, lt->value, lt->value_len);
        else
            fputs("(null: tombstone)", stdout);
        fputc('\n', stdout);
    }
}
