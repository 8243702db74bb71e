#include "worker.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "consumer.h"
#include "log.h"
#include "mapping.h"
#include "neo4j.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f, const char *prog, const char *worker,
                  const char *description)
{
    fprintf(f,
            "usage: %s [--config FILE] [--log-level LEVEL] [--log-json]\n"
            "          [--dump-config] [--help] [--version]\n"
            "\n"
            "nexus-sync worker \"%s\": %s.\n"
            "Consumes its lane topics, applies the changes to Neo4j, writes\n"
            "sync_status back to PostgreSQL and sends what cannot be applied\n"
            "to the DLQ topic.\n"
            "\n"
            "  --config FILE   libconfig settings file (see deploy/worker.cfg)\n"
            "  --log-level LEVEL\n"
            "                  error, warn, info or debug (wins over the\n"
            "                  file and NEXUS_LOG_LEVEL)\n"
            "  --log-json      log JSON lines (as NEXUS_LOG_JSON=1)\n"
            "  --dump-config   print the effective settings, secrets masked\n"
            "  --version       print the version and exit\n"
            "\n"
            "Environment variables override the file; see "
            "docs/configuration.md.\n",
            prog, worker, description);
}

/*
 * The start-up check of Neo4j (neo4j_client_check): NS_ERR_CONFIG when the
 * database does not exist or the credentials are refused, or the client
 * cannot be set up; NS_OK otherwise, also when Neo4j could not be reached
 * (logged: consumer_new waits for it, retrying).
 */
static enum ns_err worker_check_neo4j(const struct config *cfg, char *errstr,
                                      size_t errstr_size)
{
    struct neo4j_client *nc = NULL;
    enum ns_err err;

    err = neo4j_client_new(cfg->neo4j_url, cfg->neo4j_db, cfg->neo4j_user,
                           cfg->neo4j_password, cfg->neo4j_timeout_ms, &nc,
                           errstr, errstr_size);
    if (!err && cfg->neo4j_ca_file[0])
        err = neo4j_client_set_ca_file(nc, cfg->neo4j_ca_file, errstr,
                                       errstr_size);
    if (err)
        goto cleanup;
    neo4j_client_set_api(nc, (enum neo4j_api)cfg->neo4j_api);
    err = neo4j_client_check(nc, cfg->neo4j_db, cfg->neo4j_user, errstr,
                             errstr_size);
    if (err && err != NS_ERR_CONFIG) {
        log_msg(NS_LOG_WARN, "could not check Neo4j at start-up, waiting for "
                "it: %s", errstr);
        err = NS_OK;
    }

cleanup:
    neo4j_client_free(nc);
    return err;
}

int worker_main(int argc, char **argv, const char *worker,
                const char *description)
{
    const char *config_path = NULL;
    int dump = 0, rc = 1, log_level = -1, log_json = 0;
    struct config cfg;
    struct mapping *map = NULL;
    struct consumer *c = NULL;
    struct sigaction sa;
    char errstr[1024];
    int have_cfg = 0;
    enum ns_err err;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout, argv[0], worker, description);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("%s_worker %s (librdkafka %s)\n", worker, NEXUS_VERSION,
                   rd_kafka_version_str());
            return 0;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc) {
            log_level = log_level_parse(argv[++i]);
            if (log_level < 0) {
                fprintf(stderr, "%s_worker: --log-level: unknown level "
                        "\"%s\"\n", worker, argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--log-json") == 0) {
            log_json = 1;
        } else if (strcmp(argv[i], "--dump-config") == 0) {
            dump = 1;
        } else {
            usage(stderr, argv[0], worker, description);
            return 2;
        }
    }

    if (config_load(&cfg, config_path, worker, errstr, sizeof(errstr))) {
        fprintf(stderr, "%s_worker: %s\n", worker, errstr);
        return 2;
    }
    have_cfg = 1;
    /* the command line wins over the file and the environment */
    if (log_level >= 0)
        cfg.log_level = log_level;
    if (log_json)
        cfg.log_json = 1;
    log_setup((enum log_level)cfg.log_level, cfg.log_json, worker);
    if (mapping_load(cfg.mapping_path, &map, errstr, sizeof(errstr)) ||
        config_resolve_lanes(&cfg, map, errstr, sizeof(errstr))) {
        fprintf(stderr, "%s_worker: %s\n", worker, errstr);
        rc = 2;
        goto cleanup;
    }
    if (dump) {
        config_dump(&cfg, stdout);
        rc = 0;
        goto cleanup;
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    /* A mistyped database or refused credentials stop the worker here;
     * the loop would retry them for ever. */
    if (worker_check_neo4j(&cfg, errstr, sizeof(errstr))) {
        log_msg(NS_LOG_ERROR, "could not start: %s", errstr);
        rc = 2;
        goto cleanup;
    }
    err = consumer_new(&cfg, map, &stop_requested, &c, errstr,
                       sizeof(errstr));
    if (err) {
        log_msg(NS_LOG_ERROR, "could not start: %s", errstr);
        rc = stop_requested ? 0 : err == NS_ERR_CONFIG ? 2 : 1;
        goto cleanup;
    }
    if (consumer_run(c, errstr, sizeof(errstr))) {
        log_msg(NS_LOG_ERROR, "%s", errstr);
        goto cleanup;
    }
    rc = 0;

cleanup:
    consumer_free(c);
    mapping_free(map);
    if (have_cfg)
        config_free(&cfg);
    return rc;
}
