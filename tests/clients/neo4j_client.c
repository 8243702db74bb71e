/*
 * neo4j_client - drive neo4j_run() from JSON lines.
 *
 *   neo4j_client URL DB USER PASSWORD TIMEOUT_MS
 *
 * NEXUS_NEO4J_API (auto, query, tx) chooses the transport, as in a worker.
 *
 * Each stdin line: {"statements":[{"statement":..,"parameters":{..}}..],
 * "repeat":N}. Each stdout line: {"err":..,"errstr":..,"failed_stmt":..,
 * "results":[..],"ms":[..],"params_intact":true}. The request is run N
 * times (default 1) on one client; "ms" has the time of each run and
 * "results" those of the last. params_intact says the borrowed parameter
 * objects are unchanged after the runs.
 */
#include "neo4j.h"

#include "common.h"
#include "log.h"

static int run_line(struct neo4j_client *nc, const char *line)
{
    cJSON *req = cJSON_Parse(line);
    cJSON *ans = cJSON_CreateObject();
    cJSON *copy = NULL;
    cJSON *results = NULL;
    cJSON *ms = NULL;
    struct neo4j_stmt *stmts = NULL;
    const cJSON *list;
    const cJSON *it;
    char errstr[1024] = "";
    size_t n = 0, failed = 0;
    int repeat;
    enum ns_err err = NS_OK;

    if (!req || !ans) {
        cJSON_Delete(req);
        cJSON_Delete(ans);
        fprintf(stderr, "neo4j_client: bad request line\n");
        return 1;
    }
    list = cJSON_GetObjectItemCaseSensitive(req, "statements");
    repeat = (int)tc_num(req, "repeat", 1);
    n = (size_t)cJSON_GetArraySize(list);
    stmts = calloc(n ? n : 1, sizeof(*stmts));
    copy = cJSON_Duplicate(list, 1);
    ms = cJSON_AddArrayToObject(ans, "ms");
    n = 0;
    cJSON_ArrayForEach(it, list) {
        stmts[n].cypher = tc_str(it, "statement", "");
        stmts[n].params = cJSON_GetObjectItemCaseSensitive(it, "parameters");
        n++;
    }
    for (int r = 0; r < repeat; r++) {
        double t0 = tc_now_ms();

        cJSON_Delete(results);
        results = NULL;
        errstr[0] = '\0';
        err = neo4j_run(nc, stmts, n, &results, &failed, errstr,
                        sizeof(errstr));
        cJSON_AddItemToArray(ms, cJSON_CreateNumber(tc_now_ms() - t0));
    }
    cJSON_AddStringToObject(ans, "err", ns_err_str(err));
    cJSON_AddStringToObject(ans, "errstr", errstr);
    cJSON_AddNumberToObject(ans, "failed_stmt", (double)failed);
    cJSON_AddBoolToObject(ans, "results_null", results == NULL);
    cJSON_AddBoolToObject(ans, "params_intact", cJSON_Compare(copy, list, 1));
    if (results)
        cJSON_AddItemToObject(ans, "results", results);
    cJSON_Delete(copy);
    free(stmts);
    cJSON_Delete(req);
    return tc_answer(ans);
}

int main(int argc, char **argv)
{
    struct neo4j_client *nc = NULL;
    char errstr[512];
    char *line = NULL;
    size_t cap = 0;
    int rc = 1;
    enum ns_err err;

    if (argc != 6) {
        fprintf(stderr, "usage: neo4j_client URL DB USER PASSWORD "
                "TIMEOUT_MS\n");
        return 2;
    }
    log_setup(NS_LOG_WARN, 0, "neo4j_client");
    err = neo4j_client_new(argv[1], argv[2], argv[3], argv[4],
                           strtol(argv[5], NULL, 10), &nc, errstr,
                           sizeof(errstr));
    if (err) {
        fprintf(stderr, "neo4j_client: %s: %s\n", ns_err_str(err), errstr);
        goto cleanup;
    }
    /* the transport under test: NEXUS_NEO4J_API as the workers read it */
    if (getenv("NEXUS_NEO4J_API")) {
        int api = neo4j_api_parse(getenv("NEXUS_NEO4J_API"));

        if (api < 0) {
            fprintf(stderr, "neo4j_client: NEXUS_NEO4J_API is not auto, "
                    "query or tx\n");
            goto cleanup;
        }
        neo4j_client_set_api(nc, (enum neo4j_api)api);
    }
    while (getline(&line, &cap, stdin) > 0) {
        if (run_line(nc, line))
            goto cleanup;
    }
    rc = 0;

cleanup:
    free(line);
    neo4j_client_free(nc);
    return rc;
}
