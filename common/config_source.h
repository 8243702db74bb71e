/*
 * config_source.h - reading one setting's value, for the configuration
 * modules: strings copied whole or refused, secrets from files or the
 * environment, "path:line" of a file setting, librdkafka properties.
 * Pure helpers of config.c and config_tls.c; nothing else includes this.
 */
#ifndef NS_CONFIG_SOURCE_H
#define NS_CONFIG_SOURCE_H

#include <libconfig.h>
#include <stddef.h>

#include "config_types.h"
#include "err.h"

/* Copy src into dst; 0 when it does not fit (dst then holds a cut copy). */
int config_copy_str(char *dst, size_t size, const char *src);

/*
 * A secret from the file at path into dst: the whole file, one final line
 * break dropped; what names the setting in errors. An unreadable, empty or
 * too long file is NS_ERR_CONFIG, never a silently cut secret.
 */
enum ns_err config_secret_read_file(const char *what, const char *path,
                                    char *dst, size_t size, char *errstr,
                                    size_t errstr_size);

/* A secret from NAME, or from the file NAME_FILE names; both set is an
 * error; neither leaves dst unchanged. */
enum ns_err config_env_secret(const char *name, char *dst, size_t size,
                              char *errstr, size_t errstr_size);

/* The value of an environment variable, or NULL when unset or empty. */
const char *config_env_value(const char *name);

/* Set (or replace) a librdkafka property in cfg. */
enum ns_err config_set_kafka_prop(struct config *cfg, const char *name,
                                  const char *value, char *errstr,
                                  size_t errstr_size);

/* "path:line" of a file setting, for error messages. */
void config_setting_where(config_t *lc, const char *name, const char *path,
                          char *where, size_t size);

#endif
