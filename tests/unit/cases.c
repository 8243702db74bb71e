#include "cases.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void case_why(char *why, size_t why_size, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, why_size, fmt, ap);
    va_end(ap);
}

char *case_read_file(const char *path, size_t max, size_t *len)
{
    FILE *f = NULL;
    char *data = NULL, *res = NULL;
    size_t n = 0, got;

    f = fopen(path, "rb");
    if (!f)
        goto cleanup;
    data = malloc(max + 1);
    if (!data)
        goto cleanup;
    while ((got = fread(data + n, 1, max + 1 - n, f)) > 0) {
        n += got;
        if (n > max)
            goto cleanup;
    }
    if (ferror(f))
        goto cleanup;
    data[n] = '\0';
    if (len)
        *len = n;
    res = data;
    data = NULL;

cleanup:
    free(data);
    if (f)
        fclose(f);
    return res;
}

int case_check_keys(const cJSON *c, const char *const *known, size_t n,
                    const char *what, char *why, size_t why_size)
{
    const cJSON *e;

    cJSON_ArrayForEach(e, c) {
        size_t i = 0;

        while (i < n && strcmp(e->string, known[i]) != 0)
            i++;
        if (i == n) {
            case_why(why, why_size, "unknown %s member '%s'", what, e->string);
            return -1;
        }
    }
    return 0;
}

int case_json_equal(const cJSON *a, const cJSON *b)
{
    const cJSON *x, *y;

    if (!a || !b)
        return a == b;
    if ((a->type & 0xff) != (b->type & 0xff))
        return 0;
    if (cJSON_IsNumber(a))
        return a->valuedouble == b->valuedouble;
    if (cJSON_IsString(a))
        return strcmp(a->valuestring, b->valuestring) == 0;
    if (cJSON_IsArray(a)) {
        for (x = a->child, y = b->child; x && y; x = x->next, y = y->next)
            if (!case_json_equal(x, y))
                return 0;
        return x == NULL && y == NULL;
    }
    if (cJSON_IsObject(a)) {
        if (cJSON_GetArraySize(a) != cJSON_GetArraySize(b))
            return 0;
        cJSON_ArrayForEach(x, a) {
            y = cJSON_GetObjectItemCaseSensitive(b, x->string);
            if (!case_json_equal(x, y))
                return 0;
        }
        return 1;
    }
    return 1;
}

static int is_case_file(const struct dirent *d)
{
    size_t n = strlen(d->d_name);

    return d->d_name[0] != '.' && n > 5 &&
           strcmp(d->d_name + n - 5, ".json") == 0;
}

int case_run_dir(const char *dir,
                 int (*run)(const char *path, char *why, size_t why_size),
                 int *passed, int *failed)
{
    struct dirent **names = NULL;
    char path[4096], why[1024];
    int n;

    n = scandir(dir, &names, is_case_file, alphasort);
    if (n < 0)
        return -1;
    for (int i = 0; i < n; i++) {
        why[0] = '\0';
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        if (run(path, why, sizeof(why)) == 0) {
            printf("ok %s\n", names[i]->d_name);
            (*passed)++;
        } else {
            printf("not ok %s: %s\n", names[i]->d_name, why);
            (*failed)++;
        }
        free(names[i]);
    }
    free(names);
    if (n == 0) {
        printf("not ok %s: no case files\n", dir);
        (*failed)++;
    }
    return 0;
}
