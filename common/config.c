#include "config.h"

#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static int copy_str(char *dst, size_t size, const char *src)
{
    int n = snprintf(dst, size, "%s", src);
    return n >= 0 && (size_t)n < size;
}

/* Secret from NAME, or from the file named by NAME_FILE. */
static enum ns_err env_secret(const char *name, char *dst, size_t size,
                              char *errstr, size_t errstr_size)
{
    char file_var[128];
    const char *v = getenv(name), *path;
    FILE *f;
    size_t n;

    if (v && *v) {
        if (!copy_str(dst, size, v))
            goto too_long;
        return NS_OK;
    }
    snprintf(file_var, sizeof(file_var), "%s_FILE", name);
    path = getenv(file_var);
    if (!path || !*path)
        return NS_OK;
    f = fopen(path, "r");
    if (!f) {
        snprintf(errstr, errstr_size, "%s: could not read %s", file_var, path);
        return NS_ERR_CONFIG;
    }
    n = fread(dst, 1, size - 1, f);
    fclose(f);
    dst[n] = '\0';
    while (n && (dst[n - 1] == '\n' || dst[n - 1] == '\r'))
        dst[--n] = '\0';
    return NS_OK;
too_long:
    snprintf(errstr, errstr_size, "%s is too long", name);
    return NS_ERR_CONFIG;
}

static enum ns_err set_kafka_prop(struct config *cfg, const char *name,
                                  const char *value, char *errstr,
                                  size_t errstr_size)
{
    for (size_t i = 0; i < cfg->kafka_prop_count; i++)
        if (strcmp(cfg->kafka_props[2 * i], name) == 0) {
            char *v = strdup(value);
            if (!v)
                return NS_ERR_NOMEM;
            free(cfg->kafka_props[2 * i + 1]);
            cfg->kafka_props[2 * i + 1] = v;
            return NS_OK;
        }
    if (cfg->kafka_prop_count == CONFIG_MAX_KAFKA_PROPS) {
        snprintf(errstr, errstr_size, "more than %d kafka properties",
                 CONFIG_MAX_KAFKA_PROPS);
        return NS_ERR_CONFIG;
    }
    cfg->kafka_props[2 * cfg->kafka_prop_count] = strdup(name);
    cfg->kafka_props[2 * cfg->kafka_prop_count + 1] = strdup(value);
    cfg->kafka_prop_count++;
    if (!cfg->kafka_props[2 * cfg->kafka_prop_count - 2] ||
        !cfg->kafka_props[2 * cfg->kafka_prop_count - 1])
        return NS_ERR_NOMEM;
    return NS_OK;
}

static enum ns_err parse_lanes(struct config *cfg, const char *list,
                               const char *where, char *errstr,
                               size_t errstr_size)
{
    char buf[256], *save = NULL, *tok;

    memset(cfg->lanes, 0, sizeof(cfg->lanes));
    if (!copy_str(buf, sizeof(buf), list))
        return NS_ERR_CONFIG;
    for (tok = strtok_r(buf, ", ", &save); tok;
         tok = strtok_r(NULL, ", ", &save)) {
        int lane = mapping_lane_parse(tok);
        if (lane < 0) {
            snprintf(errstr, errstr_size, "%s: unknown lane \"%s\"", where,
                     tok);
            return NS_ERR_CONFIG;
        }
        cfg->lanes[lane] = 1;
    }
    return NS_OK;
}

static int env_int(const char *name, int *out, char *errstr,
                   size_t errstr_size)
{
    const char *v = getenv(name);
    char *end;
    long n;

    if (!v || !*v)
        return 0;
    n = strtol(v, &end, 10);
    if (*end || n <= 0 || n > 100000000) {
        snprintf(errstr, errstr_size, "%s: \"%s\" is not a positive integer",
                 name, v);
        return -1;
    }
    *out = (int)n;
    return 0;
}


static enum ns_err load_file(struct config *cfg, const char *path,
                             char *errstr, size_t errstr_size)
{
    config_t lc;
    config_setting_t *s;
    const char *str;
    int n;
    enum ns_err err = NS_OK;

    config_init(&lc);
    if (!config_read_file(&lc, path)) {
        if (config_error_type(&lc) == CONFIG_ERR_FILE_IO)
            snprintf(errstr, errstr_size, "%s: could not read file", path);
        else
            snprintf(errstr, errstr_size, "%s:%d: %s", path,
                     config_error_line(&lc), config_error_text(&lc));
        err = NS_ERR_CONFIG;
        goto cleanup;
    }
    if (config_lookup_string(&lc, "mapping", &str))
        copy_str(cfg->mapping_path, sizeof(cfg->mapping_path), str);
    if (config_lookup_string(&lc, "group_id", &str))
        copy_str(cfg->group_id, sizeof(cfg->group_id), str);
    s = config_lookup(&lc, "lanes");
    if (s) {
        char list[256] = "";
        for (int i = 0; i < config_setting_length(s); i++) {
            const char *l = config_setting_get_string_elem(s, i);
            if (!l) {
                snprintf(errstr, errstr_size, "%s:%d: lanes must be strings",
                         path, config_setting_source_line(s));
                err = NS_ERR_CONFIG;
                goto cleanup;
            }
            strncat(list, l, sizeof(list) - strlen(list) - 2);
            strcat(list, ",");
        }
        char where[600];
        snprintf(where, sizeof(where), "%s:%d", path,
                 config_setting_source_line(s));
        err = parse_lanes(cfg, list, where, errstr, errstr_size);
        if (err)
            goto cleanup;
    }
    if (config_lookup_int(&lc, "batch.max_events", &n))
        cfg->batch_max_events = n;
    if (config_lookup_int(&lc, "batch.max_ms", &n))
        cfg->batch_max_ms = n;
    if (config_lookup_int(&lc, "retry.initial_ms", &n))
        cfg->retry_initial_ms = n;
    if (config_lookup_int(&lc, "retry.max_ms", &n))
        cfg->retry_max_ms = n;
    if (config_lookup_string(&lc, "log.level", &str)) {
        cfg->log_level = log_level_parse(str);
        if (cfg->log_level < 0) {
            s = config_lookup(&lc, "log.level");
            snprintf(errstr, errstr_size, "%s:%d: unknown log level \"%s\"",
                     path, config_setting_source_line(s), str);
            err = NS_ERR_CONFIG;
            goto cleanup;
        }
    }
    config_lookup_bool(&lc, "log.json", &cfg->log_json);
    /* libconfig names cannot hold dots, so librdkafka properties are
     * ["name", "value"] pairs */
    s = config_lookup(&lc, "kafka");
    for (int i = 0; s && i < config_setting_length(s); i++) {
        config_setting_t *p = config_setting_get_elem(s, (unsigned)i);
        const char *k = config_setting_get_string_elem(p, 0);
        const char *v = config_setting_get_string_elem(p, 1);
        if (!k || !v || config_setting_length(p) != 2) {
            snprintf(errstr, errstr_size, "%s:%d: kafka entries are "
                     "[\"property\", \"value\"] pairs of strings",
                     path, config_setting_source_line(p));
            err = NS_ERR_CONFIG;
            goto cleanup;
        }
        err = set_kafka_prop(cfg, k, v, errstr, errstr_size);
        if (err)
            goto cleanup;
    }
    if (config_lookup_string(&lc, "neo4j.url", &str))
        copy_str(cfg->neo4j_url, sizeof(cfg->neo4j_url), str);
    if (config_lookup_string(&lc, "neo4j.database", &str))
        copy_str(cfg->neo4j_db, sizeof(cfg->neo4j_db), str);
    if (config_lookup_string(&lc, "neo4j.user", &str))
        copy_str(cfg->neo4j_user, sizeof(cfg->neo4j_user), str);
    if (config_lookup_string(&lc, "neo4j.password", &str))
        copy_str(cfg->neo4j_password, sizeof(cfg->neo4j_password), str);
    if (config_lookup_int(&lc, "neo4j.timeout_ms", &n))
        cfg->neo4j_timeout_ms = n;
    if (config_lookup_string(&lc, "postgres.conninfo", &str))
        copy_str(cfg->pg_conninfo, sizeof(cfg->pg_conninfo), str);
    if (config_lookup_string(&lc, "postgres.password", &str))
        copy_str(cfg->pg_password, sizeof(cfg->pg_password), str);
    if (config_lookup_int(&lc, "metrics.port", &n)) {
        if (n < 0 || n > 65535) {
            s = config_lookup(&lc, "metrics.port");
            snprintf(errstr, errstr_size, "%s:%d: metrics.port %d is not "
                     "0 (off) or a TCP port", path,
                     config_setting_source_line(s), n);
            err = NS_ERR_CONFIG;
            goto cleanup;
        }
        cfg->metrics_port = n;
    }
    if (config_lookup_string(&lc, "metrics.bind", &str))
        copy_str(cfg->metrics_bind, sizeof(cfg->metrics_bind), str);

cleanup:
    config_destroy(&lc);
    return err;
}

/* The value of an environment variable, or NULL when unset or empty. */
static const char *env_value(const char *name)
{
    const char *v = getenv(name);
    return (v && *v) ? v : NULL;
}

static enum ns_err apply_env(struct config *cfg, char *errstr,
                             size_t errstr_size)
{
    const char *v;
    enum ns_err err;

    v = env_value("NEXUS_MAPPING");
    if (v)
        copy_str(cfg->mapping_path, sizeof(cfg->mapping_path), v);
    v = env_value("NEXUS_GROUP_ID");
    if (v)
        copy_str(cfg->group_id, sizeof(cfg->group_id), v);
    v = env_value("NEXUS_LANES");
    if (v) {
        err = parse_lanes(cfg, v, "NEXUS_LANES", errstr, errstr_size);
        if (err)
            return err;
    }
    if (env_int("NEXUS_BATCH_MAX", &cfg->batch_max_events, errstr,
                errstr_size) ||
        env_int("NEXUS_BATCH_MS", &cfg->batch_max_ms, errstr, errstr_size) ||
        env_int("NEXUS_RETRY_MAX_MS", &cfg->retry_max_ms, errstr,
                errstr_size))
        return NS_ERR_CONFIG;
    v = env_value("NEXUS_LOG_LEVEL");
    if (v) {
        cfg->log_level = log_level_parse(v);
        if (cfg->log_level < 0) {
            snprintf(errstr, errstr_size, "NEXUS_LOG_LEVEL: unknown level "
                     "\"%s\"", v);
            return NS_ERR_CONFIG;
        }
    }
    v = env_value("NEXUS_LOG_JSON");
    if (v)
        cfg->log_json = strcmp(v, "0") != 0 && strcmp(v, "false") != 0;
    v = env_value("NEXUS_METRICS_PORT");
    if (v) {
        char *end;
        long port = strtol(v, &end, 10);
        if (*end || port < 0 || port > 65535) {
            snprintf(errstr, errstr_size, "NEXUS_METRICS_PORT: \"%s\" is not "
                     "0 (off) or a TCP port", v);
            return NS_ERR_CONFIG;
        }
        cfg->metrics_port = (int)port;
    }
    v = env_value("NEXUS_METRICS_BIND");
    if (v && !copy_str(cfg->metrics_bind, sizeof(cfg->metrics_bind), v)) {
        snprintf(errstr, errstr_size, "NEXUS_METRICS_BIND is too long");
        return NS_ERR_CONFIG;
    }
    v = env_value("NEXUS_KAFKA_BOOTSTRAP");
    if (v) {
        err = set_kafka_prop(cfg, "bootstrap.servers", v, errstr, errstr_size);
        if (err)
            return err;
    }
    v = env_value("NEXUS_NEO4J_URL");
    if (v)
        copy_str(cfg->neo4j_url, sizeof(cfg->neo4j_url), v);
    v = env_value("NEXUS_NEO4J_DB");
    if (v)
        copy_str(cfg->neo4j_db, sizeof(cfg->neo4j_db), v);
    v = env_value("NEXUS_NEO4J_USER");
    if (v)
        copy_str(cfg->neo4j_user, sizeof(cfg->neo4j_user), v);
    err = env_secret("NEXUS_NEO4J_PASSWORD", cfg->neo4j_password,
                     sizeof(cfg->neo4j_password), errstr, errstr_size);
    if (!err)
        err = env_secret("NEXUS_WRITER_PASSWORD", cfg->pg_password,
                         sizeof(cfg->pg_password), errstr, errstr_size);
    if (err)
        return err;
    if (getenv("NEXUS_PG_HOST") || getenv("NEXUS_PG_PORT") ||
        getenv("NEXUS_PG_DB") || getenv("NEXUS_WRITER_USER")) {
        const char *host = getenv("NEXUS_PG_HOST");
        const char *port = getenv("NEXUS_PG_PORT");
        const char *db = getenv("NEXUS_PG_DB");
        const char *user = getenv("NEXUS_WRITER_USER");
        snprintf(cfg->pg_conninfo, sizeof(cfg->pg_conninfo),
                 "host=%s port=%s dbname=%s user=%s "
                 "application_name=nexus-%s connect_timeout=5",
                 host ? host : "127.0.0.1", port ? port : "55432",
                 db ? db : "contextnexus", user ? user : "nexus_writer",
                 cfg->worker);
    }
    return NS_OK;
}

enum ns_err config_load(struct config *cfg, const char *path,
                        const char *worker, char *errstr, size_t errstr_size)
{
    enum ns_err err = NS_OK;

    memset(cfg, 0, sizeof(*cfg));
    copy_str(cfg->worker, sizeof(cfg->worker), worker);
    copy_str(cfg->mapping_path, sizeof(cfg->mapping_path),
             "schemas/mapping.cfg");
    snprintf(cfg->group_id, sizeof(cfg->group_id), "nexus-%s", worker);
    cfg->batch_max_events = 1000;
    cfg->batch_max_ms = 50;
    cfg->retry_initial_ms = 200;
    cfg->retry_max_ms = 30000;
    cfg->log_level = LOG_INFO;
    copy_str(cfg->neo4j_url, sizeof(cfg->neo4j_url), "http://127.0.0.1:7474");
    copy_str(cfg->neo4j_db, sizeof(cfg->neo4j_db), "neo4j");
    copy_str(cfg->neo4j_user, sizeof(cfg->neo4j_user), "neo4j");
    cfg->neo4j_timeout_ms = 60000;
    copy_str(cfg->metrics_bind, sizeof(cfg->metrics_bind), "0.0.0.0");
    snprintf(cfg->pg_conninfo, sizeof(cfg->pg_conninfo),
             "host=127.0.0.1 port=5432 dbname=contextnexus user=nexus_writer "
             "application_name=nexus-%s connect_timeout=5", worker);
    err = set_kafka_prop(cfg, "bootstrap.servers", "127.0.0.1:9092", errstr,
                         errstr_size);
    if (!err && path)
        err = load_file(cfg, path, errstr, errstr_size);
    if (!err)
        err = apply_env(cfg, errstr, errstr_size);
    if (err == NS_ERR_NOMEM)
        snprintf(errstr, errstr_size, "out of memory");
    if (err)
        config_free(cfg);
    return err;
}

enum ns_err config_resolve_lanes(struct config *cfg, const struct mapping *map,
                                 char *errstr, size_t errstr_size)
{
    int any = 0, owned = 0;

    for (int l = 0; l < LANE__COUNT; l++)
        any |= cfg->lanes[l];
    for (int l = 0; l < LANE__COUNT; l++) {
        int has = mapping_worker_has_lane(map, cfg->worker,
                                          (enum mapping_lane)l);
        if (!any)
            cfg->lanes[l] = has;
        else if (cfg->lanes[l] && !has) {
            snprintf(errstr, errstr_size, "worker %s owns no table in lane "
                     "%s", cfg->worker, mapping_lane_name((enum mapping_lane)l));
            return NS_ERR_CONFIG;
        }
        owned |= cfg->lanes[l];
    }
    if (!owned) {
        snprintf(errstr, errstr_size, "worker %s owns no captured table in "
                 "the mapping", cfg->worker);
        return NS_ERR_CONFIG;
    }
    return NS_OK;
}

char *config_pg_conninfo(const struct config *cfg)
{
    size_t size = strlen(cfg->pg_conninfo) + 2 * strlen(cfg->pg_password) + 32;
    char *s = malloc(size), *p;

    if (!s)
        return NULL;
    p = s + snprintf(s, size, "%s", cfg->pg_conninfo);
    if (cfg->pg_password[0]) {
        /* libpq quoting: single quotes, backslash-escaped */
        p += sprintf(p, " password='");
        for (const char *c = cfg->pg_password; *c; c++) {
            if (*c == '\'' || *c == '\\')
                *p++ = '\\';
            *p++ = *c;
        }
        *p++ = '\'';
        *p = '\0';
    }
    return s;
}

static int is_secret_name(const char *name)
{
    return strstr(name, "password") || strstr(name, "secret") ||
           strstr(name, "sasl.oauthbearer") || strstr(name, "key.pem");
}

void config_dump(const struct config *cfg, FILE *f)
{
    fprintf(f, "worker = \"%s\";\nmapping = \"%s\";\ngroup_id = \"%s\";\n",
            cfg->worker, cfg->mapping_path, cfg->group_id);
    fputs("lanes = [", f);
    for (int l = 0, n = 0; l < LANE__COUNT; l++)
        if (cfg->lanes[l])
            fprintf(f, "%s\"%s\"", n++ ? ", " : "",
                    mapping_lane_name((enum mapping_lane)l));
    fprintf(f, "];\nbatch = { max_events = %d; max_ms = %d; };\n"
               "retry = { initial_ms = %d; max_ms = %d; };\n"
               "log = { level = \"%s\"; json = %s; };\nkafka = {\n",
            cfg->batch_max_events, cfg->batch_max_ms, cfg->retry_initial_ms,
            cfg->retry_max_ms,
            cfg->log_level == LOG_ERROR  ? "error"
            : cfg->log_level == LOG_WARN ? "warn"
            : cfg->log_level == LOG_INFO ? "info"
                                         : "debug",
            cfg->log_json ? "true" : "false");
    for (size_t i = 0; i < cfg->kafka_prop_count; i++)
        fprintf(f, "  \"%s\" = \"%s\";\n", cfg->kafka_props[2 * i],
                is_secret_name(cfg->kafka_props[2 * i])
                    ? "********" : cfg->kafka_props[2 * i + 1]);
    fprintf(f, "};\nneo4j = { url = \"%s\"; database = \"%s\"; user = \"%s\"; "
               "password = \"%s\"; timeout_ms = %ld; };\n"
               "postgres = { conninfo = \"%s\"; password = \"%s\"; };\n",
            cfg->neo4j_url, cfg->neo4j_db, cfg->neo4j_user,
            cfg->neo4j_password[0] ? "********" : "", cfg->neo4j_timeout_ms,
            cfg->pg_conninfo, cfg->pg_password[0] ? "********" : "");
    fprintf(f, "metrics = { port = %d; bind = \"%s\"; };\n", cfg->metrics_port,
            cfg->metrics_bind);
}

void config_free(struct config *cfg)
{
    for (size_t i = 0; i < 2 * cfg->kafka_prop_count; i++) {
        free(cfg->kafka_props[i]);
        cfg->kafka_props[i] = NULL;
    }
    cfg->kafka_prop_count = 0;
}
