/* config.h: strict YAML configuration (libyaml document API).
 *
 * A file loads into a tree of nodes (map / seq / scalar); every node remembers where it came from (file,
 * 1-based line and column, or the "--set key=value" override that made it) and its key path, e.g.
 * `pipeline[2].algo.clip_high`. Typed getters check the type and the range and fail with an s2d_err that
 * names FILE:LINE:COL and the key path ("expected an integer, got 'abc'").
 *
 * Scalars follow the YAML 1.2 core schema, strictly:
 *  - integers: decimal digits with an optional sign (no hex/octal, no underscores, no "1e3");
 *  - floats: decimal or exponent notation (1, 1.5, -2e-4, .5), plus .inf/-.inf/.nan (any case);
 *  - booleans: true/True/TRUE/false/False/FALSE only (YAML 1.1's yes/no/on/off are rejected, with a hint);
 *  - null: empty, ~, null/Null/NULL. An optional getter treats a null value as absent (default applies);
 *  - a quoted scalar is always a string: "3" is not an integer.
 * Every value read is marked used; cfg_check_unused() reports the first key nobody read (a typo), with a
 * "did you mean X?" drawn from the keys the program asked for in that map. Duplicate keys are an error.
 * Anchors and aliases are resolved by libyaml (each alias becomes a copy); the merge key `<<` is supported
 * (explicit keys win over merged ones). */
#pragma once
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/common.h"

typedef enum { CFG_SCALAR, CFG_SEQ, CFG_MAP } cfg_kind;

typedef struct cfg_node cfg_node;
struct cfg_node {
    cfg_kind kind;
    char *origin; /* file name, or "--set a.b=v" for overrides */
    int line, col;   /* 1-based; 0 for overrides (no position) */
    char *path;   /* key path from the root: "" for the root, "a.b[2].c" */
    bool used;    /* read by a getter */
    /* CFG_SCALAR */
    char *value;
    bool quoted; /* single/double quoted, block literal or tagged !!str: always a string */
    /* CFG_SEQ and CFG_MAP: n children; a map also has keys (and where each key was written) */
    int n, cap;
    cfg_node **items;
    char **keys;
    int *key_line, *key_col;
    /* CFG_MAP: the keys the program asked for (found or not): candidates for "did you mean" */
    char **asked;
    int n_asked, cap_asked;
};

/* Loading. `name` appears in errors for the string variant. The root of a config file must be a map. */
bool cfg_load_file(const char *path, cfg_node **root, s2d_err *err);
bool cfg_load_string(const char *text, const char *name, cfg_node **root, s2d_err *err);
void cfg_free(cfg_node *node);

/* "FILE:LINE:COL" or the override text; path as "a.b[2]" or "(root)". */
void cfg_where(const cfg_node *node, char *buf, size_t n);
const char *cfg_path(const cfg_node *node);

/* Lookup without marking or type checks (NULL when absent or when map is not a map). */
cfg_node *cfg_find(cfg_node *map, const char *key);
bool cfg_is_null(const cfg_node *node);

/* Typed reads of a node (marks it used). Ranges are inclusive. */
bool cfg_as_i64(cfg_node *node, int64_t min, int64_t max, int64_t *out, s2d_err *err);
bool cfg_as_int(cfg_node *node, int min, int max, int *out, s2d_err *err);
bool cfg_as_double(cfg_node *node, double min, double max, double *out, s2d_err *err);
bool cfg_as_float(cfg_node *node, float min, float max, float *out, s2d_err *err);
bool cfg_as_bool(cfg_node *node, bool *out, s2d_err *err);
bool cfg_as_str(cfg_node *node, const char **out, s2d_err *err); /* any non-null scalar, text as written */
bool cfg_as_enum(cfg_node *node, const char *const *names, int n_names, int *out, s2d_err *err);
bool cfg_as_map(cfg_node *node, s2d_err *err);
bool cfg_as_seq(cfg_node *node, s2d_err *err);

/* Keyed reads from a map: the plain form requires the key, the _or form takes a default when the key is
 * absent or null. Both fail when `map` is not a map. */
bool cfg_get_i64(cfg_node *map, const char *key, int64_t min, int64_t max, int64_t *out, s2d_err *err);
bool cfg_get_i64_or(cfg_node *map, const char *key, int64_t def, int64_t min, int64_t max, int64_t *out,
                    s2d_err *err);
bool cfg_get_int(cfg_node *map, const char *key, int min, int max, int *out, s2d_err *err);
bool cfg_get_int_or(cfg_node *map, const char *key, int def, int min, int max, int *out, s2d_err *err);
bool cfg_get_double(cfg_node *map, const char *key, double min, double max, double *out, s2d_err *err);
bool cfg_get_double_or(cfg_node *map, const char *key, double def, double min, double max, double *out,
                       s2d_err *err);
bool cfg_get_float(cfg_node *map, const char *key, float min, float max, float *out, s2d_err *err);
bool cfg_get_float_or(cfg_node *map, const char *key, float def, float min, float max, float *out, s2d_err *err);
bool cfg_get_bool(cfg_node *map, const char *key, bool *out, s2d_err *err);
bool cfg_get_bool_or(cfg_node *map, const char *key, bool def, bool *out, s2d_err *err);
bool cfg_get_str(cfg_node *map, const char *key, const char **out, s2d_err *err);
bool cfg_get_str_or(cfg_node *map, const char *key, const char *def, const char **out, s2d_err *err);
bool cfg_get_enum(cfg_node *map, const char *key, const char *const *names, int n_names, int *out, s2d_err *err);
bool cfg_get_enum_or(cfg_node *map, const char *key, const char *const *names, int n_names, int def, int *out,
                     s2d_err *err);
/* Sub-trees: *out is the child node; the _opt forms set *out = NULL when the key is absent or null. */
bool cfg_get_map(cfg_node *map, const char *key, cfg_node **out, s2d_err *err);
bool cfg_get_map_opt(cfg_node *map, const char *key, cfg_node **out, s2d_err *err);
bool cfg_get_seq(cfg_node *map, const char *key, cfg_node **out, s2d_err *err);
bool cfg_get_seq_opt(cfg_node *map, const char *key, cfg_node **out, s2d_err *err);

/* Children of a seq or map (no marking: the typed read of the child marks it). */
int cfg_len(const cfg_node *node);
cfg_node *cfg_at(cfg_node *node, int i);
const char *cfg_key_at(const cfg_node *map, int i);

/* The first key or element that no getter read (depth-first, file order): "FILE:L:C: unknown key 'x' at
 * a.b.x (did you mean 'y'?)". true when everything was read. */
bool cfg_check_unused(const cfg_node *root, s2d_err *err);

/* Override: path "a.b[2].c" (keys separated by '.', sequence indices in [N]); the value is a YAML scalar,
 * or a flow sequence/map when it starts with '[' or '{' (a value starting with a quote is a quoted scalar).
 * Missing map keys are created; an index past the end of a sequence is an error. */
bool cfg_set(cfg_node *root, const char *path, const char *value, s2d_err *err);
/* "a.b=value" (the command line's --set argument). */
bool cfg_set_arg(cfg_node *root, const char *assignment, s2d_err *err);

/* Emit the tree as YAML (block style, scalars keep plain/quoted so it re-loads to the same tree). */
bool cfg_write(const cfg_node *root, FILE *fp, s2d_err *err);
/* Structural equality: kinds, keys in order, scalar text and quotedness (positions are ignored). */
bool cfg_equal(const cfg_node *a, const cfg_node *b);
