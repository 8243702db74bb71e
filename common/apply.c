#include "apply.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "cypher.h"
#include "log.h"

#define APPLY_STMT_MAX (256u * 1024u)

/*
 * A plan takes O(n) memory and O(n log n) time for n changes, however many
 * rounds they span (1,000 updates of one versioned link are 1,000 rounds,
 * so 1,000 statements): the statement text of a (table, action, shape) is
 * built once and shared by its groups in every round, and one index array
 * holds the members of all groups, each group a slice of it.
 */

/* The statement text of one (table, action, shape). */
struct shape {
    const struct mapping_table *tbl;
    enum change_action action;
    uint64_t mask;
    struct buf text;
    size_t group;             /* its newest group + 1, 0 = none yet */
};

/* One UNWIND statement: the changes of one shape in one round. */
struct group {
    const struct mapping_table *tbl;
    enum change_action action;
    size_t shape;             /* index into the plan's shapes */
    unsigned round;
    size_t *members;          /* count indexes into changes: a slice of
                                 the plan's members */
    size_t count;
    cJSON *params;            /* {"rows": [...]} with references */
};

struct apply_plan {
    struct shape *shapes;
    size_t shape_count, shape_cap;
    struct group *groups;     /* in the order they are sent */
    size_t count, group_cap;
    size_t *members;          /* every change's index, group by group */
    struct neo4j_stmt *stmts; /* one per group, borrowing its shape's text */
};

void apply_plan_free(struct apply_plan *plan)
{
    if (!plan)
        return;
    for (size_t i = 0; i < plan->shape_count; i++)
        buf_free(&plan->shapes[i].text);
    for (size_t i = 0; i < plan->count; i++)
        cJSON_Delete(plan->groups[i].params);
    free(plan->shapes);
    free(plan->groups);
    free(plan->members);
    free(plan->stmts);
    free(plan);
}

/* qsort has no context argument in C11; apply runs on one thread. */
static const struct change *sort_changes;

static int by_change_key(const void *a, const void *b)
{
    return strcmp(sort_changes[*(const size_t *)a].key,
                  sort_changes[*(const size_t *)b].key);
}

/* idx[0..n) (0..n when idx is NULL) stably ordered by round (counting
 * sort), so that every statement of round r runs before any of round
 * r + 1: the changes of one versioned link then apply in source order.
 * NULL when out of memory. */
static size_t *rounds_order(const struct change *changes, const size_t *idx,
                            size_t n)
{
    size_t *order = malloc((n ? n : 1) * sizeof(*order));
    size_t *start = NULL;
    unsigned max_round = 0;

    if (!order)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        order[i] = idx ? idx[i] : i;
        if (changes[order[i]].round > max_round)
            max_round = changes[order[i]].round;
    }
    if (max_round == 0)
        return order;
    start = calloc((size_t)max_round + 2, sizeof(*start));
    if (!start) {
        free(order);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        start[changes[order[i]].round + 1]++;
    for (unsigned r = 1; r <= max_round + 1; r++)
        start[r] += start[r - 1];
    for (size_t i = 0; i < n; i++) {
        size_t c = idx ? idx[i] : i;

        order[start[changes[c].round]++] = c;
    }
    free(start);
    return order;
}

/* arr with room for used + 1 elements of elem bytes, *cap doubled when
 * full; NULL when out of memory, arr then unchanged. */
static void *plan_room(void *arr, size_t *cap, size_t used, size_t elem)
{
    size_t want = *cap ? *cap * 2 : 8;
    void *more;

    if (used < *cap)
        return arr;
    more = realloc(arr, want * elem);
    if (more)
        *cap = want;
    return more;
}

static size_t shape_hash(const struct change *ch)
{
    uint64_t h = (uint64_t)(uintptr_t)ch->tbl ^
                 (ch->shape * UINT64_C(0x9e3779b97f4a7c15)) ^
                 (uint64_t)ch->action;

    h ^= h >> 31;
    h *= UINT64_C(0xbf58476d1ce4e5b9);
    h ^= h >> 29;
    return (size_t)h;
}

/* *out = the index of ch's shape in plan->shapes, added with its statement
 * text when new. slots[0..nslots) is an open-addressing table of shape
 * index + 1 (0 = empty), nslots a power of two above the changes. */
static enum ns_err plan_shape(const struct mapping *map,
                              struct apply_plan *plan, size_t *slots,
                              size_t nslots, const struct change *ch,
                              size_t *out, char *errstr, size_t errstr_size)
{
    size_t s = shape_hash(ch) & (nslots - 1);
    struct shape *sh;
    enum ns_err err;

    for (; slots[s]; s = (s + 1) & (nslots - 1)) {
        sh = &plan->shapes[slots[s] - 1];
        if (sh->tbl == ch->tbl && sh->action == ch->action &&
            sh->mask == ch->shape) {
            *out = slots[s] - 1;
            return NS_OK;
        }
    }
    sh = plan_room(plan->shapes, &plan->shape_cap, plan->shape_count,
                   sizeof(*sh));
    if (!sh) {
        snprintf(errstr, errstr_size, "out of memory grouping the changes "
                 "of table %s", ch->tbl->table);
        return NS_ERR_NOMEM;
    }
    plan->shapes = sh;
    sh = &plan->shapes[plan->shape_count++];
    memset(sh, 0, sizeof(*sh));
    sh->tbl = ch->tbl;
    sh->action = ch->action;
    sh->mask = ch->shape;
    buf_init(&sh->text, APPLY_STMT_MAX);
    err = cypher_statement(map, sh->tbl, sh->action, sh->mask, &sh->text);
    if (err == NS_ERR_LIMIT) {
        snprintf(errstr, errstr_size, "the statement for table %s (key "
                 "%s%s%s) exceeds %u bytes", ch->tbl->table,
                 ch->key_values[0], ch->key_values[1][0] ? "/" : "",
                 ch->key_values[1], APPLY_STMT_MAX);
        return err;
    }
    if (err) {
        snprintf(errstr, errstr_size, "could not build the statement for "
                 "table %s (key %s%s%s): %s", ch->tbl->table,
                 ch->key_values[0], ch->key_values[1][0] ? "/" : "",
                 ch->key_values[1], ns_err_str(err));
        return err;
    }
    slots[s] = plan->shape_count;
    *out = plan->shape_count - 1;
    return NS_OK;
}

/* The group of ch, whose shape is shape: changes come round by round, so
 * it is the shape's newest group when that is of ch's round, else a new
 * one. *out = its index. */
static enum ns_err plan_group(struct apply_plan *plan, size_t shape,
                              const struct change *ch, size_t *out,
                              char *errstr, size_t errstr_size)
{
    struct shape *sh = &plan->shapes[shape];
    struct group *g;

    if (sh->group && plan->groups[sh->group - 1].round == ch->round) {
        *out = sh->group - 1;
        return NS_OK;
    }
    g = plan_room(plan->groups, &plan->group_cap, plan->count, sizeof(*g));
    if (!g) {
        snprintf(errstr, errstr_size, "out of memory grouping the changes "
                 "of table %s", ch->tbl->table);
        return NS_ERR_NOMEM;
    }
    plan->groups = g;
    g = &plan->groups[plan->count++];
    memset(g, 0, sizeof(*g));
    g->tbl = ch->tbl;
    g->action = ch->action;
    g->shape = shape;
    g->round = ch->round;
    sh->group = plan->count;
    *out = plan->count - 1;
    return NS_OK;
}

/* Sort each group's rows and build its parameters and statement. */
static enum ns_err plan_statements(struct apply_plan *plan,
                                   const struct change *changes,
                                   char *errstr, size_t errstr_size)
{
    plan->stmts = calloc(plan->count ? plan->count : 1, sizeof(*plan->stmts));
    if (!plan->stmts) {
        snprintf(errstr, errstr_size, "out of memory for %zu statements",
                 plan->count);
        return NS_ERR_NOMEM;
    }
    /* Rows in key order: concurrent writers then lock shared nodes in the
     * same order, which keeps Neo4j deadlocks rare. A group never holds two
     * changes of one row (coalesced, or in different rounds), so the order
     * does not change the result. */
    sort_changes = changes;
    for (size_t j = 0; j < plan->count; j++) {
        struct group *g = &plan->groups[j];
        cJSON *rows = NULL;

        qsort(g->members, g->count, sizeof(*g->members), by_change_key);
        g->params = cJSON_CreateObject();
        if (g->params)
            rows = cJSON_AddArrayToObject(g->params, "rows");
        for (size_t m = 0; rows && m < g->count; m++)
            if (!cJSON_AddItemReferenceToArray(rows, changes[g->members[m]].row))
                rows = NULL;
        if (!rows) {
            snprintf(errstr, errstr_size, "out of memory adding the rows of "
                     "table %s", g->tbl->table);
            return NS_ERR_NOMEM;
        }
        plan->stmts[j].cypher = buf_str(&plan->shapes[g->shape].text);
        plan->stmts[j].params = g->params;
    }
    return NS_OK;
}

/*
 * Contract in apply.h. Three passes over the changes in round order: find
 * each one's shape and group (counting the members), cut the member array
 * into one slice per group, fill the slices.
 */
enum ns_err apply_plan_build(const struct mapping *map,
                             const struct change *changes, const size_t *idx,
                             size_t n, struct apply_plan **out, char *errstr,
                             size_t errstr_size)
{
    struct apply_plan *plan = calloc(1, sizeof(*plan));
    size_t *order = rounds_order(changes, idx, n);
    size_t *group_of = malloc((n ? n : 1) * sizeof(*group_of));
    size_t *slots = NULL;
    size_t nslots = 16, pos = 0;
    enum ns_err err = NS_OK;

    while (nslots < 2 * n)
        nslots <<= 1;
    slots = calloc(nslots, sizeof(*slots));
    if (plan)
        plan->members = malloc((n ? n : 1) * sizeof(*plan->members));
    if (!plan || !order || !group_of || !slots || !plan->members) {
        err = NS_ERR_NOMEM;
        snprintf(errstr, errstr_size, "out of memory grouping %zu changes",
                 n);
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        const struct change *ch = &changes[order[i]];
        size_t shape;

        err = plan_shape(map, plan, slots, nslots, ch, &shape, errstr,
                         errstr_size);
        if (!err)
            err = plan_group(plan, shape, ch, &group_of[i], errstr,
                             errstr_size);
        if (err)
            goto cleanup;
        plan->groups[group_of[i]].count++;
    }
    for (size_t j = 0; j < plan->count; j++) {
        plan->groups[j].members = plan->members + pos;
        pos += plan->groups[j].count;
        plan->groups[j].count = 0;
    }
    for (size_t i = 0; i < n; i++) {
        struct group *g = &plan->groups[group_of[i]];

        g->members[g->count++] = order[i];
    }
    err = plan_statements(plan, changes, errstr, errstr_size);
    if (err)
        goto cleanup;
    *out = plan;
    plan = NULL;

cleanup:
    free(slots);
    free(group_of);
    free(order);
    apply_plan_free(plan);
    return err;
}

const struct neo4j_stmt *apply_plan_statements(const struct apply_plan *plan,
                                               size_t *count)
{
    *count = plan->count;
    return plan->stmts;
}

static const char *row_str(const cJSON *row, int i)
{
    const cJSON *v = cJSON_GetArrayItem(row, i);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A change the stale guard kept out although its pg_version is newer than
 * the element's: the source's positions went backwards (a restore, a new
 * cluster) and source.epoch was not raised, or a stale redelivery after a
 * re-insert. One line per statement, with the first such key. */
static void warn_newer_version_skipped(const struct group *g, size_t count,
                                       const char *key, double v, double gv)
{
    log_msg(NS_LOG_WARN, "skipped %zu change(s) of %s older at the source than "
            "the graph although their pg_version is newer (e.g. key %s: "
            "version %.0f, graph %.0f); if the source's LSNs restarted, raise "
            "source.epoch", count, g->tbl->table, key, v, gv);
}

/* Mark a group's changes from its statement result: rows returned with an
 * element id were applied; rows returned without one, or not returned,
 * were kept out by the guards (stale, deleted). */
static void record_group(const struct group *g, const struct change *changes,
                         const cJSON *result, struct apply_result *results)
{
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(result, "data");
    const cJSON *rec;
    int is_node = g->tbl->kind == MAPPING_NODE;
    int eid_col = is_node ? 2 : 3;
    size_t next = 0, newer_skipped = 0;
    char first_key[160] = "";
    double first_v = 0, first_gv = 0;

    for (size_t m = 0; m < g->count; m++)
        results[g->members[m]].status =
            g->action == CHANGE_DELETE ? APPLY_APPLIED : APPLY_SKIPPED;
    if (g->action == CHANGE_DELETE)
        return;
    cJSON_ArrayForEach(rec, data) {
        const cJSON *row = cJSON_GetObjectItemCaseSensitive(rec, "row");
        const char *k1 = row_str(row, 0);
        const char *k2 = is_node ? NULL : row_str(row, 1);
        const char *eid = row_str(row, eid_col);
        const cJSON *v = cJSON_GetArrayItem(row, eid_col - 1);
        const cJSON *gv = cJSON_GetArrayItem(row, eid_col + 1);

        if (!eid) {
            if (cJSON_IsNumber(v) && cJSON_IsNumber(gv) &&
                v->valuedouble > gv->valuedouble && newer_skipped++ == 0) {
                snprintf(first_key, sizeof(first_key), "%s%s%s", k1 ? k1 : "",
                         k2 ? "/" : "", k2 ? k2 : "");
                first_v = v->valuedouble;
                first_gv = gv->valuedouble;
            }
            continue;
        }
        /* Results come back in row order, so the search starts after the
         * previous match and normally succeeds at once. */
        for (size_t step = 0; k1 && step < g->count; step++) {
            size_t m = (next + step) % g->count;
            const struct change *ch = &changes[g->members[m]];
            const cJSON *ka = cJSON_GetObjectItemCaseSensitive(
                ch->row, is_node ? "k" : "a");
            const cJSON *kb = is_node ? NULL
                              : cJSON_GetObjectItemCaseSensitive(ch->row, "b");
            if (strcmp(ka->valuestring, k1) != 0 ||
                (!is_node && (!k2 || strcmp(kb->valuestring, k2) != 0)))
                continue;
            results[g->members[m]].status = APPLY_APPLIED;
            snprintf(results[g->members[m]].element_id,
                     sizeof(results[0].element_id), "%s", eid);
            next = m + 1;
            break;
        }
    }
    if (newer_skipped)
        warn_newer_version_skipped(g, newer_skipped, first_key, first_v,
                                   first_gv);
}

/* One transaction over the changes idx[0..n) (all n when idx is NULL).
 * *failure: how neo4j_run ended (NEO4J_FAILURE_LOCAL when the plan could
 * not be built). */
static enum ns_err run_once(struct neo4j_client *nc, const struct mapping *map,
                            const struct change *changes, const size_t *idx,
                            size_t n, struct apply_result *results,
                            struct apply_stats *stats,
                            enum neo4j_failure *failure, char *errstr,
                            size_t errstr_size)
{
    struct apply_plan *plan = NULL;
    cJSON *res = NULL;
    size_t failed = 0;
    enum ns_err err;

    *failure = NEO4J_FAILURE_LOCAL;
    err = apply_plan_build(map, changes, idx, n, &plan, errstr, errstr_size);
    if (err)
        goto cleanup;
    stats->transactions++;
    stats->statements += (unsigned)plan->count;
    err = neo4j_run(nc, plan->stmts, plan->count, &res, &failed, errstr,
                    errstr_size);
    *failure = neo4j_last_failure(nc);
    if (err)
        goto cleanup;
    for (size_t i = 0; i < plan->count; i++)
        record_group(&plan->groups[i], changes, cJSON_GetArrayItem(res, (int)i),
                     results);

cleanup:
    cJSON_Delete(res);
    apply_plan_free(plan);
    return err;
}

/* Codes of contention between writers: the same change commits once the
 * other transaction is done, so they are retried even in a forced split. */
static int contention(const char *reason)
{
    static const char deadlock[] =
        "Neo.TransientError.Transaction.DeadlockDetected";
    static const char lock[] = "Neo.TransientError.Transaction.Lock";

    return strncmp(reason, deadlock, sizeof(deadlock) - 1) == 0 ||
           strncmp(reason, lock, sizeof(lock) - 1) == 0;
}

/* Whether the failed single transaction of one change marks it FAILED
 * (else the split stops and the error is returned). Contract in apply.h. */
static int change_rejected(enum ns_err err, enum neo4j_failure failure,
                           const char *why, int force)
{
    if (err == NS_ERR_NEO4J_PERMANENT)
        return 1;
    /* in a forced split, what the server's state explains (a leader
     * switch halfway) stops the split: it is not this change's fault */
    return force && err == NS_ERR_NEO4J_TRANSIENT &&
           failure == NEO4J_FAILURE_ANSWERED && !contention(why) &&
           !neo4j_reason_is_environment(why);
}

/* Whether each of n > 1 changes was rejected alike: the same Neo4j code
 * (the reason up to its first ": "), or, for a reason without one (a
 * proxy's status, a size cap), the same whole reason. */
static int rejected_alike(const struct apply_result *results, size_t n)
{
    const char *first = results[0].reason;
    const char *end = strstr(first, ": ");
    size_t len = strncmp(first, "Neo.", 4) == 0 && end ?
                 (size_t)(end - first) + 2 : strlen(first) + 1;

    for (size_t i = 0; i < n; i++)
        if (results[i].status != APPLY_FAILED ||
            strncmp(results[i].reason, first, len) != 0)
            return 0;
    return n > 1;
}

/* Whether Neo4j, through the same client, commits a statement that is no
 * change's: RETURN 1. */
static int canary_accepted(struct neo4j_client *nc)
{
    static const struct neo4j_stmt canary = {"RETURN 1", NULL};
    char why[512];

    return neo4j_run(nc, &canary, 1, NULL, NULL, why, sizeof(why)) == NS_OK;
}

/* Apply each change alone so one bad row cannot hold back the others.
 * Rare, so simplicity wins over fewer round trips. */
static enum ns_err apply_split(struct neo4j_client *nc,
                               const struct mapping *map,
                               const struct change *changes, size_t n,
                               struct apply_result *results,
                               struct apply_stats *stats,
                               const struct apply_options *opts,
                               char *errstr, size_t errstr_size)
{
    int force = opts && opts->force_split, alike;

    for (size_t i = 0; i < n; i++) {
        enum neo4j_failure failure;
        enum ns_err err;
        char why[512];

        if (opts && opts->tick && opts->tick(opts->tick_opaque)) {
            snprintf(errstr, errstr_size, "stopped applying %zu changes one "
                     "by one after %zu: asked to stop, or the partitions "
                     "were taken away", n, i);
            memset(results, 0, n * sizeof(*results));
            return NS_ERR_NEO4J_TRANSIENT;
        }
        err = run_once(nc, map, changes, &i, 1, results, stats, &failure, why,
                       sizeof(why));
        if (!err)
            continue;
        if (!change_rejected(err, failure, why, force)) {
            snprintf(errstr, errstr_size, "%s", why);
            return err;
        }
        results[i].status = APPLY_FAILED;
        snprintf(results[i].reason, sizeof(results[i].reason), "%.250s", why);
    }
    /* Rejected alike: likely the server, a proxy or the statements' shape
     * (a schema or version change), so nothing is dead-lettered and the
     * batch is retried. A forced split comes after that was retried many
     * times: then a canary decides. If Neo4j runs a statement of no
     * change, the changes are at fault, and each is FAILED, so that a
     * permanent error never holds a partition for ever. */
    alike = rejected_alike(results, n);
    if (alike && force && canary_accepted(nc)) {
        log_msg(NS_LOG_WARN, "all %zu changes rejected alike, but Neo4j runs "
                "other statements: taking the changes for the fault: %.400s",
                n, results[0].reason);
        return NS_OK;
    }
    if (alike) {
        snprintf(errstr, errstr_size, "all %zu changes rejected alike, "
                 "retrying the batch: %.400s", n, results[0].reason);
        memset(results, 0, n * sizeof(*results));
        return NS_ERR_NEO4J_TRANSIENT;
    }
    return NS_OK;
}

enum ns_err apply_changes(struct neo4j_client *nc, const struct mapping *map,
                          const struct change *changes, size_t n,
                          struct apply_result *results,
                          struct apply_stats *stats,
                          const struct apply_options *opts, char *errstr,
                          size_t errstr_size)
{
    enum neo4j_failure failure;
    enum ns_err err;

    memset(stats, 0, sizeof(*stats));
    if (n == 0)
        return NS_OK;
    memset(results, 0, n * sizeof(*results));
    if (opts && opts->force_split) {
        log_msg(NS_LOG_WARN, "applying a batch of %zu changes one by one, as "
                "asked after repeated failures", n);
        return apply_split(nc, map, changes, n, results, stats, opts, errstr,
                           errstr_size);
    }
    err = run_once(nc, map, changes, NULL, n, results, stats, &failure,
                   errstr, errstr_size);
    if (err != NS_ERR_NEO4J_PERMANENT)
        return err;
    if (n == 1) {
        results[0].status = APPLY_FAILED;
        snprintf(results[0].reason, sizeof(results[0].reason), "%s", errstr);
        return NS_OK;
    }
    log_msg(NS_LOG_WARN, "batch of %zu changes rejected by Neo4j, applying "
            "them one by one: %s", n, errstr);
    return apply_split(nc, map, changes, n, results, stats, opts, errstr,
                       errstr_size);
}
