/* config.c: the cfg_node tree, strict typed getters, the unused-key check (loading, overrides and the writer
 * are in config_yaml.c). */
#include "core/config_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

/* ------------------------------------------------------------------ nodes */

cfg_node *cfg_node_new(cfg_kind kind, const char *origin, int line, int col, const char *path) {
    cfg_node *n = xcalloc(1, sizeof *n);
    n->kind = kind;
    n->origin = xstrdup(origin);
    n->line = line;
    n->col = col;
    n->path = xstrdup(path);
    return n;
}

void cfg_free(cfg_node *node) {
    if (!node) return;
    for (int i = 0; i < node->n; i++) {
        cfg_free(node->items[i]);
        if (node->keys) free(node->keys[i]);
    }
    for (int i = 0; i < node->n_asked; i++) free(node->asked[i]);
    free(node->items);
    free(node->keys);
    free(node->key_line);
    free(node->key_col);
    free(node->asked);
    free(node->value);
    free(node->origin);
    free(node->path);
    free(node);
}

void cfg_node_append(cfg_node *parent, const char *key, int key_line, int key_col, cfg_node *child) {
    if (parent->n == parent->cap) {
        parent->cap = parent->cap ? 2 * parent->cap : 4;
        parent->items = xrealloc(parent->items, (size_t)parent->cap * sizeof *parent->items);
        if (parent->kind == CFG_MAP) {
            parent->keys = xrealloc(parent->keys, (size_t)parent->cap * sizeof *parent->keys);
            parent->key_line = xrealloc(parent->key_line, (size_t)parent->cap * sizeof(int));
            parent->key_col = xrealloc(parent->key_col, (size_t)parent->cap * sizeof(int));
        }
    }
    if (parent->kind == CFG_MAP) {
        parent->keys[parent->n] = xstrdup(key);
        parent->key_line[parent->n] = key_line;
        parent->key_col[parent->n] = key_col;
    }
    parent->items[parent->n++] = child;
}

char *cfg_child_path(const char *parent, const char *key, int index) {
    size_t n = strlen(parent) + (key ? strlen(key) : 0) + 32;
    char *p = xmalloc(n);
    if (key)
        snprintf(p, n, "%s%s%s", parent, parent[0] ? "." : "", key);
    else
        snprintf(p, n, "%s[%d]", parent, index);
    return p;
}

void cfg_where(const cfg_node *node, char *buf, size_t n) {
    if (node->line > 0)
        snprintf(buf, n, "%s:%d:%d", node->origin, node->line, node->col);
    else
        snprintf(buf, n, "%s", node->origin);
}

const char *cfg_path(const cfg_node *node) { return node->path[0] ? node->path : "(root)"; }

/* err_set with "WHERE: PATH: " in front. */
bool cfg_node_err(s2d_err *err, const cfg_node *node, const char *fmt, ...) {
    if (!err) return false;
    char where[600], msg[900];
    cfg_where(node, where, sizeof where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(err, "%s: %s: %s", where, cfg_path(node), msg);
}

/* A short printable rendering of a value for messages: 'abc', a map, a sequence, null. */
static void describe(const cfg_node *node, char *buf, size_t n) {
    if (node->kind == CFG_MAP) {
        snprintf(buf, n, "a map");
    } else if (node->kind == CFG_SEQ) {
        snprintf(buf, n, "a sequence");
    } else if (cfg_is_null(node)) {
        snprintf(buf, n, "null");
    } else {
        size_t len = strlen(node->value);
        const char *dots = len > CFG_SHOW ? "..." : "";
        snprintf(buf, n, "%s'%.*s%s'", node->quoted ? "the quoted string " : "", (int)S2D_MIN(len, CFG_SHOW),
                 node->value, dots);
    }
}

/* ------------------------------------------------------------------ scalar parsing */

bool cfg_is_null(const cfg_node *node) {
    if (node->kind != CFG_SCALAR || node->quoted) return false;
    const char *v = node->value;
    return v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 || strcmp(v, "Null") == 0 ||
           strcmp(v, "NULL") == 0;
}

static bool expect_scalar(cfg_node *node, const char *what, s2d_err *err) {
    node->used = true;
    if (node->kind == CFG_SCALAR && !node->quoted && !cfg_is_null(node)) return true;
    char got[128];
    describe(node, got, sizeof got);
    if (node->kind == CFG_SCALAR && node->quoted)
        return cfg_node_err(err, node, "expected %s, got %s (quoted or !!str-tagged values are strings: drop the quotes or tag)", what, got);
    return cfg_node_err(err, node, "expected %s, got %s", what, got);
}

static bool is_digits(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return false;
    return true;
}

bool cfg_as_i64(cfg_node *node, int64_t min, int64_t max, int64_t *out, s2d_err *err) {
    if (!expect_scalar(node, "an integer", err)) return false;
    const char *v = node->value;
    const char *d = (v[0] == '+' || v[0] == '-') ? v + 1 : v;
    if (!is_digits(d)) return cfg_node_err(err, node, "expected an integer, got '%.*s'", CFG_SHOW, v);
    errno = 0;
    long long x = strtoll(v, NULL, 10);
    if (errno == ERANGE || x < min || x > max)
        return cfg_node_err(err, node, "%s is out of range: must be in [%lld, %lld]", v, (long long)min, (long long)max);
    *out = x;
    return true;
}

bool cfg_as_int(cfg_node *node, int min, int max, int *out, s2d_err *err) {
    int64_t x;
    if (!cfg_as_i64(node, min, max, &x, err)) return false;
    *out = (int)x;
    return true;
}

/* YAML 1.2 core schema float: [-+]? ( \.[0-9]+ | [0-9]+ (\.[0-9]*)? ) ([eE][-+]?[0-9]+)? */
static bool is_core_float(const char *s) {
    if (*s == '+' || *s == '-') s++;
    int digits = 0;
    while (*s >= '0' && *s <= '9') s++, digits++;
    if (*s == '.') {
        s++;
        while (*s >= '0' && *s <= '9') s++, digits++;
    }
    if (!digits) return false;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-') s++;
        if (!(*s >= '0' && *s <= '9')) return false;
        while (*s >= '0' && *s <= '9') s++;
    }
    return *s == '\0';
}

bool cfg_as_double(cfg_node *node, double min, double max, double *out, s2d_err *err) {
    if (!expect_scalar(node, "a number", err)) return false;
    const char *v = node->value;
    const char *u = (v[0] == '+' || v[0] == '-') ? v + 1 : v;
    double x;
    if (strcmp(u, ".inf") == 0 || strcmp(u, ".Inf") == 0 || strcmp(u, ".INF") == 0) {
        x = v[0] == '-' ? -INFINITY : INFINITY;
    } else if (strcmp(v, ".nan") == 0 || strcmp(v, ".NaN") == 0 || strcmp(v, ".NAN") == 0) {
        x = NAN;
    } else if (is_core_float(v)) {
        errno = 0;
        x = strtod(v, NULL);
        if (errno == ERANGE && fabs(x) > 1)
            return cfg_node_err(err, node, "%s overflows a double", v);
    } else {
        return cfg_node_err(err, node, "expected a number, got '%.*s'", CFG_SHOW, v);
    }
    if (!(x >= min && x <= max)) return cfg_node_err(err, node, "%s is out of range: must be in [%g, %g]", v, min, max);
    *out = x;
    return true;
}

bool cfg_as_float(cfg_node *node, float min, float max, float *out, s2d_err *err) {
    double x;
    if (!cfg_as_double(node, min, max, &x, err)) return false;
    *out = (float)x;
    return true;
}

bool cfg_as_bool(cfg_node *node, bool *out, s2d_err *err) {
    if (!expect_scalar(node, "true or false", err)) return false;
    const char *v = node->value;
    if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "TRUE")) {
        *out = true;
        return true;
    }
    if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "FALSE")) {
        *out = false;
        return true;
    }
    static const char *const yaml11[] = {"yes", "no", "on", "off", "y", "n"};
    for (size_t i = 0; i < S2D_ARRAY_LEN(yaml11); i++)
        if (!strcasecmp(v, yaml11[i]))
            return cfg_node_err(err, node, "expected true or false, got '%s' (YAML 1.1 booleans such as yes/no/on/off "
                                       "are not accepted: write true or false)", v);
    return cfg_node_err(err, node, "expected true or false, got '%.*s'", CFG_SHOW, v);
}

bool cfg_as_str(cfg_node *node, const char **out, s2d_err *err) {
    node->used = true;
    if (node->kind != CFG_SCALAR || cfg_is_null(node)) {
        char got[128];
        describe(node, got, sizeof got);
        return cfg_node_err(err, node, "expected a string, got %s", got);
    }
    *out = node->value;
    return true;
}

bool cfg_as_enum(cfg_node *node, const char *const *names, int n_names, int *out, s2d_err *err) {
    const char *v;
    char allowed[600] = "";
    size_t pos = 0;
    for (int i = 0; i < n_names && pos < sizeof allowed; i++)
        pos += (size_t)snprintf(allowed + pos, sizeof allowed - pos, "%s%s", i ? ", " : "", names[i]);
    if (node->kind != CFG_SCALAR || cfg_is_null(node)) {
        node->used = true;
        char got[128];
        describe(node, got, sizeof got);
        return cfg_node_err(err, node, "expected one of %s; got %s", allowed, got);
    }
    if (!cfg_as_str(node, &v, err)) return false;
    int i = name_index(v, names, n_names);
    if (i >= 0) return *out = i, true;
    return cfg_node_err(err, node, "expected one of %s; got '%.*s'", allowed, CFG_SHOW, v);
}

bool cfg_as_map(cfg_node *node, s2d_err *err) {
    node->used = true;
    if (node->kind == CFG_MAP) return true;
    char got[128];
    describe(node, got, sizeof got);
    return cfg_node_err(err, node, "expected a map, got %s", got);
}

bool cfg_as_seq(cfg_node *node, s2d_err *err) {
    node->used = true;
    if (node->kind == CFG_SEQ) return true;
    char got[128];
    describe(node, got, sizeof got);
    return cfg_node_err(err, node, "expected a sequence, got %s", got);
}

/* ------------------------------------------------------------------ keyed getters */

cfg_node *cfg_find(cfg_node *map, const char *key) {
    if (!map || map->kind != CFG_MAP) return NULL;
    for (int i = 0; i < map->n; i++)
        if (strcmp(map->keys[i], key) == 0) return map->items[i];
    return NULL;
}

static void note_asked(cfg_node *map, const char *key) {
    for (int i = 0; i < map->n_asked; i++)
        if (strcmp(map->asked[i], key) == 0) return;
    if (map->n_asked == map->cap_asked) {
        map->cap_asked = map->cap_asked ? 2 * map->cap_asked : 8;
        map->asked = xrealloc(map->asked, (size_t)map->cap_asked * sizeof *map->asked);
    }
    map->asked[map->n_asked++] = xstrdup(key);
}

/* Finds key in map (noting that it was asked for). *child is NULL when absent; `required` turns absence
 * (or null) into an error. */
static bool lookup(cfg_node *map, const char *key, bool required, cfg_node **child, s2d_err *err) {
    *child = NULL;
    if (!map) return err_set(err, "config: looking up '%s' in a missing map", key);
    if (map->kind != CFG_MAP) {
        map->used = true;
        char got[128];
        describe(map, got, sizeof got);
        return cfg_node_err(err, map, "expected a map (with key '%s'), got %s", key, got);
    }
    map->used = true;
    note_asked(map, key);
    cfg_node *c = cfg_find(map, key);
    if (c && cfg_is_null(c)) {
        c->used = true;
        if (required) return cfg_node_err(err, c, "a value is required here, got null");
        return true;
    }
    if (!c && required) return cfg_node_err(err, map, "missing required key '%s'", key);
    *child = c;
    return true;
}

bool cfg_get_i64(cfg_node *map, const char *key, int64_t min, int64_t max, int64_t *out, s2d_err *err) {
    cfg_node *c;
    return lookup(map, key, true, &c, err) && cfg_as_i64(c, min, max, out, err);
}
bool cfg_get_i64_or(cfg_node *map, const char *key, int64_t def, int64_t min, int64_t max, int64_t *out,
                    s2d_err *err) {
    cfg_node *c;
    if (!lookup(map, key, false, &c, err)) return false;
    if (!c) {
        *out = def;
        return true;
    }
    return cfg_as_i64(c, min, max, out, err);
}
bool cfg_get_int(cfg_node *map, const char *key, int min, int max, int *out, s2d_err *err) {
    cfg_node *c;
    return lookup(map, key, true, &c, err) && cfg_as_int(c, min, max, out, err);
}
bool cfg_get_int_or(cfg_node *map, const char *key, int def, int min, int max, int *out, s2d_err *err) {
    cfg_node *c;
    if (!lookup(map, key, false, &c, err)) return false;
    if (!c) {
        *out = def;
        return true;
    }
    return cfg_as_int(c, min, max, out, err);
}
bool cfg_get_double(cfg_node *map, const char *key, double min, double max, double *out, s2d_err *err) {
    cfg_node *c;
    return lookup(map, key, true, &c, err) && cfg_as_double(c, min, max, out, err);
}
bool cfg_get_double_or(cfg_node *map, const char *key, double def, double min, double max, double *out,
                       s2d_err *err) {
    cfg_node *c;
    if (!lookup(map, key, false, &c, err)) return false;
    if (!c) {
        *out = def;
        return true;
    }
    return cfg_as_double(c, min, max, out, err);
}
bool cfg_get_float(cfg_node *map, const char *key, float min, float max, float *out, s2d_err *err) {
    cfg_node *c;
    return lookup(map, key, true, &c, err) && cfg_as_float(c, min, max, out, err);
}
bool cfg_get_float_or(cfg_node *map, const char *key, float def, float min, float max, float *out, s2d_err *err) {
    cfg_node *c;
    if (!lookup(map, key, false, &c, err)) return false;
    if (!c) {
        *out = def;
        return true;
    }
    return cfg_as_float(c, min, max, out, err);
}
bool cfg_get_bool(cfg_node *map, const char *key, bool *out, s2d_err *err) {
    cfg_node *c;
    return lookup(map, key, true, &c, err) && cfg_as_bool(c, out, err);
}
bool cfg_get_bool_or(cfg_node *map, const char *key, bool def, bool *out, s2d_err *err) {
    cfg_node *c;
    if (!lookup(map, key, false, &c, err)) return false;
    if (!c) {
        *out = def;
        return true;
    }
    return cfg_as_bool(c, out, err);
}
bool cfg_get_str(cfg_node *map, const char *key, const char **out, s2d_err *err) {
    cfg_node *c;
    return lookup(map, key, true, &c, err) && cfg_as_str(c, out, err);
}
bool cfg_get_str_or(cfg_node *map, const char *key, const char *def, const char **out, s2d_err *err) {
    cfg_node *c;
    if (!lookup(map, key, false, &c, err)) return false;
    if (!c) {
        *out = def;
        return true;
    }
    return cfg_as_str(c, out, err);
}
bool cfg_get_enum(cfg_node *map, const char *key, const char *const *names, int n_names, int *out, s2d_err *err) {
    cfg_node *c;
    return lookup(map, key, true, &c, err) && cfg_as_enum(c, names, n_names, out, err);
}
bool cfg_get_enum_or(cfg_node *map, const char *key, const char *const *names, int n_names, int def, int *out,
                     s2d_err *err) {
    cfg_node *c;
    if (!lookup(map, key, false, &c, err)) return false;
    if (!c) {
        *out = def;
        return true;
    }
    return cfg_as_enum(c, names, n_names, out, err);
}
bool cfg_get_map(cfg_node *map, const char *key, cfg_node **out, s2d_err *err) {
    cfg_node *c;
    if (!lookup(map, key, true, &c, err) || !cfg_as_map(c, err)) return false;
    *out = c;
    return true;
}
bool cfg_get_map_opt(cfg_node *map, const char *key, cfg_node **out, s2d_err *err) {
    cfg_node *c;
    *out = NULL;
    if (!lookup(map, key, false, &c, err)) return false;
    if (c && !cfg_as_map(c, err)) return false;
    *out = c;
    return true;
}
bool cfg_get_seq(cfg_node *map, const char *key, cfg_node **out, s2d_err *err) {
    cfg_node *c;
    if (!lookup(map, key, true, &c, err) || !cfg_as_seq(c, err)) return false;
    *out = c;
    return true;
}
bool cfg_get_seq_opt(cfg_node *map, const char *key, cfg_node **out, s2d_err *err) {
    cfg_node *c;
    *out = NULL;
    if (!lookup(map, key, false, &c, err)) return false;
    if (c && !cfg_as_seq(c, err)) return false;
    *out = c;
    return true;
}

int cfg_len(const cfg_node *node) { return node && node->kind != CFG_SCALAR ? node->n : 0; }
cfg_node *cfg_at(cfg_node *node, int i) {
    CHECK(node && node->kind != CFG_SCALAR && i >= 0 && i < node->n, "cfg_at: index %d out of range", i);
    return node->items[i];
}
const char *cfg_key_at(const cfg_node *map, int i) {
    CHECK(map && map->kind == CFG_MAP && i >= 0 && i < map->n, "cfg_key_at: index %d out of range", i);
    return map->keys[i];
}

/* ------------------------------------------------------------------ unused keys */

static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64) return 1 << 20;
    int prev[65], cur[65];
    for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = S2D_MIN(sub, S2D_MIN(del, ins));
        }
        memcpy(prev, cur, sizeof(int) * (lb + 1));
    }
    return prev[lb];
}

static bool check_unused(const cfg_node *node, s2d_err *err) {
    if (node->kind == CFG_SCALAR) return true;
    for (int i = 0; i < node->n; i++) {
        const cfg_node *c = node->items[i];
        if (!c->used) {
            if (node->kind == CFG_SEQ)
                return cfg_node_err(err, c, "this sequence element was not used (too many elements?)");
            const char *key = node->keys[i];
            const char *best = NULL;
            int best_d = 1 << 20;
            for (int k = 0; k < node->n_asked; k++) {
                int d = edit_distance(key, node->asked[k]);
                if (d < best_d) best_d = d, best = node->asked[k];
            }
            int limit = S2D_MAX(2, (int)strlen(key) / 3);
            char hint[300] = "";
            if (best && best_d <= limit) snprintf(hint, sizeof hint, " (did you mean '%s'?)", best);
            char where[600];
            if (node->key_line[i] > 0)
                snprintf(where, sizeof where, "%s:%d:%d", c->origin, node->key_line[i], node->key_col[i]);
            else
                cfg_where(c, where, sizeof where);
            return err_set(err, "%s: unknown key '%s' at %s%s", where, key, c->path, hint);
        }
        if (!check_unused(c, err)) return false;
    }
    return true;
}

bool cfg_check_unused(const cfg_node *root, s2d_err *err) { return check_unused(root, err); }

bool cfg_equal(const cfg_node *a, const cfg_node *b) {
    if (a->kind != b->kind || a->n != b->n) return false;
    if (a->kind == CFG_SCALAR) {
        /* Null spellings (empty, ~, null) are equal: the writer may respell an empty plain value. */
        if (cfg_is_null(a) || cfg_is_null(b)) return cfg_is_null(a) && cfg_is_null(b);
        return a->quoted == b->quoted && strcmp(a->value, b->value) == 0;
    }
    for (int i = 0; i < a->n; i++) {
        if (a->kind == CFG_MAP && strcmp(a->keys[i], b->keys[i]) != 0) return false;
        if (!cfg_equal(a->items[i], b->items[i])) return false;
    }
    return true;
}
