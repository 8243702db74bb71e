/*
 * nexus-dlq - look into the dead-letter queue and re-drive its events.
 *
 *   nexus-dlq list [--json]
 *   nexus-dlq show [FILTERS] [--limit N] [--json]
 *   nexus-dlq redrive FILTERS [--dry-run | --execute] [--again]
 *
 * The DLQ topic (the mapping's dlq_topic) is read from its low to its high
 * watermark with assign(), never through a consumer group, so looking
 * changes nothing. Dead letters carry the headers common/dlq.c writes:
 * nexus.reason, nexus.error.class, nexus.source.topic|partition|offset,
 * nexus.worker, nexus.time, and nexus.truncated on a letter cut to fit.
 *
 * Re-driving produces the chosen dead letters back into their source lane
 * topic, to their source partition (Debezium's partitioner is not
 * librdkafka's, so hashing the key again could break the per-key order),
 * with the same key and value and every header they carry, plus
 *   nexus.redrive.count        how often this event has been re-driven
 *   nexus.redrive.time         ISO-8601 UTC time of the re-drive
 *   nexus.redrive.dlq.topic / nexus.redrive.dlq.partition /
 *   nexus.redrive.dlq.offset   the dead letter it came from.
 * Those last three are also the record that prevents a second re-drive:
 * before producing, the target lanes are read from shortly before the
 * oldest chosen dead letter to their end, and a dead letter already named
 * by a re-driven event there is skipped unless --again is given. The lane
 * itself is the state, so nothing else has to be kept consistent with it.
 *
 * A letter cut to fit the DLQ topic (nexus.truncated "key=N value=M") holds
 * only a prefix of its event: re-drive reads the original from the source
 * topic at nexus.source.partition/offset and sends that, without the
 * nexus.truncated header. When the original is no longer there (retention)
 * or is not the record the letter was cut from, the run is refused.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>

#include "config.h"
#include "dlq.h"
#include "err.h"
#include "log.h"
#include "mapping.h"
#include "kafka.h"
#include "version.h"

#define DLQ_TOOL_NAME "nexus-dlq"

/* Calls that ask the broker one thing (metadata, watermarks). */
#define CALL_TIMEOUT_MS 10000
/* A re-driven event is searched for from this long before the oldest
 * chosen dead letter: margin for clock skew between hosts. */
#define REDRIVE_SCAN_MARGIN_MS (3600 * 1000LL)
#define MAX_OFFSETS 256
#define MAX_PARTITIONS 1024

enum cmd { CMD_LIST = 0, CMD_SHOW, CMD_REDRIVE };

struct dlq_pos {
    int32_t partition;       /* -1: the only partition of the topic */
    int64_t offset;
};

struct options {
    enum cmd cmd;
    const char *config_path;
    const char *mapping_path;
    int json;
    const char *reason;
    const char *error_class;
    const char *source_topic;
    struct dlq_pos offsets[MAX_OFFSETS];
    size_t offset_count;
    long limit;
    int execute;
    int dry_run;
    int again;
    long timeout_ms;
};

/* One dead letter as read, with what the tool decided about it. */
struct letter {
    int32_t partition;
    int64_t offset;
    int64_t timestamp_ms;            /* Kafka timestamp, -1 if none */
    char *key;
    size_t key_len;
    char *value;                     /* NULL for a tombstone */
    size_t value_len;
    rd_kafka_headers_t *hdrs;        /* owned copy, may be NULL */
    char reason[1024];
    char pattern[1024];
    char error_class[64];
    char source_topic[256];
    int32_t source_partition;        /* -1 when absent */
    int64_t source_offset;           /* -1 when absent */
    char truncated[64];              /* nexus.truncated, "" when whole */
    char time[64];                   /* nexus.time, else the timestamp */
    /* redrive */
    int skip;                        /* already re-driven: not produced */
    char skip_why[512];
    int delivered;
    rd_kafka_resp_err_t dr_err;
    int32_t dr_partition;
    int64_t dr_offset;
};

struct letters {
    struct letter **v;
    size_t n;
    size_t cap;
};

/* One group of `list`: same error class, source topic and reason pattern. */
struct group {
    char error_class[64];
    char source_topic[256];
    char pattern[1024];
    char example[1024];
    uint64_t count;
    int32_t first_partition, last_partition;
    int64_t first_offset, last_offset;
    int64_t first_ts, last_ts;
    char first_time[64], last_time[64];
};

struct groups {
    struct group *v;
    size_t n;
    size_t cap;
};

/* Called for every message a scan reads; a non-zero return stops it. */
typedef enum ns_err (*scan_fn)(const rd_kafka_message_t *rkm, void *opaque,
                               char *errstr, size_t errstr_size);

static void usage(FILE *f)
{
    fputs(
        "usage: nexus-dlq [--config FILE] [--mapping FILE] [--timeout-ms N]\n"
        "                 COMMAND [OPTIONS]\n"
        "\n"
        "Reads the DLQ topic of the mapping from beginning to end (no consumer\n"
        "group, nothing committed) and re-drives dead letters into their source\n"
        "lane topic once their cause is fixed.\n"
        "\n"
        "commands:\n"
        "  list [--json]          dead letters grouped by error class, source\n"
        "                         topic and reason, with counts, first and last\n"
        "                         offsets and times\n"
        "  show [FILTERS] [--limit N] [--json]\n"
        "                         headers, key and value of chosen dead letters\n"
        "  redrive FILTERS [--dry-run | --execute] [--again]\n"
        "                         produce the chosen dead letters again into\n"
        "                         their source lane topic and partition, same\n"
        "                         key, value and headers, plus nexus.redrive.*\n"
        "                         headers; a dry run (the default) only prints\n"
        "                         what --execute would do. Dead letters that\n"
        "                         were re-driven before are skipped unless\n"
        "                         --again is given.\n"
        "\n"
        "filters (all given must match):\n"
        "  --reason R             R is part of the reason or of the grouped\n"
        "                         reason that `list` prints\n"
        "  --class C              nexus.error.class is C (schema, parse, ...)\n"
        "  --source-topic T       nexus.source.topic is T\n"
        "  --offset O[,O...]      DLQ offsets, as PARTITION:OFFSET (plain\n"
        "                         OFFSET when the DLQ has one partition)\n"
        "\n"
        "Kafka settings come from --config and the environment as for the\n"
        "workers (NEXUS_KAFKA_BOOTSTRAP, NEXUS_MAPPING, ...). Exit status: 0\n"
        "done, 1 nothing matched, refused or failed, 2 usage or configuration.\n",
        f);
}

/* ---- small helpers ----------------------------------------------------- */

/* A decimal integer covering the whole string; -1 when it is not one. */
static int64_t parse_int(const char *s)
{
    char *end;
    long long v;

    if (!s || !*s)
        return -1;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno || *end || v < 0)
        return -1;
    return (int64_t)v;
}

static void iso_time(int64_t ms, char *out, size_t out_size)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&secs, &tm);
    snprintf(out, out_size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * The reason with what differs from event to event blanked out, so that
 * letters with one cause fall into one group: digit runs become '#' and
 * quoted literals ('...' or "...") become '?'. Neo4j's messages quote the
 * offending value and name node ids, our own quote the bad value.
 */
static void reason_pattern(const char *reason, char *out, size_t out_size)
{
    size_t o = 0;

    for (const char *p = reason; *p && o + 4 < out_size; p++) {
        if (*p >= '0' && *p <= '9') {
            while (p[1] >= '0' && p[1] <= '9')
                p++;
            out[o++] = '#';
        } else if ((*p == '\'' || *p == '"') && strchr(p + 1, *p)) {
            char q = *p;

            out[o++] = q;
            out[o++] = '?';
            out[o++] = q;
            p = strchr(p + 1, q);
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

/* Bytes as printable text: control and non-ASCII bytes as \xNN. */
static void print_bytes(FILE *f, const char *data, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)data[i];

        if (c >= 0x20 && c < 0x7f && c != '\\')
            fputc(c, f);
        else if (c == '\\')
            fputs("\\\\", f);
        else
            fprintf(f, "\\x%02x", c);
    }
}

static void letter_free(struct letter *lt)
{
    if (!lt)
        return;
    if (lt->hdrs)
        rd_kafka_headers_destroy(lt->hdrs);
    free(lt->key);
    free(lt->value);
    free(lt);
}

static void letters_free(struct letters *ls)
{
    for (size_t i = 0; i < ls->n; i++)
        letter_free(ls->v[i]);
    free(ls->v);
    memset(ls, 0, sizeof(*ls));
}

/* Take lt over (freed on failure too). */
static enum ns_err letters_add(struct letters *ls, struct letter *lt)
{
    if (ls->n == ls->cap) {
        size_t cap = ls->cap ? 2 * ls->cap : 64;
        struct letter **v = realloc(ls->v, cap * sizeof(*v));

        if (!v) {
            letter_free(lt);
            return NS_ERR_NOMEM;
        }
        ls->v = v;
        ls->cap = cap;
    }
    ls->v[ls->n++] = lt;
    return NS_OK;
}

/*
 * A letter from a DLQ message. with_payload: copy key, value and headers
 * too (show, redrive); list needs only the summary. NULL when out of
 * memory; the caller owns the result.
 */
static struct letter *letter_new(const rd_kafka_message_t *rkm,
                                 int with_payload)
{
    struct letter *lt = calloc(1, sizeof(*lt));
    rd_kafka_headers_t *hdrs = NULL;
    rd_kafka_timestamp_type_t tstype;
    char partition[24];

    if (!lt)
        return NULL;
    lt->partition = rkm->partition;
    lt->offset = rkm->offset;
    lt->timestamp_ms = rd_kafka_message_timestamp(rkm, &tstype);
    if (rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        hdrs = NULL;
    dlq_header_str(hdrs, "nexus.reason", lt->reason, sizeof(lt->reason));
    dlq_header_str(hdrs, "nexus.error.class", lt->error_class,
                   sizeof(lt->error_class));
    dlq_header_str(hdrs, "nexus.source.topic", lt->source_topic,
                   sizeof(lt->source_topic));
    dlq_header_str(hdrs, "nexus.source.partition", partition,
                   sizeof(partition));
    lt->source_partition = (int32_t)parse_int(partition);
    dlq_header_str(hdrs, "nexus.source.offset", partition,
                   sizeof(partition));
    lt->source_offset = parse_int(partition);
    dlq_header_str(hdrs, "nexus.truncated", lt->truncated,
                   sizeof(lt->truncated));
    dlq_header_str(hdrs, "nexus.time", lt->time, sizeof(lt->time));
    if (!lt->time[0] && lt->timestamp_ms >= 0)
        iso_time(lt->timestamp_ms, lt->time, sizeof(lt->time));
    reason_pattern(lt->reason, lt->pattern, sizeof(lt->pattern));
    if (!with_payload)
        return lt;
    if (rkm->key_len) {
        lt->key = malloc(rkm->key_len);
        if (!lt->key)
            goto fail;
        memcpy(lt->key, rkm->key, rkm->key_len);
        lt->key_len = rkm->key_len;
    }
    if (rkm->payload) {
        /* one byte more, so an empty value is still not a tombstone */
        lt->value = malloc(rkm->len + 1);
        if (!lt->value)
            goto fail;
        memcpy(lt->value, rkm->payload, rkm->len);
        lt->value_len = rkm->len;
    }
    if (hdrs) {
        lt->hdrs = rd_kafka_headers_copy(hdrs);
        if (!lt->hdrs)
            goto fail;
    }
    return lt;
fail:
    letter_free(lt);
    return NULL;
}

/* ---- filters ----------------------------------------------------------- */

/* Parse "P:O,P:O" or "O,O" into opts->offsets. */
static int offsets_parse(struct options *opts, const char *arg)
{
    char buf[4096], *save = NULL, *tok;

    if (strlen(arg) >= sizeof(buf))
        return -1;
    strcpy(buf, arg);
    for (tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(tok, ':');
        struct dlq_pos pos = {-1, -1};

        if (opts->offset_count == MAX_OFFSETS)
            return -1;
        if (colon) {
            *colon = '\0';
            pos.partition = (int32_t)parse_int(tok);
            if (pos.partition < 0)
                return -1;
            tok = colon + 1;
        }
        pos.offset = parse_int(tok);
        if (pos.offset < 0)
            return -1;
        opts->offsets[opts->offset_count++] = pos;
    }
    return opts->offset_count ? 0 : -1;
}

static int has_filter(const struct options *opts)
{
    return opts->reason || opts->error_class || opts->source_topic ||
           opts->offset_count;
}

/* Index of the --offset entry naming this letter, or -1. */
static long offset_index(const struct options *opts, int32_t partition,
                         int64_t offset)
{
    for (size_t i = 0; i < opts->offset_count; i++)
        if (opts->offsets[i].offset == offset &&
            (opts->offsets[i].partition < 0 ||
             opts->offsets[i].partition == partition))
            return (long)i;
    return -1;
}

static int letter_matches(const struct options *opts, const struct letter *lt)
{
    if (opts->reason && !strstr(lt->reason, opts->reason) &&
        !strstr(lt->pattern, opts->reason))
        return 0;
    if (opts->error_class && strcmp(lt->error_class, opts->error_class) != 0)
        return 0;
    if (opts->source_topic &&
        strcmp(lt->source_topic, opts->source_topic) != 0)
        return 0;
    if (opts->offset_count &&
        offset_index(opts, lt->partition, lt->offset) < 0)
        return 0;
    return 1;
}

/* "--reason 'x' --class ..." for messages about what matched nothing. */
static void filter_describe(const struct options *opts, char *out,
                            size_t out_size)
{
    size_t o = 0;

    out[0] = '\0';
    if (opts->reason)
        o += (size_t)snprintf(out + o, out_size - o, " --reason '%s'",
                              opts->reason);
    if (opts->error_class && o < out_size)
        o += (size_t)snprintf(out + o, out_size - o, " --class '%s'",
                              opts->error_class);
    if (opts->source_topic && o < out_size)
        o += (size_t)snprintf(out + o, out_size - o, " --source-topic '%s'",
                              opts->source_topic);
    for (size_t i = 0; i < opts->offset_count && o < out_size; i++) {
        const struct dlq_pos *pos = &opts->offsets[i];

        o += (size_t)snprintf(out + o, out_size - o, "%s", i ? "," :
                              " --offset ");
        if (pos->partition >= 0 && o < out_size)
            o += (size_t)snprintf(out + o, out_size - o, "%d:",
                                  (int)pos->partition);
        if (o < out_size)
            o += (size_t)snprintf(out + o, out_size - o, "%" PRId64,
                                  pos->offset);
    }
}

/* ---- Kafka ------------------------------------------------------------- */

/* A consumer that is only ever assigned partitions: it joins no group and
 * commits nothing (group.id is set because librdkafka wants one). */
static enum ns_err reader_new(const struct config *cfg, rd_kafka_t **out,
                              char *errstr, size_t errstr_size)
{
    static const char *const extra[] = {
        "group.id", "nexus-dlq-reader",
        "enable.auto.commit", "false",
        "enable.auto.offset.store", "false",
        "enable.partition.eof", "true",
        "isolation.level", "read_committed",
        NULL};
    rd_kafka_conf_t *conf = NULL;
    char kerr[512];
    enum ns_err err;

    *out = NULL;
    err = kafka_conf_new(NULL, (const char *const *)cfg->kafka_props,
                         extra, 1, &conf, errstr, errstr_size);
    if (err)
        return err;
    *out = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kerr, sizeof(kerr));
    if (!*out) {
        rd_kafka_conf_destroy(conf);
        ns_err_set(errstr, errstr_size, "could not create a consumer: %s",
                   kerr);
        return NS_ERR_KAFKA;
    }
    /* conf belongs to the handle now */
    rd_kafka_poll_set_consumer(*out);
    return NS_OK;
}

/* Number of partitions of topic; NS_ERR_KAFKA when it does not exist. */
static enum ns_err topic_partitions(rd_kafka_t *rk, const char *topic,
                                    int *count, char *errstr,
                                    size_t errstr_size)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t kerr;
    enum ns_err err = NS_OK;

    *count = 0;
    if (!rkt) {
        ns_err_set(errstr, errstr_size, "could not use topic %s: %s", topic,
                   rd_kafka_err2str(rd_kafka_last_error()));
        return NS_ERR_KAFKA;
    }
    kerr = rd_kafka_metadata(rk, 0, rkt, &md, CALL_TIMEOUT_MS);
    if (kerr) {
        ns_err_set(errstr, errstr_size,
                   "could not read metadata of %s: %s", topic,
                   rd_kafka_err2str(kerr));
        err = NS_ERR_KAFKA;
        goto cleanup;
    }
    if (md->topic_cnt != 1 || md->topics[0].err ||
        md->topics[0].partition_cnt <= 0) {
        ns_err_set(errstr, errstr_size, "topic %s: %s", topic,
                   md->topic_cnt == 1 && md->topics[0].err
                       ? rd_kafka_err2str(md->topics[0].err)
                       : "no partitions");
        err = NS_ERR_KAFKA;
        goto cleanup;
    }
    *count = md->topics[0].partition_cnt;
    if (*count > MAX_PARTITIONS) {
        ns_err_set(errstr, errstr_size, "topic %s has more than %d "
                   "partitions", topic, MAX_PARTITIONS);
        err = NS_ERR_LIMIT;
    }
cleanup:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return err;
}

/*
 * Read every partition of topic from its start (since_ms < 0: the low
 * watermark; else the first offset at or after that time) to the high
 * watermark taken when the scan began, calling fn for each message.
 * Messages that arrive meanwhile are not read. Nothing is committed.
 */
static enum ns_err topic_scan(rd_kafka_t *rk, const char *topic,
                              int partitions, int64_t since_ms,
                              long timeout_ms, scan_fn fn, void *opaque,
                              char *errstr, size_t errstr_size)
{
    rd_kafka_topic_partition_list_t *assign = NULL;
    int64_t *high = NULL;
    int64_t deadline = now_ms() + timeout_ms;
    int left = 0;
    rd_kafka_resp_err_t kerr;
    enum ns_err err = NS_OK;

    high = calloc((size_t)partitions, sizeof(*high));
    assign = rd_kafka_topic_partition_list_new(partitions);
    if (!high || !assign) {
        ns_err_set(errstr, errstr_size, "out of memory");
        err = NS_ERR_NOMEM;
        goto cleanup;
    }
    for (int p = 0; p < partitions; p++) {
        int64_t low = 0;

        kerr = rd_kafka_query_watermark_offsets(rk, topic, p, &low, &high[p],
                                                CALL_TIMEOUT_MS);
        if (kerr) {
            ns_err_set(errstr, errstr_size,
                       "could not read the watermarks of %s [%d]: %s", topic,
                       p, rd_kafka_err2str(kerr));
            err = NS_ERR_KAFKA;
            goto cleanup;
        }
        if (high[p] > low)
            rd_kafka_topic_partition_list_add(assign, topic, p)->offset =
                since_ms < 0 ? low : since_ms;
    }
    if (since_ms >= 0 && assign->cnt) {
        /* the timestamps become offsets; -1 means nothing that recent */
        kerr = rd_kafka_offsets_for_times(rk, assign, CALL_TIMEOUT_MS);
        if (kerr) {
            ns_err_set(errstr, errstr_size,
                       "could not look up offsets by time in %s: %s", topic,
                       rd_kafka_err2str(kerr));
            err = NS_ERR_KAFKA;
            goto cleanup;
        }
        for (int i = assign->cnt - 1; i >= 0; i--) {
            rd_kafka_topic_partition_t *tp = &assign->elems[i];

            if (tp->err || tp->offset < 0 || tp->offset >= high[tp->partition])
                rd_kafka_topic_partition_list_del_by_idx(assign, i);
        }
    }
    left = assign->cnt;
    if (!left)
        goto cleanup;
    kerr = rd_kafka_assign(rk, assign);
    if (kerr) {
        ns_err_set(errstr, errstr_size, "could not assign %s: %s", topic,
                   rd_kafka_err2str(kerr));
        err = NS_ERR_KAFKA;
        goto cleanup;
    }
    while (left > 0) {
        rd_kafka_message_t *rkm;
        int64_t remaining = deadline - now_ms();

        if (remaining <= 0) {
            ns_err_set(errstr, errstr_size,
                       "timed out after %ld ms reading %s (%d partitions "
                       "not read to their end)", timeout_ms, topic, left);
            err = NS_ERR_KAFKA;
            break;
        }
        rkm = rd_kafka_consumer_poll(rk, remaining < 500 ? (int)remaining
                                                         : 500);
        if (!rkm)
            continue;
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* with eof on, a partition reports its end once per reach */
            if (rkm->partition >= 0 && rkm->partition < partitions &&
                high[rkm->partition] >= 0) {
                high[rkm->partition] = -1;
                left--;
            }
        } else if (rkm->err) {
            log_msg(LOG_WARN, "reading %s: %s", topic,
                    rd_kafka_message_errstr(rkm));
        } else if (rkm->partition >= 0 && rkm->partition < partitions &&
                   high[rkm->partition] >= 0 &&
                   rkm->offset < high[rkm->partition]) {
            err = fn(rkm, opaque, errstr, errstr_size);
            if (!err && rkm->offset + 1 >= high[rkm->partition]) {
                high[rkm->partition] = -1;
                left--;
            }
        }
        rd_kafka_message_destroy(rkm);
        if (err)
            break;
    }
    kerr = rd_kafka_assign(rk, NULL);
    if (kerr && !err) {
        ns_err_set(errstr, errstr_size, "could not unassign %s: %s", topic,
                   rd_kafka_err2str(kerr));
        err = NS_ERR_KAFKA;
    }
cleanup:
    if (assign)
        rd_kafka_topic_partition_list_destroy(assign);
    free(high);
    return err;
}

/* ---- list -------------------------------------------------------------- */

static enum ns_err list_collect(const rd_kafka_message_t *rkm, void *opaque,
                                char *errstr, size_t errstr_size)
{
    struct groups *gs = opaque;
    struct letter *lt = letter_new(rkm, 0);
    struct group *g = NULL;

    if (!lt) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    for (size_t i = 0; i < gs->n && !g; i++)
        if (strcmp(gs->v[i].error_class, lt->error_class) == 0 &&
            strcmp(gs->v[i].source_topic, lt->source_topic) == 0 &&
            strcmp(gs->v[i].pattern, lt->pattern) == 0)
            g = &gs->v[i];
    if (!g) {
        if (gs->n == gs->cap) {
            size_t cap = gs->cap ? 2 * gs->cap : 16;
            struct group *v = realloc(gs->v, cap * sizeof(*v));

            if (!v) {
                letter_free(lt);
                ns_err_set(errstr, errstr_size, "out of memory");
                return NS_ERR_NOMEM;
            }
            gs->v = v;
            gs->cap = cap;
        }
        g = &gs->v[gs->n++];
        memset(g, 0, sizeof(*g));
        snprintf(g->error_class, sizeof(g->error_class), "%s",
                 lt->error_class);
        snprintf(g->source_topic, sizeof(g->source_topic), "%s",
                 lt->source_topic);
        snprintf(g->pattern, sizeof(g->pattern), "%s", lt->pattern);
        snprintf(g->example, sizeof(g->example), "%s", lt->reason);
    }
    if (!g->count || lt->timestamp_ms < g->first_ts) {
        g->first_ts = lt->timestamp_ms;
        g->first_partition = lt->partition;
        g->first_offset = lt->offset;
        snprintf(g->first_time, sizeof(g->first_time), "%s", lt->time);
    }
    if (!g->count || lt->timestamp_ms >= g->last_ts) {
        g->last_ts = lt->timestamp_ms;
        g->last_partition = lt->partition;
        g->last_offset = lt->offset;
        snprintf(g->last_time, sizeof(g->last_time), "%s", lt->time);
    }
    g->count++;
    letter_free(lt);
    return NS_OK;
}

static int group_cmp(const void *a, const void *b)
{
    const struct group *ga = a, *gb = b;

    if (ga->count != gb->count)
        return ga->count > gb->count ? -1 : 1;
    return ga->first_ts < gb->first_ts ? -1 : ga->first_ts > gb->first_ts;
}

static cJSON *json_pos(int32_t partition, int64_t offset, const char *time)
{
    cJSON *o = cJSON_CreateObject();

    if (!o)
        return NULL;
    if (!cJSON_AddNumberToObject(o, "partition", partition) ||
        !cJSON_AddNumberToObject(o, "offset", (double)offset) ||
        !cJSON_AddStringToObject(o, "time", time)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* A JSON string of len bytes (not NUL-terminated), or null when p is
 * NULL; NULL only when out of memory. */
static cJSON *json_bytes(const void *p, size_t len)
{
    char *s;
    cJSON *v;

    if (!p)
        return cJSON_CreateNull();
    s = malloc(len + 1);
    if (!s)
        return NULL;
    memcpy(s, p, len);
    s[len] = '\0';
    v = cJSON_CreateString(s);
    free(s);
    return v;
}

/* Print doc as one line on stdout, then free it. */
static enum ns_err print_json_line(cJSON *doc, char *errstr,
                                   size_t errstr_size)
{
    char *text = cJSON_PrintUnformatted(doc);

    cJSON_Delete(doc);
    if (!text) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    printf("%s\n", text);
    free(text);
    return NS_OK;
}

static enum ns_err list_print_json(const char *topic, const struct groups *gs,
                                   uint64_t total, char *errstr,
                                   size_t errstr_size)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *arr = NULL;

    if (!doc || !cJSON_AddStringToObject(doc, "topic", topic) ||
        !cJSON_AddNumberToObject(doc, "total", (double)total))
        goto cleanup;
    arr = cJSON_AddArrayToObject(doc, "groups");
    if (!arr)
        goto cleanup;
    for (size_t i = 0; i < gs->n; i++) {
        const struct group *g = &gs->v[i];
        cJSON *o = cJSON_CreateObject();
        cJSON *first, *last;

        if (!o)
            goto cleanup;
        cJSON_AddItemToArray(arr, o);
        first = json_pos(g->first_partition, g->first_offset, g->first_time);
        last = json_pos(g->last_partition, g->last_offset, g->last_time);
        if (first)
            cJSON_AddItemToObject(o, "first", first);
        if (last)
            cJSON_AddItemToObject(o, "last", last);
        if (!first || !last ||
            !cJSON_AddStringToObject(o, "error_class", g->error_class) ||
            !cJSON_AddStringToObject(o, "source_topic", g->source_topic) ||
            !cJSON_AddStringToObject(o, "reason", g->pattern) ||
            !cJSON_AddStringToObject(o, "example_reason", g->example) ||
            !cJSON_AddNumberToObject(o, "count", (double)g->count))
            goto cleanup;
    }
    return print_json_line(doc, errstr, errstr_size);
cleanup:
    cJSON_Delete(doc);
    ns_err_set(errstr, errstr_size, "out of memory");
    return NS_ERR_NOMEM;
}

static void list_print_text(const char *topic, const struct groups *gs,
                            uint64_t total)
{
    printf("%s: %" PRIu64 " dead letter%s in %zu group%s\n", topic, total,
           total == 1 ? "" : "s", gs->n, gs->n == 1 ? "" : "s");
    for (size_t i = 0; i < gs->n; i++) {
        const struct group *g = &gs->v[i];

        printf("\n%" PRIu64 " x %s from %s\n", g->count,
               g->error_class[0] ? g->error_class : "(no class)",
               g->source_topic[0] ? g->source_topic : "(no source topic)");
        printf("  reason:  %s\n", g->pattern);
        if (strcmp(g->pattern, g->example) != 0)
            printf("  e.g.:    %s\n", g->example);
        printf("  first:   %d:%" PRId64 " at %s\n", (int)g->first_partition,
               g->first_offset, g->first_time);
        printf("  last:    %d:%" PRId64 " at %s\n", (int)g->last_partition,
               g->last_offset, g->last_time);
    }
}

/* ---- show and redrive: collect the chosen letters ---------------------- */

struct select_ctx {
    const struct options *opts;
    struct letters *chosen;
    uint64_t scanned;
};

static enum ns_err select_collect(const rd_kafka_message_t *rkm, void *opaque,
                                  char *errstr, size_t errstr_size)
{
    struct select_ctx *ctx = opaque;
    struct letter *lt = letter_new(rkm, 0);
    int match;

    ctx->scanned++;
    if (!lt) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    match = letter_matches(ctx->opts, lt);
    letter_free(lt);
    if (!match)
        return NS_OK;
    lt = letter_new(rkm, 1);
    if (!lt || letters_add(ctx->chosen, lt)) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    return NS_OK;
}

/* Every --offset must name a dead letter that exists. */
static int offsets_all_found(const struct options *opts,
                             const struct letters *chosen, const char *topic)
{
    int ok = 1;

    for (size_t i = 0; i < opts->offset_count; i++) {
        int found = 0;

        for (size_t j = 0; j < chosen->n && !found; j++)
            found = offset_index(opts, chosen->v[j]->partition,
                                 chosen->v[j]->offset) == (long)i;
        if (!found) {
            fprintf(stderr, "nexus-dlq: %s has no dead letter at %d:%" PRId64
                    " that matches the other filters\n", topic,
                    (int)(opts->offsets[i].partition < 0
                              ? 0 : opts->offsets[i].partition),
                    opts->offsets[i].offset);
            ok = 0;
        }
    }
    return ok;
}

static enum ns_err show_print_json(const struct letters *chosen, size_t n,
                                   char *errstr, size_t errstr_size)
{
    cJSON *arr = cJSON_CreateArray();

    if (!arr)
        goto nomem;
    for (size_t i = 0; i < n; i++) {
        const struct letter *lt = chosen->v[i];
        cJSON *o = cJSON_CreateObject(), *h, *v;
        const char *name;
        const void *val;
        size_t size;

        if (!o)
            goto nomem;
        cJSON_AddItemToArray(arr, o);
        if (!cJSON_AddNumberToObject(o, "partition", lt->partition) ||
            !cJSON_AddNumberToObject(o, "offset", (double)lt->offset) ||
            !cJSON_AddStringToObject(o, "time", lt->time))
            goto nomem;
        h = cJSON_AddArrayToObject(o, "headers");
        if (!h)
            goto nomem;
        for (size_t k = 0; lt->hdrs &&
             rd_kafka_header_get_all(lt->hdrs, k, &name, &val, &size) ==
                 RD_KAFKA_RESP_ERR_NO_ERROR; k++) {
            cJSON *pair = cJSON_CreateArray();

            if (!pair)
                goto nomem;
            cJSON_AddItemToArray(h, pair);
            v = json_bytes(val, size);
            if (!v)
                goto nomem;
            cJSON_AddItemToArray(pair, cJSON_CreateString(name));
            cJSON_AddItemToArray(pair, v);
        }
        v = json_bytes(lt->key, lt->key_len);
        if (!v)
            goto nomem;
        cJSON_AddItemToObject(o, "key", v);
        v = json_bytes(lt->value, lt->value_len);
        if (!v)
            goto nomem;
        cJSON_AddItemToObject(o, "value", v);
    }
    return print_json_line(arr, errstr, errstr_size);
nomem:
    cJSON_Delete(arr);
    ns_err_set(errstr, errstr_size, "out of memory");
    return NS_ERR_NOMEM;
}

static void show_print_text(const char *topic, const struct letters *chosen,
                            size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct letter *lt = chosen->v[i];
        const char *name;
        const void *val;
        size_t size;

        printf("%s--- %s %d:%" PRId64 " at %s\n", i ? "\n" : "", topic,
               (int)lt->partition, lt->offset, lt->time);
        for (size_t k = 0; lt->hdrs &&
             rd_kafka_header_get_all(lt->hdrs, k, &name, &val, &size) ==
                 RD_KAFKA_RESP_ERR_NO_ERROR; k++) {
            printf("header %s: ", name);
            if (val)
                print_bytes(stdout, val, size);
            else
                fputs("(null)", stdout);
            fputc('\n', stdout);
        }
        fputs("key: ", stdout);
        if (lt->key)
            print_bytes(stdout, lt->key, lt->key_len);
        else
            fputs("(null)", stdout);
        fputs("\nvalue: ", stdout);
        if (lt->value)
            print_bytes(stdout, lt->value, lt->value_len);
        else
            fputs("(null: tombstone)", stdout);
        fputc('\n', stdout);
    }
}

/* ---- redrive ----------------------------------------------------------- */

/* A lane topic the chosen letters go back to. */
struct target {
    char topic[256];
    int partitions;
    int64_t since_ms;        /* time of the oldest chosen letter; -1 when
                                one has no timestamp: read it all */
};

struct marker_ctx {
    const char *dlq_topic;
    const char *target_topic;
    struct letters *chosen;
};

/* A re-driven event in a lane names its dead letter in its newest
 * nexus.redrive.dlq.* headers: mark that letter as done. */
static enum ns_err marker_collect(const rd_kafka_message_t *rkm,
                                  void *opaque, char *errstr,
                                  size_t errstr_size)
{
    struct marker_ctx *ctx = opaque;
    rd_kafka_headers_t *hdrs = NULL;
    char topic[256], partition[24], offset[24], when[64];
    int64_t p, o;

    (void)errstr;
    (void)errstr_size;
    if (rd_kafka_message_headers(rkm, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return NS_OK;
    dlq_header_str(hdrs, "nexus.redrive.dlq.topic", topic, sizeof(topic));
    if (strcmp(topic, ctx->dlq_topic) != 0)
        return NS_OK;
    dlq_header_str(hdrs, "nexus.redrive.dlq.partition", partition,
                   sizeof(partition));
    dlq_header_str(hdrs, "nexus.redrive.dlq.offset", offset, sizeof(offset));
    dlq_header_str(hdrs, "nexus.redrive.time", when, sizeof(when));
    p = parse_int(partition);
    o = parse_int(offset);
    for (size_t i = 0; i < ctx->chosen->n; i++) {
        struct letter *lt = ctx->chosen->v[i];

        if (lt->partition == p && lt->offset == o && !lt->skip) {
            lt->skip = 1;
            snprintf(lt->skip_why, sizeof(lt->skip_why),
                     "already re-driven to %s [%d] at offset %" PRId64
                     " (%s)", ctx->target_topic, (int)rkm->partition,
                     rkm->offset, when);
        }
    }
    return NS_OK;
}

/* Non-zero when topic is one of the mapping's lane topics. */
static int is_lane_topic(const struct mapping *map, const char *topic)
{
    char lane_topic[256];

    for (size_t i = 0; i < map->table_count; i++)
        for (int l = 0; l < LANE__COUNT; l++) {
            const char *worker = map->tables[i].worker;

            if (map->tables[i].kind == MAPPING_NONE ||
                !mapping_worker_has_lane(map, worker, (enum mapping_lane)l))
                continue;
            if (mapping_topic(map, (enum mapping_lane)l, worker, lane_topic,
                              sizeof(lane_topic)) == NS_OK &&
                strcmp(lane_topic, topic) == 0)
                return 1;
        }
    return 0;
}

/*
 * Put back the key and value of a letter cut to fit the DLQ, from the
 * source record it names, if that record is still there and is the one the
 * letter was cut from: its sizes are those of nexus.truncated and the
 * letter's key and value are its prefixes. On success lt holds the
 * original key and value and no nexus.truncated header. NS_ERR_LIMIT with
 * the reason in errstr when it cannot be restored; NS_ERR_KAFKA or
 * NS_ERR_NOMEM when the read failed.
 */
static enum ns_err letter_restore(rd_kafka_t *rk, struct letter *lt,
                                  long timeout_ms, char *errstr,
                                  size_t errstr_size)
{
    rd_kafka_topic_partition_list_t *assign = NULL;
    rd_kafka_message_t *rkm = NULL;
    unsigned long long key_size = 0, value_size = 0;
    int64_t deadline = now_ms() + timeout_ms;
    const char *gone = NULL;
    char *key = NULL, *value = NULL;
    rd_kafka_resp_err_t kerr;
    enum ns_err err = NS_OK;

    if (sscanf(lt->truncated, "key=%llu value=%llu", &key_size,
               &value_size) != 2 || lt->source_partition < 0 ||
        lt->source_offset < 0) {
        ns_err_set(errstr, errstr_size, "its nexus.truncated \"%s\" or its "
                   "source position cannot be read", lt->truncated);
        return NS_ERR_LIMIT;
    }
    assign = rd_kafka_topic_partition_list_new(1);
    if (!assign) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    rd_kafka_topic_partition_list_add(assign, lt->source_topic,
                                      lt->source_partition)->offset =
        lt->source_offset;
    kerr = rd_kafka_assign(rk, assign);
    if (kerr) {
        ns_err_set(errstr, errstr_size, "could not assign %s [%d]: %s",
                   lt->source_topic, (int)lt->source_partition,
                   rd_kafka_err2str(kerr));
        err = NS_ERR_KAFKA;
        goto cleanup;
    }
    while (!rkm && !gone) {
        int64_t remaining = deadline - now_ms();

        if (remaining <= 0) {
            ns_err_set(errstr, errstr_size, "timed out after %ld ms reading "
                       "%s [%d]", timeout_ms, lt->source_topic,
                       (int)lt->source_partition);
            err = NS_ERR_KAFKA;
            goto cleanup;
        }
        rkm = rd_kafka_consumer_poll(rk, remaining < 500 ? (int)remaining
                                                         : 500);
        if (!rkm)
            continue;
        /* an offset below the log start resets to the end: EOF */
        if (rkm->err == RD_KAFKA_RESP_ERR__PARTITION_EOF ||
            (!rkm->err && rkm->offset != lt->source_offset))
            gone = "the partition no longer holds that offset (retention)";
        else if (!rkm->err && (rkm->key_len != key_size ||
                               rkm->len != value_size ||
                               lt->key_len > rkm->key_len ||
                               lt->value_len > rkm->len ||
                               (lt->key_len && memcmp(lt->key, rkm->key,
                                                      lt->key_len)) ||
                               (lt->value_len && memcmp(lt->value,
                                                        rkm->payload,
                                                        lt->value_len))))
            gone = "the record there is not the one the letter was cut from";
        else if (!rkm->err)
            break;
        else
            log_msg(LOG_WARN, "reading %s: %s", lt->source_topic,
                    rd_kafka_message_errstr(rkm));
        rd_kafka_message_destroy(rkm);
        rkm = NULL;
    }
    if (gone) {
        ns_err_set(errstr, errstr_size, "%s [%d] at offset %" PRId64 ": %s",
                   lt->source_topic, (int)lt->source_partition,
                   lt->source_offset, gone);
        err = NS_ERR_LIMIT;
        goto cleanup;
    }
    key = malloc(rkm->key_len + 1);
    value = malloc(rkm->len + 1);
    if (!key || !value) {
        ns_err_set(errstr, errstr_size, "out of memory");
        err = NS_ERR_NOMEM;
        goto cleanup;
    }
    if (rkm->key_len)
        memcpy(key, rkm->key, rkm->key_len);
    if (rkm->len)
        memcpy(value, rkm->payload, rkm->len);
    free(lt->key);
    free(lt->value);
    lt->key = key;
    lt->key_len = rkm->key_len;
    lt->value = value;
    lt->value_len = rkm->len;
    key = value = NULL;
    if (lt->hdrs)
        rd_kafka_header_remove(lt->hdrs, "nexus.truncated");

cleanup:
    free(key);
    free(value);
    if (rkm)
        rd_kafka_message_destroy(rkm);
    if (rd_kafka_assign(rk, NULL) && !err) {
        ns_err_set(errstr, errstr_size, "could not unassign %s",
                   lt->source_topic);
        err = NS_ERR_KAFKA;
    }
    rd_kafka_topic_partition_list_destroy(assign);
    return err;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm,
                        void *opaque)
{
    struct letter *lt = rkm->_private;

    (void)rk;
    (void)opaque;
    if (!lt)
        return;
    lt->delivered = 1;
    lt->dr_err = rkm->err;
    lt->dr_partition = rkm->partition;
    lt->dr_offset = rkm->offset;
}

/* The letter's headers plus the nexus.redrive.* ones; NULL when out of
 * memory. The caller owns the result. */
static rd_kafka_headers_t *redrive_headers(const struct letter *lt,
                                           const char *dlq_topic,
                                           const char *when)
{
    rd_kafka_headers_t *hdrs = lt->hdrs ? rd_kafka_headers_copy(lt->hdrs)
                                        : rd_kafka_headers_new(5);
    char count[24], partition[24], offset[24];
    int64_t before;
    rd_kafka_resp_err_t kerr;

    if (!hdrs)
        return NULL;
    dlq_header_str(lt->hdrs, "nexus.redrive.count", count, sizeof(count));
    before = parse_int(count);
    snprintf(count, sizeof(count), "%" PRId64, before < 0 ? 1 : before + 1);
    snprintf(partition, sizeof(partition), "%d", (int)lt->partition);
    snprintf(offset, sizeof(offset), "%" PRId64, lt->offset);
    kerr = rd_kafka_header_add(hdrs, "nexus.redrive.count", -1, count, -1);
    if (!kerr)
        kerr = rd_kafka_header_add(hdrs, "nexus.redrive.time", -1, when, -1);
    if (!kerr)
        kerr = rd_kafka_header_add(hdrs, "nexus.redrive.dlq.topic", -1,
                                   dlq_topic, -1);
    if (!kerr)
        kerr = rd_kafka_header_add(hdrs, "nexus.redrive.dlq.partition", -1,
                                   partition, -1);
    if (!kerr)
        kerr = rd_kafka_header_add(hdrs, "nexus.redrive.dlq.offset", -1,
                                   offset, -1);
    if (kerr) {
        rd_kafka_headers_destroy(hdrs);
        return NULL;
    }
    return hdrs;
}

/*
 * Produce every chosen letter not skipped, with an idempotent producer
 * (acks=all), then flush and check each delivery report. Returns NS_OK only
 * when every one was acknowledged.
 */
static enum ns_err redrive_produce(const struct config *cfg,
                                   const char *dlq_topic,
                                   struct letters *chosen, long timeout_ms,
                                   char *errstr, size_t errstr_size)
{
    static const char *const extra[] = {
        "enable.idempotence", "true",
        "acks", "all",
        /* the Java client's partitioner, should a letter lack its
         * source partition */
        "partitioner", "murmur2_random",
        NULL};
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_headers_t *hdrs = NULL;
    char kerr_text[512];
    char when[64];
    rd_kafka_resp_err_t kerr;
    enum ns_err err;
    size_t failed = 0;

    err = kafka_conf_new(NULL, (const char *const *)cfg->kafka_props,
                         extra, 1, &conf, errstr, errstr_size);
    if (err)
        goto cleanup;
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr_text, sizeof(kerr_text));
    if (!rk) {
        ns_err_set(errstr, errstr_size, "could not create a producer: %s",
                   kerr_text);
        err = NS_ERR_KAFKA;
        goto cleanup;
    }
    conf = NULL;  /* rk has it */
    iso_time(now_ms(), when, sizeof(when));
    for (size_t i = 0; i < chosen->n; i++) {
        struct letter *lt = chosen->v[i];

        if (lt->skip)
            continue;
        hdrs = redrive_headers(lt, dlq_topic, when);
        if (!hdrs) {
            ns_err_set(errstr, errstr_size, "out of memory");
            err = NS_ERR_NOMEM;
            goto cleanup;
        }
        kerr = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(lt->source_topic),
            RD_KAFKA_V_PARTITION(lt->source_partition >= 0
                                     ? lt->source_partition
                                     : RD_KAFKA_PARTITION_UA),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(lt->key, lt->key_len),
            RD_KAFKA_V_VALUE(lt->value, lt->value_len),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(lt),
            RD_KAFKA_V_END);
        if (kerr) {
            ns_err_set(errstr, errstr_size,
                       "could not queue %d:%" PRId64 " for %s: %s",
                       (int)lt->partition, lt->offset, lt->source_topic,
                       rd_kafka_err2str(kerr));
            err = NS_ERR_KAFKA;
            goto cleanup;
        }
        hdrs = NULL;  /* librdkafka owns them now */
        rd_kafka_poll(rk, 0);
    }
    kerr = rd_kafka_flush(rk, (int)timeout_ms);
    if (kerr) {
        ns_err_set(errstr, errstr_size,
                   "could not flush the re-driven events: %s (%d not "
                   "acknowledged)", rd_kafka_err2str(kerr),
                   rd_kafka_outq_len(rk));
        err = NS_ERR_KAFKA;
    }
    for (size_t i = 0; i < chosen->n; i++) {
        const struct letter *lt = chosen->v[i];

        if (lt->skip)
            continue;
        if (!lt->delivered || lt->dr_err) {
            failed++;
            fprintf(stderr, "nexus-dlq: could not re-drive %d:%" PRId64
                    " to %s: %s\n", (int)lt->partition, lt->offset,
                    lt->source_topic,
                    lt->delivered ? rd_kafka_err2str(lt->dr_err)
                                  : "no acknowledgement");
        }
    }
    if (failed && !err) {
        ns_err_set(errstr, errstr_size, "%zu re-driven events were not "
                   "acknowledged", failed);
        err = NS_ERR_KAFKA;
    }
cleanup:
    if (hdrs)
        rd_kafka_headers_destroy(hdrs);
    if (rk) {
        /* anything still queued after a failure is given up */
        if (rd_kafka_outq_len(rk) > 0 &&
            rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE |
                               RD_KAFKA_PURGE_F_INFLIGHT) ==
                RD_KAFKA_RESP_ERR_NO_ERROR)
            rd_kafka_poll(rk, 0);
        rd_kafka_destroy(rk);
    }
    if (conf)
        rd_kafka_conf_destroy(conf);
    return err;
}

/*
 * Check the chosen letters (every target a lane topic of the mapping, its
 * partition there), find those re-driven before, then print the plan and,
 * with --execute, produce. Returns the exit status.
 */
static int redrive_run(const struct options *opts, const struct config *cfg,
                       const struct mapping *map, rd_kafka_t *rk,
                       struct letters *chosen)
{
    struct target *targets = calloc(chosen->n, sizeof(*targets));
    size_t target_count = 0, refused = 0, todo = 0, skipped = 0;
    char errstr[1024];
    enum ns_err err;
    int rc = 1;

    if (!targets) {
        log_msg(LOG_ERROR, "out of memory");
        return 1;
    }
    for (size_t i = 0; i < chosen->n; i++) {
        const struct letter *lt = chosen->v[i];
        struct target *t = NULL;

        if (!lt->source_topic[0]) {
            fprintf(stderr, "nexus-dlq: refused: %d:%" PRId64 " has no "
                    "nexus.source.topic header\n", (int)lt->partition,
                    lt->offset);
            refused++;
            continue;
        }
        if (!is_lane_topic(map, lt->source_topic)) {
            fprintf(stderr, "nexus-dlq: refused: %d:%" PRId64 " names "
                    "source topic %s, which is not a lane topic of %s\n",
                    (int)lt->partition, lt->offset, lt->source_topic,
                    cfg->mapping_path);
            refused++;
            continue;
        }
        for (size_t k = 0; k < target_count && !t; k++)
            if (strcmp(targets[k].topic, lt->source_topic) == 0)
                t = &targets[k];
        if (!t) {
            t = &targets[target_count++];
            snprintf(t->topic, sizeof(t->topic), "%s", lt->source_topic);
            t->since_ms = INT64_MAX;
            err = topic_partitions(rk, t->topic, &t->partitions, errstr,
                                   sizeof(errstr));
            if (err) {
                log_msg(LOG_ERROR, "%s", errstr);
                goto cleanup;
            }
        }
        if (lt->timestamp_ms < 0)
            t->since_ms = -1;
        else if (t->since_ms >= 0 && lt->timestamp_ms < t->since_ms)
            t->since_ms = lt->timestamp_ms;
        if (lt->source_partition >= t->partitions) {
            fprintf(stderr, "nexus-dlq: refused: %d:%" PRId64 " came from "
                    "partition %d of %s, which has %d partitions\n",
                    (int)lt->partition, lt->offset,
                    (int)lt->source_partition, t->topic, t->partitions);
            refused++;
        }
    }
    /* letters cut to fit the DLQ go back whole, or not at all */
    for (size_t i = 0; !refused && i < chosen->n; i++) {
        struct letter *lt = chosen->v[i];

        if (!lt->truncated[0])
            continue;
        err = letter_restore(rk, lt, opts->timeout_ms, errstr,
                             sizeof(errstr));
        if (err == NS_ERR_LIMIT) {
            fprintf(stderr, "nexus-dlq: refused: %d:%" PRId64 " was cut to "
                    "fit the DLQ (nexus.truncated %s) and cannot be restored "
                    "from its source: %s\n", (int)lt->partition, lt->offset,
                    lt->truncated, errstr);
            refused++;
        } else if (err) {
            log_msg(LOG_ERROR, "could not read the original of %d:%" PRId64
                    ": %s", (int)lt->partition, lt->offset, errstr);
            goto cleanup;
        } else {
            printf("restored %s %d:%" PRId64 " from %s [%d] at offset %"
                   PRId64 " (%zu bytes of value)\n", map->dlq_topic,
                   (int)lt->partition, lt->offset, lt->source_topic,
                   (int)lt->source_partition, lt->source_offset,
                   lt->value_len);
        }
    }
    if (refused) {
        fprintf(stderr, "nexus-dlq: nothing re-driven: %zu of the %zu chosen "
                "dead letters cannot go back to a lane topic\n", refused,
                chosen->n);
        goto cleanup;
    }
    if (!opts->again)
        for (size_t k = 0; k < target_count; k++) {
            struct marker_ctx ctx = {map->dlq_topic, targets[k].topic,
                                     chosen};
            int64_t since = -1;   /* from the low watermark */

            if (targets[k].since_ms > REDRIVE_SCAN_MARGIN_MS)
                since = targets[k].since_ms - REDRIVE_SCAN_MARGIN_MS;
            err = topic_scan(rk, targets[k].topic, targets[k].partitions,
                             since, opts->timeout_ms,
                             marker_collect, &ctx, errstr, sizeof(errstr));
            if (err) {
                log_msg(LOG_ERROR, "could not check for earlier re-drives: "
                        "%s", errstr);
                goto cleanup;
            }
        }
    for (size_t i = 0; i < chosen->n; i++) {
        const struct letter *lt = chosen->v[i];

        if (lt->skip) {
            skipped++;
            printf("skip %s %d:%" PRId64 ": %s\n", map->dlq_topic,
                   (int)lt->partition, lt->offset, lt->skip_why);
            continue;
        }
        todo++;
        if (!opts->execute) {
            printf("would re-drive %s %d:%" PRId64 " -> %s [%d] (%s: %s)\n",
                   map->dlq_topic, (int)lt->partition, lt->offset,
                   lt->source_topic, (int)lt->source_partition,
                   lt->error_class, lt->reason);
        }
    }
    if (!opts->execute) {
        printf("dry run: %zu dead letter%s would be re-driven, %zu skipped; "
               "nothing written (use --execute)\n", todo,
               todo == 1 ? "" : "s", skipped);
        rc = 0;
        goto cleanup;
    }
    if (todo) {
        err = redrive_produce(cfg, map->dlq_topic, chosen, opts->timeout_ms,
                              errstr, sizeof(errstr));
        for (size_t i = 0; i < chosen->n; i++) {
            const struct letter *lt = chosen->v[i];

            if (!lt->skip && lt->delivered && !lt->dr_err)
                printf("re-drove %s %d:%" PRId64 " -> %s [%d] at offset "
                       "%" PRId64 "\n", map->dlq_topic, (int)lt->partition,
                       lt->offset, lt->source_topic, (int)lt->dr_partition,
                       lt->dr_offset);
        }
        if (err) {
            log_msg(LOG_ERROR, "%s", errstr);
            goto cleanup;
        }
    }
    printf("re-drove %zu dead letter%s, %zu skipped\n", todo,
           todo == 1 ? "" : "s", skipped);
    rc = 0;
cleanup:
    free(targets);
    return rc;
}

/* ---- main -------------------------------------------------------------- */

/* Parse argv into opts; returns 0 to go on, -1 when --help or --version
 * was answered, or 2 after printing a usage error. */
static int options_parse(int argc, char **argv, struct options *opts)
{
    const char *cmd = NULL;

    memset(opts, 0, sizeof(*opts));
    opts->limit = -1;
    opts->timeout_ms = 60000;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return -1;
        } else if (strcmp(a, "--version") == 0) {
            printf("nexus-dlq %s (librdkafka %s)\n", NEXUS_VERSION,
                   rd_kafka_version_str());
            return -1;
        } else if (strcmp(a, "--json") == 0) {
            opts->json = 1;
        } else if (strcmp(a, "--execute") == 0) {
            opts->execute = 1;
        } else if (strcmp(a, "--dry-run") == 0) {
            opts->dry_run = 1;
        } else if (strcmp(a, "--again") == 0) {
            opts->again = 1;
        } else if (!v && a[0] == '-') {
            fprintf(stderr, "nexus-dlq: %s needs a value or is unknown\n", a);
            return 2;
        } else if (strcmp(a, "--config") == 0) {
            opts->config_path = argv[++i];
        } else if (strcmp(a, "--mapping") == 0) {
            opts->mapping_path = argv[++i];
        } else if (strcmp(a, "--reason") == 0) {
            opts->reason = argv[++i];
        } else if (strcmp(a, "--class") == 0) {
            opts->error_class = argv[++i];
        } else if (strcmp(a, "--source-topic") == 0) {
            opts->source_topic = argv[++i];
        } else if (strcmp(a, "--offset") == 0) {
            if (offsets_parse(opts, argv[++i])) {
                fprintf(stderr, "nexus-dlq: --offset '%s': expected "
                        "OFFSET or PARTITION:OFFSET, comma separated\n",
                        argv[i]);
                return 2;
            }
        } else if (strcmp(a, "--limit") == 0 || strcmp(a, "--timeout-ms") == 0) {
            int64_t n = parse_int(argv[++i]);

            if (n <= 0 || n > 100000000) {
                fprintf(stderr, "nexus-dlq: %s '%s' is not a positive "
                        "integer\n", a, argv[i]);
                return 2;
            }
            if (strcmp(a, "--limit") == 0)
                opts->limit = (long)n;
            else
                opts->timeout_ms = (long)n;
        } else if (!cmd && a[0] != '-') {
            cmd = a;
        } else {
            fprintf(stderr, "nexus-dlq: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (!cmd) {
        usage(stderr);
        return 2;
    }
    if (strcmp(cmd, "list") == 0) {
        opts->cmd = CMD_LIST;
        if (has_filter(opts) || opts->execute || opts->dry_run ||
            opts->again || opts->limit > 0) {
            fprintf(stderr, "nexus-dlq: list takes only --json\n");
            return 2;
        }
    } else if (strcmp(cmd, "show") == 0) {
        opts->cmd = CMD_SHOW;
        if (opts->execute || opts->dry_run || opts->again) {
            fprintf(stderr, "nexus-dlq: show does not write: --execute, "
                    "--dry-run and --again belong to redrive\n");
            return 2;
        }
    } else if (strcmp(cmd, "redrive") == 0) {
        opts->cmd = CMD_REDRIVE;
        if (!has_filter(opts)) {
            fprintf(stderr, "nexus-dlq: redrive needs --reason, --class, "
                    "--source-topic or --offset\n");
            return 2;
        }
        if (opts->execute && opts->dry_run) {
            fprintf(stderr, "nexus-dlq: --dry-run and --execute exclude "
                    "each other\n");
            return 2;
        }
        if (opts->json || opts->limit > 0) {
            fprintf(stderr, "nexus-dlq: redrive takes no --json or "
                    "--limit\n");
            return 2;
        }
    } else {
        fprintf(stderr, "nexus-dlq: unknown command '%s'\n", cmd);
        usage(stderr);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct options opts;
    struct config cfg;
    struct mapping *map = NULL;
    rd_kafka_t *rk = NULL;
    struct groups gs = {0};
    struct letters chosen = {0};
    char errstr[1024];
    int have_cfg = 0, partitions = 0, rc;
    enum ns_err err;

    rc = options_parse(argc, argv, &opts);
    if (rc)
        return rc < 0 ? 0 : rc;
    rc = 2;
    if (config_load(&cfg, opts.config_path, "dlq", errstr, sizeof(errstr))) {
        fprintf(stderr, "nexus-dlq: %s\n", errstr);
        goto cleanup;
    }
    have_cfg = 1;
    if (opts.mapping_path)
        snprintf(cfg.mapping_path, sizeof(cfg.mapping_path), "%s",
                 opts.mapping_path);
    log_setup((enum log_level)cfg.log_level, cfg.log_json, DLQ_TOOL_NAME);
    if (mapping_load(cfg.mapping_path, &map, errstr, sizeof(errstr))) {
        fprintf(stderr, "nexus-dlq: %s\n", errstr);
        goto cleanup;
    }
    if (reader_new(&cfg, &rk, errstr, sizeof(errstr))) {
        fprintf(stderr, "nexus-dlq: %s\n", errstr);
        goto cleanup;
    }
    rc = 1;
    err = topic_partitions(rk, map->dlq_topic, &partitions, errstr,
                           sizeof(errstr));
    if (err) {
        log_msg(LOG_ERROR, "%s", errstr);
        goto cleanup;
    }
    for (size_t i = 0; i < opts.offset_count; i++)
        if (opts.offsets[i].partition < 0 && partitions > 1) {
            fprintf(stderr, "nexus-dlq: %s has %d partitions: give offsets "
                    "as PARTITION:OFFSET\n", map->dlq_topic, partitions);
            rc = 2;
            goto cleanup;
        }

    if (opts.cmd == CMD_LIST) {
        uint64_t total = 0;

        err = topic_scan(rk, map->dlq_topic, partitions, -1, opts.timeout_ms,
                         list_collect, &gs, errstr, sizeof(errstr));
        if (err) {
            log_msg(LOG_ERROR, "%s", errstr);
            goto cleanup;
        }
        qsort(gs.v, gs.n, sizeof(*gs.v), group_cmp);
        for (size_t i = 0; i < gs.n; i++)
            total += gs.v[i].count;
        if (opts.json)
            err = list_print_json(map->dlq_topic, &gs, total, errstr,
                                  sizeof(errstr));
        else
            list_print_text(map->dlq_topic, &gs, total);
        if (err) {
            log_msg(LOG_ERROR, "%s", errstr);
            goto cleanup;
        }
        rc = 0;
        goto cleanup;
    }

    {
        struct select_ctx ctx = {&opts, &chosen, 0};
        char filters[1024];

        err = topic_scan(rk, map->dlq_topic, partitions, -1, opts.timeout_ms,
                         select_collect, &ctx, errstr, sizeof(errstr));
        if (err) {
            log_msg(LOG_ERROR, "%s", errstr);
            goto cleanup;
        }
        if (!offsets_all_found(&opts, &chosen, map->dlq_topic))
            goto cleanup;
        if (!chosen.n) {
            filter_describe(&opts, filters, sizeof(filters));
            if (filters[0])
                fprintf(stderr, "nexus-dlq: no dead letter in %s (%" PRIu64
                        " read) matches%s; `nexus-dlq list` shows the "
                        "reasons\n", map->dlq_topic, ctx.scanned, filters);
            else
                printf("%s holds no dead letter\n", map->dlq_topic);
            /* an empty DLQ is no error; a filter that found nothing is */
            rc = filters[0] ? 1 : 0;
            goto cleanup;
        }
    }
    if (opts.cmd == CMD_SHOW) {
        size_t n = opts.limit > 0 && (size_t)opts.limit < chosen.n
                       ? (size_t)opts.limit : chosen.n;

        if (opts.json)
            err = show_print_json(&chosen, n, errstr, sizeof(errstr));
        else
            show_print_text(map->dlq_topic, &chosen, n);
        if (err) {
            log_msg(LOG_ERROR, "%s", errstr);
            goto cleanup;
        }
        rc = 0;
    } else {
        rc = redrive_run(&opts, &cfg, map, rk, &chosen);
    }

cleanup:
    letters_free(&chosen);
    free(gs.v);
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    mapping_free(map);
    if (have_cfg)
        config_free(&cfg);
    return rc;
}
