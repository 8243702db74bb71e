#include "err.h"

#include <stdarg.h>
#include <stdio.h>

const char *ns_err_str(enum ns_err err)
{
    switch (err) {
    case NS_OK: return "ok";
    case NS_ERR_NOMEM: return "out_of_memory";
    case NS_ERR_LIMIT: return "size_limit";
    case NS_ERR_CONFIG: return "config";
    case NS_ERR_PARSE: return "parse";
    case NS_ERR_SCHEMA: return "schema";
    case NS_ERR_NEO4J_TRANSIENT: return "neo4j_transient";
    case NS_ERR_NEO4J_PERMANENT: return "neo4j_permanent";
    case NS_ERR_PG_TRANSIENT: return "pg_transient";
    case NS_ERR_PG_PERMANENT: return "pg_permanent";
    case NS_ERR_KAFKA: return "kafka";
    case NS_ERR_IO: return "io";
    case NS_ERR__COUNT: break;
    }
    return "unknown";
}

int ns_err_is_retriable(enum ns_err err)
{
    return err == NS_ERR_NEO4J_TRANSIENT || err == NS_ERR_PG_TRANSIENT ||
           err == NS_ERR_KAFKA || err == NS_ERR_NOMEM;
}

void ns_err_set(char *errstr, size_t errstr_size, const char *fmt, ...)
{
    va_list ap;

    if (!errstr || errstr_size == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(errstr, errstr_size, fmt, ap);
    va_end(ap);
}
