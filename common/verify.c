#include "verify.h"

#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "verify_join.h"
#include "verify_neo4j.h"
#include "verify_pg.h"
#include "verify_repair.h"
#include "verify_report.h"
#include "verify_run.h"

static int64_t verify_now_ms(void)
{
    struct timeval tv;

    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

enum ns_err verify_new(const struct mapping *map, const char *pg_conninfo,
                       struct neo4j_client *nc,
                       const struct verify_options *opt, struct verify **out,
                       char *errstr, size_t errstr_size)
{
    struct verify *vf = NULL;
    PGresult *res = NULL;
    enum ns_err err = NS_OK;

    *out = NULL;
    if (opt->chunk == 0) {
        ns_err_set(errstr, errstr_size, "chunk must be at least 1");
        return NS_ERR_CONFIG;
    }
    vf = calloc(1, sizeof(*vf));
    if (!vf)
        return NS_ERR_NOMEM;
    vf->map = map;
    vf->nc = nc;
    vf->opt = *opt;
    vf->pg = PQconnectdb(pg_conninfo);
    if (!vf->pg || PQstatus(vf->pg) != CONNECTION_OK) {
        ns_err_set(errstr, errstr_size, "could not connect to PostgreSQL: %s",
                   vf->pg ? PQerrorMessage(vf->pg) : "out of memory");
        err = NS_ERR_PG_TRANSIENT;
        goto cleanup;
    }
    /* Values read in one fixed form, whatever the role's defaults. */
    res = PQexec(vf->pg, "SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO'; "
                         "SET extra_float_digits TO 1");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        err = verify_pg_fail(vf->pg, "set up the session", errstr,
                             errstr_size);
        goto cleanup;
    }

cleanup:
    PQclear(res);
    if (err) {
        verify_free(vf);
        return err;
    }
    *out = vf;
    return NS_OK;
}

void verify_free(struct verify *vf)
{
    if (!vf)
        return;
    for (size_t i = 0; i < vf->result_count; i++) {
        for (size_t j = 0; j < vf->results[i].ex_count; j++)
            verify_report_example_free(&vf->results[i].ex[j]);
        free(vf->results[i].ex);
    }
    free(vf->results);
    if (vf->pg)
        PQfinish(vf->pg);
    free(vf);
}

enum ns_err verify_table_run(struct verify *vf,
                             const struct mapping_table *tbl, char *errstr,
                             size_t errstr_size)
{
    struct table_result *grown;
    struct run run;
    enum ns_err err;

    if (tbl->kind == MAPPING_NONE) {
        ns_err_set(errstr, errstr_size, "table %s has no graph element",
                   tbl->table);
        return NS_ERR_CONFIG;
    }
    grown = realloc(vf->results, (vf->result_count + 1) * sizeof(*grown));
    if (!grown)
        return NS_ERR_NOMEM;
    vf->results = grown;
    memset(&vf->results[vf->result_count], 0, sizeof(*grown));
    vf->results[vf->result_count].tbl = tbl;
    vf->results[vf->result_count].ex =
        calloc(vf->opt.limit_report ? vf->opt.limit_report : 1,
               sizeof(struct verify_example));
    if (!vf->results[vf->result_count].ex)
        return NS_ERR_NOMEM;

    memset(&run, 0, sizeof(run));
    run.vf = vf;
    run.tbl = tbl;
    run.tr = &vf->results[vf->result_count++];
    run.now_ms = verify_now_ms();
    buf_init(&run.sql_first, VERIFY_SQL_MAX);
    buf_init(&run.sql_next, VERIFY_SQL_MAX);
    buf_init(&run.cypher, VERIFY_CYPHER_MAX);
    /* room for a page's worth plus what one step can add before the
     * flush check: the cap is never reached in practice */
    err = verify_repair_init(&run.pend, vf->opt.chunk * 2 + 2,
                             tbl->kind == MAPPING_NODE ? tbl->parent_count
                                                       : 0);
    if (err) {
        ns_err_set(errstr, errstr_size, "out of memory");
        goto cleanup;
    }
    err = verify_pg_build_sql(&run, errstr, errstr_size);
    if (!err && verify_neo4j_build_cypher(&run) != NS_OK) {
        ns_err_set(errstr, errstr_size, "could not build the Cypher of %s",
                   tbl->table);
        err = NS_ERR_LIMIT;
    }
    if (!err)
        err = verify_join_run(&run, errstr, errstr_size);

cleanup:
    PQclear(run.pg.res);
    cJSON_Delete(run.neo.res);
    verify_repair_free(&run.pend);
    buf_free(&run.sql_first);
    buf_free(&run.sql_next);
    buf_free(&run.cypher);
    return err;
}

uint64_t verify_divergences(const struct verify *vf)
{
    uint64_t n = 0;

    for (size_t i = 0; i < vf->result_count; i++)
        n += verify_report_divergences(&vf->results[i].c);
    return n;
}

const struct verify_counts *verify_table_counts(const struct verify *vf,
                                                size_t table_index,
                                                const char **table_name)
{
    if (table_index >= vf->result_count)
        return NULL;
    if (table_name)
        *table_name = vf->results[table_index].tbl->table;
    return &vf->results[table_index].c;
}
