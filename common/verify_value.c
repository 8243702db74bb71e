#include "verify_value.h"

#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "convert.h"

#define VERIFY_SHOW_MAX 200          /* characters of a value in a report */

/* Integer text to int64; -1 when it is not one. */
int verify_value_parse_int64(const char *s, int64_t *out)
{
    char *end;
    long long v;

    if (!s || !*s)
        return -1;
    v = strtoll(s, &end, 10);
    if (*end != '\0')
        return -1;
    *out = v;
    return 0;
}

static int is_string_type(enum col_type t)
{
    return t == COL_UUID || t == COL_TEXT || t == COL_ENUM || t == COL_JSON;
}

static int is_temporal(enum col_type t)
{
    return t == COL_TIMESTAMPTZ || t == COL_TIMESTAMP;
}

/* JSON text of v, cut to VERIFY_SHOW_MAX characters (caller frees). */
char *verify_value_show(const cJSON *v)
{
    char *s = v ? cJSON_PrintUnformatted(v) : strdup("null");
    size_t len;

    if (!s)
        return NULL;
    len = strlen(s);
    if (len > VERIFY_SHOW_MAX) {
        size_t cut = VERIFY_SHOW_MAX - 3;

        /* never split a UTF-8 sequence: the report must stay valid */
        while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
            cut--;
        memcpy(s + cut, "...", 4);
    }
    return s;
}

/* The graph-side value for people: temporal epochs back as ISO text. */
char *verify_value_show_neo(const cJSON *v, enum col_type type)
{
    int64_t us;
    char iso[48];
    cJSON *tmp;
    char *s;

    if (is_temporal(type) && cJSON_IsString(v) &&
        verify_value_parse_int64(v->valuestring, &us) == 0 &&
        convert_iso_from_micros(us, type == COL_TIMESTAMPTZ, iso, sizeof(iso)) == 0) {
        tmp = cJSON_CreateString(iso);
        s = verify_value_show(tmp);
        cJSON_Delete(tmp);
        return s;
    }
    return verify_value_show(v);
}

/*
 * A column read by pg_column_expr() as the parameter value a worker would
 * send for the same row: the text is first put in the form Debezium
 * writes (or one convert_value() accepts as such), then converted by
 * convert_value() itself. text NULL is SQL NULL. *out is owned by the
 * caller; NS_ERR_SCHEMA when the value cannot be converted (a worker
 * would send that event to the DLQ), reason in errstr.
 */
enum ns_err verify_value_param(const char *text,
                               const struct mapping_property *p, cJSON **out,
                               char *errstr, size_t errstr_size)
{
    cJSON *in = NULL;
    enum ns_err err;
    int64_t us;
    char iso[48];
    int scale = p->scale;

    *out = NULL;
    if (!text)
        return convert_value(NULL, p->type, scale, out, errstr, errstr_size);
    switch (p->type) {
    case COL_INT:
        in = cJSON_CreateNumber(strtod(text, NULL));
        break;
    case COL_FLOAT:
        if (strcmp(text, "NaN") == 0 || strcmp(text, "Infinity") == 0 ||
            strcmp(text, "-Infinity") == 0)
            in = cJSON_CreateString(text);
        else
            in = cJSON_CreateNumber(strtod(text, NULL));
        break;
    case COL_NUMERIC:
        /* a decimal string: with a known scale it could read as base64 */
        scale = -1;
        in = cJSON_CreateString(text);
        break;
    case COL_BOOL:
        in = cJSON_CreateBool(strcmp(text, "true") == 0 ||
                              strcmp(text, "t") == 0);
        break;
    case COL_TIMESTAMPTZ:
    case COL_TIMESTAMP:
        if (verify_value_parse_int64(text, &us) == 0 &&
            convert_iso_from_micros(us, p->type == COL_TIMESTAMPTZ, iso,
                            sizeof(iso)) == 0)
            in = cJSON_CreateString(iso);
        else
            in = cJSON_CreateString(text);
        break;
    case COL_DATE:
        if (verify_value_parse_int64(text, &us) == 0)
            in = cJSON_CreateNumber((double)us);
        else
            in = cJSON_CreateString(text);
        break;
    case COL_TEXT_ARRAY:
        in = cJSON_Parse(text);
        if (!in) {
            ns_err_set(errstr, errstr_size, "array is not valid JSON");
            return NS_ERR_SCHEMA;
        }
        break;
    default:
        in = cJSON_CreateString(text);
        break;
    }
    if (!in) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    err = convert_value(in, p->type, scale, out, errstr, errstr_size);
    cJSON_Delete(in);
    return err;
}

/* Equal when the stored value is what the worker would have written. */
int verify_value_equal(const struct mapping_property *p, const char *pg_text,
                       const cJSON *param, const cJSON *neo)
{
    if (cJSON_IsObject(neo))
        return 0; /* a stored value of another type */
    if (cJSON_IsNull(param) || !neo || cJSON_IsNull(neo))
        return cJSON_IsNull(param) && (!neo || cJSON_IsNull(neo));
    if (is_temporal(p->type))
        return cJSON_IsString(neo) && pg_text &&
               strcmp(neo->valuestring, pg_text) == 0;
    if (is_string_type(p->type) || p->type == COL_DATE) {
        cJSON *ja, *jb;
        int same;

        if (!cJSON_IsString(neo) || !cJSON_IsString(param))
            return 0;
        if (strcmp(neo->valuestring, param->valuestring) == 0)
            return 1;
        if (p->type != COL_JSON)
            return 0;
        /* same document written another way (json keeps the text) */
        ja = cJSON_Parse(neo->valuestring);
        jb = cJSON_Parse(param->valuestring);
        same = ja && jb && cJSON_Compare(ja, jb, 1);
        cJSON_Delete(ja);
        cJSON_Delete(jb);
        return same;
    }
    if (p->type == COL_BOOL)
        return cJSON_IsBool(neo) && cJSON_IsTrue(neo) == cJSON_IsTrue(param);
    if (p->type == COL_TEXT_ARRAY)
        return cJSON_IsArray(neo) && cJSON_Compare(neo, param, 1);
    return cJSON_IsNumber(neo) && cJSON_IsNumber(param) &&
           neo->valuedouble == param->valuedouble;
}
