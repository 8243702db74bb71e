/*
 * test_neo4j_query - data-driven tests of the pure parts of the Query API
 * transport: an answer read into the tx/commit results shape, its errors,
 * the statement body, and the discovery document.
 *
 * Usage: test_neo4j_query [DIR]   (default tests/cases/neo4j_query)
 *
 * Every .json file in DIR is one case, one of:
 *   {"comment": "...",
 *    "answer": <the answer as JSON> | "answer_text": "<raw bytes>",
 *    "err": "ok" | "neo4j_transient" | "parse",
 *    "result": {"columns": [..], "data": [{"row": [..]}, ..]},  (when ok)
 *    "tx_id": "..." (default ""), "code": "..." (default ""),
 *    "errstr": "..." (a prefix the error text must start with)}
 *   {"comment": "...", "discovery": <JSON> | "discovery_text": "...",
 *    "err": "ok" | "parse", "tx": 0|1, "query": 0|1, "version": "..."}
 *   {"comment": "...", "statement": "...", "parameters": {..} | null,
 *    "body": <the JSON body expected>}
 * An unknown member fails the case, so typos do not pass silently.
 *
 * Prints "ok NAME" or "not ok NAME: why" per case, then "N passed, N
 * failed"; exits 1 when any case failed.
 */
#include "neo4j_query.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cases.h"
#include "err.h"

#define CASE_MAX_BYTES (1u << 16)

static const char *const known[] = {
    "comment", "answer", "answer_text", "err", "result", "tx_id", "code",
    "errstr", "discovery", "discovery_text", "tx", "query", "version",
    "statement", "parameters", "body",
};

static const char *str_or(const cJSON *c, const char *name, const char *dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, name);

    return cJSON_IsString(v) ? v->valuestring : dflt;
}

/* The text a case gives as JSON (member name) or raw (name_text); caller
 * frees. */
static char *case_text(const cJSON *c, const char *name, const char *raw)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, name);

    if (v)
        return cJSON_PrintUnformatted(v);
    v = cJSON_GetObjectItemCaseSensitive(c, raw);
    return cJSON_IsString(v) ? strdup(v->valuestring) : NULL;
}

static int run_answer(const cJSON *c, char *why, size_t why_size)
{
    struct neo4j_query_answer ans = {0};
    char errstr[512] = "";
    char *text = case_text(c, "answer", "answer_text");
    const char *want_err = str_or(c, "err", "ok");
    const char *want_errstr = str_or(c, "errstr", "");
    const cJSON *want_result = cJSON_GetObjectItemCaseSensitive(c, "result");
    enum ns_err err;
    int rc = -1;

    if (!text) {
        case_why(why, why_size, "no answer text");
        goto cleanup;
    }
    err = neo4j_query_answer_read(text, strlen(text), &ans, errstr,
                                  sizeof(errstr));
    if (strcmp(ns_err_str(err), want_err) != 0) {
        case_why(why, why_size, "err %s (%s), want %s", ns_err_str(err),
                 errstr, want_err);
        goto cleanup;
    }
    if (err && ans.result) {
        case_why(why, why_size, "a result on failure");
        goto cleanup;
    }
    if (strncmp(errstr, want_errstr, strlen(want_errstr)) != 0) {
        case_why(why, why_size, "errstr '%s', want it to start with '%s'",
                 errstr, want_errstr);
        goto cleanup;
    }
    if (strcmp(ans.tx_id, str_or(c, "tx_id", "")) != 0 ||
        strcmp(ans.code, str_or(c, "code", "")) != 0) {
        case_why(why, why_size, "tx_id '%s' code '%s'", ans.tx_id, ans.code);
        goto cleanup;
    }
    if (!err && !case_json_equal(ans.result, want_result)) {
        char *got = cJSON_PrintUnformatted(ans.result);

        case_why(why, why_size, "result %s", got ? got : "(null)");
        free(got);
        goto cleanup;
    }
    rc = 0;
cleanup:
    neo4j_query_answer_clear(&ans);
    free(text);
    return rc;
}

static int run_discovery(const cJSON *c, char *why, size_t why_size)
{
    struct neo4j_query_discovery d;
    char errstr[512] = "";
    char *text = case_text(c, "discovery", "discovery_text");
    const cJSON *tx = cJSON_GetObjectItemCaseSensitive(c, "tx");
    const cJSON *query = cJSON_GetObjectItemCaseSensitive(c, "query");
    enum ns_err err;
    int rc = -1;

    if (!text) {
        case_why(why, why_size, "no discovery text");
        return -1;
    }
    err = neo4j_query_discovery_read(text, strlen(text), &d, errstr,
                                     sizeof(errstr));
    if (strcmp(ns_err_str(err), str_or(c, "err", "ok")) != 0)
        case_why(why, why_size, "err %s (%s)", ns_err_str(err), errstr);
    else if (!err && (d.tx != (cJSON_IsNumber(tx) ? tx->valueint : 0) ||
                      d.query != (cJSON_IsNumber(query) ? query->valueint : 0)))
        case_why(why, why_size, "tx %d query %d", d.tx, d.query);
    else if (!err && strcmp(d.version, str_or(c, "version", "")) != 0)
        case_why(why, why_size, "version '%s'", d.version);
    else
        rc = 0;
    free(text);
    return rc;
}

static int run_body(const cJSON *c, char *why, size_t why_size)
{
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(c, "parameters");
    struct neo4j_stmt stmt = {str_or(c, "statement", ""),
                              cJSON_IsObject(params) ? params : NULL};
    struct buf b;
    cJSON *got = NULL;
    int rc = -1;

    buf_init(&b, 1 << 20);
    if (neo4j_query_body_write(&b, &stmt) != NS_OK) {
        case_why(why, why_size, "could not write the body");
        goto cleanup;
    }
    got = cJSON_Parse(buf_str(&b));
    if (!case_json_equal(got, cJSON_GetObjectItemCaseSensitive(c, "body"))) {
        case_why(why, why_size, "body %s", buf_str(&b));
        goto cleanup;
    }
    rc = 0;
cleanup:
    cJSON_Delete(got);
    buf_free(&b);
    return rc;
}

static int run_case(const char *path, char *why, size_t why_size)
{
    char *text = NULL;
    cJSON *c = NULL;
    int rc = -1;

    text = case_read_file(path, CASE_MAX_BYTES, NULL);
    c = text ? cJSON_Parse(text) : NULL;
    if (!c) {
        case_why(why, why_size, "cannot read or parse the case");
        goto cleanup;
    }
    if (CASE_CHECK_KEYS(c, known, "case", why, why_size))
        goto cleanup;
    if (cJSON_GetObjectItemCaseSensitive(c, "statement"))
        rc = run_body(c, why, why_size);
    else if (cJSON_GetObjectItemCaseSensitive(c, "discovery") ||
             cJSON_GetObjectItemCaseSensitive(c, "discovery_text"))
        rc = run_discovery(c, why, why_size);
    else
        rc = run_answer(c, why, why_size);
cleanup:
    cJSON_Delete(c);
    free(text);
    return rc;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "tests/cases/neo4j_query";
    int passed = 0, failed = 0;

    if (case_run_dir(dir, run_case, &passed, &failed) < 0) {
        fprintf(stderr, "test_neo4j_query: cannot read %s\n", dir);
        return 1;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
