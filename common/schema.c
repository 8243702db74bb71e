#include "schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "cypher.h"

struct schema_args {
    struct neo4j_client *nc;
    const char *text;         /* statements separated by ';' */
    const char *db, *user;    /* to name them in a check's message */
    struct metrics *metrics;
};

static enum ns_err try_schema(void *arg, const struct retry_state *state,
                              char *errstr, size_t errstr_size)
{
    struct schema_args *a = arg;
    char *save = NULL, *copy = strdup(a->text), *stmt;
    enum ns_err err = NS_OK;

    if (!copy) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    /* the start-up check could not decide (Neo4j was down): the first
     * answer may say the settings are wrong, which no retry mends */
    if (state->attempt > 0 &&
        neo4j_client_check(a->nc, a->db, a->user, errstr, errstr_size) ==
            NS_ERR_CONFIG) {
        free(copy);
        return NS_ERR_CONFIG;
    }
    for (stmt = strtok_r(copy, ";", &save); stmt && !err;
         stmt = strtok_r(NULL, ";", &save)) {
        struct neo4j_stmt s = {stmt, NULL};
        err = neo4j_run(a->nc, &s, 1, NULL, NULL, errstr, errstr_size);
    }
    free(copy);
    metrics_target_seen(a->metrics, METRICS_NEO4J, !ns_err_is_retriable(err));
    return err;
}

enum ns_err schema_ensure(struct neo4j_client *nc, const struct mapping *map,
                          const char *db, const char *user,
                          const struct retry_policy *policy,
                          const struct retry_poller *poller,
                          struct metrics *metrics, char *errstr,
                          size_t errstr_size)
{
    struct buf text;
    struct schema_args a = {nc, NULL, db, user, metrics};
    char why[1024];
    enum ns_err err;

    buf_init(&text, 1 << 20);
    err = cypher_schema_statements(map, &text);
    if (err) {
        ns_err_set(errstr, errstr_size, "could not build the schema "
                   "statements: %s", ns_err_str(err));
        goto cleanup;
    }
    a.text = buf_str(&text);
    err = retry_run(policy, poller, NS_OK, "could not create Neo4j constraints",
                    try_schema, &a, why, sizeof(why));
    if (err)
        ns_err_set(errstr, errstr_size, "could not create Neo4j "
                   "constraints: %s", why);
cleanup:
    buf_free(&text);
    return err;
}
