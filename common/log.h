/*
 * log.h - leveled logging to stderr, plain text or JSON lines.
 *
 * The level is tested before any formatting. Messages follow PostgreSQL's
 * wording: lower case, no final period, what failed and why. Lines that
 * concern one Kafka message carry its topic, partition, offset and key
 * through log_event().
 */
#ifndef NS_LOG_H
#define NS_LOG_H

#include <stddef.h>
#include <stdint.h>

enum log_level { NS_LOG_ERROR = 0, NS_LOG_WARN, NS_LOG_INFO, NS_LOG_DEBUG };

/* Set once at start-up, before threads: level, JSON output, process name. */
void log_setup(enum log_level level, int json, const char *name);

/* Parse "error", "warn", "info", "debug"; -1 when unknown. */
int log_level_parse(const char *s);

/* Our level for a syslog level (0 emerg .. 7 debug), as librdkafka logs. */
enum log_level log_level_from_syslog(int level);

/* Non-zero when a message at this level would be written. */
int log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Like log_msg, with the Kafka position and entity key of one event.
 * topic and key may be NULL. */
void log_event(enum log_level level, const char *topic, int32_t partition,
               int64_t offset, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/*
 * A Kafka message key (len bytes, not NUL-terminated; may be NULL) as text
 * for log_event(), in the caller's buf, cut to fit. Returns buf, or NULL
 * when there is no key.
 */
const char *log_key_text(const void *key, size_t len, char *buf,
                         size_t size);

/*
 * A URL as text fit to print: the password of its userinfo, if any, is
 * replaced by "********" ("http://user:********@host:7474"); everything
 * else is copied. Written into the caller's buf, cut to fit. Returns buf;
 * "" when url is NULL. The password never reaches buf, even when cut.
 */
const char *log_url_text(const char *url, char *buf, size_t size);

#endif
