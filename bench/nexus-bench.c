/*
 * nexus-bench - the C half of `make bench` (bench/run drives it).
 *
 *   nexus-bench schema
 *       the Neo4j constraint statements the workers create at start-up,
 *       one per line
 *   nexus-bench sink-cypher TOPIC
 *       the Cypher for the Neo4j Kafka Connect sink's Cypher strategy
 *       (neo4j.cypher.topic.TOPIC): for every table of the lane topic, the
 *       workers' own statement from common/cypher.c, fed by a row map built
 *       from the message value instead of UNWIND $rows
 *   nexus-bench commit GROUP TOPIC:PARTITION:OFFSET...
 *       commit offsets for a consumer group that has no member yet, so a
 *       fresh group starts exactly where the benchmark says
 *   nexus-bench committed GROUP TOPIC:PARTITION...
 *       print "TOPIC PARTITION OFFSET" per partition (-1: none committed)
 *   nexus-bench ceiling [--batch N] FILE
 *       Neo4j's ceiling for the same statements: FILE holds Kafka message
 *       values of one worker's topics, one per line (empty line: tombstone).
 *       They are parsed, mapped and coalesced into batches of N messages
 *       (the worker's batch.max_events) before the clock starts; then each
 *       batch goes to Neo4j with apply_changes(), as a worker sends it, but
 *       without Kafka, write-back or DLQ. Prints one JSON object with the
 *       figures (bench/run also uses it, untimed, to load base data).
 *
 * Settings from the environment, as the workers read them: NEXUS_MAPPING,
 * NEXUS_NEO4J_URL, NEXUS_NEO4J_DB, NEXUS_NEO4J_USER, NEXUS_NEO4J_PASSWORD,
 * NEXUS_KAFKA_BOOTSTRAP. Exit status 0 on success, 1 on failure, 2 on usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>

#include "apply.h"
#include "buf.h"
#include "change.h"
#include "cypher.h"
#include "event.h"
#include "kafka.h"
#include "log.h"
#include "mapping.h"
#include "neo4j.h"

#define BENCH_TEXT_MAX (4u * 1024u * 1024u)
#define BENCH_LINE_MAX (16u * 1024u * 1024u)

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);

    return v && *v ? v : dflt;
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- sink-cypher --------------------------------------------------------- */

/*
 * Cypher expression that turns the raw Debezium value of column c (a
 * member of map r) into what convert.c would hand to the statement, so the
 * statement's own datetime()/date()/toFloat() wrappers apply unchanged.
 */
static enum ns_err sink_value_expr(struct buf *b,
                                   const struct mapping_property *p)
{
    const char *c = p->column;

    switch (p->type) {
    case COL_TIMESTAMP:
        /* microseconds since the epoch, UTC wall clock, as ISO text */
        return buf_addf(b,
                        "CASE WHEN r.%s IS NULL THEN null ELSE "
                        "toString(localdatetime({datetime: datetime({"
                        "epochSeconds: r.%s / 1000000, nanosecond: "
                        "(r.%s %% 1000000) * 1000})})) END",
                        c, c, c);
    case COL_DATE:
        return buf_addf(b,
                        "CASE WHEN r.%s IS NULL THEN null ELSE "
                        "toString(date('1970-01-01') + duration({days: r.%s}))"
                        " END",
                        c, c);
    default:
        return buf_addf(b, "r.%s", c);
    }
}

/* The row map change.c would build, from the image r of the event;
 * numerics come decoded from sink_numeric_prelude (num_<column>). */
static enum ns_err sink_row_map(struct buf *b, const struct mapping_table *tbl,
                                enum change_action action)
{
    enum ns_err err;

    if (tbl->kind == MAPPING_NODE)
        err = buf_addf(b, "WITH event, {k: r.%s", tbl->key_column);
    else
        err = buf_addf(b, "WITH event, {a: r.%s, b: r.%s", tbl->from.column,
                       tbl->to.column);
    if (!err)
        err = buf_addf(b, ", ep: 0, lsn: event.source.lsn, "
                          "ts: event.source.ts_ms, v: r.pg_version");
    if (!err && action == CHANGE_UPSERT) {
        err = buf_adds(b, ", p: {");
        for (size_t i = 0; !err && i < tbl->prop_count; i++) {
            const struct mapping_property *p = &tbl->props[i];

            err = buf_addf(b, "%s%s: ", i ? ", " : "", p->property);
            if (!err && p->type == COL_NUMERIC)
                err = buf_addf(b, "num_%s", p->column);
            else if (!err)
                err = sink_value_expr(b, p);
        }
        if (!err)
            err = buf_adds(b, "}");
        if (!err && tbl->kind == MAPPING_NODE && tbl->parent_count) {
            err = buf_adds(b, ", par: [");
            for (size_t i = 0; !err && i < tbl->parent_count; i++)
                err = buf_addf(b, "%sr.%s", i ? ", " : "",
                               tbl->parents[i].column);
            if (!err)
                err = buf_adds(b, "]");
        }
    }
    if (!err)
        err = buf_adds(b, "} AS row\n");
    return err;
}

/*
 * A numeric column: decode base64 into the unscaled integer, take the
 * two's complement sign from the bit length, divide by 10^scale.
 */
static enum ns_err sink_numeric_prelude(struct buf *b,
                                        const struct mapping_table *tbl,
                                        const char *carry)
{
    enum ns_err err = NS_OK;
    char vars[1024] = ", b64";
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    int any = 0;

    for (size_t i = 0; i < tbl->prop_count; i++)
        any |= tbl->props[i].type == COL_NUMERIC;
    if (!any)
        return NS_OK;
    /* Cypher has no base64 decoder: a map from digit to value */
    err = buf_addf(b, "WITH %s, {", carry);
    for (int i = 0; !err && i < 64; i++)
        err = buf_addf(b, "%s`%c`: %d", i ? ", " : "", alphabet[i], i);
    if (!err)
        err = buf_adds(b, "} AS b64\n");
    for (size_t i = 0; !err && i < tbl->prop_count; i++) {
        const struct mapping_property *p = &tbl->props[i];
        const char *c = p->column;
        double div = 1.0;
        char *end = vars + strlen(vars);

        if (p->type != COL_NUMERIC)
            continue;
        for (int s = 0; s < (p->scale > 0 ? p->scale : 0); s++)
            div *= 10.0;
        /* pad: '=' drop 2 bits each; bits is then a multiple of 8 */
        err = buf_addf(
            b,
            "WITH %s%s, CASE WHEN r.%s IS NULL OR NOT (r.%s IS :: STRING) "
            "THEN r.%s ELSE reduce(s = 0, ch IN split(replace(r.%s, '=', ''), "
            "'') | s * 64 + b64[ch]) / toInteger(4 ^ (size(r.%s) - "
            "size(replace(r.%s, '=', '')))) END AS u_%s, "
            "CASE WHEN r.%s IS NULL OR NOT (r.%s IS :: STRING) THEN 0 ELSE "
            "(size(r.%s) / 4 * 3 - (size(r.%s) - size(replace(r.%s, '=', "
            "'')))) * 8 END AS bits_%s\n"
            "WITH %s%s, CASE WHEN NOT (r.%s IS :: STRING) THEN u_%s "
            "WHEN bits_%s > 0 AND u_%s >= toInteger(2 ^ (bits_%s - 1)) "
            "THEN (u_%s - toInteger(2 ^ bits_%s)) / %.1f "
            "ELSE u_%s / %.1f END AS num_%s\n",
            carry, vars, c, c, c, c, c, c, c, c, c, c, c, c, c, carry, vars,
            c, c, c, c, c, c, c, div, c, div, c);
        snprintf(end, sizeof(vars) - (size_t)(end - vars), ", num_%s", c);
    }
    return err;
}

/* Drop the trailing RETURN (and the WITH that feeds it): inside a unit
 * subquery the statement must end with its last update. */
static void strip_return(char *text)
{
    char *ret = strstr(text, "RETURN ");
    char *last = NULL;

    while (ret) {
        last = ret;
        ret = strstr(ret + 1, "RETURN ");
    }
    if (!last)
        return;
    *last = '\0';
    /* the WITH line just before it, if any */
    if (last > text && last[-1] == '\n') {
        char *line = last - 1;

        while (line > text && line[-1] != '\n')
            line--;
        if (strncmp(line, "WITH ", 5) == 0)
            *line = '\0';
    }
}

static enum ns_err sink_table(struct buf *out, const struct mapping *map,
                              const struct mapping_table *tbl,
                              enum change_action action)
{
    struct buf stmt;
    const char *body;
    uint64_t shape = tbl->prop_count >= 64 ? UINT64_MAX
                     : (UINT64_C(1) << tbl->prop_count) - 1;
    enum ns_err err;

    buf_init(&stmt, BENCH_TEXT_MAX);
    err = cypher_statement(map, tbl, action, shape, &stmt);
    if (err)
        goto cleanup;
    body = buf_str(&stmt);
    if (strncmp(body, "UNWIND $rows AS row\n", 20) != 0) {
        err = NS_ERR_SCHEMA;
        goto cleanup;
    }
    body += 20;
    strip_return((char *)body);
    err = buf_addf(out,
                   "CALL { WITH event\n"
                   "WITH event WHERE event.source.table = '%s' AND "
                   "event.op %s\n"
                   "WITH event, event.%s AS r\n",
                   tbl->table,
                   action == CHANGE_DELETE ? "= 'd'" : "IN ['c', 'u', 'r']",
                   action == CHANGE_DELETE ? "before" : "after");
    if (!err && action == CHANGE_UPSERT)
        err = sink_numeric_prelude(out, tbl, "event, r");
    if (!err)
        err = sink_row_map(out, tbl, action);
    if (!err)
        err = buf_addf(out, "%s}\n", body);

cleanup:
    buf_free(&stmt);
    return err;
}

static int cmd_sink_cypher(const struct mapping *map, const char *topic)
{
    struct buf out;
    char want[256];
    int found = 0, rc = 1;
    enum ns_err err = NS_OK;

    buf_init(&out, BENCH_TEXT_MAX);
    for (size_t i = 0; !err && i < map->table_count; i++) {
        const struct mapping_table *tbl = &map->tables[i];

        if (tbl->kind == MAPPING_NONE ||
            mapping_topic(map, tbl->lane, tbl->worker, want, sizeof(want)) ||
            strcmp(want, topic) != 0)
            continue;
        found = 1;
        err = sink_table(&out, map, tbl, CHANGE_UPSERT);
        if (!err)
            err = sink_table(&out, map, tbl, CHANGE_DELETE);
    }
    if (err) {
        fprintf(stderr, "nexus-bench: could not build the sink Cypher: %s\n",
                ns_err_str(err));
    } else if (!found) {
        fprintf(stderr, "nexus-bench: no mapped table goes to topic %s\n",
                topic);
    } else {
        fputs(buf_str(&out), stdout);
        rc = 0;
    }
    buf_free(&out);
    return rc;
}

/* ---- schema -------------------------------------------------------------- */

static int cmd_schema(const struct mapping *map)
{
    struct buf out;
    enum ns_err err;
    int rc = 1;

    buf_init(&out, BENCH_TEXT_MAX);
    err = cypher_schema_statements(map, &out);
    if (err) {
        fprintf(stderr, "nexus-bench: %s\n", ns_err_str(err));
    } else {
        /* statements are separated by "\n;\n": one per line */
        char *text = (char *)buf_str(&out), *save = NULL, *stmt;

        for (stmt = strtok_r(text, ";", &save); stmt;
             stmt = strtok_r(NULL, ";", &save)) {
            while (*stmt == '\n')
                stmt++;
            stmt[strcspn(stmt, "\n")] = '\0';
            if (*stmt)
                puts(stmt);
        }
        rc = 0;
    }
    buf_free(&out);
    return rc;
}

/* ---- commit / committed -------------------------------------------------- */

static rd_kafka_t *group_client(const char *group)
{
    const char *const forced[] = {
        "bootstrap.servers",
        env_or("NEXUS_KAFKA_BOOTSTRAP", "127.0.0.1:59092"),
        "group.id", group,
        "enable.auto.commit", "false",
        NULL};
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk;
    char kerr[512];

    if (kafka_conf_new(NULL, NULL, forced, 1, &conf, kerr, sizeof(kerr))) {
        fprintf(stderr, "nexus-bench: kafka: %s\n", kerr);
        return NULL;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kerr, sizeof(kerr));
    if (!rk) {
        fprintf(stderr, "nexus-bench: could not create Kafka client: %s\n",
                kerr);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* "topic:partition[:offset]" into the list; 0 on success. */
static int parse_tp(rd_kafka_topic_partition_list_t *parts, const char *arg,
                    int with_offset)
{
    char topic[256];
    const char *c1 = strchr(arg, ':');
    const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    char *end = NULL;
    long part;
    long long off = RD_KAFKA_OFFSET_INVALID;
    size_t n;

    if (!c1 || (with_offset && !c2) || (!with_offset && c2))
        return -1;
    n = (size_t)(c1 - arg);
    if (n == 0 || n >= sizeof(topic))
        return -1;
    memcpy(topic, arg, n);
    topic[n] = '\0';
    part = strtol(c1 + 1, &end, 10);
    if (end == c1 + 1 || part < 0 || (c2 ? end != c2 : *end != '\0'))
        return -1;
    if (with_offset) {
        off = strtoll(c2 + 1, &end, 10);
        if (end == c2 + 1 || *end != '\0' || off < 0)
            return -1;
    }
    rd_kafka_topic_partition_list_add(parts, topic, (int32_t)part)->offset =
        off;
    return 0;
}

static int cmd_offsets(int argc, char **argv, int commit)
{
    rd_kafka_topic_partition_list_t *parts =
        rd_kafka_topic_partition_list_new(argc);
    rd_kafka_t *rk = NULL;
    rd_kafka_resp_err_t kerr;
    int rc = 1;

    for (int i = 1; i < argc; i++)
        if (parse_tp(parts, argv[i], commit)) {
            fprintf(stderr, "nexus-bench: bad partition '%s'\n", argv[i]);
            rc = 2;
            goto cleanup;
        }
    rk = group_client(argv[0]);
    if (!rk)
        goto cleanup;
    if (commit)
        kerr = rd_kafka_commit(rk, parts, 0);
    else
        kerr = rd_kafka_committed(rk, parts, 30000);
    if (kerr) {
        fprintf(stderr, "nexus-bench: could not %s offsets of group %s: %s\n",
                commit ? "commit" : "read", argv[0], rd_kafka_err2str(kerr));
        goto cleanup;
    }
    for (int i = 0; i < parts->cnt; i++) {
        if (parts->elems[i].err) {
            fprintf(stderr, "nexus-bench: %s:%d: %s\n", parts->elems[i].topic,
                    (int)parts->elems[i].partition,
                    rd_kafka_err2str(parts->elems[i].err));
            goto cleanup;
        }
        if (!commit)
            printf("%s %d %lld\n", parts->elems[i].topic,
                   (int)parts->elems[i].partition,
                   (long long)(parts->elems[i].offset >= 0
                                   ? parts->elems[i].offset : -1));
    }
    rc = 0;

cleanup:
    rd_kafka_topic_partition_list_destroy(parts);
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    return rc;
}

/* ---- ceiling ------------------------------------------------------------- */

struct batch {
    struct change *changes;   /* coalesced, owned */
    size_t count;
    size_t messages;
};

static void batches_free(struct batch *batches, size_t n)
{
    for (size_t i = 0; batches && i < n; i++) {
        for (size_t j = 0; j < batches[i].count; j++)
            change_clear(&batches[i].changes[j]);
        free(batches[i].changes);
    }
    free(batches);
}

/*
 * Read FILE into batches of up to batch_max messages, as a worker would
 * collect them, each coalesced. Events that a worker would skip (write-back
 * echoes, tombstones) count as messages but give no change; events it
 * would send to the DLQ are an error here: the workloads have none.
 */
static enum ns_err read_batches(const struct mapping *map, const char *path,
                                size_t batch_max, struct batch **out,
                                size_t *out_count, size_t *out_messages)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, nb = 0, bcap = 0, messages = 0;
    ssize_t len;
    struct batch *batches = NULL;
    enum ns_err err = NS_OK;

    if (!f) {
        fprintf(stderr, "nexus-bench: could not open %s\n", path);
        return NS_ERR_IO;
    }
    while ((len = getline(&line, &cap, f)) >= 0) {
        struct batch *bt;
        struct event *ev = NULL;
        const struct mapping_table *tbl;
        enum change_result res;
        char why[512];

        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (nb == 0 || batches[nb - 1].messages == batch_max) {
            if (nb == bcap) {
                size_t ncap = bcap ? bcap * 2 : 64;
                struct batch *nbt = realloc(batches, ncap * sizeof(*nbt));
                if (!nbt) {
                    err = NS_ERR_NOMEM;
                    goto cleanup;
                }
                batches = nbt;
                bcap = ncap;
            }
            memset(&batches[nb], 0, sizeof(batches[nb]));
            batches[nb].changes = calloc(batch_max, sizeof(struct change));
            if (!batches[nb].changes) {
                err = NS_ERR_NOMEM;
                goto cleanup;
            }
            nb++;
        }
        bt = &batches[nb - 1];
        bt->messages++;
        messages++;
        if ((size_t)len > BENCH_LINE_MAX || event_is_tombstone(line, (size_t)len))
            continue;
        err = event_parse(line, (size_t)len, &ev, why, sizeof(why));
        if (err) {
            fprintf(stderr, "nexus-bench: %s line %zu: %s\n", path, messages,
                    why);
            goto cleanup;
        }
        tbl = mapping_find(map, ev->table);
        if (!tbl) {
            fprintf(stderr, "nexus-bench: %s line %zu: table %s is not "
                    "mapped\n", path, messages, ev->table);
            event_free(ev);
            err = NS_ERR_SCHEMA;
            goto cleanup;
        }
        err = change_from_event(map, tbl, ev, 0, bt->messages - 1,
                                &bt->changes[bt->count], &res, why,
                                sizeof(why));
        event_free(ev);
        if (err) {
            fprintf(stderr, "nexus-bench: %s line %zu: %s\n", path, messages,
                    why);
            goto cleanup;
        }
        if (res == CHANGE_READY)
            bt->count++;
    }
    /* coalesce as the workers do: apply_changes() runs a batch's
     * statements group by group, so two changes of one key reach it only
     * as rounds of a temporal link, which it orders */
    for (size_t i = 0; i < nb; i++)
        batches[i].count = change_coalesce(batches[i].changes, batches[i].count);

cleanup:
    free(line);
    fclose(f);
    if (err) {
        batches_free(batches, nb);
        return err;
    }
    *out = batches;
    *out_count = nb;
    *out_messages = messages;
    return NS_OK;
}

static int cmd_ceiling(const struct mapping *map, int argc, char **argv)
{
    size_t batch_max = 1000, nb = 0, messages = 0, changes = 0;
    size_t applied = 0, skipped = 0, failed = 0, maxn = 1;
    const char *path = NULL;
    int rc = 1;
    struct batch *batches = NULL;
    struct apply_result *results = NULL;
    struct neo4j_client *nc = NULL;
    unsigned transactions = 0, statements = 0, retries = 0;
    double t0, elapsed;
    char errstr[1024];
    enum ns_err err;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc) {
            batch_max = (size_t)strtoul(argv[++i], NULL, 10);
        } else if (!path && argv[i][0] != '-') {
            path = argv[i];
        } else {
            fprintf(stderr, "nexus-bench: ceiling: bad argument '%s'\n",
                    argv[i]);
            return 2;
        }
    }
    if (!path || batch_max == 0) {
        fprintf(stderr, "usage: nexus-bench ceiling [--batch N] FILE\n");
        return 2;
    }
    err = neo4j_client_new(env_or("NEXUS_NEO4J_URL", "http://127.0.0.1:57474"),
                           env_or("NEXUS_NEO4J_DB", "neo4j"),
                           env_or("NEXUS_NEO4J_USER", "neo4j"),
                           env_or("NEXUS_NEO4J_PASSWORD", ""), 300000, &nc,
                           errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "nexus-bench: %s\n", errstr);
        goto cleanup;
    }
    if (read_batches(map, path, batch_max, &batches, &nb, &messages))
        goto cleanup;
    for (size_t i = 0; i < nb; i++) {
        changes += batches[i].count;
        if (batches[i].count > maxn)
            maxn = batches[i].count;
    }
    results = calloc(maxn, sizeof(*results));
    if (!results) {
        fprintf(stderr, "nexus-bench: out of memory\n");
        goto cleanup;
    }

    t0 = now_s();
    for (size_t i = 0; i < nb; i++) {
        struct apply_stats st;

        for (int attempt = 0;; attempt++) {
            long delay_ms = 50L << (attempt < 6 ? attempt : 6);

            err = apply_changes(nc, map, batches[i].changes, batches[i].count,
                                results, &st, NULL, errstr, sizeof(errstr));
            transactions += st.transactions;
            statements += st.statements;
            if (err != NS_ERR_NEO4J_TRANSIENT || attempt == 60)
                break;
            /* a deadlock between parallel ceiling clients (links of two
             * workers MERGE the same endpoint nodes): back off with jitter
             * and retry, as a worker would; the wait is in the figure */
            retries++;
            delay_ms = delay_ms / 2 + rand() % (delay_ms / 2 + 1);
            nanosleep(&(struct timespec){delay_ms / 1000,
                                         (delay_ms % 1000) * 1000000L},
                      NULL);
        }
        if (err) {
            fprintf(stderr, "nexus-bench: batch %zu: %s\n", i, errstr);
            goto cleanup;
        }
        for (size_t j = 0; j < batches[i].count; j++) {
            applied += results[j].status == APPLY_APPLIED;
            skipped += results[j].status == APPLY_SKIPPED;
            failed += results[j].status == APPLY_FAILED;
        }
    }
    elapsed = now_s() - t0;
    if (failed) {
        fprintf(stderr, "nexus-bench: %zu changes failed in Neo4j\n", failed);
        goto cleanup;
    }
    printf("{\"file\":\"%s\",\"messages\":%zu,\"changes\":%zu,"
           "\"applied\":%zu,\"skipped\":%zu,\"batches\":%zu,"
           "\"transactions\":%u,\"statements\":%u,\"retries\":%u,"
           "\"seconds\":%.3f,\"events_per_s\":%.1f}\n",
           path, messages, changes, applied, skipped, nb, transactions,
           statements, retries, elapsed,
           elapsed > 0 ? (double)messages / elapsed : 0.0);
    rc = 0;

cleanup:
    free(results);
    batches_free(batches, nb);
    neo4j_client_free(nc);
    return rc;
}

/* ---- main ---------------------------------------------------------------- */

static void usage(FILE *f)
{
    fputs("usage: nexus-bench schema\n"
          "       nexus-bench sink-cypher TOPIC\n"
          "       nexus-bench commit GROUP TOPIC:PARTITION:OFFSET...\n"
          "       nexus-bench committed GROUP TOPIC:PARTITION...\n"
          "       nexus-bench ceiling [--batch N] FILE\n",
          f);
}

int main(int argc, char **argv)
{
    struct mapping *map = NULL;
    char errstr[1024];
    int rc = 2;

    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    log_setup(NS_LOG_WARN, 0, "nexus-bench");
    if (strcmp(argv[1], "commit") == 0 || strcmp(argv[1], "committed") == 0) {
        if (argc < 4) {
            usage(stderr);
            return 2;
        }
        return cmd_offsets(argc - 2, argv + 2, argv[1][6] == '\0');
    }
    if (mapping_load(env_or("NEXUS_MAPPING", "schemas/mapping.cfg"), &map,
                     errstr, sizeof(errstr))) {
        fprintf(stderr, "nexus-bench: %s\n", errstr);
        return 2;
    }
    if (strcmp(argv[1], "schema") == 0 && argc == 2)
        rc = cmd_schema(map);
    else if (strcmp(argv[1], "sink-cypher") == 0 && argc == 3)
        rc = cmd_sink_cypher(map, argv[2]);
    else if (strcmp(argv[1], "ceiling") == 0)
        rc = cmd_ceiling(map, argc - 2, argv + 2);
    else
        usage(stderr);
    mapping_free(map);
    return rc;
}
