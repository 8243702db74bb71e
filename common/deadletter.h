/*
 * deadletter.h - the dead items of a batch, sent to the DLQ topic before
 * the batch's offsets can be committed.
 *
 * Sending is retried (with the caller's poller) until every dead letter
 * is acknowledged or the caller gives up: a dead letter is the only copy
 * of its event once the offsets move past it.
 */
#ifndef NS_DEADLETTER_H
#define NS_DEADLETTER_H

#include <stddef.h>
#include <stdint.h>

#include "dlq.h"
#include "err.h"
#include "metrics.h"
#include "prepare.h"
#include "retry.h"

/*
 * Send every dead item of items[0..n) and wait for the broker's
 * acknowledgement; each one is logged once, with its reason. lane_events
 * (LANE__COUNT) feed the retry metrics. NS_OK when all are acknowledged
 * (or none was dead); NS_ERR_KAFKA with errstr when the poller gave up.
 */
enum ns_err deadletter_send(struct dlq *dlq, struct batch_item *items,
                            size_t n, const struct retry_policy *policy,
                            const struct retry_poller *poller,
                            struct metrics *metrics,
                            const uint64_t *lane_events, char *errstr,
                            size_t errstr_size);

#endif
