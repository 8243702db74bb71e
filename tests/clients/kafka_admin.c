/*
 * kafka_admin - create or delete a scratch topic (the broker does not
 * auto-create topics, and kcat cannot create them).
 *
 *   kafka_admin BOOTSTRAP create TOPIC PARTITIONS [NAME=VALUE...]
 *   kafka_admin BOOTSTRAP delete TOPIC
 *   kafka_admin BOOTSTRAP commit-end GROUP TOPIC...
 *   kafka_admin BOOTSTRAP alter TOPIC NAME=VALUE...
 *
 * commit-end commits, for a consumer group that is not running, every
 * partition's high watermark: the group's next member starts at the end
 * instead of replaying the topic (a test that only wants new events).
 *
 * alter replaces the topic's own settings with NAME=VALUE... (AlterConfigs:
 * settings not named go back to the broker's defaults).
 *
 * Exits 0 when the broker confirms, 1 with the reason on stderr otherwise.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#define ADMIN_TIMEOUT_MS 30000

/* Wait for the admin result; returns 0 when every topic succeeded. */
static int admin_wait(rd_kafka_queue_t *queue, int create)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(queue, ADMIN_TIMEOUT_MS + 5000);
    const rd_kafka_topic_result_t **res;
    size_t n = 0;
    int rc = 1;

    if (!ev) {
        fprintf(stderr, "kafka_admin: no answer from the broker\n");
        return 1;
    }
    if (rd_kafka_event_error(ev)) {
        fprintf(stderr, "kafka_admin: %s\n", rd_kafka_event_error_string(ev));
        goto cleanup;
    }
    if (create)
        res = rd_kafka_CreateTopics_result_topics(
            rd_kafka_event_CreateTopics_result(ev), &n);
    else
        res = rd_kafka_DeleteTopics_result_topics(
            rd_kafka_event_DeleteTopics_result(ev), &n);
    rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (rd_kafka_topic_result_error(res[i])) {
            fprintf(stderr, "kafka_admin: %s: %s\n",
                    rd_kafka_topic_result_name(res[i]),
                    rd_kafka_topic_result_error_string(res[i]));
            rc = 1;
        }
    }

cleanup:
    rd_kafka_event_destroy(ev);
    return rc;
}

static int commit_end(const char *bootstrap, const char *group,
                      char **topics, int ntopics)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(16);
    const struct rd_kafka_metadata *md = NULL;
    char errstr[512];
    int rc = 1;

    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                          sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "group.id", group, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", errstr,
                          sizeof(errstr))) {
        fprintf(stderr, "kafka_admin: %s\n", errstr);
        goto cleanup;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "kafka_admin: %s\n", errstr);
        goto cleanup;
    }
    conf = NULL;
    if (rd_kafka_metadata(rk, 1, NULL, &md, ADMIN_TIMEOUT_MS)) {
        fprintf(stderr, "kafka_admin: no metadata from the broker\n");
        goto cleanup;
    }
    for (int t = 0; t < ntopics; t++) {
        int found = 0;
        for (int i = 0; i < md->topic_cnt; i++) {
            if (strcmp(md->topics[i].topic, topics[t]) != 0)
                continue;
            found = 1;
            for (int p = 0; p < md->topics[i].partition_cnt; p++) {
                int64_t lo = 0, hi = 0;
                int32_t id = md->topics[i].partitions[p].id;
                if (rd_kafka_query_watermark_offsets(rk, topics[t], id, &lo,
                                                     &hi, ADMIN_TIMEOUT_MS)) {
                    fprintf(stderr, "kafka_admin: no watermarks for %s/%d\n",
                            topics[t], (int)id);
                    goto cleanup;
                }
                rd_kafka_topic_partition_list_add(offs, topics[t], id)->offset = hi;
            }
        }
        if (!found) {
            fprintf(stderr, "kafka_admin: no topic %s\n", topics[t]);
            goto cleanup;
        }
    }
    if (rd_kafka_commit(rk, offs, 0)) {
        fprintf(stderr, "kafka_admin: commit for group %s failed\n", group);
        goto cleanup;
    }
    rc = 0;

cleanup:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_partition_list_destroy(offs);
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    if (conf)
        rd_kafka_conf_destroy(conf);
    return rc;
}

static int alter(const char *bootstrap, const char *topic, char **pairs,
                 int npairs)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk = NULL;
    rd_kafka_queue_t *queue = NULL;
    rd_kafka_AdminOptions_t *opts = NULL;
    rd_kafka_ConfigResource_t *res =
        rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
    rd_kafka_event_t *ev = NULL;
    const rd_kafka_ConfigResource_t **got;
    size_t n = 0;
    char errstr[512];
    int rc = 1;

    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kafka_admin: %s\n", errstr);
        goto cleanup;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "kafka_admin: %s\n", errstr);
        goto cleanup;
    }
    conf = NULL;
    for (int i = 0; i < npairs; i++) {
        char *eq = strchr(pairs[i], '=');
        if (!eq) {
            fprintf(stderr, "kafka_admin: config '%s' is not NAME=VALUE\n",
                    pairs[i]);
            goto cleanup;
        }
        *eq = '\0';
        if (rd_kafka_ConfigResource_set_config(res, pairs[i], eq + 1)) {
            fprintf(stderr, "kafka_admin: cannot set config %s\n", pairs[i]);
            goto cleanup;
        }
    }
    queue = rd_kafka_queue_new(rk);
    opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_ALTERCONFIGS);
    rd_kafka_AlterConfigs(rk, &res, 1, opts, queue);
    ev = rd_kafka_queue_poll(queue, ADMIN_TIMEOUT_MS + 5000);
    if (!ev || rd_kafka_event_error(ev)) {
        fprintf(stderr, "kafka_admin: %s\n",
                ev ? rd_kafka_event_error_string(ev) : "no answer");
        goto cleanup;
    }
    got = rd_kafka_AlterConfigs_result_resources(
        rd_kafka_event_AlterConfigs_result(ev), &n);
    if (n != 1 || rd_kafka_ConfigResource_error(got[0])) {
        fprintf(stderr, "kafka_admin: %s\n",
                n == 1 ? rd_kafka_ConfigResource_error_string(got[0])
                       : "no result");
        goto cleanup;
    }
    rc = 0;

cleanup:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (opts)
        rd_kafka_AdminOptions_destroy(opts);
    if (queue)
        rd_kafka_queue_destroy(queue);
    rd_kafka_ConfigResource_destroy(res);
    if (rk)
        rd_kafka_destroy(rk);
    if (conf)
        rd_kafka_conf_destroy(conf);
    return rc;
}

int main(int argc, char **argv)
{
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_queue_t *queue = NULL;
    rd_kafka_AdminOptions_t *opts = NULL;
    rd_kafka_NewTopic_t *nt = NULL;
    rd_kafka_DeleteTopic_t *dt = NULL;
    char errstr[512];
    int create, rc = 1;

    if (argc >= 5 && strcmp(argv[2], "commit-end") == 0)
        return commit_end(argv[1], argv[3], argv + 4, argc - 4);
    if (argc >= 5 && strcmp(argv[2], "alter") == 0)
        return alter(argv[1], argv[3], argv + 4, argc - 4);
    if (argc < 4 || (strcmp(argv[2], "create") == 0 && argc < 5)) {
        fprintf(stderr, "usage: kafka_admin BOOTSTRAP create TOPIC PARTITIONS"
                " [NAME=VALUE...] | BOOTSTRAP delete TOPIC"
                " | BOOTSTRAP commit-end GROUP TOPIC..."
                " | BOOTSTRAP alter TOPIC NAME=VALUE...\n");
        return 2;
    }
    create = strcmp(argv[2], "create") == 0;
    conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], errstr,
                          sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "kafka_admin: %s\n", errstr);
        goto cleanup;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "kafka_admin: %s\n", errstr);
        goto cleanup;
    }
    conf = NULL;
    queue = rd_kafka_queue_new(rk);
    opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_ANY);
    if (rd_kafka_AdminOptions_set_operation_timeout(
            opts, ADMIN_TIMEOUT_MS, errstr, sizeof(errstr)) ||
        rd_kafka_AdminOptions_set_request_timeout(
            opts, ADMIN_TIMEOUT_MS, errstr, sizeof(errstr))) {
        fprintf(stderr, "kafka_admin: %s\n", errstr);
        goto cleanup;
    }
    if (create) {
        nt = rd_kafka_NewTopic_new(argv[3], atoi(argv[4]), 1, errstr,
                                   sizeof(errstr));
        if (!nt) {
            fprintf(stderr, "kafka_admin: %s\n", errstr);
            goto cleanup;
        }
        /* topic configs, e.g. max.message.bytes=20971520 */
        for (int i = 5; i < argc; i++) {
            char *eq = strchr(argv[i], '=');
            if (!eq) {
                fprintf(stderr, "kafka_admin: config '%s' is not NAME=VALUE\n",
                        argv[i]);
                goto cleanup;
            }
            *eq = '\0';
            if (rd_kafka_NewTopic_set_config(nt, argv[i], eq + 1)) {
                fprintf(stderr, "kafka_admin: cannot set config %s\n", argv[i]);
                goto cleanup;
            }
        }
        rd_kafka_CreateTopics(rk, &nt, 1, opts, queue);
    } else {
        dt = rd_kafka_DeleteTopic_new(argv[3]);
        rd_kafka_DeleteTopics(rk, &dt, 1, opts, queue);
    }
    rc = admin_wait(queue, create);

cleanup:
    if (nt)
        rd_kafka_NewTopic_destroy(nt);
    if (dt)
        rd_kafka_DeleteTopic_destroy(dt);
    if (opts)
        rd_kafka_AdminOptions_destroy(opts);
    if (queue)
        rd_kafka_queue_destroy(queue);
    if (rk)
        rd_kafka_destroy(rk);
    if (conf)
        rd_kafka_conf_destroy(conf);
    return rc;
}
