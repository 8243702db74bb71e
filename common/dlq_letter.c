#include "dlq_letter.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* Per header: the varints of its name and value lengths. */
#define DLQ_LETTER_HEADER_OVERHEAD 10u

/* "2024-05-01T12:34:56.789Z" */
static void dlq_letter_now_iso(char *out, size_t out_size)
{
    struct timespec now;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(out, out_size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(now.tv_nsec / 1000000));
}

/* The dead letter's headers: the source message's own, then ours, so
 * that a letter dead twice reads its newest reason with get_last. Returns
 * NULL when out of memory; the caller owns the result. */
static rd_kafka_headers_t *dlq_letter_base(const char *worker,
                                           const struct dlq_source *src,
                                           enum ns_err error_class,
                                           const char *reason, int with_orig)
{
    rd_kafka_headers_t *orig = with_orig ? src->headers : NULL;
    rd_kafka_headers_t *hdrs;
    char partition[24];
    char offset[24];
    char now[96];
    const char *name;
    const void *val;
    size_t size;
    size_t count = orig ? rd_kafka_header_cnt(orig) : 0;
    rd_kafka_resp_err_t kerr = RD_KAFKA_RESP_ERR_NO_ERROR;

    hdrs = rd_kafka_headers_new(count + 7);
    if (!hdrs)
        return NULL;
    for (size_t i = 0; orig && kerr == RD_KAFKA_RESP_ERR_NO_ERROR; i++) {
        if (rd_kafka_header_get_all(orig, i, &name, &val, &size) !=
            RD_KAFKA_RESP_ERR_NO_ERROR)
            break;
        /* a re-driven letter's old cut says nothing about this one */
        if (strcmp(name, "nexus.truncated") != 0)
            kerr = rd_kafka_header_add(hdrs, name, -1, val, (ssize_t)size);
    }
    snprintf(partition, sizeof(partition), "%d", (int)src->partition);
    snprintf(offset, sizeof(offset), "%lld", (long long)src->offset);
    dlq_letter_now_iso(now, sizeof(now));
    if (!kerr)
        kerr = rd_kafka_header_add(hdrs, "nexus.reason", -1,
                                   reason ? reason : "", -1);
    if (!kerr)
        kerr = rd_kafka_header_add(hdrs, "nexus.error.class", -1,
                                   ns_err_str(error_class), -1);
    if (!kerr)
        kerr = rd_kafka_header_add(hdrs, "nexus.source.topic", -1,
                                   src->topic ? src->topic : "", -1);
    if (!kerr)
        kerr = rd_kafka_header_add(hdrs, "nexus.source.partition", -1,
                                   partition, -1);
    if (!kerr)
        kerr = rd_kafka_header_add(hdrs, "nexus.source.offset", -1, offset,
                                   -1);
    if (!kerr)
        kerr = rd_kafka_header_add(hdrs, "nexus.worker", -1, worker,
                                   -1);
    if (!kerr)
        kerr = rd_kafka_header_add(hdrs, "nexus.time", -1, now, -1);
    if (kerr) {
        rd_kafka_headers_destroy(hdrs);
        return NULL;
    }
    return hdrs;
}

/* What headers take in a record. */
static size_t dlq_letter_headers_size(const rd_kafka_headers_t *hdrs)
{
    const char *name;
    const void *val;
    size_t size, total = 0;

    for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &val, &size) ==
                       RD_KAFKA_RESP_ERR_NO_ERROR; i++)
        total += strlen(name) + size + DLQ_LETTER_HEADER_OVERHEAD;
    return total;
}

/* Contract in dlq_letter.h. */
rd_kafka_headers_t *dlq_letter_headers(const char *worker, size_t max_message,
                                       const struct dlq_source *src,
                                       enum ns_err error_class,
                                       const char *reason, size_t *key_len,
                                       size_t *value_len)
{
    /* room for nexus.truncated and the record itself */
    size_t fixed = DLQ_LETTER_RECORD_OVERHEAD + 64 +
                   DLQ_LETTER_HEADER_OVERHEAD;
    size_t room = 0, used;
    rd_kafka_headers_t *hdrs = NULL;
    char sizes[64];

    for (int with_orig = 1; with_orig >= 0 && !room; with_orig--) {
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        hdrs = dlq_letter_base(worker, src, error_class, reason, with_orig);
        if (!hdrs)
            return NULL;
        used = fixed + dlq_letter_headers_size(hdrs);
        room = used < max_message ? max_message - used : 0;
    }
    if (*key_len + *value_len <= room)
        return hdrs;
    snprintf(sizes, sizeof(sizes), "key=%zu value=%zu", *key_len, *value_len);
    if (*key_len > room / 4)
        *key_len = room / 4;
    if (*value_len > room - *key_len)
        *value_len = room - *key_len;
    if (rd_kafka_header_add(hdrs, "nexus.truncated", -1, sizes, -1)) {
        rd_kafka_headers_destroy(hdrs);
        return NULL;
    }
    return hdrs;
}
