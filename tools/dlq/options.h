/*
 * options.h - nexus-dlq's command line: the command, the filters that
 * choose dead letters and the switches of each command, and their
 * parsing and checking (with the usage text).
 *
 * Part of nexus-dlq (tools/dlq/, linked into bin/nexus-dlq only).
 */
#ifndef NS_DLQ_TOOL_OPTIONS_H
#define NS_DLQ_TOOL_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

#define MAX_OFFSETS 256

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

/* Non-zero when any filter (--reason, --class, --source-topic, --offset)
 * was given. */
int has_filter(const struct options *opts);

/* Parse argv into opts; returns 0 to go on, -1 when --help or --version
 * was answered, or 2 after printing a usage error. argv must outlive
 * opts, whose strings point into it. */
int options_parse(int argc, char **argv, struct options *opts);

#endif
