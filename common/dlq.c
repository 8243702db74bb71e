#include "dlq.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "log.h"

/* dlq_free waits this long for outstanding dead letters. */
#define DLQ_FREE_FLUSH_MS 5000

/* dlq_send waits at most this long for room in a full producer queue. */
#define DLQ_QUEUE_FULL_WAIT_MS 5000
#define DLQ_QUEUE_FULL_POLL_MS 100
/* Room kept in a dead letter for its headers; the rest of the producer's
 * message.max.bytes may hold the key and value. */
#define DLQ_HEADER_ROOM (32u * 1024u)

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
    size_t max_message;          /* the producer's message.max.bytes */
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

    (void)rk;
    if (!rkm->err) {
        dlq->sent++;
        return;
    }
    if (gen == dlq->gen) {
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
    log_event(LOG_WARN, topic[0] ? topic : NULL, (int32_t)atol(partition),
              atoll(offset), log_key_text(rkm->key, rkm->key_len, key,
                                          sizeof(key)),
              "could not deliver dead letter to %s: %s%s", dlq->topic,
              rd_kafka_err2str(rkm->err),
              gen == dlq->gen ? "" : " (batch already given up)");
}

static void dlq_error_cb(rd_kafka_t *rk, int err, const char *reason,
                         void *opaque)
{
    (void)rk;
    (void)opaque;
    log_msg(err == RD_KAFKA_RESP_ERR__FATAL ? LOG_ERROR : LOG_WARN,
            "dead letter producer: %s: %s",
            rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* librdkafka's own log lines, served on our thread (log.queue). */
static void dlq_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                       const char *buf)
{
    enum log_level lvl = log_level_from_syslog(level);

    (void)rk;
    if (log_enabled(lvl))
        log_msg(lvl, "rdkafka %s: %s", fac, buf);
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
        log_msg(LOG_WARN, "could not route librdkafka logs to the main "
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
    dlq->conf = rd_kafka_conf_new();
    if (!dlq->topic || !dlq->worker || !dlq->conf) {
        err = NS_ERR_NOMEM;
        ns_err_set(errstr, errstr_size, "out of memory");
        goto cleanup;
    }
    /* The caller's properties first, then what the DLQ's guarantees rest
     * on, which no configuration may weaken. */
    for (size_t i = 0; kafka_props && kafka_props[i]; i += 2) {
        if (!kafka_props[i + 1]) {
            err = NS_ERR_CONFIG;
            ns_err_set(errstr, errstr_size,
                        "kafka property %s has no value", kafka_props[i]);
            goto cleanup;
        }
        if (rd_kafka_conf_set(dlq->conf, kafka_props[i], kafka_props[i + 1],
                              kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK) {
            err = NS_ERR_CONFIG;
            ns_err_set(errstr, errstr_size, "kafka property %s: %s",
                        kafka_props[i], kerr);
            goto cleanup;
        }
    }
    for (size_t i = 0; forced[i]; i += 2) {
        if (rd_kafka_conf_set(dlq->conf, forced[i], forced[i + 1], kerr,
                              sizeof(kerr)) != RD_KAFKA_CONF_OK) {
            err = NS_ERR_CONFIG;
            ns_err_set(errstr, errstr_size, "kafka property %s: %s",
                        forced[i], kerr);
            goto cleanup;
        }
    }
    /* An event larger than this cannot be a dead letter as it is: the
     * producer refuses it, and the batch would be retried for ever. */
    dlq->max_message = 1000000;
    if (rd_kafka_conf_get(dlq->conf, "message.max.bytes", mmb, &mmb_size) ==
            RD_KAFKA_CONF_OK && strtoull(mmb, NULL, 10) > 2 * DLQ_HEADER_ROOM)
        dlq->max_message = (size_t)strtoull(mmb, NULL, 10);
    rd_kafka_conf_set_opaque(dlq->conf, dlq);
    rd_kafka_conf_set_dr_msg_cb(dlq->conf, dlq_dr_cb);
    rd_kafka_conf_set_error_cb(dlq->conf, dlq_error_cb);
    rd_kafka_conf_set_log_cb(dlq->conf, dlq_log_cb);

    err = dlq_start(dlq, errstr, errstr_size);
    if (err)
        goto cleanup;
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
            log_msg(LOG_WARN, "could not flush dead letters to %s before "
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

/* "2024-05-01T12:34:56.789Z" */
static void dlq_now_iso(char *out, size_t out_size)
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
static rd_kafka_headers_t *dlq_headers_new(const struct dlq *dlq,
                                           const struct dlq_source *src,
                                           enum ns_err error_class,
                                           const char *reason, int truncated)
{
    rd_kafka_headers_t *orig = src->headers;
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
        kerr = rd_kafka_header_add(hdrs, name, -1, val, (ssize_t)size);
    }
    snprintf(partition, sizeof(partition), "%d", (int)src->partition);
    snprintf(offset, sizeof(offset), "%lld", (long long)src->offset);
    dlq_now_iso(now, sizeof(now));
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
        kerr = rd_kafka_header_add(hdrs, "nexus.worker", -1, dlq->worker,
                                   -1);
    if (!kerr)
        kerr = rd_kafka_header_add(hdrs, "nexus.time", -1, now, -1);
    if (!kerr && truncated) {
        /* what the cut key and value were: their original sizes */
        char sizes[64];
        snprintf(sizes, sizeof(sizes), "key=%zu value=%zu",
                 src->key ? src->key_len : 0, src->value ? src->value_len : 0);
        kerr = rd_kafka_header_add(hdrs, "nexus.truncated", -1, sizes, -1);
    }
    if (kerr) {
        rd_kafka_headers_destroy(hdrs);
        return NULL;
    }
    return hdrs;
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
    size_t room = dlq->max_message - DLQ_HEADER_ROOM;
    int truncated = 0;
    enum ns_err err = NS_OK;

    if (!dlq->rk ||
        rd_kafka_fatal_error(dlq->rk, fatal, sizeof(fatal)) !=
            RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (dlq->rk) {
            int left = rd_kafka_outq_len(dlq->rk);

            log_msg(LOG_ERROR, "dead letter producer failed for good, "
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
    /* Too large for the producer: the letter keeps the first bytes of the
     * key and value, and nexus.truncated says their real sizes. */
    if (key_len > room / 4) {
        key_len = room / 4;
        truncated = 1;
    }
    if (value_len > room - key_len) {
        value_len = room - key_len;
        truncated = 1;
    }
    if (truncated)
        log_event(LOG_WARN, src->topic, src->partition, src->offset, NULL,
                  "dead letter cut to %zu bytes of key and %zu of value "
                  "(message.max.bytes %zu)", key_len, value_len,
                  dlq->max_message);
    hdrs = dlq_headers_new(dlq, src, error_class, reason, truncated);
    if (!hdrs) {
        err = NS_ERR_NOMEM;
        ns_err_set(errstr, errstr_size,
                    "could not build dead letter headers");
        goto cleanup;
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
