/*
 * httpd.h - the worker's monitoring endpoints over HTTP (libmicrohttpd).
 *
 *   GET /metrics  Prometheus text format 0.0.4 (metrics.h)
 *   GET /healthz  200 while the consumer loop turns; 503 when it has not
 *                 turned for stuck_ms (the process is alive but stuck)
 *   GET /readyz   200 when partitions are assigned and Neo4j, PostgreSQL
 *                 and Kafka answered the loop's last contact; else 503
 *                 with a one-line reason
 *
 * libmicrohttpd serves from one thread of its own; it only reads the
 * metrics, which are safe to read while the loop writes them.
 */
#ifndef NS_HTTPD_H
#define NS_HTTPD_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "metrics.h"

struct httpd;

/*
 * Listen on bind_addr (IPv4 or IPv6 literal) port and serve m (borrowed;
 * must outlive the server) for worker (copied). NS_ERR_CONFIG for a bad
 * address, NS_ERR_IO when the port cannot be bound; detail in errstr. Stop
 * with httpd_free().
 */
enum ns_err httpd_start(const char *bind_addr, int port, struct metrics *m,
                        const char *worker, int64_t stuck_ms,
                        struct httpd **out, char *errstr, size_t errstr_size);

/* Stop serving (waits for the server thread) and free; NULL ok. */
void httpd_free(struct httpd *h);

#endif
