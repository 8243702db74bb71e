/*
 * common.h - helpers shared by the client test programs: one JSON request
 * per stdin line, one JSON answer per stdout line, so pytest can drive a
 * single process (and a single connection) through several steps.
 */
#ifndef NS_TEST_CLIENTS_COMMON_H
#define NS_TEST_CLIENTS_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "err.h"

static inline double tc_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Error code by its ns_err_str() name; -1 when unknown. */
static inline int tc_err_parse(const char *name)
{
    for (int e = 0; e < NS_ERR__COUNT; e++)
        if (strcmp(ns_err_str((enum ns_err)e), name) == 0)
            return e;
    return -1;
}

/* Print obj as one line and free it. Returns 0, or 1 when out of memory. */
static inline int tc_answer(cJSON *obj)
{
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;
    int rc = text ? 0 : 1;

    if (text) {
        fputs(text, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    }
    cJSON_free(text);
    cJSON_Delete(obj);
    return rc;
}

/* A string member or def. */
static inline const char *tc_str(const cJSON *obj, const char *name,
                                 const char *def)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);

    return cJSON_IsString(it) ? it->valuestring : def;
}

static inline double tc_num(const cJSON *obj, const char *name, double def)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);

    return cJSON_IsNumber(it) ? it->valuedouble : def;
}

#endif
