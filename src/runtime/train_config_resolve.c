/* train_config_resolve.c: the resolved config: every key a run reads is written into the config tree with the
 * value in effect (defaults included), so OUT/config.yaml and --dry-run show the whole run. */
#include "runtime/train_config.h"
#include "runtime/train_config_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the resolved config: every key a run reads, with the value in effect, is written into the tree ---- */

/* Shortest %g text that reads back as the same float (so defaults print as 0.2, not 0.200000003). */
static void fmt_float(char *buf, size_t n, float v) {
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eEn")) snprintf(buf + strlen(buf), n - strlen(buf), ".0"); /* stays a float: 1.0 */
}
static void fmt_double(char *buf, size_t n, double v) {
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eEn")) snprintf(buf + strlen(buf), n - strlen(buf), ".0");
}

/* Sets at.key = text unless the key is there (explicit values, including null, are kept as written). */
static bool fill(cfg_node *root, cfg_node *at_node, const char *at, const char *key, const char *text, s2d_err *err) {
    if (at_node && cfg_find(at_node, key)) return true;
    char full[512];
    snprintf(full, sizeof full, "%s%s%s", at, at[0] ? "." : "", key);
    return cfg_set(root, full, text[0] ? text : "\"\"", err);
}
static bool fill_int(cfg_node *root, cfg_node *m, const char *at, const char *key, long long v, s2d_err *err) {
    char b[32];
    snprintf(b, sizeof b, "%lld", v);
    return fill(root, m, at, key, b, err);
}
static bool fill_f(cfg_node *root, cfg_node *m, const char *at, const char *key, float v, s2d_err *err) {
    char b[64];
    fmt_float(b, sizeof b, v);
    return fill(root, m, at, key, b, err);
}
static bool fill_d(cfg_node *root, cfg_node *m, const char *at, const char *key, double v, s2d_err *err) {
    char b[64];
    fmt_double(b, sizeof b, v);
    return fill(root, m, at, key, b, err);
}
static bool fill_b(cfg_node *root, cfg_node *m, const char *at, const char *key, bool v, s2d_err *err) {
    return fill(root, m, at, key, v ? "true" : "false", err);
}
/* The map `key` under parent (NULL when absent: fill creates it). A block written as null (`grpo:`) becomes
 * an empty map (root and path: where it is) so that its defaults can go in. */
static cfg_node *block(cfg_node *root, cfg_node *parent, const char *path, const char *key) {
    cfg_node *n = parent ? cfg_find(parent, key) : NULL;
    if (n && n->kind == CFG_SCALAR && cfg_is_null(n)) {
        char full[512];
        s2d_err ignored;
        snprintf(full, sizeof full, "%s%s%s", path, path[0] ? "." : "", key);
        if (cfg_set(root, full, "{}", &ignored)) n = cfg_find(parent, key);
    }
    return n && n->kind == CFG_MAP ? n : NULL;
}
#define sub(parent, key) block(R, (parent), "", (key))

static bool resolve_stage(train_config *tc, cfg_node *node, int i, s2d_err *err) {
    cfg_node *R = tc->root;
    const tc_stage *s = &tc->stages[i];
    char at[64], sa[96];
    snprintf(at, sizeof at, "pipeline[%d]", i);
#define SUB(name) (snprintf(sa, sizeof sa, "%s.%s", at, name), block(R, node, at, name))
    TRY(fill(R, node, at, "output", s->output, err));
    TRY(fill_int(R, node, at, "prompts_per_step", s->prompts_per_step, err));
    TRY(fill_int(R, node, at, "group_size", s->group_size, err));
    TRY(fill_int(R, node, at, "micro_batches", s->micro_batches, err));
    TRY(fill_int(R, node, at, "minibatches", s->minibatches, err));
    cfg_node *m = SUB("grpo");
    TRY(fill_f(R, m, sa, "clip_low", s->grpo.clip_low, err));
    m = SUB("grpo");
    TRY(fill_f(R, m, sa, "clip_high", s->grpo.clip_high, err));
    TRY(fill_f(R, m, sa, "dual_clip", s->grpo.dual_clip, err));
    TRY(fill_f(R, m, sa, "kl_beta", s->grpo.kl_beta, err));
    TRY(fill(R, m, sa, "kl_estimator", tc_kl_names[s->grpo.kl_est], err));
    TRY(fill(R, m, sa, "agg", tc_agg_names[s->grpo.agg], err));
    if (!(m && cfg_find(m, "std_normalize"))) TRY(fill(R, m, sa, "std", tc_std_names[s->std], err)); /* one of the two */
    m = SUB("grpo");
    if (!(m && cfg_find(m, "filter_zero_variance"))) {
        cfg_node *d = block(R, m, sa, "dynamic_sampling");
        char da[128];
        snprintf(da, sizeof da, "%s.dynamic_sampling", sa);
        TRY(fill(R, d, da, "mode", tc_dyn_names[s->dyn], err));
        d = block(R, m, sa, "dynamic_sampling");
        if (!d) d = cfg_find(m, "dynamic_sampling");
        TRY(fill_int(R, d, da, "max_rounds", s->dyn_max_rounds, err));
        m = SUB("grpo");
    }
    TRY(fill_b(R, m, sa, "mask_truncated", s->mask_truncated, err));
    TRY(fill_f(R, m, sa, "tis_cap", s->grpo.tis_cap, err));
    m = SUB("fkl");
    TRY(fill(R, m, sa, "mode", tc_fkl_names[s->fkl], err));
    m = SUB("fkl");
    TRY(fill_int(R, m, sa, "topk", s->topk, err));
    m = SUB("opd");
    TRY(fill_f(R, m, sa, "lambda", s->opd.lambda, err));
    m = SUB("opd");
    TRY(fill_f(R, m, sa, "gamma", s->opd.gamma, err));
    TRY(fill_f(R, m, sa, "clip_low", s->opd.clip_low, err));
    TRY(fill_f(R, m, sa, "clip_high", s->opd.clip_high, err));
    TRY(fill(R, m, sa, "agg", tc_agg_names[s->opd.agg], err));
    TRY(fill(R, m, sa, "mode", tc_fkl_names[s->opd_mode], err));
    TRY(fill_int(R, m, sa, "topk", s->opd_topk, err));
    m = SUB("optimizer");
    TRY(fill_d(R, m, sa, "lr", s->sched.lr, err));
    m = SUB("optimizer");
    TRY(fill_f(R, m, sa, "beta1", s->adam.beta1, err));
    TRY(fill_f(R, m, sa, "beta2", s->adam.beta2, err));
    TRY(fill_f(R, m, sa, "eps", s->adam.eps, err));
    TRY(fill_f(R, m, sa, "weight_decay", s->adam.weight_decay, err));
    TRY(fill_f(R, m, sa, "clip", s->clip, err));
    TRY(fill(R, m, sa, "schedule", tc_sched_names[s->sched.kind], err));
    TRY(fill_int(R, m, sa, "warmup", s->sched.warmup, err));
    TRY(fill_d(R, m, sa, "min_lr", s->sched.min_lr, err));
    m = SUB("sampling");
    TRY(fill_f(R, m, sa, "temperature", s->sampling.temperature, err));
    m = SUB("sampling");
    TRY(fill_f(R, m, sa, "top_p", s->sampling.top_p, err));
    TRY(fill_int(R, m, sa, "top_k", s->sampling.top_k, err));
    TRY(fill_int(R, m, sa, "max_new_tokens", s->max_new_tokens, err));
    if (s->eval_data[0]) {
        m = SUB("eval");
        TRY(fill_int(R, m, sa, "every", s->eval_every, err));
        TRY(fill_int(R, m, sa, "problems", s->eval_problems, err));
        TRY(fill_int(R, m, sa, "max_new_tokens", s->eval_max_new_tokens, err));
    }
    if (s->reward_command) {
        m = SUB("reward");
        TRY(fill_d(R, m, sa, "timeout_s", s->reward_timeout_s, err));
    }
    m = SUB("checkpoint");
    TRY(fill_int(R, m, sa, "every", s->ckpt_every, err));
    m = SUB("checkpoint");
    TRY(fill_int(R, m, sa, "keep_last", s->ckpt_keep_last, err));
#undef SUB
    return true;
}

/* After validation: absent keys get their defaults written in, so OUT/config.yaml (and --dry-run) show every
 * value in effect. `out` and the test-only `fault` stay as written. */
bool tc_resolve_defaults(train_config *tc, s2d_err *err) {
    cfg_node *R = tc->root;
    TRY(fill_int(R, R, "", "seed", (long long)tc->seed, err));
    cfg_node *p = sub(R, "prompt");
    TRY(fill(R, p, "prompt", "template", chat_template_name(tc->chat), err));
    p = sub(R, "prompt");
    TRY(fill(R, p, "prompt", "instruction", tc->instruction, err));
    cfg_node *models = sub(R, "models");
    char at[160];
    for (int i = 0; i < tc->n_models; i++) {
        const tc_model *m = &tc->models[i];
        if (strpbrk(m->name, ".[")) continue; /* not addressable by a key path: left as written */
        snprintf(at, sizeof at, "models.%s", m->name);
        cfg_node *mn = block(R, models, "models", m->name);
        if (m->tokenizer) TRY(fill(R, mn, at, "tokenizer", m->tokenizer, err));
        if (m->init_preset) {
            snprintf(at, sizeof at, "models.%s.init", m->name);
            char mat[160];
            snprintf(mat, sizeof mat, "models.%s", m->name);
            cfg_node *in = block(R, mn, mat, "init");
            const model_config *c = &m->cfg;
            TRY(fill_int(R, in, at, "seed", (long long)m->init_seed, err));
            TRY(fill_int(R, in, at, "hidden_size", c->hidden, err));
            TRY(fill_int(R, in, at, "num_hidden_layers", c->n_layers, err));
            TRY(fill_int(R, in, at, "num_attention_heads", c->n_heads, err));
            TRY(fill_int(R, in, at, "num_key_value_heads", c->n_kv_heads, err));
            TRY(fill_int(R, in, at, "head_dim", c->head_dim, err));
            TRY(fill_int(R, in, at, "intermediate_size", c->intermediate, err));
            TRY(fill_int(R, in, at, "vocab_size", c->vocab, err));
            TRY(fill_int(R, in, at, "max_position_embeddings", c->max_pos, err));
        }
    }
    cfg_node *datasets = sub(R, "datasets");
    for (int i = 0; i < tc->n_datasets; i++) {
        const tc_dataset *d = &tc->datasets[i];
        if (strpbrk(d->name, ".[")) continue;
        snprintf(at, sizeof at, "datasets.%s", d->name);
        cfg_node *dn = block(R, datasets, "datasets", d->name);
        if (d->arith) {
            TRY(fill_int(R, dn, at, "seed", (long long)d->arith_p.seed, err));
            TRY(fill_int(R, dn, at, "ops", d->arith_p.n_ops, err));
            TRY(fill_int(R, dn, at, "max_operand", d->arith_p.max_operand, err));
            TRY(fill_d(R, dn, at, "left_to_right", d->arith_p.left_to_right, err));
            TRY(fill_d(R, dn, at, "right_to_left", d->arith_p.right_to_left, err));
            TRY(fill(R, dn, at, "operators", d->arith_p.operators, err));
        } else {
            TRY(fill(R, dn, at, "format", ds_format_name(d->format), err));
            TRY(fill_int(R, dn, at, "limit", d->size, err));
        }
    }
    cfg_node *pipe = cfg_find(R, "pipeline");
    for (int i = 0; i < tc->n_stages; i++) TRY(resolve_stage(tc, cfg_at(pipe, i), i, err));
    cfg_node *m = sub(R, "roles");
    TRY(fill_int(R, m, "roles", "generators", tc->n_generators, err));
    m = sub(R, "roles");
    TRY(fill_int(R, m, "roles", "scorers", tc->n_scorers, err));
    TRY(fill_int(R, m, "roles", "learners", tc->n_learners, err));
    m = sub(R, "runtime");
    TRY(fill_d(R, m, "runtime", "timeout_s", tc->timeout_s, err));
    m = sub(R, "runtime");
    TRY(fill_d(R, m, "runtime", "heartbeat_s", tc->heartbeat_s, err));
    TRY(fill(R, m, "runtime", "reduce", tc->reduce == TP_REDUCE_FAST ? "fast" : "deterministic", err));
    TRY(fill_d(R, m, "runtime", "bucket_mb", tc->bucket_mb, err));
    TRY(fill_int(R, m, "runtime", "max_policy_lag", tc->max_policy_lag, err));
    TRY(fill(R, R, "", "device", tc->device, err));
    m = sub(R, "training");
    TRY(fill(R, m, "training", "recompute", tc->n_stages && tc->stages[0].recompute == RECOMPUTE_LAYER ? "layer" : "none",
             err));
    m = sub(R, "logging");
    TRY(fill_b(R, m, "logging", "rollouts", tc->log_rollouts, err));
    m = sub(R, "logging");
    TRY(fill_b(R, m, "logging", "metrics_h5", tc->log_metrics_h5, err));
    m = sub(R, "logging");
    TRY(fill_b(R, m, "logging", "tensorboard", tc->log_tensorboard, err));
    return true;
}

