/*
 * test_metrics - data-driven tests of metrics.c: histogram buckets, the
 * Prometheus exposition and the readiness decision.
 *
 * Usage: test_metrics [DIR]   (default tests/cases/metrics)
 *
 * Every .json file in DIR is one case, applied to a fresh struct metrics:
 *   {"worker": "tag",                      label value, default "w"
 *    "lanes": ["normal"],                  lanes shown, default all
 *    "observe": {"batch_size": [1, 5], "neo4j": [0.005], "pg": [2]},
 *    "sync_age_ms": {"normal": [1500]},    metrics_sync_observe(now - age)
 *    "count": {"normal": {"consumed": 3, "applied": 2, "skipped": 1,
 *              "dlq": 0}},
 *    "retry": [{"target": "neo4j", "lanes": {"normal": 5}}],
 *    "pg_refused": ["25006", ""],           metrics_pg_refused() after the
 *                                           retries, before "seen"
 *    "seen": [{"target": "postgres", "up": false}],
 *    "partitions": [{"topic": "t", "partition": 0, "lane": "normal",
 *                    "lag": 7}],
 *    "heartbeat_age_ms": 40000,            the loop last turned this long ago
 *    "expect_lines": ["..."],              each is a whole line of the text
 *    "absent": ["..."],                    substrings that must not appear
 *    "ready": true | false, "why": "..."}  metrics_ready() and its reason
 * An unknown member fails the case, so typos do not pass silently.
 *
 * Prints "ok NAME" or "not ok NAME: why" per case, then "N passed, N failed";
 * exits 1 when any case failed.
 */
#include "metrics.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "cases.h"
#include "mapping.h"

#define CASE_MAX_BYTES (1u << 20)

static const char *const known[] = {
    "comment", "worker", "lanes", "observe", "sync_age_ms", "count", "retry",
    "pg_refused", "seen", "partitions", "heartbeat_age_ms", "expect_lines", "absent",
    "ready", "why"};

static int target_parse(const char *s)
{
    if (strcmp(s, "neo4j") == 0)
        return METRICS_NEO4J;
    if (strcmp(s, "postgres") == 0)
        return METRICS_PG;
    if (strcmp(s, "kafka") == 0)
        return METRICS_KAFKA;
    return -1;
}

static int lane_of(const cJSON *item, char *why, size_t why_size)
{
    int lane = item && item->string ? mapping_lane_parse(item->string) : -1;

    if (lane < 0)
        case_why(why, why_size, "unknown lane '%s'",
                 item && item->string ? item->string : "?");
    return lane;
}

static int apply_observe(struct metrics *m, const cJSON *obs, char *why,
                         size_t why_size)
{
    const cJSON *h, *v;

    cJSON_ArrayForEach(h, obs) {
        struct metrics_hist *hist = strcmp(h->string, "batch_size") == 0
                                        ? &m->batch_size
                                    : strcmp(h->string, "neo4j") == 0
                                        ? &m->neo4j_seconds
                                    : strcmp(h->string, "pg") == 0
                                        ? &m->pg_seconds
                                        : NULL;
        if (!hist) {
            case_why(why, why_size, "unknown histogram '%s'", h->string);
            return -1;
        }
        cJSON_ArrayForEach(v, h) metrics_hist_observe(hist, v->valuedouble);
    }
    return 0;
}

static int64_t unix_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int apply_case(struct metrics *m, const cJSON *c, char *why,
                      size_t why_size)
{
    const cJSON *sect, *e, *v;
    uint64_t lane_events[LANE__COUNT];
    struct metrics_partition parts[16];
    size_t nparts = 0;
    int lane;

    sect = cJSON_GetObjectItemCaseSensitive(c, "observe");
    if (sect && apply_observe(m, sect, why, why_size))
        return -1;
    sect = cJSON_GetObjectItemCaseSensitive(c, "sync_age_ms");
    cJSON_ArrayForEach(e, sect) {
        lane = lane_of(e, why, why_size);
        if (lane < 0)
            return -1;
        cJSON_ArrayForEach(v, e) metrics_sync_observe(
            m, lane, unix_now_ms() - (int64_t)v->valuedouble);
    }
    sect = cJSON_GetObjectItemCaseSensitive(c, "count");
    cJSON_ArrayForEach(e, sect) {
        lane = lane_of(e, why, why_size);
        if (lane < 0)
            return -1;
        cJSON_ArrayForEach(v, e) {
            struct metrics_lane *ml = &m->lanes[lane];
            uint64_t n = (uint64_t)v->valuedouble;
            if (strcmp(v->string, "consumed") == 0)
                ml->consumed += n;
            else if (strcmp(v->string, "applied") == 0)
                ml->applied += n;
            else if (strcmp(v->string, "skipped") == 0)
                ml->skipped += n;
            else if (strcmp(v->string, "dlq") == 0)
                ml->dlq += n;
            else {
                case_why(why, why_size, "unknown counter '%s'", v->string);
                return -1;
            }
        }
    }
    sect = cJSON_GetObjectItemCaseSensitive(c, "retry");
    cJSON_ArrayForEach(e, sect) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "target");
        int target = cJSON_IsString(t) ? target_parse(t->valuestring) : -1;
        if (target < 0) {
            case_why(why, why_size, "retry needs a known target");
            return -1;
        }
        memset(lane_events, 0, sizeof(lane_events));
        cJSON_ArrayForEach(v, cJSON_GetObjectItemCaseSensitive(e, "lanes")) {
            lane = lane_of(v, why, why_size);
            if (lane < 0)
                return -1;
            lane_events[lane] = (uint64_t)v->valuedouble;
        }
        metrics_retry(m, (enum metrics_target)target, lane_events);
    }
    sect = cJSON_GetObjectItemCaseSensitive(c, "pg_refused");
    cJSON_ArrayForEach(e, sect) {
        if (!cJSON_IsString(e)) {
            case_why(why, why_size, "pg_refused holds SQLSTATE strings");
            return -1;
        }
        metrics_pg_refused(m, e->valuestring);
    }
    sect = cJSON_GetObjectItemCaseSensitive(c, "seen");
    cJSON_ArrayForEach(e, sect) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "target");
        int target = cJSON_IsString(t) ? target_parse(t->valuestring) : -1;
        if (target < 0) {
            case_why(why, why_size, "seen needs a known target");
            return -1;
        }
        metrics_target_seen(m, (enum metrics_target)target,
                            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
                                e, "up")));
    }
    sect = cJSON_GetObjectItemCaseSensitive(c, "partitions");
    cJSON_ArrayForEach(e, sect) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "topic");
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(e, "lane");
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(e, "partition");
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(e, "lag");
        struct metrics_partition *p = &parts[nparts];
        if (nparts == sizeof(parts) / sizeof(parts[0]) || !cJSON_IsString(t) ||
            !cJSON_IsString(l) || !cJSON_IsNumber(n) || !cJSON_IsNumber(g)) {
            case_why(why, why_size, "bad partitions entry");
            return -1;
        }
        snprintf(p->topic, sizeof(p->topic), "%s", t->valuestring);
        p->partition = (int32_t)n->valuedouble;
        p->lane = mapping_lane_parse(l->valuestring);
        p->lag = (int64_t)g->valuedouble;
        nparts++;
    }
    if (sect && metrics_partitions_set(m, parts, nparts, (int)nparts)) {
        case_why(why, why_size, "metrics_partitions_set failed");
        return -1;
    }
    e = cJSON_GetObjectItemCaseSensitive(c, "heartbeat_age_ms");
    if (cJSON_IsNumber(e))
        m->heartbeat_ms = metrics_now_ms() - (int64_t)e->valuedouble;
    return 0;
}

/* Is line one whole line of text? */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);

    for (const char *p = strstr(text, line); p; p = strstr(p + 1, line))
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return 1;
    return 0;
}

static int check_output(const cJSON *c, struct metrics *m, const char *text,
                        char *why, size_t why_size)
{
    const cJSON *e, *r, *w;
    char reason[128] = "";
    int ready;

    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(c, "expect_lines"))
        if (!has_line(text, e->valuestring)) {
            case_why(why, why_size, "missing line: %s", e->valuestring);
            return -1;
        }
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(c, "absent"))
        if (strstr(text, e->valuestring)) {
            case_why(why, why_size, "unexpected text: %s", e->valuestring);
            return -1;
        }
    r = cJSON_GetObjectItemCaseSensitive(c, "ready");
    ready = metrics_ready(m, reason, sizeof(reason));
    if (r && !!ready != cJSON_IsTrue(r)) {
        case_why(why, why_size, "ready is %d (%s)", ready, reason);
        return -1;
    }
    w = cJSON_GetObjectItemCaseSensitive(c, "why");
    if (w && strcmp(reason, w->valuestring) != 0) {
        case_why(why, why_size, "reason is '%s', expected '%s'", reason,
                 w->valuestring);
        return -1;
    }
    return 0;
}

static int run_case(const char *path, char *why, size_t why_size)
{
    char *text = NULL;
    cJSON *c = NULL;
    const cJSON *lanes, *wk, *l;
    struct metrics m;
    struct buf out;
    int lane_on[LANE__COUNT], rc = -1, inited = 0;

    buf_init(&out, 1 << 20);
    text = case_read_file(path, CASE_MAX_BYTES, NULL);
    c = text ? cJSON_Parse(text) : NULL;
    if (!c) {
        case_why(why, why_size, "cannot read or parse the case");
        goto cleanup;
    }
    if (CASE_CHECK_KEYS(c, known, "case", why, why_size))
        goto cleanup;
    lanes = cJSON_GetObjectItemCaseSensitive(c, "lanes");
    for (int i = 0; i < LANE__COUNT; i++)
        lane_on[i] = lanes == NULL;
    cJSON_ArrayForEach(l, lanes) {
        int lane = mapping_lane_parse(l->valuestring);
        if (lane < 0) {
            case_why(why, why_size, "unknown lane '%s'", l->valuestring);
            goto cleanup;
        }
        lane_on[lane] = 1;
    }
    if (metrics_init(&m, lane_on)) {
        case_why(why, why_size, "metrics_init failed");
        goto cleanup;
    }
    inited = 1;
    if (apply_case(&m, c, why, why_size))
        goto cleanup;
    wk = cJSON_GetObjectItemCaseSensitive(c, "worker");
    if (metrics_write_prometheus(&m, cJSON_IsString(wk) ? wk->valuestring
                                                        : "w",
                                 "0.0.0-test", &out)) {
        case_why(why, why_size, "metrics_write_prometheus failed");
        goto cleanup;
    }
    rc = check_output(c, &m, buf_str(&out), why, why_size);
cleanup:
    if (inited)
        metrics_destroy(&m);
    buf_free(&out);
    cJSON_Delete(c);
    free(text);
    return rc;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "tests/cases/metrics";
    int passed = 0, failed = 0;

    if (case_run_dir(dir, run_case, &passed, &failed) < 0) {
        fprintf(stderr, "test_metrics: cannot read %s\n", dir);
        return 1;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
