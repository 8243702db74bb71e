#include "change.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "convert.h"

void change_clear(struct change *ch)
{
    cJSON_Delete(ch->row);
    ch->row = NULL;
}

/* A key value as a string: key columns hold uuids in our schema, but any
 * string or integer key is accepted. */
static enum ns_err key_value(const cJSON *img, const char *column, char *out,
                             size_t out_size, char *errstr, size_t errstr_size)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(img, column);

    if (cJSON_IsString(v) && v->valuestring[0] &&
        strlen(v->valuestring) < out_size &&
        strcmp(v->valuestring, CONVERT_UNAVAILABLE) != 0) {
        snprintf(out, out_size, "%s", v->valuestring);
        return NS_OK;
    }
    if (cJSON_IsNumber(v) && v->valuedouble == (double)(long long)v->valuedouble) {
        snprintf(out, out_size, "%lld", (long long)v->valuedouble);
        return NS_OK;
    }
    snprintf(errstr, errstr_size, "key column %s is %s", column,
             v == NULL ? "missing"
             : cJSON_IsNull(v) ? "null"
             : cJSON_IsString(v) ? "an empty, oversized or unavailable string"
                                 : "not a string or integer");
    return NS_ERR_SCHEMA;
}

/* pg_version of the row: -1 when absent or null; a value that is no
 * integer in [0, 2^53] (exact in a double) is an error, since the stale
 * guard compares it. */
static enum ns_err row_version(const struct mapping *map, const cJSON *img,
                               int64_t *out, char *errstr, size_t errstr_size)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(img, map->sync.version);

    *out = -1;
    if (!v || cJSON_IsNull(v))
        return NS_OK;
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0.0) ||
        v->valuedouble > 9007199254740992.0 ||
        v->valuedouble != (double)(int64_t)v->valuedouble) {
        snprintf(errstr, errstr_size, "%s is not an integer in range",
                 map->sync.version);
        return NS_ERR_SCHEMA;
    }
    *out = (int64_t)v->valuedouble;
    return NS_OK;
}

static int column_unchanged(const cJSON *before, const cJSON *after,
                            const char *column)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(before, column);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(after, column);

    if (convert_is_unavailable(a))
        return 1;
    if (!a || !b)
        return a == b;
    return cJSON_Compare(a, b, 1);
}

/* An update whose mapped columns, keys and version are all unchanged is
 * the echo of our own write-back of sync columns. */
static int update_is_bookkeeping(const struct mapping *map,
                                 const struct mapping_table *tbl,
                                 const struct event *ev)
{
    if (ev->op != EVENT_OP_UPDATE || !ev->before)
        return 0;
    if (!column_unchanged(ev->before, ev->after, map->sync.version))
        return 0;
    for (size_t i = 0; i < tbl->key_count; i++)
        if (!column_unchanged(ev->before, ev->after, tbl->key_columns[i]))
            return 0;
    for (size_t i = 0; i < tbl->prop_count; i++)
        if (!column_unchanged(ev->before, ev->after, tbl->props[i].column))
            return 0;
    for (size_t i = 0; i < tbl->parent_count; i++)
        if (!column_unchanged(ev->before, ev->after, tbl->parents[i].column))
            return 0;
    return 1;
}

static enum ns_err add_number(cJSON *obj, const char *name, double v)
{
    return cJSON_AddNumberToObject(obj, name, v) ? NS_OK : NS_ERR_NOMEM;
}

enum ns_err change_from_event(const struct mapping *map,
                              const struct mapping_table *tbl,
                              const struct event *ev, int64_t epoch,
                              size_t msg_index, struct change *out, enum change_result *result,
                              char *errstr, size_t errstr_size)
{
    const cJSON *img;
    cJSON *row = NULL, *props = NULL, *parents = NULL;
    struct change ch;
    enum ns_err err = NS_OK;

    memset(&ch, 0, sizeof(ch));
    *result = CHANGE_SKIP;
    if (ev->op == EVENT_OP_MESSAGE)
        return NS_OK;
    if (ev->op == EVENT_OP_TRUNCATE) {
        snprintf(errstr, errstr_size, "truncate of %s cannot be applied row "
                 "by row; repair with nexus-verify --repair", tbl->table);
        return NS_ERR_SCHEMA;
    }
    if (tbl->kind == MAPPING_NONE) {
        snprintf(errstr, errstr_size, "table %s has no graph element",
                 tbl->table);
        return NS_ERR_SCHEMA;
    }
    if (update_is_bookkeeping(map, tbl, ev))
        return NS_OK;

    img = event_row(ev);
    ch.tbl = tbl;
    ch.action = ev->op == EVENT_OP_DELETE ? CHANGE_DELETE : CHANGE_UPSERT;
    ch.msg_index = msg_index;
    ch.lsn = ev->lsn;
    ch.epoch = epoch;
    /* A read of an incremental snapshot carries no source.lsn. Its row is
     * at least as new as the stream position when its chunk was sent
     * (source.sequence[1]): changes in the snapshot window replaced their
     * reads, and later changes have higher positions. */
    if (ch.lsn < 0 && ev->op == EVENT_OP_READ && ev->snapshot)
        ch.lsn = ev->sequence_lsn;
    if (row_version(map, img, &ch.version, errstr, errstr_size))
        return NS_ERR_SCHEMA;
    if (ch.lsn < 0) {
        snprintf(errstr, errstr_size, "event has no source.lsn");
        return NS_ERR_SCHEMA;
    }

    row = cJSON_CreateObject();
    if (!row) {
        err = NS_ERR_NOMEM;
        goto cleanup;
    }
    for (size_t i = 0; i < tbl->key_count; i++) {
        err = key_value(img, tbl->key_columns[i], ch.key_values[i],
                        sizeof(ch.key_values[i]), errstr, errstr_size);
        if (err)
            goto cleanup;
    }
    if (tbl->kind == MAPPING_NODE) {
        if (!cJSON_AddStringToObject(row, "k", ch.key_values[0])) {
            err = NS_ERR_NOMEM;
            goto cleanup;
        }
        snprintf(ch.key, sizeof(ch.key), "%s|%s", tbl->table,
                 ch.key_values[0]);
    } else {
        char a[64], b[64];
        err = key_value(img, tbl->from.column, a, sizeof(a), errstr,
                        errstr_size);
        if (!err)
            err = key_value(img, tbl->to.column, b, sizeof(b), errstr,
                            errstr_size);
        if (err)
            goto cleanup;
        if (!cJSON_AddStringToObject(row, "a", a) ||
            !cJSON_AddStringToObject(row, "b", b)) {
            err = NS_ERR_NOMEM;
            goto cleanup;
        }
        snprintf(ch.key, sizeof(ch.key), "%s|%s|%s", tbl->table, a, b);
    }
    err = add_number(row, "ep", (double)ch.epoch);
    if (!err)
        err = add_number(row, "lsn", (double)ch.lsn);
    if (!err)
        err = add_number(row, "ts", (double)(ev->ts_ms >= 0 ? ev->ts_ms : 0));
    if (!err && ch.version >= 0)
        err = add_number(row, "v", (double)ch.version);
    else if (!err && !cJSON_AddNullToObject(row, "v"))
        err = NS_ERR_NOMEM;
    if (err)
        goto cleanup;

    if (ch.action == CHANGE_UPSERT) {
        props = cJSON_AddObjectToObject(row, "p");
        if (!props) {
            err = NS_ERR_NOMEM;
            goto cleanup;
        }
        for (size_t i = 0; i < tbl->prop_count; i++) {
            const struct mapping_property *prop = &tbl->props[i];
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(img, prop->column);
            int scale = prop->scale >= 0 ? prop->scale
                        : event_column_scale(ev, prop->column);
            cJSON *pv = NULL;
            char why[256];

            if (convert_is_unavailable(v))
                continue;
            err = convert_value(v, prop->type, scale, &pv, why, sizeof(why));
            if (err) {
                snprintf(errstr, errstr_size, "column %s: %s", prop->column,
                         why);
                goto cleanup;
            }
            cJSON_AddItemToObject(props, prop->property, pv);
            ch.shape |= UINT64_C(1) << i;
        }
        if (tbl->kind == MAPPING_NODE && tbl->parent_count) {
            parents = cJSON_AddArrayToObject(row, "par");
            if (!parents) {
                err = NS_ERR_NOMEM;
                goto cleanup;
            }
            for (size_t i = 0; i < tbl->parent_count; i++) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(
                    img, tbl->parents[i].column);
                cJSON *pv = NULL;
                char why[256];

                if (convert_is_unavailable(v)) {
                    snprintf(errstr, errstr_size, "parent column %s is "
                             "unavailable", tbl->parents[i].column);
                    err = NS_ERR_SCHEMA;
                    goto cleanup;
                }
                err = convert_value(v, COL_UUID, -1, &pv, why, sizeof(why));
                if (err) {
                    snprintf(errstr, errstr_size, "parent column %s: %s",
                             tbl->parents[i].column, why);
                    goto cleanup;
                }
                cJSON_AddItemToArray(parents, pv);
            }
        }
    }

    ch.row = row;
    row = NULL;
    *out = ch;
    *result = CHANGE_READY;

cleanup:
    if (err == NS_ERR_NOMEM)
        snprintf(errstr, errstr_size, "out of memory");
    cJSON_Delete(row);
    return err;
}

/* Carry properties present in older but left out of newer (TOAST). */
static void carry_unavailable(struct change *newer, const struct change *older)
{
    cJSON *np = cJSON_GetObjectItemCaseSensitive(newer->row, "p");
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(older->row, "p");
    const struct mapping_table *tbl = newer->tbl;

    for (size_t i = 0; i < tbl->prop_count; i++) {
        uint64_t bit = UINT64_C(1) << i;
        const cJSON *v;
        cJSON *dup;

        if ((newer->shape & bit) || !(older->shape & bit))
            continue;
        v = cJSON_GetObjectItemCaseSensitive(op, tbl->props[i].property);
        dup = cJSON_Duplicate(v, 1);
        if (!dup)
            continue; /* left out: the property keeps its stored value */
        cJSON_AddItemToObject(np, tbl->props[i].property, dup);
        newer->shape |= bit;
    }
}

static uint64_t change_identity_hash(const struct change *ch)
{
    uint64_t h = UINT64_C(1469598103934665603) ^ (uint64_t)(uintptr_t)ch->tbl;

    for (const unsigned char *c = (const unsigned char *)ch->key; *c; c++)
        h = (h ^ *c) * UINT64_C(1099511628211);
    return h;
}

static int change_same_identity(const struct change *a, const struct change *b)
{
    return a->tbl == b->tbl && strcmp(a->key, b->key) == 0;
}

/* Order of two changes at the source: epoch, then lsn, then pg_version. */
static int change_position_cmp(const struct change *a, const struct change *b)
{
    if (a->epoch != b->epoch)
        return a->epoch < b->epoch ? -1 : 1;
    if (a->lsn != b->lsn)
        return a->lsn < b->lsn ? -1 : 1;
    if (a->version != b->version)
        return a->version < b->version ? -1 : 1;
    return 0;
}

/* Fold changes[i] into the merged change of the same row at j: the newer
 * one wins, TOASTed properties are carried over, the older one is dropped
 * (marked by a NULL table until compaction). */
static void fold_into_newer(struct change *changes, size_t older, size_t newer)
{
    /* Arrival order is source order within a partition. A change that
     * arrives later but is older at the source (the same key in another
     * partition: a redelivery, a re-keyed topic) must not win: the newer
     * one moves to the later slot. Equal positions keep arrival order. */
    if (change_position_cmp(&changes[newer], &changes[older]) < 0) {
        struct change swap = changes[newer];

        changes[newer] = changes[older];
        changes[older] = swap;
    }
    if (changes[newer].action == CHANGE_UPSERT &&
        changes[older].action == CHANGE_UPSERT)
        carry_unavailable(&changes[newer], &changes[older]);
    change_clear(&changes[older]);
    changes[older].tbl = NULL;
}

static int change_is_redelivery(const struct change *a, const struct change *b)
{
    return change_position_cmp(a, b) == 0 && a->action == b->action;
}

/*
 * changes[newer] arrived after changes[older], the latest change so far of
 * the same row. Returns the index of the row's latest change afterwards.
 * A versioned link keeps both: its history must not depend on where a
 * batch happened to end, or a replay would rebuild it differently from the
 * live run. The newer one goes a round later; a change older at the source
 * than its predecessor is then skipped by the statement's guard, as it
 * would be in a later batch.
 */
static size_t merge_same_row(struct change *changes, size_t older, size_t newer)
{
    if (!changes[newer].tbl->temporal) {
        fold_into_newer(changes, older, newer);
        return newer;
    }
    if (change_is_redelivery(&changes[older], &changes[newer])) {
        change_clear(&changes[newer]);
        changes[newer].tbl = NULL;
        return older;
    }
    changes[newer].round = changes[older].round + 1;
    return newer;
}

/* Without memory for the index: compare with every earlier survivor. */
static void coalesce_by_scan(struct change *changes, size_t n)
{
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j-- > 0;)
            if (changes[j].tbl && change_same_identity(&changes[j], &changes[i])) {
                merge_same_row(changes, j, i);
                break;
            }
}

size_t change_coalesce(struct change *changes, size_t n)
{
    size_t slots = 16, kept = 0;
    size_t *index = NULL; /* open addressing: position + 1 of the latest
                             change of a row, 0 = empty slot */

    while (slots < 2 * n)
        slots <<= 1;
    index = calloc(slots, sizeof(*index));
    if (!index) {
        coalesce_by_scan(changes, n);
    } else {
        for (size_t i = 0; i < n; i++) {
            size_t s = (size_t)change_identity_hash(&changes[i]) & (slots - 1);

            while (index[s] &&
                   !change_same_identity(&changes[index[s] - 1], &changes[i]))
                s = (s + 1) & (slots - 1);
            index[s] = 1 + (index[s] ? merge_same_row(changes, index[s] - 1, i)
                                     : i);
        }
        free(index);
    }

    /* Survivors keep the arrival order of their latest change. */
    for (size_t i = 0; i < n; i++) {
        if (!changes[i].tbl)
            continue;
        if (kept != i) {
            changes[kept] = changes[i];
            changes[i].row = NULL;
            changes[i].tbl = NULL;
        }
        kept++;
    }
    return kept;
}
