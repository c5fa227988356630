/* config_internal.h: what config.c (nodes, typed getters, unused keys) and config_yaml.c (libyaml loading,
 * overrides, the writer) share. Not part of the interface: include core/config.h. */
#pragma once
#include "core/config.h"

enum {
    CFG_MAX_DEPTH = 64,        /* guards alias cycles (an alias to an ancestor) */
    CFG_MAX_NODES = 1000000,   /* guards alias fan-out ("billion laughs") */
    CFG_MAX_MERGE_WORK = 4000000, /* map pairs visited, merges included: guards nested '<<' doubling */
    CFG_SHOW = 60,             /* longest value quoted in an error */
};

char *cfg_child_path(const char *parent, const char *key, int index);
void cfg_node_append(cfg_node *parent, const char *key, int key_line, int key_col, cfg_node *child);
bool cfg_node_err(s2d_err *err, const cfg_node *node, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
cfg_node *cfg_node_new(cfg_kind kind, const char *origin, int line, int col, const char *path);
