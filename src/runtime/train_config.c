/* train_config.c: reading and validating `s2d train` configs (schema in train_config.h). */
#include "runtime/train_config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const algo_names[4] = {"sft", "grpo", "fkl", "opd"};
static const char *const fkl_names[3] = {"full", "topk", "sampled"};
static const char *const agg_names[3] = {"token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"};
static const char *const kl_names[3] = {"k1", "k2", "k3"};
static const char *const sched_names[3] = {"constant", "warmup", "cosine"};
static const char *const std_names[3] = {"unbiased", "population", "none"};
static const char *const dyn_names[3] = {"off", "filter", "refill"};

const char *train_algo_name(train_algo a) { return algo_names[a]; }

#define TRY(call)                                                                                            \
    do {                                                                                                     \
        if (!(call)) return false;                                                                           \
    } while (0)

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
    TRY(cfg_get_enum_or(gm, "std", std_names, 3, GRPO_STD_UNBIASED, &e, err));
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
    TRY(cfg_get_enum_or(d ? d : empty_map, "mode", dyn_names, 3, filter ? DYN_FILTER : DYN_OFF, &e, err));
    TRY(cfg_get_int_or(d ? d : empty_map, "max_rounds", 4, 1, 1000, &s->dyn_max_rounds, err));
    s->dyn = (dyn_mode)e;
    if (cfg_find(gm, "filter_zero_variance") && filter != (s->dyn != DYN_OFF)) {
        char where[256];
        cfg_where(cfg_find(gm, "filter_zero_variance"), where, sizeof where);
        return err_set(err, "%s: %s.grpo.filter_zero_variance: %s contradicts dynamic_sampling.mode %s (give one)", where,
                       cfg_path(node), filter ? "true" : "false", dyn_names[s->dyn]);
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

static bool read_stage_with(train_config *tc, cfg_node *node, int idx, tc_stage *s, cfg_node *empty_map,
                            s2d_err *err) {
    memset(s, 0, sizeof *s);
    cfg_where(node, s->where, sizeof s->where);
    TRY(cfg_as_map(node, err));
    cfg_node *nn;
    TRY(cfg_get_map(tc->root, "models", &nn, err)); /* (already validated) */
    nn = cfg_find(node, "name");
    if (!nn) return err_set(err, "%s: pipeline[%d]: missing key 'name'", s->where, idx);
    TRY(copy_name(nn, "stage name", s->name, sizeof s->name, err));
    int algo;
    TRY(cfg_get_enum(node, "algo", algo_names, 4, &algo, err));
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

    /* grpo options */
    cfg_node *g;
    TRY(cfg_get_map_opt(node, "grpo", &g, err));
    cfg_node *gm = g ? g : empty_map;
    int e;
    TRY(cfg_get_float_or(gm, "clip_low", 0.2f, 0, 1, &s->grpo.clip_low, err));
    TRY(cfg_get_float_or(gm, "clip_high", 0.28f, 0, 10, &s->grpo.clip_high, err));
    TRY(cfg_get_float_or(gm, "dual_clip", 0, 0, 1e6f, &s->grpo.dual_clip, err));
    TRY(cfg_get_float_or(gm, "kl_beta", 0, 0, 1e6f, &s->grpo.kl_beta, err));
    TRY(cfg_get_enum_or(gm, "kl_estimator", kl_names, 3, KL_K3, &e, err));
    s->grpo.kl_est = (kl_estimator)e;
    TRY(cfg_get_enum_or(gm, "agg", agg_names, 3, AGG_TOKEN_MEAN, &e, err));
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
    TRY(cfg_get_enum_or(fm, "mode", fkl_names, 3, FKL_TOPK, &e, err));
    s->fkl = (fkl_mode)e;
    TRY(cfg_get_int_or(fm, "topk", 16, 1, 1 << 20, &s->topk, err));

    cfg_node *o;
    TRY(cfg_get_map_opt(node, "opd", &o, err));
    cfg_node *om = o ? o : empty_map;
    TRY(cfg_get_float_or(om, "lambda", 1, 0, 1e6f, &s->opd.lambda, err));
    TRY(cfg_get_float_or(om, "gamma", 0, 0, 1, &s->opd.gamma, err));
    TRY(cfg_get_float_or(om, "clip_low", 0.2f, 0, 1, &s->opd.clip_low, err));
    TRY(cfg_get_float_or(om, "clip_high", 0.28f, 0, 10, &s->opd.clip_high, err));
    TRY(cfg_get_enum_or(om, "agg", agg_names, 3, AGG_TOKEN_MEAN, &e, err));
    s->opd.agg = (loss_agg)e;

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
    TRY(cfg_get_enum_or(opm, "schedule", sched_names, 3, LR_CONSTANT, &e, err));
    s->sched.kind = (lr_schedule_kind)e;
    int64_t warm;
    TRY(cfg_get_i64_or(opm, "warmup", 0, 0, 100000000, &warm, err));
    s->sched.warmup = warm;
    s->sched.total_steps = s->steps;

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
                       algo_names[s->algo]);
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
                           where, cfg_path(node), algo_names[s->algo], s->reference);
    }
    /* per-algorithm requirements */
    if ((s->algo == ALGO_FKL || s->algo == ALGO_OPD) && !s->teacher[0])
        return err_set(err, "%s: %s: algo %s needs a 'teacher'", s->where, cfg_path(node), algo_names[s->algo]);
    if (s->algo == ALGO_GRPO && s->group_size < 2)
        return err_set(err, "%s: %s.group_size: grpo needs at least 2 samples per prompt (got %d)", s->where,
                       cfg_path(node), s->group_size);
    return true;
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

/* ---- keys from verl and TRL configs: "did you mean" the s2d key (docs/coming-from-verl.md has the table) ---- */

typedef struct {
    const char *name;  /* a dotted suffix of the key path (verl) or a key name (TRL) */
    const char *s2d;   /* the s2d key; "stage." = under pipeline[N] */
    const char *from;  /* "verl" or "TRL" */
} foreign_key;

static const foreign_key FOREIGN[] = {
    {"actor_rollout_ref.actor.optim.lr", "stage.optimizer.lr", "verl"},
    {"actor_rollout_ref.actor.optim.weight_decay", "stage.optimizer.weight_decay", "verl"},
    {"actor_rollout_ref.actor.optim.lr_warmup_steps", "stage.optimizer.warmup", "verl"},
    {"actor_rollout_ref.actor.optim.warmup_style", "stage.optimizer.schedule", "verl"},
    {"actor_rollout_ref.actor.optim.min_lr_ratio", "stage.optimizer.min_lr", "verl"},
    {"actor_rollout_ref.actor.clip_ratio_low", "stage.grpo.clip_low", "verl"},
    {"actor_rollout_ref.actor.clip_ratio_high", "stage.grpo.clip_high", "verl"},
    {"actor_rollout_ref.actor.clip_ratio", "stage.grpo.clip_low and stage.grpo.clip_high", "verl"},
    {"actor_rollout_ref.actor.clip_ratio_c", "stage.grpo.dual_clip", "verl"},
    {"actor_rollout_ref.actor.use_kl_loss", "stage.grpo.kl_beta (> 0 turns the KL loss on)", "verl"},
    {"actor_rollout_ref.actor.kl_loss_coef", "stage.grpo.kl_beta", "verl"},
    {"actor_rollout_ref.actor.kl_loss_type", "stage.grpo.kl_estimator (low_var_kl is k3)", "verl"},
    {"actor_rollout_ref.actor.loss_agg_mode", "stage.grpo.agg", "verl"},
    {"actor_rollout_ref.actor.grad_clip", "stage.optimizer.clip", "verl"},
    {"actor_rollout_ref.actor.ppo_mini_batch_size", "stage.minibatches (a count of optimizer steps per step)", "verl"},
    {"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", "stage.micro_batches (a count, not a size)", "verl"},
    {"actor_rollout_ref.actor.ppo_epochs", "stage.minibatches", "verl"},
    {"actor_rollout_ref.rollout.n", "stage.group_size", "verl"},
    {"actor_rollout_ref.rollout.temperature", "stage.sampling.temperature", "verl"},
    {"actor_rollout_ref.rollout.top_p", "stage.sampling.top_p", "verl"},
    {"actor_rollout_ref.rollout.top_k", "stage.sampling.top_k", "verl"},
    {"actor_rollout_ref.rollout.response_length", "stage.sampling.max_new_tokens", "verl"},
    {"actor_rollout_ref.model.path", "models.<name>.path", "verl"},
    {"critic.model.path", "models.<name>.path", "verl"},
    {"data.train_batch_size", "stage.prompts_per_step", "verl"},
    {"data.max_response_length", "stage.sampling.max_new_tokens", "verl"},
    {"data.max_prompt_length", "no key: s2d does not truncate prompts (prompt + max_new_tokens must fit the model's "
                               "max_position_embeddings)", "verl"},
    {"data.train_files", "datasets.<name>.file", "verl"},
    {"data.val_files", "datasets.<name>.file with stage.eval.data", "verl"},
    {"data.prompt_key", "datasets.<name>.format", "verl"},
    {"algorithm.adv_estimator", "stage.algo (grpo)", "verl"},
    {"custom_reward_function.path", "stage.reward.command (a process speaking JSON lines)", "verl"},
    {"reward_model.reward_manager", "stage.reward.command (a process speaking JSON lines)", "verl"},
    {"algorithm.norm_adv_by_std_in_grpo", "stage.grpo.std (unbiased|population|none)", "verl"},
    {"algorithm.filter_groups.enable", "stage.grpo.dynamic_sampling.mode (refill)", "verl"},
    {"algorithm.filter_groups.max_num_gen_batches", "stage.grpo.dynamic_sampling.max_rounds", "verl"},
    {"algorithm.kl_ctrl.kl_coef", "stage.grpo.kl_beta", "verl"},
    {"algorithm.use_kl_in_reward", "stage.grpo.kl_beta (s2d puts the KL in the loss)", "verl"},
    {"trainer.total_training_steps", "stage.steps", "verl"},
    {"trainer.total_epochs", "stage.steps", "verl"},
    {"trainer.save_freq", "stage.checkpoint.every", "verl"},
    {"trainer.max_actor_ckpt_to_keep", "stage.checkpoint.keep_last", "verl"},
    {"trainer.test_freq", "stage.eval.every", "verl"},
    {"trainer.default_local_dir", "out", "verl"},
    {"trainer.experiment_name", "out", "verl"},
    {"trainer.n_gpus_per_node", "roles (generators, scorers, learners)", "verl"},
    {"trainer.nnodes", "roles (and the launcher's task count)", "verl"},
    {"trainer.logger", "logging.tensorboard (OUT/tensorboard; PNGs: s2d plot OUT)", "verl"},
    /* TRL GRPOConfig / TrainingArguments (one key name, usually at a stage or at the top) */
    {"learning_rate", "stage.optimizer.lr", "TRL"},
    {"lr_scheduler_type", "stage.optimizer.schedule", "TRL"},
    {"warmup_steps", "stage.optimizer.warmup", "TRL"},
    {"weight_decay", "stage.optimizer.weight_decay", "TRL"},
    {"adam_beta1", "stage.optimizer.beta1", "TRL"},
    {"adam_beta2", "stage.optimizer.beta2", "TRL"},
    {"adam_epsilon", "stage.optimizer.eps", "TRL"},
    {"max_grad_norm", "stage.optimizer.clip", "TRL"},
    {"num_generations", "stage.group_size", "TRL"},
    {"per_device_train_batch_size", "stage.prompts_per_step (prompts, each sampled group_size times)", "TRL"},
    {"gradient_accumulation_steps", "stage.micro_batches", "TRL"},
    {"num_iterations", "stage.minibatches", "TRL"},
    {"max_prompt_length", "no key: s2d does not truncate prompts (prompt + max_new_tokens must fit the model's "
                          "max_position_embeddings)", "TRL"},
    {"max_completion_length", "stage.sampling.max_new_tokens", "TRL"},
    {"beta", "stage.grpo.kl_beta", "TRL"},
    {"kl_coef", "stage.grpo.kl_beta", "TRL"},
    {"epsilon", "stage.grpo.clip_low", "TRL"},
    {"epsilon_high", "stage.grpo.clip_high", "TRL"},
    {"loss_type", "stage.grpo.agg", "TRL"},
    {"scale_rewards", "stage.grpo.std (unbiased|population|none)", "TRL"},
    {"mask_truncated_completions", "stage.grpo.mask_truncated", "TRL"},
    {"max_steps", "stage.steps", "TRL"},
    {"num_train_epochs", "stage.steps", "TRL"},
    {"save_steps", "stage.checkpoint.every", "TRL"},
    {"save_total_limit", "stage.checkpoint.keep_last", "TRL"},
    {"eval_steps", "stage.eval.every", "TRL"},
    {"output_dir", "out", "TRL"},
    {"model_name_or_path", "models.<name>.path", "TRL"},
    {"lmbda", "stage.opd.lambda", "TRL"},
    {"report_to", "logging.tensorboard (OUT/tensorboard; PNGs: s2d plot OUT)", "TRL"},
    {"reward_funcs", "stage.reward.command (a process speaking JSON lines)", "TRL"},
};

/* The first key no getter read (same order as cfg_check_unused), with the dotted path down to its first leaf. */
static const cfg_node *first_unused(const cfg_node *node, const char **key, const cfg_node **parent, int *slot) {
    if (node->kind == CFG_SCALAR) return NULL;
    for (int i = 0; i < node->n; i++) {
        const cfg_node *c = node->items[i];
        if (!c->used) {
            if (node->kind != CFG_MAP) return NULL;
            *key = node->keys[i], *parent = node, *slot = i;
            return c;
        }
        const cfg_node *r = first_unused(c, key, parent, slot);
        if (r) return r;
    }
    return NULL;
}

static bool ends_with_path(const char *path, const char *suffix) {
    size_t a = strlen(path), b = strlen(suffix);
    return a >= b && strcmp(path + a - b, suffix) == 0 && (a == b || path[a - b - 1] == '.');
}

/* cfg_check_unused, with a hint naming the s2d key when the unknown key is a verl or TRL name. */
static bool check_unknown_keys(cfg_node *root, s2d_err *err) {
    if (cfg_check_unused(root, err)) return true;
    const char *key = NULL;
    const cfg_node *parent = NULL;
    int slot = 0;
    const cfg_node *c = first_unused(root, &key, &parent, &slot);
    if (!c) return false;
    const cfg_node *leaf = c; /* a nested verl block: follow its first keys down */
    while (leaf->kind == CFG_MAP && leaf->n > 0) leaf = leaf->items[0];
    const char *lp = cfg_path(leaf);
    const foreign_key *hit = NULL;
    for (size_t i = 0; i < sizeof FOREIGN / sizeof *FOREIGN && !hit; i++)
        if (strchr(FOREIGN[i].name, '.') && ends_with_path(lp, FOREIGN[i].name)) hit = &FOREIGN[i];
    for (size_t i = 0; i < sizeof FOREIGN / sizeof *FOREIGN && !hit; i++)
        if (!strchr(FOREIGN[i].name, '.') && strcmp(key, FOREIGN[i].name) == 0) hit = &FOREIGN[i];
    if (!hit) return false;
    /* the stage the key sits in, when it does */
    char stage[64] = "pipeline[N]";
    int idx;
    if (sscanf(c->path, "pipeline[%d]", &idx) == 1) snprintf(stage, sizeof stage, "pipeline[%d]", idx);
    char s2d[512] = "", where[600];
    const char *t = hit->s2d;
    while (*t) { /* "stage." -> "pipeline[i]." */
        const char *st = strstr(t, "stage.");
        size_t len = st ? (size_t)(st - t) : strlen(t), at = strlen(s2d);
        snprintf(s2d + at, sizeof s2d - at, "%.*s%s%s", (int)len, t, st ? stage : "", st ? "." : "");
        t += len + (st ? 6 : 0);
    }
    if (parent->key_line[slot] > 0) snprintf(where, sizeof where, "%s:%d:%d", c->origin, parent->key_line[slot],
                                             parent->key_col[slot]);
    else cfg_where(c, where, sizeof where);
    if (strncmp(s2d, "no key: ", 8) == 0)
        return err_set(err, "%s: unknown key '%s' at %s ('%s' is %s's name; s2d has no such key: %s; "
                            "docs/coming-from-verl.md maps verl and TRL keys to s2d's)",
                       where, key, leaf == c ? c->path : lp, hit->name, hit->from, s2d + 8);
    return err_set(err, "%s: unknown key '%s' at %s (did you mean %s? '%s' is %s's name; docs/coming-from-verl.md "
                        "maps verl and TRL keys to s2d's)",
                   where, key, leaf == c ? c->path : lp, s2d, hit->name, hit->from);
}

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
    TRY(fill(R, m, sa, "kl_estimator", kl_names[s->grpo.kl_est], err));
    TRY(fill(R, m, sa, "agg", agg_names[s->grpo.agg], err));
    if (!(m && cfg_find(m, "std_normalize"))) TRY(fill(R, m, sa, "std", std_names[s->std], err)); /* one of the two */
    m = SUB("grpo");
    if (!(m && cfg_find(m, "filter_zero_variance"))) {
        cfg_node *d = block(R, m, sa, "dynamic_sampling");
        char da[128];
        snprintf(da, sizeof da, "%s.dynamic_sampling", sa);
        TRY(fill(R, d, da, "mode", dyn_names[s->dyn], err));
        d = block(R, m, sa, "dynamic_sampling");
        if (!d) d = cfg_find(m, "dynamic_sampling");
        TRY(fill_int(R, d, da, "max_rounds", s->dyn_max_rounds, err));
        m = SUB("grpo");
    }
    TRY(fill_b(R, m, sa, "mask_truncated", s->mask_truncated, err));
    TRY(fill_f(R, m, sa, "tis_cap", s->grpo.tis_cap, err));
    m = SUB("fkl");
    TRY(fill(R, m, sa, "mode", fkl_names[s->fkl], err));
    m = SUB("fkl");
    TRY(fill_int(R, m, sa, "topk", s->topk, err));
    m = SUB("opd");
    TRY(fill_f(R, m, sa, "lambda", s->opd.lambda, err));
    m = SUB("opd");
    TRY(fill_f(R, m, sa, "gamma", s->opd.gamma, err));
    TRY(fill_f(R, m, sa, "clip_low", s->opd.clip_low, err));
    TRY(fill_f(R, m, sa, "clip_high", s->opd.clip_high, err));
    TRY(fill(R, m, sa, "agg", agg_names[s->opd.agg], err));
    m = SUB("optimizer");
    TRY(fill_d(R, m, sa, "lr", s->sched.lr, err));
    m = SUB("optimizer");
    TRY(fill_f(R, m, sa, "beta1", s->adam.beta1, err));
    TRY(fill_f(R, m, sa, "beta2", s->adam.beta2, err));
    TRY(fill_f(R, m, sa, "eps", s->adam.eps, err));
    TRY(fill_f(R, m, sa, "weight_decay", s->adam.weight_decay, err));
    TRY(fill_f(R, m, sa, "clip", s->clip, err));
    TRY(fill(R, m, sa, "schedule", sched_names[s->sched.kind], err));
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
static bool resolve_defaults(train_config *tc, s2d_err *err) {
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
    const char *tmpl = "qwen3", *instr = CHAT_DEFAULT_INSTRUCTION;
    if (prompt) {
        TRY(cfg_get_str_or(prompt, "template", tmpl, &tmpl, err));
        TRY(cfg_get_str_or(prompt, "instruction", instr, &instr, err));
        cfg_node *tn = cfg_find(prompt, "instruction");
        if (tn && cfg_is_null(tn)) instr = "";
    }
    if (!chat_template_parse(tmpl, &tc->chat, err)) {
        char where[256] = "";
        if (prompt && cfg_find(prompt, "template")) cfg_where(cfg_find(prompt, "template"), where, sizeof where);
        return err_prefix(err, "%s: prompt.template", where[0] ? where : path);
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
    TRY(check_unknown_keys(root, err));
    TRY(check_plan(tc, pipe, err));
    return resolve_defaults(tc, err);
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
            fprintf(out, "  data  %-14s arith %s, %d problems, %d ops, operands 0..%d\n", d->name,
                    arith_split_name(d->split), d->size, d->arith_p.n_ops, d->arith_p.max_operand);
        else
            fprintf(out, "  data  %-14s %s (%s)\n", d->name, d->file, ds_format_name(d->format));
    }
    for (int i = 0; i < tc->n_stages; i++) {
        const tc_stage *s = &tc->stages[i];
        bool labelled = s->algo == ALGO_GRPO || s->algo == ALGO_SFT;
        fprintf(out, "  stage %d %-12s %-4s policy %s -> %s", i + 1, s->name, algo_names[s->algo], s->policy,
                s->output);
        if (s->teacher[0]) fprintf(out, ", teacher %s", s->teacher);
        if (s->reference[0]) fprintf(out, ", reference %s", s->reference);
        fprintf(out, "; data %s (%s): %d steps x %d prompts x %d samples", s->data,
                labelled ? "labelled" : "prompts only", s->steps, s->prompts_per_step, s->group_size);
        if (s->algo == ALGO_FKL) fprintf(out, "; fkl %s%s", fkl_names[s->fkl], s->fkl == FKL_TOPK ? "" : "");
        if (s->algo == ALGO_OPD) fprintf(out, "; lambda %g", (double)s->opd.lambda);
        if (s->algo == ALGO_GRPO && s->reward_command) fprintf(out, "; reward from \"%s\"", s->reward_command);
        else if (s->reward_command) fprintf(out, "; reward.command unused (not a grpo stage)");
        fprintf(out, "; lr %g\n", s->sched.lr);
    }
}
