#include "deadletter.h"

#include <stdio.h>

#include "log.h"

struct send_args {
    struct dlq *dlq;
    struct batch_item *items;
    size_t n;
    struct metrics *metrics;
    const uint64_t *lane_events;
};

static void log_dead(const struct batch_item *it)
{
    char key[160];

    /* the entity key when known, else the message's key */
    if (it->has_keys)
        snprintf(key, sizeof(key), "%s%s%s", it->keys[0],
                 it->keys[1][0] ? "/" : "", it->keys[1]);
    else
        log_key_text(it->msg->key, it->msg->key_len, key, sizeof(key));
    log_event(NS_LOG_WARN, rd_kafka_topic_name(it->msg->rkt),
              it->msg->partition, it->msg->offset,
              it->has_keys || it->msg->key_len ? key : NULL,
              "event sent to the DLQ: %s", it->reason);
}

/* One try: queue every dead letter, then wait for them all. */
static enum ns_err try_send(void *arg, const struct retry_state *state,
                            char *errstr, size_t errstr_size)
{
    struct send_args *a = arg;
    enum ns_err err = NS_OK;
    int any = 0;

    for (size_t i = 0; !err && i < a->n; i++) {
        struct batch_item *it = &a->items[i];
        rd_kafka_headers_t *hdrs = NULL;
        struct dlq_source src;

        if (!it->dead)
            continue;
        any = 1;
        rd_kafka_message_headers(it->msg, &hdrs);
        src.topic = rd_kafka_topic_name(it->msg->rkt);
        src.partition = it->msg->partition;
        src.offset = it->msg->offset;
        src.key = it->msg->key;
        src.key_len = it->msg->key_len;
        src.value = it->msg->payload;
        src.value_len = it->msg->len;
        src.headers = hdrs;
        if (state->attempt == 0)
            log_dead(it);
        err = dlq_send(a->dlq, &src, it->error_class, it->reason, errstr,
                       errstr_size);
    }
    if (!err && any)
        err = dlq_flush(a->dlq, 30000, errstr, errstr_size);
    metrics_target_seen(a->metrics, METRICS_KAFKA, !err);
    if (err) {
        metrics_retry(a->metrics, METRICS_KAFKA, a->lane_events);
        err = NS_ERR_KAFKA;  /* whatever failed, it is tried again */
    }
    return err;
}

enum ns_err deadletter_send(struct dlq *dlq, struct batch_item *items,
                            size_t n, const struct retry_policy *policy,
                            const struct retry_poller *poller,
                            struct metrics *metrics,
                            const uint64_t *lane_events, char *errstr,
                            size_t errstr_size)
{
    struct send_args a = {dlq, items, n, metrics, lane_events};
    enum ns_err err;

    err = retry_run(policy, poller, NS_OK, "could not send to the DLQ", try_send,
                    &a, errstr, errstr_size);
    if (err)
        return NS_ERR_KAFKA;
    for (size_t i = 0; i < n; i++)
        if (items[i].dead)
            metrics->lanes[items[i].lane].dlq++;
    return NS_OK;
}
