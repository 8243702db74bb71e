/*
 * test_neo4j - data-driven tests of neo4j_classify(): which Neo4j status
 * codes are the request's fault (DLQ) and which are retried.
 *
 * Usage: test_neo4j [DIR]   (default tests/cases/neo4j)
 *
 * Every .json file in DIR is one case:
 *   {"comment": "...",                       optional
 *    "code": "Neo.ClientError.Cluster.NotALeader" | null,
 *    "class": "permanent" | "transient"}
 * An unknown member fails the case, so typos do not pass silently.
 *
 * Prints "ok NAME" or "not ok NAME: why" per case, then "N passed, N failed";
 * exits 1 when any case failed.
 */
#include "neo4j.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cases.h"
#include "err.h"

#define CASE_MAX_BYTES (1u << 16)

static const char *const known[] = {"comment", "code", "class"};

static int run_case(const char *path, char *why, size_t why_size)
{
    char *text = NULL;
    cJSON *c = NULL;
    const cJSON *code, *cls;
    enum ns_err want, got;
    int rc = -1;

    text = case_read_file(path, CASE_MAX_BYTES, NULL);
    c = text ? cJSON_Parse(text) : NULL;
    if (!c) {
        case_why(why, why_size, "cannot read or parse the case");
        goto cleanup;
    }
    if (CASE_CHECK_KEYS(c, known, "case", why, why_size))
        goto cleanup;
    code = cJSON_GetObjectItemCaseSensitive(c, "code");
    cls = cJSON_GetObjectItemCaseSensitive(c, "class");
    if (!(cJSON_IsString(code) || cJSON_IsNull(code)) ||
        !cJSON_IsString(cls)) {
        case_why(why, why_size, "needs \"code\" (a string or null) and "
                 "\"class\"");
        goto cleanup;
    }
    if (strcmp(cls->valuestring, "permanent") == 0) {
        want = NS_ERR_NEO4J_PERMANENT;
    } else if (strcmp(cls->valuestring, "transient") == 0) {
        want = NS_ERR_NEO4J_TRANSIENT;
    } else {
        case_why(why, why_size, "unknown class '%s'", cls->valuestring);
        goto cleanup;
    }
    got = neo4j_classify(cJSON_IsString(code) ? code->valuestring : NULL);
    if (got != want) {
        case_why(why, why_size, "%s: got %s, want %s",
                 cJSON_IsString(code) ? code->valuestring : "(null)",
                 ns_err_str(got), ns_err_str(want));
        goto cleanup;
    }
    rc = 0;
cleanup:
    cJSON_Delete(c);
    free(text);
    return rc;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "tests/cases/neo4j";
    int passed = 0, failed = 0;

    if (case_run_dir(dir, run_case, &passed, &failed) < 0) {
        fprintf(stderr, "test_neo4j: cannot read %s\n", dir);
        return 1;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
