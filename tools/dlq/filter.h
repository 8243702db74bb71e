/*
 * filter.h - which dead letters nexus-dlq's show and redrive work on: the
 * filters of the command line matched against a letter, the scan callback
 * that collects the chosen ones, and the checks and wording around them.
 *
 * Part of nexus-dlq (tools/dlq/, linked into bin/nexus-dlq only).
 */
#ifndef NS_DLQ_TOOL_FILTER_H
#define NS_DLQ_TOOL_FILTER_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "err.h"
#include "letters.h"
#include "options.h"

/* What select_collect() is handed: the filters (borrowed), the list the
 * chosen letters go to (borrowed), and a count of the letters read. */
struct select_ctx {
    const struct options *opts;
    struct letters *chosen;
    uint64_t scanned;
};

/* Index of the --offset entry naming this letter, or -1. */
long offset_index(const struct options *opts, int32_t partition,
                  int64_t offset);

/* Non-zero when lt passes every filter given. */
int letter_matches(const struct options *opts, const struct letter *lt);

/* "--reason 'x' --class ..." for messages about what matched nothing;
 * "" when no filter was given. */
void filter_describe(const struct options *opts, char *out, size_t out_size);

/* A scan_fn (scan.h) whose opaque is a struct select_ctx: a matching
 * message is copied whole into ctx->chosen. NS_ERR_NOMEM only. */
enum ns_err select_collect(const rd_kafka_message_t *rkm, void *opaque,
                           char *errstr, size_t errstr_size);

/* Non-zero when every --offset names a chosen letter; each one that does
 * not is named on stderr. */
int offsets_all_found(const struct options *opts, const struct letters *chosen,
                      const char *topic);

#endif
