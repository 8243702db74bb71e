/*
 * test_event - data-driven tests of event.c.
 *
 * Usage: test_event [DIR]   (default tests/cases/event)
 *
 * Every .json file in DIR is one case:
 *   {"input": "<Kafka value as a JSON string>"      one of the input_* forms
 *    "input_hex": "7b22..."                          raw bytes
 *    "input_parts": [["{\"a\":", 1], ["[", 70]]      text repeated, joined
 *    "input_null": true                              NULL pointer, length 0
 *    "expect": {"error": null | "parse" | "schema",
 *               "reason": "substring of errstr",
 *               "tombstone": false, "op": "c", "table": "users",
 *               "schema": "public", "lsn": 1, "tx_id": 1, "ts_ms": 1,
 *               "last_commit_lsn": 1, "sequence_lsn": 1, "snapshot": 0,
 *               "before": {...} | null, "after": {...} | null,
 *               "row": "after" | "before" | null,
 *               "value_schema": true, "scales": {"column": 2}}}
 * Members of "expect" that are absent are not checked; an unknown member
 * fails the case, so typos do not pass silently.
 *
 * Prints "ok NAME" or "not ok NAME: why" per case, then "N passed, N failed";
 * exits 1 when any case failed.
 */
#include "event.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "cases.h"

#define CASE_MAX_BYTES (4u * 1024u * 1024u)
#define INPUT_MAX_BYTES (64u * 1024u * 1024u)

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Build the payload a case describes. *data is malloc'd (or NULL for
 * input_null); returns 0, or -1 with why set.
 */
static int case_input(const cJSON *c, char **data, size_t *len, char *why,
                      size_t why_size)
{
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(c, "input");
    const cJSON *hex = cJSON_GetObjectItemCaseSensitive(c, "input_hex");
    const cJSON *parts = cJSON_GetObjectItemCaseSensitive(c, "input_parts");
    const cJSON *isnull = cJSON_GetObjectItemCaseSensitive(c, "input_null");
    const cJSON *part;
    size_t total = 0, n, i;
    char *p;

    *data = NULL;
    *len = 0;
    if (!!in + !!hex + !!parts + !!isnull != 1) {
        case_why(why, why_size, "case needs exactly one input form");
        return -1;
    }
    if (isnull)
        return 0;
    if (in) {
        if (!cJSON_IsString(in)) {
            case_why(why, why_size, "input is not a string");
            return -1;
        }
        *data = strdup(in->valuestring);
        *len = strlen(in->valuestring);
        return *data ? 0 : -1;
    }
    if (hex) {
        if (!cJSON_IsString(hex) || strlen(hex->valuestring) % 2) {
            case_why(why, why_size, "input_hex is not an even hex string");
            return -1;
        }
        n = strlen(hex->valuestring) / 2;
        *data = malloc(n + 1);
        if (!*data)
            return -1;
        for (i = 0; i < n; i++) {
            int hi = hexval(hex->valuestring[2 * i]);
            int lo = hexval(hex->valuestring[2 * i + 1]);

            if (hi < 0 || lo < 0) {
                case_why(why, why_size, "input_hex has a non-hex digit");
                free(*data);
                *data = NULL;
                return -1;
            }
            (*data)[i] = (char)(hi << 4 | lo);
        }
        *len = n;
        return 0;
    }
    cJSON_ArrayForEach(part, parts) {
        const cJSON *s = cJSON_GetArrayItem(part, 0);
        const cJSON *k = cJSON_GetArrayItem(part, 1);

        if (!cJSON_IsString(s) || !cJSON_IsNumber(k) || k->valuedouble < 0) {
            case_why(why, why_size, "input_parts needs [string, count]");
            return -1;
        }
        total += strlen(s->valuestring) * (size_t)k->valuedouble;
        if (total > INPUT_MAX_BYTES) {
            case_why(why, why_size, "input_parts is too large");
            return -1;
        }
    }
    *data = malloc(total + 1);
    if (!*data)
        return -1;
    p = *data;
    cJSON_ArrayForEach(part, parts) {
        const char *s = cJSON_GetArrayItem(part, 0)->valuestring;
        size_t slen = strlen(s);
        size_t k = (size_t)cJSON_GetArrayItem(part, 1)->valuedouble;

        for (i = 0; i < k; i++, p += slen)
            memcpy(p, s, slen);
    }
    *p = '\0';
    *len = total;
    return 0;
}

static int check_int(const cJSON *exp, const char *key, int64_t got,
                     char *why, size_t why_size)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(exp, key);

    if (!e)
        return 0;
    if (!cJSON_IsNumber(e) || (double)got != e->valuedouble) {
        case_why(why, why_size, "%s is %lld, expected %.17g", key,
                (long long)got, cJSON_IsNumber(e) ? e->valuedouble : -999.0);
        return -1;
    }
    return 0;
}

static int check_str(const cJSON *exp, const char *key, const char *got,
                     char *why, size_t why_size)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(exp, key);

    if (!e)
        return 0;
    if (!cJSON_IsString(e) || strcmp(e->valuestring, got) != 0) {
        case_why(why, why_size, "%s is '%s', expected '%s'", key, got,
                cJSON_IsString(e) ? e->valuestring : "?");
        return -1;
    }
    return 0;
}

static int check_image(const cJSON *exp, const char *key, const cJSON *got,
                       char *why, size_t why_size)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(exp, key);

    if (!e)
        return 0;
    if (cJSON_IsNull(e) ? got != NULL : !case_json_equal(e, got)) {
        case_why(why, why_size, "%s image differs from the expected one",
                key);
        return -1;
    }
    return 0;
}

/* Checks of a successfully parsed event against "expect". */
static int check_event(const struct event *ev, const cJSON *exp, char *why,
                       size_t why_size)
{
    const cJSON *e, *sc;
    const struct cJSON *row = event_row(ev);
    char op[2] = {(char)ev->op, '\0'};

    if (check_str(exp, "op", op, why, why_size) ||
        check_str(exp, "table", ev->table, why, why_size) ||
        check_str(exp, "schema", ev->schema, why, why_size) ||
        check_int(exp, "lsn", ev->lsn, why, why_size) ||
        check_int(exp, "tx_id", ev->tx_id, why, why_size) ||
        check_int(exp, "ts_ms", ev->ts_ms, why, why_size) ||
        check_int(exp, "envelope_ts_ms", ev->envelope_ts_ms, why,
                  why_size) ||
        check_int(exp, "last_commit_lsn", ev->last_commit_lsn, why,
                  why_size) ||
        check_int(exp, "sequence_lsn", ev->sequence_lsn, why, why_size) ||
        check_int(exp, "snapshot", ev->snapshot, why, why_size) ||
        check_image(exp, "before", ev->before, why, why_size) ||
        check_image(exp, "after", ev->after, why, why_size))
        return -1;
    e = cJSON_GetObjectItemCaseSensitive(exp, "row");
    if (e) {
        const struct cJSON *want = NULL;

        if (cJSON_IsString(e) && strcmp(e->valuestring, "after") == 0)
            want = ev->after;
        else if (cJSON_IsString(e) && strcmp(e->valuestring, "before") == 0)
            want = ev->before;
        if (row != want || (!cJSON_IsNull(e) && !row)) {
            case_why(why, why_size, "event_row is not the expected image");
            return -1;
        }
    }
    e = cJSON_GetObjectItemCaseSensitive(exp, "value_schema");
    if (e && !!cJSON_IsTrue(e) != !!ev->value_schema) {
        case_why(why, why_size, "value_schema is %s",
                ev->value_schema ? "set" : "NULL");
        return -1;
    }
    e = cJSON_GetObjectItemCaseSensitive(exp, "scales");
    cJSON_ArrayForEach(sc, e) {
        int got = event_column_scale(ev, sc->string);

        if (!cJSON_IsNumber(sc) || got != (int)sc->valuedouble) {
            case_why(why, why_size, "scale of %s is %d, expected %g",
                    sc->string, got, sc->valuedouble);
            return -1;
        }
    }
    return 0;
}

static const char *const expect_keys[] = {
    "error", "reason", "tombstone", "op", "table", "schema", "lsn",
    "tx_id", "ts_ms", "envelope_ts_ms", "last_commit_lsn", "sequence_lsn",
    "snapshot",
    "before", "after",
    "row", "value_schema", "scales"};

/* Run one case file; 0 when it passes, else -1 with why set. */
static int run_case(const char *path, char *why, size_t why_size)
{
    char *text = NULL, *data = NULL;
    size_t text_len, len;
    cJSON *c = NULL;
    const cJSON *exp, *e;
    struct event *ev = NULL, *ev2 = NULL;
    char errstr[512], tiny[8];
    enum ns_err err, err2;
    const char *want;
    int rc = -1, tomb;

    text = case_read_file(path, CASE_MAX_BYTES, &text_len);
    if (!text) {
        case_why(why, why_size, "cannot read the case file");
        goto cleanup;
    }
    c = cJSON_Parse(text);
    exp = cJSON_GetObjectItemCaseSensitive(c, "expect");
    if (!cJSON_IsObject(exp)) {
        case_why(why, why_size, "case file is not {\"input\"..,\"expect\"..}");
        goto cleanup;
    }
    if (CASE_CHECK_KEYS(exp, expect_keys, "expect", why, why_size) != 0)
        goto cleanup;
    if (case_input(c, &data, &len, why, why_size) != 0)
        goto cleanup;

    tomb = event_is_tombstone(data, len);
    e = cJSON_GetObjectItemCaseSensitive(exp, "tombstone");
    if (e && !!cJSON_IsTrue(e) != !!tomb) {
        case_why(why, why_size, "event_is_tombstone gave %d", tomb);
        goto cleanup;
    }

    err = event_parse(data, len, &ev, errstr, sizeof(errstr));
    e = cJSON_GetObjectItemCaseSensitive(exp, "error");
    want = cJSON_IsString(e) ? e->valuestring : "ok";
    if (strcmp(ns_err_str(err), want) != 0) {
        case_why(why, why_size, "got %s (%s), expected %s", ns_err_str(err),
                err ? errstr : "no error", want);
        goto cleanup;
    }
    if (err && ev) {
        case_why(why, why_size, "failed parse left an event behind");
        goto cleanup;
    }
    if (!err && !ev) {
        case_why(why, why_size, "successful parse gave no event");
        goto cleanup;
    }
    if (!err && tomb) {
        case_why(why, why_size, "a tombstone parsed as an event");
        goto cleanup;
    }
    e = cJSON_GetObjectItemCaseSensitive(exp, "reason");
    if (e && (!cJSON_IsString(e) || !strstr(errstr, e->valuestring))) {
        case_why(why, why_size, "reason '%s' lacks '%s'", errstr,
                cJSON_IsString(e) ? e->valuestring : "?");
        goto cleanup;
    }
    if (!err && check_event(ev, exp, why, why_size) != 0)
        goto cleanup;

    /* Same verdict with no error buffer and with a tiny one. */
    err2 = event_parse(data, len, &ev2, NULL, 0);
    event_free(ev2);
    ev2 = NULL;
    if (err2 != err) {
        case_why(why, why_size, "errstr NULL changed the result");
        goto cleanup;
    }
    err2 = event_parse(data, len, &ev2, tiny, sizeof(tiny));
    if (err2 != err || strlen(tiny) >= sizeof(tiny)) {
        case_why(why, why_size, "a small errstr changed the result");
        goto cleanup;
    }
    rc = 0;

cleanup:
    event_free(ev2);
    event_free(ev);
    cJSON_Delete(c);
    free(data);
    free(text);
    return rc;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "tests/cases/event";
    int passed = 0, failed = 0;

    if (case_run_dir(dir, run_case, &passed, &failed) < 0) {
        fprintf(stderr, "test_event: cannot read %s\n", dir);
        return 1;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
