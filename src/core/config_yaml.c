/* config_yaml.c: libyaml document → cfg_node tree (bounded: depth, nodes, merge work, bytes), --set overrides
 * and the YAML writer. */
#include "core/config_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

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
                char *pp = cfg_child_path(out->path, key, 0);
                bool r = err_set(err, "%s:%d:%d: duplicate key '%s' at %s (first defined at line %d, column %d)",
                                 cx->origin, kl, kc, key, pp, out->key_line[dup], out->key_col[dup]);
                free(pp);
                return r;
            }
            char *pp = cfg_child_path(out->path, key, 0);
            cfg_node *child = convert(cx, yv, pp, depth + 1, err);
            free(pp);
            if (!child) return false;
            cfg_node_append(out, key, kl, kc, child);
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
        out = cfg_node_new(CFG_SCALAR, cx->origin, line, col, path);
        out->value = xstrdup((const char *)yn->data.scalar.value);
        out->quoted = yn->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || explicitly_tagged(cx, yn);
        return out;
    case YAML_SEQUENCE_NODE:
        out = cfg_node_new(CFG_SEQ, cx->origin, line, col, path);
        for (yaml_node_item_t *it = yn->data.sequence.items.start; it < yn->data.sequence.items.top; it++) {
            char *pp = cfg_child_path(path, NULL, out->n);
            cfg_node *child = convert(cx, yaml_document_get_node(cx->doc, *it), pp, depth + 1, err);
            free(pp);
            if (!child) {
                cfg_free(out);
                return NULL;
            }
            cfg_node_append(out, NULL, 0, 0, child);
        }
        return out;
    case YAML_MAPPING_NODE:
        out = cfg_node_new(CFG_MAP, cx->origin, line, col, path);
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
        *root = cfg_node_new(CFG_MAP, name, 1, 1, "");
        return true;
    }
    if ((*root)->kind != CFG_MAP) {
        cfg_node_err(err, *root, "the top level of a config must be a map of keys");
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

/* ------------------------------------------------------------------ overrides */

static void set_origin_tree(cfg_node *n, const char *origin, const char *path) {
    free(n->origin);
    n->origin = xstrdup(origin);
    n->line = n->col = 0;
    free(n->path);
    n->path = xstrdup(path);
    for (int i = 0; i < n->n; i++) {
        char *pp = cfg_child_path(path, n->kind == CFG_MAP ? n->keys[i] : NULL, i);
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
        val = cfg_node_new(CFG_SCALAR, origin, 0, 0, "");
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
                    char *pp = cfg_child_path(cur->path, steps[s].key, 0);
                    err_set(err, "%s: %s does not exist, so it cannot be indexed", origin, pp);
                    free(pp);
                    goto done;
                }
                char *pp = cfg_child_path(cur->path, steps[s].key, 0);
                cfg_node *fresh = last ? cfg_node_new(CFG_SCALAR, origin, 0, 0, pp) : cfg_node_new(CFG_MAP, origin, 0, 0, pp);
                if (last) fresh->value = xstrdup("");
                free(pp);
                cfg_node_append(cur, steps[s].key, 0, 0, fresh);
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
