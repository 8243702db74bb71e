#include "consumer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "backlog.h"
#include "batch.h"
#include "dlq.h"
#include "httpd.h"
#include "kafka.h"
#include "lanes.h"
#include "log.h"
#include "metrics.h"
#include "neo4j.h"
#include "pgstatus.h"
#include "process.h"
#include "retry.h"
#include "schema.h"
#include "tombstone.h"
#include "writeback.h"

#define STATS_EVERY_MS 1000

/*
 * The loop's state. The pieces below it (lanes, batch, writeback,
 * deadletter, retry) own their own state and are handed what they need;
 * only this file knows the whole, and only it runs librdkafka's callbacks
 * (the rebalance, inside a poll: see common/README.md).
 */
struct consumer {
    const struct config *cfg;
    const struct mapping *map;
    volatile sig_atomic_t *stop;
    rd_kafka_t *rk;
    struct dlq *dlq;
    struct neo4j_client *nc;
    struct pg_status *ps;
    struct metrics metrics;
    struct httpd *httpd;            /* NULL when metrics.port is 0 */
    struct lanes lanes;
    struct batch batch;             /* being collected, then applied */
    struct backlog backlog;         /* delivered while not collecting */
    struct writeback *wb;           /* the last batch's, until it lands */
    struct retry_policy policy;
    struct retry_poller poller;     /* waits serve the consumer's poll */
    rd_kafka_topic_partition_list_t *wait_paused; /* paused by a wait */
    char stats_path[512];
    int64_t last_stats_ms;
    struct process_env env;         /* what process_batch() is handed */
    int applying;                   /* process_batch() is running */
    int revoked;                    /* a revoke hit the batch being applied:
                                       abandon it, commit nothing */
    int64_t next_prune_ms;          /* when to prune delete markers next */
    char fatal[512];                /* why the loop had to stop, or "" */
};

static void write_stats(struct consumer *c, int force);

/* Client-wide errors of the consumer (served by rd_kafka_consumer_poll on
 * the loop's thread); losing every broker makes the worker not ready
 * until they answer again (see write_stats). */
static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason,
                           void *opaque)
{
    struct consumer *c = opaque;

    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        metrics_target_seen(&c->metrics, METRICS_KAFKA, 0);
    kafka_log_error("kafka consumer", err, reason);
}

static rd_kafka_topic_partition_list_t *assignment(struct consumer *c)
{
    rd_kafka_topic_partition_list_t *parts = NULL;

    if (rd_kafka_assignment(c->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    return parts;
}

static int64_t *lane_lag(struct consumer *c, int64_t *lag)
{
    for (int l = 0; l < LANE__COUNT; l++)
        lag[l] = (int64_t)c->metrics.lanes[l].lag;
    return lag;
}

/* Keep a message that arrives while the loop cannot take it; a rewind
 * that fails means the worker must stop (see backlog.h). */
static void keep(struct consumer *c, rd_kafka_message_t *m)
{
    char why[512];

    if (backlog_keep(&c->backlog, c->rk, m,
                     lanes_of_topic(&c->lanes, rd_kafka_topic_name(m->rkt)),
                     why, sizeof(why))) {
        log_msg(NS_LOG_ERROR, "%s; stopping without committing past it", why);
        snprintf(c->fatal, sizeof(c->fatal), "%s", why);
        *c->stop = 1;
    }
}

/* Serve the consumer while a retry waits or a split runs; messages go
 * to the backlog. Non-zero when the wait should end. */
static int poll_while_waiting(void *opaque, int timeout_ms)
{
    struct consumer *c = opaque;
    rd_kafka_message_t *m;

    write_stats(c, 0); /* an outage shows in the counters as it happens */
    m = rd_kafka_consumer_poll(c->rk, timeout_ms);
    if (m && !m->err)
        keep(c, m);
    else if (m)
        rd_kafka_message_destroy(m);
    return *c->stop != 0 || c->revoked;
}

/* A retry's wait pauses every partition: nothing new is read while the
 * same batch waits to be tried again. Afterwards only what it paused is
 * resumed, where it stood: a partition assigned during the wait was never
 * paused, and resuming a fetching partition makes librdkafka 2.0 read it
 * again from its commit. */
static void pause_while_waiting(void *opaque, int paused)
{
    struct consumer *c = opaque;

    if (paused) {
        if (c->wait_paused)
            rd_kafka_topic_partition_list_destroy(c->wait_paused);
        c->wait_paused = assignment(c);
        if (c->wait_paused)
            rd_kafka_pause_partitions(c->rk, c->wait_paused);
        return;
    }
    if (!c->wait_paused)
        return;
    kafka_resume(c->rk, c->wait_paused);
    rd_kafka_topic_partition_list_destroy(c->wait_paused);
    c->wait_paused = NULL;
    backlog_repause(&c->backlog, c->rk);
    lanes_all_resumed(&c->lanes);
}

static void write_stats(struct consumer *c, int force)
{
    int64_t now = metrics_now_ms();

    metrics_heartbeat(&c->metrics);
    if ((!c->stats_path[0] && !c->httpd) ||
        (!force && now - c->last_stats_ms < STATS_EVERY_MS))
        return;
    c->last_stats_ms = now;
    if (c->metrics.down[METRICS_KAFKA]) {
        /* nothing tells us when the brokers are back: ask for metadata */
        const struct rd_kafka_metadata *md = NULL;
        if (rd_kafka_metadata(c->rk, 0, NULL, &md, 1000) ==
            RD_KAFKA_RESP_ERR_NO_ERROR) {
            metrics_target_seen(&c->metrics, METRICS_KAFKA, 1);
            rd_kafka_metadata_destroy(md);
        }
    }
    lanes_measure_lag(&c->lanes, c->rk, &c->metrics);
    if (c->stats_path[0] &&
        metrics_write_file(&c->metrics, c->cfg->worker, c->stats_path))
        log_msg(NS_LOG_WARN, "could not write stats file %s", c->stats_path);
}

/*
 * Rebalance callback, run inside a poll of the consumer loop: while a
 * batch is collected, while a retry waits, or during a split. On revoke,
 * messages of the revoked partitions that were not applied are dropped
 * before the partitions go: the backlog and a batch still being collected
 * lose them, and a batch being applied is marked revoked, so it is
 * abandoned uncommitted. Nothing is committed for a partition this worker
 * no longer owns; its new owner reads from the last commit. Both the
 * eager and the cooperative protocol are handled.
 */
static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct consumer *c = opaque;
    int coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t kerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    char why[512];

    backlog_forget(&c->backlog, parts);
    if (c->wait_paused && err != RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
        for (int i = 0; i < parts->cnt; i++)  /* gone: not to resume */
            rd_kafka_topic_partition_list_del(c->wait_paused,
                                              parts->elems[i].topic,
                                              parts->elems[i].partition);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        kafka_log_partitions("assigned", parts);
        if (coop)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            kerr = rd_kafka_assign(rk, parts);
        lanes_assigned(&c->lanes, rk, parts, coop);
    } else {
        if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
            log_msg(NS_LOG_WARN, "rebalance error: %s", rd_kafka_err2str(err));
        kafka_log_partitions(rd_kafka_assignment_lost(rk) ? "lost" : "revoked",
                       parts);
        /* commit the last batch while its partitions are still ours; on a
         * failure it stays pending (a later commit is safe, see writeback) */
        writeback_finish(c->wb, &c->policy, NULL, why, sizeof(why));
        if (c->applying) {
            if (batch_touches(&c->batch, parts))
                c->revoked = 1;
        } else {
            batch_drop_partitions(&c->batch, parts);
        }
        if (coop)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            kerr = rd_kafka_assign(rk, NULL);
    }
    if (error) {
        log_msg(NS_LOG_ERROR, "could not change the assignment: %s",
                rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (kerr) {
        log_msg(NS_LOG_ERROR, "could not change the assignment: %s",
                rd_kafka_err2str(kerr));
    }
}

static void add_to_batch(struct consumer *c, rd_kafka_message_t *m, int lane)
{
    int64_t lag[LANE__COUNT];

    batch_add(&c->batch, m, lane);
    lanes_seen(&c->lanes, c->rk, lane, lane_lag(c, lag));
}

/* Collect a batch: up to batch.max_events messages and batch.max_bytes,
 * waiting at most batch.max_ms after the first one. The backlog comes
 * first; a message that does not fit waits there for the next batch. */
static void collect(struct consumer *c)
{
    int64_t deadline = 0, lag[LANE__COUNT];
    size_t from = c->batch.count;
    char why[512];

    batch_take(&c->batch, &c->backlog.msgs);
    for (size_t i = from; i < c->batch.count; i++)
        lanes_seen(&c->lanes, c->rk, c->batch.lanes[i], lane_lag(c, lag));
    backlog_release(&c->backlog, c->rk);
    if (c->backlog.msgs.count || c->batch.count == c->batch.max_count)
        return;  /* the batch is full */
    if (c->batch.count)
        deadline = metrics_now_ms() + c->cfg->batch_max_ms;
    while (!*c->stop) {
        int64_t now = metrics_now_ms();
        int timeout = 100;
        rd_kafka_message_t *m;

        if (c->batch.count) {
            if (now >= deadline)
                break;
            timeout = (int)(deadline - now);
        } else {
            lanes_update(&c->lanes, c->rk, lane_lag(c, lag));
            write_stats(c, 0);
            if (writeback_pending(c->wb))
                timeout = 5; /* a write-back to land if nothing comes */
        }
        m = rd_kafka_consumer_poll(c->rk, timeout);
        if (!m) {
            /* idle: nothing to overlap the last write-back with, so land
             * it now (a failure leaves it pending for the next turn) */
            if (!c->batch.count) {
                writeback_finish(c->wb, &c->policy, &c->poller, why,
                                 sizeof(why));
                /* a retry inside kept messages: they go first, before
                 * anything newer of their partitions */
                if (c->backlog.msgs.count)
                    return;
            }
            continue;
        }
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                log_msg(NS_LOG_WARN, "kafka: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        metrics_target_seen(&c->metrics, METRICS_KAFKA, 1);
        if (!batch_fits(&c->batch, m)) {
            keep(c, m);  /* first of the next batch */
            break;
        }
        if (!c->batch.count)
            deadline = metrics_now_ms() + c->cfg->batch_max_ms;
        add_to_batch(c, m, lanes_of_topic(&c->lanes,
                                          rd_kafka_topic_name(m->rkt)));
        if (c->batch.count == c->batch.max_count)
            break;
    }
}

/* name, value pairs: ours, which the configuration's kafka.* override */
static const char *const kafka_defaults[] = {
    /* librdkafka prefetches up to 64 MB by default; a few batches ahead is
     * all the loop can use, and the bound keeps a worker's RSS small */
    "queued.max.messages.kbytes", "6144",
    "fetch.message.max.bytes", "524288",
    "fetch.max.bytes", "4194304",
    /* a killed instance's partitions move after 10 s, not librdkafka's 45 s
     * (heartbeats come from a background thread, so long batches are fine) */
    "session.timeout.ms", "10000",
    "heartbeat.interval.ms", "3000",
    "fetch.wait.max.ms", "100",
    NULL};

/* The consumer, subscribed to the worker's lane topics. */
static enum ns_err kafka_start(struct consumer *c, char *errstr,
                               size_t errstr_size)
{
    const char *const forced[] = {
        "group.id", c->cfg->group_id,
        "enable.auto.commit", "false",
        "auto.offset.reset", "earliest",
        "client.id", c->cfg->worker,
        NULL};
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_topic_partition_list_t *topics = NULL;
    char kerr[512];
    enum ns_err err;

    err = kafka_conf_new(kafka_defaults,
                         (const char *const *)c->cfg->kafka_props, forced, 0,
                         &conf, errstr, errstr_size);
    if (err)
        return err;
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kerr, sizeof(kerr));
    if (!c->rk) {
        rd_kafka_conf_destroy(conf);
        ns_err_set(errstr, errstr_size, "could not create Kafka consumer: "
                   "%s", kerr);
        return NS_ERR_CONFIG;
    }
    /* conf belongs to rk now */
    rd_kafka_poll_set_consumer(c->rk);
    topics = rd_kafka_topic_partition_list_new(LANE__COUNT);
    for (int l = 0; l < LANE__COUNT; l++) {
        if (!c->lanes.topics[l][0])
            continue;
        rd_kafka_topic_partition_list_add(topics, c->lanes.topics[l],
                                          RD_KAFKA_PARTITION_UA);
        log_msg(NS_LOG_INFO, "subscribing to %s", c->lanes.topics[l]);
    }
    if (rd_kafka_subscribe(c->rk, topics)) {
        ns_err_set(errstr, errstr_size, "could not subscribe to the lane "
                   "topics");
        err = NS_ERR_KAFKA;
    }
    rd_kafka_topic_partition_list_destroy(topics);
    return err;
}

enum ns_err consumer_new(const struct config *cfg, const struct mapping *map,
                         volatile sig_atomic_t *stop, struct consumer **out,
                         char *errstr, size_t errstr_size)
{
    struct consumer *c = calloc(1, sizeof(*c));
    char *conninfo = NULL;
    size_t most = (size_t)cfg->batch_max_events;
    enum ns_err err = NS_OK;

    *out = NULL;
    if (!c) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    c->cfg = cfg;
    c->map = map;
    c->stop = stop;
    c->policy = (struct retry_policy){cfg->retry_initial_ms, cfg->retry_max_ms};
    c->poller = (struct retry_poller){pause_while_waiting, poll_while_waiting,
                                      c};
    err = metrics_init(&c->metrics, cfg->lanes);
    if (!err)
        err = batch_init(&c->batch, most, (size_t)cfg->batch_max_bytes);
    if (!err)
        err = backlog_init(&c->backlog, 4 * most + 16,
                           (size_t)cfg->backlog_max_bytes);
    if (err) {
        ns_err_set(errstr, errstr_size, "out of memory");
        goto cleanup;
    }
    err = lanes_init(&c->lanes, map, cfg->worker, cfg->lanes, errstr,
                     errstr_size);
    if (err)
        goto cleanup;
    if (cfg->metrics_port) {
        /* the longest turn of a healthy loop: a Neo4j request that times
         * out, then the write-back and the DLQ flush */
        err = httpd_start(cfg->metrics_bind, cfg->metrics_port, &c->metrics,
                          cfg->worker, 2 * (int64_t)cfg->neo4j_timeout_ms +
                          30000, &c->httpd, errstr, errstr_size);
        if (err)
            goto cleanup;
    }
    if (cfg->stats_dir[0])
        snprintf(c->stats_path, sizeof(c->stats_path), "%s/%s-%d.json",
                 cfg->stats_dir, cfg->worker, (int)getpid());
    srand((unsigned)(time(NULL) ^ getpid()));

    err = kafka_start(c, errstr, errstr_size);
    if (err)
        goto cleanup;
    err = dlq_new((const char *const *)cfg->kafka_props, map->dlq_topic,
                  cfg->worker, &c->dlq, errstr, errstr_size);
    if (err)
        goto cleanup;
    err = neo4j_client_new(cfg->neo4j_url, cfg->neo4j_db, cfg->neo4j_user,
                           cfg->neo4j_password, cfg->neo4j_timeout_ms, &c->nc,
                           errstr, errstr_size);
    if (!err && cfg->neo4j_ca_file[0])
        err = neo4j_client_set_ca_file(c->nc, cfg->neo4j_ca_file, errstr,
                                       errstr_size);
    if (err)
        goto cleanup;
    neo4j_client_set_api(c->nc, (enum neo4j_api)cfg->neo4j_api);
    conninfo = config_pg_conninfo(cfg);
    if (!conninfo) {
        err = NS_ERR_NOMEM;
        ns_err_set(errstr, errstr_size, "out of memory");
        goto cleanup;
    }
    err = pg_status_new(conninfo, map, &c->ps, errstr, errstr_size);
    if (!err)
        /* a SUCCESS and a FAILED row at most per message: an applied
         * version of a link can also be folded into a failed one */
        err = writeback_new(c->ps, c->rk, &c->metrics, 2 * most, &c->wb,
                            errstr, errstr_size);
    c->env = (struct process_env){cfg, map, c->nc, c->dlq, c->wb, &c->metrics,
                                  &c->policy, &c->poller, &c->revoked};
    if (!err)
        err = schema_ensure(c->nc, map, cfg->neo4j_db, cfg->neo4j_user,
                            &c->policy, &c->poller, &c->metrics, errstr,
                            errstr_size);

cleanup:
    if (conninfo) {
        memset(conninfo, 0, strlen(conninfo));
        free(conninfo);
    }
    if (err) {
        consumer_free(c);
        return err;
    }
    *out = c;
    return NS_OK;
}

/*
 * Every tombstones.prune_every_s, between batches: delete this worker's
 * delete markers older than the horizon, a bounded number per turn so the
 * loop keeps turning; a full round comes back at once. A failure waits
 * for the next interval: markers only cost space.
 */
static void prune_markers(struct consumer *c)
{
    const int64_t limit = 2000;
    int64_t now = metrics_now_ms();
    size_t deleted = 0;
    char errstr[512];
    enum ns_err err;

    if (!c->cfg->tombstone_horizon_s || now < c->next_prune_ms)
        return;
    err = tombstone_prune(c->nc, c->map, c->cfg->worker,
                          (int64_t)time(NULL) * 1000 -
                              (int64_t)c->cfg->tombstone_horizon_s * 1000,
                          (size_t)limit, &deleted, errstr, sizeof(errstr));
    if (err)
        log_msg(NS_LOG_WARN, "could not prune delete markers: %s", errstr);
    else if (deleted)
        log_msg(NS_LOG_INFO, "pruned %zu delete markers older than %d s",
                deleted, c->cfg->tombstone_horizon_s);
    c->metrics.markers_pruned += deleted;
    c->next_prune_ms = !err && (int64_t)deleted == limit
                           ? now
                           : now + (int64_t)c->cfg->tombstone_prune_every_s *
                                       1000;
}

enum ns_err consumer_run(struct consumer *c, char *errstr, size_t errstr_size)
{
    enum ns_err err = NS_OK;
    char why[1024];

    log_msg(NS_LOG_INFO, "consuming as group %s, batches of up to %d events, "
            "%d bytes or %d ms", c->cfg->group_id, c->cfg->batch_max_events,
            c->cfg->batch_max_bytes, c->cfg->batch_max_ms);
    while (!*c->stop) {
        collect(c);
        if (!c->batch.count) {
            prune_markers(c);
            continue;
        }
        c->applying = 1;
        err = process_batch(&c->env, &c->batch, why, sizeof(why));
        c->applying = 0;
        if (c->revoked) {
            log_msg(NS_LOG_WARN, "abandoned a batch of %zu messages: its "
                    "partitions were revoked before it was applied; nothing "
                    "of it is committed", c->batch.count);
            c->revoked = 0;
            err = backlog_rewind(&c->backlog, c->rk, &c->batch, why,
                                 sizeof(why));
            if (err) {
                batch_clear(&c->batch);
                ns_err_set(errstr, errstr_size, "%s; stopping, so that the "
                           "partitions are read again from their last "
                           "commit", why);
                return err;
            }
        }
        batch_clear(&c->batch);
        if (err && err != NS_ERR_NEO4J_TRANSIENT && !*c->stop) {
            ns_err_set(errstr, errstr_size, "batch failed: %s: %s",
                       ns_err_str(err), why);
            return err;
        }
        write_stats(c, 0);
        prune_markers(c);
    }
    /* the last batch's write-back lands and its offsets are committed;
     * if PostgreSQL is down it is left uncommitted, for the next owner */
    if (writeback_finish(c->wb, &c->policy, &c->poller, why, sizeof(why)))
        log_msg(NS_LOG_WARN, "stopping with the last batch's sync status not "
                "written (%s); its offsets are not committed", why);
    write_stats(c, 1);
    if (c->fatal[0]) {
        /* not a clean stop: the next start must read what was not kept */
        ns_err_set(errstr, errstr_size, "%s", c->fatal);
        return NS_ERR_KAFKA;
    }
    log_msg(NS_LOG_INFO, "stopping: the last batch is committed");
    return NS_OK;
}

void consumer_free(struct consumer *c)
{
    if (!c)
        return;
    httpd_free(c->httpd); /* first: its thread reads the metrics */
    /* Leave the group first: the revoke callback runs in there and still
     * looks at the batch and the backlog. Messages go before the handle. */
    if (c->rk)
        rd_kafka_consumer_close(c->rk);
    writeback_free(c->wb); /* not landed: left uncommitted */
    batch_free(&c->batch);
    backlog_free(&c->backlog);
    if (c->wait_paused)
        rd_kafka_topic_partition_list_destroy(c->wait_paused);
    if (c->rk)
        rd_kafka_destroy(c->rk);
    dlq_free(c->dlq);
    neo4j_client_free(c->nc);
    pg_status_free(c->ps);
    metrics_destroy(&c->metrics);
    free(c);
}
