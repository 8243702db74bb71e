/*
 * fuzz_event - libFuzzer entry point for event.c and convert.c.
 *
 * One input is one Kafka message value. It goes through the whole path a
 * worker takes: tombstone test, parse, row image, and every column of the
 * row converted as every column type with the scale the envelope gives.
 * Everything is freed, so LeakSanitizer catches a lost tree.
 */
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "convert.h"
#include "event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_convert_row(const struct event *ev, const cJSON *row)
{
    const cJSON *col;
    cJSON *out = NULL;
    char errstr[256];
    int type, scale;

    cJSON_ArrayForEach(col, row) {
        scale = event_column_scale(ev, col->string);
        (void)convert_is_unavailable(col);
        for (type = 0; type < COL__COUNT; type++) {
            /* With the schema's scale, and with fixed ones, so the base64
             * path is reached from schemaless inputs as well. */
            if (convert_value(col, (enum col_type)type, scale, &out, errstr,
                              sizeof(errstr)) == NS_OK)
                cJSON_Delete(out);
            out = NULL;
            if (type == COL_NUMERIC) {
                if (convert_value(col, COL_NUMERIC, 2, &out, errstr,
                                  sizeof(errstr)) == NS_OK)
                    cJSON_Delete(out);
                out = NULL;
                if (convert_value(col, COL_NUMERIC, -1, &out, NULL, 0) ==
                    NS_OK)
                    cJSON_Delete(out);
                out = NULL;
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct event *ev = NULL;
    char errstr[256];

    (void)event_is_tombstone(data, size);
    if (event_parse(data, size, &ev, errstr, sizeof(errstr)) != NS_OK)
        return 0;
    (void)event_column_scale(ev, "");
    fuzz_convert_row(ev, event_row(ev));
    /* The other image too: an update's before, a create's stray one. */
    if (ev->before != event_row(ev))
        fuzz_convert_row(ev, ev->before);
    event_free(ev);
    return 0;
}
