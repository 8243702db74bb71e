/*
 * print.h - what nexus-dlq prints: the groups of `list` (collected during
 * a scan, sorted, printed as text or one JSON line) and the letters of
 * `show` (headers, key and value, as text or one JSON line). Everything
 * goes to stdout.
 *
 * Part of nexus-dlq (tools/dlq/, linked into bin/nexus-dlq only).
 */
#ifndef NS_DLQ_TOOL_PRINT_H
#define NS_DLQ_TOOL_PRINT_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "err.h"
#include "letters.h"

/* One group of `list`: same error class, source topic and reason pattern. */
struct group {
    char error_class[64];
    char source_topic[256];
    char pattern[1024];
    char example[1024];
    uint64_t count;
    int32_t first_partition, last_partition;
    int64_t first_offset, last_offset;
    int64_t first_ts, last_ts;
    char first_time[64], last_time[64];
};

struct groups {
    struct group *v;
    size_t n;
    size_t cap;
};

/* A scan_fn (scan.h) whose opaque is a struct groups: the message is
 * counted in its group, made when new. gs->v is the caller's to free.
 * NS_ERR_NOMEM only. */
enum ns_err list_collect(const rd_kafka_message_t *rkm, void *opaque,
                         char *errstr, size_t errstr_size);

/* qsort order of groups: the largest first, then the oldest. */
int group_cmp(const void *a, const void *b);

/* `list --json`: {"topic", "total", "groups": [...]} on one line. */
enum ns_err list_print_json(const char *topic, const struct groups *gs,
                            uint64_t total, char *errstr, size_t errstr_size);

/* `list`: a summary line, then each group. */
void list_print_text(const char *topic, const struct groups *gs,
                     uint64_t total);

/* `show --json`: the first n chosen letters as one JSON array line. */
enum ns_err show_print_json(const struct letters *chosen, size_t n,
                            char *errstr, size_t errstr_size);

/* `show`: the first n chosen letters, bytes outside printable ASCII as
 * \xNN. */
void show_print_text(const char *topic, const struct letters *chosen,
                     size_t n);

#endif
