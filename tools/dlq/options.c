#include "options.h"

#include <stdio.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "letters.h"
#include "version.h"

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

int has_filter(const struct options *opts)
{
    return opts->reason || opts->error_class || opts->source_topic ||
           opts->offset_count;
}

/* Parse argv into opts; returns 0 to go on, -1 when --help or --version
 * was answered, or 2 after printing a usage error. */
int options_parse(int argc, char **argv, struct options *opts)
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
