/*
 * test_convert - data-driven tests of convert.c.
 *
 * Usage: test_convert [DIR]   (default tests/cases/convert)
 *
 * Every .json file in DIR is one case:
 *   {"type": "numeric",          type name as in schemas/mapping.cfg, or
 *    "type_code": 99,            a raw enum col_type value
 *    "value": "MDk=",            the Debezium value; absent means a C NULL
 *    "scale": 2,                 optional, default -1
 *    "expect": 123.45,           the converted value (exact comparison)
 *    "error": null | "schema",   optional, default null
 *    "reason": "substring",      optional, of errstr on error
 *    "unavailable": false}       optional, convert_is_unavailable(value)
 * An unknown member fails the case, so typos do not pass silently.
 *
 * Prints "ok NAME" or "not ok NAME: why" per case, then "N passed, N failed";
 * exits 1 when any case failed.
 */
#include "convert.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "cases.h"

#define CASE_MAX_BYTES (4u * 1024u * 1024u)

static const char *const known[] = {
    "type", "type_code", "value", "scale", "expect", "error", "reason",
    "unavailable", "comment"};

/* Run one case file; 0 when it passes, else -1 with why set. */
static int run_case(const char *path, char *why, size_t why_size)
{
    char *text = NULL, *printed = NULL;
    cJSON *c = NULL, *out = NULL, *out2 = NULL;
    const cJSON *v, *e, *exp;
    char errstr[512], tiny[8];
    enum ns_err err, err2;
    const char *want;
    int rc = -1, type, scale = -1;

    text = case_read_file(path, CASE_MAX_BYTES, NULL);
    if (!text) {
        case_why(why, why_size, "cannot read the case file");
        goto cleanup;
    }
    c = cJSON_Parse(text);
    if (!cJSON_IsObject(c)) {
        case_why(why, why_size, "case file is not a JSON object");
        goto cleanup;
    }
    if (CASE_CHECK_KEYS(c, known, "case", why, why_size) != 0)
        goto cleanup;
    e = cJSON_GetObjectItemCaseSensitive(c, "type");
    if (cJSON_IsString(e)) {
        type = convert_type_parse(e->valuestring);
        if (type < 0) {
            case_why(why, why_size, "unknown type '%s'", e->valuestring);
            goto cleanup;
        }
    } else if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(c,
                                                               "type_code"))) {
        type = (int)cJSON_GetObjectItemCaseSensitive(c, "type_code")
                   ->valuedouble;
    } else {
        case_why(why, why_size, "case needs \"type\" or \"type_code\"");
        goto cleanup;
    }
    e = cJSON_GetObjectItemCaseSensitive(c, "scale");
    if (e)
        scale = (int)e->valuedouble;
    v = cJSON_GetObjectItemCaseSensitive(c, "value");

    e = cJSON_GetObjectItemCaseSensitive(c, "unavailable");
    if (e && !!cJSON_IsTrue(e) != !!convert_is_unavailable(v)) {
        case_why(why, why_size, "convert_is_unavailable gave %d",
                convert_is_unavailable(v));
        goto cleanup;
    }

    err = convert_value(v, (enum col_type)type, scale, &out, errstr,
                        sizeof(errstr));
    e = cJSON_GetObjectItemCaseSensitive(c, "error");
    want = cJSON_IsString(e) ? e->valuestring : "ok";
    if (strcmp(ns_err_str(err), want) != 0) {
        case_why(why, why_size, "got %s (%s), expected %s", ns_err_str(err),
                err ? errstr : "no error", want);
        goto cleanup;
    }
    if (err && out) {
        case_why(why, why_size, "failed conversion left a value behind");
        goto cleanup;
    }
    e = cJSON_GetObjectItemCaseSensitive(c, "reason");
    if (e && (!cJSON_IsString(e) || !strstr(errstr, e->valuestring))) {
        case_why(why, why_size, "reason '%s' lacks '%s'", errstr,
                cJSON_IsString(e) ? e->valuestring : "?");
        goto cleanup;
    }
    if (!err) {
        exp = cJSON_GetObjectItemCaseSensitive(c, "expect");
        if (!exp) {
            case_why(why, why_size, "case without error needs \"expect\"");
            goto cleanup;
        }
        if (!case_json_equal(out, exp)) {
            printed = cJSON_PrintUnformatted(out);
            case_why(why, why_size, "got %s", printed ? printed : "?");
            goto cleanup;
        }
    }

    /* Same verdict with no error buffer and with a tiny one. */
    err2 = convert_value(v, (enum col_type)type, scale, &out2, NULL, 0);
    cJSON_Delete(out2);
    out2 = NULL;
    if (err2 != err) {
        case_why(why, why_size, "errstr NULL changed the result");
        goto cleanup;
    }
    err2 = convert_value(v, (enum col_type)type, scale, &out2, tiny,
                         sizeof(tiny));
    if (err2 != err || strlen(tiny) >= sizeof(tiny)) {
        case_why(why, why_size, "a small errstr changed the result");
        goto cleanup;
    }
    rc = 0;

cleanup:
    cJSON_free(printed);
    cJSON_Delete(out2);
    cJSON_Delete(out);
    cJSON_Delete(c);
    free(text);
    return rc;
}

/* Checks that are not data: the type name table both ways. */
static int check_type_names(char *why, size_t why_size)
{
    int i;

    for (i = 0; i < COL__COUNT; i++) {
        if (convert_type_parse(convert_type_name((enum col_type)i)) != i) {
            case_why(why, why_size, "type %d does not round-trip", i);
            return -1;
        }
    }
    if (strcmp(convert_type_name(COL__COUNT), "unknown") != 0 ||
        convert_type_parse("bogus") != -1 || convert_type_parse(NULL) != -1 ||
        convert_type_parse("TEXT") != -1) {
        case_why(why, why_size, "unknown names are not rejected");
        return -1;
    }
    if (convert_is_unavailable(NULL)) {
        case_why(why, why_size, "NULL is reported unavailable");
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "tests/cases/convert";
    int passed = 0, failed = 0;
    char why[1024];

    if (check_type_names(why, sizeof(why)) == 0) {
        printf("ok builtin-type-names\n");
        passed++;
    } else {
        printf("not ok builtin-type-names: %s\n", why);
        failed++;
    }
    if (case_run_dir(dir, run_case, &passed, &failed) < 0) {
        fprintf(stderr, "test_convert: cannot read %s\n", dir);
        return 1;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
