/*
 * test_apply - the plan of one apply.c transaction (apply_plan_build),
 * without a server.
 *
 *  - plan-order-*: random batches over node, link and versioned link
 *    tables (coalesced as the workers do, so versioned links get rounds)
 *    planned over every change and over subsets; the statements must be
 *    exactly those of a plain reference model: round by round, groups of
 *    one (table, action, shape) in order of first appearance within a
 *    round, rows sorted by change key, each statement the text of
 *    cypher_statement().
 *  - plan-memory-linear: 1,000 and 4,000 updates of one versioned
 *    thread_content pair (as many rounds, so as many statements); the
 *    heap a plan needs must grow linearly: bytes(4,000) < 5 x
 *    bytes(1,000) + slack. The figures for 1,000, 4,000 and 4,016 are
 *    printed. Measured with a counting allocator that replaces malloc in
 *    this binary (peak bytes during apply_plan_build); under AddressSanitizer,
 *    which owns malloc, with its allocated-bytes counter (bytes held by
 *    the built plan).
 *
 * Deterministic seeds, so a failure repeats. Prints "ok NAME" / "not ok
 * NAME: why" per case, then "N passed, N failed".
 */
#include "apply.h"

#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "change.h"
#include "cypher.h"
#include "mapping.h"
#include "neo4j.h"

/* --- heap measurement ----------------------------------------------- */

#ifdef __SANITIZE_ADDRESS__
/* sanitizer/allocator_interface.h, which gcc 12 does not install */
size_t __sanitizer_get_current_allocated_bytes(void);

#define HEAP_WHAT "bytes held by the plan (ASan counter)"

static long long heap_mark(void)
{
    return (long long)__sanitizer_get_current_allocated_bytes();
}

static long long heap_since(long long mark)
{
    return heap_mark() - mark;
}
#else
/* Every allocation of the process passes here and on to glibc; the
 * counters follow the usable size of live blocks. Signed: a block glibc
 * handed out by another entry (memalign) may be freed here. */
void *__libc_malloc(size_t size);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *ptr, size_t size);
void __libc_free(void *ptr);

#define HEAP_WHAT "peak heap during apply_plan_build (counting allocator)"

static long long heap_now, heap_peak;

static void heap_add(void *p)
{
    if (!p)
        return;
    heap_now += (long long)malloc_usable_size(p);
    if (heap_now > heap_peak)
        heap_peak = heap_now;
}

void *malloc(size_t size)
{
    void *p = __libc_malloc(size);

    heap_add(p);
    return p;
}

void *calloc(size_t n, size_t size)
{
    void *p = __libc_calloc(n, size);

    heap_add(p);
    return p;
}

void *realloc(void *ptr, size_t size)
{
    long long was = ptr ? (long long)malloc_usable_size(ptr) : 0;
    void *p = __libc_realloc(ptr, size);

    if (p || size == 0)
        heap_now -= was;
    heap_add(p);
    return p;
}

void free(void *ptr)
{
    if (ptr)
        heap_now -= (long long)malloc_usable_size(ptr);
    __libc_free(ptr);
}

static long long heap_mark(void)
{
    heap_peak = heap_now;
    return heap_now;
}

static long long heap_since(long long mark)
{
    return heap_peak - mark;
}
#endif

/* --- building changes ------------------------------------------------ */

static uint64_t rng_state;

static uint32_t rng_next(void)
{
    rng_state = rng_state * UINT64_C(6364136223846793005) + 1442695040888963407u;
    return (uint32_t)(rng_state >> 33);
}

/* A change of tbl with key values k1 (and k2 for a link), at position
 * lsn, with the properties of shape; a delete when is_delete. */
static int make_change(const struct mapping_table *tbl, int is_delete,
                       uint64_t shape, const char *k1, const char *k2,
                       int64_t lsn, size_t index, struct change *ch)
{
    int is_node = tbl->kind == MAPPING_NODE;
    cJSON *p;

    memset(ch, 0, sizeof(*ch));
    ch->tbl = tbl;
    ch->action = is_delete ? CHANGE_DELETE : CHANGE_UPSERT;
    ch->msg_index = index;
    ch->lsn = lsn;
    ch->version = lsn;
    snprintf(ch->key_values[0], sizeof(ch->key_values[0]), "%s", k1);
    snprintf(ch->key_values[1], sizeof(ch->key_values[1]), "%s",
             is_node ? "" : k2);
    snprintf(ch->key, sizeof(ch->key), "%s|%s%s%s", tbl->table, k1,
             is_node ? "" : "|", is_node ? "" : k2);
    ch->row = cJSON_CreateObject();
    if (!ch->row ||
        !cJSON_AddStringToObject(ch->row, is_node ? "k" : "a", k1) ||
        (!is_node && !cJSON_AddStringToObject(ch->row, "b", k2)) ||
        !cJSON_AddNumberToObject(ch->row, "ep", 0) ||
        !cJSON_AddNumberToObject(ch->row, "lsn", (double)lsn) ||
        !cJSON_AddNumberToObject(ch->row, "v", (double)lsn) ||
        !cJSON_AddNumberToObject(ch->row, "ts", 0))
        return -1;
    if (is_delete)
        return 0;
    ch->shape = shape;
    p = cJSON_AddObjectToObject(ch->row, "p");
    if (!p)
        return -1;
    for (size_t i = 0; i < tbl->prop_count; i++)
        if ((shape & (UINT64_C(1) << i)) &&
            !cJSON_AddNumberToObject(p, tbl->props[i].property, (double)lsn))
            return -1;
    return 0;
}

static void changes_free(struct change *changes, size_t n)
{
    for (size_t i = 0; changes && i < n; i++)
        change_clear(&changes[i]);
    free(changes);
}

/* --- the reference model --------------------------------------------- */

static const struct change *ref_changes;

static int ref_by_key(const void *a, const void *b)
{
    return strcmp(ref_changes[*(const size_t *)a].key,
                  ref_changes[*(const size_t *)b].key);
}

/* Check the plan over idx[0..n) against the plain model: quadratic, so
 * obviously right. 0 when it matches, else -1 with why. */
static int check_plan(const struct mapping *map, const struct change *changes,
                      const size_t *idx, size_t n, char *why, size_t why_size)
{
    struct apply_plan *plan = NULL;
    const struct neo4j_stmt *stmts;
    size_t count, *order = NULL, *members = NULL, at = 0, done = 0;
    unsigned max_round = 0;
    char errstr[512];
    int rc = -1;

    if (apply_plan_build(map, changes, idx, n, &plan, errstr,
                         sizeof(errstr))) {
        snprintf(why, why_size, "apply_plan_build: %.400s", errstr);
        return -1;
    }
    stmts = apply_plan_statements(plan, &count);
    order = malloc((n + 1) * sizeof(*order));
    members = malloc((n + 1) * sizeof(*members));
    if (!order || !members) {
        snprintf(why, why_size, "out of memory");
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++)
        if (changes[idx ? idx[i] : i].round > max_round)
            max_round = changes[idx ? idx[i] : i].round;
    for (unsigned r = 0; r <= max_round; r++)
        for (size_t i = 0; i < n; i++)
            if (changes[idx ? idx[i] : i].round == r)
                order[at++] = idx ? idx[i] : i;
    /* groups: the first change not yet placed opens the next one */
    ref_changes = changes;
    for (size_t s = 0; done < n; s++) {
        const struct change *first = NULL;
        size_t k = 0;
        struct buf text;
        const cJSON *rows, *row;
        size_t r = 0;

        for (size_t i = 0; i < n; i++) {
            const struct change *ch = &changes[order[i]];

            if (order[i] == SIZE_MAX)
                continue;
            if (!first)
                first = ch;
            if (ch->tbl == first->tbl && ch->action == first->action &&
                ch->shape == first->shape && ch->round == first->round) {
                members[k++] = order[i];
                order[i] = SIZE_MAX;
            }
        }
        done += k;
        qsort(members, k, sizeof(*members), ref_by_key);
        if (s >= count) {
            snprintf(why, why_size, "%zu statements, want more", count);
            goto cleanup;
        }
        buf_init(&text, 1u << 20);
        if (cypher_statement(map, first->tbl, first->action, first->shape,
                             &text) ||
            strcmp(buf_str(&text), stmts[s].cypher) != 0) {
            buf_free(&text);
            snprintf(why, why_size, "statement %zu is not the text of %s "
                     "action %d shape %llx", s, first->tbl->table,
                     (int)first->action, (unsigned long long)first->shape);
            goto cleanup;
        }
        buf_free(&text);
        rows = cJSON_GetObjectItemCaseSensitive(stmts[s].params, "rows");
        if (cJSON_GetArraySize(rows) != (int)k) {
            snprintf(why, why_size, "statement %zu has %d rows, want %zu", s,
                     cJSON_GetArraySize(rows), k);
            goto cleanup;
        }
        /* a row is a reference: it shares the change row's members */
        cJSON_ArrayForEach(row, rows) {
            if (row->child != changes[members[r]].row->child) {
                snprintf(why, why_size, "statement %zu row %zu is not the "
                         "change %s", s, r, changes[members[r]].key);
                goto cleanup;
            }
            r++;
        }
        if (done == n && s + 1 != count) {
            snprintf(why, why_size, "%zu statements, want %zu", count, s + 1);
            goto cleanup;
        }
    }
    if (n == 0 && count != 0) {
        snprintf(why, why_size, "%zu statements for no change", count);
        goto cleanup;
    }
    rc = 0;

cleanup:
    free(order);
    free(members);
    apply_plan_free(plan);
    return rc;
}

/* n random changes over a few keys of four tables, coalesced; checked
 * over all of them, over the odd ones backwards and over each alone. */
static const char *run_order_case(const struct mapping *map, size_t n,
                                  int keys, char *why, size_t why_size)
{
    static const char *const names[] = {"content_items", "threads",
                                        "thread_content", "content_tags"};
    struct change *changes = calloc(n + 1, sizeof(*changes));
    size_t *idx = malloc((n + 1) * sizeof(*idx));
    const char *fail = NULL;
    size_t kept, m = 0;

    if (!changes || !idx) {
        snprintf(why, why_size, "out of memory");
        fail = why;
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++) {
        const struct mapping_table *tbl = mapping_find(map, names[rng_next() % 4]);
        char k1[32], k2[32];
        /* few shapes, so groups hold several rows */
        uint64_t shape = ((UINT64_C(1) << tbl->prop_count) - 1) >>
                         (rng_next() % 2);

        snprintf(k1, sizeof(k1), "k%d", (int)(rng_next() % (unsigned)keys));
        snprintf(k2, sizeof(k2), "k%d", (int)(rng_next() % (unsigned)keys));
        if (make_change(tbl, rng_next() % 5 == 0, shape, k1, k2,
                        100 + (int64_t)i, i, &changes[i])) {
            snprintf(why, why_size, "out of memory building case");
            fail = why;
            n = i + 1;
            goto cleanup;
        }
    }
    kept = change_coalesce(changes, n);
    for (size_t i = kept; i-- > 0;)
        if (i % 2)
            idx[m++] = i;
    if (check_plan(map, changes, NULL, kept, why, why_size) ||
        check_plan(map, changes, idx, m, why, why_size)) {
        fail = why;
        goto cleanup;
    }
    for (size_t i = 0; i < kept && i < 50; i++)
        if (check_plan(map, changes, &i, 1, why, why_size)) {
            fail = why;
            goto cleanup;
        }

cleanup:
    changes_free(changes, n);
    free(idx);
    return fail;
}

/* Heap that planning n updates of one versioned pair takes; -1 when the
 * case cannot be built or planned. */
static long long plan_bytes(const struct mapping *map, size_t n, char *why,
                            size_t why_size)
{
    const struct mapping_table *tbl = mapping_find(map, "thread_content");
    struct change *changes = calloc(n, sizeof(*changes));
    struct apply_plan *plan = NULL;
    long long mark, bytes = -1;
    size_t kept = 0, count = 0;
    char errstr[512];

    if (!changes || !tbl || !tbl->temporal) {
        snprintf(why, why_size, "no memory or no versioned thread_content");
        goto cleanup;
    }
    for (size_t i = 0; i < n; i++)
        if (make_change(tbl, 0, (UINT64_C(1) << tbl->prop_count) - 1,
                        "thread-1", "content-1", 100 + (int64_t)i, i,
                        &changes[i])) {
            snprintf(why, why_size, "out of memory building case");
            goto cleanup;
        }
    kept = change_coalesce(changes, n);
    if (kept != n || changes[n - 1].round != n - 1) {
        snprintf(why, why_size, "coalesced to %zu changes, last round %u; "
                 "want %zu rounds", kept, changes[kept - 1].round, n);
        goto cleanup;
    }
    mark = heap_mark();
    if (apply_plan_build(map, changes, NULL, n, &plan, errstr,
                         sizeof(errstr))) {
        snprintf(why, why_size, "apply_plan_build: %.400s", errstr);
        goto cleanup;
    }
    bytes = heap_since(mark);
    apply_plan_statements(plan, &count);
    if (count != n) {
        snprintf(why, why_size, "%zu statements for %zu rounds", count, n);
        bytes = -1;
    }

cleanup:
    apply_plan_free(plan);
    changes_free(changes, n);
    return bytes;
}

static const char *run_memory_case(const struct mapping *map, char *why,
                                   size_t why_size)
{
    /* slack: what a plan holds whatever its size */
    const long long slack = 64 * 1024;
    long long b1000 = plan_bytes(map, 1000, why, why_size);
    long long b4000 = b1000 < 0 ? -1 : plan_bytes(map, 4000, why, why_size);
    long long b4016 = b4000 < 0 ? -1 : plan_bytes(map, 4016, why, why_size);

    if (b4016 < 0)
        return why;
    printf("# %s: 1000 rounds %lld bytes, 4000 rounds %lld bytes, "
           "4016 rounds %lld bytes\n", HEAP_WHAT, b1000, b4000, b4016);
    if (b4000 >= 5 * b1000 + slack) {
        snprintf(why, why_size, "not linear: %lld bytes for 4000 rounds, "
                 "%lld for 1000", b4000, b1000);
        return why;
    }
    return NULL;
}

static void report(const char *name, const char *fail, int *passed,
                   int *failed)
{
    if (fail) {
        printf("not ok %s: %s\n", name, fail);
        (*failed)++;
    } else {
        printf("ok %s\n", name);
        (*passed)++;
    }
}

int main(void)
{
    static const struct { const char *name; size_t n; int keys; uint64_t seed; } cases[] = {
        {"plan-order-empty", 0, 3, 1},
        {"plan-order-one", 1, 3, 2},
        {"plan-order-hot-keys", 60, 2, 3},
        {"plan-order-few-keys", 400, 6, 4},
        {"plan-order-many-keys", 2000, 200, 5},
    };
    struct mapping *map = NULL;
    int passed = 0, failed = 0;
    char errstr[512];

    if (mapping_load("schemas/mapping.cfg", &map, errstr, sizeof(errstr))) {
        fprintf(stderr, "test_apply: %s\n", errstr);
        return 2;
    }
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        char why[512];

        rng_state = cases[c].seed;
        report(cases[c].name, run_order_case(map, cases[c].n, cases[c].keys,
                                             why, sizeof(why)),
               &passed, &failed);
    }
    {
        char why[512];

        report("plan-memory-linear", run_memory_case(map, why, sizeof(why)),
               &passed, &failed);
    }
    mapping_free(map);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
