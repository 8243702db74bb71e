#include "prepare.h"

#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "event.h"

void prepare_item_dead(struct batch_item *it, enum ns_err cls,
                       const char *reason)
{
    it->dead = 1;
    it->error_class = cls;
    snprintf(it->reason, sizeof(it->reason), "%s", reason);
}

/* Best effort: the table and key of a bad event, for its FAILED status. */
static void keys_from_event(struct batch_item *it, const struct event *ev)
{
    const cJSON *img;

    if (!it->tbl || !ev || it->tbl->kind == MAPPING_NONE)
        return;
    img = event_row(ev);
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
 * 1 when *change was filled; *evp is the parsed event, for the caller to
 * free. */
static int prepare_one(const struct config *cfg, const struct mapping *map,
                       struct batch_item *it, size_t i, struct event **evp,
                       struct change *change, struct metrics *metrics)
{
    rd_kafka_message_t *m = it->msg;
    enum change_result res;
    struct event *ev = NULL;
    char why[512];
    enum ns_err err;

    if (event_is_tombstone(m->payload, m->len)) {
        metrics->lanes[it->lane].skipped++;
        return 0;
    }
    err = event_parse(m->payload, m->len, evp, why, sizeof(why));
    if (err) {
        prepare_item_dead(it, err, why);
        return 0;
    }
    ev = *evp;
    it->source_ts_ms = ev->ts_ms;
    it->envelope_ts_ms = ev->envelope_ts_ms;
    it->kafka_ts_ms = rd_kafka_message_timestamp(m, NULL);
    /* a table of the same name in another schema is not ours */
    if (ev->schema[0] && map->pg_schema &&
        strcmp(ev->schema, map->pg_schema) != 0) {
        snprintf(why, sizeof(why), "schema %.100s is not the mapped "
                 "schema %s", ev->schema, map->pg_schema);
        prepare_item_dead(it, NS_ERR_SCHEMA, why);
        return 0;
    }
    it->tbl = mapping_find(map, ev->table);
    if (!it->tbl || strcmp(it->tbl->worker, cfg->worker) != 0) {
        snprintf(why, sizeof(why), "table %.100s is not mapped to worker "
                 "%s", ev->table, cfg->worker);
        it->tbl = NULL;
        prepare_item_dead(it, NS_ERR_SCHEMA, why);
        return 0;
    }
    err = change_from_event(map, it->tbl, ev,
                            config_source_epoch(cfg, ev->ts_ms), i, change,
                            &res, why, sizeof(why));
    if (err) {
        prepare_item_dead(it, err, why);
        keys_from_event(it, ev);
        return 0;
    }
    if (res == CHANGE_SKIP) {
        metrics->lanes[it->lane].skipped++;
        return 0;
    }
    /* its row, should the change it is folded into fail */
    it->has_change = 1;
    memcpy(it->change_key, change->key, sizeof(it->change_key));
    memcpy(it->keys, change->key_values, sizeof(it->keys));
    it->has_keys = 1;
    return 1;
}

size_t prepare_batch(const struct config *cfg, const struct mapping *map,
                     const struct batch *b, struct batch_item *items,
                     struct change *changes, struct metrics *metrics,
                     uint64_t *lane_events)
{
    size_t nch = 0;

    memset(lane_events, 0, LANE__COUNT * sizeof(*lane_events));
    for (size_t i = 0; i < b->count; i++) {
        struct batch_item *it = &items[i];
        struct event *ev = NULL;

        memset(it, 0, sizeof(*it));
        it->msg = b->msgs[i];
        it->lane = b->lanes[i] >= 0 ? b->lanes[i] : LANE_LOW;
        metrics->lanes[it->lane].consumed++;
        lane_events[it->lane]++;
        nch += (size_t)prepare_one(cfg, map, it, i, &ev, &changes[nch],
                                   metrics);
        event_free(ev);
    }
    return nch;
}

void prepare_dead_folded(struct batch_item *items, size_t n,
                         const struct change *ch, const char *reason)
{
    const rd_kafka_message_t *m = items[ch->msg_index].msg;
    char why[512];

    snprintf(why, sizeof(why), "folded into the change at %s[%d]@%lld, "
             "which failed: %.400s", rd_kafka_topic_name(m->rkt),
             (int)m->partition, (long long)m->offset, reason);
    for (size_t i = 0; i < n; i++) {
        struct batch_item *it = &items[i];

        if (it->dead || !it->has_change || it->survives ||
            i == ch->msg_index ||
            it->tbl != ch->tbl || strcmp(it->change_key, ch->key) != 0)
            continue;
        prepare_item_dead(it, NS_ERR_NEO4J_PERMANENT, why);
    }
}
