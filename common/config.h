/*
 * config.h - a worker's settings: one libconfig file plus environment
 * overrides, loaded and validated once at start-up, then read-only.
 *
 * File (all optional; see deploy/worker.cfg):
 *   mapping = "schemas/mapping.cfg";
 *   group_id = "nexus-<worker>";
 *   lanes = ["critical", "high"];        # default: every lane it owns
 *   batch = { max_events = 1000; max_ms = 50; };
 *   retry = { initial_ms = 200; max_ms = 30000; };
 *   log = { level = "info"; json = false; };
 *   kafka = ( ["bootstrap.servers", "127.0.0.1:59092"], ... );  # passed
 *                                        # to librdkafka pair by pair
 *   neo4j = { url = ...; database = "neo4j"; user = ...; password = ...;
 *             timeout_ms = 60000; ca_file = "/etc/nexus/ca.crt";
 *             api = "auto"; };   # auto, query (Query API) or tx
 *                                # (tx/commit); auto: tx when the server
 *                                # lists it, else the Query API
 *   postgres = { conninfo = "host=... port=... dbname=... user=..." ;
 *                password = ...; sslmode = "verify-full";
 *                sslrootcert = "/etc/nexus/ca.crt"; };
 * A password may come from a file instead (neo4j.password_file,
 * postgres.password_file); conninfo may not hold one. ca_file needs an
 * https url; sslrootcert needs sslmode verify-ca or verify-full.
 *   metrics = { port = 9400; bind = "0.0.0.0"; };  # port 0: no HTTP
 *   source = { epochs = ["2026-12-01T00:00:00Z"]; };
 *                              # when the source's LSNs restarted (a
 *                              # restore, a new cluster): an event whose
 *                              # commit time (source.ts_ms) is at or after
 *                              # k of these instants is of epoch k, and
 *                              # positions compare (epoch, lsn)
 *   batch = { max_bytes = 8388608; backlog_max_bytes = 8388608; };
 *                              # memory bounds in bytes besides the count:
 *                              # a batch, and what is held while a retry
 *                              # waits (partitions stay paused beyond it)
 *   retry = { poison_after = 8; };
 *                              # a failure repeated word for word this many
 *                              # times is the batch's fault: split it and
 *                              # dead-letter what fails alone
 *   tombstones = { horizon_s = 604800; prune_every_s = 600; };
 *                              # delete markers older than the horizon (by
 *                              # source commit time) are pruned; 0: never
 * Environment (wins over the file): NEXUS_MAPPING, NEXUS_GROUP_ID,
 * NEXUS_LANES (comma list), NEXUS_BATCH_MAX, NEXUS_BATCH_MS,
 * NEXUS_LOG_LEVEL, NEXUS_LOG_JSON, NEXUS_KAFKA_BOOTSTRAP, NEXUS_NEO4J_URL,
 * NEXUS_NEO4J_DB, NEXUS_NEO4J_USER, NEXUS_NEO4J_PASSWORD, NEXUS_NEO4J_API,
 * NEXUS_PG_HOST, NEXUS_PG_PORT, NEXUS_PG_DB, NEXUS_WRITER_USER,
 * NEXUS_WRITER_PASSWORD, NEXUS_KAFKA_SASL_PASSWORD (sasl.password),
 * NEXUS_KAFKA_SSL_KEY_PASSWORD (ssl.key.password), NEXUS_PG_SSLMODE,
 * NEXUS_PG_SSLROOTCERT, NEXUS_NEO4J_CA_FILE, NEXUS_METRICS_PORT,
 * NEXUS_METRICS_BIND, NEXUS_RETRY_MAX_MS, NEXUS_SOURCE_EPOCHS (comma list),
 * NEXUS_TOMBSTONE_HORIZON_S, NEXUS_TOMBSTONE_PRUNE_EVERY_S,
 * NEXUS_BATCH_MAX_BYTES, NEXUS_BACKLOG_MAX_BYTES, NEXUS_RETRY_POISON_AFTER.
 * Every secret (*_PASSWORD) may
 * instead be read from the file named by *_PASSWORD_FILE; setting both is
 * an error.
 */
#ifndef NS_CONFIG_H
#define NS_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "err.h"
#include "mapping.h"

#define CONFIG_MAX_KAFKA_PROPS 64
#define CONFIG_MAX_EPOCHS 16

struct config {
    char worker[64];
    char mapping_path[512];
    char group_id[128];
    int lanes[LANE__COUNT];          /* non-zero: consume this lane */
    int batch_max_events;
    int batch_max_ms;
    int batch_max_bytes;             /* payload and key bytes of a batch */
    int backlog_max_bytes;           /* held while the loop cannot collect */
    int retry_initial_ms;
    int retry_max_ms;
    int poison_after;                /* identical failures that make a
                                        batch's error permanent */
    int log_level;
    int log_json;
    /* name/value pairs for librdkafka, NULL-terminated */
    char *kafka_props[2 * CONFIG_MAX_KAFKA_PROPS + 1];
    size_t kafka_prop_count;
    char neo4j_url[512];
    char neo4j_db[64];
    char neo4j_user[128];
    char neo4j_password[256];
    long neo4j_timeout_ms;
    int neo4j_api;                   /* enum neo4j_api (neo4j.h) */
    char pg_conninfo[1024];          /* without the password */
    char pg_password[256];
    /* TLS: "" means unset (libpq's sslmode default, the system CAs) */
    char pg_sslmode[16];
    char pg_sslrootcert[512];
    char neo4j_ca_file[512];
    int metrics_port;                /* /metrics, /healthz, /readyz; 0 off */
    char metrics_bind[64];
    char stats_dir[256];             /* counters as JSON each second; "" off */
    int64_t source_epochs_ms[CONFIG_MAX_EPOCHS]; /* ascending instants */
    size_t source_epoch_count;
    int tombstone_horizon_s;         /* 0: markers are never pruned */
    int tombstone_prune_every_s;
};

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
