/*
 * replay - feed saved fuzz inputs to LLVMFuzzerTestOneInput without
 * libFuzzer, so the corpus runs under gcc's ASan/UBSan in `make test`
 * (the idea of sqlite's test/fuzzcheck.c).
 *
 * Usage: replay DIR_OR_FILE...   Each directory is read one level deep,
 * in name order. Prints "replayed N inputs"; exits 1 when a path cannot
 * be read or nothing was replayed. A sanitizer finding aborts the run.
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Largest input replayed; libFuzzer's own default is 4096. */
#define REPLAY_MAX_BYTES (64u * 1024u * 1024u)

/* Read one file into a buffer of exactly its size, so ASan sees any read
 * past the end of the input, and run it. */
static int replay_file(const char *path)
{
    FILE *f = NULL;
    uint8_t *data = NULL;
    struct stat st;
    size_t n;
    int rc = -1;

    f = fopen(path, "rb");
    if (!f || fstat(fileno(f), &st) != 0 || st.st_size < 0 ||
        (uintmax_t)st.st_size > REPLAY_MAX_BYTES)
        goto cleanup;
    n = (size_t)st.st_size;
    data = malloc(n ? n : 1);
    if (!data || fread(data, 1, n, f) != n)
        goto cleanup;
    LLVMFuzzerTestOneInput(data, n);
    rc = 0;

cleanup:
    free(data);
    if (f)
        fclose(f);
    if (rc != 0)
        fprintf(stderr, "replay: cannot read %s\n", path);
    return rc;
}

static int not_hidden(const struct dirent *d)
{
    return d->d_name[0] != '.';
}

int main(int argc, char **argv)
{
    struct dirent **names = NULL;
    struct stat st;
    char path[4096];
    int i, j, n, count = 0, failed = 0;

    for (i = 1; i < argc; i++) {
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: cannot stat %s\n", argv[i]);
            failed = 1;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            if (replay_file(argv[i]) != 0)
                failed = 1;
            else
                count++;
            continue;
        }
        n = scandir(argv[i], &names, not_hidden, alphasort);
        if (n < 0) {
            fprintf(stderr, "replay: cannot read %s\n", argv[i]);
            failed = 1;
            continue;
        }
        for (j = 0; j < n; j++) {
            snprintf(path, sizeof(path), "%s/%s", argv[i], names[j]->d_name);
            if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                if (replay_file(path) != 0)
                    failed = 1;
                else
                    count++;
            }
            free(names[j]);
        }
        free(names);
        names = NULL;
    }
    printf("replayed %d inputs\n", count);
    return failed || count == 0 ? 1 : 0;
}
