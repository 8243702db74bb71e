/*
 * fuzz_neo4j_query - libFuzzer entry point for the Query API's answers and
 * the discovery document (neo4j_query.c).
 *
 * One input is one HTTP answer body: read as a Query API answer (into the
 * tx/commit results shape, its error, its transaction id) and as a
 * discovery document. The result is printed and freed, so LeakSanitizer
 * catches a lost tree and ASan a bad move between the trees.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "neo4j_query.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct neo4j_query_answer ans = {0};
    struct neo4j_query_discovery d;
    char errstr[256];
    char *text;

    if (neo4j_query_answer_read((const char *)data, size, &ans, errstr,
                                sizeof(errstr)) == NS_OK) {
        text = cJSON_PrintUnformatted(ans.result);
        free(text);
    }
    neo4j_query_answer_clear(&ans);
    (void)neo4j_query_discovery_read((const char *)data, size, &d, errstr,
                                     sizeof(errstr));
    return 0;
}
