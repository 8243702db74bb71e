/*
 * nexus-replay - move a worker group's committed Kafka offsets, to replay
 * its lane topics into Neo4j (resync) or to put saved offsets back.
 *
 *   nexus-replay --worker tag --to-earliest            # dry run: old -> new
 *   nexus-replay --worker tag --to-earliest --execute  # apply
 *   nexus-replay --worker tag --to-time 2026-11-23T22:00:00Z --execute
 *   nexus-replay --worker tag --save saved.json        # current offsets
 *   nexus-replay --worker tag --from-file saved.json --execute
 *
 * The topics are the worker's lane topics from the mapping, or the ones
 * named with --topic. The group is the worker's (config group_id, by
 * default nexus-<worker>), or --group. Offsets are only ever committed
 * while the group has no member: a running worker would overwrite them
 * with its next commit, so the tool refuses (exit 3) until every worker of
 * the group is stopped. Workers read the Kafka settings the same way
 * (--config FILE, NEXUS_KAFKA_BOOTSTRAP...), see common/config.h.
 *
 * Exit status: 0 done, 1 failure, 2 usage or configuration, 3 the group
 * is active.
 */
#include <ctype.h>
#include <errno.h>
#include <sys/stat.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <librdkafka/rdkafka.h>

#include "convert.h"
#include "config.h"
#include "kafka.h"
#include "mapping.h"

#define REPLAY_TIMEOUT_MS 15000
#define REPLAY_MAX_TOPICS 64
#define REPLAY_MAX_FILE (16u * 1024u * 1024u)
#define EXIT_ACTIVE 3

enum target_kind { TARGET_NONE = 0, TARGET_EARLIEST, TARGET_TIME, TARGET_FILE };

struct opts {
    const char *config_path;
    const char *worker;
    const char *group;
    const char *topics[REPLAY_MAX_TOPICS];
    int topic_count;
    enum target_kind target;
    int64_t time_ms;
    const char *from_file;
    const char *save_file;
    int execute;
    int help;
};

/* One partition: where the group is, where it goes, the log's bounds. */
struct part {
    char topic[256];
    int32_t partition;
    int64_t committed;   /* RD_KAFKA_OFFSET_INVALID: nothing committed */
    int64_t target;      /* RD_KAFKA_OFFSET_INVALID: delete the commit */
    int has_target;
    int64_t low, high;
};

struct parts {
    struct part *v;
    size_t n;
};

static void usage(FILE *f)
{
    fputs("usage: nexus-replay [--config FILE] (--worker NAME | --group ID "
          "--topic T...)\n"
          "                    [--group ID] [--topic T]...\n"
          "                    [--to-earliest | --to-time TIME | "
          "--from-file FILE]\n"
          "                    [--save FILE] [--dry-run | --execute]\n"
          "\n"
          "Moves the committed offsets of a worker's consumer group on its "
          "lane\ntopics (from the mapping) or on the topics named with "
          "--topic.\n"
          "\n"
          "  --worker NAME     worker whose lane topics and group "
          "(nexus-NAME) to use\n"
          "  --group ID        consumer group (default: the worker's "
          "group_id)\n"
          "  --topic T         a topic instead of the worker's lanes "
          "(repeatable)\n"
          "  --to-earliest     the first offset still in each partition\n"
          "  --to-time TIME    the first offset at or after TIME: ISO-8601 "
          "(UTC unless\n"
          "                    it says Z or +HH:MM) or epoch milliseconds\n"
          "  --from-file FILE  offsets saved earlier with --save\n"
          "  --save FILE       write the current committed offsets as JSON "
          "(before any\n"
          "                    move; - for standard output); alone, only "
          "saves\n"
          "  --dry-run         print old -> new per partition (the "
          "default)\n"
          "  --execute         commit the new offsets; refused while the "
          "group has members\n"
          "\n"
          "exit: 0 done, 1 failure, 2 usage, 3 the group has active "
          "members\n", f);
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        enum target_kind t = TARGET_NONE;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            o->help = 1;
            return 0;
        } else if (strcmp(a, "--dry-run") == 0) {
            o->execute = 0;
            continue;
        } else if (strcmp(a, "--execute") == 0) {
            o->execute = 1;
            continue;
        } else if (strcmp(a, "--to-earliest") == 0) {
            t = TARGET_EARLIEST;
        } else if (!v) {
            fprintf(stderr, "nexus-replay: %s needs a value\n", a);
            return -1;
        } else if (strcmp(a, "--config") == 0) {
            o->config_path = argv[++i];
        } else if (strcmp(a, "--worker") == 0) {
            o->worker = argv[++i];
        } else if (strcmp(a, "--group") == 0) {
            o->group = argv[++i];
        } else if (strcmp(a, "--topic") == 0) {
            if (o->topic_count == REPLAY_MAX_TOPICS) {
                fprintf(stderr, "nexus-replay: more than %d topics\n",
                        REPLAY_MAX_TOPICS);
                return -1;
            }
            o->topics[o->topic_count++] = argv[++i];
        } else if (strcmp(a, "--to-time") == 0) {
            if (convert_time_parse(v, &o->time_ms)) {
                fprintf(stderr, "nexus-replay: --to-time: \"%s\" is neither "
                        "ISO-8601 nor epoch milliseconds\n", v);
                return -1;
            }
            i++;
            t = TARGET_TIME;
        } else if (strcmp(a, "--from-file") == 0) {
            o->from_file = argv[++i];
            t = TARGET_FILE;
        } else if (strcmp(a, "--save") == 0) {
            o->save_file = argv[++i];
        } else {
            fprintf(stderr, "nexus-replay: unknown argument %s\n", a);
            return -1;
        }
        if (t != TARGET_NONE) {
            if (o->target != TARGET_NONE) {
                fprintf(stderr, "nexus-replay: give one of --to-earliest, "
                        "--to-time, --from-file\n");
                return -1;
            }
            o->target = t;
        }
    }
    if (!o->worker && (!o->group || !o->topic_count)) {
        fprintf(stderr, "nexus-replay: give --worker, or --group and "
                "--topic\n");
        return -1;
    }
    if (o->target == TARGET_NONE && !o->save_file) {
        fprintf(stderr, "nexus-replay: nothing to do: give --to-earliest, "
                "--to-time, --from-file or --save\n");
        return -1;
    }
    return 0;
}

static void parts_free(struct parts *ps)
{
    free(ps->v);
    ps->v = NULL;
    ps->n = 0;
}

static struct part *parts_find(struct parts *ps, const char *topic,
                               int32_t partition)
{
    for (size_t i = 0; i < ps->n; i++)
        if (ps->v[i].partition == partition &&
            strcmp(ps->v[i].topic, topic) == 0)
            return &ps->v[i];
    return NULL;
}

/* Every partition of topic, with its watermarks. */
static int parts_add_topic(rd_kafka_t *rk, const char *topic,
                           struct parts *ps)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t kerr;
    int rc = -1;

    if (!rkt) {
        fprintf(stderr, "nexus-replay: %s: %s\n", topic,
                rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    kerr = rd_kafka_metadata(rk, 0, rkt, &md, REPLAY_TIMEOUT_MS);
    if (kerr) {
        fprintf(stderr, "nexus-replay: could not read the metadata of %s: "
                "%s\n", topic, rd_kafka_err2str(kerr));
        goto cleanup;
    }
    if (md->topic_cnt != 1 || md->topics[0].err) {
        fprintf(stderr, "nexus-replay: topic %s: %s\n", topic,
                rd_kafka_err2str(md->topic_cnt ? md->topics[0].err
                                               : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
        goto cleanup;
    }
    for (int i = 0; i < md->topics[0].partition_cnt; i++) {
        struct part *p;
        struct part *grown = realloc(ps->v, (ps->n + 1) * sizeof(*ps->v));
        if (!grown) {
            fprintf(stderr, "nexus-replay: out of memory\n");
            goto cleanup;
        }
        ps->v = grown;
        p = &ps->v[ps->n++];
        memset(p, 0, sizeof(*p));
        snprintf(p->topic, sizeof(p->topic), "%s", topic);
        p->partition = md->topics[0].partitions[i].id;
        p->committed = RD_KAFKA_OFFSET_INVALID;
        p->target = RD_KAFKA_OFFSET_INVALID;
        kerr = rd_kafka_query_watermark_offsets(rk, topic, p->partition,
                                                &p->low, &p->high,
                                                REPLAY_TIMEOUT_MS);
        if (kerr) {
            fprintf(stderr, "nexus-replay: could not read the offsets of "
                    "%s[%d]: %s\n", topic, (int)p->partition,
                    rd_kafka_err2str(kerr));
            goto cleanup;
        }
    }
    rc = 0;
cleanup:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    return rc;
}

static rd_kafka_topic_partition_list_t *parts_list(const struct parts *ps)
{
    rd_kafka_topic_partition_list_t *l =
        rd_kafka_topic_partition_list_new((int)ps->n);

    for (size_t i = 0; i < ps->n; i++)
        rd_kafka_topic_partition_list_add(l, ps->v[i].topic,
                                          ps->v[i].partition);
    return l;
}

/* Names the first partition librdkafka answered with an error, after
 * what (may be ""); 1 if any. */
static int list_failed(const rd_kafka_topic_partition_list_t *l,
                       const char *what)
{
    for (int i = 0; l && i < l->cnt; i++)
        if (l->elems[i].err) {
            fprintf(stderr, "nexus-replay: %s[%d]: %s%s\n", l->elems[i].topic,
                    (int)l->elems[i].partition, what,
                    rd_kafka_err2str(l->elems[i].err));
            return 1;
        }
    return 0;
}

/* The group's committed offset of every partition. */
static int parts_read_committed(rd_kafka_t *rk, struct parts *ps)
{
    rd_kafka_topic_partition_list_t *l = parts_list(ps);
    rd_kafka_resp_err_t kerr = rd_kafka_committed(rk, l, REPLAY_TIMEOUT_MS);
    int rc = -1;

    if (kerr) {
        fprintf(stderr, "nexus-replay: could not read the committed offsets: "
                "%s\n", rd_kafka_err2str(kerr));
        goto cleanup;
    }
    if (list_failed(l, ""))
        goto cleanup;
    for (int i = 0; i < l->cnt; i++) {
        struct part *p = parts_find(ps, l->elems[i].topic,
                                    l->elems[i].partition);
        if (p)
            p->committed = l->elems[i].offset >= 0 ? l->elems[i].offset
                                                   : RD_KAFKA_OFFSET_INVALID;
    }
    rc = 0;
cleanup:
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

/* First offset at or after time_ms; the end of the log when none is. */
static int parts_target_time(rd_kafka_t *rk, struct parts *ps, int64_t time_ms)
{
    rd_kafka_topic_partition_list_t *l = parts_list(ps);
    rd_kafka_resp_err_t kerr;
    int rc = -1;

    for (int i = 0; i < l->cnt; i++)
        l->elems[i].offset = time_ms;
    kerr = rd_kafka_offsets_for_times(rk, l, REPLAY_TIMEOUT_MS);
    if (kerr) {
        fprintf(stderr, "nexus-replay: could not look up offsets by time: "
                "%s\n", rd_kafka_err2str(kerr));
        goto cleanup;
    }
    if (list_failed(l, ""))
        goto cleanup;
    for (int i = 0; i < l->cnt; i++) {
        struct part *p = parts_find(ps, l->elems[i].topic,
                                    l->elems[i].partition);
        if (!p)
            continue;
        p->target = l->elems[i].offset >= 0 ? l->elems[i].offset : p->high;
        p->has_target = 1;
    }
    rc = 0;
cleanup:
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

static char *file_read(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    size_t n;

    if (!f)
        return NULL;
    text = malloc(REPLAY_MAX_FILE + 1);
    if (text) {
        n = fread(text, 1, REPLAY_MAX_FILE, f);
        if (ferror(f) || n == REPLAY_MAX_FILE) {
            free(text);
            text = NULL;
        } else {
            text[n] = '\0';
        }
    }
    fclose(f);
    return text;
}

/*
 * Targets from a file written by --save. A partition of the file that is
 * not among the selected ones is an error (wrong worker or topics); a
 * selected one missing from the file keeps its offset.
 */
static int parts_target_file(struct parts *ps, const char *path,
                             const char *group)
{
    char *text = file_read(path);
    cJSON *doc = NULL;
    const cJSON *offs, *e, *g;
    int rc = -1;

    if (!text) {
        fprintf(stderr, "nexus-replay: could not read %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    doc = cJSON_Parse(text);
    offs = cJSON_GetObjectItemCaseSensitive(doc, "offsets");
    if (!cJSON_IsArray(offs)) {
        fprintf(stderr, "nexus-replay: %s: not a file written by --save (no "
                "\"offsets\" array)\n", path);
        goto cleanup;
    }
    g = cJSON_GetObjectItemCaseSensitive(doc, "group");
    if (cJSON_IsString(g) && strcmp(g->valuestring, group) != 0)
        fprintf(stderr, "nexus-replay: note: %s was saved for group %s, "
                "applying it to %s\n", path, g->valuestring, group);
    cJSON_ArrayForEach(e, offs) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "topic");
        const cJSON *pa = cJSON_GetObjectItemCaseSensitive(e, "partition");
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(e, "offset");
        struct part *p;

        if (!cJSON_IsString(t) || !cJSON_IsNumber(pa) ||
            !(cJSON_IsNumber(o) || cJSON_IsNull(o)) ||
            (cJSON_IsNumber(o) && o->valuedouble < 0)) {
            fprintf(stderr, "nexus-replay: %s: each offset needs topic, "
                    "partition and offset (a number >= 0 or null)\n", path);
            goto cleanup;
        }
        p = parts_find(ps, t->valuestring, (int32_t)pa->valuedouble);
        if (!p) {
            fprintf(stderr, "nexus-replay: %s: %s[%d] is not one of the "
                    "selected partitions\n", path, t->valuestring,
                    (int)pa->valuedouble);
            goto cleanup;
        }
        p->target = cJSON_IsNull(o) ? RD_KAFKA_OFFSET_INVALID
                                    : (int64_t)o->valuedouble;
        p->has_target = 1;
    }
    rc = 0;
cleanup:
    cJSON_Delete(doc);
    free(text);
    return rc;
}

/* Write the committed offsets as JSON (null: nothing committed). */
static int parts_save(const struct parts *ps, const char *group,
                      const char *path)
{
    cJSON *doc = cJSON_CreateObject();
    cJSON *offs = cJSON_AddArrayToObject(doc, "offsets");
    char *text = NULL, stamp[32], tmp[1024];
    time_t now = time(NULL);
    struct stat st;
    struct tm tm;
    FILE *f = NULL;
    int rc = -1;

    if (!doc || !offs || !gmtime_r(&now, &tm))
        goto cleanup;
    strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!cJSON_AddStringToObject(doc, "group", group) ||
        !cJSON_AddStringToObject(doc, "saved_at", stamp))
        goto cleanup;
    for (size_t i = 0; i < ps->n; i++) {
        cJSON *e = cJSON_CreateObject();
        if (!e || !cJSON_AddItemToArray(offs, e))
            goto cleanup;
        if (!cJSON_AddStringToObject(e, "topic", ps->v[i].topic) ||
            !cJSON_AddNumberToObject(e, "partition", ps->v[i].partition) ||
            !(ps->v[i].committed >= 0
                  ? cJSON_AddNumberToObject(e, "offset",
                                            (double)ps->v[i].committed)
                  : cJSON_AddNullToObject(e, "offset")))
            goto cleanup;
    }
    text = cJSON_Print(doc);
    if (!text)
        goto cleanup;
    if (strcmp(path, "-") == 0) {
        printf("%s\n", text);
        rc = fflush(stdout) ? -1 : 0;
        goto cleanup;
    }
    /* Written beside and renamed over: only ever a regular file. */
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        fprintf(stderr, "nexus-replay: %s is not a regular file (use - for "
                "standard output)\n", path);
        goto cleanup;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    f = fopen(tmp, "w");
    if (!f || fprintf(f, "%s\n", text) < 0) {
        fprintf(stderr, "nexus-replay: could not write %s: %s\n", tmp,
                strerror(errno));
        goto cleanup;
    }
    if (fclose(f)) {
        f = NULL;
        fprintf(stderr, "nexus-replay: could not write %s: %s\n", tmp,
                strerror(errno));
        goto cleanup;
    }
    f = NULL;
    if (rename(tmp, path)) {
        fprintf(stderr, "nexus-replay: could not rename %s to %s: %s\n", tmp,
                path, strerror(errno));
        goto cleanup;
    }
    fprintf(stderr, "nexus-replay: saved the committed offsets of group %s "
            "(%zu partitions) to %s\n", group, ps->n, path);
    rc = 0;
cleanup:
    if (rc && !text)
        fprintf(stderr, "nexus-replay: out of memory\n");
    if (f)
        fclose(f);
    free(text);
    cJSON_Delete(doc);
    return rc;
}

/*
 * Members and state of the group. Returns 0 and fills members/state, or -1
 * when the broker could not tell.
 */
static int group_describe(rd_kafka_t *rk, const char *group, int *members,
                          char *state, size_t state_size)
{
    const struct rd_kafka_group_list *gl = NULL;
    rd_kafka_resp_err_t kerr;

    kerr = rd_kafka_list_groups(rk, group, &gl, REPLAY_TIMEOUT_MS);
    if (kerr) {
        fprintf(stderr, "nexus-replay: could not describe group %s: %s\n",
                group, rd_kafka_err2str(kerr));
        return -1;
    }
    *members = 0;
    snprintf(state, state_size, "unknown");
    for (int i = 0; i < gl->group_cnt; i++)
        if (strcmp(gl->groups[i].group, group) == 0) {
            *members = gl->groups[i].member_cnt;
            snprintf(state, state_size, "%s", gl->groups[i].state);
        }
    rd_kafka_group_list_destroy(gl);
    return 0;
}

/* 0 when nobody is in the group; otherwise says why not and returns -1. */
static int group_check_idle(rd_kafka_t *rk, const char *group, int quiet)
{
    char state[64];
    int members;

    if (group_describe(rk, group, &members, state, sizeof(state)))
        return -1;
    if (members == 0 && strcmp(state, "PreparingRebalance") != 0 &&
        strcmp(state, "CompletingRebalance") != 0)
        return 0;
    if (!quiet)
        fprintf(stderr, "nexus-replay: group %s is active (state %s, %d "
                "member%s): stop every worker of the group first, its next "
                "commit would overwrite the new offsets\n", group, state,
                members, members == 1 ? "" : "s");
    return 1;
}

/* Forget the commits of the partitions whose target is "none". */
static int parts_delete_commits(rd_kafka_t *rk, const struct parts *ps,
                                const char *group)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_DeleteConsumerGroupOffsets_t *del = NULL;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *ev = NULL;
    const rd_kafka_DeleteConsumerGroupOffsets_result_t *res;
    const rd_kafka_group_result_t **groups;
    const rd_kafka_topic_partition_list_t *done;
    size_t ngroups;
    int rc = -1;

    for (size_t i = 0; i < ps->n; i++)
        if (ps->v[i].has_target && ps->v[i].target < 0 &&
            ps->v[i].committed >= 0)
            rd_kafka_topic_partition_list_add(l, ps->v[i].topic,
                                              ps->v[i].partition);
    if (!l->cnt) {
        rc = 0;
        goto cleanup;
    }
    del = rd_kafka_DeleteConsumerGroupOffsets_new(group, l);
    q = rd_kafka_queue_new(rk);
    rd_kafka_DeleteConsumerGroupOffsets(rk, &del, 1, NULL, q);
    ev = rd_kafka_queue_poll(q, REPLAY_TIMEOUT_MS * 2);
    if (!ev || rd_kafka_event_error(ev)) {
        fprintf(stderr, "nexus-replay: could not delete committed offsets: "
                "%s\n", ev ? rd_kafka_event_error_string(ev) : "timed out");
        goto cleanup;
    }
    res = rd_kafka_event_DeleteConsumerGroupOffsets_result(ev);
    groups = rd_kafka_DeleteConsumerGroupOffsets_result_groups(res, &ngroups);
    for (size_t g = 0; g < ngroups; g++) {
        const rd_kafka_error_t *gerr = rd_kafka_group_result_error(groups[g]);
        if (gerr) {
            fprintf(stderr, "nexus-replay: could not delete committed "
                    "offsets: %s\n", rd_kafka_error_string(gerr));
            goto cleanup;
        }
        done = rd_kafka_group_result_partitions(groups[g]);
        if (list_failed(done, "could not delete the committed offset: "))
            goto cleanup;
    }
    rc = 0;
cleanup:
    if (ev)
        rd_kafka_event_destroy(ev);
    if (q)
        rd_kafka_queue_destroy(q);
    if (del)
        rd_kafka_DeleteConsumerGroupOffsets_destroy(del);
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

/* Commit every numeric target, as a client outside the group. */
static int parts_commit(rd_kafka_t *rk, const struct parts *ps)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_resp_err_t kerr;
    int rc = -1;

    for (size_t i = 0; i < ps->n; i++)
        if (ps->v[i].has_target && ps->v[i].target >= 0)
            rd_kafka_topic_partition_list_add(l, ps->v[i].topic,
                                              ps->v[i].partition)
                ->offset = ps->v[i].target;
    if (!l->cnt) {
        rc = 0;
        goto cleanup;
    }
    kerr = rd_kafka_commit(rk, l, 0);
    if (kerr) {
        fprintf(stderr, "nexus-replay: could not commit the offsets: %s\n",
                rd_kafka_err2str(kerr));
        goto cleanup;
    }
    if (list_failed(l, "could not commit: "))
        goto cleanup;
    rc = 0;
cleanup:
    rd_kafka_topic_partition_list_destroy(l);
    return rc;
}

static void offset_text(int64_t off, char *out, size_t size)
{
    if (off >= 0)
        snprintf(out, size, "%" PRId64, off);
    else
        snprintf(out, size, "none");
}

/* old -> new per partition; returns how many partitions move. */
static size_t parts_print(const struct parts *ps)
{
    size_t moving = 0;
    int64_t again = 0;

    for (size_t i = 0; i < ps->n; i++) {
        const struct part *p = &ps->v[i];
        char old[32], new[32], name[300];

        if (!p->has_target)
            continue;
        offset_text(p->committed, old, sizeof(old));
        offset_text(p->target, new, sizeof(new));
        snprintf(name, sizeof(name), "%s[%d]", p->topic, (int)p->partition);
        printf("%-32s %10s -> %-10s (log %" PRId64 "..%" PRId64 ")%s\n", name,
               old, new, p->low, p->high,
               p->committed == p->target ? "" : " *");
        if (p->committed != p->target)
            moving++;
        if (p->target >= 0)
            again += (p->committed >= 0 ? p->committed : p->low) - p->target;
    }
    printf("%zu of %zu partitions move; %" PRId64 " messages to %s\n", moving,
           ps->n, again < 0 ? -again : again,
           again < 0 ? "skip" : "read again");
    return moving;
}

static rd_kafka_t *client_new(const struct config *cfg, const char *group)
{
    /* This client never subscribes: it reads and commits the group's
     * offsets without joining it. */
    const char *const forced[] = {
        "group.id", group,
        "enable.auto.commit", "false",
        "client.id", "nexus-replay",
        NULL};
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk;
    char kerr[512];

    if (kafka_conf_new(NULL, (const char *const *)cfg->kafka_props, forced, 1,
                       &conf, kerr, sizeof(kerr))) {
        fprintf(stderr, "nexus-replay: kafka: %s\n", kerr);
        return NULL;
    }
    rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kerr, sizeof(kerr));
    if (!rk) {
        fprintf(stderr, "nexus-replay: could not create a Kafka client: %s\n",
                kerr);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

int main(int argc, char **argv)
{
    struct opts o;
    struct config cfg;
    struct mapping *map = NULL;
    struct parts ps = {NULL, 0};
    rd_kafka_t *rk = NULL;
    const char *group;
    char errstr[1024], topic[256];
    int have_cfg = 0, rc = 1;

    memset(&o, 0, sizeof(o));
    if (parse_args(argc, argv, &o)) {
        usage(stderr);
        return 2;
    }
    if (o.help) {
        usage(stdout);
        return 0;
    }
    if (config_load(&cfg, o.config_path, o.worker ? o.worker : "replay",
                    errstr, sizeof(errstr))) {
        fprintf(stderr, "nexus-replay: %s\n", errstr);
        return 2;
    }
    have_cfg = 1;
    group = o.group ? o.group : cfg.group_id;
    rk = client_new(&cfg, group);
    if (!rk) {
        rc = 2;
        goto cleanup;
    }
    if (o.topic_count) {
        for (int i = 0; i < o.topic_count; i++)
            if (parts_add_topic(rk, o.topics[i], &ps))
                goto cleanup;
    } else {
        if (mapping_load(cfg.mapping_path, &map, errstr, sizeof(errstr))) {
            fprintf(stderr, "nexus-replay: %s\n", errstr);
            rc = 2;
            goto cleanup;
        }
        for (int l = 0; l < LANE__COUNT; l++) {
            if (!mapping_worker_has_lane(map, o.worker, (enum mapping_lane)l))
                continue;
            if (mapping_topic(map, (enum mapping_lane)l, o.worker, topic,
                              sizeof(topic)) ||
                parts_add_topic(rk, topic, &ps))
                goto cleanup;
        }
        if (!ps.n) {
            fprintf(stderr, "nexus-replay: worker %s owns no lane topic in "
                    "%s\n", o.worker, cfg.mapping_path);
            rc = 2;
            goto cleanup;
        }
    }
    if (parts_read_committed(rk, &ps))
        goto cleanup;
    if (o.save_file && parts_save(&ps, group, o.save_file))
        goto cleanup;
    if (o.target == TARGET_NONE) {
        rc = 0;
        goto cleanup;
    }
    for (size_t i = 0; i < ps.n && o.target == TARGET_EARLIEST; i++) {
        ps.v[i].target = ps.v[i].low;
        ps.v[i].has_target = 1;
    }
    if (o.target == TARGET_TIME && parts_target_time(rk, &ps, o.time_ms))
        goto cleanup;
    if (o.target == TARGET_FILE && parts_target_file(&ps, o.from_file, group))
        goto cleanup;

    printf("group %s\n", group);
    if (!parts_print(&ps)) {
        rc = 0;
        goto cleanup;
    }
    if (!o.execute) {
        int active = group_check_idle(rk, group, 1);
        if (active > 0)
            printf("note: the group has active members now; --execute would "
                   "be refused until its workers stop\n");
        printf("dry run: nothing changed; add --execute to apply\n");
        rc = active < 0 ? 1 : 0;
        goto cleanup;
    }
    rc = group_check_idle(rk, group, 0);
    if (rc) {
        rc = rc > 0 ? EXIT_ACTIVE : 1;
        goto cleanup;
    }
    rc = 1;
    if (parts_delete_commits(rk, &ps, group) || parts_commit(rk, &ps))
        goto cleanup;
    /* A worker that joined between the check and the commit would make
     * the new offsets unreliable: say so rather than claim success. */
    if (group_check_idle(rk, group, 0)) {
        rc = EXIT_ACTIVE;
        goto cleanup;
    }
    printf("committed the new offsets for group %s\n", group);
    rc = 0;

cleanup:
    if (rk)
        rd_kafka_destroy(rk);
    parts_free(&ps);
    mapping_free(map);
    if (have_cfg)
        config_free(&cfg);
    return rc;
}
