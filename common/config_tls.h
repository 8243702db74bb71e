/*
 * config_tls.h - the TLS settings (postgres.sslmode, postgres.sslrootcert,
 * neo4j.ca_file and their variables) and the PostgreSQL conninfo (its
 * check, and the NEXUS_PG_* keywords). Helpers of config.c.
 */
#ifndef NS_CONFIG_TLS_H
#define NS_CONFIG_TLS_H

#include <libconfig.h>
#include <stddef.h>

#include "config_types.h"
#include "err.h"

/* postgres.sslmode, postgres.sslrootcert, neo4j.ca_file of the file. */
enum ns_err config_tls_load_file(struct config *cfg, config_t *lc,
                                 const char *path, char *errstr,
                                 size_t errstr_size);

/* NEXUS_PG_SSLMODE, NEXUS_PG_SSLROOTCERT, NEXUS_NEO4J_CA_FILE. */
enum ns_err config_tls_apply_env(struct config *cfg, char *errstr,
                                 size_t errstr_size);

/* Checks across settings, once every source is applied. */
enum ns_err config_tls_check(const struct config *cfg, char *errstr,
                             size_t errstr_size);

/* The file's conninfo must parse, and may not carry the password. */
enum ns_err config_pg_conninfo_check(const char *where, const char *conninfo,
                                     char *errstr, size_t errstr_size);

/* Append " key='value'" with libpq's quoting at p, which has room for
 * 2 * strlen(value) + strlen(key) + 5; returns the new end. */
char *config_conninfo_append(char *p, const char *key, const char *value);

/* NEXUS_PG_HOST, NEXUS_PG_PORT, NEXUS_PG_DB, NEXUS_WRITER_USER: each sets
 * its own keyword of the conninfo. */
enum ns_err config_pg_apply_env(struct config *cfg, char *errstr,
                                size_t errstr_size);

#endif
