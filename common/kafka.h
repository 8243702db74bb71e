/*
 * kafka.h - librdkafka configuration shared by the worker's consumer, the
 * dead letter producer and the tools: one way to layer properties, one log
 * callback in our format, one wording for client-wide errors.
 */
#ifndef NS_KAFKA_H
#define NS_KAFKA_H

#include <stddef.h>

#include <librdkafka/rdkafka.h>

#include "err.h"

/*
 * A new configuration from three NULL-terminated lists of name, value
 * pairs, set in this order: defaults (ours, which the user may override),
 * props (the user's kafka.* settings), forced (what our guarantees rest
 * on, which no setting may weaken). Any list may be NULL. librdkafka's log
 * lines go through log.c; quiet makes its INFO lines DEBUG (tools).
 * On success *out is the caller's (rd_kafka_new() adopts it); on failure
 * *out is NULL and errstr names the property.
 */
enum ns_err kafka_conf_new(const char *const *defaults,
                           const char *const *props,
                           const char *const *forced, int quiet,
                           rd_kafka_conf_t **out, char *errstr,
                           size_t errstr_size);

/* Log a client-wide error (an error_cb) as "<who>: NAME: reason", at
 * ERROR for a fatal one, else WARN. */
void kafka_log_error(const char *who, int err, const char *reason);

#endif
