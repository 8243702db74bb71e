#include "redrive.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dlq.h"
#include "kafka.h"
#include "log.h"
#include "scan.h"

/* A re-driven event is searched for from this long before the oldest
 * chosen dead letter: margin for clock skew between hosts. */
#define REDRIVE_SCAN_MARGIN_MS (3600 * 1000LL)

/* A lane topic the chosen letters go back to. */
struct target {
    char topic[256];
    int partitions;
    int64_t since_ms;        /* time of the oldest chosen letter; -1 when
                                one has no timestamp: read it all */
};

struct marker_ctx {
    const char *dlq_topic;
    const char *target_topic;
    struct letters *chosen;
};

/* A re-driven event in a lane names its dead letter in its newest
 * nexus.redrive.dlq.* headers: mark that letter as done. */
static enum ns_err marker_collect(const rd_kafka_message_t *rkm,
                                  void *opaque, char *errstr,
                                  size_t errstr_size)
{
    struct marker_ctx *ctx = opaque;
    rd_kafka_headers_t *hdrs = NULL;
    char topic[256], partition[24], offset[24], when[64];
    int64_t p, o;

    (void)errstr;
    (void)errstr_size;
    if (rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NS_OK;
    dlq_header_str(hdrs, "nexus.redrive.dlq.topic", topic, sizeof(topic));
    if (strcmp(topic, ctx->dlq_topic) != 0)
        return NS_OK;
    dlq_header_str(hdrs, "nexus.redrive.dlq.partition", partition,
                   sizeof(partition));
    dlq_header_str(hdrs, "nexus.redrive.dlq.offset", offset, sizeof(offset));
    dlq_header_str(hdrs, "nexus.redrive.time", when, sizeof(when));
    p = parse_int(partition);
    o = parse_int(offset);
    for (size_t i = 0; i < ctx->chosen->n; i++) {
        struct letter *lt = ctx->chosen->v[i];

        if (lt->partition == p && lt->offset == o && !lt->skip) {
            lt->skip = 1;
            snprintf(lt->skip_why, sizeof(lt->skip_why),
                     "already re-driven to %s [%d] at offset %" PRId64
                     " (%s)", ctx->target_topic, (int)rkm->partition,
                     rkm->offset, when);
        }
    }
    return NS_OK;
}

/* Non-zero when topic is one of the mapping's lane topics. */
static int is_lane_topic(const struct mapping *map, const char *topic)
{
    char lane_topic[256];

    for (size_t i = 0; i < map->table_count; i++)
        for (int l = 0; l < LANE__COUNT; l++) {
            const char *worker = map->tables[i].worker;

            if (map->tables[i].kind == MAPPING_NONE ||
                !mapping_worker_has_lane(map, worker, (enum mapping_lane)l))
                continue;
            if (mapping_topic(map, (enum mapping_lane)l, worker, lane_topic,
                              sizeof(lane_topic)) == NS_OK &&
                strcmp(lane_topic, topic) == 0)
                return 1;
        }
    return 0;
}

/*
 * Put back the key and value of a letter cut to fit the DLQ, from the
 * source record it names, if that record is still there and is the one the
 * letter was cut from: its sizes are those of nexus.truncated and the
 * letter's key and value are its prefixes. On success lt holds the
 * original key and value and no nexus.truncated header. NS_ERR_LIMIT with
 * the reason in errstr when it cannot be restored; NS_ERR_KAFKA or
 * NS_ERR_NOMEM when the read failed.
 */
static enum ns_err letter_restore(rd_kafka_t *rk, struct letter *lt,
                                  long timeout_ms, char *errstr,
                                  size_t errstr_size)
{
    rd_kafka_topic_partition_list_t *assign = NULL;
    rd_kafka_message_t *rkm = NULL;
    unsigned long long key_size = 0, value_size = 0;
    int64_t deadline = now_ms() + timeout_ms;
    const char *gone = NULL;
    char *key = NULL, *value = NULL;
    rd_kafka_resp_err_t kerr;
    enum ns_err err = NS_OK;

    if (sscanf(lt->truncated, "key=%llu value=%llu", &key_size,
               &value_size) != 2 || lt->source_partition < 0 ||
        lt->source_offset < 0) {
        ns_err_set(errstr, errstr_size, "its nexus.truncated \"%s\" or its "
                   "source position cannot be read", lt->truncated);
        return NS_ERR_LIMIT;
    }
    assign = rd_kafka_topic_partition_list_new(1);
    if (!assign) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    rd_kafka_topic_partition_list_add(assign, lt->source_topic,
                                      lt->source_partition)->offset =
        lt->source_offset;
    kerr = rd_kafka_assign(rk, assign);
    if (kerr) {
        ns_err_set(errstr, errstr_size, "could not assign %s [%d]: %s",
                   lt->source_topic, (int)lt->source_partition,
                   rd_kafka_err2str(kerr));
        err = NS_ERR_KAFKA;
        goto cleanup;
    }
    while (!rkm && !gone) {
        int64_t remaining = deadline - now_ms();

        if (remaining <= 0) {
            ns_err_set(errstr, errstr_size, "timed out after %ld ms reading "
                       "%s [%d]", timeout_ms, lt->source_topic,
                       (int)lt->source_partition);
            err = NS_ERR_KAFKA;
            goto cleanup;
        }
        rkm = rd_kafka_consumer_poll(rk, remaining < 500 ? (int)remaining
                                                         : 500);
        if (!rkm)
            continue;
        /* an offset below the log start resets to the end: EOF */
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF ||
            (!rkm->err && rkm->offset != lt->source_offset))
            gone = "the partition no longer holds that offset (retention)";
        else if (!rkm->err && (rkm->key_len != key_size ||
                               rkm->len != value_size ||
                               lt->key_len > rkm->key_len ||
                               lt->value_len > rkm->len ||
                               (lt->key_len && memcmp(lt->key, rkm->key,
                                                      lt->key_len)) ||
                               (lt->value_len && memcmp(lt->value,
                                                        rkm->payload,
                                                        lt->value_len))))
            gone = "the record there is not the one the letter was cut from";
        else if (!rkm->err)
            break;
        else
            log_msg(NS_LOG_WARN, "reading %s: %s", lt->source_topic,
                    rd_kafka_message_errstr(rkm));
        rd_kafka_message_destroy(rkm);
        rkm = NULL;
    }
    if (gone) {
        ns_err_set(errstr, errstr_size, "%s [%d] at offset %" PRId64 ": %s",
                   lt->source_topic, (int)lt->source_partition,
                   lt->source_offset, gone);
        err = NS_ERR_LIMIT;
        goto cleanup;
    }
    key = malloc(rkm->key_len + 1);
    value = malloc(rkm->len + 1);
    if (!key || !value) {
        ns_err_set(errstr, errstr_size, "out of memory");
        err = NS_ERR_NOMEM;
        goto cleanup;
    }
    if (rkm->key_len)
        memcpy(key, rkm->key, rkm->key_len);
    if (rkm->len)
        memcpy(value, rkm->payload, rkm->len);
    free(lt->key);
    free(lt->value);
    lt->key = key;
    lt->key_len = rkm->key_len;
    lt->value = value;
    lt->value_len = rkm->len;
    key = value = NULL;
    if (lt->hdrs)
        rd_kafka_header_remove(lt->hdrs, "nexus.truncated");

cleanup:
    free(key);
    free(value);
    if (rkm)
        rd_kafka_message_destroy(rkm);
    if (rd_kafka_assign(rk, NULL) && !err) {
        ns_err_set(errstr, errstr_size, "could not unassign %s",
                   lt->source_topic);
        err = NS_ERR_KAFKA;
    }
    rd_kafka_topic_partition_list_destroy(assign);
    return err;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm,
                        void *opaque)
{
    struct letter *lt = rkm->_private;

    (void)rk;
    (void)opaque;
    if (!lt)
        return;
    lt->delivered = 1;
    lt->dr_err = rkm->err;
    lt->dr_partition = rkm->partition;
    lt->dr_offset = rkm->offset;
}

/* The letter's headers plus the nexus.redrive.* ones; NULL when out of
 * memory. The caller owns the result. */
static rd_kafka_headers_t *redrive_headers(const struct letter *lt,
                                           const char *dlq_topic,
                                           const char *when)
{
    rd_kafka_headers_t *hdrs = lt->hdrs ? rd_kafka_headers_copy(lt->hdrs)
                                        : rd_kafka_headers_new(5);
    char count[24], partition[24], offset[24];
    int64_t before;
    rd_kafka_resp_err_t kerr;

    if (!hdrs)
        return NULL;
    dlq_header_str(lt->hdrs, "nexus.redrive.count", count, sizeof(count));
    before = parse_int(count);
    snprintf(count, sizeof(count), "%" PRId64, before < 0 ? 1 : before + 1);
    snprintf(partition, sizeof(partition), "%d", (int)lt->partition);
    snprintf(offset, sizeof(offset), "%" PRId64, lt->offset);
    kerr = rd_kafka_header_add(hdrs, "nexus.redrive.count", -1, count, -1);
    if (!kerr)
        kerr = rd_kafka_header_add(hdrs, "nexus.redrive.time", -1, when, -1);
    if (!kerr)
        kerr = rd_kafka_header_add(hdrs, "nexus.redrive.dlq.topic", -1,
                                   dlq_topic, -1);
    if (!kerr)
        kerr = rd_kafka_header_add(hdrs, "nexus.redrive.dlq.partition", -1,
                                   partition, -1);
    if (!kerr)
        kerr = rd_kafka_header_add(hdrs, "nexus.redrive.dlq.offset", -1,
                                   offset, -1);
    if (kerr) {
        rd_kafka_headers_destroy(hdrs);
        return NULL;
    }
    return hdrs;
}

/*
 * Produce every chosen letter not skipped, with an idempotent producer
 * (acks=all), then flush and check each delivery report. Returns NS_OK only
 * when every one was acknowledged.
 */
static enum ns_err redrive_produce(const struct config *cfg,
                                   const char *dlq_topic,
                                   struct letters *chosen, long timeout_ms,
                                   char *errstr, size_t errstr_size)
{
    static const char *const extra[] = {
        "enable.idempotence", "true",
        "acks", "all",
        /* the Java client's partitioner, should a letter lack its
         * source partition */
        "partitioner", "murmur2_random",
        NULL};
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_headers_t *hdrs = NULL;
    char kerr_text[512];
    char when[64];
    rd_kafka_resp_err_t kerr;
    enum ns_err err;
    size_t failed = 0;

    err = kafka_conf_new(NULL, (const char *const *)cfg->kafka_props,
                         extra, 1, &conf, errstr, errstr_size);
    if (err)
        goto cleanup;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr_text, sizeof(kerr_text));
    if (!rk) {
        ns_err_set(errstr, errstr_size, "could not create a producer: %s",
                   kerr_text);
        err = NS_ERR_KAFKA;
        goto cleanup;
    }
    conf = NULL;  /* rk has it */
    iso_time(now_ms(), when, sizeof(when));
    for (size_t i = 0; i < chosen->n; i++) {
        struct letter *lt = chosen->v[i];

        if (lt->skip)
            continue;
        hdrs = redrive_headers(lt, dlq_topic, when);
        if (!hdrs) {
            ns_err_set(errstr, errstr_size, "out of memory");
            err = NS_ERR_NOMEM;
            goto cleanup;
        }
        kerr = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(lt->source_topic),
            RD_KAFKA_V_PARTITION(lt->source_partition >= 0
                                     ? lt->source_partition
                                     : RD_KAFKA_PARTITION_UA),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(lt->key, lt->key_len),
            RD_KAFKA_V_VALUE(lt->value, lt->value_len),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(lt),
            RD_KAFKA_V_END);
        if (kerr) {
            ns_err_set(errstr, errstr_size,
                       "could not queue %d:%" PRId64 " for %s: %s",
                       (int)lt->partition, lt->offset, lt->source_topic,
                       rd_kafka_err2str(kerr));
            err = NS_ERR_KAFKA;
            goto cleanup;
        }
        hdrs = NULL;  /* librdkafka owns them now */
        rd_kafka_poll(rk, 0);
    }
    kerr = rd_kafka_flush(rk, (int)timeout_ms);
    if (kerr) {
        ns_err_set(errstr, errstr_size,
                   "could not flush the re-driven events: %s (%d not "
                   "acknowledged)", rd_kafka_err2str(kerr),
                   rd_kafka_outq_len(rk));
        err = NS_ERR_KAFKA;
    }
    for (size_t i = 0; i < chosen->n; i++) {
        const struct letter *lt = chosen->v[i];

        if (lt->skip)
            continue;
        if (!lt->delivered || lt->dr_err) {
            failed++;
            fprintf(stderr, "nexus-dlq: could not re-drive %d:%" PRId64
                    " to %s: %s\n", (int)lt->partition, lt->offset,
                    lt->source_topic,
                    lt->delivered ? rd_kafka_err2str(lt->dr_err)
                                  : "no acknowledgement");
        }
    }
    if (failed && !err) {
        ns_err_set(errstr, errstr_size, "%zu re-driven events were not "
                   "acknowledged", failed);
        err = NS_ERR_KAFKA;
    }
cleanup:
    if (hdrs)
        rd_kafka_headers_destroy(hdrs);
    if (rk) {
        /* anything still queued after a failure is given up */
        if (rd_kafka_outq_len(rk) > 0 &&
            rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE |
                               RD_KAFKA_PURGE_F_INFLIGHT) ==
                RD_KAFKA_RESP_ERR_NO_ERROR)
            rd_kafka_poll(rk, 0);
        rd_kafka_destroy(rk);
    }
    if (conf)
        rd_kafka_conf_destroy(conf);
    return err;
}

/*
 * Check the chosen letters (every target a lane topic of the mapping, its
 * partition there), find those re-driven before, then print the plan and,
 * with --execute, produce. Returns the exit status.
 */
int redrive_run(const struct options *opts, const struct config *cfg,
                const struct mapping *map, rd_kafka_t *rk,
                struct letters *chosen)
{
    struct target *targets = calloc(chosen->n, sizeof(*targets));
    size_t target_count = 0, refused = 0, todo = 0, skipped = 0;
    char errstr[1024];
    enum ns_err err;
    int rc = 1;

    if (!targets) {
        log_msg(NS_LOG_ERROR, "out of memory");
        return 1;
    }
    for (size_t i = 0; i < chosen->n; i++) {
        const struct letter *lt = chosen->v[i];
        struct target *t = NULL;

        if (!lt->source_topic[0]) {
            fprintf(stderr, "nexus-dlq: refused: %d:%" PRId64 " has no "
                    "nexus.source.topic header\n", (int)lt->partition,
                    lt->offset);
            refused++;
            continue;
        }
        if (!is_lane_topic(map, lt->source_topic)) {
            fprintf(stderr, "nexus-dlq: refused: %d:%" PRId64 " names "
                    "source topic %s, which is not a lane topic of %s\n",
                    (int)lt->partition, lt->offset, lt->source_topic,
                    cfg->mapping_path);
            refused++;
            continue;
        }
        for (size_t k = 0; k < target_count && !t; k++)
            if (strcmp(targets[k].topic, lt->source_topic) == 0)
                t = &targets[k];
        if (!t) {
            t = &targets[target_count++];
            snprintf(t->topic, sizeof(t->topic), "%s", lt->source_topic);
            t->since_ms = INT64_MAX;
            err = topic_partitions(rk, t->topic, &t->partitions, errstr,
                                   sizeof(errstr));
            if (err) {
                log_msg(NS_LOG_ERROR, "%s", errstr);
                goto cleanup;
            }
        }
        if (lt->timestamp_ms < 0)
            t->since_ms = -1;
        else if (t->since_ms >= 0 && lt->timestamp_ms < t->since_ms)
            t->since_ms = lt->timestamp_ms;
        if (lt->source_partition >= t->partitions) {
            fprintf(stderr, "nexus-dlq: refused: %d:%" PRId64 " came from "
                    "partition %d of %s, which has %d partitions\n",
                    (int)lt->partition, lt->offset,
                    (int)lt->source_partition, t->topic, t->partitions);
            refused++;
        }
    }
    /* letters cut to fit the DLQ go back whole, or not at all */
    for (size_t i = 0; !refused && i < chosen->n; i++) {
        struct letter *lt = chosen->v[i];

        if (!lt->truncated[0])
            continue;
        err = letter_restore(rk, lt, opts->timeout_ms, errstr,
                             sizeof(errstr));
        if (err == NS_ERR_LIMIT) {
            fprintf(stderr, "nexus-dlq: refused: %d:%" PRId64 " was cut to "
                    "fit the DLQ (nexus.truncated %s) and cannot be restored "
                    "from its source: %s\n", (int)lt->partition, lt->offset,
                    lt->truncated, errstr);
            refused++;
        } else if (err) {
            log_msg(NS_LOG_ERROR, "could not read the original of %d:%" PRId64
                    ": %s", (int)lt->partition, lt->offset, errstr);
            goto cleanup;
        } else {
            printf("restored %s %d:%" PRId64 " from %s [%d] at offset %"
                   PRId64 " (%zu bytes of value)\n", map->dlq_topic,
                   (int)lt->partition, lt->offset, lt->source_topic,
                   (int)lt->source_partition, lt->source_offset,
                   lt->value_len);
        }
    }
    if (refused) {
        fprintf(stderr, "nexus-dlq: nothing re-driven: %zu of the %zu chosen "
                "dead letters cannot go back to a lane topic\n", refused,
                chosen->n);
        goto cleanup;
    }
    if (!opts->again)
        for (size_t k = 0; k < target_count; k++) {
            struct marker_ctx ctx = {map->dlq_topic, targets[k].topic,
                                     chosen};
            int64_t since = -1;   /* from the low watermark */

            if (targets[k].since_ms > REDRIVE_SCAN_MARGIN_MS)
                since = targets[k].since_ms - REDRIVE_SCAN_MARGIN_MS;
            err = topic_scan(rk, targets[k].topic, targets[k].partitions,
                             since, opts->timeout_ms,
                             marker_collect, &ctx, errstr, sizeof(errstr));
            if (err) {
                log_msg(NS_LOG_ERROR, "could not check for earlier re-drives: "
                        "%s", errstr);
                goto cleanup;
            }
        }
    for (size_t i = 0; i < chosen->n; i++) {
        const struct letter *lt = chosen->v[i];

        if (lt->skip) {
            skipped++;
            printf("skip %s %d:%" PRId64 ": %s\n", map->dlq_topic,
                   (int)lt->partition, lt->offset, lt->skip_why);
            continue;
        }
        todo++;
        if (!opts->execute) {
            printf("would re-drive %s %d:%" PRId64 " -> %s [%d] (%s: %s)\n",
                   map->dlq_topic, (int)lt->partition, lt->offset,
                   lt->source_topic, (int)lt->source_partition,
                   lt->error_class, lt->reason);
        }
    }
    if (!opts->execute) {
        printf("dry run: %zu dead letter%s would be re-driven, %zu skipped; "
               "nothing written (use --execute)\n", todo,
               todo == 1 ? "" : "s", skipped);
        rc = 0;
        goto cleanup;
    }
    if (todo) {
        err = redrive_produce(cfg, map->dlq_topic, chosen, opts->timeout_ms,
                              errstr, sizeof(errstr));
        for (size_t i = 0; i < chosen->n; i++) {
            const struct letter *lt = chosen->v[i];

            if (!lt->skip && lt->delivered && !lt->dr_err)
                printf("re-drove %s %d:%" PRId64 " -> %s [%d] at offset "
                       "%" PRId64 "\n", map->dlq_topic, (int)lt->partition,
                       lt->offset, lt->source_topic, (int)lt->dr_partition,
                       lt->dr_offset);
        }
        if (err) {
            log_msg(NS_LOG_ERROR, "%s", errstr);
            goto cleanup;
        }
    }
    printf("re-drove %zu dead letter%s, %zu skipped\n", todo,
           todo == 1 ? "" : "s", skipped);
    rc = 0;
cleanup:
    free(targets);
    return rc;
}
