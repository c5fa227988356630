/* train_config_internal.h: what the train-config reader (train_config.c), its unknown-key check
 * (train_config_keys.c) and its resolver (train_config_resolve.c) share. Private to src/runtime/. */
#pragma once
#include <stdbool.h>

#include "runtime/train_config.h"

#define TRY(call)                                                                                            \
    do {                                                                                                     \
        if (!(call)) return false;                                                                           \
    } while (0)

/* Names of the enum values, in enum order. */
extern const char *const tc_algo_names[4], *const tc_fkl_names[3], *const tc_agg_names[3], *const tc_kl_names[3];
extern const char *const tc_sched_names[3], *const tc_std_names[3], *const tc_dyn_names[3];

/* Every key of root that no reader marked used is an error (with "did you mean" for verl / TRL names). */
bool tc_check_unknown_keys(cfg_node *root, s2d_err *err);
/* Writes every key's value in effect into tc->root (the resolved config). */
bool tc_resolve_defaults(train_config *tc, s2d_err *err);
