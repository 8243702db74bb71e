#include "retry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"

int64_t retry_delay_ms(const struct retry_policy *policy, int attempt)
{
    int64_t delay = policy->initial_ms > 0 ? policy->initial_ms : 1;
    int64_t max = policy->max_ms > delay ? policy->max_ms : delay;

    for (int i = 0; i < attempt && delay < max; i++)
        delay *= 2;
    if (delay > max)
        delay = max;
    return delay / 2 + rand() % (delay / 2 + 1);
}

int retry_backoff(const struct retry_policy *policy,
                  const struct retry_poller *poller, int attempt,
                  const char *what)
{
    int64_t delay = retry_delay_ms(policy, attempt);
    int64_t until, now;
    int gave_up = 0;

    log_msg(NS_LOG_WARN, "%s; retry %d in %lld ms", what, attempt + 1,
            (long long)delay);
    if (poller && poller->pause)
        poller->pause(poller->opaque, 1);
    until = metrics_now_ms() + delay;
    /* the poller is asked at least once, however short the delay: a stop
     * or a rebalance must end a loop of quick retries too */
    do {
        now = metrics_now_ms();
        int slice = until - now > 100 ? 100 : until > now ? (int)(until - now)
                                                         : 0;

        if (poller && poller->poll)
            gave_up = poller->poll(poller->opaque, slice);
        else
            nanosleep(&(struct timespec){0, (long)slice * 1000000L}, NULL);
    } while (!gave_up && metrics_now_ms() < until);
    if (poller && poller->pause)
        poller->pause(poller->opaque, 0);
    return gave_up;
}

enum ns_err retry_run(const struct retry_policy *policy,
                      const struct retry_poller *poller, enum ns_err prior,
                      const char *what, retry_op op, void *arg, char *errstr,
                      size_t errstr_size)
{
    struct retry_state state = {0, 0};
    char *last = NULL;
    enum ns_err err = prior;

    for (;; state.attempt++) {
        char line[1200];

        if (state.attempt > 0 || !prior)
            err = op(arg, &state, errstr, errstr_size);
        if (!err || !ns_err_is_retriable(err))
            break;
        if (last && strcmp(last, errstr) == 0) {
            state.same_in_a_row++;
        } else {
            free(last);
            last = strdup(errstr);  /* without memory, nothing repeats */
            state.same_in_a_row = 1;
        }
        snprintf(line, sizeof(line), "%s: %.1000s", what, errstr);
        if (retry_backoff(policy, poller, state.attempt, line)) {
            ns_err_set(errstr, errstr_size, "gave up (stopping or "
                       "rebalanced) after: %.1000s", line);
            break;
        }
    }
    free(last);
    return err;
}
