/*
 * redrive.h - nexus-dlq's re-drive: the chosen dead letters produced back
 * into their source lane topic and partition, with nexus.redrive.*
 * headers, once; letters cut to fit the DLQ are restored from their
 * source first (see the top of tools/nexus-dlq.c for the rules).
 *
 * Part of nexus-dlq (tools/dlq/, linked into bin/nexus-dlq only).
 */
#ifndef NS_DLQ_TOOL_REDRIVE_H
#define NS_DLQ_TOOL_REDRIVE_H

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "letters.h"
#include "mapping.h"
#include "options.h"

/*
 * Check the chosen letters (every target a lane topic of the mapping, its
 * partition there), find those re-driven before, then print the plan and,
 * with --execute, produce. rk is the reader (scan.h), borrowed; the
 * letters are updated (restored, skipped, delivered). Returns the exit
 * status.
 */
int redrive_run(const struct options *opts, const struct config *cfg,
                const struct mapping *map, rd_kafka_t *rk,
                struct letters *chosen);

#endif
