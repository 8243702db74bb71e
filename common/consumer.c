#include "consumer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>

#include "apply.h"
#include "buf.h"
#include "change.h"
#include "cypher.h"
#include "dlq.h"
#include "event.h"
#include "httpd.h"
#include "log.h"
#include "metrics.h"
#include "neo4j.h"
#include "pgstatus.h"
#include "tombstone.h"

/* A lane counts as busy this long after its last message. */
#define LANE_HOLD_MS 300
#define STATS_EVERY_MS 1000

/* What became of one Kafka message of the batch. */
struct item {
    rd_kafka_message_t *msg;
    int lane;
    struct event *ev;
    int dead;                       /* goes to the DLQ */
    enum ns_err error_class;
    char reason[512];
    const struct mapping_table *tbl;  /* known table, for FAILED write-back */
    char keys[2][64];
    int has_keys;
    int64_t source_ts_ms;           /* source.ts_ms, for the sync latency:
                                       ev is freed before the round trip */
    int has_change;                 /* a change was built from it: its row
                                       identity is in change_key */
    char change_key[CHANGE_KEY_MAX];
};

/* A row of the write-back, copied out of the batch it came from. */
struct saved_row {
    char keys[2][64];
    char element_id[96];
};

/*
 * The write-back of an applied batch, in flight while the next batch is
 * applied to Neo4j; the batch's offsets are committed once it has landed.
 * Committing late is safe even after a rebalance: the offsets only ever
 * move past events this worker applied and wrote back.
 */
struct writeback {
    int active;                      /* rows and offsets wait for the write */
    int busy;                        /* writeback_finish() is running */
    struct pg_status_row *rows;
    struct saved_row *saved;         /* the strings rows point to */
    size_t n;
    rd_kafka_topic_partition_list_t *offsets;
    uint64_t lanes[LANE__COUNT];     /* for retry metrics */
    int64_t sent_ms;
};

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
    uint64_t batch_lanes[LANE__COUNT]; /* messages of the batch per lane */
    char stats_path[512];
    int64_t last_stats_ms;
    int64_t lane_seen_ms[LANE__COUNT];
    int paused_below;               /* lanes >= this are paused */

    rd_kafka_message_t **msgs;      /* the batch being collected */
    size_t msg_count;
    rd_kafka_message_t **pending;   /* delivered while backing off */
    size_t pending_count;
    size_t pending_cap;
    int out_of_memory;
    size_t cap;
    int applying;                   /* process_batch() is running */
    struct writeback wb;            /* the last batch's, until it lands */
    int revoked;                    /* a revoke hit the batch being applied:
                                       abandon it, commit nothing */
    int64_t next_prune_ms;          /* when to prune delete markers next */
};

/* The lane of one of the worker's topics, -1 for any other topic. Compared
 * with the mapping's topic names, since the prefix may hold dots. */
static int topic_lane(const struct consumer *c, const char *topic)
{
    char name[256];

    for (int l = 0; l < LANE__COUNT; l++)
        if (mapping_topic(c->map, (enum mapping_lane)l, c->cfg->worker, name,
                          sizeof(name)) == NS_OK &&
            strcmp(name, topic) == 0)
            return l;
    return -1;
}

static void write_stats(struct consumer *c, int force);
static enum ns_err writeback_finish(struct consumer *c, int may_retry);

/* Client-wide errors of the consumer (served by rd_kafka_consumer_poll on
 * the loop's thread): logged in our format; losing every broker makes the
 * worker not ready until they answer again (see write_stats). */
static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason,
                           void *opaque)
{
    struct consumer *c = opaque;

    (void)rk;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
        metrics_target_seen(&c->metrics, METRICS_KAFKA, 0);
    log_msg(err == RD_KAFKA_RESP_ERR__FATAL ? LOG_ERROR : LOG_WARN,
            "kafka consumer: %s: %s",
            rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* librdkafka's own log lines, in our format (JSON lines too); called from
 * its threads, which log.c allows. */
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac,
                         const char *buf)
{
    enum log_level lvl = log_level_from_syslog(level);

    (void)rk;
    if (log_enabled(lvl))
        log_msg(lvl, "rdkafka %s: %s", fac, buf);
}

static rd_kafka_topic_partition_list_t *assignment(struct consumer *c)
{
    rd_kafka_topic_partition_list_t *parts = NULL;

    if (rd_kafka_assignment(c->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NULL;
    return parts;
}

/* Keep messages that arrive while we are not collecting a batch. Never
 * drop one: a later message of its partition could then be committed past
 * it. Without memory to keep it, stop: nothing after the last commit is
 * lost, the next start reads it again. */
static void stash(struct consumer *c, rd_kafka_message_t *m)
{
    if (c->pending_count == c->pending_cap) {
        size_t cap = c->pending_cap * 2;
        rd_kafka_message_t **grown = realloc(c->pending, cap * sizeof(*grown));

        if (!grown) {
            char key[128];
            log_event(LOG_ERROR, rd_kafka_topic_name(m->rkt), m->partition,
                      m->offset, log_key_text(m->key, m->key_len, key,
                                              sizeof(key)),
                      "out of memory for the backlog; "
                      "stopping without committing past this message");
            rd_kafka_message_destroy(m);
            c->out_of_memory = 1;
            *c->stop = 1;
            return;
        }
        c->pending = grown;
        c->pending_cap = cap;
    }
    c->pending[c->pending_count++] = m;
}

/* Pause all partitions, wait with exponential backoff and jitter, resume.
 * Returns non-zero when asked to stop meanwhile, or when a rebalance
 * revoked partitions of the batch being applied (it must be abandoned). */
static int backoff(struct consumer *c, int attempt, const char *what)
{
    rd_kafka_topic_partition_list_t *parts = assignment(c);
    int64_t delay = c->cfg->retry_initial_ms;
    int64_t until;

    for (int i = 0; i < attempt && delay < c->cfg->retry_max_ms; i++)
        delay *= 2;
    if (delay > c->cfg->retry_max_ms)
        delay = c->cfg->retry_max_ms;
    delay = delay / 2 + rand() % (delay / 2 + 1);
    log_msg(LOG_WARN, "%s; retry %d in %lld ms", what, attempt + 1,
            (long long)delay);
    if (parts)
        rd_kafka_pause_partitions(c->rk, parts);
    until = metrics_now_ms() + delay;
    while (!*c->stop && !c->revoked && metrics_now_ms() < until) {
        rd_kafka_message_t *m;

        write_stats(c, 0); /* an outage shows in the counters as it happens */
        m = rd_kafka_consumer_poll(c->rk, 100);
        if (m && !m->err)
            stash(c, m);
        else if (m)
            rd_kafka_message_destroy(m);
    }
    if (parts) {
        rd_kafka_resume_partitions(c->rk, parts);
        rd_kafka_topic_partition_list_destroy(parts);
    }
    c->paused_below = LANE__COUNT;
    return *c->stop != 0 || c->revoked;
}

static void write_stats(struct consumer *c, int force)
{
    int64_t now = metrics_now_ms();
    rd_kafka_topic_partition_list_t *parts;
    int64_t lag[LANE__COUNT] = {0};
    struct metrics_partition *plag = NULL;
    size_t nplag = 0;

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
    parts = assignment(c);
    if (parts && parts->cnt)
        plag = calloc((size_t)parts->cnt, sizeof(*plag));
    if (parts && parts->cnt) {
        rd_kafka_position(c->rk, parts);
        /* Before the first message of a partition its position is unknown:
         * the committed offset is where consumption will start. */
        for (int i = 0; i < parts->cnt; i++)
            if (parts->elems[i].offset < 0) {
                rd_kafka_committed(c->rk, parts, 2000);
                break;
            }
        for (int i = 0; i < parts->cnt; i++) {
            rd_kafka_topic_partition_t *tp = &parts->elems[i];
            int64_t lo = 0, hi = 0;
            int lane = topic_lane(c, tp->topic);
            if (lane < 0 ||
                rd_kafka_get_watermark_offsets(c->rk, tp->topic, tp->partition,
                                               &lo, &hi))
                continue;
            lag[lane] += tp->offset >= 0 ? hi - tp->offset : hi - lo;
            if (plag) {
                struct metrics_partition *pl = &plag[nplag++];
                snprintf(pl->topic, sizeof(pl->topic), "%s", tp->topic);
                pl->partition = tp->partition;
                pl->lane = lane;
                pl->lag = tp->offset >= 0 ? hi - tp->offset : hi - lo;
                if (pl->lag < 0)
                    pl->lag = 0;
            }
        }
    }
    if ((parts && parts->cnt && !plag) ||
        metrics_partitions_set(&c->metrics, plag, nplag,
                               parts ? parts->cnt : 0))
        log_msg(LOG_WARN, "could not record partition lag: out of memory");
    free(plag);
    for (int l = 0; l < LANE__COUNT; l++)
        c->metrics.lanes[l].lag = lag[l] > 0 ? lag[l] : 0;
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
    if (c->stats_path[0] &&
        metrics_write_file(&c->metrics, c->cfg->worker, c->stats_path))
        log_msg(LOG_WARN, "could not write stats file %s", c->stats_path);
}

/* Drop the messages of the partitions in parts from list; new count. */
static size_t drop_partitions(rd_kafka_message_t **list, size_t n,
                              rd_kafka_topic_partition_list_t *parts)
{
    size_t kept = 0;

    for (size_t i = 0; i < n; i++) {
        rd_kafka_message_t *m = list[i];
        if (rd_kafka_topic_partition_list_find(
                parts, rd_kafka_topic_name(m->rkt), m->partition)) {
            rd_kafka_message_destroy(m);
            continue;
        }
        list[kept++] = m;
    }
    return kept;
}

/* Non-zero when a message of the batch belongs to one of parts. */
static int batch_touches(const struct consumer *c,
                         rd_kafka_topic_partition_list_t *parts)
{
    for (size_t i = 0; i < c->msg_count; i++)
        if (rd_kafka_topic_partition_list_find(
                parts, rd_kafka_topic_name(c->msgs[i]->rkt),
                c->msgs[i]->partition))
            return 1;
    return 0;
}

static void log_partitions(const char *what,
                           const rd_kafka_topic_partition_list_t *parts)
{
    struct buf text;
    int shown = 0;

    if (!log_enabled(LOG_INFO))
        return;
    buf_init(&text, 4096);
    for (; shown < parts->cnt; shown++)
        if (buf_addf(&text, "%s%s[%d]", shown ? " " : "",
                     parts->elems[shown].topic,
                     (int)parts->elems[shown].partition))
            break;
    log_msg(LOG_INFO, "partitions %s (%d): %s%s", what, parts->cnt,
            buf_str(&text), shown < parts->cnt ? " ..." : "");
    buf_free(&text);
}

/*
 * Rebalance callback, run inside a poll of the consumer loop. A batch is
 * only ever polled around while it is collected (collect) or while its
 * application waits to be retried (backoff). On revoke, messages of the
 * revoked partitions that were not applied are dropped before the
 * partitions go: the stash and a batch still being collected lose them,
 * and a batch being applied is marked revoked, so backoff gives up and
 * the batch is abandoned uncommitted. Nothing is committed for a partition
 * this worker no longer owns; its new owner reads from the last commit.
 * Both the eager and the cooperative protocol are handled.
 */
static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct consumer *c = opaque;
    int coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t kerr = RD_KAFKA_RESP_ERR_NO_ERROR;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        log_partitions("assigned", parts);
        if (coop)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            kerr = rd_kafka_assign(rk, parts);
        /* A partition paused here before (lane priority, backoff) and
         * given back must not stay paused: start new ones unpaused and
         * let update_lanes() decide again. */
        rd_kafka_resume_partitions(rk, parts);
        if (coop && c->paused_below < LANE__COUNT) {
            rd_kafka_topic_partition_list_t *pause =
                rd_kafka_topic_partition_list_new(parts->cnt);
            for (int i = 0; i < parts->cnt; i++)
                if (topic_lane(c, parts->elems[i].topic) >= c->paused_below)
                    rd_kafka_topic_partition_list_add(
                        pause, parts->elems[i].topic,
                        parts->elems[i].partition);
            if (pause->cnt)
                rd_kafka_pause_partitions(rk, pause);
            rd_kafka_topic_partition_list_destroy(pause);
        } else {
            c->paused_below = LANE__COUNT;
        }
    } else {
        if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
            log_msg(LOG_WARN, "rebalance error: %s", rd_kafka_err2str(err));
        log_partitions(rd_kafka_assignment_lost(rk) ? "lost" : "revoked",
                       parts);
        /* commit the last batch while its partitions are still ours; on a
         * failure it stays pending (a later commit is safe, see writeback) */
        writeback_finish(c, 0);
        if (c->applying) {
            if (batch_touches(c, parts))
                c->revoked = 1;
        } else {
            c->msg_count = drop_partitions(c->msgs, c->msg_count, parts);
        }
        c->pending_count = drop_partitions(c->pending, c->pending_count,
                                           parts);
        if (coop)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            kerr = rd_kafka_assign(rk, NULL);
    }
    if (error) {
        log_msg(LOG_ERROR, "could not change the assignment: %s",
                rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (kerr) {
        log_msg(LOG_ERROR, "could not change the assignment: %s",
                rd_kafka_err2str(kerr));
    }
}

/*
 * After a batch was abandoned because a rebalance revoked some of its
 * partitions: the partitions of the batch that are still assigned (a
 * cooperative rebalance) are rewound to the batch's first message, so
 * nothing after the last commit is skipped. With the eager protocol every
 * partition was revoked and the new assignment starts from the commits.
 */
static void batch_rewind(struct consumer *c)
{
    rd_kafka_topic_partition_list_t *parts = assignment(c);
    rd_kafka_topic_partition_list_t *seek = NULL;
    rd_kafka_error_t *error;

    log_msg(LOG_WARN, "abandoned a batch of %zu messages: its partitions "
            "were revoked before it was applied; nothing of it is committed",
            c->msg_count);
    if (!parts || !parts->cnt)
        goto cleanup;
    seek = rd_kafka_topic_partition_list_new(parts->cnt);
    for (size_t i = 0; i < c->msg_count; i++) {
        rd_kafka_message_t *m = c->msgs[i];
        const char *topic = rd_kafka_topic_name(m->rkt);
        rd_kafka_topic_partition_t *tp;

        if (!rd_kafka_topic_partition_list_find(parts, topic, m->partition))
            continue;
        tp = rd_kafka_topic_partition_list_find(seek, topic, m->partition);
        if (!tp) {
            tp = rd_kafka_topic_partition_list_add(seek, topic, m->partition);
            tp->offset = m->offset;
        } else if (m->offset < tp->offset) {
            tp->offset = m->offset;
        }
    }
    if (!seek->cnt)
        goto cleanup;
    /* what was stashed for them comes again after the seek */
    c->pending_count = drop_partitions(c->pending, c->pending_count, seek);
    error = rd_kafka_seek_partitions(c->rk, seek, 5000);
    if (error) {
        log_msg(LOG_ERROR, "could not rewind the partitions of an abandoned "
                "batch: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    }
cleanup:
    c->revoked = 0;
    if (seek)
        rd_kafka_topic_partition_list_destroy(seek);
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
}

/*
 * Lane priority: while a higher lane is busy (a message seen recently, or
 * a known backlog), pause the partitions of every lower lane. Messages of
 * paused partitions already fetched are discarded by librdkafka and read
 * again after resume, from the last delivered offset.
 */
static void update_lanes(struct consumer *c)
{
    int64_t now = metrics_now_ms();
    int top = LANE__COUNT - 1, want;
    rd_kafka_topic_partition_list_t *parts, *pause, *resume;

    for (int l = 0; l < LANE__COUNT; l++)
        if (c->cfg->lanes[l] && (now - c->lane_seen_ms[l] < LANE_HOLD_MS ||
                                 c->metrics.lanes[l].lag > 0)) {
            top = l;
            break;
        }
    want = top + 1;  /* lanes numerically above top are lower priority */
    if (want == c->paused_below)
        return;
    parts = assignment(c);
    if (!parts)
        return;
    pause = rd_kafka_topic_partition_list_new(parts->cnt);
    resume = rd_kafka_topic_partition_list_new(parts->cnt);
    /* Touch only partitions whose state changes: resuming an active
     * partition makes librdkafka drop what it prefetched for it. */
    for (int i = 0; i < parts->cnt; i++) {
        int lane = topic_lane(c, parts->elems[i].topic);
        int now_paused = lane >= want, was_paused = lane >= c->paused_below;
        if (now_paused != was_paused)
            rd_kafka_topic_partition_list_add(now_paused ? pause : resume,
                                              parts->elems[i].topic,
                                              parts->elems[i].partition);
    }
    if (pause->cnt)
        rd_kafka_pause_partitions(c->rk, pause);
    if (resume->cnt) {
        /* librdkafka 2.0 may fetch a resumed partition again from its
         * committed offset; seek to what was delivered instead, so the
         * lanes are not read twice. */
        rd_kafka_topic_partition_list_t *seek =
            rd_kafka_topic_partition_list_new(resume->cnt);
        rd_kafka_position(c->rk, resume);
        rd_kafka_resume_partitions(c->rk, resume);
        for (int i = 0; i < resume->cnt; i++)
            if (resume->elems[i].offset >= 0)
                rd_kafka_topic_partition_list_add(seek, resume->elems[i].topic,
                                                  resume->elems[i].partition)
                    ->offset = resume->elems[i].offset;
        if (seek->cnt) {
            rd_kafka_error_t *error = rd_kafka_seek_partitions(c->rk, seek,
                                                               5000);
            if (error) {
                log_msg(LOG_WARN, "could not seek resumed partitions: %s",
                        rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
            }
        }
        rd_kafka_topic_partition_list_destroy(seek);
    }
    log_msg(LOG_DEBUG, "lane priority: serving lanes up to %s, %d partitions "
            "paused", mapping_lane_name((enum mapping_lane)top), pause->cnt);
    c->paused_below = want;
    rd_kafka_topic_partition_list_destroy(pause);
    rd_kafka_topic_partition_list_destroy(resume);
    rd_kafka_topic_partition_list_destroy(parts);
}

static void add_to_batch(struct consumer *c, rd_kafka_message_t *m)
{
    int lane = topic_lane(c, rd_kafka_topic_name(m->rkt));

    c->msgs[c->msg_count++] = m;
    if (lane < 0)
        return;
    c->lane_seen_ms[lane] = metrics_now_ms();
    /* a message of a lane above every paused one: pause the lower lanes
     * now, before more of their prefetched messages are delivered */
    if (lane + 1 < c->paused_below)
        update_lanes(c);
}

/* Collect up to batch_max_events messages, waiting at most batch_max_ms
 * after the first one. */
static void collect(struct consumer *c)
{
    int64_t deadline = 0;

    while (c->pending_count && c->msg_count < c->cap) {
        add_to_batch(c, c->pending[0]);
        memmove(c->pending, c->pending + 1,
                --c->pending_count * sizeof(*c->pending));
    }
    if (c->msg_count)
        deadline = metrics_now_ms() + c->cfg->batch_max_ms;
    while (!*c->stop && c->msg_count < (size_t)c->cfg->batch_max_events) {
        int64_t now = metrics_now_ms();
        int timeout = 100;
        rd_kafka_message_t *m;

        if (c->msg_count) {
            if (now >= deadline)
                break;
            timeout = (int)(deadline - now);
        } else {
            update_lanes(c);
            write_stats(c, 0);
            if (c->wb.active)
                timeout = 5; /* a write-back to land if nothing comes */
        }
        m = rd_kafka_consumer_poll(c->rk, timeout);
        if (!m) {
            /* idle: nothing to overlap the last write-back with, so land
             * it now (a failure leaves it pending for the next turn) */
            if (!c->msg_count)
                writeback_finish(c, 1);
            continue;
        }
        if (m->err) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                log_msg(LOG_WARN, "kafka: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        if (!c->msg_count)
            deadline = metrics_now_ms() + c->cfg->batch_max_ms;
        metrics_target_seen(&c->metrics, METRICS_KAFKA, 1);
        add_to_batch(c, m);
    }
}

static void item_dead(struct item *it, enum ns_err cls, const char *reason)
{
    it->dead = 1;
    it->error_class = cls;
    snprintf(it->reason, sizeof(it->reason), "%s", reason);
}

/* Best effort: the table and key of a bad event, for its FAILED status. */
static void item_keys_from_event(struct item *it)
{
    const cJSON *img;

    if (!it->tbl || !it->ev || it->tbl->kind == MAPPING_NONE)
        return;
    img = event_row(it->ev);
    for (size_t k = 0; img && k < it->tbl->key_count; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(
            img, it->tbl->key_columns[k]);
        if (!cJSON_IsString(v) || strlen(v->valuestring) >= sizeof(it->keys[k]))
            return;
        snprintf(it->keys[k], sizeof(it->keys[k]), "%s", v->valuestring);
    }
    it->has_keys = img != NULL;
}

/* Parse and map message i into *change, or give it a DLQ reason. Returns
 * 1 when *change was filled. */
static int prepare_one(struct consumer *c, struct item *it, size_t i,
                       struct change *change)
{
    rd_kafka_message_t *m = c->msgs[i];
    enum change_result res;
    char why[512];
    enum ns_err err;

    memset(it, 0, sizeof(*it));
    it->msg = m;
    it->lane = topic_lane(c, rd_kafka_topic_name(m->rkt));
    if (it->lane < 0)
        it->lane = LANE_LOW;
    c->metrics.lanes[it->lane].consumed++;
    c->batch_lanes[it->lane]++;
    if (event_is_tombstone(m->payload, m->len)) {
        c->metrics.lanes[it->lane].skipped++;
        return 0;
    }
    err = event_parse(m->payload, m->len, &it->ev, why, sizeof(why));
    if (err) {
        item_dead(it, err, why);
        return 0;
    }
    it->source_ts_ms = it->ev->ts_ms;
    /* a table of the same name in another schema is not ours */
    if (it->ev->schema[0] && c->map->pg_schema &&
        strcmp(it->ev->schema, c->map->pg_schema) != 0) {
        snprintf(why, sizeof(why), "schema %.100s is not the mapped "
                 "schema %s", it->ev->schema, c->map->pg_schema);
        item_dead(it, NS_ERR_SCHEMA, why);
        return 0;
    }
    it->tbl = mapping_find(c->map, it->ev->table);
    if (!it->tbl || strcmp(it->tbl->worker, c->cfg->worker) != 0) {
        snprintf(why, sizeof(why), "table %.100s is not mapped to worker "
                 "%s", it->ev->table, c->cfg->worker);
        it->tbl = NULL;
        item_dead(it, NS_ERR_SCHEMA, why);
        return 0;
    }
    err = change_from_event(c->map, it->tbl, it->ev,
                            config_source_epoch(c->cfg, it->ev->ts_ms), i,
                            change, &res, why, sizeof(why));
    if (err) {
        item_dead(it, err, why);
        item_keys_from_event(it);
        return 0;
    }
    if (res == CHANGE_SKIP) {
        c->metrics.lanes[it->lane].skipped++;
        return 0;
    }
    /* its row, should the change it is folded into fail */
    it->has_change = 1;
    memcpy(it->change_key, change->key, sizeof(it->change_key));
    memcpy(it->keys, change->key_values, sizeof(it->keys));
    it->has_keys = 1;
    return 1;
}

/* Parse and map every message: changes for Neo4j, or a DLQ reason. */
static size_t prepare(struct consumer *c, struct item *items,
                      struct change *changes)
{
    size_t nch = 0;

    memset(c->batch_lanes, 0, sizeof(c->batch_lanes));
    for (size_t i = 0; i < c->msg_count; i++) {
        nch += (size_t)prepare_one(c, &items[i], i, &changes[nch]);
        /* The change owns copies of what it needs: a parsed event is a
         * tree many times the size of its row, so never hold a batch of
         * them at once. */
        event_free(items[i].ev);
        items[i].ev = NULL;
    }
    return nch;
}

static void writeback_clear(struct writeback *wb)
{
    for (size_t i = 0; i < wb->n; i++)
        if (wb->rows[i].outcome == PG_STATUS_FAILED)
            free((char *)wb->rows[i].error);
    free(wb->rows);
    free(wb->saved);
    if (wb->offsets)
        rd_kafka_topic_partition_list_destroy(wb->offsets);
    memset(wb, 0, sizeof(*wb));
}

/* The offsets after the batch's messages, per partition. */
static rd_kafka_topic_partition_list_t *batch_offsets(const struct consumer *c)
{
    rd_kafka_topic_partition_list_t *offs =
        rd_kafka_topic_partition_list_new((int)c->msg_count);

    for (size_t i = 0; offs && i < c->msg_count; i++) {
        rd_kafka_message_t *m = c->msgs[i];
        rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_find(
            offs, rd_kafka_topic_name(m->rkt), m->partition);
        if (!tp)
            tp = rd_kafka_topic_partition_list_add(
                offs, rd_kafka_topic_name(m->rkt), m->partition);
        if (m->offset + 1 > tp->offset)
            tp->offset = m->offset + 1;
    }
    return offs;
}

static void commit_offsets(struct consumer *c,
                           rd_kafka_topic_partition_list_t *offs)
{
    rd_kafka_resp_err_t kerr = rd_kafka_commit(c->rk, offs, 0);

    if (kerr)
        /* The events were applied; whoever reads them again re-applies
         * them idempotently. */
        log_msg(LOG_WARN, "could not commit offsets: %s", rd_kafka_err2str(kerr));
}

/* Copy the rows of the batch's write-back into wb: SUCCESS for the applied
 * upserts, FAILED for the dead events whose row is known. */
static enum ns_err writeback_rows(struct consumer *c, struct writeback *wb,
                                  const struct item *items,
                                  const struct change *changes,
                                  const struct apply_result *results,
                                  size_t nch)
{
    size_t cap = c->msg_count + nch + 1;

    wb->rows = calloc(cap, sizeof(*wb->rows));
    wb->saved = calloc(cap, sizeof(*wb->saved));
    if (!wb->rows || !wb->saved)
        return NS_ERR_NOMEM;
    for (size_t i = 0; i < nch; i++) {
        const struct change *ch = &changes[i];
        struct pg_status_row *row = &wb->rows[wb->n];
        struct saved_row *sv = &wb->saved[wb->n];

        if (results[i].status != APPLY_APPLIED || ch->action != CHANGE_UPSERT)
            continue;
        memcpy(sv->keys, ch->key_values, sizeof(sv->keys));
        memcpy(sv->element_id, results[i].element_id, sizeof(sv->element_id));
        row->tbl = ch->tbl;
        row->outcome = PG_STATUS_SUCCESS;
        row->keys[0] = sv->keys[0];
        row->keys[1] = ch->tbl->key_count > 1 ? sv->keys[1] : NULL;
        row->version = ch->version;
        row->element_id = sv->element_id[0] ? sv->element_id : NULL;
        wb->n++;
    }
    for (size_t i = 0; i < c->msg_count; i++) {
        const struct item *it = &items[i];
        struct pg_status_row *row = &wb->rows[wb->n];
        struct saved_row *sv = &wb->saved[wb->n];

        if (!it->dead || !it->has_keys || !it->tbl)
            continue;
        row->error = strdup(it->reason);
        if (!row->error)
            return NS_ERR_NOMEM;
        memcpy(sv->keys, it->keys, sizeof(sv->keys));
        row->tbl = it->tbl;
        row->outcome = PG_STATUS_FAILED;
        row->keys[0] = sv->keys[0];
        row->keys[1] = it->tbl->key_count > 1 ? sv->keys[1] : NULL;
        wb->n++;
    }
    return NS_OK;
}

/*
 * The write-back in flight lands, then its batch's offsets are committed.
 * A transient failure is retried with backoff when may_retry (not from
 * the rebalance callback, which must not poll); without it, or when asked
 * to stop, the write-back stays pending, uncommitted, for a later call.
 * A permanent one loses only bookkeeping: logged, and the offsets are
 * committed. Returns NS_OK once the batch is committed (or nothing was
 * pending).
 */
static enum ns_err writeback_finish(struct consumer *c, int may_retry)
{
    struct writeback *wb = &c->wb;
    char errstr[512];
    enum ns_err err;
    int64_t t0 = metrics_now_ms();

    if (!wb->active || wb->busy)
        return NS_OK;
    wb->busy = 1;
    if (pg_status_in_flight(c->ps))
        err = pg_status_wait(c->ps, errstr, sizeof(errstr));
    else
        err = pg_status_write(c->ps, wb->rows, wb->n, errstr, sizeof(errstr));
    for (int attempt = 0; err == NS_ERR_PG_TRANSIENT && may_retry; attempt++) {
        char what[600];

        metrics_target_seen(&c->metrics, METRICS_PG, 0);
        metrics_retry(&c->metrics, METRICS_PG, wb->lanes);
        snprintf(what, sizeof(what), "could not write sync status to "
                 "PostgreSQL: %s", errstr);
        if (backoff(c, attempt, what))
            break;
        err = pg_status_write(c->ps, wb->rows, wb->n, errstr, sizeof(errstr));
    }
    c->metrics.pg_ms_total += (double)(metrics_now_ms() - t0);
    log_msg(LOG_DEBUG, "write-back of %zu rows landed %lld ms after it was "
            "sent, after a wait of %lld ms", wb->n,
            (long long)(metrics_now_ms() - wb->sent_ms),
            (long long)(metrics_now_ms() - t0));
    metrics_hist_observe(&c->metrics.pg_seconds,
                         (double)(metrics_now_ms() - t0) / 1000.0);
    metrics_target_seen(&c->metrics, METRICS_PG, err != NS_ERR_PG_TRANSIENT);
    wb->busy = 0;
    if (err && err != NS_ERR_PG_TRANSIENT && err != NS_ERR_PG_PERMANENT)
        log_msg(LOG_ERROR, "could not write sync status: %s", ns_err_str(err));
    if (err && err != NS_ERR_PG_PERMANENT)
        return may_retry ? err : NS_OK;  /* pending: not committed */
    if (err == NS_ERR_PG_PERMANENT)
        /* The graph is right; only the bookkeeping is lost. Loud, not fatal. */
        log_msg(LOG_ERROR, "could not write sync status: %s", errstr);
    else
        c->metrics.writeback_rows += wb->n;
    commit_offsets(c, wb->offsets);
    writeback_clear(wb);
    return NS_OK;
}

/* Start the batch's write-back; its offsets are committed when it lands
 * (writeback_finish), after the previous one's. */
static enum ns_err writeback_start(struct consumer *c, const struct item *items,
                                   const struct change *changes,
                                   const struct apply_result *results,
                                   size_t nch)
{
    struct writeback *wb = &c->wb;
    char errstr[512];
    enum ns_err err;

    err = writeback_finish(c, 1); /* normally landed already */
    if (err)
        return err;
    err = writeback_rows(c, wb, items, changes, results, nch);
    if (!err) {
        wb->offsets = batch_offsets(c);
        if (!wb->offsets)
            err = NS_ERR_NOMEM;
    }
    if (err) {
        writeback_clear(wb);
        return err;
    }
    memcpy(wb->lanes, c->batch_lanes, sizeof(wb->lanes));
    wb->active = 1;
    wb->sent_ms = metrics_now_ms();
    /* A send that fails leaves nothing in flight: finish writes again. */
    if (pg_status_send(c->ps, wb->rows, wb->n, errstr, sizeof(errstr)))
        log_msg(LOG_DEBUG, "write-back not sent yet: %s", errstr);
    return NS_OK;
}

static enum ns_err send_dead_letters(struct consumer *c, struct item *items)
{
    char errstr[512];
    enum ns_err err = NS_OK;
    int any = 0;

    for (int attempt = 0;; attempt++) {
        err = NS_OK;
        for (size_t i = 0; !err && i < c->msg_count; i++) {
            struct item *it = &items[i];
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
            if (attempt == 0) {
                /* the entity key when known, else the message's key */
                char key[160];
                if (it->has_keys)
                    snprintf(key, sizeof(key), "%s%s%s", it->keys[0],
                             it->keys[1][0] ? "/" : "", it->keys[1]);
                else
                    log_key_text(it->msg->key, it->msg->key_len, key,
                                 sizeof(key));
                log_event(LOG_WARN, src.topic, src.partition, src.offset,
                          it->has_keys || it->msg->key_len ? key : NULL,
                          "event sent to the DLQ: %s", it->reason);
            }
            err = dlq_send(c->dlq, &src, it->error_class, it->reason, errstr,
                           sizeof(errstr));
        }
        if (!err && any)
            err = dlq_flush(c->dlq, 30000, errstr, sizeof(errstr));
        metrics_target_seen(&c->metrics, METRICS_KAFKA, !err);
        if (!err)
            break;
        metrics_retry(&c->metrics, METRICS_KAFKA, c->batch_lanes);
        char what[600];
        snprintf(what, sizeof(what), "could not send to the DLQ: %s", errstr);
        if (backoff(c, attempt, what))
            return NS_ERR_KAFKA;
    }
    for (size_t i = 0; i < c->msg_count; i++)
        if (items[i].dead)
            c->metrics.lanes[items[i].lane].dlq++;
    return NS_OK;
}

/*
 * The change ch failed for good: every message folded into it (the same
 * row, coalesced away) goes to the DLQ too, each with its own position,
 * since it was never applied and may carry values (TOASTed columns) that
 * the surviving message lacks.
 */
static void dead_letter_folded(struct consumer *c, struct item *items,
                               const struct change *ch, const char *reason)
{
    const rd_kafka_message_t *m = items[ch->msg_index].msg;
    char why[512];

    snprintf(why, sizeof(why), "folded into the change at %s[%d]@%lld, "
             "which failed: %.400s", rd_kafka_topic_name(m->rkt),
             (int)m->partition, (long long)m->offset, reason);
    for (size_t i = 0; i < c->msg_count; i++) {
        struct item *it = &items[i];

        if (it->dead || !it->has_change || i == ch->msg_index ||
            it->tbl != ch->tbl || strcmp(it->change_key, ch->key) != 0)
            continue;
        item_dead(it, NS_ERR_NEO4J_PERMANENT, why);
    }
}

/*
 * Apply the collected batch and start its write-back; its offsets are
 * committed when that lands, after the next batch's Neo4j round trip or
 * when the loop is idle. Returns NS_OK when it got that far; an error when
 * the worker was asked to stop before.
 */
static enum ns_err process_batch(struct consumer *c, char *errstr,
                                 size_t errstr_size)
{
    struct item *items = calloc(c->msg_count, sizeof(*items));
    struct change *changes = calloc(c->msg_count, sizeof(*changes));
    struct apply_result *results = NULL;
    struct apply_stats st;
    size_t nch = 0, raw = 0;
    int64_t t0 = metrics_now_ms(), t1;
    enum ns_err err = NS_OK;

    c->applying = 1;
    if (!items || !changes) {
        err = NS_ERR_NOMEM;
        snprintf(errstr, errstr_size, "out of memory for a batch of %zu "
                 "messages", c->msg_count);
        goto cleanup;
    }
    raw = prepare(c, items, changes);
    nch = change_coalesce(changes, raw);
    results = calloc(nch ? nch : 1, sizeof(*results));
    if (!results) {
        err = NS_ERR_NOMEM;
        snprintf(errstr, errstr_size, "out of memory for the results of %zu "
                 "changes", nch);
        goto cleanup;
    }
    for (int attempt = 0;; attempt++) {
        t1 = metrics_now_ms();
        err = apply_changes(c->nc, c->map, changes, nch, results, &st, errstr,
                            errstr_size);
        c->metrics.neo4j_ms_total += (double)(metrics_now_ms() - t1);
        c->metrics.neo4j_transactions += st.transactions;
        if (nch)
            metrics_hist_observe(&c->metrics.neo4j_seconds,
                                 (double)(metrics_now_ms() - t1) / 1000.0);
        metrics_target_seen(&c->metrics, METRICS_NEO4J,
                            !ns_err_is_retriable(err));
        if (attempt == 0) {
            /* the previous batch's write-back ran meanwhile: land it and
             * commit that batch, whatever this one does next */
            enum ns_err wb_err = writeback_finish(c, 1);
            if (wb_err) {
                err = wb_err;
                snprintf(errstr, errstr_size, "could not write the previous "
                         "batch's sync status: %s", ns_err_str(err));
                goto cleanup;
            }
        }
        if (!err)
            break;
        if (!ns_err_is_retriable(err)) {
            log_msg(LOG_ERROR, "could not apply batch: %s", errstr);
            goto cleanup;
        }
        metrics_retry(&c->metrics, METRICS_NEO4J, c->batch_lanes);
        char what[1200];
        snprintf(what, sizeof(what), "could not commit to Neo4j: %s", errstr);
        if (backoff(c, attempt, what)) {
            err = NS_ERR_NEO4J_TRANSIENT;
            snprintf(errstr, errstr_size, "%.1100s", what);
            goto cleanup;
        }
    }
    for (size_t i = 0; i < nch; i++) {
        struct item *it = &items[changes[i].msg_index];
        if (results[i].status == APPLY_FAILED) {
            item_dead(it, NS_ERR_NEO4J_PERMANENT, results[i].reason);
            dead_letter_folded(c, items, &changes[i], results[i].reason);
        } else if (results[i].status == APPLY_APPLIED) {
            c->metrics.lanes[it->lane].applied++;
            metrics_sync_observe(&c->metrics, it->lane, it->source_ts_ms);
        } else {
            c->metrics.lanes[it->lane].skipped++;
        }
    }
    /* events folded into a later change of the same key count as applied
     * through it */
    if (raw > nch)
        log_msg(LOG_DEBUG, "coalesced %zu changes into %zu", raw, nch);

    err = send_dead_letters(c, items);
    if (err) {
        snprintf(errstr, errstr_size, "could not send the batch's dead "
                 "letters: %s", ns_err_str(err));
        goto cleanup;
    }
    err = writeback_start(c, items, changes, results, nch);
    if (err) {
        snprintf(errstr, errstr_size, "could not start the sync status "
                 "write-back: %s", ns_err_str(err));
        goto cleanup;
    }
    c->metrics.batches++;
    metrics_hist_observe(&c->metrics.batch_size, (double)c->msg_count);
    c->metrics.last_batch_ms = (double)(metrics_now_ms() - t0);
    log_msg(LOG_DEBUG, "batch of %zu messages, %zu changes applied in %.0f ms",
            c->msg_count, nch, c->metrics.last_batch_ms);

cleanup:
    c->applying = 0;
    for (size_t i = 0; i < nch; i++)
        change_clear(&changes[i]);
    for (size_t i = 0; items && i < c->msg_count; i++)
        event_free(items[i].ev);
    free(results);
    free(changes);
    free(items);
    return err;
}

static void drop_batch(struct consumer *c)
{
    for (size_t i = 0; i < c->msg_count; i++)
        rd_kafka_message_destroy(c->msgs[i]);
    c->msg_count = 0;
}

static enum ns_err ensure_schema(struct consumer *c, char *errstr,
                                 size_t errstr_size)
{
    struct buf text;
    enum ns_err err = NS_OK;
    char why[512];

    buf_init(&text, 1 << 20);
    err = cypher_schema_statements(c->map, &text);
    if (err)
        goto cleanup;
    for (int attempt = 0;; attempt++) {
        char *save = NULL, *copy = strdup(buf_str(&text)), *stmt;
        if (!copy) {
            err = NS_ERR_NOMEM;
            goto cleanup;
        }
        err = NS_OK;
        for (stmt = strtok_r(copy, ";", &save); stmt && !err;
             stmt = strtok_r(NULL, ";", &save)) {
            struct neo4j_stmt s = {stmt, NULL};
            err = neo4j_run(c->nc, &s, 1, NULL, NULL, why, sizeof(why));
        }
        free(copy);
        metrics_target_seen(&c->metrics, METRICS_NEO4J,
                            !ns_err_is_retriable(err));
        if (!err)
            break;
        if (!ns_err_is_retriable(err)) {
            snprintf(errstr, errstr_size, "could not create Neo4j "
                     "constraints: %s", why);
            goto cleanup;
        }
        char what[600];
        snprintf(what, sizeof(what), "could not create Neo4j constraints: %s",
                 why);
        if (backoff(c, attempt, what)) {
            snprintf(errstr, errstr_size, "stopped before Neo4j was ready");
            goto cleanup;
        }
    }
cleanup:
    buf_free(&text);
    return err;
}

/* name, value pairs */
static const char *const kafka_defaults[] = {
    "queued.max.messages.kbytes", "6144",
    "fetch.message.max.bytes", "524288",
    "fetch.max.bytes", "4194304",
    /* a killed instance's partitions move after 10 s, not librdkafka's 45 s
     * (heartbeats come from a background thread, so long batches are fine) */
    "session.timeout.ms", "10000",
    "heartbeat.interval.ms", "3000",
    "fetch.wait.max.ms", "100",
};

enum ns_err consumer_new(const struct config *cfg, const struct mapping *map,
                         volatile sig_atomic_t *stop, struct consumer **out,
                         char *errstr, size_t errstr_size)
{
    struct consumer *c = calloc(1, sizeof(*c));
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_topic_partition_list_t *topics = NULL;
    const char *dir = getenv("NEXUS_STATS_DIR");
    char *conninfo = NULL, kerr[512], topic[256];
    enum ns_err err = NS_OK;

    *out = NULL;
    if (!c)
        return NS_ERR_NOMEM;
    c->cfg = cfg;
    c->map = map;
    c->stop = stop;
    c->paused_below = LANE__COUNT;
    err = metrics_init(&c->metrics, cfg->lanes);
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
    c->cap = (size_t)cfg->batch_max_events * 4 + 16;
    c->msgs = calloc(c->cap, sizeof(*c->msgs));
    c->pending_cap = c->cap;
    c->pending = calloc(c->pending_cap, sizeof(*c->pending));
    if (!c->msgs || !c->pending) {
        err = NS_ERR_NOMEM;
        goto cleanup;
    }
    if (dir && *dir)
        snprintf(c->stats_path, sizeof(c->stats_path), "%s/%s-%d.json", dir,
                 cfg->worker, (int)getpid());
    srand((unsigned)(time(NULL) ^ getpid()));

    conf = rd_kafka_conf_new();
    /* librdkafka prefetches up to 64 MB by default; a few batches ahead is
     * all the loop can use, and the bound keeps a worker's RSS small. The
     * configuration's kafka properties, set after, override these. */
    for (size_t i = 0; i < sizeof(kafka_defaults) / sizeof(kafka_defaults[0]); i += 2)
        if (rd_kafka_conf_set(conf, kafka_defaults[i], kafka_defaults[i + 1],
                              kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK) {
            snprintf(errstr, errstr_size, "kafka.%s: %s", kafka_defaults[i], kerr);
            err = NS_ERR_CONFIG;
            goto cleanup;
        }
    rd_kafka_conf_set_opaque(conf, c);
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    for (size_t i = 0; i < cfg->kafka_prop_count; i++)
        if (rd_kafka_conf_set(conf, cfg->kafka_props[2 * i],
                              cfg->kafka_props[2 * i + 1], kerr,
                              sizeof(kerr)) != RD_KAFKA_CONF_OK) {
            snprintf(errstr, errstr_size, "kafka.%s: %s",
                     cfg->kafka_props[2 * i], kerr);
            err = NS_ERR_CONFIG;
            goto cleanup;
        }
    rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    if (rd_kafka_conf_set(conf, "group.id", cfg->group_id, kerr,
                          sizeof(kerr)) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", kerr,
                          sizeof(kerr)) ||
        rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", kerr,
                          sizeof(kerr)) ||
        rd_kafka_conf_set(conf, "client.id", cfg->worker, kerr,
                          sizeof(kerr))) {
        snprintf(errstr, errstr_size, "kafka: %s", kerr);
        err = NS_ERR_CONFIG;
        goto cleanup;
    }
    c->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kerr, sizeof(kerr));
    if (!c->rk) {
        snprintf(errstr, errstr_size, "could not create Kafka consumer: %s",
                 kerr);
        err = NS_ERR_CONFIG;
        goto cleanup;
    }
    conf = NULL; /* owned by rk now */
    rd_kafka_poll_set_consumer(c->rk);

    topics = rd_kafka_topic_partition_list_new(LANE__COUNT);
    for (int l = 0; l < LANE__COUNT; l++) {
        if (!cfg->lanes[l])
            continue;
        err = mapping_topic(map, (enum mapping_lane)l, cfg->worker, topic,
                            sizeof(topic));
        if (err)
            goto cleanup;
        rd_kafka_topic_partition_list_add(topics, topic,
                                          RD_KAFKA_PARTITION_UA);
        log_msg(LOG_INFO, "subscribing to %s", topic);
    }
    if (rd_kafka_subscribe(c->rk, topics)) {
        snprintf(errstr, errstr_size, "could not subscribe to the lane topics");
        err = NS_ERR_KAFKA;
        goto cleanup;
    }

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
    conninfo = config_pg_conninfo(cfg);
    if (!conninfo) {
        err = NS_ERR_NOMEM;
        goto cleanup;
    }
    err = pg_status_new(conninfo, map, &c->ps, errstr, errstr_size);
    if (err)
        goto cleanup;
    err = ensure_schema(c, errstr, errstr_size);

cleanup:
    if (conninfo) {
        memset(conninfo, 0, strlen(conninfo));
        free(conninfo);
    }
    if (topics)
        rd_kafka_topic_partition_list_destroy(topics);
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (err == NS_ERR_NOMEM)
        snprintf(errstr, errstr_size, "out of memory");
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
        log_msg(LOG_WARN, "could not prune delete markers: %s", errstr);
    else if (deleted)
        log_msg(LOG_INFO, "pruned %zu delete markers older than %d s",
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

    log_msg(LOG_INFO, "consuming as group %s, batches of up to %d events or "
            "%d ms", c->cfg->group_id, c->cfg->batch_max_events,
            c->cfg->batch_max_ms);
    while (!*c->stop) {
        collect(c);
        if (!c->msg_count) {
            prune_markers(c);
            continue;
        }
        err = process_batch(c, errstr, errstr_size);
        if (c->revoked) {
            batch_rewind(c);
            err = NS_OK;
        }
        drop_batch(c);
        if (err && err != NS_ERR_NEO4J_TRANSIENT && !*c->stop) {
            char why[1024];

            snprintf(why, sizeof(why), "%s", errstr);
            snprintf(errstr, errstr_size, "batch failed: %s: %s",
                     ns_err_str(err), why);
            return err;
        }
        write_stats(c, 0);
        prune_markers(c);
    }
    /* the last batch's write-back lands and its offsets are committed;
     * if PostgreSQL is down it is left uncommitted, for the next owner */
    if (writeback_finish(c, 1))
        log_msg(LOG_WARN, "stopping with the last batch's sync status not "
                "written; its offsets are not committed");
    write_stats(c, 1);
    if (c->out_of_memory) {
        snprintf(errstr, errstr_size, "out of memory for the backlog");
        return NS_ERR_NOMEM;
    }
    log_msg(LOG_INFO, "stopping: the last batch is committed");
    return NS_OK;
}

void consumer_free(struct consumer *c)
{
    if (!c)
        return;
    httpd_free(c->httpd); /* first: its thread reads the metrics */
    /* Leave the group first: the revoke callback runs in there and still
     * looks at the batch and the stash. Messages go before the handle. */
    if (c->rk)
        rd_kafka_consumer_close(c->rk);
    writeback_clear(&c->wb); /* not landed: left uncommitted */
    drop_batch(c);
    for (size_t i = 0; i < c->pending_count; i++)
        rd_kafka_message_destroy(c->pending[i]);
    c->pending_count = 0;
    if (c->rk)
        rd_kafka_destroy(c->rk);
    dlq_free(c->dlq);
    neo4j_client_free(c->nc);
    pg_status_free(c->ps);
    free(c->msgs);
    free(c->pending);
    metrics_destroy(&c->metrics);
    free(c);
}
