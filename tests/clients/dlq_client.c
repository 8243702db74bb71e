/*
 * dlq_client - drive the DLQ producer from JSON lines.
 *
 *   dlq_client TOPIC WORKER [name=value ...]
 *
 * The name=value pairs are librdkafka properties (bootstrap.servers=...).
 * Each stdin line is one of
 *   {"op":"send","class":"parse","reason":..,"src":{"topic":..,
 *    "partition":..,"offset":..,"key":..|null,"value":..|null,
 *    "headers":[[name,value|null]..]}}
 *   {"op":"flush","timeout_ms":N}
 * and each stdout line {"err":..,"errstr":..,"ms":..,"sent":N}.
 */
#include "dlq.h"

#include <librdkafka/rdkafka.h>

#include "common.h"
#include "log.h"

static int run_line(struct dlq *dlq, const char *line)
{
    cJSON *req = cJSON_Parse(line);
    cJSON *ans = cJSON_CreateObject();
    rd_kafka_headers_t *hdrs = NULL;
    const char *op;
    char errstr[1024] = "";
    double t0;
    enum ns_err err;

    if (!req || !ans) {
        cJSON_Delete(req);
        cJSON_Delete(ans);
        fprintf(stderr, "dlq_client: bad request line\n");
        return 1;
    }
    op = tc_str(req, "op", "");
    t0 = tc_now_ms();
    if (strcmp(op, "flush") == 0) {
        err = dlq_flush(dlq, (int)tc_num(req, "timeout_ms", 10000), errstr,
                        sizeof(errstr));
    } else {
        const cJSON *src_json = cJSON_GetObjectItemCaseSensitive(req, "src");
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(src_json,
                                                             "headers");
        const cJSON *it;
        struct dlq_source src;
        int cls = tc_err_parse(tc_str(req, "class", "parse"));

        memset(&src, 0, sizeof(src));
        src.topic = tc_str(src_json, "topic", NULL);
        src.partition = (int32_t)tc_num(src_json, "partition", 0);
        src.offset = (int64_t)tc_num(src_json, "offset", 0);
        src.key = tc_str(src_json, "key", NULL);
        src.key_len = src.key ? strlen(src.key) : 0;
        src.value = tc_str(src_json, "value", NULL);
        src.value_len = src.value ? strlen(src.value) : 0;
        if (cJSON_IsArray(list)) {
            hdrs = rd_kafka_headers_new(8);
            cJSON_ArrayForEach(it, list) {
                const cJSON *name = cJSON_GetArrayItem(it, 0);
                const cJSON *val = cJSON_GetArrayItem(it, 1);

                rd_kafka_header_add(hdrs, name->valuestring, -1,
                                    cJSON_IsString(val) ? val->valuestring :
                                    NULL, -1);
            }
            src.headers = hdrs;
        }
        err = dlq_send(dlq, &src, cls < 0 ? NS_ERR_PARSE : (enum ns_err)cls,
                       tc_str(req, "reason", NULL), errstr, sizeof(errstr));
    }
    cJSON_AddStringToObject(ans, "err", ns_err_str(err));
    cJSON_AddStringToObject(ans, "errstr", errstr);
    cJSON_AddNumberToObject(ans, "ms", tc_now_ms() - t0);
    cJSON_AddNumberToObject(ans, "sent", (double)dlq_sent_count(dlq));
    if (hdrs)
        rd_kafka_headers_destroy(hdrs);
    cJSON_Delete(req);
    return tc_answer(ans);
}

int main(int argc, char **argv)
{
    struct dlq *dlq = NULL;
    const char **props = NULL;
    char errstr[512];
    char *line = NULL;
    size_t cap = 0, np = 0;
    int rc = 1;
    enum ns_err err;

    if (argc < 3) {
        fprintf(stderr, "usage: dlq_client TOPIC WORKER [name=value ...]\n");
        return 2;
    }
    log_setup(NS_LOG_WARN, 0, "dlq_client");
    props = calloc((size_t)(argc - 3) * 2 + 1, sizeof(*props));
    if (!props)
        goto cleanup;
    for (int i = 3; i < argc; i++) {
        char *eq = strchr(argv[i], '=');

        if (!eq) {
            fprintf(stderr, "dlq_client: %s is not name=value\n", argv[i]);
            goto cleanup;
        }
        *eq = '\0';
        props[np++] = argv[i];
        props[np++] = eq + 1;
    }
    err = dlq_new(props, argv[1], argv[2], &dlq, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "dlq_client: %s: %s\n", ns_err_str(err), errstr);
        goto cleanup;
    }
    while (getline(&line, &cap, stdin) > 0) {
        if (run_line(dlq, line))
            goto cleanup;
    }
    rc = 0;

cleanup:
    free(line);
    dlq_free(dlq);
    free(props);
    return rc;
}
