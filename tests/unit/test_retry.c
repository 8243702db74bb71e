/*
 * test_retry - data-driven tests of retry.c: how retry_run walks a
 * sequence of results, what it tells the operation about repeated
 * failures, when a poller ends the wait, and the delay's bounds.
 *
 * Usage: test_retry [DIR]   (default tests/cases/retry)
 *
 * Every .json file in DIR is one case:
 *   {"prior": "neo4j_transient",       a try the caller made (optional),
 *    "prior_error": "text",            its message
 *    "results": [["neo4j_transient", "A"], ["ok", ""]],
 *                                      what op returns, try by try
 *    "give_up_at_poll": 3,             the poller ends the wait on its
 *                                      Nth call (optional; 0: never)
 *    "expect_err": "ok",               retry_run's result
 *    "expect_tries": 2,                calls of op
 *    "expect_same": [0, 1],            same_in_a_row seen by each call
 *    "expect_error_prefix": "..."}     errstr at the end (optional)
 * Delays use initial 1 ms, max 4 ms. An unknown member fails the case.
 */
#include "retry.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cases.h"

#define CASE_MAX_BYTES (1u << 16)
#define MAX_TRIES 32

struct script {
    const cJSON *results;
    int tries;
    int same[MAX_TRIES];
    int polls;
    int give_up_at_poll;
    int paused;          /* pause(1) and pause(0) must pair */
    int pause_error;
};

static int err_from_name(const char *name, enum ns_err *out)
{
    for (int e = 0; e < NS_ERR__COUNT; e++)
        if (strcmp(ns_err_str((enum ns_err)e), name) == 0 ||
            (e == NS_OK && strcmp(name, "ok") == 0)) {
            *out = (enum ns_err)e;
            return 0;
        }
    return -1;
}

static enum ns_err op(void *arg, const struct retry_state *state,
                      char *errstr, size_t errstr_size)
{
    struct script *s = arg;
    const cJSON *r = cJSON_GetArrayItem(s->results, s->tries);
    enum ns_err err = NS_ERR_CONFIG;

    if (s->tries < MAX_TRIES)
        s->same[s->tries] = state->same_in_a_row;
    s->tries++;
    if (!cJSON_IsArray(r) || cJSON_GetArraySize(r) != 2 ||
        err_from_name(cJSON_GetArrayItem(r, 0)->valuestring, &err)) {
        snprintf(errstr, errstr_size, "script has no result for try %d",
                 s->tries);
        return NS_ERR_CONFIG;
    }
    snprintf(errstr, errstr_size, "%s", cJSON_GetArrayItem(r, 1)->valuestring);
    return err;
}

static void on_pause(void *opaque, int paused)
{
    struct script *s = opaque;

    if (paused == s->paused)
        s->pause_error = 1;
    s->paused = paused;
}

static int on_poll(void *opaque, int timeout_ms)
{
    struct script *s = opaque;

    (void)timeout_ms;
    s->polls++;
    return s->give_up_at_poll && s->polls >= s->give_up_at_poll;
}

static int delays_in_bounds(char *why, size_t why_size)
{
    struct retry_policy p = {100, 1000};

    for (int attempt = 0; attempt < 12; attempt++) {
        int64_t full = attempt >= 4 ? 1000 : 100 << attempt;
        for (int i = 0; i < 200; i++) {
            int64_t d = retry_delay_ms(&p, attempt);
            if (d < full / 2 || d > full) {
                case_why(why, why_size, "delay %lld for attempt %d outside "
                         "[%lld, %lld]", (long long)d, attempt,
                         (long long)(full / 2), (long long)full);
                return -1;
            }
        }
    }
    return 0;
}

static int run_case(const char *path, char *why, size_t why_size)
{
    static const char *const known[] = {
        "prior", "prior_error", "results", "give_up_at_poll", "expect_err",
        "expect_tries", "expect_same", "expect_error_prefix"};
    char *text = case_read_file(path, CASE_MAX_BYTES, NULL);
    cJSON *c = text ? cJSON_Parse(text) : NULL;
    const cJSON *prior, *prior_error, *expect_same, *prefix, *j;
    struct retry_policy policy = {1, 4};
    struct script s;
    struct retry_poller poller = {on_pause, on_poll, &s};
    enum ns_err prior_err = NS_OK, want, got;
    char errstr[256] = "";
    int rc = -1;

    memset(&s, 0, sizeof(s));
    if (!c) {
        case_why(why, why_size, "cannot read or parse the case");
        goto cleanup;
    }
    if (CASE_CHECK_KEYS(c, known, "case", why, why_size) ||
        delays_in_bounds(why, why_size))
        goto cleanup;
    prior = cJSON_GetObjectItemCaseSensitive(c, "prior");
    prior_error = cJSON_GetObjectItemCaseSensitive(c, "prior_error");
    if (prior && (!cJSON_IsString(prior) ||
                  err_from_name(prior->valuestring, &prior_err))) {
        case_why(why, why_size, "bad \"prior\"");
        goto cleanup;
    }
    if (cJSON_IsString(prior_error))
        snprintf(errstr, sizeof(errstr), "%s", prior_error->valuestring);
    s.results = cJSON_GetObjectItemCaseSensitive(c, "results");
    j = cJSON_GetObjectItemCaseSensitive(c, "give_up_at_poll");
    s.give_up_at_poll = cJSON_IsNumber(j) ? j->valueint : 0;
    j = cJSON_GetObjectItemCaseSensitive(c, "expect_err");
    if (!cJSON_IsString(j) || err_from_name(j->valuestring, &want)) {
        case_why(why, why_size, "bad \"expect_err\"");
        goto cleanup;
    }
    got = retry_run(&policy, &poller, prior_err, "testing", op, &s, errstr,
                    sizeof(errstr));
    if (got != want) {
        case_why(why, why_size, "got %s, want %s (%s)", ns_err_str(got),
                 ns_err_str(want), errstr);
        goto cleanup;
    }
    j = cJSON_GetObjectItemCaseSensitive(c, "expect_tries");
    if (!cJSON_IsNumber(j) || j->valueint != s.tries) {
        case_why(why, why_size, "%d tries, want %d", s.tries,
                 cJSON_IsNumber(j) ? j->valueint : -1);
        goto cleanup;
    }
    expect_same = cJSON_GetObjectItemCaseSensitive(c, "expect_same");
    for (int i = 0; i < s.tries && i < MAX_TRIES; i++) {
        const cJSON *e = cJSON_GetArrayItem(expect_same, i);
        if (!cJSON_IsNumber(e) || e->valueint != s.same[i]) {
            case_why(why, why_size, "try %d saw same_in_a_row %d, want %d",
                     i + 1, s.same[i], cJSON_IsNumber(e) ? e->valueint : -1);
            goto cleanup;
        }
    }
    if (s.pause_error || s.paused) {
        case_why(why, why_size, "pause(1) and pause(0) do not pair");
        goto cleanup;
    }
    prefix = cJSON_GetObjectItemCaseSensitive(c, "expect_error_prefix");
    if (cJSON_IsString(prefix) &&
        strncmp(errstr, prefix->valuestring, strlen(prefix->valuestring))) {
        case_why(why, why_size, "errstr \"%s\" does not start with \"%s\"",
                 errstr, prefix->valuestring);
        goto cleanup;
    }
    rc = 0;
cleanup:
    cJSON_Delete(c);
    free(text);
    return rc;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "tests/cases/retry";
    int passed = 0, failed = 0;

    if (case_run_dir(dir, run_case, &passed, &failed) < 0) {
        fprintf(stderr, "test_retry: cannot read %s\n", dir);
        return 1;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
