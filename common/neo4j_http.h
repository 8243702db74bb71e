/*
 * neo4j_http.h - one HTTP request to Neo4j at a time: the curl handle and
 * its options (keep-alive, timeouts, TLS verified, basic auth), the capped
 * request and response bodies, the cluster affinity header, and how a
 * request ended. Both transports (neo4j.c's tx/commit, neo4j_query.c's
 * Query API) send through it; it knows no endpoint.
 */
#ifndef NS_NEO4J_HTTP_H
#define NS_NEO4J_HTTP_H

#include <stddef.h>

#include "buf.h"
#include "err.h"

/*
 * Caps on what one request may send and receive. A batch whose body or
 * response would pass them is refused rather than buffered without end.
 */
#define NEO4J_HTTP_MAX_REQUEST (64u * 1024u * 1024u)
#define NEO4J_HTTP_MAX_RESPONSE (64u * 1024u * 1024u)

/* Connecting to a live server on a LAN takes milliseconds; a refused
 * connection fails at once. Past this a server counts as unreachable. */
#define NEO4J_HTTP_CONNECT_TIMEOUT_MS 3000L

/* How a request (and the last neo4j_run() of a client, neo4j.h) ended. */
enum neo4j_failure {
    NEO4J_FAILURE_NONE = 0,   /* it succeeded, or none ran yet */
    NEO4J_FAILURE_LOCAL,      /* nothing was sent: the request could not be
                                 built (no memory, too large, not JSON) */
    NEO4J_FAILURE_UNREACHED,  /* no answer about the request: connection
                                 refused or reset, timeout, TLS; or HTTP
                                 401, 403, 404, 407, 408, 429 or 5xx
                                 without a Neo4j code (a server or a
                                 gateway says it is unavailable, busy or
                                 wrongly reached, not that the request is
                                 wrong) */
    NEO4J_FAILURE_ANSWERED    /* the server, or a proxy in front, answered
                                 the request with an error: a Neo4j code,
                                 another non-2xx status, a response past
                                 the cap or not the expected JSON */
};

struct neo4j_http;

/*
 * A handle with basic auth (user NULL: none) and a whole-request timeout.
 * Nothing is sent yet. On success *out is the caller's (neo4j_http_free);
 * NS_ERR_NOMEM or NS_ERR_CONFIG (libcurl refused an option) with errstr.
 */
enum ns_err neo4j_http_new(const char *user, const char *password,
                           long timeout_ms, struct neo4j_http **out,
                           char *errstr, size_t errstr_size);

/* Close the connection and free; NULL ok. */
void neo4j_http_free(struct neo4j_http *h);

/* Trust only the CA certificates of the PEM file ca_file (copied by
 * libcurl). NS_ERR_CONFIG when libcurl refuses it. */
enum ns_err neo4j_http_set_ca_file(struct neo4j_http *h, const char *ca_file,
                                   char *errstr, size_t errstr_size);

/* "{url}/db/{db}{tail}" with db escaped, or "{url}{tail}" when db is NULL;
 * url's trailing slashes dropped. The caller frees it; NULL when out of
 * memory. */
char *neo4j_http_url(struct neo4j_http *h, const char *url, const char *db,
                     const char *tail);

/* The request body of the next POST, capped at NEO4J_HTTP_MAX_REQUEST:
 * the caller resets and writes it. Owned by h. */
struct buf *neo4j_http_body(struct neo4j_http *h);

/* The body of the last answer (at most NEO4J_HTTP_MAX_RESPONSE bytes).
 * Owned by h, valid until the next request. */
const struct buf *neo4j_http_answer(const struct neo4j_http *h);

/* The neo4j-cluster-affinity header of the last answer: "" when it had
 * none, NULL when it was too long to keep. Owned by h. */
const char *neo4j_http_affinity(const struct neo4j_http *h);

/*
 * One request to url: method "POST" (the body is neo4j_http_body()),
 * "GET" or "DELETE", with the header neo4j-cluster-affinity when affinity
 * is neither NULL nor "", within timeout_ms (0: the handle's timeout).
 * Only the transfer is judged, into *failure:
 *  - NS_OK: an answer came, *status and neo4j_http_answer() hold it
 *    (ANSWERED);
 *  - NS_ERR_NEO4J_PERMANENT: the answer passed the response cap
 *    (ANSWERED);
 *  - NS_ERR_NEO4J_TRANSIENT: no answer came (UNREACHED);
 *  - NS_ERR_NOMEM: nothing was sent (LOCAL).
 * errstr gets a sentence on failure.
 */
enum ns_err neo4j_http_request(struct neo4j_http *h, const char *method,
                               const char *url, const char *affinity,
                               long timeout_ms, long *status,
                               enum neo4j_failure *failure, char *errstr,
                               size_t errstr_size);

/* A status, without a Neo4j code, that says nothing about the request:
 * the server or a gateway cannot take requests now (408, 429, 5xx), or
 * the way to it is wrong (401, 403, 407 credentials at a gateway, 404 a
 * wrong path). */
int neo4j_http_status_unavailable(long status);

/*
 * A body that could not be written (err from neo4j_body_write or
 * neo4j_query_body_write) in neo4j_run's terms, with errstr: NS_ERR_NOMEM,
 * else NS_ERR_NEO4J_PERMANENT (too large or too deep: the batch must be
 * split; a parameter that is not JSON).
 */
enum ns_err neo4j_http_body_failed(enum ns_err err, char *errstr,
                                   size_t errstr_size);

#endif
