/*
 * test_change - change_coalesce() against a plain reference model.
 *
 * Random sequences of upserts (some with TOASTed properties left out) and
 * deletes over a few keys of two tables are coalesced; the survivors must
 * be exactly one change per row, the latest, in the arrival order of the
 * latest, and carry each left-out property from the newest earlier upsert
 * of that row that had it, never across a delete. A versioned link keeps
 * every change, by rounds. Deterministic seeds, so a failure repeats. Prints "ok NAME" / "not ok NAME: why" per case.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "change.h"
#include "mapping.h"

#define MAX_EVENTS 3000

struct spec {
    int table;       /* 0 or 1 */
    int key;
    int is_delete;
    uint64_t shape;  /* properties present (upserts) */
    int serial;      /* arrival number, stored as every present value */
};

static uint64_t rng_state;

static uint32_t rng_next(void)
{
    rng_state = rng_state * UINT64_C(6364136223846793005) + 1442695040888963407u;
    return (uint32_t)(rng_state >> 33);
}

static int make_change(const struct mapping_table *tbl, const struct spec *sp,
                       size_t index, struct change *ch)
{
    cJSON *p;

    memset(ch, 0, sizeof(*ch));
    ch->tbl = tbl;
    ch->action = sp->is_delete ? CHANGE_DELETE : CHANGE_UPSERT;
    ch->msg_index = index;
    snprintf(ch->key, sizeof(ch->key), "%s|k%d", tbl->table, sp->key);
    ch->row = cJSON_CreateObject();
    if (!ch->row)
        return -1;
    if (sp->is_delete)
        return 0;
    ch->shape = sp->shape;
    p = cJSON_AddObjectToObject(ch->row, "p");
    if (!p)
        return -1;
    for (size_t i = 0; i < tbl->prop_count; i++)
        if (sp->shape & (UINT64_C(1) << i))
            cJSON_AddNumberToObject(p, tbl->props[i].property, sp->serial);
    return 0;
}

/* The expected value of property i of the row whose latest event is at
 * last: the newest upsert at or before it, back to the previous delete. */
static int expected_value(const struct spec *specs, size_t last, size_t prop)
{
    for (size_t j = last + 1; j-- > 0;) {
        if (specs[j].table != specs[last].table || specs[j].key != specs[last].key)
            continue;
        if (specs[j].is_delete)
            return -1;
        if (specs[j].shape & (UINT64_C(1) << prop))
            return specs[j].serial;
    }
    return -1;
}

static const char *run_case(const struct mapping_table *tables[2], int keys,
                            size_t n, char *why, size_t why_size)
{
    static struct spec specs[MAX_EVENTS];
    static struct change changes[MAX_EVENTS];
    size_t kept, expect_pos = 0;
    const char *fail = NULL;

    for (size_t i = 0; i < n; i++) {
        const struct mapping_table *tbl;
        specs[i].table = (int)(rng_next() % 2);
        specs[i].key = (int)(rng_next() % (uint32_t)keys);
        specs[i].is_delete = rng_next() % 7 == 0;
        tbl = tables[specs[i].table];
        specs[i].shape = ((UINT64_C(1) << tbl->prop_count) - 1) &
                         ~(uint64_t)(rng_next() % 2 ? rng_next() : 0);
        specs[i].serial = (int)i + 1;
        if (make_change(tbl, &specs[i], i, &changes[i])) {
            snprintf(why, why_size, "out of memory building case");
            return why;
        }
    }
    kept = change_coalesce(changes, n);

    /* expected survivors: events that are the last of their row, in order */
    for (size_t i = 0; i < n && !fail; i++) {
        int is_last = 1;
        for (size_t j = i + 1; j < n && is_last; j++)
            if (specs[j].table == specs[i].table && specs[j].key == specs[i].key)
                is_last = 0;
        if (!is_last)
            continue;
        if (expect_pos >= kept) {
            snprintf(why, why_size, "only %zu survivors", kept);
            fail = why;
            break;
        }
        const struct change *ch = &changes[expect_pos++];
        const struct mapping_table *tbl = tables[specs[i].table];
        if (ch->msg_index != i || ch->tbl != tbl) {
            snprintf(why, why_size, "survivor %zu is event %zu, expected %zu",
                     expect_pos - 1, ch->msg_index, i);
            fail = why;
            break;
        }
        if (specs[i].is_delete)
            continue;
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(ch->row, "p");
        for (size_t k = 0; k < tbl->prop_count && !fail; k++) {
            int want = expected_value(specs, i, k);
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(
                p, tbl->props[k].property);
            int has = (ch->shape >> k) & 1;
            if ((want < 0) != !has || (want >= 0 && (!cJSON_IsNumber(v) ||
                                                     (int)v->valuedouble != want))) {
                snprintf(why, why_size, "event %zu property %s: want %d, got %s%d",
                         i, tbl->props[k].property, want, has ? "" : "absent ",
                         v ? (int)v->valuedouble : -1);
                fail = why;
            }
        }
    }
    if (!fail && expect_pos != kept) {
        snprintf(why, why_size, "%zu survivors, expected %zu", kept, expect_pos);
        fail = why;
    }
    for (size_t i = 0; i < n; i++)
        change_clear(&changes[i]);
    return fail;
}

/* A change that arrives later but is older at the source loses. */
static const char *run_source_order_case(const struct mapping_table *tbl,
                                         char *why, size_t why_size)
{
    struct change ch[3];
    struct spec sp[3] = {
        {0, 1, 0, (UINT64_C(1) << tbl->prop_count) - 1, 1},
        {0, 1, 0, (UINT64_C(1) << tbl->prop_count) - 1, 2},
        {0, 1, 0, (UINT64_C(1) << tbl->prop_count) - 1, 3},
    };
    int64_t lsns[3] = {100, 300, 200};   /* arrival 3 is a stale redelivery */
    const char *fail = NULL;
    size_t kept;

    for (size_t i = 0; i < 3; i++) {
        if (make_change(tbl, &sp[i], i, &ch[i])) {
            snprintf(why, why_size, "out of memory building case");
            return why;
        }
        ch[i].lsn = lsns[i];
        ch[i].version = (int64_t)i + 1;
    }
    kept = change_coalesce(ch, 3);
    if (kept != 1 || ch[0].lsn != 300 || ch[0].msg_index != 1) {
        snprintf(why, why_size, "kept %zu, survivor lsn %lld from event %zu; want lsn "
                 "300 from event 1", kept, (long long)ch[0].lsn, ch[0].msg_index);
        fail = why;
    }
    for (size_t i = 0; i < 3; i++)
        change_clear(&ch[i]);
    return fail;
}

/* A later source epoch wins over a higher LSN of an earlier epoch (the
 * source's LSNs restarted), whatever the arrival order. */
static const char *run_epoch_case(const struct mapping_table *tbl, char *why,
                                  size_t why_size)
{
    struct change ch[3];
    struct spec sp = {0, 1, 0, (UINT64_C(1) << tbl->prop_count) - 1, 1};
    const int64_t epochs[3] = {0, 1, 0}, lsns[3] = {900, 100, 950};
    const char *fail = NULL;
    size_t kept;

    for (size_t i = 0; i < 3; i++) {
        if (make_change(tbl, &sp, i, &ch[i])) {
            snprintf(why, why_size, "out of memory building case");
            return why;
        }
        ch[i].epoch = epochs[i];
        ch[i].lsn = lsns[i];
    }
    kept = change_coalesce(ch, 3);
    if (kept != 1 || ch[0].epoch != 1 || ch[0].msg_index != 1) {
        snprintf(why, why_size, "kept %zu, survivor epoch %lld from event %zu; "
                 "want epoch 1 from event 1", kept, (long long)ch[0].epoch,
                 ch[0].msg_index);
        fail = why;
    }
    for (size_t i = 0; i < 3; i++)
        change_clear(&ch[i]);
    return fail;
}

/* A versioned link keeps every change, one round after the other; only an
 * exact redelivery is dropped, and other rows are coalesced as usual. */
static const char *run_temporal_case(const struct mapping_table *link,
                                     const struct mapping_table *node,
                                     char *why, size_t why_size)
{
    enum { N = 7 };
    struct change ch[N];
    const struct { int node; int key; int is_delete; int64_t lsn; } ev[N] = {
        {0, 1, 0, 100}, {1, 9, 0, 110}, {0, 1, 0, 200}, {0, 2, 0, 210},
        {0, 1, 0, 200} /* redelivery */, {0, 1, 1, 300}, {1, 9, 0, 310},
    };
    /* survivors: event, round */
    const size_t want_event[] = {0, 2, 3, 5, 6};
    const unsigned want_round[] = {0, 1, 0, 2, 0};
    const size_t want = sizeof(want_event) / sizeof(want_event[0]);
    const char *fail = NULL;
    size_t kept;

    for (size_t i = 0; i < N; i++) {
        const struct mapping_table *tbl = ev[i].node ? node : link;
        struct spec sp = {0, ev[i].key, ev[i].is_delete,
                          (UINT64_C(1) << tbl->prop_count) - 1, (int)i + 1};
        if (make_change(tbl, &sp, i, &ch[i])) {
            snprintf(why, why_size, "out of memory building case");
            for (size_t j = 0; j < i; j++)
                change_clear(&ch[j]);
            return why;
        }
        ch[i].lsn = ev[i].lsn;
        ch[i].version = ev[i].lsn / 100;
    }
    kept = change_coalesce(ch, N);
    if (kept != want) {
        snprintf(why, why_size, "kept %zu, want %zu", kept, want);
        fail = why;
    }
    for (size_t i = 0; !fail && i < want; i++)
        if (ch[i].msg_index != want_event[i] || ch[i].round != want_round[i]) {
            snprintf(why, why_size, "survivor %zu is event %zu round %u, want "
                     "event %zu round %u", i, ch[i].msg_index, ch[i].round,
                     want_event[i], want_round[i]);
            fail = why;
        }
    for (size_t i = 0; i < N; i++)
        change_clear(&ch[i]);
    return fail;
}

int main(void)
{
    static const struct { const char *name; int keys; size_t n; uint64_t seed; } cases[] = {
        {"one-event", 1, 1, 1},
        {"all-one-key", 1, 50, 2},
        {"few-keys", 3, 40, 3},
        {"hot-keys", 10, 1000, 4},
        {"mostly-distinct", 2500, 3000, 5},
        {"all-distinct-like", 100000, 2000, 6},
        {"empty", 5, 0, 7},
    };
    const struct mapping_table *tables[2];
    struct mapping *map = NULL;
    int passed = 0, failed = 0;
    char errstr[512];

    if (mapping_load("schemas/mapping.cfg", &map, errstr, sizeof(errstr))) {
        fprintf(stderr, "test_change: %s\n", errstr);
        return 2;
    }
    tables[0] = mapping_find(map, "content_items");
    tables[1] = mapping_find(map, "threads");
    if (!tables[0] || !tables[1] || tables[0]->prop_count < 3 ||
        tables[1]->prop_count < 3) {
        fprintf(stderr, "test_change: mapping lacks content_items/threads\n");
        mapping_free(map);
        return 2;
    }
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        char why[512];
        const char *fail;

        rng_state = cases[c].seed;
        fail = run_case(tables, cases[c].keys, cases[c].n, why, sizeof(why));
        if (fail) {
            printf("not ok %s: %s\n", cases[c].name, fail);
            failed++;
        } else {
            printf("ok %s\n", cases[c].name);
            passed++;
        }
    }
    {
        char why[512];
        const char *fail = run_source_order_case(tables[0], why, sizeof(why));
        printf("%s source-order%s%s\n", fail ? "not ok" : "ok", fail ? ": " : "",
               fail ? fail : "");
        fail ? failed++ : passed++;
    }
    {
        char why[512];
        const char *fail = run_epoch_case(tables[0], why, sizeof(why));
        printf("%s source-epoch%s%s\n", fail ? "not ok" : "ok", fail ? ": " : "",
               fail ? fail : "");
        fail ? failed++ : passed++;
    }
    {
        char why[512];
        const struct mapping_table *link = mapping_find(map, "thread_content");
        const char *fail = link && link->temporal
            ? run_temporal_case(link, tables[1], why, sizeof(why))
            : "mapping lacks the temporal thread_content";
        printf("%s temporal-rounds%s%s\n", fail ? "not ok" : "ok",
               fail ? ": " : "", fail ? fail : "");
        fail ? failed++ : passed++;
    }
    mapping_free(map);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
