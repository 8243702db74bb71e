#include "metrics.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int64_t metrics_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void metrics_write_json(const struct metrics *m, const char *worker, FILE *f)
{
    fprintf(f, "{\"worker\":\"%s\",\"uptime_ms\":%lld,\"batches\":%llu,"
               "\"neo4j_transactions\":%llu,\"neo4j_retries\":%llu,"
               "\"pg_retries\":%llu,\"kafka_retries\":%llu,"
               "\"writeback_rows\":%llu,\"last_batch_ms\":%.1f,"
               "\"neo4j_ms_total\":%.1f,\"lanes\":{",
            worker, (long long)(metrics_now_ms() - m->started_ms),
            (unsigned long long)m->batches,
            (unsigned long long)m->neo4j_transactions,
            (unsigned long long)m->neo4j_retries,
            (unsigned long long)m->pg_retries,
            (unsigned long long)m->kafka_retries,
            (unsigned long long)m->writeback_rows, m->last_batch_ms,
            m->neo4j_ms_total);
    for (int l = 0; l < LANE__COUNT; l++) {
        const struct metrics_lane *ml = &m->lanes[l];
        fprintf(f, "%s\"%s\":{\"consumed\":%llu,\"applied\":%llu,"
                   "\"skipped\":%llu,\"dlq\":%llu,\"lag\":%lld}",
                l ? "," : "", mapping_lane_name((enum mapping_lane)l),
                (unsigned long long)ml->consumed,
                (unsigned long long)ml->applied,
                (unsigned long long)ml->skipped, (unsigned long long)ml->dlq,
                (long long)ml->lag);
    }
    fputs("}}\n", f);
}

enum ns_err metrics_write_file(const struct metrics *m, const char *worker,
                               const char *path)
{
    char tmp[1024];
    FILE *f;
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp", path);

    if (n < 0 || (size_t)n >= sizeof(tmp))
        return NS_ERR_LIMIT;
    f = fopen(tmp, "w");
    if (!f)
        return NS_ERR_IO;
    metrics_write_json(m, worker, f);
    if (fclose(f) != 0 || rename(tmp, path) != 0)
        return NS_ERR_IO;
    return NS_OK;
}
