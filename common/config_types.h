/*
 * config_types.h - struct config, a worker's settings once loaded: the one
 * type the configuration modules share (config, config_source,
 * config_tls), apart from their functions so that they need not include
 * one another's headers. The settings themselves are documented in
 * docs/configuration.md.
 */
#ifndef NS_CONFIG_TYPES_H
#define NS_CONFIG_TYPES_H

#include <stddef.h>
#include <stdint.h>

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

#endif
