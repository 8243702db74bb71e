/*
 * retry.h - the one retry loop of the worker: run an operation until it
 * succeeds, fails for good, or the caller gives up, waiting with
 * exponential backoff and jitter between attempts.
 *
 * The helper knows nothing of Kafka: whoever calls it hands over a poller,
 * the function that keeps the caller's world turning while it waits
 * (serving the consumer's poll, which librdkafka needs at least every
 * max.poll.interval.ms). It counts failures that repeat word for word, so
 * the caller can tell a poison pill from an outage.
 */
#ifndef NS_RETRY_H
#define NS_RETRY_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct retry_policy {
    int initial_ms;     /* first delay */
    int max_ms;         /* the delay doubles up to this */
};

/*
 * What a wait keeps turning. pause(opaque, 1) is called before a wait and
 * pause(opaque, 0) after it (either may be NULL); poll(opaque, timeout_ms)
 * is called until the delay has passed and returns non-zero to end the
 * wait early: asked to stop, or the work was taken away (a rebalance).
 * Both run on the caller's thread.
 */
struct retry_poller {
    void (*pause)(void *opaque, int paused);
    int (*poll)(void *opaque, int timeout_ms);
    void *opaque;
};

/* Where a retry loop stands, for the operation to decide how to try. */
struct retry_state {
    int attempt;        /* 0 for the first try */
    int same_in_a_row;  /* how many tries in a row just before this one
                           failed with the same errstr, word for word
                           (0 before the first failure) */
};

/* One try. Returns NS_OK, a retriable error (ns_err_is_retriable) to be
 * tried again, or any other error to give up; writes errstr on failure.
 * After a failure, errstr still holds its message when op is called. */
typedef enum ns_err (*retry_op)(void *arg, const struct retry_state *state,
                                char *errstr, size_t errstr_size);

/* The delay before retry number attempt + 1, with jitter: between half
 * and all of min(initial * 2^attempt, max). */
int64_t retry_delay_ms(const struct retry_policy *policy, int attempt);

/*
 * Wait before retry attempt + 1, logging "<what>; retry N in D ms" at
 * WARN. Returns non-zero when the poller ended the wait early.
 */
int retry_backoff(const struct retry_policy *policy,
                  const struct retry_poller *poller, int attempt,
                  const char *what);

/*
 * Run op until it returns NS_OK or a non-retriable error, waiting between
 * tries; what names the operation in the log ("could not write sync
 * status to PostgreSQL"). prior is NS_OK, or the retriable error of a try
 * the caller made by itself, whose message errstr then holds: the loop
 * starts with the wait. Returns op's last result; when the poller gave
 * up, the last retriable error with errstr saying so.
 */
enum ns_err retry_run(const struct retry_policy *policy,
                      const struct retry_poller *poller, enum ns_err prior,
                      const char *what, retry_op op, void *arg, char *errstr,
                      size_t errstr_size);

#endif
