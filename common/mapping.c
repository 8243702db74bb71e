#include "mapping.h"

#include <ctype.h>
#include <libconfig.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const lane_names[LANE__COUNT] = {
    "critical", "high", "normal", "low"};

const char *mapping_lane_name(enum mapping_lane lane)
{
    return lane < LANE__COUNT ? lane_names[lane] : "unknown";
}

int mapping_lane_parse(const char *name)
{
    for (int i = 0; i < LANE__COUNT; i++)
        if (strcmp(name, lane_names[i]) == 0)
            return i;
    return -1;
}

int mapping_is_identifier(const char *s)
{
    if (!s || !(isalpha((unsigned char)*s) || *s == '_'))
        return 0;
    for (s++; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_'))
            return 0;
    return 1;
}

static void table_free(struct mapping_table *tbl)
{
    for (size_t i = 0; i < tbl->key_count; i++)
        free(tbl->key_columns[i]);
    free(tbl->key_columns);
    for (size_t i = 0; i < tbl->parent_count; i++) {
        free(tbl->parents[i].type);
        free(tbl->parents[i].label);
        free(tbl->parents[i].column);
    }
    free(tbl->parents);
    for (size_t i = 0; i < tbl->prop_count; i++) {
        free(tbl->props[i].column);
        free(tbl->props[i].property);
    }
    free(tbl->props);
    free(tbl->table);
    free(tbl->worker);
    free(tbl->label);
    free(tbl->key_column);
    free(tbl->key_property);
    free(tbl->rel_type);
    free(tbl->from.label);
    free(tbl->from.column);
    free(tbl->to.label);
    free(tbl->to.column);
    free(tbl->node_id_column);
    free(tbl->rel_id_column);
}

void mapping_free(struct mapping *map)
{
    if (!map)
        return;
    for (size_t i = 0; i < map->table_count; i++)
        table_free(&map->tables[i]);
    free(map->tables);
    free(map->topic_prefix);
    free(map->dlq_topic);
    free(map->pg_schema);
    free(map->sync.version);
    free(map->sync.status);
    free(map->sync.attempts);
    free(map->sync.error);
    free(map->sync.timestamp);
    free(map);
}

/* Loader state: the file path for error messages. */
struct loader {
    const char *path;
    char *errstr;
    size_t errstr_size;
};

static enum ns_err load_fail(struct loader *ld, const config_setting_t *s,
                             const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum ns_err load_fail(struct loader *ld, const config_setting_t *s,
                             const char *fmt, ...)
{
    int line = s ? config_setting_source_line(s) : 0;
    char reason[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    snprintf(ld->errstr, ld->errstr_size, "%s:%d: %s", ld->path, line, reason);
    return NS_ERR_CONFIG;
}

/*
 * Copy a string member into *out. An identifier is checked when ident is
 * set, since such names are spliced into Cypher and SQL.
 */
static enum ns_err load_string(struct loader *ld, const config_setting_t *grp,
                               const char *name, int required, int ident,
                               char **out)
{
    const char *v = NULL;
    char what[128];

    *out = NULL;
    if (!config_setting_lookup_string(grp, name, &v)) {
        if (config_setting_get_member(grp, name)) {
            snprintf(what, sizeof(what), "%s", name);
            return load_fail(ld, config_setting_get_member(grp, name),
                             "\"%s\" must be a string", what);
        }
        if (!required)
            return NS_OK;
        snprintf(what, sizeof(what), "%s", name);
        return load_fail(ld, grp, "missing \"%s\"", what);
    }
    if (ident && !mapping_is_identifier(v)) {
        snprintf(what, sizeof(what), "%s = \"%.80s\"", name, v);
        return load_fail(ld, config_setting_get_member(grp, name),
                         "%s is not a plain identifier", what);
    }
    *out = strdup(v);
    return *out ? NS_OK : NS_ERR_NOMEM;
}

static enum ns_err load_endpoint(struct loader *ld,
                                 const config_setting_t *rel,
                                 const char *name,
                                 struct mapping_endpoint *ep)
{
    const config_setting_t *grp = config_setting_get_member(rel, name);
    enum ns_err err;

    if (!grp || !config_setting_is_group(grp))
        return load_fail(ld, rel, "relationship needs a \"%s\" group", name);
    err = load_string(ld, grp, "label", 1, 1, &ep->label);
    if (err)
        return err;
    return load_string(ld, grp, "column", 1, 1, &ep->column);
}

static enum ns_err load_properties(struct loader *ld,
                                   const config_setting_t *ts,
                                   struct mapping_table *tbl)
{
    const config_setting_t *list = config_setting_get_member(ts, "properties");
    int n;

    if (!list)
        return NS_OK;
    if (!config_setting_is_list(list) && !config_setting_is_array(list))
        return load_fail(ld, list, "%s must be a list", "properties");
    n = config_setting_length(list);
    tbl->props = calloc((size_t)n + 1, sizeof(*tbl->props));
    if (!tbl->props)
        return NS_ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        const config_setting_t *p = config_setting_get_elem(list, (unsigned)i);
        struct mapping_property *prop = &tbl->props[tbl->prop_count];
        const char *col, *name, *type;
        int t;

        if (config_setting_length(p) != 3 && config_setting_length(p) != 4)
            return load_fail(ld, p, "%s: expected [column, property, type] "
                             "or [column, property, \"numeric\", scale]",
                             "property");
        col = config_setting_get_string_elem(p, 0);
        name = config_setting_get_string_elem(p, 1);
        type = config_setting_get_string_elem(p, 2);
        if (!col || !name || !type)
            return load_fail(ld, p, "%s: entries must be strings", "property");
        if (!mapping_is_identifier(col) || !mapping_is_identifier(name))
            return load_fail(ld, p, "property \"%.80s\" has a name that is "
                             "not a plain identifier", col);
        t = convert_type_parse(type);
        if (t < 0)
            return load_fail(ld, p, "unknown column type \"%.80s\"", type);
        prop->column = strdup(col);
        prop->property = strdup(name);
        prop->type = (enum col_type)t;
        prop->scale = -1;
        if (config_setting_length(p) == 4) {
            const config_setting_t *sc = config_setting_get_elem(p, 3);
            if (t != COL_NUMERIC || !sc ||
                config_setting_type(sc) != CONFIG_TYPE_INT ||
                config_setting_get_int(sc) < 0 ||
                config_setting_get_int(sc) > 1000)
                return load_fail(ld, p, "property \"%.80s\": only numeric "
                                 "takes a scale, 0..1000", col);
            prop->scale = config_setting_get_int(sc);
        }
        tbl->prop_count++;
        if (!prop->column || !prop->property)
            return NS_ERR_NOMEM;
    }
    return NS_OK;
}

static enum ns_err load_parents(struct loader *ld, const config_setting_t *ts,
                                struct mapping_table *tbl)
{
    const config_setting_t *list = config_setting_get_member(ts, "parents");
    enum ns_err err;
    int n;

    if (!list)
        return NS_OK;
    n = config_setting_length(list);
    tbl->parents = calloc((size_t)n + 1, sizeof(*tbl->parents));
    if (!tbl->parents)
        return NS_ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        const config_setting_t *p = config_setting_get_elem(list, (unsigned)i);
        struct mapping_parent *par = &tbl->parents[tbl->parent_count++];

        if (!config_setting_is_group(p))
            return load_fail(ld, p, "%s entries must be groups", "parents");
        err = load_string(ld, p, "type", 1, 1, &par->type);
        if (!err)
            err = load_string(ld, p, "label", 1, 1, &par->label);
        if (!err)
            err = load_string(ld, p, "column", 1, 1, &par->column);
        if (err)
            return err;
    }
    return NS_OK;
}

static enum ns_err load_table(struct loader *ld, const config_setting_t *ts,
                              struct mapping_table *tbl)
{
    const config_setting_t *keys, *node, *rel;
    const char *lane = NULL;
    int capture = 1, temporal = 0, n, l;
    enum ns_err err;

    if (!config_setting_is_group(ts))
        return load_fail(ld, ts, "%s entries must be groups", "tables");
    err = load_string(ld, ts, "table", 1, 1, &tbl->table);
    if (!err)
        err = load_string(ld, ts, "worker", 1, 1, &tbl->worker);
    if (err)
        return err;
    if (!config_setting_lookup_string(ts, "lane", &lane))
        return load_fail(ld, ts, "table %s has no lane", tbl->table);
    l = mapping_lane_parse(lane);
    if (l < 0)
        return load_fail(ld, config_setting_get_member(ts, "lane"),
                         "unknown lane \"%.40s\"", lane);
    tbl->lane = (enum mapping_lane)l;

    keys = config_setting_get_member(ts, "key");
    if (!keys || !config_setting_is_array(keys) ||
        config_setting_length(keys) < 1)
        return load_fail(ld, ts, "table %s needs key = [\"column\", ...]",
                         tbl->table);
    n = config_setting_length(keys);
    tbl->key_columns = calloc((size_t)n, sizeof(char *));
    if (!tbl->key_columns)
        return NS_ERR_NOMEM;
    for (int i = 0; i < n; i++) {
        const char *k = config_setting_get_string_elem(keys, i);
        if (!k || !mapping_is_identifier(k))
            return load_fail(ld, keys, "table %s: key columns must be "
                             "plain identifiers", tbl->table);
        tbl->key_columns[tbl->key_count] = strdup(k);
        if (!tbl->key_columns[tbl->key_count++])
            return NS_ERR_NOMEM;
    }

    config_setting_lookup_bool(ts, "capture", &capture);
    node = config_setting_get_member(ts, "node");
    rel = config_setting_get_member(ts, "relationship");
    if (!capture) {
        if (node || rel)
            return load_fail(ld, ts, "table %s: capture = false tables have "
                             "no graph element", tbl->table);
        tbl->kind = MAPPING_NONE;
        return NS_OK;
    }
    if ((node != NULL) == (rel != NULL))
        return load_fail(ld, ts, "table %s needs exactly one of node or "
                         "relationship", tbl->table);

    if (node) {
        tbl->kind = MAPPING_NODE;
        err = load_string(ld, node, "label", 1, 1, &tbl->label);
        if (!err)
            err = load_string(ld, node, "key_column", 1, 1, &tbl->key_column);
        if (!err)
            err = load_string(ld, node, "key_property", 1, 1,
                              &tbl->key_property);
        if (!err)
            err = load_parents(ld, ts, tbl);
    } else {
        tbl->kind = MAPPING_RELATIONSHIP;
        err = load_string(ld, rel, "type", 1, 1, &tbl->rel_type);
        if (!err)
            err = load_endpoint(ld, rel, "from", &tbl->from);
        if (!err)
            err = load_endpoint(ld, rel, "to", &tbl->to);
        config_setting_lookup_bool(rel, "temporal", &temporal);
        tbl->temporal = temporal;
    }
    if (!err)
        err = load_string(ld, ts, "node_id_column", 0, 1, &tbl->node_id_column);
    if (!err)
        err = load_string(ld, ts, "rel_id_column", 0, 1, &tbl->rel_id_column);
    if (!err)
        err = load_properties(ld, ts, tbl);
    return err;
}

/* Cross-table checks: unique table names, endpoints that are keys. */
static enum ns_err mapping_validate(struct loader *ld,
                                    const config_setting_t *list,
                                    const struct mapping *map)
{
    for (size_t i = 0; i < map->table_count; i++) {
        const struct mapping_table *tbl = &map->tables[i];
        const config_setting_t *ts =
            config_setting_get_elem(list, (unsigned)i);

        for (size_t j = 0; j < i; j++)
            if (strcmp(map->tables[j].table, tbl->table) == 0)
                return load_fail(ld, ts, "table %s is mapped twice",
                                 tbl->table);
        if (tbl->kind == MAPPING_NODE) {
            int found = 0;
            for (size_t k = 0; k < tbl->key_count; k++)
                found |= strcmp(tbl->key_columns[k], tbl->key_column) == 0;
            if (!found || tbl->key_count != 1)
                return load_fail(ld, ts, "table %s: a node table's key must "
                                 "be its key_column alone", tbl->table);
        } else if (tbl->kind == MAPPING_RELATIONSHIP) {
            int from = 0, to = 0;
            for (size_t k = 0; k < tbl->key_count; k++) {
                from |= strcmp(tbl->key_columns[k], tbl->from.column) == 0;
                to |= strcmp(tbl->key_columns[k], tbl->to.column) == 0;
            }
            if (!from || !to || tbl->key_count != 2)
                return load_fail(ld, ts, "table %s: a link table's key must "
                                 "be its two endpoint columns", tbl->table);
        }
    }
    return NS_OK;
}

enum ns_err mapping_load(const char *path, struct mapping **out,
                         char *errstr, size_t errstr_size)
{
    config_t cfg;
    struct mapping *map = NULL;
    const config_setting_t *root, *list, *sync;
    struct loader ld = {path, errstr, errstr_size};
    enum ns_err err = NS_OK;
    int n;

    *out = NULL;
    config_init(&cfg);
    if (!config_read_file(&cfg, path)) {
        if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
            snprintf(errstr, errstr_size, "%s: could not read file", path);
        else
            snprintf(errstr, errstr_size, "%s:%d: %s", path,
                     config_error_line(&cfg), config_error_text(&cfg));
        err = NS_ERR_CONFIG;
        goto cleanup;
    }
    root = config_root_setting(&cfg);
    map = calloc(1, sizeof(*map));
    if (!map) {
        err = NS_ERR_NOMEM;
        goto cleanup;
    }
    err = load_string(&ld, root, "topic_prefix", 1, 0, &map->topic_prefix);
    if (!err)
        err = load_string(&ld, root, "dlq_topic", 1, 0, &map->dlq_topic);
    if (!err)
        err = load_string(&ld, root, "pg_schema", 1, 1, &map->pg_schema);
    if (err)
        goto cleanup;

    sync = config_setting_get_member(root, "sync");
    if (!sync || !config_setting_is_group(sync)) {
        err = load_fail(&ld, root, "missing the %s group", "sync");
        goto cleanup;
    }
    err = load_string(&ld, sync, "version", 1, 1, &map->sync.version);
    if (!err)
        err = load_string(&ld, sync, "status", 1, 1, &map->sync.status);
    if (!err)
        err = load_string(&ld, sync, "attempts", 1, 1, &map->sync.attempts);
    if (!err)
        err = load_string(&ld, sync, "error", 1, 1, &map->sync.error);
    if (!err)
        err = load_string(&ld, sync, "timestamp", 1, 1, &map->sync.timestamp);
    if (err)
        goto cleanup;

    list = config_setting_get_member(root, "tables");
    if (!list || !config_setting_is_list(list) ||
        config_setting_length(list) == 0) {
        err = load_fail(&ld, root, "missing the %s list", "tables");
        goto cleanup;
    }
    n = config_setting_length(list);
    map->tables = calloc((size_t)n, sizeof(*map->tables));
    if (!map->tables) {
        err = NS_ERR_NOMEM;
        goto cleanup;
    }
    for (int i = 0; i < n; i++) {
        map->table_count++;
        err = load_table(&ld, config_setting_get_elem(list, (unsigned)i),
                         &map->tables[i]);
        if (err)
            goto cleanup;
    }
    err = mapping_validate(&ld, list, map);

cleanup:
    if (err == NS_ERR_NOMEM)
        snprintf(errstr, errstr_size, "%s: out of memory", path);
    if (err) {
        mapping_free(map);
        map = NULL;
    }
    config_destroy(&cfg);
    *out = map;
    return err;
}

const struct mapping_table *mapping_find(const struct mapping *map,
                                         const char *name)
{
    for (size_t i = 0; i < map->table_count; i++)
        if (strcmp(map->tables[i].table, name) == 0)
            return &map->tables[i];
    return NULL;
}

const struct mapping_property *mapping_table_prop(
    const struct mapping_table *tbl, const char *column)
{
    for (size_t i = 0; i < tbl->prop_count; i++)
        if (strcmp(tbl->props[i].column, column) == 0)
            return &tbl->props[i];
    return NULL;
}

enum ns_err mapping_topic(const struct mapping *map, enum mapping_lane lane,
                          const char *worker, char *out, size_t out_size)
{
    int n = snprintf(out, out_size, "%s.%s.%s", map->topic_prefix,
                     mapping_lane_name(lane), worker);
    return (n < 0 || (size_t)n >= out_size) ? NS_ERR_LIMIT : NS_OK;
}

int mapping_worker_has_lane(const struct mapping *map, const char *worker,
                            enum mapping_lane lane)
{
    for (size_t i = 0; i < map->table_count; i++) {
        const struct mapping_table *tbl = &map->tables[i];
        if (tbl->kind != MAPPING_NONE && tbl->lane == lane &&
            strcmp(tbl->worker, worker) == 0)
            return 1;
    }
    return 0;
}
