#include "scan.h"

#include <stdlib.h>

#include "kafka.h"
#include "letters.h"
#include "log.h"

/* Calls that ask the broker one thing (metadata, watermarks). */
#define CALL_TIMEOUT_MS 10000
#define MAX_PARTITIONS 1024

/* A consumer that is only ever assigned partitions: it joins no group and
 * commits nothing (group.id is set because librdkafka wants one). */
enum ns_err reader_new(const struct config *cfg, rd_kafka_t **out,
                       char *errstr, size_t errstr_size)
{
    static const char *const extra[] = {
        "group.id", "nexus-dlq-reader",
        "enable.auto.commit", "false",
        "enable.auto.offset.store", "false",
        "enable.partition.eof", "true",
        "isolation.level", "read_committed",
        NULL};
    rd_kafka_conf_t *conf = NULL;
    char kerr[512];
    enum ns_err err;

    *out = NULL;
    err = kafka_conf_new(NULL, (const char *const *)cfg->kafka_props,
                         extra, 1, &conf, errstr, errstr_size);
    if (err)
        return err;
    *out = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kerr, sizeof(kerr));
    if (!*out) {
        rd_kafka_conf_destroy(conf);
        ns_err_set(errstr, errstr_size, "could not create a consumer: %s",
                   kerr);
        return NS_ERR_KAFKA;
    }
    /* conf belongs to the handle now */
    rd_kafka_poll_set_consumer(*out);
    return NS_OK;
}

/* Number of partitions of topic; NS_ERR_KAFKA when it does not exist. */
enum ns_err topic_partitions(rd_kafka_t *rk, const char *topic, int *count,
                             char *errstr, size_t errstr_size)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t kerr;
    enum ns_err err = NS_OK;

    *count = 0;
    if (!rkt) {
        ns_err_set(errstr, errstr_size, "could not use topic %s: %s", topic,
                   rd_kafka_err2str(rd_kafka_last_error()));
        return NS_ERR_KAFKA;
    }
    kerr = rd_kafka_metadata(rk, 0, rkt, &md, CALL_TIMEOUT_MS);
    if (kerr) {
        ns_err_set(errstr, errstr_size,
                   "could not read metadata of %s: %s", topic,
                   rd_kafka_err2str(kerr));
        err = NS_ERR_KAFKA;
        goto cleanup;
    }
    if (md->topic_cnt != 1 || md->topics[0].err ||
        md->topics[0].partition_cnt <= 0) {
        ns_err_set(errstr, errstr_size, "topic %s: %s", topic,
                   md->topic_cnt == 1 && md->topics[0].err
                       ? rd_kafka_err2str(md->topics[0].err)
                       : "no partitions");
        err = NS_ERR_KAFKA;
        goto cleanup;
    }
    *count = md->topics[0].partition_cnt;
    if (*count > MAX_PARTITIONS) {
        ns_err_set(errstr, errstr_size, "topic %s has more than %d "
                   "partitions", topic, MAX_PARTITIONS);
        err = NS_ERR_LIMIT;
    }
cleanup:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return err;
}

/*
 * Read every partition of topic from its start (since_ms < 0: the low
 * watermark; else the first offset at or after that time) to the high
 * watermark taken when the scan began, calling fn for each message.
 * Messages that arrive meanwhile are not read. Nothing is committed.
 */
enum ns_err topic_scan(rd_kafka_t *rk, const char *topic, int partitions,
                       int64_t since_ms, long timeout_ms, scan_fn fn,
                       void *opaque, char *errstr, size_t errstr_size)
{
    rd_kafka_topic_partition_list_t *assign = NULL;
    int64_t *high = NULL;
    int64_t deadline = now_ms() + timeout_ms;
    int left = 0;
    rd_kafka_resp_err_t kerr;
    enum ns_err err = NS_OK;

    high = calloc((size_t)partitions, sizeof(*high));
    assign = rd_kafka_topic_partition_list_new(partitions);
    if (!high || !assign) {
        ns_err_set(errstr, errstr_size, "out of memory");
        err = NS_ERR_NOMEM;
        goto cleanup;
    }
    for (int p = 0; p < partitions; p++) {
        int64_t low = 0;

        kerr = rd_kafka_query_watermark_offsets(rk, topic, p, &low, &high[p],
                                                CALL_TIMEOUT_MS);
        if (kerr) {
            ns_err_set(errstr, errstr_size,
                       "could not read the watermarks of %s [%d]: %s", topic,
                       p, rd_kafka_err2str(kerr));
            err = NS_ERR_KAFKA;
            goto cleanup;
        }
        if (high[p] > low)
            rd_kafka_topic_partition_list_add(assign, topic, p)->offset =
                since_ms < 0 ? low : since_ms;
    }
    if (since_ms >= 0 && assign->cnt) {
        /* the timestamps become offsets; -1 means nothing that recent */
        kerr = rd_kafka_offsets_for_times(rk, assign, CALL_TIMEOUT_MS);
        if (kerr) {
            ns_err_set(errstr, errstr_size,
                       "could not look up offsets by time in %s: %s", topic,
                       rd_kafka_err2str(kerr));
            err = NS_ERR_KAFKA;
            goto cleanup;
        }
        for (int i = assign->cnt - 1; i >= 0; i--) {
            rd_kafka_topic_partition_t *tp = &assign->elems[i];

            if (tp->err || tp->offset < 0 || tp->offset >= high[tp->partition])
                rd_kafka_topic_partition_list_del_by_idx(assign, i);
        }
    }
    left = assign->cnt;
    if (!left)
        goto cleanup;
    kerr = rd_kafka_assign(rk, assign);
    if (kerr) {
        ns_err_set(errstr, errstr_size, "could not assign %s: %s", topic,
                   rd_kafka_err2str(kerr));
        err = NS_ERR_KAFKA;
        goto cleanup;
    }
    while (left > 0) {
        rd_kafka_message_t *rkm;
        int64_t remaining = deadline - now_ms();

        if (remaining <= 0) {
            ns_err_set(errstr, errstr_size,
                       "timed out after %ld ms reading %s (%d partitions "
                       "not read to their end)", timeout_ms, topic, left);
            err = NS_ERR_KAFKA;
            break;
        }
        rkm = rd_kafka_consumer_poll(rk, remaining < 500 ? (int)remaining
                                                         : 500);
        if (!rkm)
            continue;
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* with eof on, a partition reports its end once per reach */
            if (rkm->partition >= 0 && rkm->partition < partitions &&
                high[rkm->partition] >= 0) {
                high[rkm->partition] = -1;
                left--;
            }
        } else if (rkm->err) {
            log_msg(NS_LOG_WARN, "reading %s: %s", topic,
                    rd_kafka_message_errstr(rkm));
        } else if (rkm->partition >= 0 && rkm->partition < partitions &&
                   high[rkm->partition] >= 0 &&
                   rkm->offset < high[rkm->partition]) {
            err = fn(rkm, opaque, errstr, errstr_size);
            if (!err && rkm->offset + 1 >= high[rkm->partition]) {
                high[rkm->partition] = -1;
                left--;
            }
        }
        rd_kafka_message_destroy(rkm);
        if (err)
            break;
    }
    kerr = rd_kafka_assign(rk, NULL);
    if (kerr && !err) {
        ns_err_set(errstr, errstr_size, "could not unassign %s: %s", topic,
                   rd_kafka_err2str(kerr));
        err = NS_ERR_KAFKA;
    }
cleanup:
    if (assign)
        rd_kafka_topic_partition_list_destroy(assign);
    free(high);
    return err;
}
