/*
 * worker.h - the life of a worker process, shared by every worker binary.
 *
 * A worker binary is a thin main naming its entity set (the `worker` value
 * of its tables in schemas/mapping.cfg):
 *     int main(int argc, char **argv)
 *     { return worker_main(argc, argv, "thread", "threads and ..."); }
 */
#ifndef NS_WORKER_H
#define NS_WORKER_H

#include "version.h"

/*
 * Parse the command line (--help, --version, --config FILE, --dump-config),
 * load the configuration and mapping, run the consumer loop until SIGTERM
 * or SIGINT. Returns the process exit status: 0 clean stop, 1 runtime
 * failure, 2 usage or configuration error (before any connection, or a
 * Neo4j database that does not exist or credentials it refuses, found by
 * one request at start-up; an unreachable Neo4j is waited for).
 */
int worker_main(int argc, char **argv, const char *worker,
                const char *description);

#endif
