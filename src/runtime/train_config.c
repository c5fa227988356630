/* train_config.c: reading and validating `s2d train` configs (schema in train_config.h). */
#include "runtime/train_config.h"
#include "runtime/train_config_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *const tc_algo_names[4] = {"sft", "grpo", "fkl", "opd"};
const char *const tc_fkl_names[3] = {"full", "topk", "sampled"};
const char *const tc_agg_names[3] = {"token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"};
const char *const tc_kl_names[3] = {"k1", "k2", "k3"};
const char *const tc_sched_names[3] = {"constant", "warmup", "cosine"};
const char *const tc_std_names[3] = {"unbiased", "population", "none"};
const char *const tc_dyn_names[3] = {"off", "filter", "refill"};

const char *train_algo_name(train_algo a) { return tc_algo_names[a]; }

static bool copy_name(cfg_node *node, const char *what, char *out, size_t cap, s2d_err *err) {
    const char *s;
    TRY(cfg_as_str(node, &s, err));
    char where[256];
    cfg_where(node, where, sizeof where);
    if (s[0] == '\0' || strlen(s) >= cap)
        return err_set(err, "%s: %s: %s must be 1..%zu characters", where, cfg_path(node), what, cap - 1);
    for (const char *c = s; *c; c++)
        if (!(*c == '_' || *c == '-' || *c == '.' || (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') ||
              (*c >= 'A' && *c <= 'Z')))
            return err_set(err, "%s: %s: %s '%s' may hold only letters, digits, '_', '-', '.'", where,
                           cfg_path(node), what, s);
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0) /* names become paths: OUT/models/<name> */
        return err_set(err, "%s: %s: %s '%s' is not allowed (it names a directory, not a new one)", where,
                       cfg_path(node), what, s);
    snprintf(out, cap, "%s", s);
    return true;
}

static bool get_name_opt(cfg_node *map, const char *key, const char *what, char *out, size_t cap, s2d_err *err) {
    out[0] = '\0';
    cfg_node *n = cfg_find(map, key);
    if (!n || cfg_is_null(n)) {
        if (n) n->used = true;
        const char *dummy; /* records the key as asked for ("did you mean") */
        return cfg_get_str_or(map, key, "", &dummy, err);
    }
    return copy_name(n, what, out, cap, err);
}

static bool read_model(cfg_node *node, const char *name, bool dry_run, tc_model *m, s2d_err *err) {
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    cfg_where(node, m->where, sizeof m->where);
    TRY(cfg_as_map(node, err));
    const char *path, *tok;
    cfg_node *init;
    TRY(cfg_get_str_or(node, "path", NULL, &path, err));
    TRY(cfg_get_map_opt(node, "init", &init, err));
    TRY(cfg_get_str_or(node, "tokenizer", NULL, &tok, err));
    if ((path != NULL) == (init != NULL))
        return err_set(err, "%s: models.%s: give exactly one of 'path' (an HF directory) or 'init' (a preset)",
                       m->where, name);
    if (path) {
        m->path = xstrdup(path);
        char cfg_path_buf[4096];
        path_join(cfg_path_buf, sizeof cfg_path_buf, path, "config.json");
        struct stat st;
        if (dry_run && stat(cfg_path_buf, &st) != 0) {
            m->cfg_known = false;
        } else {
            if (!model_config_load(cfg_path_buf, &m->cfg, err))
                return err_prefix(err, "%s: models.%s", m->where, name);
            m->cfg_known = true;
        }
    } else {
        const char *preset;
        int64_t seed;
        TRY(cfg_get_str(init, "preset", &preset, err));
        TRY(cfg_get_i64_or(init, "seed", 0, 0, INT64_MAX, &seed, err));
        if (!model_config_preset(preset, &m->cfg, err)) {
            char where[256];
            cfg_where(cfg_find(init, "preset"), where, sizeof where);
            return err_prefix(err, "%s: models.%s.init.preset", where, name);
        }
        m->init_preset = xstrdup(preset);
        m->init_seed = (uint64_t)seed;
        model_config *c = &m->cfg;
        TRY(cfg_get_int_or(init, "hidden_size", c->hidden, 8, 1 << 16, &c->hidden, err));
        TRY(cfg_get_int_or(init, "num_hidden_layers", c->n_layers, 1, 1024, &c->n_layers, err));
        TRY(cfg_get_int_or(init, "num_attention_heads", c->n_heads, 1, 1024, &c->n_heads, err));
        TRY(cfg_get_int_or(init, "num_key_value_heads", c->n_kv_heads, 1, 1024, &c->n_kv_heads, err));
        TRY(cfg_get_int_or(init, "head_dim", c->head_dim, 2, 1024, &c->head_dim, err));
        TRY(cfg_get_int_or(init, "intermediate_size", c->intermediate, 1, 1 << 20, &c->intermediate, err));
        TRY(cfg_get_int_or(init, "vocab_size", c->vocab, 2, 1 << 24, &c->vocab, err));
        TRY(cfg_get_int_or(init, "max_position_embeddings", c->max_pos, 8, 1 << 24, &c->max_pos, err));
        if (c->n_heads % c->n_kv_heads != 0 || c->head_dim % 2 != 0)
            return err_set(err, "%s: models.%s.init: num_attention_heads (%d) must be a multiple of "
                                "num_key_value_heads (%d) and head_dim (%d) even",
                           m->where, name, c->n_heads, c->n_kv_heads, c->head_dim);
        m->cfg_known = true;
    }
    if (tok) m->tokenizer = xstrdup(tok);
    else if (path) m->tokenizer = xstrdup(path);
    return true;
}

static bool read_dataset(cfg_node *node, const char *name, tc_dataset *d, s2d_err *err) {
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    cfg_where(node, d->where, sizeof d->where);
    TRY(cfg_as_map(node, err));
    const char *task, *file;
    TRY(cfg_get_str_or(node, "task", NULL, &task, err));
    TRY(cfg_get_str_or(node, "file", NULL, &file, err));
    if ((task != NULL) == (file != NULL))
        return err_set(err, "%s: datasets.%s: give exactly one of 'file' (JSON lines) or 'task: arith'", d->where,
                       name);
    if (task) {
        static const char *const tasks[1] = {"arith"};
        int which;
        TRY(cfg_get_enum(node, "task", tasks, 1, &which, err));
        d->arith = true;
        int split;
        int64_t seed;
        TRY(cfg_get_enum(node, "split", arith_split_names, ARITH_N_SPLITS, &split, err));
        d->split = (arith_split)split;
        TRY(cfg_get_int(node, "size", 1, 1000000, &d->size, err));
        TRY(cfg_get_i64_or(node, "seed", 0, 0, INT64_MAX, &seed, err));
        d->arith_p.seed = (uint64_t)seed;
        TRY(cfg_get_int_or(node, "ops", 2, 1, 8, &d->arith_p.n_ops, err));
        TRY(cfg_get_int_or(node, "max_operand", 9, 1, 999, &d->arith_p.max_operand, err));
        TRY(cfg_get_double_or(node, "left_to_right", 0.0, 0.0, 1.0, &d->arith_p.left_to_right, err));
        TRY(cfg_get_double_or(node, "right_to_left", 0.0, 0.0, 1.0, &d->arith_p.right_to_left, err));
        const char *operators;
        TRY(cfg_get_str_or(node, "operators", "+-*", &operators, err));
        if (!operators[0] || strlen(operators) >= sizeof d->arith_p.operators)
            return err_set(err, "%s: datasets.%s.operators: '%s', expected some of + - * (e.g. \"+-\")", d->where,
                           name, operators);
        snprintf(d->arith_p.operators, sizeof d->arith_p.operators, "%s", operators);
        if (!arith_params_check(&d->arith_p, err)) return err_prefix(err, "%s: datasets.%s", d->where, name);
    } else {
        d->file = xstrdup(file);
        static const char *const formats[5] = {"auto", "math", "gsm8k", "aime", "generic"};
        int f;
        TRY(cfg_get_enum_or(node, "format", formats, 4 /* generic needs field names: not offered */, 0, &f, err));
        TRY(ds_format_parse(formats[f], &d->format, err));
        TRY(cfg_get_int_or(node, "limit", 0, 0, INT32_MAX, &d->size, err));
    }
    return true;
}

/* Names known at a point of the pipeline: models plus outputs of earlier stages, with their architectures. */
typedef struct {
    const char *name;
    const model_config *cfg;
    bool known;
} known_model;

static const known_model *lookup(const known_model *k, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(k[i].name, name) == 0) return &k[i];
    return NULL;
}

static bool model_ref(cfg_node *stage, const char *key, const char *value, const known_model *k, int n,
                      const known_model **out, s2d_err *err) {
    *out = lookup(k, n, value);
    if (*out) return true;
    char where[256], names[1024] = "";
    cfg_where(cfg_find(stage, key), where, sizeof where);
    for (int i = 0; i < n; i++) {
        size_t at = strlen(names);
        snprintf(names + at, sizeof names - at, "%s%s", i ? ", " : "", k[i].name);
    }
    return err_set(err, "%s: %s.%s: model '%s' does not exist (yet) at this stage (known here: %s)", where,
                   cfg_path(stage), key, value, names);
}

static bool read_stage_with(train_config *tc, cfg_node *node, int idx, tc_stage *s, cfg_node *empty_map,
                            s2d_err *err);

/* Absent option blocks read their defaults from an empty map (which remembers the keys asked for). */
static bool read_stage(train_config *tc, cfg_node *node, int idx, tc_stage *s, s2d_err *err) {
    cfg_node *empty;
    CHECK_OK(cfg_load_string("{}", "(defaults)", &empty, err), err);
    bool ok = read_stage_with(tc, node, idx, s, empty, err);
    cfg_free(empty);
    return ok;
}

/* grpo.std, or the older grpo.std_normalize (true = population, its behaviour; false = none); not both. */
static bool read_grpo_std(cfg_node *gm, cfg_node *node, tc_stage *s, s2d_err *err) {
    cfg_node *old = cfg_find(gm, "std_normalize"), *now = cfg_find(gm, "std");
    if (old && now) {
        char where[256];
        cfg_where(now, where, sizeof where);
        return err_set(err, "%s: %s.grpo.std: give grpo.std or the older grpo.std_normalize, not both", where,
                       cfg_path(node));
    }
    if (old) {
        bool on;
        TRY(cfg_get_bool_or(gm, "std_normalize", true, &on, err));
        s->std = on ? GRPO_STD_POPULATION : GRPO_STD_NONE;
        return true;
    }
    int e;
    TRY(cfg_get_enum_or(gm, "std", tc_std_names, 3, GRPO_STD_UNBIASED, &e, err));
    s->std = (grpo_std)e;
    return true;
}

/* grpo.dynamic_sampling {mode, max_rounds}, and the older grpo.filter_zero_variance (true = mode filter). */
static bool read_dynamic_sampling(cfg_node *gm, cfg_node *node, tc_stage *s, cfg_node *empty_map, s2d_err *err) {
    bool filter;
    TRY(cfg_get_bool_or(gm, "filter_zero_variance", false, &filter, err));
    cfg_node *d;
    TRY(cfg_get_map_opt(gm, "dynamic_sampling", &d, err));
    int e;
    TRY(cfg_get_enum_or(d ? d : empty_map, "mode", tc_dyn_names, 3, filter ? DYN_FILTER : DYN_OFF, &e, err));
    TRY(cfg_get_int_or(d ? d : empty_map, "max_rounds", 4, 1, 1000, &s->dyn_max_rounds, err));
    s->dyn = (dyn_mode)e;
    if (cfg_find(gm, "filter_zero_variance") && filter != (s->dyn != DYN_OFF)) {
        char where[256];
        cfg_where(cfg_find(gm, "filter_zero_variance"), where, sizeof where);
        return err_set(err, "%s: %s.grpo.filter_zero_variance: %s contradicts dynamic_sampling.mode %s (give one)", where,
                       cfg_path(node), filter ? "true" : "false", tc_dyn_names[s->dyn]);
    }
    s->filter_zero_variance = s->dyn != DYN_OFF;
    return true;
}

/* labels: {max: N} under a stage or at the top: -1 when absent. */
static bool read_labels_max(cfg_node *parent, long *out, s2d_err *err) {
    cfg_node *l;
    TRY(cfg_get_map_opt(parent, "labels", &l, err));
    int64_t v = -1;
    if (l) TRY(cfg_get_i64_or(l, "max", -1, 0, INT64_MAX, &v, err));
    *out = (long)v;
    return true;
}

/* A stage's names and references (name, algo, output, policy, teacher, reference, data) and its step shape. */
static bool read_stage_names(train_config *tc, cfg_node *node, int idx, tc_stage *s, s2d_err *err) {
    memset(s, 0, sizeof *s);
    cfg_where(node, s->where, sizeof s->where);
    TRY(cfg_as_map(node, err));
    cfg_node *nn;
    TRY(cfg_get_map(tc->root, "models", &nn, err)); /* (already validated) */
    nn = cfg_find(node, "name");
    if (!nn) return err_set(err, "%s: pipeline[%d]: missing key 'name'", s->where, idx);
    TRY(copy_name(nn, "stage name", s->name, sizeof s->name, err));
    int algo;
    TRY(cfg_get_enum(node, "algo", tc_algo_names, 4, &algo, err));
    s->algo = (train_algo)algo;
    TRY(get_name_opt(node, "output", "output name", s->output, sizeof s->output, err));
    if (!s->output[0]) snprintf(s->output, sizeof s->output, "%s", s->name);
    cfg_node *pn = cfg_find(node, "policy");
    if (!pn) return err_set(err, "%s: pipeline[%d] (%s): missing key 'policy'", s->where, idx, s->name);
    TRY(copy_name(pn, "policy", s->policy, sizeof s->policy, err));
    TRY(get_name_opt(node, "teacher", "teacher", s->teacher, sizeof s->teacher, err));
    TRY(get_name_opt(node, "reference", "reference", s->reference, sizeof s->reference, err));
    cfg_node *dn = cfg_find(node, "data");
    if (!dn) return err_set(err, "%s: pipeline[%d] (%s): missing key 'data'", s->where, idx, s->name);
    TRY(copy_name(dn, "data", s->data, sizeof s->data, err));
    if (tc_find_dataset(tc, s->data) < 0) {
        char where[256];
        cfg_where(dn, where, sizeof where);
        return err_set(err, "%s: %s.data: no dataset named '%s' in datasets:", where, cfg_path(node), s->data);
    }
    TRY(cfg_get_int(node, "steps", 0, 10000000, &s->steps, err));
    TRY(cfg_get_int_or(node, "prompts_per_step", 8, 1, 65536, &s->prompts_per_step, err));
    TRY(cfg_get_int_or(node, "group_size", s->algo == ALGO_GRPO ? 4 : 1, 1, 4096, &s->group_size, err));
    return true;
}

/* grpo:, fkl: and opd: (defaults when absent). */
static bool read_stage_objectives(cfg_node *node, tc_stage *s, cfg_node *empty_map, s2d_err *err) {
    cfg_node *g;
    TRY(cfg_get_map_opt(node, "grpo", &g, err));
    cfg_node *gm = g ? g : empty_map;
    int e;
    TRY(cfg_get_float_or(gm, "clip_low", 0.2f, 0, 1, &s->grpo.clip_low, err));
    TRY(cfg_get_float_or(gm, "clip_high", 0.28f, 0, 10, &s->grpo.clip_high, err));
    TRY(cfg_get_float_or(gm, "dual_clip", 0, 0, 1e6f, &s->grpo.dual_clip, err));
    TRY(cfg_get_float_or(gm, "kl_beta", 0, 0, 1e6f, &s->grpo.kl_beta, err));
    TRY(cfg_get_enum_or(gm, "kl_estimator", tc_kl_names, 3, KL_K3, &e, err));
    s->grpo.kl_est = (kl_estimator)e;
    TRY(cfg_get_enum_or(gm, "agg", tc_agg_names, 3, AGG_TOKEN_MEAN, &e, err));
    s->grpo.agg = (loss_agg)e;
    TRY(read_grpo_std(gm, node, s, err));
    TRY(read_dynamic_sampling(gm, node, s, empty_map, err));
    TRY(cfg_get_bool_or(gm, "mask_truncated", false, &s->mask_truncated, err));
    TRY(cfg_get_float_or(gm, "tis_cap", 0, 0, 1e6f, &s->grpo.tis_cap, err));
    if (s->grpo.dual_clip != 0 && s->grpo.dual_clip <= 1)
        return err_set(err, "%s: %s.grpo.dual_clip must be 0 (off) or > 1", s->where, cfg_path(node));

    cfg_node *f;
    TRY(cfg_get_map_opt(node, "fkl", &f, err));
    cfg_node *fm = f ? f : empty_map;
    TRY(cfg_get_enum_or(fm, "mode", tc_fkl_names, 3, FKL_TOPK, &e, err));
    s->fkl = (fkl_mode)e;
    TRY(cfg_get_int_or(fm, "topk", 16, 1, 1 << 20, &s->topk, err));

    cfg_node *o;
    TRY(cfg_get_map_opt(node, "opd", &o, err));
    cfg_node *om = o ? o : empty_map;
    TRY(cfg_get_float_or(om, "lambda", 1, 0, 1e6f, &s->opd.lambda, err));
    TRY(cfg_get_float_or(om, "gamma", 0, 0, 1, &s->opd.gamma, err));
    TRY(cfg_get_float_or(om, "clip_low", 0.2f, 0, 1, &s->opd.clip_low, err));
    TRY(cfg_get_float_or(om, "clip_high", 0.28f, 0, 10, &s->opd.clip_high, err));
    TRY(cfg_get_enum_or(om, "agg", tc_agg_names, 3, AGG_TOKEN_MEAN, &e, err));
    s->opd.agg = (loss_agg)e;
    TRY(cfg_get_enum_or(om, "mode", tc_fkl_names, 3, FKL_SAMPLED, &e, err));
    s->opd_mode = (fkl_mode)e;
    TRY(cfg_get_int_or(om, "topk", 16, 1, 1 << 20, &s->opd_topk, err));
    s->opd.teacher_analytic = s->algo == ALGO_OPD && s->opd_mode != FKL_SAMPLED;
    fkl_mode dist = s->algo == ALGO_FKL ? s->fkl : s->algo == ALGO_OPD ? s->opd_mode : FKL_SAMPLED;
    s->teacher_dist = dist == FKL_FULL ? DIST_FULL : dist == FKL_TOPK ? DIST_TOPK : DIST_NONE;
    s->teacher_topk = s->algo == ALGO_OPD ? s->opd_topk : s->topk;
    return true;
}

/* optimizer: AdamW and the learning-rate schedule. */
static bool read_stage_optimizer(cfg_node *node, tc_stage *s, cfg_node *empty_map, s2d_err *err) {
    int e;
    cfg_node *op;
    TRY(cfg_get_map_opt(node, "optimizer", &op, err));
    cfg_node *opm = op ? op : empty_map;
    TRY(cfg_get_double_or(opm, "lr", 1e-6, 0, 10, &s->sched.lr, err));
    TRY(cfg_get_double_or(opm, "min_lr", 0, 0, 10, &s->sched.min_lr, err));
    TRY(cfg_get_float_or(opm, "beta1", 0.9f, 0, 0.999999f, &s->adam.beta1, err));
    TRY(cfg_get_float_or(opm, "beta2", 0.999f, 0, 0.999999f, &s->adam.beta2, err));
    TRY(cfg_get_float_or(opm, "eps", 1e-8f, 0, 1, &s->adam.eps, err));
    TRY(cfg_get_float_or(opm, "weight_decay", 0, 0, 10, &s->adam.weight_decay, err));
    TRY(cfg_get_float_or(opm, "clip", 1, 0, 1e6f, &s->clip, err));
    TRY(cfg_get_enum_or(opm, "schedule", tc_sched_names, 3, LR_CONSTANT, &e, err));
    s->sched.kind = (lr_schedule_kind)e;
    int64_t warm;
    TRY(cfg_get_i64_or(opm, "warmup", 0, 0, 100000000, &warm, err));
    s->sched.warmup = warm;
    s->sched.total_steps = s->steps;
    return true;
}

/* sampling: and eval:. */
static bool read_stage_sampling(train_config *tc, cfg_node *node, tc_stage *s, cfg_node *empty_map, s2d_err *err) {
    cfg_node *sp;
    TRY(cfg_get_map_opt(node, "sampling", &sp, err));
    cfg_node *spm = sp ? sp : empty_map;
    TRY(cfg_get_float_or(spm, "temperature", 1, 0, 100, &s->sampling.temperature, err));
    TRY(cfg_get_float_or(spm, "top_p", 1, 1e-6f, 1, &s->sampling.top_p, err));
    TRY(cfg_get_int_or(spm, "top_k", 0, 0, 1 << 24, &s->sampling.top_k, err));
    TRY(cfg_get_int_or(spm, "max_new_tokens", 256, 1, 1 << 20, &s->max_new_tokens, err));
    s->grpo.norm_len = s->opd.norm_len = s->max_new_tokens;

    cfg_node *ev;
    TRY(cfg_get_map_opt(node, "eval", &ev, err));
    if (ev) {
        cfg_node *edn = cfg_find(ev, "data");
        if (!edn) return err_set(err, "%s: %s.eval: missing key 'data'", s->where, cfg_path(node));
        TRY(copy_name(edn, "eval data", s->eval_data, sizeof s->eval_data, err));
        if (tc_find_dataset(tc, s->eval_data) < 0) {
            char where[256];
            cfg_where(edn, where, sizeof where);
            return err_set(err, "%s: %s.eval.data: no dataset named '%s' in datasets:", where, cfg_path(node),
                           s->eval_data);
        }
        TRY(cfg_get_int_or(ev, "every", 0, 0, 100000000, &s->eval_every, err));
        cfg_node *old_key = cfg_find(ev, "samples");
        if (old_key) { /* renamed: the key counts problems (greedy, one sample each), not samples */
            char where[256];
            cfg_where(old_key, where, sizeof where);
            return err_set(err, "%s: %s.eval.samples was renamed to eval.problems (the number of evaluation "
                           "problems, each answered once, greedily)", where, cfg_path(node));
        }
        TRY(cfg_get_int_or(ev, "problems", 64, 1, 1000000, &s->eval_problems, err));
        TRY(cfg_get_int_or(ev, "max_new_tokens", s->max_new_tokens, 1, 1 << 20, &s->eval_max_new_tokens, err));
    }
    return true;
}

/* micro_batches, minibatches, reward:, checkpoint:, labels:. */
static bool read_stage_extras(cfg_node *node, tc_stage *s, s2d_err *err) {
    TRY(cfg_get_int_or(node, "micro_batches", 1, 1, 65536, &s->micro_batches, err));
    TRY(cfg_get_int_or(node, "minibatches", 1, 1, 65536, &s->minibatches, err));
    if (s->minibatches > 1 && s->algo != ALGO_GRPO && s->algo != ALGO_OPD)
        return err_set(err, "%s: %s.minibatches: only grpo and opd stages take several updates per step", s->where,
                       cfg_path(node));
    if (s->micro_batches * s->minibatches > s->prompts_per_step * s->group_size)
        return err_set(err, "%s: %s.micro_batches: %d micro-batches x %d minibatches but a step has only %d sequences "
                            "(prompts_per_step x group_size)", s->where, cfg_path(node), s->micro_batches,
                       s->minibatches, s->prompts_per_step * s->group_size);
    cfg_node *rw;
    TRY(cfg_get_map_opt(node, "reward", &rw, err));
    if (rw) { /* a custom reward command (text/reward_cmd.h) instead of the built-in verifier */
        const char *cmd;
        if (!cfg_find(rw, "command"))
            return err_set(err, "%s: %s.reward: missing key 'command'", s->where, cfg_path(node));
        TRY(cfg_get_str(rw, "command", &cmd, err));
        if (!cmd[0]) return err_set(err, "%s: %s.reward.command is empty", s->where, cfg_path(node));
        s->reward_command = xstrdup(cmd);
        TRY(cfg_get_double_or(rw, "timeout_s", 60, 0.001, 1e6, &s->reward_timeout_s, err));
    }
    cfg_node *ck;
    TRY(cfg_get_map_opt(node, "checkpoint", &ck, err));
    if (ck) TRY(cfg_get_int_or(ck, "every", 0, 0, 100000000, &s->ckpt_every, err));
    if (ck) TRY(cfg_get_int_or(ck, "keep_last", 0, 0, 100000000, &s->ckpt_keep_last, err));

    TRY(read_labels_max(node, &s->labels_max, err));
    if (s->labels_max >= 0 && s->algo != ALGO_GRPO && s->algo != ALGO_SFT)
        return err_set(err, "%s: %s.labels.max: a %s stage uses prompts only (no labels) to cap", s->where, cfg_path(node),
                       tc_algo_names[s->algo]);
    return true;
}

/* What the keys allow one by one but not together. */
static bool check_stage(cfg_node *node, const tc_stage *s, s2d_err *err) {
    if (s->dyn == DYN_REFILL && s->algo != ALGO_GRPO)
        return err_set(err, "%s: %s.grpo.dynamic_sampling: refill needs rewards (a grpo stage)", s->where, cfg_path(node));
    if (s->dyn == DYN_REFILL && s->reward_command) /* refill keeps groups by the built-in verifier's rewards */
        return err_set(err, "%s: %s.grpo.dynamic_sampling: refill selects groups with the built-in verifier and cannot "
                            "use reward.command (use mode: filter)", s->where, cfg_path(node));
    /* A reference acts only where the objective has a reference term: in G-OPD's weight
     * w = λ(ℓT − ℓref) − (ℓold − ℓref) it cancels at λ = 1, and GRPO uses it only for the β·KL penalty. */
    cfg_node *rn = cfg_find(node, "reference");
    if (rn && s->reference[0]) {
        char where[256];
        cfg_where(rn, where, sizeof where);
        if (s->algo == ALGO_OPD && s->opd.lambda == 1.0f)
            return err_set(err, "%s: %s.reference: with opd.lambda = 1 the reference cancels out of the G-OPD weight "
                                "(λ(ℓT − ℓref) − (ℓold − ℓref) = ℓT − ℓold), so '%s' cannot act: set opd.lambda ≠ 1 "
                                "(ExOPD / reward correction) or remove reference:", where, cfg_path(node), s->reference);
        if (s->algo == ALGO_GRPO && s->grpo.kl_beta == 0)
            return err_set(err, "%s: %s.reference: grpo uses a reference only for the KL penalty and grpo.kl_beta is 0, "
                                "so '%s' cannot act: set grpo.kl_beta > 0 or remove reference:", where, cfg_path(node),
                           s->reference);
        if (s->algo == ALGO_SFT || s->algo == ALGO_FKL)
            return err_set(err, "%s: %s.reference: a %s stage has no reference term, so '%s' cannot act (remove it)",
                           where, cfg_path(node), tc_algo_names[s->algo], s->reference);
    }
    /* per-algorithm requirements */
    if ((s->algo == ALGO_FKL || s->algo == ALGO_OPD) && !s->teacher[0])
        return err_set(err, "%s: %s: algo %s needs a 'teacher'", s->where, cfg_path(node), tc_algo_names[s->algo]);
    if (s->algo == ALGO_OPD && s->opd_mode != FKL_SAMPLED && s->opd.gamma != 0)
        return err_set(err, "%s: %s.opd: mode %s takes the per-position reverse KL (γ = 0) and cannot discount future "
                            "tokens: set opd.gamma: 0 or opd.mode: sampled", s->where, cfg_path(node),
                       tc_fkl_names[s->opd_mode]);
    if (s->algo == ALGO_OPD && s->opd_mode != FKL_SAMPLED && s->opd.agg != AGG_TOKEN_MEAN)
        return err_set(err, "%s: %s.opd: mode %s averages over trained tokens and needs opd.agg: token-mean (got %s)",
                       s->where, cfg_path(node), tc_fkl_names[s->opd_mode], tc_agg_names[s->opd.agg]);
    if (s->algo == ALGO_GRPO && s->group_size < 2)
        return err_set(err, "%s: %s.group_size: grpo needs at least 2 samples per prompt (got %d)", s->where,
                       cfg_path(node), s->group_size);
    return true;
}

static bool read_stage_with(train_config *tc, cfg_node *node, int idx, tc_stage *s, cfg_node *empty_map,
                            s2d_err *err) {
    return read_stage_names(tc, node, idx, s, err) && read_stage_objectives(node, s, empty_map, err) &&
           read_stage_optimizer(node, s, empty_map, err) && read_stage_sampling(tc, node, s, empty_map, err) &&
           read_stage_extras(node, s, err) && check_stage(node, s, err);
}

int tc_find_dataset(const train_config *tc, const char *name) {
    for (int i = 0; i < tc->n_datasets; i++)
        if (strcmp(tc->datasets[i].name, name) == 0) return i;
    return -1;
}

static bool check_plan(train_config *tc, cfg_node *pipe, s2d_err *err) {
    int cap = tc->n_models + tc->n_stages;
    known_model *k = xcalloc((size_t)S2D_MAX(cap, 1), sizeof *k);
    int n = 0;
    bool ok = true;
    for (int i = 0; i < tc->n_models; i++) k[n++] = (known_model){tc->models[i].name, &tc->models[i].cfg,
                                                                   tc->models[i].cfg_known};
    for (int si = 0; si < tc->n_stages && ok; si++) {
        tc_stage *s = &tc->stages[si];
        cfg_node *node = cfg_at(pipe, si);
        for (int j = 0; j < si; j++)
            if (strcmp(tc->stages[j].name, s->name) == 0) {
                ok = err_set(err, "%s: %s.name: stage name '%s' is used twice", s->where, cfg_path(node), s->name);
                break;
            }
        if (!ok) break;
        const known_model *pol, *tea = NULL, *ref = NULL;
        if (!(ok = model_ref(node, "policy", s->policy, k, n, &pol, err))) break;
        if (s->teacher[0] && !(ok = model_ref(node, "teacher", s->teacher, k, n, &tea, err))) break;
        if (s->reference[0] && !(ok = model_ref(node, "reference", s->reference, k, n, &ref, err))) break;
        const known_model *others[2] = {tea, ref};
        const char *roles[2] = {"teacher", "reference"};
        for (int r = 0; r < 2 && ok; r++) {
            if (!others[r] || !others[r]->known || !pol->known) continue;
            if (others[r]->cfg->vocab != pol->cfg->vocab)
                ok = err_set(err,
                             "%s: %s: the %s '%s' has a vocabulary of %d tokens but the policy '%s' has %d: "
                             "token-level distillation needs one shared vocabulary",
                             s->where, cfg_path(node), roles[r], others[r]->name, others[r]->cfg->vocab,
                             pol->name, pol->cfg->vocab);
        }
        if (!ok) break;
        if (lookup(k, n, s->output)) {
            ok = err_set(err, "%s: %s: output model '%s' already exists (give this stage another name or output:)",
                         s->where, cfg_path(node), s->output);
            break;
        }
        k[n++] = (known_model){s->output, pol->cfg, pol->known};
    }
    free(k);
    return ok;
}

/* prompt.template, as s2d eval chooses one (text/chat.h chat_template_choose): the name given, else (absent or
 * auto) the template of the stage policies' tokenizers' tokenizer_config.json, else qwen3; one that does not
 * fit a policy's model type is warned about. */
static bool resolve_template(train_config *tc, cfg_node *prompt, const char *tmpl, s2d_err *err) {
    const char **toks = xcalloc((size_t)S2D_MAX(tc->n_stages, 1), sizeof *toks);
    const tc_model **pols = xcalloc((size_t)S2D_MAX(tc->n_stages, 1), sizeof *pols);
    for (int i = 0; i < tc->n_stages; i++) {
        const char *name = tc->stages[i].policy; /* an earlier stage's output: back to the model it trains */
        for (int j = i - 1; j >= 0; j--)
            if (strcmp(tc->stages[j].output, name) == 0) name = tc->stages[j].policy;
        for (int k = 0; k < tc->n_models; k++)
            if (strcmp(tc->models[k].name, name) == 0) pols[i] = &tc->models[k], toks[i] = tc->models[k].tokenizer;
    }
    const char *from;
    bool ok = chat_template_choose(tmpl, "prompt.template", toks, tc->n_stages, "qwen3", "the default", &tc->chat,
                                   &from, err);
    for (int i = 0; ok && i < tc->n_stages; i++) {
        bool seen = false; /* one warning per model */
        for (int j = 0; j < i; j++) seen |= pols[j] == pols[i];
        if (pols[i] && pols[i]->cfg_known && !seen)
            chat_template_warn_fit("train", tc->chat, from, model_arch_of(pols[i]->cfg.arch)->model_type,
                                   pols[i]->where);
    }
    free(toks), free(pols);
    if (ok && tmpl && strcmp(tmpl, "auto") == 0) /* the resolved config (OUT/config.yaml, --dry-run) shows the template in effect */
        ok = cfg_set(tc->root, "prompt.template", chat_template_name(tc->chat), err);
    if (ok) return true;
    char where[256] = "";
    if (prompt && cfg_find(prompt, "template")) cfg_where(cfg_find(prompt, "template"), where, sizeof where);
    return err_prefix(err, "%s: prompt.template", where[0] ? where : tc->path);
}

static void mark_used(cfg_node *n) {
    n->used = true;
    if (n->kind != CFG_SCALAR)
        for (int i = 0; i < n->n; i++) mark_used(n->items[i]);
}

static bool split_aligned(int lo, int hi, const long *blo, const long *bhi, int n_learners, int *found) {
    for (int j = 0; j < n_learners; j++)
        if (blo[j] == lo && bhi[j] == hi) return ++*found, true;
    if (hi - lo <= 1) return false;
    int mid = microbatch_tree_split(lo, hi);
    return split_aligned(lo, mid, blo, bhi, n_learners, found) && split_aligned(mid, hi, blo, bhi, n_learners, found);
}

bool tc_tree_aligned(int micro_batches, int learners) {
    if (learners > micro_batches) return false;
    long blo[4096], bhi[4096];
    if (learners > 4096) return false;
    for (int j = 0; j < learners; j++) {
        long n = micro_batches, base = n / learners, extra = n % learners;
        blo[j] = j * base + (j < extra ? j : extra);
        bhi[j] = blo[j] + base + (j < extra ? 1 : 0);
    }
    int found = 0;
    return split_aligned(0, micro_batches, blo, bhi, learners, &found) && found == learners;
}

/* runtime.max_policy_lag > 0: grpo stages without an explicit grpo.tis_cap get 2 (the truncated importance
 * weight against the lagged behaviour policy; an explicit 0 keeps it off), and fault.stop_after_step must fall
 * on a drained point (a checkpoint step or a stage end), since checkpoints hold no pending rollouts. */
static bool check_policy_lag(train_config *tc, cfg_node *root, cfg_node *fault, s2d_err *err) {
    if (tc->max_policy_lag == 0) return true;
    cfg_node *pipe = cfg_find(root, "pipeline");
    long before = 0;
    for (int i = 0; i < tc->n_stages; i++) {
        tc_stage *s = &tc->stages[i];
        cfg_node *g = pipe ? cfg_find(cfg_at(pipe, i), "grpo") : NULL;
        if (s->algo == ALGO_GRPO && !(g && cfg_find(g, "tis_cap"))) s->grpo.tis_cap = 2;
        if (s->dyn == DYN_REFILL) /* refill rounds are synchronous: they would interleave with rounds sampled ahead */
            return err_set(err, "%s: grpo.dynamic_sampling.mode: refill cannot run with runtime.max_policy_lag %d "
                                "(use mode: filter, or max_policy_lag: 0)", s->where, tc->max_policy_lag);
        long k = tc->stop_after_step - before;
        if (tc->stop_after_step > before && k < s->steps && !(s->ckpt_every > 0 && k % s->ckpt_every == 0)) {
            char where[256] = "";
            if (fault && cfg_find(fault, "stop_after_step")) cfg_where(cfg_find(fault, "stop_after_step"), where, sizeof where);
            return err_set(err, "%s: fault.stop_after_step: global step %ld is step %ld of stage %s, not a drained point "
                                "(with runtime.max_policy_lag %d checkpoints are written only where no rollouts are "
                                "pending: every checkpoint.every steps and at stage ends)",
                           where[0] ? where : s->where, tc->stop_after_step, k, s->name, tc->max_policy_lag);
        }
        before += s->steps;
    }
    return true;
}

static bool read_runtime(train_config *tc, cfg_node *root, s2d_err *err) {
    cfg_node *empty, *roles, *rt, *fault, *logging;
    CHECK_OK(cfg_load_string("{}", "(defaults)", &empty, err), err);
    bool ok = cfg_get_map_opt(root, "roles", &roles, err) && cfg_get_map_opt(root, "runtime", &rt, err) &&
              cfg_get_map_opt(root, "fault", &fault, err) && cfg_get_map_opt(root, "logging", &logging, err);
    if (!ok) return cfg_free(empty), false;
    cfg_node *r = roles ? roles : empty, *t = rt ? rt : empty, *f = fault ? fault : empty,
             *lg = logging ? logging : empty;
    int64_t stop = 0;
    static const char *const kinds[4] = {"kill", "error", "hang", "stop"};
    static const char *const reduces[2] = {"deterministic", "fast"};
    int kind = 0, reduce = 0;
    ok = ok && cfg_get_int_or(r, "generators", 1, 1, 4096, &tc->n_generators, err) &&
         cfg_get_int_or(r, "scorers", 1, 1, 4096, &tc->n_scorers, err) &&
         cfg_get_int_or(r, "learners", 1, 1, 4096, &tc->n_learners, err) &&
         cfg_get_double_or(t, "timeout_s", 120, 0.1, 1e7, &tc->timeout_s, err) &&
         cfg_get_double_or(t, "heartbeat_s", 30, 0, 1e7, &tc->heartbeat_s, err) &&
         cfg_get_enum_or(t, "reduce", reduces, 2, 0, &reduce, err) &&
         cfg_get_double_or(t, "bucket_mb", 0, 0, 1e6, &tc->bucket_mb, err) &&
         cfg_get_int_or(t, "max_policy_lag", 0, 0, 64, &tc->max_policy_lag, err) &&
         cfg_get_int_or(f, "rank", -1, -1, 1 << 20, &tc->fault_rank, err) &&
         cfg_get_int_or(f, "at_step", 1, 1, 1 << 30, &tc->fault_step, err) &&
         cfg_get_enum_or(f, "kind", kinds, 4, 0, &kind, err) &&
         cfg_get_i64_or(f, "stop_after_step", 0, 0, INT32_MAX, &stop, err) &&
         cfg_get_bool_or(lg, "rollouts", true, &tc->log_rollouts, err) &&
         cfg_get_bool_or(lg, "metrics_h5", true, &tc->log_metrics_h5, err) &&
         cfg_get_bool_or(lg, "tensorboard", true, &tc->log_tensorboard, err);
    tc->fault_kind = (tc_fault)kind;
    tc->reduce = reduce ? TP_REDUCE_FAST : TP_REDUCE_DETERMINISTIC;
    tc->stop_after_step = (long)stop;
    for (int i = 0; ok && i < tc->n_stages; i++) {
        const tc_stage *s = &tc->stages[i];
        if (!tc_tree_aligned(s->micro_batches, tc->n_learners)) {
            char where[256] = "";
            if (roles && cfg_find(roles, "learners")) cfg_where(cfg_find(roles, "learners"), where, sizeof where);
            ok = err_set(err, "%s: roles.learners: %d learners cannot each own a whole subtree of stage %s's %d "
                              "micro-batches (use learners that divide micro_batches into power-of-two blocks, "
                              "e.g. micro_batches = learners x 2^k)",
                         where[0] ? where : s->where, tc->n_learners, s->name, s->micro_batches);
        }
    }
    if (ok) ok = check_policy_lag(tc, root, f, err);
    cfg_free(empty);
    return ok;
}

bool train_config_load(const char *path, char *const *sets, int n_sets, bool dry_run, train_config *tc,
                       s2d_err *err) {
    memset(tc, 0, sizeof *tc);
    tc->path = xstrdup(path);
    if (!cfg_load_file(path, &tc->root, err)) return false;
    for (int i = 0; i < n_sets; i++) {
        const char *a = sets[i];
        if (strncmp(a, "defaults", 8) == 0 && (a[8] == '.' || a[8] == '[' || a[8] == '='))
            return err_set(err, "--set %s: defaults: only holds YAML anchors, which are merged into the stages "
                                "(<<: *name) when %s is read, before --set applies, so this would change nothing; set "
                                "the stages' keys instead (e.g. --set pipeline[0].steps=3)", a, path);
        TRY(cfg_set_arg(tc->root, a, err));
    }
    cfg_node *root = tc->root;
    int64_t seed;
    TRY(cfg_get_i64_or(root, "seed", 0, 0, INT64_MAX, &seed, err));
    tc->seed = (uint64_t)seed;
    const char *dummy_out;
    TRY(cfg_get_str_or(root, "out", NULL, &dummy_out, err)); /* default output dir, read by cmd_train */
    const char *device; /* the backend every model of this process runs on (ops.h: cpu, cuda, cuda:N) */
    TRY(cfg_get_str_or(root, "device", "cpu", &device, err));
    if (strlen(device) >= sizeof tc->device) return err_set(err, "%s: device: '%s' is too long", path, device);
    snprintf(tc->device, sizeof tc->device, "%s", device);
    cfg_node *defaults; /* a place for YAML anchors (`defaults: &stage {...}`, merged with `<<: *stage`) */
    TRY(cfg_get_map_opt(root, "defaults", &defaults, err));
    if (defaults) mark_used(defaults);
    cfg_node *prompt;
    TRY(cfg_get_map_opt(root, "prompt", &prompt, err));
    const char *tmpl = NULL, *instr = CHAT_DEFAULT_INSTRUCTION; /* NULL or auto: resolve_template */
    if (prompt) {
        TRY(cfg_get_str_or(prompt, "template", tmpl, &tmpl, err));
        TRY(cfg_get_str_or(prompt, "instruction", instr, &instr, err));
        cfg_node *tn = cfg_find(prompt, "instruction");
        if (tn && cfg_is_null(tn)) instr = "";
    }
    tc->instruction = xstrdup(instr);

    cfg_node *models, *datasets, *pipe;
    TRY(cfg_get_map(root, "models", &models, err));
    TRY(cfg_get_map(root, "datasets", &datasets, err));
    TRY(cfg_get_seq(root, "pipeline", &pipe, err));
    tc->n_models = cfg_len(models);
    tc->models = xcalloc((size_t)S2D_MAX(tc->n_models, 1), sizeof(tc_model));
    for (int i = 0; i < tc->n_models; i++) {
        const char *name = cfg_key_at(models, i);
        cfg_node *tmp = cfg_at(models, i);
        char where[256];
        cfg_where(tmp, where, sizeof where);
        if (strlen(name) >= 64) return err_set(err, "%s: models.%s: name too long", where, name);
        TRY(read_model(tmp, name, dry_run, &tc->models[i], err));
    }
    tc->n_datasets = cfg_len(datasets);
    tc->datasets = xcalloc((size_t)S2D_MAX(tc->n_datasets, 1), sizeof(tc_dataset));
    for (int i = 0; i < tc->n_datasets; i++) {
        const char *name = cfg_key_at(datasets, i);
        if (strlen(name) >= 64) return err_set(err, "%s: datasets.%s: name too long", path, name);
        TRY(read_dataset(cfg_at(datasets, i), name, &tc->datasets[i], err));
    }
    tc->n_stages = cfg_len(pipe);
    if (tc->n_stages == 0) return err_set(err, "%s: pipeline: no stages", path);
    tc->stages = xcalloc((size_t)tc->n_stages, sizeof(tc_stage));
    for (int i = 0; i < tc->n_stages; i++) TRY(read_stage(tc, cfg_at(pipe, i), i, &tc->stages[i], err));
    cfg_node *training; /* training: {recompute: none|layer} applies to every stage's learner */
    TRY(cfg_get_map_opt(root, "training", &training, err));
    if (training) {
        const char *rc;
        TRY(cfg_get_str_or(training, "recompute", "none", &rc, err));
        bool layer = strcmp(rc, "layer") == 0;
        if (!layer && strcmp(rc, "none") != 0) {
            char where[256] = "";
            cfg_where(cfg_find(training, "recompute"), where, sizeof where);
            return err_set(err, "%s: training.recompute: '%s' must be none or layer", where, rc);
        }
        for (int i = 0; i < tc->n_stages; i++) tc->stages[i].recompute = layer ? RECOMPUTE_LAYER : RECOMPUTE_NONE;
    }
    TRY(read_runtime(tc, root, err));
    TRY(read_labels_max(root, &tc->labels_max, err));
    TRY(tc_check_unknown_keys(root, err));
    TRY(check_plan(tc, pipe, err));
    TRY(resolve_template(tc, prompt, tmpl, err));
    return tc_resolve_defaults(tc, err);
}

void train_config_free(train_config *tc) {
    if (tc->root) cfg_free(tc->root);
    for (int i = 0; i < tc->n_models; i++) free(tc->models[i].path), free(tc->models[i].init_preset),
                                           free(tc->models[i].tokenizer);
    for (int i = 0; i < tc->n_datasets; i++) free(tc->datasets[i].file);
    for (int i = 0; i < tc->n_stages; i++) free(tc->stages[i].reward_command);
    free(tc->models), free(tc->datasets), free(tc->stages), free(tc->path), free(tc->instruction);
    memset(tc, 0, sizeof *tc);
}

bool train_config_same_run(cfg_node *a, cfg_node *b, s2d_err *err) {
    static const char *const free_keys[] = {"roles", "runtime", "fault", "out", "device", "training"};
    cfg_node *maps[2] = {a, b};
    for (int side = 0; side < 2; side++) {
        cfg_node *x = maps[side], *y = maps[1 - side];
        if (x->kind != CFG_MAP || y->kind != CFG_MAP) return err_set(err, "the config is not a map");
        for (int i = 0; i < x->n; i++) {
            const char *key = x->keys[i];
            bool free_key = false;
            for (size_t k = 0; k < sizeof free_keys / sizeof *free_keys; k++) free_key |= strcmp(key, free_keys[k]) == 0;
            if (free_key) continue;
            cfg_node *other = cfg_find(y, key);
            if (!other)
                return err_set(err, "key '%s' is %s the checkpoint's config", key, side == 0 ? "missing from this run's config but in" : "in this run's config but not in");
            if (side == 0 && !cfg_equal(x->items[i], other)) {
                char where[256];
                cfg_where(other, where, sizeof where);
                return err_set(err, "%s: '%s' differs from the checkpoint's config (only roles, runtime, fault and out may "
                                    "change on resume)", where, key);
            }
        }
    }
    return true;
}

void train_config_print_plan(const train_config *tc, FILE *out) {
    fprintf(out, "config %s: %d models, %d datasets, %d stages, seed %llu, template %s\n", tc->path, tc->n_models,
            tc->n_datasets, tc->n_stages, (unsigned long long)tc->seed, chat_template_name(tc->chat));
    for (int i = 0; i < tc->n_models; i++) {
        const tc_model *m = &tc->models[i];
        if (m->cfg_known)
            fprintf(out, "  model %-14s %s%s  (hidden %d, layers %d, vocab %d)\n", m->name,
                    m->path ? m->path : "init:", m->path ? "" : m->init_preset, m->cfg.hidden, m->cfg.n_layers,
                    m->cfg.vocab);
        else
            fprintf(out, "  model %-14s %s  (no config.json here yet: architecture and vocabulary unchecked)\n",
                    m->name, m->path);
    }
    for (int i = 0; i < tc->n_datasets; i++) {
        const tc_dataset *d = &tc->datasets[i];
        if (d->arith)
            fprintf(out, "  data  %-14s arith %s, %d problems, %d ops (%s), operands 0..%d%s\n", d->name,
                    arith_split_name(d->split), d->size, d->arith_p.n_ops, d->arith_p.operators, d->arith_p.max_operand,
                    d->arith_p.left_to_right > 0   ? ", some solutions left to right"
                    : d->arith_p.right_to_left > 0 ? ", some solutions with sums right to left"
                                                   : "");
        else
            fprintf(out, "  data  %-14s %s (%s)\n", d->name, d->file, ds_format_name(d->format));
    }
    for (int i = 0; i < tc->n_stages; i++) {
        const tc_stage *s = &tc->stages[i];
        bool labelled = s->algo == ALGO_GRPO || s->algo == ALGO_SFT;
        fprintf(out, "  stage %d %-12s %-4s policy %s -> %s", i + 1, s->name, tc_algo_names[s->algo], s->policy,
                s->output);
        if (s->teacher[0]) fprintf(out, ", teacher %s", s->teacher);
        if (s->reference[0]) fprintf(out, ", reference %s", s->reference);
        fprintf(out, "; data %s (%s): %d steps x %d prompts x %d samples", s->data,
                labelled ? "labelled" : "prompts only", s->steps, s->prompts_per_step, s->group_size);
        if (s->algo == ALGO_FKL) fprintf(out, "; fkl %s%s", tc_fkl_names[s->fkl], s->fkl == FKL_TOPK ? "" : "");
        if (s->algo == ALGO_OPD) fprintf(out, "; lambda %g", (double)s->opd.lambda);
        if (s->algo == ALGO_GRPO && s->reward_command) fprintf(out, "; reward from \"%s\"", s->reward_command);
        else if (s->reward_command) fprintf(out, "; reward.command unused (not a grpo stage)");
        fprintf(out, "; lr %g\n", s->sched.lr);
    }
}
