#include "batch.h"

#include <stdlib.h>
#include <string.h>

enum ns_err batch_init(struct batch *b, size_t max_count, size_t max_bytes)
{
    memset(b, 0, sizeof(*b));
    b->msgs = calloc(max_count ? max_count : 1, sizeof(*b->msgs));
    b->lanes = calloc(max_count ? max_count : 1, sizeof(*b->lanes));
    if (!b->msgs || !b->lanes) {
        batch_free(b);
        return NS_ERR_NOMEM;
    }
    b->max_count = max_count ? max_count : 1;
    b->max_bytes = max_bytes;
    return NS_OK;
}

void batch_free(struct batch *b)
{
    batch_clear(b);
    free(b->msgs);
    free(b->lanes);
    memset(b, 0, sizeof(*b));
}

size_t batch_message_bytes(const rd_kafka_message_t *m)
{
    return m->len + m->key_len;
}

int batch_fits(const struct batch *b, const rd_kafka_message_t *m)
{
    if (b->count == 0)
        return 1;
    return b->count < b->max_count &&
           b->bytes + batch_message_bytes(m) <= b->max_bytes;
}

void batch_add(struct batch *b, rd_kafka_message_t *m, int lane)
{
    b->msgs[b->count] = m;
    b->lanes[b->count] = lane;
    b->count++;
    b->bytes += batch_message_bytes(m);
}

size_t batch_take(struct batch *b, struct batch *from)
{
    size_t moved = 0;

    while (moved < from->count && batch_fits(b, from->msgs[moved])) {
        batch_add(b, from->msgs[moved], from->lanes[moved]);
        from->bytes -= batch_message_bytes(from->msgs[moved]);
        moved++;
    }
    if (moved) {
        from->count -= moved;
        memmove(from->msgs, from->msgs + moved,
                from->count * sizeof(*from->msgs));
        memmove(from->lanes, from->lanes + moved,
                from->count * sizeof(*from->lanes));
    }
    return moved;
}

void batch_clear(struct batch *b)
{
    for (size_t i = 0; i < b->count; i++)
        rd_kafka_message_destroy(b->msgs[i]);
    b->count = 0;
    b->bytes = 0;
}

void batch_drop_partitions(struct batch *b,
                           const rd_kafka_topic_partition_list_t *parts)
{
    size_t kept = 0;

    for (size_t i = 0; i < b->count; i++) {
        rd_kafka_message_t *m = b->msgs[i];

        if (rd_kafka_topic_partition_list_find(
                parts, rd_kafka_topic_name(m->rkt), m->partition)) {
            b->bytes -= batch_message_bytes(m);
            rd_kafka_message_destroy(m);
            continue;
        }
        b->lanes[kept] = b->lanes[i];
        b->msgs[kept++] = m;
    }
    b->count = kept;
}

int batch_touches(const struct batch *b,
                  const rd_kafka_topic_partition_list_t *parts)
{
    for (size_t i = 0; i < b->count; i++)
        if (rd_kafka_topic_partition_list_find(
                parts, rd_kafka_topic_name(b->msgs[i]->rkt),
                b->msgs[i]->partition))
            return 1;
    return 0;
}

rd_kafka_topic_partition_list_t *
batch_offsets(const struct batch *b, int first,
              const rd_kafka_topic_partition_list_t *only)
{
    rd_kafka_topic_partition_list_t *offs =
        rd_kafka_topic_partition_list_new(b->count ? (int)b->count : 1);

    for (size_t i = 0; offs && i < b->count; i++) {
        const rd_kafka_message_t *m = b->msgs[i];
        const char *topic = rd_kafka_topic_name(m->rkt);
        rd_kafka_topic_partition_t *tp;
        int64_t want = first ? m->offset : m->offset + 1;

        if (only && !rd_kafka_topic_partition_list_find(only, topic,
                                                        m->partition))
            continue;
        tp = rd_kafka_topic_partition_list_find(offs, topic, m->partition);
        if (!tp) {
            tp = rd_kafka_topic_partition_list_add(offs, topic, m->partition);
            tp->offset = want;
        } else if (first ? want < tp->offset : want > tp->offset) {
            tp->offset = want;
        }
    }
    return offs;
}
