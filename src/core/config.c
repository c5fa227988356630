/* config.c: libyaml document → cfg_node tree, strict typed getters, unused-key check, overrides, writer. */
#include "core/config.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

enum {
    CFG_MAX_DEPTH = 64,        /* guards alias cycles (an alias to an ancestor) */
    CFG_MAX_NODES = 1000000,   /* guards alias fan-out ("billion laughs") */
    CFG_MAX_MERGE_WORK = 4000000, /* map pairs visited, merges included: guards nested '<<' doubling */
    CFG_SHOW = 60,             /* longest value quoted in an error */
};

/* ------------------------------------------------------------------ nodes */

static cfg_node *node_new(cfg_kind kind, const char *origin, int line, int col, const char *path) {
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

static void node_append(cfg_node *parent, const char *key, int key_line, int key_col, cfg_node *child) {
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

static char *child_path(const char *parent, const char *key, int index) {
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
static bool node_err(s2d_err *err, const cfg_node *node, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool node_err(s2d_err *err, const cfg_node *node, const char *fmt, ...) {
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

/* ------------------------------------------------------------------ loading */

/* Bytes of values and paths after resolving aliases: an alias of a big string repeated must not expand
 * without bound (the node count alone allows 10^6 copies of a 1 MiB string). */
#define CFG_MAX_BYTES ((size_t)64 << 20)

typedef struct {
    yaml_document_t *doc;
    const char *origin;
    long count;
    long merge_work;
    size_t bytes;
    const char *text; /* the source, to see explicit tags (`!!str 32`) that libyaml's document does not keep */
    size_t text_len;
} conv_ctx;

/* True when the scalar's source starts (after an optional anchor) with a tag: `!!str 32` is a string even
 * though libyaml gives it the same tag as a plain 32. */
static bool explicitly_tagged(const conv_ctx *cx, const yaml_node_t *yn) {
    size_t i = yn->start_mark.index;
    if (!cx->text || i >= cx->text_len) return false;
    if (cx->text[i] == '&') {
        while (i < cx->text_len && cx->text[i] != ' ' && cx->text[i] != '\t' && cx->text[i] != '\n') i++;
        while (i < cx->text_len && (cx->text[i] == ' ' || cx->text[i] == '\t')) i++;
    }
    return i < cx->text_len && cx->text[i] == '!';
}

/* The keys of a map under construction, hashed (open addressing, indices into out->keys) so that duplicate
 * checks stay linear in the number of keys. */
typedef struct {
    int *slot; /* -1 = empty */
    size_t cap; /* a power of two, > 2 * keys */
} keyset;

static uint64_t key_hash(const char *k) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *k; k++) h = (h ^ (unsigned char)*k) * 0x100000001b3ULL;
    return h;
}
static void keyset_insert_index(keyset *ks, const cfg_node *map, int i) {
    size_t j = (size_t)key_hash(map->keys[i]) & (ks->cap - 1);
    while (ks->slot[j] >= 0) j = (j + 1) & (ks->cap - 1);
    ks->slot[j] = i;
}
/* Index of key in map, or -1. */
static int keyset_find(const keyset *ks, const cfg_node *map, const char *key) {
    if (!ks->cap) return -1;
    for (size_t j = (size_t)key_hash(key) & (ks->cap - 1); ks->slot[j] >= 0; j = (j + 1) & (ks->cap - 1))
        if (strcmp(map->keys[ks->slot[j]], key) == 0) return ks->slot[j];
    return -1;
}
/* Call after appending map->keys[map->n - 1]. */
static void keyset_added(keyset *ks, const cfg_node *map) {
    if ((size_t)map->n * 2 >= ks->cap) {
        free(ks->slot);
        ks->cap = ks->cap ? 2 * ks->cap : 16;
        while ((size_t)map->n * 2 >= ks->cap) ks->cap *= 2;
        ks->slot = xmalloc(ks->cap * sizeof(int));
        for (size_t j = 0; j < ks->cap; j++) ks->slot[j] = -1;
        for (int i = 0; i < map->n; i++) keyset_insert_index(ks, map, i);
    } else {
        keyset_insert_index(ks, map, map->n - 1);
    }
}

static void mark_of(const yaml_node_t *yn, int *line, int *col) {
    *line = (int)yn->start_mark.line + 1;
    *col = (int)yn->start_mark.column + 1;
}

static bool check_tag(const yaml_node_t *yn, const char *origin, s2d_err *err) {
    const char *want = yn->type == YAML_SCALAR_NODE     ? YAML_STR_TAG
                       : yn->type == YAML_SEQUENCE_NODE ? YAML_SEQ_TAG
                                                        : YAML_MAP_TAG;
    if (yn->tag && strcmp((const char *)yn->tag, want) != 0)
        return err_set(err, "%s:%zu:%zu: unsupported YAML tag '%s' (tags are not used in s2d configs)", origin,
                       yn->start_mark.line + 1, yn->start_mark.column + 1, (const char *)yn->tag);
    return true;
}

static cfg_node *convert(conv_ctx *cx, yaml_node_t *yn, const char *path, int depth, s2d_err *err);

/* Adds the pairs of yaml map `ym` to `out`. Merge keys (`<<`) are applied after the explicit keys, and only
 * for keys not already present. */
static bool convert_map_pairs(conv_ctx *cx, yaml_node_t *ym, cfg_node *out, keyset *ks, int depth, bool merging,
                              s2d_err *err) {
    for (int pass = 0; pass < 2; pass++) {
        for (yaml_node_pair_t *p = ym->data.mapping.pairs.start; p < ym->data.mapping.pairs.top; p++) {
            yaml_node_t *yk = yaml_document_get_node(cx->doc, p->key);
            yaml_node_t *yv = yaml_document_get_node(cx->doc, p->value);
            int kl, kc;
            mark_of(yk, &kl, &kc);
            if (++cx->merge_work > CFG_MAX_MERGE_WORK)
                return err_set(err, "%s:%d:%d: %s: more than %d map entries visited while resolving merge keys "
                               "('<<' of aliases nested too deep or too often)",
                               cx->origin, kl, kc, cfg_path(out), CFG_MAX_MERGE_WORK);
            if (yk->type != YAML_SCALAR_NODE)
                return err_set(err, "%s:%d:%d: %s: map keys must be scalars", cx->origin, kl, kc, cfg_path(out));
            const char *key = (const char *)yk->data.scalar.value;
            bool is_merge = yk->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && strcmp(key, "<<") == 0;
            if (is_merge != (pass == 1)) continue;
            if (is_merge) {
                /* <<: *a  or  <<: [*a, *b] (earlier maps win) */
                int nm = yv->type == YAML_SEQUENCE_NODE ? (int)(yv->data.sequence.items.top - yv->data.sequence.items.start) : 1;
                for (int m = 0; m < nm; m++) {
                    yaml_node_t *src =
                        yv->type == YAML_SEQUENCE_NODE ? yaml_document_get_node(cx->doc, yv->data.sequence.items.start[m]) : yv;
                    if (src->type != YAML_MAPPING_NODE)
                        return err_set(err, "%s:%d:%d: %s: the merge key '<<' needs a map or a list of maps",
                                       cx->origin, kl, kc, cfg_path(out));
                    if (depth > CFG_MAX_DEPTH)
                        return err_set(err, "%s:%d:%d: nesting deeper than %d (an alias cycle?)", cx->origin, kl, kc,
                                       CFG_MAX_DEPTH);
                    if (!convert_map_pairs(cx, src, out, ks, depth + 1, true, err)) return false;
                }
                continue;
            }
            if (strlen(key) != yk->data.scalar.length)
                return err_set(err, "%s:%d:%d: a key contains a NUL character", cx->origin, kl, kc);
            int dup = keyset_find(ks, out, key);
            if (dup >= 0) {
                if (merging) continue; /* explicit (or earlier merged) key wins */
                char *pp = child_path(out->path, key, 0);
                bool r = err_set(err, "%s:%d:%d: duplicate key '%s' at %s (first defined at line %d, column %d)",
                                 cx->origin, kl, kc, key, pp, out->key_line[dup], out->key_col[dup]);
                free(pp);
                return r;
            }
            char *pp = child_path(out->path, key, 0);
            cfg_node *child = convert(cx, yv, pp, depth + 1, err);
            free(pp);
            if (!child) return false;
            node_append(out, key, kl, kc, child);
            keyset_added(ks, out);
        }
    }
    return true;
}

static cfg_node *convert(conv_ctx *cx, yaml_node_t *yn, const char *path, int depth, s2d_err *err) {
    int line, col;
    mark_of(yn, &line, &col);
    if (depth > CFG_MAX_DEPTH) {
        err_set(err, "%s:%d:%d: nesting deeper than %d (an alias cycle?)", cx->origin, line, col, CFG_MAX_DEPTH);
        return NULL;
    }
    if (++cx->count > CFG_MAX_NODES) {
        err_set(err, "%s:%d:%d: more than %d nodes after resolving aliases", cx->origin, line, col, CFG_MAX_NODES);
        return NULL;
    }
    cx->bytes += strlen(path) + strlen(cx->origin) + 2 + (yn->type == YAML_SCALAR_NODE ? yn->data.scalar.length + 1 : 0);
    if (cx->bytes > CFG_MAX_BYTES) {
        err_set(err, "%s:%d:%d: %s: more than %zu MiB of values after resolving aliases (a big value aliased "
                "many times?)", cx->origin, line, col, path[0] ? path : "(root)", CFG_MAX_BYTES >> 20);
        return NULL;
    }
    if (!check_tag(yn, cx->origin, err)) return NULL;
    cfg_node *out = NULL;
    switch (yn->type) {
    case YAML_SCALAR_NODE:
        if (strlen((const char *)yn->data.scalar.value) != yn->data.scalar.length) {
            err_set(err, "%s:%d:%d: %s: the value contains a NUL character", cx->origin, line, col,
                    path[0] ? path : "(root)");
            return NULL;
        }
        out = node_new(CFG_SCALAR, cx->origin, line, col, path);
        out->value = xstrdup((const char *)yn->data.scalar.value);
        out->quoted = yn->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || explicitly_tagged(cx, yn);
        return out;
    case YAML_SEQUENCE_NODE:
        out = node_new(CFG_SEQ, cx->origin, line, col, path);
        for (yaml_node_item_t *it = yn->data.sequence.items.start; it < yn->data.sequence.items.top; it++) {
            char *pp = child_path(path, NULL, out->n);
            cfg_node *child = convert(cx, yaml_document_get_node(cx->doc, *it), pp, depth + 1, err);
            free(pp);
            if (!child) {
                cfg_free(out);
                return NULL;
            }
            node_append(out, NULL, 0, 0, child);
        }
        return out;
    case YAML_MAPPING_NODE:
        out = node_new(CFG_MAP, cx->origin, line, col, path);
        keyset ks = {0};
        bool ok = convert_map_pairs(cx, yn, out, &ks, depth, false, err);
        free(ks.slot);
        if (!ok) {
            cfg_free(out);
            return NULL;
        }
        return out;
    default:
        err_set(err, "%s:%d:%d: empty YAML node", cx->origin, line, col);
        return NULL;
    }
}

static bool parser_error(const yaml_parser_t *p, const char *origin, s2d_err *err) {
    const char *problem = p->problem ? p->problem : "unknown error";
    if (p->error == YAML_READER_ERROR)
        return err_set(err, "%s: YAML error at byte %zu: %s (value %d)", origin, p->problem_offset, problem,
                       p->problem_value);
    if (p->context)
        return err_set(err, "%s:%zu:%zu: YAML syntax error: %s (%s, at line %zu, column %zu)", origin,
                       p->problem_mark.line + 1, p->problem_mark.column + 1, problem, p->context,
                       p->context_mark.line + 1, p->context_mark.column + 1);
    return err_set(err, "%s:%zu:%zu: YAML syntax error: %s", origin, p->problem_mark.line + 1,
                   p->problem_mark.column + 1, problem);
}

/* Parses text as one YAML document into a node tree rooted at `path`. An empty document gives NULL with
 * *empty = true. */
static bool parse_tree(const char *text, size_t len, const char *origin, const char *path, cfg_node **out,
                       bool *empty, s2d_err *err) {
    *out = NULL;
    *empty = false;
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) die("yaml_parser_initialize: out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    yaml_document_t doc;
    if (!yaml_parser_load(&parser, &doc)) {
        parser_error(&parser, origin, err);
        yaml_parser_delete(&parser);
        return false;
    }
    bool ok = true;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        *empty = true;
    } else {
        conv_ctx cx = {.doc = &doc, .origin = origin, .count = 0, .text = text, .text_len = len};
        *out = convert(&cx, root, path, 0, err);
        ok = *out != NULL;
    }
    yaml_document_delete(&doc);
    if (ok && root) {
        yaml_document_t next;
        if (!yaml_parser_load(&parser, &next)) {
            ok = parser_error(&parser, origin, err);
        } else {
            yaml_node_t *r2 = yaml_document_get_root_node(&next);
            if (r2) ok = err_set(err, "%s:%zu:%zu: a second YAML document ('---'): a config holds one document",
                                 origin, r2->start_mark.line + 1, r2->start_mark.column + 1);
            yaml_document_delete(&next);
        }
        if (!ok) {
            cfg_free(*out);
            *out = NULL;
        }
    }
    yaml_parser_delete(&parser);
    return ok;
}

bool cfg_load_string(const char *text, const char *name, cfg_node **root, s2d_err *err) {
    bool empty;
    if (!parse_tree(text, strlen(text), name, "", root, &empty, err)) return false;
    if (empty) {
        *root = node_new(CFG_MAP, name, 1, 1, "");
        return true;
    }
    if ((*root)->kind != CFG_MAP) {
        node_err(err, *root, "the top level of a config must be a map of keys");
        cfg_free(*root);
        *root = NULL;
        return false;
    }
    (*root)->used = true;
    return true;
}

bool cfg_load_file(const char *path, cfg_node **root, s2d_err *err) {
    char *text;
    size_t len;
    if (!read_file(path, &text, &len, err)) return false;
    if (strlen(text) != len) {
        free(text);
        return err_set(err, "%s: contains a NUL byte (not a YAML text file)", path);
    }
    bool ok = cfg_load_string(text, path, root, err);
    free(text);
    return ok;
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
        return node_err(err, node, "expected %s, got %s (quoted or !!str-tagged values are strings: drop the quotes or tag)", what, got);
    return node_err(err, node, "expected %s, got %s", what, got);
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
    if (!is_digits(d)) return node_err(err, node, "expected an integer, got '%.*s'", CFG_SHOW, v);
    errno = 0;
    long long x = strtoll(v, NULL, 10);
    if (errno == ERANGE || x < min || x > max)
        return node_err(err, node, "%s is out of range: must be in [%lld, %lld]", v, (long long)min, (long long)max);
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
            return node_err(err, node, "%s overflows a double", v);
    } else {
        return node_err(err, node, "expected a number, got '%.*s'", CFG_SHOW, v);
    }
    if (!(x >= min && x <= max)) return node_err(err, node, "%s is out of range: must be in [%g, %g]", v, min, max);
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
            return node_err(err, node, "expected true or false, got '%s' (YAML 1.1 booleans such as yes/no/on/off "
                                       "are not accepted: write true or false)", v);
    return node_err(err, node, "expected true or false, got '%.*s'", CFG_SHOW, v);
}

bool cfg_as_str(cfg_node *node, const char **out, s2d_err *err) {
    node->used = true;
    if (node->kind != CFG_SCALAR || cfg_is_null(node)) {
        char got[128];
        describe(node, got, sizeof got);
        return node_err(err, node, "expected a string, got %s", got);
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
        return node_err(err, node, "expected one of %s; got %s", allowed, got);
    }
    if (!cfg_as_str(node, &v, err)) return false;
    int i = name_index(v, names, n_names);
    if (i >= 0) return *out = i, true;
    return node_err(err, node, "expected one of %s; got '%.*s'", allowed, CFG_SHOW, v);
}

bool cfg_as_map(cfg_node *node, s2d_err *err) {
    node->used = true;
    if (node->kind == CFG_MAP) return true;
    char got[128];
    describe(node, got, sizeof got);
    return node_err(err, node, "expected a map, got %s", got);
}

bool cfg_as_seq(cfg_node *node, s2d_err *err) {
    node->used = true;
    if (node->kind == CFG_SEQ) return true;
    char got[128];
    describe(node, got, sizeof got);
    return node_err(err, node, "expected a sequence, got %s", got);
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
        return node_err(err, map, "expected a map (with key '%s'), got %s", key, got);
    }
    map->used = true;
    note_asked(map, key);
    cfg_node *c = cfg_find(map, key);
    if (c && cfg_is_null(c)) {
        c->used = true;
        if (required) return node_err(err, c, "a value is required here, got null");
        return true;
    }
    if (!c && required) return node_err(err, map, "missing required key '%s'", key);
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
                return node_err(err, c, "this sequence element was not used (too many elements?)");
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

/* ------------------------------------------------------------------ overrides */

static void set_origin_tree(cfg_node *n, const char *origin, const char *path) {
    free(n->origin);
    n->origin = xstrdup(origin);
    n->line = n->col = 0;
    free(n->path);
    n->path = xstrdup(path);
    for (int i = 0; i < n->n; i++) {
        char *pp = child_path(path, n->kind == CFG_MAP ? n->keys[i] : NULL, i);
        if (n->kind == CFG_MAP) n->key_line[i] = n->key_col[i] = 0;
        set_origin_tree(n->items[i], origin, pp);
        free(pp);
    }
}

/* One step of a path: a key or an index. */
typedef struct {
    char key[256];
    long index; /* -1 for a key step */
} path_step;

static bool parse_path(const char *path, path_step *steps, int max_steps, int *n_steps, s2d_err *err) {
    int n = 0;
    const char *s = path;
    if (!*s) return err_set(err, "--set: empty key path");
    while (*s) {
        size_t len = strcspn(s, ".[]");
        if (len == 0) return err_set(err, "--set %s: empty key in the path", path);
        if (len >= sizeof steps[0].key) return err_set(err, "--set %s: key too long", path);
        if (n == max_steps) return err_set(err, "--set %s: path too deep", path);
        memcpy(steps[n].key, s, len);
        steps[n].key[len] = '\0';
        steps[n++].index = -1;
        s += len;
        while (*s == '[') {
            char *end;
            errno = 0;
            long idx = strtol(s + 1, &end, 10);
            if (end == s + 1 || *end != ']' || idx < 0 || errno || !(s[1] >= '0' && s[1] <= '9'))
                return err_set(err, "--set %s: bad index (expected [N] with N >= 0)", path);
            if (n == max_steps) return err_set(err, "--set %s: path too deep", path);
            steps[n].key[0] = '\0';
            steps[n++].index = idx;
            s = end + 1;
        }
        if (*s == '.') {
            s++;
            if (!*s) return err_set(err, "--set %s: the path ends with '.'", path);
        } else if (*s) {
            return err_set(err, "--set %s: unexpected '%c' in the path", path, *s);
        }
    }
    *n_steps = n;
    return true;
}

bool cfg_set(cfg_node *root, const char *path, const char *value, s2d_err *err) {
    size_t olen = strlen(path) + strlen(value) + 16;
    char *origin = xmalloc(olen);
    snprintf(origin, olen, "--set %s=%s", path, value);
    path_step steps[64];
    int n_steps = 0;
    cfg_node *val = NULL;
    bool ok = false;
    if (!parse_path(path, steps, 64, &n_steps, err)) goto done;
    if (!root || root->kind != CFG_MAP) {
        err_set(err, "%s: the config root is not a map", origin);
        goto done;
    }
    if (value[0] == '\0') { /* an empty value would read as null: then a missing key is blamed on the file */
        err_set(err, "%s: the value is empty (write %s=null for null, %s=\"\" for an empty string)", origin, path,
                path);
        goto done;
    }
    /* The value: quoted or flow values go through libyaml; anything else is the plain text as given. */
    if (value[0] == '[' || value[0] == '{' || value[0] == '"' || value[0] == '\'') {
        bool empty;
        if (!parse_tree(value, strlen(value), origin, "", &val, &empty, err)) goto done;
        if (empty || ((value[0] == '"' || value[0] == '\'') && val->kind != CFG_SCALAR)) {
            err_set(err, "%s: the value is not a single quoted scalar", origin);
            goto done;
        }
    } else {
        val = node_new(CFG_SCALAR, origin, 0, 0, "");
        val->value = xstrdup(value);
        /* The text is taken as given; it counts as a plain scalar (so "3" is an integer) only if YAML would
         * read it back as that same plain scalar, otherwise it is a string (e.g. "a: b", " 5"). */
        cfg_node *probe = NULL;
        bool empty = false;
        s2d_err ignored;
        val->quoted = !(parse_tree(value, strlen(value), origin, "", &probe, &empty, &ignored) &&
                        (empty ? value[0] == '\0'
                               : probe->kind == CFG_SCALAR && !probe->quoted && strcmp(probe->value, value) == 0));
        cfg_free(probe);
    }
    cfg_node *cur = root;
    for (int s = 0; s < n_steps; s++) {
        bool last = s == n_steps - 1;
        int slot = -1;
        if (steps[s].index < 0) {
            if (cur->kind != CFG_MAP) {
                err_set(err, "%s: %s is %s, not a map (cannot set key '%s')", origin, cfg_path(cur),
                        cur->kind == CFG_SEQ ? "a sequence" : "a scalar", steps[s].key);
                goto done;
            }
            for (int i = 0; i < cur->n; i++)
                if (strcmp(cur->keys[i], steps[s].key) == 0) slot = i;
            if (slot < 0) {
                if (!last && steps[s + 1].index >= 0) {
                    char *pp = child_path(cur->path, steps[s].key, 0);
                    err_set(err, "%s: %s does not exist, so it cannot be indexed", origin, pp);
                    free(pp);
                    goto done;
                }
                char *pp = child_path(cur->path, steps[s].key, 0);
                cfg_node *fresh = last ? node_new(CFG_SCALAR, origin, 0, 0, pp) : node_new(CFG_MAP, origin, 0, 0, pp);
                if (last) fresh->value = xstrdup("");
                free(pp);
                node_append(cur, steps[s].key, 0, 0, fresh);
                slot = cur->n - 1;
            }
        } else {
            if (cur->kind != CFG_SEQ) {
                err_set(err, "%s: %s is %s, not a sequence (cannot index [%ld])", origin, cfg_path(cur),
                        cur->kind == CFG_MAP ? "a map" : "a scalar", steps[s].index);
                goto done;
            }
            if (steps[s].index >= cur->n) {
                err_set(err, "%s: index %ld is past the end of %s (%d elements)", origin, steps[s].index,
                        cfg_path(cur), cur->n);
                goto done;
            }
            slot = (int)steps[s].index;
        }
        if (last) {
            cfg_node *old = cur->items[slot];
            set_origin_tree(val, origin, old->path);
            cfg_free(old);
            cur->items[slot] = val;
            if (cur->kind == CFG_MAP) cur->key_line[slot] = cur->key_col[slot] = 0;
            val = NULL;
        } else {
            cur = cur->items[slot];
        }
    }
    ok = true;
done:
    cfg_free(val);
    free(origin);
    return ok;
}

bool cfg_set_arg(cfg_node *root, const char *assignment, s2d_err *err) {
    const char *eq = strchr(assignment, '=');
    if (!eq) return err_set(err, "--set %s: expected key.path=value", assignment);
    char *path = xmalloc((size_t)(eq - assignment) + 1);
    memcpy(path, assignment, (size_t)(eq - assignment));
    path[eq - assignment] = '\0';
    bool ok = cfg_set(root, path, eq + 1, err);
    free(path);
    return ok;
}

/* ------------------------------------------------------------------ writer */

static bool emit(yaml_emitter_t *em, yaml_event_t *ev, s2d_err *err) {
    if (!yaml_emitter_emit(em, ev))
        return err_set(err, "writing YAML: %s", em->problem ? em->problem : "emitter error");
    return true;
}

static bool emit_scalar(yaml_emitter_t *em, const char *text, bool quoted, s2d_err *err) {
    yaml_event_t ev;
    /* Quoted strings stay quoted (so "3" stays a string); plain text stays plain where YAML allows it. */
    yaml_scalar_style_t style = quoted ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_PLAIN_SCALAR_STYLE;
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)text, (int)strlen(text), 1, 1, style))
        die("yaml_scalar_event_initialize failed");
    return emit(em, &ev, err);
}

static bool emit_node(yaml_emitter_t *em, const cfg_node *n, s2d_err *err) {
    yaml_event_t ev;
    switch (n->kind) {
    case CFG_SCALAR:
        return emit_scalar(em, n->value, n->quoted, err);
    case CFG_SEQ:
        if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE))
            die("yaml event init failed");
        if (!emit(em, &ev, err)) return false;
        for (int i = 0; i < n->n; i++)
            if (!emit_node(em, n->items[i], err)) return false;
        yaml_sequence_end_event_initialize(&ev);
        return emit(em, &ev, err);
    case CFG_MAP:
        if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE))
            die("yaml event init failed");
        if (!emit(em, &ev, err)) return false;
        for (int i = 0; i < n->n; i++) {
            /* A key that reads as "<<" would become a merge key on reload: quote it. */
            if (!emit_scalar(em, n->keys[i], strcmp(n->keys[i], "<<") == 0, err)) return false;
            if (!emit_node(em, n->items[i], err)) return false;
        }
        yaml_mapping_end_event_initialize(&ev);
        return emit(em, &ev, err);
    }
    return false;
}

bool cfg_write(const cfg_node *root, FILE *fp, s2d_err *err) {
    yaml_emitter_t em;
    yaml_event_t ev;
    if (!yaml_emitter_initialize(&em)) die("yaml_emitter_initialize: out of memory");
    yaml_emitter_set_output_file(&em, fp);
    yaml_emitter_set_unicode(&em, 1);
    yaml_emitter_set_width(&em, -1);
    yaml_emitter_set_indent(&em, 2);
    bool ok = true;
    yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
    ok = ok && emit(&em, &ev, err);
    if (ok) {
        yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1);
        ok = emit(&em, &ev, err);
    }
    ok = ok && emit_node(&em, root, err);
    if (ok) {
        yaml_document_end_event_initialize(&ev, 1);
        ok = emit(&em, &ev, err);
    }
    if (ok) {
        yaml_stream_end_event_initialize(&ev);
        ok = emit(&em, &ev, err);
    }
    if (ok && !yaml_emitter_flush(&em)) ok = err_set(err, "writing YAML: flush failed");
    yaml_emitter_delete(&em);
    if (ok && ferror(fp)) ok = err_set(err, "writing YAML: %s", strerror(errno));
    return ok;
}

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
