/*
 * config.c - a worker's settings (config.h): defaults, the libconfig file,
 * the environment, the checks across settings, the dump.
 */
#include "config.h"

#include <errno.h>
#include <libconfig.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "config_source.h"
#include "config_tls.h"
#include "convert.h"
#include "log.h"
#include "neo4j.h"

static enum ns_err parse_lanes(struct config *cfg, const char *list,
                               const char *where, char *errstr,
                               size_t errstr_size)
{
    char buf[256], *save = NULL, *tok;

    memset(cfg->lanes, 0, sizeof(cfg->lanes));
    if (!config_copy_str(buf, sizeof(buf), list))
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

static int env_int_min(const char *name, int *out, int min, char *errstr,
                       size_t errstr_size)
{
    const char *v = getenv(name);
    char *end;
    long n;

    if (!v || !*v)
        return 0;
    n = strtol(v, &end, 10);
    if (end == v || *end || n < min || n > 100000000) {
        snprintf(errstr, errstr_size, "%s: \"%s\" is not an integer from %d "
                 "to 100000000", name, v, min);
        return -1;
    }
    *out = (int)n;
    return 0;
}

static int env_int(const char *name, int *out, char *errstr,
                   size_t errstr_size)
{
    return env_int_min(name, out, 1, errstr, errstr_size);
}

/* librdkafka judges a property now, on a scratch configuration, so that
 * an unknown name or a bad value is a file:line error at start-up like any
 * other, not a failure when the consumer is made. */
static enum ns_err kafka_prop_check(const char *path, int line,
                                    const char *name, const char *value,
                                    char *errstr, size_t errstr_size)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char kerr[512];
    enum ns_err err = NS_OK;

    if (!conf)
        return NS_ERR_NOMEM;
    if (rd_kafka_conf_set(conf, name, value, kerr, sizeof(kerr)) !=
        RD_KAFKA_CONF_OK) {
        /* librdkafka's message names the property */
        snprintf(errstr, errstr_size, "%s:%d: kafka: %s", path, line, kerr);
        err = NS_ERR_CONFIG;
    }
    rd_kafka_conf_destroy(conf);
    return err;
}

/* neo4j.password_file and postgres.password_file: the secret read from a
 * file, so the settings file itself can be shared. A password given
 * inline as well is an error. */
static enum ns_err load_file_secrets(struct config *cfg, config_t *lc,
                                     const char *path, char *errstr,
                                     size_t errstr_size)
{
    const struct {
        const char *file_key, *inline_key;
        char *dst;
        size_t size;
    } secrets[] = {
        {"neo4j.password_file", "neo4j.password", cfg->neo4j_password,
         sizeof(cfg->neo4j_password)},
        {"postgres.password_file", "postgres.password", cfg->pg_password,
         sizeof(cfg->pg_password)},
    };
    char where[600];
    const char *str;

    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        if (!config_lookup_string(lc, secrets[i].file_key, &str))
            continue;
        config_setting_where(lc, secrets[i].file_key, path, where,
                             sizeof(where));
        if (config_lookup(lc, secrets[i].inline_key)) {
            snprintf(errstr, errstr_size, "%s: %s and %s are both set; set "
                     "one", where, secrets[i].inline_key, secrets[i].file_key);
            return NS_ERR_CONFIG;
        }
        if (config_secret_read_file(where, str, secrets[i].dst, secrets[i].size,
                                    errstr, errstr_size))
            return NS_ERR_CONFIG;
    }
    return NS_OK;
}

/* Kafka secrets from the environment (or *_FILE), for the librdkafka
 * properties that hold them. */
static enum ns_err apply_env_kafka_secrets(struct config *cfg, char *errstr,
                                           size_t errstr_size)
{
    static const struct {
        const char *env, *prop;
    } secrets[] = {
        {"NEXUS_KAFKA_SASL_PASSWORD", "sasl.password"},
        {"NEXUS_KAFKA_SSL_KEY_PASSWORD", "ssl.key.password"},
    };
    char value[1024];
    enum ns_err err = NS_OK;

    for (size_t i = 0; !err && i < sizeof(secrets) / sizeof(secrets[0]);
         i++) {
        value[0] = '\0';
        err = config_env_secret(secrets[i].env, value, sizeof(value), errstr,
                                errstr_size);
        if (!err && value[0])
            err = config_set_kafka_prop(cfg, secrets[i].prop, value, errstr,
                                        errstr_size);
    }
    memset(value, 0, sizeof(value));
    return err;
}

/* A comma list of times (convert_time_parse), ascending: the instants at
 * which the source's positions restarted. */
static enum ns_err parse_epochs(struct config *cfg, const char *list,
                                const char *where, char *errstr,
                                size_t errstr_size)
{
    char buf[CONFIG_MAX_EPOCHS * 40], *save = NULL, *tok;

    cfg->source_epoch_count = 0;
    if (!config_copy_str(buf, sizeof(buf), list)) {
        snprintf(errstr, errstr_size, "%s: too many source epochs", where);
        return NS_ERR_CONFIG;
    }
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int64_t ms;

        while (*tok == ' ')
            tok++;
        if (!*tok)
            continue;
        if (cfg->source_epoch_count == CONFIG_MAX_EPOCHS ||
            convert_time_parse(tok, &ms) ||
            (cfg->source_epoch_count &&
             ms <= cfg->source_epochs_ms[cfg->source_epoch_count - 1])) {
            snprintf(errstr, errstr_size, "%s: \"%s\" is not a time after the "
                     "previous epoch (at most %d; ISO-8601 or epoch ms)",
                     where, tok, CONFIG_MAX_EPOCHS);
            return NS_ERR_CONFIG;
        }
        cfg->source_epochs_ms[cfg->source_epoch_count++] = ms;
    }
    return NS_OK;
}

int64_t config_source_epoch(const struct config *cfg, int64_t ts_ms)
{
    int64_t epoch = 0;

    for (size_t i = 0; i < cfg->source_epoch_count; i++)
        epoch += ts_ms >= cfg->source_epochs_ms[i];
    return epoch;
}

/* An optional integer setting of at least min: path:line on error. */
static enum ns_err file_int_min(config_t *lc, const char *path,
                                const char *name, int min, int *out,
                                char *errstr, size_t errstr_size)
{
    config_setting_t *s = config_lookup(lc, name);

    if (!s)
        return NS_OK;
    if (config_setting_type(s) != CONFIG_TYPE_INT ||
        config_setting_get_int(s) < min) {
        snprintf(errstr, errstr_size, "%s:%d: %s must be an integer of at "
                 "least %d", path, config_setting_source_line(s), name, min);
        return NS_ERR_CONFIG;
    }
    *out = config_setting_get_int(s);
    return NS_OK;
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
        config_copy_str(cfg->mapping_path, sizeof(cfg->mapping_path), str);
    if (config_lookup_string(&lc, "group_id", &str))
        config_copy_str(cfg->group_id, sizeof(cfg->group_id), str);
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
    s = config_lookup(&lc, "source.epochs");
    if (s) {
        char list[CONFIG_MAX_EPOCHS * 40] = "", where[600];
        for (int i = 0; i < config_setting_length(s); i++) {
            const char *e = config_setting_get_string_elem(s, i);
            if (!e || strlen(list) + strlen(e) + 2 > sizeof(list)) {
                snprintf(errstr, errstr_size, "%s:%d: source.epochs must be "
                         "at most %d time strings", path,
                         config_setting_source_line(s), CONFIG_MAX_EPOCHS);
                err = NS_ERR_CONFIG;
                goto cleanup;
            }
            strcat(list, e);
            strcat(list, ",");
        }
        snprintf(where, sizeof(where), "%s:%d", path,
                 config_setting_source_line(s));
        err = parse_epochs(cfg, list, where, errstr, errstr_size);
        if (err)
            goto cleanup;
    }
    err = file_int_min(&lc, path, "tombstones.horizon_s", 0,
                           &cfg->tombstone_horizon_s, errstr, errstr_size);
    if (!err)
        err = file_int_min(&lc, path, "batch.max_bytes", 1024,
                           &cfg->batch_max_bytes, errstr, errstr_size);
    if (!err)
        err = file_int_min(&lc, path, "batch.backlog_max_bytes", 1024,
                           &cfg->backlog_max_bytes, errstr, errstr_size);
    if (!err)
        err = file_int_min(&lc, path, "retry.poison_after", 1,
                           &cfg->poison_after, errstr, errstr_size);
    if (!err)
        err = file_int_min(&lc, path, "tombstones.prune_every_s", 1,
                           &cfg->tombstone_prune_every_s, errstr,
                           errstr_size);
    if (err)
        goto cleanup;
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
        err = kafka_prop_check(path, config_setting_source_line(p), k, v,
                               errstr, errstr_size);
        if (!err)
            err = config_set_kafka_prop(cfg, k, v, errstr, errstr_size);
        if (err)
            goto cleanup;
    }
    if (config_lookup_string(&lc, "neo4j.url", &str))
        config_copy_str(cfg->neo4j_url, sizeof(cfg->neo4j_url), str);
    if (config_lookup_string(&lc, "neo4j.database", &str))
        config_copy_str(cfg->neo4j_db, sizeof(cfg->neo4j_db), str);
    if (config_lookup_string(&lc, "neo4j.user", &str))
        config_copy_str(cfg->neo4j_user, sizeof(cfg->neo4j_user), str);
    if (config_lookup_string(&lc, "neo4j.password", &str))
        config_copy_str(cfg->neo4j_password, sizeof(cfg->neo4j_password), str);
    if (config_lookup_int(&lc, "neo4j.timeout_ms", &n))
        cfg->neo4j_timeout_ms = n;
    s = config_lookup(&lc, "neo4j.api");
    if (s) {
        str = config_setting_get_string(s);
        cfg->neo4j_api = neo4j_api_parse(str);
        if (cfg->neo4j_api < 0) {
            snprintf(errstr, errstr_size, "%s:%d: neo4j.api must be \"auto\", "
                     "\"query\" (the Query API) or \"tx\" (the HTTP "
                     "transactional API)%s%s%s", path,
                     config_setting_source_line(s), str ? ", not \"" : "",
                     str ? str : "", str ? "\"" : "");
            err = NS_ERR_CONFIG;
            goto cleanup;
        }
    }
    if (config_lookup_string(&lc, "postgres.conninfo", &str)) {
        char where[600];
        config_setting_where(&lc, "postgres.conninfo", path, where,
                             sizeof(where));
        err = config_pg_conninfo_check(where, str, errstr, errstr_size);
        if (err)
            goto cleanup;
        config_copy_str(cfg->pg_conninfo, sizeof(cfg->pg_conninfo), str);
    }
    if (config_lookup_string(&lc, "postgres.password", &str))
        config_copy_str(cfg->pg_password, sizeof(cfg->pg_password), str);
    err = load_file_secrets(cfg, &lc, path, errstr, errstr_size);
    if (!err)
        err = config_tls_load_file(cfg, &lc, path, errstr, errstr_size);
    if (err)
        goto cleanup;
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
        config_copy_str(cfg->metrics_bind, sizeof(cfg->metrics_bind), str);
    if (config_lookup_string(&lc, "metrics.stats_dir", &str) &&
        !config_copy_str(cfg->stats_dir, sizeof(cfg->stats_dir), str)) {
        snprintf(errstr, errstr_size, "%s: metrics.stats_dir is longer than "
                 "%zu bytes", path, sizeof(cfg->stats_dir) - 1);
        err = NS_ERR_CONFIG;
        goto cleanup;
    }

cleanup:
    config_destroy(&lc);
    return err;
}

static enum ns_err apply_env(struct config *cfg, char *errstr,
                             size_t errstr_size)
{
    const char *v;
    enum ns_err err;

    v = config_env_value("NEXUS_MAPPING");
    if (v)
        config_copy_str(cfg->mapping_path, sizeof(cfg->mapping_path), v);
    v = config_env_value("NEXUS_GROUP_ID");
    if (v)
        config_copy_str(cfg->group_id, sizeof(cfg->group_id), v);
    v = config_env_value("NEXUS_LANES");
    if (v) {
        err = parse_lanes(cfg, v, "NEXUS_LANES", errstr, errstr_size);
        if (err)
            return err;
    }
    if (env_int("NEXUS_BATCH_MAX", &cfg->batch_max_events, errstr,
                errstr_size) ||
        env_int("NEXUS_BATCH_MS", &cfg->batch_max_ms, errstr, errstr_size) ||
        env_int("NEXUS_RETRY_MAX_MS", &cfg->retry_max_ms, errstr,
                errstr_size) ||
        env_int_min("NEXUS_TOMBSTONE_HORIZON_S", &cfg->tombstone_horizon_s, 0,
                    errstr, errstr_size) ||
        env_int("NEXUS_TOMBSTONE_PRUNE_EVERY_S",
                &cfg->tombstone_prune_every_s, errstr, errstr_size) ||
        env_int_min("NEXUS_BATCH_MAX_BYTES", &cfg->batch_max_bytes, 1024,
                    errstr, errstr_size) ||
        env_int_min("NEXUS_BACKLOG_MAX_BYTES", &cfg->backlog_max_bytes, 1024,
                    errstr, errstr_size) ||
        env_int_min("NEXUS_RETRY_POISON_AFTER", &cfg->poison_after, 1,
                    errstr, errstr_size))
        return NS_ERR_CONFIG;
    v = config_env_value("NEXUS_SOURCE_EPOCHS");
    if (v) {
        err = parse_epochs(cfg, v, "NEXUS_SOURCE_EPOCHS", errstr,
                           errstr_size);
        if (err)
            return err;
    }
    v = config_env_value("NEXUS_LOG_LEVEL");
    if (v) {
        cfg->log_level = log_level_parse(v);
        if (cfg->log_level < 0) {
            snprintf(errstr, errstr_size, "NEXUS_LOG_LEVEL: unknown level "
                     "\"%s\"", v);
            return NS_ERR_CONFIG;
        }
    }
    v = config_env_value("NEXUS_LOG_JSON");
    if (v)
        cfg->log_json = strcmp(v, "0") != 0 && strcmp(v, "false") != 0;
    v = config_env_value("NEXUS_METRICS_PORT");
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
    v = config_env_value("NEXUS_METRICS_BIND");
    if (v &&
        !config_copy_str(cfg->metrics_bind, sizeof(cfg->metrics_bind), v)) {
        snprintf(errstr, errstr_size, "NEXUS_METRICS_BIND is too long");
        return NS_ERR_CONFIG;
    }
    v = config_env_value("NEXUS_STATS_DIR");
    if (v && !config_copy_str(cfg->stats_dir, sizeof(cfg->stats_dir), v)) {
        snprintf(errstr, errstr_size, "NEXUS_STATS_DIR is longer than %zu "
                 "bytes", sizeof(cfg->stats_dir) - 1);
        return NS_ERR_CONFIG;
    }
    v = config_env_value("NEXUS_KAFKA_BOOTSTRAP");
    if (v) {
        err = config_set_kafka_prop(cfg, "bootstrap.servers", v, errstr,
                                    errstr_size);
        if (err)
            return err;
    }
    v = config_env_value("NEXUS_NEO4J_URL");
    if (v)
        config_copy_str(cfg->neo4j_url, sizeof(cfg->neo4j_url), v);
    v = config_env_value("NEXUS_NEO4J_DB");
    if (v)
        config_copy_str(cfg->neo4j_db, sizeof(cfg->neo4j_db), v);
    v = config_env_value("NEXUS_NEO4J_USER");
    if (v)
        config_copy_str(cfg->neo4j_user, sizeof(cfg->neo4j_user), v);
    v = config_env_value("NEXUS_NEO4J_API");
    if (v) {
        cfg->neo4j_api = neo4j_api_parse(v);
        if (cfg->neo4j_api < 0) {
            snprintf(errstr, errstr_size, "NEXUS_NEO4J_API: \"%s\" is not "
                     "auto, query (the Query API) or tx (the HTTP "
                     "transactional API)", v);
            return NS_ERR_CONFIG;
        }
    }
    err = config_env_secret("NEXUS_NEO4J_PASSWORD", cfg->neo4j_password,
                            sizeof(cfg->neo4j_password), errstr, errstr_size);
    if (!err)
        err = config_env_secret("NEXUS_WRITER_PASSWORD", cfg->pg_password,
                                sizeof(cfg->pg_password), errstr, errstr_size);
    if (!err)
        err = apply_env_kafka_secrets(cfg, errstr, errstr_size);
    if (!err)
        err = config_tls_apply_env(cfg, errstr, errstr_size);
    if (err)
        return err;
    return config_pg_apply_env(cfg, errstr, errstr_size);
}

enum ns_err config_load(struct config *cfg, const char *path,
                        const char *worker, char *errstr, size_t errstr_size)
{
    enum ns_err err = NS_OK;

    memset(cfg, 0, sizeof(*cfg));
    config_copy_str(cfg->worker, sizeof(cfg->worker), worker);
    config_copy_str(cfg->mapping_path, sizeof(cfg->mapping_path),
                    "schemas/mapping.cfg");
    snprintf(cfg->group_id, sizeof(cfg->group_id), "nexus-%s", worker);
    cfg->batch_max_events = 1000;
    cfg->batch_max_ms = 50;
    cfg->retry_initial_ms = 200;
    cfg->retry_max_ms = 30000;
    /* about three times this is what a batch costs at its peak (the
     * change rows, the request body): well inside a 128Mi pod */
    cfg->batch_max_bytes = 8 << 20;
    cfg->backlog_max_bytes = 8 << 20;
    cfg->poison_after = 8;
    /* a week: the lane topics' retention, so no event older than a
     * marker can still be read when the marker goes */
    cfg->tombstone_horizon_s = 7 * 24 * 3600;
    cfg->tombstone_prune_every_s = 600;
    cfg->log_level = NS_LOG_INFO;
    config_copy_str(cfg->neo4j_url, sizeof(cfg->neo4j_url),
                    "http://127.0.0.1:7474");
    config_copy_str(cfg->neo4j_db, sizeof(cfg->neo4j_db), "neo4j");
    config_copy_str(cfg->neo4j_user, sizeof(cfg->neo4j_user), "neo4j");
    cfg->neo4j_timeout_ms = 60000;
    cfg->neo4j_api = NEO4J_API_AUTO;
    config_copy_str(cfg->metrics_bind, sizeof(cfg->metrics_bind), "0.0.0.0");
    snprintf(cfg->pg_conninfo, sizeof(cfg->pg_conninfo),
             "host=127.0.0.1 port=5432 dbname=contextnexus user=nexus_writer "
             "application_name=nexus-%s connect_timeout=5", worker);
    err = config_set_kafka_prop(cfg, "bootstrap.servers", "127.0.0.1:9092",
                                errstr, errstr_size);
    if (!err && path)
        err = load_file(cfg, path, errstr, errstr_size);
    if (!err)
        err = apply_env(cfg, errstr, errstr_size);
    if (!err)
        err = config_tls_check(cfg, errstr, errstr_size);
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
    size_t size = strlen(cfg->pg_conninfo) + 2 * strlen(cfg->pg_password) +
                  2 * strlen(cfg->pg_sslmode) +
                  2 * strlen(cfg->pg_sslrootcert) + 64;
    char *s = malloc(size), *p;

    if (!s)
        return NULL;
    p = s + snprintf(s, size, "%s", cfg->pg_conninfo);
    /* later keywords win in libpq, so these override the conninfo's own */
    if (cfg->pg_sslmode[0])
        p = config_conninfo_append(p, "sslmode", cfg->pg_sslmode);
    if (cfg->pg_sslrootcert[0])
        p = config_conninfo_append(p, "sslrootcert", cfg->pg_sslrootcert);
    if (cfg->pg_password[0])
        config_conninfo_append(p, "password", cfg->pg_password);
    return s;
}

static int is_secret_name(const char *name)
{
    return strstr(name, "password") || strstr(name, "secret") ||
           strstr(name, "sasl.oauthbearer") || strstr(name, "key.pem");
}

void config_dump(const struct config *cfg, FILE *f)
{
    char url[sizeof(cfg->neo4j_url) + 16];

    fprintf(f, "worker = \"%s\";\nmapping = \"%s\";\ngroup_id = \"%s\";\n",
            cfg->worker, cfg->mapping_path, cfg->group_id);
    fputs("lanes = [", f);
    for (int l = 0, n = 0; l < LANE__COUNT; l++)
        if (cfg->lanes[l])
            fprintf(f, "%s\"%s\"", n++ ? ", " : "",
                    mapping_lane_name((enum mapping_lane)l));
    fprintf(f, "];\nbatch = { max_events = %d; max_ms = %d; max_bytes = %d; "
               "backlog_max_bytes = %d; };\n"
               "retry = { initial_ms = %d; max_ms = %d; poison_after = %d; };\n"
               "log = { level = \"%s\"; json = %s; };\nkafka = {\n",
            cfg->batch_max_events, cfg->batch_max_ms, cfg->batch_max_bytes,
            cfg->backlog_max_bytes, cfg->retry_initial_ms, cfg->retry_max_ms,
            cfg->poison_after,
            cfg->log_level == NS_LOG_ERROR  ? "error"
            : cfg->log_level == NS_LOG_WARN ? "warn"
            : cfg->log_level == NS_LOG_INFO ? "info"
                                         : "debug",
            cfg->log_json ? "true" : "false");
    for (size_t i = 0; i < cfg->kafka_prop_count; i++)
        fprintf(f, "  \"%s\" = \"%s\";\n", cfg->kafka_props[2 * i],
                is_secret_name(cfg->kafka_props[2 * i])
                    ? "********" : cfg->kafka_props[2 * i + 1]);
    fprintf(f, "};\nneo4j = { url = \"%s\"; database = \"%s\"; user = \"%s\"; "
               "password = \"%s\"; timeout_ms = %ld; ca_file = \"%s\"; "
               "api = \"%s\"; };\n"
               "postgres = { conninfo = \"%s\"; password = \"%s\"; "
               "sslmode = \"%s\"; sslrootcert = \"%s\"; };\n",
            log_url_text(cfg->neo4j_url, url, sizeof(url)), cfg->neo4j_db,
            cfg->neo4j_user,
            cfg->neo4j_password[0] ? "********" : "", cfg->neo4j_timeout_ms,
            cfg->neo4j_ca_file,
            neo4j_api_name((enum neo4j_api)cfg->neo4j_api), cfg->pg_conninfo,
            cfg->pg_password[0] ? "********" : "", cfg->pg_sslmode,
            cfg->pg_sslrootcert);
    fprintf(f, "metrics = { port = %d; bind = \"%s\"; stats_dir = \"%s\"; };\n",
            cfg->metrics_port, cfg->metrics_bind, cfg->stats_dir);
    fputs("source = { epochs = [", f);
    for (size_t i = 0; i < cfg->source_epoch_count; i++)
        fprintf(f, "%s\"%lld\"", i ? ", " : "",
                (long long)cfg->source_epochs_ms[i]);
    fprintf(f, "]; };\ntombstones = { horizon_s = %d; prune_every_s = %d; };\n",
            cfg->tombstone_horizon_s, cfg->tombstone_prune_every_s);
}

void config_free(struct config *cfg)
{
    for (size_t i = 0; i < 2 * cfg->kafka_prop_count; i++) {
        free(cfg->kafka_props[i]);
        cfg->kafka_props[i] = NULL;
    }
    cfg->kafka_prop_count = 0;
}
