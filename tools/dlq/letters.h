/*
 * letters.h - nexus-dlq's dead letters as read from the DLQ topic: the
 * headers common/dlq.c writes, parsed into a `struct letter`, a growable
 * list of them, and the small helpers (integers, times, the grouped form
 * of a reason) that the rest of the tool shares.
 *
 * Part of nexus-dlq (tools/dlq/, linked into bin/nexus-dlq only).
 */
#ifndef NS_DLQ_TOOL_LETTERS_H
#define NS_DLQ_TOOL_LETTERS_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "err.h"

/* One dead letter as read, with what the tool decided about it. */
struct letter {
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms;            /* Kafka timestamp, -1 if none */
    char *key;
    size_t key_len;
    char *value;                     /* NULL for a tombstone */
    size_t value_len;
    rd_kafka_headers_t *hdrs;        /* owned copy, may be NULL */
    char reason[1024];
    char pattern[1024];
    char error_class[64];
    char source_topic[256];
    int32_t source_partition;        /* -1 when absent */
    int64_t source_offset;           /* -1 when absent */
    char truncated[64];              /* nexus.truncated, "" when whole */
    char time[64];                   /* nexus.time, else the timestamp */
    /* redrive */
    int skip;                        /* already re-driven: not produced */
    char skip_why[512];
    int delivered;
    rd_kafka_resp_err_t dr_err;
    int32_t dr_partition;
    int64_t dr_offset;
};

struct letters {
    struct letter **v;
    size_t n;
    size_t cap;
};

/* A decimal integer covering the whole string; -1 when it is not one (or
 * s is NULL, empty or negative). */
int64_t parse_int(const char *s);

/* ms since the epoch as ISO-8601 UTC text with milliseconds into out. */
void iso_time(int64_t ms, char *out, size_t out_size);

/* The wall clock in ms since the epoch. */
int64_t now_ms(void);

/*
 * The reason with what differs from event to event blanked out, so that
 * letters with one cause fall into one group: digit runs become '#' and
 * quoted literals ('...' or "...") become '?'. Always NUL-terminated.
 */
void reason_pattern(const char *reason, char *out, size_t out_size);

/*
 * A letter from a DLQ message. with_payload: copy key, value and headers
 * too (show, redrive); list needs only the summary. NULL when out of
 * memory; the caller owns the result (letter_free).
 */
struct letter *letter_new(const rd_kafka_message_t *rkm, int with_payload);

/* Free lt and what it owns; NULL ok. */
void letter_free(struct letter *lt);

/* Free every letter of ls and its array, and zero it. */
void letters_free(struct letters *ls);

/* Append lt, taken over (freed on failure too); NS_ERR_NOMEM when out of
 * memory. */
enum ns_err letters_add(struct letters *ls, struct letter *lt);

#endif
