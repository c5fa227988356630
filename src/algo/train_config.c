/* train_config.c: reading and validating `s2d train` configs (schema in train_config.h). */
#include "algo/train_config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *const algo_names[4] = {"sft", "grpo", "fkl", "opd"};
static const char *const fkl_names[3] = {"full", "topk", "sampled"};
static const char *const agg_names[3] = {"token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"};
static const char *const kl_names[3] = {"k1", "k2", "k3"};
static const char *const sched_names[3] = {"constant", "warmup", "cosine"};

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
        static const char *const splits[3] = {"train", "heldout", "test"};
        int split;
        int64_t seed;
        TRY(cfg_get_enum(node, "split", splits, 3, &split, err));
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
    TRY(cfg_get_bool_or(gm, "std_normalize", true, &s->std_normalize, err));
    TRY(cfg_get_bool_or(gm, "filter_zero_variance", false, &s->filter_zero_variance, err));
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
        TRY(cfg_get_int_or(ev, "samples", 64, 1, 1000000, &s->eval_samples, err));
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
    cfg_node *ck;
    TRY(cfg_get_map_opt(node, "checkpoint", &ck, err));
    if (ck) TRY(cfg_get_int_or(ck, "every", 0, 0, 100000000, &s->ckpt_every, err));

    /* per-algorithm requirements */
    if ((s->algo == ALGO_FKL || s->algo == ALGO_OPD) && !s->teacher[0])
        return err_set(err, "%s: %s: algo %s needs a 'teacher'", s->where, cfg_path(node), algo_names[s->algo]);
    if (s->algo == ALGO_GRPO && s->group_size < 2)
        return err_set(err, "%s: %s.group_size: grpo needs at least 2 samples per prompt (got %d)", s->where,
                       cfg_path(node), s->group_size);
    return true;
}

int tc_find_model(const train_config *tc, const char *name) {
    for (int i = 0; i < tc->n_models; i++)
        if (strcmp(tc->models[i].name, name) == 0) return i;
    return -1;
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

static bool split_aligned(int lo, int hi, const long *blo, const long *bhi, int L, int *found) {
    for (int j = 0; j < L; j++)
        if (blo[j] == lo && bhi[j] == hi) return ++*found, true;
    if (hi - lo <= 1) return false;
    int mid = tc_tree_mid(lo, hi);
    return split_aligned(lo, mid, blo, bhi, L, found) && split_aligned(mid, hi, blo, bhi, L, found);
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
         cfg_get_int_or(f, "rank", -1, -1, 1 << 20, &tc->fault_rank, err) &&
         cfg_get_int_or(f, "at_step", 1, 1, 1 << 30, &tc->fault_step, err) &&
         cfg_get_enum_or(f, "kind", kinds, 4, 0, &kind, err) &&
         cfg_get_i64_or(f, "stop_after_step", 0, 0, INT32_MAX, &stop, err) &&
         cfg_get_bool_or(lg, "rollouts", true, &tc->log_rollouts, err) &&
         cfg_get_bool_or(lg, "metrics_h5", true, &tc->log_metrics_h5, err);
    tc->fault_kind = kind;
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
    cfg_free(empty);
    return ok;
}

bool train_config_load(const char *path, char *const *sets, int n_sets, bool dry_run, train_config *tc,
                       s2d_err *err) {
    memset(tc, 0, sizeof *tc);
    tc->path = xstrdup(path);
    if (!cfg_load_file(path, &tc->root, err)) return false;
    for (int i = 0; i < n_sets; i++) TRY(cfg_set_arg(tc->root, sets[i], err));
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
    TRY(cfg_check_unused(root, err));
    return check_plan(tc, pipe, err);
}

void train_config_free(train_config *tc) {
    if (tc->root) cfg_free(tc->root);
    for (int i = 0; i < tc->n_models; i++) free(tc->models[i].path), free(tc->models[i].init_preset),
                                           free(tc->models[i].tokenizer);
    for (int i = 0; i < tc->n_datasets; i++) free(tc->datasets[i].file);
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
        fprintf(out, "; lr %g\n", s->sched.lr);
    }
}
