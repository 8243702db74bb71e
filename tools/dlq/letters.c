#include "letters.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dlq.h"

/* A decimal integer covering the whole string; -1 when it is not one. */
int64_t parse_int(const char *s)
{
    char *end;
    long long v;

    if (!s || !*s)
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end || v < 0)
        return -1;
    return (int64_t)v;
}

void iso_time(int64_t ms, char *out, size_t out_size)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&secs, &tm);
    snprintf(out, out_size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The reason with what differs from event to event blanked out, so that
 * letters with one cause fall into one group: digit runs become '#' and
 * quoted literals ('...' or "...") become '?'. Neo4j's messages quote the
 * offending value and name node ids, our own quote the bad value.
 */
void reason_pattern(const char *reason, char *out, size_t out_size)
{
    size_t o = 0;

    for (const char *p = reason; *p && o + 4 < out_size; p++) {
        if (*p >= '0' && *p <= '9') {
            while (p[1] >= '0' && p[1] <= '9')
                p++;
            out[o++] = '#';
        } else if ((*p == '\'' || *p == '"') && strchr(p + 1, *p)) {
            char q = *p;

            out[o++] = q;
            out[o++] = '?';
            out[o++] = q;
            p = strchr(p + 1, q);
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

void letter_free(struct letter *lt)
{
    if (!lt)
        return;
    if (lt->hdrs)
        rd_kafka_headers_destroy(lt->hdrs);
    free(lt->key);
    free(lt->value);
    free(lt);
}

void letters_free(struct letters *ls)
{
    for (size_t i = 0; i < ls->n; i++)
        letter_free(ls->v[i]);
    free(ls->v);
    memset(ls, 0, sizeof(*ls));
}

/* Take lt over (freed on failure too). */
enum ns_err letters_add(struct letters *ls, struct letter *lt)
{
    if (ls->n == ls->cap) {
        size_t cap = ls->cap ? 2 * ls->cap : 64;
        struct letter **v = realloc(ls->v, cap * sizeof(*v));

        if (!v) {
            letter_free(lt);
            return NS_ERR_NOMEM;
        }
        ls->v = v;
        ls->cap = cap;
    }
    ls->v[ls->n++] = lt;
    return NS_OK;
}

/*
 * A letter from a DLQ message. with_payload: copy key, value and headers
 * too (show, redrive); list needs only the summary. NULL when out of
 * memory; the caller owns the result.
 */
struct letter *letter_new(const rd_kafka_message_t *rkm, int with_payload)
{
    struct letter *lt = calloc(1, sizeof(*lt));
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_timestamp_type_t tstype;
    char partition[24];

    if (!lt)
        return NULL;
    lt->partition = rkm->partition;
    lt->offset = rkm->offset;
    lt->timestamp_ms = rd_kafka_message_timestamp(rkm, &tstype);
    if (rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        hdrs = NULL;
    dlq_header_str(hdrs, "nexus.reason", lt->reason, sizeof(lt->reason));
    dlq_header_str(hdrs, "nexus.error.class", lt->error_class,
                   sizeof(lt->error_class));
    dlq_header_str(hdrs, "nexus.source.topic", lt->source_topic,
                   sizeof(lt->source_topic));
    dlq_header_str(hdrs, "nexus.source.partition", partition,
                   sizeof(partition));
    lt->source_partition = (int32_t)parse_int(partition);
    dlq_header_str(hdrs, "nexus.source.offset", partition,
                   sizeof(partition));
    lt->source_offset = parse_int(partition);
    dlq_header_str(hdrs, "nexus.truncated", lt->truncated,
                   sizeof(lt->truncated));
    dlq_header_str(hdrs, "nexus.time", lt->time, sizeof(lt->time));
    if (!lt->time[0] && lt->timestamp_ms >= 0)
        iso_time(lt->timestamp_ms, lt->time, sizeof(lt->time));
    reason_pattern(lt->reason, lt->pattern, sizeof(lt->pattern));
    if (!with_payload)
        return lt;
    if (rkm->key_len) {
        lt->key = malloc(rkm->key_len);
        if (!lt->key)
            goto fail;
        memcpy(lt->key, rkm->key, rkm->key_len);
        lt->key_len = rkm->key_len;
    }
    if (rkm->payload) {
        /* one byte more, so an empty value is still not a tombstone */
        lt->value = malloc(rkm->len + 1);
        if (!lt->value)
            goto fail;
        memcpy(lt->value, rkm->payload, rkm->len);
        lt->value_len = rkm->len;
    }
    if (hdrs) {
        lt->hdrs = rd_kafka_headers_copy(hdrs);
        if (!lt->hdrs)
            goto fail;
    }
    return lt;
fail:
    letter_free(lt);
    return NULL;
}
