/*
 * cases.h - the shared runner of the data-driven unit tests: one case per
 * .json file in a folder, "ok NAME" / "not ok NAME: why" per case.
 */
#ifndef NS_TEST_CASES_H
#define NS_TEST_CASES_H

#include <stddef.h>

struct cJSON;

/* Format a failure reason into why. */
void case_why(char *why, size_t why_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Whole file into a NUL-terminated buffer the caller frees; NULL when it
 * cannot be read or is larger than max. *len (if not NULL) gets its size. */
char *case_read_file(const char *path, size_t max, size_t *len);

/* 0 when every member of c is named in known[0..n); else -1, with
 * "unknown <what> member 'x'" in why. */
int case_check_keys(const struct cJSON *c, const char *const *known, size_t n,
                    const char *what, char *why, size_t why_size);
#define CASE_CHECK_KEYS(c, known, what, why, why_size) \
    case_check_keys((c), (known), sizeof(known) / sizeof((known)[0]), (what), \
                    (why), (why_size))

/* Exact structural equality: numbers compare with ==, keys
 * case-sensitively. */
int case_json_equal(const struct cJSON *a, const struct cJSON *b);

/*
 * Run run() on every .json file of dir in name order, printing one line a
 * case; run returns 0 for a pass, else writes why. Adds to *passed and
 * *failed (a folder without cases is one failure). Returns -1 when dir
 * cannot be read.
 */
int case_run_dir(const char *dir,
                 int (*run)(const char *path, char *why, size_t why_size),
                 int *passed, int *failed);

#endif
