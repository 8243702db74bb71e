/*
 * pgstatus_client - drive pg_status_write() from JSON lines.
 *
 *   pgstatus_client CONNINFO MAPPING_FILE
 *
 * Each stdin line: {"rows":[{"table":..,"outcome":"SUCCESS"|"FAILED",
 * "keys":[..],"version":N,"element_id":..|null,"error":..|null}..],
 * "hold_ms":N?,"timeout_ms":N?}; timeout_ms sets the result bound
 * (pg_status_set_timeout, 0 the default); with hold_ms, pg_status_send, a sleep of hold_ms, then
 * pg_status_wait (send_ms and wait_ms in the answer).
 * Each stdout line: {"err":..,"errstr":..,"ms":..}. One writer serves all
 * lines, so a test can break its connection between two of them.
 */
#include "pgstatus.h"

#include <time.h>

#include "common.h"
#include "log.h"
#include "mapping.h"

static const char *opt_str(const cJSON *obj, const char *name)
{
    return tc_str(obj, name, NULL);
}

static int run_line(struct pg_status *ps, const struct mapping *map,
                    const char *line)
{
    cJSON *req = cJSON_Parse(line);
    cJSON *ans = cJSON_CreateObject();
    struct pg_status_row *rows = NULL;
    const cJSON *list;
    const cJSON *it;
    char errstr[1024] = "";
    size_t n = 0;
    double t0, hold_ms;
    enum ns_err err;

    if (!req || !ans) {
        cJSON_Delete(req);
        cJSON_Delete(ans);
        fprintf(stderr, "pgstatus_client: bad request line\n");
        return 1;
    }
    list = cJSON_GetObjectItemCaseSensitive(req, "rows");
    rows = calloc((size_t)cJSON_GetArraySize(list) + 1, sizeof(*rows));
    cJSON_ArrayForEach(it, list) {
        const cJSON *keys = cJSON_GetObjectItemCaseSensitive(it, "keys");
        const char *table = tc_str(it, "table", "");

        rows[n].tbl = mapping_find(map, table);
        rows[n].outcome = strcmp(tc_str(it, "outcome", ""), "FAILED") == 0 ?
                          PG_STATUS_FAILED : PG_STATUS_SUCCESS;
        for (int k = 0; k < 2 && k < cJSON_GetArraySize(keys); k++) {
            const cJSON *key = cJSON_GetArrayItem(keys, k);

            rows[n].keys[k] = cJSON_IsString(key) ? key->valuestring : NULL;
        }
        rows[n].version = (int64_t)tc_num(it, "version", 0);
        rows[n].element_id = opt_str(it, "element_id");
        rows[n].error = opt_str(it, "error");
        n++;
    }
    if (tc_num(req, "timeout_ms", -1) >= 0)
        pg_status_set_timeout(ps, (int)tc_num(req, "timeout_ms", 0));
    t0 = tc_now_ms();
    hold_ms = tc_num(req, "hold_ms", -1);
    if (hold_ms < 0) {
        err = pg_status_write(ps, rows, n, errstr, sizeof(errstr));
    } else {
        /* send, work for hold_ms, then wait: the pipelined write */
        err = pg_status_send(ps, rows, n, errstr, sizeof(errstr));
        cJSON_AddNumberToObject(ans, "send_ms", tc_now_ms() - t0);
        if (!err) {
            struct timespec ts = {(time_t)(hold_ms / 1000),
                                  (long)((int64_t)hold_ms % 1000) * 1000000L};
            double t1;

            nanosleep(&ts, NULL);
            t1 = tc_now_ms();
            err = pg_status_wait(ps, errstr, sizeof(errstr));
            cJSON_AddNumberToObject(ans, "wait_ms", tc_now_ms() - t1);
        }
    }
    cJSON_AddStringToObject(ans, "err", ns_err_str(err));
    cJSON_AddStringToObject(ans, "errstr", errstr);
    cJSON_AddNumberToObject(ans, "ms", tc_now_ms() - t0);
    free(rows);
    cJSON_Delete(req);
    return tc_answer(ans);
}

int main(int argc, char **argv)
{
    struct mapping *map = NULL;
    struct pg_status *ps = NULL;
    char errstr[512];
    char *line = NULL;
    size_t cap = 0;
    int rc = 1;
    enum ns_err err;

    if (argc != 3) {
        fprintf(stderr, "usage: pgstatus_client CONNINFO MAPPING_FILE\n");
        return 2;
    }
    log_setup(NS_LOG_WARN, 0, "pgstatus_client");
    err = mapping_load(argv[2], &map, errstr, sizeof(errstr));
    if (!err)
        err = pg_status_new(argv[1], map, &ps, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "pgstatus_client: %s: %s\n", ns_err_str(err),
                errstr);
        goto cleanup;
    }
    while (getline(&line, &cap, stdin) > 0) {
        if (run_line(ps, map, line))
            goto cleanup;
    }
    rc = 0;

cleanup:
    free(line);
    pg_status_free(ps);
    mapping_free(map);
    return rc;
}
