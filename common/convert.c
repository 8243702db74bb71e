/*
 * convert.c - Debezium column values to Cypher parameter values.
 *
 * Every conversion is strict: a value of the wrong JSON type, out of range
 * or malformed is NS_ERR_SCHEMA with a reason, never a silent default. JSON
 * null converts to JSON null for every type. Temporal values are produced
 * with integer arithmetic (proleptic Gregorian calendar), not gmtime(), so
 * results do not depend on time_t width or the process time zone; years
 * 0000-9999 are supported, the range ISO-8601 writes with four digits.
 * Owns the type names and convert_value()'s dispatch and converts every
 * type but numeric, which convert_numeric.c turns into a double.
 */
#include "convert.h"

#include <ctype.h>
#include <errno.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert_numeric.h"

/* Days from 1970-01-01 to 0000-01-01 and to 9999-12-31. */
#define CONVERT_DAYS_MIN (-719528LL)
#define CONVERT_DAYS_MAX 2932896LL

#define CONVERT_US_PER_DAY 86400000000LL

static const char *const convert_names[COL__COUNT] = {
    "uuid",      "text",        "enum", "int",     "float",
    "bool",      "json",        "timestamptz",     "timestamp",
    "date",      "numeric",     "text_array"};

const char *convert_type_name(enum col_type type)
{
    if ((int)type < 0 || type >= COL__COUNT)
        return "unknown";
    return convert_names[type];
}

int convert_type_parse(const char *name)
{
    int i;

    if (!name)
        return -1;
    for (i = 0; i < COL__COUNT; i++)
        if (strcmp(name, convert_names[i]) == 0)
            return i;
    return -1;
}

static int convert_is_placeholder(const cJSON *v)
{
    return cJSON_IsString(v) && v->valuestring &&
           strcmp(v->valuestring, CONVERT_UNAVAILABLE) == 0;
}

/* Debezium writes the placeholder itself for scalars and a one-element
 * array holding it for an unchanged TOASTed array. */
int convert_is_unavailable(const struct cJSON *v)
{
    if (convert_is_placeholder(v))
        return 1;
    return cJSON_IsArray(v) && cJSON_GetArraySize(v) == 1 &&
           convert_is_placeholder(v->child);
}

const char *convert_json_kind(const cJSON *v)
{
    if (cJSON_IsNull(v))
        return "null";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsObject(v))
        return "an object";
    return "an unknown JSON type";
}

static enum ns_err convert_wrong_type(const cJSON *v, enum col_type type,
                                      char *errstr, size_t errstr_size)
{
    ns_err_set(errstr, errstr_size, "column value for type %s is %s",
                   convert_type_name(type), convert_json_kind(v));
    return NS_ERR_SCHEMA;
}

static enum ns_err convert_nomem(char *errstr, size_t errstr_size)
{
    ns_err_set(errstr, errstr_size, "out of memory converting a value");
    return NS_ERR_NOMEM;
}

static int convert_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int convert_hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Floor division for a possibly negative numerator, positive divisor. */
static int64_t convert_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    if ((a % b) != 0 && a < 0)
        q--;
    return q;
}

/*
 * Civil date from days since 1970-01-01 (H. Hinnant's days_from_civil
 * inverse). days must be within CONVERT_DAYS_MIN..CONVERT_DAYS_MAX.
 */
static void convert_civil(int64_t days, int *year, int *month, int *day)
{
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int64_t d = doy - (153 * mp + 2) / 5 + 1;
    int64_t m = mp < 10 ? mp + 3 : mp - 9;
    int64_t y = yoe + era * 400 + (m <= 2);

    *year = (int)y;
    *month = (int)m;
    *day = (int)d;
}

int convert_iso_from_micros(int64_t us, int zulu, char *out, size_t size)
{
    int64_t days = convert_floor_div(us, CONVERT_US_PER_DAY), tod;
    int year, month, day;

    if (days < CONVERT_DAYS_MIN || days > CONVERT_DAYS_MAX)
        return -1;
    tod = us - days * CONVERT_US_PER_DAY;
    convert_civil(days, &year, &month, &day);
    snprintf(out, size, "%04d-%02d-%02dT%02d:%02d:%02d.%06d%s", year, month,
             day, (int)(tod / 3600000000LL), (int)(tod / 60000000LL % 60),
             (int)(tod / 1000000LL % 60), (int)(tod % 1000000LL),
             zulu ? "Z" : "");
    return 0;
}

static int convert_days_in_month(int year, int month)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30,
                                 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

    return month == 2 && leap ? 29 : days[month - 1];
}

/*
 * Non-zero when s starts with a real calendar date YYYY-MM-DD. When
 * date_only, nothing may follow; otherwise what follows must be the end,
 * 'T' or ' ' (the time part is not checked further).
 */
static int convert_iso_date_ok(const char *s, int date_only)
{
    int i, year, month, day;

    for (i = 0; i < 10; i++) {
        if (i == 4 || i == 7) {
            if (s[i] != '-')
                return 0;
        } else if (!convert_is_digit(s[i])) {
            return 0;
        }
    }
    year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 +
           (s[3] - '0');
    month = (s[5] - '0') * 10 + (s[6] - '0');
    day = (s[8] - '0') * 10 + (s[9] - '0');
    if (month < 1 || month > 12 || day < 1 ||
        day > convert_days_in_month(year, month))
        return 0;
    if (date_only)
        return s[10] == '\0';
    return s[10] == '\0' || s[10] == 'T' || s[10] == ' ';
}

static enum ns_err convert_string_out(const char *s, cJSON **out,
                                      char *errstr, size_t errstr_size)
{
    *out = cJSON_CreateString(s);
    if (!*out)
        return convert_nomem(errstr, errstr_size);
    return NS_OK;
}

static enum ns_err convert_number_out(double d, cJSON **out, char *errstr,
                                      size_t errstr_size)
{
    *out = cJSON_CreateNumber(d);
    if (!*out)
        return convert_nomem(errstr, errstr_size);
    return NS_OK;
}

static enum ns_err convert_uuid(const cJSON *v, cJSON **out, char *errstr,
                                size_t errstr_size)
{
    char lower[37];
    const char *s;
    size_t i;

    if (!cJSON_IsString(v) || !v->valuestring)
        return convert_wrong_type(v, COL_UUID, errstr, errstr_size);
    s = v->valuestring;
    for (i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                goto bad;
            lower[i] = '-';
        } else {
            if (convert_hexval(s[i]) < 0)
                goto bad;
            lower[i] = "0123456789abcdef"[convert_hexval(s[i])];
        }
    }
    if (s[36] != '\0')
        goto bad;
    lower[36] = '\0';
    /* PostgreSQL writes lower case; normalise so keys always match. */
    return convert_string_out(lower, out, errstr, errstr_size);

bad:
    ns_err_set(errstr, errstr_size,
                   "uuid value is not in the form "
                   "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx");
    return NS_ERR_SCHEMA;
}

static enum ns_err convert_int(const cJSON *v, cJSON **out, char *errstr,
                               size_t errstr_size)
{
    int64_t i;

    if (!cJSON_IsNumber(v))
        return convert_wrong_type(v, COL_INT, errstr, errstr_size);
    if (!isfinite(v->valuedouble)) {
        ns_err_set(errstr, errstr_size, "int value is out of range");
        return NS_ERR_SCHEMA;
    }
    if (v->valuedouble != floor(v->valuedouble)) {
        ns_err_set(errstr, errstr_size, "int value %.17g is not integral",
                       v->valuedouble);
        return NS_ERR_SCHEMA;
    }
    if (convert_numeric_to_int64(v->valuedouble, &i) != 0) {
        ns_err_set(errstr, errstr_size,
                       "int value %.17g does not fit 64 bits", v->valuedouble);
        return NS_ERR_SCHEMA;
    }
    return convert_number_out((double)i, out, errstr, errstr_size);
}

static enum ns_err convert_float(const cJSON *v, cJSON **out, char *errstr,
                                 size_t errstr_size)
{
    if (cJSON_IsString(v) && v->valuestring &&
        (strcmp(v->valuestring, "NaN") == 0 ||
         strcmp(v->valuestring, "Infinity") == 0 ||
         strcmp(v->valuestring, "-Infinity") == 0)) {
        ns_err_set(errstr, errstr_size,
                       "float value %s has no JSON representation",
                       v->valuestring);
        return NS_ERR_SCHEMA;
    }
    if (!cJSON_IsNumber(v))
        return convert_wrong_type(v, COL_FLOAT, errstr, errstr_size);
    if (!isfinite(v->valuedouble)) {
        ns_err_set(errstr, errstr_size, "float value is out of range");
        return NS_ERR_SCHEMA;
    }
    return convert_number_out(v->valuedouble, out, errstr, errstr_size);
}

static enum ns_err convert_json(const cJSON *v, cJSON **out, char *errstr,
                                size_t errstr_size)
{
    char *text = NULL;
    enum ns_err err;

    if (cJSON_IsString(v) && v->valuestring)
        return convert_string_out(v->valuestring, out, errstr, errstr_size);
    if (cJSON_IsNumber(v) && !isfinite(v->valuedouble)) {
        ns_err_set(errstr, errstr_size, "json value is out of range");
        return NS_ERR_SCHEMA;
    }
    if (!cJSON_IsObject(v) && !cJSON_IsArray(v) && !cJSON_IsNumber(v) &&
        !cJSON_IsBool(v))
        return convert_wrong_type(v, COL_JSON, errstr, errstr_size);
    /* A document that arrived parsed (not as Debezium's string) travels
     * as its compact text, the same form a json column would carry. */
    text = cJSON_PrintUnformatted(v);
    if (!text)
        return convert_nomem(errstr, errstr_size);
    err = convert_string_out(text, out, errstr, errstr_size);
    cJSON_free(text);
    return err;
}

static enum ns_err convert_timestamptz(const cJSON *v, cJSON **out,
                                       char *errstr, size_t errstr_size)
{
    if (!cJSON_IsString(v) || !v->valuestring)
        return convert_wrong_type(v, COL_TIMESTAMPTZ, errstr, errstr_size);
    if (!convert_iso_date_ok(v->valuestring, 0)) {
        ns_err_set(errstr, errstr_size,
                       "timestamptz value does not start with a valid "
                       "YYYY-MM-DD date");
        return NS_ERR_SCHEMA;
    }
    return convert_string_out(v->valuestring, out, errstr, errstr_size);
}

static enum ns_err convert_timestamp(const cJSON *v, cJSON **out,
                                     char *errstr, size_t errstr_size)
{
    int64_t us;
    char iso[40];

    if (cJSON_IsString(v) && v->valuestring) {
        if (!convert_iso_date_ok(v->valuestring, 0)) {
            ns_err_set(errstr, errstr_size,
                           "timestamp value does not start with a valid "
                           "YYYY-MM-DD date");
            return NS_ERR_SCHEMA;
        }
        return convert_string_out(v->valuestring, out, errstr, errstr_size);
    }
    if (!cJSON_IsNumber(v))
        return convert_wrong_type(v, COL_TIMESTAMP, errstr, errstr_size);
    if (convert_numeric_to_int64(v->valuedouble, &us) != 0) {
        ns_err_set(errstr, errstr_size,
                       "timestamp value is not an integral number of "
                       "microseconds within 64 bits");
        return NS_ERR_SCHEMA;
    }
    if (convert_iso_from_micros(us, 0, iso, sizeof(iso)) != 0) {
        ns_err_set(errstr, errstr_size,
                       "timestamp %lld us is outside years 0000-9999",
                       (long long)us);
        return NS_ERR_SCHEMA;
    }
    return convert_string_out(iso, out, errstr, errstr_size);
}

static enum ns_err convert_date(const cJSON *v, cJSON **out, char *errstr,
                                size_t errstr_size)
{
    int64_t days;
    int year, month, day;
    char iso[16];

    if (cJSON_IsString(v) && v->valuestring) {
        if (!convert_iso_date_ok(v->valuestring, 1)) {
            ns_err_set(errstr, errstr_size,
                           "date value is not a valid YYYY-MM-DD date");
            return NS_ERR_SCHEMA;
        }
        return convert_string_out(v->valuestring, out, errstr, errstr_size);
    }
    if (!cJSON_IsNumber(v))
        return convert_wrong_type(v, COL_DATE, errstr, errstr_size);
    if (convert_numeric_to_int64(v->valuedouble, &days) != 0) {
        ns_err_set(errstr, errstr_size,
                       "date value is not an integral number of days");
        return NS_ERR_SCHEMA;
    }
    if (days < CONVERT_DAYS_MIN || days > CONVERT_DAYS_MAX) {
        ns_err_set(errstr, errstr_size,
                       "date %lld days is outside years 0000-9999",
                       (long long)days);
        return NS_ERR_SCHEMA;
    }
    convert_civil(days, &year, &month, &day);
    snprintf(iso, sizeof(iso), "%04d-%02d-%02d", year, month, day);
    return convert_string_out(iso, out, errstr, errstr_size);
}

static enum ns_err convert_text_array(const cJSON *v, cJSON **out,
                                      char *errstr, size_t errstr_size)
{
    cJSON *arr = NULL, *item = NULL;
    const cJSON *el;
    size_t i = 0;
    enum ns_err err = NS_OK;

    if (!cJSON_IsArray(v))
        return convert_wrong_type(v, COL_TEXT_ARRAY, errstr, errstr_size);
    arr = cJSON_CreateArray();
    if (!arr)
        return convert_nomem(errstr, errstr_size);
    cJSON_ArrayForEach(el, v) {
        if (cJSON_IsNull(el)) {
            item = cJSON_CreateNull();
        } else if (cJSON_IsString(el) && el->valuestring) {
            item = cJSON_CreateString(el->valuestring);
        } else {
            ns_err_set(errstr, errstr_size,
                           "text_array element %zu is %s, not a string or "
                           "null", i, convert_json_kind(el));
            err = NS_ERR_SCHEMA;
            goto cleanup;
        }
        if (!item) {
            err = convert_nomem(errstr, errstr_size);
            goto cleanup;
        }
        cJSON_AddItemToArray(arr, item);   /* arr adopts item */
        item = NULL;
        i++;
    }
    *out = arr;
    arr = NULL;

cleanup:
    cJSON_Delete(arr);
    return err;
}

enum ns_err convert_value(const struct cJSON *v, enum col_type type,
                          int scale, struct cJSON **out, char *errstr,
                          size_t errstr_size)
{
    if (errstr && errstr_size)
        errstr[0] = '\0';
    if (!out) {
        ns_err_set(errstr, errstr_size, "no place for the value");
        return NS_ERR_SCHEMA;
    }
    *out = NULL;
    if ((int)type < 0 || type >= COL__COUNT) {
        ns_err_set(errstr, errstr_size, "unknown column type %d",
                       (int)type);
        return NS_ERR_SCHEMA;
    }
    if (!v || cJSON_IsNull(v)) {
        *out = cJSON_CreateNull();
        return *out ? NS_OK : convert_nomem(errstr, errstr_size);
    }
    if (convert_is_unavailable(v)) {
        ns_err_set(errstr, errstr_size,
                       "value is the unchanged-TOAST placeholder "
                       CONVERT_UNAVAILABLE "; callers must skip the column");
        return NS_ERR_SCHEMA;
    }
    switch (type) {
    case COL_UUID:
        return convert_uuid(v, out, errstr, errstr_size);
    case COL_TEXT:
    case COL_ENUM:
        if (!cJSON_IsString(v) || !v->valuestring)
            return convert_wrong_type(v, type, errstr, errstr_size);
        return convert_string_out(v->valuestring, out, errstr, errstr_size);
    case COL_INT:
        return convert_int(v, out, errstr, errstr_size);
    case COL_FLOAT:
        return convert_float(v, out, errstr, errstr_size);
    case COL_BOOL:
        if (!cJSON_IsBool(v))
            return convert_wrong_type(v, type, errstr, errstr_size);
        *out = cJSON_CreateBool(cJSON_IsTrue(v));
        return *out ? NS_OK : convert_nomem(errstr, errstr_size);
    case COL_JSON:
        return convert_json(v, out, errstr, errstr_size);
    case COL_TIMESTAMPTZ:
        return convert_timestamptz(v, out, errstr, errstr_size);
    case COL_TIMESTAMP:
        return convert_timestamp(v, out, errstr, errstr_size);
    case COL_DATE:
        return convert_date(v, out, errstr, errstr_size);
    case COL_NUMERIC:
        if (!cJSON_IsNumber(v) && !cJSON_IsObject(v) &&
            (!cJSON_IsString(v) || !v->valuestring))
            return convert_wrong_type(v, type, errstr, errstr_size);
        return convert_numeric_value(v, scale, out, errstr, errstr_size);
    case COL_TEXT_ARRAY:
        return convert_text_array(v, out, errstr, errstr_size);
    case COL__COUNT:
        break;
    }
    ns_err_set(errstr, errstr_size, "unknown column type %d", (int)type);
    return NS_ERR_SCHEMA;
}

/* Digits of s[0..n) as a number; -1 when not all digits. */
static int digits(const char *s, int n)
{
    int v = 0;

    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int convert_time_parse(const char *s, int64_t *out)
{
    struct tm tm;
    int64_t ms = 0, offset_min = 0;
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, sec = 0;
    time_t t;

    if (*s && strspn(s, "0123456789") == strlen(s))
    {
        char *end;
        long long v;

        errno = 0;
        v = strtoll(s, &end, 10);
        if (errno || end == s || *end)
            return -1;
        *out = v;
        return 0;
    }
    if (strlen(p) < 10 || p[4] != '-' || p[7] != '-')
        return -1;
    y = digits(p, 4);
    mo = digits(p + 5, 2);
    d = digits(p + 8, 2);
    p += 10;
    if (*p == 'T' || *p == ' ') {
        if (strlen(p) < 6 || p[3] != ':')
            return -1;
        h = digits(p + 1, 2);
        mi = digits(p + 4, 2);
        p += 6;
        if (*p == ':') {
            sec = digits(p + 1, 2);
            p += 3;
            if (*p == '.') {
                int scale = 100;
                for (p++; isdigit((unsigned char)*p); p++, scale /= 10)
                    ms += (*p - '0') * scale;
            }
        }
    }
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om, sign = *p == '-' ? -1 : 1;
        if (strlen(p) != 6 || p[3] != ':')
            return -1;
        oh = digits(p + 1, 2);
        om = digits(p + 4, 2);
        if (oh < 0 || om < 0)
            return -1;
        offset_min = sign * (oh * 60 + om);
        p += 6;
    }
    if (*p || y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h < 0 ||
        h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 60)
        return -1;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    *out = ((int64_t)t - offset_min * 60) * 1000 + ms;
    return 0;
}
