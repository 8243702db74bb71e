/*
 * convert_numeric.c - a numeric column value as Debezium writes it, turned
 * into the double the Cypher parameter carries.
 *
 * Owns the numeric forms: a JSON number, the base64 big-endian two's
 * complement unscaled integer of decimal.handling.mode=precise (scale from
 * the schema, or from a VariableScaleDecimal object), and the decimal text
 * of decimal.handling.mode=string. The unscaled integer is written out in
 * decimal and read back with strtod, so the double is the nearest to the
 * exact value whatever its length (up to CONVERT_NUMERIC_MAX_BYTES).
 * convert.c dispatches here and keeps the other column types.
 */
#include "convert_numeric.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

/* Largest |scale| accepted for a numeric; PostgreSQL's display scale stops
 * at 16383. */
#define CONVERT_NUMERIC_SCALE_MAX 16383

/* Longest decoded numeric accepted, bytes. A double cannot hold more than
 * about 309 + CONVERT_NUMERIC_SCALE_MAX significant decimal digits anyway. */
#define CONVERT_NUMERIC_MAX_BYTES 8192

static enum ns_err convert_numeric_nomem(char *errstr, size_t errstr_size)
{
    ns_err_set(errstr, errstr_size, "out of memory converting a value");
    return NS_ERR_NOMEM;
}

static int convert_numeric_is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static enum ns_err convert_numeric_out(double d, cJSON **out, char *errstr,
                                       size_t errstr_size)
{
    *out = cJSON_CreateNumber(d);
    if (!*out)
        return convert_numeric_nomem(errstr, errstr_size);
    return NS_OK;
}

int convert_numeric_to_int64(double d, int64_t *out)
{
    /* -2^63 is exact in a double; 2^63 is the first value past INT64_MAX. */
    if (!isfinite(d) || d != floor(d) || d < -9223372036854775808.0 ||
        d >= 9223372036854775808.0)
        return -1;
    *out = (int64_t)d;
    return 0;
}

static int convert_numeric_b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/*
 * Non-zero when s (n bytes) is padded standard base64, what Jackson writes
 * for Kafka Connect bytes, and not empty.
 */
static int convert_numeric_b64_valid(const char *s, size_t n)
{
    size_t i, pad = 0;

    if (n == 0 || n % 4 != 0)
        return 0;
    if (s[n - 1] == '=')
        pad = s[n - 2] == '=' ? 2 : 1;
    for (i = 0; i < n - pad; i++)
        if (convert_numeric_b64val(s[i]) < 0)
            return 0;
    return 1;
}

/* Decode base64 that passed convert_numeric_b64_valid into dst, which holds
 * n / 4 * 3 bytes. Returns the decoded length. */
static size_t convert_numeric_b64_decode(const char *s, size_t n,
                                         unsigned char *dst)
{
    size_t i, o = 0, pad;
    int q[4], k;

    pad = s[n - 1] != '=' ? 0 : s[n - 2] == '=' ? 2 : 1;
    for (i = 0; i < n; i += 4) {
        for (k = 0; k < 4; k++)
            q[k] = i + (size_t)k < n - pad
                       ? convert_numeric_b64val(s[i + (size_t)k]) : 0;
        dst[o++] = (unsigned char)(q[0] << 2 | q[1] >> 4);
        if (i + 4 < n || pad < 2)
            dst[o++] = (unsigned char)((q[1] & 0xf) << 4 | q[2] >> 2);
        if (i + 4 < n || pad < 1)
            dst[o++] = (unsigned char)((q[2] & 0x3) << 6 | q[3]);
    }
    return o;
}

/*
 * A big-endian two's complement integer of n bytes times 10^-scale, as a
 * double. The integer is written out in decimal and handed to strtod with
 * an exponent, so the result is the double nearest the exact value.
 */
static enum ns_err convert_numeric_unscaled(unsigned char *bytes, size_t n,
                                            int scale, double *out,
                                            char *errstr, size_t errstr_size)
{
    uint32_t *limbs = NULL;     /* base 10^9, least significant first */
    size_t nlimbs = 0, i, j;
    struct buf text;
    int negative = bytes[0] & 0x80;
    enum ns_err err = NS_OK;
    char *end;
    double d;

    buf_init(&text, (n * 5 / 2) + 64);
    if (negative) {
        /* Magnitude of a negative value: invert and add one. */
        unsigned carry = 1;

        for (i = n; i-- > 0;) {
            unsigned b = (unsigned)(unsigned char)~bytes[i] + carry;

            bytes[i] = (unsigned char)b;
            carry = b >> 8;
        }
    }
    limbs = malloc(((n * 8) / 29 + 2) * sizeof(*limbs));
    if (!limbs) {
        err = convert_numeric_nomem(errstr, errstr_size);
        goto cleanup;
    }
    for (i = 0; i < n; i++) {
        uint64_t carry = bytes[i];

        for (j = 0; j < nlimbs; j++) {
            uint64_t t = (uint64_t)limbs[j] * 256 + carry;

            limbs[j] = (uint32_t)(t % 1000000000u);
            carry = t / 1000000000u;
        }
        if (carry)
            limbs[nlimbs++] = (uint32_t)carry;
    }
    err = buf_adds(&text, negative ? "-" : "");
    if (!err)
        err = buf_addf(&text, "%u", nlimbs ? limbs[nlimbs - 1] : 0u);
    for (i = nlimbs > 1 ? nlimbs - 1 : 0; !err && i-- > 0;)
        err = buf_addf(&text, "%09u", limbs[i]);
    if (!err)
        err = buf_addf(&text, "e%d", -scale);
    if (err) {
        if (err == NS_ERR_NOMEM)
            convert_numeric_nomem(errstr, errstr_size);
        else
            ns_err_set(errstr, errstr_size,
                           "numeric value is too long to format");
        goto cleanup;
    }
    d = strtod(buf_str(&text), &end);
    /* An underflow still gives the nearest double (0 or subnormal). */
    if (*end != '\0' || !isfinite(d)) {
        ns_err_set(errstr, errstr_size,
                       "numeric value is out of the range of a double");
        err = NS_ERR_SCHEMA;
        goto cleanup;
    }
    *out = d;

cleanup:
    free(limbs);
    buf_free(&text);
    return err;
}

/* Decode base64 s (already checked by convert_numeric_b64_valid) and scale
 * it. */
static enum ns_err convert_numeric_b64(const char *s, int scale, double *out,
                                       char *errstr, size_t errstr_size)
{
    size_t n = strlen(s), len;
    unsigned char *bytes = NULL;
    enum ns_err err;
    size_t pad = n >= 2 ? (s[n - 1] == '=') + (s[n - 2] == '=') : 0;

    if (n / 4 * 3 - pad > CONVERT_NUMERIC_MAX_BYTES) {
        ns_err_set(errstr, errstr_size,
                       "numeric value is longer than %d bytes",
                       CONVERT_NUMERIC_MAX_BYTES);
        return NS_ERR_SCHEMA;
    }
    bytes = n >= 4 ? malloc(n / 4 * 3) : NULL;
    if (!bytes)
        return convert_numeric_nomem(errstr, errstr_size);
    len = convert_numeric_b64_decode(s, n, bytes);
    if (len == 0) {
        ns_err_set(errstr, errstr_size, "numeric value is empty");
        err = NS_ERR_SCHEMA;
    } else {
        err = convert_numeric_unscaled(bytes, len, scale, out, errstr,
                                       errstr_size);
    }
    free(bytes);
    return err;
}

/* -?digits(.digits*)?([eE][+-]?digits)? as PostgreSQL or Debezium's
 * decimal.handling.mode=string writes it. */
static int convert_numeric_is_decimal(const char *s)
{
    if (*s == '-')
        s++;
    if (!convert_numeric_is_digit(*s))
        return 0;
    while (convert_numeric_is_digit(*s))
        s++;
    if (*s == '.') {
        s++;
        while (convert_numeric_is_digit(*s))
            s++;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        if (!convert_numeric_is_digit(*s))
            return 0;
        while (convert_numeric_is_digit(*s))
            s++;
    }
    return *s == '\0';
}

static enum ns_err convert_numeric_decimal_string(const char *s,
                                                  double *out, char *errstr,
                                                  size_t errstr_size)
{
    double d;

    d = strtod(s, NULL);
    if (!isfinite(d)) {
        ns_err_set(errstr, errstr_size,
                       "numeric value is out of the range of a double");
        return NS_ERR_SCHEMA;
    }
    *out = d;
    return NS_OK;
}

/*
 * numeric: a JSON number as is; {"scale": s, "value": base64}
 * (VariableScaleDecimal, its own scale wins); or a string. With a known
 * scale a string that is valid base64 is the unscaled integer
 * (decimal.handling.mode=precise), so "1234" is base64 there; any other
 * string must be a decimal number (decimal.handling.mode=string). Without
 * a scale a string must be a decimal number.
 */
enum ns_err convert_numeric_value(const struct cJSON *v, int scale,
                                  struct cJSON **out, char *errstr,
                                  size_t errstr_size)
{
    const cJSON *vs, *vv;
    const char *s;
    double d;
    int64_t vscale;
    enum ns_err err;

    if (cJSON_IsNumber(v)) {
        if (!isfinite(v->valuedouble)) {
            ns_err_set(errstr, errstr_size,
                           "numeric value is out of the range of a double");
            return NS_ERR_SCHEMA;
        }
        return convert_numeric_out(v->valuedouble, out, errstr, errstr_size);
    }
    if (cJSON_IsObject(v)) {
        vs = cJSON_GetObjectItemCaseSensitive(v, "scale");
        vv = cJSON_GetObjectItemCaseSensitive(v, "value");
        if (!cJSON_IsNumber(vs) ||
            convert_numeric_to_int64(vs->valuedouble, &vscale) != 0 ||
            vscale < -CONVERT_NUMERIC_SCALE_MAX ||
            vscale > CONVERT_NUMERIC_SCALE_MAX) {
            ns_err_set(errstr, errstr_size,
                           "numeric object needs an integral \"scale\" "
                           "within -%d..%d", CONVERT_NUMERIC_SCALE_MAX,
                           CONVERT_NUMERIC_SCALE_MAX);
            return NS_ERR_SCHEMA;
        }
        if (!cJSON_IsString(vv) || !vv->valuestring ||
            !convert_numeric_b64_valid(vv->valuestring,
                                       strlen(vv->valuestring))) {
            ns_err_set(errstr, errstr_size,
                           "numeric object needs a base64 string \"value\"");
            return NS_ERR_SCHEMA;
        }
        err = convert_numeric_b64(vv->valuestring, (int)vscale, &d, errstr,
                                  errstr_size);
        if (err)
            return err;
        return convert_numeric_out(d, out, errstr, errstr_size);
    }
    if (!cJSON_IsString(v) || !v->valuestring) {
        /* convert_value names the JSON kind before it calls here. */
        ns_err_set(errstr, errstr_size,
                   "numeric value is not a number, an object or a string");
        return NS_ERR_SCHEMA;
    }
    s = v->valuestring;
    if (strcmp(s, "NaN") == 0 || strcmp(s, "Infinity") == 0 ||
        strcmp(s, "-Infinity") == 0) {
        ns_err_set(errstr, errstr_size,
                       "numeric value %s has no JSON representation", s);
        return NS_ERR_SCHEMA;
    }
    if (scale > CONVERT_NUMERIC_SCALE_MAX) {
        ns_err_set(errstr, errstr_size,
                       "numeric scale %d is larger than %d", scale,
                       CONVERT_NUMERIC_SCALE_MAX);
        return NS_ERR_SCHEMA;
    }
    if (scale >= 0 && convert_numeric_b64_valid(s, strlen(s)))
        err = convert_numeric_b64(s, scale, &d, errstr, errstr_size);
    else if (convert_numeric_is_decimal(s))
        err = convert_numeric_decimal_string(s, &d, errstr, errstr_size);
    else if (convert_numeric_b64_valid(s, strlen(s))) {
        ns_err_set(errstr, errstr_size,
                       "numeric value is base64 but its scale is unknown");
        err = NS_ERR_SCHEMA;
    } else {
        ns_err_set(errstr, errstr_size,
                       "numeric value is not base64 nor a decimal number");
        err = NS_ERR_SCHEMA;
    }
    if (err)
        return err;
    return convert_numeric_out(d, out, errstr, errstr_size);
}
