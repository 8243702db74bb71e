#include "dlq.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "dlq_letter.h"
#include "kafka.h"
#include "log.h"

/* dlq_free waits this long for outstanding dead letters. */
#define DLQ_FREE_FLUSH_MS 5000

/* dlq_send waits at most this long for room in a full producer queue. */
#define DLQ_QUEUE_FULL_WAIT_MS 5000
#define DLQ_QUEUE_FULL_POLL_MS 100
/* dlq_new waits this long for the DLQ topic's max.message.bytes. */
#define DLQ_DESCRIBE_MS 3000

/*
 * Delivery reports are served by rd_kafka_poll/rd_kafka_flush in the
 * caller's thread, so the counters need no locking. Every message carries
 * the batch generation it was sent in as its opaque: dlq_flush judges only
 * its own batch, and a late report of a batch given up on earlier cannot
 * fail a later one.
 */
struct dlq {
    rd_kafka_t *rk;
    rd_kafka_conf_t *conf;       /* template to rebuild rk after a fatal
                                    error; owned */
    char *topic;
    char *worker;
    uint64_t gen;                /* current batch */
    uint64_t failed;             /* failures in the current batch */
    uint64_t sent;               /* acknowledged since start */
    char last_error[256];        /* reason of the last failure */
    size_t max_message;          /* a letter's size limit: the producer's
                                    message.max.bytes, or the topic's
                                    max.message.bytes when smaller */
};

void dlq_header_str(const void *headers, const char *name, char *out,
                    size_t out_size)
{
    const rd_kafka_headers_t *hdrs = headers;
    const void *val = NULL;
    size_t size = 0;

    out[0] = '\0';
    if (!hdrs || rd_kafka_header_get_last(hdrs, name, &val, &size) !=
                     RD_KAFKA_RESP_ERR_NO_ERROR || !val)
        return;
    if (size >= out_size)
        size = out_size - 1;
    memcpy(out, val, size);
    out[size] = '\0';
}

/*
 * The broker refused a letter as too large (the topic's limit was not
 * known, or went down since dlq_new): send it once more, now without its
 * value, with nexus.truncated saying the original sizes. A letter that has
 * no value left fails as any other. Returns non-zero when resent.
 */
static int dlq_resend_cut(struct dlq *dlq, const rd_kafka_message_t *rkm)
{
    rd_kafka_headers_t *orig = NULL;
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_resp_err_t kerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    const void *val = NULL;
    size_t size = 0;
    char sizes[64];

    if ((rkm->err != RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE &&
         rkm->err != RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE) ||
        rkm->len == 0)
        return 0;
    if (rd_kafka_message_headers(rkm, &orig) == RD_KAFKA_RESP_ERR_NO_ERROR)
        hdrs = rd_kafka_headers_copy(orig);
    else
        hdrs = rd_kafka_headers_new(1);
    if (!hdrs)
        return 0;
    /* a letter cut before keeps the sizes it says */
    if (rd_kafka_header_get_last(hdrs, "nexus.truncated", &val, &size) !=
        RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(sizes, sizeof(sizes), "key=%zu value=%zu", rkm->key_len,
                 rkm->len);
        kerr = rd_kafka_header_add(hdrs, "nexus.truncated", -1, sizes, -1);
    }
    if (!kerr)
        kerr = rd_kafka_producev(
            dlq->rk, RD_KAFKA_V_TOPIC(dlq->topic),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(rkm->key, rkm->key_len),
            RD_KAFKA_V_VALUE(NULL, 0), RD_KAFKA_V_HEADERS(hdrs),
            RD_KAFKA_V_OPAQUE(rkm->_private), RD_KAFKA_V_END);
    if (kerr) {
        rd_kafka_headers_destroy(hdrs);
        return 0;
    }
    return 1;
}

static void dlq_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *rkm,
                      void *opaque)
{
    struct dlq *dlq = opaque;
    uint64_t gen = (uint64_t)(uintptr_t)rkm->_private;
    rd_kafka_headers_t *hdrs = NULL;
    char topic[256];
    char partition[24];
    char offset[24];
    char key[128];
    int resent;

    (void)rk;
    if (!rkm->err) {
        dlq->sent++;
        return;
    }
    resent = dlq_resend_cut(dlq, rkm);
    if (gen == dlq->gen && !resent) {
        dlq->failed++;
        snprintf(dlq->last_error, sizeof(dlq->last_error), "%s",
                 rd_kafka_err2str(rkm->err));
    }
    /* The source position travels in our headers: log it, so one grep
     * follows the event. */
    if (rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        hdrs = NULL;
    dlq_header_str(hdrs, "nexus.source.topic", topic, sizeof(topic));
    dlq_header_str(hdrs, "nexus.source.partition", partition,
                   sizeof(partition));
    dlq_header_str(hdrs, "nexus.source.offset", offset, sizeof(offset));
    log_key_text(rkm->key, rkm->key_len, key, sizeof(key));
    if (resent)
        log_event(NS_LOG_WARN, topic[0] ? topic : NULL,
                  (int32_t)atol(partition), atoll(offset), key,
                  "dead letter of %zu bytes refused by "
                  "%s as too large (%s): sent again without its value",
                  rkm->len, dlq->topic, rd_kafka_err2str(rkm->err));
    else
        log_event(NS_LOG_WARN, topic[0] ? topic : NULL,
                  (int32_t)atol(partition), atoll(offset), key,
                  "could not deliver dead letter to %s: "
                  "%s%s", dlq->topic, rd_kafka_err2str(rkm->err),
                  gen == dlq->gen ? "" : " (batch already given up)");
}

static void dlq_error_cb(rd_kafka_t *rk, int err, const char *reason,
                         void *opaque)
{
    (void)rk;
    (void)opaque;
    kafka_log_error("dead letter producer", err, reason);
}

/* A new producer from the template; on failure *rk stays NULL. */
static enum ns_err dlq_start(struct dlq *dlq, char *errstr,
                             size_t errstr_size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_dup(dlq->conf);
    char kerr[512];

    if (!conf) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    dlq->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (!dlq->rk) {
        rd_kafka_conf_destroy(conf);
        ns_err_set(errstr, errstr_size,
                    "could not create the dead letter producer: %s", kerr);
        return NS_ERR_KAFKA;
    }
    /* conf now belongs to rk */
    if (rd_kafka_set_log_queue(dlq->rk, NULL) != RD_KAFKA_RESP_ERR_NO_ERROR)
        log_msg(NS_LOG_WARN, "could not route librdkafka logs to the main "
                "queue of the dead letter producer");
    return NS_OK;
}

/* Drop everything outstanding and destroy the producer. The reports of
 * the purged messages are served first, so they count as failures. */
static void dlq_stop(struct dlq *dlq)
{
    if (!dlq->rk)
        return;
    if (rd_kafka_purge(dlq->rk, RD_KAFKA_PURGE_F_QUEUE |
                       RD_KAFKA_PURGE_F_INFLIGHT) ==
        RD_KAFKA_RESP_ERR_NO_ERROR)
        rd_kafka_poll(dlq->rk, 0);
    rd_kafka_destroy(dlq->rk);
    dlq->rk = NULL;
}

/*
 * The DLQ topic's max.message.bytes (its own, or the broker's default),
 * asked with DescribeConfigs for at most DLQ_DESCRIBE_MS; 0 when it cannot
 * be had (broker down, no such topic yet, no DESCRIBE_CONFIGS right).
 */
static size_t dlq_topic_limit(struct dlq *dlq)
{
    rd_kafka_ConfigResource_t *res = NULL;
    rd_kafka_AdminOptions_t *opts = NULL;
    rd_kafka_queue_t *queue = NULL;
    rd_kafka_event_t *ev = NULL;
    const rd_kafka_ConfigResource_t **got;
    const rd_kafka_ConfigEntry_t **entries;
    size_t n = 0, limit = 0;
    char why[256] = "no max.message.bytes in the answer";

    res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, dlq->topic);
    opts = rd_kafka_AdminOptions_new(dlq->rk,
                                     RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    queue = rd_kafka_queue_new(dlq->rk);
    if (!res || !opts || !queue ||
        rd_kafka_AdminOptions_set_request_timeout(opts, DLQ_DESCRIBE_MS, why,
                                                  sizeof(why))) {
        snprintf(why, sizeof(why), "out of memory");
        goto cleanup;
    }
    rd_kafka_DescribeConfigs(dlq->rk, &res, 1, opts, queue);
    ev = rd_kafka_queue_poll(queue, DLQ_DESCRIBE_MS + 1000);
    if (!ev || rd_kafka_event_error(ev)) {
        snprintf(why, sizeof(why), "%s", ev ? rd_kafka_event_error_string(ev)
                                            : "no answer");
        goto cleanup;
    }
    got = rd_kafka_DescribeConfigs_result_resources(
        rd_kafka_event_DescribeConfigs_result(ev), &n);
    if (n != 1 || rd_kafka_ConfigResource_error(got[0])) {
        snprintf(why, sizeof(why), "%s", n == 1 ?
                 rd_kafka_ConfigResource_error_string(got[0]) : "no answer");
        goto cleanup;
    }
    entries = rd_kafka_ConfigResource_configs(got[0], &n);
    for (size_t i = 0; i < n && !limit; i++)
        if (strcmp(rd_kafka_ConfigEntry_name(entries[i]),
                   "max.message.bytes") == 0 &&
            rd_kafka_ConfigEntry_value(entries[i]))
            limit = (size_t)strtoull(rd_kafka_ConfigEntry_value(entries[i]),
                                     NULL, 10);

cleanup:
    if (!limit)
        log_msg(NS_LOG_WARN, "could not read max.message.bytes of %s: %s; a "
                "dead letter the broker refuses as too large is sent again "
                "without its value", dlq->topic, why);
    if (ev)
        rd_kafka_event_destroy(ev);
    if (queue)
        rd_kafka_queue_destroy(queue);
    if (opts)
        rd_kafka_AdminOptions_destroy(opts);
    if (res)
        rd_kafka_ConfigResource_destroy(res);
    return limit;
}

enum ns_err dlq_new(const char *const *kafka_props, const char *topic,
                    const char *worker, struct dlq **out, char *errstr,
                    size_t errstr_size)
{
    static const char *const forced[] = {
        "enable.idempotence", "true",
        "acks", "all",
        "log.queue", "true",
        NULL};
    struct dlq *dlq = NULL;
    enum ns_err err = NS_OK;
    char kerr[512];
    char mmb[32];
    size_t mmb_size = sizeof(mmb);
    size_t limit;

    *out = NULL;
    if (!topic || !*topic || !worker || !*worker) {
        ns_err_set(errstr, errstr_size,
                    "dead letter topic and worker name are required");
        return NS_ERR_CONFIG;
    }
    dlq = calloc(1, sizeof(*dlq));
    if (!dlq) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    dlq->topic = strdup(topic);
    dlq->worker = strdup(worker);
    if (!dlq->topic || !dlq->worker) {
        err = NS_ERR_NOMEM;
        ns_err_set(errstr, errstr_size, "out of memory");
        goto cleanup;
    }
    /* The caller's properties first, then what the DLQ's guarantees rest
     * on, which no configuration may weaken. */
    err = kafka_conf_new(NULL, kafka_props, forced, 0, &dlq->conf, errstr,
                         errstr_size);
    if (err)
        goto cleanup;
    /* An event larger than this cannot be a dead letter as it is: the
     * producer refuses it, and the batch would be retried for ever. */
    dlq->max_message = 1000000;
    if (rd_kafka_conf_get(dlq->conf, "message.max.bytes", mmb, &mmb_size) ==
            RD_KAFKA_CONF_OK && strtoull(mmb, NULL, 10) > 0)
        dlq->max_message = (size_t)strtoull(mmb, NULL, 10);
    rd_kafka_conf_set_opaque(dlq->conf, dlq);
    rd_kafka_conf_set_dr_msg_cb(dlq->conf, dlq_dr_cb);
    rd_kafka_conf_set_error_cb(dlq->conf, dlq_error_cb);

    err = dlq_start(dlq, errstr, errstr_size);
    if (err)
        goto cleanup;
    /* The broker refuses a record batch over the topic's limit: letters
     * are cut to it, and batches kept under it (batch.size), so that one
     * refused batch never takes small letters with it. */
    limit = dlq_topic_limit(dlq);
    if (limit > DLQ_LETTER_RECORD_OVERHEAD && limit < dlq->max_message) {
        snprintf(mmb, sizeof(mmb), "%zu", limit - DLQ_LETTER_RECORD_OVERHEAD);
        dlq_stop(dlq);
        if (rd_kafka_conf_set(dlq->conf, "batch.size", mmb, kerr,
                              sizeof(kerr)) != RD_KAFKA_CONF_OK) {
            err = NS_ERR_CONFIG;
            ns_err_set(errstr, errstr_size, "kafka property batch.size: %s",
                       kerr);
            goto cleanup;
        }
        dlq->max_message = limit;
        err = dlq_start(dlq, errstr, errstr_size);
        if (err)
            goto cleanup;
    }
    log_msg(NS_LOG_DEBUG, "dead letters to %s are cut to %zu bytes", dlq->topic,
            dlq->max_message);
    *out = dlq;
    dlq = NULL;

cleanup:
    dlq_free(dlq);
    return err;
}

void dlq_free(struct dlq *dlq)
{
    if (!dlq)
        return;
    if (dlq->rk) {
        rd_kafka_resp_err_t kerr = rd_kafka_flush(dlq->rk, DLQ_FREE_FLUSH_MS);

        if (kerr != RD_KAFKA_RESP_ERR_NO_ERROR)
            log_msg(NS_LOG_WARN, "could not flush dead letters to %s before "
                    "closing: %d still queued", dlq->topic,
                    rd_kafka_outq_len(dlq->rk));
        dlq_stop(dlq);
    }
    if (dlq->conf)
        rd_kafka_conf_destroy(dlq->conf);
    free(dlq->topic);
    free(dlq->worker);
    free(dlq);
}

/*
 * Contract in dlq.h. A producer that hit a fatal error (idempotence can
 * fence itself) is replaced here first; its outstanding letters are failed
 * into the current batch, so the next dlq_flush reports them. A full queue
 * is waited on for a bounded time while delivery reports are served.
 */
enum ns_err dlq_send(struct dlq *dlq, const struct dlq_source *src,
                     enum ns_err error_class, const char *reason,
                     char *errstr, size_t errstr_size)
{
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_resp_err_t kerr;
    char fatal[200];
    int waited = 0;
    size_t key_len = src->key ? src->key_len : 0;
    size_t value_len = src->value ? src->value_len : 0;
    enum ns_err err = NS_OK;

    if (!dlq->rk ||
        rd_kafka_fatal_error(dlq->rk, fatal, sizeof(fatal)) !=
            RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (dlq->rk) {
            int left = rd_kafka_outq_len(dlq->rk);

            log_msg(NS_LOG_ERROR, "dead letter producer failed for good, "
                    "starting a new one: %s", fatal);
            /* letters the old producer never confirmed fail this batch */
            if (left > 0) {
                dlq->failed += (uint64_t)left;
                snprintf(dlq->last_error, sizeof(dlq->last_error),
                         "producer failed for good: %s", fatal);
            }
        }
        dlq_stop(dlq);
        err = dlq_start(dlq, errstr, errstr_size);
        if (err)
            goto cleanup;
    }
    /* Too large for the producer or the topic: the letter keeps the first
     * bytes of the key and value, and nexus.truncated says their real
     * sizes. */
    hdrs = dlq_letter_headers(dlq->worker, dlq->max_message, src,
                              error_class, reason, &key_len, &value_len);
    if (!hdrs) {
        err = NS_ERR_NOMEM;
        ns_err_set(errstr, errstr_size,
                    "could not build dead letter headers");
        goto cleanup;
    }
    if (key_len < (src->key ? src->key_len : 0) ||
        value_len < (src->value ? src->value_len : 0)) {
        char key[128];

        log_event(NS_LOG_WARN, src->topic, src->partition, src->offset,
                  log_key_text(src->key, key_len, key, sizeof(key)),
                  "dead letter cut to %zu bytes of key and %zu of value, "
                  "from %zu and %zu (limit %zu bytes)", key_len, value_len,
                  src->key ? src->key_len : 0,
                  src->value ? src->value_len : 0, dlq->max_message);
    }
    for (;;) {
        kerr = rd_kafka_producev(
            dlq->rk, RD_KAFKA_V_TOPIC(dlq->topic),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY((void *)src->key, key_len),
            RD_KAFKA_V_VALUE((void *)src->value, value_len),
            RD_KAFKA_V_HEADERS(hdrs),
            RD_KAFKA_V_OPAQUE((void *)(uintptr_t)dlq->gen),
            RD_KAFKA_V_END);
        if (kerr != RD_KAFKA_RESP_ERR__QUEUE_FULL ||
            waited >= DLQ_QUEUE_FULL_WAIT_MS)
            break;
        rd_kafka_poll(dlq->rk, DLQ_QUEUE_FULL_POLL_MS);
        waited += DLQ_QUEUE_FULL_POLL_MS;
    }
    if (kerr) {
        err = NS_ERR_KAFKA;
        ns_err_set(errstr, errstr_size,
                    "could not queue dead letter for %s: %s", dlq->topic,
                    rd_kafka_err2str(kerr));
        goto cleanup;
    }
    /* librdkafka owns the headers now */
    hdrs = NULL;
    rd_kafka_poll(dlq->rk, 0);

cleanup:
    if (hdrs)
        rd_kafka_headers_destroy(hdrs);
    return err;
}

/*
 * Contract in dlq.h. Whatever the result, the batch ends here: reports of
 * its letters that arrive later no longer count. On a timeout the letters
 * still waiting in the local queue are purged, since the caller sends the
 * batch again; those already in flight may still arrive (the DLQ is
 * at-least-once).
 */
enum ns_err dlq_flush(struct dlq *dlq, int timeout_ms, char *errstr,
                      size_t errstr_size)
{
    rd_kafka_resp_err_t kerr;
    char fatal[256];
    enum ns_err err = NS_OK;

    if (!dlq->rk) {
        err = NS_ERR_KAFKA;
        ns_err_set(errstr, errstr_size, "dead letter producer is down");
        goto cleanup;
    }
    kerr = rd_kafka_flush(dlq->rk, timeout_ms);
    if (kerr == RD_KAFKA_RESP_ERR__TIMED_OUT) {
        int left = rd_kafka_outq_len(dlq->rk);

        err = NS_ERR_KAFKA;
        ns_err_set(errstr, errstr_size,
                    "could not flush dead letters to %s: timed out after "
                    "%d ms with %d unacknowledged", dlq->topic, timeout_ms,
                    left);
        if (rd_kafka_purge(dlq->rk, RD_KAFKA_PURGE_F_QUEUE) ==
            RD_KAFKA_RESP_ERR_NO_ERROR)
            rd_kafka_poll(dlq->rk, 0);
    } else if (kerr) {
        err = NS_ERR_KAFKA;
        ns_err_set(errstr, errstr_size, "could not flush dead letters: %s",
                    rd_kafka_err2str(kerr));
    } else if (dlq->failed) {
        err = NS_ERR_KAFKA;
        ns_err_set(errstr, errstr_size,
                    "could not deliver %llu dead letters to %s: %s",
                    (unsigned long long)dlq->failed, dlq->topic,
                    dlq->last_error);
    } else if (rd_kafka_fatal_error(dlq->rk, fatal, sizeof(fatal)) !=
               RD_KAFKA_RESP_ERR_NO_ERROR) {
        err = NS_ERR_KAFKA;
        ns_err_set(errstr, errstr_size,
                    "dead letter producer failed for good: %s", fatal);
    }

cleanup:
    dlq->failed = 0;
    dlq->last_error[0] = '\0';
    dlq->gen++;
    return err;
}

uint64_t dlq_sent_count(const struct dlq *dlq)
{
    return dlq ? dlq->sent : 0;
}
