/*
 * config.h - a worker's settings: one libconfig file plus environment
 * overrides, loaded and validated once at start-up, then read-only.
 *
 * Every file key and environment variable, with its default and meaning,
 * is in docs/configuration.md (tests/test_docs.py keeps it to what this
 * module reads); deploy/worker.cfg is an example file. The environment
 * wins over the file. Every secret (*_PASSWORD) may instead be read from
 * the file named by *_PASSWORD_FILE (or the file's *.password_file);
 * setting both is an error.
 *
 * Modules: config (the file, the environment, defaults, the dump),
 * config_source (reading a value: files, variables, where it was set),
 * config_tls (TLS settings and the PostgreSQL conninfo).
 */
#ifndef NS_CONFIG_H
#define NS_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config_types.h"
#include "err.h"
#include "mapping.h"


/*
 * Load path (NULL: defaults and environment only) for worker. On failure
 * returns NS_ERR_CONFIG with "path:line: reason" in errstr. cfg is then
 * freed already. Release with config_free().
 */
enum ns_err config_load(struct config *cfg, const char *path,
                        const char *worker, char *errstr, size_t errstr_size);

/* Finish lane defaults once the mapping is known: every lane the worker
 * owns when none were named; an error if a named lane is not owned. */
enum ns_err config_resolve_lanes(struct config *cfg, const struct mapping *map,
                                 char *errstr, size_t errstr_size);

/* libpq connection string with sslmode, sslrootcert and the password
 * (caller frees; it holds a secret, so wipe it before). NULL when out of
 * memory. */
char *config_pg_conninfo(const struct config *cfg);

/* The source epoch of an event committed at ts_ms (source.ts_ms): how
 * many of source.epochs are at or before it. */
int64_t config_source_epoch(const struct config *cfg, int64_t ts_ms);

/* Print the effective settings, secrets masked. */
void config_dump(const struct config *cfg, FILE *f);

void config_free(struct config *cfg);

#endif
