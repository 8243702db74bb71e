/*
 * buf.h - growable text buffer with a hard cap (after curl's dynbuf).
 *
 * Cypher text, HTTP bodies and SQL are assembled here. Reaching the cap is
 * an error (NS_ERR_LIMIT), never an endless realloc. The struct is public
 * so buffers can live on the stack; use the functions to touch it.
 */
#ifndef NS_BUF_H
#define NS_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "err.h"

struct buf {
    char *data;      /* NUL-terminated once anything was added */
    size_t len;
    size_t cap;
    size_t max;      /* hard cap on len, bytes */
};

/* Initialise an empty buffer that may grow to max bytes. */
void buf_init(struct buf *b, size_t max);

/* Release the memory; the buffer may be reused after buf_init. NULL ok. */
void buf_free(struct buf *b);

/* Forget the contents, keep the memory. */
void buf_reset(struct buf *b);

/* Append len bytes / a C string / formatted text. NS_ERR_LIMIT past max. */
enum ns_err buf_add(struct buf *b, const void *data, size_t len);
enum ns_err buf_adds(struct buf *b, const char *s);
enum ns_err buf_addf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
enum ns_err buf_vaddf(struct buf *b, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Contents as a C string; "" for an empty buffer. Owned by the buffer. */
const char *buf_str(const struct buf *b);

/* Hand the contents over to the caller (free() it); the buffer is emptied.
 * Returns NULL for an empty buffer. */
char *buf_take(struct buf *b);

#endif
