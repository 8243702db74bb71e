#include "kafka.h"

#include <stdio.h>

#include "buf.h"

#include "log.h"

/* librdkafka's own log lines, in our format (JSON lines too); called from
 * its threads, which log.c allows. */
static void log_cb(const rd_kafka_t *rk, int level, const char *fac,
                   const char *buf)
{
    enum log_level lvl = log_level_from_syslog(level);

    (void)rk;
    if (log_enabled(lvl))
        log_msg(lvl, "rdkafka %s: %s", fac, buf);
}

/* The same for tools, whose users do not want librdkafka's routine INFO. */
static void log_cb_quiet(const rd_kafka_t *rk, int level, const char *fac,
                         const char *buf)
{
    enum log_level lvl = log_level_from_syslog(level);

    (void)rk;
    if (lvl == NS_LOG_INFO)
        lvl = NS_LOG_DEBUG;
    if (log_enabled(lvl))
        log_msg(lvl, "rdkafka %s: %s", fac, buf);
}

static enum ns_err set_pairs(rd_kafka_conf_t *conf, const char *const *pairs,
                             char *errstr, size_t errstr_size)
{
    char kerr[512];

    for (size_t i = 0; pairs && pairs[i]; i += 2) {
        if (!pairs[i + 1]) {
            ns_err_set(errstr, errstr_size, "kafka property %s has no value",
                       pairs[i]);
            return NS_ERR_CONFIG;
        }
        if (rd_kafka_conf_set(conf, pairs[i], pairs[i + 1], kerr,
                              sizeof(kerr)) != RD_KAFKA_CONF_OK) {
            ns_err_set(errstr, errstr_size, "kafka property %s: %s",
                       pairs[i], kerr);
            return NS_ERR_CONFIG;
        }
    }
    return NS_OK;
}

enum ns_err kafka_conf_new(const char *const *defaults,
                           const char *const *props,
                           const char *const *forced, int quiet,
                           rd_kafka_conf_t **out, char *errstr,
                           size_t errstr_size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    enum ns_err err = NS_OK;

    *out = NULL;
    if (!conf) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    err = set_pairs(conf, defaults, errstr, errstr_size);
    if (!err)
        err = set_pairs(conf, props, errstr, errstr_size);
    if (!err)
        err = set_pairs(conf, forced, errstr, errstr_size);
    if (err) {
        rd_kafka_conf_destroy(conf);
        return err;
    }
    rd_kafka_conf_set_log_cb(conf, quiet ? log_cb_quiet : log_cb);
    *out = conf;
    return NS_OK;
}

void kafka_log_error(const char *who, int err, const char *reason)
{
    log_msg(err == RD_KAFKA_RESP_ERR__FATAL ? NS_LOG_ERROR : NS_LOG_WARN,
            "%s: %s: %s", who, rd_kafka_err2name((rd_kafka_resp_err_t)err),
            reason);
}

rd_kafka_error_t *kafka_seek(rd_kafka_t *rk,
                             rd_kafka_topic_partition_list_t *parts,
                             int timeout_ms)
{
    rd_kafka_error_t *error = rd_kafka_seek_partitions(rk, parts, timeout_ms);

    /* Timed out: the seek is queued and still happens (librdkafka before
     * 2.1 waited timeout_ms microseconds, #4230); not a failure. */
    if (error && rd_kafka_error_code(error) == RD_KAFKA_RESP_ERR__TIMED_OUT) {
        rd_kafka_error_destroy(error);
        error = NULL;
    }
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].err == RD_KAFKA_RESP_ERR__TIMED_OUT)
            parts->elems[i].err = RD_KAFKA_RESP_ERR_NO_ERROR;
    return error;
}

void kafka_resume(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *seek =
        rd_kafka_topic_partition_list_new(parts->cnt ? parts->cnt : 1);

    rd_kafka_position(rk, parts);
    rd_kafka_resume_partitions(rk, parts);
    for (int i = 0; i < parts->cnt; i++)
        if (parts->elems[i].offset >= 0)
            rd_kafka_topic_partition_list_add(seek, parts->elems[i].topic,
                                              parts->elems[i].partition)
                ->offset = parts->elems[i].offset;
    if (seek->cnt) {
        rd_kafka_error_t *error = kafka_seek(rk, seek, 5000);

        if (error) {
            log_msg(NS_LOG_WARN, "could not seek resumed partitions: %s",
                    rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
        }
    }
    rd_kafka_topic_partition_list_destroy(seek);
}

void kafka_log_partitions(const char *what,
                          const rd_kafka_topic_partition_list_t *parts)
{
    struct buf text;
    int shown = 0;

    if (!log_enabled(NS_LOG_INFO))
        return;
    buf_init(&text, 4096);
    for (; shown < parts->cnt; shown++)
        if (buf_addf(&text, "%s%s[%d]", shown ? " " : "",
                     parts->elems[shown].topic,
                     (int)parts->elems[shown].partition))
            break;
    log_msg(NS_LOG_INFO, "partitions %s (%d): %s%s", what, parts->cnt,
            buf_str(&text), shown < parts->cnt ? " ..." : "");
    buf_free(&text);
}
