#include "lanes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kafka.h"
#include "log.h"
#include "metrics.h"

/* A lane counts as busy this long after its last message. */
#define LANES_HOLD_MS 300

enum ns_err lanes_init(struct lanes *lanes, const struct mapping *map,
                       const char *worker, const int *enabled,
                       char *errstr, size_t errstr_size)
{
    memset(lanes, 0, sizeof(*lanes));
    lanes->paused_below = LANE__COUNT;
    for (int l = 0; l < LANE__COUNT; l++) {
        if (!enabled[l])
            continue;
        if (mapping_topic(map, (enum mapping_lane)l, worker, lanes->topics[l],
                          sizeof(lanes->topics[l])) != NS_OK) {
            ns_err_set(errstr, errstr_size, "no topic name for lane %s of "
                       "worker %s", mapping_lane_name((enum mapping_lane)l),
                       worker);
            return NS_ERR_CONFIG;
        }
    }
    return NS_OK;
}

int lanes_of_topic(const struct lanes *lanes, const char *topic)
{
    for (int l = 0; l < LANE__COUNT; l++)
        if (lanes->topics[l][0] && strcmp(lanes->topics[l], topic) == 0)
            return l;
    return -1;
}

void lanes_seen(struct lanes *lanes, rd_kafka_t *rk, int lane,
                const int64_t *lag)
{
    if (lane < 0)
        return;
    lanes->seen_ms[lane] = metrics_now_ms();
    /* a message of a lane above every paused one: pause the lower lanes
     * now, before more of their prefetched messages are delivered */
    if (lane + 1 < lanes->paused_below)
        lanes_update(lanes, rk, lag);
}

/*
 * Messages of paused partitions already fetched are discarded by
 * librdkafka and read again after resume, from the last delivered offset.
 */
void lanes_update(struct lanes *lanes, rd_kafka_t *rk, const int64_t *lag)
{
    int64_t now = metrics_now_ms();
    int top = LANE__COUNT - 1, want;
    rd_kafka_topic_partition_list_t *parts = NULL, *pause, *go;

    for (int l = 0; l < LANE__COUNT; l++)
        if (lanes->topics[l][0] &&
            (now - lanes->seen_ms[l] < LANES_HOLD_MS || lag[l] > 0)) {
            top = l;
            break;
        }
    want = top + 1;  /* lanes numerically above top are lower priority */
    if (want == lanes->paused_below ||
        rd_kafka_assignment(rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    pause = rd_kafka_topic_partition_list_new(parts->cnt);
    go = rd_kafka_topic_partition_list_new(parts->cnt);
    /* Touch only partitions whose state changes: resuming an active
     * partition makes librdkafka drop what it prefetched for it. */
    for (int i = 0; i < parts->cnt; i++) {
        int lane = lanes_of_topic(lanes, parts->elems[i].topic);
        int now_paused = lane >= want, was_paused = lane >= lanes->paused_below;

        if (now_paused != was_paused)
            rd_kafka_topic_partition_list_add(now_paused ? pause : go,
                                              parts->elems[i].topic,
                                              parts->elems[i].partition);
    }
    if (pause->cnt)
        rd_kafka_pause_partitions(rk, pause);
    if (go->cnt)
        kafka_resume(rk, go);
    log_msg(NS_LOG_DEBUG, "lane priority: serving lanes up to %s, %d "
            "partitions paused", mapping_lane_name((enum mapping_lane)top),
            pause->cnt);
    lanes->paused_below = want;
    rd_kafka_topic_partition_list_destroy(pause);
    rd_kafka_topic_partition_list_destroy(go);
    rd_kafka_topic_partition_list_destroy(parts);
}

void lanes_all_resumed(struct lanes *lanes)
{
    lanes->paused_below = LANE__COUNT;
}

void lanes_assigned(struct lanes *lanes, rd_kafka_t *rk,
                    const rd_kafka_topic_partition_list_t *parts, int coop)
{
    rd_kafka_topic_partition_list_t *pause;

    /* A partition paused here before (lane priority, a retry's wait) and
     * given back must not stay paused. */
    rd_kafka_resume_partitions(rk, (rd_kafka_topic_partition_list_t *)parts);
    if (!coop || lanes->paused_below == LANE__COUNT) {
        lanes->paused_below = LANE__COUNT;
        return;
    }
    pause = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++)
        if (lanes_of_topic(lanes, parts->elems[i].topic) >=
            lanes->paused_below)
            rd_kafka_topic_partition_list_add(pause, parts->elems[i].topic,
                                              parts->elems[i].partition);
    if (pause->cnt)
        rd_kafka_pause_partitions(rk, pause);
    rd_kafka_topic_partition_list_destroy(pause);
}

void lanes_measure_lag(const struct lanes *lanes, rd_kafka_t *rk,
                       struct metrics *metrics)
{
    rd_kafka_topic_partition_list_t *parts = NULL;
    int64_t lag[LANE__COUNT] = {0};
    struct metrics_partition *plag = NULL;
    size_t nplag = 0;

    if (rd_kafka_assignment(rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR)
        parts = NULL;
    if (parts && parts->cnt)
        plag = calloc((size_t)parts->cnt, sizeof(*plag));
    if (parts && parts->cnt) {
        rd_kafka_position(rk, parts);
        /* Before the first message of a partition its position is unknown:
         * the committed offset is where consumption will start. */
        for (int i = 0; i < parts->cnt; i++)
            if (parts->elems[i].offset < 0) {
                rd_kafka_committed(rk, parts, 2000);
                break;
            }
        for (int i = 0; i < parts->cnt; i++) {
            rd_kafka_topic_partition_t *tp = &parts->elems[i];
            int64_t lo = 0, hi = 0;
            int lane = lanes_of_topic(lanes, tp->topic);
            if (lane < 0 ||
                rd_kafka_get_watermark_offsets(rk, tp->topic, tp->partition,
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
        metrics_partitions_set(metrics, plag, nplag,
                               parts ? parts->cnt : 0))
        log_msg(NS_LOG_WARN, "could not record partition lag: out of memory");
    free(plag);
    for (int l = 0; l < LANE__COUNT; l++)
        metrics->lanes[l].lag = lag[l] > 0 ? lag[l] : 0;
    if (parts)
        rd_kafka_topic_partition_list_destroy(parts);
}
