/*
 * config_tls.c - TLS settings and the PostgreSQL conninfo (config_tls.h).
 */
#include "config_tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Debian keeps libpq's headers in a subdirectory (pkg-config --cflags). */
#if defined(__has_include) && __has_include(<libpq-fe.h>)
#include <libpq-fe.h>
#else
#include <postgresql/libpq-fe.h>
#endif

#include "config_source.h"
#include "log.h"

/* libpq's sslmode values. */
static int pg_sslmode_valid(const char *mode)
{
    static const char *const modes[] = {"disable", "allow", "prefer",
                                        "require", "verify-ca", "verify-full"};

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++)
        if (strcmp(mode, modes[i]) == 0)
            return 1;
    return 0;
}

/* A CA file must be readable now: a typo should stop the worker at
 * start-up, not show up as a TLS error at the first connection. */
static enum ns_err tls_file_check(const char *where, const char *path,
                                  char *errstr, size_t errstr_size)
{
    if (access(path, R_OK) != 0) {
        snprintf(errstr, errstr_size, "%s: could not read %s: %s", where,
                 path, strerror(errno));
        return NS_ERR_CONFIG;
    }
    return NS_OK;
}

/* TLS settings of one source (file or environment), checked as they come
 * in so that an error names where the value came from. */
static enum ns_err tls_set(struct config *cfg, const char *where_mode,
                           const char *mode, const char *where_root,
                           const char *root, const char *where_ca,
                           const char *ca, char *errstr, size_t errstr_size)
{
    if (mode) {
        if (!pg_sslmode_valid(mode)) {
            snprintf(errstr, errstr_size, "%s: unknown sslmode \"%s\" "
                     "(disable, allow, prefer, require, verify-ca, "
                     "verify-full)", where_mode, mode);
            return NS_ERR_CONFIG;
        }
        config_copy_str(cfg->pg_sslmode, sizeof(cfg->pg_sslmode), mode);
    }
    if (root) {
        if (!config_copy_str(cfg->pg_sslrootcert, sizeof(cfg->pg_sslrootcert),
                             root)) {
            snprintf(errstr, errstr_size, "%s: path too long", where_root);
            return NS_ERR_CONFIG;
        }
        if (strcmp(root, "system") != 0 &&
            tls_file_check(where_root, root, errstr, errstr_size))
            return NS_ERR_CONFIG;
    }
    if (ca) {
        if (!config_copy_str(cfg->neo4j_ca_file, sizeof(cfg->neo4j_ca_file),
                             ca)) {
            snprintf(errstr, errstr_size, "%s: path too long", where_ca);
            return NS_ERR_CONFIG;
        }
        if (tls_file_check(where_ca, ca, errstr, errstr_size))
            return NS_ERR_CONFIG;
    }
    return NS_OK;
}

/* postgres.sslmode, postgres.sslrootcert, neo4j.ca_file. */
enum ns_err config_tls_load_file(struct config *cfg, config_t *lc,
                                 const char *path, char *errstr,
                                 size_t errstr_size)
{
    const char *mode = NULL, *root = NULL, *ca = NULL;
    char where_mode[600], where_root[600], where_ca[600];

    config_lookup_string(lc, "postgres.sslmode", &mode);
    config_lookup_string(lc, "postgres.sslrootcert", &root);
    config_lookup_string(lc, "neo4j.ca_file", &ca);
    config_setting_where(lc, "postgres.sslmode", path, where_mode,
                         sizeof(where_mode));
    config_setting_where(lc, "postgres.sslrootcert", path, where_root,
                         sizeof(where_root));
    config_setting_where(lc, "neo4j.ca_file", path, where_ca, sizeof(where_ca));
    return tls_set(cfg, where_mode, mode, where_root, root, where_ca, ca,
                   errstr, errstr_size);
}

/* NEXUS_PG_SSLMODE, NEXUS_PG_SSLROOTCERT, NEXUS_NEO4J_CA_FILE. */
enum ns_err config_tls_apply_env(struct config *cfg, char *errstr,
                                 size_t errstr_size)
{
    return tls_set(cfg, "NEXUS_PG_SSLMODE",
                   config_env_value("NEXUS_PG_SSLMODE"),
                   "NEXUS_PG_SSLROOTCERT",
                   config_env_value("NEXUS_PG_SSLROOTCERT"),
                   "NEXUS_NEO4J_CA_FILE",
                   config_env_value("NEXUS_NEO4J_CA_FILE"),
                   errstr, errstr_size);
}

/* Checks across settings, once every source is applied. */
enum ns_err config_tls_check(const struct config *cfg, char *errstr,
                             size_t errstr_size)
{
    char url[sizeof(cfg->neo4j_url) + 16];

    if (cfg->neo4j_ca_file[0] && strncmp(cfg->neo4j_url, "https://", 8)) {
        snprintf(errstr, errstr_size, "neo4j.ca_file (NEXUS_NEO4J_CA_FILE) "
                 "is set but the Neo4j url %s is not https",
                 log_url_text(cfg->neo4j_url, url, sizeof(url)));
        return NS_ERR_CONFIG;
    }
    if (cfg->pg_sslrootcert[0] && (!cfg->pg_sslmode[0] ||
        (strcmp(cfg->pg_sslmode, "verify-ca") &&
         strcmp(cfg->pg_sslmode, "verify-full")))) {
        snprintf(errstr, errstr_size, "postgres.sslrootcert "
                 "(NEXUS_PG_SSLROOTCERT) is set but sslmode is \"%s\": the "
                 "certificate is only checked with verify-ca or verify-full",
                 cfg->pg_sslmode[0] ? cfg->pg_sslmode : "prefer");
        return NS_ERR_CONFIG;
    }
    return NS_OK;
}

/* The file's conninfo must parse, and may not carry the password: that
 * goes in postgres.password(_file) or NEXUS_WRITER_PASSWORD(_FILE), so
 * it is masked and never logged with the connection string. */
enum ns_err config_pg_conninfo_check(const char *where, const char *conninfo,
                                     char *errstr, size_t errstr_size)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    enum ns_err err = NS_OK;

    if (!opts) {
        /* libpq's message ends in a line break */
        snprintf(errstr, errstr_size, "%s: postgres.conninfo: %.*s", where,
                 perr ? (int)strcspn(perr, "\n") : 13,
                 perr ? perr : "out of memory");
        err = NS_ERR_CONFIG;
        goto cleanup;
    }
    for (PQconninfoOption *o = opts; o->keyword && !err; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val) {
            snprintf(errstr, errstr_size, "%s: postgres.conninfo holds a "
                     "password; use postgres.password_file or "
                     "NEXUS_WRITER_PASSWORD_FILE", where);
            err = NS_ERR_CONFIG;
        }
cleanup:
    PQconninfoFree(opts);
    PQfreemem(perr);
    return err;
}

/* Append " key='value'" with libpq's quoting (single quotes, backslash
 * escapes) at p, which has room for 2 * strlen(value) + strlen(key) + 5. */
char *config_conninfo_append(char *p, const char *key, const char *value)
{
    p += sprintf(p, " %s='", key);
    for (const char *c = value; *c; c++) {
        if (*c == '\'' || *c == '\\')
            *p++ = '\\';
        *p++ = *c;
    }
    *p++ = '\'';
    *p = '\0';
    return p;
}

/*
 * NEXUS_PG_HOST, NEXUS_PG_PORT, NEXUS_PG_DB, NEXUS_WRITER_USER: each sets
 * its own keyword of the conninfo (the file's, or the default) and leaves
 * the others as they are.
 */
enum ns_err config_pg_apply_env(struct config *cfg, char *errstr,
                                size_t errstr_size)
{
    static const struct { const char *var, *keyword; } vars[] = {
        {"NEXUS_PG_HOST", "host"}, {"NEXUS_PG_PORT", "port"},
        {"NEXUS_PG_DB", "dbname"}, {"NEXUS_WRITER_USER", "user"},
    };
    PQconninfoOption *opts = NULL;
    char *perr = NULL, built[sizeof(cfg->pg_conninfo)], *p = built;
    enum ns_err err = NS_OK;
    int any = 0;

    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        any |= config_env_value(vars[i].var) != NULL;
    if (!any)
        return NS_OK;
    opts = PQconninfoParse(cfg->pg_conninfo, &perr);
    if (!opts) {
        err = perr ? NS_ERR_CONFIG : NS_ERR_NOMEM;
        snprintf(errstr, errstr_size, "postgres.conninfo: %s",
                 perr ? perr : "out of memory");
        goto cleanup;
    }
    *p = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        const char *v = o->val;

        for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
            if (strcmp(o->keyword, vars[i].keyword) == 0 &&
                config_env_value(vars[i].var))
                v = config_env_value(vars[i].var);
        if (!v)
            continue;
        if ((size_t)(p - built) + strlen(o->keyword) + 2 * strlen(v) + 5 >
            sizeof(cfg->pg_conninfo) - 1) {
            err = NS_ERR_CONFIG;
            snprintf(errstr, errstr_size, "the PostgreSQL conninfo with "
                     "NEXUS_PG_* applied is longer than %zu bytes",
                     sizeof(cfg->pg_conninfo) - 1);
            goto cleanup;
        }
        p = config_conninfo_append(p, o->keyword, v);
    }
    config_copy_str(cfg->pg_conninfo, sizeof(cfg->pg_conninfo),
                    built[0] == ' ' ? built + 1 : built);

cleanup:
    if (opts)
        PQconninfoFree(opts);
    PQfreemem(perr);
    return err;
}
