#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

void buf_free(struct buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static enum ns_err buf_reserve(struct buf *b, size_t extra)
{
    size_t need, ncap;
    char *p;

    if (extra > b->max || b->len > b->max - extra)
        return NS_ERR_LIMIT;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return NS_OK;
    ncap = b->cap ? b->cap : 256;
    while (ncap < need)
        ncap *= 2;
    if (ncap > b->max + 1)
        ncap = b->max + 1;
    p = realloc(b->data, ncap);
    if (!p)
        return NS_ERR_NOMEM;
    b->data = p;
    b->cap = ncap;
    return NS_OK;
}

enum ns_err buf_add(struct buf *b, const void *data, size_t len)
{
    enum ns_err err = buf_reserve(b, len);

    if (err)
        return err;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return NS_OK;
}

enum ns_err buf_adds(struct buf *b, const char *s)
{
    return buf_add(b, s, strlen(s));
}

enum ns_err buf_vaddf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    int n;
    enum ns_err err;

    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return NS_ERR_IO;
    err = buf_reserve(b, (size_t)n);
    if (err)
        return err;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return NS_OK;
}

enum ns_err buf_addf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    enum ns_err err;

    va_start(ap, fmt);
    err = buf_vaddf(b, fmt, ap);
    va_end(ap);
    return err;
}

const char *buf_str(const struct buf *b)
{
    return b->data ? b->data : "";
}

char *buf_take(struct buf *b)
{
    char *p = b->data;

    if (!p || b->len == 0) {
        buf_free(b);
        return NULL;
    }
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
