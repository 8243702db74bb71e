#include "filter.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Index of the --offset entry naming this letter, or -1. */
long offset_index(const struct options *opts, int32_t partition,
                  int64_t offset)
{
    for (size_t i = 0; i < opts->offset_count; i++)
        if (opts->offsets[i].offset == offset &&
            (opts->offsets[i].partition < 0 ||
             opts->offsets[i].partition == partition))
            return (long)i;
    return -1;
}

int letter_matches(const struct options *opts, const struct letter *lt)
{
    if (opts->reason && !strstr(lt->reason, opts->reason) &&
        !strstr(lt->pattern, opts->reason))
        return 0;
    if (opts->error_class && strcmp(lt->error_class, opts->error_class) != 0)
        return 0;
    if (opts->source_topic &&
        strcmp(lt->source_topic, opts->source_topic) != 0)
        return 0;
    if (opts->offset_count &&
        offset_index(opts, lt->partition, lt->offset) < 0)
        return 0;
    return 1;
}

/* "--reason 'x' --class ..." for messages about what matched nothing. */
void filter_describe(const struct options *opts, char *out, size_t out_size)
{
    size_t o = 0;

    out[0] = '\0';
    if (opts->reason)
        o += (size_t)snprintf(out + o, out_size - o, " --reason '%s'",
                              opts->reason);
    if (opts->error_class && o < out_size)
        o += (size_t)snprintf(out + o, out_size - o, " --class '%s'",
                              opts->error_class);
    if (opts->source_topic && o < out_size)
        o += (size_t)snprintf(out + o, out_size - o, " --source-topic '%s'",
                              opts->source_topic);
    for (size_t i = 0; i < opts->offset_count && o < out_size; i++) {
        const struct dlq_pos *pos = &opts->offsets[i];

        o += (size_t)snprintf(out + o, out_size - o, "%s", i ? "," :
                              " --offset ");
        if (pos->partition >= 0 && o < out_size)
            o += (size_t)snprintf(out + o, out_size - o, "%d:",
                                  (int)pos->partition);
        if (o < out_size)
            o += (size_t)snprintf(out + o, out_size - o, "%" PRId64,
                                  pos->offset);
    }
}

enum ns_err select_collect(const rd_kafka_message_t *rkm, void *opaque,
                           char *errstr, size_t errstr_size)
{
    struct select_ctx *ctx = opaque;
    struct letter *lt = letter_new(rkm, 0);
    int match;

    ctx->scanned++;
    if (!lt) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    match = letter_matches(ctx->opts, lt);
    letter_free(lt);
    if (!match)
        return NS_OK;
    lt = letter_new(rkm, 1);
    if (!lt || letters_add(ctx->chosen, lt)) {
        ns_err_set(errstr, errstr_size, "out of memory");
        return NS_ERR_NOMEM;
    }
    return NS_OK;
}

/* Every --offset must name a dead letter that exists. */
int offsets_all_found(const struct options *opts, const struct letters *chosen,
                      const char *topic)
{
    int ok = 1;

    for (size_t i = 0; i < opts->offset_count; i++) {
        int found = 0;

        for (size_t j = 0; j < chosen->n && !found; j++)
            found = offset_index(opts, chosen->v[j]->partition,
                                 chosen->v[j]->offset) == (long)i;
        if (!found) {
            fprintf(stderr, "nexus-dlq: %s has no dead letter at %d:%" PRId64
                    " that matches the other filters\n", topic,
                    (int)(opts->offsets[i].partition < 0
                              ? 0 : opts->offsets[i].partition),
                    opts->offsets[i].offset);
            ok = 0;
        }
    }
    return ok;
}
