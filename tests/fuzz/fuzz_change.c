/*
 * fuzz_change - libFuzzer entry point for the worker's path after parsing:
 * mapping lookup, change building, coalescing and Cypher building
 * (mapping.c, change.c, cypher.c), and for the mapping loader itself.
 *
 * Two kinds of input, told apart by the first byte:
 *  - 'M' then a libconfig text: loaded as a mapping file (through a memfd,
 *    since mapping_load takes a path); when it loads, every statement of
 *    every table is built, so a mapping that passes validation can never
 *    make the Cypher builder misbehave.
 *  - anything else: up to EVENTS_MAX Kafka message values separated by the
 *    byte 0x1e (ASCII record separator). Each is parsed, looked up in the
 *    real mapping (schemas/mapping.cfg, or NEXUS_MAPPING) and turned into a
 *    change as a worker does; the changes are coalesced and the statement
 *    of each is built. An event naming no mapped table is also tried
 *    against a table chosen from its bytes, so hostile rows reach
 *    change.c whatever their table name says.
 *
 * Oracle beyond the sanitizers: labels, types and keys come only from the
 * mapping, so a statement must never contain a value from the event. A
 * key value that holds a quote, backtick or brace and appears in the
 * statement text aborts the run.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "change.h"
#include "cypher.h"
#include "event.h"
#include "mapping.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define EVENTS_MAX 8
#define EVENT_SEP 0x1e
/* What the worker allows a statement (apply.c), with room to spare. */
#define FUZZ_STMT_MAX (1u << 20)

static struct mapping *fuzz_map;

/* The real mapping, loaded once; a fuzz run without it is meaningless. */
static const struct mapping *fuzz_mapping(void)
{
    char errstr[512];
    const char *path;

    if (fuzz_map)
        return fuzz_map;
    path = getenv("NEXUS_MAPPING");
    if (!path || !*path)
        path = "schemas/mapping.cfg";
    if (mapping_load(path, &fuzz_map, errstr, sizeof(errstr)) != NS_OK) {
        fprintf(stderr, "fuzz_change: %s\n", errstr);
        abort();
    }
    return fuzz_map;
}

/* A key value that could only be in the text by leaking from the event. */
static void check_no_leak(const char *stmt, const char *value)
{
    if (strlen(value) < 4 || !strpbrk(value, "'\"`{}"))
        return;
    if (strstr(stmt, value)) {
        fprintf(stderr, "fuzz_change: event value '%s' in statement:\n%s\n",
                value, stmt);
        abort();
    }
}

static void build_statement(const struct mapping *map, const struct change *ch)
{
    struct buf b;
    char *row;

    buf_init(&b, FUZZ_STMT_MAX);
    if (cypher_statement(map, ch->tbl, ch->action, ch->shape, &b) == NS_OK) {
        check_no_leak(buf_str(&b), ch->key_values[0]);
        check_no_leak(buf_str(&b), ch->key_values[1]);
    }
    buf_free(&b);
    /* The parameters travel as JSON: the row must always print. */
    row = cJSON_PrintUnformatted(ch->row);
    if (!row)
        abort();
    free(row);
}

static const struct mapping_table *pick_table(const struct mapping *map,
                                              const struct event *ev)
{
    const struct mapping_table *tbl = mapping_find(map, ev->table);
    size_t h = 0;

    if (tbl && tbl->kind != MAPPING_NONE)
        return tbl;
    for (const char *p = ev->table; *p; p++)
        h = h * 31 + (unsigned char)*p;
    for (size_t i = 0; i < map->table_count; i++) {
        tbl = &map->tables[(h + i) % map->table_count];
        if (tbl->kind != MAPPING_NONE)
            return tbl;
    }
    return NULL;
}

static void fuzz_events(const uint8_t *data, size_t size)
{
    const struct mapping *map = fuzz_mapping();
    struct event *evs[EVENTS_MAX] = {0};
    struct change changes[EVENTS_MAX];
    size_t nev = 0, nch = 0, start = 0;
    char errstr[256];

    memset(changes, 0, sizeof(changes));
    for (size_t i = 0; i <= size && nev < EVENTS_MAX; i++) {
        if (i < size && data[i] != EVENT_SEP)
            continue;
        const uint8_t *part = data + start;
        size_t len = i - start;
        start = i + 1;
        if (event_is_tombstone(part, len))
            continue;
        if (event_parse(part, len, &evs[nev], errstr, sizeof(errstr)) != NS_OK)
            continue;
        const struct mapping_table *tbl = pick_table(map, evs[nev]);
        enum change_result res;
        if (tbl && change_from_event(map, tbl, evs[nev], 0, nev, &changes[nch],
                                     &res, errstr, sizeof(errstr)) == NS_OK &&
            res == CHANGE_READY)
            nch++;
        nev++;
    }
    for (size_t i = 0; i < nch; i++)
        build_statement(map, &changes[i]);
    nch = change_coalesce(changes, nch);
    for (size_t i = 0; i < nch; i++) {
        build_statement(map, &changes[i]);
        change_clear(&changes[i]);
    }
    for (size_t i = 0; i < nev; i++)
        event_free(evs[i]);
}

/* Every statement a loaded mapping can produce, for a few shapes. */
static void build_all(const struct mapping *map)
{
    static const uint64_t shapes[] = {0, 1, UINT64_MAX, 0x5555555555555555ull};
    struct buf b;

    buf_init(&b, FUZZ_STMT_MAX);
    (void)cypher_schema_statements(map, &b);
    for (size_t t = 0; t < map->table_count; t++) {
        const struct mapping_table *tbl = &map->tables[t];
        if (tbl->kind == MAPPING_NONE)
            continue;
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
            buf_reset(&b);
            (void)cypher_statement(map, tbl, CHANGE_UPSERT, shapes[s], &b);
            buf_reset(&b);
            (void)cypher_statement(map, tbl, CHANGE_DELETE, shapes[s], &b);
        }
        if (tbl->label)
            (void)cypher_label_key(map, tbl->label);
    }
    buf_free(&b);
}

static void fuzz_mapping_text(const uint8_t *data, size_t size)
{
    struct mapping *map = NULL;
    char path[64], errstr[512];
    int fd;

    fd = memfd_create("fuzz-mapping", 0);
    if (fd < 0)
        abort();
    if (size && write(fd, data, size) != (ssize_t)size)
        abort();
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    if (mapping_load(path, &map, errstr, sizeof(errstr)) == NS_OK) {
        build_all(map);
        mapping_free(map);
    }
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 0 && data[0] == 'M')
        fuzz_mapping_text(data + 1, size - 1);
    else
        fuzz_events(data, size);
    return 0;
}
