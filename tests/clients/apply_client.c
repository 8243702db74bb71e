/*
 * apply_client - drive apply_changes() from JSON lines.
 *
 *   apply_client URL DB USER PASSWORD TIMEOUT_MS MAPPING
 *
 * Each stdin line: {"events":[{Debezium event value}..], "force_split":
 * bool, "tick": bool, "stop_at_tick": N}. The events become changes as a
 * worker makes them (change_from_event at epoch 0, then change_coalesce)
 * and go to one apply_changes() call, with struct apply_options when
 * force_split or tick is given (tick counts its calls and asks the split
 * to stop at call stop_at_tick). Each stdout line:
 * {"err":..,"errstr":..,"results":[{"key":..,"status":..,"reason":..,
 * "element_id":..}..],"transactions":N,"statements":N,"ticks":N} with one
 * result per change after coalescing, in their order; or {"err":..,
 * "errstr":..} when an event cannot be made a change.
 */
#include "apply.h"

#include "common.h"
#include "change.h"
#include "event.h"
#include "log.h"
#include "mapping.h"

/* Counts the ticks; asks the split to stop at tick number stop_at (0:
 * never). */
struct ticker {
    int ticks;
    int stop_at;
};

static int count_tick(void *opaque)
{
    struct ticker *t = opaque;

    return ++t->ticks == t->stop_at;
}

static const char *status_name(enum apply_status status)
{
    switch (status) {
    case APPLY_APPLIED: return "applied";
    case APPLY_SKIPPED: return "skipped";
    case APPLY_FAILED: return "failed";
    default: return "pending";
    }
}

/* The changes of the request's events into changes[0..*n); NS_OK, or the
 * error of the first event that is not a change. */
static enum ns_err make_changes(const struct mapping *map, const cJSON *list,
                                struct change *changes, size_t *n,
                                char *errstr, size_t errstr_size)
{
    const cJSON *it;
    enum ns_err err = NS_OK;

    *n = 0;
    cJSON_ArrayForEach(it, list) {
        char *text = cJSON_PrintUnformatted(it);
        struct event *ev = NULL;
        const struct mapping_table *tbl;
        enum change_result result = CHANGE_SKIP;

        err = text ? event_parse(text, strlen(text), &ev, errstr, errstr_size)
                   : NS_ERR_NOMEM;
        cJSON_free(text);
        if (err)
            return err;
        tbl = mapping_find(map, ev->table);
        if (!tbl) {
            ns_err_set(errstr, errstr_size, "unknown table %s", ev->table);
            event_free(ev);
            return NS_ERR_SCHEMA;
        }
        err = change_from_event(map, tbl, ev, 0, *n, &changes[*n], &result,
                                errstr, errstr_size);
        event_free(ev);
        if (err)
            return err;
        if (result == CHANGE_READY)
            (*n)++;
    }
    return NS_OK;
}

static int run_line(struct neo4j_client *nc, const struct mapping *map,
                    const char *line)
{
    cJSON *req = cJSON_Parse(line);
    cJSON *ans = cJSON_CreateObject();
    cJSON *list, *out;
    struct change *changes = NULL;
    struct apply_result *results = NULL;
    struct apply_stats stats = {0, 0};
    struct apply_options opts = {0, NULL, NULL};
    char errstr[1024] = "";
    size_t n = 0, events;
    struct ticker ticker = {0, 0};
    int with_opts;
    enum ns_err err;

    if (!req || !ans) {
        cJSON_Delete(req);
        cJSON_Delete(ans);
        fprintf(stderr, "apply_client: bad request line\n");
        return 1;
    }
    list = cJSON_GetObjectItemCaseSensitive(req, "events");
    events = (size_t)cJSON_GetArraySize(list);
    changes = calloc(events ? events : 1, sizeof(*changes));
    results = calloc(events ? events : 1, sizeof(*results));
    if (!changes || !results) {
        err = NS_ERR_NOMEM;
        ns_err_set(errstr, sizeof(errstr), "out of memory");
        goto answer;
    }
    err = make_changes(map, list, changes, &n, errstr, sizeof(errstr));
    if (err)
        goto answer;
    n = change_coalesce(changes, n);
    opts.force_split = cJSON_IsTrue(
        cJSON_GetObjectItemCaseSensitive(req, "force_split"));
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(req, "tick"))) {
        const cJSON *stop_at =
            cJSON_GetObjectItemCaseSensitive(req, "stop_at_tick");

        opts.tick = count_tick;
        opts.tick_opaque = &ticker;
        if (cJSON_IsNumber(stop_at))
            ticker.stop_at = stop_at->valueint;
    }
    with_opts = opts.force_split || opts.tick;
    err = apply_changes(nc, map, changes, n, results, &stats,
                        with_opts ? &opts : NULL, errstr, sizeof(errstr));
    out = cJSON_AddArrayToObject(ans, "results");
    for (size_t i = 0; out && i < n; i++) {
        cJSON *r = cJSON_CreateObject();

        cJSON_AddItemToArray(out, r);
        cJSON_AddStringToObject(r, "key", changes[i].key);
        cJSON_AddStringToObject(r, "status", status_name(results[i].status));
        cJSON_AddStringToObject(r, "reason", results[i].reason);
        cJSON_AddStringToObject(r, "element_id", results[i].element_id);
    }
    cJSON_AddNumberToObject(ans, "transactions", stats.transactions);
    cJSON_AddNumberToObject(ans, "statements", stats.statements);
    cJSON_AddNumberToObject(ans, "ticks", ticker.ticks);

answer:
    cJSON_AddStringToObject(ans, "err", ns_err_str(err));
    cJSON_AddStringToObject(ans, "errstr", errstr);
    for (size_t i = 0; changes && i < events; i++)
        change_clear(&changes[i]);
    free(changes);
    free(results);
    cJSON_Delete(req);
    return tc_answer(ans);
}

int main(int argc, char **argv)
{
    struct neo4j_client *nc = NULL;
    struct mapping *map = NULL;
    char errstr[512];
    char *line = NULL;
    size_t cap = 0;
    int rc = 1;
    enum ns_err err;

    if (argc != 7) {
        fprintf(stderr, "usage: apply_client URL DB USER PASSWORD "
                "TIMEOUT_MS MAPPING\n");
        return 2;
    }
    log_setup(NS_LOG_WARN, 0, "apply_client");
    err = mapping_load(argv[6], &map, errstr, sizeof(errstr));
    if (!err)
        err = neo4j_client_new(argv[1], argv[2], argv[3], argv[4],
                               strtol(argv[5], NULL, 10), &nc, errstr,
                               sizeof(errstr));
    if (err) {
        fprintf(stderr, "apply_client: %s: %s\n", ns_err_str(err), errstr);
        goto cleanup;
    }
    while (getline(&line, &cap, stdin) > 0) {
        if (run_line(nc, map, line))
            goto cleanup;
    }
    rc = 0;

cleanup:
    free(line);
    neo4j_client_free(nc);
    mapping_free(map);
    return rc;
}
