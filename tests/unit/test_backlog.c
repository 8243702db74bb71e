/*
 * test_backlog - backlog.c and batch.c with a real librdkafka consumer
 * handle and no broker (bootstrap.servers points at a closed port): the
 * byte and count limits, holds, and the rewind of an abandoned batch,
 * whose seek cannot succeed without a broker and must then be an error
 * (the worker stops; the next start reads from the last commit) rather
 * than a silent skip.
 *
 * Usage: test_backlog [DIR]   (default tests/cases/backlog)
 *
 * Every .json file in DIR is one case:
 *   {"sizes": [100, 100, 300],        payload bytes of the messages, offsets 0..
 *    "max_count": 10, "max_bytes": 250,
 *    "expect_taken": 2,               messages a batch with those limits takes
 *                                     from the front of a list of them
 *    "rewind": true}                  also rewind a batch of them: must fail
 * An unknown member fails the case.
 */
#include "backlog.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "cases.h"

#define CASE_MAX_BYTES (1u << 16)
#define MAX_MSGS 64

static rd_kafka_t *consumer(void)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char kerr[256];
    rd_kafka_t *rk;

    if (rd_kafka_conf_set(conf, "bootstrap.servers", "127.0.0.1:1", kerr,
                          sizeof(kerr)) ||
        rd_kafka_conf_set(conf, "group.id", "test-backlog", kerr,
                          sizeof(kerr)) ||
        rd_kafka_conf_set(conf, "log_level", "0", kerr, sizeof(kerr))) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kerr, sizeof(kerr));
    if (!rk)
        rd_kafka_conf_destroy(conf);
    return rk;
}

static int run_case(const char *path, char *why, size_t why_size)
{
    static const char *const known[] = {"sizes", "max_count", "max_bytes",
                                        "expect_taken", "rewind"};
    char *text = case_read_file(path, CASE_MAX_BYTES, NULL);
    cJSON *c = text ? cJSON_Parse(text) : NULL;
    const cJSON *sizes, *j;
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_t *rkt = NULL;
    rd_kafka_message_t msgs[MAX_MSGS];
    struct batch all, b;
    struct backlog bl;
    int n, rc = -1;
    size_t taken;

    memset(&all, 0, sizeof(all));
    memset(&b, 0, sizeof(b));
    memset(&bl, 0, sizeof(bl));
    if (!c || CASE_CHECK_KEYS(c, known, "case", why, why_size))
        goto cleanup;
    sizes = cJSON_GetObjectItemCaseSensitive(c, "sizes");
    n = cJSON_GetArraySize(sizes);
    rk = consumer();
    rkt = rk ? rd_kafka_topic_new(rk, "t", NULL) : NULL;
    if (!rkt || n < 1 || n > MAX_MSGS ||
        batch_init(&all, MAX_MSGS, (size_t)-1) ||
        batch_init(&b, (size_t)cJSON_GetObjectItemCaseSensitive(
                           c, "max_count")->valueint,
                   (size_t)cJSON_GetObjectItemCaseSensitive(
                       c, "max_bytes")->valueint) ||
        backlog_init(&bl, 4, 1000)) {
        case_why(why, why_size, "cannot set up the case");
        goto cleanup;
    }
    /* made-up messages: the lists never destroy them (counts reset below) */
    memset(msgs, 0, sizeof(msgs));
    for (int i = 0; i < n; i++) {
        msgs[i].rkt = rkt;
        msgs[i].partition = 0;
        msgs[i].offset = 10 + i;
        msgs[i].len = (size_t)cJSON_GetArrayItem(sizes, i)->valueint;
        batch_add(&all, &msgs[i], 0);
    }
    taken = batch_take(&b, &all);
    j = cJSON_GetObjectItemCaseSensitive(c, "expect_taken");
    if (!cJSON_IsNumber(j) || (int)taken != j->valueint ||
        all.count + b.count != (size_t)n) {
        case_why(why, why_size, "took %zu of %d, want %d", taken, n,
                 cJSON_IsNumber(j) ? j->valueint : -1);
        goto cleanup;
    }
    j = cJSON_GetObjectItemCaseSensitive(c, "rewind");
    if (cJSON_IsTrue(j)) {
        rd_kafka_topic_partition_list_t *parts =
            rd_kafka_topic_partition_list_new(1);
        char errstr[512] = "";
        enum ns_err err;

        rd_kafka_topic_partition_list_add(parts, "t", 0);
        rd_kafka_assign(rk, parts);
        rd_kafka_topic_partition_list_destroy(parts);
        err = backlog_rewind(&bl, rk, &b, errstr, sizeof(errstr));
        rd_kafka_assign(rk, NULL);
        if (err != NS_ERR_KAFKA || !strstr(errstr, "rewind")) {
            case_why(why, why_size, "rewind without a broker: %s (%s), want "
                     "kafka", ns_err_str(err), errstr);
            goto cleanup;
        }
    }
    rc = 0;
cleanup:
    all.count = b.count = 0;  /* the messages are not librdkafka's */
    batch_free(&all);
    batch_free(&b);
    backlog_free(&bl);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    if (rk)
        rd_kafka_destroy(rk);
    cJSON_Delete(c);
    free(text);
    if (rc && !why[0])
        case_why(why, why_size, "cannot read or parse the case");
    return rc;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "tests/cases/backlog";
    int passed = 0, failed = 0;

    if (case_run_dir(dir, run_case, &passed, &failed) < 0) {
        fprintf(stderr, "test_backlog: cannot read %s\n", dir);
        return 1;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
