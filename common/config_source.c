/*
 * config_source.c - reading one setting's value (config_source.h).
 */
#include "config_source.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int config_copy_str(char *dst, size_t size, const char *src)
{
    int n = snprintf(dst, size, "%s", src);
    return n >= 0 && (size_t)n < size;
}

/*
 * Read a secret from the file at path into dst: the whole file, one final
 * line break dropped. what names the setting in errors. An unreadable,
 * empty or too long file is an error, never a silently cut secret.
 */
enum ns_err config_secret_read_file(const char *what, const char *path,
                                    char *dst, size_t size, char *errstr,
                                    size_t errstr_size)
{
    enum ns_err err = NS_OK;
    FILE *f = fopen(path, "r");
    size_t n;

    if (!f) {
        snprintf(errstr, errstr_size, "%s: could not read %s: %s", what, path,
                 strerror(errno));
        return NS_ERR_CONFIG;
    }
    n = fread(dst, 1, size - 1, f);
    if (ferror(f)) {
        snprintf(errstr, errstr_size, "%s: could not read %s: %s", what, path,
                 strerror(errno));
        err = NS_ERR_CONFIG;
        goto cleanup;
    }
    if (fgetc(f) != EOF) {
        snprintf(errstr, errstr_size, "%s: %s is longer than %zu bytes", what,
                 path, size - 1);
        err = NS_ERR_CONFIG;
        goto cleanup;
    }
    dst[n] = '\0';
    if (n && dst[n - 1] == '\n')
        dst[--n] = '\0';
    if (n && dst[n - 1] == '\r')
        dst[--n] = '\0';
    if (!n) {
        snprintf(errstr, errstr_size, "%s: %s is empty", what, path);
        err = NS_ERR_CONFIG;
    }
cleanup:
    fclose(f);
    if (err)
        memset(dst, 0, size);
    return err;
}

/*
 * Secret from the environment: NAME holds it, or NAME_FILE names a file
 * that does (Docker and Kubernetes secrets). Setting both is an error, as
 * it is unclear which one is meant. Neither leaves dst unchanged.
 */
enum ns_err config_env_secret(const char *name, char *dst, size_t size,
                              char *errstr, size_t errstr_size)
{
    char file_var[128];
    const char *v = getenv(name), *path;

    snprintf(file_var, sizeof(file_var), "%s_FILE", name);
    path = getenv(file_var);
    if (v && *v && path && *path) {
        snprintf(errstr, errstr_size, "%s and %s are both set; set one",
                 name, file_var);
        return NS_ERR_CONFIG;
    }
    if (v && *v) {
        if (!config_copy_str(dst, size, v)) {
            snprintf(errstr, errstr_size, "%s is too long", name);
            return NS_ERR_CONFIG;
        }
        return NS_OK;
    }
    if (!path || !*path)
        return NS_OK;
    return config_secret_read_file(file_var, path, dst, size, errstr,
                                   errstr_size);
}

/* The value of an environment variable, or NULL when unset or empty. */
const char *config_env_value(const char *name)
{
    const char *v = getenv(name);
    return (v && *v) ? v : NULL;
}

enum ns_err config_set_kafka_prop(struct config *cfg, const char *name,
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

/* "path:line" of a setting, for error messages. */
void config_setting_where(config_t *lc, const char *name, const char *path,
                          char *where, size_t size)
{
    config_setting_t *s = config_lookup(lc, name);

    snprintf(where, size, "%s:%d", path, s ? config_setting_source_line(s)
                                           : 0);
}
