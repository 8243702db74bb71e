#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static enum log_level log_max_level = NS_LOG_INFO;
static int log_json;
static const char *log_name = "nexus-sync";

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void log_setup(enum log_level level, int json, const char *name)
{
    log_max_level = level;
    log_json = json;
    if (name)
        log_name = name;
}

int log_level_parse(const char *s)
{
    for (int i = 0; i <= NS_LOG_DEBUG; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

enum log_level log_level_from_syslog(int level)
{
    /* librdkafka logs a failed connection at 3 (err): retried, so warn */
    return level <= 2 ? NS_LOG_ERROR : level <= 4 ? NS_LOG_WARN :
           level <= 6 ? NS_LOG_INFO : NS_LOG_DEBUG;
}

int log_enabled(enum log_level level)
{
    return level <= log_max_level;
}

static void json_escape(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
}

static void log_write(enum log_level level, const char *topic,
                      int32_t partition, int64_t offset, const char *key,
                      const char *fmt, va_list ap)
{
    char msg[2048];
    char ts[40];
    struct timespec now;
    struct tm tm;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);

    /* the HTTP server's thread logs too: keep each line whole */
    flockfile(stderr);
    if (log_json) {
        fprintf(stderr, "{\"ts\":\"%s.%03ldZ\",\"level\":\"%s\",\"proc\":\"",
                ts, now.tv_nsec / 1000000, level_names[level]);
        json_escape(stderr, log_name);
        fputs("\",\"msg\":\"", stderr);
        json_escape(stderr, msg);
        fputc('"', stderr);
        if (topic) {
            fputs(",\"topic\":\"", stderr);
            json_escape(stderr, topic);
            fprintf(stderr, "\",\"partition\":%d,\"offset\":%lld",
                    (int)partition, (long long)offset);
        }
        if (key) {
            fputs(",\"key\":\"", stderr);
            json_escape(stderr, key);
            fputc('"', stderr);
        }
        fputs("}\n", stderr);
    } else {
        fprintf(stderr, "%s.%03ldZ %s %s: %s", ts, now.tv_nsec / 1000000,
                log_name, level_names[level], msg);
        if (topic)
            fprintf(stderr, " [%s/%d@%lld]", topic, (int)partition,
                    (long long)offset);
        if (key)
            fprintf(stderr, " key=%s", key);
        fputc('\n', stderr);
    }
    funlockfile(stderr);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    log_write(level, NULL, 0, 0, NULL, fmt, ap);
    va_end(ap);
}

const char *log_key_text(const void *key, size_t len, char *buf,
                         size_t size)
{
    if (!key || !len || !size)
        return NULL;
    if (len >= size)
        len = size - 1;
    memcpy(buf, key, len);
    buf[len] = '\0';
    return buf;
}

const char *log_url_text(const char *url, char *buf, size_t size)
{
    const char *scheme, *host, *at = NULL, *colon = NULL;
    size_t auth_len;

    if (!size)
        return buf;
    buf[0] = '\0';
    if (!url)
        return buf;
    scheme = strstr(url, "://");
    host = scheme ? scheme + 3 : url;
    /* The authority ends at the path, query or fragment; userinfo ends at
     * its last '@', the password starts after the first ':' in userinfo. */
    auth_len = strcspn(host, "/?#");
    for (size_t i = 0; i < auth_len; i++)
        if (host[i] == '@')
            at = host + i;
    if (at)
        colon = memchr(host, ':', (size_t)(at - host));
    if (!colon)
        snprintf(buf, size, "%s", url);
    else
        snprintf(buf, size, "%.*s********%s", (int)(colon + 1 - url), url, at);
    return buf;
}

void log_event(enum log_level level, const char *topic, int32_t partition,
               int64_t offset, const char *key, const char *fmt, ...)
{
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    log_write(level, topic, partition, offset, key, fmt, ap);
    va_end(ap);
}
