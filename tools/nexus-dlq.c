/*
 * nexus-dlq - look into the dead-letter queue and re-drive its events.
 *
 *   nexus-dlq list [--json]
 *   nexus-dlq show [FILTERS] [--limit N] [--json]
 *   nexus-dlq redrive FILTERS [--dry-run | --execute] [--again]
 *
 * The DLQ topic (the mapping's dlq_topic) is read from its low to its high
 * watermark with assign(), never through a consumer group, so looking
 * changes nothing. Dead letters carry the headers common/dlq.c writes:
 * nexus.reason, nexus.error.class, nexus.source.topic|partition|offset,
 * nexus.worker, nexus.time, and nexus.truncated on a letter cut to fit.
 *
 * Re-driving produces the chosen dead letters back into their source lane
 * topic, to their source partition (Debezium's partitioner is not
 * librdkafka's, so hashing the key again could break the per-key order),
 * with the same key and value and every header they carry, plus
 *   nexus.redrive.count        how often this event has been re-driven
 *   nexus.redrive.time         ISO-8601 UTC time of the re-drive
 *   nexus.redrive.dlq.topic / nexus.redrive.dlq.partition /
 *   nexus.redrive.dlq.offset   the dead letter it came from.
 * Those last three are also the record that prevents a second re-drive:
 * before producing, the target lanes are read from shortly before the
 * oldest chosen dead letter to their end, and a dead letter already named
 * by a re-driven event there is skipped unless --again is given. The lane
 * itself is the state, so nothing else has to be kept consistent with it.
 *
 * A letter cut to fit the DLQ topic (nexus.truncated "key=N value=M") holds
 * only a prefix of its event: re-drive reads the original from the source
 * topic at nexus.source.partition/offset and sends that, without the
 * nexus.truncated header. When the original is no longer there (retention)
 * or is not the record the letter was cut from, the run is refused.
 *
 * This file is the tool's main; its pieces are in tools/dlq/: the command
 * line (options), dead letters and shared helpers (letters), the choice
 * of letters (filter), reading Kafka (scan), list and show output
 * (print) and re-drive (redrive).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "err.h"
#include "log.h"
#include "mapping.h"

#include "dlq/filter.h"
#include "dlq/letters.h"
#include "dlq/options.h"
#include "dlq/print.h"
#include "dlq/redrive.h"
#include "dlq/scan.h"

#define DLQ_TOOL_NAME "nexus-dlq"

int main(int argc, char **argv)
{
    struct options opts;
    struct config cfg;
    struct mapping *map = NULL;
    rd_kafka_t *rk = NULL;
    struct groups gs = {0};
    struct letters chosen = {0};
    char errstr[1024];
    int have_cfg = 0, partitions = 0, rc;
    enum ns_err err;

    rc = options_parse(argc, argv, &opts);
    if (rc)
        return rc < 0 ? 0 : rc;
    rc = 2;
    if (config_load(&cfg, opts.config_path, "dlq", errstr, sizeof(errstr))) {
        fprintf(stderr, "nexus-dlq: %s\n", errstr);
        goto cleanup;
    }
    have_cfg = 1;
    if (opts.mapping_path)
        snprintf(cfg.mapping_path, sizeof(cfg.mapping_path), "%s",
                 opts.mapping_path);
    log_setup((enum log_level)cfg.log_level, cfg.log_json, DLQ_TOOL_NAME);
    if (mapping_load(cfg.mapping_path, &map, errstr, sizeof(errstr))) {
        fprintf(stderr, "nexus-dlq: %s\n", errstr);
        goto cleanup;
    }
    if (reader_new(&cfg, &rk, errstr, sizeof(errstr))) {
        fprintf(stderr, "nexus-dlq: %s\n", errstr);
        goto cleanup;
    }
    rc = 1;
    err = topic_partitions(rk, map->dlq_topic, &partitions, errstr,
                           sizeof(errstr));
    if (err) {
        log_msg(NS_LOG_ERROR, "%s", errstr);
        goto cleanup;
    }
    for (size_t i = 0; i < opts.offset_count; i++)
        if (opts.offsets[i].partition < 0 && partitions > 1) {
            fprintf(stderr, "nexus-dlq: %s has %d partitions: give offsets "
                    "as PARTITION:OFFSET\n", map->dlq_topic, partitions);
            rc = 2;
            goto cleanup;
        }

    if (opts.cmd == CMD_LIST) {
        uint64_t total = 0;

        err = topic_scan(rk, map->dlq_topic, partitions, -1, opts.timeout_ms,
                         list_collect, &gs, errstr, sizeof(errstr));
        if (err) {
            log_msg(NS_LOG_ERROR, "%s", errstr);
            goto cleanup;
        }
        qsort(gs.v, gs.n, sizeof(*gs.v), group_cmp);
        for (size_t i = 0; i < gs.n; i++)
            total += gs.v[i].count;
        if (opts.json)
            err = list_print_json(map->dlq_topic, &gs, total, errstr,
                                  sizeof(errstr));
        else
            list_print_text(map->dlq_topic, &gs, total);
        if (err) {
            log_msg(NS_LOG_ERROR, "%s", errstr);
            goto cleanup;
        }
        rc = 0;
        goto cleanup;
    }

    {
        struct select_ctx ctx = {&opts, &chosen, 0};
        char filters[1024];

        err = topic_scan(rk, map->dlq_topic, partitions, -1, opts.timeout_ms,
                         select_collect, &ctx, errstr, sizeof(errstr));
        if (err) {
            log_msg(NS_LOG_ERROR, "%s", errstr);
            goto cleanup;
        }
        if (!offsets_all_found(&opts, &chosen, map->dlq_topic))
            goto cleanup;
        if (!chosen.n) {
            filter_describe(&opts, filters, sizeof(filters));
            if (filters[0])
                fprintf(stderr, "nexus-dlq: no dead letter in %s (%" PRIu64
                        " read) matches%s; `nexus-dlq list` shows the "
                        "reasons\n", map->dlq_topic, ctx.scanned, filters);
            else
                printf("%s holds no dead letter\n", map->dlq_topic);
            /* an empty DLQ is no error; a filter that found nothing is */
            rc = filters[0] ? 1 : 0;
            goto cleanup;
        }
    }
    if (opts.cmd == CMD_SHOW) {
        size_t n = opts.limit > 0 && (size_t)opts.limit < chosen.n
                       ? (size_t)opts.limit : chosen.n;

        if (opts.json)
            err = show_print_json(&chosen, n, errstr, sizeof(errstr));
        else
            show_print_text(map->dlq_topic, &chosen, n);
        if (err) {
            log_msg(NS_LOG_ERROR, "%s", errstr);
            goto cleanup;
        }
        rc = 0;
    } else {
        rc = redrive_run(&opts, &cfg, map, rk, &chosen);
    }

cleanup:
    letters_free(&chosen);
    free(gs.v);
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    mapping_free(map);
    if (have_cfg)
        config_free(&cfg);
    return rc;
}
