/*
 * nexus-verify - compare PostgreSQL with the Neo4j graph through the
 * mapping, and repair the graph on request (common/verify.h).
 *
 *   nexus-verify [--config FILE] [--table NAME]... [--chunk N] [--json]
 *                [--dry-run | --repair] [--limit-report N]
 *
 * Settings as the workers read them (config.h): the file, then NEXUS_*
 * variables, TLS included (NEXUS_PG_SSLMODE, NEXUS_NEO4J_CA_FILE...). PostgreSQL is read as NEXUS_VERIFY_USER with
 * NEXUS_VERIFY_PASSWORD (or *_FILE), by default the writer role, which
 * nexus-schema sync-sql lets read the mapped columns.
 *
 * Exit status: 0 no divergence (after --repair: the re-check is clean),
 * 1 divergence found (after --repair: some remained), 2 error.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "mapping.h"
#include "neo4j.h"
#include "verify.h"
#include "verify_report.h"

#define VERIFY_MAX_TABLES 64

enum { EXIT_CLEAN = 0, EXIT_DIVERGED = 1, EXIT_ERROR = 2 };

struct args {
    const char *config;
    const char *tables[VERIFY_MAX_TABLES];
    size_t table_count;
    size_t chunk;
    size_t limit_report;
    int json;
    int repair;
    int dry_run;
    int64_t epoch;          /* the source epoch now (config source.epochs) */
};

static void usage(FILE *f)
{
    fputs("usage: nexus-verify [--config FILE] [--table NAME]... "
          "[--chunk N] [--json]\n"
          "                    [--dry-run | --repair] [--limit-report N]\n"
          "\n"
          "Compares PostgreSQL with Neo4j through the mapping: missing and\n"
          "extra nodes, property mismatches, missing and extra relationships.\n"
          "  --table NAME        only this table (repeatable; default all)\n"
          "  --chunk N           rows per page on each side (default 1000)\n"
          "  --json              machine-readable report on stdout\n"
          "  --dry-run           report only (the default)\n"
          "  --repair            fix what was found, then check again\n"
          "  --limit-report N    examples shown per table (default 10)\n"
          "Exit: 0 no divergence, 1 divergence, 2 error.\n", f);
}

static int parse_size(const char *s, size_t min, size_t *out)
{
    char *end;
    unsigned long long v;

    if (!s || !*s || *s == '-')
        return -1;
    v = strtoull(s, &end, 10);
    if (*end || v < min || v > 10000000ULL)
        return -1;
    *out = (size_t)v;
    return 0;
}

static int parse_args(int argc, char **argv, struct args *a)
{
    memset(a, 0, sizeof(*a));
    a->chunk = 1000;
    a->limit_report = 10;
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(opt, "--json") == 0) {
            a->json = 1;
        } else if (strcmp(opt, "--repair") == 0) {
            a->repair = 1;
        } else if (strcmp(opt, "--dry-run") == 0) {
            a->dry_run = 1;
        } else if (strcmp(opt, "--help") == 0 || strcmp(opt, "-h") == 0) {
            usage(stdout);
            exit(EXIT_CLEAN);
        } else if (strcmp(opt, "--config") == 0 && val) {
            a->config = val;
            i++;
        } else if (strcmp(opt, "--table") == 0 && val) {
            if (a->table_count == VERIFY_MAX_TABLES) {
                fprintf(stderr, "nexus-verify: too many --table options\n");
                return -1;
            }
            a->tables[a->table_count++] = val;
            i++;
        } else if (strcmp(opt, "--chunk") == 0 && val) {
            if (parse_size(val, 1, &a->chunk) != 0) {
                fprintf(stderr, "nexus-verify: --chunk needs a number >= 1\n");
                return -1;
            }
            i++;
        } else if (strcmp(opt, "--limit-report") == 0 && val) {
            if (parse_size(val, 0, &a->limit_report) != 0) {
                fprintf(stderr, "nexus-verify: --limit-report needs a "
                        "number >= 0\n");
                return -1;
            }
            i++;
        } else {
            fprintf(stderr, "nexus-verify: unknown or incomplete option %s\n",
                    opt);
            usage(stderr);
            return -1;
        }
    }
    if (a->repair && a->dry_run) {
        fprintf(stderr, "nexus-verify: --dry-run and --repair exclude each "
                "other\n");
        return -1;
    }
    return 0;
}

/* NAME, else the first line of the file named by NAME_FILE, else "". */
static int env_secret(const char *name, char *dst, size_t size)
{
    char file_var[128];
    const char *v = getenv(name), *path;
    FILE *f;
    size_t n;

    dst[0] = '\0';
    snprintf(file_var, sizeof(file_var), "%s_FILE", name);
    path = getenv(file_var);
    if (v && *v && path && *path) {
        /* as config.c: two sources for one secret is a mistake */
        fprintf(stderr, "nexus-verify: %s and %s are both set\n", name,
                file_var);
        return -1;
    }
    if (v && *v) {
        snprintf(dst, size, "%s", v);
        return 0;
    }
    if (!path || !*path)
        return 0;
    f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "nexus-verify: %s: could not read %s\n", file_var,
                path);
        return -1;
    }
    n = fread(dst, 1, size - 1, f);
    fclose(f);
    dst[n] = '\0';
    while (n && (dst[n - 1] == '\n' || dst[n - 1] == '\r'))
        dst[--n] = '\0';
    return 0;
}

/* libpq quoting of a conninfo value: single quotes, backslash escapes. */
static void conninfo_add(char *out, size_t size, const char *key,
                         const char *value)
{
    size_t len = strlen(out);

    len += (size_t)snprintf(out + len, len < size ? size - len : 0, " %s='",
                            key);
    for (const char *c = value; *c && len + 3 < size; c++) {
        if (*c == '\'' || *c == '\\')
            out[len++] = '\\';
        out[len++] = *c;
    }
    if (len + 2 < size) {
        out[len++] = '\'';
        out[len] = '\0';
    }
}

/*
 * The reader's connection string: the workers' settings, with the verify
 * identity when one is given (later keywords win in libpq). Caller frees.
 */
static char *reader_conninfo(const struct config *cfg)
{
    const char *user = getenv("NEXUS_VERIFY_USER");
    char password[256];
    char *base = config_pg_conninfo(cfg), *s;
    size_t size;

    if (!base)
        return NULL;
    if (env_secret("NEXUS_VERIFY_PASSWORD", password, sizeof(password)) != 0) {
        memset(base, 0, strlen(base));
        free(base);
        return NULL;
    }
    size = strlen(base) + 2 * (strlen(password) + (user ? strlen(user) : 0)) +
           64;
    s = malloc(size);
    if (!s) {
        memset(base, 0, strlen(base));
        free(base);
        return NULL;
    }
    snprintf(s, size, "%s", base);
    memset(base, 0, strlen(base));
    free(base);
    if (user && *user)
        conninfo_add(s, size, "user", user);
    if (password[0])
        conninfo_add(s, size, "password", password);
    memset(password, 0, sizeof(password));
    return s;
}

/* Node tables first: a link repair then finds its endpoints in place. */
static int run_pass(const struct mapping *map, const struct args *a,
                    const char *conninfo, struct neo4j_client *nc, int repair,
                    struct verify **out)
{
    struct verify_options opt = {a->chunk, a->limit_report, repair, a->epoch};
    struct verify *vf = NULL;
    char errstr[1024];
    enum ns_err err;

    err = verify_new(map, conninfo, nc, &opt, &vf, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "nexus-verify: %s\n", errstr);
        return -1;
    }
    for (int kind = MAPPING_NODE; kind <= MAPPING_RELATIONSHIP; kind++)
        for (size_t i = 0; i < map->table_count; i++) {
            const struct mapping_table *tbl = &map->tables[i];
            int wanted = a->table_count == 0;

            for (size_t t = 0; t < a->table_count; t++)
                wanted |= strcmp(a->tables[t], tbl->table) == 0;
            if (!wanted || (int)tbl->kind != kind)
                continue;
            err = verify_table_run(vf, tbl, errstr, sizeof(errstr));
            if (err) {
                fprintf(stderr, "nexus-verify: table %s: %s\n", tbl->table,
                        errstr);
                verify_free(vf);
                return -1;
            }
            log_msg(NS_LOG_DEBUG, "verified table %s", tbl->table);
        }
    *out = vf;
    return 0;
}

/* Peak resident set of this process image in KB (VmHWM: it starts at
 * exec, unlike ru_maxrss, which keeps the parent's peak); -1 if unknown. */
static long peak_rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

static int print_json(const struct verify *found, const struct verify *after,
                      int repair, int clean)
{
    cJSON *doc = verify_report_json(found), *re = NULL;
    char *text = NULL;
    int rc = -1;

    if (!doc)
        goto cleanup;
    if (!cJSON_AddStringToObject(doc, "mode", repair ? "repair" : "dry-run"))
        goto cleanup;
    if (after) {
        re = verify_report_json(after);
        if (!re)
            goto cleanup;
        cJSON_AddItemToObject(doc, "recheck", re);
    }
    if (!cJSON_AddBoolToObject(doc, "clean", clean))
        goto cleanup;
    if (peak_rss_kb() >= 0 &&
        !cJSON_AddNumberToObject(doc, "peak_rss_kb", (double)peak_rss_kb()))
        goto cleanup;
    text = cJSON_Print(doc);
    if (!text)
        goto cleanup;
    puts(text);
    rc = 0;

cleanup:
    if (rc)
        fprintf(stderr, "nexus-verify: out of memory writing the report\n");
    free(text);
    cJSON_Delete(doc);
    return rc;
}

int main(int argc, char **argv)
{
    struct args a;
    struct config cfg;
    struct mapping *map = NULL;
    struct neo4j_client *nc = NULL;
    struct verify *found = NULL, *after = NULL;
    char errstr[1024];
    char *conninfo = NULL;
    int rc = EXIT_ERROR, clean;
    int cfg_loaded = 0;

    if (parse_args(argc, argv, &a) != 0)
        return EXIT_ERROR;
    if (config_load(&cfg, a.config, "verify", errstr, sizeof(errstr))) {
        fprintf(stderr, "nexus-verify: %s\n", errstr);
        return EXIT_ERROR;
    }
    cfg_loaded = 1;
    a.epoch = config_source_epoch(&cfg, (int64_t)time(NULL) * 1000);
    log_setup((enum log_level)cfg.log_level, cfg.log_json, "nexus-verify");
    if (mapping_load(cfg.mapping_path, &map, errstr, sizeof(errstr))) {
        fprintf(stderr, "nexus-verify: %s\n", errstr);
        goto cleanup;
    }
    for (size_t t = 0; t < a.table_count; t++) {
        const struct mapping_table *tbl = mapping_find(map, a.tables[t]);
        if (!tbl || tbl->kind == MAPPING_NONE) {
            fprintf(stderr, "nexus-verify: table %s is %s\n", a.tables[t],
                    tbl ? "not mapped to the graph" : "not in the mapping");
            goto cleanup;
        }
    }
    conninfo = reader_conninfo(&cfg);
    if (!conninfo)
        goto cleanup;
    if (neo4j_client_new(cfg.neo4j_url, cfg.neo4j_db, cfg.neo4j_user,
                         cfg.neo4j_password, cfg.neo4j_timeout_ms, &nc,
                         errstr, sizeof(errstr)) ||
        (cfg.neo4j_ca_file[0] &&
         neo4j_client_set_ca_file(nc, cfg.neo4j_ca_file, errstr,
                                  sizeof(errstr)))) {
        fprintf(stderr, "nexus-verify: %s\n", errstr);
        goto cleanup;
    }
    neo4j_client_set_api(nc, (enum neo4j_api)cfg.neo4j_api);
    if (run_pass(map, &a, conninfo, nc, a.repair, &found) != 0)
        goto cleanup;
    if (a.repair && run_pass(map, &a, conninfo, nc, 0, &after) != 0)
        goto cleanup;
    clean = verify_divergences(after ? after : found) == 0;
    if (a.json) {
        if (print_json(found, after, a.repair, clean) != 0)
            goto cleanup;
    } else {
        if (a.repair)
            puts("found and repaired:");
        verify_report_text(found, stdout);
        if (after) {
            puts("check after repair:");
            verify_report_text(after, stdout);
        }
        printf("%s\n", clean ? "clean: no divergence"
                             : "divergence found");
    }
    rc = clean ? EXIT_CLEAN : EXIT_DIVERGED;

cleanup:
    verify_free(after);
    verify_free(found);
    neo4j_client_free(nc);
    if (conninfo) {
        memset(conninfo, 0, strlen(conninfo));
        free(conninfo);
    }
    mapping_free(map);
    if (cfg_loaded)
        config_free(&cfg);
    return rc;
}
