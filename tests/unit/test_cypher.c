/*
 * test_cypher - data-driven cases for event -> change -> Cypher.
 *
 * Each tests/cases/cypher/NAME.json is
 *   {"table": "...", "event": {Debezium payload}, "before_event": {...}?,
 *    "expect": {"result": "ready"|"skip"|"error", "error": "substring",
 *               "action": "upsert"|"delete", "row": {...parameters...},
 *               "cypher": "the whole statement text"}}
 * "before_event" is a first change to the same key, coalesced with the
 * event (for the TOAST carry-over cases). With --update the expected
 * cypher and row are rewritten from what the code produces (review the
 * diff before committing).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "cases.h"
#include "change.h"
#include "cypher.h"
#include "event.h"
#include "mapping.h"

static int build_change(const struct mapping *map, const cJSON *event_json,
                        struct change *ch, enum change_result *res,
                        char *errstr, size_t errstr_size, enum ns_err *err)
{
    char *text = cJSON_PrintUnformatted(event_json);
    struct event *ev = NULL;
    const struct mapping_table *tbl;

    *err = event_parse(text, strlen(text), &ev, errstr, errstr_size);
    free(text);
    if (*err)
        return -1;
    tbl = mapping_find(map, ev->table);
    if (!tbl) {
        snprintf(errstr, errstr_size, "table %s is not mapped", ev->table);
        *err = NS_ERR_SCHEMA;
        event_free(ev);
        return -1;
    }
    *err = change_from_event(map, tbl, ev, 0, 0, ch, res, errstr, errstr_size);
    event_free(ev);
    return *err ? -1 : 0;
}

/* Returns NULL when the case passes, else a reason (static or errbuf). */
static const char *run_case(const struct mapping *map, cJSON *doc, int update,
                            char *errbuf, size_t errbuf_size)
{
    const cJSON *expect = cJSON_GetObjectItem(doc, "expect");
    const char *want = cJSON_GetStringValue(cJSON_GetObjectItem(expect, "result"));
    struct change chs[2];
    enum change_result res = CHANGE_SKIP;
    enum ns_err err = NS_OK;
    char errstr[512] = "";
    struct buf text;
    const char *fail = NULL;
    size_t n = 0;

    memset(chs, 0, sizeof(chs));
    buf_init(&text, 1 << 20);
    if (!want)
        return "case has no expect.result";
    if (cJSON_GetObjectItem(doc, "before_event")) {
        enum change_result r0;
        if (build_change(map, cJSON_GetObjectItem(doc, "before_event"), &chs[0],
                         &r0, errstr, sizeof(errstr), &err) || r0 != CHANGE_READY) {
            snprintf(errbuf, errbuf_size, "before_event: %s", errstr);
            return errbuf;
        }
        n = 1;
    }
    build_change(map, cJSON_GetObjectItem(doc, "event"), &chs[n], &res, errstr,
                 sizeof(errstr), &err);
    if (strcmp(want, "error") == 0) {
        const char *sub = cJSON_GetStringValue(cJSON_GetObjectItem(expect, "error"));
        if (!err)
            fail = "expected an error, got none";
        else if (sub && !strstr(errstr, sub)) {
            snprintf(errbuf, errbuf_size, "error \"%s\" lacks \"%s\"", errstr, sub);
            fail = errbuf;
        }
        goto done;
    }
    if (err) {
        snprintf(errbuf, errbuf_size, "unexpected error: %s", errstr);
        fail = errbuf;
        goto done;
    }
    if (strcmp(want, "skip") == 0) {
        if (res != CHANGE_SKIP)
            fail = "expected skip, got a change";
        goto done;
    }
    if (res != CHANGE_READY) {
        fail = "expected a change, got skip";
        goto done;
    }
    n = change_coalesce(chs, n + 1);
    if (n != 1) {
        fail = "coalescing left more than one change";
        goto done;
    }
    {
        const char *action = cJSON_GetStringValue(cJSON_GetObjectItem(expect, "action"));
        const char *got_action = chs[0].action == CHANGE_UPSERT ? "upsert" : "delete";
        cJSON *want_row = cJSON_GetObjectItem(expect, "row");
        const char *want_cypher = cJSON_GetStringValue(cJSON_GetObjectItem(expect, "cypher"));

        if (cypher_statement(map, chs[0].tbl, chs[0].action, chs[0].shape, &text)) {
            fail = "could not build the statement";
            goto done;
        }
        if (update) {
            cJSON *e = (cJSON *)expect;
            cJSON_DeleteItemFromObject(e, "action");
            cJSON_DeleteItemFromObject(e, "row");
            cJSON_DeleteItemFromObject(e, "cypher");
            cJSON_AddItemToObject(e, "action", cJSON_CreateString(got_action));
            cJSON_AddItemToObject(e, "row", cJSON_Duplicate(chs[0].row, 1));
            cJSON_AddItemToObject(e, "cypher", cJSON_CreateString(buf_str(&text)));
            goto done;
        }
        if (!action || strcmp(action, got_action) != 0) {
            snprintf(errbuf, errbuf_size, "action %s, expected %s", got_action,
                     action ? action : "(none)");
            fail = errbuf;
        } else if (!want_row || !cJSON_Compare(want_row, chs[0].row, 1)) {
            char *got = cJSON_PrintUnformatted(chs[0].row);
            snprintf(errbuf, errbuf_size, "row differs, got %s", got);
            free(got);
            fail = errbuf;
        } else if (!want_cypher || strcmp(want_cypher, buf_str(&text)) != 0) {
            snprintf(errbuf, errbuf_size, "cypher differs, got:\n%s", buf_str(&text));
            fail = errbuf;
        }
    }
done:
    for (size_t i = 0; i < 2; i++)
        change_clear(&chs[i]);
    buf_free(&text);
    return fail;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
    const char *dir = "tests/cases/cypher", *mapping_path = "schemas/mapping.cfg";
    struct mapping *map = NULL;
    struct dirent **names = NULL;
    int update = 0, passed = 0, failed = 0, n;
    char errstr[512];

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--update") == 0)
            update = 1;
        else
            dir = argv[i];
    }
    if (mapping_load(mapping_path, &map, errstr, sizeof(errstr))) {
        fprintf(stderr, "test_cypher: %s\n", errstr);
        return 2;
    }
    n = scandir(dir, &names, NULL, by_name);
    if (n < 0) {
        fprintf(stderr, "test_cypher: could not read %s\n", dir);
        mapping_free(map);
        return 2;
    }
    for (int i = 0; i < n; i++) {
        char path[1024], errbuf[4096];
        const char *fail;
        char *text;
        cJSON *doc;
        size_t len = strlen(names[i]->d_name);

        if (len < 5 || strcmp(names[i]->d_name + len - 5, ".json") != 0) {
            free(names[i]);
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        text = case_read_file(path, 1u << 20, NULL);
        doc = text ? cJSON_Parse(text) : NULL;
        fail = doc ? run_case(map, doc, update, errbuf, sizeof(errbuf))
                   : "case file is not JSON";
        if (update && doc && !fail) {
            char *out = cJSON_Print(doc);
            FILE *f = fopen(path, "w");
            if (f) {
                fprintf(f, "%s\n", out);
                fclose(f);
            }
            free(out);
        }
        if (fail) {
            printf("not ok %s: %s\n", names[i]->d_name, fail);
            failed++;
        } else {
            printf("ok %s\n", names[i]->d_name);
            passed++;
        }
        cJSON_Delete(doc);
        free(text);
        free(names[i]);
    }
    free(names);
    mapping_free(map);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
