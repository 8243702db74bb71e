#include "backlog.h"

#include <string.h>

#include "kafka.h"
#include "log.h"

enum ns_err backlog_init(struct backlog *bl, size_t max_count,
                         size_t max_bytes)
{
    enum ns_err err;

    memset(bl, 0, sizeof(*bl));
    err = batch_init(&bl->msgs, max_count, max_bytes);
    if (err)
        return err;
    bl->held = rd_kafka_topic_partition_list_new(8);
    if (!bl->held) {
        batch_free(&bl->msgs);
        return NS_ERR_NOMEM;
    }
    return NS_OK;
}

void backlog_free(struct backlog *bl)
{
    batch_free(&bl->msgs);
    if (bl->held)
        rd_kafka_topic_partition_list_destroy(bl->held);
    bl->held = NULL;
}

enum ns_err backlog_keep(struct backlog *bl, rd_kafka_t *rk,
                         rd_kafka_message_t *m, int lane, char *errstr,
                         size_t errstr_size)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    rd_kafka_topic_partition_list_t *one;
    rd_kafka_error_t *error;
    enum ns_err err = NS_OK;

    /* an empty backlog takes any one message, however large: it has to
     * go somewhere, and a hold would only fetch it again */
    if (batch_fits(&bl->msgs, m)) {
        batch_add(&bl->msgs, m, lane);
        return NS_OK;
    }
    one = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(one, topic, m->partition)->offset =
        m->offset;
    rd_kafka_pause_partitions(rk, one);
    error = kafka_seek(rk, one, 5000);
    if (error || one->elems[0].err) {
        err = NS_ERR_KAFKA;
        ns_err_set(errstr, errstr_size, "the backlog is full and %s[%d] "
                   "could not be rewound to offset %lld: %s", topic,
                   (int)m->partition, (long long)m->offset,
                   error ? rd_kafka_error_string(error)
                         : rd_kafka_err2str(one->elems[0].err));
        if (error)
            rd_kafka_error_destroy(error);
    } else if (!rd_kafka_topic_partition_list_find(bl->held, topic,
                                                   m->partition)) {
        log_msg(NS_LOG_DEBUG, "backlog full (%zu messages, %zu bytes): "
                "holding %s[%d] at offset %lld", bl->msgs.count,
                bl->msgs.bytes, topic, (int)m->partition,
                (long long)m->offset);
        rd_kafka_topic_partition_list_add(bl->held, topic, m->partition)
            ->offset = m->offset;
    }
    rd_kafka_topic_partition_list_destroy(one);
    rd_kafka_message_destroy(m);
    return err;
}

void backlog_release(struct backlog *bl, rd_kafka_t *rk)
{
    if (!bl->held->cnt || bl->msgs.bytes > bl->msgs.max_bytes / 2 ||
        bl->msgs.count > bl->msgs.max_count / 2)
        return;
    rd_kafka_resume_partitions(rk, bl->held);
    while (bl->held->cnt)
        rd_kafka_topic_partition_list_del_by_idx(bl->held, 0);
}

void backlog_repause(struct backlog *bl, rd_kafka_t *rk)
{
    if (bl->held->cnt)
        rd_kafka_pause_partitions(rk, bl->held);
}

void backlog_unhold(struct backlog *bl, rd_kafka_t *rk,
                    const rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *go =
        rd_kafka_topic_partition_list_new(parts->cnt ? parts->cnt : 1);

    for (int i = 0; i < parts->cnt; i++)
        if (rd_kafka_topic_partition_list_del(bl->held, parts->elems[i].topic,
                                              parts->elems[i].partition))
            rd_kafka_topic_partition_list_add(go, parts->elems[i].topic,
                                              parts->elems[i].partition);
    if (go->cnt)
        rd_kafka_resume_partitions(rk, go);
    rd_kafka_topic_partition_list_destroy(go);
}

void backlog_forget(struct backlog *bl,
                    const rd_kafka_topic_partition_list_t *parts)
{
    batch_drop_partitions(&bl->msgs, parts);
    for (int i = 0; i < parts->cnt; i++)
        rd_kafka_topic_partition_list_del(bl->held, parts->elems[i].topic,
                                          parts->elems[i].partition);
}

/* Contract in backlog.h. */
enum ns_err backlog_rewind(struct backlog *bl, rd_kafka_t *rk,
                           const struct batch *b, char *errstr,
                           size_t errstr_size)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    rd_kafka_topic_partition_list_t *seek = NULL;
    rd_kafka_error_t *error = NULL;
    enum ns_err err = NS_OK;

    if (rd_kafka_assignment(rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
        parts = NULL;
    if (!parts || !parts->cnt)
        goto cleanup;
    seek = batch_offsets(b, 1, parts);
    if (!seek) {
        err = NS_ERR_NOMEM;
        ns_err_set(errstr, errstr_size, "out of memory rewinding an "
                   "abandoned batch");
        goto cleanup;
    }
    if (!seek->cnt)
        goto cleanup;
    /* what the backlog holds for them comes again after the seek, and a
     * partition held for it must be fetched again */
    backlog_unhold(bl, rk, seek);
    backlog_forget(bl, seek);
    error = kafka_seek(rk, seek, 5000);
    for (int i = 0; !error && i < seek->cnt; i++)
        if (seek->elems[i].err) {
            err = NS_ERR_KAFKA;
            ns_err_set(errstr, errstr_size, "could not rewind %s[%d] to "
                       "offset %lld after an abandoned batch: %s",
                       seek->elems[i].topic, (int)seek->elems[i].partition,
                       (long long)seek->elems[i].offset,
                       rd_kafka_err2str(seek->elems[i].err));
        }
    if (error) {
        err = NS_ERR_KAFKA;
        ns_err_set(errstr, errstr_size, "could not rewind the partitions of "
                   "an abandoned batch: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
cleanup:
    if (seek)
        rd_kafka_topic_partition_list_destroy(seek);
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    return err;
}

